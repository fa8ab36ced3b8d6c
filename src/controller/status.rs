//! The status is the operator's memory of an account: read into a [`Memory`] before deciding,
//! written back with the [`Assessment`] after. A status equal to the current one is not
//! written: steady state issues no PATCH.

use crate::crd::{Condition, DailyCount, DhanAccountStatus, LoginStatus, StaticIpStatus};
use crate::decision::{Assessment, DayCount, LastFailure, LoginRecord, Memory, RefreshReason};
use crate::decision::{Round, TokenFacts};
use crate::dhan::{IpInfo, TOKEN_LIFETIME, totp};
use chrono::{DateTime, SubsecRound, Utc};

/// The longest any wait the status can ask for may be: the next IST midnight (Dhan's consent
/// day) is the furthest.
pub const MAX_STATUS_WAIT: chrono::Duration = chrono::Duration::hours(25);

/// What the status remembers, with the output Secret's record of when its token was obtained.
/// Every value is clamped to what is possible at `now`: the status can be written by anyone
/// with rights on the status subresource, and the clock can jump back; a time in the future
/// (or a TOTP step not yet reached) would otherwise stop the account, or make a reconcile wait
/// without end.
pub fn memory_from(
    status: &DhanAccountStatus,
    token: Option<&TokenFacts>,
    now: DateTime<Utc>,
) -> Memory {
    let past = |t: Option<DateTime<Utc>>| t.map(|t| t.min(now));
    let day = |c: &Option<DailyCount>| {
        c.as_ref().map(|c| DayCount {
            day: c.day.clone(),
            count: c.count.min(MAX_DAILY_COUNT),
        })
    };
    Memory {
        last_mint: past(status.last_refresh_time.max(token.map(|t| t.obtained_at))),
        failed_attempts: status.failed_attempts.unwrap_or(0).min(MAX_FAILED_ATTEMPTS),
        last_failure: status.last_failure_time.map(|at| LastFailure {
            at: at.min(now),
            reason: status.last_failure_reason.clone().unwrap_or_default(),
            message: status.last_failure_message.clone().unwrap_or_default(),
        }),
        // Set with a failure only, and never further than the next IST day from it.
        retry_not_before: status
            .retry_not_before
            .zip(status.last_failure_time)
            .map(|(t, failed)| t.min(failed.min(now) + MAX_STATUS_WAIT)),
        held_inputs: status.failed_inputs.clone(),
        refresh_request_handled: status.refresh_request_handled.clone(),
        // A code is only ever sent for the step it is in.
        last_totp_step: status.last_totp_step.map(|s| s.min(totp::step_at(now))),
        consents: day(&status.consents),
        failed_logins: day(&status.failed_logins),
        login: status.login.as_ref().map(|l| LoginRecord {
            job_name: l.job_name.clone(),
            started_at: l.started_at.min(now),
            // Written by this operator from the same enum; an unknown value can only come from
            // a hand edit, and "no token" is the neutral description.
            reason: RefreshReason::parse(&l.reason).unwrap_or(RefreshReason::NoToken),
            refresh_request: l.refresh_request.clone(),
        }),
        // A lost mint made a token that lives a day at most: past that, there is nothing left
        // to check or to keep the client ID for (a suspended account never probes it; the
        // simulation, seed 1181).
        mint_unconfirmed: past(status.mint_unconfirmed_at)
            .filter(|at| now < *at + TOKEN_LIFETIME + skew_margin()),
        last_mint_attempt: past(status.last_mint_attempt_time),
    }
}

fn skew_margin() -> chrono::Duration {
    chrono::Duration::from_std(crate::leader::SKEW_MARGIN).unwrap_or_default()
}

/// The most `status.failedAttempts` means (the backoff stops growing long before).
pub const MAX_FAILED_ATTEMPTS: u32 = 1000;
/// The most a daily count means (Dhan allows 25 consents a day).
pub const MAX_DAILY_COUNT: u32 = 1000;

/// The status after a reconcile.
pub struct Report<'a> {
    pub memory: &'a Memory,
    pub token: Option<&'a TokenFacts>,
    /// The client ID the round minted or kept the token for.
    pub client_id: &'a str,
    /// How the token was obtained.
    pub method: Option<&'a str>,
    /// The Secret holding the token.
    pub secret_name: Option<&'a str>,
    pub static_ip: Option<&'a IpInfo>,
    pub assessment: &'a Assessment,
    pub generation: Option<i64>,
    pub now: DateTime<Utc>,
}

