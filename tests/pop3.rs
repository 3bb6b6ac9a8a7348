//! POP3 against the real maild: mail sent over SMTP, read back over POP3 byte-exact, with
//! a raw client, Python's poplib, curl and fetchmail.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// A raw POP3 client on top of the line client.
struct Pop3 {
    c: Client,
}

impl Pop3 {
    fn connect(maild: &Maild) -> Pop3 {
        let mut c = Client::connect(maild.pop3);
        let greeting = c.line().unwrap();
        assert!(greeting.starts_with("+OK"), "{greeting}");
        Pop3 { c }
    }

    fn login(maild: &Maild, user: &str) -> Pop3 {
        Pop3 { c: pop3_login(maild.pop3, user, &format!("pw-{user}")) }
    }

    fn cmd(&mut self, line: &str) -> String {
        self.c.cmd(line);
        self.c.line().expect("connection closed")
    }

    fn ok(&mut self, line: &str) -> String {
        let reply = self.cmd(line);
        assert!(reply.starts_with("+OK"), "{line}: {reply}");
        reply
    }

    /// Reads a multi-line body after +OK, undoing dot-stuffing, as raw bytes.
    fn body(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let line = self.c.raw_line().expect("closed in multi-line reply");
            if line == b".\r\n" {
                return out;
            }
            out.extend_from_slice(line.strip_prefix(b".").unwrap_or(&line));
        }
    }

    fn multi(&mut self, line: &str) -> Vec<u8> {
        self.ok(line);
        self.body()
    }

    fn lines(&mut self, line: &str) -> Vec<String> {
        String::from_utf8(self.multi(line)).unwrap().lines().map(String::from).collect()
    }
}

/// Sends messages (given as the bytes to store; dot-stuffed here) over SMTP.
fn send(maild: &Maild, from: &str, to: &[&str], messages: &[&[u8]]) -> Vec<u64> {
    let mut c = maild.smtp_client();
    c.reply();
    c.expect("EHLO test", "250");
    let numbers = messages.iter().map(|m| c.send_message(from, to, &dot_stuff(m))).collect();
    c.expect("QUIT", "221");
    numbers
}

const TRICKY: &[u8] =
    b"Subject: exact\r\n\r\n.starts with a dot\r\n.\r\n..two dots\r\n\xc3\xa9\xff 8bit\r\nbare\nlf\r\n";

#[test]
fn mail_sent_over_smtp_reads_back_byte_exact() {
    let maild = maild_with_users(&["u@d.test"], &["--domain", "d.test"]);
    send(&maild, "s@d.test", &["u@d.test"], &[TRICKY]);
    let mut pop = Pop3::login(&maild, "u@d.test");
    let stat = pop.ok("STAT");
    let retr = pop.multi("RETR 1");
    let text = String::from_utf8_lossy(&retr).into_owned();
    assert!(
        text.starts_with(
            "Return-Path: <s@d.test>\r\nReceived: from test ([127.0.0.1])\r\n\tby mx.test (maild) with ESMTP id 1\r\n"
        ),
        "{text}"
    );
    assert!(retr.ends_with(&[b"+0000\r\n", TRICKY].concat()), "{text}");
    // STAT and LIST sizes are the exact octet count of what RETR returned.
    assert_eq!(stat, format!("+OK 1 {}", retr.len()));
    assert_eq!(pop.ok("LIST 1"), format!("+OK 1 {}", retr.len()));
    // TOP n 0: the header block and the blank line.
    let top = pop.multi("TOP 1 0");
    assert!(top.ends_with(b"Subject: exact\r\n\r\n"), "{}", String::from_utf8_lossy(&top));
    assert_eq!(&retr[..top.len()], &top[..]);
    pop.ok("QUIT");
}

#[test]
fn uidl_is_the_message_number_and_survives_a_restart() {
    let mut maild = maild_with_users(&["u@d.test", "v@d.test"], &["--domain", "d.test"]);
    send(&maild, "s@d.test", &["v@d.test"], &[b"for v\r\n"]);
    send(&maild, "s@d.test", &["u@d.test"], &[b"one\r\n", b"two\r\n"]);
    let mut pop = Pop3::login(&maild, "u@d.test");
    assert_eq!(pop.lines("UIDL"), vec!["1 2", "2 3"]);
    assert_eq!(pop.ok("UIDL 2"), "+OK 2 3");
    pop.ok("QUIT");
    maild.stop();
    let data = maild.data.clone();
    let again = Maild::start_on(&data, &["--domain", "d.test"]);
    let mut pop = Pop3::login(&again, "u@d.test");
    assert_eq!(pop.lines("UIDL"), vec!["1 2", "2 3"]);
    drop(maild);
}

