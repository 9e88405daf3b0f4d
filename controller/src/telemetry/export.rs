//! Export for when the numbers should end up elsewhere too: `serve --prometheus ADDR`
//! answers Prometheus scrapes with each series' latest value, and `serve --influxdb
//! URL` posts every stored sample as InfluxDB line protocol.
//!
//! Both see a sample once: what the store took in (a batch delivered twice is
//! exported once, as it is stored once).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clustermgr_protocol::telemetry::Sample;
use tokio::sync::mpsc;

use crate::CtlError;
use crate::http::{Target, post};

/// A series not updated for this long is left out of scrapes (its node is gone).
const STALE_MS: i64 = 5 * 60 * 1000;
/// The most lines waiting for InfluxDB while it does not answer; older ones go.
const INFLUX_BACKLOG: usize = 200_000;
/// Lines per write.
const INFLUX_BATCH: usize = 5000;

/// Where `serve` exports to.
#[derive(Clone, Debug, Default)]
pub struct ExportOptions {
    /// Answer Prometheus scrapes here (`/metrics`).
    pub prometheus: Option<SocketAddr>,
    /// Post line protocol to this URL (`http://host:8086/write?db=NAME` for 1.x,
    /// `http://host:8086/api/v2/write?org=O&bucket=B` for 2.x).
    pub influxdb: Option<String>,
    /// The token for InfluxDB's `Authorization: Token` header, read from a file.
    pub influxdb_token: Option<String>,
}

/// What exporters take from the ingest.
#[derive(Debug, Default)]
pub struct Exports {
    latest: Option<Mutex<BTreeMap<(String, String), Latest>>>,
    influx: Option<mpsc::Sender<String>>,
    influx_task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

#[derive(Debug)]
struct Latest {
    name: String,
    labels: Vec<(String, String)>,
    time_ms: i64,
    value: f64,
}

impl Exports {
    /// Stops taking samples and gives the InfluxDB writer up to `within` to send what
    /// it holds (`serve` stopping).
    pub async fn close(&self, within: Duration) {
        let task = self
            .influx_task
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(tx) = &self.influx {
            // The writer ends once the queue is empty and every sender is gone; the
            // stream tasks may hold theirs a moment longer, so it is told directly.
            let _ = tx.send(String::new()).await;
        }
        if let Some(task) = task
            && tokio::time::timeout(within, task).await.is_err()
        {
            tracing::warn!(
                "InfluxDB did not take the last samples within {} s; the store has them",
                within.as_secs()
            );
        }
    }

    /// Samples `node` stored at `time_ms`.
    pub fn samples(&self, node: &str, time_ms: i64, samples: &[Sample]) {
        if let Some(latest) = &self.latest {
            let mut map = latest.lock().unwrap_or_else(|p| p.into_inner());
            for s in samples {
                let e = map
                    .entry((node.to_string(), s.series()))
                    .or_insert_with(|| Latest {
                        name: s.name.clone(),
                        labels: s.labels.clone(),
                        time_ms,
                        value: s.value,
                    });
                if time_ms >= e.time_ms {
                    e.time_ms = time_ms;
                    e.value = s.value;
                }
            }
        }
        if let Some(tx) = &self.influx {
            let mut lines = String::new();
            for s in samples {
                line_protocol(&mut lines, node, time_ms, s);
            }
            // The writer empties this queue into its bounded backlog even while InfluxDB
            // is away; full, it means serve itself is overloaded (the store keeps all).
            let _ = tx.try_send(lines);
        }
    }
}

/// The Prometheus text format (0.0.4) of the series updated within [`STALE_MS`] of
/// `now_ms`, each with a `node` label.
fn exposition(map: &BTreeMap<(String, String), Latest>, now_ms: i64) -> String {
    let mut by_name: BTreeMap<&str, Vec<(&str, &Latest)>> = BTreeMap::new();
    for ((node, _), l) in map {
        if now_ms - l.time_ms <= STALE_MS {
            by_name.entry(&l.name).or_default().push((node, l));
        }
    }
    let mut out = String::new();
    for (name, rows) in by_name {
        let kind = if name.ends_with("_total") {
            "counter"
        } else {
            "gauge"
        };
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (node, l) in rows {
            let mut labels = vec![("node".to_string(), node.to_string())];
            labels.extend(l.labels.iter().cloned());
            let key = clustermgr_protocol::telemetry::series_key(name, &labels);
            let _ = writeln!(out, "{key} {}", prom_value(l.value));
        }
    }
    out
}

fn prom_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{v}")
    }
}

