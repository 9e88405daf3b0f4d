//! The one error type of the controller crate.

use crate::exit;
use std::path::PathBuf;

/// What can make a controller command fail. Each message says what failed, where,
/// and what to do next.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    /// No cluster has been initialised in the home directory.
    #[error(
        "no clustermgr home at {0}: run `clustermgr init`, or point --home / CLUSTERMGR_HOME at an existing one"
    )]
    HomeMissing(PathBuf),
    /// `init` would overwrite an existing cluster.
    #[error(
        "{0} already holds a cluster; use another --home, or remove it if you really mean to discard that cluster's CA"
    )]
    HomeExists(PathBuf),
    /// `restore` was pointed at something other than a new or empty directory.
    #[error(
        "{0} exists and is not an empty directory; restore into a new directory (--home DIR), or empty this one first"
    )]
    HomeNotEmpty(PathBuf),
    /// No usable passphrase was given for a backup or a restore.
    #[error("{0}")]
    Passphrase(String),
    /// A file given to `restore` is not a backup this release can read.
    #[error("{file} is not a clustermgr backup this release can read: {why}")]
    BackupUnreadable {
        /// The file.
        file: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// A backup's authentication failed: a wrong passphrase, or a file changed since it
    /// was written. The two cannot be told apart, by design.
    #[error(
        "cannot open {0}: the passphrase is wrong, or the file was altered or damaged since it was written. Nothing was restored; try again with the right passphrase, or with another copy of the backup"
    )]
    BackupDecrypt(PathBuf),
    /// The home directory or a key file is open to other users.
    #[error(
        "refusing to use {path}: it is {what} (mode {mode:o}); fix it with `chmod {fix} {path}`"
    )]
    Insecure {
        /// The directory or file.
        path: PathBuf,
        /// What is wrong ("writable by group or others").
        what: &'static str,
        /// Its mode.
        mode: u32,
        /// The chmod mode that fixes it.
        fix: &'static str,
    },
    /// The home is not a directory owned by the user running clustermgr.
    #[error(
        "refusing to use {0}: it is not a directory you own; point --home at a directory of your own"
    )]
    NotOwned(PathBuf),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The store is held by a process that does not answer on the socket.
    #[error(
        "the store {store} is in use by another process, but no `clustermgr serve` answers on {socket}. If another clustermgr command is running, wait for it; otherwise find the stale process with `fuser -v {store}` and stop it"
    )]
    StoreLocked {
        /// The store file.
        store: PathBuf,
        /// The socket that did not answer.
        socket: PathBuf,
    },
    /// The store failed.
    #[error("store {path}: {message}")]
    Store {
        /// The store file.
        path: PathBuf,
        /// What failed.
        message: String,
    },
    /// The command line or an argument is wrong.
    #[error("{0}")]
    Usage(String),
    /// The named node is not in the inventory.
    #[error("no node named {name} in this cluster{hint} (see `clustermgr node list`)")]
    UnknownNode {
        /// The name given.
        name: String,
        /// `; did you mean gluu1?`, or empty.
        hint: String,
    },
    /// `apply` was given a plan's digest, and the desired state has changed since that
    /// plan (a `cluster set`, a node added, removed or drained in between).
    #[error(
        "the desired configuration changed since the plan you approved (digest {approved}, now {now}): a setting or a node changed in between. Nothing was applied; review `clustermgr plan` again and apply that"
    )]
    PlanChanged {
        /// The digest given.
        approved: String,
        /// The current plan's digest, as a plan prints it.
        now: String,
    },
    /// A node operation is refused by the cluster's rules.
    #[error("{0}")]
    Refused(String),
    /// A certificate signing request is unacceptable.
    #[error("refusing the CSR for {node}: {message}")]
    Csr {
        /// The node it was for.
        node: String,
        /// Why.
        message: String,
    },
    /// Talking to an agent failed.
    #[error("{node}: {message}")]
    Agent {
        /// The node.
        node: String,
        /// What failed.
        message: String,
    },
    /// SSH bootstrap of a host failed.
    #[error("{node} ({host}): {message}")]
    Bootstrap {
        /// The node being bootstrapped.
        node: String,
        /// The SSH target.
        host: String,
        /// What failed and what to do next.
        message: String,
    },
    /// An operation failed inside `clustermgr serve`; its message and exit code as
    /// serve reported them.
    #[error("{message}")]
    Relayed {
        /// The message.
        message: String,
        /// The exit code it maps to.
        exit_code: i32,
    },
    /// Talking to `clustermgr serve` failed.
    #[error("clustermgr serve: {0}")]
    Serve(String),
    /// A file given as an agent binary is not one clustermgr can read as such.
    #[error(
        "{path} is not a usable agent binary: {message}. Point at a Linux build of clustermgr-agent (`packaging/build` makes the one for old hosts)"
    )]
    Binary {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// The system's random source failed (the kernel's getrandom): nothing secret can
    /// be made. Not the user's doing: exit 1.
    #[error(
        "the system's random source failed while {0}; check the kernel's entropy (getrandom) and try again"
    )]
    Random(&'static str),
    /// A certificate or TLS operation failed.
    #[error(transparent)]
    Protocol(#[from] clustermgr_protocol::ProtocolError),
}

impl CtlError {
    /// The process exit code for this error: 2 for usage and configuration errors, 1
    /// for failures of the operation itself.
    pub fn exit_code(&self) -> i32 {
        match self {
            CtlError::HomeMissing(_)
            | CtlError::HomeExists(_)
            | CtlError::HomeNotEmpty(_)
            | CtlError::Passphrase(_)
            | CtlError::Insecure { .. }
            | CtlError::NotOwned(_)
            | CtlError::Usage(_)
            | CtlError::UnknownNode { .. }
            | CtlError::StoreLocked { .. }
            | CtlError::Protocol(clustermgr_protocol::ProtocolError::InvalidNodeName { .. }) => {
                exit::USAGE
            }
            CtlError::Relayed { exit_code, .. } => *exit_code,
            _ => exit::FAILED,
        }
    }

    /// No node named `name` among `known`, with the closest name offered.
    pub(crate) fn unknown_node<'a>(name: &str, known: impl IntoIterator<Item = &'a str>) -> Self {
        CtlError::UnknownNode {
            name: name.to_string(),
            hint: crate::suggest::hint(name, known),
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        CtlError::Io {
            path: path.into(),
            source,
        }
    }
}
