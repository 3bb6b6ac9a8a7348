//! `mailtool send`: one message over SMTP, its body read from stdin.
//!
//! With `--subject`, stdin is the body and the tool writes the header block (From, To,
//! Subject, Date, Message-ID, and MIME headers when the body is 8-bit); without it, stdin
//! is the whole message. Bare LF line ends become CRLF (RFC 5321 §2.3.8), dot-stuffing is
//! done on the wire (§4.5.2), and the server's final reply is printed. Any reply that is
//! not 2xx/3xx ends the run with an error naming the command and the reply.

use std::io::Read;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;

use crate::client::{data_payload, Reply, SmtpClient, UtcTime};

#[derive(Args)]
pub struct SendArgs {
    /// The SMTP server.
    #[arg(long, default_value = "127.0.0.1:2525", value_name = "ADDR")]
    smtp: String,
    /// The envelope sender (MAIL FROM); an empty string is the null sender `<>`.
    #[arg(long, value_name = "ADDR")]
    from: String,
    /// A recipient (repeatable).
    #[arg(long = "to", value_name = "ADDR", required = true)]
    to: Vec<String>,
    /// Write From:, To:, Subject: and Date: headers before the body from stdin; without
    /// it, stdin is the whole message, headers included.
    #[arg(long)]
    subject: Option<String>,
    /// The name given in EHLO.
    #[arg(long, default_value = "localhost", value_name = "NAME")]
    helo: String,
}

/// Replies and connects wait at most this long.
const TIMEOUT: Duration = Duration::from_secs(60);

pub fn run(args: SendArgs) -> Result<()> {
    for address in std::iter::once(&args.from).chain(&args.to) {
        check_address(address)?;
    }
    if args.to.iter().any(String::is_empty) {
        bail!("--to needs an address");
    }
    let mut input = Vec::new();
    std::io::stdin().read_to_end(&mut input).context("reading the message from stdin")?;
    let body = to_crlf(&input);
    let message = match &args.subject {
        Some(subject) => {
            let mut message = headers(&args.from, &args.to, subject, &body, UtcTime::now())?.into_bytes();
            message.extend_from_slice(&body);
            message
        }
        None => body,
    };
    let reply = deliver(&args, &message)?;
    println!("{}", reply.text);
    Ok(())
}

/// An address must fit inside `<…>` on one command line.
fn check_address(address: &str) -> Result<()> {
    if address.chars().any(|c| c.is_whitespace() || c.is_control() || c == '<' || c == '>') {
        bail!("{address:?} is not a usable address (whitespace, control characters or angle brackets)");
    }
    Ok(())
}

/// Turns every LF not preceded by CR into CRLF; bare CRs stay as they are.
pub(crate) fn to_crlf(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len() + input.len() / 32);
    let mut previous = 0u8;
    for &b in input {
        if b == b'\n' && previous != b'\r' {
            out.push(b'\r');
        }
        out.push(b);
        previous = b;
    }
    out
}

/// The header block and the empty line that ends it (RFC 5322 §3.6).
fn headers(from: &str, to: &[String], subject: &str, body: &[u8], now: UtcTime) -> Result<String> {
    if subject.contains(['\r', '\n']) {
        bail!("--subject must be one line");
    }
    let mut out = String::new();
    if !from.is_empty() {
        out.push_str(&format!("From: <{from}>\r\n"));
    }
    let to: Vec<String> = to.iter().map(|address| format!("<{address}>")).collect();
    out.push_str(&format!("To: {}\r\n", to.join(",\r\n ")));
    out.push_str(&format!("Subject: {}\r\n", encode_header(subject)));
    out.push_str(&format!("Date: {}\r\n", now.rfc5322()));
    let domain = from.rsplit_once('@').map(|(_, domain)| domain).filter(|d| !d.is_empty()).unwrap_or("localhost");
    let unique = format!("{}.{:02}{:02}{:02}.{}", now.year, now.hour, now.minute, now.second, std::process::id());
    out.push_str(&format!("Message-ID: <{unique}.{}@{domain}>\r\n", body.len()));
    if !body.is_ascii() {
        // RFC 2045/6532: say how to read 8-bit bytes; we assume UTF-8 text.
        out.push_str(
            "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n",
        );
    }
    out.push_str("\r\n");
    Ok(out)
}

