//! Several real maild processes forwarding to each other over SMTP (`--peer`): delivery
//! to a peer's user, a peer that is down, restarts, rejections that bounce, mail loops,
//! the queue commands, and the original project's test bots across three servers.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::TcpListener;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use common::*;

/// An address nobody listens on now, for a server that starts later. Each call gets a
/// loopback address of its own (127.0.0.100 and up), where nothing else binds: so no
/// other server of this test binary, which binds 127.0.0.1 and runs alongside, can take
/// the port meanwhile.
fn free_address() -> String {
    static NEXT: AtomicU8 = AtomicU8::new(100);
    let host = format!("127.0.0.{}", NEXT.fetch_add(1, Ordering::SeqCst));
    let port = TcpListener::bind(format!("{host}:0")).unwrap().local_addr().unwrap().port();
    format!("{host}:{port}")
}

fn peer_arg(domain: &str, maild: &Maild) -> String {
    format!("{domain}={}", maild.smtp)
}

/// Sends one message through `maild`; returns its number there.
fn send(maild: &Maild, from: &str, to: &[&str], body: &[u8]) -> u64 {
    let mut c = maild.smtp_client();
    c.reply();
    c.expect("EHLO sender", "250");
    let n = c.send_message(from, to, body);
    c.expect("QUIT", "221");
    n
}

/// A stranger's transaction up to one RCPT, whose reply must start with `expected`;
/// returns that reply.
fn ask_rcpt(maild: &Maild, sender: &str, recipient: &str, expected: &str) -> String {
    let mut c = maild.smtp_client();
    c.reply();
    c.expect("EHLO stranger", "250");
    c.expect(&format!("MAIL FROM:<{sender}>"), "250");
    let reply = c.expect(&format!("RCPT TO:<{recipient}>"), expected);
    c.expect("QUIT", "221");
    reply
}

fn mailbox(maild: &Maild, user: &str) -> Vec<Vec<u8>> {
    export_entries(&maild.data, &["--user", user])
}

fn wait_for_mail(maild: &Maild, user: &str, count: usize) -> Vec<Vec<u8>> {
    let mut entries = Vec::new();
    eventually(&format!("{count} message(s) for {user}"), || {
        entries = mailbox(maild, user);
        entries.len() >= count
    });
    entries
}

fn queue_depth(maild: &Maild) -> usize {
    let out = mailtool(&maild.data, &["queue"], None).stdout_text();
    out.lines().find_map(|l| l.strip_prefix("queue depth: ")).and_then(|n| n.trim().parse().ok()).unwrap()
}

#[test]
fn mail_for_a_peer_is_forwarded_and_read_there_over_pop3() {
    let b = maild_with_users(&["bob@b.test"], &["--domain", "b.test", "--hostname", "mx.b.test"]);
    let a = maild_with_users(
        &["alice@a.test"],
        &["--domain", "a.test", "--hostname", "mx.a.test", "--peer", &peer_arg("b.test", &b)],
    );
    let body = b"Subject: hello b\r\n\r\n.dot line\r\nfrom a to b\r\n";
    let mut c = a.smtp_client();
    c.reply();
    c.expect("EHLO client", "250");
    c.expect("MAIL FROM:<alice@a.test>", "250");
    c.expect("RCPT TO:<bob@b.test>", "250 2.1.5");
    c.expect("RCPT TO:<carol@c.test>", "554 5.7.1 <carol@c.test>: Relay access denied");
    c.expect("DATA", "354");
    c.send(dot_stuff(body));
    c.send(b".\r\n");
    assert_eq!(message_number(&c.reply()), Some(1));
    c.expect("QUIT", "221");

    wait_for_mail(&b, "bob@b.test", 1);
    // Read it over POP3 on B: B's trace header, then A's stored message unchanged.
    let mut pop = Client::connect(b.pop3);
    pop.line();
    for cmd in ["USER bob@b.test", "PASS pw-bob@b.test", "RETR 1"] {
        pop.cmd(cmd);
        assert!(pop.line().unwrap().starts_with("+OK"), "{cmd}");
    }
    let mut retr = Vec::new();
    loop {
        let line = pop.raw_line().unwrap();
        if line == b".\r\n" {
            break;
        }
        retr.extend_from_slice(line.strip_prefix(b".").unwrap_or(&line));
    }
    let text = String::from_utf8_lossy(&retr).into_owned();
    assert!(
        text.starts_with(
            "Return-Path: <alice@a.test>\r\nReceived: from mx.a.test ([127.0.0.1])\r\n\tby mx.b.test (maild)"
        ),
        "{text}"
    );
    assert!(text.contains("\tby mx.a.test (maild) with ESMTP id 1\r\n"), "{text}");
    assert!(retr.ends_with(body), "{text}");
    eventually("A's queue to empty", || queue_depth(&a) == 0);
}

