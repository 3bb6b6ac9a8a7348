//! Delivery status notifications (RFC 3464): the bounce that tells a sender their message
//! could not be delivered. Pure: text in, message bytes out; the forward stage decides
//! when to bounce and queues the result like any other message from the null sender.
//!
//! The bounce is a `multipart/report; report-type=delivery-status` (RFC 6522) of three
//! parts:
//!
//! ```text
//!   1. text/plain                a human explanation: each recipient and why
//!   2. message/delivery-status   Reporting-MTA, Arrival-Date; then per recipient
//!                                Final-Recipient, Action, Status, Remote-MTA, Diagnostic-Code
//!   3. text/rfc822-headers       the original message's header block (never its body)
//! ```
//!
//! Everything that comes from outside (addresses, the peer's reply texts, the remote MTA's
//! name) is reduced to printable ASCII on one line before it is written, so it can neither
//! add a header nor end a MIME part; the boundary is checked against the content and
//! changed until it does not occur in it. The returned header block keeps its bytes (it is
//! there for diagnosis) except control characters, and is bounded.

use std::sync::atomic::{AtomicU64, Ordering};

use time::OffsetDateTime;

use crate::trace::rfc5322_date;

/// The most of the original header block returned in part 3 (RFC 6522 §4's
/// text/rfc822-headers: the headers alone, not the body). A bounce must stay small
/// whatever it reports on.
pub const MAX_RETURNED_HEADERS: usize = 64 * 1024;

/// Diagnostic texts are cut to this many characters. With a field name in front they stay
/// inside RFC 5322 §2.1.1's hard limit of 998 octets a line even as one unbreakable word.
const MAX_DIAGNOSTIC: usize = 900;

/// Addresses and host names are cut to this many characters; RFC 5321 §4.5.3.1.3 allows
/// 256 octets for a path, so this only bounds hostile input.
const MAX_WORD: usize = 512;

/// RFC 5322 §2.1.1: lines should be at most 78 characters; we fold at spaces to stay
/// within that where the text allows.
const LINE_WIDTH: usize = 78;

/// Makes Message-IDs and boundaries unique within a process, whatever the clock says.
static COUNTER: AtomicU64 = AtomicU64::new(0);

/// One recipient the message could not be delivered to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FailedRecipient {
    pub recipient: String,
    /// The RFC 3463 status code, `5.1.1` or `4.4.7`.
    pub status: String,
    /// The remote reply (`550 5.1.1 <x@y>: User unknown`) or a description.
    pub diagnostic: String,
    /// The server that gave the reply, if one did.
    pub remote_mta: Option<String>,
}

/// Builds the bounce message (headers + body, CRLF line ends) to `original_sender`,
/// reporting `failed`; `original` is the stored message (trace + body) whose header block
/// is included as text/rfc822-headers. Returns None if original_sender is empty (never a
/// bounce for a bounce, RFC 5321 §4.5.5 / RFC 3464 §2), or if `failed` is empty (RFC 3464
/// §2.1: a report holds at least one recipient).
pub fn bounce(
    hostname: &str,
    original_sender: &str,
    arrival: OffsetDateTime,
    now: OffsetDateTime,
    original: &[&[u8]],
    failed: &[FailedRecipient],
) -> Option<Vec<u8>> {
    if original_sender.is_empty() || failed.is_empty() {
        return None;
    }
    let host = host_name(hostname);
    let sender = word(original_sender);
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    let stamp = format!("{}.{:09}.{count}", now.unix_timestamp(), now.nanosecond());

    let notification = notification(&host, failed);
    let status = delivery_status(&host, arrival, failed);
    let (headers, eight_bit) = header_block(original);
    let boundary = choose_boundary(&format!("maild.{stamp}"), &[notification.as_bytes(), status.as_bytes(), &headers]);

    let mut out = Vec::with_capacity(2048 + notification.len() + status.len() + headers.len());
    let mut head = String::new();
    head.push_str(&format!("From: MAILER-DAEMON@{host} (Mail Delivery System)\r\n"));
    head.push_str(&format!("To: <{sender}>\r\n"));
    head.push_str("Subject: Undelivered Mail Returned to Sender\r\n");
    head.push_str(&format!("Date: {}\r\n", rfc5322_date(now)));
    head.push_str(&format!("Message-ID: <{stamp}.{}@{host}>\r\n", std::process::id()));
    head.push_str("MIME-Version: 1.0\r\n");
    // RFC 3834 §5: marks the message as automatic, so responders do not answer it.
    head.push_str("Auto-Submitted: auto-replied\r\n");
    head.push_str(&format!(
        "Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary=\"{boundary}\"\r\n"
    ));
    if eight_bit {
        // RFC 2045 §6.4: a multipart holding an 8bit part is itself 8bit.
        head.push_str("Content-Transfer-Encoding: 8bit\r\n");
    }
    head.push_str("\r\nThis is a MIME-encapsulated message.\r\n\r\n");

    head.push_str(&format!("--{boundary}\r\n"));
    head.push_str("Content-Description: Notification\r\n");
    head.push_str("Content-Type: text/plain; charset=us-ascii\r\n\r\n");
    head.push_str(&notification);

    head.push_str(&format!("--{boundary}\r\n"));
    head.push_str("Content-Description: Delivery report\r\n");
    head.push_str("Content-Type: message/delivery-status\r\n\r\n");
    head.push_str(&status);

    head.push_str(&format!("--{boundary}\r\n"));
    head.push_str("Content-Description: Undelivered Message Headers\r\n");
    head.push_str("Content-Type: text/rfc822-headers\r\n");
    if eight_bit {
        head.push_str("Content-Transfer-Encoding: 8bit\r\n");
    }
    head.push_str("\r\n");
    out.extend_from_slice(head.as_bytes());
    out.extend_from_slice(&headers);
    out.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    Some(out)
}

