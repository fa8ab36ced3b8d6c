//! One minter per client ID across operator installs: a new token kills the client's previous
//! one (docs/dhan-api.md §1), so two installs that cannot see each other's DhanAccounts (two
//! single-namespace installs, say) must still never both mint for one client — and the person
//! installing the second need not know of the first.
//!
//! Every install meets at the same cluster-scoped objects (see [`resource`]): a
//! `DhanClientClaim` per client ID, named by a hash of it, and a `DhanOperatorInstall`
//! heartbeat per install. A claim belongs to whoever holds the client's live token: an account
//! takes it right before a mint, takes or confirms it when it adopts a token and after a
//! restart, keeps it while its token lives or it is obtaining one, and gives it up when it no
//! longer does. A claim is not renewed itself: it holds while its install's heartbeat is
//! renewed, so a quiet client ID costs nothing per period.
//!
//! The claim also carries what must outlive a process, an account and a re-creation of it:
//! the mint in flight (written right before the call, so a process that died before it heard
//! the answer leaves a trace that makes the next one probe), and the credential submissions
//! Dhan refused for the client on the IST day (the cap, and the refused credential sets that
//! are not sent again that day).
//!
//! The holder is named `<install>/<account UID>`: whoever reads the claim learns neither the
//! account's namespace nor its name.

pub mod resource;
mod verdict;

pub use resource::{DhanClientClaim, DhanOperatorInstall};
pub use verdict::{
    Answer, Holding, Refused, Submission, claim_name, client_hash, install_alive, install_name,
    refused_today,
};

use crate::clock::Clock;
use crate::leader::SKEW_MARGIN;
use chrono::{DateTime, Utc};
use kube::api::{DeleteParams, ListParams, ObjectMeta, PostParams, Preconditions};
use kube::{Api, Client, ResourceExt};
use resource::{ClaimHolder, DhanClientClaimSpec, DhanOperatorInstallSpec};
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing::{info, warn};

/// Label on every claim: the holding install's name hash, so an install lists its own claims.
pub const INSTALL_LABEL: &str = "dhan-operator.dev/install";

/// How often the install's heartbeat is renewed.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(10);
/// How long after the last heartbeat another process of the same install may take over (a
/// restarted or upgraded operator): the one that beat last stops minting earlier, by the
/// longest Dhan call and [`SKEW_MARGIN`] (see [`Claims::active`]). A process that stopped
/// cleanly hands over at once.
pub const PROCESS_LIVENESS: Duration = Duration::from_secs(45);

/// The shortest claim duration: a process of the install that starts after one died without
/// stopping (a new Pod, whose identity differs) acts for the install — and so keeps its claims —
/// only once the dead one's heartbeat is [`PROCESS_LIVENESS`] and [`SKEW_MARGIN`] old, at its
/// next beat. Claims that lapsed sooner would let another install mint over a live token.
pub const MIN_CLAIM_DURATION: Duration = Duration::from_secs(
    PROCESS_LIVENESS.as_secs() + SKEW_MARGIN.as_secs() + HEARTBEAT_EVERY.as_secs(),
);

/// The longest Dhan call a process may make under [`PROCESS_LIVENESS`]: it must still hold the
/// heartbeat when the call ends, between two heartbeats.
pub const MAX_CALL: Duration = Duration::from_secs(
    PROCESS_LIVENESS.as_secs() - HEARTBEAT_EVERY.as_secs() - SKEW_MARGIN.as_secs() - 1,
);
/// The longest one claim call may take: they stand between a due mint and Dhan.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// Settings of client-ID claims.
#[derive(Clone, Debug)]
pub struct ClaimSettings {
    /// This install's name, stable across restarts and replicas, different from every other
    /// install's.
    pub install: String,
    /// This process, among the install's replicas and restarts.
    pub identity: String,
    /// How long the install's claims hold after its last heartbeat: how long the accounts of an
    /// install that vanished keep their client IDs.
    pub duration: Duration,
    /// Replicas elect a leader (a Lease checked right before every mint): the elected process
    /// takes the heartbeat over at once, without waiting for the previous holder's heartbeat
    /// to age — the Lease already keeps a deposed leader from minting.
    pub leader_elected: bool,
}

/// Why an account may not mint now.
#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    #[error("the client ID is claimed by another DhanAccount")]
    Taken,
    #[error(transparent)]
    Refused(#[from] Refused),
    #[error("cannot claim the client ID: {detail}")]
    Unavailable { detail: String },
}

