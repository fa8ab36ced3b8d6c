//! dhan-operator: keeps Dhan broker access tokens alive for many accounts.

pub mod crd;
pub mod decision;
