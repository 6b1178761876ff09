//! Safety of outbound calls (SSRF): which URLs an endpoint may have and which addresses a
//! delivery may connect to.
//!
//! A URL must be `https` (plain `http` only with `WEBHOOK_ALLOW_HTTP`, for tests), carry no
//! credentials, and every address its host resolves to must be public: loopback, RFC 1918,
//! CGNAT, link-local (with 169.254.169.254, the cloud metadata service), IPv6 loopback, ULA and
//! link-local, IPv4-mapped and NAT64 addresses, unspecified, multicast, broadcast and the
//! documentation and benchmark ranges are refused unless `WEBHOOK_ALLOWED_CIDRS` allows them.
//! The check runs at registration and again at every delivery, where the HTTP client resolves
//! names only through [`CheckedResolver`] and so connects only to an address that passed (a
//! name that resolved to a public address at registration and to a private one now is
//! refused); IP literals, which bypass resolution, are checked before the request. Redirects
//! are never followed, time is bounded and response bodies are read up to a cap
//! ([`client`], `dispatcher`).

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use ipnet::IpNet;
use reqwest::Url;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Longest accepted URL.
pub const MAX_URL_BYTES: usize = 2048;

/// Which destinations are allowed.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    pub allow_http: bool,
    /// Ranges allowed even though they are refused by default (e.g. loopback for tests).
    pub allowed: Vec<IpNet>,
}

/// Ranges no delivery may reach unless allow-listed.
static FORBIDDEN: LazyLock<Vec<IpNet>> = LazyLock::new(|| {
    [
        "0.0.0.0/8",       // "this network", unspecified
        "10.0.0.0/8",      // RFC 1918
        "100.64.0.0/10",   // CGNAT (RFC 6598)
        "127.0.0.0/8",     // loopback
        "169.254.0.0/16",  // link-local, with 169.254.169.254 (metadata)
        "172.16.0.0/12",   // RFC 1918
        "192.0.0.0/24",    // IETF protocol assignments
        "192.0.2.0/24",    // documentation
        "192.168.0.0/16",  // RFC 1918
        "198.18.0.0/15",   // benchmarking
        "198.51.100.0/24", // documentation
        "203.0.113.0/24",  // documentation
        "224.0.0.0/4",     // multicast
        "240.0.0.0/4",     // reserved, with 255.255.255.255 (broadcast)
        "::/128",          // unspecified
        "::1/128",         // loopback
        "::/96",           // IPv4-compatible (deprecated)
        "::ffff:0:0/96",   // IPv4-mapped
        "64:ff9b::/96",    // NAT64
        "64:ff9b:1::/48",  // local-use NAT64
        "100::/64",        // discard
        "2001:db8::/32",   // documentation
        "fc00::/7",        // unique local (ULA)
        "fe80::/10",       // link-local
        "fec0::/10",       // site-local (deprecated)
        "ff00::/8",        // multicast
    ]
    .iter()
    .map(|cidr| cidr.parse().expect("valid CIDR"))
    .collect()
});

/// `WEBHOOK_ALLOWED_CIDRS`: comma-separated CIDRs or single addresses.
pub fn parse_cidrs(text: &str) -> Result<Vec<IpNet>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(|item| {
            IpNet::from_str(item)
                .or_else(|_| IpAddr::from_str(item).map(IpNet::from))
                .map_err(|_| format!("{item:?} is not a CIDR (10.0.0.0/8) or an address"))
        })
        .collect()
}

impl Policy {
    /// Whether a delivery may connect to `ip`.
    pub fn allows(&self, ip: IpAddr) -> bool {
        self.allowed.iter().any(|net| net.contains(&ip))
            || !FORBIDDEN.iter().any(|net| net.contains(&ip))
    }

    /// The URL if its form is acceptable (scheme, host, no credentials, length) and, when its
    /// host is an IP literal, that address is allowed. Names are checked when resolved.
    pub fn check_url(&self, text: &str) -> Result<Url, String> {
        if text.len() > MAX_URL_BYTES {
            return Err(format!("must be at most {MAX_URL_BYTES} bytes"));
        }
        let url = Url::parse(text).map_err(|e| format!("is not an absolute URL ({e})"))?;
        match url.scheme() {
            "https" => {}
            "http" if self.allow_http => {}
            "http" => return Err("must use https".into()),
            _ => return Err("must be an https URL".into()),
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err("must not contain credentials".into());
        }
        if url.fragment().is_some() {
            return Err("must not contain a fragment".into());
        }
        match url.host() {
            None => return Err("must have a host".into()),
            Some(url::Host::Ipv4(ip)) => self.check_ip(IpAddr::V4(ip))?,
            Some(url::Host::Ipv6(ip)) => self.check_ip(IpAddr::V6(ip))?,
            Some(url::Host::Domain(_)) => {}
        }
        Ok(url)
    }

