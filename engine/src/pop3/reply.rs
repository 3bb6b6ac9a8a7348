//! Every POP3 reply maild sends, as named constructors.
//!
//! The wording lives here and nowhere else, so a change to a reply is a diff of this one
//! file. Bracketed response codes come from RFC 2449 §8 (`IN-USE`) and RFC 3206 (`AUTH`,
//! `SYS/TEMP`); CAPA advertises RESP-CODES and AUTH-RESP-CODE so clients may act on them,
//! e.g. not forget a password on `[IN-USE]` or `[SYS/TEMP]`. The one reply not built
//! here is RETR's and TOP's `+OK`, which [`super::write_message`] writes with the message.

use std::fmt;

/// One POP3 reply, possibly multi-line, ready for the wire.
#[derive(Clone, PartialEq, Eq)]
pub struct Reply {
    /// `+OK` or a `+ ` continuation, as opposed to `-ERR`.
    positive: bool,
    wire: Vec<u8>,
}

impl Reply {
    fn positive(text: impl fmt::Display) -> Reply {
        Reply::line(true, format!("+OK {text}"))
    }

    fn negative(text: impl fmt::Display) -> Reply {
        Reply::line(false, format!("-ERR {text}"))
    }

    fn line(positive: bool, mut text: String) -> Reply {
        text.push_str("\r\n");
        Reply { positive, wire: text.into_bytes() }
    }

    /// A multi-line `+OK` reply (RFC 1939 §3): the first line, the lines, then `.`.
    fn multi(first: impl fmt::Display, lines: impl IntoIterator<Item = String>) -> Reply {
        let mut wire = format!("+OK {first}").trim_end().to_string();
        wire.push_str("\r\n");
        for line in lines {
            // RFC 1939 §3: a line starting with the termination octet is byte-stuffed.
            // None of ours do, but the rule costs nothing to keep.
            if line.starts_with('.') {
                wire.push('.');
            }
            wire.push_str(&line);
            wire.push_str("\r\n");
        }
        wire.push_str(".\r\n");
        Reply { positive: true, wire: wire.into_bytes() }
    }

    /// `+OK` and `+ ` restart the daemon's idle timer; `-ERR` does not.
    pub fn is_positive(&self) -> bool {
        self.positive
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.wire
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.wire
    }

    /// RFC 1939 §4: any positive greeting. No APOP timestamp: maild stores password
    /// hashes, which APOP cannot use.
    pub fn greeting(hostname: &str) -> Reply {
        Reply::positive(format_args!("{hostname} POP3 maild ready"))
    }

