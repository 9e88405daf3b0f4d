//! The on-disk spool every collected record goes through, connected or not: numbered
//! records appended to segment files, read back from any sequence number, bounded in
//! size (the oldest segments go first), and freed as the controller stores them.
//!
//! A segment is `NNNNNNNNNNNNNNNNNNNN.seg`, named by the first sequence number it
//! holds; a record on disk is `[len u32][crc32 u32][postcard Record]`. The newest
//! segment is never deleted, so the numbering survives a restart with everything
//! released. A reader that asks for records the spool no longer has gets a
//! [`Body::Gap`] saying how many; a segment that fails its checksums is moved to
//! `corrupt/` and read as a gap too.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clustermgr_protocol::codec;
use clustermgr_protocol::telemetry::{Body, Record};

/// A record's frame header: length and CRC-32 of the payload.
const HEADER: usize = 8;
/// The largest record accepted (a log line is capped well below this).
pub const MAX_RECORD: usize = 1 << 20;
/// How often appended records are fsynced (they reach readers at once, through the
/// page cache; a power cut may lose at most this much).
const SYNC_EVERY: Duration = Duration::from_secs(1);

/// Where the writer is, shared with readers: records up to `flushed` are whole on
/// disk (in the page cache at least).
#[derive(Debug, Default)]
pub struct Published {
    /// The highest sequence number a reader may read.
    pub flushed: u64,
}

/// The spool's writer. One per agent.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    segment_bytes: u64,
    /// (first sequence number, bytes), oldest first; the last is the one written.
    segments: VecDeque<(u64, u64)>,
    total: u64,
    out: BufWriter<File>,
    next: u64,
    released: u64,
    last_sync: Instant,
    published: Arc<Mutex<Published>>,
    notify: tokio::sync::watch::Sender<u64>,
}

fn segment_name(first: u64) -> String {
    format!("{first:020}.seg")
}

/// The segments in `dir`, oldest first.
fn list(dir: &Path) -> io::Result<Vec<(u64, u64)>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let name = e.file_name();
        let Some(first) = name
            .to_str()
            .and_then(|n| n.strip_suffix(".seg"))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        out.push((first, e.metadata()?.len()));
    }
    out.sort_unstable();
    Ok(out)
}

/// Reads one frame; `Ok(None)` at a clean end, `Err` for a torn or corrupt one.
fn read_frame(r: &mut impl Read, buf: &mut Vec<u8>) -> io::Result<Option<Record>> {
    if !read_checked(r, buf)? {
        return Ok(None);
    }
    codec::decode("spool record", buf)
        .map(Some)
        .map_err(|e| io::Error::other(e.to_string()))
}

/// Reads one frame's record, still encoded, into `buf` once its checksum holds;
/// `false` at the end.
fn read_checked(r: &mut impl Read, buf: &mut Vec<u8>) -> io::Result<bool> {
    let mut head = [0u8; HEADER];
    match r.read(&mut head[..1])? {
        0 => return Ok(false),
        _ => r.read_exact(&mut head[1..])?,
    }
    let len = u32::from_le_bytes(head[..4].try_into().unwrap_or_default()) as usize;
    let crc = u32::from_le_bytes(head[4..].try_into().unwrap_or_default());
    if len > MAX_RECORD {
        return Err(io::Error::other(format!(
            "a record claims {len} bytes, more than any record has"
        )));
    }
    buf.resize(len, 0);
    r.read_exact(buf)?;
    if crc32fast::hash(buf) != crc {
        return Err(io::Error::other("a record fails its checksum"));
    }
    Ok(true)
}

impl Spool {
    /// Opens (or makes) the spool in `dir`, finishing a torn last record. Returns it,
    /// and the problems it found, for the log.
    pub fn open(dir: &Path, max_bytes: u64) -> io::Result<(Spool, Vec<String>)> {
        std::fs::create_dir_all(dir)?;
        let mut problems = Vec::new();
        let mut segments: VecDeque<(u64, u64)> = list(dir)?.into();
        let (first, size, next) = match segments.pop_back() {
            None => (1, 0, 1),
            Some((first, _)) => {
                // Scan the newest segment for its last whole record.
                let path = dir.join(segment_name(first));
                let mut r = BufReader::new(File::open(&path)?);
                let (mut good, mut next, mut buf) = (0u64, first, Vec::new());
                loop {
                    match read_frame(&mut r, &mut buf) {
                        Ok(Some(rec)) => {
                            good += (HEADER + buf.len()) as u64;
                            next = rec.seq + 1;
                        }
                        Ok(None) => break,
                        Err(e) => {
                            problems.push(format!(
                                "spool segment {}: {e} after {good} bytes; the rest was cut off",
                                path.display()
                            ));
                            break;
                        }
                    }
                }
                let f = OpenOptions::new().write(true).open(&path)?;
                f.set_len(good)?;
                f.sync_all()?;
                (first, good, next)
            }
        };
        let total = segments.iter().map(|(_, b)| b).sum::<u64>() + size;
        segments.push_back((first, size));
        let path = dir.join(segment_name(first));
        let mut file = OpenOptions::new().create(true).append(true).open(&path)?;
        file.seek(SeekFrom::End(0))?;
        let (notify, _) = tokio::sync::watch::channel(next - 1);
        let spool = Spool {
            dir: dir.to_path_buf(),
            max_bytes,
            // Sixteen segments to a full spool, so the oldest sixteenth goes at a time.
            segment_bytes: (max_bytes / 16).clamp(64 * 1024, 16 << 20),
            segments,
            total,
            out: BufWriter::with_capacity(64 * 1024, file),
            next,
            released: 0,
            last_sync: Instant::now(),
            published: Arc::new(Mutex::new(Published { flushed: next - 1 })),
            notify,
        };
        Ok((spool, problems))
    }

