//! Large message bodies, kept as files beside sled: `store/bodies/N` for message N.
//!
//! A body over [`SPILL_AT`] octets leaves memory while it arrives: the SMTP session
//! writes it to a spool file (`store/bodies/tmp.ID`, not synced) instead of growing a
//! buffer, so a 25 MB message costs a session a write buffer, not 25 MB. At commit the
//! store syncs the file, renames it to its number and syncs the directory, all before the
//! journal frame with the message's record is written: a record that survives a power
//! cut always has its body. The record's own body is then empty, and a marker beside it
//! (`e` + N in `messages`) holds the body's length.
//!
//! What a crash can leave here is swept when the store opens: spool files of sessions
//! that never committed, and numbered files without a record that points to them (a
//! commit taken back, or a collected message whose file was still to be removed).

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Bodies up to this many octets stay in memory and in the record; longer ones are
/// spooled to a file and stored as one.
pub const SPILL_AT: usize = 1 << 20;

/// The write buffer of a spooled body: what a session holds of it in memory.
pub const SPOOL_BUFFER: usize = 128 * 1024;

/// Reads of a stored body go in pieces of this size.
pub const READ_CHUNK: usize = 64 * 1024;

/// A spool file checks the free space when it starts and again after each this many
/// octets: a crowd of large messages must not fill the disk under sled (`--min-free-space`).
const SPACE_CHECK_EVERY: u64 = 4 << 20;

const SPOOL_PREFIX: &str = "tmp.";

/// The directory of body files; cheap to clone.
#[derive(Clone, Debug)]
pub struct BodyDir {
    path: Arc<PathBuf>,
    /// Free space that spooling leaves alone (what persist keeps for sled too).
    reserve: u64,
}

/// Tells spool files of one process apart; the process id tells processes apart.
static NEXT_SPOOL: AtomicU64 = AtomicU64::new(0);

impl BodyDir {
    /// The body directory of the sled store at `store_path` (`DATA/store`), created
    /// (owner only, durably) if missing.
    pub fn open(store_path: &Path) -> io::Result<BodyDir> {
        let path = store_path.join("bodies");
        crate::durable::create_dir_all(&path)?;
        Ok(BodyDir { path: Arc::new(path), reserve: 0 })
    }

    /// The same directory, whose spool files refuse to grow into the last `reserve`
    /// bytes of the file system (the message is then refused with `452`).
    pub fn with_reserve(&self, reserve: u64) -> BodyDir {
        BodyDir { reserve, ..self.clone() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn file_of(&self, number: u64) -> PathBuf {
        self.path.join(number.to_string())
    }

    /// A new, empty spool file for a body that is arriving.
    pub fn spool(&self) -> io::Result<SpoolFile> {
        self.check_space()?;
        let id = NEXT_SPOOL.fetch_add(1, Ordering::Relaxed);
        let path = self.path.join(format!("{SPOOL_PREFIX}{}.{id}", std::process::id()));
        let file = OpenOptions::new().write(true).read(true).create_new(true).mode(0o600).open(&path)?;
        let file = BufWriter::with_capacity(SPOOL_BUFFER, file);
        Ok(SpoolFile { file, path: Some(path), len: 0, dir: self.clone(), next_check: SPACE_CHECK_EVERY })
    }

    /// An error (`StorageFull`) unless the next [`SPACE_CHECK_EVERY`] octets, twice over,
    /// fit above the reserve.
    fn check_space(&self) -> io::Result<()> {
        let available = super::available_space(&self.path)?;
        if available < self.reserve.saturating_add(2 * SPACE_CHECK_EVERY) {
            return Err(io::Error::new(
                io::ErrorKind::StorageFull,
                format!("{available} bytes free for spooling in {}, keeping {}", self.path.display(), self.reserve),
            ));
        }
        Ok(())
    }

    /// Removes message `number`'s body file, if there is one (not durably: a file that
    /// comes back after a power cut is swept at the next open).
    pub fn remove(&self, number: u64) -> io::Result<()> {
        match fs::remove_file(self.file_of(number)) {
            Err(error) if error.kind() != io::ErrorKind::NotFound => Err(error),
            _ => Ok(()),
        }
    }

    /// Makes renames and removals in the directory durable.
    pub fn sync(&self) -> io::Result<()> {
        crate::durable::sync_dir(&self.path)
    }

    /// Removes every spool file, and every numbered file for which `keep` says no;
    /// returns how many went. Only while no session spools: when the store opens.
    pub fn sweep(&self, mut keep: impl FnMut(u64) -> io::Result<bool>) -> io::Result<usize> {
        let mut removed = 0;
        for entry in fs::read_dir(self.path.as_path())? {
            let entry = entry?;
            let name = entry.file_name();
            let number = name.to_str().and_then(|n| n.parse::<u64>().ok());
            let stale = match number {
                Some(number) => !keep(number)?,
                None => name.to_str().is_some_and(|n| n.starts_with(SPOOL_PREFIX)),
            };
            if stale {
                fs::remove_file(entry.path())?;
                removed += 1;
            }
        }
        if removed > 0 {
            self.sync()?;
        }
        Ok(removed)
    }
}

/// A body being written to its spool file; the file goes away with it unless it is
/// installed as a message's body.
#[derive(Debug)]
pub struct SpoolFile {
    file: BufWriter<File>,
    /// `None` once installed.
    path: Option<PathBuf>,
    len: u64,
    dir: BodyDir,
    /// The length at which free space is checked again.
    next_check: u64,
}

impl SpoolFile {
    pub fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        if self.len >= self.next_check {
            self.dir.check_space()?;
            self.next_check = self.len + SPACE_CHECK_EVERY;
        }
        self.file.write_all(bytes)?;
        self.len += bytes.len() as u64;
        Ok(())
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Writes out what is buffered (the body is then all in the file).
    pub fn finish(&mut self) -> io::Result<()> {
        self.file.flush()
    }

    /// Up to `max` octets from the start of the body (its header block, for checks).
    pub fn head(&mut self, max: usize) -> io::Result<Vec<u8>> {
        self.file.flush()?;
        let mut head = vec![0; max.min(self.len as usize)];
        self.file.get_ref().read_exact_at(&mut head, 0)?;
        Ok(head)
    }

    /// Makes the body durable under message `number`'s name: sync the file, rename it.
    /// The caller syncs the directory ([`BodyDir::sync`]) before anything points to it.
    pub fn install(&mut self, dir: &BodyDir, number: u64) -> io::Result<()> {
        self.file.flush()?;
        self.file.get_ref().sync_data()?;
        let from = self.path.as_ref().ok_or_else(|| io::Error::other("spool file installed twice"))?;
        fs::rename(from, dir.file_of(number))?;
        self.path = None;
        Ok(())
    }
}

impl Drop for SpoolFile {
    fn drop(&mut self) {
        if let Some(path) = &self.path {
            // Best effort: a spool file left behind is swept at the next open.
            let _ = fs::remove_file(path);
        }
    }
}

/// Message `number`'s body file, checked to hold `len` octets.
pub fn open_body(dir: &BodyDir, number: u64, len: u64) -> io::Result<File> {
    let file = File::open(dir.file_of(number))?;
    let actual = file.metadata()?.len();
    if actual != len {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("body file of message {number} holds {actual} octets, its record says {len}"),
        ));
    }
    Ok(file)
}

