//! The `browser` method's bookkeeping on the real control plane: the operator generates a consent
//! and creates a login Job; the test harness plays the kubelet by running the Job's `login`
//! container command against a local headless Chromium and `dhan-mock`'s login page, then
//! recording the Pod's termination message and the Job's completion; the operator consumes the
//! consent and writes the token. The played kubelet can hold Jobs unfinished on cue (the login
//! cap, a Job deleted midway, a Job followed after a restart); `real_node.rs` runs login Jobs on a
//! real kubelet and containerd.

mod support;

use dhan_operator::browser::{FailureClass, LoginReport, Step};
use dhan_operator::crd::Phase;
use dhan_operator::dhan::TotpKey;
use dhan_operator::dhan::totp::step_at;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::{Value, json};
use std::time::Duration;
use support::{Bed, Kubelet, MockDhan, wait_for};

const APP_ID: &str = "app-e2e-browser";
const APP_SECRET: &str = "app-secret-e2e-9f3k2";
const MOBILE: &str = "9812345670";
const PIN: &str = "274851";
const TOTP_SECRET: &str = "KRUGKIDROVUWG2ZAMJZG653OEBTG66BA";
/// A browser login, Chromium start included, takes a few seconds; leave room on a busy machine.
const LOGIN_WAIT: Duration = Duration::from_secs(120);

/// Operator flags for browser logins; the images are never pulled here.
const BROWSER_FLAGS: &[&str] = &[
    "--browser-logins",
    "--login-image",
    "registry.test/dhan-operator:e2e",
    "--chromium-image",
    "registry.test/headless-shell:e2e",
    "--login-timeout",
    "60s",
];

async fn bed_with(mock_args: &[&str], operator_args: &[&str]) -> Bed {
    let mut bed = Bed::without_operator("browser").await;
    if !mock_args.is_empty() {
        bed.mock = MockDhan::start(mock_args).await;
    }
    let mut args = BROWSER_FLAGS.to_vec();
    args.extend_from_slice(operator_args);
    bed.operator = Some(bed.spawn_operator(&args, &[]));
    bed
}

