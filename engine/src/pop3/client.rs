//! The client side of POP3 (RFC 1939) as a sans-I/O reader: commands out, response
//! bytes in, whole responses out. `mailtool fetch` and `mailtool bench pop3` run it over
//! a socket (`tools/pop3.rs`).
//!
//! Whether a response has a body depends on the command and on its status (RFC 1939 §3:
//! only a positive response to LIST, UIDL without argument, RETR, TOP and CAPA is
//! multi-line), so each command is queued with that expectation; responses come back in
//! the order of the commands, which lets them be pipelined (RFC 2449 §6.6).

use std::collections::VecDeque;

/// The longest status line accepted, terminator included (RFC 1939 §3: 512 octets; we
/// allow four times that).
pub const MAX_STATUS_LINE: usize = 2048;

/// One response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Response {
    /// `+OK`, and the text after it.
    Ok(String),
    /// `-ERR`: the whole line.
    Err(String),
    /// `+OK` with a body: the status text and the body, dot-stuffing undone, lines with
    /// their line ends, the terminating `.` line removed.
    Multiline { status: String, body: Vec<u8> },
}

/// A POP3 client session's reading side.
#[derive(Debug)]
pub struct Pop3Client {
    /// For each command sent (and the greeting): whether `+OK` brings a body.
    expected: VecDeque<bool>,
    line: Vec<u8>,
    /// The status of the multi-line response whose body is being read.
    status: Option<String>,
    body: Vec<u8>,
    max_body: usize,
    output: Vec<u8>,
}

impl Pop3Client {
    /// A session that waits for the greeting; bodies longer than `max_body` are refused.
    pub fn new(max_body: usize) -> Pop3Client {
        Pop3Client {
            expected: VecDeque::from([false]),
            line: Vec::new(),
            status: None,
            body: Vec::new(),
            max_body,
            output: Vec::new(),
        }
    }

    /// Queues a command line (CRLF added); `multiline`: a positive response has a body.
    pub fn command(&mut self, line: &str, multiline: bool) -> Result<(), String> {
        if line.contains(['\r', '\n']) {
            return Err("a POP3 command must be one line".into());
        }
        self.output.extend_from_slice(line.as_bytes());
        self.output.extend_from_slice(b"\r\n");
        self.expected.push_back(multiline);
        Ok(())
    }

    /// Commands to write, in order; empties the buffer.
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.output)
    }

    /// Takes bytes up to the end of the first response they complete; returns how many
    /// were taken and, once a response is whole, the response or why the bytes are not
    /// one (after which the session is out of step and should be closed).
    pub fn receive(&mut self, bytes: &[u8]) -> (usize, Option<Result<Response, String>>) {
        let mut taken = 0;
        while taken < bytes.len() {
            let rest = &bytes[taken..];
            let (take, complete) = crate::lines::through_lf(rest);
            taken += take;
            if self.status.is_none() && self.line.len() + take > MAX_STATUS_LINE {
                return (taken, Some(Err(format!("status line longer than {MAX_STATUS_LINE} octets"))));
            }
            if self.status.is_some() && self.body.len() + self.line.len() + take > self.max_body.saturating_add(3) {
                return (taken, Some(Err(format!("response body longer than {} octets", self.max_body))));
            }
            self.line.extend_from_slice(&rest[..take]);
            if !complete {
                break;
            }
            let line = std::mem::take(&mut self.line);
            if let Some(response) = self.on_line(line) {
                return (taken, Some(response));
            }
        }
        (taken, None)
    }

    fn on_line(&mut self, line: Vec<u8>) -> Option<Result<Response, String>> {
        if self.status.is_some() {
            // RFC 1939 §3: the body ends at a line holding only `.`; a line that begins
            // with `.` has had one more put in front.
            if line == b".\r\n" || line == b".\n" {
                let status = self.status.take().unwrap_or_default();
                return Some(Ok(Response::Multiline { status, body: std::mem::take(&mut self.body) }));
            }
            self.body.extend_from_slice(line.strip_prefix(b".").unwrap_or(&line));
            return None;
        }
        let Some(multiline) = self.expected.pop_front() else {
            return Some(Err("a response to no command".into()));
        };
        let text = String::from_utf8_lossy(&line).trim_end_matches(['\r', '\n']).to_string();
        if text == "+OK" || text.starts_with("+OK ") {
            let rest = text.get(4..).unwrap_or("").to_string();
            if multiline {
                self.status = Some(rest);
                return None;
            }
            Some(Ok(Response::Ok(rest)))
        } else if text.starts_with("-ERR") {
            Some(Ok(Response::Err(text)))
        } else {
            let shown: String = text.chars().take(64).collect();
            Some(Err(format!("not a POP3 status line: {shown:?}")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every response to the commands (`line`, multi-line) after the greeting, with the
    /// server's bytes fed `chunk` at a time; then an error, if any.
    fn responses(commands: &[(&str, bool)], server: &[u8], chunk: usize) -> (Vec<Response>, Option<String>) {
        let mut client = Pop3Client::new(64);
        for (line, multiline) in commands {
            client.command(line, *multiline).unwrap();
        }
        crate::testing::feed_in_chunks(server, chunk, |bytes| client.receive(bytes))
    }

    #[test]
    fn pipelined_responses_come_back_in_order_whatever_the_chunks() {
        let commands = [("USER a", false), ("PASS b", false), ("RETR 1", true), ("RETR 2", true), ("LIST", true)];
        let server = b"+OK hi\r\n+OK\r\n+OK logged in\r\n+OK 9 octets\r\n..dot\r\nx\n.\r\n-ERR no such message\r\n+OK\r\n1 5\r\n.\r\n";
        let want = vec![
            Response::Ok("hi".into()),
            Response::Ok(String::new()),
            Response::Ok("logged in".into()),
            Response::Multiline { status: "9 octets".into(), body: b".dot\r\nx\n".to_vec() },
            Response::Err("-ERR no such message".into()),
            Response::Multiline { status: String::new(), body: b"1 5\r\n".to_vec() },
        ];
        for chunk in [1, 3, 1000] {
            assert_eq!(responses(&commands, server, chunk), (want.clone(), None), "chunks of {chunk}");
        }
    }

    #[test]
    fn what_is_not_a_response_is_an_error() {
        let table: Vec<(&[u8], &str)> = vec![
            (b"* OK imap\r\n", "not a POP3 status line"),
            (b"+OKAY\r\n", "not a POP3 status line"),
            (b"+OK\r\n+OK extra\r\n", "a response to no command"),
            (b"+OK\r\n+OK\r\n.\r\n", "a response to no command"),
        ];
        for (server, error) in table {
            let (_, got) = responses(&[], server, 5);
            assert!(got.as_deref().is_some_and(|g| g.contains(error)), "{server:?}: {got:?}");
        }
        let long = format!("+OK {}\r\n", "x".repeat(MAX_STATUS_LINE));
        assert!(responses(&[], long.as_bytes(), 100).1.unwrap().contains("status line longer"));
        let big = format!("+OK\r\n+OK\r\n{}\r\n.\r\n", "y".repeat(100));
        assert!(responses(&[("RETR 1", true)], big.as_bytes(), 7).1.unwrap().contains("body longer than 64"));
        assert!(Pop3Client::new(1).command("USER a\r\nDELE 1", false).is_err());
    }
}
