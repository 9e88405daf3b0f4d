//! `cargo bench -p clustermgr-tests --bench cluster`: clustermgr's latency, fan-out
//! and memory targets, measured against OpenSSH in the same run. Prints a Markdown
//! table of medians and p90s (nearest rank) and the ratios; BENCHMARKS.md keeps the
//! figures.
//!
//! What runs:
//! 1. `exec -- true` on one real agent process: through the library exactly as
//!    `serve` runs it (a serving `Ctx`, warm pooled connection), through the real CLI
//!    talking to a real `clustermgr serve`, and through the CLI alone (process start,
//!    fresh QUIC handshake, Hello, exec).
//! 2. The peer: `ssh 127.0.0.1 true` against an sshd this program starts on a loopback
//!    port with its own configuration, keys and known_hosts, fresh and multiplexed.
//! 3. `exec -- true` fanned out to many agents over warm connections. The agents run
//!    in one child process (this program re-executed with `CLUSTERMGR_BENCH_AGENT_HOST`)
//!    through the agent library, so controller and agents do not share a runtime.
//! 4. A real `clustermgr-agent run`'s resident memory once it is idle.
//!
//! `CLUSTERMGR_BENCH_NODES` overrides the fan-out size (default 1000).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command as StdCommand, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clustermgr::clock;
use clustermgr::ops::{self, Ctx, CtxOptions, NodeState, Operation, Report};
use clustermgr::store::{AuditRecord, NodeRecord};
use clustermgr_protocol::message::Command;
use clustermgr_tests::Cluster;
use clustermgr_tests::bench::{
    ControlMaster, Results, cpu_ms, env_count, ms, proc_status_kib, raise_nofile, runtime, settle,
    ssh_command, time_process,
};
use clustermgr_tests::fleet::Fleet;
use tokio::sync::Semaphore;

/// Overrides the fan-out size.
const NODES_ENV: &str = "CLUSTERMGR_BENCH_NODES";
const DEFAULT_NODES: usize = 1000;

/// Samples per measurement.
const N_LIB_EXEC: usize = 300;
const N_LIB_PING: usize = 100;
const N_STORE_COMMIT: usize = 100;
const N_CLI_SERVE: usize = 60;
const N_CLI_COLD: usize = 30;
const N_LIB_COLD: usize = 20;
const N_SPAWN_ONE: usize = 100;
const N_SSH_FRESH: usize = 20;
const N_SSH_MUX: usize = 60;
const N_FANOUT_EXEC: usize = 7;
const N_FANOUT_PING: usize = 5;
const N_SPAWN_BASELINE: usize = 5;

/// The desired-state benchmark: a change set of this many files on this many agents.
const CONFIG_FILES: usize = 20;
const CONFIG_NODES: usize = 100;
const N_CONFIG: usize = 10;

/// The idle agent's resident memory target, MiB (issue 21).
const AGENT_RSS_TARGET: f64 = 6.0;

/// How many processes the agents' fan-out runs at once (the controller's FANOUT_CAP),
/// used for the process-spawning baseline.
const SPAWN_PARALLEL: usize = 256;

// ---------------------------------------------------------------------------------

fn print_report(res: &mut Results, nodes: usize, elapsed: Duration) {
    let mut w = res.report_head(
        "clustermgr benchmarks",
        &format!("fan-out of {nodes}"),
        &[
            (
                "lib_exec",
                "ssh_mux",
                "warm exec, library (serve's path) / ssh multiplexed",
            ),
            ("cli_serve", "ssh_mux", "CLI via serve / ssh multiplexed"),
            ("cli_serve", "ssh_fresh", "CLI via serve / ssh fresh"),
            ("cli_cold", "ssh_fresh", "CLI without serve / ssh fresh"),
            (
                "fan_exec",
                "spawn_true",
                "fan-out exec / spawning as many `true` locally",
            ),
            (
                "config_apply",
                "disk_floor",
                "apply on 100 agents / the disk's floor for replacing as many files durably",
            ),
        ],
    );
    if let (Some((fan, _)), Some((fresh, _))) = (res.stats("fan_exec"), res.stats("ssh_fresh")) {
        use std::fmt::Write as _;
        let _ = writeln!(
            w,
            "| fan-out exec / {nodes} fresh ssh sessions one after another (extrapolated: {nodes} x ssh fresh p50 = {:.1} s) | {:.4} |",
            fresh * nodes as f64 / 1e3,
            fan / (fresh * nodes as f64)
        );
    }
    if let (Some((apply, _)), Some((fresh, _))) =
        (res.stats("config_apply"), res.stats("ssh_fresh"))
    {
        use std::fmt::Write as _;
        let n = nodes.min(CONFIG_NODES);
        let _ = writeln!(
            w,
            "| apply on {n} agents / {n} fresh ssh sessions one after another, the existing Cluster Manager's way (extrapolated: {n} x ssh fresh p50 = {:.1} s, before any file is copied) | {:.4} |",
            fresh * n as f64 / 1e3,
            apply / (fresh * n as f64)
        );
    }
    w.push_str(&res.report_tail(elapsed));
    print!("{w}");
    let _ = std::io::stdout().flush();
}

