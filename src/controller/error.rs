//! Errors that abort a reconcile; the controller retries them. Variant names double as metric
//! labels.

use super::act::NotLeader;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API error: {0}")]
    Kube(#[from] kube::Error),
    #[error(transparent)]
    NotLeader(#[from] NotLeader),
    /// The reconcile outlived [`super::reconcile::RECONCILE_DEADLINE`] and was dropped.
    #[error("the reconcile took longer than {}s and was cut off", .0.as_secs())]
    Deadline(std::time::Duration),
}

impl Error {
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(_) => "KubeApi",
            Error::NotLeader(_) => "NotLeader",
            Error::Deadline(_) => "Deadline",
        }
    }
}
