//! The intake journal: where a group of new messages becomes durable before its `250`.
//!
//! sled makes a write batch durable only by flushing its log, and one batch is two log
//! buffers, each written and `fdatasync`'d on its own (`pagecache::pin_log` rolls the
//! buffer around the batch manifest), behind whatever the deliver stage wrote since:
//! four syncs per message at one connection. The journal makes a commit one write and
//! one `fdatasync` instead: the group's writes go into one checksummed frame in a file
//! that was filled with zeros when it was made (overwriting blocks that exist already
//! costs the file system no metadata), and only then into sled, which makes them durable
//! later, in the background or at the next flush.
//!
//! Every frame has an id, one more than the frame before it, and applying a frame to sled
//! ends with writing its id ([`keys::JOURNAL`]), so the store always knows which frames
//! it holds: sled recovers a prefix of its log, so it holds the frames up to that id whole
//! and at most the start of the next, which is applied again. At open, [`Journal::open`] hands back the frames after it;
//! the store applies them and flushes. When the file is full, the store flushes sled
//! (every frame is then in sled's log) and the journal starts again at offset 0. The
//! frames after the new ones are older (lower ids) and end the scan, as does a torn or
//! half-written frame (bad checksum).
//!
//! Frame: magic `MJ1\n`, id (u64), payload length (u32), CRC-32 of id, length and
//! payload (u32), then the payload: operations of one sled batch on the `messages` tree,
//! each a kind byte (1 insert, 2 remove), the key length (u16) and key, and for an
//! insert the value length (u32) and value. Integers are big-endian.
//!
//! [`keys::JOURNAL`]: super::record::keys::JOURNAL

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

const MAGIC: &[u8; 4] = b"MJ1\n";
const HEADER: usize = 4 + 8 + 4 + 4;
const INSERT: u8 = 1;
const REMOVE: u8 = 2;

/// Bytes written (as zeros) when the journal is made; a group that does not fit in what
/// is left makes the store flush sled and start again at 0.
pub const CAPACITY: u64 = 8 << 20;

/// One write of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Insert(Vec<u8>, Vec<u8>),
    Remove(Vec<u8>),
}

/// A frame read back at open: its id and its batch.
#[derive(Debug, PartialEq, Eq)]
pub struct Frame {
    pub id: u64,
    pub ops: Vec<Op>,
}

pub struct Journal {
    file: File,
    /// Where the next frame goes.
    end: u64,
    next_id: u64,
}

impl Journal {
    /// Opens (creating and filling with zeros if needed) the journal at `path`, and returns
    /// it with the frames whose id is above `applied`, in order: the caller applies them and
    /// makes sled durable, then calls [`Journal::restart`].
    pub fn open(path: &Path, applied: u64) -> io::Result<(Journal, Vec<Frame>)> {
        let created = !path.exists();
        let mut file = OpenOptions::new().read(true).write(true).create(true).truncate(false).mode(0o600).open(path)?;
        if created {
            file.write_all_at(&vec![0; CAPACITY as usize], 0)?;
            file.sync_all()?;
            crate::durable::sync_parent(path)?;
        }
        // One large write of zeros, or a read with readahead, leaves the file in the page
        // cache in large folios (up to 2 MiB where the kernel gives regular files large
        // folios), and a frame written into a clean folio dirties all of it: every
        // `fdatasync` wrote a whole folio, about 0.5 MiB a commit. So the pages are dropped
        // and read back without readahead, which brings them back one page each (and
        // cached: a frame that starts in a page not cached would wait for its read).
        // Both are hints: a file system that takes neither still works, only slower.
        crate::durable::uncache(&file);
        let _ = rustix::fs::fadvise(&file, 0, None, rustix::fs::Advice::Random);
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let (frames, last_id) = scan(&bytes, applied);
        Ok((Journal { file, end: 0, next_id: last_id.saturating_add(1) }, frames))
    }

    /// Starts writing at offset 0 again. Only once every frame written so far is durable
    /// in sled: the new frames overwrite them.
    pub fn restart(&mut self) {
        self.end = 0;
    }

    /// True if a frame of `ops` would run past [`CAPACITY`] (and the journal holds any).
    pub fn is_full_for(&self, ops: &[Op]) -> bool {
        self.end > 0 && self.end + encoded_len(ops) as u64 > CAPACITY
    }

