//! `kubectl dhan status`: who expires when, in one line per account.

use crate::table::render;
use crate::when::{ago, relative};
use chrono::{DateTime, Utc};
use dhan_operator::crd::DhanAccount;
use dhan_operator::decision::DayCount;
use kube::ResourceExt;

/// Dhan's daily consent limit per client (docs/dhan-api.md §3).
const CONSENTS_PER_DAY: u32 = 25;

fn or_dash(value: Option<String>) -> String {
    value
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "-".into())
}

fn row(account: &DhanAccount, now: DateTime<Utc>, all_namespaces: bool) -> Vec<String> {
    let status = account.status.clone().unwrap_or_default();
    let when = |t: Option<DateTime<Utc>>| or_dash(t.map(|t| relative(t, now)));
    let since = |t: Option<DateTime<Utc>>| or_dash(t.map(|t| ago(t, now)));
    let consents = Some(consents_today(&status, now))
        .filter(|n| *n > 0)
        .map(|n| format!("{n}/{CONSENTS_PER_DAY}"));
    let failure = status
        .last_failure_reason
        .clone()
        .map(|reason| match status.last_failure_time {
            Some(t) => format!("{reason} ({})", ago(t, now)),
            None => reason,
        });
    // The current token's delivery to running Pods (--sync-pods): how many were told, how soon
    // after the mint.
    let synced = status
        .pod_sync
        .as_ref()
        .filter(|p| status.token_hash.as_deref() == Some(p.token_hash.as_str()))
        .map(|p| {
            let told = format!("{} in {:.1}s", p.pods, p.millis_after_mint as f64 / 1000.0);
            match p.problems {
                0 => told,
                n => format!("{told}, {n} not"),
            }
        });
    let mut row = Vec::new();
    if all_namespaces {
        row.push(account.namespace().unwrap_or_default());
    }
    row.extend([
        account.name_any(),
        account.spec.client_id.trim().to_string(),
        or_dash(status.phase.map(|p| p.to_string())),
        or_dash(status.method.clone()),
        when(status.expires_at),
        since(status.last_refresh_time),
        when(status.next_refresh_time),
        or_dash(synced),
        or_dash(consents),
        or_dash(failure),
    ]);
    row
}

/// One account as `-o json|yaml` prints it: the table's facts, times in RFC 3339.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    namespace: String,
    name: String,
    client_id: String,
    phase: Option<String>,
    method: Option<String>,
    expires_at: Option<DateTime<Utc>>,
    last_refresh_time: Option<DateTime<Utc>>,
    next_refresh_time: Option<DateTime<Utc>>,
    /// Running Pods told of the current token (`--sync-pods`), and how long after its mint.
    pods_synced: Option<u32>,
    pods_synced_millis_after_mint: Option<u64>,
    consents_today: u32,
    last_failure_reason: Option<String>,
    last_failure_time: Option<DateTime<Utc>>,
    message: Option<String>,
    /// The static IPs Dhan has on record (orders from any other IP are refused), as last read.
    static_ips: Option<Vec<String>>,
    /// When the API key of the browser method stops working (`spec.apiKeyExpires`).
    api_key_expires_at: Option<DateTime<Utc>>,
}

/// The summaries of `accounts`, sorted by namespace and name.
pub fn summaries(accounts: &[DhanAccount], now: DateTime<Utc>) -> Vec<Summary> {
    let mut accounts: Vec<&DhanAccount> = accounts.iter().collect();
    accounts.sort_by_key(|a| (a.namespace(), a.name_any()));
    accounts
        .into_iter()
        .map(|account| {
            let status = account.status.clone().unwrap_or_default();
            let sync = status
                .pod_sync
                .as_ref()
                .filter(|p| status.token_hash.as_deref() == Some(p.token_hash.as_str()));
            Summary {
                namespace: account.namespace().unwrap_or_default(),
                name: account.name_any(),
                client_id: account.spec.client_id.trim().to_string(),
                phase: status.phase.map(|p| p.to_string()),
                method: status.method.clone(),
                expires_at: status.expires_at,
                last_refresh_time: status.last_refresh_time,
                next_refresh_time: status.next_refresh_time,
                pods_synced: sync.map(|p| p.pods),
                pods_synced_millis_after_mint: sync.map(|p| p.millis_after_mint),
                consents_today: consents_today(&status, now),
                last_failure_reason: status.last_failure_reason.clone(),
                last_failure_time: status.last_failure_time,
                message: status.message.clone(),
                static_ips: status.static_ip.as_deref().map(|ip| {
                    [&ip.primary_ip, &ip.secondary_ip]
                        .into_iter()
                        .flatten()
                        .cloned()
                        .collect()
                }),
                api_key_expires_at: account
                    .spec
                    .api_key_expires
                    .map(dhan_operator::controller::status::api_key_end),
            }
        })
        .collect()
}

