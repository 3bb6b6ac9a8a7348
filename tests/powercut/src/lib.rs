//! A FUSE file system for tests that need a power cut: it keeps every write pending until its file is
//! fsync'd and every directory change pending until its directory is fsync'd, and on command throws all
//! pending work away, exactly as losing power would, then mounts what survived as the next boot.
//!
//! A crash test that only kills a process proves little about durability: the kernel's page cache
//! survives the kill, so data that was never fsync'd still reads back. This file system holds its whole
//! image in memory, in two views (current and durable), so that the only way data survives
//! [`Mount::power_cut`] is the fsync that a real disk would have needed.
//!
//! What counts as a sync: the FUSE FSYNC op for files (fsync and fdatasync) and FSYNCDIR for
//! directories. Close (FLUSH), `sync_file_range` and `syncfs` make nothing durable. Attributes other
//! than the size (mode, owner, times) are durable at once. Hard links are refused; flock and POSIX
//! locks are left to the kernel, which emulates them locally because this file system does not claim them.

mod fs;
mod image;

use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use fuser::{Config, MountOption, Session, SessionACL, SessionUnmounter};

use crate::fs::{lock, Counters, PowerCutFs, State};
use crate::image::Image;

/// What a power cut threw away.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CutReport {
    /// Bytes written but not fsync'd that differed from the durable content (bytes that existed in only
    /// one of the two versions count too).
    pub dropped_bytes: u64,
    /// Directory entries whose change (create, remove, rename in or out) was not fsync'd.
    pub dropped_entries: u64,
    /// Files whose content went back to an older version.
    pub files_reverted: u64,
}

/// Sync calls seen since [`Mount::new`], summed over every boot of that mount.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// FSYNC requests: fsync and fdatasync on anything but a directory.
    pub fsyncs: u64,
    /// FSYNCDIR requests: fsync on a directory.
    pub fsyncdirs: u64,
}

/// A mounted power-cut file system.
pub struct Mount {
    /// The mount point as the caller named it.
    path: PathBuf,
    /// The mount point with symbolic links resolved, which is what the kernel's mount table holds and
    /// what a lazy unmount must name.
    canonical: PathBuf,
    /// The current boot's state. It is replaced at every power cut, so a leftover handle on the old
    /// mount can only ever see the old, dead state.
    state: Arc<Mutex<State>>,
    counters: Arc<Counters>,
    /// The running server, absent only if remounting after a cut failed.
    served: Option<Served>,
}

/// A FUSE session running on its own thread, with the means to end it.
struct Served {
    unmounter: SessionUnmounter,
    thread: JoinHandle<io::Result<()>>,
}

impl Mount {
    /// Mounts an empty power-cut file system at `mountpoint` (an existing empty directory), served by a
    /// background thread of this process.
    pub fn new(mountpoint: &Path) -> io::Result<Mount> {
        if !mountpoint.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{} is not a directory", mountpoint.display()),
            ));
        }
        let canonical = mountpoint.canonicalize()?;
        // SAFETY: geteuid and getegid cannot fail and touch no memory.
        let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
        let state = Arc::new(Mutex::new(State::new(Image::new(uid, gid))));
        let counters = Arc::new(Counters::default());
        let served = serve(&canonical, &state, &counters)?;
        Ok(Mount { path: mountpoint.to_path_buf(), canonical, state, counters, served: Some(served) })
    }

    /// The mount point, as given to [`Mount::new`].
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The power cut and the reboot: drops every write and directory change not yet fsync'd, unmounts,
    /// and mounts the surviving image again at the same path.
    ///
    /// Callers must have stopped (killed) every process using the mount first. If the unmount is busy
    /// anyway, the old mount is detached lazily and every request still reaching it fails with EIO.
    pub fn power_cut(&mut self) -> io::Result<CutReport> {
        // The cut happens first and in one step, so that nothing arriving while the old mount is being
        // torn down can slip into the surviving image.
        let (image, report) = {
            let mut st = lock(&self.state);
            let (image, report) = st.image.cut();
            st.dead = true;
            (image, report)
        };
        if let Some(served) = self.served.take() {
            unmount(served, &self.canonical);
        }
        self.state = Arc::new(Mutex::new(State::new(image)));
        self.served = Some(serve(&self.canonical, &self.state, &self.counters)?);
        Ok(report)
    }

    /// Counters since mount: fsync calls on files, fsyncdir calls.
    pub fn stats(&self) -> Stats {
        Stats {
            fsyncs: self.counters.fsyncs.load(Ordering::Relaxed),
            fsyncdirs: self.counters.fsyncdirs.load(Ordering::Relaxed),
        }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if let Some(served) = self.served.take() {
            unmount(served, &self.canonical);
        }
    }
}

