//! One minter per client ID: a new token kills the client's previous one (docs/dhan-api.md §1), so
//! two DhanAccounts minting for one client would knock each other's tokens out. Of the accounts
//! that hold the client ID, the one with the newest live token wins (its token is not killed for
//! another's; an older "live" token was killed by the newer one's mint), then the oldest (ties
//! broken by namespace/name), across all namespaces.
//! Only an account that holds a live token, or is obtaining one, holds a client ID: one that
//! failed for good (its credentials are missing, or Dhan refused them), is suspended, or lost a
//! conflict itself does not, unless its token still lives — otherwise anyone could name another
//! team's client ID first and keep the real owner's account in `Conflict` for ever.

use crate::claims::claim_name;
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
    /// Until when it keeps others from minting: for ever while it is obtaining tokens;
    /// otherwise while its last token lives (a mint by another would kill it).
    holds_until: Option<DateTime<Utc>>,
    /// When its token expires, as its status says.
    expires_at: Option<DateTime<Utc>>,
    /// In `Conflict` (and not suspended): it lost to another account and would mint were that
    /// one to let go. Among accounts that wait, the order still rules: two that lost to the same
    /// account, woken together when it lets go, must not both mint (found by the simulation,
    /// seed 13).
    waiting: bool,
}

impl Claim {
    /// The claim `account` makes, if any: one being deleted claims nothing.
    pub fn of(account: &DhanAccount) -> Option<(String, Claim)> {
        let status = account.status.as_ref();
        // A status about another client's token (its `clientId` was edited since) holds
        // nothing of this client's (the simulation, seed 1316).
        let token = status.filter(|s| s.describes_client(&account.spec.client_id));
        // A mint whose answer was lost may have made a token that lives a day (dhan-api.md
        // §1): until it is probed, the account counts as holding one, so an older account
        // waiting for the client ID does not mint over it (the simulation, seed 9 of 30 days).
        let unconfirmed = token
            .and_then(|s| s.mint_unconfirmed_at)
            .map(|t| t + chrono::Duration::hours(24));
        let expires_at = token.and_then(|s| s.expires_at).max(unconfirmed);
        let phase = status.and_then(|s| s.phase);
        let suspended = account.spec.suspend == Some(true);
        let until = holds_until(phase, expires_at, suspended);
        let (client, claim) = Claim::new(
            &account.metadata,
            &account.spec.client_id,
            until,
            expires_at,
        )?;
        let waiting = phase == Some(Phase::Conflict) && !suspended;
        Some((client, Claim { waiting, ..claim }))
    }

    /// The claim of an account known by its metadata and client ID, keeping others from
    /// minting until `holds_until` (`None`: for ever), its token live until `expires_at`; one
    /// being deleted claims nothing.
    pub fn new(
        metadata: &ObjectMeta,
        client_id: &str,
        holds_until: Option<DateTime<Utc>>,
        expires_at: Option<DateTime<Utc>>,
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
            expires_at,
            waiting: false,
        };
        Some((client_id.trim().to_string(), claim))
    }

    /// What is left of this claim when its account is deleted at `now`: while its token lives,
    /// it holds for `grace` more, so that a re-creation (`kubectl replace --force`, a GitOps
    /// re-sync) adopts the token before another account of the client ID mints and kills it.
    pub fn tombstone(&self, now: DateTime<Utc>, grace: chrono::Duration) -> Option<Claim> {
        let expires_at = self.expires_at.filter(|t| *t > now)?;
        Some(Claim {
            holds_until: Some(expires_at.min(now + grace)),
            ..self.clone()
        })
    }

    pub fn uid(&self) -> &str {
        &self.uid
    }

    /// This claim, made by the re-creation of the account `tombstone` is left of: until its
    /// status tells, it holds the token it will adopt.
    pub fn inherit(self, tombstone: &Claim) -> Claim {
        let expires_at = self.expires_at.or(tombstone.expires_at);
        Claim {
            // Not obtaining (suspended, say): it holds while the inherited token lives.
            holds_until: self.holds_until.map(|t| expires_at.map_or(t, |e| t.max(e))),
            expires_at,
            ..self
        }
    }

    fn holds(&self, now: DateTime<Utc>) -> bool {
        self.holds_until.is_none_or(|until| until > now)
    }

    fn live(&self, now: DateTime<Utc>) -> bool {
        self.expires_at.is_some_and(|at| at > now)
    }
}

/// Until when an account whose status shows `phase` and `expires_at` keeps others from minting:
/// for ever (`None`) while it is obtaining tokens, otherwise while its last token lives.
pub fn holds_until(
    phase: Option<Phase>,
    expires_at: Option<DateTime<Utc>>,
    suspended: bool,
) -> Option<DateTime<Utc>> {
    let obtaining = !suspended
        && !matches!(
            phase,
            Some(Phase::Failed | Phase::Conflict | Phase::Suspended)
        );
    if obtaining {
        return None;
    }
    Some(expires_at.unwrap_or(DateTime::<Utc>::MIN_UTC))
}

