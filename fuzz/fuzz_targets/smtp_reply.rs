//! The SMTP client's reply reader (`engine::forward::client`, through its
//! `fuzz_read_replies` hook): what a hostile or broken peer sends must never make it
//! panic or grow without bound, and the replies read must not depend on how the bytes
//! arrive.
//!
//! Input: `[n] [n read sizes] peer bytes`. The bytes are read once through one large
//! buffer and once through a `BufReader` of a size the input picks over a reader that
//! returns the read sizes the input picks (a socket's short reads). Both must give the
//! same replies and the same final error; every reply's code is 200..=599, it has 1 to
//! 100 lines of printable ASCII each, and its summary fits in 2048 characters.
#![no_main]

use std::io::{BufReader, Read};

use engine::forward::client::{fuzz_read_replies, MAX_REPLY_LINES};
use libfuzzer_sys::fuzz_target;

/// Returns at most the next chosen number of bytes per read.
struct Trickle<'a> {
    data: &'a [u8],
    sizes: &'a [u8],
    next: usize,
}

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let size = match self.sizes {
            [] => buf.len(),
            sizes => usize::from(sizes[self.next % sizes.len()]).max(1),
        };
        self.next += 1;
        let n = size.min(buf.len()).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&n, rest)) = data.split_first() else { return };
    let n = usize::from(n % 16).min(rest.len());
    let (sizes, peer) = rest.split_at(n);

    let whole = fuzz_read_replies(&mut BufReader::with_capacity(peer.len().max(1) + 1, peer));
    let capacity = sizes.first().map_or(7, |&s| usize::from(s).max(1));
    let trickle = Trickle { data: peer, sizes: sizes.get(1..).unwrap_or_default(), next: 0 };
    let chunked = fuzz_read_replies(&mut BufReader::with_capacity(capacity, trickle));
    assert_eq!(whole, chunked, "the replies depend on how the bytes arrived");

    let (replies, _error) = whole;
    for (code, lines, summary, _extensions) in &replies {
        assert!((200..600).contains(code), "code {code}");
        assert!(!lines.is_empty() && lines.len() <= MAX_REPLY_LINES, "{} lines", lines.len());
        for line in lines {
            assert!(line.bytes().all(|b| b == b' ' || b.is_ascii_graphic()), "unprintable {line:?}");
        }
        assert!(summary.len() <= 2048, "summary of {} characters", summary.len());
        assert!(summary.starts_with(&code.to_string()));
    }
});
