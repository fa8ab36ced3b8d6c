//! The dead-token window on the real node: every mint kills the client's previous token at
//! once, and a running Pod keeps reading the dead one until its kubelet rewrites its volume (or,
//! for an environment variable, until a new Pod runs). Measured as Dhan's mint (the mock's call
//! log) → the moment a consumer Pod holds the new token, with the test bed's kubelet at its
//! default sync settings (nothing shortened: `syncFrequency` 1 min, the watch-based Secret
//! cache).
//!
//! Consumers: three accounts whose output Secrets are mounted by 1, 10 and 50 Pods, each Pod
//! reading its file every 100 ms and recording a hash of what it read (on a host directory, the
//! file's modification time saying when); a fourth account read from an environment variable by
//! a Deployment restarted through `rolloutRestartTargets`. All four are refreshed at once.

use super::bed;
use crate::support::{Bed, PIN, TOTP_SECRET, node, wait_for};
use dhan_operator::crd::Phase;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

/// Accounts whose output Secret is mounted by that many Pods.
const MOUNTED: [(&str, &str, usize); 3] = [
    ("one", "1600000001", 1),
    ("ten", "1600000010", 10),
    ("fifty", "1600000050", 50),
];
/// The account a Deployment reads from an environment variable.
const FROM_ENV: (&str, &str) = ("env", "1600000099");
/// Starting 62 Pods on a 2-core node that runs the control plane too.
const PODS_START: Duration = Duration::from_secs(360);
/// Longer than the kubelet's periodic sync (1 min plus up to half of it as jitter).
const SYNCED: Duration = Duration::from_secs(240);

/// A consumer: on every change of the mounted token, the hash of what it read, into
/// `/report/<pod>` (written, then renamed: the file's mtime is the moment it saw the change).
const MOUNT_CONSUMER: &str = r#"old=""
while :; do
  t=""
  read -r t < /token/DHAN_ACCESS_TOKEN
  if [ "$t" != "$old" ]; then
    echo -n "$t" | sha256sum > "/report/$POD_NAME.tmp" && mv "/report/$POD_NAME.tmp" "/report/$POD_NAME"
    old="$t"
  fi
  usleep 100000
done"#;

/// A consumer of the environment variable: what it was started with, then nothing.
const ENV_CONSUMER: &str = r#"echo -n "$DHAN_ACCESS_TOKEN" | sha256sum > "/report/$POD_NAME.tmp" && mv "/report/$POD_NAME.tmp" "/report/$POD_NAME"
exec sleep 2147483647"#;

/// The worst Pod's window for each group, in milliseconds.
#[derive(Debug)]
struct Windows {
    by_group: BTreeMap<&'static str, i64>,
    /// What the operator recorded in `status.podSync` (mint → last Pod told), by account.
    observed: BTreeMap<&'static str, Option<u64>>,
}

fn sha256(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The hash each Pod last reported, and when (ms since the epoch), by Pod name.
fn reports(dir: &Path) -> BTreeMap<String, (String, i64)> {
    let mut found = BTreeMap::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if name.ends_with(".tmp") {
            continue;
        }
        let (Ok(text), Ok(meta)) = (std::fs::read_to_string(entry.path()), entry.metadata()) else {
            continue;
        };
        let at = meta.modified().unwrap().duration_since(UNIX_EPOCH).unwrap();
        let hash = text
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_string();
        found.insert(name, (hash, at.as_millis() as i64));
    }
    found
}

fn consumer_env() -> Value {
    json!([{ "name": "POD_NAME", "valueFrom": { "fieldRef": { "fieldPath": "metadata.name" } } }])
}

fn report_volume(dir: &Path) -> Value {
    json!({ "name": "report", "hostPath": { "path": dir, "type": "Directory" } })
}

/// Pod `name` mounting `account`'s output Secret, opted in to its syncs.
fn mounting_pod(name: &str, account: &str, dir: &Path) -> Pod {
    serde_json::from_value(json!({
        "metadata": {
            "name": name,
            "labels": { "dhan-operator.dev/sync-on-refresh": "true", "window": "consumer" },
            "annotations": { "dhan-operator.dev/sync-on-refresh-of": account },
        },
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "containers": [{
                "name": "algo", "image": node().busybox_image(),
                "command": ["/bin/busybox", "sh", "-c", MOUNT_CONSUMER],
                "env": consumer_env(),
                "volumeMounts": [
                    { "name": "token", "mountPath": "/token", "readOnly": true },
                    { "name": "report", "mountPath": "/report" },
                ],
            }],
            "volumes": [
                { "name": "token", "secret": { "secretName": format!("{account}-token") } },
                report_volume(dir),
            ],
        },
    }))
    .unwrap()
}

