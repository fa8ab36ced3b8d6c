//! Whether this replica can work: every watch listed and streaming. `/readyz` answers from here,
//! so an operator whose watches fail (RBAC, a CRD gone) says so instead of looking healthy while
//! nothing refreshes. The DhanAccounts it skips because it cannot decode them are kept here too,
//! to be named, but they never make it unready: a tenant's object would otherwise switch the
//! operator off for everyone.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use tokio::time::{Duration, Instant};

/// How long a watch error counts after the last one. kube's watcher retries a failing watch
/// at most 30 s apart (its default backoff), so a watch that keeps failing is never out of
/// this window, and one that recovered quietly (a resumed watch sends no event) leaves it.
pub const ERROR_WINDOW: Duration = Duration::from_secs(60);

#[derive(Clone, Debug, PartialEq, Eq)]
enum Watch {
    /// Started; its first list has not completed.
    Listing {
        last_error: Option<(Instant, String)>,
    },
    /// Listed; `last_error` is the latest failure with no event since.
    Streaming {
        last_error: Option<(Instant, String)>,
    },
}

#[derive(Default)]
struct State {
    watches: BTreeMap<String, Watch>,
    /// Objects left out, by UID: (namespace/name, resource version, why).
    skipped: BTreeMap<String, Skipped>,
}

/// A DhanAccount the operator does not reconcile because it cannot read it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skipped {
    pub object: String,
    pub resource_version: Option<String>,
    pub why: String,
}

/// Shared health of the watches and objects.
#[derive(Clone, Default)]
pub struct Health(Arc<Mutex<State>>);

impl Health {
    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        f(&mut self.0.lock().expect("health poisoned"))
    }

    /// A watch starts: not healthy until its first list completes.
    pub fn starting(&self, watch: &str) {
        self.with(|s| {
            s.watches
                .insert(watch.into(), Watch::Listing { last_error: None })
        });
    }

    /// The watch's list completed.
    pub fn listed(&self, watch: &str) {
        self.with(|s| {
            s.watches
                .insert(watch.into(), Watch::Streaming { last_error: None })
        });
    }

    /// The watch delivered an event: it works (again).
    pub fn delivered(&self, watch: &str) {
        self.with(|s| {
            if let Some(Watch::Streaming { last_error }) = s.watches.get_mut(watch) {
                *last_error = None;
            }
        });
    }

    /// The watch failed (kube's watcher retries it).
    pub fn failed(&self, watch: &str, error: String) {
        let now = Instant::now();
        self.with(|s| {
            let entry = s
                .watches
                .entry(watch.into())
                .or_insert(Watch::Listing { last_error: None });
            match entry {
                Watch::Listing { last_error } | Watch::Streaming { last_error } => {
                    *last_error = Some((now, error));
                }
            }
        });
    }

    /// The watch was stopped on purpose (its namespace holds no account any more).
    pub fn stopped(&self, watch: &str) {
        self.with(|s| s.watches.remove(watch));
    }

    /// Records `uid` as skipped; true when this is news (a new object or a new version of it),
    /// so it is reported once per version.
    pub fn skip(&self, uid: &str, skipped: Skipped) -> bool {
        self.with(|s| s.skipped.insert(uid.into(), skipped.clone()) != Some(skipped))
    }

    /// `uid` decodes again, or is gone.
    pub fn unskip(&self, uid: &str) {
        self.with(|s| s.skipped.remove(uid));
    }

    /// UIDs of the skipped objects (they exist, though the controller's cache lacks them).
    pub fn skipped_uids(&self) -> Vec<String> {
        self.with(|s| s.skipped.keys().cloned().collect())
    }

    pub fn skipped_count(&self) -> usize {
        self.with(|s| s.skipped.len())
    }

    /// Everything that makes the operator not ready, in words; empty when it is ready.
    pub fn problems(&self) -> Vec<String> {
        let now = Instant::now();
        self.with(|s| problems(s, now))
    }

    /// The skipped DhanAccounts, as `namespace/name`.
    pub fn skipped_objects(&self) -> HashSet<String> {
        self.with(|s| s.skipped.values().map(|k| k.object.clone()).collect())
    }

    /// The skipped DhanAccounts, one a line, in words.
    pub fn skipped(&self) -> Vec<String> {
        self.with(|s| {
            s.skipped
                .values()
                .map(|skipped| format!("DhanAccount {} skipped: {}", skipped.object, skipped.why))
                .collect()
        })
    }
}

