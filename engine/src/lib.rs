//! maild's engine: everything that is mail and nothing that is a socket.
//!
//! The daemon (`daemon/`) owns sockets, threads, signals and clocks; this crate owns the
//! protocol sessions (pure state machines: bytes in, replies and effects out), the
//! pipeline stages that move a message from intake to the store and on to mailboxes,
//! and the sled store itself. See `docs/ARCHITECTURE.md` for the map.
#![forbid(unsafe_code)]

pub mod address;
pub mod admin;
pub mod budget;
pub mod dialogue;
pub mod directory;
pub mod domain;
pub mod durable;
pub mod duration;
pub mod envelope;
pub mod failpoint;
pub mod forward;
pub mod lines;
pub mod mbox;
pub mod metrics;
pub mod peers;
pub mod pipeline;
pub mod pop3;
pub mod rng;
pub mod sasl;
pub mod smtp;
pub mod store;
#[cfg(test)]
mod testing;
pub mod trace;
pub mod transport;
pub mod users;

pub use address::Address;
pub use store::{Store, StoreError};
