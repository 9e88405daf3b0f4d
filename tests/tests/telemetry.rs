//! Telemetry from real agents on loopback: lines appended to a followed file and the
//! metric samples stream to the controller within a second, and a controller that
//! resumes from the last record it stored, across an agent restart with lines written
//! while the agent was down, gets every line exactly once.

use std::collections::BTreeSet;
use std::io::Write;
use std::time::{Duration, Instant};

use clustermgr::connect::AgentConn;
use clustermgr_protocol::frame::{read_message, write_message};
use clustermgr_protocol::message::Request;
use clustermgr_protocol::telemetry::{Body, Record, TelemetryAck, TelemetryFrame};
use clustermgr_tests::{Cluster, node};

/// One telemetry stream, read record by record.
struct Stream {
    _conn: AgentConn,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
}

impl Stream {
    async fn open(c: &Cluster, after: u64) -> Stream {
        let ctx = c.ctx();
        let n = ctx.store.node("gluu1").unwrap().unwrap();
        let conn = ctx.connection(&n).await.expect("connect");
        let (mut send, recv) = conn.open().await.expect("open a stream");
        write_message(&mut send, &Request::Telemetry { after })
            .await
            .unwrap();
        Stream {
            _conn: conn,
            send,
            recv,
        }
    }

    /// Records until `done` says so, or panics at the deadline.
    async fn until(
        &mut self,
        what: &str,
        patience: Duration,
        mut done: impl FnMut(&[Record]) -> bool,
    ) -> Vec<Record> {
        let mut got = Vec::new();
        let deadline = tokio::time::Instant::now() + patience;
        while !done(&got) {
            let frame = tokio::time::timeout_at(
                deadline,
                read_message::<TelemetryFrame, _>(&mut self.recv, 16 << 20, "telemetry"),
            )
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "{what}: not within {patience:?}; got {} records, the last {:?}",
                    got.len(),
                    got.last()
                )
            })
            .expect("a frame")
            .expect("the stream goes on");
            match frame.unpacked(64 << 20).expect("a frame that unpacks") {
                Ok(b) => got.extend(b),
                Err(e) => panic!("refused: {}", e.message),
            }
        }
        got
    }

    async fn ack(&mut self, seq: u64) {
        write_message(
            &mut self.send,
            &TelemetryAck {
                stored_through: seq,
            },
        )
        .await
        .unwrap();
    }
}

fn lines(recs: &[Record]) -> Vec<String> {
    recs.iter()
        .filter_map(|r| match &r.body {
            Body::Log { source, line } if source == "app" => Some(line.clone()),
            _ => None,
        })
        .collect()
}

fn append(path: &std::path::Path, from: usize, to: usize) {
    append_tagged(path, "line", from, to);
}

/// Appends `TAG N` for each N in `from..to`.
fn append_tagged(path: &std::path::Path, tag: &str, from: usize, to: usize) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    for i in from..to {
        writeln!(f, "{tag} {i}").unwrap();
    }
}

