//! Transcript tests: every dialogue in `tests/dialogues/` run against the pure session,
//! with a fake directory and a fake store that numbers messages 1, 2, 3, …

use super::*;
use crate::dialogue::{Dialogue, Step};
use crate::domain::Domain;
use std::net::Ipv4Addr;

struct FakeDirectory {
    domains: Vec<String>,
    users: Vec<String>,
}

impl Directory for FakeDirectory {
    fn route(&self, recipient: &Address) -> Route {
        if !self.domains.iter().any(|d| Domain::parse(d).ok() == Some(Domain::of(recipient))) {
            Route::Remote
        } else if self.users.iter().any(|u| u.eq_ignore_ascii_case(&recipient.to_string())) {
            Route::Local
        } else {
            Route::UnknownUser
        }
    }
    fn default_domain(&self) -> &str {
        &self.domains[0]
    }
}

/// Runs the session against the script; returns the committed messages.
fn run(dialogue: &Dialogue) -> Vec<Message> {
    let directory = Arc::new(FakeDirectory { domains: dialogue.domains.clone(), users: dialogue.users.clone() });
    let config = Arc::new(SmtpConfig::new("mx.test", 1 << 20));
    let mut session = SmtpSession::new(config, directory, IpAddr::V4(Ipv4Addr::LOCALHOST));
    let mut output: Vec<u8> = session.greeting().as_bytes().to_vec();
    let mut committed = Vec::new();
    let mut closed = false;
    let mut apply = |session: &mut SmtpSession, mut actions: Vec<Action>, output: &mut Vec<u8>, closed: &mut bool| {
        while !actions.is_empty() {
            let mut next = Vec::new();
            for action in actions {
                match action {
                    Action::Send(reply) => output.extend_from_slice(reply.as_bytes()),
                    Action::Close => *closed = true,
                    Action::StartTls => panic!("STARTTLS is not offered in dialogues"),
                    Action::Authenticate(_) => panic!("AUTH is not offered in dialogues"),
                    Action::Commit(message) => {
                        committed.push(message);
                        session.commit_finished(Ok(committed.len() as u64), &mut next);
                    }
                }
            }
            actions = next;
        }
    };
    let mut read = 0;
    for (i, step) in dialogue.steps.iter().enumerate() {
        match step {
            Step::Send(bytes) => {
                assert!(!closed, "step {i}: sending on a closed session");
                let mut actions = Vec::new();
                session.receive(bytes, &mut actions);
                apply(&mut session, actions, &mut output, &mut closed);
            }
            Step::WaitTimeout => {
                let mut actions = Vec::new();
                session.timed_out(&mut actions);
                apply(&mut session, actions, &mut output, &mut closed);
            }
            Step::Expect(prefix) => {
                let rest = &output[read..];
                let end = rest
                    .windows(2)
                    .position(|w| w == b"\r\n")
                    .unwrap_or_else(|| panic!("step {i}: expected {prefix:?}, server said nothing more"));
                let line = String::from_utf8_lossy(&rest[..end]).into_owned();
                read += end + 2;
                assert!(line.starts_with(prefix.as_str()), "step {i}: expected {prefix:?}, got {line:?}");
            }
            Step::ExpectClose => {
                assert!(closed, "step {i}: expected the session to close");
                assert_eq!(read, output.len(), "unread output before close");
            }
        }
    }
    committed
}

fn dialogue(name: &str) -> Dialogue {
    let path = format!("{}/../tests/dialogues/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    Dialogue::parse(&text).unwrap()
}

#[test]
fn every_golden_dialogue_passes_in_process() {
    let dir = format!("{}/../tests/dialogues", env!("CARGO_MANIFEST_DIR"));
    let mut count = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if name.ends_with(".txt") {
            run(&dialogue(&name));
            count += 1;
        }
    }
    assert!(count >= 8, "only {count} dialogues found");
}

