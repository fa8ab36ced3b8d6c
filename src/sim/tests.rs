use super::{Config, Report, run};

/// Days each CI seed simulates (`make soak` sets `SIM_DAYS`).
const DAYS: u32 = 3;

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

/// CI's share: 12 seeds of 3 days each, in four tests that run side by side (`make soak` runs
/// many more). A simulated day costs 0.3 to 8 s here (an account in `Conflict` looks again
/// every 30 s, each look a JSON round trip through the in-memory API server).
#[test]
fn seeds_0_2() {
    run_seeds(0..3);
}

#[test]
fn seeds_3_5() {
    run_seeds(3..6);
}

#[test]
fn seeds_6_8() {
    run_seeds(6..9);
}

#[test]
fn seeds_9_11() {
    run_seeds(9..12);
}

/// Found by seed 20 (2 days): two installs' accounts of one client, both obtaining, let the
/// claim go between attempts; each took it in turn and called Dhan, re-arming Dhan's 2-minute
/// lock for the other, and neither ever minted (2,745 refused calls in two days).
#[test]
fn seed_20_two_installs_obtaining_one_client_do_not_take_turns_at_the_throttle() {
    let report = run_seed(Config::new(20, 2));
    assert!(report.violations.is_empty(), "{:#?}", report.violations);
    assert!(report.mints < 20, "{} mint calls", report.mints);
}

/// A seed is a run: the same seed gives the same trace, event for event.
#[test]
fn the_same_seed_runs_the_same_way() {
    for seed in [3, 17] {
        let first = run_seed(Config::new(seed, 2));
        let second = run_seed(Config::new(seed, 2));
        assert!(first.trace.len() > 3, "{:?}", first.trace);
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
