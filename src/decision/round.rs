//! One reconcile of one account, as a state machine the controller drives: it asks
//! [`Round::next`] for a step, performs it (a Dhan call), and hands the result back to
//! [`Round::absorb`]. Everything that is decided — which method to try, how a failure is
//! folded, what the operator remembers, which events are due — is decided here, without I/O,
//! so the whole reconcile runs in tests with a fake Dhan and a fake clock.

use super::decide::{Decision, Facts, LATE_TOKEN_PROBE_DELAY, RefreshReason, decide};
use super::memory::Memory;
use super::method::Method;
use super::schedule::next_grid_slot_after;
use super::token::{ProbeVerdict, Token, TokenFacts};
use super::{after, rfc3339};
use crate::dhan::IpInfo;
use chrono::{DateTime, Utc};

mod attempt;
mod login;
mod types;

use attempt::Attempt;
pub use attempt::DAILY_CONSENT_LIMIT;
pub use types::{Held, Inputs, LoginJob, LoginSeen, Note, Outcome, Refreshed, Step, Stored};

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
    /// A login's token was taken while its Job still ran (Chromium closing): the Job is removed
    /// by a later reconcile, once it completed or failed to.
    pub job_still_running: bool,
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
        // A restarted operator does not know when a token was last probed: it counts as probed
        // at its last slot, so a restart does not probe every account at once. Not the check
        // of a token a lost mint may have revoked: that one is due whatever the spread.
        let probe = probe.or_else(|| {
            let every = inputs.policy.validate_every?;
            token.as_ref()?;
            if memory.mint_unconfirmed.is_some() {
                return None;
            }
            let offset = inputs.policy.offset_within(every);
            let unknown_age = chrono::Duration::from_std(every).ok()?;
            let last_slot = next_grid_slot_after(now - unknown_age, every, offset);
            Some((last_slot, ProbeVerdict::Unknown))
        });
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
            job_still_running: false,
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

    /// The facts the timing decision sees now.
    pub fn facts(&self, now: DateTime<Utc>) -> Facts<'_> {
        Facts {
            now,
            calendar: &self.inputs.calendar,
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
                LoginSeen::Succeeded { .. } => return Step::Consume,
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
            Outcome::ProbeSkipped => {
                self.probed = true;
                let verdict = self.probe.map_or(ProbeVerdict::Unknown, |(_, v)| v);
                self.probe = Some((now, verdict));
            }
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
        if matches!(self.login, LoginSeen::Succeeded { .. }) {
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

    fn probed(&mut self, verdict: ProbeVerdict, now: DateTime<Utc>) {
        self.probed = true;
        let previous = self.probe;
        let verdict = match (verdict, previous) {
            (ProbeVerdict::Dead, Some((_, ProbeVerdict::Dead | ProbeVerdict::DeadUnconfirmed))) => {
                ProbeVerdict::Dead
            }
            (ProbeVerdict::Dead, _) => ProbeVerdict::DeadUnconfirmed,
            (verdict, _) => verdict,
        };
        self.probe = Some((now, verdict));
        if verdict == ProbeVerdict::Dead && !matches!(previous, Some((_, ProbeVerdict::Dead))) {
            self.notes.push(Note {
                warning: true,
                reason: "TokenRejected",
                message: "Dhan rejected the current token before its expiry; replacing it".into(),
            });
        }
        let Some(unconfirmed) = self.memory.mint_unconfirmed else {
            return;
        };
        // Dhan's mint limit runs from the lost mint too: it is remembered until then.
        if now >= after(unconfirmed, self.inputs.limits.min_mint_interval) {
            self.memory.mint_unconfirmed = None;
        }
        let due = after(unconfirmed, LATE_TOKEN_PROBE_DELAY);
        let late_check = now >= due
            && previous.is_none_or(|(at, v)| at < due || v == ProbeVerdict::DeadUnconfirmed);
        if !late_check
            || matches!(
                verdict,
                ProbeVerdict::Unknown | ProbeVerdict::DeadUnconfirmed
            )
        {
            return;
        }
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

    /// Whether the probe about to be made may give way to calls that obtain tokens: a regular
    /// probe may; the check of a token a lost mint may have revoked, or of one a probe found
    /// dead, may not.
    pub fn probe_may_wait(&self) -> bool {
        self.memory.mint_unconfirmed.is_none()
            && !matches!(self.probe, Some((_, ProbeVerdict::DeadUnconfirmed)))
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

    /// Whether Dhan rejected the current token, confirmed by a second probe.
    pub fn token_rejected(&self) -> bool {
        matches!(self.probe, Some((_, ProbeVerdict::Dead)))
    }

    /// Whether the account keeps its claim on the client ID after this round: while it has
    /// something another minter would destroy (docs/dhan-api.md §1) — a live token, written or
    /// not, a login under way, a mint whose answer was lost. An account Dhan refuses (a wrong
    /// PIN, say) gives the claim up, so naming a client ID is not enough to keep its owner out.
    /// A token keeps it until the clock-skew margin after its death by this clock: another
    /// install's clock may run that much ahead (seed 123: a claim released 3 s early).
    pub fn keeps_claim(&self, now: DateTime<Utc>) -> bool {
        let skew = chrono::Duration::from_std(crate::leader::SKEW_MARGIN).unwrap_or_default();
        self.token
            .as_ref()
            .is_some_and(|h| h.token.facts.is_live(now - skew))
            || self.memory.login.is_some()
            || self.job_to_create.is_some()
            || self.memory.mint_unconfirmed.is_some()
    }
}