#[test]
fn assignment_dialogue_one_stores_the_body_unchanged() {
    let committed = run(&dialogue("assignment-1.txt"));
    assert_eq!(committed.len(), 1);
    let message = &committed[0];
    assert_eq!(message.envelope.sender, "student@CS4410");
    assert_eq!(message.envelope.recipients, vec!["TA@CS4410"]);
    assert_eq!(message.envelope.helo, "client");
    assert_eq!(message.body.in_memory(), Some(&b"I made an awesome submission!\r\nNetwork programming is fun\r\n"[..]));
}

#[test]
fn smuggled_commands_stay_inside_the_message() {
    let committed = run(&dialogue("smuggling.txt"));
    assert_eq!(committed.len(), 1, "the smuggled transaction must not become a message");
    let body = committed[0].body.in_memory().expect("a small body stays in memory");
    assert_eq!(
        body,
        &b"hello\n.\nMAIL FROM:<eve@example.org>\r\nRCPT TO:<eve@example.org>\r\nDATA\r\nsmuggled\n.\r\nmore\r.\r\nstill data\r\n\r\n"[..]
    );
    assert_eq!(committed[0].envelope.recipients, vec!["bob@example.org"]);
}

#[test]
fn pipelined_transactions_and_duplicate_recipients() {
    let committed = run(&dialogue("pipelining.txt"));
    assert_eq!(committed.len(), 2);
    assert_eq!(committed[0].envelope.recipients, vec!["bob@example.org", "carol@example.org"]);
    assert_eq!(committed[0].body.in_memory(), Some(&b"Subject: one\r\n\r\nbody\r\n"[..]));
    assert_eq!(committed[1].body.in_memory(), Some(&b"second\r\n"[..]));
}

#[test]
fn split_packets_assemble() {
    let committed = run(&dialogue("split-packets.txt"));
    assert_eq!(committed[0].body.in_memory(), Some(&b"part one\r\n"[..]));
    assert_eq!(committed[0].envelope.helo, "world");
}

fn session(max_size: usize) -> SmtpSession {
    let directory = Arc::new(FakeDirectory { domains: vec!["d.test".into()], users: vec!["u@d.test".into()] });
    let config = Arc::new(SmtpConfig::new("mx.test", max_size));
    SmtpSession::new(config, directory, IpAddr::V4(Ipv4Addr::LOCALHOST))
}

