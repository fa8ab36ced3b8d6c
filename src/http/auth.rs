//! Who may read `/metrics`: the caller's bearer token goes to the API server in a TokenReview,
//! and the user it names in a SubjectAccessReview for `get` on the non-resource URL `/metrics`
//! — what kube-rbac-proxy and controller-runtime's secure metrics do, so a Prometheus bound to
//! the usual `metrics-reader` ClusterRole scrapes as before. Answers are cached for a short
//! while, keyed by a hash of the token (never the token), so a scrape every few seconds costs
//! no review each time.

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec, UserInfo};
use k8s_openapi::api::authorization::v1::{
    NonResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::PostParams;
use kube::{Api, Client};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Mutex;
use tokio::time::{Duration, Instant};
use tracing::warn;

/// How long an answer is reused.
pub const CACHE_FOR: Duration = Duration::from_secs(30);
/// Most answers kept; beyond that the cache starts afresh (a flood of made-up tokens must not
/// grow it without bound).
const CACHE_SIZE: usize = 1024;

/// What the API server says about a caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    /// No token, or one the API server does not accept.
    Unauthenticated,
    /// A known user without `get` on `/metrics`.
    Forbidden,
    /// The API server could not be asked; not cached.
    Unknown,
}

/// Checks callers of `/metrics` with the API server.
pub struct MetricsAuth {
    client: Client,
    cache: Mutex<HashMap<[u8; 32], (Instant, Verdict)>>,
}

impl MetricsAuth {
    pub fn new(client: Client) -> MetricsAuth {
        MetricsAuth {
            client,
            cache: Mutex::default(),
        }
    }

    /// The verdict on a request carrying `token` (its bearer token, if any).
    pub async fn verdict(&self, token: Option<&str>) -> Verdict {
        let Some(token) = token else {
            return Verdict::Unauthenticated;
        };
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let now = Instant::now();
        if let Some(verdict) = cached(&self.cache.lock().expect("cache poisoned"), &key, now) {
            return verdict;
        }
        let verdict = self.ask(token).await;
        if verdict != Verdict::Unknown {
            let mut cache = self.cache.lock().expect("cache poisoned");
            if cache.len() >= CACHE_SIZE {
                cache.clear();
            }
            cache.insert(key, (now, verdict));
        }
        verdict
    }

    async fn ask(&self, token: &str) -> Verdict {
        match self.review(token).await {
            Ok(verdict) => verdict,
            Err(error) => {
                warn!(%error, "could not review a /metrics caller with the API server");
                Verdict::Unknown
            }
        }
    }

    async fn review(&self, token: &str) -> Result<Verdict, kube::Error> {
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_string()),
                ..TokenReviewSpec::default()
            },
            ..TokenReview::default()
        };
        let reviewed = Api::<TokenReview>::all(self.client.clone())
            .create(&PostParams::default(), &review)
            .await?;
        let status = reviewed.status.unwrap_or_default();
        let Some(user) = status.user.filter(|_| status.authenticated == Some(true)) else {
            return Ok(Verdict::Unauthenticated);
        };
        let access = Api::<SubjectAccessReview>::all(self.client.clone())
            .create(&PostParams::default(), &access_review(user))
            .await?;
        let allowed = access.status.is_some_and(|s| s.allowed);
        Ok(if allowed {
            Verdict::Allowed
        } else {
            Verdict::Forbidden
        })
    }
}

fn cached(
    cache: &HashMap<[u8; 32], (Instant, Verdict)>,
    key: &[u8; 32],
    now: Instant,
) -> Option<Verdict> {
    cache
        .get(key)
        .filter(|(at, _)| now.saturating_duration_since(*at) < CACHE_FOR)
        .map(|(_, verdict)| *verdict)
}

/// May `user` `get` the non-resource URL `/metrics`?
fn access_review(user: UserInfo) -> SubjectAccessReview {
    SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: user.username,
            uid: user.uid,
            groups: user.groups,
            extra: user.extra,
            non_resource_attributes: Some(NonResourceAttributes {
                path: Some("/metrics".into()),
                verb: Some("get".into()),
            }),
            ..SubjectAccessReviewSpec::default()
        },
        ..SubjectAccessReview::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn an_answer_is_reused_only_for_a_short_while() {
        let mut cache = HashMap::new();
        let key = [7u8; 32];
        let at = Instant::now();
        cache.insert(key, (at, Verdict::Forbidden));
        assert_eq!(cached(&cache, &key, at), Some(Verdict::Forbidden));
        assert_eq!(cached(&cache, &[8u8; 32], at), None, "another token");
        tokio::time::advance(CACHE_FOR).await;
        assert_eq!(cached(&cache, &key, Instant::now()), None);
    }

    #[test]
    fn the_access_review_asks_for_get_on_the_metrics_path_as_the_reviewed_user() {
        let review = access_review(UserInfo {
            username: Some("system:serviceaccount:monitoring:prometheus".into()),
            groups: Some(vec!["system:serviceaccounts".into()]),
            ..UserInfo::default()
        });
        let attributes = review.spec.non_resource_attributes.unwrap();
        assert_eq!(attributes.path.as_deref(), Some("/metrics"));
        assert_eq!(attributes.verb.as_deref(), Some("get"));
        assert_eq!(
            review.spec.user.as_deref(),
            Some("system:serviceaccount:monitoring:prometheus")
        );
        assert_eq!(
            review.spec.groups,
            Some(vec!["system:serviceaccounts".to_string()])
        );
        assert!(review.spec.resource_attributes.is_none());
    }
}
