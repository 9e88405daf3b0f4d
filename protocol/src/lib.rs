//! The clustermgr wire protocol: message types, the postcard codec, length-prefixed
//! framing, version negotiation, node names and the TLS identities both ends share.
//!
//! Architecture invariant: this crate knows nothing of the controller's store, the
//! shell or the node's files, and of tokio only the async read and write traits its
//! framing works on. It is data and pure functions, plus the rustls/quinn
//! configuration builders so that both ends configure TLS identically, the lists
//! both ends share (paths that run later, default log sources) and their logging set-up.
#![forbid(unsafe_code)]

pub mod atomic_file;
pub mod changeset;
pub mod codec;
mod error;
pub mod frame;
pub mod health;
pub mod identity;
pub mod log;
pub mod message;
mod name;
pub mod runs_later;
pub mod telemetry;
pub mod throttle;
pub mod transport;
pub mod version;

pub use error::ProtocolError;
pub use name::NodeName;

/// The ALPN token of every clustermgr connection. It never changes: protocol versions
/// are negotiated inside the connection by the [`message::Hello`] exchange.
pub const ALPN: &[u8] = b"clustermgr/1";

/// The UDP port an agent listens on unless configured otherwise.
pub const DEFAULT_AGENT_PORT: u16 = 7443;
