//! A global limit on calls to Dhan, so a thousand accounts refreshing at 08:00 queue instead of
//! bursting.

use std::time::Duration;
use tokio::sync::Mutex;
use tokio::time::Instant;

/// Spaces calls evenly: at most `per_second` calls start in any second, in arrival order.
pub struct RateLimiter {
    interval: Duration,
    next_slot: Mutex<Instant>,
}

impl RateLimiter {
    pub fn new(per_second: f64) -> Self {
        let per_second = per_second.max(0.001);
        RateLimiter {
            interval: Duration::from_secs_f64(1.0 / per_second),
            next_slot: Mutex::new(Instant::now()),
        }
    }

    /// Waits for this caller's slot.
    pub async fn acquire(&self) {
        let slot = {
            let mut next = self.next_slot.lock().await;
            let now = Instant::now();
            let slot = (*next).max(now);
            *next = slot + self.interval;
            slot
        };
        tokio::time::sleep_until(slot).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn spaces_calls_evenly() {
        let limiter = std::sync::Arc::new(RateLimiter::new(4.0));
        let start = Instant::now();
        let mut handles = vec![];
        for _ in 0..9 {
            let limiter = limiter.clone();
            handles.push(tokio::spawn(async move {
                limiter.acquire().await;
                Instant::now()
            }));
        }
        let mut times = vec![];
        for h in handles {
            times.push(h.await.unwrap() - start);
        }
        times.sort();
        assert_eq!(times[0], Duration::ZERO);
        assert_eq!(times[8], Duration::from_secs(2));
    }
}
