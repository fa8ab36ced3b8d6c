//! One throw-away control plane per test binary, via `hack/controlplane.sh`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

pub struct ControlPlane {
    dir: PathBuf,
    service_accounts: bool,
}

static CONTROL_PLANE: OnceLock<ControlPlane> = OnceLock::new();

/// The control plane of this test binary, started on first use. It is stopped by a watcher once
/// the test process exits; its logs stay in `<dir>/*.log` (the path is printed at startup).
pub fn control_plane() -> &'static ControlPlane {
    CONTROL_PLANE.get_or_init(|| ControlPlane::start(false))
}

/// The control plane of this test binary with the ServiceAccount admission plugin on, as in a
/// real cluster (`hack/controlplane.sh --service-accounts`): Pods get their account's token. The
/// binary must ask for it before anything starts the plain one.
pub fn control_plane_with_service_accounts() -> &'static ControlPlane {
    let cp = CONTROL_PLANE.get_or_init(|| ControlPlane::start(true));
    assert!(
        cp.service_accounts,
        "this binary's control plane started without ServiceAccount admission"
    );
    cp
}

impl ControlPlane {
    fn start(service_accounts: bool) -> ControlPlane {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::Builder::new()
            .prefix("dhan-controlplane-")
            .tempdir()
            .expect("temp dir")
            .keep();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("hack/controlplane.sh");
        let out = Command::new(&script)
            .arg("up")
            .arg(&dir)
            .args(["--watch-pid", &std::process::id().to_string()])
            .args(service_accounts.then_some("--service-accounts"))
            .stderr(Stdio::inherit())
            .output()
            .unwrap_or_else(|e| panic!("running {}: {e}", script.display()));
        assert!(
            out.status.success(),
            "{} up {} failed (see stderr above)",
            script.display(),
            dir.display()
        );
        eprintln!(
            "control plane up; logs and kubeconfigs in {}",
            dir.display()
        );
        ControlPlane {
            dir,
            service_accounts,
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Admin (system:masters) kubeconfig.
    pub fn kubeconfig_path(&self) -> PathBuf {
        self.dir.join("kubeconfig")
    }

    /// Kubeconfig of user `dhan-operator`, which has only the rights RBAC grants it.
    pub fn operator_kubeconfig_path(&self) -> PathBuf {
        self.dir.join("kubeconfig-operator")
    }

    /// Kubeconfig acting as ServiceAccount `namespace/name` (user
    /// `system:serviceaccount:<namespace>:<name>`, groups `system:serviceaccounts[:<namespace>]`),
    /// for the identities listed in `SERVICE_ACCOUNTS` of `hack/controlplane.sh`. It has only the
    /// rights RBAC grants that ServiceAccount.
    pub fn service_account_kubeconfig_path(&self, namespace: &str, name: &str) -> PathBuf {
        let path = self.dir.join(format!("kubeconfig-sa-{namespace}-{name}"));
        assert!(
            path.exists(),
            "no {}: add {namespace}:{name} to SERVICE_ACCOUNTS in hack/controlplane.sh",
            path.display()
        );
        path
    }

    /// A fresh client acting as ServiceAccount `namespace/name` (see
    /// [`ControlPlane::service_account_kubeconfig_path`]).
    pub async fn service_account_client(&self, namespace: &str, name: &str) -> Client {
        client_from(&self.service_account_kubeconfig_path(namespace, name)).await
    }

    /// A fresh admin client (every `#[tokio::test]` has its own runtime: don't share clients).
    pub async fn client(&self) -> Client {
        client_from(&self.kubeconfig_path()).await
    }

    /// A fresh client acting as user `dhan-operator`.
    pub async fn operator_client(&self) -> Client {
        client_from(&self.operator_kubeconfig_path()).await
    }

    /// The apiserver's audit events so far (requests touching Secrets, see
    /// `hack/controlplane.sh`), oldest first.
    pub fn audit_events(&self) -> Vec<serde_json::Value> {
        let log = std::fs::read_to_string(self.dir.join("audit.log")).unwrap_or_default();
        log.lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }

    /// The bearer token of the user a kubeconfig of this control plane authenticates as.
    pub fn token_of(&self, kubeconfig: &Path) -> String {
        let config: serde_yaml::Value =
            serde_yaml::from_str(&std::fs::read_to_string(kubeconfig).expect("read kubeconfig"))
                .expect("kubeconfig YAML");
        config["users"][0]["user"]["token"]
            .as_str()
            .expect("a token user")
            .to_string()
    }

    /// Lets user `dhan-operator` keep client-ID claims and its install's heartbeat (the
    /// cluster-scoped rights every install has; `kubectl apply`, so granting twice is fine).
    pub fn grant_operator_user_claims(&self) {
        const CLAIMS_RBAC: &str = "apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: dhan-operator-user-claims}
rules:
- apiGroups: [dhan-operator.dev]
  resources: [dhanclientclaims, dhanoperatorinstalls]
  verbs: [get, list, watch, create, update, delete]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: dhan-operator-user-claims}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: dhan-operator-user-claims}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: dhan-operator}]
";
        let out = self.kubectl_with_stdin(&["apply", "-f", "-"], CLAIMS_RBAC);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Runs `kubectl --kubeconfig <admin> ARGS...`.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_with_stdin(args, "")
    }

    /// Runs `kubectl --kubeconfig <admin> ARGS...` with `stdin` as its input (e.g. `apply -f -`).
    pub fn kubectl_with_stdin(&self, args: &[&str], stdin: &str) -> Output {
        use std::io::Write;
        let mut child = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(self.kubeconfig_path())
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn kubectl");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .expect("write kubectl stdin");
        child.wait_with_output().expect("wait for kubectl")
    }
}

async fn client_from(kubeconfig: &Path) -> Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let kubeconfig = Kubeconfig::read_from(kubeconfig).expect("read kubeconfig");
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("load kubeconfig");
    Client::try_from(config).expect("build kube client")
}
