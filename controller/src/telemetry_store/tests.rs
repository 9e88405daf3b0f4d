//! The telemetry store: exactly-once ingest, log queries across nodes, series back.

use clustermgr_protocol::telemetry::Sample;

use super::*;

fn log(seq: u64, t: i64, source: &str, line: &str) -> Record {
    Record {
        seq,
        time_ms: t,
        body: Body::Log {
            source: source.into(),
            line: line.into(),
        },
    }
}

fn tick(seq: u64, t: i64, load: f64, bytes: f64) -> Record {
    Record {
        seq,
        time_ms: t,
        body: Body::Metrics(vec![
            Sample {
                name: "node_load1".into(),
                labels: vec![],
                value: load,
            },
            Sample {
                name: "node_network_receive_bytes_total".into(),
                labels: vec![("device".into(), "eth0".into())],
                value: bytes,
            },
        ]),
    }
}

#[test]
fn a_batch_delivered_twice_is_stored_once() {
    let tmp = tempfile::tempdir().unwrap();
    let s = TelemetryStore::open(&tmp.path().join("t.redb")).unwrap();
    let batch = vec![
        log(1, 1000, "app", "a"),
        log(2, 1001, "app", "b"),
        tick(3, 1002, 0.5, 10.0),
    ];
    let first = s.ingest("n1", &batch).unwrap();
    assert_eq!((first.cursor, first.lines, first.samples), (3, 2, 2));
    // Redelivered after a reconnect, with one new record.
    let mut again = batch.clone();
    again.push(log(4, 1003, "app", "c"));
    let second = s.ingest("n1", &again).unwrap();
    assert_eq!((second.cursor, second.lines, second.duplicates), (4, 1, 3));
    let lines: Vec<String> = s
        .logs(&LogQuery::default(), &|_| true)
        .unwrap()
        .into_iter()
        .map(|l| l.line)
        .collect();
    assert_eq!(lines, ["a", "b", "c"]);
    assert_eq!(s.cursor("n1").unwrap(), 4);
    assert_eq!(s.cursor("n2").unwrap(), 0);
}

#[test]
fn logs_merge_across_nodes_in_time_order_and_filter() {
    let tmp = tempfile::tempdir().unwrap();
    let s = TelemetryStore::open(&tmp.path().join("t.redb")).unwrap();
    s.ingest(
        "n1",
        &[
            log(1, 100, "oxauth", "n1 early"),
            log(2, 300, "nginx", "n1 late"),
        ],
    )
    .unwrap();
    s.ingest(
        "n2",
        &[
            log(1, 200, "oxauth", "n2 middle"),
            Record {
                seq: 9,
                time_ms: 400,
                body: Body::Gap {
                    lost: 7,
                    why: "the spool was full".into(),
                },
            },
        ],
    )
    .unwrap();
    let all = s.logs(&LogQuery::default(), &|_| true).unwrap();
    let text: Vec<(&str, &str)> = all
        .iter()
        .map(|l| (l.node.as_str(), l.line.as_str()))
        .collect();
    assert_eq!(
        text,
        [
            ("n1", "n1 early"),
            ("n2", "n2 middle"),
            ("n1", "n1 late"),
            (
                "n2",
                "7 records from this node were lost: the spool was full"
            ),
        ]
    );
    let q = LogQuery {
        nodes: vec!["n1".into()],
        source: Some("oxauth".into()),
        ..LogQuery::default()
    };
    assert_eq!(s.logs(&q, &|_| true).unwrap().len(), 1);
    let since = LogQuery {
        since_ms: Some(250),
        ..LogQuery::default()
    };
    assert_eq!(s.logs(&since, &|_| true).unwrap().len(), 2);
    let last = LogQuery {
        limit: Some(1),
        ..LogQuery::default()
    };
    assert_eq!(s.logs(&last, &|_| true).unwrap()[0].seq, 9);
}

