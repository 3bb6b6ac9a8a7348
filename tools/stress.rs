//! `mailtool stress`: many connections drive random SMTP dialogues against a server and
//! check every reply against CONTRACT.md §3.
//!
//! Each connection is a thread with its own PRNG (seeded from `--seed` and its index, so a
//! failing run can be replayed) and a client-side [`Model`] of the server session: the
//! phase (fresh, greeted, in a transaction, in data), the distinct accepted recipients, and
//! the count of error replies. The planner picks a scenario (a valid transaction, a
//! harmless command, or one of the contract's error cases), the model turns each command
//! into the reply the contract requires, and the runner sends the commands (a batch at a
//! time when pipelined, RFC 2920) and compares. Only the binding parts of a reply are
//! compared: the code, the enhanced code where the contract shows one, and the binding
//! phrases (hostname, rejected address, `User unknown`, …); other text is free.
//!
//! The rare scenarios (QUIT and each error case, about 2% of scenarios apiece) are first
//! taken in turn, each connection starting at another place in the list, so that a run
//! covers them all after a few scenarios per connection, however slow the server; after
//! one round they are picked at random like the rest.
//!
//! On the first mismatch of a connection the dialogue is out of step (a `354` where an
//! error was expected turns the next commands into message data), so the connection is
//! dropped and a new one opened. Delivered message numbers are collected across all
//! connections: a number seen twice, or one not above the previous number of the same
//! connection, is a mismatch too (CONTRACT §4).
//!
//! The timeout cases of §3 are not exercised: each would idle a connection for the
//! server's whole command timeout (300 s by default).

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::fmt;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use clap::Args;

use crate::client::{data_payload, Reply, SmtpClient};

#[derive(Args)]
pub struct StressArgs {
    /// The SMTP server to test.
    #[arg(long, default_value = "127.0.0.1:2525", value_name = "ADDR")]
    smtp: String,
    /// A recipient that exists on the server (repeatable, at least one).
    #[arg(long = "rcpt", value_name = "ADDR", required = true)]
    rcpts: Vec<String>,
    /// Concurrent connections, one thread each.
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// How long to run: `500ms`, `10s`, `2m`, `1h` or plain seconds.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    duration: Duration,
    /// PRNG seed; the default comes from the clock. Printed first, to replay a run.
    #[arg(long)]
    seed: Option<u64>,
}

/// Read, write and connect timeout of every socket: a silent server is a mismatch after
/// this long, never a hang.
const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// After the duration, connections finish their scenario and QUIT. Each can be stuck in at
/// most one read and one QUIT exchange; past this the run ends anyway and reports them.
const GRACE: Duration = Duration::from_secs(65);
/// Mismatches printed in full; all are counted.
const MAX_PRINTED: u64 = 20;
/// CONTRACT §3: after the 20th 4xx/5xx reply the session ends with 421.
const MAX_ERRORS: u32 = 20;
/// CONTRACT §3 (RFC 5321 §4.5.3.1.8): 100 accepted recipients, the 101st gets 452.
const MAX_RECIPIENTS: usize = 100;
/// RFC 5321 §4.5.3.1.4: a command line is at most 512 octets, CRLF included.
const MAX_COMMAND_LINE: usize = 512;

/// Parses `500ms`, `10s`, `2m`, `1h`, `1.5s` or plain seconds (`10`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    engine::duration::parse(text)
}

// ---------------------------------------------------------------------------------------
// Randomness: SplitMix64, small and good enough to pick scenarios reproducibly.

#[derive(Clone)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (n > 0); the modulo bias is irrelevant here.
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn index(&mut self, len: usize) -> usize {
        let len = u64::try_from(len).unwrap_or(u64::MAX);
        usize::try_from(self.below(len)).unwrap_or(0)
    }

    /// True with this probability in percent.
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.index(items.len())]
    }

    /// A lowercase hex tag, to make addresses no one has.
    fn tag(&mut self) -> String {
        format!("{:08x}", self.next() >> 32)
    }
}

fn clock_seed() -> u64 {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let low = u64::try_from(nanos & u128::from(u64::MAX)).unwrap_or(0);
    Rng::new(low ^ u64::from(std::process::id())).next()
}

// ---------------------------------------------------------------------------------------
// What a command is, what the contract says the answer is, and how a reply is checked.

/// A command as the model sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Kind {
    Helo,
    Ehlo,
    HeloMissing,
    Mail(Sender),
    Rcpt(Recipient),
    Data,
    /// The message after `354`, dot-stuffed and ended by CRLF.CRLF.
    Body,
    Rset,
    Noop,
    Vrfy,
    Unknown,
    TooLong,
    Quit,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Sender {
    Valid,
    Syntax,
    /// Invalid address, as the server will name it.
    Invalid(String),
    /// `SIZE=` above the advertised limit.
    TooBig,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Recipient {
    Known(String),
    UnknownUser(String),
    Relay(String),
    Syntax,
    Invalid(String),
}

/// What a reply must look like beyond its code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Shape {
    Plain,
    /// `250-hostname` and the extensions of CONTRACT §3.
    Ehlo,
    /// `250 2.0.0 … delivered message N`.
    Delivered,
}

/// The binding parts of one expected reply (CONTRACT §3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Expected {
    pub code: u16,
    pub enhanced: Option<&'static str>,
    pub phrases: Vec<String>,
    pub shape: Shape,
    /// The server closes the connection after this reply.
    pub closes: bool,
}

impl Expected {
    fn new(code: u16, enhanced: Option<&'static str>) -> Expected {
        Expected { code, enhanced, phrases: Vec::new(), shape: Shape::Plain, closes: false }
    }

    fn phrase(mut self, phrase: impl Into<String>) -> Expected {
        let phrase = phrase.into();
        if !phrase.is_empty() {
            self.phrases.push(phrase);
        }
        self
    }

    fn shape(mut self, shape: Shape) -> Expected {
        self.shape = shape;
        self
    }

    fn closing(mut self) -> Expected {
        self.closes = true;
        self
    }

    fn greeting() -> Expected {
        Expected::new(220, None).phrase("ESMTP maild")
    }
}

impl fmt::Display for Expected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.code)?;
        if let Some(enhanced) = self.enhanced {
            write!(f, " {enhanced}")?;
        }
        for phrase in &self.phrases {
            write!(f, " …{phrase:?}")?;
        }
        match self.shape {
            Shape::Plain => {}
            Shape::Ehlo => write!(f, " with PIPELINING, SIZE, 8BITMIME, ENHANCEDSTATUSCODES")?,
            Shape::Delivered => write!(f, " …\"delivered message N\"")?,
        }
        if self.closes {
            write!(f, ", then close")?;
        }
        Ok(())
    }
}

/// What a correct reply told us.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Checked {
    Plain,
    /// The EHLO reply's `SIZE` limit, if it gave one (`SIZE` alone: no limit).
    Ehlo {
        size: Option<u64>,
    },
    Delivered(u64),
}

/// Compares one reply with what the contract requires; `Err` says how it differs.
pub(crate) fn check(expected: &Expected, reply: &Reply) -> Result<Checked, String> {
    if reply.code != expected.code {
        return Err(format!("code {} instead of {}", reply.code, expected.code));
    }
    let code = expected.code.to_string();
    if let Some(line) = reply.lines.iter().find(|line| !line.starts_with(&code)) {
        return Err(format!("a line of the reply has another code: {line:?}"));
    }
    let last = reply.text.get(4..).unwrap_or("");
    if let Some(enhanced) = expected.enhanced {
        if last.split_whitespace().next() != Some(enhanced) {
            return Err(format!("enhanced code {enhanced} missing"));
        }
    }
    let all = reply.lines.join("\n");
    for phrase in &expected.phrases {
        if !all.contains(phrase.as_str()) {
            return Err(format!("{phrase:?} missing"));
        }
    }
    match expected.shape {
        Shape::Plain => Ok(Checked::Plain),
        Shape::Ehlo => {
            let keywords: Vec<(String, Option<&str>)> = reply.lines[1..]
                .iter()
                .filter_map(|line| {
                    let mut words = line.get(4..)?.split_whitespace();
                    Some((words.next()?.to_ascii_uppercase(), words.next()))
                })
                .collect();
            for wanted in ["PIPELINING", "SIZE", "8BITMIME", "ENHANCEDSTATUSCODES"] {
                if !keywords.iter().any(|(keyword, _)| keyword == wanted) {
                    return Err(format!("EHLO extension {wanted} missing"));
                }
            }
            let size = keywords.iter().find(|(keyword, _)| keyword == "SIZE").and_then(|(_, value)| *value);
            match size {
                None => Ok(Checked::Ehlo { size: None }),
                Some(value) => match value.parse::<u64>() {
                    Ok(0) => Ok(Checked::Ehlo { size: None }),
                    Ok(size) => Ok(Checked::Ehlo { size: Some(size) }),
                    Err(_) => Err(format!("EHLO SIZE {value:?} is not a number")),
                },
            }
        }
        Shape::Delivered => {
            let number = all
                .split("delivered message ")
                .nth(1)
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|n| n.parse::<u64>().ok());
            number.map(Checked::Delivered).ok_or_else(|| "\"delivered message N\" missing".to_string())
        }
    }
}

