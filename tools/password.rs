//! Passwords, read the same way by every command that needs one (CONTRACT §7): from
//! stdin with `--password-stdin`, from a file with `--password-file FILE`, or from a
//! prompt on the terminal. Without a terminal and without either flag the error names
//! both flags; an empty password is refused.

use std::io::{BufRead, IsTerminal, Read};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;

#[derive(Args, Debug, Clone, Default)]
pub struct PasswordArgs {
    /// Read the password from stdin (one trailing newline stripped).
    #[arg(long, conflicts_with = "password_file")]
    pub password_stdin: bool,
    /// Read the password from FILE (one trailing newline stripped).
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
}

/// How much of stdin is the password.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Stdin {
    /// All of it (user add, user passwd, fetch).
    Whole,
    /// Its first line; the rest is the message (send).
    FirstLine,
}

/// A password given as text (stdin, a file): one trailing newline is stripped.
pub fn strip_final_newline(text: &str) -> &str {
    text.strip_suffix('\n').map(|t| t.strip_suffix('\r').unwrap_or(t)).unwrap_or(text)
}

impl PasswordArgs {
    /// The password for `whom`; a new one (`confirm`) is asked for twice on a terminal.
    pub fn read(&self, whom: &str, confirm: bool, stdin: Stdin) -> Result<String> {
        let password = if self.password_stdin {
            let mut text = String::new();
            let mut input = std::io::stdin().lock();
            match stdin {
                Stdin::Whole => input.read_to_string(&mut text).map(|_| ()),
                Stdin::FirstLine => input.read_line(&mut text).map(|_| ()),
            }
            .context("reading the password from stdin (--password-stdin)")?;
            strip_final_newline(&text).to_string()
        } else if let Some(file) = &self.password_file {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("reading the password from --password-file {}", file.display()))?;
            strip_final_newline(&text).to_string()
        } else if std::io::stdin().is_terminal() {
            let first = rpassword::prompt_password(format!("Password for {whom}: ")).context("reading the password")?;
            if confirm {
                let second = rpassword::prompt_password("Again: ").context("reading the password")?;
                if first != second {
                    bail!("the passwords differ");
                }
            }
            first
        } else {
            bail!("no terminal to ask for the password of {whom}: give --password-stdin or --password-file FILE");
        };
        if password.is_empty() {
            bail!("an empty password is refused");
        }
        if password.contains(['\r', '\n', '\0']) {
            bail!("the password must be one line");
        }
        Ok(password)
    }
}