#[test]
fn a_peer_that_is_down_gets_every_message_once_when_it_comes_back() {
    let b_address = free_address();
    let a = maild_with_users(
        &["alice@a.test"],
        &["--domain", "a.test", "--peer", &format!("b.test={b_address}"), "--retry-min", "1s", "--retry-max", "2s"],
    );
    for i in 1..=5 {
        send(&a, "alice@a.test", &["bob@b.test"], format!("Subject: {i}\r\n\r\nqueued {i}\r\n").as_bytes());
    }
    eventually("5 queued messages", || queue_depth(&a) == 5);
    let listing = mailtool(&a.data, &["queue"], None).stdout_text();
    assert!(listing.contains("b.test attempts=") && listing.contains("recipients=<bob@b.test>"), "{listing}");
    let stats = mailtool(&a.data, &["stats"], None).stdout_text();
    assert!(
        stats.contains("queue depth: 5") && stats.contains(&format!("peer b.test: {b_address} (static)")),
        "{stats}"
    );

    let tmp = new_data_dir();
    add_users(tmp.path(), &["bob@b.test"]);
    let b = Maild::start_on(tmp.path(), &["--domain", "b.test", "--smtp", &b_address]);
    let entries = wait_for_mail(&b, "bob@b.test", 5);
    eventually("A's queue to empty", || queue_depth(&a) == 0);
    // Give any duplicate time to show up, then count again.
    std::thread::sleep(Duration::from_secs(3));
    let entries_after = mailbox(&b, "bob@b.test");
    assert_eq!(entries_after.len(), 5, "exactly once");
    let tokens: BTreeSet<String> =
        entries.iter().map(|e| String::from_utf8_lossy(e).lines().last().unwrap_or_default().to_string()).collect();
    assert_eq!(tokens, (1..=5).map(|i| format!("queued {i}")).collect());
}

#[test]
fn a_restart_of_the_sender_while_entries_wait_loses_nothing() {
    let b_address = free_address();
    let mut a = maild_with_users(
        &["alice@a.test"],
        &["--domain", "a.test", "--peer", &format!("b.test={b_address}"), "--retry-min", "1s"],
    );
    for i in 1..=3 {
        send(&a, "alice@a.test", &["bob@b.test"], format!("Subject: r{i}\r\n\r\nrestart {i}\r\n").as_bytes());
    }
    eventually("3 queued", || queue_depth(&a) == 3);
    a.kill9();
    let data = a.data.clone();
    let tmp = new_data_dir();
    add_users(tmp.path(), &["bob@b.test"]);
    let b = Maild::start_on(tmp.path(), &["--domain", "b.test", "--smtp", &b_address]);
    let a2 =
        Maild::start_on(&data, &["--domain", "a.test", "--peer", &format!("b.test={b_address}"), "--retry-min", "1s"]);
    wait_for_mail(&b, "bob@b.test", 3);
    eventually("A's queue to empty", || queue_depth(&a2) == 0);
    assert_eq!(mailbox(&b, "bob@b.test").len(), 3);
    drop(a);
}

#[test]
fn queue_flush_retries_at_once() {
    let b_address = free_address();
    let a = maild_with_users(
        &["alice@a.test"],
        &["--domain", "a.test", "--peer", &format!("b.test={b_address}"), "--retry-min", "1h"],
    );
    send(&a, "alice@a.test", &["bob@b.test"], b"Subject: flush\r\n\r\nflush me\r\n");
    eventually("a failed first attempt", || mailtool(&a.data, &["queue"], None).stdout_text().contains("attempts=1"));
    let tmp = new_data_dir();
    add_users(tmp.path(), &["bob@b.test"]);
    let b = Maild::start_on(tmp.path(), &["--domain", "b.test", "--smtp", &b_address]);
    let out = mailtool(&a.data, &["queue", "flush"], None);
    assert!(
        out.status.success() && out.stdout_text().contains("1 message(s) will be retried now"),
        "{}",
        out.stdout_text()
    );
    wait_for_mail(&b, "bob@b.test", 1);
}

