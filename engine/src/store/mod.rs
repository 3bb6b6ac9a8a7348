//! The store: sled trees holding numbered message records, mailbox indexes and users.
//!
//! Trees and their writers (see `docs/ARCHITECTURE.md`):
//! - `messages`: the head counter and the message records. Only the persist stage writes
//!   it, and always the records and the new head in one atomic batch.
//! - `mailboxes`: per-user mailbox entries and the deliver stage's progress mark, written
//!   together in one atomic batch so replaying after a crash is idempotent.
//! - `users`: user records, written by `mailtool`.
//!
//! sled is not durable per write (it flushes every 500 ms in the background): a write is
//! durable only once [`Store::flush`] returns, and that is what persist waits for before
//! any `250`.

pub mod record;

use std::path::{Path, PathBuf};

use rkyv::rancor;
use sled::{Batch, IVec, Tree};

use record::{keys, ArchivedMessageRecord, MessageRecord};

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
}

impl StoreError {
    fn from_sled(error: sled::Error) -> StoreError {
        match error {
            sled::Error::Io(io) => StoreError::from_io(io),
            other => StoreError::Corrupt(other.to_string()),
        }
    }

    pub fn from_io(io: std::io::Error) -> StoreError {
        // ENOSPC and EDQUOT: out of space, as opposed to broken.
        match io.raw_os_error() {
            Some(28) | Some(122) => StoreError::Full(io),
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
    dir: PathBuf,
}

/// A message record read from the store, validated, readable in place.
pub struct StoredMessage {
    bytes: IVec,
}

impl StoredMessage {
    pub fn record(&self) -> &ArchivedMessageRecord {
        // Validated in `Store::message`, so this cannot fail; keep it total anyway.
        rkyv::access::<ArchivedMessageRecord, rancor::Error>(&self.bytes).expect("validated at load")
    }

    pub fn to_record(&self) -> Result<MessageRecord> {
        rkyv::deserialize::<MessageRecord, rancor::Error>(self.record()).map_err(|e| StoreError::Corrupt(e.to_string()))
    }
}

impl Store {
    /// Opens (creating if needed) the store in `dir/store`.
    pub fn open(dir: &Path) -> Result<Store> {
        let path = dir.join("store");
        std::fs::create_dir_all(dir).map_err(StoreError::from_io)?;
        let db = sled::Config::new()
            .path(&path)
            .cache_capacity(256 << 20)
            .mode(sled::Mode::HighThroughput)
            .open()
            .map_err(|e| match e {
                // sled reports its file lock as an I/O error "WouldBlock".
                sled::Error::Io(ref io) if io.kind() == std::io::ErrorKind::WouldBlock => StoreError::Locked(path.clone()),
                sled::Error::Io(ref io) if io.to_string().contains("lock") => StoreError::Locked(path.clone()),
                other => StoreError::from_sled(other),
            })?;
        let tree = |name: &str| db.open_tree(name).map_err(StoreError::from_sled);
        Ok(Store { messages: tree("messages")?, mailboxes: tree("mailboxes")?, users: tree("users")?, db, dir: dir.to_path_buf() })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn users_tree(&self) -> Tree {
        self.users.clone()
    }

    /// The fsync: everything written before it returns is durable.
    pub fn flush(&self) -> Result<()> {
        self.db.flush().map(|_| ()).map_err(StoreError::from_sled)
    }

    fn read_counter(tree: &Tree, key: &[u8]) -> Result<u64> {
        match tree.get(key).map_err(StoreError::from_sled)? {
            Some(v) => keys::number(&v).ok_or_else(|| StoreError::Corrupt(format!("counter {key:?} is {} bytes", v.len()))),
            None => Ok(0),
        }
    }

    /// The highest committed message number (0 for an empty store).
    pub fn head(&self) -> Result<u64> {
        Self::read_counter(&self.messages, keys::HEAD)
    }

    /// Writes `records` (numbered `head+1 ..`) and the new head in one atomic batch, then
    /// flushes. On any failure nothing of the batch remains (a failed flush is undone).
    pub fn commit(&self, head: u64, records: &[Vec<u8>]) -> Result<u64> {
        let mut batch = Batch::default();
        let mut number = head;
        for record in records {
            number += 1;
            batch.insert(&keys::message(number), record.as_slice());
        }
        batch.insert(keys::HEAD, &number.to_be_bytes());
        self.messages.apply_batch(batch).map_err(StoreError::from_sled)?;
        if let Err(error) = self.flush() {
            // The batch is in sled's memory but not known durable: take it back so the
            // numbers are reused and nothing the client was refused can reappear.
            let mut undo = Batch::default();
            for n in head + 1..=number {
                undo.remove(&keys::message(n));
            }
            undo.insert(keys::HEAD, &head.to_be_bytes());
            let _ = self.messages.apply_batch(undo);
            return Err(error);
        }
        Ok(number)
    }

    /// Reads and validates message `number`.
    pub fn message(&self, number: u64) -> Result<Option<StoredMessage>> {
        let Some(bytes) = self.messages.get(keys::message(number)).map_err(StoreError::from_sled)? else {
            return Ok(None);
        };
        rkyv::access::<ArchivedMessageRecord, rancor::Error>(&bytes)
            .map_err(|e| StoreError::Corrupt(format!("message {number}: {e}")))?;
        Ok(Some(StoredMessage { bytes }))
    }

    /// The deliver stage's progress mark: every message up to it is in its mailboxes.
    pub fn delivered_through(&self) -> Result<u64> {
        Self::read_counter(&self.mailboxes, keys::DELIVERED)
    }

    /// Adds mailbox entries for a run of committed messages and moves the progress mark,
    /// atomically. Re-applying the same run is harmless.
    pub fn deliver(&self, deliveries: &[(u64, Vec<String>)]) -> Result<()> {
        let Some(last) = deliveries.last().map(|(n, _)| *n) else { return Ok(()) };
        let mut batch = Batch::default();
        for (number, users) in deliveries {
            for user in users {
                batch.insert(keys::entry(user, *number), &[]);
            }
        }
        batch.insert(keys::DELIVERED, &last.to_be_bytes());
        self.mailboxes.apply_batch(batch).map_err(StoreError::from_sled)
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

    /// Removes entries from a user's mailbox in one atomic, flushed step.
    pub fn remove_entries(&self, user: &str, numbers: &[u64]) -> Result<()> {
        let mut batch = Batch::default();
        for number in numbers {
            batch.remove(keys::entry(user, *number));
        }
        self.mailboxes.apply_batch(batch).map_err(StoreError::from_sled)?;
        self.flush()
    }

    /// Bytes on disk under the store directory.
    pub fn size_on_disk(&self) -> Result<u64> {
        self.db.size_on_disk().map_err(StoreError::from_sled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(n: u64, body: &[u8]) -> Vec<u8> {
        let r = MessageRecord {
            number: n,
            received_at: 1,
            sender: "a@b".into(),
            recipients: vec!["c@d".into()],
            trace: "Received: x\r\n".into(),
            body: body.to_vec(),
        };
        rkyv::to_bytes::<rancor::Error>(&r).unwrap().to_vec()
    }

    #[test]
    fn commit_numbers_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            assert_eq!(store.head().unwrap(), 0);
            assert_eq!(store.commit(0, &[record(1, b"one"), record(2, b"two")]).unwrap(), 2);
            assert_eq!(store.commit(2, &[record(3, b"three")]).unwrap(), 3);
        }
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.head().unwrap(), 3);
        let m = store.message(2).unwrap().unwrap();
        assert_eq!(m.record().body.as_slice(), b"two");
        assert_eq!(m.record().number, 2);
        assert!(store.message(4).unwrap().is_none());
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
        store.deliver(&[(1, vec!["a@x".into()]), (2, vec!["a@x".into(), "ab@x".into()]), (300, vec!["a@x".into()])]).unwrap();
        assert_eq!(store.mailbox("a@x").unwrap(), vec![1, 2, 300]);
        assert_eq!(store.mailbox("ab@x").unwrap(), vec![2]);
        assert_eq!(store.delivered_through().unwrap(), 300);
        store.remove_entries("a@x", &[2]).unwrap();
        assert_eq!(store.mailbox("a@x").unwrap(), vec![1, 300]);
    }

    #[test]
    fn garbage_bytes_are_reported_corrupt_not_panicked_on() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.messages.insert(keys::message(1), &b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff"[..]).unwrap();
        assert!(matches!(store.message(1), Err(StoreError::Corrupt(_))));
    }
}
