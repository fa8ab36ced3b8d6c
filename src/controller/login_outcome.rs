//! Reading a login Job: the `login` container's own termination decides, as soon as it has
//! terminated, whatever the Job's state — a Chromium sidecar that does not exit must not turn a
//! successful login into a Job that runs into its deadline. Pure, over the Job and its Pods.

use std::fmt;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;

use crate::browser::report::{LoginReport, ReportError};
use crate::browser::{LoginFailure, TokenId};

/// Name of the container that runs `dhan-operator browser-login`.
pub const LOGIN_CONTAINER: &str = "login";

/// What a login Job's objects say.
#[derive(Debug)]
pub enum JobReading {
    /// The `login` container terminated; its report, or why it left none.
    Finished {
        exit_code: i32,
        reason: Option<String>,
        report: Result<LoginReport, ReportError>,
    },
    /// The Job ended (deadline, deletion of its Pod …) without the `login` container's result.
    EndedWithoutResult { why: String, login_started: bool },
    /// Still going.
    Running,
}

/// Why a login did not produce a token, as the reconciler acts on it.
#[derive(Debug)]
pub enum LoginJobFailure {
    /// The login container's own typed report: step, class, page text, lockout flag.
    Login(LoginFailure),
    /// The Job failed or vanished without a report.
    Job {
        message: String,
        /// `Some(false)` when the login never started; `None` when it ran and was cut short,
        /// so nobody can tell whether a PIN or TOTP reached Dhan.
        reached_credential_step: Option<bool>,
    },
}

impl LoginJobFailure {
    /// Whether a PIN, TOTP code or password went to Dhan in this login (counts toward the
    /// account's lockout budget); `None` when unknown.
    pub fn reached_credential_step(&self) -> Option<bool> {
        match self {
            LoginJobFailure::Login(f) => Some(f.reached_credential_step),
            LoginJobFailure::Job {
                reached_credential_step,
                ..
            } => *reached_credential_step,
        }
    }

    /// A refusal that will not change until the credentials, spec or settings do.
    pub fn is_permanent(&self) -> bool {
        matches!(self, LoginJobFailure::Login(f) if f.class.is_permanent())
    }

    /// Reason label for status and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            LoginJobFailure::Login(f) if f.class.is_permanent() => f.class.reason(),
            _ => "LoginFailed",
        }
    }
}

impl fmt::Display for LoginJobFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoginJobFailure::Login(failure) if failure.class.is_permanent() => {
                write!(f, "the browser login was refused: {failure}")
            }
            LoginJobFailure::Login(failure) => write!(f, "the browser login failed: {failure}"),
            LoginJobFailure::Job { message, .. } => f.write_str(message),
        }
    }
}

/// What the login came to, once the Job's reading is final.
pub fn outcome(job_name: &str, reading: JobReading) -> Option<Result<TokenId, LoginJobFailure>> {
    match reading {
        JobReading::Running => None,
        JobReading::Finished {
            report: Ok(LoginReport::LoggedIn(token_id)),
            ..
        } => Some(Ok(token_id)),
        JobReading::Finished {
            report: Ok(LoginReport::Failed(failure)),
            ..
        } => Some(Err(LoginJobFailure::Login(failure))),
        JobReading::Finished {
            exit_code,
            reason,
            report: Err(error),
        } => {
            let how = match reason {
                Some(reason) => format!("exit code {exit_code}, {reason}"),
                None => format!("exit code {exit_code}"),
            };
            Some(Err(LoginJobFailure::Job {
                message: format!(
                    "the browser login failed: the login Job {job_name} ended ({how}): {error}"
                ),
                reached_credential_step: None,
            }))
        }
        JobReading::EndedWithoutResult { why, login_started } => Some(Err(LoginJobFailure::Job {
            message: format!(
                "the browser login failed: the login Job {job_name} ended without a result from the login ({why})"
            ),
            reached_credential_step: (!login_started).then_some(false),
        })),
    }
}

/// Reads `job` and its `pods` (any Pods; only the Job's own count).
pub fn read_job(job: &Job, pods: &[Pod]) -> JobReading {
    let job_uid = job.uid();
    // Only the Job's own Pods: anyone may label a Pod `job-name`.
    let own = pods.iter().filter(|pod| {
        pod.owner_references()
            .iter()
            .any(|o| o.controller == Some(true) && Some(&o.uid) == job_uid.as_ref())
    });
    let mut login_started = false;
    let mut finished = Vec::new();
    for pod in own {
        let statuses = pod
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref());
        let Some(login) = statuses
            .into_iter()
            .flatten()
            .find(|c| c.name == LOGIN_CONTAINER)
        else {
            continue;
        };
        let state = login.state.as_ref();
        login_started |= state.is_some_and(|s| s.running.is_some() || s.terminated.is_some());
        if let Some(t) = state.and_then(|s| s.terminated.as_ref()) {
            finished.push(t.clone());
        }
    }
    // The newest run of the login container decides (backoffLimit 0 leaves one, normally).
    finished.sort_by_key(|t| t.finished_at.clone().map(|at| at.0));
    if let Some(t) = finished.pop() {
        return JobReading::Finished {
            exit_code: t.exit_code,
            reason: t.reason.filter(|r| r != "Completed" && r != "Error"),
            report: LoginReport::parse(t.message.as_deref().unwrap_or_default()),
        };
    }
    let ended = job
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| {
            c.iter()
                .find(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
        });
    match ended {
        Some(condition) => {
            let why = [
                Some(condition.type_.clone()),
                condition.reason.clone(),
                condition.message.clone(),
            ]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(": ");
            JobReading::EndedWithoutResult { why, login_started }
        }
        None => JobReading::Running,
    }
}

#[cfg(test)]
#[path = "login_outcome_tests.rs"]
mod tests;
