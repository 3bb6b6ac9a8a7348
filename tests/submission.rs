//! Submission (`--submission`): SMTP AUTH required, and relay for authenticated users to
//! any domain by MX lookup, against a fake DNS server on loopback (`--resolver`) and real
//! maild servers as the MX hosts (`--mx-port`). No query or message leaves 127.0.0.0/8.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use common::*;

/// A resolver address where nothing answers (the discard port), for tests that relay nothing.
const NO_DNS: &str = "127.0.0.1:9";

/// A helper process (a Python fake server) that is killed and reaped with its handle.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts tests/py/SCRIPT (a fake server that exits when its stdin closes) and returns it
/// with the first line it prints once it is ready.
fn start_helper(script: &str, args: &[&str]) -> (Reaped, String) {
    let mut child = Command::new("python3")
        .arg(repo_root().join("tests/py").join(script))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut first).unwrap();
    (Reaped(child), first)
}

/// tests/py/dns_server.py serving a zone.
struct Dns {
    _server: Reaped,
    port: u16,
    _zone: tempfile::TempDir,
}

impl Dns {
    fn start(zone_json: &str) -> Dns {
        let dir = new_data_dir();
        let zone = dir.path().join("zone.json");
        std::fs::write(&zone, zone_json).unwrap();
        let (server, first) = start_helper("dns_server.py", &[&zone.display().to_string()]);
        let port = first
            .trim()
            .strip_prefix("port ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("dns_server.py said {first:?}"));
        Dns { _server: server, port, _zone: dir }
    }
}

fn mailbox(maild: &Maild, user: &str) -> Vec<Vec<u8>> {
    export_entries(&maild.data, &["--user", user])
}

fn queue_depth(maild: &Maild) -> u64 {
    let stats = mailtool(&maild.data, &["stats"], None).stdout_text();
    stats.lines().find_map(|l| l.strip_prefix("queue depth: ")).and_then(|n| n.trim().parse().ok()).unwrap_or(u64::MAX)
}

#[test]
fn submission_needs_auth_then_delivers_and_the_smtp_port_still_relays_for_nobody() {
    // No remote recipient is accepted here; the unused resolver is pinned to loopback anyway.
    let maild = maild_with_users(
        &["u@d.test", "v@d.test"],
        &["--domain", "d.test", "--submission", "127.0.0.1:0", "--resolver", NO_DNS],
    );
    let port = maild.submission().port().to_string();
    let out = python("submission_client.py", &[&port, "u@d.test", "pw-u@d.test", "v@d.test"]);
    assert_eq!(out.trim(), "number 1", "{out}");
    let entries = mailbox(&maild, "v@d.test");
    assert_eq!(entries.len(), 1);
    let text = String::from_utf8_lossy(&entries[0]);
    // RFC 3848: the trace header says the client authenticated.
    assert!(text.contains("Return-Path: <u@d.test>") && text.contains("with ESMTPA id 1"), "{text}");

    // Port 25's listener offers no AUTH and keeps refusing to relay.
    let mut smtp = maild.smtp_client();
    smtp.reply();
    let ehlo = smtp.expect("EHLO x", "250");
    assert!(!ehlo.contains("AUTH"), "{ehlo}");
    smtp.expect("AUTH PLAIN AHVAZC50ZXN0AHB3LXVAZC50ZXN0", "502");
    smtp.expect("MAIL FROM:<u@d.test>", "250");
    smtp.expect("RCPT TO:<far@remote.test>", "554 5.7.1 <far@remote.test>: Relay access denied");
}

#[test]
fn with_a_certificate_submission_wants_tls_before_auth() {
    let (cert_file, key_file) = (test_cert("cert.pem"), test_cert("key.pem"));
    let maild = maild_with_users(
        &["u@d.test"],
        &[
            "--domain",
            "d.test",
            "--submission",
            "127.0.0.1:0",
            "--resolver",
            NO_DNS,
            "--tls-cert",
            &cert_file,
            "--tls-key",
            &key_file,
        ],
    );
    let mut client = Client::connect(maild.submission());
    client.reply();
    let ehlo = client.expect("EHLO x", "250");
    assert!(ehlo.contains("STARTTLS") && !ehlo.contains("AUTH"), "{ehlo}");
    // AHVAZC50ZXN0AHB3LXVAZC50ZXN0 is "\0u@d.test\0pw-u@d.test": the right password, refused in the clear.
    client.expect("AUTH PLAIN AHVAZC50ZXN0AHB3LXVAZC50ZXN0", "538 5.7.11");
    client.expect("MAIL FROM:<u@d.test>", "530 5.7.0");
}

#[test]
fn mailtool_send_logs_in_over_checked_tls() {
    let (cert_file, key_file) = (test_cert("cert.pem"), test_cert("key.pem"));
    let maild = maild_with_users(
        &["u@d.test", "v@d.test"],
        &[
            "--domain",
            "d.test",
            "--submission",
            "127.0.0.1:0",
            "--resolver",
            NO_DNS,
            "--tls-cert",
            &cert_file,
            "--tls-key",
            &key_file,
        ],
    );
    let submission = maild.submission().to_string();
    let secrets = new_data_dir();
    let (right, wrong) = (secrets.path().join("right"), secrets.path().join("wrong"));
    std::fs::write(&right, "pw-u@d.test\n").unwrap();
    std::fs::write(&wrong, "not-the-password\n").unwrap();
    let (right, wrong, ca) = (right.display().to_string(), wrong.display().to_string(), test_cert("ca.pem"));
    let send = |extra: &[&str]| {
        let mut args = vec![
            "send",
            "--smtp",
            &submission,
            "--from",
            "u@d.test",
            "--to",
            "v@d.test",
            "--subject",
            "via submission",
        ];
        args.extend_from_slice(extra);
        mailtool(&maild.data, &args, Some(b"sent by mailtool\n"))
    };

    let out = send(&["--starttls", "--tls-ca", &ca, "--user", "u@d.test", "--password-file", &right]);
    assert!(out.status.success(), "{}{}", out.stdout_text(), out.stderr);
    assert!(out.stdout_text().contains("delivered message 1"), "{}", out.stdout_text());
    let entries = mailbox(&maild, "v@d.test");
    assert_eq!(entries.len(), 1);
    let text = String::from_utf8_lossy(&entries[0]);
    assert!(text.contains("with ESMTPSA id 1") && text.contains("sent by mailtool"), "{text}");

    // Each refusal is an error that says why, and the password never appears in it.
    let cases: [(&[&str], &str); 4] = [
        (&["--user", "u@d.test", "--password-file", &right], "--starttls"),
        (&["--starttls", "--tls-ca", &ca, "--user", "u@d.test", "--password-file", &wrong], "535"),
        (
            &["--starttls", "--tls-ca", &test_cert("other-ca.pem"), "--user", "u@d.test", "--password-file", &right],
            "STARTTLS",
        ),
        (&["--starttls", "--tls-ca", &ca], "530"),
    ];
    for (extra, why) in cases {
        let out = send(extra);
        assert!(!out.status.success(), "{extra:?} should fail: {}", out.stdout_text());
        assert!(out.stderr.contains(why), "{extra:?}: {}", out.stderr);
        assert!(!out.stderr.contains("pw-u@d.test") && !out.stderr.contains("AHVAZC50ZXN0"), "{}", out.stderr);
    }
    assert_eq!(mailbox(&maild, "v@d.test").len(), 1, "only the first send delivered");
}

/// A maild for `domains` on `ip`:`port` with these users.
fn mx_host(ip: &str, port: &str, domains: &[&str], users: &[&str]) -> Maild {
    mx_host_with(ip, port, domains, users, &[])
}

fn mx_host_with(ip: &str, port: &str, domains: &[&str], users: &[&str], extra: &[&str]) -> Maild {
    let tmp = new_data_dir();
    add_users(tmp.path(), users);
    let mut args: Vec<String> = extra.iter().map(|a| a.to_string()).collect();
    args.extend(["--smtp".to_string(), format!("{ip}:{port}")]);
    for domain in domains {
        args.extend(["--domain".to_string(), domain.to_string()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut maild = Maild::start_on(tmp.path(), &args);
    maild.keep(tmp);
    maild
}

#[test]
fn relay_follows_mx_preference_falls_back_and_bounces_what_cannot_go() {
    // MX hosts share one port on different loopback addresses, as real ones share 25.
    let second =
        mx_host("127.0.0.3", "0", &["remote.test", "fallback.test"], &["bob@remote.test", "dora@fallback.test"]);
    let mx_port = second.smtp.port().to_string();
    // The preferred remote.test host has a certificate: the relay must use STARTTLS.
    let (cert, key) = (test_cert("cert.pem"), test_cert("key.pem"));
    let first = mx_host_with(
        "127.0.0.5",
        &mx_port,
        &["remote.test"],
        &["bob@remote.test"],
        &["--tls-cert", &cert, "--tls-key", &key],
    );
    // brokentls.test's MX offers STARTTLS and hangs up after its 220: the relay must
    // connect again and send in plain text.
    let broken_dir = new_data_dir();
    let broken_out = broken_dir.path().join("received");
    let (_broken, ready) =
        start_helper("broken_tls_mx.py", &["127.0.0.6", &mx_port, &broken_out.display().to_string()]);
    assert_eq!(ready.trim(), "ready");
    let plain = mx_host("127.0.0.4", &mx_port, &["plain.test"], &["carol@plain.test"]);

    // remote.test: both MX hosts answer, the lower preference must get the mail.
    // fallback.test: its preferred host (127.0.0.2) has nobody listening.
    // plain.test: no MX, so its own A record is the implicit MX (RFC 5321 §5.1).
    // nullmx.test refuses mail (RFC 7505); nowhere.test does not exist; broken.test's
    // nameserver fails (SERVFAIL), which is a reason to wait, not to bounce.
    let dns = Dns::start(
        r#"{"mx": {"remote.test": [[20, "second.remote.test"], [10, "first.remote.test"]],
                   "fallback.test": [[10, "dead.fallback.test"], [20, "second.remote.test"]],
                   "nullmx.test": [[0, "."]], "brokentls.test": [[10, "mx.brokentls.test"]]},
            "a": {"first.remote.test": ["127.0.0.5"], "second.remote.test": ["127.0.0.3"],
                  "dead.fallback.test": ["127.0.0.2"], "plain.test": ["127.0.0.4"],
                  "mx.brokentls.test": ["127.0.0.6"]},
            "aaaa": {},
            "servfail": ["broken.test"]}"#,
    );
    let resolver = format!("127.0.0.1:{}", dns.port);
    let a = maild_with_users(
        &["u@d.test"],
        &[
            "--domain",
            "d.test",
            "--submission",
            "127.0.0.1:0",
            "--resolver",
            &resolver,
            "--mx-port",
            &mx_port,
            "--retry-min",
            "1s",
        ],
    );
    let port = a.submission().port().to_string();
    let recipients = [
        "bob@remote.test",
        "dora@fallback.test",
        "carol@plain.test",
        "eve@brokentls.test",
        "x@nullmx.test",
        "y@nowhere.test",
        "z@broken.test",
    ];
    let out =
        python("submission_client.py", &[&[port.as_str(), "u@d.test", "pw-u@d.test"][..], &recipients[..]].concat());
    assert_eq!(out.trim(), "number 1", "{out}");

    eventually("bob's copy at the preferred MX", || mailbox(&first, "bob@remote.test").len() == 1);
    eventually("dora's copy at the fallback MX", || mailbox(&second, "dora@fallback.test").len() == 1);
    eventually("carol's copy at the implicit MX", || mailbox(&plain, "carol@plain.test").len() == 1);
    assert_eq!(mailbox(&second, "bob@remote.test").len(), 0, "the less preferred MX got bob's mail");
    let bob = String::from_utf8_lossy(&mailbox(&first, "bob@remote.test")[0]).into_owned();
    assert!(
        bob.contains("Return-Path: <u@d.test>") && bob.contains("Subject: submitted\r\n\r\nsent with AUTH\r\n"),
        "{bob}"
    );
    assert!(bob.contains("with ESMTPA id 1"), "A's trace header travels with it: {bob}");
    // The MX host's own trace header says the relay came over TLS; the host without a
    // certificate got plain SMTP.
    assert!(bob.contains("by mx.test (maild) with ESMTPS id 1"), "{bob}");
    let dora = String::from_utf8_lossy(&mailbox(&second, "dora@fallback.test")[0]).into_owned();
    assert!(dora.contains("by mx.test (maild) with ESMTP id 1"), "{dora}");
    eventually("eve's copy, sent again in plain text", || {
        std::fs::read(&broken_out).is_ok_and(|r| contains(&r, b"=== end"))
    });
    let eve = String::from_utf8_lossy(&std::fs::read(&broken_out).unwrap()).into_owned();
    assert!(
        eve.starts_with("RCPT TO:<eve@brokentls.test>\n") && eve.contains("sent with AUTH\r\n.\r\n=== end"),
        "{eve}"
    );

    eventually("two bounces to the sender", || mailbox(&a, "u@d.test").len() == 2);
    let all: Vec<String> = mailbox(&a, "u@d.test").iter().map(|e| String::from_utf8_lossy(e).into_owned()).collect();
    let all = all.join("\n");
    assert!(all.contains("Status: 5.1.10") && all.contains("x@nullmx.test"), "{all}");
    assert!(all.contains("Status: 5.1.2") && all.contains("y@nowhere.test"), "{all}");
    for not_bounced in [&recipients[..4], &recipients[6..]].concat() {
        assert!(!all.contains(not_bounced), "{not_bounced} bounced: {all}");
    }
    // Only broken.test stays queued, deferred with the DNS failure as its reason.
    eventually("A's queue to hold broken.test alone", || queue_depth(&a) == 1);
    let queue = mailtool(&a.data, &["queue"], None).stdout_text();
    assert!(
        queue.contains("recipients=<z@broken.test>") && queue.contains("MX lookup for broken.test failed"),
        "{queue}"
    );
    drop(dns);
}

#[test]
fn mail_for_a_peer_that_is_away_waits_for_it_instead_of_going_to_dns() {
    // A store that has known gone.test as the domain of a peer found by mDNS, as after a
    // restart before the peer is heard again, or after it left: no peer serves it now.
    let data = new_data_dir();
    add_users(data.path(), &["u@d.test"]);
    edit_stopped_store(data.path(), |db| {
        // Last heard a minute ago (the value: seconds since the epoch).
        let seen = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() - 60;
        db.open_tree("peer_domains").unwrap().insert("gone.test", &seen.to_be_bytes()).unwrap();
    });
    // DNS knows neither domain: nowhere.test bounces at once; gone.test must wait.
    let dns = Dns::start(r#"{"mx": {}, "a": {}, "aaaa": {}}"#);
    let resolver = format!("127.0.0.1:{}", dns.port);
    let mut a = Maild::start_on(
        data.path(),
        &["--domain", "d.test", "--submission", "127.0.0.1:0", "--resolver", &resolver, "--retry-min", "1s"],
    );
    a.keep(data);
    let port = a.submission().port().to_string();
    let out = python("submission_client.py", &[&port, "u@d.test", "pw-u@d.test", "x@gone.test", "y@nowhere.test"]);
    assert_eq!(out.trim(), "number 1", "{out}");
    eventually("the bounce for nowhere.test", || mailbox(&a, "u@d.test").len() == 1);
    let bounce = String::from_utf8_lossy(&mailbox(&a, "u@d.test")[0]).into_owned();
    assert!(
        bounce.contains("Status: 5.1.2") && bounce.contains("y@nowhere.test") && !bounce.contains("x@gone.test"),
        "{bounce}"
    );
    eventually("gone.test queued, waiting for its peer", || {
        let queue = mailtool(&a.data, &["queue"], None).stdout_text();
        queue.contains("recipients=<x@gone.test>") && queue.contains("its peer server is away")
    });
    assert_eq!(queue_depth(&a), 1);
    drop(dns);
}

#[test]
fn a_strangers_mail_for_a_peer_never_goes_by_mx_after_the_peer_leaves() {
    // DNS would send b.test's mail to a real MX host, which would take it.
    let mx = mx_host("127.0.0.7", "0", &["b.test"], &["bob@b.test"]);
    let mx_port = mx.smtp.port().to_string();
    let dns = Dns::start(r#"{"mx": {"b.test": [[10, "mx.b.test"]]}, "a": {"mx.b.test": ["127.0.0.7"]}, "aaaa": {}}"#);
    let resolver = format!("127.0.0.1:{}", dns.port);
    let relaying =
        ["--domain", "d.test", "--submission", "127.0.0.1:0", "--resolver", &resolver, "--mx-port", &mx_port];
    let relaying = [&relaying[..], &["--retry-min", "1s", "--retry-max", "1s"]].concat();
    // b.test is a peer's domain; the peer is down, so the message waits in the queue.
    let mut a = maild_with_users(&["u@d.test"], &[&relaying[..], &["--peer", "b.test=127.0.0.1:9"]].concat());
    let mut stranger = a.smtp_client();
    stranger.reply();
    stranger.expect("EHLO stranger", "250");
    stranger.send_message("someone@elsewhere.test", &["bob@b.test"], b"Subject: for the peer\r\n\r\nhi\r\n");
    stranger.expect("QUIT", "221");
    eventually("the message queued for the peer", || queue_depth(&a) == 1);
    // The peer leaves (maild restarts without it), while relaying stays on.
    a.stop();
    let data = a.data.clone();
    let a = Maild::start_on(&data, &relaying);
    // (The maild before routes were kept sent it to the MX host at the first attempt.)
    eventually("an attempt after the restart, waiting for the peer", || {
        mailtool(&a.data, &["queue"], None).stdout_text().contains("its peer server is away")
    });
    assert!(mailbox(&mx, "bob@b.test").is_empty(), "a stranger's mail went out by MX");
    // An authenticated user's mail for b.test, accepted for MX relay now, does go there.
    let port = a.submission().port().to_string();
    let out = python("submission_client.py", &[&port, "u@d.test", "pw-u@d.test", "bob@b.test"]);
    assert_eq!(out.trim(), "number 2", "{out}");
    eventually("the authenticated user's copy at the MX", || mailbox(&mx, "bob@b.test").len() == 1);
    assert!(String::from_utf8_lossy(&mailbox(&mx, "bob@b.test")[0]).contains("sent with AUTH"));
    assert_eq!(queue_depth(&a), 1, "the stranger's message still waits");
    drop(dns);
}

/// The malformed endings of the SMTP smuggling research (SEC Consult, 2023; smtpsmug):
/// each, in a message relayed to an MX host, must reach it with CRLF line ends only.
const SMUGGLING_ENDINGS: &[&[u8]] = &[
    b"\n.\n",
    b"\n.\r\n",
    b"\r\n.\n",
    b"\r.\r\n",
    b"\r\n.\r",
    b"\r.\r",
    b"\n.\r",
    b"\r\n\x00.\r\n",
    b"\r.\n",
    b"\n\n.\n\n",
];

#[test]
fn what_is_relayed_to_mx_hosts_has_crlf_line_ends_only_and_stays_one_message() {
    let mx = mx_host("127.0.0.7", "0", &["remote.test"], &["bob@remote.test"]);
    let mx_port = mx.smtp.port().to_string();
    let dns = Dns::start(
        r#"{"mx": {"remote.test": [[10, "mx.remote.test"]]}, "a": {"mx.remote.test": ["127.0.0.7"]}, "aaaa": {}}"#,
    );
    let resolver = format!("127.0.0.1:{}", dns.port);
    let a = maild_with_users(
        &["u@d.test"],
        &["--domain", "d.test", "--submission", "127.0.0.1:0", "--resolver", &resolver, "--mx-port", &mx_port],
    );
    let mut c = Client::connect(a.submission());
    c.reply();
    c.expect("EHLO client.test", "250");
    use base64::Engine as _;
    let plain = base64::engine::general_purpose::STANDARD.encode("\0u@d.test\0pw-u@d.test");
    c.expect(&format!("AUTH PLAIN {plain}"), "235");
    for (i, ending) in SMUGGLING_ENDINGS.iter().enumerate() {
        c.expect("MAIL FROM:<u@d.test>", "250");
        c.expect("RCPT TO:<bob@remote.test>", "250");
        c.expect("DATA", "354");
        let mut body = format!("Subject: smuggle {i}\r\n\r\nfirst part").into_bytes();
        body.extend_from_slice(ending);
        body.extend_from_slice(b"MAIL FROM:<admin@remote.test>\r\nRCPT TO:<bob@remote.test>\r\nDATA\r\nforged\r\n");
        body.extend_from_slice(b"\r\n.\r\n");
        c.send(&body);
        assert!(c.reply().starts_with("250"), "ending {i} must not end the data at maild");
    }
    // Each arrives at the MX as one message (nothing forged), with CRLF line ends only.
    let mut received = Vec::new();
    eventually("every message at the MX", || {
        received = mailbox(&mx, "bob@remote.test");
        received.len() >= SMUGGLING_ENDINGS.len()
    });
    assert_eq!(received.len(), SMUGGLING_ENDINGS.len());
    for entry in &received {
        for (at, &b) in entry.iter().enumerate() {
            let bare_lf = b == b'\n' && (at == 0 || entry[at - 1] != b'\r');
            let bare_cr = b == b'\r' && entry.get(at + 1) != Some(&b'\n');
            assert!(!bare_lf && !bare_cr, "a bare line end at {at}: {:?}", String::from_utf8_lossy(entry));
        }
        assert!(contains(entry, b"forged"), "the forged part is text inside the one message");
    }
    // What maild stored stays as received.
    let stored = export_entries(&a.data, &[]);
    assert!(stored.iter().any(|e| contains(e, b"first part\n.\nMAIL FROM:")), "stored as received");
}

#[test]
fn addresses_that_would_change_meaning_when_sent_on_are_refused_and_submission_sends_no_null_sender() {
    let a =
        maild_with_users(&["u@d.test"], &["--domain", "d.test", "--submission", "127.0.0.1:0", "--resolver", NO_DNS]);
    let mut c = a.smtp_client();
    c.reply();
    c.expect("HELO x", "250");
    c.expect("MAIL FROM:", "501 5.5.4");
    c.expect("MAIL FROM:<s\"x@d.test>", "501");
    c.expect("MAIL FROM:<s@d.test>", "250");
    for bad in ["x>y@d.test", "x\\y@d.test", "\"unterminated@d.test", "u@d.test>x"] {
        c.expect(&format!("RCPT TO:{bad}"), "501");
    }
    // A valid quoted local part passes the syntax check (and is then not a user here).
    c.expect("RCPT TO:<\"a<b\"@d.test>", "550 5.1.1");
    let mut s = Client::connect(a.submission());
    s.reply();
    s.expect("EHLO x", "250");
    use base64::Engine as _;
    let plain = base64::engine::general_purpose::STANDARD.encode("\0u@d.test\0pw-u@d.test");
    s.expect(&format!("AUTH PLAIN {plain}"), "235");
    s.expect("MAIL FROM:<>", "553 5.7.1");
    s.expect("MAIL FROM:<u@d.test>", "250");
}
