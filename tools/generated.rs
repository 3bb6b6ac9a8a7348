//! The man pages and shell completions in `contrib/`, generated from the clap definitions
//! by a test of each binary, which fails when they are stale. To regenerate after a flag
//! changes: `MAILD_REGENERATE=1 cargo test --bins generated`.

use std::path::{Path, PathBuf};

use clap_complete::Shell;

/// Checks (or, with `MAILD_REGENERATE`, writes) `command`'s man pages in `contrib/man/`
/// (one per subcommand) and its bash, zsh and fish completions in `contrib/completions/`.
pub fn check(command: clap::Command, section: &str) {
    let contrib = Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib");
    let name = command.get_name().to_string();
    let mut files: Vec<(PathBuf, Vec<u8>)> = Vec::new();

    let pages = tempfile::tempdir().unwrap();
    clap_mangen::generate_to(command.clone(), pages.path()).unwrap();
    for entry in std::fs::read_dir(pages.path()).unwrap() {
        let path = entry.unwrap().path();
        let file = path.file_name().unwrap().to_string_lossy().replace(".1", &format!(".{section}"));
        let text = String::from_utf8(std::fs::read(&path).unwrap()).unwrap();
        // clap_mangen writes section 1 into every page.
        let text = text.replacen(" 1  \"", &format!(" {section}  \""), 1);
        files.push((contrib.join("man").join(file), text.into_bytes()));
    }
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        let mut script = Vec::new();
        clap_complete::generate(shell, &mut command.clone(), &name, &mut script);
        files.push((contrib.join("completions").join(clap_complete::Generator::file_name(&shell, &name)), script));
    }

    let regenerate = std::env::var_os("MAILD_REGENERATE").is_some();
    let stale: Vec<String> = files
        .iter()
        .filter(|(path, bytes)| std::fs::read(path).ok().as_ref() != Some(bytes))
        .map(|(path, bytes)| {
            if regenerate {
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(path, bytes).unwrap();
            }
            path.display().to_string()
        })
        .collect();
    assert!(regenerate || stale.is_empty(), "stale (MAILD_REGENERATE=1 cargo test --bins generated): {stale:?}");
    // bash accepts the script and registers it for the command.
    let bash = contrib.join("completions").join(format!("{name}.bash"));
    let loaded = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!("source {} && complete -p {name}", bash.display()))
        .output()
        .unwrap();
    assert!(loaded.status.success(), "{}", String::from_utf8_lossy(&loaded.stderr));
    // A page of a subcommand that no longer exists is stale too.
    let ours: Vec<&PathBuf> = files.iter().map(|(path, _)| path).collect();
    for entry in std::fs::read_dir(contrib.join("man")).unwrap() {
        let path = entry.unwrap().path();
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        if file.starts_with(&format!("{name}-")) || file.starts_with(&format!("{name}.")) {
            assert!(ours.contains(&&path), "{} is not generated any more", path.display());
        }
    }
}
