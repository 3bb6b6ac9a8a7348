//! What an operator relies on, against the real maild: one log line per connection, per
//! authentication failure (matched by the shipped fail2ban filter, with fail2ban's own
//! `fail2ban-regex`), per refused recipient and per accepted message; SIGHUP reloads the
//! certificate and never stops maild.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

/// Waits (bounded) until the log has a line containing every one of `parts`; returns it.
fn log_line(maild: &Maild, parts: &[&str]) -> String {
    let mut found = String::new();
    eventually(&format!("a log line with {parts:?}"), || {
        let log = maild.log();
        match log.lines().find(|l| parts.iter().all(|p| l.contains(p))) {
            Some(line) => {
                found = line.to_string();
                true
            }
            None => false,
        }
    });
    found
}

#[test]
fn connections_logins_refusals_and_messages_each_get_one_greppable_line() {
    let maild = maild_with_users(&["u@d.test"], &["--domain", "d.test", "--submission", "127.0.0.1:0"]);
    // A connection, a refused recipient of each kind, an accepted message.
    let mut c = maild.smtp_client();
    c.reply();
    let port = c.stream.local_addr().unwrap().port();
    c.expect("HELO x", "250");
    c.expect("MAIL FROM:<s@d.test>", "250");
    c.expect("RCPT TO:<nobody@d.test>", "550");
    c.expect("RCPT TO:<far@elsewhere.example>", "554");
    c.expect("RCPT TO:<u@d.test>", "250");
    c.expect("DATA", "354");
    c.send(b"Subject: logged\r\n\r\nhello\r\n.\r\n");
    assert!(c.reply().starts_with("250"));
    c.expect("QUIT", "221");
    log_line(&maild, &[&format!("smtp: connect client=127.0.0.1 port={port}")]);
    let closed = log_line(&maild, &[&format!("smtp: disconnect client=127.0.0.1 port={port} duration=")]);
    assert!(closed.ends_with('s'), "{closed}");
    log_line(&maild, &["recipient refused: client=127.0.0.1 user=- to=<nobody@d.test> reason=\"User unknown\""]);
    log_line(
        &maild,
        &["recipient refused: client=127.0.0.1 user=- to=<far@elsewhere.example> reason=\"Relay access denied\""],
    );
    let accepted =
        log_line(&maild, &["accepted message 1 client=127.0.0.1 user=- from=<s@d.test> to=<u@d.test> size="]);
    assert!(accepted.split("size=").nth(1).and_then(|s| s.parse::<u64>().ok()).is_some_and(|n| n > 20), "{accepted}");

    // Failed logins over POP3 (USER/PASS) and SMTP AUTH (PLAIN), with the name as given.
    let mut pop = Client::connect(maild.pop3);
    pop.line();
    pop.cmd("USER Guess@d.test");
    pop.line();
    pop.cmd("PASS wrong");
    assert!(pop.line().unwrap().starts_with("-ERR [AUTH]"));
    log_line(&maild, &["WARN", "auth failed: client=127.0.0.1 mechanism=USER user=\"Guess@d.test\""]);
    let mut sub = Client::connect(maild.submission());
    sub.reply();
    sub.expect("EHLO x", "250");
    let plain = base64_plain("u@d.test", "wrong");
    sub.expect(&format!("AUTH PLAIN {plain}"), "535");
    log_line(&maild, &["WARN", "auth failed: client=127.0.0.1 mechanism=PLAIN user=\"u@d.test\""]);
    // An authenticated message names its user.
    sub.expect(&format!("AUTH PLAIN {}", base64_plain("u@d.test", "pw-u@d.test")), "235");
    sub.expect("MAIL FROM:<u@d.test>", "250");
    sub.expect("RCPT TO:<u@d.test>", "250");
    sub.expect("DATA", "354");
    sub.send(b"Subject: from a user\r\n\r\nhi\r\n.\r\n");
    assert!(sub.reply().starts_with("250"));
    log_line(&maild, &["accepted message 2 client=127.0.0.1 user=u@d.test from=<u@d.test> to=<u@d.test>"]);

    // fail2ban's own tool, with the shipped filter, finds both failures and the address.
    let Ok(version) = Command::new("fail2ban-regex").arg("--version").output() else {
        panic!("fail2ban-regex is needed (apt-get install fail2ban; .ci/run installs it)");
    };
    assert!(version.status.success());
    let log_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(log_file.path(), maild.log()).unwrap();
    let filter = repo_root().join("contrib/fail2ban/filter.d/maild.conf");
    let out = Command::new("fail2ban-regex")
        .args(["--print-all-matched", log_file.path().to_str().unwrap(), filter.to_str().unwrap()])
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{report}");
    let matched = report.lines().find(|l| l.starts_with("Lines:")).unwrap_or_default();
    assert!(matched.contains(", 2 matched"), "{report}");
    assert!(report.contains("client=127.0.0.1 mechanism=USER") && report.contains("mechanism=PLAIN"), "{report}");
}

