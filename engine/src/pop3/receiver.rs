//! Byte-level framing for POP3: the line limits it applies to the shared line receiver
//! ([`crate::lines`]).

/// RFC 2449 §4: a command line is at most 255 octets, the terminating CRLF included.
pub const MAX_COMMAND_LINE: usize = 255;

/// The longest client line in an `AUTH PLAIN` exchange after `+ ` (RFC 5034 §4).
///
/// RFC 4616 §2 asks servers to accept an authzid, authcid and password of up to 255
/// octets each; with two NULs that is 767 octets, 1024 in base64, plus CRLF. The command
/// line limit above would cap an address plus its password at about 187 octets, which is
/// exactly why RFC 5034 lets a client move a long response out of the `AUTH` line.
pub const MAX_SASL_LINE: usize = 1026;

pub use crate::lines::{Line, LineReceiver};
