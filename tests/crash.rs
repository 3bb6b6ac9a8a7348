//! Crash recovery, proven by killing the real `maild` with SIGKILL at random moments,
//! and by cutting the power under it.
//!
//! Two runs share this harness:
//! - **SIGKILL** (`sigkill_at_random_moments_under_load_loses_nothing_acknowledged`): the
//!   process dies, the page cache keeps everything it wrote.
//! - **Power cut** (`power_cut_at_random_moments_under_load_loses_nothing_acknowledged`):
//!   the data directory lives on the `powercut` FUSE file system (`tests/powercut/`),
//!   which keeps every write pending until its file is fsync'd and every directory change
//!   until its directory is fsync'd. After the SIGKILL it drops everything pending, as a
//!   power cut does, and mounts what survived (a reboot). Messages are 1 KiB-ish with one
//!   in fifty of about 1.3 MiB (its body a file of its own, `store/bodies/N`) and one in
//!   thirteen of about 300 KiB (sled writes those, and tree nodes holding them, as
//!   separate blob files), and some go to a peer server's domain, through the durable
//!   outbound queue. Needs root and `/dev/fuse` (CI has both); elsewhere it says SKIPPED.
//!
//! One data directory lives through every cycle. A cycle:
//!
//! 1. Several SMTP clients send messages as fast as maild takes them. Each message holds a
//!    unique token and some awkward lines (dot lines, `From ` lines, bare LF, 8-bit, long
//!    lines). Each client records every `250 2.0.0 Ok: delivered message N` with the
//!    message it acknowledged, and the one message whose verdict it was still waiting
//!    for when the server vanished ("in flight").
//! 2. In some cycles a POP3 client also logs in as `p@d.test` again and again: it RETRs a
//!    message and checks it, DELEs some acknowledged messages, and then either QUITs
//!    (the deletions count once QUIT got `+OK`; all or none of them if the kill swallowed
//!    the reply) or just holds the session open until the kill (those DELEs must never be
//!    applied).
//! 3. At a moment drawn from a seeded PRNG, SIGKILL. Sometimes `mailtool verify` then
//!    checks the crashed store as it lies on disk, before any restart.
//! 4. maild restarts on the same directory, and the harness checks, through `mailtool`
//!    over the admin socket and through POP3:
//!    - `stats` head is at least every acknowledged number;
//!    - `export` holds every acknowledged message byte-exact under its number (`Number:`,
//!      `Return-Path:`, `Delivered-To:` in RCPT order, the trace, the message mboxrd-
//!      quoted); numbers are exactly `1..=head`, no gap, no repeat; a number no client
//!      was told about holds a whole in-flight message, never part of one and never a
//!      second copy; a number missing from the export must be a message that every
//!      mailbox let go of (collected) and its range file must still hold it;
//!    - each user's maildrop (POP3 `UIDL`, which is the number) is exactly what was
//!      delivered to them less what QUIT deleted;
//!    - every complete range file `backup/mailbox.A-B` exists and no temporary file is
//!      left, and `mailtool verify` (sequence, records, mailbox indexes, reference
//!      counts, range file contents) exits 0;
//!    - the next message gets `head + 1`.
//!
//! 5. With a peer: once the last cycle is checked, every acknowledged message for the
//!    peer's domain reaches the peer (at least once: a cut between the peer's `250` and
//!    the queue's durable removal may send one twice).
//!
//! The number of cycles comes from `CRASH_CYCLES` (default 20) and `POWERCUT_CYCLES`
//! (default 8); `CRASH_SEED` repeats a run's choices (timing cannot be repeated, so a
//! failure is reproduced by running again with its seed, often more than once). The soaks:
//!
//! ```text
//! CRASH_CYCLES=500 cargo test --release --all-features --test crash sigkill -- --nocapture
//! POWERCUT_CYCLES=200 cargo test --release --all-features --test crash power_cut -- --nocapture
//! ```
//!
//! `POWERCUT_EVIDENCE=DIR` keeps a copy of the store as each power cut left it (the last
//! two), so that a loss can be studied after sled's recovery has zeroed what it skipped.
//!
//! Every wait is bounded by `PATIENCE` but none asserts speed.

mod common;

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};
use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;

const ARGS: &[&str] = &["--domain", "d.test"];
/// Everyone mail goes to. `p@d.test` also deletes over POP3.
const USERS: [&str; 3] = ["a@d.test", "b@d.test", "p@d.test"];
const POP_USER: &str = "p@d.test";
/// A user of the peer server's domain (power-cut run only).
const PEER_USER: &str = "x@peer.test";
const SENDER: &str = "s@d.test";
const LOAD_CLIENTS: u64 = 4;
/// Messages per range file (CONTRACT §5).
const RANGE: u64 = 32;
/// Below this head every check exports the whole store; above it most cycles export the
/// recent part and every `FULL_EVERY`th cycle (and the last) the whole store.
const FULL_EXPORT_BELOW: u64 = 6000;
const FULL_EVERY: u64 = 10;

/// Kill moments and message shapes come from engine's SplitMix64; printing the seed makes
/// a run's choices repeatable.
type Rng = engine::rng::SplitMix64;

/// A message as a client sent it: the bytes maild must store (before dot-stuffing).
#[derive(Clone, Debug)]
struct Sent {
    token: String,
    rcpts: Vec<&'static str>,
    message: Vec<u8>,
}

/// What the model keeps of a message for the rest of the run: enough to recognise its
/// export entry exactly without holding every body in memory.
#[derive(Clone, Debug)]
struct Known {
    token: String,
    rcpts: Vec<&'static str>,
    /// Length and hash of the message as an mboxrd entry ends (quoted).
    quoted_len: usize,
    quoted_hash: u64,
}

