use super::*;
use crate::browser::{FailureClass, Step};
use serde_json::{Value, json};

const JOB_UID: &str = "job-uid-1";
const TOKEN: &str = "9f1c2d3e-aa01-4c5b-9d7e-1234567890ab";

fn job(condition: Option<(&str, &str)>) -> Job {
    let conditions: Vec<Value> = condition
        .into_iter()
        .map(|(type_, reason)| json!({"type": type_, "status": "True", "reason": reason}))
        .collect();
    serde_json::from_value(json!({
        "metadata": {"name": "alice-login-x", "namespace": "trading", "uid": JOB_UID},
        "status": {"conditions": conditions},
    }))
    .unwrap()
}

fn pod(owner_uid: &str, login: Value, chromium: Value) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": "alice-login-x-abcde", "ownerReferences": [{
            "apiVersion": "batch/v1", "kind": "Job", "name": "alice-login-x",
            "uid": owner_uid, "controller": true,
        }]},
        "status": {"containerStatuses": [
            {"name": "login", "image": "op", "imageID": "", "ready": false, "restartCount": 0,
             "state": login},
            {"name": "chromium", "image": "c", "imageID": "", "ready": true, "restartCount": 0,
             "state": chromium},
        ]},
    }))
    .unwrap()
}

fn terminated(code: i32, reason: &str, message: Option<String>) -> Value {
    json!({"terminated": {"exitCode": code, "reason": reason, "message": message,
        "finishedAt": "2026-11-24T02:30:10Z"}})
}

fn running() -> Value {
    json!({"running": {"startedAt": "2026-11-24T02:30:00Z"}})
}

fn success_message() -> String {
    LoginReport::LoggedIn(TokenId::new(TOKEN).unwrap()).to_message()
}

fn read(job: &Job, pods: &[Pod]) -> Option<Result<TokenId, LoginJobFailure>> {
    outcome("alice-login-x", read_job(job, pods))
}

#[test]
fn a_finished_login_container_decides_while_the_sidecar_still_runs() {
    let pods = [pod(
        JOB_UID,
        terminated(0, "Completed", Some(success_message())),
        running(),
    )];
    match read(&job(None), &pods) {
        Some(Ok(token_id)) => assert_eq!(token_id.expose(), TOKEN),
        other => panic!("{other:?}"),
    }
    // Even a Job the deadline marked Failed: the login had succeeded before.
    let failed = job(Some(("Failed", "DeadlineExceeded")));
    assert!(matches!(read(&failed, &pods), Some(Ok(_))));
}

#[test]
fn a_running_login_is_running_whatever_the_sidecar_does() {
    let pods = [pod(JOB_UID, running(), terminated(0, "Completed", None))];
    assert!(read(&job(None), &pods).is_none());
    assert!(read(&job(None), &[]).is_none());
}

#[test]
fn pods_of_other_owners_are_ignored() {
    let pods = [pod(
        "someone-else",
        terminated(0, "Completed", Some(success_message())),
        running(),
    )];
    assert!(read(&job(None), &pods).is_none());
}

#[test]
fn a_reported_failure_keeps_its_step_class_and_lockout_flag() {
    let mut failure = LoginFailure::rejected(Step::Pin, FailureClass::Pin, "Invalid PIN");
    failure.reached_credential_step = true;
    let message = LoginReport::Failed(failure).to_message();
    let pods = [pod(
        JOB_UID,
        terminated(1, "Error", Some(message)),
        running(),
    )];
    let Some(Err(failure)) = read(&job(None), &pods) else {
        panic!("expected a failure");
    };
    assert_eq!(failure.reached_credential_step(), Some(true));
    assert!(failure.is_permanent());
    assert_eq!(failure.reason(), "InvalidPin");
    assert_eq!(
        failure.to_string(),
        "the browser login was refused: PIN rejected: Invalid PIN"
    );
}

#[test]
fn transient_login_failures_back_off() {
    let failure = LoginFailure::timeout(Step::Totp);
    let message = LoginReport::Failed(failure).to_message();
    let pods = [pod(
        JOB_UID,
        terminated(1, "Error", Some(message)),
        running(),
    )];
    let Some(Err(failure)) = read(&job(None), &pods) else {
        panic!("expected a failure");
    };
    assert_eq!(failure.reached_credential_step(), Some(false));
    assert!(!failure.is_permanent());
    assert_eq!(
        failure.to_string(),
        "the browser login failed: timed out at the TOTP step"
    );
}

#[test]
fn a_login_cut_short_may_have_reached_dhan_one_that_never_started_did_not() {
    let killed = [pod(JOB_UID, terminated(137, "OOMKilled", None), running())];
    let Some(Err(failure)) = read(&job(None), &killed) else {
        panic!("expected a failure");
    };
    assert_eq!(failure.reached_credential_step(), None);
    let text = failure.to_string();
    assert!(text.contains("exit code 137, OOMKilled"), "{text}");
    assert!(text.contains("left no result"), "{text}");

    let deadline = job(Some(("Failed", "DeadlineExceeded")));
    let cut = [pod(JOB_UID, running(), running())];
    let Some(Err(failure)) = read(&deadline, &cut) else {
        panic!("expected a failure");
    };
    assert_eq!(failure.reached_credential_step(), None);
    assert!(
        failure.to_string().contains("DeadlineExceeded"),
        "{failure}"
    );

    let waiting = json!({"waiting": {"reason": "CreateContainerConfigError"}});
    let never = [pod(JOB_UID, waiting, running())];
    let Some(Err(failure)) = read(&deadline, &never) else {
        panic!("expected a failure");
    };
    assert_eq!(failure.reached_credential_step(), Some(false));
}

#[test]
fn an_unreadable_result_is_a_failure_that_does_not_repeat_the_message() {
    let raw = format!("tokenId={TOKEN}");
    let pods = [pod(
        JOB_UID,
        terminated(0, "Completed", Some(raw)),
        running(),
    )];
    let Some(Err(failure)) = read(&job(Some(("Complete", ""))), &pods) else {
        panic!("expected a failure");
    };
    let text = failure.to_string();
    assert!(text.contains("not a login report"), "{text}");
    assert!(!text.contains(TOKEN), "{text}");
}
