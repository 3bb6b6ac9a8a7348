//! The POP3 server session (`engine::pop3::Pop3Session`): no input makes it panic, and
//! it answers the same bytes the same way however they are cut into reads.
//!
//! Each input (layout in `common.rs`) is run twice: the stream fed whole (one
//! `receive`), and fed in the chunks the input chooses. A paused session is resumed and
//! every effect is answered at once and deterministically, and the two runs must produce
//! the same events: output (compared as the bytes between other events), logins,
//! retrievals, commits, STLS and close. Output is whole lines ending in CRLF of at most
//! 512 octets with no other control character and no 8-bit byte, nothing may be sent
//! after a close, and every RETR or TOP is written
//! with `write_message` from a canned maildrop and checked to unstuff to the message (or,
//! for TOP, a prefix of it).
//!
//! Logins: password `pw` opens a maildrop of three messages, `empty` an empty one,
//! `locked`, `down` and `slow` fail as locked, unavailable and throttled, anything else
//! is a bad password. A commit fails when it deletes message 103.
//!
//! Flags: bit 0 STLS offered, bit 1 the client is local (plaintext login allowed).
#![no_main]

mod common;

use std::sync::Arc;

use common::Input;
use engine::pop3::{write_message, LoginError, MaildropEntry, Pop3Action, Pop3Config, Pop3Session};
use libfuzzer_sys::fuzz_target;

/// The canned maildrop: global number and the message in the parts the daemon writes
/// (Return-Path line, trace header, body).
const MESSAGES: [(u64, [&[u8]; 3]); 3] = [
    (101, [b"Return-Path: <a@b>\r\n", b"Received: x\r\n", b"Subject: one\r\n\r\n.dot\r\n..two\r\nbody\r\n"]),
    (102, [b"", b"", b""]),
    (103, [b"Return-Path: <>\r\n", b"Received: y\r\n\t.z\r", b"\nX: 1\r\n\r\nl1\nl2\r\n.\r\n.\nend"]),
];

fn maildrop() -> Vec<MaildropEntry> {
    MESSAGES
        .iter()
        .map(|(number, parts)| MaildropEntry { number: *number, size: parts.iter().map(|p| p.len() as u64).sum() })
        .collect()
}

#[derive(Debug, PartialEq, Eq)]
enum Event {
    Send(String),
    Login { user: String, password: String },
    Retrieve { number: u64, size: u64, top_lines: Option<usize> },
    Commit { deleted: Vec<u64> },
    StartTls,
    Close,
}

struct Run {
    session: Pop3Session,
    events: Vec<Event>,
    tls_started: bool,
    closed: bool,
}

impl Run {
    fn new(config: &Arc<Pop3Config>, local: bool) -> Run {
        let session = Pop3Session::new(config.clone(), local);
        check_reply(&session.greeting());
        Run { session, events: Vec::new(), tls_started: false, closed: false }
    }

    fn receive(&mut self, bytes: &[u8]) {
        let mut actions = Vec::new();
        self.session.receive(bytes, &mut actions);
        self.apply(actions);
    }