/// A client at the mock with a Dhan app, and its credentials in two Secrets: the team's app and
/// the person's login details.
async fn api_key_client(bed: &Bed, client_id: &str, secret: &str, pin: &str) {
    bed.mock
        .register(json!({
            "clientId": client_id,
            "pin": PIN,
            "totpSecret": TOTP_SECRET,
            "mobile": format!("+91{MOBILE}"),
            "apps": [{
                "appId": APP_ID,
                "appSecret": APP_SECRET,
                "redirectUrl": "https://example.invalid/callback",
            }],
            "loginOrder": "totp-first",
            "loginInputs": "boxes",
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

fn jobs(bed: &Bed) -> Api<Job> {
    Api::namespaced(bed.client.clone(), &bed.ns)
}

/// TOTP codes around now: what a login may have typed.
fn recent_codes() -> Vec<String> {
    let key = TotpKey::parse(TOTP_SECRET).unwrap();
    let now = step_at(chrono::Utc::now());
    (now.saturating_sub(6)..=now + 1)
        .map(|step| key.code_for_step(step))
        .collect()
}

/// A NetworkPolicy of the operator fences the Job's Pods: it selects them, lets nothing in, and
/// lets out only DNS and HTTPS outside the metadata, link-local and private ranges.
async fn assert_fenced(bed: &Bed, job: &Job) {
    let pod_labels = job
        .spec
        .as_ref()
        .and_then(|s| s.template.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let policies: Api<NetworkPolicy> = Api::namespaced(bed.client.clone(), &bed.ns);
    let listed = policies.list(&ListParams::default()).await.unwrap().items;
    let fence = listed
        .iter()
        .find(|p| {
            let selector = p.spec.as_ref().and_then(|s| s.pod_selector.as_ref());
            let wanted = selector
                .and_then(|s| s.match_labels.clone())
                .unwrap_or_default();
            !wanted.is_empty() && wanted.iter().all(|(k, v)| pod_labels.get(k) == Some(v))
        })
        .unwrap_or_else(|| panic!("no NetworkPolicy selects the Pods of {}", job.name_any()));
    let fence = serde_json::to_value(fence).unwrap();
    assert_eq!(
        fence["metadata"]["ownerReferences"][0]["kind"],
        "DhanAccount"
    );
    let spec = &fence["spec"];
    assert_eq!(spec["policyTypes"], json!(["Ingress", "Egress"]));
    assert!(
        spec["ingress"].as_array().is_none_or(|i| i.is_empty()),
        "{spec}"
    );
    let egress = spec["egress"].as_array().unwrap();
    let ports: Vec<i64> = egress
        .iter()
        .flat_map(|r| r["ports"].as_array().unwrap().iter())
        .map(|p| p["port"].as_i64().unwrap())
        .collect();
    assert_eq!(ports, [53, 53, 443], "{spec}");
    let https = egress
        .iter()
        .find(|r| r["ports"][0]["port"] == 443)
        .unwrap();
    let except = https["to"][0]["ipBlock"]["except"].to_string();
    for blocked in ["169.254.0.0/16", "10.0.0.0/8"] {
        assert!(except.contains(blocked), "{blocked} not blocked: {spec}");
    }
}

/// The login Job as the operator created it: hardened, single-shot, owned by the account, with
/// credentials only as Secret references and nothing of the app's.
fn assert_hardened(job: &Job) {
    let text = serde_json::to_string(job).unwrap();
    for secret in [APP_ID, APP_SECRET, PIN, MOBILE, TOTP_SECRET, "team-app"] {
        assert!(!text.contains(secret), "the login Job carries {secret:?}");
    }
    let job = serde_json::to_value(job).unwrap();
    let spec = &job["spec"];
    assert_eq!(spec["backoffLimit"], 0);
    assert_eq!(spec["activeDeadlineSeconds"], 120, "login timeout + 60 s");
    assert!(spec["ttlSecondsAfterFinished"].as_i64().unwrap() > 0);
    let owner = &job["metadata"]["ownerReferences"][0];
    assert_eq!(owner["kind"], "DhanAccount");
    assert_eq!(owner["controller"], true);
    let pod = &spec["template"]["spec"];
    assert_eq!(pod["automountServiceAccountToken"], false);
    assert_eq!(pod["restartPolicy"], "Never");
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    let shm = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "shm")
        .expect("a /dev/shm volume");
    assert_eq!(shm["emptyDir"]["medium"], "Memory");
    let containers = pod["containers"].as_array().unwrap();
    let names: Vec<&str> = containers
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["login", "chromium"]);
    for container in containers {
        let sc = &container["securityContext"];
        assert_eq!(sc["readOnlyRootFilesystem"], true, "{}", container["name"]);
        assert_eq!(sc["allowPrivilegeEscalation"], false);
        assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]));
        assert!(container["resources"]["limits"]["memory"].is_string());
        assert!(container["resources"]["limits"]["cpu"].is_string());
    }
    assert_eq!(containers[0]["image"], "registry.test/dhan-operator:e2e");
    assert_eq!(containers[0]["args"], json!(["browser-login"]));
    assert_eq!(containers[1]["image"], "registry.test/headless-shell:e2e");
    let env = containers[0]["env"].as_array().unwrap();
    for (name, key) in [
        ("DHAN_MOBILE", "mobile"),
        ("DHAN_PIN", "pin"),
        ("DHAN_TOTP_SECRET", "totpSecret"),
    ] {
        let var = env.iter().find(|e| e["name"] == name).expect(name);
        assert_eq!(var["valueFrom"]["secretKeyRef"]["key"], key, "{name}");
        assert!(var.get("value").is_none(), "{name} is never a literal");
    }
    let url = env.iter().find(|e| e["name"] == "DHAN_LOGIN_URL").unwrap();
    assert!(
        url["value"]
            .as_str()
            .unwrap()
            .contains("/login/consentApp-login?consentAppId="),
        "{url}"
    );
}

