//! DhanNotifier end to end: a real apiserver, a running operator, and a local HTTP receiver
//! standing in for both Telegram's Bot API and a Slack/Discord-style webhook.

mod support;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::Uri;
use dhan_operator::crd::Phase;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::{Bed, PIN, TOTP_SECRET};

const BOT_TOKEN: &str = "7300000001:AAbotTOKENnotForMessages";
const WEBHOOK_KEY: &str = "T000/B000/webhookSECRETpart";

/// Everything the receiver was sent: (path, JSON body).
#[derive(Clone, Default)]
struct Received(Arc<Mutex<Vec<(String, Value)>>>);

impl Received {
    fn all(&self) -> Vec<(String, Value)> {
        self.0.lock().unwrap().clone()
    }
    fn on(&self, path_part: &str) -> Vec<Value> {
        self.all()
            .into_iter()
            .filter(|(p, _)| p.contains(path_part))
            .map(|(_, b)| b)
            .collect()
    }
}

async fn receiver() -> (String, Received) {
    let received = Received::default();
    let app = Router::new()
        .fallback(
            |State(r): State<Received>, uri: Uri, body: Bytes| async move {
                let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                r.0.lock().unwrap().push((uri.path().to_string(), body));
                axum::Json(json!({ "ok": true }))
            },
        )
        .with_state(received.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, received)
}

/// The operator's flags for receivers on this machine: plain http to loopback, Telegram's API
/// at `telegram`.
fn local_receivers(telegram: &str) -> Vec<&str> {
    vec![
        "--notifications",
        "--notify-allow-http",
        "--notify-allow-private-addresses",
        "--telegram-api-url",
        telegram,
    ]
}

