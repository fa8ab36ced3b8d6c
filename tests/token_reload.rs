//! The example consumer `deploy/examples/token_reload.py` picks a new token up the way the
//! kubelet delivers it: a Secret volume's `..data` symlink swapped to a new directory (its
//! atomic writer), noticed by polling or at once on SIGHUP.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::Duration;

const KEY: &str = "DHAN_ACCESS_TOKEN";

/// Writes `token` the way the kubelet's atomic writer does: a new timestamped directory, then
/// `..data` renamed to point at it; the key itself links through `..data`.
fn deliver(dir: &Path, generation: u32, token: &str) {
    let data = format!("..2026_12_07_{generation:02}");
    std::fs::create_dir(dir.join(&data)).unwrap();
    std::fs::write(dir.join(&data).join(KEY), token).unwrap();
    symlink(&data, dir.join("..data_tmp")).unwrap();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    if !dir.join(KEY).exists() {
        symlink(format!("..data/{KEY}"), dir.join(KEY)).unwrap();
    }
}

fn start(dir: &Path, every: &str) -> (Child, Receiver<String>) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/examples/token_reload.py");
    let mut child = Command::new("python3")
        .arg(script)
        .arg(dir)
        .arg(every)
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    let stdout = child.stdout.take().unwrap();
    let (send, lines) = channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if send.send(line).is_err() {
                break;
            }
        }
    });
    (child, lines)
}

fn next(lines: &Receiver<String>) -> String {
    lines
        .recv_timeout(Duration::from_secs(20))
        .expect("a line from token_reload.py")
}

fn short(token: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(token.as_bytes());
    digest
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>()[..12]
        .to_string()
}

#[test]
fn the_example_consumer_notices_a_new_token_by_polling_and_on_sighup() {
    let dir = tempfile::tempdir().unwrap();
    deliver(dir.path(), 1, "token-one");

    // Polling every 0.1 s.
    let (mut polling, lines) = start(dir.path(), "0.1");
    assert!(next(&lines).starts_with(&format!("token {} ", short("token-one"))));
    deliver(dir.path(), 2, "token-two");
    let line = next(&lines);
    assert!(
        line.starts_with(&format!("new token {} ", short("token-two"))),
        "{line}"
    );
    assert!(!line.contains("token-two"), "never the token itself");
    polling.kill().unwrap();

    // Polling once an hour: a SIGHUP makes it look at once.
    let (mut hup, lines) = start(dir.path(), "3600");
    assert!(next(&lines).starts_with(&format!("token {} ", short("token-two"))));
    deliver(dir.path(), 3, "token-three");
    let pid = hup.id().to_string();
    let sent = Command::new("kill").args(["-HUP", &pid]).status().unwrap();
    assert!(sent.success());
    assert!(next(&lines).starts_with(&format!("new token {} ", short("token-three"))));
    hup.kill().unwrap();
}
