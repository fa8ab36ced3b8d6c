//! `Kubelet`: plays the kubelet (and the Job controller) for the operator's login Jobs, for the
//! tests that must hold a login Job unfinished on cue ([`Kubelet::pause`]), which a real kubelet
//! does not offer; `tests/real_node.rs` runs login Jobs on a real node. For each new Job labelled `dhan-operator.dev/login-for` it runs the
//! `login` container's command locally — the operator binary, with the env the Pod spec defines
//! (`secretKeyRef`s resolved through the API) — against a fresh local headless Chromium standing
//! in for the sidecar, then records what a cluster would: a Pod owned by the Job with the
//! container's termination message, and the Job's `Complete` or `Failed` condition.

use super::{ChildProcess, Chromium, OPERATOR_BIN};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const LABEL: &str = "dhan-operator.dev/login-for";

/// One login Job, run.
#[derive(Clone, Debug)]
pub struct LoginRun {
    pub job: String,
    pub exit_code: i32,
    /// What the `login` container wrote to its termination log.
    pub termination_message: String,
    /// Everything it printed.
    pub output: String,
}

#[derive(Default)]
struct State {
    paused: bool,
    seen: Vec<String>,
    runs: Vec<LoginRun>,
    /// Most login Jobs that existed unfinished at once.
    max_concurrent: usize,
    /// The Chromium sidecar never exits: Pods stay Running and Jobs never finish.
    sidecar_hangs: bool,
}

pub struct Kubelet {
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Kubelet {
    /// Starts running every new login Job in `namespace`, one at a time, each exactly once.
    pub fn start(client: Client, namespace: &str) -> Kubelet {
        let state = Arc::new(Mutex::new(State::default()));
        let task = tokio::spawn(watch(client, namespace.to_string(), state.clone()));
        Kubelet { state, task }
    }

    /// New Jobs are noticed but not run until [`Kubelet::resume`].
    pub fn pause(&self) {
        self.state.lock().unwrap().paused = true;
    }

    pub fn resume(&self) {
        self.state.lock().unwrap().paused = false;
    }

    /// From now on the Chromium sidecar does not exit after the login: the `login` container
    /// terminates, the Pod stays Running and the Job never completes.
    pub fn sidecar_never_exits(&self) {
        self.state.lock().unwrap().sidecar_hangs = true;
    }

    /// Names of the login Jobs seen so far, in order.
    pub fn jobs_seen(&self) -> Vec<String> {
        self.state.lock().unwrap().seen.clone()
    }

    /// The Jobs run so far.
    pub fn runs(&self) -> Vec<LoginRun> {
        self.state.lock().unwrap().runs.clone()
    }

    /// Most unfinished login Jobs seen at the same time.
    pub fn max_concurrent(&self) -> usize {
        self.state.lock().unwrap().max_concurrent
    }
}

async fn watch(client: Client, namespace: String, state: Arc<Mutex<State>>) {
    let jobs: Api<Job> = Api::namespaced(client.clone(), &namespace);
    let mut done: HashSet<String> = HashSet::new();
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let Ok(list) = jobs.list(&ListParams::default().labels(LABEL)).await else {
            continue;
        };
        let unfinished: Vec<&Job> = list.items.iter().filter(|j| !finished(j)).collect();
        let next = {
            let mut state = state.lock().unwrap();
            state.max_concurrent = state.max_concurrent.max(unfinished.len());
            for job in &unfinished {
                let name = job.name_any();
                if !state.seen.contains(&name) {
                    state.seen.push(name);
                }
            }
            if state.paused {
                None
            } else {
                unfinished
                    .iter()
                    .find(|j| !done.contains(&j.name_any()))
                    .map(|j| (*j).clone())
            }
        };
        if let Some(job) = next {
            done.insert(job.name_any());
            let hangs = state.lock().unwrap().sidecar_hangs;
            let run = run_job(&client, &namespace, &job, hangs).await;
            state.lock().unwrap().runs.push(run);
        }
    }
}

fn finished(job: &Job) -> bool {
    job.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| {
            c.iter()
                .any(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
        })
}

