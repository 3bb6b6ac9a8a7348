//! mboxrd entries, as the backup range files and `mailtool export` write them.
//!
//! Each entry is the `From ` line, then `Number: N`, `Return-Path: <sender>` and one
//! `Delivered-To:` per recipient in RCPT order, then the stored message byte-exact (its
//! CRLF line endings kept) with every line matching `>*From ` quoted by one more `>`
//! (mboxrd), then an empty line. The added header lines end in CRLF like the message.

use std::io::{self, Write};

use crate::store::StoredMessage;
use crate::trace::mbox_date;

/// The lines put before a stored message on local retrieval (RFC 5321 §4.4).
pub fn return_path(sender: &str) -> String {
    format!("Return-Path: <{sender}>\r\n")
}

pub fn write_entry(out: &mut impl Write, message: &StoredMessage) -> io::Result<()> {
    let record = message.record();
    let sender = record.sender.as_str();
    let from = if sender.is_empty() { "MAILER-DAEMON" } else { sender };
    writeln!(out, "From {from} {}", mbox_date(record.received_at.to_native()))?;
    if !write_delivered(out, message, true)? {
        out.write_all(b"\n")?;
    }
    out.write_all(b"\n")
}

/// Writes `Number:`, `Return-Path:`, `Delivered-To:` and the stored message, quoting
/// `>*From ` lines if `quote` (mboxrd). Returns whether the output ended at a line end.
/// Without quoting this is a Maildir message file. A body in a file is read in pieces.
pub fn write_delivered(out: &mut impl Write, message: &StoredMessage, quote: bool) -> io::Result<bool> {
    let record = message.record();
    write!(out, "Number: {}\r\n", record.number.to_native())?;
    out.write_all(return_path(record.sender.as_str()).as_bytes())?;
    for recipient in record.recipients.iter() {
        write!(out, "Delivered-To: {}\r\n", recipient.as_str())?;
    }
    let mut quoter = Quoter::new(quote);
    quoter.write(out, record.trace.as_bytes())?;
    message.body_chunks(|chunk| quoter.write(out, chunk).map(|()| true))?;
    quoter.finish(out)
}

/// Writes `text`, quoting `>*From ` at line starts (mboxrd); returns whether it ended at
/// one.
pub fn write_quoted(out: &mut impl Write, text: &[u8], at_line_start: bool) -> io::Result<bool> {
    let mut quoter = Quoter::new(true);
    if !at_line_start {
        quoter.state = QuoteState::Middle;
        quoter.ended_line = false;
    }
    quoter.write(out, text)?;
    quoter.finish(out)
}

/// A writer that only checks that what is written to it is `expected`, octet for octet,
/// so an entry can be compared with a file's bytes without being held in memory.
pub struct Compare<'a> {
    rest: &'a [u8],
    differs: bool,
}

impl<'a> Compare<'a> {
    pub fn new(expected: &'a [u8]) -> Compare<'a> {
        Compare { rest: expected, differs: false }
    }

    /// True if exactly the expected bytes were written.
    pub fn matched(&self) -> bool {
        !self.differs && self.rest.is_empty()
    }
}

impl Write for Compare<'_> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        match self.rest.strip_prefix(bytes) {
            Some(rest) if !self.differs => self.rest = rest,
            _ => self.differs = true,
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

const FROM: &[u8; 5] = b"From ";

/// Where the quoter is within the current line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum QuoteState {
    /// Nothing but `>` since the line began.
    LineStart,
    /// After the `>` run, this many octets of `From ` seen and held back.
    From(usize),
    /// Past anything that could need quoting.
    Middle,
}

/// mboxrd quoting of a text that comes in pieces (a trace header, then a body read from
/// its file), so a `>*From ` line split between two pieces is quoted all the same. The
/// added `>` goes just before `From `, which gives the same bytes as putting it at the
/// line start (the run before it is all `>`), so only a partial `From ` is ever held.
struct Quoter {
    quote: bool,
    state: QuoteState,
    /// Whether what was written so far ends at a line end.
    ended_line: bool,
}

impl Quoter {
    fn new(quote: bool) -> Quoter {
        Quoter { quote, state: QuoteState::LineStart, ended_line: true }
    }

