//! Faults of the infrastructure the operator runs on, from a random stream of their own (so
//! the seeds kept as regressions before them still replay what they found): a node's clock
//! steps forward or back and is set right later; the API server answers slowly, or not at all
//! within its request timeout, for a while; a leader freezes and a standby takes over.

use super::world::{LEASE_DURATION, World, take_due};
use crate::controller::tests::fake_api::REQUEST_TIMEOUT;
use rand::Rng;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;
use tokio::time::Instant;

/// The most the cluster's clock is off from Dhan's, in seconds: less than the margin an attempt
/// that waits for the next IST day leaves after midnight (`--midnight-margin`).
const MAX_CLOCK_OFFSET: i64 = 9 * 60;
/// The most one node's clock is off from the others', in seconds: two such nodes stay within
/// the margin of the operator's clock assumption between processes (`leader::SKEW_MARGIN`, 5 s).
const MAX_NODE_SKEW: i64 = 2;

impl World {
    /// Picks and injects one fault of the infrastructure.
    pub(super) fn infra_fault(&mut self) {
        match self.infra_rng.random_range(0..3u32) {
            0 => {
                let install = self.infra_rng.random_range(0..self.processes.len());
                self.clock_step(install);
            }
            1 => self.slow_api(),
            _ => self.freeze_leader(),
        }
    }

    /// A leader freezes (a paused VM, a long GC pause) somewhere in its next reconcile or at a
    /// random moment, for longer than its Lease holds: a standby takes over, and the frozen one
    /// finishes its reconciles in flight when it resumes, before it notices it lost the Lease.
    fn freeze_leader(&mut self) {
        let elected: Vec<usize> = (0..self.processes.len())
            .filter(|i| {
                let p = &self.processes[*i];
                p.elected
                    && p.down_until.is_none()
                    && p.stall.is_none()
                    && p.freeze_on_mint.is_none()
            })
            .collect();
        if elected.is_empty() {
            return;
        }
        let install = elected[self.infra_rng.random_range(0..elected.len())];
        let frozen_for = LEASE_DURATION + Duration::from_secs(self.infra_rng.random_range(1..=150));
        if self.infra_rng.random_bool(0.5) {
            // Right after its next mint call reached Dhan, before the answer comes.
            self.processes[install].freeze_on_mint = Some(frozen_for);
            self.note(format!(
                "fault: install-{install}'s leader will freeze when its next mint call reaches \
                 Dhan, for {}s",
                frozen_for.as_secs()
            ));
        } else {
            let at =
                Instant::now() + Duration::from_millis(self.infra_rng.random_range(0..600_000));
            self.processes[install].stall = Some((at, frozen_for));
            self.note(format!(
                "fault: install-{install}'s leader will freeze in {:?} for {}s",
                at - Instant::now(),
                frozen_for.as_secs()
            ));
        }
    }

    /// For a while the API server answers some requests (a namespace's Secrets, everything in
    /// a namespace, the client-ID claims, or all) after a delay: past its request timeout with
    /// a 504, the request carried out or not.
    fn slow_api(&mut self) {
        let t = self.infra_rng.random_range(0..self.tenants.len());
        let ns = self.tenants[t].namespace.clone();
        let path = match self.infra_rng.random_range(0..4u32) {
            0 => format!("/namespaces/{ns}/secrets/"),
            1 => format!("/namespaces/{ns}/"),
            2 => "/dhanclientclaims".to_string(),
            _ => "/".to_string(),
        };
        let delay = Duration::from_secs(self.infra_rng.random_range(1..=90));
        let carried_out = self.infra_rng.random_bool(0.5);
        let span = Duration::from_secs(self.infra_rng.random_range(10..=600));
        let now = Instant::now();
        self.api.fast(&path);
        self.api.slow(&path, delay, carried_out);
        self.slow.insert(path.clone(), now + span);
        // A request sent just before the end is answered up to the timeout later.
        let excused = now + span + REQUEST_TIMEOUT;
        self.excused_until = Some(self.excused_until.map_or(excused, |e| e.max(excused)));
        self.slow_spans += 1;
        let how = if delay < REQUEST_TIMEOUT {
            format!("after {}s", delay.as_secs())
        } else if carried_out {
            "504 at the timeout, carried out".to_string()
        } else {
            "504 at the timeout, not carried out".to_string()
        };
        self.note(format!(
            "fault: the API server answers requests under {path} {how} for {}s",
            span.as_secs()
        ));
    }

    /// Ends the slowness whose time is over.
    pub(super) fn lift_slowness(&mut self, now: Instant) {
        for path in take_due(&mut self.slow, now) {
            self.api.fast(&path);
            self.note(format!(
                "the API server answers requests under {path} at once again"
            ));
        }
        if self.excused_until.is_some_and(|e| e <= now) {
            self.excused_until = None;
        }
    }

    /// A clock steps: the cluster's time source (every node) by a few seconds to nine minutes
    /// from Dhan's, or one node by up to 2 s from the others; or it is set right again. Every
    /// clock read of the processes follows it (TOTP codes, expiries, the schedule, the claims'
    /// heartbeats, the Lease); Dhan keeps the true time.
    fn clock_step(&mut self, install: usize) {
        let node = self.processes[install].clock.clone();
        let cluster = self.infra_rng.random_bool(0.5);
        let (cell, what): (&AtomicI64, String) = if cluster {
            (&node.cluster_ms, "the cluster's clock".into())
        } else {
            (&node.offset_ms, format!("install-{install}'s node clock"))
        };
        let before = cell.load(Ordering::Relaxed) / 1000;
        let after = if before != 0 {
            0
        } else {
            let size = match (cluster, self.infra_rng.random_bool(0.5)) {
                (false, _) => self.infra_rng.random_range(1..=MAX_NODE_SKEW),
                (true, true) => self.infra_rng.random_range(1..=30),
                (true, false) => self.infra_rng.random_range(31..=MAX_CLOCK_OFFSET),
            };
            if self.infra_rng.random_bool(0.5) {
                size
            } else {
                -size
            }
        };
        cell.store(after * 1000, Ordering::Relaxed);
        // A clock that is off may make a mint due by its reckoning (a token that looks
        // expiring, a schedule that comes early).
        let installs: Vec<usize> = if cluster {
            (0..self.processes.len()).collect()
        } else {
            vec![install]
        };
        for i in installs {
            for client in self.clients_of(i) {
                self.cause(&client);
            }
        }
        self.note(format!(
            "fault: {what} steps {:+}s (now {after:+}s off)",
            after - before
        ));
    }

    /// Every clock set right (the quiet end of a run: NTP caught up).
    pub(super) fn clocks_right(&mut self) {
        for i in 0..self.processes.len() {
            let node = self.processes[i].clock.clone();
            if node.offset().num_milliseconds() != 0 {
                node.cluster_ms.store(0, Ordering::Relaxed);
                node.offset_ms.store(0, Ordering::Relaxed);
                self.note(format!("install-{i}'s node clock is set right"));
            }
        }
    }
}
