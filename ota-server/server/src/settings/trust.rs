//! The trust root a server keeps in its data directory (`trust.json`, or `trust.pub` for a single key), so a
//! restart needs no `--trust-root`. A root given on the command line is kept on first start; later it replaces
//! the kept one only if it is the same root or a successor the kept root signed (`ota_keys::accept_rotation`,
//! the robots' own rule), so a stray flag cannot swap the keys a fleet's uploads are checked against.

use std::path::{Path, PathBuf};

use ota_keys::{RotationError, SignedTrustRoot, TrustRoot};

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

/// The pure rule: `Err` carries the failed rotation check when the given root is neither the same nor a
/// successor of the kept one.
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
            Some(s) => ota_keys::accept_rotation(k, s)
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
        let g = signed(root(2, &[1]), &[0]);
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

    proptest! {
        /// A different root is taken only when it is newer and signed by a key of the kept root.
        #[test]
        fn only_a_signed_successor_replaces(
            kv in 0u64..4, gv in 0u64..4,
            kk in proptest::sample::subsequence(vec![0usize, 1, 2, 3], 1..=2),
            gk in proptest::sample::subsequence(vec![0usize, 1, 2, 3], 1..=2),
            signers in proptest::sample::subsequence(vec![0usize, 1, 2, 3], 0..=2),
        ) {
            let kept = root(kv, &kk);
            let given = signed(root(gv, &gk), &signers);
            let got = decide(Some(&kept), Some(&given));
            let successor = gv > kv && signers.iter().any(|s| kk.contains(s));
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
