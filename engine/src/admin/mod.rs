//! Administration: the operations behind `mailtool`, in one place.
//!
//! `mailtool` runs a [`Request`] either in its own process, on a store it opened (maild
//! stopped), or sends it over the Unix socket `DATA/maild.sock` to a running maild, which
//! runs the very same [`execute`] on its open store and streams the output back
//! ([`frame`]). So every command works both ways with the same output.

pub mod copy;
pub mod export;
pub mod frame;
pub mod verify;

use std::io;
use std::sync::{Arc, Mutex};

use crossbeam_channel::Sender;
use rkyv::{Archive, Deserialize, Serialize};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::address::{user_key, Address};
use crate::domain::Domain;
use crate::forward::dsn::FailedRecipient;
use crate::peers::{PeerSource, PeerTable};
use crate::pipeline::forward::{self, Bounce};
use crate::pipeline::{persist, Signal, Submission};
use crate::store::{Served, Store, StoreError};
use crate::users::{UserError, Users};

/// What a command runs against: the store and the name bounces are signed with, and
/// inside a running maild also its peers, the forward stage's wake-up and the intake.
pub struct AdminContext {
    pub store: Store,
    /// What maild serves; offline, what the last maild on the store served, if any ran.
    pub served: Option<Served>,
    pub peers: Option<Arc<PeerTable>>,
    pub forward: Option<Signal>,
    /// Taken away ([`AdminContext::close_intake`]) before the pipeline shuts down, which
    /// waits for every intake sender to go.
    pub intake: Mutex<Option<Sender<Submission>>>,
}

impl AdminContext {
    /// A store opened by `mailtool` itself (maild not running).
    pub fn offline(store: Store) -> Result<AdminContext> {
        let served = store.served()?;
        Ok(AdminContext { store, served, peers: None, forward: None, intake: Mutex::new(None) })
    }

    /// No more messages from admin commands (maild is stopping).
    pub fn close_intake(&self) {
        self.intake.lock().unwrap_or_else(|e| e.into_inner()).take();
    }

    /// The name bounces are signed with.
    fn hostname(&self) -> &str {
        self.served.as_ref().map_or("localhost", |s| s.hostname.as_str())
    }
}

#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    Mbox,
    Maildir,
}

/// One admin command, as `mailtool` parsed it. Paths are absolute.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// `any_domain`: also for a domain maild does not serve.
    UserAdd {
        address: String,
        password: String,
        any_domain: bool,
    },
    UserDel {
        address: String,
    },
    MailboxClear {
        address: String,
    },
    UserList,
    UserPasswd {
        address: String,
        password: String,
    },
    Export {
        user: Option<String>,
        from: Option<u64>,
        to: Option<u64>,
        format: ExportFormat,
        output: Option<String>,
    },
    Backup {
        output: String,
    },
    Verify,
    Stats,
    Queue,
    QueueFlush,
    /// Removes message `number` from the outbound queue, bouncing it unless `silent`.
    QueueDelete {
        number: u64,
        silent: bool,
    },
    Peers,
    PeersForget {
        domain: String,
    },
}

/// Where a command's results go: the terminal, or the socket back to `mailtool`.
pub trait Output {
    /// Bytes for standard output.
    fn stdout(&mut self, bytes: &[u8]) -> io::Result<()>;
    /// Progress of a long command (`done` of `total` messages).
    fn progress(&mut self, label: &str, done: u64, total: u64);
}

/// Why a command failed; printed by `mailtool` after `mailtool: `, exit status 1.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    User(#[from] UserError),
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("{0}")]
    Failed(String),
}

pub type Result<T> = std::result::Result<T, AdminError>;

