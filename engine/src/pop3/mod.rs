//! The POP3 server session (RFC 1939, RFC 2449, RFC 5034) as a sans-I/O state machine.
//!
//! Bytes go in through [`Pop3Session::receive`]; replies and effects come out as
//! [`Pop3Action`]s. The session never touches a socket, a clock or the store. The daemon
//! checks passwords and loads the maildrop when asked with [`Pop3Action::Login`], answering
//! with [`Pop3Session::login_finished`]; it streams messages for [`Pop3Action::Retrieve`]
//! through a [`MessageWriter`], a body in pieces; and it removes deleted messages durably for
//! [`Pop3Action::Commit`], answering with [`Pop3Session::commit_finished`]. That is the one
//! place where "deletions apply only at QUIT, durably" is decided: a session that ends any
//! other way (timeout, shutdown, dropped connection) never reaches UPDATE and deletes
//! nothing (RFC 1939 §6).
//!
//! ```text
//!  connect
//!     │
//!     ▼             PASS (after USER), AUTH PLAIN <credentials>
//!  Authorization ──────────────────────────────────────────────► LoggingIn
//!   │  ▲  │  ▲                                                     │    │
//!   │  │  │  └───── -ERR [AUTH] / [IN-USE] / [SYS/TEMP] ◄──────────┘    │ login_finished(Ok)
//!   │  │  │ AUTH PLAIN: "+ "                                            ▼
//!   │  │  └─────► SaslResponse ── base64 line ──► LoggingIn        Transaction ◄─ STAT LIST
//!   │  └─ `*`, bad base64 ─┘                                       │    │    UIDL RETR TOP
//!   │ QUIT                                                         │    │    DELE NOOP RSET
//!   ▼                                     QUIT, nothing marked     │    │ QUIT, some marked
//!  Closed ◄────────────────────────────────────────────────────────┘    ▼
//!     ▲ ◄──────────────── commit_finished (ok or not) ─────────────── Update
//! ```
//!
//! `timed_out` and `shutting_down` close from any state; STLS in AUTHORIZATION starts TLS
//! and begins AUTHORIZATION afresh (RFC 2595 §4).
//!
//! Three layers: [`receiver`] cuts bytes into lines, [`command`] parses a line, and this
//! module applies it to the state. [`reply`] holds every reply's wording and [`message`]
//! writes RETR and TOP responses.

pub mod client;
pub mod command;
pub mod message;
pub mod receiver;
pub mod reply;

use crate::sasl;
use std::fmt;
use std::sync::Arc;

use command::{AuthFailure, Command, Credentials, Msg};
pub use message::{write_message, MessageWriter};
use receiver::{Line, LineReceiver, MAX_COMMAND_LINE, MAX_SASL_LINE};
use reply::Reply;

/// Input the session keeps while the daemon answers a login, beyond which it cannot keep
/// the command stream intact (see [`Pop3Session::receive`]). Enough for dozens of
/// pipelined commands (RFC 2449 §6.6).
pub const MAX_QUEUED: usize = 8 * 1024;

/// Names and switches a session needs; shared by all sessions of a listener.
#[derive(Clone, Debug)]
pub struct Pop3Config {
    pub hostname: String,
    /// Advertise STLS in CAPA and accept it (RFC 2595 §4). When false, STLS gets `-ERR`.
    pub tls_available: bool,
}

/// One message of a maildrop, as the daemon loaded it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MaildropEntry {
    /// The message's global sequence number, which is also its UIDL (CONTRACT §6).
    pub number: u64,
    /// The exact octets RETR sends before dot-stuffing and without the terminating
    /// `.CRLF`: what LIST and STAT report.
    pub size: u64,
}

/// Why the daemon did not open a maildrop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoginError {
    /// Unknown user or wrong password: the two are not told apart.
    BadCredentials,
    /// The maildrop is open in another session.
    Locked,
    /// The store could not be read.
    Unavailable,
    /// Not checked: too many attempts from this address or for this account under way.
    Throttled,
}

