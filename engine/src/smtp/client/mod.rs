//! The SMTP client session (RFC 5321) as a sans-I/O state machine, the mirror of the
//! server's [`SmtpSession`](super::SmtpSession): reply bytes go in through
//! [`ClientSession::receive`], commands come out of [`ClientSession::take_output`], and
//! what the caller must act on comes out as an [`Event`]. It never touches a socket or a
//! clock: the driver (`forward::client`) moves the bytes, applies timeouts, does the TLS
//! handshake and writes the message data when told to ([`Event::SendData`]).
//!
//! ```text
//!   Greeting ─220─► Ehlo ─2xx─► Idle ◄──────────────────────────────────┐
//!                     └─5xx─► Helo ─2xx─┘ │ starttls()  ─► StartTls ─220─► Handshake ─tls_established()─► Ehlo
//!                                         │ auth_plain() ─► Auth ─235─► Idle
//!                                         │ send()       ─► Mail ─► Rcpt … ─► Data ─354─► EndOfData ─► Idle
//!                                         │ verify()     ─► Verify ─► VerifyRcpt ─► Reset ─► Idle
//!                                         │                 (a failure on the way: Drain ─► Reset ─► Idle)
//!                                         └ quit()       ─► Quit ─► Closed
//! ```
//!
//! One transaction, and what each reply decides:
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
//! Two kinds of failure: a reply about the message or a recipient is an outcome
//! (`Deferred` for 4xx, `Rejected` for 5xx), and the session stays usable; a failure of
//! the connection itself (421, a malformed reply, or an I/O error the driver reports with
//! [`ClientSession::failed`]) is a [`SendError`], after which the session is out of step
//! with the peer and refuses further use. Once every outcome of a transaction is decided,
//! a failure while tidying up (the RSET) still returns the outcomes: they are the peer's
//! own word.

pub mod data;
pub mod reply;
#[cfg(test)]
mod tests;

use std::fmt::Write as _;
use std::io;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;

pub use data::{data_payload, BodySource, DotStuffer, MessageData, Shape};
pub use reply::{Extensions, ReplyReader, ServerReply};

/// One message to send: the envelope, and the message as a sequence of byte slices (for
/// a stored record: the trace header, then the body), perhaps ending in a body read in
/// pieces; sent unchanged.
#[derive(Clone, Copy, Debug)]
pub struct OutboundMessage<'a> {
    /// The reverse path; empty for the null sender `<>`.
    pub sender: &'a str,
    /// The forward paths, in the order the outcomes are reported.
    pub recipients: &'a [String],
    pub data: MessageData<'a>,
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

/// The reply that decided a recipient's outcome: the one to which command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Decided here, nothing sent (an unusable address, a message over the peer's SIZE).
    NotSent,
    Mail,
    Rcpt,
    Data,
    /// The reply after the message data.
    EndOfData,
}

impl Stage {
    /// The command whose reply this is, for messages: `RCPT TO`, `end of data`.
    pub fn command(self) -> &'static str {
        match self {
            Stage::NotSent => "not sent",
            Stage::Mail => "MAIL FROM",
            Stage::Rcpt => "RCPT TO",
            Stage::Data => "DATA",
            Stage::EndOfData => "end of data",
        }
    }
}

/// A finished transaction: one outcome per recipient, in order, with the stage that
/// decided it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sent {
    pub outcomes: Vec<RecipientOutcome>,
    pub decided_by: Vec<Stage>,
    /// The reply after the message data, if the transaction got that far.
    pub final_reply: Option<String>,
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

/// What the driver must act on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// Greeted (or greeted again after STARTTLS): the session is idle.
    Ready,
    /// The server said 220 to STARTTLS: do the handshake, then call
    /// [`ClientSession::tls_established`]. Bytes that came after the 220 were sent in the
    /// clear and cannot belong to the TLS session: the driver must refuse them.
    StartTls,
    /// The server refused STARTTLS (the reply); the session goes on in plain text.
    TlsRefused(String),
    /// AUTH succeeded.
    Authenticated,
    /// The server said 354: write the message data now (through a [`DotStuffer`]).
    SendData,
    /// The transaction is over.
    Sent(Sent),
    /// The answer to [`ClientSession::verify`].
    Verified(RecipientOutcome),
    /// The server answered QUIT.
    Closed,
}

