//! `maild`: the mail daemon. Sockets, threads, signals and configuration live here; all
//! mail logic is in the `engine` crate.
//!
//! Start-up: read the configuration, open the store, replay and start the pipeline, bind
//! the listeners, log the readiness line. Shutdown (SIGTERM/SIGINT): stop accepting, let
//! sessions finish within the grace period, drain the pipeline, flush, exit 0.

mod admin;
mod config;
mod conn;
mod discover;
mod event_loop;
#[cfg(test)]
#[path = "../tools/generated.rs"]
mod generated;
mod login;
mod metrics;
mod pop3;
mod recipients;
mod server;
mod signature;
mod smtp;
mod tls;
mod watchdog;

use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Parser;
use engine::admin::AdminContext;
use engine::directory::Directory;
use engine::peers::PeerTable;
use engine::pipeline::forward::RelayConfig;
use engine::pipeline::{Pipeline, PipelineConfig};
use engine::pop3::Pop3Config;
use engine::smtp::{Reply, SmtpConfig};
use engine::store::directory::MailDirectory;
use engine::store::Served;
use engine::users::Users;
use engine::{Store, StoreError};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use config::{Config, Options};
use discover::Discovery;
use engine::budget::MemoryBudget;
use event_loop::{EventLoop, Listening};
use login::Logins;
use pop3::Pop3Service;
use recipients::VerifyingDirectory;
use server::{Limits, Server};
use smtp::SmtpService;

fn main() {
    // Everything maild creates (store, range files, the admin socket) is its owner's only.
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    return_large_buffers_to_the_system();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    if let Err(error) = run() {
        // One line, through the log so it carries a time stamp like every other line.
        log::error!("{error:#}");
        std::process::exit(1);
    }
}

/// glibc raises its mmap threshold each time a large mmapped block is freed, up to 32 MiB;
/// after that, big buffers (an argon2 check's 19 MiB, a message in DATA) come from the heap
/// arenas and stay resident after an attack has ended. A fixed threshold keeps every
/// buffer of 1 MiB or more mmapped, so it goes back to the system when freed.
///
/// Fixing it also fixes the trim threshold at glibc's 128 KiB, so every free of a buffer
/// of a few hundred KiB at the top of a heap gave the pages back, and the next such
/// buffer faulted them in again: sled reads its log in 512 KiB segments at start-up, and
/// that took half its time (docs/BENCHMARKS.md). A heap keeps up to 1 MiB free at its top.
fn return_large_buffers_to_the_system() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 20);
    }
}

fn run() -> Result<()> {
    let config = Options::parse().resolve()?;
    raise_file_limit(config.max_connections)?;
    let tls = config.tls.as_ref().map(tls::Certificates::load).transpose()?;
    // Signals are caught before anything starts, so an early SIGTERM is still orderly and
    // an early SIGHUP (a terminal closing) does not kill maild.
    let mut signals = Signals::new([SIGTERM, SIGINT, SIGHUP]).context("installing signal handlers")?;

    let listeners = Listeners::bind(&config)?;
    let opening = std::time::Instant::now();
    let store = Store::open_with_cache(&config.data, config.cache_size).map_err(|e| match e {
        StoreError::Locked(path) => {
            anyhow::anyhow!("{} is in use by another maild (sled allows one process)", path.display())
        }
        other => anyhow::anyhow!("opening the store in {}: {other}", config.data.display()),
    })?;
    log::info!("store {} opened in {:?}: head {}", config.data.display(), opening.elapsed(), store.head()?);
    let domains = config.domains.iter().map(ToString::to_string).collect();
    let served = Served { hostname: config.hostname.clone(), domains };
    store.record_served(&served).context("recording the served domains in the store")?;
    let peers = Arc::new(PeerTable::default());
    for (domain, address) in &config.peers {
        if config.domains.contains(domain) {
            anyhow::bail!("--peer {domain}: that domain is also a local --domain");
        }
        peers.add_static(domain, *address);
    }
    let directory = Arc::new(
        MailDirectory::new(config.domains.clone(), Users::new(store.users_tree()), peers.clone())
            .remembering(store.clone(), config.remember_peers),
    );
    let mut pipeline_config =
        PipelineConfig { min_free_space: config.min_free_space, ..PipelineConfig::new(&config.hostname) };
    pipeline_config.forward.retry_min = config.retry_min;
    pipeline_config.forward.retry_max = config.retry_max;
    pipeline_config.forward.queue_lifetime = config.queue_lifetime;
    // Only authenticated users reach remote domains, so relaying (and DNS) is on only
    // where they can log in.
    if config.submission.is_some() && config.tls.is_none() {
        log::warn!("--submission without --tls-cert/--tls-key: AUTH passwords travel in the clear");
    }
    if config.submission.is_some() || config.smtps.is_some() {
        pipeline_config.forward.relay = Some(RelayConfig { resolver: config.resolver, mx_port: config.mx_port });
    }
    let pipeline =
        Pipeline::start(store.clone(), directory.clone(), pipeline_config).context("starting the pipeline")?;
    watchdog::start(store.clone(), pipeline.waiting(), config.store_timeout).context("starting the store watchdog")?;

    let admin_context = AdminContext {
        store: store.clone(),
        served: Some(served),
        peers: Some(peers.clone()),
        forward: Some(pipeline.forward_waker()),
        intake: std::sync::Mutex::new(Some(pipeline.intake())),
    };
    let admin = admin::AdminSocket::start(admin_context, &config.data)?;
    let (server, discovery) = start_listeners(&config, &store, directory, &pipeline, &peers, tls.clone(), listeners)?;

    for signal in signals.forever() {
        if signal == SIGHUP {
            reload(&config, tls.as_deref());
            continue;
        }
        log::info!("signal {signal}: shutting down (grace {:?})", config.shutdown_grace);
        break;
    }
    // Goodbye first, so peers stop sending here while the sessions finish.
    if let Some(discovery) = discovery {
        discovery.stop();
    }
    server.shutdown(config.shutdown_grace);
    admin.stop(config.shutdown_grace);
    pipeline.shutdown();
    store.flush().context("final flush")?;
    log::info!("maild stopped");
    Ok(())
}

