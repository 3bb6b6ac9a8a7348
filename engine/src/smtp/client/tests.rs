//! Golden transcripts: the client session driven directly, no socket. In a transcript
//! `S:` is a line the server sends, `C:` a line the session must have written by then,
//! `>` an operation (`send FROM TO…`, `send-big …`, `verify TO`, `starttls`, `tls`,
//! `auth USER PASS`, `quit`, `lost`: the driver reports the connection gone), `=` the
//! next event (its `Debug` form), `!` an error containing the text, and `usable` /
//! `unusable` what the session says of itself.

use super::*;

const MESSAGE: &[&[u8]] = &[b"Subject: s\r\n\r\n", b"hi\r\n"];
const BIG: &[&[u8]] = &[&[b'x'; 200]];
const EIGHT_BIT: &[&[u8]] = &["Subject: é\r\n\r\n".as_bytes()];

/// Runs one transcript; panics with the line number where it departs.
fn run(transcript: &str) {
    let mut session = ClientSession::new("client.test").unwrap();
    let mut written: Vec<String> = Vec::new();
    let mut results: Vec<Result<Event, String>> = Vec::new();
    let collect = |session: &mut ClientSession, written: &mut Vec<String>| {
        let output = session.take_output();
        for line in String::from_utf8(output).unwrap().split_terminator("\r\n") {
            written.push(line.to_string());
        }
    };
    for (number, line) in transcript.lines().map(str::trim).enumerate().filter(|(_, l)| !l.is_empty()) {
        let at = format!("line {}: {line}", number + 1);
        let (kind, rest) = line.split_once(' ').unwrap_or((line, ""));
        match kind {
            "S:" => {
                let bytes = format!("{rest}\r\n");
                let mut bytes = bytes.as_bytes();
                while !bytes.is_empty() {
                    let (taken, progress) = session.receive(bytes);
                    bytes = &bytes[taken..];
                    match progress {
                        Ok(Progress::Event(event)) => results.push(Ok(event)),
                        Ok(Progress::NeedMore | Progress::Reply) => {}
                        Err(error) => results.push(Err(error.to_string())),
                    }
                    collect(&mut session, &mut written);
                }
            }
            "C:" => {
                assert!(!written.is_empty(), "{at}: the session wrote nothing");
                assert_eq!(written.remove(0), rest, "{at}");
            }
            ">" => {
                let words: Vec<&str> = rest.split(' ').collect();
                let recipients: Vec<String> = words.iter().skip(2).map(|w| w.replace("\\r", "\r")).collect();
                let sender =
                    words
                        .get(1)
                        .map_or(String::new(), |w| if *w == "<>" { String::new() } else { w.replace("\\r", "\r") });
                let immediate = match words[0] {
                    "send" | "send-big" | "send-8bit" => {
                        let parts = match words[0] {
                            "send" => MESSAGE,
                            "send-big" => BIG,
                            _ => EIGHT_BIT,
                        };
                        session.send(&OutboundMessage {
                            sender: &sender,
                            recipients: &recipients,
                            data: MessageData::Parts(parts),
                        })
                    }
                    "verify" => session.verify(&words[1].replace("\\r", "\r")),
                    "starttls" => session.starttls().map(|()| None),
                    "tls" => session.tls_established().map(|()| None),
                    "auth" => session.auth_plain(words[1], words[2]).map(|()| None),
                    "quit" => {
                        assert!(session.quit(), "{at}: quit refused");
                        Ok(None)
                    }
                    "lost" => {
                        let lost = io::Error::new(io::ErrorKind::UnexpectedEof, "gone");
                        session.failed(SendError::Io(lost)).map(Some)
                    }
                    other => panic!("{at}: unknown operation {other}"),
                };
                match immediate {
                    Ok(Some(event)) => results.push(Ok(event)),
                    Ok(None) => {}
                    Err(error) => results.push(Err(error.to_string())),
                }
                collect(&mut session, &mut written);
            }
            "=" => {
                assert!(!results.is_empty(), "{at}: no event");
                match results.remove(0) {
                    Ok(event) => assert_eq!(format!("{event:?}"), rest, "{at}"),
                    Err(error) => panic!("{at}: error {error}"),
                }
            }
            "!" => match results.remove(0) {
                Err(error) => assert!(error.contains(rest), "{at}: error {error}"),
                Ok(event) => panic!("{at}: event {event:?}"),
            },
            "usable" => assert!(session.is_usable(), "{at}"),
            "unusable" => assert!(!session.is_usable(), "{at}"),
            _ => panic!("{at}: unknown line"),
        }
    }
    assert!(written.is_empty(), "written but not expected: {written:?}");
    assert!(results.is_empty(), "events not expected: {results:?}");
}

