//! Plans: commands with their expected replies, in batches written at once.

use super::*;

/// One command/reply exchange: the bytes to send and the replies they must get.
pub(super) struct Exchange {
    pub(super) wire: Vec<u8>,
    pub(super) label: String,
    pub(super) expects: Vec<Expected>,
}

/// A command before the model has seen it.
pub(super) struct Cmd {
    pub(super) wire: Vec<u8>,
    pub(super) label: String,
    pub(super) kind: Kind,
}

impl Cmd {
    pub(super) fn line(text: impl Into<String>, kind: Kind) -> Cmd {
        let text = text.into();
        let label = if text.len() > 72 {
            let cut = (0..=72).rev().find(|&i| text.is_char_boundary(i)).unwrap_or(0);
            format!("{}… ({} octets)", &text[..cut], text.len() + 2)
        } else {
            text.clone()
        };
        let mut wire = text.into_bytes();
        wire.extend_from_slice(b"\r\n");
        Cmd { wire, label, kind }
    }

    pub(super) fn body(payload: Vec<u8>) -> Cmd {
        let label = format!("<message data, {} octets>", payload.len());
        Cmd { wire: payload, label, kind: Kind::Body }
    }
}

/// Builds a scenario's batches, running the model as commands are added. Commands added
/// once the model says the session is closed are dropped, so a batch never carries bytes
/// past a closing reply.
pub(super) struct Plan<'m> {
    pub(super) model: &'m mut Model,
    pub(super) batches: Vec<Vec<Exchange>>,
    pub(super) pipelined: bool,
    /// The last batch may take more commands (pipelining, and not after DATA).
    pub(super) open: bool,
}

impl<'m> Plan<'m> {
    pub(super) fn new(model: &'m mut Model, pipelined: bool) -> Plan<'m> {
        Plan { model, batches: Vec::new(), pipelined, open: false }
    }

    pub(super) fn phase(&self) -> Phase {
        self.model.phase
    }

    /// Adds a command; false if the session is already closed.
    pub(super) fn push(&mut self, cmd: Cmd) -> bool {
        if self.model.phase == Phase::Closed {
            return false;
        }
        let expects = self.model.apply(&cmd.kind);
        if !self.open {
            self.batches.push(Vec::new());
        }
        // RFC 2920 §3.1: DATA ends a group; what follows it is message data.
        self.open = self.pipelined && cmd.kind != Kind::Data;
        let batch = self.batches.last_mut().expect("a batch was pushed");
        batch.push(Exchange { wire: cmd.wire, label: cmd.label, expects });
        true
    }
}
