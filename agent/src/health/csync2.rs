//! csync2 on the node: the listener answering, files changed on disk and not yet sent
//! (`-cr` first: `-M` and `-T` read csync2's database, not the disk), when a sync last
//! succeeded, and the copies csync2 kept where it overwrote a file.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use clustermgr_protocol::health::{
    CSYNC2_PORT as PORT, CSYNC2_SYNCED_STAMP, Csync2State, Dirty, KeptCopy,
};

/// Where the generated configuration has csync2 keep what it overwrites.
pub const BACKUPS: &str = "/var/backups/csync2";
const CSYNC2: &str = "/usr/sbin/csync2";
/// What a kept copy must be younger than to be reported.
const KEPT_FOR: Duration = Duration::from_secs(24 * 3600);

/// The node's csync2 (its `-N` name is `name`), everything done by `deadline`.
pub fn state(root: &Path, name: &str, deadline: Instant) -> Csync2State {
    if !root.join("etc/csync2.cfg").exists() {
        return Csync2State {
            configured: false,
            listener: Err("not configured".into()),
            dirty: Vec::new(),
            dirty_total: 0,
            last_sync_ms: None,
            kept: Vec::new(),
            error: None,
        };
    }
    // Where `csync2 -N NAME` binds: the address NAME resolves to (the managed
    // `/etc/hosts` block names every node).
    let listener = super::connect(name, PORT, Duration::from_secs(1))
        .map(drop)
        .map_err(|e| format!("csync2 on {name}:{PORT}: {e}"));
    let (dirty, dirty_total, error) = match dirty(root, name, deadline) {
        Ok((d, n)) => (d, n, None),
        Err(e) => (Vec::new(), 0, Some(e)),
    };
    Csync2State {
        configured: true,
        listener,
        dirty,
        dirty_total,
        last_sync_ms: std::fs::metadata(root.join(CSYNC2_SYNCED_STAMP.trim_start_matches('/')))
            .and_then(|m| m.modified())
            .ok()
            .map(unix_ms),
        kept: kept(&root.join(BACKUPS.trim_start_matches('/'))),
        error,
    }
}

fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Marks what changed on disk dirty, then lists the dirty entries.
fn dirty(root: &Path, name: &str, deadline: Instant) -> Result<(Vec<Dirty>, u32), String> {
    let (code, out, err) = csync2(root, &["-N", name, "-cr", "/"], deadline)?;
    if code != 0 {
        return Err(format!(
            "`csync2 -cr /` failed (exit status {code}): {}",
            said(&out, &err)
        ));
    }
    let (code, out, err) = csync2(root, &["-N", name, "-M"], deadline)?;
    // -M exits 2 when nothing is dirty, 0 when it listed something, 1 on an error.
    match code {
        2 => Ok((Vec::new(), 0)),
        0 => Ok(parse_dirty(&out)),
        c => Err(format!(
            "`csync2 -M` failed (exit status {c}): {}",
            said(&out, &err)
        )),
    }
}

/// What csync2 said about a failure: it prints some (a stale `csync2.lock`) on stdout.
fn said(out: &str, err: &str) -> String {
    let text = if err.trim().is_empty() { out } else { err };
    text.trim().chars().take(300).collect()
}

/// `-M`'s lines, one per file and peer: `chary|force <TAB> me <TAB> peer <TAB> file`.
/// The entries shown, and how many files are dirty.
fn parse_dirty(out: &str) -> (Vec<Dirty>, u32) {
    let mut shown = Vec::new();
    let mut files = std::collections::HashSet::new();
    for line in out.lines() {
        let f: Vec<&str> = line.split('\t').collect();
        let [_, _, peer, path] = f.as_slice() else {
            continue;
        };
        files.insert(*path);
        if shown.len() < Csync2State::DIRTY_SHOWN {
            shown.push(Dirty {
                peer: peer.to_string(),
                path: path.to_string(),
            });
        }
    }
    (shown, files.len() as u32)
}

