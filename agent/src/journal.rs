//! The agent's journal of every command it runs: one JSON line when it starts and one
//! when it ends, appended to `state_dir/exec-journal.jsonl`; and beside it the commands
//! still running (`exec-running.jsonl`, a line when one starts and one when it ends,
//! emptied whenever none runs), so that an agent restarted after a crash or a SIGKILL
//! ends the process groups its previous life left, and journals them `interrupted`.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// An append-only journal file, and the set of commands running now.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    lock: Mutex<()>,
    running_path: PathBuf,
    /// The commands running now, and the open running-commands file.
    running: Mutex<(BTreeMap<u32, Running>, Option<RunningFile>)>,
}

/// The running-commands file, open for appending, and how long it is.
#[derive(Debug)]
struct RunningFile {
    file: std::fs::File,
    len: u64,
}

/// How long the running-commands file may grow before the first moment nothing runs
/// empties it (about 200 starts and ends).
const RUNNING_RESTART: u64 = 64 * 1024;

/// A line of the running-commands file: a command that started (`run`), or the end
/// of `pid`'s (`run` absent).
#[derive(Serialize, Deserialize)]
struct RunningLine {
    pid: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    run: Option<Running>,
}

/// The running-commands file of agents before 0.1's append-only one: a whole map,
/// rewritten at each start and end. Read once, at start, so an upgrade in the middle
/// of a command still ends it.
const LEGACY_RUNNING: &str = "exec-running.json";

/// A command running now, as the next life of the agent needs it: enough to tell its
/// process group from a later one that reuses the number.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Running {
    /// The kernel's boot, from `/proc/sys/kernel/random/boot_id`: after a reboot no
    /// group of this boot can be the command's.
    boot_id: String,
    /// When the group's leader started, in clock ticks since boot (`/proc/PID/stat`).
    start_ticks: u64,
    command: String,
    requested_by: String,
    controller: String,
}

/// One journal line.
#[derive(Serialize)]
pub struct Entry<'a> {
    /// Unix milliseconds.
    pub time_ms: i64,
    /// `start` or `finish`.
    pub event: &'a str,
    /// The controller's cluster identity from its Hello.
    pub controller: &'a str,
    /// Who asked, as the controller reported it.
    pub requested_by: &'a str,
    /// The command line.
    pub command: &'a str,
    /// Process id, once started.
    pub pid: Option<u32>,
    /// Exit code, at finish.
    pub exit_code: Option<i32>,
    /// Signal, at finish.
    pub signal: Option<i32>,
    /// Whether it timed out, at finish.
    pub timed_out: bool,
    /// Whether it was cancelled, at finish.
    pub cancelled: bool,
    /// Why it was refused, if it was.
    pub refused: Option<&'a str>,
}

impl Journal {
    /// The journal in `state_dir` (created on first write). Process groups a previous
    /// life of the agent left running are killed first, and journaled `interrupted`.
    pub fn open(state_dir: &Path) -> Self {
        let journal = Journal {
            path: state_dir.join("exec-journal.jsonl"),
            lock: Mutex::new(()),
            running_path: state_dir.join("exec-running.jsonl"),
            running: Mutex::new((BTreeMap::new(), None)),
        };
        journal.end_previous_life();
        journal
    }

    /// Notes that `pid` (the leader of its own process group) runs `entry`'s command.
    pub fn started(&self, pid: u32, entry: &Entry<'_>) {
        let (Some(boot_id), Some((_, start_ticks))) = (boot_id(), proc_stat(pid)) else {
            return;
        };
        let run = Running {
            boot_id,
            start_ticks,
            command: entry.command.to_string(),
            requested_by: entry.requested_by.to_string(),
            controller: entry.controller.to_string(),
        };
        let mut guard = self.running.lock().unwrap_or_else(|p| p.into_inner());
        let (running, file) = &mut *guard;
        let line = RunningLine {
            pid,
            run: Some(run.clone()),
        };
        running.insert(pid, run);
        self.append_running(file, &line);
    }

    /// Notes that `pid`'s command has ended (its end is journaled by the caller).
    pub fn finished(&self, pid: u32) {
        let mut guard = self.running.lock().unwrap_or_else(|p| p.into_inner());
        let (running, file) = &mut *guard;
        if running.remove(&pid).is_none() {
            return;
        }
        if running.is_empty() && file.as_ref().is_some_and(|f| f.len >= RUNNING_RESTART) {
            // Nothing runs: the file starts over, so it never grows much past the
            // commands of one busy spell. Not at every idle moment: a truncation costs
            // the file system more than an append (with commands one after another,
            // it was a sixth of the agent's CPU in a fan-out).
            if let Some(f) = file.as_mut()
                && f.file.set_len(0).is_ok()
            {
                f.len = 0;
                return;
            }
        }
        self.append_running(file, &RunningLine { pid, run: None });
    }

