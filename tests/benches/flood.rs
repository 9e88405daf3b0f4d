//! `cargo bench -p clustermgr-tests --bench flood`: what `serve` and the agent cost
//! under the floods they now bound (memory, CPU, open files, log growth, and a normal
//! request's latency during the flood), against an idle baseline measured in the same
//! run just before each flood. A real `serve` (with `--prometheus`) and one real agent
//! on loopback; the flood comes from this process, on a runtime thread of its own.
//! Prints Markdown tables; BENCHMARKS.md keeps the figures.
//!
//! The floods, one after another, each holding for as long as its window's normal
//! requests take (`CLUSTERMGR_BENCH_FLOODS` picks some of them by the names in
//! brackets):
//! 1. **Prometheus** (`prometheus`): `CLUSTERMGR_BENCH_FLOOD` (default 2000) TCP
//!    connections to serve's `--prometheus` listener, half sending nothing, half a
//!    request head at one byte a second. Each reconnects as soon as serve drops it, so
//!    the flood holds. Then, as context (`prometheus-small`), the same with twice as
//!    many connections as serve's 128 scrape slots.
//! 2. **CLI socket** (`cli`): `CLUSTERMGR_BENCH_FLOOD` connections to `HOME/serve.sock`
//!    that send nothing, each reconnecting when dropped. Then, as context
//!    (`backlog`), connections held until the socket's backlog is full, and three
//!    `clustermgr ping`s at that moment.
//! 3. **QUIC** (`quic`): handshakes to the agent's UDP port with a controller
//!    certificate of another cluster's CA (the agent refuses it),
//!    `CLUSTERMGR_BENCH_HANDSHAKES` (default 512, twice the agent's bound on
//!    handshakes waiting to be accepted) in flight.
//!
//! In every window: serve's and the agent's resident memory and open files (sampled
//! every 250 ms), CPU (ms per second of the window), log growth (bytes and lines),
//! and three normal requests, `CLUSTERMGR_BENCH_SAMPLES` (default 10) of each, one of
//! each kind started every second without waiting for the one before:
//! - `clustermgr ping --nodes gluu1`, a whole CLI process, which goes through serve;
//! - a scrape of `/metrics` on a fresh TCP connection;
//! - a fresh controller handshake and Hello to the agent (in process, the genuine
//!   controller certificate), as a CLI without serve makes it.
//!
//! A request still unanswered after `CLUSTERMGR_BENCH_PATIENCE_SECS` (default 100)
//! counts as timed out and shows as `> 100 s` in the percentiles. After each flood:
//! how long until serve answers again, what it logged meanwhile, and both processes'
//! memory 5 s later.

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clustermgr::ca::Ca;
use clustermgr_protocol::NodeName;
use clustermgr_protocol::frame::{expect_message, write_message};
use clustermgr_protocol::identity::{
    CertSummary, Credentials, cert_from_pem, controller_client_config,
};
use clustermgr_protocol::message::{Hello, HelloReply};
use clustermgr_protocol::transport::Timeouts;
use clustermgr_protocol::version::VersionRange;
use clustermgr_tests::bench::{
    Results, cpu_ms, env_count, fmt_value, loadavg, ms, percentile, raise_nofile,
};
use clustermgr_tests::{Cluster, Serve};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Connections in the Prometheus and CLI-socket floods.
const FLOOD_ENV: &str = "CLUSTERMGR_BENCH_FLOOD";
const DEFAULT_FLOOD: usize = 2000;
/// Handshakes in flight in the QUIC flood.
const HANDSHAKES_ENV: &str = "CLUSTERMGR_BENCH_HANDSHAKES";
const DEFAULT_HANDSHAKES: usize = 512;
/// Normal requests of each kind per window.
const SAMPLES_ENV: &str = "CLUSTERMGR_BENCH_SAMPLES";
const DEFAULT_SAMPLES: usize = 10;
/// How long a normal request may take before it counts as timed out.
const PATIENCE_ENV: &str = "CLUSTERMGR_BENCH_PATIENCE_SECS";
const DEFAULT_PATIENCE_SECS: usize = 100;
/// Normal requests of one kind start this far apart.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);
/// How long a flood runs before its window opens: longer than serve's 5 s request
/// deadline, so the first batch of slow clients has been dropped and replaced, and
/// the window sees the steady state rather than the first rush.
const WARMUP: Duration = Duration::from_secs(6);
/// Which floods run: a comma-separated list of `prometheus`, `prometheus-small`,
/// `cli`, `backlog` and `quic`; all by default.
const FLOODS_ENV: &str = "CLUSTERMGR_BENCH_FLOODS";
/// serve's scrapes served at once (`PROMETHEUS_CONNECTIONS` in
/// controller/src/telemetry/export.rs).
const PROMETHEUS_SLOTS: usize = 128;
/// How often memory and open files are read.
const SAMPLE_USAGE_EVERY: Duration = Duration::from_millis(250);
/// The node the requests go to.
const NODE: &str = "gluu1";

