//! Writing a message for RETR and TOP: the `+OK` line, the dot-stuffed message, `.`.
//!
//! RFC 1939 §3: in a multi-line response, every line that begins with the termination
//! octet `.` gets one more `.`, and the response ends with `CRLF . CRLF`. A "line" here
//! begins at the start of the message and after every LF: stored messages normally end
//! their lines in CRLF but may hold bare LF, and a client that splits on LF must not see
//! a lone `.` line inside a message. Bare CR is passed through; no client ends a line on
//! it. Apart from the added dots, the message goes out byte for byte.
//!
//! The message comes in parts (`Return-Path:` line, trace header, body) that are written
//! as slices between the stuffing points, never copied, and the state of the current line
//! carries from one part to the next, since a line may span two parts.

use std::io::{self, Write};

/// Writes the `+OK` line, the message made of `parts` dot-stuffed, and the terminator.
///
/// `size` is the exact octet count of the unstuffed message, as LIST reports it. With
/// `top_lines = Some(k)` (RFC 1939 §7 TOP), only the header block up to and including the
/// first empty line is written, then at most `k` lines of the body. If what was written
/// does not end in CRLF, a CRLF is added so that the terminating `.` is on its own line
/// for every client.
pub fn write_message(out: &mut impl Write, size: u64, parts: &[&[u8]], top_lines: Option<usize>) -> io::Result<()> {
    let mut writer = MessageWriter::start(out, size, top_lines)?;
    for part in parts {
        if !writer.part(part)? {
            break;
        }
    }
    writer.finish()
}

/// [`write_message`] with the parts given one at a time, for a message that is not in
/// memory whole (a large body read from its file in pieces).
pub struct MessageWriter<'a, W: Write> {
    out: &'a mut W,
    stuffer: Stuffer,
}

impl<'a, W: Write> MessageWriter<'a, W> {
    /// Writes the `+OK` line.
    pub fn start(out: &'a mut W, size: u64, top_lines: Option<usize>) -> io::Result<Self> {
        write!(out, "+OK {size} octets\r\n")?;
        Ok(MessageWriter { out, stuffer: Stuffer::new(top_lines) })
    }

    /// Writes the next part of the message; false once TOP has all it wants (the rest
    /// is then not needed).
    pub fn part(&mut self, bytes: &[u8]) -> io::Result<bool> {
        Ok(self.stuffer.write(self.out, bytes)? == Flow::Continue)
    }

    /// Writes the terminator.
    pub fn finish(self) -> io::Result<()> {
        self.stuffer.finish(self.out)
    }
}

/// How much of the message TOP still wants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Limit {
    /// RETR: everything.
    All,
    /// TOP, inside the header block; the body line count follows the empty line.
    Header { body_lines: usize },
    /// TOP, inside the body, with this many more lines to write.
    Body { left: usize },
}

/// What the current line holds so far, as far as "is it empty?" needs to know.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LineSoFar {
    Empty,
    /// A lone CR: with the LF to come this is the CRLF of an empty line.
    Cr,
    Text,
}

