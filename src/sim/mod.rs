//! A deterministic simulation of the whole operator, after FoundationDB's and TigerBeetle's:
//! one seed picks the installs, the accounts and every fault of a month; the loop runs the real
//! reconciler (gather, decide, act, apply, the claims) on the in-memory API server against a
//! simulated Dhan, and checks the promises (`invariants`) after every step. A failing seed
//! prints its trace and replays with `SIM_SEED=<seed> cargo test --lib sim::`.

mod batch;
mod dhan;
mod faults;
mod infra;
mod invariants;
mod watch;
mod world;

#[cfg(test)]
mod tests;

pub use world::{Config, Report};

use invariants::Checker;
use std::time::Duration;
use tokio::time::Instant;
use world::{PRUNE_EVERY, QUIET_END, World};

/// Runs one seed; the report lists every invariant broken.
pub async fn run(config: Config) -> Report {
    let mut world = World::new(&config);
    let mut checker = Checker::new(&world);
    let end = world.start + Duration::from_secs(u64::from(config.days) * 86_400);
    let faults_end = end.checked_sub(QUIET_END).unwrap_or(world.start);
    let mut next_fault = world.start + world.fault_gap(config.fault_every);
    let mut next_prune = world.start + PRUNE_EVERY;
    let mut quiet = false;
    let mut next_edit = config
        .edit_every
        .map(|every| world.start + world.edit_gap(every));
    let mut next_infra = config
        .infra_every
        .map(|every| world.start + world.infra_gap(every));
    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        let next = [
            world.next_due(),
            Some(next_fault).filter(|t| *t < faults_end),
            next_edit.filter(|t| *t < faults_end),
            next_infra.filter(|t| *t < faults_end),
            Some(next_prune),
            Some(faults_end).filter(|_| !quiet),
            Some(end),
        ]
        .into_iter()
        .flatten()
        .min()
        .expect("end is always there");
        if next > now {
            if world.zombies.is_empty() {
                tokio::time::advance(next - now).await;
            } else {
                // Deposed leaders' reconciles run on meanwhile, each timer at its time.
                tokio::time::sleep_until(next).await;
            }
        }
        let now = Instant::now();
        world.restart_crashed(now);
        if next_fault <= now && next_fault < faults_end {
            world.fault();
            world.report.faults += 1;
            next_fault = now + world.fault_gap(config.fault_every);
        }
        if let (Some(at), Some(every)) = (next_edit, config.edit_every)
            && at <= now
            && at < faults_end
        {
            world.spec_edit();
            world.report.faults += 1;
            next_edit = Some(now + world.edit_gap(every));
        }
        if let (Some(at), Some(every)) = (next_infra, config.infra_every)
            && at <= now
            && at < faults_end
        {
            world.infra_fault();
            world.report.faults += 1;
            next_infra = Some(now + world.infra_gap(every));
        }
        if next_prune <= now {
            world.prune().await;
            next_prune = now + PRUNE_EVERY;
        }
        if now >= faults_end && !quiet {
            quiet = true;
            // Faults end: clocks set right, and no scheduled answer of Dhan's is still to come.
            world.clocks_right();
            world.dhan.calm();
        }
        world.lift_refusals(now);
        world.lift_slowness(now);
        world.release_due(now).await;
        world.idle_beats(now).await;
        world.watch().await;
        world.reconcile_due().await;
        world.watch().await;
        checker.check(&mut world);
        if world.report.violations.len() > 20 {
            break;
        }
    }
    checker.finish(&mut world);
    world.report.mints = world.dhan.call_count();
    world.report
}