#[test]
fn series_come_back_across_chunks_and_a_reopen() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("t.redb");
    let n = CHUNK_SAMPLES as u64 * 2 + 50;
    {
        let s = TelemetryStore::open(&path).unwrap();
        for i in 1..=n / 2 {
            s.ingest(
                "n1",
                &[tick(i, i as i64 * 1000, 0.01 * i as f64, (i * 1500) as f64)],
            )
            .unwrap();
        }
    }
    let s = TelemetryStore::open(&path).unwrap();
    for i in n / 2 + 1..=n {
        s.ingest(
            "n1",
            &[tick(i, i as i64 * 1000, 0.01 * i as f64, (i * 1500) as f64)],
        )
        .unwrap();
    }
    let got = s
        .series(&[], Some("node_network_receive_bytes_total"), 0)
        .unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(
        got[0].series,
        "node_network_receive_bytes_total{device=\"eth0\"}"
    );
    assert_eq!(got[0].samples.len() as u64, n);
    for (i, (t, v)) in got[0].samples.iter().enumerate() {
        let i = i as u64 + 1;
        assert_eq!((*t, *v), (i as i64 * 1000, (i * 1500) as f64));
    }
    let load = s
        .series(&["n1".into()], Some("node_load1"), 1_000_000)
        .unwrap();
    assert_eq!(load[0].samples.first().unwrap().0, 1_000_000);
    assert!(s.series(&["n2".into()], None, 0).unwrap().is_empty());
}

#[test]
fn a_damaged_block_is_an_error_that_names_the_store() {
    assert!(decode_block(&[9, 0, 0]).unwrap_err().contains("format 9"));
    assert!(decode_block(&[LOG_BLOCK_FORMAT, 255, 255, 255, 255]).is_err());
    let good = encode_block(&[LogLine {
        seq: 1,
        time_ms: 2,
        source: "s".into(),
        line: "l".into(),
    }]);
    assert_eq!(decode_block(&good).unwrap().len(), 1);
}

/// Three hours of 10-second ticks from 00:00: load cycles 0..5, bytes grow by 1000.
fn three_hours(s: &TelemetryStore) -> i64 {
    // A whole hour (1.8e12 ms is one).
    let start = 1_800_000_000_000;
    let batch: Vec<Record> = (0..1080u64)
        .map(|i| {
            tick(
                i + 1,
                start + i as i64 * 10_000,
                (i % 6) as f64,
                (i * 1000) as f64,
            )
        })
        .collect();
    for b in batch.chunks(100) {
        s.ingest("n1", b).unwrap();
    }
    start
}

#[test]
fn complete_buckets_roll_up_once_into_minutes_and_hours() {
    let tmp = tempfile::tempdir().unwrap();
    let s = TelemetryStore::open(&tmp.path().join("t.redb")).unwrap();
    let start = three_hours(&s);
    let keep = Retention::default();
    let m = s.maintain(start + 3 * 3_600_000, &keep, true).unwrap();
    let minute = s
        .series_in(Tier::Minute, &[], Some("node_load1"), 0)
        .unwrap();
    // The bucket holding the newest tick may still grow: 179 complete minutes.
    assert_eq!(minute[0].samples.len(), 179);
    // Six ticks a minute, load 0..5: the average is 2.5.
    assert!(
        minute[0].samples.iter().all(|(_, v)| *v == 2.5),
        "{:?}",
        &minute[0].samples[..3]
    );
    assert_eq!(minute[0].samples[1].0 - minute[0].samples[0].0, 60_000);
    let bytes = s
        .series_in(
            Tier::Minute,
            &[],
            Some("node_network_receive_bytes_total"),
            0,
        )
        .unwrap();
    // A counter keeps its last value in each minute.
    assert_eq!(bytes[0].samples[0], (start, 5000.0));
    let hour = s.series_in(Tier::Hour, &[], Some("node_load1"), 0).unwrap();
    assert_eq!(hour[0].samples, [(start, 2.5), (start + 3_600_000, 2.5)]);
    assert_eq!(m.rolled_up, 2 * (179 + 2));
    // Again: nothing new.
    assert_eq!(
        s.maintain(start + 3 * 3_600_000, &keep, true)
            .unwrap()
            .rolled_up,
        0
    );
}

