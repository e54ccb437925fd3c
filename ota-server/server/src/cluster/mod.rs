//! Several server replicas on one database. Each replica keeps its working set in memory ([`crate::fleet`]) to
//! answer polls fast, but the database is authoritative: after each commit a replica announces what changed
//! through a [`Feed`] (a [`Notice`]: the kind and id of the entity, and whether the dashboard hears of it), and
//! the other replicas reload that entity from the store and re-broadcast the event to their own dashboard
//! clients (`services::replicas`). Rollout rows are written compare-and-set on their revision, so a decision
//! taken on a stale copy is refused, reloaded and taken again; periodic jobs whose effects must happen once run
//! only while this replica holds the [`Lease`].
//!
//! One replica (SQLite, or PostgreSQL alone) uses [`Cluster::local`]: nothing to announce, the lease always
//! held. Several replicas on PostgreSQL use [`postgres::start`] (NOTIFY / LISTEN and an advisory lock).

pub mod lease;
pub mod notice;
pub mod postgres;

pub use notice::{Notice, Subject};

/// Announces committed changes to the other replicas.
pub trait Feed: Send + Sync {
    /// Queues a notice; never waits on the network (a poll may call it).
    fn announce(&self, notice: Notice);
}

/// Whether this replica may run the periodic jobs whose effects must happen once (guard evaluation, timed stage
/// transitions, history compaction).
pub trait Lease: Send + Sync {
    /// True while this replica holds the lease.
    fn held(&self) -> bool;
}

/// What a replica hears from the others.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Heard {
    /// Another replica committed this change.
    Notice(Notice),
    /// Notices may have been lost (the feed's connection dropped and came back): reload everything.
    Resync,
}

/// This replica's place among the others.
pub struct Cluster {
    /// Tells this replica's own notices from the others' (random per start).
    pub origin: u64,
    /// Where committed changes are announced.
    pub feed: Box<dyn Feed>,
    /// The lease of the once-only periodic jobs.
    pub lease: Box<dyn Lease>,
    /// Whether other replicas may serve the same fleet (what this one holds in memory is then only its share).
    pub replicated: bool,
}

impl Cluster {
    /// A replica alone: no one to tell, the lease always held.
    pub fn local() -> Cluster {
        Cluster {
            origin: 0,
            feed: Box::new(Alone),
            lease: Box::new(Alone),
            replicated: false,
        }
    }

    /// The notice of a change made here.
    pub fn notice(&self, subject: Subject, event: bool) -> Notice {
        Notice {
            origin: self.origin,
            subject,
            event,
        }
    }
}

/// The single replica's feed and lease.
struct Alone;

impl Feed for Alone {
    fn announce(&self, _: Notice) {}
}

impl Lease for Alone {
    fn held(&self) -> bool {
        true
    }
}