// ---------------------------------------------------------------------------------------
// The client-side model of the server session.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Fresh,
    Greeted,
    Mail,
    Data,
    Closed,
}

/// The server session as CONTRACT §3 describes it, from the client's side.
struct Model {
    phase: Phase,
    /// Distinct accepted recipients of the open transaction, lowercased (a recipient given
    /// twice is one delivery, so it is counted once towards the 100).
    recipients: HashSet<String>,
    errors: u32,
    /// From the greeting; binding in HELO/EHLO and 421 replies.
    hostname: String,
}

impl Model {
    fn new(hostname: String) -> Model {
        Model { phase: Phase::Fresh, recipients: HashSet::new(), errors: 0, hostname }
    }

    /// The replies the contract requires for this command, in order (an error reply may
    /// be followed by `421 too many errors`), and the new phase.
    fn apply(&mut self, kind: &Kind) -> Vec<Expected> {
        let first = self.transition(kind);
        let mut replies = vec![first];
        if replies[0].code >= 400 {
            self.errors += 1;
            if self.errors >= MAX_ERRORS && self.phase != Phase::Closed {
                self.phase = Phase::Closed;
                let bye = Expected::new(421, Some("4.7.0")).phrase(self.hostname.clone()).phrase("too many errors");
                replies.push(bye.closing());
            }
        }
        replies
    }

