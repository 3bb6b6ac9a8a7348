//! Listening sockets, the accept loops, the connection limit, and orderly shutdown.
//!
//! A listener has an accept thread, and each client it accepts gets a worker thread of its
//! own (small stack), so an idle or slow client never delays another; or an event loop
//! accepts on it and serves its clients (plain-text SMTP: `event_loop.rs`), admitting
//! them with the same [`Admission`]. A worker whose client left waits a few seconds for
//! the next one before it ends ([`Workers`]), so a stream of one-message connections does
//! not start and end a thread per client. Three limits hold a crowd off ([`Limits`]):
//! connections in all, per listener (so port 25 cannot lock out POP3 and submission), and
//! per client address on a listener (Postfix's anvil). A client past one of them is told
//! `421` (or `-ERR`) and closed at once, without a thread, and the refusal is logged.

use std::collections::HashMap;
use std::io::Write;
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use engine::metrics::Metrics;
use socket2::{Domain, Socket, Type};

/// Worker threads only run a session; they need little stack.
const WORKER_STACK: usize = 256 * 1024;
/// How long a worker whose client left waits for another before it ends.
const WORKER_IDLE: Duration = Duration::from_secs(10);
/// How long accepting waits after a failure (EMFILE and friends) before it tries again.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// A client and what serves it. The socket travels beside the closure so that a client
/// no thread could be started for is still there to be told `421`.
pub type Job = (TcpStream, Box<dyn FnOnce(TcpStream) + Send>);

/// One listener's worker threads: a new client goes to a worker that is waiting for one,
/// or, when none is, to a new thread.
pub struct Workers {
    name: &'static str,
    /// Zero capacity: a send succeeds only into the hands of a waiting worker.
    hand_over: crossbeam_channel::Sender<Job>,
    waiting: crossbeam_channel::Receiver<Job>,
}

impl Workers {
    pub fn new(name: &'static str) -> Workers {
        let (hand_over, waiting) = crossbeam_channel::bounded(0);
        Workers { name, hand_over, waiting }
    }

    /// Hands `job` to a worker; if no thread could be started for it, gives its socket back.
    pub fn run(&self, job: Job) -> Result<(), (std::io::Error, TcpStream)> {
        let job = match self.hand_over.try_send(job) {
            Ok(()) => return Ok(()),
            Err(refused) => refused.into_inner(),
        };
        let waiting = self.waiting.clone();
        let started = std::thread::Builder::new().name(format!("{}-client", self.name)).stack_size(WORKER_STACK).spawn(
            move || {
                while let Ok((stream, serve)) = waiting.recv_timeout(WORKER_IDLE) {
                    serve(stream);
                }
            },
        );
        match started {
            // The new worker (or one that came free meanwhile) takes it.
            Ok(_) => self
                .hand_over
                .send(job)
                .map_err(|refused| (std::io::Error::other("the listener's workers are gone"), refused.into_inner().0)),
            Err(error) => Err((error, job.0)),
        }
    }
}

/// Binds with SO_REUSEADDR so a restart on the same port works at once.
pub fn bind(address: SocketAddr, what: &str) -> Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(address), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.bind(&address.into()).with_context(|| {
        format!(
            "binding the {what} listener to {address} (another server may be using it: choose another with --{what})"
        )
    })?;
    socket.listen(1024)?;
    Ok(socket.into())
}

/// How far shutdown has got, as seen by the workers.
#[derive(Default)]
pub struct ShutdownSignal {
    begun: AtomicBool,
    grace_over: AtomicBool,
}

impl ShutdownSignal {
    pub fn begun(&self) -> bool {
        self.begun.load(Ordering::SeqCst)
    }

    pub fn grace_over(&self) -> bool {
        self.grace_over.load(Ordering::SeqCst)
    }
}

/// How many client connections may be open at once.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub total: usize,
    pub per_listener: usize,
    /// Per client address (an IPv6 /64) on one listener.
    pub per_client: usize,
}

/// The live client connections, so shutdown can reach and wait for them, and their counts
/// per listener and per client.
#[derive(Default)]
struct Registry {
    next_id: AtomicU64,
    open: Mutex<Open>,
    emptied: Condvar,
}

