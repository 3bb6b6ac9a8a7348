//! Test support: start the real `maild` on port 0 in a temporary data directory, run
//! `mailtool` against it, and talk to it over TCP.
//!
//! Every wait polls for its condition with a generous bound, so a slow machine makes a
//! test slower, never red.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub const MAILD: &str = env!("CARGO_BIN_EXE_maild");
pub const MAILTOOL: &str = env!("CARGO_BIN_EXE_mailtool");
/// The longest any single wait in a test may take before it is a failure.
pub const PATIENCE: Duration = Duration::from_secs(60);

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A running maild with its own data directory.
pub struct Maild {
    child: Option<Child>,
    pub data: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    pub smtp: SocketAddr,
    pub pop3: SocketAddr,
    pub log: Arc<Mutex<String>>,
    /// Reads stderr into `log`; ends at EOF, once the process has exited.
    log_reader: Option<JoinHandle<()>>,
    pub args: Vec<String>,
}

pub const MIB: u64 = 1 << 20;

pub fn new_data_dir() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("maild-test").tempdir().expect("tempdir")
}

impl Maild {
    /// Starts maild on a fresh data dir with `--hostname mx.test` plus `args`.
    pub fn start(args: &[&str]) -> Maild {
        let tmp = new_data_dir();
        let data = tmp.path().to_path_buf();
        let mut maild = Maild::start_on(&data, args);
        maild._tmp = Some(tmp);
        maild
    }

    /// Starts maild on an existing data dir (users added beforehand, or a restart).
    pub fn start_on(data: &Path, args: &[&str]) -> Maild {
        Maild::start_on_with_env(data, args, &[])
    }

    /// Keeps a temporary data directory alive as long as this server.
    pub fn keep(&mut self, dir: tempfile::TempDir) {
        self._tmp = Some(dir);
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Sends a signal by name (TERM, INT, KILL).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill").arg(format!("-{name}")).arg(self.pid().to_string()).status().unwrap();
        assert!(status.success());
    }

    /// Waits (bounded) for the process to exit.
    pub fn wait(&mut self) -> ExitStatus {
        let Some(status) = wait_bounded(self.child.as_mut().unwrap()) else {
            panic!("maild did not exit:\n{}", self.log());
        };
        self.child = None;
        // The last lines (a failpoint's, a panic's) may still be in the pipe.
        if let Some(reader) = self.log_reader.take() {
            wait_for_eof(reader);
        }
        status
    }

    /// SIGTERM and wait; asserts a clean exit. Keeps the data dir.
    pub fn stop(&mut self) {
        self.signal("TERM");
        let status = self.wait();
        assert!(status.success(), "maild exited with {status}:\n{}", self.log());
    }

    /// SIGKILL and wait.
    pub fn kill9(&mut self) {
        self.signal("KILL");
        self.wait();
    }

    pub fn smtp_client(&self) -> Client {
        Client::connect(self.smtp)
    }

    /// The submission listener's address (`--submission`), from the readiness line.
    pub fn submission(&self) -> SocketAddr {
        let log = self.log();
        let line = log.lines().find(|l| l.contains("maild ready:")).expect("readiness line");
        let start = line.find("submission=").expect("--submission is on") + "submission=".len();
        line[start..].split_whitespace().next().and_then(|a| a.parse().ok()).expect("submission address")
    }

    /// Threads of the maild process, from /proc.
    /// A field of /proc/PID/status in bytes (VmRSS, VmHWM).
    pub fn memory(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix(field).and_then(|v| v.trim_start_matches(':').split_whitespace().next()))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{field} in {status}"));
        kib * 1024
    }

    pub fn threads(&self) -> usize {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status.lines().find_map(|l| l.strip_prefix("Threads:")).unwrap().trim().parse().unwrap()
    }
}

