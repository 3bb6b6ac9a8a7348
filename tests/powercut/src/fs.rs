//! The FUSE side: turns kernel requests into operations on the shared [`Image`] and replies with an
//! errno whenever the image refuses, so that no request a process can send brings the server down.
//!
//! Every mount generation has its own [`State`]. A power cut marks the old one dead before the old
//! mount goes away, so a process that survived the cut (which callers should not allow) gets EIO,
//! like a disk that lost power, instead of writing into the image of the next boot.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use fuser::{
    BsdFileFlags, CopyFileRangeFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation,
    INodeNo, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty,
    ReplyEntry, ReplyLseek, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};

use crate::image::{Body, DirData, FileData, Image, Ino, Inode};

/// How long the kernel may cache names and attributes. Every change goes through this one kernel
/// mount and a cut is followed by a fresh mount, so the kernel's caches can never go stale; the TTL
/// is kept short anyway so that a stale answer, were one possible, would not outlive a test step.
const TTL: Duration = Duration::from_secs(1);

/// Block size reported by stat and statfs.
const BLOCK: u64 = 4096;

/// What statfs reports: maild refuses to commit when free space runs low, and the image's real
/// limit is the machine's memory, which a test never comes near.
const TOTAL_BYTES: u64 = 128 << 30;
const FREE_BYTES: u64 = 64 << 30;
const TOTAL_INODES: u64 = 1 << 24;

/// Counters that outlive mount generations, read by `Mount::stats`.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) fsyncs: AtomicU64,
    pub(crate) fsyncdirs: AtomicU64,
}

/// Everything one mount generation serves.
#[derive(Debug)]
pub(crate) struct State {
    pub(crate) image: Image,
    /// Set by a power cut: this generation's disk is gone and every request fails with EIO.
    pub(crate) dead: bool,
    /// Directory listings taken at opendir, by file handle.
    listings: HashMap<u64, Vec<(Ino, FileType, OsString)>>,
    next_fh: u64,
}

impl State {
    pub(crate) fn new(image: Image) -> State {
        State { image, dead: false, listings: HashMap::new(), next_fh: 1 }
    }
}

/// The [`Filesystem`] served by fuser's worker threads.
pub(crate) struct PowerCutFs {
    pub(crate) state: Arc<Mutex<State>>,
    pub(crate) counters: Arc<Counters>,
}

/// Locks a state even if a worker panicked while holding it: the image is still consistent enough
/// to answer, and refusing every later request would hang the test instead of failing it.
pub(crate) fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn attr(ino: Ino, inode: &Inode) -> FileAttr {
    let size = inode.size();
    let (nlink, rdev) = match &inode.body {
        // One link tells tools such as find that subdirectories cannot be counted from the link count.
        Body::Dir(_) => (1, 0),
        Body::Special { rdev, .. } => (inode.links, *rdev),
        _ => (inode.links, 0),
    };
    FileAttr {
        ino: INodeNo(ino),
        size,
        blocks: size.div_ceil(512),
        atime: inode.atime,
        mtime: inode.mtime,
        ctime: inode.ctime,
        crtime: inode.ctime,
        kind: inode.kind(),
        perm: inode.perm,
        nlink,
        uid: inode.uid,
        gid: inode.gid,
        rdev,
        blksize: BLOCK as u32,
        flags: 0,
    }
}

fn time(t: TimeOrNow) -> SystemTime {
    match t {
        TimeOrNow::SpecificTime(t) => t,
        TimeOrNow::Now => SystemTime::now(),
    }
}

fn perm(mode: u32, umask: u32) -> u16 {
    (mode & !umask & 0o7777) as u16
}

impl PowerCutFs {
    /// The state of this generation, or EIO once a power cut has killed it.
    fn live(&self) -> Result<MutexGuard<'_, State>, Errno> {
        let st = lock(&self.state);
        if st.dead {
            Err(Errno::EIO)
        } else {
            Ok(st)
        }
    }

    /// Creates a node and hands the kernel its entry, counting the reference that gives it.
    fn make(&self, req: &Request, parent: INodeNo, name: &OsStr, body: Body, perm: u16) -> Result<FileAttr, Errno> {
        let mut st = self.live()?;
        let ino = st.image.create(parent.0, name, body, perm, req.uid(), req.gid())?;
        st.image.add_lookup(ino);
        Ok(attr(ino, st.image.get(ino)?))
    }
}

