//! One reconcile of one account, as a state machine the controller drives: it asks
//! [`Round::next`] for a step, performs it (a Dhan call), and hands the result back to
//! [`Round::absorb`]. Everything that is decided — which method to try, how a failure is
//! folded, what the operator remembers, which events are due — is decided here, without I/O,
//! so the whole reconcile runs in tests with a fake Dhan and a fake clock.

use super::decide::{Decision, Facts, LATE_TOKEN_PROBE_DELAY, RefreshReason, decide};
use super::failure::{Failure, FailureKind, Handling, MethodFailure, summarise};
use super::memory::{DayCount, LastFailure, LoginRecord, Memory};
use super::method::{Method, Usable};
use super::policy::{Limits, Policy};
use super::token::{ProbeVerdict, Token, TokenFacts};
use super::{after, backoff_until};
use crate::dhan::ist::next_ist_midnight;
use crate::dhan::{IpInfo, totp};
use chrono::{DateTime, Utc};

/// Dhan allows at most this many consents per client per day (docs/dhan-api.md §3).
pub const DAILY_CONSENT_LIMIT: u32 = 25;

/// What the reconcile was given: the validated spec, the credentials' shape, the operator's
/// limits.
#[derive(Clone, Debug)]
pub struct Inputs {
    pub policy: Policy,
    pub limits: Limits,
    pub usable: Usable,
    /// Changes whenever the spec or a credential Secret changes.
    pub fingerprint: String,
    /// A Dhan Web token the user placed in the credentials, when readable.
    pub web_token: Option<Token>,
    /// Current value of the refresh-requested annotation.
    pub refresh_request: Option<String>,
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
    /// The login Job handed back a `tokenId` (kept by the controller).
    Succeeded,
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

/// A refresh attempt in progress: the methods left to try and the failures so far.
#[derive(Clone, Debug)]
struct Attempt {
    reason: RefreshReason,
    request: Option<String>,
    began: DateTime<Utc>,
    remaining: Vec<Method>,
    failures: Vec<(Method, MethodFailure)>,
}

/// One reconcile's state.
#[derive(Clone, Debug)]
pub struct Round {
    pub inputs: Inputs,
    pub token: Option<Held>,
    pub probe: Option<(DateTime<Utc>, ProbeVerdict)>,
    pub memory: Memory,
    pub login: LoginSeen,
    /// Why a due login waits for a slot.
    pub queued: Option<String>,
    pub notes: Vec<Note>,
    pub refreshed: Option<Refreshed>,
    pub static_ip: Option<IpInfo>,
    pub job_to_create: Option<LoginJob>,
    /// The finished login Job to delete (a failed one is left for its TTL, for `describe`).
    pub job_to_delete: Option<String>,
    /// A recorded login ended in this reconcile: its slot is free.
    pub login_ended: bool,
    /// The last decision, for the status.
    pub decision: Option<Decision>,
    attempt: Option<Attempt>,
    attempted: bool,
    probed: bool,
    adopted: bool,
    static_ip_read: bool,
}

impl Round {
    pub fn new(
        inputs: Inputs,
        token: Option<Held>,
        probe: Option<(DateTime<Utc>, ProbeVerdict)>,
        memory: Memory,
        login: LoginSeen,
        now: DateTime<Utc>,
    ) -> Round {
        let mut round = Round {
            inputs,
            token,
            probe,
            memory,
            login: LoginSeen::None,
            queued: None,
            notes: vec![],
            refreshed: None,
            static_ip: None,
            job_to_create: None,
            job_to_delete: None,
            login_ended: false,
            decision: None,
            attempt: None,
            attempted: false,
            probed: false,
            adopted: false,
            static_ip_read: false,
        };
        round.see_login(login, now);
        round
    }

