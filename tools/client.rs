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

/// A UTC calendar time, for `Date:` headers and mbox `From ` lines (no time zone crate
/// needed for UTC).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UtcTime {
    pub year: i64,
    /// 1–12.
    pub month: u32,
    /// 1–31.
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
    /// 0 = Sunday.
    pub weekday: u32,
}

const WEEKDAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

impl UtcTime {
    pub fn now() -> UtcTime {
        let seconds = match std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
            Ok(since) => i64::try_from(since.as_secs()).unwrap_or(i64::MAX),
            Err(before) => -i64::try_from(before.duration().as_secs()).unwrap_or(i64::MAX),
        };
        UtcTime::from_unix(seconds)
    }

    /// Seconds since 1970-01-01T00:00:00Z to the civil date, by Howard Hinnant's
    /// `civil_from_days` (proleptic Gregorian calendar).
    pub fn from_unix(seconds: i64) -> UtcTime {
        let days = seconds.div_euclid(86_400);
        let in_day = seconds.rem_euclid(86_400);
        let small = |n: i64| u32::try_from(n).unwrap_or(0);
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + i64::from(month <= 2);
        UtcTime {
            year,
            month: small(month),
            day: small(day),
            hour: small(in_day / 3600),
            minute: small(in_day / 60 % 60),
            second: small(in_day % 60),
            // 1970-01-01 was a Thursday.
            weekday: small((days + 4).rem_euclid(7)),
        }
    }

    fn names(&self) -> (&'static str, &'static str) {
        let weekday = WEEKDAYS.get(usize::try_from(self.weekday).unwrap_or(0)).copied().unwrap_or("Sun");
        let month = MONTHS.get(usize::try_from(self.month.saturating_sub(1)).unwrap_or(0)).copied().unwrap_or("Jan");
        (weekday, month)
    }

    /// C's `asctime` form, as mbox `From ` lines use it: `Thu Jan  1 00:00:00 1970`.
    pub fn asctime(&self) -> String {
        let (weekday, month) = self.names();
        format!(
            "{weekday} {month} {:>2} {:02}:{:02}:{:02} {}",
            self.day, self.hour, self.minute, self.second, self.year
        )
    }

    /// RFC 5322 §3.3 date-time: `Thu, 01 Jan 1970 00:00:00 +0000`.
    pub fn rfc5322(&self) -> String {
        let (weekday, month) = self.names();
        format!(
            "{weekday}, {:02} {month} {} {:02}:{:02}:{:02} +0000",
            self.day, self.year, self.hour, self.minute, self.second
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_payload_stuffs_leading_dots_and_terminates() {
        assert_eq!(data_payload(b".a\r\n..b\r\nc.\r\n"), b"..a\r\n...b\r\nc.\r\n.\r\n");
        assert_eq!(data_payload(b"no end"), b"no end\r\n.\r\n");
        assert_eq!(data_payload(b""), b"\r\n.\r\n");
    }

    #[test]
    fn utc_times_match_the_c_library() {
        // Expected values from Python's time.asctime(time.gmtime(t)) and strftime.
        let table = [
            (0, "Thu Jan  1 00:00:00 1970", "Thu, 01 Jan 1970 00:00:00 +0000"),
            (951_782_400, "Tue Feb 29 00:00:00 2000", "Tue, 29 Feb 2000 00:00:00 +0000"),
            (1_700_000_000, "Tue Nov 14 22:13:20 2023", "Tue, 14 Nov 2023 22:13:20 +0000"),
            (1_795_000_000, "Wed Nov 18 11:06:40 2026", "Wed, 18 Nov 2026 11:06:40 +0000"),
            (-86_400, "Wed Dec 31 00:00:00 1969", "Wed, 31 Dec 1969 00:00:00 +0000"),
        ];
        for (seconds, asctime, rfc5322) in table {
            let time = UtcTime::from_unix(seconds);
            assert_eq!(time.asctime(), asctime, "{seconds}");
            assert_eq!(time.rfc5322(), rfc5322, "{seconds}");
        }
    }
}
