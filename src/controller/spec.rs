//! The DhanAccount's spec, validated: every field the operator acts on, parsed once, or an
//! error naming the field. Kubernetes 1.20 cannot enforce most of this (no CEL), so this is
//! authoritative — and it runs before any call to Dhan, so a spec the output Secret could
//! not be written with never costs a mint (a new token kills the previous one).

use super::output::{
    ACCOUNT_LABEL, Keys, MANAGED_BY_LABEL, OPERATOR_ANNOTATION_PREFIX, OutputSpec,
};
use crate::crd::{DhanAccount, DhanAccountSpec, SecretKeys};
use crate::decision::duration::parse_duration;
use crate::decision::policy::{
    DEFAULT_RENEW_BEFORE, DEFAULT_SCHEDULE, DEFAULT_TIME_ZONE, DEFAULT_VALIDATE_EVERY,
};
use crate::decision::schedule::{Schedule, ScheduleError};
use crate::decision::{Method, Policy};
use kube::ResourceExt;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// A spec field the operator cannot use.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("spec.{field}: {problem}")]
pub struct SpecError {
    pub field: &'static str,
    pub problem: String,
}

fn invalid(field: &'static str, problem: impl Into<String>) -> SpecError {
    SpecError {
        field,
        problem: problem.into(),
    }
}

/// Everything the spec says, validated.
#[derive(Clone, Debug)]
pub struct Spec {
    pub policy: Policy,
    pub output: OutputSpec,
}

/// Validates the whole spec.
pub fn validate(account: &DhanAccount) -> Result<Spec, SpecError> {
    Ok(Spec {
        policy: Policy {
            stagger: stagger(account),
            ..policy(&account.spec)?
        },
        output: output(account)?,
    })
}

fn policy(spec: &DhanAccountSpec) -> Result<Policy, SpecError> {
    let client_id = spec.client_id.trim();
    if client_id.is_empty() || !client_id.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid(
            "clientId",
            "must be the numeric Dhan client ID, e.g. \"1000000001\"",
        ));
    }
    let methods = match &spec.methods {
        None => vec![Method::Renew, Method::Totp],
        Some(names) if names.is_empty() => {
            return Err(invalid("methods", "must name at least one method"));
        }
        Some(names) => {
            let mut methods = Vec::with_capacity(names.len());
            for name in names {
                let method = Method::parse(name).ok_or_else(|| {
                    invalid(
                        "methods",
                        format!("unknown method {name:?} (use renew, totp or browser)"),
                    )
                })?;
                if !methods.contains(&method) {
                    methods.push(method);
                }
            }
            methods
        }
    };
    let refresh = spec.refresh.clone().unwrap_or_default();
    let time_zone = refresh.time_zone.as_deref().unwrap_or(DEFAULT_TIME_ZONE);
    let expression = refresh.schedule.as_deref().unwrap_or(DEFAULT_SCHEDULE);
    let schedule = Schedule::parse(expression, time_zone)
        .map_err(|e| match e {
            ScheduleError::TimeZone(m) => invalid("refresh.timeZone", m),
            ScheduleError::Expression(m) => invalid("refresh.schedule", m),
        })?
        .with_trading_days_only(refresh.trading_days_only.unwrap_or(false));
    let renew_before = match refresh.renew_before.as_deref() {
        None => DEFAULT_RENEW_BEFORE,
        Some(text) => {
            let d = parse_duration(text).map_err(|e| invalid("refresh.renewBefore", e))?;
            if d.is_zero() || d >= Duration::from_secs(12 * 3600) {
                return Err(invalid(
                    "refresh.renewBefore",
                    format!("{text:?} must be more than 0 and less than 12h"),
                ));
            }
            d
        }
    };
    let validate_every = match refresh.validate_every.as_deref() {
        None => Some(DEFAULT_VALIDATE_EVERY),
        Some(text) => {
            let d = parse_duration(text).map_err(|e| invalid("refresh.validateEvery", e))?;
            if d.is_zero() {
                None
            } else if d < Duration::from_secs(60) {
                return Err(invalid(
                    "refresh.validateEvery",
                    format!("{text:?} is too frequent: use at least 1m, or 0 to disable"),
                ));
            } else {
                Some(d)
            }
        }
    };
    Ok(Policy {
        client_id: client_id.to_string(),
        methods,
        schedule,
        renew_before,
        validate_every,
        suspend: spec.suspend.unwrap_or(false),
        stagger: 0,
    })
}

/// Where the account's probes and scheduled refreshes fall within their spread: a hash of its
/// namespace and name, the same in every process and after a re-create.
fn stagger(account: &DhanAccount) -> u32 {
    use sha2::{Digest, Sha256};
    let key = format!(
        "{}/{}",
        account.namespace().unwrap_or_default(),
        account.name_any()
    );
    let digest = Sha256::digest(key.as_bytes());
    u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]])
}

/// The name of `account`'s output Secret: `spec.secretName`, else `<name>-token`.
pub fn output_secret_name(account: &DhanAccount) -> String {
    account
        .spec
        .secret_name
        .clone()
        .unwrap_or_else(|| format!("{}-token", account.name_any()))
}

