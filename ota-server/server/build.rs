//! Embeds the dashboard: `dashboard/index.html` and every file under `dashboard/static/` become byte arrays in
//! the binary, so the dashboard engineer can add files without touching Rust code.

use std::fmt::Write;
use std::path::{Path, PathBuf};

fn collect(dir: &Path, base: &Path, out: &mut Vec<(String, PathBuf)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<_> = entries.filter_map(Result::ok).map(|e| e.path()).collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            collect(&path, base, out);
        } else if let Ok(rel) = path.strip_prefix(base) {
            let rel = rel.to_string_lossy().replace('\\', "/");
            out.push((rel, path));
        }
    }
}

fn main() {
    let root =
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let dashboard = root.join("dashboard");
    println!("cargo:rerun-if-changed=dashboard");
    let mut files = Vec::new();
    collect(
        &dashboard.join("static"),
        &dashboard.join("static"),
        &mut files,
    );
    let mut code = String::new();
    let index = dashboard.join("index.html");
    writeln!(
        code,
        "/// `dashboard/index.html`.\npub static INDEX: &[u8] = include_bytes!({:?});",
        index.display().to_string()
    )
    .unwrap();
    writeln!(code, "/// Files under `dashboard/static/`, by relative path.\npub static STATIC_FILES: &[(&str, &[u8])] = &[").unwrap();
    for (rel, path) in files {
        println!("cargo:rerun-if-changed={}", path.display());
        writeln!(
            code,
            "    ({rel:?}, include_bytes!({:?})),",
            path.display().to_string()
        )
        .unwrap();
    }
    code.push_str("];\n");
    let out =
        PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("assets.rs");
    std::fs::write(out, code).expect("cannot write assets.rs");
}