/// B up, in its own data directory, at `address` (where A's `--peer` points).
fn start_b_at(address: &str, users: &[&str]) -> Maild {
    let tmp = new_data_dir();
    add_users(tmp.path(), users);
    let mut b = Maild::start_on(tmp.path(), &["--domain", "b.test", "--smtp", address]);
    b.keep(tmp);
    b
}

#[test]
fn a_recipient_the_peer_refuses_is_refused_at_rcpt() {
    let b = maild_with_users(&["bob@b.test"], &["--domain", "b.test"]);
    let a = maild_with_users(&["alice@a.test"], &["--domain", "a.test", "--peer", &peer_arg("b.test", &b)]);
    let ask = |sender: &str, recipient: &str, expected: &str| ask_rcpt(&a, sender, recipient, expected);
    let reply = ask("x@elsewhere.test", "nobody@b.test", "550 5.1.1");
    assert!(reply.contains("<nobody@b.test>: Recipient address rejected: User unknown"), "{reply}");
    ask("x@elsewhere.test", "bob@b.test", "250");
    ask("x@elsewhere.test", "NOBODY@b.test", "550 5.1.1");
    // The answer is cached: B was asked about nobody once.
    assert_eq!(a.log().matches("recipient <nobody@b.test> refused by its peer").count(), 1, "{}", a.log());
    assert_eq!(b.log().matches("to=<nobody@b.test> reason=\"User unknown\"").count(), 1, "{}", b.log());
    // Mail from the null sender is not verified (probes use it, so peers never probe
    // each other in a loop); it is never bounced either.
    ask("", "nobody2@b.test", "250");
}

#[test]
fn a_rejection_from_the_peer_bounces_a_dsn_to_the_sender() {
    // B is down when A accepts (nobody to verify with), and refuses nobody later.
    let b_address = free_address();
    let a = maild_with_users(
        &["alice@a.test"],
        &[
            "--domain",
            "a.test",
            "--hostname",
            "mx.a.test",
            "--peer",
            &format!("b.test={b_address}"),
            "--retry-min",
            "1s",
        ],
    );
    send(&a, "alice@a.test", &["nobody@b.test", "bob@b.test"], b"Subject: partly wrong\r\n\r\nhello\r\n");
    let b = start_b_at(&b_address, &["bob@b.test"]);
    wait_for_mail(&b, "bob@b.test", 1);
    let dsn = wait_for_mail(&a, "alice@a.test", 1).remove(0);
    let text = String::from_utf8_lossy(&dsn).into_owned();
    assert!(text.contains("Return-Path: <>\r\n"), "a bounce has the null sender: {text}");
    assert!(text.contains("multipart/report") && text.contains("delivery-status"), "{text}");
    assert!(text.contains("nobody@b.test") && text.contains("5.1.1"), "{text}");
    assert!(!text.contains("Final-Recipient: rfc822; bob@b.test"), "bob got it: {text}");
    eventually("A's queue to empty", || queue_depth(&a) == 0);
    // The bounce itself is never bounced: a rejected bounce just ends.
    assert_eq!(mailbox(&a, "alice@a.test").len(), 1);
}

#[test]
fn a_mail_loop_between_two_peers_ends_with_554_and_a_bounce() {
    // A and B each believe the other owns loop.test.
    let a_address = free_address();
    let b = maild_with_users(
        &[],
        &["--domain", "b.test", "--peer", &format!("loop.test={a_address}"), "--peer", &format!("a.test={a_address}")],
    );
    let tmp = new_data_dir();
    add_users(tmp.path(), &["alice@a.test"]);
    let a = Maild::start_on(
        tmp.path(),
        &["--domain", "a.test", "--smtp", &a_address, "--peer", &peer_arg("loop.test", &b)],
    );
    send(&a, "alice@a.test", &["u@loop.test"], b"Subject: around\r\n\r\nround and round\r\n");
    let dsn = wait_for_mail(&a, "alice@a.test", 1).remove(0);
    let text = String::from_utf8_lossy(&dsn).into_owned();
    assert!(text.contains("5.4.6"), "{text}");
    eventually("both queues empty", || queue_depth(&a) == 0 && queue_depth(&b) == 0);
}

