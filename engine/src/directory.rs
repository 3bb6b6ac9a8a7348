//! Where a recipient goes: a local mailbox, a peer server, or nowhere for this client.
//!
//! The SMTP session asks a [`Directory`] at `RCPT`; the deliver stage asks the same
//! question of the stored recipients, so both agree on what is local.

use std::sync::Arc;

use crate::address::Address;
use crate::peers::PeerTable;
use crate::store::Store;
use crate::users::Users;

/// The answer for one recipient address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// A user of a local domain.
    Local,
    /// A local domain, but no such user.
    UnknownUser,
    /// A domain a peer server owns: accepted from anyone and forwarded.
    Peer,
    /// Any other domain: relayed only for authenticated clients.
    Remote,
}

/// How a recipient was accepted at `RCPT`. Kept with the message, so that delivery and
/// forwarding never decide anew what the client was allowed: a peer that leaves makes
/// `Peer` mail wait, never go out by MX; only `Relay` mail (an authenticated client's,
/// or a bounce) ever does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accepted {
    Local,
    Peer,
    Relay,
}

impl Route {
    /// What an accepted recipient's route is kept as.
    pub fn accepted(&self) -> Option<Accepted> {
        match self {
            Route::Local => Some(Accepted::Local),
            Route::Peer => Some(Accepted::Peer),
            Route::Remote => Some(Accepted::Relay),
            Route::UnknownUser => None,
        }
    }
}

pub trait Directory: Send + Sync {
    fn route(&self, recipient: &Address) -> Route;
    /// The domain a bare `RCPT TO:<postmaster>` belongs to.
    fn default_domain(&self) -> &str;
}

/// The live directory: local domains from the configuration, users from the store,
/// peers from `--peer` and discovery.
pub struct MailDirectory {
    domains: Vec<String>,
    users: Users,
    peers: Arc<PeerTable>,
    remembered: Option<Store>,
}

impl MailDirectory {
    pub fn new(domains: Vec<String>, users: Users, peers: Arc<PeerTable>) -> MailDirectory {
        let domains = domains.into_iter().map(|d| d.to_ascii_lowercase()).collect();
        MailDirectory { domains, users, peers, remembered: None }
    }

    /// Also counts as a peer's the domains a discovered peer owned (kept in `store`), so
    /// their mail waits for the peer while it is away instead of going to DNS.
    pub fn remembering(self, store: Store) -> MailDirectory {
        MailDirectory { remembered: Some(store), ..self }
    }

    /// A peer owns `domain` now, or a discovered peer did.
    pub fn is_peer_domain(&self, domain: &str) -> bool {
        self.peers.lookup(domain).is_some()
            || self.remembered.as_ref().is_some_and(|store| store.was_peer_domain(domain).unwrap_or(false))
    }

    pub fn peers(&self) -> &Arc<PeerTable> {
        &self.peers
    }

    pub fn is_local_domain(&self, domain: &str) -> bool {
        self.domains.iter().any(|d| d.eq_ignore_ascii_case(domain))
    }
}

impl Directory for MailDirectory {
    fn route(&self, recipient: &Address) -> Route {
        if self.is_local_domain(recipient.domain()) {
            // RFC 5321 §4.5.1: postmaster must be accepted; it gets the mailbox of a
            // user called postmaster if there is one, else it is unknown like anyone.
            match self.users.exists(&recipient.key()) {
                Ok(true) => Route::Local,
                _ => Route::UnknownUser,
            }
        } else if self.is_peer_domain(recipient.domain()) {
            Route::Peer
        } else {
            Route::Remote
        }
    }

    fn default_domain(&self) -> &str {
        self.domains.first().map(String::as_str).unwrap_or("localhost")
    }
}
