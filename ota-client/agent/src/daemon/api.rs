//! The daemon's calls to the server, through the one typed client
//! (`ota_protocol::client::ApiClient`); each failure becomes the state machine's
//! [`Failure`], whose kind the client already decided from the HTTP status.

use std::time::Duration;

use ota_client_core::daemon::Failure;
use ota_protocol::client::{ApiClient, ApiError, ClientOptions};

use super::error::DaemonError;
use crate::config::Config;

/// Timeout of enroll, poll and report requests.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Timeout of best-effort progress reports (sent while the bundle streams).
const PROGRESS_TIMEOUT: Duration = Duration::from_secs(3);

/// The server, with and without the device's token.
pub(super) struct Server {
    api: ApiClient,
    token: Option<String>,
}

impl Server {
    /// A client of `[server] url` trusting `[http] ca_file`.
    pub(super) fn new(config: &Config, url: &str) -> Result<Server, DaemonError> {
        let options = ClientOptions {
            ca_file: config.http.ca_file.clone(),
            timeout: REQUEST_TIMEOUT,
            connect_timeout: config.http.connect_timeout.min(REQUEST_TIMEOUT),
            ..ClientOptions::new(url)
        };
        let api = ApiClient::new(&options).map_err(|e| DaemonError::Http(e.to_string()))?;
        Ok(Server { api, token: None })
    }

    /// Calls from now on carry `token` (`None`: none, to enroll).
    pub(super) fn set_token(&mut self, token: Option<String>) {
        self.token = token;
    }

    /// The client for enrollment (no token).
    pub(super) fn anonymous(&self) -> &ApiClient {
        &self.api
    }

    /// The client with the device's token.
    pub(super) fn device(&self) -> ApiClient {
        self.api
            .with_token(self.token.as_deref().unwrap_or_default())
    }

    /// The client with the device's token and the short progress timeout.
    pub(super) fn progress(&self) -> ApiClient {
        self.device().with_timeout(PROGRESS_TIMEOUT)
    }

    /// The URL of an offer's download path.
    pub(super) fn url(&self, path: &str) -> String {
        self.api.url(path)
    }

    /// The device's token, for the download.
    pub(super) fn token(&self) -> &str {
        self.token.as_deref().unwrap_or_default()
    }
}

/// A failed call as the state machine sees it.
pub(super) fn failure(e: &ApiError) -> Failure {
    Failure {
        kind: e.kind,
        status: e.status,
        message: e.message.clone(),
        why: e.to_string(),
        retry_after: e.retry_after,
    }
}
