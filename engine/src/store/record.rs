//! The records maild stores, as rkyv structs, and the keys they live under.
//!
//! rkyv is built with its `unaligned` feature, so an archived record can be read in place
//! from a sled value (sled's `IVec` gives no alignment guarantee). Every read validates the
//! bytes (`bytecheck`) because they come from disk.

use rkyv::{Archive, Deserialize, Serialize};

use crate::directory::Accepted;

/// One accepted message: its envelope, the trace header maild added, and the client's
/// bytes. The message as delivered is `trace` followed by `body`. A large body is in its
/// own file instead (`body` is empty then; see `bodies.rs`): read it through
/// [`super::StoredMessage`].
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct MessageRecord {
    pub number: u64,
    /// Seconds since the Unix epoch when the message was committed.
    pub received_at: u64,
    /// The reverse path; empty for the null sender.
    pub sender: String,
    /// Recipients in RCPT order.
    pub recipients: Vec<String>,
    /// maild's own `Received:` header, CRLF-terminated.
    pub trace: String,
    pub body: Vec<u8>,
}

/// How a message's recipients were accepted and whether its client had authenticated,
/// stored beside its record (`o` + number, written in the same batch). Bytes: a flags
/// byte (bit 0: authenticated), then one byte per recipient, `L`, `P` or `R`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Routing {
    pub authenticated: bool,
    pub routes: Vec<Accepted>,
}

impl Routing {
    pub fn encode(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(1 + self.routes.len());
        bytes.push(u8::from(self.authenticated));
        bytes.extend(self.routes.iter().map(|route| match route {
            Accepted::Local => b'L',
            Accepted::Peer => b'P',
            Accepted::Relay => b'R',
        }));
        bytes
    }

    pub fn decode(bytes: &[u8]) -> Option<Routing> {
        let (&flags, routes) = bytes.split_first()?;
        if flags > 1 {
            return None;
        }
        let routes = routes
            .iter()
            .map(|byte| match byte {
                b'L' => Some(Accepted::Local),
                b'P' => Some(Accepted::Peer),
                b'R' => Some(Accepted::Relay),
                _ => None,
            })
            .collect::<Option<Vec<Accepted>>>()?;
        Some(Routing { authenticated: flags == 1, routes })
    }
}

/// Where a queue record may be sent.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueRoute {
    /// To the peer server that owns the domain; while none does, the record waits.
    Peer,
    /// To the domain's MX hosts (accepted from an authenticated client, or a bounce).
    Relay,
    /// Queued by a maild that did not keep routes: the peer if one owns the domain now,
    /// else MX relay unless a discovered peer owned it (the old rule).
    Undecided,
}

/// One message waiting to be forwarded to one domain (the outbound queue).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct QueueRecord {
    pub number: u64,
    /// The destination domain; its server is looked up at each attempt.
    pub domain: String,
    pub route: QueueRoute,
    /// Recipients still to be delivered there, in RCPT order.
    pub recipients: Vec<String>,
    pub attempts: u32,
    /// Seconds since the epoch when the message entered the queue.
    pub queued_at: u64,
    /// Milliseconds since the epoch of the next attempt.
    pub next_attempt: u64,
    /// Why the last attempt failed; empty before the first.
    pub last_error: String,
}

/// A queue record as maild wrote it before routes were kept (key prefix `q`); the store
/// rewrites these as [`QueueRecord`]s (prefix `Q`) when it opens.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct LegacyQueueRecord {
    pub number: u64,
    pub domain: String,
    pub recipients: Vec<String>,
    pub attempts: u32,
    pub queued_at: u64,
    pub next_attempt: u64,
    pub last_error: String,
}

impl From<LegacyQueueRecord> for QueueRecord {
    fn from(old: LegacyQueueRecord) -> QueueRecord {
        QueueRecord {
            number: old.number,
            domain: old.domain,
            route: QueueRoute::Undecided,
            recipients: old.recipients,
            attempts: old.attempts,
            queued_at: old.queued_at,
            next_attempt: old.next_attempt,
            last_error: old.last_error,
        }
    }
}