impl LineSoFar {
    fn extend(self, bytes: &[u8]) -> LineSoFar {
        match (self, bytes) {
            (state, []) => state,
            (LineSoFar::Empty, b"\r") => LineSoFar::Cr,
            _ => LineSoFar::Text,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Flow {
    Continue,
    Stop,
}

/// The stuffing writer: its state is the position within the current line.
struct Stuffer {
    /// True when the next byte begins a line, where a `.` needs stuffing.
    line_start: bool,
    line: LineSoFar,
    limit: Limit,
    /// The last two octets written; the `+OK` line ends in CRLF, so an empty message needs
    /// no CRLF before the terminator.
    tail: [u8; 2],
}

impl Stuffer {
    fn new(top_lines: Option<usize>) -> Stuffer {
        let limit = match top_lines {
            None => Limit::All,
            Some(body_lines) => Limit::Header { body_lines },
        };
        Stuffer { line_start: true, line: LineSoFar::Empty, limit, tail: *b"\r\n" }
    }

    /// Writes one part; `Stop` once TOP has all it wants.
    fn write(&mut self, out: &mut impl Write, data: &[u8]) -> io::Result<Flow> {
        // `data[start..pos]` has been scanned but not yet written: bytes go out in as few
        // slices as the stuffing points allow.
        let mut start = 0;
        let mut pos = 0;
        while pos < data.len() {
            if std::mem::take(&mut self.line_start) && data.get(pos) == Some(&b'.') {
                self.emit(out, data.get(start..pos).unwrap_or_default())?;
                self.emit(out, b".")?;
                start = pos;
            }
            let rest = data.get(pos..).unwrap_or_default();
            let Some(lf) = rest.iter().position(|&b| b == b'\n') else {
                self.line = self.line.extend(rest);
                pos = data.len();
                break;
            };
            let line_end = self.line.extend(rest.get(..lf).unwrap_or_default());
            pos += lf + 1;
            self.line = LineSoFar::Empty;
            self.line_start = true;
            if self.line_ended(line_end) == Flow::Stop {
                self.emit(out, data.get(start..pos).unwrap_or_default())?;
                return Ok(Flow::Stop);
            }
        }
        self.emit(out, data.get(start..pos).unwrap_or_default())?;
        Ok(Flow::Continue)
    }

    /// Counts a finished line against TOP's limit; `line` is what it held before its LF.
    fn line_ended(&mut self, line: LineSoFar) -> Flow {
        self.limit = match self.limit {
            Limit::All => return Flow::Continue,
            // RFC 1939 §7: the header block, the blank line separating it from the body,
            // then the requested number of body lines.
            Limit::Header { body_lines } if line != LineSoFar::Text => Limit::Body { left: body_lines },
            header @ Limit::Header { .. } => header,
            Limit::Body { left } => Limit::Body { left: left.saturating_sub(1) },
        };
        if self.limit == (Limit::Body { left: 0 }) {
            Flow::Stop
        } else {
            Flow::Continue
        }
    }

    fn emit(&mut self, out: &mut impl Write, bytes: &[u8]) -> io::Result<()> {
        match bytes {
            [] => return Ok(()),
            [b] => self.tail = [self.tail[1], *b],
            [.., a, b] => self.tail = [*a, *b],
        }
        out.write_all(bytes)
    }

    fn finish(self, out: &mut impl Write) -> io::Result<()> {
        if &self.tail != b"\r\n" {
            out.write_all(b"\r\n")?;
        }
        out.write_all(b".\r\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(parts: &[&[u8]], top: Option<usize>) -> String {
        let mut out = Vec::new();
        write_message(&mut out, 99, parts, top).unwrap();
        let text = String::from_utf8(out).unwrap();
        text.strip_prefix("+OK 99 octets\r\n").expect("the +OK line comes first").to_string()
    }

    #[test]
    fn stuffing_table() {
        let table: &[(&[&[u8]], &str)] = &[
            (&[b"a\r\nb\r\n"], "a\r\nb\r\n.\r\n"),
            (&[b".\r\n"], "..\r\n.\r\n"),
            (&[b".a\r\n..b\r\nc.\r\n"], "..a\r\n...b\r\nc.\r\n.\r\n"),
            // A dot line at a part boundary, and a line spanning two parts.
            (&[b"a\r\n", b".b\r\n"], "a\r\n..b\r\n.\r\n"),
            (&[b"a\r", b"\n.\r\n"], "a\r\n..\r\n.\r\n"),
            (&[b"a", b".b\r\n"], "a.b\r\n.\r\n"),
            (&[b"a\r\n", b"", b".b\r\n"], "a\r\n..b\r\n.\r\n"),
            (&[b"a\r\n.", b"b\r\n"], "a\r\n..b\r\n.\r\n"),
            // Bare LF ends a line for stuffing; the bytes stay as they were.
            (&[b"a\n.\nb\n"], "a\n..\nb\n\r\n.\r\n"),
            (&[b"a\n.\r\n"], "a\n..\r\n.\r\n"),
            // Bare CR does not.
            (&[b"a\r.\r\n"], "a\r.\r\n.\r\n"),
            // Not ending in CRLF: one is added before the terminator.
            (&[b"no newline"], "no newline\r\n.\r\n"),
            (&[b"ends in cr\r"], "ends in cr\r\r\n.\r\n"),
            (
                &[b"Return-Path: <a@b>\r\n", b"Received: x\r\n", b"body"],
                "Return-Path: <a@b>\r\nReceived: x\r\nbody\r\n.\r\n",
            ),
            // An empty message is an empty multi-line response.
            (&[], ".\r\n"),
            (&[b""], ".\r\n"),
            (&[b"\r\n"], "\r\n.\r\n"),
            (&[b"nul\0\xff\r\n"], "nul\0\u{fffd}\r\n.\r\n"),
        ];
        for (parts, want) in table {
            let mut out = Vec::new();
            write_message(&mut out, 99, parts, None).unwrap();
            let got = String::from_utf8_lossy(&out).into_owned();
            assert_eq!(got.strip_prefix("+OK 99 octets\r\n"), Some(*want), "{parts:?}");
        }
    }

    #[test]
    fn top_table() {
        let message: &[&[u8]] = &[b"Return-Path: <a@b>\r\n", b"Subject: hi\r\n\r\n", b"one\r\n.two\r\nthree\r\n"];
        let table: &[(&[&[u8]], usize, &str)] = &[
            (message, 0, "Return-Path: <a@b>\r\nSubject: hi\r\n\r\n.\r\n"),
            (message, 1, "Return-Path: <a@b>\r\nSubject: hi\r\n\r\none\r\n.\r\n"),
            (message, 2, "Return-Path: <a@b>\r\nSubject: hi\r\n\r\none\r\n..two\r\n.\r\n"),
            (message, 3, "Return-Path: <a@b>\r\nSubject: hi\r\n\r\none\r\n..two\r\nthree\r\n.\r\n"),
            (message, usize::MAX, "Return-Path: <a@b>\r\nSubject: hi\r\n\r\none\r\n..two\r\nthree\r\n.\r\n"),
            // The blank line split across parts.
            (&[b"H: v\r\n\r", b"\nbody\r\nmore\r\n"], 0, "H: v\r\n\r\n.\r\n"),
            (&[b"H: v\r\n", b"\r\n", b"body\r\nmore\r\n"], 1, "H: v\r\n\r\nbody\r\n.\r\n"),
            // Bare LF lines: the blank line is a lone LF, body lines end at LF.
            (&[b"H: v\n\nl1\nl2\nl3\n"], 0, "H: v\n\n\r\n.\r\n"),
            (&[b"H: v\n\nl1\nl2\nl3\n"], 2, "H: v\n\nl1\nl2\n\r\n.\r\n"),
            // A line holding only spaces or CR CR is not the blank line.
            (&[b"H: v\r\n \r\n\r\r\nX: y\r\n\r\nbody\r\n"], 0, "H: v\r\n \r\n\r\r\nX: y\r\n\r\n.\r\n"),
            // No blank line: all of it is header, all of it is sent.
            (&[b"H: v\r\nX: y"], 0, "H: v\r\nX: y\r\n.\r\n"),
            // A last body line without its line end counts as a line.
            (&[b"H: v\r\n\r\nlast"], 5, "H: v\r\n\r\nlast\r\n.\r\n"),
            // The header block itself is stuffed.
            (&[b".H: v\r\n\r\n.b\r\n"], 1, "..H: v\r\n\r\n..b\r\n.\r\n"),
        ];
        for (parts, lines, want) in table {
            assert_eq!(written(parts, Some(*lines)), *want, "{parts:?} TOP {lines}");
        }
    }

    #[test]
    fn the_ok_line_carries_the_size() {
        let mut out = Vec::new();
        write_message(&mut out, 12345, &[b"x\r\n"], None).unwrap();
        assert_eq!(out, b"+OK 12345 octets\r\nx\r\n.\r\n");
    }

    /// Counts `write_all` calls, to show a message is written in slices, not in bytes.
    struct CountingWriter {
        bytes: Vec<u8>,
        calls: usize,
    }

    impl Write for CountingWriter {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.calls += 1;
            self.bytes.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_large_message_goes_out_in_few_slices_and_unchanged() {
        let line = b"The quick brown fox jumps over the lazy dog, again and again and again.\r\n";
        let body: Vec<u8> = line.iter().copied().cycle().take(line.len() * 100_000).collect();
        let header = b"Return-Path: <a@b>\r\n";
        let mut out = CountingWriter { bytes: Vec::new(), calls: 0 };
        write_message(&mut out, 0, &[header, &body], None).unwrap();
        assert!(out.calls < 10, "{} writes", out.calls);
        let content = out.bytes.strip_prefix(b"+OK 0 octets\r\n").unwrap();
        assert_eq!(content.len(), header.len() + body.len() + 3);
        assert!(content.ends_with(b"dog, again and again and again.\r\n.\r\n"));
    }

    /// The stuffed message read back the way a client does (RFC 1939 §3) is the original,
    /// whatever the part boundaries.
    #[test]
    fn unstuffing_what_was_written_gives_the_message_back() {
        let message: &[u8] = b".a\r\n..\r\n.\r\nb\n.c\r.d\r\n\r\n.";
        for cut in 0..=message.len() {
            let (one, two) = message.split_at(cut);
            let mut out = Vec::new();
            write_message(&mut out, 0, &[one, two], None).unwrap();
            let content = out.strip_prefix(b"+OK 0 octets\r\n").unwrap();
            let content = content.strip_suffix(b"\r\n.\r\n").unwrap();
            let mut unstuffed = Vec::new();
            for (i, line) in content.split(|&b| b == b'\n').enumerate() {
                if i > 0 {
                    unstuffed.push(b'\n');
                }
                unstuffed.extend_from_slice(line.strip_prefix(b".").unwrap_or(line));
            }
            assert_eq!(unstuffed, message, "cut at {cut}");
        }
    }
}
