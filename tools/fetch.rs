//! `mailtool fetch`: a user's mail over POP3 (RFC 1939), appended to an mboxrd file.
//!
//! USER/PASS, STAT and LIST, then RETR each message (dot-stuffing undone, the response
//! ending at `.` CRLF), appended as an mboxrd entry: a `From <sender> <asctime>` line with
//! the sender taken from the `Return-Path:` header the server puts first (CONTRACT §6),
//! then the message bytes with `>*From ` lines quoted by one more `>`, then an empty
//! line. With `--delete` each message is marked with DELE; the file is fsync'd before
//! QUIT, because QUIT is when the server makes the deletions durable: a message is never
//! deleted before our copy is on disk.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;

use crate::password::{PasswordArgs, Stdin};
use crate::pop3::Pop3Connection;

#[derive(Args)]
pub struct FetchArgs {
    /// The POP3 server.
    #[arg(long, default_value = "127.0.0.1:1100", value_name = "ADDR")]
    pop3: String,
    /// The user's full address, as given to `mailtool user add`.
    #[arg(long, value_name = "ADDR")]
    user: String,
    /// Delete each fetched message on the server (applied at QUIT, once the file is
    /// synced).
    #[arg(long)]
    delete: bool,
    /// The mbox file to append to (created if missing).
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    output: PathBuf,
    #[command(flatten)]
    password: PasswordArgs,
}

const TIMEOUT: Duration = Duration::from_secs(60);

/// The largest message fetched; a longer response is an error, not unbounded memory.
const MAX_MESSAGE: usize = 1 << 30;

pub fn run(args: FetchArgs) -> Result<()> {
    if args.user.contains(['\r', '\n']) || args.user.is_empty() {
        bail!("--user needs an address on one line");
    }
    let password = args.password.read(&args.user, false, Stdin::Whole)?;
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&args.output)
        .with_context(|| format!("opening {}", args.output.display()))?;

    let mut pop = Pop3Connection::connect(&args.pop3, TIMEOUT, MAX_MESSAGE)?;
    pop.command(&format!("USER {}", args.user), "USER")?;
    pop.command(&format!("PASS {password}"), "PASS")?;
    let stat = pop.command("STAT", "STAT")?;
    let count: usize = stat
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| anyhow!("STAT: cannot read the message count in {stat:?}"))?;
    // LIST gives each message's exact size (CONTRACT §6), which tells a CRLF the server
    // added before the terminating dot from one that belongs to the message.
    let mut sizes = std::collections::HashMap::new();
    for line in pop.multiline("LIST", "LIST")?.split(|&b| b == b'\n') {
        let line = String::from_utf8_lossy(line);
        let mut words = line.split_whitespace();
        if let (Some(Ok(msg)), Some(Ok(size))) =
            (words.next().map(str::parse::<usize>), words.next().map(str::parse::<usize>))
        {
            sizes.insert(msg, size);
        }
    }

    let now = engine::trace::mbox_date(engine::trace::unix_now());
    let (mut fetched, mut deleted) = (0usize, 0usize);
    for msg in 1..=count {
        if !sizes.is_empty() && !sizes.contains_key(&msg) {
            // Not listed: already gone (a message deleted by this session cannot be).
            continue;
        }
        let mut message = pop.multiline(&format!("RETR {msg}"), &format!("RETR {msg}"))?;
        if let Some(&size) = sizes.get(&msg) {
            if message.len() == size + 2 && message.ends_with(b"\r\n") {
                message.truncate(size);
            }
        }
        file.write_all(&mbox_entry(&message, &now)).with_context(|| format!("writing to {}", args.output.display()))?;
        fetched += 1;
        if args.delete {
            pop.command(&format!("DELE {msg}"), &format!("DELE {msg}"))?;
            deleted += 1;
        }
    }
    file.sync_all().with_context(|| format!("syncing {}", args.output.display()))?;
    pop.command("QUIT", "QUIT")?;
    println!("fetched: {fetched}");
    if args.delete {
        println!("deleted: {deleted}");
    }
    Ok(())
}

/// The sender for the `From ` line: the `Return-Path:` of the header block, or
/// `MAILER-DAEMON` for the null sender or when there is none.
pub(crate) fn sender(message: &[u8]) -> String {
    for line in message.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            break;
        }
        let text = String::from_utf8_lossy(line);
        let Some((name, value)) = text.split_once(':') else { continue };
        if name.eq_ignore_ascii_case("Return-Path") {
            let value = value.trim();
            let address = value.strip_prefix('<').and_then(|v| v.strip_suffix('>')).unwrap_or(value);
            if address.is_empty() || address.chars().any(|c| c.is_whitespace() || c.is_control()) {
                break;
            }
            return address.to_string();
        }
    }
    "MAILER-DAEMON".to_string()
}

/// One mboxrd entry: `From ` line, the message with `>*From ` lines quoted, empty line.
pub(crate) fn mbox_entry(message: &[u8], asctime: &str) -> Vec<u8> {
    let mut out = format!("From {} {asctime}\n", sender(message)).into_bytes();
    // Writing into a Vec cannot fail.
    if !engine::mbox::write_quoted(&mut out, message, true).unwrap_or(true) {
        out.push(b'\n');
    }
    out.push(b'\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sender_comes_from_return_path() {
        assert_eq!(sender(b"Return-Path: <a@b.test>\r\nReceived: x\r\n\r\nbody\r\n"), "a@b.test");
        assert_eq!(sender(b"Return-Path: <>\r\n\r\n"), "MAILER-DAEMON");
        assert_eq!(sender(b"Subject: x\r\n\r\nReturn-Path: <late@b>\r\n"), "MAILER-DAEMON");
        assert_eq!(sender(b"return-path:   <c@d>  \r\n\r\n"), "c@d");
    }

    #[test]
    fn mboxrd_quotes_from_lines_and_ends_with_an_empty_line() {
        let message = b"Return-Path: <a@b>\r\n\r\nFrom me\r\n>From you\r\n>>From them\r\nFromage\r\n From x\r\n";
        let entry = mbox_entry(message, "Thu Jan  1 00:00:00 1970");
        let want = "From a@b Thu Jan  1 00:00:00 1970\nReturn-Path: <a@b>\r\n\r\n>From me\r\n>>From you\r\n>>>From them\r\nFromage\r\n From x\r\n\n";
        assert_eq!(String::from_utf8(entry).unwrap(), want);
        let entry = mbox_entry(b"no newline", "T");
        assert_eq!(entry, b"From MAILER-DAEMON T\nno newline\n\n");
    }
}
