//! The client-side model of the server session.

use super::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Phase {
    Fresh,
    Greeted,
    Mail,
    Data,
    Closed,
}

/// The server session as CONTRACT §3 describes it, from the client's side.
pub(super) struct Model {
    pub(super) phase: Phase,
    /// Distinct accepted recipients of the open transaction, lowercased (a recipient given
    /// twice is one delivery, so it is counted once towards the 100).
    pub(super) recipients: HashSet<String>,
    pub(super) errors: u32,
    /// From the greeting; binding in HELO/EHLO and 421 replies.
    pub(super) hostname: String,
}

impl Model {
    pub(super) fn new(hostname: String) -> Model {
        Model { phase: Phase::Fresh, recipients: HashSet::new(), errors: 0, hostname }
    }

    /// The replies the contract requires for this command, in order (an error reply may
    /// be followed by `421 too many errors`), and the new phase.
    pub(super) fn apply(&mut self, kind: &Kind) -> Vec<Expected> {
        let first = self.transition(kind);
        let mut replies = vec![first];
        if replies[0].code >= 400 {
            self.errors += 1;
            if self.errors >= MAX_ERRORS && self.phase != Phase::Closed {
                self.phase = Phase::Closed;
                let bye = Expected::new(421, Some("4.7.0")).phrase(self.hostname.clone()).phrase("too many errors");
                replies.push(bye.closing());
            }
        }
        replies
    }

    pub(super) fn transition(&mut self, kind: &Kind) -> Expected {
        use Phase::*;
        // The planner sends nothing after a close and nothing but the message after 354;
        // a bug there must not pass silently as a mismatch of the server.
        let in_data = self.phase == Data;
        assert!(
            self.phase != Closed && in_data == (*kind == Kind::Body),
            "stress planner bug: {kind:?} in phase {:?}",
            self.phase
        );
        match (self.phase, kind) {
            (_, Kind::Quit) => {
                self.phase = Closed;
                Expected::new(221, Some("2.0.0")).closing()
            }
            (_, Kind::Helo | Kind::Ehlo) => {
                // RFC 5321 §4.1.4: HELO/EHLO again resets the transaction.
                self.phase = Greeted;
                self.recipients.clear();
                let shape = if *kind == Kind::Ehlo { Shape::Ehlo } else { Shape::Plain };
                Expected::new(250, None).phrase(self.hostname.clone()).shape(shape)
            }
            (_, Kind::HeloMissing) => Expected::new(501, None),
            (_, Kind::Rset) => {
                if self.phase != Fresh {
                    self.phase = Greeted;
                }
                self.recipients.clear();
                Expected::new(250, Some("2.0.0"))
            }
            (_, Kind::Noop) => Expected::new(250, Some("2.0.0")),
            (_, Kind::Vrfy) => Expected::new(252, Some("2.0.0")),
            (_, Kind::Unknown) => Expected::new(502, Some("5.5.2")).phrase("command not recognized"),
            (_, Kind::TooLong) => Expected::new(500, Some("5.5.2")).phrase("line too long"),
            (Fresh, Kind::Mail(_) | Kind::Rcpt(_) | Kind::Data) => Expected::new(503, Some("5.5.1")),
            (Greeted, Kind::Mail(sender)) => match sender {
                Sender::Valid => {
                    self.phase = Mail;
                    self.recipients.clear();
                    Expected::new(250, Some("2.1.0"))
                }
                Sender::Syntax => Expected::new(501, Some("5.5.4")),
                Sender::Invalid(address) => Expected::new(501, Some("5.1.7")).phrase(address.clone()),
                Sender::TooBig => Expected::new(552, Some("5.3.4")),
            },
            (Mail, Kind::Mail(_)) => Expected::new(503, Some("5.5.1")).phrase("nested MAIL command"),
            (Greeted, Kind::Rcpt(_) | Kind::Data) => Expected::new(503, Some("5.5.1")),
            (Mail, Kind::Rcpt(Recipient::Syntax)) => Expected::new(501, Some("5.5.4")),
            (Mail, Kind::Rcpt(Recipient::Invalid(address))) => {
                Expected::new(501, Some("5.1.3")).phrase(address.clone())
            }
            (Mail, Kind::Rcpt(_)) if self.recipients.len() >= MAX_RECIPIENTS => Expected::new(452, Some("4.5.3")),
            (Mail, Kind::Rcpt(Recipient::Known(address))) => {
                self.recipients.insert(address.to_ascii_lowercase());
                Expected::new(250, Some("2.1.5"))
            }
            (Mail, Kind::Rcpt(Recipient::UnknownUser(address))) => {
                Expected::new(550, Some("5.1.1")).phrase(address.clone()).phrase("User unknown")
            }
            (Mail, Kind::Rcpt(Recipient::Relay(address))) => {
                Expected::new(554, Some("5.7.1")).phrase(address.clone()).phrase("Relay access denied")
            }
            (Mail, Kind::Data) if self.recipients.is_empty() => Expected::new(503, Some("5.5.1")),
            (Mail, Kind::Data) => {
                self.phase = Data;
                Expected::new(354, None)
            }
            (Data, Kind::Body) => {
                self.phase = Greeted;
                self.recipients.clear();
                Expected::new(250, Some("2.0.0")).shape(Shape::Delivered)
            }
            (phase, kind) => panic!("stress planner bug: {kind:?} in phase {phase:?}"),
        }
    }
}
