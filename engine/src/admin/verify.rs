//! `mailtool verify`: checks that the store keeps its promises, and says where it does not.
//!
//! - the sequence `1..=head` is contiguous: each number has its record or a tombstone
//!   (collected after every mailbox let it go), and no record lies beyond the head;
//! - every record decodes (rkyv validation) and carries its own number;
//! - every mailbox entry resolves to a record, and reference counts match the entries
//!   (up to the deliver mark: past it, a crash cut delivery short and start-up redoes it);
//! - every message up to the deliver mark was delivered (held, let go, or collected);
//! - every user record decodes;
//! - every range file up to the backup mark exists and holds exactly its 32 messages.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use super::{AdminError, Output, Result};
use crate::pipeline::backup::{backup_dir, range_file_name, range_matches, RANGE};
use crate::store::record::keys;
use crate::store::{Store, StoreTree};
use crate::users::check_user_record;

pub fn run(store: &Store, out: &mut dyn Output) -> Result<()> {
    let mut faults: Vec<String> = Vec::new();
    let head = store.head()?;

    // The sequence and the records.
    let mut tombstones = 0u64;
    for number in 1..=head {
        match store.message(number) {
            Ok(Some(message)) if message.record().number.to_native() == number => {
                if let Err(error) = message.open_body() {
                    faults.push(format!("message {number}: {error}"));
                }
            }
            Ok(Some(message)) => {
                faults.push(format!("message {number}: record says it is {}", message.record().number))
            }
            Ok(None) if store.is_tombstone(number)? => tombstones += 1,
            Ok(None) => faults.push(format!("message {number}: missing (sequence 1..={head} has a gap)")),
            Err(error) => faults.push(format!("message {number}: {error}")),
        }
        if number % 1024 == 0 || number == head {
            out.progress("verify", number, head);
        }
    }
    for item in store.raw_entries(StoreTree::Messages) {
        let (key, _) = item?;
        match (key.first(), keys::number(&key)) {
            (Some(&keys::MESSAGE) | Some(&keys::TOMBSTONE), Some(n)) if n > head => {
                faults.push(format!("message {n}: stored beyond the head {head}"))
            }
            _ => {}
        }
    }

    // Mailboxes and reference counts, read while no stage changes them: a queue record
    // removed between reading it and reading its count would look like a fault.
    let held = store.hold_mailboxes();
    let mut entries_per_message: BTreeMap<u64, u32> = BTreeMap::new();
    let mut counted: BTreeMap<u64, u32> = BTreeMap::new();
    let mut unreferenced: std::collections::BTreeSet<u64> = std::collections::BTreeSet::new();
    let mut entry_count = 0u64;
    for item in store.raw_entries(StoreTree::Mailboxes) {
        let (key, value) = item?;
        match key.first() {
            Some(&keys::ENTRY) => {
                entry_count += 1;
                let user = String::from_utf8_lossy(&key[1..key.len().saturating_sub(9)]).into_owned();
                let Some(number) = keys::number(&key) else {
                    faults.push(format!("mailbox {user}: malformed entry"));
                    continue;
                };
                *entries_per_message.entry(number).or_default() += 1;
                if number > head || store.message(number).ok().flatten().is_none() {
                    faults.push(format!("mailbox {user}: entry {number} does not resolve to a message"));
                }
            }
            Some(&keys::QUEUE) => {
                // A queued forward holds the message like a mailbox entry does.
                if let Some(number) = keys::number(&key[..key.len().min(9)]) {
                    *entries_per_message.entry(number).or_default() += 1;
                    if number > head || store.message(number).ok().flatten().is_none() {
                        faults.push(format!("queue: entry for message {number} does not resolve to a message"));
                    }
                }
            }
            Some(&keys::UNREFERENCED) => {
                if let Some(number) = keys::number(&key) {
                    unreferenced.insert(number);
                }
            }
            Some(&keys::REFS) => {
                let refs = <[u8; 4]>::try_from(value.as_ref()).map(u32::from_be_bytes).unwrap_or(0);
                if let Some(number) = keys::number(&key) {
                    counted.insert(number, refs);
                }
            }
            _ => {}
        }
    }
    let delivered = store.delivered_through()?;
    // Past the mark, delivery was cut short by a crash (it writes the mark last); the
    // next start sets those entries and counts again, whole.
    for (number, entries) in entries_per_message.range(..=delivered) {
        if counted.get(number) != Some(entries) {
            faults.push(format!(
                "message {number}: {entries} mailbox entries but a reference count of {:?}",
                counted.get(number)
            ));
        }
    }
    if delivered > head {
        faults.push(format!("deliver mark {delivered} is beyond the head {head}"));
    }
    // Every delivered message is accounted for: held (a reference count), let go by
    // everyone (unreferenced, awaiting collection), or collected (a tombstone). A number
    // with none of these was skipped by delivery.
    for number in 1..=delivered.min(head) {
        if !counted.contains_key(&number) && !unreferenced.contains(&number) && !store.is_tombstone(number)? {
            faults.push(format!("message {number}: delivered per the mark, but in no mailbox or queue"));
        }
    }
    drop(held);

    // Users.
    let mut users = 0;
    for item in store.raw_entries(StoreTree::Users) {
        let (key, value) = item?;
        users += 1;
        if let Err(error) = check_user_record(&value) {
            faults.push(format!("user {}: does not decode: {error}", String::from_utf8_lossy(&key)));
        }
    }

    // Range files.
    let dir = backup_dir(store.dir());
    let backed_up = store.backed_up_through()?;
    let mut ranges = 0;
    let mut first = 1;
    while first + RANGE - 1 <= head {
        let last = first + RANGE - 1;
        let path = dir.join(range_file_name(first, last));
        match fs::read(&path) {
            Ok(bytes) => {
                ranges += 1;
                if let Some(fault) = check_range(store, first, last, &bytes)? {
                    faults.push(format!("{}: {fault}", range_file_name(first, last)));
                }
            }
            Err(_) if last <= backed_up => faults.push(format!("{}: missing", range_file_name(first, last))),
            Err(_) => {}
        }
        first += RANGE;
    }

    let summary = format!(
        "head: {head}\nmessages: {}\ncollected: {tombstones}\nmailbox entries: {entry_count}\nusers: {users}\nrange files: {ranges}\nfaults: {}\n",
        head - tombstones,
        faults.len()
    );
    let mut report = String::new();
    for fault in &faults {
        report.push_str(&format!("FAULT {fault}\n"));
    }
    // Not a fault of the store's promises, but of its privacy: said, not failed on.
    let open = open_to_others(store.dir());
    for (path, mode) in open.iter().take(20) {
        report.push_str(&format!(
            "WARNING {}: mode {:04o} lets other users read the mail store (chmod -R go-rwx {})\n",
            path.display(),
            mode & 0o7777,
            store.dir().display()
        ));
    }
    if open.len() > 20 {
        report.push_str(&format!("WARNING {} more path(s) open to other users\n", open.len() - 20));
    }
    report.push_str(&summary);
    out.stdout(report.as_bytes())?;
    if faults.is_empty() {
        Ok(())
    } else {
        Err(AdminError::Failed(format!("verify found {} fault(s)", faults.len())))
    }
}

