//! The simulated world: one in-memory API server, a simulated Dhan, one or two installs of the
//! operator (each a process that can crash and restart), the DhanAccounts of their tenants, and
//! a fault scheduler driven by one seeded random generator. Time is tokio's paused clock: the
//! loop jumps from event to event, so thirty days take milliseconds, and the same seed gives
//! the same run.

use super::dhan::{ACTING, Acting, LostAs, MintFault, SimDhan};
use crate::claims::{ClaimSettings, Claims};
use crate::clock::{Clock, TokioClock};
use crate::controller::index::REPLACE_GRACE;
use crate::controller::reconcile::{self, Error};
use crate::controller::tests::fake_api::FakeApi;
use crate::controller::tests::fixtures::{b64, context};
use crate::controller::{Context, prune_once};
use crate::crd::{DhanAccount, REFRESH_REQUESTED_ANNOTATION};
use chrono::{DateTime, Utc};
use futures::channel::mpsc::UnboundedReceiver;
use http::Method;
use kube::ResourceExt;
use kube::runtime::reflector::{self, ObjectRef, store::Writer};
use kube::runtime::watcher;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

pub const TOTP_SECRET: &str = "JBSWY3DPEHPK3PXPJBSWY3DP";
pub const WRONG_PIN: &str = "999999";
/// How long an install's claims hold without a heartbeat.
const CLAIM_DURATION: Duration = Duration::from_secs(1800);
/// The heartbeat between reconciles. The real one beats every 10 s; between reconciles only
/// other installs read it (against the claim duration), so a slower beat saves work and
/// changes nothing they see. While reconciles run, it beats every 10 s.
const IDLE_BEAT: Duration = Duration::from_secs(600);
pub(super) const PRUNE_EVERY: Duration = Duration::from_secs(3600);
/// The controller's retry after a reconcile error (`reconcile::error_policy`).
const ERROR_RETRY: Duration = Duration::from_secs(15);
/// No faults in the run's last stretch: every account must then settle.
pub const QUIET_END: Duration = Duration::from_secs(30 * 3600);

/// What one simulated run is.
#[derive(Clone, Copy, Debug)]
pub struct Config {
    pub seed: u64,
    pub days: u32,
    /// Mean time between faults.
    pub fault_every: Duration,
    /// Mean time between spec edits (another probe interval, another client ID); none: no
    /// edits (how the seeds kept as regressions were found).
    pub edit_every: Option<Duration>,
}

impl Config {
    pub fn new(seed: u64, days: u32) -> Config {
        Config {
            seed,
            days,
            fault_every: Duration::from_secs(3 * 3600),
            edit_every: Some(Duration::from_secs(12 * 3600)),
        }
    }

    /// Without spec edits: the runs in which the seeds kept as regressions found their bugs.
    pub fn without_spec_edits(self) -> Config {
        Config {
            edit_every: None,
            ..self
        }
    }
}

/// How a run went.
#[derive(Debug, Default)]
pub struct Report {
    pub violations: Vec<String>,
    pub trace: Vec<String>,
    pub reconciles: u64,
    /// Reconciles per account and the phase it ended in.
    pub per_account: BTreeMap<String, u64>,
    pub mints: usize,
    pub faults: u64,
}

/// See [`World::fingerprint`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fingerprint {
    api: u64,
    dhan: u64,
    live: Vec<Option<String>>,
    processes: Vec<(bool, u32)>,
    refusing: Vec<String>,
}

/// One DhanAccount as its tenant wrote it.
#[derive(Clone, Debug)]
pub struct Tenant {
    pub namespace: String,
    pub name: String,
    pub client: String,
    pub pin: String,
    pub suspended: bool,
    /// `spec.refresh.validateEvery`; `None` for `0` (no probes).
    pub validate_every: Option<Duration>,
    /// Deleted and not (yet) re-created.
    pub absent: bool,
    pub install: usize,
}

impl Tenant {
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
    pub fn account_path(&self) -> String {
        format!(
            "/apis/dhan-operator.dev/v1alpha1/namespaces/{}/dhanaccounts/{}",
            self.namespace, self.name
        )
    }
    pub fn output_path(&self) -> String {
        secret_path(&self.namespace, &format!("{}-token", self.name))
    }
    fn credentials_path(&self) -> String {
        secret_path(&self.namespace, &format!("{}-dhan", self.name))
    }
    pub fn correct(&self, pins: &BTreeMap<String, String>) -> bool {
        pins.get(&self.client) == Some(&self.pin)
    }
}

