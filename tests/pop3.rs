//! POP3 against the real maild.

mod common;
