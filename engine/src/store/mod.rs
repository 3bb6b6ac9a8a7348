//! The store: sled trees holding numbered message records, mailbox indexes and users.
//!
//! Trees and their writers (see `docs/ARCHITECTURE.md`):
//! - `messages`: the head counter and the message records. Only the persist stage writes
//!   it, always the records and the new head as one journal frame, atomic through the
//!   journal (`journal.rs`).
//! - `mailboxes`: per-user mailbox entries, per-message reference counts and the deliver
//!   stage's progress mark, which deliver writes last, so that replaying from it after a
//!   crash sets whatever the crash cut short; also the backup stage's progress mark.
//! - `users`: user records, written by `mailtool`.
//!
//! sled is not durable per write (it flushes every 500 ms in the background): a write is
//! durable only once [`Store::flush`] returns. New messages take a shorter way: a commit
//! is one frame of the intake journal (`journal.rs`), `fdatasync`'d, before it goes into
//! sled, and that is what persist waits for before any `250`; opening the store applies
//! the frames sled lost. Durable means across a power cut: the sled used here is patched
//! (`vendor/sled/MAILD-PATCH.md`) so that its flush ends in `fdatasync` of the log, with
//! every blob file and directory entry it depends on fsync'd before.

pub mod bodies;
pub mod directory;
pub mod journal;
pub mod maildrop;
pub mod record;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rkyv::rancor;
use sled::{Batch, IVec, Tree};

use crate::domain::Domain;
use crate::failpoint;
use bodies::{BodyDir, SpoolFile};
use journal::{AppendError, Journal, Op};
use record::{keys, ArchivedMessageRecord, LegacyQueueRecord, MessageRecord, QueueRecord, Routing};

/// What can go wrong in the store, by what the caller should do about it.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No space left: the client should retry later (`452 4.3.1`).
    #[error("store is full: {0}")]
    Full(std::io::Error),
    /// Any other I/O error (`451 4.3.0`).
    #[error("store I/O error: {0}")]
    Io(std::io::Error),
    /// Another process (a running maild) holds the store.
    #[error("store {0} is in use by another process (is maild running on it?)")]
    Locked(PathBuf),
    /// Bytes on disk that do not decode.
    #[error("corrupt store: {0}")]
    Corrupt(String),
    /// A failed write that could not be taken back: what is on disk is no longer known
    /// while running (sled refuses every later write after one it could not finish).
    /// Only a restart, which recovers from the log, can go on.
    #[error("store failed and cannot undo it: {0}")]
    Broken(String),
}

impl StoreError {
    pub(crate) fn from_sled(error: sled::Error) -> StoreError {
        match error {
            sled::Error::Io(io) => StoreError::from_io(io),
            other => StoreError::Corrupt(other.to_string()),
        }
    }

    pub fn from_io(io: std::io::Error) -> StoreError {
        // ENOSPC and EDQUOT: out of space, as opposed to broken.
        match io.kind() {
            std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded => StoreError::Full(io),
            _ => StoreError::Io(io),
        }
    }
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// A handle to the store; cheap to clone and share between stages.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    messages: Tree,
    mailboxes: Tree,
    users: Tree,
    /// Domains a discovered peer has owned (soft state: not backed up or verified).
    peer_domains: Tree,
    /// What the last maild to run here served, for `mailtool` while maild is stopped
    /// (soft state like `peer_domains`).
    served: Tree,
    dir: PathBuf,
    /// Bodies too large to keep in a record (`bodies.rs`).
    bodies: BodyDir,
    /// Serialises read-modify-write updates of the mailbox index (deliver and POP3 QUIT
    /// both adjust reference counts).
    index_lock: Arc<Mutex<()>>,
    /// Held by a backup while it copies records; collection waits for it.
    collect_lock: Arc<Mutex<()>>,
    /// Commits and flushes in progress, for a watchdog to see a store that hangs.
    in_progress: Arc<InProgress>,
    /// Why the store became [`StoreError::Broken`], once it has.
    broken: Arc<Mutex<Option<String>>>,
    /// Where commits become durable (`store/journal`); its lock also orders commits.
    journal: Arc<Mutex<Journal>>,
}

/// The start times of the store writes that callers are waiting for now.
#[derive(Default)]
struct InProgress {
    started: Mutex<std::collections::BTreeMap<u64, Instant>>,
    next: std::sync::atomic::AtomicU64,
}

/// Removes its write from [`InProgress`] when the write returns, however it returns.
struct Watched<'a> {
    registry: &'a InProgress,
    id: u64,
}

impl InProgress {
    fn watch(&self) -> Watched<'_> {
        let id = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.started.lock().unwrap_or_else(|e| e.into_inner()).insert(id, Instant::now());
        Watched { registry: self, id }
    }

    fn oldest(&self) -> Option<Duration> {
        // Ids grow with time, so the first entry is the oldest.
        let started = self.started.lock().unwrap_or_else(|e| e.into_inner());
        started.first_key_value().map(|(_, since)| since.elapsed())
    }
}

impl Drop for Watched<'_> {
    fn drop(&mut self) {
        self.registry.started.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.id);
    }
}

/// The host name and local domains a maild runs with ([`Store::record_served`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Served {
    pub hostname: String,
    pub domains: Vec<String>,
}

impl Served {
    pub fn serves(&self, domain: &Domain) -> bool {
        self.domains.iter().any(|d| Domain::stored(d) == *domain)
    }
}

const SERVED_HOSTNAME: &[u8] = b"hostname";
const SERVED_DOMAINS: &[u8] = b"domains";

/// What the deliver stage does with one committed message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    pub number: u64,
    /// Local users (mailbox keys) who get it.
    pub users: Vec<String>,
    /// Queue records for peer domains.
    pub forwards: Vec<QueueRecord>,
}

