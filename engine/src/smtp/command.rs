//! SMTP command parsing (RFC 5321 §4.1): one line in, one [`Command`] out. Pure.
//!
//! Verbs are case-insensitive and whitespace around tokens is tolerated. Paths may come
//! bracketed (`MAIL FROM:<a@b>`) or bare (`MAIL FROM: a@b`, as the original assignment's
//! dialogues send them). A bare path followed by something that is not an ESMTP parameter
//! (`MAIL FROM: student @CS4410`) is taken whole, so it is rejected as an address with
//! inner whitespace rather than silently truncated.

/// A parsed command line.
#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    Helo(String),
    Ehlo(String),
    /// HELO/EHLO with no argument.
    HeloMissing {
        extended: bool,
    },
    Mail {
        path: String,
        params: Vec<(String, Option<String>)>,
    },
    MailSyntax,
    Rcpt {
        path: String,
        params: Vec<(String, Option<String>)>,
    },
    RcptSyntax,
    Data,
    Rset,
    Noop,
    Vrfy,
    Expn,
    Help,
    Quit,
    /// `has_argument`: RFC 3207 §4 STARTTLS takes none.
    StartTls {
        has_argument: bool,
    },
    /// `AUTH mechanism [initial-response]` (RFC 4954 §4).
    Auth {
        mechanism: String,
        initial: Option<String>,
    },
    AuthSyntax,
    Bdat,
    Unknown,
}

impl Command {
    pub fn parse(line: &[u8]) -> Command {
        // Command lines are ASCII (RFC 5321 §2.4); anything else in a verb is unknown, but
        // an argument may hold UTF-8 (it will fail address validation if it matters).
        let line = String::from_utf8_lossy(line);
        let line = line.trim_matches(|c: char| c == ' ' || c == '\t');
        let (verb, rest) = match line.find([' ', '\t']) {
            Some(i) => (&line[..i], line[i..].trim_matches(|c: char| c == ' ' || c == '\t')),
            None => (line, ""),
        };
        match verb.to_ascii_uppercase().as_str() {
            "HELO" if rest.is_empty() => Command::HeloMissing { extended: false },
            "EHLO" if rest.is_empty() => Command::HeloMissing { extended: true },
            "HELO" => Command::Helo(first_word(rest).to_string()),
            "EHLO" => Command::Ehlo(first_word(rest).to_string()),
            "MAIL" => match path_after(rest, "FROM") {
                Some((path, params)) => Command::Mail { path, params },
                None => Command::MailSyntax,
            },
            "RCPT" => match path_after(rest, "TO") {
                Some((path, params)) => Command::Rcpt { path, params },
                None => Command::RcptSyntax,
            },
            "DATA" => Command::Data,
            "RSET" => Command::Rset,
            "NOOP" => Command::Noop,
            "VRFY" => Command::Vrfy,
            "EXPN" => Command::Expn,
            "HELP" => Command::Help,
            "QUIT" => Command::Quit,
            "STARTTLS" => Command::StartTls { has_argument: !rest.is_empty() },
            "AUTH" => {
                let mut words = rest.split([' ', '\t']).filter(|w| !w.is_empty());
                match (words.next(), words.next(), words.next()) {
                    (Some(mechanism), initial, None) => Command::Auth {
                        mechanism: mechanism.to_ascii_uppercase(),
                        initial: initial.map(str::to_string),
                    },
                    _ => Command::AuthSyntax,
                }
            }
            "BDAT" => Command::Bdat,
            _ => Command::Unknown,
        }
    }
}

fn first_word(text: &str) -> &str {
    text.split([' ', '\t']).next().unwrap_or("")
}

type Params = Vec<(String, Option<String>)>;

/// Parses `FROM:<path> params` (keyword given): returns the path text (brackets removed,
/// source route dropped) and the ESMTP parameters. `None` on a syntax error.
fn path_after(rest: &str, keyword: &str) -> Option<(String, Params)> {
    let (head, tail) = rest.split_once(':')?;
    if !head.trim().eq_ignore_ascii_case(keyword) {
        return None;
    }
    let tail = tail.trim_start_matches([' ', '\t']);
    let (path, params_text) = if let Some(inner) = tail.strip_prefix('<') {
        let close = inner.find('>')?;
        (&inner[..close], &inner[close + 1..])
    } else {
        // No address at all is a syntax error: the null path is written `<>`.
        Some(bare_path(tail)).filter(|(path, _)| !path.is_empty())?
    };
    let params = parse_params(params_text)?;
    Some((strip_source_route(path).to_string(), params))
}