fn base64_plain(user: &str, password: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{password}"))
}

/// The SHA-256 of the certificate a STARTTLS client sees, by Python's smtplib.
fn served_certificate(smtp: std::net::SocketAddr) -> String {
    let script = "import hashlib, smtplib, ssl, sys
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
s = smtplib.SMTP(sys.argv[1], int(sys.argv[2]), timeout=60)
s.starttls(context=ctx)
print(hashlib.sha256(s.sock.getpeercert(binary_form=True)).hexdigest())
s.quit()";
    let out = Command::new("python3")
        .args(["-c", script, &smtp.ip().to_string(), &smtp.port().to_string()])
        .output()
        .expect("python3");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn sighup_reloads_the_certificate_and_never_stops_maild() {
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = (certs.path().join("cert.pem"), certs.path().join("key.pem"));
    std::fs::copy(test_cert("cert.pem"), &cert).unwrap();
    std::fs::copy(test_cert("key.pem"), &key).unwrap();
    let maild = maild_with_users(
        &["u@d.test"],
        &["--domain", "d.test", "--tls-cert", cert.to_str().unwrap(), "--tls-key", key.to_str().unwrap()],
    );
    let before = served_certificate(maild.smtp);
    // A renewed certificate (another key pair) is put in place, then SIGHUP.
    std::fs::copy(test_cert("renewed-cert.pem"), &cert).unwrap();
    std::fs::copy(test_cert("renewed-key.pem"), &key).unwrap();
    maild.signal("HUP");
    log_line(&maild, &["SIGHUP: certificate and key reloaded"]);
    log_line(&maild, &["SIGHUP: no other setting changed"]);
    let after = served_certificate(maild.smtp);
    assert_ne!(before, after, "new handshakes use the new certificate");
    // A broken file on the next SIGHUP keeps the running certificate, and maild.
    std::fs::write(&key, "not a key").unwrap();
    maild.signal("HUP");
    log_line(&maild, &["SIGHUP: keeping the running certificate"]);
    assert_eq!(served_certificate(maild.smtp), after);
    // Still serving mail, after three SIGHUPs in a row too.
    for _ in 0..3 {
        maild.signal("HUP");
    }
    std::thread::sleep(Duration::from_millis(200));
    let mut c = maild.smtp_client();
    c.reply();
    c.expect("HELO x", "250");
    assert_eq!(c.send_message("s@d.test", &["u@d.test"], b"after SIGHUP\r\n"), 1);
}

#[test]
fn a_busy_port_is_named_once_with_its_flag_before_the_store_is_touched() {
    let busy = std::net::TcpListener::bind("127.0.0.98:0").unwrap();
    let tmp = new_data_dir();
    let data = tmp.path().join("never-created");
    let out = Command::new(env!("CARGO_BIN_EXE_maild"))
        .args(["--data", data.to_str().unwrap(), "--smtp", &busy.local_addr().unwrap().to_string(), "--pop3"])
        .arg("127.0.0.98:0")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| l.contains("binding the smtp listener")).collect();
    assert_eq!(lines.len(), 1, "printed once: {stderr}");
    assert!(lines[0].contains("--smtp") && lines[0].contains("in use"), "{stderr}");
    assert!(!data.exists(), "the store was opened before the listeners were bound");
}

