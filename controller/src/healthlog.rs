//! What the controller keeps of health between rounds and across restarts: who is
//! asked what (`Members`), what each node said (`NodeRound`), each check's level and
//! verdict, the latest round judged, and the changes between rounds. Health judges
//! into these (its rules live in `health::verdict`); the telemetry store keeps them,
//! and `serve`'s context holds the latest round for `health`, `events` and `top`.

use std::collections::BTreeMap;
use std::time::Duration;

use clustermgr_protocol::health::{CertProbe, CheckReport, PortProbe, ServiceProbe};
use serde::{Deserialize, Serialize};

/// A check's state, in the order of Nagios-style exit codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Fine.
    Ok,
    /// Needs a look.
    Warning,
    /// Broken.
    Critical,
    /// Could not be checked.
    Unknown,
}

impl Level {
    /// The exit code monitoring expects: 0, 1, 2, 3.
    pub fn exit_code(self) -> i32 {
        match self {
            Level::Ok => crate::exit::monitoring::OK,
            Level::Warning => crate::exit::monitoring::WARNING,
            Level::Critical => crate::exit::monitoring::CRITICAL,
            Level::Unknown => crate::exit::monitoring::UNKNOWN,
        }
    }

    /// How bad, for picking the worst: critical, then warning, then unknown.
    fn severity(self) -> u8 {
        match self {
            Level::Ok => 0,
            Level::Unknown => 1,
            Level::Warning => 2,
            Level::Critical => 3,
        }
    }

    /// The worst of `levels` (`Ok` for none).
    pub fn worst(levels: impl IntoIterator<Item = Level>) -> Level {
        levels
            .into_iter()
            .max_by_key(|l| l.severity())
            .unwrap_or(Level::Ok)
    }

    /// The word shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Ok => "ok",
            Level::Warning => "warning",
            Level::Critical => "critical",
            Level::Unknown => "unknown",
        }
    }
}

/// A check's state as stored between rounds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthState {
    /// Its level.
    pub level: Level,
    /// Why, when it was last judged.
    pub reason: String,
}

/// A check that changed state: what `events` lists and the alerts carry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthEvent {
    /// Its number in the store, from 1.
    pub id: u64,
    /// When it was seen, Unix milliseconds.
    pub time_ms: i64,
    /// The node.
    pub node: String,
    /// The check.
    pub check: String,
    /// The state before (`unknown` for a check seen the first time).
    pub from: Level,
    /// The state now.
    pub to: Level,
    /// Why, in words.
    pub reason: String,
}

/// Someone's acknowledgement of a health event: they have seen the problem and are on
/// it. Kept beside the event (not in it), so events stored before acknowledgements
/// existed read as they did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    /// Who, as the audit log names them (`alice (console, password)`).
    pub by: String,
    /// When, Unix milliseconds.
    pub time_ms: i64,
    /// What they said, if anything.
    pub note: String,
}

/// A stored health event and its acknowledgement, if it has one: what `events` lists.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRecord {
    /// The event.
    pub event: HealthEvent,
    /// Who acknowledged it, when and why.
    pub ack: Option<Ack>,
}

/// One check of one node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Verdict {
    /// The node.
    pub node: String,
    /// The check: `agent`, `clock`, `disk`, `ldap`, `ldap-links`, `ldap-csn`,
    /// `heartbeat`.
    pub check: String,
    /// Its state.
    pub level: Level,
    /// Why, in words.
    pub reason: String,
}

/// What one node gave this round.
#[derive(Clone, Debug, PartialEq, Eq)]
#[allow(
    clippy::large_enum_variant,
    reason = "one per node per round, nearly always a report"
)]
pub enum NodeRound {
    /// Its report, and its clock's offset from the controller's (positive: ahead).
    Report {
        /// The report.
        report: CheckReport,
        /// Its clock minus the controller's, milliseconds.
        skew_ms: i64,
    },
    /// It answered, but could not run its checks.
    Failed(String),
    /// It did not answer.
    Unreachable(String),
}

/// The nodes a round concerns: name → (whether it runs a Gluu server, and so LDAP;
/// the host part of its address, to tell which node a replication provider is).
#[derive(Clone, Debug, Default)]
pub struct Members {
    /// Per node.
    pub nodes: BTreeMap<String, Member>,
    /// The limits they are judged by.
    pub limits: Limits,
}

/// Thresholds an administrator may move (`[health]` in controller.toml).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Limits {
    /// A file system fuller than this, in percent, is a warning.
    pub disk_warning_pct: f64,
    /// Fuller than this is critical.
    pub disk_critical_pct: f64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            disk_warning_pct: 90.0,
            disk_critical_pct: 95.0,
        }
    }
}

/// One member.
#[derive(Clone, Debug, Default)]
pub struct Member {
    /// Whether it runs Gluu (and so an LDAP server).
    pub gluu: bool,
    /// Its host (address without the port).
    pub host: String,
    /// The peers' ports it must reach: its row of the port matrix.
    pub reach: Vec<PortProbe>,
    /// Whether it is a member of the csync2 group.
    pub csync2: bool,
    /// Whether clustermgr has set csync2 up on it (applied its `/etc/csync2.cfg`):
    /// until then its csync2 is not checked, nor its port, whatever file a package
    /// left there.
    pub csync2_set_up: bool,
    /// The certificates its agent watches (besides its LDAP server's).
    pub certs: Vec<CertProbe>,
    /// The services its agent tries (besides the Gluu endpoints it finds).
    pub services: Vec<ServiceProbe>,
    /// The cluster's hostname, for a Gluu node's own endpoints.
    pub gluu_endpoints: Option<String>,
}

/// `serve`'s latest round, judged: what `health`, `replication`, `ports` and `top`
/// show while it runs.
#[derive(Debug)]
pub struct Latest {
    /// Who was asked.
    pub members: Members,
    /// What they said.
    pub round: BTreeMap<String, NodeRound>,
    /// The verdicts, against the round before.
    pub verdicts: Vec<Verdict>,
    /// When it ran, Unix milliseconds.
    pub at_ms: i64,
    /// The interval it ran at.
    pub interval: Duration,
}

impl Latest {
    /// The worst state of `node`'s checks, with the first check in that state.
    pub fn worst_of(&self, node: &str) -> Option<(Level, &str)> {
        let mine = self.verdicts.iter().filter(|v| v.node == node);
        let worst = Level::worst(mine.clone().map(|v| v.level));
        mine.into_iter()
            .find(|v| v.level == worst)
            .map(|v| (worst, v.check.as_str()))
    }
}
