//! The blocking SMTP client: the one module that runs [`ClientSession`] over a socket.
//! Forwarding, address probes, and mailtool's `send`, `bench` and `stress` all use it.
//!
//! [`SmtpConnection::open`] connects and greets; [`SmtpConnection::send`] runs one mail
//! transaction per message and reports one [`RecipientOutcome`] per recipient;
//! [`SmtpConnection::quit`] ends the session. What each reply decides is the session's
//! business ([`crate::smtp::client`]); this module moves bytes, applies timeouts, does
//! the TLS handshake and streams message data through the [`DotStuffer`].
//!
//! [`SmtpConnection::open_opportunistic`] (used towards MX hosts) also says STARTTLS when
//! the server offers it (RFC 3207) and greets again inside TLS; a server that refuses it
//! is used in plain text, and one whose handshake fails is reconnected to in plain text,
//! as Postfix does at its "may" level.
//!
//! [`SmtpStream`] is the layer below: a socket with timeouts that reads whole replies,
//! for `mailtool stress`, which sends what it likes and checks each reply itself.

use std::io::{self, BufWriter, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection};

use crate::smtp::client::{ClientSession, DotStuffer, Event, Extensions, Progress, ReplyReader};
pub use crate::smtp::client::{MessageData, OutboundMessage, RecipientOutcome, SendError, Sent, ServerReply, Stage};
use crate::transport::{ClientTransport, Transport};

/// Message data is gathered in a buffer this large, so message lines are not written one
/// system call each. Slices larger than the buffer go straight to the socket.
const WRITE_BUFFER: usize = 64 * 1024;

/// Bytes read from the socket at a time.
const READ_BUFFER: usize = 16 * 1024;

/// Asks the server at `server` whether it takes mail for `address`, on a connection of
/// its own ([`SmtpConnection::verify`]).
pub fn probe(server: SocketAddr, helo: &str, address: &str, timeout: Duration) -> Result<RecipientOutcome, SendError> {
    let mut connection = SmtpConnection::open(server, helo, timeout)?;
    let outcome = connection.verify(address);
    connection.quit();
    outcome
}

/// A connection to an SMTP server: the socket (TLS once STARTTLS succeeded), a read
/// buffer, and the timeout applied to connect, to every read and write, and to the time
/// one reply may take.
pub struct SmtpStream {
    transport: ClientTransport,
    input: Vec<u8>,
    /// `input[start..end]` is read and not yet taken.
    start: usize,
    end: usize,
    timeout: Duration,
    /// For [`SmtpStream::read_reply`]; a session has its own.
    replies: ReplyReader,
}

impl SmtpStream {
    /// Connects to each address `address` resolves to in turn, each bounded by `timeout`.
    pub fn connect(address: impl ToSocketAddrs, timeout: Duration) -> Result<SmtpStream, SendError> {
        let mut last_error = io::Error::new(io::ErrorKind::NotFound, "the address resolves to nothing");
        for resolved in address.to_socket_addrs()? {
            match TcpStream::connect_timeout(&resolved, timeout) {
                Ok(stream) => {
                    stream.set_read_timeout(Some(timeout))?;
                    stream.set_write_timeout(Some(timeout))?;
                    // We batch writes ourselves; Nagle would only delay the last segment.
                    stream.set_nodelay(true)?;
                    return Ok(SmtpStream {
                        transport: Transport::Plain(stream),
                        input: vec![0; READ_BUFFER],
                        start: 0,
                        end: 0,
                        timeout,
                        replies: ReplyReader::default(),
                    });
                }
                Err(error) => last_error = error,
            }
        }
        Err(io_error(last_error))
    }

    /// Whether the connection runs inside TLS.
    pub fn is_tls(&self) -> bool {
        self.transport.is_tls()
    }

    pub fn write_all(&mut self, bytes: &[u8]) -> Result<(), SendError> {
        self.transport.write_all(bytes).and_then(|()| self.transport.flush()).map_err(io_error)
    }

    /// Sends `line` and CRLF, and reads the reply.
    pub fn command(&mut self, line: &str) -> Result<ServerReply, SendError> {
        self.write_all(format!("{line}\r\n").as_bytes())?;
        self.read_reply()
    }

    /// Reads one reply, bounded in memory (see [`ReplyReader`]) and in time: once the
    /// timeout has passed no further read is started, so a peer trickling bytes cannot
    /// hold us past twice the timeout.
    pub fn read_reply(&mut self) -> Result<ServerReply, SendError> {
        let deadline = Instant::now().checked_add(self.timeout);
        loop {
            self.fill()?;
            let (taken, reply) = self.replies.push(&self.input[self.start..self.end]);
            self.start += taken;
            match reply {
                Some(reply) => return reply.map_err(SendError::Protocol),
                None if deadline.is_some_and(|d| Instant::now() >= d) => return Err(timed_out()),
                None => {}
            }
        }
    }

    /// After a closing reply (221, 421): true if the server closed the connection, false
    /// if it sent anything more. A reset counts as closed.
    pub fn at_eof(&mut self) -> io::Result<bool> {
        if self.start < self.end {
            return Ok(false);
        }
        match self.transport.read(&mut self.input) {
            Ok(read) => {
                (self.start, self.end) = (0, read);
                Ok(read == 0)
            }
            Err(error) if error.kind() == io::ErrorKind::ConnectionReset => Ok(true),
            Err(error) => Err(error),
        }
    }

