//! `mailtool stress`, `send` and `fetch` against the real maild.

mod common;

use std::collections::BTreeMap;

use common::*;

/// The `key: value` lines of a tool's stdout.
fn keys(out: &ToolOutput) -> BTreeMap<String, String> {
    out.stdout_text()
        .lines()
        .filter_map(|line| line.split_once(": "))
        .map(|(key, value)| (key.to_string(), value.trim().to_string()))
        .collect()
}

fn number(keys: &BTreeMap<String, String>, key: &str) -> f64 {
    keys.get(key).unwrap_or_else(|| panic!("no {key:?} in {keys:?}")).parse().unwrap()
}

fn report(out: &ToolOutput) -> String {
    format!("status {}\nstdout:\n{}\nstderr:\n{}", out.status, out.stdout_text(), out.stderr)
}

#[test]
fn stress_finds_no_mismatch_and_every_reported_message_is_stored() {
    let mut maild = maild_with_users(&["alice@example.org", "bob@example.org"], &["--domain", "example.org"]);
    let smtp = maild.smtp.to_string();
    let args = ["stress", "--smtp", &smtp, "--rcpt", "alice@example.org", "--rcpt", "bob@example.org"];
    let out = mailtool(&maild.data, &[&args[..], &["--connections", "8", "--duration", "10s"]].concat(), None);
    let report = report(&out);
    assert!(out.status.success(), "{report}");
    let keys = keys(&out);
    assert_eq!(keys.get("mismatches").map(String::as_str), Some("0"), "{report}");
    assert!(number(&keys, "ops/s") > 0.0, "{report}");
    // CONTRACT §7: the output ends with `ops/s:` and `mismatches:`.
    let stdout = out.stdout_text();
    let last: Vec<&str> = stdout.lines().rev().take(2).collect();
    assert!(last[1].starts_with("ops/s: ") && last[0].starts_with("mismatches: "), "{report}");
    let messages = number(&keys, "messages") as u64;
    assert!(messages > 0, "{report}");
    // Every error case of CONTRACT §3 that fits a duration was exercised (the 101st
    // recipient needs 100 users: its own test below).
    for case in [
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
        "too-many-errors",
        "quit",
        "transaction",
        "pipelined-transaction",
    ] {
        assert!(number(&keys, &format!("case-{case}")) > 0.0, "case {case} never ran\n{report}");
    }
    println!("{}", out.stdout_text());

    maild.stop();
    let entries = export_entries(&maild.data, &[]);
    assert_eq!(entries.len() as u64, messages, "stored messages vs the stress report\n{report}");
    let numbers: Vec<u64> = entries.iter().map(|entry| entry_number(entry)).collect();
    assert_eq!(numbers, (1..=messages).collect::<Vec<_>>());
}

#[test]
fn stress_reaches_the_101st_recipient_and_a_small_size_limit() {
    let users: Vec<String> = (1..=101).map(|i| format!("u{i}@example.org")).collect();
    let users: Vec<&str> = users.iter().map(String::as_str).collect();
    let maild = maild_with_users(&users, &["--domain", "example.org", "--max-message-size", "3000"]);
    let smtp = maild.smtp.to_string();
    let mut args = vec!["stress", "--smtp", &smtp, "--connections", "4", "--duration", "3s", "--seed", "101"];
    for user in &users {
        args.extend(["--rcpt", user]);
    }
    let out = mailtool(&maild.data, &args, None);
    let report = report(&out);
    assert!(out.status.success(), "{report}");
    let keys = keys(&out);
    assert_eq!(keys.get("mismatches").map(String::as_str), Some("0"), "{report}");
    assert!(number(&keys, "case-too-many-recipients") > 0.0, "{report}");
    assert!(number(&keys, "case-size-too-big") > 0.0, "{report}");
    assert!(number(&keys, "messages") > 0.0, "{report}");
}

