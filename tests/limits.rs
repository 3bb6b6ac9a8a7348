//! What a hostile client can cost, measured from outside (CONTRACT §9, docs/SECURITY.md):
//! password checks, unread replies, message data in flight, connections per listener and
//! per client address, and the modes of every file maild and mailtool create. Memory is
//! read from /proc; the bounds are generous so a slow machine never turns them red.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use socket2::{Domain, Socket, Type};

/// A TCP connection from a chosen loopback address, so one test can be many clients.
fn connect_from(source: Ipv4Addr, to: SocketAddr) -> TcpStream {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    socket.bind(&SocketAddr::new(IpAddr::V4(source), 0).into()).unwrap();
    socket.connect(&to.into()).unwrap();
    let stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    stream
}

/// Reads one CRLF line (bytes up to LF), or None at EOF.
fn read_line(stream: &mut TcpStream) -> Option<String> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        match stream.read(&mut byte) {
            Ok(0) => return (!line.is_empty()).then(|| String::from_utf8_lossy(&line).into_owned()),
            Ok(_) if byte[0] == b'\n' => return Some(String::from_utf8_lossy(&line).trim_end().to_string()),
            Ok(_) => line.push(byte[0]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
}

/// Writes `bytes` (or as much as the server takes within `bound`) and reads nothing back;
/// leaves `stream` non-blocking.
fn send_without_reading(stream: &mut TcpStream, bytes: &[u8], bound: Duration) {
    stream.set_nonblocking(true).unwrap();
    let mut sent = 0;
    let started = Instant::now();
    while sent < bytes.len() && started.elapsed() < bound {
        match stream.write(&bytes[sent..]) {
            Ok(n) => sent += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => panic!("{e}"),
        }
    }
}

/// One POP3 login attempt from `source`; the reply to PASS.
fn pop3_attempt(source: Ipv4Addr, pop3: SocketAddr, user: &str, password: &str) -> String {
    let mut stream = connect_from(source, pop3);
    let greeting = read_line(&mut stream).unwrap_or_default();
    assert!(greeting.starts_with("+OK"), "{greeting}");
    stream.write_all(format!("USER {user}\r\nPASS {password}\r\n").as_bytes()).unwrap();
    let user_reply = read_line(&mut stream).unwrap_or_default();
    assert!(user_reply.starts_with("+OK"), "{user_reply}");
    read_line(&mut stream).unwrap_or_default()
}

#[test]
fn two_hundred_parallel_wrong_passwords_cost_bounded_memory_and_the_right_one_still_works() {
    let maild = maild_with_users(&["u@d.test"], &["--domain", "d.test"]);
    let before = maild.memory("VmRSS");
    // 200 clients, each from its own address guessing its own account, so that no
    // per-address or per-account rule stops them: only the global bound on concurrent
    // checks stands between them and 200 × 19 MiB.
    let replies: Vec<String> = std::thread::scope(|scope| {
        let attempts: Vec<_> = (0..200u32)
            .map(|i| {
                let source = Ipv4Addr::new(127, 1, (i / 200) as u8, (i % 200 + 2) as u8);
                scope.spawn(move || pop3_attempt(source, maild.pop3, &format!("guess{i}@d.test"), "wrong"))
            })
            .collect();
        attempts.into_iter().map(|a| a.join().unwrap()).collect()
    });
    let peak = maild.memory("VmHWM");
    eprintln!("200 parallel wrong passwords: peak growth {} MiB", peak.saturating_sub(before) / MIB);
    assert!(replies.iter().all(|r| r.starts_with("-ERR [AUTH]")), "{:?}", &replies[..5]);
    assert!(peak.saturating_sub(before) < 512 * MIB, "peak grew by {} MiB", (peak - before) / MIB);
    // 20 at once from one address: a few are checked, the rest are refused at once.
    let replies: Vec<String> = std::thread::scope(|scope| {
        let attempts: Vec<_> = (0..20)
            .map(|_| scope.spawn(|| pop3_attempt(Ipv4Addr::new(127, 2, 0, 1), maild.pop3, "u@d.test", "wrong")))
            .collect();
        attempts.into_iter().map(|a| a.join().unwrap()).collect()
    });
    let throttled = replies.iter().filter(|r| r.starts_with("-ERR [SYS/TEMP]")).count();
    assert!(throttled >= 10, "{replies:?}");
    assert!(maild.log().contains("auth throttled: client=127.2.0.1"), "{}", maild.log());
    // The account was guessed at, so its next turn may be seconds away; it comes.
    let mut c = pop3_login(maild.pop3, "u@d.test", "pw-u@d.test");
    c.cmd("STAT");
    assert!(c.line().unwrap().starts_with("+OK 0 "));
    let after = maild.memory("VmRSS");
    eprintln!("after the attack: {} MiB over idle", after.saturating_sub(before) / MIB);
    assert!(after.saturating_sub(before) < 128 * MIB, "still {} MiB over idle", (after - before) / MIB);
}

#[test]
fn the_third_wrong_password_closes_the_connection() {
    let maild = maild_with_users(&["u@d.test"], &["--domain", "d.test"]);
    let mut stream = connect_from(Ipv4Addr::new(127, 3, 0, 1), maild.pop3);
    read_line(&mut stream).unwrap();
    for _ in 0..3 {
        stream.write_all(b"USER u@d.test\r\nPASS wrong\r\n").unwrap();
        assert!(read_line(&mut stream).unwrap().starts_with("+OK"));
        assert!(read_line(&mut stream).unwrap().starts_with("-ERR [AUTH] invalid"));
    }
    assert!(read_line(&mut stream).unwrap().starts_with("-ERR [AUTH] too many failed logins"));
    assert_eq!(read_line(&mut stream), None);
}

#[test]
fn pipelined_listings_that_are_not_read_hold_bounded_memory() {
    let maild = maild_with_users(&["u@d.test"], &["--domain", "d.test"]);
    // 16 senders, so that group commit stores them quickly.
    std::thread::scope(|scope| {
        for sender in 0..16 {
            let maild = &maild;
            scope.spawn(move || {
                let mut smtp = maild.smtp_client();
                smtp.reply();
                smtp.expect("HELO x", "250");
                for i in 0..5000 / 16 + usize::from(sender < 5000 % 16) {
                    smtp.send_message("s@d.test", &["u@d.test"], format!("message {sender}.{i}\r\n").as_bytes());
                }
            });
        }
    });
    let mut pop = pop3_login(maild.pop3, "u@d.test", "pw-u@d.test");
    pop.cmd("LIST");
    assert!(pop.line().unwrap().starts_with("+OK 5000 messages"));
    let before = maild.memory("VmRSS");
    // 64 KiB of LIST asks for ~650 MB of answers; none of it is read.
    send_without_reading(&mut pop.stream, "LIST\r\n".repeat(64 * 1024 / 6).as_bytes(), Duration::from_secs(10));
    std::thread::sleep(Duration::from_secs(3));
    let growth = maild.memory("VmHWM").saturating_sub(before);
    eprintln!("64 KiB of LIST over 5,000 messages, unread: peak growth {} MiB", growth / MIB);
    assert!(growth < 256 * MIB, "grew by {} MiB", growth / MIB);
    drop(pop);
    // Everyone else is served meanwhile and after.
    let mut other = pop3_login(maild.pop3, "u@d.test", "pw-u@d.test");
    other.cmd("STAT");
    assert!(other.line().unwrap().starts_with("+OK 5000 "));
}

#[test]
fn smtp_clients_that_do_not_read_their_replies_hold_up_no_one_and_little_memory() {
    let maild = maild_with_users(&["u@d.test"], &["--domain", "d.test"]);
    let mut warm = maild.smtp_client();
    warm.reply();
    warm.expect("HELO x", "250");
    let before = maild.memory("VmRSS");
    // Eight clients pipeline 4 MiB of NOOPs each (~10 MB of replies apiece, more than the
    // socket buffers hold with a small receive window) and read none.
    let request = "NOOP\r\n".repeat((4 << 20) / 6);
    let stuck: Vec<TcpStream> = (0..8)
        .map(|_| {
            let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
            socket.set_recv_buffer_size(4096).unwrap();
            socket.connect(&maild.smtp.into()).unwrap();
            let mut stream: TcpStream = socket.into();
            send_without_reading(&mut stream, request.as_bytes(), Duration::from_secs(5));
            stream
        })
        .collect();
    // Sessions share threads now: one whose client reads nothing must not stall the others.
    let mut c = maild.smtp_client();
    assert!(c.reply().starts_with("220"));
    c.expect("HELO x", "250");
    assert_eq!(c.send_message("s@d.test", &["u@d.test"], b"past the stuck ones\r\n"), 1);
    warm.expect("NOOP", "250");
    let growth = maild.memory("VmHWM").saturating_sub(before);
    eprintln!("8 clients x 4 MiB of unread NOOPs: peak growth {} MiB", growth / MIB);
    assert!(growth < 64 * MIB, "grew by {} MiB", growth / MIB);
    drop(stuck);
    assert_eq!(c.send_message("s@d.test", &["u@d.test"], b"and after\r\n"), 2);
}

/// DATA of `size` bytes from its own connection; the reply to the final dot.
fn send_large(smtp: SocketAddr, size: usize) -> String {
    let mut c = Client::connect(smtp);
    c.reply();
    c.expect("HELO x", "250");
    c.expect("MAIL FROM:<s@d.test>", "250");
    c.expect("RCPT TO:<u@d.test>", "250");
    c.expect("DATA", "354");
    let line = [b'x'; 998];
    let mut body = Vec::with_capacity(size + 1024);
    body.extend_from_slice(b"Subject: large\r\n\r\n");
    while body.len() < size {
        body.extend_from_slice(&line);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(b".\r\n");
    c.send(&body);
    c.reply()
}

#[test]
fn thirty_messages_of_twenty_megabytes_at_once_stay_within_the_data_budget() {
    let maild = maild_with_users(&["u@d.test"], &["--domain", "d.test", "--max-data-in-flight", "134217728"]);
    let before = maild.memory("VmRSS");
    let replies: Vec<String> = std::thread::scope(|scope| {
        let senders: Vec<_> = (0..30).map(|_| scope.spawn(|| send_large(maild.smtp, 20_000_000))).collect();
        senders.into_iter().map(|s| s.join().unwrap()).collect()
    });
    let peak = maild.memory("VmHWM").saturating_sub(before);
    let accepted = replies.iter().filter(|r| r.starts_with("250")).count();
    let refused = replies.iter().filter(|r| r.starts_with("452 4.3.1")).count();
    assert_eq!(accepted + refused, 30, "{replies:?}");
    assert!(accepted >= 1, "{replies:?}");
    eprintln!("30 x 20 MB at once: {accepted} accepted, {refused} got 452; peak growth {} MiB", peak / MIB);
    assert!(peak < 1024 * MIB, "peak grew by {} MiB", peak / MIB);
    // Once the crowd is gone, a large message fits again.
    assert!(send_large(maild.smtp, 20_000_000).starts_with("250"));
}

#[test]
fn one_client_address_cannot_take_a_listener_and_one_listener_cannot_take_them_all() {
    let maild = maild_with_users(
        &["u@d.test"],
        &[
            "--domain",
            "d.test",
            "--max-connections",
            "20",
            "--max-listener-connections",
            "12",
            "--max-client-connections",
            "5",
        ],
    );
    let greeted = |stream: &mut TcpStream| read_line(stream).unwrap_or_default();
    // One address: five connections, the sixth is refused.
    let mut held: Vec<TcpStream> = (0..5).map(|_| connect_from(Ipv4Addr::new(127, 4, 0, 1), maild.smtp)).collect();
    for stream in &mut held {
        assert!(greeted(stream).starts_with("220"));
    }
    let mut refused = connect_from(Ipv4Addr::new(127, 4, 0, 1), maild.smtp);
    assert!(greeted(&mut refused).starts_with("421 4.7.0"));
    // Other addresses fill the listener to its twelve.
    for i in 2..=8 {
        let mut stream = connect_from(Ipv4Addr::new(127, 4, 0, i), maild.smtp);
        assert!(greeted(&mut stream).starts_with("220"));
        held.push(stream);
    }
    let mut refused = connect_from(Ipv4Addr::new(127, 4, 0, 9), maild.smtp);
    assert!(greeted(&mut refused).starts_with("421 4.7.0"));
    // POP3 is still open to its users.
    let mut c = pop3_login(maild.pop3, "u@d.test", "pw-u@d.test");
    c.cmd("QUIT");
    assert!(c.line().unwrap().starts_with("+OK"));
    let log = maild.log();
    assert!(
        log.contains("smtp: connection refused: client=127.4.0.1 reason=\"5 connections from this client"),
        "{log}"
    );
    assert!(
        log.contains("smtp: connection refused: client=127.4.0.9 reason=\"12 connections on this listener"),
        "{log}"
    );
    // A slot freed is a slot again.
    drop(held);
    eventually("a free slot for 127.4.0.1", || {
        let mut stream = connect_from(Ipv4Addr::new(127, 4, 0, 1), maild.smtp);
        greeted(&mut stream).starts_with("220")
    });
}

/// Every path under `dir` whose mode lets a group or other user in.
fn open_paths(dir: &Path) -> Vec<String> {
    let mut open = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(path) = pending.pop() {
        let meta = std::fs::symlink_metadata(&path).unwrap();
        if meta.permissions().mode() & 0o077 != 0 {
            open.push(format!("{} {:o}", path.display(), meta.permissions().mode()));
        }
        if meta.is_dir() {
            pending.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
        }
    }
    open
}

#[test]
fn every_file_maild_and_mailtool_create_is_readable_by_its_owner_only() {
    let tmp = new_data_dir();
    let data = tmp.path().join("data");
    add_users(&data, &["u@d.test"]);
    assert_eq!(open_paths(&data), Vec::<String>::new(), "after user add");
    let mut maild = Maild::start_on(&data, &["--domain", "d.test"]);
    let mut c = maild.smtp_client();
    c.reply();
    c.expect("HELO x", "250");
    for i in 0..40 {
        c.send_message("s@d.test", &["u@d.test"], format!("message {i}\r\n").as_bytes());
    }
    eventually("the first range file", || data.join("backup").read_dir().is_ok_and(|mut d| d.next().is_some()));
    let out = tmp.path().join("out");
    std::fs::DirBuilder::new().mode(0o700).create(&out).unwrap();
    let run = |args: &[&str]| {
        let result = mailtool(&data, args, None);
        assert!(result.status.success(), "{args:?}: {}", result.stderr);
    };
    run(&["backup", "-o", out.join("backup").to_str().unwrap()]);
    run(&["export", "-o", out.join("export.mbox").to_str().unwrap()]);
    run(&["export", "--format", "maildir", "-o", out.join("maildir").to_str().unwrap()]);
    let fetched = out.join("fetched.mbox");
    let fetch = mailtool(
        &data,
        &[
            "fetch",
            "--pop3",
            &maild.pop3.to_string(),
            "--user",
            "u@d.test",
            "--password-stdin",
            "-o",
            fetched.to_str().unwrap(),
        ],
        Some(b"pw-u@d.test\n"),
    );
    assert!(fetch.status.success(), "fetch: {}", fetch.stderr);
    assert!(fetched.exists());
    assert_eq!(open_paths(&data), Vec::<String>::new(), "the data directory while maild runs");
    assert_eq!(open_paths(&out), Vec::<String>::new(), "backup, export and fetch output");
    maild.stop();
    // verify says so when someone opened the store up.
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    let verify = mailtool(&data, &["verify"], None);
    assert!(verify.status.success(), "{}", verify.stderr);
    assert!(
        verify.stdout_text().contains("WARNING") && verify.stdout_text().contains("mode 0755"),
        "{}",
        verify.stdout_text()
    );
}

#[test]
fn a_25_mib_message_streams_into_the_store_and_back_out_in_bounded_memory() {
    let maild = maild_with_users(&["u@d.test"], &["--domain", "d.test"]);
    let mut warm = maild.smtp_client();
    warm.reply();
    warm.expect("HELO x", "250");
    assert_eq!(warm.send_message("s@d.test", &["u@d.test"], b"small\r\n"), 1);
    let before = maild.memory("VmHWM");
    // 24 MiB of body: under the default --max-message-size (25 MiB) with its headers.
    let sent = python("large_message.py", &["send", &maild.smtp.port().to_string(), "24"]);
    assert!(sent.contains("number 2"), "{sent}");
    let growth = maild.memory("VmHWM").saturating_sub(before);
    eprintln!("a 24 MiB message in: peak growth {} KiB", growth / 1024);
    assert!(growth < 8 * MIB, "grew by {} MiB taking in a 24 MiB message", growth / MIB);

    // The body is a file of its own, readable by maild's user only.
    let file = maild.data.join("store/bodies/2");
    let metadata = std::fs::metadata(&file).unwrap();
    assert!(metadata.len() > 24 * MIB, "{} octets", metadata.len());
    assert_eq!(metadata.permissions().mode() & 0o777, 0o600);

    // A login's argon2 check takes ~19 MiB for a moment; one first puts that in the peak.
    let mut pop = pop3_login(maild.pop3, "u@d.test", "pw-u@d.test");
    pop.expect("QUIT", "+OK");
    let before = maild.memory("VmHWM");
    let args = [&maild.pop3.port().to_string(), "u@d.test", "pw-u@d.test", "2", "24"];
    let out = python("large_message.py", &[&["retr"], &args[..]].concat());
    assert!(out.starts_with("ok"), "{out}");
    let growth = maild.memory("VmHWM").saturating_sub(before);
    eprintln!("and out by RETR: peak growth {} KiB", growth / 1024);
    assert!(growth < 8 * MIB, "grew by {} MiB serving a 24 MiB message", growth / MIB);

    // A body file that went missing is an -ERR before any of the reply, not a cut one.
    let aside = maild.data.join("store/bodies/aside");
    std::fs::rename(&file, &aside).unwrap();
    let mut pop = pop3_login(maild.pop3, "u@d.test", "pw-u@d.test");
    pop.expect("RETR 2", "-ERR [SYS/TEMP]");
    pop.expect("RETR 1", "+OK");
    std::fs::rename(&aside, &file).unwrap();
}
