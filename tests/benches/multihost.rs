//! `cargo bench -p clustermgr-tests --bench multihost`: clustermgr on the multi-host
//! harness (hosts in network namespaces with a real sshd, `tests/src/netns.rs`) against
//! OpenSSH on the same hosts, in one run. Prints Markdown tables of medians and p90s
//! (nearest rank) and the ratios; BENCHMARKS.md keeps the figures.
//!
//! What runs (needs root, iproute2 and openssh-server, as the multihost tests do):
//! 1. Bootstrap wall time of `clustermgr node add --from FILE` for 4 and for 10 hosts
//!    in parallel, each repetition on a fresh `Net` and a fresh home, with each host's
//!    progress lines timestamped as they arrive to show where the time goes. The
//!    10-host run also goes as context with a stripped copy of the agent
//!    (`--agent-binary`), with root's `~/.bashrc` hidden on the hosts (see 3.), and
//!    with both, to separate what the release build's debug info and this machine's
//!    login shell cost from what bootstrap itself costs.
//! 2. `clustermgr exec -- true` on the last 4 bootstrapped hosts: the whole CLI process
//!    without `serve` (fresh QUIC handshakes), and through a running `clustermgr serve`,
//!    with the CPU time each run cost the CLI, serve and the agents.
//! 3. The peer on the same 4 hosts, with the harness's key and known_hosts and
//!    `-F /dev/null`: a fresh `ssh HOST true` to each host in parallel, and `ssh` over a
//!    warm ControlMaster per host, to the 4 in parallel and to one at a time. Then the
//!    same again with root's `~/.bashrc` hidden on the hosts: a session sshd starts runs
//!    it, and on this machine it runs `pyenv init`, which is not ssh's cost and which the
//!    agent's exec never pays.
//!
//! `CLUSTERMGR_BENCH_REPS` sets the bootstrap repetitions (default 3).

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write as _};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use clustermgr_tests::Controller;
use clustermgr_tests::bench::{
    ControlMaster, Results, cpu_ms, env_count, ms, ssh_command, stats, time_process, time_rounds,
};
use clustermgr_tests::netns::Net;

const REPS_ENV: &str = "CLUSTERMGR_BENCH_REPS";
const DEFAULT_REPS: usize = 3;

/// The two cluster sizes of the issue.
const SMALL: usize = 4;
const LARGE: usize = 10;

/// Samples per measurement.
const N_CLI_COLD: usize = 30;
const N_CLI_SERVE: usize = 60;
const N_CLI_LIST: usize = 20;
const N_SHELL: usize = 20;
const N_SSH_FRESH: usize = 15;
const N_SSH_MUX_PAR: usize = 40;
const N_SSH_MUX_SEQ: usize = 60;

/// Root's shell start-up file, which Debian's bash runs in every session sshd starts.
const ROOT_BASHRC: &str = "/root/.bashrc";

/// Host names for a cluster of `n`: Gluu nodes and one load balancer, as in the
/// multihost tests.
fn host_names(n: usize) -> Vec<String> {
    (1..n)
        .map(|i| format!("gluu{i}"))
        .chain(["lb1".to_string()])
        .collect()
}

