//! One minter per client ID: a new token kills the client's previous one (docs/dhan-api.md §1), so
//! two DhanAccounts minting for one client would knock each other's tokens out. The oldest
//! account wins (ties broken by namespace/name), across all namespaces.

use crate::crd::DhanAccount;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use std::collections::{BTreeSet, HashMap};

/// An account's claim on its client ID. The order is the rule: the least claim mints.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Claim {
    created: Option<Timestamp>,
    namespace: String,
    name: String,
    uid: String,
}

impl Claim {
    /// The claim `account` makes, if any: one being deleted claims nothing.
    pub fn of(account: &DhanAccount) -> Option<(String, Claim)> {
        if account.metadata.deletion_timestamp.is_some() {
            return None;
        }
        let claim = Claim {
            created: account.creation_timestamp().map(|t| t.0),
            namespace: account.namespace().unwrap_or_default(),
            name: account.name_any(),
            uid: account.uid().unwrap_or_default(),
        };
        Some((account.spec.client_id.trim().to_string(), claim))
    }
}

/// Every claim, by client ID: finding the winner costs the same whatever the number of accounts.
#[derive(Default)]
pub struct Claims(HashMap<String, BTreeSet<Claim>>);

impl Claims {
    pub fn insert(&mut self, client_id: String, claim: Claim) {
        self.0.entry(client_id).or_default().insert(claim);
    }

    pub fn remove(&mut self, client_id: &str, claim: &Claim) {
        if let Some(set) = self.0.get_mut(client_id) {
            set.remove(claim);
            if set.is_empty() {
                self.0.remove(client_id);
            }
        }
    }

    /// The account that may mint for `account`'s client ID when it is not `account` itself,
    /// as `namespace/name`.
    pub fn winner_over(&self, account: &DhanAccount) -> Option<String> {
        let winner = self.0.get(account.spec.client_id.trim())?.first()?;
        (Some(&winner.uid) != account.uid().as_ref())
            .then(|| format!("{}/{}", winner.namespace, winner.name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::DhanAccountSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use kube::api::ObjectMeta;

    fn account(ns: &str, name: &str, client: &str, created_secs: i64) -> DhanAccount {
        DhanAccount {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(ns.into()),
                uid: Some(format!("{ns}-{name}")),
                creation_timestamp: Some(Time(Timestamp::from_second(created_secs).unwrap())),
                ..Default::default()
            },
            spec: DhanAccountSpec {
                client_id: client.into(),
                ..Default::default()
            },
            status: None,
        }
    }

    fn claims(accounts: &[&DhanAccount]) -> Claims {
        let mut claims = Claims::default();
        for (client, claim) in accounts.iter().filter_map(|a| Claim::of(a)) {
            claims.insert(client, claim);
        }
        claims
    }

    #[test]
    fn the_older_account_wins_across_namespaces() {
        let old = account("team-a", "alice", "1001", 100);
        let new = account("team-b", "alice-copy", " 1001 ", 200);
        let other = account("team-b", "bob", "2002", 50);
        let all = claims(&[&old, &new, &other]);
        assert_eq!(all.winner_over(&old), None);
        assert_eq!(all.winner_over(&new), Some("team-a/alice".into()));
        assert_eq!(all.winner_over(&other), None);
    }

    #[test]
    fn deleting_the_winner_lets_the_other_take_over() {
        let mut old = account("team-a", "alice", "1001", 100);
        let new = account("team-b", "alice-copy", "1001", 200);
        let mut all = claims(&[&old, &new]);
        assert_eq!(all.winner_over(&new), Some("team-a/alice".into()));
        let (client, claim) = Claim::of(&old).unwrap();
        old.metadata.deletion_timestamp = old.metadata.creation_timestamp.clone();
        assert_eq!(
            Claim::of(&old),
            None,
            "an account being deleted claims nothing"
        );
        all.remove(&client, &claim);
        assert_eq!(all.winner_over(&new), None);
    }

    #[test]
    fn same_age_is_broken_by_namespace_and_name() {
        let a = account("a", "x", "1001", 100);
        let b = account("b", "x", "1001", 100);
        let all = claims(&[&b, &a]);
        assert_eq!(all.winner_over(&b), Some("a/x".into()));
        assert_eq!(all.winner_over(&a), None);
    }
}
