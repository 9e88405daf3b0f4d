//! `cargo bench -p clustermgr-tests --bench telemetry`: log throughput from one agent's
//! file into the controller's store, latency from a write to `clustermgr logs -f`,
//! the agent's cost while tailing and sampling, and bytes per stored sample. Real
//! agent and `serve` processes on loopback; results for BENCHMARKS.md.

use std::io::Write;
use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use clustermgr::telemetry::store::{TelemetryStore, Tier};
use clustermgr_tests::bench::{env_count, rss_mib};
use clustermgr_tests::{Cluster, node};

/// MiB written per throughput run.
const THROUGHPUT_MIB_ENV: &str = "TELEMETRY_BENCH_MIB";
/// Throughput runs.
const RUNS: usize = 3;
/// Lines timed for latency.
const LATENCY_LINES: usize = 300;
/// Seconds the agent's cost is measured over.
const COST_SECS: u64 = 20;
/// Agents for the ingest stage.
const INGEST_AGENTS_ENV: &str = "TELEMETRY_BENCH_AGENTS";
/// Seconds serve's ingest is measured over (more gives the steady-state bytes per
/// sample: a raw chunk fills at 720 samples, 12 minutes at one a second).
const INGEST_SECS_ENV: &str = "TELEMETRY_BENCH_INGEST_SECS";
/// Which stages run: a comma-separated list of `throughput` (with latency), `cost`
/// (the agent's CPU and memory, and bytes per sample) and `ingest`; all by default.
const STAGES_ENV: &str = "TELEMETRY_BENCH_STAGES";

fn stage(name: &str) -> bool {
    std::env::var(STAGES_ENV).map_or(true, |v| v.split(',').any(|s| s.trim() == name))
}

fn appender(path: &Path) -> std::io::BufWriter<std::fs::File> {
    std::io::BufWriter::with_capacity(
        1 << 20,
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .expect("open log"),
    )
}

/// A cluster of one agent following `files` log files in `dir`, sampling every
/// `interval` seconds.
async fn agent(dir: &Path, files: usize, interval: u64) -> Cluster {
    let logs: Vec<String> = (0..files)
        .map(|i| format!("\"app{i}={}\"", dir.join(format!("app{i}.log")).display()))
        .collect();
    let extra = format!(
        "[telemetry]\nmetrics_interval_secs = {interval}\ndefault_logs = false\nlogs = [{}]\n",
        logs.join(", ")
    );
    Cluster::start(vec![node("gluu1", &extra)]).await
}

/// CPU seconds a process has used (user + system).
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let f: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, r)| r)
        .split_whitespace()
        .collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let i = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[i.clamp(1, v.len()) - 1]
}

