//! The forward stage: delivers queued messages to peer servers, and (with relaying on) to
//! any other domain's MX hosts, over SMTP.
//!
//! The queue (records in the store, written by deliver atomically with its progress mark)
//! is the stage's only state, so a restart of either side loses nothing. A scheduler thread
//! picks the records that are due, groups them by destination (the peer server their
//! domain routes to, or the remote domain itself), and hands each group to a worker that
//! sends them over one connection (at most [`ForwardConfig::connections_per_peer`] at once
//! per destination). A worker for a remote domain looks up its MX hosts first (DNS is slow;
//! the scheduler never waits for it) and takes the first that answers. The scheduler alone
//! applies outcomes to the queue:
//!
//! - accepted by the peer (its 250): the record leaves the queue;
//! - deferred (4xx, connection failure, no route): retried after `retry_min`, doubling up to
//!   `retry_max`, with ±10 % jitter so retries from many messages do not march in step;
//! - rejected (5xx), a domain that cannot receive mail (NXDOMAIN, null MX), or deferred
//!   past `queue_lifetime`: a bounce (RFC 3464 DSN) goes to the
//!   sender, never for a bounce (null sender); the record leaves the queue only once the
//!   bounce itself is committed.
//!
//! A crash between the peer's 250 and the queue update sends the message again after the
//! restart: one duplicate, never a loss.
//!
//! What a record's outcome does to it is [`decide`], a pure function; the scheduler reads
//! time through a clock and sends through a [`Transmitter`], so its loop (connection
//! limits, retries, expiry, bounces that fail to commit) is tested with fakes of both.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{select, unbounded, Sender};
use sled::IVec;
use time::OffsetDateTime;

use super::{Signal, SignalWaiter, Submission};
use crate::address::Address;
use crate::domain::Domain;
use crate::envelope::{Envelope, Message};
use crate::forward::client::{probe, MessageData, OutboundMessage, RecipientOutcome, SendError, SmtpConnection};
use crate::forward::dsn::{self, FailedRecipient};
use crate::forward::mx::{Latencies, MxResolver, RouteError};
use crate::forward::tls;
use crate::metrics::Metrics;
use crate::peers::PeerSource;
use crate::smtp::client::BodySource;
use crate::store::directory::MailDirectory;
use crate::store::record::{QueueRecord, QueueRoute};
use crate::store::{Store, StoredMessage};
use crate::users::Users;

#[derive(Clone, Debug)]
pub struct ForwardConfig {
    pub hostname: String,
    pub retry_min: Duration,
    pub retry_max: Duration,
    pub queue_lifetime: Duration,
    /// Connect, read and write timeout towards peers.
    pub timeout: Duration,
    pub connections_per_peer: usize,
    /// Most messages sent over one connection before it is closed.
    pub messages_per_connection: usize,
    /// Relay to domains that are neither local nor a peer's (`--submission`); `None`
    /// leaves such records deferred with "no route".
    pub relay: Option<RelayConfig>,
}

/// Where MX lookups go and which port MX hosts listen on.
#[derive(Clone, Debug)]
pub struct RelayConfig {
    /// The nameserver; `None` for the system's configuration.
    pub resolver: Option<SocketAddr>,
    pub mx_port: u16,
}

impl ForwardConfig {
    pub fn new(hostname: impl Into<String>) -> ForwardConfig {
        ForwardConfig {
            hostname: hostname.into(),
            retry_min: Duration::from_secs(5),
            retry_max: Duration::from_secs(600),
            queue_lifetime: Duration::from_secs(5 * 86400),
            timeout: Duration::from_secs(60),
            connections_per_peer: 8,
            messages_per_connection: 100,
            relay: None,
        }
    }
}

/// A running forward stage.
pub struct Forward {
    stop: Arc<AtomicBool>,
    wake: Signal,
    scheduler: JoinHandle<()>,
}

impl Forward {
    pub fn start(
        store: Store,
        directory: Arc<MailDirectory>,
        intake: Sender<Submission>,
        config: ForwardConfig,
        metrics: Arc<Metrics>,
        wake: Signal,
        woken: SignalWaiter,
    ) -> std::io::Result<Forward> {
        let stop = Arc::new(AtomicBool::new(false));
        let relay = config.relay.as_ref().map(Relay::start).transpose()?.map(Arc::new);
        let config = Arc::new(config);
        let transmitter = Arc::new(Worker { store: store.clone(), config: config.clone(), relay: relay.clone() });
        let parts = Parts { store, directory, intake, config, metrics, stop: stop.clone() };
        let scheduler = Scheduler::new(parts, relay.is_some(), transmitter, Arc::new(now_millis));
        let scheduler = std::thread::Builder::new().name("forward".into()).spawn(move || scheduler.run(woken))?;
        Ok(Forward { stop, wake, scheduler })
    }

    /// Stops scheduling, lets attempts in flight finish (they are bounded by the peer
    /// timeout), and drops the stage's intake sender.
    pub fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        self.wake.wake();
        if self.scheduler.join().is_err() {
            log::error!("forward stage panicked");
        }
    }
}

/// One DNS query's bound; hickory retries a query that gets no answer.
const DNS_TIMEOUT: Duration = Duration::from_secs(10);

/// Where a group of queue records goes.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Destination {
    /// The server of a peer that owns the domain.
    Peer(SocketAddr),
    /// Any other domain: its MX hosts, looked up by the worker.
    Remote(String),
}

/// What a worker reports for one queue record.
struct Attempt {
    key: IVec,
    record: QueueRecord,
    /// The server that answered, if one did.
    server: Option<SocketAddr>,
    outcome: Result<Vec<RecipientOutcome>, String>,
}

