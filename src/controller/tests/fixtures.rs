//! A reconciler on a fake API server and a scripted Dhan, in virtual time: tokio's clock is
//! paused, and the operator's clock follows it.

use super::fake_api::FakeApi;
use crate::calendar_file::CalendarInForce;
use crate::claims::{ClaimSettings, Claims};
use crate::clock::{Clock, TokioClock};
use crate::controller::login::{LoginSettings, LoginSlots};
use crate::controller::login_job::LoginJobSettings;
use crate::controller::{Context, reconcile};
use crate::crd::{DhanAccount, DhanAccountStatus};
use crate::decision::Limits;
use crate::decision::calendar::TradingCalendar;
use crate::dhan::api::{Call, DhanApi};
use crate::dhan::jwt::testing::jwt;
use crate::dhan::{AccessToken, DhanError, IpInfo, IssuedToken, Profile};
use crate::metrics::Metrics;
use crate::rate_limit::RateLimiter;
use chrono::{DateTime, Utc};
use kube::runtime::events::Reporter;
use kube::runtime::reflector::{self, store::Writer};
use kube::runtime::watcher;
use serde_json::{Value, json};
use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub const NS: &str = "trading";
pub const PIN: &str = "482913";
pub const TOTP_SECRET: &str = "JBSWY3DPEHPK3PXPJBSWY3DP";

/// What the scripted Dhan does with a mint.
#[derive(Clone, Debug)]
pub enum Mint {
    Issue,
    Fail(DhanError),
    /// The answer is lost (a timeout on our side) but Dhan carried the mint out: the previous
    /// token is revoked and the new one goes nowhere.
    IssueButTimeOut,
    /// A token that is not a readable JWT; only Dhan's `expiryTime` says when it expires.
    IssueOpaque,
    /// Dhan carries the mint out (the previous token is revoked) and the answer never comes:
    /// the operator dies waiting for it (its reconcile is dropped).
    IssueAndHang,
    /// Dhan carries the mint out, but its answer reaches us as this error (a connection reset,
    /// a 200 without a token).
    IssueButAnswer(DhanError),
}

#[derive(Default)]
struct DhanState {
    mints: VecDeque<Mint>,
    /// Answers of the next profile calls, whatever the token.
    profiles: VecDeque<DhanError>,
    calls: Vec<(&'static str, DateTime<Utc>)>,
    live: HashSet<String>,
    serial: u64,
}

/// A Dhan that issues 24-hour JWTs, revokes the previous token on each mint (docs/dhan-api.md
/// §1), and answers mints from a script (then `Issue`).
pub struct FakeDhan {
    clock: Arc<dyn Clock>,
    state: Mutex<DhanState>,
}

impl FakeDhan {
    pub fn script(&self, mints: impl IntoIterator<Item = Mint>) {
        self.state.lock().unwrap().mints.extend(mints);
    }

    /// The next profile calls fail with these errors, in order, whether the token is live or
    /// not; then the token decides.
    pub fn script_profiles(&self, errors: impl IntoIterator<Item = DhanError>) {
        self.state.lock().unwrap().profiles.extend(errors);
    }

    /// Calls so far, by endpoint label.
    pub fn calls(&self, endpoint: &str) -> Vec<DateTime<Utc>> {
        let state = self.state.lock().unwrap();
        state
            .calls
            .iter()
            .filter(|(e, _)| *e == endpoint)
            .map(|(_, t)| *t)
            .collect()
    }

    pub fn all_calls(&self) -> usize {
        self.state.lock().unwrap().calls.len()
    }

    /// Makes `token` the client's live token (a web token issued by Dhan Web).
    pub fn accept(&self, token: &str) {
        let mut state = self.state.lock().unwrap();
        state.live.clear();
        state.live.insert(token.to_string());
    }

    /// Whether Dhan accepts `token`.
    pub fn is_live(&self, token: &str) -> bool {
        self.state.lock().unwrap().live.contains(token)
    }

    fn log(&self, endpoint: &'static str) {
        let now = self.clock.now();
        self.state.lock().unwrap().calls.push((endpoint, now));
    }

