//! The browser method on a real node (`hack/node.sh`): login Jobs scheduled by kube-scheduler,
//! run by a kubelet and containerd from the operator image (this run's binary) and a
//! headless-shell-compatible Chromium image, driven by the Job controller, cleaned up by the TTL
//! controller and the garbage collector. `dhan-mock` listens where the Pods reach the host.
//!
//! One node per machine: every real-node test lives in this binary and shares it.
//! `browser_e2e.rs` keeps a played kubelet for what needs a Job held unfinished on cue.

mod support;
#[path = "real_node/window.rs"]
mod window;

use dhan_operator::crd::Phase;
use dhan_operator::dhan::TotpKey;
use dhan_operator::dhan::totp::step_at;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use kube::ResourceExt;
use kube::api::{Api, PostParams};
use serde_json::{Value, json};
use std::time::Duration;
use support::{Bed, MockDhan, Recorder, node, wait_for};

const APP_ID: &str = "app-node-e2e";
const APP_SECRET: &str = "app-secret-node-7q2m";
const MOBILE: &str = "9812345671";
const PIN: &str = "274851";
const TOTP_SECRET: &str = "KRUGKIDROVUWG2ZAMJZG653OEBTG66BA";
/// Scheduling, two container starts and a browser login on a 2-core machine shared with others.
const LOGIN_WAIT: Duration = Duration::from_secs(180);

/// A bed whose mock the node's Pods reach, and (unless `operator_args` is `None`) an operator
/// creating login Jobs with the node's images.
async fn bed(operator_args: Option<&[&str]>) -> Bed {
    let node = node();
    let mut bed = Bed::without_operator("node").await;
    bed.mock = MockDhan::start_on(node.host_ip(), &["--mint-throttle-seconds", "3"]).await;
    if let Some(extra) = operator_args {
        let mut args = vec![
            "--browser-logins",
            "--login-image",
            node.operator_image(),
            "--chromium-image",
            node.chromium_image(),
            "--login-timeout",
            "60s",
        ];
        args.extend_from_slice(extra);
        bed.operator = Some(bed.spawn_operator(&args, &[]));
    }
    bed
}

/// A client with a Dhan app at the mock, its credentials in the bed's namespace.
async fn api_key_client(bed: &Bed, client_id: &str, secret: &str, pin: &str) {
    bed.mock
        .register(json!({
            "clientId": client_id, "pin": PIN, "totpSecret": TOTP_SECRET,
            "mobile": format!("+91{MOBILE}"),
            "apps": [{ "appId": APP_ID, "appSecret": APP_SECRET,
                       "redirectUrl": "https://example.invalid/callback" }],
            "loginOrder": "totp-first", "loginInputs": "boxes",
        }))
        .await;
    bed.put_secret("team-app", &[("id", APP_ID), ("secret", APP_SECRET)])
        .await;
    bed.put_secret(
        secret,
        &[
            ("mobile", MOBILE),
            ("pin", pin),
            ("totpSecret", TOTP_SECRET),
        ],
    )
    .await;
}

fn browser_spec(client_id: &str, secret: &str) -> Value {
    json!({
        "clientId": client_id,
        "credentialsSecret": secret,
        "credentials": {
            "apiKey": { "secretName": "team-app", "key": "id" },
            "apiSecret": { "secretName": "team-app", "key": "secret" },
        },
        "methods": ["browser"],
    })
}

fn recent_codes() -> Vec<String> {
    let key = TotpKey::parse(TOTP_SECRET).unwrap();
    let now = step_at(chrono::Utc::now());
    (now.saturating_sub(10)..=now + 1)
        .map(|step| key.code_for_step(step))
        .collect()
}

fn condition(job: &Job, type_: &str) -> Option<(String, String)> {
    job.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_ && c.status == "True")
        .map(|c| {
            (
                c.reason.clone().unwrap_or_default(),
                c.message.clone().unwrap_or_default(),
            )
        })
}

/// Prints past the test harness's output capture, so `make test`'s log shows what the node did.
fn show(line: String) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{line}");
}

fn container<'a>(pod: &'a Pod, name: &str) -> &'a ContainerStatus {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|c| c.iter().find(|c| c.name == name))
        .unwrap_or_else(|| panic!("no status of container {name} in Pod {}", pod.name_any()))
}