/// A Deployment reading `account`'s token from an environment variable, opted in to restarts.
fn env_deployment(account: &str, dir: &Path) -> Deployment {
    serde_json::from_value(json!({
        "metadata": {
            "name": "env-algo",
            "annotations": { "dhan-operator.dev/restart-on-refresh-of": account },
        },
        "spec": {
            "replicas": 1,
            "selector": { "matchLabels": { "window": "env" } },
            "template": {
                "metadata": { "labels": { "window": "env" } },
                "spec": {
                    "terminationGracePeriodSeconds": 1,
                    "containers": [{
                        "name": "algo", "image": node().busybox_image(),
                        "command": ["/bin/busybox", "sh", "-c", ENV_CONSUMER],
                        "env": [
                            { "name": "POD_NAME",
                              "valueFrom": { "fieldRef": { "fieldPath": "metadata.name" } } },
                            { "name": "DHAN_ACCESS_TOKEN", "valueFrom": { "secretKeyRef": {
                                "name": format!("{account}-token"),
                                "key": "DHAN_ACCESS_TOKEN" } } },
                        ],
                        "volumeMounts": [{ "name": "report", "mountPath": "/report" }],
                    }],
                    "volumes": [report_volume(dir)],
                },
            },
        },
    }))
    .unwrap()
}

/// When Dhan minted the client's current token (ms since the epoch), from the mock's call log.
async fn minted_at(bed: &Bed, client_id: &str) -> i64 {
    bed.mock
        .calls_to("generateAccessToken", client_id)
        .await
        .iter()
        .filter(|c| c["outcome"] == "success")
        .filter_map(|c| c["at"].as_i64())
        .max()
        .expect("a mint")
}

