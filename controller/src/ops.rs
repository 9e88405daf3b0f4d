//! Every operation of the controller, in one place. The CLI runs them in-process, and
//! `serve` runs them for CLI clients on its socket: the same function either way,
//! emitting the same [`Event`]s and returning the same [`Report`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clustermgr_protocol::NodeName;
use clustermgr_protocol::frame::{read_message, write_message};
use clustermgr_protocol::identity::CertSummary;
use clustermgr_protocol::message::{
    Command, ExecEvent, ExecInput, ExecSpec, NodeInfo, Reply, Request,
};
use serde::{Deserialize, Serialize};
use tokio::sync::{Semaphore, mpsc};

use crate::CtlError;
use crate::ca::{Ca, Issued, csr_public_key};
use crate::clock::{Clock, rfc3339};
use crate::connect::{AgentConn, FailureKind, NodeFailure};
use crate::exit;
use crate::home::Home;
use crate::selector::select;
use crate::store::{CertKind, ClusterMeta, NodeRecord, Role, Store};

/// How many nodes a fan-out works on at once.
const FANOUT_CAP: usize = 256;

/// An operation, as the CLI asks for it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Operation {
    /// Sign a node's CSR.
    NodeSign {
        /// The node.
        node: String,
        /// The CSR, PEM.
        csr_pem: String,
    },
    /// Add an enrolled node.
    NodeAdd {
        /// The node.
        node: String,
        /// Where its agent listens.
        address: String,
        /// What it does.
        roles: Vec<Role>,
        /// Make it the primary.
        primary: bool,
        /// The node is already in the cluster and its host made a new key: move the
        /// pin to it (keeping its roles) once the agent answers with it, and revoke the
        /// old key's certificates.
        #[serde(default)]
        reenroll: bool,
    },
    /// List the nodes.
    NodeList,
    /// Show one node, live.
    NodeShow {
        /// The node.
        node: String,
    },
    /// Remove a node: unpin and revoke it.
    NodeRemove {
        /// The node.
        node: String,
        /// Have its agent stop and remove itself first.
        #[serde(default)]
        uninstall: bool,
    },
    /// Make a node the primary.
    NodeSetPrimary {
        /// The node.
        node: String,
    },
    /// Check that nodes answer.
    Ping {
        /// Node selector.
        nodes: String,
    },
    /// Run a command on nodes.
    Exec {
        /// Node selector.
        nodes: String,
        /// The command.
        command: Command,
        /// Kill it after this many seconds.
        timeout_secs: Option<u64>,
        /// Run it inside the Gluu container (chrooted into `gluu-root`).
        in_container: bool,
        /// What each node's command reads on its standard input (`--stdin`).
        #[serde(default)]
        stdin: Option<ExecStdin>,
    },
    /// Renew node certificates now, optionally with new keys.
    CertRenew {
        /// Node selector.
        nodes: String,
        /// Have each agent generate a new key; the pin moves to it.
        rekey: bool,
    },
    /// The cluster at a glance.
    Status {
        /// Node selector.
        #[serde(default = "all_nodes")]
        nodes: String,
    },
    /// Every certificate's expiry.
    CertStatus,
    /// Give the controller a new key and certificate now, and have every agent it
    /// reaches refuse the old one.
    ControllerRevoke,
    /// The newest entries of the audit log.
    Audit {
        /// How many.
        limit: usize,
    },
    /// Change a cluster setting.
    ClusterSet {
        /// The setting.
        key: String,
        /// Its new value.
        value: String,
    },
    /// Store a secret setting (the cluster's TLS certificate or key), read from a file
    /// by the CLI.
    ClusterSetSecret {
        /// The setting.
        key: String,
        /// The file's text.
        pem: crate::desired::SecretText,
    },
    /// Show the cluster settings.
    /// `cluster unset KEY`.
    ClusterUnset {
        /// The setting.
        key: String,
    },
    ClusterShow,
    /// Compare the desired configuration with the nodes (or, with `drift`, what was
    /// last applied with the nodes).
    Plan {
        /// Node selector.
        nodes: String,
        /// Report hand edits since the last apply instead.
        drift: bool,
    },
    /// Apply the desired configuration.
    Apply {
        /// Node selector.
        nodes: String,
        /// One node at a time, stopping at the first failure.
        rolling: bool,
        /// The digest of the plan the user approved: refused if the plan would differ.
        #[serde(default)]
        plan: Option<String>,
    },
    /// Log lines from the telemetry store, and with `follow` as they come.
    Logs(crate::telemetry::LogsSpec),
    /// Metric values from the telemetry store.
    Metrics(crate::telemetry::MetricsSpec),
    /// A row per node from the latest ticks (`serve` only).
    Top {
        /// Node selector.
        nodes: String,
    },
    /// One round of health checks, judged across the cluster.
    Health {
        /// Node selector (of the nodes shown; every node is asked).
        nodes: String,
    },
    /// One round's replication picture: heartbeat lags, CSNs, links.
    Replication,
    /// One round's port matrix.
    Ports,
    /// The stored health changes, and with `follow` each new one.
    Events {
        /// Only since then (`10m`, an RFC 3339 time).
        since: Option<String>,
        /// Keep printing new ones (`serve` only).
        follow: bool,
        /// How many of the newest.
        limit: usize,
    },
    /// The change history.
    History {
        /// Node selector.
        nodes: String,
        /// Only this path.
        path: Option<String>,
        /// How many of the newest lines.
        limit: usize,
    },
    /// Restore a kept version of a managed file, or list them.
    Rollback {
        /// The node.
        node: String,
        /// The path.
        path: String,
        /// The generation (1 is the newest).
        generation: Option<u32>,
        /// List the generations instead.
        list: bool,
        /// The copy inside the Gluu container (for a path in both scopes).
        in_container: bool,
    },
    /// Acknowledge a health event: someone has seen the problem and is on it.
    EventAck {
        /// The event's number.
        id: u64,
        /// What they say about it (may be empty).
        note: String,
    },
    /// Install Gluu on a node from the primary's setup.
    GluuInstall {
        /// The node.
        node: String,
        /// Reinstall over a Gluu the node already runs (moved aside first).
        force: bool,
        /// The password of the primary's `setup.properties.last.enc`, when its LDAP
        /// password is not it.
        setup_password: Option<crate::desired::SecretText>,
    },
    /// Add Gluu components after setup on every Gluu node.
    GluuAdd {
        /// The components (`shibboleth`, `passport`, `casa`, `oxd`).
        components: Vec<String>,
    },
    /// Make a new generation of oxAuth keys and give it to every Gluu node.
    KeysRotate,
    /// The oxAuth keys and each Gluu node's copy.
    KeysStatus,
    /// Mark a Gluu node down (or up again) on the load balancer.
    Drain {
        /// The node.
        node: String,
        /// Put it back instead.
        undrain: bool,
    },
    /// A consistent snapshot of the store for `backup`, sent as [`Event::Snapshot`]
    /// parts. The CLI adds the CA from the home and seals the archive itself, so no
    /// key crosses serve's socket.
    Snapshot {
        /// The archive it is for, as the audit log records it.
        file: String,
    },
    /// What became of a backup: its audit entry (from [`Report::Snapshot`]) gets the
    /// outcome once the CLI has written the archive, or failed to.
    BackupFinished {
        /// The backup's audit entry.
        audit_id: u64,
        /// `written ...` or `failed: ...`.
        outcome: String,
    },
    /// Replace the agents' binary through the agents, one node at a time.
    NodeUpgrade {
        /// Node selector.
        nodes: String,
        /// The binary to install (absolute); the default agent binary when absent.
        agent_binary: Option<String>,
        /// How long each new agent waits for the confirmation before it rolls back.
        commit_within_secs: u64,
    },
    /// Make a console account (`user add`): the CLI sends the password's argon2id
    /// hash, never the password.
    UserAdd {
        /// The account.
        name: String,
        /// Its role.
        role: crate::access::UserRole,
        /// `$argon2id$...`.
        password_hash: crate::desired::SecretText,
    },
    /// Give an account a new password (`user passwd`).
    UserPasswd {
        /// The account.
        name: String,
        /// `$argon2id$...`.
        password_hash: crate::desired::SecretText,
    },
    /// Remove an account with its tokens (`user remove`).
    UserRemove {
        /// The account.
        name: String,
    },
    /// The accounts (`user list`).
    UserList,
    /// Keep a new API token's digest (`user token`); the CLI made the token and prints
    /// it once.
    UserToken {
        /// The account.
        name: String,
        /// The token's SHA-256, hex.
        sha256: String,
    },
}

