//! `Bed`: one test's namespace on the shared control plane, its own `dhan-mock` and (usually) an
//! operator process watching only that namespace, plus helpers to drive and inspect them.

use super::{ChildProcess, MockDhan};
use dhan_operator::crd::{DhanAccount, DhanAccountStatus, Phase};
use k8s_openapi::api::core::v1::{Event as CoreEvent, Secret};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use std::time::Duration;

pub const PIN: &str = "482913";
pub const TOTP_SECRET: &str = "JBSWY3DPEHPK3PXPJBSWY3DP";
/// Default wait for a phase change.
pub const WAIT: Duration = Duration::from_secs(60);

pub struct Bed {
    pub client: Client,
    pub ns: String,
    pub mock: MockDhan,
    /// The operator watching `ns`, unless the test starts its own.
    pub operator: Option<ChildProcess>,
}

impl Bed {
    /// Namespace `e2e-*`, a mock with a 3 s mint throttle and an operator with a 5 s minimum
    /// mint interval.
    pub async fn start() -> Bed {
        Bed::start_with("e2e", &[]).await
    }

    /// Like [`Bed::start`] with namespace prefix `prefix` and extra operator flags.
    pub async fn start_with(prefix: &str, operator_args: &[&str]) -> Bed {
        let mut bed = Bed::without_operator(prefix).await;
        bed.operator = Some(bed.spawn_operator(operator_args, &[]));
        bed
    }

    /// Namespace and mock only; start operators with [`Bed::spawn_operator`].
    pub async fn without_operator(prefix: &str) -> Bed {
        let cp = super::control_plane();
        let client = cp.client().await;
        super::install_crd(&client).await;
        let ns = super::namespace(&client, prefix).await;
        let mock = MockDhan::start(&["--mint-throttle-seconds", "3"]).await;
        Bed {
            client,
            ns,
            mock,
            operator: None,
        }
    }

    /// Starts an operator for this namespace and mock (`--min-mint-interval 5s`), with extra
    /// flags and environment, as the ServiceAccount of the chart installed into this namespace
    /// for these flags (see [`super::start_operator`]), unless `env` names another `KUBECONFIG`.
    pub fn spawn_operator(&self, extra_args: &[&str], env: &[(&str, &str)]) -> ChildProcess {
        let mut args = vec![
            "--namespace",
            &self.ns,
            "--metrics-addr",
            "127.0.0.1:0",
            "--dhan-auth-url",
            &self.mock.url,
            "--dhan-api-url",
            &self.mock.url,
            "--min-mint-interval",
            "5s",
        ];
        args.extend_from_slice(extra_args);
        super::start_operator(&args, env)
    }

    pub fn operator(&self) -> &ChildProcess {
        self.operator.as_ref().expect("this bed runs no operator")
    }

    pub fn accounts(&self) -> Api<DhanAccount> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    pub fn secrets(&self) -> Api<Secret> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    /// Registers `client_id` at the mock with `pin` and [`TOTP_SECRET`].
    pub async fn register(&self, client_id: &str, pin: &str) {
        self.mock
            .register(json!({ "clientId": client_id, "pin": pin, "totpSecret": TOTP_SECRET }))
            .await;
    }

