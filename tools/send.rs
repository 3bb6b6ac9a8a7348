//! `mailtool send`: one message over SMTP, its body read from stdin.
//!
//! With `--subject`, stdin is the body and the tool writes the header block (From, To,
//! Subject, Date, Message-ID, and MIME headers when the body is 8-bit); without it, stdin
//! is the whole message. Bare LF line ends become CRLF (RFC 5321 §2.3.8), dot-stuffing is
//! done on the wire (§4.5.2), and the server's final reply is printed. It speaks SMTP
//! through engine's client (`forward::client`), one pipelined transaction: a refused
//! greeting, EHLO, STARTTLS or AUTH ends the run with an error; a refused recipient is an
//! error naming its command and the reply, while the recipients the server took still
//! get the message (as with any mail client).
//!
//! For a submission port: `--starttls` encrypts first (`--tls-ca FILE` checks the
//! certificate), `--user` logs in with AUTH PLAIN.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use clap::Args;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};

use crate::password::{PasswordArgs, Stdin};
use engine::forward::client::{MessageData, OutboundMessage, RecipientOutcome, Sent, SmtpConnection, Stage};

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
    /// Encrypt with STARTTLS (RFC 3207) before anything else; fails if the server does
    /// not offer it.
    #[arg(long)]
    starttls: bool,
    /// Check the server's certificate against the CA certificates in this PEM file, for
    /// the host named in --smtp. Without it the certificate is not checked.
    #[arg(long, value_name = "FILE", requires = "starttls")]
    tls_ca: Option<PathBuf>,
    /// Log in as this user with AUTH PLAIN (RFC 4954), as a submission port requires. The
    /// password is prompted for on the terminal, read from --password-file, or with
    /// --password-stdin taken from the first line of stdin (the message follows it).
    #[arg(long, value_name = "ADDR")]
    user: Option<String>,
    #[command(flatten)]
    password: PasswordArgs,
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
    let login = match &args.user {
        Some(user) => Some(Login { user: user.clone(), password: args.password.read(user, false, Stdin::FirstLine)? }),
        None => None,
    };
    let tls = match (&args.tls_ca, args.starttls) {
        (Some(ca), _) => Some(verified_client(ca)?),
        (None, true) => {
            eprintln!("warning: the server's certificate is not checked (--tls-ca FILE checks it)");
            Some(engine::forward::tls::unverified_client().context("TLS set-up")?)
        }
        (None, false) => None,
    };
    let mut input = Vec::new();
    std::io::stdin().read_to_end(&mut input).context("reading the message from stdin")?;
    let body = to_crlf(&input);
    let message = match &args.subject {
        Some(subject) => {
            let mut message = headers(&args.from, &args.to, subject, &body, engine::trace::unix_now())?.into_bytes();
            message.extend_from_slice(&body);
            message
        }
        None => body,
    };
    let reply = deliver(&args, tls, login.as_ref(), &message)?;
    println!("{reply}");
    Ok(())
}

struct Login {
    user: String,
    password: String,
}

/// A TLS client that trusts only the CA certificates in `ca`.
fn verified_client(ca: &Path) -> Result<Arc<ClientConfig>> {
    let name = ca.display();
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).with_context(|| format!("--tls-ca {name}"))? {
        let cert = cert.with_context(|| format!("--tls-ca {name}: not a PEM certificate"))?;
        roots.add(cert).with_context(|| format!("--tls-ca {name}: not a usable CA certificate"))?;
    }
    if roots.is_empty() {
        bail!("--tls-ca {name}: no CERTIFICATE block in the file");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
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
/// `now` is seconds since the epoch.
fn headers(from: &str, to: &[String], subject: &str, body: &[u8], now: u64) -> Result<String> {
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
    out.push_str(&format!("Date: {}\r\n", engine::trace::rfc5322_date_of(now)));
    let domain = from.rsplit_once('@').map(|(_, domain)| domain).filter(|d| !d.is_empty()).unwrap_or("localhost");
    let unique = format!("{now}.{}", std::process::id());
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
            words.push(format!("=?UTF-8?B?{}?=", BASE64.encode(chunk.as_bytes())));
            chunk.clear();
        }
        chunk.push(c);
    }
    if !chunk.is_empty() {
        words.push(format!("=?UTF-8?B?{}?=", BASE64.encode(chunk.as_bytes())));
    }
    words.join("\r\n ")
}

