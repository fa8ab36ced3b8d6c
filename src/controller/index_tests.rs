use super::*;
use crate::crd::{DhanAccountSpec, DhanAccountStatus, LoginStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::ObjectMeta;
use serde_json::json;

fn account(
    ns: &str,
    name: &str,
    client: &str,
    created: i64,
    spec: serde_json::Value,
) -> DhanAccount {
    let mut full = json!({"clientId": client, "credentialsSecret": format!("{name}-creds")});
    full.as_object_mut()
        .unwrap()
        .extend(spec.as_object().unwrap().clone());
    DhanAccount {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(ns.into()),
            uid: Some(format!("uid-{ns}-{name}")),
            creation_timestamp: Some(Time(
                k8s_openapi::jiff::Timestamp::from_second(created).unwrap(),
            )),
            ..Default::default()
        },
        spec: serde_json::from_value::<DhanAccountSpec>(full).unwrap(),
        status: None,
    }
}

fn names(refs: Vec<ObjectRef<DhanAccount>>) -> Vec<String> {
    let mut names: Vec<String> = refs.into_iter().map(|r| r.name).collect();
    names.sort();
    names
}

fn indexed(accounts: &[&DhanAccount]) -> AccountIndex {
    let index = AccountIndex::default();
    for account in accounts {
        index.apply(&watcher::Event::Apply((*account).clone()));
    }
    index
}

#[test]
fn a_secret_leads_to_the_accounts_that_read_or_own_it() {
    let alice = account("t", "alice", "1", 1, json!({"secretName": "shared-out"}));
    let bob = account(
        "t",
        "bob",
        "2",
        1,
        json!({"credentials": {"pin": {"secretName": "team", "key": "bob-pin"}}}),
    );
    let carol = account(
        "t",
        "carol",
        "3",
        1,
        json!({"credentials": {"pin": {"secretName": "team", "key": "carol-pin"}}}),
    );
    let elsewhere = account("u", "dave", "4", 1, json!({}));
    let index = indexed(&[&alice, &bob, &carol, &elsewhere]);
    assert_eq!(
        names(index.secret_users("t", "team", None)),
        ["bob", "carol"]
    );
    assert_eq!(
        names(index.secret_users("t", "alice-creds", None)),
        ["alice"]
    );
    assert_eq!(
        names(index.secret_users("t", "shared-out", None)),
        ["alice"]
    );
    // An output Secret of the default name is known by its account annotation.
    assert_eq!(
        names(index.secret_users("t", "bob-token", Some("bob"))),
        ["bob"]
    );
    assert_eq!(index.secret_users("t", "dave-creds", None), vec![]);
    assert_eq!(index.secret_users("t", "x-token", Some("nobody")), vec![]);
}

#[test]
fn a_changed_spec_forgets_the_secrets_it_no_longer_names() {
    let before = account("t", "alice", "1", 1, json!({}));
    let after = account(
        "t",
        "alice",
        "1",
        1,
        json!({"credentialsSecret": "new-creds"}),
    );
    let index = indexed(&[&before, &after]);
    assert_eq!(index.secret_users("t", "alice-creds", None), vec![]);
    assert_eq!(names(index.secret_users("t", "new-creds", None)), ["alice"]);
}

#[test]
fn a_deleted_account_leaves_every_lookup() {
    let old = account("a", "alice", "1001", 100, json!({}));
    let copy = account("b", "alice-copy", "1001", 200, json!({}));
    let index = indexed(&[&old, &copy]);
    assert_eq!(
        index.winner_over(&copy, chrono::Utc::now()),
        Some("a/alice".into())
    );
    index.apply(&watcher::Event::Delete(old.clone()));
    assert_eq!(
        index.winner_over(&copy, chrono::Utc::now()),
        None,
        "the copy takes over"
    );
    assert_eq!(index.secret_users("a", "alice-creds", None), vec![]);
    assert_eq!(index.login_label_users("a", "alice"), vec![]);
}

#[test]
fn a_relist_replaces_the_index_once_complete() {
    let alice = account("t", "alice", "1", 1, json!({}));
    let bob = account("t", "bob", "2", 1, json!({}));
    let index = indexed(&[&alice, &bob]);
    index.apply(&watcher::Event::Init);
    index.apply(&watcher::Event::InitApply(bob.clone()));
    assert_eq!(
        names(index.secret_users("t", "alice-creds", None)),
        ["alice"],
        "the old view holds until the relist is done"
    );
    index.apply(&watcher::Event::InitDone);
    assert_eq!(index.secret_users("t", "alice-creds", None), vec![]);
    assert_eq!(names(index.secret_users("t", "bob-creds", None)), ["bob"]);
}