/// A claim this install holds: its name and the object as last read or written (its resource
/// version makes a write fail if anyone wrote in between).
#[derive(Clone, Debug)]
struct Held {
    name: String,
    claim: DhanClientClaim,
}

#[derive(Default)]
struct State {
    /// By account UID.
    held: BTreeMap<String, Held>,
    /// Account UIDs by claim name: a re-created account finds what its predecessor left.
    holders: BTreeMap<String, String>,
    /// When this process last renewed the install's heartbeat; `None` while it does not hold it.
    heartbeat: Option<DateTime<Utc>>,
    /// Accounts whose claim could not be released: tried again after each heartbeat (a claim
    /// left to a deleted account keeps other installs out for as long as this one lives).
    unreleased: BTreeSet<String>,
    /// Deleted accounts within their grace ([`Claims::leaving`]): their claims are neither
    /// pruned nor released until [`Claims::departed`] says whether they were created again.
    leaving: BTreeSet<String>,
}

impl State {
    fn remember(&mut self, uid: &str, name: &str, claim: DhanClientClaim) {
        if let Some(previous) = self.held.get(uid).map(|h| h.name.clone())
            && previous != name
        {
            self.holders.remove(&previous);
        }
        if let Some(other) = self.holders.insert(name.to_string(), uid.to_string())
            && other != uid
        {
            self.held.remove(&other);
        }
        self.held.insert(
            uid.to_string(),
            Held {
                name: name.to_string(),
                claim,
            },
        );
    }

    /// This install's claim on `client_id`, whichever of its accounts holds it.
    fn of_client(&self, client_id: &str) -> Option<&DhanClientClaim> {
        let uid = self.holders.get(&claim_name(client_id))?;
        self.held.get(uid).map(|h| &h.claim)
    }
}

/// The claims this install holds.
pub struct Claims {
    claims: Api<DhanClientClaim>,
    installs: Api<DhanOperatorInstall>,
    settings: ClaimSettings,
    clock: Arc<dyn Clock>,
    state: Mutex<State>,
}