#[test]
fn deletions_apply_only_at_quit_and_are_durable() {
    let mut maild = maild_with_users(&["u@d.test"], &["--domain", "d.test"]);
    send(&maild, "s@d.test", &["u@d.test"], &[b"one\r\n", b"two\r\n", b"three\r\n"]);
    // DELE then a dropped connection: nothing is deleted.
    let mut pop = Pop3::login(&maild, "u@d.test");
    pop.ok("DELE 1");
    assert!(pop.cmd("RETR 1").starts_with("-ERR"));
    drop(pop);
    // The lock is released when the connection drops; the message is still there.
    let mut pop = Pop3::login(&maild, "u@d.test");
    assert!(pop.ok("STAT").starts_with("+OK 3 "));
    // DELE, RSET undoes it; DELE again then QUIT removes it.
    pop.ok("DELE 2");
    pop.ok("RSET");
    assert!(pop.ok("STAT").starts_with("+OK 3 "));
    pop.ok("DELE 2");
    assert!(pop.ok("QUIT").contains("2 messages left"));
    let mut pop = Pop3::login(&maild, "u@d.test");
    assert_eq!(pop.lines("UIDL"), vec!["1 1", "2 3"]);
    pop.ok("QUIT");
    maild.stop();
    let data = maild.data.clone();
    let again = Maild::start_on(&data, &["--domain", "d.test"]);
    let mut pop = Pop3::login(&again, "u@d.test");
    assert_eq!(pop.lines("UIDL"), vec!["1 1", "2 3"]);
    assert!(pop.multi("RETR 2").ends_with(b"three\r\n"));
    drop(maild);
}

#[test]
fn a_second_session_of_the_same_user_is_refused_in_use() {
    let maild = maild_with_users(&["u@d.test"], &["--domain", "d.test"]);
    let mut first = Pop3::login(&maild, "u@d.test");
    let mut second = Pop3::connect(&maild);
    second.ok("USER U@D.TEST");
    let reply = second.cmd("PASS pw-u@d.test");
    assert!(reply.starts_with("-ERR [IN-USE]"), "{reply}");
    first.ok("QUIT");
    // Once released, the maildrop opens again.
    second.ok("USER u@d.test");
    second.ok("PASS pw-u@d.test");
}

#[test]
fn wrong_passwords_and_unknown_users_get_the_same_slow_auth_error() {
    let maild = maild_with_users(&["u@d.test"], &["--domain", "d.test"]);
    for (user, password) in [("u@d.test", "wrong"), ("nobody@d.test", "pw-u@d.test")] {
        let mut pop = Pop3::connect(&maild);
        // USER never tells whether the user exists.
        pop.ok(&format!("USER {user}"));
        let started = Instant::now();
        let reply = pop.cmd(&format!("PASS {password}"));
        assert!(reply.starts_with("-ERR [AUTH]"), "{reply}");
        assert!(started.elapsed() >= Duration::from_millis(900), "a failed login must cost about a second");
    }
    // A failing client does not hold up another client meanwhile.
    let mut slow = Pop3::connect(&maild);
    slow.ok("USER u@d.test");
    slow.c.cmd("PASS wrong");
    let mut other = Pop3::login(&maild, "u@d.test");
    other.ok("STAT");
    assert!(slow.c.line().unwrap().starts_with("-ERR [AUTH]"));
}

#[test]
fn one_user_never_sees_another_users_mail() {
    let maild = maild_with_users(&["u@d.test", "v@d.test"], &["--domain", "d.test"]);
    send(&maild, "s@d.test", &["u@d.test"], &[b"secret for u\r\n"]);
    send(&maild, "s@d.test", &["v@d.test"], &[b"for v 1\r\n", b"for v 2\r\n"]);
    let mut v = Pop3::login(&maild, "v@d.test");
    assert!(v.ok("STAT").starts_with("+OK 2 "));
    assert_eq!(v.lines("UIDL"), vec!["1 2", "2 3"]);
    for i in 1..=2 {
        assert!(!contains(&v.multi(&format!("RETR {i}")), b"secret"));
    }
    assert!(v.cmd("RETR 3").starts_with("-ERR"));
    assert!(v.cmd("DELE 3").starts_with("-ERR"));
    v.ok("QUIT");
    let mut u = Pop3::login(&maild, "u@d.test");
    assert!(u.ok("STAT").starts_with("+OK 1 "));
}

#[test]
fn capa_auth_plain_and_long_lines() {
    let maild = maild_with_users(&["u@d.test"], &["--domain", "d.test"]);
    send(&maild, "s@d.test", &["u@d.test"], &[b"x\r\n"]);
    let mut pop = Pop3::connect(&maild);
    let capa = pop.lines("CAPA");
    for cap in ["TOP", "UIDL", "USER", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING", "SASL PLAIN"] {
        assert!(capa.iter().any(|c| c == cap), "{cap} missing from {capa:?}");
    }
    assert!(pop.cmd(&format!("NOOP {}", "x".repeat(300))).starts_with("-ERR"));
    // AUTH PLAIN with an initial response: \0u@d.test\0pw-u@d.test
    let reply = pop.cmd("AUTH PLAIN AHVAZC50ZXN0AHB3LXVAZC50ZXN0");
    assert!(reply.starts_with("+OK"), "{reply}");
    assert!(pop.ok("STAT").starts_with("+OK 1 "));
}

