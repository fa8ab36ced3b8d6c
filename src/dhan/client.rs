//! The HTTP client for Dhan's token endpoints (docs/dhan-api.md §1–§4, §7).
//!
//! Deliberately small: one method per endpoint, no retries and no scheduling. Whether and when
//! to call again is the caller's decision, informed by [`DhanError::kind`]. Read-only towards
//! the account: there is no `setIP`/`modifyIP` here (§7: an IP change locks it for 7 days).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
// tokio's, not std's: it follows tokio's clock, so a call's duration is virtual under a paused
// runtime like every other time the operator reads. Only logged.
use reqwest::header::{ACCEPT, CONTENT_LENGTH, HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, StatusCode};
use tokio::time::Instant;
use url::Url;

use super::error::{DhanError, Endpoint};
use super::response::{self, IpInfo, Profile};
use super::token::{AccessToken, IssuedToken};
use crate::clock::Clock;

/// Dhan bodies are a few hundred bytes; anything far larger is not Dhan.
const MAX_BODY_BYTES: usize = 1 << 20;

/// Header names are case-insensitive in HTTP (and lower case on HTTP/2); `dhanClientId` (§2)
/// goes on the wire as `dhanclientid`.
const ACCESS_TOKEN: HeaderName = HeaderName::from_static("access-token");
const DHAN_CLIENT_ID: HeaderName = HeaderName::from_static("dhanclientid");
/// Underscored names, exactly as Dhan documents them (§3). Proxies that drop underscored
/// headers will break the consent flow; nothing can be done about that here.
const APP_ID: HeaderName = HeaderName::from_static("app_id");
const APP_SECRET: HeaderName = HeaderName::from_static("app_secret");

/// A client for one Dhan environment (production or sandbox). Cheap to clone.
#[derive(Clone)]
pub struct DhanClient {
    http: reqwest::Client,
    /// Auth host base, without a trailing slash (`https://auth.dhan.co`).
    auth_base: String,
    /// API base including `/v2`, without a trailing slash (`https://api.dhan.co/v2`).
    api_base: String,
    /// Only read to assume a 24 h lifetime for tokens whose expiry cannot be read.
    clock: Arc<dyn Clock>,
}

impl fmt::Debug for DhanClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DhanClient")
            .field("auth_base", &self.auth_base)
            .field("api_base", &self.api_base)
            .finish_non_exhaustive()
    }
}

impl DhanClient {
    /// Creates a client.
    ///
    /// `auth_url` is the auth host (`https://auth.dhan.co`); `api_url` the API host with or
    /// without `/v2` (`https://api.dhan.co`, or the sandbox's documented
    /// `https://sandbox.dhan.co/v2`), trailing slash optional. `timeout` bounds each request as
    /// a whole. `clock` is the operator's.
    ///
    /// If no rustls crypto provider is installed yet, ring's is installed process-wide: reqwest
    /// is built without one and would otherwise panic here.
    pub fn new(
        auth_url: &str,
        api_url: &str,
        timeout: Duration,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, DhanError> {
        Self::with_roots(auth_url, api_url, timeout, clock, None)
    }

    /// Like [`DhanClient::new`], trusting the PEM certificates in `extra_roots` for Dhan's hosts
    /// besides the system's (a TLS-inspecting proxy's CA, a test server's certificate).
    pub fn with_roots(
        auth_url: &str,
        api_url: &str,
        timeout: Duration,
        clock: Arc<dyn Clock>,
        extra_roots: Option<&[u8]>,
    ) -> Result<Self, DhanError> {
        let auth_base = normalise_base(auth_url, "auth URL")?;
        let api_root = normalise_base(api_url, "API URL")?;
        let api_root = match api_root.len().checked_sub(3) {
            Some(cut) if api_root[cut..].eq_ignore_ascii_case("/v2") => &api_root[..cut],
            _ => api_root.as_str(),
        };
        let api_base = format!("{api_root}/v2");

        if rustls::crypto::CryptoProvider::get_default().is_none() {
            // Losing a race with another installer is fine: any provider will do.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let mut builder = reqwest::Client::builder();
        if let Some(pem) = extra_roots {
            let certificates = reqwest::Certificate::from_pem_bundle(pem).map_err(|error| {
                DhanError::InvalidConfig {
                    detail: format!("the extra CA certificates: {}", error_chain(&error)),
                }
            })?;
            if certificates.is_empty() {
                return Err(DhanError::InvalidConfig {
                    detail: "the extra CA file holds no PEM certificate".into(),
                });
            }
            for certificate in certificates {
                builder = builder.add_root_certificate(certificate);
            }
        }
        let http = builder
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            // Dhan does not redirect API calls; following one could carry the access-token
            // header to another host.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("dhan-operator/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|error| DhanError::InvalidConfig {
                detail: error_chain(&error.without_url()),
            })?;
        Ok(Self {
            http,
            auth_base,
            api_base,
            clock,
        })
    }

