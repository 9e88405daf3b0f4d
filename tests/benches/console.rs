//! `cargo bench -p clustermgr-tests --bench console`: the web console's speed targets
//! (issue 19) with 100 agents in the cluster, measured at a plain HTTP client on
//! loopback against a real release `clustermgr serve`. Prints a Markdown table of
//! medians and p90s (nearest rank); BENCHMARKS.md keeps the figures.
//!
//! What runs:
//! 1. 100 agents in one child process (this program re-executed with
//!    `CLUSTERMGR_BENCH_CONSOLE_AGENTS`) through the agent library, each collecting
//!    telemetry at the default 10 s, enrolled and signed through `ops::run`, and put in
//!    a fresh home's inventory with the addresses they listen on. The first node's
//!    telemetry is off: it carries 30 days of `node_load1` history written straight
//!    into the telemetry store (raw samples every 10 s, rolled up by the store's own
//!    `maintain` into its 1-minute and 1-hour tiers), which a live stream of its own
//!    would collide with (the store keeps one sequence cursor per node).
//! 2. `serve` with `[web] address = "off"`: once it has every agent connected, ticking
//!    and health-checked, its resident memory and CPU over 20 s.
//! 3. `serve` with the console and ten logged-in sessions, each holding
//!    `/api/v1/stream` open as an Overview tab does: the same figures, the interval of
//!    the live `top` events, and the Overview's requests again under that load.
//! 4. A fresh `serve` with the console and one session: the Overview's requests
//!    (`/`, `/api/v1/top`, `/api/v1/status`) timed 50 times, its weight, the 30-day chart
//!    of the first node, and the event stream's first `top` and `status` events.
//! 5. A small cluster of one real `clustermgr-agent` process following a file: a line
//!    appended to it, until it arrives on `/api/v1/logs/stream` (one every 100 ms).
//!
//! `CLUSTERMGR_BENCH_NODES` overrides the number of agents (default 100; the targets
//! are judged at 100 only).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use clustermgr::clock::{self, Clock};
use clustermgr::ops::{self, Ctx, CtxOptions};
use clustermgr::telemetry::store::{Retention, TelemetryStore, Tier};
use clustermgr_protocol::telemetry::{Body, Record, Sample};
use clustermgr_tests::bench::{
    Results, cpu_ms, env_count, ms, proc_status_kib, raise_nofile, rss_mib, stats,
};
use clustermgr_tests::fleet::Fleet;
use clustermgr_tests::web::{Answer, console_address, try_request};
use clustermgr_tests::{Cluster, Serve, clustermgr_bin, node, start_serve};

/// Set in the child that hosts the agents: the directory of their configs.
/// Overrides the number of agents.
const NODES_ENV: &str = "CLUSTERMGR_BENCH_NODES";
const DEFAULT_NODES: usize = 100;

/// Rounds of the Overview's requests, and of the chart's.
const ROUNDS: usize = 50;
/// Untimed rounds before them (the first requests fault in code and warm caches).
const WARM: usize = 3;
/// Event streams opened one after another for the first-events figure.
const STREAM_OPENS: usize = 10;
/// Browser sessions holding the event stream open for the memory figure.
const SESSIONS: usize = 10;
/// Resident memory samples, one a second.
const RSS_SAMPLES: usize = 20;
/// Log lines timed from the file to the browser, one every [`LOG_EVERY`].
const LOG_LINES: usize = 100;
const LOG_EVERY: Duration = Duration::from_millis(100);
/// Days of history behind the chart, and the chart's step (the Node page's 30-day
/// range asks for one point per 2 hours).
const HISTORY_DAYS: i64 = 30;
const CHART_STEP_SECS: u64 = 7200;
/// The agent's default metrics interval, which the history is written at.
const TICK_MS: i64 = 10_000;
/// How long `serve` may take to have every agent connected, ticking and checked.
const READY_PATIENCE: Duration = Duration::from_secs(180);

/// The console account every session logs in as (a password long enough for
/// `user add`).
const ACCOUNT: &str = "bench";
const PASSWORD: &str = "the console bench's long password";

/// The existing Gluu Cluster Manager's dashboard refreshes every 5 minutes (its
/// documented poll; it cannot run here, so this is not measured).
const PEER_REFRESH_SECS: f64 = 300.0;

// ---------------------------------------------------------------------------------

