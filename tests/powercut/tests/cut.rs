//! Checks the power-cut file system against the promise maild's crash tests rely on: after a cut,
//! exactly what was fsync'd (file data by the file's fsync, names by their directory's fsync) is there,
//! and nothing else. Each test mounts its own file system and skips when this process cannot mount FUSE.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileExt, FileTypeExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use powercut::{available, Mount};

/// A mount on a fresh directory that is removed again when the test is done.
struct Fixture {
    mount: Option<Mount>,
    dir: PathBuf,
}

impl Fixture {
    fn mount(&mut self) -> &mut Mount {
        self.mount.as_mut().expect("mounted until drop")
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        drop(self.mount.take());
        let _ = fs::remove_dir(&self.dir);
    }
}

/// Mounts a power-cut file system for one test, or says why the test is skipped.
fn setup(test: &str) -> Option<Fixture> {
    if !available() {
        println!("SKIPPED: needs root and /dev/fuse");
        return None;
    }
    let dir = std::env::temp_dir().join(format!("powercut-{}-{test}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).expect("creating the mount point");
    let mount = Mount::new(&dir).expect("mounting the power-cut file system");
    assert_eq!(mount.path(), dir);
    Some(Fixture { mount: Some(mount), dir })
}

fn sync_dir(path: &Path) {
    File::open(path).and_then(|d| d.sync_all()).expect("fsync of a directory");
}

fn create(path: &Path, data: &[u8]) -> File {
    let mut f = OpenOptions::new().read(true).write(true).create_new(true).open(path).expect("creating a file");
    f.write_all(data).expect("writing");
    f
}

fn read(path: &Path) -> Option<Vec<u8>> {
    match fs::read(path) {
        Ok(data) => Some(data),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => panic!("reading {}: {e}", path.display()),
    }
}

#[test]
fn a_mount_can_move_between_threads() {
    // Test harnesses keep the mount in fixtures shared across threads; this needs no FUSE to check.
    fn send_and_sync<T: Send + Sync>() {}
    send_and_sync::<Mount>();
}

#[test]
fn unsynced_appends_are_lost() {
    let Some(mut fx) = setup("appends") else { return };
    let p = fx.path("log");
    let mut f = create(&p, b"synced part;");
    f.sync_all().unwrap();
    sync_dir(&fx.dir);
    f.write_all(b" appended later").unwrap();
    drop(f);
    assert_eq!(read(&p).unwrap(), b"synced part; appended later");
    let report = fx.mount().power_cut().unwrap();
    assert_eq!(read(&p).unwrap(), b"synced part;");
    assert_eq!(report.dropped_bytes, 15);
    assert_eq!(report.files_reverted, 1);
    assert_eq!(report.dropped_entries, 0);
}

#[test]
fn synced_data_survives() {
    let Some(mut fx) = setup("synced") else { return };
    let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let a = fx.path("a");
    create(&a, &data).sync_all().unwrap();
    // fdatasync reaches the file system as the same FSYNC request and must count the same.
    let b = fx.path("b");
    create(&b, b"by fdatasync").sync_data().unwrap();
    sync_dir(&fx.dir);
    let report = fx.mount().power_cut().unwrap();
    assert_eq!(read(&a).unwrap(), data);
    assert_eq!(read(&b).unwrap(), b"by fdatasync");
    assert_eq!(report, powercut::CutReport::default());
    // What survives one cut survives the next.
    fx.mount().power_cut().unwrap();
    assert_eq!(read(&a).unwrap(), data);
}

#[test]
fn rename_needs_a_directory_fsync() {
    let Some(mut fx) = setup("rename") else { return };
    let (tmp, dst) = (fx.path("a.tmp"), fx.path("a"));
    create(&tmp, b"payload").sync_all().unwrap();
    sync_dir(&fx.dir);
    fs::rename(&tmp, &dst).unwrap();
    let report = fx.mount().power_cut().unwrap();
    assert_eq!(read(&tmp).unwrap(), b"payload");
    assert_eq!(read(&dst), None);
    assert_eq!(report.dropped_entries, 2, "both halves of the rename are lost");

    fs::rename(&tmp, &dst).unwrap();
    sync_dir(&fx.dir);
    fx.mount().power_cut().unwrap();
    assert_eq!(read(&tmp), None);
    assert_eq!(read(&dst).unwrap(), b"payload");
}

#[test]
fn a_name_needs_its_directory_fsync() {
    let Some(mut fx) = setup("names") else { return };
    let p = fx.path("new");
    create(&p, b"data synced, name not").sync_all().unwrap();
    let report = fx.mount().power_cut().unwrap();
    assert_eq!(read(&p), None);
    assert_eq!(report.dropped_entries, 1);

    create(&p, b"kept").sync_all().unwrap();
    sync_dir(&fx.dir);
    fs::remove_file(&p).unwrap();
    assert_eq!(read(&p), None);
    fx.mount().power_cut().unwrap();
    assert_eq!(read(&p).unwrap(), b"kept", "an unlink without a directory fsync is undone");

    fs::remove_file(&p).unwrap();
    sync_dir(&fx.dir);
    fx.mount().power_cut().unwrap();
    assert_eq!(read(&p), None);
}

#[test]
fn a_new_subdirectory_needs_three_fsyncs() {
    let Some(mut fx) = setup("subdir") else { return };
    // Each case gets its own durable parent so that syncing one parent cannot help another case.
    let cases = [
        ("all", true, true, true),
        ("no-parent", false, true, true),
        ("no-sub", true, false, true),
        ("no-file", true, true, false),
    ];
    for (name, ..) in cases {
        fs::create_dir(fx.path(name)).unwrap();
    }
    sync_dir(&fx.dir);
    for (name, parent, sub, file) in cases {
        let dir = fx.path(name).join("sub");
        fs::create_dir(&dir).unwrap();
        let f = create(&dir.join("f"), b"contents");
        if file {
            f.sync_all().unwrap();
        }
        if sub {
            sync_dir(&dir);
        }
        if parent {
            sync_dir(&fx.path(name));
        }
    }
    fx.mount().power_cut().unwrap();
    let sub = |name: &str| fx.path(name).join("sub");
    assert_eq!(read(&sub("all").join("f")).unwrap(), b"contents");
    assert!(!sub("no-parent").exists());
    assert!(sub("no-sub").is_dir());
    assert_eq!(fs::read_dir(sub("no-sub")).unwrap().count(), 0);
    assert_eq!(read(&sub("no-file").join("f")).unwrap(), b"");
}

#[test]
fn flock_and_unix_sockets_work() {
    let Some(fx) = setup("flock") else { return };
    let p = fx.path("db");
    let first = create(&p, b"");
    let second = File::open(&p).unwrap();
    // SAFETY: both descriptors are open files owned by this test.
    unsafe {
        assert_eq!(libc::flock(first.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB), 0, "{}", io::Error::last_os_error());
        assert_eq!(
            libc::flock(second.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB),
            -1,
            "a second exclusive lock must fail"
        );
        assert_eq!(io::Error::last_os_error().raw_os_error(), Some(libc::EWOULDBLOCK));
        assert_eq!(libc::flock(first.as_raw_fd(), libc::LOCK_UN), 0);
        assert_eq!(libc::flock(second.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB), 0);
    }

    let sock = fx.path("maild.sock");
    let listener = UnixListener::bind(&sock).unwrap();
    fs::set_permissions(&sock, fs::Permissions::from_mode(0o600)).unwrap();
    let meta = fs::symlink_metadata(&sock).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let mut client = UnixStream::connect(&sock).unwrap();
    let (mut server, _) = listener.accept().unwrap();
    client.write_all(b"ping").unwrap();
    let mut buf = [0u8; 4];
    server.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"ping");
}

#[test]
fn overwrites_and_truncates_without_fsync_are_undone() {
    let Some(mut fx) = setup("overwrite") else { return };
    let p = fx.path("f");
    let f = create(&p, b"0123456789");
    f.sync_all().unwrap();
    sync_dir(&fx.dir);
    f.write_all_at(b"abc", 4).unwrap();
    assert_eq!(read(&p).unwrap(), b"0123abc789");
    drop(f);
    let report = fx.mount().power_cut().unwrap();
    assert_eq!(read(&p).unwrap(), b"0123456789");
    assert_eq!(report.dropped_bytes, 3);

    OpenOptions::new().write(true).open(&p).unwrap().set_len(4).unwrap();
    assert_eq!(read(&p).unwrap(), b"0123");
    fx.mount().power_cut().unwrap();
    assert_eq!(read(&p).unwrap(), b"0123456789");

    // O_TRUNC followed by new content, the classic "rewrite in place" mistake, loses both.
    fs::write(&p, b"new").unwrap();
    fx.mount().power_cut().unwrap();
    assert_eq!(read(&p).unwrap(), b"0123456789");
}

#[test]
fn close_sync_file_range_and_syncfs_make_nothing_durable() {
    let Some(mut fx) = setup("nonsyncs") else { return };
    let p = fx.path("f");
    create(&p, b"").sync_all().unwrap();
    sync_dir(&fx.dir);
    let f = OpenOptions::new().write(true).open(&p).unwrap();
    f.write_all_at(b"not durable", 0).unwrap();
    let flags = libc::SYNC_FILE_RANGE_WAIT_BEFORE | libc::SYNC_FILE_RANGE_WRITE | libc::SYNC_FILE_RANGE_WAIT_AFTER;
    // SAFETY: `f` is an open file owned by this test.
    unsafe {
        assert_eq!(libc::sync_file_range(f.as_raw_fd(), 0, 0, flags), 0);
        assert_eq!(libc::syncfs(f.as_raw_fd()), 0);
    }
    drop(f);
    let before = fx.mount().stats();
    let report = fx.mount().power_cut().unwrap();
    assert_eq!(read(&p).unwrap(), b"");
    assert_eq!(report.dropped_bytes, 11);
    assert_eq!(fx.mount().stats(), before, "none of these reached the file system as a sync");
}

#[test]
fn stats_count_file_and_directory_syncs() {
    let Some(fx) = setup("stats") else { return };
    let f = create(&fx.path("f"), b"x");
    f.sync_all().unwrap();
    f.sync_data().unwrap();
    sync_dir(&fx.dir);
    let stats = fx.mount.as_ref().unwrap().stats();
    assert_eq!((stats.fsyncs, stats.fsyncdirs), (2, 1));

    // maild checks free space before every commit.
    let path = std::ffi::CString::new(fx.dir.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: statvfs fills the zeroed struct we own from a valid path string.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::statvfs(path.as_ptr(), &mut st) }, 0);
    assert!(st.f_bavail as u64 * st.f_frsize as u64 >= 32 << 30);
}

