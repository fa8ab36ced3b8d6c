//! A global limit on calls to Dhan, so a thousand accounts refreshing at 08:00 queue instead of
//! bursting. Calls that obtain tokens come first: a probe (docs/dhan-api.md §4) only takes a slot
//! when the queue is short, and is otherwise skipped until its next turn, so probes of
//! thousands of accounts never delay the morning's mints.

use std::time::Duration;
use tokio::sync::Mutex;
use tokio::time::Instant;

/// How much queue a probe may wait behind: more means Dhan is busy with calls that matter more.
const SPARE_QUEUE: Duration = Duration::from_secs(1);

/// Spaces calls evenly: at most `per_second` calls start in any second, in arrival order.
pub struct RateLimiter {
    interval: Duration,
    next_slot: Mutex<Instant>,
}

/// No slot for a call that can wait: the queue is longer than [`SPARE_QUEUE`].
#[derive(Debug, PartialEq, Eq)]
pub struct Busy;

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
            let slot = (*next).max(Instant::now());
            *next = slot + self.interval;
            slot
        };
        tokio::time::sleep_until(slot).await;
    }

    /// Waits for a slot only if one is free within [`SPARE_QUEUE`] (or one interval, at very
    /// low rates); otherwise [`Busy`] at once, without taking one.
    pub async fn acquire_spare(&self) -> Result<(), Busy> {
        let slot = {
            let mut next = self.next_slot.lock().await;
            let now = Instant::now();
            let slot = (*next).max(now);
            if slot > now + SPARE_QUEUE.max(self.interval) {
                return Err(Busy);
            }
            *next = slot + self.interval;
            slot
        };
        tokio::time::sleep_until(slot).await;
        Ok(())
    }
}

#[cfg(test)]
impl RateLimiter {
    /// Takes the next slot without waiting for it, as a queued call would.
    pub fn reserve_for_test(&self) {
        let mut next = self.next_slot.try_lock().expect("no call in flight");
        *next = (*next).max(Instant::now()) + self.interval;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test(start_paused = true)]
    async fn spaces_calls_evenly() {
        let limiter = Arc::new(RateLimiter::new(4.0));
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

    /// 5,000 accounts probed every 15 minutes ask for 5.6 calls/s; at the default limit of 5
    /// calls/s, with every account minting at 08:00 (a mint and a static-IP read each).
    #[tokio::test(start_paused = true)]
    async fn probes_never_push_calls_past_the_limit_nor_delay_mints() {
        let limiter = Arc::new(RateLimiter::new(5.0));
        let start = Instant::now();
        let calls = Arc::new(std::sync::Mutex::new(Vec::<(Duration, bool)>::new()));
        let mut tasks = vec![];
        // Probes arrive evenly at 5.6/s for ten minutes.
        for i in 0..3_360u64 {
            let (limiter, calls) = (limiter.clone(), calls.clone());
            tasks.push(tokio::spawn(async move {
                tokio::time::sleep_until(start + Duration::from_millis(i * 1_000_000 / 5_600))
                    .await;
                if limiter.acquire_spare().await.is_ok() {
                    calls.lock().unwrap().push((start.elapsed(), false));
                }
            }));
        }
        // Sixteen accounts at a time mint from minute 2 (the reconciler's concurrency), 600
        // of them: each waits for its mint, then its static-IP read.
        let mints = Arc::new(std::sync::atomic::AtomicUsize::new(600));
        for _ in 0..16 {
            let (limiter, calls, mints) = (limiter.clone(), calls.clone(), mints.clone());
            tasks.push(tokio::spawn(async move {
                tokio::time::sleep_until(start + Duration::from_secs(120)).await;
                while mints
                    .fetch_update(
                        std::sync::atomic::Ordering::SeqCst,
                        std::sync::atomic::Ordering::SeqCst,
                        |left| left.checked_sub(1),
                    )
                    .is_ok()
                {
                    for _ in 0..2 {
                        limiter.acquire().await;
                        calls.lock().unwrap().push((start.elapsed(), true));
                    }
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        let calls = calls.lock().unwrap().clone();
        let mut per_second = std::collections::BTreeMap::<u64, usize>::new();
        for (at, _) in &calls {
            *per_second.entry(at.as_secs()).or_default() += 1;
        }
        assert!(
            per_second.values().all(|n| *n <= 5),
            "at most 5 calls in any second: {per_second:?}"
        );
        let urgent: Vec<Duration> = calls.iter().filter(|c| c.1).map(|c| c.0).collect();
        assert_eq!(urgent.len(), 1_200);
        // 1,200 calls at 5/s take 240 s: the mints get the whole limit, probes none of it.
        let last = *urgent.iter().max().unwrap();
        assert!(
            last <= Duration::from_secs(120 + 241),
            "last mint call at {last:?}"
        );
        let probes_during_mints = calls
            .iter()
            .filter(|(at, urgent)| !urgent && *at > Duration::from_secs(122) && *at < last)
            .count();
        assert_eq!(probes_during_mints, 0, "probes skipped while mints queue");
        let probes_before = calls
            .iter()
            .filter(|(at, u)| !u && at.as_secs() < 120)
            .count();
        assert!(
            probes_before >= 590,
            "probes use the limit while nothing else does: {probes_before}"
        );
    }
}