impl Known {
    fn of(sent: &Sent) -> Known {
        let quoted = mboxrd(&sent.message);
        Known {
            token: sent.token.clone(),
            rcpts: sent.rcpts.clone(),
            quoted_len: quoted.len(),
            quoted_hash: hash(&quoted),
        }
    }
}

fn hash(bytes: &[u8]) -> u64 {
    let mut hasher = DefaultHasher::new();
    bytes.hash(&mut hasher);
    hasher.finish()
}

/// mboxrd quoting (CONTRACT §5): every line matching `>*From ` gets one more `>`. Lines
/// end at LF, so a bare LF starts a line too, as in the server's writer.
fn mboxrd(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + 16);
    for line in message.split_inclusive(|&b| b == b'\n') {
        let quotes = line.iter().take_while(|&&b| b == b'>').count();
        if line[quotes..].starts_with(b"From ") {
            out.push(b'>');
        }
        out.extend_from_slice(line);
    }
    out
}

/// Everything the store must hold, built from what clients were told.
#[derive(Default)]
struct Model {
    /// Every number known to be taken, with its message.
    messages: BTreeMap<u64, Known>,
    /// Numbers removed from p@d.test's maildrop by a QUIT.
    deleted: BTreeSet<u64>,
    /// The head after the last check.
    head: u64,
}

impl Model {
    /// Whether message `number` may have left the store: no mailbox holds it any more,
    /// because its only local recipient is the POP3 user, who deleted it. (A copy for the
    /// peer holds it only until the peer's `250`.)
    fn collectable(&self, number: u64, known: &Known) -> bool {
        let local: Vec<&str> = known.rcpts.iter().copied().filter(|r| *r != PEER_USER).collect();
        local == [POP_USER] && self.deleted.contains(&number)
    }

    /// The maildrop `user` must have.
    fn maildrop(&self, user: &str) -> Vec<u64> {
        self.messages
            .iter()
            .filter(|(n, m)| m.rcpts.contains(&user) && !(user == POP_USER && self.deleted.contains(n)))
            .map(|(n, _)| *n)
            .collect()
    }
}

/// A line client that takes the server vanishing (SIGKILL) as the end, not as an error.
struct Conn {
    reader: BufReader<TcpStream>,
    stream: TcpStream,
}

impl Conn {
    fn connect(address: SocketAddr) -> Option<Conn> {
        let stream = TcpStream::connect(address).ok()?;
        stream.set_read_timeout(Some(PATIENCE)).ok()?;
        Some(Conn { reader: BufReader::new(stream.try_clone().ok()?), stream })
    }

    fn send(&mut self, bytes: &[u8]) -> Option<()> {
        self.stream.write_all(bytes).ok()
    }

    fn raw_line(&mut self) -> Option<Vec<u8>> {
        let mut line = Vec::new();
        match self.reader.read_until(b'\n', &mut line) {
            Ok(0) => None,
            Ok(_) => Some(line),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                panic!("maild did not answer within {PATIENCE:?} (hung?)")
            }
            Err(_) => None,
        }
    }

    fn line(&mut self) -> Option<String> {
        let line = self.raw_line()?;
        Some(String::from_utf8_lossy(&line).trim_end_matches(['\r', '\n']).to_string())
    }

    /// One SMTP reply (its last line).
    fn reply(&mut self) -> Option<String> {
        loop {
            let line = self.line()?;
            if line.as_bytes().get(3) != Some(&b'-') {
                return Some(line);
            }
        }
    }

    /// A POP3 multi-line body, dot-stuffing undone; None if the server vanished.
    fn multi(&mut self) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        loop {
            let line = self.raw_line()?;
            if line == b".\r\n" {
                return Some(out);
            }
            out.extend_from_slice(line.strip_prefix(b".").unwrap_or(&line));
        }
    }
}

/// What the messages of a run look like.
#[derive(Clone, Copy, Default)]
struct Shape {
    /// One message in fifty is about 1.3 MiB (a body file), one in thirteen 300 KiB.
    big: bool,
    /// Some messages also go to [`PEER_USER`].
    peer: bool,
}

/// A message with a unique token and a random selection of lines that have broken mail
/// stores before.
fn make_message(rng: &mut Rng, token: &str, shape: Shape) -> Vec<u8> {
    let mut m =
        format!("Subject: crash {token}\r\nFrom: {SENDER}\r\nMessage-ID: <{token}@crash.test>\r\n\r\n{token}\r\n")
            .into_bytes();
    for _ in 0..rng.below(6) {
        match rng.below(9) {
            0 => m.extend_from_slice(b".\r\n"),
            1 => m.extend_from_slice(b"..two dots\r\n"),
            2 => m.extend_from_slice(b"From the mboxrd point of view\r\n"),
            3 => m.extend_from_slice(b">>From quoted already\r\n"),
            4 => m.extend_from_slice(b"bare\nFrom after a bare LF\r\n"),
            5 => m.extend_from_slice(b"8bit \xc3\xa9\xff\x80\r\n"),
            6 => m.extend_from_slice(b"\r\n"),
            7 => {
                let n = rng.below(900) as usize;
                m.extend(std::iter::repeat_n(b'x', n));
                m.extend_from_slice(b"\r\n");
            }
            _ => {
                // Now and then a bigger message: several KB of 76-column lines.
                if rng.chance(30) {
                    for _ in 0..rng.below(100) {
                        m.extend(std::iter::repeat_n(b'y', 76));
                        m.extend_from_slice(b"\r\n");
                    }
                }
            }
        }
    }
    if shape.big && rng.chance(2) {
        // About 1.3 MiB: over maild's spill threshold, so the body is a file of its own
        // (`store/bodies.rs`), synced and named before its record's journal frame.
        for line in 0..17_000 {
            m.extend_from_slice(format!("{line:06} {token} ").as_bytes());
            m.extend(std::iter::repeat_n(b'z', 60));
            m.extend_from_slice(b"\r\n");
        }
    } else if shape.big && rng.chance(8) {
        // About 300 KiB: over sled's blob threshold (a quarter of a 512 KiB segment).
        for line in 0..3950 {
            m.extend_from_slice(format!("{line:06} {token} ").as_bytes());
            m.extend(std::iter::repeat_n(b'z', 60));
            m.extend_from_slice(b"\r\n");
        }
    }
    m.extend_from_slice(format!("end {token}\r\n").as_bytes());
    m
}

