//! A domain name as maild compares it: made once where a name comes in (a flag, the
//! configuration file, an admin request, an mDNS announcement, an address at RCPT), after
//! which comparing two is plain equality. Domain names are case-insensitive (RFC 1035
//! §2.3.3, RFC 5321 §2.4); maild keeps them in lower case.

use std::fmt;

use crate::address::Address;

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Domain(String);

impl Domain {
    /// A name given by a person or a peer: trimmed, lower-cased, and refused unless it
    /// may follow the `@` of an address.
    pub fn parse(text: &str) -> Result<Domain, String> {
        let domain = text.trim().to_ascii_lowercase();
        if Address::parse(&format!("postmaster@{domain}"), None).is_err() {
            return Err(format!("{domain:?} is not a domain name"));
        }
        Ok(Domain(domain))
    }

    /// The domain of an address (valid, since the address parsed).
    pub fn of(address: &Address) -> Domain {
        Domain(address.domain().to_ascii_lowercase())
    }

    /// A name maild wrote itself (a queue record, the store's peer domains): written in
    /// lower case already, lower-cased again so an older store cannot break equality.
    pub fn stored(text: &str) -> Domain {
        Domain(text.to_ascii_lowercase())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_spelling_per_domain() {
        assert_eq!(Domain::parse(" Example.ORG ").unwrap(), Domain::parse("example.org").unwrap());
        assert_eq!(Domain::parse("b.test").unwrap().as_str(), "b.test");
        assert_eq!(Domain::of(&Address::parse("Carol@E.Test", None).unwrap()), Domain::stored("e.test"));
        for bad in ["", "a b", "x@y", "a..b"] {
            assert!(Domain::parse(bad).is_err(), "{bad:?}");
        }
    }
}
