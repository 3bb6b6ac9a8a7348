//! The pipeline: intake → validate → persist → deliver, joined by bounded channels.
//!
//! ```text
//!  SMTP sessions ──Submission──► validate ──Submission──► persist ──Committed──► deliver
//!     (daemon)        (loop and sanity checks)   (number, batch, fsync)    (mailbox indexes)
//!        ▲                                            │                          │ signal
//!        └──────────── Result<number, CommitError> ───┘                          ▼
//!                   (the session's 250 / 451 / 452)       backup (range files)   forward (to peers)
//!                                                                                        │ bounces
//!        validate ◄──────────────────────────────────────────────────────────────────────┘
//! ```
//!
//! Every channel is bounded, so a flood of clients meets backpressure (their sessions
//! wait to hand over a message) rather than unbounded memory. Stages stop when their input
//! channel is closed: dropping every intake sender drains and stops the whole pipeline.

pub mod backup;
pub mod deliver;
pub mod forward;
pub mod persist;
pub mod validate;

use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{bounded, Receiver, Sender};

use crate::envelope::{CommitError, Message};
use crate::metrics::Metrics;
use crate::store::directory::MailDirectory;
use crate::store::record::Routing;
use crate::store::{Store, StoreError};
use forward::{Forward, ForwardConfig};

/// A message from a session, with the way back to it.
pub struct Submission {
    pub message: Message,
    pub reply: ReplyTo,
}

impl Submission {
    /// Builds a submission and the receiver its session waits on.
    pub fn new(message: Message) -> (Submission, Receiver<Result<u64, CommitError>>) {
        let (reply, outcome) = bounded(1);
        (Submission { message, reply: ReplyTo::Channel(reply) }, outcome)
    }

    /// Answers the session; a session that went away is not an error.
    pub fn answer(&self, outcome: Result<u64, CommitError>) {
        self.reply.send(outcome);
    }
}

/// Where a submission's outcome goes: to a session thread that waits for it, or to an
/// event loop that serves many sessions and must not be blocked on.
#[derive(Clone)]
pub enum ReplyTo {
    Channel(Sender<Result<u64, CommitError>>),
    /// `key` tells the sink which session (and which of its commits) this answers.
    Notify {
        key: u64,
        sink: Arc<dyn CommitSink>,
    },
}

/// Takes commit outcomes for an event loop's sessions.
pub trait CommitSink: Send + Sync {
    /// Called by persist (or the watchdog); must not block.
    fn answer(&self, key: u64, outcome: Result<u64, CommitError>);
}

impl ReplyTo {
    /// Sends the outcome without blocking; false if it was not taken (a channel that
    /// holds an answer already, or whose session went away). A sink takes every answer
    /// and keeps the first per key.
    pub fn send(&self, outcome: Result<u64, CommitError>) -> bool {
        match self {
            ReplyTo::Channel(reply) => reply.try_send(outcome).is_ok(),
            ReplyTo::Notify { key, sink } => {
                sink.answer(*key, outcome);
                true
            }
        }
    }
}

/// A message now durable under its number, on its way to the mailboxes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Committed {
    pub number: u64,
    pub recipients: Vec<String>,
    pub routing: Routing,
}

#[derive(Clone, Debug)]
pub struct PipelineConfig {
    pub hostname: String,
    /// Messages whose header holds more `Received:` lines than this are refused (loop).
    pub max_hops: usize,
    /// Most messages one group commit takes.
    pub max_batch: usize,
    /// Capacity of each channel between stages.
    pub channel_capacity: usize,
    /// Free bytes the store's file system keeps in reserve; below it mail gets `452`.
    pub min_free_space: u64,
    pub forward: ForwardConfig,
    /// Counted into by the stages; served by `--metrics`.
    pub metrics: Arc<Metrics>,
}

impl PipelineConfig {
    pub fn new(hostname: impl Into<String>) -> PipelineConfig {
        let hostname = hostname.into();
        PipelineConfig {
            forward: ForwardConfig::new(&hostname),
            hostname,
            max_hops: 30,
            max_batch: 256,
            channel_capacity: 1024,
            min_free_space: 32 << 20,
            metrics: Metrics::new(),
        }
    }
}

