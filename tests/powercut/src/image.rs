//! The in-memory image of the file system, with the two views a power cut tells apart: what readers see
//! now and what would survive if the power went out this instant. It knows nothing about FUSE so that
//! its rules (what an fsync makes durable, what a cut throws away) can be tested without a mount.
//!
//! A regular file keeps its current bytes, its durable bytes and the byte ranges written since its
//! last fsync, so that an fsync copies only what changed: sled fsyncs a log of hundreds of megabytes
//! many times a second. A directory keeps its current entries, its durable entries and the names
//! changed since its last fsync, for the same reason. Attributes other than the size are treated as
//! durable the moment they change, since nothing the tests look at depends on losing a chmod.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::ffi::{OsStr, OsString};
use std::time::SystemTime;

use fuser::{Errno, FileType};

use crate::CutReport;

/// An inode number as the kernel sees it.
pub(crate) type Ino = u64;

/// The root directory's inode number, fixed by the FUSE protocol.
pub(crate) const ROOT: Ino = 1;

/// The largest file the image accepts: every file lives twice in memory, and an absurd offset must
/// come back as EFBIG rather than abort the test process on a failed allocation.
pub(crate) const MAX_FILE_SIZE: u64 = 8 << 30;

/// The longest name Linux file systems accept, so that callers see the usual ENAMETOOLONG.
const MAX_NAME_LEN: usize = 255;

/// Past this many separate dirty ranges a file's list is merged, and past half of it again it is
/// replaced by one covering range, so that random small writes cannot make an fsync slow.
const MAX_DIRTY_RANGES: usize = 1024;

/// The contents of a regular file in both views.
#[derive(Debug, Default)]
pub(crate) struct FileData {
    /// What a reader sees now.
    pub(crate) current: Vec<u8>,
    /// What survives a power cut.
    pub(crate) durable: Vec<u8>,
    /// Half-open byte ranges where `current` may differ from `durable`, in the order they were made.
    /// Every position that can differ is covered, including bytes that exist in only one of the two.
    dirty: Vec<(usize, usize)>,
}

/// The entries of a directory in both views.
#[derive(Debug, Default)]
pub(crate) struct DirData {
    /// The names a lookup finds now.
    pub(crate) entries: BTreeMap<OsString, Ino>,
    /// The names that survive a power cut.
    durable: BTreeMap<OsString, Ino>,
    /// Names whose entry changed since the directory's last fsync.
    dirty: BTreeSet<OsString>,
    /// The directory this one currently sits in, which `..` names.
    pub(crate) parent: Ino,
}

/// What an inode holds, by kind.
#[derive(Debug)]
pub(crate) enum Body {
    File(FileData),
    Dir(DirData),
    /// A symbolic link is written whole when it is made, so its target has only one view.
    Symlink(Vec<u8>),
    /// A socket, fifo or device node: only its name and attributes matter.
    Special {
        kind: FileType,
        rdev: u32,
    },
}

/// One inode with its attributes and the reference counts that decide when it can be forgotten.
#[derive(Debug)]
pub(crate) struct Inode {
    pub(crate) body: Body,
    pub(crate) perm: u16,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) atime: SystemTime,
    pub(crate) mtime: SystemTime,
    pub(crate) ctime: SystemTime,
    /// Current directory entries naming this inode.
    pub(crate) links: u32,
    /// Durable directory entries naming this inode: while any exist its durable data must be kept,
    /// even after the last current name is gone, because a cut brings the name back.
    durable_links: u32,
    /// References the kernel holds (lookups not yet forgotten); the kernel may still ask about it.
    lookups: u64,
}

impl Inode {
    fn new(body: Body, perm: u16, uid: u32, gid: u32) -> Inode {
        let now = SystemTime::now();
        Inode { body, perm, uid, gid, atime: now, mtime: now, ctime: now, links: 0, durable_links: 0, lookups: 0 }
    }

    /// The kind the kernel is told about.
    pub(crate) fn kind(&self) -> FileType {
        match &self.body {
            Body::File(_) => FileType::RegularFile,
            Body::Dir(_) => FileType::Directory,
            Body::Symlink(_) => FileType::Symlink,
            Body::Special { kind, .. } => *kind,
        }
    }