/// One to three distinct local recipients in a random RCPT order, and sometimes the
/// peer's user among them.
fn pick_rcpts(rng: &mut Rng, shape: Shape) -> Vec<&'static str> {
    let mut users = USERS.to_vec();
    for i in (1..users.len()).rev() {
        users.swap(i, rng.below(i as u64 + 1) as usize);
    }
    users.truncate(1 + rng.below(3) as usize);
    if shape.peer && rng.chance(30) {
        let at = rng.below(users.len() as u64 + 1) as usize;
        users.insert(at, PEER_USER);
    }
    users
}

/// What every thread of a cycle shares.
#[derive(Default)]
struct Shared {
    /// Messages for p@d.test acknowledged in this cycle (the POP3 client may delete
    /// these, and checks RETR against them).
    for_pop: Mutex<BTreeMap<u64, Vec<u8>>>,
}

#[derive(Default)]
struct LoadResult {
    acked: Vec<(u64, Sent)>,
    /// Data sent (or being sent), no verdict: may be stored (whole) or not.
    in_flight: Option<Sent>,
}

/// One SMTP load client: sends until the server vanishes.
fn load_client(address: SocketAddr, tag: String, mut rng: Rng, shared: Arc<Shared>, shape: Shape) -> LoadResult {
    let mut result = LoadResult::default();
    let Some(mut c) = Conn::connect(address) else { return result };
    match c.reply() {
        Some(greeting) => assert!(greeting.starts_with("220"), "greeting: {greeting}"),
        None => return result,
    }
    if c.send(b"EHLO load.test\r\n").is_none() {
        return result;
    }
    match c.reply() {
        Some(reply) => assert!(reply.starts_with("250"), "EHLO: {reply}"),
        None => return result,
    }
    for i in 0.. {
        let token = format!("{tag}-{i}");
        let rcpts = pick_rcpts(&mut rng, shape);
        let message = make_message(&mut rng, &token, shape);
        // MAIL, RCPT… and DATA in one packet (PIPELINING), then the data after the 354.
        let mut envelope = format!("MAIL FROM:<{SENDER}>\r\n");
        for rcpt in &rcpts {
            envelope.push_str(&format!("RCPT TO:<{rcpt}>\r\n"));
        }
        envelope.push_str("DATA\r\n");
        if c.send(envelope.as_bytes()).is_none() {
            return result;
        }
        for expected in std::iter::repeat_n("250", rcpts.len() + 1).chain(["354"]) {
            match c.reply() {
                Some(reply) => assert!(reply.starts_with(expected), "{token}: expected {expected}, got {reply:?}"),
                None => return result,
            }
        }
        let mut data = dot_stuff(&message);
        data.extend_from_slice(b".\r\n");
        let sent = Sent { token, rcpts, message };
        result.in_flight = Some(sent.clone());
        if c.send(&data).is_none() {
            return result;
        }
        let Some(verdict) = c.reply() else { return result };
        let Some(number) = message_number(&verdict) else {
            panic!("{}: expected a 250 with its number, got {verdict:?}", sent.token)
        };
        result.in_flight = None;
        if sent.rcpts.contains(&POP_USER) {
            shared.for_pop.lock().unwrap().insert(number, sent.message.clone());
        }
        result.acked.push((number, sent));
    }
    unreachable!()
}

#[derive(Default)]
struct PopResult {
    sessions: u64,
    retrieved: u64,
    /// Deleted by a QUIT that got +OK.
    deleted: BTreeSet<u64>,
    /// Marked by a QUIT whose reply the kill swallowed: all of them applied, or none.
    unanswered: Option<BTreeSet<u64>>,
    /// Marked with DELE (+OK) in a session that never reached QUIT: none may be applied.
    held: BTreeSet<u64>,
}

