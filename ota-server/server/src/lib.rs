//! The OTA fleet server: release engineers publish signed bundles, robots enroll, poll, download and report,
//! operators roll updates out in stages and watch the fleet.
//!
//! Layers, each depending only on those below it:
//! * [`api`]: HTTP. [`api::routes::ROUTES`] is the one route table (router + OpenAPI document); handlers call
//!   the services and map their errors to statuses in [`api::error`].
//! * [`state::AppState`]: the services plus the serving process's own concerns (request limit, shutdown).
//! * [`services`]: devices and telemetry, rollouts, bundles; they return [`error::ServiceError`].
//! * [`fleet`]: the in-memory working set they share; [`store::Store`] persists it ([`store::sqlite`] is the
//!   embedded backend); [`bundle_store`] keeps the blobs on disk.
//! * Pure decisions: [`rollout`] (offers, stages, pauses, manual actions), [`tokens`] (derivation, hashing).
//!
//! [`server::open`] opens a data directory into an [`AppState`] and [`server::serve`] serves it.
//! [`cli`] is the admin command-line client. `ota-server/API.md` describes the HTTP API.

#![forbid(unsafe_code)]
// The OpenAPI schemas are large `json!` literals.
#![recursion_limit = "256"]
#![warn(missing_docs)]

pub mod accounts;
pub mod admission;
pub mod alerts;
pub mod api;
pub mod bundle_store;
pub mod charts;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod connections;
pub mod data_dir;
pub mod device_health;
pub mod device_query;
pub mod error;
pub mod fleet;
pub mod guards;
pub mod history;
pub mod limits;
pub mod listener;
pub mod maintenance;
pub mod metrics;
pub mod openapi;
pub mod retention;
pub mod rollout;
pub mod schedule;
pub mod server;
pub mod services;
pub mod settings;
pub mod sites;
pub mod state;
pub mod store;
pub mod timestamp;
pub mod tls;
pub mod tokens;

pub use api::error::ApiError;
pub use api::routes::app;
pub use error::{ServiceError, StoreError};
pub use state::AppState;
