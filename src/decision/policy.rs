//! The spec, validated: every field the operator acts on, parsed once, or an error naming the
//! field. Kubernetes 1.20 cannot enforce most of this (no CEL), so this is authoritative.

use super::duration::parse_duration;
use super::schedule::Schedule;
use crate::crd::DhanAccountSpec;
use std::time::Duration;

pub const DEFAULT_SCHEDULE: &str = "0 8 * * *";
pub const DEFAULT_TIME_ZONE: &str = "Asia/Kolkata";
pub const DEFAULT_RENEW_BEFORE: Duration = Duration::from_secs(10 * 60);
pub const DEFAULT_VALIDATE_EVERY: Duration = Duration::from_secs(15 * 60);

/// A way to obtain a token.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Method {
    /// RenewToken on a live Dhan Web (`SELF`) token (docs/dhan-api.md §2).
    Renew,
    /// generateAccessToken with PIN + TOTP (docs/dhan-api.md §1).
    Totp,
    /// API-key consent with a browser login (docs/dhan-api.md §3).
    Browser,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Renew => "renew",
            Method::Totp => "totp",
            Method::Browser => "browser",
        }
    }

    fn parse(name: &str) -> Option<Method> {
        match name {
            "renew" => Some(Method::Renew),
            "totp" => Some(Method::Totp),
            "browser" => Some(Method::Browser),
            _ => None,
        }
    }
}

/// What the operator does for one account.
#[derive(Clone, Debug)]
pub struct Policy {
    pub client_id: String,
    pub methods: Vec<Method>,
    pub schedule: Schedule,
    pub renew_before: Duration,
    /// `None` when probing is disabled (`validateEvery: 0`).
    pub validate_every: Option<Duration>,
    pub suspend: bool,
}

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

impl Policy {
    pub fn from_spec(spec: &DhanAccountSpec) -> Result<Policy, SpecError> {
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
                super::schedule::ScheduleError::TimeZone(m) => invalid("refresh.timeZone", m),
                super::schedule::ScheduleError::Expression(m) => invalid("refresh.schedule", m),
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
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::RefreshSpec;

    fn spec() -> DhanAccountSpec {
        DhanAccountSpec {
            client_id: "1000000001".into(),
            credentials_secret: Some("alice-dhan".into()),
            ..Default::default()
        }
    }

    fn with_refresh(refresh: RefreshSpec) -> DhanAccountSpec {
        DhanAccountSpec {
            refresh: Some(refresh),
            ..spec()
        }
    }

    #[test]
    fn defaults_are_renew_then_totp_daily_at_0800_ist() {
        let policy = Policy::from_spec(&spec()).unwrap();
        assert_eq!(policy.methods, [Method::Renew, Method::Totp]);
        assert_eq!(policy.renew_before, DEFAULT_RENEW_BEFORE);
        assert_eq!(policy.validate_every, Some(DEFAULT_VALIDATE_EVERY));
        assert!(!policy.suspend);
    }

    #[test]
    fn every_bad_value_names_its_field() {
        let cases: Vec<(DhanAccountSpec, &str)> = vec![
            (
                DhanAccountSpec {
                    client_id: "alice".into(),
                    ..spec()
                },
                "clientId",
            ),
            (
                DhanAccountSpec {
                    methods: Some(vec!["totp".into(), "sms".into()]),
                    ..spec()
                },
                "methods",
            ),
            (
                DhanAccountSpec {
                    methods: Some(vec![]),
                    ..spec()
                },
                "methods",
            ),
            (
                with_refresh(RefreshSpec {
                    schedule: Some("at eight".into()),
                    ..Default::default()
                }),
                "refresh.schedule",
            ),
            (
                with_refresh(RefreshSpec {
                    time_zone: Some("India/Mumbai".into()),
                    ..Default::default()
                }),
                "refresh.timeZone",
            ),
            (
                with_refresh(RefreshSpec {
                    renew_before: Some("-10m".into()),
                    ..Default::default()
                }),
                "refresh.renewBefore",
            ),
            (
                with_refresh(RefreshSpec {
                    renew_before: Some("0".into()),
                    ..Default::default()
                }),
                "refresh.renewBefore",
            ),
            (
                with_refresh(RefreshSpec {
                    validate_every: Some("5".into()),
                    ..Default::default()
                }),
                "refresh.validateEvery",
            ),
            (
                with_refresh(RefreshSpec {
                    validate_every: Some("10s".into()),
                    ..Default::default()
                }),
                "refresh.validateEvery",
            ),
        ];
        for (spec, field) in cases {
            let error = Policy::from_spec(&spec).expect_err(field);
            assert_eq!(error.field, field);
            assert!(error.to_string().starts_with(&format!("spec.{field}: ")));
        }
    }

    #[test]
    fn validate_every_zero_disables_probes() {
        let policy = Policy::from_spec(&with_refresh(RefreshSpec {
            validate_every: Some("0".into()),
            ..Default::default()
        }))
        .unwrap();
        assert_eq!(policy.validate_every, None);
    }

    #[test]
    fn duplicate_methods_are_tried_once() {
        let policy = Policy::from_spec(&DhanAccountSpec {
            methods: Some(vec!["totp".into(), "renew".into(), "totp".into()]),
            ..spec()
        })
        .unwrap();
        assert_eq!(policy.methods, [Method::Totp, Method::Renew]);
    }
}
