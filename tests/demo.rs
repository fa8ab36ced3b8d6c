//! The README's first command: `make demo` (`hack/demo.sh`, with this run's binaries) ends as
//! the README says — alice (PIN + TOTP) and bob (a pasted web token) Ready, carol Failed with
//! her Secret's problem named, and, where the machine can run a node, dave Ready through a
//! browser-login Job — with `kubectl get dhanaccounts` last. It brings up its own control plane
//! (and node), so it shares nothing with the other test binaries.

use std::path::Path;
use std::process::Command;

#[test]
fn the_demo_ends_with_every_sample_account_in_the_phase_the_readme_names() {
    let manifest = env!("CARGO_MANIFEST_DIR");
    let bin = Path::new(env!("CARGO_BIN_EXE_dhan-operator"))
        .parent()
        .unwrap()
        .to_path_buf();
    let out = Command::new(Path::new(manifest).join("hack/demo.sh"))
        .current_dir(manifest)
        .env("DEMO_BIN", &bin)
        .output()
        .expect("run hack/demo.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "hack/demo.sh failed:\n{stdout}\n{stderr}"
    );
    let listing = stdout
        .split("kubectl get dhanaccounts -A -o wide")
        .nth(1)
        .expect("the demo lists the accounts");
    let row = |name: &str| {
        listing
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some(name))
            .unwrap_or_else(|| panic!("no row for {name} in:\n{listing}"))
            .to_string()
    };
    assert!(
        row("alice").contains("Ready") && row("alice").contains("totp"),
        "{listing}"
    );
    assert!(
        row("bob").contains("Ready") && row("bob").contains("adopted"),
        "{listing}"
    );
    assert!(row("carol").contains("Failed"), "{listing}");
    assert!(
        stdout.contains("needs totpSecret"),
        "carol's problem is named:\n{stdout}"
    );
    assert!(
        stdout.contains("<redacted"),
        "the token is never printed:\n{stdout}"
    );
    let node = Command::new(Path::new(manifest).join("hack/node.sh"))
        .arg("check")
        .status()
        .unwrap()
        .success();
    if node {
        assert!(
            row("dave").contains("Ready") && row("dave").contains("browser"),
            "{listing}"
        );
    }
}