/// POP3 sessions as p@d.test until the server vanishes. With `at_quit`, it never holds a
/// session and tells the main thread just before each QUIT that deletes something, so
/// the kill can land on the commit.
fn pop_client(
    address: SocketAddr,
    mut rng: Rng,
    previous_head: u64,
    shared: Arc<Shared>,
    at_quit: Option<Sender<()>>,
) -> PopResult {
    let mut result = PopResult::default();
    loop {
        std::thread::sleep(Duration::from_millis(rng.below(120)));
        let Some(mut c) = Conn::connect(address) else { return result };
        macro_rules! reply {
            ($command:expr) => {{
                if c.send(format!("{}\r\n", $command).as_bytes()).is_none() {
                    return result;
                }
                match c.line() {
                    Some(line) => line,
                    None => return result,
                }
            }};
        }
        match c.line() {
            Some(greeting) => assert!(greeting.starts_with("+OK"), "{greeting}"),
            None => return result,
        }
        let user = reply!(format!("USER {POP_USER}"));
        assert!(user.starts_with("+OK"), "USER: {user}");
        let pass = reply!(format!("PASS pw-{POP_USER}"));
        if pass.starts_with("-ERR [IN-USE]") {
            // The previous session's lock is released just after its QUIT; try again.
            continue;
        }
        assert!(pass.starts_with("+OK"), "PASS: {pass}");
        result.sessions += 1;
        let uidl = reply!("UIDL");
        assert!(uidl.starts_with("+OK"), "UIDL: {uidl}");
        let Some(listing) = c.multi() else { return result };
        let maildrop: Vec<(u64, u64)> = String::from_utf8(listing)
            .unwrap()
            .lines()
            .map(|l| {
                let (index, uid) = l.split_once(' ').unwrap();
                (index.parse().unwrap(), uid.parse().unwrap())
            })
            .collect();
        let fresh = shared.for_pop.lock().unwrap().clone();
        // RETR one message of this cycle and compare it with what was sent.
        let retrievable: Vec<&(u64, u64)> = maildrop.iter().filter(|(_, uid)| fresh.contains_key(uid)).collect();
        if !retrievable.is_empty() {
            let (index, uid) = *retrievable[rng.below(retrievable.len() as u64) as usize];
            let retr = reply!(format!("RETR {index}"));
            assert!(retr.starts_with("+OK"), "RETR {index}: {retr}");
            let Some(bytes) = c.multi() else { return result };
            assert!(bytes.starts_with(format!("Return-Path: <{SENDER}>\r\nReceived: ").as_bytes()), "RETR of {uid}");
            assert!(bytes.ends_with(&fresh[&uid]), "RETR of message {uid} differs from what was sent");
            result.retrieved += 1;
        }
        // Only acknowledged messages are deleted (an old number, or one acknowledged in
        // this cycle), so the model knows each one it is told is gone.
        let mut deletable: Vec<(u64, u64)> =
            maildrop.iter().copied().filter(|(_, uid)| *uid <= previous_head || fresh.contains_key(uid)).collect();
        let mut marked = BTreeSet::new();
        if !deletable.is_empty() {
            let count = 1 + rng.below(deletable.len().min(16) as u64);
            for _ in 0..count {
                let (index, uid) = deletable.swap_remove(rng.below(deletable.len() as u64) as usize);
                let dele = reply!(format!("DELE {index}"));
                assert!(dele.starts_with("+OK"), "DELE {index}: {dele}");
                marked.insert(uid);
                result.held = marked.clone();
            }
        }
        if at_quit.is_none() && rng.chance(25) {
            // Hold the session, DELEs marked, until the kill ends it.
            result.held = marked;
            while c.line().is_some() {}
            return result;
        }
        result.held.clear();
        if let (Some(signal), false) = (&at_quit, marked.is_empty()) {
            let _ = signal.send(());
        }
        if c.send(b"QUIT\r\n").is_none() {
            result.unanswered = Some(marked);
            return result;
        }
        match c.line() {
            Some(reply) if reply.starts_with("+OK") => result.deleted.extend(marked),
            Some(reply) => panic!("QUIT: {reply}"),
            None => {
                result.unanswered = Some(marked);
                return result;
            }
        }
    }
}