impl Operation {
    /// The least role that may run it: viewers read everything but secrets; operators
    /// also drain, plan and follow logs; admins also change anything.
    pub fn needs(&self) -> crate::access::UserRole {
        use crate::access::UserRole::{Admin, Operator, Viewer};
        match self {
            Operation::NodeList
            | Operation::NodeShow { .. }
            | Operation::Ping { .. }
            | Operation::Status { .. }
            | Operation::CertStatus
            | Operation::Audit { .. }
            | Operation::ClusterShow
            | Operation::Metrics(_)
            | Operation::Top { .. }
            | Operation::Health { .. }
            | Operation::Replication
            | Operation::Ports
            | Operation::Events { .. }
            | Operation::KeysStatus
            | Operation::History { .. } => Viewer,
            Operation::Logs(spec) if !spec.follow => Viewer,
            Operation::Rollback { list: true, .. } => Viewer,
            Operation::Logs(_)
            | Operation::Plan { .. }
            | Operation::Drain { .. }
            | Operation::EventAck { .. } => Operator,
            Operation::NodeSign { .. }
            | Operation::NodeAdd { .. }
            | Operation::NodeRemove { .. }
            | Operation::NodeSetPrimary { .. }
            | Operation::Exec { .. }
            | Operation::CertRenew { .. }
            | Operation::ControllerRevoke
            | Operation::ClusterSet { .. }
            | Operation::ClusterSetSecret { .. }
            | Operation::ClusterUnset { .. }
            | Operation::Apply { .. }
            | Operation::KeysRotate
            | Operation::GluuInstall { .. }
            | Operation::GluuAdd { .. }
            | Operation::Rollback { .. }
            | Operation::Snapshot { .. }
            | Operation::BackupFinished { .. }
            | Operation::NodeUpgrade { .. }
            | Operation::UserAdd { .. }
            | Operation::UserPasswd { .. }
            | Operation::UserRemove { .. }
            | Operation::UserList
            | Operation::UserToken { .. } => Admin,
        }
    }

    /// The command that asks for it, for messages.
    pub fn command(&self) -> &'static str {
        match self {
            Operation::NodeSign { .. } => "node sign",
            Operation::NodeAdd { .. } => "node add",
            Operation::NodeList => "node list",
            Operation::NodeShow { .. } => "node show",
            Operation::NodeRemove { .. } => "node remove",
            Operation::NodeSetPrimary { .. } => "node set-primary",
            Operation::Ping { .. } => "ping",
            Operation::Exec { .. } => "exec",
            Operation::CertRenew { .. } => "cert renew",
            Operation::Status { .. } => "status",
            Operation::CertStatus => "cert status",
            Operation::ControllerRevoke => "cert revoke-controller",
            Operation::Audit { .. } => "audit",
            Operation::ClusterSet { .. } | Operation::ClusterSetSecret { .. } => "cluster set",
            Operation::ClusterUnset { .. } => "cluster unset",
            Operation::ClusterShow => "cluster show",
            Operation::Plan { drift: true, .. } => "drift",
            Operation::Plan { .. } => "plan",
            Operation::Apply { .. } => "apply",
            Operation::Logs(s) if s.follow => "logs -f",
            Operation::Logs(_) => "logs",
            Operation::Metrics(_) => "metrics",
            Operation::Top { .. } => "top",
            Operation::Health { .. } => "health",
            Operation::Replication => "replication",
            Operation::Ports => "ports",
            Operation::Events { .. } => "events",
            Operation::EventAck { .. } => "events ack",
            Operation::KeysRotate => "keys rotate",
            Operation::GluuInstall { .. } => "gluu install",
            Operation::GluuAdd { .. } => "gluu add",
            Operation::KeysStatus => "keys status",
            Operation::History { .. } => "history",
            Operation::Rollback { list: true, .. } => "rollback --list",
            Operation::Rollback { .. } => "rollback",
            Operation::Drain { undrain: true, .. } => "undrain",
            Operation::Drain { .. } => "drain",
            Operation::Snapshot { .. } | Operation::BackupFinished { .. } => "backup",
            Operation::NodeUpgrade { .. } => "node upgrade",
            Operation::UserAdd { .. } => "user add",
            Operation::UserPasswd { .. } => "user passwd",
            Operation::UserRemove { .. } => "user remove",
            Operation::UserList => "user list",
            Operation::UserToken { .. } => "user token",
        }
    }

    /// Refuses it unless `role` may run it; `who` names the caller.
    pub fn allowed(&self, who: &str, role: crate::access::UserRole) -> Result<(), CtlError> {
        let needs = self.needs();
        if role >= needs {
            return Ok(());
        }
        Err(CtlError::Forbidden {
            who: who.to_string(),
            article: if role == crate::access::UserRole::Viewer {
                "a"
            } else {
                "an"
            },
            role,
            what: format!("`{}`", self.command()),
            needs,
        })
    }
}

/// An operation and who asked for it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Invocation {
    /// The local user.
    pub user: String,
    /// The operation.
    pub op: Operation,
    /// The caller's `--connect-timeout`, if it gave one; else the controller's setting.
    pub connect_timeout_ms: Option<u64>,
}

/// A node as shown by `node list` and `node show`.
#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct NodeView {
    /// Its name.
    pub name: String,
    /// Where its agent listens.
    pub address: String,
    /// Its roles.
    pub roles: Vec<Role>,
    /// Whether it is the primary Gluu node.
    pub primary: bool,
    /// The pinned key.
    pub key: String,
    /// Its certificate's serial.
    pub cert_serial: String,
    /// Its certificate's expiry.
    #[schemars(extend("format" = "date-time"))]
    pub cert_expires: String,
    /// When it was added.
    #[schemars(extend("format" = "date-time"))]
    pub added: String,
    /// Live host facts (`node show`, `node add`).
    pub host: Option<Box<HostView>>,
    /// Why live facts are missing, if they are.
    pub error: Option<String>,
}

impl NodeView {
    fn from_record(n: &NodeRecord) -> Self {
        NodeView {
            name: n.name.clone(),
            address: n.address.clone(),
            roles: n.roles.clone(),
            primary: n.primary,
            key: n.pinned_key.clone(),
            cert_serial: n.cert_serial.clone(),
            cert_expires: rfc3339(n.cert_not_after),
            added: rfc3339(n.added_at),
            host: None,
            error: None,
        }
    }
}

/// A host's facts as its agent reported them (`node show`, `ping`).
#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct HostView {
    /// Its hostname.
    pub hostname: String,
    /// `PRETTY_NAME` of its os-release.
    pub os_release: String,
    /// The kernel release.
    pub kernel: String,
    /// The machine architecture.
    pub arch: String,
    /// glibc's version, none on a musl system.
    pub glibc: Option<String>,
    /// The agent's version.
    pub agent_version: String,
    /// Seconds since the host booted.
    pub uptime_secs: u64,
    /// The host's clock when it answered.
    pub clock: crate::clock::Moment,
    /// Its Gluu install, if any.
    pub gluu: Option<GluuView>,
    /// Whether its agent runs commands (`allow_exec`).
    pub exec_allowed: bool,
}

/// A Gluu install on a host.
#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct GluuView {
    /// Its version, when the agent could tell.
    pub version: Option<String>,
    /// Where it is installed (its container root).
    pub root: String,
    /// The components found (`oxauth`, `identity`, ...).
    pub components: Vec<String>,
}

impl From<&NodeInfo> for HostView {
    fn from(i: &NodeInfo) -> HostView {
        HostView {
            hostname: i.hostname.clone(),
            os_release: i.os_release.clone(),
            kernel: i.kernel.clone(),
            arch: i.arch.clone(),
            glibc: i.glibc.clone(),
            agent_version: i.agent_version.clone(),
            uptime_secs: i.uptime_secs,
            clock: crate::clock::Moment::of_ms(i.clock_unix_ms),
            gluu: i.gluu.as_ref().map(|g| GluuView {
                version: g.version.clone(),
                root: g.root.clone(),
                components: g.components.clone(),
            }),
            exec_allowed: i.exec_allowed,
        }
    }
}

/// A certificate as `cert status` shows it.
#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CertView {
    /// `ca`, `controller`, or the node name.
    pub subject: String,
    /// Serial, hex.
    pub serial: String,
    /// Expiry.
    #[schemars(extend("format" = "date-time"))]
    pub expires: String,
    /// Whole days left (negative once expired).
    pub days_left: i64,
    /// `ok`, `renew-due`, `expired` or `revoked`.
    pub state: String,
}

