//! Reading an account's credentials from Secrets in its own namespace.

use crate::crd::{DhanAccountSpec, SecretKeyRef};
use crate::decision::Method;
use crate::decision::method::Offered;
use crate::dhan::TotpKey;
use hmac::{Hmac, Mac};
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use sha2::Sha256;
use std::collections::{BTreeMap, BTreeSet};

/// A credential the operator may need.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum CredentialKey {
    Pin,
    TotpSecret,
    AccessToken,
    ApiKey,
    ApiSecret,
    Mobile,
}

impl CredentialKey {
    pub const ALL: [CredentialKey; 6] = [
        CredentialKey::Pin,
        CredentialKey::TotpSecret,
        CredentialKey::AccessToken,
        CredentialKey::ApiKey,
        CredentialKey::ApiSecret,
        CredentialKey::Mobile,
    ];

    /// The key's name in `credentialsSecret` (and in `spec.credentials`).
    pub fn default_key(self) -> &'static str {
        match self {
            CredentialKey::Pin => "pin",
            CredentialKey::TotpSecret => "totpSecret",
            CredentialKey::AccessToken => "accessToken",
            CredentialKey::ApiKey => "apiKey",
            CredentialKey::ApiSecret => "apiSecret",
            CredentialKey::Mobile => "mobile",
        }
    }
}

/// Where a credential is looked up.
pub fn source_of(spec: &DhanAccountSpec, key: CredentialKey) -> Option<SecretKeyRef> {
    let overrides = spec.credentials.clone().unwrap_or_default();
    let explicit = match key {
        CredentialKey::Pin => overrides.pin,
        CredentialKey::TotpSecret => overrides.totp_secret,
        CredentialKey::AccessToken => overrides.access_token,
        CredentialKey::ApiKey => overrides.api_key,
        CredentialKey::ApiSecret => overrides.api_secret,
        CredentialKey::Mobile => overrides.mobile,
    };
    explicit.or_else(|| {
        spec.credentials_secret.as_ref().map(|name| SecretKeyRef {
            secret_name: name.clone(),
            key: key.default_key().to_string(),
        })
    })
}

/// A credential value. Its `Debug` never shows the value.
#[derive(Clone)]
pub struct Sensitive(String);

impl Sensitive {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Sensitive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sensitive(<redacted>)")
    }
}

/// Why a credential is unavailable, in words a person can act on (never the value).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Missing {
    NoSource,
    SecretNotFound(String),
    KeyNotFound { secret: String, key: String },
    Empty { secret: String, key: String },
}

impl std::fmt::Display for Missing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Missing::NoSource => f.write_str("no credentialsSecret or credentials entry names it"),
            Missing::SecretNotFound(s) => write!(f, "Secret {s:?} not found"),
            Missing::KeyNotFound { secret, key } => {
                write!(f, "Secret {secret:?} has no key {key:?}")
            }
            Missing::Empty { secret, key } => {
                write!(f, "key {key:?} in Secret {secret:?} is empty")
            }
        }
    }
}

/// The credentials of one account, resolved.
#[derive(Clone, Debug, Default)]
pub struct Credentials {
    values: BTreeMap<CredentialKey, Result<Sensitive, Missing>>,
    sources: BTreeMap<CredentialKey, SecretKeyRef>,
    /// Changes whenever the client ID, the methods or a credential's value changes (or a
    /// credential appears or disappears).
    pub fingerprint: String,
}

impl Credentials {
    pub fn get(&self, key: CredentialKey) -> Result<&Sensitive, Missing> {
        match self.values.get(&key) {
            Some(Ok(value)) => Ok(value),
            Some(Err(missing)) => Err(missing.clone()),
            None => Err(Missing::NoSource),
        }
    }

    /// "key "pin" in Secret "alice-dhan"" — for messages.
    pub fn describe(&self, key: CredentialKey) -> String {
        match self.sources.get(&key) {
            Some(s) => format!("key {:?} in Secret {:?}", s.key, s.secret_name),
            None => format!("{:?}", key.default_key()),
        }
    }

    /// Resolves every credential from Secrets in `namespace`. Kubernetes errors other than
    /// "not found" are returned, so a flaky API server does not look like a deleted Secret.
    pub async fn load(
        secrets: &Api<Secret>,
        spec: &DhanAccountSpec,
    ) -> Result<Credentials, kube::Error> {
        let sources: BTreeMap<_, _> = CredentialKey::ALL
            .into_iter()
            .filter_map(|key| source_of(spec, key).map(|s| (key, s)))
            .collect();
        let names: BTreeSet<&str> = sources.values().map(|s| s.secret_name.as_str()).collect();
        let mut fetched = BTreeMap::new();
        for name in names {
            fetched.insert(name.to_string(), secrets.get_opt(name).await?);
        }
        Ok(Self::resolve(sources, &fetched, spec))
    }

