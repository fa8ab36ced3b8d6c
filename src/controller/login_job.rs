//! The Job that performs a browser login for the `browser` method (docs/design.md "Browser logins in
//! Jobs"); `login.rs` creates it and reads its result.
//!
//! The Job gets the mobile, PIN and TOTP key through `secretKeyRef`s (never as literal values,
//! never the app secret), needs no Kubernetes API access, and hands the `tokenId` back through
//! its termination message.

use super::credentials::{CredentialKey, source_of};
use super::login_pod::LoginPodOptions;
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
    /// The Chromium binary in that image, run directly (the image's own entrypoint may add flags
    /// of its own, such as a second DevTools port); empty: the image's entrypoint.
    pub chromium_command: String,
    /// A `Localhost` seccomp profile (path under the kubelet's seccomp root) that allows the
    /// user namespaces Chromium's sandbox needs; with it Chromium keeps its sandbox. Without it
    /// the sidecar runs under `RuntimeDefault`, which refuses them, so `--no-sandbox` is needed.
    pub chromium_seccomp_profile: Option<String>,
    /// How long `browser-login` may take.
    pub login_timeout: Duration,
    /// Hosts besides the login URL's own where credentials may be typed (`*.dhan.co`).
    pub allowed_hosts: String,
    /// Address ranges login Pods may not reach even on port 443 (metadata, link-local, the
    /// cluster's pod and service ranges).
    pub egress_blocked_cidrs: Vec<String>,
    /// What the platform team sets on every login Pod (`--login-pod-options`).
    pub pod: LoginPodOptions,
}

impl LoginJobSettings {
    /// The defaults of the operator's flags, with these images.
    pub fn new(operator_image: &str, chromium_image: &str, login_timeout: Duration) -> Self {
        LoginJobSettings {
            operator_image: operator_image.to_owned(),
            chromium_image: chromium_image.to_owned(),
            chromium_command: DEFAULT_CHROMIUM_COMMAND.to_owned(),
            chromium_seccomp_profile: None,
            login_timeout,
            allowed_hosts: DEFAULT_ALLOWED_HOSTS.to_owned(),
            egress_blocked_cidrs: DEFAULT_EGRESS_BLOCKED_CIDRS
                .iter()
                .map(|c| c.to_string())
                .collect(),
            pod: LoginPodOptions::default(),
        }
    }
}

/// The Chromium binary of `chromedp/headless-shell` images.
pub const DEFAULT_CHROMIUM_COMMAND: &str = "/headless-shell/headless-shell";
/// Dhan's own hosts: the consent page may hand over to another of them (docs/dhan-api.md §3).
pub const DEFAULT_ALLOWED_HOSTS: &str = "*.dhan.co";
/// Link-local (cloud metadata at 169.254.169.254), private and shared ranges where pod and
/// service networks live, and their IPv6 counterparts. Dhan is on the public internet.
pub const DEFAULT_EGRESS_BLOCKED_CIDRS: &[&str] = &[
    "169.254.0.0/16",
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",
    "fe80::/10",
    "fc00::/7",
];

pub use super::output::{COMPONENT, COMPONENT_LABEL, LOGIN_FOR_LABEL, LOGIN_REASON_ANNOTATION};

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
    // Some login pages ask for a password (docs/dhan-api.md §3): the `password` key of the
    // credentials Secret, when there is one; a page asking without it fails without typing.
    if let Some(secret) = &account.spec.credentials_secret {
        env.push(
            json!({ "name": "DHAN_PASSWORD", "valueFrom": { "secretKeyRef": {
            "name": secret, "key": "password", "optional": true } } }),
        );
    }
    env.push(json!({ "name": "DHAN_LOGIN_URL", "value": login_url }));
    env.push(json!({ "name": "DHAN_LOGIN_ALLOWED_HOSTS", "value": settings.allowed_hosts }));
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
    let chromium = chromium_container(settings, &hardened, &resources);
    let mut job = json!({
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
                "metadata": { "labels": {
                    LOGIN_FOR_LABEL: account_label(account),
                    COMPONENT_LABEL: COMPONENT,
                } },
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
                        chromium,
                    ],
                    "volumes": [
                        { "name": "shm", "emptyDir": { "medium": "Memory", "sizeLimit": "256Mi" } },
                        { "name": "tmp", "emptyDir": { "sizeLimit": "256Mi" } },
                    ],
                },
            },
        },
    });
    settings.pod.apply(&mut job);
    serde_json::from_value(job).expect("the login Job is well-formed")
}

/// The Chromium sidecar. Its DevTools port listens on the Pod's loopback only, where the `login`
/// container reaches it; nothing outside the Pod can drive the browser.
fn chromium_container(settings: &LoginJobSettings, hardened: &Value, resources: &Value) -> Value {
    let mut args: Vec<&str> = vec![
        "--headless",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--user-data-dir=/tmp/profile",
        "--remote-debugging-address=127.0.0.1",
        "--remote-debugging-port=9222",
    ];
    let mut security = hardened.clone();
    match &settings.chromium_seccomp_profile {
        // A profile that allows user namespaces lets Chromium build its own sandbox even as
        // UID 65532 with no capabilities (the tests run it so).
        Some(profile) => {
            security["seccompProfile"] =
                json!({ "type": "Localhost", "localhostProfile": profile });
        }
        // RuntimeDefault refuses the user namespaces Chromium's sandbox is made of, and the
        // setuid helper is ruled out by allowPrivilegeEscalation: false. The Pod (non-root, no
        // capabilities, read-only root, seccomp, egress limited by NetworkPolicy) is the boundary.
        None => args.insert(0, "--no-sandbox"),
    }
    let mut container = json!({
        "name": "chromium",
        "image": settings.chromium_image,
        "args": args,
        "env": [{ "name": "HOME", "value": "/tmp" }],
        "securityContext": security,
        "resources": resources,
        "volumeMounts": [
            { "name": "shm", "mountPath": "/dev/shm" },
            { "name": "tmp", "mountPath": "/tmp" },
        ],
    });
    if !settings.chromium_command.is_empty() {
        container["command"] = json!([settings.chromium_command]);
    }
    container
}

#[cfg(test)]
#[path = "login_job_tests.rs"]
mod tests;
