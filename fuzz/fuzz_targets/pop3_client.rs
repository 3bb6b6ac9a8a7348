//! The POP3 client's response reader (`engine::pop3::client`): what a hostile or broken
//! server sends must never make it panic or hold more than its bound, and the responses
//! must not depend on how the bytes arrive.
//!
//! Input: `[n] [n chunk sizes] server bytes`. A fixed pipelined round of commands (USER,
//! PASS, STAT, LIST, RETR 1, DELE 1, RETR 2, QUIT) is queued; the bytes are fed whole and
//! in chunks of the sizes the input picks. Both must give the same responses and the same
//! error; every body stays within the bound.
#![no_main]

mod common;

use engine::pop3::client::{Pop3Client, Response};
use libfuzzer_sys::fuzz_target;

const MAX_BODY: usize = 4096;
const COMMANDS: [(&str, bool); 8] = [
    ("USER u", false),
    ("PASS p", false),
    ("STAT", false),
    ("LIST", true),
    ("RETR 1", true),
    ("DELE 1", false),
    ("RETR 2", true),
    ("QUIT", false),
];

fn drive<'a>(chunks: impl Iterator<Item = &'a [u8]>) -> (Vec<Response>, Option<String>) {
    let mut client = Pop3Client::new(MAX_BODY);
    for (line, multiline) in COMMANDS {
        client.command(line, multiline).expect("one line");
    }
    let mut responses = Vec::new();
    for chunk in chunks {
        let mut rest = chunk;
        while !rest.is_empty() {
            let (taken, response) = client.receive(rest);
            assert!(taken > 0 && taken <= rest.len());
            rest = &rest[taken..];
            match response {
                Some(Ok(response)) => {
                    if let Response::Multiline { body, .. } = &response {
                        assert!(body.len() <= MAX_BODY + 3, "a body of {} octets", body.len());
                    }
                    responses.push(response);
                }
                Some(Err(error)) => return (responses, Some(error)),
                None => {}
            }
        }
    }
    (responses, None)
}

fuzz_target!(|data: &[u8]| {
    let Some((lengths, server)) = common::lengths_and_stream(data) else { return };
    let whole = drive(std::iter::once(server));
    let chunked = drive(common::cut(server, lengths).into_iter());
    assert_eq!(whole, chunked, "the responses depend on how the bytes arrived");
});
