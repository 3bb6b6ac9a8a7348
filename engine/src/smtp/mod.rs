//! The SMTP server session (RFC 5321) as a sans-I/O state machine.
//!
//! Bytes go in through [`SmtpSession::receive`]; replies and effects come out as
//! [`Action`]s. The session never touches a socket, a clock or the store: the daemon
//! writes the replies, applies timeouts, and answers a [`Action::Commit`] with
//! [`SmtpSession::commit_finished`] once the message is durable (or is not). That is the
//! one place where "250 only after fsync" is decided.
//!
//! ```text
//!   connect ──► Fresh ──HELO/EHLO──► Greeted ──MAIL──► Mail ──RCPT──► Mail(rcpts>0)
//!                 ▲                     ▲  ▲                              │ DATA
//!                 │     RSET, HELO/EHLO │  └──── 250/451/452/552 ◄─ Committing ◄─ Data
//!                 └── RSET (not greeted)┘                         (end of data, CRLF.CRLF)
//! ```
//!
//! Three layers: [`receiver`] cuts bytes into command lines and message data,
//! [`command`] parses a line, and this module applies it to the state.

pub mod command;
pub mod receiver;
pub mod reply;

use std::net::IpAddr;
use std::sync::Arc;

use crate::address::{Address, AddressError};
use crate::directory::{Directory, Route};
use command::Command;
use receiver::{DataProgress, DataReceiver, Line, LineReceiver};
pub use reply::Reply;

/// Limits and names a session needs; shared by all sessions of a listener.
#[derive(Clone, Debug)]
pub struct SmtpConfig {
    pub hostname: String,
    pub max_message_size: usize,
    /// RFC 5321 §4.5.3.1.8: at least 100 recipients must be accepted; we take exactly 100.
    pub max_recipients: usize,
    /// After this many 4xx/5xx replies the session is closed with 421.
    pub max_errors: u32,
    /// Offer STARTTLS (RFC 3207): the daemon has a certificate.
    pub tls_available: bool,
}

impl SmtpConfig {
    pub fn new(hostname: impl Into<String>, max_message_size: usize) -> SmtpConfig {
        SmtpConfig { hostname: hostname.into(), max_message_size, max_recipients: 100, max_errors: 20, tls_available: false }
    }
}

/// The envelope of one message: who sent it, to whom, and from where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    pub helo: String,
    /// True if the client greeted with EHLO (the trace header says ESMTP then).
    pub extended: bool,
    /// True if the message came over TLS (the trace header says ESMTPS then).
    pub tls: bool,
    pub client_ip: IpAddr,
    /// The reverse path; empty for the null sender `<>`.
    pub sender: String,
    /// Accepted recipients in RCPT order, each once.
    pub recipients: Vec<String>,
}

/// A whole message handed to the pipeline.
#[derive(Debug)]
pub struct Message {
    pub envelope: Envelope,
    /// The client's bytes after dot-unstuffing, exactly as sent otherwise.
    pub body: Vec<u8>,
}

/// Why the pipeline did not commit a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CommitError {
    /// The store failed (I/O error): try again later. `451 4.3.0`.
    Transient,
    /// The store is out of space. `452 4.3.1`.
    Full,
    /// A stage refused the message for good, with this reply (e.g. a mail loop).
    Rejected(Reply),
}

/// What the daemon must do for the session, in order.
#[derive(Debug)]
pub enum Action {
    Send(Reply),
    /// Make this message durable, then call [`SmtpSession::commit_finished`]. The session
    /// takes no more input until then.
    Commit(Message),
    /// After sending what came before, run the TLS handshake as server; from then on
    /// every byte is read and written through TLS. A failed handshake closes the
    /// connection. Only emitted when [`SmtpConfig::tls_available`] is true.
    StartTls,
    /// Close the connection after sending what came before.
    Close,
}

/// The state of the current SMTP transaction; each variant holds only what is valid in it.
#[derive(Debug)]
enum State {
    Fresh,
    Greeted { helo: String, extended: bool },
    Mail { helo: String, extended: bool, sender: String, recipients: Vec<String> },
    Data { helo: String, extended: bool, sender: String, recipients: Vec<String>, data: DataReceiver },
    Committing { helo: String, extended: bool },
    Closed,
}

