//! `mailtool bench smtp`: a load generator. N connections send M messages in all, each
//! transaction pipelined (MAIL, RCPT, DATA in one write); the latency measured is from
//! the end of the data to the server's 250, i.e. the time to make a message durable.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};

use crate::pop3::Pop3Connection;
use crate::send::tls_server_name;
use engine::forward::client::{MessageData, OutboundMessage, RecipientOutcome, SmtpConnection, Stage};

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Send messages over SMTP and report msgs/s and ack latency.
    Smtp(SmtpArgs),
    /// Log in over POP3 and RETR every message; report msgs/s.
    Pop3(Pop3Args),
}

#[derive(Args, Clone)]
pub struct Pop3Args {
    #[arg(long, default_value = "127.0.0.1:1100")]
    pop3: String,
    #[arg(long, default_value = "bench@localhost")]
    user: String,
    /// The password (a benchmark account's; default "bench").
    #[arg(long, default_value = "bench")]
    password: String,
    /// RETR commands sent before reading their replies (1: one round trip each).
    #[arg(long, default_value_t = 1)]
    pipeline: usize,
}

#[derive(Args, Clone)]
pub struct SmtpArgs {
    #[arg(long, default_value = "127.0.0.1:2525")]
    smtp: String,
    #[arg(long, default_value_t = 8)]
    connections: usize,
    /// Messages in all, spread over the connections.
    #[arg(long, default_value_t = 1000)]
    messages: u64,
    /// Size of each message in bytes.
    #[arg(long, default_value_t = 1024)]
    size: usize,
    /// Recipient (must be a user of the server).
    #[arg(long, default_value = "bench@localhost")]
    rcpt: String,
    #[arg(long, default_value = "bench@localhost")]
    from: String,
    /// STARTTLS on every connection. The server's certificate is not checked: this
    /// measures what encryption costs and protects nothing.
    #[arg(long)]
    starttls: bool,
    /// Offered load in messages per second over all connections, each message sent at its
    /// scheduled time (an open loop). Without it every connection sends its next message
    /// as soon as the last is answered, so latency is mostly queueing: connections / rate.
    #[arg(long)]
    rate: Option<f64>,
}

pub fn run(command: BenchCommand) -> Result<()> {
    match command {
        BenchCommand::Smtp(args) => smtp(args),
        BenchCommand::Pop3(args) => pop3(args),
    }
}

fn message(size: usize) -> Vec<u8> {
    let mut message = b"Subject: bench\r\n\r\n".to_vec();
    let line = b"The quick brown fox jumps over the lazy dog 0123456789.\r\n";
    while message.len() < size {
        message.extend_from_slice(line);
    }
    message.truncate(size.max(20) - 2);
    message.extend_from_slice(b"\r\n");
    message
}

/// A message that starts more than this after its time under `--rate` counts as late.
const LATE: Duration = Duration::from_millis(1);