fn main() {
    let (mut res, started) = clustermgr_tests::bench::begin();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mib = env_count(THROUGHPUT_MIB_ENV, 128);
    rt.block_on(async {
      if stage("throughput") {
        // ---- 1 and 2. Throughput and latency, one agent and serve.
        let dir = tempfile::tempdir().expect("tempdir");
        let c = agent(dir.path(), 1, 10).await;
        let serve = c.serve().await;
        let log = dir.path().join("app0.log");
        let (mut tail, rx) = clustermgr_tests::follow_logs(&c, &["--grep", "^(READY|END|LAT) "]);
        let mut w = appender(&log);
        writeln!(w, "READY 0").unwrap();
        w.flush().unwrap();
        if let Err(e) = clustermgr_tests::wait_for_line(&rx, "READY", Duration::from_secs(30)) {
            res.note(format!("the stream did not start: {e}"));
        }
        // 200-byte lines, like a busy access log.
        let filler = "x".repeat(180);
        let lines_per_run = mib * 1048576 / 200;
        let (mut rate, mut lines_rate) = (Vec::new(), Vec::new());
        for run in 0..RUNS {
            let t0 = Instant::now();
            for i in 0..lines_per_run {
                writeln!(w, "{run:02} {i:012} {filler}").unwrap();
            }
            writeln!(w, "END {run}").unwrap();
            w.flush().unwrap();
            let written = t0.elapsed();
            match clustermgr_tests::wait_for_line(&rx, &format!("END {run}"), Duration::from_secs(600)) {
                Ok(at) => {
                    let secs = at.duration_since(t0).as_secs_f64();
                    rate.push(mib as f64 / secs);
                    lines_rate.push(lines_per_run as f64 / secs);
                    eprintln!(
                        "  run {run}: {mib} MiB written in {:.2} s, in the store and printed after {secs:.2} s",
                        written.as_secs_f64()
                    );
                }
                Err(e) => res.note(format!("throughput run {run}: {e}")),
            }
        }
        res.add(
            "log_mib_per_s",
            format!("log throughput: {mib} MiB of 200-byte lines from one agent's file into the store (agent tail, spool, QUIC, serve's ingest), MiB/s, higher is better"),
            "MiB/s",
            Ok(rate),
            None,
        );
        res.add(
            "log_lines_per_s",
            "the same, in lines per second",
            "lines/s",
            Ok(lines_rate),
            None,
        );
        // Latency: a line every 10 ms carrying the moment it was written.
        let base = Instant::now();
        let (ltx, lrx) = mpsc::channel::<f64>();
        let reader = std::thread::spawn(move || {
            let mut n = 0;
            while n < LATENCY_LINES {
                let Ok((at, l)) = rx.recv_timeout(Duration::from_secs(30)) else {
                    break;
                };
                if let Some(us) = l.split(" LAT ").nth(1).and_then(|v| v.trim().parse::<u64>().ok()) {
                    let written = base + Duration::from_micros(us);
                    let _ = ltx.send(at.duration_since(written).as_secs_f64() * 1000.0);
                    n += 1;
                }
            }
        });
        for _ in 0..LATENCY_LINES {
            writeln!(w, "LAT {}", base.elapsed().as_micros()).unwrap();
            w.flush().unwrap();
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = reader.join();
        let mut lat: Vec<f64> = lrx.try_iter().collect();
        if !lat.is_empty() {
            let p99 = percentile(&mut lat.clone(), 99.0);
            res.note(format!(
                "write to `logs -f` latency: p99 {p99:.1} ms over {} lines (target p99 < 100 ms: {})",
                lat.len(),
                if p99 < 100.0 { "met" } else { "MISSED" }
            ));
            lat.sort_by(|a, b| a.total_cmp(b));
        }
        res.add(
            "log_latency",
            "a line appended to a followed file, until `clustermgr logs -f` (through serve) prints it; one every 10 ms",
            "ms",
            Ok(lat),
            Some(100.0),
        );
        let _ = tail.kill();
        let _ = tail.wait();
        serve.stop();
        drop(c);
      }

      if stage("cost") {
        // ---- 3 and 4. The agent's cost: 5 files at 1,000 lines/s each, metrics every
        // second, then idle; and what a stored sample costs.
        let dir = tempfile::tempdir().expect("tempdir");
        let c = agent(dir.path(), 5, 1).await;
        let serve = c.serve().await;
        let pid = c.agent("gluu1").child.id().unwrap_or(0);
        std::thread::sleep(Duration::from_secs(3));
        let idle_cpu0 = cpu_secs(pid);
        std::thread::sleep(Duration::from_secs(10));
        let idle_pct = (cpu_secs(pid) - idle_cpu0) / 10.0 * 100.0;
        let idle_rss = rss_mib(pid);
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writers: Vec<_> = (0..5)
            .map(|i| {
                let path = dir.path().join(format!("app{i}.log"));
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut w = appender(&path);
                    let start = Instant::now();
                    let mut n = 0u64;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        // 10 lines every 10 ms: 1,000 a second.
                        for _ in 0..10 {
                            writeln!(w, "2026-11-25 10:00:00,000 INFO [qtp-{n}] org.gluu.oxauth.Thing - request {n} handled in 3 ms").unwrap();
                            n += 1;
                        }
                        w.flush().unwrap();
                        let due = start + Duration::from_millis(n / 10 * 10);
                        std::thread::sleep(due.saturating_duration_since(Instant::now()));
                    }
                    n
                })
            })
            .collect();
        std::thread::sleep(Duration::from_secs(3));
        let cpu0 = cpu_secs(pid);
        let t0 = Instant::now();
        let mut rss = Vec::new();
        while t0.elapsed() < Duration::from_secs(COST_SECS) {
            std::thread::sleep(Duration::from_secs(1));
            rss.push(rss_mib(pid));
        }
        let busy_pct = (cpu_secs(pid) - cpu0) / t0.elapsed().as_secs_f64() * 100.0;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let written: u64 = writers.into_iter().map(|h| h.join().unwrap_or(0)).sum();
        res.add(
            "agent_cpu_busy",
            format!("agent CPU, % of one core, tailing 5 files at 1,000 lines/s each and sampling every second ({COST_SECS} s)"),
            "%",
            Ok(vec![busy_pct]),
            Some(2.0),
        );
        res.add("agent_rss_busy", "agent resident memory while doing that, sampled each second", "MiB", Ok(rss), Some(20.0));
        res.add("agent_cpu_idle", "agent CPU, % of one core, idle (5 quiet files, sampling every second)", "%", Ok(vec![idle_pct]), None);
        res.add("agent_rss_idle", "agent resident memory, idle", "MiB", Ok(vec![idle_rss]), Some(8.0));
        res.note(format!("the writers appended {written} lines in all"));
        // Let serve store the last of it, then read the store's own figures.
        std::thread::sleep(Duration::from_secs(3));
        serve.stop();
        match TelemetryStore::open(&c.dir().join("telemetry.redb")).and_then(|s| s.tier_stats(Tier::Raw)) {
            Ok((bytes, samples)) if samples > 0 => {
                res.add(
                    "bytes_per_sample",
                    format!("raw tier: bytes per stored sample (one agent, every second, {samples} samples in all; open chunks hold few samples each, so a longer run costs less)"),
                    "B",
                    Ok(vec![bytes as f64 / samples as f64]),
                    Some(1.0),
                );
            }
            Ok(_) => res.note("no samples were stored"),
            Err(e) => res.note(format!("cannot read the telemetry store: {e}")),
        }
        drop(c);
      }

      if stage("ingest") {
        // ---- 5. serve ingesting from many agents, each sampling every second.
        let n = env_count(INGEST_AGENTS_ENV, 100);
        eprintln!("[5] ingest: starting {n} agents sampling every second");
        let extra = "[telemetry]\nmetrics_interval_secs = 1\ndefault_logs = false\n";
        let c = Cluster::start((1..=n).map(|i| node(&format!("gluu{i}"), extra)).collect()).await;
        let collecting = Instant::now();
        let serve = c.serve().await;
        let serve_pid = serve.0.id();
        // Past the backlog the agents spooled before serve started.
        std::thread::sleep(Duration::from_secs(10));
        let cpu0 = cpu_secs(serve_pid);
        let t0 = Instant::now();
        let ingest_secs = env_count(INGEST_SECS_ENV, 30) as u64;
        std::thread::sleep(Duration::from_secs(ingest_secs));
        let secs = t0.elapsed().as_secs_f64();
        let serve_pct = (cpu_secs(serve_pid) - cpu0) / secs * 100.0;
        let serve_rss = rss_mib(serve_pid);
        serve.stop();
        let lifetime = collecting.elapsed().as_secs_f64();
        match TelemetryStore::open(&c.dir().join("telemetry.redb")).and_then(|s| s.tier_stats(Tier::Raw)) {
            Ok((bytes, samples)) if samples > 0 => {
                res.note(format!(
                    "ingest: {samples} samples from {n} agents stored over {lifetime:.0} s of collecting, {:.0} samples/s; serve's resident memory {serve_rss:.1} MiB",
                    samples as f64 / lifetime
                ));
                res.add(
                    "ingest_serve_cpu",
                    format!("serve CPU, % of one core, ingesting {n} agents' ticks every second ({ingest_secs} s)"),
                    "%",
                    Ok(vec![serve_pct]),
                    None,
                );
                res.add(
                    "ingest_bytes_per_sample",
                    format!("raw tier: bytes per stored sample after that run ({n} agents)"),
                    "B",
                    Ok(vec![bytes as f64 / samples as f64]),
                    Some(1.0),
                );
            }
            Ok(_) => res.note("ingest: no samples were stored"),
            Err(e) => res.note(format!("ingest: cannot read the telemetry store: {e}")),
        }
        if let Ok(by) = TelemetryStore::open(&c.dir().join("telemetry.redb"))
            .and_then(|s| s.tier_stats_by_metric(Tier::Raw))
        {
            let mut by: Vec<_> = by.into_iter().collect();
            by.sort_by_key(|(_, (bytes, _, _))| std::cmp::Reverse(*bytes));
            let parts: Vec<String> = by
                .iter()
                .take(12)
                .map(|(name, (bytes, samples, chunks))| {
                    format!(
                        "{name} {:.2} B/sample over {chunks} chunks",
                        *bytes as f64 / (*samples).max(1) as f64
                    )
                })
                .collect();
            res.note(format!("ingest: the metrics taking the most bytes: {}", parts.join("; ")));
        }
      }
    });
    let elapsed = started.elapsed();
    let mut w = res.report_head("Telemetry on loopback", "one agent process and serve", &[]);
    w.push_str(
        "\nPeer: Vector's published file-to-TCP throughput is 76.7 MiB/s (not measured here).\n",
    );
    if let Some((p50, _)) = res.stats("log_mib_per_s") {
        w.push_str(&format!(
            "log_mib_per_s / Vector's 76.7 MiB/s = {:.2}\n",
            p50 / 76.7
        ));
    }
    w.push_str(&res.report_tail(elapsed));
    print!("{w}");
    let _ = std::io::stdout().flush();
}
