//! Following log files: new lines as they are written, through rotation by rename
//! (the old file is read to its end first), truncation (copytruncate: read again from
//! the start), files that appear later and partial last lines. Java stack traces are
//! joined to the line they belong to; an absurdly long line is cut with a marker.
//!
//! Copytruncate has a window no reader can close (logrotate's own limitation): lines
//! written between the copy and the truncation are in the copy, not in the file. What
//! is visible, the truncation, is handled; the README says so.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::open_log::{Refusal, open_log};

/// The longest line kept whole; the rest is cut and counted in a marker.
pub const MAX_LINE: usize = 64 * 1024;
/// Bytes kept from just before the read position to recognise a file truncated and
/// written again past it between two looks.
const MARK: usize = 32;

/// Bytes read from a file at a time.
const READ_CHUNK: usize = 64 * 1024;

thread_local! {
    /// The read buffer every follower on this thread shares: they are polled one after
    /// another, and a buffer each was 64 KiB of the idle agent's memory per log source.
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The most bytes read from one file in one look: a huge or endless file (a sparse
/// file someone planted) must not hold the collector from every other file and from
/// stopping. What is left is read at the next look, which comes at once.
pub const READ_PER_POLL: u64 = 4 * 1024 * 1024;
/// How long a line waits for a continuation (a stack trace's next line) once the
/// file has nothing more to read.
pub const HOLD: Duration = Duration::from_millis(40);

/// A file to follow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Source {
    /// Its name in the records (`oxauth`, `nginx-access`).
    pub name: String,
    /// The file, on the host.
    pub path: PathBuf,
}

/// Where a follower is in its file, kept across restarts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    /// Device and inode of the file being read.
    pub dev: u64,
    /// Its inode.
    pub ino: u64,
    /// Bytes consumed: the start of the first line not yet emitted.
    pub offset: u64,
}

/// One followed file.
#[derive(Debug)]
pub struct Follower {
    /// What it follows.
    pub source: Source,
    file: Option<File>,
    pos: Position,
    /// Bytes after the last newline read.
    partial: Vec<u8>,
    /// Bytes of an over-long line dropped so far (0 when not dropping).
    dropping: usize,
    /// A line waiting for a possible continuation, and since when.
    held: Option<(String, Instant)>,
    /// Offset up to which lines are emitted (the held line's end not included).
    committed: u64,
    /// Offset of the first byte of the line being read (`partial`'s start).
    line_start: u64,
    /// The last bytes read before the position (at most [`MARK`]).
    mark: Vec<u8>,
    /// Why the file at the path is not followed, once said (so it is said once).
    refused: Option<String>,
    /// A refusal not yet said in the file's own lines.
    announce: bool,
    /// The last look stopped at [`READ_PER_POLL`] with more to read.
    backlog: bool,
}

/// Whether a line is a Java exception's first line (`java.io.IOException: x`),
/// which log frameworks print on the line after the message that logged it.
fn exception_header(line: &str) -> bool {
    let name = line.split_once(": ").map_or(line, |(n, _)| n);
    (name.ends_with("Exception") || name.ends_with("Error") || name.ends_with("Throwable"))
        && name.contains('.')
        && name.split('.').all(|part| {
            !part.is_empty()
                && part
                    .chars()
                    .all(|c| c.is_alphanumeric() || c == '_' || c == '$')
        })
}

/// Whether a line continues the one before it (a Java stack trace).
fn continues(line: &str) -> bool {
    exception_header(line)
        || line.starts_with('\t')
        || line.starts_with("    at ")
        || line.starts_with("  at ")
        || line.starts_with("Caused by: ")
        || line.starts_with("\tCaused by: ")
        || (line.starts_with("\t... ") || line.starts_with("    ... ")) && line.ends_with(" more")
}

impl Follower {
    /// A follower of `source`, resuming at `pos` if that is still the same file;
    /// a file seen for the first time is read from its end (`from_start` for one
    /// that appeared after the agent started, so nothing written to it is missed).
    pub fn new(source: Source, pos: Option<Position>, from_start: bool) -> Follower {
        let mut f = Follower {
            source,
            file: None,
            pos: Position::default(),
            partial: Vec::new(),
            dropping: 0,
            held: None,
            committed: 0,
            line_start: 0,
            mark: Vec::new(),
            refused: None,
            announce: false,
            backlog: false,
        };
        if let Some((file, m)) = f.open() {
            let offset = match pos {
                Some(p) if p.dev == m.dev() && p.ino == m.ino() && p.offset <= m.len() => p.offset,
                _ if from_start => 0,
                _ => m.len(),
            };
            f.open_at(file, &m, offset);
        }
        f
    }

