//! `cargo bench -p clustermgr-tests --bench health`: how long a real fault takes to
//! become one of `serve`'s health events at the default 10 s check interval, and what
//! the checks cost each agent in CPU. Runs on the Gluu-like cluster of
//! `tests/src/gluu.rs` (three harness hosts with real slapd and csync2, `serve`
//! watching), so it needs root, like the multi-host health test. Prints Markdown
//! tables; BENCHMARKS.md keeps the figures.
//!
//! What runs:
//! 1. The agents' CPU time (`/proc/PID/stat`, their own and that of the csync2
//!    commands they ran and reaped) over a healthy window of whole check rounds with
//!    `serve` running, and, as context, over a window of the same length with `serve`
//!    stopped (no rounds asked, no telemetry streamed; the heartbeat and the metrics
//!    collector go on). `CLUSTERMGR_BENCH_CPU_ROUNDS` sets the rounds in a window
//!    (default 6).
//! 2. The faults of `tests/tests/cluster_health.rs`, one after another, each healed
//!    and the cluster settled before the next; the whole sequence
//!    `CLUSTERMGR_BENCH_REPS` times (default 3), `serve` restarted before each, and
//!    each fault's runs spread evenly over the round's interval. A sample is the
//!    event's stamp (the end of the round that judged it) minus the moment just before
//!    the fault was made.
//!
//! The peer is Gluu's own Cluster Manager, which polls every 5 minutes: each median is
//! also shown as a ratio to 300 s.

use std::fmt::Write as _;
use std::io::Write as _;
use std::time::{Duration, Instant};

use clustermgr_tests::bench::{Results, cpu_ms, env_count, percentile};
use clustermgr_tests::gluu::{CUSTOM, GluuCluster, NODES, Row};

const REPS_ENV: &str = "CLUSTERMGR_BENCH_REPS";
const DEFAULT_REPS: usize = 3;
/// Check rounds in each CPU window (window = rounds x interval).
const ROUNDS_ENV: &str = "CLUSTERMGR_BENCH_CPU_ROUNDS";
const DEFAULT_ROUNDS: usize = 6;

/// `[health] interval_secs` when unset: what an operator gets.
const INTERVAL_SECS: u64 = 10;
/// The target for a fault to be reported.
const TARGET_S: f64 = 20.0;
/// Gluu's Cluster Manager checks on the nodes every 5 minutes.
const PEER_POLL_S: f64 = 300.0;
/// How long a fault may take to show before it counts as not seen.
const PATIENCE: Duration = Duration::from_secs(90);
/// How long the cluster may take to come back after a heal.
const SETTLE: Duration = Duration::from_secs(180);

/// The faults, in the order the multi-host health test makes them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    SlapdStopped,
    LinkCut,
    Partition,
    SlapdFrozen,
    Csync2Stopped,
    Unsynced,
    PortBlocked,
    AgentCut,
}

const FAULTS: [Fault; 8] = [
    Fault::SlapdStopped,
    Fault::LinkCut,
    Fault::Partition,
    Fault::SlapdFrozen,
    Fault::Csync2Stopped,
    Fault::Unsynced,
    Fault::PortBlocked,
    Fault::AgentCut,
];

/// One awaited event: which fault, what `serve` must record, and the samples: where in
/// the interval the fault was made (0 to 1), and the seconds until the event (`None`
/// for not seen within [`PATIENCE`]).
struct Measure {
    id: &'static str,
    fault: Fault,
    what: &'static str,
    event: &'static str,
    node: &'static str,
    check: &'static str,
    levels: &'static [&'static str],
    samples: Vec<(f64, Option<f64>)>,
}

