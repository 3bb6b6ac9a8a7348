//! STARTTLS (SMTP, RFC 3207) and STLS (POP3, RFC 2595) with `--tls-cert`/`--tls-key`,
//! driven by Python's smtplib/poplib and curl, which check the certificate.
//! The certificate is tests/certs/ (see [`common::test_cert`]).

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use common::*;

fn tls_args() -> Vec<String> {
    vec![
        "--domain".into(),
        "d.test".into(),
        "--tls-cert".into(),
        test_cert("cert.pem"),
        "--tls-key".into(),
        test_cert("key.pem"),
    ]
}

fn maild_with_tls() -> Maild {
    let args = tls_args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    maild_with_users(&["u@d.test"], &args)
}

#[test]
fn smtplib_sends_over_starttls_and_poplib_reads_it_over_stls() {
    let mut maild = maild_with_tls();
    let cafile = test_cert("ca.pem");
    let out = python("tls_client.py", &["smtp", &maild.smtp.port().to_string(), &cafile]);
    assert_eq!(out.trim(), "number 1", "{out}");
    let out = python("tls_client.py", &["pop3", &maild.pop3.port().to_string(), &cafile, "u@d.test", "pw-u@d.test"]);
    let hex = out.trim().strip_prefix("retr ").unwrap_or_else(|| panic!("{out}"));
    let message =
        String::from_utf8((0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect())
            .unwrap();
    assert!(message.starts_with("Return-Path: <s@d.test>\r\nReceived: from tlsclient ([127.0.0.1])"), "{message}");
    // RFC 3848: the trace header says the message came over TLS.
    assert!(message.contains("with ESMTPS id 1"), "{message}");
    assert!(message.ends_with("Subject: over tls\r\n\r\nsecret body"), "{message}");
    maild.stop();
}

#[test]
fn commands_pipelined_behind_starttls_are_dropped() {
    let maild = maild_with_tls();
    let out = python("tls_client.py", &["inject", &maild.smtp.port().to_string(), &test_cert("ca.pem")]);
    assert!(out.contains("ok"), "{out}");
}

#[test]
fn a_failed_handshake_closes_only_that_connection() {
    let maild = maild_with_tls();
    let out = python("tls_client.py", &["garbage", &maild.smtp.port().to_string()]);
    assert!(out.contains("ok"), "{out}");
}

#[test]
fn sigterm_says_goodbye_inside_tls_and_exits_cleanly() {
    let args = [tls_args(), vec!["--shutdown-grace".into(), "1".into()]].concat();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut maild = maild_with_users(&["u@d.test"], &args);
    let script = repo_root().join("tests/py/tls_client.py");
    let mut idler = Command::new("python3")
        .arg(script)
        .args(["idle", &maild.smtp.port().to_string(), &test_cert("ca.pem")])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(idler.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "ready");
    maild.stop();
    let goodbye = lines.next().unwrap().unwrap();
    assert!(goodbye.starts_with("421 4.3.2 mx.test"), "{goodbye}");
    assert!(idler.wait().unwrap().success());
}

#[test]
fn curl_requires_tls_for_smtp_and_pop3() {
    let maild = maild_with_tls();
    let tmp = new_data_dir();
    let body = tmp.path().join("body.eml");
    std::fs::write(&body, "Subject: curl tls\r\n\r\nvia curl over tls\r\n").unwrap();
    let cacert = test_cert("ca.pem");
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "60", "--ssl-reqd", "--cacert", &cacert])
        .args(["--mail-from", "s@d.test", "--mail-rcpt", "u@d.test", "-T"])
        .arg(&body)
        .arg(format!("smtp://127.0.0.1:{}", maild.smtp.port()))
        .output()
        .expect("curl is needed (apt-get install curl)");
    assert!(out.status.success(), "curl smtp: {}", String::from_utf8_lossy(&out.stderr));
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "60", "--ssl-reqd", "--cacert", &cacert, "--user", "u@d.test:pw-u@d.test"])
        .arg(format!("pop3://127.0.0.1:{}/1", maild.pop3.port()))
        .output()
        .unwrap();
    assert!(out.status.success(), "curl pop3: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("with ESMTPS id 1") && text.ends_with("Subject: curl tls\r\n\r\nvia curl over tls\r\n"),
        "{text}"
    );
}