fn consents_today(status: &dhan_operator::crd::DhanAccountStatus, now: DateTime<Utc>) -> u32 {
    status.consents.as_ref().map_or(0, |c| {
        let count = DayCount {
            day: c.day.clone(),
            count: c.count,
        };
        DayCount::today(Some(&count), now)
    })
}

/// The status table of `accounts`, sorted by namespace and name.
pub fn table(accounts: &[DhanAccount], now: DateTime<Utc>, all_namespaces: bool) -> String {
    let mut accounts: Vec<&DhanAccount> = accounts.iter().collect();
    accounts.sort_by_key(|a| (a.namespace(), a.name_any()));
    let rows: Vec<Vec<String>> = accounts
        .iter()
        .map(|a| row(a, now, all_namespaces))
        .collect();
    let mut headers = vec![];
    if all_namespaces {
        headers.push("NAMESPACE");
    }
    headers.extend([
        "NAME",
        "CLIENT",
        "PHASE",
        "METHOD",
        "EXPIRES",
        "LAST REFRESH",
        "NEXT REFRESH",
        "PODS SYNCED",
        "CONSENTS",
        "LAST FAILURE",
    ]);
    render(&headers, &rows)
}

/// One event line of the detail view.
pub struct EventLine {
    pub at: Option<DateTime<Utc>>,
    pub type_: String,
    pub reason: String,
    pub message: String,
}