pub fn execute(context: &AdminContext, request: Request, out: &mut dyn Output) -> Result<()> {
    let store = &context.store;
    let users = Users::new(store.users_tree());
    match request {
        Request::UserAdd { address, password, any_domain } => {
            if !any_domain {
                check_served(context.served.as_ref(), &address)?;
            }
            // A new account starts empty, even where a deletion was cut short after the
            // user went but before the mailbox was emptied.
            let key = mailbox_key(&address)?;
            if !users.exists(&key)? {
                store.clear_mailbox(&key)?;
            }
            users.add(&address, &password)?;
            out.stdout(format!("added {address}\n").as_bytes())?;
        }
        Request::UserDel { address } => {
            // The user first, so that nothing is delivered to the mailbox after it is emptied.
            users.delete(&address)?;
            store.flush()?;
            let removed = store.clear_mailbox(&mailbox_key(&address)?)?;
            out.stdout(format!("deleted {address} and {removed} message(s)\n").as_bytes())?;
        }
        Request::MailboxClear { address } => {
            let key = mailbox_key(&address)?;
            if !users.exists(&key)? {
                return Err(AdminError::Failed(format!("no user {address}")));
            }
            let removed = store.clear_mailbox(&key)?;
            out.stdout(format!("cleared {removed} message(s) from {address}\n").as_bytes())?;
        }
        Request::UserList => {
            for user in users.list()? {
                out.stdout(format!("{}\n", user.address).as_bytes())?;
            }
        }
        Request::UserPasswd { address, password } => {
            users.set_password(&address, &password)?;
            out.stdout(format!("password changed for {address}\n").as_bytes())?;
        }
        Request::Export { user, from, to, format, output } => {
            export::export(store, user.as_deref(), from, to, format, output.as_deref(), out)?;
        }
        Request::Backup { output } => copy::backup(store, output.as_ref(), out)?,
        Request::Verify => verify::run(store, out)?,
        Request::Stats => stats(context, &users, out)?,
        Request::Queue => queue(store, out)?,
        Request::QueueFlush => {
            let count = store.flush_queue()?;
            if let Some(forward) = &context.forward {
                forward.wake();
            }
            let when = if context.forward.is_some() { "now" } else { "when maild starts" };
            out.stdout(format!("queue flush: {count} message(s) will be retried {when}\n").as_bytes())?;
        }
        Request::QueueDelete { number, silent } => queue_delete(context, number, silent, out)?,
        Request::Peers => peers(context, out)?,
        Request::PeersForget { domain } => {
            let domain = Domain::parse(&domain).map_err(AdminError::Failed)?;
            let current = context.peers.as_ref().and_then(|p| p.lookup(&domain));
            if current.as_ref().is_some_and(|p| p.source == PeerSource::Static) {
                return Err(AdminError::Failed(format!(
                    "{domain} is a --peer of the running maild; remove it from its configuration"
                )));
            }
            let remembered = store.forget_peer_domain(&domain)?;
            if let (Some(table), Some(_)) = (&context.peers, &current) {
                table.forget_discovered(&domain);
            }
            if !remembered && current.is_none() {
                return Err(AdminError::Failed(format!("no peer domain {domain}")));
            }
            let again = if current.is_some() {
                " (its peer is announcing it now: it returns at the next announcement)"
            } else {
                ""
            };
            out.stdout(format!("forgot peer domain {domain}{again}\n").as_bytes())?;
        }
    }
    Ok(())
}

/// Refuses an address whose domain maild does not serve: its user could send but never
/// receive. Nothing to check against before maild first ran on the store.
fn check_served(served: Option<&Served>, address: &str) -> Result<()> {
    let Some(served) = served else { return Ok(()) };
    let parsed = Address::parse(address, None)
        .map_err(|_| AdminError::Failed(format!("{address:?} is not a valid address (want local@domain)")))?;
    let domain = parsed.domain();
    if served.serves(&Domain::of(&parsed)) {
        return Ok(());
    }
    Err(AdminError::Failed(format!(
        "maild does not serve {domain} (its domains: {}), so {address} could never receive mail; \
         start maild with --domain {domain}, or give --any-domain to add the user anyway",
        served.domains.join(", ")
    )))
}

/// `queue delete N`: the bounce (unless `silent`) is committed before the records go, so
/// a failure midway leaves the message queued, never gone without its bounce.
fn queue_delete(context: &AdminContext, number: u64, silent: bool, out: &mut dyn Output) -> Result<()> {
    let store = &context.store;
    let records: Vec<_> = store.queue()?.into_iter().filter(|(_, record)| record.number == number).collect();
    if records.is_empty() {
        return Err(AdminError::Failed(format!("message {number} is not in the queue")));
    }
    let recipients: Vec<String> = records.iter().flat_map(|(_, r)| r.recipients.iter().cloned()).collect();
    let mut said = format!("deleted message {number} from the queue ({} recipient(s))", recipients.len());
    if !silent {
        let failed: Vec<FailedRecipient> = recipients
            .iter()
            .map(|recipient| FailedRecipient {
                recipient: recipient.clone(),
                status: "5.0.0".into(),
                diagnostic: "deleted from the queue by the administrator".into(),
                remote_mta: None,
            })
            .collect();
        // A local sender without a user is forged (peers are not asked from here).
        let forged = |sender: &Address| {
            let local = context.served.as_ref().is_some_and(|s| s.serves(&Domain::of(sender)));
            local.then(|| forward::unknown_local_sender(store, sender)).flatten()
        };
        let bounce =
            forward::bounce_message(store, context.hostname(), number, &failed, &forged).map_err(AdminError::Failed)?;
        match bounce {
            Bounce::Skip(why) => said.push_str(&format!("; no bounce: {why}")),
            Bounce::Send(message) => {
                let sender = message.envelope.recipients.join(",");
                let intake = context.intake.lock().unwrap_or_else(|e| e.into_inner()).clone();
                let (bounced, when) = match intake {
                    Some(intake) => (forward::submit(&intake, message).map_err(AdminError::Failed)?, ""),
                    None if context.forward.is_some() => {
                        return Err(AdminError::Failed("maild is stopping; nothing was deleted".into()))
                    }
                    None => {
                        (persist::commit_offline(store, message, context.hostname())?, " (delivered when maild starts)")
                    }
                };
                said.push_str(&format!("; bounced to <{sender}> as message {bounced}{when}"));
            }
        }
    }
    for (key, _) in &records {
        store.update_queue(key, None)?;
    }
    log::info!("{said}");
    out.stdout(format!("{said}\n").as_bytes())?;
    Ok(())
}