pub struct SmtpSession {
    config: Arc<SmtpConfig>,
    directory: Arc<dyn Directory>,
    client_ip: IpAddr,
    state: State,
    lines: LineReceiver,
    /// Input not yet consumed (only while a commit is outstanding, or a partial line).
    pending: Vec<u8>,
    errors: u32,
    /// Set when a valid command or message data arrived; restarts the daemon's timer.
    activity: bool,
    /// True after STARTTLS: not offered again, and the trace header says so.
    tls_active: bool,
    /// Set by STARTTLS: what the client sent behind it was sent in the clear and is
    /// dropped unread (RFC 3207 §4.2; the CVE-2011-0411 command injection).
    discard_input: bool,
}

impl SmtpSession {
    pub fn new(config: Arc<SmtpConfig>, directory: Arc<dyn Directory>, client_ip: IpAddr) -> SmtpSession {
        SmtpSession {
            config,
            directory,
            client_ip,
            state: State::Fresh,
            lines: LineReceiver::default(),
            pending: Vec::new(),
            errors: 0,
            activity: false,
            tls_active: false,
            discard_input: false,
        }
    }

    pub fn greeting(&self) -> Reply {
        Reply::greeting(&self.config.hostname)
    }

    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed)
    }

    /// True while the client is inside a transaction (MAIL given, not yet finished).
    pub fn in_transaction(&self) -> bool {
        matches!(self.state, State::Mail { .. } | State::Data { .. } | State::Committing { .. })
    }

    /// Returns (and clears) whether a valid command or data arrived since the last call.
    pub fn take_activity(&mut self) -> bool {
        std::mem::take(&mut self.activity)
    }

    /// Feeds bytes from the client; returns what to do, in order.
    pub fn receive(&mut self, input: &[u8], actions: &mut Vec<Action>) {
        self.pending.extend_from_slice(input);
        self.process(actions);
    }

    /// The pipeline's answer to the last [`Action::Commit`].
    pub fn commit_finished(&mut self, outcome: Result<u64, CommitError>, actions: &mut Vec<Action>) {
        let State::Committing { helo, extended } = std::mem::replace(&mut self.state, State::Closed) else {
            return;
        };
        self.state = State::Greeted { helo, extended };
        let reply = match outcome {
            Ok(number) => Reply::delivered(number),
            Err(CommitError::Transient) => Reply::store_failed(),
            Err(CommitError::Full) => Reply::store_full(),
            Err(CommitError::Rejected(reply)) => reply,
        };
        self.reply(reply, actions);
        self.process(actions);
    }

    /// No valid command (or data) within the command timeout.
    pub fn timed_out(&mut self, actions: &mut Vec<Action>) {
        self.close_with(Reply::timeout(&self.config.hostname), actions);
    }

    /// The server is stopping and this session's grace is over.
    pub fn shutting_down(&mut self, actions: &mut Vec<Action>) {
        self.close_with(Reply::shutting_down(&self.config.hostname), actions);
    }

    fn close_with(&mut self, reply: Reply, actions: &mut Vec<Action>) {
        if !self.is_closed() {
            actions.push(Action::Send(reply));
            actions.push(Action::Close);
            self.state = State::Closed;
        }
    }

    fn process(&mut self, actions: &mut Vec<Action>) {
        let mut pos = 0;
        loop {
            match &mut self.state {
                State::Closed | State::Committing { .. } => break,
                _ if self.discard_input => {
                    self.discard_input = false;
                    pos = self.pending.len();
                    self.lines = LineReceiver::default();
                    break;
                }
                State::Data { data, .. } => {
                    let input = &self.pending[pos..];
                    if input.is_empty() {
                        break;
                    }
                    self.activity = true;
                    match data.feed(input) {
                        DataProgress::NeedMore => pos = self.pending.len(),
                        DataProgress::Done { consumed } => {
                            pos += consumed;
                            self.end_of_data(actions);
                        }
                    }
                }
                _ => match self.lines.next(&self.pending, &mut pos, receiver::MAX_COMMAND_LINE) {
                    Line::NeedMore => break,
                    Line::TooLong => self.reply(Reply::line_too_long(), actions),
                    Line::Complete(line) => {
                        let command = Command::parse(line);
                        self.execute(command, actions);
                    }
                },
            }
        }
        if self.is_closed() {
            // Whatever followed the close is never read.
            self.pending = Vec::new();
        } else {
            self.pending.drain(..pos);
        }
    }

    /// Sends a reply, counting errors; the 20th error closes the session.
    fn reply(&mut self, reply: Reply, actions: &mut Vec<Action>) {
        if reply.is_error() {
            self.errors += 1;
        } else {
            self.activity = true;
        }
        actions.push(Action::Send(reply));
        if self.errors >= self.config.max_errors {
            self.close_with(Reply::too_many_errors(&self.config.hostname), actions);
        }
    }

    fn end_of_data(&mut self, actions: &mut Vec<Action>) {
        let State::Data { helo, extended, sender, recipients, data } = std::mem::replace(&mut self.state, State::Closed)
        else {
            return;
        };
        if data.over_limit() {
            // RFC 5321 §4.5.3.1.10 allows 552 after the data; no number is used.
            self.state = State::Greeted { helo, extended };
            self.reply(Reply::too_big(), actions);
            return;
        }
        let envelope =
            Envelope { helo: helo.clone(), extended, tls: self.tls_active, client_ip: self.client_ip, sender, recipients };
        actions.push(Action::Commit(Message { envelope, body: data.into_body() }));
        self.state = State::Committing { helo, extended };
    }

    fn execute(&mut self, command: Command, actions: &mut Vec<Action>) {
        if let Command::StartTls { has_argument } = command {
            return self.start_tls(has_argument, actions);
        }
        let state = std::mem::replace(&mut self.state, State::Closed);
        let (state, reply) = self.transition(state, command);
        self.state = state;
        if let Some(reply) = reply {
            let closing = matches!(self.state, State::Closed);
            self.reply(reply, actions);
            if closing {
                actions.push(Action::Close);
            }
        }
    }

    /// RFC 3207: STARTTLS outside a transaction; afterwards the session starts over, as
    /// if just connected, and the client must greet again.
    fn start_tls(&mut self, has_argument: bool, actions: &mut Vec<Action>) {
        let reply = if !self.config.tls_available {
            Reply::not_implemented()
        } else if self.tls_active {
            Reply::tls_already_active()
        } else if has_argument {
            Reply::tls_syntax()
        } else if self.in_transaction() {
            Reply::tls_in_transaction()
        } else {
            self.reply(Reply::ready_for_tls(), actions);
            actions.push(Action::StartTls);
            self.state = State::Fresh;
            self.tls_active = true;
            self.discard_input = true;
            return;
        };
        self.reply(reply, actions);
    }

    fn greeted_name(state: &State) -> Option<(String, bool)> {
        match state {
            State::Greeted { helo, extended }
            | State::Mail { helo, extended, .. }
            | State::Data { helo, extended, .. }
            | State::Committing { helo, extended } => Some((helo.clone(), *extended)),
            State::Fresh | State::Closed => None,
        }
    }

    /// Applies one command: the new state and the reply.
    fn transition(&self, state: State, command: Command) -> (State, Option<Reply>) {
        let config = &self.config;
        match (state, command) {
            (_, Command::Quit) => (State::Closed, Some(Reply::bye())),
            // RFC 5321 §4.1.4: a repeated HELO/EHLO resets the transaction.
            (_, Command::Helo(helo)) => {
                (State::Greeted { helo, extended: false }, Some(Reply::helo(&config.hostname)))
            }
            (_, Command::Ehlo(helo)) => {
                let reply = Reply::ehlo(&config.hostname, &self.extensions());
                (State::Greeted { helo, extended: true }, Some(reply))
            }
            (state, Command::HeloMissing { extended }) => {
                (state, Some(Reply::helo_syntax(if extended { "EHLO" } else { "HELO" })))
            }
            (state, Command::Rset) => {
                let state = match Self::greeted_name(&state) {
                    Some((helo, extended)) => State::Greeted { helo, extended },
                    None => State::Fresh,
                };
                (state, Some(Reply::ok()))
            }
            (state, Command::Noop) => (state, Some(Reply::ok())),
            (state, Command::Vrfy) => (state, Some(Reply::vrfy())),
            (state, Command::Help) => (state, Some(Reply::help())),
            (state, Command::Expn | Command::StartTls { .. } | Command::Auth(_) | Command::Bdat) => {
                (state, Some(Reply::not_implemented()))
            }
            (state, Command::Unknown) => (state, Some(Reply::not_recognized())),

            (State::Fresh, Command::Mail { .. } | Command::MailSyntax)
            | (State::Fresh, Command::Rcpt { .. } | Command::RcptSyntax | Command::Data) => {
                (State::Fresh, Some(Reply::need_helo()))
            }

            (State::Greeted { helo, extended }, Command::Mail { path, params }) => {
                match self.check_sender(&path, &params) {
                    Ok(()) => {
                        let state = State::Mail { helo, extended, sender: path, recipients: Vec::new() };
                        (state, Some(Reply::sender_ok()))
                    }
                    Err(reply) => (State::Greeted { helo, extended }, Some(reply)),
                }
            }
            (state @ State::Greeted { .. }, Command::MailSyntax) => (state, Some(Reply::mail_syntax())),
            (state @ State::Mail { .. }, Command::Mail { .. } | Command::MailSyntax) => {
                (state, Some(Reply::nested_mail()))
            }
            (state @ State::Greeted { .. }, Command::Rcpt { .. } | Command::RcptSyntax | Command::Data) => {
                (state, Some(Reply::need_mail()))
            }

            (State::Mail { helo, extended, sender, mut recipients }, Command::Rcpt { path, .. }) => {
                let reply = self.add_recipient(&path, &mut recipients);
                (State::Mail { helo, extended, sender, recipients }, Some(reply))
            }
            (state @ State::Mail { .. }, Command::RcptSyntax) => (state, Some(Reply::rcpt_syntax())),
            (State::Mail { helo, extended, sender, recipients }, Command::Data) => {
                if recipients.is_empty() {
                    (State::Mail { helo, extended, sender, recipients }, Some(Reply::need_rcpt()))
                } else {
                    let data = DataReceiver::new(config.max_message_size);
                    (State::Data { helo, extended, sender, recipients, data }, Some(Reply::start_data()))
                }
            }

            // Data and Committing never see commands; Closed ignores them.
            (state, _) => (state, None),
        }
    }

    fn extensions(&self) -> Vec<String> {
        let mut extensions = vec![
            "PIPELINING".into(),
            format!("SIZE {}", self.config.max_message_size),
            "8BITMIME".into(),
            "ENHANCEDSTATUSCODES".into(),
        ];
        if self.config.tls_available && !self.tls_active {
            extensions.push("STARTTLS".into());
        }
        extensions
    }

    fn check_sender(&self, path: &str, params: &[(String, Option<String>)]) -> Result<(), Reply> {
        // The null reverse-path `<>` is how bounces are sent (RFC 5321 §4.5.5).
        if !path.is_empty() && Address::parse(path, None).is_err() {
            return Err(Reply::bad_sender(path));
        }
        for (key, value) in params {
            match (key.as_str(), value.as_deref()) {
                // RFC 1870: refuse at MAIL when the announced size is already too big.
                ("SIZE", Some(size)) => match size.parse::<u64>() {
                    Ok(size) if size > self.config.max_message_size as u64 => return Err(Reply::too_big()),
                    Ok(_) => {}
                    Err(_) => return Err(Reply::mail_syntax()),
                },
                ("BODY", Some(body)) if body.eq_ignore_ascii_case("7BIT") || body.eq_ignore_ascii_case("8BITMIME") => {}
                _ => return Err(Reply::unknown_parameter(key)),
            }
        }
        Ok(())
    }

    fn add_recipient(&self, path: &str, recipients: &mut Vec<String>) -> Reply {
        let address = match Address::parse(path, Some(self.directory.default_domain())) {
            Ok(address) => address,
            Err(AddressError::Empty | AddressError::TooLong | AddressError::BadCharacter | AddressError::BadShape) => {
                return Reply::bad_recipient(path);
            }
        };
        if recipients.len() >= self.config.max_recipients {
            return Reply::too_many_recipients();
        }
        match self.directory.route(&address) {
            Route::Local | Route::Peer => {
                let text = address.to_string();
                // The same recipient twice is one delivery (one Delivered-To, one copy).
                if !recipients.iter().any(|r| r.eq_ignore_ascii_case(&text)) {
                    recipients.push(text);
                }
                Reply::recipient_ok()
            }
            Route::UnknownUser => Reply::user_unknown(path),
            Route::Remote => Reply::relay_denied(path),
        }
    }
}

#[cfg(test)]
mod tests;
