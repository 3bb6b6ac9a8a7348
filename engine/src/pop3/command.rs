//! POP3 command parsing (RFC 1939 §3, RFC 2449 §3): one line in, one [`Command`] out. Pure.
//!
//! Keywords are case-insensitive; arguments follow, separated by spaces. RFC 1939 asks for
//! a single space between tokens, but runs of spaces are tolerated as Dovecot does. `PASS`
//! is the exception: its argument is everything after `PASS `, spaces included (RFC 1939
//! §7 allows this because PASS has exactly one argument). The `AUTH PLAIN` response is
//! decoded here too (by [`crate::sasl`]), so the session only sees credentials.
//!
//! RFC 2449 §4 limits arguments to 40 characters; that limit is not enforced, since the
//! full addresses used as user names (CONTRACT §6) can be longer.

use crate::sasl::decode_initial_response;
pub use crate::sasl::{AuthFailure, Credentials};

/// A message-number argument (RFC 1939 §5: "msg").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Msg {
    Number(u64),
    /// Not a decimal number: answered like a message that does not exist.
    Invalid,
}

/// A parsed command line.
#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    User(String),
    Pass(String),
    /// `AUTH` alone: list the SASL mechanisms.
    AuthList,
    /// `AUTH PLAIN`, with its decoded initial response if one was given.
    AuthPlain(Option<Result<Credentials, AuthFailure>>),
    /// `AUTH` with a mechanism other than PLAIN.
    AuthOther,
    Capa,
    Stls,
    Quit,
    Stat,
    List(Option<Msg>),
    Uidl(Option<Msg>),
    Retr(Msg),
    Dele(Msg),
    Top {
        msg: Msg,
        lines: usize,
    },
    Noop,
    Rset,
    /// A known keyword with missing, extra or malformed arguments; holds its usage.
    Syntax(&'static str),
    Unknown,
}

impl Command {
    pub fn parse(line: &[u8]) -> Command {
        let (keyword, rest) = match line.iter().position(|&b| b == b' ') {
            Some(space) => (line.get(..space).unwrap_or_default(), line.get(space + 1..)),
            None => (line, None),
        };
        let keyword = keyword.to_ascii_uppercase();
        if keyword == b"PASS" {
            // The whole rest of the line, spaces and all: passwords may hold them.
            return match rest.map(std::str::from_utf8) {
                Some(Ok(password)) => Command::Pass(password.to_string()),
                _ => Command::Syntax("PASS password"),
            };
        }
        let Ok(rest) = std::str::from_utf8(rest.unwrap_or_default()) else {
            // Arguments are ASCII in RFC 1939 and UTF-8 at most (RFC 6856); anything else
            // is a syntax error of the command it follows.
            return match usage(&keyword) {
                Some(usage) => Command::Syntax(usage),
                None => Command::Unknown,
            };
        };
        let args: Vec<&str> = rest.split(' ').filter(|a| !a.is_empty()).collect();
        match (keyword.as_slice(), args.as_slice()) {
            (b"USER", [name]) => Command::User(name.to_string()),
            (b"AUTH", []) => Command::AuthList,
            (b"AUTH", [mechanism, initial @ ..]) if mechanism.eq_ignore_ascii_case("PLAIN") => match initial {
                [] => Command::AuthPlain(None),
                [initial] => Command::AuthPlain(Some(decode_initial_response(initial))),
                _ => Command::Syntax("AUTH [mechanism [initial-response]]"),
            },
            (b"AUTH", [_, ..]) => Command::AuthOther,
            (b"CAPA", []) => Command::Capa,
            (b"STLS", []) => Command::Stls,
            (b"QUIT", []) => Command::Quit,
            (b"STAT", []) => Command::Stat,
            (b"LIST", []) => Command::List(None),
            (b"LIST", [msg]) => Command::List(Some(parse_msg(msg))),
            (b"UIDL", []) => Command::Uidl(None),
            (b"UIDL", [msg]) => Command::Uidl(Some(parse_msg(msg))),
            (b"RETR", [msg]) => Command::Retr(parse_msg(msg)),
            (b"DELE", [msg]) => Command::Dele(parse_msg(msg)),
            (b"TOP", [msg, lines]) => match parse_count(lines) {
                Some(lines) => Command::Top { msg: parse_msg(msg), lines },
                None => Command::Syntax("TOP msg n"),
            },
            (b"NOOP", []) => Command::Noop,
            (b"RSET", []) => Command::Rset,
            (keyword, _) => match usage(keyword) {
                Some(usage) => Command::Syntax(usage),
                None => Command::Unknown,
            },
        }
    }
}

/// The usage line of a known keyword, shown when its arguments are wrong.
fn usage(keyword: &[u8]) -> Option<&'static str> {
    Some(match keyword {
        b"USER" => "USER name",
        b"PASS" => "PASS password",
        b"AUTH" => "AUTH [mechanism [initial-response]]",
        b"CAPA" => "CAPA",
        b"STLS" => "STLS",
        b"QUIT" => "QUIT",
        b"STAT" => "STAT",
        b"LIST" => "LIST [msg]",
        b"UIDL" => "UIDL [msg]",
        b"RETR" => "RETR msg",
        b"DELE" => "DELE msg",
        b"TOP" => "TOP msg n",
        b"NOOP" => "NOOP",
        b"RSET" => "RSET",
        _ => return None,
    })
}

/// Digits only: `+1` or ` 1` are not message numbers, though `str::parse` would take them.
fn parse_msg(arg: &str) -> Msg {
    if arg.bytes().all(|b| b.is_ascii_digit()) {
        arg.parse().map_or(Msg::Invalid, Msg::Number)
    } else {
        Msg::Invalid
    }
}

