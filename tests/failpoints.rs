//! Every failpoint of `engine::failpoint::ALL`, fired in the real `maild`.
//!
//! Each test starts maild with `MAILD_FAILPOINTS` in its environment and then checks the
//! contract from the outside, with the tools a user has (SMTP, POP3, `mailtool`):
//!
//! - `crash@N`: the process aborts at the Nth hit (like `kill -9`, no destructors). After a
//!   plain restart nothing acknowledged is lost, an unacknowledged message is there whole
//!   or not at all, numbers are `1..=head` with no gap, every mailbox holds what it must,
//!   missed range files are written, `mailtool verify` exits 0, and the next message gets
//!   `head + 1`.
//! - `error@1` / `full@1` (only the first hit fails): on the persist path the client gets
//!   `451 4.3.0` / `452 4.3.1`, nothing of the refused message is stored (not now, not
//!   after a restart), and the next message gets the next number. On the deliver and
//!   backup paths the message is acknowledged (it is durable) and its mailbox entry or
//!   range file catches up on the next signal or the next start. At POP3 QUIT the client
//!   gets `-ERR` and nothing is deleted.
//! - `hang@N`: the Nth commit never returns, as sled's flush does after a write it could
//!   not finish. Past `--store-timeout` the waiting client gets `451 4.3.0`, maild exits
//!   with status 75, and a restart recovers.
//!
//! The failpoints are compiled into `maild` only with `--all-features`; without the
//! feature this file compiles to nothing.
#![cfg(feature = "failpoints")]

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::sync::{Arc, Barrier};

use common::*;

const USER: &str = "u@d.test";
/// A short shutdown grace: a clean stop with a test client still connected need not wait 30 s.
const ARGS: &[&str] = &["--domain", "d.test", "--shutdown-grace", "2"];

/// The bytes a test sends as message `i` of a scenario (`tag` keeps scenarios apart). The
/// last line is what `tests/py/check_mbox.py` looks for when `i` is also its number.
fn body(tag: &str, i: u64) -> Vec<u8> {
    format!("Subject: {tag} {i}\r\nFrom: s@d.test\r\nX-Dots: .\r\n\r\nbody of message {i}\r\n").into_bytes()
}

/// What became of one message.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Acked(u64),
    /// A reply that is not a `250 … delivered message N`.
    Refused(String),
    /// The connection ended before the verdict.
    Dropped,
}

/// One SMTP session that tolerates the server vanishing at any point.
struct Smtp {
    c: Client,
}

impl Smtp {
    fn connect(maild: &Maild) -> Smtp {
        let mut c = maild.smtp_client();
        assert!(c.reply().starts_with("220"));
        c.expect("EHLO fp.test", "250");
        Smtp { c }
    }

    /// Everything up to and including the 354, then the message without its final dot.
    /// False if the server went away.
    fn start_data(&mut self, message: &[u8]) -> bool {
        let head = format!("MAIL FROM:<s@d.test>\r\nRCPT TO:<{USER}>\r\nDATA\r\n");
        if self.c.stream.write_all(head.as_bytes()).is_err() {
            return false;
        }
        for expected in ["250", "250", "354"] {
            match self.c.line() {
                Some(line) => assert!(line.starts_with(expected), "expected {expected}, got {line:?}"),
                None => return false,
            }
        }
        self.c.stream.write_all(&dot_stuff(message)).is_ok()
    }

    /// Ends the data and reads the verdict.
    fn finish(&mut self) -> Outcome {
        if self.c.stream.write_all(b".\r\n").is_err() {
            return Outcome::Dropped;
        }
        match self.c.line() {
            None => Outcome::Dropped,
            Some(line) => match message_number(&line) {
                Some(n) => Outcome::Acked(n),
                None => Outcome::Refused(line),
            },
        }
    }

    fn send(&mut self, message: &[u8]) -> Outcome {
        if !self.start_data(message) {
            return Outcome::Dropped;
        }
        self.finish()
    }

