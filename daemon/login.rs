//! Password checks for POP3 and SMTP AUTH: a bounded resource, throttled per client
//! address and per account.
//!
//! An argon2 check needs about 19 MiB and tens of milliseconds of a core, so a crowd of
//! wrong passwords must neither run at once nor be free to repeat. Three rules:
//!
//! - at most [`Logins::slots`] checks compute at the same time in the whole process (one
//!   per core); the others wait for a slot;
//! - every attempt takes a turn on its address's and its account's schedule *before* it is
//!   checked: after a failure the next attempt from that address, or for that account, may
//!   start only [`spacing`] later, on whatever connection it comes, so parallel connections
//!   gain nothing; more than a few attempts waiting for one address or account are refused
//!   at once ([`Verdict::Throttled`]) instead of holding a thread;
//! - a failed attempt is answered no sooner than [`FAILURE_ANSWER`] after it started (RFC
//!   1939 §8; CONTRACT §6 "after about a second"). A success is answered at once and does
//!   not wipe the address's record, so one valid account does not reset the guessing count.
//!
//! Sessions close a connection after [`engine::sasl::MAX_FAILURES_PER_CONNECTION`] failures. One
//! table serves both protocols, so guessing over SMTP counts for POP3 too.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use engine::metrics::Metrics;
use engine::sasl::Verdict;
use engine::users::Users;

/// How long a failure is answered after its attempt started.
const FAILURE_ANSWER: Duration = Duration::from_secs(1);
/// The longest spacing between two attempts of one address or account.
const MAX_SPACING: Duration = Duration::from_secs(8);
/// Failures older than this are forgotten.
const FAILURE_MEMORY: Duration = Duration::from_secs(600);
/// Attempts under way or waiting, per client address and per account.
const MAX_PENDING_PER_ADDRESS: u32 = 4;
const MAX_PENDING_PER_ACCOUNT: u32 = 8;
/// An attempt whose turn is further away than this is refused rather than kept waiting.
const MAX_WAIT: Duration = Duration::from_secs(30);
/// Entries kept per table; past it, expired entries are dropped, then new ones not made.
const MAX_ENTRIES: usize = 20_000;

/// The wait between two attempts after `failures` recent failures: none before the first,
/// a second for the next three, then doubling up to [`MAX_SPACING`].
fn spacing(failures: u32) -> Duration {
    match failures {
        0 => Duration::ZERO,
        1..=3 => Duration::from_secs(1),
        n => Duration::from_secs(1 << (n - 3).min(3)).min(MAX_SPACING),
    }
}

/// One address's or one account's recent history.
#[derive(Debug)]
struct Record {
    failures: u32,
    last_failure: Instant,
    /// When the next attempt may start.
    next_turn: Instant,
    pending: u32,
}

impl Record {
    fn new(now: Instant) -> Record {
        Record { failures: 0, last_failure: now, next_turn: now, pending: 0 }
    }

    fn expired(&self, now: Instant) -> bool {
        self.pending == 0 && now.duration_since(self.last_failure) >= FAILURE_MEMORY && now >= self.next_turn
    }
}

struct Table<K> {
    records: HashMap<K, Record>,
}

impl<K> Default for Table<K> {
    fn default() -> Self {
        Table { records: HashMap::new() }
    }
}

impl<K: std::hash::Hash + Eq + Clone> Table<K> {
    /// The record for `key`, made if there is room; `None` when the table is full of live
    /// records (then the other table still throttles).
    fn get(&mut self, key: &K, now: Instant) -> Option<&mut Record> {
        if !self.records.contains_key(key) {
            if self.records.len() >= MAX_ENTRIES {
                self.records.retain(|_, r| !r.expired(now));
            }
            if self.records.len() >= MAX_ENTRIES {
                return None;
            }
            self.records.insert(key.clone(), Record::new(now));
        }
        let record = self.records.get_mut(key)?;
        if record.pending == 0 && now.duration_since(record.last_failure) >= FAILURE_MEMORY {
            record.failures = 0;
        }
        Some(record)
    }
}

#[derive(Default)]
struct Throttle {
    addresses: Table<IpAddr>,
    accounts: Table<String>,
}

pub struct Logins {
    users: Users,
    metrics: Arc<Metrics>,
    throttle: Mutex<Throttle>,
    /// Free argon2 slots, and the condition a waiting check sleeps on.
    free_slots: Mutex<usize>,
    slot_freed: Condvar,
    slots: usize,
}

