//! The spool's numbering, bounds, recovery and corruption handling.

use super::*;

fn log(i: u64) -> Body {
    Body::Log {
        source: "test".into(),
        line: format!("line {i} {}", "x".repeat(100)),
    }
}

fn fill(spool: &mut Spool, n: u64) {
    for i in 0..n {
        spool.append(i as i64, log(i)).unwrap();
    }
    spool.flush().unwrap();
}

fn drain(r: &mut Reader) -> Vec<Record> {
    std::iter::from_fn(|| r.next_record()).collect()
}

fn seqs(recs: &[Record]) -> Vec<u64> {
    recs.iter().map(|r| r.seq).collect()
}

#[test]
fn records_come_back_in_order_from_any_point_and_across_segments() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut s, problems) = Spool::open(tmp.path(), 1 << 20).unwrap();
    assert!(problems.is_empty());
    fill(&mut s, 3000);
    assert!(list(tmp.path()).unwrap().len() > 3, "several segments");
    let all = drain(&mut s.reader(0));
    assert_eq!(seqs(&all), (1..=3000).collect::<Vec<_>>());
    assert_eq!(all[41].body, log(41));
    assert_eq!(
        seqs(&drain(&mut s.reader(2990))),
        (2991..=3000).collect::<Vec<_>>()
    );
    // A reader at the end waits, then sees what comes next.
    let mut r = s.reader(3000);
    assert!(r.next_record().is_none());
    fill(&mut s, 2);
    assert_eq!(seqs(&drain(&mut r)), [3001, 3002]);
}

#[test]
fn a_reader_never_sees_what_is_not_flushed_nor_misses_a_rotation() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut s, _) = Spool::open(tmp.path(), 1 << 20).unwrap();
    let mut r = s.reader(0);
    let mut got = Vec::new();
    for round in 0..200 {
        for i in 0..7 {
            s.append(0, log(round * 7 + i)).unwrap();
        }
        // Half the time the reader looks before the flush.
        if round % 2 == 0 {
            got.extend(drain(&mut r));
        }
        s.flush().unwrap();
        got.extend(drain(&mut r));
    }
    assert_eq!(seqs(&got), (1..=1400).collect::<Vec<_>>());
}

#[test]
fn numbering_survives_a_restart_a_torn_tail_and_a_full_release() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut s, _) = Spool::open(tmp.path(), 1 << 20).unwrap();
    fill(&mut s, 500);
    s.release_through(500);
    assert_eq!(
        list(tmp.path()).unwrap().len(),
        1,
        "the newest segment stays"
    );
    drop(s);
    // A crash mid-record leaves half a frame at the end.
    let (last, _) = *list(tmp.path()).unwrap().last().unwrap();
    let path = tmp.path().join(segment_name(last));
    let mut f = OpenOptions::new().append(true).open(&path).unwrap();
    f.write_all(&[40, 0, 0, 0, 1, 2]).unwrap();
    drop(f);
    let (mut s, problems) = Spool::open(tmp.path(), 1 << 20).unwrap();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(s.next_seq(), 501);
    fill(&mut s, 2);
    assert_eq!(seqs(&drain(&mut s.reader(500))), [501, 502]);
}

#[test]
fn a_full_spool_drops_its_oldest_and_says_how_many() {
    let tmp = tempfile::tempdir().unwrap();
    let max = 256 * 1024;
    let (mut s, _) = Spool::open(tmp.path(), max).unwrap();
    fill(&mut s, 20_000);
    let on_disk: u64 = list(tmp.path()).unwrap().iter().map(|(_, b)| b).sum();
    assert!(on_disk <= max, "{on_disk} bytes");
    let got = drain(&mut s.reader(0));
    let Body::Gap { lost, why } = &got[0].body else {
        panic!("{:?}", got[0]);
    };
    assert!(why.contains("full"), "{why}");
    // Every number is accounted for, once.
    assert_eq!(lost + got.len() as u64 - 1, 20_000);
    assert_eq!(got[1].seq, lost + 1);
    assert_eq!(got.last().unwrap().seq, 20_000);
}

#[test]
fn a_corrupt_segment_is_moved_aside_and_read_as_a_gap() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut s, _) = Spool::open(tmp.path(), 1 << 20).unwrap();
    fill(&mut s, 3000);
    let segs = list(tmp.path()).unwrap();
    let (bad, _) = segs[1];
    let path = tmp.path().join(segment_name(bad));
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&path, bytes).unwrap();
    let got = drain(&mut s.reader(0));
    let gaps: Vec<&Record> = got
        .iter()
        .filter(|r| matches!(r.body, Body::Gap { .. }))
        .collect();
    assert_eq!(gaps.len(), 1, "{gaps:?}");
    let Body::Gap { lost, why } = &gaps[0].body else {
        unreachable!()
    };
    assert!(why.contains("corrupt"), "{why}");
    assert_eq!(got.len() as u64 - 1 + lost, 3000);
    assert_eq!(got.last().unwrap().seq, 3000);
    assert!(tmp.path().join("corrupt").join(segment_name(bad)).exists());
    assert!(!path.exists());
    // The writer keeps going.
    fill(&mut s, 1);
    assert_eq!(seqs(&drain(&mut s.reader(3000))), [3001]);
}

#[test]
fn a_controller_ahead_of_a_wiped_spool_moves_the_numbering_on() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut s, _) = Spool::open(tmp.path(), 1 << 20).unwrap();
    fill(&mut s, 3);
    s.skip_to(1000).unwrap();
    fill(&mut s, 2);
    assert_eq!(seqs(&drain(&mut s.reader(1000))), [1001, 1002]);
    drop(s);
    let (s, _) = Spool::open(tmp.path(), 1 << 20).unwrap();
    assert_eq!(s.next_seq(), 1003);
}
