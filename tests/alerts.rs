//! The chart's alert rules, as Prometheus evaluates them: the PrometheusRule the real chart
//! installs (real Helm, into the test control plane with a stand-in for the Prometheus
//! Operator's CRD) is handed to `promtool test rules` (Prometheus's own rule evaluator, from
//! Debian's prometheus package; `hack/install-testbed.sh` puts it in the cache) with series shaped
//! like the operator's metrics: a planned weekend lapse alerts nobody, an unplanned one does.

mod support;

use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::process::Command;
use support::{control_plane, helm_install};

const RUNBOOKS: &str = "https://github.com/dhan-operator/dhan-operator/blob/main/docs/runbooks.md";

fn promtool() -> PathBuf {
    let cache = std::env::var_os("DHAN_OPERATOR_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache/dhan-operator")
        });
    let promtool = cache.join("bin/promtool");
    assert!(
        promtool.exists(),
        "{} is missing: run hack/install-testbed.sh (or `make testbed`)",
        promtool.display()
    );
    promtool
}

/// The Prometheus Operator's PrometheusRule kind, schema-less: enough for Helm to install the
/// chart's object and for the test to read it back.
const PROMETHEUS_RULE_CRD: &str = r#"{
  "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
  "metadata": { "name": "prometheusrules.monitoring.coreos.com" },
  "spec": {
    "group": "monitoring.coreos.com", "scope": "Namespaced",
    "names": { "kind": "PrometheusRule", "plural": "prometheusrules", "singular": "prometheusrule", "listKind": "PrometheusRuleList" },
    "versions": [{ "name": "v1", "served": true, "storage": true,
      "schema": { "openAPIV3Schema": { "type": "object", "x-kubernetes-preserve-unknown-fields": true } } }]
  }
}"#;

const SERVICE_MONITOR_CRD: &str = r#"{
  "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
  "metadata": { "name": "servicemonitors.monitoring.coreos.com" },
  "spec": {
    "group": "monitoring.coreos.com", "scope": "Namespaced",
    "names": { "kind": "ServiceMonitor", "plural": "servicemonitors", "singular": "servicemonitor", "listKind": "ServiceMonitorList" },
    "versions": [{ "name": "v1", "served": true, "storage": true,
      "schema": { "openAPIV3Schema": { "type": "object", "x-kubernetes-preserve-unknown-fields": true } } }]
  }
}"#;

/// Installs the chart as release `release` with `values` (no operator Pod) into a namespace of
/// its own, with stand-ins for the Prometheus Operator's CRDs; returns the client and namespace.
async fn install(release: &str, values: Value) -> (kube::Client, String) {
    let cp = control_plane();
    for crd in [PROMETHEUS_RULE_CRD, SERVICE_MONITOR_CRD] {
        let out = cp.kubectl_with_stdin(&["apply", "-f", "-"], crd);
        assert!(out.status.success(), "{}", support::describe(&out));
    }
    // The kinds must be served before Helm maps them.
    let crds = cp.kubectl(&[
        "wait",
        "--for=condition=Established",
        "crd/prometheusrules.monitoring.coreos.com",
        "crd/servicemonitors.monitoring.coreos.com",
        "--timeout=30s",
    ]);
    assert!(crds.status.success(), "{}", support::describe(&crds));
    let client = cp.client().await;
    let namespace = support::namespace(&client, release).await;
    let mut values = values;
    values["replicaCount"] = json!(0);
    values["tradingCalendar"] = json!({ "enabled": false });
    helm_install(release, &namespace, &values);
    (client, namespace)
}

fn monitoring(client: &kube::Client, namespace: &str, kind: &str) -> Api<DynamicObject> {
    let resource =
        ApiResource::from_gvk(&GroupVersionKind::gvk("monitoring.coreos.com", "v1", kind));
    Api::namespaced_with(client.clone(), namespace, &resource)
}

/// The chart's rule groups, as installed with `metrics.prometheusRule.enabled`.
async fn chart_rules() -> Value {
    let (client, namespace) = install(
        "alerts",
        json!({ "metrics": { "prometheusRule": { "enabled": true } } }),
    )
    .await;
    let rule = monitoring(&client, &namespace, "PrometheusRule")
        .get("alerts-dhan-operator")
        .await
        .unwrap();
    rule.data["spec"].clone()
}

