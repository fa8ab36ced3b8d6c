//! The promises of issue 21, each broken by an ordinary operation before it was kept, on the real
//! kube-apiserver against `dhan-mock`: the operator process is killed and restarted, a second
//! install shares a client ID, a tenant touches Secrets and status, RBAC and a quota refuse
//! writes. Each test counts the mock's calls, not only what the status says.
//!
//! Every operator watches one namespace (this binary's tests share one control plane), so the
//! two accounts a test compares in one install live in one namespace: the conflict index that
//! chooses between them knows no namespaces (`src/controller/conflict.rs`).
//!
//! With `DHAN_OPERATOR_BIN` (and `DHAN_OPERATOR_ARGS`) the operators are another build: see
//! `tests/support/mod.rs`.

mod support;

use chrono::Utc;
use dhan_operator::crd::{DhanAccountStatus, Phase};
use k8s_openapi::api::authorization::v1::SubjectAccessReview;
use k8s_openapi::api::core::v1::ResourceQuota;
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use support::{Bed, ChildProcess, MockDhan, PIN, TOTP_SECRET, WAIT};

const MINT: &str = "generateAccessToken";
const WRONG_PIN: &str = "000000";

async fn mints(mock: &MockDhan, client_id: &str) -> usize {
    mock.calls_to(MINT, client_id).await.len()
}

/// Stores credentials `name`-dhan with `pin` and creates account `name` for `client_id`, with
/// `extra` merged into its spec.
async fn account(bed: &Bed, name: &str, client_id: &str, pin: &str, extra: Value) {
    let secret = format!("{name}-dhan");
    bed.put_secret(&secret, &[("pin", pin), ("totpSecret", TOTP_SECRET)])
        .await;
    let mut spec = json!({ "clientId": client_id, "credentialsSecret": secret });
    if let (Value::Object(spec), Value::Object(extra)) = (&mut spec, extra) {
        spec.extend(extra);
    }
    bed.create_account(name, spec).await;
}

