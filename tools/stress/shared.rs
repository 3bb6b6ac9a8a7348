//! Shared counters.

use super::*;

pub(super) struct Config {
    pub(super) smtp: String,
    pub(super) rcpts: Vec<String>,
    /// The domains of the recipients: local domains of the server.
    pub(super) domains: Vec<String>,
    pub(super) distinct_rcpts: usize,
    pub(super) deadline: Instant,
}

#[derive(Default)]
pub(super) struct Shared {
    pub(super) operations: AtomicU64,
    pub(super) messages: AtomicU64,
    pub(super) sessions: AtomicU64,
    pub(super) connect_failures: AtomicU64,
    pub(super) error_replies: AtomicU64,
    pub(super) mismatches: AtomicU64,
    pub(super) printed: AtomicU64,
    pub(super) numbers: Mutex<HashSet<u64>>,
    pub(super) cases: Mutex<BTreeMap<&'static str, u64>>,
    /// Suppresses the stderr report (unit tests).
    pub(super) quiet: bool,
}

impl Shared {
    pub(super) fn mismatch(&self, connection: usize, command: &str, expected: &str, got: &str) {
        self.mismatches.fetch_add(1, Ordering::Relaxed);
        if !self.quiet && self.printed.fetch_add(1, Ordering::Relaxed) < MAX_PRINTED {
            eprintln!("mismatch: connection {connection}: {command:?}: expected {expected}; got {got}");
        }
    }

    pub(super) fn case(&self, name: &'static str) {
        *self.cases.lock().unwrap_or_else(|e| e.into_inner()).entry(name).or_default() += 1;
    }
}

/// The totals of a run.
#[derive(Debug)]
pub(crate) struct Summary {
    pub(super) operations: u64,
    pub(super) messages: u64,
    pub(super) sessions: u64,
    pub(super) connect_failures: u64,
    pub(super) error_replies: u64,
    pub(super) mismatches: u64,
    pub(super) highest: u64,
    pub(super) cases: BTreeMap<&'static str, u64>,
    pub(super) unfinished: u64,
    pub(super) seconds: f64,
}
