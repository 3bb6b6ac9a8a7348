//! Where to send mail for a remote domain (RFC 5321 §5.1, RFC 7505): the MX lookup, and
//! the order in which the forward stage tries the servers it finds.
//!
//! ```text
//!   MX lookup of the domain
//!     ├─ NXDOMAIN ─────────────────────────────► Permanent 550 5.1.2
//!     ├─ SERVFAIL, timeout ────────────────────► Temporary
//!     ├─ only "." (null MX) ───────────────────► Permanent 556 5.1.10
//!     ├─ no MX: A, AAAA of the domain itself ──► the implicit MX, or Permanent 550 5.1.2
//!     └─ MX hosts: A, then AAAA of each ───────► the hosts that resolve, or Temporary
//!   then the order: preference, then connect latency among equal preferences
//! ```
//!
//! The lookups run on hickory's blocking resolver behind a small trait (`Lookups`), so the
//! decision tree above (`find_hosts`) is a table test, and everything after it is the pure
//! `order_servers`, tested without a network too. [`Latencies`] is what the forward workers
//! learn about the servers (how fast each address connects, which ones fail) and feed back
//! into that order.
//!
//! Every name is queried fully qualified (with its trailing dot), so no search domain from
//! `/etc/resolv.conf` is ever appended: a relay must not deliver `example.com`'s mail to
//! `example.com.corp.internal`.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use hickory_resolver::config::{NameServerConfigGroup, ResolverConfig, ResolverOpts};
use hickory_resolver::error::{ResolveError, ResolveErrorKind};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::{Name, Resolver};

/// How many times a query that got no answer (timeout, network error) is sent again, on
/// top of the first try: one retry covers a lost UDP datagram, and more would only stretch
/// the time a worker waits on a dead nameserver (each try waits the full timeout).
const RETRIES: usize = 1;

/// Answers kept per resolver (hickory's default is 32). A relay asks for the same few
/// domains over and over; a bigger cache saves a round trip per message for them.
const CACHE_SIZE: usize = 1024;

/// The most MX hosts resolved for one domain, lowest preferences first. Each host costs two
/// lookups, and a hostile or broken zone could list hundreds of unresolvable hosts; real
/// domains list a handful (Postfix tries at most five addresses by default).
const MAX_MX_HOSTS: usize = 10;

/// Addresses [`Latencies`] remembers before it starts over. Without a bound a long-running
/// relay would keep every address it ever connected to; forgetting is cheap (the next
/// connects measure again).
const MAX_TRACKED_ADDRESSES: usize = 4096;

/// Why there is no server to try now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RouteError {
    /// The domain cannot receive mail: a full SMTP-style reply to put in a bounce,
    /// e.g. `550 5.1.2 <domain>: domain not found` (NXDOMAIN, or neither MX nor A/AAAA),
    /// `556 5.1.10 <domain>: domain does not accept mail (null MX)` (RFC 7505).
    Permanent(String),
    /// Try again later (timeout, SERVFAIL, no nameserver answered): the reason.
    Temporary(String),
}

/// What is known about connecting to one address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Measured {
    /// Connects took about this long (smoothed over the recent ones).
    Took(Duration),
    /// The last connect failed.
    Failed,
}

/// Connect times measured per server address, shared by all forward workers, so that
/// among MX hosts of equal preference the fastest is tried first.
#[derive(Debug, Default)]
pub struct Latencies {
    by_address: Mutex<HashMap<IpAddr, Measured>>,
}

impl Latencies {
    /// Records a successful connect to `ip` that took `took`. The figure is smoothed (a
    /// quarter of the new measure, three quarters of the old) so that one slow handshake
    /// does not reorder hosts that are usually fast; a failed address starts afresh.
    pub fn connected(&self, ip: IpAddr, took: Duration) {
        let mut by_address = lock(&self.by_address);
        let smoothed = match by_address.get(&ip) {
            Some(Measured::Took(previous)) => previous.saturating_mul(3).saturating_add(took) / 4,
            Some(Measured::Failed) | None => took,
        };
        remember(&mut by_address, ip, Measured::Took(smoothed));
    }

    /// Records a failed connect to `ip`: it sorts after every measured address until it
    /// connects again.
    pub fn failed(&self, ip: IpAddr) {
        remember(&mut lock(&self.by_address), ip, Measured::Failed);
    }

    /// Sort key, lowest first: the measured connect time; zero for an address never tried
    /// (so that new hosts get measured rather than starved), `Duration::MAX` for one whose
    /// last connect failed.
    pub fn rank(&self, ip: IpAddr) -> Duration {
        match lock(&self.by_address).get(&ip) {
            None => Duration::ZERO,
            Some(Measured::Took(took)) => *took,
            Some(Measured::Failed) => Duration::MAX,
        }
    }
}

fn remember(by_address: &mut HashMap<IpAddr, Measured>, ip: IpAddr, measured: Measured) {
    if by_address.len() >= MAX_TRACKED_ADDRESSES && !by_address.contains_key(&ip) {
        by_address.clear();
    }
    by_address.insert(ip, measured);
}

/// A panic elsewhere while holding the lock leaves plain data behind (a map of figures, a
/// list of idle resolvers), still fit for use: no reason to fail every later caller.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Finds the servers to deliver to, through one nameserver or the system's. One is meant
/// to be shared (behind an `Arc`) by all the forward workers: their lookups run side by
/// side and the DNS cache is reused.
pub struct MxResolver {
    config: ResolverConfig,
    options: ResolverOpts,
    /// Resolvers not in use. hickory's blocking `Resolver` holds a lock for the whole of a
    /// lookup, so a single one shared by the forward workers would make them all wait
    /// behind the slowest domain; each `route` takes one from here (building one if none is
    /// idle, so there are as many as concurrent lookups) and puts it back after.
    idle: Mutex<Vec<Resolver>>,
}

