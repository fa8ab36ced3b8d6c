//! Where notifications may go. A DhanNotifier is a tenant's object and its webhook URL a
//! tenant's Secret: without limits, the operator would POST from its own network position
//! wherever a tenant pointed it — a cloud metadata endpoint, the API server, a database in a
//! private network. So the destinations are the operator's settings, not the tenant's:
//!
//! - webhooks over `https` only (`--notify-allow-http` for plain http);
//! - no loopback, private, link-local (cloud metadata), shared (CGNAT), unspecified or multicast
//!   address, whether written in the URL or resolved from its name — checked again at connect
//!   time by the client's resolver, so a name that changes its answer in between gains nothing
//!   (`--notify-allow-private-addresses` lifts it, for receivers inside the cluster);
//! - no redirect followed (a 3xx is a failed delivery, reported with its status code);
//! - Telegram's Bot API server is `--telegram-api-url`; a notifier's `spec.telegram.apiUrl`
//!   may only repeat it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::error::DeliveryError;

/// Telegram's Bot API server, unless `--telegram-api-url` says otherwise.
pub const DEFAULT_TELEGRAM_API: &str = "https://api.telegram.org";

/// The operator's limits on notification destinations.
#[derive(Clone, Debug)]
pub struct Egress {
    /// Telegram's Bot API server.
    pub telegram_api: String,
    /// Plain http to webhooks.
    pub allow_http: bool,
    /// Loopback, private and link-local destinations.
    pub allow_private: bool,
}

impl Default for Egress {
    fn default() -> Self {
        Egress {
            telegram_api: DEFAULT_TELEGRAM_API.to_string(),
            allow_http: false,
            allow_private: false,
        }
    }
}

/// Why `ip` is no place for a notification, if it is none: its class.
pub fn forbidden(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => forbidden_v4(v4),
            None => forbidden_v6(v6),
        },
    }
}

fn forbidden_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, ..] = ip.octets();
    Some(if ip.is_loopback() {
        "loopback"
    } else if ip.is_private() {
        "private"
    } else if ip.is_link_local() {
        "link-local (cloud metadata)"
    } else if a == 100 && (64..128).contains(&b) {
        "shared (carrier-grade NAT)"
    } else if a == 0 {
        "unspecified"
    } else if ip.is_multicast() || ip.is_broadcast() {
        "multicast"
    } else {
        return None;
    })
}

fn forbidden_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let first = ip.segments()[0];
    Some(if ip.is_loopback() {
        "loopback"
    } else if ip.is_unspecified() {
        "unspecified"
    } else if first & 0xfe00 == 0xfc00 {
        "private (unique local)"
    } else if first & 0xffc0 == 0xfe80 {
        "link-local"
    } else if ip.is_multicast() {
        "multicast"
    } else {
        return None;
    })
}

impl Egress {
    /// Whether `url` may be posted to: its scheme, and its host when it is an address. A name is
    /// checked where it is resolved ([`Egress::resolve_checked`], [`GuardedResolver`]).
    /// `what` names the URL's source in the error.
    pub fn check_url(&self, url: &url::Url, what: &'static str) -> Result<(), DeliveryError> {
        match url.scheme() {
            "https" => {}
            "http" if self.allow_http => {}
            "http" => {
                return Err(DeliveryError::NotAllowed(format!(
                    "{what} is plain http: only https is allowed (the operator's \
                     --notify-allow-http)"
                )));
            }
            _ => return Err(DeliveryError::BadUrl(what)),
        }
        let ip = match url.host() {
            Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip),
            Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip),
            Some(url::Host::Domain(_)) => return Ok(()),
            None => return Err(DeliveryError::BadUrl(what)),
        };
        self.check_ip(ip, what)
    }

    fn check_ip(&self, ip: IpAddr, what: &'static str) -> Result<(), DeliveryError> {
        match forbidden(ip).filter(|_| !self.allow_private) {
            Some(class) => Err(DeliveryError::NotAllowed(format!(
                "{what} leads to a {class} address: refused (the operator's \
                 --notify-allow-private-addresses)"
            ))),
            None => Ok(()),
        }
    }

    /// Resolves `url`'s host name (if it is one) and checks every address: a clear error
    /// before anything is sent. The connection itself resolves again, through the guard.
    pub async fn resolve_checked(
        &self,
        url: &url::Url,
        what: &'static str,
    ) -> Result<(), DeliveryError> {
        let Some(url::Host::Domain(host)) = url.host() else {
            return Ok(());
        };
        if self.allow_private {
            return Ok(());
        }
        let port = url.port_or_known_default().unwrap_or(443);
        let addresses = tokio::net::lookup_host((host, port)).await.map_err(|_| {
            DeliveryError::Unreachable(format!("the host of {what} could not be resolved"))
        })?;
        for address in addresses {
            self.check_ip(address.ip(), what)?;
        }
        Ok(())
    }

    /// The HTTP client notifications are sent with: no redirects, and a resolver that drops
    /// forbidden addresses.
    pub fn client(&self, timeout: std::time::Duration) -> reqwest::Client {
        reqwest::Client::builder()
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .dns_resolver(GuardedResolver {
                allow_private: self.allow_private,
            })
            .build()
            .expect("an HTTP client with default TLS settings")
    }
}

