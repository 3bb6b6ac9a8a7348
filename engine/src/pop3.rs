//! POP3 (RFC 1939) session: to come.