    fn transition(&mut self, kind: &Kind) -> Expected {
        use Phase::*;
        // The planner sends nothing after a close and nothing but the message after 354;
        // a bug there must not pass silently as a mismatch of the server.
        let in_data = self.phase == Data;
        assert!(
            self.phase != Closed && in_data == (*kind == Kind::Body),
            "stress planner bug: {kind:?} in phase {:?}",
            self.phase
        );
        match (self.phase, kind) {
            (_, Kind::Quit) => {
                self.phase = Closed;
                Expected::new(221, Some("2.0.0")).closing()
            }
            (_, Kind::Helo | Kind::Ehlo) => {
                // RFC 5321 §4.1.4: HELO/EHLO again resets the transaction.
                self.phase = Greeted;
                self.recipients.clear();
                let shape = if *kind == Kind::Ehlo { Shape::Ehlo } else { Shape::Plain };
                Expected::new(250, None).phrase(self.hostname.clone()).shape(shape)
            }
            (_, Kind::HeloMissing) => Expected::new(501, None),
            (_, Kind::Rset) => {
                if self.phase != Fresh {
                    self.phase = Greeted;
                }
                self.recipients.clear();
                Expected::new(250, Some("2.0.0"))
            }
            (_, Kind::Noop) => Expected::new(250, Some("2.0.0")),
            (_, Kind::Vrfy) => Expected::new(252, Some("2.0.0")),
            (_, Kind::Unknown) => Expected::new(502, Some("5.5.2")).phrase("command not recognized"),
            (_, Kind::TooLong) => Expected::new(500, Some("5.5.2")).phrase("line too long"),
            (Fresh, Kind::Mail(_) | Kind::Rcpt(_) | Kind::Data) => Expected::new(503, Some("5.5.1")),
            (Greeted, Kind::Mail(sender)) => match sender {
                Sender::Valid => {
                    self.phase = Mail;
                    self.recipients.clear();
                    Expected::new(250, Some("2.1.0"))
                }
                Sender::Syntax => Expected::new(501, Some("5.5.4")),
                Sender::Invalid(address) => Expected::new(501, Some("5.1.7")).phrase(address.clone()),
                Sender::TooBig => Expected::new(552, Some("5.3.4")),
            },
            (Mail, Kind::Mail(_)) => Expected::new(503, Some("5.5.1")).phrase("nested MAIL command"),
            (Greeted, Kind::Rcpt(_) | Kind::Data) => Expected::new(503, Some("5.5.1")),
            (Mail, Kind::Rcpt(Recipient::Syntax)) => Expected::new(501, Some("5.5.4")),
            (Mail, Kind::Rcpt(Recipient::Invalid(address))) => {
                Expected::new(501, Some("5.1.3")).phrase(address.clone())
            }
            (Mail, Kind::Rcpt(_)) if self.recipients.len() >= MAX_RECIPIENTS => Expected::new(452, Some("4.5.3")),
            (Mail, Kind::Rcpt(Recipient::Known(address))) => {
                self.recipients.insert(address.to_ascii_lowercase());
                Expected::new(250, Some("2.1.5"))
            }
            (Mail, Kind::Rcpt(Recipient::UnknownUser(address))) => {
                Expected::new(550, Some("5.1.1")).phrase(address.clone()).phrase("User unknown")
            }
            (Mail, Kind::Rcpt(Recipient::Relay(address))) => {
                Expected::new(554, Some("5.7.1")).phrase(address.clone()).phrase("Relay access denied")
            }
            (Mail, Kind::Data) if self.recipients.is_empty() => Expected::new(503, Some("5.5.1")),
            (Mail, Kind::Data) => {
                self.phase = Data;
                Expected::new(354, None)
            }
            (Data, Kind::Body) => {
                self.phase = Greeted;
                self.recipients.clear();
                Expected::new(250, Some("2.0.0")).shape(Shape::Delivered)
            }
            (phase, kind) => panic!("stress planner bug: {kind:?} in phase {phase:?}"),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Plans: commands with their expected replies, in batches written at once.

/// One command/reply exchange: the bytes to send and the replies they must get.
struct Exchange {
    wire: Vec<u8>,
    label: String,
    expects: Vec<Expected>,
}

/// A command before the model has seen it.
struct Cmd {
    wire: Vec<u8>,
    label: String,
    kind: Kind,
}

impl Cmd {
    fn line(text: impl Into<String>, kind: Kind) -> Cmd {
        let text = text.into();
        let label = if text.len() > 72 {
            let cut = (0..=72).rev().find(|&i| text.is_char_boundary(i)).unwrap_or(0);
            format!("{}… ({} octets)", &text[..cut], text.len() + 2)
        } else {
            text.clone()
        };
        let mut wire = text.into_bytes();
        wire.extend_from_slice(b"\r\n");
        Cmd { wire, label, kind }
    }

    fn body(payload: Vec<u8>) -> Cmd {
        let label = format!("<message data, {} octets>", payload.len());
        Cmd { wire: payload, label, kind: Kind::Body }
    }
}

/// Builds a scenario's batches, running the model as commands are added. Commands added
/// once the model says the session is closed are dropped, so a batch never carries bytes
/// past a closing reply.
struct Plan<'m> {
    model: &'m mut Model,
    batches: Vec<Vec<Exchange>>,
    pipelined: bool,
    /// The last batch may take more commands (pipelining, and not after DATA).
    open: bool,
}

impl<'m> Plan<'m> {
    fn new(model: &'m mut Model, pipelined: bool) -> Plan<'m> {
        Plan { model, batches: Vec::new(), pipelined, open: false }
    }

    fn phase(&self) -> Phase {
        self.model.phase
    }

    /// Adds a command; false if the session is already closed.
    fn push(&mut self, cmd: Cmd) -> bool {
        if self.model.phase == Phase::Closed {
            return false;
        }
        let expects = self.model.apply(&cmd.kind);
        if !self.open {
            self.batches.push(Vec::new());
        }
        // RFC 2920 §3.1: DATA ends a group; what follows it is message data.
        self.open = self.pipelined && cmd.kind != Kind::Data;
        let batch = self.batches.last_mut().expect("a batch was pushed");
        batch.push(Exchange { wire: cmd.wire, label: cmd.label, expects });
        true
    }
}

// ---------------------------------------------------------------------------------------
// Shared counters.

struct Config {
    smtp: String,
    rcpts: Vec<String>,
    /// The domains of the recipients: local domains of the server.
    domains: Vec<String>,
    distinct_rcpts: usize,
    deadline: Instant,
}

#[derive(Default)]
struct Shared {
    operations: AtomicU64,
    messages: AtomicU64,
    sessions: AtomicU64,
    connect_failures: AtomicU64,
    error_replies: AtomicU64,
    mismatches: AtomicU64,
    printed: AtomicU64,
    numbers: Mutex<HashSet<u64>>,
    cases: Mutex<BTreeMap<&'static str, u64>>,
    /// Suppresses the stderr report (unit tests).
    quiet: bool,
}

impl Shared {
    fn mismatch(&self, connection: usize, command: &str, expected: &str, got: &str) {
        self.mismatches.fetch_add(1, Ordering::Relaxed);
        if !self.quiet && self.printed.fetch_add(1, Ordering::Relaxed) < MAX_PRINTED {
            eprintln!("mismatch: connection {connection}: {command:?}: expected {expected}; got {got}");
        }
    }

    fn case(&self, name: &'static str) {
        *self.cases.lock().unwrap_or_else(|e| e.into_inner()).entry(name).or_default() += 1;
    }
}

/// The totals of a run.
#[derive(Debug)]
pub(crate) struct Summary {
    operations: u64,
    messages: u64,
    sessions: u64,
    connect_failures: u64,
    error_replies: u64,
    mismatches: u64,
    highest: u64,
    cases: BTreeMap<&'static str, u64>,
    unfinished: u64,
    seconds: f64,
}

// ---------------------------------------------------------------------------------------
// One connection's worker.

/// How a batch run left the connection.
enum After {
    Open,
    /// The server closed it as expected (221, 421).
    Closed,
    /// A mismatch or an I/O error: the dialogue is out of step.
    Broken,
}

/// The error cases of CONTRACT §3 the planner picks from (timeouts excepted).
const ERROR_CASES: &[&str] = &[
    "before-helo",
    "nested-mail",
    "need-mail",
    "need-rcpt",
    "mail-syntax",
    "rcpt-syntax",
    "bad-sender",
    "bad-recipient",
    "unknown-user",
    "relay-denied",
    "unknown-verb",
    "helo-without-argument",
    "line-too-long",
    "size-too-big",
    "too-many-recipients",
    "too-many-errors",
    "helo-resets-transaction",
    "rset-resets-transaction",
];

const WORDS: &[&str] = &[
    "mail",
    "durable",
    "sequence",
    "pipeline",
    "quick",
    "brown",
    "fox",
    "lazy",
    "dog",
    "stress",
    "relay",
    "number",
    "commit",
    "fsync",
    "sled",
    "postmaster",
    "hello",
    "world",
    "café",
    "naïve",
];

struct Worker {
    id: usize,
    rng: Rng,
    config: Arc<Config>,
    shared: Arc<Shared>,
    /// The EHLO SIZE limit, once a reply told us.
    size_limit: Option<u64>,
    /// Start the next session with a command before HELO.
    before_helo_next: bool,
    /// The last number this connection was given: each later message, in this session or
    /// the next, was committed after that acknowledgement, so it must get a higher one.
    last_number: u64,
    sent: u64,
    /// The rare cases still to take in turn (see [`rare_cases_from`]), each with whether
    /// it was already put back once because it could not run when its turn came.
    rare_turns: VecDeque<(&'static str, bool)>,
}

/// QUIT and the error cases: what the planner picks from when it rolls a rare scenario.
fn rare_cases() -> impl Iterator<Item = &'static str> {
    std::iter::once("quit").chain(ERROR_CASES.iter().copied())
}

/// The rare cases in turn, starting at `start`: a connection runs each of them once before
/// it picks them at random, and connections start at different places (spread evenly over
/// the list), so that together they cover every case within their first few scenarios.
fn rare_cases_from(start: usize) -> VecDeque<(&'static str, bool)> {
    let cases: Vec<&'static str> = rare_cases().collect();
    (0..cases.len()).map(|i| (cases[(start + i) % cases.len()], false)).collect()
}

impl Worker {
    /// Connection `id` of `connections`, with its own PRNG derived from `seed`.
    fn new(id: usize, connections: usize, seed: u64, config: Arc<Config>, shared: Arc<Shared>) -> Worker {
        Worker {
            id,
            rng: Rng::new(Rng::new(seed ^ u64::try_from(id).unwrap_or(0).wrapping_mul(0xA24B_AED4_963E_E407)).next()),
            config,
            shared,
            size_limit: None,
            before_helo_next: false,
            last_number: 0,
            sent: 0,
            rare_turns: rare_cases_from(id * rare_cases().count() / connections.max(1)),
        }
    }

    fn run(&mut self) {
        // At least one session, even if this thread first runs after the deadline (a
        // short run on a loaded machine): every connection is tried.
        loop {
            self.session();
            if Instant::now() >= self.config.deadline {
                break;
            }
        }
    }

    fn session(&mut self) {
        let mut client = match SmtpClient::connect(&self.config.smtp, IO_TIMEOUT) {
            Ok(client) => client,
            Err(error) => {
                self.shared.connect_failures.fetch_add(1, Ordering::Relaxed);
                self.shared.mismatch(self.id, "connect", "a connection", &error.to_string());
                std::thread::sleep(Duration::from_millis(200));
                return;
            }
        };
        self.shared.sessions.fetch_add(1, Ordering::Relaxed);
        self.shared.operations.fetch_add(1, Ordering::Relaxed);
        let expected = Expected::greeting();
        let greeting = match client.reply() {
            Ok(reply) => reply,
            Err(error) => {
                self.shared.mismatch(self.id, "connect", &expected.to_string(), &format!("no greeting: {error}"));
                return;
            }
        };
        if let Err(why) = check(&expected, &greeting) {
            self.shared.mismatch(self.id, "connect", &expected.to_string(), &format!("{:?} ({why})", greeting.text));
            client.abort();
            return;
        }
        let hostname = greeting.text.split_whitespace().nth(1).unwrap_or("").to_string();
        let mut model = Model::new(hostname);

        if std::mem::take(&mut self.before_helo_next) || self.rng.chance(15) {
            let mut plan = Plan::new(&mut model, false);
            if self.before_helo(&mut plan) {
                self.shared.case("before-helo");
            }
            let batches = plan.batches;
            if !matches!(self.execute(&mut client, batches), After::Open) {
                return;
            }
        }
        while Instant::now() < self.config.deadline {
            let batches = self.scenario(&mut model);
            debug_assert!(model.phase != Phase::Data, "a scenario must finish its message");
            match self.execute(&mut client, batches) {
                After::Open => {}
                After::Closed => return,
                After::Broken => {
                    client.abort();
                    return;
                }
            }
        }
        let mut plan = Plan::new(&mut model, false);
        plan.push(Cmd::line(self.verb("QUIT"), Kind::Quit));
        let batches = plan.batches;
        if let After::Broken = self.execute(&mut client, batches) {
            client.abort();
        }
    }

    /// Sends each batch in one write, then reads and checks its replies in order.
    fn execute(&mut self, client: &mut SmtpClient, batches: Vec<Vec<Exchange>>) -> After {
        for batch in batches {
            let wire: Vec<u8> = batch.iter().flat_map(|exchange| exchange.wire.iter().copied()).collect();
            if let Err(error) = client.send(&wire) {
                let first = batch.first().map(|e| e.label.as_str()).unwrap_or("");
                self.shared.mismatch(self.id, first, "to send", &format!("write failed: {error}"));
                return After::Broken;
            }
            for exchange in &batch {
                self.shared.operations.fetch_add(1, Ordering::Relaxed);
                for expected in &exchange.expects {
                    let reply = match client.reply() {
                        Ok(reply) => reply,
                        Err(error) => {
                            let got = format!("no reply: {error}");
                            self.shared.mismatch(self.id, &exchange.label, &expected.to_string(), &got);
                            return After::Broken;
                        }
                    };
                    match check(expected, &reply) {
                        Ok(Checked::Plain) => {}
                        Ok(Checked::Ehlo { size }) => self.size_limit = size,
                        Ok(Checked::Delivered(number)) => self.delivered(number, &exchange.label),
                        Err(why) => {
                            let got = format!("{:?} ({why})", reply.text);
                            self.shared.mismatch(self.id, &exchange.label, &expected.to_string(), &got);
                            return After::Broken;
                        }
                    }
                    if expected.code >= 400 {
                        self.shared.error_replies.fetch_add(1, Ordering::Relaxed);
                    }
                    if expected.closes {
                        match client.at_eof() {
                            Ok(true) => {}
                            Ok(false) => {
                                let what = "the connection closed";
                                self.shared.mismatch(
                                    self.id,
                                    &exchange.label,
                                    what,
                                    "more bytes after the closing reply",
                                );
                            }
                            Err(error) => {
                                let got = format!("no close: {error}");
                                self.shared.mismatch(self.id, &exchange.label, "the connection closed", &got);
                            }
                        }
                        return After::Closed;
                    }
                }
            }
        }
        After::Open
    }

    /// CONTRACT §4: numbers never repeat, and a connection's later message gets a higher
    /// number (it was committed after the earlier one was acknowledged).
    fn delivered(&mut self, number: u64, label: &str) {
        self.shared.messages.fetch_add(1, Ordering::Relaxed);
        let fresh = self.shared.numbers.lock().unwrap_or_else(|e| e.into_inner()).insert(number);
        if !fresh {
            self.shared.mismatch(self.id, label, "a new message number", &format!("message {number} again"));
        } else if number <= self.last_number {
            let expected = format!("a number above {}", self.last_number);
            self.shared.mismatch(self.id, label, &expected, &format!("message {number}"));
        }
        self.last_number = self.last_number.max(number);
    }

    // --- the planner -------------------------------------------------------------------

    fn scenario(&mut self, model: &mut Model) -> Vec<Vec<Exchange>> {
        let roll = self.rng.below(100);
        let pipelined = self.rng.chance(35);
        let mut plan = Plan::new(model, pipelined);
        if roll < 50 {
            self.transaction(&mut plan);
        } else if roll < 64 {
            self.harmless(&mut plan);
        } else if let Some((case, put_back)) = self.rare_turns.pop_front() {
            // A case that could not run now (see `error_case`) gets one more turn, next.
            if self.rare_case(case, &mut plan) && !put_back {
                self.rare_turns.push_front((case, true));
            }
        } else if roll < 66 {
            self.rare_case("quit", &mut plan);
        } else {
            let case = *self.rng.pick(ERROR_CASES);
            self.rare_case(case, &mut plan);
        }
        plan.batches
    }

    /// QUIT or an error case; true if it could not run now but could next time.
    fn rare_case(&mut self, case: &'static str, plan: &mut Plan) -> bool {
        if case != "quit" {
            return self.error_case(case, plan);
        }
        let quit = plan.push(Cmd::line(self.verb("QUIT"), Kind::Quit));
        if quit {
            self.shared.case("quit");
        }
        !quit
    }

    /// A valid transaction: 1–3 known recipients (now and then an unknown one among
    /// them), a random body, and the `250 … delivered message N`.
    fn transaction(&mut self, plan: &mut Plan) {
        self.ensure_greeted(plan);
        let sender = self.valid_sender();
        let body = self.body(&sender);
        plan.push(self.mail(&sender, Some(body.len())));
        for _ in 0..1 + self.rng.below(3) {
            if self.rng.chance(8) {
                let cmd = self.rcpt_unknown_user();
                plan.push(cmd);
            }
            let cmd = self.rcpt_known();
            plan.push(cmd);
        }
        if self.rng.chance(5) {
            plan.push(Cmd::line(self.verb("NOOP"), Kind::Noop));
        }
        plan.push(Cmd::line(self.verb("DATA"), Kind::Data));
        if plan.phase() == Phase::Data && plan.push(Cmd::body(data_payload(&body))) {
            self.shared.case(if plan.pipelined { "pipelined-transaction" } else { "transaction" });
        }
        if plan.pipelined && self.rng.chance(30) {
            plan.push(Cmd::line(self.verb("NOOP"), Kind::Noop));
        }
    }

    /// RSET, NOOP, VRFY, HELO/EHLO again, or a NOOP line of exactly 512 octets.
    fn harmless(&mut self, plan: &mut Plan) {
        let (name, cmd) = match self.rng.below(6) {
            0 => ("rset", Cmd::line(self.verb("RSET"), Kind::Rset)),
            1 => ("noop", Cmd::line(self.verb("NOOP"), Kind::Noop)),
            2 => {
                let who = self.rng.pick(&self.config.rcpts).clone();
                ("vrfy", Cmd::line(format!("{} {who}", self.verb("VRFY")), Kind::Vrfy))
            }
            3 => ("noop-512-octets", Cmd::line(format!("NOOP {}", "n".repeat(MAX_COMMAND_LINE - 7)), Kind::Noop)),
            _ => ("greet-again", self.greeting_cmd()),
        };
        if plan.push(cmd) {
            self.shared.case(name);
        }
    }

    /// Plans one error case and counts it if it was planned whole. True if it could not be:
    /// no size limit known yet (the EHLO that asks for one is planned instead), or the
    /// session closes before the case is complete; then it can run next time. False
    /// otherwise, also for a case that can never run here (too-many-recipients with too
    /// few users) or one the next session starts with (before-helo).
    fn error_case(&mut self, case: &'static str, plan: &mut Plan) -> bool {
        let done = match case {
            "before-helo" => {
                if plan.phase() == Phase::Fresh {
                    self.before_helo(plan)
                } else {
                    // Only a new session is before HELO: end this one, start the next so.
                    self.before_helo_next = true;
                    plan.push(Cmd::line(self.verb("QUIT"), Kind::Quit));
                    return false;
                }
            }
            "nested-mail" => {
                self.ensure_greeted(plan);
                let sender = self.valid_sender();
                plan.push(self.mail(&sender, None));
                if self.rng.chance(50) {
                    let cmd = self.rcpt_known();
                    plan.push(cmd);
                }
                let cmd = if self.rng.chance(70) {
                    let second = self.valid_sender();
                    self.mail(&second, None)
                } else {
                    self.mail_syntax()
                };
                plan.push(cmd)
            }
            "need-mail" => {
                self.greeted_idle(plan);
                let cmd =
                    if self.rng.chance(60) { self.rcpt_known() } else { Cmd::line(self.verb("DATA"), Kind::Data) };
                plan.push(cmd)
            }
            "need-rcpt" => {
                self.greeted_idle(plan);
                let sender = self.valid_sender();
                plan.push(self.mail(&sender, None));
                if self.rng.chance(40) {
                    let cmd = self.rcpt_unknown_user();
                    plan.push(cmd);
                }
                plan.push(Cmd::line(self.verb("DATA"), Kind::Data))
            }
            "mail-syntax" => {
                self.greeted_idle(plan);
                let cmd = self.mail_syntax();
                plan.push(cmd)
            }
            "rcpt-syntax" => {
                self.in_transaction(plan);
                let cmd = self.rcpt_syntax();
                plan.push(cmd)
            }
            "bad-sender" => {
                self.greeted_idle(plan);
                let cmd = self.mail_invalid();
                plan.push(cmd)
            }
            "bad-recipient" => {
                self.in_transaction(plan);
                let cmd = self.rcpt_invalid();
                plan.push(cmd)
            }
            "unknown-user" => {
                self.in_transaction(plan);
                let cmd = self.rcpt_unknown_user();
                plan.push(cmd)
            }
            "relay-denied" => {
                self.in_transaction(plan);
                let cmd = self.rcpt_relay();
                plan.push(cmd)
            }
            "unknown-verb" => {
                let cmd = self.unknown_verb();
                plan.push(cmd)
            }
            "helo-without-argument" => {
                let verb = if self.rng.chance(50) { "HELO" } else { "EHLO" };
                let spaces = " ".repeat(self.index(3));
                plan.push(Cmd::line(format!("{}{spaces}", self.verb(verb)), Kind::HeloMissing))
            }
            "line-too-long" => {
                // 513 octets and more, CRLF included; the rest of the line is discarded.
                let extra = self.index(3) * self.index(600);
                let filler = "x".repeat(MAX_COMMAND_LINE - 7 + 1 + extra);
                let verb = *self.rng.pick(&["NOOP", "MAIL FROM:<", "RCPT TO:<", "XYZZY"]);
                plan.push(Cmd::line(format!("{verb} {filler}"), Kind::TooLong))
            }
            "size-too-big" => {
                let Some(limit) = self.size_limit else {
                    // The limit comes from an EHLO reply: ask for one, try next time.
                    plan.push(self.ehlo());
                    return true;
                };
                self.greeted_idle(plan);
                let size = limit.saturating_add(1 + self.rng.below(limit.max(1)));
                let sender = self.valid_sender();
                let path = if sender.is_empty() { "<>".to_string() } else { format!("<{sender}>") };
                plan.push(Cmd::line(
                    format!("{} {path} SIZE={size}", self.verb("MAIL FROM:")),
                    Kind::Mail(Sender::TooBig),
                ))
            }
            "too-many-recipients" => {
                if self.config.distinct_rcpts < MAX_RECIPIENTS {
                    // Unreachable with fewer distinct users: duplicates are one recipient.
                    return false;
                }
                // One pipelined group: MAIL, 101 distinct RCPTs, RSET.
                plan.pipelined = true;
                self.greeted_idle(plan);
                let sender = self.valid_sender();
                plan.push(self.mail(&sender, None));
                let mut distinct: Vec<&String> = Vec::new();
                for rcpt in &self.config.rcpts {
                    if !distinct.iter().any(|d| d.eq_ignore_ascii_case(rcpt)) {
                        distinct.push(rcpt);
                    }
                }
                let mut done = false;
                for rcpt in distinct.iter().take(MAX_RECIPIENTS + 1) {
                    let kind = Kind::Rcpt(Recipient::Known(rcpt.to_string()));
                    done = plan.push(Cmd::line(format!("RCPT TO:<{rcpt}>"), kind));
                }
                plan.push(Cmd::line(self.verb("RSET"), Kind::Rset));
                done
            }
            "too-many-errors" => {
                let mut done = false;
                for i in 0..MAX_ERRORS {
                    done = plan.push(Cmd::line(format!("XERR{i}"), Kind::Unknown)) || done;
                }
                done && plan.phase() == Phase::Closed
            }
            "helo-resets-transaction" | "rset-resets-transaction" => {
                self.in_transaction(plan);
                let cmd = self.rcpt_known();
                plan.push(cmd);
                let reset = if case == "rset-resets-transaction" {
                    Cmd::line(self.verb("RSET"), Kind::Rset)
                } else {
                    self.greeting_cmd()
                };
                plan.push(reset);
                plan.push(Cmd::line(self.verb("DATA"), Kind::Data))
            }
            other => unreachable!("unknown case {other}"),
        };
        if done {
            self.shared.case(case);
        }
        !done
    }

    /// MAIL, RCPT or DATA on a fresh session: `503 5.5.1`.
    fn before_helo(&mut self, plan: &mut Plan) -> bool {
        let cmd = match self.rng.below(4) {
            0 => {
                let sender = self.valid_sender();
                self.mail(&sender, None)
            }
            1 => self.rcpt_known(),
            2 => self.mail_syntax(),
            _ => Cmd::line(self.verb("DATA"), Kind::Data),
        };
        plan.push(cmd)
    }

    fn ensure_greeted(&mut self, plan: &mut Plan) {
        match plan.phase() {
            Phase::Fresh => {
                let cmd = self.greeting_cmd();
                plan.push(cmd);
            }
            Phase::Greeted | Phase::Mail | Phase::Data | Phase::Closed => {}
        }
    }

    /// Greeted with no transaction open.
    fn greeted_idle(&mut self, plan: &mut Plan) {
        self.ensure_greeted(plan);
        if plan.phase() == Phase::Mail {
            plan.push(Cmd::line(self.verb("RSET"), Kind::Rset));
        }
    }

    /// In a transaction (MAIL accepted).
    fn in_transaction(&mut self, plan: &mut Plan) {
        self.ensure_greeted(plan);
        if plan.phase() == Phase::Greeted {
            let sender = self.valid_sender();
            plan.push(self.mail(&sender, None));
        }
    }

    // --- commands ------------------------------------------------------------------------

    fn index(&mut self, len: usize) -> usize {
        self.rng.index(len)
    }

    /// The verb (or verb and keyword) in random case: verbs are case-insensitive.
    fn verb(&mut self, verb: &str) -> String {
        match self.rng.below(10) {
            0 => verb.to_ascii_lowercase(),
            1 => verb.chars().enumerate().map(|(i, c)| if i % 2 == 0 { c.to_ascii_lowercase() } else { c }).collect(),
            _ => verb.to_string(),
        }
    }

    fn greeting_cmd(&mut self) -> Cmd {
        if self.rng.chance(60) {
            self.ehlo()
        } else {
            let name = self.helo_name();
            Cmd::line(format!("{} {name}", self.verb("HELO")), Kind::Helo)
        }
    }

    fn ehlo(&mut self) -> Cmd {
        let name = self.helo_name();
        Cmd::line(format!("{} {name}", self.verb("EHLO")), Kind::Ehlo)
    }

    fn helo_name(&mut self) -> String {
        match self.rng.below(3) {
            0 => format!("client{}.stress.test", self.id),
            1 => "[127.0.0.1]".to_string(),
            _ => format!("host-{}", self.rng.tag()),
        }
    }

    /// A valid reverse path; empty is the null sender `<>`.
    fn valid_sender(&mut self) -> String {
        match self.rng.below(10) {
            0 => String::new(),
            1 => self.rng.pick(&self.config.rcpts).clone(),
            _ => {
                let domain = *self.rng.pick(&["example.com", "sender.test", "mail.example.net"]);
                format!("{}.{}@{domain}", self.rng.pick(WORDS).replace(['é', 'ï'], "e"), self.rng.below(1000))
            }
        }
    }

    fn mail(&mut self, sender: &str, size: Option<usize>) -> Cmd {
        let verb = self.verb("MAIL FROM:");
        let mut line = match self.rng.below(5) {
            0 if !sender.is_empty() => format!("{verb} {sender}"),
            1 => format!("{verb} <{sender}>"),
            _ => format!("{verb}<{sender}>"),
        };
        if let Some(size) = size {
            if self.rng.chance(30) {
                line.push_str(&format!(" SIZE={size}"));
            }
        }
        if self.rng.chance(15) {
            line.push_str(" BODY=8BITMIME");
        }
        if self.rng.chance(10) {
            line.push_str("  ");
        }
        Cmd::line(line, Kind::Mail(Sender::Valid))
    }

    fn mail_syntax(&mut self) -> Cmd {
        let sender = format!("s{}@example.com", self.rng.below(100));
        let line = match self.rng.below(5) {
            0 => format!("MAIL FROM {sender}"),
            1 => format!("MAIL TO:<{sender}>"),
            2 => format!("MAIL FROM:<{sender}"),
            3 => "MAIL".to_string(),
            _ => format!("MAIL {sender}"),
        };
        Cmd::line(line, Kind::Mail(Sender::Syntax))
    }

    /// An invalid sender, and the address as the server will name it.
    fn mail_invalid(&mut self) -> Cmd {
        let (line, address) = match self.rng.below(4) {
            0 => ("MAIL FROM:<a b@example.com>".to_string(), "a b@example.com".to_string()),
            // As the original assignment's dialogue sends it, bare.
            1 => ("MAIL FROM: student @CS4410".to_string(), "student @CS4410".to_string()),
            2 => {
                let address = format!("x{}@", self.rng.below(100));
                (format!("MAIL FROM:<{address}>"), address)
            }
            _ => {
                let address = format!("{}@example.com", "l".repeat(250));
                (format!("MAIL FROM:<{address}>"), address)
            }
        };
        Cmd::line(line, Kind::Mail(Sender::Invalid(address)))
    }

    fn rcpt_line(&mut self, address: &str) -> String {
        let verb = self.verb("RCPT TO:");
        match self.rng.below(5) {
            0 => format!("{verb} {address}"),
            1 => format!("{verb} <{address}>"),
            _ => format!("{verb}<{address}>"),
        }
    }

    fn rcpt_known(&mut self) -> Cmd {
        let mut address = self.rng.pick(&self.config.rcpts).clone();
        if self.rng.chance(10) {
            // Local parts and domains are case-insensitive (as with Postfix/Dovecot).
            address = address.to_ascii_uppercase();
        }
        let line = self.rcpt_line(&address);
        Cmd::line(line, Kind::Rcpt(Recipient::Known(address)))
    }

    fn rcpt_unknown_user(&mut self) -> Cmd {
        let domain = self.rng.pick(&self.config.domains).clone();
        let address = format!("no-such-user-{}@{domain}", self.rng.tag());
        let line = self.rcpt_line(&address);
        Cmd::line(line, Kind::Rcpt(Recipient::UnknownUser(address)))
    }

    fn rcpt_relay(&mut self) -> Cmd {
        // `.invalid` (RFC 2606) is never a local domain nor a peer's.
        let address = format!("someone@relay-{}.invalid", self.rng.tag());
        let line = self.rcpt_line(&address);
        Cmd::line(line, Kind::Rcpt(Recipient::Relay(address)))
    }

    fn rcpt_syntax(&mut self) -> Cmd {
        let rcpt = self.rng.pick(&self.config.rcpts).clone();
        let line = match self.rng.below(4) {
            0 => format!("RCPT TO {rcpt}"),
            1 => format!("RCPT FROM:<{rcpt}>"),
            2 => format!("RCPT TO:<{rcpt}"),
            _ => "RCPT".to_string(),
        };
        Cmd::line(line, Kind::Rcpt(Recipient::Syntax))
    }

    fn rcpt_invalid(&mut self) -> Cmd {
        let domain = self.rng.pick(&self.config.domains).clone();
        let address = match self.rng.below(3) {
            0 => format!("a b@{domain}"),
            1 => format!("x{}@", self.rng.below(100)),
            _ => format!("{}@{domain}", "r".repeat(255)),
        };
        let line = if address.contains(' ') && self.rng.chance(50) {
            format!("RCPT TO: {address}")
        } else {
            format!("RCPT TO:<{address}>")
        };
        Cmd::line(line, Kind::Rcpt(Recipient::Invalid(address)))
    }

    fn unknown_verb(&mut self) -> Cmd {
        let line = match self.rng.below(5) {
            0 => "mkdir".to_string(),
            1 => "XYZZY".to_string(),
            2 => "MAILX FROM:<a@b.c>".to_string(),
            3 => format!("FROB {}", self.rng.tag()),
            _ => "HELOX there".to_string(),
        };
        Cmd::line(line, Kind::Unknown)
    }

    /// A message: a few headers, then lines that test the data path (dot lines, `From `
    /// lines, empty lines, 8-bit text, long lines), kept under the size limit.
    fn body(&mut self, sender: &str) -> Vec<u8> {
        self.sent += 1;
        let mut out = format!(
            "Subject: stress {} {}\r\nMessage-ID: <{}.{}.{}@stress.mailtool>\r\n",
            self.id,
            self.sent,
            self.rng.tag(),
            self.id,
            self.sent
        );
        if !sender.is_empty() {
            out.push_str(&format!("From: <{sender}>\r\n"));
        }
        out.push_str("\r\n");
        for _ in 0..self.rng.below(25) {
            let line = match self.rng.below(12) {
                0 => ".".to_string(),
                1 => "..".to_string(),
                2 => ".leading dot".to_string(),
                3 => "From the body, to be quoted in mboxrd".to_string(),
                4 => ">From already quoted".to_string(),
                5 => String::new(),
                6 => "8-bit: café, naïve, ✓".to_string(),
                7 => {
                    let len = 200 + self.index(790);
                    "L".repeat(len)
                }
                _ => {
                    let n = 1 + self.rng.below(12);
                    (0..n).map(|_| *self.rng.pick(WORDS)).collect::<Vec<_>>().join(" ")
                }
            };
            out.push_str(&line);
            out.push_str("\r\n");
        }
        if self.rng.chance(2) {
            let line = "0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz\r\n";
            out.push_str(&line.repeat(1 + self.index(1000)));
        }
        let mut bytes = out.into_bytes();
        if let Some(limit) = self.size_limit.and_then(|l| usize::try_from(l).ok()) {
            if bytes.len() > limit {
                bytes.truncate(limit.saturating_sub(2));
                bytes.extend_from_slice(b"\r\n");
            }
        }
        bytes
    }
}

// ---------------------------------------------------------------------------------------
// The run.

struct RunConfig {
    smtp: String,
    rcpts: Vec<String>,
    connections: usize,
    duration: Duration,
    seed: u64,
    quiet: bool,
}

/// Tells the runner a connection's thread is done, on return or on panic.
struct DoneSignal {
    id: usize,
    tx: crossbeam_channel::Sender<usize>,
}

impl Drop for DoneSignal {
    fn drop(&mut self) {
        let _ = self.tx.send(self.id);
    }
}

fn stress(run: RunConfig) -> Result<Summary> {
    let mut domains: Vec<String> = Vec::new();
    let mut distinct: Vec<String> = Vec::new();
    for rcpt in &run.rcpts {
        let clean = !rcpt.chars().any(|c| c.is_whitespace() || c.is_control() || c == '<' || c == '>');
        let domain = match rcpt.rsplit_once('@') {
            Some((local, domain)) if clean && !local.is_empty() && !domain.is_empty() => domain,
            _ => bail!("--rcpt {rcpt:?}: expected an address user@domain"),
        };
        let domain = domain.to_ascii_lowercase();
        if !domains.contains(&domain) {
            domains.push(domain);
        }
        let key = rcpt.to_ascii_lowercase();
        if !distinct.contains(&key) {
            distinct.push(key);
        }
    }
    if run.rcpts.is_empty() {
        bail!("give at least one --rcpt (an existing user of the server)");
    }
    if run.connections == 0 {
        bail!("--connections must be at least 1");
    }
    let started = Instant::now();
    let config = Arc::new(Config {
        smtp: run.smtp.clone(),
        rcpts: run.rcpts.clone(),
        domains,
        distinct_rcpts: distinct.len(),
        deadline: started + run.duration,
    });
    let shared = Arc::new(Shared { quiet: run.quiet, ..Shared::default() });
    let (done_tx, done_rx) = crossbeam_channel::unbounded::<usize>();
    let mut handles = Vec::new();
    for id in 0..run.connections {
        let mut worker = Worker::new(id, run.connections, run.seed, config.clone(), shared.clone());
        let done = DoneSignal { id, tx: done_tx.clone() };
        let handle = std::thread::Builder::new().name(format!("stress-{id}")).spawn(move || {
            let _done = done;
            worker.run();
        })?;
        handles.push(handle);
    }
    drop(done_tx);
    // Bounded: whatever a connection does, the run ends by deadline + GRACE.
    let hard_stop = config.deadline + GRACE;
    // A thread that reported done may not have exited yet, so "done" is what
    // it said, not what `is_finished` sees at this instant.
    let mut reported_done = vec![false; run.connections];
    let mut finished = 0;
    while finished < run.connections {
        match done_rx.recv_deadline(hard_stop) {
            Ok(id) => {
                reported_done[id] = true;
                finished += 1;
            }
            Err(_) => break,
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let mut unfinished = 0;
    for (id, handle) in handles.into_iter().enumerate() {
        if reported_done[id] || handle.is_finished() {
            if handle.join().is_err() {
                unfinished += 1;
                shared.mismatch(id, "(worker)", "to finish", "the connection's thread panicked");
            }
        } else {
            unfinished += 1;
            shared.mismatch(id, "(worker)", "to finish", &format!("still running {GRACE:?} after the duration"));
        }
    }
    let numbers = shared.numbers.lock().unwrap_or_else(|e| e.into_inner());
    let cases = shared.cases.lock().unwrap_or_else(|e| e.into_inner()).clone();
    Ok(Summary {
        operations: shared.operations.load(Ordering::Relaxed),
        messages: shared.messages.load(Ordering::Relaxed),
        sessions: shared.sessions.load(Ordering::Relaxed),
        connect_failures: shared.connect_failures.load(Ordering::Relaxed),
        error_replies: shared.error_replies.load(Ordering::Relaxed),
        mismatches: shared.mismatches.load(Ordering::Relaxed),
        highest: numbers.iter().copied().max().unwrap_or(0),
        cases,
        unfinished,
        seconds,
    })
}

/// Counts are far below 2^53, so the conversion to f64 is exact.
fn per_second(count: u64, seconds: f64) -> f64 {
    #[allow(clippy::cast_precision_loss)]
    let count = count as f64;
    if seconds > 0.0 {
        count / seconds
    } else {
        0.0
    }
}

/// Before the run: the server answers, and every `--rcpt` is a user of it. A recipient
/// that is not would turn every transaction into a mismatch; better one clear error.
fn preflight(smtp: &str, rcpts: &[String]) -> Result<()> {
    let mut client = SmtpClient::connect(smtp, IO_TIMEOUT).with_context(|| format!("could not connect to {smtp}"))?;
    let greeting = client.reply().with_context(|| format!("{smtp}: no greeting"))?;
    if greeting.code != 220 {
        bail!("{smtp} refused the connection: {}", greeting.text);
    }
    let mut step = |command: &str| -> Result<Reply> {
        client.command(command).with_context(|| format!("{smtp}: no reply to {command}"))
    };
    if step("EHLO stress.preflight")?.code != 250 && step("HELO stress.preflight")?.code != 250 {
        bail!("{smtp}: neither EHLO nor HELO was accepted");
    }
    for (i, rcpt) in rcpts.iter().enumerate() {
        // A new transaction now and then: one takes at most 100 recipients.
        if i % 50 == 0 {
            step("RSET")?;
            let mail = step("MAIL FROM:<>")?;
            if mail.code != 250 {
                bail!("{smtp}: MAIL FROM:<> got {}", mail.text);
            }
        }
        let reply = step(&format!("RCPT TO:<{rcpt}>"))?;
        if reply.code != 250 {
            bail!(
                "--rcpt {rcpt} is not taken by {smtp}: {} (stress needs existing users: mailtool user add {rcpt})",
                reply.text
            );
        }
    }
    let _ = step("QUIT");
    Ok(())
}

pub fn run(args: StressArgs) -> Result<()> {
    let seed = args.seed.unwrap_or_else(clock_seed);
    // First, so even a run that dies can be replayed.
    println!("seed: {seed}");
    let _ = std::io::stdout().flush();
    preflight(&args.smtp, &args.rcpts)?;
    let summary = stress(RunConfig {
        smtp: args.smtp.clone(),
        rcpts: args.rcpts.clone(),
        connections: args.connections,
        duration: args.duration,
        seed,
        quiet: false,
    })?;
    let distinct: HashSet<String> = args.rcpts.iter().map(|r| r.to_ascii_lowercase()).collect();
    println!("smtp: {}", args.smtp);
    println!("connections: {}", args.connections);
    println!("duration: {:.3}", args.duration.as_secs_f64());
    println!("seconds: {:.3}", summary.seconds);
    println!("sessions: {}", summary.sessions);
    println!("operations: {}", summary.operations);
    println!("messages: {}", summary.messages);
    println!("msgs/s: {:.1}", per_second(summary.messages, summary.seconds));
    println!("highest-number: {}", summary.highest);
    println!("error-replies: {}", summary.error_replies);
    for (case, count) in &summary.cases {
        println!("case-{case}: {count}");
    }
    let mut skipped: Vec<&str> = vec!["timeout"];
    if distinct.len() < MAX_RECIPIENTS {
        skipped.push("too-many-recipients (needs 100 distinct --rcpt users)");
    }
    println!("skipped: {}", skipped.join(", "));
    println!("connect-failures: {}", summary.connect_failures);
    if summary.unfinished > 0 {
        println!("unfinished-connections: {}", summary.unfinished);
    }
    // CONTRACT §7: the report ends with these two lines.
    println!("ops/s: {:.1}", per_second(summary.operations, summary.seconds));
    println!("mismatches: {}", summary.mismatches);
    if summary.mismatches > MAX_PRINTED {
        eprintln!("({} more mismatches not shown)", summary.mismatches - MAX_PRINTED);
    }
    if summary.sessions == 0 {
        bail!("could not connect to {} (seed {seed})", args.smtp);
    }
    if summary.mismatches > 0 {
        bail!("{} mismatches (seed {seed})", summary.mismatches);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader};
    use std::net::TcpListener;

    fn reply(lines: &[&str]) -> Reply {
        let lines: Vec<String> = lines.iter().map(|s| s.to_string()).collect();
        Reply { code: lines[0][..3].parse().unwrap(), text: lines.last().unwrap().clone(), lines }
    }

    #[test]
    fn durations_take_units_or_plain_seconds() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        for bad in ["", "s", "10x", "0", "-1s", "1.2.3s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_wrong_code_is_a_mismatch() {
        let expected = Expected::new(550, Some("5.1.1")).phrase("a@b").phrase("User unknown");
        let got = reply(&["250 2.1.5 Ok"]);
        assert!(check(&expected, &got).unwrap_err().contains("code 250 instead of 550"));
        let right = reply(&["550 5.1.1 <a@b>: Recipient address rejected: User unknown"]);
        assert_eq!(check(&expected, &right), Ok(Checked::Plain));
    }

    #[test]
    fn a_missing_enhanced_code_or_binding_phrase_is_a_mismatch() {
        let expected = Expected::new(503, Some("5.5.1")).phrase("nested MAIL command");
        assert!(check(&expected, &reply(&["503 Error: nested MAIL command"])).is_err());
        assert!(check(&expected, &reply(&["503 5.5.2 Error: nested MAIL command"])).is_err());
        assert!(check(&expected, &reply(&["503 5.5.1 Error: need MAIL command"])).is_err());
        // Free text around the binding parts is fine.
        assert!(check(&expected, &reply(&["503 5.5.1 Sorry: nested MAIL command here"])).is_ok());
    }

    #[test]
    fn delivered_numbers_and_ehlo_size_are_read() {
        let delivered = Expected::new(250, Some("2.0.0")).shape(Shape::Delivered);
        assert_eq!(check(&delivered, &reply(&["250 2.0.0 Ok: delivered message 42"])), Ok(Checked::Delivered(42)));
        assert!(check(&delivered, &reply(&["250 2.0.0 Ok"])).is_err());
        let ehlo = Expected::new(250, None).phrase("mx.test").shape(Shape::Ehlo);
        let good = ["250-mx.test", "250-PIPELINING", "250-SIZE 1000", "250-8BITMIME", "250 ENHANCEDSTATUSCODES"];
        assert_eq!(check(&ehlo, &reply(&good)), Ok(Checked::Ehlo { size: Some(1000) }));
        let no_pipelining = ["250-mx.test", "250-SIZE 1000", "250-8BITMIME", "250 ENHANCEDSTATUSCODES"];
        assert!(check(&ehlo, &reply(&no_pipelining)).is_err());
        let mixed = ["250-mx.test", "250-PIPELINING", "250-SIZE 1000", "251-8BITMIME", "250 ENHANCEDSTATUSCODES"];
        assert!(check(&ehlo, &reply(&mixed)).is_err());
    }

    #[test]
    fn the_model_follows_the_contract_table() {
        let mut model = Model::new("mx.test".into());
        let code = |model: &mut Model, kind: Kind| model.apply(&kind)[0].code;
        assert_eq!(code(&mut model, Kind::Mail(Sender::Valid)), 503);
        assert_eq!(code(&mut model, Kind::Helo), 250);
        assert_eq!(code(&mut model, Kind::Rcpt(Recipient::Known("a@d".into()))), 503);
        assert_eq!(code(&mut model, Kind::Mail(Sender::TooBig)), 552);
        assert_eq!(code(&mut model, Kind::Mail(Sender::Valid)), 250);
        assert_eq!(model.apply(&Kind::Mail(Sender::Valid))[0].phrases, vec!["nested MAIL command".to_string()]);
        assert_eq!(code(&mut model, Kind::Data), 503);
        assert_eq!(code(&mut model, Kind::Rcpt(Recipient::UnknownUser("x@d".into()))), 550);
        assert_eq!(code(&mut model, Kind::Rcpt(Recipient::Relay("x@e.invalid".into()))), 554);
        assert_eq!(code(&mut model, Kind::Rcpt(Recipient::Invalid("a b@d".into()))), 501);
        assert_eq!(code(&mut model, Kind::Rcpt(Recipient::Known("a@d".into()))), 250);
        assert_eq!(code(&mut model, Kind::Data), 354);
        assert_eq!(model.apply(&Kind::Body)[0].shape, Shape::Delivered);
        assert_eq!(model.phase, Phase::Greeted);
        assert_eq!(code(&mut model, Kind::Quit), 221);
        assert_eq!(model.phase, Phase::Closed);
    }

    #[test]
    fn the_twentieth_error_reply_is_followed_by_421() {
        let mut model = Model::new("mx.test".into());
        for _ in 0..MAX_ERRORS - 1 {
            assert_eq!(model.apply(&Kind::Unknown).len(), 1);
        }
        let last = model.apply(&Kind::Unknown);
        assert_eq!(last.len(), 2);
        assert_eq!((last[1].code, last[1].enhanced, last[1].closes), (421, Some("4.7.0"), true));
        assert!(last[1].phrases.contains(&"mx.test".to_string()));
        assert_eq!(model.phase, Phase::Closed);
    }

    #[test]
    fn the_101st_distinct_recipient_gets_452() {
        let mut model = Model::new("mx.test".into());
        model.apply(&Kind::Ehlo);
        model.apply(&Kind::Mail(Sender::Valid));
        for i in 0..MAX_RECIPIENTS {
            assert_eq!(model.apply(&Kind::Rcpt(Recipient::Known(format!("u{i}@d"))))[0].code, 250);
        }
        assert_eq!(model.apply(&Kind::Rcpt(Recipient::Known("U0@D".into())))[0].code, 452);
    }

    #[test]
    fn pipelined_plans_stop_at_the_closing_reply() {
        let mut model = Model::new("mx.test".into());
        let mut plan = Plan::new(&mut model, true);
        for i in 0..30 {
            plan.push(Cmd::line(format!("X{i}"), Kind::Unknown));
        }
        assert_eq!(plan.batches.len(), 1);
        assert_eq!(plan.batches[0].len(), MAX_ERRORS as usize);
    }

    /// A server that greets correctly, then answers `250 2.0.0 Ok` to every line.
    fn yes_man() -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap().to_string();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                std::thread::spawn(move || {
                    let mut writer = stream.try_clone().unwrap();
                    let _ = writer.write_all(b"220 fake.test ESMTP maild\r\n");
                    for line in BufReader::new(stream).split(b'\n') {
                        if line.is_err() || writer.write_all(b"250 2.0.0 Ok\r\n").is_err() {
                            return;
                        }
                    }
                });
            }
        });
        address
    }

    #[test]
    fn a_server_that_answers_wrongly_yields_mismatches() {
        let summary = stress(RunConfig {
            smtp: yes_man(),
            rcpts: vec!["a@d.test".into()],
            connections: 2,
            duration: Duration::from_millis(300),
            seed: 7,
            quiet: true,
        })
        .unwrap();
        assert!(summary.sessions > 0);
        assert!(summary.mismatches > 0, "{summary:?}");
    }

    #[test]
    fn every_connection_runs_a_session_even_if_it_starts_after_the_deadline() {
        let summary = stress(RunConfig {
            smtp: yes_man(),
            rcpts: vec!["a@d.test".into()],
            connections: 3,
            duration: Duration::ZERO,
            seed: 3,
            quiet: true,
        })
        .unwrap();
        assert_eq!(summary.sessions, 3, "{summary:?}");
        assert!(summary.mismatches > 0, "{summary:?}");
    }

    /// Connection `id` of `connections`, with 101 distinct recipients, for planning only.
    fn planner(id: usize, connections: usize) -> Worker {
        let rcpts: Vec<String> = (1..=101).map(|i| format!("u{i}@d.test")).collect();
        let config = Config {
            smtp: String::new(),
            distinct_rcpts: rcpts.len(),
            rcpts,
            domains: vec!["d.test".into()],
            deadline: Instant::now(),
        };
        let shared = Shared { quiet: true, ..Shared::default() };
        Worker::new(id, connections, 42, Arc::new(config), Arc::new(shared))
    }

    #[test]
    fn connections_take_the_rare_cases_in_turn_from_spread_out_starts() {
        let all: Vec<&str> = rare_cases().collect();
        for connections in [1, 2, 4, 8, 19, 32] {
            // Each connection's first round holds every case once, and the first
            // ceil(cases / connections) turns of all connections together hold them all.
            let first = all.len().div_ceil(connections);
            let mut early: Vec<&str> = Vec::new();
            for id in 0..connections {
                let turns: Vec<&str> = planner(id, connections).rare_turns.iter().map(|(case, _)| *case).collect();
                let mut sorted = turns.clone();
                sorted.sort_unstable();
                let mut expected = all.clone();
                expected.sort_unstable();
                assert_eq!(sorted, expected, "connection {id} of {connections}");
                early.extend(&turns[..first]);
            }
            for case in &all {
                assert!(early.contains(case), "{case} not among the first {first} of {connections} connections");
            }
        }
    }

    #[test]
    fn each_connection_plans_every_rare_case_in_its_first_round() {
        for id in 0..4 {
            let mut worker = planner(id, 4);
            let mut model = Model::new("mx.test".into());
            let mut scenarios = 0;
            loop {
                if model.phase == Phase::Closed {
                    // A new session, started as `Worker::session` starts one.
                    model = Model::new("mx.test".into());
                    if std::mem::take(&mut worker.before_helo_next) {
                        let mut plan = Plan::new(&mut model, false);
                        if worker.before_helo(&mut plan) {
                            worker.shared.case("before-helo");
                        }
                    }
                }
                if worker.rare_turns.is_empty() && !worker.before_helo_next {
                    break;
                }
                let batches = worker.scenario(&mut model);
                // Nothing is sent here: an EHLO gets the size limit a reply would give.
                if batches.iter().flatten().any(|exchange| exchange.label.to_ascii_uppercase().starts_with("EHLO ")) {
                    worker.size_limit = Some(3000);
                }
                scenarios += 1;
                assert!(scenarios < 1000, "connection {id}: turns left {:?}", worker.rare_turns);
            }
            let cases = worker.shared.cases.lock().unwrap().clone();
            for case in rare_cases() {
                assert!(cases.get(case).is_some_and(|&n| n > 0), "connection {id}: {case} never planned: {cases:?}");
            }
        }
    }

    /// Plans scenarios until `worker` has taken its next rare turn.
    fn until_a_rare_turn(worker: &mut Worker, model: &mut Model) {
        let before = worker.rare_turns.clone();
        for _ in 0..1000 {
            if model.phase == Phase::Closed {
                *model = Model::new("mx.test".into());
            }
            worker.scenario(model);
            if worker.rare_turns != before {
                return;
            }
        }
        panic!("no rare turn taken: {before:?}");
    }

    #[test]
    fn a_rare_case_that_cannot_run_yet_gets_one_more_turn() {
        // size-too-big needs the limit an EHLO reply tells; nothing is sent here, so the
        // limit stays unknown until the test sets it.
        let turns = [("size-too-big", false), ("unknown-verb", false)];
        let planned = |worker: &Worker| worker.shared.cases.lock().unwrap().get("size-too-big").copied();
        for limit_learnt in [true, false] {
            let mut worker = planner(0, 1);
            worker.rare_turns = VecDeque::from(turns);
            let mut model = Model::new("mx.test".into());
            // The first turn asks for the limit, and the case gets the next turn too.
            until_a_rare_turn(&mut worker, &mut model);
            assert_eq!(worker.rare_turns, [("size-too-big", true), ("unknown-verb", false)]);
            assert_eq!(planned(&worker), None);
            if limit_learnt {
                worker.size_limit = Some(3000);
            }
            // Then it runs; or, still without a limit, the round goes on without it.
            until_a_rare_turn(&mut worker, &mut model);
            assert_eq!(worker.rare_turns, [("unknown-verb", false)]);
            assert_eq!(planned(&worker), limit_learnt.then_some(1), "limit learnt: {limit_learnt}");
        }
    }

    #[test]
    fn nothing_listening_is_reported_as_no_sessions() {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let summary = stress(RunConfig {
            smtp: format!("127.0.0.1:{port}"),
            rcpts: vec!["a@d.test".into()],
            connections: 1,
            duration: Duration::from_millis(100),
            seed: 1,
            quiet: true,
        })
        .unwrap();
        assert_eq!(summary.sessions, 0);
        assert!(summary.connect_failures > 0);
    }

    #[test]
    fn the_prng_is_reproducible() {
        let (mut a, mut b) = (Rng::new(5), Rng::new(5));
        let xs: Vec<u64> = (0..10).map(|_| a.next()).collect();
        let ys: Vec<u64> = (0..10).map(|_| b.next()).collect();
        assert_eq!(xs, ys);
        assert!(xs.windows(2).all(|w| w[0] != w[1]));
    }
}
