//! maild's configuration: command-line flags, optionally on top of a TOML file.
//!
//! Every flag can also be set in the file given with `--config`, under the same name
//! (`max-message-size = 1000`, `domain = ["a.example", "b.example"]`); a flag given on
//! the command line beats the file.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Parser;
use engine::domain::Domain;
use serde::Deserialize;

/// The flags, each optional so the file can fill in what the command line leaves out.
#[derive(Parser, Debug, Default, Deserialize)]
#[command(name = "maild", version, about = "maild: a durable SMTP/POP3 mail server")]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Options {
    /// TOML file with any of these settings; flags beat it.
    #[arg(long, value_name = "FILE")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// The store; backup range files go to DIR/backup/. [default: ./maild-data]
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// Name in the greeting, Received header and replies. [default: the system host name]
    #[arg(long, value_name = "NAME")]
    pub hostname: Option<String>,
    /// A domain delivered locally (repeatable). [default: localhost]
    #[arg(long, value_name = "D")]
    #[serde(default)]
    pub domain: Vec<String>,
    /// SMTP listener; port 0 picks a free port. [default: 127.0.0.1:2525]
    #[arg(long, value_name = "ADDR")]
    pub smtp: Option<String>,
    /// POP3 listener. [default: 127.0.0.1:1100]
    #[arg(long, value_name = "ADDR")]
    pub pop3: Option<String>,
    /// Submission listener: SMTP with AUTH required; authenticated users may send to any
    /// domain (relayed by MX lookup). [default: off]
    #[arg(long, value_name = "ADDR")]
    pub submission: Option<String>,
    /// Submission over implicit TLS (RFC 8314, port 465): TLS from the first byte, then as
    /// --submission. Needs --tls-cert. [default: off]
    #[arg(long, value_name = "ADDR")]
    pub smtps: Option<String>,
    /// POP3 over implicit TLS (port 995). Needs --tls-cert. [default: off]
    #[arg(long, value_name = "ADDR")]
    pub pop3s: Option<String>,
    /// Prometheus metrics over HTTP (`GET /metrics`) on this address. [default: off]
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<String>,
    /// DNS server for MX lookups when relaying. [default: the system's /etc/resolv.conf]
    #[arg(long, value_name = "IP:PORT")]
    pub resolver: Option<String>,
    /// Port of the MX hosts mail is relayed to (a lab may run them elsewhere). [default: 25]
    #[arg(long, value_name = "PORT")]
    pub mx_port: Option<u16>,
    /// Seconds an SMTP client has to send the next valid command. [default: 300]
    #[arg(long, value_name = "SECS")]
    pub command_timeout: Option<u64>,
    /// Seconds a POP3 client may stay idle (RFC 1939 §3: at least 600). [default: 600]
    #[arg(long, value_name = "SECS")]
    pub pop3_timeout: Option<u64>,
    /// Largest message accepted, advertised as EHLO SIZE. [default: 26214400]
    #[arg(long, value_name = "BYTES")]
    pub max_message_size: Option<u64>,
    /// Most client connections at once, over all listeners; more get 421. [default: 1000]
    #[arg(long, value_name = "N")]
    pub max_connections: Option<usize>,
    /// Most connections one listener may hold, so one port cannot lock out the others.
    /// [default: three quarters of --max-connections]
    #[arg(long, value_name = "N")]
    pub max_listener_connections: Option<usize>,
    /// Most connections one client address (an IPv6 /64) may hold on one listener.
    /// [default: half of --max-connections, as Postfix's anvil]
    #[arg(long, value_name = "N")]
    pub max_client_connections: Option<usize>,
    /// Bytes of message data held in memory over all sessions at once; past it, new
    /// messages get 452 until memory frees up. [default: 268435456]
    #[arg(long, value_name = "BYTES")]
    pub max_data_in_flight: Option<u64>,
    /// Memory for the store's page cache (recent records; all are on disk too). [default: 16777216]
    #[arg(long, value_name = "BYTES")]
    pub cache_size: Option<u64>,
    /// A peer server that owns DOMAIN (repeatable): mail for it is forwarded there.
    #[arg(long, value_name = "DOMAIN=HOST:PORT")]
    #[serde(default)]
    pub peer: Vec<String>,
    /// First retry of a deferred forward after this long (doubling each time). [default: 5s]
    #[arg(long, value_name = "DURATION")]
    pub retry_min: Option<String>,
    /// Longest wait between retries. [default: 10m]
    #[arg(long, value_name = "DURATION")]
    pub retry_max: Option<String>,
    /// How long a message may wait for a peer before it bounces. [default: 5d]
    #[arg(long, value_name = "DURATION")]
    pub queue_lifetime: Option<String>,
    /// How long a domain a discovered peer announced still counts as that peer's after
    /// it was last heard (its mail waits for it meanwhile). [default: 7d]
    #[arg(long, value_name = "DURATION")]
    pub remember_peers: Option<String>,
    /// Free bytes to keep on the store's file system; below it new mail gets 452. [default: 33554432]
    #[arg(long, value_name = "BYTES")]
    pub min_free_space: Option<u64>,
    /// Seconds a store commit or flush may take before maild gives up on the store: it
    /// answers 451 to waiting clients and exits (status 75) for a restart. [default: 60]
    #[arg(long, value_name = "SECS")]
    pub store_timeout: Option<u64>,
    /// Seconds sessions get to finish after SIGTERM/SIGINT. [default: 30]
    #[arg(long, value_name = "SECS")]
    pub shutdown_grace: Option<u64>,
    /// Find peers by mDNS (`_maild._tcp.local.`) and announce this server; needs --discover-interface.
    #[arg(long)]
    #[serde(default)]
    pub discover: bool,
    /// An interface (name or address) that --discover may use (repeatable); no other sees mDNS.
    #[arg(long, value_name = "NAME")]
    #[serde(default)]
    pub discover_interface: Vec<String>,
    /// A file holding a key shared by the servers that discover each other (at least 16
    /// bytes): announcements are signed with it, and unsigned ones ignored.
    #[arg(long, value_name = "FILE")]
    pub discover_secret: Option<PathBuf>,
    /// PEM certificate chain; with --tls-key it enables STARTTLS (SMTP) and STLS (POP3).
    #[arg(long, value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
}

