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
//!                 ▲                   ▲ ▲  ▲                              │ DATA
//!                 │   RSET, HELO/EHLO │ │  └──── 250/451/452/552 ◄─ Committing ◄─ Data
//!                 └── RSET (not greeted)│                         (end of data, CRLF.CRLF)
//!                                     │ │ AUTH PLAIN <resp> / AUTH LOGIN   (Greeted only,
//!                                     │ └──► Auth ── next line ──┐        not yet authenticated)
//!                                     │        │ `*`, bad base64 │ (or the response at once)
//!                                     │        ▼                 ▼
//!                                     │      Greeted ◄─ 535 ─ Authenticating ──► daemon checks
//!                                     └─────────────── 235 ──────┘               the password
//!   STARTTLS (Greeted, certificate configured): 220, then Fresh inside TLS.
//! ```
//!
//! Three layers: [`receiver`] cuts bytes into command lines and message data,
//! [`command`] parses a line, and this module applies it to the state.

pub mod client;
pub mod command;
pub mod receiver;
pub mod reply;

use std::io;
use std::net::IpAddr;
use std::sync::Arc;

use crate::address::{Address, AddressError};
use crate::budget::{MemoryBudget, Share};
use crate::directory::{Accepted, Directory, Route};
use crate::envelope::{CommitError, Envelope, Message};
use crate::sasl::{self, AuthFailure, Credentials, Verdict};
use crate::store::bodies::BodyDir;
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
    /// Offer STARTTLS (RFC 3207): the daemon has a certificate. AUTH then waits for TLS.
    pub tls_available: bool,
    /// The submission service: AUTH (RFC 4954) is offered and required before MAIL, and
    /// an authenticated user may send to any domain, from their own address only.
    pub submission: bool,
    /// Message data in memory over all sessions sharing it.
    pub data_budget: Arc<MemoryBudget>,
    /// Where a large message's body is spooled while it arrives (the store's body
    /// directory); without one it stays in memory.
    pub spill_dir: Option<BodyDir>,
}

impl SmtpConfig {
    pub fn new(hostname: impl Into<String>, max_message_size: usize) -> SmtpConfig {
        SmtpConfig {
            hostname: hostname.into(),
            max_message_size,
            max_recipients: 100,
            max_errors: 20,
            tls_available: false,
            submission: false,
            data_budget: MemoryBudget::unlimited(),
            spill_dir: None,
        }
    }
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
    /// Check these credentials, then call [`SmtpSession::auth_finished`]. The session
    /// takes no more input until then.
    Authenticate(Credentials),
    /// Close the connection after sending what came before.
    Close,
}

/// The state of the current SMTP transaction; each variant holds only what is valid in it.
#[derive(Debug)]
enum State {
    Fresh,
    Greeted {
        helo: String,
        extended: bool,
    },
    Mail {
        helo: String,
        extended: bool,
        sender: String,
        recipients: Vec<(String, Accepted)>,
    },
    Data {
        helo: String,
        extended: bool,
        sender: String,
        recipients: Vec<(String, Accepted)>,
        data: DataReceiver,
    },
    Committing {
        helo: String,
        extended: bool,
        /// The message's share of the memory budget, held (never read) until the pipeline
        /// answers.
        _share: Option<Share>,
    },
    /// An AUTH exchange waiting for the client's next line.
    Auth {
        helo: String,
        extended: bool,
        step: AuthStep,
    },
    /// Credentials are with the daemon.
    Authenticating {
        helo: String,
        extended: bool,
        mechanism: &'static str,
    },
    Closed,
}