    fn resolve(
        sources: BTreeMap<CredentialKey, SecretKeyRef>,
        fetched: &BTreeMap<String, Option<Secret>>,
        spec: &DhanAccountSpec,
    ) -> Credentials {
        let mut values = BTreeMap::new();
        for (key, source) in &sources {
            let value = match fetched.get(&source.secret_name).and_then(|s| s.as_ref()) {
                None => Err(Missing::SecretNotFound(source.secret_name.clone())),
                Some(secret) => match secret_value(secret, &source.key) {
                    None => Err(Missing::KeyNotFound {
                        secret: source.secret_name.clone(),
                        key: source.key.clone(),
                    }),
                    Some(v) if v.trim().is_empty() => Err(Missing::Empty {
                        secret: source.secret_name.clone(),
                        key: source.key.clone(),
                    }),
                    Some(v) => Ok(Sensitive(v.trim().to_string())),
                },
            };
            values.insert(*key, value);
        }
        let fingerprint = fingerprint(spec, &values);
        Credentials {
            values,
            sources,
            fingerprint,
        }
    }

    /// A keyed hash of exactly what `method` submits to Dhan (docs/dhan-api.md §1, §3): what
    /// a refusal is remembered by, so the same values are never sent again that day.
    pub fn submission_hash(&self, client_id: &str, method: Method) -> Option<String> {
        let keys: &[CredentialKey] = match method {
            Method::Renew => return None,
            Method::Totp => &[CredentialKey::Pin, CredentialKey::TotpSecret],
            Method::Browser => &[
                CredentialKey::Mobile,
                CredentialKey::Pin,
                CredentialKey::TotpSecret,
            ],
        };
        let mut mac = keyed(client_id);
        mac.update(method.as_str().as_bytes());
        for key in keys {
            let value = self.get(*key).ok()?;
            mac.update(format!(";{}={}", key.default_key(), value.expose()).as_bytes());
        }
        Some(short(mac))
    }
}

/// What a held failure is remembered by: the client ID, the methods, and the credentials'
/// values (or why each is missing) — never the Secrets' resource versions, which change with a
/// label, an annotation or a sync that changes nothing the operator sends.
fn fingerprint(
    spec: &DhanAccountSpec,
    values: &BTreeMap<CredentialKey, Result<Sensitive, Missing>>,
) -> String {
    let mut mac = keyed(spec.client_id.trim());
    mac.update(format!("methods={:?};", spec.methods).as_bytes());
    for (key, value) in values {
        let shown = match value {
            Ok(value) => format!("{}={};", key.default_key(), value.expose()),
            Err(missing) => format!("{}!{missing};", key.default_key()),
        };
        mac.update(shown.as_bytes());
    }
    short(mac)
}

/// An HMAC keyed by the client ID. The hashes land in status and in claims: a short PIN alone
/// could be found by trying every value, so every hash covers the TOTP key (or a token) too.
fn keyed(client_id: &str) -> Hmac<Sha256> {
    Hmac::<Sha256>::new_from_slice(format!("dhan-operator/credentials/{client_id}").as_bytes())
        .expect("HMAC takes any key length")
}

