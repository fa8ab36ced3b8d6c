//! The `browser` method's Kubernetes side (docs/dhan-api.md §3, docs/design.md "Browser logins
//! in Jobs"): the login Job's progress and result, its creation and deletion, and the cap on
//! concurrent logins.
//!
//! A login takes minutes, longer than a reconcile should, so it spans reconciles: starting it
//! records `status.login`; later reconciles (woken by the Job's changes) look at the Job until
//! it has finished. The app secret stays in the operator: the Job gets the mobile, PIN and
//! TOTP key through `secretKeyRef`s and hands back only the single-use `tokenId`.

use super::Context;
use super::credentials::Credentials;
use super::login_job::{LOGIN_FOR_LABEL, LOGIN_REASON_ANNOTATION, LoginJobSettings, login_job};
use super::output::{account_label, short};
use crate::crd::DhanAccount;
use crate::decision::round::LoginJob;
use crate::decision::{Failure, FailureKind, LoginRecord, LoginSeen, RefreshReason};
use chrono::DateTime;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, ListParams, PostParams, PropagationPolicy};
use kube::runtime::reflector::Store;
use kube::{Api, ResourceExt};
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

/// How long past the Job's own deadline the operator waits for it to be marked failed before
/// giving up on it (covers a cluster whose Job controller is slow or absent).
const DEADLINE_GRACE: Duration = Duration::from_secs(60);

/// Operator-wide settings of the `browser` method.
#[derive(Clone, Debug)]
pub struct LoginSettings {
    /// Whether login Jobs may be created at all (they need Job and Pod rights).
    pub enabled: bool,
    pub job: LoginJobSettings,
    /// Most login Jobs running at once across the operator.
    pub max_concurrent: usize,
}

/// The cap on concurrent login Jobs. A login counts from the moment its slot is reserved until
/// its result has been handled; after a restart, logins recorded in status count as well.
pub struct LoginSlots {
    cap: usize,
    reserved: Mutex<HashSet<String>>,
}

impl LoginSlots {
    pub fn new(cap: usize) -> LoginSlots {
        LoginSlots {
            cap,
            reserved: Mutex::default(),
        }
    }

    /// Reserves a slot for the account `uid`, or says how many logins are running.
    pub fn try_reserve(&self, uid: &str, accounts: &Store<DhanAccount>) -> Result<(), usize> {
        let mut reserved = self.reserved.lock().expect("login slots poisoned");
        let mut running: HashSet<String> = accounts
            .state()
            .iter()
            .filter(|a| a.status.as_ref().is_some_and(|s| s.login.is_some()))
            .filter_map(|a| a.uid())
            .collect();
        running.extend(reserved.iter().cloned());
        running.remove(uid);
        if running.len() >= self.cap {
            return Err(running.len());
        }
        reserved.insert(uid.to_string());
        Ok(())
    }

    /// Counts the account's login, found running, whatever the cap says.
    pub fn hold(&self, uid: &str) {
        self.reserved
            .lock()
            .expect("login slots poisoned")
            .insert(uid.to_string());
    }

    /// Frees the account's slot once its login has been handled (or never started).
    pub fn release(&self, uid: &str) {
        self.reserved
            .lock()
            .expect("login slots poisoned")
            .remove(uid);
    }
}

/// The login Job's name for a consent: the same consent always gives the same name, so a
/// creation repeated after a crash finds the first Job instead of making a second.
pub fn job_name(account: &DhanAccount, consent_id: &str) -> String {
    let digest = Sha256::digest(consent_id.as_bytes());
    let suffix: String = digest[..5].iter().map(|b| format!("{b:02x}")).collect();
    format!("{}-login-{suffix}", short(&account.name_any(), 40))
}

/// Dhan's single-use `tokenId`. It is kept out of `Debug`, logs, status and events.
pub struct TokenId(String);

impl TokenId {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for TokenId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenId(<redacted>)")
    }
}

/// What became of the recorded login: the state for the decision, and on success the tokenId.
pub struct LoginFound {
    pub seen: LoginSeen,
    pub token_id: Option<TokenId>,
}