/// Appends one sample as InfluxDB line protocol: the metric as measurement, the node
/// and labels as tags, `value` as the field, nanoseconds.
fn line_protocol(out: &mut String, node: &str, time_ms: i64, s: &Sample) {
    if !s.value.is_finite() {
        // Line protocol has no NaN or infinity.
        return;
    }
    let esc = |text: &str, also_eq: bool| {
        let mut o = String::with_capacity(text.len());
        for c in text.chars() {
            if c == ',' || c == ' ' || (also_eq && c == '=') || c == '\\' {
                o.push('\\');
            }
            if c == '\n' {
                o.push_str("\\n");
                continue;
            }
            o.push(c);
        }
        o
    };
    out.push_str(&esc(&s.name, false));
    let _ = write!(out, ",node={}", esc(node, true));
    for (k, v) in &s.labels {
        if !v.is_empty() {
            let _ = write!(out, ",{}={}", esc(k, true), esc(v, true));
        }
    }
    let _ = writeln!(out, " value={} {}", s.value, time_ms as i128 * 1_000_000);
}

/// Starts what `opts` asks for; returns what the ingest feeds. A Prometheus address
/// that cannot be bound, or an InfluxDB URL that cannot be used, is an error now, not
/// a silent absence.
pub async fn start(opts: &ExportOptions) -> Result<Arc<Exports>, CtlError> {
    let listener =
        match opts.prometheus {
            Some(addr) => Some(tokio::net::TcpListener::bind(addr).await.map_err(|e| {
                CtlError::BadArgument {
                    flag: "--prometheus",
                    value: addr.to_string(),
                    why: format!("cannot listen there: {e}"),
                }
            })?),
            None => None,
        };
    let (influx, influx_task) = match &opts.influxdb {
        Some(url) => {
            let target = Target::parse(url, "--influxdb", 8086, "/write?db=clustermgr")?;
            if opts.influxdb_token.is_some() && !target.private() {
                return Err(CtlError::BadArgument {
                    flag: "--influxdb",
                    value: url.to_string(),
                    why: "the token would cross the network in the clear (plain http to a host that is not this machine); use https, or reach InfluxDB on loopback or through an SSH tunnel".into(),
                });
            }
            let (tx, rx) = mpsc::channel(1024);
            let task = tokio::spawn(influx(target, opts.influxdb_token.clone(), rx));
            (Some(tx), Some(task))
        }
        None => (None, None),
    };
    let exports = Arc::new(Exports {
        latest: listener.is_some().then(|| Mutex::new(BTreeMap::new())),
        influx,
        influx_task: Mutex::new(influx_task),
    });
    if let Some(l) = listener {
        tokio::spawn(prometheus(l, exports.clone()));
    }
    Ok(exports)
}

/// Scrapes served at once; a newcomer beyond them drops the oldest.
const PROMETHEUS_CONNECTIONS: usize = 128;
/// One deadline for a scrape's whole request head, and one for the whole answer.
const PROMETHEUS_HEAD_DEADLINE: Duration = Duration::from_secs(5);
const PROMETHEUS_REPLY_DEADLINE: Duration = Duration::from_secs(30);

async fn prometheus(listener: tokio::net::TcpListener, exports: Arc<Exports>) {
    crate::accept::serve_newest(
        listener,
        PROMETHEUS_CONNECTIONS,
        "Prometheus",
        move |sock| scrape(sock, exports.clone()),
    )
    .await;
}

