//! Backup range files and the admin tool against the real maild: range files, export
//! (mbox, Maildir), backup/restore under load, verify, stats, users while running.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use common::*;

fn body(n: u64) -> Vec<u8> {
    format!("Subject: m{n}\r\nFrom: s@d.test\r\n\r\nbody of message {n}\r\n").into_bytes()
}

/// Sends messages numbered `from..=to` (asserting their numbers) to u@d.test.
fn send_range(maild: &Maild, from: u64, to: u64) {
    let mut c = maild.smtp_client();
    c.reply();
    c.expect("EHLO t", "250");
    for n in from..=to {
        assert_eq!(c.send_message("s@d.test", &["u@d.test"], &body(n)), n);
    }
    c.expect("QUIT", "221");
}

fn backup_files(data: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(data.join("backup"))
        .map(|d| d.filter_map(|e| e.ok()?.file_name().into_string().ok()).filter(|n| !n.starts_with('.')).collect())
        .unwrap_or_default();
    names.sort_by_key(|n| n.trim_start_matches("mailbox.").split('-').next().and_then(|s| s.parse::<u64>().ok()));
    names
}

#[test]
fn a_hundred_messages_make_exactly_three_range_files() {
    let mut maild = maild_with_users(&["u@d.test"], &["--domain", "d.test"]);
    send_range(&maild, 1, 100);
    eventually("three range files", || backup_files(&maild.data).len() == 3);
    assert_eq!(backup_files(&maild.data), vec!["mailbox.1-32", "mailbox.33-64", "mailbox.65-96"]);
    for (first, last) in [(1, 32), (33, 64), (65, 96)] {
        let path = maild.data.join("backup").join(format!("mailbox.{first}-{last}"));
        let out = python("check_mbox.py", &["mbox", path.to_str().unwrap(), &first.to_string(), &last.to_string()]);
        assert!(out.contains("ok 32"), "{out}");
    }
    // Each range file is exactly what export writes for its numbers.
    let exported = mailtool(&maild.data, &["export", "--from", "33", "--to", "64"], None);
    assert_eq!(std::fs::read(maild.data.join("backup/mailbox.33-64")).unwrap(), exported.stdout);
    maild.stop();
    assert_eq!(backup_files(&maild.data).len(), 3, "no partial range for 97-100");
    let verify = mailtool(&maild.data, &["verify"], None);
    assert!(verify.status.success(), "{}{}", verify.stdout_text(), verify.stderr);
    assert!(verify.stdout_text().contains("range files: 3"), "{}", verify.stdout_text());
}

#[test]
fn ranges_missed_by_a_crash_are_written_at_the_next_start() {
    let mut maild = maild_with_users(&["u@d.test"], &["--domain", "d.test"]);
    send_range(&maild, 1, 64);
    eventually("two range files", || backup_files(&maild.data).len() == 2);
    maild.kill9();
    // Lose the second file as if the crash had come before it was written.
    std::fs::remove_file(maild.data.join("backup/mailbox.33-64")).unwrap();
    let data = maild.data.clone();
    let _again = Maild::start_on(&data, &["--domain", "d.test"]);
    eventually("the missing range file", || backup_files(&data).len() == 2);
    let path = data.join("backup/mailbox.33-64");
    assert!(python("check_mbox.py", &["mbox", path.to_str().unwrap(), "33", "64"]).contains("ok 32"));
}

