//! `kubectl-dhan` against a real apiserver and a running operator: status, refresh, inspect,
//! and kubectl's kubeconfig conventions (KUBECONFIG, --kubeconfig, --context, -n, -A).

mod support;

use dhan_operator::crd::Phase;
use serde_json::json;
use std::process::{Command, Output};
use support::{Bed, PIN, TOTP_SECRET};

const PLUGIN: &str = env!("CARGO_BIN_EXE_kubectl-dhan");

/// Runs the plugin with the test bed's admin kubeconfig in `KUBECONFIG`, as kubectl would.
fn plugin(args: &[&str]) -> Output {
    Command::new(PLUGIN)
        .args(args)
        .env("KUBECONFIG", support::control_plane().kubeconfig_path())
        // The operators' calendar (today and tomorrow holidays): the market is never open here.
        .env("DHAN_TRADING_CALENDAR", support::holiday_calendar())
        .output()
        .expect("run kubectl-dhan")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

async fn ready_account(bed: &Bed, name: &str, client_id: &str) {
    bed.register(client_id, PIN).await;
    let credentials = format!("{name}-dhan");
    bed.put_secret(&credentials, &[("pin", PIN), ("totpSecret", TOTP_SECRET)])
        .await;
    bed.create_account(
        name,
        json!({ "clientId": client_id, "credentialsSecret": credentials }),
    )
    .await;
    bed.wait_phase(name, Phase::Ready).await;
}

#[tokio::test]
async fn status_shows_expiry_method_and_failures_per_account() {
    let bed = Bed::start_with("plugin-status", &[]).await;
    ready_account(&bed, "alice", "1500000001").await;
    bed.put_secret("carol-dhan", &[("pin", PIN)]).await;
    bed.create_account(
        "carol",
        json!({ "clientId": "1500000002", "credentialsSecret": "carol-dhan" }),
    )
    .await;
    bed.wait_phase("carol", Phase::Failed).await;

    let out = plugin(&["status", "-n", &bed.ns]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("NAME"), "{text}");
    assert!(
        lines[0].contains("EXPIRES") && lines[0].contains("LAST FAILURE"),
        "{text}"
    );
    let alice = lines.iter().find(|l| l.starts_with("alice")).expect(&text);
    for expected in ["1500000001", "Ready", "totp", "in 23h", "ago"] {
        assert!(
            alice.contains(expected),
            "{expected:?} missing in {alice:?}"
        );
    }
    let carol = lines.iter().find(|l| l.starts_with("carol")).expect(&text);
    assert!(carol.contains("Failed"), "{carol}");

    // -A adds the namespace column and lists other namespaces' accounts too.
    let all = stdout(&plugin(&["status", "-A"]));
    assert!(
        all.lines().next().unwrap().starts_with("NAMESPACE"),
        "{all}"
    );
    assert!(
        all.lines()
            .any(|l| l.starts_with(&bed.ns) && l.contains("alice")),
        "{all}"
    );

    // One account by name: its line, then what explains it (the operator's message, the
    // conditions, the static IPs Dhan has on record, the last events). The namespace from the
    // context (default) has no such account.
    let one = stdout(&plugin(&["status", "alice", "-n", &bed.ns]));
    let lines: Vec<&str> = one.lines().collect();
    assert!(
        lines[0].starts_with("NAME") && lines[1].starts_with("alice"),
        "{one}"
    );
    assert!(one.contains("Message:"), "{one}");
    assert!(one.contains("Conditions: Ready=True"), "{one}");
    assert!(one.contains("Static IP:"), "{one}");
    assert!(one.contains("Events:") && one.contains("Normal"), "{one}");
    let carol = stdout(&plugin(&["status", "carol", "-n", &bed.ns]));
    assert!(carol.contains("Conditions: Ready=False"), "{carol}");
    assert!(carol.contains("Warning"), "{carol}");
    let missing = plugin(&["status", "alice"]);
    assert!(!missing.status.success());
    assert!(
        stderr(&missing).contains("\"default\""),
        "{}",
        stderr(&missing)
    );
}

#[tokio::test]
async fn kubeconfig_flag_and_context_are_honoured() {
    let bed = Bed::start_with("plugin-context", &[]).await;
    ready_account(&bed, "dave", "1500000003").await;
    let kubeconfig = support::control_plane().kubeconfig_path();
    let text = std::fs::read_to_string(&kubeconfig).unwrap();
    let context = text
        .lines()
        .find_map(|l| l.strip_prefix("current-context: "))
        .unwrap()
        .trim()
        .to_string();

    let out = Command::new(PLUGIN)
        .args(["--kubeconfig", kubeconfig.to_str().unwrap()])
        .args(["--context", &context, "status", "-n", &bed.ns])
        .env_remove("KUBECONFIG")
        .env("HOME", "/nonexistent")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("dave"));

    let wrong = plugin(&["--context", "no-such-context", "status", "-n", &bed.ns]);
    assert!(!wrong.status.success());
    assert!(
        stderr(&wrong).contains("no-such-context"),
        "{}",
        stderr(&wrong)
    );
}

