//! The admin socket `DATA/maild.sock`: how `mailtool` reaches a running maild.
//!
//! sled lets one process open a store, so while maild runs, `mailtool` sends its request
//! here and maild runs it (`engine::admin::execute`) on its own open store, streaming the
//! output back in frames. The socket is mode 0600: only its owner (and root) may use it.

use std::io::{BufReader, BufWriter, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use engine::admin::frame::{decode_request, read_frame, write_frame, Frame, FrameOutput};
use engine::admin::{execute, AdminContext, ExportFormat, Request};

/// `sun_path` holds 108 bytes on Linux, including the terminating NUL.
const MAX_SOCKET_PATH: usize = 107;

pub fn socket_path(data: &Path) -> PathBuf {
    data.join("maild.sock")
}

pub struct AdminSocket {
    path: PathBuf,
    context: Arc<AdminContext>,
    stopping: Arc<AtomicBool>,
    active: Arc<AtomicUsize>,
    accept: JoinHandle<()>,
}

impl AdminSocket {
    pub fn start(context: AdminContext, data: &Path) -> Result<AdminSocket> {
        let context = Arc::new(context);
        let path = socket_path(data);
        let length = path.as_os_str().len();
        if length > MAX_SOCKET_PATH {
            bail!(
                "the admin socket path {} is {length} bytes, longer than a Unix socket allows ({MAX_SOCKET_PATH}); use a shorter --data path",
                path.display()
            );
        }
        // We hold the store's lock, so a socket file left here is from a dead maild.
        let _ = std::fs::remove_file(&path);
        let listener =
            UnixListener::bind(&path).with_context(|| format!("binding the admin socket {}", path.display()))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        let (stopping, active) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicUsize::new(0)));
        let (stop, count, shared) = (stopping.clone(), active.clone(), context.clone());
        let accept = std::thread::Builder::new().name("admin".into()).spawn(move || {
            for stream in listener.incoming() {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let (context, in_flight) = (context.clone(), count.clone());
                count.fetch_add(1, Ordering::SeqCst);
                let spawned = std::thread::Builder::new().name("admin-client".into()).spawn(move || {
                    if let Err(error) = serve(stream, &context) {
                        log::warn!("admin request: {error:#}");
                    }
                    in_flight.fetch_sub(1, Ordering::SeqCst);
                });
                if let Err(error) = spawned {
                    log::warn!("admin: cannot start a thread for a request: {error}");
                    count.fetch_sub(1, Ordering::SeqCst);
                }
            }
        })?;
        Ok(AdminSocket { path, context: shared, stopping, active, accept })
    }

    /// Stops accepting, waits (bounded) for requests in flight, removes the socket.
    pub fn stop(self, grace: Duration) {
        self.stopping.store(true, Ordering::SeqCst);
        // Wake the blocked accept with a connection of our own.
        let _ = UnixStream::connect(&self.path);
        let _ = self.accept.join();
        // The pipeline's shutdown waits for every intake sender, so a request still
        // running must not hold one.
        self.context.close_intake();
        let deadline = Instant::now() + grace;
        while self.active.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

/// How long a command waits for the deliver stage to catch up before it reads anyway.
const SETTLE: Duration = Duration::from_secs(10);

fn serve(stream: UnixStream, context: &AdminContext) -> Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let Frame::Request(bytes) = read_frame(&mut reader)? else { bail!("expected a request frame") };
    let request: Request = decode_request(&bytes)?;
    log::info!("admin: {}", describe(&request));
    // Mail acknowledged before the command is in the mailboxes it reads.
    context.store.wait_for_delivery(SETTLE, "admin");
    let mut output = FrameOutput::new(BufWriter::new(stream));
    let result = execute(context, request, &mut output);
    let last = match result {
        Ok(()) => Frame::Done,
        Err(error) => Frame::Failed(error.to_string()),
    };
    write_frame(&mut output.out, &last)?;
    output.out.flush()?;
    Ok(())
}

/// A request as the `mailtool` command line that made it (without passwords), for the log.
fn describe(request: &Request) -> String {
    let bound = |flag: &str, value: &Option<u64>| value.map(|n| format!(" --{flag} {n}")).unwrap_or_default();
    match request {
        Request::UserAdd { address, any_domain, .. } => {
            format!("user add {address}{}", if *any_domain { " --any-domain" } else { "" })
        }
        Request::UserDel { address } => format!("user del {address}"),
        Request::UserList => "user list".into(),
        Request::UserPasswd { address, .. } => format!("user passwd {address}"),
        Request::MailboxClear { address } => format!("mailbox clear {address}"),
        Request::Export { user, from, to, format, output } => format!(
            "export{}{}{} --format {}{}",
            user.as_ref().map(|u| format!(" --user {u}")).unwrap_or_default(),
            bound("from", from),
            bound("to", to),
            match format {
                ExportFormat::Mbox => "mbox",
                ExportFormat::Maildir => "maildir",
            },
            output.as_ref().map(|o| format!(" -o {o}")).unwrap_or_default(),
        ),
        Request::Backup { output } => format!("backup -o {output}"),
        Request::Verify => "verify".into(),
        Request::Stats => "stats".into(),
        Request::Queue => "queue".into(),
        Request::QueueFlush => "queue flush".into(),
        Request::QueueDelete { number, silent } => {
            format!("queue delete {number}{}", if *silent { " --silent" } else { "" })
        }
        Request::Peers => "peers".into(),
        Request::PeersForget { domain } => format!("peers forget {domain}"),
    }
}
