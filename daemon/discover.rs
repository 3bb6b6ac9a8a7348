//! Peer discovery over mDNS (`--discover`, CONTRACT §8): this server announces itself as an
//! instance of `_maild._tcp.local.` and browses for the others; every domain another
//! instance announces goes into the [`PeerTable`] as a discovered peer, and leaves it again
//! when that instance says goodbye.
//!
//! What is announced, per instance:
//!
//! - the instance name `HOSTNAME-PORT`, the host name with every character other than a
//!   letter, digit or hyphen made a hyphen (`mx.example` on 25 is `mx-example-25`): the
//!   SMTP port makes two servers on one host differ. The same label is the host name
//!   `HOSTNAME-PORT.local.` of its address records, so two servers never fight over one
//!   A record;
//! - the SRV port and the TXT property `smtp=PORT`: the SMTP listener's port;
//! - the TXT property `domains=a.test,b.test`: the `--domain` list (one TXT string holds at
//!   most 255 bytes, RFC 6763 §6.1, so a longer list is refused at start);
//! - the address: the SMTP listener's IP. mdns-sd puts an address into an answer only on
//!   an interface whose subnet holds it, so the listener must listen on an address of a
//!   discovery interface (`--smtp 10.1.2.3:25` with `--discover-interface eth1` holding
//!   10.1.2.3). A listener on `0.0.0.0`/`[::]` announces every address of the discovery
//!   interfaces instead. A loopback listener cannot be reached from another host: that is
//!   logged as a warning.
//!
//! Interfaces: multicast goes only where the operator said. The daemon disables every
//! interface (`disable_interface(IfKind::All)`, loopback included) and then enables only
//! the `--discover-interface` names or addresses; the service is also limited to them
//! (`ServiceInfo::set_interfaces`). No mDNS packet is sent before that, because mdns-sd
//! handles commands in order and the register and browse commands come after the
//! interface ones. (mdns-sd 0.21 does join the mDNS group on every interface while its
//! thread starts, before the first command; the kernel may then send an IGMP/MLD
//! membership report there, which is left again at once. Run maild in a network namespace
//! if even that must not happen.)
//!
//! With `--discover-secret`, the TXT record also holds `addrs=`, `ts=` and `sig=` (see
//! `signature.rs`), the announcement is signed again every 30 minutes, and announcements
//! that do not pass the check are ignored like nonsense ones. An announced address on
//! loopback is never used.
//!
//! What is learnt is kept in a [`Roster`] (instance → announcement), a pure state machine
//! that turns each resolve or removal into claims and releases for the peer table, so a
//! domain that two instances announce falls back to the other one when the first leaves.
//! An announcement that does not make sense (no usable address, a bad port, no domains)
//! counts as the instance leaving: it is logged, never a panic.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::{IpAddr, SocketAddr, SocketAddrV6};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::signature::{self, DiscoverySecret, Signed};
use anyhow::{bail, Context, Result};
use engine::domain::Domain;
use engine::peers::PeerTable;
use mdns_sd::{
    DaemonEvent, IfKind, ResolvedService, ScopedIp, ServiceDaemon, ServiceEvent, ServiceInfo, UnregisterStatus,
};

/// The service type of CONTRACT §8.
pub const SERVICE_TYPE: &str = "_maild._tcp.local.";

/// RFC 6763 §6.1: one TXT string is a length byte and at most 255 bytes of `key=value`.
const MAX_TXT_STRING: usize = 255;

/// RFC 1035 §2.3.4: a DNS label holds at most 63 bytes; the instance and host names keep
/// room for `-PORT` and for mdns-sd's conflict suffix (` (2)`, `-2`).
const MAX_NAME_STEM: usize = 48;

/// How often the event threads look at the stop flag while no event comes.
const POLL: Duration = Duration::from_millis(250);

/// How long `stop` waits for each answer from the mdns-sd thread.
const ANSWER_WAIT: Duration = Duration::from_secs(2);