/// Runs one SMTP transaction; the reply to the message when every recipient took it.
/// A recipient the server refuses is an error naming the command and the reply (the
/// others still get the message, as with any mail client).
fn deliver(args: &SendArgs, tls: Option<Arc<ClientConfig>>, login: Option<&Login>, message: &[u8]) -> Result<String> {
    let mut connection = SmtpConnection::open(args.smtp.as_str(), &args.helo, TIMEOUT)
        .with_context(|| format!("connecting to {}", args.smtp))?;
    if let Some(tls) = tls {
        if !connection.extensions().starttls {
            connection.quit();
            bail!("{} does not offer STARTTLS", args.smtp);
        }
        connection.starttls(tls, tls_server_name(&args.smtp)?).context("STARTTLS")?;
    }
    if let Some(login) = login {
        if !connection.extensions().auth_plain {
            let hint = if connection.is_encrypted() { "" } else { " (it may want --starttls first)" };
            connection.quit();
            bail!("{} does not offer AUTH PLAIN{hint}", args.smtp);
        }
        connection.auth_plain(&login.user, &login.password)?;
    }
    let outbound = OutboundMessage { sender: &args.from, recipients: &args.to, data: MessageData::Parts(&[message]) };
    let sent = connection.send(&outbound)?;
    connection.quit();
    match verdict(&args.from, &args.to, sent) {
        (Some(reply), refusals) if refusals.is_empty() => Ok(reply),
        (Some(reply), refusals) => {
            println!("{reply}");
            bail!("the others got the message; refused:\n{}", refusals.join("\n"))
        }
        (None, refusals) => bail!("{}", refusals.join("\n")),
    }
}

/// What to print of a transaction: the server's reply to the message if anyone got it,
/// and a line per refusal (a refusal of MAIL, DATA or the message, which is one for every
/// recipient, said once).
fn verdict(from: &str, to: &[String], sent: Sent) -> (Option<String>, Vec<String>) {
    let mut refusals: Vec<String> = Vec::new();
    for ((recipient, outcome), stage) in to.iter().zip(&sent.outcomes).zip(&sent.decided_by) {
        if let RecipientOutcome::Deferred(reply) | RecipientOutcome::Rejected(reply) = outcome {
            let refusal = match stage {
                Stage::Rcpt => format!("RCPT TO:<{recipient}>: {reply}"),
                Stage::Mail => format!("MAIL FROM:<{from}>: {reply}"),
                stage => format!("{}: {reply}", stage.command()),
            };
            if !refusals.contains(&refusal) {
                refusals.push(refusal);
            }
        }
    }
    let delivered = sent.outcomes.contains(&RecipientOutcome::Accepted);
    (sent.final_reply.filter(|_| delivered), refusals)
}

/// The TLS server name for `HOST:PORT` (an IP address or a DNS name; `[v6]` too).
pub(crate) fn tls_server_name(address: &str) -> Result<ServerName<'static>> {
    let host = address.rsplit_once(':').map_or(address, |(host, _)| host).trim_matches(['[', ']']);
    ServerName::try_from(host.to_string()).with_context(|| format!("{host:?} as a TLS server name"))
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
    fn the_verdict_names_each_refusal_once_and_the_reply_only_if_someone_got_it() {
        use RecipientOutcome::{Accepted, Deferred, Rejected};
        let to = vec!["a@d.test".to_string(), "b@d.test".to_string()];
        let sent = |outcomes: Vec<RecipientOutcome>, decided_by: Vec<Stage>, final_reply: Option<&str>| Sent {
            outcomes,
            decided_by,
            final_reply: final_reply.map(String::from),
        };
        let ok = "250 2.0.0 Ok: delivered message 1";
        let all = sent(vec![Accepted, Accepted], vec![Stage::EndOfData; 2], Some(ok));
        assert_eq!(verdict("s@x.test", &to, all), (Some(ok.to_string()), vec![]));
        let one = sent(vec![Rejected("550 5.1.1 no".into()), Accepted], vec![Stage::Rcpt, Stage::EndOfData], Some(ok));
        assert_eq!(
            verdict("s@x.test", &to, one),
            (Some(ok.to_string()), vec!["RCPT TO:<a@d.test>: 550 5.1.1 no".into()])
        );
        let full = "452 4.3.1 full";
        let none = sent(vec![Deferred(full.into()), Deferred(full.into())], vec![Stage::EndOfData; 2], Some(full));
        assert_eq!(verdict("s@x.test", &to, none), (None, vec![format!("end of data: {full}")]));
        let mail = sent(vec![Rejected("553 no".into()), Rejected("553 no".into())], vec![Stage::Mail; 2], None);
        assert_eq!(verdict("s@x.test", &to, mail), (None, vec!["MAIL FROM:<s@x.test>: 553 no".to_string()]));
    }

    #[test]
    fn headers_are_built_and_non_ascii_subjects_encoded() {
        let to = vec!["a@d.test".to_string(), "b@d.test".to_string()];
        let text = headers("s@x.test", &to, "hello", b"plain", 0).unwrap();
        assert!(text.starts_with("From: <s@x.test>\r\nTo: <a@d.test>,\r\n <b@d.test>\r\nSubject: hello\r\nDate: Thu, 01 Jan 1970 00:00:00 +0000\r\nMessage-ID: <"), "{text}");
        assert!(text.ends_with(">\r\n\r\n"), "{text}");
        let text = headers("s@x.test", &to, "café", "é".as_bytes(), 0).unwrap();
        assert!(text.contains("Subject: =?UTF-8?B?Y2Fmw6k=?=\r\n"), "{text}");
        assert!(text.contains("Content-Type: text/plain; charset=utf-8\r\n"), "{text}");
        assert!(headers("s@x.test", &to, "a\r\nBcc: x", b"", 0).is_err());
    }
}
