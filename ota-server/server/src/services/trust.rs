//! The fleet's trust chain: publishing the next rotated root (it must chain from the newest) and listing the
//! roots a robot lacks. The rule and the storage are `settings::trust::Chain`'s; this is the service around it.

use std::sync::Arc;
use std::time::Instant;

use ota_keys::{SignedTrustRoot, TrustRoot};
use ota_protocol::device::TrustChain;

use crate::error::ServiceError;
use crate::fleet::Shared;
use crate::settings::trust::Chain;

/// Publishing and serving rotated trust roots.
pub struct TrustService(pub Arc<Shared>);

impl TrustService {
    /// The roots newer than `after`, oldest first.
    pub async fn chain(&self, after: u64) -> Result<TrustChain, ServiceError> {
        let chain = self.0.blocking(Chain::load).await?;
        Ok(answer(&chain, &self.0.config.trust, after))
    }

    /// Appends `root` when it is the next link after the newest published root (a retry of the newest is no
    /// change: `false`); answers the whole chain past the server's own root.
    pub async fn publish(
        &self,
        root: serde_json::Value,
    ) -> Result<(bool, TrustChain), ServiceError> {
        let root = SignedTrustRoot::from_json(&root.to_string())
            .map_err(|e| ServiceError::Invalid(e.to_string()))?;
        let version = root.signed.version;
        let shared = &self.0;
        let _writer = shared.writer.lock().await;
        let mut chain = shared.blocking(Chain::load).await?;
        let anchor = shared.config.trust.clone();
        let appended = chain.append(&anchor, root).map_err(|e| {
            ServiceError::Rejected(format!(
                "trust root version {version} does not chain from the newest published root (version {}): {e}",
                chain.newest(&anchor).version
            ))
        })?;
        if appended {
            let stored = chain.clone();
            shared.blocking(move |s| stored.save(s)).await?;
            shared.trust_chain.forget();
            tracing::info!("trust root version {version} published");
        }
        Ok((appended, answer(&chain, &anchor, anchor.version)))
    }
}

/// The newest root uploads are checked against (read from the store: another replica may have published).
pub async fn upload_root(shared: &Shared) -> Result<TrustRoot, ServiceError> {
    let chain = shared.blocking(Chain::load).await?;
    Ok(chain.newest(&shared.config.trust))
}

/// The newest published version for a poll answer (cached for `settings::trust::CHAIN_REFRESH`).
pub fn poll_version(shared: &Shared) -> Option<u64> {
    shared
        .trust_chain
        .version(shared.store.as_ref(), &shared.config.trust, Instant::now())
}

fn answer(chain: &Chain, anchor: &TrustRoot, after: u64) -> TrustChain {
    TrustChain {
        newest: chain.version(anchor),
        roots: chain
            .after(after)
            .into_iter()
            .map(|r| serde_json::to_value(r).expect("a trust root serializes"))
            .collect(),
    }
}