#[tokio::test]
async fn api_key_account_logs_in_through_a_job_and_becomes_ready() {
    const CLIENT: &str = "1400000001";
    let bed = bed_with(&[], &[]).await;
    let kubelet = Kubelet::start(bed.client.clone(), &bed.ns);
    kubelet.pause();
    api_key_client(&bed, CLIENT, "carol-dhan", PIN).await;
    bed.create_account("carol", browser_spec(CLIENT, "carol-dhan"))
        .await;

    let account = bed
        .wait_status("carol", LOGIN_WAIT, |s| s.login.is_some())
        .await;
    let status = account.status.unwrap();
    assert_eq!(status.phase, Some(Phase::WaitingForLogin));
    assert_eq!(status.consents.as_ref().map(|c| c.count), Some(1));
    let job_name = status.login.unwrap().job_name;
    let job = jobs(&bed).get(&job_name).await.unwrap();
    assert_hardened(&job);
    assert_fenced(&bed, &job).await;
    assert_eq!(
        bed.ready_condition("carol").await.as_deref(),
        Some("False"),
        "no token yet"
    );
    let url = wait_for(Duration::from_secs(10), || async {
        support::metrics_url(&bed.operator().output())
    })
    .await;
    let scrape = || async { reqwest::get(&url).await.unwrap().text().await.unwrap() };
    wait_for(Duration::from_secs(20), || async {
        scrape()
            .await
            .contains("dhan_operator_login_jobs_running 1")
            .then_some(())
    })
    .await;

    kubelet.resume();
    let account = bed.wait_phase_for("carol", Phase::Ready, LOGIN_WAIT).await;
    let status = account.status.unwrap();
    assert_eq!(status.method.as_deref(), Some("browser"));
    assert!(status.login.is_none());
    assert_eq!(status.consents.as_ref().map(|c| c.count), Some(1));
    let token = bed.token_in_secret("carol-token").await;
    let at_dhan = bed.mock.account(CLIENT).await;
    assert_eq!(
        at_dhan["currentToken"],
        token.as_str(),
        "the token Dhan issued"
    );
    assert_eq!(at_dhan["consentLogins"], 1);
    assert_eq!(bed.ready_condition("carol").await.as_deref(), Some("True"));

    let runs = kubelet.runs();
    assert_eq!(runs.len(), 1, "one login Job");
    assert_eq!(runs[0].exit_code, 0, "{}", runs[0].output);
    let token_id = match LoginReport::parse(&runs[0].termination_message).unwrap() {
        LoginReport::LoggedIn(token_id) => token_id.expose().to_owned(),
        other => panic!("{other:?}"),
    };
    // The finished Job is cleaned up.
    wait_for(Duration::from_secs(30), || {
        let jobs = jobs(&bed);
        let name = job_name.clone();
        async move { jobs.get_opt(&name).await.unwrap().is_none().then_some(()) }
    })
    .await;
    let labels = format!(
        "namespace=\"{}\",name=\"carol\",client_id=\"{CLIENT}\"",
        bed.ns
    );
    let text = wait_for(Duration::from_secs(20), || async {
        let text = scrape().await;
        text.contains("dhan_operator_login_jobs_running 0")
            .then_some(text)
    })
    .await;
    for series in [
        format!("dhan_operator_account_consents_today{{{labels}}} 1"),
        "dhan_operator_dhan_calls_total{endpoint=\"generate-consent\",outcome=\"Success\"} 1"
            .into(),
        "dhan_operator_dhan_calls_total{endpoint=\"consumeApp-consent\",outcome=\"Success\"} 1"
            .into(),
        "dhan_operator_refresh_duration_seconds_count{method=\"browser\"} 1".into(),
    ] {
        assert!(text.contains(&series), "{series} in\n{text}");
    }
    for reason in ["LoginStarted", "Refreshed"] {
        bed.wait_event(reason).await;
    }
    let codes = recent_codes();
    let mut secrets = vec![APP_SECRET, PIN, MOBILE, TOTP_SECRET, &token, &token_id];
    secrets.extend(codes.iter().map(String::as_str));
    bed.assert_nothing_leaks(&secrets).await;
}

