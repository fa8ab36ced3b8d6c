//! The promises, checked after every step of a run against what Dhan and the API server hold.
//!
//! - I1 no needless mint: per client and IST day, the mints that killed a live token are at
//!   most one (the daily refresh) plus one per cause that makes another due — a refresh
//!   request, a revoked or lost token, a crash, a refused Secret write, a suspension toggled —
//!   plus one for a token's last day. Re-creations, touches and a single 401 are no causes.
//! - I2 the cap: per client and IST day at most `--max-failed-logins` refused submissions,
//!   and a refusal the operator heard is never sent again that day.
//! - I3 one minter: no mint kills a live token minted for another account that still exists
//!   and has named the client ever since (a token whose answer never reached the operator is
//!   in no Secret: killing it harms nobody) (a token within the cluster clock's lead on Dhan's, plus 5 s,
//!   of its death is dying: the operator judges it by its own clock); a leader deposed while
//!   frozen calls Dhan no more once a standby took its Lease over.
//! - I4 `Ready` is true: an account `Ready` while its output Secret does not hold the client's
//!   live token is found out within its probe interval and 5 min slack (never, when it does
//!   not probe: then only the next refresh finds out).
//! - I5 no token dropped: a token handed to a process that still runs reaches the Secret within
//!   a minute once Secret writes succeed; an output Secret never goes back to an older token.
//! - I6 bounded reconciles: none is cut off at its deadline unless Dhan hung (world.rs).
//! - I7 nothing secret in status or events: no token, no PIN.
//! - L1 liveness: after a quiet day, every client with a usable account is served by one.

use super::dhan::{MintCall, MintFault, MintResult};
use super::world::{Fingerprint, QUIET_END, World, ist_day};
use crate::crd::DhanAccountStatus;
use chrono::NaiveDate;
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;
use tokio::time::Instant;

const MAX_FAILED_LOGINS: u32 = 3;
/// I4: beyond the account's probe interval.
const STALE_READY_SLACK: Duration = Duration::from_secs(5 * 60);
const KEPT_TOKEN_BOUND: Duration = Duration::from_secs(60);

pub struct Checker {
    calls_seen: usize,
    killing_mints: BTreeMap<(String, NaiveDate), u32>,
    refusals: BTreeMap<(String, NaiveDate), u32>,
    /// Refused PINs the operator heard, per client and day.
    heard: BTreeMap<(String, NaiveDate), Vec<String>>,
    stale_since: BTreeMap<String, Instant>,
    kept_since: BTreeMap<String, Instant>,
    /// Per account: its client and I4's bound (none when it never probes).
    watching: HashMap<String, (String, Option<Duration>)>,
    fingerprint: Option<Fingerprint>,
    /// The serial of the token each output Secret held when last looked at.
    in_secret: HashMap<String, u64>,
    /// Every token serial seen in an output Secret.
    ever_in_secret: std::collections::HashSet<u64>,
    /// Per account, as last read: the account's and its Secret's resource versions, whether it
    /// was `Ready`, and the Secret's token.
    read: HashMap<String, Versions>,
}

type Versions = ((String, Option<String>), bool, Option<String>);

impl Checker {
    pub fn new(_world: &World) -> Checker {
        Checker {
            calls_seen: 0,
            killing_mints: BTreeMap::new(),
            refusals: BTreeMap::new(),
            heard: BTreeMap::new(),
            stale_since: BTreeMap::new(),
            kept_since: BTreeMap::new(),
            watching: HashMap::new(),
            fingerprint: None,
            in_secret: HashMap::new(),
            ever_in_secret: std::collections::HashSet::new(),
            read: HashMap::new(),
        }
    }

    pub fn check(&mut self, world: &mut World) {
        let calls = world.dhan.calls_since(self.calls_seen);
        for call in &calls {
            self.mint_call(world, call);
        }
        self.calls_seen += calls.len();
        self.secrets(world);
    }

    fn violation(world: &mut World, text: String) {
        let line = format!("[{}] {text}", world.elapsed());
        world.note(format!("VIOLATION {text}"));
        world.report.violations.push(line);
    }

