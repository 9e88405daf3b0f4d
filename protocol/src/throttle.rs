//! A log line that a flood cannot multiply: the first occurrence is logged, the ones
//! that follow within the interval are only counted, and the next one after it is
//! logged with that count. Pure: the caller passes the time.

use std::time::{Duration, Instant};

/// One kind of repeated event (a refused handshake, an accept error).
#[derive(Debug)]
pub struct Throttle {
    every: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl Throttle {
    /// Logs at most once per `every`.
    pub fn new(every: Duration) -> Throttle {
        Throttle {
            every,
            last: None,
            suppressed: 0,
        }
    }

    /// One more event at `now`: `Some(n)` when it is to be logged, `n` being how many
    /// were left unlogged since the last line; `None` when it is only counted.
    pub fn admit(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(t) if now.saturating_duration_since(t) < self.every => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_is_one_line_per_interval_with_its_count() {
        let mut t = Throttle::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(t.admit(t0), Some(0));
        let logged: Vec<Option<u64>> = (1..3000)
            .map(|i| t.admit(t0 + Duration::from_millis(i)))
            .collect();
        assert!(logged.iter().all(Option::is_none));
        assert_eq!(t.admit(t0 + Duration::from_secs(10)), Some(2999));
        assert_eq!(t.admit(t0 + Duration::from_secs(30)), Some(0));
    }
}