#[test]
fn without_a_certificate_neither_starttls_nor_stls_is_offered() {
    let maild = maild_with_users(&["u@d.test"], &["--domain", "d.test"]);
    let mut smtp = maild.smtp_client();
    smtp.reply();
    let ehlo = smtp.expect("EHLO x", "250");
    assert!(!ehlo.contains("STARTTLS"), "{ehlo}");
    smtp.expect("STARTTLS", "502 5.5.1");
    smtp.expect("NOOP", "250");
    let mut pop = Client::connect(maild.pop3);
    pop.line();
    pop.cmd("CAPA");
    let mut capa = Vec::new();
    while let Some(line) = pop.line() {
        if line == "." {
            break;
        }
        capa.push(line);
    }
    assert!(capa[0].starts_with("+OK") && !capa.iter().any(|l| l == "STLS"), "{capa:?}");
    pop.cmd("STLS");
    assert!(pop.line().unwrap().starts_with("-ERR"));
}

#[test]
fn unusable_tls_files_stop_maild_at_start_with_the_reason() {
    let missing = new_data_dir().path().join("nothing.pem").display().to_string();
    let not_pem = repo_root().join("README.md").display().to_string();
    let cases: [(&str, String, String); 4] = [
        ("--tls-cert", missing.clone(), test_cert("key.pem")),
        ("--tls-key", test_cert("cert.pem"), missing),
        ("--tls-cert", not_pem, test_cert("key.pem")),
        ("does not fit", test_cert("cert.pem"), test_cert("other-key.pem")),
    ];
    for (reason, cert_file, key_file) in cases {
        let data = new_data_dir();
        let (exited, stderr) = maild_until_exit(data.path(), &["--tls-cert", &cert_file, "--tls-key", &key_file]);
        assert!(exited.is_some_and(|status| !status.success()), "{cert_file} + {key_file} started:\n{stderr}");
        assert!(stderr.contains(reason), "{cert_file} + {key_file}: want {reason:?} in\n{stderr}");
        assert!(!stderr.contains("ready"), "{stderr}");
    }
}

