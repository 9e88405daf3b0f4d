//! `cargo bench -p clustermgr-tests --bench salt`: clustermgr beside Salt in the same
//! run (issue 21): the same commands to the same number of nodes on loopback, as whole
//! processes, in alternating pairs so that a noisy machine weighs on both alike; and
//! idle memory, agent against minion and `serve` against the master. Prints a Markdown
//! table of medians and p90s (nearest rank) and the same-run ratios; BENCHMARKS.md
//! keeps the figures.
//!
//! What runs, for 3 nodes and then for 30:
//! 1. Real `clustermgr-agent` processes ([`Cluster::gluu`]) beside a `salt-master` and
//!    as many `salt-minion`s, each with its own configuration, keys, cache and sockets
//!    in a temporary directory, the master on free loopback ports.
//! 2. `clustermgr exec --nodes all -- true` against `salt '*' cmd.run /bin/true`, and
//!    `clustermgr ping` against `salt '*' test.ping`: first with the CLI alone (it
//!    opens the store and connects to every agent itself), then through a running
//!    `clustermgr serve` (warm connections, as Salt's master keeps its minions).
//! 3. Context for Salt: a warm in-process `LocalClient` (the same calls with no Python
//!    start-up and no CLI), and, once, `python3 -c pass` and `salt --version`.
//! 4. With 30: idle memory per agent (VmRSS) and per minion (VmRSS summed over the
//!    minion's process tree), and `serve`'s PSS against the master's (summed over its
//!    processes).
//!
//! Salt comes from PyPI, pinned, into a virtualenv in the target directory, made the
//! first time and kept (a marker file says it is complete). If Salt cannot be
//! installed or started, its rows say why and clustermgr's still run.
//!
//! `CLUSTERMGR_BENCH_SALT_NODES` changes the larger size (default 30),
//! `CLUSTERMGR_BENCH_SALT_PAIRS` the number of timed pairs (default 20).

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command as StdCommand, Stdio};
use std::time::{Duration, Instant};

use clustermgr_tests::bench::{
    Results, cpu_ms, env_count, ms, proc_status_kib, runtime, settle, smaps_kib, stats,
    time_process,
};
use clustermgr_tests::{Cluster, Serve};

/// The Salt release compared against. 3008.5, the newest, needs a certifi newer than
/// the registry serves here. Bump it together with the figures in BENCHMARKS.md.
const SALT_PIN: &str = "salt==3008.4";

const NODES_ENV: &str = "CLUSTERMGR_BENCH_SALT_NODES";
const PAIRS_ENV: &str = "CLUSTERMGR_BENCH_SALT_PAIRS";
const SMALL: usize = 3;
const DEFAULT_LARGE: usize = 30;
const DEFAULT_PAIRS: usize = 20;
/// Untimed pairs first: page cache, the master's and serve's first job.
const WARM: usize = 2;

/// The warm in-process `LocalClient`: one Python process that makes a
/// `salt.client.LocalClient` once, then times `cmd.run /bin/true` and `test.ping` to
/// every minion, each after untimed ones. Arguments: the master's config file, how many
/// minions must answer, timed calls, untimed calls. Prints one JSON line: milliseconds
/// to import `salt.client` and to make the client, then each call's.
const LOCAL_CLIENT: &str = r#"
import json, sys, time
t = time.perf_counter()
import salt.client
imported = (time.perf_counter() - t) * 1e3
conf, want, n, warm = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
t = time.perf_counter()
client = salt.client.LocalClient(c_path=conf)
made = (time.perf_counter() - t) * 1e3

def timed(fun, arg, good):
    out = []
    for i in range(warm + n):
        t = time.perf_counter()
        ret = client.cmd("*", fun, arg, timeout=60)
        took = (time.perf_counter() - t) * 1e3
        bad = sorted(k for k, v in ret.items() if not good(v))
        if len(ret) != want or bad:
            sys.exit(f"{fun}: {len(ret)} of {want} minions answered; unexpected from {bad}")
        if i >= warm:
            out.append(took)
    return out

exec_ms = timed("cmd.run", ["/bin/true"], lambda v: v == "")
ping_ms = timed("test.ping", [], lambda v: v is True)
print(json.dumps({"import_ms": imported, "made_ms": made, "exec_ms": exec_ms, "ping_ms": ping_ms}))
"#;