fn print_report(res: &mut Results, nodes: usize, elapsed: Duration) {
    let mut w = res.report_head(
        "The web console (issue 19)",
        &format!("{nodes} agents, real `serve` in release, HTTP on loopback"),
        &[
            (
                "live_interval",
                "peer_interval",
                "the Overview's refresh: live `top` events / the existing Cluster Manager's 5-minute poll",
            ),
            (
                "ov_sum_busy",
                "ov_sum",
                "Overview requests with ten open pages / with none",
            ),
            (
                "rss_on",
                "rss_off",
                "serve's memory with the console and ten open pages / without the console",
            ),
        ],
    );
    w.push_str(&res.report_tail(elapsed));
    print!("{w}");
    let _ = std::io::stdout().flush();
}

// ---------------------------------------------------------------------------------
// The agents: many in one child process

/// A home at `base/home` whose inventory holds `n` agents served by one child process
/// (closed again when this returns, so `serve` can open it): telemetry as a Gluu node
/// sends it (every 10 s), so the Overview's rows carry CPU, memory and their sparkline;
/// no default logs, which the sandbox root does not have; none on the first node, whose
/// history this program writes.
async fn fleet_in(base: &Path, n: usize) -> Result<(PathBuf, Fleet), String> {
    let home = base.join("home");
    ops::init(&home, "bench", 90, &clock::SystemClock).map_err(|e| e.to_string())?;
    let ctx = Arc::new(
        Ctx::open(&home, clock::system(), &CtxOptions::default(), false)
            .map_err(|e| e.to_string())?,
    );
    let fleet = Fleet::start(&ctx, base, n, |i| {
        if i == 0 {
            "[telemetry]\nenabled = false\n"
        } else {
            "[telemetry]\ndefault_logs = false\n"
        }
    })
    .await?;
    ctx.dialer.close().await;
    drop(ctx);
    Ok((home, fleet))
}

// ---------------------------------------------------------------------------------
// The chart's history

/// A load average that rises and falls with the day, with a little noise, in the
/// hundredths /proc/loadavg has (so it compresses as the real one does).
fn load_at(t_ms: i64, noise: &mut u64) -> f64 {
    *noise = noise
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let jitter = (*noise >> 40) as f64 / (1u64 << 24) as f64;
    let day = (t_ms % 86_400_000) as f64 / 86_400_000.0;
    let v = 0.6 + 0.4 * (day * std::f64::consts::TAU).sin() + 0.3 * jitter;
    (v * 100.0).round() / 100.0
}

/// Writes `HISTORY_DAYS` days of `node_load1` for `node` into the home's telemetry
/// store as the agent would have sent them (a tick every 10 s), then lets the store's
/// own upkeep roll them up and drop the raw samples past their retention, as a
/// long-running `serve` would have. Returns a note of what the tiers hold.
fn fill_history(home: &Path, node: &str) -> Result<String, String> {
    let t = Instant::now();
    let store = TelemetryStore::open(&home.join("telemetry.redb")).map_err(|e| e.to_string())?;
    let now_ms = (clock::SystemClock.now().unix_timestamp_nanos() / 1_000_000) as i64;
    // Two hours more than the window, so its first step is whole.
    let start = (now_ms - HISTORY_DAYS * 86_400_000 - 7_200_000) / TICK_MS * TICK_MS;
    let mut noise = 0x2545_f491_4f6c_dd1d_u64;
    let mut seq = 0u64;
    let mut batch = Vec::with_capacity(8640);
    let mut samples = 0usize;
    let mut at = start;
    while at < now_ms {
        seq += 1;
        batch.push(Record {
            seq,
            time_ms: at,
            body: Body::Metrics(vec![Sample {
                name: "node_load1".into(),
                labels: Vec::new(),
                value: load_at(at, &mut noise),
            }]),
        });
        at += TICK_MS;
        // A day per transaction: the agent sends smaller batches, but the chunks come
        // out the same.
        if batch.len() == 8640 || at >= now_ms {
            samples += store
                .ingest(node, &batch)
                .map_err(|e| e.to_string())?
                .samples;
            batch.clear();
        }
    }
    let kept = store
        .maintain(now_ms, &Retention::default(), false)
        .map_err(|e| e.to_string())?;
    let tier = |t: Tier| store.tier_stats(t).map_err(|e| e.to_string());
    let (raw, minute, hour) = (tier(Tier::Raw)?, tier(Tier::Minute)?, tier(Tier::Hour)?);
    Ok(format!(
        "chart history: {samples} samples of `node_load1` for {node} over {HISTORY_DAYS} days (one every 10 s) written through `TelemetryStore::ingest` and rolled up by `TelemetryStore::maintain` with the default retention in {:.1} s: {} points rolled up, {} chunks dropped; the raw tier keeps {} samples ({} KiB), the 1-minute tier {} points ({} KiB), the 1-hour tier {} points ({} KiB)",
        t.elapsed().as_secs_f64(),
        kept.rolled_up,
        kept.removed,
        raw.1,
        raw.0 / 1024,
        minute.1,
        minute.0 / 1024,
        hour.1,
        hour.0 / 1024,
    ))
}