fn measures() -> Vec<Measure> {
    let m = |id, fault, what, event, node, check, levels| Measure {
        id,
        fault,
        what,
        event,
        node,
        check,
        levels,
        samples: Vec::new(),
    };
    vec![
        m(
            "slapd_stopped",
            Fault::SlapdStopped,
            "slapd stopped on gluu3 (SIGKILL)",
            "gluu3 ldap critical",
            "gluu3",
            "ldap",
            &["critical"],
        ),
        m(
            "link_cut",
            Fault::LinkCut,
            "link gluu1<->gluu2 cut (nftables, both ways)",
            "gluu1 ports critical",
            "gluu1",
            "ports",
            &["critical"],
        ),
        m(
            "link_cut_links",
            Fault::LinkCut,
            "the same cut",
            "gluu1 ldap-links critical (syncrepl keepalive 2:2:1 breaks the consumer first)",
            "gluu1",
            "ldap-links",
            &["critical"],
        ),
        m(
            "partition",
            Fault::Partition,
            "gluu3 partitioned from its peers while gluu1 writes 5 entries",
            "gluu3 ldap-csn warning or critical",
            "gluu3",
            "ldap-csn",
            &["warning", "critical"],
        ),
        m(
            "slapd_frozen",
            Fault::SlapdFrozen,
            "slapd frozen on gluu2 (SIGSTOP)",
            "gluu2 ldap critical",
            "gluu2",
            "ldap",
            &["critical"],
        ),
        m(
            "csync2_stopped",
            Fault::Csync2Stopped,
            "csync2 listener stopped on gluu2",
            "gluu2 csync2 critical",
            "gluu2",
            "csync2",
            &["critical"],
        ),
        m(
            "unsynced_file",
            Fault::Unsynced,
            "a file changed on gluu1, not synced",
            "gluu1 csync2 warning",
            "gluu1",
            "csync2",
            &["warning"],
        ),
        m(
            "port_blocked",
            Fault::PortBlocked,
            "gluu1 -> gluu2:1636 blocked",
            "gluu1 ports critical",
            "gluu1",
            "ports",
            &["critical"],
        ),
        m(
            "agent_cut",
            Fault::AgentCut,
            "the controller cut from gluu3's agent",
            "gluu3 agent critical",
            "gluu3",
            "agent",
            &["critical"],
        ),
    ]
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// `kill SIG PID`, as an operator would freeze or thaw a process.
fn signal(pid: u32, sig: &str) {
    let ok = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill {sig} {pid}");
}

/// Makes `f` on the cluster; `rep` keeps each repetition's changed file different.
fn inject(c: &mut GluuCluster, f: Fault, rep: usize) {
    match f {
        Fault::SlapdStopped => c.slapd("gluu3").kill(),
        Fault::LinkCut => c.cut("gluu1", "gluu2"),
        Fault::Partition => {
            c.partition("gluu3");
            c.write_entries("gluu1", &format!("bench-partition-{rep}"), 5);
        }
        Fault::SlapdFrozen => {
            let pid = c.slapd("gluu2").pid();
            signal(pid, "-STOP");
        }
        Fault::Csync2Stopped => {
            c.host("gluu2").sh("/etc/init.d/clustermgr-csync2 stop");
        }
        Fault::Unsynced => {
            c.host("gluu1")
                .sh(&format!("echo 'bench {rep}' > {CUSTOM}/login.xhtml"));
        }
        Fault::PortBlocked => {
            let g1 = c.host("gluu1").ip;
            c.host("gluu2")
                .drop_incoming(&[format!("ip saddr {g1} tcp dport 1636")]);
        }
        Fault::AgentCut => {
            let gateway = c.net.gateway();
            c.host("gluu3")
                .drop_incoming(&[format!("ip saddr {gateway}")]);
        }
    }
}

/// Undoes `f`.
fn heal(c: &mut GluuCluster, f: Fault) {
    match f {
        Fault::SlapdStopped => c.slapd("gluu3").restart(),
        Fault::LinkCut | Fault::Partition | Fault::PortBlocked | Fault::AgentCut => c.heal(),
        Fault::SlapdFrozen => {
            let pid = c.slapd("gluu2").pid();
            signal(pid, "-CONT");
        }
        Fault::Csync2Stopped => {
            c.host("gluu2").sh("/etc/init.d/clustermgr-csync2 start");
        }
        Fault::Unsynced => c.sync("gluu1"),
    }
}

/// `serve`'s round schedule: its watch starts as it binds its socket, and each round
/// starts an interval after the previous one's start, so the schedule drifts only by
/// timer slack, until a round outlasts the interval (a cut agent is given the round's
/// deadline plus a second to answer): then the next starts late. So the bench starts
/// `serve` afresh before each run of the faults, which ends with the cut agent.
struct Schedule {
    t0: Instant,
    interval: Duration,
}

impl Schedule {
    /// Where `at` falls in its interval, 0 to 1.
    fn phase(&self, at: Instant) -> f64 {
        let iv = self.interval.as_secs_f64();
        (at.duration_since(self.t0).as_secs_f64() % iv) / iv
    }

    /// Waits for the next moment at `frac` of an interval after a round's start.
    /// This is a deliberate delay, not a wait for a condition: a real fault strikes at
    /// any point of the interval, while the bench would otherwise always strike just
    /// after `settled` returns, which follows a round closely. So each fault's
    /// repetitions are spread over the interval instead.
    async fn wait_for_phase(&self, frac: f64) {
        let now = Instant::now();
        let iv = self.interval.as_secs_f64();
        let since = now.duration_since(self.t0).as_secs_f64();
        let mut k = (since / iv).floor();
        if self.t0 + Duration::from_secs_f64((k + frac) * iv) <= now {
            k += 1.0;
        }
        let at = self.t0 + Duration::from_secs_f64((k + frac) * iv);
        tokio::time::sleep_until(at.into()).await;
    }
}

/// Stops `serve` as a service manager would (SIGTERM: it closes the store cleanly).
fn stop_serve(c: &mut GluuCluster) {
    if let Some(mut s) = c.serve.take() {
        signal(s.0.id(), "-TERM");
        let _ = s.0.wait();
    }
}

/// Starts `serve` afresh: its round schedule starts now.
async fn restart_serve(c: &mut GluuCluster) -> Schedule {
    stop_serve(c);
    c.serve = Some(c.ctl.serve().await);
    Schedule {
        t0: Instant::now(),
        interval: c.interval,
    }
}

/// The agents' pids, in [`NODES`] order, from the pidfiles their init script keeps.
fn agent_pids(c: &GluuCluster) -> Vec<u32> {
    NODES
        .iter()
        .map(|n| {
            let p = c.host(n).path("/run/clustermgr-agent.pid");
            std::fs::read_to_string(&p)
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or_else(|| panic!("no agent pid in {}", p.display()))
        })
        .collect()
}

/// CPU time of each pid over a fixed window of `window`: (own, reaped children) ms.
async fn cpu_over(pids: &[u32], window: Duration) -> Vec<(f64, f64)> {
    let read = || -> Vec<(f64, f64)> {
        pids.iter()
            .map(|p| cpu_ms(*p).unwrap_or_else(|| panic!("process {p} is gone")))
            .collect()
    };
    let before = read();
    // A measuring window, not a wait for a condition.
    tokio::time::sleep(window).await;
    let after = read();
    before
        .iter()
        .zip(after)
        .map(|(b, a)| (a.0 - b.0, a.1 - b.1))
        .collect()
}

fn main() {
    let (mut res, started) = clustermgr_tests::bench::begin();
    let reps = env_count(REPS_ENV, DEFAULT_REPS);
    let rounds = env_count(ROUNDS_ENV, DEFAULT_ROUNDS);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut w = rt.block_on(run(&mut res, reps, rounds));
    w.push_str(&res.report_tail(started.elapsed()));
    print!("{w}");
    let _ = std::io::stdout().flush();
}

async fn run(res: &mut Results, reps: usize, rounds: usize) -> String {
    eprintln!("building the Gluu cluster (3 hosts, slapd, csync2, serve every {INTERVAL_SECS} s)");
    let t = Instant::now();
    let mut c = GluuCluster::start(INTERVAL_SECS).await;
    c.settled(SETTLE).await;
    eprintln!("cluster healthy after {:.0} s", t.elapsed().as_secs_f64());
    let interval = c.interval;
    let window = interval * rounds as u32;
    let pids = agent_pids(&c);

    // ---- 1. CPU: first without serve, then serve restarted, which also gives the
    // start of its round schedule.
    eprintln!(
        "[1] agents' CPU with serve stopped, {:.0} s",
        window.as_secs_f64()
    );
    stop_serve(&mut c);
    let idle = cpu_over(&pids, window).await;
    let schedule = restart_serve(&mut c).await;
    let serve_pid = c.serve.as_ref().map(|s| s.0.id()).expect("serve");
    c.settled(SETTLE).await;
    // Half an interval after a round's start, the window holds exactly `rounds` rounds.
    schedule.wait_for_phase(0.5).await;
    eprintln!(
        "[1] agents' CPU with serve checking every {} s, {rounds} rounds",
        interval.as_secs()
    );
    let serve_before = cpu_ms(serve_pid);
    let busy = cpu_over(&pids, window).await;
    let serve_after = cpu_ms(serve_pid);
    let serve_cpu = match (serve_before, serve_after) {
        (Some(b), Some(a)) => Some(a.0 + a.1 - b.0 - b.1),
        _ => None,
    };
    let mut w = String::new();
    let _ = writeln!(
        w,
        "\n## Health: fault to event at the default {INTERVAL_SECS} s interval ({} CPUs, {reps} runs of the fault sequence; median nearest rank)\n",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    w.push_str(&cpu_table(&idle, &busy, rounds, window, serve_cpu));

    // ---- 2. The faults.
    let mut ms = measures();
    for rep in 0..reps {
        let schedule = restart_serve(&mut c).await;
        c.settled(SETTLE).await;
        for (i, f) in FAULTS.iter().enumerate() {
            // Each fault meets every phase once over the repetitions, at their middles.
            let frac = (((rep + i) % reps) as f64 + 0.5) / reps as f64;
            schedule.wait_for_phase(frac).await;
            let after = c.last_event();
            let at = Instant::now();
            let t0_ms = GluuCluster::now_ms();
            inject(&mut c, *f, rep);
            eprintln!(
                "[2] run {} of {reps}: {f:?} at {:.2} of the interval",
                rep + 1,
                schedule.phase(at)
            );
            for m in ms.iter_mut().filter(|m| m.fault == *f) {
                let got = c
                    .try_wait_event(after, t0_ms, PATIENCE, |e: &Row| {
                        e.node == m.node
                            && e.check == m.check
                            && m.levels.contains(&e.level.as_str())
                    })
                    .await;
                match &got {
                    Some((e, took)) => eprintln!(
                        "    {}: {} {} {} -> {} after {:.2} s: {}",
                        m.id,
                        e.node,
                        e.check,
                        e.from,
                        e.level,
                        secs(*took),
                        e.reason
                    ),
                    None => eprintln!("    {}: NOT SEEN within {PATIENCE:?}", m.id),
                }
                m.samples
                    .push((schedule.phase(at), got.map(|(_, took)| secs(took))));
            }
            heal(&mut c, *f);
            c.settled(SETTLE).await;
        }
    }
    w.push_str(&fault_table(&ms));
    let missed: Vec<String> = ms
        .iter()
        .filter(|m| m.samples.iter().any(|s| s.1.is_none()))
        .map(|m| m.id.to_string())
        .collect();
    if !missed.is_empty() {
        res.note(format!(
            "not seen within {} s at least once (counted as slower than any time): {}",
            PATIENCE.as_secs(),
            missed.join(", ")
        ));
    }
    let iv = interval.as_secs_f64();
    res.note(format!(
        "each fault was made at {reps} points spread evenly over the interval (the middle of each of its {reps} equal parts, counted from the start of a round of `serve`, which the bench restarts before each run), one point per run; a sample runs from just before the fault to the event's stamp, taken when the round that judged it ended"
    ));
    res.note(format!(
        "worst cases by design, not sampled here (a fault just after a round started): a check one round sees, one interval plus the round ({iv:.0} s + up to about 1 s for a probe's timeout); ldap-csn, which compares with the previous round's CSNs, two intervals plus the round (about {:.0} s); a cut agent, one interval plus the round's reply timeout (capped at the interval), so about {:.0} s",
        2.0 * iv + 1.0,
        2.0 * iv
    ));
    drop(c);
    w
}

/// The fault table: median and max against the target and against the peer's poll.
fn fault_table(ms: &[Measure]) -> String {
    let mut w = String::new();
    let _ = writeln!(w, "\n### Fault to `serve`'s event\n");
    let _ = writeln!(
        w,
        "| id | fault | event awaited | n | median | max | target | verdict (median) | median / {PEER_POLL_S:.0} s | max / {PEER_POLL_S:.0} s | samples (s @ phase of the interval) |"
    );
    let _ = writeln!(w, "|---|---|---|---:|---:|---:|---:|---|---:|---:|---|");
    for m in ms {
        // A fault not seen counts as slower than any that was.
        let mut s: Vec<f64> = m
            .samples
            .iter()
            .map(|v| v.1.unwrap_or(f64::INFINITY))
            .collect();
        s.sort_by(f64::total_cmp);
        if s.is_empty() {
            continue;
        }
        let (med, max) = (percentile(&s, 0.5), s[s.len() - 1]);
        let show = |v: f64| {
            if v.is_finite() {
                format!("{v:.2} s")
            } else {
                format!("not seen in {} s", PATIENCE.as_secs())
            }
        };
        let ratio = |v: f64| {
            if v.is_finite() {
                format!("{:.3}", v / PEER_POLL_S)
            } else {
                "-".into()
            }
        };
        let verdict = match (med < TARGET_S, max < TARGET_S) {
            (true, true) => "met (every run)",
            (true, false) => "met; max MISSED",
            (false, _) => "MISSED",
        };
        let mut by_phase = m.samples.clone();
        by_phase.sort_by(|a, b| a.0.total_cmp(&b.0));
        let each: Vec<String> = by_phase
            .iter()
            .map(|(p, v)| match v {
                Some(v) => format!("{v:.2} @ {p:.2}"),
                None => format!("none @ {p:.2}"),
            })
            .collect();
        let _ = writeln!(
            w,
            "| {} | {} | {} | {} | {} | {} | < {TARGET_S:.0} s | {verdict} | {} | {} | {} |",
            m.id,
            m.what,
            m.event,
            s.len(),
            show(med),
            show(max),
            ratio(med),
            ratio(max),
            each.join(", ")
        );
    }
    w
}

/// The CPU table: per agent, per round and as a share of one core, with serve
/// checking and (context) with serve stopped.
fn cpu_table(
    idle: &[(f64, f64)],
    busy: &[(f64, f64)],
    rounds: usize,
    window: Duration,
    serve_cpu: Option<f64>,
) -> String {
    let mut w = String::new();
    let win_ms = window.as_secs_f64() * 1e3;
    let r = rounds as f64;
    let _ = writeln!(
        w,
        "### Agent CPU over {:.0} s ({rounds} rounds at {INTERVAL_SECS} s; /proc clock ticks of 10 ms)\n",
        window.as_secs_f64()
    );
    let _ = writeln!(
        w,
        "| agent | serve checking: own ms | csync2 (children) ms | ms per round | % of one core | serve stopped: ms per {INTERVAL_SECS} s | % of one core | difference per round |"
    );
    let _ = writeln!(w, "|---|---:|---:|---:|---:|---:|---:|---:|");
    let mut sums = [0.0; 4];
    for (i, n) in NODES.iter().enumerate() {
        let (own, kids) = busy[i];
        let total = own + kids;
        let quiet = idle[i].0 + idle[i].1;
        sums[0] += own;
        sums[1] += kids;
        sums[2] += total;
        sums[3] += quiet;
        let _ = writeln!(
            w,
            "| {n} | {own:.0} | {kids:.0} | {:.1} | {:.2} % | {:.1} | {:.2} % | {:.1} |",
            total / r,
            100.0 * total / win_ms,
            quiet / r,
            100.0 * quiet / win_ms,
            (total - quiet) / r
        );
    }
    let k = NODES.len() as f64;
    let _ = writeln!(
        w,
        "| mean | {:.0} | {:.0} | {:.1} | {:.2} % | {:.1} | {:.2} % | {:.1} |",
        sums[0] / k,
        sums[1] / k,
        sums[2] / k / r,
        100.0 * sums[2] / k / win_ms,
        sums[3] / k / r,
        100.0 * sums[3] / k / win_ms,
        (sums[2] - sums[3]) / k / r
    );
    if let Some(s) = serve_cpu {
        let _ = writeln!(
            w,
            "\n`serve` over the same window: {s:.0} ms, {:.1} ms per round, {:.2} % of one core (its rounds, judging, and the three agents' telemetry)",
            s / r,
            100.0 * s / win_ms
        );
    }
    w
}