impl MxResolver {
    /// `server`: the nameserver to ask (UDP, with TCP fallback on truncation); `None` means
    /// the system's /etc/resolv.conf. `timeout` bounds one query; a query that gets no
    /// answer is sent once more.
    pub fn new(server: Option<SocketAddr>, timeout: Duration) -> Result<MxResolver, String> {
        let (config, mut options) = match server {
            Some(server) => {
                // No search list and no hosts file: the configured server is the only
                // source of answers (the tests rely on it, and so does an operator who
                // names a resolver).
                let trust_negative_responses = true;
                let servers =
                    NameServerConfigGroup::from_ips_clear(&[server.ip()], server.port(), trust_negative_responses);
                let config = ResolverConfig::from_parts(None, Vec::new(), servers);
                let mut options = ResolverOpts::default();
                options.use_hosts_file = false;
                options.ndots = 0;
                (config, options)
            }
            None => hickory_resolver::system_conf::read_system_conf()
                .map_err(|error| format!("cannot read the system's DNS configuration: {error}"))?,
        };
        options.timeout = timeout;
        options.attempts = RETRIES;
        options.cache_size = CACHE_SIZE;
        // Build one now, so that a configuration hickory refuses fails at start-up rather
        // than on the first message.
        let first = build_resolver(&config, &options)?;
        Ok(MxResolver { config, options, idle: Mutex::new(vec![first]) })
    }

    /// The servers to try for `domain`, best first, each with `port`: MX hosts in
    /// preference order (lowest first); among equal preferences the host whose best
    /// address has the lowest `latencies.rank` first; each host expanded into its A and
    /// AAAA addresses (A first). Without MX records but with A/AAAA for the domain itself,
    /// the domain is the implicit MX (RFC 5321 §5.1). A null MX is Permanent (RFC 7505),
    /// and so is NXDOMAIN or a domain with neither MX nor address records. An MX host that
    /// does not resolve is skipped; if none resolves, that is Temporary. Duplicate
    /// addresses appear once. An address literal (`[192.0.2.1]`, `[IPv6:2001:db8::1]`,
    /// RFC 5321 §4.1.3) is its own single server, without DNS.
    pub fn route(&self, domain: &str, port: u16, latencies: &Latencies) -> Result<Vec<SocketAddr>, RouteError> {
        if let Some(literal) = domain.strip_prefix('[').and_then(|rest| rest.strip_suffix(']')) {
            let ip = parse_address_literal(literal).ok_or_else(|| invalid_domain(domain))?;
            return Ok(vec![SocketAddr::new(ip, port)]);
        }
        let name = fully_qualified(domain).ok_or_else(|| invalid_domain(domain))?;
        let resolver = self.take_resolver()?;
        let hosts = find_hosts(&resolver, domain, &name);
        lock(&self.idle).push(resolver);
        Ok(order_servers(hosts?, port, latencies))
    }

    fn take_resolver(&self) -> Result<Resolver, RouteError> {
        if let Some(resolver) = lock(&self.idle).pop() {
            return Ok(resolver);
        }
        build_resolver(&self.config, &self.options).map_err(RouteError::Temporary)
    }
}

fn build_resolver(config: &ResolverConfig, options: &ResolverOpts) -> Result<Resolver, String> {
    // Each resolver owns a current-thread tokio runtime (an epoll instance, no threads).
    Resolver::new(config.clone(), options.clone()).map_err(|error| format!("cannot create a DNS resolver: {error}"))
}

/// `IPv6:2001:db8::1` or `192.0.2.1`: the inside of an address literal (RFC 5321 §4.1.3).
fn parse_address_literal(literal: &str) -> Option<IpAddr> {
    match literal.get(..5) {
        Some(tag) if tag.eq_ignore_ascii_case("IPv6:") => literal[5..].parse::<Ipv6Addr>().ok().map(IpAddr::V6),
        _ => literal.parse::<Ipv4Addr>().ok().map(IpAddr::V4),
    }
}

/// The domain as an absolute DNS name, or `None` if it is not a valid one (empty, the
/// root, a label over 63 octets...). Non-ASCII names are converted to A-labels (IDNA).
fn fully_qualified(domain: &str) -> Option<Name> {
    let absolute = if domain.ends_with('.') { domain.to_owned() } else { format!("{domain}.") };
    let name = Name::from_utf8(absolute).ok()?;
    (name.is_fqdn() && !name.is_root()).then_some(name)
}

fn invalid_domain(domain: &str) -> RouteError {
    RouteError::Permanent(format!("550 5.1.2 <{}>: invalid domain name", printable(domain)))
}

/// The domain as it may appear in a reply line: it came from a peer, so anything that
/// could break the line (CR, LF, other controls) is replaced.
fn printable(domain: &str) -> String {
    domain.chars().map(|c| if c.is_control() || c.is_whitespace() { '?' } else { c }).collect()
}

/// One MX host (or the implicit MX) that resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
struct ResolvedHost {
    preference: u16,
    /// A addresses first, then AAAA, each in the order the nameserver gave them.
    addresses: Vec<IpAddr>,
}

/// What the DNS said about one name and type, reduced to what routing needs.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Answer<T> {
    Records(Vec<T>),
    /// The name exists but has no record of this type (NOERROR, no answer).
    NoRecords,
    /// The name does not exist (NXDOMAIN).
    NoDomain,
    /// No usable answer (timeout, SERVFAIL, REFUSED, a network error): the reason.
    Failed(String),
}

/// Sorts a lookup's outcome into an [`Answer`]. hickory reports SERVFAIL and REFUSED as
/// "no records found" too, with the response code beside it: only NOERROR and NXDOMAIN
/// are answers about the domain; anything else is a failure to get one.
fn answer<L, T>(result: Result<L, ResolveError>, records: impl FnOnce(L) -> Vec<T>) -> Answer<T> {
    match result {
        Ok(lookup) => {
            // A lookup that only followed CNAMEs can succeed with none of the asked type.
            let records = records(lookup);
            if records.is_empty() {
                Answer::NoRecords
            } else {
                Answer::Records(records)
            }
        }
        Err(error) => match error.kind() {
            ResolveErrorKind::NoRecordsFound { response_code: ResponseCode::NoError, .. } => Answer::NoRecords,
            ResolveErrorKind::NoRecordsFound { response_code: ResponseCode::NXDomain, .. } => Answer::NoDomain,
            ResolveErrorKind::NoRecordsFound { response_code, .. } => {
                Answer::Failed(format!("the nameserver answered {response_code}"))
            }
            _ => Answer::Failed(error.to_string()),
        },
    }
}

