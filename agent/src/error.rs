//! The one error type of the agent crate.

use std::path::PathBuf;

/// What can stop the agent or one of its operations. Messages say what failed, where,
/// and what to do next.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The configuration file could not be read.
    #[error("cannot read the agent configuration {path}: {source}")]
    ConfigRead {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The configuration file does not parse or has an invalid value.
    #[error("invalid agent configuration {path}: {message}")]
    ConfigInvalid {
        /// The file.
        path: PathBuf,
        /// What is wrong, and how to fix it.
        message: String,
    },
    /// A key or certificate file is missing, unreadable or does not match.
    #[error("{path}: {message}")]
    Identity {
        /// The file.
        path: PathBuf,
        /// What is wrong, and how to fix it.
        message: String,
    },
    /// A file the agent writes could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The listening socket could not be opened.
    #[error(
        "cannot listen on UDP {addr}: {source} (is another agent running, or is the address not on this host?)"
    )]
    Listen {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The agent could not restart itself (after an upgrade, or to undo one).
    #[error(
        "cannot restart the agent as {program}: {source}; start it again with `systemctl start clustermgr-agent` or `/etc/init.d/clustermgr-agent start`"
    )]
    Restart {
        /// The binary it tried to run.
        program: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A protocol-level failure.
    #[error(transparent)]
    Protocol(#[from] clustermgr_protocol::ProtocolError),
}