    /// RFC 2449 §5. `stls` is true while STLS can be used (RFC 2595 §4); `login` while a
    /// password may be sent, so USER and SASL PLAIN are listed only then.
    pub fn capabilities(stls: bool, login: bool) -> Reply {
        let mut lines: Vec<String> =
            ["TOP", "UIDL", "USER", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING", "SASL PLAIN", "IMPLEMENTATION maild"]
                .iter()
                .filter(|&&capability| login || !matches!(capability, "USER" | "SASL PLAIN"))
                .map(|s| s.to_string())
                .collect();
        if stls {
            lines.push("STLS".into());
        }
        Reply::multi("Capability list follows", lines)
    }

    /// The same answer whether or not the user exists (CONTRACT §6): RFC 1939 §7 lets USER
    /// refuse an unknown mailbox, which would let anyone list the mailboxes.
    pub fn user_accepted() -> Reply {
        Reply::positive("send PASS")
    }

    /// RFC 3206 §4 [AUTH]: the client must start TLS before it may send a password.
    pub fn plaintext_disallowed() -> Reply {
        Reply::negative("[AUTH] plaintext authentication disallowed on non-secure connections; use STLS first")
    }

    pub fn need_user() -> Reply {
        Reply::negative("send USER first")
    }

    pub fn logged_in(user: &str, messages: usize, octets: u64) -> Reply {
        let user = crate::lines::printable(user);
        Reply::positive(format_args!("{user}'s maildrop has {messages} messages ({octets} octets)"))
    }

    pub fn bad_credentials() -> Reply {
        Reply::negative("[AUTH] invalid user name or password")
    }

    /// RFC 2449 §8.1.2: the maildrop is open in another session.
    pub fn login_throttled() -> Reply {
        Reply::negative("[SYS/TEMP] too many login attempts, try again later")
    }

    pub fn too_many_login_failures() -> Reply {
        Reply::negative("[AUTH] too many failed logins, closing")
    }

    pub fn locked() -> Reply {
        Reply::negative("[IN-USE] maildrop locked")
    }

    pub fn maildrop_unavailable() -> Reply {
        Reply::negative("[SYS/TEMP] maildrop unavailable")
    }

    /// The answer to `AUTH` without a mechanism, a listing some clients (Outlook) ask for.
    pub fn mechanisms() -> Reply {
        Reply::multi("", ["PLAIN".to_string()])
    }

    /// RFC 5034 §4: a `+ ` line carries the server challenge, empty for PLAIN.
    pub fn continuation() -> Reply {
        Reply { positive: true, wire: b"+ \r\n".to_vec() }
    }

    pub fn unsupported_mechanism() -> Reply {
        Reply::negative("[AUTH] unsupported mechanism")
    }

    /// RFC 5034 §4: a `*` line cancels, and the server must answer `-ERR`.
    pub fn auth_cancelled() -> Reply {
        Reply::negative("[AUTH] authentication cancelled")
    }

    pub fn bad_base64() -> Reply {
        Reply::negative("[AUTH] invalid base64 in response")
    }

    pub fn malformed_plain() -> Reply {
        Reply::negative("[AUTH] malformed PLAIN response")
    }

    pub fn authzid_mismatch() -> Reply {
        Reply::negative("[AUTH] authorization identity must be empty or the user name")
    }

    pub fn auth_line_too_long() -> Reply {
        Reply::negative("[AUTH] response too long")
    }

    pub fn stls_ok() -> Reply {
        Reply::positive("begin TLS negotiation")
    }

    pub fn stls_unavailable() -> Reply {
        Reply::negative("STLS not available")
    }

    pub fn already_tls() -> Reply {
        Reply::negative("already using TLS")
    }

    pub fn stat(messages: usize, octets: u64) -> Reply {
        Reply::positive(format_args!("{messages} {octets}"))
    }

    /// RFC 1939 §5 LIST: one `msg size` line per message not marked deleted.
    /// RFC 1939 §7 LIST without an argument: this first line, then one [`listing_line`]
    /// per message not marked deleted, then `.`.
    ///
    /// [`listing_line`]: Reply::listing_line
    pub fn listing_header(messages: usize, octets: u64) -> Reply {
        Reply::positive(format_args!("{messages} messages ({octets} octets)"))
    }

    /// One `msg value` line of a LIST (size) or UIDL (unique id) answer. Digits only, so
    /// no line needs byte-stuffing.
    pub fn listing_line(out: &mut Vec<u8>, msg: usize, value: u64) {
        use std::io::Write as _;
        let _ = write!(out, "{msg} {value}\r\n");
    }

    pub fn list_one(msg: usize, size: u64) -> Reply {
        Reply::positive(format_args!("{msg} {size}"))
    }

    /// RFC 1939 §7 UIDL without an argument: this line, then one [`listing_line`] per
    /// message not marked deleted, then `.`.
    ///
    /// [`listing_line`]: Reply::listing_line
    pub fn unique_ids_header() -> Reply {
        Reply::positive("unique-id listing follows")
    }

    pub fn unique_id(msg: usize, uid: u64) -> Reply {
        Reply::positive(format_args!("{msg} {uid}"))
    }

    pub fn no_such_message() -> Reply {
        Reply::negative("no such message")
    }

    pub fn deleted(msg: usize) -> Reply {
        Reply::positive(format_args!("message {msg} deleted"))
    }

    pub fn already_deleted(msg: usize) -> Reply {
        Reply::negative(format_args!("message {msg} already deleted"))
    }

    pub fn ok() -> Reply {
        Reply::line(true, "+OK".into())
    }

    /// QUIT in AUTHORIZATION (RFC 1939 §4).
    pub fn bye() -> Reply {
        Reply::positive("bye")
    }

    /// QUIT in TRANSACTION once the deletions, if any, are durable (RFC 1939 §6).
    pub fn signing_off(left: usize) -> Reply {
        Reply::positive(format_args!("maild signing off ({left} messages left)"))
    }

    /// RFC 1939 §6: "-ERR some deleted messages not removed".
    pub fn commit_failed() -> Reply {
        Reply::negative("[SYS/TEMP] some deleted messages not removed")
    }

    pub fn wrong_state() -> Reply {
        Reply::negative("command not valid in this state")
    }

    pub fn syntax(usage: &str) -> Reply {
        Reply::negative(format_args!("syntax: {usage}"))
    }

    pub fn unknown_command() -> Reply {
        Reply::negative("unknown command")
    }

    pub fn line_too_long() -> Reply {
        Reply::negative("line too long")
    }

    /// Input arrived faster than a login could be answered, past what the session queues.
    pub fn too_much_input() -> Reply {
        Reply::negative("[SYS/TEMP] too much pipelined input")
    }

    /// RFC 1939 §3: the autologout timer; the session never enters UPDATE, so nothing is
    /// deleted.
    pub fn timeout() -> Reply {
        Reply::negative("[SYS/TEMP] autologout: idle timeout")
    }

    pub fn shutting_down() -> Reply {
        Reply::negative("[SYS/TEMP] server shutting down")
    }
}

impl fmt::Debug for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Reply({:?})", String::from_utf8_lossy(&self.wire))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_table() {
        let table: &[(Reply, &str)] = &[
            (Reply::greeting("pop.test"), "+OK pop.test POP3 maild ready\r\n"),
            (Reply::mechanisms(), "+OK\r\nPLAIN\r\n.\r\n"),
            (Reply::continuation(), "+ \r\n"),
            (Reply::ok(), "+OK\r\n"),
            (Reply::listing_header(2, 30), "+OK 2 messages (30 octets)\r\n"),
            (Reply::unique_ids_header(), "+OK unique-id listing follows\r\n"),
            (Reply::logged_in("a@d", 1, 5), "+OK a@d's maildrop has 1 messages (5 octets)\r\n"),
            (Reply::locked(), "-ERR [IN-USE] maildrop locked\r\n"),
            (
                Reply::capabilities(false, true),
                "+OK Capability list follows\r\nTOP\r\nUIDL\r\nUSER\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\n\
                 PIPELINING\r\nSASL PLAIN\r\nIMPLEMENTATION maild\r\n.\r\n",
            ),
            (
                Reply::capabilities(true, false),
                "+OK Capability list follows\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\n\
                 PIPELINING\r\nIMPLEMENTATION maild\r\nSTLS\r\n.\r\n",
            ),
        ];
        for (reply, wire) in table {
            assert_eq!(String::from_utf8_lossy(reply.as_bytes()), *wire);
        }
    }

    #[test]
    fn only_ok_and_continuation_are_positive() {
        assert!(Reply::ok().is_positive());
        assert!(Reply::continuation().is_positive());
        assert!(Reply::capabilities(true, true).is_positive());
        assert!(!Reply::no_such_message().is_positive());
        assert!(!Reply::bad_credentials().is_positive());
    }
}