/// mdns-sd sends the goodbye once at unregister and once more 120 ms later "in case some
/// peers miss the message"; `stop` waits this long so the repeat goes out before shutdown.
const GOODBYE_REPEAT: Duration = Duration::from_millis(200);

/// A running discovery: the mdns-sd daemon thread plus our two event threads (browse
/// events, which feed the peer table, and daemon events, which are logged).
pub struct Discovery {
    daemon: ServiceDaemon,
    /// Our instance's full name as registered (before any conflict rename; mdns-sd maps it).
    fullname: String,
    /// Set by `stop`; the event threads end at their next poll even if mdns-sd never
    /// closes their channels.
    stopping: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Discovery {
    /// Announces this server on `interfaces` (names like `eth1`, or an address of the
    /// interface) and starts feeding `peers` with what the other servers announce.
    pub fn start(
        peers: Arc<PeerTable>,
        hostname: &str,
        domains: &[Domain],
        smtp: SocketAddr,
        interfaces: &[String],
        secret: Option<Arc<DiscoverySecret>>,
    ) -> Result<Discovery> {
        if interfaces.is_empty() {
            bail!(
                "--discover needs at least one --discover-interface NAME: mDNS is sent only on interfaces named there"
            );
        }
        if domains.is_empty() {
            bail!("--discover: this server has no domain to announce");
        }
        let kinds = interfaces.iter().map(|name| interface_kind(name)).collect::<Result<Vec<IfKind>>>()?;
        let own_domains: BTreeSet<Domain> = domains.iter().cloned().collect();
        let domain_list = own_domains.iter().map(Domain::as_str).collect::<Vec<_>>().join(",");
        if "domains=".len() + domain_list.len() > MAX_TXT_STRING {
            bail!(
                "--discover: the domain list ({} bytes) does not fit in one TXT string of {MAX_TXT_STRING} bytes",
                domain_list.len()
            );
        }
        if smtp.ip().is_loopback() {
            log::warn!("discovery: the SMTP listener {smtp} is loopback-only; peers on other hosts cannot reach it");
        }

        // One label for both names. It has no dot on purpose: mdns-sd escapes a dot in the
        // instance name it registers (`a\.b-25._maild…`) but reports resolved names
        // unescaped, and we must recognise our own announcements by name.
        let instance = format!("{}-{}", host_label(&name_stem(hostname)), smtp.port());
        let announcing = Announcing {
            instance: instance.clone(),
            smtp,
            kinds: kinds.clone(),
            domain_list: domain_list.clone(),
            secret: secret.clone(),
        };
        let info = announcing.info()?;
        let fullname = info.get_fullname().to_string();
        if secret.is_none() {
            log::warn!(
                "discovery: no --discover-secret: every host on {} is trusted to announce domains and receive their mail",
                interfaces.join(",")
            );
        }

        let daemon = ServiceDaemon::new().context("discovery: starting the mDNS daemon")?;
        // Commands run in order on mdns-sd's thread: the interfaces are narrowed before
        // the monitor, the browse and the registration can send anything.
        daemon.disable_interface(IfKind::All).context("discovery: disabling interfaces")?;
        daemon.enable_interface(kinds).context("discovery: enabling the discovery interfaces")?;
        let monitor = daemon.monitor().context("discovery: monitoring the mDNS daemon")?;
        let browse = daemon.browse(SERVICE_TYPE).context("discovery: browsing")?;
        daemon.register(info).context("discovery: registering this server")?;

        let stopping = Arc::new(AtomicBool::new(false));
        // Our own names: the registered one, plus any that mdns-sd picks after a conflict.
        let own_names = Arc::new(Mutex::new(HashSet::from([fullname.to_ascii_lowercase()])));
        let mut browser =
            Browser { peers, own_domains, own_names: own_names.clone(), roster: Roster::default(), secret };
        let mut threads = vec![
            spawn("discovery-browse", browse, stopping.clone(), move |event| browser.event(event))?,
            spawn("discovery-monitor", monitor, stopping.clone(), move |event| monitor_event(&own_names, event))?,
        ];
        if announcing.secret.is_some() {
            // A signature is trusted for a while only: sign and announce again in time.
            let (daemon, stop) = (daemon.clone(), stopping.clone());
            let resign = std::thread::Builder::new().name("discovery-sign".into()).spawn(move || {
                let mut signed = Instant::now();
                while !stop.load(Ordering::SeqCst) {
                    std::thread::sleep(POLL);
                    if signed.elapsed() >= signature::RESIGN_EVERY {
                        signed = Instant::now();
                        match announcing.info().and_then(|info| Ok(daemon.register(info)?)) {
                            Ok(()) => log::debug!("discovery: announcement signed again"),
                            Err(error) => log::warn!("discovery: signing the announcement again: {error:#}"),
                        }
                    }
                }
            });
            threads.push(resign.context("discovery: spawning discovery-sign")?);
        }
        log::info!("discovery: announcing {instance} ({domain_list}) at {smtp} on {}", interfaces.join(","));
        Ok(Discovery { daemon, fullname, stopping, threads })
    }

    /// Says goodbye (peers forget our domains now, not when their cache runs out), stops
    /// the mdns-sd thread and joins ours.
    pub fn stop(self) {
        self.stopping.store(true, Ordering::SeqCst);
        match self.daemon.unregister(&self.fullname).map(|r| r.recv_timeout(ANSWER_WAIT)) {
            Ok(Ok(UnregisterStatus::OK)) => std::thread::sleep(GOODBYE_REPEAT),
            Ok(Ok(other)) => log::warn!("discovery: unregistering {}: {other:?}", self.fullname),
            Ok(Err(e)) => log::warn!("discovery: no answer to unregister: {e}"),
            Err(e) => log::warn!("discovery: unregistering {}: {e}", self.fullname),
        }
        match self.daemon.shutdown().map(|r| r.recv_timeout(ANSWER_WAIT)) {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => log::warn!("discovery: no answer to shutdown: {e}"),
            Err(e) => log::warn!("discovery: shutting down the mDNS daemon: {e}"),
        }
        for thread in self.threads {
            let _ = thread.join();
        }
        log::info!("discovery stopped");
    }
}

/// What this server announces; builds the service record (signed, with a secret).
struct Announcing {
    instance: String,
    smtp: SocketAddr,
    kinds: Vec<IfKind>,
    domain_list: String,
    secret: Option<Arc<DiscoverySecret>>,
}

impl Announcing {
    fn info(&self) -> Result<ServiceInfo> {
        let host = format!("{}.local.", self.instance);
        let port = self.smtp.port().to_string();
        let mut properties =
            vec![("domains".to_string(), self.domain_list.clone()), ("smtp".to_string(), port.clone())];
        if let Some(secret) = &self.secret {
            let addrs =
                own_addresses(self.smtp, &self.kinds).iter().map(IpAddr::to_string).collect::<Vec<_>>().join(",");
            if "addrs=".len() + addrs.len() > MAX_TXT_STRING {
                bail!(
                    "--discover: the addresses to sign ({addrs}) do not fit in one TXT string; listen on one address"
                );
            }
            let fields = Signed { domains: self.domain_list.clone(), smtp: port, addrs, ts: engine::trace::unix_now() };
            properties.push(("sig".to_string(), secret.sign(&fields)));
            properties.push(("addrs".to_string(), fields.addrs));
            properties.push(("ts".to_string(), fields.ts.to_string()));
        }
        let properties: Vec<(&str, &str)> = properties.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let info = if self.smtp.ip().is_unspecified() {
            ServiceInfo::new(SERVICE_TYPE, &self.instance, &host, (), self.smtp.port(), &properties[..])
                .map(ServiceInfo::enable_addr_auto)
        } else {
            ServiceInfo::new(SERVICE_TYPE, &self.instance, &host, self.smtp.ip(), self.smtp.port(), &properties[..])
        };
        let mut info = info.context("discovery: building the service record")?;
        info.set_interfaces(self.kinds.clone());
        Ok(info)
    }
}

/// The addresses peers may reach this server at, as signed: the SMTP listener's, or for
/// a listener on every address, those of the discovery interfaces (what mdns-sd announces).
fn own_addresses(smtp: SocketAddr, kinds: &[IfKind]) -> Vec<IpAddr> {
    if !smtp.ip().is_unspecified() {
        return vec![smtp.ip()];
    }
    let mut addresses: Vec<IpAddr> = if_addrs::get_if_addrs()
        .unwrap_or_default()
        .into_iter()
        .filter(|interface| {
            kinds.iter().any(|kind| match kind {
                IfKind::Name(name) => *name == interface.name,
                IfKind::Addr(ip) => *ip == interface.ip(),
                _ => false,
            })
        })
        .map(|interface| interface.ip())
        .filter(|ip| !ip.is_loopback())
        .collect();
    addresses.sort();
    addresses.dedup();
    addresses
}

/// Runs `handle` on every event from `events` on a named thread, until the channel closes
/// or `stopping` is set.
fn spawn<T: Send + 'static>(
    name: &str,
    events: mdns_sd::Receiver<T>,
    stopping: Arc<AtomicBool>,
    mut handle: impl FnMut(T) + Send + 'static,
) -> Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            while !stopping.load(Ordering::SeqCst) {
                match events.recv_timeout(POLL) {
                    Ok(event) => handle(event),
                    Err(mdns_sd::RecvTimeoutError::Timeout) => {}
                    Err(mdns_sd::RecvTimeoutError::Disconnected) => break,
                }
            }
        })
        .with_context(|| format!("discovery: spawning {name}"))
}