/// What the daemon must do for the session, in order.
#[derive(Clone, PartialEq, Eq)]
pub enum Pop3Action {
    /// Write these bytes to the client.
    Send(Vec<u8>),
    /// Check the password, lock the maildrop and load it, then call
    /// [`Pop3Session::login_finished`]. The session takes no more input until then.
    Login { user: String, password: String },
    /// RETR (`top_lines` None) or TOP (`Some(k)`) of the message with this global
    /// number: the daemon writes the whole response with a [`MessageWriter`].
    Retrieve { number: u64, size: u64, top_lines: Option<usize> },
    /// QUIT in TRANSACTION with messages marked deleted (their global numbers): remove
    /// them durably, then call [`Pop3Session::commit_finished`].
    Commit { deleted: Vec<u64> },
    /// After writing what came before, run the TLS handshake as server on this
    /// connection; everything after it is read and written through TLS (RFC 2595 §4). If
    /// the handshake fails, close the connection. Only emitted when
    /// [`Pop3Config::tls_available`] is true.
    StartTls,
    /// Close the connection after writing what came before.
    Close,
}

impl fmt::Debug for Pop3Action {
    // Written by hand so that a `{:?}` in a log never shows a password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pop3Action::Send(bytes) => write!(f, "Send({:?})", String::from_utf8_lossy(bytes)),
            Pop3Action::Login { user, .. } => write!(f, "Login {{ user: {user:?}, password: <redacted> }}"),
            Pop3Action::Retrieve { number, size, top_lines } => {
                write!(f, "Retrieve {{ number: {number}, size: {size}, top_lines: {top_lines:?} }}")
            }
            Pop3Action::Commit { deleted } => write!(f, "Commit {{ deleted: {deleted:?} }}"),
            Pop3Action::StartTls => f.write_str("StartTls"),
            Pop3Action::Close => f.write_str("Close"),
        }
    }
}

/// The maildrop of a session in TRANSACTION: the messages as loaded and the deletion marks.
#[derive(Debug)]
struct Maildrop {
    entries: Vec<MaildropEntry>,
    /// One mark per entry; RFC 1939 §5: marked messages may not be referred to again.
    deleted: Vec<bool>,
    /// Messages not marked, and their octets: what STAT and LIST report.
    live_count: usize,
    live_octets: u64,
}

impl Maildrop {
    fn new(entries: Vec<MaildropEntry>) -> Maildrop {
        let live_octets = entries.iter().fold(0u64, |sum, e| sum.saturating_add(e.size));
        Maildrop { deleted: vec![false; entries.len()], live_count: entries.len(), live_octets, entries }
    }

    /// The index into `entries` of message number `msg`. RFC 1939 §5: messages are
    /// numbered from 1 in maildrop order, and the numbers do not change in a session.
    fn index(&self, msg: Msg) -> Option<usize> {
        let Msg::Number(number) = msg else { return None };
        let index = usize::try_from(number).ok()?.checked_sub(1)?;
        (index < self.entries.len()).then_some(index)
    }

    /// A message that exists and is not marked deleted, with its 1-based number.
    fn live(&self, msg: Msg) -> Option<(usize, MaildropEntry)> {
        let index = self.index(msg)?;
        if self.deleted.get(index).copied().unwrap_or(true) {
            return None;
        }
        Some((index + 1, *self.entries.get(index)?))
    }

    fn delete(&mut self, msg: Msg) -> Reply {
        let Some(index) = self.index(msg) else { return Reply::no_such_message() };
        match (self.deleted.get_mut(index), self.entries.get(index)) {
            (Some(true), _) => Reply::already_deleted(index + 1),
            (Some(mark), Some(entry)) => {
                *mark = true;
                self.live_count = self.live_count.saturating_sub(1);
                self.live_octets = self.live_octets.saturating_sub(entry.size);
                Reply::deleted(index + 1)
            }
            _ => Reply::no_such_message(),
        }
    }

    /// RFC 1939 §5 RSET: unmark every message.
    fn reset(&mut self) {
        *self = Maildrop::new(std::mem::take(&mut self.entries));
    }