fn main() {
    let (mut res, started) = clustermgr_tests::bench::begin();
    let opts = Opts {
        flood: env_count(FLOOD_ENV, DEFAULT_FLOOD),
        handshakes: env_count(HANDSHAKES_ENV, DEFAULT_HANDSHAKES),
        samples: env_count(SAMPLES_ENV, DEFAULT_SAMPLES),
        patience: Duration::from_secs(env_count(PATIENCE_ENV, DEFAULT_PATIENCE_SECS) as u64),
    };
    // The floods' sockets, the backlog probe's held connections, and the harness's own.
    let want = (somaxconn() + opts.flood + opts.handshakes) as u64 + 4096;
    let limit = raise_nofile(want);
    if limit < want {
        res.note(format!(
            "the open-files limit is {limit}, below the {want} this run may hold; floods may fall short of their size (raise it with `ulimit -n {want}`)"
        ));
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut w = rt.block_on(run(&mut res, &opts));
    rt.shutdown_timeout(Duration::from_secs(1));
    w.push_str(&res.report_tail(started.elapsed()));
    print!("{w}");
    let _ = std::io::stdout().flush();
}

/// The run's sizes, from the environment.
struct Opts {
    flood: usize,
    handshakes: usize,
    samples: usize,
    patience: Duration,
}

/// What the windows measure and the normal requests go to.
struct Env {
    cluster: Cluster,
    serve: Serve,
    serve_log: PathBuf,
    agent_pid: u32,
    agent_log: PathBuf,
    agent_addr: SocketAddr,
    prometheus: SocketAddr,
    socket: PathBuf,
    /// The genuine controller's client configuration for the agent.
    genuine: quinn::ClientConfig,
    /// serve's open files once it had settled, before any flood.
    settled_fds: f64,
}

impl Env {
    fn serve_pid(&self) -> u32 {
        self.serve.0.id()
    }
}

async fn run(res: &mut Results, opts: &Opts) -> String {
    eprintln!("starting one agent and `serve --prometheus`");
    let env = setup().await;
    let mut w = String::new();
    let _ = writeln!(
        w,
        "\n## Floods: serve and the agent under bounded floods ({} CPUs; {} normal requests of each kind per window, one a second; timed out after {} s)",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        opts.samples,
        opts.patience.as_secs()
    );
    let n = opts.flood;

    if stage("prometheus") {
        eprintln!("[1] Prometheus listener: {n} slow connections");
        let title = format!(
            "1. Prometheus listener: {n} TCP connections, half silent, half sending a request head one byte a second, each reconnecting when dropped"
        );
        w.push_str(&prometheus_flood(&env, opts, n, &title).await);
    }

    if stage("prometheus-small") {
        // Context: a flood twice the size of serve's scrape slots, where each newcomer
        // drops the oldest slow client.
        let small = 2 * PROMETHEUS_SLOTS;
        eprintln!("[1b] Prometheus listener: {small} slow connections");
        let title = format!(
            "1b. Context: the Prometheus listener with {small} such connections (twice its {PROMETHEUS_SLOTS} slots)"
        );
        w.push_str(&prometheus_flood(&env, opts, small, &title).await);
    }

    if stage("cli") {
        eprintln!("[2] CLI socket: {n} silent connections");
        let sock = env.socket.clone();
        w.push_str(
            &measured(
                &env,
                opts,
                &format!(
                    "2. CLI socket: {n} connections to serve.sock sending nothing, each reconnecting when dropped"
                ),
                WARMUP,
                move |stats| async move {
                    for _ in 0..n {
                        tokio::spawn(silent_unix(sock.clone(), stats.clone()));
                    }
                },
            )
            .await,
        );
    }

    if stage("backlog") {
        eprintln!("[2b] CLI socket: filling its backlog");
        w.push_str(&backlog_probe(&env, res).await);
        let r = recovered(&env).await;
        let _ = writeln!(
            w,
            "\nOnce they were closed, serve logged {} bytes ({} lines) while it accepted them{}.",
            r.serve_log.0,
            r.serve_log.1,
            r.serve_line.map_or(String::new(), |l| format!(
                "; the last line: `{}`",
                l.replace('`', "'")
            ))
        );
    }

    if stage("quic") {
        let h = opts.handshakes;
        eprintln!("[3] agent: {h} refused QUIC handshakes in flight");
        let bad = other_cluster_config(&env);
        let addr = env.agent_addr;
        w.push_str(
            &measured(
                &env,
                opts,
                &format!(
                    "3. Agent: QUIC handshakes with another CA's controller certificate, {h} in flight, each started again as soon as the last ended"
                ),
                // No deadline to wait out here: a second lets the first rush settle.
                Duration::from_secs(1),
                move |stats| async move {
                    // A few endpoints, so one socket's driver is not the limit.
                    let endpoints: Vec<quinn::Endpoint> = (0..4)
                        .map(|_| quinn::Endpoint::client("127.0.0.1:0".parse().expect("addr")))
                        .collect::<Result<_, _>>()
                        .expect("client endpoints");
                    for i in 0..h {
                        tokio::spawn(refused_handshakes(
                            endpoints[i % endpoints.len()].clone(),
                            bad.clone(),
                            addr,
                            stats.clone(),
                        ));
                    }
                },
            )
            .await,
        );
    }

    let agent_log = std::fs::read_to_string(&env.agent_log).unwrap_or_default();
    let refusal_lines: Vec<&str> = agent_log
        .lines()
        .filter(|l| l.contains("refused a connection"))
        .collect();
    res.note(format!(
        "the agent's log holds {} line(s) about refused connections for the whole run{}",
        refusal_lines.len(),
        refusal_lines.last().map_or(String::new(), |l| format!(
            "; the last: `{}`",
            strip_ansi(l.trim())
        ))
    ));
    let serve_log = std::fs::read_to_string(&env.serve_log).unwrap_or_default();
    res.note(format!(
        "serve's log holds {} line(s) for the whole run, {} of them warnings",
        serve_log.lines().count(),
        serve_log.lines().filter(|l| l.contains("WARN")).count()
    ));
    drop(env);
    w
}

/// Whether `name` is among the stages `CLUSTERMGR_BENCH_FLOODS` asks for (all when
/// it is unset).
fn stage(name: &str) -> bool {
    std::env::var(FLOODS_ENV).map_or(true, |v| v.split(',').any(|s| s.trim() == name))
}

/// An idle baseline, then `start`'s flood: `warmup` after it began, the same
/// measurements again; then the flood is stopped and serve's recovery timed. Returns
/// the section for the report.
async fn measured<F, Fut>(env: &Env, opts: &Opts, title: &str, warmup: Duration, start: F) -> String
where
    F: FnOnce(Arc<FloodStats>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    let base = window(env, "baseline", opts).await;
    let flood = Flood::start(start);
    tokio::time::sleep(warmup).await;
    let during = window(env, "flood", opts).await;
    let totals = flood.stop();
    let recovery = recovered(env).await;
    section(title, &base, &during, &totals, &recovery, opts)
}

// ---------------------------------------------------------------------------------
// Setup

async fn setup() -> Env {
    let cluster = Cluster::gluu(1).await;
    let prometheus = free_port();
    let serve = clustermgr_tests::start_serve_with(
        cluster.cli(),
        &cluster.dir(),
        &["--prometheus", &prometheus.to_string()],
    )
    .await;
    // start_serve_with writes serve's stderr beside the home.
    let serve_log = cluster.home.path().join("serve.log");
    let agent = cluster.agent(NODE);
    let agent_pid = agent.child.id().expect("the agent runs");
    let agent_log = agent.dir.join("agent.log");
    let agent_addr = agent.address;
    let home = cluster.dir();
    let genuine = controller_client_config(
        &Credentials::from_pem(
            &read(&home.join("controller.crt")),
            &read(&home.join("controller.key")),
        )
        .expect("controller credentials"),
        cert_from_pem(&read(&home.join("ca.crt"))).expect("CA certificate"),
        NodeName::new(NODE).expect("node name"),
        CertSummary::parse_pem(&read(&agent.dir.join("etc/agent.crt")))
            .expect("agent certificate")
            .key_fingerprint,
        &Timeouts::default(),
    )
    .expect("client config");
    let socket = home.join("serve.sock");
    let mut env = Env {
        cluster,
        serve,
        serve_log,
        agent_pid,
        agent_log,
        agent_addr,
        prometheus,
        socket,
        genuine,
        settled_fds: 0.0,
    };
    // serve is up when its socket answers; wait until it also answers a ping and a
    // scrape, so the first baseline measures a settled serve, not its start.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let p = ping(&env, Duration::from_secs(10)).await;
        let s = scrape(env.prometheus, Duration::from_secs(10)).await;
        if matches!((&p, &s), (Outcome::Ok(_), Outcome::Ok(_))) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "serve did not answer a ping and a scrape within 30 s: {p:?} {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    env.settled_fds = open_files(env.serve_pid());
    env
}

/// A controller certificate of another cluster's CA, which the agent refuses; it
/// still checks the agent the genuine way, so the handshake gets as far as the
/// agent's check of the client.
fn other_cluster_config(env: &Env) -> quinn::ClientConfig {
    let now = time::OffsetDateTime::now_utc();
    let (other, _) = Ca::create("other", now).expect("another CA");
    let (cert, key) = other
        .issue_controller("other", now, time::Duration::days(90), None)
        .expect("its controller certificate");
    let home = env.cluster.dir();
    controller_client_config(
        &Credentials::from_pem(&cert.pem, &key).expect("credentials"),
        cert_from_pem(&read(&home.join("ca.crt"))).expect("CA certificate"),
        NodeName::new(NODE).expect("node name"),
        CertSummary::parse_pem(&read(&env.cluster.agent(NODE).dir.join("etc/agent.crt")))
            .expect("agent certificate")
            .key_fingerprint,
        &Timeouts::default(),
    )
    .expect("client config")
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn free_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("address")
}

/// net.core.somaxconn: the backlog of serve's CLI socket (tokio listens on Unix
/// sockets with the largest backlog the kernel allows).
fn somaxconn() -> usize {
    std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(4096)
}

// ---------------------------------------------------------------------------------
// The normal requests

/// One normal request's result.
#[derive(Debug, Clone)]
enum Outcome {
    /// Answered, after this many ms.
    Ok(f64),
    /// Not answered within the patience.
    TimedOut,
    /// Failed, and why.
    Failed(String),
}

async fn within<F>(patience: Duration, f: F) -> Outcome
where
    F: std::future::Future<Output = Result<f64, String>>,
{
    match tokio::time::timeout(patience, f).await {
        Ok(Ok(v)) => Outcome::Ok(v),
        Ok(Err(e)) => Outcome::Failed(e),
        Err(_) => Outcome::TimedOut,
    }
}

/// `clustermgr ping --nodes gluu1`, a whole process; it goes through serve's socket.
async fn ping(env: &Env, patience: Duration) -> Outcome {
    ping_with(tokio::process::Command::from(env.cluster.cli()), patience).await
}

/// A scrape of /metrics on a fresh connection, until serve has sent all of it.
async fn scrape(addr: SocketAddr, patience: Duration) -> Outcome {
    within(patience, async move {
        let t = Instant::now();
        let mut s = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            .await
            .map_err(|e| format!("write: {e}"))?;
        let mut reply = Vec::new();
        s.read_to_end(&mut reply)
            .await
            .map_err(|e| format!("read: {e}"))?;
        let el = t.elapsed();
        if reply.starts_with(b"HTTP/1.1 200") {
            Ok(ms(el))
        } else {
            Err(format!(
                "answer: {:?}",
                String::from_utf8_lossy(&reply[..reply.len().min(60)])
            ))
        }
    })
    .await
}

/// A fresh QUIC handshake and Hello to the agent as the genuine controller, from a
/// fresh endpoint, as a CLI without serve makes it.
async fn handshake(tls: quinn::ClientConfig, addr: SocketAddr, patience: Duration) -> Outcome {
    let ep = match quinn::Endpoint::client("127.0.0.1:0".parse().expect("addr")) {
        Ok(ep) => ep,
        Err(e) => return Outcome::Failed(format!("endpoint: {e}")),
    };
    let outcome = within(patience, async {
        let t = Instant::now();
        let conn = ep
            .connect_with(tls, addr, NODE)
            .map_err(|e| e.to_string())?
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        let (mut s, mut r) = conn.open_bi().await.map_err(|e| e.to_string())?;
        let hello = Hello {
            versions: VersionRange::ours(),
            identity: "flood-bench".into(),
            software: "flood-bench".into(),
        };
        write_message(&mut s, &hello)
            .await
            .map_err(|e| e.to_string())?;
        let reply = expect_message::<HelloReply, _>(&mut r, 1 << 20, "hello reply")
            .await
            .map_err(|e| format!("hello: {e}"))?;
        let el = t.elapsed();
        conn.close(0u32.into(), b"done");
        match reply {
            HelloReply::Accepted { .. } => Ok(ms(el)),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    ep.close(0u32.into(), b"done");
    outcome
}

// ---------------------------------------------------------------------------------
// A measured window

/// One process's figures over a window.
#[derive(Default)]
struct Usage {
    /// Resident memory samples, MiB.
    rss: Vec<f64>,
    /// Open-file samples.
    fds: Vec<f64>,
    /// CPU used over the window, ms.
    cpu_ms: f64,
    /// Log growth over the window.
    log_bytes: u64,
    log_lines: usize,
}

/// Everything one window measured.
struct Window {
    secs: f64,
    load: String,
    serve: Usage,
    agent: Usage,
    /// This process's CPU over the window (the flood generator's, mostly), ms.
    me_cpu_ms: f64,
    ping: Vec<Outcome>,
    scrape: Vec<Outcome>,
    handshake: Vec<Outcome>,
}

fn open_files(pid: u32) -> f64 {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0.0, |d| d.count() as f64)
}

fn file_len(p: &Path) -> u64 {
    std::fs::metadata(p).map_or(0, |m| m.len())
}

/// Lines written to `p` after byte `from`.
fn lines_since(p: &Path, from: u64) -> usize {
    std::fs::read(p).map_or(0, |b| {
        b.get(from as usize..)
            .map_or(0, |t| t.iter().filter(|c| **c == b'\n').count())
    })
}

/// Measures one window: starts the normal requests one a second, waits for all of
/// them (or their patience), and reads the processes' figures over that time.
async fn window(env: &Env, what: &str, opts: &Opts) -> Window {
    eprintln!(
        "  {what}: {} requests of each kind, one a second",
        opts.samples
    );
    let (spid, apid) = (env.serve_pid(), env.agent_pid);
    let me = std::process::id();
    let cpu0 = (cpu_ms(spid), cpu_ms(apid), cpu_ms(me));
    let logs0 = (file_len(&env.serve_log), file_len(&env.agent_log));
    let load = loadavg();
    let t0 = Instant::now();

    // Memory and open files, read from another task while the requests run.
    let done = Arc::new(AtomicBool::new(false));
    let sampler = tokio::spawn({
        let done = done.clone();
        async move {
            let (mut s, mut a) = (Usage::default(), Usage::default());
            while !done.load(Ordering::Relaxed) {
                s.rss.push(clustermgr_tests::bench::rss_mib(spid));
                s.fds.push(open_files(spid));
                a.rss.push(clustermgr_tests::bench::rss_mib(apid));
                a.fds.push(open_files(apid));
                tokio::time::sleep(SAMPLE_USAGE_EVERY).await;
            }
            (s, a)
        }
    });

    // The kinds are a third of a second apart, so they do not all start at once.
    let mut pings = Vec::new();
    let mut scrapes = Vec::new();
    let mut handshakes = Vec::new();
    let third = SAMPLE_EVERY / 3;
    for i in 0..opts.samples {
        let at = tokio::time::Instant::from_std(t0) + SAMPLE_EVERY * i as u32;
        tokio::time::sleep_until(at).await;
        let cli = tokio::process::Command::from(env.cluster.cli());
        pings.push(tokio::spawn(ping_with(cli, opts.patience)));
        tokio::time::sleep_until(at + third).await;
        scrapes.push(tokio::spawn(scrape(env.prometheus, opts.patience)));
        tokio::time::sleep_until(at + third * 2).await;
        handshakes.push(tokio::spawn(handshake(
            env.genuine.clone(),
            env.agent_addr,
            opts.patience,
        )));
    }
    let join = |v: Vec<tokio::task::JoinHandle<Outcome>>| async move {
        let mut out = Vec::new();
        for h in v {
            out.push(h.await.unwrap_or_else(|e| Outcome::Failed(e.to_string())));
        }
        out
    };
    let ping = join(pings).await;
    let scrape = join(scrapes).await;
    let handshake = join(handshakes).await;

    done.store(true, Ordering::Relaxed);
    let (mut serve, mut agent) = sampler.await.expect("sampler");
    let secs = t0.elapsed().as_secs_f64();
    let cpu1 = (cpu_ms(spid), cpu_ms(apid), cpu_ms(me));
    let used = |a: Option<(f64, f64)>, b: Option<(f64, f64)>| match (a, b) {
        (Some(a), Some(b)) => b.0 - a.0,
        _ => f64::NAN,
    };
    serve.cpu_ms = used(cpu0.0, cpu1.0);
    agent.cpu_ms = used(cpu0.1, cpu1.1);
    serve.log_bytes = file_len(&env.serve_log).saturating_sub(logs0.0);
    serve.log_lines = lines_since(&env.serve_log, logs0.0);
    agent.log_bytes = file_len(&env.agent_log).saturating_sub(logs0.1);
    agent.log_lines = lines_since(&env.agent_log, logs0.1);
    Window {
        secs,
        load,
        serve,
        agent,
        me_cpu_ms: used(cpu0.2, cpu1.2),
        ping,
        scrape,
        handshake,
    }
}

/// [`ping`] from a `clustermgr` command made beforehand (a spawned task cannot borrow
/// the Env).
async fn ping_with(mut cmd: tokio::process::Command, patience: Duration) -> Outcome {
    cmd.args(["ping", "--nodes", NODE])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    within(patience, async move {
        let t = Instant::now();
        let child = cmd.spawn().map_err(|e| format!("spawn: {e}"))?;
        let out = child
            .wait_with_output()
            .await
            .map_err(|e| format!("wait: {e}"))?;
        let el = t.elapsed();
        if out.status.success() {
            Ok(ms(el))
        } else {
            Err(format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    })
    .await
}

/// What happened after a flood stopped.
struct Recovery {
    /// Seconds until serve was back to about its open files of before and answered a
    /// ping and a scrape again (None: not within 60 s).
    secs: Option<f64>,
    /// What serve and the agent logged meanwhile, bytes and lines: the flood's closed
    /// connections still waiting in a backlog are accepted then.
    serve_log: (u64, usize),
    agent_log: (u64, usize),
    /// The last line serve logged meanwhile, if any.
    serve_line: Option<String>,
    /// serve's and the agent's resident memory, MiB, [`AFTER`] after the flood stopped:
    /// whether what a flood took is given back.
    rss_after: (f64, f64),
}

/// When resident memory is read again after a flood.
const AFTER: Duration = Duration::from_secs(5);

/// Waits for serve to recover after a flood stopped (see [`Recovery`]).
async fn recovered(env: &Env) -> Recovery {
    let t = Instant::now();
    let logs0 = (file_len(&env.serve_log), file_len(&env.agent_log));
    let deadline = t + Duration::from_secs(60);
    let mut secs = None;
    while Instant::now() < deadline {
        // Not far above what serve had open once settled (a scrape or ping may be in
        // hand, a telemetry file more); a flood holds up to 128 more.
        if open_files(env.serve_pid()) <= env.settled_fds + 16.0
            && matches!(ping(env, Duration::from_secs(10)).await, Outcome::Ok(_))
            && matches!(
                scrape(env.prometheus, Duration::from_secs(10)).await,
                Outcome::Ok(_)
            )
        {
            secs = Some(t.elapsed().as_secs_f64());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep_until(tokio::time::Instant::from_std(t + AFTER)).await;
    let serve_line = std::fs::read(&env.serve_log).ok().and_then(|b| {
        let grown = String::from_utf8_lossy(b.get(logs0.0 as usize..)?).into_owned();
        grown.lines().last().map(strip_ansi)
    });
    Recovery {
        secs,
        serve_line,
        rss_after: (
            clustermgr_tests::bench::rss_mib(env.serve_pid()),
            clustermgr_tests::bench::rss_mib(env.agent_pid),
        ),
        serve_log: (
            file_len(&env.serve_log).saturating_sub(logs0.0),
            lines_since(&env.serve_log, logs0.0),
        ),
        agent_log: (
            file_len(&env.agent_log).saturating_sub(logs0.1),
            lines_since(&env.agent_log, logs0.1),
        ),
    }
}

/// A log line without its colour escapes (serve and the agent colour their log even
/// into a file).
fn strip_ansi(line: &str) -> String {
    let mut out = String::new();
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters, up to a final letter.
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

// ---------------------------------------------------------------------------------
// The floods

/// What a flood's clients saw.
#[derive(Default)]
struct FloodStats {
    /// Connections made (TCP, Unix), or handshakes started (QUIC).
    opened: AtomicU64,
    /// Connections the server closed (TCP, Unix), or handshakes the agent refused
    /// after it (QUIC: the client's side completes before the agent checks it).
    dropped: AtomicU64,
    /// Connects that failed (TCP, Unix), or handshakes refused before completing (QUIC).
    failed: AtomicU64,
    /// QUIC handshakes the agent had not closed 5 s after the client's side completed:
    /// accepted, or its refusal lost on the way.
    unclosed: AtomicU64,
    /// The distinct errors seen, with their counts.
    errors: Mutex<Vec<(String, u64)>>,
}

impl FloodStats {
    fn error(&self, e: impl std::fmt::Display) {
        let e = e.to_string();
        let mut errs = self.errors.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, n)) = errs.iter_mut().find(|(s, _)| *s == e) {
            *n += 1;
        } else if errs.len() < 8 {
            errs.push((e, 1));
        }
    }
}

/// The counts, once the flood has stopped, and how long it ran.
struct FloodTotals {
    secs: f64,
    opened: u64,
    dropped: u64,
    failed: u64,
    unclosed: u64,
    errors: Vec<(String, u64)>,
}

/// A flood running on a runtime of its own (two threads), so the measuring
/// runtime's timers are not starved by it; stopped by dropping that runtime, which
/// closes every socket the flood holds.
struct Flood {
    stop: tokio::sync::oneshot::Sender<()>,
    thread: std::thread::JoinHandle<()>,
    stats: Arc<FloodStats>,
    started: Instant,
}

impl Flood {
    /// Runs `start` (which spawns the flood's tasks) on a new runtime.
    fn start<F, Fut>(start: F) -> Flood
    where
        F: FnOnce(Arc<FloodStats>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()>,
    {
        let stats = Arc::new(FloodStats::default());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let s = stats.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("flood runtime");
            rt.block_on(async move {
                start(s).await;
                let _ = stopped.await;
            });
            rt.shutdown_timeout(Duration::from_secs(2));
        });
        Flood {
            stop,
            thread,
            stats,
            started: Instant::now(),
        }
    }

    fn stop(self) -> FloodTotals {
        let secs = self.started.elapsed().as_secs_f64();
        let _ = self.stop.send(());
        let _ = self.thread.join();
        let s = &self.stats;
        FloodTotals {
            secs,
            opened: s.opened.load(Ordering::Relaxed),
            dropped: s.dropped.load(Ordering::Relaxed),
            failed: s.failed.load(Ordering::Relaxed),
            unclosed: s.unclosed.load(Ordering::Relaxed),
            errors: s.errors.lock().unwrap_or_else(|p| p.into_inner()).clone(),
        }
    }
}

/// One slow Prometheus client, forever: connects, sends nothing (`slow` false) or a
/// request head one byte a second, and reconnects when serve drops it.
async fn slow_http(addr: SocketAddr, slow: bool, stats: Arc<FloodStats>) {
    loop {
        let mut s = match tokio::net::TcpStream::connect(addr).await {
            Ok(s) => s,
            Err(e) => {
                stats.failed.fetch_add(1, Ordering::Relaxed);
                stats.error(format!("connect: {e}"));
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        stats.opened.fetch_add(1, Ordering::Relaxed);
        let (mut rd, mut wr) = s.split();
        if slow && wr.write_all(b"GET /metrics HTTP/1.1\r\n").await.is_err() {
            stats.dropped.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.tick().await;
        let mut buf = [0u8; 512];
        loop {
            tokio::select! {
                r = rd.read(&mut buf) => match r {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                },
                _ = tick.tick(), if slow => {
                    if wr.write_all(b"x").await.is_err() {
                        break;
                    }
                }
            }
        }
        stats.dropped.fetch_add(1, Ordering::Relaxed);
    }
}

/// One silent CLI-socket client, forever: connects, sends nothing, and reconnects
/// when serve drops it.
async fn silent_unix(sock: PathBuf, stats: Arc<FloodStats>) {
    loop {
        let mut s = match tokio::net::UnixStream::connect(&sock).await {
            Ok(s) => s,
            Err(e) => {
                stats.failed.fetch_add(1, Ordering::Relaxed);
                stats.error(format!("connect: {e}"));
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        stats.opened.fetch_add(1, Ordering::Relaxed);
        let mut buf = [0u8; 64];
        while let Ok(n) = s.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
        stats.dropped.fetch_add(1, Ordering::Relaxed);
    }
}

/// One refused client, forever: a handshake with `tls` (another CA's controller
/// certificate), and the next as soon as the agent has refused it.
async fn refused_handshakes(
    ep: quinn::Endpoint,
    tls: quinn::ClientConfig,
    addr: SocketAddr,
    stats: Arc<FloodStats>,
) {
    loop {
        stats.opened.fetch_add(1, Ordering::Relaxed);
        let connecting = match ep.connect_with(tls.clone(), addr, NODE) {
            Ok(c) => c,
            Err(e) => {
                stats.failed.fetch_add(1, Ordering::Relaxed);
                stats.error(format!("connect: {e}"));
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        match connecting.await {
            // TLS 1.3: the client is done before the agent has checked its
            // certificate; the agent's refusal comes as the connection's close.
            Ok(conn) => match tokio::time::timeout(Duration::from_secs(5), conn.closed()).await {
                Ok(e) => {
                    stats.dropped.fetch_add(1, Ordering::Relaxed);
                    stats.error(format!("closed after the handshake: {e}"));
                }
                Err(_) => {
                    stats.unclosed.fetch_add(1, Ordering::Relaxed);
                    conn.close(0u32.into(), b"done");
                }
            },
            Err(e) => {
                stats.failed.fetch_add(1, Ordering::Relaxed);
                stats.error(format!("handshake: {e}"));
            }
        }
    }
}

/// `count` slow clients on serve's Prometheus port, half silent, half sending a head
/// one byte a second, measured against an idle baseline.
async fn prometheus_flood(env: &Env, opts: &Opts, count: usize, title: &str) -> String {
    let addr = env.prometheus;
    measured(env, opts, title, WARMUP, move |stats| async move {
        for i in 0..count {
            tokio::spawn(slow_http(addr, i % 2 == 1, stats.clone()));
        }
    })
    .await
}

/// Context for the CLI socket: connections held (not reconnecting) until one is
/// refused because the backlog is full, then three `clustermgr ping`s at once.
async fn backlog_probe(env: &Env, res: &mut Results) -> String {
    let mut held = Vec::new();
    let mut refused = None;
    let limit = somaxconn() + 128 + 1000;
    let t = Instant::now();
    while held.len() < limit {
        match tokio::net::UnixStream::connect(&env.socket).await {
            Ok(s) => held.push(s),
            Err(e) => {
                refused = Some(e.to_string());
                break;
            }
        }
    }
    let filled = t.elapsed();
    let mut pings = Vec::new();
    for _ in 0..3 {
        pings.push(ping(env, Duration::from_secs(20)).await);
    }
    let n = held.len();
    drop(held);
    let mut w = String::new();
    let _ = writeln!(
        w,
        "\n#### Context: the CLI socket's backlog full\n\n{n} connections held without reconnecting (somaxconn {}), made in {:.2} s; the next connect: {}.\n",
        somaxconn(),
        filled.as_secs_f64(),
        refused.as_deref().unwrap_or("none refused")
    );
    let _ = writeln!(w, "| `clustermgr ping` at that moment | outcome |");
    let _ = writeln!(w, "|---|---|");
    for (i, p) in pings.iter().enumerate() {
        let _ = writeln!(w, "| {} | {} |", i + 1, outcome_text(p));
    }
    if pings.iter().any(|p| !matches!(p, Outcome::Ok(_))) {
        res.note(format!(
            "with the CLI socket's backlog full, `clustermgr ping` did not go through serve: {}",
            pings
                .iter()
                .find(|p| !matches!(p, Outcome::Ok(_)))
                .map(outcome_text)
                .unwrap_or_default()
        ));
    }
    w
}

fn outcome_text(o: &Outcome) -> String {
    match o {
        Outcome::Ok(v) => format!("answered in {}", fmt_value(*v, "ms")),
        Outcome::TimedOut => "timed out".into(),
        Outcome::Failed(e) => format!("failed: {}", e.replace('|', "/").replace('\n', " ").trim()),
    }
}

// ---------------------------------------------------------------------------------
// The report

/// "p50 / p90 (ok of n)" of a request kind; a timed-out request counts as longer than
/// the patience, a failed one is left out and counted.
fn latency(v: &[Outcome], patience: Duration) -> (String, Option<f64>) {
    let mut answered: Vec<f64> = Vec::new();
    let mut timed_out = 0;
    let mut failed = 0;
    for o in v {
        match o {
            Outcome::Ok(x) => answered.push(*x),
            Outcome::TimedOut => timed_out += 1,
            Outcome::Failed(_) => failed += 1,
        }
    }
    answered.sort_by(f64::total_cmp);
    let considered = answered.len() + timed_out;
    if considered == 0 {
        return (format!("all {failed} failed"), None);
    }
    let mut all = answered.clone();
    all.extend(std::iter::repeat_n(f64::INFINITY, timed_out));
    all.sort_by(f64::total_cmp);
    let show = |x: f64| {
        if x.is_finite() {
            show_ms(x)
        } else {
            format!("> {} s", patience.as_secs())
        }
    };
    let (p50, p90) = (percentile(&all, 0.5), percentile(&all, 0.9));
    let mut s = format!("{} / {}", show(p50), show(p90));
    if timed_out > 0 || failed > 0 {
        let _ = write!(s, " ({} of {} answered", answered.len(), v.len());
        if timed_out > 0 && !answered.is_empty() {
            // The percentiles hide how long the answered ones took.
            let _ = write!(
                s,
                " in {} to {}",
                show_ms(answered[0]),
                show_ms(max(&answered))
            );
        }
        if timed_out > 0 {
            let _ = write!(s, ", {timed_out} timed out");
        }
        if failed > 0 {
            let _ = write!(s, ", {failed} failed");
        }
        s.push(')');
    }
    (s, Some(p50))
}

/// A latency in ms, or in seconds once it is that long.
fn show_ms(v: f64) -> String {
    if v >= 10_000.0 {
        fmt_value(v / 1e3, "s")
    } else {
        fmt_value(v, "ms")
    }
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    if s.is_empty() {
        f64::NAN
    } else {
        percentile(&s, 0.5)
    }
}

fn max(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::NAN, f64::max)
}

fn ratio(flood: f64, base: f64) -> String {
    if !flood.is_finite() {
        "-".into()
    } else if base > 0.0 && base.is_finite() {
        format!("{:.2}", flood / base)
    } else if flood == 0.0 {
        "- (both 0)".into()
    } else {
        "- (baseline 0)".into()
    }
}

/// One flood's section: the table of baseline against flood, the flood's own counts,
/// and the first error of each failing request kind.
fn section(
    title: &str,
    base: &Window,
    flood: &Window,
    totals: &FloodTotals,
    recovery: &Recovery,
    opts: &Opts,
) -> String {
    let mut w = String::new();
    let _ = writeln!(w, "\n### {title}\n");
    let _ = writeln!(
        w,
        "| measure | idle baseline | under the flood | flood / baseline |"
    );
    let _ = writeln!(w, "|---|---:|---:|---:|");
    let mut row = |what: &str, b: String, f: String, r: String| {
        let _ = writeln!(w, "| {what} | {b} | {f} | {r} |");
    };
    for (who, b, f) in [
        ("serve", &base.serve, &flood.serve),
        ("agent", &base.agent, &flood.agent),
    ] {
        row(
            &format!("{who} RSS, median (max)"),
            format!("{:.2} MiB ({:.2})", median(&b.rss), max(&b.rss)),
            format!("{:.2} MiB ({:.2})", median(&f.rss), max(&f.rss)),
            ratio(max(&f.rss), max(&b.rss)),
        );
        row(
            &format!("{who} CPU, ms per s"),
            format!("{:.1}", b.cpu_ms / base.secs),
            format!("{:.1}", f.cpu_ms / flood.secs),
            ratio(f.cpu_ms / flood.secs, b.cpu_ms / base.secs),
        );
        row(
            &format!("{who} open files, max"),
            format!("{:.0}", max(&b.fds)),
            format!("{:.0}", max(&f.fds)),
            ratio(max(&f.fds), max(&b.fds)),
        );
        row(
            &format!("{who} log growth, bytes (lines)"),
            format!("{} ({})", b.log_bytes, b.log_lines),
            format!("{} ({})", f.log_bytes, f.log_lines),
            ratio(f.log_bytes as f64, b.log_bytes as f64),
        );
    }
    row(
        "this process (the flood's clients), CPU ms per s",
        format!("{:.1}", base.me_cpu_ms / base.secs),
        format!("{:.1}", flood.me_cpu_ms / flood.secs),
        "-".into(),
    );
    let mut firsts = Vec::new();
    for (what, b, f) in [
        (
            "`clustermgr ping` through serve, p50 / p90",
            &base.ping,
            &flood.ping,
        ),
        (
            "scrape of /metrics, fresh connection, p50 / p90",
            &base.scrape,
            &flood.scrape,
        ),
        (
            "fresh handshake + Hello to the agent, p50 / p90",
            &base.handshake,
            &flood.handshake,
        ),
    ] {
        let (bs, bp) = latency(b, opts.patience);
        let (fs, fp) = latency(f, opts.patience);
        let r = match (bp, fp) {
            (Some(b), Some(f)) if f.is_finite() => format!("{:.2}", f / b),
            // Timed out: the ratio is at least the patience over the baseline.
            (Some(b), Some(_)) => format!("> {:.0}", opts.patience.as_secs_f64() * 1e3 / b),
            _ => "-".into(),
        };
        row(what, bs, fs, r);
        for o in b.iter().chain(f.iter()) {
            if let Outcome::Failed(e) = o {
                firsts.push(format!(
                    "{what}: {}",
                    outcome_text(&Outcome::Failed(e.clone()))
                ));
                break;
            }
        }
    }
    row(
        "window length, s (load average at its start)",
        format!("{:.1} ({})", base.secs, base.load),
        format!("{:.1} ({})", flood.secs, flood.load),
        "-".into(),
    );
    let rate = |n: u64| n as f64 / totals.secs;
    let _ = writeln!(
        w,
        "\nThe flood ran {:.1} s: {} connections or handshakes opened ({:.0}/s), {} dropped or refused by the server after opening ({:.0}/s), {} failed before opening; {} QUIC handshakes not closed by the agent within 5 s.",
        totals.secs,
        totals.opened,
        rate(totals.opened),
        totals.dropped,
        rate(totals.dropped),
        totals.failed,
        totals.unclosed
    );
    if !totals.errors.is_empty() {
        let errs: Vec<String> = totals
            .errors
            .iter()
            .map(|(e, n)| format!("`{}` x{n}", e.replace('|', "/")))
            .collect();
        let _ = writeln!(w, "What the flood's clients saw: {}.", errs.join("; "));
    }
    match recovery.secs {
        Some(s) => {
            let _ = write!(
                w,
                "After the flood stopped, serve was back to about its open files of before and answered a ping and a scrape within {s:.2} s"
            );
        }
        None => {
            let _ = write!(
                w,
                "After the flood stopped, serve did NOT get back to its open files of before and answer a ping and a scrape within 60 s"
            );
        }
    }
    let _ = writeln!(
        w,
        "; meanwhile serve logged {} bytes ({} lines) and the agent {} bytes ({} lines). {} s after the flood stopped, serve's RSS was {:.2} MiB and the agent's {:.2} MiB.",
        recovery.serve_log.0,
        recovery.serve_log.1,
        recovery.agent_log.0,
        recovery.agent_log.1,
        AFTER.as_secs(),
        recovery.rss_after.0,
        recovery.rss_after.1
    );
    if let Some(l) = &recovery.serve_line {
        let _ = writeln!(w, "serve's last line then: `{}`.", l.replace('`', "'"));
    }
    for f in firsts {
        let _ = writeln!(w, "First failure, {f}.");
    }
    w
}