/// Part 1: what happened, for a person. Each line ends in CRLF.
fn notification(host: &str, failed: &[FailedRecipient]) -> String {
    let mut text = format!("This is the mail system at host {host}.\r\n\r\n");
    text.push_str(&wrap(
        "I'm sorry to have to inform you that your message could not be delivered to one or more \
         recipients. The reasons are listed below; the headers of your message are attached.",
        "",
    ));
    text.push_str("\r\n");
    for recipient in failed {
        let diagnostic = match clean(&recipient.diagnostic, MAX_DIAGNOSTIC) {
            d if d.is_empty() => format!("delivery failed (status {})", status_code(&recipient.status)),
            d => d,
        };
        let line = match &recipient.remote_mta {
            Some(mta) => format!("<{}>: host {} said: {diagnostic}", word(&recipient.recipient), word(mta)),
            None => format!("<{}>: {diagnostic}", word(&recipient.recipient)),
        };
        text.push_str(&wrap(&line, "    "));
        text.push_str("\r\n");
    }
    text
}

/// Part 2 (RFC 3464 §2.2, §2.3): the per-message fields, then one group per recipient,
/// groups separated by an empty line.
fn delivery_status(host: &str, arrival: OffsetDateTime, failed: &[FailedRecipient]) -> String {
    let mut text = field("Reporting-MTA", &format!("dns; {host}"));
    text.push_str(&field("Arrival-Date", &rfc5322_date(arrival)));
    for recipient in failed {
        text.push_str("\r\n");
        text.push_str(&field("Final-Recipient", &format!("rfc822; {}", word(&recipient.recipient))));
        // RFC 3464 §2.3.3: "failed" is the one action a bounce reports, whatever the
        // status class (a 4.x.x status means the retry window ran out).
        text.push_str(&field("Action", "failed"));
        text.push_str(&field("Status", &status_code(&recipient.status)));
        if let Some(mta) = &recipient.remote_mta {
            text.push_str(&field("Remote-MTA", &format!("dns; {}", word(mta))));
        }
        let diagnostic = clean(&recipient.diagnostic, MAX_DIAGNOSTIC);
        if !diagnostic.is_empty() {
            // RFC 3464 §2.3.6: type "smtp" is for SMTP replies; a description of our own
            // (connection refused, timed out) gets a private "X-" type.
            let kind = if is_smtp_reply(&diagnostic) { "smtp" } else { "X-maild" };
            text.push_str(&field("Diagnostic-Code", &format!("{kind}; {diagnostic}")));
        }
    }
    text
}

