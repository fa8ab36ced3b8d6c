//! The words of a notification. Built from the account's status only, which by design holds no
//! credential or token (docs/design.md, Security model): a message cannot leak what it never sees.

use super::health::Notice;
use crate::crd::DhanAccount;
use crate::decision::duration::format_duration;
use crate::decision::market::ist;
use chrono::{DateTime, Utc};
use kube::ResourceExt;
use serde_json::{Value, json};

/// Longest status text quoted in a message: chat apps cut or reject long ones.
const MAX_DETAIL: usize = 400;

fn ist_time(t: DateTime<Utc>) -> String {
    t.with_timezone(&ist())
        .format("%Y-%m-%d %H:%M IST")
        .to_string()
}

fn clipped(text: &str) -> String {
    match text.char_indices().nth(MAX_DETAIL) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

/// The person-readable text.
pub fn text(notice: Notice, account: &DhanAccount, now: DateTime<Utc>) -> String {
    let status = account.status.clone().unwrap_or_default();
    let who = format!(
        "{}/{} (client {})",
        account.namespace().unwrap_or_default(),
        account.name_any(),
        account.spec.client_id.trim()
    );
    let detail = status
        .last_failure_message
        .as_deref()
        .or(status.message.as_deref())
        .map(clipped)
        .unwrap_or_default();
    let validity = match status.expires_at {
        Some(t) if t > now => format!(
            "The current token stays valid until {} (in {}).",
            ist_time(t),
            // Whole minutes: seconds are noise on a phone.
            format_duration(std::time::Duration::from_secs(
                (t - now).num_minutes().max(0) as u64 * 60
            ))
        ),
        Some(t) => format!("The token expired at {}.", ist_time(t)),
        None => "There is no token.".to_string(),
    };
    match notice {
        Notice::RefreshFailed => format!(
            "⚠️ Dhan token refresh failed for {who}: {reason}: {detail}. {validity}{retry}",
            reason = status.last_failure_reason.as_deref().unwrap_or("Unknown"),
            retry = status
                .next_refresh_time
                .map(|t| format!(" Retrying at {}.", ist_time(t)))
                .unwrap_or_default()
        ),
        Notice::Failed => format!(
            "⛔ Dhan token for {who} cannot be refreshed until the DhanAccount or its credentials \
             change: {detail}. {validity}"
        ),
        Notice::Conflict => format!("⛔ {who} is not managed: {detail}"),
        Notice::ExpiringSoon => format!(
            "⏰ Dhan token for {who} expires within the hour and no refresh is planned before \
             it. {validity}"
        ),
        Notice::Recovered => format!(
            "✅ Dhan token for {who} is healthy again{method}. {validity}",
            method = status
                .method
                .as_deref()
                .map(|m| format!(" (method {m})"))
                .unwrap_or_default()
        ),
    }
}

/// The webhook body: `text` for Slack and most chat bridges, `content` for Discord, and the
/// facts for anything that parses it.
pub fn webhook_body(notice: Notice, account: &DhanAccount, text: &str) -> Value {
    let status = account.status.clone().unwrap_or_default();
    json!({
        "text": text,
        "content": text,
        "event": notice.as_str(),
        "namespace": account.namespace(),
        "account": account.name_any(),
        "clientId": account.spec.client_id.trim(),
        "phase": status.phase,
        "expiresAt": status.expires_at,
        "nextRefreshTime": status.next_refresh_time,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{DhanAccountSpec, DhanAccountStatus, Phase};

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn failing() -> DhanAccount {
        let mut account = DhanAccount::new(
            "alice",
            DhanAccountSpec {
                client_id: "1000000001".into(),
                ..Default::default()
            },
        );
        account.metadata.namespace = Some("trading".into());
        account.status = Some(DhanAccountStatus {
            phase: Some(Phase::Backoff),
            failed_attempts: Some(1),
            last_failure_reason: Some("DhanUnavailable".into()),
            last_failure_message: Some("Dhan answered HTTP 503".into()),
            expires_at: Some(utc("2026-11-24T02:30:00Z")),
            next_refresh_time: Some(utc("2026-11-23T02:31:00Z")),
            ..Default::default()
        });
        account
    }

    #[test]
    fn a_failure_names_the_account_the_reason_and_the_token_left() {
        let text = text(
            Notice::RefreshFailed,
            &failing(),
            utc("2026-11-23T02:30:00Z"),
        );
        assert_eq!(
            text,
            "⚠️ Dhan token refresh failed for trading/alice (client 1000000001): DhanUnavailable: \
             Dhan answered HTTP 503. The current token stays valid until 2026-11-24 08:00 IST \
             (in 24h). Retrying at 2026-11-23 08:01 IST."
        );
    }

    #[test]
    fn long_details_are_clipped() {
        let mut account = failing();
        account.status.as_mut().unwrap().last_failure_message = Some("x".repeat(5000));
        let text = text(Notice::Failed, &account, utc("2026-11-23T02:30:00Z"));
        assert!(text.len() < 1000, "{}", text.len());
        assert!(text.contains("x…"));
    }

    #[test]
    fn webhook_body_is_slack_and_discord_compatible() {
        let body = webhook_body(Notice::Recovered, &failing(), "hello");
        assert_eq!(body["text"], "hello");
        assert_eq!(body["content"], "hello");
        assert_eq!(body["event"], "Recovered");
        assert_eq!(body["account"], "alice");
    }
}
