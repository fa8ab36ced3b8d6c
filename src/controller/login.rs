//! The `browser` method on the operator's side (docs/dhan-api.md §3, docs/design.md "Browser logins in
//! Jobs"): generate a consent, run the login in a Job, read the Job's `tokenId`, consume it.
//!
//! The login takes minutes, longer than a reconcile should, so it spans reconciles: starting it
//! records `status.login`; later reconciles (woken by the Job's changes) look at the Job until
//! it has finished. The app secret stays here: the Job gets the mobile, PIN and TOTP key through
//! `secretKeyRef`s and hands back only the single-use `tokenId`.

use super::Context;
use super::credentials::{CredentialKey, Credentials};
use super::login_job::{ACCOUNT_LABEL, LoginJobSettings, account_label, login_job};
use super::login_network_policy::apply_login_network_policy;
use super::login_outcome::{LoginJobFailure, outcome, read_job};
use super::refresh::{LoginStart, MethodFailure};
pub use crate::browser::TokenId;
use crate::crd::{ConsentCount, DhanAccount};
use crate::dhan::{DhanError, Endpoint, IST, outcome_label};
use chrono::{DateTime, Utc};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, ListParams, PostParams, PropagationPolicy};
use kube::runtime::reflector::Store;
use kube::{Api, ResourceExt};
use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

/// Dhan allows at most this many consents per client per day (docs/dhan-api.md §3).
pub const DAILY_CONSENT_LIMIT: u32 = 25;

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

/// The IST calendar day of `now`, as `status.consents.day` records it.
pub fn ist_day(now: DateTime<Utc>) -> String {
    now.with_timezone(&IST).format("%Y-%m-%d").to_string()
}

/// Consents already generated on the IST day of `now`.
pub fn consents_today(consents: Option<&ConsentCount>, now: DateTime<Utc>) -> u32 {
    consents
        .filter(|c| c.day == ist_day(now))
        .map_or(0, |c| c.count)
}

/// Starts a browser login for `account`: checks the day's consent budget and the cap on
/// concurrent Jobs (neither spends anything), generates a consent, creates the login Job.
/// `consents` is updated as soon as Dhan has issued a consent, whatever happens next.
pub async fn start(
    ctx: &Context,
    account: &DhanAccount,
    client_id: &str,
    credentials: &Credentials,
    consents: &mut Option<ConsentCount>,
    totp_after_step: Option<u64>,
) -> Result<LoginStart, MethodFailure> {
    let now = Utc::now();
    let used = consents_today(consents.as_ref(), now);
    if used >= DAILY_CONSENT_LIMIT {
        return Err(MethodFailure::Dhan(DhanError::ConsentLimitExceeded {
            message: format!(
                "{used} of {DAILY_CONSENT_LIMIT} consents already generated today (IST); \
                 next login after midnight IST"
            ),
        }));
    }
    let uid = account.uid().unwrap_or_default();
    // A Job created just before a crash or a failed status write is still this account's login:
    // follow it rather than spend another consent.
    if let Some((job_name, started_at)) = unrecorded_login(ctx, account).await? {
        ctx.logins.hold(&uid);
        return Ok(LoginStart::Started {
            job_name,
            started_at,
        });
    }
    if let Err(running) = ctx.logins.try_reserve(&uid, &ctx.store) {
        return Ok(LoginStart::Queued(format!(
            "waiting for a free login slot ({running} login Jobs running, at most {})",
            ctx.login.max_concurrent
        )));
    }
    let result = consent_and_job(
        ctx,
        account,
        client_id,
        credentials,
        consents,
        used,
        totp_after_step,
    )
    .await;
    if result.is_err() {
        ctx.logins.release(&uid);
    }
    result
}

/// A running login Job of this account that its status does not name.
async fn unrecorded_login(
    ctx: &Context,
    account: &DhanAccount,
) -> Result<Option<(String, DateTime<Utc>)>, MethodFailure> {
    let jobs: Api<Job> =
        Api::namespaced(ctx.client.clone(), &account.namespace().unwrap_or_default());
    let selector = format!("{ACCOUNT_LABEL}={}", account_label(account));
    let listed = jobs
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|e| MethodFailure::Login(format!("could not list login Jobs: {e}")))?;
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
        let created = job
            .metadata
            .creation_timestamp
            .as_ref()
            .and_then(|t| DateTime::from_timestamp(t.0.as_second(), 0))
            .unwrap_or_else(Utc::now);
        (job.name_any(), created)
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

async fn consent_and_job(
    ctx: &Context,
    account: &DhanAccount,
    client_id: &str,
    credentials: &Credentials,
    consents: &mut Option<ConsentCount>,
    used: u32,
    totp_after_step: Option<u64>,
) -> Result<LoginStart, MethodFailure> {
    let app_id = credentials
        .get(CredentialKey::ApiKey)
        .map_err(|m| MethodFailure::NotApplicable(m.to_string()))?;
    let app_secret = credentials
        .get(CredentialKey::ApiSecret)
        .map_err(|m| MethodFailure::NotApplicable(m.to_string()))?;
    // The login Pod's fence goes up before anything is spent: a policy that cannot be applied
    // costs no consent, and the Pod never starts without it.
    apply_login_network_policy(ctx, account).await?;
    ctx.limiter.acquire().await;
    let result = ctx
        .dhan
        .generate_consent(client_id, app_id.expose(), app_secret.expose())
        .await;
    ctx.metrics
        .dhan_call(Endpoint::GenerateConsent, outcome_label(&result));
    let consent_id = result.map_err(MethodFailure::Dhan)?;
    *consents = Some(ConsentCount {
        day: ist_day(Utc::now()),
        count: used + 1,
    });

    let login_url = ctx.dhan.consent_login_url(&consent_id);
    let job = login_job(account, &login_url, totp_after_step, &ctx.login.job);
    let jobs: Api<Job> =
        Api::namespaced(ctx.client.clone(), &account.namespace().unwrap_or_default());
    let created = jobs
        .create(&PostParams::default(), &job)
        .await
        .map_err(|e| MethodFailure::Login(format!("could not create the login Job: {e}")))?;
    Ok(LoginStart::Started {
        job_name: created.name_any(),
        started_at: Utc::now(),
    })
}

