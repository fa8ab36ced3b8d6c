//! The Grafana dashboard in the chart only queries metrics the operator exports: every
//! expression's metric names are checked against a real scrape of a running operator.

mod support;

use dhan_operator::crd::Phase;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::time::Duration;
use support::{Bed, PIN, TOTP_SECRET};

const DASHBOARD: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/charts/dhan-operator/files/grafana-dashboard.json"
);

/// PromQL words that are not metric names.
const PROMQL: &[&str] = &[
    "sum",
    "count",
    "avg",
    "min",
    "max",
    "by",
    "without",
    "rate",
    "increase",
    "irate",
    "time",
    "histogram_quantile",
    "label_values",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "topk",
    "bottomk",
    "clamp_min",
    "clamp_max",
    "abs",
    "delta",
    "deriv",
    "vector",
    "scalar",
    "sort",
    "sort_desc",
    "le",
];

/// Every PromQL expression of the dashboard: panel targets and query variables.
fn expressions(dashboard: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            out.push(target["expr"].as_str().unwrap().to_string());
        }
    }
    for variable in dashboard["templating"]["list"].as_array().unwrap() {
        if variable["type"] == "query" {
            let query = variable["query"]["query"].as_str().unwrap();
            // label_values(metric, label): only the first argument names a metric.
            let metric = query
                .trim_start_matches("label_values(")
                .split(',')
                .next()
                .unwrap();
            out.push(metric.to_string());
        }
    }
    out
}

/// The metric names an expression reads: identifiers outside strings, label matchers, ranges
/// and `by (...)`/`without (...)` label lists that are neither function calls nor keywords.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    let mut label_list = false;
    while i < chars.len() {
        let c = chars[i];
        let skip_to = |close: char| {
            (i + 1..chars.len())
                .find(|&j| chars[j] == close)
                .unwrap_or(chars.len())
        };
        match c {
            '"' => i = skip_to('"'),
            '{' => i = skip_to('}'),
            '[' => i = skip_to(']'),
            '(' if label_list => {
                i = skip_to(')');
                label_list = false;
            }
            c if c.is_ascii_alphabetic() || c == '_' || c == ':' || c == '$' => {
                let start = i;
                while i + 1 < chars.len()
                    && (chars[i + 1].is_ascii_alphanumeric() || matches!(chars[i + 1], '_' | ':'))
                {
                    i += 1;
                }
                let word: String = chars[start..=i].iter().collect();
                let next = chars[i + 1..].iter().find(|c| !c.is_whitespace());
                if word == "by" || word == "without" {
                    label_list = true;
                } else if next != Some(&'(')
                    && !word.starts_with('$')
                    && !PROMQL.contains(&word.as_str())
                {
                    names.insert(word);
                }
            }
            _ => {}
        }
        i += 1;
    }
    names
}

/// Sample names in an OpenMetrics scrape, plus the sample names every declared family will
/// have (a counter with no increments yet still declares itself).
fn exported(scrape: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in scrape.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            let (Some(family), Some(kind)) = (parts.next(), parts.next()) else {
                continue;
            };
            let suffixes: &[&str] = match kind {
                "counter" => &["_total"],
                "histogram" => &["_bucket", "_sum", "_count"],
                _ => &[""],
            };
            for suffix in suffixes {
                names.insert(format!("{family}{suffix}"));
            }
        } else if let Some(name) = line
            .split(['{', ' '])
            .next()
            .filter(|n| !n.is_empty() && !n.starts_with('#'))
        {
            names.insert(name.to_string());
        }
    }
    names
}

#[test]
fn metric_names_are_read_from_expressions() {
    let names = metric_names(
        "histogram_quantile(0.95, sum by (le, method) (rate(dhan_operator_refresh_duration_seconds_bucket{namespace=~\"$namespace\"}[$__rate_interval])))",
    );
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        ["dhan_operator_refresh_duration_seconds_bucket"]
    );
    let names = metric_names("dhan_operator_account_token_expiry_timestamp_seconds - time()");
    assert_eq!(names.len(), 1);
}

#[tokio::test]
async fn every_dashboard_query_names_an_exported_metric() {
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(DASHBOARD).unwrap()).unwrap();
    let bed = Bed::start_with("dashboard", &[]).await;
    bed.register("1700000001", PIN).await;
    bed.put_secret("d-dhan", &[("pin", PIN), ("totpSecret", TOTP_SECRET)])
        .await;
    bed.create_account(
        "d",
        json!({ "clientId": "1700000001", "credentialsSecret": "d-dhan" }),
    )
    .await;
    bed.wait_phase("d", Phase::Ready).await;
    let url = support::wait_for(Duration::from_secs(10), || async {
        support::metrics_url(&bed.operator().output())
    })
    .await;
    let scrape = support::wait_for(Duration::from_secs(20), || async {
        let text = reqwest::get(&url).await.ok()?.text().await.ok()?;
        text.contains("dhan_operator_account_ready{")
            .then_some(text)
    })
    .await;
    let exported = exported(&scrape);

    let expressions = expressions(&dashboard);
    assert!(expressions.len() >= 10, "{expressions:?}");
    let mut checked = BTreeSet::new();
    for expr in &expressions {
        let names = metric_names(expr);
        assert!(!names.is_empty(), "no metric in {expr:?}");
        for name in names {
            assert!(
                exported.contains(&name),
                "{name} (in {expr:?}) is not exported; the scrape has {exported:?}"
            );
            checked.insert(name);
        }
    }
    // The panels the dashboard promises.
    for promised in [
        "dhan_operator_account_phase",
        "dhan_operator_account_token_expiry_timestamp_seconds",
        "dhan_operator_dhan_calls_total",
        "dhan_operator_refresh_duration_seconds_bucket",
        "dhan_operator_account_consents_today",
    ] {
        assert!(checked.contains(promised), "no panel reads {promised}");
    }
}
