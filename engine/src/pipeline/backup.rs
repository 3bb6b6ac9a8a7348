//! The backup stage: writes numbered range files `DATA/backup/mailbox.(32k-31)-(32k)`.
//!
//! Once message 32·k is delivered, the range `32k-31 ..= 32k` is complete and immutable,
//! so the stage writes it as mboxrd (see [`crate::mbox`]): to a temporary file, fsync,
//! rename into place, fsync the directory. A range file that exists is never rewritten.
//! The stage remembers the last range written (`backed_up_through`) and at start-up
//! catches up on any range a crash left unwritten, and writes again any file below the
//! mark that has gone missing. It never delays a `250`: it hears of
//! new messages through a coalescing signal, not a queue that could push back.
//!
//! After a range file is durable, records in it that no mailbox holds any more are
//! collected (the range file keeps the copy).

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::{signal, Signal, SignalWaiter};
use crate::failpoint;
use crate::store::{Store, StoreError};

/// Messages per range file.
pub const RANGE: u64 = 32;

/// The name of the range file holding `first ..= last`.
pub fn range_file_name(first: u64, last: u64) -> String {
    format!("mailbox.{first}-{last}")
}

/// Where range files go for a data directory.
pub fn backup_dir(data: &Path) -> PathBuf {
    data.join("backup")
}

/// Tells the backup stage how far delivery has got. Cheap, never blocks: if a signal is
/// already pending, the stage will read the newest head when it wakes.
#[derive(Clone)]
pub struct BackupSignal {
    head: Arc<AtomicU64>,
    wake: Signal,
}

impl BackupSignal {
    pub fn new() -> (BackupSignal, BackupWaiter) {
        let head = Arc::new(AtomicU64::new(0));
        let (wake, woken) = signal();
        (BackupSignal { head: head.clone(), wake }, BackupWaiter { head, woken })
    }

    /// Wakes the stage only when a range is complete: waking a thread costs more than
    /// the check, and most messages complete no range.
    pub fn delivered(&self, head: u64) {
        let before = self.head.fetch_max(head, Ordering::SeqCst);
        if head / RANGE > before / RANGE {
            self.wake.wake();
        }
    }
}

pub struct BackupWaiter {
    head: Arc<AtomicU64>,
    woken: SignalWaiter,
}

/// How long to wait before trying again after a failed range file.
const RETRY: Duration = Duration::from_secs(1);

/// Ranges written in one pass at most: a pass holds a descriptor per file. A pass takes
/// what is complete when it starts: one range while the stage keeps up, more after a
/// start-up or while the disk is slow, and those share their syncs (see
/// [`write_ranges`]). Waiting on purpose for more ranges to gather saved syncs too, but
/// raised maild's memory by about 30 MiB at 1,000,000 messages (docs/BENCHMARKS.md).
const PASS: u64 = 64;

pub fn run(waiter: BackupWaiter, store: &Store) {
    let dir = backup_dir(store.dir());
    restore_missing(store, &dir);
    let mut ok = match store.head() {
        Ok(head) => catch_up_logged(store, &dir, head),
        Err(error) => {
            log::error!("backup cannot read the head: {error}");
            false
        }
    };
    loop {
        // After a failure, try again soon even if no new message comes.
        let woken = if ok { waiter.woken.wait() } else { waiter.woken.wait_timeout(RETRY) };
        if !woken {
            break;
        }
        ok = catch_up_logged(
            store,
            &dir,
            waiter.head.load(Ordering::SeqCst).max(store.delivered_through().unwrap_or(0)),
        );
    }
    // Senders gone: the pipeline is stopping; finish what is complete.
    catch_up_logged(store, &dir, waiter.head.load(Ordering::SeqCst));
}

fn catch_up_logged(store: &Store, dir: &Path, head: u64) -> bool {
    match catch_up(store, dir, head) {
        Ok(()) => true,
        Err(error) => {
            // The mark stays where the files end: the retry, the next signal, or the
            // next start tries again from there.
            log::error!("writing backup range files: {error}");
            false
        }
    }
}