    fn see_login(&mut self, login: LoginSeen, now: DateTime<Utc>) {
        let Some(record) = self.memory.login.clone() else {
            return;
        };
        if !matches!(login, LoginSeen::Running) {
            // The Job typed a TOTP code of some step up to now; the next code (in a login or a
            // mint) must come from a later step, or Dhan rejects it as a replay (§1).
            let now_step = totp::step_at(now);
            self.memory.last_totp_step = self.memory.last_totp_step.max(Some(now_step));
        }
        match login {
            LoginSeen::Running | LoginSeen::Succeeded => self.login = login,
            LoginSeen::None => {
                self.memory.login = None;
                self.login_ended = true;
            }
            LoginSeen::Failed { failure, counts } => {
                self.memory.login = None;
                self.login_ended = true;
                let mut failure = failure;
                if counts {
                    self.memory.failed_logins =
                        Some(DayCount::increment(self.memory.failed_logins.as_ref(), now));
                    failure = self.lockout(&failure, now).unwrap_or(failure);
                }
                self.fail(
                    vec![(Method::Browser, MethodFailure::Failed(failure))],
                    record.reason,
                    record.refresh_request,
                    now,
                );
            }
        }
    }

    /// After too many failed logins today, whatever the last failure was, the account stops.
    fn lockout(&self, last: &Failure, now: DateTime<Utc>) -> Option<Failure> {
        let failed = DayCount::today(self.memory.failed_logins.as_ref(), now);
        let max = self.inputs.limits.max_failed_logins;
        (failed >= max).then(|| {
            Failure::new(
                FailureKind::LoginLockout,
                format!(
                    "{failed} browser logins failed today after reaching Dhan's PIN/TOTP step \
                     (the last: {}); stopped so that Dhan does not lock the account — check the \
                     mobile number, PIN and TOTP key in the credentials, then change the Secret \
                     or request a refresh",
                    last.message
                ),
            )
        })
    }

    /// The facts the timing decision sees now.
    pub fn facts(&self, now: DateTime<Utc>) -> Facts<'_> {
        Facts {
            now,
            policy: &self.inputs.policy,
            limits: &self.inputs.limits,
            token: self.token.as_ref().map(|h| &h.token.facts),
            web_token: self.inputs.web_token.as_ref().map(|t| &t.facts),
            probe: self.probe,
            memory: &self.memory,
            inputs_fingerprint: &self.inputs.fingerprint,
            refresh_request: self.inputs.refresh_request.as_deref(),
        }
    }

    /// The next step.
    pub fn next(&mut self, now: DateTime<Utc>) -> Step {
        if self.inputs.policy.suspend {
            self.abandon_login();
            self.decision = Some(Decision::Suspended);
            return Step::Finish;
        }
        loop {
            match self.login {
                LoginSeen::Succeeded => return Step::Consume,
                LoginSeen::Running => return Step::Finish,
                _ => {}
            }
            if self.queued.is_some() {
                return Step::Finish;
            }
            if self.attempt.is_some() {
                match self.next_method(now) {
                    Some(method) => return Step::Try(method),
                    None => {
                        let attempt = self.attempt.take().expect("checked");
                        self.fail(attempt.failures, attempt.reason, attempt.request, now);
                        continue;
                    }
                }
            }
            if self.refreshed.is_some() && !self.static_ip_read {
                return Step::ReadStaticIp;
            }
            let decision = decide(&self.facts(now));
            match decision {
                Decision::Adopt if !self.adopted => self.adopt(),
                Decision::Refresh(reason) if !self.attempted => self.begin(reason, now),
                Decision::Probe if !self.probed => return Step::Probe,
                other => {
                    self.decision = Some(other);
                    return Step::Finish;
                }
            }
        }
    }

    fn begin(&mut self, reason: RefreshReason, now: DateTime<Utc>) {
        self.attempted = true;
        self.attempt = Some(Attempt {
            reason,
            request: self.inputs.refresh_request.clone(),
            began: now,
            remaining: self.inputs.policy.methods.clone(),
            failures: vec![],
        });
    }

    fn adopt(&mut self) {
        self.adopted = true;
        let web = self
            .inputs
            .web_token
            .clone()
            .expect("adopt only a web token");
        self.notes.push(Note {
            warning: false,
            reason: "TokenAdopted",
            message: format!(
                "Adopted the Dhan Web token from the credentials; valid until {}",
                rfc3339(web.facts.expires_at)
            ),
        });
        self.token = Some(Held {
            token: web,
            method: Some("adopted".into()),
            stored: Stored::Unwritten {
                refusals: 0,
                last_error: None,
            },
        });
        self.probe = None;
    }