impl std::fmt::Debug for Mount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mount").field("path", &self.path).field("mounted", &self.served.is_some()).finish()
    }
}

/// Mounts `state` at `mountpoint` and serves it from background threads. If mounting fails, `state`
/// still holds the image, so nothing is lost but the mount.
fn serve(mountpoint: &Path, state: &Arc<Mutex<State>>, counters: &Arc<Counters>) -> io::Result<Served> {
    let fs = PowerCutFs { state: Arc::clone(state), counters: Arc::clone(counters) };
    let mut config = Config::default();
    config.mount_options = vec![MountOption::FSName("powercut".to_string()), MountOption::DefaultPermissions];
    // Tests may run the server under test as another user; the kernel still checks modes because of
    // DefaultPermissions.
    config.acl = SessionACL::All;
    // Two workers let a read or an fsync of a large file proceed while another request is parsed; the
    // image lock serialises the rest.
    config.n_threads = Some(2);
    config.clone_fd = true;
    let mut session = Session::new(fs, mountpoint, &config)?;
    let unmounter = session.unmount_callable();
    let thread = std::thread::Builder::new().name("powercut-fuse".to_string()).spawn(move || session.run())?;
    Ok(Served { unmounter, thread })
}

/// Unmounts and waits for the server threads. A busy mount is detached instead (MNT_DETACH): it stays
/// alive, serving EIO, until its last user lets go, and its thread is left to end on its own then.
fn unmount(mut served: Served, canonical: &Path) {
    let wait = match served.unmounter.unmount() {
        Ok(()) => Duration::from_secs(10),
        Err(e) => {
            log::warn!("powercut: unmounting {} failed ({e}); detaching it lazily", canonical.display());
            detach(canonical);
            // The detached session ends only when its last user lets go, which is rarely soon.
            Duration::from_millis(100)
        }
    };
    let deadline = Instant::now() + wait;
    while !served.thread.is_finished() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    if served.thread.is_finished() {
        match served.thread.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => log::warn!("powercut: the FUSE session at {} ended with {e}", canonical.display()),
            Err(_) => log::warn!("powercut: the FUSE session at {} panicked", canonical.display()),
        }
    }
}

fn detach(canonical: &Path) {
    let Ok(path) = std::ffi::CString::new(canonical.as_os_str().as_bytes()) else {
        return;
    };
    // SAFETY: `path` is a valid NUL-terminated string that outlives the call.
    if unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) } != 0 {
        log::warn!("powercut: detaching {} failed: {}", canonical.display(), io::Error::last_os_error());
    }
}

/// True if this process can mount FUSE here (root and /dev/fuse present); tests print SKIPPED otherwise.
pub fn available() -> bool {
    // SAFETY: geteuid cannot fail and touches no memory.
    let root = unsafe { libc::geteuid() } == 0;
    let device = std::fs::OpenOptions::new().read(true).write(true).open("/dev/fuse").is_ok();
    let kernel = std::fs::read_to_string("/proc/filesystems")
        .is_ok_and(|list| list.lines().any(|line| line.split_whitespace().last() == Some("fuse")));
    root && device && kernel
}