#[tokio::test]
async fn refresh_waits_for_the_new_token_and_mentions_dhans_two_minute_limit() {
    let bed = Bed::start_with("plugin-refresh", &[]).await;
    ready_account(&bed, "erin", "1500000004").await;
    let token_before = bed.token_in_secret("erin-token").await;

    // `--now --yes`: answered even in a session (none here: the market is closed by the
    // operators' calendar, so nothing is asked and no Pod is named).
    let out = plugin(&[
        "refresh",
        "erin",
        "-n",
        &bed.ns,
        "--timeout",
        "90",
        "--now",
        "--yes",
    ]);
    let text = stdout(&out);
    assert!(out.status.success(), "{text}{}", stderr(&out));
    assert!(text.contains("refresh requested"), "{text}");
    assert!(!text.contains("market is open"), "{text}");
    let account = bed.accounts().get("erin").await.unwrap();
    let request = &account.metadata.annotations.as_ref().unwrap()
        [dhan_operator::crd::REFRESH_REQUESTED_ANNOTATION];
    assert!(
        request.starts_with(dhan_operator::crd::REFRESH_NOW_PREFIX),
        "{request}"
    );
    // The account was minted moments ago: Dhan's limit delays the new token.
    assert!(
        text.contains("Dhan allows one new token per client every 2 minutes"),
        "{text}"
    );
    assert!(
        text.contains("new token (method totp), valid until"),
        "{text}"
    );
    let token_after = bed.token_in_secret("erin-token").await;
    assert_ne!(token_after, token_before);
    assert!(!text.contains(&token_after) && !text.contains(&token_before));

    // A permanent failure is reported as such, with a non-zero exit. (A changed PIN alone does
    // not trigger a refresh while the token is valid: the requested one meets it.)
    bed.put_secret(
        "erin-dhan",
        &[("pin", "000000"), ("totpSecret", TOTP_SECRET)],
    )
    .await;
    let failed = plugin(&["refresh", "erin", "-n", &bed.ns, "--timeout", "60"]);
    assert!(!failed.status.success());
    assert!(
        stderr(&failed).contains("refresh failed"),
        "{}",
        stderr(&failed)
    );
    assert!(!stderr(&failed).contains("000000"), "never prints the PIN");
    assert_eq!(bed.status("erin").await.phase, Some(Phase::Failed));
    assert_eq!(
        bed.token_in_secret("erin-token").await,
        token_after,
        "the valid token stays"
    );
}

#[tokio::test]
async fn inspect_secret_decodes_the_token_without_printing_it() {
    let bed = Bed::start_with("plugin-inspect", &[]).await;
    ready_account(&bed, "fay", "1500000005").await;
    let token = bed.token_in_secret("fay-token").await;

    let out = plugin(&["inspect", "secret", "fay-token", "-n", &bed.ns]);
    let text = stdout(&out);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!text.contains(&token), "the token is never printed");
    for expected in [
        "Account:     fay",
        "Type:        APP",
        "Client:      1500000005",
        "DHAN_ACCESS_TOKEN (",
        "valid)",
    ] {
        assert!(text.contains(expected), "{expected:?} missing in\n{text}");
    }

    let not_a_token = plugin(&["inspect", "secret", "fay-dhan", "-n", &bed.ns]);
    assert!(!not_a_token.status.success());
    assert!(
        stderr(&not_a_token).contains("has no key \"DHAN_ACCESS_TOKEN\""),
        "{}",
        stderr(&not_a_token)
    );
}

#[tokio::test]
async fn status_for_programs_refresh_by_label_and_completions() {
    let bed = Bed::start_with("plugin-select", &[]).await;
    ready_account(&bed, "gil", "1500000007").await;
    ready_account(&bed, "hal", "1500000008").await;
    ready_account(&bed, "ida", "1500000009").await;
    for name in ["gil", "hal"] {
        let out = support::control_plane().kubectl(&[
            "label",
            "-n",
            &bed.ns,
            &format!("dhanaccount/{name}"),
            "desk=options",
        ]);
        assert!(out.status.success(), "{}", stderr(&out));
    }

    // -o json and -o yaml: the same facts for programs, selected like kubectl's -l.
    let out = plugin(&["status", "-n", &bed.ns, "-l", "desk=options", "-o", "json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = json
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["gil", "hal"], "{json}");
    assert_eq!(json[0]["phase"], "Ready");
    assert_eq!(json[0]["clientId"], "1500000007");
    assert!(
        json[0]["expiresAt"].as_str().unwrap().ends_with('Z'),
        "{json}"
    );
    let yaml = plugin(&["status", "-n", &bed.ns, "-o", "yaml"]);
    let yaml: serde_json::Value = serde_yaml::from_slice(&yaml.stdout).unwrap();
    assert_eq!(yaml.as_array().unwrap().len(), 3, "{yaml}");

    // refresh -l: every selected account at once, the others untouched.
    let before: Vec<String> = futures::future::join_all(
        ["gil-token", "hal-token", "ida-token"].map(|s| bed.token_in_secret(s)),
    )
    .await;
    let out = plugin(&[
        "refresh",
        "-n",
        &bed.ns,
        "-l",
        "desk=options",
        "--timeout",
        "200",
    ]);
    let text = stdout(&out);
    assert!(out.status.success(), "{text}{}", stderr(&out));
    for name in ["gil", "hal"] {
        assert!(
            text.contains(&format!("dhanaccount/{name}: new token")),
            "{text}"
        );
    }
    assert_ne!(bed.token_in_secret("gil-token").await, before[0]);
    assert_ne!(bed.token_in_secret("hal-token").await, before[1]);
    assert_eq!(bed.token_in_secret("ida-token").await, before[2]);
    let none = plugin(&["refresh", "-n", &bed.ns, "-l", "desk=futures"]);
    assert!(!none.status.success());
    assert!(
        stderr(&none).contains("No DhanAccounts match"),
        "{}",
        stderr(&none)
    );

    // Completions need no cluster.
    let bash = Command::new(PLUGIN)
        .args(["completion", "bash"])
        .env("KUBECONFIG", "/nonexistent")
        .output()
        .unwrap();
    assert!(bash.status.success());
    let script = stdout(&bash);
    assert!(
        script.contains("kubectl__dhan") || script.contains("kubectl-dhan"),
        "{script}"
    );
    assert!(
        script.contains("refresh") && script.contains("--selector"),
        "{script}"
    );
}