fn secret_path(namespace: &str, name: &str) -> String {
    format!("/api/v1/namespaces/{namespace}/secrets/{name}")
}

/// One install of the operator: its current process.
struct Process {
    install: String,
    namespaces: Vec<String>,
    ctx: Arc<Context>,
    writer: Writer<DhanAccount>,
    incarnation: u32,
    /// Down (crashed) until then.
    down_until: Option<Instant>,
    /// It dies at this instant, whatever it is doing.
    crash_at: Option<Instant>,
    /// When each account (by key) is to be reconciled next.
    due: BTreeMap<String, Instant>,
    /// The resource versions it has seen (its watches), by path.
    seen: HashMap<String, String>,
    /// The last copy of each account it saw (for a deletion event).
    cached: BTreeMap<String, DhanAccount>,
    /// The API server's revision when its watches last looked: nothing new until it changes.
    watched: Option<u64>,
    /// The client-ID claims' versions its claims watch has seen, by path.
    claims_seen: HashMap<String, Option<String>>,
    /// The accounts its index wakes (another account's claim on their client ID changed).
    wakes: UnboundedReceiver<ObjectRef<DhanAccount>>,
    next_beat: Instant,
}

pub struct World {
    pub rng: StdRng,
    /// Spec edits' own random stream (see [`World::spec_edit`]).
    edit_rng: StdRng,
    pub api: FakeApi,
    pub dhan: Arc<SimDhan>,
    pub clock: Arc<dyn Clock>,
    pub tenants: Vec<Tenant>,
    pub pins: BTreeMap<String, String>,
    processes: Vec<Process>,
    /// Secret writes refused in a namespace until then.
    pub refusing: BTreeMap<String, Instant>,
    pub report: Report,
    /// Claims of deleted accounts, released when their grace is over (a crashed process's
    /// pending releases die with it: its `Claims` is gone).
    releases: Vec<(Instant, Arc<Claims>, String)>,
    /// What makes another mint due, per client and IST day (see `invariants`, I1).
    causes: BTreeMap<(String, chrono::NaiveDate), u32>,
    pub(super) start: Instant,
}

impl World {
    pub(super) fn new(seed: u64) -> World {
        let mut rng = StdRng::seed_from_u64(seed);
        // A Monday 00:00 UTC, and any moment of the week after.
        let base: DateTime<Utc> = "2026-11-23T00:00:00Z".parse().unwrap();
        let started_at = base + chrono::Duration::seconds(rng.random_range(0..7 * 86_400));
        let clock: Arc<dyn Clock> = Arc::new(TokioClock::starting_at(started_at));
        let dhan = Arc::new(SimDhan::new(clock.clone(), TOTP_SECRET));
        let api = FakeApi::default().unlogged();
        let installs = rng.random_range(1..=2usize);
        let namespaces: Vec<Vec<String>> = (0..installs)
            .map(|i| {
                if i == 0 {
                    vec!["ns-a".into(), "ns-b".into()]
                } else {
                    vec!["ns-c".into()]
                }
            })
            .collect();
        let clients = rng.random_range(1..=2usize);
        let mut pins = BTreeMap::new();
        for c in 0..clients {
            let client = format!("11000000{c:02}");
            let pin = format!("{}", 100_000 + rng.random_range(0..800_000u32));
            dhan.register(&client, &pin);
            pins.insert(client, pin);
        }
        let count = rng.random_range(1..=4usize);
        let mut tenants = Vec::new();
        for n in 0..count {
            let install = rng.random_range(0..installs);
            let ns = &namespaces[install];
            let namespace = ns[rng.random_range(0..ns.len())].clone();
            let client = format!("11000000{:02}", rng.random_range(0..clients));
            let pin = if rng.random_bool(0.8) {
                pins[&client].clone()
            } else {
                WRONG_PIN.to_string()
            };
            tenants.push(Tenant {
                namespace,
                name: format!("acct-{n}"),
                client,
                pin,
                suspended: rng.random_bool(0.1),
                validate_every: VALIDATE_EVERY[rng.random_range(0..VALIDATE_EVERY.len())]
                    .map(Duration::from_secs),
                absent: false,
                install,
            });
        }
        let start = Instant::now();
        let processes = (0..installs)
            .map(|i| {
                let install = format!("install-{i}");
                let (ctx, writer) = process_context(&api, &dhan, &clock, &install);
                let wakes = ctx.index.wakes();
                Process {
                    wakes,
                    install,
                    namespaces: namespaces[i].clone(),
                    ctx,
                    writer,
                    incarnation: 0,
                    down_until: None,
                    crash_at: None,
                    due: BTreeMap::new(),
                    seen: HashMap::new(),
                    cached: BTreeMap::new(),
                    watched: None,
                    claims_seen: HashMap::new(),
                    next_beat: start,
                }
            })
            .collect();
        let mut world = World {
            rng,
            edit_rng: StdRng::seed_from_u64(seed ^ 0x5eed_ed17),
            api,
            dhan,
            clock,
            tenants,
            pins,
            processes,
            refusing: BTreeMap::new(),
            report: Report::default(),
            releases: Vec::new(),
            causes: BTreeMap::new(),
            start,
        };
        for i in 0..world.tenants.len() {
            world.create(i, i as i64);
        }
        world.note(format!(
            "seed {seed}: {installs} install(s), clients {:?}, accounts {:?}",
            world.pins.keys().collect::<Vec<_>>(),
            world
                .tenants
                .iter()
                .map(|t| format!(
                    "{} client {}{}{} (install {})",
                    t.key(),
                    t.client,
                    if t.correct(&world.pins) {
                        ""
                    } else {
                        " wrong PIN"
                    },
                    if t.suspended { " suspended" } else { "" },
                    t.install
                ))
                .collect::<Vec<_>>()
        ));
        world
    }

