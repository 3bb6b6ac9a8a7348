//! The POP3 listener's worker: drives an engine [`Pop3Session`] and performs its effects
//! against the store: logins (argon2, maildrop lock), message retrieval, and the durable
//! deletions of QUIT.

use std::collections::HashSet;
use std::io::{self, BufWriter, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use engine::mbox::return_path;
use engine::pop3::{write_message, LoginError, MaildropEntry, Pop3Action, Pop3Config, Pop3Session};
use engine::sasl::Verdict;
use engine::{Store, StoreError};

use crate::conn::{self, Conn, Handler, Session};
use crate::login::Logins;
use crate::server::{Service, ShutdownSignal};
use crate::tls::Certificates;

impl Session for Pop3Session {
    type Action = Pop3Action;
    fn receive(&mut self, input: &[u8], actions: &mut Vec<Pop3Action>) {
        Pop3Session::receive(self, input, actions)
    }
    fn timed_out(&mut self, actions: &mut Vec<Pop3Action>) {
        Pop3Session::timed_out(self, actions)
    }
    fn shutting_down(&mut self, actions: &mut Vec<Pop3Action>) {
        Pop3Session::shutting_down(self, actions)
    }
    fn take_activity(&mut self) -> bool {
        Pop3Session::take_activity(self)
    }
    fn is_closed(&self) -> bool {
        Pop3Session::is_closed(self)
    }
    fn is_paused(&self) -> bool {
        Pop3Session::is_paused(self)
    }
    fn resume(&mut self, actions: &mut Vec<Pop3Action>) {
        Pop3Session::resume(self, actions)
    }
}

/// Shared by every POP3 worker.
pub struct Pop3Service {
    pub config: Arc<Pop3Config>,
    pub store: Store,
    pub logins: Arc<Logins>,
    pub timeout: Duration,
    /// Set with --tls-cert/--tls-key: STLS is offered.
    pub tls: Option<Arc<Certificates>>,
    /// `--pop3s`: TLS from the first byte.
    implicit_tls: bool,
    /// Maildrops open in a session (RFC 1939 §8: exclusive access).
    locks: Mutex<HashSet<String>>,
}

impl Pop3Service {
    pub fn new(
        config: Pop3Config,
        store: Store,
        logins: Arc<Logins>,
        timeout: Duration,
        tls: Option<Arc<Certificates>>,
        implicit_tls: bool,
    ) -> Pop3Service {
        Pop3Service {
            // STLS is offered exactly when there is a certificate to start it with.
            config: Arc::new(Pop3Config { tls_available: tls.is_some(), ..config }),
            tls,
            store,
            logins,
            timeout,
            implicit_tls,
            locks: Mutex::default(),
        }
    }
}

impl Service for Pop3Service {
    fn serve(&self, stream: TcpStream, peer: SocketAddr, shutdown: &ShutdownSignal) {
        let mut session = Pop3Session::new(self.config.clone(), peer.ip().to_canonical().is_loopback());
        let implicit_tls = self.tls.as_ref().filter(|_| self.implicit_tls).map(|c| c.current());
        if implicit_tls.is_some() {
            session.tls_from_the_start();
        }
        let greeting = session.greeting();
        let handler = Pop3Handler { service: self, client: peer.ip(), maildrop: None };
        if let Err(error) = conn::drive(stream, implicit_tls, &greeting, session, handler, self.timeout, shutdown) {
            log::debug!("pop3 {peer}: {error}");
        }
    }
}

impl Pop3Service {
    fn load_maildrop(&self, user: &str) -> Result<Vec<MaildropEntry>, StoreError> {
        let mut entries = Vec::new();
        for number in self.store.mailbox(user)? {
            if let Some(message) = self.store.message(number)? {
                let record = message.record();
                let size = return_path(&record.sender).len() + record.stored_len();
                entries.push(MaildropEntry { number, size: size as u64 });
            }
        }
        Ok(entries)
    }
}

/// How long a login waits for the deliver stage to catch up before it opens the maildrop.
const SETTLE: Duration = Duration::from_secs(5);

struct Pop3Handler<'a> {
    service: &'a Pop3Service,
    client: IpAddr,
    /// The maildrop this session holds locked (its user key).
    maildrop: Option<String>,
}