/// Asserts that `name` ran in containerd from its image and ended by itself with exit code 0,
/// and prints what the runtime recorded.
fn assert_ran_and_completed(pod: &Pod, name: &str) -> String {
    let status = container(pod, name);
    let id = status.container_id.clone().unwrap_or_default();
    let runtime_id = id
        .strip_prefix("containerd://")
        .unwrap_or_else(|| panic!("{name} was not run by containerd: {id:?}"));
    assert!(
        status.image_id.starts_with("sha256:") || status.image_id.contains("@sha256:"),
        "{name} ran a real image: {:?}",
        status.image_id
    );
    let terminated = status
        .state
        .as_ref()
        .and_then(|s| s.terminated.clone())
        .unwrap_or_else(|| panic!("{name} did not terminate: {:?}", status.state));
    assert_eq!(
        (terminated.exit_code, terminated.reason.as_deref()),
        (0, Some("Completed")),
        "{name} ended by itself, nothing killed it"
    );
    for line in node().containerd_log_about(runtime_id) {
        if line.contains("StartContainer") {
            show(format!("containerd: {line}"));
        }
    }
    show(format!(
        "Pod {} container {name}: {} image {} ({}), started {}, exited 0 at {}",
        pod.name_any(),
        id,
        status.image,
        status.image_id,
        terminated
            .started_at
            .map(|t| t.0.to_string())
            .unwrap_or_default(),
        terminated
            .finished_at
            .map(|t| t.0.to_string())
            .unwrap_or_default(),
    ));
    terminated.message.unwrap_or_default()
}

#[tokio::test]
async fn api_key_account_becomes_ready_through_a_login_job_run_by_a_real_kubelet() {
    const CLIENT: &str = "1500000001";
    let bed = bed(Some(&[])).await;
    let recorder = Recorder::start(bed.client.clone(), &bed.ns);
    api_key_client(&bed, CLIENT, "carol-dhan", PIN).await;
    bed.create_account("carol", browser_spec(CLIENT, "carol-dhan"))
        .await;

    let account = bed.wait_phase_for("carol", Phase::Ready, LOGIN_WAIT).await;
    let status = account.status.unwrap();
    assert_eq!(status.method.as_deref(), Some("browser"));
    let token = bed.token_in_secret("carol-token").await;
    assert_eq!(
        bed.mock.account(CLIENT).await["currentToken"],
        token.as_str()
    );

    // The token counts as soon as the login container ends; the Job completes once Chromium
    // has closed by itself too.
    let jobs = support::wait_for(Duration::from_secs(30), || async {
        let jobs = recorder.jobs();
        jobs.iter()
            .all(|job| condition(job, "Complete").is_some())
            .then_some(jobs)
    })
    .await;
    assert_eq!(jobs.len(), 1, "one login Job");
    let job = &jobs[0];
    let pods = recorder.pods_of(&job.name_any());
    assert_eq!(pods.len(), 1, "one Pod, run once");
    let pod = &pods[0];
    let spec = pod.spec.as_ref().unwrap();
    assert_eq!(spec.node_name.as_deref(), Some("dhan-node"), "scheduled");
    let token_id = assert_ran_and_completed(pod, "login");
    assert!(
        !token_id.trim().is_empty(),
        "a tokenId in the termination message"
    );
    assert_ran_and_completed(pod, "chromium");
    // The operator consumed it: Dhan's tokenId is single-use (docs/dhan-api.md §3).
    assert_eq!(bed.mock.account(CLIENT).await["consentLogins"], 1);

    // Finished Jobs disappear, and their Pods with them (garbage collector).
    let (jobs_api, pods_api): (Api<Job>, Api<Pod>) = (
        Api::namespaced(bed.client.clone(), &bed.ns),
        Api::namespaced(bed.client.clone(), &bed.ns),
    );
    wait_for(Duration::from_secs(60), || async {
        let job_gone = jobs_api.get_opt(&job.name_any()).await.ok()?.is_none();
        let pod_gone = pods_api.get_opt(&pod.name_any()).await.ok()?.is_none();
        (job_gone && pod_gone).then_some(())
    })
    .await;

    let codes = recent_codes();
    let mut secrets = vec![
        APP_SECRET,
        PIN,
        MOBILE,
        TOTP_SECRET,
        &token,
        token_id.trim(),
    ];
    secrets.extend(codes.iter().map(String::as_str));
    bed.assert_nothing_leaks(&secrets).await;
}