/// One node in `status`.
#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct NodeStatus {
    /// The node.
    pub name: String,
    /// Its roles.
    pub roles: Vec<Role>,
    /// Whether it is the primary.
    pub primary: bool,
    /// Ok, failed or unreachable.
    pub state: NodeState,
    /// Round trip, microseconds.
    pub rtt_us: Option<u64>,
    /// The agent's version.
    pub agent_version: Option<String>,
    /// The host's OS.
    pub os: Option<String>,
    /// The Gluu install, if any (`4.2.3 in /opt/gluu-server-4.2.3`).
    pub gluu: Option<String>,
    /// The node's clock minus ours, milliseconds (approximate).
    pub clock_skew_ms: Option<i64>,
    /// Days until its certificate expires.
    pub cert_days_left: i64,
    /// What is wrong, if anything.
    pub message: Option<String>,
}

/// `status`.
#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct StatusView {
    /// The cluster name.
    pub cluster: String,
    /// The nodes.
    pub nodes: Vec<NodeStatus>,
}

/// A signed certificate, for `node sign`.
#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SignedView {
    /// The node.
    pub node: String,
    /// Serial, hex.
    pub serial: String,
    /// Expiry.
    #[schemars(extend("format" = "date-time"))]
    pub expires: String,
    /// The certified key.
    pub key: String,
    /// The certificate, PEM.
    pub cert_pem: String,
}

/// One audit log entry, as `audit` shows it.
#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct AuditView {
    /// Its number.
    pub id: u64,
    /// When, RFC 3339.
    #[schemars(extend("format" = "date-time"))]
    pub time: String,
    /// When, Unix milliseconds.
    pub time_ms: i64,
    /// Who.
    pub user: String,
    /// What.
    pub action: String,
    /// On which nodes.
    pub nodes: Vec<String>,
    /// The command or other detail.
    pub detail: String,
    /// Per node outcome.
    pub results: Vec<AuditResult>,
}

/// One node's outcome in an audit entry.
#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct AuditResult {
    /// The node.
    pub node: String,
    /// How it went, in words.
    pub result: String,
}

/// The result of an operation.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Report {
    /// `node sign`.
    Signed(SignedView),
    /// `node add`, `node show`.
    Node(NodeView),
    /// `node list`.
    Nodes(Vec<NodeView>),
    /// `node remove`, `node set-primary`: a sentence.
    Done(String),
    /// `ping`, `exec`: one outcome per node.
    Outcomes(Vec<NodeOutcome>),
    /// `cert revoke-controller`: the certificates, and which agents know.
    ControllerRevoked(ControllerRevokedView),
    /// `status`.
    Status(StatusView),
    /// `cert status`.
    Certs(Vec<CertView>),
    /// `audit`.
    Audit(Vec<AuditView>),
    /// `plan`, `drift`.
    Plan {
        /// Per node.
        views: Vec<crate::desired::NodePlanView>,
        /// Whether this is a drift report.
        drift: bool,
        /// A plan's digest, which `apply --plan` takes (none for drift).
        digest: Option<String>,
    },
    /// `apply`, `drain`, `rollback`.
    Applied(Vec<crate::desired::NodeApplyView>),
    /// `history`.
    History(Vec<crate::desired::ChangeView>),
    /// Log lines (`logs`; empty after `logs -f`, whose lines came as events).
    Logs(Vec<crate::telemetry::store::NodeLine>),
    /// The metrics there are.
    MetricNames(Vec<crate::telemetry::MetricName>),
    /// One metric's series.
    Metrics(Vec<crate::telemetry::SeriesView>),
    /// `top`'s rows.
    Top {
        /// The cluster's name, for the screen's header.
        cluster: String,
        /// A row per node.
        rows: Vec<crate::telemetry::top::TopRow>,
    },
    /// `health`.
    Health(crate::health::HealthView),
    /// `replication`.
    Replication(crate::health::replication::ReplicationView),
    /// `ports`.
    Ports(crate::health::ports::PortsView),
    /// `events` (empty after `events -f`, whose events came as [`Event::Health`]),
    /// `events ack` (the one event).
    Events(Vec<crate::health::EventRecord>),
    /// `cluster show`.
    Cluster(Box<crate::desired::ClusterView>),
    /// `rollback --list`.
    Generations {
        /// The node.
        node: String,
        /// The path.
        path: String,
        /// The kept versions.
        generations: Vec<crate::desired::GenerationView>,
    },
    /// `user ...`.
    User(crate::users::View),
    /// `keys rotate`, `keys status`.
    Keys(Box<crate::desired::keys::KeysView>),
    /// `gluu install`.
    GluuInstall(Box<crate::desired::gluu::GluuInstallView>),
    /// `gluu add`.
    GluuAdd(Box<crate::desired::gluu::GluuAddView>),
    /// A store snapshot was sent in [`Event::Snapshot`] parts of this many bytes in all.
    Snapshot {
        /// The total length, for the receiver to check that every part arrived.
        bytes: u64,
        /// The backup's audit entry, which awaits its outcome.
        audit_id: u64,
    },
}

impl From<crate::desired::View> for Report {
    fn from(v: crate::desired::View) -> Report {
        use crate::desired::View;
        match v {
            View::Plan {
                views,
                drift,
                digest,
            } => Report::Plan {
                views,
                drift,
                digest,
            },
            View::Applied(v) => Report::Applied(v),
            View::History(h) => Report::History(h),
            View::Cluster(c) => Report::Cluster(c),
            View::Generations {
                node,
                path,
                generations,
            } => Report::Generations {
                node,
                path,
                generations,
            },
        }
    }
}

impl From<crate::health::View> for Report {
    fn from(v: crate::health::View) -> Report {
        use crate::health::View;
        match v {
            View::Health(h) => Report::Health(h),
            View::Replication(r) => Report::Replication(r),
            View::Ports(p) => Report::Ports(p),
            View::Events(e) => Report::Events(e),
        }
    }
}

impl From<crate::telemetry::View> for Report {
    fn from(v: crate::telemetry::View) -> Report {
        use crate::telemetry::View;
        match v {
            View::Logs(l) => Report::Logs(l),
            View::MetricNames(n) => Report::MetricNames(n),
            View::Metrics(m) => Report::Metrics(m),
            View::Top { cluster, rows } => Report::Top { cluster, rows },
        }
    }
}

impl Report {
    /// The exit code the CLI ends with: 1 when any node failed or was unreachable.
    pub fn exit_code(&self) -> i32 {
        let bad = |s: &NodeState| *s != NodeState::Ok;
        match self {
            Report::Outcomes(o) if o.iter().any(|o| bad(&o.state)) => exit::FAILED,
            Report::Status(s) if s.nodes.iter().any(|n| bad(&n.state)) => exit::FAILED,
            Report::Plan { views, .. } if views.iter().any(|v| bad(&v.state)) => exit::FAILED,
            // `drift` exits 2 when it found hand edits, so monitoring can call it.
            Report::Plan {
                views, drift: true, ..
            } if views.iter().any(|v| !v.entries.is_empty()) => exit::DRIFT_FOUND,
            Report::Applied(v) if v.iter().any(|v| bad(&v.state)) => exit::FAILED,
            Report::GluuInstall(g) if !g.ok => exit::FAILED,
            Report::GluuAdd(g) if !g.ok => exit::FAILED,
            // A node without the cluster's keys is a failure monitoring should see.
            Report::Keys(k)
                if k.nodes.iter().any(|n| {
                    n.keystore != "matches"
                        || n.published.as_deref().is_some_and(|p| p != "matches")
                }) =>
            {
                exit::FAILED
            }
            // What could not be read is named in the report; monitoring sees it here.
            Report::Replication(r) if !r.unread.is_empty() || r.nodes.is_empty() => exit::FAILED,
            // Nagios-style: 0 ok, 1 warning, 2 critical, 3 unknown.
            Report::Health(h) => h.worst.exit_code(),
            Report::Ports(p) => p.worst.exit_code(),
            _ => exit::OK,
        }
    }
}

pub use crate::ctx::{Ctx, CtxOptions, Event, NodeOutcome, NodeState, Pool, audit_user};
pub(crate) use crate::ctx::{PendingAudit, REQUEST_TIMEOUT, cert_record, read_file, write_file};

