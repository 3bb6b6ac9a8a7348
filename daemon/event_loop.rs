//! The SMTP event loop: the smtp and submission listeners, and every plain-text SMTP
//! session, on one thread.
//!
//! A thread per connection pays a wake-up and a task switch for every command and every
//! commit, and on two cores those switches were most of maild's kernel time. The loop
//! instead reads whatever is ready on any socket, feeds each session, and writes its
//! replies; a finished message goes to the pipeline without waiting, and persist's answer
//! comes back through a [`CommitSink`] that queues it and wakes the loop (one wake-up per
//! group commit, not one per session). It accepts on its listeners itself, so a new
//! client costs no hand-over between threads either.
//!
//! A session whose next step would block the loop, the TLS handshake of STARTTLS or the
//! argon2 check of AUTH, is handed to a worker thread with its unsent output and the
//! actions still to perform, and ends there ([`conn::run`]). Implicit-TLS listeners never
//! come here. A session that panics is dropped alone, as its own thread would have been.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use engine::envelope::{CommitError, Message};
use engine::pipeline::{CommitSink, ReplyTo, Submission};
use engine::smtp::{Action, SmtpSession};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};

use crate::conn::READ_BUFFER_BULK;
use crate::server::{Admission, Registration, ShutdownSignal, Workers, ACCEPT_BACKOFF};
use crate::smtp::SmtpService;

const WAKER: Token = Token(usize::MAX);
/// Reads one session may do in a turn before the others get theirs.
const READS_PER_TURN: usize = 4;
/// A commit's key is its serial number above the session's slot.
const SLOT_BITS: u32 = 24;
const SLOT_MASK: u64 = (1 << SLOT_BITS) - 1;
/// An output buffer grown past this by a burst is given back once it is sent.
const OUT_KEEP: usize = 16 * 1024;

/// The running loop; stopped by the server once every client is gone.
pub struct EventLoop {
    stopping: Arc<AtomicBool>,
    waker: Arc<Waker>,
    thread: JoinHandle<()>,
}

/// A listener the loop accepts on, what it admits clients with, and what serves them.
/// main hands it over with a std listener; the loop keeps it with mio's.
pub struct Listening<L = std::net::TcpListener> {
    pub listener: L,
    pub admission: Admission,
    pub service: Arc<SmtpService>,
}

impl EventLoop {
    pub fn start(shutdown: Arc<ShutdownSignal>, listening: Vec<Listening>) -> io::Result<EventLoop> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let mut listeners = Vec::new();
        for (index, Listening { listener, admission, service }) in listening.into_iter().enumerate() {
            listener.set_nonblocking(true)?;
            let mut listener = TcpListener::from_std(listener);
            poll.registry().register(&mut listener, listener_token(index), Interest::READABLE)?;
            listeners.push(Some(Listening { listener, admission, service }));
        }
        let stopping = Arc::new(AtomicBool::new(false));
        let answers = Arc::new(Answers { queue: Mutex::default(), waker: waker.clone() });
        let state = Loop {
            poll,
            listeners,
            accept_again: None,
            answers,
            stopping: stopping.clone(),
            shutdown,
            workers: Workers::new("smtp"),
            sessions: Vec::new(),
            free: Vec::new(),
            ready: VecDeque::new(),
            next_commit: 0,
            next_timeout: None,
        };
        let thread = std::thread::Builder::new().name("smtp-loop".into()).spawn(move || state.run())?;
        Ok(EventLoop { stopping, waker, thread })
    }

    pub fn stop(self) {
        self.stopping.store(true, Ordering::SeqCst);
        let _ = self.waker.wake();
        if self.thread.join().is_err() {
            log::error!("the smtp event loop panicked");
        }
    }
}

/// Listeners' tokens count down from just below the waker's; sessions' count up from 0.
fn listener_token(index: usize) -> Token {
    Token(usize::MAX - 1 - index)
}

/// Persist's answers, queued for the loop.
struct Answers {
    queue: Mutex<Vec<(u64, Result<u64, CommitError>)>>,
    waker: Arc<Waker>,
}

impl CommitSink for Answers {
    fn answer(&self, key: u64, outcome: Result<u64, CommitError>) {
        let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        queue.push((key, outcome));
        // One wake-up per batch of answers: the loop takes the whole queue when it runs.
        if queue.len() == 1 {
            let _ = self.waker.wake();
        }
    }
}