/// The output Secret as the spec describes it, checked against what the API server accepts,
/// so that a new token is never minted into a Secret that cannot be written.
fn output(account: &DhanAccount) -> Result<OutputSpec, SpecError> {
    let spec = &account.spec;
    let name = output_secret_name(account);
    if let Err(problem) = dns_subdomain(&name) {
        let field = if spec.secret_name.is_some() {
            "secretName"
        } else {
            "secretName (default <name>-token)"
        };
        return Err(invalid(field, format!("{name:?} {problem}")));
    }
    let template = spec.secret_template.clone().unwrap_or_default();
    let keys = keys(template.keys.unwrap_or_default())?;
    let labels = template.labels.unwrap_or_default();
    let annotations = template.annotations.unwrap_or_default();
    metadata(&labels, &annotations)?;
    let delete_with_account = match spec.deletion_policy.as_deref() {
        None | Some("Retain") => false,
        Some("Delete") => true,
        Some(other) => {
            return Err(invalid(
                "deletionPolicy",
                format!("{other:?} must be Retain or Delete"),
            ));
        }
    };
    Ok(OutputSpec {
        name,
        keys,
        labels,
        annotations,
        delete_with_account,
    })
}

/// The output Secret's key names: valid, and one per value.
fn keys(custom: SecretKeys) -> Result<Keys, SpecError> {
    let keys = Keys {
        token: custom
            .access_token
            .unwrap_or_else(|| super::output::DEFAULT_TOKEN_KEY.into()),
        client_id: custom
            .client_id
            .unwrap_or_else(|| super::output::DEFAULT_CLIENT_ID_KEY.into()),
        expires_at: custom
            .expires_at
            .unwrap_or_else(|| super::output::DEFAULT_EXPIRES_AT_KEY.into()),
    };
    let fields = [
        ("secretTemplate.keys.accessToken", &keys.token),
        ("secretTemplate.keys.clientId", &keys.client_id),
        ("secretTemplate.keys.expiresAt", &keys.expires_at),
    ];
    let mut seen = BTreeMap::new();
    for (field, key) in fields {
        secret_key(key).map_err(|p| invalid(field, format!("{key:?} {p}")))?;
        if let Some(other) = seen.insert(key.as_str(), field) {
            return Err(invalid(
                field,
                format!("{key:?} is also spec.{other}: each value needs its own key"),
            ));
        }
    }
    Ok(keys)
}

/// The template's labels and annotations: what the API server accepts, none of the operator's.
fn metadata(
    labels: &BTreeMap<String, String>,
    annotations: &BTreeMap<String, String>,
) -> Result<(), SpecError> {
    for (key, value) in labels {
        qualified_name(key)
            .map_err(|p| invalid("secretTemplate.labels", format!("key {key:?} {p}")))?;
        label_value(value)
            .map_err(|p| invalid("secretTemplate.labels", format!("{key:?}: {value:?} {p}")))?;
        if key == ACCOUNT_LABEL || key == MANAGED_BY_LABEL {
            return Err(invalid(
                "secretTemplate.labels",
                format!("{key:?} is set by the operator"),
            ));
        }
    }
    let mut size = 0;
    for (key, value) in annotations {
        qualified_name(key)
            .map_err(|p| invalid("secretTemplate.annotations", format!("key {key:?} {p}")))?;
        if key.starts_with(OPERATOR_ANNOTATION_PREFIX) {
            return Err(invalid(
                "secretTemplate.annotations",
                format!("{key:?}: the {OPERATOR_ANNOTATION_PREFIX} prefix is the operator's"),
            ));
        }
        size += key.len() + value.len();
    }
    if size > 256 * 1024 - 4096 {
        return Err(invalid(
            "secretTemplate.annotations",
            "total size exceeds what the API server accepts (256 KiB, less the operator's)",
        ));
    }
    Ok(())
}

fn alnum(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

/// An RFC 1123 subdomain, as Secret names must be.
fn dns_subdomain(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 253 {
        return Err("must be 1 to 253 characters".into());
    }
    let labels_ok = name.split('.').all(|label| {
        !label.is_empty()
            && label.starts_with(alnum)
            && label.ends_with(alnum)
            && label.chars().all(|c| alnum(c) || c == '-')
    });
    if labels_ok {
        Ok(())
    } else {
        Err(
            "is not a valid Secret name (lower-case letters, digits, '-' and '.', starting and \
             ending with a letter or digit)"
                .into(),
        )
    }
}

/// A key of a Secret's data.
fn secret_key(key: &str) -> Result<(), String> {
    let ok = !key.is_empty()
        && key.len() <= 253
        && key != "."
        && key != ".."
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._".contains(c));
    if ok {
        Ok(())
    } else {
        Err("is not a valid Secret key (letters, digits, '-', '_' and '.')".into())
    }
}

/// The name part of a label or annotation key, or a label value (empty allowed for values).
fn name_part(text: &str, max: usize) -> bool {
    let edge = |c: char| c.is_ascii_alphanumeric();
    text.len() <= max
        && text.starts_with(edge)
        && text.ends_with(edge)
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

/// A label or annotation key: `[prefix/]name`.
fn qualified_name(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if prefix.is_some_and(|p| dns_subdomain(p).is_err()) {
        return Err("has an invalid prefix (a DNS subdomain before '/')".into());
    }
    if !name_part(name, 63) {
        return Err(
            "is not a valid key (up to 63 letters, digits, '-', '_' and '.', \
                    starting and ending with a letter or digit)"
                .into(),
        );
    }
    Ok(())
}

fn label_value(value: &str) -> Result<(), String> {
    if value.is_empty() || name_part(value, 63) {
        Ok(())
    } else {
        Err("is not a valid label value (up to 63 letters, digits, '-', '_' and '.')".into())
    }
}

/// The credential Secrets the spec names (for the watch that wakes accounts).
pub fn credential_secret_names(spec: &DhanAccountSpec) -> BTreeSet<String> {
    super::credentials::CredentialKey::ALL
        .iter()
        .filter_map(|k| super::credentials::source_of(spec, *k))
        .map(|s| s.secret_name)
        .collect()
}

#[cfg(test)]
mod tests;
