//! Why a message did not arrive: the one error type of delivery and of the limits on where it
//! may go.

/// Why a message did not arrive. Says which Secret or what the receiver answered, never the
/// secret itself.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DeliveryError {
    #[error("Secret {0:?} not found")]
    SecretMissing(String),
    #[error("Secret {secret:?} has no key {key:?}")]
    KeyMissing { secret: String, key: &'static str },
    #[error("cannot read Secret {secret:?}: {problem}")]
    SecretUnreadable { secret: String, problem: String },
    #[error("{0} is not a valid URL")]
    BadUrl(&'static str),
    #[error("the receiver could not be reached: {0}")]
    Unreachable(String),
    #[error("the receiver answered HTTP {0}")]
    Rejected(u16),
    /// The operator's limits on destinations refuse it (`notify::egress`).
    #[error("{0}")]
    NotAllowed(String),
}
