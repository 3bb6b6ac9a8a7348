//! One client connection: the read loop shared by every protocol.
//!
//! A worker thread owns the socket and drives a sans-I/O session: it reads, feeds the
//! session, performs the actions it returns, and applies the idle timeout (which only the
//! session's notion of activity restarts). Shutdown reaches a worker by a read shutdown of
//! its socket once the grace period is over; the worker then lets the session say goodbye.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

use crate::server::ShutdownSignal;

/// The parts of a protocol session the read loop needs.
pub trait Session {
    type Action;
    fn receive(&mut self, input: &[u8], actions: &mut Vec<Self::Action>);
    fn timed_out(&mut self, actions: &mut Vec<Self::Action>);
    fn shutting_down(&mut self, actions: &mut Vec<Self::Action>);
    fn take_activity(&mut self) -> bool;
    fn is_closed(&self) -> bool;
}

/// A socket with an output buffer, so pipelined replies go out in one write.
pub struct Conn {
    pub stream: TcpStream,
    out: Vec<u8>,
    close: bool,
}

impl Conn {
    pub fn queue(&mut self, bytes: &[u8]) {
        self.out.extend_from_slice(bytes);
    }

    pub fn flush(&mut self) -> io::Result<()> {
        if !self.out.is_empty() {
            self.stream.write_all(&self.out)?;
            self.out.clear();
        }
        Ok(())
    }

    pub fn request_close(&mut self) {
        self.close = true;
    }
}

/// Performs a protocol's actions.
pub trait Handler<S: Session> {
    /// Performs one action; follow-up actions from the session go into `next`.
    fn perform(&mut self, session: &mut S, action: S::Action, conn: &mut Conn, next: &mut Vec<S::Action>) -> io::Result<()>;
}

const READ_BUFFER: usize = 64 * 1024;

/// Runs a session on `stream` until either side closes, the idle timeout fires, or the
/// shutdown grace runs out.
pub fn drive<S: Session, H: Handler<S>>(
    stream: TcpStream,
    greeting: &[u8],
    mut session: S,
    mut handler: H,
    timeout: Duration,
    shutdown: &ShutdownSignal,
) -> io::Result<()> {
    let _ = stream.set_nodelay(true);
    stream.set_write_timeout(Some(timeout))?;
    let mut conn = Conn { stream, out: Vec::new(), close: false };
    conn.queue(greeting);
    conn.flush()?;
    let mut buffer = vec![0u8; READ_BUFFER];
    let mut deadline = Instant::now() + timeout;
    let mut actions = Vec::new();
    loop {
        let now = Instant::now();
        if now >= deadline {
            session.timed_out(&mut actions);
        } else {
            conn.stream.set_read_timeout(Some(deadline - now))?;
            match conn.stream.read(&mut buffer) {
                Ok(0) if shutdown.grace_over() => session.shutting_down(&mut actions),
                Ok(0) => break,
                Ok(n) => {
                    session.receive(&buffer[..n], &mut actions);
                    if session.take_activity() {
                        deadline = Instant::now() + timeout;
                    }
                }
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted) => {}
                Err(e) => return Err(e),
            }
        }
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
    }
    let _ = conn.stream.shutdown(Shutdown::Both);
    Ok(())
}