    /// The first remaining method that can be used; the ones that cannot are recorded.
    fn next_method(&mut self, now: DateTime<Utc>) -> Option<Method> {
        loop {
            let attempt = self.attempt.as_ref()?;
            let method = *attempt.remaining.first()?;
            let usable = self.usable(method, now);
            let attempt = self.attempt.as_mut().expect("checked");
            attempt.remaining.remove(0);
            match usable {
                Ok(()) => return Some(method),
                Err(failure) => attempt.failures.push((method, failure)),
            }
        }
    }

    fn usable(&self, method: Method, now: DateTime<Utc>) -> Result<(), MethodFailure> {
        let not = |why: &str| Err(MethodFailure::NotApplicable(why.to_string()));
        match method {
            // RenewToken refuses APP and API-key tokens with HTTP 500 DH-905 and cannot revive
            // an expired one (§2): never send it such a token.
            Method::Renew if self.renewable(now).is_none() => {
                not("needs a live Dhan Web (SELF) token in accessToken")
            }
            Method::Renew => Ok(()),
            Method::Totp => self.inputs.usable.totp.clone().or_else(|w| not(&w)),
            Method::Browser => {
                self.inputs.usable.browser.clone().or_else(|w| not(&w))?;
                let used = DayCount::today(self.memory.consents.as_ref(), now);
                if used >= DAILY_CONSENT_LIMIT {
                    return Err(MethodFailure::Failed(Failure::new(
                        FailureKind::ConsentLimitExceeded,
                        format!(
                            "{used} of {DAILY_CONSENT_LIMIT} consents already generated today \
                             (IST); next login after midnight IST"
                        ),
                    )));
                }
                Ok(())
            }
        }
    }

    /// The token `renew` would send: the current one or the pasted web token, if live `SELF`.
    pub fn renewable(&self, now: DateTime<Utc>) -> Option<&Token> {
        let ok = |t: &&Token| t.facts.is_web_token() && t.facts.is_live(now);
        let current = self.token.as_ref().map(|h| &h.token).filter(ok);
        current.or(self.inputs.web_token.as_ref().filter(ok))
    }

    /// Takes in the result of a step.
    pub fn absorb(&mut self, outcome: Outcome, now: DateTime<Utc>) {
        match outcome {
            Outcome::Issued {
                method,
                token,
                totp_step,
            } => {
                self.note_step(totp_step);
                self.accept(method, token, now);
            }
            Outcome::Failed {
                method,
                failure,
                totp_step,
            } => {
                self.note_step(totp_step);
                self.method_failed(method, failure, now);
            }
            Outcome::LoginStarted {
                consent_id,
                job_name,
            } => self.login_started(consent_id, job_name, now),
            Outcome::LoginQueued(why) => self.login_queued(why, now),
            Outcome::Probed(verdict) => self.probed(verdict, now),
            Outcome::StaticIp(info) => {
                self.static_ip_read = true;
                self.static_ip = info;
            }
        }
    }

    fn note_step(&mut self, step: Option<u64>) {
        self.memory.last_totp_step = self.memory.last_totp_step.max(step);
    }

