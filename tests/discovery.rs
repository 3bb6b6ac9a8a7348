//! Peer discovery over mDNS (CONTRACT §8) between real `maild` processes.
//!
//! mDNS is multicast, and multicast must never reach this machine's real interfaces. So
//! each test builds its own small LAN out of network namespaces: one namespace holds a
//! bridge, and every server gets a namespace of its own, joined to the bridge by a veth
//! pair (`veth0` inside, `pN` on the bridge), with an address in 10.77.0.0/24 that exists
//! only there. Every maild runs as `ip netns exec NS maild … --discover
//! --discover-interface veth0`, and every client runs inside a namespace the same way:
//! the test process itself stays in the root namespace and never sends to 10.77.0.0/24.
//! The admin socket is a file, so `mailtool export` reaches a maild from outside.
//!
//! The namespaces are deleted in `Drop`, panics included. Without root (or without `ip`)
//! the tests print `SKIPPED: …` and pass.

mod common;

use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{add_users, contains, mailtool, new_data_dir, MAILD, MAILTOOL, PATIENCE};

/// The interface name inside every server's namespace.
const IFACE: &str = "veth0";

/// Tells apart the LANs of tests that run at once in this process.
static NEXT_LAN: AtomicUsize = AtomicUsize::new(0);

/// Runs `ip ARGS`; the error names the command and its stderr.
fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip").args(args).output().map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// A bridge namespace plus one namespace per host; all deleted on drop.
struct Lan {
    bridge: String,
    hosts: Vec<String>,
}

impl Lan {
    /// Builds a LAN of `count` hosts, host i (from 1) at 10.77.0.i/24 on its `veth0`.
    /// `Err` only when the first namespace cannot be made (not root, no `ip`): past that,
    /// a failure is a broken test and panics.
    fn new(count: usize) -> Result<Lan, String> {
        let tag = format!("mdisc{}-{}", std::process::id(), NEXT_LAN.fetch_add(1, Ordering::SeqCst));
        let bridge = format!("{tag}-br");
        ip(&["netns", "add", &bridge])?;
        let mut lan = Lan { bridge, hosts: Vec::new() };
        let ip = |args: &[&str]| ip(args).unwrap_or_else(|e| panic!("building the test LAN: {e}"));
        let br = lan.bridge.clone();
        ip(&["-n", &br, "link", "add", "br0", "type", "bridge"]);
        // Flood all multicast to every port, whatever IGMP snooping would think.
        ip(&["-n", &br, "link", "set", "br0", "type", "bridge", "mcast_snooping", "0"]);
        ip(&["-n", &br, "link", "set", "br0", "up"]);
        for i in 1..=count {
            let host = format!("{tag}-{i}");
            ip(&["netns", "add", &host]);
            lan.hosts.push(host.clone());
            let port = format!("p{i}");
            ip(&["-n", &br, "link", "add", &port, "type", "veth", "peer", "name", IFACE, "netns", &host]);
            ip(&["-n", &br, "link", "set", &port, "master", "br0"]);
            ip(&["-n", &br, "link", "set", &port, "up"]);
            ip(&["-n", &host, "link", "set", "lo", "up"]);
            ip(&["-n", &host, "addr", "add", &format!("{}/24", Lan::address(i)), "dev", IFACE]);
            ip(&["-n", &host, "link", "set", IFACE, "multicast", "on"]);
            ip(&["-n", &host, "link", "set", IFACE, "up"]);
        }
        Ok(lan)
    }

    /// Host i's address (from 1).
    fn address(i: usize) -> String {
        format!("10.77.0.{i}")
    }

    /// Host i's namespace (from 1).
    fn ns(&self, i: usize) -> &str {
        &self.hosts[i - 1]
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        for ns in self.hosts.iter().chain(std::iter::once(&self.bridge)) {
            // A process we started and that is still inside would keep the namespace's
            // interfaces alive after the name is gone: end those first, by pid.
            if let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() {
                for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    let _ = Command::new("kill").args(["-KILL", pid]).status();
                }
            }
            if let Err(e) = ip(&["netns", "del", ns]) {
                eprintln!("discovery test: cleaning up: {e}");
            }
        }
    }
}