fn encode(record: &QueueRecord) -> Result<Vec<u8>> {
    rkyv::to_bytes::<rancor::Error>(record).map(|b| b.to_vec()).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// The three trees, for the raw access backups and `verify` need.
#[derive(Clone, Copy, Debug)]
pub enum StoreTree {
    Messages,
    Mailboxes,
    Users,
}

/// See [`Store::index_snapshot`].
pub struct IndexSnapshot {
    pub head: u64,
    pub mailboxes: Vec<(IVec, IVec)>,
    pub users: Vec<(IVec, IVec)>,
}

/// Bytes free for an unprivileged writer (`f_bavail`, as `df` shows it) on the file
/// system that holds `path`.
pub(crate) fn available_space(path: &Path) -> std::io::Result<u64> {
    let stats = rustix::fs::statvfs(path)?;
    Ok(stats.f_bavail.saturating_mul(stats.f_frsize))
}

/// A message record read from the store, validated, readable in place; its body is in
/// the record or, for a large one, in its own file.
pub struct StoredMessage {
    bytes: IVec,
    body_file: Option<BodyFile>,
}

/// Where a stored message's body is when it is not in its record.
struct BodyFile {
    dir: BodyDir,
    number: u64,
    len: u64,
}

impl StoredMessage {
    /// A message as the store would read it back, for tests of what reads messages.
    pub fn from_record(record: &MessageRecord) -> StoredMessage {
        let bytes = rkyv::to_bytes::<rancor::Error>(record).expect("a record serialises");
        StoredMessage { bytes: IVec::from(bytes.as_slice()), body_file: None }
    }

    /// The record; its `body` is empty when the body is in a file (read it with the
    /// `body_*` methods, which serve both).
    pub fn record(&self) -> &ArchivedMessageRecord {
        // Validated in `Store::message`, so this cannot fail; keep it total anyway.
        rkyv::access::<ArchivedMessageRecord, rancor::Error>(&self.bytes).expect("validated at load")
    }

    /// The whole record, its body read from its file if it has one.
    pub fn to_record(&self) -> Result<MessageRecord> {
        let mut record = rkyv::deserialize::<MessageRecord, rancor::Error>(self.record())
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        if self.body_file.is_some() {
            record.body = self.read_body().map_err(StoreError::from_io)?.into_owned();
        }
        Ok(record)
    }

    pub fn body_len(&self) -> u64 {
        match &self.body_file {
            Some(file) => file.len,
            None => self.record().body.len() as u64,
        }
    }

    /// The stored message's length: trace header plus body.
    pub fn stored_len(&self) -> u64 {
        self.record().trace.len() as u64 + self.body_len()
    }

    /// True if the body is kept in its own file.
    pub fn has_body_file(&self) -> bool {
        self.body_file.is_some()
    }

    /// Opens the body for reading; a body file must be there, as long as the record
    /// says. A reply can check this before it begins, and read the body after.
    pub fn open_body(&self) -> std::io::Result<OpenBody<'_>> {
        match &self.body_file {
            Some(file) => bodies::open_body(&file.dir, file.number, file.len).map(OpenBody::File),
            None => Ok(OpenBody::Record(&self.record().body)),
        }
    }

    /// Calls `each` with the body's bytes in order (see [`OpenBody::chunks`]).
    pub fn body_chunks(&self, each: impl FnMut(&[u8]) -> std::io::Result<bool>) -> std::io::Result<()> {
        self.open_body()?.chunks(each)
    }

    /// Up to `max` octets from the start of the body.
    pub fn body_head(&self, max: usize) -> std::io::Result<std::borrow::Cow<'_, [u8]>> {
        if self.body_file.is_none() {
            let body = self.record().body.as_slice();
            return Ok(std::borrow::Cow::Borrowed(&body[..body.len().min(max)]));
        }
        let mut head = Vec::new();
        self.body_chunks(|chunk| {
            head.extend_from_slice(&chunk[..chunk.len().min(max - head.len())]);
            Ok(head.len() < max)
        })?;
        Ok(std::borrow::Cow::Owned(head))
    }

    /// The whole body in memory (a large one is read from its file).
    pub fn read_body(&self) -> std::io::Result<std::borrow::Cow<'_, [u8]>> {
        self.body_head(usize::MAX)
    }
}

/// A stored message's body, opened: the record's bytes, or its file.
pub enum OpenBody<'a> {
    Record(&'a [u8]),
    File(std::fs::File),
}

impl OpenBody<'_> {
    /// Calls `each` with the body's bytes in order (one slice for a body in the record,
    /// pieces of a file's), until the end or until `each` returns false.
    pub fn chunks(self, mut each: impl FnMut(&[u8]) -> std::io::Result<bool>) -> std::io::Result<()> {
        match self {
            OpenBody::File(file) => bodies::read_chunks(file, each),
            OpenBody::Record(bytes) => each(bytes).map(drop),
        }
    }
}

/// A new message for [`Store::commit`]: its record, its routing, and its body's spool
/// file when the body is not in the record.
pub struct NewRecord {
    pub bytes: Vec<u8>,
    pub routing: Routing,
    pub body_file: Option<SpoolFile>,
}

impl<R: Into<Vec<u8>>> From<(R, Routing)> for NewRecord {
    fn from((bytes, routing): (R, Routing)) -> NewRecord {
        NewRecord { bytes: bytes.into(), routing, body_file: None }
    }
}

/// sled's page cache: what stays in memory of the records read and written lately. Every
/// record is also on disk, so a small cache costs reads, not safety.
pub const DEFAULT_CACHE: u64 = 16 << 20;

impl Store {
    /// Opens (creating if needed) the store in `dir/store`, with the default cache.
    pub fn open(dir: &Path) -> Result<Store> {
        Store::open_with_cache(dir, DEFAULT_CACHE)
    }

    /// Opens the store with a page cache of about `cache_bytes` (`maild --cache-size`).
    pub fn open_with_cache(dir: &Path, cache_bytes: u64) -> Result<Store> {
        let path = dir.join("store");
        // Private (only the owner may look at everyone's mail) and durable.
        crate::durable::create_dir_all(dir).map_err(StoreError::from_io)?;
        let db = sled::Config::new()
            .path(&path)
            .cache_capacity(cache_bytes)
            .mode(sled::Mode::HighThroughput)
            .open()
            .map_err(|e| match e {
                // sled reports its file lock as an I/O error "WouldBlock".
                sled::Error::Io(ref io) if io.kind() == std::io::ErrorKind::WouldBlock => {
                    StoreError::Locked(path.clone())
                }
                sled::Error::Io(ref io) if io.to_string().contains("lock") => StoreError::Locked(path.clone()),
                other => StoreError::from_sled(other),
            })?;
        // sled fsyncs what it creates inside `store/`; the entry of `store/` itself is ours.
        crate::durable::sync_dir(dir).map_err(StoreError::from_io)?;
        let bodies = BodyDir::open(&path).map_err(StoreError::from_io)?;
        let tree = |name: &str| db.open_tree(name).map_err(StoreError::from_sled);
        let messages = tree("messages")?;
        Self::move_counters(&db, &messages)?;
        let applied = Self::read_counter(&messages, keys::JOURNAL)?;
        let (journal, frames) = Journal::open(&path.join("journal"), applied).map_err(StoreError::from_io)?;
        let store = Store {
            messages,
            mailboxes: tree("mailboxes")?,
            users: tree("users")?,
            peer_domains: tree("peer_domains")?,
            served: tree("served")?,
            db,
            dir: dir.to_path_buf(),
            bodies,
            index_lock: Arc::default(),
            collect_lock: Arc::default(),
            in_progress: Arc::default(),
            broken: Arc::default(),
            journal: Arc::new(Mutex::new(journal)),
        };
        store.replay_journal(applied, frames)?;
        store.upgrade_queue()?;
        store.sweep_bodies()?;
        Ok(store)
    }

    /// Applies the journal's frames that sled lost (a crash or power cut before sled's
    /// log had them), makes them durable in sled, and lets the journal start over.
    ///
    /// The journal starts over only after sled is flushed, so its first frame is never
    /// more than one past sled's `~journal`. If it is, sled lost frames it had made durable, and
    /// they are in neither: opening is refused, loudly, rather than serving a store with a
    /// hole where acknowledged messages were.
    fn replay_journal(&self, applied: u64, frames: Vec<journal::Frame>) -> Result<()> {
        let (count, first) = (frames.len(), frames.first().map(|f| f.id));
        if let Some(first) = first.filter(|&first| first > applied.saturating_add(1)) {
            return Err(StoreError::Corrupt(format!(
                "sled lost journal frames {}..={} after it had flushed them, and the journal no \
                 longer holds them: acknowledged messages may be missing from the store (copies \
                 are in the backup range files, and in any mailtool backup to restore from)",
                applied + 1,
                first - 1
            )));
        }
        for frame in frames {
            self.apply_frame(frame.ops, frame.id)?;
        }
        self.flush()?;
        self.lock_journal().restart();
        if let Some(first) = first {
            log::info!("store: {count} journal frame(s) from {first} on applied (head now {})", self.head()?);
        }
        Ok(())
    }