/// The figures of one cycle, for its summary line.
#[derive(Default)]
struct Figures {
    acked: u64,
    /// Of those, messages over 1 MiB: their bodies are files of their own in the store.
    acked_large: u64,
    in_flight: u64,
    found: u64,
    pop_sessions: u64,
    retrieved: u64,
    deleted: u64,
    unanswered: String,
    /// A QUIT the kill cut off that deleted something: were its deletions applied?
    cut_off_applied: Option<bool>,
    held: u64,
    collected_checked: u64,
    ranges: u64,
    full: bool,
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

fn verify_ok(data: &Path, when: &str) {
    let out = mailtool(data, &["verify"], None);
    assert!(
        out.status.success() && out.stdout_text().contains("faults: 0"),
        "verify {when} failed:\n{}{}",
        out.stdout_text(),
        out.stderr
    );
}

/// Checks one export entry against the model's record of it.
fn check_entry(number: u64, entry: &[u8], known: &Known) {
    let mut head = format!("Number: {number}\r\nReturn-Path: <{SENDER}>\r\n");
    for rcpt in &known.rcpts {
        head.push_str(&format!("Delivered-To: {rcpt}\r\n"));
    }
    let show = || String::from_utf8_lossy(&entry[..entry.len().min(600)]).into_owned();
    assert!(
        entry.starts_with(format!("{head}Received: ").as_bytes()),
        "message {number} ({}): wrong entry head:\n{}",
        known.token,
        show()
    );
    assert!(
        entry.len() >= head.len() + known.quoted_len,
        "message {number} ({}) is shorter than sent:\n{}",
        known.token,
        show()
    );
    let tail = &entry[entry.len() - known.quoted_len..];
    assert_eq!(
        hash(tail),
        known.quoted_hash,
        "message {number} ({}) differs from what was sent:\n{}",
        known.token,
        show()
    );
    // Between the added lines and the message: the trace header and nothing else.
    let trace = &entry[head.len()..entry.len() - known.quoted_len];
    assert!(
        trace.ends_with(b"\r\n") && !contains(trace, b"\r\n\r\n"),
        "message {number}: odd trace {:?}",
        String::from_utf8_lossy(trace)
    );
}

/// The token of an export entry (from its `Subject: crash TOKEN` line).
fn entry_token(entry: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(entry);
    let start = text.find("\r\nSubject: crash ")? + "\r\nSubject: crash ".len();
    Some(text[start..].split("\r\n").next()?.to_string())
}

fn range_name(number: u64) -> String {
    let first = (number - 1) / RANGE * RANGE + 1;
    format!("mailbox.{first}-{}", first + RANGE - 1)
}

fn backup_names(data: &Path) -> Vec<String> {
    std::fs::read_dir(data.join("backup"))
        .map(|d| d.filter_map(|e| e.ok()?.file_name().into_string().ok()).collect())
        .unwrap_or_default()
}

/// A maildrop by POP3 UIDL (the numbers, oldest first), in a session that deletes nothing.
fn uidl(maild: &Maild, user: &str) -> Vec<u64> {
    let mut c = Client::connect(maild.pop3);
    assert!(c.line().unwrap().starts_with("+OK"));
    for command in [format!("USER {user}"), format!("PASS pw-{user}"), "UIDL".to_string()] {
        c.cmd(&command);
        let reply = c.line().expect("POP3 closed");
        assert!(reply.starts_with("+OK"), "{command}: {reply}");
    }
    let mut uids = Vec::new();
    loop {
        let line = c.line().expect("POP3 closed in UIDL");
        if line == "." {
            break;
        }
        uids.push(line.split_whitespace().nth(1).unwrap().parse().unwrap());
    }
    c.cmd("QUIT");
    assert!(c.line().unwrap().starts_with("+OK"));
    uids
}

/// Everything after a restart (see the module doc). Updates the model and returns the
/// cycle's figures.
fn check_after_restart(
    maild: &Maild,
    model: &mut Model,
    loads: Vec<LoadResult>,
    pop: PopResult,
    full: bool,
    figures: &mut Figures,
) {
    let data = maild.data.as_path();
    let previous_head = model.head;

    // What the clients were told.
    let mut in_flight: Vec<Sent> = Vec::new();
    for load in loads {
        for (number, sent) in load.acked {
            figures.acked_large += u64::from(sent.message.len() > 1 << 20);
            assert!(
                number > previous_head,
                "number {number} acknowledged again ({}); it was taken before this cycle",
                sent.token
            );
            assert!(
                model.messages.insert(number, Known::of(&sent)).is_none(),
                "number {number} acknowledged twice in one cycle"
            );
            figures.acked += 1;
        }
        in_flight.extend(load.in_flight);
    }
    figures.in_flight = in_flight.len() as u64;
    let head = stats_head(data);
    let highest = model.messages.keys().next_back().copied().unwrap_or(0);
    assert!(
        head >= highest,
        "head {head} after a restart, but message {highest} was acknowledged: acknowledged messages lost"
    );
    assert!(head >= previous_head, "head went back from {previous_head} to {head}");

    // POP3 deletions: QUIT +OK applied; an unanswered QUIT all or nothing; held DELEs not.
    let drop_p = uidl(maild, POP_USER);
    let in_drop: BTreeSet<u64> = drop_p.iter().copied().collect();
    for number in &pop.deleted {
        assert!(
            !in_drop.contains(number),
            "message {number} was deleted by a QUIT that got +OK, but it is back in {POP_USER}'s maildrop"
        );
    }
    model.deleted.extend(&pop.deleted);
    figures.deleted = pop.deleted.len() as u64;
    if let Some(marked) = pop.unanswered {
        let gone = marked.iter().filter(|n| !in_drop.contains(n)).count();
        assert!(
            gone == 0 || gone == marked.len(),
            "a QUIT cut off by the kill was half applied: {gone} of {marked:?} gone"
        );
        figures.unanswered = format!(
            ", unanswered QUIT {} {}",
            marked.len(),
            if gone == 0 || marked.is_empty() { "not applied" } else { "applied" }
        );
        if !marked.is_empty() {
            figures.cut_off_applied = Some(gone > 0);
        }
        if gone > 0 {
            model.deleted.extend(marked);
        }
    }
    for number in &pop.held {
        assert!(
            in_drop.contains(number),
            "message {number} was DELEd in a session that never QUIT, but it is gone from {POP_USER}'s maildrop"
        );
    }
    figures.held = pop.held.len() as u64;
    (figures.pop_sessions, figures.retrieved) = (pop.sessions, pop.retrieved);

    // The store, by export: 1..=head, every message whole and where it belongs.
    let from = if full { 1 } else { previous_head.saturating_sub(RANGE) + 1 };
    let entries = export_entries(data, &["--from", &from.to_string()]);
    let mut present: BTreeMap<u64, &[u8]> = BTreeMap::new();
    for entry in &entries {
        let number = entry_number(entry);
        assert!((from..=head).contains(&number), "export holds message {number}, outside {from}..={head}");
        assert!(present.insert(number, entry).is_none(), "number {number} exported twice");
    }
    let mut ranges_read: BTreeMap<String, Vec<Vec<u8>>> = BTreeMap::new();
    for number in from..=head {
        match (present.get(&number), model.messages.get(&number)) {
            (Some(entry), Some(known)) => check_entry(number, entry, known),
            (Some(entry), None) => {
                // Never acknowledged: it must be a whole in-flight message of this cycle.
                assert!(number > previous_head, "message {number} appeared among numbers checked before");
                let token = entry_token(entry).unwrap_or_default();
                let Some(at) = in_flight.iter().position(|s| s.token == token) else {
                    panic!(
                        "message {number} is neither acknowledged nor in flight (token {token:?}):\n{}",
                        String::from_utf8_lossy(entry)
                    )
                };
                let sent = in_flight.swap_remove(at);
                let known = Known::of(&sent);
                check_entry(number, entry, &known);
                model.messages.insert(number, known);
                figures.found += 1;
            }
            (None, Some(known)) => {
                // Only a message no mailbox holds any more may leave the store, and its
                // range file keeps it.
                assert!(
                    model.collectable(number, known),
                    "message {number} ({}, to {:?}) is missing from the store (sequence 1..={head} has a gap)",
                    known.token,
                    known.rcpts
                );
                let name = range_name(number);
                let range = ranges_read.entry(name.clone()).or_insert_with(|| {
                    let bytes = std::fs::read(data.join("backup").join(&name))
                        .unwrap_or_else(|e| panic!("message {number} was collected but its range file {name}: {e}"));
                    split_mbox(&bytes)
                });
                let entry = range
                    .iter()
                    .find(|e| entry_number(e) == number)
                    .unwrap_or_else(|| panic!("{name} lacks message {number}"));
                check_entry(number, entry, known);
                figures.collected_checked += 1;
            }
            (None, None) => panic!("message {number} is missing (sequence 1..={head} has a gap)"),
        }
    }
    assert!(model.messages.range(head + 1..).next().is_none(), "messages beyond the head {head}");

    // Every maildrop, by POP3.
    assert_eq!(drop_p, model.maildrop(POP_USER), "{POP_USER}'s maildrop");
    for user in USERS.iter().filter(|u| **u != POP_USER) {
        assert_eq!(uidl(maild, user), model.maildrop(user), "{user}'s maildrop");
    }

    // Range files: the start-up catches up on any the crash missed; nothing half-written
    // stays. Then verify, which also compares every range file with the store.
    let want: BTreeSet<String> = (1..=head / RANGE).map(|k| range_name(k * RANGE)).collect();
    eventually(&format!("range files up to {head}"), || {
        let names: BTreeSet<String> = backup_names(data).into_iter().collect();
        want.is_subset(&names)
    });
    let names = backup_names(data);
    assert!(
        names.iter().all(|n| want.contains(n)),
        "unexpected files in backup/: {:?}",
        names.iter().filter(|n| !want.contains(*n)).collect::<Vec<_>>()
    );
    figures.ranges = want.len() as u64;
    verify_ok(data, "after the restart");

    // The next message continues the sequence.
    let mut c = maild.smtp_client();
    assert!(c.reply().starts_with("220"));
    c.expect("EHLO probe.test", "250");
    let token = format!("probe-{}", head + 1);
    let sent = Sent {
        rcpts: USERS.to_vec(),
        message: format!("Subject: crash {token}\r\n\r\n{token}\r\n").into_bytes(),
        token,
    };
    let number = c.send_message(SENDER, &sent.rcpts, &sent.message);
    assert_eq!(number, head + 1, "the first message after a restart must get head + 1");
    c.expect("QUIT", "221");
    model.messages.insert(number, Known::of(&sent));
    model.head = number;
    figures.full = full;
}

/// Keeps the data directory when the test fails, and says where it is. A data directory
/// on the power-cut file system (gone with the mount) is copied out first.
struct KeepOnFailure {
    tmp: Option<tempfile::TempDir>,
    on_mount: Option<std::path::PathBuf>,
}

impl Drop for KeepOnFailure {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let Some(dir) = self.tmp.take() else { return };
        let kept = dir.keep();
        if let Some(data) = &self.on_mount {
            let _ = std::process::Command::new("cp").arg("-a").arg(data).arg(&kept).status();
        }
        eprintln!("crash: data directory kept for inspection: {}", kept.display());
    }
}