/// The original project's test bots: three servers, receivers on each, senders on every
/// server sending 500 messages to random recipients; every recipient gets exactly what
/// was sent to it.
#[test]
fn three_servers_500_messages_no_loss_no_duplicate() {
    let domains = ["n1.test", "n2.test", "n3.test"];
    let users: Vec<String> = domains.iter().flat_map(|d| (1..=3).map(move |i| format!("u{i}@{d}"))).collect();
    let addresses: Vec<String> = (0..3).map(|_| free_address()).collect();
    let servers: Vec<Maild> = (0..3)
        .map(|i| {
            let tmp = new_data_dir();
            let own: Vec<&str> = users.iter().filter(|u| u.ends_with(domains[i])).map(String::as_str).collect();
            add_users(tmp.path(), &own);
            let smtp = addresses[i].clone();
            let mut args = vec![
                "--domain".to_string(),
                domains[i].to_string(),
                "--smtp".into(),
                smtp,
                "--retry-min".into(),
                "1s".into(),
            ];
            for j in (0..3).filter(|&j| j != i) {
                args.push("--peer".into());
                args.push(format!("{}={}", domains[j], addresses[j]));
            }
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let mut maild = Maild::start_on(tmp.path(), &args);
            maild_keep_dir(&mut maild, tmp);
            maild
        })
        .collect();
    let mut expected: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut seed: u64 = 0x5EED_1234;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let senders: Vec<_> = (0..3)
        .map(|s| {
            let plan: Vec<(String, String)> = (0..167)
                .map(|i| (users[(next() % users.len() as u64) as usize].clone(), format!("token-{s}-{i}")))
                .collect();
            for (rcpt, token) in &plan {
                expected.entry(rcpt.clone()).or_default().insert(token.clone());
            }
            let address = servers[s].smtp;
            let from = format!("sender{s}@{}", domains[s]);
            std::thread::spawn(move || {
                let mut c = Client::connect(address);
                c.reply();
                c.expect("EHLO bot", "250");
                for (rcpt, token) in plan {
                    c.send_message(&from, &[&rcpt], format!("Subject: {token}\r\n\r\n{token}\r\n").as_bytes());
                }
                c.expect("QUIT", "221");
            })
        })
        .collect();
    for s in senders {
        s.join().unwrap();
    }
    let total: usize = expected.values().map(BTreeSet::len).sum();
    assert_eq!(total, 501);
    let started = Instant::now();
    for (user, tokens) in &expected {
        let server = &servers[domains.iter().position(|d| user.ends_with(d)).unwrap()];
        let entries = wait_for_mail(server, user, tokens.len());
        let got: Vec<String> =
            entries.iter().map(|e| String::from_utf8_lossy(e).lines().last().unwrap_or_default().to_string()).collect();
        let unique: BTreeSet<String> = got.iter().cloned().collect();
        assert_eq!(unique.len(), got.len(), "{user} got a duplicate");
        assert_eq!(&unique, tokens, "{user} got the wrong messages");
    }
    eprintln!("501 messages across 3 servers delivered in {:?} after the last send", started.elapsed());
    for server in &servers {
        eventually("queues empty", || queue_depth(server) == 0);
    }
}

/// Keeps a temporary data dir alive as long as the server using it.
fn maild_keep_dir(maild: &mut Maild, dir: tempfile::TempDir) {
    maild.keep(dir);
}

#[test]
fn a_message_that_outlives_the_queue_lifetime_bounces_with_4_4_7() {
    let b_address = free_address();
    let a = maild_with_users(
        &["alice@a.test"],
        &[
            "--domain",
            "a.test",
            "--peer",
            &format!("b.test={b_address}"),
            "--retry-min",
            "1s",
            "--retry-max",
            "1s",
            "--queue-lifetime",
            "3s",
        ],
    );
    send(&a, "alice@a.test", &["bob@b.test"], b"Subject: never arrives\r\n\r\nnobody listens\r\n");
    let dsn = wait_for_mail(&a, "alice@a.test", 1).remove(0);
    let text = String::from_utf8_lossy(&dsn).into_owned();
    assert!(text.contains("Status: 4.4.7") && text.contains("bob@b.test"), "{text}");
    assert!(text.contains("Action: failed"), "{text}");
    eventually("A's queue to empty", || queue_depth(&a) == 0);
}

