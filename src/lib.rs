//! dhan-operator: keeps Dhan broker access tokens alive for many accounts.
//!
//! - [`dhan`]: the Dhan API client — no Kubernetes in it.
//! - [`decision`]: what should happen next for an account — pure, clock injected.
//! - [`controller`]: the Kubernetes glue that gathers facts and applies decisions.
//! - [`crd`]: the `DhanAccount` resource.
//! - [`http`] / [`metrics`]: the operator's HTTP surface.
//! - [`clock`]: the one clock the reconciler reads.
//! - [`leader`]: Lease-based leader election between replicas.
//! - [`claims`]: one minter per client ID across operator installs (a Lease per client ID).
//! - [`health`]: whether the watches work, for `/readyz`.
//! - [`browser`]: the `browser-login` driver run in login Jobs (Chromium over CDP).
//! - [`calendar_file`]: the trading calendar file, loaded and re-read at run time.
//! - [`notify`]: notifications of account state changes to Telegram or a webhook.

pub mod browser;
pub mod calendar_file;
pub mod claims;
pub mod clock;
pub mod controller;
pub mod crd;
pub mod decision;
pub mod dhan;
pub mod health;
pub mod http;
pub mod leader;
pub mod metrics;
pub mod notify;
pub mod rate_limit;
pub mod redact;
#[cfg(test)]
mod sim;
pub mod token_hash;
