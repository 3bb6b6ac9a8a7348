//! The store behaves like a model (STYLE.md item 12), even across reboots, crashes and
//! injected I/O errors.
//!
//! A property test drives random sequences of operations against the real [`Store`] in a
//! temporary directory and against [`Model`], a few `BTreeMap`s and `BTreeSet`s, and
//! compares everything the store lets a caller observe after every single operation:
//! the head, every record's bytes (and that it decodes and carries its own number), the
//! tombstones, each user's mailbox in order, every reference count, the collectable
//! markers, the deliver mark and the backup mark.
//!
//! The operations are what the pipeline does to the store: persist's group commit
//! (`Accept`), the deliver stage (`Deliver`), start-up's `replay` (`Replay`, which may
//! re-apply runs already applied and must then change nothing), POP3's `DELE`s at `QUIT`
//! (`Dele`), the backup stage moving its mark and collecting (`Collect`), a clean restart
//! (`Reboot`), a `kill -9` (`Crash`), and, with the `failpoints` feature, an I/O error
//! injected into the next operation (`FailPoint`).
//!
//! What a crash may lose is exactly what the store promises to keep and no more: a
//! `remove_entries` that returned `Ok` flushed, so it and everything written before it
//! survive; deliver, collect and the backup mark do not flush (they are replayed), so
//! after a crash the store may be back at any state it passed through since the last
//! flush, and at no other — except that every commit that returned `Ok` is there too,
//! whichever state that is (it is durable in the journal, which start-up applies again).
//! The harness therefore remembers every state since the last flush, adds each commit to
//! all of them, and after a crash requires the store to equal one of them. Deliver writes
//! its mark last, not atomically with its entries, so a crash may also leave entries past
//! the mark; those are not part of the state (start-up's replay sets them again), and after
//! a crash the harness replays delivery as start-up does.
//!
//! The crash is a real one as far as the store can tell: the harness copies the store's
//! files as they are on disk at that moment (what `kill -9` leaves: everything sled has
//! written, fsync'd or not, and nothing it still holds in memory), abandons the running
//! store, and opens the copy. Merely dropping a sled `Db` in-process would not do, because
//! sled flushes when its last handle goes.
//!
//! Failpoints are process-global, so this file holds one `#[test]`. Proptest's failure
//! persistence is off so that a failure writes nothing next to this file; proptest prints
//! the minimal failing sequence instead. `PROPTEST_CASES` overrides the number of cases.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use engine::store::record::{keys, MessageRecord, Routing};
use engine::store::{Store, StoreTree};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

/// Recipients a message may have; the last is not local, so it reaches no mailbox (a
/// message sent only there is delivered to nobody and is collectable at once).
const RECIPIENTS: &[&str] = &["a@x", "ab@x", "b@x", "far@away.example"];
/// The local users, i.e. the mailboxes. `a@x` and `ab@x` share a prefix on purpose.
const USERS: &[&str] = &["a@x", "ab@x", "b@x"];
const SENDERS: &[&str] = &["", "s@y", "t@z"];

/// How many sequences, and how long each may be.
const CASES: u32 = 64;
const MAX_OPS: usize = 60;

/// One message of an `Accept` batch, before it has a number.
#[derive(Clone, Debug)]
struct Msg {
    sender: usize,
    recipients: Vec<usize>,
    body: Vec<u8>,
}

/// Which message `Dele` names: one the mailbox holds, or any number at all (one it does
/// not hold, or one already removed, which `remove_entries` must skip).
#[derive(Clone, Debug)]
enum Pick {
    Held(usize),
    Any(u64),
}

/// The failpoints inside the store itself (the others are in the pipeline stages).
#[cfg(feature = "failpoints")]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Point {
    PersistBeforeBatch,
    PersistAfterBatch,
    Pop3BeforeCommit,
}

#[cfg(feature = "failpoints")]
impl Point {
    fn name(self) -> &'static str {
        match self {
            Point::PersistBeforeBatch => "persist.before_batch",
            Point::PersistAfterBatch => "persist.after_batch",
            Point::Pop3BeforeCommit => "pop3.before_commit",
        }
    }
}