#[test]
fn a_missing_key_file_says_so() {
    let tmp = new_data_dir();
    let missing = tmp.path().join("missing-key.pem");
    let out = Command::new(env!("CARGO_BIN_EXE_maild"))
        .args(["--data", tmp.path().join("d").to_str().unwrap(), "--smtp", "127.0.0.1:0", "--pop3", "127.0.0.1:0"])
        .args(["--tls-cert", &test_cert("cert.pem"), "--tls-key", missing.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("missing-key.pem: cannot read the file: No such file or directory"), "{stderr}");
    assert!(!stderr.contains("no PEM private key"), "{stderr}");
}

/// The value of one sample line (`name{labels} value`) of a scrape.
fn sample(scrape: &str, series: &str) -> Option<f64> {
    scrape.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

#[test]
fn metrics_are_served_in_prometheus_text_format_and_count_what_was_sent() {
    let maild = maild_with_users(
        &["u@d.test"],
        &["--domain", "d.test", "--submission", "127.0.0.1:0", "--metrics", "127.0.0.1:0"],
    );
    let log = maild.log();
    let ready = log.lines().find(|l| l.contains("maild ready:")).unwrap();
    let address = ready.split(" metrics=").nth(1).and_then(|r| r.split_whitespace().next()).expect("metrics=");
    let mut c = maild.smtp_client();
    c.reply();
    c.expect("HELO x", "250");
    c.expect("MAIL FROM:<s@d.test>", "250");
    c.expect("RCPT TO:<nobody@d.test>", "550");
    c.expect("RSET", "250");
    for i in 0..3 {
        c.send_message("s@d.test", &["u@d.test"], format!("Subject: {i}\r\n\r\nmetrics\r\n").as_bytes());
    }
    let mut sub = Client::connect(maild.submission());
    sub.reply();
    sub.expect("EHLO x", "250");
    sub.expect(&format!("AUTH PLAIN {}", base64_plain("u@d.test", "wrong")), "535");
    let scrape = |path: &str| {
        let out =
            Command::new("curl").args(["-s", "-i", "--max-time", "60", &format!("http://{address}{path}")]).output();
        String::from_utf8_lossy(&out.expect("curl").stdout).into_owned()
    };
    let text = scrape("/metrics");
    assert!(text.starts_with("HTTP/1.1 200 OK") && text.contains("text/plain; version=0.0.4"), "{text}");
    assert!(text.trim_end().ends_with("# EOF"), "{text}");
    assert_eq!(sample(&text, "maild_messages_accepted_total"), Some(3.0), "{text}");
    assert_eq!(sample(&text, "maild_smtp_replies_total{code=\"550\"}"), Some(1.0), "{text}");
    assert_eq!(sample(&text, "maild_auth_failures_total{mechanism=\"PLAIN\"}"), Some(1.0), "{text}");
    assert_eq!(sample(&text, "maild_commit_batch_size_sum"), Some(3.0), "{text}");
    assert!(sample(&text, "maild_commit_seconds_count").is_some_and(|n| (1.0..=3.0).contains(&n)), "{text}");
    assert_eq!(sample(&text, "maild_ack_seconds_count"), Some(3.0), "{text}");
    assert!(sample(&text, "maild_connections_total{listener=\"smtp\"}").is_some_and(|n| n >= 1.0), "{text}");
    assert_eq!(sample(&text, "maild_open_connections{listener=\"submission\"}"), Some(1.0), "{text}");
    assert_eq!(sample(&text, "maild_queue_depth"), Some(0.0), "{text}");
    assert!(sample(&text, "maild_store_size_bytes").is_some_and(|n| n > 0.0), "{text}");
    assert!(scrape("/other").starts_with("HTTP/1.1 404"));
}