    /// Records the actions and answers the effects, until nothing is left to answer; like
    /// the daemon, resumes a paused session (after "sending" its replies) at once.
    fn apply(&mut self, mut actions: Vec<Pop3Action>) {
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

    fn apply_round(&mut self, mut actions: Vec<Pop3Action>) {
        while !actions.is_empty() {
            let mut next = Vec::new();
            for action in actions {
                assert!(!self.closed, "{action:?} after close");
                match action {
                    Pop3Action::Send(bytes) => {
                        check_output(&bytes);
                        // A multi-line answer may come in several pieces: what is compared
                        // is the bytes between other events.
                        let text = String::from_utf8_lossy(&bytes);
                        match self.events.last_mut() {
                            Some(Event::Send(sent)) => sent.push_str(&text),
                            _ => self.events.push(Event::Send(text.into_owned())),
                        }
                    }
                    Pop3Action::Login { user, password } => {
                        let outcome = match password.as_str() {
                            "pw" => Ok(maildrop()),
                            "empty" => Ok(Vec::new()),
                            "locked" => Err(LoginError::Locked),
                            "down" => Err(LoginError::Unavailable),
                            "slow" => Err(LoginError::Throttled),
                            _ => Err(LoginError::BadCredentials),
                        };
                        self.events.push(Event::Login { user, password });
                        self.session.login_finished(outcome, &mut next);
                    }
                    Pop3Action::Retrieve { number, size, top_lines } => {
                        retrieve(number, size, top_lines);
                        self.events.push(Event::Retrieve { number, size, top_lines });
                    }
                    Pop3Action::Commit { deleted } => {
                        let ok = !deleted.contains(&103);
                        self.events.push(Event::Commit { deleted });
                        self.session.commit_finished(ok, &mut next);
                    }
                    Pop3Action::StartTls => {
                        self.events.push(Event::StartTls);
                        self.tls_started = true;
                    }
                    Pop3Action::Close => {
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

/// The greeting: one `+OK` line.
fn check_reply(wire: &[u8]) {
    assert!(wire.starts_with(b"+OK ") && wire.ends_with(b"\r\n"), "greeting {:?}", String::from_utf8_lossy(wire));
    check_output(wire);
}

/// One piece of output (a reply, or part of a multi-line one): whole lines ending in CRLF,
/// each at most 512 octets (RFC 2449 §4).
fn check_output(wire: &[u8]) {
    let show = || String::from_utf8_lossy(wire).into_owned();
    assert!(wire.ends_with(b"\r\n"), "output not ending in CRLF: {:?}", show());
    for line in wire.split_inclusive(|&b| b == b'\n') {
        assert!(line.len() <= 512, "a line of {} octets in {:?}", line.len(), show());
        assert!(line.ends_with(b"\r\n"), "LF without CR in {:?}", show());
        // No control character but the CRLF (finding 2, fixed), and no 8-bit byte.
        let text = &line[..line.len() - 2];
        assert!(text.iter().all(|&b| b == b'\t' || b >= 32 && b != 127), "control character in {:?}", show());
        assert!(text.iter().all(|&b| b < 127), "8-bit byte in {:?}", show());
    }
}

/// Writes the RETR/TOP response as the daemon does and checks it unstuffs to the message.
fn retrieve(number: u64, size: u64, top_lines: Option<usize>) {
    let (_, parts) = MESSAGES.iter().find(|(n, _)| *n == number).expect("retrieve of a message not in the maildrop");
    let message: Vec<u8> = parts.concat();
    assert_eq!(size, message.len() as u64);
    let mut out = Vec::new();
    write_message(&mut out, size, parts, top_lines).unwrap();
    let head = format!("+OK {size} octets\r\n");
    assert!(out.starts_with(head.as_bytes()), "{out:?}");
    assert!(out.ends_with(b".\r\n"), "{out:?}");
    let stuffed = &out[head.len()..out.len() - 3];
    // Unstuff: a line starting with `.` loses one.
    let mut content = Vec::new();
    for line in stuffed.split_inclusive(|&b| b == b'\n') {
        assert!(line != b".\r\n" && line != b".\n", "a lone dot inside {out:?}");
        content.extend_from_slice(line.strip_prefix(b".").unwrap_or(line));
    }
    assert!(content.is_empty() || content.ends_with(b"\r\n"), "terminator not on its own line: {out:?}");
    let written = if message.starts_with(&content) {
        &content[..]
    } else {
        // A CRLF was added where the message (or the TOP cut) did not end in one.
        &content[..content.len() - 2]
    };
    assert!(message.starts_with(written), "{out:?} is not the message");
    if top_lines.is_none() {
        assert_eq!(written, &message[..], "RETR wrote part of the message: {out:?}");
    }
}

fuzz_target!(|data: &[u8]| {
    let Some(input) = Input::parse(data) else { return };
    let config = Arc::new(Pop3Config { hostname: "pop.test".into(), tls_available: input.flag(0) });
    let local = input.flag(1);
    let mut whole = Run::new(&config, local);
    common::feed(&mut whole, &input, true);
    let mut chunked = Run::new(&config, local);
    common::feed(&mut chunked, &input, false);
    assert_eq!(whole.events, chunked.events, "whole and chunked input differ");
});