/// The settings maild runs with, every default filled in.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    pub data: PathBuf,
    pub hostname: String,
    pub domains: Vec<Domain>,
    pub smtp: SocketAddr,
    pub pop3: SocketAddr,
    /// `--submission`; `None` when off.
    pub submission: Option<SocketAddr>,
    /// `--smtps` and `--pop3s` (implicit TLS); `None` when off.
    pub smtps: Option<SocketAddr>,
    pub pop3s: Option<SocketAddr>,
    /// `--metrics`; `None` when off.
    pub metrics: Option<SocketAddr>,
    /// `--resolver`; `None` means the system's configuration.
    pub resolver: Option<SocketAddr>,
    pub mx_port: u16,
    pub command_timeout: Duration,
    pub pop3_timeout: Duration,
    pub max_message_size: usize,
    pub max_connections: usize,
    pub max_listener_connections: usize,
    pub max_client_connections: usize,
    pub max_data_in_flight: usize,
    pub cache_size: u64,
    pub shutdown_grace: Duration,
    pub store_timeout: Duration,
    pub min_free_space: u64,
    pub peers: Vec<(Domain, SocketAddr)>,
    pub retry_min: Duration,
    pub retry_max: Duration,
    pub queue_lifetime: Duration,
    pub remember_peers: Duration,
    /// `--discover`: the interfaces mDNS may use; `None` when discovery is off.
    pub discover: Option<Vec<String>>,
    /// `--discover-secret`; `None` when announcements are not signed.
    pub discover_secret: Option<PathBuf>,
    /// `--tls-cert` and `--tls-key`; `None` when TLS is off.
    pub tls: Option<TlsFiles>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Config {
    /// The settings (as flag names) whose values differ in `other`.
    pub fn changed(&self, other: &Config) -> Vec<&'static str> {
        let mut changed = Vec::new();
        macro_rules! compare {
            ($($field:ident => $flag:literal),* $(,)?) => {
                // Destructured, so a new field cannot be forgotten here.
                let Config { $($field: _),* } = self;
                $(if self.$field != other.$field { changed.push($flag); })*
            };
        }
        compare!(
            data => "data", hostname => "hostname", domains => "domain", smtp => "smtp", pop3 => "pop3",
            submission => "submission", smtps => "smtps", pop3s => "pop3s", metrics => "metrics", resolver => "resolver", mx_port => "mx-port",
            command_timeout => "command-timeout", pop3_timeout => "pop3-timeout",
            max_message_size => "max-message-size", max_connections => "max-connections",
            max_listener_connections => "max-listener-connections",
            max_client_connections => "max-client-connections", max_data_in_flight => "max-data-in-flight", cache_size => "cache-size",
            shutdown_grace => "shutdown-grace", store_timeout => "store-timeout",
            min_free_space => "min-free-space", peers => "peer", retry_min => "retry-min",
            retry_max => "retry-max", queue_lifetime => "queue-lifetime",
            remember_peers => "remember-peers", discover => "discover", discover_secret => "discover-secret",
            tls => "tls-cert/tls-key",
        );
        changed
    }
}