/// What relaying to remote domains needs, built once at start.
struct Relay {
    mx: MxResolver,
    mx_port: u16,
    /// Opportunistic STARTTLS towards MX hosts.
    tls: Arc<rustls::ClientConfig>,
    /// Connect times to MX hosts, which order those of equal preference.
    latencies: Latencies,
}

impl Relay {
    fn start(config: &RelayConfig) -> std::io::Result<Relay> {
        Ok(Relay {
            mx: MxResolver::new(config.resolver, DNS_TIMEOUT).map_err(std::io::Error::other)?,
            mx_port: config.mx_port,
            tls: tls::unverified_client().map_err(std::io::Error::other)?,
            latencies: Latencies::default(),
        })
    }
}

/// Sends a batch of queue records to one destination over one connection: the part of
/// forwarding that talks to the outside world ([`Worker`]: DNS and SMTP), behind a trait
/// so that the scheduler's decisions are tested with a recording fake.
trait Transmitter: Send + Sync {
    fn send_batch(&self, destination: &Destination, batch: Vec<(IVec, QueueRecord)>) -> Vec<Attempt>;
}

/// Milliseconds since the epoch; a fake in tests.
type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// What the scheduler works with, from the pipeline.
struct Parts {
    store: Store,
    directory: Arc<MailDirectory>,
    intake: Sender<Submission>,
    config: Arc<ForwardConfig>,
    metrics: Arc<Metrics>,
    stop: Arc<AtomicBool>,
}

struct Scheduler {
    /// Relaying to MX hosts is on.
    relaying: bool,
    store: Store,
    directory: Arc<MailDirectory>,
    intake: Sender<Submission>,
    config: Arc<ForwardConfig>,
    metrics: Arc<Metrics>,
    stop: Arc<AtomicBool>,
    transmitter: Arc<dyn Transmitter>,
    clock: Clock,
    /// Queue keys being attempted now.
    in_flight: HashSet<IVec>,
    /// Open connections per destination.
    connections: HashMap<Destination, usize>,
    /// Discovered peer domains already written to the store this run.
    /// Discovered peer domains and when this process last wrote them to the store.
    remembered_peers: HashMap<Domain, Instant>,
}

fn now_millis() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

impl Scheduler {
    fn new(parts: Parts, relaying: bool, transmitter: Arc<dyn Transmitter>, clock: Clock) -> Scheduler {
        let Parts { store, directory, intake, config, metrics, stop } = parts;
        Scheduler {
            relaying,
            store,
            directory,
            intake,
            config,
            metrics,
            stop,
            transmitter,
            clock,
            in_flight: HashSet::new(),
            connections: HashMap::new(),
            remembered_peers: HashMap::new(),
        }
    }

    fn now(&self) -> u64 {
        (self.clock)()
    }

    fn run(mut self, woken: SignalWaiter) {
        let (report, results) = unbounded::<(Destination, Vec<Attempt>)>();
        loop {
            let stopping = self.stop.load(Ordering::SeqCst);
            let next_due = if stopping { None } else { self.dispatch(&report) };
            if stopping && self.connections.is_empty() {
                break;
            }
            let wait =
                next_due.map_or(Duration::from_secs(3600), |due| Duration::from_millis(due.saturating_sub(self.now())));
            select! {
                recv(woken.receiver()) -> _ => {}
                recv(results) -> batch => {
                    if let Ok((destination, attempts)) = batch {
                        self.finish(destination, attempts);
                    }
                }
                default(wait.max(Duration::from_millis(5))) => {}
            }
        }
    }

    /// Notes in the store that a discovered peer owns `domain` now (at most hourly).
    fn remember_peer(&mut self, domain: &Domain) {
        if self.remembered_peers.get(domain).is_some_and(|at| at.elapsed() < Duration::from_secs(3600)) {
            return;
        }
        match self.store.remember_peer_domain(domain, self.now() / 1000) {
            Ok(()) => {
                self.remembered_peers.insert(domain.clone(), Instant::now());
            }
            Err(error) => log::warn!("forward: remembering peer domain {domain}: {error}"),
        }
    }

    /// Starts workers for due records; returns when the next record not started is due.
    fn dispatch(&mut self, report: &Sender<(Destination, Vec<Attempt>)>) -> Option<u64> {
        let queue = match self.store.queue() {
            Ok(queue) => queue,
            Err(error) => {
                log::error!("forward: reading the queue: {error}");
                return Some(self.now() + 1000);
            }
        };
        for peer in self.directory.peers().list() {
            if peer.source == PeerSource::Discovered {
                self.remember_peer(&peer.domain);
            }
        }
        let now = self.now();
        let mut next_due: Option<u64> = None;
        let mut groups: HashMap<Destination, Vec<(IVec, QueueRecord)>> = HashMap::new();
        for (key, record) in queue {
            if self.in_flight.contains(&key) {
                continue;
            }
            if record.next_attempt > now {
                next_due = Some(next_due.map_or(record.next_attempt, |d| d.min(record.next_attempt)));
                continue;
            }
            match self.destination(&record) {
                Ok(destination) => groups.entry(destination).or_default().push((key, record)),
                Err(error) => self.apply(key, record, Err(error), None),
            }
        }
        for (destination, mut records) in groups {
            while !records.is_empty()
                && self.connections.get(&destination).copied().unwrap_or(0) < self.config.connections_per_peer
            {
                let take = records.len().min(self.config.messages_per_connection);
                let batch: Vec<(IVec, QueueRecord)> = records.drain(..take).collect();
                for (key, _) in &batch {
                    self.in_flight.insert(key.clone());
                }
                *self.connections.entry(destination.clone()).or_default() += 1;
                let (transmitter, report, target) = (self.transmitter.clone(), report.clone(), destination.clone());
                let spawned = std::thread::Builder::new().name("forward-conn".into()).spawn(move || {
                    let attempts = transmitter.send_batch(&target, batch);
                    let _ = report.send((target, attempts));
                });
                if let Err(error) = spawned {
                    log::error!("forward: cannot start a connection thread: {error}");
                    *self.connections.entry(destination).or_default() -= 1;
                    return Some(now + 1000);
                }
            }
            if !records.is_empty() {
                // Waiting for a free connection to this peer: look again when one ends.
                next_due = Some(next_due.map_or(now + 1000, |d| d.min(now + 1000)));
            }
        }
        next_due
    }

