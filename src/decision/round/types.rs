//! The values a round works with and hands back to the controller.

use crate::decision::calendar::TradingCalendar;
use crate::decision::{
    Failure, Limits, Method, Policy, ProbeVerdict, RefreshReason, Token, Usable,
};
use crate::dhan::IpInfo;
use chrono::{DateTime, Utc};
use std::sync::Arc;

/// What the reconcile was given: the validated spec, the credentials' shape, the operator's
/// limits and trading calendar.
#[derive(Clone, Debug)]
pub struct Inputs {
    pub policy: Policy,
    pub limits: Limits,
    /// The calendar in force when the reconcile began: one reconcile decides by one calendar,
    /// even if the file changes meanwhile.
    pub calendar: Arc<TradingCalendar>,
    pub usable: Usable,
    /// Changes whenever the spec or a credential Secret changes.
    pub fingerprint: String,
    /// A Dhan Web token the user placed in the credentials, when readable.
    pub web_token: Option<Token>,
    /// Current value of the refresh-requested annotation.
    pub refresh_request: Option<String>,
    /// Credential submissions Dhan refused for this client today (IST), by any account and
    /// any install, as its client-ID claim records them.
    pub refused_today: u32,
}

/// Where the current token is kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Stored {
    /// In the output Secret, as the spec wants it.
    Current,
    /// In an output Secret whose name, keys, labels or ownership must change: rewritten with
    /// the same token, never a new one (a move must not mint).
    Reshape,
    /// Obtained and not yet durably written: kept in memory and written before anything else,
    /// never replaced by another mint while it is valid.
    Unwritten {
        refusals: u32,
        last_error: Option<String>,
    },
}

/// The current token and where it is.
#[derive(Clone, Debug)]
pub struct Held {
    pub token: Token,
    /// How it was obtained (`renew`, `totp`, `browser`, `adopted`).
    pub method: Option<String>,
    pub stored: Stored,
}

/// What became of the browser login recorded in the memory, as the reconciler found it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LoginSeen {
    None,
    Running,
    /// The login Job handed back a `tokenId` (kept by the controller). `job_done` when the Job
    /// itself has finished: one still running (its Chromium closing) is left to finish and to
    /// its TTL rather than deleted under the sidecar.
    Succeeded {
        job_done: bool,
    },
    /// The login failed; `counts` when it reached Dhan's PIN/TOTP step (lockout).
    Failed {
        failure: Failure,
        counts: bool,
    },
}

/// A step for the controller to perform.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Exchange the finished login's `tokenId` (docs/dhan-api.md §3 step 3).
    Consume,
    /// Try `renew` or `totp`; for `browser`, generate a consent to start a login Job.
    Try(Method),
    /// Probe the current token (docs/dhan-api.md §4).
    Probe,
    /// Read the account's static IPs once per new token (docs/dhan-api.md §7).
    ReadStaticIp,
    /// Nothing more to do in this reconcile.
    Finish,
}

/// The result of a step.
#[derive(Clone, Debug)]
pub enum Outcome {
    /// A method (or the consume of a login) produced a token.
    Issued {
        method: Method,
        token: Token,
        /// The TOTP step used, if a code was sent.
        totp_step: Option<u64>,
    },
    /// A method failed.
    Failed {
        method: Method,
        failure: Failure,
        totp_step: Option<u64>,
    },
    /// A consent was generated: the login Job `job_name` is to be created.
    LoginStarted {
        consent_id: String,
        job_name: String,
    },
    /// No free login slot: the login waits without spending a consent.
    LoginQueued(String),
    Probed(ProbeVerdict),
    /// Dhan's rate limit was busy with calls that obtain tokens: the probe gave way, and its
    /// slot is spent (the next one is a period later).
    ProbeSkipped,
    StaticIp(Option<IpInfo>),
}

/// A login Job to create for a consent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoginJob {
    pub job_name: String,
    pub consent_id: String,
    /// The last TOTP step that may have been used: the login waits for a later one.
    pub totp_after_step: Option<u64>,
}

/// Something worth an event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    pub warning: bool,
    pub reason: &'static str,
    pub message: String,
}

/// A new token obtained in this reconcile, for metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refreshed {
    pub method: Method,
    pub reason: RefreshReason,
    /// When the refresh began (for a browser login: when its consent was generated).
    pub began: DateTime<Utc>,
}