/// SIGHUP: reads the certificate and key again, and the settings (flags and `--config`
/// file) to say which of them changed; those need a restart to take effect.
fn reload(running: &Config, tls: Option<&tls::Certificates>) {
    log::info!("SIGHUP: reloading");
    if let Some(certificates) = tls {
        match certificates.reload() {
            Ok(()) => log::info!("SIGHUP: certificate and key reloaded; new TLS sessions use them"),
            Err(error) => log::error!("SIGHUP: keeping the running certificate: {error:#}"),
        }
    }
    match Options::parse().resolve() {
        Ok(fresh) => {
            let changed = running.changed(&fresh);
            if changed.is_empty() {
                log::info!("SIGHUP: no other setting changed");
            } else {
                log::warn!("SIGHUP: changed, needs a restart to take effect: {}", changed.join(", "));
            }
        }
        Err(error) => log::error!("SIGHUP: the configuration does not load, keeping the running one: {error:#}"),
    }
}

/// Descriptors each client connection holds (its socket, and a clone for TLS or the
/// reader), and what maild needs besides them (store, blob files being written,
/// listeners, admin socket, mDNS, DNS and outbound connections).
const FILES_PER_CONNECTION: u64 = 2;
const FILES_RESERVED: u64 = 256;

/// Raises the soft open-file limit to the hard one and refuses a `--max-connections`
/// that does not fit in it: running out of descriptors mid-commit (sled cannot create a
/// blob file) can hang the store, which is far worse than refusing to start.
fn raise_file_limit(max_connections: usize) -> Result<()> {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let limit = getrlimit(Resource::Nofile);
    let raised = Rlimit { current: limit.maximum, maximum: limit.maximum };
    if raised.current != limit.current {
        setrlimit(Resource::Nofile, raised).context("raising the open-file limit to its hard limit")?;
    }
    let available = raised.current.unwrap_or(u64::MAX);
    let needed = (max_connections as u64).saturating_mul(FILES_PER_CONNECTION).saturating_add(FILES_RESERVED);
    if needed > available {
        anyhow::bail!(
            "--max-connections {max_connections} needs about {needed} open files, but the limit is {available}: \
             lower --max-connections to {} or raise the hard limit (ulimit -Hn, systemd LimitNOFILE=)",
            available.saturating_sub(FILES_RESERVED) / FILES_PER_CONNECTION
        );
    }
    log::debug!("open-file limit {available}, enough for {max_connections} connections");
    Ok(())
}

/// The listening sockets, bound before the store is opened: a port in use is found (and
/// named) before anything else starts.
struct Listeners {
    smtp: std::net::TcpListener,
    pop3: std::net::TcpListener,
    submission: Option<std::net::TcpListener>,
    smtps: Option<std::net::TcpListener>,
    pop3s: Option<std::net::TcpListener>,
    metrics: Option<std::net::TcpListener>,
}

impl Listeners {
    fn bind(config: &Config) -> Result<Listeners> {
        Ok(Listeners {
            smtp: server::bind(config.smtp, "smtp")?,
            pop3: server::bind(config.pop3, "pop3")?,
            submission: config.submission.map(|address| server::bind(address, "submission")).transpose()?,
            smtps: config.smtps.map(|address| server::bind(address, "smtps")).transpose()?,
            pop3s: config.pop3s.map(|address| server::bind(address, "pop3s")).transpose()?,
            metrics: config.metrics.map(|address| server::bind(address, "metrics")).transpose()?,
        })
    }
}