    /// Sends and insists on the 250 with this number.
    fn send_acked(&mut self, message: &[u8], number: u64) {
        assert_eq!(self.send(message), Outcome::Acked(number), "message {}", String::from_utf8_lossy(message));
    }
}

/// A minimal POP3 client.
struct Pop3 {
    c: Client,
}

impl Pop3 {
    fn login(maild: &Maild) -> Pop3 {
        Pop3 { c: pop3_login(maild.pop3, USER, &format!("pw-{USER}")) }
    }

    fn cmd(&mut self, line: &str) -> Option<String> {
        self.c.cmd(line);
        self.c.line()
    }

    fn ok(&mut self, line: &str) -> String {
        let reply = self.cmd(line).unwrap_or_else(|| panic!("{line}: connection closed"));
        assert!(reply.starts_with("+OK"), "{line}: {reply}");
        reply
    }

    /// UIDL: the message numbers of the maildrop, oldest first.
    fn uids(&mut self) -> Vec<u64> {
        self.ok("UIDL");
        let mut uids = Vec::new();
        loop {
            let line = self.c.line().expect("closed in UIDL");
            if line == "." {
                return uids;
            }
            uids.push(line.split_whitespace().nth(1).unwrap().parse().unwrap());
        }
    }
}

fn uids(maild: &Maild) -> Vec<u64> {
    let mut pop = Pop3::login(maild);
    let uids = pop.uids();
    pop.ok("QUIT");
    uids
}

/// A fresh data dir with the one user.
fn data_dir() -> tempfile::TempDir {
    let tmp = new_data_dir();
    add_users(tmp.path(), &[USER]);
    tmp
}

fn start_with(data: &Path, failpoints: &str) -> Maild {
    Maild::start_on_with_env(data, ARGS, &[("MAILD_FAILPOINTS", failpoints)])
}

/// Waits for a maild whose crash failpoint fired; asserts it died by that failpoint.
fn wait_for_crash(maild: &mut Maild, point: &str) {
    let status = maild.wait();
    let log = maild.log();
    assert_eq!(status.signal(), Some(6), "maild should have aborted at {point}; it exited with {status}:\n{log}");
    assert!(log.contains(&format!("failpoint {point}: crash")), "maild died, but not at {point}:\n{log}");
}

fn stats_head(data: &Path) -> u64 {
    let out = mailtool(data, &["stats"], None);
    assert!(out.status.success(), "stats: {}", out.stderr);
    let text = out.stdout_text();
    text.lines()
        .find_map(|l| l.strip_prefix("head: "))
        .unwrap_or_else(|| panic!("no head in {text}"))
        .trim()
        .parse()
        .unwrap()
}

fn verify_ok(data: &Path) {
    let out = mailtool(data, &["verify"], None);
    assert!(out.status.success(), "verify failed:\n{}{}", out.stdout_text(), out.stderr);
    assert!(out.stdout_text().contains("faults: 0"), "{}", out.stdout_text());
}

fn range_files(data: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(data.join("backup"))
        .map(|d| d.filter_map(|e| e.ok()?.file_name().into_string().ok()).collect())
        .unwrap_or_default();
    names.sort();
    names
}

/// Waits until every complete range up to `head` has its file, then checks there is
/// nothing else in the backup directory (no temporary file left behind, no extra range).
fn ranges_complete(data: &Path, head: u64) {
    let mut want: Vec<String> = (1..=head / 32).map(|k| format!("mailbox.{}-{}", 32 * k - 31, 32 * k)).collect();
    want.sort();
    eventually(&format!("range files {want:?}"), || range_files(data) == want);
}