fn smtp(args: SmtpArgs) -> Result<()> {
    if args.connections == 0 || args.messages == 0 {
        bail!("--connections and --messages must be at least 1");
    }
    if args.rate.is_some_and(|rate| !(rate > 0.0 && rate.is_finite())) {
        bail!("--rate must be a positive number of messages per second");
    }
    let message = Arc::new(message(args.size));
    let tls = if args.starttls { Some(engine::forward::tls::unverified_client().context("TLS set-up")?) } else { None };
    let server_name = tls_server_name(&args.smtp)?;
    let next = Arc::new(AtomicU64::new(0));
    let late = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..args.connections)
        .map(|_| {
            let (args, message, next, late) = (args.clone(), message.clone(), next.clone(), late.clone());
            let (tls, server_name) = (tls.clone(), server_name.clone());
            std::thread::spawn(move || -> Result<Vec<Duration>> {
                let mut connection = SmtpConnection::open(args.smtp.as_str(), "bench", Duration::from_secs(60))
                    .with_context(|| format!("connecting to {}", args.smtp))?;
                if let Some(tls) = tls {
                    connection.starttls(tls, server_name).context("STARTTLS")?;
                }
                let recipients = [args.rcpt.clone()];
                let outbound = OutboundMessage {
                    sender: &args.from,
                    recipients: &recipients,
                    data: MessageData::Parts(&[&message]),
                };
                let mut latencies = Vec::new();
                loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    if index >= args.messages {
                        break;
                    }
                    if let Some(rate) = args.rate {
                        let due = started + Duration::from_secs_f64(index as f64 / rate);
                        let now = Instant::now();
                        if now < due {
                            std::thread::sleep(due - now);
                        } else if now - due > LATE {
                            late.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    let sent = connection.send(&outbound)?;
                    match (&sent.outcomes[..], &sent.decided_by[..]) {
                        ([RecipientOutcome::Accepted], _) => {}
                        ([RecipientOutcome::Deferred(reply) | RecipientOutcome::Rejected(reply)], [stage]) => {
                            let hint = match stage {
                                Stage::Rcpt => format!(" (does the user {0} exist? mailtool user add {0})", args.rcpt),
                                _ => String::new(),
                            };
                            bail!("{}: {reply}{hint}", stage.command());
                        }
                        (outcomes, _) => bail!("unexpected outcomes {outcomes:?}"),
                    }
                    // From the end of the data to the 250: the time to make it durable.
                    let data_sent = connection.data_sent_at().context("no data was sent")?;
                    latencies.push(data_sent.elapsed());
                }
                connection.quit();
                Ok(latencies)
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for worker in workers {
        latencies.extend(worker.join().map_err(|_| anyhow::anyhow!("a bench connection panicked"))??);
    }
    let elapsed = started.elapsed();
    latencies.sort();
    let percentile = |p: f64| latencies[((latencies.len() - 1) as f64 * p).round() as usize];
    println!("messages: {}", latencies.len());
    println!("connections: {}", args.connections);
    println!("size: {}", args.size);
    println!("seconds: {:.3}", elapsed.as_secs_f64());
    println!("msgs/s: {:.0}", latencies.len() as f64 / elapsed.as_secs_f64());
    println!("latency p50: {:.2} ms", percentile(0.50).as_secs_f64() * 1e3);
    println!("latency p99: {:.2} ms", percentile(0.99).as_secs_f64() * 1e3);
    if let Some(rate) = args.rate {
        // Messages that could not start on time: the offered rate was more than the
        // server (or this client) kept up with.
        println!("offered rate: {rate:.0} msgs/s, late starts (> 1 ms): {}", late.load(Ordering::Relaxed));
    }
    Ok(())
}

fn pop3(args: Pop3Args) -> Result<()> {
    let mut pop = Pop3Connection::connect(&args.pop3, Duration::from_secs(60), 1 << 30)?;
    let started = Instant::now();
    pop.queue(&format!("USER {}", args.user), false)?;
    pop.queue(&format!("PASS {}", args.password), false)?;
    pop.queue("STAT", false)?;
    pop.flush()?;
    pop.status("USER")?;
    pop.status("PASS")?;
    let stat = pop.status("STAT")?;
    let count: usize = stat.split_whitespace().next().and_then(|n| n.parse().ok()).context("bad STAT reply")?;
    let logged_in = started.elapsed();
    let retr_started = Instant::now();
    let (mut sent, mut received, mut octets) = (0usize, 0usize, 0usize);
    let window = args.pipeline.max(1);
    while received < count {
        while sent < count && sent - received < window {
            sent += 1;
            pop.queue(&format!("RETR {sent}"), true)?;
        }
        pop.flush()?;
        while received < sent {
            octets += pop.body("RETR")?.len();
            received += 1;
        }
    }
    let elapsed = retr_started.elapsed();
    let _ = pop.command("QUIT", "QUIT");
    println!("messages: {count}");
    println!("pipeline: {window}");
    println!("login+stat: {:.1} ms", logged_in.as_secs_f64() * 1e3);
    println!("seconds: {:.3}", elapsed.as_secs_f64());
    println!("msgs/s: {:.0}", count as f64 / elapsed.as_secs_f64());
    println!("MB/s: {:.1}", octets as f64 / elapsed.as_secs_f64() / 1e6);
    Ok(())
}