// ---------------------------------------------------------------------------------
// serve and the console

/// A `clustermgr` command for `home`.
fn cli(home: &Path) -> std::process::Command {
    let mut c = std::process::Command::new(clustermgr_bin());
    c.arg("--home").arg(home).env_remove("CLUSTERMGR_HOME");
    c
}

/// Makes the console account through the CLI (the password in an owner-only file).
fn make_account(home: &Path, dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let file = dir.join("bench.pw");
    std::fs::write(&file, format!("{PASSWORD}\n")).map_err(|e| e.to_string())?;
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| e.to_string())?;
    let o = cli(home)
        .args(["user", "add", ACCOUNT, "--role", "admin", "--password-file"])
        .arg(&file)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| e.to_string())?;
    if !o.status.success() {
        return Err(format!(
            "user add: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        ));
    }
    Ok(())
}

/// Writes controller.toml with `[web] address`.
fn web_address(home: &Path, address: &str) -> Result<(), String> {
    std::fs::write(
        home.join("controller.toml"),
        format!("[web]\naddress = \"{address}\"\n"),
    )
    .map_err(|e| e.to_string())
}

/// Starts `serve` on `home` and waits until every one of `n` agents is connected,
/// the `ticking` of them have sent two ticks, and every node has a health word: the
/// Overview then shows what it shows in steady state. Returns serve and how long that
/// took.
async fn serve_ready(home: &Path, n: usize, ticking: usize) -> Result<(Serve, Duration), String> {
    let t = Instant::now();
    let serve = start_serve(cli(home), home).await;
    let deadline = Instant::now() + READY_PATIENCE;
    loop {
        let mut c = tokio::process::Command::from(cli(home));
        let o = c
            .args(["--json", "top"])
            .stdin(Stdio::null())
            .output()
            .await
            .map_err(|e| e.to_string())?;
        let doc = serde_json::from_slice::<serde_json::Value>(&o.stdout)
            .ok()
            .filter(|_| o.status.success());
        let last = match doc {
            Some(doc) => {
                let rows = doc["nodes"].as_array().cloned().unwrap_or_default();
                let count =
                    |f: &dyn Fn(&serde_json::Value) -> bool| rows.iter().filter(|r| f(r)).count();
                let connected = count(&|r| r["state"] == "connected");
                let ticks = count(&|r| r["cpu_pct"].is_number());
                let checked = count(&|r| r["health"].is_string());
                if connected == n && ticks >= ticking && checked == n {
                    return Ok((serve, t.elapsed()));
                }
                format!("{connected} connected, {ticks} ticking, {checked} checked")
            }
            None => String::from_utf8_lossy(&o.stderr).trim().to_string(),
        };
        if Instant::now() > deadline {
            return Err(format!(
                "serve was not ready within {READY_PATIENCE:?} ({n} agents): {last}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Stops serve as its service manager would.
fn stop_serve(serve: Serve) {
    tokio::task::block_in_place(|| serve.stop());
}

/// Logs in as the bench's account; the `cm_session=...` cookie to send back.
fn login(addr: SocketAddr) -> Result<String, String> {
    let body = serde_json::json!({"name": ACCOUNT, "password": PASSWORD}).to_string();
    let a = try_request(
        addr,
        "POST",
        "/api/v1/login",
        &[("Content-Type", "application/json")],
        body.as_bytes(),
    )?;
    if a.status != 200 {
        return Err(format!("login answered {}: {}", a.status, a.text()));
    }
    a.header("set-cookie")
        .and_then(|c| c.split(';').next())
        .map(str::to_string)
        .ok_or_else(|| "the login set no cookie".to_string())
}

/// `GET path` with the session; the answer and the milliseconds from connect to its
/// last byte. Anything but 200 is an error.
fn get(addr: SocketAddr, cookie: &str, path: &str) -> Result<(Answer, f64), String> {
    let t = Instant::now();
    let a = try_request(addr, "GET", path, &[("Cookie", cookie)], b"")?;
    let el = ms(t.elapsed());
    if a.status != 200 {
        return Err(format!(
            "GET {path} answered {}: {}",
            a.status,
            a.text().chars().take(300).collect::<String>()
        ));
    }
    Ok((a, el))
}

/// An open server-sent event stream, read by a thread that hands over each line with
/// the moment its last byte was read. Closed when dropped.
struct EventStream {
    sock: TcpStream,
    lines: mpsc::Receiver<(Instant, String)>,
}

impl EventStream {
    /// Opens `path` with the session and waits for a 200 answer's head.
    fn open(addr: SocketAddr, cookie: &str, path: &str) -> Result<EventStream, String> {
        let what = |e: std::io::Error| format!("GET {path}: {e}");
        let mut sock = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(what)?;
        let head = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nCookie: {cookie}\r\nAccept: text/event-stream\r\n\r\n"
        );
        sock.write_all(head.as_bytes()).map_err(what)?;
        let mut reader = sock.try_clone().map_err(what)?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = [0u8; 65536];
            let mut pending: Vec<u8> = Vec::new();
            loop {
                let n = match reader.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                let at = Instant::now();
                pending.extend_from_slice(&buf[..n]);
                while let Some(end) = pending.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = pending.drain(..=end).collect();
                    let line = String::from_utf8_lossy(&line).trim_end().to_string();
                    if tx.send((at, line)).is_err() {
                        return;
                    }
                }
            }
        });
        let s = EventStream { sock, lines };
        let (_, status) = s.next_line(Duration::from_secs(10))?;
        if !status.starts_with("HTTP/1.1 200") {
            return Err(format!("GET {path} answered {status}"));
        }
        Ok(s)
    }

    /// The next line, within `patience`.
    fn next_line(&self, patience: Duration) -> Result<(Instant, String), String> {
        self.lines
            .recv_timeout(patience)
            .map_err(|_| format!("nothing on the event stream within {patience:?}"))
    }

    /// Reads until an event named `name`; when its data line arrived, and the data.
    fn event(&self, name: &str, patience: Duration) -> Result<(Instant, String), String> {
        let deadline = Instant::now() + patience;
        let want = format!("event: {name}");
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let (_, line) = self
                .next_line(left)
                .map_err(|_| format!("no `{name}` event within {patience:?}"))?;
            if line == want {
                let left = deadline.saturating_duration_since(Instant::now());
                let (at, data) = self.next_line(left)?;
                return Ok((at, data.strip_prefix("data: ").unwrap_or(&data).to_string()));
            }
        }
    }

    /// Reads until an event of each of `names` has come, in any order (the stream
    /// sends its first `top` and `status` in whichever order they are ready); when the
    /// last one's data arrived.
    fn events(&self, names: &[&str], patience: Duration) -> Result<Instant, String> {
        let deadline = Instant::now() + patience;
        let mut missing: Vec<String> = names.iter().map(|n| format!("event: {n}")).collect();
        let mut last = Instant::now();
        while !missing.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            let (_, line) = self
                .next_line(left)
                .map_err(|_| format!("no {} within {patience:?}", missing.join(", ")))?;
            if let Some(i) = missing.iter().position(|m| *m == line) {
                missing.remove(i);
                let left = deadline.saturating_duration_since(Instant::now());
                last = self.next_line(left)?.0;
            }
        }
        Ok(last)
    }

    /// Every line read so far.
    fn drain(&self) -> Vec<(Instant, String)> {
        self.lines.try_iter().collect()
    }
}

