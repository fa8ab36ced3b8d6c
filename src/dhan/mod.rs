//! Everything about talking to Dhan, and nothing about Kubernetes.
//!
//! - [`api`]: the calls the operator makes, as a trait (tests put a scripted Dhan behind it).
//! - [`client`]: the HTTP calls (mint, renew, profile probe, consent flow, IP info).
//! - [`error`]: what a failure means — a [`DhanError`] whose [`ErrorKind`] tells the caller
//!   whether to give up, wait, re-mint or retry.
//! - [`mod@classify`]: turns any Dhan answer (status and body) into a [`DhanError`].
//! - [`response`]: lenient reading of success bodies.
//! - [`token`] / [`jwt`]: the access token (never printable) and its claims.
//! - [`totp`]: TOTP codes and when it is safe to send one.
//! - [`ist`]: Dhan's IST timestamps.
//!
//! Pure functions take `now` as an argument; the client only reads a clock for one fallback and
//! lets tests replace it. `docs/dhan-api.md` (cited as §n) is the specification.

pub mod api;
pub mod classify;
pub mod client;
pub mod error;
pub mod ist;
pub mod jwt;
pub mod response;
pub mod token;
pub mod totp;

pub use api::DhanApi;
pub use classify::{classify, classify_for};
pub use client::DhanClient;
pub use error::{DhanError, Endpoint, ErrorKind, MINT_THROTTLE, outcome_label};
pub use ist::IST;
pub use jwt::TokenClaims;
pub use response::{IpInfo, Profile, TOKEN_LIFETIME};
pub use token::{AccessToken, IssuedToken};
pub use totp::{CodePlan, MIN_REMAINING_SECONDS, STEP_SECONDS, TotpKey, TotpKeyError};
