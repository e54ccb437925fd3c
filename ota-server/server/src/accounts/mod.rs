//! Operator accounts: named users with roles (viewer < operator < admin, [`crate::tokens::Role`]), password
//! sign-in giving a bearer session token, per-user API tokens for the CLI and CI, and who-did-what in the audit
//! trail. Pure decisions here ([`session`] expiry, [`limiter`] for failed sign-ins, [`password`] hashing,
//! names, token shapes, the client address behind trusted proxies); [`service`] carries them out against the
//! store. The bootstrap admin token works (as user `admin-token`) until the first user exists.

pub mod limiter;
pub mod password;
pub mod service;
pub mod session;

use std::net::IpAddr;
use std::str::FromStr;

use rand_core::{OsRng, RngCore};

use crate::tokens::hash_token;
pub use session::SessionPolicy;

/// Prefix of session tokens (from `POST /api/login`).
pub const SESSION_PREFIX: &str = "ota-s.";
/// Prefix of users' API tokens.
pub const API_TOKEN_PREFIX: &str = "ota-u.";

/// The account settings of a server.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AccountSettings {
    /// Session lifetimes.
    pub sessions: SessionPolicy,
    /// Proxies whose `X-Forwarded-For` names the client (`--trusted-proxy`).
    pub trusted_proxies: Vec<ProxyNet>,
}

/// `serve`'s account flags (flattened into `ServeArgs`, so each is a config key).
#[derive(clap::Args, Clone, Debug)]
pub struct AccountArgs {
    /// End a console session unused for this many seconds.
    #[arg(long, default_value_t = 3600, value_parser = clap::value_parser!(u64).range(60..))]
    pub session_idle_secs: u64,
    /// End a console session this many seconds after sign-in, however busy.
    #[arg(long, default_value_t = 43_200, value_parser = clap::value_parser!(u64).range(60..))]
    pub session_max_secs: u64,
    /// A reverse proxy (address or CIDR, repeatable) whose X-Forwarded-For header names the client in the
    /// audit trail and the sign-in limit; from any other peer the header is ignored.
    #[arg(long = "trusted-proxy", value_name = "ADDR[/BITS]")]
    pub trusted_proxies: Vec<ProxyNet>,
}

impl AccountArgs {
    /// The settings these flags stand for.
    pub fn settings(&self) -> AccountSettings {
        AccountSettings {
            sessions: SessionPolicy {
                idle_secs: self.session_idle_secs,
                absolute_secs: self.session_max_secs,
            },
            trusted_proxies: self.trusted_proxies.clone(),
        }
    }
}

/// An address or a network (`10.0.0.0/8`, `::1`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProxyNet {
    addr: IpAddr,
    bits: u8,
}

impl ProxyNet {
    /// Whether `ip` is in this network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        fn prefix(a: u128, b: u128, bits: u8, width: u8) -> bool {
            let shift = u32::from(width - bits);
            bits == 0 || (a >> shift) == (b >> shift)
        }
        match (self.addr, canonical(ip)) {
            (IpAddr::V4(n), IpAddr::V4(a)) => prefix(
                u128::from(u32::from(n)),
                u128::from(u32::from(a)),
                self.bits,
                32,
            ),
            (IpAddr::V6(n), IpAddr::V6(a)) => prefix(u128::from(n), u128::from(a), self.bits, 128),
            _ => false,
        }
    }
}

/// An IPv4 address mapped into IPv6 (a dual-stack listener's peers) as the IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

impl FromStr for ProxyNet {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let bad = || format!("{text:?} is not an IP address or ADDRESS/BITS network");
        let (addr, bits) = match text.split_once('/') {
            Some((a, b)) => (a, Some(b.parse::<u8>().map_err(|_| bad())?)),
            None => (text, None),
        };
        let addr = canonical(addr.parse::<IpAddr>().map_err(|_| bad())?);
        let width = if addr.is_ipv4() { 32 } else { 128 };
        let bits = bits.unwrap_or(width);
        if bits > width {
            return Err(bad());
        }
        Ok(ProxyNet { addr, bits })
    }
}