    /// Opens the file at the path as [`open_log`] allows, noting a refusal.
    fn open(&mut self) -> Option<(File, std::fs::Metadata)> {
        match open_log(&self.source.path) {
            Ok(found) => {
                self.refused = None;
                Some(found)
            }
            Err(Refusal::Missing) => None,
            Err(Refusal::Refused(why)) => {
                if self.refused.as_deref() != Some(why.as_str()) {
                    tracing::warn!("log {}: not followed: {why}", self.source.name);
                    self.refused = Some(why);
                    self.announce = true;
                }
                None
            }
        }
    }

    fn open_at(&mut self, mut file: File, m: &std::fs::Metadata, offset: u64) {
        if file.seek(SeekFrom::Start(offset)).is_ok() {
            self.pos = Position {
                dev: m.dev(),
                ino: m.ino(),
                offset,
            };
            self.committed = offset;
            self.line_start = offset;
            self.mark.clear();
            self.held = None;
            self.partial.clear();
            self.dropping = 0;
            self.file = Some(file);
        }
    }

    /// Where to resume after a restart: before any line not yet emitted.
    pub fn position(&self) -> Option<Position> {
        self.file.as_ref().map(|_| Position {
            offset: self.committed,
            ..self.pos
        })
    }

    /// Reads what is new and calls `emit` for each finished line (joined, capped).
    /// Returns when the next held line is due, if one is held.
    pub fn poll(&mut self, now: Instant, emit: &mut dyn FnMut(String)) -> Option<Instant> {
        self.announce_refusal(emit);
        self.read_available(emit);
        if self.backlog {
            // Rotation and truncation are looked for once this file is caught up.
            return Some(now);
        }
        // Rotation or truncation: only visible through the path.
        match std::fs::metadata(&self.source.path) {
            Ok(_) if self.file.is_none() => {
                if let Some((file, m)) = self.open() {
                    // Appeared since: everything in it is new.
                    self.open_at(file, &m, 0);
                    self.read_available(emit);
                }
            }
            Ok(m) if (m.dev(), m.ino()) != (self.pos.dev, self.pos.ino) => {
                // Renamed away and replaced: the old file was read to its end above.
                self.release_held(emit);
                self.end_partial(emit);
                if let Some((file, m)) = self.open() {
                    self.open_at(file, &m, 0);
                    self.read_available(emit);
                }
            }
            Ok(m) if m.len() < self.pos.offset || self.rewritten() => {
                // Truncated in place (and perhaps written past where we were since):
                // start over from its beginning.
                self.release_held(emit);
                self.partial.clear();
                self.dropping = 0;
                if let Some(file) = self.file.take() {
                    self.open_at(file, &m, 0);
                }
                self.read_available(emit);
            }
            _ => {}
        }
        self.announce_refusal(emit);
        if self.backlog {
            return Some(now);
        }
        match &self.held {
            Some((_, since)) if now.duration_since(*since) >= HOLD => {
                self.release_held(emit);
                None
            }
            Some((_, since)) => Some(*since + HOLD),
            None => None,
        }
    }

    /// Whether a held line is due to be emitted at `now`, or the file has more to read
    /// than the last look took.
    pub fn holds_line_due(&self, now: Instant) -> bool {
        self.backlog
            || self
                .held
                .as_ref()
                .is_some_and(|(_, since)| now.duration_since(*since) >= HOLD)
    }

    /// Says once, in the file's own lines, why the file at its path is not followed.
    fn announce_refusal(&mut self, emit: &mut dyn FnMut(String)) {
        if self.announce
            && let Some(why) = &self.refused
        {
            emit(format!("[clustermgr: not following this log: {why}]"));
            self.announce = false;
        }
    }

    /// Whether the bytes just before the read position are no longer the ones read
    /// there: the file was truncated and has grown back past the position since the
    /// last look (copytruncate between two polls).
    fn rewritten(&self) -> bool {
        use std::os::unix::fs::FileExt;
        let (Some(file), n) = (self.file.as_ref(), self.mark.len()) else {
            return false;
        };
        if n == 0 || self.pos.offset < n as u64 {
            return false;
        }
        let mut now = vec![0u8; n];
        match file.read_exact_at(&mut now, self.pos.offset - n as u64) {
            Ok(()) => now != self.mark,
            Err(_) => true,
        }
    }