    /// Appends a line to the running-commands file, opening it the first time (never
    /// through a link: the agent reads it back as root). One write of a whole line
    /// to a file opened for appending: a kill leaves it written or not. Not synced: a
    /// power loss ends the commands as well.
    fn append_running(&self, file: &mut Option<RunningFile>, line: &RunningLine) {
        let res = (|| -> std::io::Result<()> {
            let mut text = serde_json::to_vec(line).map_err(std::io::Error::other)?;
            text.push(b'\n');
            if file.is_none() {
                let f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .mode(0o600)
                    .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                    .open(&self.running_path)?;
                let len = f.metadata()?.len();
                *file = Some(RunningFile { file: f, len });
            }
            let f = file.as_mut().expect("opened above");
            f.file.write_all(&text)?;
            f.len += text.len() as u64;
            Ok(())
        })();
        if let Err(e) = res {
            // Opened afresh at the next command.
            *file = None;
            tracing::warn!(
                "cannot record the running commands in {}: {e}; a crash of the agent would leave them running",
                self.running_path.display()
            );
        }
    }

    /// Kills each process group the previous life left, if it is still that group: a
    /// member started no earlier than its leader did and before this agent started (a
    /// group made since, reusing the number, is not touched).
    fn end_previous_life(&self) {
        let mut left: BTreeMap<u32, Running> = BTreeMap::new();
        let dir = self.running_path.parent().unwrap_or(Path::new("."));
        if let Some(text) = read_nofollow(&dir.join(LEGACY_RUNNING)) {
            left = serde_json::from_slice(&text).unwrap_or_default();
            let _ = std::fs::remove_file(dir.join(LEGACY_RUNNING));
        }
        if let Some(text) = read_nofollow(&self.running_path) {
            // A line cut short by a full disk is skipped; the rest still count.
            for line in text.split(|&b| b == b'\n') {
                match serde_json::from_slice::<RunningLine>(line) {
                    Ok(RunningLine { pid, run: Some(r) }) => {
                        left.insert(pid, r);
                    }
                    Ok(RunningLine { pid, run: None }) => {
                        left.remove(&pid);
                    }
                    Err(_) => {}
                }
            }
        }
        let _ = std::fs::remove_file(&self.running_path);
        if left.is_empty() {
            return;
        }
        let boot = boot_id();
        let me = proc_stat(std::process::id()).map_or(u64::MAX, |(_, t)| t);
        let members = process_groups();
        for (pid, r) in &left {
            let alive = boot.as_deref() == Some(r.boot_id.as_str())
                && members
                    .get(pid)
                    .is_some_and(|starts| starts.iter().any(|&t| t >= r.start_ticks && t <= me));
            if alive {
                crate::sys::kill_process_group(*pid);
            }
            tracing::warn!(
                "the command {:?} (process group {pid}) was running when the agent stopped; {}",
                r.command,
                if alive {
                    "its process group was killed"
                } else {
                    "it had ended"
                }
            );
            self.record(&Entry {
                time_ms: now_ms(),
                event: "interrupted",
                controller: &r.controller,
                requested_by: &r.requested_by,
                command: &r.command,
                pid: Some(*pid),
                exit_code: None,
                signal: alive.then_some(libc::SIGKILL),
                timed_out: false,
                cancelled: false,
                refused: None,
            });
        }
    }

    /// Appends an entry; a journal that cannot be written is logged, not fatal, so a
    /// full disk does not stop the agent from serving.
    pub fn record(&self, entry: &Entry<'_>) {
        let line = match serde_json::to_string(entry) {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!("cannot encode journal entry: {e}");
                return;
            }
        };
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let res = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .and_then(|mut f| writeln!(f, "{line}"));
        if let Err(e) = res {
            tracing::warn!("cannot append to the journal {}: {e}", self.path.display());
        }
    }
}

/// A file's bytes, never through a link (the agent reads these as root); `None` if
/// it is not there or cannot be read.
fn read_nofollow(path: &Path) -> Option<Vec<u8>> {
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .ok()?;
    let mut text = Vec::new();
    std::io::Read::read_to_end(&mut f, &mut text).ok()?;
    Some(text)
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// This boot's id.
fn boot_id() -> Option<String> {
    // Read once: it is this boot's for as long as the agent runs, and every command
    // started asked for it.
    static BOOT_ID: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    BOOT_ID
        .get_or_init(|| {
            std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
                .ok()
                .map(|s| s.trim().to_string())
        })
        .clone()
}

/// A process's group and start time (clock ticks since boot), from `/proc/PID/stat`.
fn proc_stat(pid: u32) -> Option<(u32, u64)> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// `pid (comm) state ppid pgrp ... starttime ...`: the name may hold spaces and
/// parentheses, so the fields are counted from its last `)`.
fn parse_stat(stat: &str) -> Option<(u32, u64)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Field 3 (state) is fields[0]: pgrp is field 5, starttime field 22.
    Some((fields.get(2)?.parse().ok()?, fields.get(19)?.parse().ok()?))
}