/// Part 3: the original header block, up to its first empty line (RFC 5322 §2.1), in
/// whole lines up to [`MAX_RETURNED_HEADERS`], each ending in CRLF. Control characters
/// (NUL, a bare CR) are replaced; 8-bit bytes are kept, and reported in the second value.
fn header_block(original: &[&[u8]]) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    let mut line = Vec::new();
    let mut bytes = original.iter().flat_map(|part| part.iter().copied());
    loop {
        let next = bytes.next();
        match next {
            Some(b'\n') | None => {
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                if line.is_empty() || out.len() + line.len() + 2 > MAX_RETURNED_HEADERS {
                    break;
                }
                out.extend(line.iter().map(|&b| match b {
                    b'\t' => b'\t',
                    b'\r' => b' ',
                    b if b.is_ascii_control() => b'?',
                    b => b,
                }));
                out.extend_from_slice(b"\r\n");
                line.clear();
                if next.is_none() {
                    break;
                }
            }
            // A line this long cannot be returned whole; stop before it.
            Some(_) if line.len() >= MAX_RETURNED_HEADERS => break,
            Some(b) => line.push(b),
        }
    }
    let eight_bit = !out.is_ascii();
    (out, eight_bit)
}

/// The first of `base.0`, `base.1`, … that occurs in none of `contents`, so no line of
/// the content can be taken for a boundary (RFC 2046 §5.1.1). A boundary is at most 70
/// characters: `maild.` + 20 + 1 + 9 + 1 + 20 + `.` + a few digits fits.
fn choose_boundary(base: &str, contents: &[&[u8]]) -> String {
    let mut attempt = 0u64;
    loop {
        let candidate = format!("{base}.{attempt}");
        let needle = candidate.as_bytes();
        if !contents.iter().any(|content| content.windows(needle.len()).any(|w| w == needle)) {
            return candidate;
        }
        attempt += 1;
    }
}

/// `Name: value` CRLF, folded at spaces (RFC 5322 §2.2.3) so lines stay within
/// [`LINE_WIDTH`] where the words allow. `value` must already be clean.
fn field(name: &str, value: &str) -> String {
    fold(&format!("{name}:"), value, " ")
}

/// A paragraph of the notification, wrapped at [`LINE_WIDTH`], continuation lines
/// indented by `indent`.
fn wrap(text: &str, indent: &str) -> String {
    let mut words = text.split(' ').filter(|w| !w.is_empty());
    let first = words.next().unwrap_or("");
    fold(first, &words.collect::<Vec<_>>().join(" "), indent)
}

/// `start` then each word of `rest`, a new line (begun with `continuation`) whenever the
/// next word would pass the width. Every line ends in CRLF.
fn fold(start: &str, rest: &str, continuation: &str) -> String {
    let mut out = String::from(start);
    let mut column = start.len();
    for word in rest.split(' ').filter(|w| !w.is_empty()) {
        if column + 1 + word.len() > LINE_WIDTH && column > continuation.len() {
            out.push_str("\r\n");
            out.push_str(continuation);
            out.push_str(word);
            column = continuation.len() + word.len();
        } else {
            out.push(' ');
            out.push_str(word);
            column += 1 + word.len();
        }
    }
    out.push_str("\r\n");
    out
}

/// Free text made safe for a header field or a line of text: printable ASCII, whitespace
/// and control characters (CR and LF included) become single spaces, other characters
/// `?`; cut to `max` characters.
fn clean(text: &str, max: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max));
    for c in text.chars() {
        let c = match c {
            c if c.is_ascii_graphic() => c,
            c if c.is_whitespace() || c.is_control() => ' ',
            _ => '?',
        };
        if c == ' ' && (out.is_empty() || out.ends_with(' ')) {
            continue;
        }
        if out.len() >= max {
            out.truncate(max.saturating_sub(3));
            out.push_str("...");
            break;
        }
        out.push(c);
    }
    out.trim_end().to_string()
}

/// An address or host name made safe for a header: one word of printable ASCII, with no
/// angle brackets (it is written inside `<…>`).
fn word(text: &str) -> String {
    text.chars().take(MAX_WORD).map(|c| if c.is_ascii_graphic() && c != '<' && c != '>' { c } else { '?' }).collect()
}