impl Report<'_> {
    /// The report of a finished round.
    pub fn of<'a>(
        round: &'a Round,
        assessment: &'a Assessment,
        secret_name: Option<&'a str>,
        generation: Option<i64>,
        now: DateTime<Utc>,
    ) -> Report<'a> {
        Report {
            memory: &round.memory,
            token: round.token_facts(),
            client_id: &round.inputs.policy.client_id,
            method: round.token.as_ref().and_then(|h| h.method.as_deref()),
            secret_name,
            static_ip: round.static_ip.as_ref(),
            assessment,
            generation,
            now,
        }
    }

    /// The status to write, keeping what this report does not know (the static IPs read at
    /// an earlier refresh) and condition transition times that did not change.
    pub fn compose(&self, old: &DhanAccountStatus) -> DhanAccountStatus {
        let memory = self.memory;
        let a = self.assessment;
        let day = |c: &Option<DayCount>| {
            c.as_ref().map(|c| DailyCount {
                day: c.day.clone(),
                count: c.count,
            })
        };
        let second = |t: Option<DateTime<Utc>>| t.map(|t| t.trunc_subsecs(0));
        // The static IPs read in this reconcile, once for the field and its condition.
        let read_ip = self.static_ip.map(static_ip);
        DhanAccountStatus {
            phase: Some(a.phase),
            method: self.token.and(self.method.map(str::to_string)),
            token_type: self.token.and_then(|t| t.consumer_type.clone()),
            issued_at: self.token.map(|t| t.issued_at),
            expires_at: self.token.map(|t| t.expires_at),
            next_refresh_time: second(a.next_refresh),
            last_refresh_time: second(memory.last_mint),
            failed_attempts: (memory.failed_attempts > 0)
                .then_some(memory.failed_attempts.min(MAX_FAILED_ATTEMPTS)),
            last_failure_time: second(memory.last_failure.as_ref().map(|f| f.at)),
            last_failure_reason: memory.last_failure.as_ref().map(|f| f.reason.clone()),
            last_failure_message: memory.last_failure.as_ref().map(|f| f.message.clone()),
            failed_inputs: memory.held_inputs.clone(),
            last_totp_step: memory.last_totp_step,
            refresh_request_handled: memory.refresh_request_handled.clone(),
            message: Some(a.message.clone()),
            token_hash: self.token.map(|t| t.hash.clone()),
            token_client_id: self.token.map(|_| self.client_id.to_string()),
            observed_generation: self.generation,
            static_ip: read_ip.clone().map(Box::new).or(old.static_ip.clone()),
            login: memory.login.as_ref().map(login_status).map(Box::new),
            consents: day(&memory.consents),
            failed_logins: day(&memory.failed_logins),
            secret_name: self.token.and(self.secret_name.map(str::to_string)),
            // Exact, not to the second: they bound when the next mint may happen.
            retry_not_before: memory.retry_not_before,
            mint_unconfirmed_at: memory.mint_unconfirmed,
            last_mint_attempt_time: memory.last_mint_attempt,
            // Set by apply when a new token was delivered; the last delivery until then.
            pod_sync: old.pod_sync.clone(),
            conditions: [
                Some(ready_condition(
                    old,
                    a.ready,
                    &a.reason,
                    &a.message,
                    self.generation,
                    self.now,
                )),
                static_ip_condition(old, read_ip.as_ref(), self.generation, self.now),
            ]
            .into_iter()
            .flatten()
            .collect(),
        }
    }
}

/// The status of an account that needs no Dhan call (invalid spec, conflict, foreign Secret):
/// the previous status with the new phase, message and Ready condition.
pub fn blocked(
    old: &DhanAccountStatus,
    memory: &Memory,
    assessment: &Assessment,
    generation: Option<i64>,
    now: DateTime<Utc>,
) -> DhanAccountStatus {
    let mut status = old.clone();
    status.phase = Some(assessment.phase);
    status.message = Some(assessment.message.clone());
    status.next_refresh_time = None;
    status.observed_generation = generation;
    status.login = memory.login.as_ref().map(login_status).map(Box::new);
    status.conditions = [
        Some(ready_condition(
            old,
            assessment.ready,
            &assessment.reason,
            &assessment.message,
            generation,
            now,
        )),
        static_ip_condition(old, None, generation, now),
    ]
    .into_iter()
    .flatten()
    .collect();
    status
}

fn login_status(login: &LoginRecord) -> LoginStatus {
    LoginStatus {
        job_name: login.job_name.clone(),
        started_at: login.started_at,
        reason: login.reason.as_str().into(),
        refresh_request: login.refresh_request.clone(),
    }
}