/// Calls `each` with the file's bytes in order, [`READ_CHUNK`] at a time, until the end
/// or until `each` returns false.
pub fn read_chunks(mut file: File, mut each: impl FnMut(&[u8]) -> io::Result<bool>) -> io::Result<()> {
    let mut buffer = vec![0; READ_CHUNK];
    loop {
        let read = match file.read(&mut buffer) {
            Ok(0) => return Ok(()),
            Ok(read) => read,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error),
        };
        if !each(&buffer[..read])? {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_installed_spool_file_is_the_body_and_a_dropped_one_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        let bodies = BodyDir::open(dir.path()).unwrap();
        let mut spool = bodies.spool().unwrap();
        spool.write(b"Subject: big\r\n\r\n").unwrap();
        spool.write(&vec![b'x'; 300_000]).unwrap();
        assert_eq!(spool.len(), 300_016);
        assert_eq!(spool.head(9).unwrap(), b"Subject: ");
        spool.install(&bodies, 7).unwrap();
        bodies.sync().unwrap();
        drop(spool);
        let mut read = Vec::new();
        read_chunks(open_body(&bodies, 7, 300_016).unwrap(), |chunk| {
            read.extend_from_slice(chunk);
            Ok(true)
        })
        .unwrap();
        assert_eq!(read.len(), 300_016);
        assert!(read.starts_with(b"Subject: big\r\n\r\nxxx"));
        assert!(open_body(&bodies, 7, 5).is_err(), "a length that does not match is an error");

        let mut dropped = bodies.spool().unwrap();
        dropped.write(b"never committed").unwrap();
        drop(dropped);
        let names: Vec<_> = fs::read_dir(bodies.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("7")]);
    }

    #[test]
    fn spooling_stops_at_the_reserve() {
        let dir = tempfile::tempdir().unwrap();
        let free = crate::store::available_space(dir.path()).unwrap();
        let bodies = BodyDir::open(dir.path()).unwrap();
        assert!(bodies.spool().is_ok());
        let error = bodies.with_reserve(free).spool().unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::StorageFull, "{error}");
        // A file already spooling finds out at its next check.
        let mut spool = bodies.spool().unwrap();
        spool.dir = bodies.with_reserve(free);
        spool.write(&vec![b'x'; SPACE_CHECK_EVERY as usize]).unwrap();
        assert_eq!(spool.write(b"x").unwrap_err().kind(), io::ErrorKind::StorageFull);
    }

    #[test]
    fn the_sweep_removes_spool_files_and_bodies_without_a_record() {
        let dir = tempfile::tempdir().unwrap();
        let bodies = BodyDir::open(dir.path()).unwrap();
        for number in [1, 2, 3] {
            let mut spool = bodies.spool().unwrap();
            spool.write(b"body").unwrap();
            spool.install(&bodies, number).unwrap();
        }
        let left = bodies.spool().unwrap();
        std::mem::forget(left); // as a crash leaves it
        fs::write(bodies.path().join("notes"), b"not ours").unwrap();
        let removed = bodies.sweep(|number| Ok(number != 2)).unwrap();
        assert_eq!(removed, 2);
        let mut names: Vec<_> =
            fs::read_dir(bodies.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        names.sort();
        assert_eq!(names, vec!["1", "3", "notes"]);
    }
}