#[derive(Clone, Debug)]
enum Op {
    /// Persist commits a batch: `commit(head, records)`.
    Accept(Vec<Msg>),
    /// The deliver stage applies up to `count` pending messages (an empty run if none).
    Deliver { count: usize },
    /// Start-up's replay, reading recipients from the store, but starting `back` numbers
    /// before the mark so that already applied messages are offered again.
    Replay { back: u64 },
    /// A POP3 session's `DELE`s, committed at `QUIT`.
    Dele { user: usize, picks: Vec<Pick> },
    /// The backup stage sets its mark to `quarters`/4 of the head and collects up to it.
    Collect { quarters: u64 },
    /// A clean restart, flushing first or not (dropping sled flushes anyway, so even the
    /// unflushed one is held only to what a crash guarantees).
    Reboot { flush: bool },
    /// `kill -9`: reopen a copy of the files as they are on disk right now.
    Crash,
    /// Makes the next operation's first hit of this failpoint fail with an I/O error.
    #[cfg(feature = "failpoints")]
    FailPoint(Point),
}

/// What the store should hold. Every field is observable through the store's API.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Model {
    head: u64,
    /// Record bytes by number, exactly as committed.
    records: BTreeMap<u64, Vec<u8>>,
    tombstones: BTreeSet<u64>,
    delivered: u64,
    /// Every user's mailbox, present even when empty.
    mailboxes: BTreeMap<String, BTreeSet<u64>>,
    /// Delivered messages no mailbox holds (any more) and not yet collected.
    collectable: BTreeSet<u64>,
    backed_up: u64,
}

impl Model {
    fn new() -> Model {
        Model {
            head: 0,
            records: BTreeMap::new(),
            tombstones: BTreeSet::new(),
            delivered: 0,
            mailboxes: USERS.iter().map(|u| (u.to_string(), BTreeSet::new())).collect(),
            collectable: BTreeSet::new(),
            backed_up: 0,
        }
    }

    /// How many mailboxes hold `number`: what `references` must say.
    fn references(&self) -> BTreeMap<u64, u32> {
        let mut refs = BTreeMap::new();
        for n in self.mailboxes.values().flatten() {
            *refs.entry(*n).or_insert(0) += 1;
        }
        refs
    }

    fn holds(&self, number: u64) -> bool {
        self.mailboxes.values().any(|m| m.contains(&number))
    }

    /// The run `deliver::replay` would build for `from..=head`, from the model's records.
    fn run_from(&self, from: u64, through: u64) -> Vec<(u64, Vec<String>)> {
        if from > through {
            return Vec::new();
        }
        self.records.range(from..=through).map(|(n, bytes)| (*n, users_of(&decode(bytes).recipients))).collect()
    }

    /// `Store::deliver`: only numbers past the mark count; the mark moves to the run's end.
    fn deliver(&mut self, run: &[(u64, Vec<String>)]) {
        let Some((last, _)) = run.last() else { return };
        for (number, users) in run.iter().filter(|(n, _)| *n > self.delivered) {
            for user in users {
                self.mailboxes.get_mut(user).expect("users_of gives local users").insert(*number);
            }
            if users.is_empty() {
                self.collectable.insert(*number);
            }
        }
        self.delivered = self.delivered.max(*last);
    }

    /// The state without what a crash may leave past the deliver mark.
    fn without_undelivered(&self) -> Model {
        let mut model = self.clone();
        let delivered = model.delivered;
        for mailbox in model.mailboxes.values_mut() {
            mailbox.retain(|n| *n <= delivered);
        }
        model.collectable.retain(|n| *n <= delivered);
        model
    }

    /// The invariants `mailtool verify` checks, on the model itself (the store equals it).
    fn check_invariants(&self) -> Result<(), String> {
        if self.delivered > self.head {
            return Err(format!("model: deliver mark {} beyond head {}", self.delivered, self.head));
        }
        for n in 1..=self.head {
            if self.records.contains_key(&n) == self.tombstones.contains(&n) {
                return Err(format!("model: message {n} must have exactly one of record and tombstone"));
            }
        }
        if self.records.keys().chain(&self.tombstones).any(|n| *n > self.head) {
            return Err("model: record or tombstone beyond the head".into());
        }
        for (user, mailbox) in &self.mailboxes {
            if let Some(n) = mailbox.iter().find(|n| !self.records.contains_key(n)) {
                return Err(format!("model: {user} holds {n}, which has no record"));
            }
        }
        Ok(())
    }
}

