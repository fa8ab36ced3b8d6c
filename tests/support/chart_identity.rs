//! Every operator a test starts runs as the Helm chart's ServiceAccount, with exactly the rights
//! the chart (`charts/dhan-operator`) grants for the features its flags turn on: the chart's role,
//! in both of its modes, runs every scenario.
//!
//! [`super::start_operator`] derives the chart's values from the operator's flags, installs the
//! real chart with real Helm (`hack/helm.py`) and hands the operator a kubeconfig holding a token
//! of the release's ServiceAccount (TokenRequest API), with `POD_NAMESPACE` set to the release
//! namespace as the chart's Deployment sets it:
//!
//! - `--namespace X`: the chart's namespaced mode, `watchNamespace: X`, the release installed into
//!   X itself (a team installing into its own namespace): a Role + RoleBinding in X.
//! - no `--namespace`: cluster mode, the release in a namespace of its own (`operator-*`): a
//!   ClusterRole + ClusterRoleBinding.
//! - `--browser-logins`, `--rollout-restarts`, `--sync-pods`, `--notifications` and `--metrics-secure` switch on
//!   the chart value that grants their rights (each is off without its flag, so the role is the
//!   least the flags need); `--leader-elect` names the Lease the leader-election Role allows
//!   (`leaderElection.leaseName`) after `--leader-elect-lease`, and the Lease's namespace must be
//!   the release namespace; `--install-id X` becomes `clientClaims.installId`, whose heartbeat the
//!   chart lets the operator renew — without it the operator is given the chart's default
//!   (`<release namespace>/<fullname>`), as the chart's Deployment does.
//! - `replicaCount: 0` and no trading-calendar ConfigMap, dashboard, NetworkPolicy,
//!   ServiceMonitor or PrometheusRule: nothing a kubelet would run, nothing a test might count.
//!
//! One release per distinct set of values in a test process: replicas started with the same
//! flags share it. A caller that puts `KUBECONFIG` in the operator's environment keeps that
//! identity instead (a test of a deliberately limited user, say).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use dhan_operator::crd::DhanAccount;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::Client;
use kube::api::{Api, ListParams, PostParams};
use serde_json::{Value, json};

use super::{control_plane, helm_install};

/// The Lease the operator takes without `--leader-elect-lease` (its flag's default).
const OPERATOR_DEFAULT_LEASE: &str = "dhan-operator-leader";

/// Lifetime of the ServiceAccount tokens: longer than any test binary runs.
const TOKEN_SECONDS: i64 = 2 * 60 * 60;

/// Operator settings that are read from the environment too: here they must come as flags, the
/// chart's values are derived from the flags.
const FLAG_ENV: &[&str] = &[
    "WATCH_NAMESPACE",
    "BROWSER_LOGINS",
    "ROLLOUT_RESTARTS",
    "SYNC_PODS",
    "NOTIFICATIONS",
    "METRICS_SECURE",
    "LEADER_ELECT",
    "CLIENT_CLAIMS_NAMESPACE",
];

/// How an operator authenticates as the chart's ServiceAccount.
#[derive(Clone, Debug)]
pub struct ChartIdentity {
    /// Kubeconfig with a token of the release's ServiceAccount.
    pub kubeconfig: PathBuf,
    /// Namespace of the release and its ServiceAccount (the Deployment's pods' namespace).
    pub release_namespace: String,
    /// The install ID the chart gives the operator (`--install-id`).
    pub install_id: String,
}

/// What the chart's values depend on, read from `dhan-operator run` flags.
#[derive(Default, Debug)]
struct Flags {
    namespace: Option<String>,
    browser_logins: bool,
    rollout_restarts: bool,
    sync_pods: bool,
    notifications: bool,
    metrics_secure: bool,
    leader_elect: bool,
    leader_elect_lease: Option<String>,
    leader_elect_namespace: Option<String>,
    install_id: Option<String>,
}