/// Runs csync2 on the configuration and database below `root` (a sandbox's under
/// `clustermgr dev`), killed at `deadline`: its exit code, stdout and stderr.
fn csync2(root: &Path, args: &[&str], deadline: Instant) -> Result<(i32, String, String), String> {
    let timeout = deadline.saturating_duration_since(Instant::now());
    if timeout < Duration::from_millis(100) {
        return Err(format!(
            "no time was left in the round for `csync2 {}`",
            args.join(" ")
        ));
    }
    let mut cmd = Command::new(CSYNC2);
    if root != Path::new("/") {
        cmd.env("CSYNC2_SYSTEM_DIR", root.join("etc"))
            .arg("-D")
            .arg(root.join("var/lib/csync2"));
    }
    let child = cmd
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot run {CSYNC2}: {e}"))?;
    let out = crate::sys::wait_or_kill(child, timeout, |c| c.wait_with_output())
        .ok_or_else(|| {
            format!(
                "`csync2 {}` did not finish within {} ms (its database busy with a sync, or the replicated trees slow to walk)",
                args.join(" "),
                timeout.as_millis()
            )
        })?
        .map_err(|e| format!("csync2: {e}"))?;
    Ok((
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// The copies in the backup directory younger than a day, newest first.
fn kept(dir: &Path) -> Vec<KeptCopy> {
    let since = SystemTime::now() - KEPT_FOR;
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    // Bounded: a backup tree of many thousands of files is read no further.
    let mut budget = 10_000usize;
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            budget = budget.saturating_sub(1);
            if budget == 0 {
                break;
            }
            let Ok(meta) = e.metadata() else { continue };
            if meta.is_dir() {
                stack.push(e.path());
            } else if let Ok(t) = meta.modified()
                && t >= since
            {
                found.push(KeptCopy {
                    path: e.path().display().to_string(),
                    time_ms: unix_ms(t),
                });
            }
        }
    }
    found.sort_by_key(|k| std::cmp::Reverse(k.time_ms));
    found.truncate(Csync2State::DIRTY_SHOWN);
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dirty_lines_parse_and_the_rest_is_skipped() {
        let out = "chary\tgluu1\tgluu2\t/opt/a\nforce\tgluu1\tgluu3\t/opt/b c\nchary\tgluu1\tgluu3\t/opt/a\nnoise\n";
        let (d, n) = parse_dirty(out);
        assert_eq!(n, 2, "two files, one of them for two peers");
        assert_eq!(
            d,
            vec![
                Dirty {
                    peer: "gluu2".into(),
                    path: "/opt/a".into()
                },
                Dirty {
                    peer: "gluu3".into(),
                    path: "/opt/b c".into()
                },
                Dirty {
                    peer: "gluu3".into(),
                    path: "/opt/a".into()
                }
            ]
        );
    }

    #[test]
    fn kept_copies_are_the_recent_ones_newest_first() {
        let t = tempfile::tempdir().unwrap();
        let sub = t.path().join("opt");
        std::fs::create_dir_all(&sub).unwrap();
        let old = sub.join("old.1");
        std::fs::write(&old, "x").unwrap();
        let f = std::fs::File::options().write(true).open(&old).unwrap();
        f.set_modified(SystemTime::now() - Duration::from_secs(2 * 24 * 3600))
            .unwrap();
        let (a, b) = (sub.join("a.1"), t.path().join("b.1"));
        std::fs::write(&a, "x").unwrap();
        std::fs::write(&b, "x").unwrap();
        let f = std::fs::File::options().write(true).open(&a).unwrap();
        f.set_modified(SystemTime::now() - Duration::from_secs(60))
            .unwrap();
        let got: Vec<String> = kept(t.path()).into_iter().map(|k| k.path).collect();
        assert_eq!(got, vec![b.display().to_string(), a.display().to_string()]);
        assert!(kept(&t.path().join("missing")).is_empty());
    }
}