#[test]
fn old_samples_and_lines_go_by_age_but_raw_waits_for_its_rollup() {
    let tmp = tempfile::tempdir().unwrap();
    let s = TelemetryStore::open(&tmp.path().join("t.redb")).unwrap();
    let start = three_hours(&s);
    s.ingest("n1", &[log(2000, start, "app", "old line")])
        .unwrap();
    let raw_before = s.series(&[], Some("node_load1"), 0).unwrap()[0]
        .samples
        .len();
    assert_eq!(raw_before, 1080);
    // Ten days on: the raw samples are past their 7 days, but those after the last
    // complete hour are not in the hour tier yet, so their chunk stays.
    let now = start + 10 * 86_400_000;
    let m = s.maintain(now, &Retention::default(), true).unwrap();
    assert!(m.removed > 0);
    let raw = s.series(&[], Some("node_load1"), 0).unwrap();
    let kept = &raw[0].samples;
    assert!(kept.len() < raw_before, "{}", kept.len());
    assert!(
        kept.last().unwrap().0 == start + 1079 * 10_000,
        "the newest stay"
    );
    assert!(
        kept.first().unwrap().0 <= start + 2 * 3_600_000,
        "what the hours lack stays"
    );
    // Lines are kept 30 days.
    assert_eq!(s.logs(&LogQuery::default(), &|_| true).unwrap().len(), 1);
    s.maintain(start + 31 * 86_400_000, &Retention::default(), true)
        .unwrap();
    assert!(s.logs(&LogQuery::default(), &|_| true).unwrap().is_empty());
    // The minute points outlive the raw samples.
    let minute = s
        .series_in(Tier::Minute, &[], Some("node_load1"), 0)
        .unwrap();
    assert_eq!(minute[0].samples.len(), 179);
}

#[test]
fn beyond_its_size_the_store_sheds_its_oldest_first() {
    let tmp = tempfile::tempdir().unwrap();
    let s = TelemetryStore::open(&tmp.path().join("t.redb")).unwrap();
    let start = three_hours(&s);
    for i in 0..50u64 {
        s.ingest(
            "n1",
            &[log(5000 + i, start + i as i64, "app", &"x".repeat(2000))],
        )
        .unwrap();
    }
    let before = s.stored_bytes().unwrap();
    let keep = Retention {
        max_mib: 0,
        ..Retention::default()
    };
    let m = s.maintain(start + 3 * 3_600_000, &keep, true).unwrap();
    assert!(m.stored_bytes < before, "{} of {before}", m.stored_bytes);
    // Each series keeps its newest chunk, with the newest samples.
    let raw = s.series(&[], Some("node_load1"), 0).unwrap();
    assert_eq!(raw[0].samples.last().unwrap().0, start + 1079 * 10_000);
    assert!(s.logs(&LogQuery::default(), &|_| true).unwrap().is_empty());
}

#[test]
fn the_newest_lines_come_from_the_newest_blocks_however_their_lines_interleave() {
    let tmp = tempfile::tempdir().unwrap();
    let s = TelemetryStore::open(&tmp.path().join("t.redb")).unwrap();
    // Old blocks first, then one from n1 whose lines span a long backlog, and one
    // from n2 in the middle of it.
    for i in 0..50u64 {
        s.ingest("n1", &[log(i + 1, i as i64, "app", &format!("old {i}"))])
            .unwrap();
    }
    s.ingest(
        "n1",
        &[
            log(100, 100, "app", "backlog"),
            log(101, 900, "app", "n1 new"),
        ],
    )
    .unwrap();
    s.ingest(
        "n2",
        &[log(1, 800, "app", "n2 new"), log(2, 850, "db", "n2 other")],
    )
    .unwrap();
    let q = LogQuery {
        limit: Some(2),
        ..LogQuery::default()
    };
    let text = |v: Vec<NodeLine>| v.into_iter().map(|l| l.line).collect::<Vec<_>>();
    assert_eq!(text(s.logs(&q, &|_| true).unwrap()), ["n2 other", "n1 new"]);
    let only_new = |l: &LogLine| l.line.contains("new");
    assert_eq!(text(s.logs(&q, &only_new).unwrap()), ["n2 new", "n1 new"]);
    let q = LogQuery {
        limit: Some(3),
        source: Some("app".into()),
        ..LogQuery::default()
    };
    assert_eq!(
        text(s.logs(&q, &|_| true).unwrap()),
        ["backlog", "n2 new", "n1 new"]
    );
}
