//! Reply framing for the client side (RFC 5321 §4.2): bytes in, whole replies out. Pure;
//! bounded in memory, so a hostile server cannot grow ours.

/// The longest reply line accepted, terminator included. RFC 5321 §4.5.3.1.5 allows 512
/// octets, but real servers send longer texts (URLs, enhanced explanations), so we take
/// four times that and no more.
pub const MAX_REPLY_LINE: usize = 2048;

/// The most lines one multi-line reply may have. RFC 5321 sets no limit; the longest
/// replies in practice are EHLO's, a dozen or two lines.
pub const MAX_REPLY_LINES: usize = 100;

/// Reply summaries (for outcomes, logs and bounces) are cut to this many characters.
const MAX_SUMMARY: usize = 2048;

/// A whole reply: its code and the text of each line (code and separator removed, made
/// printable).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerReply {
    pub code: u16,
    pub lines: Vec<String>,
}

impl ServerReply {
    /// The reply on one line, for outcomes and logs: `550 5.1.1 <x@y>: User unknown`;
    /// the lines of a multi-line reply are joined with spaces.
    pub fn summary(&self) -> String {
        let mut summary = self.code.to_string();
        for line in self.lines.iter().filter(|l| !l.is_empty()) {
            summary.push(' ');
            summary.push_str(line);
        }
        // The text is ASCII (see `printable`), so any index is a character boundary.
        summary.truncate(MAX_SUMMARY);
        summary
    }
}

/// Cuts bytes into replies. Lines end at LF (a CR before it is removed; RFC 5321
/// requires CRLF but a bare LF costs nothing to accept).
#[derive(Debug, Default)]
pub struct ReplyReader {
    line: Vec<u8>,
    assembler: ReplyAssembler,
}

impl ReplyReader {
    /// Takes bytes up to the end of the first reply they complete. Returns how many were
    /// taken and, once a reply is whole, the reply or why the bytes are not one. Bytes
    /// after a reply are left for the next call.
    pub fn push(&mut self, bytes: &[u8]) -> (usize, Option<Result<ServerReply, String>>) {
        let mut taken = 0;
        while taken < bytes.len() {
            let rest = &bytes[taken..];
            let (take, complete) = crate::lines::through_lf(rest);
            if self.line.len() + take > MAX_REPLY_LINE {
                return (taken + take, Some(Err(format!("reply line longer than {MAX_REPLY_LINE} octets"))));
            }
            self.line.extend_from_slice(&rest[..take]);
            taken += take;
            if !complete {
                break;
            }
            self.line.pop();
            if self.line.last() == Some(&b'\r') {
                self.line.pop();
            }
            let line = std::mem::take(&mut self.line);
            match self.assembler.push(&line) {
                Ok(None) => {}
                Ok(Some(reply)) => return (taken, Some(Ok(reply))),
                Err(error) => return (taken, Some(Err(error))),
            }
            self.line = line;
            self.line.clear();
        }
        (taken, None)
    }

    /// Whether part of a reply has been taken and the rest is still to come.
    pub fn is_mid_reply(&self) -> bool {
        !self.line.is_empty() || !self.assembler.lines.is_empty()
    }
}

/// Gathers the lines of one reply (RFC 5321 §4.2.1: `250-first`, …, `250 last`).
#[derive(Debug, Default)]
struct ReplyAssembler {
    code: Option<u16>,
    lines: Vec<String>,
}

impl ReplyAssembler {
    /// Takes one line (terminator removed); returns the reply once its last line is in.
    fn push(&mut self, line: &[u8]) -> Result<Option<ServerReply>, String> {
        let (code, last, text) = parse_line(line)?;
        match self.code {
            // RFC 5321 §4.2.1: every line of a multi-line reply carries the same code.
            Some(first) if first != code => {
                return Err(format!("reply code changed from {first} to {code} within a multi-line reply"));
            }
            _ => self.code = Some(code),
        }
        if self.lines.len() >= MAX_REPLY_LINES {
            return Err(format!("reply longer than {MAX_REPLY_LINES} lines"));
        }
        self.lines.push(printable(text));
        if !last {
            return Ok(None);
        }
        self.code = None;
        Ok(Some(ServerReply { code, lines: std::mem::take(&mut self.lines) }))
    }
}

