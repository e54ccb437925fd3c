//! A bundle published on the test kit's in-process server and fetched through its proxy, which counts what the
//! server sent and records the ranges asked for.

use ota_client::source::HttpRequest;
use ota_client::BundleSource;
use ota_protocol::client::{ApiClient, ClientOptions};
use ota_testkit::proxy::Proxy;
use ota_testkit::release::trust_root;
use ota_testkit::robot::release_key;
use ota_testkit::server::{ServerHandle, ServerOptions};

/// The server, its proxy and the published bundle's id (the server's files live as long as this).
pub struct Served {
    _dir: tempfile::TempDir,
    pub server: ServerHandle,
    pub proxy: Proxy,
    pub id: String,
}

impl Served {
    /// Starts a server trusting the kit's release key, publishes `bundle` and puts a proxy in front.
    pub fn publish(bundle: &[u8]) -> Served {
        Served::publish_after(&[], bundle)
    }

    /// [`Served::publish`] on a server that published the trust roots `rotations` first (so it accepts a
    /// bundle of the newest root's keys).
    pub fn publish_after(rotations: &[ota_keys::SignedTrustRoot], bundle: &[u8]) -> Served {
        let dir = tempfile::tempdir().unwrap();
        let server = ServerHandle::start(&ServerOptions::new(
            &dir.path().join("server"),
            trust_root(&[release_key()], 1),
        ))
        .unwrap();
        let admin = ApiClient::new(&ClientOptions::new(&server.base))
            .unwrap()
            .with_token(&server.admin_token);
        for root in rotations {
            let _: ota_protocol::device::TrustChain =
                admin.post(ota_protocol::paths::TRUST_CHAIN, root).unwrap();
        }
        let id = admin.publish_bytes(bundle.to_vec()).unwrap().bundle_id;
        let proxy = Proxy::start(server.addr);
        Served {
            _dir: dir,
            server,
            proxy,
            id,
        }
    }

    /// The bundle's download through the proxy, with the admin token.
    pub fn request(&self) -> HttpRequest {
        HttpRequest::bearer(
            &format!("{}/api/bundles/{}/download", self.proxy.base, self.id),
            &self.server.admin_token,
        )
    }

    /// [`Served::request`] as an install source.
    pub fn source(&self) -> BundleSource {
        BundleSource::Http(self.request())
    }
}