impl Flags {
    fn parse(args: &[&str]) -> Flags {
        let mut flags = Flags::default();
        let mut rest = args.iter();
        while let Some(arg) = rest.next() {
            let Some(flag) = arg.strip_prefix("--") else {
                continue; // the value of a flag this module does not read
            };
            let (name, inline) = match flag.split_once('=') {
                Some((name, value)) => (name, Some(value.to_string())),
                None => (flag, None),
            };
            let mut value = || {
                inline.clone().unwrap_or_else(|| {
                    rest.next()
                        .unwrap_or_else(|| panic!("--{name} without a value in {args:?}"))
                        .to_string()
                })
            };
            match name {
                "namespace" => flags.namespace = Some(value()),
                "browser-logins" => flags.browser_logins = true,
                "rollout-restarts" => flags.rollout_restarts = true,
                "sync-pods" => flags.sync_pods = true,
                "notifications" => flags.notifications = true,
                "metrics-secure" => flags.metrics_secure = true,
                "leader-elect" => flags.leader_elect = true,
                "leader-elect-lease" => flags.leader_elect_lease = Some(value()),
                "leader-elect-namespace" => flags.leader_elect_namespace = Some(value()),
                "install-id" => flags.install_id = Some(value()),
                _ => {}
            }
        }
        flags
    }

    /// The chart's values for an operator with these flags: the features they turn on, nothing
    /// more, and none of the chart's extras.
    fn values(&self) -> Value {
        let lease = match (self.leader_elect, &self.leader_elect_lease) {
            (false, _) => "",
            (true, Some(lease)) => lease.as_str(),
            (true, None) => OPERATOR_DEFAULT_LEASE,
        };
        json!({
            "replicaCount": 0,
            "watchNamespace": self.namespace.as_deref().unwrap_or(""),
            "browserLogin": { "enabled": self.browser_logins },
            "rolloutRestarts": { "enabled": self.rollout_restarts },
            "podSync": { "enabled": self.sync_pods },
            "notifications": { "enabled": self.notifications },
            "clientClaims": { "installId": self.install_id.as_deref().unwrap_or("") },
            "leaderElection": { "enabled": self.leader_elect, "leaseName": lease },
            "metrics": {
                "secure": { "enabled": self.metrics_secure },
                "serviceMonitor": { "enabled": false },
                "prometheusRule": { "enabled": false },
            },
            "tradingCalendar": { "enabled": false },
            "grafanaDashboard": { "enabled": false },
            "networkPolicy": { "enabled": false },
        })
    }
}

/// The chart identity for an operator started with `args` and `env` (neither holding
/// `KUBECONFIG`): the release for these flags, installed on first use.
pub fn for_operator(args: &[&str], env: &[(&str, &str)]) -> ChartIdentity {
    if let Some((name, _)) = env.iter().find(|(name, _)| FLAG_ENV.contains(name)) {
        panic!(
            "{name} in the operator's environment: pass it as a flag, the chart's values are \
             derived from the flags"
        );
    }
    let flags = Flags::parse(args);
    let values = flags.values();
    let identity = release(&values, flags.namespace.as_deref());
    if flags.leader_elect {
        let pod_namespace = env
            .iter()
            .find(|(name, _)| *name == "POD_NAMESPACE")
            .map(|(_, value)| value.to_string());
        let lease_namespace = flags
            .leader_elect_namespace
            .clone()
            .or(pod_namespace)
            .unwrap_or_else(|| identity.release_namespace.clone());
        assert_eq!(
            lease_namespace, identity.release_namespace,
            "the leader Lease must be in the release namespace: the chart grants the Lease there \
             only (--leader-elect-namespace/POD_NAMESPACE {lease_namespace}, release namespace \
             {}; flags {args:?})",
            identity.release_namespace
        );
    }
    identity
}

/// The release for `values`, installed once per test process (into `namespace`, or a new
/// namespace in cluster mode); concurrent callers with the same values wait for one install.
fn release(values: &Value, namespace: Option<&str>) -> ChartIdentity {
    static RELEASES: Mutex<BTreeMap<String, Arc<OnceLock<ChartIdentity>>>> =
        Mutex::new(BTreeMap::new());
    let cell = RELEASES
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .entry(values.to_string())
        .or_default()
        .clone();
    cell.get_or_init(|| {
        let values = values.clone();
        let namespace = namespace.map(str::to_owned);
        // Callers run inside a test's tokio runtime, which must not be blocked on: the API calls
        // get a runtime of their own on a thread of their own.
        std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a tokio runtime")
                .block_on(install(&values, namespace))
        })
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
    .clone()
}