const GREET_PIPELINING: &str = "
    S: 220 mx.test ESMTP
    C: EHLO client.test
    S: 250-mx.test
    S: 250-PIPELINING
    S: 250-SIZE 100
    S: 250 8BITMIME
    = Ready
";

const GREET_PLAIN: &str = "
    S: 220 mx.test ESMTP
    C: EHLO client.test
    S: 250 mx.test
    = Ready
";

#[test]
fn pipelined_transaction_with_mixed_recipients() {
    run(&(GREET_PIPELINING.to_string()
        + r#"
        > send s@x a@y b@y c@y
        C: MAIL FROM:<s@x> SIZE=18
        C: RCPT TO:<a@y>
        C: RCPT TO:<b@y>
        C: RCPT TO:<c@y>
        C: DATA
        S: 250 2.1.0 Ok
        S: 250 2.1.5 Ok
        S: 450 4.2.0 <b@y>: busy
        S: 550 5.1.1 <c@y>: User unknown
        S: 354 go
        = SendData
        S: 250 2.0.0 queued
        = Sent(Sent { outcomes: [Accepted, Deferred("450 4.2.0 <b@y>: busy"), Rejected("550 5.1.1 <c@y>: User unknown")], decided_by: [EndOfData, Rcpt, Rcpt], final_reply: Some("250 2.0.0 queued") })
        usable
        > send-8bit <> a@y
        C: MAIL FROM:<> SIZE=15 BODY=8BITMIME
        C: RCPT TO:<a@y>
        C: DATA
        S: 250 ok
        S: 250 ok
        S: 354 go
        = SendData
        S: 452 4.3.1 full
        = Sent(Sent { outcomes: [Deferred("452 4.3.1 full")], decided_by: [EndOfData], final_reply: Some("452 4.3.1 full") })
        > quit
        C: QUIT
        S: 221 bye
        = Closed
    "#));
}

#[test]
fn without_pipelining_each_command_waits_for_its_reply() {
    run(&(GREET_PLAIN.to_string()
        + r#"
        > send s@x a@y b@y
        C: MAIL FROM:<s@x>
        S: 250 ok
        C: RCPT TO:<a@y>
        S: 250 ok
        C: RCPT TO:<b@y>
        S: 250 ok
        C: DATA
        S: 354 go
        = SendData
        S: 250 queued
        = Sent(Sent { outcomes: [Accepted, Accepted], decided_by: [EndOfData, EndOfData], final_reply: Some("250 queued") })
    "#));
}

#[test]
fn refusals_before_the_data_reset_the_transaction() {
    run(&(GREET_PIPELINING.to_string()
        + r#"
        > send s@x a@y b@y
        C: MAIL FROM:<s@x> SIZE=18
        C: RCPT TO:<a@y>
        C: RCPT TO:<b@y>
        C: DATA
        S: 451 4.3.0 try later
        S: 503 5.5.1 no MAIL
        S: 503 5.5.1 no MAIL
        S: 503 5.5.1 no valid recipients
        C: RSET
        S: 250 ok
        = Sent(Sent { outcomes: [Deferred("451 4.3.0 try later"), Deferred("451 4.3.0 try later")], decided_by: [Mail, Mail], final_reply: None })
        > send s@x a@y
        C: MAIL FROM:<s@x> SIZE=18
        C: RCPT TO:<a@y>
        C: DATA
        S: 250 ok
        S: 550 5.1.1 unknown
        S: 354 go on anyway
        C: .
        S: 250 empty
        C: RSET
        S: 250 ok
        = Sent(Sent { outcomes: [Rejected("550 5.1.1 unknown")], decided_by: [Rcpt], final_reply: None })
        usable
    "#));
    run(&(GREET_PLAIN.to_string()
        + r#"
        > send s@x a@y
        C: MAIL FROM:<s@x>
        S: 250 ok
        C: RCPT TO:<a@y>
        S: 250 ok
        C: DATA
        S: 554 5.5.0 no data today
        C: RSET
        S: 500 what
        = Sent(Sent { outcomes: [Rejected("554 5.5.0 no data today")], decided_by: [Data], final_reply: None })
        unusable
        > send s@x a@y
        ! connection unusable after an earlier failure: RSET: 500 what
    "#));
}

#[test]
fn decided_without_a_word_to_the_server() {
    run(&(GREET_PIPELINING.to_string()
        + r#"
        > send-big s@x a@y
        = Sent(Sent { outcomes: [Rejected("552 5.3.4 message size 202 exceeds the peer's limit of 100 octets (not sent)")], decided_by: [NotSent], final_reply: None })
        > send s@x\r a@y
        = Sent(Sent { outcomes: [Rejected("invalid sender address (control characters), not sent")], decided_by: [NotSent], final_reply: None })
        > send s@x
        = Sent(Sent { outcomes: [], decided_by: [], final_reply: None })
        > verify a@y\r
        = Verified(Rejected("invalid recipient address (control characters)"))
        usable
    "#));
}

#[test]
fn a_closing_server_breaks_the_session_unless_the_outcome_is_decided() {
    run(&(GREET_PIPELINING.to_string()
        + r#"
        > send s@x a@y
        C: MAIL FROM:<s@x> SIZE=18
        C: RCPT TO:<a@y>
        C: DATA
        S: 250 ok
        S: 421 4.3.2 shutting down
        ! peer is closing the connection: 421 4.3.2 shutting down
        unusable
    "#));
    run(&(GREET_PIPELINING.to_string()
        + r#"
        > send s@x a@y
        C: MAIL FROM:<s@x> SIZE=18
        C: RCPT TO:<a@y>
        C: DATA
        S: 550 5.7.1 not you
        S: 421 4.3.2 shutting down
        = Sent(Sent { outcomes: [Rejected("550 5.7.1 not you")], decided_by: [Mail], final_reply: None })
        unusable
    "#));
    run(&(GREET_PLAIN.to_string()
        + r#"
        > send s@x a@y
        C: MAIL FROM:<s@x>
        S: 550 5.7.1 not you
        C: RSET
        > lost
        = Sent(Sent { outcomes: [Rejected("550 5.7.1 not you")], decided_by: [Mail], final_reply: None })
        unusable
    "#));
    run(&(GREET_PLAIN.to_string()
        + r#"
        > send s@x a@y
        C: MAIL FROM:<s@x>
        S: 354 what
        ! unexpected reply to MAIL: 354 what
    "#));
}

#[test]
fn after_a_failure_every_byte_gets_the_same_answer_however_it_arrives() {
    // Found by the smtp_client fuzz target: an over-long line broke a session whose
    // outcome was decided, and what came after depended on where the line was cut.
    let long = format!("250 {}", "x".repeat(reply::MAX_REPLY_LINE));
    let outcome = |chunk: usize| {
        let mut session = ClientSession::new("client.test").unwrap();
        let server = format!("220 mx\r\n250 mx\r\n550 5.7.1 not you\r\n{long}\r\nT\r\n");
        let mut log = Vec::new();
        let mut rest = server.as_bytes();
        while !rest.is_empty() {
            let (taken, progress) = session.receive(&rest[..chunk.min(rest.len())]);
            rest = &rest[taken..];
            match progress {
                Ok(Progress::Event(Event::Ready)) => {
                    let to = vec!["a@y".to_string()];
                    let message = OutboundMessage { sender: "s@x", recipients: &to, data: MessageData::Parts(MESSAGE) };
                    session.send(&message).unwrap();
                }
                Ok(Progress::Event(event)) => log.push(format!("{event:?}")),
                Ok(_) => {}
                Err(error) => {
                    log.push(format!("error: {error}"));
                    break;
                }
            }
        }
        log
    };
    let whole = outcome(usize::MAX);
    assert_eq!(
        whole,
        [
            r#"Sent(Sent { outcomes: [Rejected("550 5.7.1 not you")], decided_by: [Mail], final_reply: None })"#,
            "error: SMTP protocol error: connection unusable after an earlier failure: SMTP protocol error: reply line \
             longer than 2048 octets",
        ]
    );
    for chunk in [1, 7, 100] {
        assert_eq!(outcome(chunk), whole, "in chunks of {chunk}");
    }
}

#[test]
fn greeting_ehlo_and_helo() {
    run("
        S: 554 5.7.1 go away
        ! greeting: 554 5.7.1 go away
    ");
    run("
        S: 220 old.test
        C: EHLO client.test
        S: 502 5.5.2 what is EHLO
        C: HELO client.test
        S: 250 old.test
        = Ready
        > send s@x a@y
        C: MAIL FROM:<s@x>
    ");
    run("
        S: 220 old.test
        C: EHLO client.test
        S: 451 busy
        ! EHLO: 451 busy
    ");
    run("
        S: 220 mx.test
        C: EHLO client.test
        S: 250 mx.test
        = Ready
        S: 250 unasked
        ! unexpected reply 250 unasked
    ");
}

#[test]
fn starttls_forgets_what_was_said_in_the_clear() {
    run("
        S: 220 mx.test
        C: EHLO client.test
        S: 250-mx.test
        S: 250-STARTTLS
        S: 250 PIPELINING
        = Ready
        > starttls
        C: STARTTLS
        S: 220 2.0.0 go ahead
        = StartTls
        > tls
        C: EHLO client.test
        S: 250-mx.test
        S: 250 AUTH PLAIN LOGIN
        = Ready
        > auth u@d secret
        C: AUTH PLAIN AHVAZABzZWNyZXQ=
        S: 535 5.7.8 no
        ! AUTH PLAIN: 535 5.7.8 no
    ");
    run("
        S: 220 mx.test
        C: EHLO client.test
        S: 250 STARTTLS
        = Ready
        > starttls
        C: STARTTLS
        S: 454 4.7.0 TLS not available
        = TlsRefused(\"454 4.7.0 TLS not available\")
        > auth u@d pw
        C: AUTH PLAIN AHVAZABwdw==
        S: 235 2.7.0 ok
        = Authenticated
    ");
}

#[test]
fn bytes_after_the_starttls_reply_are_left_to_the_driver() {
    let mut session = ClientSession::new("client.test").unwrap();
    let greeting = b"220 mx\r\n250 STARTTLS\r\n";
    let (taken, _) = session.receive(greeting);
    let (_, ready) = session.receive(&greeting[taken..]);
    assert_eq!(ready.unwrap(), Progress::Event(Event::Ready));
    session.starttls().unwrap();
    let injected = b"220 go\r\n250 injected\r\n";
    let (taken, progress) = session.receive(injected);
    assert_eq!((taken, progress.unwrap()), (8, Progress::Event(Event::StartTls)));
    // Had the driver fed them on, the session refuses them too.
    let (_, progress) = session.receive(&injected[taken..]);
    assert!(progress.unwrap_err().to_string().contains("data after the 220 to STARTTLS"));
}

#[test]
fn verify_probes_and_resets() {
    run(&(GREET_PIPELINING.to_string()
        + r#"
        > verify a@y
        C: MAIL FROM:<>
        S: 250 ok
        C: RCPT TO:<a@y>
        S: 550 5.1.1 unknown
        C: RSET
        S: 250 ok
        = Verified(Rejected("550 5.1.1 unknown"))
        > verify b@y
        C: MAIL FROM:<>
        S: 250 ok
        C: RCPT TO:<b@y>
        S: 250 ok
        C: RSET
        S: 250 ok
        = Verified(Accepted)
        > verify c@y
        C: MAIL FROM:<>
        S: 550 5.7.1 no null sender
        C: RSET
        S: 250 ok
        = Verified(Deferred("550 5.7.1 no null sender"))
        usable
    "#));
}

#[test]
fn a_busy_or_broken_session_refuses_new_work() {
    let mut session = ClientSession::new("client.test").unwrap();
    assert!(session.send(&OutboundMessage { sender: "", recipients: &[], data: MessageData::Parts(&[]) }).is_err());
    assert!(!session.quit());
    assert!(ClientSession::new("two words").is_err());
    assert!(ClientSession::new("").is_err());
}
