//! mboxrd entries, as the backup range files and `mailtool export` write them.
//!
//! Each entry is the `From ` line, then `Number: N`, `Return-Path: <sender>` and one
//! `Delivered-To:` per recipient in RCPT order, then the stored message byte-exact (its
//! CRLF line endings kept) with every line matching `>*From ` quoted by one more `>`
//! (mboxrd), then an empty line. The added header lines end in CRLF like the message.

use std::io::{self, Write};

use crate::store::record::ArchivedMessageRecord;
use crate::trace::mbox_date;

/// The lines put before a stored message on local retrieval (RFC 5321 §4.4).
pub fn return_path(sender: &str) -> String {
    format!("Return-Path: <{sender}>\r\n")
}

pub fn write_entry(out: &mut impl Write, record: &ArchivedMessageRecord) -> io::Result<()> {
    let sender = record.sender.as_str();
    let from = if sender.is_empty() { "MAILER-DAEMON" } else { sender };
    writeln!(out, "From {from} {}", mbox_date(record.received_at.to_native()))?;
    if !write_delivered(out, record, true)? {
        out.write_all(b"\n")?;
    }
    out.write_all(b"\n")
}

/// Writes `Number:`, `Return-Path:`, `Delivered-To:` and the stored message, quoting
/// `>*From ` lines if `quote` (mboxrd). Returns whether the output ended at a line end.
/// Without quoting this is a Maildir message file.
pub fn write_delivered(out: &mut impl Write, record: &ArchivedMessageRecord, quote: bool) -> io::Result<bool> {
    write!(out, "Number: {}\r\n", record.number.to_native())?;
    out.write_all(return_path(record.sender.as_str()).as_bytes())?;
    for recipient in record.recipients.iter() {
        write!(out, "Delivered-To: {}\r\n", recipient.as_str())?;
    }
    if !quote {
        out.write_all(record.trace.as_bytes())?;
        out.write_all(&record.body)?;
        return Ok(record.body.last().is_none_or(|&b| b == b'\n'));
    }
    let trace = record.trace.as_bytes();
    if trace.last().is_none_or(|&b| b == b'\n') {
        let at_line_start = write_quoted(out, trace, true)?;
        return write_quoted(out, &record.body, at_line_start);
    }
    // A trace that ends mid-line (only a damaged or foreign record; maild's ends in CRLF):
    // a `From ` line may start in it and end in the body, so both are quoted as one text.
    write_quoted(out, &[trace, record.body.as_slice()].concat(), true)
}

/// Writes `text`, quoting `>*From ` at line starts (mboxrd); returns whether it ended at
/// one.
pub fn write_quoted(out: &mut impl Write, text: &[u8], mut at_line_start: bool) -> io::Result<bool> {
    let mut rest = text;
    while !rest.is_empty() {
        if at_line_start {
            let quotes = rest.iter().take_while(|&&b| b == b'>').count();
            if rest[quotes..].starts_with(b"From ") {
                out.write_all(b">")?;
            }
        }
        match rest.iter().position(|&b| b == b'\n') {
            Some(lf) => {
                out.write_all(&rest[..=lf])?;
                rest = &rest[lf + 1..];
                at_line_start = true;
            }
            None => {
                out.write_all(rest)?;
                rest = &[];
                at_line_start = false;
            }
        }
    }
    Ok(at_line_start)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::record::MessageRecord;
    use rkyv::rancor;

    /// The mbox entry of `record`, as its stored (archived) form writes it.
    fn entry(record: &MessageRecord) -> String {
        let bytes = rkyv::to_bytes::<rancor::Error>(record).unwrap();
        let archived = rkyv::access::<ArchivedMessageRecord, rancor::Error>(&bytes).unwrap();
        let mut out = Vec::new();
        write_entry(&mut out, archived).unwrap();
        String::from_utf8(out).unwrap()
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