/// What [`ClientSession::receive`] made of the bytes it took.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Progress {
    /// No whole reply yet: read more.
    NeedMore,
    /// A reply was taken and answered with commands (if any, in [`ClientSession::take_output`]).
    Reply,
    Event(Event),
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
    /// Codes come from the reply reader, which admits only 200–599.
    fn of(code: u16) -> Class {
        match code / 100 {
            2 => Class::Positive,
            3 => Class::Intermediate,
            4 => Class::Transient,
            _ => Class::Permanent,
        }
    }
}

/// A transaction under way: what is decided so far.
#[derive(Debug)]
struct Transaction {
    recipients: Vec<String>,
    outcomes: Vec<Option<RecipientOutcome>>,
    decided_by: Vec<Stage>,
    /// The recipients sent in RCPT commands, in order.
    to_send: Vec<usize>,
    /// Those the server accepted.
    accepted: Vec<usize>,
    pipelined: bool,
}

impl Transaction {
    fn decide(&mut self, recipient: usize, outcome: RecipientOutcome, stage: Stage) {
        self.outcomes[recipient] = Some(outcome);
        self.decided_by[recipient] = stage;
    }

    fn decide_all(&mut self, which: &[usize], outcome: &RecipientOutcome, stage: Stage) {
        for &i in which {
            self.decide(i, outcome.clone(), stage);
        }
    }

    fn rcpt(&self, position: usize) -> String {
        format!("RCPT TO:<{}>", self.recipients[self.to_send[position]])
    }

    /// Every path decides every recipient; the fallback is only there so a mistake defers
    /// (and retries) instead of panicking or losing mail.
    fn finish(self, final_reply: Option<String>) -> Event {
        let outcomes = self
            .outcomes
            .into_iter()
            .map(|o| o.unwrap_or_else(|| RecipientOutcome::Deferred("no outcome recorded".into())))
            .collect();
        Event::Sent(Sent { outcomes, decided_by: self.decided_by, final_reply })
    }
}

#[derive(Debug)]
enum State {
    Greeting,
    Ehlo,
    Helo,
    Idle,
    StartTls,
    Handshake,
    Auth,
    Mail(Transaction),
    /// Waiting for the reply to the RCPT of `to_send[position]`.
    Rcpt(Transaction, usize),
    Data(Transaction),
    EndOfData(Transaction),
    Verify(String),
    VerifyRcpt,
    /// The outcome is decided (`done`); replies still owed to pipelined commands are read
    /// before the RSET.
    Drain {
        replies: usize,
        data_pending: bool,
        done: Event,
    },
    /// A 354 came though no recipient was accepted: an empty message was sent.
    EmptyData(Event),
    Reset(Event),
    Quit,
    Closed,
    Broken,
}

/// One SMTP client session.
#[derive(Debug)]
pub struct ClientSession {
    helo: String,
    state: State,
    extensions: Extensions,
    reader: ReplyReader,
    output: Vec<u8>,
    /// Why the session is no longer in a known state with the peer.
    broken: Option<String>,
}

impl ClientSession {
    /// A session that waits for the greeting, then says EHLO `helo` (HELO if the server
    /// refuses EHLO).
    pub fn new(helo: &str) -> Result<ClientSession, SendError> {
        // The name goes into a command line: no room for spaces or line ends.
        if helo.is_empty() || !helo.chars().all(|c| c.is_ascii_graphic()) {
            return Err(SendError::Protocol(format!("invalid HELO name {helo:?}")));
        }
        Ok(ClientSession {
            helo: helo.to_string(),
            state: State::Greeting,
            extensions: Extensions::default(),
            reader: ReplyReader::default(),
            output: Vec::new(),
            broken: None,
        })
    }

    /// What the server offered in its last EHLO.
    pub fn extensions(&self) -> &Extensions {
        &self.extensions
    }

