//! The trust root a server keeps in its data directory (`trust.json`, or `trust.pub` for a single key), so a
//! restart needs no `--trust-root`. A root given on the command line is kept on first start; later it replaces
//! the kept one only if it is the same root or the next link after it by the robots' own rule
//! (`ota_keys::chain::accept_next`: exactly one version newer, signed by a threshold of the kept root's keys AND
//! a threshold of its own), so a stray flag cannot swap the keys a fleet's uploads are checked against, nor
//! make the server accept a root its robots would refuse.
//!
//! The fleet's rotations ([`Chain`]): the signed roots published after the kept one, kept in the store's settings
//! ([`CHAIN_SETTING`]) so every replica serves the same chain. Each new root must chain from the newest
//! (`ota_keys::chain::accept_next`: the next version, signed by the old keys and its own); uploads are checked
//! against the newest root ([`Chain::newest`]); robots fetch the roots they lack and walk them themselves.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ota_keys::{RotationError, SignedTrustRoot, TrustRoot};

// (`accept_next` is the one rotation rule: robots, `trust publish` and this file all use it.)

use crate::error::StoreError;
use crate::store::Store;

/// File names of a kept root, in the order they are looked for.
pub const KEPT_NAMES: [&str; 2] = ["trust.json", "trust.pub"];

/// A root given on the command line: the root, and its signatures when it is a trust root file.
#[derive(Clone, Debug)]
pub struct Given {
    /// The root.
    pub root: TrustRoot,
    /// The signed form (a JSON trust root file); `None` for a bare `.pub` key.
    pub signed: Option<SignedTrustRoot>,
}

/// What to do with the given and the kept root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Serve the kept root; nothing given.
    UseKept,
    /// Nothing kept yet: keep the given root.
    Adopt,
    /// The given root is the kept one.
    Same,
    /// The given root is a successor of the kept one: replace it.
    Rotate {
        /// Version of the kept root.
        from: u64,
        /// Version of the given root.
        to: u64,
    },
}

