//! durable-sink: the least a durable SMTP server can do, as a yardstick for bench/compare.sh.
//!
//! Like Postfix's smtp-sink it answers every command and keeps no state, but each message
//! is written to a file and `fdatasync`'d before its `250`, with group commit (one sync
//! covers every message written before it started). No parsing beyond line ends, no
//! store, no index, no threads but one per connection. So maild / durable-sink is what
//! maild costs beyond the disk's sync, and durable-sink / smtp-sink is what the sync
//! itself costs on this machine.
//!
//! Build: `rustc -O --edition 2021 bench/durable-sink.rs -o durable-sink` (std only).
//! Run: `durable-sink 127.0.0.1:PORT FILE`; FILE is made (64 MiB of zeros, synced, so a
//! write into it costs the file system no metadata) and written round and round.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex};

const CAPACITY: u64 = 64 << 20;

struct Log {
    file: File,
    /// Next write offset and how many messages were written.
    written: Mutex<(u64, u64)>,
    /// How many messages the last finished sync covers.
    synced: Mutex<u64>,
}

impl Log {
    fn append(&self, body: &[u8]) -> std::io::Result<()> {
        let ticket = {
            let mut written = self.written.lock().unwrap();
            // A body longer than the file keeps only its start: a yardstick, not a store.
            let len = (body.len() as u64).min(CAPACITY);
            if written.0 + len > CAPACITY {
                written.0 = 0;
            }
            self.file.write_all_at(&body[..len as usize], written.0)?;
            written.0 += len;
            written.1 += 1;
            written.1
        };
        // Group commit: whoever holds `synced` syncs everything written so far; the
        // others find their message covered when they get the lock.
        let mut synced = self.synced.lock().unwrap();
        if *synced < ticket {
            let upto = self.written.lock().unwrap().1;
            self.file.sync_data()?;
            *synced = upto;
        }
        Ok(())
    }
}

fn serve(stream: TcpStream, log: &Log) -> std::io::Result<()> {
    let mut out = stream.try_clone()?;
    let mut input = BufReader::with_capacity(64 << 10, stream);
    out.write_all(b"220 durable-sink ESMTP\r\n")?;
    let mut line = Vec::with_capacity(1024);
    let mut body = Vec::with_capacity(4096);
    loop {
        line.clear();
        if input.read_until(b'\n', &mut line)? == 0 {
            return Ok(());
        }
        let verb = line.get(..4).map(|v| v.to_ascii_uppercase()).unwrap_or_default();
        match &verb[..] {
            b"DATA" => {
                out.write_all(b"354 go ahead\r\n")?;
                body.clear();
                loop {
                    let start = body.len();
                    if input.read_until(b'\n', &mut body)? == 0 {
                        return Ok(());
                    }
                    if &body[start..] == b".\r\n" || &body[start..] == b".\n" {
                        body.truncate(start);
                        break;
                    }
                }
                log.append(&body)?;
                out.write_all(b"250 2.0.0 queued\r\n")?;
            }
            b"QUIT" => {
                out.write_all(b"221 2.0.0 bye\r\n")?;
                return Ok(());
            }
            b"EHLO" => out.write_all(b"250-durable-sink\r\n250 8BITMIME\r\n")?,
            _ => out.write_all(b"250 2.0.0 ok\r\n")?,
        }
    }
}

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 3 {
        eprintln!("usage: durable-sink ADDRESS FILE");
        std::process::exit(2);
    }
    let file = OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&args[2])?;
    file.write_all_at(&vec![0; CAPACITY as usize], 0)?;
    file.sync_all()?;
    let dir = std::path::Path::new(&args[2]).parent().filter(|d| !d.as_os_str().is_empty());
    File::open(dir.unwrap_or(std::path::Path::new(".")))?.sync_all()?;
    let log = Arc::new(Log { file, written: Mutex::new((0, 0)), synced: Mutex::new(0) });
    let listener = TcpListener::bind(&args[1])?;
    eprintln!("durable-sink ready on {}", listener.local_addr()?);
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let _ = stream.set_nodelay(true);
        let log = Arc::clone(&log);
        std::thread::spawn(move || {
            let _ = serve(stream, &log);
        });
    }
    Ok(())
}
