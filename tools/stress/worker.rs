//! One connection's worker.

use super::*;

/// How a batch run left the connection.
pub(super) enum After {
    Open,
    /// The server closed it as expected (221, 421).
    Closed,
    /// A mismatch or an I/O error: the dialogue is out of step.
    Broken,
}

/// The error cases of CONTRACT §3 the planner picks from (timeouts excepted).
pub(super) const ERROR_CASES: &[&str] = &[
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

pub(super) const WORDS: &[&str] = &[
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

pub(super) struct Worker {
    pub(super) id: usize,
    pub(super) rng: Rng,
    pub(super) config: Arc<Config>,
    pub(super) shared: Arc<Shared>,
    /// The EHLO SIZE limit, once a reply told us.
    pub(super) size_limit: Option<u64>,
    /// Start the next session with a command before HELO.
    pub(super) before_helo_next: bool,
    /// The last number this connection was given: each later message, in this session or
    /// the next, was committed after that acknowledgement, so it must get a higher one.
    pub(super) last_number: u64,
    pub(super) sent: u64,
    /// The rare cases still to take in turn (see [`rare_cases_from`]), each with whether
    /// it was already put back once because it could not run when its turn came.
    pub(super) rare_turns: VecDeque<(&'static str, bool)>,
}

/// QUIT and the error cases: what the planner picks from when it rolls a rare scenario.
pub(super) fn rare_cases() -> impl Iterator<Item = &'static str> {
    std::iter::once("quit").chain(ERROR_CASES.iter().copied())
}

/// The rare cases in turn, starting at `start`: a connection runs each of them once before
/// it picks them at random, and connections start at different places (spread evenly over
/// the list), so that together they cover every case within their first few scenarios.
pub(super) fn rare_cases_from(start: usize) -> VecDeque<(&'static str, bool)> {
    let cases: Vec<&'static str> = rare_cases().collect();
    (0..cases.len()).map(|i| (cases[(start + i) % cases.len()], false)).collect()
}

impl Worker {
    /// Connection `id` of `connections`, with its own PRNG derived from `seed`.
    pub(super) fn new(id: usize, connections: usize, seed: u64, config: Arc<Config>, shared: Arc<Shared>) -> Worker {
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

    pub(super) fn run(&mut self) {
        // At least one session, even if this thread first runs after the deadline (a
        // short run on a loaded machine): every connection is tried.
        loop {
            self.session();
            if Instant::now() >= self.config.deadline {
                break;
            }
        }
    }

    pub(super) fn session(&mut self) {
        let mut client = match SmtpStream::connect(self.config.smtp.as_str(), IO_TIMEOUT) {
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
        let greeting = match client.read_reply() {
            Ok(reply) => reply,
            Err(error) => {
                self.shared.mismatch(self.id, "connect", &expected.to_string(), &format!("no greeting: {error}"));
                return;
            }
        };
        if let Err(why) = check(&expected, &greeting) {
            self.shared.mismatch(
                self.id,
                "connect",
                &expected.to_string(),
                &format!("{:?} ({why})", greeting.summary()),
            );
            client.abort();
            return;
        }
        let hostname = greeting.lines.last().and_then(|l| l.split_whitespace().next()).unwrap_or("").to_string();
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
    pub(super) fn execute(&mut self, client: &mut SmtpStream, batches: Vec<Vec<Exchange>>) -> After {
        for batch in batches {
            let wire: Vec<u8> = batch.iter().flat_map(|exchange| exchange.wire.iter().copied()).collect();
            if let Err(error) = client.write_all(&wire) {
                let first = batch.first().map(|e| e.label.as_str()).unwrap_or("");
                self.shared.mismatch(self.id, first, "to send", &format!("write failed: {error}"));
                return After::Broken;
            }
            for exchange in &batch {
                self.shared.operations.fetch_add(1, Ordering::Relaxed);
                for expected in &exchange.expects {
                    let reply = match client.read_reply() {
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
                            let got = format!("{:?} ({why})", reply.summary());
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
    pub(super) fn delivered(&mut self, number: u64, label: &str) {
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

    pub(super) fn scenario(&mut self, model: &mut Model) -> Vec<Vec<Exchange>> {
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
    pub(super) fn rare_case(&mut self, case: &'static str, plan: &mut Plan) -> bool {
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
    pub(super) fn transaction(&mut self, plan: &mut Plan) {
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
    pub(super) fn harmless(&mut self, plan: &mut Plan) {
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
    pub(super) fn error_case(&mut self, case: &'static str, plan: &mut Plan) -> bool {
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
    pub(super) fn before_helo(&mut self, plan: &mut Plan) -> bool {
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

    pub(super) fn ensure_greeted(&mut self, plan: &mut Plan) {
        match plan.phase() {
            Phase::Fresh => {
                let cmd = self.greeting_cmd();
                plan.push(cmd);
            }
            Phase::Greeted | Phase::Mail | Phase::Data | Phase::Closed => {}
        }
    }

    /// Greeted with no transaction open.
    pub(super) fn greeted_idle(&mut self, plan: &mut Plan) {
        self.ensure_greeted(plan);
        if plan.phase() == Phase::Mail {
            plan.push(Cmd::line(self.verb("RSET"), Kind::Rset));
        }
    }

    /// In a transaction (MAIL accepted).
    pub(super) fn in_transaction(&mut self, plan: &mut Plan) {
        self.ensure_greeted(plan);
        if plan.phase() == Phase::Greeted {
            let sender = self.valid_sender();
            plan.push(self.mail(&sender, None));
        }
    }

    // --- commands ------------------------------------------------------------------------

    pub(super) fn index(&mut self, len: usize) -> usize {
        self.rng.index(len)
    }

    /// The verb (or verb and keyword) in random case: verbs are case-insensitive.
    pub(super) fn verb(&mut self, verb: &str) -> String {
        match self.rng.below(10) {
            0 => verb.to_ascii_lowercase(),
            1 => verb.chars().enumerate().map(|(i, c)| if i % 2 == 0 { c.to_ascii_lowercase() } else { c }).collect(),
            _ => verb.to_string(),
        }
    }

    pub(super) fn greeting_cmd(&mut self) -> Cmd {
        if self.rng.chance(60) {
            self.ehlo()
        } else {
            let name = self.helo_name();
            Cmd::line(format!("{} {name}", self.verb("HELO")), Kind::Helo)
        }
    }

    pub(super) fn ehlo(&mut self) -> Cmd {
        let name = self.helo_name();
        Cmd::line(format!("{} {name}", self.verb("EHLO")), Kind::Ehlo)
    }

    pub(super) fn helo_name(&mut self) -> String {
        match self.rng.below(3) {
            0 => format!("client{}.stress.test", self.id),
            1 => "[127.0.0.1]".to_string(),
            _ => format!("host-{}", self.rng.tag()),
        }
    }

    /// A valid reverse path; empty is the null sender `<>`.
    pub(super) fn valid_sender(&mut self) -> String {
        match self.rng.below(10) {
            0 => String::new(),
            1 => self.rng.pick(&self.config.rcpts).clone(),
            _ => {
                let domain = *self.rng.pick(&["example.com", "sender.test", "mail.example.net"]);
                format!("{}.{}@{domain}", self.rng.pick(WORDS).replace(['é', 'ï'], "e"), self.rng.below(1000))
            }
        }
    }

    pub(super) fn mail(&mut self, sender: &str, size: Option<usize>) -> Cmd {
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

    pub(super) fn mail_syntax(&mut self) -> Cmd {
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
    pub(super) fn mail_invalid(&mut self) -> Cmd {
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

    pub(super) fn rcpt_line(&mut self, address: &str) -> String {
        let verb = self.verb("RCPT TO:");
        match self.rng.below(5) {
            0 => format!("{verb} {address}"),
            1 => format!("{verb} <{address}>"),
            _ => format!("{verb}<{address}>"),
        }
    }

    pub(super) fn rcpt_known(&mut self) -> Cmd {
        let mut address = self.rng.pick(&self.config.rcpts).clone();
        if self.rng.chance(10) {
            // Local parts and domains are case-insensitive (as with Postfix/Dovecot).
            address = address.to_ascii_uppercase();
        }
        let line = self.rcpt_line(&address);
        Cmd::line(line, Kind::Rcpt(Recipient::Known(address)))
    }

    pub(super) fn rcpt_unknown_user(&mut self) -> Cmd {
        let domain = self.rng.pick(&self.config.domains).clone();
        let address = format!("no-such-user-{}@{domain}", self.rng.tag());
        let line = self.rcpt_line(&address);
        Cmd::line(line, Kind::Rcpt(Recipient::UnknownUser(address)))
    }

    pub(super) fn rcpt_relay(&mut self) -> Cmd {
        // `.invalid` (RFC 2606) is never a local domain nor a peer's.
        let address = format!("someone@relay-{}.invalid", self.rng.tag());
        let line = self.rcpt_line(&address);
        Cmd::line(line, Kind::Rcpt(Recipient::Relay(address)))
    }

    pub(super) fn rcpt_syntax(&mut self) -> Cmd {
        let rcpt = self.rng.pick(&self.config.rcpts).clone();
        let line = match self.rng.below(4) {
            0 => format!("RCPT TO {rcpt}"),
            1 => format!("RCPT FROM:<{rcpt}>"),
            2 => format!("RCPT TO:<{rcpt}"),
            _ => "RCPT".to_string(),
        };
        Cmd::line(line, Kind::Rcpt(Recipient::Syntax))
    }

    pub(super) fn rcpt_invalid(&mut self) -> Cmd {
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

    pub(super) fn unknown_verb(&mut self) -> Cmd {
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
    pub(super) fn body(&mut self, sender: &str) -> Vec<u8> {
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
