use super::*;
use crate::controller::login_pod::LoginPodOptions;
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
            credentials: Some(Box::new(CredentialSources {
                api_secret: Some(SecretKeyRef {
                    secret_name: "team-app".into(),
                    key: "secret".into(),
                }),
                ..Default::default()
            })),
            methods: Some(vec!["browser".into()]),
            ..Default::default()
        },
        status: None,
    }
}

fn job_json() -> Value {
    job_with("")
}

#[test]
fn long_account_names_still_give_valid_labels() {
    let mut account = account();
    account.metadata.name = Some(format!("{}.x-{}", "a".repeat(39), "b".repeat(80)));
    let settings = LoginJobSettings::new("op:1", "chromium:1", Duration::from_secs(120));
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

fn chromium(job: &Value) -> Value {
    job["spec"]["template"]["spec"]["containers"][1].clone()
}

#[test]
fn chromium_runs_its_binary_on_loopback_without_its_sandbox_under_runtime_default() {
    let job = job_json();
    let chromium = chromium(&job);
    assert_eq!(
        chromium["command"],
        json!(["/headless-shell/headless-shell"])
    );
    let args: Vec<&str> = chromium["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert!(args.contains(&"--no-sandbox"), "{args:?}");
    assert!(args.contains(&"--remote-debugging-address=127.0.0.1"));
    assert!(chromium["securityContext"].get("seccompProfile").is_none());
    let pod = &job["spec"]["template"]["spec"];
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    assert_eq!(
        job["spec"]["template"]["metadata"]["labels"][COMPONENT_LABEL],
        COMPONENT
    );
}

#[test]
fn with_a_seccomp_profile_chromium_keeps_its_sandbox() {
    let mut settings = LoginJobSettings::new("op:1", "chromium:1", Duration::from_secs(120));
    settings.chromium_seccomp_profile = Some("profiles/chromium.json".into());
    settings.chromium_command = String::new();
    let job = serde_json::to_value(login_job(
        &account(),
        "alice-login-1",
        "https://a/l",
        None,
        RefreshReason::NoToken,
        &settings,
    ))
    .unwrap();
    let chromium = chromium(&job);
    assert!(!chromium["args"].to_string().contains("--no-sandbox"));
    assert_eq!(
        chromium["securityContext"]["seccompProfile"],
        json!({"type": "Localhost", "localhostProfile": "profiles/chromium.json"})
    );
    assert!(chromium.get("command").is_none(), "the image's entrypoint");
}

#[test]
fn the_login_gets_the_allow_list_and_an_optional_password() {
    let job = job_json();
    let env = job["spec"]["template"]["spec"]["containers"][0]["env"].clone();
    let var = |name: &str| {
        env.as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("{name}"))
    };
    assert_eq!(var("DHAN_LOGIN_ALLOWED_HOSTS")["value"], "*.dhan.co");
    assert_eq!(
        var("DHAN_PASSWORD")["valueFrom"]["secretKeyRef"],
        json!({"name": "alice-dhan", "key": "password", "optional": true})
    );
}

const OPTIONS: &str = r#"
imagePullSecrets: [{name: regcred}]
nodeSelector: {pool: logins}
tolerations: [{key: dedicated, operator: Equal, value: logins, effect: NoSchedule}]
affinity:
  nodeAffinity:
    requiredDuringSchedulingIgnoredDuringExecution:
      nodeSelectorTerms: [{matchExpressions: [{key: zone, operator: In, values: [a]}]}]
priorityClassName: trading-high
labels: {team: quant}
annotations: {cost-centre: "42"}
resources:
  chromium: {requests: {cpu: 250m, memory: 256Mi}, limits: {memory: 1Gi}}
proxy: {url: "http://proxy.corp:3128", noProxy: "internal.corp", cidrs: [10.20.0.0/16]}
"#;

fn job_with(options: &str) -> Value {
    let mut settings = LoginJobSettings::new("op:1", "chromium:1", Duration::from_secs(120));
    settings.pod = LoginPodOptions::parse(options).unwrap();
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
fn login_pod_options_reach_the_job_and_leave_the_operators_own_settings_alone() {
    let job = job_with(OPTIONS);
    let plain = job_json();
    let pod = &job["spec"]["template"]["spec"];
    assert_eq!(pod["imagePullSecrets"], json!([{ "name": "regcred" }]));
    assert_eq!(pod["nodeSelector"], json!({ "pool": "logins" }));
    assert_eq!(pod["tolerations"][0]["key"], "dedicated");
    assert_eq!(
        pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
            [0]["matchExpressions"][0]["values"],
        json!(["a"])
    );
    assert_eq!(pod["priorityClassName"], "trading-high");
    for meta in [&job["metadata"], &job["spec"]["template"]["metadata"]] {
        assert_eq!(meta["labels"]["team"], "quant");
        assert_eq!(meta["labels"][LOGIN_FOR_LABEL], "alice");
        assert_eq!(meta["annotations"]["cost-centre"], "42");
    }
    let chromium = chromium(&job);
    assert_eq!(chromium["resources"]["limits"]["memory"], "1Gi");
    // The login container keeps the operator's resources: the options named none for it.
    let login = &pod["containers"][0];
    assert_eq!(
        login["resources"],
        plain["spec"]["template"]["spec"]["containers"][0]["resources"]
    );
    let env = chromium["env"].as_array().unwrap();
    let var = |name: &str| {
        env.iter()
            .find(|v| v["name"] == name)
            .map(|v| v["value"].clone())
    };
    assert_eq!(var("HTTPS_PROXY"), Some(json!("http://proxy.corp:3128")));
    assert_eq!(
        var("NO_PROXY"),
        Some(json!("127.0.0.1,localhost,internal.corp"))
    );
    let args: Vec<&str> = chromium["args"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        args.contains(&"--proxy-server=http://proxy.corp:3128"),
        "{args:?}"
    );
    assert!(
        args.contains(&"--proxy-bypass-list=127.0.0.1;localhost;internal.corp"),
        "{args:?}"
    );
    // The rest of the Pod is what it is without options.
    for key in [
        "securityContext",
        "automountServiceAccountToken",
        "volumes",
        "restartPolicy",
    ] {
        assert_eq!(pod[key], plain["spec"]["template"]["spec"][key], "{key}");
    }
    assert_eq!(job_with(""), plain, "no options: the Job as before");
}

#[test]
fn login_pod_options_that_would_break_the_job_are_refused_with_the_reason() {
    for (options, reason) in [
        (
            "labels: {app.kubernetes.io/component: x}",
            "set by the operator",
        ),
        (
            "labels: {dhan-operator.dev/login-for: bob}",
            "set by the operator",
        ),
        (
            "annotations: {dhan-operator.dev/login-reason: x}",
            "set by the operator",
        ),
        ("nodeSelectr: {a: b}", "unknown field"),
        ("proxy: {url: \"socks5://p:1080\"}", "http:// or https://"),
        ("proxy: {url: \"http://user:pw@p:3128\"}", "credentials"),
        (
            "proxy: {url: \"http://p:3128\", cidrs: [10.0.0.0/33]}",
            "not an address range",
        ),
        ("tolerations: {key: x}", "invalid type"),
    ] {
        let error = LoginPodOptions::parse(options).unwrap_err();
        assert!(error.contains(reason), "{options}: {error}");
        assert!(!error.contains("pw"), "{options}: {error}");
    }
}