/// Which setting a value came from, as errors name it: the flag, or the key in the file.
struct Origin<'a> {
    file: Option<&'a Path>,
}

impl Origin<'_> {
    fn name(&self, key: &str, from_file: bool) -> String {
        match self.file {
            Some(file) if from_file => format!("{key} (in {})", file.display()),
            _ => format!("--{key}"),
        }
    }

    /// The command line's value, else the file's, with the name of the one taken.
    fn pick<T>(&self, key: &str, flag: Option<T>, file: Option<T>) -> Option<(T, String)> {
        match (flag, file) {
            (Some(value), _) => Some((value, self.name(key, false))),
            (None, Some(value)) => Some((value, self.name(key, true))),
            (None, None) => None,
        }
    }

    /// A list from the command line if it gives any items, else the file's.
    fn pick_list(&self, key: &str, flag: Vec<String>, file: Vec<String>) -> (Vec<String>, String) {
        if flag.is_empty() {
            (file, self.name(key, true))
        } else {
            (flag, self.name(key, false))
        }
    }

    fn address(&self, key: &str, flag: Option<String>, file: Option<String>) -> Result<Option<SocketAddr>> {
        self.pick(key, flag, file).map(|(text, name)| address(&text, &name)).transpose()
    }

    fn duration(&self, key: &str, flag: Option<String>, file: Option<String>, default: &str) -> Result<Duration> {
        let (text, name) = self.pick(key, flag, file).unwrap_or_else(|| (default.to_string(), format!("--{key}")));
        engine::duration::parse(&text).map_err(|e| anyhow::anyhow!("{name}: {e}"))
    }
}

/// `DOMAIN=HOST:PORT`; `name` is the setting it came from.
fn peer(text: &str, name: &str) -> Result<(Domain, SocketAddr)> {
    let (domain, server) = text.split_once('=').with_context(|| format!("{name} {text:?}: want DOMAIN=HOST:PORT"))?;
    let domain = Domain::parse(domain).map_err(|why| anyhow::anyhow!("{name} {text:?}: {why}"))?;
    Ok((domain, address(server.trim(), name)?))
}