async fn measure(sync_pods: bool) -> Windows {
    let args: &[&str] = if sync_pods {
        &["--sync-pods", "--rollout-restarts"]
    } else {
        &["--rollout-restarts"]
    };
    let bed = bed(Some(args)).await;
    let dir = tempfile::Builder::new()
        .prefix("dhan-window-")
        .tempdir()
        .unwrap();
    let dir_path: PathBuf = dir.path().to_path_buf();
    // The consumers run as the image's user, not root.
    std::fs::set_permissions(
        &dir_path,
        std::os::unix::fs::PermissionsExt::from_mode(0o1777),
    )
    .unwrap();
    let accounts = MOUNTED
        .iter()
        .map(|(name, client, _)| (*name, *client))
        .chain([FROM_ENV]);
    for (name, client) in accounts.clone() {
        bed.mock
            .register(json!({ "clientId": client, "pin": PIN, "totpSecret": TOTP_SECRET }))
            .await;
        let credentials = format!("{name}-dhan");
        bed.put_secret(&credentials, &[("pin", PIN), ("totpSecret", TOTP_SECRET)])
            .await;
        let mut spec = json!({ "clientId": client, "credentialsSecret": credentials });
        if name == FROM_ENV.0 {
            spec["rolloutRestartTargets"] = json!([{ "kind": "Deployment", "name": "env-algo" }]);
        }
        bed.create_account(name, spec).await;
    }
    for (name, _) in accounts.clone() {
        bed.wait_phase_for(name, Phase::Ready, Duration::from_secs(120))
            .await;
    }

    let pods: Api<Pod> = Api::namespaced(bed.client.clone(), &bed.ns);
    let mut group_of: BTreeMap<String, &'static str> = BTreeMap::new();
    for (account, _, count) in MOUNTED {
        for i in 0..count {
            let name = format!("{account}-{i:02}");
            pods.create(
                &PostParams::default(),
                &mounting_pod(&name, account, &dir_path),
            )
            .await
            .unwrap();
            group_of.insert(name, account);
        }
    }
    let deployments: Api<Deployment> = Api::namespaced(bed.client.clone(), &bed.ns);
    deployments
        .create(
            &PostParams::default(),
            &env_deployment(FROM_ENV.0, &dir_path),
        )
        .await
        .unwrap();

    // Every consumer runs and holds the current token.
    let mut before = BTreeMap::new();
    for (name, _) in accounts.clone() {
        before.insert(
            name,
            sha256(&bed.token_in_secret(&format!("{name}-token")).await),
        );
    }
    let expected = group_of.len() + 1;
    wait_for(PODS_START, || async {
        let seen = reports(&dir_path);
        (seen.len() >= expected
            && group_of
                .iter()
                .all(|(pod, group)| seen.get(pod).is_some_and(|(h, _)| *h == before[group])))
        .then_some(())
    })
    .await;

    let hashes_before: BTreeMap<&str, String> = {
        let mut map = BTreeMap::new();
        for (name, _) in accounts.clone() {
            map.insert(name, bed.status(name).await.token_hash.unwrap_or_default());
        }
        map
    };
    for (name, _) in accounts.clone() {
        bed.request_refresh(name, "window-1").await;
    }
    let mut after = BTreeMap::new();
    for (name, _) in accounts.clone() {
        let old = hashes_before[name].clone();
        bed.wait_status(name, Duration::from_secs(120), move |s| {
            s.phase == Some(Phase::Ready) && s.token_hash.as_deref() != Some(old.as_str())
        })
        .await;
        after.insert(
            name,
            sha256(&bed.token_in_secret(&format!("{name}-token")).await),
        );
    }
    // Every Pod sees the new token (the 50-Pod group included), and the Deployment's new Pod
    // starts with it.
    let seen = wait_for(SYNCED, || async {
        let seen = reports(&dir_path);
        let mounted = group_of
            .iter()
            .all(|(pod, group)| seen.get(pod).is_some_and(|(h, _)| *h == after[group]));
        let env = seen.values().any(|(h, _)| *h == after[FROM_ENV.0]);
        (mounted && env).then_some(seen)
    })
    .await;

    let mut by_group = BTreeMap::new();
    let mut observed = BTreeMap::new();
    for (name, client) in accounts.clone() {
        let minted = minted_at(&bed, client).await;
        let worst = seen
            .iter()
            .filter(|(pod, (hash, _))| match group_of.get(*pod) {
                Some(group) => group == &name,
                None => name == FROM_ENV.0 && *hash == after[name],
            })
            .map(|(_, (_, at))| at - minted)
            .max()
            .expect("a consumer of every account");
        by_group.insert(name, worst);
        let status = bed.status(name).await;
        observed.insert(name, status.pod_sync.map(|s| s.millis_after_mint));
        if sync_pods && name != FROM_ENV.0 {
            let count = MOUNTED.iter().find(|m| m.0 == name).unwrap().2;
            let sync = bed.status(name).await.pod_sync.expect("status.podSync");
            assert_eq!(sync.pods as usize, count, "{name}: every consumer Pod told");
            assert_eq!(sync.problems, 0, "{name}");
        }
    }

    // The node is shared: its other tests get their CPU back.
    let gone = DeleteParams {
        grace_period_seconds: Some(0),
        ..DeleteParams::default()
    };
    deployments.delete("env-algo", &gone).await.unwrap();
    pods.delete_collection(&gone, &ListParams::default().labels("window"))
        .await
        .unwrap();
    Windows { by_group, observed }
}

fn print(windows: &Windows, how: &str) {
    eprintln!(
        "dead-token window, {how} (mint at the mock -> the worst consumer Pod reads the new token):"
    );
    for (account, pods) in [("one", "1 Pod"), ("ten", "10 Pods"), ("fifty", "50 Pods")] {
        eprintln!(
            "  mounted Secret, {pods:>7}: {:>6.1} s (operator saw mint -> last Pod told: {})",
            windows.by_group[account] as f64 / 1000.0,
            windows.observed[account]
                .map_or("-".into(), |ms| format!("{:.2} s", ms as f64 / 1000.0))
        );
    }
    eprintln!(
        "  environment variable, rollout restart of a 1-replica Deployment: {:.1} s",
        windows.by_group[FROM_ENV.0] as f64 / 1000.0
    );
}

/// With `--sync-pods` and Pods that opted in: every consumer Pod, 50 of one account included,
/// reads the new token; the operator told each of them. The window is printed (no timing is
/// asserted: the figures go to docs/consuming-the-token.md).
#[tokio::test]
async fn a_new_token_reaches_every_opted_in_pod_that_mounts_it() {
    let windows = measure(true).await;
    print(&windows, "with --sync-pods");
}

/// The same consumers without `--sync-pods`: the kubelet's periodic sync decides (a minute or
/// more). `cargo test --test real_node -- --ignored` (about 4 minutes).
#[tokio::test]
#[ignore = "a measurement of the default window (kubelet's periodic sync): minutes, for the docs"]
async fn without_pod_syncs_the_kubelets_periodic_sync_decides_the_window() {
    let windows = measure(false).await;
    assert!(windows.observed.values().all(Option::is_none));
    print(&windows, "without --sync-pods (kubelet defaults)");
}
