//! The SMTP client session (`engine::smtp::client`): what a hostile or broken server
//! sends must never make it panic, grow without bound, or depend on how the bytes arrive.
//!
//! Input: `[n] [n chunk sizes] server bytes`. The bytes are fed to a session once whole
//! and once in chunks of the sizes the input picks (a socket's short reads); the session
//! works through a fixed round of operations (a transaction of two recipients, a probe,
//! STARTTLS, AUTH, another transaction, QUIT), moving on at each event. Both runs must
//! give the same events, commands and final error. Every reply the reader takes has a
//! code in 200..=599, 1 to 100 lines of printable ASCII, and a summary of at most 2048
//! characters; every command the session writes is one CRLF-terminated line.
#![no_main]

mod common;

use engine::smtp::client::reply::MAX_REPLY_LINES;
use engine::smtp::client::{ClientSession, Event, MessageData, OutboundMessage, Progress, ReplyReader};
use libfuzzer_sys::fuzz_target;

const RECIPIENTS: [&str; 2] = ["a@x.test", "b@x.test"];
const MESSAGE: &[&[u8]] = &[b"Subject: fuzz\r\n\r\n", b".body\r\n"];

/// Runs the session over `chunks`; returns what happened, in order.
fn drive<'a>(chunks: impl Iterator<Item = &'a [u8]>) -> Vec<String> {
    let mut session = ClientSession::new("fuzz.test").expect("a valid name");
    let recipients: Vec<String> = RECIPIENTS.iter().map(|r| r.to_string()).collect();
    let mut log = Vec::new();
    let mut round = 0usize;
    for chunk in chunks {
        let mut rest = chunk;
        while !rest.is_empty() {
            let (taken, progress) = session.receive(rest);
            assert!(taken > 0 && taken <= rest.len(), "took {taken} of {}", rest.len());
            rest = &rest[taken..];
            let event = match progress {
                Err(error) => {
                    log.push(format!("error: {error}"));
                    return log;
                }
                Ok(Progress::Event(event)) => event,
                Ok(_) => continue,
            };
            if let Event::Sent(sent) = &event {
                assert_eq!(sent.outcomes.len(), RECIPIENTS.len());
                assert_eq!(sent.decided_by.len(), RECIPIENTS.len());
            }
            log.push(format!("{event:?}"));
            let next = match event {
                Event::Closed => return log,
                Event::SendData => Ok(None),
                Event::StartTls => session.tls_established().map(|()| None),
                _ => {
                    round += 1;
                    match round % 6 {
                        1 | 5 => session.send(&OutboundMessage {
                            sender: "s@y.test",
                            recipients: &recipients,
                            data: MessageData::Parts(MESSAGE),
                        }),
                        2 => session.verify("c@x.test"),
                        3 => session.starttls().map(|()| None),
                        4 => session.auth_plain("u@y.test", "pw").map(|()| None),
                        _ => Ok(if session.quit() { None } else { Some(Event::Closed) }),
                    }
                }
            };
            match next {
                Ok(Some(event)) => log.push(format!("at once: {event:?}")),
                Ok(None) => {}
                Err(error) => {
                    log.push(format!("refused: {error}"));
                    return log;
                }
            }
            let output = session.take_output();
            for line in output.split_inclusive(|&b| b == b'\n') {
                assert!(line.ends_with(b"\r\n"), "a command without CRLF: {line:?}");
                assert!(!line[..line.len() - 2].iter().any(|&b| b == b'\r' || b == b'\n'), "{line:?}");
            }
            log.push(String::from_utf8_lossy(&output).into_owned());
        }
    }
    log
}

fuzz_target!(|data: &[u8]| {
    let Some((lengths, server)) = common::lengths_and_stream(data) else { return };
    let whole = drive(std::iter::once(server));
    let chunked = drive(common::cut(server, lengths).into_iter());
    assert_eq!(whole, chunked, "the session depends on how the bytes arrived");

    let mut reader = ReplyReader::default();
    let mut remaining = server;
    while !remaining.is_empty() {
        let (taken, reply) = reader.push(remaining);
        remaining = &remaining[taken..];
        match reply {
            Some(Ok(reply)) => {
                assert!((200..600).contains(&reply.code), "code {}", reply.code);
                assert!(!reply.lines.is_empty() && reply.lines.len() <= MAX_REPLY_LINES, "{} lines", reply.lines.len());
                for line in &reply.lines {
                    assert!(line.bytes().all(|b| b == b' ' || b.is_ascii_graphic()), "unprintable {line:?}");
                }
                let summary = reply.summary();
                assert!(summary.len() <= 2048, "summary of {} characters", summary.len());
                assert!(summary.starts_with(&reply.code.to_string()));
            }
            Some(Err(_)) => break,
            None => {}
        }
    }
});