/// `--discover-interface` takes an interface name or one of its addresses. A name that
/// the kernel does not know is refused here: mdns-sd would silently use no interface.
fn interface_kind(text: &str) -> Result<IfKind> {
    let text = text.trim();
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Ok(IfKind::Addr(ip));
    }
    if text.is_empty() || text.contains('/') {
        bail!("--discover-interface {text:?}: want an interface name or address");
    }
    // `ip netns exec` mounts the namespace's own sysfs, so this is the right list there too.
    let sysfs = Path::new("/sys/class/net");
    if sysfs.is_dir() && !sysfs.join(text).exists() {
        bail!("--discover-interface {text:?}: no such network interface");
    }
    Ok(IfKind::Name(text.to_string()))
}

/// The host name, cut to fit one DNS label with the port and a conflict suffix.
fn name_stem(hostname: &str) -> String {
    let mut stem = String::new();
    for c in hostname.chars() {
        if stem.len() + c.len_utf8() > MAX_NAME_STEM {
            break;
        }
        stem.push(c);
    }
    if stem.is_empty() {
        stem.push_str("maild");
    }
    stem
}

/// A host-name label (RFC 1123 §2.1: letters, digits, hyphens) for the address records.
fn host_label(stem: &str) -> String {
    let label: String =
        stem.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).collect();
    let label = label.trim_matches('-');
    if label.is_empty() {
        "maild".to_string()
    } else {
        label.to_string()
    }
}

