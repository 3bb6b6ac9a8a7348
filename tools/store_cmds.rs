//! Commands that work on the store itself: `user`, `export`, `stats`.

use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use engine::address::user_key;
use engine::users::Users;
use engine::{Store, StoreError};

#[derive(Subcommand)]
pub enum UserCommand {
    /// Create a user (creates the store if DIR is empty).
    Add {
        address: String,
        /// Read the password from stdin (one trailing newline is stripped).
        #[arg(long)]
        password_stdin: bool,
    },
    /// Remove a user (mail already in the mailbox stays in the store).
    Del { address: String },
    /// List users.
    List,
    /// Set a user's password.
    Passwd {
        address: String,
        #[arg(long)]
        password_stdin: bool,
    },
}

#[derive(Clone, Copy, ValueEnum)]
pub enum Format {
    Mbox,
}

#[derive(Args)]
pub struct ExportArgs {
    /// Only this user's mailbox.
    #[arg(long)]
    user: Option<String>,
    /// First message number (inclusive).
    #[arg(long)]
    from: Option<u64>,
    /// Last message number (inclusive).
    #[arg(long)]
    to: Option<u64>,
    #[arg(long, value_enum, default_value = "mbox")]
    format: Format,
    /// Output file (default: stdout).
    #[arg(short = 'o', value_name = "PATH")]
    output: Option<PathBuf>,
}

pub fn open(data: &Path) -> Result<Store> {
    Store::open(data).map_err(|e| match e {
        StoreError::Locked(_) => anyhow::anyhow!(
            "the store in {} is in use by a running maild; stop it first (sled allows one process)",
            data.display()
        ),
        other => anyhow::anyhow!("opening the store in {}: {other}", data.display()),
    })
}

fn read_password(from_stdin: bool) -> Result<String> {
    if from_stdin {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text).context("reading the password from stdin")?;
        let text = text.strip_suffix('\n').map(|t| t.strip_suffix('\r').unwrap_or(t)).unwrap_or(&text);
        return Ok(text.to_string());
    }
    let first = rpassword::prompt_password("Password: ").context("reading the password")?;
    let second = rpassword::prompt_password("Again: ").context("reading the password")?;
    if first != second {
        bail!("the passwords differ");
    }
    Ok(first)
}

pub fn user(data: &Path, command: UserCommand) -> Result<()> {
    // Validate before touching anything, so a typo does not create a store.
    if let UserCommand::Add { address, .. } | UserCommand::Del { address } | UserCommand::Passwd { address, .. } = &command {
        user_key(address).map_err(|_| anyhow::anyhow!("{address:?} is not a valid address (want local@domain)"))?;
    }
    let store = open(data)?;
    let users = Users::new(store.users_tree());
    match command {
        UserCommand::Add { address, password_stdin } => {
            let password = read_password(password_stdin)?;
            users.add(&address, &password)?;
            println!("added {address}");
        }
        UserCommand::Del { address } => {
            users.delete(&address)?;
            println!("deleted {address}");
        }
        UserCommand::List => {
            for user in users.list()? {
                println!("{}", user.address);
            }
        }
        UserCommand::Passwd { address, password_stdin } => {
            let password = read_password(password_stdin)?;
            users.set_password(&address, &password)?;
            println!("password changed for {address}");
        }
    }
    Ok(())
}

pub fn export(data: &Path, args: ExportArgs) -> Result<()> {
    let store = open(data)?;
    let head = store.head()?;
    let (from, to) = (args.from.unwrap_or(1).max(1), args.to.unwrap_or(head).min(head));
    let numbers: Vec<u64> = match &args.user {
        Some(user) => {
            let key = user_key(user).map_err(|_| anyhow::anyhow!("{user:?} is not a valid address"))?;
            store.mailbox(&key)?.into_iter().filter(|n| (from..=to).contains(n)).collect()
        }
        None => (from..=to).collect(),
    };
    let out: Box<dyn Write> = match &args.output {
        Some(path) => Box::new(std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?),
        None => Box::new(std::io::stdout().lock()),
    };
    let mut out = BufWriter::new(out);
    let Format::Mbox = args.format;
    for number in numbers {
        if let Some(message) = store.message(number)? {
            engine::mbox::write_entry(&mut out, message.record())?;
        }
    }
    out.flush()?;
    Ok(())
}

pub fn stats(data: &Path) -> Result<()> {
    let store = open(data)?;
    let users = Users::new(store.users_tree()).list()?;
    println!("head: {}", store.head()?);
    println!("delivered: {}", store.delivered_through()?);
    println!("users: {}", users.len());
    for user in users {
        let key = user_key(&user.address).unwrap_or(user.address.clone());
        println!("mailbox {}: {}", user.address, store.mailbox(&key)?.len());
    }
    println!("store size: {}", store.size_on_disk()?);
    Ok(())
}