    fn finish(&mut self, destination: Destination, attempts: Vec<Attempt>) {
        if let Some(count) = self.connections.get_mut(&destination) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.connections.remove(&destination);
            }
        }
        for attempt in attempts {
            self.in_flight.remove(&attempt.key);
            self.apply(attempt.key, attempt.record, attempt.outcome, attempt.server);
        }
    }

    /// Where a record goes now, by the route it was accepted for; why it cannot go yet.
    fn destination(&self, record: &QueueRecord) -> Result<Destination, String> {
        let domain = Domain::stored(&record.domain);
        let peer = self.directory.peers().lookup(&domain);
        let away = || format!("no route to {}: its peer server is away", record.domain);
        match (record.route, peer, self.relaying) {
            (QueueRoute::Peer | QueueRoute::Undecided, Some(peer), _) => Ok(Destination::Peer(peer.address)),
            // Accepted for a peer: it waits for the peer (or expires and bounces); what
            // was not accepted for MX relay never goes there.
            (QueueRoute::Peer, None, _) => Err(away()),
            (QueueRoute::Relay, _, true) => Ok(Destination::Remote(record.domain.clone())),
            (QueueRoute::Relay, _, false) => Err(format!("no route to {}: relaying is off", record.domain)),
            // An older maild's record: a domain whose mDNS peer is away waits for it (DNS
            // may not know the domain at all); any other goes by MX if relaying is on.
            (QueueRoute::Undecided, None, true) if !self.directory.is_peer_domain(&domain) => {
                Ok(Destination::Remote(record.domain.clone()))
            }
            (QueueRoute::Undecided, None, true) => Err(away()),
            (QueueRoute::Undecided, None, false) => Err(format!("no route to {}: not a peer domain", record.domain)),
        }
    }

    /// Applies one attempt's outcome to the queue (see the module doc).
    fn apply(
        &mut self,
        key: IVec,
        mut record: QueueRecord,
        outcome: Result<Vec<RecipientOutcome>, String>,
        server: Option<SocketAddr>,
    ) {
        if !self.store.is_queued(&key).unwrap_or(true) {
            // `mailtool queue delete` took it meanwhile (and bounced it, if asked to).
            log::info!("message {} for {} left the queue while it was being sent", record.number, record.domain);
            return;
        }
        let now = self.now();
        let backoff = |attempts| self.backoff(attempts);
        let decision = decide(&record, outcome, server, now, self.config.queue_lifetime, &backoff);
        for recipient in &decision.delivered {
            self.metrics.forwarded(&record.domain, "delivered");
            log::info!("forwarded message {} to <{recipient}> via {:?}", record.number, server);
        }
        if !decision.failed.is_empty() && !self.bounce(&record, &decision.failed) {
            // The bounce could not be committed: keep everything and try again later.
            record.attempts = record.attempts.saturating_add(1);
            record.next_attempt = now + self.backoff(record.attempts);
            record.last_error = "bounce not yet committed".into();
            self.save(&key, Some(&record));
            return;
        }
        for _ in &decision.failed {
            self.metrics.forwarded(&record.domain, "bounced");
        }
        match decision.keep {
            None => self.save(&key, None),
            Some(kept) => {
                log::info!(
                    "forward of message {} to {} deferred (attempt {}): {}",
                    kept.number,
                    kept.domain,
                    kept.attempts,
                    kept.last_error
                );
                self.save(&key, Some(&kept));
            }
        }
    }

    fn save(&self, key: &IVec, record: Option<&QueueRecord>) {
        if let Err(error) = self.store.update_queue(key, record) {
            log::error!("forward: updating the queue: {error}");
        }
    }

    /// `retry_min · 2^(attempts-1)`, capped at `retry_max`, ±10 % jitter, in milliseconds.
    fn backoff(&self, attempts: u32) -> u64 {
        let base = self.config.retry_min.as_millis() as u64;
        let exponent = attempts.saturating_sub(1).min(30);
        let delay = base.saturating_mul(1u64 << exponent).min(self.config.retry_max.as_millis() as u64);
        let jitter = crate::rng::SplitMix64::new(self.now()).below(21);
        delay.saturating_mul(90 + jitter) / 100
    }

    /// Commits a bounce for `failed` to the message's sender. True when there is nothing
    /// to bounce (see [`Bounce::Skip`]) or the bounce is durable.
    fn bounce(&self, record: &QueueRecord, failed: &[FailedRecipient]) -> bool {
        let forged = |sender: &Address| self.forged(sender);
        let message = match bounce_message(&self.store, &self.config.hostname, record.number, failed, &forged) {
            Ok(Bounce::Send(message)) => message,
            Ok(Bounce::Skip(why)) => {
                log::info!("message {} failed for {} recipient(s); no bounce: {why}", record.number, failed.len());
                return true;
            }
            Err(error) => {
                log::error!("forward: no bounce for message {}: {error}", record.number);
                return false;
            }
        };
        let sender = message.envelope.recipients.join(",");
        match submit(&self.intake, message) {
            Ok(number) => {
                log::info!("message {} bounced to <{sender}> as message {number}", record.number);
                true
            }
            Err(error) => {
                log::error!("bounce for message {} not committed: {error}", record.number);
                false
            }
        }
    }
}