/// `kubectl dhan status NAME`: the account's line, then what explains it — the operator's
/// message, the conditions, the static IPs Dhan has on record (orders from any other IP are
/// refused), a login Job under way, and the last events.
pub fn details(account: &DhanAccount, events: &[EventLine], now: DateTime<Utc>) -> String {
    let status = account.status.clone().unwrap_or_default();
    let mut out = table(std::slice::from_ref(account), now, false);
    out.push('\n');
    let field = |out: &mut String, name: &str, value: String| {
        out.push_str(&format!("{:<12}{value}\n", format!("{name}:")));
    };
    field(&mut out, "Message", or_dash(status.message.clone()));
    if status.conditions.is_empty() {
        field(&mut out, "Conditions", "-".into());
    }
    for (i, c) in status.conditions.iter().enumerate() {
        let line = format!(
            "{}={} ({}, {}): {}",
            c.type_,
            c.status,
            c.reason,
            ago(c.last_transition_time, now),
            c.message
        );
        field(&mut out, if i == 0 { "Conditions" } else { "" }, line);
    }
    let ip = match status.static_ip.as_deref() {
        None => "- (not read yet: read after each new token)".to_string(),
        Some(ip) if ip.primary_ip.is_none() && ip.secondary_ip.is_none() => {
            "none registered on Dhan: orders are refused from every IP until one is set on Dhan Web"
                .into()
        }
        Some(ip) => {
            let mut text = format!(
                "primary {}, secondary {}",
                or_dash(ip.primary_ip.clone()),
                or_dash(ip.secondary_ip.clone())
            );
            if let Some(allowed) = ip.orders_allowed {
                text.push_str(if allowed {
                    "; orders allowed"
                } else {
                    "; orders NOT allowed"
                });
            }
            if let Some(matched) = &ip.ip_match_status {
                text.push_str(&format!("; match: {matched}"));
            }
            text.push_str(" (orders from any other IP are refused)");
            text
        }
    };
    field(&mut out, "Static IP", ip);
    if let Some(date) = account.spec.api_key_expires {
        let end = dhan_operator::controller::status::api_key_end(date);
        let left = if end > now {
            format!("expires {date} ({})", relative(end, now))
        } else {
            format!("EXPIRED on {date}: browser logins fail until a new key is set")
        };
        field(&mut out, "API key", left);
    }
    if let Some(login) = &status.login {
        field(
            &mut out,
            "Login",
            format!(
                "job/{} ({}), started {}",
                login.job_name,
                login.reason,
                ago(login.started_at, now)
            ),
        );
    }
    if events.is_empty() {
        field(&mut out, "Events", "-".into());
    }
    for (i, e) in events.iter().enumerate() {
        let when = e.at.map(|t| ago(t, now)).unwrap_or_else(|| "-".into());
        field(
            &mut out,
            if i == 0 { "Events" } else { "" },
            format!("{when:<10} {:<8} {:<18} {}", e.type_, e.reason, e.message),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use dhan_operator::crd::{
        DailyCount, DhanAccountSpec, DhanAccountStatus, Phase, PodSyncStatus,
    };

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn account(name: &str, status: DhanAccountStatus) -> DhanAccount {
        let mut account = DhanAccount::new(
            name,
            DhanAccountSpec {
                client_id: "1000000001".into(),
                ..Default::default()
            },
        );
        account.metadata.namespace = Some("trading".into());
        account.status = Some(status);
        account
    }

    #[test]
    fn shows_expiry_refreshes_consents_and_the_last_failure() {
        let now = utc("2026-11-23T10:00:00Z");
        let ready = account(
            "alice",
            DhanAccountStatus {
                phase: Some(Phase::Ready),
                method: Some("browser".into()),
                expires_at: Some(utc("2026-11-24T03:00:00Z")),
                last_refresh_time: Some(utc("2026-11-23T03:00:00Z")),
                next_refresh_time: Some(utc("2026-11-24T02:30:00Z")),
                consents: Some(DailyCount {
                    day: "2026-11-23".into(),
                    count: 2,
                }),
                token_hash: Some("0123abcd".into()),
                pod_sync: Some(PodSyncStatus {
                    token_hash: "0123abcd".into(),
                    pods: 12,
                    problems: 1,
                    synced_at: utc("2026-11-23T03:00:01Z"),
                    millis_after_mint: 870,
                }),
                ..Default::default()
            },
        );
        let failed = account(
            "carol",
            DhanAccountStatus {
                phase: Some(Phase::Failed),
                last_failure_reason: Some("InvalidPin".into()),
                last_failure_time: Some(utc("2026-11-23T09:57:00Z")),
                ..Default::default()
            },
        );
        let text = table(&[failed, ready], now, false);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "NAME   CLIENT      PHASE   METHOD   EXPIRES  LAST REFRESH  NEXT REFRESH  PODS SYNCED        CONSENTS  LAST FAILURE"
        );
        assert_eq!(
            lines[1],
            "alice  1000000001  Ready   browser  in 17h   7h ago        in 16h        12 in 0.9s, 1 not  2/25      -"
        );
        assert_eq!(
            lines[2],
            "carol  1000000001  Failed  -        -        -             -             -                  -         InvalidPin (3m ago)"
        );
    }

    #[test]
    fn details_explain_the_line_with_conditions_static_ip_login_and_events() {
        use dhan_operator::crd::{Condition, LoginStatus, StaticIpStatus};
        let now = utc("2026-11-23T10:00:00Z");
        let status = DhanAccountStatus {
            phase: Some(Phase::WaitingForLogin),
            message: Some("a browser login is running".into()),
            conditions: vec![Condition {
                type_: "Ready".into(),
                status: "False".into(),
                reason: "LoginRunning".into(),
                message: "a browser login is running".into(),
                last_transition_time: utc("2026-11-23T09:58:00Z"),
                observed_generation: None,
            }],
            static_ip: Some(Box::new(StaticIpStatus {
                primary_ip: Some("203.0.113.7".into()),
                orders_allowed: Some(false),
                ..Default::default()
            })),
            login: Some(Box::new(LoginStatus {
                job_name: "alice-login-x7k2p".into(),
                started_at: utc("2026-11-23T09:59:00Z"),
                reason: "Scheduled".into(),
                refresh_request: None,
            })),
            ..Default::default()
        };
        let events = [EventLine {
            at: Some(utc("2026-11-23T09:59:00Z")),
            type_: "Normal".into(),
            reason: "LoginStarted".into(),
            message: "login Job created".into(),
        }];
        let text = details(&account("alice", status), &events, now);
        for expected in [
            "Message:    a browser login is running",
            "Conditions: Ready=False (LoginRunning, 2m ago)",
            "Static IP:  primary 203.0.113.7, secondary -; orders NOT allowed",
            "Login:      job/alice-login-x7k2p (Scheduled), started 60s ago",
            "Events:     60s ago    Normal   LoginStarted       login Job created",
        ] {
            assert!(text.contains(expected), "{expected:?} in\n{text}");
        }
        let none = DhanAccountStatus {
            static_ip: Some(Box::default()),
            ..Default::default()
        };
        let text = details(&account("bob", none), &[], now);
        assert!(text.contains("none registered on Dhan"), "{text}");
        assert!(text.contains("Events:     -"), "{text}");
    }
}
