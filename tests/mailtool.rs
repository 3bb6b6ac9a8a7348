//! `mailtool` against real stores: users, export, stats, and its errors.

mod common;

use common::*;
use std::process::Command;

#[test]
fn user_add_list_passwd_del() {
    let dir = new_data_dir();
    let data = dir.path();
    let out = mailtool(data, &["user", "add", "Alice@Example.org", "--password-stdin"], Some(b"s3cret\n"));
    assert!(out.status.success(), "{}", out.stderr);
    let out = mailtool(data, &["user", "add", "alice@example.org", "--password-stdin"], Some(b"x\n"));
    assert!(!out.status.success());
    assert!(out.stderr.contains("already exists"), "{}", out.stderr);
    add_users(data, &["bob@example.org"]);
    let list = mailtool(data, &["user", "list"], None).stdout_text();
    assert_eq!(list, "Alice@Example.org\nbob@example.org\n");
    assert!(mailtool(data, &["user", "passwd", "ALICE@example.org", "--password-stdin"], Some(b"new\n"))
        .status
        .success());
    assert!(mailtool(data, &["user", "del", "bob@example.org"], None).status.success());
    assert_eq!(mailtool(data, &["user", "list"], None).stdout_text(), "Alice@Example.org\n");
    let out = mailtool(data, &["user", "del", "bob@example.org"], None);
    assert!(!out.status.success() && out.stderr.contains("no user"), "{}", out.stderr);
    // The password is stored only as an argon2 hash.
    let store_bytes: Vec<u8> = walk(&data.join("store"));
    assert!(!contains(&store_bytes, b"s3cret") && !contains(&store_bytes, b"new\n"));
}

fn walk(dir: &std::path::Path) -> Vec<u8> {
    let mut all = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            all.extend(walk(&path));
        } else {
            all.extend(std::fs::read(&path).unwrap());
        }
    }
    all
}

#[test]
fn bad_addresses_are_refused_without_creating_a_store() {
    let dir = new_data_dir();
    let data = dir.path().join("new");
    let out = mailtool(&data, &["user", "add", "not an address", "--password-stdin"], Some(b"p\n"));
    assert!(!out.status.success());
    assert!(out.stderr.contains("not a valid address"), "{}", out.stderr);
    assert!(!data.exists());
}

#[test]
fn a_user_added_on_a_stopped_store_receives_mail() {
    let mut maild = maild_with_users(&["new@d.test"], &["--domain", "d.test"]);
    let mut c = maild.smtp_client();
    c.reply();
    c.expect("HELO x", "250");
    c.expect("MAIL FROM:<>", "250");
    c.expect("RCPT TO:<new@d.test>", "250 2.1.5");
    c.expect("RCPT TO:<old@d.test>", "550 5.1.1 <old@d.test>");
    c.expect("QUIT", "221");
    // While maild runs, mailtool reaches it through its admin socket.
    let out = mailtool(&maild.data, &["stats"], None);
    assert!(out.status.success(), "{}", out.stderr);
    assert!(out.stdout_text().contains("head: 0\n"), "{}", out.stdout_text());
    maild.stop();
    let stats = mailtool(&maild.data, &["stats"], None).stdout_text();
    assert!(stats.contains("head: 0\n") && stats.contains("users: 1\n"), "{stats}");
}

#[test]
fn export_filters_by_number_range() {
    let mut maild = maild_with_users(&["u@d.test", "v@d.test"], &["--domain", "d.test"]);
    let mut c = maild.smtp_client();
    c.reply();
    c.expect("HELO x", "250");
    for i in 1..=5u64 {
        let to = if i % 2 == 0 { "v@d.test" } else { "u@d.test" };
        assert_eq!(c.send_message("s@d.test", &[to], format!("From me\r\nmessage {i}\r\n").as_bytes()), i);
    }
    c.expect("QUIT", "221");
    maild.stop();
    let numbers = |args: &[&str]| export_entries(&maild.data, args).iter().map(|e| entry_number(e)).collect::<Vec<_>>();
    assert_eq!(numbers(&[]), vec![1, 2, 3, 4, 5]);
    assert_eq!(numbers(&["--from", "2", "--to", "4"]), vec![2, 3, 4]);
    assert_eq!(numbers(&["--user", "u@d.test"]), vec![1, 3, 5]);
    assert_eq!(numbers(&["--user", "U@D.TEST", "--from", "2"]), vec![3, 5]);
    // mboxrd: a body line "From me" is quoted.
    let entries = export_entries(&maild.data, &["--from", "1", "--to", "1"]);
    assert!(contains(&entries[0], b"\r\n>From me\r\nmessage 1\r\n"));
}

