//! A small blocking SMTP client for the load generator: just enough to send messages fast
//! with pipelining, and to tell the reply codes apart.

use std::io::{self, BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

pub struct SmtpClient {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

/// One reply: its code and the text of its last line.
#[derive(Debug, Clone)]
pub struct Reply {
    pub code: u16,
    pub text: String,
}

impl SmtpClient {
    pub fn connect(address: &str, timeout: Duration) -> io::Result<SmtpClient> {
        let stream = TcpStream::connect(address)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        let writer = stream.try_clone()?;
        Ok(SmtpClient { reader: BufReader::new(stream), writer })
    }

    pub fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.writer.write_all(bytes)
    }

    /// Reads one (possibly multi-line) reply.
    pub fn reply(&mut self) -> io::Result<Reply> {
        let mut line = String::new();
        loop {
            line.clear();
            if self.reader.read_line(&mut line)? == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "server closed the connection"));
            }
            let code = line.get(..3).and_then(|c| c.parse::<u16>().ok());
            let code = code.ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("bad reply {line:?}")))?;
            if line.as_bytes().get(3) != Some(&b'-') {
                return Ok(Reply { code, text: line.trim_end().to_string() });
            }
        }
    }

    /// Sends `command` and expects a reply with this code.
    pub fn expect(&mut self, command: &str, code: u16) -> io::Result<Reply> {
        self.send(format!("{command}\r\n").as_bytes())?;
        let reply = self.reply()?;
        if reply.code != code {
            return Err(io::Error::other(format!("{command}: expected {code}, got {}", reply.text)));
        }
        Ok(reply)
    }
}

/// Dot-stuffs a message and appends the end-of-data marker (RFC 5321 §4.5.2).
pub fn data_payload(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + 8);
    let mut at_line_start = true;
    for &b in message {
        if at_line_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        at_line_start = b == b'\n';
    }
    if !message.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}
