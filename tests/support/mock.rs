//! A `dhan-mock` process for one test, and its control endpoint.

use super::ChildProcess;
use serde_json::{Value, json};
use std::time::Duration;

pub const MOCK_BIN: &str = env!("CARGO_BIN_EXE_dhan-mock");

/// A running mock Dhan server; killed on drop.
pub struct MockDhan {
    pub url: String,
    http: reqwest::Client,
    pub process: ChildProcess,
}

impl MockDhan {
    /// Starts a mock on a free port; `args` are extra flags (e.g. `--mint-throttle-seconds`).
    pub async fn start(args: &[&str]) -> MockDhan {
        MockDhan::start_on("127.0.0.1", args).await
    }

    /// Like [`MockDhan::start`], listening on `host` (e.g. where a node's Pods reach the host).
    pub async fn start_on(host: &str, args: &[&str]) -> MockDhan {
        let listen = format!("{host}:0");
        let mut all = vec!["--listen", listen.as_str()];
        all.extend_from_slice(args);
        let process = ChildProcess::spawn(MOCK_BIN, &all, &[("RUST_LOG", "info")]);
        let url = super::wait_for(Duration::from_secs(10), || async {
            process
                .output()
                .lines()
                .find_map(|l| l.strip_prefix("dhan-mock listening on "))
                .map(str::to_owned)
        })
        .await;
        // Served over TLS (`--tls-cert-out FILE`): the control calls trust its certificate.
        let mut http = reqwest::Client::builder();
        if let Some(i) = args.iter().position(|a| *a == "--tls-cert-out") {
            let pem = std::fs::read(args[i + 1]).expect("the mock's certificate");
            http = http.add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap());
        }
        MockDhan {
            url,
            http: http.build().unwrap(),
            process,
        }
    }

    async fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut request = self.http.request(method, format!("{}{path}", self.url));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("mock control call");
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        assert!(status.is_success(), "mock control {path}: {status} {text}");
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }

    /// Registers an account (the `POST /__control/accounts` body).
    pub async fn register(&self, account: Value) {
        self.send(reqwest::Method::POST, "/__control/accounts", Some(account))
            .await;
    }

    /// Mints a Dhan Web (SELF) token as if the user logged in on Dhan Web.
    pub async fn web_token(&self, client_id: &str) -> String {
        let reply = self
            .send(
                reqwest::Method::POST,
                "/__control/web-token",
                Some(json!({ "clientId": client_id })),
            )
            .await;
        reply["accessToken"]
            .as_str()
            .expect("accessToken")
            .to_owned()
    }

    pub async fn revoke(&self, client_id: &str) {
        self.send(
            reqwest::Method::POST,
            "/__control/revoke",
            Some(json!({ "clientId": client_id })),
        )
        .await;
    }

    /// Queues a fault: see dhan-mock's control API.
    pub async fn fault(&self, fault: Value) {
        self.send(reqwest::Method::POST, "/__control/faults", Some(fault))
            .await;
    }

    /// `{currentToken, tokenType, expiresAt, mints, renewals, ...}` of a client.
    pub async fn account(&self, client_id: &str) -> Value {
        self.send(
            reqwest::Method::GET,
            &format!("/__control/accounts/{client_id}"),
            None,
        )
        .await
    }

    /// Every call the mock received, in order.
    pub async fn calls(&self) -> Vec<Value> {
        match self
            .send(reqwest::Method::GET, "/__control/calls", None)
            .await
        {
            Value::Array(calls) => calls,
            other => panic!("calls: {other}"),
        }
    }

    /// Calls to `endpoint` for `client_id`.
    pub async fn calls_to(&self, endpoint: &str, client_id: &str) -> Vec<Value> {
        self.calls()
            .await
            .into_iter()
            .filter(|c| c["endpoint"] == endpoint && c["clientId"] == client_id)
            .collect()
    }
}
