//! `ota-bundle create`: compress, hash and sign images into a bundle.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use ota_bundle_format::manifest::{validate_compatible, validate_image_name, validate_slot_class};
use ota_bundle_format::{build_bundle, BundleSpec, ImageInput, DEFAULT_LEVEL};
use ota_image_io::WriteBehindFile;

use crate::output::{human_bytes, progress_bar, AtomicOutput};

/// Arguments of `create`.
#[derive(clap::Args)]
pub struct Args {
    /// Release version (semver), e.g. 2.4.0.
    #[arg(long)]
    version: semver::Version,
    /// Product/hardware string; robots install only bundles whose compatible equals theirs.
    #[arg(long)]
    compatible: String,
    /// An image as SLOT_CLASS=FILE (e.g. rootfs=rootfs.ext4, model=detector.bin); repeatable. The image is
    /// named after the file.
    #[arg(long = "image", value_name = "CLASS=FILE", required = true)]
    images: Vec<String>,
    /// A release signing key (.key); repeat to sign with several keys.
    #[arg(long = "key", value_name = "KEY", required = true)]
    keys: Vec<PathBuf>,
    /// zstd level 1-19. The default (19) favours robots on slow links: about a quarter fewer bytes than level 3,
    /// decoded almost as fast.
    #[arg(long, default_value_t = DEFAULT_LEVEL, value_parser = clap::value_parser!(i32).range(1..=19))]
    level: i32,
    /// Release notes stored in the manifest.
    #[arg(long, default_value = "")]
    description: String,
    /// The lowest version a robot may ever run after committing this bundle (semver, at most --version):
    /// signed with the bundle, kept by the robot, so no server can take it below a security fix.
    #[arg(long, value_name = "VERSION")]
    security_floor: Option<semver::Version>,
    /// Compression threads (default: all cores). The output does not depend on it.
    #[arg(long)]
    threads: Option<u32>,
    /// Replace OUT if it exists.
    #[arg(long)]
    force: bool,
    /// Output bundle file.
    #[arg(short, long, value_name = "OUT")]
    output: PathBuf,
}

struct ImageArg {
    class: String,
    name: String,
    path: PathBuf,
}

fn parse_image(arg: &str) -> Result<ImageArg> {
    let Some((class, file)) = arg.split_once('=') else {
        bail!("--image '{arg}' must be SLOT_CLASS=FILE");
    };
    validate_slot_class(class).map_err(anyhow::Error::msg)?;
    let path = PathBuf::from(file);
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .with_context(|| format!("--image '{arg}': no file name"))?
        .to_string();
    validate_image_name(&name).map_err(|e| anyhow::anyhow!("--image '{arg}': {e}"))?;
    Ok(ImageArg {
        class: class.to_string(),
        name,
        path,
    })
}

/// Build time: SOURCE_DATE_EPOCH for reproducible builds, else now.
fn creation_time() -> Result<u64> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) => v
            .trim()
            .parse()
            .with_context(|| format!("SOURCE_DATE_EPOCH='{v}' is not a number of seconds")),
        Err(_) => Ok(SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)),
    }
}

pub fn run(args: Args) -> Result<()> {
    validate_compatible(&args.compatible).map_err(anyhow::Error::msg)?;
    if let Some(floor) = args.security_floor.as_ref().filter(|f| args.version < **f) {
        bail!(
            "--security-floor {floor} is above --version {}: no robot could ever run the bundle",
            args.version
        );
    }
    let images = args
        .images
        .iter()
        .map(|a| parse_image(a))
        .collect::<Result<Vec<_>>>()?;
    let keys = args
        .keys
        .iter()
        .map(|p| ota_keys::load_secret_key(p))
        .collect::<Result<Vec<_>, _>>()?;
    let mut total = 0;
    let mut inputs = Vec::new();
    for image in &images {
        let file = File::open(&image.path)
            .with_context(|| format!("cannot open image {}", image.path.display()))?;
        let meta = file.metadata()?;
        if !meta.is_file() {
            bail!("image {} is not a regular file", image.path.display());
        }
        total += meta.len();
        inputs.push(ImageInput {
            name: image.name.clone(),
            slot_class: image.class.clone(),
            reader: Box::new(file),
        });
    }
    let spec = BundleSpec {
        version: args.version.clone(),
        compatible: args.compatible.clone(),
        created: creation_time()?,
        description: args.description.clone(),
        security_floor: args.security_floor.clone(),
        level: args.level,
        workers: args
            .threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get() as u32)),
    };
    let mut out = AtomicOutput::create(&args.output, args.force)?;
    let bar = progress_bar(total, "compressing");
    // The bundle's pages go to disk while it is being compressed, so the closing fsync is short.
    let target = WriteBehindFile::new(out.file());
    let (manifest, _) = build_bundle(target, &spec, inputs, &keys, |n| bar.inc(n))
        .with_context(|| format!("cannot build {}", args.output.display()))?;
    bar.finish_and_clear();
    out.commit()?;
    print_summary(&args.output, &manifest, &keys)
}

fn print_summary(
    path: &Path,
    manifest: &ota_bundle_format::Manifest,
    keys: &[ota_keys::SecretKey],
) -> Result<()> {
    let size = std::fs::metadata(path)?.len();
    println!(
        "wrote {} ({}): version {} for '{}'",
        path.display(),
        human_bytes(size),
        manifest.version,
        manifest.compatible
    );
    if let Some(floor) = &manifest.security_floor {
        println!("  security floor {floor}: robots that commit it never run a lower version");
    }
    for image in &manifest.images {
        println!(
            "  {} -> {}: {} -> {} ({:.1} %)",
            image.name,
            image.slot_class,
            human_bytes(image.size),
            human_bytes(image.compressed_size),
            100.0 * image.compressed_size as f64 / image.size.max(1) as f64
        );
    }
    let ids: Vec<String> = keys.iter().map(|k| k.key_id().to_string()).collect();
    println!("  signed by {}", ids.join(", "));
    Ok(())
}