fn record(number: u64, msg: &Msg) -> Vec<u8> {
    let record = MessageRecord {
        number,
        received_at: 1_700_000_000 + number,
        sender: SENDERS[msg.sender].to_string(),
        recipients: msg.recipients.iter().map(|&r| RECIPIENTS[r].to_string()).collect(),
        trace: format!("Received: from model by maild with ESMTP id {number}\r\n"),
        body: msg.body.clone(),
    };
    rkyv::to_bytes::<rkyv::rancor::Error>(&record).expect("serialises").to_vec()
}

fn decode(bytes: &[u8]) -> MessageRecord {
    rkyv::from_bytes::<MessageRecord, rkyv::rancor::Error>(bytes).expect("model records decode")
}

/// The mailboxes a message goes to, in recipient order, duplicates kept (the store must
/// count a user once however often RCPT named it).
fn users_of(recipients: &[String]) -> Vec<String> {
    recipients.iter().filter(|r| USERS.contains(&r.as_str())).cloned().collect()
}

/// The store's state read back through its API, in the model's shape, plus the reference
/// counts (which the model derives from its mailboxes).
fn observe(store: &Store, span: u64) -> Result<(Model, BTreeMap<u64, u32>), String> {
    let e = |what: &str, error: engine::StoreError| format!("reading {what}: {error}");
    let mut seen = Model::new();
    seen.head = store.head().map_err(|x| e("head", x))?;
    seen.delivered = store.delivered_through().map_err(|x| e("deliver mark", x))?;
    seen.backed_up = store.backed_up_through().map_err(|x| e("backup mark", x))?;
    let mut refs = BTreeMap::new();
    for n in 1..=span {
        let message = store.message(n).map_err(|x| e(&format!("message {n}"), x))?;
        // The record (or tombstone) comes first, then its routing.
        let raw = store.raw_message(n).map_err(|x| e(&format!("raw message {n}"), x))?.into_iter().next();
        match (&message, raw) {
            (Some(message), Some((key, value))) if key.first() == Some(&keys::MESSAGE) => {
                let decoded = message.to_record().map_err(|x| e(&format!("message {n}"), x))?;
                if decoded.number != n {
                    return Err(format!("message {n}: record says it is {}", decoded.number));
                }
                seen.records.insert(n, value.to_vec());
            }
            (None, None) => {}
            (None, Some((key, _))) if key.first() == Some(&keys::TOMBSTONE) => {}
            (message, raw) => {
                return Err(format!("message {n}: message() is_some={}, raw_message() = {raw:?}", message.is_some()))
            }
        }
        if store.is_tombstone(n).map_err(|x| e(&format!("tombstone {n}"), x))? {
            seen.tombstones.insert(n);
        }
        let r = store.references(n).map_err(|x| e(&format!("references {n}"), x))?;
        if r != 0 {
            refs.insert(n, r);
        }
    }
    // Nothing may hide beyond the numbers ever used.
    let count = store.message_count().map_err(|x| e("message count", x))?;
    if usize::try_from(count).ok() != Some(seen.records.len()) {
        return Err(format!("message_count() is {count} but {} records are within 1..={span}", seen.records.len()));
    }
    for user in USERS {
        let numbers = store.mailbox(user).map_err(|x| e(&format!("mailbox {user}"), x))?;
        if !numbers.windows(2).all(|w| w[0] < w[1]) {
            return Err(format!("mailbox {user} is not in ascending order: {numbers:?}"));
        }
        seen.mailboxes.insert(user.to_string(), numbers.into_iter().collect());
    }
    // The mailbox index holds no entries for anyone else, and its collectable markers.
    let mut entries = 0;
    for item in store.raw_entries(StoreTree::Mailboxes) {
        let (key, _) = item.map_err(|x| e("mailbox index", x))?;
        match key.first() {
            Some(&keys::ENTRY) => entries += 1,
            Some(&keys::UNREFERENCED) => {
                seen.collectable.insert(keys::number(&key).ok_or("short collectable key")?);
            }
            _ => {}
        }
    }
    let held: usize = seen.mailboxes.values().map(BTreeSet::len).sum();
    if entries != held {
        return Err(format!("the index has {entries} mailbox entries but the users' mailboxes hold {held}"));
    }
    Ok((seen, refs))
}