#[tokio::test]
async fn a_refused_login_fails_once_and_retries_only_after_the_credentials_change() {
    const CLIENT: &str = "1400000002";
    let bed = bed_with(&[], &[]).await;
    let kubelet = Kubelet::start(bed.client.clone(), &bed.ns);
    api_key_client(&bed, CLIENT, "dave-dhan", "999111").await;
    bed.create_account("dave", browser_spec(CLIENT, "dave-dhan"))
        .await;

    let account = bed.wait_phase_for("dave", Phase::Failed, LOGIN_WAIT).await;
    let status = account.status.unwrap();
    assert_eq!(status.last_failure_reason.as_deref(), Some("InvalidPin"));
    let message = status.message.unwrap();
    assert!(message.contains("PIN rejected: Invalid PIN"), "{message}");
    assert!(message.contains("not retrying until"), "{message}");
    // The step and the page's words, in an event (published after the status write, so waited
    // for) and in the Job's typed termination message.
    wait_for(Duration::from_secs(20), || async {
        bed.events().await.into_iter().find(|e| {
            e.message
                .as_deref()
                .is_some_and(|m| m.contains("PIN rejected: Invalid PIN"))
        })
    })
    .await;
    let run = kubelet.runs().remove(0);
    match LoginReport::parse(&run.termination_message).expect("a typed report") {
        LoginReport::Failed(failure) => {
            assert_eq!(
                (failure.step, failure.class),
                (Step::Pin, FailureClass::Pin)
            );
            assert!(failure.reached_credential_step);
        }
        other => panic!("{other:?}"),
    }
    let failed_job = jobs(&bed).get(&run.job).await.unwrap();
    assert_fenced(&bed, &failed_job).await;

    // No loop of Jobs and consents.
    tokio::time::sleep(Duration::from_secs(15)).await;
    assert_eq!(kubelet.jobs_seen().len(), 1, "{:?}", kubelet.jobs_seen());
    assert_eq!(bed.mock.calls_to("generate-consent", CLIENT).await.len(), 1);
    assert_eq!(bed.status("dave").await.phase, Some(Phase::Failed));

    // The failed Job typed a TOTP code: the next login must use a later step (docs/dhan-api.md §1:
    // a reused step is rejected as a replay), so it gets the last step the Job could have used.
    let last_step = bed
        .status("dave")
        .await
        .last_totp_step
        .expect("last TOTP step recorded");

    // The right PIN brings it back.
    bed.put_secret(
        "dave-dhan",
        &[
            ("mobile", MOBILE),
            ("pin", PIN),
            ("totpSecret", TOTP_SECRET),
        ],
    )
    .await;
    let account = bed.wait_phase_for("dave", Phase::Ready, LOGIN_WAIT).await;
    assert_eq!(account.status.unwrap().consents.map(|c| c.count), Some(2));
    assert_eq!(kubelet.jobs_seen().len(), 2);
    // Each login's TOTP submission, as a 30-second step.
    let totp_steps: Vec<u64> = bed
        .mock
        .calls_to("login-totp", CLIENT)
        .await
        .iter()
        .map(|c| c["at"].as_u64().expect("call has `at`") / 1000 / 30)
        .collect();
    assert_eq!(totp_steps.len(), 2, "{totp_steps:?}");
    assert!(
        totp_steps[0] <= last_step && last_step < totp_steps[1],
        "the second login waited for a fresh step: {totp_steps:?}, last {last_step}"
    );
    let codes = recent_codes();
    let mut secrets = vec![APP_SECRET, PIN, "999111", MOBILE, TOTP_SECRET];
    secrets.extend(codes.iter().map(String::as_str));
    bed.assert_nothing_leaks(&secrets).await;
}