impl Claims {
    pub fn new(client: Client, settings: ClaimSettings, clock: Arc<dyn Clock>) -> Claims {
        Claims {
            claims: Api::all(client.clone()),
            installs: Api::all(client),
            settings,
            clock,
            state: Mutex::default(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("claims poisoned")
    }

    /// The value of [`INSTALL_LABEL`] on the claims this install holds.
    pub fn install_label(&self) -> String {
        install_name(&self.settings.install)["install-".len()..].to_string()
    }

    /// Renews the install's heartbeat, or takes it over from a process of this install that
    /// stopped beating (a restart, an upgrade, a new leader). Another live process acting for
    /// the same install (two operators given one `--install-id`) keeps it: this one then mints
    /// nothing.
    pub async fn beat(&self) -> Result<(), ClaimError> {
        let name = install_name(&self.settings.install);
        let now = self.clock.now();
        let current = bounded(self.installs.get_opt(&name)).await?;
        if let Some(current) = &current {
            let spec = &current.spec;
            let other = spec
                .holder_identity
                .as_deref()
                .filter(|h| *h != self.settings.identity);
            if let Some(other) = other
                && !self.settings.leader_elected
                && now <= after(spec.renew_time, PROCESS_LIVENESS + SKEW_MARGIN)
            {
                self.state().heartbeat = None;
                return Err(ClaimError::Unavailable {
                    detail: format!(
                        "another process ({other}) acts for install {:?}; this one mints \
                         nothing until it stops (give each install its own --install-id)",
                        self.settings.install
                    ),
                });
            }
        }
        let spec = DhanOperatorInstallSpec {
            install: self.settings.install.clone(),
            holder_identity: Some(self.settings.identity.clone()),
            renew_time: now,
            claim_duration_seconds: self.settings.duration.as_secs().clamp(1, u32::MAX.into())
                as u32,
        };
        let written = match current {
            Some(mut current) => {
                current.spec = spec;
                bounded(
                    self.installs
                        .replace(&name, &PostParams::default(), &current),
                )
                .await
            }
            None => {
                let mut object = DhanOperatorInstall::new(&name, spec);
                object.metadata.labels = Some(BTreeMap::from([(
                    INSTALL_LABEL.to_string(),
                    self.install_label(),
                )]));
                bounded(self.installs.create(&PostParams::default(), &object)).await
            }
        };
        match written {
            Ok(_) => {
                let first = self.state().heartbeat.replace(now).is_none();
                if first {
                    // Acting for the install from now on (a restart, an upgrade, a new leader):
                    // its claims are this process's to keep.
                    let held = self.load().await.inspect_err(|_| {
                        self.state().heartbeat = None;
                    })?;
                    info!(install = %self.settings.install, held, "acting for the install: its client-ID claims are read");
                }
                self.release_again().await;
                Ok(())
            }
            Err(error) => {
                self.state().heartbeat = None;
                Err(error.into())
            }
        }
    }

    /// Whether the heartbeat is due (none yet, or [`HEARTBEAT_EVERY`] old).
    pub fn beat_due(&self) -> bool {
        let now = self.clock.now();
        self.state()
            .heartbeat
            .is_none_or(|beat| now >= after(beat, HEARTBEAT_EVERY))
    }

    /// Lets the next process of this install take over at once (a graceful stop).
    pub async fn stop(&self) {
        let name = install_name(&self.settings.install);
        self.state().heartbeat = None;
        let Ok(Some(mut current)) = bounded(self.installs.get_opt(&name)).await else {
            return;
        };
        if current.spec.holder_identity.as_deref() != Some(self.settings.identity.as_str()) {
            return;
        }
        current.spec.holder_identity = None;
        if let Err(error) = bounded(
            self.installs
                .replace(&name, &PostParams::default(), &current),
        )
        .await
        {
            let error = ClaimError::from(error);
            warn!(%error, "could not hand the install's heartbeat over");
        }
    }

    /// Whether this process may mint for `needed` more: it holds the install's heartbeat, and
    /// no other process of the install could take it over before then.
    pub fn active(&self, needed: Duration) -> bool {
        let now = self.clock.now();
        self.state()
            .heartbeat
            .is_some_and(|beat| after(now, needed + SKEW_MARGIN) < after(beat, PROCESS_LIVENESS))
    }

    /// Reads the claims this install holds (after a restart, an upgrade or a leader change).
    async fn load(&self) -> Result<usize, ClaimError> {
        let params =
            ListParams::default().labels(&format!("{INSTALL_LABEL}={}", self.install_label()));
        let list = bounded(self.claims.list(&params)).await?;
        let mut state = self.state();
        for claim in list.items {
            let Some(holder) = claim.spec.holder.clone() else {
                continue;
            };
            if holder.install != self.settings.install {
                continue;
            }
            let name = claim.name_any();
            state.remember(&holder.account, &name, claim);
        }
        Ok(state.held.len())
    }

    /// Account `uid` was deleted: its claim stays while a re-creation may still adopt its token
    /// (`controller::index::REPLACE_GRACE`), then [`Claims::departed`] settles it.
    pub fn leaving(&self, uid: &str) {
        self.state().leaving.insert(uid.to_string());
    }

    /// Whether deleted account `uid` is within its grace: its claim is not to be pruned.
    pub fn is_leaving(&self, uid: &str) -> bool {
        self.state().leaving.contains(uid)
    }

    /// The grace of deleted account `uid` is over. Its claim passes to its re-creation
    /// `successor` (the same namespace and name, a new UID) when there is one: that account
    /// adopts the token the claim protects, and takes the claim over at no API call — so a
    /// slow or failing claims API cannot let the claim go in between, for another install to
    /// mint over the adopted token (the simulation, seed 344). Else the claim is released.
    pub async fn departed(&self, uid: &str, successor: Option<&str>) {
        self.state().leaving.remove(uid);
        if let Some(successor) = successor
            && self.hand_over(uid, successor)
        {
            return;
        }
        self.release(uid).await;
    }

    /// Moves account `from`'s claim to account `to`, in this process only: the object still
    /// names `from` until `to` writes it (a mint, an answer) or releases it. False when `to`
    /// holds a claim of its own already.
    fn hand_over(&self, from: &str, to: &str) -> bool {
        let mut state = self.state();
        if state.held.contains_key(to) {
            return false;
        }
        let Some(mut held) = state.held.remove(from) else {
            return true;
        };
        state.unreleased.remove(from);
        if let Some(holder) = held.claim.spec.holder.as_mut() {
            holder.account = to.to_string();
        }
        let name = held.name.clone();
        state.remember(to, &name, held.claim);
        info!(claim = %name, "handed a deleted account's client-ID claim to its re-creation");
        true
    }

    /// The claim account `uid` holds, if any, as its name.
    pub fn claim_of(&self, uid: &str) -> Option<String> {
        self.state().held.get(uid).map(|h| h.name.clone())
    }

    /// Account UIDs holding claims, in order.
    pub fn holders(&self) -> Vec<String> {
        self.state().held.keys().cloned().collect()
    }

    /// The last mint for `client_id` recorded on this install's claim by account `uid` (the
    /// claim's holder: the account that minted), when it may have been carried out without this
    /// install hearing of it (its process died, or the answer was lost): the token it would
    /// have killed must be probed. Another account of the client made no such mint: taking it
    /// as its own made it count as holding a live token (the simulation, seed 25).
    pub fn unconfirmed_mint(&self, uid: &str, client_id: &str) -> Option<DateTime<Utc>> {
        let state = self.state();
        let claim = state.of_client(client_id)?;
        if claim.spec.holder.as_ref().is_none_or(|h| h.account != uid) {
            return None;
        }
        let flight = claim.spec.in_flight.as_ref()?;
        (!flight.answered || flight.unknown).then_some(flight.at)
    }

    /// The refused credential submissions of today for `client_id`, as this install's claim
    /// records them (0 when it holds none: then it submits nothing before taking it, which
    /// reads the claim).
    pub fn refused_today(&self, client_id: &str, last_token: Option<DateTime<Utc>>) -> u32 {
        let state = self.state();
        state.of_client(client_id).map_or(0, |claim| {
            refused_today(&claim.spec, self.clock.now(), last_token)
        })
    }

    /// Right before a call to Dhan that mints for `client_id` (or submits its credentials):
    /// account `uid` holds the claim, the call is recorded in flight, and the day's cap and
    /// refused credentials allow it.
    pub async fn secure(
        &self,
        uid: &str,
        client_id: &str,
        submission: &Submission,
    ) -> Result<(), ClaimError> {
        self.take(uid, client_id, Some(submission), submission.last_token)
            .await
    }

    /// While account `uid` holds a live token for `client_id`: it holds the claim. Free of API
    /// calls when this process already knows it does.
    /// `token_obtained`: when the token the account keeps the claim for was minted.
    pub async fn ensure(
        &self,
        uid: &str,
        client_id: &str,
        token_obtained: Option<DateTime<Utc>>,
    ) -> Result<(), ClaimError> {
        let name = claim_name(client_id);
        if self.state().held.get(uid).is_some_and(|h| h.name == name) {
            return Ok(());
        }
        self.take(uid, client_id, None, token_obtained).await
    }

    async fn take(
        &self,
        uid: &str,
        client_id: &str,
        submission: Option<&Submission>,
        token_obtained: Option<DateTime<Utc>>,
    ) -> Result<(), ClaimError> {
        if !self.active(CALL_TIMEOUT) {
            return Err(ClaimError::Unavailable {
                detail: "this process does not act for its install yet (its heartbeat, a \
                         DhanOperatorInstall, is not renewed)"
                    .into(),
            });
        }
        let name = claim_name(client_id);
        let known = {
            let state = self.state();
            state
                .held
                .get(uid)
                .filter(|h| h.name == name)
                .map(|h| h.claim.clone())
        };
        if known.is_none()
            && let Some(previous) = self.claim_of(uid)
        {
            // The account now names another client ID.
            self.release(uid).await;
            debug_assert_ne!(previous, name);
        }
        // The claim as last written by this process, else as read: a stale copy costs a 409
        // and a read.
        let mut current = match known {
            Some(claim) => Some(claim),
            None => bounded(self.claims.get_opt(&name)).await?,
        };
        for _ in 0..3 {
            let now = self.clock.now();
            let spec = current.as_ref().map(|c| &c.spec);
            let since = match verdict::holding(spec, &self.settings.install, uid) {
                Holding::Ours => spec.and_then(|s| s.holder.as_ref()).map(|h| h.since),
                // A mint of another account of this install whose answer never came may have
                // made a live token: until it is resolved, or that token would be dead, the
                // client ID stays with it (the simulation, seed 45: a refresh cut off at the
                // reconcile deadline, and another account minted over its token).
                Holding::Free
                    if verdict::mint_pending_for_another(spec, uid, now, token_obtained) =>
                {
                    self.forget(uid);
                    return Err(ClaimError::Taken);
                }
                Holding::Free | Holding::Absent => None,
                Holding::Install(other) => {
                    let beat = bounded(self.installs.get_opt(&install_name(other))).await?;
                    if install_alive(beat.as_ref().map(|b| &b.spec), now) {
                        self.forget(uid);
                        return Err(ClaimError::Taken);
                    }
                    None
                }
            };
            let mut spec = spec.cloned().unwrap_or_default();
            spec.holder = Some(ClaimHolder {
                install: self.settings.install.clone(),
                account: uid.to_string(),
                since: since.unwrap_or(now),
            });
            if let Some(submission) = submission {
                verdict::before_mint(&mut spec, now, submission)?;
            }
            if since.is_some() && submission.is_none() {
                // Already ours: nothing to write.
                self.remember(uid, &name, current.expect("ours was read"));
                return Ok(());
            }
            match self.write(&name, current.as_ref(), spec).await {
                Ok(claim) => {
                    if since.is_none() {
                        info!(claim = %name, "claimed the client ID for an account");
                    }
                    self.remember(uid, &name, claim);
                    return Ok(());
                }
                // Someone wrote in between (or created it first): read it again.
                Err(e) if e.code() == Some(409) => {
                    current = bounded(self.claims.get_opt(&name)).await?;
                }
                Err(error) => return Err(error.into()),
            }
        }
        Err(ClaimError::Unavailable {
            detail: format!("claim {name} kept changing while it was taken"),
        })
    }

    /// Writes `spec` as the claim: creates it, or replaces `current` (its resource version
    /// makes the write fail if anyone wrote in between).
    async fn write(
        &self,
        name: &str,
        current: Option<&DhanClientClaim>,
        spec: DhanClientClaimSpec,
    ) -> Result<DhanClientClaim, CallError> {
        let label = spec.holder.as_ref().map(|h| install_name(&h.install));
        let mut labels = current
            .and_then(|c| c.metadata.labels.clone())
            .unwrap_or_default();
        match label {
            Some(label) => labels.insert(INSTALL_LABEL.into(), label["install-".len()..].into()),
            None => labels.remove(INSTALL_LABEL),
        };
        match current {
            Some(current) => {
                let mut claim = current.clone();
                claim.metadata.labels = Some(labels);
                claim.spec = spec;
                bounded(self.claims.replace(name, &PostParams::default(), &claim)).await
            }
            None => {
                let claim = DhanClientClaim {
                    metadata: ObjectMeta {
                        name: Some(name.to_string()),
                        labels: Some(labels),
                        ..ObjectMeta::default()
                    },
                    spec,
                };
                bounded(self.claims.create(&PostParams::default(), &claim)).await
            }
        }
    }

    fn remember(&self, uid: &str, name: &str, claim: DhanClientClaim) {
        self.state().remember(uid, name, claim);
    }

    fn forget(&self, uid: &str) -> Option<Held> {
        let mut state = self.state();
        let held = state.held.remove(uid)?;
        if state.holders.get(&held.name).is_some_and(|u| u == uid) {
            state.holders.remove(&held.name);
        }
        Some(held)
    }

    /// The answer to account `uid`'s mint in flight. Recorded so that the cap holds across
    /// restarts and re-creations; a failure to record is logged (the unanswered mint then
    /// counts as refused, the safe way). A token needs no record: the claim's in-flight mint
    /// is older than the token the account keeps.
    pub async fn answered(&self, uid: &str, answer: &Answer) {
        let Some(held) = self.state().held.get(uid).cloned() else {
            return;
        };
        let Some(flight) = held.claim.spec.in_flight.clone() else {
            return;
        };
        let same = flight.answered && flight.unknown == (*answer == Answer::Unknown);
        if same && !matches!(answer, Answer::Refused(_)) {
            return;
        }
        let mut current = Some(held.claim);
        for _ in 0..3 {
            let Some(claim) = current.take() else {
                return;
            };
            let mut spec = claim.spec.clone();
            verdict::answered(&mut spec, flight.at, answer);
            match self.write(&held.name, Some(&claim), spec).await {
                Ok(written) => {
                    let ours = verdict::holding(Some(&written.spec), &self.settings.install, uid)
                        == Holding::Ours;
                    if ours {
                        self.remember(uid, &held.name, written);
                    }
                    return;
                }
                Err(e) if e.code() == Some(409) => {
                    current = bounded(self.claims.get_opt(&held.name))
                        .await
                        .ok()
                        .flatten();
                }
                Err(error) => {
                    let error = ClaimError::from(error);
                    warn!(claim = %held.name, %error, "could not record the answer to a mint on its claim");
                    return;
                }
            }
        }
    }

    /// Gives up account `uid`'s claim: clears the holder if it is still this account, and
    /// deletes the claim when it keeps nothing of today. A failure only means the claim stays
    /// this install's until it is taken again or the install stops.
    pub async fn release(&self, uid: &str) {
        let Some(held) = self.forget(uid) else {
            return;
        };
        let kept = held.clone();
        let name = held.name;
        let result: Result<(), CallError> = async {
            // A write in between (another account of this install taking the claim for a
            // mint, say) fails ours with 409: read again, and release only what is still ours.
            for _ in 0..3 {
                let Some(mut claim) = bounded(self.claims.get_opt(&name)).await? else {
                    return Ok(());
                };
                // Still ours: it names this account, or it is exactly as handed over to it
                // from the account it re-created.
                let unchanged = claim.resource_version() == kept.claim.resource_version();
                if verdict::holding(Some(&claim.spec), &self.settings.install, uid) != Holding::Ours
                    && !unchanged
                {
                    return Ok(());
                }
                claim.spec.holder = None;
                let written = if verdict::disposable(&claim.spec, self.clock.now()) {
                    let params = DeleteParams {
                        preconditions: Some(Preconditions {
                            uid: claim.uid(),
                            resource_version: claim.resource_version(),
                        }),
                        ..DeleteParams::default()
                    };
                    match bounded(self.claims.delete(&name, &params)).await {
                        Err(e) if e.code() == Some(404) => return Ok(()),
                        result => result.map(|_| ()),
                    }
                } else {
                    let spec = claim.spec.clone();
                    self.write(&name, Some(&claim), spec).await.map(|_| ())
                };
                match written {
                    Err(e) if e.code() == Some(409) => continue,
                    result => return result,
                }
            }
            Err(CallError::Other(format!(
                "claim {name} kept changing while it was released"
            )))
        }
        .await;
        match result {
            Ok(()) => {
                self.state().unreleased.remove(uid);
                info!(claim = %name, "released the client-ID claim of an account");
            }
            Err(error) => {
                let error = ClaimError::from(error);
                warn!(claim = %name, %error, "could not release a client-ID claim; trying again after the next heartbeat");
                let mut state = self.state();
                // Another account of this process took the claim meanwhile: it is that
                // account's now, and this one has nothing left to release (seed 320).
                if !state.holders.contains_key(&name) {
                    state.remember(uid, &kept.name, kept.claim);
                    state.unreleased.insert(uid.to_string());
                }
            }
        }
    }

    /// Releases again the claims whose release failed.
    async fn release_again(&self) {
        let uids: Vec<String> = self.state().unreleased.iter().cloned().collect();
        for uid in uids {
            self.release(&uid).await;
        }
    }
}

/// A claim call that failed.
#[derive(Debug)]
enum CallError {
    /// The API server refused it with this status.
    Api(Box<kube::core::Status>),
    Other(String),
}

impl CallError {
    fn code(&self) -> Option<u16> {
        match self {
            CallError::Api(e) => Some(e.code),
            CallError::Other(_) => None,
        }
    }
}

impl From<CallError> for ClaimError {
    fn from(error: CallError) -> Self {
        let detail = match error {
            CallError::Api(e) => format!("{} ({} {})", e.message, e.code, e.reason),
            CallError::Other(detail) => detail,
        };
        ClaimError::Unavailable { detail }
    }
}

/// One API call, bounded: claim calls stand between a due mint and Dhan.
async fn bounded<T>(call: impl Future<Output = Result<T, kube::Error>>) -> Result<T, CallError> {
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(kube::Error::Api(e))) => Err(CallError::Api(e)),
        Ok(Err(other)) => Err(CallError::Other(other.to_string())),
        Err(_) => Err(CallError::Other(format!(
            "the API server did not answer within {CALL_TIMEOUT:?}"
        ))),
    }
}

fn after(t: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    t + chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}