    /// Writes tenant `i`'s credentials and account (`age` seconds after the others, so that
    /// the oldest is well defined).
    fn create(&mut self, i: usize, age: i64) {
        let t = self.tenants[i].clone();
        self.api.put(
            &t.credentials_path(),
            json!({"metadata": {"name": format!("{}-dhan", t.name), "namespace": t.namespace},
                   "data": {"pin": b64(&t.pin), "totpSecret": b64(TOTP_SECRET)}}),
        );
        let created = self.clock.now() + chrono::Duration::seconds(age);
        self.api.put(
            &t.account_path(),
            json!({"apiVersion": "dhan-operator.dev/v1alpha1", "kind": "DhanAccount",
                   "metadata": {"name": t.name, "namespace": t.namespace, "generation": 1,
                                "creationTimestamp": created.format("%Y-%m-%dT%H:%M:%SZ").to_string()},
                   "spec": {"clientId": t.client, "credentialsSecret": format!("{}-dhan", t.name),
                            "suspend": t.suspended,
                            "refresh": {"validateEvery": validate_every_text(t.validate_every)}}}),
        );
        self.tenants[i].absent = false;
    }

    pub fn elapsed(&self) -> String {
        let s = (Instant::now() - self.start).as_secs();
        format!(
            "d{} {:02}:{:02}:{:02}",
            s / 86_400,
            s / 3600 % 24,
            s / 60 % 60,
            s % 60
        )
    }

    pub fn note(&mut self, line: String) {
        let line = format!(
            "[{} | {}] {line}",
            self.elapsed(),
            self.clock.now().format("%a %H:%M:%S UTC")
        );
        self.report.trace.push(line);
    }

    pub(super) fn fault_gap(&mut self, mean: Duration) -> Duration {
        let mean = mean.as_secs().max(1);
        Duration::from_secs(self.rng.random_range(1..=2 * mean))
    }

    pub(super) fn edit_gap(&mut self, mean: Duration) -> Duration {
        let mean = mean.as_secs().max(1);
        Duration::from_secs(self.edit_rng.random_range(1..=2 * mean))
    }

    pub(super) fn next_due(&self) -> Option<Instant> {
        self.processes
            .iter()
            .flat_map(|p| {
                let due = p.due.values().min().copied();
                let restart = p.down_until;
                let crash = p.crash_at;
                let beat = p.down_until.is_none().then_some(p.next_beat);
                match p.down_until {
                    Some(_) => [restart, None, None],
                    None => [due, crash, beat],
                }
            })
            .flatten()
            .chain(self.releases.iter().map(|(at, _, _)| *at))
            .min()
    }

    pub fn causes(&self, client: &str, day: chrono::NaiveDate) -> u32 {
        self.causes
            .get(&(client.to_string(), day))
            .copied()
            .unwrap_or(0)
    }

