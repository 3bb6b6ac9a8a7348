//! The live [`Directory`]: local domains from the configuration, users from the store,
//! peers from `--peer` and discovery, and the peer domains the store remembers.

use std::sync::Arc;
use std::time::Duration;

use crate::address::Address;
use crate::directory::{Directory, Route};
use crate::domain::Domain;
use crate::peers::PeerTable;
use crate::store::Store;
use crate::users::Users;

/// The live directory: local domains from the configuration, users from the store,
/// peers from `--peer` and discovery.
pub struct MailDirectory {
    domains: Vec<Domain>,
    users: Users,
    peers: Arc<PeerTable>,
    remembered: Option<(Store, Duration)>,
}

impl MailDirectory {
    pub fn new(domains: Vec<Domain>, users: Users, peers: Arc<PeerTable>) -> MailDirectory {
        MailDirectory { domains, users, peers, remembered: None }
    }

    /// Also counts as a peer's the domains a discovered peer owned within `lifetime`
    /// (kept in `store`), so their mail waits for the peer while it is away instead of
    /// going to DNS.
    pub fn remembering(self, store: Store, lifetime: Duration) -> MailDirectory {
        MailDirectory { remembered: Some((store, lifetime)), ..self }
    }

    /// A peer owns `domain` now, or a discovered peer did within the remembered lifetime.
    pub fn is_peer_domain(&self, domain: &Domain) -> bool {
        self.peers.lookup(domain).is_some() || self.remembers(domain)
    }

    fn remembers(&self, domain: &Domain) -> bool {
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

    pub fn is_local_domain(&self, domain: &Domain) -> bool {
        self.domains.contains(domain)
    }
}

impl Directory for MailDirectory {
    fn route(&self, recipient: &Address) -> Route {
        let domain = Domain::of(recipient);
        if self.is_local_domain(&domain) {
            // RFC 5321 §4.5.1: postmaster must be accepted; it gets the mailbox of a
            // user called postmaster if there is one, else it is unknown like anyone.
            match self.users.exists(&recipient.key()) {
                Ok(true) => Route::Local,
                _ => Route::UnknownUser,
            }
        } else if self.is_peer_domain(&domain) {
            Route::Peer
        } else {
            Route::Remote
        }
    }

    fn default_domain(&self) -> &str {
        self.domains.first().map_or("localhost", Domain::as_str)
    }
}
