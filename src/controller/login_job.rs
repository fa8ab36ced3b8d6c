//! The Job that performs a browser login for the `browser` method (docs/design.md "Browser logins in
//! Jobs"); `login.rs` creates it and reads its result.
//!
//! The Job gets the mobile, PIN and TOTP key through `secretKeyRef`s (never as literal values,
//! never the app secret), needs no Kubernetes API access, and hands the `tokenId` back through
//! its termination message.

use super::credentials::{CredentialKey, source_of};
use super::output::{MANAGED_BY, MANAGED_BY_LABEL, account_label};
use crate::crd::DhanAccount;
use crate::decision::RefreshReason;
use k8s_openapi::api::batch::v1::Job;
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};
use std::time::Duration;

/// Settings of login Jobs (operator flags).
#[derive(Clone, Debug)]
pub struct LoginJobSettings {
    /// The operator image; its `browser-login` subcommand is the `login` container.
    pub operator_image: String,
    /// A headless Chromium exposing CDP on port 9222.
    pub chromium_image: String,
    /// How long `browser-login` may take.
    pub login_timeout: Duration,
}

/// Label on login Jobs naming their account (the owner reference, not the label, says whose
/// Job it is).
pub const LOGIN_FOR_LABEL: &str = "dhan-operator.dev/login-for";

/// Why the login was started (a `RefreshReason`), so a login found unrecorded after a crash
/// keeps its reason.
pub const LOGIN_REASON_ANNOTATION: &str = "dhan-operator.dev/login-reason";

