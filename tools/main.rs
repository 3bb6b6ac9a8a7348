//! `mailtool`: maild's admin tool: users, export, stats, and a load generator.
//!
//! Store commands work whether or not maild runs on `--data`: through its admin socket
//! when it does, on the store directly when it does not (see `admin.rs`).

mod admin;
mod bench;
mod fetch;
#[cfg(test)]
mod generated;
mod password;
mod pop3;
mod send;
mod stress;

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "mailtool", version, about = "Administer a maild store and test a maild server")]
struct Cli {
    /// The maild data directory.
    #[arg(long, global = true, default_value = "./maild-data", value_name = "DIR")]
    data: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Add, remove, list users and set passwords.
    #[command(subcommand)]
    User(admin::UserCommand),
    /// Manage mailboxes (`mailbox clear ADDR` empties one).
    #[command(subcommand)]
    Mailbox(admin::MailboxCommand),
    /// Write messages as mboxrd (stdout or -o FILE) or Maildir (-o DIR).
    Export(admin::ExportArgs),
    /// A consistent full copy of the store (taken while maild runs) into a new DIR.
    Backup {
        #[arg(short = 'o', value_name = "DIR")]
        output: PathBuf,
    },
    /// Build a working store in --data (empty) from a backup DIR.
    Restore { backup: PathBuf },
    /// Check the store: sequence, records, mailboxes, range files. Non-zero on a fault.
    Verify,
    /// Print `key: value` lines about the store.
    Stats,
    /// The outbound queue (`queue flush` retries everything now, `queue delete N` removes one).
    Queue {
        #[command(subcommand)]
        command: Option<admin::QueueCommand>,
    },
    /// Known peers: static, discovered, and remembered domains (`peers forget DOMAIN`).
    Peers {
        #[command(subcommand)]
        command: Option<admin::PeersCommand>,
    },
    /// Load generators.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Random valid transactions and every SMTP error case, each reply checked.
    Stress(stress::StressArgs),
    /// Send one message over SMTP (body from stdin).
    Send(send::SendArgs),
    /// Fetch a user's mail over POP3 into an mbox file.
    Fetch(fetch::FetchArgs),
}

fn main() {
    // Stores, backups, exports and fetched mail are their owner's only.
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    let cli = Cli::parse();
    let result: Result<()> = match cli.command {
        Command::User(command) => admin::user_request(command).and_then(|r| admin::run(&cli.data, r)),
        Command::Mailbox(command) => admin::mailbox_request(command).and_then(|r| admin::run(&cli.data, r)),
        Command::Export(args) => admin::export_request(args).and_then(|r| admin::run(&cli.data, r)),
        Command::Backup { output } => admin::backup_request(&output).and_then(|r| admin::run(&cli.data, r)),
        Command::Restore { backup } => admin::restore(&cli.data, &backup),
        Command::Verify => admin::run(&cli.data, engine::admin::Request::Verify),
        Command::Stats => admin::run(&cli.data, engine::admin::Request::Stats),
        Command::Queue { command } => admin::run(&cli.data, admin::queue_request(command)),
        Command::Peers { command } => admin::run(&cli.data, admin::peers_request(command)),
        Command::Bench(command) => bench::run(command),
        Command::Stress(args) => stress::run(args),
        Command::Send(args) => send::run(args),
        Command::Fetch(args) => fetch::run(args),
    };
    if let Err(error) = result {
        eprintln!("mailtool: {error:#}");
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn generated_man_pages_and_completions_are_current() {
        super::generated::check(super::Cli::command(), "1");
    }
}