#[derive(Debug)]
enum AuthStep {
    Plain,
    LoginUser,
    LoginPassword { user: String },
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
    /// Failed password checks in this session (see [`sasl::MAX_FAILURES_PER_CONNECTION`]).
    auth_failures: u32,
    /// Set when a valid command or message data arrived; restarts the daemon's timer.
    activity: bool,
    /// True after STARTTLS: not offered again, and the trace header says so.
    tls_active: bool,
    /// The user key after a successful AUTH.
    authenticated: Option<String>,
    /// Set by STARTTLS: what the client sent behind it was sent in the clear and is
    /// dropped unread (RFC 3207 §4.2; the CVE-2011-0411 command injection).
    discard_input: bool,
    /// Reply octets produced since the daemon last fed or resumed the session.
    round_output: usize,
    /// Set when a round stopped at [`OUTPUT_ROUND`] with input left: the daemon sends
    /// what it has, then calls [`SmtpSession::resume`] before it reads more.
    paused: bool,
}

/// Reply octets one round may produce before the session pauses, so that a client that
/// pipelines commands without reading the replies holds only this much of our memory.
pub const OUTPUT_ROUND: usize = 64 * 1024;

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
            auth_failures: 0,
            activity: false,
            tls_active: false,
            authenticated: None,
            discard_input: false,
            round_output: 0,
            paused: false,
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

    /// The SASL mechanism of the [`Action::Authenticate`] being answered, for the log.
    pub fn auth_mechanism(&self) -> &'static str {
        match self.state {
            State::Authenticating { mechanism, .. } => mechanism,
            _ => "-",
        }
    }

    /// Returns (and clears) whether a valid command or data arrived since the last call.
    pub fn take_activity(&mut self) -> bool {
        std::mem::take(&mut self.activity)
    }

    /// The connection is in TLS from its first byte (RFC 8314 implicit TLS): STARTTLS is
    /// not offered, AUTH is, and the trace header says ESMTPS.
    pub fn tls_from_the_start(&mut self) {
        self.tls_active = true;
    }

    /// True when the last round stopped with input left (see [`OUTPUT_ROUND`]).
    pub fn is_paused(&self) -> bool {
        self.paused
    }

    /// Continues after a pause, once the daemon has sent what the last round produced.
    pub fn resume(&mut self, actions: &mut Vec<Action>) {
        if std::mem::take(&mut self.paused) {
            self.process(actions);
        }
    }

    /// Feeds bytes from the client; returns what to do, in order.
    pub fn receive(&mut self, input: &[u8], actions: &mut Vec<Action>) {
        self.pending.extend_from_slice(input);
        self.process(actions);
    }

    /// The pipeline's answer to the last [`Action::Commit`].
    pub fn commit_finished(&mut self, outcome: Result<u64, CommitError>, actions: &mut Vec<Action>) {
        let State::Committing { helo, extended, .. } = std::mem::replace(&mut self.state, State::Closed) else {
            return;
        };
        self.state = State::Greeted { helo, extended };
        let reply = match outcome {
            Ok(number) => Reply::delivered(number),
            Err(CommitError::Transient) => Reply::store_failed(),
            Err(CommitError::Full) => Reply::store_full(),
            Err(CommitError::TooManyHops) => Reply::too_many_hops(),
        };
        self.reply(reply, actions);
        self.process(actions);
    }

    /// The daemon's answer to [`Action::Authenticate`].
    pub fn auth_finished(&mut self, verdict: Verdict, actions: &mut Vec<Action>) {
        let State::Authenticating { helo, extended, .. } = std::mem::replace(&mut self.state, State::Closed) else {
            return;
        };
        self.state = State::Greeted { helo, extended };
        match verdict {
            Verdict::Accepted(user) => {
                self.authenticated = Some(user);
                self.reply(Reply::auth_succeeded(), actions);
            }
            Verdict::Rejected => {
                self.auth_failures += 1;
                self.reply(Reply::auth_failed(), actions);
                if self.auth_failures >= sasl::MAX_FAILURES_PER_CONNECTION {
                    self.close_with(Reply::too_many_auth_failures(&self.config.hostname), actions);
                }
            }
            Verdict::Throttled => self.reply(Reply::auth_throttled(), actions),
        }
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
            self.paused = false;
        }
    }

    fn process(&mut self, actions: &mut Vec<Action>) {
        let mut pos = 0;
        self.round_output = 0;
        loop {
            if self.round_output >= OUTPUT_ROUND && !self.is_closed() {
                self.paused = true;
                break;
            }
            match &mut self.state {
                State::Closed | State::Committing { .. } | State::Authenticating { .. } => break,
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
                State::Auth { .. } => match self.lines.next(&self.pending, &mut pos, receiver::MAX_COMMAND_LINE) {
                    Line::NeedMore => break,
                    Line::TooLong => {
                        self.leave_auth();
                        self.reply(Reply::line_too_long(), actions);
                    }
                    Line::Complete(line) => {
                        let line = line.to_vec();
                        self.auth_response(&line, actions);
                    }
                },
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
        self.round_output = self.round_output.saturating_add(reply.as_bytes().len());
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
        let State::Data { helo, extended, sender, recipients, data } =
            std::mem::replace(&mut self.state, State::Closed)
        else {
            return;
        };
        if data.over_limit() {
            // RFC 5321 §4.5.3.1.10 allows 552 after the data; no number is used.
            self.state = State::Greeted { helo, extended };
            self.reply(Reply::too_big(), actions);
            return;
        }
        if data.starved() {
            self.state = State::Greeted { helo, extended };
            self.reply(Reply::memory_full(), actions);
            return;
        }
        let envelope = Envelope {
            helo: helo.clone(),
            extended,
            tls: self.tls_active,
            user: self.authenticated.clone(),
            client_ip: self.client_ip,
            sender,
            routes: recipients.iter().map(|(_, route)| *route).collect(),
            recipients: recipients.into_iter().map(|(address, _)| address).collect(),
        };
        let (body, share) = data.into_parts();
        let body = match body {
            Ok(body) => body,
            Err(error) => {
                log::error!("spooling a message from {}: {error}", self.client_ip.to_canonical());
                self.state = State::Greeted { helo, extended };
                let full = matches!(error.kind(), io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded);
                self.reply(if full { Reply::store_full() } else { Reply::store_failed() }, actions);
                return;
            }
        };
        actions.push(Action::Commit(Message { envelope, body }));
        self.state = State::Committing { helo, extended, _share: share };
    }

    fn execute(&mut self, command: Command, actions: &mut Vec<Action>) {
        match command {
            Command::StartTls { has_argument } => return self.start_tls(has_argument, actions),
            Command::Auth { mechanism, initial } if self.config.submission => {
                return self.start_auth(&mechanism, initial.as_deref(), actions);
            }
            Command::AuthSyntax if self.config.submission => return self.reply(Reply::auth_syntax(), actions),
            _ => {}
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
            Reply::in_transaction()
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

    /// RFC 4954 §4: `AUTH PLAIN` and `AUTH LOGIN`, with or without an initial response.
    fn start_auth(&mut self, mechanism: &str, initial: Option<&str>, actions: &mut Vec<Action>) {
        let (helo, extended) = match &self.state {
            State::Greeted { helo, extended } => (helo.clone(), *extended),
            State::Fresh => return self.reply(Reply::need_helo(), actions),
            _ => return self.reply(Reply::in_transaction(), actions),
        };
        if self.authenticated.is_some() {
            return self.reply(Reply::auth_already_done(), actions);
        }
        if self.config.tls_available && !self.tls_active {
            return self.reply(Reply::auth_needs_tls(), actions);
        }
        let step = match (mechanism, initial) {
            ("PLAIN", None) => {
                self.state = State::Auth { helo, extended, step: AuthStep::Plain };
                return self.reply(Reply::auth_offered(), actions);
            }
            ("PLAIN", Some(initial)) => {
                let credentials = sasl::decode_initial_response(initial);
                self.state = State::Greeted { helo, extended };
                return self.check_credentials(credentials, "PLAIN", actions);
            }
            ("LOGIN", None) => AuthStep::LoginUser,
            ("LOGIN", Some(user)) => match sasl::decode_login_field(user.as_bytes()) {
                Ok(user) => AuthStep::LoginPassword { user },
                Err(failure) => return self.auth_refused(failure, actions),
            },
            _ => return self.reply(Reply::auth_mechanism_unknown(), actions),
        };
        let prompt = if matches!(step, AuthStep::LoginUser) { "Username:" } else { "Password:" };
        self.state = State::Auth { helo, extended, step };
        self.reply(Reply::auth_challenge(prompt), actions);
    }

    /// The client's line in an AUTH exchange.
    fn auth_response(&mut self, line: &[u8], actions: &mut Vec<Action>) {
        let State::Auth { helo, extended, step } = std::mem::replace(&mut self.state, State::Closed) else {
            return;
        };
        self.state = State::Greeted { helo: helo.clone(), extended };
        match step {
            AuthStep::Plain => self.check_credentials(sasl::decode_continuation(line), "PLAIN", actions),
            AuthStep::LoginUser => match sasl::decode_login_field(line) {
                Ok(user) => {
                    self.state = State::Auth { helo, extended, step: AuthStep::LoginPassword { user } };
                    self.reply(Reply::auth_challenge("Password:"), actions);
                }
                Err(failure) => self.auth_refused(failure, actions),
            },
            AuthStep::LoginPassword { user } => {
                let credentials = sasl::decode_login_field(line).map(|password| Credentials { user, password });
                self.check_credentials(credentials, "LOGIN", actions);
            }
        }
    }

    fn check_credentials(
        &mut self,
        credentials: Result<Credentials, AuthFailure>,
        mechanism: &'static str,
        actions: &mut Vec<Action>,
    ) {
        match credentials {
            Ok(credentials) => {
                if let State::Greeted { helo, extended } = std::mem::replace(&mut self.state, State::Closed) {
                    self.state = State::Authenticating { helo, extended, mechanism };
                }
                self.activity = true;
                actions.push(Action::Authenticate(credentials));
            }
            Err(failure) => self.auth_refused(failure, actions),
        }
    }

    fn auth_refused(&mut self, failure: AuthFailure, actions: &mut Vec<Action>) {
        let reply = match failure {
            AuthFailure::Cancelled => Reply::auth_aborted(),
            AuthFailure::BadBase64 => Reply::auth_undecodable(),
            AuthFailure::Malformed | AuthFailure::AuthzidMismatch => Reply::auth_failed(),
        };
        self.reply(reply, actions);
    }

    /// Back to Greeted from the middle of an AUTH exchange.
    fn leave_auth(&mut self) {
        if let State::Auth { helo, extended, .. } = std::mem::replace(&mut self.state, State::Closed) {
            self.state = State::Greeted { helo, extended };
        }
    }

    fn greeted_name(state: &State) -> Option<(String, bool)> {
        match state {
            State::Greeted { helo, extended }
            | State::Mail { helo, extended, .. }
            | State::Data { helo, extended, .. }
            | State::Committing { helo, extended, .. }
            | State::Auth { helo, extended, .. }
            | State::Authenticating { helo, extended, .. } => Some((helo.clone(), *extended)),
            State::Fresh | State::Closed => None,
        }
    }

    /// Applies one command: the new state and the reply.
    fn transition(&self, state: State, command: Command) -> (State, Option<Reply>) {
        let config = &self.config;
        match (state, command) {
            (_, Command::Quit) => (State::Closed, Some(Reply::bye())),
            // RFC 5321 §4.1.4: a repeated HELO/EHLO resets the transaction.
            (_, Command::Helo(helo)) => (State::Greeted { helo, extended: false }, Some(Reply::helo(&config.hostname))),
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
            (
                state,
                Command::Expn | Command::StartTls { .. } | Command::Auth { .. } | Command::AuthSyntax | Command::Bdat,
            ) => (state, Some(Reply::not_implemented())),
            (state, Command::Unknown) => (state, Some(Reply::not_recognized())),

            (State::Fresh, Command::Mail { .. } | Command::MailSyntax)
            | (State::Fresh, Command::Rcpt { .. } | Command::RcptSyntax | Command::Data) => {
                (State::Fresh, Some(Reply::need_helo()))
            }

            (State::Greeted { helo, extended }, Command::Mail { .. })
                if config.submission && self.authenticated.is_none() =>
            {
                (State::Greeted { helo, extended }, Some(Reply::auth_required()))
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
                let reply = self.add_recipient(&sender, &path, &mut recipients);
                (State::Mail { helo, extended, sender, recipients }, Some(reply))
            }
            (state @ State::Mail { .. }, Command::RcptSyntax) => (state, Some(Reply::rcpt_syntax())),
            (State::Mail { helo, extended, sender, recipients }, Command::Data) => {
                if recipients.is_empty() {
                    (State::Mail { helo, extended, sender, recipients }, Some(Reply::need_rcpt()))
                } else {
                    let data = DataReceiver::with_budget(config.max_message_size, config.data_budget.share())
                        .spilling_to(config.spill_dir.clone());
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
        // RFC 4954 §4: with a certificate, AUTH only once the password travels encrypted.
        if self.config.submission && (self.tls_active || !self.config.tls_available) {
            extensions.push("AUTH PLAIN LOGIN".into());
        }
        extensions
    }

    fn check_sender(&self, path: &str, params: &[(String, Option<String>)]) -> Result<(), Reply> {
        // The null reverse-path `<>` is how bounces are sent (RFC 5321 §4.5.5); a user
        // of the submission service sends no bounces.
        if path.is_empty() && self.config.submission {
            return Err(Reply::null_sender_on_submission());
        }
        if !path.is_empty() && Address::parse(path, None).is_err() {
            return Err(Reply::bad_sender(path));
        }
        // A user sends as themselves (Postfix's reject_sender_login_mismatch).
        if let (Some(user), Ok(address)) = (&self.authenticated, Address::parse(path, None)) {
            if address.key() != *user {
                return Err(Reply::sender_not_owned(path, user));
            }
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

    /// The operator's line for a refused recipient (docs/SECURITY.md lists the formats).
    fn log_refused(&self, recipient: &Address, reason: &str) {
        log::info!(
            "recipient refused: client={} user={} to=<{recipient}> reason=\"{reason}\"",
            self.client_ip.to_canonical(),
            self.authenticated.as_deref().unwrap_or("-"),
        );
    }

    fn add_recipient(&self, sender: &str, path: &str, recipients: &mut Vec<(String, Accepted)>) -> Reply {
        let address = match Address::parse(path, Some(self.directory.default_domain())) {
            Ok(address) => address,
            Err(AddressError::Empty | AddressError::TooLong | AddressError::BadCharacter | AddressError::BadShape) => {
                return Reply::bad_recipient(path);
            }
        };
        if recipients.len() >= self.config.max_recipients {
            return Reply::too_many_recipients();
        }
        let route = self.directory.route_from(sender, &address);
        match route {
            Route::UnknownUser => {
                self.log_refused(&address, "User unknown");
                return Reply::user_unknown(path);
            }
            // Only an authenticated user is relayed for; never an open relay.
            Route::Remote if self.authenticated.is_none() => {
                self.log_refused(&address, "Relay access denied");
                return Reply::relay_denied(path);
            }
            Route::Local | Route::Peer | Route::Remote => {}
        }
        let text = address.to_string();
        // The same recipient twice is one delivery (one Delivered-To, one copy).
        if let Some(accepted) =
            route.accepted().filter(|_| !recipients.iter().any(|(r, _)| r.eq_ignore_ascii_case(&text)))
        {
            recipients.push((text, accepted));
        }
        Reply::recipient_ok()
    }
}

#[cfg(test)]
mod tests;
