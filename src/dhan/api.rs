//! The Dhan calls the operator makes, as a trait: [`super::DhanClient`] talks to Dhan, and the
//! reconciler's tests put a scripted Dhan in its place.

use super::{AccessToken, DhanClient, DhanError, IpInfo, IssuedToken, Profile};
use std::future::Future;
use std::pin::Pin;

/// A boxed Dhan call.
pub type Call<'a, T> = Pin<Box<dyn Future<Output = Result<T, DhanError>> + Send + 'a>>;

/// Dhan's token endpoints (docs/dhan-api.md §1–§4, §7).
pub trait DhanApi: Send + Sync {
    /// generateAccessToken with PIN and TOTP (§1). Revokes the client's previous token.
    fn generate_access_token<'a>(
        &'a self,
        client_id: &'a str,
        pin: &'a str,
        totp: &'a str,
    ) -> Call<'a, IssuedToken>;
    /// RenewToken on a live web token (§2). Revokes the previous token.
    fn renew_token<'a>(
        &'a self,
        client_id: &'a str,
        token: &'a AccessToken,
    ) -> Call<'a, IssuedToken>;
    /// The profile probe (§4).
    fn profile<'a>(&'a self, token: &'a AccessToken) -> Call<'a, Profile>;
    /// generate-consent (§3 step 1): the consent id.
    fn generate_consent<'a>(
        &'a self,
        client_id: &'a str,
        app_id: &'a str,
        app_secret: &'a str,
    ) -> Call<'a, String>;
    /// The consent login page a browser opens (§3 step 2).
    fn consent_login_url(&self, consent_id: &str) -> String;
    /// consumeApp-consent (§3 step 3).
    fn consume_consent<'a>(
        &'a self,
        token_id: &'a str,
        app_id: &'a str,
        app_secret: &'a str,
    ) -> Call<'a, IssuedToken>;
    /// The registered static IPs (§7).
    fn ip_info<'a>(&'a self, token: &'a AccessToken) -> Call<'a, IpInfo>;
}

impl DhanApi for DhanClient {
    fn generate_access_token<'a>(
        &'a self,
        client_id: &'a str,
        pin: &'a str,
        totp: &'a str,
    ) -> Call<'a, IssuedToken> {
        Box::pin(DhanClient::generate_access_token(
            self, client_id, pin, totp,
        ))
    }

    fn renew_token<'a>(
        &'a self,
        client_id: &'a str,
        token: &'a AccessToken,
    ) -> Call<'a, IssuedToken> {
        Box::pin(DhanClient::renew_token(self, client_id, token))
    }

    fn profile<'a>(&'a self, token: &'a AccessToken) -> Call<'a, Profile> {
        Box::pin(DhanClient::profile(self, token))
    }

    fn generate_consent<'a>(
        &'a self,
        client_id: &'a str,
        app_id: &'a str,
        app_secret: &'a str,
    ) -> Call<'a, String> {
        Box::pin(DhanClient::generate_consent(
            self, client_id, app_id, app_secret,
        ))
    }

    fn consent_login_url(&self, consent_id: &str) -> String {
        DhanClient::consent_login_url(self, consent_id)
    }

    fn consume_consent<'a>(
        &'a self,
        token_id: &'a str,
        app_id: &'a str,
        app_secret: &'a str,
    ) -> Call<'a, IssuedToken> {
        Box::pin(DhanClient::consume_consent(
            self, token_id, app_id, app_secret,
        ))
    }

    fn ip_info<'a>(&'a self, token: &'a AccessToken) -> Call<'a, IpInfo> {
        Box::pin(DhanClient::ip_info(self, token))
    }
}