/// Where a login Job stands.
#[derive(Debug)]
pub enum LoginProgress {
    /// Still running; give up on it after `deadline`.
    Running { deadline: DateTime<Utc> },
    /// The login succeeded: the single-use `tokenId` from the login container's report.
    LoggedIn(TokenId),
    /// The login failed; the Job is left for `kubectl describe` until its TTL removes it.
    Failed(LoginJobFailure),
}

/// [`LoginProgress`] with the failure folded into a [`MethodFailure`], for the current
/// reconciler.
#[derive(Debug)]
pub enum Progress {
    Running { deadline: DateTime<Utc> },
    LoggedIn(TokenId),
    Failed(MethodFailure),
}

/// Looks at the login Job `job_name` started at `started_at` (see [`login_progress`]).
pub async fn progress(
    ctx: &Context,
    namespace: &str,
    job_name: &str,
    started_at: DateTime<Utc>,
    credentials: &Credentials,
) -> Result<Progress, kube::Error> {
    Ok(
        match login_progress(ctx, namespace, job_name, started_at, credentials).await? {
            LoginProgress::Running { deadline } => Progress::Running { deadline },
            LoginProgress::LoggedIn(token_id) => Progress::LoggedIn(token_id),
            LoginProgress::Failed(failure) => Progress::Failed(failure.into()),
        },
    )
}

/// Looks at the login Job `job_name` started at `started_at`: the `login` container's report as
/// soon as that container has terminated, whatever the Job's state; a failure when the Job ended,
/// vanished or outlived its deadline without one.
pub async fn login_progress(
    ctx: &Context,
    namespace: &str,
    job_name: &str,
    started_at: DateTime<Utc>,
    credentials: &Credentials,
) -> Result<LoginProgress, kube::Error> {
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), namespace);
    let job = jobs.get_opt(job_name).await?;
    let Some(job) = job.filter(|j| j.metadata.deletion_timestamp.is_none()) else {
        return Ok(LoginProgress::Failed(LoginJobFailure::Job {
            message: format!("the login Job {job_name} was deleted before it finished"),
            reached_credential_step: None,
        }));
    };
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
    let selector = format!("job-name={job_name}");
    let listed = pods.list(&ListParams::default().labels(&selector)).await?;
    match outcome(job_name, read_job(&job, &listed.items)) {
        Some(Ok(token_id)) => return Ok(LoginProgress::LoggedIn(token_id)),
        Some(Err(LoginJobFailure::Login(failure))) => {
            // The driver redacted already; the operator knows the credentials too and checks again.
            let secrets = credential_texts(credentials);
            let secrets: Vec<&str> = secrets.iter().map(String::as_str).collect();
            let failure = LoginJobFailure::Login(failure.redacted(&secrets));
            return Ok(LoginProgress::Failed(failure));
        }
        Some(Err(failure)) => return Ok(LoginProgress::Failed(failure)),
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
    let deadline = started_at + chrono::Duration::from_std(allowed).unwrap_or_default();
    if Utc::now() < deadline {
        return Ok(LoginProgress::Running { deadline });
    }
    delete_job(ctx, namespace, job_name).await;
    Ok(LoginProgress::Failed(LoginJobFailure::Job {
        message: format!(
            "the login Job {job_name} did not finish within {}s",
            allowed.as_secs()
        ),
        reached_credential_step: None,
    }))
}

fn credential_texts(credentials: &Credentials) -> Vec<String> {
    CredentialKey::ALL
        .iter()
        .filter_map(|k| credentials.get(*k).ok())
        .map(|v| v.expose().trim().to_string())
        .filter(|v| v.len() >= 4)
        .collect()
}

/// Deletes a login Job and its Pod. Best effort: the Job's TTL removes it anyway.
pub async fn delete_job(ctx: &Context, namespace: &str, job_name: &str) {
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), namespace);
    let params = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        ..DeleteParams::default()
    };
    if let Err(error) = jobs.delete(job_name, &params).await {
        tracing::warn!(%error, job = job_name, namespace, "could not delete a login Job");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn the_consent_count_restarts_on_each_ist_day() {
        let count = ConsentCount {
            day: "2026-11-24".into(),
            count: 7,
        };
        // 2026-11-24 00:10 IST is 2026-11-23 18:40 UTC.
        assert_eq!(consents_today(Some(&count), at("2026-11-23T18:40:00Z")), 7);
        assert_eq!(consents_today(Some(&count), at("2026-11-24T18:29:59Z")), 7);
        assert_eq!(consents_today(Some(&count), at("2026-11-24T18:30:00Z")), 0);
        assert_eq!(consents_today(Some(&count), at("2026-11-23T18:29:59Z")), 0);
        assert_eq!(consents_today(None, at("2026-11-24T06:00:00Z")), 0);
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
}