#[tokio::test]
async fn login_jobs_never_exceed_the_cap() {
    let bed = bed_with(&[], &["--max-concurrent-login-jobs", "1"]).await;
    let kubelet = Kubelet::start(bed.client.clone(), &bed.ns);
    kubelet.pause();
    api_key_client(&bed, "1400000003", "erin-dhan", PIN).await;
    api_key_client(&bed, "1400000004", "fred-dhan", PIN).await;
    bed.create_account("erin", browser_spec("1400000003", "erin-dhan"))
        .await;
    bed.create_account("fred", browser_spec("1400000004", "fred-dhan"))
        .await;

    // One runs, the other waits for the slot without spending a consent.
    let waiting = wait_for(LOGIN_WAIT, || {
        let accounts = bed.accounts();
        async move {
            let list = accounts.list(&ListParams::default()).await.ok()?.items;
            let statuses: Vec<_> = list.iter().filter_map(|a| a.status.clone()).collect();
            let running = statuses.iter().filter(|s| s.login.is_some()).count();
            let queued = statuses.iter().find(|s| {
                s.login.is_none()
                    && s.phase == Some(Phase::WaitingForLogin)
                    && s.message
                        .as_deref()
                        .is_some_and(|m| m.contains("free login slot"))
            })?;
            (running == 1).then(|| queued.clone())
        }
    })
    .await;
    assert!(waiting.consents.is_none(), "no consent spent while queued");
    tokio::time::sleep(Duration::from_secs(12)).await;
    let listed = jobs(&bed).list(&ListParams::default()).await.unwrap().items;
    assert_eq!(listed.len(), 1, "one login Job at a time");

    kubelet.resume();
    bed.wait_phase_for("erin", Phase::Ready, LOGIN_WAIT).await;
    bed.wait_phase_for("fred", Phase::Ready, LOGIN_WAIT).await;
    assert_eq!(kubelet.jobs_seen().len(), 2);
    assert!(
        kubelet.max_concurrent() <= 1,
        "at most one login Job existed at once"
    );
}

#[tokio::test]
async fn consent_limit_waits_for_the_next_ist_day() {
    const CLIENT: &str = "1400000005";
    // Dhan's side: the mock refuses every consent today.
    let bed = bed_with(
        &["--mint-throttle-seconds", "3", "--consent-limit", "0"],
        &[],
    )
    .await;
    let kubelet = Kubelet::start(bed.client.clone(), &bed.ns);
    api_key_client(&bed, CLIENT, "gina-dhan", PIN).await;
    bed.create_account("gina", browser_spec(CLIENT, "gina-dhan"))
        .await;
    let account = bed.wait_phase("gina", Phase::Backoff).await;
    let status = account.status.unwrap();
    assert_eq!(
        status.last_failure_reason.as_deref(),
        Some("ConsentLimitExceeded")
    );
    let midnight = dhan_operator::dhan::ist::next_ist_midnight(chrono::Utc::now());
    assert_eq!(status.next_refresh_time, Some(midnight));
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(kubelet.jobs_seen().is_empty(), "no login without a consent");
    assert_eq!(
        bed.mock.calls_to("generate-consent", CLIENT).await.len(),
        1,
        "asked once, then waits for the next day"
    );
}