#[test]
fn bench_starttls_sends_every_message_inside_tls() {
    let args = tls_args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut maild = maild_with_users(&["bench@d.test"], &args);
    let smtp = maild.smtp.to_string();
    let bench = |extra: &[&str]| {
        Command::new(MAILTOOL)
            .args(["bench", "smtp", "--smtp", &smtp, "--connections", "2", "--messages", "40", "--size", "2000"])
            .args(["--rcpt", "bench@d.test", "--from", "bench@d.test"])
            .args(extra)
            .output()
            .unwrap()
    };
    let out = bench(&["--starttls"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("messages: 40\n"), "{stdout}");
    maild.stop();
    let entries = export_entries(&maild.data, &[]);
    assert_eq!(entries.len(), 40);
    for entry in &entries {
        let text = String::from_utf8_lossy(entry);
        assert!(text.contains("(maild) with ESMTPS id"), "{text}");
    }
}

#[test]
fn bench_starttls_against_a_server_without_tls_fails_with_the_reason() {
    let maild = maild_with_users(&["bench@d.test"], &["--domain", "d.test"]);
    let out = Command::new(MAILTOOL)
        .args([
            "bench",
            "smtp",
            "--smtp",
            &maild.smtp.to_string(),
            "--connections",
            "1",
            "--messages",
            "1",
            "--starttls",
        ])
        .args(["--rcpt", "bench@d.test", "--from", "bench@d.test"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("STARTTLS") && stderr.contains("502"), "{stderr}");
}

/// A network namespace whose only address besides 127.0.0.1 is 10.77.1.1. A client inside that connects to 10.77.1.1 is, to maild, a client on another
/// host (its address is not loopback), and no packet leaves the namespace. Deleted on drop.
struct OtherHost(String);

impl OtherHost {
    const ADDRESS: &'static str = "10.77.1.1";

    /// None (the test skips, loudly) without root or `ip`.
    fn new(test: &str) -> Option<OtherHost> {
        let name = format!("mtls{}-{}", std::process::id(), test.len());
        let ip = |args: &[&str]| Command::new("ip").args(args).status().is_ok_and(|s| s.success());
        if !ip(&["netns", "add", &name]) {
            use std::io::Write;
            let _ = writeln!(std::io::stderr(), "SKIPPED: {test}: needs root and `ip netns`");
            return None;
        }
        let host = OtherHost(name);
        let n = host.0.as_str();
        for args in [
            &["-n", n, "link", "set", "lo", "up"][..],
            &["-n", n, "addr", "add", &format!("{}/32", OtherHost::ADDRESS), "dev", "lo"],
        ] {
            assert!(ip(args), "ip {}", args.join(" "));
        }
        Some(host)
    }
}

impl Drop for OtherHost {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

#[test]
fn with_tls_on_a_client_on_another_host_must_use_stls_before_its_password() {
    let Some(host) = OtherHost::new("with_tls_on_a_client_on_another_host_must_use_stls_before_its_password") else {
        return;
    };
    let data = new_data_dir();
    add_users(data.path(), &["u@d.test"]);
    let listen = format!("{}:0", OtherHost::ADDRESS);
    let mut args = tls_args();
    args.extend(["--smtp".into(), listen.clone(), "--pop3".into(), listen]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut maild = Maild::start_in_netns(&host.0, data.path(), &args);
    let script = repo_root().join("tests/py/tls_client.py");
    let port = maild.pop3.port().to_string();
    #[rustfmt::skip]
    let out = Command::new("ip")
        .args(["netns", "exec", &host.0, "python3"]).arg(&script)
        .args(["pop3-remote", OtherHost::ADDRESS, &port, &test_cert("ca.pem"), "u@d.test", "pw-u@d.test"])
        .output()
        .expect("ip netns exec python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}\n{}", String::from_utf8_lossy(&out.stderr), maild.log());
    assert_eq!(stdout.trim(), "stat 0");
    maild.stop();
    drop(host);
}

/// A listener's address from the readiness line (`name=IP:PORT`).
fn listener(maild: &Maild, name: &str) -> std::net::SocketAddr {
    let log = maild.log();
    let line = log.lines().find(|l| l.contains("maild ready:")).expect("readiness line");
    let start = line.find(&format!(" {name}=")).unwrap_or_else(|| panic!("{name} in {line}")) + name.len() + 2;
    line[start..].split_whitespace().next().and_then(|a| a.parse().ok()).expect("an address")
}

#[test]
fn implicit_tls_on_smtps_and_pop3s_with_python_swaks_and_fetchmail() {
    let mut args = tls_args();
    args.extend(["--smtps", "127.0.0.1:0", "--pop3s", "127.0.0.1:0"].map(String::from));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let maild = maild_with_users(&["u@d.test"], &args);
    let (smtps, pop3s) = (listener(&maild, "smtps"), listener(&maild, "pop3s"));
    // Python's SMTP_SSL and POP3_SSL, checking the certificate against the test CA.
    let script = "import poplib, smtplib, ssl, sys
ctx = ssl.create_default_context(cafile=sys.argv[1])
host, sport, pport = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
with smtplib.SMTP_SSL(host, sport, context=ctx, timeout=60) as s:
    s.ehlo('client.test')
    assert 'starttls' not in s.esmtp_features, s.esmtp_features
    s.login('u@d.test', 'pw-u@d.test')
    s.sendmail('u@d.test', ['u@d.test'], b'Subject: over 465\\r\\n\\r\\nimplicit\\r\\n')
p = poplib.POP3_SSL(host, pport, context=ctx, timeout=60)
p.user('u@d.test'); p.pass_('pw-u@d.test')
lines = b'\\n'.join(p.retr(1)[1])
assert b'implicit' in lines and b'ESMTPSA' in lines, lines
p.quit()
print('ok')";
    let ca = test_cert("ca.pem");
    let out = Command::new("python3")
        .args(["-c", script, &ca, "127.0.0.1", &smtps.port().to_string(), &pop3s.port().to_string()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));

    // swaks --tlsc (TLS on connect), with AUTH.
    let out = Command::new("swaks")
        .args(["--server", &smtps.to_string(), "--tlsc", "--auth", "PLAIN", "--auth-user", "u@d.test"])
        .args(["--auth-password", "pw-u@d.test", "--from", "u@d.test", "--to", "u@d.test", "--body", "by swaks"])
        .args(["--helo", "client.test", "--timeout", "60"])
        .output()
        .expect("swaks is needed (apt-get install swaks; .ci/run installs it)");
    let transcript = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && transcript.contains("250 2.0.0"), "{transcript}");

    // fetchmail --ssl on 995 takes both messages.
    let home = new_data_dir();
    let options = format!("ssl sslcertck sslcertfile \"{ca}\" sslcommonname mx.test");
    let (mbox, _) = fetchmail(home.path(), pop3s.port(), &options);
    let fetched = std::fs::read_to_string(&mbox).unwrap();
    assert!(fetched.contains("by swaks"), "{fetched}");

    // Plain text on an implicit TLS port is not a session.
    let mut plain = Client::connect(smtps);
    plain.send(b"EHLO x\r\n");
    assert!(plain.line().is_none_or(|l| !l.starts_with("220")));
}

#[test]
fn implicit_tls_without_a_certificate_is_refused_at_start() {
    let tmp = new_data_dir();
    let (exited, stderr) = maild_until_exit(tmp.path(), &["--pop3s", "127.0.0.1:0"]);
    assert!(exited.is_some_and(|status| !status.success()) && stderr.contains("--pop3s needs --tls-cert"), "{stderr}");
}