/// Splits a reply line into its code, whether it is the last line, and its text.
///
/// RFC 5321 §4.2: `Reply-code [ SP textstring ] CRLF` ends a reply and
/// `Reply-code "-" [ textstring ] CRLF` continues it. RFC 5321 §4.2.1: the first digit
/// is 2 to 5 (1yz is not used in SMTP); anything else is not a reply.
fn parse_line(line: &[u8]) -> Result<(u16, bool, &[u8]), String> {
    let malformed = || format!("malformed reply line {:?}", printable(&line[..line.len().min(64)]));
    let (digits, rest) = match line {
        [a @ b'2'..=b'5', b @ b'0'..=b'9', c @ b'0'..=b'9', rest @ ..] => ([*a, *b, *c], rest),
        _ => return Err(malformed()),
    };
    let code = digits.iter().fold(0u16, |n, d| n * 10 + u16::from(d - b'0'));
    match rest {
        [] => Ok((code, true, rest)),
        [b' ', text @ ..] => Ok((code, true, text)),
        [b'-', text @ ..] => Ok((code, false, text)),
        _ => Err(malformed()),
    }
}

/// The peer's text, made safe to log and to quote in a bounce: printable ASCII only.
fn printable(text: &[u8]) -> String {
    text.iter()
        .map(|&b| match b {
            b' ' | b'\t' => ' ',
            b if b.is_ascii_graphic() => char::from(b),
            _ => '?',
        })
        .collect()
}

/// The EHLO keywords a client acts on (RFC 5321 §4.1.1.1: one per line after the
/// first, keyword then parameters, case-insensitive).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Extensions {
    /// RFC 2920.
    pub pipelining: bool,
    /// RFC 1870: SIZE was offered, so MAIL carries `SIZE=n`.
    pub size_advertised: bool,
    /// RFC 1870 §3: the fixed limit; `SIZE 0` or no number means none.
    pub size_limit: Option<u64>,
    /// RFC 6152.
    pub eight_bit_mime: bool,
    /// RFC 3207.
    pub starttls: bool,
    /// RFC 2034.
    pub enhanced_status_codes: bool,
    /// SIZE came with a value that is not a number (which counts as no limit).
    pub size_malformed: bool,
    /// RFC 4954 with the PLAIN mechanism (RFC 4616).
    pub auth_plain: bool,
}