    fn cause(&mut self, client: &str) {
        self.cause_on(client, ist_day(self.clock.now()));
    }

    /// Something that makes another mint due for `client` on IST day `day`.
    pub fn cause_on(&mut self, client: &str, day: chrono::NaiveDate) {
        *self.causes.entry((client.to_string(), day)).or_default() += 1;
    }

    /// The clients of install `install`'s accounts.
    fn clients_of(&self, install: usize) -> Vec<String> {
        let mut clients: Vec<String> = self
            .tenants
            .iter()
            .filter(|t| t.install == install)
            .map(|t| t.client.clone())
            .collect();
        clients.dedup();
        clients
    }

    /// Whether account `key` (`namespace/name`) exists and names `client`.
    pub fn manages(&self, key: &str, client: &str) -> bool {
        self.tenants
            .iter()
            .any(|t| t.key() == key && !t.absent && t.client == client)
    }

    pub fn process_up(&self, install: usize) -> bool {
        self.processes[install].down_until.is_none()
    }

    pub fn incarnation(&self, install: usize) -> u32 {
        self.processes[install].incarnation
    }

    /// What the invariants that read the API server and Dhan depend on, but for time.
    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint {
            api: self.api.revision(),
            dhan: self.dhan.revision(),
            live: self.pins.keys().map(|c| self.dhan.live(c)).collect(),
            processes: self
                .processes
                .iter()
                .map(|p| (p.down_until.is_none(), p.incarnation))
                .collect(),
            refusing: self.refusing.keys().cloned().collect(),
        }
    }

    pub fn refused_in(&self, namespace: &str) -> bool {
        self.refusing.contains_key(namespace)
    }

    /// A crash: everything the process kept in memory is gone; a new one starts later.
    fn crash(&mut self, install: usize, now: Instant) {
        let downtime = Duration::from_secs(self.rng.random_range(5..180));
        if let Some(dead) = self.processes[install].ctx.claims.clone() {
            self.releases.retain(|(_, c, _)| !Arc::ptr_eq(c, &dead));
        }
        let p = &mut self.processes[install];
        p.crash_at = None;
        p.down_until = Some(now + downtime);
        p.incarnation += 1;
        p.due.clear();
        p.seen.clear();
        p.cached.clear();
        p.watched = None;
        p.claims_seen.clear();
        let (ctx, writer) = process_context(&self.api, &self.dhan, &self.clock, &p.install);
        p.wakes = ctx.index.wakes();
        p.ctx = ctx;
        p.writer = writer;
        for client in self.clients_of(install) {
            self.cause(&client);
        }
        self.note(format!(
            "install-{install} crashed; back in {}s",
            downtime.as_secs()
        ));
    }

    pub(super) fn restart_crashed(&mut self, now: Instant) {
        for i in 0..self.processes.len() {
            if self.processes[i].crash_at.is_some_and(|t| t <= now) {
                self.crash(i, now);
            }
            let p = &mut self.processes[i];
            if p.down_until.is_some_and(|t| t <= now) {
                p.down_until = None;
                p.next_beat = now;
                self.note(format!("install-{i} started"));
            }
        }
    }

    pub(super) fn lift_refusals(&mut self, now: Instant) {
        let over: Vec<String> = self
            .refusing
            .iter()
            .filter(|(_, until)| **until <= now)
            .map(|(ns, _)| ns.clone())
            .collect();
        for key in over {
            self.refusing.remove(&key);
            match key.strip_suffix("#status") {
                Some(ns) => self
                    .api
                    .allow_path(&format!("/namespaces/{ns}/dhanaccounts/")),
                None => self.api.allow_path(&format!("/namespaces/{key}/secrets/")),
            }
            self.note(format!("writes refused under {key} succeed again"));
        }
    }

    pub(super) async fn idle_beats(&mut self, now: Instant) {
        for p in self.processes.iter_mut().filter(|p| p.down_until.is_none()) {
            if p.next_beat <= now {
                if let Some(claims) = &p.ctx.claims
                    && let Err(error) = claims.beat().await
                {
                    self.report
                        .trace
                        .push(format!("{} heartbeat failed: {error}", p.install));
                }
                p.next_beat = now + IDLE_BEAT;
            }
        }
    }

    pub(super) fn prune(&mut self) {
        for p in self.processes.iter().filter(|p| p.down_until.is_none()) {
            let live = p.cached.values().filter_map(|a| a.uid()).collect();
            prune_once(&p.ctx, &live);
        }
    }

    /// What each process's watches would deliver: the accounts of its namespaces, and the
    /// Secrets they read or write, when they changed by someone else's hand.
    pub(super) async fn watch(&mut self) {
        let now = Instant::now();
        // The watch of a process gives a deleted account's claim up (`controller::watch`).
        let mut released = Vec::new();
        let revision = self.api.revision();
        for p in self.processes.iter_mut().filter(|p| p.down_until.is_none()) {
            if p.watched == Some(revision) {
                continue;
            }
            p.watched = Some(revision);
            let mut woken_clients = BTreeSet::new();
            for t in self
                .tenants
                .iter()
                .filter(|t| p.namespaces.contains(&t.namespace))
            {
                let key = t.key();
                let path = t.account_path();
                let object = self.api.get(&path);
                let version = object.as_ref().map(|o| {
                    o["metadata"]["resourceVersion"]
                        .as_str()
                        .unwrap_or("")
                        .to_string()
                });
                let changed = p.seen.get(&path) != version.as_ref();
                match (object, changed) {
                    (Some(object), true) => {
                        let account: DhanAccount =
                            serde_json::from_value(object).expect("a valid DhanAccount");
                        p.seen.insert(path, version.unwrap_or_default());
                        let event = watcher::Event::Apply(account.clone());
                        p.ctx.index.apply(&event);
                        p.writer.apply_watcher_event(&event);
                        let own = p.ctx.memos.is_own_status_write(&account);
                        p.cached.insert(key.clone(), account);
                        if !own {
                            p.due.insert(key.clone(), now);
                        }
                    }
                    (None, true) => {
                        p.seen.remove(&path);
                        p.due.remove(&key);
                        if let Some(account) = p.cached.remove(&key) {
                            if let Some(claims) = p.ctx.claims.clone() {
                                released.push((claims, account.uid().unwrap_or_default()));
                            }
                            let event = watcher::Event::Delete(account);
                            p.ctx.index.apply(&event);
                            p.writer.apply_watcher_event(&event);
                        }
                    }
                    _ => {}
                }
                while let Ok(woken) = p.wakes.try_recv() {
                    let woken = format!("{}/{}", woken.namespace.unwrap_or_default(), woken.name);
                    if p.cached.contains_key(&woken) {
                        p.due.insert(woken, now);
                    }
                }
                // The claims watch: a changed claim wakes the accounts of its client ID.
                let claim = format!(
                    "/apis/dhan-operator.dev/v1alpha1/dhanclientclaims/{}",
                    crate::claims::claim_name(&t.client)
                );
                let object = self.api.get(&claim);
                let version = object.as_ref().map(|c| {
                    c["metadata"]["resourceVersion"]
                        .as_str()
                        .unwrap_or("")
                        .to_string()
                });
                if p.claims_seen.get(&claim) != Some(&version) {
                    // As `controller::watch_claims`: this install's own writes wake nobody.
                    let label = object.as_ref().and_then(|c| {
                        c["metadata"]["labels"][crate::claims::INSTALL_LABEL].as_str()
                    });
                    let own = p.ctx.claims.as_ref().map(|c| c.install_label());
                    if label != own.as_deref() {
                        woken_clients.insert(t.client.clone());
                    }
                    p.claims_seen.insert(claim, version);
                }
                for secret in [t.credentials_path(), t.output_path()] {
                    let Some(object) = self.api.get(&secret) else {
                        continue;
                    };
                    let version = object["metadata"]["resourceVersion"].as_str().unwrap_or("");
                    if p.seen.get(&secret).map(String::as_str) == Some(version) {
                        continue;
                    }
                    p.seen.insert(secret.clone(), version.to_string());
                    let secret: k8s_openapi::api::core::v1::Secret =
                        serde_json::from_value(object).expect("a Secret");
                    if !p.ctx.own_writes.is_echo(&secret) && p.cached.contains_key(&key) {
                        p.due.insert(key.clone(), now);
                    }
                }
            }
            for (key, account) in &p.cached {
                if woken_clients.contains(account.spec.client_id.trim()) {
                    p.due.insert(key.clone(), now);
                }
            }
        }
        for (claims, uid) in released {
            self.releases.push((now + REPLACE_GRACE, claims, uid));
        }
    }

    /// The claims of deleted accounts whose grace is over (`controller::watch`).
    pub(super) async fn release_due(&mut self, now: Instant) {
        let (due, later) = std::mem::take(&mut self.releases)
            .into_iter()
            .partition::<Vec<_>, _>(|(at, _, _)| *at <= now);
        self.releases = later;
        for (_, claims, uid) in due {
            claims.release(&uid).await;
        }
    }

    /// Runs every reconcile that is due, the processes side by side; a process whose crash
    /// comes meanwhile dies in the middle of whatever it awaits.
    pub(super) async fn reconcile_due(&mut self) {
        let now = Instant::now();
        let mut runs = Vec::new();
        for (i, p) in self.processes.iter_mut().enumerate() {
            if p.down_until.is_some() {
                continue;
            }
            let due: Vec<String> = p
                .due
                .iter()
                .filter(|(_, t)| **t <= now)
                .map(|(k, _)| k.clone())
                .collect();
            for key in due {
                p.due.remove(&key);
                let Some(account) = p.cached.get(&key).cloned() else {
                    continue;
                };
                runs.push((i, p.incarnation, key, account));
            }
        }
        if runs.is_empty() {
            return;
        }
        // The heartbeat task, one per process, beats first if due.
        for p in self.processes.iter().filter(|p| p.down_until.is_none()) {
            if let Some(claims) = &p.ctx.claims
                && claims.beat_due()
                && let Err(error) = claims.beat().await
            {
                self.report
                    .trace
                    .push(format!("{} heartbeat failed: {error}", p.install));
            }
        }
        let hangs_before = self.dhan.hangs_started();
        let crash_at: Vec<Option<Instant>> = self.processes.iter().map(|p| p.crash_at).collect();
        let contexts: Vec<Arc<Context>> = self.processes.iter().map(|p| p.ctx.clone()).collect();
        let reconciles = runs.iter().map(|(i, incarnation, key, account)| {
            let ctx = contexts[*i].clone();
            let acting = Acting {
                account: key.clone(),
                process: (*i, *incarnation),
            };
            let account = Arc::new(account.clone());
            let crash = crash_at[*i];
            async move {
                let run = ACTING.scope(acting, reconcile::reconcile_bounded(account, ctx));
                match crash {
                    Some(at) => tokio::time::timeout_at(at, run).await.ok(),
                    None => Some(run.await),
                }
            }
        });
        let all = futures::future::join_all(reconciles);
        // The heartbeat task runs beside the reconciles.
        let beats = async {
            loop {
                tokio::time::sleep(crate::claims::HEARTBEAT_EVERY).await;
                for (i, ctx) in contexts.iter().enumerate() {
                    if crash_at[i].is_some_and(|t| t <= Instant::now()) {
                        continue;
                    }
                    if let Some(claims) = &ctx.claims
                        && claims.beat_due()
                    {
                        let _ = claims.beat().await;
                    }
                }
            }
        };
        let results = tokio::select! {
            results = all => results,
            () = beats => unreachable!("the heartbeat never ends"),
        };
        self.report.reconciles += results.len() as u64;
        let after = Instant::now();
        let mut crashed = BTreeSet::new();
        for ((i, incarnation, key, _), result) in runs.into_iter().zip(results) {
            if self.processes[i].incarnation != incarnation {
                continue;
            }
            *self.report.per_account.entry(key.clone()).or_default() += 1;
            match result {
                None => {
                    crashed.insert(i);
                }
                Some(Ok(requeue)) => {
                    if let Some(after_d) = requeue {
                        self.processes[i].due.insert(key, after + after_d);
                    }
                }
                Some(Err(error)) => {
                    if matches!(error, Error::Deadline(_))
                        && self.dhan.hangs_started() == hangs_before
                    {
                        self.report.violations.push(format!(
                            "[{}] I6: the reconcile of {key} was cut off at its deadline with no \
                             hanging call to blame",
                            self.elapsed()
                        ));
                    }
                    self.note(format!("install-{i} reconcile of {key} failed: {error}"));
                    self.processes[i].due.insert(key, after + ERROR_RETRY);
                }
            }
        }
        for i in crashed {
            self.crash(i, after);
        }
    }

    /// Picks and makes one spec edit, from a random stream of its own: the other faults of a
    /// seed stay as they were before spec edits existed, so the seeds kept as regressions still
    /// replay what they found.
    pub(super) fn spec_edit(&mut self) {
        let t = self.edit_rng.random_range(0..self.tenants.len());
        let tenant = self.tenants[t].clone();
        match self.edit_rng.random_range(0..2u32) {
            0 => {
                // A spec edit: another probe interval.
                if let Some(mut account) = self.api.get(&tenant.account_path()) {
                    let every = VALIDATE_EVERY[self.edit_rng.random_range(0..VALIDATE_EVERY.len())]
                        .map(Duration::from_secs);
                    account["spec"]["refresh"]["validateEvery"] = validate_every_text(every).into();
                    bump_generation(&mut account);
                    self.api.put(&tenant.account_path(), account);
                    self.tenants[t].validate_every = every;
                    self.note(format!(
                        "fault: {} validateEvery={}",
                        tenant.key(),
                        validate_every_text(every)
                    ));
                }
            }
            _ => {
                // A spec edit: the account names another client ID (a typo fixed, or made).
                let others: Vec<String> = self
                    .pins
                    .keys()
                    .filter(|c| **c != tenant.client)
                    .cloned()
                    .collect();
                if others.is_empty() {
                    return;
                }
                let client = others[self.edit_rng.random_range(0..others.len())].clone();
                if let Some(mut account) = self.api.get(&tenant.account_path()) {
                    account["spec"]["clientId"] = client.clone().into();
                    bump_generation(&mut account);
                    self.api.put(&tenant.account_path(), account);
                    self.tenants[t].client = client.clone();
                    self.cause(&tenant.client);
                    self.cause(&client);
                    self.note(format!("fault: {} clientId={client}", tenant.key()));
                }
            }
        }
    }

    /// Picks and injects one fault.
    pub(super) fn fault(&mut self) {
        let now = Instant::now();
        let kind = self.rng.random_range(0..12u32);
        let t = self.rng.random_range(0..self.tenants.len());
        let tenant = self.tenants[t].clone();
        match kind {
            0 | 1 => {
                let install = self.rng.random_range(0..self.processes.len());
                if self.processes[install].down_until.is_some() {
                    return;
                }
                // Somewhere in the next reconcile, or at a random moment.
                let within = if kind == 0 { 3_000 } else { 600_000 };
                let at = now + Duration::from_millis(self.rng.random_range(0..within));
                self.processes[install].crash_at = Some(at);
                self.note(format!(
                    "fault: install-{install} will crash in {:?}",
                    at - now
                ));
            }
            2 => {
                let fault = match self.rng.random_range(0..6u32) {
                    0 => MintFault::ServerError,
                    1 => MintFault::LostAnswer(LostAs::Timeout),
                    2 => MintFault::LostAnswer(LostAs::Reset),
                    3 => MintFault::LostAnswer(LostAs::Malformed),
                    4 => MintFault::Hang,
                    _ => MintFault::RateLimited,
                };
                self.note(format!(
                    "fault: client {}'s next mint: {fault:?}",
                    tenant.client
                ));
                // A lost answer is a cause on the day it is given (the checker counts it): the
                // fault may wait days for the next mint.
                self.dhan.schedule(&tenant.client, fault);
            }
            3 => {
                self.note(format!(
                    "fault: client {}'s next fresh token answers 401 once",
                    tenant.client
                ));
                self.dhan.spurious_401(&tenant.client);
            }
            4 => {
                if self.dhan.revoke(&tenant.client) {
                    self.cause(&tenant.client);
                    self.note(format!(
                        "fault: client {}'s token revoked (a login elsewhere)",
                        tenant.client
                    ));
                }
            }
            5 => {
                let ns = tenant.namespace.clone();
                let span = Duration::from_secs(self.rng.random_range(30..1800));
                for method in [Method::PATCH, Method::PUT, Method::POST] {
                    self.api.refuse(
                        method,
                        &format!("/namespaces/{ns}/secrets/"),
                        403,
                        "exceeded quota",
                    );
                }
                self.refusing.insert(ns.clone(), now + span);
                let clients: Vec<String> = self
                    .tenants
                    .iter()
                    .filter(|t| t.namespace == ns)
                    .map(|t| t.client.clone())
                    .collect();
                for client in clients {
                    self.cause(&client);
                }
                self.note(format!(
                    "fault: Secret writes in {ns} refused for {}s",
                    span.as_secs()
                ));
            }
            6 => {
                if let Some(mut secret) = self.api.get(&tenant.credentials_path()) {
                    secret["metadata"]["annotations"]["touched"] =
                        self.clock.now().to_rfc3339().into();
                    self.api.put(&tenant.credentials_path(), secret);
                    self.note(format!(
                        "fault: credentials of {} touched (an annotation)",
                        tenant.key()
                    ));
                }
            }
            7 => {
                if let Some(mut account) = self.api.get(&tenant.account_path()) {
                    let value = format!("r{}", self.rng.random_range(0..1_000_000u32));
                    account["metadata"]["annotations"][REFRESH_REQUESTED_ANNOTATION] = value.into();
                    self.api.put(&tenant.account_path(), account);
                    self.cause(&tenant.client);
                    self.note(format!("fault: refresh requested for {}", tenant.key()));
                }
            }
            8 => {
                if tenant.absent {
                    self.create(t, 0);
                    self.note(format!("fault: {} created again", tenant.key()));
                } else {
                    self.api.remove(&tenant.account_path());
                    self.tenants[t].absent = true;
                    self.note(format!(
                        "fault: {} deleted (its Secret retained)",
                        tenant.key()
                    ));
                    if self.rng.random_bool(0.8) {
                        // `kubectl replace --force`, a GitOps re-sync: back at once.
                        self.create(t, 0);
                        self.note(format!("fault: {} created again", tenant.key()));
                    }
                }
            }
            9 => {
                if let Some(mut account) = self.api.get(&tenant.account_path()) {
                    let suspend = !tenant.suspended;
                    account["spec"]["suspend"] = suspend.into();
                    bump_generation(&mut account);
                    self.api.put(&tenant.account_path(), account);
                    self.tenants[t].suspended = suspend;
                    self.cause(&tenant.client);
                    self.note(format!("fault: {} suspend={suspend}", tenant.key()));
                }
            }
            10 => {
                if let Some(mut account) = self.api.get(&tenant.account_path()) {
                    let step = crate::dhan::totp::step_at(self.clock.now());
                    account["status"]["lastTotpStep"] = (step + 1_000_000).into();
                    account["status"]["retryNotBefore"] = "2031-01-01T00:00:00Z".into();
                    self.api.put(&tenant.account_path(), account);
                    self.note(format!(
                        "fault: a tenant wrote future values into {}'s status",
                        tenant.key()
                    ));
                }
            }
            _ => {
                let ns = tenant.namespace.clone();
                let path = format!("/namespaces/{ns}/dhanaccounts/");
                let span = Duration::from_secs(self.rng.random_range(10..600));
                self.api
                    .refuse(Method::PATCH, &path, 500, "etcdserver: request timed out");
                self.refusing.insert(format!("{ns}#status"), now + span);
                self.note(format!(
                    "fault: status writes in {ns} fail for {}s",
                    span.as_secs()
                ));
            }
        }
    }
}