/// The fields where `expected` and `seen` differ, for a readable failure.
fn differences(expected: &Model, seen: &Model) -> String {
    let mut out = Vec::new();
    macro_rules! field {
        ($name:ident) => {
            if expected.$name != seen.$name {
                out.push(format!("{}: model {:?}, store {:?}", stringify!($name), expected.$name, seen.$name));
            }
        };
    }
    field!(head);
    field!(tombstones);
    field!(delivered);
    field!(mailboxes);
    field!(collectable);
    field!(backed_up);
    let numbers: BTreeSet<&u64> = expected.records.keys().chain(seen.records.keys()).collect();
    for n in numbers {
        match (expected.records.get(n), seen.records.get(n)) {
            (Some(a), Some(b)) if a == b => {}
            (Some(_), Some(_)) => out.push(format!("record {n}: bytes differ")),
            (Some(_), None) => out.push(format!("record {n}: in the model, missing from the store")),
            (None, _) => out.push(format!("record {n}: in the store, not in the model")),
        }
    }
    out.join("; ")
}

/// Every file and directory under `dir`, with contents.
fn read_files(dir: &Path) -> std::io::Result<BTreeMap<PathBuf, Option<Vec<u8>>>> {
    let mut files = BTreeMap::new();
    let mut pending = vec![PathBuf::new()];
    while let Some(relative) = pending.pop() {
        for entry in fs::read_dir(dir.join(&relative))? {
            let entry = entry?;
            let path = relative.join(entry.file_name());
            if entry.file_type()?.is_dir() {
                files.insert(path.clone(), None);
                pending.push(path);
            } else {
                files.insert(path, Some(fs::read(entry.path())?));
            }
        }
    }
    Ok(files)
}

/// Copies `from` to `to` as `kill -9` would leave it. sled's background flusher may write
/// while we read, so read until two readings agree: then no write fell inside the first.
fn disk_image(from: &Path, to: &Path) -> Result<(), String> {
    let mut previous = read_files(from).ok();
    for _ in 0..100 {
        let current = read_files(from).ok();
        if current.is_some() && current == previous {
            for (path, contents) in current.into_iter().flatten() {
                let target = to.join(path);
                match contents {
                    None => fs::create_dir_all(&target),
                    Some(bytes) => fs::create_dir_all(target.parent().expect("has a parent"))
                        .and_then(|()| fs::write(&target, bytes)),
                }
                .map_err(|error| format!("writing the disk image: {error}"))?;
            }
            return Ok(());
        }
        previous = current;
    }
    Err("the store's files never held still long enough to copy".into())
}

/// Arms a failpoint for one operation and disarms it when dropped, panics included.
struct Armed;

impl Armed {
    #[cfg(feature = "failpoints")]
    fn new(point: Option<Point>) -> Armed {
        engine::failpoint::configure(&point.map(|p| format!("{}=error@1", p.name())).unwrap_or_default());
        Armed
    }

    #[cfg(not(feature = "failpoints"))]
    fn new(_point: Option<Fault>) -> Armed {
        Armed
    }
}

impl Drop for Armed {
    fn drop(&mut self) {
        #[cfg(feature = "failpoints")]
        engine::failpoint::configure("");
    }
}

#[cfg(feature = "failpoints")]
type Fault = Point;
/// Without the feature nothing is ever armed.
#[cfg(not(feature = "failpoints"))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {}

/// The failpoint armed for a commit, if it is one commit hits.
#[cfg(feature = "failpoints")]
fn commit_fault(fault: Option<Fault>) -> Option<Point> {
    fault.filter(|point| matches!(point, Point::PersistBeforeBatch | Point::PersistAfterBatch))
}

#[cfg(not(feature = "failpoints"))]
fn commit_fault(fault: Option<Fault>) -> Option<Fault> {
    fault
}

/// Whether the failpoint armed for a `remove_entries` is the one it hits.
#[cfg(feature = "failpoints")]
fn quit_fault(fault: Option<Fault>) -> bool {
    fault == Some(Point::Pop3BeforeCommit)
}

#[cfg(not(feature = "failpoints"))]
fn quit_fault(fault: Option<Fault>) -> bool {
    fault.is_some()
}

