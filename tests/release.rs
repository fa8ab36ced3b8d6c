//! What a release carries, kept in one place: the version is `Cargo.toml`'s, and the chart, the
//! changelog and the licence agree with it.

const MANIFEST: &str = env!("CARGO_MANIFEST_DIR");

fn read(path: &str) -> String {
    std::fs::read_to_string(format!("{MANIFEST}/{path}")).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn the_chart_the_changelog_and_the_licence_follow_the_crate() {
    let version = env!("CARGO_PKG_VERSION");
    let chart: serde_yaml::Value =
        serde_yaml::from_str(&read("charts/dhan-operator/Chart.yaml")).unwrap();
    assert_eq!(
        chart["version"].as_str(),
        Some(version),
        "Chart.yaml version"
    );
    assert_eq!(
        chart["appVersion"].as_str(),
        Some(version),
        "Chart.yaml appVersion"
    );
    assert!(
        read("CHANGELOG.md").contains(&format!("\n## [{version}]")),
        "CHANGELOG.md has a section for {version}"
    );
    assert_eq!(env!("CARGO_PKG_LICENSE"), "Apache-2.0");
    assert_eq!(
        chart["annotations"]["licenses"].as_str(),
        Some("Apache-2.0")
    );
    assert!(
        read("LICENSE")
            .contains("Apache License\n                           Version 2.0, January 2004")
    );
}
