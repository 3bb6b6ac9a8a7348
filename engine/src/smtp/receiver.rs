//! Byte-level framing for SMTP: command lines and message data.
//!
//! These receivers know nothing of commands; they only cut the byte stream. Both are
//! bounded: a command line never grows past its limit, and message data past the size
//! limit is counted and dropped, not kept.

/// RFC 5321 §4.5.3.1.4: a command line is at most 512 octets, CRLF included.
pub const MAX_COMMAND_LINE: usize = 512;

use std::io;

use crate::budget::Share;
use crate::envelope::Body;
pub use crate::lines::{Line, LineReceiver};
use crate::store::bodies::{BodyDir, SpoolFile, SPILL_AT, SPOOL_BUFFER};

/// Where the data receiver is within the current line (RFC 5321 §4.5.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DataState {
    /// Just after CRLF (or at the very start): a `.` here is special.
    LineStart,
    /// Inside a line.
    Middle,
    /// Just after a CR inside a line.
    Cr,
    /// A `.` at line start, not yet kept.
    Dot,
    /// `.` then CR at line start: one LF more ends the data.
    DotCr,
}

/// Receives message data after `354`, undoing dot-stuffing, until `<CRLF>.<CRLF>`.
///
/// Only a dot line preceded by CRLF and followed by CRLF ends the data: `\n.\n`,
/// `\n.\r\n` and `\r\n.\n` do not (SMTP smuggling). Bare CR and LF are kept as sent.
/// The CRLF before the final dot belongs to the message.
#[derive(Debug)]
pub struct DataReceiver {
    state: DataState,
    body: Vec<u8>,
    /// Unstuffed octets seen, kept or not.
    size: usize,
    limit: usize,
    /// What `body`'s capacity holds of the sessions' memory budget, if there is one.
    share: Option<Share>,
    /// Set when the budget could not cover the message: it is dropped like an oversized one.
    starved: bool,
    /// Where a body over [`SPILL_AT`] goes instead of memory; without one it stays in
    /// `body` (transcript tests, and maild's own bounces).
    spill_dir: Option<BodyDir>,
    /// The spool file once the body went there.
    spooled: Option<SpoolFile>,
    /// Why the spool file could not be written: the message is refused with `451`/`452`.
    spool_error: Option<io::Error>,
}

/// The result of feeding bytes to a [`DataReceiver`].
#[derive(Debug, PartialEq, Eq)]
pub enum DataProgress {
    /// All of the input was message data; more is needed.
    NeedMore,
    /// The terminator ended at `consumed` bytes into the input; the rest is commands.
    Done { consumed: usize },
}

impl DataReceiver {
    pub fn new(limit: usize) -> DataReceiver {
        DataReceiver {
            state: DataState::LineStart,
            body: Vec::new(),
            size: 0,
            limit,
            share: None,
            starved: false,
            spill_dir: None,
            spooled: None,
            spool_error: None,
        }
    }

    /// Sends a body over [`SPILL_AT`] octets to a spool file in `dir` as it arrives.
    pub fn spilling_to(self, dir: Option<BodyDir>) -> DataReceiver {
        DataReceiver { spill_dir: dir, ..self }
    }

    /// A receiver whose buffer is paid for from a memory budget.
    pub fn with_budget(limit: usize, share: Share) -> DataReceiver {
        DataReceiver { share: Some(share), ..DataReceiver::new(limit) }
    }

    /// True once more unstuffed octets arrived than the limit allows.
    pub fn over_limit(&self) -> bool {
        self.size > self.limit
    }

    /// True when the memory budget could not hold the message.
    pub fn starved(&self) -> bool {
        self.starved
    }

    /// The body held in memory (tests; a spooled body is not in it).
    pub fn into_body(self) -> Vec<u8> {
        self.body
    }

    /// The message and its share of the budget, which the caller holds until the message
    /// is stored; an error if its spool file could not be written.
    pub fn into_parts(mut self) -> (io::Result<Body>, Option<Share>) {
        let body = match (self.spool_error.take(), self.spooled.take()) {
            (Some(error), _) => Err(error),
            (None, Some(mut file)) => file.finish().map(|()| Body::Spooled(Box::new(file))),
            (None, None) => Ok(Body::Memory(std::mem::take(&mut self.body))),
        };
        (body, self.share.take())
    }