#[test]
fn attributes_listings_and_deep_trees_survive() {
    let Some(mut fx) = setup("tree") else { return };
    let deep = fx.path("a/b/c");
    fs::create_dir_all(&deep).unwrap();
    let f = create(&deep.join("f"), b"deep");
    f.set_permissions(fs::Permissions::from_mode(0o600)).unwrap();
    f.sync_all().unwrap();
    for d in ["a/b/c", "a/b", "a", ""] {
        sync_dir(&fx.path(d));
    }
    fs::create_dir(fx.path("a/lost")).unwrap();
    fx.mount().power_cut().unwrap();
    assert_eq!(read(&deep.join("f")).unwrap(), b"deep");
    assert_eq!(fs::metadata(deep.join("f")).unwrap().permissions().mode() & 0o777, 0o600);
    let mut names: Vec<_> = fs::read_dir(fx.path("a")).unwrap().map(|e| e.unwrap().file_name()).collect();
    names.sort();
    assert_eq!(names, ["b"]);
    // The rebooted file system takes new work as usual.
    create(&fx.path("a/after"), b"1").sync_all().unwrap();
    sync_dir(&fx.path("a"));
    fx.mount().power_cut().unwrap();
    assert_eq!(read(&fx.path("a/after")).unwrap(), b"1");
}

