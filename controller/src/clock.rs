//! Time, injected: certificate lifetimes and renewal depend on it, and tests move it
//! instead of waiting.

use std::fmt::Debug;
use std::sync::Arc;

use time::OffsetDateTime;

/// A source of the current time.
pub trait Clock: Debug + Send + Sync {
    /// Now.
    fn now(&self) -> OffsetDateTime;

    /// Now, in Unix seconds.
    fn unix(&self) -> i64 {
        self.now().unix_timestamp()
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