    /// The sequence number the next record gets.
    pub fn next_seq(&self) -> u64 {
        self.next
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A receiver told the highest readable sequence number whenever it moves.
    pub fn watch(&self) -> tokio::sync::watch::Receiver<u64> {
        self.notify.subscribe()
    }

    /// Appends a record; it is readable after the next [`Spool::flush`].
    pub fn append(&mut self, time_ms: i64, body: Body) -> io::Result<u64> {
        let seq = self.next;
        let payload = codec::encode(&Record { seq, time_ms, body });
        if payload.len() > MAX_RECORD {
            return Err(io::Error::other("a record is too large for the spool"));
        }
        let len = (HEADER + payload.len()) as u64;
        if self
            .segments
            .back()
            .is_some_and(|(_, b)| *b > 0 && b + len > self.segment_bytes)
        {
            self.rotate()?;
        }
        self.out.write_all(&(payload.len() as u32).to_le_bytes())?;
        self.out
            .write_all(&crc32fast::hash(&payload).to_le_bytes())?;
        self.out.write_all(&payload)?;
        if let Some((_, b)) = self.segments.back_mut() {
            *b += len;
        }
        self.total += len;
        self.next += 1;
        Ok(seq)
    }

    /// Makes every appended record readable, fsyncing now and then, and drops the
    /// oldest segments beyond the size bound.
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()?;
        if self.last_sync.elapsed() >= SYNC_EVERY {
            self.out.get_ref().sync_data()?;
            self.last_sync = Instant::now();
        }
        let flushed = self.next - 1;
        self.published
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .flushed = flushed;
        self.notify.send_replace(flushed);
        while self.total > self.max_bytes && self.segments.len() > 1 {
            self.drop_oldest();
        }
        Ok(())
    }

    /// Frees the segments whose every record is at or below `seq` (stored by the
    /// controller). The newest segment stays.
    pub fn release_through(&mut self, seq: u64) {
        self.released = self.released.max(seq);
        while self.segments.len() > 1 && self.segments.get(1).is_some_and(|(f, _)| *f <= seq + 1) {
            self.drop_oldest();
        }
    }

    /// Continues the numbering after `seq` when a controller has stored records
    /// numbered beyond what this spool has made (its state directory was wiped): the
    /// records made since are read as if the controller had them already.
    pub fn skip_to(&mut self, seq: u64) -> io::Result<()> {
        if seq < self.next {
            return Ok(());
        }
        self.next = seq + 1;
        self.rotate()?;
        self.flush()
    }

    fn drop_oldest(&mut self) {
        if let Some((first, bytes)) = self.segments.pop_front() {
            let _ = std::fs::remove_file(self.dir.join(segment_name(first)));
            self.total -= bytes;
        }
    }

    fn rotate(&mut self) -> io::Result<()> {
        self.out.flush()?;
        self.out.get_ref().sync_data()?;
        let path = self.dir.join(segment_name(self.next));
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        // The new name must survive a crash before any record is in it.
        File::open(&self.dir)?.sync_all()?;
        self.out = BufWriter::with_capacity(64 * 1024, file);
        if self
            .segments
            .back()
            .is_some_and(|(f, b)| *f == self.next && *b == 0)
        {
            return Ok(());
        }
        if let Some((_, 0)) = self.segments.back() {
            // An empty segment left behind by skip_to: it holds nothing.
            if let Some((first, _)) = self.segments.pop_back() {
                let _ = std::fs::remove_file(self.dir.join(segment_name(first)));
            }
        }
        self.segments.push_back((self.next, 0));
        Ok(())
    }

    /// A reader of the records after `after`.
    pub fn reader(&self, after: u64) -> Reader {
        Reader::new(self.dir.clone(), self.published.clone(), after)
    }

    /// What readers need of the writer: how far they may read.
    pub fn published(&self) -> Arc<Mutex<Published>> {
        self.published.clone()
    }
}