    /// The global numbers of the marked messages, oldest first.
    fn deleted_numbers(&self) -> Vec<u64> {
        self.entries.iter().zip(&self.deleted).filter(|(_, &deleted)| deleted).map(|(e, _)| e.number).collect()
    }
}

/// The state of a POP3 session (RFC 1939 §3); each variant holds only what is valid in it.
#[derive(Debug)]
enum State {
    /// AUTHORIZATION, with the name from USER once given (RFC 1939 §7: PASS needs it).
    Authorization {
        user: Option<String>,
    },
    /// AUTHORIZATION after `AUTH PLAIN` without an initial response: `+ ` was sent and
    /// the client's next line is its base64 answer, not a command (RFC 5034 §4).
    SaslResponse,
    /// Credentials handed to the daemon; waiting for `login_finished`.
    LoggingIn {
        user: String,
        /// `USER` (USER/PASS) or `PLAIN` (AUTH PLAIN), for the daemon's log.
        mechanism: &'static str,
    },
    Transaction {
        user: String,
        maildrop: Maildrop,
    },
    /// UPDATE (RFC 1939 §6): QUIT with deletions, waiting for `commit_finished`.
    Update {
        user: String,
        left: usize,
    },
    Closed,
}

/// What the session does with the rest of the buffered input after a command.
#[derive(Debug, PartialEq, Eq)]
enum After {
    Continue,
    /// Drop it: after STLS, bytes sent before the handshake must not be taken as commands
    /// sent under TLS (the STARTTLS command injection of CVE-2011-0411).
    DiscardInput,
}

/// One line of client input, parsed for the state it arrived in.
enum Input {
    Command(Command),
    SaslResponse(Result<Credentials, AuthFailure>),
}

pub struct Pop3Session {
    config: Arc<Pop3Config>,
    state: State,
    lines: LineReceiver,
    /// Input not yet consumed: a partial line, or what arrived behind a command that is
    /// waiting for the daemon (RFC 2449 §6.6 PIPELINING).
    pending: Vec<u8>,
    /// Set when input arrived during a login past [`MAX_QUEUED`] and had to be dropped.
    overflowed: bool,
    /// True after STLS: no second STLS (RFC 2595 §4).
    tls_active: bool,
    /// The client is on this host, where no one can listen in on the connection.
    local_client: bool,
    /// Set when a command got `+OK` or `+ `; restarts the daemon's idle timer.
    activity: bool,
    /// Failed password checks in this session (see [`sasl::MAX_FAILURES_PER_CONNECTION`]).
    login_failures: u32,
    /// A multi-line LIST or UIDL answer being sent a chunk at a time.
    listing: Option<Listing>,
    /// Reply octets produced since the daemon last fed or resumed the session.
    round_output: usize,
    /// Set when a round stopped at [`OUTPUT_ROUND`] with work left: the daemon sends what
    /// it has, then calls [`Pop3Session::resume`] before it reads more.
    paused: bool,
}

/// Reply octets one round may produce before the session pauses, so that a client that
/// pipelines commands without reading the answers holds only this much of our memory.
pub const OUTPUT_ROUND: usize = 64 * 1024;

/// Octets of LIST or UIDL lines sent as one piece.
const LISTING_CHUNK: usize = 16 * 1024;

/// A LIST or UIDL answer in progress: the next maildrop index to list.
#[derive(Debug)]
struct Listing {
    uids: bool,
    next: usize,
}

impl Pop3Session {
    /// `local_client`: the client connected from this host (loopback).
    pub fn new(config: Arc<Pop3Config>, local_client: bool) -> Pop3Session {
        Pop3Session {
            config,
            state: State::Authorization { user: None },
            lines: LineReceiver::default(),
            pending: Vec::new(),
            overflowed: false,
            tls_active: false,
            local_client,
            activity: false,
            login_failures: 0,
            listing: None,
            round_output: 0,
            paused: false,
        }
    }