/// On failure, says which seed and cycle, with the end of maild's log.
struct FailureContext {
    seed: u64,
    cycle: u64,
    log: Option<Arc<Mutex<String>>>,
}

impl Drop for FailureContext {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.log.as_ref().map(|l| l.lock().map(|l| l.clone()).unwrap_or_default()).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(40).collect::<Vec<_>>().into_iter().rev().collect();
            // The store's recovery at start (logged in power-cut runs) comes first in the log.
            let recovery: Vec<&str> = log.lines().filter(|l| l.contains(" sled::")).take(60).collect();
            eprintln!(
                "crash: FAILED in cycle {} (CRASH_SEED={})\nsled's recovery at the last start:\n{}\nlast lines of maild's log:\n{}",
                self.cycle,
                self.seed,
                recovery.join("\n"),
                tail.join("\n")
            );
        }
    }
}

/// One run of the harness: how maild dies, and what the load looks like.
struct Scenario {
    /// `crash` or `powercut`, for the log lines.
    name: &'static str,
    cycles: u64,
    /// The power-cut file system the data directory lives on; `None`: SIGKILL only.
    power: Option<powercut::Mount>,
    shape: Shape,
}

impl Scenario {
    fn cycles(variable: &str, default: u64) -> u64 {
        std::env::var(variable).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
    }

    /// Starts maild. After a power cut its log also says how sled's recovery found the log's
    /// end (segments, tears, dangling blobs), for the failure report.
    fn start(&self, data: &Path, args: &[&str]) -> Maild {
        let recovery_log = "info,sled::pagecache::snapshot=debug,sled::pagecache::iterator=debug";
        match self.power {
            None => Maild::start_on(data, args),
            Some(_) => Maild::start_on_with_env(data, args, &[("RUST_LOG", recovery_log)]),
        }
    }

