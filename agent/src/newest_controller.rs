//! The newest controller certificate this agent has seen (its start of validity, Unix
//! seconds), kept in `STATE_DIR/controller-newest` across restarts: the TLS verifier
//! refuses any older one, so a renewal, a restore or `clustermgr cert
//! revoke-controller` retires the old controller key at each agent it reaches. The
//! record names the CA it is for, so a host enrolled into another cluster (whose
//! controller certificates may well be older) starts afresh.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use clustermgr_protocol::atomic_file::write_atomic;
use clustermgr_protocol::identity::sha256_hex;
use rustls::pki_types::CertificateDer;
use tokio::sync::watch;

/// What the verifier and the connections share.
#[derive(Debug)]
pub struct NewestController {
    /// Read by the TLS verifier at every handshake.
    pub seen: Arc<AtomicI64>,
    /// Tells open connections that a newer certificate was seen.
    pub changed: watch::Sender<i64>,
    ca_id: String,
    path: PathBuf,
}

impl NewestController {
    /// The record in `state_dir` for the cluster whose CA is `ca`; none yet (or one of
    /// another CA) accepts every controller certificate `ca` signed.
    pub fn load(state_dir: &Path, ca: &CertificateDer<'_>) -> Self {
        let path = state_dir.join("controller-newest");
        let ca_id = sha256_hex(ca.as_ref());
        let t = std::fs::read_to_string(&path)
            .ok()
            .and_then(|text| {
                let (id, t) = text.trim().split_once(' ')?;
                (id == ca_id).then(|| t.parse().ok()).flatten()
            })
            .unwrap_or(i64::MIN);
        NewestController {
            seen: Arc::new(AtomicI64::new(t)),
            changed: watch::channel(t).0,
            ca_id,
            path,
        }
    }

    /// Notes a controller certificate issued at `t`: if it is the newest yet, it is
    /// recorded, and connections of older ones hear of it.
    pub async fn saw(&self, t: i64) {
        if self.seen.fetch_max(t, Ordering::SeqCst) >= t {
            return;
        }
        let now = self.seen.load(Ordering::SeqCst);
        let (path, text) = (self.path.clone(), format!("{} {now}\n", self.ca_id));
        let written =
            tokio::task::spawn_blocking(move || write_atomic(&path, text.as_bytes(), 0o600)).await;
        if let Ok(Err(e)) = written {
            tracing::warn!(
                "cannot record the newest controller certificate in {}: {e}; older ones are refused until the agent restarts",
                self.path.display()
            );
        }
        tracing::info!(
            "a newer controller certificate was seen: older ones are refused from now on"
        );
        self.changed.send_replace(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_newest_is_kept_per_cluster_and_only_rises() {
        let t = tempfile::tempdir().unwrap();
        let (a, b) = (
            CertificateDer::from(vec![1u8]),
            CertificateDer::from(vec![2u8]),
        );
        let n = NewestController::load(t.path(), &a);
        assert_eq!(n.seen.load(Ordering::SeqCst), i64::MIN);
        n.saw(100).await;
        n.saw(50).await;
        assert_eq!(*n.changed.borrow(), 100);
        // Across a restart, for the same cluster.
        let again = NewestController::load(t.path(), &a);
        assert_eq!(again.seen.load(Ordering::SeqCst), 100);
        // Enrolled into another cluster: its controllers start afresh.
        let other = NewestController::load(t.path(), &b);
        assert_eq!(other.seen.load(Ordering::SeqCst), i64::MIN);
    }
}
