//! Listening sockets, the accept loops, the connection limit, and orderly shutdown.
//!
//! Each listener has an accept thread; each accepted client gets a worker thread of its
//! own (small stack), so an idle or slow client never delays another. Past
//! `max_connections` a new client is told `421` and closed at once, without a thread.

use std::collections::HashMap;
use std::io::Write;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use socket2::{Domain, Socket, Type};

/// Worker threads only run a session; they need little stack.
const WORKER_STACK: usize = 256 * 1024;

/// Binds with SO_REUSEADDR so a restart on the same port works at once.
pub fn bind(address: SocketAddr, what: &str) -> Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(address), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.bind(&address.into()).with_context(|| format!("binding the {what} listener to {address}"))?;
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

/// The live client connections, so shutdown can reach and wait for them.
#[derive(Default)]
struct Registry {
    next_id: AtomicU64,
    streams: Mutex<HashMap<u64, TcpStream>>,
    emptied: Condvar,
}

/// Unregisters a connection when its worker ends, however it ends.
struct Registration {
    registry: Arc<Registry>,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut streams = self.registry.streams.lock().unwrap_or_else(|e| e.into_inner());
        streams.remove(&self.id);
        if streams.is_empty() {
            self.registry.emptied.notify_all();
        }
    }
}

/// What a listener does with an accepted client, on the client's own thread.
pub type Serve = Arc<dyn Fn(TcpStream, SocketAddr, &ShutdownSignal) + Send + Sync>;

pub struct Server {
    shutdown: Arc<ShutdownSignal>,
    registry: Arc<Registry>,
    max_connections: usize,
    hostname: String,
    listeners: Vec<(TcpListener, JoinHandle<()>)>,
}

impl Server {
    pub fn new(max_connections: usize, hostname: &str) -> Server {
        Server {
            shutdown: Arc::default(),
            registry: Arc::default(),
            max_connections,
            hostname: hostname.to_string(),
            listeners: Vec::new(),
        }
    }

    /// Starts accepting on `listener`, serving each client with `serve`. `busy` is what a
    /// client is told when the server is full.
    pub fn listen(&mut self, name: &'static str, listener: TcpListener, busy: Vec<u8>, serve: Serve) -> Result<()> {
        let accept_listener = listener.try_clone()?;
        let (shutdown, registry, max) = (self.shutdown.clone(), self.registry.clone(), self.max_connections);
        let handle = std::thread::Builder::new()
            .name(format!("accept-{name}"))
            .spawn(move || accept_loop(name, accept_listener, busy, serve, shutdown, registry, max))?;
        self.listeners.push((listener, handle));
        Ok(())
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
        let deadline = Instant::now() + grace;
        let mut streams = self.registry.streams.lock().unwrap_or_else(|e| e.into_inner());
        while !streams.is_empty() {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            streams = self.registry.emptied.wait_timeout(streams, deadline - now).unwrap_or_else(|e| e.into_inner()).0;
        }
        if !streams.is_empty() {
            log::info!("shutdown grace over; closing {} session(s)", streams.len());
            self.shutdown.grace_over.store(true, Ordering::SeqCst);
            for stream in streams.values() {
                let _ = stream.shutdown(Shutdown::Read);
            }
        }
        while !streams.is_empty() {
            streams = self.registry.emptied.wait(streams).unwrap_or_else(|e| e.into_inner());
        }
    }
}

fn accept_loop(
    name: &'static str,
    listener: TcpListener,
    busy: Vec<u8>,
    serve: Serve,
    shutdown: Arc<ShutdownSignal>,
    registry: Arc<Registry>,
    max_connections: usize,
) {
    let busy = Arc::new(busy);
    loop {
        let (stream, peer) = match listener.accept() {
            Ok(accepted) => accepted,
            Err(_) if shutdown.begun() => return,
            Err(error) => {
                // EMFILE and friends: back off briefly instead of spinning.
                log::warn!("{name}: accept failed: {error}");
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        if shutdown.begun() {
            return;
        }
        let registration = {
            let mut streams = registry.streams.lock().unwrap_or_else(|e| e.into_inner());
            if streams.len() >= max_connections {
                None
            } else {
                let id = registry.next_id.fetch_add(1, Ordering::Relaxed);
                stream.try_clone().ok().map(|clone| {
                    streams.insert(id, clone);
                    Registration { registry: registry.clone(), id }
                })
            }
        };
        let Some(registration) = registration else {
            refuse(stream, &busy);
            continue;
        };
        let (serve, shutdown_for_worker) = (serve.clone(), shutdown.clone());
        let refused = stream.try_clone();
        let spawned =
            std::thread::Builder::new().name(format!("{name}-client")).stack_size(WORKER_STACK).spawn(move || {
                let _registration = registration;
                serve(stream, peer, &shutdown_for_worker);
            });
        if let Err(error) = spawned {
            log::warn!("{name}: cannot start a worker for {peer}: {error}");
            if let Ok(stream) = refused {
                refuse(stream, &busy);
            }
        }
    }
}

/// Tells a client we are full, without letting it hold up the accept loop.
fn refuse(mut stream: TcpStream, busy: &[u8]) {
    let _ = stream.set_nonblocking(true);
    let _ = stream.write(busy);
    let _ = stream.shutdown(Shutdown::Both);
}
