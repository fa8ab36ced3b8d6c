//! One step's reconciles: every account due in every running process, run together on the
//! paused clock beside the processes' heartbeats, each cut off where its process crashes.

use super::dhan::{ACTING, Acting};
use super::world::{ERROR_RETRY, World};
use crate::controller::Context;
use crate::controller::reconcile::{self, Error};
use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio::time::{Instant, Sleep};

/// What a reconcile's process let it do.
enum Ran {
    Done(Outcome),
    /// Its process crashed in the middle of it.
    Crashed,
    /// Its process froze in the middle of it; it goes on when the process resumes.
    Frozen(JoinHandle<Outcome>),
}

pub(super) type Outcome = Result<Option<Duration>, Error>;

/// A future that makes no progress from `from` until `thaw`: the work of a frozen process.
/// Its timers that fall due meanwhile fire when it resumes.
struct Frozen<F> {
    inner: Pin<Box<F>>,
    from: Instant,
    thaw: Pin<Box<Sleep>>,
}

impl<F> Frozen<F> {
    fn new(inner: F, from: Instant, thaw: Instant) -> Frozen<F> {
        Frozen {
            inner: Box::pin(inner),
            from,
            thaw: Box::pin(tokio::time::sleep_until(thaw)),
        }
    }
}

impl<F: Future> Future for Frozen<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<F::Output> {
        let this = self.get_mut();
        let now = Instant::now();
        if now >= this.from && now < this.thaw.deadline() {
            // Woken when it thaws.
            let _ = this.thaw.as_mut().poll(cx);
            return Poll::Pending;
        }
        this.inner.as_mut().poll(cx)
    }
}

impl World {
    /// Runs every reconcile that is due, the processes side by side; a process whose crash
    /// comes meanwhile dies in the middle of whatever it awaits.
    pub(super) async fn reconcile_due(&mut self) {
        let now = Instant::now();
        let mut runs = Vec::new();
        for (i, p) in self.processes.iter_mut().enumerate() {
            if p.down_until.is_some() {
                continue;
            }
            let due: Vec<String> = p
                .due
                .iter()
                .filter(|(_, t)| **t <= now)
                .map(|(k, _)| k.clone())
                .collect();
            for key in due {
                p.due.remove(&key);
                let Some(account) = p.cached.get(&key).cloned() else {
                    continue;
                };
                runs.push((i, p.incarnation, key, account));
            }
        }
        if runs.is_empty() {
            return;
        }
        // The heartbeat task, one per process, beats first if due.
        for p in self.processes.iter().filter(|p| p.down_until.is_none()) {
            if let Some(claims) = &p.ctx.claims
                && claims.beat_due()
                && let Err(error) = claims.beat().await
            {
                self.report
                    .trace
                    .push(format!("{} heartbeat failed: {error}", p.install));
            }
        }
        let hangs_before = self.dhan.hangs_started();
        let slow_before = (self.slow_spans, self.excused_until.is_none());
        let crash_at: Vec<Option<Instant>> = self.processes.iter().map(|p| p.crash_at).collect();
        let stalls: Vec<Option<(Instant, Duration)>> =
            self.processes.iter().map(|p| p.stall).collect();
        // Where each process stops: it crashes, or it freezes.
        let stops: Vec<Option<Instant>> = crash_at
            .iter()
            .zip(&stalls)
            .map(|(crash, stall)| crash.iter().copied().chain(stall.map(|(at, _)| at)).min())
            .collect();
        let contexts: Vec<Arc<Context>> = self.processes.iter().map(|p| p.ctx.clone()).collect();
        for i in 0..self.processes.len() {
            self.renew_lease(i);
        }
        let reconciles = runs.iter().map(|(i, incarnation, key, account)| {
            let ctx = contexts[*i].clone();
            let acting = Acting {
                account: key.clone(),
                process: (*i, *incarnation),
            };
            let account = Arc::new(account.clone());
            let crash = crash_at[*i];
            let stall = stalls[*i];
            async move {
                let run = ACTING.scope(acting, reconcile::reconcile_bounded(account, ctx));
                match (stall, crash) {
                    (Some((at, frozen_for)), crash) if crash.is_none_or(|c| at < c) => {
                        // It freezes at `at` with the reconcile in flight: the step waits for it
                        // until then; it finishes in the background when the process resumes.
                        let mut handle = tokio::spawn(Frozen::new(run, at, at + frozen_for));
                        match tokio::time::timeout_at(at, &mut handle).await {
                            Ok(outcome) => Ran::Done(outcome.expect("a reconcile does not panic")),
                            Err(_) => Ran::Frozen(handle),
                        }
                    }
                    (_, Some(at)) => match tokio::time::timeout_at(at, run).await {
                        Ok(outcome) => Ran::Done(outcome),
                        Err(_) => Ran::Crashed,
                    },
                    (_, None) => Ran::Done(run.await),
                }
            }
        });
        let all = futures::future::join_all(reconciles);
        // The heartbeat task runs beside the reconciles, and the leaders renew their Leases.
        let leases = self.leases();
        let api = self.api.clone();
        let beats = async {
            loop {
                tokio::time::sleep(crate::claims::HEARTBEAT_EVERY).await;
                for (i, ctx) in contexts.iter().enumerate() {
                    if stops[i].is_some_and(|t| t <= Instant::now()) {
                        continue;
                    }
                    if let Some(claims) = &ctx.claims
                        && claims.beat_due()
                    {
                        let _ = claims.beat().await;
                    }
                }
            }
        };
        let renewals = async {
            loop {
                tokio::time::sleep(crate::leader::RENEW_EVERY).await;
                for (i, lease) in &leases {
                    if stops[*i].is_some_and(|t| t <= Instant::now()) {
                        continue;
                    }
                    lease.renew(&api);
                }
            }
        };
        let results = tokio::select! {
            results = all => results,
            () = beats => unreachable!("the heartbeat never ends"),
            () = renewals => unreachable!("the renewals never end"),
        };
        self.report.reconciles += results.len() as u64;
        let after = Instant::now();
        let mut crashed = BTreeSet::new();
        for ((i, incarnation, key, _), result) in runs.into_iter().zip(results) {
            if self.processes[i].incarnation != incarnation {
                continue;
            }
            *self.report.per_account.entry(key.clone()).or_default() += 1;
            match result {
                Ran::Crashed => {
                    crashed.insert(i);
                }
                Ran::Frozen(handle) => self.zombies.push(handle),
                Ran::Done(Ok(requeue)) => {
                    if let Some(after_d) = requeue {
                        self.processes[i].due.insert(key, after + after_d);
                    }
                }
                Ran::Done(Err(error)) => {
                    if matches!(error, Error::Deadline(_))
                        && self.dhan.hangs_started() == hangs_before
                        && slow_before == (self.slow_spans, true)
                        && self.excused_until.is_none()
                    {
                        self.report.violations.push(format!(
                            "[{}] I6: the reconcile of {key} was cut off at its deadline with no \
                             hanging call or slow API server to blame",
                            self.elapsed()
                        ));
                    }
                    self.note(format!("install-{i} reconcile of {key} failed: {error}"));
                    self.processes[i].due.insert(key, after + ERROR_RETRY);
                }
            }
        }
        for i in crashed {
            self.crash(i, after);
        }
    }
}
