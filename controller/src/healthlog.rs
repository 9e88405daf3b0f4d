//! What the controller keeps of health between rounds and across restarts: each
//! check's level, its state, and the changes between rounds. Health judges into these,
//! the telemetry store keeps them, and `events`, the alerts and `top` read them.

use serde::{Deserialize, Serialize};

/// A check's state, in the order of Nagios-style exit codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
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
