//! The outbound SMTP client (RFC 5321): how the forward stage hands stored messages to a
//! peer server, several messages over one connection.
//!
//! [`SmtpConnection::open`] connects, reads the greeting and says EHLO (HELO if the peer
//! refuses EHLO); [`SmtpConnection::send`] runs one mail transaction per message and
//! reports one [`RecipientOutcome`] per recipient; [`SmtpConnection::quit`] ends the
//! session. One transaction, and what each reply decides:
//!
//! ```text
//!   C: MAIL FROM:<s> [SIZE=n] [BODY=8BITMIME]  S: 2xx | 4xx/5xx: every recipient fails, RSET
//!   C: RCPT TO:<r>     (once per recipient)    S: 2xx | 4xx/5xx: this recipient fails
//!      (no recipient accepted: no data, RSET)
//!   C: DATA                                    S: 354 | 4xx/5xx: the accepted ones fail, RSET
//!   C: message, dot-stuffed, CRLF "." CRLF     S: 2xx: accepted | 4xx/5xx: the accepted ones fail
//! ```
//!
//! With PIPELINING (RFC 2920) MAIL, every RCPT and DATA leave in one write and the
//! replies are read back in order; without it each command waits for its reply.
//!
//! [`SmtpConnection::open_opportunistic`] (used towards MX hosts) also says STARTTLS when
//! the server offers it (RFC 3207) and greets again inside TLS; a server that refuses it
//! is used in plain text, and one whose handshake fails is reconnected to in plain text,
//! as Postfix does at its "may" level.
//!
//! Two kinds of failure: a reply about the message or a recipient is an outcome
//! (`Deferred` for 4xx, `Rejected` for 5xx), and the connection stays usable; a failure of
//! the connection itself (421, EOF, timeout, a malformed reply) is a [`SendError`], after
//! which the connection is out of step with the peer and refuses further use. The caller
//! then defers the whole message: nothing is lost, because the queue drops a message only
//! for recipients reported `Accepted`.
//!
//! The parts that need no socket are pure and tested on their own: reply framing and
//! parsing ([`read_reply`] over any `BufRead`, [`ReplyAssembler`]), EHLO keywords
//! ([`Extensions`]) and dot-stuffing ([`DotStuffer`]). The socket code only sequences them.

use std::fmt::Write as _;
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection};

use crate::transport::{ClientTransport, Transport};

/// The longest reply line accepted, terminator included. RFC 5321 §4.5.3.1.5 allows 512
/// octets, but real servers send longer texts (URLs, enhanced explanations), so we take
/// four times that and no more: a hostile peer must not be able to grow our memory.
pub const MAX_REPLY_LINE: usize = 2048;

/// The most lines one multi-line reply may have. RFC 5321 sets no limit; the longest
/// replies in practice are EHLO's, a dozen or two lines.
pub const MAX_REPLY_LINES: usize = 100;

/// Outcome texts (for logs and bounces) are cut to this many characters.
const MAX_SUMMARY: usize = 2048;

/// Commands and message data are gathered in a buffer this large, so a pipelined group
/// leaves in one write and message lines are not written one system call each. Slices
/// larger than the buffer go straight to the socket (`BufWriter` does not copy them).
const WRITE_BUFFER: usize = 64 * 1024;

/// One message to send: the envelope, and the message as a sequence of byte slices (for
/// a stored record: the trace header, then the body), sent unchanged.
#[derive(Clone, Copy, Debug)]
pub struct OutboundMessage<'a> {
    /// The reverse path; empty for the null sender `<>`.
    pub sender: &'a str,
    /// The forward paths, in the order the outcomes are reported.
    pub recipients: &'a [String],
    /// The message is the concatenation of these parts.
    pub parts: &'a [&'a [u8]],
}

/// What became of one recipient of one message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecipientOutcome {
    /// The peer took responsibility for the message (its final reply was 2xx).
    Accepted,
    /// A transient failure (4xx): try again later. The text is the peer's reply.
    Deferred(String),
    /// A permanent failure (5xx, or a message or address we cannot send): bounce. The text
    /// is the peer's reply (`550 5.1.1 <x@y>: User unknown`) or a description.
    Rejected(String),
}

/// A failure of the connection, not of one recipient: the whole message is deferred and
/// the connection cannot be used again.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("connection to the peer failed: {0}")]
    Io(#[from] io::Error),
    #[error("SMTP protocol error: {0}")]
    Protocol(String),
}

/// Asks the server at `server` whether it takes mail for `address`, on a connection of
/// its own ([`SmtpConnection::verify`]).
pub fn probe(server: SocketAddr, helo: &str, address: &str, timeout: Duration) -> Result<RecipientOutcome, SendError> {
    let mut connection = SmtpConnection::open(server, helo, timeout)?;
    let outcome = connection.verify(address);
    connection.quit();
    outcome
}

/// The connection's bytes, shared by the reply reader and the command writer (which take
/// turns on one thread): plain TCP, or TLS once STARTTLS succeeded.
#[derive(Clone)]
struct SharedStream(Arc<Mutex<ClientTransport>>);

impl SharedStream {
    fn lock(&self) -> MutexGuard<'_, ClientTransport> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Read for SharedStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.lock().read(buf)
    }
}

impl Write for SharedStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.lock().write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.lock().flush()
    }
}

/// One open SMTP session with a peer.
pub struct SmtpConnection {
    reader: BufReader<SharedStream>,
    writer: BufWriter<SharedStream>,
    /// Applied to connect, to every socket read and write, and (see [`read_reply`]) to
    /// the time a whole reply may take.
    timeout: Duration,
    extensions: Extensions,
    /// Why the connection is no longer in a known state with the peer; `send` refuses
    /// at once while this is set, and `quit` does not bother sending QUIT.
    broken: Option<String>,
}

impl SmtpConnection {
    /// Connects (with `timeout` for connect, each read and each write), reads the 220
    /// greeting, sends EHLO `helo` (falls back to HELO on 5xx), remembers
    /// PIPELINING/SIZE/8BITMIME.
    pub fn open(address: SocketAddr, helo: &str, timeout: Duration) -> Result<SmtpConnection, SendError> {
        let mut connection = SmtpConnection::connect(address, helo, timeout)?;
        connection.greet(helo)?;
        Ok(connection)
    }

    /// Like [`SmtpConnection::open`], and then STARTTLS with `tls` if the server offers
    /// it. A refusal (e.g. `454`) keeps the session in plain text; a failed handshake, or a
    /// session that breaks inside TLS before it is ready, is given up and the server
    /// connected to again without TLS.
    pub fn open_opportunistic(
        address: SocketAddr,
        helo: &str,
        timeout: Duration,
        tls: &Arc<ClientConfig>,
    ) -> Result<SmtpConnection, SendError> {
        let mut connection = SmtpConnection::open(address, helo, timeout)?;
        if !connection.extensions.starttls {
            return Ok(connection);
        }
        match connection.start_tls(address, helo, tls) {
            Ok(()) => Ok(connection),
            Err(error) => {
                log::info!("STARTTLS with {address} failed ({error}); connecting again without TLS");
                connection.broken = Some(format!("STARTTLS failed: {error}"));
                connection.quit();
                SmtpConnection::open(address, helo, timeout)
            }
        }
    }

    /// Whether the session runs inside TLS.
    pub fn is_encrypted(&self) -> bool {
        self.reader.get_ref().lock().is_tls()
    }

    fn connect(address: SocketAddr, helo: &str, timeout: Duration) -> Result<SmtpConnection, SendError> {
        // The name goes into a command line: no room for spaces or line ends.
        if helo.is_empty() || !helo.chars().all(|c| c.is_ascii_graphic()) {
            return Err(SendError::Protocol(format!("invalid HELO name {helo:?}")));
        }
        let stream = TcpStream::connect_timeout(&address, timeout).map_err(io_error)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        // We batch writes ourselves (one flush per pipelined group); Nagle would only
        // delay the last segment of each.
        stream.set_nodelay(true)?;
        let shared = SharedStream(Arc::new(Mutex::new(Transport::Plain(stream))));
        Ok(SmtpConnection {
            reader: BufReader::new(shared.clone()),
            writer: BufWriter::with_capacity(WRITE_BUFFER, shared),
            timeout,
            extensions: Extensions::default(),
            broken: None,
        })
    }

