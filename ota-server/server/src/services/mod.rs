//! The domain services. Each returns [`crate::error::ServiceError`]s and knows nothing of HTTP; they share the
//! in-memory working set ([`crate::fleet::Shared`]).

pub mod admission;
pub mod alerts;
pub mod bundles;
pub mod devices;
pub mod groups;
pub mod history;
pub mod replicas;
pub mod retention;
pub mod rollouts;
pub mod sites;
pub mod stages;
pub mod trust;
pub mod watch;