/// Creates a new cluster in `dir`: its CA, the controller's certificate and the store.
/// The longest node or controller certificate `init` allows: 825 days, the longest
/// public TLS certificates may live, far inside the CA's ten years.
pub const MAX_CERT_DAYS: u32 = 825;

pub fn init(
    dir: &std::path::Path,
    cluster: &str,
    cert_lifetime_days: u32,
    clock: &dyn Clock,
) -> Result<ClusterMeta, CtlError> {
    // It names the CA and the controller's certificate, the telemetry and the prompts:
    // a name a shell, a certificate and a metric label all take as it is.
    let name_ok = cluster.len() <= 63
        && cluster.starts_with(|c: char| c.is_ascii_alphanumeric())
        && cluster
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if !name_ok {
        return Err(CtlError::BadArgument {
            flag: "--cluster",
            value: format!("{cluster:?}"),
            why: "a cluster name is 1 to 63 letters, digits, `-`, `_` or `.`, starting with a letter or digit, such as prod-gluu".into(),
        });
    }
    if !(2..=MAX_CERT_DAYS).contains(&cert_lifetime_days) {
        return Err(CtlError::BadArgument {
            flag: "--cert-days",
            value: cert_lifetime_days.to_string(),
            why: format!(
                "node and controller certificates live 2 to {MAX_CERT_DAYS} days (they renew themselves past two thirds of their life, and must end well before the CA's ten years)"
            ),
        });
    }
    let home = Home::create(dir)?;
    let now = clock.now();
    let (ca, ca_key) = Ca::create(cluster, now)?;
    let lifetime = time::Duration::days(cert_lifetime_days.into());
    let (ctrl, ctrl_key) = ca.issue_controller(cluster, now, lifetime, None)?;
    write_file(&home.ca_key(), &ca_key, 0o600)?;
    write_file(&home.controller_key(), &ctrl_key, 0o600)?;
    write_file(&home.controller_cert(), &ctrl.pem, 0o644)?;
    let meta = ClusterMeta {
        name: cluster.to_string(),
        cert_lifetime_days,
        created_at: now.unix_timestamp(),
    };
    write_file(&home.config(), crate::config::EXAMPLE, 0o644)?;
    let store = Store::create(&home.store(), &meta)?;
    let ca_summary = CertSummary::parse_pem(ca.cert_pem())?;
    store.put_cert(&cert_record(CertKind::Ca, None, &ca_summary))?;
    store.put_cert(&cert_record(CertKind::Controller, None, &ctrl.summary))?;
    // The CA certificate is written last: its presence is what marks a complete home.
    write_file(&home.ca_cert(), ca.cert_pem(), 0o644)?;
    Ok(meta)
}

/// Runs one operation. Progress goes to `events`; when its receiver is gone (the CLI
/// went away) the operation stops and in-flight commands are cancelled on the agents.
pub async fn run(
    ctx: Arc<Ctx>,
    inv: Invocation,
    events: mpsc::Sender<Event>,
) -> Result<Report, CtlError> {
    let user = inv.user.as_str();
    let within = inv
        .connect_timeout_ms
        .map(Duration::from_millis)
        .unwrap_or(ctx.dialer.connect_timeout);
    match inv.op {
        Operation::NodeSign { node, csr_pem } => node_sign(&ctx, user, &node, &csr_pem),
        Operation::NodeAdd {
            node,
            address,
            roles,
            primary,
            reenroll,
        } => {
            let add = NodeAdd {
                node: &node,
                address: &address,
                roles,
                primary,
                reenroll,
            };
            node_add(&ctx, user, add, within).await
        }
        Operation::NodeList => Ok(Report::Nodes(
            ctx.store
                .nodes()?
                .iter()
                .map(NodeView::from_record)
                .collect(),
        )),
        Operation::NodeShow { node } => {
            let rec = ctx.node_named(&node)?;
            let mut view = NodeView::from_record(&rec);
            match info(&ctx, &rec, within).await {
                Ok((info, _)) => view.host = Some(Box::new(HostView::from(&*info))),
                Err(f) => view.error = Some(f.message),
            }
            Ok(Report::Node(view))
        }
        Operation::NodeRemove { node, uninstall } => {
            node_remove(&ctx, user, &node, uninstall, within).await
        }
        Operation::NodeSetPrimary { node } => set_primary(&ctx, user, &node),
        Operation::Ping { nodes } => {
            let nodes = select(&ctx.store.nodes()?, &nodes)?;
            Ok(Report::Outcomes(ping(&ctx, nodes, within, &events).await))
        }
        Operation::Exec {
            nodes,
            command,
            timeout_secs,
            in_container,
            stdin,
        } => {
            let run = ExecRun {
                command,
                timeout_secs,
                in_container,
                stdin: stdin.map(|s| Arc::new(s.0)),
            };
            exec(&ctx, user, &nodes, run, within, &events).await
        }
        Operation::CertRenew { nodes, rekey } => {
            let nodes = select(&ctx.store.nodes()?, &nodes)?;
            let names: Vec<String> = nodes.iter().map(|n| n.name.clone()).collect();
            let detail = if rekey { "new keys" } else { "same keys" };
            let (id, audit) = ctx.audit(user, "cert renew", &names, detail)?;
            let mut pending = PendingAudit::new(&ctx.store, id, audit);
            let outcomes = cert_renew(&ctx, nodes, rekey, within, &events).await;
            pending.finish(
                outcomes
                    .iter()
                    .map(|o| {
                        let outcome = if o.state == NodeState::Ok {
                            "renewed".to_string()
                        } else {
                            outcome_text(o)
                        };
                        (o.node.clone(), outcome)
                    })
                    .collect(),
            )?;
            Ok(Report::Outcomes(outcomes))
        }
        Operation::Status { nodes } => status(&ctx, &nodes, within, &events).await,
        Operation::CertStatus => cert_status(&ctx),
        Operation::ControllerRevoke => controller_revoke(&ctx, user, within, &events).await,
        Operation::Audit { limit } => Ok(Report::Audit(
            ctx.store
                .audit(limit)?
                .into_iter()
                .map(|(id, a)| AuditView {
                    id,
                    time: crate::clock::rfc3339_ms(a.time_ms),
                    time_ms: a.time_ms,
                    user: a.user,
                    action: a.action,
                    nodes: a.nodes,
                    detail: a.detail,
                    results: a
                        .results
                        .into_iter()
                        .map(|(node, result)| AuditResult { node, result })
                        .collect(),
                })
                .collect(),
        )),
        Operation::Snapshot { file } => snapshot(&ctx, user, &file, &events).await,
        Operation::BackupFinished { audit_id, outcome } => {
            ctx.backup_finished(user, audit_id, &outcome)?;
            Ok(Report::Done(outcome))
        }
        Operation::ClusterSet { key, value } => {
            crate::desired::cluster_set(&ctx, user, &key, &value).map(Report::from)
        }
        Operation::ClusterSetSecret { key, pem } => {
            crate::desired::cluster_set_secret(&ctx, user, &key, &pem).map(Report::from)
        }
        Operation::ClusterUnset { key } => {
            crate::desired::cluster_unset(&ctx, user, &key).map(Report::from)
        }
        Operation::ClusterShow => crate::desired::cluster_show(&ctx).map(Report::from),
        Operation::UserAdd {
            name,
            role,
            password_hash,
        } => crate::users::add(&ctx, user, &name, role, &password_hash.0).map(Report::User),
        Operation::UserPasswd {
            name,
            password_hash,
        } => crate::users::passwd(&ctx, user, &name, &password_hash.0).map(Report::User),
        Operation::UserRemove { name } => crate::users::remove(&ctx, user, &name).map(Report::User),
        Operation::UserList => crate::users::list(&ctx).map(Report::User),
        Operation::UserToken { name, sha256 } => {
            crate::users::token(&ctx, user, &name, &sha256).map(Report::User)
        }
        Operation::Plan { nodes, drift } => crate::desired::plan(&ctx, &nodes, drift, within)
            .await
            .map(Report::from),
        Operation::Apply {
            nodes,
            rolling,
            plan,
        } => {
            let ask = crate::desired::ApplyAsk {
                selector: &nodes,
                rolling,
                approved: plan.as_deref(),
                on_behalf: None,
            };
            crate::desired::apply(&ctx, user, &ask, within, &events)
                .await
                .map(Report::from)
        }
        Operation::Logs(spec) => crate::telemetry::logs(&ctx, &spec, &events)
            .await
            .map(Report::from),
        Operation::Metrics(spec) => crate::telemetry::metrics(&ctx, &spec).map(Report::from),
        Operation::Top { nodes } => {
            let latest = crate::health::latest(&ctx);
            let worst = |node: &str| crate::health::worst_word(latest.as_deref(), node);
            crate::telemetry::top(&ctx, &nodes, &worst).map(Report::from)
        }
        Operation::Health { nodes } => crate::health::health(&ctx, &nodes, within)
            .await
            .map(Report::from),
        Operation::Replication => crate::health::replication(&ctx, within)
            .await
            .map(Report::from),
        Operation::Ports => crate::health::ports(&ctx, within).await.map(Report::from),
        Operation::Events {
            since,
            follow,
            limit,
        } => crate::health::events(&ctx, since.as_deref(), follow, limit, &events)
            .await
            .map(Report::from),
        Operation::History { nodes, path, limit } => {
            crate::desired::history(&ctx, &nodes, path.as_deref(), limit).map(Report::from)
        }
        Operation::Rollback {
            node,
            path,
            generation,
            list,
            in_container,
        } => {
            let what = crate::desired::RollbackSpec {
                node: &node,
                path: &path,
                generation,
                list,
                in_container,
            };
            crate::desired::rollback(&ctx, user, &what, within)
                .await
                .map(Report::from)
        }
        Operation::EventAck { id, note } => {
            crate::health::acknowledge(&ctx, user, id, &note).map(Report::from)
        }
        Operation::KeysRotate => crate::desired::keys::rotate(&ctx, user, within, &events)
            .await
            .map(|v| Report::Keys(Box::new(v))),
        Operation::GluuInstall {
            node,
            force,
            setup_password,
        } => crate::desired::gluu::install(
            &ctx,
            user,
            &node,
            force,
            setup_password.as_ref().map(|p| p.0.as_str()),
            within,
            &events,
        )
        .await
        .map(|v| Report::GluuInstall(Box::new(v))),
        Operation::GluuAdd { components } => {
            crate::desired::gluu::add(&ctx, user, &components, within, &events)
                .await
                .map(|v| Report::GluuAdd(Box::new(v)))
        }
        Operation::KeysStatus => crate::desired::keys::status(&ctx)
            .await
            .map(|v| Report::Keys(Box::new(v))),
        Operation::Drain { node, undrain } => {
            crate::desired::drain(&ctx, user, &node, !undrain, within, &events)
                .await
                .map(Report::from)
        }
        Operation::NodeUpgrade {
            nodes,
            agent_binary,
            commit_within_secs,
        } => {
            let commit_within = Duration::from_secs(commit_within_secs);
            let binary = agent_binary.as_deref();
            crate::upgrade::node_upgrade(&ctx, user, &nodes, binary, commit_within, within, &events)
                .await
                .map(Report::Outcomes)
        }
    }
}

