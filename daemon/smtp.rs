//! The SMTP listener's worker: drives an engine [`SmtpSession`] over a socket and hands
//! complete messages to the pipeline, waiting for persist's answer before replying.

use std::io;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use engine::directory::Directory;
use engine::envelope::CommitError;
use engine::metrics::Metrics;
use engine::pipeline::Submission;
use engine::smtp::{Action, SmtpConfig, SmtpSession};

use crate::conn::{self, Conn, Handler, Session};
use crate::login::Logins;
use crate::server::{Service, ShutdownSignal};
use crate::tls::Certificates;

impl Session for SmtpSession {
    type Action = Action;
    fn receive(&mut self, input: &[u8], actions: &mut Vec<Action>) {
        SmtpSession::receive(self, input, actions)
    }
    fn timed_out(&mut self, actions: &mut Vec<Action>) {
        SmtpSession::timed_out(self, actions)
    }
    fn shutting_down(&mut self, actions: &mut Vec<Action>) {
        SmtpSession::shutting_down(self, actions)
    }
    fn take_activity(&mut self) -> bool {
        SmtpSession::take_activity(self)
    }
    fn is_closed(&self) -> bool {
        SmtpSession::is_closed(self)
    }
    fn is_paused(&self) -> bool {
        SmtpSession::is_paused(self)
    }
    fn resume(&mut self, actions: &mut Vec<Action>) {
        SmtpSession::resume(self, actions)
    }
}

struct SmtpHandler {
    metrics: Arc<Metrics>,
    intake: Sender<Submission>,
    tls: Option<Arc<Certificates>>,
    logins: Arc<Logins>,
    client: IpAddr,
}

impl Handler<SmtpSession> for SmtpHandler {
    fn perform(
        &mut self,
        session: &mut SmtpSession,
        action: Action,
        conn: &mut Conn,
        next: &mut Vec<Action>,
    ) -> io::Result<()> {
        match action {
            Action::Send(reply) => {
                self.metrics.smtp_reply(reply.code());
                conn.queue(reply.as_bytes())
            }
            Action::Close => conn.request_close(),
            Action::StartTls => conn.start_tls(self.tls.as_ref().map(|c| c.current()))?,
            Action::Authenticate(credentials) => {
                conn.flush()?;
                let mechanism = session.auth_mechanism();
                let verdict = self.logins.check(self.client, mechanism, &credentials.user, &credentials.password);
                session.auth_finished(verdict, next);
            }
            Action::Commit(message) => {
                // Replies queued before the commit go out now, not after the fsync.
                conn.flush()?;
                let (submission, outcome) = Submission::new(message);
                let started = std::time::Instant::now();
                let result = match self.intake.send(submission) {
                    Ok(()) => outcome.recv().unwrap_or(Err(CommitError::Transient)),
                    Err(_) => Err(CommitError::Transient),
                };
                self.metrics.acknowledged(started.elapsed());
                session.commit_finished(result, next);
            }
        }
        Ok(())
    }
}

/// Everything an SMTP worker needs, shared by all of them.
pub struct SmtpService {
    pub config: Arc<SmtpConfig>,
    pub directory: Arc<dyn Directory>,
    pub intake: Sender<Submission>,
    pub timeout: Duration,
    /// Set with --tls-cert/--tls-key: STARTTLS is offered.
    pub tls: Option<Arc<Certificates>>,
    /// `--smtps`: TLS from the first byte (RFC 8314).
    pub implicit_tls: bool,
    /// Password checks for AUTH (submission).
    pub logins: Arc<Logins>,
    pub metrics: Arc<Metrics>,
}

impl SmtpService {
    fn handler(&self, client: IpAddr) -> SmtpHandler {
        SmtpHandler {
            metrics: self.metrics.clone(),
            intake: self.intake.clone(),
            tls: self.tls.clone(),
            logins: self.logins.clone(),
            client,
        }
    }

    /// Goes on, on this thread, with a session the event loop handed over: `unsent` is
    /// output it had not written yet, `actions` what the session asked for that it did not do.
    #[allow(clippy::too_many_arguments)]
    pub fn continue_session(
        &self,
        stream: TcpStream,
        unsent: Vec<u8>,
        session: SmtpSession,
        actions: Vec<Action>,
        deadline: Instant,
        peer: SocketAddr,
        shutdown: &ShutdownSignal,
    ) {
        let handler = self.handler(peer.ip());
        let ran = Conn::new(stream, unsent, self.timeout)
            .and_then(|conn| conn::run(conn, session, handler, actions, deadline, shutdown));
        if let Err(error) = ran {
            log::debug!("smtp {peer}: {error}");
        }
    }
}

impl Service for SmtpService {
    fn serve(&self, stream: TcpStream, peer: SocketAddr, shutdown: &ShutdownSignal) {
        let mut session = SmtpSession::new(self.config.clone(), self.directory.clone(), peer.ip());
        let implicit_tls = self.tls.as_ref().filter(|_| self.implicit_tls).map(|c| c.current());
        if implicit_tls.is_some() {
            session.tls_from_the_start();
        }
        let greeting = session.greeting();
        let handler = self.handler(peer.ip());
        if let Err(error) =
            conn::drive(stream, implicit_tls, greeting.as_bytes(), session, handler, self.timeout, shutdown)
        {
            log::debug!("smtp {peer}: {error}");
        }
    }
}