/// Every process group now, with its members' start times.
fn process_groups() -> BTreeMap<u32, Vec<u64>> {
    let mut out = BTreeMap::<u32, Vec<u64>>::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        if let Some((group, start)) = proc_stat(pid) {
            out.entry(group).or_default().push(start);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_from_the_last_parenthesis() {
        let stat =
            "4242 (a (b) c) S 1 4240 4240 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 200";
        assert_eq!(parse_stat(stat), Some((4240, 987654)));
        assert_eq!(parse_stat("4242 (x) S 1"), None);
    }

    fn entry<'a>(event: &'a str, command: &'a str) -> Entry<'a> {
        Entry {
            time_ms: now_ms(),
            event,
            controller: "test",
            requested_by: "tester",
            command,
            pid: None,
            exit_code: None,
            signal: None,
            timed_out: false,
            cancelled: false,
            refused: None,
        }
    }

    fn journaled(dir: &Path) -> Vec<serde_json::Value> {
        std::fs::read_to_string(dir.join("exec-journal.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn the_running_set_is_appended_emptied_when_idle_past_its_bound_and_ended_by_the_next_life() {
        use std::os::unix::process::CommandExt;
        let dir = tempfile::tempdir().unwrap();
        let running = dir.path().join("exec-running.jsonl");
        let sleeper = |secs: &str| {
            std::process::Command::new("sleep")
                .arg(secs)
                .process_group(0)
                .spawn()
                .unwrap()
        };
        let j = Journal::open(dir.path());
        let (mut a, mut b) = (sleeper("30"), sleeper("31"));
        j.started(a.id(), &entry("start", "sleep 30"));
        j.started(b.id(), &entry("start", "sleep 31"));
        j.finished(a.id());
        // Two starts and an end, appended.
        let text = std::fs::read_to_string(&running).unwrap();
        assert_eq!(text.lines().count(), 3, "{text}");
        j.finished(b.id());
        // Nothing runs, but the file is short: appended to, not emptied.
        assert_eq!(
            std::fs::read_to_string(&running).unwrap().lines().count(),
            4
        );
        // Past its bound, the first moment nothing runs empties it.
        let mut n = 0;
        while std::fs::metadata(&running).unwrap().len() > 0 {
            j.started(b.id(), &entry("start", "sleep 31"));
            j.finished(b.id());
            n += 1;
            assert!(n < 1000, "the running-commands file is never emptied");
        }
        assert!(n > 50, "emptied after {n} commands");
        j.started(b.id(), &entry("start", "sleep 31"));
        // The agent dies here; its next life finds b's command, not a's (which
        // ended). (This process started before the sleepers, so as the "next life"
        // it leaves their groups alone: only groups older than the agent are killed.
        // The end-to-end test kills a real agent and sees its group killed.)
        drop(j);
        let _ = Journal::open(dir.path());
        let interrupted: Vec<_> = journaled(dir.path())
            .into_iter()
            .filter(|e| e["event"] == "interrupted")
            .collect();
        assert_eq!(interrupted.len(), 1, "{interrupted:?}");
        assert_eq!(interrupted[0]["pid"], b.id());
        assert_eq!(interrupted[0]["command"], "sleep 31");
        assert!(!running.exists());
        for c in [&mut a, &mut b] {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    #[test]
    fn an_older_agents_running_map_is_read_once() {
        use std::os::unix::process::CommandExt;
        let dir = tempfile::tempdir().unwrap();
        let mut c = std::process::Command::new("sleep")
            .arg("30")
            .process_group(0)
            .spawn()
            .unwrap();
        let (_, start_ticks) = proc_stat(c.id()).unwrap();
        let legacy = serde_json::json!({
            c.id().to_string(): {
                "boot_id": boot_id().unwrap(),
                "start_ticks": start_ticks,
                "command": "sleep 30",
                "requested_by": "tester",
                "controller": "test",
            }
        });
        std::fs::write(dir.path().join(LEGACY_RUNNING), legacy.to_string()).unwrap();
        let _ = Journal::open(dir.path());
        let journaled = journaled(dir.path());
        assert_eq!(journaled.len(), 1);
        assert_eq!(journaled[0]["event"], "interrupted");
        assert_eq!(journaled[0]["pid"], c.id());
        assert!(!dir.path().join(LEGACY_RUNNING).exists());
        c.kill().unwrap();
        c.wait().unwrap();
    }

    #[test]
    fn this_process_has_a_group_and_a_start_time() {
        let (group, start) = proc_stat(std::process::id()).unwrap();
        assert!(group > 0 && start > 0);
        assert!(process_groups()[&group].contains(&start));
    }
}