/// One agent following `app.log` in a directory of its own (returned), sampling
/// every second.
async fn one_node_following_app_log() -> (tempfile::TempDir, Cluster) {
    let logs = tempfile::tempdir().unwrap();
    let extra = clustermgr_tests::following_app_log(&logs.path().join("app.log"));
    let c = Cluster::start(vec![node("gluu1", &extra)]).await;
    (logs, c)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lines_and_samples_stream_live_and_resume_exactly_once_across_a_restart() {
    let (logs, mut c) = one_node_following_app_log().await;
    let log = logs.path().join("app.log");

    // A file that appears after the agent started is read from its start, live.
    let mut s = Stream::open(&c, 0).await;
    let written = Instant::now();
    append(&log, 0, 100);
    let got = s
        .until("the first 100 lines", Duration::from_secs(5), |r| {
            lines(r).len() >= 100
        })
        .await;
    let latency = written.elapsed();
    assert!(latency < Duration::from_secs(1), "took {latency:?}");
    assert_eq!(
        lines(&got),
        (0..100).map(|i| format!("line {i}")).collect::<Vec<_>>()
    );
    // Sequence numbers run without a hole.
    for w in got.windows(2) {
        assert_eq!(w[1].seq, w[0].seq + 1, "{:?}", &w);
    }
    // And the metrics come every second.
    let more = s
        .until("two metric samples", Duration::from_secs(5), |r| {
            r.iter()
                .filter(|x| matches!(x.body, Body::Metrics(_)))
                .count()
                >= 2
        })
        .await;
    let all: Vec<Record> = got.into_iter().chain(more).collect();
    // Ticks carry their scheduled times: exactly the interval apart.
    let ticks: Vec<i64> = all
        .iter()
        .filter(|r| matches!(r.body, Body::Metrics(_)))
        .map(|r| r.time_ms)
        .collect();
    for w in ticks.windows(2) {
        assert_eq!(w[1] - w[0], 1000, "{ticks:?}");
    }
    let sample = all
        .iter()
        .find_map(|r| match &r.body {
            Body::Metrics(s) => Some(s),
            _ => None,
        })
        .unwrap();
    assert!(
        sample.iter().any(|x| x.name == "node_cpu_seconds_total"),
        "{sample:?}"
    );
    assert!(
        sample
            .iter()
            .any(|x| x.name == "node_memory_available_bytes")
    );
    let stored = all.last().unwrap().seq;
    s.ack(stored).await;
    drop(s);

    // The agent stops and starts again; lines are written while it is down.
    c.stop_agent("gluu1").await;
    append(&log, 100, 150);
    c.restart_agent("gluu1").await;
    append(&log, 150, 200);
    let mut s = Stream::open(&c, stored).await;
    let got = s
        .until("the lines since", Duration::from_secs(10), |r| {
            lines(r).iter().any(|l| l == "line 199")
        })
        .await;
    assert_eq!(
        got[0].seq,
        stored + 1,
        "resumed right after what was stored"
    );
    for w in got.windows(2) {
        assert_eq!(w[1].seq, w[0].seq + 1);
    }
    let after: Vec<String> = lines(&got);
    assert_eq!(
        after,
        (100..200).map(|i| format!("line {i}")).collect::<Vec<_>>(),
        "every line once, in order"
    );
    let unique: BTreeSet<&String> = after.iter().collect();
    assert_eq!(unique.len(), after.len());
}

/// Waits for a line containing `want`, returning how long it took.
fn wait_line(
    rx: &std::sync::mpsc::Receiver<(Instant, String)>,
    want: &str,
    patience: Duration,
) -> Duration {
    let start = Instant::now();
    let at = clustermgr_tests::wait_for_line(rx, want, patience).unwrap_or_else(|e| panic!("{e}"));
    at.duration_since(start)
}

/// The text of each line `clustermgr logs` printed.
fn texts(out: &std::process::Output) -> Vec<String> {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once(" | ").map(|(_, t)| t.to_string()))
        .collect()
}