/// Opens the store in `dir`, waiting out the previous handle's file lock: sled lets go of
/// it only when its background threads have dropped their last reference, a moment after
/// the `Db` itself is dropped (sled's own tests take the lock blocking for this reason).
/// A real restart is a new process, where the lock died with the old one. Returns as soon
/// as the lock is free, and gives up only after a minute: on a loaded machine those threads
/// may not run for a while.
fn reopen(dir: &Path) -> Result<Store, String> {
    const PATIENCE: std::time::Duration = std::time::Duration::from_secs(60);
    let started = std::time::Instant::now();
    loop {
        match Store::open(dir) {
            Err(engine::StoreError::Locked(_)) if started.elapsed() < PATIENCE => {
                std::thread::sleep(std::time::Duration::from_millis(10))
            }
            Err(engine::StoreError::Locked(_)) => {
                return Err(format!("{} stayed locked for {PATIENCE:?} after its store was dropped", dir.display()))
            }
            other => return other.map_err(|error| format!("reopening: {error}")),
        }
    }
}

struct Harness {
    root: tempfile::TempDir,
    generation: u32,
    store: Option<Store>,
    model: Model,
    /// Every state the store passed through since its last flush, oldest first: what it
    /// may come back as after a crash. The first is the flushed one.
    since_flush: Vec<Model>,
    /// The highest number ever handed to `commit`, failed batches included, so that the
    /// checks also cover numbers a failed batch must not have left behind.
    span: u64,
}

impl Harness {
    fn new() -> Harness {
        let root = tempfile::tempdir().expect("temp dir");
        let store = Store::open(&root.path().join("gen0")).expect("opens an empty store");
        Harness {
            root,
            generation: 0,
            store: Some(store),
            model: Model::new(),
            since_flush: vec![Model::new()],
            span: 0,
        }
    }

    fn dir(&self) -> PathBuf {
        self.root.path().join(format!("gen{}", self.generation))
    }

    fn store(&self) -> &Store {
        self.store.as_ref().expect("open")
    }

    /// The store wrote something it did not flush: remember the state it is in now.
    fn wrote(&mut self) {
        self.since_flush.push(self.model.clone());
    }

    /// The store flushed: everything so far is durable.
    fn flushed(&mut self) {
        self.since_flush = vec![self.model.clone()];
    }

    fn check(&self) -> Result<(), String> {
        self.model.check_invariants()?;
        let (seen, refs) = observe(self.store(), self.span)?;
        if seen != self.model {
            return Err(format!("store differs from the model: {}", differences(&self.model, &seen)));
        }
        if refs != self.model.references() {
            return Err(format!("references: model {:?}, store {refs:?}", self.model.references()));
        }
        Ok(())
    }

    /// After a reopen: the store must be in one of the states it passed through since its
    /// last flush (the latest one that fits becomes the model), and no other. After a
    /// crash, entries past the deliver mark do not count, and delivery is replayed.
    fn recovered(&mut self, crashed: bool) -> Result<(), String> {
        let (seen, _) = observe(self.store(), self.span)?;
        let comparable = |state: &Model| if crashed { state.without_undelivered() } else { state.clone() };
        let seen_comparable = comparable(&seen);
        match self.since_flush.iter().rposition(|state| comparable(state) == seen_comparable) {
            Some(i) => {
                self.model = self.since_flush[i].clone();
                self.since_flush = vec![self.model.clone()];
                if crashed {
                    let run = self.model.run_from(self.model.delivered + 1, self.model.head);
                    self.store().deliver(&run).map_err(|error| format!("replay after the crash: {error}"))?;
                    self.model.deliver(&run);
                    self.wrote();
                }
                Ok(())
            }
            None => Err(format!(
                "after reopening, the store is in none of the {} states it passed through since its last flush; \
                 against the latest: {}; against the flushed one: {}",
                self.since_flush.len(),
                differences(&self.model, &seen),
                differences(&self.since_flush[0], &seen),
            )),
        }
    }