/// Skips (loudly) when namespaces cannot be made here.
fn lan_or_skip(count: usize, test: &str) -> Option<Lan> {
    match Lan::new(count) {
        Ok(lan) => Some(lan),
        Err(why) => {
            // Straight to stderr, not eprintln!: the test harness would swallow that.
            let _ =
                writeln!(std::io::stderr(), "SKIPPED: {test}: needs root and `ip netns` for a private mDNS LAN: {why}");
            None
        }
    }
}

/// One maild inside host i's namespace, owning `nI.test`, with user `uI@nI.test`.
struct Server {
    child: Option<Child>,
    log: Arc<Mutex<String>>,
    log_reader: Option<std::thread::JoinHandle<()>>,
    data: tempfile::TempDir,
    name: String,
}

impl Server {
    fn start(lan: &Lan, i: usize) -> Server {
        Server::start_with(lan, i, &[])
    }

    /// With `extra` flags after the usual ones.
    fn start_with(lan: &Lan, i: usize, extra: &[&str]) -> Server {
        let domain = format!("n{i}.test");
        let data = new_data_dir();
        add_users(data.path(), &[&format!("u{i}@{domain}")]);
        let address = Lan::address(i);
        let data_arg = data.path().display().to_string();
        #[rustfmt::skip]
        let args = [
            "netns", "exec", lan.ns(i), MAILD,
            "--data", &data_arg, "--hostname", &domain, "--domain", &domain,
            "--smtp", &format!("{address}:2525"), "--pop3", &format!("{address}:1100"),
            "--discover", "--discover-interface", IFACE,
        ];
        let mut child = Command::new("ip")
            .args(args)
            .args(extra)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ip netns exec maild");
        let (log, log_reader) = common::capture_stderr(&mut child);
        let mut server = Server { child: Some(child), log, log_reader: Some(log_reader), data, name: domain };
        let started = Instant::now();
        while !server.log().contains("maild ready: smtp=") {
            if let Ok(Some(status)) = server.child.as_mut().unwrap().try_wait() {
                panic!("{} exited with {status} before it was ready:\n{}", server.name, server.log());
            }
            assert!(started.elapsed() < PATIENCE, "{} not ready:\n{}", server.name, server.log());
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// SIGTERM (so it says goodbye over mDNS) and a clean exit within PATIENCE.
    /// `ip netns exec` execs maild, so the child's pid is maild's.
    fn stop(&mut self) {
        let mut child = self.child.take().expect("running");
        let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
        assert!(status.success());
        let started = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                if let Some(reader) = self.log_reader.take() {
                    common::wait_for_eof(reader);
                }
                break status;
            }
            assert!(started.elapsed() < PATIENCE, "{} did not exit:\n{}", self.name, self.log());
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(status.success(), "{} exited with {status}:\n{}", self.name, self.log());
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Polls until every server's log satisfies `holds`, bounded by PATIENCE; the failure
/// shows every log.
fn eventually_logs(what: &str, servers: &[&Server], holds: impl Fn(&Server, &str) -> bool) {
    let started = Instant::now();
    while !servers.iter().all(|s| holds(s, &s.log())) {
        if started.elapsed() > PATIENCE {
            let logs: Vec<String> = servers.iter().map(|s| format!("--- {}:\n{}", s.name, s.log())).collect();
            panic!("timed out waiting for: {what}\n{}", logs.join("\n"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn discovered(domain: &str, host: usize) -> String {
    format!("peer discovered: {domain} at {}:2525", Lan::address(host))
}

#[test]
fn servers_on_a_lan_find_each_other_and_notice_one_leaving() {
    let Some(lan) = lan_or_skip(3, "servers_on_a_lan_find_each_other_and_notice_one_leaving") else { return };
    let mut servers: Vec<Server> = (1..=3).map(|i| Server::start(&lan, i)).collect();

    eventually_logs("every server discovers the other two", &servers.iter().collect::<Vec<_>>(), |server, log| {
        (1..=3)
            .filter(|&j| format!("n{j}.test") != server.name)
            .all(|j| log.contains(&discovered(&format!("n{j}.test"), j)))
    });
    for server in &servers {
        // A server hears its own announcements too: it must know them for its own (so it
        // neither takes its own domain nor complains about the announcement).
        let log = server.log();
        assert!(!log.contains(&format!("peer discovered: {} ", server.name)), "{}:\n{log}", server.name);
        assert!(
            !log.contains("announces domains we do not take") && !log.contains("discovery: ignoring"),
            "{}:\n{log}",
            server.name
        );
    }

    servers[2].stop();
    let stayed = [&servers[0], &servers[1]];
    eventually_logs("the other servers forget n3.test after its goodbye", &stayed, |_, log| {
        log.contains("peer gone: n3.test")
    });
    for server in stayed {
        let log = server.log();
        assert!(!log.contains("peer gone: n1.test") && !log.contains("peer gone: n2.test"), "{}:\n{log}", server.name);
    }
}

#[test]
fn mail_for_a_discovered_peer_is_forwarded() {
    let Some(lan) = lan_or_skip(2, "mail_for_a_discovered_peer_is_forwarded") else { return };
    let one = Server::start(&lan, 1);
    let two = Server::start(&lan, 2);
    eventually_logs("n1 discovers n2", &[&one], |_, log| log.contains(&discovered("n2.test", 2)));

    // The client runs inside n1's namespace: 10.77.0.1 exists only there.
    let token = format!("discovery-forward-{}", std::process::id());
    let smtp = format!("{}:2525", Lan::address(1));
    #[rustfmt::skip]
    let mut send = Command::new("ip")
        .args(["netns", "exec", lan.ns(1), MAILTOOL, "send", "--smtp", &smtp,
               "--from", "u1@n1.test", "--to", "u2@n2.test", "--subject", &token])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn mailtool send");
    let _ = send.stdin.take().unwrap().write_all(format!("{token}\n").as_bytes());
    let sent = send.wait_with_output().unwrap();
    assert!(
        sent.status.success(),
        "mailtool send: {}{}\n--- n1:\n{}",
        String::from_utf8_lossy(&sent.stdout),
        String::from_utf8_lossy(&sent.stderr),
        one.log()
    );

    // Forwarded with no --peer: n2 has it once the forward stage delivered it there.
    let started = Instant::now();
    loop {
        let export = mailtool(two.data.path(), &["export", "--user", "u2@n2.test"], None);
        if export.status.success() && contains(&export.stdout, token.as_bytes()) {
            break;
        }
        assert!(
            started.elapsed() < PATIENCE,
            "u2@n2.test never got the message (export: {})\n--- n1:\n{}\n--- n2:\n{}",
            export.stderr,
            one.log(),
            two.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// tests/py/mdns_announcer.py in host `i`'s namespace, announcing `instance` at `address`
/// with these TXT strings (signed with the key in `key`, if given). Killed on drop.
struct Announcer(Child);

impl Announcer {
    fn start(
        lan: &Lan,
        i: usize,
        key: Option<&std::path::Path>,
        instance: &str,
        address: &str,
        txt: &[&str],
    ) -> Announcer {
        let script = common::repo_root().join("tests/py/mdns_announcer.py");
        let mut args: Vec<String> = vec!["netns".into(), "exec".into(), lan.ns(i).into(), "python3".into()];
        args.push(script.display().to_string());
        if let Some(key) = key {
            args.extend(["--key".into(), key.display().to_string()]);
        }
        args.extend([Lan::address(i), instance.into(), address.into(), "2525".into()]);
        args.extend(txt.iter().map(|t| t.to_string()));
        let mut child = Command::new("ip")
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("ip netns exec python3");
        let mut first = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut first).unwrap();
        assert_eq!(first.trim(), "announcing", "mdns_announcer.py");
        Announcer(child)
    }
}

impl Drop for Announcer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

#[test]
fn without_a_secret_no_announcer_takes_a_local_domain_or_points_at_loopback() {
    let Some(lan) = lan_or_skip(2, "without_a_secret_no_announcer_takes_a_local_domain_or_points_at_loopback") else {
        return;
    };
    let one = Server::start(&lan, 1);
    assert!(one.log().contains("no --discover-secret: every host on veth0 is trusted"), "{}", one.log());
    // Host 2 claims n1.test (one's own) and victim.test, at one's loopback address.
    let _loopback =
        Announcer::start(&lan, 2, None, "evil-lo", "127.0.0.1", &["domains=n1.test,victim.test", "smtp=2525"]);
    eventually_logs("the claim on n1.test ignored, the loopback address refused", &[&one], |_, log| {
        log.contains("evil-lo._maild._tcp.local. announces domains we do not take: n1.test")
            && log.contains("discovery: ignoring evil-lo._maild._tcp.local.: it announces no usable address")
    });
    // The same host, at its own address, for a domain nobody else has: taken (no secret).
    let _own = Announcer::start(&lan, 2, None, "evil-own", &Lan::address(2), &["domains=taken.test", "smtp=2525"]);
    eventually_logs("taken.test discovered (every host is trusted without a secret)", &[&one], |_, log| {
        log.contains(&discovered("taken.test", 2))
    });
    let log = one.log();
    assert!(!log.contains("peer discovered: n1.test") && !log.contains("peer discovered: victim.test"), "{log}");
}

#[test]
fn with_a_secret_only_fresh_announcements_signed_with_it_count_and_only_from_the_signed_address() {
    let Some(lan) = lan_or_skip(4, "with_a_secret_only_fresh_announcements_signed_with_it_count") else { return };
    let keys = new_data_dir();
    let (shared, other) = (keys.path().join("shared.key"), keys.path().join("other.key"));
    std::fs::write(&shared, "a key the lab's servers share\n").unwrap();
    std::fs::write(&other, "somebody else's key, long enough\n").unwrap();
    let (shared_arg, other_arg) = (shared.display().to_string(), other.display().to_string());
    let one = Server::start_with(&lan, 1, &["--discover-secret", &shared_arg]);
    let two = Server::start_with(&lan, 2, &["--discover-secret", &shared_arg]);
    let _three = Server::start_with(&lan, 3, &["--discover-secret", &other_arg]);
    let ts = now().to_string();
    let fresh = format!("ts={ts}");
    let stale = format!("ts={}", now() - 3 * 3600);
    let here = format!("addrs={}", Lan::address(4));
    // Host 4: unsigned; a stolen signature (valid, but for host 2's address); a stale one;
    // and one both fresh and from its own signed address, which alone may count.
    let _unsigned = Announcer::start(&lan, 4, None, "unsigned", &Lan::address(4), &["domains=u.test", "smtp=2525"]);
    let elsewhere = format!("addrs={}", Lan::address(2));
    let _stolen = Announcer::start(
        &lan,
        4,
        Some(&shared),
        "stolen",
        &Lan::address(4),
        &["domains=stolen.test", "smtp=2525", &elsewhere, &fresh],
    );
    let _stale = Announcer::start(
        &lan,
        4,
        Some(&shared),
        "stale",
        &Lan::address(4),
        &["domains=stale.test", "smtp=2525", &here, &stale],
    );
    let _good = Announcer::start(
        &lan,
        4,
        Some(&shared),
        "good",
        &Lan::address(4),
        &["domains=good.test", "smtp=2525", &here, &fresh],
    );
    eventually_logs(
        "one and two find each other and the good announcement, and refuse the rest",
        &[&one, &two],
        |s, log| {
            let other = if s.name == "n1.test" { ("n2.test", 2) } else { ("n1.test", 1) };
            log.contains(&discovered(other.0, other.1))
                && log.contains(&discovered("good.test", 4))
                && log.contains("ignoring n3-test-2525._maild._tcp.local.: its signature does not match")
                && log.contains("ignoring unsigned._maild._tcp.local.: the announcement is not signed")
                && log.contains("ignoring stolen._maild._tcp.local.: it announces no usable address")
                && log.contains("ignoring stale._maild._tcp.local.: its signature is stale")
        },
    );
    for server in [&one, &two] {
        let log = server.log();
        for refused in ["n3.test", "u.test", "stolen.test", "stale.test"] {
            assert!(!log.contains(&format!("peer discovered: {refused}")), "{}: {refused}\n{log}", server.name);
        }
        assert!(!log.contains("no --discover-secret"), "{log}");
    }
}