    /// Applies a journal frame's writes to the `messages` tree one by one, its id last.
    /// Not as one sled batch, on purpose: a batch costs two log buffers written and synced
    /// at once (`pin_log`), and the atomicity is the journal's. sled recovers a prefix of
    /// its log, so after a crash it holds every frame up to its `~journal` whole and at most the
    /// start of the next one, which the replay then applies again, whole.
    fn apply_frame(&self, ops: Vec<Op>, id: u64) -> Result<()> {
        for op in ops {
            match op {
                Op::Insert(key, value) => self.messages.insert(key, value),
                Op::Remove(key) => self.messages.remove(key),
            }
            .map_err(StoreError::from_sled)?;
        }
        self.messages.insert(keys::JOURNAL, &id.to_be_bytes()).map(|_| ()).map_err(StoreError::from_sled)
    }

    fn lock_journal(&self) -> MutexGuard<'_, Journal> {
        self.journal.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes `ops` durable (one journal frame, one `fdatasync`), then applies them to the
    /// `messages` tree. Before a frame that does not fit, sled is flushed, so that the
    /// journal can start over.
    fn write_messages(&self, ops: Vec<Op>) -> Result<()> {
        let mut journal = self.lock_journal();
        if journal.is_full_for(&ops) {
            self.flush()?;
            journal.restart();
        }
        let id = journal.append(&ops).map_err(|error| match error {
            AppendError::NotWritten(io) => StoreError::from_io(io),
            AppendError::Unknown(io) => self.mark_broken(format!("journal write failed and could not be erased: {io}")),
        })?;
        self.apply_frame(ops, id)
    }

    /// Moves the head and journal counters of an older maild (`h`, `j`) to their keys
    /// at the end of the `messages` tree ([`keys::HEAD`]), in one atomic, flushed batch,
    /// before anything reads them.
    fn move_counters(db: &sled::Db, messages: &Tree) -> Result<()> {
        let mut batch = Batch::default();
        let mut moved = false;
        for (old, new) in [(keys::LEGACY_HEAD, keys::HEAD), (keys::LEGACY_JOURNAL, keys::JOURNAL)] {
            let Some(value) = messages.get(old).map_err(StoreError::from_sled)? else { continue };
            if value == keys::MOVED {
                continue;
            }
            if messages.contains_key(new).map_err(StoreError::from_sled)? {
                return Err(StoreError::Corrupt(format!("counter {old:?} of an older maild is back beside {new:?}")));
            }
            batch.insert(new, value);
            batch.insert(old, keys::MOVED);
            moved = true;
        }
        if moved {
            messages.apply_batch(batch).map_err(StoreError::from_sled)?;
            db.flush().map_err(StoreError::from_sled)?;
            log::info!("store: head and journal counters of an older maild moved to the end of the tree");
        }
        Ok(())
    }