#[test]
fn a_busy_mount_is_detached_and_the_old_handles_fail() {
    let Some(mut fx) = setup("busy") else { return };
    let p = fx.path("f");
    let f = create(&p, b"synced");
    f.sync_all().unwrap();
    sync_dir(&fx.dir);
    f.write_all_at(b"lost", 6).unwrap();
    // `f` stays open across the cut, as a process the caller forgot to kill would keep it.
    let started = Instant::now();
    fx.mount().power_cut().unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(read(&p).unwrap(), b"synced");
    let mut buf = [0u8; 4];
    let err = f.read_at(&mut buf, 0).expect_err("the old mount's disk is gone");
    assert_eq!(err.raw_os_error(), Some(libc::EIO));
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let here = fx.dir.canonicalize().unwrap();
    let visible = mounts.lines().filter(|l| l.split(' ').nth(4) == here.to_str()).count();
    assert_eq!(visible, 1, "only the new mount is visible at the mount point");
}

/// A small deterministic generator, so the stress test needs no dependency and replays exactly.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

#[test]
fn random_writes_and_syncs_match_a_model() {
    let Some(mut fx) = setup("stress") else { return };
    let started = Instant::now();
    let mut rng = Rng(0x5eed_cafe_f00d_d00d);
    let paths: Vec<PathBuf> = (0..3).map(|i| fx.path(&format!("file{i}"))).collect();
    // The model: for each file, what a reader sees now and what must survive a cut.
    let mut current: Vec<Vec<u8>> = vec![Vec::new(); paths.len()];
    let mut durable = current.clone();
    for p in &paths {
        create(p, b"").sync_all().unwrap();
    }
    sync_dir(&fx.dir);

    for round in 0..4 {
        let mut files: Vec<File> =
            paths.iter().map(|p| OpenOptions::new().read(true).write(true).open(p).unwrap()).collect();
        for _ in 0..1500 {
            let i = rng.below(paths.len() as u64) as usize;
            let cur = &mut current[i];
            match rng.below(100) {
                0..=59 => {
                    let offset = rng.below(cur.len() as u64 + 4096) as usize;
                    let len = 1 + rng.below(16384) as usize;
                    let data: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
                    files[i].write_all_at(&data, offset as u64).unwrap();
                    if cur.len() < offset + len {
                        cur.resize(offset + len, 0);
                    }
                    cur[offset..offset + len].copy_from_slice(&data);
                }
                60..=69 => {
                    let len = rng.below(cur.len() as u64 + 8192) as usize;
                    files[i].set_len(len as u64).unwrap();
                    cur.resize(len, 0);
                }
                70..=84 => {
                    if rng.below(2) == 0 {
                        files[i].sync_all().unwrap();
                    } else {
                        files[i].sync_data().unwrap();
                    }
                    durable[i] = cur.clone();
                }
                85..=94 => {
                    let offset = rng.below(cur.len() as u64 + 1) as usize;
                    let len = rng.below(65536) as usize;
                    let mut buf = vec![0u8; len];
                    let n = files[i].read_at(&mut buf, offset as u64).unwrap();
                    let end = (offset + len).min(cur.len());
                    assert_eq!(&buf[..n], &cur[offset..end], "round {round}: a read disagrees with the model");
                }
                _ => {
                    // Closing sends FLUSH, which must not make anything durable.
                    files[i] = OpenOptions::new().read(true).write(true).open(&paths[i]).unwrap();
                }
            }
        }
        for (p, cur) in paths.iter().zip(&current) {
            assert!(read(p).unwrap() == *cur, "round {round}: {} differs from the model before the cut", p.display());
        }
        drop(files);
        fx.mount().power_cut().unwrap();
        for (i, p) in paths.iter().enumerate() {
            let got = read(p).unwrap();
            assert!(got == durable[i], "round {round}: {} differs from the durable model after the cut", p.display());
            current[i] = durable[i].clone();
        }
    }
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
}