    /// Writes `ops` as the next frame and `fdatasync`s it; returns its id. On an error the
    /// frame's magic is overwritten and synced, so that a frame whose write failed half-way
    /// cannot come back at the next open; if even that fails, the journal cannot be
    /// trusted and the error says so ([`AppendError::Unknown`] vs [`AppendError::NotWritten`]).
    pub fn append(&mut self, ops: &[Op]) -> Result<u64, AppendError> {
        let id = self.next_id;
        let frame = encode(id, ops);
        let written = self.file.write_all_at(&frame, self.end).and_then(|()| self.file.sync_data());
        if let Err(error) = written {
            let erased = self.file.write_all_at(&[0; 4], self.end).and_then(|()| self.file.sync_data());
            return Err(match erased {
                Ok(()) => AppendError::NotWritten(error),
                Err(_) => AppendError::Unknown(error),
            });
        }
        self.end += frame.len() as u64;
        self.next_id += 1;
        Ok(id)
    }
}

/// Why [`Journal::append`] failed.
#[derive(Debug)]
pub enum AppendError {
    /// The frame is not in the journal: the commit can be refused and retried.
    NotWritten(io::Error),
    /// The frame may or may not be on disk: only a restart can tell.
    Unknown(io::Error),
}

/// The frames in a journal's bytes, from the start up to the first that is torn, garbled
/// or older than the one before it; returns those whose id is above `applied`, and the
/// highest id seen (`applied` if none is higher).
pub fn scan(bytes: &[u8], applied: u64) -> (Vec<Frame>, u64) {
    let mut frames = Vec::new();
    let mut last_id = applied;
    let mut expected: Option<u64> = None;
    let mut offset = 0;
    while let Some((id, payload, next)) = frame_at(bytes, offset) {
        // Frames follow each other by id; an older one is what the last restart left.
        if expected.is_some_and(|e| e != id) {
            break;
        }
        let Some(ops) = decode_ops(payload) else { break };
        if id > applied {
            frames.push(Frame { id, ops });
        }
        last_id = last_id.max(id);
        let Some(following) = id.checked_add(1) else { break };
        expected = Some(following);
        offset = next;
    }
    (frames, last_id)
}

fn encoded_len(ops: &[Op]) -> usize {
    HEADER
        + ops
            .iter()
            .map(|op| match op {
                Op::Insert(key, value) => 1 + 2 + key.len() + 4 + value.len(),
                Op::Remove(key) => 1 + 2 + key.len(),
            })
            .sum::<usize>()
}

/// One frame's bytes (keys under 64 KiB, values and the whole under 4 GiB).
pub fn encode(id: u64, ops: &[Op]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(encoded_len(ops));
    frame.extend_from_slice(MAGIC);
    frame.extend_from_slice(&id.to_be_bytes());
    frame.extend_from_slice(&[0; 8]); // length and checksum, below
    for op in ops {
        let (kind, key, value) = match op {
            Op::Insert(key, value) => (INSERT, key, Some(value)),
            Op::Remove(key) => (REMOVE, key, None),
        };
        frame.push(kind);
        // Keys are a few bytes; a longer one is a bug, and truncating it would be worse.
        let key_len = u16::try_from(key.len()).expect("store keys are short");
        frame.extend_from_slice(&key_len.to_be_bytes());
        frame.extend_from_slice(key);
        if let Some(value) = value {
            let value_len = u32::try_from(value.len()).expect("a message is under 4 GiB");
            frame.extend_from_slice(&value_len.to_be_bytes());
            frame.extend_from_slice(value);
        }
    }
    let payload_len = u32::try_from(frame.len() - HEADER).expect("a group is under 4 GiB");
    frame[12..16].copy_from_slice(&payload_len.to_be_bytes());
    let crc = checksum(&frame[4..16], &frame[HEADER..]);
    frame[16..20].copy_from_slice(&crc.to_be_bytes());
    frame
}

fn checksum(id_and_len: &[u8], payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(id_and_len);
    hasher.update(payload);
    hasher.finalize()
}

/// The frame at `offset`: its id, payload and where the next one starts; `None` where no
/// whole frame with a good checksum is.
fn frame_at(bytes: &[u8], offset: usize) -> Option<(u64, &[u8], usize)> {
    let header = bytes.get(offset..offset.checked_add(HEADER)?)?;
    if &header[..4] != MAGIC {
        return None;
    }
    let id = u64::from_be_bytes(header[4..12].try_into().ok()?);
    let len = u32::from_be_bytes(header[12..16].try_into().ok()?) as usize;
    let crc = u32::from_be_bytes(header[16..20].try_into().ok()?);
    let start = offset + HEADER;
    let payload = bytes.get(start..start.checked_add(len)?)?;
    (checksum(&header[4..16], payload) == crc).then_some((id, payload, start + len))
}