    fn keep(&mut self, bytes: &[u8]) {
        self.size = self.size.saturating_add(bytes.len());
        if self.size > self.limit || self.starved || self.spool_error.is_some() {
            // The message will be refused, so stop holding it.
            self.drop_body();
            return;
        }
        if let Some(file) = &mut self.spooled {
            if let Err(error) = file.write(bytes) {
                self.spool_failed(error);
            }
            return;
        }
        if self.body.len() + bytes.len() > SPILL_AT {
            if let Some(dir) = self.spill_dir.clone() {
                if let Err(error) = self.spill(&dir, bytes) {
                    self.spool_failed(error);
                }
                return;
            }
        }
        let needed = self.body.len() + bytes.len();
        if needed > self.body.capacity() {
            // Grow as Vec would (doubling), but reserve exactly, so the share covers the
            // whole allocation.
            let capacity = (self.body.capacity() * 2).max(needed).max(4096).min(self.limit.max(needed));
            if let Some(share) = &mut self.share {
                if !share.grow_to(capacity) {
                    self.starved = true;
                    self.drop_body();
                    return;
                }
            }
            self.body.reserve_exact(capacity - self.body.len());
        }
        self.body.extend_from_slice(bytes);
    }

    /// Moves the body so far, and `bytes`, to a new spool file; from now on the session's
    /// share of the budget is the file's write buffer.
    fn spill(&mut self, dir: &BodyDir, bytes: &[u8]) -> io::Result<()> {
        let mut file = dir.spool()?;
        file.write(&self.body)?;
        file.write(bytes)?;
        self.body = Vec::new();
        self.spooled = Some(file);
        if let Some(share) = &mut self.share {
            share.clear();
            if !share.grow_to(SPOOL_BUFFER) {
                self.starved = true;
                self.drop_body();
            }
        }
        Ok(())
    }

    fn spool_failed(&mut self, error: io::Error) {
        self.spool_error = Some(error);
        self.drop_body();
    }

    fn drop_body(&mut self) {
        // Dropping the spool file removes it.
        let held = self.spooled.take().is_some() || self.body.capacity() > 0;
        if held {
            self.body = Vec::new();
            if let Some(share) = &mut self.share {
                share.clear();
            }
        }
    }