/// The whole store against what the clients were told: run with maild running (through
/// its admin socket) or stopped. `acked` must be there byte-exact under its number; each
/// message of `maybe` (sent, no verdict) is there whole or not at all; no message of
/// `refused` is there. Every message is in the user's mailbox; verify exits 0. Returns the
/// head.
fn check_store(data: &Path, acked: &BTreeMap<u64, Vec<u8>>, maybe: &[Vec<u8>], refused: &[Vec<u8>]) -> u64 {
    let head = stats_head(data);
    let entries = export_entries(data, &[]);
    let numbers: Vec<u64> = entries.iter().map(|e| entry_number(e)).collect();
    assert_eq!(numbers, (1..=head).collect::<Vec<_>>(), "numbers must be exactly 1..=head (head {head})");
    for (entry, number) in entries.iter().zip(1..) {
        assert!(entry.starts_with(
            format!("Number: {number}\r\nReturn-Path: <s@d.test>\r\nDelivered-To: {USER}\r\nReceived: ").as_bytes()
        ));
        match acked.get(&number) {
            Some(message) => assert!(
                entry.ends_with(message),
                "acknowledged message {number} lost or changed:\n{}",
                String::from_utf8_lossy(entry)
            ),
            None => assert!(
                maybe.iter().any(|m| entry.ends_with(m)),
                "message {number} was never acknowledged, and is not a whole unacknowledged message:\n{}",
                String::from_utf8_lossy(entry)
            ),
        }
        for message in refused {
            assert!(
                !entry.ends_with(message),
                "message {number} is one the client was refused:\n{}",
                String::from_utf8_lossy(entry)
            );
        }
    }
    if let Some((&last, _)) = acked.last_key_value() {
        assert!(last <= head, "message {last} was acknowledged but the head is {head}");
    }
    let mailbox: Vec<u64> = export_entries(data, &["--user", USER]).iter().map(|e| entry_number(e)).collect();
    assert_eq!(mailbox, (1..=head).collect::<Vec<_>>(), "the mailbox must hold every message");
    verify_ok(data);
    head
}

/// Sends messages until the crash failpoint `point` fires at its `hit`th hit, then
/// restarts maild and checks the recovery. `unacked` says what may become of the one
/// message whose verdict the crash swallowed: `Some(true)` it must be there (it was
/// fsync'd), `Some(false)` it must not, `None` either.
fn crash_and_recover(point: &str, hit: u64, unacked: Option<bool>) {
    let tmp = data_dir();
    let data = tmp.path();
    let mut maild = start_with(data, &format!("{point}=crash@{hit}"));
    let mut acked = BTreeMap::new();
    let mut maybe = Vec::new();
    let mut smtp = Smtp::connect(&maild);
    for i in 1.. {
        assert!(i <= 500, "the failpoint {point}=crash@{hit} never fired");
        let message = body(point, i);
        match smtp.send(&message) {
            Outcome::Acked(n) => {
                assert_eq!(n, i, "numbers follow the sending order of one client");
                acked.insert(n, message);
            }
            Outcome::Dropped => {
                maybe.push(message);
                break;
            }
            Outcome::Refused(reply) => panic!("message {i}: {reply}"),
        }
    }
    wait_for_crash(&mut maild, point);
    // Stopped: mailtool opens the crashed store itself. It must already be consistent.
    verify_ok(data);

    let maild = Maild::start_on(data, ARGS);
    let head = check_store(data, &acked, &maybe, &[]);
    let sent = acked.len() as u64;
    match unacked {
        Some(true) => {
            assert_eq!(head, sent + 1, "the unacknowledged message was fsync'd before the crash; it must be there")
        }
        Some(false) => {
            assert_eq!(head, sent, "the unacknowledged message crashed before its batch; it must not be there")
        }
        None => assert!(head == sent || head == sent + 1, "head {head} after {sent} acknowledged messages"),
    }
    if head > sent {
        acked.insert(head, maybe.pop().unwrap());
    }
    ranges_complete(data, head);
    verify_ok(data);
    assert_eq!(uids(&maild), (1..=head).collect::<Vec<_>>(), "POP3 shows the mailbox");
    // The next message continues the sequence.
    let mut smtp = Smtp::connect(&maild);
    let next = body(&format!("{point} next"), head + 1);
    smtp.send_acked(&next, head + 1);
    acked.insert(head + 1, next);
    drop(smtp);
    let mut maild = maild;
    maild.stop();
    check_store(data, &acked, &[], &[]);
    for name in range_files(data) {
        let (first, last) = name.trim_start_matches("mailbox.").split_once('-').unwrap();
        let path = data.join("backup").join(&name);
        let out = python("check_mbox.py", &["mbox", path.to_str().unwrap(), first, last]);
        assert!(out.contains("ok 32"), "{name}: {out}");
    }
}