    /// STARTTLS, the handshake, and EHLO again (RFC 3207 §4.2: what the server said
    /// before TLS is forgotten). A reply other than 220 leaves the session as it was.
    fn start_tls(&mut self, address: SocketAddr, helo: &str, tls: &Arc<ClientConfig>) -> Result<(), SendError> {
        self.command("STARTTLS")?;
        let reply = self.read_reply()?;
        if reply.code != 220 {
            log::info!("{address} offered STARTTLS but answered {}; staying in plain text", reply.summary());
            return Ok(());
        }
        // Bytes after the 220 came in the clear and cannot belong to the TLS session.
        if !self.reader.buffer().is_empty() {
            return Err(SendError::Protocol("data after the 220 to STARTTLS".into()));
        }
        let name = ServerName::IpAddress(address.ip().into());
        let session = ClientConnection::new(tls.clone(), name).map_err(|e| SendError::Protocol(format!("TLS: {e}")))?;
        self.reader
            .get_ref()
            .lock()
            .upgrade(session)
            .map_err(|e| SendError::Protocol(format!("TLS handshake: {e}")))?;
        self.extensions = Extensions::default();
        self.ehlo(helo)
    }

    fn greet(&mut self, helo: &str) -> Result<(), SendError> {
        // RFC 5321 §3.1, §4.3.2: anything but 220 (typically 554) means no service here.
        let greeting = self.read_reply()?;
        if greeting.code != 220 {
            return Err(SendError::Protocol(format!("greeting: {}", greeting.summary())));
        }
        self.ehlo(helo)
    }

    fn ehlo(&mut self, helo: &str) -> Result<(), SendError> {
        self.command(&format!("EHLO {helo}"))?;
        let ehlo = self.read_reply()?;
        match Class::of(ehlo.code) {
            Class::Positive => {
                // The first line is the server's name; each further line one keyword.
                self.extensions = Extensions::parse(ehlo.lines.get(1..).unwrap_or_default());
                Ok(())
            }
            // RFC 5321 §3.2: a server that does not know EHLO answers 5xx; try HELO,
            // which offers no extensions.
            Class::Permanent => {
                self.command(&format!("HELO {helo}"))?;
                let reply = self.read_reply()?;
                match Class::of(reply.code) {
                    Class::Positive => Ok(()),
                    _ => Err(SendError::Protocol(format!("HELO: {}", reply.summary()))),
                }
            }
            _ => Err(SendError::Protocol(format!("EHLO: {}", ehlo.summary()))),
        }
    }

    /// Whether the peer offered PIPELINING (RFC 2920).
    pub fn pipelining(&self) -> bool {
        self.extensions.pipelining
    }

    /// The peer's advertised size limit (RFC 1870), if it has a fixed one.
    pub fn size_limit(&self) -> Option<u64> {
        self.extensions.size_limit
    }

    /// Whether the peer offered 8BITMIME (RFC 6152).
    pub fn eight_bit_mime(&self) -> bool {
        self.extensions.eight_bit_mime
    }

    /// False once a connection-level failure happened, or once the reset after a failed
    /// transaction failed: the caller should open a new connection for the next message.
    pub fn is_usable(&self) -> bool {
        self.broken.is_none()
    }

    /// Sends one message: MAIL FROM (with SIZE=n when the server advertised SIZE; a
    /// message over the advertised SIZE gets every recipient Rejected("552 ...") without
    /// sending), RCPT TO per recipient, DATA, the dot-stuffed message, "." — pipelined
    /// (RFC 2920) when PIPELINING was offered, one by one otherwise. Returns one outcome
    /// per recipient, in order; see the module documentation for which reply decides what.
    ///
    /// A message with no recipients sends nothing and returns an empty list. An address
    /// holding control characters (it would break the command line) is `Rejected`
    /// without being sent. If the transaction's outcomes are decided but the RSET that
    /// tidies up after it fails, the outcomes are still returned (they are the peer's own
    /// word) and the connection is marked unusable ([`SmtpConnection::is_usable`]).
    pub fn send(&mut self, message: &OutboundMessage) -> Result<Vec<RecipientOutcome>, SendError> {
        if let Some(why) = &self.broken {
            return Err(SendError::Protocol(format!("connection unusable after an earlier failure: {why}")));
        }
        let mut outcomes: Vec<Option<RecipientOutcome>> = vec![None; message.recipients.len()];
        let result = self.transaction(message, &mut outcomes);
        if let Err(error) = &result {
            self.broken = Some(error.to_string());
        }
        result?;
        // Every path through `transaction` decides every recipient; the fallback is only
        // there so a mistake defers (and retries) instead of panicking or losing mail.
        Ok(outcomes
            .into_iter()
            .map(|o| o.unwrap_or_else(|| RecipientOutcome::Deferred("no outcome recorded".into())))
            .collect())
    }

    /// Runs one mail transaction, filling `outcomes`. An `Err` leaves the connection in an
    /// unknown state; an `Ok` leaves it ready for the next transaction (or `broken` set).
    fn transaction(
        &mut self,
        message: &OutboundMessage,
        outcomes: &mut [Option<RecipientOutcome>],
    ) -> Result<(), SendError> {
        if outcomes.is_empty() {
            return Ok(());
        }
        if has_control(message.sender) {
            let why = RecipientOutcome::Rejected("invalid sender address (control characters), not sent".into());
            outcomes.fill(Some(why));
            return Ok(());
        }
        for (outcome, recipient) in outcomes.iter_mut().zip(message.recipients) {
            if has_control(recipient) {
                *outcome =
                    Some(RecipientOutcome::Rejected("invalid recipient address (control characters), not sent".into()));
            }
        }
        let to_send: Vec<usize> = (0..outcomes.len()).filter(|&i| outcomes[i].is_none()).collect();
        if to_send.is_empty() {
            return Ok(());
        }

        // RFC 1870 §5: the declared size counts the message's octets with CRLF line ends,
        // not the dot-stuffing nor the final dot; we count the CRLF we add at the end.
        let size =
            message.parts.iter().map(|p| p.len()).sum::<usize>() + if ends_with_crlf(message.parts) { 0 } else { 2 };
        let size = u64::try_from(size).unwrap_or(u64::MAX);
        if let Some(limit) = self.extensions.size_limit {
            if size > limit {
                // RFC 1870 §4: a message over the advertised limit "will be rejected
                // with a permanent failure (552)"; sending it would only waste the bytes.
                let why =
                    format!("552 5.3.4 message size {size} exceeds the peer's limit of {limit} octets (not sent)");
                for &i in &to_send {
                    outcomes[i] = Some(RecipientOutcome::Rejected(why.clone()));
                }
                return Ok(());
            }
        }

        let mut mail = format!("MAIL FROM:<{}>", message.sender);
        if self.extensions.size_advertised {
            let _ = write!(mail, " SIZE={size}");
        }
        // RFC 6152 §3: declare 8-bit content where the peer can take it. Where it cannot,
        // the message still goes unchanged (the contract: sent as stored); in practice
        // servers pass 8-bit data through.
        if self.extensions.eight_bit_mime && message.parts.iter().any(|p| !p.is_ascii()) {
            mail.push_str(" BODY=8BITMIME");
        }
        let rcpt = |i: usize| format!("RCPT TO:<{}>", message.recipients[i]);

        let pipelined = self.extensions.pipelining;
        if pipelined {
            // RFC 2920 §3.1: MAIL, the RCPTs and DATA may form one group; DATA is last.
            self.queue(&mail)?;
            for &i in &to_send {
                self.queue(&rcpt(i))?;
            }
            self.queue("DATA")?;
            self.flush()?;
        } else {
            self.command(&mail)?;
        }

        let reply = self.read_reply()?;
        match Class::of(reply.code) {
            Class::Positive => {}
            Class::Transient | Class::Permanent => {
                let outcome = failure(&reply);
                for &i in &to_send {
                    outcomes[i] = Some(outcome.clone());
                }
                // With pipelining the RCPT and DATA replies (503s) are still to come.
                let pending = if pipelined { to_send.len() } else { 0 };
                self.abandon(pending, pipelined);
                return Ok(());
            }
            Class::Intermediate => return Err(unexpected("MAIL", &reply)),
        }

        let mut accepted = Vec::with_capacity(to_send.len());
        for &i in &to_send {
            if !pipelined {
                self.command(&rcpt(i))?;
            }
            let reply = self.read_reply()?;
            match Class::of(reply.code) {
                Class::Positive => accepted.push(i),
                Class::Transient | Class::Permanent => outcomes[i] = Some(failure(&reply)),
                Class::Intermediate => return Err(unexpected("RCPT", &reply)),
            }
        }
        if accepted.is_empty() {
            // RFC 2920 §3.1: the server answers the pipelined DATA with 503 or 554 when
            // no recipient was accepted; read that reply and reset.
            self.abandon(0, pipelined);
            return Ok(());
        }

        if !pipelined {
            self.command("DATA")?;
        }
        let reply = self.read_reply()?;
        if reply.code != 354 {
            match Class::of(reply.code) {
                Class::Transient | Class::Permanent => {
                    let outcome = failure(&reply);
                    for &i in &accepted {
                        outcomes[i] = Some(outcome.clone());
                    }
                    self.abandon(0, false);
                    return Ok(());
                }
                _ => return Err(unexpected("DATA", &reply)),
            }
        }

        self.write_message(message.parts)?;
        // RFC 5321 §4.1.1.4: the reply to the final dot decides for every accepted
        // recipient at once, and ends the transaction either way (no RSET needed).
        let reply = self.read_reply()?;
        let outcome = match Class::of(reply.code) {
            Class::Positive => RecipientOutcome::Accepted,
            Class::Transient | Class::Permanent => failure(&reply),
            Class::Intermediate => return Err(unexpected("end of data", &reply)),
        };
        for &i in &accepted {
            outcomes[i] = Some(outcome.clone());
        }
        Ok(())
    }

