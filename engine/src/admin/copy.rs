//! `mailtool backup -o DIR` and `mailtool --data NEWDIR restore DIR`.
//!
//! Both are one logical copy from a store into a new data directory: every record (or
//! tombstone) up to the head, the mailbox index, the users, and the range files. A backup
//! taken while maild runs is consistent because (1) the index snapshot is taken while no
//! index update is in flight, (2) records up to its head never change, and (3) record
//! collection is paused until the copy is done. The result is itself a data directory:
//! `maild --data DIR` runs on it, and delivery past its mark is replayed at start.

use std::fs::{self, File};
use std::path::Path;

use super::{AdminError, Output, Result};
use crate::durable;
use crate::pipeline::backup::backup_dir;
use crate::store::{Store, StoreTree};

/// Refuses to write into a directory that holds anything.
fn ensure_new_dir(dir: &Path) -> Result<()> {
    if dir.exists() && fs::read_dir(dir)?.next().is_some() {
        return Err(AdminError::Failed(format!("{} exists and is not empty; give a new directory", dir.display())));
    }
    Ok(())
}

/// Copies `source` into a new data directory `target`.
pub fn copy_store(source: &Store, target: &Path, out: &mut dyn Output) -> Result<u64> {
    ensure_new_dir(target)?;
    let _paused = source.pause_collection();
    let snapshot = source.index_snapshot()?;
    let copy = Store::open(target)?;
    let mut batch = Vec::with_capacity(256);
    for number in 1..=snapshot.head {
        let pairs = source.raw_message(number)?;
        if pairs.is_empty() {
            return Err(AdminError::Failed(format!("message {number} is missing from the source store; run verify")));
        }
        // A large body's file goes first: the record that points to it comes after.
        copy.import_body_file(source, number)?;
        batch.extend(pairs);
        if batch.len() >= 256 || number == snapshot.head {
            copy.import(StoreTree::Messages, &batch)?;
            batch.clear();
            out.progress("copy", number, snapshot.head);
        }
    }
    copy.import_head(snapshot.head)?;
    copy.import(StoreTree::Mailboxes, &snapshot.mailboxes)?;
    copy.import(StoreTree::Users, &snapshot.users)?;
    copy_range_files(&backup_dir(source.dir()), &backup_dir(target), snapshot.head)?;
    copy.bodies().sync()?;
    copy.flush()?;
    Ok(snapshot.head)
}

/// Copies the range files that cover messages up to `head`.
fn copy_range_files(from: &Path, to: &Path, head: u64) -> Result<()> {
    let Ok(entries) = fs::read_dir(from) else { return Ok(()) };
    durable::create_dir_all(to)?;
    for entry in entries {
        let name = entry?.file_name();
        let Some(name) = name.to_str() else { continue };
        let last =
            name.strip_prefix("mailbox.").and_then(|r| r.split_once('-')).and_then(|(_, l)| l.parse::<u64>().ok());
        if last.is_some_and(|last| last <= head) {
            fs::copy(from.join(name), to.join(name))?;
            File::open(to.join(name))?.sync_all()?;
        }
    }
    durable::sync_dir(to)?;
    Ok(())
}

pub fn backup(store: &Store, target: &Path, out: &mut dyn Output) -> Result<()> {
    let head = copy_store(store, target, out)?;
    out.stdout(format!("backup of messages 1..={head} written to {}\n", target.display()).as_bytes())?;
    Ok(())
}

/// Builds a working store in `target` (empty) from the backup in `source`.
pub fn restore(source: &Path, target: &Path, out: &mut dyn Output) -> Result<()> {
    if !source.join("store").exists() {
        return Err(AdminError::Failed(format!("{} is not a maild backup (no store in it)", source.display())));
    }
    let backup = Store::open(source)?;
    let head = copy_store(&backup, target, out)?;
    out.stdout(format!("restored messages 1..={head} into {}\n", target.display()).as_bytes())?;
    Ok(())
}