fn short(mac: Hmac<Sha256>) -> String {
    mac.finalize().into_bytes()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Credentials {
    /// What these credentials offer the decision, as plain facts (never a value).
    pub fn offered(&self, browser_logins: bool) -> Offered {
        let missing = CredentialKey::ALL
            .iter()
            .filter(|k| **k != CredentialKey::AccessToken)
            .filter_map(|k| self.get(*k).err().map(|m| (k.default_key(), m.to_string())))
            .collect();
        let totp_key_unusable = self.get(CredentialKey::TotpSecret).ok().and_then(|raw| {
            TotpKey::parse(raw.expose()).err().map(|e| {
                format!(
                    "{} is not a usable TOTP key: {e}",
                    self.describe(CredentialKey::TotpSecret)
                )
            })
        });
        let mobile_unusable = self.get(CredentialKey::Mobile).ok().and_then(|mobile| {
            (crate::browser::config::mobile_digits(mobile.expose()).len() < 10).then(|| {
                format!(
                    "{} is not a mobile number (fewer than 10 digits)",
                    self.describe(CredentialKey::Mobile)
                )
            })
        });
        Offered {
            missing,
            totp_key_unusable,
            mobile_unusable,
            browser_logins,
        }
    }
}

fn secret_value(secret: &Secret, key: &str) -> Option<String> {
    if let Some(bytes) = secret.data.as_ref().and_then(|d| d.get(key)) {
        return Some(String::from_utf8_lossy(&bytes.0).into_owned());
    }
    secret
        .string_data
        .as_ref()
        .and_then(|d| d.get(key))
        .cloned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::CredentialSources;
    use k8s_openapi::ByteString;
    use kube::api::ObjectMeta;

    fn secret(name: &str, version: &str, data: &[(&str, &str)]) -> Secret {
        Secret {
            metadata: ObjectMeta {
                name: Some(name.into()),
                resource_version: Some(version.into()),
                ..Default::default()
            },
            data: Some(
                data.iter()
                    .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                    .collect(),
            ),
            ..Default::default()
        }
    }

    fn spec() -> DhanAccountSpec {
        DhanAccountSpec {
            client_id: "1000000001".into(),
            credentials_secret: Some("alice-dhan".into()),
            credentials: Some(Box::new(CredentialSources {
                api_key: Some(SecretKeyRef {
                    secret_name: "team-app".into(),
                    key: "id".into(),
                }),
                ..Default::default()
            })),
            ..Default::default()
        }
    }

    fn resolve(fetched: &[(&str, Option<Secret>)]) -> Credentials {
        let spec = spec();
        let sources = CredentialKey::ALL
            .into_iter()
            .filter_map(|key| source_of(&spec, key).map(|s| (key, s)))
            .collect();
        let fetched = fetched
            .iter()
            .map(|(n, s)| (n.to_string(), s.clone()))
            .collect();
        Credentials::resolve(sources, &fetched, &spec)
    }

    #[test]
    fn reads_defaults_and_overrides_from_several_secrets() {
        let creds = resolve(&[
            (
                "alice-dhan",
                Some(secret("alice-dhan", "1", &[("pin", "123456\n")])),
            ),
            (
                "team-app",
                Some(secret("team-app", "7", &[("id", "app-1")])),
            ),
        ]);
        assert_eq!(creds.get(CredentialKey::Pin).unwrap().expose(), "123456");
        assert_eq!(creds.get(CredentialKey::ApiKey).unwrap().expose(), "app-1");
        assert_eq!(
            creds.get(CredentialKey::TotpSecret).unwrap_err(),
            Missing::KeyNotFound {
                secret: "alice-dhan".into(),
                key: "totpSecret".into()
            }
        );
        assert_eq!(
            creds.describe(CredentialKey::ApiKey),
            "key \"id\" in Secret \"team-app\""
        );
    }

    #[test]
    fn missing_secret_is_named_and_changes_the_fingerprint_when_it_appears() {
        let before = resolve(&[("alice-dhan", None), ("team-app", None)]);
        assert_eq!(
            before.get(CredentialKey::Pin).unwrap_err().to_string(),
            "Secret \"alice-dhan\" not found"
        );
        let after = resolve(&[
            (
                "alice-dhan",
                Some(secret("alice-dhan", "5", &[("pin", "1")])),
            ),
            ("team-app", None),
        ]);
        assert_ne!(before.fingerprint, after.fingerprint);
    }

    #[test]
    fn the_fingerprint_follows_values_not_resource_versions() {
        let with = |version: &str, pin: &str| {
            resolve(&[
                (
                    "alice-dhan",
                    Some(secret("alice-dhan", version, &[("pin", pin)])),
                ),
                ("team-app", None),
            ])
        };
        assert_eq!(
            with("1", "123456").fingerprint,
            with("2", "123456").fingerprint,
            "a label or an annotation changes the resource version, not what is sent"
        );
        assert_ne!(
            with("1", "123456").fingerprint,
            with("2", "654321").fingerprint
        );
    }

    #[test]
    fn a_submission_hash_covers_what_the_method_sends() {
        let creds = |pin: &str, mobile: &str| {
            resolve(&[(
                "alice-dhan",
                Some(secret(
                    "alice-dhan",
                    "1",
                    &[
                        ("pin", pin),
                        ("totpSecret", "JBSWY3DPEHPK3PXP"),
                        ("mobile", mobile),
                    ],
                )),
            )])
        };
        let totp = |c: &Credentials| c.submission_hash("1000000001", Method::Totp);
        assert_eq!(
            totp(&creds("1", "9876543210")),
            totp(&creds("1", "9999999999"))
        );
        assert_ne!(
            totp(&creds("1", "9876543210")),
            totp(&creds("2", "9876543210"))
        );
        let browser = |c: &Credentials| c.submission_hash("1000000001", Method::Browser);
        assert_ne!(
            browser(&creds("1", "9876543210")),
            browser(&creds("1", "9999999999"))
        );
        assert_ne!(
            totp(&creds("1", "9876543210")),
            creds("1", "9876543210").submission_hash("1000000002", Method::Totp)
        );
        assert_eq!(creds("1", "9").submission_hash("1", Method::Renew), None);
        let missing = resolve(&[("alice-dhan", None)]);
        assert_eq!(totp(&missing), None, "nothing to send");
    }

    #[test]
    fn debug_output_never_shows_values() {
        let creds = resolve(&[(
            "alice-dhan",
            Some(secret("alice-dhan", "1", &[("pin", "918273")])),
        )]);
        assert!(!format!("{creds:?}").contains("918273"));
    }
}