/// Writes again, at start-up, range files below the mark that are gone (removed by hand,
/// lost with a disk), while the store still holds every message of the range: the bytes
/// are the same as the first time. A range whose messages were collected is reported, for
/// the operator to restore from a backup.
fn restore_missing(store: &Store, dir: &Path) {
    let mark = match store.backed_up_through() {
        Ok(mark) => mark,
        Err(error) => return log::error!("backup cannot read its mark: {error}"),
    };
    // Files moved away on purpose (archived) would otherwise log a line each at every start.
    let (mut lost, mut first_lost) = (0u64, None);
    for last in (RANGE..=mark).step_by(RANGE as usize) {
        let (first, name) = (last - RANGE + 1, range_file_name(last - RANGE + 1, last));
        if dir.join(&name).exists() {
            continue;
        }
        match write_range(store, dir, first) {
            Ok(()) => log::warn!("backup: {name} was missing; wrote it again from the store"),
            Err(error) => {
                lost += 1;
                first_lost.get_or_insert(format!("{name} ({error})"));
            }
        }
    }
    if let Some(first) = first_lost {
        log::error!("backup: {lost} range file(s) missing whose messages are no longer in the store, first {first}; restore them from a backup");
    }
}

/// Writes every complete range up to `head` that is not written yet, up to [`PASS`]
/// ranges at a time.
pub fn catch_up(store: &Store, dir: &Path, head: u64) -> Result<(), StoreError> {
    let mut mark = store.backed_up_through()?;
    while mark + RANGE <= head {
        let written = write_ranges(store, dir, mark, ((head - mark) / RANGE).min(PASS))?;
        failpoint::hit("backup.before_mark").map_err(StoreError::from_io)?;
        let before = mark;
        mark += written * RANGE;
        store.set_backed_up_through(mark)?;
        for last in (before + RANGE..=mark).step_by(RANGE as usize) {
            log::info!("backup: wrote {}", range_file_name(last - RANGE + 1, last));
        }
        store.collect(mark)?;
    }
    Ok(())
}

/// Writes the entries of messages `first ..= last`, as a range file holds them.
fn write_entries(out: &mut impl Write, store: &Store, first: u64, last: u64) -> std::io::Result<()> {
    for number in first..=last {
        let message = store
            .message(number)
            .map_err(std::io::Error::other)?
            .ok_or_else(|| std::io::Error::other(format!("message {number} is missing for its range file")))?;
        crate::mbox::write_entry(out, &message)?;
    }
    Ok(())
}

/// Whether `bytes` are what the range file of `first ..= last` must hold (used by
/// `verify`); an error if a message is missing.
pub fn range_matches(store: &Store, first: u64, last: u64, bytes: &[u8]) -> Result<bool, StoreError> {
    let mut compare = crate::mbox::Compare::new(bytes);
    write_entries(&mut compare, store, first, last).map_err(StoreError::from_io)?;
    Ok(compare.matched())
}

/// One range: tmp → fsync → rename → fsync dir. An existing file is kept as it is.
fn write_range(store: &Store, dir: &Path, first: u64) -> Result<(), StoreError> {
    write_ranges(store, dir, first - 1, 1).map(|_| ())
}

/// Writes the files of the `count` ranges after `mark` together: each to a temporary
/// file, then each fsync'd and renamed into place, and the directory fsync'd once. Every
/// file is handed to the kernel for writing before the first sync, so one commit of the
/// file system's journal can cover all their blocks: a pass of many ranges (after a
/// start-up, or behind a slow disk) costs about two such commits, not two a range.
///
/// A file that exists is kept as it is. Returns how many ranges, from the first, have
/// their file now: all, or those before one whose entries could not be written (the
/// next pass starts at that one and reports its error). On an error no temporary file
/// is left.
fn write_ranges(store: &Store, dir: &Path, mark: u64, count: u64) -> Result<u64, StoreError> {
    crate::durable::create_dir_all(dir).map_err(StoreError::from_io)?;
    let mut written: Vec<(PathBuf, PathBuf, File)> = Vec::new();
    let mut ready = 0;
    for first in (mark + 1..mark + count * RANGE).step_by(RANGE as usize) {
        let (last, name) = (first + RANGE - 1, range_file_name(first, first + RANGE - 1));
        let path = dir.join(&name);
        if !path.exists() {
            let tmp = dir.join(format!(".{name}.tmp"));
            match write_temporary(store, &tmp, first, last) {
                Ok(file) => written.push((tmp, path, file)),
                Err(error) if ready == 0 => return Err(StoreError::from_io(error)),
                Err(_) => break,
            }
        }
        ready += 1;
    }
    let result = (|| {
        for (_, _, file) in &written {
            file.sync_all()?;
        }
        failpoint::hit("backup.before_rename")?;
        for (tmp, path, _) in &written {
            fs::rename(tmp, path)?;
        }
        // Also when every file existed: a pass that failed after a rename did not sync.
        crate::durable::sync_dir(dir)
    })();
    if result.is_err() {
        for (tmp, _, _) in &written {
            let _ = fs::remove_file(tmp);
        }
    }
    result.map(|()| ready).map_err(StoreError::from_io)
}