    /// Closes both directions at once (after a desynchronised dialogue).
    pub fn abort(&mut self) {
        let _ = self.transport.tcp().shutdown(Shutdown::Both);
    }

    /// The TLS handshake with `config` for `name`. Bytes already read came in the clear
    /// and cannot belong to the TLS session: they are an error.
    pub fn upgrade(&mut self, config: Arc<ClientConfig>, name: ServerName<'static>) -> Result<(), SendError> {
        if self.start < self.end {
            return Err(SendError::Protocol("data after the 220 to STARTTLS".into()));
        }
        let session = ClientConnection::new(config, name).map_err(|e| SendError::Protocol(format!("TLS: {e}")))?;
        self.transport.upgrade(session).map_err(|e| SendError::Protocol(format!("TLS handshake: {e}")))
    }

    /// Reads more if every byte read has been taken. EOF is an error.
    fn fill(&mut self) -> Result<(), SendError> {
        while self.start == self.end {
            match self.transport.read(&mut self.input) {
                Ok(0) => {
                    let eof = io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed by the peer");
                    return Err(SendError::Io(eof));
                }
                Ok(read) => (self.start, self.end) = (0, read),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io_error(e)),
            }
        }
        Ok(())
    }

    /// Ends the connection: close_notify inside TLS, then both directions shut.
    fn close(&mut self) {
        self.transport.close_tls();
        self.abort();
    }
}

/// One open SMTP session with a server: a [`ClientSession`] run over an [`SmtpStream`].
pub struct SmtpConnection {
    stream: SmtpStream,
    session: ClientSession,
    /// When the last message's data was written in full (for `mailtool bench`).
    data_sent: Option<Instant>,
}

impl SmtpConnection {
    /// Connects (with `timeout` for connect, each read and each write), reads the 220
    /// greeting, sends EHLO `helo` (falls back to HELO on 5xx).
    pub fn open(address: impl ToSocketAddrs, helo: &str, timeout: Duration) -> Result<SmtpConnection, SendError> {
        let session = ClientSession::new(helo)?;
        let stream = SmtpStream::connect(address, timeout)?;
        let mut connection = SmtpConnection { stream, session, data_sent: None };
        match connection.run(&MessageData::Parts(&[]))? {
            Event::Ready => Ok(connection),
            event => Err(unexpected_event(&event)),
        }
    }

    /// Like [`SmtpConnection::open`], and then STARTTLS with `tls` if the server offers
    /// it. A refusal (e.g. `454`) keeps the session in plain text; a failed handshake, or a
    /// session that breaks inside TLS before it is ready, is given up and the server
    /// connected to again without TLS.
    pub fn open_opportunistic(
        address: SocketAddr,
        helo: &str,
        timeout: Duration,
        tls: &Arc<ClientConfig>,
    ) -> Result<SmtpConnection, SendError> {
        let mut connection = SmtpConnection::open(address, helo, timeout)?;
        if !connection.extensions().starttls {
            return Ok(connection);
        }
        let name = ServerName::IpAddress(address.ip().into());
        match connection.start_tls(tls.clone(), name) {
            Ok(None) => Ok(connection),
            Ok(Some(refusal)) => {
                log::info!("{address} offered STARTTLS but answered {refusal}; staying in plain text");
                Ok(connection)
            }
            Err(error) => {
                log::info!("STARTTLS with {address} failed ({error}); connecting again without TLS");
                connection.stream.close();
                SmtpConnection::open(address, helo, timeout)
            }
        }
    }

    /// STARTTLS with `config` for `name`, which the server must accept.
    pub fn starttls(&mut self, config: Arc<ClientConfig>, name: ServerName<'static>) -> Result<(), SendError> {
        match self.start_tls(config, name)? {
            None => Ok(()),
            Some(refusal) => Err(SendError::Protocol(format!("STARTTLS: {refusal}"))),
        }
    }

    /// STARTTLS, the handshake and EHLO again; `Some(reply)` if the server refused.
    fn start_tls(&mut self, config: Arc<ClientConfig>, name: ServerName<'static>) -> Result<Option<String>, SendError> {
        self.session.starttls()?;
        match self.run(&MessageData::Parts(&[]))? {
            Event::StartTls => {}
            Event::TlsRefused(reply) => return Ok(Some(reply)),
            event => return Err(unexpected_event(&event)),
        }
        if let Err(error) = self.stream.upgrade(config, name) {
            return Err(self.session.failed(error).err().unwrap_or_else(|| SendError::Protocol("TLS".into())));
        }
        self.session.tls_established()?;
        match self.run(&MessageData::Parts(&[]))? {
            Event::Ready => Ok(None),
            event => Err(unexpected_event(&event)),
        }
    }

    /// AUTH PLAIN as `user`; an error (naming the reply, never the password) if refused.
    pub fn auth_plain(&mut self, user: &str, password: &str) -> Result<(), SendError> {
        self.session.auth_plain(user, password)?;
        match self.run(&MessageData::Parts(&[]))? {
            Event::Authenticated => Ok(()),
            event => Err(unexpected_event(&event)),
        }
    }

    /// What the server offered in its last EHLO.
    pub fn extensions(&self) -> &Extensions {
        self.session.extensions()
    }

    /// Whether the session runs inside TLS.
    pub fn is_encrypted(&self) -> bool {
        self.stream.is_tls()
    }

