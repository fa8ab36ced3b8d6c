//! A refresh attempt: the methods tried in order, and what a failed attempt leaves behind.

use super::{LoginSeen, Note, Round};
use crate::decision::failure::{Handling, summarise};
use crate::decision::memory::{DayCount, LastFailure, Memory};
use crate::decision::{
    Failure, FailureKind, Method, MethodFailure, ProbeVerdict, RefreshReason, after, backoff_until,
};
use crate::dhan::ist::next_ist_midnight;
use chrono::{DateTime, Utc};

/// Dhan allows at most this many consents per client per day (docs/dhan-api.md §3).
pub const DAILY_CONSENT_LIMIT: u32 = 25;

/// A refresh attempt in progress: the methods left to try and the failures so far.
#[derive(Clone, Debug)]
pub(super) struct Attempt {
    pub(super) reason: RefreshReason,
    pub(super) request: Option<String>,
    pub(super) began: DateTime<Utc>,
    remaining: Vec<Method>,
    pub(super) failures: Vec<(Method, MethodFailure)>,
}

impl Round {
    pub(super) fn begin(&mut self, reason: RefreshReason, now: DateTime<Utc>) {
        self.attempted = true;
        self.attempt = Some(Attempt {
            reason,
            request: self.inputs.refresh_request.clone(),
            began: now,
            remaining: self.inputs.policy.methods.clone(),
            failures: vec![],
        });
    }

    /// The first remaining method that can be used; the ones that cannot are recorded.
    pub(super) fn next_method(&mut self, now: DateTime<Utc>) -> Option<Method> {
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

    pub(super) fn usable(&self, method: Method, now: DateTime<Utc>) -> Result<(), MethodFailure> {
        let not = |why: &str| Err(MethodFailure::NotApplicable(why.to_string()));
        match method {
            // RenewToken refuses APP and API-key tokens with HTTP 500 DH-905 and cannot revive
            // an expired one (§2): never send it such a token.
            Method::Renew if self.renewable(now).is_none() => {
                not("needs a live Dhan Web (SELF) token in accessToken")
            }
            Method::Renew => Ok(()),
            Method::Totp => {
                self.inputs.usable.totp.clone().or_else(|w| not(&w))?;
                self.within_cap(now)
            }
            Method::Browser => {
                self.inputs.usable.browser.clone().or_else(|w| not(&w))?;
                self.within_cap(now)?;
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

    /// The day's refused credential submissions for the client leave room for one more: a
    /// wrong PIN sent again and again gets a Dhan account locked (docs/dhan-api.md §3, §9).
    fn within_cap(&self, now: DateTime<Utc>) -> Result<(), MethodFailure> {
        let refused = self
            .inputs
            .refused_today
            .max(DayCount::today(self.memory.failed_logins.as_ref(), now));
        let max = self.inputs.limits.max_failed_logins;
        if refused < max {
            return Ok(());
        }
        Err(MethodFailure::Failed(Failure::new(
            FailureKind::LoginLockout,
            format!(
                "{refused} credential submissions for this client ID were refused today (IST), \
                 the most this operator sends in a day (--max-failed-logins {max}); stopped so \
                 that Dhan does not lock the account — check the PIN, TOTP key and mobile \
                 number in the credentials; the next attempt is 10 min past midnight IST"
            ),
        )))
    }

    pub(super) fn method_failed(&mut self, method: Method, failure: Failure, now: DateTime<Utc>) {
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
        // generate-consent only starts a login; consuming its tokenId mints.
        let could_mint =
            method != Method::Browser || matches!(self.login, LoginSeen::Succeeded { .. });
        if could_mint && failure.kind.may_have_reached_dhan() {
            // Dhan's 2-minute lock re-arms on each refused attempt (docs/dhan-api.md §9).
            self.memory.last_mint_attempt = Some(now);
        }
        if could_mint && failure.kind.outcome_unknown() {
            self.memory.mint_unconfirmed = Some(now);
        }
        let mut failure = failure;
        if method == Method::Totp && failure.kind.refuses_credentials() {
            // Dhan locks accounts after repeated wrong PINs, however they are sent (§3, §9).
            self.memory.failed_logins =
                Some(DayCount::increment(self.memory.failed_logins.as_ref(), now));
            failure = self.lockout(&failure, now).unwrap_or(failure);
        }
        if matches!(self.login, LoginSeen::Succeeded { .. }) {
            // The consume of a finished login failed: that login is over.
            let record = self.memory.login.clone().expect("a login was recorded");
            self.finish_login();
            let failures = vec![(method, MethodFailure::Failed(failure))];
            self.fail(failures, record.reason, record.refresh_request, now);
            return;
        }
        if let Some(attempt) = self.attempt.as_mut() {
            // An attempt stops at the first refused credential: the next method would type
            // the same PIN into Dhan again (docs/dhan-api.md §3).
            if failure.kind.refuses_credentials() {
                attempt.remaining.clear();
            }
            attempt
                .failures
                .push((method, MethodFailure::Failed(failure)));
        }
    }

    /// A failed attempt: what to remember, and the event.
    pub(super) fn fail(
        &mut self,
        failures: Vec<(Method, MethodFailure)>,
        reason: RefreshReason,
        request: Option<String>,
        now: DateTime<Utc>,
    ) {
        let folded = summarise(&failures);
        let handling = if first_totp_refusal(folded.kind, &failures, &self.memory) {
            // "Invalid TOTP" also answers a correct code used elsewhere in its step (§1), and
            // re-arms Dhan's 2-minute lock (§9): one retry, with a fresh code, after the lock.
            Handling::AfterMintInterval
        } else {
            folded.kind.handling()
        };
        let memory = &mut self.memory;
        let limits = &self.inputs.limits;
        memory.retry_not_before = match handling {
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
                Some(after(next_ist_midnight(now), limits.midnight_margin))
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
}

/// Whether the attempt failed because its mint got "Invalid TOTP", for the first time since
/// the last success (the memory keeps the last failure until then).
fn first_totp_refusal(
    folded: FailureKind,
    failures: &[(Method, MethodFailure)],
    memory: &Memory,
) -> bool {
    let totp = FailureKind::InvalidTotp;
    let minted = failures.iter().any(|(method, failure)| {
        *method == Method::Totp && matches!(failure, MethodFailure::Failed(f) if f.kind == totp)
    });
    let before = memory.last_failure.as_ref().map(|f| f.reason.as_str());
    folded == totp && minted && before != Some(totp.reason())
}