/// Why no root can be served.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    /// Nothing kept and nothing given.
    #[error("no trust root: pass --trust-root FILE (a trust root JSON or a release .pub key) once; it is kept as {}", kept.display())]
    Missing {
        /// Where it would be kept.
        kept: PathBuf,
    },
    /// The given root is neither the kept one nor its successor.
    #[error("refusing --trust-root {}: it is not the trust root kept in {} (version {kept_version}) nor a successor signed by it ({why}); to start over with another root, delete {} first", given.display(), kept.display(), kept.display())]
    NotSuccessor {
        /// The given file.
        given: PathBuf,
        /// The kept file.
        kept: PathBuf,
        /// Version of the kept root.
        kept_version: u64,
        /// The rotation rule that failed.
        why: String,
    },
    /// A root file cannot be read or parsed.
    #[error(transparent)]
    Load(#[from] ota_keys::TrustRootError),
    /// The kept copy cannot be written.
    #[error("cannot keep the trust root in the data directory: {0}")]
    Write(#[from] ota_image_io::atomic::FileError),
}

/// The pure rule: `Err` carries the failed rotation check when the given root is neither the same nor the next
/// link after the kept one.
pub fn decide(kept: Option<&TrustRoot>, given: Option<&Given>) -> Result<Decision, Option<String>> {
    match (kept, given) {
        (None, None) => Err(None),
        (Some(_), None) => Ok(Decision::UseKept),
        (None, Some(_)) => Ok(Decision::Adopt),
        (Some(k), Some(g)) if *k == g.root => Ok(Decision::Same),
        (Some(k), Some(g)) => match &g.signed {
            None => Err(Some(
                "a bare .pub key carries no signatures, so it can only be the kept root itself"
                    .to_string(),
            )),
            Some(s) => ota_keys::chain::accept_next(k, s)
                .map(|r| Decision::Rotate {
                    from: k.version,
                    to: r.version,
                })
                .map_err(|e: RotationError| Some(e.to_string())),
        },
    }
}

/// The root to serve from `data_dir`, keeping `given` there when [`decide`] allows; returns the root and a
/// line saying what changed (`None` when nothing did).
pub fn keep(
    data_dir: &Path,
    given: Option<&Path>,
) -> Result<(TrustRoot, Option<String>), TrustError> {
    let kept_path = KEPT_NAMES
        .iter()
        .map(|n| data_dir.join(n))
        .find(|p| p.exists());
    let kept = kept_path
        .as_deref()
        .map(ota_keys::load_trust_root)
        .transpose()?;
    let given_root = given.map(load_given).transpose()?;
    let decision = decide(kept.as_ref(), given_root.as_ref().map(|(g, _)| g));
    let kept_or_default = || {
        kept_path
            .clone()
            .unwrap_or_else(|| data_dir.join(KEPT_NAMES[0]))
    };
    match decision {
        Err(None) => Err(TrustError::Missing {
            kept: kept_or_default(),
        }),
        Err(Some(why)) => Err(TrustError::NotSuccessor {
            given: given.map(Path::to_path_buf).unwrap_or_default(),
            kept: kept_or_default(),
            kept_version: kept.as_ref().map_or(0, |k| k.version),
            why,
        }),
        Ok(Decision::UseKept | Decision::Same) => {
            Ok((kept.expect("a kept root when using it"), None))
        }
        Ok(d @ (Decision::Adopt | Decision::Rotate { .. })) => {
            let (g, bytes) = given_root.expect("a given root when keeping it");
            let name = if g.signed.is_some() {
                KEPT_NAMES[0]
            } else {
                KEPT_NAMES[1]
            };
            let target = data_dir.join(name);
            ota_image_io::atomic::write_atomically(&target, &bytes, 0o644)?;
            // The other name would shadow or outlive the new root; the new one is durable first.
            for other in KEPT_NAMES.iter().filter(|n| **n != name) {
                let path = data_dir.join(other);
                if path.exists() {
                    std::fs::remove_file(&path).map_err(|source| {
                        ota_image_io::atomic::FileError {
                            op: "removing",
                            path: path.clone(),
                            source,
                        }
                    })?;
                    ota_image_io::atomic::sync_dir(data_dir)?;
                }
            }
            let line = match d {
                Decision::Rotate { from, to } => {
                    format!(
                        "trust root rotated from version {from} to {to}, kept as {}",
                        target.display()
                    )
                }
                _ => format!("trust root kept as {}", target.display()),
            };
            Ok((g.root, Some(line)))
        }
    }
}

fn load_given(path: &Path) -> Result<(Given, Vec<u8>), TrustError> {
    let root = ota_keys::load_trust_root(path)?;
    let bytes = std::fs::read(path).map_err(|error| ota_keys::TrustRootError::Io {
        path: path.to_path_buf(),
        error,
    })?;
    // load_trust_root accepted it, so it is either a PEM key or a trust root file.
    let signed = SignedTrustRoot::from_json(&String::from_utf8_lossy(&bytes)).ok();
    Ok((Given { root, signed }, bytes))
}

/// The store setting holding the published chain: a JSON list of trust root files, oldest first.
pub const CHAIN_SETTING: &str = "trust_chain";

/// How long a replica answers polls with the newest version it read before reading it again (so a root
/// published through another replica reaches its robots within this time).
pub const CHAIN_REFRESH: Duration = Duration::from_secs(15);

/// The published roots after the kept one (the anchor), oldest first.
#[derive(Clone, Debug, Default)]
pub struct Chain(pub Vec<SignedTrustRoot>);

impl Chain {
    /// Reads the chain from the store (empty when nothing was published).
    pub fn load(store: &dyn Store) -> Result<Chain, StoreError> {
        match store.setting(CHAIN_SETTING)? {
            None => Ok(Chain::default()),
            Some(text) => {
                ota_keys::chain::parse_chain(&text)
                    .map(Chain)
                    .map_err(|e| StoreError::Corrupt {
                        what: "settings.trust_chain",
                        detail: e.to_string(),
                    })
            }
        }
    }

    /// Writes the chain to the store.
    pub fn save(&self, store: &dyn Store) -> Result<(), StoreError> {
        store.set_setting(CHAIN_SETTING, &ota_keys::chain::chain_to_json(&self.0))
    }

    /// The newest root reachable from `anchor`: what uploads are checked against. A stored link that does not
    /// chain (the anchor was replaced meanwhile) stops the walk there, never makes the root older.
    pub fn newest(&self, anchor: &TrustRoot) -> TrustRoot {
        ota_keys::chain::walk(anchor, &self.0).unwrap_or_else(|e| e.reached)
    }

    /// The version robots are told about: `None` until something was published past the anchor.
    pub fn version(&self, anchor: &TrustRoot) -> Option<u64> {
        Some(self.newest(anchor).version).filter(|v| *v > anchor.version)
    }

    /// The roots newer than `version`, oldest first.
    pub fn after(&self, version: u64) -> Vec<&SignedTrustRoot> {
        let mut roots: Vec<_> = self
            .0
            .iter()
            .filter(|r| r.signed.version > version)
            .collect();
        roots.sort_by_key(|r| r.signed.version);
        roots
    }

    /// The pure rule of `trust publish`: `root` must be the next link after [`Chain::newest`]. `Ok(false)`: it is
    /// already published (a retry); `Ok(true)`: appended.
    pub fn append(
        &mut self,
        anchor: &TrustRoot,
        root: SignedTrustRoot,
    ) -> Result<bool, RotationError> {
        let newest = self.newest(anchor);
        let known = |r: &SignedTrustRoot| r.signed == root.signed;
        if root.signed == newest || self.0.iter().any(known) {
            return Ok(false);
        }
        ota_keys::chain::accept_next(&newest, &root)?;
        self.0.push(root);
        Ok(true)
    }
}

/// The newest published version as the poll path sees it: read from the store at most every [`CHAIN_REFRESH`].
#[derive(Debug, Default)]
pub struct ChainCache(Mutex<Option<(Instant, Option<u64>)>>);

impl ChainCache {
    /// The newest version robots should walk to (`None`: nothing published past `anchor`). A store that cannot
    /// be read keeps the last answer (or none) and is asked again at the next refresh.
    pub fn version(&self, store: &dyn Store, anchor: &TrustRoot, now: Instant) -> Option<u64> {
        let mut cached = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match *cached {
            Some((at, version)) if now.saturating_duration_since(at) < CHAIN_REFRESH => version,
            previous => {
                let version = match Chain::load(store) {
                    Ok(chain) => chain.version(anchor),
                    Err(e) => {
                        tracing::warn!("cannot read the trust chain: {e}");
                        previous.and_then(|(_, v)| v)
                    }
                };
                *cached = Some((now, version));
                version
            }
        }
    }

    /// Forgets the cached version (this replica just published a root).
    pub fn forget(&self) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ota_keys::SecretKey;
    use proptest::prelude::*;
    use std::sync::OnceLock;

    fn keys() -> &'static [SecretKey] {
        static KEYS: OnceLock<Vec<SecretKey>> = OnceLock::new();
        KEYS.get_or_init(|| (0..4).map(|_| SecretKey::generate()).collect())
    }

    fn root(version: u64, which: &[usize]) -> TrustRoot {
        let pubs = which.iter().map(|i| keys()[*i].public_key()).collect();
        TrustRoot::new(version, 1, pubs).unwrap()
    }

    fn signed(root: TrustRoot, signers: &[usize]) -> Given {
        let mut s = SignedTrustRoot::new(root.clone());
        for i in signers {
            s.sign(&keys()[*i]);
        }
        Given {
            root,
            signed: Some(s),
        }
    }

    #[test]
    fn the_four_cases() {
        let kept = root(1, &[0]);
        assert_eq!(decide(None, None), Err(None));
        assert_eq!(decide(Some(&kept), None), Ok(Decision::UseKept));
        let g = signed(root(2, &[1]), &[0, 1]);
        assert_eq!(decide(None, Some(&g)), Ok(Decision::Adopt));
        assert_eq!(
            decide(Some(&kept), Some(&g)),
            Ok(Decision::Rotate { from: 1, to: 2 })
        );
        let same = Given {
            root: kept.clone(),
            signed: None,
        };
        assert_eq!(decide(Some(&kept), Some(&same)), Ok(Decision::Same));
        let bare = Given {
            root: root(0, &[1]),
            signed: None,
        };
        assert!(decide(Some(&kept), Some(&bare))
            .unwrap_err()
            .unwrap()
            .contains(".pub"));
    }

    /// A link signed by the previous root's key and its own.
    fn link(version: u64, key: usize, previous: usize) -> SignedTrustRoot {
        signed(root(version, &[key]), &[previous, key])
            .signed
            .unwrap()
    }

    /// The hand-over half alone is not enough: a root signed by the kept keys but not by its own is refused, as
    /// is a skipped version, each with the rule that failed.
    #[test]
    fn keep_refuses_what_robots_refuse() {
        let kept = root(1, &[0]);
        let old_only = signed(root(2, &[1]), &[0]);
        let why = decide(Some(&kept), Some(&old_only)).unwrap_err().unwrap();
        assert!(why.contains("own keys"), "{why}");
        let skipped = signed(root(3, &[1]), &[0, 1]);
        assert!(decide(Some(&kept), Some(&skipped)).is_err());
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, g: &Given| {
            let path = dir.path().join(name);
            std::fs::write(&path, g.signed.as_ref().unwrap().to_json_pretty()).unwrap();
            path
        };
        let v1 = write("v1.json", &signed(kept.clone(), &[0]));
        std::fs::create_dir(dir.path().join("data")).unwrap();
        keep(&dir.path().join("data"), Some(&v1)).unwrap();
        let v2 = write("v2.json", &old_only);
        let err = keep(&dir.path().join("data"), Some(&v2)).unwrap_err();
        assert!(matches!(err, TrustError::NotSuccessor { .. }), "{err}");
        let v2 = write("v2.json", &signed(root(2, &[1]), &[0, 1]));
        let (now, line) = keep(&dir.path().join("data"), Some(&v2)).unwrap();
        assert_eq!(now.version, 2);
        assert!(line.unwrap().contains("rotated from version 1 to 2"));
    }

    #[test]
    fn publish_appends_only_the_next_link() {
        let anchor = root(1, &[0]);
        let mut chain = Chain::default();
        assert_eq!(chain.version(&anchor), None);
        assert!(chain.append(&anchor, link(2, 1, 0)).unwrap());
        // A retry is no change; a skipped version, a link signed by the old key only, or a replay are refused.
        assert!(!chain.append(&anchor, link(2, 1, 0)).unwrap());
        assert!(matches!(
            chain.append(&anchor, link(4, 3, 1)),
            Err(RotationError::NotNextVersion {
                current: 2,
                candidate: 4
            })
        ));
        let only_old = signed(root(3, &[2]), &[1]).signed.unwrap();
        assert!(matches!(
            chain.append(&anchor, only_old),
            Err(RotationError::NotSignedByItself(_))
        ));
        assert!(chain.append(&anchor, link(3, 2, 1)).unwrap());
        assert_eq!(chain.newest(&anchor), root(3, &[2]));
        assert_eq!(chain.version(&anchor), Some(3));
        let after: Vec<u64> = chain.after(1).iter().map(|r| r.signed.version).collect();
        assert_eq!(after, [2, 3]);
        assert!(chain.after(3).is_empty());
    }

    proptest! {
        /// A different root is taken only when it is the next version, signed by a key of the kept root (the
        /// old keys hand over) and by one of its own (threshold 1 each): the robots' rule, nothing looser.
        #[test]
        fn only_a_signed_successor_replaces(
            kv in 0u64..4, gv in 0u64..4,
            kk in proptest::sample::subsequence(vec![0usize, 1, 2, 3], 1..=2),
            gk in proptest::sample::subsequence(vec![0usize, 1, 2, 3], 1..=2),
            signers in proptest::sample::subsequence(vec![0usize, 1, 2, 3], 0..=3),
        ) {
            let kept = root(kv, &kk);
            let given = signed(root(gv, &gk), &signers);
            let got = decide(Some(&kept), Some(&given));
            let successor = gv == kv + 1
                && signers.iter().any(|s| kk.contains(s))
                && signers.iter().any(|s| gk.contains(s));
            // The same rule as the robots' walk and `trust publish`.
            let robots = ota_keys::chain::accept_next(&kept, given.signed.as_ref().unwrap()).is_ok();
            prop_assert_eq!(successor, robots);
            if given.root == kept {
                prop_assert_eq!(got, Ok(Decision::Same));
            } else if successor {
                prop_assert_eq!(got, Ok(Decision::Rotate { from: kv, to: gv }));
            } else {
                prop_assert!(matches!(got, Err(Some(_))), "{:?}", got);
            }
        }
    }
}