/// The login Job for `account`, for the consent login page at `login_url`. `totp_after_step` is
/// the last TOTP step that may have been used for this client: the login waits for a later one.
pub fn login_job(
    account: &DhanAccount,
    name: &str,
    login_url: &str,
    totp_after_step: Option<u64>,
    reason: RefreshReason,
    settings: &LoginJobSettings,
) -> Job {
    let env_from_secret = |name: &str, key: CredentialKey| -> Option<Value> {
        let source = source_of(&account.spec, key)?;
        Some(json!({ "name": name, "valueFrom": { "secretKeyRef": {
            "name": source.secret_name, "key": source.key } } }))
    };
    let mut env: Vec<Value> = [
        env_from_secret("DHAN_MOBILE", CredentialKey::Mobile),
        env_from_secret("DHAN_PIN", CredentialKey::Pin),
        env_from_secret("DHAN_TOTP_SECRET", CredentialKey::TotpSecret),
    ]
    .into_iter()
    .flatten()
    .collect();
    env.push(json!({ "name": "DHAN_LOGIN_URL", "value": login_url }));
    if let Some(step) = totp_after_step {
        env.push(json!({ "name": "DHAN_TOTP_AFTER_STEP", "value": step.to_string() }));
    }
    env.push(json!({ "name": "CDP_URL", "value": "http://127.0.0.1:9222" }));
    env.push(json!({ "name": "LOGIN_TIMEOUT",
        "value": format!("{}s", settings.login_timeout.as_secs()) }));

    let hardened = json!({
        "readOnlyRootFilesystem": true,
        "allowPrivilegeEscalation": false,
        "capabilities": { "drop": ["ALL"] },
    });
    let resources = json!({
        "requests": { "cpu": "100m", "memory": "128Mi" },
        "limits": { "cpu": "1", "memory": "768Mi" },
    });
    // Room for the login itself plus Chromium's start and the final Browser.close.
    let deadline = settings.login_timeout.as_secs() + 60;
    let owner = account.controller_owner_ref(&());
    let job = json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": account.namespace(),
            "labels": {
                MANAGED_BY_LABEL: MANAGED_BY,
                LOGIN_FOR_LABEL: account_label(account),
            },
            "annotations": { LOGIN_REASON_ANNOTATION: reason.as_str() },
            "ownerReferences": owner.map(|o| vec![o]),
        },
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": deadline,
            "ttlSecondsAfterFinished": 600,
            "template": {
                "metadata": { "labels": { LOGIN_FOR_LABEL: account_label(account) } },
                "spec": {
                    "restartPolicy": "Never",
                    "automountServiceAccountToken": false,
                    "enableServiceLinks": false,
                    "securityContext": {
                        "runAsNonRoot": true,
                        "runAsUser": 65532,
                        "runAsGroup": 65532,
                        "seccompProfile": { "type": "RuntimeDefault" },
                    },
                    "containers": [
                        {
                            "name": "login",
                            "image": settings.operator_image,
                            "args": ["browser-login"],
                            "env": env,
                            "terminationMessagePolicy": "File",
                            "securityContext": hardened,
                            "resources": {
                                "requests": { "cpu": "10m", "memory": "32Mi" },
                                "limits": { "cpu": "200m", "memory": "128Mi" },
                            },
                        },
                        {
                            "name": "chromium",
                            "image": settings.chromium_image,
                            // No --remote-debugging-port/-address: port 9222 is the image's
                            // contract. chromedp/headless-shell's entrypoint forwards 9222 to
                            // Chromium on 9223 with socat and appends these args; a port flag
                            // here makes Chromium race socat for 9222 and lose, and the login
                            // then hangs until activeDeadlineSeconds.
                            "args": [
                                "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                                "--no-first-run", "--disable-background-networking",
                                "--disable-component-update", "--disable-sync",
                                "--user-data-dir=/tmp/profile",
                            ],
                            "securityContext": hardened,
                            "resources": resources,
                            "volumeMounts": [
                                { "name": "shm", "mountPath": "/dev/shm" },
                                { "name": "tmp", "mountPath": "/tmp" },
                            ],
                        },
                    ],
                    "volumes": [
                        { "name": "shm", "emptyDir": { "medium": "Memory", "sizeLimit": "256Mi" } },
                        { "name": "tmp", "emptyDir": { "sizeLimit": "256Mi" } },
                    ],
                },
            },
        },
    });
    serde_json::from_value(job).expect("the login Job is well-formed")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{CredentialSources, DhanAccountSpec, SecretKeyRef};
    use kube::api::ObjectMeta;

    fn account() -> DhanAccount {
        DhanAccount {
            metadata: ObjectMeta {
                name: Some("alice".into()),
                namespace: Some("trading".into()),
                uid: Some("uid-1".into()),
                ..Default::default()
            },
            spec: DhanAccountSpec {
                client_id: "1000000001".into(),
                credentials_secret: Some("alice-dhan".into()),
                credentials: Some(CredentialSources {
                    api_secret: Some(SecretKeyRef {
                        secret_name: "team-app".into(),
                        key: "secret".into(),
                    }),
                    ..Default::default()
                }),
                methods: Some(vec!["browser".into()]),
                ..Default::default()
            },
            status: None,
        }
    }

    fn job_json() -> Value {
        let settings = LoginJobSettings {
            operator_image: "op:1".into(),
            chromium_image: "chromium:1".into(),
            login_timeout: Duration::from_secs(120),
        };
        serde_json::to_value(login_job(
            &account(),
            "alice-login-0123456789",
            "https://auth/login?consentAppId=c1",
            Some(59_000_000),
            RefreshReason::Scheduled,
            &settings,
        ))
        .unwrap()
    }

    #[test]
    fn long_account_names_still_give_valid_labels() {
        let mut account = account();
        account.metadata.name = Some(format!("{}.x-{}", "a".repeat(39), "b".repeat(80)));
        let settings = LoginJobSettings {
            operator_image: "op:1".into(),
            chromium_image: "chromium:1".into(),
            login_timeout: Duration::from_secs(120),
        };
        let job = login_job(
            &account,
            "a-login-1",
            "https://auth/login",
            None,
            RefreshReason::NoToken,
            &settings,
        );
        let label = &job.metadata.labels.unwrap()[LOGIN_FOR_LABEL];
        assert!(label.len() <= 63 && label.ends_with('b'), "{label}");
        assert_eq!(
            job.metadata.annotations.unwrap()[LOGIN_REASON_ANNOTATION],
            "NoToken"
        );
    }

    #[test]
    fn job_is_hardened_and_single_shot() {
        let job = job_json();
        let spec = &job["spec"];
        assert_eq!(spec["backoffLimit"], 0);
        assert_eq!(spec["activeDeadlineSeconds"], 180);
        assert_eq!(spec["ttlSecondsAfterFinished"], 600);
        let pod = &spec["template"]["spec"];
        assert_eq!(pod["automountServiceAccountToken"], false);
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
        assert_eq!(pod["volumes"][0]["emptyDir"]["medium"], "Memory");
        for container in pod["containers"].as_array().unwrap() {
            let sc = &container["securityContext"];
            assert_eq!(sc["readOnlyRootFilesystem"], true, "{}", container["name"]);
            assert_eq!(sc["allowPrivilegeEscalation"], false);
            assert_eq!(sc["capabilities"]["drop"][0], "ALL");
            assert!(container["resources"]["limits"]["memory"].is_string());
        }
        assert_eq!(job["metadata"]["ownerReferences"][0]["kind"], "DhanAccount");
    }

    #[test]
    fn credentials_come_from_secret_refs_and_the_app_secret_never_reaches_the_job() {
        let job = job_json();
        let text = job.to_string();
        assert!(
            !text.contains("team-app"),
            "the app secret's Secret is not referenced"
        );
        assert!(!text.contains("apiSecret") && !text.contains("apiKey"));
        let env = job["spec"]["template"]["spec"]["containers"][0]["env"]
            .as_array()
            .unwrap();
        for name in ["DHAN_MOBILE", "DHAN_PIN", "DHAN_TOTP_SECRET"] {
            let var = env.iter().find(|e| e["name"] == name).expect(name);
            assert!(var.get("value").is_none(), "{name} is never a literal");
            assert_eq!(var["valueFrom"]["secretKeyRef"]["name"], "alice-dhan");
        }
        let url = env.iter().find(|e| e["name"] == "DHAN_LOGIN_URL").unwrap();
        assert_eq!(url["value"], "https://auth/login?consentAppId=c1");
        let step = env
            .iter()
            .find(|e| e["name"] == "DHAN_TOTP_AFTER_STEP")
            .unwrap();
        assert_eq!(step["value"], "59000000");
    }
}
