//! The `DhanAccount` custom resource: what a user asks for (spec) and what the operator reports
//! (status).
//!
//! Fields the operator must validate itself are plain strings here: Kubernetes 1.20 has no CEL,
//! and a value the schema cannot express must reach the operator (and become a `Failed` phase
//! naming the field) instead of breaking deserialisation of the whole list.

use chrono::{DateTime, Utc};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub use crate::decision::Phase;

/// Annotation whose every new value asks for an immediate refresh (still subject to the
/// per-client mint throttle).
pub const REFRESH_REQUESTED_ANNOTATION: &str = "dhan-operator.dev/refresh-requested";
/// A request value starting with this (`now-1733650000000`, `kubectl dhan refresh --now`) is
/// answered even during market hours, where a plain request waits for the close: whoever asks
/// accepts that the new token kills the one running Pods hold. Dhan's limits still apply.
pub const REFRESH_NOW_PREFIX: &str = "now-";

/// A Dhan trading account whose access token the operator keeps alive.
// Each printcolumn repeats `type_ = ...`; clippy reads the repetition as duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, Default, JsonSchema)]
#[kube(
    group = "dhan-operator.dev",
    version = "v1alpha1",
    kind = "DhanAccount",
    plural = "dhanaccounts",
    shortname = "dhan",
    namespaced,
    status = "DhanAccountStatus",
    doc = "A Dhan trading account whose access token the operator keeps alive in a Secret.",
    printcolumn(name = "Client", type_ = "string", json_path = ".spec.clientId"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Method", type_ = "string", json_path = ".status.method"),
    printcolumn(name = "Expires", type_ = "string", json_path = ".status.expiresAt"),
    printcolumn(
        name = "Next Refresh",
        type_ = "string",
        json_path = ".status.nextRefreshTime"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    printcolumn(
        name = "Message",
        type_ = "string",
        json_path = ".status.message",
        priority = "1"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct DhanAccountSpec {
    /// Dhan client ID (digits only), e.g. "1000000001". Only one DhanAccount in the whole
    /// cluster may mint for a client ID: minting invalidates the client's previous token.
    #[schemars(length(min = 1, max = 20), regex(pattern = r"^\s*[0-9]+\s*$"))]
    pub client_id: String,

    /// Secret in the same namespace holding the credentials. Recognised keys: `pin`,
    /// `totpSecret` (base32 TOTP key), `accessToken` (a Dhan Web token to adopt and renew),
    /// `apiKey`, `apiSecret`, `mobile`. Individual keys can be taken from other Secrets with
    /// `credentials`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret: Option<String>,

    /// Per-key overrides: where each credential lives, when not in `credentialsSecret` under
    /// its default key. Secrets must be in the DhanAccount's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<Box<CredentialSources>>,

    /// Ways to obtain a token, tried in order: `renew` (RenewToken on a live Dhan Web token),
    /// `totp` (PIN + TOTP), `browser` (API-key consent with a browser login in a Job).
    /// Default: [renew, totp].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("items" = {"type": "string", "enum": ["renew", "totp", "browser"]}))]
    pub methods: Option<Vec<String>>,

    /// Name of the Secret the operator writes the token to. Default: `<name>-token`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,

    /// Labels, annotations and key names of the output Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_template: Option<Box<SecretTemplate>>,

    /// When to refresh the token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh: Option<Box<RefreshSpec>>,

    /// Workloads (same namespace) whose pods are restarted after each real token change, by
    /// setting the pod-template annotation `dhan-operator.dev/token-hash` — for pods that read
    /// the token from environment variables. Mounted Secret files update without a restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout_restart_targets: Option<Vec<RolloutTarget>>,

    /// The date the Dhan app's API key (`apiKey`, browser method) expires, as Dhan Web shows it
    /// (keys live 12 months). From 30 days before, the account warns (condition `APIKeyValid`
    /// with reason `ExpiresSoon`, a warning event, the metric
    /// `dhan_operator_account_api_key_expiry_timestamp_seconds`); after it, browser logins fail
    /// until a new key is in the Secret and this date is moved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_expires: Option<chrono::NaiveDate>,

    /// Stop all calls to Dhan for this account; the current Secret is left as it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspend: Option<bool>,

    /// What happens to the output Secret when the DhanAccount is deleted: `Retain` (default)
    /// keeps it — and its still-valid token, which a re-created DhanAccount of the same name
    /// adopts without minting — or `Delete` removes it with the account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["Retain", "Delete"]))]
    pub deletion_policy: Option<String>,
}

/// A workload to restart when the token changes.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutTarget {
    /// `Deployment`, `StatefulSet` or `DaemonSet`.
    #[schemars(extend("enum" = ["Deployment", "StatefulSet", "DaemonSet"]))]
    pub kind: String,
    /// Name of the workload in the DhanAccount's namespace.
    pub name: String,
}

/// The static IPs registered on the Dhan account (docs/dhan-api.md §7): since April 2026 orders from
/// other IPs are rejected. Read-only: the operator never changes them.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StaticIpStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secondary_ip: Option<String>,
    /// Whether Dhan accepts orders from this account's IP, when Dhan says so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub orders_allowed: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_match_status: Option<String>,
}

/// Where a credential comes from.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Secret name, in the DhanAccount's namespace.
    pub secret_name: String,
    /// Key within that Secret.
    pub key: String,
}