/// The browse side: turns mdns-sd's service events into peer-table updates.
struct Browser {
    peers: Arc<PeerTable>,
    /// Our `--domain`s, lower-case: never taken from another server's announcement.
    own_domains: BTreeSet<Domain>,
    /// Lower-case full names of our own instance (we hear our own announcements).
    own_names: Arc<Mutex<HashSet<String>>>,
    roster: Roster,
    /// `--discover-secret`: only announcements signed with it count.
    secret: Option<Arc<DiscoverySecret>>,
}

impl Browser {
    fn event(&mut self, event: ServiceEvent) {
        let changes = match event {
            ServiceEvent::ServiceResolved(service) => self.resolved(&service),
            ServiceEvent::ServiceRemoved(_, fullname) => {
                let name = fullname.to_ascii_lowercase();
                if self.is_own(&name) {
                    return;
                }
                self.roster.removed(&name)
            }
            _ => return,
        };
        for change in changes {
            match change {
                Change::Claim(domain, address) => self.peers.discovered(&domain, address),
                Change::Release(domain) => self.peers.forget_discovered(&domain),
            }
        }
    }

    fn is_own(&self, name: &str) -> bool {
        self.own_names.lock().unwrap_or_else(|e| e.into_inner()).contains(name)
    }

    fn resolved(&mut self, service: &ResolvedService) -> Vec<Change> {
        let name = service.fullname.to_ascii_lowercase();
        if self.is_own(&name) {
            return Vec::new();
        }
        match self.announcement(service, self.roster.address(&name)) {
            Ok(announcement) => self.roster.resolved(&name, announcement),
            Err(why) => {
                // An announcement we cannot use means the instance offers us nothing now.
                log::warn!("discovery: ignoring {}: {why}", service.fullname);
                self.roster.removed(&name)
            }
        }
    }