fn start_listeners(
    config: &Config,
    store: &Store,
    directory: Arc<MailDirectory>,
    pipeline: &Pipeline,
    peers: &Arc<PeerTable>,
    tls: Option<Arc<tls::Certificates>>,
    listeners: Listeners,
) -> Result<(Server, Option<Discovery>)> {
    let Listeners { smtp: smtp_listener, pop3: pop3_listener, submission: submission_listener, smtps, pop3s, metrics } =
        listeners;
    let (smtp_address, pop3_address) = (smtp_listener.local_addr()?, pop3_listener.local_addr()?);
    // Discovery announces the bound SMTP address (port 0 is resolved by now) and is up
    // before the readiness line; connections that come early wait in the listen backlog.
    let discovery = match &config.discover {
        Some(interfaces) => {
            let secret = config.discover_secret.as_deref().map(signature::DiscoverySecret::load).transpose()?;
            Some(Discovery::start(
                peers.clone(),
                &config.hostname,
                &config.domains,
                smtp_address,
                interfaces,
                secret.map(Arc::new),
            )?)
        }
        None => None,
    };

    let limits = Limits {
        total: config.max_connections,
        per_listener: config.max_listener_connections,
        per_client: config.max_client_connections,
    };
    let mut server = Server::new(limits, &config.hostname, pipeline.metrics());
    let logins = Arc::new(Logins::new(Users::new(store.users_tree()), pipeline.metrics()));
    let smtp_config = SmtpConfig {
        tls_available: tls.is_some(),
        data_budget: MemoryBudget::new(config.max_data_in_flight),
        spill_dir: Some(store.bodies().with_reserve(config.min_free_space)),
        ..SmtpConfig::new(&config.hostname, config.max_message_size)
    };
    let directory: Arc<dyn Directory> = Arc::new(VerifyingDirectory::new(directory, &config.hostname));
    let smtp_service = |submission: bool, implicit_tls: bool| {
        Arc::new(SmtpService {
            config: Arc::new(SmtpConfig { submission, ..smtp_config.clone() }),
            directory: directory.clone(),
            intake: pipeline.intake(),
            timeout: config.command_timeout,
            tls: tls.clone(),
            implicit_tls,
            logins: logins.clone(),
            metrics: pipeline.metrics(),
        })
    };
    let busy = Reply::too_many_connections(server.hostname()).as_bytes().to_vec();
    // Plain-text SMTP (smtp, submission) is accepted and served on one event loop; implicit
    // TLS (smtps) begins with a handshake, so each of its clients has a thread.
    let mut on_loop = Vec::new();
    let admission = server.admit_elsewhere("smtp", &smtp_listener, &busy)?;
    on_loop.push(Listening { listener: smtp_listener, admission, service: smtp_service(false, false) });
    // Every listener but smtp and pop3 is optional; each one on is named in the readiness line.
    let mut others = String::new();
    for (name, listener, implicit_tls) in [("submission", submission_listener, false), ("smtps", smtps, true)] {
        if let Some(listener) = listener {
            others.push_str(&format!(" {name}={}", listener.local_addr()?));
            if implicit_tls {
                server.listen(name, listener, &busy, smtp_service(true, true))?;
            } else {
                let admission = server.admit_elsewhere(name, &listener, &busy)?;
                on_loop.push(Listening { listener, admission, service: smtp_service(true, false) });
            }
        }
    }
    let smtp_loop = EventLoop::start(server.shutdown_signal(), on_loop).context("starting the smtp event loop")?;
    server.after_clients(Box::new(move || smtp_loop.stop()));

    let pop3_service = |implicit_tls: bool| {
        Arc::new(Pop3Service::new(
            Pop3Config { hostname: config.hostname.clone(), tls_available: tls.is_some() },
            store.clone(),
            logins.clone(),
            config.pop3_timeout,
            tls.clone(),
            implicit_tls,
        ))
    };
    let busy = b"-ERR [SYS/TEMP] too many connections, try again later\r\n";
    server.listen("pop3", pop3_listener, busy, pop3_service(false))?;
    if let Some(listener) = pop3s {
        others.push_str(&format!(" pop3s={}", listener.local_addr()?));
        server.listen("pop3s", listener, busy, pop3_service(true))?;
    }

    if let Some(listener) = metrics {
        others.push_str(&format!(" metrics={}", listener.local_addr()?));
        metrics::start(listener, pipeline.metrics(), store.clone())?;
    }

    log::info!(
        "maild ready: smtp={smtp_address} pop3={pop3_address}{others} hostname={} domains={} data={}",
        config.hostname,
        config.domains.iter().map(ToString::to_string).collect::<Vec<_>>().join(","),
        config.data.display()
    );
    Ok((server, discovery))
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// maild is a daemon: section 8.
    #[test]
    fn generated_man_pages_and_completions_are_current() {
        super::generated::check(super::Options::command(), "8");
    }
}