/// The DNS questions routing asks, one name and type each: the resolver's in service, a
/// table in the tests, so the decision tree of [`find_hosts`] is tested without DNS.
trait Lookups {
    fn mx(&self, name: &Name) -> Answer<(u16, Name)>;
    fn a(&self, host: &Name) -> Answer<IpAddr>;
    fn aaaa(&self, host: &Name) -> Answer<IpAddr>;
}

impl Lookups for Resolver {
    fn mx(&self, name: &Name) -> Answer<(u16, Name)> {
        answer(self.mx_lookup(name.clone()), |found| {
            found.iter().map(|mx| (mx.preference(), mx.exchange().clone())).collect()
        })
    }

    fn a(&self, host: &Name) -> Answer<IpAddr> {
        answer(self.ipv4_lookup(host.clone()), |found| found.iter().map(|a| IpAddr::V4(a.0)).collect())
    }

    fn aaaa(&self, host: &Name) -> Answer<IpAddr> {
        answer(self.ipv6_lookup(host.clone()), |found| found.iter().map(|aaaa| IpAddr::V6(aaaa.0)).collect())
    }
}

/// The A then AAAA addresses of `host`.
fn host_addresses(lookups: &dyn Lookups, host: &Name) -> Answer<IpAddr> {
    let v4 = lookups.a(host);
    // NXDOMAIN holds for every type: asking for AAAA would only cost a round trip.
    if v4 == Answer::NoDomain {
        return Answer::NoDomain;
    }
    let v6 = lookups.aaaa(host);
    match (v4, v6) {
        (Answer::Records(mut v4), Answer::Records(v6)) => {
            v4.extend(v6);
            Answer::Records(v4)
        }
        // One family is enough to deliver; the other's failure only narrows the choice.
        (Answer::Records(found), Answer::Failed(reason)) | (Answer::Failed(reason), Answer::Records(found)) => {
            log::debug!("{host}: one address family failed ({reason}), using the other");
            Answer::Records(found)
        }
        (Answer::Records(found), _) | (_, Answer::Records(found)) => Answer::Records(found),
        (Answer::Failed(reason), _) | (_, Answer::Failed(reason)) => Answer::Failed(reason),
        _ => Answer::NoRecords,
    }
}

/// The MX hosts of `domain` (or the implicit MX) with their addresses, in DNS order.
fn find_hosts(lookups: &dyn Lookups, domain: &str, name: &Name) -> Result<Vec<ResolvedHost>, RouteError> {
    let shown = printable(domain);
    let exchanges = match lookups.mx(name) {
        Answer::Records(exchanges) => exchanges,
        Answer::NoDomain => return Err(RouteError::Permanent(format!("550 5.1.2 <{shown}>: domain not found"))),
        Answer::Failed(reason) => return Err(RouteError::Temporary(format!("MX lookup for {shown} failed: {reason}"))),
        // RFC 5321 §5.1: no MX, so the domain itself is the implicit MX, with preference 0.
        Answer::NoRecords => {
            return match host_addresses(lookups, name) {
                Answer::Records(addresses) => Ok(vec![ResolvedHost { preference: 0, addresses }]),
                Answer::NoRecords | Answer::NoDomain => Err(RouteError::Permanent(format!(
                    "550 5.1.2 <{shown}>: domain not found (no MX, A or AAAA record)"
                ))),
                Answer::Failed(reason) => {
                    Err(RouteError::Temporary(format!("address lookup for {shown} failed: {reason}")))
                }
            };
        }
    };
    // RFC 7505 §3: a null MX is a single MX of preference 0 whose host is the root. A set
    // with nothing but roots (whatever the preference) is treated the same: there is no
    // host to connect to, and saying so is truer than "not found". A root beside real
    // hosts breaks the RFC ("MUST NOT advertise any other MX"); the real hosts are used.
    if exchanges.iter().all(|(_, host)| host.is_root()) {
        return Err(RouteError::Permanent(format!("556 5.1.10 <{shown}>: domain does not accept mail (null MX)")));
    }
    let mut exchanges: Vec<(u16, Name)> = exchanges.into_iter().filter(|(_, host)| !host.is_root()).collect();
    // Stable: equal preferences keep the nameserver's order until latencies reorder them.
    exchanges.sort_by_key(|(preference, _)| *preference);
    // The same host listed twice is resolved once, at its best preference.
    let mut seen: Vec<String> = Vec::new();
    exchanges.retain(|(_, host)| {
        let key = host.to_ascii().to_ascii_lowercase();
        let first = !seen.contains(&key);
        seen.push(key);
        first
    });
    if exchanges.len() > MAX_MX_HOSTS {
        log::warn!("{shown}: {} MX hosts, trying the first {MAX_MX_HOSTS}", exchanges.len());
        exchanges.truncate(MAX_MX_HOSTS);
    }

    let mut hosts = Vec::new();
    let mut unresolved = Vec::new();
    for (preference, host) in &exchanges {
        match host_addresses(lookups, host) {
            Answer::Records(addresses) => hosts.push(ResolvedHost { preference: *preference, addresses }),
            Answer::NoRecords | Answer::NoDomain => {
                log::warn!("{shown}: MX host {host} has no A or AAAA record, skipped");
                unresolved.push(format!("{host}: no address"));
            }
            Answer::Failed(reason) => {
                log::warn!("{shown}: MX host {host} did not resolve ({reason}), skipped");
                unresolved.push(format!("{host}: {reason}"));
            }
        }
    }
    if hosts.is_empty() {
        // RFC 5321 §5.1 calls this an error, but a host that does not resolve now may
        // after a DNS fix: retrying is cheaper than a wrong bounce.
        return Err(RouteError::Temporary(format!("no MX host of {shown} resolves: {}", unresolved.join("; "))));
    }
    Ok(hosts)
}

