//! The store commands (`user`, `export`, `backup`, `restore`, `verify`, `stats`, `queue`):
//! parsed here, run by `engine::admin` either through a running maild's admin socket or,
//! when maild is not running, on the store opened in this process. Same code, same output.

use std::io::{self, BufReader, BufWriter, IsTerminal, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use engine::address::user_key;
use engine::admin::frame::{encode_request, read_frame, write_frame, Frame};
use engine::admin::{execute, AdminContext, ExportFormat, Output, Request};
use engine::{Store, StoreError};
use indicatif::{ProgressBar, ProgressStyle};

use crate::password::{PasswordArgs, Stdin};

#[derive(Subcommand)]
pub enum UserCommand {
    /// Create a user (creates the store if DIR is empty).
    Add {
        address: String,
        /// Add the user even though maild does not serve the address's domain.
        #[arg(long)]
        any_domain: bool,
        #[command(flatten)]
        password: PasswordArgs,
    },
    /// Remove a user and the mail in their mailbox (a new account with the same address
    /// starts empty).
    Del { address: String },
    /// List users.
    List,
    /// Set a user's password.
    Passwd {
        address: String,
        #[command(flatten)]
        password: PasswordArgs,
    },
}

#[derive(Subcommand)]
pub enum MailboxCommand {
    /// Remove every message from a user's mailbox (the user stays).
    Clear { address: String },
}

pub fn mailbox_request(command: MailboxCommand) -> Result<Request> {
    Ok(match command {
        MailboxCommand::Clear { address } => Request::MailboxClear { address: checked(&address)? },
    })
}

#[derive(Clone, Copy, ValueEnum)]
pub enum Format {
    Mbox,
    Maildir,
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
    /// Output file (mbox; default stdout) or new directory (maildir).
    #[arg(short = 'o', value_name = "PATH")]
    output: Option<PathBuf>,
}

#[derive(Subcommand)]
pub enum QueueCommand {
    /// Retry every queued message now.
    Flush,
    /// Remove message N from the queue and bounce it to its sender.
    Delete {
        number: u64,
        /// No bounce.
        #[arg(long)]
        silent: bool,
    },
}

#[derive(Subcommand)]
pub enum PeersCommand {
    /// Forget a domain a discovered peer owned (its mail no longer waits for the peer).
    Forget { domain: String },
}

pub fn peers_request(command: Option<PeersCommand>) -> Request {
    match command {
        None => Request::Peers,
        Some(PeersCommand::Forget { domain }) => Request::PeersForget { domain },
    }
}

pub fn queue_request(command: Option<QueueCommand>) -> Request {
    match command {
        None => Request::Queue,
        Some(QueueCommand::Flush) => Request::QueueFlush,
        Some(QueueCommand::Delete { number, silent }) => Request::QueueDelete { number, silent },
    }
}

fn checked(address: &str) -> Result<String> {
    user_key(address).map_err(|_| anyhow::anyhow!("{address:?} is not a valid address (want local@domain)"))?;
    Ok(address.to_string())
}

fn absolute(path: &Path) -> Result<String> {
    Ok(std::path::absolute(path).with_context(|| format!("resolving {}", path.display()))?.display().to_string())
}

pub fn user_request(command: UserCommand) -> Result<Request> {
    Ok(match command {
        UserCommand::Add { address, any_domain, password } => {
            let address = checked(&address)?;
            Request::UserAdd { password: password.read(&address, true, Stdin::Whole)?, address, any_domain }
        }
        UserCommand::Del { address } => Request::UserDel { address: checked(&address)? },
        UserCommand::List => Request::UserList,
        UserCommand::Passwd { address, password } => {
            let address = checked(&address)?;
            Request::UserPasswd { password: password.read(&address, true, Stdin::Whole)?, address }
        }
    })
}

pub fn export_request(args: ExportArgs) -> Result<Request> {
    let format = match args.format {
        Format::Mbox => ExportFormat::Mbox,
        Format::Maildir => ExportFormat::Maildir,
    };
    let output = args.output.as_deref().map(absolute).transpose()?;
    Ok(Request::Export { user: args.user, from: args.from, to: args.to, format, output })
}

pub fn backup_request(output: &Path) -> Result<Request> {
    Ok(Request::Backup { output: absolute(output)? })
}

/// Results to this terminal: bytes to stdout, progress as a bar on stderr (only when it
/// is a terminal, so pipes and scripts see clean output).
struct Terminal {
    stdout: BufWriter<io::Stdout>,
    bar: Option<ProgressBar>,
}

impl Terminal {
    fn new() -> Terminal {
        Terminal { stdout: BufWriter::new(io::stdout()), bar: None }
    }
}

impl Output for Terminal {
    fn stdout(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stdout.write_all(bytes)
    }

    fn progress(&mut self, label: &str, done: u64, total: u64) {
        if !io::stderr().is_terminal() {
            return;
        }
        let bar = self.bar.get_or_insert_with(|| {
            let bar = ProgressBar::new(total);
            if let Ok(style) = ProgressStyle::with_template("{msg:>8} [{bar:40}] {pos}/{len} {per_sec} eta {eta}") {
                bar.set_style(style.progress_chars("=> "));
            }
            bar
        });
        bar.set_message(label.to_string());
        bar.set_length(total);
        bar.set_position(done);
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        let _ = self.stdout.flush();
    }
}

/// Runs a request through maild's socket if maild runs on `data`, else in-process.
pub fn run(data: &Path, request: Request) -> Result<()> {
    let mut terminal = Terminal::new();
    if let Ok(stream) = UnixStream::connect(data.join("maild.sock")) {
        return remote(stream, &request, &mut terminal);
    }
    let creates = matches!(request, Request::UserAdd { .. });
    if !creates && !data.join("store").exists() {
        bail!("no maild store in {} (give --data DIR; `mailtool user add` creates one)", data.display());
    }
    let context = AdminContext::offline(open(data)?).map_err(|e| anyhow::anyhow!("{e}"))?;
    execute(&context, request, &mut terminal).map_err(|e| anyhow::anyhow!("{e}"))
}

fn remote(stream: UnixStream, request: &Request, terminal: &mut Terminal) -> Result<()> {
    let mut writer = BufWriter::new(stream.try_clone()?);
    write_frame(&mut writer, &Frame::Request(encode_request(request)?))?;
    writer.flush()?;
    let mut reader = BufReader::new(stream);
    loop {
        match read_frame(&mut reader).context("reading maild's answer on its admin socket")? {
            Frame::Stdout(bytes) => terminal.stdout(&bytes)?,
            Frame::Progress { label, done, total } => terminal.progress(&label, done, total),
            Frame::Done => return Ok(()),
            Frame::Failed(message) => bail!("{message}"),
            Frame::Request(_) => bail!("unexpected frame from maild"),
        }
    }
}

pub fn open(data: &Path) -> Result<Store> {
    Store::open(data).map_err(|e| match e {
        StoreError::Locked(_) => anyhow::anyhow!(
            "the store in {} is locked by a running maild, but its admin socket {} does not answer; is maild still starting?",
            data.display(),
            data.join("maild.sock").display()
        ),
        other => anyhow::anyhow!("opening the store in {}: {other}", data.display()),
    })
}

/// `mailtool --data NEWDIR restore DIR`: always in-process, into an empty NEWDIR.
pub fn restore(data: &Path, backup: &Path) -> Result<()> {
    if UnixStream::connect(data.join("maild.sock")).is_ok() {
        bail!("maild is running on {}; restore builds a new store in an empty directory", data.display());
    }
    let mut terminal = Terminal::new();
    engine::admin::copy::restore(backup, data, &mut terminal).map_err(|e| anyhow::anyhow!("{e}"))
}