/// The client's address: the peer's, unless the peer is a trusted proxy; then the `X-Forwarded-For` entries are
/// read from the right (the nearest hop first), skipping trusted proxies, and the first other one is the client.
/// A malformed entry stops the walk at the last good hop (a client cannot forge past a trusted proxy, which
/// appends what it saw).
pub fn client_address(peer: IpAddr, forwarded_for: Option<&str>, trusted: &[ProxyNet]) -> IpAddr {
    let peer = canonical(peer);
    let is_trusted = |ip: IpAddr| trusted.iter().any(|n| n.contains(ip));
    let Some(header) = forwarded_for.filter(|_| is_trusted(peer)) else {
        return peer;
    };
    let mut client = peer;
    for hop in header.rsplit(',') {
        match hop.trim().parse::<IpAddr>() {
            Ok(ip) => {
                client = canonical(ip);
                if !is_trusted(client) {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    client
}

/// Why a user name is refused.
pub const USER_NAME_RULE: &str =
    "a user name is 1-64 characters of letters, digits, '.', '_', '-' and '@', and not 'admin-token'";

/// Whether `name` may name a user.
pub fn valid_user_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'@'))
        && name != crate::tokens::BOOTSTRAP_USER
}

/// A new random secret with `prefix` (`ota-s.` or `ota-u.` then 64 hex digits) and its hash.
pub fn new_secret(prefix: &str) -> (String, [u8; 32]) {
    let mut bytes = [0u8; 32];
    OsRng.fill_bytes(&mut bytes);
    let token = format!("{prefix}{}", hex::encode(bytes));
    let hash = hash_token(&token);
    (token, hash)
}

/// The public id of an API token: the first 16 hex digits of its hash (the secret itself never shows).
pub fn token_id(hash: &[u8; 32]) -> String {
    hex::encode(&hash[..8])
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn net(s: &str) -> ProxyNet {
        s.parse().unwrap()
    }

    #[test]
    fn networks_parse_and_contain() {
        assert!(net("10.0.0.0/8").contains("10.1.2.3".parse().unwrap()));
        assert!(!net("10.0.0.0/8").contains("11.0.0.1".parse().unwrap()));
        assert!(net("127.0.0.1").contains("::ffff:127.0.0.1".parse().unwrap()));
        assert!(net("::1").contains("::1".parse().unwrap()));
        assert!(net("0.0.0.0/0").contains("8.8.8.8".parse().unwrap()));
        assert!(!net("::/0").contains("8.8.8.8".parse().unwrap()));
        for bad in ["10.0.0.0/33", "nope", "10.0.0.0/x", "::1/129"] {
            assert!(bad.parse::<ProxyNet>().is_err(), "{bad}");
        }
    }

    #[test]
    fn forwarded_for_counts_only_from_trusted_proxies() {
        let proxy: IpAddr = "10.0.0.5".parse().unwrap();
        let trusted = [net("10.0.0.0/24")];
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            client_address(proxy, Some("203.0.113.9"), &trusted),
            ip("203.0.113.9")
        );
        assert_eq!(
            client_address(ip("198.51.100.1"), Some("203.0.113.9"), &trusted),
            ip("198.51.100.1")
        );
        // A client's own forged entries sit left of what the trusted proxy appended.
        assert_eq!(
            client_address(proxy, Some("1.1.1.1, 203.0.113.9, 10.0.0.7"), &trusted),
            ip("203.0.113.9")
        );
        assert_eq!(client_address(proxy, Some("junk"), &trusted), proxy);
        assert_eq!(client_address(proxy, None, &trusted), proxy);
        assert_eq!(client_address(proxy, Some("203.0.113.9"), &[]), proxy);
    }

    proptest! {
        #[test]
        fn an_untrusted_peer_is_always_the_client(a in any::<[u8; 4]>(), header in ".{0,40}") {
            let peer = IpAddr::from(a);
            let trusted = [net("10.0.0.0/8")];
            if a[0] != 10 {
                prop_assert_eq!(client_address(peer, Some(&header), &trusted), peer);
            }
        }

        #[test]
        fn user_names(name in "[a-zA-Z0-9._@-]{1,64}", bad in "[a-z]{0,5}[ /:<>\"']{1,3}[a-z]{0,5}") {
            prop_assert_eq!(valid_user_name(&name), name != "admin-token");
            prop_assert!(!valid_user_name(&bad));
        }
    }

    #[test]
    fn secrets_are_fresh_and_hashed() {
        let (a, ha) = new_secret(SESSION_PREFIX);
        let (b, _) = new_secret(SESSION_PREFIX);
        assert_ne!(a, b);
        assert!(a.starts_with("ota-s.") && a.len() == 6 + 64);
        assert_eq!(ha, hash_token(&a));
        assert_eq!(token_id(&ha).len(), 16);
        assert!(!valid_user_name(""));
        assert!(!valid_user_name(&"a".repeat(65)));
    }
}
