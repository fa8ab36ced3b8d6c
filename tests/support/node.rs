//! A real node for the test binary's control plane, via `hack/node.sh`: containerd, a kubelet,
//! kube-controller-manager and kube-scheduler, with the operator image built around the operator
//! binary of this test run. One per machine, so one test binary (`tests/real_node.rs`) uses it;
//! a watcher takes it down, host state restored, once the test process exits.

use super::{OPERATOR_BIN, control_plane};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::{Client, ResourceExt};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};

pub struct Node {
    dir: PathBuf,
    env: BTreeMap<String, String>,
}

/// The node of this test binary, started on first use. Panics with `hack/node.sh`'s reason when
/// the machine cannot run one.
pub fn node() -> &'static Node {
    static NODE: OnceLock<Node> = OnceLock::new();
    NODE.get_or_init(Node::start)
}

impl Node {
    fn start() -> Node {
        let cp = control_plane();
        let dir = tempfile::Builder::new()
            .prefix("dhan-node-")
            .tempdir()
            .expect("temp dir")
            .keep();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("hack/node.sh");
        let status = Command::new(&script)
            .arg("up")
            .arg(&dir)
            .arg("--control-plane")
            .arg(cp.dir())
            .args(["--operator-bin", OPERATOR_BIN])
            .args(["--watch-pid", &std::process::id().to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .status()
            .unwrap_or_else(|e| panic!("running {}: {e}", script.display()));
        assert!(
            status.success(),
            "{} up {} failed (see stderr above)",
            script.display(),
            dir.display()
        );
        let env = std::fs::read_to_string(dir.join("env"))
            .expect("hack/node.sh writes DIR/env")
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        eprintln!("node up; logs in {}", dir.display());
        Node { dir, env }
    }

    fn var(&self, name: &str) -> &str {
        self.env
            .get(name)
            .unwrap_or_else(|| panic!("{name} missing from the node's env"))
    }

    /// The host's address on the Pods' bridge: servers Pods must reach listen here.
    pub fn host_ip(&self) -> &str {
        self.var("NODE_IP")
    }

    /// The operator image (this run's binary), imported into the node's containerd.
    pub fn operator_image(&self) -> &str {
        self.var("OPERATOR_IMAGE")
    }

    /// The headless-shell-compatible Chromium image.
    pub fn chromium_image(&self) -> &str {
        self.var("CHROMIUM_IMAGE")
    }

    /// The sandbox image: a static busybox (`/bin/busybox`, its shell finds every applet
    /// without a PATH), for Pods that only need a shell.
    pub fn busybox_image(&self) -> &str {
        self.var("PAUSE_IMAGE")
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// What containerd logged about `container_id` (a CRI id, without `containerd://`).
    pub fn containerd_log_about(&self, container_id: &str) -> Vec<String> {
        std::fs::read_to_string(self.dir.join("containerd.log"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(container_id))
            .map(str::to_owned)
            .collect()
    }
}

/// The newest state seen of every Pod and Job in a namespace, deleted ones included: login Jobs
/// and their Pods vanish once the operator or their TTL deletes them, so tests look at what was
/// recorded. Watches, so no state in between is missed.
pub struct Recorder {
    pods: Arc<Mutex<BTreeMap<String, Pod>>>,
    jobs: Arc<Mutex<BTreeMap<String, Job>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Recorder {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

fn record<K>(api: Api<K>, into: Arc<Mutex<BTreeMap<String, K>>>) -> tokio::task::JoinHandle<()>
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
{
    use futures::StreamExt;
    use kube::runtime::{WatchStreamExt, watcher};
    tokio::spawn(async move {
        let mut events = watcher(api, watcher::Config::default())
            .default_backoff()
            .boxed();
        while let Some(event) = events.next().await {
            let object = match event {
                Ok(
                    watcher::Event::Apply(o)
                    | watcher::Event::InitApply(o)
                    | watcher::Event::Delete(o),
                ) => o,
                _ => continue,
            };
            into.lock().unwrap().insert(object.name_any(), object);
        }
    })
}

impl Recorder {
    pub fn start(client: Client, namespace: &str) -> Recorder {
        let pods = Arc::new(Mutex::new(BTreeMap::new()));
        let jobs = Arc::new(Mutex::new(BTreeMap::new()));
        let tasks = vec![
            record(
                Api::<Pod>::namespaced(client.clone(), namespace),
                pods.clone(),
            ),
            record(Api::<Job>::namespaced(client, namespace), jobs.clone()),
        ];
        Recorder { pods, jobs, tasks }
    }

    pub fn pods(&self) -> Vec<Pod> {
        self.pods.lock().unwrap().values().cloned().collect()
    }

    pub fn jobs(&self) -> Vec<Job> {
        self.jobs.lock().unwrap().values().cloned().collect()
    }

    /// The Pods recorded for Job `job`.
    pub fn pods_of(&self, job: &str) -> Vec<Pod> {
        self.pods()
            .into_iter()
            .filter(|p| p.labels().get("job-name").map(String::as_str) == Some(job))
            .collect()
    }
}
