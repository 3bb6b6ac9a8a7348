//! Message data as DATA sends it (RFC 5321 §4.5.2): dot-stuffed, ending in CRLF `.` CRLF.

use std::io::{self, Write};

/// A whole message as DATA sends it: dot-stuffed, a CRLF added if it does not end in one,
/// then the end-of-data marker. For callers that hold the message at once.
pub fn data_payload(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + 8);
    let mut stuffer = DotStuffer::new();
    // Writing into a Vec cannot fail.
    let _ = stuffer.write(&mut out, message);
    let _ = stuffer.finish(&mut out);
    out
}

/// A message to send: in memory as parts, or parts followed by a body that is read in
/// pieces while DATA goes out (a large stored body, never in memory whole).
#[derive(Clone, Copy)]
pub enum MessageData<'a> {
    Parts(&'a [&'a [u8]]),
    Streamed { parts: &'a [&'a [u8]], body: &'a dyn BodySource, shape: Shape },
}

/// Bytes that are read in pieces, in order, each time they are written.
pub trait BodySource {
    /// Calls `each` with the bytes in order.
    fn write_to(&self, each: &mut dyn FnMut(&[u8]) -> io::Result<()>) -> io::Result<()>;
}

/// What MAIL says of a message before it is sent: its size as RFC 1870 §5 declares it,
/// and whether it has 8-bit octets (RFC 6152).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    pub size: u64,
    pub eight_bit: bool,
}

impl<'a> MessageData<'a> {
    /// `parts`, then `body`, with its shape found by reading the body once.
    pub fn streamed(parts: &'a [&'a [u8]], body: &'a dyn BodySource) -> io::Result<MessageData<'a>> {
        let mut measure = Measure::default();
        parts.iter().for_each(|part| measure.add(part));
        body.write_to(&mut |piece| {
            measure.add(piece);
            Ok(())
        })?;
        Ok(MessageData::Streamed { parts, body, shape: measure.shape() })
    }

    pub fn shape(&self) -> Shape {
        match self {
            MessageData::Parts(parts) => {
                let mut measure = Measure::default();
                parts.iter().for_each(|part| measure.add(part));
                measure.shape()
            }
            MessageData::Streamed { shape, .. } => *shape,
        }
    }

    /// Calls `each` with the message's bytes in order.
    pub fn write_to(&self, each: &mut dyn FnMut(&[u8]) -> io::Result<()>) -> io::Result<()> {
        let (parts, body) = match self {
            MessageData::Parts(parts) => (parts, None),
            MessageData::Streamed { parts, body, .. } => (parts, Some(body)),
        };
        for part in parts.iter() {
            each(part)?;
        }
        body.map_or(Ok(()), |body| body.write_to(each))
    }
}

impl std::fmt::Debug for MessageData<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MessageData::Parts(parts) => f.debug_tuple("Parts").field(parts).finish(),
            MessageData::Streamed { parts, shape, .. } => {
                f.debug_struct("Streamed").field("parts", parts).field("shape", shape).finish_non_exhaustive()
            }
        }
    }
}

/// A message's [`Shape`], taken piece by piece. The size is what RFC 1870 §5 declares: the
/// octets with CRLF line ends, not the dot-stuffing nor the final dot; the CRLF we add at
/// the end if the message lacks it counts (its CR and LF may be in different pieces, and
/// empty pieces may sit anywhere).
#[derive(Default)]
struct Measure {
    size: u64,
    eight_bit: bool,
    last_two: [u8; 2],
}

impl Measure {
    fn add(&mut self, piece: &[u8]) {
        self.size += piece.len() as u64;
        self.eight_bit |= !piece.is_ascii();
        match piece {
            [] => {}
            [only] => self.last_two = [self.last_two[1], *only],
            [.., a, b] => self.last_two = [*a, *b],
        }
    }

    fn shape(&self) -> Shape {
        let added = if self.last_two == *b"\r\n" { 0 } else { 2 };
        Shape { size: self.size + added, eight_bit: self.eight_bit }
    }
}

/// Writes message data part by part: a `.` at the start of a line gets a second `.` in
/// front, the data ends with CRLF (added if the message lacks it), then `.` CRLF.
///
/// A line starts at the beginning of the message and after every LF, bare or not: the
/// receiver is then certain never to see an end-of-data line we did not mean, whatever
/// line ends the message holds. State carries over part boundaries, so a line may start
/// in one part and its first character be in the next. Whole runs between LFs are
/// written at once, never byte by byte.
#[derive(Debug)]
pub struct DotStuffer {
    at_line_start: bool,
    /// The last byte written, to see a CRLF split across parts.
    last: Option<u8>,
    ends_with_crlf: bool,
}

impl Default for DotStuffer {
    fn default() -> Self {
        DotStuffer::new()
    }
}

impl DotStuffer {
    pub fn new() -> DotStuffer {
        DotStuffer { at_line_start: true, last: None, ends_with_crlf: false }
    }

