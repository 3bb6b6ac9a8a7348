//! Every SMTP reply maild sends, as named constructors.
//!
//! The wording binding in `shared/CONTRACT.md` §3 lives here and nowhere else, so a change
//! to a reply is a diff of this one file. Enhanced status codes (RFC 3463) are sent on
//! every reply after the greeting, whether the client said HELO or EHLO.

use std::fmt;

use crate::lines::printable;

/// One SMTP reply, possibly multi-line, ready for the wire.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    code: u16,
    wire: String,
}

impl Reply {
    fn line(code: u16, text: impl fmt::Display) -> Reply {
        Reply { code, wire: format!("{code} {text}\r\n") }
    }

    /// A multi-line reply: `250-first`, …, `250 last` (RFC 5321 §4.2.1).
    fn lines(code: u16, lines: &[String]) -> Reply {
        let mut wire = String::new();
        for (i, line) in lines.iter().enumerate() {
            let sep = if i + 1 == lines.len() { ' ' } else { '-' };
            wire.push_str(&format!("{code}{sep}{line}\r\n"));
        }
        Reply { code, wire }
    }

    pub fn code(&self) -> u16 {
        self.code
    }

    /// 4xx and 5xx replies count towards the session's error limit.
    pub fn is_error(&self) -> bool {
        self.code >= 400
    }

    pub fn as_bytes(&self) -> &[u8] {
        self.wire.as_bytes()
    }

    pub fn greeting(hostname: &str) -> Reply {
        Reply::line(220, format_args!("{hostname} ESMTP maild"))
    }

    pub fn helo(hostname: &str) -> Reply {
        Reply::line(250, hostname)
    }

    pub fn ehlo(hostname: &str, extensions: &[String]) -> Reply {
        let mut lines = vec![hostname.to_string()];
        lines.extend(extensions.iter().cloned());
        Reply::lines(250, &lines)
    }

    pub fn ok() -> Reply {
        Reply::line(250, "2.0.0 Ok")
    }

    pub fn sender_ok() -> Reply {
        Reply::line(250, "2.1.0 Ok")
    }

    pub fn recipient_ok() -> Reply {
        Reply::line(250, "2.1.5 Ok")
    }

    pub fn start_data() -> Reply {
        Reply::line(354, "End data with <CR><LF>.<CR><LF>")
    }

    pub fn delivered(number: u64) -> Reply {
        Reply::line(250, format_args!("2.0.0 Ok: delivered message {number}"))
    }

    pub fn vrfy() -> Reply {
        Reply::line(252, "2.0.0 Cannot VRFY user, but will accept message and attempt delivery")
    }

    pub fn help() -> Reply {
        Reply::line(214, "2.0.0 Commands: HELO EHLO MAIL RCPT DATA RSET NOOP VRFY QUIT")
    }

    pub fn bye() -> Reply {
        Reply::line(221, "2.0.0 Bye")
    }

    pub fn helo_syntax(verb: &str) -> Reply {
        Reply::line(501, format_args!("5.5.4 Syntax: {verb} hostname"))
    }

    pub fn need_helo() -> Reply {
        Reply::line(503, "5.5.1 Error: send HELO/EHLO first")
    }

    pub fn nested_mail() -> Reply {
        Reply::line(503, "5.5.1 Error: nested MAIL command")
    }

    pub fn need_mail() -> Reply {
        Reply::line(503, "5.5.1 Error: need MAIL command")
    }

    pub fn need_rcpt() -> Reply {
        Reply::line(503, "5.5.1 Error: need RCPT command")
    }

    pub fn mail_syntax() -> Reply {
        Reply::line(501, "5.5.4 Syntax: MAIL FROM:<address>")
    }

    pub fn rcpt_syntax() -> Reply {
        Reply::line(501, "5.5.4 Syntax: RCPT TO:<address>")
    }

    pub fn null_sender_on_submission() -> Reply {
        Reply::line(553, "5.7.1 <>: Sender address rejected: the null sender is for bounces, not for submission")
    }

    // These three quote what the client sent and failed to parse: made printable.
    pub fn bad_sender(address: &str) -> Reply {
        Reply::line(501, format_args!("5.1.7 <{}>: Sender address rejected: invalid address", printable(address)))
    }

    pub fn bad_recipient(address: &str) -> Reply {
        Reply::line(501, format_args!("5.1.3 <{}>: Recipient address rejected: invalid address", printable(address)))
    }

    pub fn unknown_parameter(parameter: &str) -> Reply {
        Reply::line(555, format_args!("5.5.4 Unsupported option: {}", printable(parameter)))
    }

    pub fn too_many_recipients() -> Reply {
        Reply::line(452, "4.5.3 Error: too many recipients")
    }