// ---------------------------------------------------------------------------------
// Helpers

/// Runs one operation as `serve` does: events drained as they come.
async fn run_op(ctx: &Arc<Ctx>, op: Operation) -> Result<Report, String> {
    clustermgr::dev::one_shot(ctx, "bench", op)
        .await
        .map_err(|e| e.to_string())
}

/// How many nodes answered Ok; an error naming the first failure otherwise.
fn all_ok(r: &Report) -> Result<usize, String> {
    match r {
        Report::Outcomes(o) => {
            let bad: Vec<_> = o.iter().filter(|o| o.state != NodeState::Ok).collect();
            match bad.first() {
                None => Ok(o.len()),
                Some(b) => Err(format!(
                    "{} of {} nodes did not succeed; first: {} ({:?}: {})",
                    bad.len(),
                    o.len(),
                    b.node,
                    b.state,
                    b.message.as_deref().unwrap_or("-")
                )),
            }
        }
        other => Err(format!("unexpected report {other:?}")),
    }
}

fn exec_true(nodes: &str) -> Operation {
    Operation::Exec {
        nodes: nodes.into(),
        command: Command::Argv(vec!["true".into()]),
        timeout_secs: None,
        in_container: false,
        stdin: None,
    }
}

/// Times `op` `n` times after one warm-up run; each run must succeed on every node.
async fn time_op(ctx: &Arc<Ctx>, n: usize, op: impl Fn() -> Operation) -> Result<Vec<f64>, String> {
    all_ok(&run_op(ctx, op()).await?)?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let r = run_op(ctx, op()).await?;
        let el = t.elapsed();
        all_ok(&r)?;
        out.push(ms(el));
    }
    Ok(out)
}

/// Waits until `pid` is idle: neither its RSS nor its CPU time changes for a whole
/// second, at most `patience`. Returns its VmRSS in KiB and how long it took to settle.
async fn idle_rss(pid: u32, patience: Duration) -> Result<(u64, Duration), String> {
    settle(patience, || {
        Some((proc_status_kib(pid, "VmRSS")?, cpu_ms(pid)?.0))
    })
    .await
    .map(|((kib, _), settled)| (kib, settled))
}

// ---------------------------------------------------------------------------------
// 1. One agent: library over a warm connection, CLI via serve, CLI alone