#[test]
fn a_range_file_removed_by_hand_is_written_again_at_start() {
    let mut maild = maild_with_users(&["u@d.test"], &["--domain", "d.test"]);
    send_range(&maild, 1, 40);
    eventually("the range noted", || mailtool(&maild.data, &["stats"], None).stdout_text().contains("backed up: 32\n"));
    maild.stop();
    let path = maild.data.join("backup/mailbox.1-32");
    let original = std::fs::read(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    let verify = mailtool(&maild.data, &["verify"], None);
    assert!(!verify.status.success() && verify.stdout_text().contains("mailbox.1-32"), "{}", verify.stdout_text());
    let data = maild.data.clone();
    let again = Maild::start_on(&data, &["--domain", "d.test"]);
    eventually("the rewrite logged", || again.log().contains("mailbox.1-32 was missing"));
    assert_eq!(std::fs::read(&path).unwrap(), original, "the same bytes as before");
    let verify = mailtool(&data, &["verify"], None);
    assert!(verify.status.success(), "{}{}", verify.stdout_text(), verify.stderr);
}

#[test]
fn export_mbox_and_maildir_read_back_with_python() {
    let maild = maild_with_users(&["u@d.test", "v@d.test"], &["--domain", "d.test"]);
    send_range(&maild, 1, 10);
    // Running: export goes through the admin socket.
    let dir = new_data_dir();
    let mbox = dir.path().join("out.mbox");
    let out = mailtool(
        &maild.data,
        &["export", "--user", "u@d.test", "--from", "3", "--to", "7", "-o", mbox.to_str().unwrap()],
        None,
    );
    assert!(out.status.success(), "{}", out.stderr);
    assert!(python("check_mbox.py", &["mbox", mbox.to_str().unwrap(), "3", "7"]).contains("ok 5"));
    let maildir = dir.path().join("Maildir");
    let out = mailtool(&maild.data, &["export", "--format", "maildir", "-o", maildir.to_str().unwrap()], None);
    assert!(out.status.success(), "{}", out.stderr);
    assert!(python("check_mbox.py", &["maildir", maildir.to_str().unwrap(), "1", "10"]).contains("ok 10"));
    // Maildir needs a new directory, and says so.
    let again = mailtool(&maild.data, &["export", "--format", "maildir", "-o", maildir.to_str().unwrap()], None);
    assert!(!again.status.success() && again.stderr.contains("not empty"), "{}", again.stderr);
}

#[test]
fn commands_give_the_same_output_running_and_stopped() {
    let mut maild = maild_with_users(&["u@d.test", "v@d.test"], &["--domain", "d.test"]);
    send_range(&maild, 1, 40);
    // The backup stage notes its range after the file is durable: wait for the note too.
    eventually("the first range noted", || {
        mailtool(&maild.data, &["stats"], None).stdout_text().contains("backed up: 32\n")
    });
    let running: Vec<Vec<u8>> = [&["stats"][..], &["export"], &["user", "list"], &["queue"]]
        .iter()
        .map(|args| {
            let out = mailtool(&maild.data, args, None);
            assert!(out.status.success(), "{args:?}: {}", out.stderr);
            out.stdout
        })
        .collect();
    // The admin socket is the owner's only.
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(maild.data.join("maild.sock")).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    maild.stop();
    assert!(!maild.data.join("maild.sock").exists(), "the socket is removed at shutdown");
    let stopped: Vec<Vec<u8>> = [&["stats"][..], &["export"], &["user", "list"], &["queue"]]
        .iter()
        .map(|args| mailtool(&maild.data, args, None).stdout)
        .collect();
    // stats' store size may differ after the final flush; compare the rest.
    let without_size = |b: &Vec<u8>| {
        String::from_utf8_lossy(b).lines().filter(|l| !l.starts_with("store size")).collect::<Vec<_>>().join("\n")
    };
    assert_eq!(without_size(&running[0]), without_size(&stopped[0]));
    assert!(String::from_utf8_lossy(&stopped[0]).contains("head: 40\nmessages: 40\n"));
    assert_eq!(running[1..], stopped[1..]);
}

#[test]
fn a_user_added_while_running_takes_effect_at_once() {
    let maild = maild_with_users(&["u@d.test"], &["--domain", "d.test"]);
    let mut c = maild.smtp_client();
    c.reply();
    c.expect("HELO x", "250");
    c.expect("MAIL FROM:<>", "250");
    c.expect("RCPT TO:<late@d.test>", "550 5.1.1");
    let out = mailtool(&maild.data, &["user", "add", "late@d.test", "--password-stdin"], Some(b"pw-late@d.test\n"));
    assert!(out.status.success(), "{}", out.stderr);
    c.expect("RCPT TO:<late@d.test>", "250 2.1.5");
    let out = mailtool(&maild.data, &["user", "del", "late@d.test"], None);
    assert!(out.status.success(), "{}", out.stderr);
    c.expect("RCPT TO:<late@d.test>", "550 5.1.1");
}

#[test]
fn a_backup_taken_under_load_restores_to_a_working_store() {
    let maild = maild_with_users(&["u@d.test"], &["--domain", "d.test"]);
    let acked = Arc::new(Mutex::new(Vec::<u64>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let load: Vec<_> = (0..4)
        .map(|_| {
            let (address, acked, stop) = (maild.smtp, acked.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut c = Client::connect(address);
                c.reply();
                c.expect("EHLO load", "250");
                while !stop.load(Ordering::SeqCst) {
                    let n = c.send_message("s@d.test", &["u@d.test"], b"Subject: load\r\n\r\nunder load\r\n");
                    acked.lock().unwrap().push(n);
                }
            })
        })
        .collect();
    eventually("load running", || acked.lock().unwrap().len() >= 100);
    let before: Vec<u64> = acked.lock().unwrap().clone();
    let dir = new_data_dir();
    let backup = dir.path().join("backup");
    let out = mailtool(&maild.data, &["backup", "-o", backup.to_str().unwrap()], None);
    assert!(out.status.success(), "{}", out.stderr);
    stop.store(true, Ordering::SeqCst);
    for t in load {
        t.join().unwrap();
    }
    // Restore into a new directory and run maild on it.
    let restored = dir.path().join("restored");
    let out = mailtool(&restored, &["restore", backup.to_str().unwrap()], None);
    assert!(out.status.success(), "{}", out.stderr);
    let verify = mailtool(&restored, &["verify"], None);
    assert!(verify.status.success(), "{}{}", verify.stdout_text(), verify.stderr);
    let mut copy = Maild::start_on(&restored, &["--domain", "d.test"]);
    let head = before.iter().max().copied().unwrap();
    let mut c = copy.smtp_client();
    c.reply();
    c.expect("HELO x", "250");
    let next = c.send_message("s@d.test", &["u@d.test"], b"on the copy\r\n");
    assert!(next > head, "numbering continues past the backup's head");
    c.expect("QUIT", "221");
    copy.stop();
    let numbers: Vec<u64> =
        export_entries(&restored, &["--user", "u@d.test"]).iter().map(|e| entry_number(e)).collect();
    for n in &before {
        assert!(numbers.contains(n), "message {n}, acknowledged before the backup, is missing");
    }
    assert_eq!(numbers, (1..=next).collect::<Vec<_>>());
    // Restore refuses a directory that is not empty.
    let again = mailtool(&restored, &["restore", backup.to_str().unwrap()], None);
    assert!(!again.status.success() && again.stderr.contains("not empty"), "{}", again.stderr);
}

#[test]
fn verify_names_a_deleted_record_and_a_changed_range_file() {
    let mut maild = maild_with_users(&["u@d.test"], &["--domain", "d.test"]);
    send_range(&maild, 1, 40);
    eventually("the first range file", || backup_files(&maild.data).len() == 1);
    maild.stop();
    let healthy = mailtool(&maild.data, &["verify"], None);
    assert!(healthy.status.success(), "{}{}", healthy.stdout_text(), healthy.stderr);
    // A deleted record (message 35, outside the range file).
    edit_stopped_store(&maild.data, |db| {
        let messages = db.open_tree("messages").unwrap();
        let mut key = vec![b'm'];
        key.extend_from_slice(&35u64.to_be_bytes());
        assert!(messages.remove(key).unwrap().is_some());
    });
    let out = mailtool(&maild.data, &["verify"], None);
    assert!(!out.status.success());
    let report = out.stdout_text();
    assert!(report.contains("FAULT message 35: missing"), "{report}");
    assert!(report.contains("entry 35 does not resolve"), "{report}");
    // A changed range file.
    let range = maild.data.join("backup/mailbox.1-32");
    let mut bytes = std::fs::read(&range).unwrap();
    let at = bytes.windows(17).position(|w| w == b"body of message 7").unwrap();
    bytes[at] = b'B';
    std::fs::write(&range, bytes).unwrap();
    let report = mailtool(&maild.data, &["verify"], None).stdout_text();
    assert!(report.contains("FAULT mailbox.1-32: content differs"), "{report}");
    // A message the deliver stage skipped: no mailbox entry and no reference count.
    edit_stopped_store(&maild.data, |db| {
        let mailboxes = db.open_tree("mailboxes").unwrap();
        let mut entry = b"xu@d.test\0".to_vec();
        entry.extend_from_slice(&20u64.to_be_bytes());
        let mut refs = vec![b'r'];
        refs.extend_from_slice(&20u64.to_be_bytes());
        assert!(mailboxes.remove(entry).unwrap().is_some() && mailboxes.remove(refs).unwrap().is_some());
    });
    let report = mailtool(&maild.data, &["verify"], None).stdout_text();
    assert!(report.contains("FAULT message 20: delivered per the mark, but in no mailbox or queue"), "{report}");
}

#[test]
fn a_message_deleted_over_pop3_leaves_the_store_but_stays_in_its_range_file() {
    let mut maild = maild_with_users(&["u@d.test"], &["--domain", "d.test"]);
    send_range(&maild, 1, 32);
    eventually("the range file", || backup_files(&maild.data).len() == 1);
    let mut pop = Client::connect(maild.pop3);
    pop.line();
    for cmd in ["USER u@d.test", "PASS pw-u@d.test", "DELE 5", "QUIT"] {
        pop.cmd(cmd);
        let reply = pop.line().unwrap();
        assert!(reply.starts_with("+OK"), "{cmd}: {reply}");
    }
    // Collection runs after the next range is written.
    send_range(&maild, 33, 64);
    eventually("the second range file", || backup_files(&maild.data).len() == 2);
    maild.stop();
    let stats = mailtool(&maild.data, &["stats"], None).stdout_text();
    assert!(stats.contains("head: 64\nmessages: 63\n"), "{stats}");
    let verify = mailtool(&maild.data, &["verify"], None);
    assert!(verify.status.success(), "{}", verify.stdout_text());
    assert!(verify.stdout_text().contains("collected: 1"), "{}", verify.stdout_text());
    let range = maild.data.join("backup/mailbox.1-32");
    assert!(python("check_mbox.py", &["mbox", range.to_str().unwrap(), "1", "32"]).contains("ok 32"));
}

#[test]
fn a_data_dir_too_long_for_the_admin_socket_is_a_clear_error_at_start() {
    let tmp = new_data_dir();
    let deep = tmp.path().join("a-directory-name-that-is-long-enough".repeat(3));
    let (exited, stderr) = maild_until_exit(&deep, &[]);
    assert!(exited.is_some_and(|status| !status.success()), "{stderr}");
    assert!(stderr.contains("longer than a Unix socket allows") && stderr.contains("shorter --data"), "{stderr}");
}

#[test]
fn user_del_takes_the_mail_with_it_and_mailbox_clear_empties_a_mailbox() {
    let maild = maild_with_users(&["u@d.test", "v@d.test"], &["--domain", "d.test"]);
    let mut c = maild.smtp_client();
    c.reply();
    c.expect("HELO x", "250");
    c.send_message("s@d.test", &["u@d.test", "v@d.test"], b"Subject: shared\r\n\r\nfor both\r\n");
    c.send_message("s@d.test", &["u@d.test"], b"Subject: only u\r\n\r\nfor u\r\n");
    c.send_message("s@d.test", &["v@d.test"], b"Subject: only v\r\n\r\nfor v\r\n");
    let stat = |user: &str| {
        let mut pop = pop3_login(maild.pop3, user, &format!("pw-{user}"));
        pop.cmd("STAT");
        let reply = pop.line().unwrap();
        pop.cmd("QUIT");
        pop.line();
        reply
    };
    eventually("delivery", || stat("u@d.test").starts_with("+OK 2 ") && stat("v@d.test").starts_with("+OK 2 "));
    // u goes, with its two messages; a new u starts empty; v keeps the shared one.
    let out = mailtool(&maild.data, &["user", "del", "u@d.test"], None);
    assert!(out.status.success(), "{}", out.stderr);
    assert_eq!(out.stdout_text(), "deleted u@d.test and 2 message(s)\n");
    add_users(&maild.data, &["u@d.test"]);
    assert!(stat("u@d.test").starts_with("+OK 0 "));
    assert!(stat("v@d.test").starts_with("+OK 2 "));
    let out = mailtool(&maild.data, &["mailbox", "clear", "v@d.test"], None);
    assert!(out.status.success(), "{}", out.stderr);
    assert_eq!(out.stdout_text(), "cleared 2 message(s) from v@d.test\n");
    assert!(stat("v@d.test").starts_with("+OK 0 "));
    let out = mailtool(&maild.data, &["mailbox", "clear", "nobody@d.test"], None);
    assert!(!out.status.success() && out.stderr.contains("no user nobody@d.test"), "{}", out.stderr);
    // The numbers stay gapless and the store consistent: the removed messages are collectable.
    let verify = mailtool(&maild.data, &["verify"], None);
    assert!(verify.status.success(), "{}", verify.stdout_text());
}

/// Message `n` with about `mib` MiB of lines before its last one, among them lines that
/// mboxrd quotes and POP3 stuffs; it ends as [`body`] does.
fn large_body(n: u64, mib: usize) -> Vec<u8> {
    let mut body = format!("Subject: m{n}\r\nFrom: s@d.test\r\n\r\n").into_bytes();
    let mut i = 0;
    while body.len() < mib << 20 {
        let line = match i % 500 {
            3 => format!("From line {i}\r\n"),
            4 => format!(">From line {i}\r\n"),
            5 => format!(".dot line {i}\r\n"),
            _ => format!("{i:08} {}\r\n", "y".repeat(80)),
        };
        body.extend_from_slice(line.as_bytes());
        i += 1;
    }
    body.extend_from_slice(format!("\r\nbody of message {n}\r\n").as_bytes());
    body
}

#[test]
fn a_large_message_stays_whole_through_kill_9_export_backup_restore_and_collection() {
    let dir = new_data_dir();
    let data = dir.path().join("data");
    add_users(&data, &["u@d.test"]);
    let mut maild = Maild::start_on(&data, &["--domain", "d.test"]);
    send_range(&maild, 1, 4);
    let large = large_body(5, 3);
    let mut c = maild.smtp_client();
    c.reply();
    c.expect("EHLO t", "250");
    assert_eq!(c.send_message("s@d.test", &["u@d.test"], &dot_stuff(&large)), 5);
    maild.kill9();
    let file = data.join("store/bodies/5");
    assert!(file.exists(), "a 3 MiB body is a file of its own");
    let mut maild = Maild::start_on(&data, &["--domain", "d.test"]);
    send_range(&maild, 6, 32);
    eventually("the range file", || backup_files(&data).len() == 1);
    let range = data.join("backup/mailbox.1-32");
    assert!(python("check_mbox.py", &["mbox", range.to_str().unwrap(), "1", "32"]).contains("ok 32"));

    // Export while running (through the admin socket) quotes the body's From lines.
    let exported = export_entries(&data, &["--from", "5", "--to", "5"]);
    assert_eq!(exported.len(), 1);
    let entry = &exported[0];
    assert!(contains(entry, b"\r\n>From line 3\r\n") && contains(entry, b"\r\n>>From line 4\r\n"));
    assert!(contains(entry, b"\r\n.dot line 5\r\n"));
    let verify = mailtool(&data, &["verify"], None);
    assert!(verify.status.success(), "{}{}", verify.stdout_text(), verify.stderr);

    // A backup carries the body file; the restored store gives the same entry.
    let backup = dir.path().join("backup");
    let out = mailtool(&data, &["backup", "-o", backup.to_str().unwrap()], None);
    assert!(out.status.success(), "{}", out.stderr);
    let restored = dir.path().join("restored");
    let out = mailtool(&restored, &["restore", backup.to_str().unwrap()], None);
    assert!(out.status.success(), "{}", out.stderr);
    let verify = mailtool(&restored, &["verify"], None);
    assert!(verify.status.success(), "{}{}", verify.stdout_text(), verify.stderr);
    assert_eq!(std::fs::metadata(restored.join("store/bodies/5")).unwrap().len(), large.len() as u64);
    assert_eq!(export_entries(&restored, &["--from", "5", "--to", "5"]), exported);
    // verify names a body file that went missing.
    std::fs::remove_file(restored.join("store/bodies/5")).unwrap();
    let verify = mailtool(&restored, &["verify"], None);
    assert!(!verify.status.success() && verify.stdout_text().contains("message 5: "), "{}", verify.stdout_text());

    // Deleted over POP3, the message is collected with its file once the next range is
    // written; the range file keeps it.
    let mut pop = pop3_login(maild.pop3, "u@d.test", "pw-u@d.test");
    for (cmd, reply) in [("DELE 5", "+OK"), ("QUIT", "+OK")] {
        pop.expect(cmd, reply);
    }
    send_range(&maild, 33, 64);
    eventually("the second range file", || backup_files(&data).len() == 2);
    eventually("the body file collected", || !file.exists());
    maild.stop();
    let verify = mailtool(&data, &["verify"], None);
    assert!(verify.status.success(), "{}", verify.stdout_text());
    assert!(verify.stdout_text().contains("collected: 1"), "{}", verify.stdout_text());
    assert!(python("check_mbox.py", &["mbox", range.to_str().unwrap(), "1", "32"]).contains("ok 32"));
}