fn node_sign(ctx: &Ctx, user: &str, node: &str, csr_pem: &str) -> Result<Report, CtlError> {
    let name = NodeName::new(node)?;
    let key = csr_public_key(&name, csr_pem)?;
    let Issued { pem, summary } = ctx
        .ca
        .sign_node(&name, &key, ctx.clock.now(), ctx.lifetime())?;
    ctx.store
        .put_cert(&cert_record(CertKind::Node, Some(node), &summary))?;
    ctx.audited(
        user,
        "node sign",
        &[node.to_string()],
        &format!("key {}", summary.key_fingerprint),
        &format!("signed, serial {}", summary.serial),
    )?;
    Ok(Report::Signed(SignedView {
        node: node.to_string(),
        serial: summary.serial,
        expires: rfc3339(summary.not_after),
        key: summary.key_fingerprint,
        cert_pem: pem,
    }))
}

/// What `node add` is asked to record.
struct NodeAdd<'a> {
    node: &'a str,
    address: &'a str,
    roles: Vec<Role>,
    primary: bool,
    reenroll: bool,
}

async fn node_add(
    ctx: &Ctx,
    user: &str,
    add: NodeAdd<'_>,
    within: Duration,
) -> Result<Report, CtlError> {
    let NodeAdd {
        node,
        address,
        roles,
        primary,
        reenroll,
    } = add;
    NodeName::new(node)?;
    let existing = ctx.store.node(node)?;
    if let Some(existing) = &existing
        && !reenroll
    {
        return Err(CtlError::AlreadyInCluster {
            node: node.to_string(),
            address: existing.address.clone(),
        });
    }
    let now = ctx.clock.unix();
    let cert = ctx
        .store
        .certs()?
        .into_iter()
        .filter(|c| {
            c.kind == CertKind::Node && c.node.as_deref() == Some(node) && c.revoked_at.is_none()
        })
        .filter(|c| c.not_after > now)
        .max_by_key(|c| c.not_before)
        .ok_or_else(|| CtlError::NotSigned {
            node: node.to_string(),
        })?;
    // A re-enrolled node keeps what it does; only its key and address change.
    let (roles, primary) = match &existing {
        Some(e) => (e.roles.clone(), e.primary),
        None if roles.is_empty() => (vec![Role::Gluu], primary),
        None => (roles, primary),
    };
    let all = ctx.store.nodes()?;
    let gluu = roles.contains(&Role::Gluu);
    if primary && !gluu {
        return Err(CtlError::NotGluu {
            node: node.to_string(),
            why: "only a Gluu node can be the primary",
        });
    }
    // Asked for, or the first Gluu node; the latter decided again when the record is
    // written, since a node asked to be the primary may be added meanwhile (`node add
    // --from` adds its hosts at once).
    let asked = primary;
    let primary = asked || (gluu && !all.iter().any(|n| n.primary && n.name != node));
    let mut rec = NodeRecord {
        name: node.to_string(),
        address: address.to_string(),
        roles,
        primary,
        pinned_key: cert.key_fingerprint.clone(),
        pending_key: None,
        cert_serial: cert.serial.clone(),
        cert_not_after: cert.not_after,
        added_at: existing.as_ref().map_or(now, |e| e.added_at),
    };
    // Nothing is recorded until the agent has answered as the pinned node. The node is
    // not in the store yet, so this probe dials directly, outside the pool.
    let probe = async {
        let conn = ctx.dialer.connect_within(&rec, within).await?;
        let reply = conn.unary(&Request::Info, REQUEST_TIMEOUT).await;
        conn.conn.close(quinn::VarInt::from_u32(0), b"probe done");
        match reply? {
            Reply::Info(info) => Ok(info),
            other => Err(NodeFailure::failed(format!(
                "unexpected reply to Info: {other:?}"
            ))),
        }
    };
    let info = probe.await.map_err(|f: NodeFailure| CtlError::Agent {
        node: node.to_string(),
        message: format!("{} (the node was not added)", f.message),
    })?;
    if existing.is_some() {
        ctx.store.repin(&rec, now)?;
        ctx.audited(
            user,
            "node reenroll",
            &[node.to_string()],
            &format!("key {}", rec.pinned_key),
            "pinned anew",
        )?;
        let mut view = NodeView::from_record(&rec);
        view.host = Some(Box::new(HostView::from(&*info)));
        return Ok(Report::Node(view));
    }
    // Against the records as they are now, not as read before the round trip to the
    // agent: an explicit primary takes over; a first-Gluu one only if there is still
    // no primary.
    ctx.store.update_nodes(|all| {
        let others = all.iter().filter(|n| n.name != node);
        rec.primary = asked || (gluu && !others.clone().any(|n| n.primary));
        let mut changed: Vec<NodeRecord> = Vec::new();
        if rec.primary {
            changed.extend(others.filter(|n| n.primary).map(|n| NodeRecord {
                primary: false,
                ..n.clone()
            }));
        }
        changed.push(rec.clone());
        changed
    })?;
    ctx.audited(user, "node add", &[node.to_string()], address, "added")?;
    let mut view = NodeView::from_record(&rec);
    view.host = Some(Box::new(HostView::from(&*info)));
    Ok(Report::Node(view))
}