    /// The size the kernel is told about: the current length, since size is part of the content.
    pub(crate) fn size(&self) -> u64 {
        match &self.body {
            Body::File(f) => f.current.len() as u64,
            Body::Symlink(t) => t.len() as u64,
            Body::Dir(_) | Body::Special { .. } => 0,
        }
    }

    fn is_dir(&self) -> bool {
        matches!(self.body, Body::Dir(_))
    }

    fn touch(&mut self) {
        let now = SystemTime::now();
        self.mtime = now;
        self.ctime = now;
    }
}

impl FileData {
    /// Records that `[start, end)` may now differ from the durable bytes. Sequential writes, the
    /// common case for a log, extend the last range instead of adding one.
    fn mark_dirty(&mut self, start: usize, end: usize) {
        if start >= end {
            return;
        }
        if let Some(last) = self.dirty.last_mut() {
            if start <= last.1 && end >= last.0 {
                last.0 = last.0.min(start);
                last.1 = last.1.max(end);
                return;
            }
        }
        self.dirty.push((start, end));
        if self.dirty.len() > MAX_DIRTY_RANGES {
            self.coalesce();
            if self.dirty.len() > MAX_DIRTY_RANGES / 2 {
                let lo = self.dirty.iter().map(|r| r.0).min().unwrap_or(0);
                let hi = self.dirty.iter().map(|r| r.1).max().unwrap_or(0);
                self.dirty = vec![(lo, hi)];
            }
        }
    }

    /// Sorts and merges the dirty ranges so that each byte is counted and copied once.
    fn coalesce(&mut self) {
        self.dirty.sort_unstable();
        let mut merged: Vec<(usize, usize)> = Vec::with_capacity(self.dirty.len());
        for &(s, e) in &self.dirty {
            match merged.last_mut() {
                Some(last) if s <= last.1 => last.1 = last.1.max(e),
                _ => merged.push((s, e)),
            }
        }
        self.dirty = merged;
    }

    /// Changes the current length, marking the bytes between the old and the new end as dirty so the
    /// durable view learns about both a shrink and a growth at the next fsync.
    fn set_len(&mut self, len: usize) -> Result<(), Errno> {
        let old = self.current.len();
        if len > old {
            self.current.try_reserve(len - old).map_err(|_| Errno::ENOSPC)?;
        }
        self.current.resize(len, 0);
        self.mark_dirty(old.min(len), old.max(len));
        Ok(())
    }

    fn write(&mut self, offset: usize, data: &[u8]) -> Result<(), Errno> {
        // An empty write changes nothing, not even the size, wherever it points.
        if data.is_empty() {
            return Ok(());
        }
        let end = offset.checked_add(data.len()).ok_or(Errno::EFBIG)?;
        if end as u64 > MAX_FILE_SIZE {
            return Err(Errno::EFBIG);
        }
        if end > self.current.len() {
            self.set_len(end)?;
        }
        self.current[offset..end].copy_from_slice(data);
        self.mark_dirty(offset, end);
        Ok(())
    }

    /// Makes the current bytes durable, copying only the dirty ranges.
    fn fsync(&mut self) -> Result<(), Errno> {
        let len = self.current.len();
        if len > self.durable.len() {
            self.durable.try_reserve(len - self.durable.len()).map_err(|_| Errno::ENOSPC)?;
        }
        self.durable.resize(len, 0);
        for (s, e) in std::mem::take(&mut self.dirty) {
            let e = e.min(len);
            if s < e {
                self.durable[s..e].copy_from_slice(&self.current[s..e]);
            }
        }
        Ok(())
    }

