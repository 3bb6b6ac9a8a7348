//! Transcript tests: POP3 dialogues in the `C:`/`S:` format of `tests/dialogues/` run
//! against the pure session, with a fake daemon that checks passwords, serves a fixed
//! maildrop through [`write_message`], and records every login and commit.

use super::*;
use crate::dialogue::{Dialogue, Step};

const PASSWORD: &str = "open sesame";

/// alice's maildrop: global numbers 3, 5 and 8, oldest first, each as the three parts the
/// daemon passes to its `MessageWriter` (Return-Path, trace, body).
fn alice_messages() -> Vec<(u64, [Vec<u8>; 3])> {
    let message = |number: u64, body: &str| {
        let parts = [
            b"Return-Path: <x@e.test>\r\n".to_vec(),
            format!("Received: from e.test by d.test; message {number}\r\n").into_bytes(),
            body.as_bytes().to_vec(),
        ];
        (number, parts)
    };
    vec![
        message(3, "Subject: one\r\n\r\nline 1\r\n.dot line\r\nline 3\r\n"),
        message(5, "Subject: two\r\n\r\nhello\r\n"),
        message(8, "Subject: three\r\n\r\nbare\nlf\n"),
    ]
}

fn size_of(parts: &[Vec<u8>; 3]) -> u64 {
    parts.iter().map(|p| p.len() as u64).sum()
}

/// The session and a fake daemon around it.
struct Harness {
    session: Pop3Session,
    output: Vec<u8>,
    read: usize,
    closed: bool,
    tls_started: bool,
    commit_ok: bool,
    logins: Vec<(String, String)>,
    retrieves: Vec<(u64, u64, Option<usize>)>,
    commits: Vec<Vec<u64>>,
}

impl Harness {
    /// A client on another host (not loopback).
    fn new(tls_available: bool) -> Harness {
        Harness::with_client(tls_available, false)
    }

    fn with_client(tls_available: bool, local_client: bool) -> Harness {
        let config = Arc::new(Pop3Config { hostname: "pop.d.test".into(), tls_available });
        let session = Pop3Session::new(config, local_client);
        let output = session.greeting();
        Harness {
            session,
            output,
            read: 0,
            closed: false,
            tls_started: false,
            commit_ok: true,
            logins: Vec::new(),
            retrieves: Vec::new(),
            commits: Vec::new(),
        }
    }

    fn login(&self, user: &str, password: &str) -> Result<Vec<MaildropEntry>, LoginError> {
        match (user, password == PASSWORD) {
            ("alice@d.test", true) => Ok(alice_messages()
                .iter()
                .map(|(number, parts)| MaildropEntry { number: *number, size: size_of(parts) })
                .collect()),
            ("empty@d.test", true) => Ok(Vec::new()),
            ("bob@d.test", true) => Err(LoginError::Locked),
            ("carol@d.test", true) => Err(LoginError::Unavailable),
            _ => Err(LoginError::BadCredentials),
        }
    }