impl Drop for Pop3Handler<'_> {
    fn drop(&mut self) {
        self.release_maildrop();
    }
}

impl Pop3Handler<'_> {
    fn release_maildrop(&mut self) {
        if let Some(user) = self.maildrop.take() {
            self.service.locks.lock().unwrap_or_else(|e| e.into_inner()).remove(&user);
        }
    }

    fn login(&mut self, mechanism: &str, user: &str, password: &str) -> Result<Vec<MaildropEntry>, LoginError> {
        let service = &self.service;
        let key = match service.logins.check(self.client, mechanism, user, password) {
            Verdict::Accepted(key) => key,
            Verdict::Rejected => return Err(LoginError::BadCredentials),
            Verdict::Throttled => return Err(LoginError::Throttled),
        };
        if !service.locks.lock().unwrap_or_else(|e| e.into_inner()).insert(key.clone()) {
            return Err(LoginError::Locked);
        }
        self.maildrop = Some(key.clone());
        // Mail acknowledged before this login is in the maildrop it opens, although
        // delivery runs after the 250 (RFC 1939 §8: the maildrop is fixed at login).
        service.store.wait_for_delivery(SETTLE, &format!("pop3 login of {key}"));
        service.load_maildrop(&key).map_err(|error| {
            log::error!("loading the maildrop of {key}: {error}");
            LoginError::Unavailable
        })
    }

    fn retrieve(&self, number: u64, size: u64, top_lines: Option<usize>, conn: &mut Conn) -> io::Result<()> {
        let message = match self.service.store.message(number) {
            Ok(Some(message)) => message,
            other => {
                log::error!("message {number} unavailable for RETR: {:?}", other.err());
                conn.queue(b"-ERR [SYS/TEMP] message unavailable\r\n");
                return Ok(());
            }
        };
        conn.flush()?;
        let record = message.record();
        let return_path = return_path(&record.sender);
        let parts = [return_path.as_bytes(), record.trace.as_bytes(), record.body.as_slice()];
        let mut out = BufWriter::with_capacity(64 * 1024, &mut conn.transport);
        write_message(&mut out, size, &parts, top_lines)?;
        out.flush()
    }
}

impl Handler<Pop3Session> for Pop3Handler<'_> {
    fn perform(
        &mut self,
        session: &mut Pop3Session,
        action: Pop3Action,
        conn: &mut Conn,
        next: &mut Vec<Pop3Action>,
    ) -> io::Result<()> {
        match action {
            Pop3Action::Send(bytes) => conn.queue(&bytes),
            Pop3Action::Close => {
                // Unlock before the last reply leaves: a client that read +OK to QUIT can
                // log in again at once (RFC 1939 §6 releases the lock in UPDATE).
                self.release_maildrop();
                conn.request_close()
            }
            Pop3Action::Login { user, password } => {
                conn.flush()?;
                let outcome = self.login(session.login_mechanism(), &user, &password);
                session.login_finished(outcome, next);
            }
            Pop3Action::Retrieve { number, size, top_lines } => self.retrieve(number, size, top_lines, conn)?,
            Pop3Action::Commit { deleted } => {
                let ok = match &self.maildrop {
                    Some(user) => match self.service.store.remove_entries(user, &deleted) {
                        Ok(()) => true,
                        Err(error) => {
                            log::error!("deleting {} message(s) of {user}: {error}", deleted.len());
                            false
                        }
                    },
                    None => false,
                };
                session.commit_finished(ok, next);
            }
            Pop3Action::StartTls => conn.start_tls(self.service.tls.as_ref().map(|c| c.current()))?,
        }
        Ok(())
    }
}
