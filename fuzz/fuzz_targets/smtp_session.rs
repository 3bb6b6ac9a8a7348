//! The SMTP server session (`engine::smtp::SmtpSession`): no input makes it panic, and
//! it answers the same bytes the same way however they are cut into reads.
//!
//! Each input (layout in `common.rs`) is run twice: the stream fed whole (one
//! `receive`), and fed in the chunks the input chooses. A paused session is resumed and
//! every effect is answered at once and deterministically (commits by count; AUTH by
//! password: `pw` is accepted for a user name that is an address, `slow` throttled,
//! anything else rejected), and the two runs must produce the same events: replies,
//! committed messages (envelope and body), credentials, STARTTLS and close. Each reply
//! must also be a well-formed SMTP reply whose text has no control character and no 8-bit
//! byte, and nothing may be sent after a close.
//!
//! Flags: bit 0 STARTTLS offered, bit 1 submission (AUTH required), bit 2 a 64-octet
//! message size limit, bit 3 at most 3 recipients, bit 4 at most 5 errors.
#![no_main]

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use common::Input;
use engine::address::Address;
use engine::directory::{Directory, Route};
use engine::domain::Domain;
use engine::envelope::CommitError;
use engine::sasl::Verdict;
use engine::smtp::{Action, Reply, SmtpConfig, SmtpSession};
use libfuzzer_sys::fuzz_target;

/// `example.org` is local (users whose local part has an even length exist), `peer.test`
/// belongs to a peer, anything else is remote.
struct FakeDirectory;

impl Directory for FakeDirectory {
    fn route(&self, recipient: &Address) -> Route {
        if Domain::of(recipient).as_str() == "example.org" {
            if recipient.local().len() % 2 == 0 {
                Route::Local
            } else {
                Route::UnknownUser
            }
        } else if Domain::of(recipient).as_str() == "peer.test" {
            Route::Peer
        } else {
            Route::Remote
        }
    }