    /// Mints a token with PIN and TOTP (docs/dhan-api.md §1).
    ///
    /// `POST {auth}/app/generateAccessToken?dhanClientId=&pin=&totp=`, no body. **Invalidates the
    /// client's previous token.** The URL holds the PIN and code, so it never appears in errors
    /// or logs.
    pub async fn generate_access_token(
        &self,
        client_id: &str,
        pin: &str,
        totp_code: &str,
    ) -> Result<IssuedToken, DhanError> {
        let endpoint = Endpoint::GenerateAccessToken;
        let secrets = [pin, totp_code];
        let url = self.auth_url(
            "/app/generateAccessToken",
            &[
                ("dhanClientId", client_id),
                ("pin", pin),
                ("totp", totp_code),
            ],
        )?;
        let (status, body) = self
            .call(endpoint, Method::POST, url, HeaderMap::new(), &secrets)
            .await?;
        response::parse_issued_token(endpoint, status, &body, self.now())
            .map_err(|e| e.redact(&secrets))
    }

    /// Renews a Dhan Web (`SELF`) token for another 24 h (docs/dhan-api.md §2).
    ///
    /// `GET {api}/v2/RenewToken` with headers `access-token` and `dhanClientId`. The old token
    /// stops working; use the returned one at once. `APP` tokens get
    /// [`DhanError::RenewNotAllowed`].
    pub async fn renew_token(
        &self,
        client_id: &str,
        token: &AccessToken,
    ) -> Result<IssuedToken, DhanError> {
        let endpoint = Endpoint::RenewToken;
        let secrets = [token.expose()];
        let mut headers = token_headers(token)?;
        headers.insert(DHAN_CLIENT_ID, plain_header(client_id, "client ID")?);
        let url = self.api_url("/RenewToken")?;
        let (status, body) = self
            .call(endpoint, Method::GET, url, headers, &secrets)
            .await?;
        response::parse_issued_token(endpoint, status, &body, self.now())
            .map_err(|e| e.redact(&secrets))
    }

    /// Reads the profile: the liveness probe for a token (docs/dhan-api.md §4).
    pub async fn profile(&self, token: &AccessToken) -> Result<Profile, DhanError> {
        let secrets = [token.expose()];
        let url = self.api_url("/profile")?;
        let (status, body) = self
            .call(
                Endpoint::Profile,
                Method::GET,
                url,
                token_headers(token)?,
                &secrets,
            )
            .await?;
        response::parse_profile(status, &body).map_err(|e| e.redact(&secrets))
    }

    /// Starts the API-key flow: creates a consent and returns its `consentAppId`
    /// (docs/dhan-api.md §3.1). At most 25 per client per day.
    pub async fn generate_consent(
        &self,
        client_id: &str,
        app_id: &str,
        app_secret: &str,
    ) -> Result<String, DhanError> {
        let secrets = [app_secret];
        let url = self.auth_url("/app/generate-consent", &[("client_id", client_id)])?;
        let headers = app_headers(app_id, app_secret)?;
        let (status, body) = self
            .call(
                Endpoint::GenerateConsent,
                Method::POST,
                url,
                headers,
                &secrets,
            )
            .await?;
        response::parse_consent(status, &body).map_err(|e| e.redact(&secrets))
    }

    /// The browser login page for a consent (docs/dhan-api.md §3.2).
    pub fn consent_login_url(&self, consent_app_id: &str) -> String {
        let mut url = Url::parse(&format!("{}/login/consentApp-login", self.auth_base))
            .expect("auth base was validated in new()");
        url.query_pairs_mut()
            .append_pair("consentAppId", consent_app_id);
        url.into()
    }

    /// Exchanges the `tokenId` from the login redirect for a token (docs/dhan-api.md §3.3).
    ///
    /// The docs say POST, the official SDK uses GET: GET is tried first, POST only when the
    /// server answers 404 or 405 (the method is not routed), so one consent is consumed once.
    pub async fn consume_consent(
        &self,
        token_id: &str,
        app_id: &str,
        app_secret: &str,
    ) -> Result<IssuedToken, DhanError> {
        let endpoint = Endpoint::ConsumeConsent;
        let secrets = [app_secret, token_id];
        let url = self.auth_url("/app/consumeApp-consent", &[("tokenId", token_id)])?;
        let headers = app_headers(app_id, app_secret)?;
        let (mut status, mut body) = self
            .call(
                endpoint,
                Method::GET,
                url.clone(),
                headers.clone(),
                &secrets,
            )
            .await?;
        if status == StatusCode::NOT_FOUND.as_u16()
            || status == StatusCode::METHOD_NOT_ALLOWED.as_u16()
        {
            tracing::debug!(
                endpoint = endpoint.as_str(),
                status,
                "GET not accepted; retrying with POST"
            );
            (status, body) = self
                .call(endpoint, Method::POST, url, headers, &secrets)
                .await?;
        }
        response::parse_issued_token(endpoint, status, &body, self.now())
            .map_err(|e| e.redact(&secrets))
    }

