//! Golden SMTP dialogues as plain text: the format shared by the in-process transcript
//! tests and the live tests against a running `maild` (`tests/dialogues/*.txt`).
//!
//! ```text
//! # domain: CS4410            header: local domain (repeatable)
//! # users: a@CS4410 b@CS4410  header: users that exist
//! C: HELO client              client sends the text and CRLF
//! C> RAW\r\n.\n               client sends raw bytes (escapes \r \n \t \0 \\ \xHH), nothing added
//! S: 250                      next reply line starts with this text
//! W: timeout                  client stays silent until the server's command timeout
//! X: close                    server has closed the connection
//! ```

/// One step of a dialogue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    Send(Vec<u8>),
    Expect(String),
    WaitTimeout,
    ExpectClose,
}

#[derive(Clone, Debug, Default)]
pub struct Dialogue {
    pub domains: Vec<String>,
    pub users: Vec<String>,
    pub steps: Vec<Step>,
}

impl Dialogue {
    pub fn parse(text: &str) -> Result<Dialogue, String> {
        let mut dialogue = Dialogue::default();
        for (n, line) in text.lines().enumerate() {
            let n = n + 1;
            if let Some(header) = line.strip_prefix('#') {
                if let Some(v) = header.trim().strip_prefix("domain:") {
                    dialogue.domains.push(v.trim().to_string());
                } else if let Some(v) = header.trim().strip_prefix("users:") {
                    dialogue.users.extend(v.split_whitespace().map(String::from));
                }
                continue;
            }
            if line.trim().is_empty() {
                continue;
            }
            let (tag, rest) = line.split_at_checked(3).ok_or(format!("line {n}: too short"))?;
            let step = match tag {
                "C: " => Step::Send(format!("{rest}\r\n").into_bytes()),
                "C> " => Step::Send(unescape(rest).map_err(|e| format!("line {n}: {e}"))?),
                "S: " => Step::Expect(rest.to_string()),
                "W: " => Step::WaitTimeout,
                "X: " => Step::ExpectClose,
                _ => return Err(format!("line {n}: unknown tag {tag:?}")),
            };
            dialogue.steps.push(step);
        }
        Ok(dialogue)
    }
}

pub fn unescape(text: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'\\' {
            out.push(bytes[i]);
            i += 1;
            continue;
        }
        let next = *bytes.get(i + 1).ok_or("trailing backslash")?;
        i += 2;
        match next {
            b'r' => out.push(b'\r'),
            b'n' => out.push(b'\n'),
            b't' => out.push(b'\t'),
            b'0' => out.push(0),
            b'\\' => out.push(b'\\'),
            b'x' => {
                let hex = text.get(i..i + 2).ok_or("short \\x escape")?;
                out.push(u8::from_str_radix(hex, 16).map_err(|e| e.to_string())?);
                i += 2;
            }
            other => return Err(format!("unknown escape \\{}", other as char)),
        }
    }
    Ok(out)
}