    fn apply(&mut self, op: &Op, fault: Option<Fault>) -> Result<(), String> {
        match op {
            Op::Accept(msgs) => {
                let head = self.model.head;
                let numbers = head + 1..=head + u64::try_from(msgs.len()).expect("a small batch");
                let records: Vec<Vec<u8>> = numbers.clone().zip(msgs).map(|(n, m)| record(n, m)).collect();
                self.span = self.span.max(*numbers.end());
                let result = {
                    let _armed = Armed::new(fault);
                    self.store().commit(head, records.iter().map(|r| (r.as_slice(), Routing::default())).collect())
                };
                match result {
                    Ok(new_head) => {
                        if let Some(point) = commit_fault(fault) {
                            return Err(format!("commit succeeded through failpoint {point:?}"));
                        }
                        if new_head != *numbers.end() {
                            return Err(format!("commit of {} at head {head} returned head {new_head}", msgs.len()));
                        }
                        // Durable in the journal: in every state a crash may come back to.
                        for state in self.since_flush.iter_mut().chain([&mut self.model]) {
                            state.head = new_head;
                            state.records.extend(numbers.clone().zip(records.iter().cloned()));
                        }
                    }
                    // Failing after its batch, the commit was taken back by an undo frame,
                    // as durable as the commit's own: a crash finds neither.
                    Err(engine::StoreError::Io(_)) if commit_fault(fault).is_some() => {}
                    Err(error) => return Err(format!("commit failed: {error}")),
                }
            }
            Op::Deliver { count } => {
                let run = self.model.run_from(self.model.delivered + 1, self.model.head);
                let run = &run[..run.len().min(*count)];
                self.store().deliver(run).map_err(|error| format!("deliver: {error}"))?;
                self.model.deliver(run);
                self.wrote();
            }
            Op::Replay { back } => {
                // As `deliver::replay` does it, from what the store holds.
                let store = self.store();
                let mark = store.delivered_through().map_err(|error| error.to_string())?;
                let head = store.head().map_err(|error| error.to_string())?;
                let from = (mark + 1).saturating_sub(*back).max(1);
                let mut run = Vec::new();
                for n in from..=head {
                    if let Some(message) = store.message(n).map_err(|error| error.to_string())? {
                        let recipients: Vec<String> =
                            message.record().recipients.iter().map(|r| r.as_str().to_string()).collect();
                        run.push((n, users_of(&recipients)));
                    }
                }
                let expected = self.model.run_from(from, self.model.head);
                if run != expected {
                    return Err(format!("replay read the run {run:?} from the store; the model has {expected:?}"));
                }
                store.deliver(&run).map_err(|error| format!("replay: {error}"))?;
                self.model.deliver(&run);
                self.wrote();
            }
            Op::Dele { user, picks } => {
                let user = USERS[*user];
                let held: Vec<u64> = self.model.mailboxes[user].iter().copied().collect();
                let numbers: Vec<u64> = picks
                    .iter()
                    .map(|pick| match pick {
                        Pick::Held(i) if !held.is_empty() => held[i % held.len()],
                        Pick::Held(i) => u64::try_from(*i).expect("a small index"),
                        Pick::Any(n) => *n,
                    })
                    .collect();
                let result = {
                    let _armed = Armed::new(fault);
                    self.store().remove_entries(user, &numbers)
                };
                match result {
                    Ok(()) if quit_fault(fault) => {
                        return Err("remove_entries succeeded through failpoint pop3.before_commit".into())
                    }
                    Ok(()) => {
                        for n in &numbers {
                            if self.model.mailboxes.get_mut(user).expect("a user").remove(n) && !self.model.holds(*n) {
                                self.model.collectable.insert(*n);
                            }
                        }
                        self.flushed();
                    }
                    Err(engine::StoreError::Io(_)) if quit_fault(fault) => {}
                    Err(error) => return Err(format!("remove_entries({user}, {numbers:?}): {error}")),
                }
            }
            Op::Collect { quarters } => {
                let through = self.model.head * quarters / 4;
                self.store()
                    .set_backed_up_through(through)
                    .map_err(|error| format!("set_backed_up_through: {error}"))?;
                self.model.backed_up = through;
                self.wrote();
                let collected =
                    self.store().collect(through).map_err(|error| format!("collect({through}): {error}"))?;
                let due: Vec<u64> = self.model.collectable.range(..=through).copied().collect();
                if collected != due.len() {
                    return Err(format!("collect({through}) collected {collected}, the model has {due:?} due"));
                }
                if !due.is_empty() {
                    // Two batches, one per tree: records to tombstones, then the markers.
                    for n in &due {
                        self.model.records.remove(n);
                        self.model.tombstones.insert(*n);
                    }
                    self.wrote();
                    for n in &due {
                        self.model.collectable.remove(n);
                    }
                    self.wrote();
                }
            }
            Op::Reboot { flush } => {
                if *flush {
                    self.store().flush().map_err(|error| format!("flush: {error}"))?;
                    self.flushed();
                }
                drop(self.store.take());
                self.store = Some(reopen(&self.dir())?);
                self.recovered(false)?;
            }
            Op::Crash => {
                let (old, new) = (self.dir(), self.root.path().join(format!("gen{}", self.generation + 1)));
                disk_image(&old, &new)?;
                // The crashed process's memory is gone; what it flushes on the way out
                // lands in a directory nobody opens again.
                drop(self.store.take());
                fs::remove_dir_all(&old).map_err(|error| format!("removing the crashed store: {error}"))?;
                self.generation += 1;
                self.store = Some(Store::open(&new).map_err(|error| format!("opening the crash image: {error}"))?);
                self.recovered(true)?;
            }
            #[cfg(feature = "failpoints")]
            Op::FailPoint(_) => unreachable!("armed by run"),
        }
        Ok(())
    }
}