    fn issue(&self, consumer: &str, client: &str) -> IssuedToken {
        let now = self.clock.now();
        let mut state = self.state.lock().unwrap();
        state.serial += 1;
        let exp = now + chrono::Duration::hours(24);
        let token = jwt(json!({
            "iss": "dhan", "iat": now.timestamp(), "exp": exp.timestamp(),
            "tokenConsumerType": consumer, "dhanClientId": client, "n": state.serial,
        }));
        state.live.clear();
        state.live.insert(token.clone());
        IssuedToken {
            token: AccessToken::from(token),
            expires_at: chrono::DateTime::from_timestamp(exp.timestamp(), 0).unwrap(),
            issued_at: chrono::DateTime::from_timestamp(now.timestamp(), 0),
            consumer_type: Some(consumer.into()),
            client_name: None,
        }
    }

    fn mint(&self, consumer: &str, client: &str) -> Result<IssuedToken, DhanError> {
        let next = self.state.lock().unwrap().mints.pop_front();
        match next.unwrap_or(Mint::Issue) {
            Mint::Issue => Ok(self.issue(consumer, client)),
            Mint::Fail(error) => Err(error),
            Mint::IssueButTimeOut => {
                self.issue(consumer, client);
                Err(DhanError::Timeout)
            }
            Mint::IssueAndHang => {
                self.issue(consumer, client);
                Err(DhanError::Network {
                    detail: "hang".into(),
                })
            }
            Mint::IssueButAnswer(error) => {
                self.issue(consumer, client);
                Err(error)
            }
            Mint::IssueOpaque => {
                let mut issued = self.issue(consumer, client);
                let opaque = format!("opaque-{}", issued.token.expose().len());
                let mut state = self.state.lock().unwrap();
                state.live.clear();
                state.live.insert(opaque.clone());
                issued.token = AccessToken::from(opaque);
                issued.issued_at = None;
                Ok(issued)
            }
        }
    }
}

impl DhanApi for FakeDhan {
    fn generate_access_token<'a>(
        &'a self,
        client_id: &'a str,
        pin: &'a str,
        _totp: &'a str,
    ) -> Call<'a, IssuedToken> {
        self.log("generateAccessToken");
        let result = if pin == PIN {
            self.mint("APP", client_id)
        } else {
            Err(DhanError::InvalidPin {
                message: "Invalid Pin".into(),
            })
        };
        if matches!(&result, Err(DhanError::Network { detail }) if detail == "hang") {
            return Box::pin(std::future::pending());
        }
        Box::pin(async move { result })
    }

    fn renew_token<'a>(&'a self, _: &'a str, token: &'a AccessToken) -> Call<'a, IssuedToken> {
        self.log("RenewToken");
        let live = self.state.lock().unwrap().live.contains(token.expose());
        let client = token.claims().ok().and_then(|c| c.client_id);
        let result = if live {
            self.mint("SELF", client.as_deref().unwrap_or("1000000001"))
        } else {
            Err(DhanError::TokenDead {
                signal: "DH-901".into(),
                message: "expired".into(),
            })
        };
        Box::pin(async move { result })
    }

    fn profile<'a>(&'a self, token: &'a AccessToken) -> Call<'a, Profile> {
        self.log("profile");
        let mut state = self.state.lock().unwrap();
        let scripted = state.profiles.pop_front();
        let live = state.live.contains(token.expose());
        drop(state);
        let result = if let Some(error) = scripted {
            Err(error)
        } else if live {
            Ok(Profile {
                client_id: Some("1000000001".into()),
                ..Profile::default()
            })
        } else {
            Err(DhanError::TokenDead {
                signal: "DH-906 Invalid Token".into(),
                message: "Invalid Token".into(),
            })
        };
        Box::pin(async move { result })
    }

    fn generate_consent<'a>(&'a self, _: &'a str, _: &'a str, _: &'a str) -> Call<'a, String> {
        self.log("generate-consent");
        let consent = format!("consent-{}", self.calls("generate-consent").len());
        Box::pin(async move { Ok(consent) })
    }

    fn consent_login_url(&self, consent_id: &str) -> String {
        format!("https://auth.example/login?consentAppId={consent_id}")
    }

    fn consume_consent<'a>(&'a self, _: &'a str, _: &'a str, _: &'a str) -> Call<'a, IssuedToken> {
        self.log("consumeApp-consent");
        let result = self.mint("APP", "1000000001");
        Box::pin(async move { result })
    }

    fn ip_info<'a>(&'a self, _: &'a AccessToken) -> Call<'a, IpInfo> {
        self.log("getIP");
        Box::pin(async {
            Ok(IpInfo {
                primary_ip: Some("203.0.113.7".into()),
                ..IpInfo::default()
            })
        })
    }
}