    /// How many bytes a cut would lose: dirty positions where the two views differ, counting bytes
    /// present in only one view.
    fn dropped_bytes(&mut self) -> u64 {
        self.coalesce();
        let (cur, dur) = (&self.current, &self.durable);
        let both = cur.len().min(dur.len());
        let either = cur.len().max(dur.len());
        let mut dropped = 0u64;
        for &(s, e) in &self.dirty {
            let (s, e) = (s.min(either), e.min(either));
            let (cs, ce) = (s.min(both), e.min(both));
            dropped += cur[cs..ce].iter().zip(&dur[cs..ce]).filter(|(a, b)| a != b).count() as u64;
            dropped += (e - s - (ce - cs)) as u64;
        }
        dropped
    }
}

/// The whole file system: every inode by number.
#[derive(Debug)]
pub(crate) struct Image {
    inodes: HashMap<Ino, Inode>,
    next_ino: Ino,
}

impl Image {
    /// An empty file system whose root belongs to `uid`/`gid`. The root's own entry has nowhere to
    /// be lost from, so it counts as durably linked from the start.
    pub(crate) fn new(uid: u32, gid: u32) -> Image {
        let mut root = Inode::new(Body::Dir(DirData { parent: ROOT, ..DirData::default() }), 0o755, uid, gid);
        root.links = 1;
        root.durable_links = 1;
        Image { inodes: HashMap::from([(ROOT, root)]), next_ino: ROOT + 1 }
    }

    pub(crate) fn get(&self, ino: Ino) -> Result<&Inode, Errno> {
        self.inodes.get(&ino).ok_or(Errno::ENOENT)
    }

    pub(crate) fn get_mut(&mut self, ino: Ino) -> Result<&mut Inode, Errno> {
        self.inodes.get_mut(&ino).ok_or(Errno::ENOENT)
    }

    /// The number of inodes alive, for statfs.
    pub(crate) fn inode_count(&self) -> u64 {
        self.inodes.len() as u64
    }

    fn dir(&self, ino: Ino) -> Result<&DirData, Errno> {
        match &self.get(ino)?.body {
            Body::Dir(d) => Ok(d),
            _ => Err(Errno::ENOTDIR),
        }
    }

    fn dir_mut(&mut self, ino: Ino) -> Result<&mut DirData, Errno> {
        match &mut self.get_mut(ino)?.body {
            Body::Dir(d) => Ok(d),
            _ => Err(Errno::ENOTDIR),
        }
    }

    fn file_mut(&mut self, ino: Ino) -> Result<&mut FileData, Errno> {
        match &mut self.get_mut(ino)?.body {
            Body::File(f) => Ok(f),
            Body::Dir(_) => Err(Errno::EISDIR),
            _ => Err(Errno::EINVAL),
        }
    }

    pub(crate) fn lookup(&self, parent: Ino, name: &OsStr) -> Result<Ino, Errno> {
        self.dir(parent)?.entries.get(name).copied().ok_or(Errno::ENOENT)
    }

    /// Counts one more kernel reference, made by every reply that hands the kernel an entry.
    pub(crate) fn add_lookup(&mut self, ino: Ino) {
        if let Some(inode) = self.inodes.get_mut(&ino) {
            inode.lookups += 1;
        }
    }

    /// Drops kernel references; an inode nobody can reach any more is then freed.
    pub(crate) fn forget(&mut self, ino: Ino, nlookup: u64) {
        if let Some(inode) = self.inodes.get_mut(&ino) {
            inode.lookups = inode.lookups.saturating_sub(nlookup);
            self.maybe_free(ino);
        }
    }

    /// Frees inodes that no current name, no durable name and no kernel reference can reach. A freed
    /// directory's durable entries stop counting, which can free more, hence the work list.
    fn maybe_free(&mut self, ino: Ino) {
        let mut work = vec![ino];
        while let Some(ino) = work.pop() {
            let unreachable = self
                .inodes
                .get(&ino)
                .is_some_and(|i| ino != ROOT && i.links == 0 && i.durable_links == 0 && i.lookups == 0);
            if !unreachable {
                continue;
            }
            if let Some(Inode { body: Body::Dir(d), .. }) = self.inodes.remove(&ino) {
                for child in d.durable.values() {
                    if let Some(c) = self.inodes.get_mut(child) {
                        c.durable_links = c.durable_links.saturating_sub(1);
                        work.push(*child);
                    }
                }
                for child in d.entries.values() {
                    if let Some(c) = self.inodes.get_mut(child) {
                        c.links = c.links.saturating_sub(1);
                        work.push(*child);
                    }
                }
            }
        }
    }