/// Every path under `dir` (itself included) that a group or other user may access, with its
/// mode. Symbolic links are not followed.
pub fn open_to_others(dir: &Path) -> Vec<(PathBuf, u32)> {
    use std::os::unix::fs::PermissionsExt;
    let mut open = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(path) = pending.pop() {
        let Ok(meta) = fs::symlink_metadata(&path) else { continue };
        let mode = meta.permissions().mode();
        if mode & 0o077 != 0 && !meta.file_type().is_symlink() {
            open.push((path.clone(), mode));
        }
        if meta.is_dir() {
            if let Ok(entries) = fs::read_dir(&path) {
                pending.extend(entries.flatten().map(|e| e.path()));
            }
        }
    }
    open.sort();
    open
}

/// Compares a range file with the records; where records were collected, checks what it
/// can (the entry's number) and trusts the file for the rest.
fn check_range(store: &Store, first: u64, last: u64, bytes: &[u8]) -> Result<Option<String>> {
    if let Ok(matches) = range_matches(store, first, last, bytes) {
        return Ok((!matches).then(|| "content differs from the stored messages".to_string()));
    }
    let entries: Vec<&[u8]> = split_entries(bytes);
    if entries.len() as u64 != last - first + 1 {
        return Ok(Some(format!("holds {} entries, not {}", entries.len(), last - first + 1)));
    }
    for (entry, number) in entries.iter().zip(first..=last) {
        if !entry.windows(10 + number.to_string().len()).any(|w| w == format!("\nNumber: {number}\r").as_bytes()) {
            return Ok(Some(format!("entry {number} is out of place")));
        }
        if let Some(message) = store.message(number)? {
            let mut compare = crate::mbox::Compare::new(entry);
            if let Err(error) = crate::mbox::write_entry(&mut compare, &message) {
                return Ok(Some(format!("entry {number} cannot be compared: {error}")));
            }
            if !compare.matched() {
                return Ok(Some(format!("entry {number} differs from the stored message")));
            }
        }
    }
    Ok(None)
}

/// Splits an mbox into entries, each starting at its `From ` line. Public only for the
/// fuzz target `mbox_reader` (`fuzz/`).
#[doc(hidden)]
pub fn split_entries(bytes: &[u8]) -> Vec<&[u8]> {
    let mut starts = Vec::new();
    let mut at_line_start = true;
    for (i, &b) in bytes.iter().enumerate() {
        if at_line_start && bytes[i..].starts_with(b"From ") {
            starts.push(i);
        }
        at_line_start = b == b'\n';
    }
    starts.iter().enumerate().map(|(k, &s)| &bytes[s..starts.get(k + 1).copied().unwrap_or(bytes.len())]).collect()
}
