//! `mailtool`: maild's admin tool: users, export, stats, and a load generator.
//!
//! Store commands open the store in `--data` directly; they need maild stopped (sled lets
//! one process open a store) and say so clearly when it is running.

mod bench;
mod client;
mod fetch;
mod send;
mod store_cmds;
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
    User(store_cmds::UserCommand),
    /// Write messages as mboxrd (stdout or -o FILE).
    Export(store_cmds::ExportArgs),
    /// Print `key: value` lines about the store.
    Stats,
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
    let cli = Cli::parse();
    let result: Result<()> = match cli.command {
        Command::User(command) => store_cmds::user(&cli.data, command),
        Command::Export(args) => store_cmds::export(&cli.data, args),
        Command::Stats => store_cmds::stats(&cli.data),
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