impl LoginFound {
    fn seen(seen: LoginSeen) -> LoginFound {
        LoginFound {
            seen,
            token_id: None,
        }
    }
}

/// A running login Job of this account that its status does not name (created just before a
/// crash or a failed status write): it is still this account's login, to be followed rather
/// than paid for with another consent.
pub async fn unrecorded(
    ctx: &Context,
    account: &DhanAccount,
) -> Result<Option<LoginRecord>, kube::Error> {
    let jobs: Api<Job> =
        Api::namespaced(ctx.client.clone(), &account.namespace().unwrap_or_default());
    let selector = format!("{LOGIN_FOR_LABEL}={}", account_label(account));
    let listed = jobs.list(&ListParams::default().labels(&selector)).await?;
    let uid = account.uid();
    let newest = listed
        .items
        .into_iter()
        .filter(|job| {
            job.owner_references()
                .iter()
                .any(|o| o.controller == Some(true) && Some(&o.uid) == uid.as_ref())
        })
        .filter(|job| job.metadata.deletion_timestamp.is_none() && !finished(job))
        .max_by_key(|job| job.metadata.creation_timestamp.clone().map(|t| t.0));
    Ok(newest.map(|job| {
        let started_at = job
            .metadata
            .creation_timestamp
            .as_ref()
            .and_then(|t| DateTime::from_timestamp(t.0.as_second(), 0))
            .unwrap_or_else(|| ctx.clock.now());
        let reason = job
            .annotations()
            .get(LOGIN_REASON_ANNOTATION)
            .and_then(|r| RefreshReason::parse(r))
            .unwrap_or(RefreshReason::NoToken);
        LoginRecord {
            job_name: job.name_any(),
            started_at,
            reason,
            refresh_request: None,
        }
    }))
}

fn finished(job: &Job) -> bool {
    job.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| {
            c.iter()
                .any(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
        })
}

/// Looks at the recorded login's Job.
pub async fn progress(
    ctx: &Context,
    namespace: &str,
    login: &LoginRecord,
    credentials: &Credentials,
) -> Result<LoginFound, kube::Error> {
    let job_name = &login.job_name;
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), namespace);
    let job = jobs.get_opt(job_name).await?;
    let Some(job) = job.filter(|j| j.metadata.deletion_timestamp.is_none()) else {
        return Ok(LoginFound::seen(failed(format!(
            "the login Job {job_name} was deleted before it finished"
        ))));
    };
    let condition = |type_: &str| {
        job.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == type_ && c.status == "True"))
            .cloned()
    };
    let complete = condition("Complete");
    let failed_condition = condition("Failed");
    if complete.is_none() && failed_condition.is_none() {
        let allowed = job
            .spec
            .as_ref()
            .and_then(|s| s.active_deadline_seconds)
            .map_or(ctx.login.job.login_timeout, |s| {
                Duration::from_secs(s.max(0) as u64)
            })
            + DEADLINE_GRACE;
        let deadline = login.started_at + chrono::Duration::from_std(allowed).unwrap_or_default();
        if ctx.clock.now() < deadline {
            return Ok(LoginFound::seen(LoginSeen::Running));
        }
        delete_job(ctx, namespace, job_name).await;
        return Ok(LoginFound::seen(failed(format!(
            "the login Job {job_name} did not finish within {}s",
            allowed.as_secs()
        ))));
    }
    let message = termination_message(ctx, namespace, &job).await?;
    let secrets = credential_texts(credentials);
    if complete.is_some() {
        return Ok(match message.as_deref().and_then(token_id_from) {
            Some(token_id) => LoginFound {
                seen: LoginSeen::Succeeded,
                token_id: Some(token_id),
            },
            None => LoginFound::seen(failed(format!(
                "the login Job {job_name} completed without a tokenId in its termination message"
            ))),
        });
    }
    let seen = match message.filter(|m| !m.trim().is_empty()) {
        Some(message) => classify_login_failure(&redact(&message, &secrets)),
        None => {
            let why = failed_condition
                .map(|c| {
                    [c.reason, c.message]
                        .into_iter()
                        .flatten()
                        .collect::<Vec<_>>()
                        .join(": ")
                })
                .unwrap_or_default();
            failed(format!(
                "the login Job {job_name} failed without a message from the login ({why})"
            ))
        }
    };
    Ok(LoginFound::seen(seen))
}