/// The range's entries in a new file at `tmp`, handed to the kernel for writing (not yet
/// durable); the file is removed again if that fails.
fn write_temporary(store: &Store, tmp: &Path, first: u64, last: u64) -> std::io::Result<File> {
    let result = (|| {
        let mut file = BufWriter::with_capacity(64 * 1024, File::create(tmp)?);
        let middle = first + RANGE / 2;
        write_entries(&mut file, store, first, middle - 1)?;
        file.flush()?;
        failpoint::hit("backup.mid_write")?;
        write_entries(&mut file, store, middle, last)?;
        let file = file.into_inner().map_err(|e| e.into_error())?;
        crate::durable::uncache(&file);
        Ok(file)
    })();
    if result.is_err() {
        let _ = fs::remove_file(tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stage_is_woken_only_when_a_range_is_complete() {
        let (signal, waiter) = BackupSignal::new();
        let woken = || waiter.woken.receiver().try_recv().is_ok();
        signal.delivered(5);
        assert!(!woken(), "no range is complete at 5");
        signal.delivered(RANGE);
        assert!(woken(), "1-32 is complete");
        signal.delivered(RANGE + 7);
        signal.delivered(RANGE + 3); // late and lower: the head stays at 39
        assert!(!woken());
        assert_eq!(waiter.head.load(Ordering::SeqCst), RANGE + 7);
        signal.delivered(3 * RANGE + 1); // two ranges at once: one wake-up
        assert!(woken());
        assert!(!woken());
    }

    /// A store holding messages 1 ..= `count`.
    fn store_with(count: u64) -> (tempfile::TempDir, Store) {
        use crate::store::record::{MessageRecord, Routing};
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        for start in (0..count).step_by(100) {
            let records: Vec<(Vec<u8>, Routing)> = (start + 1..=(start + 100).min(count))
                .map(|number| {
                    let record = MessageRecord {
                        number,
                        received_at: 1,
                        sender: "a@x.test".into(),
                        recipients: vec!["b@x.test".into()],
                        trace: format!("Received: id {number}\r\n"),
                        body: format!("From the start of {number}\r\n").into_bytes(),
                    };
                    (rkyv::to_bytes::<rkyv::rancor::Error>(&record).unwrap().to_vec(), Routing::default())
                })
                .collect();
            store.commit(start, records).unwrap();
        }
        (dir, store)
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> =
            fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        names.sort_by_key(|name| name.split(['.', '-']).nth(1).and_then(|n| n.parse::<u64>().ok()));
        names
    }

    #[test]
    fn ranges_are_written_a_pass_at_a_time_and_an_existing_file_is_kept() {
        let ranges = PASS + 2;
        let (_tmp, store) = store_with(ranges * RANGE + 5);
        let dir = backup_dir(store.dir());
        crate::durable::create_dir_all(&dir).unwrap();
        fs::write(dir.join("mailbox.33-64"), b"kept").unwrap();
        catch_up(&store, &dir, ranges * RANGE + 5).unwrap();
        assert_eq!(store.backed_up_through().unwrap(), ranges * RANGE);
        let expected: Vec<String> = (0..ranges).map(|i| range_file_name(i * RANGE + 1, (i + 1) * RANGE)).collect();
        assert_eq!(names(&dir), expected, "one file a range, no temporary left");
        assert_eq!(fs::read(dir.join("mailbox.33-64")).unwrap(), b"kept");
        for i in [0, PASS - 1, PASS, ranges - 1] {
            let (first, last) = (i * RANGE + 1, (i + 1) * RANGE);
            let bytes = fs::read(dir.join(range_file_name(first, last))).unwrap();
            assert!(range_matches(&store, first, last, &bytes).unwrap(), "{first}-{last}");
        }
    }

    #[test]
    fn a_range_that_cannot_be_written_stops_the_mark_after_the_ones_before_it() {
        // Messages 70 ..= 96 are missing: the third range cannot be written.
        let (_tmp, store) = store_with(2 * RANGE + 5);
        let dir = backup_dir(store.dir());
        let error = catch_up(&store, &dir, 3 * RANGE).unwrap_err();
        assert!(error.to_string().contains("message 70 is missing"), "{error}");
        assert_eq!(store.backed_up_through().unwrap(), 2 * RANGE);
        assert_eq!(names(&dir), ["mailbox.1-32", "mailbox.33-64"], "no temporary file left");
    }
}