/// The account's status once its phase is one of `phases`, or its last status when `timeout`
/// passes first: the caller asserts on it, and a failure shows what the account said.
async fn settled(bed: &Bed, name: &str, phases: &[Phase], timeout: Duration) -> DhanAccountStatus {
    let deadline = Instant::now() + timeout;
    loop {
        let status = bed.status(name).await;
        if status.phase.is_some_and(|p| phases.contains(&p)) || Instant::now() >= deadline {
            return status;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The refusals a client may get are counted per IST day (docs/dhan-api.md §9): a test of the
/// cap must not straddle IST midnight, so one that would starts just after it.
async fn clear_of_ist_midnight(test_length: Duration) {
    let ist = Utc::now() + chrono::Duration::minutes(330);
    let midnight = ist
        .date_naive()
        .succ_opt()
        .unwrap()
        .and_hms_opt(0, 0, 0)
        .unwrap();
    let left = (midnight - ist.naive_utc()).to_std().unwrap_or_default();
    if left < test_length {
        println!("waiting {left:?} for IST midnight to pass");
        tokio::time::sleep(left + Duration::from_secs(5)).await;
    }
}

// ---- 1. Client-ID claims follow the token ------------------------------------------------------

/// An operator for namespace `ns` as the cluster admin, with the binary's defaults besides
/// `extra` (no chart, so no `--install-id` either): these tests are about whom the claims let
/// mint, not about rights (the chart's rights for claims: `tests/tenancy.rs`, `tests/helm.rs`).
fn admin_operator(ns: &str, dhan: &MockDhan, extra: &[&str]) -> ChildProcess {
    let admin = support::control_plane().kubeconfig_path();
    let mut args = vec![
        "--namespace",
        ns,
        "--metrics-addr",
        "127.0.0.1:0",
        "--dhan-auth-url",
        &dhan.url,
        "--dhan-api-url",
        &dhan.url,
        "--min-mint-interval",
        "5s",
    ];
    args.extend_from_slice(extra);
    support::start_operator(&args, &[("KUBECONFIG", admin.to_str().unwrap())])
}

/// Two namespaces, each watched by its own install, one Dhan (team A's mock; team B's bed has
/// one too, unused) that knows `client_id`: alice in team A is Ready, then bob in team B names
/// the same client.
struct TwoInstalls {
    team_a: Bed,
    team_b: Bed,
    /// Flags of each install's operator, after `--namespace`.
    flags: [Vec<String>; 2],
}

impl TwoInstalls {
    async fn start(client_id: &str, flags: [&[&str]; 2]) -> TwoInstalls {
        let mut team_a = Bed::without_operator("team-a").await;
        let mut team_b = Bed::without_operator("team-b").await;
        team_a.register(client_id, PIN).await;
        let flags = flags.map(|f| f.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        let a = TwoInstalls::operator(&team_a, &team_a, &flags[0]);
        let b = TwoInstalls::operator(&team_b, &team_a, &flags[1]);
        team_a.operator = Some(a);
        team_b.operator = Some(b);
        account(&team_a, "alice", client_id, PIN, json!({})).await;
        team_a.wait_phase("alice", Phase::Ready).await;
        // creationTimestamp has one-second resolution: bob is clearly the younger.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        account(&team_b, "bob", client_id, PIN, json!({})).await;
        TwoInstalls {
            team_a,
            team_b,
            flags,
        }
    }

    fn operator(bed: &Bed, dhan: &Bed, flags: &[String]) -> ChildProcess {
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        admin_operator(&bed.ns, &dhan.mock, &flags)
    }

    /// Team A's operator killed (SIGKILL: memory lost, nothing handed over) and started again.
    fn restart_team_a(&mut self) {
        let mut old = self.team_a.operator.take().expect("team A's operator");
        old.kill_9();
        self.team_a.operator = Some(TwoInstalls::operator(
            &self.team_a,
            &self.team_a,
            &self.flags[0],
        ));
    }

    fn dhan(&self) -> &MockDhan {
        &self.team_a.mock
    }
}

/// The person installing a second operator need not know of the first: two installs started
/// with the binary's defaults (no install ID, nothing shared configured) meet at the
/// cluster-scoped claim, and only one mints for the client ID.
#[tokio::test]
async fn two_installs_with_the_binarys_defaults_mint_once_for_one_client_id() {
    const CLIENT: &str = "1700000011";
    let two = TwoInstalls::start(CLIENT, [&[], &[]]).await;

    let bob = settled(&two.team_b, "bob", &[Phase::Conflict, Phase::Ready], WAIT).await;
    assert_eq!(bob.phase, Some(Phase::Conflict), "{:?}", bob.message);
    // Past Dhan's mint interval (5 s here) and a Conflict recheck (30 s): bob still waits.
    tokio::time::sleep(Duration::from_secs(35)).await;
    assert_eq!(
        mints(two.dhan(), CLIENT).await,
        1,
        "one mint for two installs"
    );
    assert_eq!(two.team_b.status("bob").await.phase, Some(Phase::Conflict));
    assert_eq!(
        two.dhan().account(CLIENT).await["currentToken"],
        two.team_a.token_in_secret("alice-token").await.as_str(),
        "alice's token is Dhan's live one"
    );
}

/// How long an install's claims outlive its last heartbeat, here: the shortest allowed
/// (`claims::MIN_CLAIM_DURATION`), so that a claim the restarted operator failed to keep would
/// lapse within the test, and a new process that took too long to act for its install would
/// show.
const CLAIM_DURATION: Duration = Duration::from_secs(60);

/// A claim belongs to whoever holds the client's live token, not to whoever minted last in this
/// process: after a restart nothing is minted, and the claim must still hold. Before, a restarted
/// operator kept no claim for a live token; it lapsed after `--client-claim-duration`, and the
/// other install's waiting account minted, killing the live token.
#[tokio::test]
async fn after_a_restart_the_live_tokens_claim_keeps_another_installs_account_in_conflict() {
    const CLIENT: &str = "1700000012";
    let duration = format!("{}s", CLAIM_DURATION.as_secs());
    let flags_a: &[&str] = &[
        "--install-id",
        "install-a",
        "--client-claim-duration",
        &duration,
    ];
    let flags_b: &[&str] = &[
        "--install-id",
        "install-b",
        "--client-claim-duration",
        &duration,
    ];
    let mut two = TwoInstalls::start(CLIENT, [flags_a, flags_b]).await;
    let bob = settled(&two.team_b, "bob", &[Phase::Conflict, Phase::Ready], WAIT).await;
    assert_eq!(bob.phase, Some(Phase::Conflict), "{:?}", bob.message);
    let token = two.team_a.token_in_secret("alice-token").await;

    two.restart_team_a();
    let restarted = Instant::now();
    // Past the claim duration twice over, bob reconciled every few seconds all along (a spec
    // change reconciles him at once), and once more at the end.
    let mut generation = None;
    let mut renew_before = 10;
    while restarted.elapsed() < 2 * CLAIM_DURATION || generation.is_none() {
        renew_before = if renew_before == 10 { 11 } else { 10 };
        let edit = json!({ "spec": { "refresh": { "renewBefore": format!("{renew_before}m") } } });
        let edited = two
            .team_b
            .accounts()
            .patch("bob", &PatchParams::default(), &Patch::Merge(&edit))
            .await
            .unwrap();
        generation = edited.metadata.generation;
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    let bob = two
        .team_b
        .wait_status("bob", WAIT, |s| s.observed_generation == generation)
        .await
        .status
        .unwrap();

    assert_eq!(
        mints(two.dhan(), CLIENT).await,
        1,
        "no mint while alice's token lives ({} s after the restart)",
        restarted.elapsed().as_secs()
    );
    assert_eq!(bob.phase, Some(Phase::Conflict), "{:?}", bob.message);
    assert_eq!(
        two.dhan().account(CLIENT).await["currentToken"],
        token.as_str()
    );
    assert_eq!(two.team_a.token_in_secret("alice-token").await, token);
    assert_eq!(two.team_a.status("alice").await.phase, Some(Phase::Ready));
    let claim = Api::<dhan_operator::claims::DhanClientClaim>::all(two.team_a.client.clone())
        .get(&dhan_operator::claims::claim_name(CLIENT))
        .await
        .unwrap();
    assert_eq!(
        claim.spec.holder.map(|h| h.install).as_deref(),
        Some("install-a")
    );
}

/// Claims must outlive a restart in a new process (a new Pod), which acts for the install only
/// once the dead process's heartbeat is old: a shorter `--client-claim-duration` is refused at
/// start. Before, the test above with `--client-claim-duration 30s` saw install B mint over
/// alice's live token about a minute after the restart.
#[test]
fn a_claim_duration_shorter_than_a_restart_takes_is_refused_at_start() {
    let out = std::process::Command::new(support::operator_bin())
        .args(["run", "--client-claim-duration", "30s"])
        .env_clear()
        .env("KUBECONFIG", "/nonexistent")
        .output()
        .expect("run the operator");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("--client-claim-duration must be at least 60s"),
        "{stderr}"
    );
}

// ---- 2. The failed-login cap is a cap ----------------------------------------------------------

/// A PIN Dhan refused is not sent again that day (docs/dhan-api.md §9: wrong PINs lock the
/// account): not when the credential Secret is touched without a change of its values (an
/// annotation, as External Secrets or Argo CD write), not on a refresh request, not when the
/// account is deleted and created again. Before, each of these sent it again.
#[tokio::test]
async fn a_refused_pin_is_sent_once_whatever_touches_its_secret_or_account() {
    const CLIENT: &str = "1700000021";
    clear_of_ist_midnight(Duration::from_secs(180)).await;
    let bed = Bed::start_with("cap", &[]).await;
    bed.register(CLIENT, PIN).await;
    account(&bed, "ana", CLIENT, WRONG_PIN, json!({})).await;
    let failed = bed.wait_phase("ana", Phase::Failed).await.status.unwrap();
    assert_eq!(failed.last_failure_reason.as_deref(), Some("InvalidPin"));
    let calls = bed.mock.calls_to(MINT, CLIENT).await;
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0]["outcome"], "invalid_pin");

    // Each step waits past Dhan's mint interval (5 s here) and the mock's throttle (3 s).
    let step = Duration::from_secs(8);
    for touch in 0..3 {
        let annotation = json!({ "metadata": { "annotations": {
            "example.com/synced-at": format!("touch-{touch}") } } });
        bed.secrets()
            .patch(
                "ana-dhan",
                &PatchParams::default(),
                &Patch::Merge(&annotation),
            )
            .await
            .unwrap();
        tokio::time::sleep(step).await;
    }
    for request in 0..2 {
        bed.request_refresh("ana", &format!("again-{request}"))
            .await;
        tokio::time::sleep(step).await;
    }
    assert_eq!(
        mints(&bed.mock, CLIENT).await,
        1,
        "no resend after Secret touches and refresh requests"
    );

    bed.accounts()
        .delete("ana", &DeleteParams::default())
        .await
        .unwrap();
    support::wait_for(Duration::from_secs(10), || async {
        bed.accounts()
            .get_opt("ana")
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    bed.create_account(
        "ana",
        json!({ "clientId": CLIENT, "credentialsSecret": "ana-dhan" }),
    )
    .await;
    // Refused today: it waits for the next IST day, sending nothing until then.
    let deadline = Instant::now() + WAIT;
    let recreated = loop {
        let status = bed.status("ana").await;
        let refused = status.last_failure_reason.as_deref() == Some("CredentialsRefusedToday");
        if refused || status.phase == Some(Phase::Ready) || Instant::now() >= deadline {
            break status;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    tokio::time::sleep(step).await;
    let calls = bed.mock.calls_to(MINT, CLIENT).await;
    assert_eq!(calls.len(), 1, "the refused PIN was sent again: {calls:?}");
    assert_eq!(
        recreated.phase,
        Some(Phase::Backoff),
        "{:?}",
        recreated.message
    );
    assert_eq!(
        recreated.last_failure_reason.as_deref(),
        Some("CredentialsRefusedToday"),
        "{:?}",
        recreated.message
    );
}

// ---- 4. One status value does not freeze the operator ------------------------------------------

/// `status.lastTotpStep` far in the future (a tenant's status patch, a clock that jumped) is
/// clamped to what is possible now. Before, the mint waited for that TOTP step: with as many
/// such accounts as workers (`--concurrency 2`), no other account was reconciled at all.
#[tokio::test]
async fn a_last_totp_step_far_in_the_future_freezes_neither_its_account_nor_the_others() {
    let mut bed = Bed::without_operator("totp-step").await;
    for (name, client) in [("frozen-1", "1700000041"), ("frozen-2", "1700000042")] {
        bed.register(client, PIN).await;
        account(&bed, name, client, PIN, json!({})).await;
        // The CRD's maximum for the field: the year 2920.
        bed.accounts()
            .patch_status(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({ "status": { "lastTotpStep": 999_999_999u64 } })),
            )
            .await
            .unwrap();
    }
    bed.operator = Some(bed.spawn_operator(&["--concurrency", "2"], &[]));
    // Both workers have taken the frozen accounts before the other account exists.
    support::wait_for(WAIT, || async {
        support::metrics_url(&bed.operator().output())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    bed.register("1700000043", PIN).await;
    account(&bed, "other", "1700000043", PIN, json!({})).await;

    // A mint waits for the next TOTP step (at most 30 s).
    let bound = Duration::from_secs(90);
    let other = settled(&bed, "other", &[Phase::Ready], bound).await;
    assert_eq!(
        other.phase,
        Some(Phase::Ready),
        "another account is reconciled: {:?}",
        other.message
    );
    for name in ["frozen-1", "frozen-2"] {
        let status = settled(&bed, name, &[Phase::Ready], bound).await;
        assert_eq!(
            status.phase,
            Some(Phase::Ready),
            "{name}: {:?}",
            status.message
        );
        let now_step = (Utc::now().timestamp() / 30) as u64;
        assert!(
            status.last_totp_step.is_some_and(|s| s <= now_step + 1),
            "{name}: {:?}",
            status.last_totp_step
        );
    }
}

// ---- 5. No squatting ---------------------------------------------------------------------------

/// Only an account that holds a live token, or is obtaining one, holds a client ID. Before, an
/// older account that was merely suspended, with wrong credentials and no token, kept a newer,
/// correct account of the client in `Conflict` for ever.
#[tokio::test]
async fn an_older_suspended_account_without_a_token_does_not_keep_the_owner_in_conflict() {
    const CLIENT: &str = "1700000051";
    let bed = Bed::start_with("squat", &[]).await;
    bed.register(CLIENT, PIN).await;
    account(
        &bed,
        "squatter",
        CLIENT,
        WRONG_PIN,
        json!({ "suspend": true }),
    )
    .await;
    bed.wait_phase("squatter", Phase::Suspended).await;
    // creationTimestamp has one-second resolution: the owner is clearly the younger.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    account(&bed, "owner", CLIENT, PIN, json!({})).await;

    let owner = settled(&bed, "owner", &[Phase::Ready], WAIT).await;
    assert_eq!(owner.phase, Some(Phase::Ready), "{:?}", owner.message);
    assert_eq!(
        bed.mock.account(CLIENT).await["currentToken"],
        bed.token_in_secret("owner-token").await.as_str()
    );
    let calls = bed.mock.calls_to(MINT, CLIENT).await;
    assert_eq!(
        calls.len(),
        1,
        "the suspended account sent nothing: {calls:?}"
    );
    assert_eq!(bed.status("squatter").await.phase, Some(Phase::Suspended));
}

// ---- 6. A restart finds a lost mint out --------------------------------------------------------

/// The chart's Role for the bed's namespace (namespaced mode: the one that grants Secrets), and
/// the user its RoleBinding names.
async fn chart_role(bed: &Bed) -> (Role, String) {
    let role = Api::<Role>::namespaced(bed.client.clone(), &bed.ns)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .find(|r| {
            r.rules.iter().flatten().any(|rule| {
                rule.resources
                    .iter()
                    .flatten()
                    .any(|resource| resource == "secrets")
            })
        })
        .expect("the chart's Role granting Secrets");
    let name = role.metadata.name.clone().unwrap();
    let binding = Api::<RoleBinding>::namespaced(bed.client.clone(), &bed.ns)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .find(|b| b.role_ref.name == name)
        .expect("the chart's RoleBinding");
    let subject = &binding.subjects.expect("subjects")[0];
    let user = format!(
        "system:serviceaccount:{}:{}",
        subject.namespace.as_deref().unwrap(),
        subject.name
    );
    (role, user)
}

/// Replaces the rules of `role` and waits until the authorizer says `user` may (or may not)
/// patch Secrets in its namespace.
async fn set_rules(bed: &Bed, role: &Role, rules: Vec<PolicyRule>, user: &str) {
    let roles = Api::<Role>::namespaced(bed.client.clone(), &bed.ns);
    let mut current = roles
        .get(role.metadata.name.as_deref().unwrap())
        .await
        .unwrap();
    current.rules = Some(rules);
    let written = roles
        .replace(
            current.metadata.name.as_deref().unwrap(),
            &PostParams::default(),
            &current,
        )
        .await
        .unwrap();
    let may_write = written.rules.iter().flatten().any(|rule| {
        rule.resources.iter().flatten().any(|r| r == "secrets")
            && rule.verbs.iter().any(|v| v == "patch")
    });
    let review: SubjectAccessReview = serde_json::from_value(json!({
        "spec": { "user": user, "resourceAttributes": {
            "namespace": bed.ns, "verb": "patch", "resource": "secrets" } }
    }))
    .unwrap();
    let reviews = Api::<SubjectAccessReview>::all(bed.client.clone());
    support::wait_for(Duration::from_secs(20), || async {
        let answer = reviews.create(&PostParams::default(), &review).await.ok()?;
        (answer.status?.allowed == may_write).then_some(())
    })
    .await;
}

/// A refused Secret write leaves the new token in the process's memory only, and the old one
/// (which Dhan killed when it issued the new) in the Secret. Killed before the write succeeds,
/// the operator is started again, as a new process of the install (a new Pod: it acts for the
/// install only once the dead one's heartbeat is old). It must find the lost mint out at once:
/// its first call probes the Secret's token, it calls the token valid only after asking Dhan,
/// and once Dhan said no, no status but `Ready` itself (see below) calls it valid. Before, it
/// reported Ready on the dead token without a probe until the next probe slot; and then, with
/// the probe made at once, said `Backoff` with the Ready condition `True` while it waited to act
/// for its install.
///
/// Not pinned: for up to half a minute after the restart the phase still says `Ready` — a first
/// dead probe waits 10 s for its confirmation (docs/dhan-api.md §4: a fresh token may answer
/// 401 once), and the mint then waits for a fresh TOTP step before the round writes a status.
#[tokio::test]
async fn a_restart_after_a_refused_secret_write_probes_before_calling_the_token_valid() {
    const CLIENT: &str = "1700000061";
    let mut bed = Bed::start_with("lost", &[]).await;
    bed.register(CLIENT, PIN).await;
    account(&bed, "leo", CLIENT, PIN, json!({})).await;
    bed.wait_phase("leo", Phase::Ready).await;
    let first = bed.token_in_secret("leo-token").await;

    let (role, user) = chart_role(&bed).await;
    let granted = role.rules.clone().unwrap();
    let read_only: Vec<PolicyRule> = granted
        .iter()
        .cloned()
        .map(|mut rule| {
            if rule.resources.iter().flatten().any(|r| r == "secrets") {
                rule.verbs
                    .retain(|v| matches!(v.as_str(), "get" | "list" | "watch"));
            }
            rule
        })
        .collect();
    set_rules(&bed, &role, read_only, &user).await;
    bed.request_refresh("leo", "rotate").await;
    bed.wait_status("leo", WAIT, |s| {
        s.conditions
            .iter()
            .any(|c| c.reason == "SecretWriteRefused")
    })
    .await;
    let lost = bed.mock.account(CLIENT).await["currentToken"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(lost, first, "Dhan issued a new token");
    assert_eq!(bed.token_in_secret("leo-token").await, first);

    bed.operator.take().unwrap().kill_9();
    set_rules(&bed, &role, granted, &user).await;
    let calls_before = bed.mock.calls().await.len();
    bed.operator = Some(bed.spawn_operator(&[], &[]));

    // Until the account is Ready on Dhan's live token: the killed token is never called valid
    // before the restarted operator has asked Dhan about it, nor by a status that is not Ready
    // (the Ready condition), once it has.
    let bound = Duration::from_secs(120);
    let deadline = Instant::now() + bound;
    let mut statuses = vec![];
    loop {
        let status = bed.status("leo").await;
        let in_secret = bed.token_in_secret("leo-token").await;
        let live = bed.mock.account(CLIENT).await["currentToken"]
            .as_str()
            .unwrap()
            .to_owned();
        let probed = bed.mock.calls().await[calls_before..]
            .iter()
            .any(|c| c["clientId"] == CLIENT && c["endpoint"] == "profile");
        let ready = status.phase == Some(Phase::Ready);
        let said_valid = status
            .conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        let summary = format!("{:?}: {:?}", status.phase, status.message);
        if statuses.last() != Some(&summary) {
            statuses.push(summary);
        }
        if in_secret != live {
            assert!(
                !(ready || said_valid) || probed,
                "the killed token called valid without a probe: {statuses:#?}"
            );
            assert!(
                ready || !said_valid,
                "the Ready condition calls the killed token valid: {statuses:#?}"
            );
        } else if ready {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not Ready on the live token within {bound:?}: {statuses:#?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!("statuses after the restart: {statuses:#?}");
    let after_restart = bed.mock.calls().await.split_off(calls_before);
    let first_call = after_restart.iter().find(|c| c["clientId"] == CLIENT);
    assert_eq!(
        first_call.map(|c| (&c["endpoint"], &c["outcome"])),
        Some((&json!("profile"), &json!("dead_token"))),
        "the restarted operator's first call probes the Secret's token: {after_restart:#?}"
    );
    assert_eq!(
        mints(&bed.mock, CLIENT).await,
        3,
        "the first token, the lost one, and its replacement"
    );
}

// ---- 9. A kept token lands soon after the write can succeed ------------------------------------

/// A quota (no controller-manager runs: its status is written here, as the quota controller
/// would) that allows no more Secrets in the namespace than there are now.
async fn secrets_quota_full(bed: &Bed) -> Api<ResourceQuota> {
    let count = bed
        .secrets()
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .len()
        .to_string();
    let quotas: Api<ResourceQuota> = Api::namespaced(bed.client.clone(), &bed.ns);
    let quota: ResourceQuota = serde_json::from_value(json!({
        "metadata": { "name": "secrets" },
        "spec": { "hard": { "secrets": count } },
    }))
    .unwrap();
    quotas.create(&PostParams::default(), &quota).await.unwrap();
    quotas
        .patch_status(
            "secrets",
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": { "hard": { "secrets": count },
                                              "used": { "secrets": count } } })),
        )
        .await
        .unwrap();
    quotas
}

/// A write costs Dhan nothing, and while a kept token is unwritten the trading pods have none:
/// once the Secret can be written, the token lands within a retry (15 s). Before, the retries
/// backed off towards 5 minutes (and a retry's own status write counted as another refusal), so
/// after a refusal of a minute and a half the token landed a minute or more after the quota went.
#[tokio::test]
async fn a_kept_token_lands_soon_after_a_long_refusal_ends() {
    const CLIENT: &str = "1700000091";
    let bed = Bed::start_with("kept", &[]).await;
    bed.register(CLIENT, PIN).await;
    bed.put_secret("kai-dhan", &[("pin", PIN), ("totpSecret", TOTP_SECRET)])
        .await;
    let quotas = secrets_quota_full(&bed).await;
    bed.create_account(
        "kai",
        json!({ "clientId": CLIENT, "credentialsSecret": "kai-dhan" }),
    )
    .await;
    bed.wait_status("kai", WAIT, |s| {
        s.conditions
            .iter()
            .any(|c| c.reason == "SecretWriteRefused")
    })
    .await;
    // A refusal of a minute and a half, ended between two retries.
    tokio::time::sleep(Duration::from_secs(97)).await;
    assert!(bed.secrets().get_opt("kai-token").await.unwrap().is_none());

    quotas
        .delete("secrets", &DeleteParams::default())
        .await
        .unwrap();
    let lifted = Instant::now();
    let token = support::wait_for(Duration::from_secs(45), || async {
        bed.secrets().get_opt("kai-token").await.ok()??;
        Some(bed.token_in_secret("kai-token").await)
    })
    .await;
    println!(
        "the kept token landed {:.1} s after the quota was lifted",
        lifted.elapsed().as_secs_f64()
    );
    assert_eq!(
        bed.mock.account(CLIENT).await["currentToken"],
        token.as_str(),
        "the kept token is Dhan's live one"
    );
    assert_eq!(mints(&bed.mock, CLIENT).await, 1, "one mint in all");
    bed.wait_phase("kai", Phase::Ready).await;
}