/// The pure part of [`MxResolver::route`]: hosts by preference, equal preferences by the
/// best `latencies.rank` among each host's addresses (ties keep their order), then every
/// host's addresses in turn, each address once (at its first place), with `port`.
fn order_servers(mut hosts: Vec<ResolvedHost>, port: u16, latencies: &Latencies) -> Vec<SocketAddr> {
    // Stable, and each host's rank is computed once (one lock per address).
    hosts.sort_by_cached_key(|host| {
        let best = host.addresses.iter().map(|ip| latencies.rank(*ip)).min().unwrap_or(Duration::MAX);
        (host.preference, best)
    });
    let mut servers: Vec<SocketAddr> = Vec::new();
    for ip in hosts.iter().flat_map(|host| &host.addresses) {
        let server = SocketAddr::new(*ip, port);
        // Linear, but a route has a few dozen addresses at most (MAX_MX_HOSTS hosts).
        if !servers.contains(&server) {
            servers.push(server);
        }
    }
    servers
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_resolver::proto::op::{Message, MessageType, OpCode};
    use hickory_resolver::proto::rr::rdata::{A, AAAA, MX};
    use hickory_resolver::proto::rr::{RData, Record, RecordType};
    use std::net::UdpSocket;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::thread::JoinHandle;
    use std::time::Instant;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("test address")
    }

    fn host(preference: u16, addresses: &[&str]) -> ResolvedHost {
        ResolvedHost { preference, addresses: addresses.iter().map(|text| ip(text)).collect() }
    }

    fn servers(texts: &[&str]) -> Vec<SocketAddr> {
        texts.iter().map(|text| text.parse().expect("test socket address")).collect()
    }

    // ---- the pure ordering ----

    #[test]
    fn lower_preference_comes_first_whatever_the_latency() {
        let latencies = Latencies::default();
        latencies.connected(ip("192.0.2.1"), Duration::from_secs(2));
        latencies.failed(ip("192.0.2.2"));
        let hosts = vec![host(20, &["192.0.2.3"]), host(10, &["192.0.2.1"]), host(15, &["192.0.2.2"])];
        assert_eq!(order_servers(hosts, 25, &latencies), servers(&["192.0.2.1:25", "192.0.2.2:25", "192.0.2.3:25"]));
    }

    #[test]
    fn equal_preferences_are_ordered_by_the_best_address_of_each_host() {
        let latencies = Latencies::default();
        latencies.connected(ip("192.0.2.1"), Duration::from_millis(80));
        latencies.connected(ip("192.0.2.2"), Duration::from_millis(30));
        latencies.connected(ip("192.0.2.3"), Duration::from_millis(50));
        // The first host's second address is its fastest (30 ms), and beats the second
        // host's 50 ms; its addresses keep their A-then-AAAA order.
        let hosts = vec![host(10, &["192.0.2.3"]), host(10, &["192.0.2.1", "192.0.2.2"])];
        assert_eq!(order_servers(hosts, 25, &latencies), servers(&["192.0.2.1:25", "192.0.2.2:25", "192.0.2.3:25"]));
    }

    #[test]
    fn an_unmeasured_host_is_tried_before_measured_ones_so_it_gets_measured() {
        let latencies = Latencies::default();
        latencies.connected(ip("192.0.2.1"), Duration::from_millis(1));
        let hosts = vec![host(10, &["192.0.2.1"]), host(10, &["192.0.2.2"])];
        assert_eq!(order_servers(hosts, 25, &latencies), servers(&["192.0.2.2:25", "192.0.2.1:25"]));
    }

    #[test]
    fn a_failed_host_sorts_after_measured_ones_until_it_connects_again() {
        let latencies = Latencies::default();
        latencies.connected(ip("192.0.2.1"), Duration::from_secs(30));
        latencies.failed(ip("192.0.2.2"));
        let hosts = || vec![host(10, &["192.0.2.2"]), host(10, &["192.0.2.1"])];
        assert_eq!(order_servers(hosts(), 25, &latencies), servers(&["192.0.2.1:25", "192.0.2.2:25"]));
        latencies.connected(ip("192.0.2.2"), Duration::from_millis(5));
        assert_eq!(order_servers(hosts(), 25, &latencies), servers(&["192.0.2.2:25", "192.0.2.1:25"]));
    }

    #[test]
    fn ties_keep_the_nameserver_order() {
        let latencies = Latencies::default();
        let hosts = vec![host(10, &["192.0.2.9"]), host(10, &["192.0.2.1"]), host(10, &["192.0.2.5"])];
        assert_eq!(
            order_servers(hosts, 2525, &latencies),
            servers(&["192.0.2.9:2525", "192.0.2.1:2525", "192.0.2.5:2525"])
        );
    }

    #[test]
    fn an_address_shared_by_two_hosts_appears_once_at_its_first_place() {
        let latencies = Latencies::default();
        let hosts = vec![
            host(10, &["192.0.2.1", "2001:db8::1"]),
            host(20, &["192.0.2.2", "192.0.2.1"]),
            host(30, &["2001:db8::1"]),
        ];
        assert_eq!(
            order_servers(hosts, 25, &latencies),
            servers(&["192.0.2.1:25", "[2001:db8::1]:25", "192.0.2.2:25"])
        );
    }

    /// What a name's MX, A and AAAA questions get.
    type Answers = (Answer<(u16, Name)>, Answer<IpAddr>, Answer<IpAddr>);

    /// A zone as a table: per name, what each question gets (unlisted: NXDOMAIN).
    #[derive(Default)]
    struct Table(HashMap<String, Answers>);

    impl Table {
        fn with(mut self, name: &str, mx: Answer<(u16, Name)>, a: Answer<IpAddr>, aaaa: Answer<IpAddr>) -> Table {
            self.0.insert(format!("{name}."), (mx, a, aaaa));
            self
        }

        fn get(&self, name: &Name) -> Option<&Answers> {
            self.0.get(&name.to_ascii().to_ascii_lowercase())
        }
    }

    impl Lookups for Table {
        fn mx(&self, name: &Name) -> Answer<(u16, Name)> {
            self.get(name).map_or(Answer::NoDomain, |(mx, _, _)| mx.clone())
        }

        fn a(&self, host: &Name) -> Answer<IpAddr> {
            self.get(host).map_or(Answer::NoDomain, |(_, a, _)| a.clone())
        }

        fn aaaa(&self, host: &Name) -> Answer<IpAddr> {
            self.get(host).map_or(Answer::NoDomain, |(_, _, aaaa)| aaaa.clone())
        }
    }

    fn mx(entries: &[(u16, &str)]) -> Answer<(u16, Name)> {
        Answer::Records(entries.iter().map(|(p, host)| (*p, Name::from_ascii(host).unwrap())).collect())
    }

    fn addresses(texts: &[&str]) -> Answer<IpAddr> {
        Answer::Records(texts.iter().map(|t| ip(t)).collect())
    }

    /// RFC 5321 §5.1 and RFC 7505, each branch of the module's decision tree.
    #[test]
    fn the_mx_decision_tree() {
        use Answer::{Failed, NoRecords};
        let failed = || Failed::<IpAddr>("timed out".into());
        let table = Table::default()
            .with(
                "two.test",
                mx(&[(20, "b.two.test."), (10, "a.two.test."), (30, "A.two.test.")]),
                NoRecords,
                NoRecords,
            )
            .with("a.two.test", NoRecords, addresses(&["192.0.2.1"]), addresses(&["2001:db8::1"]))
            .with("b.two.test", NoRecords, NoRecords, addresses(&["2001:db8::2"]))
            .with("implicit.test", NoRecords, addresses(&["192.0.2.9"]), failed())
            .with("empty.test", NoRecords, NoRecords, NoRecords)
            .with("shaky.test", NoRecords, failed(), NoRecords)
            .with("null.test", mx(&[(0, ".")]), NoRecords, NoRecords)
            .with("rootandreal.test", mx(&[(0, "."), (10, "a.two.test.")]), NoRecords, NoRecords)
            .with("broken.test", Failed("SERVFAIL".into()), NoRecords, NoRecords)
            .with("dangling.test", mx(&[(10, "gone.test."), (20, "b.two.test.")]), NoRecords, NoRecords)
            .with("alldangling.test", mx(&[(10, "gone.test.")]), NoRecords, NoRecords)
            .with("many.test", mx(&(1..=15).map(|p| (p, "a.two.test.")).collect::<Vec<_>>()), NoRecords, NoRecords);
        let hosts = |domain: &str| find_hosts(&table, domain, &fully_qualified(domain).unwrap());
        let (a, b) = (vec![ip("192.0.2.1"), ip("2001:db8::1")], vec![ip("2001:db8::2")]);

        // By preference; the same host listed twice (any case) resolved once, at its best.
        let found = hosts("two.test").unwrap();
        assert_eq!(
            found,
            [
                ResolvedHost { preference: 10, addresses: a.clone() },
                ResolvedHost { preference: 20, addresses: b.clone() }
            ]
        );
        // No MX: the domain itself, preference 0; one address family failing is no matter.
        assert_eq!(hosts("implicit.test").unwrap(), [ResolvedHost { preference: 0, addresses: vec![ip("192.0.2.9")] }]);
        // A root beside real hosts breaks RFC 7505; the real hosts are used.
        assert_eq!(hosts("rootandreal.test").unwrap(), [ResolvedHost { preference: 10, addresses: a }]);
        // An MX host without addresses is skipped while another resolves.
        assert_eq!(hosts("dangling.test").unwrap(), [ResolvedHost { preference: 20, addresses: b }]);
        // A zone listing many hosts is cut to the first MAX_MX_HOSTS (here all the same host).
        assert_eq!(hosts("many.test").unwrap().len(), 1);

        let permanent = |domain: &str| match hosts(domain) {
            Err(RouteError::Permanent(reply)) => reply,
            other => panic!("{domain}: {other:?}"),
        };
        let temporary = |domain: &str| match hosts(domain) {
            Err(RouteError::Temporary(reason)) => reason,
            other => panic!("{domain}: {other:?}"),
        };
        assert!(permanent("nowhere.test").starts_with("550 5.1.2 <nowhere.test>: domain not found"));
        assert!(permanent("empty.test").contains("no MX, A or AAAA record"));
        assert!(permanent("null.test").starts_with("556 5.1.10"));
        assert!(temporary("broken.test").contains("MX lookup for broken.test failed: SERVFAIL"));
        assert!(temporary("shaky.test").contains("address lookup for shaky.test failed: timed out"));
        assert!(temporary("alldangling.test").starts_with("no MX host of alldangling.test resolves"));
    }

    #[test]
    fn no_hosts_give_no_servers() {
        assert_eq!(order_servers(Vec::new(), 25, &Latencies::default()), Vec::<SocketAddr>::new());
    }

    #[test]
    fn latencies_are_smoothed_and_start_at_zero() {
        let latencies = Latencies::default();
        let address = ip("192.0.2.1");
        assert_eq!(latencies.rank(address), Duration::ZERO);
        latencies.connected(address, Duration::from_millis(100));
        assert_eq!(latencies.rank(address), Duration::from_millis(100));
        // One slow connect moves the figure a quarter of the way.
        latencies.connected(address, Duration::from_millis(500));
        assert_eq!(latencies.rank(address), Duration::from_millis(200));
        latencies.failed(address);
        assert_eq!(latencies.rank(address), Duration::MAX);
        // A failure is forgotten, not averaged, once the address connects again.
        latencies.connected(address, Duration::from_millis(40));
        assert_eq!(latencies.rank(address), Duration::from_millis(40));
        // Absurd figures saturate instead of overflowing.
        latencies.connected(address, Duration::MAX);
        latencies.connected(address, Duration::MAX);
        assert!(latencies.rank(address) > Duration::from_secs(1));
    }

    #[test]
    fn latencies_forget_everything_rather_than_grow_without_bound() {
        let latencies = Latencies::default();
        for n in 0..=MAX_TRACKED_ADDRESSES {
            let n = u32::try_from(n).expect("small");
            latencies.connected(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + n)), Duration::from_millis(7));
        }
        assert!(lock(&latencies.by_address).len() <= MAX_TRACKED_ADDRESSES);
    }

    #[test]
    fn domain_names_are_made_absolute_lower_case_and_checked() {
        assert_eq!(fully_qualified("Remote.Test").map(|name| name.to_ascii()), Some("remote.test.".to_owned()));
        assert_eq!(fully_qualified("remote.test.").map(|name| name.to_ascii()), Some("remote.test.".to_owned()));
        let idna = fully_qualified("bücher.test").map(|name| name.to_ascii());
        assert_eq!(idna, Some("xn--bcher-kva.test.".to_owned()));
        for invalid in ["", ".", "a..b", &"x".repeat(64)] {
            assert_eq!(fully_qualified(invalid), None, "{invalid:?}");
        }
    }

    #[test]
    fn address_literals_need_no_dns() {
        // A resolver pointed at a port where nothing listens: a DNS query would fail.
        let resolver = MxResolver::new(Some(unused_udp_port()), Duration::from_millis(100)).expect("resolver");
        let latencies = Latencies::default();
        assert_eq!(resolver.route("[192.0.2.7]", 25, &latencies), Ok(servers(&["192.0.2.7:25"])));
        assert_eq!(resolver.route("[IPv6:2001:db8::7]", 25, &latencies), Ok(servers(&["[2001:db8::7]:25"])));
        for invalid in ["[192.0.2.300]", "[2001:db8::7]", "[IPv6:192.0.2.1]", "[]"] {
            assert!(matches!(resolver.route(invalid, 25, &latencies), Err(RouteError::Permanent(_))), "{invalid}");
        }
    }

    #[test]
    fn a_domain_that_could_break_the_reply_line_is_refused_and_shown_harmlessly() {
        let resolver = MxResolver::new(Some(unused_udp_port()), Duration::from_millis(100)).expect("resolver");
        match resolver.route("evil.test\r\n250 ok", 25, &Latencies::default()) {
            Err(RouteError::Permanent(reply)) => assert!(!reply.contains(['\r', '\n']), "{reply:?}"),
            other => panic!("expected a permanent error, got {other:?}"),
        }
    }

    // ---- end to end, against a fake nameserver on 127.0.0.1 ----

    /// A UDP port on 127.0.0.1 that nobody answers on (bound, then released).
    fn unused_udp_port() -> SocketAddr {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
        socket.local_addr().expect("local address")
    }

    /// What the fake nameserver knows. Names are lower case and absolute.
    #[derive(Clone, Default)]
    struct Zone {
        mx: Vec<(&'static str, u16, &'static str)>,
        a: Vec<(&'static str, &'static str)>,
        aaaa: Vec<(&'static str, &'static str)>,
        /// Names that exist with none of the above (NOERROR, no answer).
        empty: Vec<&'static str>,
        /// Names answered with SERVFAIL.
        servfail: Vec<&'static str>,
        /// Names never answered (the resolver times out).
        silent: Vec<&'static str>,
        /// Names answered only once the test calls [`FakeNameserver::release`]: a lookup
        /// that stays in progress for as long as the test needs it to.
        held: Vec<&'static str>,
    }

    impl Zone {
        fn exists(&self, name: &str) -> bool {
            self.empty.contains(&name)
                || self.mx.iter().any(|(owner, _, _)| *owner == name)
                || self.a.iter().any(|(owner, _)| *owner == name)
                || self.aaaa.iter().any(|(owner, _)| *owner == name)
        }

        fn records(&self, name: &str, record_type: RecordType) -> Vec<RData> {
            let mut records = Vec::new();
            match record_type {
                RecordType::MX => {
                    for (owner, preference, exchange) in &self.mx {
                        if *owner == name {
                            let exchange = Name::from_ascii(exchange).expect("test name");
                            records.push(RData::MX(MX::new(*preference, exchange)));
                        }
                    }
                }
                RecordType::A => {
                    for (owner, address) in &self.a {
                        if *owner == name {
                            records.push(RData::A(A(address.parse().expect("test IPv4"))));
                        }
                    }
                }
                RecordType::AAAA => {
                    for (owner, address) in &self.aaaa {
                        if *owner == name {
                            records.push(RData::AAAA(AAAA(address.parse().expect("test IPv6"))));
                        }
                    }
                }
                _ => {}
            }
            records
        }

        /// Whether the answer to `request` waits for [`FakeNameserver::release`].
        fn holds(&self, request: &Message) -> bool {
            request.queries().first().is_some_and(|query| {
                let name = query.name().to_ascii().to_ascii_lowercase();
                self.held.contains(&name.as_str())
            })
        }

        /// The response to `request`, or `None` to stay silent.
        fn respond(&self, request: &Message) -> Option<Message> {
            let query = request.queries().first()?;
            let name = query.name().to_ascii().to_ascii_lowercase();
            if self.silent.contains(&name.as_str()) {
                return None;
            }
            let mut response = Message::new();
            response
                .set_id(request.id())
                .set_message_type(MessageType::Response)
                .set_op_code(OpCode::Query)
                .set_authoritative(true)
                .set_recursion_desired(request.recursion_desired())
                .add_query(query.clone());
            if self.servfail.contains(&name.as_str()) {
                response.set_response_code(ResponseCode::ServFail);
            } else if !self.exists(&name) {
                response.set_response_code(ResponseCode::NXDomain);
            } else {
                for rdata in self.records(&name, query.query_type()) {
                    response.add_answer(Record::from_rdata(query.name().clone(), 300, rdata));
                }
            }
            Some(response)
        }
    }

    /// A nameserver on 127.0.0.1 (UDP, a free port) answering from a [`Zone`] on its own
    /// thread until dropped. It logs each query as `TYPE name`.
    struct FakeNameserver {
        address: SocketAddr,
        queries: Arc<Mutex<Vec<String>>>,
        released: Arc<AtomicBool>,
        stop: Arc<AtomicBool>,
        thread: Option<JoinHandle<()>>,
    }

    impl FakeNameserver {
        fn start(zone: Zone) -> FakeNameserver {
            let socket = UdpSocket::bind("127.0.0.1:0").expect("bind the fake nameserver");
            // Short, so that the thread notices `stop` soon after the test ends.
            socket.set_read_timeout(Some(Duration::from_millis(20))).expect("read timeout");
            let address = socket.local_addr().expect("local address");
            let queries = Arc::new(Mutex::new(Vec::new()));
            let released = Arc::new(AtomicBool::new(false));
            let stop = Arc::new(AtomicBool::new(false));
            let thread = {
                let (queries, released, stop) = (Arc::clone(&queries), Arc::clone(&released), Arc::clone(&stop));
                std::thread::spawn(move || {
                    let reply = |request: &Message, peer: SocketAddr| {
                        if let Some(bytes) = zone.respond(request).and_then(|response| response.to_vec().ok()) {
                            let _ = socket.send_to(&bytes, peer);
                        }
                    };
                    let mut buffer = [0u8; 4096];
                    let mut waiting: Vec<(Message, SocketAddr)> = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        let releasing = released.load(Ordering::Relaxed);
                        if releasing {
                            for (request, peer) in waiting.drain(..) {
                                reply(&request, peer);
                            }
                        }
                        let Ok((length, peer)) = socket.recv_from(&mut buffer) else { continue };
                        let Ok(request) = Message::from_vec(&buffer[..length]) else { continue };
                        if let Some(query) = request.queries().first() {
                            lock(&queries).push(format!("{} {}", query.query_type(), query.name()));
                        }
                        if !releasing && zone.holds(&request) {
                            waiting.push((request, peer));
                        } else {
                            reply(&request, peer);
                        }
                    }
                })
            };
            FakeNameserver { address, queries, released, stop, thread: Some(thread) }
        }

        /// A resolver for lookups that get answers: its timeout is one a loaded machine
        /// meets, and costs nothing when the answer comes at once.
        fn resolver(&self) -> MxResolver {
            MxResolver::new(Some(self.address), Duration::from_secs(5)).expect("resolver")
        }

        fn queries(&self) -> Vec<String> {
            lock(&self.queries).clone()
        }

        /// Waits (a minute at most) until `query` (`TYPE name`) has arrived.
        fn wait_for_query(&self, query: &str) {
            let started = Instant::now();
            while !self.queries().iter().any(|q| q == query) {
                assert!(started.elapsed() < Duration::from_secs(60), "no {query:?} in {:?}", self.queries());
                std::thread::sleep(Duration::from_millis(10));
            }
        }

        /// Answers the held queries, and from now on answers held names at once.
        fn release(&self) {
            self.released.store(true, Ordering::Relaxed);
        }
    }

    impl Drop for FakeNameserver {
        fn drop(&mut self) {
            self.stop.store(true, Ordering::Relaxed);
            if let Some(thread) = self.thread.take() {
                let _ = thread.join();
            }
        }
    }

    fn remote_zone() -> Zone {
        Zone {
            mx: vec![
                ("remote.test.", 20, "backup.remote.test."),
                ("remote.test.", 10, "mx1.remote.test."),
                ("remote.test.", 10, "mx2.remote.test."),
                ("nullmx.test.", 0, "."),
                ("halfbroken.test.", 10, "gone.halfbroken.test."),
                ("halfbroken.test.", 20, "mx.halfbroken.test."),
                ("allbroken.test.", 10, "gone.allbroken.test."),
                ("allbroken.test.", 20, "slow.allbroken.test."),
                ("held.test.", 10, "mx1.remote.test."),
            ],
            a: vec![
                ("mx1.remote.test.", "127.0.0.2"),
                ("mx2.remote.test.", "127.0.0.3"),
                ("backup.remote.test.", "127.0.0.4"),
                ("backup.remote.test.", "127.0.0.2"),
                ("plain.test.", "127.0.0.5"),
                ("mx.halfbroken.test.", "127.0.0.6"),
            ],
            aaaa: vec![("mx1.remote.test.", "::2"), ("plain.test.", "::5"), ("v6only.test.", "::6")],
            empty: vec!["empty.test."],
            servfail: vec!["servfail.test."],
            silent: vec!["silent.test.", "slow.allbroken.test."],
            held: vec!["held.test."],
        }
    }

    #[test]
    fn mx_hosts_come_in_preference_order_each_with_its_a_then_aaaa_addresses() {
        let nameserver = FakeNameserver::start(remote_zone());
        let route = nameserver.resolver().route("remote.test", 25, &Latencies::default());
        // backup's second address is mx1's, already listed.
        assert_eq!(route, Ok(servers(&["127.0.0.2:25", "[::2]:25", "127.0.0.3:25", "127.0.0.4:25"])));
        // Every query was absolute: no search domain was tried.
        for query in nameserver.queries() {
            assert!(query.ends_with(".test."), "{query}");
        }
    }

    #[test]
    fn equal_preference_mx_hosts_are_ordered_by_connect_latency() {
        let nameserver = FakeNameserver::start(remote_zone());
        let resolver = nameserver.resolver();
        let latencies = Latencies::default();
        latencies.connected(ip("127.0.0.2"), Duration::from_millis(90));
        latencies.connected(ip("::2"), Duration::from_millis(70));
        latencies.connected(ip("127.0.0.3"), Duration::from_millis(20));
        assert_eq!(
            resolver.route("remote.test", 25, &latencies),
            Ok(servers(&["127.0.0.3:25", "127.0.0.2:25", "[::2]:25", "127.0.0.4:25"]))
        );
        // mx2 stops answering: mx1 first again, the backup still last.
        latencies.failed(ip("127.0.0.3"));
        assert_eq!(
            resolver.route("Remote.Test.", 25, &latencies),
            Ok(servers(&["127.0.0.2:25", "[::2]:25", "127.0.0.3:25", "127.0.0.4:25"]))
        );
    }

    #[test]
    fn a_domain_without_mx_is_its_own_implicit_mx() {
        let nameserver = FakeNameserver::start(remote_zone());
        assert_eq!(
            nameserver.resolver().route("plain.test", 2525, &Latencies::default()),
            Ok(servers(&["127.0.0.5:2525", "[::5]:2525"]))
        );
    }

    #[test]
    fn a_null_mx_is_a_permanent_failure() {
        let nameserver = FakeNameserver::start(remote_zone());
        assert_eq!(
            nameserver.resolver().route("nullmx.test", 25, &Latencies::default()),
            Err(RouteError::Permanent("556 5.1.10 <nullmx.test>: domain does not accept mail (null MX)".into()))
        );
        // The root is not looked up as a host.
        assert!(nameserver.queries().iter().all(|query| !query.ends_with(" .")), "{:?}", nameserver.queries());
    }

    #[test]
    fn a_domain_that_does_not_exist_is_a_permanent_failure() {
        let nameserver = FakeNameserver::start(remote_zone());
        assert_eq!(
            nameserver.resolver().route("nowhere.test", 25, &Latencies::default()),
            Err(RouteError::Permanent("550 5.1.2 <nowhere.test>: domain not found".into()))
        );
        assert_eq!(nameserver.queries(), vec!["MX nowhere.test.".to_owned()]);
    }

    #[test]
    fn a_domain_with_neither_mx_nor_address_is_a_permanent_failure() {
        let nameserver = FakeNameserver::start(remote_zone());
        assert_eq!(
            nameserver.resolver().route("empty.test", 25, &Latencies::default()),
            Err(RouteError::Permanent("550 5.1.2 <empty.test>: domain not found (no MX, A or AAAA record)".into()))
        );
        assert_eq!(nameserver.queries(), vec!["MX empty.test.", "A empty.test.", "AAAA empty.test."]);
    }

    #[test]
    fn an_aaaa_record_alone_makes_an_implicit_mx() {
        let nameserver = FakeNameserver::start(remote_zone());
        assert_eq!(nameserver.resolver().route("v6only.test", 25, &Latencies::default()), Ok(servers(&["[::6]:25"])));
    }

    #[test]
    fn servfail_and_silence_are_temporary() {
        let nameserver = FakeNameserver::start(remote_zone());
        match nameserver.resolver().route("servfail.test", 25, &Latencies::default()) {
            Err(RouteError::Temporary(reason)) => assert!(reason.contains("servfail.test"), "{reason}"),
            other => panic!("expected a temporary error, got {other:?}"),
        }
        // No answer is expected here, so the timeout can be short.
        let resolver = MxResolver::new(Some(nameserver.address), Duration::from_millis(200)).expect("resolver");
        let started = Instant::now();
        assert!(matches!(resolver.route("silent.test", 25, &Latencies::default()), Err(RouteError::Temporary(_))));
        // One try and one retry of 200 ms each, with plenty of room for a loaded machine.
        // Without our timeout each would wait hickory's default 5 s: 10 s at least.
        assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
    }

    #[test]
    fn an_mx_host_that_does_not_resolve_is_skipped() {
        let nameserver = FakeNameserver::start(remote_zone());
        assert_eq!(
            nameserver.resolver().route("halfbroken.test", 25, &Latencies::default()),
            Ok(servers(&["127.0.0.6:25"]))
        );
    }

    #[test]
    fn no_mx_host_resolving_is_temporary() {
        let nameserver = FakeNameserver::start(remote_zone());
        // The MX and the first host's NXDOMAIN must arrive, so the timeout is one a loaded
        // machine meets; the silent host then costs four of them (A and AAAA, each retried).
        let resolver = MxResolver::new(Some(nameserver.address), Duration::from_secs(3)).expect("resolver");
        match resolver.route("allbroken.test", 25, &Latencies::default()) {
            Err(RouteError::Temporary(reason)) => {
                assert!(reason.contains("gone.allbroken.test"), "{reason}");
                assert!(reason.contains("slow.allbroken.test"), "{reason}");
            }
            other => panic!("expected a temporary error, got {other:?}"),
        }
    }

    #[test]
    fn lookups_from_several_threads_do_not_queue_behind_a_slow_one() {
        let nameserver = FakeNameserver::start(remote_zone());
        // No query here may time out: the slow lookup is slow only because the nameserver
        // holds its answer back until the end of the test.
        let resolver = MxResolver::new(Some(nameserver.address), Duration::from_secs(20)).expect("resolver");
        let resolver = Arc::new(resolver);
        let slow = {
            let resolver = Arc::clone(&resolver);
            std::thread::spawn(move || resolver.route("held.test", 25, &Latencies::default()))
        };
        // The slow lookup has taken the first resolver and waits for its answer.
        nameserver.wait_for_query("MX held.test.");
        let started = Instant::now();
        let route = resolver.route("plain.test", 25, &Latencies::default());
        assert_eq!(route, Ok(servers(&["127.0.0.5:25", "[::5]:25"])));
        // Queued behind the slow lookup, this one could only have started once that one
        // gave up on its answer, after a try and a retry of 20 s each.
        assert!(started.elapsed() < Duration::from_secs(20), "waited {:?}", started.elapsed());
        assert!(!slow.is_finished(), "the slow lookup ended before its answer was released");
        nameserver.release();
        assert_eq!(slow.join().expect("slow lookup"), Ok(servers(&["127.0.0.2:25", "[::2]:25"])));
    }
}