/// A user who can receive mail and log in.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    /// The address as it was given to `mailtool user add`.
    pub address: String,
    /// An argon2id PHC string; never the password.
    pub password_hash: String,
}

/// Key layout. Numbers are big-endian so sled's byte order is numeric order.
pub mod keys {
    /// `messages` tree: the highest committed number. Every commit rewrites it, so it
    /// sorts after every other key: it shares a leaf with the newest small keys, and
    /// sled's rewrite of that leaf (every few changes) is small. Next to the first
    /// message records, where `h` was, each rewrite was of up to 64 KiB of them.
    pub const HEAD: &[u8] = b"~head";
    /// `messages` tree: the id of the last journal frame applied (`store/journal.rs`);
    /// at the end of the tree for the same reason as [`HEAD`].
    pub const JOURNAL: &[u8] = b"~journal";
    /// `messages` tree: where an older maild kept [`HEAD`] and [`JOURNAL`]. Once moved,
    /// each holds [`MOVED`], which an older maild refuses as a counter too short to be
    /// one (it reads a counter's last 8 bytes) rather than reading the store as empty.
    pub const LEGACY_HEAD: &[u8] = b"h";
    pub const LEGACY_JOURNAL: &[u8] = b"j";
    pub const MOVED: &[u8] = b"moved";
    /// `messages` tree: `m` + number → [`super::MessageRecord`].
    pub const MESSAGE: u8 = b'm';
    /// `messages` tree: `o` + number → [`super::Routing`] of that message.
    pub const ROUTING: u8 = b'o';
    /// `messages` tree: `e` + number → the length (u64 BE) of the message's body, which
    /// is in its own file (`store/bodies.rs`); the record's body is empty then.
    pub const BODY_FILE: u8 = b'e';
    /// `mailboxes` tree: the highest number the deliver stage has applied.
    pub const DELIVERED: &[u8] = b"d";
    /// `mailboxes` tree: `x` + user key + NUL + number → () (one mailbox entry).
    pub const ENTRY: u8 = b'x';
    /// `mailboxes` tree: `r` + number → how many mailboxes hold the message (u32 BE).
    pub const REFS: u8 = b'r';
    /// `mailboxes` tree: `z` + number → (): no mailbox holds it any more; collectable.
    pub const UNREFERENCED: u8 = b'z';
    /// `messages` tree: `t` + number → (): the record was collected after every mailbox
    /// let it go (its range file keeps a copy). Keeps `1..=head` accounted for.
    pub const TOMBSTONE: u8 = b't';
    /// `mailboxes` tree: `Q` + number + domain → [`super::QueueRecord`].
    pub const QUEUE: u8 = b'Q';
    /// `mailboxes` tree: `q` + number + domain → [`super::LegacyQueueRecord`].
    pub const LEGACY_QUEUE: u8 = b'q';
    /// `mailboxes` tree: the last message the backup stage has written to a range file.
    pub const BACKED_UP: &[u8] = b"b";

    pub fn numbered(prefix: u8, number: u64) -> [u8; 9] {
        let mut key = [prefix; 9];
        key[1..].copy_from_slice(&number.to_be_bytes());
        key
    }

    pub fn message(number: u64) -> [u8; 9] {
        numbered(MESSAGE, number)
    }

    pub fn mailbox_prefix(user: &str) -> Vec<u8> {
        let mut key = Vec::with_capacity(user.len() + 2);
        key.push(ENTRY);
        key.extend_from_slice(user.as_bytes());
        key.push(0);
        key
    }

    pub fn entry(user: &str, number: u64) -> Vec<u8> {
        let mut key = mailbox_prefix(user);
        key.extend_from_slice(&number.to_be_bytes());
        key
    }

    pub fn queue(number: u64, domain: &str) -> Vec<u8> {
        let mut key = numbered(QUEUE, number).to_vec();
        key.extend_from_slice(domain.as_bytes());
        key
    }

    /// Decodes a big-endian u64 value or key suffix.
    pub fn number(bytes: &[u8]) -> Option<u64> {
        let tail: [u8; 8] = bytes.get(bytes.len().checked_sub(8)?..)?.try_into().ok()?;
        Some(u64::from_be_bytes(tail))
    }
}
