//! The mock's configuration vocabulary: how a dead token is answered, and the faults a test
//! can inject. Plain data shared by the state and the handlers.

use serde::{Deserialize, Serialize};

/// Which of the dead-token answers of docs/dhan-api.md §4 a revoked token gets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeadTokenStyle {
    /// HTTP 400 DH-906 "Invalid Token" — what revoked tokens get on the live API (§4).
    #[default]
    Dh906,
    Dh901,
    Data807,
    Data808,
    Data809,
    Gateway,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum FaultKind {
    Http500,
    Http502,
    Http429,
    Throttle,
    Error200,
    /// A refused PIN in Dhan's documented words (docs/dhan-api.md §9).
    LoginFailed,
    /// A refused PIN in the words users report (docs/dhan-api.md §9).
    ValidationFailed,
    Latency,
    Drop,
    /// The call is carried out — a mint revokes the previous token (§1) —, then the connection
    /// is dropped without an answer.
    ResetAfterMint,
    /// The call is carried out, then answered HTTP 200 with its fields but no token.
    MalformedAfterMint,
    /// The first call to the fault's endpoint with the next token issued answers HTTP 401, then
    /// the token works (§9).
    UnauthorizedAfterMint,
}

impl FaultKind {
    /// Faults that let the endpoint do its work and only spoil its answer (or a later one).
    pub fn after_mint(self) -> bool {
        matches!(
            self,
            FaultKind::ResetAfterMint
                | FaultKind::MalformedAfterMint
                | FaultKind::UnauthorizedAfterMint
        )
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FaultSpec {
    /// An endpoint name as it appears in the call log, or `*` for any.
    pub endpoint: String,
    pub kind: FaultKind,
    #[serde(default = "one")]
    pub count: u32,
    /// Delay before answering. Defaults to 1000 ms for `latency`, 0 for the other kinds.
    #[serde(default)]
    pub latency_ms: Option<u64>,
    #[serde(default)]
    pub message: Option<String>,
    /// Only calls for this client; calls whose client is unknown before the endpoint's work
    /// (api.dhan.co endpoints, consumeApp-consent) never match.
    #[serde(default)]
    pub client_id: Option<String>,
}

fn one() -> u32 {
    1
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Fault {
    #[serde(flatten)]
    pub spec: FaultSpec,
    pub remaining: u32,
}
