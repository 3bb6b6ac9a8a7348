//! SMTP against the real `maild` binary over TCP: the golden dialogues, the contract's
//! reply table, pipelining, smuggling, numbering, limits, and real clients.

mod common;

use std::collections::BTreeSet;
use std::io::Write;
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use engine::dialogue::{Dialogue, Step};

/// Runs a golden dialogue file against a fresh maild set up as its header says.
fn run_dialogue(name: &str, extra_args: &[&str]) -> Maild {
    let path = repo_root().join("tests/dialogues").join(name);
    let dialogue = Dialogue::parse(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let users: Vec<&str> = dialogue.users.iter().map(String::as_str).collect();
    let mut args: Vec<&str> = extra_args.to_vec();
    for domain in &dialogue.domains {
        args.extend(["--domain", domain]);
    }
    let maild = maild_with_users(&users, &args);
    let mut client = maild.smtp_client();
    for (i, step) in dialogue.steps.iter().enumerate() {
        match step {
            Step::Send(bytes) => {
                client.send(bytes);
                // Let split pieces arrive as separate segments.
                std::thread::sleep(Duration::from_millis(5));
            }
            Step::Expect(prefix) => {
                let line = client.line().unwrap_or_else(|| panic!("{name} step {i}: closed, expected {prefix:?}"));
                assert!(line.starts_with(prefix.as_str()), "{name} step {i}: expected {prefix:?}, got {line:?}");
            }
            // The server's own timeout fires while we read (the read timeout is longer).
            Step::WaitTimeout => {}
            Step::ExpectClose => assert!(client.line().is_none(), "{name} step {i}: expected close"),
        }
    }
    maild
}

#[test]
fn golden_dialogues_pass_against_the_live_server() {
    for name in [
        "order-and-errors.txt",
        "pipelining.txt",
        "split-packets.txt",
        "smuggling.txt",
        "limits.txt",
        "too-many-errors.txt",
    ] {
        run_dialogue(name, &[]);
    }
}

#[test]
fn assignment_dialogue_one_stores_the_message() {
    let mut maild = run_dialogue("assignment-1.txt", &[]);
    maild.stop();
    let entries = export_entries(&maild.data, &[]);
    assert_eq!(entries.len(), 1);
    let entry = &entries[0];
    let text = String::from_utf8_lossy(entry);
    assert!(text.starts_with("Number: 1\r\nReturn-Path: <student@CS4410>\r\nDelivered-To: TA@CS4410\r\nReceived: from client ([127.0.0.1])"), "{text}");
    assert!(text.contains("by mx.test (maild) with SMTP id 1"), "{text}");
    assert!(contains(entry, b"+0000\r\nI made an awesome submission!\r\nNetwork programming is fun\r\n"), "{text}");
    // The mailbox of TA holds it.
    assert_eq!(export_entries(&maild.data, &["--user", "ta@cs4410"]).len(), 1);
    assert_eq!(export_entries(&maild.data, &["--user", "student@CS4410"]).len(), 0);
}

#[test]
fn assignment_dialogue_two_times_out_after_the_silence() {
    let maild = run_dialogue("assignment-2.txt", &["--command-timeout", "3"]);
    drop(maild);
}

#[test]
fn invalid_commands_do_not_restart_the_timeout_but_valid_ones_do() {
    let maild = maild_with_users(&[], &["--command-timeout", "5"]);
    // Valid commands every 0.5 s for 10 s keep the session alive past its 5 s timeout.
    let mut keep = maild.smtp_client();
    keep.reply();
    for _ in 0..20 {
        keep.expect("NOOP", "250");
        std::thread::sleep(Duration::from_millis(500));
    }
    // Invalid commands do not: the 421 arrives although the client keeps talking.
    let mut noisy = maild.smtp_client();
    noisy.reply();
    noisy.expect("HELO x", "250");
    let mut saw_timeout = false;
    // Paced so the timeout comes before the 20-error limit (about 13 errors in 5 s).
    for _ in 0..60 {
        noisy.cmd("bogus");
        match noisy.line() {
            Some(line) if line.starts_with("421 4.4.2 mx.test") => {
                saw_timeout = true;
                break;
            }
            Some(line) => assert!(line.starts_with("502"), "{line}"),
            None => break,
        }
        std::thread::sleep(Duration::from_millis(400));
    }
    assert!(saw_timeout, "expected 421 timeout while sending only invalid commands");
    // Partial bytes do not restart it either.
    let mut partial = maild.smtp_client();
    partial.reply();
    partial.send("NO");
    std::thread::sleep(Duration::from_millis(1000));
    partial.send("O");
    let line = partial.line().unwrap();
    assert!(line.starts_with("421 4.4.2"), "{line}");
}

#[test]
fn three_recipients_get_one_number_and_one_copy_each() {
    let mut maild = maild_with_users(&["a@d.test", "b@d.test", "c@d.test"], &["--domain", "d.test"]);
    let mut c = maild.smtp_client();
    c.reply();
    c.expect("EHLO me", "250");
    assert_eq!(
        c.send_message("x@y.test", &["a@d.test", "b@d.test", "c@d.test", "A@D.TEST"], b"Subject: hi\r\n\r\nthree\r\n"),
        1
    );
    assert_eq!(c.send_message("x@y.test", &["b@d.test"], b"two\r\n"), 2);
    c.expect("QUIT", "221");
    maild.stop();
    let all = export_entries(&maild.data, &[]);
    assert_eq!(all.len(), 2);
    let text = String::from_utf8_lossy(&all[0]);
    assert!(
        text.contains("Delivered-To: a@d.test\r\nDelivered-To: b@d.test\r\nDelivered-To: c@d.test\r\nReceived:"),
        "{text}"
    );
    for (user, count) in [("a@d.test", 1), ("b@d.test", 2), ("c@d.test", 1)] {
        assert_eq!(export_entries(&maild.data, &["--user", user]).len(), count, "{user}");
    }
}

#[test]
fn dot_stuffing_and_eight_bit_bytes_are_stored_byte_exact() {
    let mut maild = maild_with_users(&["u@d.test"], &["--domain", "d.test"]);
    let mut c = maild.smtp_client();
    c.reply();
    c.expect("EHLO me", "250");
    c.expect("MAIL FROM:<s@d.test>", "250");
    c.expect("RCPT TO:<u@d.test>", "250");
    c.expect("DATA", "354");
    c.send(
        b"Subject: dots\r\n\r\n..leading dot\r\n...two\r\n.\x01\r\nbare\nlf and bare\rcr\r\n\xc3\xa9\xff\x00\r\n.\r\n",
    );
    assert_eq!(message_number(&c.reply()), Some(1));
    c.expect("QUIT", "221");
    maild.stop();
    let entries = export_entries(&maild.data, &[]);
    let expected: &[u8] =
        b"Subject: dots\r\n\r\n.leading dot\r\n..two\r\n\x01\r\nbare\nlf and bare\rcr\r\n\xc3\xa9\xff\x00\r\n";
    assert!(entries[0].ends_with(expected), "{:?}", String::from_utf8_lossy(&entries[0]));
}

#[test]
fn smuggled_commands_are_kept_as_message_bytes() {
    let mut maild = run_dialogue("smuggling.txt", &[]);
    maild.stop();
    let entries = export_entries(&maild.data, &[]);
    assert_eq!(entries.len(), 1, "a smuggled second message must not exist");
    assert!(entries[0].ends_with(
        b"hello\n.\nMAIL FROM:<eve@example.org>\r\nRCPT TO:<eve@example.org>\r\nDATA\r\nsmuggled\n.\r\nmore\r.\r\nstill data\r\n\r\n"
    ));
    assert_eq!(export_entries(&maild.data, &["--user", "eve@example.org"]).len(), 0);
}

#[test]
fn oversized_messages_get_552_and_use_no_number() {
    let maild = maild_with_users(&["u@d.test"], &["--domain", "d.test", "--max-message-size", "1000"]);
    let mut c = maild.smtp_client();
    c.reply();
    c.cmd("EHLO me");
    let mut ehlo = Vec::new();
    loop {
        let line = c.line().unwrap();
        ehlo.push(line.clone());
        if line.as_bytes()[3] == b' ' {
            break;
        }
    }
    assert!(ehlo.contains(&"250-SIZE 1000".to_string()), "{ehlo:?}");
    c.expect("MAIL FROM:<s@d.test> SIZE=1001", "552 5.3.4");
    c.expect("MAIL FROM:<s@d.test>", "250");
    c.expect("RCPT TO:<u@d.test>", "250");
    c.expect("DATA", "354");
    c.send(vec![b'x'; 1500]);
    c.send(b"\r\n.\r\n");
    assert!(c.reply().starts_with("552 5.3.4"));
    let mut fits = vec![b'y'; 998];
    fits.extend_from_slice(b"\r\n");
    assert_eq!(c.send_message("s@d.test", &["u@d.test"], &fits[2..]), 1, "exactly 1000 octets fit");
}

#[test]
fn concurrent_clients_get_exactly_1_to_640_and_a_restart_continues_at_641() {
    let mut maild = maild_with_users(&["u@d.test"], &["--domain", "d.test"]);
    let numbers = Arc::new(Mutex::new(Vec::new()));
    let clients: Vec<_> = (0..32)
        .map(|client_id| {
            let (address, numbers) = (maild.smtp, numbers.clone());
            std::thread::spawn(move || {
                let mut c = Client::connect(address);
                c.reply();
                c.expect("EHLO load", "250");
                for i in 0..20 {
                    let body = format!("Subject: {client_id}/{i}\r\n\r\nclient {client_id} message {i}\r\n");
                    let n = c.send_message("s@d.test", &["u@d.test"], body.as_bytes());
                    numbers.lock().unwrap().push(n);
                }
                c.expect("QUIT", "221");
            })
        })
        .collect();
    for client in clients {
        client.join().unwrap();
    }
    let mut numbers = numbers.lock().unwrap().clone();
    numbers.sort();
    assert_eq!(numbers, (1..=640).collect::<Vec<u64>>());
    maild.stop();
    let data = maild.data.clone();
    let mut again = Maild::start_on(&data, &["--domain", "d.test"]);
    let mut c = again.smtp_client();
    c.reply();
    c.expect("HELO x", "250");
    assert_eq!(c.send_message("s@d.test", &["u@d.test"], b"after restart\r\n"), 641);
    c.expect("QUIT", "221");
    again.stop();
    let entries = export_entries(&data, &["--user", "u@d.test"]);
    assert_eq!(entries.iter().map(|e| entry_number(e)).collect::<Vec<_>>(), (1..=641).collect::<Vec<_>>());
    drop(maild);
}

#[test]
fn kill_9_under_load_loses_no_acknowledged_message() {
    let tmp = new_data_dir();
    add_users(tmp.path(), &["u@d.test"]);
    let mut maild = Maild::start_on(tmp.path(), &["--domain", "d.test"]);
    let acked = Arc::new(Mutex::new(Vec::<(u64, String)>::new()));
    let clients: Vec<_> = (0..8)
        .map(|client_id| {
            let (address, acked) = (maild.smtp, acked.clone());
            // Tolerant of the kill at any point: a client just stops.
            std::thread::spawn(move || {
                let Some(mut c) = Client::try_connect(address) else { return };
                if c.line().is_none() || !c.try_send("EHLO load\r\n") {
                    return;
                }
                for i in 0.. {
                    let token = format!("token-{client_id}-{i}");
                    let body = format!("Subject: {token}\r\n\r\n{token}\r\n.\r\n");
                    if !c.try_send(format!("MAIL FROM:<s@d.test>\r\nRCPT TO:<u@d.test>\r\nDATA\r\n{body}")) {
                        return;
                    }
                    // Read replies until this message's verdict; stop at the first EOF.
                    loop {
                        let Some(line) = c.line() else { return };
                        if let Some(n) = message_number(&line) {
                            acked.lock().unwrap().push((n, token));
                            break;
                        }
                    }
                }
            })
        })
        .collect();
    eventually("some messages acknowledged", || acked.lock().unwrap().len() >= 150);
    maild.kill9();
    for client in clients {
        client.join().unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    let mut again = Maild::start_on(tmp.path(), &["--domain", "d.test"]);
    let mut c = again.smtp_client();
    c.reply();
    c.expect("HELO x", "250");
    let next = c.send_message("s@d.test", &["u@d.test"], b"after crash\r\n");
    again.stop();
    let entries = export_entries(tmp.path(), &[]);
    let numbers: Vec<u64> = entries.iter().map(|e| entry_number(e)).collect();
    assert_eq!(numbers, (1..=next).collect::<Vec<_>>(), "numbers must be 1..=head with no gap");
    for (n, token) in &acked {
        let entry = &entries[(*n - 1) as usize];
        assert!(contains(entry, format!("\r\n\r\n{token}\r\n").as_bytes()), "message {n} lost or changed");
    }
    assert!(acked.iter().map(|(n, _)| *n).collect::<BTreeSet<_>>().len() == acked.len(), "a number acknowledged twice");
    // Every message reached the mailbox, including any the crash left undelivered.
    assert_eq!(export_entries(tmp.path(), &["--user", "u@d.test"]).len() as u64, next);
}

#[test]
fn an_idle_crowd_does_not_delay_a_transaction() {
    let maild = maild_with_users(&["u@d.test"], &["--domain", "d.test"]);
    let idle: Vec<TcpStream> = (0..200).map(|_| TcpStream::connect(maild.smtp).unwrap()).collect();
    let mut c = maild.smtp_client();
    assert!(c.reply().starts_with("220"));
    c.expect("HELO x", "250");
    assert_eq!(c.send_message("s@d.test", &["u@d.test"], b"hello\r\n"), 1);
    drop(idle);
}

#[test]
fn past_the_connection_limit_clients_get_421_and_threads_stay_bounded() {
    // All from one address on one listener: the per-listener and per-client limits are
    // raised to the total so that the total is what is tested (tests/limits.rs has those).
    let maild = maild_with_users(
        &["u@d.test"],
        &[
            "--domain",
            "d.test",
            "--max-connections",
            "50",
            "--max-listener-connections",
            "50",
            "--max-client-connections",
            "50",
        ],
    );
    let held: Vec<Client> = (0..50)
        .map(|_| {
            let mut c = maild.smtp_client();
            assert!(c.reply().starts_with("220"));
            c
        })
        .collect();
    let mut extra = maild.smtp_client();
    let line = extra.line().unwrap();
    assert!(line.starts_with("421 4.7.0 mx.test"), "{line}");
    assert!(extra.line().is_none());
    // 10,000 attempts, up to 500 open at once: refused politely, no thread explosion.
    let mut most_threads = 0;
    for _ in 0..20 {
        let burst: Vec<TcpStream> = (0..500).filter_map(|_| TcpStream::connect(maild.smtp).ok()).collect();
        most_threads = most_threads.max(maild.threads());
        drop(burst);
    }
    assert!(most_threads < 50 + 32, "maild ran {most_threads} threads with a limit of 50 connections");
    drop(held);
    // Once the crowd is gone, service is normal again.
    let mut greeted = None;
    eventually("a free connection slot", || {
        let mut c = maild.smtp_client();
        let free = c.line().is_some_and(|l| l.starts_with("220"));
        if free {
            greeted = Some(c);
        }
        free
    });
    let mut c = greeted.expect("a greeted client");
    c.expect("HELO x", "250");
    assert_eq!(c.send_message("s@d.test", &["u@d.test"], b"still here\r\n"), 1);
}

#[test]
fn sigterm_lets_a_message_mid_data_finish_then_exits_cleanly() {
    let mut maild = maild_with_users(&["u@d.test"], &["--domain", "d.test", "--shutdown-grace", "20"]);
    let mut c = maild.smtp_client();
    c.reply();
    c.expect("HELO x", "250");
    c.expect("MAIL FROM:<s@d.test>", "250");
    c.expect("RCPT TO:<u@d.test>", "250");
    c.expect("DATA", "354");
    c.send(b"Subject: in flight\r\n\r\nfirst half\r\n");
    maild.signal("TERM");
    eventually("the listener to close", || TcpStream::connect(maild.smtp).is_err());
    c.send(b"second half\r\n.\r\n");
    assert_eq!(message_number(&c.reply()), Some(1));
    c.expect("QUIT", "221");
    let status = maild.wait();
    assert!(status.success(), "{status}");
    let entries = export_entries(&maild.data, &[]);
    assert!(entries[0].ends_with(b"first half\r\nsecond half\r\n"));
}

#[test]
fn sessions_past_the_grace_get_421() {
    let mut maild = maild_with_users(&[], &["--shutdown-grace", "1"]);
    let mut c = maild.smtp_client();
    c.reply();
    c.expect("HELO x", "250");
    maild.signal("INT");
    let line = c.line().unwrap();
    assert!(line.starts_with("421 4.3.2 mx.test"), "{line}");
    assert!(maild.wait().success());
}

#[test]
fn a_restart_on_the_same_port_works_at_once() {
    // An address of its own, so no other test's server can take the port between the
    // two runs.
    let mut first = maild_with_users(&[], &["--smtp", "127.0.0.99:0"]);
    let port = first.smtp.to_string();
    // A connection that the server closes leaves TIME_WAIT behind on its side.
    let mut c = first.smtp_client();
    c.reply();
    c.expect("QUIT", "221");
    first.stop();
    let data = first.data.clone();
    let second = Maild::start_on(&data, &["--smtp", &port]);
    assert_eq!(second.smtp.to_string(), port);
    assert!(second.smtp_client().reply().starts_with("220 mx.test ESMTP maild"));
}

#[test]
fn a_config_file_is_read_and_flags_beat_it() {
    let dir = new_data_dir();
    let config = dir.path().join("maild.toml");
    std::fs::write(&config, "hostname = \"file.example\"\ndomain = [\"f.test\"]\nmax-message-size = 4242\n").unwrap();
    add_users(dir.path(), &["u@f.test"]);
    let maild = Maild::start_on(dir.path(), &["--config", config.to_str().unwrap(), "--hostname", "flag.example"]);
    let mut c = maild.smtp_client();
    assert!(c.reply().starts_with("220 flag.example ESMTP maild"));
    c.cmd("EHLO x");
    let mut lines = Vec::new();
    while let Some(line) = c.line() {
        let last = line.as_bytes()[3] == b' ';
        lines.push(line);
        if last {
            break;
        }
    }
    assert!(lines.contains(&"250-SIZE 4242".to_string()), "{lines:?}");
    c.expect("MAIL FROM:<>", "250");
    c.expect("RCPT TO:<u@f.test>", "250 2.1.5");
}

#[test]
fn bad_configuration_is_a_clear_error() {
    let out = std::process::Command::new(MAILD).args(["--smtp", "not-an-address"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--smtp"));
}

#[test]
fn python_smtplib_sends_mail() {
    let mut maild = maild_with_users(&["ta@cs4410", "student@cs4410"], &["--domain", "CS4410"]);
    let out = python("smtp_client.py", &[&maild.smtp.port().to_string()]);
    assert!(out.contains("ok"), "{out}");
    maild.stop();
    let entries = export_entries(&maild.data, &["--user", "ta@cs4410"]);
    assert_eq!(entries.len(), 2);
    assert!(contains(&entries[0], b"Subject: from smtplib"));
}

#[test]
fn curl_sends_mail() {
    let mut maild = maild_with_users(&["u@d.test"], &["--domain", "d.test"]);
    let dir = new_data_dir();
    let mail = dir.path().join("mail.txt");
    std::fs::File::create(&mail).unwrap().write_all(b"Subject: via curl\r\n\r\nsent by curl\r\n.dot line\r\n").unwrap();
    let out = std::process::Command::new("curl")
        .args(["-sS", "--max-time", "60", &format!("smtp://{}/client.example", maild.smtp)])
        .args(["--mail-from", "s@d.test", "--mail-rcpt", "u@d.test", "-T"])
        .arg(&mail)
        .output()
        .expect("curl is needed (apt-get install curl)");
    assert!(out.status.success(), "curl: {}", String::from_utf8_lossy(&out.stderr));
    maild.stop();
    let entries = export_entries(&maild.data, &["--user", "u@d.test"]);
    assert_eq!(entries.len(), 1);
    assert!(
        entries[0].ends_with(b"Subject: via curl\r\n\r\nsent by curl\r\n.dot line\r\n"),
        "{:?}",
        String::from_utf8_lossy(&entries[0])
    );
}

#[test]
fn a_store_whose_sled_lost_frames_the_journal_no_longer_holds_is_refused_at_start() {
    let send = |maild: &Maild, number: u64| {
        let mut c = maild.smtp_client();
        c.reply();
        c.expect("HELO x", "250");
        assert_eq!(c.send_message("s@d.test", &["u@d.test"], format!("message {number}\r\n").as_bytes()), number);
        c.expect("QUIT", "221");
    };
    let mut maild = maild_with_users(&["u@d.test"], &["--domain", "d.test"]);
    send(&maild, 1);
    maild.stop();
    // sled as a power cut from here on would leave it, if sled then lost what it flushed.
    let cut = new_data_dir();
    let copied = std::process::Command::new("cp").arg("-a").arg(maild.data.join("store")).arg(cut.path()).status();
    assert!(copied.unwrap().success());
    // Each start flushes sled and starts the journal over: message 2's frame leaves it.
    for number in [2, 3] {
        let mut again = Maild::start_on(&maild.data, &["--domain", "d.test"]);
        send(&again, number);
        again.stop();
    }
    std::fs::copy(maild.data.join("store/journal"), cut.path().join("store/journal")).unwrap();
    // A maild that accepted the store would run on: the wait for an exit is bounded.
    let (exited, stderr) = maild_until_exit(cut.path(), &["--domain", "d.test"]);
    assert!(exited.is_some_and(|status| !status.success()), "maild served a store with a hole:\n{stderr}");
    assert!(stderr.contains("sled lost journal frames") && stderr.contains("range files"), "{stderr}");
}