    /// False once a connection-level failure happened, or once the reset after a failed
    /// transaction failed: the caller should open a new connection for the next message.
    pub fn is_usable(&self) -> bool {
        self.session.is_usable()
    }

    /// When the last message's data had been written in full.
    pub fn data_sent_at(&self) -> Option<Instant> {
        self.data_sent
    }

    /// Sends one message (see [`ClientSession::send`]) and returns one outcome per
    /// recipient, in order. An `Err` is a failure of the connection: nothing about the
    /// recipients is known, and the connection refuses further use.
    pub fn send(&mut self, message: &OutboundMessage) -> Result<Sent, SendError> {
        let event = match self.session.send(message)? {
            Some(event) => event,
            None => self.run(&message.data)?,
        };
        match event {
            Event::Sent(sent) => Ok(sent),
            event => Err(unexpected_event(&event)),
        }
    }

    /// Asks whether the peer would take mail for `recipient` (see
    /// [`ClientSession::verify`]).
    pub fn verify(&mut self, recipient: &str) -> Result<RecipientOutcome, SendError> {
        let event = match self.session.verify(recipient)? {
            Some(event) => event,
            None => self.run(&MessageData::Parts(&[]))?,
        };
        match event {
            Event::Verified(outcome) => Ok(outcome),
            event => Err(unexpected_event(&event)),
        }
    }

    /// QUIT and close (errors ignored).
    pub fn quit(mut self) {
        if self.session.quit() {
            // The 221 is a courtesy; whatever comes back changes nothing.
            let _ = self.run(&MessageData::Parts(&[]));
        }
        self.stream.close();
    }

    /// Writes what the session has to say and feeds it the replies until it has an
    /// event; `data` is the message to write at [`Event::SendData`]. Each reply must
    /// come within the timeout (see [`SmtpStream::read_reply`]).
    fn run(&mut self, data: &MessageData) -> Result<Event, SendError> {
        let mut deadline = Instant::now().checked_add(self.stream.timeout);
        loop {
            if self.session.has_output() {
                let output = self.session.take_output();
                if let Err(error) = self.stream.write_all(&output) {
                    return self.session.failed(error);
                }
            }
            if let Err(error) = self.stream.fill() {
                return self.session.failed(error);
            }
            let stream = &self.stream;
            let (taken, progress) = self.session.receive(&stream.input[stream.start..stream.end]);
            self.stream.start += taken;
            match progress? {
                Progress::NeedMore if deadline.is_some_and(|d| Instant::now() >= d) => {
                    return self.session.failed(timed_out());
                }
                Progress::NeedMore => {}
                Progress::Reply => deadline = Instant::now().checked_add(self.stream.timeout),
                Progress::Event(Event::SendData) => {
                    if let Err(error) = self.write_message(data) {
                        return self.session.failed(error);
                    }
                    self.data_sent = Some(Instant::now());
                    deadline = Instant::now().checked_add(self.stream.timeout);
                }
                Progress::Event(event) => return Ok(event),
            }
        }
    }

    /// Streams the message through the dot-stuffer, then the end of data.
    fn write_message(&mut self, data: &MessageData) -> Result<(), SendError> {
        let mut writer = BufWriter::with_capacity(WRITE_BUFFER, &mut self.stream.transport);
        let mut stuffer = DotStuffer::new();
        data.write_to(&mut |piece| stuffer.write(&mut writer, piece)).map_err(io_error)?;
        stuffer.finish(&mut writer).map_err(io_error)?;
        writer.flush().map_err(io_error)
    }
}

fn unexpected_event(event: &Event) -> SendError {
    SendError::Protocol(format!("unexpected turn of the SMTP session: {event:?}"))
}

/// Makes socket timeouts read as timeouts: on Unix they surface as `WouldBlock`
/// ("Resource temporarily unavailable"), which says nothing useful in a log or a bounce.
fn io_error(error: io::Error) -> SendError {
    match error.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
            SendError::Io(io::Error::new(io::ErrorKind::TimedOut, "timed out waiting for the peer"))
        }
        _ => SendError::Io(error),
    }
}