/// Runs one sequence, checking after every operation. Returns what went wrong, and where.
fn run(ops: &[Op]) -> Result<(), String> {
    #[cfg(feature = "failpoints")]
    engine::failpoint::configure("");
    let mut harness = Harness::new();
    let mut fault: Option<Fault> = None;
    for (i, op) in ops.iter().enumerate() {
        #[cfg(feature = "failpoints")]
        if let Op::FailPoint(point) = op {
            fault = Some(*point);
            continue;
        }
        let armed = fault.take();
        harness.apply(op, armed).and_then(|()| harness.check()).map_err(|error| format!("op {i} {op:?}: {error}"))?;
    }
    Ok(())
}

fn msg() -> impl Strategy<Value = Msg> {
    (0..SENDERS.len(), prop::collection::vec(0..RECIPIENTS.len(), 1..=3), prop::collection::vec(any::<u8>(), 0..48))
        .prop_map(|(sender, recipients, body)| Msg { sender, recipients, body })
}

fn accept() -> impl Strategy<Value = Op> {
    prop::collection::vec(msg(), 1..=4).prop_map(Op::Accept)
}

fn dele() -> impl Strategy<Value = Op> {
    let pick = prop_oneof![4 => (0usize..16).prop_map(Pick::Held), 1 => (0u64..12).prop_map(Pick::Any)];
    (0..USERS.len(), prop::collection::vec(pick, 0..=4)).prop_map(|(user, picks)| Op::Dele { user, picks })
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => accept(),
        4 => (0usize..6).prop_map(|count| Op::Deliver { count }),
        1 => (0u64..4).prop_map(|back| Op::Replay { back }),
        4 => dele(),
        2 => (0u64..=4).prop_map(|quarters| Op::Collect { quarters }),
        1 => any::<bool>().prop_map(|flush| Op::Reboot { flush }),
        2 => Just(Op::Crash),
    ]
}

/// A step is one operation, or (with failpoints) a failpoint followed by the operation
/// it is meant for, so that most armed failpoints are actually hit.
fn ops() -> impl Strategy<Value = Vec<Op>> {
    #[cfg(feature = "failpoints")]
    let step = prop_oneof![
        10 => op().prop_map(|op| vec![op]),
        2 => (prop_oneof![Just(Point::PersistBeforeBatch), Just(Point::PersistAfterBatch)], accept())
            .prop_map(|(point, op)| vec![Op::FailPoint(point), op]),
        1 => dele().prop_map(|op| vec![Op::FailPoint(Point::Pop3BeforeCommit), op]),
        1 => (prop_oneof![Just(Point::PersistBeforeBatch), Just(Point::PersistAfterBatch), Just(Point::Pop3BeforeCommit)], op())
            .prop_map(|(point, op)| vec![Op::FailPoint(point), op]),
    ];
    #[cfg(not(feature = "failpoints"))]
    let step = op().prop_map(|op| vec![op]);
    prop::collection::vec(step, 1..=MAX_OPS).prop_map(|steps| steps.into_iter().flatten().take(MAX_OPS).collect())
}

fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(CASES);
    ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn store_behaves_like_its_model(ops in ops()) {
        run(&ops).map_err(TestCaseError::fail)?;
    }
}