    /// Whether a password may be sent now. With a certificate to offer, a client on
    /// another host must use STLS first, so its password never crosses the network in the
    /// clear (RFC 2595 §2.2; Dovecot's `disable_plaintext_auth`, which also trusts
    /// connections from the same host).
    fn plaintext_login_allowed(&self) -> bool {
        !self.config.tls_available || self.tls_active || self.local_client
    }

    pub fn greeting(&self) -> Vec<u8> {
        Reply::greeting(&self.config.hostname).into_bytes()
    }

    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed)
    }

    /// The user name as the client gave it, once logged in (TRANSACTION and UPDATE).
    pub fn user(&self) -> Option<&str> {
        match &self.state {
            State::Transaction { user, .. } | State::Update { user, .. } => Some(user),
            _ => None,
        }
    }

    /// Returns (and clears) whether a command got a positive answer since the last call.
    pub fn take_activity(&mut self) -> bool {
        std::mem::take(&mut self.activity)
    }

    /// The mechanism of the [`Pop3Action::Login`] being answered, for the log.
    pub fn login_mechanism(&self) -> &'static str {
        match self.state {
            State::LoggingIn { mechanism, .. } => mechanism,
            _ => "-",
        }
    }

    /// The connection is in TLS from its first byte (port 995): no STLS, and passwords
    /// may be sent.
    pub fn tls_from_the_start(&mut self) {
        self.tls_active = true;
    }

    /// True when the last round stopped with work left (see [`OUTPUT_ROUND`]).
    pub fn is_paused(&self) -> bool {
        self.paused
    }

    /// Continues after a pause, once the daemon has sent what the last round produced.
    pub fn resume(&mut self, actions: &mut Vec<Pop3Action>) {
        if std::mem::take(&mut self.paused) {
            self.process(actions);
        }
    }

    /// Feeds bytes from the client; pushes what to do, in order.
    ///
    /// Memory stays bounded whatever the client sends: a partial command line is at most
    /// 255 octets (longer ones are dropped as they stream in), and while a login is with
    /// the daemon the session keeps what was already read plus at most [`MAX_QUEUED`]
    /// octets more. Past that, input is dropped and, the command stream being broken, the
    /// session closes right after answering the login.
    pub fn receive(&mut self, input: &[u8], actions: &mut Vec<Pop3Action>) {
        match self.state {
            // RFC 1939 §6: after QUIT the server reads no more commands.
            State::Closed | State::Update { .. } => {}
            State::LoggingIn { .. } => {
                if self.pending.len().saturating_add(input.len()) > MAX_QUEUED {
                    self.overflowed = true;
                } else {
                    self.pending.extend_from_slice(input);
                }
            }
            State::Authorization { .. } | State::SaslResponse | State::Transaction { .. } => {
                self.pending.extend_from_slice(input);
                self.process(actions);
            }
        }
    }

    /// The daemon's answer to the last [`Pop3Action::Login`].
    pub fn login_finished(&mut self, outcome: Result<Vec<MaildropEntry>, LoginError>, actions: &mut Vec<Pop3Action>) {
        let user = match std::mem::replace(&mut self.state, State::Closed) {
            State::LoggingIn { user, .. } => user,
            other => {
                self.state = other;
                return;
            }
        };
        match outcome {
            Ok(entries) => {
                let maildrop = Maildrop::new(entries);
                self.reply(Reply::logged_in(&user, maildrop.live_count, maildrop.live_octets), actions);
                self.state = State::Transaction { user, maildrop };
            }
            Err(error) => {
                // RFC 1939 §7: after a failed PASS the client may start over with USER;
                // the name given before is forgotten, so it must.
                self.state = State::Authorization { user: None };
                self.reply(
                    match error {
                        LoginError::BadCredentials => Reply::bad_credentials(),
                        LoginError::Locked => Reply::locked(),
                        LoginError::Unavailable => Reply::maildrop_unavailable(),
                        LoginError::Throttled => Reply::login_throttled(),
                    },
                    actions,
                );
                if error == LoginError::BadCredentials {
                    self.login_failures += 1;
                    if self.login_failures >= sasl::MAX_FAILURES_PER_CONNECTION {
                        self.close_with(Reply::too_many_login_failures(), actions);
                        return;
                    }
                }
            }
        }
        if std::mem::take(&mut self.overflowed) {
            self.close_with(Reply::too_much_input(), actions);
            return;
        }
        self.process(actions);
    }

    /// The daemon's answer to [`Pop3Action::Commit`]: true once the deletions are durable.
    pub fn commit_finished(&mut self, ok: bool, actions: &mut Vec<Pop3Action>) {
        let State::Update { left, .. } = self.state else { return };
        // RFC 1939 §6: the reply says whether the deletions were made; either way the
        // session ends.
        self.close_with(if ok { Reply::signing_off(left) } else { Reply::commit_failed() }, actions);
    }

    /// No valid command within the autologout time (RFC 1939 §3). Nothing is deleted.
    pub fn timed_out(&mut self, actions: &mut Vec<Pop3Action>) {
        self.close_with(Reply::timeout(), actions);
    }

    /// The server is stopping. Nothing is deleted.
    pub fn shutting_down(&mut self, actions: &mut Vec<Pop3Action>) {
        self.close_with(Reply::shutting_down(), actions);
    }

    fn close_with(&mut self, reply: Reply, actions: &mut Vec<Pop3Action>) {
        if !self.is_closed() {
            self.reply(reply, actions);
            actions.push(Pop3Action::Close);
            self.state = State::Closed;
            self.pending = Vec::new();
            self.listing = None;
            self.paused = false;
        }
    }

    fn reply(&mut self, reply: Reply, actions: &mut Vec<Pop3Action>) {
        if reply.is_positive() {
            self.activity = true;
        }
        self.send(reply.into_bytes(), actions);
    }

    fn send(&mut self, bytes: Vec<u8>, actions: &mut Vec<Pop3Action>) {
        self.round_output = self.round_output.saturating_add(bytes.len());
        actions.push(Pop3Action::Send(bytes));
    }

    /// Sends the next chunk of the listing in progress, and its end once it is complete.
    fn continue_listing(&mut self, actions: &mut Vec<Pop3Action>) {
        let (Some(listing), State::Transaction { maildrop, .. }) = (&mut self.listing, &self.state) else {
            self.listing = None;
            return;
        };
        let mut chunk = Vec::with_capacity(LISTING_CHUNK + 64);
        while chunk.len() < LISTING_CHUNK {
            let Some((entry, deleted)) = maildrop.entries.get(listing.next).zip(maildrop.deleted.get(listing.next))
            else {
                chunk.extend_from_slice(b".\r\n");
                self.listing = None;
                break;
            };
            listing.next += 1;
            if !deleted {
                let value = if listing.uids { entry.number } else { entry.size };
                Reply::listing_line(&mut chunk, listing.next, value);
            }
        }
        self.send(chunk, actions);
    }

    /// Runs every complete line in `pending` until the input runs out or the session
    /// waits for the daemon, then keeps only what is left.
    fn process(&mut self, actions: &mut Vec<Pop3Action>) {
        let mut pos = 0;
        self.round_output = 0;
        loop {
            if self.round_output >= OUTPUT_ROUND {
                self.paused = true;
                break;
            }
            if self.listing.is_some() {
                self.continue_listing(actions);
                continue;
            }
            let limit = match self.state {
                State::Authorization { .. } | State::Transaction { .. } => MAX_COMMAND_LINE,
                State::SaslResponse => MAX_SASL_LINE,
                State::LoggingIn { .. } | State::Update { .. } | State::Closed => break,
            };
            let input = match self.lines.next(&self.pending, &mut pos, limit) {
                Line::NeedMore => break,
                Line::TooLong => {
                    self.line_too_long(actions);
                    continue;
                }
                Line::Complete(line) if matches!(self.state, State::SaslResponse) => {
                    Input::SaslResponse(crate::sasl::decode_continuation(line))
                }
                Line::Complete(line) => Input::Command(Command::parse(line)),
            };
            if self.execute(input, actions) == After::DiscardInput {
                pos = self.pending.len();
                break;
            }
        }
        if matches!(self.state, State::Closed | State::Update { .. }) {
            // Whatever followed QUIT is never read (RFC 1939 §6).
            self.pending = Vec::new();
        } else {
            self.pending.drain(..pos.min(self.pending.len()));
        }
    }

    fn line_too_long(&mut self, actions: &mut Vec<Pop3Action>) {
        if matches!(self.state, State::SaslResponse) {
            // The answer to AUTH is its -ERR: the exchange is over.
            self.state = State::Authorization { user: None };
            self.reply(Reply::auth_line_too_long(), actions);
        } else {
            self.reply(Reply::line_too_long(), actions);
        }
    }

    /// Applies one line of input to the state.
    fn execute(&mut self, input: Input, actions: &mut Vec<Pop3Action>) -> After {
        let state = std::mem::replace(&mut self.state, State::Closed);
        let mut after = After::Continue;
        self.state = match (state, input) {
            (State::Closed, _) => State::Closed,

            // Any state that reads commands.
            (state, Input::Command(Command::Capa)) => {
                let stls =
                    self.config.tls_available && !self.tls_active && matches!(state, State::Authorization { .. });
                self.reply(Reply::capabilities(stls, self.plaintext_login_allowed()), actions);
                state
            }
            (state, Input::Command(Command::Syntax(usage))) => {
                self.reply(Reply::syntax(usage), actions);
                state
            }
            (state, Input::Command(Command::Unknown)) => {
                self.reply(Reply::unknown_command(), actions);
                state
            }

            // AUTHORIZATION (RFC 1939 §4, §7; RFC 5034 §4; RFC 2595 §4).
            (State::Authorization { .. }, Input::Command(Command::Quit)) => {
                self.reply(Reply::bye(), actions);
                actions.push(Pop3Action::Close);
                State::Closed
            }
            (
                state @ State::Authorization { .. },
                Input::Command(Command::User(_) | Command::Pass(_) | Command::AuthPlain(_)),
            ) if !self.plaintext_login_allowed() => {
                self.reply(Reply::plaintext_disallowed(), actions);
                state
            }
            (State::Authorization { .. }, Input::Command(Command::User(name))) => {
                // A second USER replaces the first, as in Dovecot; RFC 1939 §7 only
                // allows one after a failure, but refusing it helps no one.
                self.reply(Reply::user_accepted(), actions);
                State::Authorization { user: Some(name) }
            }
            (State::Authorization { user: Some(user) }, Input::Command(Command::Pass(password))) => {
                actions.push(Pop3Action::Login { user: user.clone(), password });
                State::LoggingIn { user, mechanism: "USER" }
            }
            (State::Authorization { user: None }, Input::Command(Command::Pass(_))) => {
                self.reply(Reply::need_user(), actions);
                State::Authorization { user: None }
            }
            (state @ State::Authorization { .. }, Input::Command(Command::AuthList)) => {
                self.reply(Reply::mechanisms(), actions);
                state
            }
            (State::Authorization { .. }, Input::Command(Command::AuthPlain(None))) => {
                self.reply(Reply::continuation(), actions);
                State::SaslResponse
            }
            (State::Authorization { .. }, Input::Command(Command::AuthPlain(Some(response))))
            | (State::SaslResponse, Input::SaslResponse(response)) => match response {
                Ok(Credentials { user, password }) => {
                    actions.push(Pop3Action::Login { user: user.clone(), password });
                    State::LoggingIn { user, mechanism: "PLAIN" }
                }
                Err(failure) => {
                    self.reply(
                        match failure {
                            AuthFailure::Cancelled => Reply::auth_cancelled(),
                            AuthFailure::BadBase64 => Reply::bad_base64(),
                            AuthFailure::Malformed => Reply::malformed_plain(),
                            AuthFailure::AuthzidMismatch => Reply::authzid_mismatch(),
                        },
                        actions,
                    );
                    State::Authorization { user: None }
                }
            },
            (state @ State::Authorization { .. }, Input::Command(Command::AuthOther)) => {
                self.reply(Reply::unsupported_mechanism(), actions);
                state
            }
            (state @ State::Authorization { .. }, Input::Command(Command::Stls)) => {
                if !self.config.tls_available {
                    self.reply(Reply::stls_unavailable(), actions);
                    state
                } else if self.tls_active {
                    self.reply(Reply::already_tls(), actions);
                    state
                } else {
                    self.reply(Reply::stls_ok(), actions);
                    actions.push(Pop3Action::StartTls);
                    self.tls_active = true;
                    after = After::DiscardInput;
                    // RFC 2595 §4: the server forgets what the client said before TLS,
                    // the USER name included.
                    State::Authorization { user: None }
                }
            }

            // TRANSACTION (RFC 1939 §5, §7).
            (State::Transaction { user, maildrop }, Input::Command(command)) => {
                self.transaction(user, maildrop, command, actions)
            }

            // Commands of the wrong state: TRANSACTION commands before login, and USER,
            // PASS, AUTH, STLS after it.
            (state, Input::Command(_)) => {
                self.reply(Reply::wrong_state(), actions);
                state
            }
            // A SASL response arrives only in SaslResponse, handled above.
            (state, Input::SaslResponse(_)) => state,
        };
        after
    }

    fn transaction(
        &mut self,
        user: String,
        mut maildrop: Maildrop,
        command: Command,
        actions: &mut Vec<Pop3Action>,
    ) -> State {
        let reply = match command {
            Command::Stat => Reply::stat(maildrop.live_count, maildrop.live_octets),
            Command::List(None) => {
                // The lines follow a chunk at a time (see `continue_listing`).
                self.listing = Some(Listing { uids: false, next: 0 });
                Reply::listing_header(maildrop.live_count, maildrop.live_octets)
            }
            Command::List(Some(msg)) => match maildrop.live(msg) {
                Some((msg, entry)) => Reply::list_one(msg, entry.size),
                None => Reply::no_such_message(),
            },
            Command::Uidl(None) => {
                self.listing = Some(Listing { uids: true, next: 0 });
                Reply::unique_ids_header()
            }
            Command::Uidl(Some(msg)) => match maildrop.live(msg) {
                Some((msg, entry)) => Reply::unique_id(msg, entry.number),
                None => Reply::no_such_message(),
            },
            Command::Retr(msg) | Command::Top { msg, .. } => match maildrop.live(msg) {
                Some((_, entry)) => {
                    let top_lines = match command {
                        Command::Top { lines, .. } => Some(lines),
                        _ => None,
                    };
                    // The daemon writes the +OK with the message; it counts as one, and
                    // as output of this round.
                    self.activity = true;
                    self.round_output = self.round_output.saturating_add(entry.size as usize);
                    actions.push(Pop3Action::Retrieve { number: entry.number, size: entry.size, top_lines });
                    return State::Transaction { user, maildrop };
                }
                None => Reply::no_such_message(),
            },
            Command::Dele(msg) => maildrop.delete(msg),
            Command::Noop => Reply::ok(),
            Command::Rset => {
                maildrop.reset();
                Reply::ok()
            }
            Command::Quit => {
                let deleted = maildrop.deleted_numbers();
                if deleted.is_empty() {
                    self.reply(Reply::signing_off(maildrop.live_count), actions);
                    actions.push(Pop3Action::Close);
                    return State::Closed;
                }
                // RFC 1939 §6: UPDATE. The +OK waits until the deletions are durable.
                actions.push(Pop3Action::Commit { deleted });
                return State::Update { user, left: maildrop.live_count };
            }
            Command::User(_)
            | Command::Pass(_)
            | Command::AuthList
            | Command::AuthPlain(_)
            | Command::AuthOther
            | Command::Stls => Reply::wrong_state(),
            // Answered in `execute` for every state; listed so the match stays exhaustive.
            Command::Capa => Reply::capabilities(false, true),
            Command::Syntax(usage) => Reply::syntax(usage),
            Command::Unknown => Reply::unknown_command(),
        };
        self.reply(reply, actions);
        State::Transaction { user, maildrop }
    }
}

#[cfg(test)]
mod tests;