/// Answers one scrape with hyper (the console's stack): a client that sends its head
/// too slowly is dropped at the head's deadline, and the whole connection, one request
/// (no keep-alive), ends within the head's and the answer's deadlines.
async fn scrape(sock: tokio::net::TcpStream, exports: Arc<Exports>) {
    let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let exports = exports.clone();
        async move { Ok::<_, std::convert::Infallible>(answer(&req, &exports)) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(PROMETHEUS_HEAD_DEADLINE)
        .max_buf_size(16 * 1024)
        .keep_alive(false)
        .serve_connection(hyper_util::rt::TokioIo::new(sock), svc);
    let _ = tokio::time::timeout(PROMETHEUS_HEAD_DEADLINE + PROMETHEUS_REPLY_DEADLINE, conn).await;
}

/// The answer to one request: the exposition at `GET /metrics`, else 404.
fn answer(
    req: &hyper::Request<hyper::body::Incoming>,
    exports: &Exports,
) -> hyper::Response<http_body_util::Full<hyper::body::Bytes>> {
    let (status, body) = if req.method() == hyper::Method::GET && req.uri().path() == "/metrics" {
        let now = crate::clock::Clock::unix(&crate::clock::SystemClock) * 1000;
        let body = exports
            .latest
            .as_ref()
            .map(|m| exposition(&m.lock().unwrap_or_else(|p| p.into_inner()), now))
            .unwrap_or_default();
        (hyper::StatusCode::OK, body)
    } else {
        (
            hyper::StatusCode::NOT_FOUND,
            "clustermgr serves /metrics only\n".to_string(),
        )
    };
    let mut res = hyper::Response::new(http_body_util::Full::new(hyper::body::Bytes::from(body)));
    *res.status_mut() = status;
    res.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    res
}

/// Waits `for_` while moving what the ingest sends into `backlog` (the queue between
/// them is small: while InfluxDB is away, the backlog, with its bound and its count
/// of what it dropped, is where samples wait). An empty message is `close`.
async fn wait_taking(
    rx: &mut mpsc::Receiver<String>,
    backlog: &mut std::collections::VecDeque<String>,
    closing: &mut bool,
    for_: Duration,
) {
    let until = tokio::time::Instant::now() + for_;
    loop {
        tokio::select! {
            m = rx.recv() => match m {
                Some(l) if l.is_empty() => *closing = true,
                Some(l) => backlog.push_back(l),
                None => {
                    *closing = true;
                    break;
                }
            },
            _ = tokio::time::sleep_until(until) => break,
        }
    }
    while let Ok(l) = rx.try_recv() {
        if l.is_empty() {
            *closing = true;
        } else {
            backlog.push_back(l);
        }
    }
}

/// Writes queued lines to InfluxDB in batches, retrying with a growing pause while it
/// does not take them; the oldest go when the backlog is full.
async fn influx(t: Target, token: Option<String>, mut rx: mpsc::Receiver<String>) {
    let mut backlog: std::collections::VecDeque<String> = Default::default();
    let mut pause = Duration::from_millis(500);
    let mut dropped = 0usize;
    // An empty message is `close`: send what is held, then end.
    let mut closing = false;
    loop {
        if backlog.is_empty() {
            if closing {
                return;
            }
            match rx.recv().await {
                Some(l) if l.is_empty() => closing = true,
                Some(l) => backlog.push_back(l),
                None => return,
            }
        }
        // Take what else comes, briefly, to write in bulk.
        let gather = if closing {
            Duration::ZERO
        } else {
            Duration::from_millis(200)
        };
        wait_taking(&mut rx, &mut backlog, &mut closing, gather).await;
        if backlog.is_empty() {
            continue;
        }
        while backlog.len() > INFLUX_BACKLOG {
            backlog.pop_front();
            dropped += 1;
        }
        let n = backlog.len().min(INFLUX_BATCH);
        let body: String = backlog.iter().take(n).map(String::as_str).collect();
        let auth = token.as_deref().map(|tok| format!("Token {tok}"));
        match post(
            &t,
            "text/plain; charset=utf-8",
            auth.as_deref(),
            body.as_bytes(),
        )
        .await
        {
            Ok((code, _)) if (200..300).contains(&code) => {
                backlog.drain(..n);
                pause = Duration::from_millis(500);
                if dropped > 0 {
                    tracing::warn!(
                        "InfluxDB was behind: {dropped} batches were not sent (the store has them)"
                    );
                    dropped = 0;
                }
            }
            Ok((code, reply)) if (400..500).contains(&code) && code != 429 => {
                // Refused for what it is: sending it again cannot help.
                tracing::warn!(
                    "InfluxDB refused a write ({code}: {}); check --influxdb and its token",
                    reply.trim()
                );
                backlog.drain(..n);
            }
            Ok((code, reply)) => {
                tracing::info!(
                    "InfluxDB answered {code} ({}); retrying in {:.1} s",
                    reply.trim(),
                    pause.as_secs_f32()
                );
                wait_taking(&mut rx, &mut backlog, &mut closing, pause).await;
                pause = (pause * 2).min(Duration::from_secs(60));
            }
            Err(e) => {
                tracing::info!(
                    "InfluxDB at {}:{}: {e}; retrying in {:.1} s",
                    t.host,
                    t.port,
                    pause.as_secs_f32()
                );
                wait_taking(&mut rx, &mut backlog, &mut closing, pause).await;
                pause = (pause * 2).min(Duration::from_secs(60));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_influxdb_token_never_goes_over_plain_http_to_another_host() {
        let opts = |url: &str| ExportOptions {
            prometheus: None,
            influxdb: Some(url.into()),
            influxdb_token: Some("secret-token".into()),
        };
        let err = start(&opts("http://10.0.0.5:8086/write?db=x"))
            .await
            .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("in the clear"), "{text}");
        assert!(!text.contains("secret-token"));
        let ok = start(&opts("http://127.0.0.1:1/write?db=x")).await.unwrap();
        ok.close(Duration::from_millis(100)).await;
    }
    use crate::telemetry::sample;

    #[tokio::test]
    async fn a_scrape_whose_head_trickles_in_is_dropped_at_the_heads_one_deadline() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (sock, _) = listener.accept().await.unwrap();
        // The head never ends.
        let head = format!("GET /metrics HTTP/1.1\r\nX-Slow: {}", "a".repeat(100));
        crate::accept::assert_dropped_while_trickling(
            scrape(sock, Arc::new(Exports::default())),
            &mut client,
            head.as_bytes(),
            PROMETHEUS_HEAD_DEADLINE,
        )
        .await;
    }

    #[test]
    fn exposition_groups_by_name_types_counters_and_drops_stale_series() {
        let e = Exports {
            latest: Some(Mutex::new(BTreeMap::new())),
            ..Exports::default()
        };
        e.samples("n1", 1000, &[sample("node_load1", &[], 0.5)]);
        e.samples("n2", 1000, &[sample("node_load1", &[], 1.5)]);
        e.samples(
            "n1",
            1000,
            &[sample("node_cpu_seconds_total", &[("mode", "idle")], 42.0)],
        );
        // An older sample delivered late does not replace a newer one.
        e.samples("n1", 500, &[sample("node_load1", &[], 9.0)]);
        e.samples("gone", -STALE_MS, &[sample("node_load1", &[], 3.0)]);
        let text = exposition(&e.latest.as_ref().unwrap().lock().unwrap(), 2000);
        assert_eq!(
            text,
            "# TYPE node_cpu_seconds_total counter\nnode_cpu_seconds_total{node=\"n1\",mode=\"idle\"} 42\n# TYPE node_load1 gauge\nnode_load1{node=\"n1\"} 0.5\nnode_load1{node=\"n2\"} 1.5\n"
        );
    }

    #[test]
    fn line_protocol_escapes_what_it_must() {
        let mut out = String::new();
        line_protocol(
            &mut out,
            "gluu 1",
            1500,
            &sample(
                "node_filesystem_avail_bytes",
                &[("mount", "/var/a,b=c")],
                1e9,
            ),
        );
        line_protocol(&mut out, "n", 0, &sample("x", &[], f64::NAN));
        assert_eq!(
            out,
            "node_filesystem_avail_bytes,node=gluu\\ 1,mount=/var/a\\,b\\=c value=1000000000 1500000000\n"
        );
    }
}