impl Scheduler {
    /// Why `sender` (of mail from a client that had not authenticated) is forged: a local
    /// address without a user, or one its peer says does not exist.
    fn forged(&self, sender: &Address) -> Option<&'static str> {
        let domain = Domain::of(sender);
        if self.directory.is_local_domain(&domain) {
            return unknown_local_sender(&self.store, sender);
        }
        let peer = self.directory.peers().lookup(&domain)?;
        // Bounces are rare; a short probe keeps the scheduler from waiting long.
        match probe(peer.address, &self.config.hostname, &sender.to_string(), PROBE_TIMEOUT) {
            Ok(RecipientOutcome::Rejected(_)) => Some("the sender's peer says it does not exist (forged)"),
            _ => None,
        }
    }
}

/// Why a bounce to `sender`, at a local domain, is skipped: it has no user (forged).
pub fn unknown_local_sender(store: &Store, sender: &Address) -> Option<&'static str> {
    let users = Users::new(store.users_tree());
    (!users.exists(&sender.key()).unwrap_or(true))
        .then_some("the sender is a local address that does not exist (forged)")
}

/// How long the scheduler waits for a peer to say whether a sender exists.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// What to do about a message that failed for some recipients.
pub enum Bounce {
    /// This bounce (RFC 3464 DSN) to the sender.
    Send(Message),
    /// Nothing, for this reason.
    Skip(&'static str),
}

/// The bounce of message `number` for `failed`, addressed to its sender. None for the
/// null sender (a bounce is never bounced), nor, when the client had not authenticated,
/// for a sender `forged` says does not exist (the reason): the bounce would only be
/// backscatter.
pub fn bounce_message(
    store: &Store,
    hostname: &str,
    number: u64,
    failed: &[FailedRecipient],
    forged: &dyn Fn(&Address) -> Option<&'static str>,
) -> Result<Bounce, String> {
    let message = match store.message(number) {
        Ok(Some(message)) => message,
        Ok(None) => return Err(format!("message {number} is not in the store")),
        Err(error) => return Err(format!("message {number} unreadable: {error}")),
    };
    let original = message.record();
    let sender = original.sender.as_str();
    if sender.is_empty() {
        return Ok(Bounce::Skip("null sender"));
    }
    let authenticated = store.routing(number).map_err(|e| e.to_string())?.is_some_and(|r| r.authenticated);
    if let Some(why) = Address::parse(sender, None).ok().filter(|_| !authenticated).and_then(|a| forged(&a)) {
        return Ok(Bounce::Skip(why));
    }
    let arrival = OffsetDateTime::from_unix_timestamp(original.received_at.to_native() as i64)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    // A bounce returns the header block alone, so a large body is not read whole.
    let head = message.body_head(dsn::MAX_RETURNED_HEADERS).map_err(|e| format!("message {number} unreadable: {e}"))?;
    let parts = [original.trace.as_bytes(), &head];
    let Some(body) = dsn::bounce(hostname, sender, arrival, OffsetDateTime::now_utc(), &parts, failed) else {
        return Ok(Bounce::Skip("nothing failed"));
    };
    let envelope = Envelope {
        helo: hostname.to_string(),
        extended: true,
        tls: false,
        user: None,
        client_ip: std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
        sender: String::new(),
        recipients: vec![sender.to_string()],
        // Decided by deliver: a bounce may go by MX.
        routes: Vec::new(),
    };
    Ok(Bounce::Send(Message { envelope, body: body.into() }))
}

/// Hands a message the server itself writes to the pipeline; its number once committed.
pub fn submit(intake: &Sender<Submission>, message: Message) -> Result<u64, String> {
    let (submission, outcome) = Submission::new(message);
    intake.send(submission).map_err(|_| "the pipeline is shutting down".to_string())?;
    match outcome.recv() {
        Ok(Ok(number)) => Ok(number),
        Ok(Err(error)) => Err(error.describe().to_string()),
        Err(_) => Err("the pipeline is shutting down".to_string()),
    }
}

/// What one attempt did to a queue record (see the module doc), decided without I/O.
#[derive(Debug, PartialEq)]
struct Decision {
    /// Recipients the destination took.
    delivered: Vec<String>,
    /// Recipients to bounce: refused (5xx), or deferred past the queue lifetime.
    failed: Vec<FailedRecipient>,
    /// The record as it stays queued (the recipients still to try, one more attempt, the
    /// next attempt's time and the last error); `None` when it leaves the queue.
    keep: Option<QueueRecord>,
}

/// Applies an attempt's `outcome` (per recipient, or one error for all) to `record` at
/// `now` (milliseconds since the epoch); `backoff(attempts)` is the wait before the next.
fn decide(
    record: &QueueRecord,
    outcome: Result<Vec<RecipientOutcome>, String>,
    server: Option<SocketAddr>,
    now: u64,
    lifetime: Duration,
    backoff: &dyn Fn(u32) -> u64,
) -> Decision {
    let outcomes = match outcome {
        Ok(outcomes) if outcomes.len() == record.recipients.len() => outcomes,
        Ok(_) => vec![
            RecipientOutcome::Deferred("peer answered for the wrong number of recipients".into());
            record.recipients.len()
        ],
        Err(error) => vec![RecipientOutcome::Deferred(error); record.recipients.len()],
    };
    let expired = now.saturating_sub(record.queued_at.saturating_mul(1000)) >= lifetime.as_millis() as u64;
    let remote_mta = server.map(|s| s.to_string());
    let (mut delivered, mut failed, mut remaining, mut last_error) =
        (Vec::new(), Vec::new(), Vec::new(), String::new());
    for (recipient, outcome) in record.recipients.iter().zip(outcomes) {
        match outcome {
            RecipientOutcome::Accepted => delivered.push(recipient.clone()),
            RecipientOutcome::Rejected(reply) => failed.push(FailedRecipient {
                recipient: recipient.clone(),
                status: enhanced_code(&reply).unwrap_or_else(|| "5.0.0".into()),
                diagnostic: reply,
                remote_mta: remote_mta.clone(),
            }),
            RecipientOutcome::Deferred(reason) if expired => failed.push(FailedRecipient {
                recipient: recipient.clone(),
                status: "4.4.7".into(),
                diagnostic: format!("delivery time expired; last error: {reason}"),
                remote_mta: remote_mta.clone(),
            }),
            RecipientOutcome::Deferred(reason) => {
                remaining.push(recipient.clone());
                last_error = reason;
            }
        }
    }
    let keep = (!remaining.is_empty()).then(|| {
        let attempts = record.attempts.saturating_add(1);
        QueueRecord {
            recipients: remaining,
            attempts,
            next_attempt: now + backoff(attempts),
            last_error,
            ..record.clone()
        }
    });
    Decision { delivered, failed, keep }
}

/// What a connection thread needs.
struct Worker {
    store: Store,
    config: Arc<ForwardConfig>,
    relay: Option<Arc<Relay>>,
}

impl Transmitter for Worker {
    /// One connection to the destination, the records' messages sent over it in turn. A
    /// connection that breaks is opened again for the next message; if that fails, the
    /// rest of the batch is deferred with the reason.
    fn send_batch(&self, destination: &Destination, batch: Vec<(IVec, QueueRecord)>) -> Vec<Attempt> {
        let (servers, relay) = match self.servers(destination) {
            Ok(route) => route,
            Err(failure) => {
                let outcome = |record: &QueueRecord| match &failure {
                    RouteError::Permanent(reply) => {
                        Ok(vec![RecipientOutcome::Rejected(reply.clone()); record.recipients.len()])
                    }
                    RouteError::Temporary(reason) => Err(reason.clone()),
                };
                return batch
                    .into_iter()
                    .map(|(key, record)| Attempt { outcome: outcome(&record), key, record, server: None })
                    .collect();
            }
        };
        let mut attempts = Vec::with_capacity(batch.len());
        let mut connection: Option<(SmtpConnection, SocketAddr)> = None;
        let mut unreachable: Option<String> = None;
        for (key, record) in batch {
            if connection.is_none() && unreachable.is_none() {
                match self.open_first(&servers, relay) {
                    Ok(opened) => connection = Some(opened),
                    Err(error) => unreachable = Some(error),
                }
            }
            let server = connection.as_ref().map(|(_, server)| *server);
            let outcome = match (&mut connection, self.store.message(record.number)) {
                (None, _) => Err(unreachable.clone().unwrap_or_else(|| "no connection".into())),
                (_, Err(error)) => Err(format!("reading message {}: {error}", record.number)),
                (_, Ok(None)) => Err(format!("message {} is not in the store", record.number)),
                (Some((conn, server)), Ok(Some(message))) => {
                    let stored = message.record();
                    let trace = [stored.trace.as_bytes()];
                    let body = StoredBody(&message);
                    // To MX hosts, bare CR and bare LF go out as CRLF: a receiver that
                    // ends DATA at `\n.\n` or `\r.\r\n` must not see a second message
                    // (SMTP smuggling). Peers are maild and keep the bytes as stored. The
                    // body is read in pieces, once to measure it for MAIL, once to send.
                    let cleaned = CrlfLineEnds { parts: &trace, body: &body };
                    let data = match relay {
                        Some(_) => MessageData::streamed(&[], &cleaned),
                        None => MessageData::streamed(&trace, &body),
                    };
                    match data {
                        Err(error) => Err(format!("reading message {}: {error}", record.number)),
                        Ok(data) => {
                            let outbound = OutboundMessage {
                                sender: stored.sender.as_str(),
                                recipients: &record.recipients,
                                data,
                            };
                            conn.send(&outbound)
                                .map(|sent| sent.outcomes)
                                .map_err(|e: SendError| format!("{server}: {e}"))
                        }
                    }
                }
            };
            if connection.as_ref().is_some_and(|(c, _)| outcome.is_err() || !c.is_usable()) {
                connection = None;
            }
            attempts.push(Attempt { key, record, server, outcome });
        }
        if let Some((connection, _)) = connection {
            connection.quit();
        }
        attempts
    }
}

impl Worker {
    /// The servers to try, best first, and the relay when they are MX hosts. Peers get
    /// plain SMTP (CONTRACT §8); MX hosts get STARTTLS when they offer it.
    fn servers(&self, destination: &Destination) -> Result<(Vec<SocketAddr>, Option<&Relay>), RouteError> {
        match (destination, self.relay.as_deref()) {
            (Destination::Peer(server), _) => Ok((vec![*server], None)),
            (Destination::Remote(domain), Some(relay)) => {
                let servers = relay.mx.route(domain, relay.mx_port, &relay.latencies)?;
                log::debug!("forward: MX servers for {domain}: {servers:?}");
                Ok((servers, Some(relay)))
            }
            (Destination::Remote(domain), None) => {
                Err(RouteError::Temporary(format!("no route to {domain}: relaying is off")))
            }
        }
    }