    /// Asks whether the peer would take mail for `recipient` (Postfix's address probe):
    /// `MAIL FROM:<>`, `RCPT TO`, then `RSET`; no message is sent. The RCPT reply decides:
    /// 2xx `Accepted`, 5xx `Rejected`, anything else `Deferred`.
    pub fn verify(&mut self, recipient: &str) -> Result<RecipientOutcome, SendError> {
        if let Some(why) = &self.broken {
            return Err(SendError::Protocol(format!("connection unusable after an earlier failure: {why}")));
        }
        if has_control(recipient) {
            return Ok(RecipientOutcome::Rejected("invalid recipient address (control characters)".into()));
        }
        self.command("MAIL FROM:<>")?;
        let reply = self.read_reply()?;
        let outcome = if Class::of(reply.code) != Class::Positive {
            RecipientOutcome::Deferred(reply.summary())
        } else {
            self.command(&format!("RCPT TO:<{recipient}>"))?;
            let reply = self.read_reply()?;
            match Class::of(reply.code) {
                Class::Positive => RecipientOutcome::Accepted,
                Class::Permanent => RecipientOutcome::Rejected(reply.summary()),
                _ => RecipientOutcome::Deferred(reply.summary()),
            }
        };
        self.abandon(0, false);
        Ok(outcome)
    }

    /// Ends a transaction whose outcomes are already decided: reads the `replies` still
    /// owed for pipelined RCPTs, then (if `data_pending`) the DATA reply, and resets.
    /// Failures here only mark the connection broken: they cannot change the outcomes.
    fn abandon(&mut self, replies: usize, data_pending: bool) {
        if let Err(error) = self.drain_and_reset(replies, data_pending) {
            log::warn!("SMTP connection left unusable after a failed transaction: {error}");
            self.broken = Some(error.to_string());
        }
    }

    fn drain_and_reset(&mut self, replies: usize, data_pending: bool) -> Result<(), SendError> {
        for _ in 0..replies {
            self.read_reply()?;
        }
        if data_pending {
            let reply = self.read_reply()?;
            if reply.code == 354 {
                // A server that starts data with no recipient accepted (RFC 2920 says it
                // must not) gets an empty message, whose reply we ignore.
                log::debug!("peer answered DATA with 354 though no recipient was accepted");
                self.writer.write_all(b".\r\n").map_err(io_error)?;
                self.flush()?;
                self.read_reply()?;
            }
        }
        // RFC 5321 §4.1.1.5: RSET clears whatever the peer kept of the transaction.
        self.command("RSET")?;
        let reply = self.read_reply()?;
        match Class::of(reply.code) {
            Class::Positive => Ok(()),
            _ => Err(SendError::Protocol(format!("RSET: {}", reply.summary()))),
        }
    }

    /// Streams the message through the dot-stuffer into the write buffer, then the end
    /// of data, and flushes.
    fn write_message(&mut self, parts: &[&[u8]]) -> Result<(), SendError> {
        let mut stuffer = DotStuffer::new();
        for part in parts {
            stuffer.write(&mut self.writer, part).map_err(io_error)?;
        }
        stuffer.finish(&mut self.writer).map_err(io_error)?;
        self.flush()
    }

    /// QUIT and close (errors ignored).
    pub fn quit(mut self) {
        if self.broken.is_none() {
            let sent = self.writer.write_all(b"QUIT\r\n").and_then(|()| self.writer.flush());
            if sent.is_ok() {
                // The 221 is a courtesy; whatever comes back changes nothing.
                let _ = self.read_reply();
            }
        }
        let mut transport = self.reader.get_ref().lock();
        transport.close_tls();
        let _ = transport.tcp().shutdown(Shutdown::Both);
    }

    /// Adds a command line to the write buffer.
    fn queue(&mut self, line: &str) -> Result<(), SendError> {
        self.writer.write_all(line.as_bytes()).map_err(io_error)?;
        self.writer.write_all(b"\r\n").map_err(io_error)
    }

    fn flush(&mut self) -> Result<(), SendError> {
        self.writer.flush().map_err(io_error)
    }

    /// Sends one command now.
    fn command(&mut self, line: &str) -> Result<(), SendError> {
        self.queue(line)?;
        self.flush()
    }

    /// Reads the next reply; a 421 is an error wherever it comes.
    fn read_reply(&mut self) -> Result<ServerReply, SendError> {
        let deadline = Instant::now().checked_add(self.timeout);
        let reply = read_reply(&mut self.reader, deadline)?;
        // RFC 5321 §3.8: 421 means the server is closing the transmission channel;
        // nothing more can happen on this connection.
        if reply.code == 421 {
            return Err(SendError::Protocol(format!("peer is closing the connection: {}", reply.summary())));
        }
        Ok(reply)
    }
}

/// The first digit of a reply code (RFC 5321 §4.2.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Class {
    /// 2yz: done.
    Positive,
    /// 3yz: go on (354 after DATA; anywhere else a protocol error for us).
    Intermediate,
    /// 4yz: not now.
    Transient,
    /// 5yz: never.
    Permanent,
}

impl Class {
    /// Codes come from [`parse_line`], which admits only 200–599.
    fn of(code: u16) -> Class {
        match code / 100 {
            2 => Class::Positive,
            3 => Class::Intermediate,
            4 => Class::Transient,
            _ => Class::Permanent,
        }
    }
}

/// The outcome a 4xx or 5xx reply gives a recipient.
fn failure(reply: &ServerReply) -> RecipientOutcome {
    match Class::of(reply.code) {
        Class::Transient => RecipientOutcome::Deferred(reply.summary()),
        _ => RecipientOutcome::Rejected(reply.summary()),
    }
}

fn unexpected(after: &str, reply: &ServerReply) -> SendError {
    SendError::Protocol(format!("unexpected reply to {after}: {}", reply.summary()))
}

/// Makes socket timeouts read as timeouts: on Unix they surface as `WouldBlock`
/// ("Resource temporarily unavailable"), which says nothing useful in a log or a bounce.
fn io_error(error: io::Error) -> SendError {
    match error.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
            SendError::Io(io::Error::new(io::ErrorKind::TimedOut, "timed out waiting for the peer"))
        }
        _ => SendError::Io(error),
    }
}

fn timed_out() -> SendError {
    SendError::Io(io::Error::new(io::ErrorKind::TimedOut, "timed out waiting for the peer's reply"))
}

/// Control characters (CR, LF, NUL, …) in an address would end or corrupt the command
/// line it is sent in.
fn has_control(address: &str) -> bool {
    address.chars().any(char::is_control)
}

/// Whether the concatenated parts end with CRLF (the CR and the LF may be in different
/// parts, and empty parts may sit anywhere).
fn ends_with_crlf(parts: &[&[u8]]) -> bool {
    let mut tail = parts.iter().rev().flat_map(|p| p.iter().rev());
    matches!((tail.next(), tail.next()), (Some(b'\n'), Some(b'\r')))
}

/// A whole reply: its code and the text of each line (code and separator removed, made
/// printable).
#[derive(Clone, Debug, PartialEq, Eq)]
struct ServerReply {
    code: u16,
    lines: Vec<String>,
}

impl ServerReply {
    /// The reply on one line, for outcomes and logs: `550 5.1.1 <x@y>: User unknown`;
    /// the lines of a multi-line reply are joined with spaces.
    fn summary(&self) -> String {
        let mut summary = self.code.to_string();
        for line in self.lines.iter().filter(|l| !l.is_empty()) {
            summary.push(' ');
            summary.push_str(line);
        }
        // The text is ASCII (see `printable`), so any index is a character boundary.
        summary.truncate(MAX_SUMMARY);
        summary
    }
}