/// A row id made at run time (it names the node count); the table wants `&'static`.
fn id(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

// ---------------------------------------------------------------------------------
// The virtualenv

/// Salt installed in a virtualenv.
struct Venv {
    dir: PathBuf,
}

impl Venv {
    fn bin(&self, name: &str) -> PathBuf {
        self.dir.join("bin").join(name)
    }
}

/// The target directory this bench was built in: it is `target/<profile>/deps/salt-…`.
fn target_dir() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
    exe.ancestors()
        .nth(3)
        .map(Path::to_path_buf)
        .ok_or_else(|| format!("{} is not in a target directory", exe.display()))
}

/// Output of a command that must succeed; why not otherwise (its stderr's last lines).
fn checked(c: &mut StdCommand) -> Result<std::process::Output, String> {
    let o = c
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {:?}: {e}", c.get_program()))?;
    if o.status.success() {
        return Ok(o);
    }
    Err(format!(
        "{:?} ended with {}: {}",
        c.get_program(),
        o.status,
        last_lines(&String::from_utf8_lossy(&o.stderr))
    ))
}

/// The last few lines of a program's output or log, on one line: why it failed.
fn last_lines(text: &str) -> String {
    let lines: Vec<&str> = text.trim().lines().rev().take(4).collect();
    lines.into_iter().rev().collect::<Vec<_>>().join(" / ")
}

/// Salt in `TARGET/salt-venv`, installed from PyPI the first time. The marker file
/// names the pin and the Python it was made with: a change of either makes it anew.
fn prepare_venv(res: &mut Results) -> Result<Venv, String> {
    let dir = target_dir()?.join("salt-venv");
    let python = checked(StdCommand::new("python3").args([
        "-c",
        "import sys; print(sys.executable, sys.version.split()[0])",
    ]))
    .map_err(|e| format!("no usable python3 (Debian: apt-get install python3-venv): {e}"))?;
    let marker = format!(
        "{SALT_PIN} {}\n",
        String::from_utf8_lossy(&python.stdout).trim()
    );
    let venv = Venv { dir: dir.clone() };
    if std::fs::read_to_string(dir.join("pins")).ok().as_deref() == Some(&marker) {
        return Ok(venv);
    }
    eprintln!(
        "setting up {SALT_PIN} from PyPI in {} (once)",
        dir.display()
    );
    let t = Instant::now();
    match std::fs::remove_dir_all(&dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(format!("cannot remove the old {}: {e}", dir.display()));
        }
        _ => {}
    }
    checked(StdCommand::new("python3").args(["-m", "venv"]).arg(&dir)).map_err(|e| {
        format!(
            "python3 cannot make a virtualenv in {} (Debian: apt-get install python3-venv): {e}",
            dir.display()
        )
    })?;
    checked(StdCommand::new(venv.bin("pip")).args([
        "install",
        "--quiet",
        "--disable-pip-version-check",
        SALT_PIN,
    ]))
    .map_err(|e| format!("pip cannot install {SALT_PIN}: {e}"))?;
    std::fs::write(dir.join("pins"), &marker).map_err(|e| e.to_string())?;
    res.note(format!(
        "{SALT_PIN} was installed from PyPI into {} in {:.0} s (the first run only)",
        dir.display(),
        t.elapsed().as_secs_f64()
    ));
    Ok(venv)
}

// ---------------------------------------------------------------------------------
// A Salt master and its minions on loopback

/// A `salt-master` and `n` `salt-minion`s named like the agents, each in a process
/// group of its own. Dropping it kills the groups (a master and a minion fork
/// children) and then removes their directory.
struct Salt {
    bin: PathBuf,
    python: PathBuf,
    /// The master's configuration directory (`-c`).
    conf: PathBuf,
    ids: Vec<String>,
    master: Option<Child>,
    minions: Vec<Child>,
    /// Last, so that it is removed after the processes are gone.
    dir: tempfile::TempDir,
}

impl Drop for Salt {
    fn drop(&mut self) {
        self.stop_minions();
        if let Some(m) = self.master.as_mut() {
            kill_group(m);
        }
    }
}

/// Kills `leader`'s process group and waits, briefly, until none of it is left.
fn kill_group(leader: &mut Child) {
    use rustix::process::{Pid, Signal, kill_process_group, test_kill_process_group};
    let Some(pgid) = Pid::from_raw(leader.id() as i32) else {
        return;
    };
    let _ = kill_process_group(pgid, Signal::KILL);
    let _ = leader.wait();
    // Its forked children were in the group too; they may take a moment to die.
    let deadline = Instant::now() + Duration::from_secs(5);
    while test_kill_process_group(pgid).is_ok() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A free TCP port on 127.0.0.1, kept bound in `hold` so that the next call gets
/// another.
fn free_port(hold: &mut Vec<std::net::TcpListener>) -> Result<u16, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let port = l.local_addr().map_err(|e| e.to_string())?.port();
    hold.push(l);
    Ok(port)
}

