//! `clustermgr-agent clean-expired`: deletes the node's expired Gluu entries (tokens,
//! grants, sessions, cache entries that oxAuth marked deletable), the job oxAuth's own
//! cleaner does on every node unless `cleanServiceInterval` is -1. In a cluster the
//! controller turns oxAuth's off (the setting is replicated, so it is off everywhere)
//! and has cron run this on one node only, so that the nodes do not race to delete the
//! same entries and replicate each other's deletes.
//!
//! Run by cron as root: it binds as the node's Gluu administrator the way the agent
//! does (the password read on the node, never printed), holds a lock so that a slow
//! run is not joined by the next one, and prints one line per base it deleted from.

use std::path::PathBuf;

use crate::config::AgentConfig;
use crate::ldap::client::{Connection, Failure, NO_SUCH_OBJECT, Scope};

/// Where Gluu keeps entries that expire, below the suffix: the bases oxAuth 4.x's
/// cleaner walks (clients, UMA's PCTs and resources, U2F requests and devices, tokens,
/// authorizations, scopes, sessions) and the LDAP cache's entries (`ou=cache`, which
/// its cache provider cleans); 3.1 keeps grants and tokens under `clients`.
pub const BASES: &[&str] = &[
    "ou=cache",
    "ou=tokens",
    "ou=authorizations",
    "ou=sessions",
    "ou=clients",
    "ou=scopes",
    "ou=uma",
    "ou=u2f",
];

/// Whole suffixes of other databases with entries that expire: Gluu 4.x's metrics.
pub const OTHER_SUFFIXES: &[&str] = &["o=metric"];

/// The most entries one run deletes under one base: a backlog is worked off over
/// several runs rather than by one run that holds the directory for minutes.
pub const BATCH: u32 = 10_000;

/// The lock file, in the agent's state directory.
const LOCK: &str = "clean-expired.lock";

/// Why a run did not finish.
#[derive(Debug, thiserror::Error)]
pub enum CleanError {
    /// Another run holds the lock.
    #[error(
        "another clean-expired run is still working ({path} is locked); this one leaves it to finish"
    )]
    Busy {
        /// The lock file.
        path: PathBuf,
    },
    /// The lock file could not be opened.
    #[error("cannot open the lock {path}: {source}")]
    Lock {
        /// The lock file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The node has no LDAP server the agent knows of.
    #[error(
        "this node has no LDAP server the agent knows of: no Gluu installation under {root} and no [ldap] url in {config}; the cleaner runs on a Gluu node"
    )]
    NoServer {
        /// The agent's root.
        root: PathBuf,
        /// Its configuration file.
        config: PathBuf,
    },
    /// Reaching or binding to the server failed, or its settings are wrong.
    #[error("{0}")]
    Ldap(String),
    /// Some entries could not be searched for or deleted.
    #[error(
        "{failed} searches or deletes failed (the next run tries them again); the first: {first}"
    )]
    Partly {
        /// How many.
        failed: usize,
        /// The first failure, with its DN.
        first: String,
        /// What the run did delete.
        swept: Vec<Swept>,
    },
}

/// What one run did under one base.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Swept {
    /// The base DN.
    pub base: String,
    /// Entries deleted.
    pub deleted: usize,
    /// Whether more remained than one run deletes.
    pub more: bool,
}

/// The filter of entries Gluu marked deletable (`del`) whose expiry (`exp`; 3.1's
/// `oxAuthExpiration`) is at or before `now` (generalized time).
pub fn filter(now: &str) -> String {
    format!("(&(del=TRUE)(|(exp<={now})(oxAuthExpiration<={now})))")
}

/// One run: under each of [`BASES`] of `suffix`, deletes at most `batch` expired
/// deletable entries (children before their parents). Bases the directory lacks are
/// skipped. Returns what was deleted and what failed.
pub fn sweep(c: &mut Connection, suffix: &str, now: &str, batch: u32) -> (Vec<Swept>, Vec<String>) {
    let filter = filter(now);
    let mut swept = Vec::new();
    let mut failures = Vec::new();
    let bases = BASES
        .iter()
        .map(|b| format!("{b},{suffix}"))
        .chain(OTHER_SUFFIXES.iter().map(|s| s.to_string()));
    for base in bases {
        let (mut found, more) = match c.search_at_most(&base, Scope::Sub, &filter, &["1.1"], batch)
        {
            Ok(r) => r,
            Err(Failure::Result {
                code: NO_SUCH_OBJECT,
                ..
            }) => continue,
            Err(e) => {
                failures.push(format!("searching {base}: {e}"));
                continue;
            }
        };
        // Deepest first: an expired grant's tokens go before the grant.
        found.sort_by_key(|e| std::cmp::Reverse(e.dn.matches(',').count()));
        let mut deleted = 0;
        for e in &found {
            match c.delete(&e.dn) {
                Ok(()) => deleted += 1,
                // Deleted meanwhile (oxAuth itself, or a parent's removal): gone either way.
                Err(Failure::Result {
                    code: NO_SUCH_OBJECT,
                    ..
                }) => {}
                Err(err) => failures.push(format!("deleting {}: {err}", e.dn)),
            }
        }
        if deleted > 0 || more {
            swept.push(Swept {
                base,
                deleted,
                more,
            });
        }
    }
    (swept, failures)
}

/// `clustermgr-agent clean-expired`: takes the lock, binds to the node's LDAP server
/// and sweeps it once.
pub fn run(cfg: &AgentConfig, now_ms: i64) -> Result<Vec<Swept>, CleanError> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = cfg.state_dir.join(LOCK);
    // Never through a link: this runs as root in a directory only root writes, but a
    // lock file is no reason to follow one.
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&path)
        .map_err(|source| CleanError::Lock {
            path: path.clone(),
            source,
        })?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => return Err(CleanError::Busy { path }),
        Err(std::fs::TryLockError::Error(source)) => {
            return Err(CleanError::Lock { path, source });
        }
    }
    let access = crate::ldap::access(cfg)
        .map_err(CleanError::Ldap)?
        .ok_or_else(|| CleanError::NoServer {
            root: cfg.root.clone(),
            config: cfg.path.clone(),
        })?;
    let mut c = access.connect().map_err(CleanError::Ldap)?;
    let now = clustermgr_protocol::health::generalized_time(now_ms);
    let (swept, failures) = sweep(&mut c, &cfg.ldap.suffix, &now, BATCH);
    c.unbind();
    match failures.first() {
        None => Ok(swept),
        Some(first) => Err(CleanError::Partly {
            failed: failures.len(),
            first: first.clone(),
            swept,
        }),
    }
}

impl std::fmt::Display for Swept {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = if self.deleted == 1 { "y" } else { "ies" };
        write!(
            f,
            "deleted {} expired entr{s} under {}",
            self.deleted, self.base
        )?;
        if self.more {
            write!(f, " (more remain: the next run goes on)")?;
        }
        Ok(())
    }
}
