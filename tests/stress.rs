//! `mailtool stress`, `send` and `fetch` against the real maild.

mod common;
