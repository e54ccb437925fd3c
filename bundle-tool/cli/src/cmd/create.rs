//! `ota-bundle create`: compress, hash and sign images into a bundle.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use ota_bundle_format::chunked::DEFAULT_PARAMS;
use ota_bundle_format::manifest::{validate_compatible, validate_image_name, validate_slot_class};
use ota_bundle_format::write::BaseBundle;
use ota_bundle_format::{
    build_bundle_signed, build_chunked_bundle_signed, BundleSpec, ImageInput, SeekableImage,
    Signing, DEFAULT_LEVEL,
};
use ota_image_io::WriteBehindFile;
use ota_keys::Signer;

use crate::keyspec::{self, KeySpec};
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
    /// A release signing key: a .key file or a pkcs11: URI of a key on a token
    /// (pkcs11:token=T;object=K?module-path=M&pin-source=file:P); repeat to sign with several keys.
    #[arg(long = "key", value_name = "KEY", required = true, value_parser = keyspec::value_parser())]
    keys: Vec<KeySpec>,
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
    /// Payload kind. `chunked` (the default) cuts each image into content-defined chunks in independently
    /// compressed frames: robots fetch only what they lack and decode on all cores, for about 2 % more bytes than
    /// `full`. `full` is one zstd stream per image, for robots whose client predates chunked bundles.
    #[arg(long, value_enum, default_value_t = PayloadKind::Chunked)]
    payload: PayloadKind,
    /// An earlier chunked bundle to encode deltas against: robots running it download only compact deltas of what
    /// changed (others fall back to the plain frames). Each image must have an image of the same name and slot
    /// class in OLD.
    #[arg(long, value_name = "OLD.otab")]
    delta_from: Option<PathBuf>,
    /// Carry this trust chain (trust root files, JSON lists of them, or the server's `GET /api/trust/chain`
    /// answer; repeatable): a robot installing the bundle from a file walks it from its own root before checking
    /// the signatures, so a bundle signed by rotated keys installs on robots that never heard of the rotation.
    #[arg(long, value_name = "FILE")]
    trust_chain: Vec<PathBuf>,
    /// Replace OUT if it exists.
    #[arg(long)]
    force: bool,
    /// Output bundle file.
    #[arg(short, long, value_name = "OUT")]
    output: PathBuf,
}

/// `--payload`.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum PayloadKind {
    /// Chunked frames, delta-capable.
    Chunked,
    /// One zstd stream per image.
    Full,
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
    let keys = keyspec::signers(&args.keys)?;
    let chain = match args.trust_chain.as_slice() {
        [] => Vec::new(),
        files => super::chain::read_chain_files(files)?,
    };
    let signing = Signing {
        keys: &keys,
        trust_chain: &chain,
    };
    if args.payload == PayloadKind::Full && args.delta_from.is_some() {
        bail!("--delta-from needs the chunked payload; drop --payload full");
    }
    // Opened first, so a base that cannot serve is refused before anything is written.
    let mut base = args
        .delta_from
        .as_ref()
        .map(|path| {
            let file = File::open(path)
                .with_context(|| format!("cannot open the base bundle {}", path.display()))?;
            BaseBundle::open(file)
                .with_context(|| format!("cannot use {} as a delta base", path.display()))
        })
        .transpose()?;
    let mut total = 0;
    let mut files = Vec::new();
    let mut stamps = Vec::new();
    for image in &images {
        let file = File::open(&image.path)
            .with_context(|| format!("cannot open image {}", image.path.display()))?;
        let meta = file.metadata()?;
        if !meta.is_file() {
            bail!("image {} is not a regular file", image.path.display());
        }
        total += meta.len();
        stamps.push(stamp(&image.path)?);
        files.push(file);
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
    // The bundle's pages go to disk while it is being compressed, so the closing fsync is short.
    let target = WriteBehindFile::new(out.file());
    let built = match args.payload {
        PayloadKind::Full => {
            let bar = progress_bar(total, "compressing");
            let inputs = images
                .iter()
                .zip(files)
                .map(|(image, file)| ImageInput {
                    name: image.name.clone(),
                    slot_class: image.class.clone(),
                    reader: Box::new(file),
                })
                .collect();
            let built = build_bundle_signed(target, &spec, inputs, &signing, |n| bar.inc(n));
            bar.finish_and_clear();
            built
        }
        PayloadKind::Chunked => {
            // Each image is read twice: once to cut it into chunks, once to compress its frames.
            let bar = progress_bar(2 * total, "chunking and compressing");
            let inputs = images
                .iter()
                .zip(files)
                .map(|(image, file)| SeekableImage {
                    name: image.name.clone(),
                    slot_class: image.class.clone(),
                    reader: Box::new(file),
                })
                .collect();
            let built = build_chunked_bundle_signed(
                target,
                &spec,
                DEFAULT_PARAMS,
                inputs,
                base.as_mut(),
                &signing,
                |n| bar.inc(n),
            );
            bar.finish_and_clear();
            built
        }
    };
    let (manifest, _) = built.with_context(|| format!("cannot build {}", args.output.display()))?;
    for (image, before) in images.iter().zip(&stamps) {
        if stamp(&image.path)? != *before {
            bail!(
                "image {} changed while the bundle was being built; build again once it is final",
                image.path.display()
            );
        }
    }
    out.commit()?;
    print_summary(&args.output, &manifest, &keys)?;
    if let Some(newest) = chain.last() {
        let ids = newest.signed.key_ids();
        let signing = keys.iter().filter(|k| ids.contains(&k.key_id())).count();
        println!(
            "  carries trust chain versions {}: robots walk it before checking the signatures; version {} needs {} \
             of its {} keys, {signing} of them signed here",
            super::chain::versions(&chain),
            newest.signed.version,
            newest.signed.threshold,
            ids.len()
        );
    }
    Ok(())
}

/// What changes when a file is written to: a chunked image is read twice, and must not change in between.
fn stamp(path: &Path) -> Result<(u64, Option<SystemTime>)> {
    let meta =
        std::fs::metadata(path).with_context(|| format!("cannot read image {}", path.display()))?;
    Ok((meta.len(), meta.modified().ok()))
}

fn print_summary(
    path: &Path,
    manifest: &ota_bundle_format::Manifest,
    keys: &[Box<dyn Signer>],
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
        if let Some(info) = image.chunked() {
            let mut line = format!("    chunked: index {}", human_bytes(info.index_size));
            if let (Some(base), Some(delta)) = (&info.base, info.delta_size) {
                line += &format!(
                    ", deltas {} against version {} (bundle {})",
                    human_bytes(delta),
                    base.version,
                    &base.bundle[..12]
                );
            }
            println!("{line}");
        }
    }
    let ids: Vec<String> = keys.iter().map(|k| k.key_id().to_string()).collect();
    println!("  signed by {}", ids.join(", "));
    Ok(())
}