    /// Emits the held line now (the agent is stopping).
    pub fn finish(&mut self, emit: &mut dyn FnMut(String)) {
        self.release_held(emit);
    }

    fn release_held(&mut self, emit: &mut dyn FnMut(String)) {
        if let Some((line, _)) = self.held.take() {
            emit(line);
        }
        self.committed = self.line_start;
    }

    /// A file that was replaced ends without a newline: its last bytes are a line.
    fn end_partial(&mut self, emit: &mut dyn FnMut(String)) {
        if !self.partial.is_empty() {
            let line = String::from_utf8_lossy(&self.partial).into_owned();
            self.partial.clear();
            emit(line);
        }
    }

    fn read_available(&mut self, emit: &mut dyn FnMut(String)) {
        let mut buf = SCRATCH.with(|s| std::mem::take(&mut *s.borrow_mut()));
        buf.resize(READ_CHUNK, 0);
        let mut taken = 0u64;
        self.backlog = false;
        while let Some(file) = self.file.as_mut() {
            if taken >= READ_PER_POLL {
                self.backlog = true;
                break;
            }
            let n = match file.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            taken += n as u64;
            self.pos.offset += n as u64;
            // The last bytes read, to recognise the file at the next look.
            let keep = MARK.min(n);
            if keep == MARK {
                self.mark.clear();
            } else {
                let drop = (self.mark.len() + keep).saturating_sub(MARK);
                self.mark.drain(..drop);
            }
            self.mark.extend_from_slice(&buf[n - keep..n]);
            let mut rest = &buf[..n];
            while let Some(nl) = rest.iter().position(|&b| b == b'\n') {
                let piece = &rest[..nl];
                rest = &rest[nl + 1..];
                let line = if self.dropping > 0 {
                    let dropped = self.dropping + piece.len();
                    self.dropping = 0;
                    let mut keep = std::mem::take(&mut self.partial);
                    keep.truncate(MAX_LINE);
                    let mut s = String::from_utf8_lossy(&keep).into_owned();
                    s.push_str(&format!(" [clustermgr: {dropped} more bytes cut]"));
                    s
                } else if self.partial.is_empty() {
                    String::from_utf8_lossy(piece).into_owned()
                } else {
                    self.partial.extend_from_slice(piece);
                    let s = String::from_utf8_lossy(&self.partial).into_owned();
                    self.partial.clear();
                    s
                };
                let line = line.strip_suffix('\r').map(str::to_string).unwrap_or(line);
                let start = self.line_start;
                self.line_start = self.pos.offset - rest.len() as u64;
                self.take_line(line, start, emit);
            }
            if self.dropping > 0 {
                self.dropping += rest.len();
            } else {
                self.partial.extend_from_slice(rest);
                if self.partial.len() > MAX_LINE {
                    self.dropping = self.partial.len() - MAX_LINE;
                    self.partial.truncate(MAX_LINE);
                }
            }
        }
        SCRATCH.with(|s| *s.borrow_mut() = buf);
    }

    fn take_line(&mut self, line: String, start: u64, emit: &mut dyn FnMut(String)) {
        match self.held.as_mut() {
            Some((held, _)) if continues(&line) && held.len() + line.len() < MAX_LINE => {
                held.push('\n');
                held.push_str(&line);
            }
            Some(_) => {
                if let Some((prev, _)) = self.held.take() {
                    emit(prev);
                }
                // Everything before this line is emitted now.
                self.committed = start;
                self.held = Some((line, Instant::now()));
            }
            None => self.held = Some((line, Instant::now())),
        }
    }
}

/// Reads a saved position map.
pub fn load_positions(path: &Path) -> std::collections::BTreeMap<String, Position> {
    std::fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// Saves the position map atomically.
pub fn save_positions(
    path: &Path,
    map: &std::collections::BTreeMap<String, Position>,
) -> io::Result<()> {
    let json = serde_json::to_vec(map).map_err(io::Error::other)?;
    clustermgr_protocol::atomic_file::write_atomic(path, &json, 0o600)
}

#[cfg(test)]
mod tests;