    fn accept(&mut self, method: Method, token: Token, now: DateTime<Utc>) {
        let (reason, request, began) = match (self.attempt.take(), self.login_record()) {
            (Some(a), _) => (a.reason, a.request, a.began),
            (None, Some(login)) => (login.reason, login.refresh_request, login.started_at),
            (None, None) => (RefreshReason::NoToken, None, now),
        };
        if self.login == LoginSeen::Succeeded {
            self.finish_login();
        }
        self.notes.push(Note {
            warning: false,
            reason: "Refreshed",
            message: format!(
                "Obtained a new token with {} ({}); valid until {}",
                method.as_str(),
                reason.describe(),
                rfc3339(token.facts.expires_at)
            ),
        });
        self.refreshed = Some(Refreshed {
            method,
            reason,
            began,
        });
        // Dhan just issued it: that counts as a probe, so the Dhan rate limit goes to accounts
        // that need it.
        self.probe = Some((now, ProbeVerdict::Alive));
        self.token = Some(Held {
            token,
            method: Some(method.as_str().into()),
            stored: Stored::Unwritten {
                refusals: 0,
                last_error: None,
            },
        });
        let handled = request.or(self.memory.refresh_request_handled.take());
        self.memory = Memory {
            last_mint: Some(now),
            refresh_request_handled: handled,
            last_totp_step: self.memory.last_totp_step,
            consents: self.memory.consents.take(),
            failed_logins: self.memory.failed_logins.take(),
            ..Memory::default()
        };
    }

    /// Stops the login in progress (suspend, a spec that became invalid, a conflict): its Job
    /// is deleted and its slot freed.
    pub fn abandon_login(&mut self) {
        self.finish_login();
    }

    fn login_record(&self) -> Option<LoginRecord> {
        self.memory.login.clone()
    }

    fn finish_login(&mut self) {
        if let Some(record) = self.memory.login.take() {
            self.job_to_delete = Some(record.job_name);
            self.login_ended = true;
        }
        self.login = LoginSeen::None;
    }

    fn method_failed(&mut self, method: Method, failure: Failure, now: DateTime<Utc>) {
        // RenewToken said the current web token is dead: it is (§2, §4).
        if method == Method::Renew
            && failure.kind == FailureKind::TokenDead
            && self
                .token
                .as_ref()
                .is_some_and(|h| h.token.facts.is_web_token())
        {
            self.probe = Some((now, ProbeVerdict::Dead));
        }
        if failure.kind.outcome_unknown() {
            self.memory.mint_unconfirmed = Some(now);
        }
        if self.login == LoginSeen::Succeeded {
            // The consume of a finished login failed: that login is over.
            let record = self.memory.login.clone().expect("a login was recorded");
            self.finish_login();
            let failures = vec![(method, MethodFailure::Failed(failure))];
            self.fail(failures, record.reason, record.refresh_request, now);
            return;
        }
        if let Some(attempt) = self.attempt.as_mut() {
            attempt
                .failures
                .push((method, MethodFailure::Failed(failure)));
        }
    }

    fn login_started(&mut self, consent_id: String, job_name: String, now: DateTime<Utc>) {
        let attempt = self
            .attempt
            .take()
            .expect("a login starts within an attempt");
        self.memory.consents = Some(DayCount::increment(self.memory.consents.as_ref(), now));
        self.notes.push(Note {
            warning: false,
            reason: "LoginStarted",
            message: format!(
                "Generated a consent and started the browser login Job {job_name} ({})",
                attempt.reason.describe()
            ),
        });
        self.job_to_create = Some(LoginJob {
            job_name: job_name.clone(),
            consent_id,
            totp_after_step: self.memory.last_totp_step,
        });
        self.memory.login = Some(LoginRecord {
            job_name,
            started_at: now,
            reason: attempt.reason,
            refresh_request: attempt.request,
        });
        self.login = LoginSeen::Running;
    }

    fn login_queued(&mut self, why: String, now: DateTime<Utc>) {
        let attempt = self
            .attempt
            .take()
            .expect("a login queues within an attempt");
        let dhan_failed = attempt
            .failures
            .iter()
            .any(|(_, f)| matches!(f, MethodFailure::Failed(_)));
        if dhan_failed {
            // Waiting for a slot would re-run the methods before `browser` every few seconds:
            // after a failure among them, back off instead.
            let mut failures = attempt.failures;
            failures.push((
                Method::Browser,
                MethodFailure::Failed(Failure::new(FailureKind::LoginFailed, why)),
            ));
            self.fail(failures, attempt.reason, attempt.request, now);
        } else {
            self.queued = Some(why);
        }
    }