impl Drop for EventStream {
    fn drop(&mut self) {
        let _ = self.sock.shutdown(std::net::Shutdown::Both);
    }
}

/// `serve`'s resident memory once a second for [`RSS_SAMPLES`] s, and its CPU over
/// that time in percent of one core.
async fn sample_rss(pid: u32) -> Result<(Vec<f64>, f64), String> {
    let cpu0 = cpu_ms(pid).ok_or("serve is gone")?.0;
    let t = Instant::now();
    let mut rss = Vec::with_capacity(RSS_SAMPLES);
    let mut every = tokio::time::interval(Duration::from_secs(1));
    every.tick().await;
    for _ in 0..RSS_SAMPLES {
        every.tick().await;
        let r = rss_mib(pid);
        if r == 0.0 {
            return Err("serve exited while it was measured".into());
        }
        rss.push(r);
    }
    let cpu = cpu_ms(pid).ok_or("serve is gone")?.0 - cpu0;
    Ok((rss, cpu / ms(t.elapsed()) * 100.0))
}

/// The Overview's requests, `WARM + rounds` times one after another: `/` with the
/// session, `/api/v1/top`, `/api/v1/status`. Milliseconds of each and of their sum.
type Timings = [Vec<f64>; 4];

fn overview_rounds(addr: SocketAddr, cookie: &str, rounds: usize) -> Result<Timings, String> {
    let mut out: Timings = Default::default();
    for round in 0..WARM + rounds {
        let (_, index) = get(addr, cookie, "/")?;
        let (_, top) = get(addr, cookie, "/api/v1/top")?;
        let (_, status) = get(addr, cookie, "/api/v1/status")?;
        if round >= WARM {
            for (v, x) in out
                .iter_mut()
                .zip([index, top, status, index + top + status])
            {
                v.push(x);
            }
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------
// The stages on many agents

const TARGET_ROWS: &[(&str, &str, &str, f64)] = &[
    ("ov_sum", "the Overview's requests together", "ms", 20.0),
    ("weight", "the Overview's whole weight", "KiB", 300.0),
    ("chart_30d", "a node's 30-day chart", "ms", 50.0),
    ("rss_delta", "serve's memory for the console", "MiB", 15.0),
];

async fn fleet_stages(res: &mut Results, n: usize) -> Result<(), String> {
    eprintln!("[1] enrolling, signing and starting {n} agents in one child process");
    let setup = Instant::now();
    let base = tempfile::Builder::new()
        .prefix("cm-bench-console")
        .tempdir()
        .map_err(|e| e.to_string())?;
    let (home, fleet) = fleet_in(base.path(), n).await?;
    res.note(format!(
        "{n} agents enrolled, signed and listening in one child process after {:.1} s; telemetry every 10 s on all but {}, whose 30-day history is written into the store instead",
        setup.elapsed().as_secs_f64(),
        fleet.names[0]
    ));
    eprintln!(
        "[1] writing {HISTORY_DAYS} days of history for {}",
        fleet.names[0]
    );
    let chart_node = fleet.names[0].clone();
    let live_node = fleet.names.get(1).cloned().unwrap_or(chart_node.clone());
    let note = tokio::task::block_in_place(|| fill_history(&home, &chart_node))?;
    res.note(note);
    tokio::task::block_in_place(|| make_account(&home, base.path()))?;
    let r = serve_stages(res, &home, n, &chart_node, &live_node).await;
    fleet.stop().await;
    r
}

async fn serve_stages(
    res: &mut Results,
    home: &Path,
    n: usize,
    chart_node: &str,
    live_node: &str,
) -> Result<(), String> {
    let ticking = n.saturating_sub(1);
    let judged = n == DEFAULT_NODES;
    let target = |t: f64| judged.then_some(t);

    // ---- serve without the console.
    eprintln!("[2] serve with [web] address = \"off\": waiting for {n} agents");
    web_address(home, "off")?;
    let (serve, took) = serve_ready(home, n, ticking).await?;
    let pid = serve.0.id();
    eprintln!(
        "[2] ready after {:.1} s; sampling its memory",
        took.as_secs_f64()
    );
    let (rss_off, cpu_off) = sample_rss(pid).await?;
    let hwm_off = proc_status_kib(pid, "VmHWM").unwrap_or(0);
    stop_serve(serve);
    res.note(format!(
        "serve without the console: every agent connected, ticking and checked {:.1} s after it started; peak VmHWM {:.1} MiB",
        took.as_secs_f64(),
        hwm_off as f64 / 1024.0
    ));

    // ---- serve with the console and ten open Overview pages.
    eprintln!("[3] serve with the console: waiting for {n} agents");
    web_address(home, "127.0.0.1:0")?;
    let (serve, took) = serve_ready(home, n, ticking).await?;
    let pid = serve.0.id();
    let addr = tokio::task::block_in_place(|| console_address(home, Duration::from_secs(30)));
    eprintln!(
        "[3] ready after {:.1} s; {SESSIONS} sessions open the event stream",
        took.as_secs_f64()
    );
    // Where the memory goes: serve ready, then after the logins, then with the pages
    // live.
    let ready_rss = rss_mib(pid);
    let (streams, logged_in_rss, live_rss) = tokio::task::block_in_place(|| {
        let cookies = (0..SESSIONS)
            .map(|_| login(addr))
            .collect::<Result<Vec<_>, String>>()?;
        let logged_in_rss = rss_mib(pid);
        let mut streams = Vec::with_capacity(SESSIONS);
        for cookie in cookies {
            let s = EventStream::open(addr, &cookie, "/api/v1/stream")?;
            streams.push((cookie, s));
        }
        // Each page has its first status (a ping of every node) before memory counts.
        for (_, s) in &streams {
            s.event("status", Duration::from_secs(30))?;
        }
        Ok::<_, String>((streams, logged_in_rss, rss_mib(pid)))
    })?;
    res.note(format!(
        "serve with the console, VmRSS along the way: {ready_rss:.1} MiB once ready (no session), {logged_in_rss:.1} MiB after {SESSIONS} logins, {live_rss:.1} MiB once every page had its first `status` event"
    ));
    let (rss_on, cpu_on) = sample_rss(pid).await?;
    let hwm_on = proc_status_kib(pid, "VmHWM").unwrap_or(0);
    eprintln!("[3] the Overview's requests with {SESSIONS} pages open: {ROUNDS} rounds");
    let busy = tokio::task::block_in_place(|| overview_rounds(addr, &streams[0].0, ROUNDS));
    // The live refresh: the time between consecutive `top` events on each page, and
    // what a page receives a minute.
    let (mut intervals, mut top_bytes, mut status_bytes) = (Vec::new(), Vec::new(), Vec::new());
    for (_, s) in &streams {
        let lines = s.drain();
        let mut last_top: Option<Instant> = None;
        for w in lines.windows(2) {
            let ((_, name), (at, data)) = (&w[0], &w[1]);
            match name.as_str() {
                "event: top" => {
                    if let Some(prev) = last_top {
                        intervals.push(at.duration_since(prev).as_secs_f64());
                    }
                    last_top = Some(*at);
                    top_bytes.push(data.len() as f64);
                }
                "event: status" => status_bytes.push(data.len() as f64),
                _ => {}
            }
        }
    }
    drop(streams);
    stop_serve(serve);

    res.add(
        "rss_off",
        format!("serve VmRSS without the console (`[web] address = \"off\"`), {n} agents connected, sampled each second"),
        "MiB",
        Ok(rss_off.clone()),
        None,
    );
    res.add(
        "rss_on",
        format!("serve VmRSS with the console and {SESSIONS} logged-in sessions each holding `/api/v1/stream` open, same {n} agents"),
        "MiB",
        Ok(rss_on.clone()),
        None,
    );
    let delta = stats(&rss_on).0 - stats(&rss_off).0;
    res.add(
        "rss_delta",
        "serve's memory for the console: p50 of `rss_on` minus p50 of `rss_off`",
        "MiB",
        Ok(vec![delta]),
        target(15.0),
    );
    res.add(
        "cpu_off",
        "context: serve CPU without the console, % of one core over the same 20 s",
        "%",
        Ok(vec![cpu_off]),
        None,
    );
    res.add(
        "cpu_on",
        format!("context: serve CPU with {SESSIONS} open pages, % of one core over the same 20 s"),
        "%",
        Ok(vec![cpu_on]),
        None,
    );
    res.note(format!(
        "serve with the console: ready {:.1} s after it started; peak VmHWM {:.1} MiB (without: {:.1} MiB)",
        took.as_secs_f64(),
        hwm_on as f64 / 1024.0,
        hwm_off as f64 / 1024.0
    ));
    match busy {
        Ok(t) => res.add(
            "ov_sum_busy",
            format!(
                "context: the Overview's three requests together, with {SESSIONS} pages streaming"
            ),
            "ms",
            Ok(t[3].clone()),
            None,
        ),
        Err(e) => res.add(
            "ov_sum_busy",
            "the Overview's requests with ten pages",
            "ms",
            Err(e),
            None,
        ),
    }
    res.add(
        "live_interval",
        format!("the Overview's refresh: time between consecutive `top` events on each of {SESSIONS} open pages"),
        "s",
        Ok(intervals),
        None,
    );
    res.add(
        "peer_interval",
        "peer: the existing Gluu Cluster Manager's dashboard poll (documented, not measured: it needs Gluu)",
        "s",
        Ok(vec![PEER_REFRESH_SECS]),
        None,
    );
    if !top_bytes.is_empty() {
        let top = stats(&top_bytes).0;
        let status = stats(&status_bytes).0;
        res.note(format!(
            "an open Overview receives a `top` event of {:.1} KiB every 2 s and a `status` event of {:.1} KiB every 10 s: {:.0} KiB a minute",
            top / 1024.0,
            status / 1024.0,
            (30.0 * top + 6.0 * status) / 1024.0
        ));
    }

    // ---- a fresh serve with the console and one session: the page's own figures.
    eprintln!("[4] serve with the console, one session: waiting for {n} agents");
    let (serve, _) = serve_ready(home, n, ticking).await?;
    let r = tokio::task::block_in_place(|| {
        let addr = console_address(home, Duration::from_secs(30));
        let cookie = login(addr)?;
        one_page(res, addr, &cookie, n, chart_node, live_node)
    });
    stop_serve(serve);
    // The chart's query walks every series key in the store to find its one: how many
    // there were.
    let series = TelemetryStore::open(&home.join("telemetry.redb"))
        .and_then(|s| s.series_in(Tier::Raw, &[], None, 0))
        .map_err(|e| e.to_string())?;
    res.note(format!(
        "the chart was read from a store of {} series ({} of them from the {} agents sending telemetry)",
        series.len(),
        series.iter().filter(|s| s.node != chart_node).count(),
        ticking
    ));
    r
}

/// The Overview's requests, its weight, the 30-day chart and the event stream's first
/// events, on a console with one session.
fn one_page(
    res: &mut Results,
    addr: SocketAddr,
    cookie: &str,
    n: usize,
    chart_node: &str,
    live_node: &str,
) -> Result<(), String> {
    let target = |t: f64| (n == DEFAULT_NODES).then_some(t);
    eprintln!("[4] the Overview's requests: {ROUNDS} rounds");
    let [index, top, status, sum] = overview_rounds(addr, cookie, ROUNDS)?;
    res.add(
        "ov_index",
        "GET / with the session (the page shell)",
        "ms",
        Ok(index),
        None,
    );
    res.add(
        "ov_top",
        format!("GET /api/v1/top ({n} nodes' latest ticks and health)"),
        "ms",
        Ok(top),
        None,
    );
    res.add(
        "ov_status",
        format!("GET /api/v1/status (a ping of each of {n} nodes over warm connections)"),
        "ms",
        Ok(status),
        None,
    );
    res.add(
        "ov_sum",
        "the Overview's server time: the three one after another, connect to last byte",
        "ms",
        Ok(sum),
        target(20.0),
    );

    eprintln!("[4] the event stream's first events: {STREAM_OPENS} opens");
    let mut first = Vec::with_capacity(STREAM_OPENS);
    for _ in 0..STREAM_OPENS {
        let t = Instant::now();
        let s = EventStream::open(addr, cookie, "/api/v1/stream")?;
        let at = s.events(&["top", "status"], Duration::from_secs(15))?;
        first.push(ms(at.duration_since(t)));
    }
    res.add(
        "ov_stream_first",
        "context: what the page itself waits for: `/api/v1/stream` opened until its first `top` and `status` events",
        "ms",
        Ok(first),
        None,
    );

    eprintln!("[4] the Overview's weight");
    let mut parts = Vec::new();
    let mut total = 0usize;
    for path in [
        "/",
        "/assets/app.js",
        "/assets/app.css",
        "/api/v1/session",
        "/api/v1/top",
        "/api/v1/status",
    ] {
        let (a, _) = get(addr, cookie, path)?;
        total += a.body.len();
        parts.push(format!("{path} {} B", a.body.len()));
    }
    res.add(
        "weight",
        format!(
            "the Overview's whole weight, uncompressed bodies with {n} nodes: {}",
            parts.join(", ")
        ),
        "KiB",
        Ok(vec![total as f64 / 1024.0]),
        target(300.0),
    );

    eprintln!("[4] the 30-day chart: {ROUNDS} rounds");
    let chart = format!(
        "/api/v1/metrics?nodes={chart_node}&metric=node_load1&since={HISTORY_DAYS}d&step={CHART_STEP_SECS}"
    );
    let (times, points) = timed(addr, cookie, &chart)?;
    res.add(
        "chart_30d",
        format!("a node's {HISTORY_DAYS}-day chart: GET {chart} ({points} points, from the 1-minute tier)"),
        "ms",
        Ok(times),
        target(50.0),
    );
    let recent = format!("/api/v1/metrics?nodes={live_node}&metric=node_load1&since=1h&step=60");
    let (times, points) = timed(addr, cookie, &recent)?;
    res.add(
        "chart_1h",
        format!("context: a live node's 1-hour chart: GET {recent} ({points} points, raw tier)"),
        "ms",
        Ok(times),
        None,
    );
    Ok(())
}

/// `WARM + ROUNDS` GETs of a metrics path; the timed ones' milliseconds and the points
/// the answer holds.
fn timed(addr: SocketAddr, cookie: &str, path: &str) -> Result<(Vec<f64>, usize), String> {
    let mut times = Vec::with_capacity(ROUNDS);
    let mut points = 0;
    for round in 0..WARM + ROUNDS {
        let (a, el) = get(addr, cookie, path)?;
        if round >= WARM {
            times.push(el);
        }
        let doc: serde_json::Value =
            serde_json::from_slice(&a.body).map_err(|e| format!("{path}: {e}"))?;
        points = doc["series"].as_array().map_or(0, |s| {
            s.iter()
                .map(|s| s["points"].as_array().map_or(0, Vec::len))
                .sum()
        });
    }
    if points == 0 {
        return Err(format!("{path} answered with no points"));
    }
    Ok((times, points))
}

// ---------------------------------------------------------------------------------
// A log line from the agent's file to the browser

const LOG_LABEL: &str = "a line appended to a followed file on a real agent process, until it arrives on `/api/v1/logs/stream` (one every 100 ms)";

async fn log_latency(res: &mut Results) {
    eprintln!("[5] log line to the browser: one real agent following a file");
    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => {
            res.add_at(
                "log_to_browser",
                LOG_LABEL,
                "ms",
                Err(e.to_string()),
                Some(250.0),
                0.99,
            );
            return;
        }
    };
    let log = dir.path().join("app.log");
    if let Err(e) = std::fs::write(&log, "") {
        res.add_at(
            "log_to_browser",
            LOG_LABEL,
            "ms",
            Err(e.to_string()),
            Some(250.0),
            0.99,
        );
        return;
    }
    let c = Cluster::start(vec![node(
        "gluu1",
        &clustermgr_tests::following_app_log(&log),
    )])
    .await;
    let r = match web_address(&c.dir(), "127.0.0.1:0")
        .and_then(|()| tokio::task::block_in_place(|| make_account(&c.dir(), dir.path())))
    {
        Ok(()) => {
            let serve = c.serve().await;
            let r = tokio::task::block_in_place(|| {
                let addr = console_address(&c.dir(), Duration::from_secs(30));
                let cookie = login(addr)?;
                follow_lines(addr, &cookie, &log)
            });
            stop_serve(serve);
            r
        }
        Err(e) => Err(e),
    };
    match r {
        Ok((lat, lost)) => {
            if lost > 0 {
                res.note(format!(
                    "{lost} of {LOG_LINES} timed log lines never reached the browser"
                ));
            }
            res.add_at(
                "log_to_browser",
                LOG_LABEL,
                "ms",
                Ok(lat),
                Some(250.0),
                0.99,
            );
        }
        Err(e) => res.add_at("log_to_browser", LOG_LABEL, "ms", Err(e), Some(250.0), 0.99),
    }
    drop(c);
}

/// Appends [`LOG_LINES`] numbered lines to `log` and times each until the stream
/// brings it; the latencies and how many never came.
fn follow_lines(addr: SocketAddr, cookie: &str, log: &Path) -> Result<(Vec<f64>, usize), String> {
    let s = EventStream::open(addr, cookie, "/api/v1/logs/stream?nodes=gluu1")?;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(log)
        .map_err(|e| e.to_string())?;
    // The agent follows the file and the stream is live once this line comes through
    // (as one of the newest lines the stream starts with, or live).
    writeln!(f, "console-bench READY").map_err(|e| e.to_string())?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let (_, line) = s
            .next_line(left)
            .map_err(|_| "the first line did not reach the browser within 30 s".to_string())?;
        if line.contains("console-bench READY") {
            break;
        }
    }
    let start = Instant::now();
    let mut written = Vec::with_capacity(LOG_LINES);
    for i in 0..LOG_LINES {
        let due = start + LOG_EVERY * i as u32;
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
        // One write per line, so the agent never sees half of one.
        let line = format!("console-bench LAT {i} end\n");
        written.push(Instant::now());
        f.write_all(line.as_bytes()).map_err(|e| e.to_string())?;
    }
    let mut arrived: Vec<Option<Instant>> = vec![None; LOG_LINES];
    let deadline = Instant::now() + Duration::from_secs(10);
    while arrived.iter().any(Option::is_none) {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok((at, line)) = s.next_line(left) else {
            break;
        };
        let i = line
            .split("console-bench LAT ")
            .nth(1)
            .and_then(|r| r.split(' ').next())
            .and_then(|v| v.parse::<usize>().ok());
        if let Some(i) = i.filter(|i| *i < LOG_LINES) {
            arrived[i].get_or_insert(at);
        }
    }
    let lat: Vec<f64> = written
        .iter()
        .zip(&arrived)
        .filter_map(|(w, a)| a.map(|a| ms(a.duration_since(*w))))
        .collect();
    let lost = LOG_LINES - lat.len();
    Ok((lat, lost))
}

// ---------------------------------------------------------------------------------

fn main() {
    clustermgr_tests::fleet::serve_agents_if_host();
    let (mut res, started) = clustermgr_tests::bench::begin();
    let nodes = env_count(NODES_ENV, DEFAULT_NODES);
    // Each agent holds a UDP socket, a spool and an inotify descriptor.
    raise_nofile((nodes as u64) * 8 + 4096);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        if let Err(e) = fleet_stages(&mut res, nodes).await {
            res.note(format!("the stages on {nodes} agents stopped: {e}"));
            for (id, label, unit, t) in TARGET_ROWS {
                if !res.rows.iter().any(|r| r.id == *id) {
                    res.add(id, *label, unit, Err(e.clone()), Some(*t));
                }
            }
        }
        log_latency(&mut res).await;
    });
    rt.shutdown_timeout(Duration::from_secs(1));
    print_report(&mut res, nodes, started.elapsed());
}
