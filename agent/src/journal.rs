//! The agent's journal of every command it runs: one JSON line when it starts and one
//! when it ends, appended to `state_dir/exec-journal.jsonl`; and beside it the commands
//! still running (`exec-running.json`), so that an agent restarted after a crash or a
//! SIGKILL ends the process groups its previous life left, and journals them
//! `interrupted`.

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
    running: Mutex<BTreeMap<u32, Running>>,
}

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
            running_path: state_dir.join("exec-running.json"),
            running: Mutex::new(BTreeMap::new()),
        };
        journal.end_previous_life();
        journal
    }

    /// Notes that `pid` (the leader of its own process group) runs `entry`'s command.
    pub fn started(&self, pid: u32, entry: &Entry<'_>) {
        let (Some(boot_id), Some((_, start_ticks))) = (boot_id(), proc_stat(pid)) else {
            return;
        };
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        running.insert(
            pid,
            Running {
                boot_id,
                start_ticks,
                command: entry.command.to_string(),
                requested_by: entry.requested_by.to_string(),
                controller: entry.controller.to_string(),
            },
        );
        self.save_running(&running);
    }

    /// Notes that `pid`'s command has ended (its end is journaled by the caller).
    pub fn finished(&self, pid: u32) {
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        if running.remove(&pid).is_some() {
            self.save_running(&running);
        }
    }

    /// Written whole on every start and end, through a fresh temporary file and a
    /// rename, so a kill leaves the old set or the new one. Not synced: a power loss
    /// ends the commands as well.
    fn save_running(&self, running: &BTreeMap<u32, Running>) {
        let res = serde_json::to_vec(running)
            .map_err(std::io::Error::other)
            .and_then(|bytes| {
                clustermgr_protocol::atomic_file::replace_unsynced(
                    &self.running_path,
                    &bytes,
                    0o600,
                )
            });
        if let Err(e) = res {
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
        // Never through a link: the agent reads this as root.
        let read = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&self.running_path)
            .and_then(|mut f| {
                let mut text = Vec::new();
                std::io::Read::read_to_end(&mut f, &mut text).map(|_| text)
            });
        let Ok(text) = read else {
            return;
        };
        let left: BTreeMap<u32, Running> = serde_json::from_slice(&text).unwrap_or_default();
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
        self.save_running(&BTreeMap::new());
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

    #[test]
    fn this_process_has_a_group_and_a_start_time() {
        let (group, start) = proc_stat(std::process::id()).unwrap();
        assert!(group > 0 && start > 0);
        assert!(process_groups()[&group].contains(&start));
    }
}