/// The `login` container's env as the kubelet would build it, or why the container could not
/// start (a missing Secret or key).
async fn resolve_env(
    client: &Client,
    namespace: &str,
    container: &Value,
) -> Result<Vec<(String, String)>, String> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let mut env = Vec::new();
    for var in container["env"].as_array().into_iter().flatten() {
        let name = var["name"].as_str().unwrap().to_string();
        if let Some(value) = var["value"].as_str() {
            env.push((name, value.to_string()));
        } else if let Some(reference) = var["valueFrom"]["secretKeyRef"].as_object() {
            let secret_name = reference["name"].as_str().unwrap();
            let key = reference["key"].as_str().unwrap();
            let optional = reference.get("optional") == Some(&Value::Bool(true));
            let secret = secrets
                .get_opt(secret_name)
                .await
                .map_err(|e| e.to_string())?;
            let bytes = secret
                .as_ref()
                .and_then(|s| s.data.as_ref())
                .and_then(|d| d.get(key))
                .map(|b| b.0.clone());
            match (bytes, secret.is_some()) {
                (Some(bytes), _) => env.push((name, String::from_utf8(bytes).unwrap())),
                // An optional key that is absent leaves the variable unset.
                (None, _) if optional => {}
                (None, true) => {
                    return Err(format!("couldn't find key {key} in Secret {secret_name}"));
                }
                (None, false) => return Err(format!("secret \"{secret_name}\" not found")),
            }
        } else {
            panic!("unexpected env source in the login container: {var}");
        }
    }
    Ok(env)
}

