//! `ota-bundle verify`: exit 0 only for a bundle whose signatures meet the trust root's threshold and whose every
//! payload matches the manifest, with nothing missing or extra.

use std::path::PathBuf;

use anyhow::Result;

use super::{describe, load_trust, open_verified, Checked};

/// Arguments of `verify`.
#[derive(clap::Args)]
pub struct Args {
    /// Trust root (JSON from `trust create`) or a single .pub key: the robot's root. A trust chain the bundle
    /// carries is walked from it first, as a robot does, and the signatures are checked against the root reached.
    #[arg(long, visible_alias = "trust-root")]
    trust: PathBuf,
    /// The bundle to check.
    bundle: PathBuf,
    /// Print the result as JSON (`ok`, `version`, `compatible`, `images`, `signed_by`, `threshold`,
    /// `trusted_keys`, `manifest_sha256`, `trust_root_version`, `walked_from`, `trust_chain`) instead of a line.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> Result<()> {
    let start = load_trust(&args.trust)?;
    let (mut bundle, bar, checked) = open_verified(&args.bundle, &start, "verifying")?;
    let Checked { resolved, carried } = checked;
    let trust = &resolved.root;
    let signed_by: Vec<String> = bundle.signed_by().iter().map(|k| k.to_string()).collect();
    let digest = bundle.manifest_digest();
    bundle
        .verify_remaining_images()
        .map_err(|e| describe(&args.bundle, e))?;
    let manifest = bundle.finish().map_err(|e| describe(&args.bundle, e))?;
    bar.finish_and_clear();
    if args.json {
        let value = serde_json::json!({
            "ok": true,
            "version": manifest.version.to_string(),
            "compatible": manifest.compatible,
            "images": manifest.images.len(),
            "signed_by": signed_by,
            "threshold": trust.threshold,
            "trusted_keys": trust.keys.len(),
            "manifest_sha256": digest.to_string(),
            "trust_root_version": trust.version,
            "walked_from": resolved.from,
            "trust_chain": carried,
        });
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    println!(
        "OK {}: version {} for '{}', {} image(s), {}, manifest sha256 {}; {}",
        args.bundle.display(),
        manifest.version,
        manifest.compatible,
        manifest.images.len(),
        signatures(&signed_by, trust.threshold, trust.keys.len()),
        digest,
        checked_against(trust.version, resolved.from, &carried)
    );
    Ok(())
}

/// Which root the signatures were checked against, and how it was reached.
fn checked_against(version: u64, from: u64, carried: &[u64]) -> String {
    let list = |v: &[u64]| {
        v.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    match carried {
        [] => format!("signatures checked against trust root version {version}"),
        _ if version == from => format!(
            "signatures checked against trust root version {version}; the bundle's trust chain \
             (versions {}) holds nothing newer",
            list(carried)
        ),
        _ => format!(
            "signatures checked against trust root version {version}, reached from version {from} through the \
             bundle's trust chain (versions {})",
            list(carried)
        ),
    }
}

/// The signatures against the root's threshold, e.g. `signatures: 2 valid (k1, k2), threshold 2 of 3 keys`: the
/// valid count, then the threshold out of the root's keys, so a 2-of-3 root never reads as "2 of 2".
fn signatures(valid: &[String], threshold: u32, keys: usize) -> String {
    format!(
        "signatures: {} valid ({}), threshold {threshold} of {keys} key{}",
        valid.len(),
        valid.join(", "),
        if keys == 1 { "" } else { "s" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_two_of_three_root_reads_as_such() {
        let valid = vec!["k1".to_string(), "k2".to_string()];
        assert_eq!(
            signatures(&valid, 2, 3),
            "signatures: 2 valid (k1, k2), threshold 2 of 3 keys"
        );
        assert_eq!(
            signatures(&valid[..1], 1, 1),
            "signatures: 1 valid (k1), threshold 1 of 1 key"
        );
    }

    #[test]
    fn which_root_checked_the_signatures() {
        assert_eq!(
            checked_against(1, 1, &[]),
            "signatures checked against trust root version 1"
        );
        assert_eq!(
            checked_against(3, 1, &[2, 3]),
            "signatures checked against trust root version 3, reached from version 1 through the bundle's trust \
             chain (versions 2, 3)"
        );
        assert_eq!(
            checked_against(4, 4, &[2, 3]),
            "signatures checked against trust root version 4; the bundle's trust chain (versions 2, 3) holds \
             nothing newer"
        );
    }

    proptest! {
        /// The threshold is always stated out of the root's keys, never out of the valid signatures.
        #[test]
        fn the_threshold_is_out_of_the_roots_keys(valid in 1usize..6, extra in 0usize..4, threshold in 1u32..6) {
            let keys = valid + extra;
            let ids: Vec<String> = (0..valid).map(|i| format!("k{i}")).collect();
            let line = signatures(&ids, threshold, keys);
            let threshold_part = format!("threshold {threshold} of {keys} key");
            let valid_part = format!("{valid} valid");
            prop_assert!(line.contains(&threshold_part));
            prop_assert!(line.contains(&valid_part));
            if extra > 0 {
                let misleading = format!("of {valid} ");
                prop_assert!(!line.contains(&misleading), "{}", line);
            }
        }
    }
}