    // Parsed addresses may still hold 8-bit text: quoted printable too.
    pub fn user_unknown(address: &str) -> Reply {
        Reply::line(550, format_args!("5.1.1 <{}>: Recipient address rejected: User unknown", printable(address)))
    }

    pub fn relay_denied(address: &str) -> Reply {
        Reply::line(554, format_args!("5.7.1 <{}>: Relay access denied", printable(address)))
    }

    pub fn too_big() -> Reply {
        Reply::line(552, "5.3.4 Message size exceeds fixed limit")
    }

    pub fn store_failed() -> Reply {
        Reply::line(451, "4.3.0 Error: queue file write error, try again later")
    }

    /// The sessions' memory budget for message data is spent (`--max-data-in-flight`).
    pub fn memory_full() -> Reply {
        Reply::line(452, "4.3.1 Insufficient system resources: too much mail in flight, try again later")
    }

    pub fn store_full() -> Reply {
        Reply::line(452, "4.3.1 Insufficient system storage")
    }

    pub fn too_many_hops() -> Reply {
        Reply::line(554, "5.4.6 Too many hops (mail loop detected)")
    }

    pub fn not_recognized() -> Reply {
        Reply::line(502, "5.5.2 Error: command not recognized")
    }

    pub fn ready_for_tls() -> Reply {
        Reply::line(220, "2.0.0 Ready to start TLS")
    }

    pub fn tls_syntax() -> Reply {
        Reply::line(501, "5.5.4 Syntax: STARTTLS")
    }

    pub fn auth_offered() -> Reply {
        Reply::line(334, "")
    }

    /// A LOGIN challenge: base64 of `Username:` or `Password:`.
    pub fn auth_challenge(prompt: &str) -> Reply {
        Reply::line(334, crate::sasl::login_prompt(prompt))
    }

    pub fn auth_succeeded() -> Reply {
        Reply::line(235, "2.7.0 Authentication successful")
    }

    pub fn auth_failed() -> Reply {
        Reply::line(535, "5.7.8 Error: authentication failed")
    }

    /// RFC 4954 §6: the check was not made; the client may try again later.
    pub fn auth_throttled() -> Reply {
        Reply::line(454, "4.7.0 Temporary authentication failure: too many attempts, try again later")
    }

    pub fn too_many_auth_failures(hostname: &str) -> Reply {
        Reply::line(421, format_args!("4.7.0 {hostname} Error: too many failed authentications"))
    }

    pub fn auth_aborted() -> Reply {
        Reply::line(501, "5.7.0 Authentication aborted")
    }

    pub fn auth_undecodable() -> Reply {
        Reply::line(501, "5.5.2 Cannot decode response")
    }

    pub fn auth_syntax() -> Reply {
        Reply::line(501, "5.5.4 Syntax: AUTH mechanism [initial-response]")
    }

    pub fn auth_mechanism_unknown() -> Reply {
        Reply::line(504, "5.5.4 Unrecognized authentication type")
    }

    pub fn auth_already_done() -> Reply {
        Reply::line(503, "5.5.1 Error: already authenticated")
    }

    pub fn auth_needs_tls() -> Reply {
        Reply::line(538, "5.7.11 Encryption required for requested authentication mechanism")
    }

    pub fn auth_required() -> Reply {
        Reply::line(530, "5.7.0 Authentication required")
    }

    pub fn sender_not_owned(address: &str, user: &str) -> Reply {
        let (address, user) = (printable(address), printable(user));
        Reply::line(553, format_args!("5.7.1 <{address}>: Sender address rejected: not owned by user {user}"))
    }

    pub fn in_transaction() -> Reply {
        Reply::line(503, "5.5.1 Error: MAIL transaction in progress")
    }

    pub fn tls_already_active() -> Reply {
        Reply::line(503, "5.5.1 Error: TLS already active")
    }

    pub fn not_implemented() -> Reply {
        Reply::line(502, "5.5.1 Error: command not implemented")
    }

    pub fn line_too_long() -> Reply {
        Reply::line(500, "5.5.2 Error: line too long")
    }

    pub fn timeout(hostname: &str) -> Reply {
        Reply::line(421, format_args!("4.4.2 {hostname} Error: timeout exceeded"))
    }

    pub fn too_many_errors(hostname: &str) -> Reply {
        Reply::line(421, format_args!("4.7.0 {hostname} Error: too many errors"))
    }

    pub fn too_many_connections(hostname: &str) -> Reply {
        Reply::line(421, format_args!("4.7.0 {hostname} Error: too many connections, try again later"))
    }

    pub fn shutting_down(hostname: &str) -> Reply {
        Reply::line(421, format_args!("4.3.2 {hostname} Service shutting down, closing connection"))
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.wire.trim_end())
    }
}