impl Extensions {
    /// The keywords in the lines after EHLO's first.
    pub fn parse(lines: &[String]) -> Extensions {
        let mut extensions = Extensions::default();
        for line in lines {
            let mut words = line.split_ascii_whitespace();
            let keyword = words.next().unwrap_or("");
            if keyword.eq_ignore_ascii_case("PIPELINING") {
                extensions.pipelining = true;
            } else if keyword.eq_ignore_ascii_case("8BITMIME") {
                extensions.eight_bit_mime = true;
            } else if keyword.eq_ignore_ascii_case("STARTTLS") {
                extensions.starttls = true;
            } else if keyword.eq_ignore_ascii_case("ENHANCEDSTATUSCODES") {
                extensions.enhanced_status_codes = true;
            } else if keyword.eq_ignore_ascii_case("AUTH") {
                extensions.auth_plain |= words.any(|mechanism| mechanism.eq_ignore_ascii_case("PLAIN"));
            } else if keyword.eq_ignore_ascii_case("SIZE") {
                extensions.size_advertised = true;
                let value = words.next().map(str::parse::<u64>);
                extensions.size_malformed = matches!(value, Some(Err(_)));
                extensions.size_limit = value.and_then(Result::ok).filter(|&n| n > 0);
            }
        }
        extensions
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads every reply in `input`, `chunk` bytes at a time as a socket would hand them
    /// over; then the error, or "end of input" with nothing pending.
    fn replies(input: &[u8], chunk: usize) -> (Vec<ServerReply>, String) {
        let mut reader = ReplyReader::default();
        let (replies, error) = crate::testing::feed_in_chunks(input, chunk, |bytes| reader.push(bytes));
        let end = match error {
            Some(error) => error,
            None if reader.is_mid_reply() => "closed by the peer".to_string(),
            None => "end of input".to_string(),
        };
        (replies, end)
    }

    #[test]
    fn reply_parsing_table() {
        // Expected: Ok((code, lines)) or Err(part of the error message).
        type Expected = Result<(u16, Vec<&'static str>), &'static str>;
        let long = format!("250 {}\r\n", "x".repeat(MAX_REPLY_LINE));
        let many = "250-x\r\n".repeat(MAX_REPLY_LINES) + "250 end\r\n";
        let table: Vec<(&[u8], Expected)> = vec![
            (b"220 mx.test ESMTP\r\n", Ok((220, vec!["mx.test ESMTP"]))),
            (b"250\r\n", Ok((250, vec![""]))),
            (b"250 ok\n", Ok((250, vec!["ok"]))),
            (b"250-mx\r\n250-PIPELINING\r\n250 SIZE 10\r\n", Ok((250, vec!["mx", "PIPELINING", "SIZE 10"]))),
            (b"550 5.1.1 <a\x00b>\xff: no\r\n", Ok((550, vec!["5.1.1 <a?b>?: no"]))),
            (b"250-a\r\n251 b\r\n", Err("reply code changed")),
            (b"25O ok\r\n", Err("malformed")),
            (b"199 early\r\n", Err("malformed")),
            (b"600 what\r\n", Err("malformed")),
            (b"250_x\r\n", Err("malformed")),
            (b"\r\n", Err("malformed")),
            (b"250-first\r\n", Err("closed by the peer")),
            (b"250 no end", Err("closed by the peer")),
            (b"", Err("end of input")),
            (long.as_bytes(), Err("longer than 2048 octets")),
            (many.as_bytes(), Err("longer than 100 lines")),
        ];
        for (input, expected) in table {
            for chunk in [1, 7, 4096] {
                let (got, end) = replies(input, chunk);
                match (&expected, got.as_slice()) {
                    (Ok((code, lines)), [reply]) => {
                        assert_eq!(reply.code, *code, "{input:?}");
                        assert_eq!(&reply.lines, lines, "{input:?}");
                    }
                    (Err(part), []) => assert!(end.contains(part), "{input:?}: {end}"),
                    (expected, got) => panic!("{input:?}: got {got:?} ({end}), expected {expected:?}"),
                }
            }
        }
    }

    #[test]
    fn replies_come_one_at_a_time_and_leave_what_follows() {
        let input = b"250 a\r\n550-b\r\n550 c\r\n354 d\r\nafter";
        let mut reader = ReplyReader::default();
        let (taken, reply) = reader.push(input);
        assert_eq!((taken, reply.unwrap().unwrap().summary()), (7, "250 a".to_string()));
        let all = replies(&input[..input.len() - 5], 3).0;
        let summaries: Vec<String> = all.iter().map(ServerReply::summary).collect();
        assert_eq!(summaries, ["250 a", "550 b c", "354 d"]);
        assert_eq!(all[1].lines, ["b", "c"]);
    }

    #[test]
    fn extensions_table() {
        let table: Vec<(&[&str], Extensions)> = vec![
            (&[], Extensions::default()),
            (
                &["PIPELINING", "SIZE 1000", "8BITMIME", "ENHANCEDSTATUSCODES"],
                Extensions {
                    pipelining: true,
                    size_advertised: true,
                    size_limit: Some(1000),
                    eight_bit_mime: true,
                    enhanced_status_codes: true,
                    ..Default::default()
                },
            ),
            (&["STARTTLS", "starttls"], Extensions { starttls: true, ..Default::default() }),
            (&["pipelining", "size"], Extensions { pipelining: true, size_advertised: true, ..Default::default() }),
            (&["SIZE 0"], Extensions { size_advertised: true, ..Default::default() }),
            (&["SIZE lots"], Extensions { size_advertised: true, size_malformed: true, ..Default::default() }),
            (&["AUTH LOGIN plain"], Extensions { auth_plain: true, ..Default::default() }),
            (&["AUTH CRAM-MD5", "XPIPELINING", "SIZEX 5", "AUTHPLAIN"], Extensions::default()),
        ];
        for (lines, expected) in table {
            let lines: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
            assert_eq!(Extensions::parse(&lines), expected, "{lines:?}");
        }
    }
}