fn stored_lines(c: &Cluster) -> Vec<String> {
    texts(&c.run(&["logs", "--source", "app", "--limit", "100000"]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_stores_the_streams_and_logs_follows_them_across_restarts_exactly_once() {
    let (logs, mut c) = one_node_following_app_log().await;
    let log = logs.path().join("app.log");
    append(&log, 0, 10);
    let serve = c.serve().await;
    let (mut tail, rx) = clustermgr_tests::follow_logs(&c, &["--source", "app"]);
    // The ten lines written before serve started come first, from the store.
    wait_line(&rx, "line 9", Duration::from_secs(10));
    // A new line shows within a second.
    append(&log, 10, 11);
    let took = wait_line(&rx, "line 10", Duration::from_secs(5));
    assert!(took < Duration::from_secs(1), "took {took:?}");
    // Ctrl-C ends a stream as it ends any interrupted command: 130.
    let _ = std::process::Command::new("kill")
        .args(["-INT", &tail.id().to_string()])
        .status();
    assert_eq!(tail.wait().unwrap().code(), Some(130));

    // serve is killed mid-stream while lines keep coming, then the agent restarts
    // too; every line is stored once.
    append(&log, 11, 500);
    drop(serve);
    append(&log, 500, 600);
    c.stop_agent("gluu1").await;
    append(&log, 600, 650);
    c.restart_agent("gluu1").await;
    append(&log, 650, 700);
    let serve = c.serve().await;
    let (mut tail, rx) =
        clustermgr_tests::follow_logs(&c, &["--source", "app", "--grep", "line 699$"]);
    wait_line(&rx, "line 699", Duration::from_secs(15));
    let _ = tail.kill();
    let _ = tail.wait();
    let stored = stored_lines(&c);
    assert_eq!(
        stored,
        (0..700).map(|i| format!("line {i}")).collect::<Vec<_>>(),
        "every line once, in order"
    );
    let out = c.run(&["--json", "logs", "--since", "1h", "--grep", "^line 4[0-9]$"]);
    let json = clustermgr_tests::schema::json(&out, "logs");
    assert_eq!(json["lines"].as_array().map(Vec::len), Some(10), "{json}");
    // --limit with --since: the newest N since then.
    let out = c.run(&["logs", "--source", "app", "--since", "1h", "--limit", "3"]);
    assert_eq!(texts(&out), ["line 697", "line 698", "line 699"]);
    // A source that is not there is a mistake, as a node that is not there is.
    let out = c.run(&["logs", "--source", "ap"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no lines from a source named \"ap\"") && err.contains("did you mean app?"),
        "{err}"
    );
    // Nothing matching is said, on stderr, with where lines come from.
    let out = c.run(&["logs", "--source", "app", "--grep", "no such line"]);
    assert!(out.status.success() && out.stdout.is_empty());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("clustermgr serve"),
        "{out:?}"
    );

    // And the samples: the metrics there are, and one as rates per second.
    let out = c.run(&["metrics"]);
    let names = String::from_utf8_lossy(&out.stdout);
    assert!(
        names.contains("node_load1") && names.contains("gluu_processes"),
        "{names}"
    );
    let idle = || {
        let out = c.run(&[
            "--json",
            "metrics",
            "--metric",
            "node_cpu_seconds_total",
            "--since",
            "10m",
            "--step",
            "1",
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let json = clustermgr_tests::schema::json(&out, "metrics-series");
        json["series"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["series"] == "node_cpu_seconds_total{mode=\"idle\"}")
            .cloned()
            .unwrap_or_else(|| panic!("{json}"))
    };
    clustermgr_tests::eventually_blocking(
        "three rates of CPU time",
        Duration::from_secs(10),
        || idle()["points"].as_array().is_some_and(|p| p.len() >= 3),
    );
    let idle = idle();
    assert_eq!(idle["unit"], "per second");
    let points = idle["points"].as_array().unwrap();
    // CPU seconds per second of one mode: between 0 and the machine's CPU count.
    for p in points {
        let rate = p["value"].as_f64().unwrap();
        assert!((0.0..=64.0).contains(&rate), "{rate}");
    }
    let out = c.run(&["metrics", "--metric", "node_load1"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("gluu1 node_load1") && text.contains("last "),
        "{text}"
    );
    let out = c.run(&["metrics", "--metric", "no_such_metric"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("lists the metrics there are"));

    // top, without a terminal: one table, from the ticks serve received last.
    let top = || {
        let out = c.run(&["--json", "top"]);
        clustermgr_tests::schema::json(&out, "top")["nodes"].clone()
    };
    clustermgr_tests::eventually_blocking(
        "top to have two ticks of gluu1",
        Duration::from_secs(10),
        || top()[0]["cpu_pct"].is_number(),
    );
    let row = top()[0].clone();
    assert_eq!(row["node"], "gluu1");
    assert_eq!(row["state"], "connected");
    let cpu = row["cpu_pct"].as_f64().unwrap();
    assert!((0.0..=100.0).contains(&cpu), "{row}");
    assert!(row["mem_pct"].as_f64().is_some_and(|m| m > 0.0), "{row}");
    let text = String::from_utf8_lossy(&c.run(&["top"]).stdout).into_owned();
    // Not on a terminal: the screen once, plainly, for a pipe or a file.
    assert!(
        text.starts_with("clustermgr top · e2e · 1 node, 1 up")
            && text.contains("\ngluu1        up ")
            && !text.contains('\x1b'),
        "{text}"
    );
    drop(serve);
    let out = c.run(&["top"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("start `clustermgr serve`"));
}

/// A loopback TCP port nothing listens on now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A program the test started, killed when dropped; its output goes to `log`.
struct Daemon {
    child: std::process::Child,
    log: std::path::PathBuf,
}

impl Daemon {
    fn start(program: &str, args: &[String], log: std::path::PathBuf) -> Daemon {
        let out = std::fs::File::create(&log).unwrap();
        let child = std::process::Command::new(program)
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("{program}: {e}"));
        Daemon { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `curl -s` of a loopback URL; the body, or "" when nothing answers.
fn curl(args: &[&str]) -> String {
    let out = std::process::Command::new("curl")
        .args(["-s", "--max-time", "5"])
        .args(args)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_scrapes_serve_and_a_real_influxdb_gets_every_sample_once() {
    let (_logs, c) = one_node_following_app_log().await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();

    // InfluxDB 1.x (Debian's), on loopback only, with a database for clustermgr.
    let (influx_http, influx_rpc) = (free_port(), free_port());
    std::fs::write(
        d.join("influxdb.conf"),
        format!(
            "reporting-disabled = true\nbind-address = \"127.0.0.1:{influx_rpc}\"\n[meta]\n  dir = \"{0}/meta\"\n[data]\n  dir = \"{0}/data\"\n  wal-dir = \"{0}/wal\"\n[http]\n  bind-address = \"127.0.0.1:{influx_http}\"\n  log-enabled = false\n",
            d.display()
        ),
    )
    .unwrap();
    let influxd = Daemon::start(
        "influxd",
        &[
            "-config".into(),
            d.join("influxdb.conf").display().to_string(),
        ],
        d.join("influxd.log"),
    );
    let influx = format!("http://127.0.0.1:{influx_http}");
    clustermgr_tests::eventually_blocking("InfluxDB to answer", Duration::from_secs(30), || {
        curl(&[
            "-XPOST",
            &format!("{influx}/query"),
            "--data-urlencode",
            "q=CREATE DATABASE clustermgr",
        ])
        .contains("results")
    });

    // serve, exporting to both.
    let prom_export = free_port();
    let serve = clustermgr_tests::start_serve_with(
        c.cli(),
        &c.dir(),
        &[
            "--prometheus",
            &format!("127.0.0.1:{prom_export}"),
            "--influxdb",
            &format!("{influx}/write?db=clustermgr"),
        ],
    )
    .await;

    // Prometheus (Debian's) scraping serve every second.
    let prom_web = free_port();
    std::fs::write(
        d.join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: clustermgr\n    static_configs:\n      - targets: ['127.0.0.1:{prom_export}']\n"
        ),
    )
    .unwrap();
    let prometheus = Daemon::start(
        "prometheus",
        &[
            format!("--config.file={}", d.join("prometheus.yml").display()),
            format!("--storage.tsdb.path={}", d.join("prom").display()),
            format!("--web.listen-address=127.0.0.1:{prom_web}"),
        ],
        d.join("prometheus.log"),
    );
    let query = |q: &str| {
        curl(&[
            "-G",
            &format!("http://127.0.0.1:{prom_web}/api/v1/query"),
            "--data-urlencode",
            &format!("query={q}"),
        ])
    };
    let patience = Duration::from_secs(60);
    clustermgr_tests::eventually_blocking(
        "Prometheus to have node_load1 of gluu1",
        patience,
        || query("node_load1{node=\"gluu1\"}").contains("\"node\":\"gluu1\""),
    );
    let up = query("up{job=\"clustermgr\"}");
    assert!(
        up.contains("\"value\":[") && up.contains(",\"1\"]"),
        "{up}\n{}",
        prometheus.log()
    );
    // Counters are typed as such: Prometheus computes their rates.
    clustermgr_tests::eventually_blocking("a rate of idle CPU time", patience, || {
        query("rate(node_cpu_seconds_total{node=\"gluu1\",mode=\"idle\"}[10s])")
            .contains("\"mode\":\"idle\"")
    });

    // InfluxDB has every node_load1 sample the store has, each once.
    let influx_count = || {
        let r = curl(&[
            "-G",
            &format!("{influx}/query"),
            "--data-urlencode",
            "db=clustermgr",
            "--data-urlencode",
            "q=SELECT count(value) FROM node_load1 WHERE node='gluu1'",
        ]);
        let v: serde_json::Value = serde_json::from_str(&r).unwrap_or_default();
        v["results"][0]["series"][0]["values"][0][1]
            .as_u64()
            .unwrap_or(0)
    };
    clustermgr_tests::eventually_blocking("InfluxDB to have samples", patience, || {
        influx_count() >= 3
    });
    // Stopped as a service manager stops it, serve sends InfluxDB what it holds.
    serve.stop();
    let stored = load_times(&|a| c.run(a)).len() as u64;
    clustermgr_tests::eventually_blocking(
        "InfluxDB to match the store",
        Duration::from_secs(10),
        || influx_count() == stored,
    );
    assert!(stored >= 3, "{stored}\n{}", influxd.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controller_that_does_not_read_slows_its_stream_not_the_node() {
    let (logs, c) = one_node_following_app_log().await;
    let log = logs.path().join("app.log");
    // A stream nobody reads while 40 MiB of lines are written: far more than QUIC's
    // windows hold, so the agent must wait on the stream, and keep collecting.
    let mut s = Stream::open(&c, 0).await;
    let n = 400_000;
    {
        let mut w = std::io::BufWriter::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log)
                .unwrap(),
        );
        for i in 0..n {
            writeln!(w, "line {i:08} {}", "x".repeat(80)).unwrap();
        }
    }
    let spool = c.agent("gluu1").dir.join("state/telemetry/spool");
    let spooled = || -> u64 {
        std::fs::read_dir(&spool)
            .map(|d| {
                d.flatten()
                    .filter_map(|e| e.metadata().ok())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0)
    };
    clustermgr_tests::eventually_blocking(
        "the agent to spool every line",
        Duration::from_secs(60),
        || spooled() > 40 << 20,
    );
    let pid = c.agent("gluu1").child.id().unwrap();
    let rss = clustermgr_tests::bench::rss_mib(pid);
    assert!(
        rss < 30.0,
        "the agent holds {rss:.1} MiB while its reader stalls"
    );
    // Reading again, every line arrives, in order.
    let got = s
        .until("every line", Duration::from_secs(120), |r| {
            r.iter().rev().take(64).any(|x| {
                matches!(&x.body, Body::Log { line, .. } if line.starts_with(&format!("line {:08}", n - 1)))
            })
        })
        .await;
    let got = lines(&got);
    assert_eq!(got.len(), n);
    assert!(got.windows(2).all(|w| w[0] < w[1]), "in order");
}

/// `clustermgr logs -f ARGS` for a harness controller.
fn follow_ctl(
    ctl: &clustermgr_tests::Controller,
    args: &[&str],
) -> (
    std::process::Child,
    std::sync::mpsc::Receiver<(Instant, String)>,
) {
    clustermgr_tests::follow_with(ctl.cmd(), args)
}

/// The lines of `source` on `node` in the store, through `ctl`.
fn host_lines(ctl: &clustermgr_tests::Controller, node: &str, source: &str) -> Vec<String> {
    texts(&ctl.run(&[
        "logs", "--nodes", node, "--source", source, "--limit", "100000",
    ]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_harness_host_lines_survive_rotation_and_a_minute_cut_off_once_each() {
    use clustermgr_tests::netns::Net;
    let mut net = Net::new();
    for name in ["gluu1", "gluu2"] {
        net.add_host(name);
    }
    let ctl = clustermgr_tests::Controller::new();
    let inventory = ctl.inventory(&net, "gluu1").display().to_string();
    let out = ctl.run(&["node", "add", "--from", &inventory]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let serve = ctl.serve().await;
    let g1 = net.host("gluu1");
    // The default sources include nginx's access log, on the host.
    g1.sh("mkdir -p /var/log/nginx && echo READY >> /var/log/nginx/access.log");
    let log = g1.path("/var/log/nginx/access.log");
    clustermgr_tests::eventually_blocking("gluu1's stream to run", Duration::from_secs(60), || {
        host_lines(&ctl, "gluu1", "nginx-access").contains(&"READY".to_string())
    });

    // A line appended to a Gluu log inside the container shows in `logs -f` within a
    // second (the file did not exist when the agent started).
    let (mut tail, rx) = follow_ctl(&ctl, &["--source", "oxauth"]);
    g1.sh("mkdir -p /opt/gluu-server/opt/gluu/jetty/oxauth/logs && touch /opt/gluu-server/opt/gluu/jetty/oxauth/logs/oxauth.log");
    let oxauth = g1.path("/opt/gluu-server/opt/gluu/jetty/oxauth/logs/oxauth.log");
    // Until the agent follows the new file, a probe line may come first.
    clustermgr_tests::eventually_blocking(
        "the agent to follow oxauth.log",
        Duration::from_secs(30),
        || {
            append_tagged(&oxauth, "probe", 0, 1);
            clustermgr_tests::wait_for_line(&rx, "probe 0", Duration::from_millis(1500)).is_ok()
        },
    );
    let written = Instant::now();
    append_tagged(&oxauth, "INFO oxauth request", 1, 2);
    let at = clustermgr_tests::wait_for_line(&rx, "INFO oxauth request 1", Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("{e}"));
    let took = at.duration_since(written);
    assert!(took < Duration::from_secs(1), "took {took:?}");
    // Ctrl-C ends a stream as it ends any interrupted command: 130.
    let _ = std::process::Command::new("kill")
        .args(["-INT", &tail.id().to_string()])
        .status();
    assert_eq!(tail.wait().unwrap().code(), Some(130));

    // Rotation by rename mid-stream, then copytruncate with the writer paused across
    // it: every line once.
    let access = |from: usize, to: usize| append_tagged(&log, "rot", from, to);
    access(0, 300);
    g1.sh("mv /var/log/nginx/access.log /var/log/nginx/access.log.1");
    access(300, 600);
    let stored = |last: &str| {
        clustermgr_tests::eventually_blocking(last, Duration::from_secs(30), || {
            host_lines(&ctl, "gluu1", "nginx-access").contains(&last.to_string())
        })
    };
    stored("rot 599");
    g1.sh("cp /var/log/nginx/access.log /var/log/nginx/access.log.2 && truncate -s 0 /var/log/nginx/access.log");
    access(600, 900);
    stored("rot 899");
    let rot: Vec<String> = host_lines(&ctl, "gluu1", "nginx-access")
        .into_iter()
        .filter(|l| l.starts_with("rot "))
        .collect();
    assert_eq!(
        rot,
        (0..900).map(|n| format!("rot {n}")).collect::<Vec<_>>()
    );

    // A minute without a link, writing a line every 100 ms and sampling as usual.
    g1.cut_link();
    let cut_at = time::OffsetDateTime::now_utc().unix_timestamp() * 1000;
    let start = Instant::now();
    let mut i = 0;
    while start.elapsed() < Duration::from_secs(60) {
        append_tagged(&log, "gap", i, i + 1);
        i += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    let healed_at = time::OffsetDateTime::now_utc().unix_timestamp() * 1000;
    g1.restore_link();
    let last = format!("gap {}", i - 1);
    clustermgr_tests::eventually_blocking(
        "the gap's lines to arrive",
        Duration::from_secs(120),
        || host_lines(&ctl, "gluu1", "nginx-access").contains(&last),
    );
    let got: Vec<String> = host_lines(&ctl, "gluu1", "nginx-access")
        .into_iter()
        .filter(|l| l.starts_with("gap "))
        .collect();
    assert_eq!(
        got,
        (0..i).map(|n| format!("gap {n}")).collect::<Vec<_>>(),
        "every line of the gap, once, in order"
    );
    // And the samples taken during the gap: every 10 s, none twice, none missing.
    clustermgr_tests::eventually_blocking(
        "a sample after the gap",
        Duration::from_secs(60),
        || {
            load_times(&|a| ctl.run(a))
                .last()
                .is_some_and(|t| *t > healed_at)
        },
    );
    let times = load_times(&|a| ctl.run(a));
    let during: Vec<i64> = times
        .iter()
        .copied()
        .filter(|t| *t > cut_at && *t < healed_at)
        .collect();
    assert!(during.len() >= 5, "{during:?}");
    for w in times.windows(2) {
        assert_eq!(w[1] - w[0], 10_000, "ticks exactly 10 s apart: {times:?}");
    }
    drop(serve);
}

/// The times of gluu1's stored `node_load1` samples, through `run` (a CLI).
fn load_times(run: &dyn Fn(&[&str]) -> std::process::Output) -> Vec<i64> {
    let out = run(&[
        "--json",
        "metrics",
        "--nodes",
        "gluu1",
        "--metric",
        "node_load1",
        "--since",
        "1h",
        "--step",
        "1",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    if !v.is_null() {
        clustermgr_tests::schema::assert_valid("metrics-series", &v);
    }
    v["series"][0]["points"]
        .as_array()
        .map(|p| p.iter().filter_map(|x| x["time_ms"].as_i64()).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_telemetry_store_opens_once_however_many_ask_at_once() {
    // serve's tasks (streams, upkeep, health, alerts) all ask for it as serve starts;
    // redb refuses a second open of one file, so only one may open it.
    let c = Cluster::start(vec![node("gluu1", "[telemetry]\nenabled = false\n")]).await;
    let ctx = std::sync::Arc::new(c.ctx());
    let ready = std::sync::Arc::new(std::sync::Barrier::new(8));
    let askers: Vec<_> = (0..8)
        .map(|_| {
            let (ctx, ready) = (ctx.clone(), ready.clone());
            std::thread::spawn(move || {
                ready.wait();
                ctx.telemetry().map(|_| ())
            })
        })
        .collect();
    for a in askers {
        a.join()
            .expect("no panic")
            .expect("every caller gets the store");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn top_fits_80_columns_on_a_terminal_and_q_quits() {
    let extra = "[telemetry]\nmetrics_interval_secs = 1\ndefault_logs = false\n";
    let c = Cluster::start(vec![
        node("gluu1", extra),
        node("gluu-with-a-long-name", extra),
    ])
    .await;
    let _serve = c.serve().await;
    let done = c.home.path().join("top-exit");
    let socket = format!("cm-top-{}", std::process::id());
    // An 80 by 24 terminal, as a pseudo-terminal tmux makes; the exit code is kept.
    let command = format!(
        "{} --home {} top; echo $? > {}",
        clustermgr_tests::clustermgr_bin().display(),
        c.dir().display(),
        done.display()
    );
    clustermgr_tests::tmux(
        &socket,
        &["new-session", "-d", "-x", "80", "-y", "24", &command],
    );
    let screen = || clustermgr_tests::tmux(&socket, &["capture-pane", "-p"]);
    // Two ticks make a row's CPU, a few more its minute of history.
    clustermgr_tests::eventually(
        "both rows with CPU and history",
        Duration::from_secs(30),
        || {
            let s = screen();
            // Any height of bar: a loaded machine's CPU is no low bar.
            let spark = |l: &str| l.chars().any(|c| ('▁'..='█').contains(&c));
            s.lines().filter(|l| l.contains("% ") && spark(l)).count() == 2
        },
    )
    .await;
    let shot = screen();
    for line in shot.lines() {
        assert!(
            line.chars().count() <= 80,
            "wider than 80: {line:?}\n{shot}"
        );
    }
    assert!(
        shot.starts_with("clustermgr top · e2e · 2 nodes, 2 up"),
        "{shot}"
    );
    assert!(shot.contains("q quits"), "{shot}");
    assert!(shot.contains("NODE         UP    CPU LAST MIN"), "{shot}");
    // A name longer than its column is cut, visibly.
    assert!(shot.contains("gluu-with-a…"), "{shot}");
    // Units a person reads: bytes in binary units, rates in decimal ones.
    assert!(shot.contains(" MiB") || shot.contains(" GiB"), "{shot}");
    std::fs::write(clustermgr_tests::bin_dir().join("top-80x24.txt"), &shot).unwrap();
    clustermgr_tests::tmux(&socket, &["send-keys", "q"]);
    clustermgr_tests::eventually("top to quit on q", Duration::from_secs(10), || {
        std::fs::read_to_string(&done).is_ok_and(|s| s.trim() == "0")
    })
    .await;
    clustermgr_tests::tmux(&socket, &["kill-server"]);
}
