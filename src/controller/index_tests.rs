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