    fn write(&mut self, out: &mut impl Write, text: &[u8]) -> io::Result<()> {
        let Some(&last) = text.last() else { return Ok(()) };
        self.ended_line = last == b'\n';
        if !self.quote {
            return out.write_all(text);
        }
        // `text[start..i]` is scanned and not yet written.
        let (mut start, mut i) = (0, 0);
        while i < text.len() {
            match self.state {
                QuoteState::Middle => match text[i..].iter().position(|&b| b == b'\n') {
                    Some(lf) => {
                        i += lf + 1;
                        self.state = QuoteState::LineStart;
                    }
                    None => i = text.len(),
                },
                QuoteState::LineStart => {
                    match text[i] {
                        b'>' => {}
                        b'F' => {
                            out.write_all(&text[start..i])?;
                            start = i + 1;
                            self.state = QuoteState::From(1);
                        }
                        b'\n' => {}
                        _ => self.state = QuoteState::Middle,
                    }
                    i += 1;
                }
                QuoteState::From(matched) if text[i] == FROM[matched] => {
                    i += 1;
                    start = i;
                    self.state = QuoteState::From(matched + 1);
                    if matched + 1 == FROM.len() {
                        out.write_all(b">From ")?;
                        self.state = QuoteState::Middle;
                    }
                }
                QuoteState::From(matched) => {
                    // Not a `From ` line: what was held goes out as it was, and this
                    // octet is looked at again in the middle of the line.
                    out.write_all(&FROM[..matched])?;
                    self.state = QuoteState::Middle;
                }
            }
        }
        out.write_all(&text[start..])
    }

    /// Writes what is held back; returns whether the output ended at a line end.
    fn finish(&mut self, out: &mut impl Write) -> io::Result<bool> {
        if let QuoteState::From(matched) = self.state {
            out.write_all(&FROM[..matched])?;
            self.state = QuoteState::Middle;
        }
        Ok(self.ended_line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::record::MessageRecord;

    /// The mbox entry of `record`, as its stored form writes it.
    fn entry(record: &MessageRecord) -> String {
        let mut out = Vec::new();
        write_entry(&mut out, &StoredMessage::from_record(record)).unwrap();
        String::from_utf8(out).unwrap()
    }

    /// Quotes `text` given whole and given in every split into two and three pieces.
    fn quoted_in_pieces(text: &[u8]) -> (Vec<u8>, bool) {
        let mut whole = Vec::new();
        let ended = write_quoted(&mut whole, text, true).unwrap();
        for a in 0..=text.len() {
            for b in a..=text.len() {
                let mut quoter = Quoter::new(true);
                let mut out = Vec::new();
                for piece in [&text[..a], &text[a..b], &text[b..]] {
                    quoter.write(&mut out, piece).unwrap();
                }
                assert_eq!(quoter.finish(&mut out).unwrap(), ended);
                assert_eq!(String::from_utf8_lossy(&out), String::from_utf8_lossy(&whole), "split at {a}, {b}");
            }
        }
        (whole, ended)
    }

    #[test]
    fn quoting_is_the_same_however_the_text_is_split() {
        let table: &[(&[u8], &[u8], bool)] = &[
            (b"From a\r\n", b">From a\r\n", true),
            (b">>From a\n>From\nFrom", b">>>From a\n>From\nFrom", false),
            (b"x\nFrom \n>>Fro\n>F\n", b"x\n>From \n>>Fro\n>F\n", true),
            (b"\n\nFrFrom \n > From \n", b"\n\nFrFrom \n > From \n", true),
            (b"FFrom x", b"FFrom x", false),
            (b"", b"", true),
        ];
        for (text, want, ended) in table {
            let (got, got_ended) = quoted_in_pieces(text);
            assert_eq!(String::from_utf8_lossy(&got), String::from_utf8_lossy(want));
            assert_eq!(got_ended, *ended, "{}", String::from_utf8_lossy(text));
        }
    }

    #[test]
    fn a_from_line_split_between_trace_and_body_is_quoted() {
        let record = MessageRecord {
            number: 1,
            received_at: 0,
            sender: "s@x".into(),
            recipients: vec!["a@x".into()],
            trace: "Received: t\r\nFr".into(),
            body: b"om here\r\n".to_vec(),
        };
        let text = entry(&record);
        assert!(text.contains("Received: t\r\n>From here\r\n"), "{text}");
        assert_eq!(crate::admin::verify::split_entries(text.as_bytes()).len(), 1);
    }

    #[test]
    fn entry_layout_and_mboxrd_quoting() {
        let record = MessageRecord {
            number: 3,
            received_at: 0,
            sender: "".into(),
            recipients: vec!["a@x".into(), "b@x".into()],
            trace: "Received: t\r\n".into(),
            body: b"Subject: s\r\n\r\nFrom here\r\n>From there\r\nnot From\r\n".to_vec(),
        };
        assert_eq!(
            entry(&record),
            "From MAILER-DAEMON Thu Jan  1 00:00:00 1970\nNumber: 3\r\nReturn-Path: <>\r\nDelivered-To: a@x\r\nDelivered-To: b@x\r\n\
             Received: t\r\nSubject: s\r\n\r\n>From here\r\n>>From there\r\nnot From\r\n\n"
        );
    }
}