/// Replies to a request whose outcome is just success or an errno.
fn empty(reply: ReplyEmpty, result: Result<(), Errno>) {
    match result {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(e),
    }
}

fn entry(reply: ReplyEntry, result: Result<FileAttr, Errno>) {
    match result {
        Ok(a) => reply.entry(&TTL, &a, Generation(0)),
        Err(e) => reply.error(e),
    }
}

impl Filesystem for PowerCutFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let result = self.live().and_then(|mut st| {
            let ino = st.image.lookup(parent.0, name)?;
            st.image.add_lookup(ino);
            Ok(attr(ino, st.image.get(ino)?))
        });
        entry(reply, result);
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        if let Ok(mut st) = self.live() {
            st.image.forget(ino.0, nlookup);
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.live().and_then(|st| Ok(attr(ino.0, st.image.get(ino.0)?))) {
            Ok(a) => reply.attr(&TTL, &a),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let result = self.live().and_then(|mut st| {
            if let Some(size) = size {
                st.image.set_size(ino.0, size)?;
            }
            let inode = st.image.get_mut(ino.0)?;
            if let Some(mode) = mode {
                inode.perm = (mode & 0o7777) as u16;
            }
            if let Some(uid) = uid {
                inode.uid = uid;
            }
            if let Some(gid) = gid {
                inode.gid = gid;
            }
            if let Some(t) = atime {
                inode.atime = time(t);
            }
            if let Some(t) = mtime {
                inode.mtime = time(t);
            }
            inode.ctime = ctime.unwrap_or_else(SystemTime::now);
            Ok(attr(ino.0, inode))
        });
        match result {
            Ok(a) => reply.attr(&TTL, &a),
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let st = match self.live() {
            Ok(st) => st,
            Err(e) => return reply.error(e),
        };
        match st.image.get(ino.0).map(|i| &i.body) {
            Ok(Body::Symlink(target)) => reply.data(target),
            Ok(_) => reply.error(Errno::EINVAL),
            Err(e) => reply.error(e),
        }
    }

    fn mknod(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, rdev: u32, reply: ReplyEntry) {
        let body = match mode & libc::S_IFMT {
            libc::S_IFREG => Body::File(FileData::default()),
            libc::S_IFSOCK => Body::Special { kind: FileType::Socket, rdev: 0 },
            libc::S_IFIFO => Body::Special { kind: FileType::NamedPipe, rdev: 0 },
            libc::S_IFCHR => Body::Special { kind: FileType::CharDevice, rdev },
            libc::S_IFBLK => Body::Special { kind: FileType::BlockDevice, rdev },
            _ => return reply.error(Errno::EINVAL),
        };
        entry(reply, self.make(req, parent, name, body, perm(mode, umask)));
    }

    fn mkdir(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, reply: ReplyEntry) {
        entry(reply, self.make(req, parent, name, Body::Dir(DirData::default()), perm(mode, umask)));
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        empty(reply, self.live().and_then(|mut st| st.image.remove(parent.0, name, false)));
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        empty(reply, self.live().and_then(|mut st| st.image.remove(parent.0, name, true)));
    }

    fn symlink(&self, req: &Request, parent: INodeNo, link_name: &OsStr, target: &Path, reply: ReplyEntry) {
        let body = Body::Symlink(target.as_os_str().as_bytes().to_vec());
        entry(reply, self.make(req, parent, link_name, body, 0o777));
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let result = self.live().and_then(|mut st| st.image.rename(parent.0, name, newparent.0, newname, flags.bits()));
        empty(reply, result);
    }

    /// Hard links are refused: nothing that runs on this file system makes them, and refusing keeps a
    /// file's name in exactly one directory.
    fn link(&self, _req: &Request, _ino: INodeNo, _newparent: INodeNo, _newname: &OsStr, reply: ReplyEntry) {
        reply.error(Errno::EPERM);
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.live().and_then(|st| Ok(st.image.get(ino.0)?.kind())) {
            Ok(FileType::Directory) => reply.error(Errno::EISDIR),
            Ok(_) => reply.opened(FileHandle(0), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let st = match self.live() {
            Ok(st) => st,
            Err(e) => return reply.error(e),
        };
        match st.image.read(ino.0, offset, size) {
            Ok(data) => reply.data(data),
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let Ok(len) = u32::try_from(data.len()) else {
            return reply.error(Errno::EINVAL);
        };
        match self.live().and_then(|mut st| st.image.write(ino.0, offset, data)) {
            Ok(()) => reply.written(len),
            Err(e) => reply.error(e),
        }
    }

    /// Close reaches the file system as FLUSH; it makes nothing durable, as on a real disk.
    fn flush(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _lock_owner: LockOwner, reply: ReplyEmpty) {
        empty(reply, self.live().map(drop));
    }

    fn fsync(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        self.counters.fsyncs.fetch_add(1, Ordering::Relaxed);
        empty(reply, self.live().and_then(|mut st| st.image.fsync(ino.0)));
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let result = self.live().and_then(|mut st| {
            let listing = st.image.list(ino.0)?;
            let fh = st.next_fh;
            st.next_fh += 1;
            st.listings.insert(fh, listing);
            Ok(fh)
        });
        match result {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(&self, _req: &Request, ino: INodeNo, fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        let mut st = match self.live() {
            Ok(st) => st,
            Err(e) => return reply.error(e),
        };
        if !st.listings.contains_key(&fh.0) {
            // A handle this generation never gave out: list afresh rather than fail the reader.
            match st.image.list(ino.0) {
                Ok(listing) => {
                    st.listings.insert(fh.0, listing);
                }
                Err(e) => return reply.error(e),
            }
        }
        if let Some(listing) = st.listings.get(&fh.0) {
            let start = usize::try_from(offset).unwrap_or(usize::MAX);
            for (i, (child, kind, name)) in listing.iter().enumerate().skip(start) {
                if reply.add(INodeNo(*child), i as u64 + 1, *kind, name) {
                    break;
                }
            }
        }
        reply.ok();
    }

    fn releasedir(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, _flags: OpenFlags, reply: ReplyEmpty) {
        lock(&self.state).listings.remove(&fh.0);
        reply.ok();
    }

    fn fsyncdir(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        self.counters.fsyncdirs.fetch_add(1, Ordering::Relaxed);
        empty(reply, self.live().and_then(|mut st| st.image.fsyncdir(ino.0)));
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        match self.live() {
            Ok(st) => {
                let ffree = TOTAL_INODES.saturating_sub(st.image.inode_count());
                let (blocks, free) = (TOTAL_BYTES / BLOCK, FREE_BYTES / BLOCK);
                reply.statfs(blocks, free, free, TOTAL_INODES, ffree, BLOCK as u32, 255, BLOCK as u32);
            }
            Err(e) => reply.error(e),
        }
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        if mode & libc::S_IFMT != libc::S_IFREG {
            return reply.error(Errno::EINVAL);
        }
        match self.make(req, parent, name, Body::File(FileData::default()), perm(mode, umask)) {
            Ok(a) => reply.created(&TTL, &a, Generation(0), FileHandle(0), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    /// Preallocation is refused rather than modelled: nothing here needs it, and EOPNOTSUPP (unlike
    /// ENOSYS) leaves the kernel free to ask again.
    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        _length: u64,
        _mode: i32,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::EOPNOTSUPP);
    }

    // The operations below are left to the kernel. Answering ENOSYS makes it stop asking for the rest
    // of the mount and fall back on its own code (no extended attributes, generic SEEK_DATA and
    // SEEK_HOLE, copying through the page cache); fuser's defaults say the same but log a warning.

    fn getxattr(&self, _req: &Request, _ino: INodeNo, _name: &OsStr, _size: u32, reply: ReplyXattr) {
        reply.error(Errno::ENOSYS);
    }

    fn listxattr(&self, _req: &Request, _ino: INodeNo, _size: u32, reply: ReplyXattr) {
        reply.error(Errno::ENOSYS);
    }

    fn setxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _value: &[u8],
        _flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::ENOSYS);
    }

    fn removexattr(&self, _req: &Request, _ino: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::ENOSYS);
    }

    fn lseek(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _offset: i64, _whence: i32, reply: ReplyLseek) {
        reply.error(Errno::ENOSYS);
    }

    fn copy_file_range(
        &self,
        _req: &Request,
        _ino_in: INodeNo,
        _fh_in: FileHandle,
        _offset_in: u64,
        _ino_out: INodeNo,
        _fh_out: FileHandle,
        _offset_out: u64,
        _len: u64,
        _flags: CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        reply.error(Errno::ENOSYS);
    }
}
