//! The reconciler against a fake API server and a scripted Dhan, in virtual time: the exact
//! requests each reconcile sends, and every phase an account goes through.

mod claims;
mod dhan_answers;
pub(crate) mod fake_api;
pub(crate) mod fixtures;
mod reconcile;
mod restarts;
mod token_safety;