async fn node_remove(
    ctx: &Ctx,
    user: &str,
    node: &str,
    uninstall: bool,
    within: Duration,
) -> Result<Report, CtlError> {
    let rec = ctx.node_named(node)?;
    let others = ctx
        .store
        .nodes()?
        .into_iter()
        .filter(|n| n.name != node && n.has_role(Role::Gluu))
        .count();
    if rec.primary && others > 0 {
        return Err(CtlError::PrimaryLast {
            node: node.to_string(),
        });
    }
    if uninstall {
        // The agent goes first: once the node is unpinned the controller could no
        // longer ask it to.
        let refused = |why: String| CtlError::Agent {
            node: node.to_string(),
            message: format!("the agent refused to uninstall: {why} (the node was not removed)"),
        };
        let asked = async {
            let conn = ctx.connection_within(&rec, within).await?;
            conn.unary(&Request::Uninstall, REQUEST_TIMEOUT).await
        };
        match asked.await {
            Ok(Reply::Uninstalling) => {}
            Ok(Reply::Error(e)) => {
                return Err(refused(e.message));
            }
            Err(f) if f.kind == FailureKind::Failed => return Err(refused(f.message)),
            Ok(other) => {
                return Err(CtlError::Agent {
                    node: node.to_string(),
                    message: format!(
                        "unexpected reply to Uninstall: {other:?} (the node was not removed)"
                    ),
                });
            }
            Err(f) => {
                return Err(CtlError::Agent {
                    node: node.to_string(),
                    message: format!(
                        "{}; the node was not removed. To remove it anyway run `clustermgr node remove {node}` and, on the host, `/etc/init.d/clustermgr-agent stop` (or `systemctl disable --now clustermgr-agent`) and delete /usr/local/bin/clustermgr-agent and /etc/clustermgr",
                        f.message
                    ),
                });
            }
        }
    }
    let replication = crate::desired::leave_replication(ctx, user, node, within).await?;
    ctx.store.remove_node(node, ctx.clock.unix())?;
    crate::desired::revoke_tunnel(ctx, node)?;
    ctx.store.update_model(|m| {
        m.drained.retain(|n| n != node);
        Ok(())
    })?;
    if let Some(pool) = &ctx.pool {
        pool.drop_node(node);
    }
    ctx.audited(
        user,
        if uninstall {
            "node remove --uninstall"
        } else {
            "node remove"
        },
        &[node.to_string()],
        "",
        if uninstall {
            "unpinned and revoked; its agent removes itself"
        } else {
            "unpinned and revoked"
        },
    )?;
    let said = if uninstall {
        format!(
            "removed {node}: its agent is stopping and removing itself (binary, service, /etc/clustermgr with its key; its log stays), its key is unpinned and its certificates revoked"
        )
    } else {
        format!(
            "removed {node}: its key is unpinned and its certificates revoked; the controller refuses it from now on"
        )
    };
    Ok(Report::Done(match replication {
        Some(r) => format!("{said}; LDAP replication: {r}"),
        None => said,
    }))
}

fn set_primary(ctx: &Ctx, user: &str, node: &str) -> Result<Report, CtlError> {
    let mut all = ctx.store.nodes()?;
    let target = all
        .iter()
        .find(|n| n.name == node)
        .ok_or_else(|| CtlError::unknown_node(node, all.iter().map(|n| n.name.as_str())))?;
    if !target.has_role(Role::Gluu) {
        return Err(CtlError::CannotBePrimary {
            node: node.to_string(),
        });
    }
    for n in &mut all {
        n.primary = n.name == node;
    }
    ctx.store.put_nodes(&all)?;
    ctx.audited(
        user,
        "node set-primary",
        &[node.to_string()],
        "",
        "now the primary",
    )?;
    Ok(Report::Done(format!("{node} is now the primary Gluu node")))
}

async fn info(
    ctx: &Ctx,
    node: &NodeRecord,
    within: Duration,
) -> Result<(Box<NodeInfo>, u64), NodeFailure> {
    let mut conn = ctx.connection_within(node, within).await?;
    let mut start = Instant::now();
    let mut reply = conn.unary(&Request::Info, REQUEST_TIMEOUT).await;
    if reply.is_err() && ctx.forget_if_reset(&conn) {
        conn = ctx.connection_within(node, within).await?;
        start = Instant::now();
        reply = conn.unary(&Request::Info, REQUEST_TIMEOUT).await;
    }
    match reply? {
        Reply::Info(info) => Ok((info, start.elapsed().as_micros() as u64)),
        other => Err(NodeFailure::failed(format!(
            "unexpected reply to Info: {other:?}"
        ))),
    }
}

/// Runs `work` on every node, at most [`FANOUT_CAP`] at once, reporting each node as
/// it finishes; returns the outcomes in node-name order.
async fn fan_out<F, Fut>(
    nodes: Vec<NodeRecord>,
    events: &mpsc::Sender<Event>,
    work: F,
) -> Vec<NodeOutcome>
where
    F: Fn(NodeRecord) -> Fut,
    Fut: std::future::Future<Output = NodeOutcome>,
{
    use futures_util::stream::{FuturesUnordered, StreamExt};
    let cap = Semaphore::new(FANOUT_CAP);
    let mut running: FuturesUnordered<_> = nodes
        .into_iter()
        .map(|n| {
            let cap = &cap;
            let fut = work(n);
            async move {
                let _permit = cap.acquire().await;
                fut.await
            }
        })
        .collect();
    let mut out = Vec::new();
    while let Some(outcome) = running.next().await {
        let _ = events.send(Event::NodeDone(outcome.clone())).await;
        out.push(outcome);
    }
    out.sort_by(|a, b| a.node.cmp(&b.node));
    out
}

/// What `cert revoke-controller` reports.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ControllerRevokedView {
    /// The certificate no agent that was reached accepts any more.
    pub revoked_serial: String,
    /// The controller's certificate from now on.
    pub serial: String,
    /// Its end.
    pub expires: String,
    /// Each node: reached (it refuses the old key now) or not (it learns at its next
    /// contact with this controller).
    pub nodes: Vec<NodeOutcome>,
}

/// Replaces the controller's key and certificate, drops the connections made with the
/// old one, and reaches every node with the new one: an agent that sees it refuses
/// every older controller certificate from then on.
async fn controller_revoke(
    ctx: &Ctx,
    user: &str,
    within: Duration,
    events: &mpsc::Sender<Event>,
) -> Result<Report, CtlError> {
    let old = ctx
        .controller_cert
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .serial
        .clone();
    // Under serve, this also closes the connections made with the old key.
    let new = ctx.replace_controller_cert()?;
    let nodes = ctx.store.nodes()?;
    let names: Vec<String> = nodes.iter().map(|n| n.name.clone()).collect();
    let (id, audit) = ctx.audit(
        user,
        "cert revoke-controller",
        &names,
        &format!("revoked controller certificate {old}; new {}", new.serial),
    )?;
    let mut pending = PendingAudit::new(&ctx.store, id, audit);
    let reached = ping(ctx, nodes, within, events).await;
    pending.finish(
        reached
            .iter()
            .map(|o| {
                let outcome = if o.state == NodeState::Ok {
                    "holds the new certificate only".to_string()
                } else {
                    format!(
                        "not reached ({}); it learns at its next contact",
                        outcome_text(o)
                    )
                };
                (o.node.clone(), outcome)
            })
            .collect(),
    )?;
    Ok(Report::ControllerRevoked(ControllerRevokedView {
        revoked_serial: old,
        serial: new.serial,
        expires: rfc3339(new.not_after),
        nodes: reached,
    }))
}

async fn ping(
    ctx: &Ctx,
    nodes: Vec<NodeRecord>,
    within: Duration,
    events: &mpsc::Sender<Event>,
) -> Vec<NodeOutcome> {
    fan_out(nodes, events, |n| async move {
        let start = Instant::now();
        let mut o = match info(ctx, &n, within).await {
            Ok((info, rtt)) => {
                // The reply left the node about half a round trip before it arrived.
                let now_ms = ctx.clock.now().unix_timestamp_nanos() as i64 / 1_000_000;
                let skew = info.clock_unix_ms - (now_ms - (rtt / 2000) as i64);
                NodeOutcome {
                    rtt_us: Some(rtt),
                    info: Some(info),
                    clock_skew_ms: Some(skew),
                    ..NodeOutcome::new(&n.name)
                }
            }
            Err(f) => NodeOutcome::failure(&n.name, f),
        };
        o.duration_ms = start.elapsed().as_millis() as u64;
        o
    })
    .await
}

/// What `exec` runs, and where.
struct ExecRun {
    command: Command,
    timeout_secs: Option<u64>,
    in_container: bool,
    stdin: Option<Arc<Vec<u8>>>,
}

/// The bytes `exec --stdin` gives every node's command: never shown, logged or audited
/// (they may be a password), only counted.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecStdin(pub Vec<u8>);

impl std::fmt::Debug for ExecStdin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ExecStdin({} bytes)", self.0.len())
    }
}