/// A fresh operator process's shared state, on `api` and `dhan`.
pub(crate) fn context(
    api: &FakeApi,
    dhan: Arc<dyn DhanApi>,
    clock: Arc<dyn Clock>,
    browser_logins: bool,
    store: kube::runtime::reflector::Store<DhanAccount>,
) -> Context {
    Context {
        reporter: Reporter {
            controller: "dhan-operator".into(),
            instance: None,
        },
        client: api.client(),
        dhan,
        clock: clock.clone(),
        calendar: CalendarInForce::default(),
        limiter: RateLimiter::new(1000.0),
        limits: Limits {
            min_mint_interval: Duration::from_secs(125),
            max_failed_logins: 3,
            refresh_spread: Duration::ZERO,
            midnight_margin: crate::dhan::ist::MIDNIGHT_MARGIN,
        },
        store,
        index: Arc::new(crate::controller::index::AccountIndex::new(clock.clone())),
        metrics: Arc::new(Metrics::default()),
        login: LoginSettings {
            enabled: browser_logins,
            job: LoginJobSettings::new("op:1", "chromium:1", Duration::from_secs(120)),
            max_concurrent: 4,
        },
        logins: LoginSlots::new(4),
        memos: Default::default(),
        own_writes: Default::default(),
        leadership: None,
        dhan_timeout: Duration::from_secs(20),
        claims: None,
        rollouts: false,
        sync_pods: false,
        health: Default::default(),
    }
}

/// The reconciler, a fake API server and a scripted Dhan.
pub struct Bench {
    pub api: FakeApi,
    pub dhan: Arc<FakeDhan>,
    pub ctx: Arc<Context>,
    writer: Mutex<Writer<DhanAccount>>,
}

/// The client-ID claim of `client_id`, cluster-scoped.
pub fn claim_path(client_id: &str) -> String {
    format!(
        "/apis/dhan-operator.dev/v1alpha1/dhanclientclaims/{}",
        crate::claims::claim_name(client_id)
    )
}

/// The heartbeat of install `install`, cluster-scoped.
pub fn install_path(install: &str) -> String {
    format!(
        "/apis/dhan-operator.dev/v1alpha1/dhanoperatorinstalls/{}",
        crate::claims::install_name(install)
    )
}

pub fn account_path(name: &str) -> String {
    format!("/apis/dhan-operator.dev/v1alpha1/namespaces/{NS}/dhanaccounts/{name}")
}

pub fn secret_path(name: &str) -> String {
    format!("/api/v1/namespaces/{NS}/secrets/{name}")
}

impl Bench {
    /// A bench whose clock starts at `start` (tokio's time must be paused).
    pub fn at(start: &str) -> Bench {
        Bench::new(start, false)
    }

    /// A bench whose operator uses `calendar` as its trading calendar.
    pub fn with_calendar(start: &str, calendar: TradingCalendar) -> Bench {
        let mut bench = Bench::new(start, false);
        Arc::get_mut(&mut bench.ctx)
            .expect("no other reference yet")
            .calendar = CalendarInForce::new(Arc::new(calendar));
        bench
    }

    /// A bench whose operator runs browser logins.
    pub fn with_browser_logins(start: &str) -> Bench {
        Bench::new(start, true)
    }

    /// A bench whose operator claims client IDs (install `install-a`).
    pub fn with_claims(start: &str) -> Bench {
        let mut bench = Bench::new(start, false);
        let claims = bench.claims_of("install-a");
        Arc::get_mut(&mut bench.ctx)
            .expect("no other reference yet")
            .claims = Some(Arc::new(claims));
        bench
    }

    /// The client-ID claims of install `install`, on this bench's API server and clock.
    pub fn claims_of(&self, install: &str) -> Claims {
        self.claims_as(install, &format!("{install}-process"))
    }

    /// The client-ID claims of install `install` as process `identity` of it.
    fn claims_as(&self, install: &str, identity: &str) -> Claims {
        self.claims_with(install, identity, false)
    }

