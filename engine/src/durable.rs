//! Making file-system changes survive a power cut, not only a crash of the process.
//!
//! A file's bytes are durable once the file is fsync'd; its name is durable once the
//! directory that holds it is fsync'd (`man 2 fsync`: "Calling fsync() does not
//! necessarily ensure that the entry in the directory containing the file has also
//! reached disk. For that an explicit fsync() on a file descriptor for the directory is
//! also needed."). Every file maild or mailtool creates and promises to keep goes
//! through these helpers, so that no step forgets the directory.

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;

/// The directory that holds `path` (`.` for a bare name).
fn parent(path: &Path) -> &Path {
    path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."))
}

/// Makes the entry of `path` in its directory durable (a file just created there).
pub fn sync_parent(path: &Path) -> io::Result<()> {
    sync_dir(parent(path))
}

/// Makes the entries of `dir` (files created, renamed or removed in it) durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Tells the kernel that `file`'s cached pages are not needed: it starts writing the
/// dirty ones now and drops the clean ones. Only a hint, for speed: it makes nothing
/// durable, a sync must still follow.
pub fn uncache(file: &File) {
    let _ = rustix::fs::fadvise(file, 0, None, rustix::fs::Advice::DontNeed);
}

/// Creates `dir` and any missing parents, readable by the owner only, and fsyncs the
/// parent of every directory it creates, so the new directories survive a power cut.
pub fn create_dir_all(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let parent = parent(dir);
    create_dir_all(parent)?;
    match fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        // Created by someone else meanwhile: their fsync is not ours to trust.
        Err(error) if error.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => {}
        Err(error) => return Err(error),
    }
    sync_dir(parent)
}

/// Writes `path` whole or not at all: `write` fills a temporary file beside it, which is
/// fsync'd, renamed over `path`, and then the directory is fsync'd. On an error the
/// temporary file is removed and `path` is as it was. The error is the caller's own, so
/// that what `write` failed on reaches the caller unchanged.
pub fn write_atomically<E: From<io::Error>>(
    path: &Path,
    write: impl FnOnce(&mut BufWriter<File>) -> Result<(), E>,
) -> Result<(), E> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    let result = (|| {
        let mut file = BufWriter::new(File::create(&tmp)?);
        write(&mut file)?;
        file.flush()?;
        file.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        fs::rename(&tmp, path)?;
        Ok(sync_parent(path)?)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_dir_all_makes_private_nested_directories() {
        use std::os::unix::fs::PermissionsExt;
        let base = tempfile::tempdir().unwrap();
        let deep = base.path().join("a/b/c");
        create_dir_all(&deep).unwrap();
        assert!(deep.is_dir());
        assert_eq!(fs::metadata(base.path().join("a")).unwrap().permissions().mode() & 0o777, 0o700);
        // Existing directories are fine.
        create_dir_all(&deep).unwrap();
    }

    #[test]
    fn write_atomically_leaves_the_old_file_on_error() {
        let base = tempfile::tempdir().unwrap();
        let path = base.path().join("out");
        write_atomically::<io::Error>(&path, |f| f.write_all(b"one")).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"one");
        let failed = write_atomically::<io::Error>(&path, |f| {
            f.write_all(b"two")?;
            Err(io::Error::other("stop"))
        });
        assert!(failed.is_err());
        assert_eq!(fs::read(&path).unwrap(), b"one");
        assert_eq!(fs::read_dir(base.path()).unwrap().count(), 1, "no temporary file is left");
    }
}