#[test]
fn queue_delete_bounces_unless_silent_and_works_with_maild_stopped() {
    let b_address = free_address();
    let args = ["--domain", "a.test", "--hostname", "mx.a.test", "--peer", &format!("b.test={b_address}")];
    let mut a = maild_with_users(&["alice@a.test"], &[&args[..], &["--retry-min", "1h"]].concat());
    let numbers: Vec<u64> = (1..=3)
        .map(|i| {
            send(&a, "alice@a.test", &["bob@b.test", "carol@b.test"], format!("Subject: d{i}\r\n\r\nx\r\n").as_bytes())
        })
        .collect();
    eventually("3 queued", || queue_depth(&a) == 3);

    let out = mailtool(&a.data, &["queue", "delete", &numbers[0].to_string()], None);
    let said = out.stdout_text();
    assert!(out.status.success(), "{}", out.stderr);
    assert!(said.contains(&format!("deleted message {} from the queue (2 recipient(s))", numbers[0])), "{said}");
    assert!(said.contains("bounced to <alice@a.test> as message"), "{said}");
    assert_eq!(queue_depth(&a), 2);
    let dsn = String::from_utf8_lossy(&wait_for_mail(&a, "alice@a.test", 1)[0]).into_owned();
    assert!(dsn.contains("Return-Path: <>\r\n") && dsn.contains("multipart/report"), "{dsn}");
    assert!(
        dsn.contains("Final-Recipient: rfc822; bob@b.test") && dsn.contains("Final-Recipient: rfc822; carol@b.test")
    );
    assert!(dsn.contains("Status: 5.0.0") && dsn.contains("deleted from the queue by the administrator"), "{dsn}");
    assert!(a.log().contains(&format!("admin: queue delete {}\n", numbers[0])), "plain words in the log");

    let out = mailtool(&a.data, &["queue", "delete", &numbers[1].to_string(), "--silent"], None);
    assert!(out.status.success() && !out.stdout_text().contains("bounced"), "{}", out.stdout_text());
    assert_eq!(queue_depth(&a), 1);
    let out = mailtool(&a.data, &["queue", "delete", &numbers[1].to_string()], None);
    assert!(!out.status.success() && out.stderr.contains("is not in the queue"), "{}", out.stderr);

    // With maild stopped the bounce is committed at once and delivered when it starts.
    a.stop();
    let out = mailtool(&a.data, &["queue", "delete", &numbers[2].to_string()], None);
    assert!(out.status.success(), "{}", out.stderr);
    assert!(out.stdout_text().contains("(delivered when maild starts)"), "{}", out.stdout_text());
    let a = Maild::start_on(&a.data, &args);
    assert_eq!(queue_depth(&a), 0);
    let bounces = wait_for_mail(&a, "alice@a.test", 2);
    assert!(String::from_utf8_lossy(&bounces[1]).contains("Subject: d3"), "the third message's headers");
    assert!(mailtool(&a.data, &["verify"], None).status.success());
}

/// Writes remembered peer domains straight into a stopped store, each last seen at its time.
fn remember(data: &std::path::Path, domains: &[(&str, u64)]) {
    edit_stopped_store(data, |db| {
        let tree = db.open_tree("peer_domains").unwrap();
        for (domain, seen) in domains {
            tree.insert(domain, &seen.to_be_bytes()).unwrap();
        }
    });
}

#[test]
fn peers_lists_and_forgets_and_remembered_domains_expire() {
    let data = new_data_dir();
    add_users(data.path(), &["alice@a.test"]);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    remember(data.path(), &[("away.test", now - 60), ("old.test", now - 8 * 86400)]);
    let mut a = Maild::start_on(data.path(), &["--domain", "a.test", "--peer", "b.test=127.0.0.1:9"]);
    a.keep(data);
    let listing = mailtool(&a.data, &["peers"], None).stdout_text();
    assert!(listing.contains("peer b.test 127.0.0.1:9 (static)\n"), "{listing}");
    assert!(
        listing.contains("remembered away.test last-seen=") && listing.contains("remembered old.test"),
        "{listing}"
    );

    // A domain heard a minute ago is still its peer's: a stranger's mail for it is taken
    // (and waits for the peer); one not heard for 8 days (default --remember-peers 7d) is not.
    ask_rcpt(&a, "x@elsewhere.test", "bob@away.test", "250");
    ask_rcpt(&a, "x@elsewhere.test", "bob@old.test", "554 5.7.1");

    let out = mailtool(&a.data, &["peers", "forget", "b.test"], None);
    assert!(!out.status.success() && out.stderr.contains("b.test is a --peer"), "{}", out.stderr);
    let out = mailtool(&a.data, &["peers", "forget", "AWAY.test"], None);
    assert!(out.status.success() && out.stdout_text() == "forgot peer domain away.test\n", "{}", out.stderr);
    let out = mailtool(&a.data, &["peers", "forget", "away.test"], None);
    assert!(!out.status.success() && out.stderr.contains("no peer domain away.test"), "{}", out.stderr);
    ask_rcpt(&a, "x@elsewhere.test", "bob@away.test", "554 5.7.1");
    assert!(!mailtool(&a.data, &["peers"], None).stdout_text().contains("away.test"));
    a.stop();
    // Stopped, the remembered domains are still listed (the peers are the running maild's).
    assert_eq!(mailtool(&a.data, &["peers"], None).stdout_text().lines().count(), 1);
}

