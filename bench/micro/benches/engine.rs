//! What one message costs in maild's own code, away from sockets, threads and disks: the
//! SMTP session taking a message in, the record persist builds and every reader
//! validates, and the bytes POP3 and the backup stage write out. `cargo bench -p micro`;
//! the figures and what they say are in docs/BENCHMARKS.md ("The parsers and the record,
//! per message").

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use engine::address::Address;
use engine::directory::{Directory, Route};
use engine::envelope::Envelope;
use engine::smtp::client::data::data_payload;
use engine::smtp::command::Command;
use engine::smtp::{Action, SmtpConfig, SmtpSession};
use engine::store::record::{ArchivedMessageRecord, MessageRecord};
use engine::store::StoredMessage;
use rkyv::rancor;

/// Every recipient is a local user: the session's work without a user table.
struct EveryoneLocal;

impl Directory for EveryoneLocal {
    fn route(&self, _recipient: &Address) -> Route {
        Route::Local
    }

    fn default_domain(&self) -> &str {
        "bench.test"
    }
}

/// A message of about `size` bytes as a mail client writes it: a header block, then
/// 76-character lines, one in eight starting with a dot (stuffed on the wire).
fn message_text(size: usize) -> Vec<u8> {
    let mut text = b"From: sender@bench.test\r\nTo: bench@bench.test\r\nSubject: a benchmark\r\n\r\n".to_vec();
    let mut line = 0;
    while text.len() < size {
        if line % 8 == 7 {
            text.push(b'.');
        }
        text.extend(std::iter::repeat_n(b'a' + (line % 26) as u8, 74));
        text.extend_from_slice(b"\r\n");
        line += 1;
    }
    text
}

/// A session that has greeted with EHLO and waits for MAIL.
fn greeted_session(max_message_size: usize) -> SmtpSession {
    let config = Arc::new(SmtpConfig::new("mx.bench.test", max_message_size));
    let mut session = SmtpSession::new(config, Arc::new(EveryoneLocal), IpAddr::V4(Ipv4Addr::LOCALHOST));
    let mut actions = Vec::new();
    session.receive(b"EHLO client.bench.test\r\n", &mut actions);
    session
}

/// Feeds each piece as one read, answers a commit at once, and returns the replies sent.
fn transaction(session: &mut SmtpSession, pieces: &[&[u8]], actions: &mut Vec<Action>) -> usize {
    let mut replies = 0;
    for piece in pieces {
        session.receive(piece, actions);
        let mut next = Vec::new();
        for action in actions.drain(..) {
            match action {
                Action::Send(_) => replies += 1,
                Action::Commit(message) => {
                    black_box(&message);
                    session.commit_finished(Ok(1), &mut next);
                }
                other => panic!("unexpected action {other:?}"),
            }
        }
        replies += next.iter().filter(|action| matches!(action, Action::Send(_))).count();
    }
    replies
}

fn smtp(c: &mut Criterion) {
    let mut group = c.benchmark_group("smtp");
    let small = data_payload(&message_text(1024));
    let medium = data_payload(&message_text(100 * 1024));
    group.throughput(Throughput::Elements(1));
    for (label, data) in [("1 KiB", &small), ("100 KiB", &medium)] {
        // As smtp-source sends it: a read per command, the data in one.
        group.bench_function(format!("message of {label}, a read per command"), |b| {
            let mut session = greeted_session(1 << 20);
            let mut actions = Vec::new();
            let pieces: [&[u8]; 4] =
                [b"MAIL FROM:<sender@bench.test>\r\n", b"RCPT TO:<bench@bench.test>\r\n", b"DATA\r\n", data];
            b.iter(|| assert_eq!(transaction(&mut session, &pieces, &mut actions), 4));
        });
    }
    // As a pipelining client sends it (RFC 2920): MAIL, RCPT and DATA in one read.
    group.bench_function("message of 1 KiB, pipelined", |b| {
        let mut session = greeted_session(1 << 20);
        let mut actions = Vec::new();
        let pieces: [&[u8]; 2] = [b"MAIL FROM:<sender@bench.test>\r\nRCPT TO:<bench@bench.test>\r\nDATA\r\n", &small];
        b.iter(|| assert_eq!(transaction(&mut session, &pieces, &mut actions), 4));
    });
    // Message data in reads of 16 KiB, as the event loop hands it over.
    let big = data_payload(&message_text(1 << 20));
    group.throughput(Throughput::Bytes(big.len() as u64));
    group.bench_function("1 MiB of data in 16 KiB reads", |b| {
        let mut session = greeted_session(2 << 20);
        let mut actions = Vec::new();
        let mut pieces: Vec<&[u8]> =
            vec![b"MAIL FROM:<sender@bench.test>\r\n", b"RCPT TO:<bench@bench.test>\r\n", b"DATA\r\n"];
        pieces.extend(big.chunks(16 * 1024));
        b.iter(|| assert_eq!(transaction(&mut session, &pieces, &mut actions), 4));
    });
    group.throughput(Throughput::Elements(1));
    group.bench_function("parse RCPT", |b| {
        b.iter(|| black_box(Command::parse(black_box(b"RCPT TO:<someone.else@bench.test> NOTIFY=NEVER"))));
    });
    group.finish();
}

