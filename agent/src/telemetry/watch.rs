//! Waiting for followed files to change: inotify on their directories, read by the
//! collector thread itself, plus an eventfd to wake it (to stop).
//!
//! Not the `notify` crate: it runs a thread of its own that every write to a followed
//! file wakes, which measured as a large share of the agent's cost while tailing busy
//! files (BENCHMARKS.md); here the collector sleeps in `poll` on the inotify descriptor.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustix::event::{EventfdFlags, PollFd, PollFlags};
use rustix::fs::inotify::{self, CreateFlags, ReadFlags, WatchFlags};

/// What changed since the last look.
#[derive(Debug, Default)]
pub struct Changes {
    /// Paths that changed (a file, or a directory for events without a name).
    pub paths: Vec<PathBuf>,
    /// Events were lost (the kernel's queue overflowed): look at everything.
    pub overflow: bool,
}

/// Wakes a [`Watcher`] from another thread.
#[derive(Clone, Debug)]
pub struct Waker(Arc<OwnedFd>);

impl Waker {
    /// Makes the watcher's wait return now.
    pub fn wake(&self) {
        let _ = rustix::io::write(&*self.0, &1u64.to_ne_bytes());
    }
}

/// The directories watched and the descriptors to wait on.
#[derive(Debug)]
pub struct Watcher {
    /// `None` when inotify cannot be had (too many instances): the sweep covers it.
    ino: Option<OwnedFd>,
    wake: Arc<OwnedFd>,
    dirs: HashMap<i32, PathBuf>,
    buf: Vec<MaybeUninit<u8>>,
}

impl Watcher {
    /// A watcher and its waker.
    pub fn new() -> io::Result<(Watcher, Waker)> {
        let wake = Arc::new(rustix::event::eventfd(
            0,
            EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK,
        )?);
        let ino = match inotify::init(CreateFlags::CLOEXEC | CreateFlags::NONBLOCK) {
            Ok(fd) => Some(fd),
            Err(e) => {
                tracing::warn!("cannot watch log files ({e}); polling them instead");
                None
            }
        };
        Ok((
            Watcher {
                ino,
                wake: wake.clone(),
                dirs: HashMap::new(),
                buf: vec![MaybeUninit::uninit(); 16 * 1024],
            },
            Waker(wake),
        ))
    }

    /// Whether `dir` is watched.
    pub fn watches(&self, dir: &Path) -> bool {
        self.dirs.values().any(|d| d == dir)
    }

    /// Watches `dir` for files written, created, moved and removed in it.
    pub fn watch(&mut self, dir: &Path) -> io::Result<()> {
        let Some(ino) = &self.ino else {
            return Err(io::Error::other("no inotify"));
        };
        let flags = WatchFlags::MODIFY
            | WatchFlags::CREATE
            | WatchFlags::MOVED_FROM
            | WatchFlags::MOVED_TO
            | WatchFlags::DELETE
            | WatchFlags::ATTRIB;
        let wd = inotify::add_watch(ino, dir, flags)?;
        self.dirs.insert(wd, dir.to_path_buf());
        Ok(())
    }

    /// Waits up to `timeout` for a change or a wake-up; returns what changed.
    pub fn wait(&mut self, timeout: Duration) -> Changes {
        let ts = rustix::time::Timespec {
            tv_sec: timeout.as_secs() as i64,
            tv_nsec: i64::from(timeout.subsec_nanos()),
        };
        let wake = self.wake.clone();
        let mut fds = vec![PollFd::new(&*wake, PollFlags::IN)];
        if let Some(ino) = &self.ino {
            fds.push(PollFd::new(ino, PollFlags::IN));
        }
        let _ = rustix::event::poll(&mut fds, Some(&ts));
        drop(fds);
        let mut counter = [0u8; 8];
        let _ = rustix::io::read(&*wake, &mut counter);
        self.drain()
    }

    /// What changed, without waiting.
    pub fn drain(&mut self) -> Changes {
        let mut out = Changes::default();
        let Some(ino) = &self.ino else {
            return out;
        };
        let mut reader = inotify::Reader::new(ino, &mut self.buf);
        // Until EAGAIN: nothing more now.
        while let Ok(e) = reader.next() {
            if e.events().contains(ReadFlags::QUEUE_OVERFLOW) {
                out.overflow = true;
                continue;
            }
            let Some(dir) = self.dirs.get(&e.wd()) else {
                continue;
            };
            match e.file_name() {
                Some(n) => out.paths.push(dir.join(OsStr::from_bytes(n.to_bytes()))),
                None => out.paths.push(dir.clone()),
            }
            if e.events().contains(ReadFlags::IGNORED) {
                // The directory went away; it is watched again if it returns.
                self.dirs.remove(&e.wd());
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_creations_and_renames_are_seen_and_a_wake_returns_at_once() {
        let tmp = tempfile::tempdir().unwrap();
        let (mut w, waker) = Watcher::new().unwrap();
        w.watch(tmp.path()).unwrap();
        assert!(w.watches(tmp.path()));
        let f = tmp.path().join("a.log");
        std::fs::write(&f, "x\n").unwrap();
        let got = w.wait(Duration::from_secs(5));
        assert!(got.paths.contains(&f), "{got:?}");
        std::fs::rename(&f, tmp.path().join("a.log.1")).unwrap();
        let got = w.wait(Duration::from_secs(5));
        assert!(got.paths.contains(&f), "{got:?}");
        let t = std::time::Instant::now();
        waker.wake();
        let got = w.wait(Duration::from_secs(5));
        assert!(got.paths.is_empty());
        assert!(t.elapsed() < Duration::from_secs(1));
    }
}
