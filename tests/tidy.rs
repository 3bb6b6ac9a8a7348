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

/// A kind of I/O, the names that give it away, and the files that may hold them.
type Rule = (&'static str, &'static [&'static str], Option<&'static [&'static str]>);

/// docs/ARCHITECTURE.md's invariants on where engine does I/O, checked by name: a pattern
/// may appear only in the files listed for it (paths below engine/src).
#[test]
fn engine_does_io_only_where_the_architecture_says() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("engine/src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let sessions_and_parsers = |path: &str| {
        path.starts_with("smtp/")
            || path.starts_with("pop3/")
            || ["address.rs", "sasl.rs", "lines.rs", "dialogue.rs", "mbox.rs", "budget.rs", "duration.rs"]
                .contains(&path)
    };
    // What, by which names, and where (None: anywhere but a session or parser).
    let rules: [Rule; 4] = [
        (
            "sockets",
            &["TcpStream", "TcpListener", "UdpSocket", "UnixStream"],
            Some(&["forward/client.rs", "forward/mx.rs", "transport.rs"]),
        ),
        (
            "threads",
            &["thread::spawn", "thread::Builder"],
            Some(&["forward/client.rs", "forward/mx.rs", "pipeline/forward.rs", "pipeline/mod.rs"]),
        ),
        (
            "sleeps",
            &["thread::sleep"],
            Some(&["forward/client.rs", "forward/mx.rs", "pipeline/deliver.rs", "store/mod.rs"]),
        ),
        // Clocks are fine in the stages and the store; never in a session or parser.
        ("clocks", &["Instant::now", "SystemTime::now"], None),
    ];
    let mut faults = Vec::new();
    for file in &files {
        let path = file.strip_prefix(&src).unwrap().display().to_string();
        let text = std::fs::read_to_string(file).unwrap();
        for (what, patterns, allowed) in &rules {
            let Some(pattern) = patterns.iter().find(|p| text.contains(*p)) else { continue };
            // Sessions and parsers do no I/O at all; elsewhere only the listed files may.
            let permitted = !sessions_and_parsers(&path) && allowed.is_none_or(|list| list.contains(&path.as_str()));
            if !permitted {
                faults.push(format!("{path}: {what} ({pattern})"));
            }
        }
    }
    assert!(faults.is_empty(), "I/O where docs/ARCHITECTURE.md says there is none: {faults:?}");
}