async fn single_node(res: &mut Results) {
    eprintln!("[1] one agent: starting it");
    let cluster = Cluster::gluu(1).await;
    let exec_args = ["exec", "--nodes", "gluu1", "--", "true"];

    eprintln!("[1] CLI without serve: {N_CLI_COLD} runs");
    let cold = tokio::task::block_in_place(|| {
        time_process(N_CLI_COLD, 2, || {
            let mut c = cluster.cli();
            c.args(exec_args);
            c
        })
    });
    res.add(
        "cli_cold",
        "`clustermgr exec --nodes gluu1 -- true`, no serve (process + handshake + Hello + exec)",
        "ms",
        cold,
        Some(8.0),
    );

    eprintln!("[1] CLI `node list` without serve: {N_CLI_COLD} runs");
    let list = tokio::task::block_in_place(|| {
        time_process(N_CLI_COLD, 2, || {
            let mut c = cluster.cli();
            c.args(["node", "list"]);
            c
        })
    });
    res.add(
        "cli_list",
        "context: `clustermgr node list`, no serve (process start + store open, no network)",
        "ms",
        list,
        None,
    );

    eprintln!("[1] CLI `--version`: {N_CLI_COLD} runs");
    let version = tokio::task::block_in_place(|| {
        time_process(N_CLI_COLD, 2, || {
            let mut c = cluster.cli();
            c.arg("--version");
            c
        })
    });
    res.add(
        "cli_start",
        "context: `clustermgr --version` (process start: loader, relocations, argument parsing)",
        "ms",
        version,
        None,
    );

    eprintln!("[1] library, one-shot Ctx as the CLI without serve: {N_LIB_COLD} runs");
    // Where the CLI's time goes without serve, phase by phase, in this process.
    let phases = lib_cold(&cluster.dir(), N_LIB_COLD).await;
    for (i, (id, label)) in [
        (
            "lib_cold",
            "context: in-process one-shot `Ctx::open` + exec (fresh handshake) + `dialer.close()` + store close",
        ),
        (
            "lib_open",
            "context: of which `Ctx::open` (home, store open and its fsync, CA, keys)",
        ),
        (
            "lib_exec_cold",
            "context: of which the exec (handshake + Hello + exec + 2 audit commits)",
        ),
        (
            "lib_close",
            "context: of which `dialer.close()` (until each close datagram is out)",
        ),
        (
            "lib_store_close",
            "context: of which the store's close (redb records its allocator state: fsyncs)",
        ),
        (
            "lib_handshake",
            "context: a fresh handshake + Hello alone (measured beside, not part of the sum)",
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let samples = phases
            .as_ref()
            .map(|runs| runs.iter().map(|r| r[i]).collect())
            .map_err(Clone::clone);
        res.add(id, label, "ms", samples, None);
    }

    eprintln!("[1] library, serving Ctx, warm connection: {N_LIB_EXEC} exec runs");
    match Ctx::open(
        &cluster.dir(),
        clock::system(),
        &CtxOptions::default(),
        true,
    ) {
        Ok(ctx) => {
            let ctx = Arc::new(ctx);
            let lib = time_op(&ctx, N_LIB_EXEC, || exec_true("gluu1")).await;
            res.add(
                "lib_exec",
                "warm `exec -- true` to 1 agent, library (`ops::run` on a serving `Ctx`, as serve runs it)",
                "ms",
                lib,
                Some(1.0),
            );
            let ping = time_op(&ctx, N_LIB_PING, || Operation::Ping {
                nodes: "gluu1".into(),
            })
            .await;
            res.add(
                "lib_ping",
                "warm `ping` (Info) to 1 agent, library (no store write, no process)",
                "ms",
                ping,
                None,
            );
            // exec appends an audit record and updates it: two store commits per exec.
            let mut commits = Vec::with_capacity(N_STORE_COMMIT);
            let mut failed = None;
            for i in 0..N_STORE_COMMIT {
                let rec = AuditRecord {
                    time_ms: i as i64,
                    user: "bench".into(),
                    action: "bench".into(),
                    nodes: vec!["gluu1".into()],
                    detail: "true".into(),
                    results: Vec::new(),
                };
                let t = Instant::now();
                if let Err(e) = ctx.store.audit_append(&rec) {
                    failed = Some(e.to_string());
                    break;
                }
                commits.push(ms(t.elapsed()));
            }
            res.add(
                "store_commit",
                "one store write transaction (`Store::audit_append`; exec does 2)",
                "ms",
                failed.map_or(Ok(commits), Err),
                None,
            );
            ctx.dialer.close().await;
            drop(ctx);
        }
        Err(e) => {
            let why = format!("cannot open the cluster: {e}");
            for (id, label) in [
                ("lib_exec", "warm `exec -- true` to 1 agent, library"),
                ("lib_ping", "warm `ping` to 1 agent, library"),
                ("store_commit", "one store write transaction"),
            ] {
                res.add(id, label, "ms", Err(why.clone()), None);
            }
        }
    }

    eprintln!("[1] spawning one `true` at a time: {N_SPAWN_ONE} runs");
    let mut one = Vec::with_capacity(N_SPAWN_ONE);
    let mut failed = None;
    for _ in 0..N_SPAWN_ONE + 3 {
        match spawn_true(1).await {
            Ok(d) => one.push(ms(d)),
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    res.add(
        "spawn_one",
        "context: spawn and reap one `true` locally as the agent does (tokio::process, piped)",
        "ms",
        failed.map_or_else(|| Ok(one.split_off(3)), Err),
        None,
    );

    eprintln!("[1] CLI through a running `clustermgr serve`: {N_CLI_SERVE} runs");
    let serve = cluster.serve().await;
    let served = tokio::task::block_in_place(|| {
        time_process(N_CLI_SERVE, 3, || {
            let mut c = cluster.cli();
            c.args(exec_args);
            c
        })
    });
    res.add(
        "cli_serve",
        "`clustermgr exec --nodes gluu1 -- true` through a running `clustermgr serve` (warm)",
        "ms",
        served,
        Some(10.0),
    );
    drop(serve);

    // Every timed run above plus its warm-up runs.
    let served_execs = (N_CLI_COLD + 2) + (N_LIB_COLD + 2) + (N_LIB_EXEC + 1) + (N_CLI_SERVE + 3);
    let served_pings = N_LIB_PING + 1;
    if let Some(pid) = cluster.agent("gluu1").child.id() {
        match idle_rss(pid, Duration::from_secs(20)).await {
            Ok((kib, _)) => res.add(
                "agent_rss_busy",
                format!(
                    "agent VmRSS, idle after serving {served_execs} execs and {served_pings} pings"
                ),
                "MiB",
                Ok(vec![kib as f64 / 1024.0]),
                None,
            ),
            Err(e) => res.add(
                "agent_rss_busy",
                "agent VmRSS after execs",
                "MiB",
                Err(e),
                None,
            ),
        }
    }
}

/// What the CLI does without serve, in this process: open the cluster, run the exec
/// over a new connection, close the endpoint, close the store; and, beside it, a
/// handshake alone. Returns per run: [total, open, exec, close, store close, handshake]
/// in ms.
async fn lib_cold(dir: &Path, n: usize) -> Result<Vec<[f64; 6]>, String> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n + 2 {
        let t = Instant::now();
        let ctx = Arc::new(
            Ctx::open(dir, clock::system(), &CtxOptions::default(), false)
                .map_err(|e| e.to_string())?,
        );
        let open = ms(t.elapsed());
        let e = Instant::now();
        let r = run_op(&ctx, exec_true("gluu1")).await;
        let exec = ms(e.elapsed());
        let c = Instant::now();
        ctx.dialer.close().await;
        let close = ms(c.elapsed());
        let d = Instant::now();
        drop(ctx);
        let store_close = ms(d.elapsed());
        let total = ms(t.elapsed());
        all_ok(&r?)?;
        // The handshake alone, on a Ctx of its own so the sum above stays the CLI's.
        let ctx = Ctx::open(dir, clock::system(), &CtxOptions::default(), false)
            .map_err(|e| e.to_string())?;
        let node = ctx
            .store
            .node("gluu1")
            .map_err(|e| e.to_string())?
            .ok_or("no node gluu1")?;
        let h = Instant::now();
        let conn = ctx.dialer.connect(&node).await.map_err(|f| f.message)?;
        let handshake = ms(h.elapsed());
        drop(conn);
        ctx.dialer.close().await;
        drop(ctx);
        if i >= 2 {
            out.push([total, open, exec, close, store_close, handshake]);
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------
// 4. Idle agent memory

async fn idle_memory(res: &mut Results) {
    eprintln!("[4] idle agent memory");
    let cluster = Cluster::gluu(1).await;
    let label = "agent VmRSS, idle after `node add` (Info) and one `ping`";
    let o = tokio::task::block_in_place(|| cluster.run(&["ping", "--nodes", "gluu1"]));
    if !o.status.success() {
        let why = format!("ping failed: {}", clustermgr_tests::stderr(&o).trim());
        res.add("agent_rss", label, "MiB", Err(why), Some(AGENT_RSS_TARGET));
        return;
    }
    let Some(pid) = cluster.agent("gluu1").child.id() else {
        res.add(
            "agent_rss",
            label,
            "MiB",
            Err("no agent pid".into()),
            Some(AGENT_RSS_TARGET),
        );
        return;
    };
    match idle_rss(pid, Duration::from_secs(20)).await {
        Ok((kib, settled)) => {
            res.add(
                "agent_rss",
                label,
                "MiB",
                Ok(vec![kib as f64 / 1024.0]),
                Some(AGENT_RSS_TARGET),
            );
            if let Some(hwm) = proc_status_kib(pid, "VmHWM") {
                res.note(format!(
                    "idle agent: VmRSS {kib} KiB, peak VmHWM {hwm} KiB, settled {:.1} s after the ping",
                    settled.as_secs_f64()
                ));
            }
        }
        Err(e) => res.add("agent_rss", label, "MiB", Err(e), Some(AGENT_RSS_TARGET)),
    }
}

// ---------------------------------------------------------------------------------
// 2. OpenSSH

struct Sshd {
    child: std::process::Child,
    dir: tempfile::TempDir,
    port: u16,
    user: String,
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn find_program(name: &str, extra: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(extra.iter().map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn run_checked(c: &mut StdCommand) -> Result<std::process::Output, String> {
    let o = c.output().map_err(|e| format!("{c:?}: {e}"))?;
    if o.status.success() {
        Ok(o)
    } else {
        Err(format!(
            "{c:?} ended with {}: {}",
            o.status,
            String::from_utf8_lossy(&o.stderr).trim()
        ))
    }
}

fn start_sshd() -> Result<Sshd, String> {
    let sshd = find_program("sshd", &["/usr/sbin", "/sbin"])
        .ok_or("sshd is not installed (apt-get install openssh-server)")?;
    let keygen = find_program("ssh-keygen", &[]).ok_or("ssh-keygen is not installed")?;
    find_program("ssh", &[]).ok_or("ssh is not installed (apt-get install openssh-client)")?;
    // Debian's unit creates sshd's privilege separation directory; nothing does in a
    // container.
    let privsep = Path::new("/run/sshd");
    if !privsep.is_dir() {
        std::fs::create_dir_all(privsep).map_err(|e| {
            format!("sshd needs /run/sshd, which is missing and cannot be created: {e}")
        })?;
    }
    let dir = tempfile::Builder::new()
        .prefix("cm-bench-ssh")
        .tempdir()
        .map_err(|e| e.to_string())?;
    let d = dir.path();
    for key in ["host_ed25519", "client_ed25519"] {
        run_checked(
            StdCommand::new(&keygen)
                .args(["-q", "-t", "ed25519", "-N", "", "-C", "bench", "-f"])
                .arg(d.join(key)),
        )?;
    }
    std::fs::copy(d.join("client_ed25519.pub"), d.join("authorized_keys"))
        .map_err(|e| e.to_string())?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())?
        .port();
    let user = String::from_utf8_lossy(&run_checked(StdCommand::new("id").arg("-un"))?.stdout)
        .trim()
        .to_string();
    let config = format!(
        "Port {port}\n\
         ListenAddress 127.0.0.1\n\
         HostKey {d}/host_ed25519\n\
         PidFile {d}/sshd.pid\n\
         UsePAM no\n\
         PermitRootLogin prohibit-password\n\
         PubkeyAuthentication yes\n\
         PasswordAuthentication no\n\
         KbdInteractiveAuthentication no\n\
         AuthorizedKeysFile {d}/authorized_keys\n\
         StrictModes no\n\
         # Debian's bash sources ~/.bashrc in sessions sshd starts when SHLVL says it\n\
         # is a top-level shell; a heavy ~/.bashrc would be measured instead of ssh.\n\
         SetEnv SHLVL=1\n",
        d = d.display()
    );
    std::fs::write(d.join("sshd_config"), config).map_err(|e| e.to_string())?;
    run_checked(
        StdCommand::new(&sshd)
            .arg("-t")
            .arg("-f")
            .arg(d.join("sshd_config")),
    )
    .map_err(|e| format!("sshd rejects its configuration: {e}"))?;
    let log = std::fs::File::create(d.join("sshd.log")).map_err(|e| e.to_string())?;
    let child = StdCommand::new(&sshd)
        .args(["-D", "-e", "-f"])
        .arg(d.join("sshd_config"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", sshd.display()))?;
    // The host key is known in advance: never accept one blindly.
    let host_pub =
        std::fs::read_to_string(d.join("host_ed25519.pub")).map_err(|e| e.to_string())?;
    let host_pub: Vec<&str> = host_pub.split_whitespace().take(2).collect();
    std::fs::write(
        d.join("known_hosts"),
        format!("[127.0.0.1]:{port} {}\n", host_pub.join(" ")),
    )
    .map_err(|e| e.to_string())?;
    let mut s = Sshd {
        child,
        dir,
        port,
        user,
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(s);
        }
        if let Ok(Some(status)) = s.child.try_wait() {
            let log = std::fs::read_to_string(s.dir.path().join("sshd.log")).unwrap_or_default();
            return Err(format!("sshd exited ({status}): {}", log.trim()));
        }
        if Instant::now() > deadline {
            return Err("sshd did not listen within 10 s".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Sshd {
    /// `ssh` with this server's key, known_hosts and port, and no user configuration.
    fn ssh(&self) -> StdCommand {
        let d = self.dir.path();
        let mut c = ssh_command(&d.join("client_ed25519"), &d.join("known_hosts"));
        c.arg("-p").arg(self.port.to_string());
        c
    }

    fn target(&self) -> String {
        format!("{}@127.0.0.1", self.user)
    }

    fn mux_socket(&self) -> PathBuf {
        self.dir.path().join("mux")
    }
}

fn ssh_bench(res: &mut Results) {
    eprintln!("[2] OpenSSH: starting sshd on loopback");
    let fresh_label =
        "`ssh 127.0.0.1 true`, fresh connection (process + TCP + key exchange + auth + session)";
    let mux_label = "`ssh -S sock 127.0.0.1 true`, warm ControlMaster connection";
    let sshd = match start_sshd() {
        Ok(s) => s,
        Err(e) => {
            res.note(format!("the OpenSSH comparison was skipped: {e}"));
            res.add("ssh_fresh", fresh_label, "ms", Err(e.clone()), None);
            res.add("ssh_mux", mux_label, "ms", Err(e), None);
            return;
        }
    };
    eprintln!("[2] ssh fresh: {N_SSH_FRESH} runs");
    let fresh = time_process(N_SSH_FRESH, 2, || {
        let mut c = sshd.ssh();
        c.arg(sshd.target()).arg("true");
        c
    });
    res.add("ssh_fresh", fresh_label, "ms", fresh, None);

    eprintln!("[2] ssh multiplexed: {N_SSH_MUX} runs");
    let mux = ControlMaster::start(|| sshd.ssh(), &sshd.mux_socket(), &sshd.target())
        .and_then(|master| time_process(N_SSH_MUX, 3, || master.command(sshd.ssh(), &["true"])));
    res.add("ssh_mux", mux_label, "ms", mux, None);
}

// ---------------------------------------------------------------------------------
// 3. Fan-out to many agents hosted in a child process

/// Spawns `n` `true` processes, at most [`SPAWN_PARALLEL`] at once, each as the agent
/// starts commands (own process group, piped output read to the end).
async fn spawn_true(n: usize) -> Result<Duration, String> {
    let cap = Arc::new(Semaphore::new(SPAWN_PARALLEL));
    let start = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..n {
        let permit = cap
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| e.to_string())?;
        set.spawn(async move {
            let _permit = permit;
            tokio::process::Command::new("true")
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .process_group(0)
                .kill_on_drop(true)
                .output()
                .await
        });
    }
    while let Some(r) = set.join_next().await {
        match r {
            Ok(Ok(o)) if o.status.success() => {}
            Ok(Ok(o)) => return Err(format!("true ended with {}", o.status)),
            Ok(Err(e)) => return Err(format!("cannot spawn true: {e}")),
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(start.elapsed())
}

async fn fan_out(res: &mut Results, nodes: usize) {
    let exec_label =
        format!("warm `exec -- true` fanned out to {nodes} agents (`--nodes all`), library");
    let target = if nodes == DEFAULT_NODES {
        Some(500.0)
    } else {
        None
    };
    if let Err(e) = fan_out_inner(res, nodes, &exec_label, target).await {
        res.note(format!("the fan-out benchmark failed: {e}"));
        if !res.rows.iter().any(|r| r.id == "fan_exec") {
            res.add("fan_exec", exec_label, "ms", Err(e), target);
        }
    }
}

async fn fan_out_inner(
    res: &mut Results,
    nodes: usize,
    exec_label: &str,
    target: Option<f64>,
) -> Result<(), String> {
    eprintln!("[3] fan-out: enrolling, signing and starting {nodes} agents in one child process");
    let base = tempfile::Builder::new()
        .prefix("cm-bench-fanout")
        .tempdir()
        .map_err(|e| e.to_string())?;
    let home = base.path().join("home");
    ops::init(&home, "bench", 90, &clock::SystemClock).map_err(|e| e.to_string())?;
    let ctx = Arc::new(
        Ctx::open(&home, clock::system(), &CtxOptions::default(), true)
            .map_err(|e| e.to_string())?,
    );
    // Telemetry off: this bench measures requests, and a thousand collectors sampling
    // /proc in one process would be a load of their own (the telemetry bench measures
    // collection). The warm-up ping below then checks each agent answers as the
    // pinned node, as `node add` does before recording it.
    let fleet = Fleet::start(
        &ctx,
        base.path(),
        nodes,
        |_| "[telemetry]\nenabled = false\n",
    )
    .await?;
    let (signed_in, agents_up, host_pid) = (fleet.signed_in, fleet.agents_up, fleet.host_pid);
    let records = fleet.records.clone();

    eprintln!("[3] fan-out: first contact (handshake + Hello + Info) with {nodes} agents");
    let t = Instant::now();
    let first = run_op(
        &ctx,
        Operation::Ping {
            nodes: "all".into(),
        },
    )
    .await?;
    let first_ms = ms(t.elapsed());
    let first_ok = all_ok(&first);
    res.add(
        "fan_connect",
        format!(
            "first contact: connect + Hello + Info to {nodes} agents (32 handshakes in flight)"
        ),
        "ms",
        first_ok.clone().map(|_| vec![first_ms]),
        None,
    );
    first_ok?;
    let pooled = ctx.pool.as_ref().map_or(0, |p| p.connected().len());
    if pooled != nodes {
        return Err(format!("only {pooled} of {nodes} connections are warm"));
    }
    res.note(format!(
        "fan-out setup: {nodes} agents enrolled and signed (`NodeSign` through `ops::run`) in {:.1} s, all listening after {:.1} s, {pooled} warm connections",
        signed_in.as_secs_f64(),
        agents_up.as_secs_f64()
    ));

    eprintln!("[3] fan-out: {N_FANOUT_PING} warm pings to all");
    let ping = time_op(&ctx, N_FANOUT_PING, || Operation::Ping {
        nodes: "all".into(),
    })
    .await;
    res.add(
        "fan_ping",
        format!("warm `ping` (Info) fanned out to {nodes} agents, library"),
        "ms",
        ping,
        None,
    );

    eprintln!("[3] fan-out: {N_FANOUT_EXEC} warm execs to all");
    let exec = time_op(&ctx, N_FANOUT_EXEC, || exec_true("all")).await;
    res.add("fan_exec", exec_label, "ms", exec, target);

    let config_nodes = &records[..records.len().min(CONFIG_NODES)];
    if let Err(e) = config_bench(res, &ctx, config_nodes).await {
        res.note(format!("the config benchmark failed: {e}"));
    }
    let writers = config_nodes.len();
    eprintln!(
        "[3] baseline: the disk's floor for replacing {CONFIG_FILES} files durably, {writers} writers at once"
    );
    let floor = tokio::task::spawn_blocking({
        let dir = base.path().join("floor");
        move || disk_floor(&dir, writers)
    })
    .await
    .map_err(|e| e.to_string())?;
    res.add(
        "disk_floor",
        format!("context: the least a crash-safe replacement of {CONFIG_FILES} such files costs (each written to a temp name, fsynced, renamed; one fsync of the directory), {writers} writers at once on the agents' disk"),
        "ms",
        floor,
        None,
    );

    if let Some(kib) = proc_status_kib(host_pid, "VmRSS") {
        res.note(format!(
            "the agent host process holds {nodes} agents and their warm connections in {:.1} MiB ({:.0} KiB per agent)",
            kib as f64 / 1024.0,
            kib as f64 / nodes as f64
        ));
    }
    ctx.dialer.close().await;
    drop(ctx);
    fleet.stop().await;

    eprintln!("[3] baseline: spawning {nodes} `true` processes, {N_SPAWN_BASELINE} times");
    let mut spawn = Vec::new();
    let mut failed = None;
    for _ in 0..N_SPAWN_BASELINE {
        match spawn_true(nodes).await {
            Ok(d) => spawn.push(ms(d)),
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    res.add(
        "spawn_true",
        format!("context: spawn and reap {nodes} `true` locally, {SPAWN_PARALLEL} at once (tokio::process)"),
        "ms",
        failed.map_or(Ok(spawn), Err),
        None,
    );
    Ok(())
}

/// A 20-file change set, every file a few KiB of config-like text, version `v`.
fn config_set(v: usize) -> clustermgr_protocol::changeset::ChangeSet {
    use clustermgr_protocol::changeset::{ChangeSet, Content, Entry, Scope};
    ChangeSet {
        revision: v as u64,
        entries: (0..CONFIG_FILES)
            .map(|i| Entry {
                path: format!("/etc/app/f{i}.conf"),
                scope: Scope::Host,
                content: Content::File {
                    bytes: format!("# version {v}\n{}", "key = value\n".repeat(300)).into_bytes(),
                    mode: 0o644,
                    owner: None,
                    group: None,
                },
                secret: i == 0,
                validate: None,
                on_change: Vec::new(),
            })
            .collect(),
        requested_by: "bench".into(),
    }
}

/// [`N_CONFIG`] rounds of `writers` threads at once, each replacing [`CONFIG_FILES`]
/// files of [`config_set`]'s size as durably as anything can (temp file, fsync, rename,
/// then one fsync of the directory), without the backups, journal and checks an apply
/// adds: what the disk alone costs, for the `config_apply` row's ratio.
fn disk_floor(dir: &Path, writers: usize) -> Result<Vec<f64>, String> {
    use std::os::unix::fs::OpenOptionsExt;
    let text = config_set(1).entries[1].content.clone();
    let clustermgr_protocol::changeset::Content::File { bytes, .. } = text else {
        return Err("the config set holds no file".into());
    };
    let one = |d: &Path| -> std::io::Result<()> {
        std::fs::create_dir_all(d)?;
        for i in 0..CONFIG_FILES {
            let temp = d.join(format!(".f{i}.tmp"));
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o644)
                .open(&temp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            std::fs::rename(&temp, d.join(format!("f{i}.conf")))?;
        }
        std::fs::File::open(d)?.sync_all()
    };
    // The files exist first, as they do for the timed applies.
    for w in 0..writers {
        one(&dir.join(w.to_string())).map_err(|e| e.to_string())?;
    }
    let mut out = Vec::with_capacity(N_CONFIG);
    for _ in 0..N_CONFIG {
        let t = Instant::now();
        let done: Vec<std::io::Result<()>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..writers)
                .map(|w| {
                    let d = dir.join(w.to_string());
                    s.spawn(move || one(&d))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(std::io::Error::other("panicked")))
                })
                .collect()
        });
        out.push(ms(t.elapsed()));
        if let Some(Err(e)) = done.into_iter().find(|r| r.is_err()) {
            return Err(e.to_string());
        }
    }
    Ok(out)
}

/// Sends `req` to every node at once over the warm connections; every answer must be
/// `want`.
async fn config_round(
    ctx: &Arc<Ctx>,
    nodes: &[NodeRecord],
    req: &clustermgr_protocol::message::Request,
    want: fn(&clustermgr_protocol::message::Reply) -> bool,
) -> Result<f64, String> {
    let t = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for n in nodes {
        let (ctx, n, req) = (ctx.clone(), n.clone(), req.clone());
        tasks.spawn(async move {
            let conn = ctx.connection(&n).await.map_err(|f| f.message)?;
            conn.unary(&req, Duration::from_secs(60))
                .await
                .map_err(|f| f.message)
        });
    }
    let mut replies = Vec::with_capacity(nodes.len());
    while let Some(r) = tasks.join_next().await {
        replies.push(r.map_err(|e| e.to_string())?);
    }
    let elapsed = ms(t.elapsed());
    for r in replies {
        let r = r?;
        if !want(&r) {
            return Err(format!("unexpected answer {r:?}"));
        }
    }
    Ok(elapsed)
}

/// `plan` of an unchanged 20-file set and `apply` of a changed one on 100 agents.
async fn config_bench(
    res: &mut Results,
    ctx: &Arc<Ctx>,
    nodes: &[NodeRecord],
) -> Result<(), String> {
    use clustermgr_protocol::changeset::{ApplyResult, Change};
    use clustermgr_protocol::message::{Reply, Request};
    let n = nodes.len();
    eprintln!("[3] config: plan and apply of {CONFIG_FILES} files on {n} agents");
    let applied = |r: &Reply| matches!(r, Reply::Applied(a) if a.result == ApplyResult::Applied);
    let unchanged = |r: &Reply| matches!(r, Reply::Planned(p) if p.iter().all(|e| e.change == Change::Unchanged));
    let (mut plan, mut apply) = (Vec::new(), Vec::new());
    // The first apply creates the files (and their directory); not timed.
    config_round(ctx, nodes, &Request::Apply(config_set(0)), applied).await?;
    for round in 1..=N_CONFIG {
        apply.push(config_round(ctx, nodes, &Request::Apply(config_set(round)), applied).await?);
        plan.push(config_round(ctx, nodes, &Request::Plan(config_set(round)), unchanged).await?);
    }
    res.add(
        "config_plan",
        format!("`plan` of an unchanged {CONFIG_FILES}-file change set on {n} agents, library"),
        "ms",
        Ok(plan),
        (n == CONFIG_NODES).then_some(200.0),
    );
    res.add(
        "config_apply",
        format!("`apply` of a {CONFIG_FILES}-file change set (every file changed) on {n} agents, library"),
        "ms",
        Ok(apply),
        (n == CONFIG_NODES).then_some(1000.0),
    );
    Ok(())
}

// ---------------------------------------------------------------------------------

fn main() {
    clustermgr_tests::fleet::serve_agents_if_host();
    let (mut res, started) = clustermgr_tests::bench::begin();
    let mut nodes = env_count(NODES_ENV, DEFAULT_NODES);
    // Each agent holds a UDP socket; each running command three pipes.
    let want = (nodes as u64) * 2 + 4096;
    let limit = raise_nofile(want);
    if limit < want {
        let fit = (limit.saturating_sub(4096) / 2) as usize;
        res.note(format!(
            "the open-files limit is {limit} (hard limit), too low for {nodes} agents; the fan-out uses {fit} (raise it with `ulimit -n {want}`)"
        ));
        nodes = fit.max(1);
    }
    let rt = runtime();
    rt.block_on(async {
        single_node(&mut res).await;
        idle_memory(&mut res).await;
        tokio::task::block_in_place(|| ssh_bench(&mut res));
        fan_out(&mut res, nodes).await;
    });
    rt.shutdown_timeout(Duration::from_secs(1));
    print_report(&mut res, nodes, started.elapsed());
}