/// ASCII text as is; anything else as RFC 2047 encoded words (base64, UTF-8), each at
/// most 75 characters, folded.
fn encode_header(text: &str) -> String {
    if text.is_ascii() {
        return text.to_string();
    }
    let mut words = Vec::new();
    let mut chunk = String::new();
    for c in text.chars() {
        // 45 octets of UTF-8 become 60 of base64: 72 with the `=?UTF-8?B?` and `?=`.
        if chunk.len() + c.len_utf8() > 45 {
            words.push(format!("=?UTF-8?B?{}?=", base64(chunk.as_bytes())));
            chunk.clear();
        }
        chunk.push(c);
    }
    if !chunk.is_empty() {
        words.push(format!("=?UTF-8?B?{}?=", base64(chunk.as_bytes())));
    }
    words.join("\r\n ")
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for group in bytes.chunks(3) {
        let n = group.iter().enumerate().fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= group.len() {
                let index = usize::try_from((n >> (18 - 6 * i)) & 63).unwrap_or(0);
                out.push(char::from(ALPHABET[index]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Runs one SMTP transaction; the final reply on success.
fn deliver(args: &SendArgs, message: &[u8]) -> Result<Reply> {
    let mut client =
        SmtpClient::connect(&args.smtp, TIMEOUT).with_context(|| format!("connecting to {}", args.smtp))?;
    let greeting = client.reply().context("reading the greeting")?;
    if greeting.code != 220 {
        bail!("the server refused the connection: {}", greeting.text);
    }
    let mut session = Session { client };
    let ehlo = session.client.command(&format!("EHLO {}", args.helo)).context("EHLO")?;
    let ehlo = if ehlo.code == 250 { ehlo } else { session.step(&format!("HELO {}", args.helo))? };
    // RFC 1870: announce the size, and do not send what the server already says is too big.
    let limit = ehlo.lines.iter().skip(1).find_map(|line| {
        let mut words = line.get(4..)?.split_whitespace();
        words.next().filter(|w| w.eq_ignore_ascii_case("SIZE"))?;
        words.next()?.parse::<u64>().ok()
    });
    let size = u64::try_from(message.len()).unwrap_or(u64::MAX);
    if let Some(limit) = limit.filter(|&l| l > 0 && size > l) {
        session.quit();
        bail!("the message is {size} octets; the server takes at most {limit}");
    }
    let size_param = if limit.is_some() { format!(" SIZE={size}") } else { String::new() };
    session.step(&format!("MAIL FROM:<{}>{size_param}", args.from))?;
    for to in &args.to {
        session.step(&format!("RCPT TO:<{to}>"))?;
    }
    session.step("DATA")?;
    session.client.send(&data_payload(message)).context("sending the message")?;
    let reply = session.client.reply().context("waiting for the reply to the message")?;
    if !reply.is_positive() {
        session.quit();
        bail!("end of data: {}", reply.lines.join(" / "));
    }
    session.quit();
    Ok(reply)
}

struct Session {
    client: SmtpClient,
}

impl Session {
    /// Sends a command; an error naming it and the reply unless the reply is 2xx/3xx.
    fn step(&mut self, command: &str) -> Result<Reply> {
        let reply = self.client.command(command).with_context(|| format!("{command}: no reply"))?;
        if !reply.is_positive() {
            self.quit();
            bail!("{command}: {}", reply.lines.join(" / "));
        }
        Ok(reply)
    }

    /// Ends the session politely; its outcome does not matter any more.
    fn quit(&mut self) {
        let _ = self.client.command("QUIT");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_line_feeds_become_crlf() {
        assert_eq!(to_crlf(b"a\nb\r\nc\rd\n\n"), b"a\r\nb\r\nc\rd\r\n\r\n");
        assert_eq!(to_crlf(b""), b"");
    }

    #[test]
    fn base64_matches_rfc_4648_vectors() {
        let table: [(&[u8], &str); 7] = [
            (b"", ""),
            (b"f", "Zg=="),
            (b"fo", "Zm8="),
            (b"foo", "Zm9v"),
            (b"foob", "Zm9vYg=="),
            (b"fooba", "Zm9vYmE="),
            (b"foobar", "Zm9vYmFy"),
        ];
        for (input, output) in table {
            assert_eq!(base64(input), output);
        }
    }

    #[test]
    fn headers_are_built_and_non_ascii_subjects_encoded() {
        let to = vec!["a@d.test".to_string(), "b@d.test".to_string()];
        let text = headers("s@x.test", &to, "hello", b"plain", UtcTime::from_unix(0)).unwrap();
        assert!(text.starts_with("From: <s@x.test>\r\nTo: <a@d.test>,\r\n <b@d.test>\r\nSubject: hello\r\nDate: Thu, 01 Jan 1970 00:00:00 +0000\r\nMessage-ID: <"), "{text}");
        assert!(text.ends_with(">\r\n\r\n"), "{text}");
        let text = headers("s@x.test", &to, "café", "é".as_bytes(), UtcTime::from_unix(0)).unwrap();
        assert!(text.contains("Subject: =?UTF-8?B?Y2Fmw6k=?=\r\n"), "{text}");
        assert!(text.contains("Content-Type: text/plain; charset=utf-8\r\n"), "{text}");
        assert!(headers("s@x.test", &to, "a\r\nBcc: x", b"", UtcTime::from_unix(0)).is_err());
    }
}