    /// Connects to the first server that answers; MX hosts' connect times go to the
    /// relay's [`Latencies`].
    fn open_first(
        &self,
        servers: &[SocketAddr],
        relay: Option<&Relay>,
    ) -> Result<(SmtpConnection, SocketAddr), String> {
        let (helo, timeout) = (&self.config.hostname, self.config.timeout);
        let mut errors = Vec::new();
        for server in servers {
            let started = std::time::Instant::now();
            let opened = match relay {
                Some(relay) => SmtpConnection::open_opportunistic(*server, helo, timeout, &relay.tls),
                None => SmtpConnection::open(*server, helo, timeout),
            };
            match opened {
                Ok(connection) => {
                    if let Some(relay) = relay {
                        relay.latencies.connected(server.ip(), started.elapsed());
                    }
                    return Ok((connection, *server));
                }
                Err(error) => {
                    if let Some(relay) = relay {
                        relay.latencies.failed(server.ip());
                    }
                    errors.push(format!("connecting to {server}: {error}"));
                }
            }
        }
        Err(if errors.is_empty() { "no server to connect to".into() } else { errors.join("; ") })
    }
}

/// The enhanced status code in a reply line such as `550 5.1.1 <a>: User unknown`.
fn enhanced_code(reply: &str) -> Option<String> {
    let code = reply.split_whitespace().nth(1)?;
    let parts: Vec<&str> = code.split('.').collect();
    (parts.len() == 3 && parts.iter().all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit())))
        .then(|| code.to_string())
}