/// The most `exec --stdin` takes: it is read whole first, so every node gets the same
/// bytes, and travels in one request to `serve`.
pub const MAX_EXEC_STDIN: usize = 8 * 1024 * 1024;

/// How much input goes in one frame.
const STDIN_CHUNK: usize = 64 * 1024;

async fn exec(
    ctx: &Ctx,
    user: &str,
    selector: &str,
    run: ExecRun,
    within: Duration,
    events: &mpsc::Sender<Event>,
) -> Result<Report, CtlError> {
    let nodes = select(&ctx.store.nodes()?, selector)?;
    let names: Vec<String> = nodes.iter().map(|n| n.name.clone()).collect();
    let mut line = run.command.display_line();
    if let Some(input) = &run.stdin {
        // How much, never what.
        line.push_str(&format!(" (with {} bytes on stdin)", input.len()));
    }
    let (audit_id, audit) = ctx.audit(user, "exec", &names, &line)?;
    let mut pending = PendingAudit::new(&ctx.store, audit_id, audit);
    let spec = ExecSpec {
        command: run.command,
        env: Vec::new(),
        cwd: None,
        stdin: run.stdin.is_some(),
        timeout_ms: run.timeout_secs.map(|s| s.saturating_mul(1000)),
        requested_by: format!("{user}@{}", hostname()),
    };
    let req = if run.in_container {
        Request::ExecInContainer {
            root: ctx.store.model()?.gluu_root,
            spec,
        }
    } else {
        Request::Exec(spec)
    };
    let input = run.stdin;
    let outcomes = fan_out(nodes, events, |n| {
        let exec = Exec {
            req: req.clone(),
            input: input.clone(),
        };
        exec_on(ctx, n, exec, within, events.clone())
    })
    .await;
    pending.finish(
        outcomes
            .iter()
            .map(|o| (o.node.clone(), outcome_text(o)))
            .collect(),
    )?;
    Ok(Report::Outcomes(outcomes))
}

/// The selector that names every node.
fn all_nodes() -> String {
    "all".into()
}

fn outcome_text(o: &NodeOutcome) -> String {
    match (&o.state, o.exit_code, &o.message) {
        (NodeState::Unreachable, _, _) => "unreachable".into(),
        (_, Some(code), _) if !o.timed_out => format!("exit {code}"),
        (_, _, Some(m)) => m.clone(),
        _ => "failed".into(),
    }
}

/// One node's exec: the request, and what its command reads on stdin.
#[derive(Clone)]
struct Exec {
    req: Request,
    input: Option<Arc<Vec<u8>>>,
}

async fn exec_on(
    ctx: &Ctx,
    node: NodeRecord,
    exec: Exec,
    within: Duration,
    events: mpsc::Sender<Event>,
) -> NodeOutcome {
    let start = Instant::now();
    let mut o = match exec_stream(ctx, &node, exec, within, &events).await {
        Ok(o) => o,
        Err(f) => NodeOutcome::failure(&node.name, f),
    };
    o.duration_ms = start.elapsed().as_millis() as u64;
    o
}

async fn exec_stream(
    ctx: &Ctx,
    node: &NodeRecord,
    exec: Exec,
    within: Duration,
    events: &mpsc::Sender<Event>,
) -> Result<NodeOutcome, NodeFailure> {
    let conn = ctx.connection_within(node, within).await?;
    match exec_attempt(&conn, node, &exec, events).await {
        // The agent never heard of the request: safe to send it again, once.
        Err((_, Heard::Nothing)) if ctx.forget_if_reset(&conn) => {
            let conn = ctx.connection_within(node, within).await?;
            exec_attempt(&conn, node, &exec, events)
                .await
                .map_err(|(f, _)| f)
        }
        r => r.map_err(|(f, _)| f),
    }
}

/// Whether anything came back from the agent before an exec failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Heard {
    Nothing,
    Something,
}

async fn exec_attempt(
    conn: &AgentConn,
    node: &NodeRecord,
    exec: &Exec,
    events: &mpsc::Sender<Event>,
) -> Result<NodeOutcome, (NodeFailure, Heard)> {
    let mut heard = Heard::Nothing;
    let attempt = exec_on_conn(conn, node, exec, events, &mut heard).await;
    attempt.map_err(|f| (f, heard))
}

async fn exec_on_conn(
    conn: &AgentConn,
    node: &NodeRecord,
    exec: &Exec,
    events: &mpsc::Sender<Event>,
    heard: &mut Heard,
) -> Result<NodeOutcome, NodeFailure> {
    let (mut send, mut recv) = conn.open().await?;
    let started = Instant::now();
    write_message(&mut send, &exec.req)
        .await
        .map_err(NodeFailure::stream)?;
    if let Some(input) = &exec.input {
        // Whole, then closed: at most MAX_EXEC_STDIN, which the stream's window takes
        // even while the command has not read it yet.
        for chunk in input.chunks(STDIN_CHUNK) {
            write_message(&mut send, &ExecInput::Stdin(chunk.to_vec()))
                .await
                .map_err(NodeFailure::stream)?;
        }
        write_message(&mut send, &ExecInput::StdinEnd)
            .await
            .map_err(NodeFailure::stream)?;
    }
    // `send` stays open until the result is in: the agent takes the end of our side
    // of the stream as a cancel, which is what dropping this future must mean.
    let heard_at = std::sync::atomic::AtomicU64::new(0);
    let reading = exec_events(conn, node, &mut recv, events, heard, &heard_at, started);
    tokio::select! {
        r = reading => r,
        f = conn.until_silent(started, &heard_at) => Err(f),
    }
}

/// Reads an exec's events until its result, noting in `heard_at` (milliseconds since
/// `started`) when the agent was last heard from.
async fn exec_events(
    conn: &AgentConn,
    node: &NodeRecord,
    recv: &mut quinn::RecvStream,
    events: &mpsc::Sender<Event>,
    heard: &mut Heard,
    heard_at: &std::sync::atomic::AtomicU64,
    started: Instant,
) -> Result<NodeOutcome, NodeFailure> {
    let mut rtt = None;
    loop {
        let ev = read_message::<ExecEvent, _>(recv, conn.max_frame(), "exec event")
            .await
            .map_err(NodeFailure::stream)?;
        heard_at.store(
            started.elapsed().as_millis() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
        *heard = Heard::Something;
        let (stderr, data) = match ev {
            Some(ExecEvent::Started { .. }) => {
                rtt.get_or_insert(started.elapsed().as_micros() as u64);
                continue;
            }
            Some(ExecEvent::Stdout(d)) => (false, d),
            Some(ExecEvent::Stderr(d)) => (true, d),
            Some(ExecEvent::Finished(exit)) => {
                let mut o = NodeOutcome::new(&node.name);
                o.exit_code = exit.code;
                o.signal = exit.signal;
                o.timed_out = exit.timed_out;
                o.rtt_us = rtt;
                if !exit.success() {
                    o.state = NodeState::Failed;
                    o.message = Some(if exit.timed_out {
                        "timed out; the command's process group was killed".into()
                    } else if exit.cancelled {
                        "cancelled; the command's process group was killed".into()
                    } else if let Some(code) = exit.code {
                        format!("exited with status {code}")
                    } else {
                        format!("killed by signal {}", exit.signal.unwrap_or(0))
                    });
                }
                return Ok(o);
            }
            Some(ExecEvent::Refused(e)) => return Err(NodeFailure::failed(e.message)),
            None => {
                return Err(NodeFailure::failed(
                    "the agent ended the stream without a result",
                ));
            }
        };
        if events
            .send(Event::Output {
                node: node.name.clone(),
                stderr,
                data,
            })
            .await
            .is_err()
        {
            return Err(NodeFailure::failed("cancelled: the client went away"));
        }
    }
}

async fn cert_renew(
    ctx: &Ctx,
    nodes: Vec<NodeRecord>,
    rekey: bool,
    within: Duration,
    events: &mpsc::Sender<Event>,
) -> Vec<NodeOutcome> {
    fan_out(nodes, events, |n| async move {
        let start = Instant::now();
        let renewed = async {
            let conn = ctx.connection_within(&n, within).await?;
            // connection() may just have renewed it; work from the record as it is now.
            let current = ctx
                .store
                .node(&n.name)
                .map_err(|e| NodeFailure::failed(e.to_string()))?
                .unwrap_or_else(|| n.clone());
            let summary = ctx.renew_with(&conn, &current, rekey).await?;
            if let Some(pool) = &ctx.pool {
                let mut conn = conn;
                conn.cert = summary.clone();
                pool.put(conn);
            }
            Ok::<_, NodeFailure>(summary)
        };
        let mut o = match renewed.await {
            Ok(s) => NodeOutcome {
                message: Some(format!(
                    "renewed: serial {}, valid until {}, key {}",
                    s.serial,
                    rfc3339(s.not_after),
                    s.key_fingerprint
                )),
                ..NodeOutcome::new(&n.name)
            },
            Err(f) => NodeOutcome::failure(&n.name, f),
        };
        o.duration_ms = start.elapsed().as_millis() as u64;
        o
    })
    .await
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "controller".into())
}

