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
    /// The caller's role does not allow the operation.
    #[error(
        "refused: {who} is {article} {role}, and {what} needs {needs}; an admin can give a role in [access] of controller.toml (local users) or with `clustermgr user add` (the console)"
    )]
    Forbidden {
        /// Who asked, as the audit log names them.
        who: String,
        /// "a" or "an".
        article: &'static str,
        /// Their role.
        role: crate::access::UserRole,
        /// The operation, as the CLI names it.
        what: String,
        /// The role it needs.
        needs: crate::access::UserRole,
    },
    /// A local user with no role at all reached serve's shared socket.
    #[error(
        "refused: {who} has no role on this controller; its admin can give one in [access] of controller.toml"
    )]
    NoRole {
        /// Who connected.
        who: String,
    },
    /// `--socket` names a socket no `serve` answers on.
    #[error(
        "no clustermgr serve answers on {0}; ask the controller's administrator whether serve runs, and check the path ([access] socket in its controller.toml)"
    )]
    ServeNotAnswering(PathBuf),
    /// A console account that does not exist.
    #[error("there is no console account {name:?}; `clustermgr user list` shows them")]
    UnknownUser {
        /// The name asked for.
        name: String,
    },
    /// `user add` of a name that is taken.
    #[error(
        "there is already a console account {name:?}; `clustermgr user passwd {name}` changes its password, `user remove` removes it"
    )]
    UserExists {
        /// The name.
        name: String,
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
    /// A command-line value (or a URL given in one) that cannot be used.
    #[error("{flag} {value}: {why}")]
    BadArgument {
        /// The flag, as typed (`--since`).
        flag: &'static str,
        /// Its value, as given.
        value: String,
        /// What is wrong and what would do.
        why: String,
    },
    /// A command needs an argument that was not given.
    #[error("{command} needs {what}")]
    MissingArgument {
        /// The command (`node add`).
        command: &'static str,
        /// What to give, and what for.
        what: &'static str,
    },
    /// A file given to a command (an inventory, `controller.toml`, a certificate, an
    /// archive to write) that cannot be used as it is.
    #[error("{path}: {why}")]
    BadFile {
        /// The file.
        path: PathBuf,
        /// What is wrong and what to do.
        why: String,
    },
    /// A cluster setting's value that is refused.
    #[error("{key}: {why}")]
    BadSetting {
        /// The setting.
        key: String,
        /// Why, and what would do.
        why: String,
    },
    /// No cluster setting of that name.
    #[error(
        "unknown cluster setting {key:?}{hint}; the settings are:\n{}\n  tls-cert FILE, tls-key FILE: the cluster's TLS certificate and key, read from the files",
        crate::model::valid_keys()
    )]
    UnknownSetting {
        /// The name given.
        key: String,
        /// `; did you mean hostname?`, or empty.
        hint: String,
    },
    /// `cluster set KEY --file` of a setting that is not read from a file.
    #[error("{key} is not a setting read from a file; those are {}", crate::model::SECRET_KEYS.join(", "))]
    NotFromFile {
        /// The setting named.
        key: String,
    },
    /// A node selector that selects nothing usable.
    #[error("node selector {selector:?} {why}")]
    BadSelector {
        /// The selector, or its part at fault.
        selector: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// No node role of that name.
    #[error("unknown role {role:?}: use gluu, lb or cache")]
    UnknownRole {
        /// The name given.
        role: String,
    },
    /// No samples of that metric.
    #[error(
        "no samples of {metric} since then on the selected nodes{hint}; `clustermgr metrics` lists the metrics there are"
    )]
    UnknownMetric {
        /// The metric asked for.
        metric: String,
        /// `; did you mean node_load1?`, or empty.
        hint: String,
    },
    /// No stored log lines from that source.
    #[error(
        "no lines from a source named {name:?} are stored for the selected nodes{}{hint}; the sources there are: {}",
        if *since { " since then" } else { "" },
        if known.is_empty() { "none yet".to_string() } else { known.join(", ") }
    )]
    UnknownSource {
        /// The source asked for.
        name: String,
        /// Whether `--since` narrowed the search.
        since: bool,
        /// `; did you mean oxauth?`, or empty.
        hint: String,
        /// The sources stored.
        known: Vec<String>,
    },
    /// What this asks of a node does not fit its role.
    #[error("{node} is not a Gluu node; {why}")]
    NotGluu {
        /// The node.
        node: String,
        /// What needs a Gluu node.
        why: &'static str,
    },
    /// `drain` in a cluster without a load balancer.
    #[error("the cluster has no load balancer (a node with role lb) to drain from")]
    NoLoadBalancer,
    /// A path that is not among a node's managed files.
    #[error(
        "{path} is not a file clustermgr manages on {node}; `clustermgr plan --nodes {node}` lists them"
    )]
    NotManaged {
        /// The node.
        node: String,
        /// The path given.
        path: String,
    },
    /// The command reads what `serve` gathers, and `serve` is not running.
    #[error("{what}; start `clustermgr serve` and run this again{instead}")]
    NeedsServe {
        /// What the command does with serve.
        what: &'static str,
        /// What runs without serve, as ` (...)`, or empty.
        instead: &'static str,
    },
    /// `serve` was started for a home another `serve` already serves.
    #[error(
        "clustermgr serve is already running for {home} (pid {pid}); stop it first (`kill {pid}`, or `systemctl stop clustermgr-serve`)"
    )]
    ServeRunning {
        /// The home.
        home: PathBuf,
        /// The running serve's pid.
        pid: i32,
    },
    /// A question must be asked, and there is no terminal to ask it on.
    #[error("this asks before changing anything, and there is no terminal to ask on; {otherwise}")]
    NoTerminal {
        /// What to run instead (with `--yes`, say).
        otherwise: String,
    },
    /// A directory that cannot be this command's home.
    #[error("{path} {why}")]
    BadHome {
        /// The directory.
        path: PathBuf,
        /// Why not, and what to do.
        why: &'static str,
    },
    /// The agent binary to run or upload is not where it is looked for.
    #[error(
        "cannot find clustermgr-agent next to {beside}; build both binaries with `cargo build --release`"
    )]
    AgentBinaryMissing {
        /// This program, beside which it is looked for.
        beside: PathBuf,
    },
    /// A backup's outcome reported for an audit entry that does not await one.
    #[error("audit entry {id} is not a backup of yours waiting for its outcome")]
    NotPendingBackup {
        /// The audit entry.
        id: u64,
    },
    /// `events ack` was given an event that cannot be acknowledged.
    #[error("health event {id} {why}")]
    NotAcknowledgeable {
        /// The event's number.
        id: u64,
        /// Why not, and what to do.
        why: String,
    },
    /// oxAuth keys cannot be made in this cluster as it is.
    #[error("no oxAuth keys can be made: {why}")]
    KeysUnavailable {
        /// Why not, and what to do.
        why: String,
    },
    /// Making oxAuth keys on the primary failed; nothing was changed.
    #[error("making oxAuth keys on {node} failed: {why}")]
    KeysMaking {
        /// The primary.
        node: String,
        /// What went wrong there, in its words.
        why: String,
    },
    /// `gluu install` will not run on this node as things are.
    #[error("not installing Gluu on {node}: {why}")]
    GluuRefused {
        /// The node.
        node: String,
        /// Why not, and what to do.
        why: String,
    },
    /// `gluu add` in a cluster where no node runs Gluu.
    #[error(
        "no node runs Gluu yet: set up the primary with Gluu's own setup and the others with `clustermgr gluu install NODE`; components come after"
    )]
    NoGluuYet,
    /// A step of `gluu install` failed on a node.
    #[error("installing Gluu failed on {node}: {why}")]
    GluuFailed {
        /// The node the step ran on (the primary, for reading its setup).
        node: String,
        /// What went wrong, and what state things are in.
        why: String,
    },
    /// A rotation of oxAuth's keys was refused, or was kept but not delivered.
    #[error("oxAuth's keys: {why}")]
    KeysRefused {
        /// What happened, and what to do.
        why: String,
    },
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
    /// `node add` of a node the cluster has (without `--reenroll`).
    #[error(
        "{node} is already in the cluster (at {address}); remove it first with `clustermgr node remove {node}`"
    )]
    AlreadyInCluster {
        /// The node.
        node: String,
        /// Where the cluster has it.
        address: String,
    },
    /// `node add` of a node no certificate was signed for.
    #[error(
        "no valid certificate has been signed for {node}: on the host run `clustermgr-agent enroll --name {node}`, sign its CSR with `clustermgr node sign {node} CSR_FILE`, and install the certificate as the agent's cert"
    )]
    NotSigned {
        /// The node.
        node: String,
    },
    /// `node remove` of the primary while other Gluu nodes remain.
    #[error(
        "{node} is the primary Gluu node and other Gluu nodes remain; move the primary first with `clustermgr node set-primary NODE`"
    )]
    PrimaryLast {
        /// The node.
        node: String,
    },
    /// `node set-primary` of a node without the Gluu role.
    #[error("{node} is not a Gluu node, so it cannot be the primary")]
    CannotBePrimary {
        /// The node.
        node: String,
    },
    /// The store changed under an operation (a node removed or re-keyed meanwhile).
    #[error("{0}")]
    StoreChanged(String),
    /// A task inside clustermgr failed (a panic, a worker thread gone): a failure of
    /// this program, never of the command line.
    #[error("{what} failed inside clustermgr ({why}){next}")]
    Internal {
        /// What was being done.
        what: &'static str,
        /// The failure, as the runtime reports it.
        why: String,
        /// What the user can do, as `; ...`, or empty.
        next: &'static str,
    },
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
            | CtlError::BadArgument { .. }
            | CtlError::MissingArgument { .. }
            | CtlError::BadFile { .. }
            | CtlError::BadSetting { .. }
            | CtlError::UnknownSetting { .. }
            | CtlError::NotFromFile { .. }
            | CtlError::BadSelector { .. }
            | CtlError::UnknownRole { .. }
            | CtlError::UnknownMetric { .. }
            | CtlError::UnknownSource { .. }
            | CtlError::NotGluu { .. }
            | CtlError::NoLoadBalancer
            | CtlError::NotManaged { .. }
            | CtlError::NeedsServe { .. }
            | CtlError::ServeRunning { .. }
            | CtlError::NoTerminal { .. }
            | CtlError::BadHome { .. }
            | CtlError::AgentBinaryMissing { .. }
            | CtlError::NotPendingBackup { .. }
            | CtlError::NotAcknowledgeable { .. }
            | CtlError::KeysUnavailable { .. }
            | CtlError::GluuRefused { .. }
            | CtlError::NoGluuYet
            | CtlError::UnknownNode { .. }
            | CtlError::UnknownUser { .. }
            | CtlError::UserExists { .. }
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
