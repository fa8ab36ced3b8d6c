//! Where credentials may be typed: pages on the login URL's own host, or on a host of the
//! configured allow-list (`DHAN_LOGIN_ALLOWED_HOSTS`, e.g. `*.dhan.co`), over the login URL's
//! scheme or HTTPS. A page that leaves them gets no keystrokes.

use std::fmt;

use url::Url;

/// One allow-list entry.
#[derive(Clone, PartialEq, Eq)]
enum HostRule {
    Exact(String),
    /// `*.example.com`: any subdomain, at any depth, not the apex itself.
    Subdomains(String),
}

/// The hosts (and schemes) a login may type into.
#[derive(Clone, PartialEq, Eq)]
pub struct AllowedHosts {
    rules: Vec<HostRule>,
    /// The login URL is plain HTTP (a local mock): HTTP pages are allowed too. Otherwise only HTTPS.
    allow_http: bool,
}

impl AllowedHosts {
    /// The login URL's host, plus the comma- or space-separated `extra` hosts.
    pub fn new(login_url: &Url, extra: Option<&str>) -> Result<AllowedHosts, String> {
        let own = login_url
            .host_str()
            .ok_or_else(|| "the login URL has no host".to_string())?;
        let mut rules = vec![HostRule::Exact(own.to_ascii_lowercase())];
        for entry in extra
            .unwrap_or_default()
            .split([',', ' ', '\n'])
            .map(str::trim)
            .filter(|e| !e.is_empty())
        {
            rules.push(parse_rule(entry)?);
        }
        Ok(AllowedHosts {
            rules,
            allow_http: login_url.scheme() == "http",
        })
    }

    /// Whether `host` is on the list (scheme not considered).
    pub fn allows_host(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.rules.iter().any(|rule| match rule {
            HostRule::Exact(h) => *h == host,
            HostRule::Subdomains(base) => host
                .strip_suffix(base.as_str())
                .is_some_and(|rest| !rest.is_empty()),
        })
    }

    /// `Ok` when credentials may be typed on a page at `url`; otherwise the page's origin, for
    /// the error message.
    pub fn check(&self, url: &str) -> Result<(), String> {
        let Ok(parsed) = Url::parse(url) else {
            return Err("an address that is not a URL".into());
        };
        let scheme_ok =
            parsed.scheme() == "https" || (self.allow_http && parsed.scheme() == "http");
        let host_ok = parsed.host_str().is_some_and(|h| self.allows_host(h));
        if scheme_ok && host_ok {
            Ok(())
        } else {
            Err(origin_of(&parsed))
        }
    }
}

impl fmt::Debug for AllowedHosts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown: Vec<String> = self
            .rules
            .iter()
            .map(|r| match r {
                HostRule::Exact(h) => h.clone(),
                HostRule::Subdomains(base) => format!("*.{base}"),
            })
            .collect();
        write!(f, "{shown:?} (http allowed: {})", self.allow_http)
    }
}

fn parse_rule(entry: &str) -> Result<HostRule, String> {
    let lower = entry.to_ascii_lowercase();
    let (wildcard, host) = match lower.strip_prefix("*.") {
        Some(base) => (true, base.to_owned()),
        None => (false, lower.clone()),
    };
    let valid_label = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !l.starts_with('-')
    };
    let labels: Vec<&str> = host.split('.').collect();
    if !labels.iter().all(|l| valid_label(l)) {
        return Err(format!(
            "{entry:?} is not a host name or *.domain (no scheme, port or path)"
        ));
    }
    if wildcard && labels.len() < 2 {
        return Err(format!(
            "{entry:?} is too broad: a wildcard needs a domain such as *.dhan.co"
        ));
    }
    Ok(if wildcard {
        HostRule::Subdomains(format!(".{host}"))
    } else {
        HostRule::Exact(host)
    })
}

/// `scheme://host[:port]`, or the scheme alone for pages without a host (`about:blank`).
pub fn origin_of(url: &Url) -> String {
    match (url.host_str(), url.port()) {
        (Some(host), Some(port)) => format!("{}://{host}:{port}", url.scheme()),
        (Some(host), None) => format!("{}://{host}", url.scheme()),
        (None, _) => format!("{}:", url.scheme()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(login: &str, extra: Option<&str>) -> AllowedHosts {
        AllowedHosts::new(&Url::parse(login).unwrap(), extra).unwrap()
    }

    #[test]
    fn only_the_login_host_is_allowed_by_default() {
        let allowed = hosts(
            "https://auth.dhan.co/login/consentApp-login?consentAppId=c",
            None,
        );
        assert_eq!(allowed.check("https://auth.dhan.co/login/x"), Ok(()));
        assert_eq!(allowed.check("https://AUTH.dhan.co./y"), Ok(()));
        for (url, origin) in [
            ("https://login.dhan.co/", "https://login.dhan.co"),
            (
                "https://auth.dhan.co.evil.example/",
                "https://auth.dhan.co.evil.example",
            ),
            (
                "https://evil.example:8443/auth.dhan.co",
                "https://evil.example:8443",
            ),
            ("http://auth.dhan.co/", "http://auth.dhan.co"),
            ("about:blank", "about:"),
            (
                "chrome-error://chromewebdata/",
                "chrome-error://chromewebdata",
            ),
        ] {
            assert_eq!(allowed.check(url), Err(origin.to_string()), "{url}");
        }
    }

    #[test]
    fn the_allow_list_adds_exact_hosts_and_subdomains() {
        let allowed = hosts("https://auth.dhan.co/l", Some("*.dhan.co, partner.example"));
        for ok in [
            "https://login.dhan.co/",
            "https://a.b.dhan.co/",
            "https://partner.example/",
        ] {
            assert_eq!(allowed.check(ok), Ok(()), "{ok}");
        }
        for refused in [
            "https://dhan.co/",
            "https://evildhan.co/",
            "https://x.partner.example/",
        ] {
            assert!(allowed.check(refused).is_err(), "{refused}");
        }
    }

    #[test]
    fn a_plain_http_login_url_allows_http_on_its_host_only() {
        let allowed = hosts("http://127.0.0.1:8585/login", None);
        assert_eq!(allowed.check("http://127.0.0.1:8585/login/x"), Ok(()));
        assert_eq!(
            allowed.check("http://localhost:8585/login/x"),
            Err("http://localhost:8585".into())
        );
    }

    #[test]
    fn malformed_or_too_broad_entries_are_errors() {
        let login = Url::parse("https://auth.dhan.co/").unwrap();
        for bad in [
            "*",
            "*.co",
            "https://dhan.co",
            "dhan.co:443",
            "dhan.co/path",
            "-x.co",
        ] {
            assert!(AllowedHosts::new(&login, Some(bad)).is_err(), "{bad}");
        }
    }
}