#[tokio::test]
async fn a_login_job_that_never_finishes_hits_its_deadline_and_the_account_backs_off() {
    const CLIENT: &str = "1500000002";
    // A sidecar image nobody can pull (a typo, a private registry without a pull secret): the
    // login gives up on Chromium after its timeout, but the Pod runs on with the sidecar waiting
    // for its image; only activeDeadlineSeconds (login timeout + 60 s) ends the Job.
    let node = node();
    let mut bed = bed(None).await;
    bed.operator = Some(bed.spawn_operator(
        &[
            "--browser-logins",
            "--login-image",
            node.operator_image(),
            "--chromium-image",
            "dhan-operator.test/no-such-image:bed",
            "--login-timeout",
            "10s",
        ],
        &[],
    ));
    let recorder = Recorder::start(bed.client.clone(), &bed.ns);
    api_key_client(&bed, CLIENT, "dora-dhan", PIN).await;
    bed.create_account("dora", browser_spec(CLIENT, "dora-dhan"))
        .await;

    // Not the first reconcile's Backoff, which may come before the operator's first heartbeat.
    let account = bed
        .wait_status("dora", LOGIN_WAIT, |s| {
            s.phase == Some(Phase::Backoff) && s.failed_attempts.is_some()
        })
        .await;
    let status = account.status.unwrap();
    // The login's own report: it timed out reaching Chromium (the sidecar never started).
    assert_eq!(status.last_failure_reason.as_deref(), Some("LoginTimeout"));
    assert_eq!(
        status.failed_attempts,
        Some(1),
        "{status:?}\n{}",
        bed.operator().output()
    );
    let message = status.message.unwrap();
    assert!(
        message.contains("timed out at the Chromium connection step"),
        "the login's own account of it: {message}"
    );
    assert_eq!(bed.ready_condition("dora").await.as_deref(), Some("False"));

    // The login's own result counted at once; the Job itself runs on (the sidecar waits for
    // its image) until activeDeadlineSeconds ends it.
    let created = |job: &Job| {
        job.metadata
            .creation_timestamp
            .as_ref()
            .unwrap()
            .0
            .as_second()
    };
    let jobs = support::wait_for(Duration::from_secs(90), || async {
        let mut jobs = recorder.jobs();
        jobs.sort_by_key(created);
        condition(jobs.first()?, "Failed").is_some().then_some(jobs)
    })
    .await;
    if let Some(second) = jobs.get(1) {
        // The retry may race the first Job's deadline, but never comes before the backoff.
        assert!(
            created(second) - created(&jobs[0]) >= 60,
            "a retry before the backoff"
        );
    }
    let (reason, _) = condition(&jobs[0], "Failed").expect("the Job failed");
    assert_eq!(reason, "DeadlineExceeded");
    assert_eq!(
        jobs[0].spec.as_ref().unwrap().active_deadline_seconds,
        Some(70)
    );
    let pods = recorder.pods_of(&jobs[0].name_any());
    assert_eq!(pods.len(), 1);
    let waiting = container(&pods[0], "chromium")
        .state
        .as_ref()
        .and_then(|s| s.waiting.as_ref())
        .and_then(|w| w.reason.clone());
    assert!(
        matches!(
            waiting.as_deref(),
            Some("ErrImagePull" | "ImagePullBackOff")
        ),
        "the sidecar never started: {waiting:?}"
    );
    let login = container(&pods[0], "login")
        .state
        .as_ref()
        .and_then(|s| s.terminated.clone())
        .expect("the login container ended");
    assert_ne!(login.exit_code, 0);
    // One consent per login Job and none besides: a retry after the backoff (checked above)
    // spends its own, generated just before its Job is created.
    let consents = bed.mock.calls_to("generate-consent", CLIENT).await.len();
    let started = recorder.jobs().len();
    assert!(
        (1..=started + 1).contains(&consents),
        "{consents} consents for {started} login Jobs"
    );
}

#[tokio::test]
async fn a_refused_login_ends_its_job_at_once_with_the_sidecar_closed() {
    const CLIENT: &str = "1500000004";
    let bed = bed(Some(&[])).await;
    let recorder = Recorder::start(bed.client.clone(), &bed.ns);
    api_key_client(&bed, CLIENT, "fred-dhan", "999111").await;
    bed.create_account("fred", browser_spec(CLIENT, "fred-dhan"))
        .await;

    let account = bed.wait_phase_for("fred", Phase::Failed, LOGIN_WAIT).await;
    let status = account.status.unwrap();
    assert_eq!(status.last_failure_reason.as_deref(), Some("InvalidPin"));
    // The operator reads the login container's result as soon as it ends; the Job controller
    // marks the Job a moment later.
    let jobs = support::wait_for(Duration::from_secs(30), || async {
        let jobs = recorder.jobs();
        jobs.iter()
            .any(|job| condition(job, "Failed").is_some())
            .then_some(jobs)
    })
    .await;
    assert_eq!(jobs.len(), 1);
    let (reason, _) = condition(&jobs[0], "Failed").expect("the Job failed");
    assert_eq!(
        reason, "BackoffLimitExceeded",
        "failed by the login, not the deadline"
    );
    let pods = recorder.pods_of(&jobs[0].name_any());
    assert_eq!(pods.len(), 1, "backoffLimit 0: no second Pod");
    let login = container(&pods[0], "login")
        .state
        .as_ref()
        .and_then(|s| s.terminated.clone())
        .expect("the login container ended");
    assert_ne!(login.exit_code, 0);
    let message = login.message.unwrap_or_default();
    match dhan_operator::browser::report::LoginReport::parse(&message) {
        Ok(dhan_operator::browser::report::LoginReport::Failed(failure)) => {
            assert_eq!(failure.to_string(), "PIN rejected: Invalid PIN");
            assert!(failure.reached_credential_step);
        }
        other => panic!("{message}: {other:?}"),
    }
    // A failed login closes the browser too, so the Pod ends without waiting for its deadline.
    assert_ran_and_completed(&pods[0], "chromium");
    let codes = recent_codes();
    let mut secrets = vec![APP_SECRET, PIN, "999111", MOBILE, TOTP_SECRET];
    secrets.extend(codes.iter().map(String::as_str));
    bed.assert_nothing_leaks(&secrets).await;
}

