//! Defaults the three command-line tools agree on, so `ota-server serve`, its admin subcommands and
//! `ota-bundle publish` reach each other with no flags on one machine.

/// Where `ota-server serve` listens by default.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// The server URL the admin tools use by default: the server's default listen address.
pub const DEFAULT_SERVER_URL: &str = "http://127.0.0.1:8080";
/// Environment variable for the server URL (`--server`).
pub const SERVER_URL_ENV: &str = "OTA_SERVER_URL";
/// Environment variable for the admin token: the token `serve` accepts and the one the admin tools send.
pub const ADMIN_TOKEN_ENV: &str = "OTA_ADMIN_TOKEN";
/// Environment variable for the fleet enrollment secret of `serve`.
pub const ENROLLMENT_SECRET_ENV: &str = "OTA_ENROLLMENT_SECRET";

/// Whether a tool colours what it writes to a stream: only a terminal, and never when `NO_COLOR` is set to
/// anything but the empty string (<https://no-color.org>). `no_color`: the variable's value.
pub fn use_colour(is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    is_terminal && !matches!(no_color, Some(v) if !v.is_empty())
}

/// A Unix time as RFC 3339 in UTC (`2026-12-24T21:00:00Z`) for the tools' text output; `--json` keeps the
/// number, as the API sends it.
#[cfg(feature = "cli")]
pub fn utc_time(secs: u64) -> String {
    i64::try_from(secs)
        .ok()
        .and_then(|s| jiff::Timestamp::from_second(s).ok())
        .map_or_else(|| format!("{secs} (Unix time)"), |t| t.to_string())
}

#[cfg(test)]
mod tests {
    #[test]
    fn times_are_rfc3339_in_utc() {
        assert_eq!(super::utc_time(1_798_146_000), "2026-12-24T21:00:00Z");
        assert_eq!(super::utc_time(0), "1970-01-01T00:00:00Z");
        assert!(super::utc_time(u64::MAX).contains("Unix time"));
    }

    use std::ffi::OsStr;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(super::use_colour(true, None));
        assert!(super::use_colour(true, Some(OsStr::new(""))));
        assert!(!super::use_colour(true, Some(OsStr::new("1"))));
        assert!(!super::use_colour(false, None));
    }
    #[test]
    fn the_default_url_points_at_the_default_listen_address() {
        assert_eq!(
            super::DEFAULT_SERVER_URL,
            format!("http://{}", super::DEFAULT_LISTEN)
        );
    }
}
