//! The ways to obtain a token, and when each can be used.

/// A way to obtain a token.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Method {
    /// RenewToken on a live Dhan Web (`SELF`) token (docs/dhan-api.md §2).
    Renew,
    /// generateAccessToken with PIN + TOTP (docs/dhan-api.md §1).
    Totp,
    /// API-key consent with a browser login (docs/dhan-api.md §3).
    Browser,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Renew => "renew",
            Method::Totp => "totp",
            Method::Browser => "browser",
        }
    }

    pub fn parse(name: &str) -> Option<Method> {
        match name {
            "renew" => Some(Method::Renew),
            "totp" => Some(Method::Totp),
            "browser" => Some(Method::Browser),
            _ => None,
        }
    }
}

/// What an account's credentials offer, as plain facts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Offered {
    /// Credentials that are missing or empty: their key name and why, e.g.
    /// `("pin", "Secret \"a\" has no key \"pin\"")`.
    pub missing: Vec<(&'static str, String)>,
    /// Why the TOTP key cannot be used although present (not base32, too short).
    pub totp_key_unusable: Option<String>,
    /// Why the mobile number cannot be used although present.
    pub mobile_unusable: Option<String>,
    /// Whether this operator runs browser-login Jobs.
    pub browser_logins: bool,
}

impl Offered {
    /// Which methods the credentials allow.
    pub fn usable(&self) -> Usable {
        let need = |keys: &[&str]| -> Result<(), String> {
            let missing: Vec<String> = self
                .missing
                .iter()
                .filter(|(key, _)| keys.contains(key))
                .map(|(key, why)| format!("{key} ({why})"))
                .collect();
            if missing.is_empty() {
                Ok(())
            } else {
                Err(format!("needs {}", missing.join(", ")))
            }
        };
        let key_usable = || self.totp_key_unusable.clone().map_or(Ok(()), Err);
        let totp = need(&["pin", "totpSecret"]).and_then(|()| key_usable());
        let browser = if self.browser_logins {
            need(&["apiKey", "apiSecret", "mobile", "pin", "totpSecret"])
                .and_then(|()| key_usable())
                .and_then(|()| self.mobile_unusable.clone().map_or(Ok(()), Err))
        } else {
            Err(
                "browser logins are off on this operator (start it with --browser-logins; \
                 Helm value browserLogin.enabled)"
                    .into(),
            )
        };
        Usable { totp, browser }
    }
}

/// Whether the `totp` and `browser` methods can be used with the account's credentials and
/// this operator's settings; `Err` says what is missing. (`renew` depends on the token alone.)
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Usable {
    pub totp: Result<(), String>,
    pub browser: Result<(), String>,
}

impl Default for Usable {
    fn default() -> Self {
        Usable {
            totp: Err("no credentials".into()),
            browser: Err("no credentials".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn missing(keys: &[&'static str]) -> Offered {
        Offered {
            missing: keys.iter().map(|k| (*k, "not found".to_string())).collect(),
            browser_logins: true,
            ..Default::default()
        }
    }

    #[test]
    fn which_methods_the_credentials_allow() {
        let all = Offered {
            browser_logins: true,
            ..Default::default()
        };
        assert_eq!(all.usable().totp, Ok(()));
        assert_eq!(all.usable().browser, Ok(()));
        // An account with only a pasted web token: neither minting method applies.
        let web_only = missing(&["pin", "totpSecret", "apiKey", "apiSecret", "mobile"]);
        let usable = web_only.usable();
        assert!(
            usable
                .totp
                .unwrap_err()
                .contains("pin (not found), totpSecret")
        );
        assert!(usable.browser.unwrap_err().contains("apiKey (not found)"));
        // PIN + TOTP but no app: totp only.
        let totp_only = missing(&["apiKey", "apiSecret", "mobile"]);
        assert_eq!(totp_only.usable().totp, Ok(()));
        assert!(totp_only.usable().browser.is_err());
        // A TOTP key that is not base32 stops both.
        let bad_key = Offered {
            totp_key_unusable: Some("not base32".into()),
            ..all.clone()
        };
        assert_eq!(bad_key.usable().totp, Err("not base32".into()));
        assert_eq!(bad_key.usable().browser, Err("not base32".into()));
        let bad_mobile = Offered {
            mobile_unusable: Some("fewer than 10 digits".into()),
            ..all.clone()
        };
        assert_eq!(bad_mobile.usable().totp, Ok(()));
        assert_eq!(
            bad_mobile.usable().browser,
            Err("fewer than 10 digits".into())
        );
        let off = Offered {
            browser_logins: false,
            ..all
        };
        assert!(
            off.usable()
                .browser
                .unwrap_err()
                .contains("--browser-logins")
        );
    }
}
