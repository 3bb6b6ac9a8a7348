//! Mail addresses as SMTP carries them: parsing, validation and the key they are stored
//! under.
//!
//! maild is deliberately stricter than RFC 5321's full grammar: an address is rejected if
//! it holds whitespace or control characters, has an empty part around its `@`, or exceeds
//! 254 octets (RFC 5321 §4.5.3.1.3 limits a path to 256 octets including the brackets).
//! Quoted local parts with spaces are refused on purpose: they are the usual smuggling
//! vehicle and no real user of a small domain has one.

use std::fmt;

/// RFC 5321 §4.5.3.1.3: 256-octet path including `<` and `>`.
pub const MAX_ADDRESS_LEN: usize = 254;

/// A syntactically valid mailbox `local@domain`, with the domain kept as sent.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Address {
    local: String,
    domain: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddressError {
    Empty,
    TooLong,
    /// Whitespace or a control character somewhere inside, or `<`, `>`, `"` or `\`
    /// outside a valid quoted local part (they would change the meaning of the address
    /// when it is sent on, as `RCPT TO:<x>y@peer>` would).
    BadCharacter,
    /// `a@` or `@b` or `a@b@c`.
    BadShape,
}

impl Address {
    /// Parses `local@domain`. A bare `local` (RCPT TO:<postmaster>) gets `default_domain`.
    pub fn parse(text: &str, default_domain: Option<&str>) -> Result<Address, AddressError> {
        if text.is_empty() {
            return Err(AddressError::Empty);
        }
        if text.len() > MAX_ADDRESS_LEN {
            return Err(AddressError::TooLong);
        }
        if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(AddressError::BadCharacter);
        }
        let (local, domain) = match text.rsplit_once('@') {
            Some((local, domain)) => (local, domain),
            None => match default_domain {
                Some(domain) => (text, domain),
                None => return Err(AddressError::BadShape),
            },
        };
        if local.is_empty() || domain.is_empty() || local.contains('@') {
            return Err(AddressError::BadShape);
        }
        let specials = |s: &str| s.contains(['<', '>', '"', '\\']);
        let quoted = local.len() >= 2 && local.starts_with('"') && local.ends_with('"');
        if (quoted && !valid_quoted_content(&local[1..local.len() - 1])) || (!quoted && specials(local)) {
            return Err(AddressError::BadCharacter);
        }
        if specials(domain) {
            return Err(AddressError::BadCharacter);
        }
        if domain.starts_with('.') || domain.ends_with('.') || domain.contains("..") {
            return Err(AddressError::BadShape);
        }
        Ok(Address { local: local.to_string(), domain: domain.to_string() })
    }

    pub fn local(&self) -> &str {
        &self.local
    }

    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The key a user and its mailbox are stored under: domains are case-insensitive
    /// (RFC 5321 §2.4) and, like Postfix and Dovecot by default, so are local parts.
    pub fn key(&self) -> String {
        format!("{}@{}", self.local, self.domain).to_ascii_lowercase()
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.local, self.domain)
    }
}

/// RFC 5321 §4.1.2 Quoted-string content: printable ASCII, with `"` and `\` only as a
/// quoted pair (`\"`, `\\`).
fn valid_quoted_content(content: &str) -> bool {
    let mut chars = content.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' if !chars.next().is_some_and(|c| (' '..='~').contains(&c)) => return false,
            '\\' => {}
            '"' => return false,
            c if !(' '..='~').contains(&c) => return false,
            _ => {}
        }
    }
    true
}

/// Normalises an address given on the command line (e.g. `mailtool user add`).
pub fn user_key(text: &str) -> Result<String, AddressError> {
    Address::parse(text.trim(), None).map(|a| a.key())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_and_rejects() {
        let table: &[(&str, Result<&str, AddressError>)] = &[
            ("student@CS4410", Ok("student@cs4410")),
            ("TA@cs4410", Ok("ta@cs4410")),
            ("a.b+c@example.org", Ok("a.b+c@example.org")),
            ("student @CS4410", Err(AddressError::BadCharacter)),
            ("a\tb@c", Err(AddressError::BadCharacter)),
            ("a\0b@c", Err(AddressError::BadCharacter)),
            ("@c", Err(AddressError::BadShape)),
            ("a@", Err(AddressError::BadShape)),
            ("a@b@c", Err(AddressError::BadShape)),
            ("a@.b", Err(AddressError::BadShape)),
            ("", Err(AddressError::Empty)),
            ("nodomain", Err(AddressError::BadShape)),
            ("x>y@peer", Err(AddressError::BadCharacter)),
            ("x<y@peer", Err(AddressError::BadCharacter)),
            ("a\"b@c", Err(AddressError::BadCharacter)),
            ("a\\b@c", Err(AddressError::BadCharacter)),
            ("a@c>d", Err(AddressError::BadCharacter)),
            ("\"a.b,c\"@d", Ok("\"a.b,c\"@d")),
            ("\"a\\\"b\"@d", Ok("\"a\\\"b\"@d")),
            ("\"a\"b\"@d", Err(AddressError::BadCharacter)),
            ("\"a\\\"@d", Err(AddressError::BadCharacter)),
        ];
        for (input, expected) in table {
            let got = Address::parse(input, None).map(|a| a.key());
            assert_eq!(got.as_deref().map_err(|e| *e), expected.as_ref().map(|s| *s).map_err(|e| *e), "{input}");
        }
    }

    #[test]
    fn length_limit_is_254_octets() {
        let ok = format!("{}@b.c", "a".repeat(250));
        assert_eq!(ok.len(), 254);
        assert!(Address::parse(&ok, None).is_ok());
        let long = format!("{}@b.c", "a".repeat(251));
        assert_eq!(Address::parse(&long, None), Err(AddressError::TooLong));
    }

    #[test]
    fn bare_local_part_takes_the_default_domain() {
        let a = Address::parse("Postmaster", Some("example.org")).unwrap();
        assert_eq!(a.key(), "postmaster@example.org");
    }
}
