//! Byte-level framing for POP3: cuts the client's byte stream into lines.
//!
//! The receiver knows nothing of commands. It is bounded: a line longer than the limit is
//! dropped as it streams by, so a client that never sends LF cannot grow our buffer.

/// RFC 2449 §4: a command line is at most 255 octets, the terminating CRLF included.
pub const MAX_COMMAND_LINE: usize = 255;

/// The longest client line in an `AUTH PLAIN` exchange after `+ ` (RFC 5034 §4).
///
/// RFC 4616 §2 asks servers to accept an authzid, authcid and password of up to 255
/// octets each; with two NULs that is 767 octets, 1024 in base64, plus CRLF. The command
/// line limit above would cap an address plus its password at about 187 octets, which is
/// exactly why RFC 5034 lets a client move a long response out of the `AUTH` line.
pub const MAX_SASL_LINE: usize = 1026;

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

/// Cuts lines out of a buffer, discarding over-long ones as they stream by.
#[derive(Debug, Default)]
pub struct LineReceiver {
    /// Set while the bytes of an over-long line are being dropped until its LF.
    discarding: bool,
}

impl LineReceiver {
    /// Takes the next line from `input[*pos..]`, advancing `pos` past what it used.
    ///
    /// `limit` counts the whole line, its terminator included. Lines end at LF and a CR
    /// before it is removed: RFC 1939 §3 asks for CRLF, but a bare LF is accepted because
    /// a POP3 client sends no data of its own in which it could smuggle anything.
    pub fn next<'a>(&mut self, input: &'a [u8], pos: &mut usize, limit: usize) -> Line<'a> {
        let rest = input.get(*pos..).unwrap_or_default();
        match rest.iter().position(|&b| b == b'\n') {
            Some(lf) => {
                *pos += lf + 1;
                if std::mem::take(&mut self.discarding) || lf + 1 > limit {
                    return Line::TooLong;
                }
                let line = rest.get(..lf).unwrap_or_default();
                Line::Complete(line.strip_suffix(b"\r").unwrap_or(line))
            }
            None => {
                if rest.len() >= limit {
                    // Over the limit with no end in sight: drop what we have and keep
                    // dropping until the LF, so that the buffer stays bounded.
                    self.discarding = true;
                    *pos = input.len();
                }
                Line::NeedMore
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(input: &[u8], limit: usize) -> Vec<String> {
        let mut receiver = LineReceiver::default();
        let mut pos = 0;
        let mut out = Vec::new();
        loop {
            match receiver.next(input, &mut pos, limit) {
                Line::Complete(l) => out.push(String::from_utf8_lossy(l).into_owned()),
                Line::TooLong => out.push("<too long>".into()),
                Line::NeedMore => return out,
            }
        }
    }

    #[test]
    fn lines_table() {
        let a253 = "a".repeat(253);
        let a254 = "a".repeat(254);
        let table: Vec<(String, Vec<String>)> = vec![
            ("STAT\r\nLIST\nQUI".into(), vec!["STAT".into(), "LIST".into()]),
            ("\r\n\n".into(), vec!["".into(), "".into()]),
            ("a\rb\r\n".into(), vec!["a\rb".into()]),
            // 253 + CRLF is exactly 255 octets: fine. One more is too long.
            (format!("{a253}\r\nNOOP\r\n"), vec![a253.clone(), "NOOP".into()]),
            (format!("{a254}\r\nNOOP\r\n"), vec!["<too long>".into(), "NOOP".into()]),
            // With a bare LF the same 254 octets plus LF fit.
            (format!("{a254}\nNOOP\r\n"), vec![a254.clone(), "NOOP".into()]),
        ];
        for (input, want) in table {
            assert_eq!(lines(input.as_bytes(), MAX_COMMAND_LINE), want, "{input:?}");
        }
    }

    #[test]
    fn an_endless_line_is_discarded_as_it_streams() {
        let mut receiver = LineReceiver::default();
        for _ in 0..100 {
            let chunk = vec![b'x'; 4096];
            let mut pos = 0;
            assert_eq!(receiver.next(&chunk, &mut pos, MAX_COMMAND_LINE), Line::NeedMore);
            assert_eq!(pos, chunk.len(), "the buffer must be released");
        }
        let mut pos = 0;
        let input = b"xx\r\nNOOP\r\n";
        assert_eq!(receiver.next(input, &mut pos, MAX_COMMAND_LINE), Line::TooLong);
        assert_eq!(receiver.next(input, &mut pos, MAX_COMMAND_LINE), Line::Complete(b"NOOP"));
    }

    #[test]
    fn a_partial_line_below_the_limit_is_kept() {
        let mut receiver = LineReceiver::default();
        let mut pos = 0;
        let input = vec![b'x'; MAX_COMMAND_LINE - 1];
        assert_eq!(receiver.next(&input, &mut pos, MAX_COMMAND_LINE), Line::NeedMore);
        assert_eq!(pos, 0, "the start of a legal line must stay buffered");
    }
}
