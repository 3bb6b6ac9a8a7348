//! The deliver stage: puts committed messages into their recipients' mailboxes.
//!
//! Each run of messages is applied with its progress mark in one atomic batch, so a crash
//! either keeps both or neither, and [`replay`] at start-up re-applies whatever the
//! progress mark does not cover. Re-applying an entry is harmless (it is a set), which is
//! what makes this stage idempotent. Deliver does not flush: a lost write is replayed from
//! the fsync'd message records.

use crossbeam_channel::Receiver;

use super::backup::BackupSignal;
use super::Committed;
use crate::address::Address;
use crate::directory::MailDirectory;
use crate::failpoint;
use crate::store::{Store, StoreError};

/// The mailbox keys of a message's local recipients.
fn local_users(directory: &MailDirectory, recipients: impl IntoIterator<Item = impl AsRef<str>>) -> Vec<String> {
    recipients
        .into_iter()
        .filter_map(|r| Address::parse(r.as_ref(), None).ok())
        .filter(|a| directory.is_local_domain(a.domain()))
        .map(|a| a.key())
        .collect()
}

pub fn run(input: Receiver<Committed>, store: &Store, directory: &MailDirectory, backup: &BackupSignal) {
    while let Ok(first) = input.recv() {
        let mut run = vec![first];
        run.extend(input.try_iter().take(255));
        let deliveries: Vec<(u64, Vec<String>)> =
            run.iter().map(|c| (c.number, local_users(directory, &c.recipients))).collect();
        let last = run[run.len() - 1].number;
        let delivered = failpoint::hit("deliver.before_batch")
            .map_err(StoreError::from_io)
            .and_then(|()| store.deliver(&deliveries))
            .and_then(|()| failpoint::hit("deliver.after_batch").map_err(StoreError::from_io));
        match delivered {
            Ok(()) => backup.delivered(last),
            // The records are durable; the next start replays these from the mark.
            Err(error) => log::error!("delivering messages {}..={last} failed: {error}", run[0].number),
        }
    }
}

/// Applies every committed message the progress mark does not cover yet.
pub fn replay(store: &Store, directory: &MailDirectory) -> Result<(), StoreError> {
    let (from, head) = (store.delivered_through()? + 1, store.head()?);
    if from > head {
        return Ok(());
    }
    let started = std::time::Instant::now();
    let mut deliveries = Vec::new();
    for number in from..=head {
        let Some(message) = store.message(number)? else { continue };
        let record = message.record();
        deliveries.push((number, local_users(directory, record.recipients.iter().map(|r| r.as_str()))));
        if deliveries.len() == 1024 {
            store.deliver(&std::mem::take(&mut deliveries))?;
        }
    }
    store.deliver(&deliveries)?;
    log::info!("replayed delivery of messages {from}..={head} in {:?}", started.elapsed());
    Ok(())
}