    fn mint_call(&mut self, world: &mut World, call: &MintCall) {
        let day = ist_day(call.at);
        let key = (call.client.clone(), day);
        let who = call
            .acting
            .as_ref()
            .map_or("?".to_string(), |a| a.account.clone());
        if let Some(acting) = &call.acting
            && let Some((install, incarnation, takeover)) = world
                .deposed
                .iter()
                .find(|(i, n, _)| (*i, *n) == acting.process)
                .copied()
            && call.at >= takeover
        {
            Self::violation(
                world,
                format!(
                    "I3: install-{install}'s deposed leader (incarnation {incarnation}) called \
                     Dhan for client {} ({who}) after a standby took its Lease over",
                    call.client
                ),
            );
        }
        match &call.result {
            MintResult::Minted { serial } => {
                world.note(format!(
                    "Dhan minted #{serial} for client {} ({who}) at {}{}",
                    call.client,
                    call.at.format("%H:%M:%S"),
                    call.fault
                        .as_ref()
                        .map_or(String::new(), |f| format!(", answered {f:?}"))
                ));
                if matches!(call.fault, Some(MintFault::LostAnswer(_) | MintFault::Hang)) {
                    world.cause_on(&call.client, day);
                }
                let Some(replaced) = &call.replaced else {
                    return;
                };
                let killed = self.killing_mints.entry(key.clone()).or_default();
                *killed += 1;
                let killed = *killed;
                let allowed = 2 + world.causes(&call.client, day);
                if killed > allowed {
                    Self::violation(
                        world,
                        format!(
                            "I1: mint #{serial} by {who} killed client {}'s live token #{}: the \
                             {killed}th such mint on IST day {day}, with {allowed} allowed",
                            call.client, replaced.serial
                        ),
                    );
                }
                let holder = replaced.acting.as_ref().map(|a| a.account.clone());
                // The operator judges a token dead at its expiry by the cluster's clock: one
                // that runs fast (and the skew margin between nodes) takes that much of a dying
                // token's life, the documented clock assumption (docs/design.md).
                let fast = world.cluster_offset().max(chrono::Duration::zero())
                    + chrono::Duration::from_std(crate::leader::SKEW_MARGIN).unwrap_or_default();
                let dying = replaced.expires_at - call.at <= fast;
                // A token whose answer never reached the operator is in no Secret and no memory:
                // killing it takes nothing from anyone. Nor one whose answer reached only a
                // leader deposed meanwhile, which may not write it and never did: it is in no
                // Secret, and no process that acts knows it (seed 1587).
                let deposed = replaced.acting.as_ref().is_some_and(|a| {
                    world
                        .deposed
                        .iter()
                        .any(|(i, n, at)| (*i, *n) == a.process && *at <= call.at)
                });
                let reachable = self.ever_in_secret.contains(&replaced.serial) || !deposed;
                if let Some(holder) = holder
                    && holder != who
                    && world.manages(&holder, &call.client, replaced.at)
                    && !dying
                    && replaced.delivered
                    && reachable
                {
                    Self::violation(
                        world,
                        format!(
                            "I3: {who} minted #{serial} for client {}, killing live token #{} of \
                             {holder}, which still exists",
                            call.client, replaced.serial
                        ),
                    );
                }
            }
            MintResult::Refused | MintResult::TotpRefused => {
                let what = if call.result == MintResult::Refused {
                    "a PIN"
                } else {
                    "a TOTP code"
                };
                world.note(format!(
                    "Dhan refused {what} of client {} ({who})",
                    call.client
                ));
                let count = self.refusals.entry(key.clone()).or_default();
                *count += 1;
                if *count > MAX_FAILED_LOGINS {
                    let count = *count;
                    Self::violation(
                        world,
                        format!(
                            "I2: {count} refused submissions for client {} on IST day {day}",
                            call.client
                        ),
                    );
                }
                if call.result == MintResult::TotpRefused {
                    return;
                }
                let heard = self.heard.entry(key).or_default();
                if heard.contains(&call.pin) {
                    Self::violation(
                        world,
                        format!(
                            "I2: {who} sent client {}'s PIN again after Dhan refused it on IST \
                             day {day}",
                            call.client
                        ),
                    );
                }
                // The answer reaches the operator LATENCY later; it may die first.
                if call.delivered {
                    heard.push(call.pin.clone());
                }
            }
            MintResult::NotMinted => {
                let why = call
                    .fault
                    .as_ref()
                    .map_or("throttled".into(), |f| format!("{f:?}"));
                world.note(format!(
                    "Dhan minted nothing for client {} ({who}) at {}: {why}",
                    call.client,
                    call.at.format("%H:%M:%S"),
                ));
            }
        }
    }

