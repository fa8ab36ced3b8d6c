use super::{Config, Report, run};

/// Days each CI seed simulates (`make soak` sets `SIM_DAYS`).
const DAYS: u32 = 4;

fn run_seed(config: Config) -> Report {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a runtime")
        .block_on(run(config))
}

/// Runs `seeds`; fails with the first broken seed's trace.
fn run_seeds(seeds: std::ops::Range<u64>) {
    let days = env_u64("SIM_DAYS", u64::from(DAYS)) as u32;
    let (mut reconciles, mut mints, mut faults) = (0, 0, 0);
    let count = seeds.end - seeds.start;
    for seed in seeds {
        let report = run_seed(Config::new(seed, days));
        reconciles += report.reconciles;
        mints += report.mints;
        faults += report.faults;
        if !report.violations.is_empty() {
            let tail = report.trace.len().saturating_sub(200);
            panic!(
                "seed {seed} broke a promise:\n{}\n\ntrace (last 200 lines):\n{}\n\nreplay: \
                 SIM_SEED={seed} cargo test --lib sim::tests::replay -- --nocapture",
                report.violations.join("\n"),
                report.trace[tail..].join("\n")
            );
        }
    }
    println!(
        "{count} seeds x {days} days: {reconciles} reconciles, {mints} Dhan mint calls, {faults} \
         faults, no promise broken"
    );
}

/// CI's share: 40 seeds of 4 days each, in four tests that run side by side (`make soak` runs
/// many more). A simulated day costs about a second here, mostly in the JSON round trips of the
/// in-memory API server.
#[test]
fn seeds_000_009() {
    run_seeds(0..10);
}

#[test]
fn seeds_010_019() {
    run_seeds(10..20);
}

#[test]
fn seeds_020_029() {
    run_seeds(20..30);
}

#[test]
fn seeds_030_039() {
    run_seeds(30..40);
}

/// `SIM_SEED=<seed>` replays one seed and prints its whole trace (seed 0 without it).
#[test]
fn replay() {
    let seed = std::env::var("SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let days = env_u64("SIM_DAYS", u64::from(DAYS)) as u32;
    let report = run_seed(Config::new(seed, days));
    println!("{}", report.trace.join("\n"));
    println!(
        "seed {seed}, {days} days: {} reconciles, {} Dhan mint calls, {} faults",
        report.reconciles, report.mints, report.faults
    );
    println!("{:#?}", report.per_account);
    assert!(report.violations.is_empty(), "{:#?}", report.violations);
}

/// A seed is a run: the same seed gives the same trace, event for event.
#[test]
fn the_same_seed_runs_the_same_way() {
    for seed in [3, 17] {
        let first = run_seed(Config::new(seed, 5));
        let second = run_seed(Config::new(seed, 5));
        assert!(first.trace.len() > 10, "{:?}", first.trace);
        assert_eq!(first.trace, second.trace);
    }
}

/// `make soak`: `SIM_SEEDS` seeds (100,000 by default) from `SIM_FROM`.
#[test]
#[ignore]
fn soak() {
    let from = env_u64("SIM_FROM", 1_000);
    let count = env_u64("SIM_SEEDS", 100_000);
    run_seeds(from..from + count);
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}