/// The probe intervals accounts choose from (seconds; none: `0`, no probes); the default
/// (15 min) twice as often as each other.
const VALIDATE_EVERY: [Option<u64>; 5] = [
    Some(15 * 60),
    Some(15 * 60),
    Some(3600),
    Some(6 * 3600),
    None,
];

fn validate_every_text(every: Option<Duration>) -> String {
    every.map_or("0".to_string(), |d| format!("{}m", d.as_secs() / 60))
}

fn bump_generation(object: &mut Value) {
    let generation = object["metadata"]["generation"].as_i64().unwrap_or(1) + 1;
    object["metadata"]["generation"] = generation.into();
}

fn process_context(
    api: &FakeApi,
    dhan: &Arc<SimDhan>,
    clock: &Arc<dyn Clock>,
    install: &str,
) -> (Arc<Context>, Writer<DhanAccount>) {
    let (store, writer) = reflector::store();
    let mut ctx = context(api, dhan.clone(), clock.clone(), false, store);
    let settings = ClaimSettings {
        install: install.into(),
        identity: format!("{install}-pod"),
        duration: CLAIM_DURATION,
        leader_elected: false,
    };
    ctx.claims = Some(Arc::new(Claims::new(api.client(), settings, clock.clone())));
    (Arc::new(ctx), writer)
}

/// The IST day of `t` (the day Dhan's and the cap's counts belong to).
pub fn ist_day(t: DateTime<Utc>) -> chrono::NaiveDate {
    (t + chrono::Duration::minutes(330)).date_naive()
}