    fn announcement(&self, service: &ResolvedService, previous: Option<SocketAddr>) -> Result<Announcement, String> {
        let txt = service.get_properties();
        let port = txt_port(txt.get_property_val("smtp").flatten(), service.port)?;
        let list = parse_domains(txt.get_property_val("domains").flatten(), &self.own_domains)?;
        if !list.ignored.is_empty() {
            log::warn!("discovery: {} announces domains we do not take: {}", service.fullname, list.ignored.join(", "));
        }
        if list.usable.is_empty() {
            return Err("it announces no usable domain".into());
        }
        let signed_addresses = match &self.secret {
            None => None,
            Some(secret) => {
                let text = |key: &str| {
                    txt.get_property_val(key)
                        .flatten()
                        .map(|v| String::from_utf8_lossy(v).into_owned())
                        .unwrap_or_default()
                };
                let fields = Signed {
                    domains: text("domains"),
                    smtp: text("smtp"),
                    addrs: text("addrs"),
                    ts: text("ts").parse().unwrap_or(0),
                };
                secret.check(
                    &fields,
                    Some(text("sig")).filter(|s| !s.is_empty()).as_deref(),
                    engine::trace::unix_now(),
                )?;
                Some(fields.addresses())
            }
        };
        let candidates: Vec<(IpAddr, u32)> = service
            .get_addresses()
            .iter()
            .map(|ip| match ip {
                ScopedIp::V6(v6) => (ip.to_ip_addr(), v6.scope_id().index),
                _ => (ip.to_ip_addr(), 0),
            })
            // Signed: only where the signer said it may be reached.
            .filter(|(ip, _)| signed_addresses.as_ref().is_none_or(|allowed| allowed.contains(ip)))
            .collect();
        let (ip, scope) =
            pick_address(&candidates, previous.map(|a| a.ip())).ok_or("it announces no usable address")?;
        let address = match ip {
            IpAddr::V6(v6) if is_link_local_v6(&v6) => SocketAddr::V6(SocketAddrV6::new(v6, port, 0, scope)),
            _ => SocketAddr::new(ip, port),
        };
        Ok(Announcement { address, domains: list.usable })
    }
}

/// Daemon events: errors are worth a warning; a conflict rename of our own instance must
/// be known so we keep ignoring our own announcements.
fn monitor_event(own_names: &Mutex<HashSet<String>>, event: DaemonEvent) {
    match event {
        DaemonEvent::Error(e) => log::warn!("discovery: mDNS: {e}"),
        DaemonEvent::NameChange(change) => {
            let mut names = own_names.lock().unwrap_or_else(|e| e.into_inner());
            if names.contains(&change.original.to_ascii_lowercase()) {
                log::warn!(
                    "discovery: name conflict on {}: {} is now {}",
                    change.intf_name,
                    change.original,
                    change.new_name
                );
                names.insert(change.new_name.to_ascii_lowercase());
            }
        }
        DaemonEvent::IpAdd(ip) => log::debug!("discovery: address {ip} appeared"),
        DaemonEvent::IpDel(ip) => log::debug!("discovery: address {ip} went away"),
        _ => {}
    }
}