#[tokio::test]
async fn operator_counts_consents_and_stops_at_25_a_day() {
    const CLIENT: &str = "1400000006";
    let mut bed = Bed::without_operator("browser").await;
    api_key_client(&bed, CLIENT, "hank-dhan", PIN).await;
    bed.create_account("hank", browser_spec(CLIENT, "hank-dhan"))
        .await;
    // 25 consents already spent today, as a previous run of the operator recorded them.
    let today = dhan_operator::decision::memory::ist_day(chrono::Utc::now());
    bed.accounts()
        .patch_status(
            "hank",
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": { "consents": { "day": today, "count": 25 } } })),
        )
        .await
        .unwrap();
    bed.operator = Some(bed.spawn_operator(BROWSER_FLAGS, &[]));

    let account = bed.wait_phase("hank", Phase::Backoff).await;
    let status = account.status.unwrap();
    assert_eq!(
        status.last_failure_reason.as_deref(),
        Some("ConsentLimitExceeded")
    );
    let message = status.message.unwrap();
    assert!(message.contains("25 of 25 consents"), "{message}");
    let midnight = dhan_operator::dhan::ist::next_ist_midnight(chrono::Utc::now());
    assert_eq!(status.next_refresh_time, Some(midnight));
    assert!(
        bed.mock
            .calls_to("generate-consent", CLIENT)
            .await
            .is_empty(),
        "the operator's own count stops it before Dhan has to"
    );
}

#[tokio::test]
async fn a_failed_login_job_backs_off_and_the_next_one_succeeds() {
    const CLIENT: &str = "1400000007";
    let bed = bed_with(&[], &[]).await;
    let kubelet = Kubelet::start(bed.client.clone(), &bed.ns);
    api_key_client(&bed, CLIENT, "ivan-dhan", PIN).await;
    // The login page is down once.
    bed.mock
        .fault(json!({ "endpoint": "consentApp-login", "kind": "http502", "count": 1 }))
        .await;
    bed.create_account("ivan", browser_spec(CLIENT, "ivan-dhan"))
        .await;

    let account = bed.wait_phase_for("ivan", Phase::Backoff, LOGIN_WAIT).await;
    let status = account.status.unwrap();
    assert_eq!(
        status.last_failure_reason.as_deref(),
        Some("LoginPageUnavailable"),
        "the login report's class, typed through to the status"
    );
    assert_eq!(status.failed_attempts, Some(1));
    let message = status.message.unwrap();
    assert!(message.contains("browser login failed"), "{message}");
    // A minute's backoff, then a second login that works.
    let account = bed
        .wait_phase_for("ivan", Phase::Ready, Duration::from_secs(150))
        .await;
    assert_eq!(account.status.unwrap().method.as_deref(), Some("browser"));
    let runs = kubelet.runs();
    assert_eq!(runs.len(), 2, "one failed and one good login Job");
    assert_ne!(runs[0].exit_code, 0);
    assert_eq!(runs[1].exit_code, 0);
}

#[tokio::test]
async fn a_login_job_deleted_midway_backs_off_and_keeps_the_slot_free() {
    const CLIENT: &str = "1400000008";
    let bed = bed_with(&[], &["--max-concurrent-login-jobs", "1"]).await;
    let kubelet = Kubelet::start(bed.client.clone(), &bed.ns);
    kubelet.pause();
    api_key_client(&bed, CLIENT, "judy-dhan", PIN).await;
    bed.create_account("judy", browser_spec(CLIENT, "judy-dhan"))
        .await;
    let account = bed
        .wait_status("judy", LOGIN_WAIT, |s| s.login.is_some())
        .await;
    let job_name = account.status.unwrap().login.unwrap().job_name;
    // As `kubectl delete job` does it.
    let background = kube::api::DeleteParams {
        propagation_policy: Some(kube::api::PropagationPolicy::Background),
        ..Default::default()
    };
    jobs(&bed).delete(&job_name, &background).await.unwrap();

    let account = bed.wait_phase("judy", Phase::Backoff).await;
    let status = account.status.unwrap();
    assert!(status.login.is_none());
    assert_eq!(status.last_failure_reason.as_deref(), Some("LoginFailed"));
    let message = status.message.unwrap();
    assert!(
        message.contains("was deleted before it finished"),
        "{message}"
    );
    // The slot was given back: after the backoff the next login starts and succeeds.
    kubelet.resume();
    bed.wait_phase_for("judy", Phase::Ready, Duration::from_secs(150))
        .await;
    assert_eq!(kubelet.runs().len(), 1, "only the second Job ran");
    assert_eq!(bed.mock.calls_to("generate-consent", CLIENT).await.len(), 2);
}

