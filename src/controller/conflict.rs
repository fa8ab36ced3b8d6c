//! One minter per client ID: a new token kills the client's previous one (docs/dhan-api.md §1), so
//! two DhanAccounts minting for one client would knock each other's tokens out. The oldest
//! account wins (ties broken by namespace/name), across all namespaces. An older account that
//! failed for good (its credentials are missing, or Dhan refused them) and holds no live token
//! does not count: otherwise anyone could name another team's client ID first, with no
//! credentials at all, and keep the real owner's account in `Conflict` for ever.

use crate::crd::{DhanAccount, Phase};
use chrono::{DateTime, Utc};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::ObjectMeta;
use std::collections::HashMap;

/// An account's claim on its client ID. The order is the rule: the least claim mints.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Claim {
    created: Option<Timestamp>,
    namespace: String,
    name: String,
    uid: String,
    /// Until when it keeps others from minting: for ever, unless it failed for good; then
    /// while its last token lives (a mint by another would kill it).
    holds_until: Option<DateTime<Utc>>,
}

impl Claim {
    /// The claim `account` makes, if any: one being deleted claims nothing.
    pub fn of(account: &DhanAccount) -> Option<(String, Claim)> {
        let status = account.status.as_ref();
        let until = holds_until(
            status.and_then(|s| s.phase),
            status.and_then(|s| s.expires_at),
        );
        Claim::new(&account.metadata, &account.spec.client_id, until)
    }

    /// The claim of an account known by its metadata and client ID, keeping others from
    /// minting until `holds_until` (`None`: for ever); one being deleted claims nothing.
    pub fn new(
        metadata: &ObjectMeta,
        client_id: &str,
        holds_until: Option<DateTime<Utc>>,
    ) -> Option<(String, Claim)> {
        if metadata.deletion_timestamp.is_some() {
            return None;
        }
        let claim = Claim {
            created: metadata.creation_timestamp.as_ref().map(|t| t.0),
            namespace: metadata.namespace.clone().unwrap_or_default(),
            name: metadata.name.clone().unwrap_or_default(),
            uid: metadata.uid.clone().unwrap_or_default(),
            holds_until,
        };
        Some((client_id.trim().to_string(), claim))
    }

    fn holds(&self, now: DateTime<Utc>) -> bool {
        self.holds_until.is_none_or(|until| until > now)
    }
}

/// Until when an account whose status shows `phase` and `expires_at` keeps others from minting;
/// `None`: for ever.
pub fn holds_until(
    phase: Option<Phase>,
    expires_at: Option<DateTime<Utc>>,
) -> Option<DateTime<Utc>> {
    if phase != Some(Phase::Failed) {
        return None;
    }
    Some(expires_at.unwrap_or(DateTime::<Utc>::MIN_UTC))
}

/// Every claim, by client ID, least first: finding the winner costs the same whatever the number
/// of accounts. A client ID has one claim, rarely two, so each is a sorted `Vec` (a `BTreeSet`'s
/// first node alone holds room for eleven).
#[derive(Default)]
pub struct Claims(HashMap<String, Vec<Claim>>);

impl Claims {
    pub fn insert(&mut self, client_id: String, claim: Claim) {
        let claims = self.0.entry(client_id).or_default();
        if let Err(at) = claims.binary_search(&claim) {
            claims.insert(at, claim);
            claims.shrink_to_fit();
        }
    }

    pub fn remove(&mut self, client_id: &str, claim: &Claim) {
        if let Some(claims) = self.0.get_mut(client_id) {
            claims.retain(|c| c != claim);
            if claims.is_empty() {
                self.0.remove(client_id);
            }
        }
    }

    /// The account that may mint for `account`'s client ID at `now` when it is not `account`
    /// itself, as `namespace/name`. Walks the claims oldest first, past those that no longer
    /// hold: in practice one or two.
    pub fn winner_over(&self, account: &DhanAccount, now: DateTime<Utc>) -> Option<String> {
        let uid = account.uid().unwrap_or_default();
        let winner = self
            .0
            .get(account.spec.client_id.trim())?
            .iter()
            .find(|claim| claim.uid == uid || claim.holds(now))?;
        (winner.uid != uid).then(|| format!("{}/{}", winner.namespace, winner.name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{DhanAccountSpec, DhanAccountStatus};
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

    const NOW: DateTime<Utc> = DateTime::from_timestamp(1_000_000, 0).unwrap();

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
        assert_eq!(all.winner_over(&old, NOW), None);
        assert_eq!(all.winner_over(&new, NOW), Some("team-a/alice".into()));
        assert_eq!(all.winner_over(&other, NOW), None);
    }

    #[test]
    fn deleting_the_winner_lets_the_other_take_over() {
        let mut old = account("team-a", "alice", "1001", 100);
        let new = account("team-b", "alice-copy", "1001", 200);
        let mut all = claims(&[&old, &new]);
        assert_eq!(all.winner_over(&new, NOW), Some("team-a/alice".into()));
        let (client, claim) = Claim::of(&old).unwrap();
        old.metadata.deletion_timestamp = old.metadata.creation_timestamp.clone();
        assert_eq!(
            Claim::of(&old),
            None,
            "an account being deleted claims nothing"
        );
        all.remove(&client, &claim);
        assert_eq!(all.winner_over(&new, NOW), None);
    }

    #[test]
    fn same_age_is_broken_by_namespace_and_name() {
        let a = account("a", "x", "1001", 100);
        let b = account("b", "x", "1001", 100);
        let all = claims(&[&b, &a]);
        assert_eq!(all.winner_over(&b, NOW), Some("a/x".into()));
        assert_eq!(all.winner_over(&a, NOW), None);
    }

    #[test]
    fn an_older_account_that_failed_for_good_holds_only_while_its_token_lives() {
        let with = |phase, expires: Option<DateTime<Utc>>| {
            let mut old = account("team-a", "squatter", "1001", 100);
            old.status = Some(DhanAccountStatus {
                phase: Some(phase),
                expires_at: expires,
                ..Default::default()
            });
            old
        };
        let owner = account("team-b", "alice", "1001", 200);
        let hour = chrono::Duration::hours(1);
        for (old, holds) in [
            (account("team-a", "squatter", "1001", 100), true),
            (with(Phase::Backoff, None), true),
            (with(Phase::Failed, None), false),
            (with(Phase::Failed, Some(NOW - hour)), false),
            (with(Phase::Failed, Some(NOW + hour)), true),
        ] {
            let all = claims(&[&old, &owner]);
            let expected = holds.then(|| "team-a/squatter".to_string());
            assert_eq!(all.winner_over(&owner, NOW), expected, "{:?}", old.status);
            assert_eq!(all.winner_over(&old, NOW), None, "never in its own way");
        }
    }
}