fn failed(message: String) -> LoginSeen {
    LoginSeen::Failed {
        failure: Failure::new(FailureKind::LoginFailed, message),
        counts: false,
    }
}

/// The `login` container's termination message, from the newest finished Pod of `job`.
async fn termination_message(
    ctx: &Context,
    namespace: &str,
    job: &Job,
) -> Result<Option<String>, kube::Error> {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
    let selector = format!("job-name={}", job.name_any());
    let job_uid = job.uid();
    let mut messages: Vec<(Option<k8s_openapi::jiff::Timestamp>, String)> = pods
        .list(&ListParams::default().labels(&selector))
        .await?
        .items
        .into_iter()
        // Only the Job's own Pods: anyone may label a Pod `job-name`.
        .filter(|pod| {
            pod.owner_references()
                .iter()
                .any(|o| o.controller == Some(true) && Some(&o.uid) == job_uid.as_ref())
        })
        .filter_map(|pod| {
            let statuses = pod.status?.container_statuses?;
            let terminated = statuses
                .into_iter()
                .find(|c| c.name == "login")?
                .state?
                .terminated?;
            Some((terminated.finished_at.map(|t| t.0), terminated.message?))
        })
        .collect();
    messages.sort_by_key(|(finished, _)| *finished);
    Ok(messages.pop().map(|(_, message)| message))
}

/// A `tokenId` is one opaque word; anything else in a successful Job's message is not one.
fn token_id_from(message: &str) -> Option<TokenId> {
    let text = message.trim();
    let plausible = !text.is_empty()
        && text.len() <= 512
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.~=+/".contains(c));
    plausible.then(|| TokenId(text.to_string()))
}

/// Turns `browser-login`'s failure message into what the decision acts on. Refusals of what
/// the user typed in the credentials are held, like a wrong PIN on a mint: retrying on a timer
/// could get the account locked. A refused PIN or TOTP reached Dhan's credential step and
/// counts toward the day's lockout limit.
pub fn classify_login_failure(message: &str) -> LoginSeen {
    let message: String = message.chars().take(300).collect();
    let refusals = [
        ("PIN rejected:", FailureKind::InvalidPin, true),
        ("TOTP rejected:", FailureKind::InvalidTotp, true),
        (
            "TOTP or PIN rejected:",
            FailureKind::InvalidCredentials,
            true,
        ),
        ("mobile number rejected:", FailureKind::InvalidMobile, false),
        ("configuration:", FailureKind::InvalidConfig, false),
    ];
    match refusals
        .iter()
        .find(|(prefix, _, _)| message.starts_with(prefix))
    {
        Some((_, kind, counts)) => LoginSeen::Failed {
            failure: Failure::new(*kind, format!("the browser login was refused: {message}")),
            counts: *counts,
        },
        None => failed(format!("the browser login failed: {message}")),
    }
}

fn credential_texts(credentials: &Credentials) -> Vec<String> {
    super::credentials::CredentialKey::ALL
        .iter()
        .filter_map(|k| credentials.get(*k).ok())
        .map(|v| v.expose().trim().to_string())
        .filter(|v| v.len() >= 4)
        .collect()
}

fn redact(text: &str, secrets: &[String]) -> String {
    secrets.iter().fold(text.to_string(), |text, s| {
        text.replace(s.as_str(), "<redacted>")
    })
}