    /// Carries out actions the way the daemon does, including the answers they ask for.
    fn apply(&mut self, mut actions: Vec<Pop3Action>) {
        while !actions.is_empty() {
            let last = actions.len() - 1;
            let mut next = Vec::new();
            for (i, action) in actions.into_iter().enumerate() {
                assert!(!self.closed, "an action after Close: {action:?}");
                match action {
                    Pop3Action::Send(bytes) => self.output.extend_from_slice(&bytes),
                    Pop3Action::Close => self.closed = true,
                    Pop3Action::StartTls => self.tls_started = true,
                    Pop3Action::Retrieve { number, size, top_lines } => {
                        self.retrieves.push((number, size, top_lines));
                        let messages = alice_messages();
                        let (_, parts) =
                            messages.iter().find(|(n, _)| *n == number).expect("a message of the maildrop");
                        assert_eq!(size, size_of(parts), "RETR must announce the exact size");
                        let parts: Vec<&[u8]> = parts.iter().map(|p| p.as_slice()).collect();
                        write_message(&mut self.output, size, &parts, top_lines).unwrap();
                    }
                    Pop3Action::Login { user, password } => {
                        // The session waits for the answer: nothing may follow the request.
                        assert_eq!(i, last, "Login must be the last action");
                        let outcome = self.login(&user, &password);
                        self.logins.push((user, password));
                        self.session.login_finished(outcome, &mut next);
                    }
                    Pop3Action::Commit { deleted } => {
                        assert_eq!(i, last, "Commit must be the last action");
                        self.commits.push(deleted);
                        self.session.commit_finished(self.commit_ok, &mut next);
                    }
                }
            }
            actions = next;
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        let mut actions = Vec::new();
        self.session.receive(bytes, &mut actions);
        self.apply(actions);
        // As the daemon does: a paused session is resumed once its output is sent.
        while self.session.is_paused() {
            let mut actions = Vec::new();
            self.session.resume(&mut actions);
            self.apply(actions);
        }
    }

    fn next_line(&mut self) -> Option<String> {
        let rest = self.output.get(self.read..)?;
        let end = rest.windows(2).position(|w| w == b"\r\n")?;
        let line = String::from_utf8_lossy(&rest[..end]).into_owned();
        self.read += end + 2;
        Some(line)
    }

    fn unread(&self) -> String {
        String::from_utf8_lossy(&self.output[self.read..]).into_owned()
    }
}

/// Plays a dialogue written in the `tests/dialogues/` format, indented as Rust source is.
/// `S: ` with nothing after it expects an empty line (a prefix would match any line).
fn play(mut harness: Harness, script: &str) -> Harness {
    let script: Vec<&str> = script.lines().map(str::trim_start).collect();
    let dialogue = Dialogue::parse(&script.join("\n")).unwrap();
    for (i, step) in dialogue.steps.iter().enumerate() {
        match step {
            Step::Send(bytes) => {
                assert!(!harness.closed, "step {i}: sending on a closed session");
                harness.send(bytes);
            }
            Step::WaitTimeout => {
                let mut actions = Vec::new();
                harness.session.timed_out(&mut actions);
                harness.apply(actions);
            }
            Step::Expect(prefix) => {
                let line = harness
                    .next_line()
                    .unwrap_or_else(|| panic!("step {i}: expected {prefix:?}, server said nothing more"));
                let matches = if prefix.is_empty() { line.is_empty() } else { line.starts_with(prefix.as_str()) };
                assert!(matches, "step {i}: expected {prefix:?}, got {line:?}");
            }
            Step::ExpectClose => assert!(harness.closed, "step {i}: expected the session to close"),
        }
    }
    harness
}

/// Plays a dialogue; every line the server wrote must be expected by the script.
fn run_with(harness: Harness, script: &str) -> Harness {
    let harness = play(harness, script);
    assert_eq!(harness.unread(), "", "the server said more than the script expects");
    harness
}

fn run(script: &str) -> Harness {
    run_with(Harness::new(false), script)
}

/// Every fixture size, for scripts: `{s1}`, `{s2}`, `{s3}` and the total `{all}`.
fn sizes() -> (u64, u64, u64, u64) {
    let m = alice_messages();
    let (s1, s2, s3) = (size_of(&m[0].1), size_of(&m[1].1), size_of(&m[2].1));
    (s1, s2, s3, s1 + s2 + s3)
}

#[test]
fn user_pass_stat_list_uidl_and_quit() {
    let (s1, s2, s3, all) = sizes();
    let h = run(&format!(
        "S: +OK pop.d.test POP3 maild ready
         C: USER alice@d.test
         S: +OK send PASS
         C: PASS {PASSWORD}
         S: +OK alice@d.test's maildrop has 3 messages ({all} octets)
         C: STAT
         S: +OK 3 {all}
         C: LIST
         S: +OK 3 messages ({all} octets)
         S: 1 {s1}
         S: 2 {s2}
         S: 3 {s3}
         S: .
         C: LIST 2
         S: +OK 2 {s2}
         C: UIDL
         S: +OK unique-id listing follows
         S: 1 3
         S: 2 5
         S: 3 8
         S: .
         C: UIDL 3
         S: +OK 3 8
         C: NOOP
         S: +OK
         C: QUIT
         S: +OK maild signing off (3 messages left)
         X: close"
    ));
    assert_eq!(h.logins, vec![("alice@d.test".to_string(), PASSWORD.to_string())], "the password keeps its space");
    assert!(h.commits.is_empty(), "nothing marked, nothing to commit");
}

#[test]
fn commands_are_case_insensitive_and_bare_lf_ends_a_line() {
    let (.., all) = sizes();
    run(&format!(
        "S: +OK
         C> user alice@d.test\\n
         S: +OK
         C> pAsS {PASSWORD}\\n
         S: +OK
         C> stat\\n
         S: +OK 3 {all}
         C> quit\\n
         S: +OK
         X: close"
    ));
}

#[test]
fn a_wrong_password_sends_the_client_back_to_user() {
    let h = run(&format!(
        "S: +OK
         C: USER alice@d.test
         S: +OK send PASS
         C: PASS wrong
         S: -ERR [AUTH] invalid user name or password
         C: PASS {PASSWORD}
         S: -ERR send USER first
         C: STAT
         S: -ERR command not valid in this state
         C: USER alice@d.test
         S: +OK send PASS
         C: PASS {PASSWORD}
         S: +OK alice@d.test's maildrop has 3 messages"
    ));
    assert_eq!(h.logins.len(), 2);
}

#[test]
fn the_third_wrong_password_ends_the_session() {
    let h = run("S: +OK
         C: USER alice@d.test
         S: +OK send PASS
         C: PASS one
         S: -ERR [AUTH] invalid user name or password
         C: USER alice@d.test
         S: +OK send PASS
         C: PASS two
         S: -ERR [AUTH] invalid user name or password
         C: USER alice@d.test
         S: +OK send PASS
         C: PASS three
         S: -ERR [AUTH] invalid user name or password
         S: -ERR [AUTH] too many failed logins, closing
         X: close");
    assert_eq!(h.logins.len(), 3);
}

#[test]
fn an_unknown_user_looks_like_a_known_one_until_pass() {
    run("S: +OK
         C: USER nobody@d.test
         S: +OK send PASS
         C: PASS anything
         S: -ERR [AUTH] invalid user name or password
         C: PASS anything
         S: -ERR send USER first
         C: QUIT
         S: +OK bye
         X: close");
}

#[test]
fn a_locked_or_unavailable_maildrop_has_its_response_code() {
    run(&format!(
        "S: +OK
         C: USER bob@d.test
         S: +OK
         C: PASS {PASSWORD}
         S: -ERR [IN-USE] maildrop locked
         C: USER carol@d.test
         S: +OK
         C: PASS {PASSWORD}
         S: -ERR [SYS/TEMP] maildrop unavailable
         C: USER empty@d.test
         S: +OK
         C: PASS {PASSWORD}
         S: +OK empty@d.test's maildrop has 0 messages (0 octets)
         C: LIST
         S: +OK 0 messages (0 octets)
         S: .
         C: UIDL
         S: +OK
         S: .
         C: RETR 1
         S: -ERR no such message
         C: QUIT
         S: +OK maild signing off (0 messages left)
         X: close"
    ));
}

fn plain(authzid: &str, authcid: &str, password: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(format!("{authzid}\0{authcid}\0{password}"))
}

#[test]
fn auth_plain_with_an_initial_response() {
    let h = run(&format!(
        "S: +OK
         C: AUTH PLAIN {}
         S: +OK alice@d.test's maildrop has 3 messages",
        plain("", "alice@d.test", PASSWORD)
    ));
    assert_eq!(h.logins, vec![("alice@d.test".to_string(), PASSWORD.to_string())]);
    assert_eq!(h.session.user(), Some("alice@d.test"));
}

#[test]
fn auth_plain_with_a_continuation() {
    let h = run(&format!(
        "S: +OK
         C: auth plain
         S: +\x20
         C: {}
         S: +OK alice@d.test's maildrop has 3 messages",
        plain("alice@d.test", "alice@d.test", PASSWORD)
    ));
    assert_eq!(h.logins.len(), 1);
}

#[test]
fn auth_failures_answer_with_the_auth_code() {
    let h = run(&format!(
        "S: +OK
         C: AUTH
         S: +OK
         S: PLAIN
         S: .
         C: AUTH CRAM-MD5
         S: -ERR [AUTH] unsupported mechanism
         C: AUTH PLAIN
         S: +\x20
         C: *
         S: -ERR [AUTH] authentication cancelled
         C: AUTH PLAIN
         S: +\x20
         C: not base64!
         S: -ERR [AUTH] invalid base64
         C: AUTH PLAIN not-base64
         S: -ERR [AUTH] invalid base64
         C: AUTH PLAIN {mismatch}
         S: -ERR [AUTH] authorization identity must be empty or the user name
         C: AUTH PLAIN =
         S: -ERR [AUTH] malformed PLAIN response
         C: AUTH PLAIN {wrong}
         S: -ERR [AUTH] invalid user name or password
         C: AUTH PLAIN
         S: +\x20
         C: {wrong}
         S: -ERR [AUTH] invalid user name or password
         C: STAT
         S: -ERR command not valid in this state",
        mismatch = plain("admin@d.test", "alice@d.test", PASSWORD),
        wrong = plain("", "alice@d.test", "guess"),
    ));
    assert_eq!(h.logins.len(), 2, "only well-formed responses reach the daemon");
}

#[test]
fn an_over_long_sasl_response_ends_the_exchange() {
    run(&format!(
        "S: +OK
         C: AUTH PLAIN
         S: +\x20
         C: {}
         S: -ERR [AUTH] response too long
         C: NOOP
         S: -ERR command not valid in this state",
        "A".repeat(receiver::MAX_SASL_LINE)
    ));
}

#[test]
fn a_long_password_fits_in_a_sasl_continuation() {
    let password = "p".repeat(255);
    let mut h = Harness::new(false);
    let mut actions = Vec::new();
    h.session.receive(format!("AUTH PLAIN\r\n{}\r\n", plain("", &"u".repeat(255), &password)).as_bytes(), &mut actions);
    assert!(matches!(actions.last(), Some(Pop3Action::Login { password: p, .. }) if *p == password), "{actions:?}");
}

#[test]
fn retr_and_top_stream_the_message_dot_stuffed() {
    let (s1, _, s3, _) = sizes();
    let h = play(
        Harness::new(false),
        &format!(
            "S: +OK
         C: USER alice@d.test
         S: +OK
         C: PASS {PASSWORD}
         S: +OK
         C: RETR 1
         S: +OK {s1} octets
         S: Return-Path: <x@e.test>
         S: Received: from e.test by d.test; message 3
         S: Subject: one
         S:\x20
         S: line 1
         S: ..dot line
         S: line 3
         S: .
         C: TOP 1 0
         S: +OK {s1} octets
         S: Return-Path: <x@e.test>
         S: Received: from e.test by d.test; message 3
         S: Subject: one
         S:\x20
         S: .
         C: TOP 1 2
         S: +OK {s1} octets
         S: Return-Path: <x@e.test>
         S: Received: from e.test by d.test; message 3
         S: Subject: one
         S:\x20
         S: line 1
         S: ..dot line
         S: .
         C: RETR 3
         S: +OK {s3} octets
         S: Return-Path: <x@e.test>
         S: Received: from e.test by d.test; message 8
         S: Subject: three
         S:\x20"
        ),
    );
    // The bare-LF lines are passed through, and a CRLF is added before the terminator.
    assert_eq!(h.unread(), "bare\nlf\n\r\n.\r\n");
    assert_eq!(h.retrieves, vec![(3, s1, None), (3, s1, Some(0)), (3, s1, Some(2)), (8, s3, None)]);
}

#[test]
fn dele_rset_and_quit_commit_the_deletions() {
    let (s1, s2, s3, all) = sizes();
    let h = run(&format!(
        "S: +OK
         C: USER alice@d.test
         S: +OK
         C: PASS {PASSWORD}
         S: +OK
         C: DELE 2
         S: +OK message 2 deleted
         C: DELE 2
         S: -ERR message 2 already deleted
         C: RETR 2
         S: -ERR no such message
         C: TOP 2 0
         S: -ERR no such message
         C: LIST 2
         S: -ERR no such message
         C: UIDL 2
         S: -ERR no such message
         C: STAT
         S: +OK 2 {s13}
         C: LIST
         S: +OK 2 messages ({s13} octets)
         S: 1 {s1}
         S: 3 {s3}
         S: .
         C: UIDL
         S: +OK
         S: 1 3
         S: 3 8
         S: .
         C: RSET
         S: +OK
         C: STAT
         S: +OK 3 {all}
         C: LIST 2
         S: +OK 2 {s2}
         C: DELE 1
         S: +OK message 1 deleted
         C: DELE 3
         S: +OK message 3 deleted
         C: QUIT
         S: +OK maild signing off (1 messages left)
         X: close",
        s13 = s1 + s3,
    ));
    assert_eq!(h.commits, vec![vec![3, 8]], "global numbers, oldest first");
}

#[test]
fn a_failed_commit_says_so_and_closes() {
    let mut h = Harness::new(false);
    h.commit_ok = false;
    run_with(
        h,
        &format!(
            "S: +OK
             C: USER alice@d.test
             S: +OK
             C: PASS {PASSWORD}
             S: +OK
             C: DELE 1
             S: +OK
             C: QUIT
             S: -ERR [SYS/TEMP] some deleted messages not removed
             X: close"
        ),
    );
}

#[test]
fn bad_message_numbers_are_no_such_message() {
    run(&format!(
        "S: +OK
         C: USER alice@d.test
         S: +OK
         C: PASS {PASSWORD}
         S: +OK
         C: RETR 0
         S: -ERR no such message
         C: RETR 4
         S: -ERR no such message
         C: RETR one
         S: -ERR no such message
         C: RETR -1
         S: -ERR no such message
         C: RETR 99999999999999999999999999
         S: -ERR no such message
         C: DELE 0
         S: -ERR no such message
         C: LIST 18446744073709551615
         S: -ERR no such message
         C: TOP 1 x
         S: -ERR syntax: TOP msg n
         C: TOP 1
         S: -ERR syntax: TOP msg n
         C: RETR
         S: -ERR syntax: RETR msg
         C: STAT 1
         S: -ERR syntax: STAT
         C: XTND XMIT
         S: -ERR unknown command
         C: APOP alice@d.test c4c9334bac560ecc979e58001b3e22fb
         S: -ERR unknown command"
    ));
}

#[test]
fn commands_of_the_other_state_are_refused() {
    run(&format!(
        "S: +OK
         C: STAT
         S: -ERR command not valid in this state
         C: LIST
         S: -ERR command not valid in this state
         C: RETR 1
         S: -ERR command not valid in this state
         C: DELE 1
         S: -ERR command not valid in this state
         C: NOOP
         S: -ERR command not valid in this state
         C: RSET
         S: -ERR command not valid in this state
         C: USER alice@d.test
         S: +OK
         C: PASS {PASSWORD}
         S: +OK
         C: USER alice@d.test
         S: -ERR command not valid in this state
         C: PASS {PASSWORD}
         S: -ERR command not valid in this state
         C: AUTH PLAIN
         S: -ERR command not valid in this state
         C: AUTH
         S: -ERR command not valid in this state
         C: STLS
         S: -ERR command not valid in this state
         C: STAT
         S: +OK 3"
    ));
}

#[test]
fn capa_lists_the_capabilities_in_both_states() {
    let capabilities = "S: +OK Capability list follows
         S: TOP
         S: UIDL
         S: USER
         S: RESP-CODES
         S: AUTH-RESP-CODE
         S: PIPELINING
         S: SASL PLAIN
         S: IMPLEMENTATION maild
         S: .";
    run(&format!(
        "S: +OK
         C: CAPA
         {capabilities}
         C: USER alice@d.test
         S: +OK
         C: PASS {PASSWORD}
         S: +OK
         C: CAPA
         {capabilities}"
    ));
}

#[test]
fn stls_is_advertised_and_accepted_only_when_tls_is_available() {
    run("S: +OK
         C: STLS
         S: -ERR STLS not available");
    let h = run_with(
        Harness::new(true),
        &format!(
            "S: +OK
             C: CAPA
             S: +OK Capability list follows
             S: TOP
             S: UIDL
             S: RESP-CODES
             S: AUTH-RESP-CODE
             S: PIPELINING
             S: IMPLEMENTATION maild
             S: STLS
             S: .
             C> USER alice@d.test\\r\\nSTLS\\r\\nPASS {PASSWORD}\\r\\n
             S: -ERR [AUTH] plaintext authentication disallowed on non-secure connections; use STLS first
             S: +OK begin TLS negotiation
             C: STLS
             S: -ERR already using TLS
             C: PASS {PASSWORD}
             S: -ERR send USER first
             C: CAPA
             S: +OK
             S: TOP
             S: UIDL
             S: USER
             S: RESP-CODES
             S: AUTH-RESP-CODE
             S: PIPELINING
             S: SASL PLAIN
             S: IMPLEMENTATION maild
             S: ."
        ),
    );
    assert!(h.tls_started);
    assert!(h.logins.is_empty(), "the PASS sent before the handshake must be dropped, and USER forgotten");
}

#[test]
fn with_tls_available_a_remote_client_sends_no_password_before_stls() {
    let refused = "S: -ERR [AUTH] plaintext authentication disallowed on non-secure connections; use STLS first";
    let h = run_with(
        Harness::new(true),
        &format!(
            "S: +OK
             C: USER alice@d.test
             {refused}
             C: PASS {PASSWORD}
             {refused}
             C: AUTH PLAIN
             {refused}
             C: AUTH PLAIN AGFsaWNlQGQudGVzdABzZWNyZXQ=
             {refused}
             C: STLS
             S: +OK begin TLS negotiation
             C: USER alice@d.test
             S: +OK send PASS
             C: PASS {PASSWORD}
             S: +OK"
        ),
    );
    assert_eq!(h.logins.len(), 1, "only the login inside TLS reaches the password check");

    // A client on this host (loopback) may log in without TLS, as in Dovecot.
    let h = run_with(
        Harness::with_client(true, true),
        &format!(
            "S: +OK
             C: USER alice@d.test
             S: +OK send PASS
             C: PASS {PASSWORD}
             S: +OK"
        ),
    );
    assert_eq!(h.logins.len(), 1);
}

#[test]
fn a_300_octet_line_is_refused_and_the_session_goes_on() {
    run(&format!(
        "S: +OK
         C: {long}
         S: -ERR line too long
         C: USER alice@d.test
         S: +OK
         C: PASS {PASSWORD}
         S: +OK
         C: LIST {long}
         S: -ERR line too long
         C: NOOP
         S: +OK",
        long = "x".repeat(298),
    ));
}

#[test]
fn an_endless_line_does_not_grow_memory() {
    let mut h = Harness::new(false);
    for _ in 0..1000 {
        h.send(&[b'x'; 4096]);
        assert!(h.session.pending.len() < receiver::MAX_COMMAND_LINE, "{} bytes buffered", h.session.pending.len());
    }
    h.send(b"\r\nQUIT\r\n");
    assert_eq!(h.unread(), "+OK pop.d.test POP3 maild ready\r\n-ERR line too long\r\n+OK bye\r\n");
    assert!(h.closed);
}

#[test]
fn pipelined_commands_are_all_answered_in_order() {
    let (s1, s2, s3, all) = sizes();
    let h = run(&format!(
        "S: +OK
         C> CAPA\\r\\nUSER alice@d.test\\r\\nPASS {PASSWORD}\\r\\nSTAT\\r\\nLIST\\r\\nUIDL 2\\r\\nTOP 2 0\\r\\nDELE 1\\r\\nDELE 2\\r\\nQUIT\\r\\nNOOP\\r\\n
         S: +OK Capability list follows
         S: TOP
         S: UIDL
         S: USER
         S: RESP-CODES
         S: AUTH-RESP-CODE
         S: PIPELINING
         S: SASL PLAIN
         S: IMPLEMENTATION maild
         S: .
         S: +OK send PASS
         S: +OK alice@d.test's maildrop has 3 messages ({all} octets)
         S: +OK 3 {all}
         S: +OK 3 messages
         S: 1 {s1}
         S: 2 {s2}
         S: 3 {s3}
         S: .
         S: +OK 2 5
         S: +OK {s2} octets
         S: Return-Path: <x@e.test>
         S: Received: from e.test by d.test; message 5
         S: Subject: two
         S:\x20
         S: .
         S: +OK message 1 deleted
         S: +OK message 2 deleted
         S: +OK maild signing off (1 messages left)
         X: close"
    ));
    assert_eq!(h.commits, vec![vec![3, 5]], "the NOOP after QUIT is never read");
}

/// The same conversation fed whole, byte by byte, and in odd chunks gives the same output.
#[test]
fn commands_split_across_reads_assemble() {
    let input = format!(
        "CAPA\r\nAUTH PLAIN\r\n{}\r\nSTAT\r\nLIST\r\nRETR 1\r\nTOP 3 1\r\nDELE 3\r\nUIDL\r\nQUIT\r\n",
        plain("", "alice@d.test", PASSWORD)
    );
    let feed = |chunk: usize| {
        let mut h = Harness::new(false);
        for piece in input.as_bytes().chunks(chunk) {
            h.send(piece);
        }
        assert!(h.closed);
        (h.output, h.commits)
    };
    let whole = feed(input.len());
    assert_eq!(whole.1, vec![vec![8]]);
    for chunk in [1, 2, 3, 7, 64] {
        assert_eq!(feed(chunk), whole, "chunks of {chunk}");
    }
}

#[test]
fn input_queued_during_a_login_is_answered_after_it() {
    let mut h = Harness::new(false);
    let mut actions = Vec::new();
    h.session.receive(format!("USER alice@d.test\r\nPASS {PASSWORD}\r\nST").as_bytes(), &mut actions);
    assert!(matches!(actions.last(), Some(Pop3Action::Login { .. })));
    // The daemon should not read now; if it does, the bytes wait their turn.
    let mut during = Vec::new();
    h.session.receive(b"AT\r\nNOOP\r\n", &mut during);
    assert!(during.is_empty(), "{during:?}");
    let mut after = Vec::new();
    h.session.login_finished(Ok(vec![MaildropEntry { number: 1, size: 10 }]), &mut after);
    let replies: Vec<String> = after
        .iter()
        .map(|a| match a {
            Pop3Action::Send(bytes) => String::from_utf8_lossy(bytes).into_owned(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(replies, ["+OK alice@d.test's maildrop has 1 messages (10 octets)\r\n", "+OK 1 10\r\n", "+OK\r\n"]);
}

#[test]
fn a_flood_during_a_login_is_bounded_and_ends_the_session() {
    let mut h = Harness::new(false);
    let mut actions = Vec::new();
    h.session.receive(format!("USER alice@d.test\r\nPASS {PASSWORD}\r\n").as_bytes(), &mut actions);
    for _ in 0..10_000 {
        h.session.receive(b"NOOP\r\n", &mut actions);
        assert!(h.session.pending.len() <= MAX_QUEUED);
    }
    assert!(
        matches!(actions.as_slice(), [Pop3Action::Send(_), Pop3Action::Login { .. }]),
        "nothing is answered during the login"
    );
    let mut after = Vec::new();
    h.session.login_finished(Ok(Vec::new()), &mut after);
    assert_eq!(
        format!("{after:?}"),
        "[Send(\"+OK alice@d.test's maildrop has 0 messages (0 octets)\\r\\n\"), \
         Send(\"-ERR [SYS/TEMP] too much pipelined input\\r\\n\"), Close]"
    );
    assert!(h.session.is_closed());
}

#[test]
fn timeout_and_shutdown_close_without_deleting() {
    let h = run(&format!(
        "S: +OK
         C: USER alice@d.test
         S: +OK
         C: PASS {PASSWORD}
         S: +OK
         C: DELE 1
         S: +OK
         W: timeout
         S: -ERR [SYS/TEMP] autologout: idle timeout
         X: close"
    ));
    assert!(h.commits.is_empty());

    let mut h = Harness::new(false);
    h.send(format!("USER alice@d.test\r\nPASS {PASSWORD}\r\nDELE 1\r\n").as_bytes());
    let mut actions = Vec::new();
    h.session.shutting_down(&mut actions);
    h.apply(actions);
    assert!(h.unread().ends_with("-ERR [SYS/TEMP] server shutting down\r\n"), "{}", h.unread());
    assert!(h.closed && h.commits.is_empty());
    // Once closed, the session stays silent.
    let mut actions = Vec::new();
    h.session.timed_out(&mut actions);
    h.session.receive(b"QUIT\r\n", &mut actions);
    assert!(actions.is_empty());
}

#[test]
fn activity_is_a_positive_answer() {
    let mut h = Harness::new(false);
    let mut step = |input: &str| {
        h.send(input.as_bytes());
        h.session.take_activity()
    };
    let table = [
        ("", false),
        ("NOOP\r\n", false),
        ("BOGUS\r\n", false),
        ("USER", false),
        (" alice@d.test\r\n", true),
        ("PASS wrong\r\n", false),
        ("AUTH PLAIN\r\n", true),
        ("*\r\n", false),
        ("CAPA\r\n", true),
        ("USER alice@d.test\r\n", true),
        ("PASS open sesame\r\n", true),
        ("RETR 1\r\n", true),
        ("RETR 9\r\n", false),
        ("DELE 1\r\n", true),
        ("DELE 1\r\n", false),
        (&"x".repeat(300), false),
        ("\r\n", false),
    ];
    for (input, want) in table {
        assert_eq!(step(input), want, "{input:?}");
    }
}

#[test]
fn user_is_known_only_once_logged_in() {
    let mut h = Harness::new(false);
    assert_eq!(h.session.user(), None);
    h.send(b"USER alice@d.test\r\n");
    assert_eq!(h.session.user(), None);
    h.send(format!("PASS {PASSWORD}\r\n").as_bytes());
    assert_eq!(h.session.user(), Some("alice@d.test"));
}

#[test]
fn answers_nobody_asked_for_are_ignored() {
    let mut h = Harness::new(false);
    let mut actions = Vec::new();
    h.session.login_finished(Ok(Vec::new()), &mut actions);
    h.session.commit_finished(true, &mut actions);
    assert!(actions.is_empty());
    assert_eq!(h.session.user(), None, "a stray login answer must not log anyone in");
}

#[test]
fn input_after_quit_is_not_read_while_committing() {
    let mut h = Harness::new(false);
    let mut actions = Vec::new();
    h.session.receive(format!("USER alice@d.test\r\nPASS {PASSWORD}\r\n").as_bytes(), &mut actions);
    h.session.login_finished(h.login("alice@d.test", PASSWORD), &mut actions);
    actions.clear();
    h.session.receive(b"DELE 1\r\nQUIT\r\nRSET\r\n", &mut actions);
    assert!(matches!(actions.last(), Some(Pop3Action::Commit { deleted }) if *deleted == [3]));
    actions.clear();
    h.session.receive(b"RSET\r\nQUIT\r\n", &mut actions);
    assert!(actions.is_empty(), "{actions:?}");
    assert!(h.session.pending.is_empty());
    h.session.commit_finished(true, &mut actions);
    assert_eq!(format!("{actions:?}"), "[Send(\"+OK maild signing off (2 messages left)\\r\\n\"), Close]");
}

#[test]
fn a_login_in_a_log_shows_no_password() {
    let action = Pop3Action::Login { user: "alice".into(), password: "hunter2".into() };
    assert!(!format!("{action:?}").contains("hunter2"));
}

/// Hostile input of every shape, in every state: the session must not panic and must keep
/// its buffer bounded.
#[test]
fn random_input_never_panics_and_stays_bounded() {
    let tokens: &[&[u8]] = &[
        b"USER alice@d.test\r\n",
        b"PASS open sesame\r\n",
        b"AUTH PLAIN\r\n",
        b"AUTH PLAIN AGFsaWNlQGQudGVzdABvcGVuIHNlc2FtZQ==\r\n",
        b"AGFsaWNlQGQudGVzdABvcGVuIHNlc2FtZQ==\r\n",
        b"*\r\n",
        b"STAT\r\n",
        b"LIST 1\r\n",
        b"UIDL\r\n",
        b"RETR 2\r\n",
        b"TOP 3 1\r\n",
        b"DELE 1\r\n",
        b"RSET\r\n",
        b"CAPA\r\n",
        b"STLS\r\n",
        b"\r\n",
        b"\n",
        b"\r",
        b".\r\n",
        b"\0\xff\xfe",
        b" ",
        b"LIST 18446744073709551616\r\n",
        b"TOP 1 18446744073709551616\r\n",
    ];
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut random = move |n: usize| {
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        usize::try_from(seed >> 33).unwrap() % n
    };
    for round in 0..300 {
        let mut h = Harness::new(round % 2 == 0);
        for _ in 0..200 {
            if h.closed {
                break;
            }
            let mut input = Vec::new();
            for _ in 0..random(8) {
                match random(20) {
                    0 => input.extend(std::iter::repeat_n(b'z', random(2000))),
                    _ => input.extend_from_slice(tokens[random(tokens.len())]),
                }
            }
            // Split anywhere, so that lines and CRLFs straddle reads.
            let cut = random(input.len() + 1);
            h.send(&input[..cut]);
            h.send(&input[cut..]);
            assert!(h.session.pending.len() <= receiver::MAX_SASL_LINE, "round {round}: {}", h.session.pending.len());
        }
    }
}

#[test]
fn a_client_that_pipelines_listings_gets_them_a_round_at_a_time() {
    let config = Arc::new(Pop3Config { hostname: "pop.d.test".into(), tls_available: false });
    let mut session = Pop3Session::new(config, true);
    let mut actions = Vec::new();
    session.receive(b"USER big@d.test\r\nPASS pw\r\n", &mut actions);
    let entries: Vec<MaildropEntry> =
        (1..=20_000).map(|n| MaildropEntry { number: 1_000_000 + n, size: 100 + n }).collect();
    let mut actions = Vec::new();
    session.login_finished(Ok(entries), &mut actions);
    session.receive(b"DELE 2\r\n", &mut actions);
    let sent = |actions: &[Pop3Action]| -> Vec<u8> {
        actions.iter().flat_map(|a| if let Pop3Action::Send(b) = a { b.clone() } else { Vec::new() }).collect()
    };
    // 100 listings of ~400 KB each, pipelined: one round produces about OUTPUT_ROUND.
    let mut actions = Vec::new();
    session.receive("LIST\r\nUIDL\r\n".repeat(50).as_bytes(), &mut actions);
    let mut output = sent(&actions);
    assert!(session.is_paused());
    assert!(output.len() < OUTPUT_ROUND + 2 * LISTING_CHUNK, "{} octets in one round", output.len());
    let mut rounds = 1;
    while session.is_paused() {
        let mut actions = Vec::new();
        session.resume(&mut actions);
        let round = sent(&actions);
        assert!(round.len() < OUTPUT_ROUND + 2 * LISTING_CHUNK, "{} octets in one round", round.len());
        output.extend(round);
        rounds += 1;
    }
    let text = String::from_utf8(output).unwrap();
    let answers: Vec<&str> = text.split_inclusive(".\r\n").filter(|a| a.starts_with("+OK")).collect();
    assert_eq!(answers.len(), 100);
    let list = answers[0];
    assert!(list.starts_with("+OK 19999 messages ("), "{}", &list[..40]);
    let lines: Vec<&str> = list.lines().collect();
    assert_eq!(lines.len(), 1 + 19_999 + 1);
    assert_eq!(lines[1], "1 101");
    assert_eq!(lines[2], "3 103", "message 2 is marked deleted");
    assert_eq!(lines[19_999], "20000 20100");
    let uidl: Vec<&str> = answers[1].lines().collect();
    assert_eq!(uidl[0], "+OK unique-id listing follows");
    assert_eq!(uidl[1], "1 1000001");
    assert_eq!(uidl[2], "3 1000003");
    assert!(rounds > 100, "{rounds} rounds");
    assert!(answers.iter().all(|a| *a == answers[0] || *a == answers[1]));
}