impl Answers {
    fn take(&self) -> Vec<(u64, Result<u64, CommitError>)> {
        std::mem::take(&mut *self.queue.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

struct Loop {
    poll: Poll,
    /// `None` once shutdown closed it.
    listeners: Vec<Option<Listening<TcpListener>>>,
    /// After a failed accept (EMFILE and friends), when to try again: epoll reports
    /// clients that are already waiting only once.
    accept_again: Option<Instant>,
    answers: Arc<Answers>,
    stopping: Arc<AtomicBool>,
    shutdown: Arc<ShutdownSignal>,
    /// Threads for sessions handed over (STARTTLS, AUTH).
    workers: Workers,
    sessions: Vec<Option<Session>>,
    free: Vec<usize>,
    /// Sessions that used their turn with input possibly left: they go again after the
    /// others (epoll reports a socket once per arrival, not while it stays readable).
    ready: VecDeque<usize>,
    next_commit: u64,
    /// No session's idle timeout fires before this.
    next_timeout: Option<Instant>,
}

/// How a session's turn ended.
enum Turn {
    /// Waiting for the socket or for persist.
    Wait,
    /// Its turn is used up; there may be more to read.
    Again,
    Done,
    /// Its next step blocks: these actions are performed on a thread of its own.
    HandOff(Vec<Action>),
}

impl Loop {
    fn run(mut self) {
        let mut events = Events::with_capacity(256);
        let mut buffer = vec![0u8; READ_BUFFER_BULK];
        loop {
            let timeout = if self.ready.is_empty() {
                let wake_at = match (self.next_timeout, self.accept_again) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                wake_at.map(|at| at.saturating_duration_since(Instant::now()))
            } else {
                Some(Duration::ZERO)
            };
            if let Err(error) = self.poll.poll(&mut events, timeout) {
                if error.kind() != io::ErrorKind::Interrupted {
                    log::error!("smtp event loop: {error}");
                    std::thread::sleep(Duration::from_millis(10));
                }
                continue;
            }
            let mut accept = self.accept_again.is_some_and(|at| Instant::now() >= at);
            for event in &events {
                let slot = event.token().0;
                if event.token() == WAKER {
                    continue;
                }
                if slot >= listener_token(self.listeners.len()).0 {
                    accept = true;
                    continue;
                }
                if let Some(Some(session)) = self.sessions.get_mut(slot) {
                    // Sticky: the end of input is reported once, and must be read to.
                    session.input_closed |= event.is_read_closed() || event.is_error();
                }
                self.ready.push_back(slot);
            }
            if accept {
                self.accept(&mut buffer);
            }
            for (key, outcome) in self.answers.take() {
                self.answered(key, outcome, &mut buffer);
            }
            // Those carried over from the last round first, then the newly ready; a session
            // that goes again waits for the next round.
            let mut left = self.ready.len();
            while left > 0 {
                left -= 1;
                if let Some(slot) = self.ready.pop_front() {
                    self.turn(slot, Vec::new(), &mut buffer);
                }
            }
            if self.next_timeout.is_some_and(|at| Instant::now() >= at) {
                self.time_out(&mut buffer);
            }
            if self.stopping.load(Ordering::SeqCst) {
                // The server stops the loop only once every client is gone.
                return;
            }
        }
    }

    /// Accepts every client waiting on every listener.
    fn accept(&mut self, buffer: &mut [u8]) {
        self.accept_again = None;
        for index in 0..self.listeners.len() {
            while let Some(listening) = &self.listeners[index] {
                let name = listening.admission.name;
                match listening.listener.accept() {
                    Ok((stream, peer)) => {
                        if self.shutdown.begun() {
                            continue;
                        }
                        let stream = std::net::TcpStream::from(stream);
                        let Some(registration) = listening.admission.admit(&stream, peer) else { continue };
                        let service = listening.service.clone();
                        self.adopt(TcpStream::from_std(stream), peer, registration, service, buffer);
                    }
                    Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                    Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) if self.shutdown.begun() => {
                        // Shutdown closed the listener: stop watching it.
                        if let Some(mut closed) = self.listeners[index].take() {
                            let _ = self.poll.registry().deregister(&mut closed.listener);
                        }
                        break;
                    }
                    Err(error) => {
                        log::warn!("{name}: accept failed: {error}");
                        self.accept_again = Some(Instant::now() + ACCEPT_BACKOFF);
                        break;
                    }
                }
            }
        }
    }

    fn adopt(
        &mut self,
        mut stream: TcpStream,
        peer: SocketAddr,
        registration: Registration,
        service: Arc<SmtpService>,
        buffer: &mut [u8],
    ) {
        let _ = stream.set_nodelay(true);
        let slot = match self.free.pop() {
            Some(slot) => slot,
            None if (self.sessions.len() as u64) < SLOT_MASK => {
                self.sessions.push(None);
                self.sessions.len() - 1
            }
            None => return,
        };
        if let Err(error) =
            self.poll.registry().register(&mut stream, Token(slot), Interest::READABLE | Interest::WRITABLE)
        {
            log::warn!("smtp {peer}: cannot watch the connection: {error}");
            self.free.push(slot);
            return;
        }
        let smtp = SmtpSession::new(service.config.clone(), service.directory.clone(), peer.ip());
        let deadline = Instant::now() + service.timeout;
        let out = smtp.greeting().as_bytes().to_vec();
        self.sessions[slot] = Some(Session {
            stream,
            peer,
            service,
            smtp,
            _registration: registration,
            out,
            sent: 0,
            deadline,
            committing: None,
            closing: false,
            input_closed: false,
        });
        self.next_timeout = Some(self.next_timeout.map_or(deadline, |at| at.min(deadline)));
        self.turn(slot, Vec::new(), buffer);
    }

    fn answered(&mut self, key: u64, outcome: Result<u64, CommitError>, buffer: &mut [u8]) {
        let slot = (key & SLOT_MASK) as usize;
        let Some(Some(session)) = self.sessions.get_mut(slot) else { return };
        // A session reads one answer per commit: the watchdog's 451 or persist's, whichever
        // came first. A later one, or one for a session gone from this slot, is dropped.
        let Some((waited_for, started)) = session.committing else { return };
        if waited_for != key {
            return;
        }
        session.committing = None;
        session.service.metrics.acknowledged(started.elapsed());
        let mut actions = Vec::new();
        session.smtp.commit_finished(outcome, &mut actions);
        self.turn(slot, actions, buffer);
    }

    /// Runs one session until it waits, then does what its turn ended with.
    fn turn(&mut self, slot: usize, actions: Vec<Action>, buffer: &mut [u8]) {
        let Some(Some(session)) = self.sessions.get_mut(slot) else { return };
        let mut commits = Commits { next: &mut self.next_commit, slot: slot as u64, sink: &self.answers };
        let shutdown = &self.shutdown;
        let turn = catch_unwind(AssertUnwindSafe(|| session.advance(actions, buffer, &mut commits, shutdown)))
            .unwrap_or_else(|_| {
                log::error!("smtp {}: the session panicked; closing it", session.peer);
                Turn::Done
            });
        match turn {
            Turn::Wait => {}
            Turn::Again => self.ready.push_back(slot),
            Turn::Done => {
                if let Some(session) = self.release(slot) {
                    let _ = session.stream.shutdown(std::net::Shutdown::Both);
                }
            }
            Turn::HandOff(actions) => {
                if let Some(session) = self.release(slot) {
                    self.hand_off(session, actions);
                }
            }
        }
    }

    fn release(&mut self, slot: usize) -> Option<Session> {
        let mut session = self.sessions.get_mut(slot)?.take()?;
        let _ = self.poll.registry().deregister(&mut session.stream);
        self.free.push(slot);
        Some(session)
    }

    /// Moves a session to a worker thread, to go on where it stands.
    fn hand_off(&self, session: Session, actions: Vec<Action>) {
        let Session { stream, peer, service, smtp, _registration: registration, out, sent, deadline, .. } = session;
        let stream = std::net::TcpStream::from(stream);
        if let Err(error) = stream.set_nonblocking(false) {
            log::debug!("smtp {peer}: {error}");
            return;
        }
        let unsent = out[sent..].to_vec();
        let shutdown = self.shutdown.clone();
        let job = Box::new(move |stream| {
            let _registration = registration;
            service.continue_session(stream, unsent, smtp, actions, deadline, peer, &shutdown);
        });
        if let Err((error, _)) = self.workers.run((stream, job)) {
            log::warn!("smtp: cannot start a worker for {peer}: {error}");
        }
    }

    /// Ends the sessions whose idle timeout is over; sets the next time to look.
    fn time_out(&mut self, buffer: &mut [u8]) {
        let now = Instant::now();
        let mut next: Option<Instant> = None;
        for slot in 0..self.sessions.len() {
            let Some(session) = &mut self.sessions[slot] else { continue };
            if session.committing.is_some() {
                // The timer is stopped while persist has the message; its answer restarts
                // the turn, and the next look catches a deadline passed meanwhile.
                next = Some(next.map_or(now + session.service.timeout, |at| at.min(now + session.service.timeout)));
                continue;
            }
            if now < session.deadline {
                next = Some(next.map_or(session.deadline, |at| at.min(session.deadline)));
                continue;
            }
            if session.sent < session.out.len() {
                // A client that reads nothing gets no goodbye: there is no room to say it.
                if let Some(session) = self.release(slot) {
                    let _ = session.stream.shutdown(std::net::Shutdown::Both);
                }
                continue;
            }
            let mut actions = Vec::new();
            session.smtp.timed_out(&mut actions);
            self.turn(slot, actions, buffer);
        }
        self.next_timeout = next;
    }
}

/// Hands commits to the pipeline under keys the loop can route the answers by.
struct Commits<'a> {
    next: &'a mut u64,
    slot: u64,
    sink: &'a Arc<Answers>,
}

impl Commits<'_> {
    fn key(&mut self) -> u64 {
        *self.next = self.next.wrapping_add(1);
        (*self.next << SLOT_BITS) | self.slot
    }
}