/// A login Job whose result nobody collects (the operator gone): `ttlSecondsAfterFinished`
/// removes it and its Pod. The operator's Job, with the TTL shortened.
#[tokio::test]
async fn a_finished_login_job_nobody_collects_is_removed_by_its_ttl() {
    const CLIENT: &str = "1500000003";
    let bed = bed(None).await;
    let recorder = Recorder::start(bed.client.clone(), &bed.ns);
    api_key_client(&bed, CLIENT, "erin-dhan", PIN).await;
    let account = bed
        .create_account("erin", browser_spec(CLIENT, "erin-dhan"))
        .await;
    let http = reqwest::Client::new();
    let consent: Value = http
        .post(format!(
            "{}/app/generate-consent?client_id={CLIENT}",
            bed.mock.url
        ))
        .header("app_id", APP_ID)
        .header("app_secret", APP_SECRET)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let login_url = format!(
        "{}/login/consentApp-login?consentAppId={}",
        bed.mock.url,
        consent["consentAppId"].as_str().unwrap()
    );
    let node = node();
    let settings = dhan_operator::controller::login_job::LoginJobSettings::new(
        node.operator_image(),
        node.chromium_image(),
        Duration::from_secs(60),
    );
    let consent_id = consent["consentAppId"].as_str().unwrap();
    let mut job = dhan_operator::controller::login_job::login_job(
        &account,
        &dhan_operator::controller::login::job_name(&account, consent_id),
        &login_url,
        None,
        dhan_operator::decision::RefreshReason::NoToken,
        &settings,
    );
    job.spec.as_mut().unwrap().ttl_seconds_after_finished = Some(5);
    let jobs: Api<Job> = Api::namespaced(bed.client.clone(), &bed.ns);
    let job = jobs.create(&PostParams::default(), &job).await.unwrap();
    let name = job.name_any();

    // Complete, then gone with its Pod.
    let pods: Api<Pod> = Api::namespaced(bed.client.clone(), &bed.ns);
    wait_for(LOGIN_WAIT, || async {
        let completed = recorder
            .jobs()
            .iter()
            .any(|j| condition(j, "Complete").is_some());
        let job_gone = jobs.get_opt(&name).await.ok()?.is_none();
        let pods_left = pods
            .list(&kube::api::ListParams::default().labels(&format!("job-name={name}")))
            .await
            .ok()?
            .items
            .len();
        (completed && job_gone && pods_left == 0).then_some(())
    })
    .await;

    // The tokenId is where the operator reads it: the login container's termination message,
    // and Dhan takes it with the app's credentials.
    let recorded = recorder.pods_of(&name);
    assert_eq!(recorded.len(), 1);
    let message = assert_ran_and_completed(&recorded[0], "login");
    assert_ran_and_completed(&recorded[0], "chromium");
    let Ok(dhan_operator::browser::report::LoginReport::LoggedIn(token_id)) =
        dhan_operator::browser::report::LoginReport::parse(&message)
    else {
        panic!("the termination message is a login report with a tokenId");
    };
    let consumed: Value = http
        .get(format!(
            "{}/app/consumeApp-consent?tokenId={}",
            bed.mock.url,
            token_id.expose()
        ))
        .header("app_id", APP_ID)
        .header("app_secret", APP_SECRET)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        consumed["accessToken"]
            .as_str()
            .is_some_and(|t| !t.is_empty()),
        "the termination message is a tokenId Dhan accepts: {consumed}"
    );
}