    pub fn write<W: Write>(&mut self, out: &mut W, part: &[u8]) -> io::Result<()> {
        let Some(&final_byte) = part.last() else {
            return Ok(());
        };
        self.ends_with_crlf = match part {
            [.., b'\r', b'\n'] => true,
            [b'\n'] => self.last == Some(b'\r'),
            _ => false,
        };
        self.last = Some(final_byte);
        let mut rest = part;
        while !rest.is_empty() {
            if self.at_line_start && rest[0] == b'.' {
                out.write_all(b".")?;
            }
            match rest.iter().position(|&b| b == b'\n') {
                Some(lf) => {
                    out.write_all(&rest[..=lf])?;
                    rest = &rest[lf + 1..];
                    self.at_line_start = true;
                }
                None => {
                    out.write_all(rest)?;
                    self.at_line_start = false;
                    rest = &[];
                }
            }
        }
        Ok(())
    }

    pub fn finish<W: Write>(self, out: &mut W) -> io::Result<()> {
        if !self.ends_with_crlf {
            out.write_all(b"\r\n")?;
        }
        out.write_all(b".\r\n")
    }
}

/// Bytes handed out in pieces of a given size (tests of what reads a [`BodySource`]).
#[cfg(test)]
pub(crate) struct InPieces<'a>(pub &'a [u8], pub usize);

#[cfg(test)]
impl BodySource for InPieces<'_> {
    fn write_to(&self, each: &mut dyn FnMut(&[u8]) -> io::Result<()>) -> io::Result<()> {
        self.0.chunks(self.1).try_for_each(each)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_payload_stuffs_leading_dots_and_terminates() {
        assert_eq!(data_payload(b".a\r\n..b\r\nc.\r\n"), b"..a\r\n...b\r\nc.\r\n.\r\n");
        assert_eq!(data_payload(b"no end"), b"no end\r\n.\r\n");
        assert_eq!(data_payload(b"bare\n.lf"), b"bare\n..lf\r\n.\r\n");
        assert_eq!(data_payload(b""), b"\r\n.\r\n");
    }

    fn stuffed(parts: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut stuffer = DotStuffer::new();
        for part in parts {
            stuffer.write(&mut out, part).unwrap();
        }
        stuffer.finish(&mut out).unwrap();
        out
    }
    #[test]
    fn dot_stuffing_table() {
        let table: Vec<(&[&[u8]], &[u8])> = vec![
            (&[], b"\r\n.\r\n"),
            (&[b"a\r\n"], b"a\r\n.\r\n"),
            (&[b"a"], b"a\r\n.\r\n"),
            (&[b".\r\n"], b"..\r\n.\r\n"),
            (&[b"a\r\n.\r\n"], b"a\r\n..\r\n.\r\n"),
            (&[b"a\r\n..b\r\n"], b"a\r\n...b\r\n.\r\n"),
            (&[b"a.b\r\n"], b"a.b\r\n.\r\n"),
            // A line begins in one part and its dot is the next part's first byte.
            (&[b"a\r\n", b".b\r\n"], b"a\r\n..b\r\n.\r\n"),
            (&[b"a\r\n", b"", b".b\r\n"], b"a\r\n..b\r\n.\r\n"),
            // A dot at the end of one part and more of the line in the next.
            (&[b"x\r\n.", b".y\r\n"], b"x\r\n...y\r\n.\r\n"),
            // The dot not at a line start, split across parts.
            (&[b"x", b".y\r\n"], b"x.y\r\n.\r\n"),
            // CRLF split across parts: no CRLF added.
            (&[b"a\r", b"\n"], b"a\r\n.\r\n"),
            (&[b"a\r", b"\n", b""], b"a\r\n.\r\n"),
            // Bare LF starts a line too (smuggling-proof), and does not count as CRLF.
            (&[b"a\n.\n"], b"a\n..\n\r\n.\r\n"),
            (&[b"a\r"], b"a\r\r\n.\r\n"),
        ];
        for (parts, expected) in table {
            assert_eq!(stuffed(parts), expected, "{parts:?}");
        }
        let table: Vec<(&[&[u8]], bool)> =
            vec![(&[b"a\r", b"\n"], true), (&[b"\r\n", b""], true), (&[b"\n"], false), (&[b"\r"], false), (&[], false)];
        for (parts, ends_with_crlf) in table {
            // A message that ends in CRLF is declared at its length; one that does not, 2 more.
            let len = parts.iter().map(|p| p.len() as u64).sum::<u64>();
            let added = if ends_with_crlf { 0 } else { 2 };
            assert_eq!(MessageData::Parts(parts).shape().size, len + added, "{parts:?}");
        }
    }

    #[test]
    fn a_streamed_message_has_the_shape_and_bytes_of_the_same_message_in_parts() {
        let table: &[(&[&[u8]], &[u8])] = &[
            (&[b"Received: x\r\n"], b"body\r\n"),
            (&[b"Received: x\r\n"], b"no final line end"),
            (&[b"Received: x\r"], b"\n"),
            (&[], b"8bit \xc3\xa9\r\n"),
            (&[b"a\r\n"], b""),
            (&[], b""),
        ];
        for (parts, body) in table {
            let whole = [parts, &[*body][..]].concat();
            // Pieces of one octet: the hardest split for the measuring.
            let source = InPieces(body, 1);
            let streamed = MessageData::streamed(parts, &source).unwrap();
            assert_eq!(streamed.shape(), MessageData::Parts(&whole).shape(), "{parts:?} {body:?}");
            let mut written = Vec::new();
            streamed
                .write_to(&mut |piece| {
                    written.extend_from_slice(piece);
                    Ok(())
                })
                .unwrap();
            assert_eq!(written, whole.concat());
        }
    }
}