/// Wakes a stage that waits for work. Never blocks: if a wake-up is already pending,
/// the stage will see the newest state when it runs.
#[derive(Clone)]
pub struct Signal {
    wake: Sender<()>,
}

pub struct SignalWaiter {
    woken: Receiver<()>,
}

pub fn signal() -> (Signal, SignalWaiter) {
    let (wake, woken) = bounded(1);
    (Signal { wake }, SignalWaiter { woken })
}

impl Signal {
    pub fn wake(&self) {
        let _ = self.wake.try_send(());
    }
}

impl SignalWaiter {
    /// Blocks until woken; false once every [`Signal`] is gone.
    pub fn wait(&self) -> bool {
        self.woken.recv().is_ok()
    }

    /// Like [`SignalWaiter::wait`], but also returns (true) after `timeout`.
    pub fn wait_timeout(&self, timeout: std::time::Duration) -> bool {
        !matches!(self.woken.recv_timeout(timeout), Err(crossbeam_channel::RecvTimeoutError::Disconnected))
    }

    pub fn receiver(&self) -> &Receiver<()> {
        &self.woken
    }
}

/// The sessions waiting on the pipeline for an answer, for a watchdog that gives up on a
/// store that hangs or broke.
#[derive(Clone)]
pub struct Waiting {
    in_flight: Arc<persist::InFlight>,
    queued: [Receiver<Submission>; 2],
}

impl Waiting {
    /// Answers `451` to every session waiting for a commit: the group in flight and every
    /// message still queued before persist. Returns how many were answered.
    pub fn abandon(&self) -> usize {
        let mut answered = self.in_flight.abandon();
        for queue in &self.queued {
            while let Ok(submission) = queue.try_recv() {
                submission.answer(Err(CommitError::Transient));
                answered += 1;
            }
        }
        answered
    }
}

/// The running stages.
pub struct Pipeline {
    waiting: Waiting,
    intake: Sender<Submission>,
    stages: Vec<(&'static str, JoinHandle<()>)>,
    forward: Forward,
    forward_wake: Signal,
    metrics: Arc<Metrics>,
}

impl Pipeline {
    /// Replays what a crash may have left undelivered, then starts the stages.
    pub fn start(store: Store, directory: Arc<MailDirectory>, config: PipelineConfig) -> Result<Pipeline, StoreError> {
        deliver::replay(&store, &directory)?;
        let capacity = config.channel_capacity;
        let (intake, to_validate) = bounded::<Submission>(capacity);
        let (to_persist_tx, to_persist) = bounded::<Submission>(capacity);
        let (to_deliver_tx, to_deliver) = bounded::<Committed>(capacity);
        let config = Arc::new(config);

        let mut stages = Vec::new();
        let spawn = |name: &'static str, body: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(name.into())
                .spawn(body)
                .map(|handle| (name, handle))
                .map_err(StoreError::Io)
        };
        let waiting = Waiting { in_flight: Arc::default(), queued: [to_validate.clone(), to_persist.clone()] };
        let c = config.clone();
        stages.push(spawn("validate", Box::new(move || validate::run(to_validate, to_persist_tx, &c)))?);
        let (s, c, in_flight) = (store.clone(), config.clone(), waiting.in_flight.clone());
        stages.push(spawn("persist", Box::new(move || persist::run(to_persist, to_deliver_tx, &s, &c, &in_flight)))?);
        let (backup_signal, backup_waiter) = backup::BackupSignal::new();
        let (forward_wake, forward_woken) = signal();
        let forward = Forward::start(
            store.clone(),
            directory.clone(),
            intake.clone(),
            config.forward.clone(),
            config.metrics.clone(),
            forward_wake.clone(),
            forward_woken,
        )
        .map_err(StoreError::Io)?;
        let (s, wake) = (store.clone(), forward_wake.clone());
        stages
            .push(spawn("deliver", Box::new(move || deliver::run(to_deliver, &s, &directory, &backup_signal, &wake)))?);
        let s = store.clone();
        stages.push(spawn("backup", Box::new(move || backup::run(backup_waiter, &s)))?);
        Ok(Pipeline { waiting, intake, stages, forward, forward_wake, metrics: config.metrics.clone() })
    }

