//! The simulated world: one in-memory API server, a simulated Dhan, one or two installs of the
//! operator (each a process that can crash and restart), the DhanAccounts of their tenants, and
//! a fault scheduler driven by one seeded random generator. Time is tokio's paused clock: the
//! loop jumps from event to event, so thirty days take milliseconds, and the same seed gives
//! the same run.

use super::dhan::SimDhan;
use crate::claims::{ClaimSettings, Claims};
use crate::clock::{Clock, TokioClock};
use crate::controller::tests::fake_api::FakeApi;
use crate::controller::tests::fixtures::{b64, context};
use crate::controller::{Context, prune_claims, prune_once};
use crate::crd::DhanAccount;
use crate::leader::{ElectionSettings, Leadership};
use chrono::{DateTime, Utc};
use futures::FutureExt;
use futures::channel::mpsc::UnboundedReceiver;
use kube::ResourceExt;
use kube::runtime::reflector::{self, ObjectRef, store::Writer};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
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
/// With the infrastructure's faults (the runs since): no idle beat where nobody reads it (one
/// install), and every 20 min where another install does — a failed one again a minute later —
/// well inside the 30 min claim duration.
const IDLE_BEAT_SINCE_INFRA: Duration = Duration::from_secs(1200);
const IDLE_BEAT_RETRY: Duration = Duration::from_secs(60);
pub(super) const PRUNE_EVERY: Duration = Duration::from_secs(3600);
/// The controller's retry after a reconcile error (`reconcile::error_policy`).
pub(super) const ERROR_RETRY: Duration = Duration::from_secs(15);
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
    /// Mean time between faults of the infrastructure (a node's clock steps, the API server
    /// slows down, a leader is deposed), from a random stream of their own; none: no such
    /// faults (how the seeds kept as regressions before them were found).
    pub infra_every: Option<Duration>,
}

impl Config {
    pub fn new(seed: u64, days: u32) -> Config {
        Config {
            seed,
            days,
            fault_every: Duration::from_secs(3 * 3600),
            edit_every: Some(Duration::from_secs(12 * 3600)),
            infra_every: Some(Duration::from_secs(8 * 3600)),
        }
    }