fn timed_out() -> SendError {
    SendError::Io(io::Error::new(io::ErrorKind::TimedOut, "timed out waiting for the peer's reply"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader};
    use std::net::TcpListener;
    use std::thread::{self, JoinHandle};

    // ---- a scripted fake server --------------------------------------------------------

    /// In a script: stop answering, keep the connection open until the client leaves.
    const SILENT: &str = "<silent>";
    /// In a script: close the connection instead of answering.
    const CLOSE: &str = "<close>";

    /// What the fake server says: a greeting, then one reply per command and one after
    /// each message's data, in order. QUIT is answered with 221 outside the script.
    struct Script {
        greeting: &'static str,
        replies: Vec<&'static str>,
        /// Holds the replies from MAIL until DATA arrives, so a client that waits for the
        /// MAIL reply before sending RCPT stalls: only a pipelining client gets through.
        hold_pipeline: bool,
    }

    /// What the fake server received.
    #[derive(Debug, Default)]
    struct Transcript {
        commands: Vec<String>,
        /// Each message's data, exactly as received (dot-stuffed, final `.` CRLF included).
        data: Vec<Vec<u8>>,
    }

    fn serve(script: Script) -> (SocketAddr, JoinHandle<Transcript>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let handle = thread::spawn(move || {
            let mut transcript = Transcript::default();
            let Ok((stream, _)) = listener.accept() else { return transcript };
            // A test never waits on a stuck client for long.
            stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut writer = stream.try_clone().unwrap();
            let mut reader = BufReader::new(stream);
            let mut replies = script.replies.into_iter();
            if script.greeting == SILENT {
                let _ = reader.read_to_end(&mut Vec::new());
                return transcript;
            }
            send(&mut writer, &[script.greeting]);
            let mut held = Vec::new();
            let mut holding = false;
            loop {
                let mut line = Vec::new();
                match reader.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                let command = String::from_utf8_lossy(&line).trim_end_matches(['\r', '\n']).to_string();
                let verb = command.split(' ').next().unwrap_or("").to_ascii_uppercase();
                transcript.commands.push(command);
                let reply = if verb == "QUIT" { "221 2.0.0 Bye" } else { replies.next().unwrap_or(CLOSE) };
                if reply == CLOSE {
                    break;
                }
                if reply == SILENT {
                    let _ = reader.read_to_end(&mut Vec::new());
                    break;
                }
                held.push(reply);
                // From MAIL up to DATA, replies wait.
                holding |= script.hold_pipeline && verb == "MAIL";
                if holding && verb != "DATA" {
                    continue;
                }
                holding = false;
                if !send(&mut writer, &held) || verb == "QUIT" {
                    break;
                }
                held.clear();
                if verb == "DATA" && reply.starts_with("354") {
                    let mut data = Vec::new();
                    while !(data.ends_with(b"\r\n.\r\n") || data == b".\r\n") {
                        match reader.read_until(b'\n', &mut data) {
                            Ok(0) | Err(_) => return transcript,
                            Ok(_) => {}
                        }
                    }
                    transcript.data.push(data);
                    let reply = replies.next().unwrap_or(CLOSE);
                    if reply == SILENT {
                        let _ = reader.read_to_end(&mut Vec::new());
                    }
                    if reply == CLOSE || reply == SILENT || !send(&mut writer, &[reply]) {
                        break;
                    }
                }
            }
            transcript
        });
        (address, handle)
    }

    fn send(writer: &mut TcpStream, replies: &[&str]) -> bool {
        let text: String = replies.iter().map(|r| format!("{r}\r\n")).collect();
        writer.write_all(text.as_bytes()).is_ok()
    }

    const GREETING: &str = "220 fake.test ESMTP";
    const EHLO_PLAIN: &str = "250-fake.test\r\n250 ENHANCEDSTATUSCODES";
    const EHLO_PIPELINING: &str = "250-fake.test\r\n250-PIPELINING\r\n250 ENHANCEDSTATUSCODES";
    const EHLO_SIZE: &str = "250-fake.test\r\n250-PIPELINING\r\n250-SIZE 100\r\n250 8BITMIME";

    fn open(address: SocketAddr) -> SmtpConnection {
        SmtpConnection::open(address, "client.test", Duration::from_secs(5)).unwrap()
    }

    fn recipients(list: &[&str]) -> Vec<String> {
        list.iter().map(|r| r.to_string()).collect()
    }

    const MESSAGE: &[&[u8]] = &[b"Received: t\r\n", b"Subject: s\r\n\r\nhi\r\n"];
    const MESSAGE_DATA: &[u8] = b"Received: t\r\nSubject: s\r\n\r\nhi\r\n.\r\n";

    // ---- sessions ----------------------------------------------------------------------

    #[test]
    fn message_bytes_are_stuffed_across_parts_and_end_with_crlf() {
        let (address, server) = serve(Script {
            greeting: GREETING,
            replies: vec![EHLO_PLAIN, "250 ok", "250 ok", "354 go", "250 queued"],
            hold_pipeline: false,
        });
        let mut connection = open(address);
        let rcpts = recipients(&["a@y"]);
        let parts: &[&[u8]] = &[b"Received: t\r\n", b".hidden: x\r\n\r\n", b"line\r\n.", b"\r\n..two\r\nlast"];
        let outcomes = connection
            .send(&OutboundMessage { sender: "s@x", recipients: &rcpts, data: MessageData::Parts(parts) })
            .unwrap()
            .outcomes;
        assert_eq!(outcomes, [RecipientOutcome::Accepted]);
        connection.quit();
        let transcript = server.join().unwrap();
        assert_eq!(
            transcript.data,
            [b"Received: t\r\n..hidden: x\r\n\r\nline\r\n..\r\n...two\r\nlast\r\n.\r\n".to_vec()]
        );
    }

    /// That each command waits for its reply is the session's golden transcript
    /// (`smtp::client::tests`); here, that the driver gets the whole dialogue through.
    #[test]
    fn without_pipelining_each_command_waits_for_its_reply() {
        let (address, server) = serve(Script {
            greeting: GREETING,
            replies: vec![EHLO_PLAIN, "250 ok", "250 ok", "250 ok", "354 go", "250 queued"],
            hold_pipeline: false,
        });
        let mut connection = open(address);
        assert!(!connection.extensions().pipelining);
        let rcpts = recipients(&["a@y", "b@y"]);
        let outcomes = connection
            .send(&OutboundMessage { sender: "s@x", recipients: &rcpts, data: MessageData::Parts(MESSAGE) })
            .unwrap()
            .outcomes;
        assert_eq!(outcomes, [RecipientOutcome::Accepted, RecipientOutcome::Accepted]);
        connection.quit();
        let transcript = server.join().unwrap();
        assert_eq!(
            transcript.commands,
            ["EHLO client.test", "MAIL FROM:<s@x>", "RCPT TO:<a@y>", "RCPT TO:<b@y>", "DATA", "QUIT"]
        );
    }

    /// One scripted transaction: the replies after EHLO, and what must come of them.
    struct Case {
        name: &'static str,
        pipelining: bool,
        replies: &'static [&'static str],
        recipients: &'static [&'static str],
        /// `None`: `send` must fail with an error containing `error`.
        outcomes: Option<Vec<RecipientOutcome>>,
        error: &'static str,
        /// Whether the connection is still usable after `send`.
        usable: bool,
        /// The commands the server received after EHLO.
        commands: &'static [&'static str],
        /// The data the server received.
        data: &'static [&'static [u8]],
    }

    fn deferred(text: &str) -> RecipientOutcome {
        RecipientOutcome::Deferred(text.into())
    }

    fn rejected(text: &str) -> RecipientOutcome {
        RecipientOutcome::Rejected(text.into())
    }

    #[test]
    fn transaction_table() {
        use RecipientOutcome::Accepted;
        let cases = vec![
            Case {
                name: "mixed recipient replies, one by one",
                pipelining: false,
                replies: &[
                    "250 2.1.0 Ok",
                    "250 2.1.5 Ok",
                    "450 4.2.0 <b@y>: busy",
                    "550 5.1.1 <c@y>: User unknown",
                    "354 go",
                    "250 2.0.0 Ok",
                ],
                recipients: &["a@y", "b@y", "c@y"],
                outcomes: Some(vec![
                    Accepted,
                    deferred("450 4.2.0 <b@y>: busy"),
                    rejected("550 5.1.1 <c@y>: User unknown"),
                ]),
                error: "",
                usable: true,
                commands: &["MAIL FROM:<s@x>", "RCPT TO:<a@y>", "RCPT TO:<b@y>", "RCPT TO:<c@y>", "DATA", "QUIT"],
                data: &[MESSAGE_DATA],
            },
            Case {
                name: "mixed recipient replies, pipelined",
                pipelining: true,
                replies: &[
                    "250 2.1.0 Ok",
                    "250 2.1.5 Ok",
                    "450 4.2.0 <b@y>: busy",
                    "550 5.1.1 <c@y>: User unknown",
                    "354 go",
                    "250 2.0.0 Ok",
                ],
                recipients: &["a@y", "b@y", "c@y"],
                outcomes: Some(vec![
                    Accepted,
                    deferred("450 4.2.0 <b@y>: busy"),
                    rejected("550 5.1.1 <c@y>: User unknown"),
                ]),
                error: "",
                usable: true,
                commands: &["MAIL FROM:<s@x>", "RCPT TO:<a@y>", "RCPT TO:<b@y>", "RCPT TO:<c@y>", "DATA", "QUIT"],
                data: &[MESSAGE_DATA],
            },
            Case {
                name: "a multi-line recipient reply is one outcome",
                pipelining: false,
                replies: &["250 Ok", "550-5.1.1 no such user\r\n550 5.1.1 see the docs", "250 Ok", "354 go", "250 Ok"],
                recipients: &["a@y", "b@y"],
                outcomes: Some(vec![rejected("550 5.1.1 no such user 5.1.1 see the docs"), Accepted]),
                error: "",
                usable: true,
                commands: &["MAIL FROM:<s@x>", "RCPT TO:<a@y>", "RCPT TO:<b@y>", "DATA", "QUIT"],
                data: &[MESSAGE_DATA],
            },
            Case {
                name: "MAIL 451 defers everyone and resets",
                pipelining: false,
                replies: &["451 4.3.0 try later", "250 2.0.0 Ok"],
                recipients: &["a@y", "b@y"],
                outcomes: Some(vec![deferred("451 4.3.0 try later"), deferred("451 4.3.0 try later")]),
                error: "",
                usable: true,
                commands: &["MAIL FROM:<s@x>", "RSET", "QUIT"],
                data: &[],
            },
            Case {
                name: "MAIL 451, pipelined: the RCPT and DATA replies are read and ignored",
                pipelining: true,
                replies: &[
                    "451 4.3.0 try later",
                    "503 5.5.1 need MAIL",
                    "503 5.5.1 need MAIL",
                    "503 5.5.1 need RCPT",
                    "250 2.0.0 Ok",
                ],
                recipients: &["a@y", "b@y"],
                outcomes: Some(vec![deferred("451 4.3.0 try later"), deferred("451 4.3.0 try later")]),
                error: "",
                usable: true,
                commands: &["MAIL FROM:<s@x>", "RCPT TO:<a@y>", "RCPT TO:<b@y>", "DATA", "RSET", "QUIT"],
                data: &[],
            },
            Case {
                name: "MAIL 550 rejects everyone",
                pipelining: false,
                replies: &["550 5.7.1 go away", "250 2.0.0 Ok"],
                recipients: &["a@y"],
                outcomes: Some(vec![rejected("550 5.7.1 go away")]),
                error: "",
                usable: true,
                commands: &["MAIL FROM:<s@x>", "RSET", "QUIT"],
                data: &[],
            },
            Case {
                name: "MAIL 550 then 421 to RSET: the rejection stands, the connection is spent",
                pipelining: false,
                replies: &["550 5.7.1 go away", "421 4.7.0 bye"],
                recipients: &["a@y"],
                outcomes: Some(vec![rejected("550 5.7.1 go away")]),
                error: "",
                usable: false,
                commands: &["MAIL FROM:<s@x>", "RSET"],
                data: &[],
            },
            Case {
                name: "final 554 after data rejects the accepted recipients only",
                pipelining: true,
                replies: &["250 Ok", "250 Ok", "450 4.2.1 later", "354 go", "554 5.7.1 looks like spam"],
                recipients: &["a@y", "b@y"],
                outcomes: Some(vec![rejected("554 5.7.1 looks like spam"), deferred("450 4.2.1 later")]),
                error: "",
                usable: true,
                commands: &["MAIL FROM:<s@x>", "RCPT TO:<a@y>", "RCPT TO:<b@y>", "DATA", "QUIT"],
                data: &[MESSAGE_DATA],
            },
            Case {
                name: "final 452 after data defers",
                pipelining: false,
                replies: &["250 Ok", "250 Ok", "354 go", "452 4.3.1 disk full"],
                recipients: &["a@y"],
                outcomes: Some(vec![deferred("452 4.3.1 disk full")]),
                error: "",
                usable: true,
                commands: &["MAIL FROM:<s@x>", "RCPT TO:<a@y>", "DATA", "QUIT"],
                data: &[MESSAGE_DATA],
            },
            Case {
                name: "DATA refused: the accepted recipients take its reply, then RSET",
                pipelining: false,
                replies: &["250 Ok", "250 Ok", "451 4.3.0 not now", "250 Ok"],
                recipients: &["a@y"],
                outcomes: Some(vec![deferred("451 4.3.0 not now")]),
                error: "",
                usable: true,
                commands: &["MAIL FROM:<s@x>", "RCPT TO:<a@y>", "DATA", "RSET", "QUIT"],
                data: &[],
            },
            Case {
                name: "no recipient accepted: no DATA, RSET",
                pipelining: false,
                replies: &["250 Ok", "550 5.1.1 a", "450 4.1.1 b", "250 Ok"],
                recipients: &["a@y", "b@y"],
                outcomes: Some(vec![rejected("550 5.1.1 a"), deferred("450 4.1.1 b")]),
                error: "",
                usable: true,
                commands: &["MAIL FROM:<s@x>", "RCPT TO:<a@y>", "RCPT TO:<b@y>", "RSET", "QUIT"],
                data: &[],
            },
            Case {
                name: "no recipient accepted, pipelined: DATA's 554 is ignored, no data sent",
                pipelining: true,
                replies: &["250 Ok", "550 5.1.1 a", "550 5.1.1 b", "554 5.5.1 no valid recipients", "250 Ok"],
                recipients: &["a@y", "b@y"],
                outcomes: Some(vec![rejected("550 5.1.1 a"), rejected("550 5.1.1 b")]),
                error: "",
                usable: true,
                commands: &["MAIL FROM:<s@x>", "RCPT TO:<a@y>", "RCPT TO:<b@y>", "DATA", "RSET", "QUIT"],
                data: &[],
            },
            Case {
                name: "no recipient accepted, pipelined, server says 354 anyway: an empty message",
                pipelining: true,
                replies: &["250 Ok", "550 5.1.1 a", "354 go", "554 5.5.1 empty", "250 Ok"],
                recipients: &["a@y"],
                outcomes: Some(vec![rejected("550 5.1.1 a")]),
                error: "",
                usable: true,
                commands: &["MAIL FROM:<s@x>", "RCPT TO:<a@y>", "DATA", "RSET", "QUIT"],
                data: &[b".\r\n"],
            },
            Case {
                name: "421 to RCPT mid-session is a connection error",
                pipelining: false,
                replies: &["250 Ok", "421 4.3.2 shutting down"],
                recipients: &["a@y", "b@y"],
                outcomes: None,
                error: "421 4.3.2 shutting down",
                usable: false,
                commands: &["MAIL FROM:<s@x>", "RCPT TO:<a@y>"],
                data: &[],
            },
            Case {
                name: "421 after the data is a connection error",
                pipelining: true,
                replies: &["250 Ok", "250 Ok", "354 go", "421 4.4.2 timeout"],
                recipients: &["a@y"],
                outcomes: None,
                error: "421",
                usable: false,
                commands: &["MAIL FROM:<s@x>", "RCPT TO:<a@y>", "DATA"],
                data: &[MESSAGE_DATA],
            },
            Case {
                name: "EOF instead of a reply",
                pipelining: false,
                replies: &["250 Ok", CLOSE],
                recipients: &["a@y"],
                outcomes: None,
                error: "closed by the peer",
                usable: false,
                commands: &["MAIL FROM:<s@x>", "RCPT TO:<a@y>"],
                data: &[],
            },
            Case {
                name: "a malformed reply",
                pipelining: false,
                replies: &["25O Ok"],
                recipients: &["a@y"],
                outcomes: None,
                error: "malformed reply line",
                usable: false,
                commands: &["MAIL FROM:<s@x>"],
                data: &[],
            },
            Case {
                name: "354 to RCPT is out of protocol",
                pipelining: false,
                replies: &["250 Ok", "354 what"],
                recipients: &["a@y"],
                outcomes: None,
                error: "unexpected reply to RCPT",
                usable: false,
                commands: &["MAIL FROM:<s@x>", "RCPT TO:<a@y>"],
                data: &[],
            },
            Case {
                name: "an address with a line end is rejected unsent",
                pipelining: false,
                replies: &["250 Ok", "250 Ok", "354 go", "250 Ok"],
                recipients: &["a@y\r\nRSET", "b@y"],
                outcomes: Some(vec![rejected("invalid recipient address (control characters), not sent"), Accepted]),
                error: "",
                usable: true,
                commands: &["MAIL FROM:<s@x>", "RCPT TO:<b@y>", "DATA", "QUIT"],
                data: &[MESSAGE_DATA],
            },
        ];
        for case in cases {
            let mut replies = vec![if case.pipelining { EHLO_PIPELINING } else { EHLO_PLAIN }];
            replies.extend_from_slice(case.replies);
            let (address, server) = serve(Script { greeting: GREETING, replies, hold_pipeline: case.pipelining });
            let mut connection = open(address);
            assert_eq!(connection.extensions().pipelining, case.pipelining, "{}", case.name);
            let rcpts = recipients(case.recipients);
            let result = connection.send(&OutboundMessage {
                sender: "s@x",
                recipients: &rcpts,
                data: MessageData::Parts(MESSAGE),
            });
            match (&result, &case.outcomes) {
                (Ok(got), Some(expected)) => assert_eq!(&got.outcomes, expected, "{}", case.name),
                (Err(error), None) => assert!(error.to_string().contains(case.error), "{}: {error}", case.name),
                _ => panic!("{}: got {result:?}", case.name),
            }
            assert_eq!(connection.is_usable(), case.usable, "{}", case.name);
            if !case.usable {
                // A spent connection refuses at once, without writing anything.
                let again = connection.send(&OutboundMessage {
                    sender: "s@x",
                    recipients: &rcpts,
                    data: MessageData::Parts(MESSAGE),
                });
                assert!(matches!(again, Err(SendError::Protocol(_))), "{}: {again:?}", case.name);
            }
            connection.quit();
            let transcript = server.join().unwrap();
            assert_eq!(transcript.commands[0], "EHLO client.test", "{}", case.name);
            assert_eq!(transcript.commands[1..], *case.commands, "{}", case.name);
            assert_eq!(transcript.data, case.data, "{}", case.name);
        }
    }

    #[test]
    fn several_messages_on_one_connection() {
        let mut replies = vec![EHLO_PIPELINING];
        for _ in 0..3 {
            replies.extend(["250 Ok", "250 Ok", "354 go", "250 Ok"]);
        }
        let (address, server) = serve(Script { greeting: GREETING, replies, hold_pipeline: true });
        let mut connection = open(address);
        let bodies: [&[u8]; 3] = [b"one\r\n", b"two\r\n", b"three\r\n"];
        for (n, body) in bodies.iter().enumerate() {
            let rcpts = vec![format!("r{n}@y")];
            let parts: &[&[u8]] = &[b"Received: t\r\n", body];
            let outcomes = connection
                .send(&OutboundMessage { sender: "", recipients: &rcpts, data: MessageData::Parts(parts) })
                .unwrap()
                .outcomes;
            assert_eq!(outcomes, [RecipientOutcome::Accepted]);
        }
        connection.quit();
        let transcript = server.join().unwrap();
        assert_eq!(
            transcript.commands,
            [
                "EHLO client.test",
                "MAIL FROM:<>",
                "RCPT TO:<r0@y>",
                "DATA",
                "MAIL FROM:<>",
                "RCPT TO:<r1@y>",
                "DATA",
                "MAIL FROM:<>",
                "RCPT TO:<r2@y>",
                "DATA",
                "QUIT",
            ]
        );
        let expected: Vec<Vec<u8>> =
            bodies.iter().map(|&b| [b"Received: t\r\n" as &[u8], b, b".\r\n"].concat()).collect();
        assert_eq!(transcript.data, expected);
    }

    #[test]
    fn size_is_declared_and_an_oversized_message_is_not_sent() {
        let (address, server) = serve(Script {
            greeting: GREETING,
            replies: vec![EHLO_SIZE, "250 Ok", "250 Ok", "354 go", "250 Ok"],
            hold_pipeline: true,
        });
        let mut connection = open(address);
        assert_eq!((connection.extensions().size_limit, connection.extensions().eight_bit_mime), (Some(100), true));
        let rcpts = recipients(&["a@y", "b@y"]);
        let big = vec![b'x'; 150];
        let parts: &[&[u8]] = &[&big];
        let outcomes = connection
            .send(&OutboundMessage { sender: "s@x", recipients: &rcpts, data: MessageData::Parts(parts) })
            .unwrap()
            .outcomes;
        assert_eq!(outcomes.len(), 2);
        for outcome in &outcomes {
            assert!(matches!(outcome, RecipientOutcome::Rejected(text) if text.starts_with("552 ")), "{outcome:?}");
        }
        // Under the limit: SIZE counts the CRLF we add; 8-bit content is declared.
        let parts: &[&[u8]] = &[b"Subject: caf\xc3\xa9"];
        let rcpts = recipients(&["a@y"]);
        let outcomes = connection
            .send(&OutboundMessage { sender: "s@x", recipients: &rcpts, data: MessageData::Parts(parts) })
            .unwrap()
            .outcomes;
        assert_eq!(outcomes, [RecipientOutcome::Accepted]);
        connection.quit();
        let transcript = server.join().unwrap();
        assert_eq!(
            transcript.commands,
            ["EHLO client.test", "MAIL FROM:<s@x> SIZE=16 BODY=8BITMIME", "RCPT TO:<a@y>", "DATA", "QUIT"]
        );
    }

    #[test]
    fn ehlo_refused_falls_back_to_helo() {
        let (address, server) = serve(Script {
            greeting: GREETING,
            replies: vec![
                "502 5.5.2 Error: command not recognized",
                "250 fake.test",
                "250 Ok",
                "250 Ok",
                "354 go",
                "250 Ok",
            ],
            hold_pipeline: false,
        });
        let mut connection = open(address);
        assert!(!connection.extensions().pipelining);
        let rcpts = recipients(&["a@y"]);
        let outcomes = connection
            .send(&OutboundMessage { sender: "s@x", recipients: &rcpts, data: MessageData::Parts(MESSAGE) })
            .unwrap()
            .outcomes;
        assert_eq!(outcomes, [RecipientOutcome::Accepted]);
        connection.quit();
        let transcript = server.join().unwrap();
        assert_eq!(
            transcript.commands,
            ["EHLO client.test", "HELO client.test", "MAIL FROM:<s@x>", "RCPT TO:<a@y>", "DATA", "QUIT"]
        );
    }

    #[test]
    fn open_fails_on_a_bad_greeting_or_helo() {
        let table: Vec<(&'static str, Vec<&'static str>, &str)> = vec![
            ("554 5.7.1 no service", vec![], "greeting: 554 5.7.1 no service"),
            ("421 4.3.2 busy", vec![], "421 4.3.2 busy"),
            (GREETING, vec!["451 4.3.0 later"], "EHLO: 451"),
            (GREETING, vec!["500 no", "550 no"], "HELO: 550"),
            (GREETING, vec![CLOSE], "closed by the peer"),
        ];
        for (greeting, replies, error) in table {
            let (address, server) = serve(Script { greeting, replies, hold_pipeline: false });
            let result = SmtpConnection::open(address, "client.test", Duration::from_secs(5));
            match result {
                Err(e) => assert!(e.to_string().contains(error), "{greeting}: {e}"),
                Ok(_) => panic!("{greeting}: opened"),
            }
            server.join().unwrap();
        }
        let result = SmtpConnection::open("127.0.0.1:9", "bad name", Duration::from_secs(1));
        assert!(matches!(result, Err(SendError::Protocol(e)) if e.contains("invalid HELO name")));
    }

    #[test]
    fn a_silent_server_times_out_in_bounded_time() {
        // Silent from the start: the greeting never comes. Nothing is expected to arrive,
        // so the timeout can be short. The fake server gives up after 10 s and closes the
        // connection, which would be an EOF: TimedOut shows our timeout fired first. The
        // bound on the wait is for a loaded machine.
        let timeout = Duration::from_millis(200);
        let (address, server) = serve(Script { greeting: SILENT, replies: vec![], hold_pipeline: false });
        let started = Instant::now();
        let result = SmtpConnection::open(address, "client.test", timeout);
        assert!(matches!(&result, Err(SendError::Io(e)) if e.kind() == io::ErrorKind::TimedOut), "{:?}", result.err());
        assert!(started.elapsed() < Duration::from_secs(20), "{:?}", started.elapsed());
        drop(result);
        server.join().unwrap();

        // Silent after the final dot. The greeting and the replies before the dot must
        // arrive within the timeout, so it is one a loaded machine meets; the silence then
        // costs that long, still well below the fake server's 10 s.
        let timeout = Duration::from_secs(3);
        let (address, server) = serve(Script {
            greeting: GREETING,
            replies: vec![EHLO_PLAIN, "250 Ok", "250 Ok", "354 go", SILENT],
            hold_pipeline: false,
        });
        let mut connection = SmtpConnection::open(address, "client.test", timeout).unwrap();
        let rcpts = recipients(&["a@y"]);
        let started = Instant::now();
        let result =
            connection.send(&OutboundMessage { sender: "s@x", recipients: &rcpts, data: MessageData::Parts(MESSAGE) });
        assert!(matches!(&result, Err(SendError::Io(e)) if e.kind() == io::ErrorKind::TimedOut), "{result:?}");
        assert!(started.elapsed() < Duration::from_secs(20), "{:?}", started.elapsed());
        connection.quit();
        server.join().unwrap();
    }

    #[test]
    fn a_trickling_reply_stops_at_the_deadline() {
        // One byte every 50 ms never trips the read timeout; the reply deadline stops it
        // anyway, after at most the deadline plus one timeout. The server would go on for
        // a minute (and the line would stay under MAX_REPLY_LINE for longer), so a client
        // without the deadline would take that long; it stops once the client has left.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let server = thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let started = Instant::now();
            let mut chunk: &[u8] = b"220-";
            while started.elapsed() < Duration::from_secs(60) {
                if stream.write_all(chunk).is_err() || stream.flush().is_err() {
                    break;
                }
                chunk = b"x";
                thread::sleep(Duration::from_millis(50));
            }
        });
        let started = Instant::now();
        let result = SmtpConnection::open(address, "client.test", Duration::from_secs(1));
        assert!(result.is_err());
        assert!(started.elapsed() < Duration::from_secs(20), "{:?}", started.elapsed());
        drop(result);
        server.join().unwrap();
    }
}