    /// Rewrites the queue records of an older maild (prefix `q`, without a route) in
    /// today's format, in one atomic, flushed batch, so that the rest of maild reads one.
    fn upgrade_queue(&self) -> Result<()> {
        let mut batch = Batch::default();
        let mut count = 0;
        for item in self.mailboxes.scan_prefix([keys::LEGACY_QUEUE]) {
            let (key, value) = item.map_err(StoreError::from_sled)?;
            let old = rkyv::from_bytes::<LegacyQueueRecord, rancor::Error>(&value)
                .map_err(|e| StoreError::Corrupt(format!("queue record of an older maild: {e}")))?;
            let mut upgraded = key.to_vec();
            upgraded[0] = keys::QUEUE;
            batch.remove(key);
            batch.insert(upgraded, encode(&QueueRecord::from(old))?);
            count += 1;
        }
        if count > 0 {
            self.mailboxes.apply_batch(batch).map_err(StoreError::from_sled)?;
            self.flush()?;
            log::info!("store: {count} queue record(s) of an older maild rewritten (route undecided)");
        }
        Ok(())
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where large bodies are spooled and kept.
    pub fn bodies(&self) -> &BodyDir {
        &self.bodies
    }

    /// Removes body files nothing points to: spool files of sessions cut off, and files
    /// of commits taken back or messages collected, that a crash left behind.
    fn sweep_bodies(&self) -> Result<()> {
        let head = self.head()?;
        let removed = self
            .bodies
            .sweep(|number| {
                let marked = self.messages.contains_key(keys::numbered(keys::BODY_FILE, number));
                Ok(number <= head && marked.map_err(std::io::Error::other)?)
            })
            .map_err(StoreError::from_io)?;
        if removed > 0 {
            log::info!("store: {removed} body file(s) that no message points to removed");
        }
        Ok(())
    }

    pub fn users_tree(&self) -> Tree {
        self.users.clone()
    }

    /// The fsync: everything written before it returns is durable, power cut included.
    pub fn flush(&self) -> Result<()> {
        let _watched = self.in_progress.watch();
        self.db.flush().map(|_| ()).map_err(StoreError::from_sled)
    }

    /// How long the oldest commit or flush now in progress has been waiting for the disk;
    /// `None` when none is.
    pub fn stalled_for(&self) -> Option<Duration> {
        self.in_progress.oldest()
    }

    /// Why the store is [`StoreError::Broken`], if it is.
    pub fn broken(&self) -> Option<String> {
        self.broken.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn mark_broken(&self, why: String) -> StoreError {
        log::error!("store: {why}");
        *self.broken.lock().unwrap_or_else(|e| e.into_inner()) = Some(why.clone());
        StoreError::Broken(why)
    }

    fn read_counter(tree: &Tree, key: &[u8]) -> Result<u64> {
        match tree.get(key).map_err(StoreError::from_sled)? {
            Some(v) => {
                keys::number(&v).ok_or_else(|| StoreError::Corrupt(format!("counter {key:?} is {} bytes", v.len())))
            }
            None => Ok(0),
        }
    }

    /// The highest committed message number (0 for an empty store).
    pub fn head(&self) -> Result<u64> {
        Self::read_counter(&self.messages, keys::HEAD)
    }

    /// Writes `records` (numbered `head+1 ..`) with their routings and the new head in one
    /// atomic, durable step (a journal frame, then sled). On any failure nothing of it
    /// remains (what was written is undone), or, if even the undo fails, the error is
    /// [`StoreError::Broken`].
    pub fn commit<R: Into<NewRecord>>(&self, head: u64, records: Vec<R>) -> Result<u64> {
        let _watched = self.in_progress.watch();
        let mut ops = Vec::with_capacity(records.len() * 2 + 1);
        let mut number = head;
        let mut body_files = Vec::new();
        // A record moves into `ops` (a `Vec` is not copied): a body kept in its record is
        // in memory about twice on its way to the disk (in `ops` and in the journal's
        // frame, then in `ops` and in sled as each insert takes its value). A body in a
        // file is not in memory at all.
        for record in records {
            let NewRecord { bytes, routing, body_file } = record.into();
            number += 1;
            ops.push(Op::Insert(keys::message(number).to_vec(), bytes));
            ops.push(Op::Insert(keys::numbered(keys::ROUTING, number).to_vec(), routing.encode()));
            if let Some(file) = body_file {
                let len = file.len().to_be_bytes().to_vec();
                ops.push(Op::Insert(keys::numbered(keys::BODY_FILE, number).to_vec(), len));
                body_files.push((number, file));
            }
        }
        ops.push(Op::Insert(keys::HEAD.to_vec(), number.to_be_bytes().to_vec()));
        failpoint::hit("persist.before_batch").map_err(StoreError::from_io)?;
        self.install_bodies(&mut body_files)?;
        // On a failure from here on the body files stay: the frame may be on disk, and a
        // file that nothing points to is swept at the next open.
        self.write_messages(ops)?;
        if let Err(error) = failpoint::hit("persist.after_batch").map_err(StoreError::from_io) {
            self.undo_commit(head, number)?;
            return Err(error);
        }
        Ok(number)
    }

    /// Takes back a commit of `head+1 ..= new_head` that no client has been told about:
    /// removes the records and restores the head, durably (so a crash cannot bring back a
    /// message whose client was told 451). If that fails, the numbers may be on disk while
    /// the running store reuses them: the store is [`StoreError::Broken`] and only a
    /// restart (which recovers the disk's head) is safe.
    pub fn undo_commit(&self, head: u64, new_head: u64) -> Result<()> {
        let mut undo = Vec::new();
        for n in head + 1..=new_head {
            undo.push(Op::Remove(keys::message(n).to_vec()));
            undo.push(Op::Remove(keys::numbered(keys::ROUTING, n).to_vec()));
            undo.push(Op::Remove(keys::numbered(keys::BODY_FILE, n).to_vec()));
        }
        undo.push(Op::Insert(keys::HEAD.to_vec(), head.to_be_bytes().to_vec()));
        self.write_messages(undo)
            .map_err(|error| self.mark_broken(format!("undoing messages {}..={new_head} failed: {error}", head + 1)))?;
        // Nothing points to them now; one left behind is swept at the next open.
        for n in head + 1..=new_head {
            if let Err(error) = self.bodies.remove(n) {
                log::warn!("store: removing the body file of message {n}, taken back: {error}");
            }
        }
        Ok(())
    }

    /// Makes each spooled body durable as its message's file, and their names with one
    /// directory sync: all before the journal frame that points to them. On a failure the
    /// files installed so far are removed (nothing points to them yet).
    fn install_bodies(&self, files: &mut [(u64, SpoolFile)]) -> Result<()> {
        if files.is_empty() {
            return Ok(());
        }
        let installed = files.iter_mut().try_for_each(|(number, file)| file.install(&self.bodies, *number));
        let synced = installed.and_then(|()| self.bodies.sync());
        if let Err(error) = synced {
            for (number, _) in files.iter() {
                let _ = self.bodies.remove(*number);
            }
            return Err(StoreError::from_io(error));
        }
        Ok(())
    }

    /// Reads and validates message `number`.
    pub fn message(&self, number: u64) -> Result<Option<StoredMessage>> {
        let Some(bytes) = self.messages.get(keys::message(number)).map_err(StoreError::from_sled)? else {
            return Ok(None);
        };
        let record = rkyv::access::<ArchivedMessageRecord, rancor::Error>(&bytes)
            .map_err(|e| StoreError::Corrupt(format!("message {number}: {e}")))?;
        // Only an empty body can be in a file: the one extra read is for those alone.
        let body_file = match record.body.is_empty() {
            true => self.body_file_len(number)?.map(|len| BodyFile { dir: self.bodies.clone(), number, len }),
            false => None,
        };
        Ok(Some(StoredMessage { bytes, body_file }))
    }

    /// The length of message `number`'s body if it is in a file.
    fn body_file_len(&self, number: u64) -> Result<Option<u64>> {
        let Some(value) = self.messages.get(keys::numbered(keys::BODY_FILE, number)).map_err(StoreError::from_sled)?
        else {
            return Ok(None);
        };
        keys::number(&value)
            .filter(|_| value.len() == 8)
            .map(Some)
            .ok_or_else(|| StoreError::Corrupt(format!("message {number}: body length is {} bytes", value.len())))
    }

    /// How message `number`'s recipients were accepted; `None` for a message committed
    /// by a maild that did not keep routes.
    pub fn routing(&self, number: u64) -> Result<Option<Routing>> {
        let Some(bytes) = self.messages.get(keys::numbered(keys::ROUTING, number)).map_err(StoreError::from_sled)?
        else {
            return Ok(None);
        };
        Routing::decode(&bytes).map(Some).ok_or_else(|| StoreError::Corrupt(format!("routing of message {number}")))
    }

    /// The deliver stage's progress mark: every message up to it is in its mailboxes.
    pub fn delivered_through(&self) -> Result<u64> {
        Self::read_counter(&self.mailboxes, keys::DELIVERED)
    }

    /// Remembers that a peer found by mDNS owned `domain` (lower-case) at `now` (seconds
    /// since the epoch), so that while the peer is away, after a restart too, its mail
    /// waits for it instead of going to DNS (see `MailDirectory::remembering`).
    pub fn remember_peer_domain(&self, domain: &Domain, now: u64) -> Result<()> {
        self.peer_domains
            .insert(domain.as_str().as_bytes(), &now.to_be_bytes())
            .map(|_| ())
            .map_err(StoreError::from_sled)
    }

    /// When a discovered peer was last known to own `domain`; 0 for a domain an older
    /// maild remembered without a time.
    pub fn peer_domain_seen(&self, domain: &Domain) -> Result<Option<u64>> {
        let value = self.peer_domains.get(domain.as_str().as_bytes()).map_err(StoreError::from_sled)?;
        Ok(value.map(|v| keys::number(&v).unwrap_or(0)))
    }

    /// Every remembered peer domain with when it was last seen, by domain.
    pub fn peer_domains(&self) -> Result<Vec<(Domain, u64)>> {
        self.peer_domains
            .iter()
            .map(|item| {
                let (key, value) = item.map_err(StoreError::from_sled)?;
                Ok((Domain::stored(&String::from_utf8_lossy(&key)), keys::number(&value).unwrap_or(0)))
            })
            .collect()
    }

    /// Forgets a remembered peer domain (durably); false if it was not remembered.
    pub fn forget_peer_domain(&self, domain: &Domain) -> Result<bool> {
        let removed = self.peer_domains.remove(domain.as_str().as_bytes()).map_err(StoreError::from_sled)?;
        self.flush()?;
        Ok(removed.is_some())
    }

    /// Records what maild serves, at its start.
    pub fn record_served(&self, served: &Served) -> Result<()> {
        let mut batch = Batch::default();
        batch.insert(SERVED_HOSTNAME, served.hostname.as_bytes());
        batch.insert(SERVED_DOMAINS, served.domains.join("\n").as_bytes());
        self.served.apply_batch(batch).map_err(StoreError::from_sled)
    }

    /// What the last maild to run on this store served; `None` if none has run yet.
    pub fn served(&self) -> Result<Option<Served>> {
        let read = |key: &[u8]| -> Result<Option<String>> {
            let value = self.served.get(key).map_err(StoreError::from_sled)?;
            Ok(value.map(|v| String::from_utf8_lossy(&v).into_owned()))
        };
        let (Some(hostname), Some(domains)) = (read(SERVED_HOSTNAME)?, read(SERVED_DOMAINS)?) else {
            return Ok(None);
        };
        Ok(Some(Served { hostname, domains: domains.split('\n').map(str::to_string).collect() }))
    }

    /// Waits (at most `bound`) until the deliver stage has applied every message committed
    /// now, so a reader sees in the mailboxes all mail acknowledged before it asked. Logs,
    /// naming `reader`, when it gives up (delivery failing or far behind); the reader then
    /// goes on with the mailboxes as they are.
    pub fn wait_for_delivery(&self, bound: Duration, reader: &str) {
        let deadline = Instant::now() + bound;
        // The head as the reader came: mail that arrives meanwhile need not hold it up.
        let Ok(head) = self.head() else { return };
        while self.delivered_through().is_ok_and(|delivered| delivered < head) {
            if Instant::now() >= deadline {
                log::warn!("{reader}: delivery is behind; mailboxes may lack the newest mail");
                return;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Local deliveries only (no forwarding): see [`Store::deliver_all`].
    pub fn deliver(&self, deliveries: &[(u64, Vec<String>)]) -> Result<()> {
        let deliveries: Vec<Delivery> = deliveries
            .iter()
            .map(|(number, users)| Delivery { number: *number, users: users.clone(), forwards: Vec::new() })
            .collect();
        self.deliver_all(&deliveries)
    }

    /// Adds mailbox entries and outbound queue records for a run of committed messages,
    /// sets each message's reference count (mailboxes plus queue records), and moves the
    /// progress mark, last. Only messages past the mark are applied, so re-applying a run
    /// (replay after a crash) changes nothing.
    pub fn deliver_all(&self, deliveries: &[Delivery]) -> Result<()> {
        let Some(last) = deliveries.last().map(|d| d.number) else { return Ok(()) };
        let _guard = self.index_lock.lock().unwrap_or_else(|e| e.into_inner());
        let mark = self.delivered_through()?;
        // One write at a time, the mark last, rather than one sled batch (two log buffers
        // written and synced at once): every write sets a value, none adds to one, so
        // after a crash that kept only some of them (sled recovers a prefix of its log)
        // replaying from the mark sets them all again.
        let set =
            |key: &[u8], value: &[u8]| self.mailboxes.insert(key, value).map(|_| ()).map_err(StoreError::from_sled);
        for Delivery { number, users, forwards } in deliveries.iter().filter(|d| d.number > mark) {
            let mut users: Vec<&String> = users.iter().collect();
            users.sort();
            users.dedup();
            for user in &users {
                set(&keys::entry(user, *number), &[])?;
            }
            for record in forwards {
                set(&keys::queue(*number, &record.domain), &encode(record)?)?;
            }
            let refs = u32::try_from(users.len() + forwards.len()).unwrap_or(u32::MAX);
            if refs == 0 {
                set(&keys::numbered(keys::UNREFERENCED, *number), &[])?;
            } else {
                set(&keys::numbered(keys::REFS, *number), &refs.to_be_bytes())?;
            }
        }
        set(keys::DELIVERED, &last.max(mark).to_be_bytes())
    }

    /// Holds off every change to mailboxes, the queue and reference counts while the guard
    /// lives, so that a reader (`mailtool verify` against a running maild) sees them agree.
    pub fn hold_mailboxes(&self) -> std::sync::MutexGuard<'_, ()> {
        self.index_lock.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The numbers in a user's mailbox, oldest first.
    pub fn mailbox(&self, user: &str) -> Result<Vec<u64>> {
        let prefix = keys::mailbox_prefix(user);
        self.mailboxes
            .scan_prefix(&prefix)
            .keys()
            .map(|key| {
                let key = key.map_err(StoreError::from_sled)?;
                keys::number(&key).ok_or_else(|| StoreError::Corrupt("short mailbox key".into()))
            })
            .collect()
    }

    /// Adds `drop` to the reference count of `number` in `batch` (read under the index
    /// lock); at zero the message is marked collectable.
    fn release(&self, batch: &mut Batch, number: u64, drop: u32) -> Result<()> {
        let refs_key = keys::numbered(keys::REFS, number);
        let refs = Self::read_counter32(&self.mailboxes, &refs_key)?;
        if refs <= drop {
            batch.remove(&refs_key);
            batch.insert(&keys::numbered(keys::UNREFERENCED, number), &[]);
        } else {
            batch.insert(&refs_key, &(refs - drop).to_be_bytes());
        }
        Ok(())
    }

    /// The outbound queue, oldest message first.
    pub fn queue(&self) -> Result<Vec<(IVec, QueueRecord)>> {
        self.mailboxes
            .scan_prefix([keys::QUEUE])
            .map(|item| {
                let (key, value) = item.map_err(StoreError::from_sled)?;
                let record = rkyv::from_bytes::<QueueRecord, rancor::Error>(&value)
                    .map_err(|e| StoreError::Corrupt(format!("queue record: {e}")))?;
                Ok((key, record))
            })
            .collect()
    }

    /// Replaces a queue record, or removes it durably (releasing its hold on the message).
    pub fn update_queue(&self, key: &[u8], record: Option<&QueueRecord>) -> Result<()> {
        let _guard = self.index_lock.lock().unwrap_or_else(|e| e.into_inner());
        let Some(number) = keys::number(&key[..9.min(key.len())]) else {
            return Err(StoreError::Corrupt("short queue key".into()));
        };
        if !self.mailboxes.contains_key(key).map_err(StoreError::from_sled)? {
            return Ok(());
        }
        let mut batch = Batch::default();
        match record {
            Some(record) => batch.insert(key, encode(record)?),
            None => {
                batch.remove(key);
                self.release(&mut batch, number, 1)?;
            }
        }
        self.mailboxes.apply_batch(batch).map_err(StoreError::from_sled)?;
        // A removal follows the peer's 250: made durable, a power cut cannot send the
        // message again. A rescheduled record may be lost (it is only retried sooner).
        if record.is_none() {
            self.flush()?;
        }
        Ok(())
    }

    /// True while the queue record `key` is in the queue.
    pub fn is_queued(&self, key: &[u8]) -> Result<bool> {
        self.mailboxes.contains_key(key).map_err(StoreError::from_sled)
    }

    /// Makes every queue record due now (`mailtool queue flush`). Returns how many.
    pub fn flush_queue(&self) -> Result<usize> {
        let _guard = self.index_lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut batch = Batch::default();
        let mut count = 0;
        for (key, mut record) in self.queue()? {
            record.next_attempt = 0;
            batch.insert(key, encode(&record)?);
            count += 1;
        }
        self.mailboxes.apply_batch(batch).map_err(StoreError::from_sled)?;
        Ok(count)
    }

    /// Empties a user's mailbox in one atomic, flushed step; returns how many messages it
    /// held. Each message no other mailbox holds becomes collectable.
    pub fn clear_mailbox(&self, user: &str) -> Result<usize> {
        let numbers = self.mailbox(user)?;
        self.remove_entries(user, &numbers)?;
        Ok(numbers.len())
    }

    /// Removes entries from a user's mailbox in one atomic, flushed step. A message no
    /// mailbox holds any more is marked collectable (see [`Store::collect`]).
    pub fn remove_entries(&self, user: &str, numbers: &[u64]) -> Result<()> {
        failpoint::hit("pop3.before_commit").map_err(StoreError::from_io)?;
        let _guard = self.index_lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut batch = Batch::default();
        for number in numbers {
            let entry = keys::entry(user, *number);
            if !self.mailboxes.contains_key(&entry).map_err(StoreError::from_sled)? {
                continue;
            }
            batch.remove(entry);
            self.release(&mut batch, *number, 1)?;
        }
        self.mailboxes.apply_batch(batch).map_err(StoreError::from_sled)?;
        self.flush()
    }

    fn read_counter32(tree: &Tree, key: &[u8]) -> Result<u32> {
        match tree.get(key).map_err(StoreError::from_sled)? {
            Some(v) => <[u8; 4]>::try_from(v.as_ref())
                .map(u32::from_be_bytes)
                .map_err(|_| StoreError::Corrupt(format!("reference count {key:?} is {} bytes", v.len()))),
            None => Ok(0),
        }
    }

    /// How many mailboxes hold message `number`.
    pub fn references(&self, number: u64) -> Result<u32> {
        Self::read_counter32(&self.mailboxes, &keys::numbered(keys::REFS, number))
    }

    /// Removes the records of messages no mailbox holds, up to `through` (the range files
    /// keep their copies), leaving a tombstone for each. Returns how many went.
    /// Idempotent: a crash midway leaves markers that the next call finishes.
    pub fn collect(&self, through: u64) -> Result<usize> {
        // A backup in progress needs the records its snapshot refers to; try again later.
        let Ok(_guard) = self.collect_lock.try_lock() else { return Ok(0) };
        let mut collected = 0;
        let mut numbers = Vec::new();
        for key in self.mailboxes.scan_prefix([keys::UNREFERENCED]).keys() {
            let key = key.map_err(StoreError::from_sled)?;
            match keys::number(&key) {
                Some(n) if n <= through => numbers.push(n),
                Some(_) => break,
                None => return Err(StoreError::Corrupt("short collectable key".into())),
            }
        }
        for chunk in numbers.chunks(256) {
            let mut records = Batch::default();
            let mut markers = Batch::default();
            let mut files = Vec::new();
            for number in chunk {
                if self.body_file_len(*number)?.is_some() {
                    files.push(*number);
                }
                records.remove(&keys::message(*number));
                records.remove(&keys::numbered(keys::ROUTING, *number));
                records.remove(&keys::numbered(keys::BODY_FILE, *number));
                records.insert(&keys::numbered(keys::TOMBSTONE, *number), &[]);
                markers.remove(&keys::numbered(keys::UNREFERENCED, *number));
            }
            self.messages.apply_batch(records).map_err(StoreError::from_sled)?;
            self.mailboxes.apply_batch(markers).map_err(StoreError::from_sled)?;
            if !files.is_empty() {
                // The records' removal must be durable before their bodies go: a power
                // cut must not bring back a record without its body.
                self.flush()?;
                for number in files {
                    self.bodies.remove(number).map_err(StoreError::from_io)?;
                }
            }
            collected += chunk.len();
        }
        Ok(collected)
    }

    /// True if message `number` was collected (it existed; its range file has it).
    pub fn is_tombstone(&self, number: u64) -> Result<bool> {
        self.messages.contains_key(keys::numbered(keys::TOMBSTONE, number)).map_err(StoreError::from_sled)
    }

    /// The backup stage's progress mark: every complete range up to it has its file.
    pub fn backed_up_through(&self) -> Result<u64> {
        Self::read_counter(&self.mailboxes, keys::BACKED_UP)
    }

    pub fn set_backed_up_through(&self, number: u64) -> Result<()> {
        self.mailboxes.insert(keys::BACKED_UP, &number.to_be_bytes()).map(|_| ()).map_err(StoreError::from_sled)
    }

    /// Records in the store (1..=head less the collected ones).
    pub fn message_count(&self) -> Result<u64> {
        let mut count = 0;
        for key in self.messages.scan_prefix([keys::MESSAGE]).keys() {
            key.map_err(StoreError::from_sled)?;
            count += 1;
        }
        Ok(count)
    }

    /// Holds off record collection while the guard lives (a backup copying records that
    /// its index snapshot refers to).
    pub fn pause_collection(&self) -> MutexGuard<'_, ()> {
        self.collect_lock.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A consistent view of the head, the mailbox index and the users, taken while no
    /// index update is in flight.
    pub fn index_snapshot(&self) -> Result<IndexSnapshot> {
        let _guard = self.index_lock.lock().unwrap_or_else(|e| e.into_inner());
        let all = |tree: &Tree| -> Result<Vec<(IVec, IVec)>> {
            tree.iter().map(|item| item.map_err(StoreError::from_sled)).collect()
        };
        Ok(IndexSnapshot { head: self.head()?, mailboxes: all(&self.mailboxes)?, users: all(&self.users)? })
    }

    /// The stored pairs of message `number`: its record, routing and body length (for a
    /// body in a file), or its tombstone; none if it is missing.
    pub fn raw_message(&self, number: u64) -> Result<Vec<(IVec, IVec)>> {
        let mut pairs = Vec::new();
        for key in [
            keys::message(number),
            keys::numbered(keys::ROUTING, number),
            keys::numbered(keys::BODY_FILE, number),
            keys::numbered(keys::TOMBSTONE, number),
        ] {
            if let Some(value) = self.messages.get(key).map_err(StoreError::from_sled)? {
                pairs.push((IVec::from(&key[..]), value));
            }
        }
        Ok(pairs)
    }

    /// Writes raw pairs into an empty store being built by a backup or restore.
    pub fn import(&self, tree: StoreTree, pairs: &[(IVec, IVec)]) -> Result<()> {
        let target = match tree {
            StoreTree::Messages => &self.messages,
            StoreTree::Mailboxes => &self.mailboxes,
            StoreTree::Users => &self.users,
        };
        let mut batch = Batch::default();
        for (key, value) in pairs {
            batch.insert(key, value.clone());
        }
        target.apply_batch(batch).map_err(StoreError::from_sled)
    }

    /// Copies message `number`'s body file, if it has one, from `source` into this store
    /// being built by a backup or restore; the caller syncs [`Store::bodies`] after.
    pub fn import_body_file(&self, source: &Store, number: u64) -> Result<()> {
        let Some(len) = source.body_file_len(number)? else { return Ok(()) };
        let from = bodies::open_body(&source.bodies, number, len).map_err(StoreError::from_io)?;
        let mut spool = self.bodies.spool().map_err(StoreError::from_io)?;
        bodies::read_chunks(from, |chunk| spool.write(chunk).map(|()| true)).map_err(StoreError::from_io)?;
        spool.install(&self.bodies, number).map_err(StoreError::from_io)
    }

    /// Sets the head counter of a store being built by a backup or restore.
    pub fn import_head(&self, head: u64) -> Result<()> {
        self.messages.insert(keys::HEAD, &head.to_be_bytes()).map(|_| ()).map_err(StoreError::from_sled)
    }

    /// Every key of a tree with its value, for `verify`.
    pub fn raw_entries(&self, tree: StoreTree) -> impl Iterator<Item = Result<(IVec, IVec)>> {
        let source = match tree {
            StoreTree::Messages => &self.messages,
            StoreTree::Mailboxes => &self.mailboxes,
            StoreTree::Users => &self.users,
        };
        source.iter().map(|item| item.map_err(StoreError::from_sled))
    }

    /// Refuses new mail while the file system has less than `reserve` bytes free beyond
    /// twice what is coming (Postfix's `queue_minfree` idea). sled treats a failed write
    /// as fatal for the whole store, so maild must never let it run out of space: it says
    /// `452` early instead, and accepts again as soon as space is freed.
    pub fn check_space(&self, incoming: u64, reserve: u64) -> Result<()> {
        let available = available_space(&self.dir).map_err(StoreError::from_io)?;
        if available < reserve.saturating_add(incoming.saturating_mul(2)) {
            return Err(StoreError::Full(std::io::Error::other(format!(
                "{available} bytes free in {}, keeping {reserve} in reserve",
                self.dir.display()
            ))));
        }
        Ok(())
    }

    /// Bytes on disk under the store directory.
    pub fn size_on_disk(&self) -> Result<u64> {
        let mut size = self.db.size_on_disk().map_err(StoreError::from_sled)?;
        for entry in std::fs::read_dir(self.bodies.path()).map_err(StoreError::from_io)? {
            size += entry.and_then(|e| e.metadata()).map_err(StoreError::from_io)?.len();
        }
        Ok(size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(n: u64, body: &[u8]) -> (Vec<u8>, Routing) {
        let r = MessageRecord {
            number: n,
            received_at: 1,
            sender: "a@b".into(),
            recipients: vec!["c@d".into()],
            trace: "Received: x\r\n".into(),
            body: body.to_vec(),
        };
        (rkyv::to_bytes::<rancor::Error>(&r).unwrap().to_vec(), Routing::default())
    }

    /// A new record whose body is in a spool file, as persist makes one for a large body.
    fn spooled(store: &Store, n: u64, body: &[u8]) -> NewRecord {
        let (bytes, routing) = record(n, b"");
        let mut file = store.bodies().spool().unwrap();
        file.write(body).unwrap();
        NewRecord { bytes, routing, body_file: Some(file) }
    }

    #[test]
    fn a_body_in_its_own_file_is_read_copied_taken_back_swept_and_collected() {
        let dir = tempfile::tempdir().unwrap();
        let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        {
            let store = Store::open(dir.path()).unwrap();
            assert_eq!(store.commit(0, vec![spooled(&store, 1, &big), record(2, b"small").into()]).unwrap(), 2);
            let message = store.message(1).unwrap().unwrap();
            assert!(message.has_body_file());
            assert!(message.record().body.is_empty());
            assert_eq!(message.stored_len(), 200_000 + "Received: x\r\n".len() as u64);
            assert_eq!(message.read_body().unwrap().as_ref(), &big[..]);
            assert_eq!(message.to_record().unwrap().body, big);
            assert_eq!(message.body_head(3).unwrap().as_ref(), &big[..3]);
            let mut pieces = 0;
            message
                .body_chunks(|_| {
                    pieces += 1;
                    Ok(pieces < 2)
                })
                .unwrap();
            assert_eq!(pieces, 2, "reading stops when asked to");
            let small = store.message(2).unwrap().unwrap();
            assert!(!small.has_body_file());
            assert_eq!(small.read_body().unwrap().as_ref(), b"small");

            // Taken back: the record, its marker and its file go.
            store.commit(2, vec![spooled(&store, 3, b"taken back")]).unwrap();
            assert!(store.bodies().file_of(3).exists());
            store.undo_commit(2, 3).unwrap();
            assert!(!store.bodies().file_of(3).exists());
            assert!(store.message(3).unwrap().is_none());

            // Copied, as a backup copies it.
            let copy_dir = tempfile::tempdir().unwrap();
            let copy = Store::open(copy_dir.path()).unwrap();
            copy.import(StoreTree::Messages, &store.raw_message(1).unwrap()).unwrap();
            copy.import_body_file(&store, 1).unwrap();
            assert_eq!(copy.message(1).unwrap().unwrap().read_body().unwrap().as_ref(), &big[..]);

            // A file whose length does not match its record is an error, not a short body.
            std::fs::write(copy.bodies().file_of(1), b"short").unwrap();
            assert!(copy.message(1).unwrap().unwrap().open_body().is_err());

            // What a crash leaves: a file nothing points to.
            std::fs::write(store.bodies().file_of(9), b"orphan").unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        assert!(!store.bodies().file_of(9).exists(), "swept at open");
        assert_eq!(store.message(1).unwrap().unwrap().read_body().unwrap().as_ref(), &big[..]);

        store.mailboxes.insert(keys::numbered(keys::UNREFERENCED, 1), &[]).unwrap();
        assert_eq!(store.collect(1).unwrap(), 1);
        assert!(!store.bodies().file_of(1).exists(), "a collected message's file goes with it");
        assert!(store.is_tombstone(1).unwrap());
    }

    #[test]
    fn queue_records_of_an_older_maild_are_upgraded_with_an_undecided_route() {
        let dir = tempfile::tempdir().unwrap();
        let legacy = record::LegacyQueueRecord {
            number: 7,
            domain: "b.test".into(),
            recipients: vec!["bob@b.test".into()],
            attempts: 2,
            queued_at: 1,
            next_attempt: 3,
            last_error: "down".into(),
        };
        {
            let store = Store::open(dir.path()).unwrap();
            let mut key = keys::queue(7, "b.test");
            key[0] = keys::LEGACY_QUEUE;
            store.mailboxes.insert(key, rkyv::to_bytes::<rancor::Error>(&legacy).unwrap().to_vec()).unwrap();
            store.flush().unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        let queue = store.queue().unwrap();
        assert_eq!(queue.len(), 1);
        assert_eq!(queue[0].0.as_ref(), keys::queue(7, "b.test").as_slice());
        let upgraded = &queue[0].1;
        assert_eq!(upgraded.route, record::QueueRoute::Undecided);
        assert_eq!((upgraded.attempts, upgraded.last_error.as_str(), upgraded.next_attempt), (2, "down", 3));
        assert_eq!(store.mailboxes.scan_prefix([keys::LEGACY_QUEUE]).count(), 0);
    }

    #[test]
    fn routing_is_kept_with_the_record_and_goes_with_it() {
        use crate::directory::Accepted;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let routing = Routing { authenticated: true, routes: vec![Accepted::Local, Accepted::Peer, Accepted::Relay] };
        store.commit(0, vec![(record(1, b"one").0, routing.clone())]).unwrap();
        assert_eq!(store.routing(1).unwrap(), Some(routing.clone()));
        assert_eq!(Routing::decode(&routing.encode()), Some(routing));
        assert_eq!(Routing::decode(b"\x02L"), None);
        assert_eq!(Routing::decode(b"\x00X"), None);
        assert_eq!(store.raw_message(1).unwrap().len(), 2, "record and routing");
        store.undo_commit(0, 1).unwrap();
        assert_eq!(store.routing(1).unwrap(), None);
    }

    #[test]
    fn commit_numbers_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            assert_eq!(store.head().unwrap(), 0);
            assert_eq!(store.commit(0, vec![record(1, b"one"), record(2, b"two")]).unwrap(), 2);
            assert_eq!(store.commit(2, vec![record(3, b"three")]).unwrap(), 3);
        }
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.head().unwrap(), 3);
        let m = store.message(2).unwrap().unwrap();
        assert_eq!(m.record().body.as_slice(), b"two");
        assert_eq!(m.record().number, 2);
        assert!(store.message(4).unwrap().is_none());
    }

    fn copy_dir(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_dir() {
                copy_dir(&entry.path(), &to.join(entry.file_name()));
            } else {
                std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
            }
        }
    }

    /// A store at `live` holding message 1, flushed, and a copy at `cut`: what a power cut
    /// leaves of sled from here on (the copy's journal is brought up to date by
    /// [`cut_keeps_the_journal`]).
    fn a_store_and_its_cut_after_one_commit() -> (tempfile::TempDir, PathBuf, PathBuf, Store) {
        let dir = tempfile::tempdir().unwrap();
        let (live, cut) = (dir.path().join("live"), dir.path().join("cut"));
        let store = Store::open(&live).unwrap();
        store.commit(0, vec![record(1, b"one")]).unwrap();
        store.flush().unwrap();
        copy_dir(&live, &cut);
        (dir, live, cut, store)
    }

    /// The journal is fsync'd at every commit: a cut keeps all of it.
    fn cut_keeps_the_journal(live: &Path, cut: &Path) {
        std::fs::copy(live.join("store/journal"), cut.join("store/journal")).unwrap();
    }

    #[test]
    fn commits_sled_lost_come_back_from_the_journal_and_undone_ones_stay_undone() {
        let (_dir, live, cut, store) = a_store_and_its_cut_after_one_commit();
        assert_eq!(store.commit(1, vec![record(2, b"two"), record(3, b"three")]).unwrap(), 3);
        assert_eq!(store.commit(3, vec![record(4, b"four")]).unwrap(), 4);
        store.undo_commit(3, 4).unwrap();
        assert_eq!(store.commit(3, vec![record(4, b"four again")]).unwrap(), 4);
        cut_keeps_the_journal(&live, &cut);
        drop(store);
        let store = Store::open(&cut).unwrap();
        assert_eq!(store.head().unwrap(), 4);
        for (number, body) in [(1, &b"one"[..]), (2, b"two"), (3, b"three"), (4, b"four again")] {
            assert_eq!(store.message(number).unwrap().unwrap().record().body.as_slice(), body);
        }
        // Replayed once: a second open finds nothing more to apply, and numbering goes on.
        drop(store);
        let store = Store::open(&cut).unwrap();
        assert_eq!(store.commit(4, vec![record(5, b"five")]).unwrap(), 5);
        assert_eq!(store.message(4).unwrap().unwrap().record().body.as_slice(), b"four again");
    }

    #[test]
    fn a_store_whose_sled_lost_frames_the_journal_no_longer_holds_is_refused() {
        let (_dir, live, cut, store) = a_store_and_its_cut_after_one_commit();
        store.commit(1, vec![record(2, b"two")]).unwrap();
        // Reopening flushes sled and starts the journal over: frame 2 leaves the journal.
        drop(store);
        let store = Store::open(&live).unwrap();
        store.commit(2, vec![record(3, b"three")]).unwrap();
        // sled as of frame 1, a journal that starts at frame 3: frame 2 is nowhere.
        cut_keeps_the_journal(&live, &cut);
        drop(store);
        match Store::open(&cut) {
            Err(StoreError::Corrupt(why)) => assert!(why.contains("frames 2..=2"), "{why}"),
            other => panic!("expected the hole to be refused, got {:?}", other.map(|s| s.head())),
        }
    }

    #[test]
    fn the_counters_of_an_older_maild_are_moved_and_left_unreadable_to_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.commit(0, vec![record(1, b"one"), record(2, b"two")]).unwrap();
        // Where an older maild kept them.
        for (old, new) in [(keys::LEGACY_HEAD, keys::HEAD), (keys::LEGACY_JOURNAL, keys::JOURNAL)] {
            let value = store.messages.remove(new).unwrap().unwrap();
            store.messages.insert(old, value).unwrap();
        }
        store.flush().unwrap();
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.head().unwrap(), 2);
        for old in [keys::LEGACY_HEAD, keys::LEGACY_JOURNAL] {
            let marker = store.messages.get(old).unwrap().unwrap();
            assert_eq!(marker, keys::MOVED);
            assert_eq!(keys::number(&marker), None, "an older maild must not read it as a counter");
        }
        assert_eq!(store.commit(2, vec![record(3, b"three")]).unwrap(), 3);
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.head().unwrap(), 3);
        assert_eq!(store.message(1).unwrap().unwrap().record().body.as_slice(), b"one");
    }

    #[test]
    fn a_full_journal_starts_over_after_sled_is_flushed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let body = vec![b'x'; 1 << 20];
        let mut head = 0;
        // Twice the journal's size: it starts over at least once.
        for _ in 0..2 * journal::CAPACITY / (1 << 20) {
            head = store.commit(head, vec![record(head + 1, &body)]).unwrap();
        }
        assert_eq!(std::fs::metadata(dir.path().join("store/journal")).unwrap().len(), journal::CAPACITY);
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.head().unwrap(), head);
        assert_eq!(store.message(head).unwrap().unwrap().record().body.len(), body.len());
    }

