//! QUIC transport settings, identical on both ends.
//!
//! QUIC uses the smaller of the two peers' idle timeouts, so both ends build theirs
//! from the same [`Timeouts`], and the keep-alive is well inside it.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Liveness settings of a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Timeouts {
    /// How often an idle connection sends a keep-alive, in milliseconds.
    pub keep_alive_ms: u64,
    /// How long a silent connection lives, in milliseconds.
    pub idle_ms: u64,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            keep_alive_ms: 5_000,
            idle_ms: 30_000,
        }
    }
}

/// Requests in flight on one connection; an exec fan-out uses one per node, so this
/// bounds a single controller's parallel work on one agent, not the cluster's.
const MAX_CONCURRENT_REQUESTS: u32 = 256;

/// The bytes one connection may have in flight towards a reader: room for the largest
/// frame twice over.
const CONNECTION_RECEIVE_WINDOW: u32 = 32 * 1024 * 1024;

/// The transport configuration both ends use.
pub fn transport_config(t: &Timeouts) -> Arc<quinn::TransportConfig> {
    let mut cfg = quinn::TransportConfig::default();
    cfg.keep_alive_interval(Some(Duration::from_millis(t.keep_alive_ms)));
    let idle = quinn::IdleTimeout::try_from(Duration::from_millis(t.idle_ms))
        .unwrap_or(quinn::IdleTimeout::from(quinn::VarInt::from_u32(30_000)));
    cfg.max_idle_timeout(Some(idle));
    cfg.max_concurrent_bidi_streams(quinn::VarInt::from_u32(MAX_CONCURRENT_REQUESTS));
    cfg.max_concurrent_uni_streams(quinn::VarInt::from_u32(16));
    // What a peer may send ahead of this end's reads, across all its streams (quinn's
    // default is unbounded: each stream's window times the streams allowed).
    cfg.receive_window(quinn::VarInt::from_u32(CONNECTION_RECEIVE_WINDOW));
    Arc::new(cfg)
}
