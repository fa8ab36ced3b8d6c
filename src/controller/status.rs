//! Composing the status from what the reconcile found. A status equal to the current one is
//! not written: steady state issues no PATCH.

use crate::crd::{Condition, ConsentCount, DhanAccountStatus, LoginStatus, Phase, StaticIpStatus};
use crate::decision::{FailureClass, Memory, TokenFacts};
use chrono::{DateTime, SubsecRound, Utc};

/// What the status should say.
pub struct Report<'a> {
    pub phase: Phase,
    pub message: String,
    /// Reason of the Ready condition.
    pub reason: &'a str,
    pub token: Option<&'a TokenFacts>,
    pub token_dead: bool,
    pub method: Option<String>,
    pub memory: &'a Memory,
    pub last_failure_reason: Option<String>,
    pub last_failure_message: Option<String>,
    pub last_totp_step: Option<u64>,
    pub next_refresh: Option<DateTime<Utc>>,
    pub static_ip: Option<StaticIpStatus>,
    pub login: Option<LoginStatus>,
    pub consents: Option<ConsentCount>,
    pub generation: Option<i64>,
    pub now: DateTime<Utc>,
}

impl Report<'_> {
    /// The status to write, keeping condition transition times that did not change.
    pub fn compose(&self, old: &DhanAccountStatus) -> DhanAccountStatus {
        let live = self
            .token
            .is_some_and(|t| t.is_live(self.now) && !self.token_dead);
        let ready = ready_condition(
            old,
            live,
            self.reason,
            &self.message,
            self.generation,
            self.now,
        );
        let memory = self.memory;
        DhanAccountStatus {
            phase: Some(self.phase),
            method: self.method.clone(),
            token_type: self.token.and_then(|t| t.consumer_type.clone()),
            issued_at: self.token.map(|t| t.issued_at),
            expires_at: self.token.map(|t| t.expires_at),
            next_refresh_time: self.next_refresh.map(|t| t.trunc_subsecs(0)),
            last_refresh_time: memory.last_mint.map(|t| t.trunc_subsecs(0)),
            failed_attempts: (memory.failed_attempts > 0).then_some(memory.failed_attempts),
            last_failure_time: memory.last_failure.map(|(t, _)| t.trunc_subsecs(0)),
            last_failure_reason: self.last_failure_reason.clone(),
            last_failure_message: self.last_failure_message.clone(),
            failed_inputs: memory.permanent_failure_inputs.clone(),
            last_totp_step: self.last_totp_step,
            refresh_request_handled: memory.refresh_request_handled.clone(),
            message: Some(self.message.clone()),
            token_hash: self.token.map(|t| t.hash.clone()),
            observed_generation: self.generation,
            static_ip: self.static_ip.clone(),
            login: self.login.clone(),
            consents: self.consents.clone(),
            conditions: vec![ready],
        }
    }
}

/// The `Ready` condition, keeping the previous transition time while its status is unchanged.
pub fn ready_condition(
    old: &DhanAccountStatus,
    ready: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: DateTime<Utc>,
) -> Condition {
    let status = if ready { "True" } else { "False" };
    let last_transition_time = match old.conditions.iter().find(|c| c.type_ == "Ready") {
        Some(previous) if previous.status == status => previous.last_transition_time,
        _ => now.trunc_subsecs(0),
    };
    Condition {
        type_: "Ready".into(),
        status: status.into(),
        reason: reason.into(),
        message: message.into(),
        last_transition_time,
        observed_generation: generation,
    }
}

/// The operator's memory of past attempts, as persisted in status (and the output Secret's
/// record of when its token was obtained).
pub fn memory_from(status: &DhanAccountStatus, token: Option<&TokenFacts>) -> Memory {
    let failed_attempts = status.failed_attempts.unwrap_or(0);
    let class = match status.last_failure_reason.as_deref() {
        Some("MintThrottled") => FailureClass::Throttled,
        Some("ConsentLimitExceeded") => FailureClass::ConsentLimit,
        _ => FailureClass::Transient,
    };
    Memory {
        last_mint: status.last_refresh_time.max(token.map(|t| t.obtained_at)),
        failed_attempts,
        last_failure: status
            .last_failure_time
            .filter(|_| failed_attempts > 0)
            .map(|t| (t, class)),
        permanent_failure_inputs: status.failed_inputs.clone(),
        refresh_request_handled: status.refresh_request_handled.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        "2026-11-23T02:30:00Z".parse().unwrap()
    }

    fn token() -> TokenFacts {
        TokenFacts {
            expires_at: now() + chrono::Duration::hours(24),
            issued_at: now(),
            obtained_at: now(),
            consumer_type: Some("APP".into()),
            hash: "0123456789abcdef".into(),
        }
    }

    fn report<'a>(
        token: Option<&'a TokenFacts>,
        memory: &'a Memory,
        at: DateTime<Utc>,
    ) -> Report<'a> {
        Report {
            phase: Phase::Ready,
            message: "ok".into(),
            reason: "TokenValid",
            token,
            token_dead: false,
            method: Some("totp".into()),
            memory,
            last_failure_reason: None,
            last_failure_message: None,
            last_totp_step: Some(5),
            next_refresh: Some(now() + chrono::Duration::hours(24)),
            static_ip: None,
            login: None,
            consents: None,
            generation: Some(1),
            now: at,
        }
    }

    #[test]
    fn recomposing_an_unchanged_status_gives_an_equal_status() {
        let token = token();
        let memory = Memory::default();
        let first = report(Some(&token), &memory, now()).compose(&DhanAccountStatus::default());
        let later =
            report(Some(&token), &memory, now() + chrono::Duration::minutes(15)).compose(&first);
        assert_eq!(first, later, "no write on a reconcile that changed nothing");
        assert_eq!(first.conditions[0].status, "True");
        assert_eq!(first.token_hash.as_deref(), Some("0123456789abcdef"));
    }

    #[test]
    fn ready_is_false_for_a_dead_or_missing_token() {
        let token = token();
        let memory = Memory::default();
        let mut dead = report(Some(&token), &memory, now());
        dead.token_dead = true;
        assert_eq!(
            dead.compose(&DhanAccountStatus::default()).conditions[0].status,
            "False"
        );
        let none = report(None, &memory, now()).compose(&DhanAccountStatus::default());
        assert_eq!(none.conditions[0].status, "False");
        assert_eq!(none.token_hash, None);
    }

    #[test]
    fn memory_survives_a_round_trip_through_status() {
        let token = token();
        let memory = Memory {
            last_mint: Some(now()),
            failed_attempts: 2,
            last_failure: Some((now(), FailureClass::Throttled)),
            permanent_failure_inputs: Some("fp".into()),
            refresh_request_handled: Some("r1".into()),
        };
        let mut r = report(Some(&token), &memory, now());
        r.last_failure_reason = Some("MintThrottled".into());
        let status = r.compose(&DhanAccountStatus::default());
        assert_eq!(memory_from(&status, Some(&token)), memory);
    }
}
