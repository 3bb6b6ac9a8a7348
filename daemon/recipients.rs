//! Recipients at a peer's domain are verified with the peer at `RCPT`, as Postfix's
//! `reject_unverified_recipient` does: maild asks the peer (`MAIL FROM:<>`, `RCPT TO`,
//! `RSET`, no message) and answers `550` itself for a recipient the peer refuses, so it
//! never accepts mail it would later have to bounce to a sender who may be forged.
//!
//! Answers are cached (accepted for an hour, refused for ten minutes). A peer that cannot
//! be asked (down, away, slow, answering 4xx) is not asked again for a minute, and its
//! recipients are accepted meanwhile: their mail waits in the queue like any mail for
//! that peer, and what the peer refuses later still bounces.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use engine::directory::{Directory, Route};
use engine::domain::Domain;
use engine::forward::client::{probe, RecipientOutcome};
use engine::store::directory::MailDirectory;
use engine::Address;

const ACCEPTED_FOR: Duration = Duration::from_secs(3600);
const REFUSED_FOR: Duration = Duration::from_secs(600);
const UNREACHABLE_FOR: Duration = Duration::from_secs(60);
/// Connect, and each reply, of a probe: a client waits this long at most per recipient.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);
/// Most cached answers; past it, expired ones go, and if none has, all of them.
const MAX_CACHED: usize = 10_000;

/// The live directory, with verification of peer recipients.
pub struct VerifyingDirectory {
    inner: Arc<MailDirectory>,
    hostname: String,
    /// Lower-case address → (the peer accepts it, until when the answer holds).
    answers: Mutex<HashMap<String, (bool, Instant)>>,
    /// Peers that could not be asked, until when they are not asked again.
    unreachable: Mutex<HashMap<SocketAddr, Instant>>,
}

impl VerifyingDirectory {
    pub fn new(inner: Arc<MailDirectory>, hostname: &str) -> VerifyingDirectory {
        VerifyingDirectory {
            inner,
            hostname: hostname.to_string(),
            answers: Mutex::default(),
            unreachable: Mutex::default(),
        }
    }

    /// Whether the peer at `server` takes mail for `recipient`; `None` when it could not
    /// say (then the recipient is accepted).
    fn peer_accepts(&self, server: SocketAddr, recipient: &str) -> Option<bool> {
        let key = recipient.to_ascii_lowercase();
        let now = Instant::now();
        if let Some(&(accepts, until)) = lock(&self.answers).get(&key) {
            if until > now {
                return Some(accepts);
            }
        }
        if lock(&self.unreachable).get(&server).is_some_and(|&until| until > now) {
            return None;
        }
        let outcome = probe(server, &self.hostname, recipient, PROBE_TIMEOUT);
        let accepts = match outcome {
            Ok(RecipientOutcome::Accepted) => true,
            Ok(RecipientOutcome::Rejected(reply)) => {
                log::info!("recipient <{recipient}> refused by its peer {server}: {reply}");
                false
            }
            Ok(RecipientOutcome::Deferred(why)) => return self.cannot_ask(server, recipient, &why),
            Err(error) => return self.cannot_ask(server, recipient, &error.to_string()),
        };
        let mut answers = lock(&self.answers);
        if answers.len() >= MAX_CACHED {
            answers.retain(|_, (_, until)| *until > now);
            if answers.len() >= MAX_CACHED {
                answers.clear();
            }
        }
        answers.insert(key, (accepts, now + if accepts { ACCEPTED_FOR } else { REFUSED_FOR }));
        Some(accepts)
    }

    fn cannot_ask(&self, server: SocketAddr, recipient: &str, why: &str) -> Option<bool> {
        log::info!("cannot verify <{recipient}> with its peer {server} (accepted unverified): {why}");
        lock(&self.unreachable).insert(server, Instant::now() + UNREACHABLE_FOR);
        None
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl Directory for VerifyingDirectory {
    fn route(&self, recipient: &Address) -> Route {
        self.inner.route(recipient)
    }

    /// Mail from the null sender is not verified: probes are sent with it, so a probe
    /// never makes a peer probe back (two peers that each believe the other owns a domain
    /// would otherwise probe each other without end); and such mail is never bounced.
    fn route_from(&self, sender: &str, recipient: &Address) -> Route {
        let route = self.inner.route(recipient);
        if route != Route::Peer || sender.is_empty() {
            return route;
        }
        // A remembered domain whose peer is away has nobody to ask: its mail waits.
        let Some(peer) = self.inner.peers().lookup(&Domain::of(recipient)) else { return route };
        match self.peer_accepts(peer.address, &recipient.to_string()) {
            Some(false) => Route::UnknownUser,
            _ => Route::Peer,
        }
    }

    fn default_domain(&self) -> &str {
        self.inner.default_domain()
    }
}