#[test]
fn stress_refuses_a_recipient_that_is_not_a_user() {
    let maild = maild_with_users(&["alice@example.org"], &["--domain", "example.org"]);
    let smtp = maild.smtp.to_string();
    let args =
        ["stress", "--smtp", &smtp, "--rcpt", "alice@example.org", "--rcpt", "ghost@example.org", "--duration", "1s"];
    let out = mailtool(&maild.data, &args, None);
    assert!(!out.status.success(), "{}", report(&out));
    assert!(out.stderr.contains("ghost@example.org") && out.stderr.contains("550"), "{}", report(&out));
}

#[test]
fn send_with_a_subject_is_stored_with_its_headers_and_body() {
    let mut maild = maild_with_users(&["alice@example.org"], &["--domain", "example.org"]);
    let smtp = maild.smtp.to_string();
    let body = b"Line one\n.leading dot\nFrom the start\nlast line";
    let args = [
        "send",
        "--smtp",
        &smtp,
        "--from",
        "sender@remote.test",
        "--to",
        "alice@example.org",
        "--subject",
        "Hello there",
    ];
    let out = mailtool(&maild.data, &args, Some(body));
    assert!(out.status.success(), "{}", report(&out));
    assert_eq!(out.stdout_text().trim(), "250 2.0.0 Ok: delivered message 1");
    // Without --subject, stdin is the whole message.
    let raw = b"Subject: raw\n\nraw body\n";
    let args = ["send", "--smtp", &smtp, "--from", "", "--to", "alice@example.org"];
    let out = mailtool(&maild.data, &args, Some(raw));
    assert!(out.status.success(), "{}", report(&out));
    assert_eq!(out.stdout_text().trim(), "250 2.0.0 Ok: delivered message 2");

    maild.stop();
    let entries = export_entries(&maild.data, &["--user", "alice@example.org"]);
    assert_eq!(entries.len(), 2);
    let text = String::from_utf8_lossy(&entries[0]).into_owned();
    assert!(text.contains("Return-Path: <sender@remote.test>\r\n"), "{text}");
    for header in
        ["From: <sender@remote.test>\r\n", "To: <alice@example.org>\r\n", "Subject: Hello there\r\n", "Date: "]
    {
        assert!(text.contains(header), "{header:?} missing in\n{text}");
    }
    // Bare LF became CRLF, the dot line came through unstuffed, the `From ` line is quoted
    // by the mboxrd export, and a CRLF ended the unterminated last line.
    assert!(text.contains("\r\n\r\nLine one\r\n.leading dot\r\n>From the start\r\nlast line\r\n"), "{text}");
    let text = String::from_utf8_lossy(&entries[1]).into_owned();
    assert!(text.contains("Return-Path: <>\r\n"), "{text}");
    assert!(text.ends_with("Subject: raw\r\n\r\nraw body\r\n"), "{text}");
}

#[test]
fn send_to_an_unknown_user_fails_with_the_servers_reply() {
    let maild = maild_with_users(&["alice@example.org"], &["--domain", "example.org"]);
    let smtp = maild.smtp.to_string();
    let args = ["send", "--smtp", &smtp, "--from", "a@remote.test", "--to", "nobody@example.org", "--subject", "x"];
    let out = mailtool(&maild.data, &args, Some(b"hello\n"));
    assert!(!out.status.success(), "{}", report(&out));
    assert!(out.stderr.contains("RCPT TO:<nobody@example.org>"), "{}", report(&out));
    assert!(out.stderr.contains("550 5.1.1") && out.stderr.contains("User unknown"), "{}", report(&out));
    assert!(out.stdout.is_empty(), "{}", report(&out));
}

#[test]
fn send_delivers_to_the_recipients_taken_and_names_the_one_refused() {
    let mut maild = maild_with_users(&["alice@example.org"], &["--domain", "example.org"]);
    let smtp = maild.smtp.to_string();
    let args = [
        "send",
        "--smtp",
        &smtp,
        "--from",
        "a@remote.test",
        "--to",
        "nobody@example.org",
        "--to",
        "alice@example.org",
        "--subject",
        "two",
    ];
    let out = mailtool(&maild.data, &args, Some(b"hello\n"));
    assert!(!out.status.success(), "{}", report(&out));
    assert!(out.stderr.contains("RCPT TO:<nobody@example.org>: 550 5.1.1"), "{}", report(&out));
    assert!(!out.stderr.contains("alice"), "{}", report(&out));
    assert_eq!(out.stdout_text().trim(), "250 2.0.0 Ok: delivered message 1");
    maild.stop();
    let entries = export_entries(&maild.data, &["--user", "alice@example.org"]);
    assert_eq!(entries.len(), 1);
    assert!(String::from_utf8_lossy(&entries[0]).contains("Subject: two\r\n"));
}