    pub async fn put_secret(&self, name: &str, data: &[(&str, &str)]) {
        let data: serde_json::Map<String, Value> = data
            .iter()
            .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
            .collect();
        let secret: Secret = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": { "name": name }, "stringData": data,
        }))
        .unwrap();
        self.secrets()
            .patch(
                name,
                &PatchParams::apply("e2e").force(),
                &Patch::Apply(&secret),
            )
            .await
            .unwrap();
    }

    pub async fn create_account(&self, name: &str, spec: Value) -> DhanAccount {
        let account: DhanAccount = serde_json::from_value(json!({
            "apiVersion": "dhan-operator.dev/v1alpha1", "kind": "DhanAccount",
            "metadata": { "name": name }, "spec": spec,
        }))
        .unwrap();
        self.accounts()
            .create(&PostParams::default(), &account)
            .await
            .unwrap()
    }

    /// Merge-patches the account's spec.
    pub async fn patch_spec(&self, name: &str, spec: Value) {
        self.accounts()
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(&json!({ "spec": spec })),
            )
            .await
            .unwrap();
    }

    #[track_caller]
    pub fn wait_phase<'a>(
        &'a self,
        name: &'a str,
        phase: Phase,
    ) -> impl std::future::Future<Output = DhanAccount> + 'a {
        self.wait_phase_for(name, phase, WAIT)
    }

    #[track_caller]
    pub fn wait_phase_for<'a>(
        &'a self,
        name: &'a str,
        phase: Phase,
        timeout: Duration,
    ) -> impl std::future::Future<Output = DhanAccount> + 'a {
        self.wait_status(name, timeout, move |s| s.phase == Some(phase))
    }

    /// Waits until the account's status satisfies `check`.
    #[track_caller]
    pub fn wait_status<'a>(
        &'a self,
        name: &'a str,
        timeout: Duration,
        check: impl Fn(&DhanAccountStatus) -> bool + 'a,
    ) -> impl std::future::Future<Output = DhanAccount> + 'a {
        let accounts = self.accounts();
        let check = std::rc::Rc::new(check);
        super::wait_for(timeout, move || {
            let accounts = accounts.clone();
            let check = check.clone();
            async move {
                let account = accounts.get(name).await.ok()?;
                check(account.status.as_ref()?).then_some(account)
            }
        })
    }

    pub async fn status(&self, name: &str) -> DhanAccountStatus {
        self.accounts()
            .get(name)
            .await
            .unwrap()
            .status
            .unwrap_or_default()
    }

    pub async fn token_in_secret(&self, name: &str) -> String {
        let secret = self.secrets().get(name).await.unwrap();
        let data = secret.data.unwrap();
        String::from_utf8(data["DHAN_ACCESS_TOKEN"].0.clone()).unwrap()
    }

    pub async fn request_refresh(&self, name: &str, value: &str) {
        let patch = json!({ "metadata": { "annotations": {
            "dhan-operator.dev/refresh-requested": value } } });
        self.accounts()
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
    }

    pub async fn events(&self) -> Vec<CoreEvent> {
        Api::<CoreEvent>::namespaced(self.client.clone(), &self.ns)
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
    }

    /// The first event with `reason` in the namespace, waited for up to 20 s.
    pub async fn wait_event(&self, reason: &str) -> CoreEvent {
        super::wait_for(Duration::from_secs(20), || async {
            self.events()
                .await
                .into_iter()
                .find(|e| e.reason.as_deref() == Some(reason))
        })
        .await
    }

    /// Everything the operator printed, its events and the accounts' status must be free of
    /// the given secrets.
    pub async fn assert_nothing_leaks(&self, secrets: &[&str]) {
        let output = self.operator().output();
        let events = serde_json::to_string(&self.events().await).unwrap();
        let statuses =
            serde_json::to_string(&self.accounts().list(&ListParams::default()).await.unwrap())
                .unwrap();
        for (i, secret) in secrets.iter().enumerate() {
            for (what, text) in [
                ("operator output", &output),
                ("events", &events),
                ("status", &statuses),
            ] {
                // Which one, and its line with the value masked: enough to find the leak
                // without printing it.
                if let Some(line) = text.lines().find(|l| contains_word(l, secret)) {
                    panic!(
                        "{what} leaks secret #{i}: {}",
                        line.replace(secret, "<secret>")
                    );
                }
            }
        }
    }

    /// The `Ready` condition's status ("True"/"False"), if any.
    pub async fn ready_condition(&self, name: &str) -> Option<String> {
        self.status(name)
            .await
            .conditions
            .iter()
            .find(|c| c.type_ == "Ready")
            .map(|c| c.status.clone())
    }
}

/// Whether `secret` occurs in `text` as a whole word: not inside a longer run of letters and
/// digits. A six-digit TOTP code is otherwise found by chance in a timestamp's microseconds or a
/// resource version, while a leaked one always stands on its own ("code 123456", "\"123456\"").
pub fn contains_word(text: &str, secret: &str) -> bool {
    let alphanumeric_at = |i: usize| {
        text[i..]
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
    };
    let before = |i: usize| {
        text[..i]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_ascii_alphanumeric())
    };
    text.match_indices(secret)
        .any(|(i, _)| !before(i) && !alphanumeric_at(i + secret.len()))
}