#[test]
fn login_pods_lead_to_their_account_by_the_cut_label() {
    let long = "a".repeat(70);
    let account = account("t", &long, "1", 1, json!({}));
    let index = indexed(&[&account]);
    assert_eq!(
        names(index.login_label_users("t", &"a".repeat(63))),
        vec![long]
    );
    assert_eq!(index.login_label_users("u", &"a".repeat(63)), vec![]);
}

#[test]
fn recorded_logins_follow_the_status() {
    let mut alice = account("t", "alice", "1", 1, json!({}));
    let index = indexed(&[&alice]);
    assert!(index.recorded_logins().is_empty());
    alice.status = Some(DhanAccountStatus {
        login: Some(Box::new(LoginStatus {
            job_name: "alice-login-1".into(),
            started_at: chrono::Utc::now(),
            reason: "NoToken".into(),
            refresh_request: None,
        })),
        ..Default::default()
    });
    index.apply(&watcher::Event::Apply(alice.clone()));
    assert_eq!(
        index.recorded_logins(),
        HashSet::from(["uid-t-alice".to_string()])
    );
    alice.status = None;
    index.apply(&watcher::Event::Apply(alice));
    assert!(index.recorded_logins().is_empty());
}

#[test]
fn a_skipped_account_keeps_its_claim_and_leads_nowhere_else() {
    let old = account("a", "alice", "1001", 100, json!({}));
    let copy = account("b", "alice-copy", "1001", 200, json!({}));
    let index = indexed(&[&old, &copy]);
    index.skipped("a", "alice", Claim::of(&old));
    assert_eq!(
        index.winner_over(&copy, chrono::Utc::now()),
        Some("a/alice".into()),
        "it may hold a live token"
    );
    // It is not reconciled: no Secret or login Pod wakes it.
    assert_eq!(
        index.secret_users("a", "alice-creds", Some("alice")),
        vec![]
    );
    assert_eq!(index.login_label_users("a", "alice"), vec![]);

    index.apply(&watcher::Event::Apply(old.clone()));
    assert_eq!(
        index.winner_over(&copy, chrono::Utc::now()),
        Some("a/alice".into()),
        "readable again: its entries replace the claim"
    );
    assert_eq!(
        names(index.secret_users("a", "alice-creds", None)),
        ["alice"]
    );

    index.skipped("a", "alice", Claim::of(&old));
    index.apply(&watcher::Event::Delete(old.clone()));
    assert_eq!(
        index.winner_over(&copy, chrono::Utc::now()),
        None,
        "deleted: the copy takes over"
    );
}

#[test]
fn a_skipped_account_that_claims_nothing_lets_the_next_one_mint() {
    let old = account("a", "alice", "1001", 100, json!({}));
    let copy = account("b", "alice-copy", "1001", 200, json!({}));
    let index = indexed(&[&old, &copy]);
    index.skipped("a", "alice", None);
    assert_eq!(index.winner_over(&copy, chrono::Utc::now()), None);
}

#[test]
fn a_skipped_account_in_a_relist_keeps_its_claim() {
    let old = account("a", "alice", "1001", 100, json!({}));
    let copy = account("b", "alice-copy", "1001", 200, json!({}));
    let index = indexed(&[&old, &copy]);
    index.apply(&watcher::Event::Init);
    index.skipped("a", "alice", Claim::of(&old));
    index.apply(&watcher::Event::InitApply(copy.clone()));
    index.apply(&watcher::Event::InitDone);
    assert_eq!(
        index.winner_over(&copy, chrono::Utc::now()),
        Some("a/alice".into())
    );
    assert_eq!(index.secret_users("a", "alice-creds", None), vec![]);
}

fn drain(
    wakes: &mut futures::channel::mpsc::UnboundedReceiver<ObjectRef<DhanAccount>>,
) -> Vec<String> {
    let mut woken = Vec::new();
    while let Ok(reference) = wakes.try_recv() {
        woken.push(format!(
            "{}/{}",
            reference.namespace.unwrap_or_default(),
            reference.name
        ));
    }
    woken.sort();
    woken
}

