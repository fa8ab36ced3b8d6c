//! One step's reconciles: every account due in every running process, run together on the
//! paused clock beside the processes' heartbeats, each cut off where its process crashes.

use super::dhan::{ACTING, Acting};
use super::world::{ERROR_RETRY, Outcome, World, take_due};
use crate::controller::Context;
use crate::controller::reconcile::{self, Error};
use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{Instant, Sleep};

/// What a reconcile's process let it do.
enum Ran {
    Done(Outcome),
    /// Its process crashed in the middle of it.
    Crashed,
    /// Its process froze in the middle of it; it goes on when the process resumes.
    Frozen(JoinHandle<Option<Outcome>>),
}

/// A freeze: when it comes (set, or still to be set by Dhan's receiving a mint call), and for
/// how long.
type Freeze = (watch::Receiver<Option<Instant>>, Duration);

fn ran(outcome: Option<Outcome>) -> Ran {
    match outcome {
        Some(outcome) => Ran::Done(outcome),
        None => Ran::Crashed,
    }
}

/// Returns when the freeze comes.
async fn frozen(mut at: watch::Receiver<Option<Instant>>) {
    let at = match at.wait_for(Option::is_some).await {
        Ok(at) => (*at).expect("set"),
        Err(_) => return std::future::pending().await,
    };
    tokio::time::sleep_until(at).await;
}

/// A future that makes no progress while its process is frozen: from the freeze's moment for
/// its length. Its timers that fall due meanwhile fire when it resumes.
struct Frozen<F> {
    inner: Pin<Box<F>>,
    at: watch::Receiver<Option<Instant>>,
    length: Duration,
    thaw: Option<Pin<Box<Sleep>>>,
}

impl<F: Future> Future for Frozen<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<F::Output> {
        let this = self.get_mut();
        let at = *this.at.borrow();
        if let Some(at) = at {
            let now = Instant::now();
            let thaw = at + this.length;
            if now >= at && now < thaw {
                // Woken when it thaws.
                let sleep = this
                    .thaw
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(thaw)));
                let _ = sleep.as_mut().poll(cx);
                return Poll::Pending;
            }
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
            for key in take_due(&mut p.due, now) {
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
        // Freezes: at a set moment, or armed on the process's next mint call that reaches Dhan.
        let mut armed = Vec::new();
        let mut freezes: Vec<Option<Freeze>> = Vec::new();
        for (i, p) in self.processes.iter().enumerate() {
            let freeze = match (p.stall, p.freeze_on_mint) {
                (Some((at, length)), _) => Some((watch::channel(Some(at)).1, length)),
                (None, Some(length)) if runs.iter().any(|(r, ..)| *r == i) => {
                    let (trigger, freeze) = watch::channel(None);
                    self.dhan.freeze_on_mint((i, p.incarnation), trigger);
                    armed.push((i, p.incarnation));
                    Some((freeze, length))
                }
                _ => None,
            };
            freezes.push(freeze);
        }
        // Whether process `i` has stopped (crashed or frozen) by now.
        let stopped = |i: usize| {
            let now = Instant::now();
            crash_at[i].is_some_and(|t| t <= now)
                || freezes[i]
                    .as_ref()
                    .is_some_and(|(at, _)| at.borrow().is_some_and(|t| t <= now))
        };
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
            let freeze = freezes[*i].clone();
            async move {
                let run = ACTING.scope(acting, reconcile::reconcile_bounded(account, ctx));
                let run = async move {
                    match crash {
                        Some(at) => tokio::time::timeout_at(at, run).await.ok(),
                        None => Some(run.await),
                    }
                };
                let Some((at, length)) = freeze else {
                    return ran(run.await);
                };
                // The step waits for it until its process freezes; it finishes in the
                // background when the process resumes.
                let mut task = tokio::spawn(Frozen {
                    inner: Box::pin(run),
                    at: at.clone(),
                    length,
                    thaw: None,
                });
                tokio::select! {
                    biased;
                    joined = &mut task => ran(joined.expect("a reconcile does not panic")),
                    () = frozen(at) => Ran::Frozen(task),
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
                    if stopped(i) {
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
                    if stopped(*i) {
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
        for (i, incarnation) in armed {
            self.dhan.disarm((i, incarnation));
            if let Some((at, length)) = &freezes[i]
                && let Some(at) = *at.borrow()
            {
                self.processes[i].stall = Some((at, length.to_owned()));
                self.processes[i].freeze_on_mint = None;
            }
        }
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
                Ran::Frozen(handle) => self.zombies.push((i, key, handle)),
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
