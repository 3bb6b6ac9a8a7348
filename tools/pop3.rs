//! The blocking POP3 client of `fetch` and `bench pop3`: engine's
//! [`Pop3Client`](engine::pop3::client::Pop3Client) run over a socket with timeouts.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use engine::pop3::client::{Pop3Client, Response};

/// Bytes read from the socket at a time.
const READ_BUFFER: usize = 256 * 1024;

pub struct Pop3Connection {
    stream: TcpStream,
    input: Vec<u8>,
    /// `input[start..end]` is read and not yet taken.
    start: usize,
    end: usize,
    client: Pop3Client,
}

impl Pop3Connection {
    /// Connects (each resolved address in turn), sets `timeout` on every read and write,
    /// and reads the greeting. Bodies longer than `max_body` are an error.
    pub fn connect(address: &str, timeout: Duration, max_body: usize) -> Result<Pop3Connection> {
        let mut last = None;
        for resolved in address.to_socket_addrs().with_context(|| format!("resolving {address}"))? {
            match TcpStream::connect_timeout(&resolved, timeout) {
                Ok(stream) => {
                    stream.set_read_timeout(Some(timeout))?;
                    stream.set_write_timeout(Some(timeout))?;
                    stream.set_nodelay(true)?;
                    let client = Pop3Client::new(max_body);
                    let mut connection =
                        Pop3Connection { stream, input: vec![0; READ_BUFFER], start: 0, end: 0, client };
                    connection.status("greeting")?;
                    return Ok(connection);
                }
                Err(error) => last = Some(error),
            }
        }
        match last {
            Some(error) => Err(error).with_context(|| format!("connecting to {address}")),
            None => bail!("{address}: no address found"),
        }
    }

    /// Queues a command to be written with the next [`Pop3Connection::flush`].
    pub fn queue(&mut self, line: &str, multiline: bool) -> Result<()> {
        self.client.command(line, multiline).map_err(anyhow::Error::msg)
    }

    pub fn flush(&mut self) -> Result<()> {
        let output = self.client.take_output();
        self.stream.write_all(&output).context("sending to the POP3 server")
    }

    /// The next response (`what` names its command in errors, so a password is never
    /// shown).
    pub fn response(&mut self, what: &str) -> Result<Response> {
        loop {
            if self.start == self.end {
                let read = self.stream.read(&mut self.input).with_context(|| format!("{what}: reading the reply"))?;
                if read == 0 {
                    bail!("{what}: the server closed the connection");
                }
                (self.start, self.end) = (0, read);
            }
            let (taken, response) = self.client.receive(&self.input[self.start..self.end]);
            self.start += taken;
            match response {
                Some(Ok(response)) => return Ok(response),
                Some(Err(error)) => bail!("{what}: {error}"),
                None => {}
            }
        }
    }

    /// Sends a one-line command; the text after `+OK`, or an error with the server's
    /// `-ERR`.
    pub fn command(&mut self, line: &str, what: &str) -> Result<String> {
        self.queue(line, false)?;
        self.flush()?;
        self.status(what)
    }

    /// Sends a command whose positive response has a body; the body.
    pub fn multiline(&mut self, line: &str, what: &str) -> Result<Vec<u8>> {
        self.queue(line, true)?;
        self.flush()?;
        self.body(what)
    }

    /// The next response, which must be a positive one-line response.
    pub fn status(&mut self, what: &str) -> Result<String> {
        match self.response(what)? {
            Response::Ok(text) => Ok(text),
            Response::Err(text) => bail!("{what}: the server said: {text}"),
            Response::Multiline { .. } => bail!("{what}: a body where none was due"),
        }
    }

    /// The next response, which must be a positive multi-line response; its body.
    pub fn body(&mut self, what: &str) -> Result<Vec<u8>> {
        match self.response(what)? {
            Response::Multiline { body, .. } => Ok(body),
            Response::Err(text) => bail!("{what}: the server said: {text}"),
            Response::Ok(_) => bail!("{what}: no body where one was due"),
        }
    }
}
