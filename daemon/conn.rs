//! One client connection: the read loop shared by every protocol.
//!
//! A worker thread owns the socket and drives a sans-I/O session: it reads, feeds the
//! session, performs the actions it returns, and applies the idle timeout (which only the
//! session's notion of activity restarts). Shutdown reaches a worker by a read shutdown of
//! its socket once the grace period is over; the worker then lets the session say goodbye.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use engine::transport::{ServerTransport, Transport};
use rustls::{ServerConfig, ServerConnection};

use crate::server::ShutdownSignal;

/// The parts of a protocol session the read loop needs.
pub trait Session {
    type Action;
    fn receive(&mut self, input: &[u8], actions: &mut Vec<Self::Action>);
    fn timed_out(&mut self, actions: &mut Vec<Self::Action>);
    fn shutting_down(&mut self, actions: &mut Vec<Self::Action>);
    fn take_activity(&mut self) -> bool;
    fn is_closed(&self) -> bool;
    /// The session stopped at its output bound with input left; [`Session::resume`] it
    /// once its output is sent, before reading more.
    fn is_paused(&self) -> bool;
    fn resume(&mut self, actions: &mut Vec<Self::Action>);
}

/// A connection with an output buffer, so pipelined replies go out in one write.
pub struct Conn {
    pub transport: ServerTransport,
    out: Vec<u8>,
    close: bool,
    /// The session's idle timeout, which also bounds a TLS handshake.
    timeout: Duration,
    /// The socket's read timeout as last set (`SO_RCVTIMEO`).
    read_timeout: Option<Duration>,
}

impl Conn {
    pub fn queue(&mut self, bytes: &[u8]) {
        self.out.extend_from_slice(bytes);
    }

    pub fn flush(&mut self) -> io::Result<()> {
        if !self.out.is_empty() {
            self.transport.write_all(&self.out)?;
            self.out.clear();
        }
        self.transport.flush()
    }

    pub fn request_close(&mut self) {
        self.close = true;
    }

    /// Makes the next read wait at most about `remaining`. The socket option is set only
    /// when the one it has would let a read wait past `remaining` by more than a sixteenth
    /// of it, or would wake the read loop before half of it: a `setsockopt` per read is a
    /// syscall per command. An early wake-up only goes round the loop once more.
    fn wait_at_most(&mut self, remaining: Duration) -> io::Result<()> {
        match self.read_timeout {
            Some(set) if set <= remaining + remaining / 16 && set >= remaining / 2 => Ok(()),
            _ => self.set_read_timeout(remaining),
        }
    }

    fn set_read_timeout(&mut self, timeout: Duration) -> io::Result<()> {
        // A zero timeout means "block forever" to the socket; a deadline that close is due.
        let timeout = timeout.max(Duration::from_millis(1));
        self.transport.tcp().set_read_timeout(Some(timeout))?;
        self.read_timeout = Some(timeout);
        Ok(())
    }

    /// Sends what is queued in the clear, then runs the TLS handshake as server; from
    /// then on every byte goes through TLS. The handshake is bounded by the socket's
    /// timeouts; an error ends the connection, and so does having no certificate (a
    /// session only asks for TLS when it was offered).
    pub fn start_tls(&mut self, config: Option<Arc<ServerConfig>>) -> io::Result<()> {
        self.flush()?;
        let Some(config) = config else {
            self.request_close();
            return Ok(());
        };
        self.set_read_timeout(self.timeout)?;
        let session = ServerConnection::new(config).map_err(io::Error::other)?;
        self.transport.upgrade(session)
    }
}

/// Performs a protocol's actions.
pub trait Handler<S: Session> {
    /// Performs one action; follow-up actions from the session go into `next`.
    fn perform(
        &mut self,
        session: &mut S,
        action: S::Action,
        conn: &mut Conn,
        next: &mut Vec<S::Action>,
    ) -> io::Result<()>;
}

/// A connection reads into a small buffer while it sends commands, and into a large one
/// once it sends in bulk (a read that fills the buffer): an idle or chatty session keeps
/// 4 KiB, not 64 KiB, and a 25 MB DATA still takes few reads.
const READ_BUFFER_START: usize = 4 * 1024;
pub const READ_BUFFER_BULK: usize = 64 * 1024;

/// Runs a session on `stream` until either side closes, the idle timeout fires, or the
/// shutdown grace runs out. With `implicit_tls` the connection is TLS from the first byte.
pub fn drive<S: Session, H: Handler<S>>(
    stream: TcpStream,
    implicit_tls: Option<Arc<ServerConfig>>,
    greeting: &[u8],
    session: S,
    handler: H,
    timeout: Duration,
    shutdown: &ShutdownSignal,
) -> io::Result<()> {
    let mut conn = Conn::new(stream, Vec::new(), timeout)?;
    if implicit_tls.is_some() {
        // Implicit TLS (RFC 8314): the handshake comes first, the greeting goes through it.
        conn.start_tls(implicit_tls)?;
    }
    conn.queue(greeting);
    conn.flush()?;
    run(conn, session, handler, Vec::new(), Instant::now() + timeout, shutdown)
}

impl Conn {
    /// A blocking connection in the clear; `unsent` goes out before anything else.
    pub fn new(stream: TcpStream, unsent: Vec<u8>, timeout: Duration) -> io::Result<Conn> {
        let _ = stream.set_nodelay(true);
        stream.set_write_timeout(Some(timeout))?;
        Ok(Conn { transport: Transport::Plain(stream), out: unsent, close: false, timeout, read_timeout: None })
    }
}

/// Runs a session on `conn` from where it stands: `actions` are still to be performed and
/// the idle timeout fires at `deadline`. [`drive`] starts here after the greeting; an
/// event loop hands a session over here when its next step blocks (TLS, a password check).
pub fn run<S: Session, H: Handler<S>>(
    mut conn: Conn,
    mut session: S,
    mut handler: H,
    mut actions: Vec<S::Action>,
    mut deadline: Instant,
    shutdown: &ShutdownSignal,
) -> io::Result<()> {
    let timeout = conn.timeout;
    let mut buffer = vec![0u8; READ_BUFFER_START];
    loop {
        // Perform the actions, and any the session returns while doing so, in order.
        while !actions.is_empty() {
            let mut next = Vec::new();
            for action in actions.drain(..) {
                handler.perform(&mut session, action, &mut conn, &mut next)?;
            }
            actions = next;
        }
        conn.flush()?;
        if conn.close || session.is_closed() {
            break;
        }
        let now = Instant::now();
        if session.is_paused() {
            // Backpressure: what the last round produced is sent (the flush above blocks
            // while the client does not read), and no more is read until the session has
            // worked through what it already holds.
            session.resume(&mut actions);
        } else if now >= deadline {
            session.timed_out(&mut actions);
        } else {
            conn.wait_at_most(deadline - now)?;
            match conn.transport.read(&mut buffer) {
                Ok(0) if shutdown.grace_over() => session.shutting_down(&mut actions),
                Ok(0) => break,
                Ok(n) => {
                    session.receive(&buffer[..n], &mut actions);
                    if n == buffer.len() && n < READ_BUFFER_BULK {
                        buffer.resize(READ_BUFFER_BULK, 0);
                    }
                    if session.take_activity() {
                        deadline = Instant::now() + timeout;
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
                    ) => {}
                Err(e) => return Err(e),
            }
        }
    }
    conn.transport.close_tls();
    let _ = conn.transport.tcp().shutdown(Shutdown::Both);
    Ok(())
}
