//! Time, injected: certificate lifetimes and renewal depend on it, and tests move it
//! instead of waiting. And the times people type (`--since 10m`).

use std::fmt::Debug;
use std::sync::Arc;

use time::OffsetDateTime;

use crate::CtlError;

/// A source of the current time.
pub trait Clock: Debug + Send + Sync {
    /// Now.
    fn now(&self) -> OffsetDateTime;

    /// Now, in Unix seconds.
    fn unix(&self) -> i64 {
        self.now().unix_timestamp()
    }

    /// Now, in Unix milliseconds.
    fn unix_ms(&self) -> i64 {
        (self.now().unix_timestamp_nanos() / 1_000_000) as i64
    }
}

/// The system clock.
#[derive(Debug, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[allow(
        clippy::disallowed_methods,
        reason = "the one place the controller reads the real clock"
    )]
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }
}

/// A clock stopped at one moment.
#[derive(Debug, Clone, Copy)]
pub struct FixedClock(pub OffsetDateTime);

impl Clock for FixedClock {
    fn now(&self) -> OffsetDateTime {
        self.0
    }
}

/// The clock of a running controller.
pub fn system() -> Arc<dyn Clock> {
    Arc::new(SystemClock)
}

/// RFC 3339 text of a Unix time, for humans and JSON.
pub fn rfc3339(unix: i64) -> String {
    OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| unix.to_string())
}

/// RFC 3339 text of a time in Unix milliseconds, to the millisecond, for JSON views:
/// the contract gives every point in time as this text beside its `_ms` number.
pub fn rfc3339_ms(ms: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| ms.to_string())
}

/// A point in time as the JSON views give it: RFC 3339 text and Unix milliseconds.
#[derive(
    Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
pub struct Moment {
    /// RFC 3339, UTC.
    #[schemars(extend("format" = "date-time"))]
    pub time: String,
    /// Unix milliseconds.
    pub time_ms: i64,
}

impl Moment {
    /// The instant of a Unix-millisecond time.
    pub fn of_ms(time_ms: i64) -> Moment {
        Moment {
            time: rfc3339_ms(time_ms),
            time_ms,
        }
    }
}

/// A `--since` argument as Unix milliseconds: a duration back from `now_ms` (`90s`,
/// `10m`, `2h`, `7d`) or an RFC 3339 time.
pub fn parse_since(text: &str, now_ms: i64) -> Result<i64, CtlError> {
    let bad = || CtlError::BadArgument {
        flag: "--since",
        value: format!("{text:?}"),
        why: "neither a duration (90s, 10m, 2h, 7d) nor a time (2026-11-25T10:00:00Z)".into(),
    };
    let t = text.trim();
    if let Some((n, unit)) = t
        .find(|c: char| !c.is_ascii_digit())
        .filter(|&i| i > 0)
        .map(|i| t.split_at(i))
    {
        let secs = match unit {
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86_400,
            _ => 0,
        };
        if secs > 0 {
            let n: i64 = n.parse().map_err(|_| bad())?;
            return Ok(now_ms - n.saturating_mul(secs).saturating_mul(1000));
        }
    }
    let at = time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
        .map_err(|_| bad())?;
    Ok((at.unix_timestamp_nanos() / 1_000_000) as i64)
}
