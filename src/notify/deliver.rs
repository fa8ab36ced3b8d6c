//! Sending one message to Telegram or a webhook. The destination's secrets (bot token, webhook
//! URL) are read from the notifier's Secret at each delivery, so a rotated one takes effect at
//! once, and never appear in an error: reqwest's errors carry the URL, which holds them.

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use serde_json::{Value, json};
use std::time::Duration;

use super::egress::Egress;

/// Timeout of one delivery: a slow receiver must not hold later messages for long.
pub const TIMEOUT: Duration = Duration::from_secs(10);
pub use super::egress::DEFAULT_TELEGRAM_API;
pub use super::error::DeliveryError;

/// What sends notifications: an HTTP client that follows no redirect and connects to no
/// forbidden address, and the operator's limits on destinations.
#[derive(Clone)]
pub struct Sender {
    pub http: reqwest::Client,
    pub egress: Egress,
}

impl Sender {
    pub fn new(egress: Egress) -> Sender {
        Sender {
            http: egress.client(TIMEOUT),
            egress,
        }
    }
}

async fn secret_value(
    secrets: &Api<Secret>,
    name: &str,
    key: &'static str,
) -> Result<String, DeliveryError> {
    let secret = secrets
        .get_opt(name)
        .await
        .map_err(|e| DeliveryError::SecretUnreadable {
            secret: name.to_string(),
            problem: match e {
                kube::Error::Api(status) => status.message,
                _ => "Kubernetes API unreachable".to_string(),
            },
        })?
        .ok_or_else(|| DeliveryError::SecretMissing(name.to_string()))?;
    let missing = || DeliveryError::KeyMissing {
        secret: name.to_string(),
        key,
    };
    let bytes = secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .ok_or_else(missing)?;
    let value = String::from_utf8(bytes.0.clone()).map_err(|_| missing())?;
    let value = value.trim();
    if value.is_empty() {
        return Err(missing());
    }
    Ok(value.to_string())
}

async fn post(http: &reqwest::Client, url: url::Url, body: &Value) -> Result<(), DeliveryError> {
    let response = http
        .post(url)
        .json(body)
        .timeout(TIMEOUT)
        .send()
        .await
        .map_err(|e| DeliveryError::Unreachable(e.without_url().to_string()))?;
    if response.status().is_success() {
        Ok(())
    } else {
        Err(DeliveryError::Rejected(response.status().as_u16()))
    }
}

/// `sendMessage` of the Bot API at the operator's `--telegram-api-url`, with the bot token and
/// chat id from Secret `secret_name`. A notifier's own `apiUrl` may only repeat the operator's.
pub async fn telegram(
    sender: &Sender,
    secrets: &Api<Secret>,
    secret_name: &str,
    api_url: Option<&str>,
    text: &str,
) -> Result<(), DeliveryError> {
    let base = sender.egress.telegram_api.trim_end_matches('/');
    if let Some(asked) = api_url.map(|u| u.trim_end_matches('/'))
        && asked != base
    {
        return Err(DeliveryError::NotAllowed(
            "spec.telegram.apiUrl differs from the operator's Telegram API server              (--telegram-api-url): remove it"
                .into(),
        ));
    }
    let token = secret_value(secrets, secret_name, "botToken").await?;
    let chat_id = secret_value(secrets, secret_name, "chatId").await?;
    let url = url::Url::parse(&format!("{base}/bot{token}/sendMessage"))
        .map_err(|_| DeliveryError::BadUrl("the Telegram API URL with the bot token"))?;
    let body = json!({ "chat_id": chat_id, "text": text, "disable_web_page_preview": true });
    post(&sender.http, url, &body).await
}

/// A JSON POST to the URL in Secret `secret_name`, key `url`, if the operator's limits allow
/// it (`notify::egress`).
pub async fn webhook(
    sender: &Sender,
    secrets: &Api<Secret>,
    secret_name: &str,
    body: &Value,
) -> Result<(), DeliveryError> {
    const WHAT: &str = "the webhook Secret's url";
    let url = secret_value(secrets, secret_name, "url").await?;
    let url = url::Url::parse(&url).map_err(|_| DeliveryError::BadUrl(WHAT))?;
    sender.egress.check_url(&url, WHAT)?;
    sender.egress.resolve_checked(&url, WHAT).await?;
    post(&sender.http, url, body).await
}