/// `IP:PORT`; `name` is the setting it came from.
fn address(text: &str, name: &str) -> Result<SocketAddr> {
    text.to_socket_addrs()
        .with_context(|| format!("{name} {text:?}: want IP:PORT"))?
        .next()
        .with_context(|| format!("{name} {text:?}: no address"))
}

impl Options {
    fn read_file(path: &Path) -> Result<Options> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading config {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("config {}", path.display()))
    }

    /// Fills what the command line left out from the file, then from the defaults.
    pub fn resolve(self) -> Result<Config> {
        let file = match &self.config {
            Some(path) => Options::read_file(path)?,
            None => Options::default(),
        };
        let origin = Origin { file: self.config.as_deref() };
        let (mut names, name) = origin.pick_list("domain", self.domain, file.domain);
        if names.is_empty() {
            names.push("localhost".into());
        }
        let domains = names
            .iter()
            .map(|domain| Domain::parse(domain).map_err(|why| anyhow::anyhow!("{name} {why}")))
            .collect::<Result<Vec<Domain>>>()?;
        let hostname = match origin.pick("hostname", self.hostname, file.hostname) {
            Some((hostname, name)) if hostname.is_empty() || !hostname.chars().all(|c| c.is_ascii_graphic()) => {
                bail!("{name} {hostname:?} must be a printable name without spaces")
            }
            Some((hostname, _)) => hostname,
            None => gethostname::gethostname().to_string_lossy().into_owned(),
        };
        let (discover_interfaces, _) =
            origin.pick_list("discover-interface", self.discover_interface, file.discover_interface);
        let discover = match (self.discover || file.discover, discover_interfaces.is_empty()) {
            (true, false) => Some(discover_interfaces),
            (false, true) => None,
            (true, true) => bail!(
                "--discover needs --discover-interface NAME (repeatable): mDNS goes only to interfaces named there"
            ),
            (false, false) => bail!("--discover-interface is only used with --discover"),
        };
        let discover_secret = self.discover_secret.or(file.discover_secret);
        if discover_secret.is_some() && discover.is_none() {
            bail!("--discover-secret is only used with --discover");
        }
        let tls = match (self.tls_cert.or(file.tls_cert), self.tls_key.or(file.tls_key)) {
            (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
            (None, None) => None,
            (Some(_), None) => bail!("--tls-cert needs --tls-key FILE (the certificate's private key)"),
            (None, Some(_)) => bail!("--tls-key needs --tls-cert FILE (the certificate chain)"),
        };
        let smtps = origin.address("smtps", self.smtps, file.smtps)?;
        let pop3s = origin.address("pop3s", self.pop3s, file.pop3s)?;
        if tls.is_none() {
            for (flag, on) in [("--smtps", smtps.is_some()), ("--pop3s", pop3s.is_some())] {
                if on {
                    bail!("{flag} needs --tls-cert FILE and --tls-key FILE (implicit TLS needs a certificate)");
                }
            }
        }
        let max_message_size = self.max_message_size.or(file.max_message_size).unwrap_or(26_214_400);
        let max_connections = self.max_connections.or(file.max_connections).unwrap_or(1000).max(1);
        let max_listener_connections = self
            .max_listener_connections
            .or(file.max_listener_connections)
            .unwrap_or(max_connections * 3 / 4)
            .clamp(1, max_connections);
        let max_client_connections = self
            .max_client_connections
            .or(file.max_client_connections)
            .unwrap_or(max_connections / 2)
            .clamp(1, max_listener_connections);
        let max_data_in_flight = self.max_data_in_flight.or(file.max_data_in_flight).unwrap_or(256 << 20);
        let (peers, name) = origin.pick_list("peer", self.peer, file.peer);
        let peers = peers.iter().map(|p| peer(p, &name)).collect::<Result<_>>()?;
        Ok(Config {
            data: self.data.or(file.data).unwrap_or_else(|| PathBuf::from("./maild-data")),
            hostname,
            domains,
            smtp: origin.address("smtp", self.smtp, file.smtp)?.unwrap_or(([127, 0, 0, 1], 2525).into()),
            pop3: origin.address("pop3", self.pop3, file.pop3)?.unwrap_or(([127, 0, 0, 1], 1100).into()),
            submission: origin.address("submission", self.submission, file.submission)?,
            smtps,
            pop3s,
            metrics: origin.address("metrics", self.metrics, file.metrics)?,
            resolver: origin.address("resolver", self.resolver, file.resolver)?,
            mx_port: self.mx_port.or(file.mx_port).unwrap_or(25),
            command_timeout: Duration::from_secs(self.command_timeout.or(file.command_timeout).unwrap_or(300).max(1)),
            pop3_timeout: Duration::from_secs(self.pop3_timeout.or(file.pop3_timeout).unwrap_or(600).max(1)),
            max_message_size: usize::try_from(max_message_size).context("--max-message-size is too large")?,
            max_connections,
            max_listener_connections,
            max_client_connections,
            cache_size: self.cache_size.or(file.cache_size).unwrap_or(engine::store::DEFAULT_CACHE),
            max_data_in_flight: usize::try_from(max_data_in_flight).context("--max-data-in-flight is too large")?,
            shutdown_grace: Duration::from_secs(self.shutdown_grace.or(file.shutdown_grace).unwrap_or(30)),
            store_timeout: Duration::from_secs(self.store_timeout.or(file.store_timeout).unwrap_or(60).max(1)),
            min_free_space: self.min_free_space.or(file.min_free_space).unwrap_or(32 << 20),
            peers,
            retry_min: origin.duration("retry-min", self.retry_min, file.retry_min, "5s")?,
            retry_max: origin.duration("retry-max", self.retry_max, file.retry_max, "10m")?,
            queue_lifetime: origin.duration("queue-lifetime", self.queue_lifetime, file.queue_lifetime, "5d")?,
            remember_peers: origin.duration("remember-peers", self.remember_peers, file.remember_peers, "7d")?,
            discover,
            discover_secret,
            tls,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// contrib/maild.toml names every setting, and with every line uncommented it is a
    /// valid configuration whose limits and timeouts are the defaults it claims.
    #[test]
    fn the_sample_configuration_lists_every_setting_with_its_default() {
        use clap::CommandFactory;
        let sample = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/contrib/maild.toml")).unwrap();
        let uncommented: String = sample
            .lines()
            .filter_map(|l| l.strip_prefix("# ").filter(|l| l.split_once(" = ").is_some_and(|(k, _)| !k.contains(' '))))
            .map(|l| format!("{}\n", l.split(" # ").next().unwrap_or(l).trim_end()))
            .collect();
        for argument in Options::command().get_arguments() {
            let key = argument.get_long().unwrap_or_default();
            if !matches!(key, "config" | "help" | "version" | "") {
                assert!(
                    uncommented.contains(&format!("\n{key} = ")) || uncommented.starts_with(&format!("{key} = ")),
                    "{key} is missing"
                );
            }
        }
        let options: Options = toml::from_str(&uncommented).expect("the sample parses");
        let sample = Options {
            discover: false,
            discover_interface: Vec::new(),
            discover_secret: None,
            tls_cert: None,
            tls_key: None,
            smtps: None,
            pop3s: None,
            ..options
        }
        .resolve()
        .unwrap();
        let defaults = Options::default().resolve().unwrap();
        // The example values (names, addresses, peers) are not defaults; the rest are.
        let differ = sample.changed(&defaults);
        let examples = ["hostname", "submission", "smtps", "pop3s", "metrics", "resolver", "peer"];
        assert!(differ.iter().all(|d| examples.contains(d)), "{differ:?}");
    }

    #[test]
    fn a_flag_beats_the_file_and_the_file_beats_the_default() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("maild.toml");
        std::fs::write(&path, "hostname = \"file.example\"\ncommand-timeout = 7\ndomain = [\"a.test\", \"b.test\"]\n")
            .unwrap();
        let options = Options::parse_from(["maild", "--config", path.to_str().unwrap(), "--hostname", "flag.example"]);
        let config = options.resolve().unwrap();
        assert_eq!(config.hostname, "flag.example");
        assert_eq!(config.command_timeout, Duration::from_secs(7));
        let domains: Vec<&str> = config.domains.iter().map(Domain::as_str).collect();
        assert_eq!(domains, ["a.test", "b.test"]);
        assert_eq!(config.max_message_size, 26_214_400);
        assert_eq!(config.smtp, "127.0.0.1:2525".parse::<SocketAddr>().unwrap());
    }

    #[test]
    fn discover_needs_an_interface_and_an_interface_needs_discover() {
        let resolve = |args: &[&str]| Options::parse_from([&["maild"], args].concat()).resolve();
        assert!(resolve(&["--discover"]).unwrap_err().to_string().contains("--discover-interface"));
        assert!(resolve(&["--discover-interface", "eth1"]).is_err());
        assert_eq!(resolve(&[]).unwrap().discover, None);
        let config =
            resolve(&["--discover", "--discover-interface", "eth1", "--discover-interface", "10.0.0.1"]).unwrap();
        assert_eq!(config.discover, Some(vec!["eth1".to_string(), "10.0.0.1".to_string()]));
    }

    #[test]
    fn tls_needs_both_a_certificate_and_a_key() {
        let resolve = |args: &[&str]| Options::parse_from([&["maild"], args].concat()).resolve();
        assert!(resolve(&["--tls-cert", "c.pem"]).unwrap_err().to_string().contains("--tls-key"));
        assert!(resolve(&["--tls-key", "k.pem"]).unwrap_err().to_string().contains("--tls-cert"));
        assert!(resolve(&[]).unwrap().tls.is_none());
        let tls = resolve(&["--tls-cert", "c.pem", "--tls-key", "k.pem"]).unwrap().tls.unwrap();
        assert_eq!((tls.cert, tls.key), (PathBuf::from("c.pem"), PathBuf::from("k.pem")));
    }

    #[test]
    fn errors_name_the_key_in_the_file_or_the_flag() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("maild.toml");
        let error = |file: &str, flags: &[&str]| {
            std::fs::write(&path, file).unwrap();
            let options = Options::parse_from([&["maild", "--config", path.to_str().unwrap()], flags].concat());
            format!("{:#}", options.resolve().unwrap_err())
        };
        let in_file = |key: &str| format!("{key} (in {})", path.display());
        let message = error("retry-min = \"soon\"\n", &[]);
        assert!(message.starts_with(&format!("{}: ", in_file("retry-min"))), "{message}");
        assert!(error("retry-min = \"5s\"\n", &["--retry-min", "soon"]).starts_with("--retry-min: "));
        let message = error("smtp = \"nowhere\"\n", &[]);
        assert!(message.starts_with(&format!("{} \"nowhere\": want IP:PORT", in_file("smtp"))), "{message}");
        let message = error("peer = [\"b.test\"]\n", &[]);
        assert!(message.starts_with(&format!("{} \"b.test\": want DOMAIN=HOST:PORT", in_file("peer"))), "{message}");
        let message = error("domain = [\"not a domain\"]\n", &[]);
        assert!(message.starts_with(&in_file("domain")), "{message}");
        // A value of the wrong type: toml's message quotes the line with the key.
        let message = error("command-timeout = \"7\"\n", &[]);
        assert!(message.contains("command-timeout = \"7\"") && message.contains("expected u64"), "{message}");
    }

    #[test]
    fn unknown_keys_in_the_file_are_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("maild.toml");
        std::fs::write(&path, "hostnme = \"typo\"\n").unwrap();
        let options = Options::parse_from(["maild", "--config", path.to_str().unwrap()]);
        assert!(options.resolve().is_err());
    }
}
