//! Why the operator wants a new token.

/// Why the operator wants a new token. Each shows up in events and messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefreshReason {
    NoToken,
    Expired,
    ProbedDead,
    Requested,
    Scheduled,
    SafetyNet,
}

impl RefreshReason {
    pub const ALL: [RefreshReason; 6] = [
        RefreshReason::NoToken,
        RefreshReason::Expired,
        RefreshReason::ProbedDead,
        RefreshReason::Requested,
        RefreshReason::Scheduled,
        RefreshReason::SafetyNet,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RefreshReason::NoToken => "NoToken",
            RefreshReason::Expired => "Expired",
            RefreshReason::ProbedDead => "ProbedDead",
            RefreshReason::Requested => "Requested",
            RefreshReason::Scheduled => "Scheduled",
            RefreshReason::SafetyNet => "SafetyNet",
        }
    }

    pub fn parse(text: &str) -> Option<RefreshReason> {
        RefreshReason::ALL.into_iter().find(|r| r.as_str() == text)
    }

    pub fn describe(self) -> &'static str {
        match self {
            RefreshReason::NoToken => "no token yet",
            RefreshReason::Expired => "the token expired",
            RefreshReason::ProbedDead => "Dhan rejected the token",
            RefreshReason::Requested => "a refresh was requested",
            RefreshReason::Scheduled => "scheduled refresh",
            RefreshReason::SafetyNet => "the token would expire before the next scheduled refresh",
        }
    }

    /// No usable token: pods have nothing that works, so market hours do not hold it back.
    pub fn is_emergency(self) -> bool {
        matches!(
            self,
            RefreshReason::NoToken | RefreshReason::Expired | RefreshReason::ProbedDead
        )
    }
}
