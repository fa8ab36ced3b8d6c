//! Real Helm for the tests: `hack/helm.py` (helm-sdkpy, the official Helm library) run with the
//! python of the venv `hack/install-testbed.sh` builds.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

use super::control_plane;

/// The chart, as in the repository.
pub const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/dhan-operator");

/// The python of the venv `hack/install-testbed.sh` builds; the test fails (not skips) without it.
pub fn helm_python() -> PathBuf {
    let cache = std::env::var_os("DHAN_OPERATOR_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME is set"))
                .join(".cache/dhan-operator")
        });
    let python = cache.join("helm-venv/bin/python");
    assert!(
        python.exists(),
        "no Helm for the chart tests: {} is missing. Run hack/install-testbed.sh (or `make testbed`): \
         it installs helm-sdkpy, the official Helm library, into that venv",
        python.display()
    );
    python
}

/// Runs `hack/helm.py ARGS...` with the venv's python.
pub fn helm(args: &[&str]) -> Output {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("hack/helm.py");
    Command::new(helm_python())
        .arg(&script)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", script.display()))
}

/// Exit status, stdout and stderr of a finished command, for a failure message.
pub fn describe(out: &Output) -> String {
    format!(
        "{}\n--- stdout\n{}--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `helm install NAME CHART -n NAMESPACE --values VALUES` as admin, not waiting for readiness.
/// Returns what `hack/helm.py` printed: the release status, then `  <Kind> <name>` per object.
pub fn helm_install(name: &str, namespace: &str, values: &Value) -> String {
    let kubeconfig = control_plane().kubeconfig_path();
    let out = helm(&[
        "install",
        name,
        namespace,
        CHART,
        &values.to_string(),
        kubeconfig.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "helm install {name} -n {namespace}: {}",
        describe(&out)
    );
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        stdout.contains(&format!("installed {namespace}/{name}: deployed")),
        "{}",
        describe(&out)
    );
    stdout
}