    /// The sessions waiting for a commit (see [`Waiting::abandon`]).
    pub fn waiting(&self) -> Waiting {
        self.waiting.clone()
    }

    /// A sender for one more session.
    /// The counters the stages keep, for `--metrics`.
    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    pub fn intake(&self) -> Sender<Submission> {
        self.intake.clone()
    }

    /// Wakes the forward stage (e.g. after `mailtool queue flush`).
    pub fn forward_waker(&self) -> Signal {
        self.forward_wake.clone()
    }

    /// Drains and stops the stages. Every session's intake sender must be gone already;
    /// the forward stage (which submits bounces) stops first, so the intake can close.
    pub fn shutdown(self) {
        self.forward.stop();
        drop(self.intake);
        for (name, handle) in self.stages {
            if handle.join().is_err() {
                log::error!("pipeline stage {name} panicked");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::Envelope;
    use crate::users::Users;
    use std::net::{IpAddr, Ipv4Addr};

    fn message(rcpts: &[&str], body: &[u8]) -> Message {
        Message {
            envelope: Envelope {
                helo: "h".into(),
                extended: true,
                tls: false,
                user: None,
                client_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
                sender: "s@x.test".into(),
                recipients: rcpts.iter().map(|r| r.to_string()).collect(),
                routes: Vec::new(),
            },
            body: body.to_vec().into(),
        }
    }

    #[test]
    fn concurrent_submissions_get_gapless_numbers_and_reach_mailboxes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let users = Users::new(store.users_tree());
        users.add("a@x.test", "p").unwrap();
        let directory =
            Arc::new(MailDirectory::new(vec![crate::domain::Domain::parse("x.test").unwrap()], users, Arc::default()));
        let pipeline = Pipeline::start(store.clone(), directory, PipelineConfig::new("mx")).unwrap();
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let intake = pipeline.intake();
                std::thread::spawn(move || {
                    (0..25)
                        .map(|_| {
                            let (submission, outcome) = Submission::new(message(&["a@x.test"], b"hi\r\n"));
                            intake.send(submission).unwrap();
                            outcome.recv().unwrap().unwrap()
                        })
                        .collect::<Vec<u64>>()
                })
            })
            .collect();
        let mut numbers: Vec<u64> = threads.into_iter().flat_map(|t| t.join().unwrap()).collect();
        numbers.sort();
        assert_eq!(numbers, (1..=200).collect::<Vec<_>>());
        pipeline.shutdown();
        assert_eq!(store.head().unwrap(), 200);
        assert_eq!(store.mailbox("a@x.test").unwrap(), (1..=200).collect::<Vec<_>>());
        let m = store.message(7).unwrap().unwrap();
        assert!(m.record().trace.as_str().contains("id 7"));
        assert_eq!(m.record().body.as_slice(), b"hi\r\n");
    }

    #[test]
    fn a_mail_loop_is_refused_without_using_a_number() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let users = Users::new(store.users_tree());
        users.add("a@x.test", "p").unwrap();
        let directory =
            Arc::new(MailDirectory::new(vec![crate::domain::Domain::parse("x.test").unwrap()], users, Arc::default()));
        let pipeline = Pipeline::start(store.clone(), directory, PipelineConfig::new("mx")).unwrap();
        let looped = "Received: from a\r\n".repeat(31) + "\r\nbody\r\n";
        let (submission, outcome) = Submission::new(message(&["a@x.test"], looped.as_bytes()));
        pipeline.intake().send(submission).unwrap();
        assert_eq!(outcome.recv().unwrap(), Err(CommitError::TooManyHops));
        let (submission, outcome) = Submission::new(message(&["a@x.test"], b"ok\r\n"));
        pipeline.intake().send(submission).unwrap();
        assert_eq!(outcome.recv().unwrap(), Ok(1));
        pipeline.shutdown();
    }
}