/// Splits `a@b SIZE=10` into the path and its parameters. If anything after the first
/// word is not parameter-shaped, the whole text is the path.
fn bare_path(text: &str) -> (&str, &str) {
    let text = text.trim_end_matches([' ', '\t']);
    match text.find([' ', '\t']) {
        Some(i) if text[i..].split_whitespace().all(is_param_shaped) => (&text[..i], &text[i..]),
        Some(_) => (text, ""),
        None => (text, ""),
    }
}

/// RFC 5321 §4.1.2 `esmtp-param = esmtp-keyword ["=" esmtp-value]`.
fn is_param_shaped(word: &str) -> bool {
    let keyword = word.split('=').next().unwrap_or("");
    let mut chars = keyword.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric()) && chars.all(|c| c.is_ascii_alphanumeric() || c == '-')
}

fn parse_params(text: &str) -> Option<Params> {
    text.split_whitespace()
        .map(|word| {
            if !is_param_shaped(word) {
                return None;
            }
            Some(match word.split_once('=') {
                Some((k, v)) => (k.to_ascii_uppercase(), Some(v.to_string())),
                None => (word.to_ascii_uppercase(), None),
            })
        })
        .collect()
}

/// RFC 5321 §4.1.2: a source route `@a,@b:user@c` must be accepted and ignored.
fn strip_source_route(path: &str) -> &str {
    match path.strip_prefix('@').and_then(|_| path.split_once(':')) {
        Some((_, mailbox)) => mailbox,
        None => path,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mail(path: &str) -> Command {
        Command::Mail { path: path.into(), params: vec![] }
    }

    #[test]
    fn parse_table() {
        let table: Vec<(&str, Command)> = vec![
            ("HELO client", Command::Helo("client".into())),
            ("helo   client  ", Command::Helo("client".into())),
            ("HELO", Command::HeloMissing { extended: false }),
            ("EHLO ", Command::HeloMissing { extended: true }),
            ("MAIL FROM:<a@b>", mail("a@b")),
            ("mail from: student@CS4410", mail("student@CS4410")),
            ("MAIL FROM: student @CS4410", mail("student @CS4410")),
            ("MAIL FROM:<a b@c>", mail("a b@c")),
            ("MAIL FROM:<>", mail("")),
            ("MAIL FROM : <a@b>", mail("a@b")),
            ("MAIL FROM:<@x,@y:a@b>", mail("a@b")),
            (
                "MAIL FROM:<a@b> SIZE=100 BODY=8BITMIME",
                Command::Mail {
                    path: "a@b".into(),
                    params: vec![("SIZE".into(), Some("100".into())), ("BODY".into(), Some("8BITMIME".into()))],
                },
            ),
            (
                "MAIL FROM: a@b SIZE=5",
                Command::Mail { path: "a@b".into(), params: vec![("SIZE".into(), Some("5".into()))] },
            ),
            ("MAIL", Command::MailSyntax),
            ("MAIL TO:<a@b>", Command::MailSyntax),
            ("MAIL FROM:<a@b", Command::MailSyntax),
            ("MAIL FROM:", Command::MailSyntax),
            ("MAIL FROM: ", Command::MailSyntax),
            ("RCPT TO:", Command::RcptSyntax),
            ("RCPT TO: TA@CS4410", Command::Rcpt { path: "TA@CS4410".into(), params: vec![] }),
            ("RCPT TO: TA @CS4410", Command::Rcpt { path: "TA @CS4410".into(), params: vec![] }),
            ("RCPT FROM:<a@b>", Command::RcptSyntax),
            ("data", Command::Data),
            ("QUIT", Command::Quit),
            ("mkdir", Command::Unknown),
            ("", Command::Unknown),
            ("\u{0}HELO x", Command::Unknown),
        ];
        for (line, expected) in table {
            assert_eq!(Command::parse(line.as_bytes()), expected, "{line:?}");
        }
    }
}
