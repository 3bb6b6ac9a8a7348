//! `mailtool bench smtp`: a load generator. N connections send M messages in all, each
//! transaction pipelined (MAIL, RCPT, DATA in one write); the latency measured is from
//! the end of the data to the server's 250, i.e. the time to make a message durable.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};

use crate::client::{data_payload, SmtpClient};

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Send messages over SMTP and report msgs/s and ack latency.
    Smtp(SmtpArgs),
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
}

pub fn run(command: BenchCommand) -> Result<()> {
    match command {
        BenchCommand::Smtp(args) => smtp(args),
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

fn smtp(args: SmtpArgs) -> Result<()> {
    if args.connections == 0 || args.messages == 0 {
        bail!("--connections and --messages must be at least 1");
    }
    let payload = Arc::new(data_payload(&message(args.size)));
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..args.connections)
        .map(|_| {
            let (args, payload, next) = (args.clone(), payload.clone(), next.clone());
            std::thread::spawn(move || -> Result<Vec<Duration>> {
                let mut client = SmtpClient::connect(&args.smtp, Duration::from_secs(60))
                    .with_context(|| format!("connecting to {}", args.smtp))?;
                client.reply()?;
                client.expect("EHLO bench", 250)?;
                let envelope = format!("MAIL FROM:<{}>\r\nRCPT TO:<{}>\r\nDATA\r\n", args.from, args.rcpt);
                let mut latencies = Vec::new();
                while next.fetch_add(1, Ordering::Relaxed) < args.messages {
                    client.send(envelope.as_bytes())?;
                    for (what, code) in [("MAIL", 250), ("RCPT", 250), ("DATA", 354)] {
                        let reply = client.reply()?;
                        if reply.code != code {
                            bail!("{what}: {} (does the user {} exist? mailtool user add {})", reply.text, args.rcpt, args.rcpt);
                        }
                    }
                    client.send(&payload)?;
                    let sent = Instant::now();
                    let reply = client.reply()?;
                    if reply.code != 250 {
                        bail!("end of data: {}", reply.text);
                    }
                    latencies.push(sent.elapsed());
                }
                let _ = client.expect("QUIT", 221);
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
    Ok(())
}
