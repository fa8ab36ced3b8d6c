//! The CRDs under crds/ are generated from the Rust types and must not go stale.

#[test]
fn checked_in_crd_matches_the_generated_one() {
    let generated = dhan_operator::crd::crd_yaml();
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/crds/dhanaccounts.yaml");
    let checked_in = std::fs::read_to_string(path).expect("crds/dhanaccounts.yaml exists");
    assert!(
        generated == checked_in,
        "crds/dhanaccounts.yaml is stale: run `make crd` and commit the result"
    );
}

#[test]
fn chart_and_plain_manifests_ship_the_same_crd() {
    let generated = dhan_operator::crd::crd_yaml();
    for copy in [
        "charts/dhan-operator/crds/dhanaccounts.yaml",
        "deploy/crd.yaml",
    ] {
        let path = format!("{}/{copy}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).expect("CRD copy exists");
        assert!(
            text == generated,
            "{copy} is stale: run `make crd` and commit the result"
        );
    }
}

#[test]
fn crd_has_the_fixed_names_and_printer_columns() {
    let crd: serde_json::Value = serde_yaml::from_str(&dhan_operator::crd::crd_yaml()).unwrap();
    assert_eq!(crd["metadata"]["name"], "dhanaccounts.dhan-operator.dev");
    assert_eq!(crd["spec"]["names"]["shortNames"][0], "dhan");
    assert_eq!(crd["spec"]["scope"], "Namespaced");
    let version = &crd["spec"]["versions"][0];
    assert_eq!(version["name"], "v1alpha1");
    let columns: Vec<&str> = version["additionalPrinterColumns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        columns,
        [
            "Client",
            "Phase",
            "Method",
            "Expires",
            "Next Refresh",
            "Age",
            "Message"
        ]
    );
    assert!(version["subresources"]["status"].is_object());
}

#[test]
fn checked_in_notifier_crd_and_its_copies_match_the_generated_one() {
    let generated = dhan_operator::notify::resource::crd_yaml();
    for copy in [
        "crds/dhannotifiers.yaml",
        "charts/dhan-operator/crds/dhannotifiers.yaml",
        "deploy/crd-dhannotifiers.yaml",
    ] {
        let path = format!("{}/{copy}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).expect("notifier CRD copy exists");
        assert!(
            text == generated,
            "{copy} is stale: run `make crd` and commit the result"
        );
    }
}

#[test]
fn notifier_crd_is_namespaced_with_a_status_subresource() {
    let crd: serde_json::Value =
        serde_yaml::from_str(&dhan_operator::notify::resource::crd_yaml()).unwrap();
    assert_eq!(crd["metadata"]["name"], "dhannotifiers.dhan-operator.dev");
    assert_eq!(crd["spec"]["scope"], "Namespaced");
    let version = &crd["spec"]["versions"][0];
    assert_eq!(version["name"], "v1alpha1");
    assert!(version["subresources"]["status"].is_object());
    let spec = &version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"];
    for field in ["telegram", "webhook", "accounts", "events"] {
        assert!(spec[field].is_object(), "spec.{field} in the schema");
    }
}

#[test]
fn checked_in_claim_crds_and_their_copies_match_the_generated_ones() {
    use dhan_operator::claims::resource::{claim_crd_yaml, install_crd_yaml};
    for (plural, generated) in [
        ("dhanclientclaims", claim_crd_yaml()),
        ("dhanoperatorinstalls", install_crd_yaml()),
    ] {
        for copy in [
            format!("crds/{plural}.yaml"),
            format!("charts/dhan-operator/crds/{plural}.yaml"),
            format!("deploy/crd-{plural}.yaml"),
        ] {
            let path = format!("{}/{copy}", env!("CARGO_MANIFEST_DIR"));
            let text = std::fs::read_to_string(&path).expect("claim CRD copy exists");
            assert!(
                text == generated,
                "{copy} is stale: run `make crd` and commit the result"
            );
        }
    }
}

/// Every install must find the claims without being told where: they are cluster-scoped.
#[test]
fn claim_crds_are_cluster_scoped() {
    use dhan_operator::claims::resource::{claim_crd_yaml, install_crd_yaml};
    for yaml in [claim_crd_yaml(), install_crd_yaml()] {
        let crd: serde_json::Value = serde_yaml::from_str(&yaml).unwrap();
        assert_eq!(
            crd["spec"]["scope"], "Cluster",
            "{}",
            crd["metadata"]["name"]
        );
        assert_eq!(crd["spec"]["group"], "dhan-operator.dev");
    }
}