    /// Creates a new inode under `parent`. Its entry is pending in the parent until the parent is
    /// fsync'd; a new directory's own (empty) entry list starts out durable.
    pub(crate) fn create(
        &mut self,
        parent: Ino,
        name: &OsStr,
        body: Body,
        perm: u16,
        uid: u32,
        gid: u32,
    ) -> Result<Ino, Errno> {
        if name.len() > MAX_NAME_LEN {
            return Err(Errno::ENAMETOOLONG);
        }
        if self.dir(parent)?.entries.contains_key(name) {
            return Err(Errno::EEXIST);
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        let mut inode = Inode::new(body, perm, uid, gid);
        if let Body::Dir(d) = &mut inode.body {
            d.parent = parent;
        }
        inode.links = 1;
        self.inodes.insert(ino, inode);
        let p = self.get_mut(parent)?;
        p.touch();
        if let Body::Dir(d) = &mut p.body {
            d.entries.insert(name.to_owned(), ino);
            d.dirty.insert(name.to_owned());
        }
        Ok(ino)
    }

    /// Removes the name `name` from `parent`; `dir` says whether the caller was rmdir.
    pub(crate) fn remove(&mut self, parent: Ino, name: &OsStr, dir: bool) -> Result<(), Errno> {
        let ino = self.lookup(parent, name)?;
        let target = self.get(ino)?;
        match (&target.body, dir) {
            (Body::Dir(_), false) => return Err(Errno::EISDIR),
            (Body::Dir(d), true) if !d.entries.is_empty() => return Err(Errno::ENOTEMPTY),
            (Body::Dir(_), true) => {}
            (_, true) => return Err(Errno::ENOTDIR),
            (_, false) => {}
        }
        let p = self.get_mut(parent)?;
        p.touch();
        if let Body::Dir(d) = &mut p.body {
            d.entries.remove(name);
            d.dirty.insert(name.to_owned());
        }
        let target = self.get_mut(ino)?;
        target.links = target.links.saturating_sub(1);
        target.ctime = SystemTime::now();
        self.maybe_free(ino);
        Ok(())
    }

    /// Renames an entry, with the renameat2 flags RENAME_NOREPLACE and RENAME_EXCHANGE. The removal
    /// is pending in the old directory and the addition in the new one, each until its own fsync.
    pub(crate) fn rename(
        &mut self,
        parent: Ino,
        name: &OsStr,
        newparent: Ino,
        newname: &OsStr,
        flags: u32,
    ) -> Result<(), Errno> {
        if newname.len() > MAX_NAME_LEN {
            return Err(Errno::ENAMETOOLONG);
        }
        let known = libc::RENAME_NOREPLACE | libc::RENAME_EXCHANGE;
        if flags & !known != 0 {
            return Err(Errno::EINVAL);
        }
        let src = self.lookup(parent, name)?;
        let dst = self.dir(newparent)?.entries.get(newname).copied();
        if flags & libc::RENAME_EXCHANGE != 0 {
            let dst = dst.ok_or(Errno::ENOENT)?;
            self.set_entry(parent, name, Some(dst))?;
            self.set_entry(newparent, newname, Some(src))?;
            self.set_dir_parent(src, newparent);
            self.set_dir_parent(dst, parent);
            return Ok(());
        }
        if let Some(dst) = dst {
            if flags & libc::RENAME_NOREPLACE != 0 {
                return Err(Errno::EEXIST);
            }
            if dst == src {
                return Ok(());
            }
            let (s, d) = (self.get(src)?, self.get(dst)?);
            match (&s.body, &d.body) {
                (Body::Dir(_), Body::Dir(dd)) if !dd.entries.is_empty() => return Err(Errno::ENOTEMPTY),
                (Body::Dir(_), b) if !matches!(b, Body::Dir(_)) => return Err(Errno::ENOTDIR),
                (b, Body::Dir(_)) if !matches!(b, Body::Dir(_)) => return Err(Errno::EISDIR),
                _ => {}
            }
        }
        self.set_entry(parent, name, None)?;
        self.set_entry(newparent, newname, Some(src))?;
        self.set_dir_parent(src, newparent);
        if let Some(dst) = dst {
            let d = self.get_mut(dst)?;
            d.links = d.links.saturating_sub(1);
            d.ctime = SystemTime::now();
            self.maybe_free(dst);
        }
        if let Ok(s) = self.get_mut(src) {
            s.ctime = SystemTime::now();
        }
        Ok(())
    }

    fn set_entry(&mut self, dir: Ino, name: &OsStr, ino: Option<Ino>) -> Result<(), Errno> {
        let p = self.get_mut(dir)?;
        p.touch();
        let Body::Dir(d) = &mut p.body else {
            return Err(Errno::ENOTDIR);
        };
        match ino {
            Some(ino) => d.entries.insert(name.to_owned(), ino),
            None => d.entries.remove(name),
        };
        d.dirty.insert(name.to_owned());
        Ok(())
    }

    fn set_dir_parent(&mut self, ino: Ino, parent: Ino) {
        if let Some(Inode { body: Body::Dir(d), .. }) = self.inodes.get_mut(&ino) {
            d.parent = parent;
        }
    }

    pub(crate) fn read(&self, ino: Ino, offset: u64, size: u32) -> Result<&[u8], Errno> {
        match &self.get(ino)?.body {
            Body::File(f) => {
                let len = f.current.len();
                let start = usize::try_from(offset).unwrap_or(usize::MAX).min(len);
                let end = start.saturating_add(size as usize).min(len);
                Ok(&f.current[start..end])
            }
            Body::Dir(_) => Err(Errno::EISDIR),
            _ => Err(Errno::EINVAL),
        }
    }

    pub(crate) fn write(&mut self, ino: Ino, offset: u64, data: &[u8]) -> Result<(), Errno> {
        let offset = usize::try_from(offset).map_err(|_| Errno::EFBIG)?;
        self.file_mut(ino)?.write(offset, data)?;
        self.get_mut(ino)?.touch();
        Ok(())
    }

    pub(crate) fn set_size(&mut self, ino: Ino, size: u64) -> Result<(), Errno> {
        if size > MAX_FILE_SIZE {
            return Err(Errno::EFBIG);
        }
        let size = usize::try_from(size).map_err(|_| Errno::EFBIG)?;
        self.file_mut(ino)?.set_len(size)?;
        self.get_mut(ino)?.touch();
        Ok(())
    }

    /// The FUSE FSYNC op: a file's bytes and size become durable. Its name does not: that is the
    /// directory's business.
    pub(crate) fn fsync(&mut self, ino: Ino) -> Result<(), Errno> {
        match &mut self.get_mut(ino)?.body {
            Body::File(f) => f.fsync(),
            _ => Ok(()),
        }
    }

    /// The FUSE FSYNCDIR op: a directory's entries become durable, and the durable reference counts
    /// of the inodes gained or lost follow.
    pub(crate) fn fsyncdir(&mut self, ino: Ino) -> Result<(), Errno> {
        let d = self.dir_mut(ino)?;
        let mut gained = Vec::new();
        let mut lost = Vec::new();
        for name in std::mem::take(&mut d.dirty) {
            let now = d.entries.get(&name).copied();
            let before = match now {
                Some(n) => d.durable.insert(name, n),
                None => d.durable.remove(&name),
            };
            if before != now {
                gained.extend(now);
                lost.extend(before);
            }
        }
        for ino in gained {
            if let Some(i) = self.inodes.get_mut(&ino) {
                i.durable_links += 1;
            }
        }
        for ino in lost {
            if let Some(i) = self.inodes.get_mut(&ino) {
                i.durable_links = i.durable_links.saturating_sub(1);
            }
            self.maybe_free(ino);
        }
        Ok(())
    }

    /// The entries a directory listing shows, `.` and `..` first, taken at opendir so that changes
    /// made while a listing is read neither skip nor repeat names.
    pub(crate) fn list(&self, ino: Ino) -> Result<Vec<(Ino, FileType, OsString)>, Errno> {
        let d = self.dir(ino)?;
        let mut out = Vec::with_capacity(d.entries.len() + 2);
        out.push((ino, FileType::Directory, OsString::from(".")));
        out.push((d.parent, FileType::Directory, OsString::from("..")));
        for (name, child) in &d.entries {
            if let Some(c) = self.inodes.get(child) {
                out.push((*child, c.kind(), name.clone()));
            }
        }
        Ok(out)
    }

    /// The power cut: returns the image that survives (every directory as of its last fsync, every file
    /// as of its last fsync, reachable from the root) and what was lost. `self` is left empty.
    ///
    /// Because renames are pending separately in the two directories, a directory can end up named by
    /// two durable entries; the kernel cannot handle a directory with two parents, so the first one
    /// found wins and the other entry counts as dropped. A regular file named twice simply has two links.
    pub(crate) fn cut(&mut self) -> (Image, CutReport) {
        let mut report = CutReport::default();
        for inode in self.inodes.values_mut() {
            match &mut inode.body {
                Body::File(f) => {
                    let dropped = f.dropped_bytes();
                    report.dropped_bytes += dropped;
                    report.files_reverted += u64::from(dropped > 0);
                }
                Body::Dir(d) => {
                    let changed = d.dirty.iter().filter(|n| d.entries.get(*n) != d.durable.get(*n)).count();
                    report.dropped_entries += changed as u64;
                }
                _ => {}
            }
        }

        let mut old = std::mem::take(&mut self.inodes);
        let mut new: HashMap<Ino, Inode> = HashMap::new();
        let mut queue = VecDeque::new();
        if let Some(root) = old.remove(&ROOT) {
            new.insert(ROOT, revert(root, ROOT));
            queue.push_back(ROOT);
        }
        while let Some(dir) = queue.pop_front() {
            let names: Vec<(OsString, Ino)> = match new.get(&dir).map(|i| &i.body) {
                Some(Body::Dir(d)) => d.entries.iter().map(|(n, i)| (n.clone(), *i)).collect(),
                _ => continue,
            };
            let mut drop_names = Vec::new();
            for (name, child) in names {
                if let Some(c) = new.get_mut(&child) {
                    if c.is_dir() {
                        drop_names.push(name);
                    } else {
                        c.links += 1;
                    }
                } else if let Some(c) = old.remove(&child) {
                    let c = revert(c, dir);
                    if c.is_dir() {
                        queue.push_back(child);
                    }
                    new.insert(child, c);
                } else {
                    drop_names.push(name);
                }
            }
            if let Some(Inode { body: Body::Dir(d), .. }) = new.get_mut(&dir) {
                for name in drop_names {
                    d.entries.remove(&name);
                    d.durable.remove(&name);
                    report.dropped_entries += 1;
                }
            }
        }
        for inode in new.values_mut() {
            inode.durable_links = inode.links;
        }
        (Image { inodes: new, next_ino: self.next_ino }, report)
    }
}

/// An inode as it comes back after a cut: its durable view becomes its current one, the kernel holds
/// no reference to it yet, and further links are counted by the caller as it finds more names.
fn revert(mut inode: Inode, parent: Ino) -> Inode {
    match &mut inode.body {
        Body::File(f) => {
            // The old current buffer's pages are already mapped; refilling it costs a fraction of a fresh
            // clone, which matters for a log of hundreds of megabytes.
            let mut current = std::mem::take(&mut f.current);
            current.clear();
            current.extend_from_slice(&f.durable);
            f.current = current;
            f.dirty.clear();
        }
        Body::Dir(d) => {
            d.entries = d.durable.clone();
            d.dirty.clear();
            d.parent = parent;
        }
        Body::Symlink(_) | Body::Special { .. } => {}
    }
    // The name through which the cut reached this inode is its first link.
    inode.links = 1;
    inode.lookups = 0;
    inode
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file() -> Body {
        Body::File(FileData::default())
    }

    fn dir() -> Body {
        Body::Dir(DirData::default())
    }

    fn content(img: &Image, ino: Ino) -> Vec<u8> {
        img.read(ino, 0, u32::MAX).map(<[u8]>::to_vec).unwrap_or_default()
    }

    #[test]
    fn fsync_copies_writes_and_shrinks() {
        let mut img = Image::new(0, 0);
        let f = img.create(ROOT, OsStr::new("f"), file(), 0o600, 0, 0).unwrap();
        img.fsyncdir(ROOT).unwrap();
        img.write(f, 0, b"abcdef").unwrap();
        img.fsync(f).unwrap();
        img.set_size(f, 2).unwrap();
        img.write(f, 4, b"XY").unwrap();
        img.fsync(f).unwrap();
        img.write(f, 0, b"zz").unwrap();
        let (img, report) = img.cut();
        assert_eq!(content(&img, f), b"ab\0\0XY");
        assert_eq!(report.dropped_bytes, 2);
        assert_eq!(report.files_reverted, 1);
    }

    #[test]
    fn many_scattered_writes_collapse_into_one_range() {
        let mut f = FileData::default();
        for i in 0..5000 {
            f.write(i * 10, b"x").unwrap();
        }
        assert!(f.dirty.len() <= MAX_DIRTY_RANGES);
        f.fsync().unwrap();
        assert_eq!(f.durable, f.current);
    }

    #[test]
    fn rename_is_pending_in_both_directories() {
        let mut img = Image::new(0, 0);
        let a = img.create(ROOT, OsStr::new("a"), dir(), 0o700, 0, 0).unwrap();
        let b = img.create(ROOT, OsStr::new("b"), dir(), 0o700, 0, 0).unwrap();
        let f = img.create(a, OsStr::new("f"), file(), 0o600, 0, 0).unwrap();
        img.fsyncdir(ROOT).unwrap();
        img.fsyncdir(a).unwrap();
        img.rename(a, OsStr::new("f"), b, OsStr::new("g"), 0).unwrap();
        img.fsyncdir(b).unwrap();
        // Only the new directory was synced, so the file is now durably named twice.
        let (img, report) = img.cut();
        assert_eq!(img.lookup(a, OsStr::new("f")), Ok(f));
        assert_eq!(img.lookup(b, OsStr::new("g")), Ok(f));
        assert_eq!(img.get(f).unwrap().links, 2);
        assert_eq!(report.dropped_entries, 1);
    }

    #[test]
    fn a_directory_named_twice_keeps_one_name() {
        let mut img = Image::new(0, 0);
        let a = img.create(ROOT, OsStr::new("a"), dir(), 0o700, 0, 0).unwrap();
        let s = img.create(a, OsStr::new("s"), dir(), 0o700, 0, 0).unwrap();
        img.fsyncdir(ROOT).unwrap();
        img.fsyncdir(a).unwrap();
        img.rename(a, OsStr::new("s"), ROOT, OsStr::new("s"), 0).unwrap();
        img.fsyncdir(ROOT).unwrap();
        let (img, _) = img.cut();
        let named = [img.lookup(ROOT, OsStr::new("s")), img.lookup(a, OsStr::new("s"))];
        assert_eq!(named.iter().filter(|r| **r == Ok(s)).count(), 1);
    }

    #[test]
    fn unlinked_inodes_are_freed_once_nothing_reaches_them() {
        let mut img = Image::new(0, 0);
        let f = img.create(ROOT, OsStr::new("f"), file(), 0o600, 0, 0).unwrap();
        img.add_lookup(f);
        img.fsyncdir(ROOT).unwrap();
        img.remove(ROOT, OsStr::new("f"), false).unwrap();
        img.forget(f, 1);
        // The durable entry still names it, so a cut could bring it back.
        assert!(img.get(f).is_ok());
        img.fsyncdir(ROOT).unwrap();
        assert!(img.get(f).is_err());
    }
}
