//! Cutting command lines out of a byte stream, for SMTP and POP3 alike.
//!
//! The receiver knows nothing of commands. It is bounded: a line longer than the limit is
//! dropped as it streams by, so a client that never sends LF cannot grow our buffer.

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
    /// `limit` counts the whole line, its terminator included (each protocol cites its
    /// RFC for it). Lines end at LF and a CR before it is removed: the RFCs ask for CRLF,
    /// but a bare LF is accepted (as Postfix and Dovecot do) because a command line
    /// carries no data in which it could smuggle anything; SMTP's message data has its own
    /// receiver that is strict.
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

/// The bytes of `input` up to and including its first LF, and whether there was one (if
/// not: all of it, a line still to be continued).
pub fn through_lf(input: &[u8]) -> (usize, bool) {
    match input.iter().position(|&b| b == b'\n') {
        Some(lf) => (lf + 1, true),
        None => (input.len(), false),
    }
}

/// Client text as a reply may quote it: RFC 5321 §4.2 and RFC 1939 allow only printable
/// ASCII and spaces in reply text, so anything else (a NUL, a bare CR, 8-bit bytes) is
/// shown as `?`. A reply then cannot carry a control character back to the client.
pub fn printable(text: &str) -> String {
    text.chars().map(|c| if c == ' ' || c.is_ascii_graphic() { c } else { '?' }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_client_text_is_printable() {
        assert_eq!(printable("a\0b\rc\td é"), "a?b?c?d ?");
    }

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

    const POP3: usize = 255;
    const SMTP: usize = 512;

    #[test]
    fn pop3_lines_table() {
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
            assert_eq!(lines(input.as_bytes(), POP3), want, "{input:?}");
        }
    }

    #[test]
    fn an_endless_line_is_discarded_as_it_streams() {
        let mut receiver = LineReceiver::default();
        for _ in 0..100 {
            let chunk = vec![b'x'; 4096];
            let mut pos = 0;
            assert_eq!(receiver.next(&chunk, &mut pos, POP3), Line::NeedMore);
            assert_eq!(pos, chunk.len(), "the buffer must be released");
        }
        let mut pos = 0;
        let input = b"xx\r\nNOOP\r\n";
        assert_eq!(receiver.next(input, &mut pos, POP3), Line::TooLong);
        assert_eq!(receiver.next(input, &mut pos, POP3), Line::Complete(b"NOOP"));
    }

    #[test]
    fn a_partial_line_below_the_limit_is_kept() {
        let mut receiver = LineReceiver::default();
        let mut pos = 0;
        let input = vec![b'x'; POP3 - 1];
        assert_eq!(receiver.next(&input, &mut pos, POP3), Line::NeedMore);
        assert_eq!(pos, 0, "the start of a legal line must stay buffered");
    }

    #[test]
    fn smtp_lines_cut_at_lf_and_strip_cr() {
        assert_eq!(lines(b"HELO a\r\nNOOP\nQUI", SMTP), vec!["HELO a", "NOOP"]);
    }

    #[test]
    fn smtp_a_512_octet_line_is_fine_513_is_too_long() {
        let ok = format!("{}\r\n", "a".repeat(510));
        assert_eq!(ok.len(), 512);
        assert_eq!(lines(ok.as_bytes(), SMTP), vec!["a".repeat(510)]);
        let long = format!("{}\r\nNOOP\r\n", "a".repeat(511));
        assert_eq!(lines(long.as_bytes(), SMTP), vec!["<too long>", "NOOP"]);
    }
}
