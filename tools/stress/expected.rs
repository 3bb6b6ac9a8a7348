//! What a command is, what the contract says the answer is, and how a reply is checked.

use super::*;
use engine::smtp::client::Extensions;

/// A command as the model sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    Helo,
    Ehlo,
    HeloMissing,
    Mail(Sender),
    Rcpt(Recipient),
    Data,
    /// The message after `354`, dot-stuffed and ended by CRLF.CRLF.
    Body,
    Rset,
    Noop,
    Vrfy,
    Unknown,
    TooLong,
    Quit,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Sender {
    Valid,
    Syntax,
    /// Invalid address, as the server will name it.
    Invalid(String),
    /// `SIZE=` above the advertised limit.
    TooBig,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Recipient {
    Known(String),
    UnknownUser(String),
    Relay(String),
    Syntax,
    Invalid(String),
}

/// What a reply must look like beyond its code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Shape {
    Plain,
    /// `250-hostname` and the extensions of CONTRACT §3.
    Ehlo,
    /// `250 2.0.0 … delivered message N`.
    Delivered,
}

/// The binding parts of one expected reply (CONTRACT §3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Expected {
    pub code: u16,
    pub enhanced: Option<&'static str>,
    pub phrases: Vec<String>,
    pub shape: Shape,
    /// The server closes the connection after this reply.
    pub closes: bool,
}

impl Expected {
    pub(super) fn new(code: u16, enhanced: Option<&'static str>) -> Expected {
        Expected { code, enhanced, phrases: Vec::new(), shape: Shape::Plain, closes: false }
    }

    pub(super) fn phrase(mut self, phrase: impl Into<String>) -> Expected {
        let phrase = phrase.into();
        if !phrase.is_empty() {
            self.phrases.push(phrase);
        }
        self
    }

    pub(super) fn shape(mut self, shape: Shape) -> Expected {
        self.shape = shape;
        self
    }

    pub(super) fn closing(mut self) -> Expected {
        self.closes = true;
        self
    }

    pub(super) fn greeting() -> Expected {
        Expected::new(220, None).phrase("ESMTP maild")
    }
}

impl fmt::Display for Expected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.code)?;
        if let Some(enhanced) = self.enhanced {
            write!(f, " {enhanced}")?;
        }
        for phrase in &self.phrases {
            write!(f, " …{phrase:?}")?;
        }
        match self.shape {
            Shape::Plain => {}
            Shape::Ehlo => write!(f, " with PIPELINING, SIZE, 8BITMIME, ENHANCEDSTATUSCODES")?,
            Shape::Delivered => write!(f, " …\"delivered message N\"")?,
        }
        if self.closes {
            write!(f, ", then close")?;
        }
        Ok(())
    }
}

/// What a correct reply told us.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Checked {
    Plain,
    /// The EHLO reply's `SIZE` limit, if it gave one (`SIZE` alone: no limit).
    Ehlo {
        size: Option<u64>,
    },
    Delivered(u64),
}

/// Compares one reply with what the contract requires; `Err` says how it differs.
/// (A reply whose lines carry different codes never gets here: the reader refuses it.)
pub(crate) fn check(expected: &Expected, reply: &ServerReply) -> Result<Checked, String> {
    if reply.code != expected.code {
        return Err(format!("code {} instead of {}", reply.code, expected.code));
    }
    let last = reply.lines.last().map_or("", String::as_str);
    if let Some(enhanced) = expected.enhanced {
        if last.split_whitespace().next() != Some(enhanced) {
            return Err(format!("enhanced code {enhanced} missing"));
        }
    }
    let all = reply.lines.join("\n");
    for phrase in &expected.phrases {
        if !all.contains(phrase.as_str()) {
            return Err(format!("{phrase:?} missing"));
        }
    }
    match expected.shape {
        Shape::Plain => Ok(Checked::Plain),
        Shape::Ehlo => {
            // The client's own reading of EHLO (engine::smtp::client), not a second one.
            let offered = Extensions::parse(reply.lines.get(1..).unwrap_or_default());
            let wanted = [
                ("PIPELINING", offered.pipelining),
                ("SIZE", offered.size_advertised),
                ("8BITMIME", offered.eight_bit_mime),
                ("ENHANCEDSTATUSCODES", offered.enhanced_status_codes),
            ];
            if let Some((missing, _)) = wanted.iter().find(|(_, present)| !present) {
                return Err(format!("EHLO extension {missing} missing"));
            }
            if offered.size_malformed {
                return Err("EHLO SIZE has a value that is not a number".into());
            }
            Ok(Checked::Ehlo { size: offered.size_limit })
        }
        Shape::Delivered => {
            let number = all
                .split("delivered message ")
                .nth(1)
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|n| n.parse::<u64>().ok());
            number.map(Checked::Delivered).ok_or_else(|| "\"delivered message N\" missing".to_string())
        }
    }
}