fn envelope() -> Envelope {
    Envelope {
        helo: "client.bench.test".into(),
        extended: true,
        tls: false,
        user: None,
        client_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        sender: "sender@bench.test".into(),
        recipients: vec!["bench@bench.test".into()],
        routes: Vec::new(),
    }
}

fn record(body: Vec<u8>) -> MessageRecord {
    let envelope = envelope();
    let now = time::OffsetDateTime::now_utc();
    MessageRecord {
        number: 123_456,
        received_at: 1_764_806_400,
        sender: envelope.sender.clone(),
        recipients: envelope.recipients.clone(),
        trace: engine::trace::received_header(&envelope, "mx.bench.test", 123_456, now),
        body,
    }
}

fn store_record(c: &mut Criterion) {
    let mut group = c.benchmark_group("record");
    group.throughput(Throughput::Elements(1));
    let body = message_text(1024);
    group.bench_function("trace header", |b| {
        let envelope = envelope();
        b.iter(|| {
            black_box(engine::trace::received_header(
                &envelope,
                "mx.bench.test",
                123_456,
                time::OffsetDateTime::now_utc(),
            ))
        });
    });
    // What persist does per message: the body moves into the record, which is serialised.
    group.bench_function("encode, 1 KiB", |b| {
        b.iter_batched(
            || record(body.clone()),
            |record| black_box(rkyv::api::high::to_bytes_in::<_, rancor::Error>(&record, Vec::with_capacity(2048))),
            BatchSize::SmallInput,
        );
    });
    // What every read from the store does first: validate the bytes from disk.
    let bytes = rkyv::to_bytes::<rancor::Error>(&record(body.clone())).expect("a record serialises");
    group.bench_function("validate, 1 KiB", |b| {
        b.iter(|| black_box(rkyv::access::<ArchivedMessageRecord, rancor::Error>(black_box(&bytes)).is_ok()));
    });
    group.finish();
}

fn readers(c: &mut Criterion) {
    let mut group = c.benchmark_group("out");
    group.throughput(Throughput::Elements(1));
    let stored = StoredMessage::from_record(&record(message_text(1024)));
    let mut out = Vec::with_capacity(4096);
    // POP3's RETR: the message dot-stuffed behind `+OK`.
    group.bench_function("RETR, 1 KiB", |b| {
        let record = stored.record();
        let parts: [&[u8]; 2] = [record.trace.as_bytes(), record.body.as_slice()];
        let size = (parts[0].len() + parts[1].len()) as u64;
        b.iter(|| {
            out.clear();
            engine::pop3::message::write_message(&mut out, size, &parts, None).expect("writes to memory");
            black_box(out.len())
        });
    });
    // The backup stage: one mboxrd entry of a range file.
    group.bench_function("mbox entry, 1 KiB", |b| {
        b.iter(|| {
            out.clear();
            engine::mbox::write_entry(&mut out, &stored).expect("writes to memory");
            black_box(out.len())
        });
    });
    group.finish();
}

criterion_group!(benches, smtp, store_record, readers);
criterion_main!(benches);
