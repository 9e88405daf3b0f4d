//! Telemetry on the node: one collector thread follows the log files and samples the
//! metrics into the spool, connected or not; each controller connection streams the
//! spool from where that controller left off ([`Handle::reader`]) and acknowledges
//! what it stored ([`Handle::ack`]), which frees the spool.

pub mod metrics;
mod open_log;
pub mod spool;
pub mod tail;
mod watch;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clustermgr_protocol::telemetry::{Body, CONTAINER_LOGS, HOST_LOGS};

use crate::config::AgentConfig;
use crate::journal::now_ms;
use spool::{Reader, Spool};
use tail::{Follower, Source};

/// How often every follower is polled even without a file event (files in
/// directories that did not exist yet, missed events).
const SWEEP: Duration = Duration::from_millis(500);
/// The shortest time between two rounds of reading: events in between are taken
/// together (a busy file would otherwise wake the collector for every write).
const ROUND: Duration = Duration::from_millis(50);
/// How often the file positions are saved while lines keep coming (and always when
/// stopping): each save is an fsynced rename. A `kill -9` can repeat what was spooled
/// since the last save.
const SAVE_POSITIONS: Duration = Duration::from_secs(1);

/// The files to follow: the defaults (in the detected Gluu container, or the usual
/// one) and the configured ones.
pub fn sources(cfg: &AgentConfig) -> Vec<Source> {
    let mut out = Vec::new();
    if cfg.telemetry.default_logs {
        let container = crate::info::detect_gluu(&cfg.root)
            .map(|g| cfg.root.join(g.root.trim_start_matches('/')))
            .unwrap_or_else(|| cfg.root.join("opt/gluu-server"));
        for (name, rel) in CONTAINER_LOGS {
            out.push(Source {
                name: name.to_string(),
                path: container.join(rel),
            });
        }
        for (name, rel) in HOST_LOGS {
            out.push(Source {
                name: name.to_string(),
                path: cfg.root.join(rel),
            });
        }
    }
    for l in &cfg.telemetry.logs {
        if let Some((name, path)) = l.split_once('=') {
            out.push(Source {
                name: name.to_string(),
                path: PathBuf::from(path),
            });
        }
    }
    out
}

/// What request handlers hold: readers of the spool, and where to acknowledge.
#[derive(Clone, Debug)]
pub struct Handle {
    dir: PathBuf,
    published: Arc<Mutex<spool::Published>>,
    watch: tokio::sync::watch::Receiver<u64>,
    acked: Arc<AtomicU64>,
    skip: Arc<AtomicU64>,
}

impl Handle {
    /// A reader of the records after `after`. A controller that has stored more than
    /// this spool ever made (the state directory was wiped) moves its numbering on.
    pub fn reader(&self, after: u64) -> Reader {
        let flushed = *self.watch.borrow();
        if after > flushed {
            self.skip.fetch_max(after, Ordering::SeqCst);
        }
        Reader::new(self.dir.clone(), self.published.clone(), after)
    }

    /// Tells when more records are readable.
    pub fn watch(&self) -> tokio::sync::watch::Receiver<u64> {
        self.watch.clone()
    }

    /// Everything up to `seq` is stored by the controller.
    pub fn ack(&self, seq: u64) {
        self.acked.fetch_max(seq, Ordering::SeqCst);
    }
}