#[test]
fn python_poplib_reads_exact_bytes() {
    let maild = maild_with_users(&["u@d.test"], &["--domain", "d.test"]);
    let messages: [&[u8]; 3] = [TRICKY, b"Subject: two\r\n\r\nsecond\r\n", b"From: x\r\n\r\n.\r\n"];
    send(&maild, "s@d.test", &["u@d.test"], &messages);
    // The expected RETR bytes: Return-Path, the Received header, the message.
    let expected = new_data_dir();
    let mut pop = Pop3::login(&maild, "u@d.test");
    for i in 1..=3 {
        let retr = pop.multi(&format!("RETR {i}"));
        assert!(retr.ends_with(messages[i - 1]));
        std::fs::write(expected.path().join(i.to_string()), retr).unwrap();
    }
    pop.ok("QUIT");
    let out = python(
        "pop3_client.py",
        &[&maild.pop3.port().to_string(), "u@d.test", "pw-u@d.test", expected.path().to_str().unwrap()],
    );
    assert!(out.contains("uidl 1 2 3") && out.contains("ok"), "{out}");
}

#[test]
fn curl_retrieves_a_message() {
    let maild = maild_with_users(&["u@d.test"], &["--domain", "d.test"]);
    send(&maild, "s@d.test", &["u@d.test"], &[b"Subject: curl\r\n\r\nvia curl\r\n"]);
    let url = format!("pop3://127.0.0.1:{}/1", maild.pop3.port());
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "60", "--user", "u@d.test:pw-u@d.test", &url])
        .output()
        .expect("curl is needed (apt-get install curl)");
    assert!(out.status.success(), "curl: {}", String::from_utf8_lossy(&out.stderr));
    assert!(out.stdout.starts_with(b"Return-Path: <s@d.test>\r\n"));
    assert!(out.stdout.ends_with(b"Subject: curl\r\n\r\nvia curl\r\n"), "{}", String::from_utf8_lossy(&out.stdout));
}

#[test]
fn fetchmail_pulls_every_message_into_an_mbox() {
    let maild = maild_with_users(&["u@d.test"], &["--domain", "d.test"]);
    let bodies: Vec<Vec<u8>> =
        (1..=5).map(|i| format!("Subject: fm {i}\r\n\r\nfetchmail body {i}\r\n").into_bytes()).collect();
    let refs: Vec<&[u8]> = bodies.iter().map(|b| b.as_slice()).collect();
    send(&maild, "s@d.test", &["u@d.test"], &refs);
    let home = new_data_dir();
    let (mbox, log) = fetchmail(home.path(), maild.pop3.port(), "sslproto \"\"");
    let check = std::process::Command::new("python3")
        .arg("-c")
        .arg(
            "import mailbox,sys\nb=mailbox.mbox(sys.argv[1])\nfor m in b: print(m['Subject'], m.get_payload().strip())\n",
        )
        .arg(&mbox)
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&check.stdout);
    let expected: String = (1..=5).map(|i| format!("fm {i} fetchmail body {i}\n")).collect();
    assert_eq!(listing, expected, "fetchmail log:\n{log}");
    // fetchmail deletes what it fetched (no --keep): the maildrop is empty now.
    let mut pop = Pop3::login(&maild, "u@d.test");
    assert_eq!(pop.ok("STAT"), "+OK 0 0");
}

#[test]
fn an_idle_session_times_out_and_deletes_nothing() {
    let maild = maild_with_users(&["u@d.test"], &["--domain", "d.test", "--pop3-timeout", "6"]);
    send(&maild, "s@d.test", &["u@d.test"], &[b"keep me\r\n"]);
    let mut pop = Pop3::login(&maild, "u@d.test");
    pop.ok("DELE 1");
    let line = pop.c.line().expect("a goodbye before the close");
    assert!(line.starts_with("-ERR"), "{line}");
    assert!(pop.c.line().is_none());
    let mut again = Pop3::login(&maild, "u@d.test");
    assert!(again.ok("STAT").starts_with("+OK 1 "));
}

#[test]
fn idle_pop3_clients_do_not_delay_smtp_or_pop3() {
    let maild = maild_with_users(&["u@d.test"], &["--domain", "d.test"]);
    let idle: Vec<Pop3> = (0..100).map(|_| Pop3::connect(&maild)).collect();
    send(&maild, "s@d.test", &["u@d.test"], &[b"through the crowd\r\n"]);
    let mut pop = Pop3::login(&maild, "u@d.test");
    assert!(pop.multi("RETR 1").ends_with(b"through the crowd\r\n"));
    drop(idle);
}
