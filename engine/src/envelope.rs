//! What flows through the pipeline: a whole [`Message`] with its [`Envelope`], and why
//! the pipeline did not commit one ([`CommitError`]). The SMTP session produces them, the
//! forward stage writes bounces with them; neither the pipeline nor the bounce path
//! depends on SMTP for them.

use std::borrow::Cow;
use std::net::IpAddr;

use crate::directory::Accepted;
use crate::store::bodies::SpoolFile;

/// The envelope of one message: who sent it, to whom, and from where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    pub helo: String,
    /// True if the client greeted with EHLO (the trace header says ESMTP then).
    pub extended: bool,
    /// True if the message came over TLS (the trace header says ESMTPS then).
    pub tls: bool,
    /// The user key the client authenticated as (ESMTPA, ESMTPSA), if it did.
    pub user: Option<String>,
    pub client_ip: IpAddr,
    /// The reverse path; empty for the null sender `<>`.
    pub sender: String,
    /// Accepted recipients in RCPT order, each once.
    pub recipients: Vec<String>,
    /// How each of `recipients` was accepted (same order); empty for mail the server
    /// writes itself, whose routes the deliver stage decides.
    pub routes: Vec<Accepted>,
}

/// A whole message handed to the pipeline.
#[derive(Debug)]
pub struct Message {
    pub envelope: Envelope,
    /// The client's bytes after dot-unstuffing, exactly as sent otherwise.
    pub body: Body,
}

/// A message's bytes: in memory, or (over [`SPILL_AT`] octets) in a spool file.
///
/// [`SPILL_AT`]: crate::store::bodies::SPILL_AT
#[derive(Debug)]
pub enum Body {
    Memory(Vec<u8>),
    Spooled(Box<SpoolFile>),
}

impl Body {
    pub fn len(&self) -> u64 {
        match self {
            Body::Memory(bytes) => bytes.len() as u64,
            Body::Spooled(file) => file.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes, if the body is held in memory.
    pub fn in_memory(&self) -> Option<&[u8]> {
        match self {
            Body::Memory(bytes) => Some(bytes),
            Body::Spooled(_) => None,
        }
    }

    /// Up to `max` octets from the start: where the header block is.
    pub fn head(&mut self, max: usize) -> std::io::Result<Cow<'_, [u8]>> {
        match self {
            Body::Memory(bytes) => Ok(Cow::Borrowed(&bytes[..bytes.len().min(max)])),
            Body::Spooled(file) => file.head(max).map(Cow::Owned),
        }
    }
}

impl From<Vec<u8>> for Body {
    fn from(bytes: Vec<u8>) -> Body {
        Body::Memory(bytes)
    }
}

/// Why the pipeline did not commit a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommitError {
    /// The store failed (I/O error): try again later (SMTP `451 4.3.0`).
    Transient,
    /// The store is out of space (`452 4.3.1`).
    Full,
    /// The message carries more `Received:` headers than allowed: a mail loop, refused
    /// for good (`554 5.4.6`).
    TooManyHops,
}

impl CommitError {
    /// For logs and for callers that are not SMTP sessions (bounces, admin).
    pub fn describe(self) -> &'static str {
        match self {
            CommitError::Transient => "the store failed (see the log)",
            CommitError::Full => "the store is full",
            CommitError::TooManyHops => "too many hops (mail loop detected)",
        }
    }
}