/// The persist path refuses one message (`spec` is `error@1` or `full@1`): the client
/// gets `code`, nothing of it is stored, and the next messages get 1, 2, … Then the same
/// after a clean stop, after a SIGKILL right after the refusal, and with the refusal
/// hitting a group of concurrent messages.
fn persist_refuses(point: &str, spec: &str, code: &str) {
    // One message refused, then the sequence goes on in the same process.
    let tmp = data_dir();
    let data = tmp.path();
    let mut maild = start_with(data, &format!("{point}={spec}"));
    let mut smtp = Smtp::connect(&maild);
    let refused = body("refused", 0);
    match smtp.send(&refused) {
        Outcome::Refused(reply) => assert!(reply.starts_with(code), "expected {code}, got {reply}"),
        other => panic!("{point}={spec}: expected {code}, got {other:?}"),
    }
    // Nothing of it is in the store, even before anything else happens.
    assert_eq!(
        check_store(data, &BTreeMap::new(), &[], std::slice::from_ref(&refused)),
        0,
        "the refused message was stored"
    );
    let mut acked = BTreeMap::new();
    for n in 1..=3 {
        let message = body(point, n);
        smtp.send_acked(&message, n);
        acked.insert(n, message);
    }
    check_store(data, &acked, &[], std::slice::from_ref(&refused));
    drop(smtp);
    maild.stop();
    let maild = Maild::start_on(data, ARGS);
    assert_eq!(check_store(data, &acked, &[], std::slice::from_ref(&refused)), 3, "after a clean restart");
    Smtp::connect(&maild).send_acked(&body(point, 4), 4);
    drop(maild);

    // Refused, then the process ends before anything else. After a clean stop the refusal
    // must hold on disk; after SIGKILL at once (no final flush), whatever the failed batch
    // left on disk must have been taken back durably before the client got its refusal.
    for (end, sigkill) in [("a restart", false), ("kill -9", true)] {
        let tmp = data_dir();
        let data = tmp.path();
        let mut maild = start_with(data, &format!("{point}={spec}"));
        match Smtp::connect(&maild).send(&refused) {
            Outcome::Refused(reply) => assert!(reply.starts_with(code), "expected {code}, got {reply}"),
            other => panic!("{point}={spec}: expected {code}, got {other:?}"),
        }
        if sigkill {
            maild.sigkill_now();
        } else {
            maild.stop();
        }
        assert_eq!(
            check_store(data, &BTreeMap::new(), &[], std::slice::from_ref(&refused)),
            0,
            "a refused message reappeared after {end}"
        );
        let maild = Maild::start_on(data, ARGS);
        Smtp::connect(&maild).send_acked(&body(point, 1), 1);
        drop(maild);
    }

    // A group: eight sessions end their data at once, so the failing batch may hold
    // several messages. Every message of it is refused and absent; the others are
    // numbered 1, 2, … without a gap.
    let tmp = data_dir();
    let data = tmp.path();
    let maild = start_with(data, &format!("{point}={spec}"));
    let barrier = Arc::new(Barrier::new(8));
    let sessions: Vec<_> = (0..8u64)
        .map(|i| {
            let mut smtp = Smtp::connect(&maild);
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let message = body("group", i);
                assert!(smtp.start_data(&message));
                barrier.wait();
                (message, smtp.finish())
            })
        })
        .collect();
    let outcomes: Vec<(Vec<u8>, Outcome)> = sessions.into_iter().map(|t| t.join().unwrap()).collect();
    let mut acked = BTreeMap::new();
    let mut refused = Vec::new();
    for (message, outcome) in outcomes {
        match outcome {
            Outcome::Acked(n) => assert!(acked.insert(n, message).is_none(), "number {n} acknowledged twice"),
            Outcome::Refused(reply) => {
                assert!(reply.starts_with(code), "expected {code}, got {reply}");
                refused.push(message);
            }
            Outcome::Dropped => panic!("a session was dropped"),
        }
    }
    assert!(!refused.is_empty(), "{point}={spec} refused nothing");
    let count = acked.len() as u64;
    assert_eq!(
        acked.keys().copied().collect::<Vec<_>>(),
        (1..=count).collect::<Vec<_>>(),
        "acknowledged numbers have a gap"
    );
    println!("{point}={spec}: a group of 8 ended with {} refused, {count} acknowledged", refused.len());
    assert_eq!(check_store(data, &acked, &[], &refused), count);
    let next = body("group", 100);
    Smtp::connect(&maild).send_acked(&next, count + 1);
    acked.insert(count + 1, next);
    assert_eq!(check_store(data, &acked, &[], &refused), count + 1);
    let mut maild = maild;
    maild.stop();
    assert_eq!(check_store(data, &acked, &[], &refused), count + 1, "after a clean stop");
}