    fn check_ip(&self, ip: IpAddr) -> Result<(), String> {
        if self.allows(ip) {
            Ok(())
        } else {
            Err(format!(
                "is {ip}, a private, loopback, link-local or reserved address"
            ))
        }
    }

    /// The URL checked as [`Policy::check_url`] does, with its host resolved now and every
    /// address it resolves to allowed (registration; a delivery re-checks through
    /// [`CheckedResolver`]).
    pub async fn check_destination(&self, text: &str) -> Result<Url, String> {
        let url = self.check_url(text)?;
        if let Some(url::Host::Domain(name)) = url.host() {
            let port = url.port_or_known_default().unwrap_or(443);
            let addrs: Vec<SocketAddr> =
                tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((name, port)))
                    .await
                    .map_err(|_| format!("host {name} did not resolve in time"))?
                    .map_err(|_| format!("host {name} does not resolve"))?
                    .collect();
            if addrs.is_empty() {
                return Err(format!("host {name} does not resolve"));
            }
            // Which address it was is not said: the caller must not learn how names
            // resolve inside the cluster.
            if addrs.iter().any(|addr| !self.allows(addr.ip())) {
                return Err(format!(
                    "host {name} resolves to a private, loopback, link-local or reserved address"
                ));
            }
        }
        Ok(url)
    }
}

const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// The HTTP client's only resolver: the system's, keeping the allowed addresses and failing
/// when none is, so a connection can only go to an address that passed the check.
#[derive(Clone)]
pub struct CheckedResolver {
    policy: Arc<Policy>,
}

impl Resolve for CheckedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let resolved: Vec<SocketAddr> =
                tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((host.as_str(), 0)))
                    .await
                    .map_err(|_| format!("{host} did not resolve in time"))??
                    .collect();
            let allowed: Vec<SocketAddr> = resolved
                .iter()
                .copied()
                .filter(|addr| policy.allows(addr.ip()))
                .collect();
            if allowed.is_empty() {
                // Shown to the merchant in the attempts: no address.
                return Err(format!("{host} resolves only to refused addresses").into());
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

/// The client deliveries use: names through [`CheckedResolver`], no redirects, no proxies
/// (a proxy would connect on our behalf, past the check), bounded connect and total time.
pub fn client(policy: &Policy, connect_timeout: Duration, timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .dns_resolver(Arc::new(CheckedResolver {
            policy: Arc::new(policy.clone()),
        }))
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .connect_timeout(connect_timeout)
        .timeout(timeout)
        .user_agent(concat!("paysys-webhooks/", env!("CARGO_PKG_VERSION")))
        .build()
        .expect("a client of this configuration builds")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forbidden_ranges_are_refused_unless_allowed() {
        let policy = Policy::default();
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:8.8.8.8",
            "ff02::1",
            "64:ff9b::a00:1",
        ] {
            assert!(!policy.allows(ip.parse().unwrap()), "{ip} must be refused");
        }
        for ip in ["8.8.8.8", "1.1.1.1", "172.32.0.1", "2606:4700::1111"] {
            assert!(policy.allows(ip.parse().unwrap()), "{ip} must be allowed");
        }
        let loopback = Policy {
            allow_http: true,
            allowed: parse_cidrs("127.0.0.0/8, ::1").unwrap(),
        };
        assert!(loopback.allows("127.0.0.1".parse().unwrap()));
        assert!(loopback.allows("::1".parse().unwrap()));
        assert!(!loopback.allows("10.0.0.1".parse().unwrap()));
        assert!(parse_cidrs("10.0.0.0/33").is_err());
        assert!(parse_cidrs("").unwrap().is_empty());
    }

    #[test]
    fn urls_are_checked_for_scheme_credentials_and_literal_addresses() {
        let policy = Policy::default();
        assert!(policy.check_url("https://example.com/hook").is_ok());
        for (url, why) in [
            ("http://example.com/hook", "https"),
            ("ftp://example.com/", "https"),
            ("https://user:pw@example.com/", "credentials"),
            ("https://127.0.0.1/", "127.0.0.1"),
            ("https://[::1]/", "::1"),
            (
                "https://169.254.169.254/latest/meta-data",
                "169.254.169.254",
            ),
            ("https://[::ffff:a9fe:a9fe]/", "::ffff:169.254.169.254"),
            ("https://0x7f000001/", "127.0.0.1"),
            ("example.com/hook", "absolute"),
            ("https://example.com/#x", "fragment"),
        ] {
            let error = policy.check_url(url).unwrap_err();
            assert!(error.contains(why), "{url}: {error}");
        }
        let tests = Policy {
            allow_http: true,
            allowed: Vec::new(),
        };
        assert!(tests.check_url("http://example.com/").is_ok());
        assert!(tests.check_url("http://127.0.0.1:8080/").is_err());
    }
}