/// Our own name, for `MAILER-DAEMON@…`, the Message-ID and `Reporting-MTA: dns;`.
fn host_name(hostname: &str) -> String {
    let host: String = hostname
        .chars()
        .take(MAX_WORD)
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') { c } else { '-' })
        .collect();
    if host.is_empty() {
        "localhost".into()
    } else {
        host
    }
}

/// The status as given if it is an RFC 3463 §2 code (`class.subject.detail`, class 2, 4
/// or 5, the others 1 to 3 digits), else `5.0.0` (other undefined status).
fn status_code(status: &str) -> String {
    let parts: Vec<&str> = status.trim().split('.').collect();
    let digits = |s: &str, max: usize| (1..=max).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit());
    match parts.as_slice() {
        [class, subject, detail] if matches!(*class, "2" | "4" | "5") && digits(subject, 3) && digits(detail, 3) => {
            status.trim().to_string()
        }
        _ => "5.0.0".into(),
    }
}

/// Whether the text starts like an SMTP reply: three digits, then a space or nothing.
fn is_smtp_reply(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes.len() >= 3 && bytes[..3].iter().all(u8::is_ascii_digit) && bytes.get(3).is_none_or(|&b| b == b' ')
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::process::{Command, Stdio};

    fn at(seconds: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(seconds).unwrap()
    }

    fn failed(recipient: &str, status: &str, diagnostic: &str, remote_mta: Option<&str>) -> FailedRecipient {
        FailedRecipient {
            recipient: recipient.into(),
            status: status.into(),
            diagnostic: diagnostic.into(),
            remote_mta: remote_mta.map(str::to_string),
        }
    }

    const ORIGINAL: &[&[u8]] = &[TRACE.as_bytes(), b"Subject: hello\r\nFrom: s@x\r\n\r\nThe body, never returned.\r\n"];
    const TRACE: &str = concat!(
        "Received: from client ([127.0.0.1])\r\n",
        "\tby mx.test (maild) with ESMTP id 7;\r\n",
        "\tThu, 01 Jan 1970 00:00:00 +0000\r\n",
    );
    const USER_UNKNOWN: &str = "550 5.1.1 <a@peer.test>: Recipient address rejected: User unknown";

    fn sample() -> Vec<u8> {
        bounce(
            "mx.test",
            "s@x",
            at(0),
            at(3600),
            ORIGINAL,
            &[
                failed("a@peer.test", "5.1.1", USER_UNKNOWN, Some("peer.test")),
                failed("b@peer.test", "4.4.7", "connection refused", None),
            ],
        )
        .unwrap()
    }

    /// A small MIME reader for the tests: header fields (unfolded) and body of a part.
    fn split(entity: &str) -> (Fields, &str) {
        let (head, body) = entity.split_once("\r\n\r\n").unwrap_or((entity, ""));
        let mut fields = Fields::new();
        for line in head.split("\r\n") {
            if line.starts_with([' ', '\t']) {
                fields.last_mut().unwrap().1.push_str(line);
            } else if let Some((name, value)) = line.split_once(':') {
                fields.push((name.to_string(), value.trim().to_string()));
            } else {
                panic!("not a header line: {line:?}");
            }
        }
        (fields, body)
    }

    fn pairs(fields: &[(String, String)]) -> Vec<(&str, &str)> {
        fields.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect()
    }

    fn get<'a>(fields: &'a [(String, String)], name: &str) -> Vec<&'a str> {
        fields.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str()).collect()
    }

    type Fields = Vec<(String, String)>;

    /// The top-level fields and the three parts (each split into fields and body).
    fn parse(message: &[u8]) -> (Fields, Vec<(Fields, String)>) {
        let text = String::from_utf8(message.to_vec()).unwrap();
        let (top, body) = split(&text);
        let content_type = get(&top, "Content-Type")[0];
        let boundary = content_type.split("boundary=\"").nth(1).unwrap().trim_end_matches('"');
        let delimiter = format!("--{boundary}");
        let body = body.strip_suffix(&format!("\r\n{delimiter}--\r\n")).expect("close delimiter at the end");
        let separator = format!("\r\n{delimiter}\r\n");
        let mut pieces = body.split(&separator);
        assert_eq!(pieces.next().unwrap(), "This is a MIME-encapsulated message.\r\n");
        let parts = pieces
            .map(|piece| {
                let (fields, body) = split(piece);
                (fields, body.to_string())
            })
            .collect();
        (top, parts)
    }

    #[test]
    fn bounce_structure() {
        let message = sample();
        let text = String::from_utf8(message.clone()).unwrap();
        // CRLF everywhere, and no line past the RFC 5322 hard limit.
        assert!(!text.replace("\r\n", "").contains(['\r', '\n']));
        assert!(text.split("\r\n").all(|l| l.len() <= 998));

        let (top, parts) = parse(&message);
        let names: Vec<&str> = top.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            ["From", "To", "Subject", "Date", "Message-ID", "MIME-Version", "Auto-Submitted", "Content-Type"]
        );
        assert_eq!(get(&top, "From"), ["MAILER-DAEMON@mx.test (Mail Delivery System)"]);
        assert_eq!(get(&top, "To"), ["<s@x>"]);
        assert_eq!(get(&top, "Subject"), ["Undelivered Mail Returned to Sender"]);
        assert_eq!(get(&top, "Date"), ["Thu, 01 Jan 1970 01:00:00 +0000"]);
        assert_eq!(get(&top, "Auto-Submitted"), ["auto-replied"]);
        assert!(get(&top, "Message-ID")[0].ends_with("@mx.test>"));
        assert!(get(&top, "Content-Type")[0].starts_with("multipart/report; report-type=delivery-status;"));

        let types: Vec<&str> = parts.iter().map(|(f, _)| get(f, "Content-Type")[0]).collect();
        assert_eq!(types, ["text/plain; charset=us-ascii", "message/delivery-status", "text/rfc822-headers"]);

        let notification = parts[0].1.replace("\r\n    ", " ");
        let said = format!("<a@peer.test>: host peer.test said: {USER_UNKNOWN}");
        assert!(notification.contains(&said), "{notification}");
        assert!(notification.contains("<b@peer.test>: connection refused"), "{notification}");

        let groups: Vec<&str> = parts[1].1.trim_end_matches("\r\n").split("\r\n\r\n").collect();
        assert_eq!(groups.len(), 3, "{groups:?}");
        let (per_message, _) = split(groups[0]);
        assert_eq!(
            pairs(&per_message),
            [("Reporting-MTA", "dns; mx.test"), ("Arrival-Date", "Thu, 01 Jan 1970 00:00:00 +0000")]
        );
        let (first, _) = split(groups[1]);
        assert_eq!(
            pairs(&first),
            [
                ("Final-Recipient", "rfc822; a@peer.test"),
                ("Action", "failed"),
                ("Status", "5.1.1"),
                ("Remote-MTA", "dns; peer.test"),
                ("Diagnostic-Code", format!("smtp; {USER_UNKNOWN}").as_str()),
            ]
        );
        let (second, _) = split(groups[2]);
        assert_eq!(
            pairs(&second),
            [
                ("Final-Recipient", "rfc822; b@peer.test"),
                ("Action", "failed"),
                ("Status", "4.4.7"),
                ("Diagnostic-Code", "X-maild; connection refused"),
            ]
        );

        // The header block, not the body.
        assert_eq!(parts[2].1, format!("{TRACE}Subject: hello\r\nFrom: s@x"));
    }

    #[test]
    fn no_bounce_for_the_null_sender_or_for_nobody() {
        let one = [failed("a@y", "5.1.1", "550 no", None)];
        assert_eq!(bounce("mx.test", "", at(0), at(0), ORIGINAL, &one), None);
        assert_eq!(bounce("mx.test", "s@x", at(0), at(0), ORIGINAL, &[]), None);
    }

    #[test]
    fn message_ids_are_unique() {
        let id = |m: Vec<u8>| get(&parse(&m).0, "Message-ID")[0].to_string();
        let (a, b) = (id(sample()), id(sample()));
        assert_ne!(a, b);
    }

    #[test]
    fn header_injection_is_neutralised() {
        let evil = [
            failed(
                "a@y>\r\nBcc: victim@z",
                "5.1.1\r\nX-Evil: 1",
                "550 no\r\n\r\n--fake\r\nContent-Type: text/html\r\n\r\n<b>\u{0}\u{1b}[31m",
                Some("mx\r\nX-Evil: 2"),
            ),
            failed("b@y", "not a status", &format!("550 {}", "long ".repeat(400)), None),
        ];
        let message = bounce("mx.test\r\nX-Evil: 3", "s@x>\r\nBcc: victim@z", at(0), at(0), ORIGINAL, &evil).unwrap();
        let text = String::from_utf8(message.clone()).unwrap();
        for line in text.split("\r\n") {
            assert!(!line.starts_with("Bcc") && !line.starts_with("X-Evil") && !line.starts_with("--fake"), "{line:?}");
            assert!(line.len() <= LINE_WIDTH || !line.contains(' '), "{line:?}");
            assert!(!line.contains(['\u{0}', '\u{1b}']));
        }
        let (top, parts) = parse(&message);
        assert_eq!(get(&top, "To"), ["<s@x???Bcc:?victim@z>"]);
        assert_eq!(get(&top, "From"), ["MAILER-DAEMON@mx.test--X-Evil--3 (Mail Delivery System)"]);
        assert_eq!(parts.len(), 3);
        let groups: Vec<&str> = parts[1].1.trim_end_matches("\r\n").split("\r\n\r\n").collect();
        assert_eq!(groups.len(), 3);
        let (first, _) = split(groups[1]);
        assert_eq!(get(&first, "Final-Recipient"), ["rfc822; a@y???Bcc:?victim@z"]);
        assert_eq!(get(&first, "Status"), ["5.0.0"]);
        assert_eq!(get(&first, "Remote-MTA"), ["dns; mx??X-Evil:?2"]);
        assert_eq!(get(&first, "Diagnostic-Code"), ["smtp; 550 no --fake Content-Type: text/html <b> [31m"]);
        let (second, _) = split(groups[2]);
        assert_eq!(get(&second, "Status"), ["5.0.0"]);
        let diagnostic = get(&second, "Diagnostic-Code")[0];
        assert!(diagnostic.ends_with("...") && diagnostic.len() < MAX_DIAGNOSTIC + 20, "{diagnostic}");
    }

    #[test]
    fn header_block_table() {
        let long_line = format!("X: {}\r\n", "y".repeat(MAX_RETURNED_HEADERS));
        let many = "X: y\r\n".repeat(MAX_RETURNED_HEADERS / 6 + 10);
        // (the original's parts, the block returned, whether it holds 8-bit bytes)
        type Case<'a> = (Vec<&'a [u8]>, &'a [u8], bool);
        let table: Vec<Case> = vec![
            (vec![b"A: 1\r\nB: 2\r\n\r\nbody\r\n"], b"A: 1\r\nB: 2\r\n", false),
            // The empty line split over parts.
            (vec![b"A: 1\r\n", b"\r", b"\nbody\r\n"], b"A: 1\r\n", false),
            (vec![b"A: 1\r", b"\n\r\nbody"], b"A: 1\r\n", false),
            // Bare LF line ends; no empty line at all; no final line end.
            (vec![b"A: 1\nB: 2\n\nbody"], b"A: 1\r\nB: 2\r\n", false),
            (vec![b"A: 1\r\nB: 2"], b"A: 1\r\nB: 2\r\n", false),
            (vec![], b"", false),
            (vec![b"\r\nbody"], b"", false),
            // Control characters replaced, folding and 8-bit kept.
            (vec![b"A: \x00x\ry\r\n\tz\r\nS: caf\xc3\xa9\r\n\r\n"], b"A: ?x y\r\n\tz\r\nS: caf\xc3\xa9\r\n", true),
            // Bounded: a line too long to return ends the block before it.
            (vec![b"A: 1\r\n", long_line.as_bytes()], b"A: 1\r\n", false),
        ];
        for (parts, expected, eight_bit) in table {
            assert_eq!(header_block(&parts), (expected.to_vec(), eight_bit), "{parts:?}");
        }
        let (block, _) = header_block(&[many.as_bytes()]);
        assert!(block.len() <= MAX_RETURNED_HEADERS && block.len() > MAX_RETURNED_HEADERS - 6);
        assert!(block.ends_with(b"X: y\r\n"));
    }

    #[test]
    fn boundary_is_regenerated_when_the_content_holds_it() {
        assert_eq!(choose_boundary("b", &[b"nothing here"]), "b.0");
        assert_eq!(choose_boundary("b", &[b"--b.0\r\n", b"x b.1 b.2"]), "b.3");
        // A longer candidate that merely starts like one in the content is fine too, but
        // one the content contains anywhere is not.
        assert_eq!(choose_boundary("b", &[b"b.10"]), "b.0");
        assert_eq!(choose_boundary("b", &[b"b.0b.1"]), "b.2");
    }

    #[test]
    fn status_and_diagnostic_helpers() {
        let statuses = [
            ("5.1.1", "5.1.1"),
            ("4.4.7", "4.4.7"),
            (" 5.7.1 ", "5.7.1"),
            ("2.0.0", "2.0.0"),
            ("5.1234.1", "5.0.0"),
            ("3.1.1", "5.0.0"),
            ("5.1", "5.0.0"),
            ("", "5.0.0"),
            ("5.a.1", "5.0.0"),
        ];
        for (input, expected) in statuses {
            assert_eq!(status_code(input), expected, "{input:?}");
        }
        let replies = [("550 x", true), ("550", true), ("421-x", false), ("timeout", false), ("55 x", false)];
        for (input, expected) in replies {
            assert_eq!(is_smtp_reply(input), expected, "{input:?}");
        }
        let cleaned = [("a\r\nb", "a b"), ("  a   b  ", "a b"), ("caf\u{e9}", "caf?"), ("\u{0}x", "x")];
        for (input, expected) in cleaned {
            assert_eq!(clean(input, 100), expected, "{input:?}");
        }
        assert_eq!(clean(&"x".repeat(50), 10), "xxxxxxx...");
    }

    /// Python's email package is the independent reader: it must see a multipart/report
    /// whose delivery-status part holds the per-message group and one group per recipient.
    #[test]
    fn python_email_module_parses_the_bounce() {
        let script = r#"
import sys, email
m = email.message_from_bytes(sys.stdin.buffer.read())
print("type", m.get_content_type())
print("report-type", m.get_param("report-type"))
print("defects", sum(len(p.defects) for p in m.walk()))
parts = m.get_payload()
print("parts", " ".join(p.get_content_type() for p in parts))
for block in parts[1].get_payload():
    print("block", "|".join(k + "=" + " ".join(v.split()) for k, v in block.items()))
print("to", m["To"])
print("bcc", m["Bcc"])
"#;
        let mut cases = vec![(sample(), "<s@x>")];
        let evil = [failed("a@y\r\nBcc: v@z", "5.1.1", "550 no\r\n\r\n--x\r\n", Some("mx\r\nX: 1"))];
        cases.push((bounce("mx.test", "s@x\r\nBcc: v@z", at(0), at(0), ORIGINAL, &evil).unwrap(), "<s@x??Bcc:?v@z>"));
        for (message, to) in cases {
            let mut child = Command::new("python3")
                .args(["-c", script])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .expect("python3 runs");
            child.stdin.take().unwrap().write_all(&message).unwrap();
            let output = child.wait_with_output().unwrap();
            assert!(output.status.success(), "{output:?}");
            let stdout = String::from_utf8(output.stdout).unwrap();
            let lines: Vec<&str> = stdout.lines().collect();
            assert_eq!(lines[0], "type multipart/report");
            assert_eq!(lines[1], "report-type delivery-status");
            assert_eq!(lines[2], "defects 0");
            assert_eq!(lines[3], "parts text/plain message/delivery-status text/rfc822-headers");
            assert_eq!(lines[4], "block Reporting-MTA=dns; mx.test|Arrival-Date=Thu, 01 Jan 1970 00:00:00 +0000");
            let blocks: Vec<&str> = lines.iter().filter(|l| l.starts_with("block ")).copied().collect();
            assert_eq!(blocks.len(), message_recipients(&message) + 1, "{stdout}");
            assert!(blocks[1].starts_with("block Final-Recipient=rfc822; a@"), "{stdout}");
            assert!(blocks[1].contains("|Action=failed|Status=5.1.1|"), "{stdout}");
            assert_eq!(lines[lines.len() - 2], format!("to {to}"));
            assert_eq!(lines[lines.len() - 1], "bcc None");
        }
    }

    fn message_recipients(message: &[u8]) -> usize {
        String::from_utf8_lossy(message).matches("\r\nFinal-Recipient:").count()
    }
}
