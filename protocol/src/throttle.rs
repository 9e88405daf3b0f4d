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

impl Throttle {
    /// The events counted but not yet logged, once the interval since the last line
    /// has passed: a flood shorter than the interval is still told, at its end.
    pub fn flush(&mut self, now: Instant) -> Option<u64> {
        let due = self
            .last
            .is_none_or(|t| now.saturating_duration_since(t) >= self.every);
        if self.suppressed == 0 || !due {
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
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

    #[test]
    fn a_short_flood_is_counted_once_its_interval_is_over() {
        let mut t = Throttle::new(Duration::from_secs(60));
        let t0 = Instant::now();
        assert_eq!(t.admit(t0), Some(0));
        for i in 1..=500 {
            assert_eq!(t.admit(t0 + Duration::from_millis(i)), None);
        }
        assert_eq!(t.flush(t0 + Duration::from_secs(10)), None, "not yet");
        assert_eq!(t.flush(t0 + Duration::from_secs(60)), Some(500));
        assert_eq!(t.flush(t0 + Duration::from_secs(200)), None, "nothing left");
    }
}
