//! The `browser` method's Kubernetes side (docs/dhan-api.md §3, docs/design.md "Browser logins
//! in Jobs"): the login Job's progress and result, its creation and deletion, and the cap on
//! concurrent logins.
//!
//! A login takes minutes, longer than a reconcile should, so it spans reconciles: starting it
//! records `status.login`; later reconciles (woken by the Job's changes) look at the Job until
//! it has finished. The app secret stays in the operator: the Job gets the mobile, PIN and
//! TOTP key through `secretKeyRef`s and hands back only the single-use `tokenId`.

use super::Context;
use super::credentials::{CredentialKey, Credentials};
use super::login_job::{LOGIN_FOR_LABEL, LOGIN_REASON_ANNOTATION, LoginJobSettings, login_job};
use super::login_network_policy::apply_login_network_policy;
use super::login_outcome::{LoginJobFailure, outcome, read_job};
use super::output::{account_label, short};
use crate::browser::FailureClass;
pub use crate::browser::TokenId;
use crate::crd::DhanAccount;
use crate::decision::round::LoginJob;
use crate::decision::{Failure, FailureKind, LoginRecord, LoginSeen, RefreshReason};
use chrono::{DateTime, Utc};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, ListParams, PostParams, PropagationPolicy};
use kube::{Api, ResourceExt};
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

/// How long a login Job whose result was taken in may go on running (its Chromium closing)
/// before the operator removes it.
pub const REAP_AFTER: Duration = Duration::from_secs(30);

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

    /// Reserves a slot for the account `uid`, or says how many logins are running; `recorded`
    /// are the accounts whose status records a login.
    pub fn try_reserve(&self, uid: &str, recorded: HashSet<String>) -> Result<(), usize> {
        let mut reserved = self.reserved.lock().expect("login slots poisoned");
        let mut running = recorded;
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

/// The account's login Jobs the status does not name.
pub struct UnrecordedJobs {
    /// A running login Job created just before a crash or a failed status write: still this
    /// account's login, to be followed rather than paid for with another consent.
    pub running: Option<LoginRecord>,
    /// Logins whose result was already taken in and whose Job completed since (its Chromium
    /// was still closing when the token was consumed), or still runs [`REAP_AFTER`] later (a
    /// Chromium that does not exit): removed, as the operator removes every successful login
    /// Job. Failed ones stay for `kubectl describe` until their TTL.
    pub completed: Vec<String>,
    /// When a handled login Job that still runs becomes due for removal.
    pub reap_at: Option<DateTime<Utc>>,
}

/// Lists the account's login Jobs. Jobs created before `handled` (the last result the memory
/// holds) are logins whose end was already taken in, even if their Job still runs; with
/// `reap_running` (that result was a token) such a Job still running is removed after
/// [`REAP_AFTER`].
pub async fn unrecorded(
    ctx: &Context,
    account: &DhanAccount,
    handled: Option<DateTime<Utc>>,
    reap_running: bool,
) -> Result<UnrecordedJobs, kube::Error> {
    let jobs: Api<Job> =
        Api::namespaced(ctx.client.clone(), &account.namespace().unwrap_or_default());
    let selector = format!("{LOGIN_FOR_LABEL}={}", account_label(account));
    let listed = jobs.list(&ListParams::default().labels(&selector)).await?;
    let uid = account.uid();
    let created = |job: &Job| {
        job.metadata
            .creation_timestamp
            .as_ref()
            .map(|t| t.0.as_second())
    };
    // Creation times have whole seconds: a Job of the same second as the last result is taken
    // for handled.
    let is_new =
        |job: &Job| handled.is_none_or(|h| created(job).is_some_and(|c| c > h.timestamp()));
    let ours: Vec<Job> = listed
        .items
        .into_iter()
        .filter(|job| {
            job.owner_references()
                .iter()
                .any(|o| o.controller == Some(true) && Some(&o.uid) == uid.as_ref())
        })
        .filter(|job| job.metadata.deletion_timestamp.is_none())
        .collect();
    let reap_at = handled.map(|h| h + chrono::Duration::from_std(REAP_AFTER).unwrap_or_default());
    let reap_at = reap_at.filter(|_| reap_running);
    let overdue = reap_at.is_some_and(|at| ctx.clock.now() >= at);
    let completed = ours
        .iter()
        .filter(|job| !is_new(job) && (succeeded(job) || (!finished(job) && overdue)))
        .map(|job| job.name_any())
        .collect();
    let handled_jobs_running = ours.iter().any(|job| !is_new(job) && !finished(job));
    let running = ours
        .into_iter()
        .filter(|job| !finished(job) && is_new(job))
        .max_by_key(|job| job.metadata.creation_timestamp.clone().map(|t| t.0))
        .map(|job| {
            let started_at = created(&job)
                .and_then(|t| DateTime::from_timestamp(t, 0))
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
        });
    let reap_at = reap_at.filter(|_| !overdue && handled_jobs_running);
    Ok(UnrecordedJobs {
        running,
        completed,
        reap_at,
    })
}

fn succeeded(job: &Job) -> bool {
    job.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| {
            c.iter()
                .any(|c| c.type_ == "Complete" && c.status == "True")
        })
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

/// Looks at the recorded login's Job: the `login` container's report as soon as that container
/// has terminated, whatever the Job's state; a failure when the Job ended, vanished or outlived
/// its deadline without one.
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
        return Ok(LoginFound::seen(seen_failure(LoginJobFailure::Job {
            message: format!("the login Job {job_name} was deleted before it finished"),
            reached_credential_step: None,
        })));
    };
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
    let selector = format!("job-name={job_name}");
    let listed = pods.list(&ListParams::default().labels(&selector)).await?;
    match outcome(job_name, read_job(&job, &listed.items)) {
        Some(Ok(token_id)) => {
            return Ok(LoginFound {
                seen: LoginSeen::Succeeded {
                    job_done: finished(&job),
                },
                token_id: Some(token_id),
            });
        }
        Some(Err(LoginJobFailure::Login(failure))) => {
            // The driver redacted already; the operator knows the credentials too and checks
            // again.
            let secrets = credential_texts(credentials);
            let secrets: Vec<&str> = secrets.iter().map(String::as_str).collect();
            let failure = LoginJobFailure::Login(failure.redacted(&secrets));
            return Ok(LoginFound::seen(seen_failure(failure)));
        }
        Some(Err(failure)) => return Ok(LoginFound::seen(seen_failure(failure))),
        None => {}
    }
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
    Ok(LoginFound::seen(seen_failure(LoginJobFailure::Job {
        message: format!(
            "the login Job {job_name} did not finish within {}s",
            allowed.as_secs()
        ),
        reached_credential_step: None,
    })))
}

