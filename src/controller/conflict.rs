//! One minter per client ID: a new token kills the client's previous one (docs/dhan-api.md §1), so
//! two DhanAccounts minting for one client would knock each other's tokens out.

use crate::crd::DhanAccount;
use kube::ResourceExt;

/// The account that may mint for `account`'s client ID when it is not `account` itself: the
/// oldest one (ties broken by namespace/name), across all namespaces.
pub fn winner_over<'a>(
    account: &DhanAccount,
    all: impl IntoIterator<Item = &'a DhanAccount>,
) -> Option<String> {
    let client_id = account.spec.client_id.trim();
    let key = |a: &DhanAccount| {
        (
            a.creation_timestamp().map(|t| t.0),
            a.namespace().unwrap_or_default(),
            a.name_any(),
        )
    };
    let winner = all
        .into_iter()
        .filter(|other| other.spec.client_id.trim() == client_id)
        .filter(|other| other.metadata.deletion_timestamp.is_none())
        .min_by_key(|other| key(other))?;
    if winner.uid() == account.uid() {
        None
    } else {
        Some(format!(
            "{}/{}",
            winner.namespace().unwrap_or_default(),
            winner.name_any()
        ))
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
                creation_timestamp: Some(Time(
                    k8s_openapi::jiff::Timestamp::from_second(created_secs).unwrap(),
                )),
                ..Default::default()
            },
            spec: DhanAccountSpec {
                client_id: client.into(),
                ..Default::default()
            },
            status: None,
        }
    }

    #[test]
    fn the_older_account_wins_across_namespaces() {
        let old = account("team-a", "alice", "1001", 100);
        let new = account("team-b", "alice-copy", "1001", 200);
        let other = account("team-b", "bob", "2002", 50);
        let all = [old.clone(), new.clone(), other.clone()];
        assert_eq!(winner_over(&old, &all), None);
        assert_eq!(winner_over(&new, &all), Some("team-a/alice".into()));
        assert_eq!(winner_over(&other, &all), None);
    }

    #[test]
    fn deleting_the_winner_lets_the_other_take_over() {
        let mut old = account("team-a", "alice", "1001", 100);
        let new = account("team-b", "alice-copy", "1001", 200);
        old.metadata.deletion_timestamp = old.metadata.creation_timestamp.clone();
        assert_eq!(winner_over(&new, &[old, new.clone()]), None);
    }

    #[test]
    fn same_age_is_broken_by_namespace_and_name() {
        let a = account("a", "x", "1001", 100);
        let b = account("b", "x", "1001", 100);
        assert_eq!(winner_over(&b, &[a.clone(), b.clone()]), Some("a/x".into()));
        assert_eq!(winner_over(&a, &[a.clone(), b]), None);
    }
}