/// Reads one reply, line by line, from `reader`. Lines end at LF (a CR before it is
/// removed; RFC 5321 requires CRLF but a bare LF costs nothing to accept).
///
/// Bounded in memory (lines of [`MAX_REPLY_LINE`], [`MAX_REPLY_LINES`] lines) and in
/// time: each read blocks at most the socket timeout, and once `deadline` has passed no
/// further read is started, so a peer trickling bytes cannot hold us past the deadline
/// plus one timeout.
fn read_reply<R: BufRead>(reader: &mut R, deadline: Option<Instant>) -> Result<ServerReply, SendError> {
    let mut assembler = ReplyAssembler::default();
    let mut line = Vec::with_capacity(128);
    loop {
        read_line(reader, &mut line, deadline)?;
        if let Some(reply) = assembler.push(&line).map_err(SendError::Protocol)? {
            return Ok(reply);
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(timed_out());
        }
    }
}

/// A reply as [`fuzz_read_replies`] returns it: code, lines, summary, EHLO keywords.
#[doc(hidden)]
pub type FuzzReply = (u16, Vec<String>, String, String);

/// For the fuzz target `smtp_reply` (`fuzz/`), not an API: reads replies from `reader`
/// as `SmtpConnection` does until the first error, and returns each reply's code,
/// lines, one-line summary and EHLO keywords (`Debug` of what `Extensions` found),
/// then that error's text.
#[doc(hidden)]
pub fn fuzz_read_replies<R: BufRead>(reader: &mut R) -> (Vec<FuzzReply>, String) {
    let mut replies = Vec::new();
    loop {
        match read_reply(reader, None) {
            Ok(reply) => {
                let extensions = format!("{:?}", Extensions::parse(&reply.lines));
                replies.push((reply.code, reply.lines.clone(), reply.summary(), extensions));
            }
            Err(error) => return (replies, error.to_string()),
        }
    }
}

/// Reads one line into `line`, its terminator removed.
fn read_line<R: BufRead>(reader: &mut R, line: &mut Vec<u8>, deadline: Option<Instant>) -> Result<(), SendError> {
    line.clear();
    loop {
        let chunk = match reader.fill_buf() {
            Ok(chunk) => chunk,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_error(e)),
        };
        if chunk.is_empty() {
            return Err(SendError::Io(io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed by the peer")));
        }
        let (take, complete) = match chunk.iter().position(|&b| b == b'\n') {
            Some(lf) => (lf + 1, true),
            None => (chunk.len(), false),
        };
        if line.len() + take > MAX_REPLY_LINE {
            return Err(SendError::Protocol(format!("reply line longer than {MAX_REPLY_LINE} octets")));
        }
        line.extend_from_slice(&chunk[..take]);
        reader.consume(take);
        if complete {
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            return Ok(());
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(timed_out());
        }
    }
}

/// Gathers the lines of one reply (RFC 5321 §4.2.1: `250-first`, …, `250 last`). Pure.
#[derive(Debug, Default)]
struct ReplyAssembler {
    code: Option<u16>,
    lines: Vec<String>,
}

impl ReplyAssembler {
    /// Takes one line (terminator removed); returns the reply once its last line is in.
    fn push(&mut self, line: &[u8]) -> Result<Option<ServerReply>, String> {
        let (code, last, text) = parse_line(line)?;
        match self.code {
            // RFC 5321 §4.2.1: every line of a multi-line reply carries the same code.
            Some(first) if first != code => {
                return Err(format!("reply code changed from {first} to {code} within a multi-line reply"));
            }
            _ => self.code = Some(code),
        }
        if self.lines.len() >= MAX_REPLY_LINES {
            return Err(format!("reply longer than {MAX_REPLY_LINES} lines"));
        }
        self.lines.push(printable(text));
        if !last {
            return Ok(None);
        }
        self.code = None;
        Ok(Some(ServerReply { code, lines: std::mem::take(&mut self.lines) }))
    }
}

/// Splits a reply line into its code, whether it is the last line, and its text.
///
/// RFC 5321 §4.2: `Reply-code [ SP textstring ] CRLF` ends a reply and
/// `Reply-code "-" [ textstring ] CRLF` continues it. RFC 5321 §4.2.1: the first digit
/// is 2 to 5 (1yz is not used in SMTP); anything else is not a reply.
fn parse_line(line: &[u8]) -> Result<(u16, bool, &[u8]), String> {
    let malformed = || format!("malformed reply line {:?}", printable(&line[..line.len().min(64)]));
    let (digits, rest) = match line {
        [a @ b'2'..=b'5', b @ b'0'..=b'9', c @ b'0'..=b'9', rest @ ..] => ([*a, *b, *c], rest),
        _ => return Err(malformed()),
    };
    let code = digits.iter().fold(0u16, |n, d| n * 10 + u16::from(d - b'0'));
    match rest {
        [] => Ok((code, true, rest)),
        [b' ', text @ ..] => Ok((code, true, text)),
        [b'-', text @ ..] => Ok((code, false, text)),
        _ => Err(malformed()),
    }
}

/// The peer's text, made safe to log and to quote in a bounce: printable ASCII only.
fn printable(text: &[u8]) -> String {
    text.iter()
        .map(|&b| match b {
            b' ' | b'\t' => ' ',
            b if b.is_ascii_graphic() => char::from(b),
            _ => '?',
        })
        .collect()
}

/// The EHLO keywords the client acts on (RFC 5321 §4.1.1.1: one per line after the
/// first, keyword then parameters, case-insensitive).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Extensions {
    /// RFC 2920.
    pipelining: bool,
    /// RFC 1870: SIZE was offered, so MAIL carries `SIZE=n`.
    size_advertised: bool,
    /// RFC 1870 §3: the fixed limit; `SIZE 0` or no number means none.
    size_limit: Option<u64>,
    /// RFC 6152.
    eight_bit_mime: bool,
    /// RFC 3207.
    starttls: bool,
}

impl Extensions {
    fn parse(lines: &[String]) -> Extensions {
        let mut extensions = Extensions::default();
        for line in lines {
            let mut words = line.split_ascii_whitespace();
            let keyword = words.next().unwrap_or("");
            if keyword.eq_ignore_ascii_case("PIPELINING") {
                extensions.pipelining = true;
            } else if keyword.eq_ignore_ascii_case("8BITMIME") {
                extensions.eight_bit_mime = true;
            } else if keyword.eq_ignore_ascii_case("STARTTLS") {
                extensions.starttls = true;
            } else if keyword.eq_ignore_ascii_case("SIZE") {
                extensions.size_advertised = true;
                extensions.size_limit = words.next().and_then(|n| n.parse::<u64>().ok()).filter(|&n| n > 0);
            }
        }
        extensions
    }
}

/// A whole message as DATA sends it: dot-stuffed (RFC 5321 §4.5.2), a CRLF added if it
/// does not end in one, then the end-of-data marker. For `mailtool send`, `bench` and
/// `stress`, which write a message at once.
pub fn data_payload(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + 8);
    let mut stuffer = DotStuffer::new();
    // Writing into a Vec cannot fail.
    let _ = stuffer.write(&mut out, message);
    let _ = stuffer.finish(&mut out);
    out
}

/// Writes message data for the DATA phase (RFC 5321 §4.5.2), part by part: a `.` at the
/// start of a line gets a second `.` in front, the data ends with CRLF (added if the
/// message lacks it), then `.` CRLF.
///
/// A line starts at the beginning of the message and after every LF, bare or not: the
/// receiver is then certain never to see an end-of-data line we did not mean, whatever
/// line ends the message holds. State carries over part boundaries, so a line may start
/// in one part and its first character be in the next. Whole runs between LFs are
/// written at once, never byte by byte.
#[derive(Debug)]
struct DotStuffer {
    at_line_start: bool,
    /// The last byte written, to see a CRLF split across parts.
    last: Option<u8>,
    ends_with_crlf: bool,
}

impl DotStuffer {
    fn new() -> DotStuffer {
        DotStuffer { at_line_start: true, last: None, ends_with_crlf: false }
    }

    fn write<W: Write>(&mut self, out: &mut W, part: &[u8]) -> io::Result<()> {
        let Some(&final_byte) = part.last() else {
            return Ok(());
        };
        self.ends_with_crlf = match part {
            [.., b'\r', b'\n'] => true,
            [b'\n'] => self.last == Some(b'\r'),
            _ => false,
        };
        self.last = Some(final_byte);
        let mut rest = part;
        while !rest.is_empty() {
            if self.at_line_start && rest[0] == b'.' {
                out.write_all(b".")?;
            }
            match rest.iter().position(|&b| b == b'\n') {
                Some(lf) => {
                    out.write_all(&rest[..=lf])?;
                    rest = &rest[lf + 1..];
                    self.at_line_start = true;
                }
                None => {
                    out.write_all(rest)?;
                    self.at_line_start = false;
                    rest = &[];
                }
            }
        }
        Ok(())
    }

