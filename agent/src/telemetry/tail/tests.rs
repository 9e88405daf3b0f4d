//! Following files through everything logrotate and Java do to them.

use std::io::Write;

use super::*;

struct T {
    _dir: tempfile::TempDir,
    path: PathBuf,
    f: Follower,
    got: Vec<String>,
}

impl T {
    fn new() -> T {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.log");
        std::fs::write(&path, "before the agent\n").unwrap();
        let f = Follower::new(
            Source {
                name: "app".into(),
                path: path.clone(),
            },
            None,
            false,
        );
        T {
            _dir: dir,
            path,
            f,
            got: Vec::new(),
        }
    }

    fn write(&self, text: &str) {
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(&self.path)
            .unwrap();
        f.write_all(text.as_bytes()).unwrap();
    }

    /// Writes `TAG N` lines for `range`, and expects them.
    fn lines(&self, tag: &str, range: std::ops::Range<usize>, want: &mut Vec<String>) {
        for i in range {
            self.write(&format!("{tag} {i:03}\n"));
            want.push(format!("{tag} {i:03}"));
        }
    }

    /// Truncates the file in place, as copytruncate does.
    fn truncate(&self) {
        std::fs::OpenOptions::new()
            .write(true)
            .open(&self.path)
            .unwrap()
            .set_len(0)
            .unwrap();
    }

    /// Polls as if time had passed beyond the hold.
    fn poll(&mut self) {
        let later = Instant::now() + HOLD * 2;
        let got = &mut self.got;
        self.f.poll(later, &mut |l| got.push(l));
    }
}

#[test]
fn new_lines_come_partial_ones_wait_and_old_ones_are_not_replayed() {
    let mut t = T::new();
    t.write("one\ntw");
    t.poll();
    assert_eq!(t.got, ["one"]);
    t.write("o\r\nthree\n");
    t.poll();
    assert_eq!(t.got, ["one", "two", "three"]);
}

#[test]
fn a_stack_trace_is_one_record_with_its_line() {
    let mut t = T::new();
    t.write(
        "ERROR boom\njava.lang.IllegalStateException: x\n\tat a.B.c(B.java:1)\n\tat a.B.d(B.java:2)\nCaused by: java.io.IOException\n\t... 3 more\nINFO next\n",
    );
    t.poll();
    assert_eq!(t.got.len(), 2, "{:?}", t.got);
    assert_eq!(t.got[0].lines().count(), 6, "{:?}", t.got[0]);
    assert!(t.got[0].starts_with("ERROR boom\njava.lang"));
    assert_eq!(t.got[1], "INFO next");
    assert!(!exception_header("INFO: the Error was fine"));
}

#[test]
fn rotation_by_rename_loses_and_repeats_nothing() {
    let mut t = T::new();
    let mut want = Vec::new();
    for i in 0..100 {
        t.write(&format!("line {i}\n"));
        want.push(format!("line {i}"));
        if i == 40 {
            t.poll();
        }
        if i == 60 {
            // Rotated between polls, with lines written to the old file after the
            // last poll and before the rename.
            std::fs::rename(&t.path, t.path.with_extension("log.1")).unwrap();
        }
    }
    t.poll();
    assert_eq!(t.got, want);
}

#[test]
fn copytruncate_with_the_writer_paused_loses_and_repeats_nothing() {
    let mut t = T::new();
    let mut want = Vec::new();
    t.lines("line", 0..50, &mut want);
    t.poll();
    std::fs::copy(&t.path, t.path.with_extension("log.1")).unwrap();
    t.truncate();
    t.poll();
    t.lines("line", 50..60, &mut want);
    t.poll();
    assert_eq!(t.got, want);
}