/// Every claim, by client ID, least first: finding the winner costs the same whatever the number
/// of accounts. A client ID has one claim, rarely two, so each is a sorted `Vec` (a `BTreeSet`'s
/// first node alone holds room for eleven).
#[derive(Default)]
pub struct Claims(HashMap<String, Vec<Claim>>, ByClaimName);

/// The client IDs by the name of their cluster-wide claim (a hash: it cannot be read back).
#[derive(Default)]
struct ByClaimName(HashMap<String, String>);

impl Claims {
    pub fn insert(&mut self, client_id: String, claim: Claim) {
        if !self.0.contains_key(&client_id) {
            (self.1).0.insert(claim_name(&client_id), client_id.clone());
        }
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
                (self.1).0.remove(&claim_name(client_id));
            }
        }
    }

    /// The client ID whose cluster-wide claim is named `name`, if an account here claims it.
    pub fn client_of_claim(&self, name: &str) -> Option<&str> {
        (self.1).0.get(name).map(String::as_str)
    }

    /// The accounts claiming `client_id`, as (namespace, name).
    pub fn accounts_of(&self, client_id: &str) -> impl Iterator<Item = (&str, &str)> {
        self.0
            .get(client_id)
            .into_iter()
            .flatten()
            .map(|c| (c.namespace.as_str(), c.name.as_str()))
    }

    /// The first moment after `now` at which a claim on `client_id` stops holding or its token
    /// expires: the verdict can change then without any event.
    pub fn next_change(&self, client_id: &str, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.0
            .get(client_id.trim())?
            .iter()
            .flat_map(|c| [c.holds_until, c.expires_at])
            .flatten()
            .filter(|t| *t > now)
            .min()
    }

    /// The account that may mint for `account`'s client ID at `now` when it is not `account`
    /// itself, as `namespace/name`: the holder of the newest live token, else the oldest holder
    /// (`account` itself counts as holding: it is being reconciled; to an account waiting in
    /// `Conflict`, the others waiting count too). Walks the claims oldest
    /// first: in practice one or two.
    pub fn winner_over(&self, account: &DhanAccount, now: DateTime<Utc>) -> Option<String> {
        let uid = account.uid().unwrap_or_default();
        let claims = self.0.get(account.spec.client_id.trim())?;
        let waits = claims.iter().any(|c| c.uid == uid && c.waiting);
        let holding =
            |claim: &&Claim| claim.uid == uid || claim.holds(now) || (waits && claim.waiting);
        // A mint kills every older token of its client, so of the tokens statuses call live
        // only the newest can be: its account wins (the oldest of those, on a tie). Another
        // "live" one was killed by it, whatever its expiry says (the simulation, seed 2605).
        let winner = claims
            .iter()
            .filter(holding)
            .filter(|claim| claim.live(now))
            .min_by_key(|claim| std::cmp::Reverse(claim.expires_at))
            .or_else(|| claims.iter().find(holding))?;
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

    /// Two accounts that lost to a third are woken together when it lets go (it failed): the
    /// older of them mints, the other keeps waiting. Before, neither counted the other (both in
    /// `Conflict`, neither holding), and both minted (the simulation, seed 13).
    #[test]
    fn of_two_waiting_accounts_only_the_older_takes_over() {
        let with = |name, created, phase| {
            let mut a = account("team-a", name, "1001", created);
            a.status = Some(DhanAccountStatus {
                phase: Some(phase),
                ..Default::default()
            });
            a
        };
        let failed = with("first", 100, Phase::Failed);
        let older = with("second", 200, Phase::Conflict);
        let younger = with("third", 300, Phase::Conflict);
        let all = claims(&[&failed, &older, &younger]);
        assert_eq!(all.winner_over(&older, NOW), None);
        assert_eq!(all.winner_over(&younger, NOW), Some("team-a/second".into()));
        // Once the older one is no longer waiting (it obtains tokens), it holds as before.
        let obtaining = with("second", 200, Phase::Pending);
        let all = claims(&[&failed, &obtaining, &younger]);
        assert_eq!(all.winner_over(&younger, NOW), Some("team-a/second".into()));
    }

    /// An account whose `clientId` was edited keeps, until its status catches up, the expiry of
    /// its old client's token: that token holds nothing of the new client's, so a younger
    /// account with a live token of the new client (a re-created holder) still wins (the
    /// simulation, seed 1316).
    #[test]
    fn a_token_of_the_client_named_before_an_edit_holds_nothing() {
        let live = |client: &str| DhanAccountStatus {
            phase: Some(Phase::Conflict),
            expires_at: Some(NOW + chrono::Duration::hours(20)),
            token_client_id: Some(client.into()),
            ..Default::default()
        };
        let mut edited = account("team-a", "edited", "1001", 100);
        edited.status = Some(live("2002"));
        let mut holder = account("team-b", "holder", "1001", 200);
        holder.status = Some(DhanAccountStatus {
            phase: Some(Phase::Ready),
            ..live("1001")
        });
        let all = claims(&[&edited, &holder]);
        assert_eq!(all.winner_over(&holder, NOW), None);
        assert_eq!(all.winner_over(&edited, NOW), Some("team-b/holder".into()));
        // Had the old token been of this client, the older account would have won.
        edited.status = Some(live("1001"));
        let all = claims(&[&edited, &holder]);
        assert_eq!(all.winner_over(&holder, NOW), Some("team-a/edited".into()));
    }

    /// Two statuses call their tokens live, but a mint kills every older token of the client:
    /// only the newest lives, and its account wins, even over an older account (the simulation,
    /// seed 2605: an account edited away from a client and back still showed the token the other
    /// account's mint had killed, won, and minted over the live one).
    #[test]
    fn of_two_live_tokens_the_newest_wins() {
        let live = |hours| DhanAccountStatus {
            phase: Some(Phase::Ready),
            expires_at: Some(NOW + chrono::Duration::hours(hours)),
            ..Default::default()
        };
        let mut older = account("team-a", "older", "1001", 100);
        older.status = Some(live(2));
        let mut younger = account("team-a", "younger", "1001", 200);
        younger.status = Some(live(20));
        let all = claims(&[&older, &younger]);
        assert_eq!(all.winner_over(&younger, NOW), None);
        assert_eq!(all.winner_over(&older, NOW), Some("team-a/younger".into()));
    }

    /// A younger account whose mint's answer was lost may hold a live token Dhan made: an older
    /// account waiting for the client ID does not mint over it.
    #[test]
    fn a_mint_with_a_lost_answer_counts_as_a_live_token() {
        let mut waiting = account("team-a", "older", "1001", 100);
        waiting.status = Some(DhanAccountStatus {
            phase: Some(Phase::Conflict),
            ..Default::default()
        });
        let mut minting = account("team-b", "younger", "1001", 200);
        minting.status = Some(DhanAccountStatus {
            phase: Some(Phase::Backoff),
            mint_unconfirmed_at: Some(NOW - chrono::Duration::minutes(2)),
            ..Default::default()
        });
        let all = claims(&[&waiting, &minting]);
        assert_eq!(
            all.winner_over(&waiting, NOW),
            Some("team-b/younger".into())
        );
        assert_eq!(all.winner_over(&minting, NOW), None);
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
    fn a_live_token_is_not_killed_for_an_older_account() {
        let hour = chrono::Duration::hours(1);
        let mut old = account("team-a", "unsuspended", "1001", 100);
        old.status = Some(DhanAccountStatus {
            phase: Some(Phase::Pending),
            ..Default::default()
        });
        let mut live = account("team-b", "alice", "1001", 200);
        live.status = Some(DhanAccountStatus {
            phase: Some(Phase::Ready),
            expires_at: Some(NOW + hour),
            ..Default::default()
        });
        let all = claims(&[&old, &live]);
        assert_eq!(all.winner_over(&old, NOW), Some("team-b/alice".into()));
        assert_eq!(all.winner_over(&live, NOW), None);
        // Once it has lapsed, age decides again.
        let later = NOW + hour + hour;
        assert_eq!(
            all.winner_over(&live, later),
            Some("team-a/unsuspended".into())
        );
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
    fn an_older_account_holds_only_while_it_obtains_tokens_or_its_token_lives() {
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
        let suspended = |phase, expires| {
            let mut old = with(phase, expires);
            old.spec.suspend = Some(true);
            old
        };
        for (old, holds) in [
            (account("team-a", "squatter", "1001", 100), true),
            (with(Phase::Pending, None), true),
            (with(Phase::Backoff, None), true),
            (with(Phase::Expired, None), true),
            (with(Phase::Failed, None), false),
            (with(Phase::Failed, Some(NOW - hour)), false),
            (with(Phase::Failed, Some(NOW + hour)), true),
            (with(Phase::Conflict, None), false),
            (with(Phase::Conflict, Some(NOW + hour)), true),
            (with(Phase::Suspended, None), false),
            (suspended(Phase::Pending, None), false),
            (suspended(Phase::Ready, Some(NOW + hour)), true),
            (suspended(Phase::Ready, Some(NOW - hour)), false),
        ] {
            let all = claims(&[&old, &owner]);
            let expected = holds.then(|| "team-a/squatter".to_string());
            assert_eq!(all.winner_over(&owner, NOW), expected, "{:?}", old.status);
            assert_eq!(all.winner_over(&old, NOW), None, "never in its own way");
        }
    }
}