/// A failed login as the decision sees it. A login cut short may have typed a PIN already:
/// for the lockout count, not knowing counts as having reached Dhan's credential step.
fn seen_failure(failure: LoginJobFailure) -> LoginSeen {
    let counts = failure.reached_credential_step().unwrap_or(true);
    let kind = match &failure {
        LoginJobFailure::Login(f) => kind_of(f.class),
        LoginJobFailure::Job { .. } => FailureKind::LoginFailed,
    };
    LoginSeen::Failed {
        failure: Failure::new(kind, failure.to_string()),
        counts,
    }
}

/// The failure kind of a login report's class.
pub fn kind_of(class: FailureClass) -> FailureKind {
    match class {
        FailureClass::Pin => FailureKind::InvalidPin,
        FailureClass::Totp => FailureKind::InvalidTotp,
        FailureClass::Mobile => FailureKind::InvalidMobile,
        FailureClass::Password => FailureKind::InvalidPassword,
        FailureClass::SessionExpired => FailureKind::LoginSessionExpired,
        FailureClass::TooManyAttempts => FailureKind::TooManyLoginAttempts,
        FailureClass::OriginRefused => FailureKind::LoginOriginRefused,
        FailureClass::PageUnavailable => FailureKind::LoginPageUnavailable,
        FailureClass::PageNotUnderstood => FailureKind::LoginPageNotUnderstood,
        FailureClass::Timeout => FailureKind::LoginTimeout,
        FailureClass::Browser => FailureKind::LoginBrowserError,
        FailureClass::Config => FailureKind::LoginConfig,
        FailureClass::NoTokenId => FailureKind::LoginNoTokenId,
        FailureClass::Unknown => FailureKind::LoginRejected,
    }
}

fn credential_texts(credentials: &Credentials) -> Vec<String> {
    CredentialKey::ALL
        .iter()
        .filter_map(|k| credentials.get(*k).ok())
        .map(|v| v.expose().trim().to_string())
        .filter(|v| v.len() >= 4)
        .collect()
}

/// Creates the login Job for a consent. An existing Job of that name is the same login.
pub async fn create_job(
    ctx: &Context,
    account: &DhanAccount,
    plan: &LoginJob,
    reason: RefreshReason,
) -> Result<(), kube::Error> {
    // The login Pod's fence goes up first: the Pod never starts without it.
    apply_login_network_policy(ctx, account).await?;
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
    fn a_class_is_held_exactly_when_the_login_report_calls_it_permanent() {
        use crate::decision::failure::Handling;
        for class in [
            FailureClass::Pin,
            FailureClass::Totp,
            FailureClass::Mobile,
            FailureClass::Password,
            FailureClass::SessionExpired,
            FailureClass::TooManyAttempts,
            FailureClass::OriginRefused,
            FailureClass::PageUnavailable,
            FailureClass::PageNotUnderstood,
            FailureClass::Timeout,
            FailureClass::Browser,
            FailureClass::Config,
            FailureClass::NoTokenId,
            FailureClass::Unknown,
        ] {
            let kind = kind_of(class);
            assert_eq!(
                matches!(kind.handling(), Handling::Hold | Handling::NextIstDay),
                class.is_permanent(),
                "{class:?}"
            );
            assert_eq!(kind.reason(), class.reason(), "one label for one failure");
        }
    }

    #[test]
    fn login_slots_cap_concurrent_logins_across_accounts() {
        let slots = LoginSlots::new(2);
        assert!(slots.try_reserve("a", HashSet::new()).is_ok());
        assert!(slots.try_reserve("b", HashSet::new()).is_ok());
        assert_eq!(slots.try_reserve("c", HashSet::new()), Err(2));
        // An account that already holds a slot keeps it.
        assert!(slots.try_reserve("a", HashSet::new()).is_ok());
        slots.release("a");
        assert!(slots.try_reserve("c", HashSet::new()).is_ok());
    }

    #[test]
    fn logins_recorded_in_status_count_against_the_cap() {
        let slots = LoginSlots::new(2);
        let recorded = HashSet::from(["x".to_string(), "y".to_string()]);
        assert_eq!(slots.try_reserve("c", recorded.clone()), Err(2));
        assert!(slots.try_reserve("x", recorded).is_ok(), "its own login");
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