fn static_ip(info: &IpInfo) -> StaticIpStatus {
    StaticIpStatus {
        primary_ip: info.primary_ip.clone().filter(|ip| !ip.is_empty()),
        secondary_ip: info.secondary_ip.clone().filter(|ip| !ip.is_empty()),
        orders_allowed: info.orders_allowed,
        ip_match_status: info.ip_match_status.clone(),
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

/// The condition type that says how long the browser method's API key has (`spec.apiKeyExpires`).
pub const API_KEY_CONDITION: &str = "APIKeyValid";
/// How long before its end an API key is reported as expiring.
pub const API_KEY_WARNING: chrono::Duration = chrono::Duration::days(30);

/// The moment an API key that expires on `date` stops working: the end of that IST day.
pub fn api_key_end(date: chrono::NaiveDate) -> DateTime<Utc> {
    let midnight = date
        .succ_opt()
        .unwrap_or(date)
        .and_time(chrono::NaiveTime::MIN);
    // IST is UTC+05:30 all year.
    midnight.and_utc() - chrono::Duration::minutes(330)
}

/// `APIKeyValid` for an API key that expires on `expires` (none when the spec names no date):
/// `True` with `Valid`, or `ExpiresSoon` within [`API_KEY_WARNING`]; `False` with `Expired`
/// after its last day.
pub fn api_key_condition(
    old: &DhanAccountStatus,
    expires: Option<chrono::NaiveDate>,
    generation: Option<i64>,
    now: DateTime<Utc>,
) -> Option<Condition> {
    let date = expires?;
    let end = api_key_end(date);
    let (status, reason, message) = if end <= now {
        (
            "False",
            "Expired",
            format!(
                "The API key expired on {date}: browser logins fail until a new key from Dhan Web \
                 is in the Secret and spec.apiKeyExpires is moved"
            ),
        )
    } else if end - now <= API_KEY_WARNING {
        (
            "True",
            "ExpiresSoon",
            format!(
                "The API key expires on {date}, within {} days: create a new one on Dhan Web, put \
                 it and its secret in the Secret, and move spec.apiKeyExpires",
                API_KEY_WARNING.num_days()
            ),
        )
    } else {
        (
            "True",
            "Valid",
            // No countdown: the message, and so the status, stays the same from day to day.
            format!("The API key expires on {date}"),
        )
    };
    let last_transition_time = match old.conditions.iter().find(|c| c.type_ == API_KEY_CONDITION) {
        Some(previous) if previous.status == status => previous.last_transition_time,
        _ => now.trunc_subsecs(0),
    };
    Some(Condition {
        type_: API_KEY_CONDITION.into(),
        status: status.into(),
        reason: reason.into(),
        message,
        last_transition_time,
        observed_generation: generation,
    })
}

/// The condition type that says whether Dhan will take this account's orders from a known IP.
pub const STATIC_IP_CONDITION: &str = "StaticIPRegistered";

/// `StaticIPRegistered`, from the static IPs just read (`read`), else as last read: since April
/// 2026 Dhan refuses orders from any IP it does not have on record (docs/dhan-api.md §7), so an
/// account with a token but no IP cannot trade. None until the IPs were first read.
pub fn static_ip_condition(
    old: &DhanAccountStatus,
    read: Option<&StaticIpStatus>,
    generation: Option<i64>,
    now: DateTime<Utc>,
) -> Option<Condition> {
    let ip = read.or(old.static_ip.as_deref())?;
    let registered: Vec<String> = [(&ip.primary_ip, "primary"), (&ip.secondary_ip, "secondary")]
        .into_iter()
        .filter_map(|(ip, which)| ip.as_ref().map(|ip| format!("{ip} ({which})")))
        .collect();
    let (status, reason, message) = if registered.is_empty() {
        (
            "False",
            "NoneRegistered",
            "No static IP is registered on Dhan: it refuses orders from every IP until one is set \
             on Dhan Web (the operator never changes it)"
                .to_string(),
        )
    } else if ip.orders_allowed == Some(false) {
        (
            "False",
            "OrdersNotAllowed",
            format!(
                "Dhan has {} on record but says orders are not allowed",
                registered.join(" and ")
            ),
        )
    } else {
        (
            "True",
            "Registered",
            format!("Dhan accepts orders only from {}", registered.join(" and ")),
        )
    };
    let last_transition_time = match old
        .conditions
        .iter()
        .find(|c| c.type_ == STATIC_IP_CONDITION)
    {
        Some(previous) if previous.status == status => previous.last_transition_time,
        _ => now.trunc_subsecs(0),
    };
    Some(Condition {
        type_: STATIC_IP_CONDITION.into(),
        status: status.into(),
        reason: reason.into(),
        message,
        last_transition_time,
        observed_generation: generation,
    })
}

#[cfg(test)]
mod tests;
