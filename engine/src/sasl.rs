//! SASL PLAIN (RFC 4616) and LOGIN decoding, shared by POP3 AUTH (RFC 5034) and SMTP AUTH
//! (RFC 4954), so both protocols see the same credentials from the same bytes.

use std::fmt;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;

/// A user name and password from `AUTH PLAIN`.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub user: String,
    pub password: String,
}

impl fmt::Debug for Credentials {
    // The password must never reach a log through a `{:?}`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials").field("user", &self.user).field("password", &"<redacted>").finish()
    }
}

/// The daemon's answer to a password check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The password is right: the user's key.
    Accepted(String),
    /// Unknown user or wrong password: the two are not told apart.
    Rejected,
    /// Not checked: this address or account has too many attempts under way or waiting.
    Throttled,
}

/// Failed password checks one connection may make before it is closed; guessing goes on
/// only over new connections, which the per-address limits see.
pub const MAX_FAILURES_PER_CONNECTION: u32 = 3;

/// Why an `AUTH PLAIN` response was refused before any password check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthFailure {
    /// The client answered `*` (RFC 5034 §4).
    Cancelled,
    /// Not base64.
    BadBase64,
    /// Not `authzid NUL authcid NUL passwd` with a non-empty UTF-8 authcid and password.
    Malformed,
    /// An authorization identity other than the authentication identity: maild has no
    /// administrators who may act as another user.
    AuthzidMismatch,
}

/// Decodes the initial response of `AUTH PLAIN <response>`.
///
/// RFC 5034 §4, RFC 4954 §4: an empty initial response is sent as a single `=`.
pub fn decode_initial_response(arg: &str) -> Result<Credentials, AuthFailure> {
    if arg == "=" {
        return plain(&[]);
    }
    let decoded = BASE64.decode(arg).map_err(|_| AuthFailure::BadBase64)?;
    plain(&decoded)
}

/// Decodes the client's PLAIN response after the server's continuation (`+ ` in POP3,
/// `334 ` in SMTP).
pub fn decode_continuation(line: &[u8]) -> Result<Credentials, AuthFailure> {
    plain(&decode_line(line)?)
}

/// One base64 line of a SASL exchange. RFC 5034 §4, RFC 4954 §4: a line holding a
/// single `*` cancels the exchange.
pub fn decode_line(line: &[u8]) -> Result<Vec<u8>, AuthFailure> {
    if line == b"*" {
        return Err(AuthFailure::Cancelled);
    }
    BASE64.decode(line).map_err(|_| AuthFailure::BadBase64)
}

/// A LOGIN mechanism field (user name or password): base64 of UTF-8 text.
pub fn decode_login_field(line: &[u8]) -> Result<String, AuthFailure> {
    let decoded = decode_line(line)?;
    match String::from_utf8(decoded) {
        Ok(text) if !text.is_empty() => Ok(text),
        _ => Err(AuthFailure::Malformed),
    }
}

/// The server's challenge text for the LOGIN mechanism.
pub fn login_prompt(text: &str) -> String {
    BASE64.encode(text)
}

/// RFC 4616 §2: `message = [authzid] UTF8NUL authcid UTF8NUL passwd`.
fn plain(message: &[u8]) -> Result<Credentials, AuthFailure> {
    let mut fields = message.split(|&b| b == 0);
    let (Some(authzid), Some(authcid), Some(password), None) =
        (fields.next(), fields.next(), fields.next(), fields.next())
    else {
        return Err(AuthFailure::Malformed);
    };
    let (Ok(authzid), Ok(authcid), Ok(password)) =
        (std::str::from_utf8(authzid), std::str::from_utf8(authcid), std::str::from_utf8(password))
    else {
        return Err(AuthFailure::Malformed);
    };
    if authcid.is_empty() || password.is_empty() {
        return Err(AuthFailure::Malformed);
    }
    // RFC 4616 §2: an empty authzid means "act as the authcid"; the same name given
    // explicitly means the same. Names compare as USER does, without case folding: the
    // daemon's directory decides what a name matches.
    if !authzid.is_empty() && authzid != authcid {
        return Err(AuthFailure::AuthzidMismatch);
    }
    Ok(Credentials { user: authcid.to_string(), password: password.to_string() })
}
