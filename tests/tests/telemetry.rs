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
            .unwrap_or_else(|_| panic!("{what}: not within {patience:?}; got {got:?}"))
            .expect("a frame")
            .expect("the stream goes on");
            match frame {
                TelemetryFrame::Batch(b) => got.extend(b),
                TelemetryFrame::Refused(e) => panic!("refused: {}", e.message),
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
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    for i in from..to {
        writeln!(f, "line {i}").unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lines_and_samples_stream_live_and_resume_exactly_once_across_a_restart() {
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("app.log");
    let extra = format!(
        "[telemetry]\nmetrics_interval_secs = 1\ndefault_logs = false\nlogs = [\"app={}\"]\n",
        log.display()
    );
    let mut c = Cluster::start(vec![node("gluu1", &extra)]).await;

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
