//! The `DhanNotifier` custom resource: where a namespace's account alerts go.
//!
//! A namespaced resource rather than a field of each DhanAccount: on a shared cluster each team
//! routes the alerts of its own namespace to its own phone or channel, and one notifier covers
//! every account there without repeating the destination in each of them.

use chrono::{DateTime, Utc};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Sends alerts about the DhanAccounts of its namespace to Telegram and/or a webhook.
// Each printcolumn repeats `type_ = ...`; clippy reads the repetition as duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, Default, JsonSchema)]
#[kube(
    group = "dhan-operator.dev",
    version = "v1alpha1",
    kind = "DhanNotifier",
    plural = "dhannotifiers",
    namespaced,
    status = "DhanNotifierStatus",
    doc = "Sends refresh failures, recoveries, Failed/Conflict and unplanned expiries of the \
           namespace's DhanAccounts to Telegram or a JSON webhook.",
    printcolumn(
        name = "Telegram",
        type_ = "string",
        json_path = ".spec.telegram.secretName"
    ),
    printcolumn(
        name = "Webhook",
        type_ = "string",
        json_path = ".spec.webhook.secretName"
    ),
    printcolumn(
        name = "Last Delivery",
        type_ = "string",
        json_path = ".status.lastDeliveryTime"
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
pub struct DhanNotifierSpec {
    /// A Telegram bot: the Secret holds `botToken` and `chatId`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub telegram: Option<TelegramTarget>,
    /// A webhook receiving `{"text": ..., "content": ...}` (Slack- and Discord-compatible) plus
    /// structured fields: the Secret holds `url` (webhook URLs embed a secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookTarget>,
    /// DhanAccounts (names in this namespace) to report on. Default: all of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accounts: Option<Vec<String>>,
    /// What to send: `RefreshFailed`, `Failed`, `Conflict`, `ExpiringSoon`, `Recovered`.
    /// Default: all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("items" = {"type": "string", "enum":
        ["RefreshFailed", "Failed", "Conflict", "ExpiringSoon", "Recovered"]}))]
    pub events: Option<Vec<String>>,
}

/// A Telegram bot and chat.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TelegramTarget {
    /// Secret in this namespace with the keys `botToken` and `chatId`.
    pub secret_name: String,
    /// Bot API server: the operator's (`--telegram-api-url`, default `https://api.telegram.org`);
    /// a different value here fails the delivery. Optional.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_url: Option<String>,
}

/// A JSON webhook.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookTarget {
    /// Secret in this namespace with the key `url`.
    pub secret_name: String,
}

/// What the notifier has sent, written by the operator.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DhanNotifierStatus {
    /// Per DhanAccount, the state last reported: a restarted operator does not repeat it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub notified: BTreeMap<String, String>,
    /// When a message was last delivered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_delivery_time: Option<DateTime<Utc>>,
    /// The last delivery problem, if the last attempt failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// The DhanNotifier CRD as YAML, exactly as checked in under `crds/`.
pub fn crd_yaml() -> String {
    use kube::CustomResourceExt;
    serde_yaml::to_string(&DhanNotifier::crd()).expect("the CRD always serialises")
}