    pub fn feed(&mut self, input: &[u8]) -> DataProgress {
        let mut i = 0;
        while i < input.len() {
            match self.state {
                DataState::Middle => {
                    // Fast path: copy everything up to the next CR in one go.
                    let rest = &input[i..];
                    match rest.iter().position(|&b| b == b'\r') {
                        Some(cr) => {
                            self.keep(&rest[..=cr]);
                            self.state = DataState::Cr;
                            i += cr + 1;
                        }
                        None => {
                            self.keep(rest);
                            i = input.len();
                        }
                    }
                }
                DataState::LineStart => {
                    let b = input[i];
                    i += 1;
                    self.state = match b {
                        b'.' => DataState::Dot,
                        b'\r' => {
                            self.keep(b"\r");
                            DataState::Cr
                        }
                        _ => {
                            self.keep(&[b]);
                            DataState::Middle
                        }
                    };
                }
                DataState::Cr => {
                    let b = input[i];
                    i += 1;
                    self.keep(&[b]);
                    self.state = match b {
                        b'\n' => DataState::LineStart,
                        b'\r' => DataState::Cr,
                        _ => DataState::Middle,
                    };
                }
                DataState::Dot => {
                    let b = input[i];
                    i += 1;
                    self.state = if b == b'\r' {
                        // Nothing kept yet: ".\r" may still become the terminator.
                        DataState::DotCr
                    } else {
                        // A line starting with a period and holding more: the period
                        // was stuffing and is dropped.
                        self.keep(&[b]);
                        DataState::Middle
                    };
                }
                DataState::DotCr => {
                    let b = input[i];
                    i += 1;
                    if b == b'\n' {
                        return DataProgress::Done { consumed: i };
                    }
                    // ".\r" followed by something else: the period was stuffing.
                    self.keep(b"\r");
                    self.keep(&[b]);
                    self.state = match b {
                        b'\r' => DataState::Cr,
                        _ => DataState::Middle,
                    };
                }
            }
        }
        DataProgress::NeedMore
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` one byte at a time and whole, and checks both agree.
    fn data(input: &[u8]) -> (Option<usize>, Vec<u8>) {
        let mut whole = DataReceiver::new(1 << 20);
        let whole_done = match whole.feed(input) {
            DataProgress::Done { consumed } => Some(consumed),
            DataProgress::NeedMore => None,
        };
        let mut bytewise = DataReceiver::new(1 << 20);
        let mut bytewise_done = None;
        for (i, b) in input.iter().enumerate() {
            if let DataProgress::Done { .. } = bytewise.feed(&[*b]) {
                bytewise_done = Some(i + 1);
                break;
            }
        }
        let body = whole.into_body();
        assert_eq!(whole_done, bytewise_done);
        assert_eq!(body, bytewise.into_body());
        (whole_done, body)
    }

    #[test]
    fn data_table() {
        let table: &[(&[u8], Option<usize>, &[u8])] = &[
            (b".\r\n", Some(3), b""),
            (b"hi\r\n.\r\nQUIT\r\n", Some(7), b"hi\r\n"),
            (b"..dot\r\n.\r\n", Some(10), b".dot\r\n"),
            (b"a\r\n..\r\n.\r\n", Some(10), b"a\r\n.\r\n"),
            // Smuggling attempts: none of these end the data, and the bytes are kept.
            (b"a\n.\nMAIL FROM:<x@y>\r\n", None, b"a\n.\nMAIL FROM:<x@y>\r\n"),
            (b"a\n.\r\nMAIL FROM:<x@y>\r\n", None, b"a\n.\r\nMAIL FROM:<x@y>\r\n"),
            (b"a\r.\r\nRSET\r\n", None, b"a\r.\r\nRSET\r\n"),
            // "\r\n.\n": a CRLF line starting with a period and holding more: unstuffed.
            (b"a\r\n.\nb\r\n", None, b"a\r\n\nb\r\n"),
            (b"a\r\n.\rb\r\n", None, b"a\r\n\rb\r\n"),
            (b"a\r\n.\r\r\n.\r\n", Some(10), b"a\r\n\r\r\n"),
            (b"bare\rcr\r\n.\r\n", Some(12), b"bare\rcr\r\n"),
            (b"nul\0byte\r\n.\r\n", Some(13), b"nul\0byte\r\n"),
            (b"\xff\xfe8bit\r\n.\r\n", Some(11), b"\xff\xfe8bit\r\n"),
        ];
        for (input, done, body) in table {
            let (got_done, got_body) = data(input);
            assert_eq!(got_done, *done, "{:?}", String::from_utf8_lossy(input));
            assert_eq!(got_body, body.to_vec(), "{:?}", String::from_utf8_lossy(input));
        }
    }

    #[test]
    fn size_is_counted_past_the_limit_without_keeping_bytes() {
        let mut receiver = DataReceiver::new(10);
        assert_eq!(receiver.feed(&[b'x'; 1000]), DataProgress::NeedMore);
        assert!(receiver.over_limit());
        assert_eq!(receiver.feed(b"\r\n.\r\n"), DataProgress::Done { consumed: 5 });
        assert!(receiver.into_body().is_empty());
    }

    #[test]
    fn a_spent_budget_starves_the_message_and_gives_its_share_back() {
        let budget = crate::budget::MemoryBudget::new(8192);
        let mut held = budget.share();
        assert!(held.grow_to(4096));
        let mut receiver = DataReceiver::with_budget(1 << 20, budget.share());
        assert_eq!(receiver.feed(&[b'x'; 3000]), DataProgress::NeedMore);
        assert!(!receiver.starved());
        assert_eq!(budget.used(), 8192);
        assert_eq!(receiver.feed(&[b'y'; 3000]), DataProgress::NeedMore);
        assert!(receiver.starved());
        assert_eq!(budget.used(), 4096, "the starved receiver holds nothing");
        assert_eq!(receiver.feed(b"\r\n.\r\n"), DataProgress::Done { consumed: 5 });
        drop(held);
        let mut fed = DataReceiver::with_budget(1 << 20, budget.share());
        assert_eq!(fed.feed(b"hi\r\n.\r\n"), DataProgress::Done { consumed: 7 });
        let (body, share) = fed.into_parts();
        let Ok(Body::Memory(body)) = body else { panic!("a small body stays in memory") };
        assert_eq!(body, b"hi\r\n");
        assert_eq!(share.map(|s| s.bytes()), Some(body.capacity()));
    }

    /// A body of `lines` lines of 100 octets, then the terminator, fed in pieces of 7,000;
    /// true if the terminator ended it.
    fn feed_large(receiver: &mut DataReceiver, lines: usize) -> bool {
        let mut input = b"Subject: big\r\n\r\n".to_vec();
        for i in 0..lines {
            input.extend_from_slice(format!("{i:098}\r\n").as_bytes());
        }
        input.extend_from_slice(b".\r\n");
        let mut progress = DataProgress::NeedMore;
        for piece in input.chunks(7000) {
            progress = receiver.feed(piece);
        }
        matches!(progress, DataProgress::Done { .. })
    }

    #[test]
    fn a_large_body_goes_to_a_spool_file_and_memory_holds_its_buffer_only() {
        let dir = tempfile::tempdir().unwrap();
        let bodies = BodyDir::open(dir.path()).unwrap();
        let budget = crate::budget::MemoryBudget::new(4 << 20);
        let mut receiver = DataReceiver::with_budget(64 << 20, budget.share()).spilling_to(Some(bodies.clone()));
        assert!(feed_large(&mut receiver, 30_000));
        assert_eq!(budget.used(), SPOOL_BUFFER, "the budget holds the write buffer, not 3 MB");
        let (body, share) = receiver.into_parts();
        let Ok(Body::Spooled(mut file)) = body else { panic!("a 3 MB body is spooled") };
        assert_eq!(file.len(), 16 + 30_000 * 100);
        assert_eq!(file.head(20).unwrap(), b"Subject: big\r\n\r\n0000");
        let spooled: Vec<_> = std::fs::read_dir(bodies.path()).unwrap().collect();
        assert_eq!(spooled.len(), 1);
        drop((file, share));
        assert_eq!(std::fs::read_dir(bodies.path()).unwrap().count(), 0, "an uncommitted spool file goes away");

        // Past the size limit the spool file is dropped as the memory would be, and its
        // share of the budget given back.
        let mut receiver = DataReceiver::with_budget(2 << 20, budget.share()).spilling_to(Some(bodies.clone()));
        assert!(feed_large(&mut receiver, 30_000));
        assert!(receiver.over_limit());
        assert_eq!(std::fs::read_dir(bodies.path()).unwrap().count(), 0);
        assert_eq!(budget.used(), 0);

        // Without a spool directory the body stays in memory, as before.
        let mut receiver = DataReceiver::new(64 << 20);
        assert!(feed_large(&mut receiver, 30_000));
        assert!(matches!(receiver.into_parts().0, Ok(Body::Memory(body)) if body.len() == 16 + 30_000 * 100));
    }

    #[test]
    fn a_spool_file_that_cannot_be_made_fails_the_message_not_the_session() {
        let dir = tempfile::tempdir().unwrap();
        let bodies = BodyDir::open(dir.path()).unwrap();
        std::fs::remove_dir(bodies.path()).unwrap();
        let mut receiver = DataReceiver::new(64 << 20).spilling_to(Some(bodies));
        assert!(feed_large(&mut receiver, 30_000));
        assert!(receiver.into_parts().0.is_err());
    }

    #[test]
    fn exactly_at_the_limit_is_accepted() {
        let mut receiver = DataReceiver::new(4);
        assert_eq!(receiver.feed(b"ab\r\n.\r\n"), DataProgress::Done { consumed: 7 });
        assert!(!receiver.over_limit());
        assert_eq!(receiver.into_body(), b"ab\r\n");
    }
}