/// Runs every scenario of one failpoint, even after one fails, so a single run shows all
/// that is wrong; then fails naming the scenarios that did.
fn scenarios(list: &[(&str, &dyn Fn())]) {
    let failed: Vec<&str> = list
        .iter()
        .filter(|(_, scenario)| std::panic::catch_unwind(std::panic::AssertUnwindSafe(scenario)).is_err())
        .map(|(name, _)| *name)
        .collect();
    assert!(failed.is_empty(), "failed scenarios: {failed:?} (their panics are printed above)");
}

#[test]
fn persist_before_batch() {
    scenarios(&[
        ("crash@32", &|| crash_and_recover("persist.before_batch", 32, Some(false))),
        ("error@1", &|| persist_refuses("persist.before_batch", "error@1", "451 4.3.0")),
        ("full@1", &|| persist_refuses("persist.before_batch", "full@1", "452 4.3.1")),
    ]);
}

#[test]
fn persist_after_batch() {
    scenarios(&[
        ("crash@32", &|| crash_and_recover("persist.after_batch", 32, None)),
        ("error@1", &|| persist_refuses("persist.after_batch", "error@1", "451 4.3.0")),
        ("full@1", &|| persist_refuses("persist.after_batch", "full@1", "452 4.3.1")),
    ]);
}

#[test]
fn persist_after_flush() {
    scenarios(&[
        ("crash@32", &|| crash_and_recover("persist.after_flush", 32, Some(true))),
        ("error@1", &|| persist_refuses("persist.after_flush", "error@1", "451 4.3.0")),
        ("full@1", &|| persist_refuses("persist.after_flush", "full@1", "452 4.3.1")),
    ]);
}

/// Deliver fails once (`spec`): both messages are acknowledged, and both reach the
/// mailbox, at the latest after a restart.
fn deliver_fails_once(point: &str, spec: &str) {
    let tmp = data_dir();
    let data = tmp.path();
    let maild = start_with(data, &format!("{point}={spec}"));
    let mut smtp = Smtp::connect(&maild);
    let mut acked = BTreeMap::new();
    for n in 1..=3 {
        let message = body(point, n);
        smtp.send_acked(&message, n);
        acked.insert(n, message);
    }
    eventually("the failed delivery logged", || maild.log().contains("delivering messages"));
    // Later deliveries are the next signal: the mailbox catches up while running.
    eventually(&format!("{point}={spec}: every message in the mailbox while running"), || {
        export_entries(data, &["--user", USER]).len() == 3
    });
    let mut maild = maild;
    maild.stop();
    check_store(data, &acked, &[], &[]);
    let maild = Maild::start_on(data, ARGS);
    assert_eq!(uids(&maild), vec![1, 2, 3]);
    drop(maild);
}

