//! `--metrics ADDR`: a minimal HTTP/1.1 endpoint that answers `GET /metrics` with the
//! Prometheus text format ([`engine::metrics::Metrics`]). One request at a time, on one
//! thread; a request line longer than 8 KiB or slower than 5 s is dropped.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use engine::metrics::Metrics;
use engine::Store;

const MAX_REQUEST: u64 = 8 * 1024;

pub fn start(listener: TcpListener, metrics: Arc<Metrics>, store: Store) -> Result<()> {
    std::thread::Builder::new().name("metrics".into()).spawn(move || {
        for stream in listener.incoming().flatten() {
            if let Err(error) = answer(stream, &metrics, &store) {
                log::debug!("metrics: {error}");
            }
        }
    })?;
    Ok(())
}

fn answer(stream: TcpStream, metrics: &Metrics, store: &Store) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new((&stream).take(MAX_REQUEST));
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    // The rest of the head, up to the blank line (bounded by `take`).
    let mut line = String::new();
    while reader.read_line(&mut line)? > 0 && line != "\r\n" && line != "\n" {
        line.clear();
    }
    let mut words = request_line.split_whitespace();
    let (status, body) = match (words.next(), words.next()) {
        (Some("GET"), Some("/metrics")) => ("200 OK", metrics.scrape(store)),
        (Some("GET"), Some(_)) => ("404 Not Found", "not found: try /metrics\n".to_string()),
        _ => ("405 Method Not Allowed", "GET /metrics only\n".to_string()),
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let mut out = &stream;
    out.write_all(head.as_bytes())?;
    out.write_all(body.as_bytes())?;
    out.flush()
}