#[derive(Default)]
struct Open {
    streams: HashMap<u64, TcpStream>,
    per_listener: HashMap<&'static str, usize>,
    per_client: HashMap<(&'static str, IpAddr), usize>,
}

impl Open {
    /// Why a new client of `listener` from `client` may not be served, if it may not.
    fn refusal(&self, limits: &Limits, listener: &'static str, client: IpAddr) -> Option<String> {
        let on_listener = self.per_listener.get(listener).copied().unwrap_or(0);
        let from_client = self.per_client.get(&(listener, client)).copied().unwrap_or(0);
        if self.streams.len() >= limits.total {
            Some(format!("{} connections in all, the limit", self.streams.len()))
        } else if on_listener >= limits.per_listener {
            Some(format!("{on_listener} connections on this listener, the limit"))
        } else if from_client >= limits.per_client {
            Some(format!("{from_client} connections from this client, the limit"))
        } else {
            None
        }
    }
}

/// Decrements a count, dropping the entry at zero so the maps stay small.
fn release<K: std::hash::Hash + Eq>(counts: &mut HashMap<K, usize>, key: &K) {
    if let Some(count) = counts.get_mut(key) {
        *count = count.saturating_sub(1);
        if *count == 0 {
            counts.remove(key);
        }
    }
}

/// Unregisters a connection when its worker ends, however it ends.
pub struct Registration {
    metrics: Arc<Metrics>,
    registry: Arc<Registry>,
    id: u64,
    listener: &'static str,
    client: IpAddr,
    peer: SocketAddr,
    opened: Instant,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut open = self.registry.open.lock().unwrap_or_else(|e| e.into_inner());
        open.streams.remove(&self.id);
        release(&mut open.per_listener, &self.listener);
        release(&mut open.per_client, &(self.listener, self.client));
        if open.streams.is_empty() {
            self.registry.emptied.notify_all();
        }
        drop(open);
        self.metrics.connection_closed(self.listener);
        log::info!(
            "{}: disconnect client={} port={} duration={:.3}s",
            self.listener,
            self.peer.ip().to_canonical(),
            self.peer.port(),
            self.opened.elapsed().as_secs_f64()
        );
    }
}

/// The unit one client controls: an IPv4 address, or an IPv6 /64 (one end site's subnet).
pub fn client_key(client: IpAddr) -> IpAddr {
    match client.to_canonical() {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        v4 => v4,
    }
}

/// What a listener does with an accepted client, on the client's own thread.
pub trait Service: Send + Sync + 'static {
    /// Serves the client on a thread of its own.
    fn serve(&self, stream: TcpStream, peer: SocketAddr, shutdown: &ShutdownSignal);
}

pub struct Server {
    shutdown: Arc<ShutdownSignal>,
    registry: Arc<Registry>,
    limits: Limits,
    hostname: String,
    metrics: Arc<Metrics>,
    listeners: Vec<(TcpListener, JoinHandle<()>)>,
    /// Listeners an event loop accepts on.
    closed_at_shutdown: Vec<TcpListener>,
    /// Run once every client is gone: event loops stop here.
    after_clients: Vec<Box<dyn FnOnce() + Send>>,
}

impl Server {
    pub fn new(limits: Limits, hostname: &str, metrics: Arc<Metrics>) -> Server {
        Server {
            shutdown: Arc::default(),
            registry: Arc::default(),
            metrics,
            limits,
            hostname: hostname.to_string(),
            listeners: Vec::new(),
            closed_at_shutdown: Vec::new(),
            after_clients: Vec::new(),
        }
    }

    /// What shutdown tells the sessions.
    pub fn shutdown_signal(&self) -> Arc<ShutdownSignal> {
        self.shutdown.clone()
    }

    /// Runs `stop` at shutdown, once every client is gone.
    pub fn after_clients(&mut self, stop: Box<dyn FnOnce() + Send>) {
        self.after_clients.push(stop);
    }

    /// Starts accepting on `listener`, serving each client with `serve`. `busy` is what a
    /// client is told when the server is full.
    pub fn listen(
        &mut self,
        name: &'static str,
        listener: TcpListener,
        busy: &[u8],
        service: Arc<dyn Service>,
    ) -> Result<()> {
        let accept_listener = listener.try_clone()?;
        let admission = self.admission(name, busy);
        let handle = std::thread::Builder::new()
            .name(format!("accept-{name}"))
            .spawn(move || accept_loop(accept_listener, admission, service))?;
        self.listeners.push((listener, handle));
        Ok(())
    }

    fn admission(&self, name: &'static str, busy: &[u8]) -> Admission {
        Admission {
            name,
            busy: busy.to_vec(),
            shutdown: self.shutdown.clone(),
            registry: self.registry.clone(),
            limits: self.limits,
            metrics: self.metrics.clone(),
        }
    }

    /// For a listener whose clients an event loop accepts: what the loop admits them
    /// with. Shutdown closes the listener (the loop's accept then fails) like the others.
    pub fn admit_elsewhere(&mut self, name: &'static str, listener: &TcpListener, busy: &[u8]) -> Result<Admission> {
        self.closed_at_shutdown.push(listener.try_clone()?);
        Ok(self.admission(name, busy))
    }

    pub fn hostname(&self) -> &str {
        &self.hostname
    }

