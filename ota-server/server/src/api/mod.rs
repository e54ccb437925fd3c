//! The HTTP layer: [`routes::ROUTES`] is the one route table (it builds the router and the OpenAPI document),
//! [`handlers`] are thin (extract, call a service, answer JSON), [`extract`] authenticates and parses bodies,
//! [`error::ApiError`] maps service errors to statuses.

pub mod accounts;
pub mod alerts;
pub mod assets;
pub mod audit_log;
pub mod download;
pub mod error;
pub mod extract;
pub mod handlers;
pub mod history;
pub mod latency;
pub mod routes;
pub mod sites;
pub mod trust;