    /// With `POWERCUT_EVIDENCE=DIR`, copies the store as the cut left it, before maild
    /// recovers it, to `DIR/cycle-N-a` (`-b` after a second kill), keeping the last two:
    /// sled's recovery zeroes the log past where it stops, so a loss destroys its own
    /// evidence unless a copy was taken first.
    fn keep_evidence(&self, data: &Path, cycle: u64, tag: &str) {
        let Some(dir) = std::env::var_os("POWERCUT_EVIDENCE").filter(|_| self.power.is_some()) else { return };
        let dir = PathBuf::from(dir);
        let target = dir.join(format!("cycle-{cycle}-{tag}"));
        copy_tree(&data.join("store"), &target).expect("copying the store as evidence");
        let mut kept: Vec<PathBuf> = std::fs::read_dir(&dir)
            .expect("the evidence directory")
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|path| path.file_name().is_some_and(|n| n.to_string_lossy().starts_with("cycle-")))
            .collect();
        kept.sort_by_key(|path| std::fs::metadata(path).and_then(|m| m.modified()).ok());
        for old in kept.iter().rev().skip(2) {
            let _ = std::fs::remove_dir_all(old);
        }
    }

    /// After the SIGKILL: in a power-cut run, everything not fsync'd is dropped.
    fn cut(&mut self) -> String {
        match &mut self.power {
            None => String::new(),
            Some(mount) => {
                let report = mount.power_cut().expect("power cut");
                format!(
                    " + power cut (dropped {} unsynced bytes, {} directory changes, {} files reverted)",
                    report.dropped_bytes, report.dropped_entries, report.files_reverted
                )
            }
        }
    }
}

#[test]
fn sigkill_at_random_moments_under_load_loses_nothing_acknowledged() {
    // CRASH_BIG=1 adds the power-cut run's 1.3 MiB and 300 KiB messages (body files, sled
    // blob files) to the kill -9 run.
    let big = std::env::var("CRASH_BIG").is_ok_and(|v| v == "1");
    run(Scenario {
        name: "crash",
        cycles: Scenario::cycles("CRASH_CYCLES", 20),
        power: None,
        shape: Shape { big, peer: false },
    });
}

#[test]
fn power_cut_at_random_moments_under_load_loses_nothing_acknowledged() {
    if !powercut::available() {
        println!("SKIPPED: the power-cut file system needs root and /dev/fuse");
        return;
    }
    let mountpoint = new_data_dir();
    let mount = powercut::Mount::new(mountpoint.path()).expect("mount the power-cut file system");
    run(Scenario {
        name: "powercut",
        cycles: Scenario::cycles("POWERCUT_CYCLES", 8),
        power: Some(mount),
        // POWERCUT_BIG=0 leaves out the large messages (to tell blob and body files apart from the
        // rest when a run fails).
        shape: Shape { big: std::env::var("POWERCUT_BIG").map_or(true, |v| v != "0"), peer: true },
    });
    drop(mountpoint);
}

