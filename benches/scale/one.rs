//! One size: N accounts on a fresh control plane, the operator started against `dhan-mock`,
//! then three phases — start until all Ready, an idle window, a forced refresh of every account.

use super::gauges::{Writes, cpu_seconds, rss_mib};
use super::support::{self, MockDhan};
use dhan_operator::crd::{DhanAccount, Phase};
use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use serde::Serialize;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const PIN: &str = "482913";
const TOTP_SECRET: &str = "JBSWY3DPEHPK3PXPJBSWY3DP";
pub const PIN_FOR_SDK: &str = PIN;
pub const TOTP_FOR_SDK: &str = TOTP_SECRET;
/// The accounts' `validateEvery` in the bench: the idle window lasts exactly one such period,
/// so each account should be probed once in it.
pub const PROBE_EVERY: Duration = Duration::from_secs(120);
/// API requests the bench keeps in flight while it creates or annotates accounts.
const PARALLEL: usize = 16;

/// What one size measured.
#[derive(Serialize, serde::Deserialize, Debug, Default, Clone)]
pub struct Row {
    pub accounts: usize,
    pub ready_seconds: f64,
    pub start_cpu_ms_per_refresh: f64,
    pub start_writes_per_refresh: f64,
    pub start_events_per_refresh: f64,
    pub start_writes: String,
    pub peak_rss_mib: f64,
    pub steady_rss_mib: f64,
    pub idle_seconds: f64,
    pub idle_writes: f64,
    pub idle_events: f64,
    pub idle_probes: usize,
    pub idle_other_calls: usize,
    pub idle_busiest_second: usize,
    pub idle_cpu_ms_per_probe: f64,
    pub burst_seconds: f64,
    pub burst_cpu_ms_per_refresh: f64,
    pub burst_writes_per_refresh: f64,
    pub burst_events_per_refresh: f64,
    pub burst_writes: String,
}

pub async fn run(count: usize) -> Row {
    let cp = support::control_plane();
    let client = cp.client().await;
    support::install_crd(&client).await;
    let ns = support::namespace(&client, "bench").await;
    let mock = start_mock(count).await;
    let created = Instant::now();
    populate(&client, &ns, count).await;
    eprintln!(
        "{count}: created in {:.1} s",
        created.elapsed().as_secs_f64()
    );

    let (store, watching) = watch(&client, &ns);
    let before = Writes::read(&client).await;
    // As admin: the chart's identity would need a Helm install, whose writes and time would land
    // between the counts and clocks around the operator's start.
    let admin = cp.kubeconfig_path();
    let started = Instant::now();
    let operator = support::start_operator(
        &[
            "--namespace",
            &ns,
            "--metrics-addr",
            "127.0.0.1:0",
            "--dhan-auth-url",
            &mock.url,
            "--dhan-api-url",
            &mock.url,
            "--dhan-calls-per-second",
            "1000",
            "--min-mint-interval",
            "5s",
        ],
        &[
            ("RUST_LOG", "warn"),
            ("KUBECONFIG", admin.to_str().unwrap()),
        ],
    );
    let pid = operator.pid();
    let mut row = Row {
        accounts: count,
        ..Row::default()
    };
    wait_until(&store, count, started, |s| s.phase == Some(Phase::Ready)).await;
    row.ready_seconds = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds(pid);
    let writes = Writes::read(&client).await.since(&before);
    row.start_cpu_ms_per_refresh = cpu * 1000.0 / count as f64;
    row.start_writes_per_refresh = writes.objects() / count as f64;
    row.start_events_per_refresh = writes.events() / count as f64;
    row.start_writes = writes.describe();
    eprintln!("{count}: all Ready in {:.1} s", row.ready_seconds);

    idle(&mut row, &client, &mock, pid).await;
    burst(&mut row, &client, &ns, &store, pid).await;
    row.peak_rss_mib = rss_mib(pid).1;
    watching.abort();
    drop(operator);
    row
}

/// A mock that knows every client from the start (registering 10,000 one by one would measure
/// the mock).
async fn start_mock(count: usize) -> MockDhan {
    let accounts: Vec<Value> = (0..count)
        .map(|i| json!({"clientId": client_id(i), "pin": PIN, "totpSecret": TOTP_SECRET}))
        .collect();
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), serde_json::to_vec(&accounts).unwrap()).unwrap();
    let path = file.path().to_str().unwrap().to_string();
    let mock = MockDhan::start(&["--accounts", &path, "--mint-throttle-seconds", "3"]).await;
    drop(file);
    mock
}

fn client_id(i: usize) -> String {
    (1_700_000_000 + i).to_string()
}

