//! How one operator carries many accounts, on a real kube-apiserver against `dhan-mock`, beside
//! what teams run otherwise: one process per account and refresh with Dhan's Python SDK.
//!
//! `make bench` measures 1,000, 5,000 and 10,000 accounts; `BENCH_ACCOUNTS=N` (or `N,M`) other
//! sizes. Each size runs in a process of its own with a fresh control plane, so sizes do not
//! share an API server. Dhan's rate limit is set high (`--dhan-calls-per-second 1000`): this
//! measures the operator, not the limit. Prints one Markdown table.

#[path = "../tests/support/mod.rs"]
mod support;

#[path = "scale/gauges.rs"]
mod gauges;
#[path = "scale/one.rs"]
mod one;
#[path = "scale/sdk.rs"]
mod sdk;

use one::{PROBE_EVERY, Row};
use std::process::{Command, Stdio};

const DEFAULT_SIZES: [usize; 3] = [1_000, 5_000, 10_000];
const ROW_PREFIX: &str = "BENCH_ROW ";

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    if let Some(count) = std::env::var("BENCH_ONE").ok().and_then(|v| v.parse().ok()) {
        let row = one::run(count).await;
        println!("{ROW_PREFIX}{}", serde_json::to_string(&row).unwrap());
        return;
    }
    let sizes: Vec<usize> = std::env::var("BENCH_ACCOUNTS")
        .ok()
        .map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| DEFAULT_SIZES.to_vec());
    let rows: Vec<Row> = sizes
        .iter()
        .map(|&n| {
            let row = run_size(n);
            // Kept on stderr as it comes: a later size that fails loses nothing.
            eprintln!("{ROW_PREFIX}{}", serde_json::to_string(&row).unwrap());
            row
        })
        .collect();
    let sdk = sdk::measure().await;
    print_table(&rows, sdk);
}

/// Runs one size in a child process (its own control plane, stopped when it exits).
fn run_size(count: usize) -> Row {
    let output = Command::new(std::env::current_exe().unwrap())
        .env("BENCH_ONE", count.to_string())
        .stderr(Stdio::inherit())
        .output()
        .expect("run one size");
    assert!(output.status.success(), "the {count}-account run failed");
    let text = String::from_utf8_lossy(&output.stdout);
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix(ROW_PREFIX))
        .expect("a result row");
    serde_json::from_str(line).unwrap()
}

fn print_table(rows: &[Row], sdk: Option<(f64, f64)>) {
    println!(
        "| accounts | start → all Ready | CPU / refresh | API writes + events / refresh \
         | peak RSS | steady RSS | RSS / account | idle {}s: writes, Dhan calls (busiest s) \
         | forced refresh of all | its CPU / refresh | its writes + events / refresh |",
        PROBE_EVERY.as_secs()
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        println!(
            "| {} | {:.1} s | {:.2} ms | {:.2} + {:.2} | {:.0} MiB | {:.0} MiB | {:.1} KiB \
             | {:.0}, {} probes + {} other ({}) | {:.1} s | {:.2} ms | {:.2} + {:.2} |",
            r.accounts,
            r.ready_seconds,
            r.start_cpu_ms_per_refresh,
            r.start_writes_per_refresh,
            r.start_events_per_refresh,
            r.peak_rss_mib,
            r.steady_rss_mib,
            r.steady_rss_mib * 1024.0 / r.accounts as f64,
            r.idle_writes + r.idle_events,
            r.idle_probes,
            r.idle_other_calls,
            r.idle_busiest_second,
            r.burst_seconds,
            r.burst_cpu_ms_per_refresh,
            r.burst_writes_per_refresh,
            r.burst_events_per_refresh,
        );
    }
    match sdk {
        Some((cpu, rss)) => {
            println!(
                "| `dhanhq` SDK, 1 process per account and refresh | – | {:.0} ms | – \
                 | {rss:.0} MiB | – | {rss:.0} MiB (while it runs) | – | – | {:.0} ms | – |",
                cpu * 1000.0,
                cpu * 1000.0
            );
            let worst = rows
                .iter()
                .map(|r| r.start_cpu_ms_per_refresh.max(r.burst_cpu_ms_per_refresh))
                .fold(0.0, f64::max);
            if worst > 0.0 {
                println!(
                    "\nThe operator's CPU per refresh is at least {:.0}x below the SDK process's.",
                    cpu * 1000.0 / worst
                );
            }
        }
        None => println!("\n(SDK row skipped: set BENCH_SDK_PYTHON to a Python with dhanhq)"),
    }
    println!("\nDetail (API writes by resource; idle probes expected: one per account):");
    for r in rows {
        println!(
            "- {}: start {}; forced refresh {}; idle {} probes for {} accounts in {:.0} s, \
             {:.2} ms CPU per probe; at validateEvery 15m an idle hour is {} probes and {:.0} writes",
            r.accounts,
            r.start_writes,
            r.burst_writes,
            r.idle_probes,
            r.accounts,
            r.idle_seconds,
            r.idle_cpu_ms_per_probe,
            r.accounts * 4,
            (r.idle_writes + r.idle_events) * 3600.0 / r.idle_seconds.max(1.0),
        );
    }
}
