//! The persist stage: the single writer of message records, with group commit.
//!
//! The write path, in order (also in `docs/ARCHITECTURE.md`):
//! 1. Block for one submission, then take every other one already waiting, up to
//!    `max_batch`.
//! 2. Number them `head+1, head+2, …` and build each record (trace header included).
//! 3. Write all records and the new head as one journal frame and `fdatasync` it, once
//!    for the whole batch (`store/journal.rs`).
//! 4. Apply the same writes to sled in one atomic batch (made durable by sled later; the
//!    journal replays it after a crash).
//! 5. Only now answer each session with its number (its `250`), then pass the batch on
//!    to deliver.
//!
//! If 3 or 4 fails (or anything before 5), the batch is undone and every session gets
//! `451`/`452`; the numbers are reused by the next batch, so the sequence stays gapless.
//!
//! While a group is being committed the ways back to its sessions are listed in
//! [`InFlight`], so that if the store hangs (sled can block every later flush after one
//! write it could not finish) the daemon's watchdog can still answer them `451` before
//! it exits for a restart.

use std::time::{SystemTime, UNIX_EPOCH};

use std::sync::Mutex;

use crossbeam_channel::{Receiver, Sender};
use rkyv::rancor;
use time::OffsetDateTime;

use super::{Committed, PipelineConfig, ReplyTo, Submission};
use crate::envelope::{Body, CommitError, Envelope, Message};
use crate::failpoint;
use crate::store::record::{MessageRecord, Routing};
use crate::store::{NewRecord, Store, StoreError};
use crate::trace::received_header;

/// Where to answer the sessions whose group is being committed now.
#[derive(Default)]
pub struct InFlight {
    replies: Mutex<Vec<ReplyTo>>,
}

impl InFlight {
    fn begin(&self, batch: &[Submission]) {
        *self.lock() = batch.iter().map(|s| s.reply.clone()).collect();
    }