    #[test]
    fn a_second_open_is_refused_as_locked() {
        let dir = tempfile::tempdir().unwrap();
        let _store = Store::open(dir.path()).unwrap();
        match Store::open(dir.path()) {
            Err(StoreError::Locked(_)) => {}
            other => panic!("expected Locked, got {:?}", other.err()),
        }
    }

    #[test]
    fn mailbox_entries_are_ordered_and_per_user() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store
            .deliver(&[(1, vec!["a@x".into()]), (2, vec!["a@x".into(), "ab@x".into()]), (300, vec!["a@x".into()])])
            .unwrap();
        assert_eq!(store.mailbox("a@x").unwrap(), vec![1, 2, 300]);
        assert_eq!(store.mailbox("ab@x").unwrap(), vec![2]);
        assert_eq!(store.delivered_through().unwrap(), 300);
        assert_eq!(store.references(2).unwrap(), 2);
        store.remove_entries("a@x", &[2]).unwrap();
        assert_eq!(store.mailbox("a@x").unwrap(), vec![1, 300]);
        assert_eq!(store.references(2).unwrap(), 1);
        // Replaying an old delivery changes nothing (it is behind the mark).
        store.deliver(&[(2, vec!["a@x".into()])]).unwrap();
        assert_eq!(store.mailbox("a@x").unwrap(), vec![1, 300]);
    }

    #[test]
    fn records_are_collected_once_no_mailbox_holds_them_and_they_are_backed_up() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.commit(0, vec![record(1, b"one"), record(2, b"two"), record(3, b"three")]).unwrap();
        store
            .deliver(&[(1, vec!["a@x".into(), "b@x".into()]), (2, vec!["a@x".into()]), (3, vec!["a@x".into()])])
            .unwrap();
        store.remove_entries("a@x", &[1, 2, 3]).unwrap();
        // Removing twice does not decrement twice.
        store.remove_entries("a@x", &[1]).unwrap();
        assert_eq!(store.references(1).unwrap(), 1);
        // Only messages up to the backed-up mark go.
        assert_eq!(store.collect(2).unwrap(), 1);
        assert!(store.message(1).unwrap().is_some(), "b@x still holds 1");
        assert!(store.message(2).unwrap().is_none());
        assert!(store.is_tombstone(2).unwrap());
        assert!(store.message(3).unwrap().is_some(), "3 is not backed up yet");
        assert_eq!(store.collect(3).unwrap(), 1);
        assert!(store.is_tombstone(3).unwrap());
        assert_eq!(store.collect(3).unwrap(), 0);
    }

    #[test]
    fn garbage_bytes_are_reported_corrupt_not_panicked_on() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.messages.insert(keys::message(1), &b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff"[..]).unwrap();
        assert!(matches!(store.message(1), Err(StoreError::Corrupt(_))));
    }
}
