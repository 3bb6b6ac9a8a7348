//! Byte-level framing for SMTP: command lines and message data.
//!
//! These receivers know nothing of commands; they only cut the byte stream. Both are
//! bounded: a command line never grows past its limit, and message data past the size
//! limit is counted and dropped, not kept.

/// RFC 5321 §4.5.3.1.4: a command line is at most 512 octets, CRLF included.
pub const MAX_COMMAND_LINE: usize = 512;

/// What the line receiver found in the buffered input.
#[derive(Debug, PartialEq, Eq)]
pub enum Line<'a> {
    /// A whole line, its CRLF (or bare LF) removed.
    Complete(&'a [u8]),
    /// A line longer than the limit ended; its bytes were discarded.
    TooLong,
    /// No complete line yet: give me more bytes.
    NeedMore,
}

/// Cuts command lines out of a buffer, discarding over-long ones as they stream by.
#[derive(Debug, Default)]
pub struct LineReceiver {
    /// Set while the bytes of an over-long line are being dropped until its LF.
    discarding: bool,
}

impl LineReceiver {
    /// Takes the next line from `input[*pos..]`, advancing `pos` past what it used.
    ///
    /// Commands end at LF; a CR before it is removed. A bare LF is accepted as a command
    /// terminator (as Postfix does) because it cannot smuggle anything outside DATA.
    pub fn next<'a>(&mut self, input: &'a [u8], pos: &mut usize) -> Line<'a> {
        let rest = &input[*pos..];
        match rest.iter().position(|&b| b == b'\n') {
            Some(lf) => {
                *pos += lf + 1;
                if std::mem::take(&mut self.discarding) || lf + 1 > MAX_COMMAND_LINE {
                    return Line::TooLong;
                }
                let line = &rest[..lf];
                Line::Complete(line.strip_suffix(b"\r").unwrap_or(line))
            }
            None => {
                if rest.len() >= MAX_COMMAND_LINE {
                    // Over the limit with no end in sight: drop what we have and keep
                    // dropping until the LF, so a hostile client cannot grow our buffer.
                    self.discarding = true;
                    *pos = input.len();
                }
                Line::NeedMore
            }
        }
    }
}

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
        DataReceiver { state: DataState::LineStart, body: Vec::new(), size: 0, limit }
    }

    /// True once more unstuffed octets arrived than the limit allows.
    pub fn over_limit(&self) -> bool {
        self.size > self.limit
    }

    pub fn into_body(self) -> Vec<u8> {
        self.body
    }

    fn keep(&mut self, bytes: &[u8]) {
        self.size = self.size.saturating_add(bytes.len());
        if self.size <= self.limit {
            self.body.extend_from_slice(bytes);
        } else if !self.body.is_empty() {
            // Over the limit: the message will be refused, so stop holding it.
            self.body = Vec::new();
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

    fn lines(input: &[u8]) -> Vec<String> {
        let mut receiver = LineReceiver::default();
        let mut pos = 0;
        let mut out = Vec::new();
        loop {
            match receiver.next(input, &mut pos) {
                Line::Complete(l) => out.push(String::from_utf8_lossy(l).into_owned()),
                Line::TooLong => out.push("<too long>".into()),
                Line::NeedMore => return out,
            }
        }
    }

    #[test]
    fn cuts_lines_at_lf_and_strips_cr() {
        assert_eq!(lines(b"HELO a\r\nNOOP\nQUI"), vec!["HELO a", "NOOP"]);
    }

    #[test]
    fn a_512_octet_line_is_fine_513_is_too_long() {
        let ok = format!("{}\r\n", "a".repeat(510));
        assert_eq!(ok.len(), 512);
        assert_eq!(lines(ok.as_bytes()), vec!["a".repeat(510)]);
        let long = format!("{}\r\nNOOP\r\n", "a".repeat(511));
        assert_eq!(lines(long.as_bytes()), vec!["<too long>", "NOOP"]);
    }

    #[test]
    fn an_endless_line_is_discarded_as_it_streams() {
        let mut receiver = LineReceiver::default();
        for _ in 0..100 {
            let chunk = vec![b'x'; 4096];
            let mut pos = 0;
            assert_eq!(receiver.next(&chunk, &mut pos), Line::NeedMore);
            assert_eq!(pos, chunk.len(), "the buffer must be released");
        }
        let mut pos = 0;
        assert_eq!(receiver.next(b"xx\r\nNOOP\r\n", &mut pos), Line::TooLong);
        assert_eq!(receiver.next(b"xx\r\nNOOP\r\n", &mut pos), Line::Complete(b"NOOP"));
    }

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
    fn exactly_at_the_limit_is_accepted() {
        let mut receiver = DataReceiver::new(4);
        assert_eq!(receiver.feed(b"ab\r\n.\r\n"), DataProgress::Done { consumed: 7 });
        assert!(!receiver.over_limit());
        assert_eq!(receiver.into_body(), b"ab\r\n");
    }
}