impl Drop for Maild {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Waits up to [`PATIENCE`] for `child` to exit; `None` if it is still running.
pub fn wait_bounded(child: &mut Child) -> Option<ExitStatus> {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if started.elapsed() >= PATIENCE {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs maild on `data` (listeners on port 0) with `args`, for a start it should refuse:
/// waits, bounded, for it to exit, and returns how it exited (`None`: still running at the
/// bound, then killed) with its stderr.
pub fn maild_until_exit(data: &Path, args: &[&str]) -> (Option<ExitStatus>, String) {
    let mut child = Command::new(MAILD)
        .arg("--data")
        .arg(data)
        .args(["--smtp", "127.0.0.1:0", "--pop3", "127.0.0.1:0"])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (log, reader) = capture_stderr(&mut child);
    let exited = wait_bounded(&mut child);
    if exited.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    wait_for_eof(reader);
    let stderr = log.lock().unwrap().clone();
    (exited, stderr)
}

/// Collects a child's stderr (piped) into a shared string, line by line, as it runs.
/// The thread ends at EOF: pass it to [`wait_for_eof`] after the child exits, so the log
/// holds everything the child wrote.
pub fn capture_stderr(child: &mut Child) -> (Arc<Mutex<String>>, JoinHandle<()>) {
    let log = Arc::new(Mutex::new(String::new()));
    let (stderr, sink) = (child.stderr.take().expect("stderr must be piped"), log.clone());
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            let mut log = sink.lock().unwrap();
            log.push_str(&line);
            log.push('\n');
        }
    });
    (log, reader)
}