#[test]
fn every_command_that_needs_a_password_takes_both_flags_and_names_them_without_a_terminal() {
    let tmp = new_data_dir();
    let data = tmp.path();
    let secret = data.join("secret");
    std::fs::write(&secret, "from-a-file\n").unwrap();
    let secret = secret.to_str().unwrap();
    // Without a terminal and without a flag: the error names both flags.
    for args in [&["user", "add", "a@d.test"][..], &["user", "passwd", "a@d.test"]] {
        let out = mailtool(data, args, None);
        assert!(!out.status.success(), "{args:?}");
        assert!(out.stderr.contains("--password-stdin") && out.stderr.contains("--password-file"), "{}", out.stderr);
    }
    // An empty password is refused, from stdin or a file.
    let out = mailtool(data, &["user", "add", "a@d.test", "--password-stdin"], Some(b"\n"));
    assert!(!out.status.success() && out.stderr.contains("an empty password is refused"), "{}", out.stderr);
    let out = mailtool(data, &["user", "add", "a@d.test", "--password-file", secret], None);
    assert!(out.status.success(), "{}", out.stderr);
    let out = mailtool(data, &["user", "passwd", "a@d.test", "--password-file", secret], None);
    assert!(out.status.success(), "{}", out.stderr);

    let mut maild = Maild::start_on(data, &["--domain", "d.test", "--submission", "127.0.0.1:0"]);
    let (pop3, submission) = (maild.pop3.to_string(), maild.submission().to_string());
    // send: the password on stdin's first line, the message after it.
    let send = ["send", "--smtp", &submission, "--user", "a@d.test", "--from", "a@d.test", "--to", "a@d.test"];
    let out = mailtool(
        data,
        &[&send[..], &["--subject", "hi", "--password-stdin"]].concat(),
        Some(b"from-a-file\nthe body\n"),
    );
    assert!(out.status.success(), "{}", out.stderr);
    let out = mailtool(data, &[&send[..], &["--subject", "hi"]].concat(), Some(b"the body\n"));
    assert!(!out.status.success() && out.stderr.contains("--password-file"), "{}", out.stderr);
    // fetch: no flag and no terminal is an error, not an empty password.
    let mbox = data.join("in.mbox");
    let fetch = ["fetch", "--pop3", &pop3, "--user", "a@d.test", "-o", mbox.to_str().unwrap()];
    let out = mailtool(data, &fetch, Some(b"from-a-file\n"));
    assert!(!out.status.success() && out.stderr.contains("--password-stdin"), "{}", out.stderr);
    let out = mailtool(data, &[&fetch[..], &["--password-file", secret]].concat(), None);
    assert!(out.status.success(), "{}", out.stderr);
    assert!(std::fs::read_to_string(&mbox).unwrap().contains("the body"));
    maild.stop();
}

#[test]
fn user_add_refuses_a_domain_maild_does_not_serve_unless_any_domain() {
    let add = |data: &std::path::Path, address: &str, extra: &[&str]| {
        mailtool(data, &[&["user", "add", address, "--password-stdin"], extra].concat(), Some(b"pw\n"))
    };
    let mut maild = maild_with_users(&["u@d.test"], &["--domain", "d.test", "--domain", "e.test"]);
    let out = add(&maild.data, "carol@nothere.example", &[]);
    assert!(!out.status.success(), "refused while maild runs");
    assert!(
        out.stderr.contains("maild does not serve nothere.example (its domains: d.test, e.test)"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("--domain nothere.example") && out.stderr.contains("--any-domain"), "{}", out.stderr);
    assert!(add(&maild.data, "carol@E.TEST", &[]).status.success(), "domains compare case-insensitively");
    let out = add(&maild.data, "carol@nothere.example", &["--any-domain"]);
    assert!(out.status.success(), "{}", out.stderr);
    // Stopped, maild's last domains still count.
    maild.stop();
    assert!(!add(&maild.data, "dave@nothere.example", &[]).status.success());
    assert!(add(&maild.data, "dave@d.test", &[]).status.success());
    let users = mailtool(&maild.data, &["user", "list"], None).stdout_text();
    assert_eq!(users, "carol@E.TEST\ncarol@nothere.example\ndave@d.test\nu@d.test\n");
    assert!(maild.log().contains("admin: user add carol@nothere.example --any-domain\n"), "{}", maild.log());
}

#[test]
fn bench_smtp_at_an_offered_rate_paces_its_messages_and_stores_them_all() {
    let mut maild = maild_with_users(&["bench@d.test"], &["--domain", "d.test"]);
    let bench = |rate: &str| {
        Command::new(MAILTOOL)
            .args(["bench", "smtp", "--smtp", &maild.smtp.to_string(), "--connections", "4", "--messages", "30"])
            .args(["--rcpt", "bench@d.test", "--from", "bench@d.test", "--rate", rate])
            .output()
            .unwrap()
    };
    let out = bench("100");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("messages: 30\n") && stdout.contains("offered rate: 100 msgs/s"), "{stdout}");
    // The 30th message is due 0.29 s after the first: pacing can only make a run longer.
    let seconds: f64 = stdout.lines().find_map(|l| l.strip_prefix("seconds: ")).unwrap().parse().unwrap();
    assert!(seconds >= 0.29, "{stdout}");
    for rate in ["0", "NaN", "inf"] {
        let out = bench(rate);
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("--rate must be a positive number"), "{out:?}");
    }
    maild.stop();
    assert_eq!(export_entries(&maild.data, &[]).len(), 30);
}
