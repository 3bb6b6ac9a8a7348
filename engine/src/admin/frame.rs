//! The admin socket's wire format: length-prefixed frames, both ways.
//!
//! `mailtool` sends one `Request` frame (rkyv bytes of [`super::Request`]); maild answers
//! with any number of `Stdout` and `Progress` frames and then exactly one `Done` or
//! `Failed`. A frame is a tag byte, a u32 big-endian length, and that many bytes.

use std::io::{self, Read, Write};

use rkyv::rancor;

use super::{Output, Request};

/// Largest frame accepted: requests are small; output is sent in chunks.
pub const MAX_FRAME: u32 = 16 << 20;

#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    Request(Vec<u8>),
    Stdout(Vec<u8>),
    Progress { label: String, done: u64, total: u64 },
    Done,
    Failed(String),
}

pub fn write_frame(out: &mut impl Write, frame: &Frame) -> io::Result<()> {
    let (tag, payload): (u8, Vec<u8>) = match frame {
        Frame::Request(bytes) => (b'R', bytes.clone()),
        Frame::Stdout(bytes) => (b'O', bytes.clone()),
        Frame::Progress { label, done, total } => {
            let mut p = done.to_be_bytes().to_vec();
            p.extend_from_slice(&total.to_be_bytes());
            p.extend_from_slice(label.as_bytes());
            (b'P', p)
        }
        Frame::Done => (b'D', Vec::new()),
        Frame::Failed(message) => (b'F', message.as_bytes().to_vec()),
    };
    let len = u32::try_from(payload.len()).map_err(|_| io::Error::other("frame too large"))?;
    out.write_all(&[tag])?;
    out.write_all(&len.to_be_bytes())?;
    out.write_all(&payload)?;
    Ok(())
}

pub fn read_frame(input: &mut impl Read) -> io::Result<Frame> {
    let mut head = [0u8; 5];
    input.read_exact(&mut head)?;
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]);
    if len > MAX_FRAME {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "admin frame too large"));
    }
    let mut payload = vec![0u8; len as usize];
    input.read_exact(&mut payload)?;
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "malformed admin frame");
    Ok(match head[0] {
        b'R' => Frame::Request(payload),
        b'O' => Frame::Stdout(payload),
        b'P' => {
            let done = u64::from_be_bytes(payload.get(..8).ok_or_else(bad)?.try_into().map_err(|_| bad())?);
            let total = u64::from_be_bytes(payload.get(8..16).ok_or_else(bad)?.try_into().map_err(|_| bad())?);
            Frame::Progress { label: String::from_utf8_lossy(&payload[16..]).into_owned(), done, total }
        }
        b'D' => Frame::Done,
        b'F' => Frame::Failed(String::from_utf8_lossy(&payload).into_owned()),
        _ => return Err(bad()),
    })
}

pub fn encode_request(request: &Request) -> io::Result<Vec<u8>> {
    rkyv::to_bytes::<rancor::Error>(request).map(|b| b.to_vec()).map_err(io::Error::other)
}

pub fn decode_request(bytes: &[u8]) -> io::Result<Request> {
    rkyv::from_bytes::<Request, rancor::Error>(bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// The server side's [`Output`]: frames onto the socket. Progress frames are rate-limited
/// to whole percent steps so a long export does not drown in them.
pub struct FrameOutput<W: Write> {
    pub out: W,
    last_percent: Option<(String, u64)>,
}

impl<W: Write> FrameOutput<W> {
    pub fn new(out: W) -> FrameOutput<W> {
        FrameOutput { out, last_percent: None }
    }
}

impl<W: Write> Output for FrameOutput<W> {
    fn stdout(&mut self, bytes: &[u8]) -> io::Result<()> {
        for chunk in bytes.chunks(1 << 20) {
            write_frame(&mut self.out, &Frame::Stdout(chunk.to_vec()))?;
        }
        Ok(())
    }

    fn progress(&mut self, label: &str, done: u64, total: u64) {
        let percent = done.saturating_mul(100).checked_div(total).unwrap_or(100);
        let step = (label.to_string(), percent);
        if self.last_percent.as_ref() != Some(&step) || done == total {
            self.last_percent = Some(step);
            let _ = write_frame(&mut self.out, &Frame::Progress { label: label.to_string(), done, total });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::ExportFormat;

    #[test]
    fn frames_round_trip() {
        let request = Request::Export {
            user: Some("a@b".into()),
            from: Some(3),
            to: None,
            format: ExportFormat::Maildir,
            output: None,
        };
        let frames = vec![
            Frame::Request(encode_request(&request).unwrap()),
            Frame::Stdout(b"hello\n".to_vec()),
            Frame::Progress { label: "export".into(), done: 5, total: 10 },
            Frame::Failed("no".into()),
            Frame::Done,
        ];
        let mut wire = Vec::new();
        for f in &frames {
            write_frame(&mut wire, f).unwrap();
        }
        let mut input = wire.as_slice();
        for f in &frames {
            assert_eq!(&read_frame(&mut input).unwrap(), f);
        }
        let Frame::Request(bytes) = &frames[0] else { unreachable!() };
        assert_eq!(decode_request(bytes).unwrap(), request);
        assert!(read_frame(&mut &[b'R', 0xff, 0xff, 0xff, 0xff][..]).is_err(), "oversized frames are refused");
        assert!(decode_request(b"garbage").is_err());
    }
}