    /// The client-ID claims of install `install` as process `identity` of it, its replicas
    /// electing a leader or not.
    pub fn claims_with(&self, install: &str, identity: &str, leader_elected: bool) -> Claims {
        let settings = ClaimSettings {
            install: install.into(),
            identity: identity.into(),
            duration: Duration::from_secs(1800),
            leader_elected,
        };
        Claims::new(self.api.client(), settings, self.ctx.clock.clone())
    }

    fn new(start: &str, browser_logins: bool) -> Bench {
        let clock: Arc<dyn Clock> = Arc::new(TokioClock::starting_at(start.parse().unwrap()));
        let api = FakeApi::default();
        let dhan = Arc::new(FakeDhan {
            clock: clock.clone(),
            state: Mutex::default(),
        });
        let (store, writer) = reflector::store();
        let ctx = Arc::new(context(&api, dhan.clone(), clock, browser_logins, store));
        Bench {
            api,
            dhan,
            ctx,
            writer: Mutex::new(writer),
        }
    }

    /// The operator process dies and starts again: everything it kept in memory is gone (kept
    /// tokens, probes, claims it knew of); what is in the API server and at Dhan remains. The
    /// new process has the same identity (a container restarted in its Pod).
    pub fn restart(&mut self) {
        self.restart_as("install-a-process");
    }

    /// Like [`Bench::restart`], the new process with another identity (a new Pod, after a
    /// rollout or a node's loss): it may act for the install only once the dead process's
    /// heartbeat is `claims::PROCESS_LIVENESS` old.
    pub fn restart_in_a_new_pod(&mut self) {
        self.restart_as("install-a-new-pod");
    }

    fn restart_as(&mut self, identity: &str) {
        let (store, writer) = reflector::store();
        let mut ctx = context(
            &self.api,
            self.dhan.clone(),
            self.ctx.clock.clone(),
            self.ctx.login.enabled,
            store,
        );
        if self.ctx.claims.is_some() {
            ctx.claims = Some(Arc::new(self.claims_as("install-a", identity)));
        }
        ctx.calendar = self.ctx.calendar.clone();
        ctx.limits = self.ctx.limits.clone();
        self.ctx = Arc::new(ctx);
        self.writer = Mutex::new(writer);
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.ctx.clock.now()
    }

    /// The credentials Secret `alice-dhan` with a PIN and a TOTP key.
    pub fn credentials(&self, pin: &str) {
        self.api.put(
            &secret_path("alice-dhan"),
            json!({"metadata": {"name": "alice-dhan", "namespace": NS},
                   "data": {"pin": b64(pin), "totpSecret": b64(TOTP_SECRET)}}),
        );
    }

    /// The credentials Secret `alice-dhan` of an API-key account (browser method).
    pub fn app_credentials(&self) {
        self.api.put(
            &secret_path("alice-dhan"),
            json!({"metadata": {"name": "alice-dhan", "namespace": NS},
                   "data": {"pin": b64(PIN), "totpSecret": b64(TOTP_SECRET),
                            "apiKey": b64("app-1"), "apiSecret": b64("app-secret-1"),
                            "mobile": b64("9876543210")}}),
        );
    }

