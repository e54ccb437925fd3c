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

#[cfg(test)]
mod tests {
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
