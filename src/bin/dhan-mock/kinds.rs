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
#[serde(rename_all = "lowercase")]
pub enum FaultKind {
    Http500,
    Http502,
    Http429,
    Throttle,
    Error200,
    Latency,
    Drop,
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