async fn status(
    ctx: &Ctx,
    selector: &str,
    within: Duration,
    events: &mpsc::Sender<Event>,
) -> Result<Report, CtlError> {
    let nodes = select(&ctx.store.nodes()?, selector)?;
    let by_name: HashMap<String, NodeRecord> =
        nodes.iter().map(|n| (n.name.clone(), n.clone())).collect();
    let outcomes = ping(ctx, nodes, within, events).await;
    let now = ctx.clock.unix();
    let rows = outcomes
        .into_iter()
        .map(|o| {
            let rec = &by_name[&o.node];
            let info = o.info.as_ref();
            NodeStatus {
                name: o.node.clone(),
                roles: rec.roles.clone(),
                primary: rec.primary,
                state: o.state.clone(),
                rtt_us: o.rtt_us,
                agent_version: info.map(|i| i.agent_version.clone()),
                os: info.map(|i| i.os_release.clone()),
                gluu: info.and_then(|i| i.gluu.as_ref()).map(|g| {
                    format!(
                        "{} in {}",
                        g.version.as_deref().unwrap_or("unknown version"),
                        g.root
                    )
                }),
                clock_skew_ms: o.clock_skew_ms,
                cert_days_left: (rec.cert_not_after - now).div_euclid(86_400),
                message: o.message.clone(),
            }
        })
        .collect();
    Ok(Report::Status(StatusView {
        cluster: ctx.meta.name.clone(),
        nodes: rows,
    }))
}

fn cert_status(ctx: &Ctx) -> Result<Report, CtlError> {
    let now = ctx.clock.unix();
    let view = |subject: String, s: &CertSummary, revoked: bool| CertView {
        subject,
        serial: s.serial.clone(),
        expires: rfc3339(s.not_after),
        days_left: (s.not_after - now).div_euclid(86_400),
        state: if revoked {
            "revoked"
        } else if s.expired(now) {
            "expired"
        } else if s.renewal_due(now) {
            "renew-due"
        } else {
            "ok"
        }
        .to_string(),
    };
    let mut out = vec![
        view(
            "ca".into(),
            &CertSummary::parse_pem(ctx.ca.cert_pem())?,
            false,
        ),
        view(
            "controller".into(),
            &CertSummary::parse_pem(&read_file(&ctx.home.controller_cert())?)?,
            false,
        ),
    ];
    let certs = ctx.store.certs()?;
    for node in ctx.store.nodes()? {
        if let Some(c) = certs.iter().find(|c| c.serial == node.cert_serial) {
            let s = CertSummary {
                serial: c.serial.clone(),
                common_name: node.name.clone(),
                dns_names: vec![node.name.clone()],
                uris: Vec::new(),
                not_before: c.not_before,
                not_after: c.not_after,
                key_fingerprint: c.key_fingerprint.clone(),
                is_ca: false,
            };
            out.push(view(node.name.clone(), &s, c.revoked_at.is_some()));
        }
    }
    Ok(Report::Certs(out))
}

/// The largest part of a snapshot sent at once, far below serve's frame limit.
const SNAPSHOT_PART: usize = 1024 * 1024;

async fn snapshot(
    ctx: &Ctx,
    user: &str,
    file: &str,
    events: &mpsc::Sender<Event>,
) -> Result<Report, CtlError> {
    // Audited before the snapshot is read, so the backup carries the record of its own
    // making (and the restored home shows where it came from).
    let (audit_id, _) = ctx.audit(user, "backup", &[], &format!("to {file}"))?;
    let bytes = clustermgr_protocol::codec::encode(&ctx.store.snapshot()?);
    for part in bytes.chunks(SNAPSHOT_PART) {
        if events.send(Event::Snapshot(part.to_vec())).await.is_err() {
            break;
        }
    }
    Ok(Report::Snapshot {
        audit_id,
        bytes: bytes.len() as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::FixedClock;

    #[test]
    fn init_refuses_names_and_lifetimes_it_cannot_carry() {
        let tmp = tempfile::tempdir().unwrap();
        let clock = FixedClock(time::OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap());
        for (name, days) in [
            ("bad name", 90),
            ("-x", 90),
            ("", 90),
            ("ok", 100_000),
            ("ok", 1),
        ] {
            let err = init(&tmp.path().join("h"), name, days, &clock).unwrap_err();
            assert!(
                matches!(err, CtlError::BadArgument { .. }),
                "{name} {days}: {err}"
            );
            assert!(!tmp.path().join("h").join("ca.key").exists());
        }
        init(
            &tmp.path().join("h"),
            "prod-gluu.eu_1",
            MAX_CERT_DAYS,
            &clock,
        )
        .unwrap();
    }

    #[test]
    fn the_audit_name_is_the_uids_own_entry_or_the_bare_uid() {
        assert_eq!(audit_user(0), "root (uid 0)");
        // No entry: never a name from the environment.
        assert_eq!(audit_user(4_000_000_001), "uid 4000000001");
    }

    #[tokio::test]
    async fn the_controller_certificate_renews_itself_past_two_thirds_of_its_life() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("home");
        let t0 = time::OffsetDateTime::from_unix_timestamp(1_900_000_000).unwrap();
        init(&dir, "c", 90, &FixedClock(t0)).unwrap();
        let serial = |dir: &std::path::Path| {
            CertSummary::parse_pem(&std::fs::read_to_string(dir.join("controller.crt")).unwrap())
                .unwrap()
        };
        let first = serial(&dir);
        let opts = CtxOptions::default();
        let day = time::Duration::days(1);
        drop(Ctx::open(&dir, Arc::new(FixedClock(t0 + 59 * day)), &opts, false).unwrap());
        assert_eq!(serial(&dir).serial, first.serial, "not yet due at day 59");
        drop(Ctx::open(&dir, Arc::new(FixedClock(t0 + 61 * day)), &opts, false).unwrap());
        let renewed = serial(&dir);
        assert_ne!(renewed.serial, first.serial, "renewed at day 61");
        let expected: time::OffsetDateTime = t0 + 151 * day;
        assert_eq!(renewed.not_after, expected.unix_timestamp());
        assert_eq!(renewed.uris, first.uris);
        let ctx = Ctx::open(&dir, Arc::new(FixedClock(t0 + 62 * day)), &opts, false).unwrap();
        let stored = ctx.store.certs().unwrap();
        assert!(
            stored
                .iter()
                .any(|c| c.serial == renewed.serial && c.kind == CertKind::Controller)
        );
    }
}

#[cfg(test)]
mod serve_renewal_tests {
    use super::*;
    use std::sync::Mutex;

    /// A clock the test moves.
    #[derive(Debug)]
    struct MovableClock(Mutex<time::OffsetDateTime>);

    impl Clock for MovableClock {
        fn now(&self) -> time::OffsetDateTime {
            *self.0.lock().unwrap()
        }
    }

    #[tokio::test]
    async fn a_long_running_controller_renews_its_own_certificate() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("home");
        let t0 = crate::clock::Clock::now(&crate::clock::SystemClock);
        init(&dir, "c", 90, &crate::clock::FixedClock(t0)).unwrap();
        let clock = Arc::new(MovableClock(Mutex::new(t0)));
        let ctx = Ctx::open(&dir, clock.clone(), &CtxOptions::default(), true).unwrap();
        let before = ctx.dialer.credentials().cert.clone();
        assert!(!ctx.renew_controller_if_due().unwrap());
        *clock.0.lock().unwrap() = t0 + time::Duration::days(61);
        assert!(ctx.renew_controller_if_due().unwrap(), "due at day 61");
        assert_ne!(
            ctx.dialer.credentials().cert,
            before,
            "new connections use the new one"
        );
        let on_disk = std::fs::read_to_string(dir.join("controller.crt")).unwrap();
        let s = CertSummary::parse_pem(&on_disk).unwrap();
        assert!(!s.renewal_due(clock.unix()));
        assert!(!ctx.renew_controller_if_due().unwrap(), "and not again");
    }
}
