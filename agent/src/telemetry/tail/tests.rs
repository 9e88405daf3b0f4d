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
