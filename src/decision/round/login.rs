//! The browser login recorded in the memory: what its end means, and the lockout.

use super::{LoginJob, LoginSeen, Note, Round};
use crate::decision::memory::{DayCount, LoginRecord};
use crate::decision::{Failure, FailureKind, Method, MethodFailure};
use crate::dhan::totp;
use chrono::{DateTime, Utc};

impl Round {
    pub(super) fn see_login(&mut self, login: LoginSeen, now: DateTime<Utc>) {
        let Some(record) = self.memory.login.clone() else {
            return;
        };
        if !matches!(login, LoginSeen::Running) {
            // The Job typed a TOTP code of some step up to now; the next code (in a login or a
            // mint) must come from a later step, or Dhan rejects it as a replay (§1).
            let now_step = totp::step_at(now);
            self.memory.last_totp_step = self.memory.last_totp_step.max(Some(now_step));
        }
        match login {
            LoginSeen::Running | LoginSeen::Succeeded { .. } => self.login = login,
            LoginSeen::None => {
                self.memory.login = None;
                self.login_ended = true;
            }
            LoginSeen::Failed { failure, counts } => {
                self.memory.login = None;
                self.login_ended = true;
                let mut failure = failure;
                if counts {
                    self.memory.failed_logins =
                        Some(DayCount::increment(self.memory.failed_logins.as_ref(), now));
                    // A refused credential is held until it changes, which outlasts the
                    // day's cap.
                    if !failure.kind.refuses_credentials() {
                        failure = self.lockout(&failure, now).unwrap_or(failure);
                    }
                }
                self.fail(
                    vec![(Method::Browser, MethodFailure::Failed(failure))],
                    record.reason,
                    record.refresh_request,
                    now,
                );
            }
        }
    }

    /// After too many failed logins today, whatever the last failure was, the account stops
    /// until the next IST day.
    pub(super) fn lockout(&self, last: &Failure, now: DateTime<Utc>) -> Option<Failure> {
        let failed =
            DayCount::today(self.memory.failed_logins.as_ref(), now).max(self.inputs.refused_today);
        let max = self.inputs.limits.max_failed_logins;
        (failed >= max).then(|| {
            Failure::new(
                FailureKind::LoginLockout,
                format!(
                    "Dhan refused the credentials {failed} times today (PIN+TOTP mints, browser \
                     logins that reached its PIN/TOTP step; the last: {}); stopped so that Dhan \
                     does not lock the account — check the mobile number, PIN and TOTP key in \
                     the credentials; the next login is after midnight IST",
                    last.message
                ),
            )
        })
    }

    /// Stops the login in progress (suspend, a spec that became invalid, a conflict): its Job
    /// is deleted and its slot freed.
    pub fn abandon_login(&mut self) {
        self.finish_login();
    }

    pub(super) fn login_record(&self) -> Option<LoginRecord> {
        self.memory.login.clone()
    }

    pub(super) fn finish_login(&mut self) {
        let still_running = self.login == LoginSeen::Succeeded { job_done: false };
        if let Some(record) = self.memory.login.take() {
            if still_running {
                self.job_still_running = true;
            } else {
                self.job_to_delete = Some(record.job_name);
            }
            self.login_ended = true;
        }
        self.login = LoginSeen::None;
    }

    pub(super) fn login_started(
        &mut self,
        consent_id: String,
        job_name: String,
        now: DateTime<Utc>,
    ) {
        let attempt = self
            .attempt
            .take()
            .expect("a login starts within an attempt");
        self.memory.consents = Some(DayCount::increment(self.memory.consents.as_ref(), now));
        self.notes.push(Note {
            warning: false,
            reason: "LoginStarted",
            message: format!(
                "Generated a consent and started the browser login Job {job_name} ({})",
                attempt.reason.describe()
            ),
        });
        self.job_to_create = Some(LoginJob {
            job_name: job_name.clone(),
            consent_id,
            totp_after_step: self.memory.last_totp_step,
        });
        self.memory.login = Some(LoginRecord {
            job_name,
            started_at: now,
            reason: attempt.reason,
            refresh_request: attempt.request,
        });
        self.login = LoginSeen::Running;
    }

    pub(super) fn login_queued(&mut self, why: String, now: DateTime<Utc>) {
        let attempt = self
            .attempt
            .take()
            .expect("a login queues within an attempt");
        let dhan_failed = attempt
            .failures
            .iter()
            .any(|(_, f)| matches!(f, MethodFailure::Failed(_)));
        if dhan_failed {
            // Waiting for a slot would re-run the methods before `browser` every few seconds:
            // after a failure among them, back off instead.
            let mut failures = attempt.failures;
            failures.push((
                Method::Browser,
                MethodFailure::Failed(Failure::new(FailureKind::LoginFailed, why)),
            ));
            self.fail(failures, attempt.reason, attempt.request, now);
        } else {
            self.queued = Some(why);
        }
    }
}
