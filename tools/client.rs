//! A small blocking SMTP client for `bench`, `stress` and `send`: just enough to send
//! messages fast with pipelining, and to tell the reply codes apart.
//!
//! Every socket gets a read and a write timeout, so a silent server turns into an error
//! after a bounded time instead of a hang.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use engine::transport::{ClientTransport, Transport};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection};

/// RFC 5321 §4.5.3.1.5 limits a reply line to 512 octets; we allow generous slack so a
/// long line is reported as a bad reply instead of filling memory.
const MAX_REPLY_LINE: usize = 64 * 1024;

pub struct SmtpClient {
    /// Replies are read through the buffer; commands are written to the stream below it.
    reader: BufReader<ClientTransport>,
}

/// One reply: its code, the text of its last line, and all its lines (without CRLF).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub text: String,
    pub lines: Vec<String>,
}

impl Reply {
    /// 2xx and 3xx: the command was taken.
    pub fn is_positive(&self) -> bool {
        (200..400).contains(&self.code)
    }
}

impl SmtpClient {
    /// Connects (each resolved address in turn, bounded by `timeout`) and sets the
    /// read and write timeouts to `timeout`.
    pub fn connect(address: &str, timeout: Duration) -> io::Result<SmtpClient> {
        let mut last_error = io::Error::new(io::ErrorKind::NotFound, format!("{address}: no address found"));
        for resolved in address.to_socket_addrs()? {
            match TcpStream::connect_timeout(&resolved, timeout) {
                Ok(stream) => {
                    stream.set_nodelay(true)?;
                    stream.set_read_timeout(Some(timeout))?;
                    stream.set_write_timeout(Some(timeout))?;
                    return Ok(SmtpClient { reader: BufReader::new(Transport::Plain(stream)) });
                }
                Err(error) => last_error = error,
            }
        }
        Err(last_error)
    }

    pub fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        let stream = self.reader.get_mut();
        stream.write_all(bytes)?;
        stream.flush()
    }

    /// STARTTLS (RFC 3207), then the TLS handshake with `config` for `name`. The caller
    /// greets again afterwards, as the RFC requires.
    pub fn starttls(&mut self, config: Arc<ClientConfig>, name: ServerName<'static>) -> io::Result<()> {
        self.expect("STARTTLS", 220)?;
        // Bytes after the 220 were sent in the clear and cannot belong to the TLS session.
        if !self.reader.buffer().is_empty() {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "server sent data after its 220 to STARTTLS"));
        }
        let session = ClientConnection::new(config, name).map_err(io::Error::other)?;
        self.reader.get_mut().upgrade(session)
    }

    /// Reads one (possibly multi-line) reply (RFC 5321 §4.2.1: `250-` continues, `250 `
    /// ends).
    pub fn reply(&mut self) -> io::Result<Reply> {
        let mut lines = Vec::new();
        loop {
            let mut raw = Vec::new();
            let read = (&mut self.reader).take(MAX_REPLY_LINE as u64).read_until(b'\n', &mut raw)?;
            if read == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "server closed the connection"));
            }
            let line = String::from_utf8_lossy(&raw).trim_end_matches(['\r', '\n']).to_string();
            let code =
                line.get(..3).filter(|c| c.bytes().all(|b| b.is_ascii_digit())).and_then(|c| c.parse::<u16>().ok());
            let code = code.ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("bad reply {line:?}")))?;
            let last = line.as_bytes().get(3) != Some(&b'-');
            lines.push(line);
            if last {
                let text = lines.last().cloned().unwrap_or_default();
                return Ok(Reply { code, text, lines });
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

    /// Sends `command` (CRLF added) and returns its reply, whatever the code.
    pub fn command(&mut self, command: &str) -> io::Result<Reply> {
        self.send(format!("{command}\r\n").as_bytes())?;
        self.reply()
    }

    /// After a closing reply (221, 421): true if the server closed the connection, false
    /// if it sent anything more. A reset counts as closed.
    pub fn at_eof(&mut self) -> io::Result<bool> {
        match self.reader.fill_buf() {
            Ok(rest) => Ok(rest.is_empty()),
            Err(error) if error.kind() == io::ErrorKind::ConnectionReset => Ok(true),
            Err(error) => Err(error),
        }
    }

    /// True once STARTTLS succeeded.
    pub fn is_tls(&self) -> bool {
        matches!(self.reader.get_ref(), Transport::Tls(_))
    }

    /// Closes both directions at once (used after a desynchronised dialogue).
    pub fn abort(&mut self) {
        let _ = self.reader.get_ref().tcp().shutdown(Shutdown::Both);
    }
}

/// The TLS server name for `HOST:PORT` (an IP address or a DNS name; `[v6]` too).
pub fn tls_server_name(address: &str) -> anyhow::Result<ServerName<'static>> {
    let host = address.rsplit_once(':').map_or(address, |(host, _)| host).trim_matches(['[', ']']);
    ServerName::try_from(host.to_string()).with_context(|| format!("{host:?} as a TLS server name"))
}