    /// Reads the static IPs registered on the account (docs/dhan-api.md §7). Never changes them.
    pub async fn ip_info(&self, token: &AccessToken) -> Result<IpInfo, DhanError> {
        let secrets = [token.expose()];
        let url = self.api_url("/ip/getIP")?;
        let (status, body) = self
            .call(
                Endpoint::IpInfo,
                Method::GET,
                url,
                token_headers(token)?,
                &secrets,
            )
            .await?;
        response::parse_ip_info(status, &body).map_err(|e| e.redact(&secrets))
    }

    fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    fn auth_url(&self, path: &str, query: &[(&str, &str)]) -> Result<Url, DhanError> {
        let mut url = parse_url(&format!("{}{path}", self.auth_base))?;
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        Ok(url)
    }

    fn api_url(&self, path: &str) -> Result<Url, DhanError> {
        parse_url(&format!("{}{path}", self.api_base))
    }

    /// Sends one request and returns status and body. Only transport failures are errors here;
    /// HTTP statuses are judged by the body parsers (§1: success is decided by content).
    async fn call(
        &self,
        endpoint: Endpoint,
        method: Method,
        url: Url,
        mut headers: HeaderMap,
        secrets: &[&str],
    ) -> Result<(u16, String), DhanError> {
        headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
        let mut request = self.http.request(method.clone(), url).headers(headers);
        if method == Method::POST {
            // Dhan's POSTs take everything in the query string (§1, §3). hyper sends no
            // Content-Length for an empty body, and servers may answer 411 to a POST without one
            // (RFC 9110 §8.6: a POST should carry it).
            request = request.header(CONTENT_LENGTH, "0");
        }
        let started = Instant::now();
        let result = execute(request).await.map_err(|e| e.redact(secrets));
        let elapsed_ms = started.elapsed().as_millis() as u64;
        match &result {
            Ok((status, _)) => tracing::debug!(
                endpoint = endpoint.as_str(),
                %method,
                status,
                elapsed_ms,
                "Dhan answered"
            ),
            Err(error) => tracing::debug!(
                endpoint = endpoint.as_str(),
                %method,
                reason = error.reason(),
                elapsed_ms,
                "Dhan call failed"
            ),
        }
        result
    }
}

/// Sends a request and reads its body (bounded).
async fn execute(request: reqwest::RequestBuilder) -> Result<(u16, String), DhanError> {
    let mut response = request.send().await.map_err(transport_error)?;
    let status = response.status().as_u16();
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(transport_error)? {
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(DhanError::UnexpectedResponse {
                status,
                detail: format!("body larger than {MAX_BODY_BYTES} bytes"),
            });
        }
        body.extend_from_slice(&chunk);
    }
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// Maps a transport failure; the URL (which may hold the PIN and TOTP code, §1) is stripped.
/// A connection that never opened sent nothing; any other failure may come after Dhan got the
/// request, which matters for a mint (§1).
fn transport_error(error: reqwest::Error) -> DhanError {
    let error = error.without_url();
    let detail = error_chain(&error);
    if error.is_timeout() {
        DhanError::Timeout
    } else if error.is_connect() {
        DhanError::Network { detail }
    } else {
        DhanError::ConnectionLost { detail }
    }
}

/// `error: cause: cause…`, so "connection refused" is visible, not just "error sending request".
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

fn normalise_base(raw: &str, what: &str) -> Result<String, DhanError> {
    let invalid = |why: &str| DhanError::InvalidConfig {
        detail: format!("{what} {why}"),
    };
    let trimmed = raw.trim().trim_end_matches('/');
    let url = Url::parse(trimmed).map_err(|e| invalid(&format!("is not a URL ({e})")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid("must be http or https"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(invalid("has no host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid("must not have a query or fragment"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid("must not contain credentials"));
    }
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

fn parse_url(raw: &str) -> Result<Url, DhanError> {
    Url::parse(raw).map_err(|e| DhanError::InvalidConfig {
        detail: format!("cannot build a Dhan URL ({e})"),
    })
}

fn token_headers(token: &AccessToken) -> Result<HeaderMap, DhanError> {
    let mut value =
        HeaderValue::from_str(token.expose().trim()).map_err(|_| DhanError::MalformedToken {
            detail: "contains characters not allowed in an HTTP header",
        })?;
    value.set_sensitive(true);
    let mut headers = HeaderMap::new();
    headers.insert(ACCESS_TOKEN, value);
    Ok(headers)
}

fn app_headers(app_id: &str, app_secret: &str) -> Result<HeaderMap, DhanError> {
    let mut secret =
        HeaderValue::from_str(app_secret.trim()).map_err(|_| DhanError::InvalidConfig {
            detail: "API secret contains characters not allowed in an HTTP header".into(),
        })?;
    secret.set_sensitive(true);
    let mut headers = HeaderMap::new();
    headers.insert(APP_ID, plain_header(app_id, "API key")?);
    headers.insert(APP_SECRET, secret);
    Ok(headers)
}

fn plain_header(value: &str, what: &str) -> Result<HeaderValue, DhanError> {
    HeaderValue::from_str(value.trim()).map_err(|_| DhanError::InvalidConfig {
        detail: format!("{what} contains characters not allowed in an HTTP header"),
    })
}

#[cfg(test)]
mod tests;
