//! Everything the mock remembers: accounts (configured through `/__control`), the tokens it has
//! issued, consent sessions, the call log and pending faults. One `std::sync::Mutex`, never held
//! across an `.await`.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use chrono::NaiveDate;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::kinds::{DeadTokenStyle, Fault, FaultKind};
use crate::{ist, jwt, totp};

#[derive(Debug, Clone)]
pub struct Config {
    pub mint_throttle_secs: i64,
    pub token_ttl_secs: i64,
    pub consent_limit: u32,
}

pub struct Mock {
    pub cfg: Config,
    key: Vec<u8>,
    inner: Mutex<Inner>,
}

pub type Shared = Arc<Mock>;

impl Mock {
    pub fn new(cfg: Config) -> Self {
        let mut key = vec![0u8; 64];
        rand::rng().fill_bytes(&mut key);
        Mock {
            cfg,
            key,
            inner: Mutex::new(Inner::default()),
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain data behind; keep serving.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn key(&self) -> &[u8] {
        &self.key
    }

    /// Appends to the call log (and the tracing log). Never pass secrets here.
    pub fn record(
        &self,
        endpoint: &str,
        method: &str,
        client_id: Option<&str>,
        status: u16,
        outcome: &str,
    ) {
        tracing::info!(endpoint, method, client_id, status, outcome, "dhan call");
        self.lock().calls.push(CallRecord {
            at: now_ms(),
            endpoint: endpoint.to_string(),
            method: method.to_string(),
            client_id: client_id.map(str::to_string),
            status,
            outcome: outcome.to_string(),
        });
    }
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

pub fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// A version-4 UUID, the shape of `consentAppId` (§3).
pub fn uuid_v4() -> String {
    let mut b = [0u8; 16];
    rand::rng().fill_bytes(&mut b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CallRecord {
    pub at: i64,
    pub endpoint: String,
    pub method: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    pub status: u16,
    pub outcome: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum TokenKind {
    /// Dhan Web login: the only kind RenewToken accepts (§2).
    #[serde(rename = "SELF")]
    SelfWeb,
    /// TOTP mint and (a guess, §5 says unknown) API-key consent tokens.
    #[serde(rename = "APP")]
    App,
}

impl TokenKind {
    pub fn claim(self) -> &'static str {
        match self {
            TokenKind::SelfWeb => "SELF",
            TokenKind::App => "APP",
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LoginOrder {
    #[default]
    TotpFirst,
    /// §3: some reports show the PIN before the TOTP.
    PinFirst,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LoginInputs {
    /// Six single-digit boxes per code (§3).
    #[default]
    Boxes,
    Single,
}

/// How the login page names its steps (docs/dhan-api.md §3).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PageLabels {
    /// `aria-label`s, placeholders and names on every input.
    #[default]
    Aria,
    /// Only visible text ("Verify with TOTP"); inputs have generic ids.
    Text,
}

/// Where the login page shows a refusal.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PageErrors {
    /// A `role=alert` element.
    #[default]
    Alert,
    /// Plain text in an ordinary `<div>`: no role, no label, no tell-tale class.
    Plain,
}

/// How a login screen is submitted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PageSubmit {
    /// A form with a submit button ("Continue", "Login").
    #[default]
    Button,
    /// A "Proceed" button outside any form (an Angular page).
    Proceed,
    /// Code boxes submit themselves on the last digit and show no button.
    Auto,
    /// Code boxes submit themselves and also keep an enabled button: clicking it replays the code.
    AutoWithButton,
}

/// What the login page does before showing any field.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PageRedirect {
    #[default]
    None,
    /// Sends the browser to the same page on another host name of this mock (`localhost` for
    /// `127.0.0.1` and back): a different origin, where a driver must type nothing.
    ForeignOrigin,
}

/// The login page's markup variant, per account (`loginPage` in `POST /__control/accounts`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LoginPage {
    #[serde(default)]
    pub labels: PageLabels,
    #[serde(default)]
    pub errors: PageErrors,
    #[serde(default)]
    pub submit: PageSubmit,
    #[serde(default)]
    pub redirect: PageRedirect,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExpiryTimeFormat {
    /// Switch between the two forms seen in §1 on every token issued for the account.
    #[default]
    Alternate,
    Fraction,
    Plain,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AppConfig {
    pub app_id: String,
    pub app_secret: String,
    pub redirect_url: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IpInfo {
    #[serde(rename = "primaryIP", default)]
    pub primary_ip: String,
    #[serde(rename = "secondaryIP", default)]
    pub secondary_ip: String,
    #[serde(rename = "modifyDatePrimary", default)]
    pub modify_date_primary: String,
    #[serde(rename = "modifyDateSecondary", default)]
    pub modify_date_secondary: String,
    /// §7: only "sometimes" present, so only sent when configured.
    #[serde(
        rename = "ordersAllowed",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub orders_allowed: Option<Value>,
    #[serde(
        rename = "ipMatchStatus",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub ip_match_status: Option<Value>,
}

impl Default for IpInfo {
    fn default() -> Self {
        IpInfo {
            primary_ip: "203.0.113.10".into(),
            secondary_ip: String::new(),
            modify_date_primary: "2026-04-01".into(),
            modify_date_secondary: String::new(),
            orders_allowed: None,
            ip_match_status: None,
        }
    }
}

/// The JSON accepted by `POST /__control/accounts`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AccountConfig {
    pub client_id: String,
    pub pin: String,
    pub totp_secret: String,
    #[serde(default)]
    pub mobile: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub ucc: Option<String>,
    #[serde(default)]
    pub given_power_of_attorney: bool,
    #[serde(default)]
    pub apps: Vec<AppConfig>,
    #[serde(default)]
    pub login_order: LoginOrder,
    #[serde(default)]
    pub login_inputs: LoginInputs,
    #[serde(default)]
    pub login_page: LoginPage,
    /// A password the login page asks for after the mobile number; no password step when unset.
    #[serde(default)]
    pub password: Option<String>,
    /// Wrong PINs, TOTP codes or passwords on the login page per IST day before Dhan refuses
    /// every further login of the client that day (docs/dhan-api.md §3: repeated wrong PINs can
    /// lock an account).
    #[serde(default = "default_attempts_before_lock")]
    pub login_attempts_before_lock: u32,
    #[serde(default)]
    pub expiry_time_format: ExpiryTimeFormat,
    #[serde(default)]
    pub dead_token_style: DeadTokenStyle,
    #[serde(default)]
    pub ip_info: IpInfo,
}

fn default_attempts_before_lock() -> u32 {
    5
}

#[derive(Debug, Default)]
pub struct Runtime {
    pub current_token: Option<String>,
    /// Every `generateAccessToken` attempt of the client, accepted or refused, starts the
    /// 2-minute throttle window again (§1, §9: it re-arms on each refused attempt).
    pub last_mint_attempt_ms: Option<i64>,
    /// TOTP steps already accepted for this client, by mint or login page (replay rule, §1).
    pub used_steps: BTreeSet<u64>,
    pub mints: u64,
    pub renewals: u64,
    pub web_tokens: u64,
    pub consent_logins: u64,
    pub consent_day: Option<NaiveDate>,
    pub consents_on_day: u32,
    /// Wrong credentials typed on the login page, on `failed_login_day` (IST).
    pub failed_login_day: Option<NaiveDate>,
    pub failed_logins_on_day: u32,
    issued: u64,
    last_iat: i64,
}

#[derive(Debug)]
pub struct Account {
    pub cfg: AccountConfig,
    pub secret: Vec<u8>,
    pub rt: Runtime,
}

impl Account {
    pub fn new(cfg: AccountConfig) -> Result<Self, String> {
        let secret = totp::decode_secret(&cfg.totp_secret)
            .ok_or_else(|| "totpSecret is not valid base32".to_string())?;
        Ok(Account {
            cfg,
            secret,
            rt: Runtime::default(),
        })
    }

    pub fn name(&self) -> String {
        self.cfg
            .name
            .clone()
            .unwrap_or_else(|| format!("Mock User {}", self.cfg.client_id))
    }

    pub fn ucc(&self) -> String {
        self.cfg.ucc.clone().unwrap_or_else(|| {
            let tail: String = self.cfg.client_id.chars().rev().take(5).collect();
            format!("MOCK{}", tail.chars().rev().collect::<String>())
        })
    }

    /// Consumes a TOTP step: `false` for a wrong code or a step this client already used.
    pub fn accept_totp(&mut self, code: &str, now_ms: i64) -> bool {
        let now_secs = (now_ms / 1000).max(0) as u64;
        let Some(step) = totp::matching_step(&self.secret, code, now_secs) else {
            return false;
        };
        if !self.rt.used_steps.insert(step) {
            return false;
        }
        let keep_from = step.saturating_sub(4);
        self.rt.used_steps = self.rt.used_steps.split_off(&keep_from);
        true
    }

    pub fn consents_today(&self, now_ms: i64) -> u32 {
        if self.rt.consent_day == Some(ist::ist_date(now_ms)) {
            self.rt.consents_on_day
        } else {
            0
        }
    }

    pub fn failed_logins_today(&self, now_ms: i64) -> u32 {
        if self.rt.failed_login_day == Some(ist::ist_date(now_ms)) {
            self.rt.failed_logins_on_day
        } else {
            0
        }
    }

    pub fn count_failed_login(&mut self, now_ms: i64) {
        let today = ist::ist_date(now_ms);
        if self.rt.failed_login_day != Some(today) {
            self.rt.failed_login_day = Some(today);
            self.rt.failed_logins_on_day = 0;
        }
        self.rt.failed_logins_on_day += 1;
    }

    /// Whether the login page refuses this client for the rest of the IST day.
    pub fn login_locked(&self, now_ms: i64) -> bool {
        self.failed_logins_today(now_ms) >= self.cfg.login_attempts_before_lock
    }

    pub fn count_consent(&mut self, now_ms: i64) {
        let today = ist::ist_date(now_ms);
        if self.rt.consent_day != Some(today) {
            self.rt.consent_day = Some(today);
            self.rt.consents_on_day = 0;
        }
        self.rt.consents_on_day += 1;
    }
}

#[derive(Debug, Clone)]
pub struct TokenInfo {
    pub client_id: String,
    pub kind: TokenKind,
    pub exp_ms: i64,
}

#[derive(Debug, Clone)]
pub struct Issued {
    pub token: String,
    pub claims: jwt::Claims,
    pub exp_ms: i64,
}

#[derive(Debug, Clone)]
pub struct ConsentSession {
    pub client_id: String,
    pub app_id: String,
    /// How many login steps have been passed (mobile is always first).
    pub progress: usize,
    /// Set once all steps passed: the one-time code the redirect URL carries.
    pub completion_code: Option<String>,
    pub finished: bool,
}

#[derive(Debug, Clone)]
pub struct TokenIdGrant {
    pub client_id: String,
    pub app_id: String,
}

pub enum TokenCheck {
    /// Not a JWT at all: the gateway answers (§6.4).
    Malformed,
    Dead {
        client_id: String,
        style: DeadTokenStyle,
    },
    Live {
        client_id: String,
        kind: TokenKind,
        exp_ms: i64,
    },
}

#[derive(Default)]
pub struct Inner {
    pub accounts: HashMap<String, Account>,
    pub tokens: HashMap<String, TokenInfo>,
    pub consents: HashMap<String, ConsentSession>,
    pub token_ids: HashMap<String, TokenIdGrant>,
    pub calls: Vec<CallRecord>,
    pub faults: Vec<Fault>,
    /// Tokens (with the endpoint) whose first call there answers 401: `unauthorizedAfterMint`.
    pub unauthorized_once: Vec<(String, String)>,
}

impl Inner {
    /// Issues a token and makes it the client's only live one: §1 "minting a new token
    /// invalidates the previous token of that client", whatever its kind.
    pub fn issue(
        &mut self,
        key: &[u8],
        client_id: &str,
        kind: TokenKind,
        ttl_secs: i64,
        now_ms: i64,
    ) -> Option<Issued> {
        let acct = self.accounts.get_mut(client_id)?;
        // Two tokens issued in the same second would otherwise be byte-identical (no `jti` on
        // Dhan tokens), making "the old one is revoked" unobservable; nudge iat forward instead.
        let iat = (now_ms.div_euclid(1000)).max(acct.rt.last_iat + 1);
        acct.rt.last_iat = iat;
        // Keep the sub-second part so `expiryTime` can carry a fraction as on the wire (§1),
        // while `exp - iat` stays exactly the TTL (§5).
        let exp_ms = (iat + ttl_secs) * 1000 + now_ms.rem_euclid(1000);
        let claims = jwt::Claims::new(client_id, kind.claim(), iat, exp_ms.div_euclid(1000));
        let token = jwt::encode(&claims, key);
        acct.rt.current_token = Some(token.clone());
        acct.rt.issued += 1;
        // §9: a fresh token has been seen to answer 401 once, then work.
        let flaky = crate::faults::take_from(&mut self.faults, |spec| {
            spec.kind == FaultKind::UnauthorizedAfterMint
                && spec
                    .client_id
                    .as_deref()
                    .is_none_or(|only| only == client_id)
        });
        if let Some(spec) = flaky {
            self.unauthorized_once.push((token.clone(), spec.endpoint));
        }
        self.tokens.insert(
            token.clone(),
            TokenInfo {
                client_id: client_id.to_string(),
                kind,
                exp_ms,
            },
        );
        Some(Issued {
            token,
            claims,
            exp_ms,
        })
    }

    /// The flat success body of §1, also used by RenewToken and consumeApp-consent (§2, §3).
    pub fn token_response(&self, issued: &Issued) -> Value {
        let Some(acct) = self.accounts.get(&issued.claims.dhan_client_id) else {
            return json!({"accessToken": issued.token});
        };
        let with_fraction = match acct.cfg.expiry_time_format {
            ExpiryTimeFormat::Fraction => true,
            ExpiryTimeFormat::Plain => false,
            ExpiryTimeFormat::Alternate => acct.rt.issued % 2 == 1,
        };
        json!({
            "dhanClientId": acct.cfg.client_id,
            "dhanClientName": acct.name(),
            "dhanClientUcc": acct.ucc(),
            "givenPowerOfAttorney": acct.cfg.given_power_of_attorney,
            "accessToken": issued.token,
            "expiryTime": ist::expiry_time(issued.exp_ms, with_fraction),
        })
    }

    pub fn check_token(&self, token: &str, now_ms: i64) -> TokenCheck {
        let Some(claims) = jwt::decode_unverified(token) else {
            return TokenCheck::Malformed;
        };
        let acct = self.accounts.get(&claims.dhan_client_id);
        let style = acct.map(|a| a.cfg.dead_token_style).unwrap_or_default();
        let dead = TokenCheck::Dead {
            client_id: claims.dhan_client_id.clone(),
            style,
        };
        let (Some(info), Some(acct)) = (self.tokens.get(token), acct) else {
            return dead;
        };
        if acct.rt.current_token.as_deref() != Some(token) || now_ms >= info.exp_ms {
            return dead;
        }
        TokenCheck::Live {
            client_id: info.client_id.clone(),
            kind: info.kind,
            exp_ms: info.exp_ms,
        }
    }

    pub fn reset(&mut self) {
        *self = Inner::default();
    }
}

#[cfg(test)]
pub mod test_support {
    use super::*;

    pub const SECRET_B32: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";
    pub const T0_MS: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z

    pub fn mock(throttle: i64) -> Mock {
        Mock::new(Config {
            mint_throttle_secs: throttle,
            token_ttl_secs: 86_400,
            consent_limit: 3,
        })
    }

    pub fn account_json(client_id: &str) -> Value {
        json!({
            "clientId": client_id,
            "pin": "123456",
            "totpSecret": SECRET_B32,
            "mobile": "9876543210",
            "apps": [{"appId": "app-1", "appSecret": "s3cret", "redirectUrl": "http://127.0.0.1:9/cb"}],
        })
    }

    pub fn add_account(m: &Mock, client_id: &str) {
        let cfg: AccountConfig = serde_json::from_value(account_json(client_id)).unwrap();
        m.lock()
            .accounts
            .insert(client_id.into(), Account::new(cfg).unwrap());
    }

    pub fn code(now_ms: i64) -> String {
        totp::code_at(
            &totp::decode_secret(SECRET_B32).unwrap(),
            (now_ms / 1000) as u64,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::*;
    use super::*;

    #[test]
    fn totp_replay_is_rejected_per_client() {
        let m = mock(120);
        add_account(&m, "A");
        add_account(&m, "B");
        let mut inner = m.lock();
        let c = code(T0_MS);
        assert!(inner.accounts.get_mut("A").unwrap().accept_totp(&c, T0_MS));
        assert!(
            !inner
                .accounts
                .get_mut("A")
                .unwrap()
                .accept_totp(&c, T0_MS + 1_000)
        );
        // Another client with the same secret has its own memory.
        assert!(inner.accounts.get_mut("B").unwrap().accept_totp(&c, T0_MS));
        // Next step's code works; a wrong code never does.
        let next = code(T0_MS + 30_000);
        let wrong: String = next
            .chars()
            .map(|d| char::from(b'0' + (d as u8 - b'0' + 1) % 10))
            .collect();
        assert!(
            !inner
                .accounts
                .get_mut("A")
                .unwrap()
                .accept_totp(&wrong, T0_MS + 30_000)
        );
        assert!(
            inner
                .accounts
                .get_mut("A")
                .unwrap()
                .accept_totp(&next, T0_MS + 30_000)
        );
    }

    #[test]
    fn issuing_revokes_previous_and_keeps_exp_minus_iat() {
        let m = mock(120);
        add_account(&m, "A");
        let mut inner = m.lock();
        let first = inner
            .issue(b"k", "A", TokenKind::SelfWeb, 86_400, T0_MS + 250)
            .unwrap();
        let second = inner
            .issue(b"k", "A", TokenKind::App, 86_400, T0_MS + 300)
            .unwrap();
        assert_ne!(first.token, second.token);
        assert_eq!(second.claims.iat, first.claims.iat + 1);
        assert_eq!(second.claims.exp - second.claims.iat, 86_400);
        assert!(matches!(
            inner.check_token(&first.token, T0_MS + 400),
            TokenCheck::Dead { .. }
        ));
        assert!(matches!(
            inner.check_token(&second.token, T0_MS + 400),
            TokenCheck::Live {
                kind: TokenKind::App,
                ..
            }
        ));
        assert!(matches!(
            inner.check_token(&second.token, second.exp_ms),
            TokenCheck::Dead { .. }
        ));
        assert!(matches!(
            inner.check_token("garbage", T0_MS),
            TokenCheck::Malformed
        ));
    }

    #[test]
    fn consent_counter_resets_at_ist_midnight() {
        let m = mock(120);
        add_account(&m, "A");
        let mut inner = m.lock();
        let a = inner.accounts.get_mut("A").unwrap();
        // 18:29:59 UTC = 23:59:59 IST on Jan 1; one second later it is Jan 2 in India.
        let before = T0_MS + (18 * 3600 + 29 * 60 + 59) * 1000;
        a.count_consent(before);
        a.count_consent(before);
        assert_eq!(a.consents_today(before), 2);
        assert_eq!(a.consents_today(before + 1000), 0);
        a.count_consent(before + 1000);
        assert_eq!(a.consents_today(before + 1000), 1);
    }
}