#[tokio::test]
async fn a_running_login_job_missing_from_status_is_followed_not_repeated() {
    const CLIENT: &str = "1400000009";
    let mut bed = Bed::without_operator("browser").await;
    api_key_client(&bed, CLIENT, "kate-dhan", PIN).await;
    let account = bed
        .create_account("kate", browser_spec(CLIENT, "kate-dhan"))
        .await;
    // A previous operator generated a consent and created the Job, then died before writing
    // status.
    let consent: Value = reqwest::Client::new()
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
    let settings = dhan_operator::controller::login_job::LoginJobSettings::new(
        "registry.test/dhan-operator:e2e",
        "registry.test/headless-shell:e2e",
        Duration::from_secs(60),
    );
    let consent_id = consent["consentAppId"].as_str().unwrap();
    let job = dhan_operator::controller::login_job::login_job(
        &account,
        &dhan_operator::controller::login::job_name(&account, consent_id),
        &login_url,
        None,
        dhan_operator::decision::RefreshReason::NoToken,
        &settings,
    );
    let job = jobs(&bed).create(&Default::default(), &job).await.unwrap();
    let kubelet = Kubelet::start(bed.client.clone(), &bed.ns);
    kubelet.pause();
    bed.operator = Some(bed.spawn_operator(BROWSER_FLAGS, &[]));

    let account = bed
        .wait_status("kate", LOGIN_WAIT, |s| s.login.is_some())
        .await;
    assert_eq!(
        account.status.unwrap().login.unwrap().job_name,
        job.metadata.name.unwrap(),
        "the running Job is followed"
    );
    kubelet.resume();
    bed.wait_phase_for("kate", Phase::Ready, LOGIN_WAIT).await;
    assert_eq!(
        bed.mock.calls_to("generate-consent", CLIENT).await.len(),
        1,
        "no second consent"
    );
    assert_eq!(kubelet.runs().len(), 1);
}

/// Chromium does not exit after the login (its Job would run into its deadline and be marked
/// Failed): the `login` container's own result counts as soon as it has terminated.
#[tokio::test]
async fn a_login_counts_as_soon_as_its_container_ends_even_if_chromium_never_exits() {
    const CLIENT: &str = "1400000010";
    let bed = bed_with(&[], &[]).await;
    let kubelet = Kubelet::start(bed.client.clone(), &bed.ns);
    kubelet.sidecar_never_exits();
    api_key_client(&bed, CLIENT, "lena-dhan", PIN).await;
    bed.create_account("lena", browser_spec(CLIENT, "lena-dhan"))
        .await;
    let account = bed
        .wait_status("lena", LOGIN_WAIT, |s| s.login.is_some())
        .await;
    let job_name = account.status.unwrap().login.unwrap().job_name;
    // Well inside the Job's deadline (login timeout + 60 s, and a minute's grace on top).
    let account = bed.wait_phase_for("lena", Phase::Ready, LOGIN_WAIT).await;
    assert_eq!(account.status.unwrap().method.as_deref(), Some("browser"));
    let runs = kubelet.runs();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].exit_code, 0, "{}", runs[0].output);
    // The Job never completed; the operator removes it (and with it the hung sidecar) once
    // REAP_AFTER (30 s) has passed since the token was taken.
    wait_for(Duration::from_secs(60), || {
        let jobs = jobs(&bed);
        let name = job_name.clone();
        async move { jobs.get_opt(&name).await.unwrap().is_none().then_some(()) }
    })
    .await;
}