/// Hides root's `~/.bashrc` on a host, in its own mount namespace only (the machine's
/// file and the other hosts are untouched), so its ssh sessions skip it.
fn hide_bashrc(net: &Net, empty: &Path) -> Result<(), String> {
    for h in net.hosts() {
        let out = h.run(&["mount", "--bind", &empty.display().to_string(), ROOT_BASHRC]);
        if !out.status.success() {
            return Err(format!(
                "cannot hide {ROOT_BASHRC} on {}: {}",
                h.name,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
    }
    Ok(())
}

/// Busy and total jiffies of the whole machine, from /proc/stat.
fn cpu_jiffies() -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    let f: Vec<u64> = text
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let total: u64 = f.iter().take(8).sum();
    // idle and iowait
    let idle = f.get(3)? + f.get(4)?;
    Some((total - idle, total))
}

/// A kind of bootstrap run.
struct Variant {
    id: &'static str,
    label: String,
    /// Its column in the table of steps.
    column: String,
    n: usize,
    /// Hide root's `~/.bashrc` on the hosts.
    hide_rc: bool,
    /// Ship a stripped copy of the agent.
    strip: bool,
    target: Option<f64>,
}

/// One bootstrap run: the hosts, their controller, and what was measured.
struct Booted {
    net: Net,
    ctl: Controller,
    /// `node add --from`, spawn to exit.
    wall: Duration,
    /// Making the hosts and the home (not part of the bootstrap).
    setup: Duration,
    /// Share of the machine's CPU time that was busy during the bootstrap.
    busy: Option<f64>,
    /// Each progress line: (ms since spawn, host, step).
    lines: Vec<(f64, String, String)>,
}

/// Makes `n` fresh hosts and a fresh home, and times `node add --from` on all of them.
fn bootstrap(n: usize, hide: Option<&Path>, binary: Option<&Path>) -> Result<Booted, String> {
    let t = Instant::now();
    let mut net = Net::new();
    let names = host_names(n);
    for name in &names {
        net.add_host(name);
    }
    if let Some(empty) = hide {
        hide_bashrc(&net, empty)?;
    }
    let ctl = Controller::new();
    let inventory = ctl.inventory(&net, "gluu1");
    let setup = t.elapsed();

    let cpu_before = cpu_jiffies();
    let start = Instant::now();
    let mut child = ctl
        .cmd()
        .args(["node", "add", "--from"])
        .arg(&inventory)
        .args(
            binary
                .map(|b| ["--agent-binary".as_ref(), b.as_os_str()])
                .into_iter()
                .flatten(),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run clustermgr node add: {e}"))?;
    // Progress goes to stderr, one line per step and host, written as each step starts.
    let stderr = child.stderr.take().expect("piped");
    let reader = std::thread::spawn(move || {
        BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .map(|l| (ms(start.elapsed()), l))
            .collect::<Vec<_>>()
    });
    let out = child
        .wait_with_output()
        .map_err(|e| format!("node add: {e}"))?;
    let wall = start.elapsed();
    let busy = match (cpu_before, cpu_jiffies()) {
        (Some((b0, t0)), Some((b1, t1))) if t1 > t0 => Some((b1 - b0) as f64 / (t1 - t0) as f64),
        _ => None,
    };
    let raw = reader.join().unwrap_or_default();
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() || !stdout.contains(&format!("{n} of {n} hosts added")) {
        let err: Vec<&str> = raw.iter().map(|(_, l)| l.as_str()).collect();
        return Err(format!(
            "node add --from on {n} hosts ended with {}: {} {}",
            out.status,
            stdout.trim(),
            err.join(" / ")
        ));
    }
    let lines = raw
        .into_iter()
        .filter_map(|(t, l)| {
            let (host, step) = l.split_once(": ")?;
            names
                .iter()
                .any(|n| n == host)
                .then(|| (t, host.to_string(), step.to_string()))
        })
        .collect();
    Ok(Booted {
        net,
        ctl,
        wall,
        setup,
        busy,
        lines,
    })
}

/// A progress line's step without the host-specific part ("connecting to root@..." is
/// "connecting", "uploading the agent (N KiB)" is "uploading the agent").
fn step_name(step: &str) -> String {
    let s = step.split(" (").next().unwrap_or(step);
    s.split(" to ").next().unwrap_or(s).to_string()
}

/// Per-step durations over all hosts and runs, in the order steps first appear. A
/// step lasts until the host's next line; the last one until the command exits (the
/// results are printed once every host is done, so it includes waiting for the
/// slowest). The first entry is the command's start until its first line.
#[derive(Default)]
struct Steps(Vec<(String, Vec<f64>)>);

impl Steps {
    fn push(&mut self, name: String, d: f64) {
        match self.0.iter_mut().find(|(n, _)| *n == name) {
            Some((_, v)) => v.push(d),
            None => self.0.push((name, vec![d])),
        }
    }

    fn add_run(&mut self, b: &Booted) {
        if let Some((first, _, _)) = b.lines.first() {
            self.push(
                "(process start, read and check the agent binary)".into(),
                *first,
            );
        }
        let end = ms(b.wall);
        for h in b.net.hosts() {
            let mine: Vec<&(f64, String, String)> = b
                .lines
                .iter()
                .filter(|(_, host, _)| *host == h.name)
                .collect();
            for (i, (t, _, step)) in mine.iter().enumerate() {
                match mine.get(i + 1) {
                    Some((next, _, _)) => self.push(step_name(step), next - t),
                    None => self.push(
                        format!("{} (and wait for the others, until exit)", step_name(step)),
                        end - t,
                    ),
                }
            }
        }
    }

    fn p50(&self, name: &str) -> Option<f64> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| stats(v).0)
    }
}

fn main() {
    let (mut res, started) = clustermgr_tests::bench::begin();
    let reps = env_count(REPS_ENV, DEFAULT_REPS);
    let scratch = tempfile::Builder::new()
        .prefix("cm-bench-mh")
        .tempdir()
        .expect("tempdir");
    let empty_rc = scratch.path().join("empty-bashrc");
    std::fs::write(&empty_rc, "# the multihost bench: no start-up work\n").expect("write");
    let has_rc = Path::new(ROOT_BASHRC).is_file();
    if !has_rc {
        res.note(format!(
            "root has no {ROOT_BASHRC}, so the rows without it equal the rows with it"
        ));
    }

    // ---- 1. Bootstrap
    let stripped = scratch.path().join("clustermgr-agent");
    let strip = Command::new("strip")
        .arg("-o")
        .arg(&stripped)
        .arg(clustermgr_tests::agent_bin())
        .status();
    let strip_err = match strip {
        Ok(s) if s.success() => None,
        Ok(s) => Some(format!("strip ended with {s}")),
        Err(e) => Some(format!("cannot run strip (binutils): {e}")),
    };
    let size_mib = |p: &Path| std::fs::metadata(p).map_or(0.0, |m| m.len() as f64 / 1048576.0);
    let built_mib = size_mib(&clustermgr_tests::agent_bin());
    let variants = [
        Variant {
            id: "boot10",
            label: format!(
                "bootstrap wall time, {LARGE} hosts in parallel (`node add --from`; fresh hosts and home; the release agent as built, {built_mib:.0} MiB)"
            ),
            column: format!("{LARGE} hosts"),
            n: LARGE,
            hide_rc: false,
            strip: false,
            target: Some(10.0),
        },
        Variant {
            id: "boot10_strip",
            label: format!(
                "context: the same, {LARGE} hosts, with a stripped agent (`--agent-binary`, {:.1} MiB)",
                size_mib(&stripped)
            ),
            column: format!("{LARGE}, stripped agent"),
            n: LARGE,
            hide_rc: false,
            strip: true,
            target: None,
        },
        Variant {
            id: "boot10_norc",
            label: format!(
                "context: the same, {LARGE} hosts, root's `~/.bashrc` hidden on the hosts"
            ),
            column: format!("{LARGE}, no `~/.bashrc`"),
            n: LARGE,
            hide_rc: true,
            strip: false,
            target: None,
        },
        Variant {
            id: "boot10_lean",
            label: format!(
                "context: the same, {LARGE} hosts, stripped agent and `~/.bashrc` hidden"
            ),
            column: format!("{LARGE}, both"),
            n: LARGE,
            hide_rc: true,
            strip: true,
            target: None,
        },
        Variant {
            id: "boot4",
            label: format!(
                "bootstrap wall time, {SMALL} hosts in parallel (`node add --from`; fresh hosts and home; the release agent as built)"
            ),
            column: format!("{SMALL} hosts"),
            n: SMALL,
            hide_rc: false,
            strip: false,
            target: None,
        },
    ];
    let mut boot: Vec<Result<Vec<f64>, String>> = variants
        .iter()
        .map(|v| {
            if v.hide_rc && !has_rc {
                Err(format!("root has no {ROOT_BASHRC}"))
            } else if let (true, Some(e)) = (v.strip, &strip_err) {
                Err(e.clone())
            } else {
                Ok(Vec::new())
            }
        })
        .collect();
    let mut steps: Vec<Steps> = variants.iter().map(|_| Steps::default()).collect();
    let mut busy: Vec<Vec<f64>> = variants.iter().map(|_| Vec::new()).collect();
    let mut setup = Vec::new();
    let mut kept = None;
    for rep in 1..=reps {
        for (i, v) in variants.iter().enumerate() {
            let Ok(walls) = &mut boot[i] else {
                continue;
            };
            eprintln!("[1] {}: run {rep} of {reps}", v.column);
            let hide = v.hide_rc.then_some(empty_rc.as_path());
            let binary = v.strip.then_some(stripped.as_path());
            match bootstrap(v.n, hide, binary) {
                Ok(b) => {
                    eprintln!(
                        "    {:.2} s (hosts and home made in {:.1} s)",
                        b.wall.as_secs_f64(),
                        b.setup.as_secs_f64()
                    );
                    walls.push(b.wall.as_secs_f64());
                    steps[i].add_run(&b);
                    busy[i].extend(b.busy);
                    setup.push((v.n, b.setup.as_secs_f64()));
                    // The last 4-host cluster serves the exec and ssh measurements.
                    if v.n == SMALL && rep == reps {
                        kept = Some(b);
                    }
                }
                Err(e) => {
                    eprintln!("    failed: {e}");
                    boot[i] = Err(e);
                }
            }
        }
    }
    for (v, value) in variants.iter().zip(boot) {
        res.add(v.id, v.label.clone(), "s", value, v.target);
    }
    for (v, b) in variants.iter().zip(&busy) {
        if !b.is_empty() {
            res.note(format!(
                "machine CPU busy during `{}`: median {:.0}% of {} cores (all processes, other work included)",
                v.id,
                stats(b).0 * 100.0,
                std::thread::available_parallelism().map_or(0, |n| n.get())
            ));
        }
    }
    for n in [SMALL, LARGE] {
        let s: Vec<f64> = setup
            .iter()
            .filter(|(k, _)| *k == n)
            .map(|(_, s)| *s)
            .collect();
        if !s.is_empty() {
            res.note(format!(
                "making {n} harness hosts (namespaces, overlays, sshd) and a home took {:.1} s (median; not part of the bootstrap figure)",
                stats(&s).0
            ));
        }
    }

    // ---- 2. and 3. on the 4 bootstrapped hosts
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    match &kept {
        Some(b) => {
            exec_bench(&mut res, &b.net, &b.ctl, &rt);
            shell_bench(&mut res, has_rc);
            ssh_bench(&mut res, &b.net, scratch.path(), &empty_rc, has_rc);
        }
        None => res.note(format!(
            "no {SMALL}-host cluster was bootstrapped, so exec and ssh were not measured"
        )),
    }
    drop(kept);
    print_report(&mut res, &variants, &steps, reps, started.elapsed());
}

/// The agents' pids, from the pidfiles their init script keeps on the hosts.
fn agent_pids(net: &Net) -> Vec<u32> {
    net.hosts()
        .iter()
        .filter_map(|h| {
            std::fs::read_to_string(h.path("/run/clustermgr-agent.pid"))
                .ok()?
                .trim()
                .parse()
                .ok()
        })
        .collect()
}

/// CPU ms used so far by: the CLI processes this program ran and reaped, `serve`,
/// and the agents with the commands they ran.
fn cpu_split(serve: Option<u32>, agents: &[u32]) -> [f64; 3] {
    let own = cpu_ms(std::process::id()).map_or(0.0, |c| c.1);
    let serve = serve.and_then(cpu_ms).map_or(0.0, |c| c.0 + c.1);
    let agents = agents
        .iter()
        .filter_map(|p| cpu_ms(*p))
        .map(|c| c.0 + c.1)
        .sum();
    [own, serve, agents]
}

/// Times `cli` `warm + n` times and records, as a note, the CPU each run cost.
fn timed_with_cpu(
    res: &mut Results,
    what: &str,
    n: usize,
    warm: usize,
    serve: Option<u32>,
    agents: &[u32],
    cli: impl FnMut() -> Command,
) -> Result<Vec<f64>, String> {
    let before = cpu_split(serve, agents);
    let r = time_process(n, warm, cli);
    let after = cpu_split(serve, agents);
    if let Ok(samples) = &r {
        let runs = (n + warm) as f64;
        let d: Vec<f64> = (0..3).map(|i| (after[i] - before[i]) / runs).collect();
        res.note(format!(
            "CPU per run of {what} (from /proc, clock ticks summed over {runs} runs): the CLI process {:.1} ms, serve {:.1} ms, the {} agents with their `true` {:.1} ms; {:.1} ms in all against a p50 wall time of {:.1} ms on {} cores",
            d[0],
            d[1],
            agents.len(),
            d[2],
            d.iter().sum::<f64>(),
            stats(samples).0,
            std::thread::available_parallelism().map_or(0, |n| n.get())
        ));
    }
    r
}

fn exec_bench(res: &mut Results, net: &Net, ctl: &Controller, rt: &tokio::runtime::Runtime) {
    let cli = |args: &[&str]| {
        let mut c = ctl.cmd();
        c.args(args);
        c
    };
    let all = ["exec", "--", "true"];
    let one = ["exec", "--nodes", "gluu1", "--", "true"];
    let agents = agent_pids(net);
    eprintln!("[2] CLI without serve, {SMALL} hosts: {N_CLI_COLD} runs");
    let r = timed_with_cpu(
        res,
        "`exec -- true` on 4 hosts without serve",
        N_CLI_COLD,
        2,
        None,
        &agents,
        || cli(&all),
    );
    res.add(
        "cli_cold",
        format!("`clustermgr exec -- true` on {SMALL} hosts, whole CLI process, no serve (fresh QUIC handshakes)"),
        "ms",
        r,
        Some(15.0),
    );
    eprintln!("[2] CLI without serve, 1 host: {N_CLI_COLD} runs");
    let r = time_process(N_CLI_COLD, 2, || cli(&one));
    res.add(
        "cli_cold1",
        "context: `clustermgr exec --nodes gluu1 -- true`, 1 host, no serve",
        "ms",
        r,
        None,
    );
    eprintln!("[2] CLI `node list`: {N_CLI_LIST} runs");
    let r = time_process(N_CLI_LIST, 2, || cli(&["node", "list"]));
    res.add(
        "cli_list",
        "context: `clustermgr node list`, no serve (process start + store open, no network)",
        "ms",
        r,
        None,
    );

    eprintln!("[2] starting `clustermgr serve`");
    let serve = rt.block_on(ctl.serve());
    let serve_pid = Some(serve.0.id());
    eprintln!("[2] CLI through serve, {SMALL} hosts: {N_CLI_SERVE} runs");
    let r = timed_with_cpu(
        res,
        "`exec -- true` on 4 hosts through serve",
        N_CLI_SERVE,
        3,
        serve_pid,
        &agents,
        || cli(&all),
    );
    res.add(
        "cli_serve",
        format!("`clustermgr exec -- true` on {SMALL} hosts, whole CLI process, through a running `clustermgr serve`"),
        "ms",
        r,
        Some(10.0),
    );
    eprintln!("[2] CLI through serve, 1 host: {N_CLI_SERVE} runs");
    let r = time_process(N_CLI_SERVE, 3, || cli(&one));
    res.add(
        "cli_serve1",
        "context: `clustermgr exec --nodes gluu1 -- true`, 1 host, through serve",
        "ms",
        r,
        None,
    );
    drop(serve);
}

/// What root's `~/.bashrc` costs each ssh session, measured locally: Debian's bash
/// runs it when `SSH_CLIENT` is set and the shell is top-level, as in a session sshd
/// starts.
fn shell_bench(res: &mut Results, has_rc: bool) {
    eprintln!("[3] bash start-up: {N_SHELL} runs each");
    let bash = |ssh: bool| {
        let mut c = Command::new("bash");
        c.args(["-c", "true"]).env_remove("SHLVL");
        if ssh {
            c.env("SSH_CLIENT", "10.213.0.1 50000 22");
        } else {
            c.env_remove("SSH_CLIENT").env_remove("SSH2_CLIENT");
        }
        c
    };
    let r = time_process(N_SHELL, 2, || bash(false));
    res.add(
        "bash_plain",
        "context: `bash -c true` locally, no start-up files",
        "ms",
        r,
        None,
    );
    let r = if has_rc {
        time_process(N_SHELL, 2, || bash(true))
    } else {
        Err(format!("root has no {ROOT_BASHRC}"))
    };
    res.add(
        "bash_rc",
        "context: `bash -c true` locally as in an ssh session (`SSH_CLIENT` set: runs root's `~/.bashrc`)",
        "ms",
        r,
        None,
    );
}

fn ssh_bench(res: &mut Results, net: &Net, scratch: &Path, empty_rc: &Path, has_rc: bool) {
    let kh = net.known_hosts();
    let key = net.client_key();
    let ssh = || ssh_command(&key, &kh);
    let hosts = net.hosts();
    let width = hosts.len();
    let fresh = |i: usize| {
        let mut c = ssh();
        c.arg(hosts[i % width].ssh_target()).arg("true");
        c
    };
    let masters: Result<Vec<ControlMaster>, String> = hosts
        .iter()
        .enumerate()
        .map(|(i, h)| ControlMaster::start(ssh, &scratch.join(format!("mux{i}")), &h.ssh_target()))
        .collect();
    let masters = masters.map_err(|e| format!("ControlMaster: {e}"));

    for pass in 0..2 {
        let norc = pass == 1;
        if norc {
            if !has_rc {
                break;
            }
            if let Err(e) = hide_bashrc(net, empty_rc) {
                res.note(format!("the ssh rows without ~/.bashrc were skipped: {e}"));
                break;
            }
        }
        let (sfx, why) = if norc {
            ("_norc", ", root's `~/.bashrc` hidden")
        } else {
            ("", "")
        };
        let id = |base: &'static str| -> &'static str {
            match (base, norc) {
                (b, false) => b,
                ("ssh_fresh_par", true) => "ssh_fresh_par_norc",
                ("ssh_mux_par", true) => "ssh_mux_par_norc",
                (_, true) => "ssh_mux_seq_norc",
            }
        };
        eprintln!("[3] ssh{sfx}: fresh, {width} hosts in parallel: {N_SSH_FRESH} rounds");
        let r = time_rounds(N_SSH_FRESH, 1, width, fresh);
        res.add(
            id("ssh_fresh_par"),
            format!("`ssh HOST true` to {width} hosts in parallel, fresh connections (wall time per round){why}"),
            "ms",
            r,
            None,
        );
        eprintln!("[3] ssh{sfx}: ControlMaster, {width} hosts in parallel: {N_SSH_MUX_PAR} rounds");
        let r = masters
            .as_ref()
            .map_err(Clone::clone)
            .and_then(|m| time_rounds(N_SSH_MUX_PAR, 2, width, |i| m[i].command(ssh(), &["true"])));
        res.add(
            id("ssh_mux_par"),
            format!("`ssh -S sock HOST true` to {width} hosts in parallel, warm ControlMasters (wall time per round){why}"),
            "ms",
            r,
            None,
        );
        eprintln!("[3] ssh{sfx}: ControlMaster, one host at a time: {N_SSH_MUX_SEQ} runs");
        let r = masters.as_ref().map_err(Clone::clone).and_then(|m| {
            let mut i = 0;
            time_process(N_SSH_MUX_SEQ, width, || {
                i += 1;
                m[i % width].command(ssh(), &["true"])
            })
        });
        res.add(
            id("ssh_mux_seq"),
            format!(
                "`ssh -S sock HOST true`, one host at a time (per host), warm ControlMaster{why}"
            ),
            "ms",
            r,
            None,
        );
    }
}

fn print_report(
    res: &mut Results,
    variants: &[Variant],
    steps: &[Steps],
    reps: usize,
    elapsed: Duration,
) {
    let mut w = res.report_head(
        "clustermgr on the multi-host harness",
        &format!("{reps} bootstrap runs per size"),
        &[
        (
            "cli_cold",
            "ssh_fresh_par",
            "CLI without serve, 4 hosts / fresh ssh to 4 hosts in parallel",
        ),
        (
            "cli_serve",
            "ssh_fresh_par",
            "CLI via serve, 4 hosts / fresh ssh to 4 hosts in parallel",
        ),
        (
            "cli_cold",
            "ssh_mux_par",
            "CLI without serve, 4 hosts / warm ControlMaster ssh to 4 hosts in parallel",
        ),
        (
            "cli_serve",
            "ssh_mux_par",
            "CLI via serve, 4 hosts / warm ControlMaster ssh to 4 hosts in parallel",
        ),
        (
            "cli_serve",
            "ssh_mux_seq",
            "CLI via serve, 4 hosts / warm ControlMaster ssh to 1 host",
        ),
        (
            "cli_serve1",
            "ssh_mux_seq",
            "CLI via serve, 1 host / warm ControlMaster ssh to 1 host",
        ),
        (
            "cli_cold",
            "ssh_fresh_par_norc",
            "CLI without serve, 4 hosts / fresh ssh to 4 hosts in parallel, no `~/.bashrc`",
        ),
        (
            "cli_serve",
            "ssh_mux_par_norc",
            "CLI via serve, 4 hosts / warm ControlMaster ssh to 4 hosts in parallel, no `~/.bashrc`",
        ),
        (
            "cli_serve1",
            "ssh_mux_seq_norc",
            "CLI via serve, 1 host / warm ControlMaster ssh to 1 host, no `~/.bashrc`",
        ),
        (
            "boot10",
            "boot4",
            "bootstrap of 10 hosts / bootstrap of 4 hosts",
        ),
        (
            "boot10_strip",
            "boot10",
            "bootstrap of 10 hosts, stripped agent / as built",
        ),
        (
            "boot10_norc",
            "boot10",
            "bootstrap of 10 hosts without `~/.bashrc` / with it",
        ),
        (
            "boot10_lean",
            "boot10",
            "bootstrap of 10 hosts, stripped agent and no `~/.bashrc` / as built, with it",
        ),
        ],
    );
    let _ = writeln!(w);
    let _ = writeln!(
        w,
        "### Where bootstrap spends its time (per host, p50 over hosts and runs, ms)"
    );
    let _ = writeln!(w);
    let cols: Vec<&str> = variants.iter().map(|v| v.column.as_str()).collect();
    let _ = writeln!(w, "| step | {} |", cols.join(" | "));
    let _ = writeln!(w, "|---|{}", "---:|".repeat(cols.len()));
    let mut names: Vec<&String> = Vec::new();
    for s in steps {
        for (n, _) in &s.0 {
            if !names.contains(&n) {
                names.push(n);
            }
        }
    }
    for name in names {
        let cells: Vec<String> = steps
            .iter()
            .map(|s| s.p50(name).map_or("-".to_string(), |v| format!("{v:.0}")))
            .collect();
        let _ = writeln!(w, "| {name} | {} |", cells.join(" | "));
    }
    w.push_str(&res.report_tail(elapsed));
    print!("{w}");
    let _ = std::io::stdout().flush();
}