/// The key of an address's mailbox, or why the address is not one.
fn mailbox_key(address: &str) -> Result<String> {
    user_key(address).map_err(|_| AdminError::Failed(format!("{address:?} is not a valid address (want local@domain)")))
}

fn millis_text(millis: u64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(millis) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| millis.to_string())
}

fn queue(store: &Store, out: &mut dyn Output) -> Result<()> {
    let queue = store.queue()?;
    let mut text = String::new();
    for (_, record) in &queue {
        let next = if record.next_attempt == 0 { "now".to_string() } else { millis_text(record.next_attempt) };
        let error = if record.last_error.is_empty() { "-" } else { record.last_error.as_str() };
        text.push_str(&format!(
            "{} {} attempts={} next={next} recipients=<{}> error={error}\n",
            record.number,
            record.domain,
            record.attempts,
            record.recipients.join(">,<")
        ));
    }
    text.push_str(&format!("queue depth: {}\n", queue.len()));
    out.stdout(text.as_bytes())?;
    Ok(())
}

/// `peers`: the peers the running maild knows, then the domains discovered peers owned.
fn peers(context: &AdminContext, out: &mut dyn Output) -> Result<()> {
    let mut text = String::new();
    for peer in context.peers.as_ref().map(|p| p.list()).unwrap_or_default() {
        let source = if peer.source == PeerSource::Static { "static" } else { "discovered" };
        text.push_str(&format!("peer {} {} ({source})\n", peer.domain, peer.address));
    }
    for (domain, seen) in context.store.peer_domains()? {
        let seen = if seen == 0 { "unknown".to_string() } else { millis_text(seen.saturating_mul(1000)) };
        text.push_str(&format!("remembered {domain} last-seen={seen}\n"));
    }
    out.stdout(text.as_bytes())?;
    Ok(())
}

fn stats(context: &AdminContext, users: &Users, out: &mut dyn Output) -> Result<()> {
    let store = &context.store;
    let head = store.head()?;
    let users = users.list()?;
    let mut text = format!("head: {head}\n");
    text.push_str(&format!("messages: {}\n", store.message_count()?));
    text.push_str(&format!("delivered: {}\n", store.delivered_through()?));
    text.push_str(&format!("backed up: {}\n", store.backed_up_through()?));
    text.push_str(&format!("users: {}\n", users.len()));
    for user in &users {
        let key = user_key(&user.address).unwrap_or_else(|_| user.address.clone());
        text.push_str(&format!("mailbox {}: {}\n", user.address, store.mailbox(&key)?.len()));
    }
    text.push_str(&format!("queue depth: {}\n", store.queue()?.len()));
    if let Some(peers) = context.peers.as_ref().map(|p| p.list()).filter(|p| !p.is_empty()) {
        let discovered = peers.iter().filter(|p| p.source == PeerSource::Discovered).count();
        text.push_str(&format!(
            "peers: {} (static {}, discovered {discovered})\n",
            peers.len(),
            peers.len() - discovered
        ));
        for peer in peers {
            let source = if peer.source == PeerSource::Static { "static" } else { "discovered" };
            text.push_str(&format!("peer {}: {} ({source})\n", peer.domain, peer.address));
        }
    }
    text.push_str(&format!("store size: {}\n", store.size_on_disk()?));
    out.stdout(text.as_bytes())?;
    Ok(())
}
