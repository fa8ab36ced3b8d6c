use super::*;
use crate::crd::{RefreshSpec, SecretKeys, SecretTemplate};
use kube::api::ObjectMeta;

fn spec() -> DhanAccountSpec {
    DhanAccountSpec {
        client_id: "1000000001".into(),
        credentials_secret: Some("alice-dhan".into()),
        ..Default::default()
    }
}

fn account(spec: DhanAccountSpec) -> DhanAccount {
    DhanAccount {
        metadata: ObjectMeta {
            name: Some("alice".into()),
            namespace: Some("trading".into()),
            ..Default::default()
        },
        spec,
        status: None,
    }
}

fn with_refresh(refresh: RefreshSpec) -> DhanAccountSpec {
    DhanAccountSpec {
        refresh: Some(Box::new(refresh)),
        ..spec()
    }
}

fn with_template(template: SecretTemplate) -> DhanAccountSpec {
    DhanAccountSpec {
        secret_template: Some(Box::new(template)),
        ..spec()
    }
}

fn keys(token: &str, client: &str, expires: &str) -> SecretTemplate {
    SecretTemplate {
        keys: Some(SecretKeys {
            access_token: Some(token.into()),
            client_id: Some(client.into()),
            expires_at: Some(expires.into()),
        }),
        ..Default::default()
    }
}

fn labels(pairs: &[(&str, &str)]) -> SecretTemplate {
    SecretTemplate {
        labels: Some(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ),
        ..Default::default()
    }
}

#[test]
fn defaults_are_renew_then_totp_daily_at_0800_ist_into_name_token() {
    let spec = validate(&account(spec())).unwrap();
    assert_eq!(spec.policy.methods, [Method::Renew, Method::Totp]);
    assert_eq!(spec.policy.renew_before, DEFAULT_RENEW_BEFORE);
    assert_eq!(spec.policy.validate_every, Some(DEFAULT_VALIDATE_EVERY));
    assert!(!spec.policy.suspend);
    assert_eq!(spec.output.name, "alice-token");
    assert_eq!(spec.output.keys.token, "DHAN_ACCESS_TOKEN");
    assert!(!spec.output.delete_with_account, "Retain is the default");
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
                schedule: Some("0 0 30 2 *".into()),
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
        (
            DhanAccountSpec {
                secret_name: Some("Alice_Token".into()),
                ..spec()
            },
            "secretName",
        ),
        (
            DhanAccountSpec {
                secret_name: Some("a".repeat(254)),
                ..spec()
            },
            "secretName",
        ),
        (
            with_template(keys("TOKEN", "TOKEN", "EXPIRES")),
            "secretTemplate.keys.clientId",
        ),
        (
            with_template(keys("TOKEN", "CLIENT", "TOKEN")),
            "secretTemplate.keys.expiresAt",
        ),
        (
            with_template(keys("my token", "CLIENT", "EXPIRES")),
            "secretTemplate.keys.accessToken",
        ),
        (
            with_template(keys("..", "CLIENT", "EXPIRES")),
            "secretTemplate.keys.accessToken",
        ),
        (
            with_template(labels(&[("team", "algo desk")])),
            "secretTemplate.labels",
        ),
        (
            with_template(labels(&[("-team", "a")])),
            "secretTemplate.labels",
        ),
        (
            with_template(labels(&[("team", &"x".repeat(64))])),
            "secretTemplate.labels",
        ),
        (
            with_template(labels(&[("dhan-operator.dev/account", "bob")])),
            "secretTemplate.labels",
        ),
        (
            with_template(SecretTemplate {
                annotations: Some([("dhan-operator.dev/token-hash".into(), "x".into())].into()),
                ..Default::default()
            }),
            "secretTemplate.annotations",
        ),
        (
            with_template(SecretTemplate {
                annotations: Some([("Bad Key".into(), "x".into())].into()),
                ..Default::default()
            }),
            "secretTemplate.annotations",
        ),
        (
            DhanAccountSpec {
                deletion_policy: Some("Orphan".into()),
                ..spec()
            },
            "deletionPolicy",
        ),
    ];
    for (spec, field) in cases {
        let error = validate(&account(spec.clone())).expect_err(field);
        assert_eq!(error.field, field, "{spec:?}");
        assert!(error.to_string().starts_with(&format!("spec.{field}: ")));
    }
}

#[test]
fn valid_templates_pass() {
    let templated = with_template(SecretTemplate {
        labels: Some(
            [
                ("app.kubernetes.io/part-of".to_string(), "algo".to_string()),
                ("empty".into(), "".into()),
            ]
            .into(),
        ),
        annotations: Some([("reloader.stakater.com/match".into(), "true".into())].into()),
        keys: keys("token.jwt", "client_id", "EXPIRES-AT").keys,
    });
    let output = validate(&account(templated)).unwrap().output;
    assert_eq!(output.keys.token, "token.jwt");
    let delete = validate(&account(DhanAccountSpec {
        deletion_policy: Some("Delete".into()),
        secret_name: Some("alice.token".into()),
        ..spec()
    }))
    .unwrap()
    .output;
    assert!(delete.delete_with_account);
    assert_eq!(delete.name, "alice.token");
}

#[test]
fn validate_every_zero_disables_probes() {
    let spec = with_refresh(RefreshSpec {
        validate_every: Some("0".into()),
        ..Default::default()
    });
    assert_eq!(
        validate(&account(spec)).unwrap().policy.validate_every,
        None
    );
}

#[test]
fn duplicate_methods_are_tried_once() {
    let spec = DhanAccountSpec {
        methods: Some(vec!["totp".into(), "renew".into(), "totp".into()]),
        ..spec()
    };
    let policy = validate(&account(spec)).unwrap().policy;
    assert_eq!(policy.methods, [Method::Totp, Method::Renew]);
}

#[test]
fn a_shape_change_is_seen_and_equal_shapes_hash_equal() {
    let a = validate(&account(spec())).unwrap().output;
    let b = validate(&account(spec())).unwrap().output;
    assert_eq!(a.shape("1"), b.shape("1"));
    let relabelled = validate(&account(with_template(labels(&[("team", "a")]))))
        .unwrap()
        .output;
    assert_ne!(a.shape("1"), relabelled.shape("1"));
    assert_ne!(a.shape("1"), a.shape("2"));
}
