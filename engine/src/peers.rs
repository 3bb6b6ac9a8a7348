//! Peers: other maild servers and the domains they own, given with `--peer` or found by
//! mDNS (`--discover`). The SMTP session accepts mail for a peer's domain from anyone; the
//! forward stage looks up where to send it at delivery time, so a peer that moves is
//! followed.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::RwLock;

use crate::domain::Domain;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerSource {
    /// `--peer DOMAIN=HOST:PORT`: never replaced by discovery.
    Static,
    /// Announced over mDNS.
    Discovered,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    pub domain: Domain,
    /// The peer's SMTP listener.
    pub address: SocketAddr,
    pub source: PeerSource,
}

/// Domain → peer, shared by the session's directory, the forward stage, discovery and
/// `mailtool stats`.
#[derive(Default, Debug)]
pub struct PeerTable {
    peers: RwLock<HashMap<Domain, Peer>>,
}

impl PeerTable {
    pub fn add_static(&self, domain: &Domain, address: SocketAddr) {
        let domain = domain.clone();
        let peer = Peer { domain: domain.clone(), address, source: PeerSource::Static };
        self.peers.write().unwrap_or_else(|e| e.into_inner()).insert(domain, peer);
    }

    /// Records (or moves) a discovered peer's domain; a static entry wins.
    pub fn discovered(&self, domain: &Domain, address: SocketAddr) {
        let domain = domain.clone();
        let mut peers = self.peers.write().unwrap_or_else(|e| e.into_inner());
        if peers.get(&domain).is_some_and(|p| p.source == PeerSource::Static) {
            return;
        }
        if peers.get(&domain).map(|p| p.address) != Some(address) {
            log::info!("peer discovered: {domain} at {address}");
        }
        peers.insert(domain.clone(), Peer { domain, address, source: PeerSource::Discovered });
    }

    /// Forgets a discovered domain (its server left); static entries stay.
    pub fn forget_discovered(&self, domain: &Domain) {
        let mut peers = self.peers.write().unwrap_or_else(|e| e.into_inner());
        if peers.get(domain).is_some_and(|p| p.source == PeerSource::Discovered) {
            log::info!("peer gone: {domain}");
            peers.remove(domain);
        }
    }

    pub fn lookup(&self, domain: &Domain) -> Option<Peer> {
        self.peers.read().unwrap_or_else(|e| e.into_inner()).get(domain).cloned()
    }

    /// Every peer, by domain.
    pub fn list(&self) -> Vec<Peer> {
        let mut peers: Vec<Peer> = self.peers.read().unwrap_or_else(|e| e.into_inner()).values().cloned().collect();
        peers.sort_by(|a, b| a.domain.cmp(&b.domain));
        peers
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(name: &str) -> Domain {
        Domain::parse(name).unwrap()
    }

    #[test]
    fn static_peers_win_over_discovery() {
        let table = PeerTable::default();
        let a: SocketAddr = "127.0.0.1:25".parse().unwrap();
        let b: SocketAddr = "127.0.0.2:2525".parse().unwrap();
        table.add_static(&d("B.test"), a);
        table.discovered(&d("b.test"), b);
        assert_eq!(table.lookup(&d("b.TEST")).unwrap().address, a);
        table.forget_discovered(&d("b.test"));
        assert!(table.lookup(&d("b.test")).is_some());
        table.discovered(&d("c.test"), b);
        assert_eq!(table.lookup(&d("c.test")).unwrap().source, PeerSource::Discovered);
        table.forget_discovered(&d("c.test"));
        assert!(table.lookup(&d("c.test")).is_none());
    }
}