    /// I4, I5. What they read changes only with the world's fingerprint (the API server's and
    /// Dhan's revisions, the live tokens, the processes, the refused writes); between changes
    /// only their clocks run.
    fn secrets(&mut self, world: &mut World) {
        let now = Instant::now();
        let fingerprint = world.fingerprint();
        if self.fingerprint.as_ref() != Some(&fingerprint) {
            self.fingerprint = Some(fingerprint);
            self.look(world, now);
        }
        let mut broken = Vec::new();
        for (key, since) in &mut self.stale_since {
            let (client, bound) = &self.watching[key];
            if let Some(bound) = bound
                && now - *since > *bound
            {
                broken.push(format!(
                    "I4: {key} has been Ready for {} min while its Secret does not hold client \
                     {client}'s live token",
                    (now - *since).as_secs() / 60
                ));
                *since = now;
            }
        }
        for (key, since) in &mut self.kept_since {
            if now - *since > KEPT_TOKEN_BOUND {
                broken.push(format!(
                    "I5: the token minted for {key} has not reached its Secret {}s after writes \
                     became possible",
                    (now - *since).as_secs()
                ));
                *since = now;
            }
        }
        for text in broken {
            Self::violation(world, text);
        }
    }

    /// Reads each account's status and Secret: which are `Ready` on a stale Secret (I4), and
    /// which were handed a token that is not in their Secret (I5).
    fn look(&mut self, world: &mut World, now: Instant) {
        let mut older = Vec::new();
        for t in &world.tenants {
            let key = t.key();
            let Some(account_version) = world.api.version_of(&t.account_path()) else {
                self.stale_since.remove(&key);
                self.kept_since.remove(&key);
                continue;
            };
            let bound = t.validate_every.map(|every| every + STALE_READY_SLACK);
            let before = self.watching.insert(key.clone(), (t.client.clone(), bound));
            if before.is_some_and(|(client, b)| b != bound || client != t.client) {
                // A spec edit (another probe interval, another client): the bound counts from
                // the edit.
                self.stale_since.remove(&key);
            }
            // The account's phase and the Secret's token, read again only when they changed.
            let versions = (account_version, world.api.version_of(&t.output_path()));
            let (ready, in_secret) = match self.read.get(&key) {
                Some((seen, ready, in_secret)) if *seen == versions => (*ready, in_secret.clone()),
                _ => {
                    let status: DhanAccountStatus = world
                        .api
                        .get(&t.account_path())
                        .and_then(|a| serde_json::from_value(a["status"].clone()).ok())
                        .unwrap_or_default();
                    let ready = status.phase == Some(crate::crd::Phase::Ready);
                    let in_secret = secret_token(world, &t.output_path());
                    self.read
                        .insert(key.clone(), (versions, ready, in_secret.clone()));
                    (ready, in_secret)
                }
            };
            let serial = in_secret
                .as_deref()
                .and_then(|token| world.dhan.issued(token))
                .map(|i| i.serial);
            if let Some(serial) = serial {
                self.ever_in_secret.insert(serial);
                let before = self.in_secret.insert(key.clone(), serial);
                if before.is_some_and(|b| b > serial) {
                    older.push(format!(
                        "I5: {key}'s Secret went back from token #{} to the older #{serial}",
                        before.unwrap_or_default()
                    ));
                }
            }
            let live = world.dhan.live(&t.client);
            let exempt = !world.process_up(t.install) || world.refused_in(&t.namespace);
            let stale = ready && in_secret != live && !exempt;
            if stale {
                self.stale_since.entry(key.clone()).or_insert(now);
            } else {
                self.stale_since.remove(&key);
            }
            let handed = live
                .as_deref()
                .and_then(|l| world.dhan.issued(l))
                .filter(|i| {
                    i.delivered
                        && i.acting.as_ref().is_some_and(|a| {
                            a.account == key
                                && a.process == (t.install, world.incarnation(t.install))
                        })
                });
            let dropped = handed.is_some() && in_secret != live && !exempt;
            if dropped {
                self.kept_since.entry(key).or_insert(now);
            } else {
                self.kept_since.remove(&key);
            }
        }
        for text in older {
            Self::violation(world, text);
        }
    }