/// An account in `Conflict` does not poll: a change of another claim on its client ID wakes it,
/// and nothing else does.
#[test]
fn a_change_of_a_claim_wakes_the_other_accounts_of_its_client_id_only() {
    let alice = account("a", "alice", "1", 1, json!({}));
    let copy = account("b", "alice-copy", "1", 2, json!({}));
    let bob = account("b", "bob", "2", 1, json!({}));
    let index = indexed(&[&alice, &copy, &bob]);
    let mut wakes = index.wakes();

    // The same claim again (a label, a status field the claim does not read): no one.
    let mut relabelled = alice.clone();
    relabelled.metadata.labels = Some([("x".to_string(), "y".to_string())].into());
    index.apply(&watcher::Event::Apply(relabelled));
    assert_eq!(drain(&mut wakes), Vec::<String>::new());

    // Suspended: it stops holding, the copy may take over.
    let mut suspended = alice.clone();
    suspended.spec.suspend = Some(true);
    index.apply(&watcher::Event::Apply(suspended));
    assert_eq!(drain(&mut wakes), ["b/alice-copy"]);

    // Deleted, and a client ID changed: the rivals of the old and of the new one.
    index.apply(&watcher::Event::Delete(alice.clone()));
    assert_eq!(drain(&mut wakes), ["b/alice-copy"]);
    let mut moved = copy.clone();
    moved.spec.client_id = "2".into();
    index.apply(&watcher::Event::Apply(moved));
    assert_eq!(drain(&mut wakes), ["b/bob"]);
}

/// Time alone ends a claim that holds while its token lives: the loser looks again then.
#[test]
fn the_next_verdict_change_is_when_a_holding_token_expires() {
    let now = chrono::DateTime::from_timestamp(1_000_000, 0).unwrap();
    let expires = now + chrono::Duration::hours(3);
    let mut alice = account("a", "alice", "1", 1, json!({"suspend": true}));
    alice.status = Some(DhanAccountStatus {
        expires_at: Some(expires),
        ..Default::default()
    });
    let index = indexed(&[&alice]);
    assert_eq!(index.next_verdict_change("1", now), Some(expires));
    assert_eq!(index.next_verdict_change("1", expires), None);
    assert_eq!(index.next_verdict_change("2", now), None);
}

/// `kubectl replace --force` of the account holding the live token: for a short grace the
/// deleted account keeps the client ID, and its re-creation (younger than the other account
/// now) inherits the token it will adopt; without a re-creation the other account takes over.
/// Found by the simulation (seed 5, 30 days): the older account minted at once, killing the
/// token the re-created account was about to adopt.
#[tokio::test(start_paused = true)]
async fn a_replaced_account_keeps_its_live_token_from_an_older_rival() {
    let start = chrono::DateTime::from_timestamp(1_000_000, 0).unwrap();
    let clock: Arc<dyn crate::clock::Clock> =
        Arc::new(crate::clock::TokioClock::starting_at(start));
    let index = AccountIndex::new(clock.clone());
    let rival = account("a", "rival", "1", 1, json!({}));
    let mut holder = account("b", "holder", "1", 2, json!({}));
    holder.status = Some(DhanAccountStatus {
        phase: Some(crate::crd::Phase::Ready),
        expires_at: Some(start + chrono::Duration::hours(20)),
        ..Default::default()
    });
    index.apply(&watcher::Event::Apply(rival.clone()));
    index.apply(&watcher::Event::Apply(holder.clone()));
    assert_eq!(
        index.winner_over(&rival, clock.now()).as_deref(),
        Some("b/holder")
    );

    index.apply(&watcher::Event::Delete(holder.clone()));
    assert_eq!(
        index.winner_over(&rival, clock.now()).as_deref(),
        Some("b/holder"),
        "the deleted holder's token still lives: a grace before anyone mints over it"
    );
    let mut recreated = account("b", "holder", "1", 500, json!({}));
    recreated.metadata.uid = Some("uid-b-holder-2".into());
    index.apply(&watcher::Event::Apply(recreated.clone()));
    tokio::time::advance(REPLACE_GRACE * 2).await;
    assert_eq!(
        index.winner_over(&recreated, clock.now()),
        None,
        "it adopts the token"
    );
    assert_eq!(
        index.winner_over(&rival, clock.now()).as_deref(),
        Some("b/holder")
    );

    // Deleted for good: once the grace is over, the rival may mint.
    index.apply(&watcher::Event::Delete(recreated));
    assert_eq!(
        index.winner_over(&rival, clock.now()).as_deref(),
        Some("b/holder")
    );
    tokio::time::advance(REPLACE_GRACE + std::time::Duration::from_secs(1)).await;
    assert_eq!(index.winner_over(&rival, clock.now()), None);
}