/// A range is missed because of `spec` at `point`: the messages are acknowledged, and the
/// range file is written on the next signal (message 33) and is complete.
fn backup_fails_once(point: &str, spec: &str) {
    let tmp = data_dir();
    let data = tmp.path();
    let maild = start_with(data, &format!("{point}={spec}"));
    let mut smtp = Smtp::connect(&maild);
    let mut acked = BTreeMap::new();
    for n in 1..=32 {
        let message = body(point, n);
        smtp.send_acked(&message, n);
        acked.insert(n, message);
    }
    eventually("the failed backup logged", || maild.log().contains("writing backup range files"));
    let names = range_files(data);
    assert!(names.iter().all(|n| !n.starts_with('.')), "a failed range write left {names:?}");
    let message = body(point, 33);
    smtp.send_acked(&message, 33);
    acked.insert(33, message);
    ranges_complete(data, 33);
    let mut maild = maild;
    maild.stop();
    check_store(data, &acked, &[], &[]);
    let path = data.join("backup/mailbox.1-32");
    assert!(python("check_mbox.py", &["mbox", path.to_str().unwrap(), "1", "32"]).contains("ok 32"));
    let exported = mailtool(data, &["export", "--from", "1", "--to", "32"], None);
    assert_eq!(std::fs::read(&path).unwrap(), exported.stdout, "the range file is what export writes");
}

#[test]
fn deliver_before_batch() {
    scenarios(&[
        ("crash@32", &|| crash_and_recover("deliver.before_batch", 32, None)),
        ("error@1", &|| deliver_fails_once("deliver.before_batch", "error@1")),
        ("full@2", &|| deliver_fails_once("deliver.before_batch", "full@2")),
    ]);
}

#[test]
fn deliver_after_batch() {
    scenarios(&[
        ("crash@32", &|| crash_and_recover("deliver.after_batch", 32, None)),
        ("error@1", &|| deliver_fails_once("deliver.after_batch", "error@1")),
        ("full@2", &|| deliver_fails_once("deliver.after_batch", "full@2")),
    ]);
}

#[test]
fn backup_mid_write() {
    scenarios(&[
        ("crash@1", &|| crash_and_recover("backup.mid_write", 1, None)),
        ("error@1", &|| backup_fails_once("backup.mid_write", "error@1")),
        ("full@1", &|| backup_fails_once("backup.mid_write", "full@1")),
    ]);
}

#[test]
fn backup_before_rename() {
    scenarios(&[
        ("crash@1", &|| crash_and_recover("backup.before_rename", 1, None)),
        ("error@1", &|| backup_fails_once("backup.before_rename", "error@1")),
        ("full@1", &|| backup_fails_once("backup.before_rename", "full@1")),
    ]);
}

#[test]
fn backup_before_mark() {
    scenarios(&[
        ("crash@1", &|| crash_and_recover("backup.before_mark", 1, None)),
        ("error@1", &|| backup_fails_once("backup.before_mark", "error@1")),
        ("full@1", &|| backup_fails_once("backup.before_mark", "full@1")),
    ]);
}