/// Creates the login Job for a consent. An existing Job of that name is the same login.
pub async fn create_job(
    ctx: &Context,
    account: &DhanAccount,
    plan: &LoginJob,
    reason: RefreshReason,
) -> Result<(), kube::Error> {
    let login_url = ctx.dhan.consent_login_url(&plan.consent_id);
    let job = login_job(
        account,
        &plan.job_name,
        &login_url,
        plan.totp_after_step,
        reason,
        &ctx.login.job,
    );
    let jobs: Api<Job> =
        Api::namespaced(ctx.client.clone(), &account.namespace().unwrap_or_default());
    match jobs.create(&PostParams::default(), &job).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(e),
    }
}

/// Deletes a login Job and its Pod. Best effort: the Job's TTL removes it anyway.
pub async fn delete_job(ctx: &Context, namespace: &str, job_name: &str) {
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), namespace);
    let params = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        ..DeleteParams::default()
    };
    match jobs.delete(job_name, &params).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 404 => {}
        Err(error) => {
            tracing::warn!(%error, job = job_name, namespace, "could not delete a login Job")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_of_the_credentials_are_held_and_the_rest_backed_off() {
        for (message, kind, counts) in [
            ("PIN rejected: Invalid PIN", FailureKind::InvalidPin, true),
            (
                "TOTP rejected: Invalid TOTP",
                FailureKind::InvalidTotp,
                true,
            ),
            (
                "mobile number rejected: Mobile not registered",
                FailureKind::InvalidMobile,
                false,
            ),
            (
                "configuration: DHAN_MOBILE has fewer than 10 digits",
                FailureKind::InvalidConfig,
                false,
            ),
            (
                "login page rejected: Invalid or expired consent",
                FailureKind::LoginFailed,
                false,
            ),
            (
                "timed out at the redirect step",
                FailureKind::LoginFailed,
                false,
            ),
            (
                "browser error: connection reset",
                FailureKind::LoginFailed,
                false,
            ),
        ] {
            match classify_login_failure(message) {
                LoginSeen::Failed { failure, counts: c } => {
                    assert_eq!((failure.kind, c), (kind, counts), "{message}");
                    assert!(failure.message.contains(message), "{}", failure.message);
                }
                other => panic!("{message}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_token_id_is_one_opaque_word() {
        assert_eq!(
            token_id_from("  9f1c2d3e-aa01-4c5b-9d7e-1234567890ab\n")
                .unwrap()
                .expose(),
            "9f1c2d3e-aa01-4c5b-9d7e-1234567890ab"
        );
        assert!(token_id_from("").is_none());
        assert!(token_id_from("PIN rejected: Invalid PIN").is_none());
        assert!(token_id_from(&"a".repeat(513)).is_none());
        assert_eq!(
            format!("{:?}", token_id_from("secret-id").unwrap()),
            "TokenId(<redacted>)"
        );
    }

    #[test]
    fn login_slots_cap_concurrent_logins_across_accounts() {
        let (store, _writer) = kube::runtime::reflector::store::<DhanAccount>();
        let slots = LoginSlots::new(2);
        assert!(slots.try_reserve("a", &store).is_ok());
        assert!(slots.try_reserve("b", &store).is_ok());
        assert_eq!(slots.try_reserve("c", &store), Err(2));
        // An account that already holds a slot keeps it.
        assert!(slots.try_reserve("a", &store).is_ok());
        slots.release("a");
        assert!(slots.try_reserve("c", &store).is_ok());
    }

    #[test]
    fn failure_texts_lose_any_credential() {
        let secrets = vec!["482913".to_string()];
        assert_eq!(
            redact("PIN rejected: 482913 is wrong", &secrets),
            "PIN rejected: <redacted> is wrong"
        );
    }

    #[test]
    fn job_names_are_stable_per_consent_and_fit_in_a_label() {
        let account = DhanAccount {
            metadata: kube::api::ObjectMeta {
                name: Some("a".repeat(100)),
                ..Default::default()
            },
            spec: Default::default(),
            status: None,
        };
        let name = job_name(&account, "consent-1");
        assert_eq!(name, job_name(&account, "consent-1"));
        assert_ne!(name, job_name(&account, "consent-2"));
        assert!(name.len() <= 63, "{name}");
    }
}