    fn default_domain(&self) -> &str {
        "example.org"
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Event {
    Send(String),
    Commit { envelope: String, body: Vec<u8> },
    Authenticate { user: String, password: String },
    StartTls,
    Close,
}

struct Run {
    session: SmtpSession,
    events: Vec<Event>,
    commits: u64,
    tls_started: bool,
    closed: bool,
}

impl Run {
    fn new(config: &Arc<SmtpConfig>) -> Run {
        let session = SmtpSession::new(config.clone(), Arc::new(FakeDirectory), IpAddr::V4(Ipv4Addr::LOCALHOST));
        let greeting = session.greeting();
        check_reply(&greeting);
        Run { session, events: Vec::new(), commits: 0, tls_started: false, closed: false }
    }

    fn receive(&mut self, bytes: &[u8]) {
        let mut actions = Vec::new();
        self.session.receive(bytes, &mut actions);
        self.apply(actions);
    }

    /// Records the actions and answers the effects, until nothing is left to answer; like
    /// the daemon, resumes a paused session (after "sending" its replies) at once.
    fn apply(&mut self, mut actions: Vec<Action>) {
        loop {
            self.apply_round(actions);
            if !self.session.is_paused() {
                break;
            }
            actions = Vec::new();
            self.session.resume(&mut actions);
        }
        assert_eq!(self.closed, self.session.is_closed(), "Close action and is_closed disagree");
    }

    fn apply_round(&mut self, mut actions: Vec<Action>) {
        while !actions.is_empty() {
            let mut next = Vec::new();
            for action in actions {
                match action {
                    Action::Send(reply) => {
                        assert!(!self.closed, "reply after close: {reply:?}");
                        check_reply(&reply);
                        self.events.push(Event::Send(String::from_utf8_lossy(reply.as_bytes()).into_owned()));
                    }
                    Action::Commit(message) => {
                        assert!(!self.closed, "commit after close");
                        assert!(!message.envelope.recipients.is_empty(), "a message without recipients");
                        self.events.push(Event::Commit {
                            envelope: format!("{:?}", message.envelope),
                            body: message.body.in_memory().expect("no spill directory: in memory").to_vec(),
                        });
                        self.commits += 1;
                        let outcome = match self.commits % 5 {
                            0 => Err(CommitError::Transient),
                            3 => Err(CommitError::Full),
                            4 => Err(CommitError::TooManyHops),
                            _ => Ok(self.commits),
                        };
                        self.session.commit_finished(outcome, &mut next);
                    }
                    Action::Authenticate(credentials) => {
                        assert!(!self.closed, "authenticate after close");
                        // As maild's user table does: only an address can be a user, and
                        // the verdict carries its key.
                        let verdict = match (credentials.password.as_str(), Address::parse(&credentials.user, None)) {
                            ("pw", Ok(address)) => Verdict::Accepted(address.key()),
                            ("slow", _) => Verdict::Throttled,
                            _ => Verdict::Rejected,
                        };
                        self.events
                            .push(Event::Authenticate { user: credentials.user, password: credentials.password });
                        self.session.auth_finished(verdict, &mut next);
                    }
                    Action::StartTls => {
                        assert!(!self.closed, "STARTTLS after close");
                        self.events.push(Event::StartTls);
                        self.tls_started = true;
                    }
                    Action::Close => {
                        assert!(!self.closed, "closed twice");
                        self.events.push(Event::Close);
                        self.closed = true;
                    }
                }
            }
            actions = next;
        }
    }
}

impl common::Run for Run {
    fn receive(&mut self, bytes: &[u8]) {
        Run::receive(self, bytes)
    }

    fn tls_started(&self) -> bool {
        self.tls_started
    }

    fn time_out(&mut self) {
        let mut actions = Vec::new();
        self.session.timed_out(&mut actions);
        self.apply(actions);
        assert!(self.session.is_closed());
    }
}

/// `ddd text CRLF`, or `ddd-text CRLF` lines ending in a `ddd ` one, all with one code.
fn check_reply(reply: &Reply) {
    let wire = reply.as_bytes();
    assert!(wire.ends_with(b"\r\n"), "reply without CRLF: {reply:?}");
    let lines: Vec<&[u8]> = wire[..wire.len() - 2].split(|&b| b == b'\n').collect();
    let code = reply.code().to_string();
    assert!((200..600).contains(&reply.code()), "reply code {reply:?}");
    for (i, line) in lines.iter().enumerate() {
        let line = if i + 1 < lines.len() {
            line.strip_suffix(b"\r").unwrap_or_else(|| panic!("LF without CR in {reply:?}"))
        } else {
            line
        };
        assert!(line.starts_with(code.as_bytes()), "reply line with another code: {reply:?}");
        let sep = if i + 1 == lines.len() { b' ' } else { b'-' };
        assert_eq!(line.get(3), Some(&sep), "bad separator in {reply:?}");
        // RFC 5321 §4.2: the text is HT and printable ASCII: no control character
        // (finding 1, fixed) and no 8-bit byte (finding 4, fixed).
        let text = line.get(4..).unwrap_or_default();
        assert!(text.iter().all(|&b| b == b'\t' || b >= 32 && b != 127), "control character in {reply:?}");
        assert!(text.iter().all(|&b| b < 127), "8-bit byte in {reply:?}");
    }
}

fuzz_target!(|data: &[u8]| {
    let Some(input) = Input::parse(data) else { return };
    let mut config = SmtpConfig::new("mx.test", if input.flag(2) { 64 } else { 4096 });
    config.tls_available = input.flag(0);
    config.submission = input.flag(1);
    if input.flag(3) {
        config.max_recipients = 3;
    }
    if input.flag(4) {
        config.max_errors = 5;
    }
    let config = Arc::new(config);

    let mut whole = Run::new(&config);
    common::feed(&mut whole, &input, true);
    let mut chunked = Run::new(&config);
    common::feed(&mut chunked, &input, false);
    assert_eq!(whole.events, chunked.events, "whole and chunked input differ");
});
