//! The alternative, measured the same way: one process per account per refresh, running Dhan's
//! official Python SDK (`benches/sdk_refresh.py`) against `dhan-mock`.

use super::support::MockDhan;
use serde_json::{Value, json};
use std::path::Path;
use std::process::Command;

/// Processes measured; each refreshes a client of its own (Dhan refuses a TOTP code twice).
const RUNS: usize = 10;

/// What one SDK refresh costs: median CPU seconds and median peak RSS in MiB; `None` when
/// the SDK's virtual environment is missing (`make bench` creates it).
pub async fn measure() -> Option<(f64, f64)> {
    let python = std::env::var("BENCH_SDK_PYTHON").ok()?;
    if !Path::new(&python).exists() {
        return None;
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/sdk_refresh.py");
    let accounts: Vec<Value> = (0..RUNS)
        .map(|i| {
            json!({"clientId": (1_900_000_000 + i).to_string(), "pin": super::one::PIN_FOR_SDK,
                        "totpSecret": super::one::TOTP_FOR_SDK})
        })
        .collect();
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), serde_json::to_vec(&accounts).unwrap()).unwrap();
    let mock = MockDhan::start(&["--accounts", file.path().to_str().unwrap()]).await;
    let out = tempfile::NamedTempFile::new().unwrap();
    let mut cpu = Vec::new();
    let mut rss = Vec::new();
    for i in 0..RUNS {
        let output = Command::new(&python)
            .arg(script)
            .arg(&mock.url)
            .arg((1_900_000_000 + i).to_string())
            .arg(super::one::PIN_FOR_SDK)
            .arg(super::one::TOTP_FOR_SDK)
            .arg(out.path())
            .output()
            .expect("run the SDK script");
        assert!(
            output.status.success(),
            "sdk_refresh.py failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let report: Value = serde_json::from_slice(&output.stdout).expect("one JSON line");
        cpu.push(report["cpuSeconds"].as_f64().unwrap());
        rss.push(report["maxRssKib"].as_f64().unwrap() / 1024.0);
    }
    Some((median(cpu), median(rss)))
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}