async fn run_job(client: &Client, namespace: &str, job: &Job, sidecar_hangs: bool) -> LoginRun {
    let started = chrono::Utc::now();
    let job_json = serde_json::to_value(job).unwrap();
    let pod_spec = job_json["spec"]["template"]["spec"].clone();
    let login = pod_spec["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "login")
        .expect("a login container")
        .clone();
    let (exit_code, message, output) = match resolve_env(client, namespace, &login).await {
        Err(why) => (
            -1,
            String::new(),
            format!("CreateContainerConfigError: {why}"),
        ),
        Ok(env) => run_login(&login, env).await,
    };
    let finished = chrono::Utc::now();
    let run = Run {
        exit_code,
        message: &message,
        started,
        finished,
        sidecar_hangs,
    };
    record(client, namespace, job, &pod_spec, &run).await;
    LoginRun {
        job: job.name_any(),
        exit_code,
        termination_message: message,
        output,
    }
}

/// Runs the container's command with `env`, Chromium standing in for the sidecar.
async fn run_login(login: &Value, env: Vec<(String, String)>) -> (i32, String, String) {
    let mut chromium = Chromium::start();
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("termination-log");
    let mut env: Vec<(String, String)> = env.into_iter().filter(|(k, _)| k != "CDP_URL").collect();
    env.push(("CDP_URL".into(), chromium.cdp_url.clone()));
    env.push((
        "TERMINATION_LOG".into(),
        log_path.to_str().unwrap().to_string(),
    ));
    // The operator image's entrypoint is the operator binary; `args` follow it.
    let args: Vec<String> = login["args"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| a.as_str().unwrap().to_string())
        .collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut process = ChildProcess::spawn(OPERATOR_BIN, &args, &env);
    let deadline = Instant::now() + Duration::from_secs(180);
    let status = loop {
        if let Some(status) = process.try_wait() {
            break Some(status);
        }
        if Instant::now() > deadline {
            process.kill_9();
            break None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    chromium.process.kill_9();
    let exit_code = status.and_then(|s| s.code()).unwrap_or(137);
    let message = std::fs::read_to_string(&log_path).unwrap_or_default();
    (exit_code, message, process.output())
}

/// How one run of a login Pod went.
struct Run<'a> {
    exit_code: i32,
    message: &'a str,
    started: chrono::DateTime<chrono::Utc>,
    finished: chrono::DateTime<chrono::Utc>,
    sidecar_hangs: bool,
}

/// Writes what the kubelet and the Job controller would: the Pod with its container states,
/// then the Job's status (none while a hung sidecar keeps the Pod running).
async fn record(client: &Client, namespace: &str, job: &Job, pod_spec: &Value, run: &Run<'_>) {
    let Run {
        exit_code,
        message,
        started,
        finished,
        sidecar_hangs,
    } = *run;
    let job_name = job.name_any();
    let job_uid = job.uid().unwrap();
    let succeeded = exit_code == 0;
    let ts =
        |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let suffix: String = (0..5)
        .map(|_| (b'a' + rand::random::<u8>() % 26) as char)
        .collect();
    let mut labels = job_json_labels(job);
    labels.insert("job-name".into(), json!(job_name));
    labels.insert("controller-uid".into(), json!(job_uid));
    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": format!("{job_name}-{suffix}"),
            "namespace": namespace,
            "labels": labels,
            "ownerReferences": [{
                "apiVersion": "batch/v1", "kind": "Job", "name": job_name, "uid": job_uid,
                "controller": true, "blockOwnerDeletion": true,
            }],
        },
        "spec": pod_spec,
    }))
    .unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    // Failures are reported, not fatal: the operator may delete a Job while it "runs".
    let pod = match pods.create(&PostParams::default(), &pod).await {
        Ok(pod) => pod,
        Err(e) => return eprintln!("kubelet: creating the login Pod for {job_name}: {e}"),
    };
    let terminated = |code: i32, message: &str| {
        json!({ "terminated": {
            "exitCode": code,
            "reason": if code == 0 { "Completed" } else { "Error" },
            "message": message,
            "startedAt": ts(started),
            "finishedAt": ts(finished),
        }})
    };
    let (phase, chromium) = match (sidecar_hangs, succeeded) {
        (true, _) => (
            "Running",
            json!({ "running": { "startedAt": ts(started) } }),
        ),
        (false, true) => ("Succeeded", terminated(0, "")),
        (false, false) => ("Failed", terminated(0, "")),
    };
    let status = json!({ "status": {
        "phase": phase,
        "startTime": ts(started),
        "containerStatuses": [
            { "name": "login", "image": login_image(pod_spec, "login"), "imageID": "",
              "ready": false, "restartCount": 0, "state": terminated(exit_code, message) },
            { "name": "chromium", "image": login_image(pod_spec, "chromium"), "imageID": "",
              "ready": !sidecar_hangs, "restartCount": 0, "state": chromium },
        ],
    }});
    if let Err(e) = pods
        .patch_status(
            &pod.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&status),
        )
        .await
    {
        eprintln!("kubelet: writing the login Pod's status for {job_name}: {e}");
    }

    if sidecar_hangs {
        return;
    }
    let condition = if succeeded {
        json!({ "type": "Complete", "status": "True",
                "lastProbeTime": ts(finished), "lastTransitionTime": ts(finished) })
    } else {
        json!({ "type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                "message": "Job has reached the specified backoff limit",
                "lastProbeTime": ts(finished), "lastTransitionTime": ts(finished) })
    };
    let mut job_status = json!({
        "startTime": ts(started),
        "conditions": [condition],
    });
    if succeeded {
        job_status["succeeded"] = json!(1);
        job_status["completionTime"] = json!(ts(finished));
    } else {
        job_status["failed"] = json!(1);
    }
    let jobs: Api<Job> = Api::namespaced(client.clone(), namespace);
    if let Err(e) = jobs
        .patch_status(
            &job_name,
            &PatchParams::default(),
            &Patch::Merge(&json!({ "status": job_status })),
        )
        .await
    {
        eprintln!("kubelet: writing the status of Job {job_name}: {e}");
    }
}

fn job_json_labels(job: &Job) -> serde_json::Map<String, Value> {
    job.spec
        .as_ref()
        .and_then(|s| s.template.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, Value::String(v)))
        .collect()
}

fn login_image(pod_spec: &Value, container: &str) -> Value {
    pod_spec["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == container)
        .map(|c| c["image"].clone())
        .unwrap_or(Value::Null)
}
