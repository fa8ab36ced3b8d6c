//! Leader election between replicas, so a client ID never gets two minters (a new token kills
//! the previous one, docs/dhan-api.md §1).
//!
//! [`kube_lease_manager`] holds a `coordination.k8s.io` Lease: it renews it every
//! [`RENEW_EVERY`] and takes over one whose holder has not renewed it for the lease's duration.
//! On its own that is not enough: a leader frozen for a while (a paused VM, SIGSTOP, a long GC
//! pause) resumes with reconciles in flight before it notices it lost the Lease. So before
//! every call that mints, [`Leadership::holds_for`] reads the Lease back and checks that this
//! process still holds it for longer than the call can take.
//!
//! The clock assumption: a standby takes over when the holder's `renewTime` plus the duration
//! is past by *its* clock; the holder stops minting [`SKEW_MARGIN`] earlier by its own clock.
//! Two replicas' clocks must differ by less than that margin (NTP keeps nodes within
//! milliseconds).

use crate::clock::Clock;
use k8s_openapi::api::coordination::v1::Lease;
use kube::{Api, Client};
use kube_lease_manager::LeaseManagerBuilder;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tracing::warn;

/// How often the holder renews the Lease.
pub const RENEW_EVERY: Duration = Duration::from_secs(5);
/// How much earlier than a standby could take over the holder stops minting.
pub const SKEW_MARGIN: Duration = Duration::from_secs(5);
/// The longest a Lease read may take before the guard gives up (and refuses the mint).
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Settings of leader election.
#[derive(Clone, Debug)]
pub struct ElectionSettings {
    pub namespace: String,
    pub lease: String,
    pub identity: String,
    /// How long the Lease stays valid without renewal; a standby takes over after that.
    pub duration: Duration,
}

/// Whether this process still holds the Lease.
pub struct Leadership {
    leases: Api<Lease>,
    settings: ElectionSettings,
    clock: Arc<dyn Clock>,
}

impl Leadership {
    /// Checks the Lease `settings.lease` of `settings.namespace` for `settings.identity`.
    pub fn new(client: Client, settings: ElectionSettings, clock: Arc<dyn Clock>) -> Leadership {
        Leadership {
            leases: Api::namespaced(client, &settings.namespace),
            settings,
            clock,
        }
    }

    /// True when the Lease names this process and stays valid for `needed` more (plus the
    /// skew margin), as read from the API server now.
    pub async fn holds_for(&self, needed: Duration) -> bool {
        let read = tokio::time::timeout(READ_TIMEOUT, self.leases.get(&self.settings.lease)).await;
        let lease = match read {
            Ok(Ok(lease)) => lease,
            Ok(Err(error)) => {
                warn!(%error, "could not read the leader Lease; not minting");
                return false;
            }
            Err(_) => {
                warn!("reading the leader Lease timed out; not minting");
                return false;
            }
        };
        let Some(spec) = lease.spec else {
            return false;
        };
        let ours = spec.holder_identity.as_deref() == Some(self.settings.identity.as_str());
        let Some(renewed) = spec.renew_time else {
            return false;
        };
        let Some(renewed) = chrono::DateTime::from_timestamp_micros(renewed.0.as_microsecond())
        else {
            return false;
        };
        let duration = spec
            .lease_duration_seconds
            .map_or(self.settings.duration, |s| {
                Duration::from_secs(s.max(0) as u64)
            });
        let valid_until = renewed + chrono::Duration::from_std(duration).unwrap_or_default();
        let margin = chrono::Duration::from_std(needed + SKEW_MARGIN).unwrap_or_default();
        ours && self.clock.now() + margin < valid_until
    }
}

/// Starts holding the Lease. The receiver says whether this process is the leader; the
/// returned [`Leadership`] confirms it before each mint.
pub async fn elect(
    client: Client,
    settings: ElectionSettings,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<(watch::Receiver<bool>, Arc<Leadership>)> {
    let duration = settings.duration.as_secs().max(RENEW_EVERY.as_secs() + 1);
    // kube-lease-manager renews when less than `grace` is left: renewing every RENEW_EVERY.
    let grace = duration - RENEW_EVERY.as_secs();
    let manager = LeaseManagerBuilder::new(client.clone(), settings.lease.clone())
        .with_namespace(settings.namespace.clone())
        .with_identity(settings.identity.clone())
        .with_duration(duration)
        .with_grace(grace)
        .with_field_manager("dhan-operator-leader")
        .build()
        .await?;
    let (is_leader, _task) = manager.watch().await;
    let leadership = Arc::new(Leadership::new(client, settings, clock));
    Ok((is_leader, leadership))
}