/// Waits (bounded) for a [`capture_stderr`] thread to reach EOF. A process that has exited
/// closed its end of the pipe, so this is quick unless something it spawned still holds it.
pub fn wait_for_eof(reader: JoinHandle<()>) {
    let started = Instant::now();
    while !reader.is_finished() {
        assert!(started.elapsed() < PATIENCE, "the child exited but its stderr did not reach EOF");
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = reader.join();
}

/// Finds `smtp=IP:PORT pop3=IP:PORT` in the log.
fn readiness(log: &str) -> Option<(SocketAddr, SocketAddr)> {
    let line = log.lines().find(|l| l.contains("smtp=") && l.contains("pop3="))?;
    let field = |name: &str| -> Option<SocketAddr> {
        let start = line.find(name)? + name.len();
        line[start..].split_whitespace().next()?.parse().ok()
    };
    Some((field("smtp=")?, field("pop3=")?))
}

/// Output of a mailtool run.
pub struct ToolOutput {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

impl ToolOutput {
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

pub fn mailtool(data: &Path, args: &[&str], stdin: Option<&[u8]>) -> ToolOutput {
    let mut child = Command::new(MAILTOOL)
        .arg("--data")
        .arg(data)
        .args(args)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn mailtool");
    if let Some(input) = stdin {
        // A tool that refuses its arguments exits without reading stdin: a broken pipe
        // here is its answer, which the exit status and stderr below report.
        let _ = child.stdin.take().unwrap().write_all(input);
    }
    let output = child.wait_with_output().unwrap();
    ToolOutput {
        status: output.status,
        stdout: output.stdout,
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Adds users (maild must not be running on `data`).
pub fn add_users(data: &Path, users: &[&str]) {
    for user in users {
        let out = mailtool(data, &["user", "add", user, "--password-stdin"], Some(format!("pw-{user}\n").as_bytes()));
        assert!(out.status.success(), "user add {user}: {}", out.stderr);
    }
}

/// Starts maild with these users on a fresh data dir.
pub fn maild_with_users(users: &[&str], args: &[&str]) -> Maild {
    let tmp = new_data_dir();
    add_users(tmp.path(), users);
    let mut maild = Maild::start_on(tmp.path(), args);
    maild._tmp = Some(tmp);
    maild
}

/// A raw line-oriented TCP client for SMTP and POP3.
pub struct Client {
    reader: BufReader<TcpStream>,
    pub stream: TcpStream,
}

impl Client {
    pub fn connect(address: SocketAddr) -> Client {
        Client::try_connect(address).expect("connect")
    }

    /// None if the server is not there (a client of a server a test may kill).
    pub fn try_connect(address: SocketAddr) -> Option<Client> {
        let stream = TcpStream::connect(address).ok()?;
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        Some(Client { reader: BufReader::new(stream.try_clone().unwrap()), stream })
    }

    pub fn send(&mut self, bytes: impl AsRef<[u8]>) {
        self.stream.write_all(bytes.as_ref()).expect("send");
    }

    /// False if the server has gone away.
    pub fn try_send(&mut self, bytes: impl AsRef<[u8]>) -> bool {
        self.stream.write_all(bytes.as_ref()).is_ok()
    }

    /// Sends a command line with CRLF.
    pub fn cmd(&mut self, line: &str) {
        self.send(format!("{line}\r\n"));
    }

    /// Reads one line (without CRLF); None at EOF.
    pub fn line(&mut self) -> Option<String> {
        let mut line = Vec::new();
        match self.reader.read_until(b'\n', &mut line) {
            Ok(0) => None,
            Ok(_) => Some(String::from_utf8_lossy(&line).trim_end_matches(['\r', '\n']).to_string()),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::ConnectionReset) => None,
            Err(e) => panic!("read: {e}"),
        }
    }

    /// Reads one raw line including its line end; None at EOF.
    pub fn raw_line(&mut self) -> Option<Vec<u8>> {
        let mut line = Vec::new();
        match self.reader.read_until(b'\n', &mut line) {
            Ok(0) => None,
            Ok(_) => Some(line),
            Err(e) => panic!("read: {e}"),
        }
    }

    /// Reads one whole SMTP reply; returns its last line.
    pub fn reply(&mut self) -> String {
        loop {
            let line = self.line().expect("server closed the connection");
            if line.as_bytes().get(3) != Some(&b'-') {
                return line;
            }
        }
    }

    /// Sends a command and asserts the reply starts with `prefix`.
    pub fn expect(&mut self, command: &str, prefix: &str) -> String {
        self.cmd(command);
        let reply = self.reply();
        assert!(reply.starts_with(prefix), "{command:?}: expected {prefix:?}, got {reply:?}");
        reply
    }

    /// True once the server has closed the connection (reads to EOF).
    pub fn closed(&mut self) -> bool {
        let mut rest = Vec::new();
        self.reader.read_to_end(&mut rest).is_ok()
    }

    /// Sends one message; returns its number from the 250 reply.
    pub fn send_message(&mut self, from: &str, to: &[&str], body: &[u8]) -> u64 {
        self.expect(&format!("MAIL FROM:<{from}>"), "250");
        for rcpt in to {
            self.expect(&format!("RCPT TO:<{rcpt}>"), "250");
        }
        self.expect("DATA", "354");
        self.send(body);
        self.send(b".\r\n");
        let reply = self.reply();
        message_number(&reply).unwrap_or_else(|| panic!("expected 250 … message N, got {reply:?}"))
    }
}

/// Dot-stuffs message bytes for DATA (RFC 5321 §4.5.2): a '.' after CRLF gets another.
pub fn dot_stuff(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + 8);
    let mut after_crlf = true;
    for (i, &b) in message.iter().enumerate() {
        if after_crlf && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        after_crlf = b == b'\n' && i > 0 && message[i - 1] == b'\r';
    }
    out
}

/// The N in `250 2.0.0 Ok: delivered message N`.
pub fn message_number(reply: &str) -> Option<u64> {
    reply.strip_prefix("250 2.0.0 Ok: delivered message ")?.trim().parse().ok()
}

/// Polls `condition` until it holds (bounded by PATIENCE).
pub fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let started = Instant::now();
    while !condition() {
        assert!(started.elapsed() < PATIENCE, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Connects to POP3 and logs in with USER/PASS. While the maildrop is still locked by a
/// session whose connection the client dropped (maild unlocks when it notices), tries
/// again; any other refusal fails the test.
pub fn pop3_login(address: SocketAddr, user: &str, password: &str) -> Client {
    let started = Instant::now();
    loop {
        let mut c = Client::connect(address);
        let greeting = c.line().expect("POP3 greeting");
        assert!(greeting.starts_with("+OK"), "{greeting}");
        c.cmd(&format!("USER {user}"));
        let reply = c.line().expect("USER: connection closed");
        assert!(reply.starts_with("+OK"), "USER {user}: {reply}");
        c.cmd(&format!("PASS {password}"));
        let reply = c.line().expect("PASS: connection closed");
        if reply.starts_with("+OK") {
            return c;
        }
        assert!(reply.starts_with("-ERR [IN-USE]") && started.elapsed() < PATIENCE, "PASS: {reply}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// An exported mbox, split into entries (each the bytes after its From line).
pub fn export_entries(data: &Path, args: &[&str]) -> Vec<Vec<u8>> {
    let mut all = vec!["export"];
    all.extend_from_slice(args);
    let out = mailtool(data, &all, None);
    assert!(out.status.success(), "export: {}", out.stderr);
    split_mbox(&out.stdout)
}

pub fn split_mbox(mbox: &[u8]) -> Vec<Vec<u8>> {
    let mut entries: Vec<Vec<u8>> = Vec::new();
    for line in mbox.split_inclusive(|&b| b == b'\n') {
        if line.starts_with(b"From ") {
            entries.push(Vec::new());
        } else if let Some(entry) = entries.last_mut() {
            entry.extend_from_slice(line);
        }
    }
    // Each entry ends with the empty separator line.
    for entry in &mut entries {
        if entry.ends_with(b"\n\n") || entry.ends_with(b"\r\n\n") {
            entry.pop();
        }
    }
    entries
}

/// The `Number:` of an exported entry.
pub fn entry_number(entry: &[u8]) -> u64 {
    let text = String::from_utf8_lossy(entry);
    text.lines().find_map(|l| l.strip_prefix("Number: ")).unwrap().trim().parse().unwrap()
}

pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// A file of tests/certs/: a test CA (`ca.pem`; its key was thrown away), the server
/// certificate it signed for mx.test, localhost and 127.0.0.1 (`cert.pem`, valid until
/// 2126), that certificate's key (`key.pem`), an unrelated key (`other-key.pem`) and an
/// unrelated CA (`other-ca.pem`).
/// Clients check the server against `ca.pem`.
pub fn test_cert(name: &str) -> String {
    repo_root().join("tests/certs").join(name).display().to_string()
}

/// Runs a Python script from tests/py with arguments; asserts it succeeds.
pub fn python(script: &str, args: &[&str]) -> String {
    let path = repo_root().join("tests/py").join(script);
    let out = Command::new("python3").arg(&path).args(args).output().expect("python3");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{script} failed:\nstdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Reads what is left from a raw stream into a string (for small replies).
pub fn drain(stream: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

impl Maild {
    /// Like [`Maild::start_on`], with extra environment variables for the maild process
    /// (e.g. `MAILD_FAILPOINTS`). A maild that dies before it is ready is a test failure,
    /// as with `start_on`.
    pub fn start_on_with_env(data: &Path, args: &[&str], env: &[(&str, &str)]) -> Maild {
        Maild::launch(Command::new(MAILD), data, args, env)
    }

    /// Like [`Maild::start_on`], inside network namespace `ns` (`ip netns exec` execs
    /// maild, so the child's pid is maild's and signals reach it).
    pub fn start_in_netns(ns: &str, data: &Path, args: &[&str]) -> Maild {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", ns, MAILD]);
        Maild::launch(command, data, args, &[])
    }

    /// Runs `command` (maild, or a wrapper that execs it) with `--data` and test defaults.
    fn launch(mut command: Command, data: &Path, args: &[&str], env: &[(&str, &str)]) -> Maild {
        let mut all: Vec<String> = vec!["--data".into(), data.display().to_string()];
        if !args.contains(&"--hostname") {
            all.extend(["--hostname".into(), "mx.test".into()]);
        }
        if !args.contains(&"--smtp") {
            all.extend(["--smtp".into(), "127.0.0.1:0".into()]);
        }
        if !args.contains(&"--pop3") {
            all.extend(["--pop3".into(), "127.0.0.1:0".into()]);
        }
        all.extend(args.iter().map(|s| s.to_string()));
        command.args(&all).env("RUST_LOG", "info");
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child =
            command.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("spawn maild");
        let (log, log_reader) = capture_stderr(&mut child);
        let started = Instant::now();
        let (smtp, pop3) = loop {
            if let Some(found) = readiness(&log.lock().unwrap()) {
                break found;
            }
            if let Ok(Some(status)) = child.try_wait() {
                wait_for_eof(log_reader);
                panic!("maild exited with {status} before it was ready:\n{}", log.lock().unwrap());
            }
            assert!(started.elapsed() < PATIENCE, "maild not ready:\n{}", log.lock().unwrap());
            std::thread::sleep(Duration::from_millis(20));
        };
        Maild {
            child: Some(child),
            data: data.to_path_buf(),
            _tmp: None,
            smtp,
            pop3,
            log,
            log_reader: Some(log_reader),
            args: all,
        }
    }
}

impl Maild {
    /// SIGKILL straight from this process (no `kill` command to spawn, so it lands within
    /// microseconds: crash tests aim it at short windows), then wait.
    pub fn sigkill_now(&mut self) {
        // std's Child::kill sends SIGKILL on Unix.
        self.child.as_mut().expect("maild is running").kill().expect("SIGKILL maild");
        self.wait();
    }
}

/// Runs fetchmail once against the POP3 service on 127.0.0.1:`port` as u@d.test (password
/// pw-u@d.test), with `options` added to the poll entry (`sslproto ""`, or `ssl …`),
/// delivering through tests/py/mda.py into an mbox in `home`. Asserts that it succeeded
/// and returns the mbox path and fetchmail's log.
pub fn fetchmail(home: &Path, port: u16, options: &str) -> (PathBuf, String) {
    let mbox = home.join("inbox.mbox");
    let rc = home.join("fetchmailrc");
    let mda = repo_root().join("tests/py/mda.py");
    std::fs::write(
        &rc,
        format!(
            "poll 127.0.0.1 service {port} protocol pop3 auth password\n  user \"u@d.test\" there with password \"pw-u@d.test\" is root here\n  {options} mda \"python3 {} {}\"\n",
            mda.display(),
            mbox.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&rc, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let out = Command::new("fetchmail")
        .args(["-f", rc.to_str().unwrap(), "--nodetach", "--nosyslog", "-v", "--idfile"])
        .arg(home.join("fetchids"))
        .env("HOME", home)
        .env("FETCHMAILHOME", home)
        .output()
        .expect("fetchmail is needed (apt-get install fetchmail; .ci/run installs it)");
    let log = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "fetchmail failed:\n{log}");
    (mbox, log)
}

/// Edits a stopped maild's store with sled directly, as a fault or an old store's state
/// would leave it. sled lets go of its lock only when its background thread has, after
/// the handle is dropped, so this waits for the lock both before opening (an earlier
/// edit's) and after (so the next maild or mailtool finds the store free).
pub fn edit_stopped_store(data: &Path, edit: impl FnOnce(&sled::Db)) {
    let store = data.join("store");
    wait_for_store_unlocked(&store);
    let db = sled::open(&store).unwrap();
    edit(&db);
    db.flush().unwrap();
    drop(db);
    wait_for_store_unlocked(&store);
}

fn wait_for_store_unlocked(store: &Path) {
    use rustix::fs::{flock, FlockOperation};
    let Ok(file) = std::fs::File::open(store.join("db")) else { return };
    eventually("sled to release the store's lock", || {
        flock(&file, FlockOperation::NonBlockingLockExclusive)
            .and_then(|()| flock(&file, FlockOperation::Unlock))
            .is_ok()
    });
}
