//! `ota-bundle extract`: verify and write the uncompressed images. Images are written to hidden temporary files
//! in DIR and renamed to their names only after the whole bundle has verified, so a bad bundle leaves nothing.

use std::fs;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};

use ota_image_io::atomic::AtomicFile;
use ota_image_io::ImageWriter;

use super::{describe, load_trust, open_verified};

/// Arguments of `extract`.
#[derive(clap::Args)]
pub struct Args {
    /// Trust root (JSON from `trust create`) or a single .pub key; a trust chain the bundle carries is walked
    /// from it first, as a robot does.
    #[arg(long, visible_alias = "trust-root")]
    trust: PathBuf,
    /// Replace images that already exist in DIR.
    #[arg(long)]
    force: bool,
    /// The bundle.
    bundle: PathBuf,
    /// Directory to write the images into (created if missing).
    dir: PathBuf,
}

pub fn run(args: Args) -> Result<()> {
    let trust = load_trust(&args.trust)?;
    let (mut bundle, bar, _) = open_verified(&args.bundle, &trust, "extracting")?;
    let names: Vec<String> = bundle
        .manifest()
        .images
        .iter()
        .map(|i| i.name.clone())
        .collect();
    for name in &names {
        let target = args.dir.join(name);
        if !args.force && target.exists() {
            bail!(
                "{} already exists (use --force to replace it)",
                target.display()
            );
        }
    }
    fs::create_dir_all(&args.dir)
        .with_context(|| format!("cannot create {}", args.dir.display()))?;
    let mut staged = Vec::new();
    while let Some(image) = bundle.next_image().map_err(|e| describe(&args.bundle, e))? {
        let name = image.entry().name.clone();
        // Mode 0600, as extract has always written images (they may hold secrets).
        let mut temp = AtomicFile::create(&args.dir.join(&name), 0o600)?;
        let size = image.entry().size;
        let mut out = temp
            .file()
            .try_clone()
            .and_then(|file| ImageWriter::for_file(file, Some(size)))
            .with_context(|| {
                format!(
                    "cannot write {name} ({size} bytes) into {}",
                    args.dir.display()
                )
            })?;
        image
            .copy_to(&mut out)
            .map_err(|e| describe(&args.bundle, e))?;
        out.sync()
            .and_then(|()| out.into_file())
            .with_context(|| format!("cannot write {name}"))?;
        staged.push((temp, name));
    }
    bundle.finish().map_err(|e| describe(&args.bundle, e))?;
    bar.finish_and_clear();
    // Each commit renames one image into place and fsyncs the directory.
    for (temp, name) in staged {
        temp.commit()?;
        println!("{}", args.dir.join(&name).display());
    }
    Ok(())
}