/// One credentials Secret and one DhanAccount per client, as a team would have them.
async fn populate(client: &Client, ns: &str, count: usize) {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let accounts: Api<DhanAccount> = Api::namespaced(client.clone(), ns);
    stream::iter(0..count)
        .map(|i| {
            let (secrets, accounts) = (secrets.clone(), accounts.clone());
            async move {
                let secret: Secret = serde_json::from_value(json!({
                    "metadata": {"name": format!("creds-{i}")},
                    "stringData": {"pin": PIN, "totpSecret": TOTP_SECRET},
                }))
                .unwrap();
                secrets.create(&PostParams::default(), &secret).await?;
                let account: DhanAccount = serde_json::from_value(json!({
                    "apiVersion": "dhan-operator.dev/v1alpha1", "kind": "DhanAccount",
                    "metadata": {"name": format!("acct-{i}")},
                    "spec": {
                        "clientId": client_id(i), "credentialsSecret": format!("creds-{i}"),
                        "refresh": {"validateEvery": format!("{}s", PROBE_EVERY.as_secs())},
                    },
                }))
                .unwrap();
                accounts.create(&PostParams::default(), &account).await
            }
        })
        .buffer_unordered(PARALLEL)
        .try_collect::<Vec<_>>()
        .await
        .expect("create accounts");
}

/// A cache of the namespace's accounts, kept by a watch (a LIST of 10,000 accounts every
/// second would load the API server more than the operator does).
fn watch(client: &Client, ns: &str) -> (Store<DhanAccount>, tokio::task::JoinHandle<()>) {
    let (store, writer) = reflector::store();
    let api: Api<DhanAccount> = Api::namespaced(client.clone(), ns);
    let stream = reflector::reflector(writer, watcher(api, watcher::Config::default()))
        .default_backoff()
        .for_each(|_| futures::future::ready(()));
    (store, tokio::spawn(stream))
}

async fn wait_until(
    store: &Store<DhanAccount>,
    count: usize,
    since: Instant,
    done: impl Fn(&dhan_operator::crd::DhanAccountStatus) -> bool,
) {
    loop {
        let state = store.state();
        let finished = state
            .iter()
            .filter(|a| a.status.as_ref().is_some_and(&done))
            .count();
        if state.len() == count && finished == count {
            return;
        }
        assert!(
            since.elapsed() < Duration::from_secs(1800),
            "not converging: {finished} of {count}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// One probe period with nothing due: what the operator writes and calls.
async fn idle(row: &mut Row, client: &Client, mock: &MockDhan, pid: u32) {
    // Reconciles caused by the operator's own last writes settle first.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let (writes, cpu) = (Writes::read(client).await, cpu_seconds(pid));
    let from = now_ms();
    let started = Instant::now();
    tokio::time::sleep(PROBE_EVERY).await;
    let to = now_ms();
    row.idle_seconds = started.elapsed().as_secs_f64();
    let idle = Writes::read(client).await.since(&writes);
    row.idle_writes = idle.objects();
    row.idle_events = idle.events();
    row.steady_rss_mib = rss_mib(pid).0;
    let calls: Vec<Value> = mock
        .calls()
        .await
        .into_iter()
        .filter(|c| (from..to).contains(&c["at"].as_i64().unwrap_or(0)))
        .collect();
    let probes: Vec<i64> = calls
        .iter()
        .filter(|c| c["endpoint"] == "profile")
        .map(|c| c["at"].as_i64().unwrap() / 1000)
        .collect();
    row.idle_probes = probes.len();
    row.idle_other_calls = calls.len() - probes.len();
    let mut per_second = std::collections::BTreeMap::<i64, usize>::new();
    for second in probes {
        *per_second.entry(second).or_default() += 1;
    }
    row.idle_busiest_second = per_second.values().copied().max().unwrap_or(0);
    row.idle_cpu_ms_per_probe = (cpu_seconds(pid) - cpu) * 1000.0 / (row.idle_probes.max(1) as f64);
    eprintln!("{}: idle window done", row.accounts);
}

/// Every account asked to refresh at once, as the daily schedule does at 08:00. The operator runs
/// with the test support's holiday calendar, so the requests are not held for the market close
/// whatever the time of day.
async fn burst(row: &mut Row, client: &Client, ns: &str, store: &Store<DhanAccount>, pid: u32) {
    let count = row.accounts;
    let (writes, cpu) = (Writes::read(client).await, cpu_seconds(pid));
    let started = Instant::now();
    let accounts: Api<DhanAccount> = Api::namespaced(client.clone(), ns);
    let names: Vec<String> = store.state().iter().map(|a| a.name_any()).collect();
    let request = "burst-1";
    stream::iter(names)
        .map(|name| {
            let accounts = accounts.clone();
            let patch = json!({"metadata": {"annotations": {
                dhan_operator::crd::REFRESH_REQUESTED_ANNOTATION: request}}});
            async move {
                accounts
                    .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
            }
        })
        .buffer_unordered(PARALLEL)
        .try_collect::<Vec<_>>()
        .await
        .expect("annotate accounts");
    wait_until(store, count, started, |s| {
        s.phase == Some(Phase::Ready) && s.refresh_request_handled.as_deref() == Some(request)
    })
    .await;
    row.burst_seconds = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds(pid) - cpu;
    // The bench's own annotations are writes to the accounts themselves.
    let writes = Writes::read(client)
        .await
        .since(&writes)
        .minus("dhanaccounts", count as f64);
    row.burst_cpu_ms_per_refresh = cpu * 1000.0 / count as f64;
    row.burst_writes_per_refresh = writes.objects() / count as f64;
    row.burst_events_per_refresh = writes.events() / count as f64;
    row.burst_writes = writes.describe();
    eprintln!("{count}: burst done in {:.1} s", row.burst_seconds);
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
