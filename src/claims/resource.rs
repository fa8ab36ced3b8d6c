//! The two cluster-scoped resources behind client-ID claims. Cluster-scoped so that every
//! install of the operator finds them without being told where: the person installing a second
//! operator need not know of the first.
//!
//! - `DhanClientClaim`, one per client ID (named by a hash of it): which install and account may
//!   mint for the client, the mint in flight, and the credential submissions Dhan refused for
//!   it today. It is not renewed: it holds for as long as its install is alive.
//! - `DhanOperatorInstall`, one per install: the install's heartbeat. Its claims hold while it is
//!   renewed, so a quiet client ID costs no write per period, whatever the number of accounts.

use chrono::{DateTime, Utc};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Which operator install and DhanAccount may mint for one Dhan client ID.
// Each printcolumn repeats `type_ = ...`; clippy reads the repetition as duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "dhan-operator.dev",
    version = "v1alpha1",
    kind = "DhanClientClaim",
    plural = "dhanclientclaims",
    doc = "Which dhan-operator install and DhanAccount may mint for one Dhan client ID (a new \
           token kills the previous one), and the credential submissions Dhan refused for it \
           today. Named by a hash of the client ID; written by the operator only.",
    printcolumn(name = "Install", type_ = "string", json_path = ".spec.holder.install"),
    printcolumn(name = "Since", type_ = "date", json_path = ".spec.holder.since"),
    printcolumn(
        name = "Refused Today",
        type_ = "integer",
        json_path = ".spec.refusals.count"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct DhanClientClaimSpec {
    /// Who may mint; none: nobody holds the client ID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holder: Option<ClaimHolder>,
    /// The last call to Dhan that mints (or submits credentials), written right before it. A
    /// process that dies before it hears the answer leaves it here: the next one probes the
    /// token Dhan may have revoked, and counts a credential submission it never heard back
    /// about as refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_flight: Option<InFlight>,
    /// An earlier mint of the holder that Dhan may have carried out without its answer being
    /// heard, since replaced in `inFlight` by a later call that made no token: the token it
    /// may have made lives until a day after this moment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unconfirmed_mint: Option<DateTime<Utc>>,
    /// Credential submissions Dhan refused for this client on one IST day.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusals: Option<Refusals>,
}

/// The holder of a claim.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClaimHolder {
    /// The install (`--install-id`); its `DhanOperatorInstall` says whether it is alive.
    pub install: String,
    /// The UID of the DhanAccount that mints (neither its namespace nor its name: the claim
    /// may be read by another tenant's install).
    pub account: String,
    /// When this holder took the claim.
    pub since: DateTime<Utc>,
}

/// A call to Dhan that mints, sent at `at`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InFlight {
    pub at: DateTime<Utc>,
    /// Whether it submitted credentials (PIN and TOTP, or a browser login).
    pub credentials: bool,
    /// Its answer was heard and was not a refusal of the credentials.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub answered: bool,
    /// The answer said nothing of whether Dhan carried the call out (a timeout, a 5xx, a reset
    /// connection): it may have killed the previous token.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unknown: bool,
}

/// Refused credential submissions on one IST day.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Refusals {
    /// The IST date, `YYYY-MM-DD`.
    pub day: String,
    #[schemars(range(max = 1000))]
    pub count: u32,
    /// Keyed hashes of the credential sets refused that day: never sent again that day, by any
    /// account (a re-created one included).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub credentials: Vec<String>,
}

/// A dhan-operator install's heartbeat: its client-ID claims hold while it is renewed.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "dhan-operator.dev",
    version = "v1alpha1",
    kind = "DhanOperatorInstall",
    plural = "dhanoperatorinstalls",
    doc = "A dhan-operator install's heartbeat: the client IDs it claims (DhanClientClaim) stay \
           its own while it is renewed. Written by the operator only.",
    printcolumn(name = "Install", type_ = "string", json_path = ".spec.install"),
    printcolumn(name = "Holder", type_ = "string", json_path = ".spec.holderIdentity"),
    printcolumn(name = "Renewed", type_ = "date", json_path = ".spec.renewTime")
)]
#[serde(rename_all = "camelCase")]
pub struct DhanOperatorInstallSpec {
    /// The install's name (`--install-id`).
    pub install: String,
    /// The process acting for the install (its leader); empty once it stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holder_identity: Option<String>,
    pub renew_time: DateTime<Utc>,
    /// How long the install's claims hold without a renewal (`--client-claim-duration`).
    #[schemars(range(min = 1))]
    pub claim_duration_seconds: u32,
}

/// The CRDs as YAML, exactly as checked in under `crds/`.
pub fn claim_crd_yaml() -> String {
    use kube::CustomResourceExt;
    serde_yaml::to_string(&DhanClientClaim::crd()).expect("the CRD always serialises")
}

pub fn install_crd_yaml() -> String {
    use kube::CustomResourceExt;
    serde_yaml::to_string(&DhanOperatorInstall::crd()).expect("the CRD always serialises")
}