/// Per-credential Secret references overriding `credentialsSecret`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CredentialSources {
    /// Trading PIN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pin: Option<SecretKeyRef>,
    /// Base32 TOTP key shown when TOTP was enabled on Dhan Web.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub totp_secret: Option<SecretKeyRef>,
    /// A Dhan Web token to adopt and keep renewing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_token: Option<SecretKeyRef>,
    /// API key (app id) of a Dhan app, for the browser method.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<SecretKeyRef>,
    /// API secret of that Dhan app.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_secret: Option<SecretKeyRef>,
    /// Mobile number used on the Dhan login page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mobile: Option<SecretKeyRef>,
}

/// Shape of the output Secret.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretTemplate {
    /// Extra labels on the output Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    /// Extra annotations on the output Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    /// Key names in the output Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys: Option<SecretKeys>,
}

/// Key names of the output Secret.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeys {
    /// Key for the token. Default `DHAN_ACCESS_TOKEN`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_token: Option<String>,
    /// Key for the client ID. Default `DHAN_CLIENT_ID`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// Key for the expiry (RFC 3339, UTC). Default `DHAN_TOKEN_EXPIRES_AT`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
}

/// Refresh timing.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RefreshSpec {
    /// Cron schedule (5 fields) of the proactive daily refresh. Default `0 8 * * *`: before
    /// the market's pre-open, since a new token kills the one running pods hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// IANA time zone of `schedule`. Default `Asia/Kolkata`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    /// Safety net: when the next scheduled refresh is after the token's expiry, refresh this
    /// long before expiry instead (e.g. `10m`). Default `10m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^\s*(0|([0-9]+(ms|s|m|h|d))+)\s*$"))]
    pub renew_before: Option<String>,
    /// How often to check with Dhan that the token still works (e.g. `15m`); `0` disables.
    /// Default `15m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^\s*(0|([0-9]+(ms|s|m|h|d))+)\s*$"))]
    pub validate_every: Option<String>,
    /// Refresh only for trading days: the schedule fires only on dates the exchange trades
    /// (per the operator's trading calendar), and a token may lapse over weekends and holidays
    /// instead of being renewed for nobody. Default `false`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trading_days_only: Option<bool>,
}

/// Kubernetes 1.20 rejects the `null` member schemars adds to an optional enum.
fn phase_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "description": "Where the account stands.",
        "type": "string",
        "enum": ["Pending", "Refreshing", "WaitingForLogin", "Ready", "Backoff", "Expired",
                 "Failed", "Conflict", "Suspended"]
    })
}