/// One account's series: `ready`, its phase, its expiry and next refresh (seconds since the
/// evaluation's start), and until when its lapse is planned, if it is.
fn account(
    name: &str,
    ready: u8,
    phase: &str,
    expiry: i64,
    next_refresh: i64,
    planned_until: Option<i64>,
) -> Vec<Value> {
    let labels = format!(r#"namespace="trading",name="{name}",client_id="1000000001""#);
    let constant = |metric: &str, value: i64| json!({ "series": format!("{metric}{{{labels}}}"), "values": format!("{value}x40") });
    let mut series = vec![
        constant("dhan_operator_account_ready", i64::from(ready)),
        json!({
            "series": format!(r#"dhan_operator_account_phase{{{labels},phase="{phase}"}}"#),
            "values": "1x40",
        }),
        constant(
            "dhan_operator_account_token_expiry_timestamp_seconds",
            expiry,
        ),
        constant(
            "dhan_operator_account_next_refresh_timestamp_seconds",
            next_refresh,
        ),
    ];
    if let Some(until) = planned_until {
        series.push(constant(
            "dhan_operator_account_lapse_planned_until_timestamp_seconds",
            until,
        ));
    }
    series
}

fn alert(name: &str, severity: &str) -> Value {
    json!({ "exp_labels": { "namespace": "trading", "name": name,
                            "client_id": "1000000001", "severity": severity } })
}

#[tokio::test]
async fn a_planned_weekend_lapse_alerts_nobody_and_an_unplanned_one_does() {
    let promtool = promtool();
    let spec = chart_rules().await;

    // Every alert links its runbook in docs/runbooks.md, whose headings it names.
    let runbooks =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/runbooks.md")).unwrap();
    let mut groups = spec["groups"].clone();
    for group in groups.as_array_mut().unwrap() {
        for rule in group["rules"].as_array_mut().unwrap() {
            let name = rule["alert"].as_str().unwrap().to_string();
            let url = rule["annotations"]["runbook_url"]
                .as_str()
                .unwrap_or_default();
            assert_eq!(url, format!("{RUNBOOKS}#{}", name.to_lowercase()), "{name}");
            assert!(
                runbooks.contains(&format!("\n## {name}\n")),
                "{name} in docs/runbooks.md"
            );
            // The texts are templates for people; the test is about when alerts fire.
            rule.as_object_mut().unwrap().remove("annotations");
        }
    }

    const DAY: i64 = 86_400;
    let mut series = Vec::new();
    // Saturday: tradingDaysOnly let the token lapse; the next refresh is Monday.
    series.extend(account(
        "weekend",
        0,
        "Expired",
        -3600,
        2 * DAY,
        Some(2 * DAY),
    ));
    // The same lapse, no longer planned (its refresh was due and did not come).
    series.extend(account("overdue", 0, "Expired", -3600, 300, Some(300)));
    // Not ready and nothing planned: Failed.
    series.extend(account("broken", 0, "Failed", -3600, 2 * DAY, None));
    // Ready, expiring in 30 minutes; a planned lapse follows (Friday night), or none is planned.
    series.extend(account("friday", 1, "Ready", 1800, 2 * DAY, Some(2 * DAY)));
    series.extend(account("stuck", 1, "Ready", 1800, 2 * DAY, None));
    // Suspended on purpose.
    series.extend(account("paused", 0, "Suspended", -3600, 2 * DAY, None));

    // The trading calendar: runs out in 20 days (an alert), or in a year (none).
    series.push(json!({
        "series": "dhan_operator_trading_calendar_valid_through_timestamp_seconds{instance=\"ending\"}",
        "values": format!("{}x120", 20 * DAY),
    }));
    series.push(json!({
        "series": "dhan_operator_trading_calendar_valid_through_timestamp_seconds{instance=\"fresh\"}",
        "values": format!("{}x120", 365 * DAY),
    }));

    // API keys: one ends in 20 days (an alert), one in 200 (none).
    for (name, days) in [("key-ending", 20), ("key-fresh", 200)] {
        series.push(json!({
            "series": format!(
                "dhan_operator_account_api_key_expiry_timestamp_seconds{{namespace=\"trading\",name=\"{name}\"}}"
            ),
            "values": format!("{}x120", days * DAY),
        }));
    }

    let tests = json!({
        "rule_files": ["rules.json"],
        "evaluation_interval": "1m",
        "tests": [{
            "interval": "1m",
            "input_series": series,
            "alert_rule_test": [
                { "eval_time": "15m", "alertname": "DhanAccountNotReady",
                  "exp_alerts": [alert("overdue", "warning"), alert("broken", "warning")] },
                // A dead token with no refresh before it counts too; a planned lapse and a
                // suspended account do not.
                { "eval_time": "10m", "alertname": "DhanTokenExpiringWithoutRefresh",
                  "exp_alerts": [alert("overdue", "critical"), alert("broken", "critical"),
                                 alert("stuck", "critical")] },
                { "eval_time": "90m", "alertname": "DhanTradingCalendarEnding",
                  "exp_alerts": [{ "exp_labels": { "instance": "ending", "severity": "warning" } }] },
                { "eval_time": "90m", "alertname": "DhanApiKeyExpiring",
                  "exp_alerts": [{ "exp_labels": { "namespace": "trading", "name": "key-ending",
                                                   "severity": "warning" } }] },
            ],
        }],
    });
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("rules.json"),
        json!({ "groups": groups }).to_string(),
    )
    .unwrap();
    std::fs::write(dir.path().join("tests.json"), tests.to_string()).unwrap();
    let out = Command::new(&promtool)
        .current_dir(dir.path())
        .args(["test", "rules", "tests.json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "promtool test rules:\n{}",
        support::describe(&out)
    );
}

/// With secure metrics the ServiceMonitor authenticates with a token of the chart's own scraper
/// ServiceAccount (the `authorization` field, not the deprecated `bearerTokenFile`), which may
/// only `get` /metrics; it verifies a CA-issued certificate (`metrics.secure.tlsSecret`) for the
/// Service's name, and accepts the operator's self-signed one only without it.
#[tokio::test]
async fn the_service_monitor_scrapes_with_a_token_of_its_own_and_verifies_a_ca_certificate() {
    use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
    use k8s_openapi::api::rbac::v1::ClusterRoleBinding;
    for (release, tls_secret) in [("monitor-ca", "metrics-tls"), ("monitor-self", "")] {
        let (client, namespace) = install(
            release,
            json!({ "metrics": {
                "serviceMonitor": { "enabled": true },
                "secure": { "enabled": true, "tlsSecret": tls_secret },
            } }),
        )
        .await;
        let fullname = format!("{release}-dhan-operator");
        let monitor = monitoring(&client, &namespace, "ServiceMonitor")
            .get(&fullname)
            .await
            .unwrap();
        let endpoint = &monitor.data["spec"]["endpoints"][0];
        assert_eq!(endpoint["scheme"], "https", "{endpoint}");
        assert!(endpoint.get("bearerTokenFile").is_none(), "{endpoint}");
        let scraper = format!("{fullname}-metrics-scraper");
        assert_eq!(
            endpoint["authorization"],
            json!({ "type": "Bearer", "credentials": { "name": scraper, "key": "token" } })
        );
        let tls = &endpoint["tlsConfig"];
        if tls_secret.is_empty() {
            assert_eq!(tls, &json!({ "insecureSkipVerify": true }));
        } else {
            assert_eq!(
                tls,
                &json!({
                    "ca": { "secret": { "name": tls_secret, "key": "ca.crt" } },
                    "serverName": format!("{fullname}-metrics.{namespace}.svc"),
                })
            );
        }
        // The scraper's identity: its own ServiceAccount and token, bound to the reader role.
        Api::<ServiceAccount>::namespaced(client.clone(), &namespace)
            .get(&scraper)
            .await
            .unwrap();
        let token = Api::<Secret>::namespaced(client.clone(), &namespace)
            .get(&scraper)
            .await
            .unwrap();
        assert_eq!(
            token.type_.as_deref(),
            Some("kubernetes.io/service-account-token")
        );
        let binding = Api::<ClusterRoleBinding>::all(client.clone())
            .get(&scraper)
            .await
            .unwrap();
        assert_eq!(binding.role_ref.name, format!("{fullname}-metrics-reader"));
        let subjects = binding.subjects.unwrap_or_default();
        assert_eq!(subjects.len(), 1);
        assert_eq!(subjects[0].name, scraper);
        assert_eq!(subjects[0].namespace.as_deref(), Some(namespace.as_str()));
    }
}