    fn end(&self) {
        self.lock().clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<ReplyTo>> {
        self.replies.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Answers `451` to every session of the group in flight; returns how many. Each
    /// session reads one answer only: if the commit ends after all, its `250` is never
    /// read, and the message is one a client was refused (stored or not, never half).
    pub fn abandon(&self) -> usize {
        let replies = std::mem::take(&mut *self.lock());
        replies.iter().filter(|reply| reply.send(Err(CommitError::Transient))).count()
    }
}

pub fn run(
    input: Receiver<Submission>,
    output: Sender<Committed>,
    store: &Store,
    config: &PipelineConfig,
    in_flight: &InFlight,
) {
    let mut head = match store.head() {
        Ok(head) => head,
        Err(error) => {
            log::error!("persist cannot read the head counter: {error}");
            for submission in input {
                submission.answer(Err(CommitError::Transient));
            }
            return;
        }
    };
    while let Ok(first) = input.recv() {
        let mut batch = vec![first];
        while batch.len() < config.max_batch {
            match input.try_recv() {
                Ok(submission) => batch.push(submission),
                Err(_) => break,
            }
        }
        if store.broken().is_some() {
            // Numbers on disk are unknown now: nothing more is committed until a restart.
            for submission in batch {
                submission.answer(Err(CommitError::Transient));
            }
            continue;
        }
        let sizes: Vec<u64> = batch.iter().map(|s| s.message.body.len()).collect();
        in_flight.begin(&batch);
        let started = std::time::Instant::now();
        let committed = commit(store, head, &mut batch, config).and_then(|new_head| {
            // Durable, but no client told yet: a failure here can still take it all back.
            failpoint::hit("persist.after_flush").map(|()| new_head).or_else(|error| {
                store.undo_commit(head, new_head)?;
                Err(StoreError::from_io(error))
            })
        });
        in_flight.end();
        match committed {
            Ok(new_head) => {
                config.metrics.committed(batch.len(), started.elapsed());
                // Every client first: the log lines and the hand-over to deliver can wait.
                for (offset, submission) in batch.iter().enumerate() {
                    submission.answer(Ok(head + 1 + offset as u64));
                }
                for ((offset, submission), size) in batch.into_iter().enumerate().zip(sizes) {
                    let number = head + 1 + offset as u64;
                    let envelope = &submission.message.envelope;
                    log::info!(
                        "accepted message {number} client={} user={} from=<{}> to=<{}> size={size}",
                        envelope.client_ip.to_canonical(),
                        envelope.user.as_deref().unwrap_or("-"),
                        envelope.sender,
                        envelope.recipients.join(">,<"),
                    );
                    let committed =
                        Committed { number, recipients: envelope.recipients.clone(), routing: routing(envelope) };
                    if output.send(committed).is_err() {
                        log::error!("deliver stage is gone; message {number} will be delivered at next start");
                    }
                }
                head = new_head;
            }
            Err(error) => {
                log::error!("commit of {} message(s) failed: {error}", batch.len());
                let outcome = match error {
                    StoreError::Full(_) => CommitError::Full,
                    _ => CommitError::Transient,
                };
                for submission in batch {
                    submission.answer(Err(outcome));
                }
            }
        }
    }
}

/// What the session decided at RCPT, kept with the message.
fn routing(envelope: &Envelope) -> Routing {
    Routing { authenticated: envelope.user.is_some(), routes: envelope.routes.clone() }
}

/// Commits one message the server writes itself while maild is not running (a bounce
/// from `mailtool queue delete`); the deliver stage delivers it when maild starts.
pub fn commit_offline(store: &Store, message: Message, hostname: &str) -> Result<u64, StoreError> {
    let (submission, _) = Submission::new(message);
    let head = store.head()?;
    commit(store, head, &mut [submission], &PipelineConfig::new(hostname))
}

/// Room in a record's buffer beyond its body, trace header and addresses: rkyv's fields.
const RECORD_OVERHEAD: usize = 256;

/// Steps 2–4: numbers, records, one journal frame and its sync, one batch. Bodies are
/// moved into the records (and dropped after serialising) so memory holds few copies.
fn commit(store: &Store, head: u64, batch: &mut [Submission], config: &PipelineConfig) -> Result<u64, StoreError> {
    let incoming: u64 = batch.iter().map(|s| s.message.body.len()).sum();
    store.check_space(incoming, config.min_free_space)?;
    let now = OffsetDateTime::now_utc();
    let received_at = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let mut records = Vec::with_capacity(batch.len());
    for (offset, submission) in batch.iter_mut().enumerate() {
        let number = head + 1 + offset as u64;
        let envelope = &submission.message.envelope;
        let (body, body_file) = match std::mem::replace(&mut submission.message.body, Body::Memory(Vec::new())) {
            Body::Memory(bytes) => (bytes, None),
            Body::Spooled(file) => (Vec::new(), Some(*file)),
        };
        let record = MessageRecord {
            number,
            received_at,
            sender: envelope.sender.clone(),
            recipients: envelope.recipients.clone(),
            trace: received_header(envelope, &config.hostname, number, now),
            body,
        };
        // Into a `Vec` sized for the record: an `AlignedVec` would grow by doubling (each
        // step a reallocation, a copy below the 1 MiB mmap threshold) and be copied once
        // more into the batch. The store's rkyv format is `unaligned`, so a `Vec` serves.
        let addresses: usize = record.sender.len() + record.recipients.iter().map(|r| r.len() + 8).sum::<usize>();
        let capacity = record.body.len() + record.trace.len() + addresses + RECORD_OVERHEAD;
        let bytes = rkyv::api::high::to_bytes_in::<_, rancor::Error>(&record, Vec::with_capacity(capacity))
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        records.push(NewRecord { bytes, routing: routing(envelope), body_file });
    }
    store.commit(head, records)
}
