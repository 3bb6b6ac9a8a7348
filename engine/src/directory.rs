//! Where a recipient goes: a local mailbox, a peer server, or nowhere for this client.
//!
//! The SMTP session asks a [`Directory`] at `RCPT`; the deliver stage asks the same
//! question of the stored recipients, so both agree on what is local. The live
//! implementation, over the store's users and the peer table, is
//! [`MailDirectory`](crate::store::directory::MailDirectory).

use crate::address::Address;

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