#[test]
fn no_bounce_goes_to_a_forged_sender() {
    // B is down when A accepts (nobody to verify with), and refuses nobody later.
    let b_address = free_address();
    let a = maild_with_users(
        &["alice@a.test"],
        &["--domain", "a.test", "--peer", &format!("b.test={b_address}"), "--retry-min", "1s"],
    );
    // A stranger forges senders that do not exist, at A's own domain and at the peer's;
    // the same rejection for real senders of either does bounce.
    for sender in ["ghost@a.test", "ghost@b.test", "alice@a.test", "bob@b.test"] {
        send(&a, sender, &["nobody@b.test"], format!("Subject: from {sender}\r\n\r\nhello\r\n").as_bytes());
    }
    let b = start_b_at(&b_address, &["bob@b.test"]);
    eventually("alice's bounce", || mailbox(&a, "alice@a.test").len() == 1);
    eventually("bob's bounce, back at B", || mailbox(&b, "bob@b.test").len() == 1);
    eventually("A's queue to empty", || queue_depth(&a) == 0);
    let log = a.log();
    for (number, why) in
        [(1, "the sender is a local address that does not exist"), (2, "the sender's peer says it does not exist")]
    {
        let line = format!("message {number} failed for 1 recipient(s); no bounce: {why}");
        assert!(log.contains(&line), "{line}\n{log}");
    }
    assert!(String::from_utf8_lossy(&mailbox(&b, "bob@b.test")[0]).contains("Subject: from bob@b.test"));
    let stats = mailtool(&a.data, &["stats"], None).stdout_text();
    assert!(stats.contains("head: 6\n"), "four messages and two bounces: {stats}");
}

#[test]
fn a_large_message_is_forwarded_in_pieces_and_arrives_whole() {
    let b = maild_with_users(&["bob@b.test"], &["--domain", "b.test", "--hostname", "mx.b.test"]);
    let a = maild_with_users(
        &["alice@a.test"],
        &["--domain", "a.test", "--hostname", "mx.a.test", "--peer", &peer_arg("b.test", &b)],
    );
    // A first message, so that the forward stage's connection and buffers are in the
    // baseline.
    send(&a, "alice@a.test", &["bob@b.test"], b"Subject: first\r\n\r\nfirst\r\n");
    wait_for_mail(&b, "bob@b.test", 1);
    let mut body = b"Subject: large\r\n\r\n".to_vec();
    let mut line = 0;
    // 24 MiB: under the default --max-message-size with both trace headers.
    while body.len() < 24 << 20 {
        let dot = if line % 1000 == 7 { "." } else { "" };
        body.extend_from_slice(format!("{dot}{line:08} {}\r\n", "z".repeat(80)).as_bytes());
        line += 1;
    }
    let before = a.memory("VmHWM");
    assert_eq!(send(&a, "alice@a.test", &["bob@b.test"], &dot_stuff(&body)), 2);
    let entries = wait_for_mail(&b, "bob@b.test", 2);
    let growth = a.memory("VmHWM").saturating_sub(before);
    eprintln!("a 24 MiB message in and forwarded: A's peak grew by {} KiB", growth / 1024);
    assert!(growth < 8 * MIB, "A grew by {} MiB taking in and forwarding 24 MiB", growth / MIB);
    assert!(entries[1].ends_with(&body), "the message arrives whole, dots and all");
    // A body file at both ends.
    assert!(a.data.join("store/bodies/2").exists() && b.data.join("store/bodies/2").exists());
    eventually("A's queue to empty", || queue_depth(&a) == 0);
}