    /// False once a connection-level failure happened, or once the reset after a failed
    /// transaction failed: the caller should open a new connection for the next message.
    pub fn is_usable(&self) -> bool {
        self.broken.is_none()
    }

    /// Commands to write, in order; empties the buffer.
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.output)
    }

    pub fn has_output(&self) -> bool {
        !self.output.is_empty()
    }

    /// Takes reply bytes up to the end of the first reply that completes, and acts on
    /// it. Returns how many bytes were taken: what follows stays with the caller (after
    /// [`Event::StartTls`] it must be nothing).
    pub fn receive(&mut self, bytes: &[u8]) -> (usize, Result<Progress, SendError>) {
        // Once broken, nothing the peer sends means anything: all of it gets one answer,
        // the same however the bytes arrive (the reader stopped mid-line or not).
        if let Some(why) = &self.broken {
            let error = SendError::Protocol(format!("connection unusable after an earlier failure: {why}"));
            return (bytes.len(), Err(error));
        }
        let (taken, reply) = self.reader.push(bytes);
        let result = match reply {
            None => return (taken, Ok(Progress::NeedMore)),
            Some(Err(why)) => self.fail(SendError::Protocol(why)),
            Some(Ok(reply)) => self.on_reply(reply),
        };
        (taken, result.map(|event| event.map_or(Progress::Reply, Progress::Event)))
    }

    /// The driver's report that the connection failed (EOF, an I/O error, a timeout).
    /// Returns the decided outcome if there is one (the session is unusable either way).
    pub fn failed(&mut self, error: SendError) -> Result<Event, SendError> {
        match self.fail(error) {
            Ok(Some(event)) => Ok(event),
            Ok(None) => Err(SendError::Protocol("connection failed".into())),
            Err(error) => Err(error),
        }
    }

    /// STARTTLS (RFC 3207).
    pub fn starttls(&mut self) -> Result<(), SendError> {
        self.ready_for("STARTTLS")?;
        self.command("STARTTLS");
        self.state = State::StartTls;
        Ok(())
    }

    /// The handshake after [`Event::StartTls`] succeeded: greet again (RFC 3207 §4.2:
    /// what the server said before TLS is forgotten).
    pub fn tls_established(&mut self) -> Result<(), SendError> {
        if !matches!(self.state, State::Handshake) {
            return Err(SendError::Protocol("no TLS handshake was due".into()));
        }
        self.extensions = Extensions::default();
        self.command(&format!("EHLO {}", self.helo));
        self.state = State::Ehlo;
        Ok(())
    }

    /// AUTH PLAIN (RFC 4954, RFC 4616) with the initial response: no authorization
    /// identity, `user`, `password`. The secret never appears in an error.
    pub fn auth_plain(&mut self, user: &str, password: &str) -> Result<(), SendError> {
        self.ready_for("AUTH")?;
        let response = BASE64.encode(format!("\0{user}\0{password}"));
        self.command(&format!("AUTH PLAIN {response}"));
        self.state = State::Auth;
        Ok(())
    }

    /// Starts one mail transaction. MAIL FROM carries SIZE=n when the server advertised
    /// SIZE; a message over the advertised limit gets every recipient
    /// `Rejected("552 …")` without sending. An address holding control characters (it
    /// would break the command line) is `Rejected` without being sent. Returns the event
    /// at once when nothing needs sending.
    pub fn send(&mut self, message: &OutboundMessage) -> Result<Option<Event>, SendError> {
        self.ready_for("a transaction")?;
        let count = message.recipients.len();
        let mut transaction = Transaction {
            recipients: message.recipients.to_vec(),
            outcomes: vec![None; count],
            decided_by: vec![Stage::NotSent; count],
            to_send: Vec::with_capacity(count),
            accepted: Vec::with_capacity(count),
            pipelined: self.extensions.pipelining,
        };
        if count == 0 {
            return Ok(Some(transaction.finish(None)));
        }
        if has_control(message.sender) {
            let why = RecipientOutcome::Rejected("invalid sender address (control characters), not sent".into());
            transaction.decide_all(&(0..count).collect::<Vec<_>>(), &why, Stage::NotSent);
            return Ok(Some(transaction.finish(None)));
        }
        for (i, recipient) in message.recipients.iter().enumerate() {
            if has_control(recipient) {
                let why = RecipientOutcome::Rejected("invalid recipient address (control characters), not sent".into());
                transaction.decide(i, why, Stage::NotSent);
            } else {
                transaction.to_send.push(i);
            }
        }
        if transaction.to_send.is_empty() {
            return Ok(Some(transaction.finish(None)));
        }
        let Shape { size, eight_bit } = message.data.shape();
        if let Some(limit) = self.extensions.size_limit.filter(|&limit| size > limit) {
            // RFC 1870 §4: a message over the advertised limit "will be rejected with a
            // permanent failure (552)"; sending it would only waste the bytes.
            let why = format!("552 5.3.4 message size {size} exceeds the peer's limit of {limit} octets (not sent)");
            let to_send = std::mem::take(&mut transaction.to_send);
            transaction.decide_all(&to_send, &RecipientOutcome::Rejected(why), Stage::NotSent);
            return Ok(Some(transaction.finish(None)));
        }

        let mut mail = format!("MAIL FROM:<{}>", message.sender);
        if self.extensions.size_advertised {
            let _ = write!(mail, " SIZE={size}");
        }
        // RFC 6152 §3: declare 8-bit content where the peer can take it. Where it cannot,
        // the message still goes unchanged (the contract: sent as stored); in practice
        // servers pass 8-bit data through.
        if self.extensions.eight_bit_mime && eight_bit {
            mail.push_str(" BODY=8BITMIME");
        }
        self.command(&mail);
        if transaction.pipelined {
            // RFC 2920 §3.1: MAIL, the RCPTs and DATA may form one group; DATA is last.
            for position in 0..transaction.to_send.len() {
                self.command(&transaction.rcpt(position));
            }
            self.command("DATA");
        }
        self.state = State::Mail(transaction);
        Ok(None)
    }

    /// Asks whether the peer would take mail for `recipient` (Postfix's address probe):
    /// `MAIL FROM:<>`, `RCPT TO`, then `RSET`; no message is sent. The RCPT reply decides:
    /// 2xx `Accepted`, 5xx `Rejected`, anything else `Deferred`.
    pub fn verify(&mut self, recipient: &str) -> Result<Option<Event>, SendError> {
        self.ready_for("a probe")?;
        if has_control(recipient) {
            let why = "invalid recipient address (control characters)".to_string();
            return Ok(Some(Event::Verified(RecipientOutcome::Rejected(why))));
        }
        self.command("MAIL FROM:<>");
        self.state = State::Verify(recipient.to_string());
        Ok(None)
    }

    /// QUIT, if the session is idle and sound; false if there is nothing to say (the
    /// driver just closes).
    pub fn quit(&mut self) -> bool {
        if self.broken.is_some() || !matches!(self.state, State::Idle) {
            return false;
        }
        self.command("QUIT");
        self.state = State::Quit;
        true
    }

    fn ready_for(&self, what: &str) -> Result<(), SendError> {
        if let Some(why) = &self.broken {
            return Err(SendError::Protocol(format!("connection unusable after an earlier failure: {why}")));
        }
        if !matches!(self.state, State::Idle) {
            return Err(SendError::Protocol(format!("{what} while the session is busy ({:?})", self.state)));
        }
        Ok(())
    }

    fn command(&mut self, line: &str) {
        self.output.extend_from_slice(line.as_bytes());
        self.output.extend_from_slice(b"\r\n");
    }

    /// Marks the session broken. Where the outcome is already decided it is returned;
    /// otherwise the error.
    fn fail(&mut self, error: SendError) -> Result<Option<Event>, SendError> {
        self.broken = Some(error.to_string());
        match std::mem::replace(&mut self.state, State::Broken) {
            State::Drain { done, .. } | State::EmptyData(done) | State::Reset(done) => {
                log::warn!("SMTP connection left unusable after a failed transaction: {error}");
                Ok(Some(done))
            }
            State::Quit => {
                self.state = State::Closed;
                Ok(Some(Event::Closed))
            }
            _ => Err(error),
        }
    }

    /// Outcomes are decided: read the `replies` still owed to pipelined RCPTs, then (if
    /// `data_pending`) the DATA reply, then reset.
    fn drain(&mut self, replies: usize, data_pending: bool, done: Event) {
        if replies == 0 && !data_pending {
            // RFC 5321 §4.1.1.5: RSET clears whatever the peer kept of the transaction.
            self.command("RSET");
            self.state = State::Reset(done);
        } else {
            self.state = State::Drain { replies, data_pending, done };
        }
    }

    fn on_reply(&mut self, reply: ServerReply) -> Result<Option<Event>, SendError> {
        // RFC 5321 §3.8: 421 means the server is closing the transmission channel;
        // nothing more can happen on this connection.
        if reply.code == 421 && !matches!(self.state, State::Quit) {
            return self.fail(SendError::Protocol(format!("peer is closing the connection: {}", reply.summary())));
        }
        let class = Class::of(reply.code);
        let failure = || match class {
            Class::Transient => RecipientOutcome::Deferred(reply.summary()),
            _ => RecipientOutcome::Rejected(reply.summary()),
        };
        let unexpected = |after: &str| SendError::Protocol(format!("unexpected reply to {after}: {}", reply.summary()));
        match std::mem::replace(&mut self.state, State::Broken) {
            State::Greeting => {
                // RFC 5321 §3.1, §4.3.2: anything but 220 (typically 554) means no service.
                if reply.code != 220 {
                    return self.fail(SendError::Protocol(format!("greeting: {}", reply.summary())));
                }
                self.command(&format!("EHLO {}", self.helo));
                self.state = State::Ehlo;
            }
            State::Ehlo => match class {
                Class::Positive => {
                    // The first line is the server's name; each further line one keyword.
                    self.extensions = Extensions::parse(reply.lines.get(1..).unwrap_or_default());
                    self.state = State::Idle;
                    return Ok(Some(Event::Ready));
                }
                // RFC 5321 §3.2: a server that does not know EHLO answers 5xx; try HELO,
                // which offers no extensions.
                Class::Permanent => {
                    self.command(&format!("HELO {}", self.helo));
                    self.state = State::Helo;
                }
                _ => return self.fail(SendError::Protocol(format!("EHLO: {}", reply.summary()))),
            },
            State::Helo => {
                if class != Class::Positive {
                    return self.fail(SendError::Protocol(format!("HELO: {}", reply.summary())));
                }
                self.state = State::Idle;
                return Ok(Some(Event::Ready));
            }
            State::StartTls => {
                if reply.code == 220 {
                    self.state = State::Handshake;
                    return Ok(Some(Event::StartTls));
                }
                self.state = State::Idle;
                return Ok(Some(Event::TlsRefused(reply.summary())));
            }
            State::Auth => {
                if class != Class::Positive {
                    return self.fail(SendError::Protocol(format!("AUTH PLAIN: {}", reply.summary())));
                }
                self.state = State::Idle;
                return Ok(Some(Event::Authenticated));
            }
            State::Mail(mut transaction) => match class {
                Class::Positive => {
                    if !transaction.pipelined {
                        self.command(&transaction.rcpt(0));
                    }
                    self.state = State::Rcpt(transaction, 0);
                }
                Class::Transient | Class::Permanent => {
                    let to_send = transaction.to_send.clone();
                    transaction.decide_all(&to_send, &failure(), Stage::Mail);
                    // With pipelining the RCPT and DATA replies (503s) are still to come.
                    let pipelined = transaction.pipelined;
                    let owed = if pipelined { to_send.len() } else { 0 };
                    self.drain(owed, pipelined, transaction.finish(None));
                }
                Class::Intermediate => return self.fail(unexpected("MAIL")),
            },
            State::Rcpt(mut transaction, position) => {
                let recipient = transaction.to_send[position];
                match class {
                    Class::Positive => transaction.accepted.push(recipient),
                    Class::Transient | Class::Permanent => transaction.decide(recipient, failure(), Stage::Rcpt),
                    Class::Intermediate => return self.fail(unexpected("RCPT")),
                }
                let pipelined = transaction.pipelined;
                if position + 1 < transaction.to_send.len() {
                    if !pipelined {
                        self.command(&transaction.rcpt(position + 1));
                    }
                    self.state = State::Rcpt(transaction, position + 1);
                } else if transaction.accepted.is_empty() {
                    // RFC 2920 §3.1: the server answers the pipelined DATA with 503 or 554
                    // when no recipient was accepted; read that reply and reset.
                    self.drain(0, pipelined, transaction.finish(None));
                } else {
                    if !pipelined {
                        self.command("DATA");
                    }
                    self.state = State::Data(transaction);
                }
            }
            State::Data(mut transaction) => match class {
                _ if reply.code == 354 => {
                    self.state = State::EndOfData(transaction);
                    return Ok(Some(Event::SendData));
                }
                Class::Transient | Class::Permanent => {
                    let accepted = std::mem::take(&mut transaction.accepted);
                    transaction.decide_all(&accepted, &failure(), Stage::Data);
                    self.drain(0, false, transaction.finish(None));
                }
                _ => return self.fail(unexpected("DATA")),
            },
            State::EndOfData(mut transaction) => {
                // RFC 5321 §4.1.1.4: the reply to the final dot decides for every accepted
                // recipient at once, and ends the transaction either way (no RSET needed).
                let outcome = match class {
                    Class::Positive => RecipientOutcome::Accepted,
                    Class::Transient | Class::Permanent => failure(),
                    Class::Intermediate => return self.fail(unexpected("end of data")),
                };
                let accepted = std::mem::take(&mut transaction.accepted);
                transaction.decide_all(&accepted, &outcome, Stage::EndOfData);
                self.state = State::Idle;
                return Ok(Some(transaction.finish(Some(reply.summary()))));
            }
            State::Verify(recipient) => {
                if class == Class::Positive {
                    self.command(&format!("RCPT TO:<{recipient}>"));
                    self.state = State::VerifyRcpt;
                } else {
                    self.drain(0, false, Event::Verified(RecipientOutcome::Deferred(reply.summary())));
                }
            }
            State::VerifyRcpt => {
                let outcome = match class {
                    Class::Positive => RecipientOutcome::Accepted,
                    Class::Permanent => RecipientOutcome::Rejected(reply.summary()),
                    _ => RecipientOutcome::Deferred(reply.summary()),
                };
                self.drain(0, false, Event::Verified(outcome));
            }
            State::Drain { replies, data_pending, done } => {
                if replies > 0 {
                    self.drain(replies - 1, data_pending, done);
                } else if reply.code == 354 {
                    // A server that starts data with no recipient accepted (RFC 2920 says it
                    // must not) gets an empty message, whose reply we ignore.
                    log::debug!("peer answered DATA with 354 though no recipient was accepted");
                    self.output.extend_from_slice(b".\r\n");
                    self.state = State::EmptyData(done);
                } else {
                    self.drain(0, false, done);
                }
            }
            State::EmptyData(done) => self.drain(0, false, done),
            State::Reset(done) => {
                if class == Class::Positive {
                    self.state = State::Idle;
                } else {
                    log::warn!("SMTP connection left unusable after a failed transaction: RSET: {}", reply.summary());
                    self.broken = Some(format!("RSET: {}", reply.summary()));
                }
                return Ok(Some(done));
            }
            State::Quit => {
                self.state = State::Closed;
                return Ok(Some(Event::Closed));
            }
            state @ (State::Idle | State::Handshake | State::Closed | State::Broken) => {
                let why = match state {
                    State::Handshake => "data after the 220 to STARTTLS".to_string(),
                    _ => format!("unexpected reply {}", reply.summary()),
                };
                return self.fail(SendError::Protocol(why));
            }
        }
        Ok(None)
    }
}

/// Control characters (CR, LF, NUL, …) in an address would end or corrupt the command
/// line it is sent in.
fn has_control(address: &str) -> bool {
    address.chars().any(char::is_control)
}
