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

use engine::forward::client::{ServerReply, SmtpStream};
use engine::smtp::client::data_payload;

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

mod expected;
mod model;
mod plan;
mod rng;
mod shared;
mod worker;

use expected::*;
use model::*;
use plan::*;
use rng::*;
use shared::*;
use worker::*;

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
    let mut stream = SmtpStream::connect(smtp, IO_TIMEOUT).with_context(|| format!("could not connect to {smtp}"))?;
    let greeting = stream.read_reply().with_context(|| format!("{smtp}: no greeting"))?;
    if greeting.code != 220 {
        bail!("{smtp} refused the connection: {}", greeting.summary());
    }
    let mut step = |command: &str| -> Result<ServerReply> {
        stream.command(command).with_context(|| format!("{smtp}: no reply to {command}"))
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
                bail!("{smtp}: MAIL FROM:<> got {}", mail.summary());
            }
        }
        let reply = step(&format!("RCPT TO:<{rcpt}>"))?;
        if reply.code != 250 {
            bail!(
                "--rcpt {rcpt} is not taken by {smtp}: {} (stress needs existing users: mailtool user add {rcpt})",
                reply.summary()
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

    /// The reply these lines make, read as from the wire.
    fn reply(lines: &[&str]) -> ServerReply {
        let wire: String = lines.iter().map(|line| format!("{line}\r\n")).collect();
        let (_, reply) = engine::smtp::client::ReplyReader::default().push(wire.as_bytes());
        reply.expect("a whole reply").expect("a well-formed reply")
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
        let bad_size = ["250-mx.test", "250-PIPELINING", "250-SIZE lots", "250-8BITMIME", "250 ENHANCEDSTATUSCODES"];
        assert!(check(&ehlo, &reply(&bad_size)).is_err());
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