/// The running collector; stopping it saves where each file was read to.
#[derive(Debug)]
pub struct Collector {
    stop: Arc<AtomicBool>,
    wake: watch::Waker,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Collector {
    /// Stops collecting: held lines are written, the spool flushed, positions saved.
    pub fn stop(mut self) {
        self.stop_now();
    }

    fn stop_now(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.wake.wake();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.stop_now();
    }
}

/// Opens the spool and starts the collector thread.
/// `ldap` holds the LDAP operation counters the heartbeat thread read last; each tick
/// takes what is there.
pub fn start(
    cfg: &AgentConfig,
    ldap: crate::health::LdapSamples,
) -> std::io::Result<(Handle, Collector)> {
    let dir = cfg.state_dir.join("telemetry");
    let (spool, problems) = Spool::open(&dir.join("spool"), cfg.telemetry.spool_mib << 20)?;
    for p in problems {
        tracing::warn!("{p}");
    }
    let handle = Handle {
        dir: spool.dir().to_path_buf(),
        published: spool.published(),
        watch: spool.watch(),
        acked: Arc::new(AtomicU64::new(0)),
        skip: Arc::new(AtomicU64::new(0)),
    };
    let (watcher, wake) = watch::Watcher::new()?;
    let stop = Arc::new(AtomicBool::new(false));
    let state = Loop {
        spool,
        positions_path: dir.join("positions.json"),
        sources: sources(cfg),
        interval: Duration::from_secs(cfg.telemetry.metrics_interval_secs),
        acked: handle.acked.clone(),
        skip: handle.skip.clone(),
        stop: stop.clone(),
        ldap,
    };
    let thread = std::thread::Builder::new()
        .name("telemetry".into())
        .spawn(move || state.run(watcher))?;
    Ok((
        handle,
        Collector {
            stop,
            wake,
            thread: Some(thread),
        },
    ))
}

struct Loop {
    spool: Spool,
    positions_path: PathBuf,
    sources: Vec<Source>,
    interval: Duration,
    acked: Arc<AtomicU64>,
    skip: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    ldap: crate::health::LdapSamples,
}

impl Loop {
    fn run(mut self, mut watcher: watch::Watcher) {
        let saved = tail::load_positions(&self.positions_path);
        let mut followers: Vec<Follower> = self
            .sources
            .iter()
            .map(|s| {
                let key = position_key(s);
                Follower::new(s.clone(), saved.get(&key).copied(), false)
            })
            .collect();
        let mut sampler = metrics::Sampler::new();
        let mut next_sample = Instant::now();
        // Ticks are stamped with their scheduled time, so a steady series' timestamps
        // differ by exactly the interval (one bit each in the controller's store).
        let mut anchor = (next_sample, now_ms());
        let mut next_sweep = Instant::now();
        let mut last_saved = saved;
        let mut saved_at = Instant::now();
        let mut dirty: BTreeSet<usize> = BTreeSet::new();
        loop {
            let stopping = self.stop.load(Ordering::SeqCst);
            let now = Instant::now();
            let sweep = now >= next_sweep;
            if sweep {
                next_sweep = now + SWEEP;
                // Directories that appeared since are watched from now on.
                for f in &followers {
                    if let Some(d) = f.source.path.parent()
                        && !watcher.watches(d)
                        && d.is_dir()
                    {
                        let _ = watcher.watch(d);
                    }
                }
            }
            let mut held_due: Option<Instant> = None;
            for (i, f) in followers.iter_mut().enumerate() {
                if !(sweep || stopping || dirty.contains(&i) || f.holds_line_due(now)) {
                    continue;
                }
                let name = f.source.name.clone();
                let spool = &mut self.spool;
                let mut emit = |line: String| {
                    let _ = spool.append(
                        now_ms(),
                        Body::Log {
                            source: name.clone(),
                            line,
                        },
                    );
                };
                let due = if stopping {
                    f.poll(now, &mut emit);
                    f.finish(&mut emit);
                    None
                } else {
                    f.poll(now, &mut emit)
                };
                if let Some(d) = due {
                    held_due = Some(held_due.map_or(d, |h: Instant| h.min(d)));
                }
            }
            dirty.clear();
            if now >= next_sample {
                let stamp = anchor.1 + next_sample.duration_since(anchor.0).as_millis() as i64;
                // Re-anchored when the wall clock moved (NTP) or the loop fell behind.
                let stamp = if (stamp - now_ms()).abs() > 1000 {
                    anchor = (now, now_ms());
                    next_sample = now;
                    anchor.1
                } else {
                    stamp
                };
                next_sample += self.interval;
                if next_sample < now {
                    anchor = (now, now_ms());
                    next_sample = now + self.interval;
                }
                let mut samples = sampler.sample();
                samples.append(&mut self.ldap.lock().unwrap_or_else(|p| p.into_inner()));
                let _ = self.spool.append(stamp, Body::Metrics(samples));
            }
            let skip = self.skip.swap(0, Ordering::SeqCst);
            if skip > 0
                && let Err(e) = self.spool.skip_to(skip)
            {
                tracing::warn!("telemetry spool: {e}");
            }
            self.spool
                .release_through(self.acked.load(Ordering::SeqCst));
            if let Err(e) = self.spool.flush() {
                tracing::warn!("telemetry spool: {e}");
            }
            // After the flush: a restart resumes no later than what the spool holds.
            let positions: BTreeMap<String, tail::Position> = followers
                .iter()
                .filter_map(|f| Some((position_key(&f.source), f.position()?)))
                .collect();
            if positions != last_saved && (stopping || saved_at.elapsed() >= SAVE_POSITIONS) {
                if let Err(e) = tail::save_positions(&self.positions_path, &positions) {
                    tracing::warn!("cannot save the log positions: {e}");
                }
                last_saved = positions;
                saved_at = Instant::now();
            }
            if stopping {
                return;
            }
            let mut wait = next_sample.min(next_sweep);
            if let Some(h) = held_due {
                wait = wait.min(h);
            }
            let timeout = wait.saturating_duration_since(Instant::now());
            let changes = watcher.wait(timeout);
            let take = |c: watch::Changes, dirty: &mut BTreeSet<usize>| {
                if c.overflow {
                    dirty.extend(0..followers.len());
                }
                for p in &c.paths {
                    mark(&followers, p, dirty);
                }
            };
            if !changes.paths.is_empty() || changes.overflow {
                take(changes, &mut dirty);
                // Writes in the next moment are read together.
                std::thread::sleep(ROUND);
                take(watcher.drain(), &mut dirty);
            }
        }
    }
}

/// Marks the followers an event path concerns: the file itself, or its directory.
/// Event paths are the watched directory joined with a name, so comparing bytes
/// suffices (and a busy file makes hundreds of events a second).
fn mark(followers: &[Follower], p: &Path, dirty: &mut BTreeSet<usize>) {
    let p = p.as_os_str();
    for (i, f) in followers.iter().enumerate() {
        if f.source.path.as_os_str() == p || f.source.path.parent().map(Path::as_os_str) == Some(p)
        {
            dirty.insert(i);
        }
    }
}

fn position_key(s: &Source) -> String {
    format!("{}={}", s.name, s.path.display())
}