/// Checks `cond` every 100 ms until it holds; an error from it ends the wait at once.
fn until(
    what: &str,
    patience: Duration,
    mut cond: impl FnMut() -> Result<bool, String>,
) -> Result<(), String> {
    let deadline = Instant::now() + patience;
    while !cond()? {
        if Instant::now() > deadline {
            return Err(format!("{what}: not within {patience:?}"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// The last lines of a log file, for saying why something did not start.
fn log_tail(path: &Path) -> String {
    last_lines(&std::fs::read_to_string(path).unwrap_or_default())
}

impl Salt {
    /// Starts the master and `n` minions (`gluu1`…) and waits until the master has
    /// accepted every minion's key, every minion answers `test.ping`, and all of Salt
    /// is quiet.
    fn start(venv: &Venv, n: usize) -> Result<Salt, String> {
        let t = Instant::now();
        let dir = tempfile::Builder::new()
            .prefix("cm-salt")
            .tempdir()
            .map_err(|e| e.to_string())?;
        let root = dir.path().join("master");
        let conf = root.join("conf");
        std::fs::create_dir_all(&conf).map_err(|e| e.to_string())?;
        let mut s = Salt {
            bin: venv.dir.join("bin"),
            python: venv.bin("python3"),
            conf: conf.clone(),
            ids: (1..=n).map(|i| format!("gluu{i}")).collect(),
            master: None,
            minions: Vec::new(),
            dir,
        };
        let mut held = Vec::new();
        let (publish, ret) = (free_port(&mut held)?, free_port(&mut held)?);
        drop(held);
        // Every path under its own root: nothing in /etc/salt, /var or /srv. The
        // master accepts keys as they come, as a test master would.
        let r = root.display();
        std::fs::write(
            conf.join("master"),
            format!(
                "root_dir: {r}\nuser: root\ninterface: 127.0.0.1\n\
                 publish_port: {publish}\nret_port: {ret}\nauto_accept: True\n\
                 pki_dir: {r}/pki\ncachedir: {r}/cache\nsock_dir: {r}/sock\n\
                 pidfile: {r}/master.pid\nlog_file: {r}/master.log\nkey_logfile: {r}/key.log\n\
                 file_roots:\n  base:\n    - {r}/srv\npillar_roots:\n  base:\n    - {r}/pillar\n"
            ),
        )
        .map_err(|e| e.to_string())?;
        std::fs::write(s.dir.path().join("localclient.py"), LOCAL_CLIENT)
            .map_err(|e| e.to_string())?;
        s.master = Some(s.daemon("salt-master", &root)?);
        until("the master's ports", Duration::from_secs(60), || {
            s.alive()?;
            Ok([publish, ret]
                .iter()
                .all(|p| std::net::TcpStream::connect(("127.0.0.1", *p)).is_ok()))
        })?;
        for id in s.ids.clone() {
            let home = s.dir.path().join(&id);
            let h = home.join("conf");
            std::fs::create_dir_all(&h).map_err(|e| e.to_string())?;
            let m = home.display();
            std::fs::write(
                h.join("minion"),
                format!(
                    "id: {id}\nroot_dir: {m}\nuser: root\nmaster: 127.0.0.1\n\
                     master_port: {ret}\npublish_port: {publish}\n\
                     pki_dir: {m}/pki\ncachedir: {m}/cache\nsock_dir: {m}/sock\n\
                     pidfile: {m}/minion.pid\nlog_file: {m}/minion.log\n"
                ),
            )
            .map_err(|e| e.to_string())?;
            let child = s.daemon("salt-minion", &home)?;
            s.minions.push(child);
        }
        // Minions start on two cores at once, each importing Salt and loading grains.
        let patience = Duration::from_secs(60 + 5 * n as u64);
        until("every minion's key accepted", patience, || {
            s.alive()?;
            let o = checked(s.cmd("salt-key").args(["-L", "--out=json"]))?;
            let keys: serde_json::Value =
                serde_json::from_slice(&o.stdout).map_err(|e| format!("salt-key -L: {e}"))?;
            let accepted = keys["minions"].as_array().map_or(0, Vec::len);
            Ok(accepted == n)
        })?;
        until("every minion answering test.ping", patience, || {
            s.alive()?;
            let o = s
                .cmd("salt")
                .args(["-t", "10", "--out=json", "--static", "*", "test.ping"])
                .stdin(Stdio::null())
                .output()
                .map_err(|e| e.to_string())?;
            let answers: serde_json::Value =
                serde_json::from_slice(&o.stdout).unwrap_or(serde_json::Value::Null);
            Ok(s.ids
                .iter()
                .all(|id| answers[id] == serde_json::Value::Bool(true)))
        })?;
        let answering = t.elapsed();
        // Minions go on working for a while after they first answer (their first
        // schedule runs, grains, the master's key cache); timing starts once Salt as a
        // whole is quiet, as the agents are.
        let roots: Vec<u32> = s.master.iter().chain(&s.minions).map(Child::id).collect();
        until(
            "Salt quiet (under 10% of a core for a second)",
            patience,
            || {
                let before = tree_cpu_ms(&roots);
                std::thread::sleep(Duration::from_secs(1));
                Ok(tree_cpu_ms(&roots) - before < 100.0)
            },
        )?;
        eprintln!(
            "  Salt master and {n} minions answering after {:.1} s, quiet after {:.1} s",
            answering.as_secs_f64(),
            t.elapsed().as_secs_f64()
        );
        Ok(s)
    }

    /// Starts `salt-master` or `salt-minion` with its configuration in `home/conf`, in
    /// a process group of its own, its console output in `home/console.log`.
    fn daemon(&self, program: &str, home: &Path) -> Result<Child, String> {
        let log = std::fs::File::create(home.join("console.log")).map_err(|e| e.to_string())?;
        let err = log.try_clone().map_err(|e| e.to_string())?;
        StdCommand::new(self.bin.join(program))
            .arg("-c")
            .arg(home.join("conf"))
            .args(["-l", "warning"])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .process_group(0)
            .spawn()
            .map_err(|e| format!("cannot start {program}: {e}"))
    }

    /// Fails, saying why, if the master or a minion has exited.
    fn alive(&mut self) -> Result<(), String> {
        let root = self.dir.path().to_path_buf();
        if let Some(m) = self.master.as_mut()
            && let Ok(Some(st)) = m.try_wait()
        {
            return Err(format!(
                "salt-master exited ({st}): {}",
                log_tail(&root.join("master/console.log"))
            ));
        }
        for (id, m) in self.ids.iter().zip(&mut self.minions) {
            if let Ok(Some(st)) = m.try_wait() {
                return Err(format!(
                    "salt-minion {id} exited ({st}): {}",
                    log_tail(&root.join(id).join("console.log"))
                ));
            }
        }
        Ok(())
    }

    /// A Salt command-line program run against this master.
    fn cmd(&self, program: &str) -> StdCommand {
        let mut c = StdCommand::new(self.bin.join(program));
        c.arg("-c").arg(&self.conf);
        c
    }

    /// `salt -t 60 ARGS`: it returns as soon as every minion has answered.
    fn salt(&self, args: &[&str]) -> StdCommand {
        let mut c = self.cmd("salt");
        c.args(["-t", "60"]).args(args);
        c
    }

    /// Whether `salt`'s output (its default outputter) has an answer from every minion.
    fn all_answered(&self, out: &str) -> Result<(), String> {
        if out.contains("did not return") {
            return Err(format!("a minion did not return: {}", out.trim()));
        }
        match self
            .ids
            .iter()
            .find(|id| !out.lines().any(|l| l.trim_end() == format!("{id}:")))
        {
            Some(id) => Err(format!("no answer from {id}: {}", out.trim())),
            None => Ok(()),
        }
    }

    /// The warm in-process `LocalClient`: `calls` timed calls of each kind.
    fn local_client(&self, calls: usize) -> Result<LocalClientTimes, String> {
        let o = checked(
            StdCommand::new(&self.python)
                .arg(self.dir.path().join("localclient.py"))
                .arg(self.conf.join("master"))
                .args([self.ids.len(), calls, WARM].map(|v| v.to_string())),
        )?;
        let text = String::from_utf8_lossy(&o.stdout);
        let line = text.trim().lines().last().unwrap_or_default();
        let v: serde_json::Value = serde_json::from_str(line)
            .map_err(|e| format!("the LocalClient script printed {line:?}: {e}"))?;
        let list = |k: &str| -> Vec<f64> {
            v[k].as_array()
                .map(|a| a.iter().filter_map(serde_json::Value::as_f64).collect())
                .unwrap_or_default()
        };
        Ok(LocalClientTimes {
            import_ms: v["import_ms"].as_f64().unwrap_or(f64::NAN),
            made_ms: v["made_ms"].as_f64().unwrap_or(f64::NAN),
            exec: list("exec_ms"),
            ping: list("ping_ms"),
        })
    }

    /// Kills the minions, leaving the master.
    fn stop_minions(&mut self) {
        for m in &mut self.minions {
            kill_group(m);
        }
        self.minions.clear();
    }

    fn minion_pids(&self) -> Vec<u32> {
        self.minions.iter().map(Child::id).collect()
    }
}

struct LocalClientTimes {
    import_ms: f64,
    made_ms: f64,
    exec: Vec<f64>,
    ping: Vec<f64>,
}

/// `root` and every process descended from it (a minion forks a child that does the
/// work; a master forks a dozen).
fn process_tree(root: u32) -> Vec<u32> {
    let parents: Vec<(u32, u32)> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // After the command name (which may hold spaces): state, then parent.
            let ppid = stat[stat.rfind(')')? + 2..].split_whitespace().nth(1)?;
            Some((pid, ppid.parse().ok()?))
        })
        .collect();
    let mut tree = vec![root];
    let mut i = 0;
    while i < tree.len() {
        let p = tree[i];
        tree.extend(parents.iter().filter(|(_, pp)| *pp == p).map(|(c, _)| *c));
        i += 1;
    }
    tree
}

/// CPU time, ms, of the processes of `roots`' trees and of the children they reaped
/// (a minion's job processes come and go).
fn tree_cpu_ms(roots: &[u32]) -> f64 {
    roots
        .iter()
        .flat_map(|r| process_tree(*r))
        .filter_map(cpu_ms)
        .map(|(own, reaped)| own + reaped)
        .sum()
}

/// A KiB figure summed over processes; None when the first (the root) is gone.
fn summed(pids: &[u32], kib: impl Fn(u32) -> Option<u64>) -> Option<u64> {
    let root = kib(*pids.first()?)?;
    Some(root + pids[1..].iter().filter_map(|p| kib(*p)).sum::<u64>())
}

/// Pages only this process maps (what ending it would free).
fn private_kib(pid: u32) -> Option<u64> {
    Some(smaps_kib(pid, "Private_Clean")? + smaps_kib(pid, "Private_Dirty")?)
}

// ---------------------------------------------------------------------------------
// Timing

/// Runs `cmd` once: its wall-clock milliseconds, spawn to exit. It must end well, and
/// its standard output pass `check`.
fn timed(mut cmd: StdCommand, check: impl Fn(&str) -> Result<(), String>) -> Result<f64, String> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let t = Instant::now();
    let child = cmd.spawn().map_err(|e| format!("{cmd:?}: {e}"))?;
    let o = child
        .wait_with_output()
        .map_err(|e| format!("{cmd:?}: {e}"))?;
    let took = ms(t.elapsed());
    if !o.status.success() {
        return Err(format!(
            "{cmd:?} ended with {}: {}",
            o.status,
            String::from_utf8_lossy(&o.stderr).trim()
        ));
    }
    check(&String::from_utf8_lossy(&o.stdout))?;
    Ok(took)
}

/// `warm + n` rounds of `a` then `b`, the last `n` of each kept. A side that fails
/// stops there, saying why, and the other goes on alone; `b` may have failed already.
fn alternate(
    n: usize,
    mut a: impl FnMut() -> Result<f64, String>,
    b: Result<impl FnMut() -> Result<f64, String>, String>,
) -> (Result<Vec<f64>, String>, Result<Vec<f64>, String>) {
    fn step(
        out: &mut Result<Vec<f64>, String>,
        run: &mut impl FnMut() -> Result<f64, String>,
        keep: bool,
    ) {
        let Ok(samples) = out else { return };
        match run() {
            Ok(v) if keep => samples.push(v),
            Ok(_) => {}
            Err(e) => *out = Err(e),
        }
    }
    let mut out_a = Ok(Vec::with_capacity(n));
    let (mut b, mut out_b) = match b {
        Ok(b) => (Some(b), Ok(Vec::with_capacity(n))),
        Err(e) => (None, Err(e)),
    };
    for round in 0..WARM + n {
        step(&mut out_a, &mut a, round >= WARM);
        if let Some(b) = b.as_mut() {
            step(&mut out_b, b, round >= WARM);
        }
    }
    (out_a, out_b)
}

/// How the clustermgr CLI reaches the agents.
#[derive(Clone, Copy)]
enum Via {
    /// On its own: opens the store, connects to every agent, closes.
    Alone,
    /// Through a running `clustermgr serve`, which keeps the connections warm.
    Serve,
}

impl Via {
    fn name(self) -> &'static str {
        match self {
            Via::Alone => "alone",
            Via::Serve => "serve",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Via::Alone => "no serve (process + store + a handshake per node)",
            Via::Serve => "through a running `clustermgr serve` (warm connections)",
        }
    }
}

/// The two commands compared: (row name, clustermgr's arguments, Salt's arguments).
const PAIRS: [(&str, &[&str], &[&str]); 2] = [
    (
        "exec",
        &["exec", "--nodes", "all", "--", "true"],
        &["*", "cmd.run", "/bin/true"],
    ),
    ("ping", &["ping", "--nodes", "all"], &["*", "test.ping"]),
];

/// Each of [`PAIRS`] on `n` nodes, clustermgr reaching them `via`, in `pairs`
/// alternating runs with Salt's.
fn compare(
    res: &mut Results,
    cluster: &Cluster,
    salt: &Result<Salt, String>,
    n: usize,
    via: Via,
    pairs: usize,
) {
    for (what, cm_args, salt_args) in PAIRS {
        eprintln!(
            "[{n}] {pairs} pairs: `clustermgr {}` ({}) and `salt {}`",
            cm_args.join(" "),
            via.name(),
            salt_args.join(" ")
        );
        let cm = || {
            let mut c = cluster.cli();
            c.args(cm_args);
            timed(c, |_| Ok(()))
        };
        let s = salt
            .as_ref()
            .map_err(Clone::clone)
            .map(|s| move || timed(s.salt(salt_args), |out| s.all_answered(out)));
        let (cm, s) = alternate(pairs, cm, s);
        res.add(
            id(format!("{what}{n}_{}", via.name())),
            format!(
                "{n} nodes: `clustermgr {}`, {}",
                cm_args.join(" "),
                via.label()
            ),
            "ms",
            cm,
            None,
        );
        res.add(
            id(format!("salt_{what}{n}_{}", via.name())),
            format!(
                "{n} nodes: `salt '*' {}`, alternating with the row above",
                salt_args[1..].join(" ")
            ),
            "ms",
            s,
            None,
        );
    }
}

/// The warm in-process `LocalClient` on `n` minions.
fn local_client(res: &mut Results, salt: &Result<Salt, String>, n: usize, calls: usize) {
    eprintln!("[{n}] Salt's LocalClient in one Python process: {calls} calls of each");
    let lc = salt
        .as_ref()
        .map_err(Clone::clone)
        .and_then(|s| s.local_client(calls));
    if let Ok(lc) = &lc {
        res.note(format!(
            "{n} minions: the LocalClient script imported `salt.client` in {:.0} ms and made its `LocalClient` in {:.0} ms before the timed calls",
            lc.import_ms, lc.made_ms
        ));
    }
    let (exec, ping) = match lc {
        Ok(lc) => (Ok(lc.exec), Ok(lc.ping)),
        Err(e) => (Err(e.clone()), Err(e)),
    };
    res.add(
        id(format!("lc_exec{n}")),
        format!("context: {n} nodes: Salt's warm in-process `LocalClient.cmd('*', 'cmd.run', ['/bin/true'])` (no Python start-up, no CLI)"),
        "ms",
        exec,
        None,
    );
    res.add(
        id(format!("lc_ping{n}")),
        format!("context: {n} nodes: Salt's warm in-process `LocalClient.cmd('*', 'test.ping')`"),
        "ms",
        ping,
        None,
    );
}

// ---------------------------------------------------------------------------------
// Memory

/// Idle memory: each agent against each minion, `serve` against the master.
async fn memory(
    res: &mut Results,
    cluster: &Cluster,
    serve: &Serve,
    salt: &mut Result<Salt, String>,
) {
    let n = cluster.agents.len();
    eprintln!("[{n}] idle memory");
    // Memory still for a second, read together: agents and minions both do periodic
    // work (telemetry samples, the minion's schedule loop), so their CPU time is not
    // still even when idle.
    let pid = serve.0.id();
    let serve_pss = settle(Duration::from_secs(30), || smaps_kib(pid, "Pss")).await;
    res.add(
        "serve_pss",
        format!("idle `clustermgr serve` PSS, {n} agents connected"),
        "MiB",
        serve_pss.map(|(kib, _)| vec![mib(kib)]),
        None,
    );
    let agents: Vec<u32> = cluster.agents.iter().filter_map(|a| a.child.id()).collect();
    let agent_rss = settle(Duration::from_secs(30), || {
        agents
            .iter()
            .map(|p| proc_status_kib(*p, "VmRSS"))
            .collect::<Option<Vec<u64>>>()
    })
    .await;
    let agent_private: Vec<f64> = agents
        .iter()
        .filter_map(|p| private_kib(*p))
        .map(mib)
        .collect();
    res.add(
        "agent_rss",
        format!("idle VmRSS per agent ({n} agents)"),
        "MiB",
        agent_rss.map(|(kib, _)| kib.into_iter().map(mib).collect()),
        None,
    );

    let s = match salt {
        Ok(s) => s,
        Err(e) => {
            res.add(
                "minion_rss",
                "idle VmRSS per minion",
                "MiB",
                Err(e.clone()),
                None,
            );
            res.add(
                "master_pss",
                "idle salt-master PSS",
                "MiB",
                Err(e.clone()),
                None,
            );
            return;
        }
    };
    let trees: Vec<Vec<u32>> = s.minion_pids().into_iter().map(process_tree).collect();
    let minion_rss = settle(Duration::from_secs(60), || {
        trees
            .iter()
            .map(|t| summed(t, |p| proc_status_kib(p, "VmRSS")))
            .collect::<Option<Vec<u64>>>()
    })
    .await;
    let procs = trees.iter().map(Vec::len).max().unwrap_or(0);
    res.add(
        "minion_rss",
        format!("idle VmRSS per minion, summed over its {procs} processes ({n} minions)"),
        "MiB",
        minion_rss.map(|(kib, _)| kib.into_iter().map(mib).collect()),
        None,
    );
    let minion_private: Vec<f64> = trees
        .iter()
        .filter_map(|t| summed(t, private_kib))
        .map(mib)
        .collect();
    if !agent_private.is_empty() && !minion_private.is_empty() {
        res.note(format!(
            "private memory (pages no other process maps; VmRSS also counts shared libraries, and a minion's two processes share the pages of their fork): {:.2} MiB per agent, {:.2} MiB per minion (medians)",
            stats(&agent_private).0,
            stats(&minion_private).0
        ));
    }

    let Some(master) = s.master.as_ref().map(Child::id) else {
        return;
    };
    let tree = process_tree(master);
    let pss = |tree: &[u32]| summed(tree, |p| smaps_kib(p, "Pss"));
    if let Ok((kib, _)) = settle(Duration::from_secs(30), || pss(&tree)).await {
        res.note(format!(
            "salt-master PSS with its {n} minions running on the same machine: {:.1} MiB ({} processes); the minions share its Python's pages, so this is less than the master alone holds",
            mib(kib),
            tree.len()
        ));
    }
    // The master alone, as on a machine of its own: its processes' PSS then adds up
    // to what they hold together.
    s.stop_minions();
    let master_pss = settle(Duration::from_secs(30), || pss(&tree)).await;
    res.add(
        "master_pss",
        format!(
            "idle salt-master PSS summed over its {} processes, its minions stopped",
            tree.len()
        ),
        "MiB",
        master_pss.map(|(kib, _)| vec![mib(kib)]),
        None,
    );
}

// ---------------------------------------------------------------------------------

/// One size: agents and minions up, the pairs without and with serve, the
/// LocalClient, and (`with_memory`) idle memory.
async fn size(
    res: &mut Results,
    venv: &Result<Venv, String>,
    n: usize,
    pairs: usize,
    with_memory: bool,
) {
    eprintln!("[{n}] starting {n} agents");
    let cluster = Cluster::gluu(n).await;
    eprintln!("[{n}] starting a Salt master and {n} minions");
    let mut salt = match venv {
        Ok(v) => tokio::task::block_in_place(|| Salt::start(v, n)),
        Err(e) => Err(e.clone()),
    };
    if let Err(e) = &salt {
        res.note(format!("Salt with {n} minions was not measured: {e}"));
    }
    tokio::task::block_in_place(|| compare(res, &cluster, &salt, n, Via::Alone, pairs));
    let serve = cluster.serve().await;
    tokio::task::block_in_place(|| {
        compare(res, &cluster, &salt, n, Via::Serve, pairs);
        local_client(res, &salt, n, pairs);
    });
    if with_memory {
        memory(res, &cluster, &serve, &mut salt).await;
    }
    drop(serve);
    tokio::task::block_in_place(|| drop(salt));
}

/// Python's and Salt's start-up alone, from the virtualenv.
fn startup(res: &mut Results, venv: &Result<Venv, String>, runs: usize) {
    eprintln!("[0] Python and Salt start-up: {runs} runs each");
    for (row, label, program, arg) in [
        (
            "py_start",
            "context: `python3 -c pass` (the virtualenv's Python)",
            "python3",
            &["-c", "pass"][..],
        ),
        (
            "salt_version",
            "context: `salt --version` (Python start-up and Salt's command-line imports)",
            "salt",
            &["--version"][..],
        ),
    ] {
        let times = venv.as_ref().map_err(Clone::clone).and_then(|v| {
            time_process(runs, WARM, || {
                let mut c = StdCommand::new(v.bin(program));
                c.args(arg);
                c
            })
        });
        res.add(row, label, "ms", times, None);
    }
}

fn print_report(res: &mut Results, sizes: &[usize], elapsed: Duration) {
    let mut ratios: Vec<(String, String, String)> = Vec::new();
    for n in sizes {
        for via in [Via::Serve, Via::Alone] {
            for (what, _, salt_args) in PAIRS {
                ratios.push((
                    format!("{what}{n}_{}", via.name()),
                    format!("salt_{what}{n}_{}", via.name()),
                    format!(
                        "{n} nodes: `clustermgr {what}` {} / `salt {}`",
                        match via {
                            Via::Serve => "via serve",
                            Via::Alone => "without serve",
                        },
                        salt_args[1]
                    ),
                ));
            }
        }
        ratios.push((
            format!("exec{n}_serve"),
            format!("lc_exec{n}"),
            format!("{n} nodes: `clustermgr exec` via serve (a whole process) / Salt's warm in-process LocalClient `cmd.run`"),
        ));
    }
    ratios.push((
        "agent_rss".into(),
        "minion_rss".into(),
        "idle memory: agent VmRSS / minion VmRSS".into(),
    ));
    ratios.push((
        "serve_pss".into(),
        "master_pss".into(),
        "idle memory: `clustermgr serve` PSS / salt-master PSS".into(),
    ));
    let refs: Vec<(&str, &str, &str)> = ratios
        .iter()
        .map(|(a, b, l)| (a.as_str(), b.as_str(), l.as_str()))
        .collect();
    let mut w = res.report_head(
        "clustermgr beside Salt",
        &format!("{SALT_PIN}, nodes {sizes:?} on loopback"),
        &refs,
    );
    w.push_str(&res.report_tail(elapsed));
    print!("{w}");
    let _ = std::io::stdout().flush();
}

fn main() {
    let (mut res, started) = clustermgr_tests::bench::begin();
    let large = env_count(NODES_ENV, DEFAULT_LARGE);
    let pairs = env_count(PAIRS_ENV, DEFAULT_PAIRS);
    let mut sizes = vec![SMALL, large];
    sizes.dedup();
    let venv = prepare_venv(&mut res);
    if let Err(e) = &venv {
        res.note(format!("Salt is not installed, so its rows are empty: {e}"));
    }
    let rt = runtime();
    rt.block_on(async {
        tokio::task::block_in_place(|| startup(&mut res, &venv, pairs));
        for &n in &sizes {
            size(&mut res, &venv, n, pairs, n == *sizes.last().unwrap_or(&n)).await;
        }
    });
    rt.shutdown_timeout(Duration::from_secs(1));
    res.note(format!(
        "every node runs on this machine, so a round's figure is mostly the CPU it takes: a Salt minion forks a Python process for each job (its default `multiprocessing: True`), so with {large} minions on these cores each Salt round waits for {large} such processes; on separate hosts they would run in parallel"
    ));
    res.note(
        "Salt's CLI figures include Python's start-up and imports, the CLI's authentication to its master (a local key), the publish to every minion and the wait for all returns; its master and minions were warm. The LocalClient rows are the same round without the process",
    );
    print_report(&mut res, &sizes, started.elapsed());
}
