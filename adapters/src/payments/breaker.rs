//! A circuit breaker for one provider: after `threshold` failures in a row it opens for
//! `cool_down`, and calls wait instead of hammering a provider that is down. Once the cool-down
//! has passed, calls go through again; one more failure opens it again, a success closes it.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::watch;

pub struct Breaker {
    threshold: u32,
    cool_down: Duration,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    failures: u32,
    open_until: Option<Instant>,
}

/// The pause before attempt `attempt` (0-based) of a call that failed: 100 ms doubling, at most
/// 5 s.
pub fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(100u64.saturating_mul(1 << attempt.min(6))).min(Duration::from_secs(5))
}

impl Breaker {
    pub fn new(threshold: u32, cool_down: Duration) -> Breaker {
        Breaker {
            threshold: threshold.max(1),
            cool_down,
            state: Mutex::default(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether calls are being held back now.
    pub fn is_open(&self) -> bool {
        self.state()
            .open_until
            .is_some_and(|until| Instant::now() < until)
    }

    /// Waits while the breaker is open; `false` if `stop` turned true meanwhile.
    pub async fn wait_closed(&self, stop: &watch::Receiver<bool>) -> bool {
        loop {
            let until = self.state().open_until;
            let Some(until) = until.filter(|u| Instant::now() < *u) else {
                return true;
            };
            let mut stop = stop.clone();
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return false,
                () = tokio::time::sleep_until(until.into()) => {}
            }
        }
    }

    pub fn success(&self) {
        *self.state() = State::default();
    }

    pub fn failure(&self) {
        let mut state = self.state();
        state.failures += 1;
        if state.failures >= self.threshold {
            state.open_until = Some(Instant::now() + self.cool_down);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn it_opens_after_the_threshold_and_a_success_closes_it() {
        let breaker = Breaker::new(3, Duration::from_secs(60));
        breaker.failure();
        breaker.failure();
        assert!(!breaker.is_open());
        breaker.failure();
        assert!(breaker.is_open());
        breaker.success();
        assert!(!breaker.is_open());
        assert_eq!(backoff(0), Duration::from_millis(100));
        assert_eq!(backoff(3), Duration::from_millis(800));
        assert_eq!(backoff(30), Duration::from_secs(5));
    }
}
