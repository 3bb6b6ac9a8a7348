//! The deliver stage: puts committed messages into their recipients' mailboxes, and
//! messages for peer domains into the outbound queue (for the forward stage).
//!
//! Each run of messages is applied write by write with its progress mark last, so a crash
//! keeps the mark only with every write before it, and [`replay`] at start-up re-applies
//! whatever the progress mark does not cover. A run that fails is replayed the same way at
//! once (until it succeeds), before any later run can move the mark past it. Every write
//! sets a value (an entry, a queue record, a reference count), so re-applying is harmless,
//! which is what makes this stage idempotent. Deliver does not flush: a lost write is
//! replayed from the durable message records.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crossbeam_channel::Receiver;

use super::backup::BackupSignal;
use super::{Committed, Signal};
use crate::address::Address;
use crate::directory::Accepted;
use crate::domain::Domain;
use crate::failpoint;
use crate::store::directory::MailDirectory;
use crate::store::record::{QueueRecord, QueueRoute, Routing};
use crate::store::{Delivery, Store, StoreError};

/// Where one message goes: local recipients to their mailboxes, the others into the
/// outbound queue, one record per destination domain (recipients in RCPT order), sent
/// the way each was accepted at RCPT (`routing`; `None` for a message of an older maild).
fn plan(
    directory: &MailDirectory,
    number: u64,
    recipients: impl IntoIterator<Item = impl AsRef<str>>,
    routing: Option<&Routing>,
) -> Delivery {
    let queued_at = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let mut delivery = Delivery { number, users: Vec::new(), forwards: Vec::new() };
    for (index, recipient) in recipients.into_iter().enumerate() {
        let Ok(address) = Address::parse(recipient.as_ref(), None) else { continue };
        let domain = Domain::of(&address);
        if directory.is_local_domain(&domain) {
            delivery.users.push(address.key());
            continue;
        }
        let route = match routing.map(|r| r.routes.get(index)) {
            None => QueueRoute::Undecided,
            Some(Some(Accepted::Relay)) => QueueRoute::Relay,
            // Accepted for a peer, or for a domain that was local then: never MX.
            Some(Some(Accepted::Peer | Accepted::Local)) => QueueRoute::Peer,
            // Mail the server wrote itself (a bounce): to the peer if one owns the
            // domain or did, else by MX.
            Some(None) if directory.is_peer_domain(&domain) => QueueRoute::Peer,
            Some(None) => QueueRoute::Relay,
        };
        match delivery.forwards.iter_mut().find(|f| f.domain == domain.as_str()) {
            Some(forward) => {
                forward.recipients.push(address.to_string());
                // One record per domain: if the peer came or went between two RCPTs,
                // the stricter route holds for all.
                if route != forward.route {
                    forward.route = QueueRoute::Peer;
                }
            }
            None => delivery.forwards.push(QueueRecord {
                number,
                domain: domain.to_string(),
                route,
                recipients: vec![address.to_string()],
                attempts: 0,
                queued_at,
                next_attempt: 0,
                last_error: String::new(),
            }),
        }
    }
    delivery
}

pub fn run(
    input: Receiver<Committed>,
    store: &Store,
    directory: &MailDirectory,
    backup: &BackupSignal,
    forward: &Signal,
) {
    while let Ok(first) = input.recv() {
        let mut run = vec![first];
        run.extend(input.try_iter().take(255));
        let deliveries: Vec<Delivery> =
            run.iter().map(|c| plan(directory, c.number, &c.recipients, Some(&c.routing))).collect();
        let forwarding = deliveries.iter().any(|d| !d.forwards.is_empty());
        let last = run[run.len() - 1].number;
        let delivered = failpoint::hit("deliver.before_batch")
            .map_err(StoreError::from_io)
            .and_then(|()| store.deliver_all(&deliveries))
            .and_then(|()| failpoint::hit("deliver.after_batch").map_err(StoreError::from_io));
        match delivered {
            Ok(()) => {
                backup.delivered(last);
                if forwarding {
                    forward.wake();
                }
            }
            Err(error) => {
                log::error!("delivering messages {}..={last} failed: {error}", run[0].number);
                catch_up(store, directory, last, backup, forward);
            }
        }
    }
}

/// After a failed run: the progress mark did not move, and nothing later may move it
/// past the failed messages. So replay from the mark (which covers the failed run and
/// whatever was committed since) until it succeeds, waiting longer after each failure.
fn catch_up(store: &Store, directory: &MailDirectory, through: u64, backup: &BackupSignal, forward: &Signal) {
    let mut wait = Duration::from_millis(50);
    loop {
        std::thread::sleep(wait);
        match replay_through(store, directory, through) {
            Ok(()) => break,
            Err(error) => log::error!("delivery replay failed, retrying in {wait:?}: {error}"),
        }
        wait = (wait * 2).min(Duration::from_secs(5));
    }
    if let Ok(head) = store.delivered_through() {
        backup.delivered(head);
    }
    forward.wake();
}

/// Applies every committed message the progress mark does not cover yet.
pub fn replay(store: &Store, directory: &MailDirectory) -> Result<(), StoreError> {
    replay_through(store, directory, store.head()?)
}

/// Applies messages from the progress mark up to `head`, which must be durable (at
/// start-up: the store's head; while running: the highest number persist handed over,
/// never one whose batch persist may still undo).
fn replay_through(store: &Store, directory: &MailDirectory, head: u64) -> Result<(), StoreError> {
    let from = store.delivered_through()? + 1;
    if from > head {
        return Ok(());
    }
    let started = std::time::Instant::now();
    let mut deliveries = Vec::new();
    for number in from..=head {
        let Some(message) = store.message(number)? else { continue };
        let record = message.record();
        let routing = store.routing(number)?;
        deliveries.push(plan(directory, number, record.recipients.iter().map(|r| r.as_str()), routing.as_ref()));
        if deliveries.len() == 1024 {
            store.deliver_all(&std::mem::take(&mut deliveries))?;
        }
    }
    store.deliver_all(&deliveries)?;
    log::info!("replayed delivery of messages {from}..={head} in {:?}", started.elapsed());
    Ok(())
}
