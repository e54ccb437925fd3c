//! How long a connection may stay idle, half-sent or stalled, and how many may be open at once: the settings
//! (`serve` flags, so config keys too) and the pure decisions [`crate::connections`] carries out.

use std::time::Duration;

/// Most file descriptors kept back from connections, for the database, bundle files, logs and the runtime (a
/// quarter of a small limit, at least 32).
pub const RESERVED_FDS: u64 = 256;

/// Connections allowed when `--max-connections` is not given (and the open-file limit allows it).
pub const DEFAULT_MAX_CONNECTIONS: usize = 8192;

/// The connection layer's limits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Open connections above this wait in the listen backlog, or push out the longest-idle open one.
    /// `None`: [`DEFAULT_MAX_CONNECTIONS`]; either way clamped under the open-file limit ([`connection_cap`]).
    pub max_connections: Option<usize>,
    /// A request's headers must arrive within this of the connection being ready for them (a new connection,
    /// or the end of the previous response on a kept-alive one: so this is the idle keep-alive timeout too).
    pub header_read_timeout: Duration,
    /// A request body that sends nothing for this long is cut off.
    pub body_read_timeout: Duration,
    /// A client that accepts no response bytes for this long is disconnected.
    pub send_timeout: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            max_connections: None,
            header_read_timeout: Duration::from_secs(30),
            body_read_timeout: Duration::from_secs(60),
            send_timeout: Duration::from_secs(60),
        }
    }
}

/// `serve`'s connection flags (flattened into `ServeArgs`, so each is a config key).
#[derive(clap::Args, Clone, Debug)]
pub struct ConnectionArgs {
    /// Most connections open at once; more wait in the listen backlog or replace the longest-idle one (default:
    /// 8192, always kept up to 256 under the open-file limit, which the server raises to its hard limit).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..), value_name = "N")]
    pub max_connections: Option<u64>,
    /// Close a connection that has not sent a whole request head this many seconds after connecting or after
    /// its last response (slow or idle clients).
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    pub header_read_timeout_secs: u64,
    /// Cut off a request body that sends nothing for this many seconds.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    pub body_read_timeout_secs: u64,
    /// Disconnect a client that accepts no response bytes for this many seconds.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    pub send_timeout_secs: u64,
}

impl ConnectionArgs {
    /// The limits these flags stand for.
    pub fn limits(&self) -> ConnectionLimits {
        ConnectionLimits {
            max_connections: self
                .max_connections
                .map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
            header_read_timeout: Duration::from_secs(self.header_read_timeout_secs),
            body_read_timeout: Duration::from_secs(self.body_read_timeout_secs),
            send_timeout: Duration::from_secs(self.send_timeout_secs),
        }
    }
}

/// How many connections may be open: the request (or the default), kept [`reserved_fds`] under the open-file
/// limit `fd_limit` so that a flood of connections never leaves the server without descriptors for its own
/// files; at least 1.
pub fn connection_cap(requested: Option<usize>, fd_limit: u64) -> usize {
    let wanted = requested.unwrap_or(DEFAULT_MAX_CONNECTIONS);
    let room =
        usize::try_from(fd_limit.saturating_sub(reserved_fds(fd_limit))).unwrap_or(usize::MAX);
    wanted.min(room).max(1)
}

/// Descriptors kept for the server's own files under the open-file limit `fd_limit`.
pub fn reserved_fds(fd_limit: u64) -> u64 {
    (fd_limit / 4).clamp(32, RESERVED_FDS)
}

/// What the connection layer knows of one open connection when it must make room.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionView {
    /// Its id.
    pub id: u64,
    /// Requests being answered on it (a response still streaming counts).
    pub busy: usize,
    /// When it last became idle (milliseconds on the layer's clock).
    pub idle_since_ms: u64,
}

/// The connection to close to make room for a new one at the cap: the one idle the longest; `None` when every
/// connection is answering a request (then the new one waits).
pub fn pick_victim(open: impl IntoIterator<Item = ConnectionView>) -> Option<u64> {
    open.into_iter()
        .filter(|c| c.busy == 0)
        .min_by_key(|c| (c.idle_since_ms, c.id))
        .map(|c| c.id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_cap_stays_under_the_open_file_limit() {
        assert_eq!(connection_cap(None, 1 << 20), DEFAULT_MAX_CONNECTIONS);
        assert_eq!(connection_cap(None, 1024), 1024 - 256);
        assert_eq!(connection_cap(Some(10), 1024), 10);
        assert_eq!(connection_cap(Some(5000), 1024), 768);
        assert_eq!(connection_cap(Some(10), 100), 10);
        assert_eq!(connection_cap(None, 128), 96);
        assert_eq!(connection_cap(None, 20), 1);
    }

    #[test]
    fn no_victim_when_all_are_busy() {
        let busy = ConnectionView {
            id: 1,
            busy: 1,
            idle_since_ms: 0,
        };
        assert_eq!(pick_victim([busy]), None);
        assert_eq!(pick_victim([]), None);
    }

    proptest! {
        #[test]
        fn the_victim_is_the_longest_idle(open in proptest::collection::vec((0usize..3, 0u64..100), 0..20)) {
            let views: Vec<ConnectionView> = open
                .iter()
                .enumerate()
                .map(|(i, &(busy, idle_since_ms))| ConnectionView { id: i as u64, busy, idle_since_ms })
                .collect();
            match pick_victim(views.clone()) {
                None => prop_assert!(views.iter().all(|c| c.busy > 0)),
                Some(id) => {
                    let victim = views[id as usize];
                    prop_assert_eq!(victim.busy, 0);
                    prop_assert!(views.iter().filter(|c| c.busy == 0).all(|c| c.idle_since_ms >= victim.idle_since_ms));
                }
            }
        }

        #[test]
        fn the_cap_is_positive_and_never_above_the_request(req in proptest::option::of(1usize..100_000), limit in 0u64..100_000) {
            let cap = connection_cap(req, limit);
            prop_assert!(cap >= 1);
            prop_assert!(cap <= req.unwrap_or(DEFAULT_MAX_CONNECTIONS));
            prop_assert!(cap as u64 <= limit.saturating_sub(reserved_fds(limit)).max(1));
        }
    }
}