/// The SMTP port: TXT `smtp=PORT` (CONTRACT §8), else the SRV port.
fn txt_port(smtp: Option<&[u8]>, srv_port: u16) -> Result<u16, String> {
    let port = match smtp {
        None => srv_port,
        Some(bytes) => std::str::from_utf8(bytes)
            .ok()
            .and_then(|text| text.trim().parse::<u16>().ok())
            .ok_or_else(|| format!("smtp={:?} is not a port", String::from_utf8_lossy(bytes)))?,
    };
    if port == 0 {
        return Err("it announces port 0".into());
    }
    Ok(port)
}

/// The parsed TXT `domains=` list.
#[derive(Debug, PartialEq, Eq)]
struct DomainList {
    /// Valid domain names, lower-case, each once, not ours.
    usable: Vec<Domain>,
    /// Entries we skipped: not a domain name, or one of our own domains.
    ignored: Vec<String>,
}

fn parse_domains(value: Option<&[u8]>, own: &BTreeSet<Domain>) -> Result<DomainList, String> {
    let value = value.ok_or("it has no domains= property")?;
    let text = std::str::from_utf8(value).map_err(|_| "its domains= is not UTF-8")?;
    let mut usable = BTreeSet::new();
    let mut ignored = Vec::new();
    for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        // The same check as `--domain` and `--peer`: a domain is what may follow the @.
        match Domain::parse(entry) {
            Ok(domain) if !own.contains(&domain) => {
                usable.insert(domain);
            }
            _ => ignored.push(entry.escape_default().to_string()),
        }
    }
    Ok(DomainList { usable: usable.into_iter().collect(), ignored })
}

fn is_link_local_v6(ip: &std::net::Ipv6Addr) -> bool {
    ip.segments()[0] & 0xffc0 == 0xfe80
}

/// Chooses where to reach an instance among its announced addresses (with the interface
/// index for IPv6): the one used so far while it is still announced, so a peer does not
/// flap between addresses; else IPv4, then global IPv6, then link-local IPv6 (which needs
/// its interface), never loopback; the lowest address within a class.
fn pick_address(candidates: &[(IpAddr, u32)], previous: Option<IpAddr>) -> Option<(IpAddr, u32)> {
    let class = |&(ip, scope): &(IpAddr, u32)| -> Option<u8> {
        match ip {
            IpAddr::V4(v4) if v4.is_unspecified() || v4.is_multicast() || v4.is_broadcast() => None,
            IpAddr::V6(v6) if v6.is_unspecified() || v6.is_multicast() => None,
            // Another host's mail server is never on our loopback: a host announcing it
            // would have us send its domains' mail to a service of our own.
            ip if ip.is_loopback() => None,
            IpAddr::V4(_) => Some(0),
            IpAddr::V6(v6) if is_link_local_v6(&v6) => (scope != 0).then_some(2),
            IpAddr::V6(_) => Some(1),
        }
    };
    let usable = candidates.iter().filter_map(|c| class(c).map(|k| (k, *c)));
    if let Some(previous) = previous {
        if let Some(&found) = candidates.iter().find(|c| c.0 == previous && class(c).is_some()) {
            return Some(found);
        }
    }
    usable.min_by_key(|&(k, (ip, _))| (k, ip)).map(|(_, c)| c)
}

/// What one instance announced, as we use it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Announcement {
    address: SocketAddr,
    domains: Vec<Domain>,
}

/// A peer-table update.
#[derive(Debug, PartialEq, Eq)]
enum Change {
    Claim(Domain, SocketAddr),
    Release(Domain),
}