fn replies(actions: &[Action]) -> Vec<String> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send(r) => Some(r.to_string()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_client_that_pipelines_without_reading_gets_its_replies_a_round_at_a_time() {
    let mut s = session(1000);
    let mut actions = Vec::new();
    s.receive(&b"NOOP\r\n".repeat(30_000), &mut actions);
    let mut count = replies(&actions).len();
    let octets: usize = replies(&actions).iter().map(|r| r.len() + 2).sum();
    assert!(s.is_paused());
    assert!((OUTPUT_ROUND..OUTPUT_ROUND + 1024).contains(&octets), "{octets} octets in one round");
    while s.is_paused() {
        let mut actions = Vec::new();
        s.resume(&mut actions);
        let octets: usize = replies(&actions).iter().map(|r| r.len() + 2).sum();
        assert!(octets < OUTPUT_ROUND + 1024, "{octets} octets in one round");
        assert!(replies(&actions).iter().all(|r| r.starts_with("250 2.0.0")));
        count += replies(&actions).len();
    }
    assert_eq!(count, 30_000);
}

#[test]
fn a_message_the_memory_budget_cannot_hold_gets_452_and_the_budget_is_given_back() {
    let budget = crate::budget::MemoryBudget::new(64 * 1024);
    let config = SmtpConfig { data_budget: budget.clone(), ..SmtpConfig::new("mx.test", 1 << 20) };
    let directory = Arc::new(FakeDirectory { domains: vec!["d.test".into()], users: vec!["u@d.test".into()] });
    let mut s = SmtpSession::new(Arc::new(config), directory, Ipv4Addr::LOCALHOST.into());
    let mut actions = Vec::new();
    s.receive(b"HELO x\r\nMAIL FROM:<u@d.test>\r\nRCPT TO:<u@d.test>\r\nDATA\r\n", &mut actions);
    s.receive(&[b'y'; 100_000], &mut actions);
    assert_eq!(budget.used(), 0, "a starved message holds nothing");
    s.receive(b"\r\n.\r\nMAIL FROM:<u@d.test>\r\nRCPT TO:<u@d.test>\r\nDATA\r\nsmall\r\n.\r\n", &mut actions);
    let r = replies(&actions);
    assert!(r[4].starts_with("452 4.3.1"), "{r:?}");
    let Some(Action::Commit(message)) = actions.last() else { panic!("the small message is committed: {r:?}") };
    assert_eq!(message.body.in_memory(), Some(&b"small\r\n"[..]));
    assert!(budget.used() > 0, "held until the pipeline answers");
    let mut actions = Vec::new();
    s.commit_finished(Ok(1), &mut actions);
    assert_eq!(budget.used(), 0);
}

#[test]
fn oversized_data_gets_552_and_no_commit() {
    let mut s = session(10);
    let mut actions = Vec::new();
    s.receive(b"HELO x\r\nMAIL FROM:<u@d.test>\r\nRCPT TO:<u@d.test>\r\nDATA\r\n", &mut actions);
    s.receive(&[b'y'; 5000], &mut actions);
    s.receive(b"\r\n.\r\nNOOP\r\n", &mut actions);
    assert!(!actions.iter().any(|a| matches!(a, Action::Commit(_))));
    let r = replies(&actions);
    assert!(r[4].starts_with("552 5.3.4"), "{r:?}");
    assert!(r[5].starts_with("250 2.0.0"), "{r:?}");
}

#[test]
fn the_101st_recipient_is_refused() {
    let directory = Arc::new(FakeDirectory {
        domains: vec!["d.test".into()],
        users: (0..101).map(|i| format!("u{i}@d.test")).collect(),
    });
    let mut s = SmtpSession::new(Arc::new(SmtpConfig::new("mx", 100)), directory, IpAddr::V4(Ipv4Addr::LOCALHOST));
    let mut actions = Vec::new();
    s.receive(b"HELO x\r\nMAIL FROM:<>\r\n", &mut actions);
    for i in 0..101 {
        s.receive(format!("RCPT TO:<u{i}@d.test>\r\n").as_bytes(), &mut actions);
    }
    let r = replies(&actions);
    assert!(r[101].starts_with("250 2.1.5"));
    assert!(r[102].starts_with("452 4.5.3"), "{}", r[102]);
}

#[test]
fn store_errors_map_to_451_and_452_and_the_session_goes_on() {
    for (error, code) in [(CommitError::Transient, "451 4.3.0"), (CommitError::Full, "452 4.3.1")] {
        let mut s = session(100);
        let mut actions = Vec::new();
        s.receive(b"HELO x\r\nMAIL FROM:<u@d.test>\r\nRCPT TO:<u@d.test>\r\nDATA\r\nhi\r\n.\r\nNOOP\r\n", &mut actions);
        assert!(matches!(actions.last(), Some(Action::Commit(_))));
        let mut after = Vec::new();
        s.commit_finished(Err(error), &mut after);
        let r = replies(&after);
        assert!(r[0].starts_with(code), "{r:?}");
        assert!(r[1].starts_with("250 2.0.0 Ok"), "pipelined NOOP after the commit: {r:?}");
    }
}

#[test]
fn only_valid_commands_count_as_activity() {
    let mut s = session(100);
    let mut actions = Vec::new();
    s.receive(b"HELO x\r\n", &mut actions);
    assert!(s.take_activity());
    s.receive(b"bogus\r\n", &mut actions);
    assert!(!s.take_activity(), "an invalid command must not restart the timer");
    s.receive(b"NOO", &mut actions);
    assert!(!s.take_activity(), "a partial command must not restart the timer");
    s.receive(b"P\r\nMAIL FROM:<u@d.test>\r\nRCPT TO:<u@d.test>\r\nDATA\r\n", &mut actions);
    assert!(s.take_activity());
    s.receive(b"some data", &mut actions);
    assert!(s.take_activity(), "data restarts the timer");
}

#[test]
fn input_is_not_buffered_without_bound() {
    let mut s = session(100);
    let mut actions = Vec::new();
    for _ in 0..1000 {
        s.receive(&[b'z'; 1000], &mut actions);
        assert!(s.pending.len() <= receiver::MAX_COMMAND_LINE);
    }
}

fn tls_session() -> SmtpSession {
    let directory = Arc::new(FakeDirectory { domains: vec!["d.test".into()], users: vec!["u@d.test".into()] });
    let config = Arc::new(SmtpConfig { tls_available: true, ..SmtpConfig::new("mx.test", 1000) });
    SmtpSession::new(config, directory, IpAddr::V4(Ipv4Addr::LOCALHOST))
}

#[test]
fn starttls_is_offered_only_with_a_certificate_and_only_once() {
    let mut plain = session(100);
    let mut actions = Vec::new();
    plain.receive(b"EHLO x\r\nSTARTTLS\r\n", &mut actions);
    let r = replies(&actions);
    assert!(!r[0].contains("STARTTLS"), "{r:?}");
    assert!(r[1].starts_with("502 5.5.1"), "{r:?}");
    assert!(!actions.iter().any(|a| matches!(a, Action::StartTls)));

    let mut s = tls_session();
    let mut actions = Vec::new();
    s.receive(b"EHLO x\r\n", &mut actions);
    assert!(replies(&actions)[0].contains("250 STARTTLS"), "{:?}", replies(&actions));
    let mut actions = Vec::new();
    s.receive(b"STARTTLS\r\n", &mut actions);
    assert_eq!(replies(&actions), ["220 2.0.0 Ready to start TLS"]);
    assert!(matches!(actions.last(), Some(Action::StartTls)));
    // After the handshake: a new greeting is needed, and STARTTLS is gone.
    let mut actions = Vec::new();
    s.receive(b"MAIL FROM:<u@d.test>\r\nEHLO x\r\nSTARTTLS\r\n", &mut actions);
    let r = replies(&actions);
    assert!(r[0].starts_with("503 5.5.1 Error: send HELO/EHLO first"), "{r:?}");
    assert!(!r[1].contains("STARTTLS"), "{r:?}");
    assert!(r[2].starts_with("503 5.5.1"), "{r:?}");
}

#[test]
fn starttls_drops_what_was_pipelined_behind_it() {
    let mut s = tls_session();
    let mut actions = Vec::new();
    // CVE-2011-0411: commands injected in the clear behind STARTTLS must not run
    // inside the TLS session.
    s.receive(b"EHLO x\r\nSTARTTLS\r\nMAIL FROM:<evil@d.test>\r\nRCPT TO:<u@d.test>\r\nRSE", &mut actions);
    assert_eq!(replies(&actions).len(), 2, "{:?}", replies(&actions));
    let mut actions = Vec::new();
    s.receive(b"EHLO y\r\nMAIL FROM:<u@d.test>\r\nRCPT TO:<u@d.test>\r\nDATA\r\nhi\r\n.\r\n", &mut actions);
    let r = replies(&actions);
    assert!(r[0].starts_with("250-mx.test"), "{r:?}");
    let Some(Action::Commit(message)) = actions.last() else { panic!("no commit: {r:?}") };
    assert_eq!(message.envelope.sender, "u@d.test");
    assert!(message.envelope.tls && message.envelope.extended);
}

#[test]
fn starttls_refuses_an_argument_and_an_open_transaction() {
    let mut s = tls_session();
    let mut actions = Vec::new();
    s.receive(b"EHLO x\r\nSTARTTLS now\r\nMAIL FROM:<u@d.test>\r\nSTARTTLS\r\nRSET\r\nSTARTTLS\r\n", &mut actions);
    let r = replies(&actions);
    assert!(r[1].starts_with("501 5.5.4 Syntax: STARTTLS"), "{r:?}");
    assert!(r[3].starts_with("503 5.5.1 Error: MAIL transaction in progress"), "{r:?}");
    assert_eq!(r[5], "220 2.0.0 Ready to start TLS");
}

fn submission_session(tls_available: bool) -> SmtpSession {
    let directory = Arc::new(FakeDirectory { domains: vec!["d.test".into()], users: vec!["u@d.test".into()] });
    let config = Arc::new(SmtpConfig { submission: true, tls_available, ..SmtpConfig::new("mx.test", 1000) });
    SmtpSession::new(config, directory, IpAddr::V4(Ipv4Addr::LOCALHOST))
}

fn b64(text: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(text)
}

fn credentials(actions: &[Action]) -> Option<(String, String)> {
    actions.iter().find_map(|a| match a {
        Action::Authenticate(c) => Some((c.user.clone(), c.password.clone())),
        _ => None,
    })
}

#[test]
fn submission_wants_auth_before_mail_and_then_relays_for_the_user_alone() {
    let mut s = submission_session(false);
    let mut actions = Vec::new();
    s.receive(b"EHLO x\r\nMAIL FROM:<u@d.test>\r\n", &mut actions);
    let r = replies(&actions);
    assert!(r[0].contains("250 AUTH PLAIN LOGIN"), "{r:?}");
    assert!(r[1].starts_with("530 5.7.0 Authentication required"), "{r:?}");

    let mut actions = Vec::new();
    let initial = b64(b"\0u@d.test\0secret pw");
    // Everything pipelined behind AUTH waits for the password check.
    s.receive(format!("AUTH PLAIN {initial}\r\nMAIL FROM:<other@d.test>\r\n").as_bytes(), &mut actions);
    assert_eq!(credentials(&actions), Some(("u@d.test".into(), "secret pw".into())));
    assert!(replies(&actions).is_empty(), "{:?}", replies(&actions));
    let mut actions = Vec::new();
    s.auth_finished(Verdict::Accepted("u@d.test".into()), &mut actions);
    s.receive(
        b"MAIL FROM:<U@D.TEST>\r\nRCPT TO:<far@elsewhere.example>\r\nRCPT TO:<u@d.test>\r\nDATA\r\nhi\r\n.\r\n",
        &mut actions,
    );
    let r = replies(&actions);
    assert_eq!(r[0], "235 2.7.0 Authentication successful");
    assert!(r[1].starts_with("553 5.7.1 <other@d.test>: Sender address rejected: not owned by user u@d.test"), "{r:?}");
    assert!(r[2].starts_with("250 2.1.0"), "{r:?}");
    assert!(r[3].starts_with("250 2.1.5") && r[4].starts_with("250 2.1.5"), "{r:?}");
    let Some(Action::Commit(message)) = actions.last() else { panic!("no commit: {r:?}") };
    assert_eq!(message.envelope.recipients, ["far@elsewhere.example", "u@d.test"]);
    assert_eq!(message.envelope.user.as_deref(), Some("u@d.test"));
    let mut actions = Vec::new();
    s.commit_finished(Ok(1), &mut actions);
    s.receive(b"AUTH PLAIN\r\n", &mut actions);
    assert!(replies(&actions)[1].starts_with("503 5.5.1 Error: already authenticated"));
}

#[test]
fn auth_login_asks_for_user_then_password_and_a_wrong_one_gets_535() {
    let mut s = submission_session(false);
    let mut actions = Vec::new();
    s.receive(b"EHLO x\r\nAUTH LOGIN\r\n", &mut actions);
    assert_eq!(replies(&actions)[1], "334 VXNlcm5hbWU6");
    let mut actions = Vec::new();
    s.receive(format!("{}\r\n{}\r\n", b64(b"u@d.test"), b64(b"wrong")).as_bytes(), &mut actions);
    assert_eq!(replies(&actions), ["334 UGFzc3dvcmQ6"]);
    assert_eq!(credentials(&actions), Some(("u@d.test".into(), "wrong".into())));
    let mut actions = Vec::new();
    s.auth_finished(Verdict::Rejected, &mut actions);
    s.receive(b"MAIL FROM:<u@d.test>\r\n", &mut actions);
    let r = replies(&actions);
    assert_eq!(r[0], "535 5.7.8 Error: authentication failed");
    assert!(r[1].starts_with("530"), "{r:?}");
}

#[test]
fn the_third_failed_auth_closes_the_session_and_a_throttled_check_gets_454() {
    let mut s = submission_session(false);
    let mut actions = Vec::new();
    s.receive(b"EHLO x\r\n", &mut actions);
    let attempt = format!("AUTH PLAIN {}\r\n", b64(b"\0u@d.test\0wrong"));
    let mut r = Vec::new();
    for verdict in [Verdict::Throttled, Verdict::Rejected, Verdict::Rejected, Verdict::Rejected] {
        let mut actions = Vec::new();
        s.receive(attempt.as_bytes(), &mut actions);
        assert!(credentials(&actions).is_some());
        let mut actions = Vec::new();
        s.auth_finished(verdict, &mut actions);
        r.extend(replies(&actions));
    }
    assert!(r[0].starts_with("454 4.7.0"), "{r:?}");
    assert_eq!(&r[1..4], ["535 5.7.8 Error: authentication failed"; 3]);
    assert!(r[4].starts_with("421 4.7.0") && r[4].contains("too many failed authentications"), "{r:?}");
    assert!(s.is_closed());
}

#[test]
fn auth_refusals_cancel_bad_base64_unknown_mechanism_and_wrong_state() {
    let mut s = submission_session(false);
    let mut actions = Vec::new();
    s.receive(b"AUTH PLAIN\r\nEHLO x\r\nAUTH PLAIN\r\n*\r\nAUTH PLAIN !!!\r\nAUTH CRAM-MD5\r\nAUTH\r\n", &mut actions);
    let r = replies(&actions);
    assert!(r[0].starts_with("503 5.5.1 Error: send HELO/EHLO first"), "{r:?}");
    assert_eq!(r[2], "334");
    assert!(r[3].starts_with("501 5.7.0 Authentication aborted"), "{r:?}");
    assert!(r[4].starts_with("501 5.5.2 Cannot decode response"), "{r:?}");
    assert!(r[5].starts_with("504 5.5.4"), "{r:?}");
    assert!(r[6].starts_with("501 5.5.4 Syntax: AUTH"), "{r:?}");
    assert!(credentials(&actions).is_none());
}

#[test]
fn with_a_certificate_auth_waits_for_tls() {
    let mut s = submission_session(true);
    let mut actions = Vec::new();
    s.receive(format!("EHLO x\r\nAUTH PLAIN {}\r\n", b64(b"\0u@d.test\0pw")).as_bytes(), &mut actions);
    let r = replies(&actions);
    assert!(!r[0].contains("AUTH"), "{r:?}");
    assert!(r[1].starts_with("538 5.7.11"), "{r:?}");
    let mut actions = Vec::new();
    s.receive(b"STARTTLS\r\n", &mut actions);
    s.receive(b"EHLO x\r\n", &mut actions);
    assert!(replies(&actions)[1].contains("250 AUTH PLAIN LOGIN"), "{:?}", replies(&actions));
}

#[test]
fn the_plain_smtp_port_offers_no_auth_and_relays_for_nobody() {
    let mut s = session(100);
    let mut actions = Vec::new();
    s.receive(
        format!(
            "EHLO x\r\nAUTH PLAIN {}\r\nMAIL FROM:<u@d.test>\r\nRCPT TO:<far@elsewhere.example>\r\n",
            b64(b"\0u@d.test\0pw")
        )
        .as_bytes(),
        &mut actions,
    );
    let r = replies(&actions);
    assert!(!r[0].contains("AUTH"), "{r:?}");
    assert!(r[1].starts_with("502 5.5.1"), "{r:?}");
    assert!(r[3].starts_with("554 5.7.1 <far@elsewhere.example>: Relay access denied"), "{r:?}");
}

mod hostile {
    //! Whatever bytes arrive, in whatever pieces, the session neither panics nor buffers
    //! without bound, every reply is one well-formed line or a proper multi-line reply,
    //! and nothing follows a close.
    use super::*;
    use proptest::prelude::*;

    fn piece() -> impl Strategy<Value = Vec<u8>> {
        let plain = b64(b"\0u@d.test\0pw");
        prop_oneof![
            Just(b"EHLO x\r\n".to_vec()),
            Just(b"HELO x\r\n".to_vec()),
            Just(b"STARTTLS\r\n".to_vec()),
            Just(format!("AUTH PLAIN {plain}\r\n").into_bytes()),
            Just(b"AUTH PLAIN\r\n".to_vec()),
            Just(b"AUTH LOGIN\r\n".to_vec()),
            Just(format!("{}\r\n", b64(b"u@d.test")).into_bytes()),
            Just(b"*\r\n".to_vec()),
            Just(b"MAIL FROM:<u@d.test>\r\n".to_vec()),
            Just(b"MAIL FROM:<>\r\n".to_vec()),
            Just(b"RCPT TO:<u@d.test>\r\n".to_vec()),
            Just(b"RCPT TO:<far@elsewhere.example>\r\n".to_vec()),
            Just(b"DATA\r\n".to_vec()),
            Just(b"body\r\n.\r\n".to_vec()),
            Just(b"\n.\n".to_vec()),
            Just(b"RSET\r\n".to_vec()),
            Just(b"QUIT\r\n".to_vec()),
            Just(vec![b'A'; 700]),
            proptest::collection::vec(any::<u8>(), 0..64),
        ]
    }

    fn check_reply(reply: &Reply) -> Result<(), TestCaseError> {
        let wire = std::str::from_utf8(reply.as_bytes()).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert!(wire.ends_with("\r\n"), "{wire:?}");
        let lines: Vec<&str> = wire.trim_end_matches("\r\n").split("\r\n").collect();
        for (i, line) in lines.iter().enumerate() {
            let last = i + 1 == lines.len();
            prop_assert!(line.len() >= 3 && line.as_bytes()[..3].iter().all(u8::is_ascii_digit), "{wire:?}");
            prop_assert_eq!(
                line.as_bytes().get(3).copied().unwrap_or(b' '),
                if last { b' ' } else { b'-' },
                "{:?}",
                wire
            );
            prop_assert!(!line.contains('\r') && !line.contains('\n'), "{wire:?}");
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 400, failure_persistence: None, ..ProptestConfig::default() })]
        #[test]
        fn any_input_in_any_pieces(
            pieces in proptest::collection::vec(piece(), 0..40),
            cuts in proptest::collection::vec(1usize..50, 1..20),
            tls in any::<bool>(),
            accept_password in any::<bool>(),
        ) {
            let mut s = submission_session(tls);
            let input: Vec<u8> = pieces.concat();
            let mut offset = 0;
            let mut closed = false;
            let mut number = 0;
            for cut in cuts.iter().cycle() {
                if offset >= input.len() {
                    break;
                }
                let end = (offset + cut).min(input.len());
                let mut actions = Vec::new();
                s.receive(&input[offset..end], &mut actions);
                offset = end;
                while !actions.is_empty() {
                    let mut next = Vec::new();
                    for action in actions {
                        prop_assert!(!closed, "an action after Close: {action:?}");
                        match action {
                            Action::Send(reply) => check_reply(&reply)?,
                            Action::Close => closed = true,
                            Action::StartTls => {}
                            Action::Authenticate(_) => {
                                let verdict =
                                    if accept_password { Verdict::Accepted("u@d.test".into()) } else { Verdict::Rejected };
                                s.auth_finished(verdict, &mut next)
                            }
                            Action::Commit(message) => {
                                prop_assert!(!message.envelope.recipients.is_empty());
                                number += 1;
                                s.commit_finished(Ok(number), &mut next);
                            }
                        }
                    }
                    actions = next;
                }
                prop_assert!(s.pending.len() <= receiver::MAX_COMMAND_LINE + 50, "pending {}", s.pending.len());
            }
        }
    }
}

#[test]
fn replies_quote_client_text_only_as_printable_ascii() {
    let mut s = session(1000);
    let mut actions = Vec::new();
    s.receive(
        b"HELO x\r\nMAIL FROM:<a\0b\rc@d.test>\r\nMAIL FROM:<s@d.test>\r\nRCPT TO:<\x7fu@d.test>\r\n",
        &mut actions,
    );
    let r = replies(&actions);
    assert_eq!(r[1], "501 5.1.7 <a?b?c@d.test>: Sender address rejected: invalid address");
    assert_eq!(r[3], "501 5.1.3 <?u@d.test>: Recipient address rejected: invalid address");
}