/// Reads the spool in sequence order from a given point, never past what the writer
/// published. Streams: holds one segment open and one record in memory.
#[derive(Debug)]
pub struct Reader {
    dir: PathBuf,
    published: Arc<Mutex<Published>>,
    /// The sequence number wanted next.
    expect: u64,
    /// The open segment: its first sequence number, and its reader.
    current: Option<(u64, BufReader<File>)>,
    buf: Vec<u8>,
}

impl Reader {
    /// A reader of the spool in `dir` from the record after `after`.
    pub fn new(dir: PathBuf, published: Arc<Mutex<Published>>, after: u64) -> Reader {
        Reader {
            dir,
            published,
            expect: after + 1,
            current: None,
            buf: Vec::new(),
        }
    }

    /// The next record, a gap, or `None` when everything published has been read.
    /// Problems (a corrupt segment) are logged and come back as gaps.
    pub fn next_record(&mut self) -> Option<Record> {
        let mut one = Vec::new();
        self.next_encoded(&mut one)?;
        codec::decode("spool record", &one).ok()
    }

    /// [`Self::next_record`], appended to `out` as it is encoded on the wire; returns
    /// the bytes appended.
    pub fn next_encoded(&mut self, out: &mut Vec<u8>) -> Option<usize> {
        let flushed = self
            .published
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .flushed;
        let mut reread = false;
        loop {
            if self.expect > flushed {
                return None;
            }
            if self.current.is_none() {
                let segments = list(&self.dir).unwrap_or_default();
                // The segment holding `expect`, or the first after a hole.
                let at = segments.iter().rposition(|(f, _)| *f <= self.expect);
                let (first, hole_end) = match at {
                    Some(i) => (segments[i].0, None),
                    None => match segments.first() {
                        Some((f, _)) => (*f, Some(*f)),
                        None => return None,
                    },
                };
                if let Some(end) = hole_end {
                    // The records before the oldest segment are gone.
                    return Some(self.gap(
                        out,
                        end,
                        "the spool was full and dropped its oldest records",
                    ));
                }
                let path = self.dir.join(segment_name(first));
                match File::open(&path) {
                    Ok(f) => self.current = Some((first, BufReader::with_capacity(64 * 1024, f))),
                    // Dropped since it was listed: list again.
                    Err(_) => continue,
                }
            }
            let (first, r) = self.current.as_mut()?;
            let first = *first;
            let read = read_checked(r, &mut self.buf).and_then(|more| match more {
                false => Ok(None),
                true => codec::record_seq(&self.buf)
                    .map(Some)
                    .ok_or_else(|| io::Error::other("a record has no sequence number")),
            });
            match read {
                Ok(Some(seq)) if seq < self.expect => continue,
                Ok(Some(seq)) => {
                    self.expect = seq + 1;
                    out.extend_from_slice(&self.buf);
                    return Some(self.buf.len());
                }
                Ok(None) => {
                    // The end of this segment: on to the next, if there is one. The
                    // writer finishes a segment before it makes the next, so once the
                    // next exists one more read of this one sees all it will hold.
                    let next = list(&self.dir)
                        .unwrap_or_default()
                        .into_iter()
                        .find(|(f, _)| *f > first);
                    match next {
                        Some(_) if !reread => reread = true,
                        Some((f, _)) => {
                            reread = false;
                            self.current = None;
                            if f > self.expect {
                                return Some(self.gap(out, f, "records were cut from the spool"));
                            }
                        }
                        None => return None,
                    }
                }
                Err(e) => {
                    // A torn frame at the writer's end is not published yet; anywhere
                    // else the segment is corrupt.
                    let next = list(&self.dir)
                        .unwrap_or_default()
                        .into_iter()
                        .find(|(f, _)| *f > first);
                    let Some((f, _)) = next else {
                        self.current = None;
                        return None;
                    };
                    let path = self.dir.join(segment_name(first));
                    let aside = self.dir.join("corrupt");
                    let _ = std::fs::create_dir_all(&aside);
                    let _ = std::fs::rename(&path, aside.join(segment_name(first)));
                    tracing::error!(
                        "spool segment {} is corrupt ({e}); moved to {} and skipped",
                        path.display(),
                        aside.display()
                    );
                    self.current = None;
                    if f > self.expect {
                        return Some(self.gap(
                            out,
                            f,
                            &format!("a corrupt spool segment was moved aside ({e})"),
                        ));
                    }
                }
            }
        }
    }

    fn gap(&mut self, out: &mut Vec<u8>, until: u64, why: &str) -> usize {
        let lost = until - self.expect;
        let rec = Record {
            seq: until - 1,
            time_ms: crate::journal::now_ms(),
            body: Body::Gap {
                lost,
                why: why.to_string(),
            },
        };
        self.expect = until;
        let bytes = codec::encode(&rec);
        out.extend_from_slice(&bytes);
        bytes.len()
    }
}

#[cfg(test)]
mod tests;