fn problems(state: &State, now: Instant) -> Vec<String> {
    let recent = |error: &Option<(Instant, String)>| {
        error
            .as_ref()
            .filter(|(at, _)| now.saturating_duration_since(*at) < ERROR_WINDOW)
            .map(|(_, e)| e.clone())
    };
    let mut out = Vec::new();
    for (name, watch) in &state.watches {
        match watch {
            Watch::Listing { last_error } => out.push(match recent(last_error) {
                Some(error) => format!("watch {name}: not listed yet: {error}"),
                None => format!("watch {name}: not listed yet"),
            }),
            Watch::Streaming { last_error } => {
                if let Some(error) = recent(last_error) {
                    out.push(format!("watch {name}: {error}"));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn skipped(object: &str, version: &str) -> Skipped {
        Skipped {
            object: object.into(),
            resource_version: Some(version.into()),
            why: "status.failedAttempts: out of range".into(),
        }
    }

    #[test]
    fn a_watch_is_not_ready_until_its_first_list_completes() {
        let health = Health::default();
        assert!(health.problems().is_empty(), "nothing watched yet");
        health.starting("dhanaccounts");
        assert_eq!(health.problems(), ["watch dhanaccounts: not listed yet"]);
        health.listed("dhanaccounts");
        assert!(health.problems().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_watch_is_reported_until_it_delivers_or_the_error_is_old() {
        let health = Health::default();
        health.listed("secrets in trading");
        health.failed("secrets in trading", "403 Forbidden".into());
        assert_eq!(
            health.problems(),
            ["watch secrets in trading: 403 Forbidden"]
        );
        health.delivered("secrets in trading");
        assert!(health.problems().is_empty(), "an event after the error");

        health.failed("secrets in trading", "connection reset".into());
        tokio::time::advance(ERROR_WINDOW - Duration::from_secs(1)).await;
        assert_eq!(health.problems().len(), 1);
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(
            health.problems().is_empty(),
            "a resumed watch that stays quiet is healthy once the error is old"
        );
    }

    #[test]
    fn a_listing_watch_names_its_error() {
        let health = Health::default();
        health.starting("dhanaccounts");
        health.failed(
            "dhanaccounts",
            "the server could not find the resource".into(),
        );
        assert_eq!(
            health.problems(),
            ["watch dhanaccounts: not listed yet: the server could not find the resource"]
        );
    }

    #[test]
    fn a_skipped_object_is_reported_once_per_version_and_cleared_when_it_decodes() {
        let health = Health::default();
        assert!(health.skip("uid-1", skipped("trading/bad", "7")));
        assert!(
            !health.skip("uid-1", skipped("trading/bad", "7")),
            "same version"
        );
        assert!(
            health.skip("uid-1", skipped("trading/bad", "8")),
            "a new version"
        );
        assert_eq!(
            health.skipped(),
            ["DhanAccount trading/bad skipped: status.failedAttempts: out of range"]
        );
        assert_eq!(health.skipped_uids(), ["uid-1"]);
        health.unskip("uid-1");
        assert!(health.skipped().is_empty());
    }

    #[test]
    fn a_skipped_object_is_no_problem_of_the_operator() {
        let health = Health::default();
        health.listed("dhanaccounts");
        health.skip("uid-1", skipped("trading/bad", "7"));
        assert!(health.problems().is_empty(), "{:?}", health.problems());
        assert_eq!(health.skipped_count(), 1);
    }

    #[test]
    fn a_stopped_watch_is_forgotten() {
        let health = Health::default();
        health.starting("secrets in gone");
        health.stopped("secrets in gone");
        assert!(health.problems().is_empty());
    }
}