    /// Without the infrastructure's faults: as the seeds kept as regressions before them ran.
    pub fn without_infra_faults(self) -> Config {
        Config {
            infra_every: None,
            ..self
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
    /// When its `clientId` was last edited: a token minted before belongs to a client ID it
    /// let go of since (I3 does not protect it).
    pub client_since: Option<DateTime<Utc>>,
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
    pub(super) fn credentials_path(&self) -> String {
        secret_path(&self.namespace, &format!("{}-dhan", self.name))
    }
    pub fn correct(&self, pins: &BTreeMap<String, String>) -> bool {
        pins.get(&self.client) == Some(&self.pin)
    }
}

fn secret_path(namespace: &str, name: &str) -> String {
    format!("/api/v1/namespaces/{namespace}/secrets/{name}")
}

/// A node's wall clock: the world's, stepped by an offset (an NTP step, a VM resumed, a
/// clock set by hand). It outlives the processes that run on the node.
#[derive(Debug, Default)]
pub(super) struct NodeClock {
    world: Option<Arc<dyn Clock>>,
    /// How far the cluster's time is off from Dhan's (every node follows one time source).
    pub(super) cluster_ms: Arc<AtomicI64>,
    /// How far this node is off from the cluster's time (within the margin the operator's clock
    /// assumption allows between nodes).
    pub(super) offset_ms: AtomicI64,
}

impl NodeClock {
    pub(super) fn offset(&self) -> chrono::Duration {
        chrono::Duration::milliseconds(
            self.cluster_ms.load(Ordering::Relaxed) + self.offset_ms.load(Ordering::Relaxed),
        )
    }
}

impl Clock for NodeClock {
    fn now(&self) -> DateTime<Utc> {
        self.world.as_ref().expect("a world clock").now() + self.offset()
    }
}

/// One install of the operator: its current process.
pub(super) struct Process {
    pub(super) install: String,
    /// The clock of the node it runs on.
    pub(super) clock: Arc<NodeClock>,
    pub(super) namespaces: Vec<String>,
    pub(super) ctx: Arc<Context>,
    pub(super) writer: Writer<DhanAccount>,
    pub(super) incarnation: u32,
    /// Down (crashed) until then.
    pub(super) down_until: Option<Instant>,
    /// It dies at this instant, whatever it is doing.
    pub(super) crash_at: Option<Instant>,
    /// Replicas elect a leader (a Lease): this process is the leader; a standby takes over
    /// when it stops renewing the Lease.
    pub(super) elected: bool,
    /// It freezes at this instant for this long (a paused VM, a long GC pause), its
    /// reconciles in flight with it; a standby takes the Lease over meanwhile and the frozen
    /// one finishes what it was doing when it resumes.
    pub(super) stall: Option<(Instant, Duration)>,
    /// A freeze armed on its next mint call that reaches Dhan, for this long.
    pub(super) freeze_on_mint: Option<Duration>,
    /// When each account (by key) is to be reconciled next.
    pub(super) due: BTreeMap<String, Instant>,
    /// The resource versions it has seen (its watches), by path.
    pub(super) seen: HashMap<String, String>,
    /// The last copy of each account it saw (for a deletion event).
    pub(super) cached: BTreeMap<String, DhanAccount>,
    /// The API server's revision when its watches last looked: nothing new until it changes.
    pub(super) watched: Option<u64>,
    /// The client-ID claims' versions its claims watch has seen, by path.
    pub(super) claims_seen: HashMap<String, Option<String>>,
    /// The accounts its index wakes (another account's claim on their client ID changed).
    pub(super) wakes: UnboundedReceiver<ObjectRef<DhanAccount>>,
    pub(super) next_beat: Instant,
}

pub struct World {
    pub rng: StdRng,
    /// Spec edits' own random stream (see [`World::spec_edit`]).
    pub(super) edit_rng: StdRng,
    /// The infrastructure faults' own random stream (see `infra`).
    pub(super) infra_rng: StdRng,
    pub api: FakeApi,
    pub dhan: Arc<SimDhan>,
    pub clock: Arc<dyn Clock>,
    pub tenants: Vec<Tenant>,
    pub pins: BTreeMap<String, String>,
    pub(super) processes: Vec<Process>,
    /// Secret writes refused in a namespace until then.
    pub refusing: BTreeMap<String, Instant>,
    /// Requests answered slowly, by path, until then.
    pub(super) slow: BTreeMap<String, Instant>,
    /// Until when the last slow request may still be answered: the invariants bear with the
    /// operator until then.
    pub(super) excused_until: Option<Instant>,
    /// How many spans of slowness began (I6 blames a cut-off reconcile on one).
    pub(super) slow_spans: u64,
    pub report: Report,
    /// Claims of deleted accounts (the account's UID and key), handed to a re-creation or
    /// released when their grace is over (a crashed process's pending releases die with it:
    /// its `Claims` is gone).
    pub(super) releases: Vec<(Instant, Arc<Claims>, String, String)>,
    /// What makes another mint due, per client and IST day (see `invariants`, I1).
    pub(super) causes: BTreeMap<(String, chrono::NaiveDate), u32>,
    pub(super) start: Instant,
    /// Leaders deposed while frozen: the install, the incarnation, and the moment (the world's
    /// clock) the standby took the Lease over. They must not call Dhan after it.
    pub deposed: Vec<(usize, u32, DateTime<Utc>)>,
    /// The path of each client ID's claim (its name is a hash).
    pub(super) claim_paths: HashMap<String, String>,
    /// How often the processes beat between reconciles (none: nobody reads it).
    pub(super) idle_beat: Option<Duration>,
    /// The reconciles of deposed leaders, finishing in the background when they resume.
    pub(super) zombies: Vec<Zombie>,
}

impl World {
    pub(super) fn new(config: &Config) -> World {
        let seed = config.seed;
        let mut rng = StdRng::seed_from_u64(seed);
        let mut infra_rng = StdRng::seed_from_u64(seed ^ 0x1f7a_0b5e);
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
                client_since: None,
            });
        }
        let start = Instant::now();
        let cluster_ms = Arc::new(AtomicI64::new(0));
        let processes = (0..installs)
            .map(|i| {
                let install = format!("install-{i}");
                let elected = config.infra_every.is_some() && infra_rng.random_bool(0.5);
                let node = Arc::new(NodeClock {
                    world: Some(clock.clone()),
                    cluster_ms: cluster_ms.clone(),
                    ..NodeClock::default()
                });
                let (ctx, writer) = process_context(&api, &dhan, &node, &install, 0, elected);
                let wakes = ctx.index.wakes();
                Process {
                    elected,
                    stall: None,
                    freeze_on_mint: None,
                    clock: node,
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
            infra_rng,
            deposed: Vec::new(),
            claim_paths: HashMap::new(),
            idle_beat: match (config.infra_every, installs) {
                (None, _) => Some(IDLE_BEAT),
                (Some(_), 1) => None,
                (Some(_), _) => Some(IDLE_BEAT_SINCE_INFRA),
            },
            zombies: Vec::new(),
            api,
            dhan,
            clock,
            tenants,
            pins,
            processes,
            refusing: BTreeMap::new(),
            slow: BTreeMap::new(),
            excused_until: None,
            slow_spans: 0,
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
    pub(super) fn create(&mut self, i: usize, age: i64) {
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

    pub(super) fn infra_gap(&mut self, mean: Duration) -> Duration {
        let mean = mean.as_secs().max(1);
        Duration::from_secs(self.infra_rng.random_range(1..=2 * mean))
    }

    pub(super) fn next_due(&self) -> Option<Instant> {
        self.processes
            .iter()
            .flat_map(|p| {
                let due = p.due.values().min().copied();
                let restart = p.down_until;
                let crash = p
                    .crash_at
                    .into_iter()
                    .chain(p.stall.map(|(at, _)| at))
                    .min();
                let beat =
                    (p.down_until.is_none() && self.idle_beat.is_some()).then_some(p.next_beat);
                match p.down_until {
                    Some(_) => [restart, None, None],
                    None => [due, crash, beat],
                }
            })
            .flatten()
            .chain(self.releases.iter().map(|(at, ..)| *at))
            .min()
    }

    pub fn causes(&self, client: &str, day: chrono::NaiveDate) -> u32 {
        self.causes
            .get(&(client.to_string(), day))
            .copied()
            .unwrap_or(0)
    }

    pub(super) fn cause(&mut self, client: &str) {
        self.cause_on(client, ist_day(self.clock.now()));
    }

    /// Something that makes another mint due for `client` on IST day `day`.
    pub fn cause_on(&mut self, client: &str, day: chrono::NaiveDate) {
        *self.causes.entry((client.to_string(), day)).or_default() += 1;
    }

    /// The clients of install `install`'s accounts.
    pub(super) fn clients_of(&self, install: usize) -> Vec<String> {
        let mut clients: Vec<String> = self
            .tenants
            .iter()
            .filter(|t| t.install == install)
            .map(|t| t.client.clone())
            .collect();
        clients.dedup();
        clients
    }

    /// Whether account `key` (`namespace/name`) exists and has named `client` since `since`.
    pub fn manages(&self, key: &str, client: &str, since: DateTime<Utc>) -> bool {
        self.tenants.iter().any(|t| {
            t.key() == key
                && !t.absent
                && t.client == client
                && t.client_since.is_none_or(|edited| edited <= since)
        })
    }

    /// How far the cluster's clock is off from Dhan's (positive: fast).
    pub fn cluster_offset(&self) -> chrono::Duration {
        chrono::Duration::milliseconds(self.processes[0].clock.cluster_ms.load(Ordering::Relaxed))
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
            refusing: self
                .refusing
                .keys()
                .cloned()
                .chain(self.excused_until.map(|_| "slow".to_string()))
                .collect(),
        }
    }

    /// Whether the operator is excused for `namespace`: its Secret writes are refused, or the
    /// API server is (or just was) slow.
    pub fn refused_in(&self, namespace: &str) -> bool {
        self.refusing.contains_key(namespace) || self.excused_until.is_some()
    }

    /// A crash: everything the process kept in memory is gone; a new one starts later.
    pub(super) fn crash(&mut self, install: usize, now: Instant) {
        let downtime = Duration::from_secs(self.rng.random_range(5..180));
        self.replace_process(install, now + downtime);
        self.note(format!(
            "install-{install} crashed; back in {}s",
            downtime.as_secs()
        ));
    }

    /// The leader froze at `at`: a standby takes the Lease over once it lapses and starts with
    /// nothing in memory; the frozen one's reconciles in flight carry on when it resumes.
    fn depose(&mut self, install: usize, at: Instant, frozen_for: Duration) {
        let takeover =
            at + LEASE_DURATION + Duration::from_secs(self.infra_rng.random_range(1..=5));
        let old = self.processes[install].incarnation;
        let takeover_wall = self.clock.now()
            + chrono::Duration::from_std(takeover - Instant::now()).unwrap_or_default();
        self.deposed.push((install, old, takeover_wall));
        self.replace_process(install, takeover);
        self.note(format!(
            "install-{install}'s leader froze for {}s; a standby takes the Lease over in {}s",
            frozen_for.as_secs(),
            (takeover - at).as_secs()
        ));
    }

    /// The process of `install` is gone; a new one (memory empty) starts at `start`.
    fn replace_process(&mut self, install: usize, start: Instant) {
        if let Some(dead) = self.processes[install].ctx.claims.clone() {
            self.releases.retain(|(_, c, ..)| !Arc::ptr_eq(c, &dead));
        }
        let p = &mut self.processes[install];
        p.crash_at = None;
        p.stall = None;
        p.freeze_on_mint = None;
        p.down_until = Some(start);
        p.incarnation += 1;
        p.due.clear();
        p.seen.clear();
        p.cached.clear();
        p.watched = None;
        p.claims_seen.clear();
        let (ctx, writer) = process_context(
            &self.api,
            &self.dhan,
            &p.clock,
            &p.install,
            p.incarnation,
            p.elected,
        );
        p.wakes = ctx.index.wakes();
        p.ctx = ctx;
        p.writer = writer;
        for client in self.clients_of(install) {
            self.cause(&client);
        }
    }

    /// The leader renews its Lease (as `kube-lease-manager` does every 5 s), by its own
    /// clock; a frozen one cannot.
    pub(super) fn renew_lease(&self, install: usize) {
        if let Some(lease) = self.lease_of(install) {
            lease.renew(&self.api);
        }
    }

    /// The Lease each leader renews, by install.
    pub(super) fn leases(&self) -> Vec<(usize, LeaseHolder)> {
        (0..self.processes.len())
            .filter_map(|i| self.lease_of(i).map(|lease| (i, lease)))
            .collect()
    }

    fn lease_of(&self, install: usize) -> Option<LeaseHolder> {
        let p = &self.processes[install];
        let frozen = p.stall.is_some_and(|(at, _)| at <= Instant::now());
        (p.elected && p.down_until.is_none() && !frozen).then(|| LeaseHolder {
            install: p.install.clone(),
            identity: identity(&p.install, p.incarnation, true),
            clock: p.clock.clone(),
        })
    }

    pub(super) fn restart_crashed(&mut self, now: Instant) {
        for i in 0..self.processes.len() {
            if self.processes[i].crash_at.is_some_and(|t| t <= now) {
                self.crash(i, now);
            }
            if let Some((at, frozen_for)) = self.processes[i].stall
                && at <= now
            {
                self.depose(i, at, frozen_for);
            }
            let p = &mut self.processes[i];
            if p.down_until.is_some_and(|t| t <= now) {
                p.down_until = None;
                p.next_beat = now;
                self.renew_lease(i);
                self.note(format!("install-{i} started"));
            }
        }
        let (done, running) = std::mem::take(&mut self.zombies)
            .into_iter()
            .partition::<Vec<Zombie>, _>(|(_, _, task)| task.is_finished());
        self.zombies = running;
        for (install, key, task) in done {
            let outcome = task
                .now_or_never()
                .map(|joined| joined.expect("a reconcile does not panic"));
            let how = match outcome {
                Some(Some(Ok(_))) => "ended".to_string(),
                Some(Some(Err(error))) => format!("failed: {error}"),
                Some(None) | None => "was cut off".to_string(),
            };
            self.note(format!(
                "install-{install}'s deposed leader resumed; its reconcile of {key} {how}"
            ));
        }
    }

    pub(super) fn lift_refusals(&mut self, now: Instant) {
        for key in take_due(&mut self.refusing, now) {
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
        let Some(every) = self.idle_beat else {
            return;
        };
        let retry = if every == IDLE_BEAT {
            IDLE_BEAT
        } else {
            IDLE_BEAT_RETRY
        };
        for p in self.processes.iter_mut().filter(|p| p.down_until.is_none()) {
            if p.next_beat <= now {
                let beat = match &p.ctx.claims {
                    Some(claims) => claims.beat().await,
                    None => Ok(()),
                };
                p.next_beat = match beat {
                    Ok(()) => now + every,
                    Err(error) => {
                        self.report
                            .trace
                            .push(format!("{} heartbeat failed: {error}", p.install));
                        now + retry
                    }
                };
            }
        }
    }

    pub(super) async fn prune(&mut self) {
        for p in self.processes.iter().filter(|p| p.down_until.is_none()) {
            let live = p.cached.values().filter_map(|a| a.uid()).collect();
            prune_once(&p.ctx, &live);
            if let Some(claims) = &p.ctx.claims {
                prune_claims(claims, &live).await;
            }
        }
    }

    /// The claims of deleted accounts whose grace is over, handed to their re-creations or
    /// released (`controller::watch`).
    pub(super) async fn release_due(&mut self, now: Instant) {
        let (due, later) = std::mem::take(&mut self.releases)
            .into_iter()
            .partition::<Vec<_>, _>(|(at, ..)| *at <= now);
        self.releases = later;
        for (_, claims, uid, key) in due {
            let process = self.processes.iter().find(|p| {
                p.ctx
                    .claims
                    .as_ref()
                    .is_some_and(|c| Arc::ptr_eq(c, &claims))
            });
            let successor = process
                .and_then(|p| p.cached.get(&key))
                .and_then(|a| a.uid())
                .filter(|s| *s != uid);
            claims.departed(&uid, successor.as_deref()).await;
        }
    }
}

/// The probe intervals accounts choose from (seconds; none: `0`, no probes); the default
/// (15 min) twice as often as each other.
pub(super) const VALIDATE_EVERY: [Option<u64>; 5] = [
    Some(15 * 60),
    Some(15 * 60),
    Some(3600),
    Some(6 * 3600),
    None,
];

pub(super) fn validate_every_text(every: Option<Duration>) -> String {
    every.map_or("0".to_string(), |d| format!("{}m", d.as_secs() / 60))
}

pub(super) fn bump_generation(object: &mut Value) {
    let generation = object["metadata"]["generation"].as_i64().unwrap_or(1) + 1;
    object["metadata"]["generation"] = generation.into();
}

/// A reconcile of a deposed leader: the install, the account, the task.
pub(super) type Zombie = (usize, String, tokio::task::JoinHandle<Option<Outcome>>);

/// What one reconcile returned.
pub(super) type Outcome = Result<Option<Duration>, crate::controller::reconcile::Error>;

/// A leader, as its Lease names it.
pub(super) struct LeaseHolder {
    install: String,
    identity: String,
    clock: Arc<NodeClock>,
}

impl LeaseHolder {
    /// Renews the Lease, by the leader's own clock.
    pub(super) fn renew(&self, api: &FakeApi) {
        let now = self
            .clock
            .now()
            .format("%Y-%m-%dT%H:%M:%S%.6fZ")
            .to_string();
        api.put(
            &lease_path(&self.install),
            json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                   "metadata": {"name": LEASE, "namespace": lease_namespace(&self.install)},
                   "spec": {"holderIdentity": self.identity,
                            "leaseDurationSeconds": LEASE_DURATION.as_secs(),
                            "acquireTime": now, "renewTime": now}}),
        );
    }
}

/// The leader Lease's name, and how long it holds without renewal (the binary's default).
const LEASE: &str = "dhan-operator-leader";
pub(super) const LEASE_DURATION: Duration = Duration::from_secs(45);

fn lease_namespace(install: &str) -> String {
    format!("{install}-system")
}

fn lease_path(install: &str) -> String {
    format!(
        "/apis/coordination.k8s.io/v1/namespaces/{}/leases/{LEASE}",
        lease_namespace(install)
    )
}

/// A process's identity: its Pod's name. Without leader election a restart is the same Pod
/// again; with it, the new leader is another replica.
fn identity(install: &str, incarnation: u32, elected: bool) -> String {
    if elected {
        format!("{install}-pod-{incarnation}")
    } else {
        format!("{install}-pod")
    }
}

fn process_context(
    api: &FakeApi,
    dhan: &Arc<SimDhan>,
    node: &Arc<NodeClock>,
    install: &str,
    incarnation: u32,
    elected: bool,
) -> (Arc<Context>, Writer<DhanAccount>) {
    let clock: &Arc<dyn Clock> = &(node.clone() as Arc<dyn Clock>);
    let (store, writer) = reflector::store();
    let mut ctx = context(api, dhan.clone(), clock.clone(), false, store);
    let identity = identity(install, incarnation, elected);
    if elected {
        let settings = ElectionSettings {
            namespace: lease_namespace(install),
            lease: LEASE.into(),
            identity: identity.clone(),
            duration: LEASE_DURATION,
        };
        ctx.leadership = Some(Arc::new(Leadership::new(
            api.client(),
            settings,
            clock.clone(),
        )));
    }
    let settings = ClaimSettings {
        install: install.into(),
        identity,
        duration: CLAIM_DURATION,
        leader_elected: elected,
    };
    ctx.claims = Some(Arc::new(Claims::new(api.client(), settings, clock.clone())));
    (Arc::new(ctx), writer)
}

/// Removes the keys whose time has come (`<= now`) from `map` and returns them, in order.
pub(super) fn take_due(map: &mut BTreeMap<String, Instant>, now: Instant) -> Vec<String> {
    let due: Vec<String> = map
        .iter()
        .filter(|(_, at)| **at <= now)
        .map(|(key, _)| key.clone())
        .collect();
    for key in &due {
        map.remove(key);
    }
    due
}

/// The IST day of `t` (the day Dhan's and the cap's counts belong to).
pub fn ist_day(t: DateTime<Utc>) -> chrono::NaiveDate {
    (t + chrono::Duration::minutes(330)).date_naive()
}