#[test]
fn an_absurd_line_is_cut_with_a_marker_and_the_next_is_whole() {
    let mut t = T::new();
    t.write(&"x".repeat(MAX_LINE * 3 + 5));
    t.poll();
    t.write("\nafter\n");
    t.poll();
    assert_eq!(t.got.len(), 2);
    assert!(t.got[0].starts_with(&"x".repeat(MAX_LINE)));
    assert!(
        t.got[0].ends_with(&format!(
            " [clustermgr: {} more bytes cut]",
            MAX_LINE * 2 + 5
        )),
        "{}",
        &t.got[0][MAX_LINE..]
    );
    assert_eq!(t.got[1], "after");
}

#[test]
fn a_restart_resumes_at_the_first_line_not_emitted() {
    let mut t = T::new();
    t.write("a\nb\n");
    t.poll();
    t.write("c\n");
    // Polled before the hold ends: "c" is read but held, so not yet consumed.
    let got = &mut t.got;
    t.f.poll(Instant::now(), &mut |l| got.push(l));
    assert_eq!(t.got, ["a", "b"]);
    let pos = t.f.position();
    let mut again = Follower::new(t.f.source.clone(), pos, false);
    let mut more = Vec::new();
    again.poll(Instant::now() + HOLD * 2, &mut |l| more.push(l));
    assert_eq!(more, ["c"]);
}

#[test]
fn a_file_that_appears_later_is_read_from_its_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("later.log");
    let mut f = Follower::new(
        Source {
            name: "later".into(),
            path: path.clone(),
        },
        None,
        false,
    );
    let mut got = Vec::new();
    f.poll(Instant::now(), &mut |l| got.push(l));
    std::fs::write(&path, "first\n").unwrap();
    f.poll(Instant::now() + HOLD * 2, &mut |l| got.push(l));
    f.poll(Instant::now() + HOLD * 4, &mut |l| got.push(l));
    assert_eq!(got, ["first"]);
}

#[test]
fn a_truncation_hidden_by_new_writes_between_two_looks_is_still_seen() {
    let mut t = T::new();
    let mut want = Vec::new();
    t.lines("old", 0..10, &mut want);
    t.poll();
    // Truncated and written back to more than it was before the next look.
    t.truncate();
    t.lines("new", 0..12, &mut want);
    t.poll();
    assert_eq!(t.got, want);
}

#[test]
fn a_planted_link_is_refused_once_and_the_real_file_is_followed_when_it_returns() {
    let mut t = T::new();
    let dir = t.path.parent().unwrap().to_path_buf();
    std::os::unix::fs::chown(&dir, Some(4242), Some(4242)).expect("tests run as root");
    // The service account replaces its log with a link to a root-only file.
    std::fs::remove_file(&t.path).unwrap();
    let secret = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(secret.path(), "root:secret-hash\n").unwrap();
    std::os::unix::fs::symlink(secret.path(), &t.path).unwrap();
    std::os::unix::fs::lchown(&t.path, Some(4242), Some(4242)).unwrap();
    for _ in 0..3 {
        t.poll();
    }
    assert_eq!(t.got.len(), 1, "said once, not per look: {:?}", t.got);
    assert!(t.got[0].contains("not following this log"), "{:?}", t.got);
    assert!(!t.got.concat().contains("secret-hash"));
    // A real file again: followed from its start.
    std::fs::remove_file(&t.path).unwrap();
    t.write("back\n");
    t.poll();
    assert_eq!(t.got.last().map(String::as_str), Some("back"));
}

#[test]
fn one_look_reads_a_bounded_amount_and_asks_to_come_back() {
    let mut t = T::new();
    let line = "x".repeat(1023);
    let n = 3 * (READ_PER_POLL as usize) / 1024;
    t.write(&format!("{line}\n").repeat(n));
    let mut looks = 0;
    loop {
        looks += 1;
        let got = &mut t.got;
        let due = t.f.poll(Instant::now() + HOLD * 2, &mut |l| got.push(l));
        if due.is_none() && !t.f.holds_line_due(Instant::now()) {
            break;
        }
        assert!(looks < 10, "never caught up");
    }
    assert!(looks >= 3, "{looks} looks for {n} KiB");
    assert_eq!(t.got.len(), n);
}