/// A stored message's body as the SMTP client reads it: in pieces from its file, or at
/// once from its record.
struct StoredBody<'a>(&'a StoredMessage);

impl BodySource for StoredBody<'_> {
    fn write_to(&self, each: &mut dyn FnMut(&[u8]) -> std::io::Result<()>) -> std::io::Result<()> {
        self.0.body_chunks(|chunk| each(chunk).map(|()| true))
    }
}

/// `parts` then `body` with every bare CR and bare LF made CRLF, as they go to MX hosts
/// (SMTP smuggling: a receiver must not find an end of data in it that we did not send).
struct CrlfLineEnds<'a> {
    parts: &'a [&'a [u8]],
    body: &'a dyn BodySource,
}

impl BodySource for CrlfLineEnds<'_> {
    fn write_to(&self, each: &mut dyn FnMut(&[u8]) -> std::io::Result<()>) -> std::io::Result<()> {
        let mut after_cr = false;
        let mut convert = |piece: &[u8]| -> std::io::Result<()> {
            // `piece[start..i]` is kept as it is and not yet written.
            let mut start = 0;
            for (i, &b) in piece.iter().enumerate() {
                let insert: &[u8] = match b {
                    b'\n' if !after_cr => b"\r",
                    // The CR before this byte was bare.
                    _ if after_cr && b != b'\n' => b"\n",
                    _ => b"",
                };
                if !insert.is_empty() {
                    each(&piece[start..i])?;
                    each(insert)?;
                    start = i;
                }
                after_cr = b == b'\r';
            }
            each(&piece[start..])
        };
        for part in self.parts {
            convert(part)?;
        }
        self.body.write_to(&mut convert)?;
        if after_cr {
            each(b"\n")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn what_goes_to_mx_hosts_has_crlf_line_ends_only() {
        let table: &[(&[&[u8]], &[u8])] = &[
            (&[b"a\r\nb\r\n"], b"a\r\nb\r\n"),
            (&[b"a\n.\nMAIL FROM:<x@y>\n"], b"a\r\n.\r\nMAIL FROM:<x@y>\r\n"),
            (&[b"a\r.\r\nRSET\r"], b"a\r\n.\r\nRSET\r\n"),
            (&[b"a\r\r\n"], b"a\r\n\r\n"),
            (&[b"trace\r", b"\nbody\n"], b"trace\r\nbody\r\n"),
            (&[b"x\r", b"y"], b"x\r\ny"),
        ];
        for (parts, expected) in table {
            // Given as parts, and given as a body read in pieces of every size.
            let whole: Vec<u8> = parts.concat();
            for piece in 1..=whole.len().max(1) {
                let (body, nothing) = (InPieces(&whole, piece), InPieces(&[], 1));
                for (parts, body) in [(*parts, &nothing), (&[][..], &body)] {
                    let mut out = Vec::new();
                    let source = CrlfLineEnds { parts, body };
                    let mut collect = |bytes: &[u8]| {
                        out.extend_from_slice(bytes);
                        Ok(())
                    };
                    source.write_to(&mut collect).unwrap();
                    assert_eq!(out, expected.to_vec(), "{parts:?}, pieces of {piece}");
                }
            }
        }
    }

    use super::*;
    use crate::smtp::client::data::InPieces;

    #[test]
    fn an_attempt_delivers_bounces_or_keeps_each_recipient() {
        const DAY: u64 = 86_400_000;
        let record = QueueRecord {
            number: 7,
            domain: "b.test".into(),
            route: QueueRoute::Peer,
            recipients: vec!["a@b.test".into(), "c@b.test".into()],
            attempts: 2,
            queued_at: 1_000,
            next_attempt: 0,
            last_error: String::new(),
        };
        let queued = 1_000 * 1000;
        let lifetime = Duration::from_millis(5 * DAY);
        let server: Option<SocketAddr> = Some("10.0.0.2:25".parse().unwrap());
        let backoff = |attempts: u32| u64::from(attempts) * 1000;
        let (ok, later, refused) = (
            RecipientOutcome::Accepted,
            RecipientOutcome::Deferred("451 4.3.0 busy".into()),
            RecipientOutcome::Rejected("550 5.1.1 <c@b.test>: User unknown".into()),
        );
        let run = |outcome: Result<Vec<RecipientOutcome>, String>, now: u64| {
            decide(&record, outcome, server, now, lifetime, &backoff)
        };

        // Both taken: the record leaves the queue.
        let d = run(Ok(vec![ok.clone(), ok.clone()]), queued + 1);
        assert_eq!((d.delivered.len(), d.failed.len(), d.keep), (2, 0, None));

        // One taken, one refused: a bounce with the reply's status, nothing kept.
        let d = run(Ok(vec![ok.clone(), refused.clone()]), queued + 1);
        assert_eq!(d.delivered, ["a@b.test"]);
        assert_eq!((d.failed[0].recipient.as_str(), d.failed[0].status.as_str()), ("c@b.test", "5.1.1"));
        assert_eq!(d.failed[0].remote_mta.as_deref(), Some("10.0.0.2:25"));
        assert_eq!(d.keep, None);

        // One deferred: kept with that recipient only, one attempt more, backed off.
        let d = run(Ok(vec![ok.clone(), later.clone()]), queued + 5);
        let kept = d.keep.unwrap();
        assert_eq!(kept.recipients, ["c@b.test"]);
        assert_eq!((kept.attempts, kept.next_attempt), (3, queued + 5 + 3000));
        assert_eq!(kept.last_error, "451 4.3.0 busy");
        assert_eq!((kept.route, kept.queued_at), (QueueRoute::Peer, 1_000));

        // A connection failure defers everyone, with its reason.
        let d = run(Err("connection refused".into()), queued + 5);
        assert_eq!(d.keep.unwrap().recipients.len(), 2);

        // Past the lifetime a deferral is a bounce (4.4.7) and nothing is kept.
        let d = run(Ok(vec![later.clone(), refused.clone()]), queued + 5 * DAY);
        assert_eq!(d.keep, None);
        let statuses: Vec<&str> = d.failed.iter().map(|f| f.status.as_str()).collect();
        assert_eq!(statuses, ["4.4.7", "5.1.1"]);
        assert!(d.failed[0].diagnostic.contains("delivery time expired; last error: 451 4.3.0 busy"));

        // A peer that answers for the wrong number of recipients is not believed.
        let d = run(Ok(vec![ok.clone()]), queued + 1);
        assert!(d.delivered.is_empty());
        assert!(d.keep.unwrap().last_error.contains("wrong number of recipients"));

        // A reply without an enhanced code bounces as 5.0.0.
        let d = run(Ok(vec![RecipientOutcome::Rejected("554 no".into()), ok]), queued + 1);
        assert_eq!(d.failed[0].status, "5.0.0");
    }

    /// Plays the outcomes it is given, one per record, and records what it was asked.
    #[derive(Default)]
    struct FakeTransmitter {
        outcomes: std::sync::Mutex<std::collections::VecDeque<Result<Vec<RecipientOutcome>, String>>>,
        asked: std::sync::Mutex<Vec<(Destination, Vec<u64>)>>,
    }

    impl Transmitter for FakeTransmitter {
        fn send_batch(&self, destination: &Destination, batch: Vec<(IVec, QueueRecord)>) -> Vec<Attempt> {
            let numbers = batch.iter().map(|(_, record)| record.number).collect();
            self.asked.lock().unwrap().push((destination.clone(), numbers));
            let mut outcomes = self.outcomes.lock().unwrap();
            batch
                .into_iter()
                .map(|(key, record)| {
                    let outcome = outcomes.pop_front().expect("an outcome for every record sent");
                    Attempt { key, record, server: Some(PEER.parse().unwrap()), outcome }
                })
                .collect()
        }
    }

    const PEER: &str = "127.0.0.1:1";

    /// The scheduler over a real store, with a fake transmitter, a fake clock and an
    /// intake whose commits succeed or fail as scripted: no socket, no sleep.
    #[test]
    fn the_scheduler_limits_connections_retries_backs_off_expires_and_bounces() {
        use crate::directory::Accepted;
        use crate::envelope::CommitError;
        use crate::peers::PeerTable;
        use std::sync::atomic::AtomicU64;
        use std::sync::Mutex;

        const HOUR: u64 = 3_600_000;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let peers = Arc::new(PeerTable::default());
        peers.add_static(&Domain::parse("peer.test").unwrap(), PEER.parse().unwrap());
        let directory = Arc::new(MailDirectory::new(
            vec![Domain::parse("local.test").unwrap()],
            Users::new(store.users_tree()),
            peers,
        ));
        for body in ["one", "two", "three"] {
            let envelope = Envelope {
                helo: "c.test".into(),
                extended: true,
                tls: false,
                user: None,
                client_ip: std::net::Ipv4Addr::LOCALHOST.into(),
                sender: "s@remote.example".into(),
                recipients: vec!["a@peer.test".into()],
                routes: vec![Accepted::Peer],
            };
            let body = format!("Subject: {body}\r\n\r\n{body}\r\n").into_bytes().into();
            let message = Message { envelope, body };
            crate::pipeline::persist::commit_offline(&store, message, "mx.test").unwrap();
        }
        crate::pipeline::deliver::replay(&store, &directory).unwrap();
        assert_eq!(store.queue().unwrap().len(), 3);

        // The intake commits bounces as scripted and keeps what it was given.
        let (intake, submissions) = unbounded::<Submission>();
        let commits: Arc<Mutex<Vec<Result<u64, CommitError>>>> = Arc::default();
        let bounces: Arc<Mutex<Vec<Message>>> = Arc::default();
        let responder = {
            let (commits, bounces) = (commits.clone(), bounces.clone());
            std::thread::spawn(move || {
                for submission in submissions {
                    let outcome = commits.lock().unwrap().remove(0);
                    let Submission { message, reply } = submission;
                    bounces.lock().unwrap().push(message);
                    reply.send(outcome);
                }
            })
        };

        let start = now_millis();
        let time = Arc::new(AtomicU64::new(start));
        let clock: Clock = {
            let time = time.clone();
            Arc::new(move || time.load(Ordering::SeqCst))
        };
        let fake = Arc::new(FakeTransmitter::default());
        let config = ForwardConfig {
            retry_min: Duration::from_secs(60),
            retry_max: Duration::from_secs(3600),
            queue_lifetime: Duration::from_secs(24 * 3600),
            connections_per_peer: 1,
            messages_per_connection: 1,
            ..ForwardConfig::new("mx.test")
        };
        let parts = Parts {
            store: store.clone(),
            directory,
            intake,
            config: Arc::new(config),
            metrics: Metrics::new(),
            stop: Arc::default(),
        };
        let mut scheduler = Scheduler::new(parts, false, fake.clone(), clock);
        let (report, results) = unbounded();
        // One round: dispatch, the one batch it starts, its outcomes applied.
        let round = |scheduler: &mut Scheduler, outcome: Result<Vec<RecipientOutcome>, String>| {
            fake.outcomes.lock().unwrap().push_back(outcome);
            let next_due = scheduler.dispatch(&report);
            let (destination, attempts) = results.recv_timeout(Duration::from_secs(30)).expect("a batch was sent");
            scheduler.finish(destination, attempts);
            assert!(results.try_recv().is_err(), "one connection per peer at a time");
            next_due
        };
        let queued = |number: u64| store.queue().unwrap().into_iter().map(|(_, r)| r).find(|r| r.number == number);
        let later = || Ok(vec![RecipientOutcome::Deferred("451 4.3.0 busy".into())]);
        let refused = || Ok(vec![RecipientOutcome::Rejected("550 5.1.1 <a@peer.test>: User unknown".into())]);

        // Three due, one connection allowed: message 1 goes, the others wait a second.
        let next_due = round(&mut scheduler, later());
        assert_eq!(next_due, Some(start + 1000));
        let peer = Destination::Peer(PEER.parse().unwrap());
        assert_eq!(fake.asked.lock().unwrap()[0], (peer.clone(), vec![1]));
        let kept = queued(1).unwrap();
        assert_eq!((kept.attempts, kept.last_error.as_str()), (1, "451 4.3.0 busy"));
        assert!((start + 54_000..=start + 66_000).contains(&kept.next_attempt), "60 s ± 10 %");

        // Message 2 is taken and leaves the queue; message 1 is not due yet.
        round(&mut scheduler, Ok(vec![RecipientOutcome::Accepted]));
        assert!(queued(2).is_none());
        assert!(queued(1).is_some());

        // Message 3 is refused, but its bounce cannot be committed: it stays, retried.
        commits.lock().unwrap().push(Err(CommitError::Transient));
        round(&mut scheduler, refused());
        let kept = queued(3).unwrap();
        assert_eq!((kept.attempts, kept.last_error.as_str()), (1, "bounce not yet committed"));

        // Two days later message 1 is deferred again, past its lifetime: a 4.4.7 bounce.
        time.store(start + 48 * HOUR, Ordering::SeqCst);
        commits.lock().unwrap().push(Ok(10));
        round(&mut scheduler, later());
        assert!(queued(1).is_none());
        // Message 3, refused again, now gets its bounce committed and leaves.
        commits.lock().unwrap().push(Ok(11));
        round(&mut scheduler, refused());
        assert!(store.queue().unwrap().is_empty());
        assert_eq!(scheduler.dispatch(&report), None, "nothing left to send or wait for");

        let asked: Vec<Vec<u64>> = fake.asked.lock().unwrap().iter().map(|(_, numbers)| numbers.clone()).collect();
        assert_eq!(asked, [vec![1], vec![2], vec![3], vec![1], vec![3]]);
        let bounces = bounces.lock().unwrap();
        let texts: Vec<String> = bounces
            .iter()
            .map(|m| String::from_utf8_lossy(m.body.in_memory().unwrap_or_default()).into_owned())
            .collect();
        assert_eq!(texts.len(), 3);
        for bounce in bounces.iter() {
            assert_eq!(
                (bounce.envelope.sender.as_str(), &bounce.envelope.recipients[..]),
                ("", &["s@remote.example".to_string()][..])
            );
        }
        assert!(texts[0].contains("5.1.1") && texts[2].contains("5.1.1"), "{}", texts[0]);
        assert!(texts[1].contains("4.4.7") && texts[1].contains("451 4.3.0 busy"), "{}", texts[1]);
        drop(scheduler);
        responder.join().unwrap();
    }

    #[test]
    fn enhanced_codes_are_read_from_replies() {
        assert_eq!(enhanced_code("550 5.1.1 <a@b>: User unknown").as_deref(), Some("5.1.1"));
        assert_eq!(enhanced_code("554 Transaction failed"), None);
        assert_eq!(enhanced_code(""), None);
    }
}
