//! `/metrics` behind TLS and the API server's token and access reviews.

use crate::support::{self, Bed, PIN, TOTP_SECRET};
use dhan_operator::crd::Phase;
use kube::Client;
use kube::api::{Api, PostParams};
use serde_json::json;

/// A client for the operator's self-signed metrics port.
fn https_client() -> reqwest::Client {
    reqwest::Client::builder()
        .tls_danger_accept_invalid_certs(true)
        .build()
        .unwrap()
}

#[tokio::test]
async fn secure_metrics_answer_only_callers_the_api_server_authorises() {
    const CLIENT: &str = "1500000004";
    let cp = support::control_plane();
    let bed = Bed::start_with(
        "secure",
        &["--metrics-secure", "--metrics-client-id", "hashed"],
    )
    .await;
    bed.register(CLIENT, PIN).await;
    bed.put_secret("creds", &[("pin", PIN), ("totpSecret", TOTP_SECRET)])
        .await;
    bed.create_account(
        "m",
        json!({ "clientId": CLIENT, "credentialsSecret": "creds" }),
    )
    .await;
    bed.wait_phase("m", Phase::Ready).await;
    // A ServiceAccount identity of this control plane, allowed to get /metrics.
    let reader = cp.service_account_kubeconfig_path("helm-ns", "dhan-operator");
    bind_metrics_reader(&bed.client, "system:serviceaccount:helm-ns:dhan-operator").await;

    let url = support::metrics_url(&bed.operator().output())
        .unwrap()
        .replace("http://", "https://");
    let http = https_client();
    let get = |token: Option<String>| {
        let request = http.get(&url);
        let request = match token {
            Some(token) => request.bearer_auth(token),
            None => request,
        };
        async move { request.send().await.expect("the metrics port answers") }
    };
    assert_eq!(get(None).await.status().as_u16(), 401, "no token");
    assert_eq!(
        get(Some("not-a-token".into())).await.status().as_u16(),
        401,
        "a token the API server does not know"
    );
    let stranger = cp.token_of(&cp.operator_kubeconfig_path());
    assert_eq!(
        get(Some(stranger)).await.status().as_u16(),
        403,
        "a user without get on /metrics"
    );
    let allowed = get(Some(cp.token_of(&reader))).await;
    assert_eq!(allowed.status().as_u16(), 200);
    let text = allowed.text().await.unwrap();
    let hashed = dhan_operator::claims::client_hash(CLIENT);
    assert!(
        text.contains(&format!(
            "dhan_operator_account_ready{{namespace=\"{}\",name=\"m\",client_id=\"{hashed}\"}} 1",
            bed.ns
        )),
        "{text}"
    );
    assert!(!text.contains(CLIENT), "the client ID itself is not shown");

    let probe = http
        .get(url.replace("/metrics", "/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(probe.status().as_u16(), 200, "probes need no token");
    let plain = reqwest::get(url.replace("https://", "http://")).await;
    assert!(
        plain.map_or(true, |r| !r.status().is_success()),
        "no plain HTTP on the secure port"
    );
}

async fn bind_metrics_reader(client: &Client, user: &str) {
    let role: k8s_openapi::api::rbac::v1::ClusterRole = serde_json::from_value(json!({
        "metadata": { "name": "tenancy-metrics-reader" },
        "rules": [{ "nonResourceURLs": ["/metrics"], "verbs": ["get"] }],
    }))
    .unwrap();
    let binding: k8s_openapi::api::rbac::v1::ClusterRoleBinding = serde_json::from_value(json!({
        "metadata": { "name": "tenancy-metrics-reader" },
        "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                     "name": "tenancy-metrics-reader" },
        "subjects": [{ "apiGroup": "rbac.authorization.k8s.io", "kind": "User",
                       "name": user }],
    }))
    .unwrap();
    Api::all(client.clone())
        .create(&PostParams::default(), &role)
        .await
        .unwrap();
    Api::all(client.clone())
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();
}