    fn probed(&mut self, verdict: ProbeVerdict, now: DateTime<Utc>) {
        self.probed = true;
        let was_dead = matches!(self.probe, Some((_, ProbeVerdict::Dead)));
        self.probe = Some((now, verdict));
        if verdict == ProbeVerdict::Dead && !was_dead {
            self.notes.push(Note {
                warning: true,
                reason: "TokenRejected",
                message: "Dhan rejected the current token before its expiry; replacing it".into(),
            });
        }
        let Some(unconfirmed) = self.memory.mint_unconfirmed else {
            return;
        };
        if now < after(unconfirmed, LATE_TOKEN_PROBE_DELAY) || verdict == ProbeVerdict::Unknown {
            return;
        }
        self.memory.mint_unconfirmed = None;
        let message = match verdict {
            ProbeVerdict::Dead => format!(
                "the mint at {} whose answer was lost was carried out by Dhan and revoked the \
                 previous token; minting once more as soon as Dhan's limits allow",
                rfc3339(unconfirmed)
            ),
            _ => format!(
                "the previous token still works after the mint at {} whose answer was lost",
                rfc3339(unconfirmed)
            ),
        };
        self.notes.push(Note {
            warning: verdict == ProbeVerdict::Dead,
            reason: "LateTokenCheck",
            message,
        });
    }

    /// A failed attempt: what to remember, and the event.
    fn fail(
        &mut self,
        failures: Vec<(Method, MethodFailure)>,
        reason: RefreshReason,
        request: Option<String>,
        now: DateTime<Utc>,
    ) {
        let folded = summarise(&failures);
        let memory = &mut self.memory;
        let limits = &self.inputs.limits;
        memory.retry_not_before = match folded.kind.handling() {
            Handling::Hold => {
                memory.held_inputs = Some(self.inputs.fingerprint.clone());
                // A refresh request is honoured by a held failure too; a transient one leaves
                // it pending, so it is retried rather than silently dropped.
                memory.refresh_request_handled = request.or(memory.refresh_request_handled.take());
                memory.failed_attempts = 0;
                None
            }
            Handling::Backoff => {
                memory.failed_attempts += 1;
                Some(backoff_until(now, memory.failed_attempts))
            }
            Handling::AfterMintInterval => {
                memory.failed_attempts += 1;
                Some(after(now, limits.min_mint_interval))
            }
            Handling::NextIstDay => {
                memory.failed_attempts += 1;
                Some(next_ist_midnight(now))
            }
        };
        memory.last_failure = Some(LastFailure {
            at: now,
            reason: folded.kind.reason().into(),
            message: folded.message.clone(),
        });
        self.notes.push(Note {
            warning: true,
            reason: "RefreshFailed",
            message: format!(
                "{} ({}): {}",
                reason.describe(),
                folded.kind.reason(),
                folded.message
            ),
        });
    }

    /// The token to write to the output Secret, if it is not there as the spec wants it.
    pub fn token_to_store(&self) -> Option<&Held> {
        self.token.as_ref().filter(|h| h.stored != Stored::Current)
    }

    /// What came of writing the token to the output Secret. A refusal keeps the token
    /// (it is the only live one: Dhan revoked the previous one when it issued this one).
    pub fn stored(&mut self, result: Result<(), String>) {
        let Some(held) = self.token.as_mut() else {
            return;
        };
        match result {
            Ok(()) => held.stored = Stored::Current,
            Err(error) => {
                let refusals = match &held.stored {
                    Stored::Unwritten { refusals, .. } => refusals + 1,
                    _ => 1,
                };
                if refusals == 1 {
                    self.notes.push(Note {
                        warning: true,
                        reason: "SecretWriteRefused",
                        message: format!(
                            "token obtained but the Secret write was refused: {error}; the \
                             token is kept and the write retried, no new token is minted"
                        ),
                    });
                }
                held.stored = Stored::Unwritten {
                    refusals,
                    last_error: Some(error),
                };
            }
        }
    }

    /// The token's facts, when there is one.
    pub fn token_facts(&self) -> Option<&TokenFacts> {
        self.token.as_ref().map(|h| &h.token.facts)
    }
}

/// RFC 3339 in UTC with second precision, as written to Secrets, status and messages.
pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}
