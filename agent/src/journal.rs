//! The agent's journal of every command it runs: one JSON line when it starts and one
//! when it ends, appended to `state_dir/exec-journal.jsonl`.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;

use serde::Serialize;

/// An append-only journal file.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    lock: Mutex<()>,
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
    /// A journal at `path` (created on first write).
    pub fn new(path: PathBuf) -> Self {
        Journal {
            path,
            lock: Mutex::new(()),
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

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