/// Observed state, written by the operator.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DhanAccountStatus {
    /// Where the account stands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "phase_schema")]
    pub phase: Option<Phase>,
    /// How the current token was obtained (`renew`, `totp`, `browser`, `adopted`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// The token's `tokenConsumerType` claim (`SELF` for Dhan Web tokens, `APP` for minted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_type: Option<String>,
    /// When the current token was issued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issued_at: Option<DateTime<Utc>>,
    /// When the current token expires (the JWT `exp`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
    /// When the operator will next refresh (or retry).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_refresh_time: Option<DateTime<Utc>>,
    /// When the operator last obtained a token from Dhan for this client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_refresh_time: Option<DateTime<Utc>>,
    /// Consecutive failed attempts since the last success (read back as at most 1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_attempts: Option<u32>,
    /// When the last attempt failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure_time: Option<DateTime<Utc>>,
    /// Why the last attempt failed, as a stable reason (e.g. `InvalidPin`, `MintThrottled`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure_reason: Option<String>,
    /// What the last failed attempt reported, kept until the next success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure_message: Option<String>,
    /// Fingerprint of the spec and credential Secrets a permanent failure was seen with; the
    /// operator retries only once they change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_inputs: Option<String>,
    /// The last 30-second TOTP step submitted for this client: Dhan rejects a reused step.
    /// Read back as at most the current step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 1_000_000_000_u64))]
    pub last_totp_step: Option<u64>,
    /// The last value of the refresh-requested annotation that was honoured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_request_handled: Option<String>,
    /// A person-readable explanation of the phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Short keyed hash of the current token: shows a real change, reveals nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_hash: Option<String>,
    /// The client ID the current token was minted for. A status carried over an edit of
    /// `clientId` (while the account waits in `Conflict`, say) describes the old client's token,
    /// which keeps nothing of the new client's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_client_id: Option<String>,
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Static IPs registered on the account, read at each refresh.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub static_ip: Option<Box<StaticIpStatus>>,
    /// The browser login in progress (method `browser`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub login: Option<Box<LoginStatus>>,
    /// Consents generated for this client on the current IST day: Dhan allows 25 a day.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consents: Option<DailyCount>,
    /// Refusals of the credentials on the current IST day (PIN+TOTP mints Dhan refused, browser
    /// logins that failed after reaching its PIN/TOTP step); at the operator's limit the account
    /// stops, so Dhan does not lock it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_logins: Option<DailyCount>,
    /// The Secret that holds the current token (a renamed `secretName` moves it from here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,
    /// No new attempt before this time (backoff after a failure, Dhan's limits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_not_before: Option<DateTime<Utc>>,
    /// A mint whose answer was lost (a timeout, a reset connection, a 200 without a token) at
    /// this time: Dhan may still have carried it out and revoked the previous token, which is
    /// probed before anything else.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mint_unconfirmed_at: Option<DateTime<Utc>>,
    /// The last call that could mint, reached Dhan and brought no token: Dhan's 2-minute lock
    /// re-arms on each refused attempt, so the next one waits the full interval from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_mint_attempt_time: Option<DateTime<Utc>>,
    /// The last new token's delivery to running Pods that mount the output Secret and opted in
    /// (`--sync-pods`): how many were told to sync, and when.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_sync: Option<PodSyncStatus>,
    /// Standard conditions; `Ready` is true while a valid token is in the Secret.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

impl DhanAccountStatus {
    /// Whether what the status says of its token (its expiry, a lost mint) is about client
    /// `client_id`: not after an edit of `clientId` the status has not caught up with. A status
    /// written before the field existed is taken at its word.
    pub fn describes_client(&self, client_id: &str) -> bool {
        self.token_client_id
            .as_deref()
            .is_none_or(|c| c.trim() == client_id.trim())
    }
}

/// A browser login running in a Job (docs/dhan-api.md §3).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LoginStatus {
    /// The login Job, in the DhanAccount's namespace.
    pub job_name: String,
    /// When the consent was generated and the Job created.
    pub started_at: DateTime<Utc>,
    /// Why a new token was wanted (e.g. `Scheduled`, `NoToken`).
    pub reason: String,
    /// The refresh-requested annotation value this login answers, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_request: Option<String>,
}

/// A new token's delivery to the running Pods that read it from a volume.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodSyncStatus {
    /// The token this was for (its keyed hash, as `tokenHash`).
    pub token_hash: String,
    /// Pods that mount the output Secret and opted in, each told to sync.
    #[schemars(range(max = 100000))]
    pub pods: u32,
    /// Opted-in Pods that could not be told (not found, forbidden), or that can never see a new
    /// token in place (no volume of the Secret, a `subPath` mount).
    #[serde(default, skip_serializing_if = "is_zero")]
    #[schemars(range(max = 100000))]
    pub problems: u32,
    /// When the last of them was told.
    pub synced_at: DateTime<Utc>,
    /// Milliseconds from the token's mint to `syncedAt`: the part of the dead-token window the
    /// operator sees (each kubelet then rewrites the volume, typically within a second).
    pub millis_after_mint: u64,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// A count on one IST calendar day.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DailyCount {
    /// The IST date, `YYYY-MM-DD`.
    pub day: String,
    /// The count that day.
    #[schemars(range(max = 1000))]
    pub count: u32,
}

/// A standard `metav1.Condition`.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// Condition type, e.g. `Ready`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// CamelCase reason for the last transition.
    pub reason: String,
    /// Person-readable detail.
    pub message: String,
    /// When the status last changed.
    pub last_transition_time: DateTime<Utc>,
    /// Generation the condition was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// The CRD as YAML, exactly as checked in under `crds/`.
pub fn crd_yaml() -> String {
    use kube::CustomResourceExt;
    serde_yaml::to_string(&DhanAccount::crd()).expect("the CRD always serialises")
}