/// A line count for TOP. A count too large for `usize` still means "the whole body"
/// (RFC 1939 §7: more lines than the body has sends the entire message), so it saturates.
fn parse_count(arg: &str) -> Option<usize> {
    if arg.is_empty() || !arg.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(arg.parse().unwrap_or(usize::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sasl::decode_continuation;
    use base64::engine::general_purpose::STANDARD as BASE64;
    use base64::Engine as _;

    fn b64(raw: &[u8]) -> String {
        BASE64.encode(raw)
    }

    #[test]
    fn parse_table() {
        let table: &[(&[u8], Command)] = &[
            (b"USER alice@d.test", Command::User("alice@d.test".into())),
            (b"user  alice@d.test ", Command::User("alice@d.test".into())),
            (b"USER", Command::Syntax("USER name")),
            (b"USER a b", Command::Syntax("USER name")),
            (b"PASS secret", Command::Pass("secret".into())),
            (b"PASS  two words ", Command::Pass(" two words ".into())),
            (b"pass ", Command::Pass("".into())),
            (b"PASS", Command::Syntax("PASS password")),
            (b"PASS \xff", Command::Syntax("PASS password")),
            (b"AUTH", Command::AuthList),
            (b"AUTH plain", Command::AuthPlain(None)),
            (b"AUTH CRAM-MD5", Command::AuthOther),
            (b"AUTH PLAIN a b", Command::Syntax("AUTH [mechanism [initial-response]]")),
            (b"AUTH PLAIN =", Command::AuthPlain(Some(Err(AuthFailure::Malformed)))),
            (b"AUTH PLAIN !!!", Command::AuthPlain(Some(Err(AuthFailure::BadBase64)))),
            (b"capa", Command::Capa),
            (b"StLs", Command::Stls),
            (b"QUIT", Command::Quit),
            (b"QUIT now", Command::Syntax("QUIT")),
            (b"STAT", Command::Stat),
            (b"STAT ", Command::Stat),
            (b"LIST", Command::List(None)),
            (b"LIST 2", Command::List(Some(Msg::Number(2)))),
            (b"LIST x", Command::List(Some(Msg::Invalid))),
            (b"LIST +2", Command::List(Some(Msg::Invalid))),
            (b"LIST 99999999999999999999999", Command::List(Some(Msg::Invalid))),
            (b"LIST 1 2", Command::Syntax("LIST [msg]")),
            (b"UIDL", Command::Uidl(None)),
            (b"uidl 3", Command::Uidl(Some(Msg::Number(3)))),
            (b"RETR 1", Command::Retr(Msg::Number(1))),
            (b"RETR", Command::Syntax("RETR msg")),
            (b"DELE -1", Command::Dele(Msg::Invalid)),
            (b"TOP 1 0", Command::Top { msg: Msg::Number(1), lines: 0 }),
            (b"TOP 1 99999999999999999999999", Command::Top { msg: Msg::Number(1), lines: usize::MAX }),
            (b"TOP 1", Command::Syntax("TOP msg n")),
            (b"TOP 1 x", Command::Syntax("TOP msg n")),
            (b"NOOP", Command::Noop),
            (b"RSET", Command::Rset),
            (b"", Command::Unknown),
            (b"APOP a b", Command::Unknown),
            (b"STAT\0", Command::Unknown),
            (b"\xff\xfe", Command::Unknown),
            (b"LIST \xff", Command::Syntax("LIST [msg]")),
            (b"USERX a", Command::Unknown),
        ];
        for (line, want) in table {
            assert_eq!(&Command::parse(line), want, "{:?}", String::from_utf8_lossy(line));
        }
    }

    #[test]
    fn plain_table() {
        let ok = |user: &str, password: &str| Ok(Credentials { user: user.into(), password: password.into() });
        let table: Vec<(&[u8], Result<Credentials, AuthFailure>)> = vec![
            (b"\0alice@d.test\0secret", ok("alice@d.test", "secret")),
            (b"alice@d.test\0alice@d.test\0secret", ok("alice@d.test", "secret")),
            (b"\0alice@d.test\0two words", ok("alice@d.test", "two words")),
            (b"admin\0alice@d.test\0secret", Err(AuthFailure::AuthzidMismatch)),
            (b"\0alice@d.test", Err(AuthFailure::Malformed)),
            (b"\0\0secret", Err(AuthFailure::Malformed)),
            (b"\0alice@d.test\0", Err(AuthFailure::Malformed)),
            (b"\0a\0b\0c", Err(AuthFailure::Malformed)),
            (b"\0a\0\xff", Err(AuthFailure::Malformed)),
            (b"", Err(AuthFailure::Malformed)),
        ];
        for (raw, want) in table {
            assert_eq!(decode_initial_response(&b64(raw)), want, "{raw:?}");
            assert_eq!(decode_continuation(b64(raw).as_bytes()), want, "{raw:?}");
        }
        assert_eq!(decode_continuation(b"*"), Err(AuthFailure::Cancelled));
        assert_eq!(decode_initial_response("*"), Err(AuthFailure::BadBase64));
        assert_eq!(decode_continuation(b"AGFsaWNl\xff"), Err(AuthFailure::BadBase64));
        assert_eq!(decode_continuation(b""), Err(AuthFailure::Malformed));
    }

    #[test]
    fn credentials_debug_hides_the_password() {
        let credentials = Credentials { user: "alice".into(), password: "hunter2".into() };
        assert!(!format!("{credentials:?}").contains("hunter2"));
    }
}
