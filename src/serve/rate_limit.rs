//! A token bucket per connection: `rate` tokens per second, holding at most
//! `capacity` so that a client may burst after a quiet spell. Messages use
//! `2 x RATE_LIMIT`; broadcasts a fixed burst of 5.

use std::time::Instant;

#[derive(Debug)]
pub struct TokenBucket {
    rate: f64,
    capacity: f64,
    tokens: f64,
    refilled_at: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate: f64, capacity: f64, now: Instant) -> Self {
        TokenBucket {
            rate,
            capacity,
            tokens: capacity,
            refilled_at: now,
        }
    }

    /// Takes one token if there is one; `false` means the frame is over the limit.
    pub fn try_take(&mut self, now: Instant) -> bool {
        let elapsed = now
            .saturating_duration_since(self.refilled_at)
            .as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.capacity);
        self.refilled_at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_burst_of_five_then_the_rate() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(1.0, 5.0, start);
        assert_eq!((0..50).filter(|_| bucket.try_take(start)).count(), 5);
        assert!(!bucket.try_take(start + Duration::from_millis(900)));
        assert!(bucket.try_take(start + Duration::from_millis(1000)));
    }

    #[test]
    fn burst_is_twice_the_rate() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(10.0, 20.0, start);
        let taken = (0..50).filter(|_| bucket.try_take(start)).count();
        assert_eq!(taken, 20);
    }

    #[test]
    fn tokens_come_back_at_the_rate() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(10.0, 20.0, start);
        while bucket.try_take(start) {}
        assert!(!bucket.try_take(start + Duration::from_millis(50)));
        assert!(bucket.try_take(start + Duration::from_millis(100)));
        assert!(!bucket.try_take(start + Duration::from_millis(100)));
    }

    #[test]
    fn a_long_pause_refills_only_to_capacity() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(1.0, 2.0, start);
        let later = start + Duration::from_secs(3600);
        let taken = (0..10).filter(|_| bucket.try_take(later)).count();
        assert_eq!(taken, 2);
    }
}