/// One client's session on the loop.
struct Session {
    stream: TcpStream,
    peer: SocketAddr,
    service: Arc<SmtpService>,
    smtp: SmtpSession,
    /// Counts the connection against the limits until the session ends.
    _registration: Registration,
    /// Replies not yet written; `sent` of them went.
    out: Vec<u8>,
    sent: usize,
    /// The idle timeout fires here; only the session's notion of activity moves it.
    deadline: Instant,
    /// The commit this session waits for, and since when.
    committing: Option<(u64, Instant)>,
    closing: bool,
    /// The client closed its side (or the socket failed): read on to the end, even past a
    /// short read.
    input_closed: bool,
}

impl Session {
    /// Performs `actions`, writes, and reads, until the session must wait.
    fn advance(
        &mut self,
        mut actions: Vec<Action>,
        buffer: &mut [u8],
        commits: &mut Commits,
        shutdown: &ShutdownSignal,
    ) -> Turn {
        let mut reads = 0;
        let mut drained = false;
        loop {
            while !actions.is_empty() {
                let mut next = Vec::new();
                let mut pending = actions.drain(..);
                while let Some(action) = pending.next() {
                    match action {
                        Action::Send(reply) => {
                            self.service.metrics.smtp_reply(reply.code());
                            self.out.extend_from_slice(reply.as_bytes());
                        }
                        Action::Close => self.closing = true,
                        Action::Commit(message) => self.commit(message, commits, &mut next),
                        blocking @ (Action::StartTls | Action::Authenticate(_)) => {
                            let mut rest = vec![blocking];
                            rest.extend(pending);
                            rest.extend(next);
                            return Turn::HandOff(rest);
                        }
                    }
                }
                drop(pending);
                actions = next;
            }
            match self.send() {
                Ok(true) => {}
                // The socket says when it can take more; nothing is read meanwhile.
                Ok(false) => return Turn::Wait,
                Err(_) => return Turn::Done,
            }
            if self.closing || self.smtp.is_closed() {
                return Turn::Done;
            }
            if self.committing.is_some() {
                return Turn::Wait;
            }
            if self.smtp.is_paused() {
                self.smtp.resume(&mut actions);
                continue;
            }
            if drained && !self.input_closed {
                return Turn::Wait;
            }
            if reads == READS_PER_TURN {
                return Turn::Again;
            }
            match self.stream.read(buffer) {
                Ok(0) if shutdown.grace_over() => self.smtp.shutting_down(&mut actions),
                Ok(0) => return Turn::Done,
                Ok(n) => {
                    reads += 1;
                    self.smtp.receive(&buffer[..n], &mut actions);
                    if self.smtp.take_activity() {
                        self.deadline = Instant::now() + self.service.timeout;
                    }
                    // A short read took all there was; epoll reports the next arrival, so
                    // reading on to EAGAIN would cost a system call per round trip.
                    drained = n < buffer.len();
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Turn::Wait,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Turn::Done,
            }
        }
    }

    fn commit(&mut self, message: Message, commits: &mut Commits, next: &mut Vec<Action>) {
        // Replies queued before the commit go out now, not after the fsync.
        let _ = self.send();
        let key = commits.key();
        let submission = Submission { message, reply: ReplyTo::Notify { key, sink: commits.sink.clone() } };
        // A full intake blocks the whole loop: that is the pipeline's backpressure, as it
        // was for each session's thread. Persist never waits for the loop, so it drains;
        // if the store hangs, the watchdog empties the queues with 451s and exits.
        match self.service.intake.send(submission) {
            Ok(()) => self.committing = Some((key, Instant::now())),
            Err(_) => self.smtp.commit_finished(Err(CommitError::Transient), next),
        }
    }

    /// Writes what is queued; true once all of it went.
    fn send(&mut self) -> io::Result<bool> {
        while self.sent < self.out.len() {
            match self.stream.write(&self.out[self.sent..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.sent += n,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return Err(error),
            }
        }
        self.sent = 0;
        if self.out.capacity() > OUT_KEEP {
            self.out = Vec::new();
        } else {
            self.out.clear();
        }
        Ok(true)
    }
}
