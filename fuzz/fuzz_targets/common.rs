//! What the session targets share: the input layout and the chunking.
//!
//! An input is `[flags] [n] [n chunk lengths] client stream`. The flags pick the session's
//! configuration; the chunk lengths (cycled; 0 feeds an empty slice) cut the stream for
//! the chunked run. The stream is what the client sends; the first [`TLS_MARK`] in it
//! separates the bytes sent in the clear from those sent after a TLS handshake (the
//! targets do no TLS: after the session asks for the handshake, the rest of the clear
//! stream is dropped, as a failed or finished handshake would, and the bytes after the
//! mark are fed instead).

#![allow(dead_code)]

/// Stands for the TLS handshake in a stream.
pub const TLS_MARK: &[u8] = b"\n<tls>\n";

pub struct Input<'a> {
    pub flags: u8,
    chunks: Vec<usize>,
    /// The clear stream and, after the mark, the stream inside TLS (if any).
    pub plain: &'a [u8],
    pub tls: Option<&'a [u8]>,
}

impl<'a> Input<'a> {
    pub fn parse(data: &'a [u8]) -> Option<Input<'a>> {
        let (&flags, rest) = data.split_first()?;
        let (&n, rest) = rest.split_first()?;
        let n = usize::from(n % 32).min(rest.len());
        let (lengths, stream) = rest.split_at(n);
        let mut chunks: Vec<usize> = lengths.iter().map(|&b| usize::from(b)).collect();
        if chunks.iter().all(|&c| c == 0) {
            chunks = vec![1];
        }
        let (plain, tls) = match find(stream, TLS_MARK) {
            Some(at) => (&stream[..at], Some(&stream[at + TLS_MARK.len()..])),
            None => (stream, None),
        };
        Some(Input { flags, chunks, plain, tls })
    }

    pub fn flag(&self, bit: u8) -> bool {
        self.flags & (1 << bit) != 0
    }

    /// `stream` cut by the chunk lengths, cycled.
    pub fn chunked(&self, stream: &'a [u8]) -> Vec<&'a [u8]> {
        split_cycled(stream, &self.chunks)
    }
}

pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// `MAILD_FUZZ_STRICT` set (to anything): also check the properties that known, not yet
/// fixed findings break (README.md, "Findings"), so that their regression inputs fail.
/// Off by default, so that a run goes on to find what is not known yet.
#[allow(dead_code)] // every finding so far is fixed and checked unconditionally
pub fn strict() -> bool {
    static STRICT: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *STRICT.get_or_init(|| std::env::var_os("MAILD_FUZZ_STRICT").is_some())
}

/// A session under test with its fake daemon, as both session targets drive it.
pub trait Run {
    /// Feeds bytes and answers every effect they cause.
    fn receive(&mut self, bytes: &[u8]);
    /// True once the session asked for TLS: the clear stream after that is dropped.
    fn tls_started(&self) -> bool;
    /// The client goes quiet: the session times out, and must be closed after.
    fn time_out(&mut self);
}

/// Feeds the clear stream (whole, or in the chunks the input chooses) until the session
/// asks for TLS, then the stream after the handshake, then lets the session time out.
pub fn feed(run: &mut impl Run, input: &Input, whole: bool) {
    let plain = if whole { vec![input.plain] } else { input.chunked(input.plain) };
    for chunk in plain {
        if run.tls_started() {
            break;
        }
        run.receive(chunk);
    }
    if let (true, Some(tls)) = (run.tls_started(), input.tls) {
        let after = if whole { vec![tls] } else { input.chunked(tls) };
        for chunk in after {
            run.receive(chunk);
        }
    }
    run.time_out();
}

/// For the client targets: `[n] [n chunk lengths] server stream` split into the lengths
/// (`n` mod 16) and the stream.
pub fn lengths_and_stream(data: &[u8]) -> Option<(&[u8], &[u8])> {
    let (&n, rest) = data.split_first()?;
    Some(rest.split_at(usize::from(n % 16).min(rest.len())))
}

/// `stream` cut by `lengths` (cycled; 0 counts as 1; none: chunks of 7), as a socket's
/// short reads would hand it over.
pub fn cut<'a>(stream: &'a [u8], lengths: &[u8]) -> Vec<&'a [u8]> {
    let lengths: Vec<usize> =
        if lengths.is_empty() { vec![7] } else { lengths.iter().map(|&l| usize::from(l).max(1)).collect() };
    split_cycled(stream, &lengths)
}

/// `stream` cut into pieces of `lengths`, cycled (some must be non-zero).
fn split_cycled<'a>(stream: &'a [u8], lengths: &[usize]) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    let mut rest = stream;
    for &len in lengths.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (chunk, tail) = rest.split_at(len.min(rest.len()));
        out.push(chunk);
        rest = tail;
    }
    out
}