/// A turn taken on the schedules of one address and one account; given back on drop.
struct Turn<'a> {
    logins: &'a Logins,
    address: IpAddr,
    account: String,
    start: Instant,
    failed: bool,
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        let mut throttle = self.logins.lock_throttle();
        let throttle = &mut *throttle;
        let now = Instant::now();
        for record in
            [throttle.addresses.records.get_mut(&self.address), throttle.accounts.records.get_mut(&self.account)]
                .into_iter()
                .flatten()
        {
            record.pending = record.pending.saturating_sub(1);
            if self.failed {
                record.failures = record.failures.saturating_add(1);
                record.last_failure = now;
                record.next_turn = record.next_turn.max(now + spacing(record.failures));
            } else {
                // Not the failure it was presumed to be: only the earlier failures space
                // the next attempt.
                record.next_turn = record.next_turn.min(now + spacing(record.failures));
            }
        }
    }
}

impl Logins {
    pub fn new(users: Users, metrics: Arc<Metrics>) -> Logins {
        let slots = std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, 4);
        Logins {
            users,
            metrics,
            throttle: Mutex::default(),
            free_slots: Mutex::new(slots),
            slot_freed: Condvar::new(),
            slots,
        }
    }

    fn lock_throttle(&self) -> MutexGuard<'_, Throttle> {
        self.throttle.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Checks a password on behalf of a client, waiting for its turn and a slot; a failure
    /// is answered after [`FAILURE_ANSWER`].
    ///
    /// Failures and refusals are logged, one line each, for fail2ban
    /// (`contrib/fail2ban/filter.d/maild.conf`).
    pub fn check(&self, client: IpAddr, mechanism: &str, user: &str, password: &str) -> Verdict {
        let client_ip = client.to_canonical();
        let Some(mut turn) = self.take_turn(client, user) else {
            log::warn!("auth throttled: client={client_ip} mechanism={mechanism} user={user:?}");
            return Verdict::Throttled;
        };
        if let Some(wait) = turn.start.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let key = {
            let _slot = self.slot();
            self.users.authenticate(user, password)
        };
        match key {
            Some(key) => Verdict::Accepted(key),
            None => {
                log::warn!("auth failed: client={client_ip} mechanism={mechanism} user={user:?}");
                self.metrics.auth_failed(mechanism);
                turn.failed = true;
                let answer_at = turn.start + FAILURE_ANSWER;
                drop(turn);
                if let Some(wait) = answer_at.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
                Verdict::Rejected
            }
        }
    }

    /// Reserves the next turn of `client` and `user`, or `None` when too many attempts of
    /// either are pending or the turn is too far away.
    fn take_turn(&self, client: IpAddr, user: &str) -> Option<Turn<'_>> {
        let address = crate::server::client_key(client);
        let account = user.trim().to_ascii_lowercase();
        let now = Instant::now();
        let mut throttle = self.lock_throttle();
        let throttle = &mut *throttle;
        let mut start = now;
        let mut records = Vec::with_capacity(2);
        if let Some(record) = throttle.addresses.get(&address, now) {
            if record.pending >= MAX_PENDING_PER_ADDRESS {
                return None;
            }
            records.push(record);
        }
        if let Some(record) = throttle.accounts.get(&account, now) {
            if record.pending >= MAX_PENDING_PER_ACCOUNT {
                return None;
            }
            records.push(record);
        }
        for record in &records {
            start = start.max(record.next_turn);
        }
        if start.duration_since(now) > MAX_WAIT {
            return None;
        }
        for record in records {
            record.pending += 1;
            // Presumed a failure until it is known: the next attempt waits behind this one.
            record.next_turn = start + spacing(record.failures.saturating_add(1));
        }
        Some(Turn { logins: self, address, account, start, failed: false })
    }

    /// Waits for one of the argon2 slots.
    fn slot(&self) -> Slot<'_> {
        let mut free = self.free_slots.lock().unwrap_or_else(|e| e.into_inner());
        while *free == 0 {
            free = self.slot_freed.wait(free).unwrap_or_else(|e| e.into_inner());
        }
        *free -= 1;
        Slot { logins: self }
    }
}

struct Slot<'a> {
    logins: &'a Logins,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let mut free = self.logins.free_slots.lock().unwrap_or_else(|e| e.into_inner());
        *free = (*free + 1).min(self.logins.slots);
        self.logins.slot_freed.notify_one();
    }
}
