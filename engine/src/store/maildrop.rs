//! POP3 maildrops over the store (RFC 1939 §8): a user's maildrop is opened by one session
//! at a time, fixed at login (after the deliver stage has caught up, so mail acknowledged
//! before the login is in it), and its deletions are applied at QUIT, durably.

use std::collections::HashSet;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use crate::mbox::return_path;
use crate::pop3::MaildropEntry;
use crate::store::{Result, Store, StoreError, StoredMessage};

/// How long a login waits for the deliver stage to catch up before it opens the maildrop.
const SETTLE: Duration = Duration::from_secs(5);

/// Every maildrop of one store, and which are open.
pub struct Maildrops {
    store: Store,
    open: Mutex<HashSet<String>>,
}

/// Why a maildrop could not be opened.
#[derive(Debug)]
pub enum OpenError {
    /// Another session has it open.
    Locked,
    Store(StoreError),
}

/// One open maildrop; closed (and free for the next session) when dropped.
pub struct Maildrop<'a> {
    maildrops: &'a Maildrops,
    user: String,
}

impl Maildrops {
    pub fn new(store: Store) -> Maildrops {
        Maildrops { store, open: Mutex::default() }
    }

    /// Opens `user`'s maildrop for this session alone, and lists its messages with the
    /// sizes POP3 reports (the `Return-Path:` line included, as RETR sends it).
    pub fn open(&self, user: &str) -> std::result::Result<(Maildrop<'_>, Vec<MaildropEntry>), OpenError> {
        if !self.open.lock().unwrap_or_else(PoisonError::into_inner).insert(user.to_string()) {
            return Err(OpenError::Locked);
        }
        let maildrop = Maildrop { maildrops: self, user: user.to_string() };
        self.store.wait_for_delivery(SETTLE, &format!("pop3 login of {user}"));
        let entries = self.entries(user).map_err(OpenError::Store)?;
        Ok((maildrop, entries))
    }

    fn entries(&self, user: &str) -> Result<Vec<MaildropEntry>> {
        let mut entries = Vec::new();
        for number in self.store.mailbox(user)? {
            if let Some(message) = self.store.message(number)? {
                let size = return_path(&message.record().sender).len() as u64 + message.stored_len();
                entries.push(MaildropEntry { number, size });
            }
        }
        Ok(entries)
    }
}

impl Maildrop<'_> {
    pub fn user(&self) -> &str {
        &self.user
    }

    /// One message of the maildrop, as stored.
    pub fn message(&self, number: u64) -> Result<Option<StoredMessage>> {
        self.maildrops.store.message(number)
    }

    /// Applies the session's deletions durably (the `+OK` to QUIT waits for this).
    pub fn delete(&self, numbers: &[u64]) -> Result<()> {
        self.maildrops.store.remove_entries(&self.user, numbers)
    }
}

impl Drop for Maildrop<'_> {
    fn drop(&mut self) {
        self.maildrops.open.lock().unwrap_or_else(PoisonError::into_inner).remove(&self.user);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_maildrop_is_open_in_one_session_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let maildrops = Maildrops::new(Store::open(dir.path()).unwrap());
        let (first, entries) = maildrops.open("a@d.test").unwrap();
        assert!(entries.is_empty());
        assert!(matches!(maildrops.open("a@d.test"), Err(OpenError::Locked)));
        let (other, _) = maildrops.open("b@d.test").unwrap();
        drop(first);
        let (again, _) = maildrops.open("a@d.test").unwrap();
        assert_eq!((again.user(), other.user()), ("a@d.test", "b@d.test"));
    }
}