    /// Plays the login Job `job`'s end: its Pod, with the `login` container terminated with
    /// `message` (the login report).
    pub fn finish_login(&self, job: &str, exit_code: i32, message: &str) {
        let job_path = format!("/apis/batch/v1/namespaces/{NS}/jobs/{job}");
        let job_uid = self.api.get(&job_path).expect("the login Job")["metadata"]["uid"].clone();
        self.api.put(
            &format!("/api/v1/namespaces/{NS}/pods/{job}-pod"),
            json!({"metadata": {"name": format!("{job}-pod"), "namespace": NS,
                                "labels": {"job-name": job},
                                "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job",
                                    "name": job, "uid": job_uid, "controller": true}]},
                   "status": {"containerStatuses": [{
                       "name": "login", "image": "op:1", "imageID": "", "ready": false,
                       "restartCount": 0,
                       "state": {"terminated": {"exitCode": exit_code, "message": message,
                                                "finishedAt": "2026-11-22T00:00:00Z"}}}]}}),
        );
    }

    /// DhanAccount `name` with `spec` added to `clientId` and `credentialsSecret`.
    pub fn account(&self, name: &str, spec: Value) {
        let mut full = json!({"clientId": "1000000001", "credentialsSecret": "alice-dhan"});
        merge(&mut full, &spec);
        self.api.put(
            &account_path(name),
            json!({"apiVersion": "dhan-operator.dev/v1alpha1", "kind": "DhanAccount",
                   "metadata": {"name": name, "namespace": NS, "generation": 1},
                   "spec": full}),
        );
    }

    pub fn edit_spec(&self, name: &str, spec: Value) {
        let mut object = self.api.get(&account_path(name)).unwrap();
        merge(&mut object["spec"], &spec);
        let generation = object["metadata"]["generation"].as_i64().unwrap_or(1) + 1;
        object["metadata"]["generation"] = generation.into();
        self.api.put(&account_path(name), object);
    }

    pub fn status(&self, name: &str) -> DhanAccountStatus {
        let object = self.api.get(&account_path(name)).unwrap();
        serde_json::from_value(object["status"].clone()).unwrap_or_default()
    }

    /// The reasons of the events published so far.
    pub fn event_reasons(&self) -> Vec<String> {
        let prefix = format!("/apis/events.k8s.io/v1/namespaces/{NS}/events/");
        self.api
            .under(&prefix)
            .iter()
            .filter_map(|e| e["reason"].as_str().map(str::to_string))
            .collect()
    }

    pub fn secret_token(&self, name: &str) -> Option<String> {
        let secret = self.api.get(&secret_path(name))?;
        let value = secret["data"]["DHAN_ACCESS_TOKEN"].as_str()?;
        Some(String::from_utf8(base64_decode(value)).unwrap())
    }

    /// One reconcile of `name` that does not end within `limit` of virtual time (a call that
    /// hangs): dropped, as when the process dies. `None` when it ended.
    pub async fn reconcile_dies_after(&self, name: &str, limit: Duration) -> Option<()> {
        match tokio::time::timeout(limit, self.reconcile(name)).await {
            Ok(_) => None,
            Err(_) => Some(()),
        }
    }

    /// One reconcile of `name` through the controller's entry point, deadline included.
    pub async fn reconcile_entry(
        &self,
        name: &str,
    ) -> Result<kube::runtime::controller::Action, reconcile::Error> {
        let object: DhanAccount =
            serde_json::from_value(self.api.get(&account_path(name)).unwrap()).unwrap();
        self.beat_if_due().await;
        reconcile::reconcile(Arc::new(object), self.ctx.clone()).await
    }

    /// The heartbeat runs beside the controller.
    async fn beat_if_due(&self) {
        if let Some(claims) = &self.ctx.claims
            && claims.beat_due()
        {
            let _ = claims.beat().await;
        }
    }

    /// One reconcile of `name`, as the controller would run it (on its cached copy, which
    /// here is always current). Returns when it asks to run again.
    pub async fn reconcile(&self, name: &str) -> Option<Duration> {
        let object: DhanAccount =
            serde_json::from_value(self.api.get(&account_path(name)).unwrap()).unwrap();
        let account = Arc::new(object);
        let event = watcher::Event::Apply((*account).clone());
        self.ctx.index.apply(&event);
        self.writer.lock().unwrap().apply_watcher_event(&event);
        self.beat_if_due().await;
        reconcile::reconcile_once(account, self.ctx.clone())
            .await
            .expect("reconcile")
    }

    /// Reconciles `name` whenever it asks, for `span` of virtual time.
    pub async fn run(&self, name: &str, span: Duration) {
        let end = tokio::time::Instant::now() + span;
        while tokio::time::Instant::now() < end {
            let wait = self
                .reconcile(name)
                .await
                .unwrap_or(Duration::from_secs(3600));
            let left = end - tokio::time::Instant::now();
            tokio::time::advance(wait.min(left).max(Duration::from_millis(1))).await;
        }
    }

    /// Advances virtual time.
    pub async fn advance(&self, by: Duration) {
        tokio::time::advance(by).await;
    }
}

pub fn b64(text: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(text)
}

fn base64_decode(text: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .unwrap()
}

fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                merge(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (t, p) => *t = p.clone(),
    }
}