    fn finish<W: Write>(self, out: &mut W) -> io::Result<()> {
        if !self.ends_with_crlf {
            out.write_all(b"\r\n")?;
        }
        out.write_all(b".\r\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::net::TcpListener;
    use std::thread::{self, JoinHandle};

    // ---- pure pieces -------------------------------------------------------------------

    #[test]
    fn data_payload_stuffs_leading_dots_and_terminates() {
        assert_eq!(data_payload(b".a\r\n..b\r\nc.\r\n"), b"..a\r\n...b\r\nc.\r\n.\r\n");
        assert_eq!(data_payload(b"no end"), b"no end\r\n.\r\n");
        assert_eq!(data_payload(b"bare\n.lf"), b"bare\n..lf\r\n.\r\n");
        assert_eq!(data_payload(b""), b"\r\n.\r\n");
    }

    #[test]
    fn reply_parsing_table() {
        // Expected: Ok((code, lines)) or Err(part of the error message).
        type Expected = Result<(u16, Vec<&'static str>), &'static str>;
        let long = format!("250 {}\r\n", "x".repeat(MAX_REPLY_LINE));
        let many = "250-x\r\n".repeat(MAX_REPLY_LINES) + "250 end\r\n";
        let table: Vec<(&[u8], Expected)> = vec![
            (b"220 mx.test ESMTP\r\n", Ok((220, vec!["mx.test ESMTP"]))),
            (b"250\r\n", Ok((250, vec![""]))),
            (b"250 ok\n", Ok((250, vec!["ok"]))),
            (b"250-mx\r\n250-PIPELINING\r\n250 SIZE 10\r\n", Ok((250, vec!["mx", "PIPELINING", "SIZE 10"]))),
            (b"550 5.1.1 <a\x00b>\xff: no\r\n", Ok((550, vec!["5.1.1 <a?b>?: no"]))),
            (b"250-a\r\n251 b\r\n", Err("reply code changed")),
            (b"25O ok\r\n", Err("malformed")),
            (b"199 early\r\n", Err("malformed")),
            (b"600 what\r\n", Err("malformed")),
            (b"250_x\r\n", Err("malformed")),
            (b"\r\n", Err("malformed")),
            (b"250-first\r\n", Err("closed by the peer")),
            (b"250 no end", Err("closed by the peer")),
            (b"", Err("closed by the peer")),
            (long.as_bytes(), Err("longer than 2048 octets")),
            (many.as_bytes(), Err("longer than 100 lines")),
        ];
        for (input, expected) in table {
            // A tiny buffer, so lines arrive in many chunks as they would from a socket.
            let mut reader = BufReader::with_capacity(7, input);
            let got = read_reply(&mut reader, None);
            match (got, expected) {
                (Ok(reply), Ok((code, lines))) => {
                    assert_eq!(reply.code, code, "{input:?}");
                    assert_eq!(reply.lines, lines, "{input:?}");
                }
                (Err(error), Err(part)) => assert!(error.to_string().contains(part), "{input:?}: {error}"),
                (got, expected) => panic!("{input:?}: got {got:?}, expected {expected:?}"),
            }
        }
    }

    #[test]
    fn replies_are_read_one_at_a_time_in_order() {
        let mut reader = BufReader::new(&b"250 a\r\n550-b\r\n550 c\r\n354 d\r\n"[..]);
        let codes: Vec<String> = (0..3).map(|_| read_reply(&mut reader, None).unwrap().summary()).collect();
        assert_eq!(codes, ["250 a", "550 b c", "354 d"]);
    }

    #[test]
    fn extensions_table() {
        let table: Vec<(&[&str], Extensions)> = vec![
            (&[], Extensions::default()),
            (
                &["PIPELINING", "SIZE 1000", "8BITMIME", "ENHANCEDSTATUSCODES"],
                Extensions {
                    pipelining: true,
                    size_advertised: true,
                    size_limit: Some(1000),
                    eight_bit_mime: true,
                    starttls: false,
                },
            ),
            (&["STARTTLS", "starttls"], Extensions { starttls: true, ..Default::default() }),
            (&["pipelining", "size"], Extensions { pipelining: true, size_advertised: true, ..Default::default() }),
            (&["SIZE 0"], Extensions { size_advertised: true, ..Default::default() }),
            (&["SIZE lots"], Extensions { size_advertised: true, ..Default::default() }),
            (&["XPIPELINING", "SIZEX 5", "AUTH PLAIN"], Extensions::default()),
        ];
        for (lines, expected) in table {
            let lines: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
            assert_eq!(Extensions::parse(&lines), expected, "{lines:?}");
        }
    }

    fn stuffed(parts: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut stuffer = DotStuffer::new();
        for part in parts {
            stuffer.write(&mut out, part).unwrap();
        }
        stuffer.finish(&mut out).unwrap();
        out
    }

    #[test]
    fn dot_stuffing_table() {
        let table: Vec<(&[&[u8]], &[u8])> = vec![
            (&[], b"\r\n.\r\n"),
            (&[b"a\r\n"], b"a\r\n.\r\n"),
            (&[b"a"], b"a\r\n.\r\n"),
            (&[b".\r\n"], b"..\r\n.\r\n"),
            (&[b"a\r\n.\r\n"], b"a\r\n..\r\n.\r\n"),
            (&[b"a\r\n..b\r\n"], b"a\r\n...b\r\n.\r\n"),
            (&[b"a.b\r\n"], b"a.b\r\n.\r\n"),
            // A line begins in one part and its dot is the next part's first byte.
            (&[b"a\r\n", b".b\r\n"], b"a\r\n..b\r\n.\r\n"),
            (&[b"a\r\n", b"", b".b\r\n"], b"a\r\n..b\r\n.\r\n"),
            // A dot at the end of one part and more of the line in the next.
            (&[b"x\r\n.", b".y\r\n"], b"x\r\n...y\r\n.\r\n"),
            // The dot not at a line start, split across parts.
            (&[b"x", b".y\r\n"], b"x.y\r\n.\r\n"),
            // CRLF split across parts: no CRLF added.
            (&[b"a\r", b"\n"], b"a\r\n.\r\n"),
            (&[b"a\r", b"\n", b""], b"a\r\n.\r\n"),
            // Bare LF starts a line too (smuggling-proof), and does not count as CRLF.
            (&[b"a\n.\n"], b"a\n..\n\r\n.\r\n"),
            (&[b"a\r"], b"a\r\r\n.\r\n"),
        ];
        for (parts, expected) in table {
            assert_eq!(stuffed(parts), expected, "{parts:?}");
        }
        let table: Vec<(&[&[u8]], bool)> =
            vec![(&[b"a\r", b"\n"], true), (&[b"\r\n", b""], true), (&[b"\n"], false), (&[b"\r"], false), (&[], false)];
        for (parts, expected) in table {
            assert_eq!(ends_with_crlf(parts), expected, "{parts:?}");
        }
    }

    // ---- a scripted fake server --------------------------------------------------------

    /// In a script: stop answering, keep the connection open until the client leaves.
    const SILENT: &str = "<silent>";
    /// In a script: close the connection instead of answering.
    const CLOSE: &str = "<close>";

    /// What the fake server says: a greeting, then one reply per command and one after
    /// each message's data, in order. QUIT is answered with 221 outside the script.
    struct Script {
        greeting: &'static str,
        replies: Vec<&'static str>,
        /// Holds the replies from MAIL until DATA arrives, so a client that waits for the
        /// MAIL reply before sending RCPT stalls: only a pipelining client gets through.
        hold_pipeline: bool,
        /// Records every command that arrived before the previous reply was sent.
        check_lockstep: bool,
    }

    /// What the fake server received.
    #[derive(Debug, Default)]
    struct Transcript {
        commands: Vec<String>,
        /// Each message's data, exactly as received (dot-stuffed, final `.` CRLF included).
        data: Vec<Vec<u8>>,
        /// Commands that were sent without waiting for the previous reply.
        early: Vec<String>,
    }

    fn serve(script: Script) -> (SocketAddr, JoinHandle<Transcript>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let handle = thread::spawn(move || {
            let mut transcript = Transcript::default();
            let Ok((stream, _)) = listener.accept() else { return transcript };
            // A test never waits on a stuck client for long.
            stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut writer = stream.try_clone().unwrap();
            let mut reader = BufReader::new(stream);
            let mut replies = script.replies.into_iter();
            if script.greeting == SILENT {
                let _ = reader.read_to_end(&mut Vec::new());
                return transcript;
            }
            send(&mut writer, &[script.greeting]);
            let mut held = Vec::new();
            let mut holding = false;
            loop {
                let mut line = Vec::new();
                match reader.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                let command = String::from_utf8_lossy(&line).trim_end_matches(['\r', '\n']).to_string();
                if script.check_lockstep && (!reader.buffer().is_empty() || more_arrives(reader.get_ref())) {
                    transcript.early.push(command.clone());
                }
                let verb = command.split(' ').next().unwrap_or("").to_ascii_uppercase();
                transcript.commands.push(command);
                let reply = if verb == "QUIT" { "221 2.0.0 Bye" } else { replies.next().unwrap_or(CLOSE) };
                if reply == CLOSE {
                    break;
                }
                if reply == SILENT {
                    let _ = reader.read_to_end(&mut Vec::new());
                    break;
                }
                held.push(reply);
                // From MAIL up to DATA, replies wait.
                holding |= script.hold_pipeline && verb == "MAIL";
                if holding && verb != "DATA" {
                    continue;
                }
                holding = false;
                if !send(&mut writer, &held) || verb == "QUIT" {
                    break;
                }
                held.clear();
                if verb == "DATA" && reply.starts_with("354") {
                    let mut data = Vec::new();
                    while !(data.ends_with(b"\r\n.\r\n") || data == b".\r\n") {
                        match reader.read_until(b'\n', &mut data) {
                            Ok(0) | Err(_) => return transcript,
                            Ok(_) => {}
                        }
                    }
                    transcript.data.push(data);
                    let reply = replies.next().unwrap_or(CLOSE);
                    if reply == SILENT {
                        let _ = reader.read_to_end(&mut Vec::new());
                    }
                    if reply == CLOSE || reply == SILENT || !send(&mut writer, &[reply]) {
                        break;
                    }
                }
            }
            transcript
        });
        (address, handle)
    }

    fn send(writer: &mut TcpStream, replies: &[&str]) -> bool {
        let text: String = replies.iter().map(|r| format!("{r}\r\n")).collect();
        writer.write_all(text.as_bytes()).is_ok()
    }

    /// Whether the client sends more within a short while (it should be waiting for us).
    fn more_arrives(stream: &TcpStream) -> bool {
        stream.set_read_timeout(Some(Duration::from_millis(30))).unwrap();
        let arrived = matches!(stream.peek(&mut [0u8; 1]), Ok(n) if n > 0);
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        arrived
    }

    const GREETING: &str = "220 fake.test ESMTP";
    const EHLO_PLAIN: &str = "250-fake.test\r\n250 ENHANCEDSTATUSCODES";
    const EHLO_PIPELINING: &str = "250-fake.test\r\n250-PIPELINING\r\n250 ENHANCEDSTATUSCODES";
    const EHLO_SIZE: &str = "250-fake.test\r\n250-PIPELINING\r\n250-SIZE 100\r\n250 8BITMIME";

    fn open(address: SocketAddr) -> SmtpConnection {
        SmtpConnection::open(address, "client.test", Duration::from_secs(5)).unwrap()
    }

    fn recipients(list: &[&str]) -> Vec<String> {
        list.iter().map(|r| r.to_string()).collect()
    }

    const MESSAGE: &[&[u8]] = &[b"Received: t\r\n", b"Subject: s\r\n\r\nhi\r\n"];
    const MESSAGE_DATA: &[u8] = b"Received: t\r\nSubject: s\r\n\r\nhi\r\n.\r\n";

    // ---- sessions ----------------------------------------------------------------------

    #[test]
    fn message_bytes_are_stuffed_across_parts_and_end_with_crlf() {
        let (address, server) = serve(Script {
            greeting: GREETING,
            replies: vec![EHLO_PLAIN, "250 ok", "250 ok", "354 go", "250 queued"],
            hold_pipeline: false,
            check_lockstep: false,
        });
        let mut connection = open(address);
        let rcpts = recipients(&["a@y"]);
        let parts: &[&[u8]] = &[b"Received: t\r\n", b".hidden: x\r\n\r\n", b"line\r\n.", b"\r\n..two\r\nlast"];
        let outcomes = connection.send(&OutboundMessage { sender: "s@x", recipients: &rcpts, parts }).unwrap();
        assert_eq!(outcomes, [RecipientOutcome::Accepted]);
        connection.quit();
        let transcript = server.join().unwrap();
        assert_eq!(
            transcript.data,
            [b"Received: t\r\n..hidden: x\r\n\r\nline\r\n..\r\n...two\r\nlast\r\n.\r\n".to_vec()]
        );
    }

    #[test]
    fn without_pipelining_each_command_waits_for_its_reply() {
        let (address, server) = serve(Script {
            greeting: GREETING,
            replies: vec![EHLO_PLAIN, "250 ok", "250 ok", "250 ok", "354 go", "250 queued"],
            hold_pipeline: false,
            check_lockstep: true,
        });
        let mut connection = open(address);
        assert!(!connection.pipelining());
        let rcpts = recipients(&["a@y", "b@y"]);
        let outcomes = connection.send(&OutboundMessage { sender: "s@x", recipients: &rcpts, parts: MESSAGE }).unwrap();
        assert_eq!(outcomes, [RecipientOutcome::Accepted, RecipientOutcome::Accepted]);
        connection.quit();
        let transcript = server.join().unwrap();
        assert_eq!(transcript.early, Vec::<String>::new());
        assert_eq!(
            transcript.commands,
            ["EHLO client.test", "MAIL FROM:<s@x>", "RCPT TO:<a@y>", "RCPT TO:<b@y>", "DATA", "QUIT"]
        );
    }

    /// One scripted transaction: the replies after EHLO, and what must come of them.
    struct Case {
        name: &'static str,
        pipelining: bool,
        replies: &'static [&'static str],
        recipients: &'static [&'static str],
        /// `None`: `send` must fail with an error containing `error`.
        outcomes: Option<Vec<RecipientOutcome>>,
        error: &'static str,
        /// Whether the connection is still usable after `send`.
        usable: bool,
        /// The commands the server received after EHLO.
        commands: &'static [&'static str],
        /// The data the server received.
        data: &'static [&'static [u8]],
    }

    fn deferred(text: &str) -> RecipientOutcome {
        RecipientOutcome::Deferred(text.into())
    }

    fn rejected(text: &str) -> RecipientOutcome {
        RecipientOutcome::Rejected(text.into())
    }

    #[test]
    fn transaction_table() {
        use RecipientOutcome::Accepted;
        let cases = vec![
            Case {
                name: "mixed recipient replies, one by one",
                pipelining: false,
                replies: &[
                    "250 2.1.0 Ok",
                    "250 2.1.5 Ok",
                    "450 4.2.0 <b@y>: busy",
                    "550 5.1.1 <c@y>: User unknown",
                    "354 go",
                    "250 2.0.0 Ok",
                ],
                recipients: &["a@y", "b@y", "c@y"],
                outcomes: Some(vec![
                    Accepted,
                    deferred("450 4.2.0 <b@y>: busy"),
                    rejected("550 5.1.1 <c@y>: User unknown"),
                ]),
                error: "",
                usable: true,
                commands: &["MAIL FROM:<s@x>", "RCPT TO:<a@y>", "RCPT TO:<b@y>", "RCPT TO:<c@y>", "DATA", "QUIT"],
                data: &[MESSAGE_DATA],
            },
            Case {
                name: "mixed recipient replies, pipelined",
                pipelining: true,
                replies: &[
                    "250 2.1.0 Ok",
                    "250 2.1.5 Ok",
                    "450 4.2.0 <b@y>: busy",
                    "550 5.1.1 <c@y>: User unknown",
                    "354 go",
                    "250 2.0.0 Ok",
                ],
                recipients: &["a@y", "b@y", "c@y"],
                outcomes: Some(vec![
                    Accepted,
                    deferred("450 4.2.0 <b@y>: busy"),
                    rejected("550 5.1.1 <c@y>: User unknown"),
                ]),
                error: "",
                usable: true,
                commands: &["MAIL FROM:<s@x>", "RCPT TO:<a@y>", "RCPT TO:<b@y>", "RCPT TO:<c@y>", "DATA", "QUIT"],
                data: &[MESSAGE_DATA],
            },
            Case {
                name: "a multi-line recipient reply is one outcome",
                pipelining: false,
                replies: &["250 Ok", "550-5.1.1 no such user\r\n550 5.1.1 see the docs", "250 Ok", "354 go", "250 Ok"],
                recipients: &["a@y", "b@y"],
                outcomes: Some(vec![rejected("550 5.1.1 no such user 5.1.1 see the docs"), Accepted]),
                error: "",
                usable: true,
                commands: &["MAIL FROM:<s@x>", "RCPT TO:<a@y>", "RCPT TO:<b@y>", "DATA", "QUIT"],
                data: &[MESSAGE_DATA],
            },
            Case {
                name: "MAIL 451 defers everyone and resets",
                pipelining: false,
                replies: &["451 4.3.0 try later", "250 2.0.0 Ok"],
                recipients: &["a@y", "b@y"],
                outcomes: Some(vec![deferred("451 4.3.0 try later"), deferred("451 4.3.0 try later")]),
                error: "",
                usable: true,
                commands: &["MAIL FROM:<s@x>", "RSET", "QUIT"],
                data: &[],
            },
            Case {
                name: "MAIL 451, pipelined: the RCPT and DATA replies are read and ignored",
                pipelining: true,
                replies: &[
                    "451 4.3.0 try later",
                    "503 5.5.1 need MAIL",
                    "503 5.5.1 need MAIL",
                    "503 5.5.1 need RCPT",
                    "250 2.0.0 Ok",
                ],
                recipients: &["a@y", "b@y"],
                outcomes: Some(vec![deferred("451 4.3.0 try later"), deferred("451 4.3.0 try later")]),
                error: "",
                usable: true,
                commands: &["MAIL FROM:<s@x>", "RCPT TO:<a@y>", "RCPT TO:<b@y>", "DATA", "RSET", "QUIT"],
                data: &[],
            },
            Case {
                name: "MAIL 550 rejects everyone",
                pipelining: false,
                replies: &["550 5.7.1 go away", "250 2.0.0 Ok"],
                recipients: &["a@y"],
                outcomes: Some(vec![rejected("550 5.7.1 go away")]),
                error: "",
                usable: true,
                commands: &["MAIL FROM:<s@x>", "RSET", "QUIT"],
                data: &[],
            },
            Case {
                name: "MAIL 550 then 421 to RSET: the rejection stands, the connection is spent",
                pipelining: false,
                replies: &["550 5.7.1 go away", "421 4.7.0 bye"],
                recipients: &["a@y"],
                outcomes: Some(vec![rejected("550 5.7.1 go away")]),
                error: "",
                usable: false,
                commands: &["MAIL FROM:<s@x>", "RSET"],
                data: &[],
            },
            Case {
                name: "final 554 after data rejects the accepted recipients only",
                pipelining: true,
                replies: &["250 Ok", "250 Ok", "450 4.2.1 later", "354 go", "554 5.7.1 looks like spam"],
                recipients: &["a@y", "b@y"],
                outcomes: Some(vec![rejected("554 5.7.1 looks like spam"), deferred("450 4.2.1 later")]),
                error: "",
                usable: true,
                commands: &["MAIL FROM:<s@x>", "RCPT TO:<a@y>", "RCPT TO:<b@y>", "DATA", "QUIT"],
                data: &[MESSAGE_DATA],
            },
            Case {
                name: "final 452 after data defers",
                pipelining: false,
                replies: &["250 Ok", "250 Ok", "354 go", "452 4.3.1 disk full"],
                recipients: &["a@y"],
                outcomes: Some(vec![deferred("452 4.3.1 disk full")]),
                error: "",
                usable: true,
                commands: &["MAIL FROM:<s@x>", "RCPT TO:<a@y>", "DATA", "QUIT"],
                data: &[MESSAGE_DATA],
            },
            Case {
                name: "DATA refused: the accepted recipients take its reply, then RSET",
                pipelining: false,
                replies: &["250 Ok", "250 Ok", "451 4.3.0 not now", "250 Ok"],
                recipients: &["a@y"],
                outcomes: Some(vec![deferred("451 4.3.0 not now")]),
                error: "",
                usable: true,
                commands: &["MAIL FROM:<s@x>", "RCPT TO:<a@y>", "DATA", "RSET", "QUIT"],
                data: &[],
            },
            Case {
                name: "no recipient accepted: no DATA, RSET",
                pipelining: false,
                replies: &["250 Ok", "550 5.1.1 a", "450 4.1.1 b", "250 Ok"],
                recipients: &["a@y", "b@y"],
                outcomes: Some(vec![rejected("550 5.1.1 a"), deferred("450 4.1.1 b")]),
                error: "",
                usable: true,
                commands: &["MAIL FROM:<s@x>", "RCPT TO:<a@y>", "RCPT TO:<b@y>", "RSET", "QUIT"],
                data: &[],
            },
            Case {
                name: "no recipient accepted, pipelined: DATA's 554 is ignored, no data sent",
                pipelining: true,
                replies: &["250 Ok", "550 5.1.1 a", "550 5.1.1 b", "554 5.5.1 no valid recipients", "250 Ok"],
                recipients: &["a@y", "b@y"],
                outcomes: Some(vec![rejected("550 5.1.1 a"), rejected("550 5.1.1 b")]),
                error: "",
                usable: true,
                commands: &["MAIL FROM:<s@x>", "RCPT TO:<a@y>", "RCPT TO:<b@y>", "DATA", "RSET", "QUIT"],
                data: &[],
            },
            Case {
                name: "no recipient accepted, pipelined, server says 354 anyway: an empty message",
                pipelining: true,
                replies: &["250 Ok", "550 5.1.1 a", "354 go", "554 5.5.1 empty", "250 Ok"],
                recipients: &["a@y"],
                outcomes: Some(vec![rejected("550 5.1.1 a")]),
                error: "",
                usable: true,
                commands: &["MAIL FROM:<s@x>", "RCPT TO:<a@y>", "DATA", "RSET", "QUIT"],
                data: &[b".\r\n"],
            },
            Case {
                name: "421 to RCPT mid-session is a connection error",
                pipelining: false,
                replies: &["250 Ok", "421 4.3.2 shutting down"],
                recipients: &["a@y", "b@y"],
                outcomes: None,
                error: "421 4.3.2 shutting down",
                usable: false,
                commands: &["MAIL FROM:<s@x>", "RCPT TO:<a@y>"],
                data: &[],
            },
            Case {
                name: "421 after the data is a connection error",
                pipelining: true,
                replies: &["250 Ok", "250 Ok", "354 go", "421 4.4.2 timeout"],
                recipients: &["a@y"],
                outcomes: None,
                error: "421",
                usable: false,
                commands: &["MAIL FROM:<s@x>", "RCPT TO:<a@y>", "DATA"],
                data: &[MESSAGE_DATA],
            },
            Case {
                name: "EOF instead of a reply",
                pipelining: false,
                replies: &["250 Ok", CLOSE],
                recipients: &["a@y"],
                outcomes: None,
                error: "closed by the peer",
                usable: false,
                commands: &["MAIL FROM:<s@x>", "RCPT TO:<a@y>"],
                data: &[],
            },
            Case {
                name: "a malformed reply",
                pipelining: false,
                replies: &["25O Ok"],
                recipients: &["a@y"],
                outcomes: None,
                error: "malformed reply line",
                usable: false,
                commands: &["MAIL FROM:<s@x>"],
                data: &[],
            },
            Case {
                name: "354 to RCPT is out of protocol",
                pipelining: false,
                replies: &["250 Ok", "354 what"],
                recipients: &["a@y"],
                outcomes: None,
                error: "unexpected reply to RCPT",
                usable: false,
                commands: &["MAIL FROM:<s@x>", "RCPT TO:<a@y>"],
                data: &[],
            },
            Case {
                name: "an address with a line end is rejected unsent",
                pipelining: false,
                replies: &["250 Ok", "250 Ok", "354 go", "250 Ok"],
                recipients: &["a@y\r\nRSET", "b@y"],
                outcomes: Some(vec![rejected("invalid recipient address (control characters), not sent"), Accepted]),
                error: "",
                usable: true,
                commands: &["MAIL FROM:<s@x>", "RCPT TO:<b@y>", "DATA", "QUIT"],
                data: &[MESSAGE_DATA],
            },
        ];
        for case in cases {
            let mut replies = vec![if case.pipelining { EHLO_PIPELINING } else { EHLO_PLAIN }];
            replies.extend_from_slice(case.replies);
            let (address, server) =
                serve(Script { greeting: GREETING, replies, hold_pipeline: case.pipelining, check_lockstep: false });
            let mut connection = open(address);
            assert_eq!(connection.pipelining(), case.pipelining, "{}", case.name);
            let rcpts = recipients(case.recipients);
            let result = connection.send(&OutboundMessage { sender: "s@x", recipients: &rcpts, parts: MESSAGE });
            match (&result, &case.outcomes) {
                (Ok(got), Some(expected)) => assert_eq!(got, expected, "{}", case.name),
                (Err(error), None) => assert!(error.to_string().contains(case.error), "{}: {error}", case.name),
                _ => panic!("{}: got {result:?}", case.name),
            }
            assert_eq!(connection.is_usable(), case.usable, "{}", case.name);
            if !case.usable {
                // A spent connection refuses at once, without writing anything.
                let again = connection.send(&OutboundMessage { sender: "s@x", recipients: &rcpts, parts: MESSAGE });
                assert!(matches!(again, Err(SendError::Protocol(_))), "{}: {again:?}", case.name);
            }
            connection.quit();
            let transcript = server.join().unwrap();
            assert_eq!(transcript.commands[0], "EHLO client.test", "{}", case.name);
            assert_eq!(transcript.commands[1..], *case.commands, "{}", case.name);
            assert_eq!(transcript.data, case.data, "{}", case.name);
        }
    }

    #[test]
    fn several_messages_on_one_connection() {
        let mut replies = vec![EHLO_PIPELINING];
        for _ in 0..3 {
            replies.extend(["250 Ok", "250 Ok", "354 go", "250 Ok"]);
        }
        let (address, server) =
            serve(Script { greeting: GREETING, replies, hold_pipeline: true, check_lockstep: false });
        let mut connection = open(address);
        let bodies: [&[u8]; 3] = [b"one\r\n", b"two\r\n", b"three\r\n"];
        for (n, body) in bodies.iter().enumerate() {
            let rcpts = vec![format!("r{n}@y")];
            let parts: &[&[u8]] = &[b"Received: t\r\n", body];
            let outcomes = connection.send(&OutboundMessage { sender: "", recipients: &rcpts, parts }).unwrap();
            assert_eq!(outcomes, [RecipientOutcome::Accepted]);
        }
        connection.quit();
        let transcript = server.join().unwrap();
        assert_eq!(
            transcript.commands,
            [
                "EHLO client.test",
                "MAIL FROM:<>",
                "RCPT TO:<r0@y>",
                "DATA",
                "MAIL FROM:<>",
                "RCPT TO:<r1@y>",
                "DATA",
                "MAIL FROM:<>",
                "RCPT TO:<r2@y>",
                "DATA",
                "QUIT",
            ]
        );
        let expected: Vec<Vec<u8>> =
            bodies.iter().map(|&b| [b"Received: t\r\n" as &[u8], b, b".\r\n"].concat()).collect();
        assert_eq!(transcript.data, expected);
    }

    #[test]
    fn size_is_declared_and_an_oversized_message_is_not_sent() {
        let (address, server) = serve(Script {
            greeting: GREETING,
            replies: vec![EHLO_SIZE, "250 Ok", "250 Ok", "354 go", "250 Ok"],
            hold_pipeline: true,
            check_lockstep: false,
        });
        let mut connection = open(address);
        assert_eq!((connection.size_limit(), connection.eight_bit_mime()), (Some(100), true));
        let rcpts = recipients(&["a@y", "b@y"]);
        let big = vec![b'x'; 150];
        let parts: &[&[u8]] = &[&big];
        let outcomes = connection.send(&OutboundMessage { sender: "s@x", recipients: &rcpts, parts }).unwrap();
        assert_eq!(outcomes.len(), 2);
        for outcome in &outcomes {
            assert!(matches!(outcome, RecipientOutcome::Rejected(text) if text.starts_with("552 ")), "{outcome:?}");
        }
        // Under the limit: SIZE counts the CRLF we add; 8-bit content is declared.
        let parts: &[&[u8]] = &[b"Subject: caf\xc3\xa9"];
        let rcpts = recipients(&["a@y"]);
        let outcomes = connection.send(&OutboundMessage { sender: "s@x", recipients: &rcpts, parts }).unwrap();
        assert_eq!(outcomes, [RecipientOutcome::Accepted]);
        connection.quit();
        let transcript = server.join().unwrap();
        assert_eq!(
            transcript.commands,
            ["EHLO client.test", "MAIL FROM:<s@x> SIZE=16 BODY=8BITMIME", "RCPT TO:<a@y>", "DATA", "QUIT"]
        );
    }

    #[test]
    fn ehlo_refused_falls_back_to_helo() {
        let (address, server) = serve(Script {
            greeting: GREETING,
            replies: vec![
                "502 5.5.2 Error: command not recognized",
                "250 fake.test",
                "250 Ok",
                "250 Ok",
                "354 go",
                "250 Ok",
            ],
            hold_pipeline: false,
            check_lockstep: true,
        });
        let mut connection = open(address);
        assert!(!connection.pipelining());
        let rcpts = recipients(&["a@y"]);
        let outcomes = connection.send(&OutboundMessage { sender: "s@x", recipients: &rcpts, parts: MESSAGE }).unwrap();
        assert_eq!(outcomes, [RecipientOutcome::Accepted]);
        connection.quit();
        let transcript = server.join().unwrap();
        assert_eq!(
            transcript.commands,
            ["EHLO client.test", "HELO client.test", "MAIL FROM:<s@x>", "RCPT TO:<a@y>", "DATA", "QUIT"]
        );
        assert_eq!(transcript.early, Vec::<String>::new());
    }

    #[test]
    fn open_fails_on_a_bad_greeting_or_helo() {
        let table: Vec<(&'static str, Vec<&'static str>, &str)> = vec![
            ("554 5.7.1 no service", vec![], "greeting: 554 5.7.1 no service"),
            ("421 4.3.2 busy", vec![], "421 4.3.2 busy"),
            (GREETING, vec!["451 4.3.0 later"], "EHLO: 451"),
            (GREETING, vec!["500 no", "550 no"], "HELO: 550"),
            (GREETING, vec![CLOSE], "closed by the peer"),
        ];
        for (greeting, replies, error) in table {
            let (address, server) = serve(Script { greeting, replies, hold_pipeline: false, check_lockstep: false });
            let result = SmtpConnection::open(address, "client.test", Duration::from_secs(5));
            match result {
                Err(e) => assert!(e.to_string().contains(error), "{greeting}: {e}"),
                Ok(_) => panic!("{greeting}: opened"),
            }
            server.join().unwrap();
        }
        let result = SmtpConnection::open("127.0.0.1:9".parse().unwrap(), "bad name", Duration::from_secs(1));
        assert!(matches!(result, Err(SendError::Protocol(e)) if e.contains("invalid HELO name")));
    }

    #[test]
    fn a_silent_server_times_out_in_bounded_time() {
        // Silent from the start: the greeting never comes. Nothing is expected to arrive,
        // so the timeout can be short. The fake server gives up after 10 s and closes the
        // connection, which would be an EOF: TimedOut shows our timeout fired first. The
        // bound on the wait is for a loaded machine.
        let timeout = Duration::from_millis(200);
        let (address, server) =
            serve(Script { greeting: SILENT, replies: vec![], hold_pipeline: false, check_lockstep: false });
        let started = Instant::now();
        let result = SmtpConnection::open(address, "client.test", timeout);
        assert!(matches!(&result, Err(SendError::Io(e)) if e.kind() == io::ErrorKind::TimedOut), "{:?}", result.err());
        assert!(started.elapsed() < Duration::from_secs(20), "{:?}", started.elapsed());
        drop(result);
        server.join().unwrap();

        // Silent after the final dot. The greeting and the replies before the dot must
        // arrive within the timeout, so it is one a loaded machine meets; the silence then
        // costs that long, still well below the fake server's 10 s.
        let timeout = Duration::from_secs(3);
        let (address, server) = serve(Script {
            greeting: GREETING,
            replies: vec![EHLO_PLAIN, "250 Ok", "250 Ok", "354 go", SILENT],
            hold_pipeline: false,
            check_lockstep: false,
        });
        let mut connection = SmtpConnection::open(address, "client.test", timeout).unwrap();
        let rcpts = recipients(&["a@y"]);
        let started = Instant::now();
        let result = connection.send(&OutboundMessage { sender: "s@x", recipients: &rcpts, parts: MESSAGE });
        assert!(matches!(&result, Err(SendError::Io(e)) if e.kind() == io::ErrorKind::TimedOut), "{result:?}");
        assert!(started.elapsed() < Duration::from_secs(20), "{:?}", started.elapsed());
        connection.quit();
        server.join().unwrap();
    }

    #[test]
    fn a_trickling_reply_stops_at_the_deadline() {
        // One byte every 50 ms never trips the read timeout; the reply deadline stops it
        // anyway, after at most the deadline plus one timeout. The server would go on for
        // a minute (and the line would stay under MAX_REPLY_LINE for longer), so a client
        // without the deadline would take that long; it stops once the client has left.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let server = thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let started = Instant::now();
            let mut chunk: &[u8] = b"220-";
            while started.elapsed() < Duration::from_secs(60) {
                if stream.write_all(chunk).is_err() || stream.flush().is_err() {
                    break;
                }
                chunk = b"x";
                thread::sleep(Duration::from_millis(50));
            }
        });
        let started = Instant::now();
        let result = SmtpConnection::open(address, "client.test", Duration::from_secs(1));
        assert!(result.is_err());
        assert!(started.elapsed() < Duration::from_secs(20), "{:?}", started.elapsed());
        drop(result);
        server.join().unwrap();
    }
}