/// Instance full name → its latest usable announcement. Pure: each event gives the peer
/// table updates that follow from it.
#[derive(Default, Debug)]
struct Roster {
    instances: BTreeMap<String, Announcement>,
}

impl Roster {
    fn address(&self, instance: &str) -> Option<SocketAddr> {
        self.instances.get(instance).map(|a| a.address)
    }

    /// A (re)resolved instance claims all it announces now (the latest announcement wins
    /// a domain that two servers announce); what it announced before and not now falls
    /// back to another instance or is released.
    fn resolved(&mut self, instance: &str, now: Announcement) -> Vec<Change> {
        let before = self.instances.insert(instance.to_string(), now.clone());
        let mut changes: Vec<Change> = now.domains.iter().map(|d| Change::Claim(d.clone(), now.address)).collect();
        if let Some(before) = before {
            let dropped = before.domains.into_iter().filter(|d| !now.domains.contains(d));
            changes.extend(self.fall_back(dropped));
        }
        changes
    }

    /// A departed instance's domains fall back to another instance or are released.
    fn removed(&mut self, instance: &str) -> Vec<Change> {
        match self.instances.remove(instance) {
            Some(gone) => self.fall_back(gone.domains),
            None => Vec::new(),
        }
    }

    fn fall_back(&self, domains: impl IntoIterator<Item = Domain>) -> Vec<Change> {
        domains
            .into_iter()
            .map(|domain| match self.instances.values().find(|a| a.domains.contains(&domain)) {
                Some(other) => Change::Claim(domain, other.address),
                None => Change::Release(domain),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    fn d(name: &str) -> Domain {
        Domain::parse(name).unwrap()
    }

    fn announcement(address: &str, domains: &[&str]) -> Announcement {
        Announcement { address: addr(address), domains: domains.iter().map(|name| d(name)).collect() }
    }

    fn claim(domain: &str, address: &str) -> Change {
        Change::Claim(d(domain), addr(address))
    }

    fn release(domain: &str) -> Change {
        Change::Release(d(domain))
    }

    #[test]
    fn roster_claims_moves_and_releases() {
        let mut roster = Roster::default();
        assert_eq!(
            roster.resolved("a", announcement("10.0.0.1:25", &["a.test", "x.test"])),
            [claim("a.test", "10.0.0.1:25"), claim("x.test", "10.0.0.1:25")]
        );
        // A new address re-claims every domain there; a dropped domain is released.
        assert_eq!(
            roster.resolved("a", announcement("10.0.0.9:25", &["a.test"])),
            [claim("a.test", "10.0.0.9:25"), release("x.test")]
        );
        assert_eq!(roster.removed("a"), [release("a.test")]);
        // An instance we never resolved leaves nothing to forget.
        assert_eq!(roster.removed("a"), []);
        assert_eq!(roster.removed("never-seen"), []);
    }

    #[test]
    fn a_domain_two_servers_announce_falls_back_when_one_leaves() {
        let mut roster = Roster::default();
        roster.resolved("a", announcement("10.0.0.1:25", &["shared.test"]));
        assert_eq!(
            roster.resolved("b", announcement("10.0.0.2:25", &["shared.test"])),
            [claim("shared.test", "10.0.0.2:25")]
        );
        assert_eq!(roster.removed("b"), [claim("shared.test", "10.0.0.1:25")]);
        assert_eq!(roster.resolved("a", announcement("10.0.0.1:25", &[])), [release("shared.test")]);
    }

    #[test]
    fn txt_port_prefers_the_txt_and_refuses_nonsense() {
        // (TXT smtp value, SRV port, the port or None for a refusal)
        type Case = (Option<&'static [u8]>, u16, Option<u16>);
        let cases: &[Case] = &[
            (Some(b"2525"), 25, Some(2525)),
            (Some(b" 2525 "), 25, Some(2525)),
            (None, 25, Some(25)),
            (None, 0, None),
            (Some(b"0"), 25, None),
            (Some(b"65536"), 25, None),
            (Some(b"-1"), 25, None),
            (Some(b""), 25, None),
            (Some(b"25\0"), 25, None),
            (Some(b"\xff\xfe"), 25, None),
        ];
        for (smtp, srv, want) in cases {
            assert_eq!(txt_port(*smtp, *srv).ok(), *want, "smtp={smtp:?} srv={srv}");
        }
    }

    #[test]
    fn domains_txt_survives_hostile_values() {
        let own: BTreeSet<Domain> = [d("own.test")].into();
        let usable = |value: &[u8]| parse_domains(Some(value), &own).map(|l| l.usable);
        assert_eq!(usable(b"a.test,B.Test"), Ok(vec![d("a.test"), d("b.test")]));
        assert_eq!(usable(b" a.test , ,a.test,,"), Ok(vec![d("a.test")]));
        assert_eq!(usable(b"own.test,OWN.test,c.test"), Ok(vec![d("c.test")]));
        assert_eq!(usable(b""), Ok(vec![]));
        assert_eq!(usable(b",,,"), Ok(vec![]));
        assert_eq!(usable(b"a..b,a b.test,a\0.test,a@b.test,d.test"), Ok(vec![d("d.test")]));
        assert!(usable(b"a.test\xff").is_err());
        assert!(parse_domains(None, &own).is_err());
        let list = parse_domains(Some(b"own.test,bad..d"), &own).unwrap();
        assert_eq!(list.ignored, ["own.test", "bad..d"]);
    }

    #[test]
    fn addresses_prefer_the_current_then_ipv4_then_ipv6() {
        let ip = |text: &str| text.parse::<IpAddr>().unwrap();
        let v4a = (ip("10.0.0.2"), 0);
        let v4b = (ip("10.0.0.1"), 0);
        let global6 = (ip("2001:db8::1"), 0);
        let link6 = (ip("fe80::1"), 3);
        let link6_unscoped = (ip("fe80::2"), 0);
        let lo = (ip("127.0.0.1"), 0);
        let junk = [
            (ip("0.0.0.0"), 0),
            (ip("224.0.0.251"), 0),
            (ip("255.255.255.255"), 0),
            (ip("::"), 0),
            (ip("ff02::fb"), 0),
        ];
        assert_eq!(pick_address(&[v4a, global6, v4b], None), Some(v4b));
        assert_eq!(pick_address(&[v4a, global6, v4b], Some(v4a.0)), Some(v4a));
        assert_eq!(pick_address(&[v4a], Some(ip("10.9.9.9"))), Some(v4a));
        assert_eq!(pick_address(&[link6, global6, lo], None), Some(global6));
        assert_eq!(pick_address(&[link6, lo], None), Some(link6));
        assert_eq!(pick_address(&[link6_unscoped, lo], None), None);
        assert_eq!(pick_address(&[lo], Some(lo.0)), None);
        assert_eq!(pick_address(&junk, None), None);
        assert_eq!(pick_address(&junk, Some(ip("0.0.0.0"))), None);
        assert_eq!(pick_address(&[], None), None);
    }

    #[test]
    fn names_fit_a_dns_label() {
        assert_eq!(name_stem("mx.test"), "mx.test");
        assert_eq!(name_stem(""), "maild");
        assert_eq!(name_stem(&"é".repeat(40)).len(), MAX_NAME_STEM);
        assert_eq!(host_label("MX.Example_1"), "mx-example-1");
        assert_eq!(host_label("..."), "maild");
    }

    #[test]
    fn interfaces_are_names_or_addresses() {
        assert!(matches!(interface_kind("10.0.0.1").unwrap(), IfKind::Addr(_)));
        assert!(matches!(interface_kind("lo").unwrap(), IfKind::Name(n) if n == "lo"));
        assert!(interface_kind("").is_err());
        assert!(interface_kind("../eth0").is_err());
        assert!(interface_kind("no-such-interface-xyz").is_err());
    }
}
