//! The one error type of the protocol crate.

use std::fmt;

/// Everything that can go wrong while encoding, framing, negotiating or checking
/// identities. Messages read as the end of "failed to ...": lowercase, with what to do.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    /// A frame announced more bytes than the configured maximum; nothing was allocated.
    #[error(
        "frame of {announced} bytes exceeds the limit of {limit} bytes (raise max_frame_bytes on both ends if this is legitimate)"
    )]
    FrameTooLarge {
        /// The length the peer announced.
        announced: u64,
        /// The configured limit.
        limit: u32,
    },
    /// The stream ended inside a frame.
    #[error("stream ended inside a frame ({got} of {expected} bytes received)")]
    Truncated {
        /// Bytes of the frame that did arrive.
        got: usize,
        /// Bytes the length prefix announced.
        expected: usize,
    },
    /// The bytes of a frame do not decode as the expected message.
    #[error("malformed {what} message: {detail}")]
    Malformed {
        /// Which message type was expected.
        what: &'static str,
        /// The decoder's description.
        detail: String,
    },
    /// A frame decoded but left bytes over, which a well-formed peer never sends.
    #[error("malformed {what} message: {extra} trailing bytes")]
    TrailingBytes {
        /// Which message type was expected.
        what: &'static str,
        /// How many bytes were left.
        extra: usize,
    },
    /// The two ends share no protocol version.
    #[error(
        "no common protocol version: we speak {ours}, the peer speaks {theirs}; upgrade the older side"
    )]
    NoCommonVersion {
        /// Our supported range.
        ours: crate::version::VersionRange,
        /// The peer's supported range.
        theirs: crate::version::VersionRange,
    },
    /// The peer's reply to our Hello named a version we did not offer.
    #[error("peer chose protocol version {0}, which we did not offer")]
    UnofferedVersion(u16),
    /// A node name is not usable as a certificate name.
    #[error(
        "invalid node name {name:?}: {why} (use lowercase letters, digits, '-' and '.', like gluu1 or lb.example.org)"
    )]
    InvalidNodeName {
        /// The rejected name.
        name: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// A certificate, key or CSR could not be parsed or built.
    #[error("{0}")]
    Certificate(String),
    /// The peer's certificate failed our identity checks.
    #[error("{0}")]
    Identity(String),
    /// rustls or quinn refused a configuration.
    #[error("tls configuration: {0}")]
    TlsConfig(String),
    /// The QUIC stream failed underneath the framing.
    #[error("stream: {0}")]
    Stream(String),
}

impl ProtocolError {
    pub(crate) fn certificate(context: &str, err: impl fmt::Display) -> Self {
        ProtocolError::Certificate(format!("{context}: {err}"))
    }
}
