//! `--trading-calendar`: the operator refuses a calendar it cannot use, and picks up an edited
//! one without a restart (as when the kubelet updates a mounted ConfigMap).

mod support;

use std::time::Duration;

const CALENDAR: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/charts/dhan-operator/files/trading-calendar.yaml"
);
const METRIC: &str = "dhan_operator_trading_calendar_valid_through_timestamp_seconds";

fn operator(calendar: &str) -> support::ChildProcess {
    support::start_operator(
        &[
            "--namespace",
            "default",
            "--metrics-addr",
            "127.0.0.1:0",
            "--trading-calendar",
            calendar,
        ],
        &[],
    )
}

#[tokio::test]
async fn an_unusable_calendar_stops_the_operator_with_a_clear_error() {
    support::control_plane();
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("calendar.yaml");
    std::fs::write(
        &broken,
        "specialSessions: [{date: 2026-11-08, open: '19:30', close: '17:45', name: Muhurat}]\n",
    )
    .unwrap();
    for (path, expected) in [
        (
            "/nonexistent/calendar.yaml",
            "cannot read the trading calendar",
        ),
        (
            broken.to_str().unwrap(),
            "specialSessions[2026-11-08] Muhurat: closes (17:45) before it opens (19:30)",
        ),
    ] {
        let mut process = operator(path);
        let status = support::wait_for(Duration::from_secs(20), || {
            let status = process.try_wait();
            async move { status }
        })
        .await;
        assert!(!status.success());
        assert!(process.output().contains(expected), "{}", process.output());
    }
}

#[tokio::test]
async fn an_edited_calendar_takes_effect_without_a_restart() {
    support::control_plane();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("calendar.yaml");
    std::fs::copy(CALENDAR, &path).unwrap();
    let mut process = operator(path.to_str().unwrap());
    let url = support::wait_for(Duration::from_secs(20), || async {
        support::metrics_url(&process.output())
    })
    .await;
    let valid_through = || async {
        let text = reqwest::get(&url).await.ok()?.text().await.ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{METRIC} ")))
            .map(str::to_owned)
    };
    // End of 2026-12-31 IST.
    assert_eq!(valid_through().await.as_deref(), Some("1798741800"));

    // NSE publishes next year's list: the ConfigMap (here, the file) is edited in place.
    let text = std::fs::read_to_string(CALENDAR)
        .unwrap()
        .replace("validThrough: 2026-12-31", "validThrough: 2027-12-31");
    std::fs::write(&path, text).unwrap();
    support::wait_for(Duration::from_secs(45), || async {
        (valid_through().await.as_deref() == Some("1830277800")).then_some(())
    })
    .await;
    assert!(process.output().contains("trading calendar changed"));

    // A broken edit is reported and the last good calendar stays.
    std::fs::write(&path, "holidays: [{date: not-a-date}]\n").unwrap();
    support::wait_for(Duration::from_secs(45), || async {
        process
            .output()
            .contains("keeping the previous trading calendar")
            .then_some(())
    })
    .await;
    assert_eq!(valid_through().await.as_deref(), Some("1830277800"));
    assert!(process.try_wait().is_none(), "still running");
}
