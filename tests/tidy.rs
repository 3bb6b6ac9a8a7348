//! House rules checked mechanically: every Rust module in the product opens with a `//!`
//! paragraph saying what it is for, the engine forbids `unsafe`, the tree is formatted
//! by rustfmt (`rustfmt.toml`) and clippy finds nothing.

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_module_opens_with_a_doc_paragraph() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for dir in ["engine/src", "engine/tests", "daemon", "tools", "tests"] {
        rust_files(&root.join(dir), &mut files);
    }
    assert!(files.len() > 40, "found only {} files", files.len());
    let missing: Vec<String> = files
        .iter()
        .filter(|f| {
            let text = std::fs::read_to_string(f).unwrap();
            let first = text.lines().find(|l| !l.trim().is_empty() && !l.starts_with("#!")).unwrap_or("");
            !first.starts_with("//!")
        })
        .map(|f| f.strip_prefix(root).unwrap().display().to_string())
        .collect();
    assert!(missing.is_empty(), "modules without a //! paragraph: {missing:?}");
}

#[test]
fn the_engine_forbids_unsafe_code() {
    let lib = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("engine/src/lib.rs")).unwrap();
    assert!(lib.contains("#![forbid(unsafe_code)]"));
}

/// Runs `cargo ARGS` at the repository's root; the failure shows what it said.
fn cargo_succeeds(args: &[&str], what: &str) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = std::process::Command::new(env!("CARGO"))
        .args(args)
        .current_dir(root)
        .output()
        .unwrap_or_else(|e| panic!("cargo {}: {e}", args.join(" ")));
    assert!(
        out.status.success(),
        "{what}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_tree_is_rustfmt_formatted() {
    cargo_succeeds(
        &["fmt", "--all", "--check"],
        "cargo fmt --all --check found unformatted code (run `cargo fmt --all`)",
    );
}

#[test]
fn clippy_finds_nothing() {
    let args = ["clippy", "--workspace", "--all-features", "--all-targets", "--quiet", "--", "-D", "warnings"];
    cargo_succeeds(&args, "cargo clippy found problems");
}