fn decode_ops(mut payload: &[u8]) -> Option<Vec<Op>> {
    fn take<'a>(bytes: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        let (head, rest) = (bytes.get(..n)?, bytes.get(n..)?);
        *bytes = rest;
        Some(head)
    }
    let mut ops = Vec::new();
    while !payload.is_empty() {
        let kind = take(&mut payload, 1)?[0];
        let key_len = u16::from_be_bytes(take(&mut payload, 2)?.try_into().ok()?) as usize;
        let key = take(&mut payload, key_len)?.to_vec();
        ops.push(match kind {
            INSERT => {
                let value_len = u32::from_be_bytes(take(&mut payload, 4)?.try_into().ok()?) as usize;
                Op::Insert(key, take(&mut payload, value_len)?.to_vec())
            }
            REMOVE => Op::Remove(key),
            _ => return None,
        });
    }
    Some(ops)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ops(tag: u8) -> Vec<Op> {
        vec![
            Op::Insert(vec![b'm', tag], vec![tag; 300]),
            Op::Remove(vec![b'o', tag]),
            Op::Insert(b"h".to_vec(), vec![]),
        ]
    }

    #[test]
    fn frames_after_the_applied_id_come_back_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal");
        let (mut journal, frames) = Journal::open(&path, 0).unwrap();
        assert!(frames.is_empty());
        assert_eq!(std::fs::metadata(&path).unwrap().len(), CAPACITY);
        for tag in 1..=3 {
            assert_eq!(journal.append(&ops(tag)).unwrap(), tag as u64);
        }
        drop(journal);
        let (mut journal, frames) = Journal::open(&path, 1).unwrap();
        assert_eq!(frames, vec![Frame { id: 2, ops: ops(2) }, Frame { id: 3, ops: ops(3) }]);
        // Ids go on from the last frame, not from what was applied.
        assert_eq!(journal.append(&ops(9)).unwrap(), 4);
    }

    #[test]
    fn a_torn_frame_and_everything_after_it_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal");
        let (mut journal, _) = Journal::open(&path, 0).unwrap();
        journal.append(&ops(1)).unwrap();
        let second_at = journal.end;
        journal.append(&ops(2)).unwrap();
        journal.append(&ops(3)).unwrap();
        drop(journal);
        // One byte of the second frame's payload never reached the disk.
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        file.write_all_at(&[0xff], second_at + HEADER as u64 + 40).unwrap();
        let (journal, frames) = Journal::open(&path, 0).unwrap();
        assert_eq!(frames, vec![Frame { id: 1, ops: ops(1) }]);
        // A new frame gets an id none of the ignored ones had.
        assert_eq!(journal.next_id, 2);
    }

    #[test]
    fn after_a_restart_the_older_frames_behind_the_new_ones_are_not_replayed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal");
        let (mut journal, _) = Journal::open(&path, 0).unwrap();
        for tag in 1..=5 {
            journal.append(&ops(tag)).unwrap();
        }
        // All five are in sled now; the journal starts again with a shorter frame, so the
        // old ones lie behind it, whole and with good checksums.
        journal.restart();
        let short = vec![Op::Remove(b"h".to_vec())];
        assert_eq!(journal.append(&short).unwrap(), 6);
        drop(journal);
        let (_, frames) = Journal::open(&path, 5).unwrap();
        assert_eq!(frames, vec![Frame { id: 6, ops: short }]);
    }

    #[test]
    fn garbage_never_decodes_as_a_frame() {
        for bytes in [&b""[..], b"MJ1\n", &[0u8; 64], b"MJ1\n\0\0\0\0\0\0\0\x01\xff\xff\xff\xff\0\0\0\0"] {
            assert_eq!(frame_at(bytes, 0), None);
        }
        assert_eq!(decode_ops(&[INSERT, 0, 5, b'k']), None);
        assert_eq!(decode_ops(&[7, 0, 0]), None);
    }

    #[test]
    fn a_full_journal_says_so_only_when_it_holds_frames() {
        let dir = tempfile::tempdir().unwrap();
        let (mut journal, _) = Journal::open(&dir.path().join("journal"), 0).unwrap();
        let big = vec![Op::Insert(b"m".to_vec(), vec![0; CAPACITY as usize])];
        // Alone it may grow the file; behind another frame it waits for a restart.
        assert!(!journal.is_full_for(&big));
        journal.append(&ops(1)).unwrap();
        assert!(journal.is_full_for(&big));
        assert!(!journal.is_full_for(&ops(2)));
    }
}