/// A receiver that answers every request with a redirect to `to`.
async fn redirecting(to: String) -> String {
    let app = Router::new().fallback(move || {
        let to = to.clone();
        async move { axum::response::Redirect::temporary(&to) }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

#[tokio::test]
async fn a_failure_then_a_recovery_sends_exactly_two_messages_per_channel() {
    let (url, received) = receiver().await;
    let bed = Bed::start_with("notify", &local_receivers(&url)).await;
    bed.register("1600000001", PIN).await;
    bed.put_secret("phone", &[("botToken", BOT_TOKEN), ("chatId", "4242")])
        .await;
    let hook = format!("{url}/services/{WEBHOOK_KEY}");
    bed.put_secret("team-hook", &[("url", &hook)]).await;
    let notifier: Value = json!({
        "apiVersion": "dhan-operator.dev/v1alpha1", "kind": "DhanNotifier",
        "metadata": { "name": "alerts" },
        "spec": {
            "telegram": { "secretName": "phone" },
            "webhook": { "secretName": "team-hook" },
        }
    });
    support::control_plane()
        .kubectl_with_stdin(&["apply", "-n", &bed.ns, "-f", "-"], &notifier.to_string());

    // A wrong PIN: a permanent failure.
    bed.put_secret(
        "alice-dhan",
        &[("pin", "999999"), ("totpSecret", TOTP_SECRET)],
    )
    .await;
    bed.create_account(
        "alice",
        json!({ "clientId": "1600000001", "credentialsSecret": "alice-dhan" }),
    )
    .await;
    bed.wait_phase("alice", Phase::Failed).await;
    support::wait_for(Duration::from_secs(30), || async {
        (received.all().len() == 2).then_some(())
    })
    .await;

    // The right PIN: the account recovers.
    bed.put_secret("alice-dhan", &[("pin", PIN), ("totpSecret", TOTP_SECRET)])
        .await;
    bed.wait_phase("alice", Phase::Ready).await;
    support::wait_for(Duration::from_secs(30), || async {
        (received.all().len() == 4).then_some(())
    })
    .await;
    // Reconciles and re-evaluations go on; nothing more is sent.
    tokio::time::sleep(Duration::from_secs(5)).await;

    let telegram = received.on(&format!("/bot{BOT_TOKEN}/sendMessage"));
    let webhook = received.on(WEBHOOK_KEY);
    assert_eq!(telegram.len(), 2, "{:?}", received.all());
    assert_eq!(webhook.len(), 2, "{:?}", received.all());
    assert_eq!(telegram[0]["chat_id"], "4242");
    let failed = telegram[0]["text"].as_str().unwrap();
    println!("messages sent:\n{failed}\n{}", telegram[1]["text"]);
    assert!(failed.contains(&format!("{}/alice", bed.ns)), "{failed}");
    assert!(failed.contains("cannot be refreshed"), "{failed}");
    assert!(
        telegram[1]["text"]
            .as_str()
            .unwrap()
            .contains("healthy again")
    );
    assert_eq!(webhook[0]["event"], "Failed");
    assert_eq!(webhook[1]["event"], "Recovered");
    assert_eq!(webhook[1]["text"], webhook[1]["content"]);

    let token = bed.token_in_secret("alice-token").await;
    let bodies =
        serde_json::to_string(&received.all().iter().map(|r| &r.1).collect::<Vec<_>>()).unwrap();
    for secret in [
        PIN,
        "999999",
        TOTP_SECRET,
        token.as_str(),
        BOT_TOKEN,
        WEBHOOK_KEY,
    ] {
        assert!(!bodies.contains(secret), "a message carries a credential");
    }
    bed.assert_nothing_leaks(&[PIN, TOTP_SECRET, &token, BOT_TOKEN, WEBHOOK_KEY])
        .await;

    // Delivered and counted.
    let metrics_url = support::metrics_url(&bed.operator().output()).unwrap();
    let scrape = reqwest::get(&metrics_url)
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for channel in ["telegram", "webhook"] {
        let line = format!(
            "dhan_operator_notifications_total{{channel=\"{channel}\",outcome=\"Sent\"}} 2"
        );
        assert!(scrape.contains(&line), "{line} in\n{scrape}");
    }
}

#[tokio::test]
async fn a_restarted_operator_does_not_repeat_and_a_dead_receiver_is_counted() {
    let (url, received) = receiver().await;
    let mut bed = Bed::start_with("notify-restart", &local_receivers(&url)).await;
    bed.put_secret("phone", &[("botToken", BOT_TOKEN), ("chatId", "4242")])
        .await;
    // Port 9 on loopback: nothing listens, every webhook delivery fails.
    bed.put_secret("dead-hook", &[("url", "http://127.0.0.1:9/hook")])
        .await;
    let notifier: Value = json!({
        "apiVersion": "dhan-operator.dev/v1alpha1", "kind": "DhanNotifier",
        "metadata": { "name": "alerts" },
        "spec": {
            "telegram": { "secretName": "phone", "apiUrl": url },
            "webhook": { "secretName": "dead-hook" },
            "events": ["Failed", "Recovered"],
        }
    });
    support::control_plane()
        .kubectl_with_stdin(&["apply", "-n", &bed.ns, "-f", "-"], &notifier.to_string());
    // A Secret without the PIN: Failed.
    bed.put_secret("bob-dhan", &[("totpSecret", TOTP_SECRET)])
        .await;
    bed.create_account(
        "bob",
        json!({ "clientId": "1600000002", "credentialsSecret": "bob-dhan" }),
    )
    .await;
    bed.wait_phase("bob", Phase::Failed).await;
    support::wait_for(Duration::from_secs(30), || async {
        (received.all().len() == 1).then_some(())
    })
    .await;
    let metrics_url = support::metrics_url(&bed.operator().output()).unwrap();
    let failed_line = "dhan_operator_notifications_total{channel=\"webhook\",outcome=\"Failed\"} 1";
    support::wait_for(Duration::from_secs(30), || async {
        let scrape = reqwest::get(&metrics_url).await.ok()?.text().await.ok()?;
        scrape.contains(failed_line).then_some(())
    })
    .await;
    let notifiers = support::control_plane().kubectl(&[
        "get",
        "dhannotifiers",
        "alerts",
        "-n",
        &bed.ns,
        "-o",
        "json",
    ]);
    let notifier: Value = serde_json::from_slice(&notifiers.stdout).unwrap();
    assert_eq!(notifier["status"]["notified"]["bob"], "Failed");
    let problem = notifier["status"]["message"].as_str().unwrap_or_default();
    assert!(problem.starts_with("webhook: "), "{notifier}");
    assert!(
        !problem.contains("127.0.0.1:9"),
        "no URL in the status: {problem}"
    );

    // A new operator process reads what was reported from the notifier's status.
    bed.operator.take().unwrap().kill_9();
    bed.operator = Some(bed.spawn_operator(&local_receivers(&url), &[]));
    support::wait_for(Duration::from_secs(20), || async {
        bed.operator()
            .output()
            .contains("notifications started")
            .then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(received.all().len(), 1, "{:?}", received.all());
}

#[tokio::test]
async fn only_the_leader_sends() {
    let (url, received) = receiver().await;
    let bed = Bed::without_operator("notify-leader").await;
    let args = [
        "--notifications",
        "--notify-allow-http",
        "--notify-allow-private-addresses",
        "--leader-elect",
        "--leader-elect-namespace",
        &bed.ns,
        "--leader-elect-lease",
        "notify-leader",
    ];
    let first = bed.spawn_operator(&args, &[("POD_NAME", "replica-a")]);
    support::wait_for(Duration::from_secs(30), || async {
        first
            .output()
            .contains("notifications started")
            .then_some(())
    })
    .await;
    let second = bed.spawn_operator(&args, &[("POD_NAME", "replica-b")]);
    bed.put_secret("team-hook", &[("url", &format!("{url}/hook"))])
        .await;
    let notifier: Value = json!({
        "apiVersion": "dhan-operator.dev/v1alpha1", "kind": "DhanNotifier",
        "metadata": { "name": "alerts" },
        "spec": { "webhook": { "secretName": "team-hook" } }
    });
    support::control_plane()
        .kubectl_with_stdin(&["apply", "-n", &bed.ns, "-f", "-"], &notifier.to_string());
    bed.put_secret("carl-dhan", &[("totpSecret", TOTP_SECRET)])
        .await;
    bed.create_account(
        "carl",
        json!({ "clientId": "1600000003", "credentialsSecret": "carl-dhan" }),
    )
    .await;
    bed.wait_phase("carl", Phase::Failed).await;
    support::wait_for(Duration::from_secs(30), || async {
        (!received.all().is_empty()).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(received.all().len(), 1, "{:?}", received.all());
    assert!(
        !second.output().contains("notifications started"),
        "the standby does not notify"
    );
}

#[tokio::test]
async fn an_account_unreadable_for_a_while_is_not_announced_again() {
    let (url, received) = receiver().await;
    let bed = Bed::start_with("notify-skip", &local_receivers(&url)).await;
    bed.put_secret("team-hook", &[("url", &format!("{url}/hook"))])
        .await;
    let notifier: Value = json!({
        "apiVersion": "dhan-operator.dev/v1alpha1", "kind": "DhanNotifier",
        "metadata": { "name": "alerts" },
        "spec": { "webhook": { "secretName": "team-hook" } }
    });
    support::control_plane()
        .kubectl_with_stdin(&["apply", "-n", &bed.ns, "-f", "-"], &notifier.to_string());
    // A Secret without the PIN: Failed, with no Dhan call.
    bed.put_secret("dora-dhan", &[("totpSecret", TOTP_SECRET)])
        .await;
    bed.create_account(
        "dora",
        json!({ "clientId": "1600000004", "credentialsSecret": "dora-dhan" }),
    )
    .await;
    bed.wait_phase("dora", Phase::Failed).await;
    support::wait_for(Duration::from_secs(30), || async {
        (received.all().len() == 1).then_some(())
    })
    .await;

    // Unreadable for a while (anyone with status rights can do this), then readable again,
    // still Failed: nothing new to say.
    let resource = ApiResource::erase::<dhan_operator::crd::DhanAccount>(&());
    let accounts = Api::<DynamicObject>::namespaced_with(bed.client.clone(), &bed.ns, &resource);
    let set_failed_attempts = |count: u64| {
        let patch = json!({ "status": { "failedAttempts": count } });
        let accounts = accounts.clone();
        async move {
            accounts
                .patch_status("dora", &PatchParams::default(), &Patch::Merge(patch))
                .await
                .expect("patching dora's status")
        }
    };
    set_failed_attempts(5_000_000_000).await;
    bed.wait_event("Undecodable").await;
    // The notifier judges the accounts after each change: let it see the account gone.
    tokio::time::sleep(Duration::from_secs(5)).await;
    set_failed_attempts(1).await;
    support::wait_for(Duration::from_secs(30), || async {
        let scrape = reqwest::get(support::metrics_url(&bed.operator().output())?)
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        scrape
            .contains("dhan_operator_skipped_accounts 0")
            .then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(received.all().len(), 1, "{:?}", received.all());
}

/// A notifier is a tenant's object and its webhook URL a tenant's Secret: by default the
/// operator posts only over https, to no inside address (named or resolved), follows no
/// redirect, and says why in the notifier's status, without the URL.
#[tokio::test]
async fn a_tenant_cannot_point_notifications_inside_or_through_a_redirect() {
    let (url, received) = receiver().await;
    let (elsewhere, redirected_to) = receiver().await;
    let redirect = redirecting(format!("{elsewhere}/stolen")).await;
    let mut bed = Bed::start_with("notify-egress", &["--notifications"]).await;
    let port = url.rsplit(':').next().unwrap().to_string();
    let hooks = [
        ("plain-http", format!("{url}/hook"), "only https"),
        (
            "loopback",
            format!("https://127.0.0.1:{port}/hook"),
            "loopback",
        ),
        (
            "metadata",
            "https://169.254.169.254/latest/meta-data/".to_string(),
            "link-local",
        ),
        (
            "named",
            format!("https://localhost:{port}/hook"),
            "loopback",
        ),
        ("private", "https://[fd00::1]/hook".to_string(), "private"),
    ];
    for (name, hook, _) in &hooks {
        bed.put_secret(name, &[("url", hook)]).await;
        let notifier: Value = json!({
            "apiVersion": "dhan-operator.dev/v1alpha1", "kind": "DhanNotifier",
            "metadata": { "name": name },
            "spec": { "webhook": { "secretName": name } }
        });
        support::control_plane()
            .kubectl_with_stdin(&["apply", "-n", &bed.ns, "-f", "-"], &notifier.to_string());
    }
    // A Secret without the PIN: Failed, with no Dhan call; every notifier has something to say.
    bed.put_secret("erin-dhan", &[("totpSecret", TOTP_SECRET)])
        .await;
    bed.create_account(
        "erin",
        json!({ "clientId": "1600000005", "credentialsSecret": "erin-dhan" }),
    )
    .await;
    bed.wait_phase("erin", Phase::Failed).await;
    let notifiers = Api::<DynamicObject>::namespaced_with(
        bed.client.clone(),
        &bed.ns,
        &ApiResource::erase::<dhan_operator::notify::resource::DhanNotifier>(&()),
    );
    for (name, hook, why) in &hooks {
        let message = support::wait_for(Duration::from_secs(30), || async {
            let notifier = notifiers.get(name).await.ok()?;
            notifier.data["status"]["message"]
                .as_str()
                .map(str::to_string)
        })
        .await;
        assert!(message.contains(why), "{name}: {message}");
        assert!(
            !message.contains(hook.as_str()),
            "{name}: no URL in {message}"
        );
    }
    assert!(received.all().is_empty(), "{:?}", received.all());

    // Even where the operator allows receivers inside, a redirect is not followed.
    bed.operator.take().unwrap().kill_9();
    bed.operator = Some(bed.spawn_operator(&local_receivers(&url), &[]));
    bed.put_secret("redirect", &[("url", &format!("{redirect}/hook"))])
        .await;
    let notifier: Value = json!({
        "apiVersion": "dhan-operator.dev/v1alpha1", "kind": "DhanNotifier",
        "metadata": { "name": "redirect" },
        "spec": { "webhook": { "secretName": "redirect" } }
    });
    support::control_plane()
        .kubectl_with_stdin(&["apply", "-n", &bed.ns, "-f", "-"], &notifier.to_string());
    let message = support::wait_for(Duration::from_secs(60), || async {
        let notifier = notifiers.get("redirect").await.ok()?;
        notifier.data["status"]["message"]
            .as_str()
            .map(str::to_string)
    })
    .await;
    assert!(message.contains("HTTP 307"), "{message}");
    assert!(redirected_to.all().is_empty(), "{:?}", redirected_to.all());
}
