//! A deterministic simulation of the whole operator, after FoundationDB's and TigerBeetle's:
//! one seed picks the installs, the accounts and every fault of a month; the loop runs the real
//! reconciler (gather, decide, act, apply, the claims) on the in-memory API server against a
//! simulated Dhan, and checks the promises (`invariants`) after every step. A failing seed
//! prints its trace and replays with `SIM_SEED=<seed> cargo test --lib sim::`.

mod dhan;
mod invariants;
mod world;

#[cfg(test)]
mod tests;

pub use world::{Config, Report, run};
