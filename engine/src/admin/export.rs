//! `mailtool export`: messages by number, as mboxrd (stdout or a file) or as a new
//! Maildir. Each entry is laid out as in the backup range files; a message once.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::Path;

use super::{AdminError, ExportFormat, Output, Result};
use crate::address::user_key;
use crate::durable;
use crate::mbox;
use crate::store::Store;

pub fn export(
    store: &Store,
    user: Option<&str>,
    from: Option<u64>,
    to: Option<u64>,
    format: ExportFormat,
    output: Option<&str>,
    out: &mut dyn Output,
) -> Result<()> {
    let head = store.head()?;
    let (from, to) = (from.unwrap_or(1).max(1), to.unwrap_or(head).min(head));
    let numbers: Vec<u64> = match user {
        Some(user) => {
            let key = user_key(user).map_err(|_| AdminError::Failed(format!("{user:?} is not a valid address")))?;
            store.mailbox(&key)?.into_iter().filter(|n| (from..=to).contains(n)).collect()
        }
        None => (from..=to).collect(),
    };
    let total = numbers.len() as u64;
    match (format, output) {
        (ExportFormat::Mbox, None) => write_mbox(store, &numbers, out, |out, entry| Ok(out.stdout(entry)?))?,
        (ExportFormat::Mbox, Some(path)) => {
            // Written aside and renamed, so PATH is never a half-written export.
            durable::write_atomically(Path::new(path), |file| {
                write_mbox(store, &numbers, out, |_, entry| Ok(file.write_all(entry)?))
            })?;
        }
        (ExportFormat::Maildir, None) => {
            return Err(AdminError::Failed("--format maildir needs -o DIR (a new directory)".into()));
        }
        (ExportFormat::Maildir, Some(dir)) => {
            let dir = Path::new(dir);
            if dir.exists() && fs::read_dir(dir)?.next().is_some() {
                return Err(AdminError::Failed(format!(
                    "{} exists and is not empty; give a new directory",
                    dir.display()
                )));
            }
            for sub in ["tmp", "new", "cur"] {
                durable::create_dir_all(&dir.join(sub))?;
            }
            for (i, number) in numbers.iter().enumerate() {
                if let Some(message) = store.message(*number)? {
                    // Maildir delivery: write in tmp/, then rename into new/.
                    let name = format!("{}.M{number}.maild", message.record().received_at.to_native());
                    let tmp = dir.join("tmp").join(&name);
                    let mut file = BufWriter::new(File::create(&tmp)?);
                    mbox::write_delivered(&mut file, &message, false)?;
                    file.into_inner().map_err(|e| e.into_error())?.sync_all()?;
                    fs::rename(&tmp, dir.join("new").join(&name))?;
                }
                out.progress("export", i as u64 + 1, total);
            }
            durable::sync_dir(&dir.join("new"))?;
        }
    }
    Ok(())
}

/// One mboxrd entry per stored message, handed to `emit`, with progress.
fn write_mbox(
    store: &Store,
    numbers: &[u64],
    out: &mut dyn Output,
    mut emit: impl FnMut(&mut dyn Output, &[u8]) -> Result<()>,
) -> Result<()> {
    for (i, number) in numbers.iter().enumerate() {
        if let Some(message) = store.message(*number)? {
            let mut pieces = Pieces { buffer: Vec::new(), each: |bytes: &[u8]| emit(out, bytes) };
            mbox::write_entry(&mut pieces, &message)?;
            pieces.flush()?;
        }
        out.progress("export", i as u64 + 1, numbers.len() as u64);
    }
    Ok(())
}

/// Hands what is written to it on to `each` in pieces of about [`PIECE`] octets, so that
/// an entry with a large body is never in memory whole.
struct Pieces<F: FnMut(&[u8]) -> Result<()>> {
    buffer: Vec<u8>,
    each: F,
}

const PIECE: usize = 64 * 1024;

impl<F: FnMut(&[u8]) -> Result<()>> Write for Pieces<F> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.buffer.extend_from_slice(bytes);
        if self.buffer.len() >= PIECE {
            self.flush()?;
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if !self.buffer.is_empty() {
            (self.each)(&self.buffer).map_err(std::io::Error::other)?;
            self.buffer.clear();
        }
        Ok(())
    }
}