    /// Stops accepting, lets sessions run for `grace`, then ends the rest (each session
    /// says goodbye with its protocol's 421 / -ERR) and waits for every worker.
    pub fn shutdown(self, grace: Duration) {
        self.shutdown.begun.store(true, Ordering::SeqCst);
        for (listener, handle) in self.listeners {
            // Wakes the blocked accept() (Linux returns EINVAL) and closes the port.
            let _ = Socket::from(listener).shutdown(Shutdown::Both);
            let _ = handle.join();
        }
        for listener in self.closed_at_shutdown {
            let _ = Socket::from(listener).shutdown(Shutdown::Both);
        }
        let deadline = Instant::now() + grace;
        let mut open = self.registry.open.lock().unwrap_or_else(|e| e.into_inner());
        while !open.streams.is_empty() {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            open = self.registry.emptied.wait_timeout(open, deadline - now).unwrap_or_else(|e| e.into_inner()).0;
        }
        if !open.streams.is_empty() {
            log::info!("shutdown grace over; closing {} session(s)", open.streams.len());
            self.shutdown.grace_over.store(true, Ordering::SeqCst);
            for stream in open.streams.values() {
                let _ = stream.shutdown(Shutdown::Read);
            }
        }
        while !open.streams.is_empty() {
            open = self.registry.emptied.wait(open).unwrap_or_else(|e| e.into_inner());
        }
        drop(open);
        for stop in self.after_clients {
            stop();
        }
    }
}

/// Admits a listener's clients: the limits, the registry, the log line, or `421`.
pub struct Admission {
    pub name: &'static str,
    /// What a client is told when the server is full.
    busy: Vec<u8>,
    shutdown: Arc<ShutdownSignal>,
    registry: Arc<Registry>,
    limits: Limits,
    metrics: Arc<Metrics>,
}

impl Admission {
    /// Counts the client in, or tells it `busy`, logs why and closes it (`None`).
    pub fn admit(&self, stream: &TcpStream, peer: SocketAddr) -> Option<Registration> {
        let name = self.name;
        let client = client_key(peer.ip());
        let registration = {
            let mut open = self.registry.open.lock().unwrap_or_else(|e| e.into_inner());
            match open.refusal(&self.limits, name, client) {
                Some(reason) => Err(reason),
                None => {
                    let id = self.registry.next_id.fetch_add(1, Ordering::Relaxed);
                    match stream.try_clone() {
                        Ok(clone) => {
                            open.streams.insert(id, clone);
                            *open.per_listener.entry(name).or_default() += 1;
                            *open.per_client.entry((name, client)).or_default() += 1;
                            self.metrics.connection_opened(name);
                            Ok(Registration {
                                metrics: self.metrics.clone(),
                                registry: self.registry.clone(),
                                id,
                                listener: name,
                                client,
                                peer,
                                opened: Instant::now(),
                            })
                        }
                        Err(error) => Err(format!("cannot register the connection: {error}")),
                    }
                }
            }
        };
        match registration {
            Ok(registration) => {
                log::info!("{name}: connect client={} port={}", peer.ip().to_canonical(), peer.port());
                Some(registration)
            }
            Err(reason) => {
                log::warn!("{name}: connection refused: client={} reason=\"{reason}\"", peer.ip().to_canonical());
                self.refuse(stream);
                None
            }
        }
    }

    /// Tells a client we are full, without letting it hold up the accept loop.
    pub fn refuse(&self, mut stream: &TcpStream) {
        let _ = stream.set_nonblocking(true);
        let _ = stream.write(&self.busy);
        let _ = stream.shutdown(Shutdown::Both);
    }
}

fn accept_loop(listener: TcpListener, admission: Admission, service: Arc<dyn Service>) {
    let name = admission.name;
    let workers = Workers::new(name);
    loop {
        let (stream, peer) = match listener.accept() {
            Ok(accepted) => accepted,
            Err(_) if admission.shutdown.begun() => return,
            Err(error) => {
                // EMFILE and friends: back off briefly instead of spinning.
                log::warn!("{name}: accept failed: {error}");
                std::thread::sleep(ACCEPT_BACKOFF);
                continue;
            }
        };
        if admission.shutdown.begun() {
            return;
        }
        let Some(registration) = admission.admit(&stream, peer) else { continue };
        let (service, shutdown) = (service.clone(), admission.shutdown.clone());
        let spawned = workers.run((
            stream,
            Box::new(move |stream| {
                let _registration = registration;
                service.serve(stream, peer, &shutdown);
            }),
        ));
        if let Err((error, stream)) = spawned {
            log::warn!("{name}: cannot start a worker for {peer}: {error}");
            admission.refuse(&stream);
        }
    }
}
