//! What the store needs from the machine. A full disk: maild on a small tmpfs says
//! `452 4.3.1` when space runs low (to a large message that would be spooled to a file
//! too, leaving no file behind), loses nothing it acknowledged, keeps serving POP3, and
//! accepts again once space is freed, without a restart. Needs root (to mount the tmpfs);
//! CI runs as root. Without it the test says so loudly and does nothing. File
//! descriptors: maild raises its open-file limit to the hard limit, and refuses to start
//! with a `--max-connections` that cannot fit in it.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

/// A size-limited tmpfs, unmounted on drop.
struct Tmpfs {
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(megabytes: u32) -> Option<Tmpfs> {
        let dir = new_data_dir();
        let path = dir.path().join("fs");
        std::fs::create_dir(&path).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={megabytes}m"), "tmpfs"])
            .arg(&path)
            .stderr(std::process::Stdio::null())
            .status();
        match status {
            Ok(s) if s.success() => Some(Tmpfs { path, _dir: dir }),
            _ => None,
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

fn ballast(path: &Path, megabytes: usize) {
    std::fs::write(path, vec![0x5a; megabytes << 20]).unwrap();
}

#[test]
fn a_full_disk_gets_452_loses_nothing_and_recovers_without_a_restart() {
    let Some(fs) = Tmpfs::mount(64) else {
        eprintln!("SKIPPED a_full_disk_gets_452…: cannot mount a tmpfs here (not root?); this case is NOT tested");
        return;
    };
    let data = fs.path.join("data");
    add_users(&data, &["u@d.test"]);
    let ballast_path = fs.path.join("ballast");
    ballast(&ballast_path, 24);
    let mut maild =
        Maild::start_on(&data, &["--domain", "d.test", "--min-free-space", "8388608", "--max-message-size", "4000000"]);

    let big: Vec<u8> = {
        let mut body = b"Subject: big\r\n\r\n".to_vec();
        while body.len() < 512 * 1024 {
            body.extend_from_slice(b"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\r\n");
        }
        body
    };
    let mut c = maild.smtp_client();
    c.reply();
    c.expect("EHLO fill", "250");
    let mut acked = Vec::new();
    let mut refused = None;
    for i in 0..200 {
        c.expect("MAIL FROM:<s@d.test>", "250");
        c.expect("RCPT TO:<u@d.test>", "250");
        c.expect("DATA", "354");
        c.send(format!("X-Seq: {i}\r\n"));
        c.send(&big);
        c.send(b".\r\n");
        let reply = c.reply();
        match message_number(&reply) {
            Some(n) => acked.push(n),
            None => {
                refused = Some(reply);
                break;
            }
        }
    }
    let refused = refused.expect("the disk never filled up");
    assert!(refused.starts_with("452 4.3.1"), "{refused}");
    assert!(!acked.is_empty(), "some messages must fit before the disk is full");
    eprintln!("disk full after {} messages of 512 KiB: {refused}", acked.len());
    assert_eq!(acked, (1..=acked.len() as u64).collect::<Vec<_>>());

    // A 2 MiB message, whose body would go to a spool file, is refused the same way (the
    // spool file checks the free space), and no spool file is left behind.
    let large = big.repeat(4);
    c.expect("MAIL FROM:<s@d.test>", "250");
    c.expect("RCPT TO:<u@d.test>", "250");
    c.expect("DATA", "354");
    c.send(&large);
    c.send(b".\r\n");
    let reply = c.reply();
    assert!(reply.starts_with("452 4.3.1"), "{reply}");
    assert_eq!(std::fs::read_dir(data.join("store/bodies")).unwrap().count(), 0, "a spool file was left behind");

    // POP3 still serves what was acknowledged.
    let mut pop = Client::connect(maild.pop3);
    pop.line();
    for cmd in ["USER u@d.test", "PASS pw-u@d.test"] {
        pop.cmd(cmd);
        assert!(pop.line().unwrap().starts_with("+OK"));
    }
    pop.cmd("STAT");
    let stat = pop.line().unwrap();
    assert!(stat.starts_with(&format!("+OK {} ", acked.len())), "{stat}");
    pop.cmd("QUIT");
    pop.line();

    // Free space: the same session is accepted again, with the next number.
    std::fs::remove_file(&ballast_path).unwrap();
    let next = c.send_message("s@d.test", &["u@d.test"], b"Subject: after\r\n\r\nspace again\r\n");
    assert_eq!(next, acked.len() as u64 + 1, "no number was used by the refused messages");
    assert_eq!(c.send_message("s@d.test", &["u@d.test"], &large), next + 1);
    assert!(data.join(format!("store/bodies/{}", next + 1)).exists(), "the large body is a file of its own");
    c.expect("QUIT", "221");
    maild.stop();
    let verify = mailtool(&data, &["verify"], None);
    assert!(verify.status.success(), "{}{}", verify.stdout_text(), verify.stderr);
    let entries = export_entries(&data, &["--user", "u@d.test"]);
    assert_eq!(entries.len() as u64, next + 1);
    assert!(entries.last().unwrap().ends_with(&large), "the large message damaged");
    for (i, entry) in entries.iter().take(acked.len()).enumerate() {
        assert!(
            contains(entry, format!("X-Seq: {i}\r\n").as_bytes()) && entry.ends_with(&big),
            "message {} damaged",
            i + 1
        );
    }
}

/// Runs maild under a hard open-file limit of `limit` (with the soft limit lower still).
fn maild_with_file_limit(limit: u32, args: &[&str]) -> (std::process::Child, tempfile::TempDir) {
    let data = new_data_dir();
    let mut command = Command::new("prlimit");
    command
        .arg(format!("--nofile={}:{limit}", limit / 2))
        .arg(MAILD)
        .args([
            "--data",
            &data.path().join("data").display().to_string(),
            "--smtp",
            "127.0.0.1:0",
            "--pop3",
            "127.0.0.1:0",
        ])
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    (command.spawn().expect("run maild under prlimit"), data)
}

#[test]
fn max_connections_that_cannot_fit_in_the_file_limit_is_refused_at_start() {
    let (child, _data) = maild_with_file_limit(1024, &["--max-connections", "1000"]);
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "maild must refuse to start:\n{stderr}");
    assert!(stderr.contains("--max-connections 1000") && stderr.contains("limit is 1024"), "{stderr}");
    assert!(stderr.contains("lower --max-connections to 384"), "{stderr}");
}

#[test]
fn the_soft_file_limit_is_raised_to_the_hard_limit() {
    let (mut child, _data) = maild_with_file_limit(1024, &["--max-connections", "300"]);
    let (log, _reader) = capture_stderr(&mut child);
    eventually("maild ready", || log.lock().unwrap().contains("maild ready"));
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", child.id())).unwrap();
    let line = limits.lines().find(|l| l.starts_with("Max open files")).unwrap().to_string();
    let _ = child.kill();
    let _ = child.wait();
    let fields: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(&fields[3..5], ["1024", "1024"], "soft and hard limit: {line}");
}