#[test]
fn pop3_before_commit() {
    // crash@1: QUIT never gets its +OK, and after the restart nothing is deleted.
    let tmp = data_dir();
    let data = tmp.path();
    let mut maild = start_with(data, "pop3.before_commit=crash@1");
    let mut smtp = Smtp::connect(&maild);
    let mut acked = BTreeMap::new();
    for n in 1..=3 {
        let message = body("pop3", n);
        smtp.send_acked(&message, n);
        acked.insert(n, message);
    }
    drop(smtp);
    let mut pop = Pop3::login(&maild);
    pop.ok("DELE 1");
    pop.ok("DELE 3");
    assert_eq!(pop.cmd("QUIT"), None, "the crash comes before QUIT's reply");
    wait_for_crash(&mut maild, "pop3.before_commit");
    verify_ok(data);
    let maild = Maild::start_on(data, ARGS);
    assert_eq!(uids(&maild), vec![1, 2, 3], "a QUIT that crashed before its commit deletes nothing");
    check_store(data, &acked, &[], &[]);
    drop(maild);

    // error@1 / full@1: QUIT gets -ERR and nothing is deleted; the next QUIT works.
    for spec in ["error@1", "full@1"] {
        let tmp = data_dir();
        let data = tmp.path();
        let mut maild = start_with(data, &format!("pop3.before_commit={spec}"));
        let mut smtp = Smtp::connect(&maild);
        for n in 1..=3 {
            smtp.send_acked(&body("pop3", n), n);
        }
        drop(smtp);
        let mut pop = Pop3::login(&maild);
        pop.ok("DELE 1");
        pop.ok("DELE 2");
        let reply = pop.cmd("QUIT").expect("QUIT gets a reply");
        assert!(reply.starts_with("-ERR"), "{spec}: QUIT whose commit failed: {reply}");
        assert!(pop.c.line().is_none(), "the session ends after QUIT");
        assert_eq!(uids(&maild), vec![1, 2, 3], "{spec}: nothing deleted after -ERR");
        let mut pop = Pop3::login(&maild);
        pop.ok("DELE 2");
        pop.ok("QUIT");
        assert_eq!(uids(&maild), vec![1, 3]);
        maild.stop();
        let maild = Maild::start_on(data, ARGS);
        assert_eq!(uids(&maild), vec![1, 3], "{spec}: the second QUIT's deletion is durable");
        verify_ok(data);
        drop(maild);
    }
}

/// A store that hangs does not leave clients waiting, nor maild deaf to everything: the
/// watchdog answers `451 4.3.0` to the waiting client, logs why, and exits with status 75
/// (for a supervisor to restart it); the restart recovers a consistent store, and the
/// sequence goes on.
#[test]
fn a_hanging_store_answers_451_and_exits_for_a_restart() {
    let tmp = data_dir();
    let data = tmp.path();
    let args = [ARGS, &["--store-timeout", "2"]].concat();
    let mut maild = Maild::start_on_with_env(data, &args, &[("MAILD_FAILPOINTS", "persist.after_batch=hang@3")]);
    let mut acked = BTreeMap::new();
    let mut smtp = Smtp::connect(&maild);
    for i in 1..=2 {
        smtp.send_acked(&body("hang", i), i);
        acked.insert(i, body("hang", i));
    }
    let stuck = body("hang", 3);
    match smtp.send(&stuck) {
        Outcome::Refused(reply) => {
            assert!(reply.starts_with("451 4.3.0"), "the client waiting on a hung store: {reply}")
        }
        other => panic!("the client waiting on a hung store should get 451, got {other:?}\n{}", maild.log()),
    }
    let status = maild.wait();
    let log = maild.log();
    assert_eq!(status.code(), Some(75), "maild should exit 75 after giving up on the store:\n{log}");
    assert!(log.contains("failpoint persist.after_batch: hang"), "{log}");
    assert!(log.contains("has not finished") && log.contains("answered 451 to 1 waiting session"), "{log}");
    // Stopped: the store on disk is consistent; the refused message may be there (its
    // batch was written, not known durable) but only whole.
    verify_ok(data);
    let maild = Maild::start_on(data, ARGS);
    let head = check_store(data, &acked, std::slice::from_ref(&stuck), &[]);
    assert!(head == 2 || head == 3, "head {head}");
    let mut smtp = Smtp::connect(&maild);
    smtp.send_acked(&body("hang next", head + 1), head + 1);
}

/// Names every failpoint this file exercises, so a new one in engine::failpoint::ALL
/// without a test here fails loudly.
#[test]
fn every_failpoint_has_a_test() {
    let tested = [
        "persist.before_batch",
        "persist.after_batch",
        "persist.after_flush",
        "deliver.before_batch",
        "deliver.after_batch",
        "backup.mid_write",
        "backup.before_rename",
        "backup.before_mark",
        "pop3.before_commit",
    ];
    assert_eq!(engine::failpoint::ALL, tested);
}
