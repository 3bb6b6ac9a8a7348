//! The POP3 listener's worker: drives an engine [`Pop3Session`] and performs its effects:
//! logins (argon2, then the maildrop from engine's [`Maildrops`]), message retrieval, and
//! the durable deletions of QUIT.

use std::io::{self, BufWriter, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use engine::mbox::return_path;
use engine::pop3::{LoginError, MaildropEntry, MessageWriter, Pop3Action, Pop3Config, Pop3Session};
use engine::sasl::Verdict;
use engine::store::maildrop::{Maildrop, Maildrops, OpenError};
use engine::Store;

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
    pub maildrops: Maildrops,
    pub logins: Arc<Logins>,
    pub timeout: Duration,
    /// Set with --tls-cert/--tls-key: STLS is offered.
    pub tls: Option<Arc<Certificates>>,
    /// `--pop3s`: TLS from the first byte.
    implicit_tls: bool,
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
            maildrops: Maildrops::new(store),
            logins,
            timeout,
            implicit_tls,
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

struct Pop3Handler<'a> {
    service: &'a Pop3Service,
    client: IpAddr,
    /// The maildrop this session holds open (exclusively) after its login.
    maildrop: Option<Maildrop<'a>>,
}

impl Pop3Handler<'_> {
    fn login(&mut self, mechanism: &str, user: &str, password: &str) -> Result<Vec<MaildropEntry>, LoginError> {
        let service = self.service;
        let key = match service.logins.check(self.client, mechanism, user, password) {
            Verdict::Accepted(key) => key,
            Verdict::Rejected => return Err(LoginError::BadCredentials),
            Verdict::Throttled => return Err(LoginError::Throttled),
        };
        match service.maildrops.open(&key) {
            Ok((maildrop, entries)) => {
                self.maildrop = Some(maildrop);
                Ok(entries)
            }
            Err(OpenError::Locked) => Err(LoginError::Locked),
            Err(OpenError::Store(error)) => {
                log::error!("loading the maildrop of {key}: {error}");
                Err(LoginError::Unavailable)
            }
        }
    }

    fn retrieve(&self, number: u64, size: u64, top_lines: Option<usize>, conn: &mut Conn) -> io::Result<()> {
        let Some(maildrop) = &self.maildrop else {
            conn.queue(b"-ERR [SYS/TEMP] message unavailable\r\n");
            return Ok(());
        };
        let unavailable = |conn: &mut Conn, why: &dyn std::fmt::Display| -> io::Result<()> {
            log::error!("message {number} unavailable for RETR: {why}");
            conn.queue(b"-ERR [SYS/TEMP] message unavailable\r\n");
            Ok(())
        };
        let message = match maildrop.message(number) {
            Ok(Some(message)) => message,
            Ok(None) => return unavailable(conn, &"not in the store"),
            Err(error) => return unavailable(conn, &error),
        };
        // Opened before the +OK: a body file that is missing is an -ERR, not a cut reply.
        let body = match message.open_body() {
            Ok(body) => body,
            Err(error) => return unavailable(conn, &error),
        };
        conn.flush()?;
        let record = message.record();
        let mut out = BufWriter::with_capacity(64 * 1024, &mut conn.transport);
        let mut writer = MessageWriter::start(&mut out, size, top_lines)?;
        if writer.part(return_path(&record.sender).as_bytes())? && writer.part(record.trace.as_bytes())? {
            body.chunks(|chunk| writer.part(chunk))?;
        }
        writer.finish()?;
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
                self.maildrop = None;
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
                    Some(maildrop) => match maildrop.delete(&deleted) {
                        Ok(()) => true,
                        Err(error) => {
                            log::error!("deleting {} message(s) of {}: {error}", deleted.len(), maildrop.user());
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
