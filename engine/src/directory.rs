//! Where a recipient goes: a local mailbox, a peer server, or nowhere for this client.
//!
//! The SMTP session asks a [`Directory`] at `RCPT`; the deliver stage asks the same
//! question of the stored recipients, so both agree on what is local.

use std::sync::Arc;
use std::time::Duration;

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
    /// The route of a recipient of mail from `sender` (empty for the null sender), as the
    /// SMTP session asks at `RCPT`; a directory that verifies recipients with their peer
    /// does it here.
    fn route_from(&self, _sender: &str, recipient: &Address) -> Route {
        self.route(recipient)
    }
    /// The domain a bare `RCPT TO:<postmaster>` belongs to.
    fn default_domain(&self) -> &str;
}

/// The live directory: local domains from the configuration, users from the store,
/// peers from `--peer` and discovery.
pub struct MailDirectory {
    domains: Vec<String>,
    users: Users,
    peers: Arc<PeerTable>,
    remembered: Option<(Store, Duration)>,
}

impl MailDirectory {
    pub fn new(domains: Vec<String>, users: Users, peers: Arc<PeerTable>) -> MailDirectory {
        let domains = domains.into_iter().map(|d| d.to_ascii_lowercase()).collect();
        MailDirectory { domains, users, peers, remembered: None }
    }

    /// Also counts as a peer's the domains a discovered peer owned within `lifetime`
    /// (kept in `store`), so their mail waits for the peer while it is away instead of
    /// going to DNS.
    pub fn remembering(self, store: Store, lifetime: Duration) -> MailDirectory {
        MailDirectory { remembered: Some((store, lifetime)), ..self }
    }

    /// A peer owns `domain` now, or a discovered peer did within the remembered lifetime.
    pub fn is_peer_domain(&self, domain: &str) -> bool {
        self.peers.lookup(domain).is_some() || self.remembers(domain)
    }

    fn remembers(&self, domain: &str) -> bool {
        let Some((store, lifetime)) = &self.remembered else { return false };
        let now = crate::trace::unix_now();
        match store.peer_domain_seen(domain) {
            Ok(Some(seen)) => seen.saturating_add(lifetime.as_secs()) > now,
            Ok(None) => false,
            // Unknown: treat it as a peer's, so its mail waits rather than going to DNS.
            Err(_) => true,
        }
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