    /// I7 and L1, at the end of a run (after [`QUIET_END`] without faults).
    pub fn finish(&mut self, world: &mut World) {
        self.check(world);
        let tokens: Vec<String> = world
            .dhan
            .all_issued()
            .into_iter()
            .map(|(t, _)| t)
            .collect();
        let pins: Vec<String> = world.pins.values().cloned().collect();
        let mut texts = Vec::new();
        for object in world
            .api
            .under("/apis/dhan-operator.dev/v1alpha1/namespaces/")
        {
            texts.push((
                object["metadata"]["name"].to_string(),
                object["status"].to_string(),
            ));
        }
        for object in world.api.under("/apis/events.k8s.io/v1/namespaces/") {
            texts.push(("an event".to_string(), object["note"].to_string()));
        }
        for (what, text) in texts {
            if tokens.iter().any(|t| text.contains(t.as_str()))
                || pins.iter().any(|p| leaks_pin(&text, p))
            {
                Self::violation(world, format!("I7: a token or PIN in {what}: {text}"));
            }
        }
        let quiet = QUIET_END.as_secs() / 3600;
        for (client, _) in world.pins.clone() {
            let usable: Vec<_> = world
                .tenants
                .iter()
                .filter(|t| {
                    t.client == client && !t.absent && !t.suspended && t.correct(&world.pins)
                })
                .cloned()
                .collect();
            if usable.is_empty() {
                continue;
            }
            let live = world.dhan.live(&client);
            let served = world.tenants.iter().any(|t| {
                t.client == client
                    && !t.absent
                    && live.is_some()
                    && secret_token(world, &t.output_path()) == live
            });
            if !served {
                let phases: Vec<String> = usable
                    .iter()
                    .map(|t| {
                        let status: DhanAccountStatus = world
                            .api
                            .get(&t.account_path())
                            .map(|a| {
                                serde_json::from_value(a["status"].clone()).unwrap_or_default()
                            })
                            .unwrap_or_default();
                        format!("{}: {:?} {:?}", t.key(), status.phase, status.message)
                    })
                    .collect();
                // Who holds the client ID's claim: an account of a tenant, or one long gone.
                let claim = world
                    .api
                    .get(&format!(
                        "/apis/dhan-operator.dev/v1alpha1/dhanclientclaims/{}",
                        crate::claims::claim_name(&client)
                    ))
                    .map(|c| c["spec"]["holder"].clone());
                let holder = claim.as_ref().map(|h| {
                    let uid = h["account"].as_str().unwrap_or_default();
                    let of = world.tenants.iter().find(|t| {
                        world
                            .api
                            .get(&t.account_path())
                            .is_some_and(|a| a["metadata"]["uid"] == uid)
                    });
                    let why = of
                        .and_then(|t| world.api.get(&t.account_path()))
                        .map(|a| {
                            let status = &a["status"];
                            format!(
                                " ({} {}, expires {}, mint unconfirmed since {})",
                                status["phase"],
                                status["message"],
                                status["expiresAt"],
                                status["mintUnconfirmedAt"]
                            )
                        })
                        .unwrap_or_default();
                    format!(
                        "{} of {}{why}",
                        of.map_or(format!("a deleted account ({uid})"), |t| t.key()),
                        h["install"]
                    )
                });
                Self::violation(
                    world,
                    format!(
                        "L1: after {quiet} h without faults no account serves client {client} \
                         ({phases:?}; the claim is held by {holder:?})"
                    ),
                );
            }
        }
    }
}

/// A PIN appears as a word of its own in a message (not inside a longer number).
fn leaks_pin(text: &str, pin: &str) -> bool {
    text.match_indices(pin).any(|(i, _)| {
        let before = text[..i].chars().next_back();
        let after = text[i + pin.len()..].chars().next();
        !before.is_some_and(|c| c.is_ascii_digit()) && !after.is_some_and(|c| c.is_ascii_digit())
    })
}

fn secret_token(world: &World, path: &str) -> Option<String> {
    use base64::Engine as _;
    let secret = world.api.get(path)?;
    let value = secret["data"]["DHAN_ACCESS_TOKEN"].as_str()?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(value)
        .ok()?;
    String::from_utf8(bytes).ok()
}