/// The system resolver, without the forbidden addresses: what a name resolves to when the
/// connection is made is what is checked.
struct GuardedResolver {
    allow_private: bool,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow_private = self.allow_private;
        let host = name.as_str().to_string();
        Box::pin(async move {
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|a| allow_private || forbidden(a.ip()).is_none())
                .collect();
            if found.is_empty() {
                return Err("the host resolves to no address notifications may go to".into());
            }
            let addresses: reqwest::dns::Addrs = Box::new(found.into_iter());
            Ok(addresses)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_class_of_inside_address_is_refused() {
        for (ip, class) in [
            ("127.0.0.1", "loopback"),
            ("127.8.9.10", "loopback"),
            ("10.1.2.3", "private"),
            ("172.16.0.1", "private"),
            ("172.31.255.254", "private"),
            ("192.168.1.1", "private"),
            ("169.254.169.254", "link-local (cloud metadata)"),
            ("100.64.0.1", "shared (carrier-grade NAT)"),
            ("0.0.0.0", "unspecified"),
            ("224.0.0.1", "multicast"),
            ("255.255.255.255", "multicast"),
            ("::1", "loopback"),
            ("::", "unspecified"),
            ("fd00::1", "private (unique local)"),
            ("fe80::1", "link-local"),
            ("ff02::1", "multicast"),
            ("::ffff:127.0.0.1", "loopback"),
            ("::ffff:169.254.169.254", "link-local (cloud metadata)"),
        ] {
            assert_eq!(forbidden(ip.parse().unwrap()), Some(class), "{ip}");
        }
        for ip in [
            "8.8.8.8",
            "149.154.167.220",
            "172.32.0.1",
            "100.128.0.1",
            "2001:4860::8888",
        ] {
            assert_eq!(forbidden(ip.parse().unwrap()), None, "{ip}");
        }
    }

    #[test]
    fn a_webhook_url_must_be_https_to_a_public_address_unless_the_operator_allows_more() {
        let strict = Egress::default();
        let url = |u: &str| url::Url::parse(u).unwrap();
        assert!(
            strict
                .check_url(&url("https://hooks.example.com/x"), "url")
                .is_ok()
        );
        assert!(strict.check_url(&url("https://8.8.8.8/x"), "url").is_ok());
        let http = strict.check_url(&url("http://hooks.example.com/x"), "url");
        assert!(matches!(&http, Err(DeliveryError::NotAllowed(m)) if m.contains("https")));
        let metadata = strict.check_url(&url("https://169.254.169.254/latest"), "url");
        assert!(
            matches!(&metadata, Err(DeliveryError::NotAllowed(m)) if m.contains("link-local")),
            "{metadata:?}"
        );
        let loopback = strict.check_url(&url("https://[::1]:8443/x"), "url");
        assert!(matches!(loopback, Err(DeliveryError::NotAllowed(_))));
        assert!(matches!(
            strict.check_url(&url("ftp://example.com/x"), "url"),
            Err(DeliveryError::BadUrl(_))
        ));
        let open = Egress {
            allow_http: true,
            allow_private: true,
            ..Egress::default()
        };
        assert!(open.check_url(&url("http://127.0.0.1:9/x"), "url").is_ok());
    }

    #[tokio::test]
    async fn a_name_that_resolves_inside_is_refused_before_anything_is_sent() {
        let strict = Egress::default();
        let url = url::Url::parse("https://localhost:8443/hook").unwrap();
        let refused = strict
            .resolve_checked(&url, "the webhook Secret's url")
            .await;
        assert!(
            matches!(&refused, Err(DeliveryError::NotAllowed(m)) if m.contains("loopback")),
            "{refused:?}"
        );
        use reqwest::dns::Resolve;
        let guard = GuardedResolver {
            allow_private: false,
        };
        assert!(guard.resolve("localhost".parse().unwrap()).await.is_err());
        let open = GuardedResolver {
            allow_private: true,
        };
        assert!(open.resolve("localhost".parse().unwrap()).await.is_ok());
    }
}