#[test]
fn fetch_writes_an_mbox_deletes_at_quit_and_then_finds_nothing() {
    let maild = maild_with_users(&["alice@example.org"], &["--domain", "example.org"]);
    let smtp = maild.smtp.to_string();
    let pop3 = maild.pop3.to_string();
    let bodies = ["first body\n", "second body\nFrom a line to quote\n", ".dotted third\n"];
    for (i, body) in bodies.iter().enumerate() {
        let subject = format!("message {i}");
        let args =
            ["send", "--smtp", &smtp, "--from", "s@remote.test", "--to", "alice@example.org", "--subject", &subject];
        let out = mailtool(&maild.data, &args, Some(body.as_bytes()));
        assert!(out.status.success(), "{}", report(&out));
    }
    let dir = new_data_dir();
    let mbox = dir.path().join("alice.mbox");
    let mbox_arg = mbox.display().to_string();
    let password = b"pw-alice@example.org\n";
    let args =
        ["fetch", "--pop3", &pop3, "--user", "alice@example.org", "--delete", "--password-stdin", "-o", &mbox_arg];
    let out = mailtool(&maild.data, &args, Some(password));
    assert!(out.status.success(), "{}", report(&out));
    let keys = keys(&out);
    assert_eq!(keys.get("fetched").map(String::as_str), Some("3"), "{}", report(&out));
    assert_eq!(keys.get("deleted").map(String::as_str), Some("3"), "{}", report(&out));

    let bytes = std::fs::read(&mbox).unwrap();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let from_lines: Vec<&str> = text.lines().filter(|l| l.starts_with("From ")).collect();
    assert_eq!(from_lines.len(), 3, "{text}");
    for line in &from_lines {
        // `From sender asctime`, e.g. `From s@remote.test Sun Nov 22 03:31:00 2026`.
        let words: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(words.len(), 7, "{line}");
        assert_eq!(words[1], "s@remote.test", "{line}");
        assert!(words[5].len() == 8 && words[5].matches(':').count() == 2, "{line}");
    }
    let entries = split_mbox(&bytes);
    assert_eq!(entries.len(), 3);
    let wanted =
        ["\r\n\r\nfirst body\r\n", "\r\n\r\nsecond body\r\n>From a line to quote\r\n", "\r\n\r\n.dotted third\r\n"];
    for (i, (entry, body)) in entries.iter().zip(wanted).enumerate() {
        let entry = String::from_utf8_lossy(entry);
        assert!(entry.starts_with("Return-Path: <s@remote.test>\r\nReceived: "), "{entry}");
        assert!(entry.contains(&format!("Subject: message {i}\r\n")), "{entry}");
        assert!(entry.ends_with(body), "{entry:?} should end with {body:?}");
    }

    // The deletions were applied at QUIT: a second fetch finds nothing and appends nothing.
    let out = mailtool(&maild.data, &args, Some(password));
    assert!(out.status.success(), "{}", report(&out));
    assert_eq!(keys_of(&out, "fetched"), "0");
    assert_eq!(std::fs::read(&mbox).unwrap(), bytes);

    // A wrong password is a clear error with the server's text.
    let out = mailtool(&maild.data, &args, Some(b"wrong\n"));
    assert!(!out.status.success(), "{}", report(&out));
    assert!(out.stderr.contains("PASS") && out.stderr.contains("-ERR"), "{}", report(&out));
    assert!(!out.stderr.contains("wrong"), "the password must not be echoed: {}", out.stderr);
}

fn keys_of(out: &ToolOutput, key: &str) -> String {
    keys(out).get(key).cloned().unwrap_or_else(|| panic!("no {key:?}: {}", report(out)))
}
