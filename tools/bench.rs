//! `mailtool bench smtp`: a load generator. N connections send M messages in all, each
//! transaction pipelined (MAIL, RCPT, DATA in one write); the latency measured is from
//! the end of the data to the server's 250, i.e. the time to make a message durable.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};

use crate::client::{tls_server_name, SmtpClient};
use engine::forward::client::data_payload;

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

fn smtp(args: SmtpArgs) -> Result<()> {
    if args.connections == 0 || args.messages == 0 {
        bail!("--connections and --messages must be at least 1");
    }
    let payload = Arc::new(data_payload(&message(args.size)));
    let tls = if args.starttls { Some(engine::forward::tls::unverified_client().context("TLS set-up")?) } else { None };
    let server_name = tls_server_name(&args.smtp)?;
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..args.connections)
        .map(|_| {
            let (args, payload, next) = (args.clone(), payload.clone(), next.clone());
            let (tls, server_name) = (tls.clone(), server_name.clone());
            std::thread::spawn(move || -> Result<Vec<Duration>> {
                let mut client = SmtpClient::connect(&args.smtp, Duration::from_secs(60))
                    .with_context(|| format!("connecting to {}", args.smtp))?;
                client.reply()?;
                client.expect("EHLO bench", 250)?;
                if let Some(tls) = tls {
                    client.starttls(tls, server_name).context("STARTTLS")?;
                    client.expect("EHLO bench", 250).context("EHLO inside TLS")?;
                }
                let envelope = format!("MAIL FROM:<{}>\r\nRCPT TO:<{}>\r\nDATA\r\n", args.from, args.rcpt);
                let mut latencies = Vec::new();
                while next.fetch_add(1, Ordering::Relaxed) < args.messages {
                    client.send(envelope.as_bytes())?;
                    for (what, code) in [("MAIL", 250), ("RCPT", 250), ("DATA", 354)] {
                        let reply = client.reply()?;
                        if reply.code != code {
                            bail!(
                                "{what}: {} (does the user {} exist? mailtool user add {})",
                                reply.text,
                                args.rcpt,
                                args.rcpt
                            );
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

fn pop3(args: Pop3Args) -> Result<()> {
    use std::io::{BufRead, BufReader, Write};
    let stream = std::net::TcpStream::connect(&args.pop3).with_context(|| format!("connecting to {}", args.pop3))?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::with_capacity(256 * 1024, stream);
    let mut line = Vec::new();
    let mut status = |reader: &mut BufReader<std::net::TcpStream>, what: &str| -> Result<String> {
        line.clear();
        reader.read_until(b'\n', &mut line)?;
        let text = String::from_utf8_lossy(&line).trim_end().to_string();
        if !text.starts_with("+OK") {
            bail!("{what}: {text}");
        }
        Ok(text)
    };
    status(&mut reader, "greeting")?;
    let started = Instant::now();
    writer.write_all(format!("USER {}\r\nPASS {}\r\nSTAT\r\n", args.user, args.password).as_bytes())?;
    status(&mut reader, "USER")?;
    status(&mut reader, "PASS")?;
    let stat = status(&mut reader, "STAT")?;
    let count: usize = stat.split_whitespace().nth(1).and_then(|n| n.parse().ok()).context("bad STAT reply")?;
    let logged_in = started.elapsed();
    let retr_started = Instant::now();
    let (mut sent, mut received, mut octets) = (0usize, 0usize, 0usize);
    let window = args.pipeline.max(1);
    let mut body = Vec::new();
    while received < count {
        let mut batch = String::new();
        while sent < count && sent - received < window {
            sent += 1;
            batch.push_str(&format!("RETR {sent}\r\n"));
        }
        writer.write_all(batch.as_bytes())?;
        while received < sent {
            status(&mut reader, "RETR")?;
            loop {
                body.clear();
                if reader.read_until(b'\n', &mut body)? == 0 {
                    bail!("connection closed inside a message");
                }
                if body == b".\r\n" {
                    break;
                }
                octets += body.len();
            }
            received += 1;
        }
    }
    let elapsed = retr_started.elapsed();
    writer.write_all(b"QUIT\r\n")?;
    println!("messages: {count}");
    println!("pipeline: {window}");
    println!("login+stat: {:.1} ms", logged_in.as_secs_f64() * 1e3);
    println!("seconds: {:.3}", elapsed.as_secs_f64());
    println!("msgs/s: {:.0}", count as f64 / elapsed.as_secs_f64());
    println!("MB/s: {:.1}", octets as f64 / elapsed.as_secs_f64() / 1e6);
    Ok(())
}