fn run(mut scenario: Scenario) {
    let (name, cycles, shape) = (scenario.name, scenario.cycles, scenario.shape);
    let seed: u64 = std::env::var("CRASH_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or_else(|| {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        now.as_secs() ^ (u64::from(now.subsec_nanos()) << 20) ^ (u64::from(std::process::id()) << 44)
    });
    println!("{name}: seed {seed} (CRASH_SEED={seed} repeats the choices), {cycles} cycles");
    let mut rng = Rng::new(seed);
    let tmp = new_data_dir();
    // On the power-cut file system the data directory is inside the mount (kept only as
    // long as the mount is); otherwise a temporary directory kept on failure.
    let data = match &scenario.power {
        Some(mount) => mount.path().join("data"),
        None => tmp.path().to_path_buf(),
    };
    add_users(&data, &USERS);
    let _keep = KeepOnFailure { tmp: Some(tmp), on_mount: scenario.power.is_some().then(|| data.clone()) };
    let mut context = FailureContext { seed, cycle: 0, log: None };
    // The peer: a second maild on an ordinary directory, owning peer.test.
    let peer = shape.peer.then(|| {
        let peer = maild_with_users(&[PEER_USER], &["--domain", "peer.test"]);
        let route = format!("peer.test={}", peer.smtp);
        (peer, route)
    });
    let mut args: Vec<&str> = ARGS.to_vec();
    if let Some((_, route)) = &peer {
        args.extend(["--peer", route.as_str(), "--retry-min", "1s", "--retry-max", "2s"]);
    }
    let args = args.as_slice();

    let started = Instant::now();
    let mut model = Model::default();
    let (mut kills, mut acked, mut found, mut deleted, mut held, mut collected, mut offline) =
        (0u64, 0u64, 0u64, 0u64, 0u64, 0u64, 0u64);
    let mut acked_large = 0u64;
    let (mut cut_off_applied, mut cut_off_kept) = (0u64, 0u64);
    let mut maild = scenario.start(&data, args);
    for cycle in 1..=cycles {
        let cycle_started = Instant::now();
        context.cycle = cycle;
        context.log = Some(maild.log.clone());
        let shared = Arc::new(Shared::default());
        let loads: Vec<_> = (0..LOAD_CLIENTS)
            .map(|client| {
                let (address, rng, shared) = (maild.smtp, rng.fork(), shared.clone());
                let tag = format!("{seed:x}-c{cycle}-l{client}");
                std::thread::spawn(move || load_client(address, tag, rng, shared, shape))
            })
            .collect();
        let with_pop = rng.chance(60);
        // In some POP3 cycles the kill aims at a QUIT's commit.
        let (quit_signal, quit_sent) = channel();
        let at_quit = with_pop && rng.chance(30);
        let pop = with_pop.then(|| {
            let (address, rng, shared, head) = (maild.pop3, rng.fork(), shared.clone(), model.head);
            let signal = at_quit.then_some(quit_signal);
            std::thread::spawn(move || pop_client(address, rng, head, shared, signal))
        });

        // The kill: mostly under full load, sometimes almost at once, sometimes late.
        let delay = match rng.below(100) {
            0..15 => rng.below(30),
            15..85 => 30 + rng.below(400),
            _ => 430 + rng.below(900),
        };
        let moment = if at_quit {
            // Within a couple of milliseconds of a QUIT (or, if none comes, later).
            let jitter = Duration::from_micros(rng.below(1500));
            match quit_sent.recv_timeout(Duration::from_millis(delay + 2000)) {
                Ok(()) => {
                    std::thread::sleep(jitter);
                    format!("{} us after a QUIT", jitter.as_micros())
                }
                Err(_) => "without a QUIT".to_string(),
            }
        } else {
            std::thread::sleep(Duration::from_millis(delay));
            format!("after {delay} ms")
        };
        maild.sigkill_now();
        kills += 1;
        let cut = scenario.cut();
        let loads: Vec<LoadResult> = loads.into_iter().map(|t| t.join().expect("a load client failed")).collect();
        let pop = pop.map(|t| t.join().expect("the POP3 client failed")).unwrap_or_default();

        // Sometimes look at the store as the crash left it, before maild touches it again.
        let looked = rng.chance(25);
        if looked {
            verify_ok(&data, "on the crashed store, before the restart");
            let highest = loads.iter().flat_map(|l| l.acked.iter().map(|(n, _)| *n)).max().unwrap_or(0);
            let head = stats_head(&data);
            assert!(head >= highest, "the crashed store's head is {head}, but message {highest} was acknowledged");
            offline += 1;
        }

        scenario.keep_evidence(&data, cycle, "a");
        maild = scenario.start(&data, args);
        // Sometimes a second kill right after the restart, while start-up work (range
        // files the crash missed, collection) may still be running.
        let twice = rng.chance(10);
        if twice {
            std::thread::sleep(Duration::from_millis(rng.below(40)));
            maild.sigkill_now();
            kills += 1;
            scenario.cut();
            scenario.keep_evidence(&data, cycle, "b");
            maild = scenario.start(&data, args);
        }
        context.log = Some(maild.log.clone());
        let full = model.head < FULL_EXPORT_BELOW || cycle % FULL_EVERY == 0 || cycle == cycles;
        let mut figures = Figures::default();
        check_after_restart(&maild, &mut model, loads, pop, full, &mut figures);
        acked += figures.acked;
        acked_large += figures.acked_large;
        found += figures.found;
        deleted += figures.deleted;
        held += figures.held;
        collected += figures.collected_checked;
        match figures.cut_off_applied {
            Some(true) => cut_off_applied += 1,
            Some(false) => cut_off_kept += 1,
            None => {}
        }
        println!(
            "{name} cycle {cycle}/{cycles}: SIGKILL {moment}{cut}; acked {} (in flight {}, found whole after restart {}); head {}; \
             pop3 {} session(s), {} RETR checked, {} deleted and verified gone{}, {} held DELE verified kept; \
             collected checked in range files {}; range files {}; {} export{}{}; {:.1} s",
            figures.acked,
            figures.in_flight,
            figures.found,
            model.head,
            figures.pop_sessions,
            figures.retrieved,
            figures.deleted,
            figures.unanswered,
            figures.held,
            figures.collected_checked,
            figures.ranges,
            if figures.full { "full" } else { "recent" },
            if looked { ", crashed store verified" } else { "" },
            if twice { ", killed (and cut) again right after the restart" } else { "" },
            cycle_started.elapsed().as_secs_f64(),
        );
    }

    // Every acknowledged message for the peer's domain reaches the peer.
    let mut to_peer = 0;
    if let Some((peer, _)) = &peer {
        let wanted: BTreeSet<&str> =
            model.messages.values().filter(|m| m.rcpts.contains(&PEER_USER)).map(|m| m.token.as_str()).collect();
        to_peer = wanted.len();
        eventually(&format!("{} forwarded messages at the peer", wanted.len()), || {
            let arrived: BTreeSet<String> =
                export_entries(&peer.data, &["--user", PEER_USER]).iter().filter_map(|e| entry_token(e)).collect();
            wanted.iter().all(|token| arrived.contains(*token))
        });
    }

    // A clean stop, then everything once more on the stopped store.
    maild.stop();
    verify_ok(&data, "after the final clean stop");
    let entries = export_entries(&data, &[]);
    let mut present = BTreeMap::new();
    for entry in &entries {
        assert!(present.insert(entry_number(entry), entry.as_slice()).is_none(), "a number exported twice");
    }
    for (number, known) in &model.messages {
        match present.get(number) {
            Some(entry) => check_entry(*number, entry, known),
            None => assert!(model.collectable(*number, known), "message {number} missing at the end"),
        }
    }
    assert_eq!(present.keys().next_back().copied().unwrap_or(0), model.head, "head at the end");
    for user in USERS {
        let numbers: Vec<u64> = export_entries(&data, &["--user", user]).iter().map(|e| entry_number(e)).collect();
        assert_eq!(numbers, model.maildrop(user), "{user}'s mailbox at the end");
    }
    println!(
        "{name} summary: seed {seed}; cycles {cycles}; kills {kills}; forwarded to the peer and verified there {to_peer}; messages acknowledged {acked} (of them {acked_large} over 1 MiB, bodies in files; +{cycles} probes, \
         +{found} in-flight found whole); head {}; deleted-then-verified {deleted}; held DELE verified kept {held}; \
         QUITs cut off by the kill {} (applied whole {cut_off_applied}, not at all {cut_off_kept}); collected messages checked in range files {collected}; crashed stores verified before restart {offline}; {:.1} s",
        model.head,
        cut_off_applied + cut_off_kept,
        started.elapsed().as_secs_f64()
    );
}

/// Copies the directory tree `from` to `to` (files and directories only).
fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}