/// Installs the chart with `values` into `namespace` (namespaced mode) or a new namespace
/// (cluster mode), and writes a kubeconfig for its ServiceAccount once its rights are in effect.
async fn install(values: &Value, namespace: Option<String>) -> ChartIdentity {
    static RELEASE_NUMBER: AtomicUsize = AtomicUsize::new(1);
    let cp = control_plane();
    let admin = cp.client().await;
    let namespace = match namespace {
        Some(namespace) => namespace,
        None => super::namespace(&admin, "operator").await,
    };
    // Unique in this test binary (cluster-scoped objects are named after the release), and
    // short: the chart's names append "-dhan-operator" and then "-metrics" to a Service name
    // of at most 63 characters.
    let mut release = format!(
        "op{}-{namespace}",
        RELEASE_NUMBER.fetch_add(1, Ordering::Relaxed)
    );
    release.truncate(41);
    let release = release.trim_end_matches('-').to_string();
    let installed = helm_install(&release, &namespace, values);
    let service_account = installed
        .lines()
        .find_map(|line| line.trim().strip_prefix("ServiceAccount "))
        .unwrap_or_else(|| {
            panic!("the release {namespace}/{release} has no ServiceAccount:\n{installed}")
        })
        .trim()
        .to_string();

    let token = Api::<ServiceAccount>::namespaced(admin, &namespace)
        .create_token_request(
            &service_account,
            &PostParams::default(),
            &TokenRequest {
                spec: TokenRequestSpec {
                    audiences: vec![],
                    expiration_seconds: Some(TOKEN_SECONDS),
                    bound_object_ref: None,
                },
                ..TokenRequest::default()
            },
        )
        .await
        .unwrap_or_else(|e| panic!("a token for ServiceAccount {namespace}/{service_account}: {e}"))
        .status
        .expect("the TokenRequest's status")
        .token;
    let kubeconfig = cp
        .dir()
        .join(format!("kubeconfig-chart-{namespace}-{release}"));
    write_kubeconfig(&kubeconfig, &namespace, &service_account, &token);
    wait_until_effective(&kubeconfig, &namespace, values).await;
    eprintln!(
        "operator identity: ServiceAccount {namespace}/{service_account} of release {release} \
         ({})",
        kubeconfig.display()
    );
    let install_id = match values["clientClaims"]["installId"].as_str() {
        Some(id) if !id.is_empty() => id.to_string(),
        // The chart's default: `<release namespace>/<fullname>`, the fullname being the release
        // name and the chart's (the release name never contains the chart's).
        _ => {
            let mut fullname = format!("{release}-dhan-operator");
            fullname.truncate(63);
            format!("{namespace}/{}", fullname.trim_end_matches('-'))
        }
    };
    ChartIdentity {
        kubeconfig,
        release_namespace: namespace,
        install_id,
    }
}

/// A kubeconfig for the admin kubeconfig's cluster (server, CA) with `token` as its user.
fn write_kubeconfig(path: &std::path::Path, namespace: &str, service_account: &str, token: &str) {
    let admin_path = control_plane().kubeconfig_path();
    let admin: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(&admin_path).expect("read the admin kubeconfig"),
    )
    .expect("the admin kubeconfig is YAML");
    let cluster = &admin["clusters"][0];
    let user = format!("system:serviceaccount:{namespace}:{service_account}");
    let config = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [serde_json::to_value(cluster).unwrap()],
        "users": [{ "name": user, "user": { "token": token } }],
        "contexts": [{
            "name": "chart",
            "context": { "cluster": cluster["name"].as_str(), "user": user, "namespace": namespace },
        }],
        "current-context": "chart",
    });
    std::fs::write(path, serde_yaml::to_string(&config).unwrap())
        .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

/// Waits until the token authenticates and the release's RoleBindings reach the authorizer
/// (both through informers of the API server): the operator may list its DhanAccounts, read its
/// leader Lease and the client-ID claims.
async fn wait_until_effective(kubeconfig: &std::path::Path, namespace: &str, values: &Value) {
    let kubeconfig = kube::config::Kubeconfig::read_from(kubeconfig).expect("read kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .expect("load kubeconfig");
    let client = Client::try_from(config).expect("build kube client");
    let accounts: Api<DhanAccount> = match values["watchNamespace"].as_str() {
        Some("") | None => Api::all(client.clone()),
        Some(watched) => Api::namespaced(client.clone(), watched),
    };
    let lease = values["leaderElection"]["leaseName"].as_str().unwrap_or("");
    super::wait_for(Duration::from_secs(30), || async {
        // Metadata only: a test may have put an account there that does not decode.
        accounts
            .list_metadata(&ListParams::default().limit(1))
            .await
            .ok()?;
        if !lease.is_empty() {
            Api::<Lease>::namespaced(client.clone(), namespace)
                .get_opt(lease)
                .await
                .ok()?;
        }
        Api::<dhan_operator::claims::DhanClientClaim>::all(client.clone())
            .get_opt("probe")
            .await
            .ok()?;
        Some(())
    })
    .await;
}
