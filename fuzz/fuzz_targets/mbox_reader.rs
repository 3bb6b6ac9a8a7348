//! The engine's mbox reader: `engine::admin::verify::split_entries`, which `mailtool
//! verify` uses to cut a backup range file (mboxrd, written by `engine::mbox`) into its
//! entries. (`mailtool restore` itself reads no mbox: it copies the backup's sled store,
//! so its untrusted input is the records, fuzzed by `record_check`.)
//!
//! Two checks per input:
//! - The raw bytes as a range file: no panic, the entries are consecutive slices that
//!   cover the input from its first `From ` line to its end, each starts with `From `,
//!   and none holds another line starting with `From `.
//! - The bytes as a few message records (sender and recipients made valid addresses and
//!   the trace ending in CRLF, as maild's are; body arbitrary): written with `mbox::write_entry` and split
//!   again, they must come back as exactly those entries, each with its `Number:` line.
#![no_main]

mod common;

use engine::admin::verify::split_entries;
use engine::store::record::MessageRecord;
use engine::store::StoredMessage;
use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    check_split(data);
    let _ = round_trip(&mut Unstructured::new(data));
});

fn check_split(bytes: &[u8]) {
    let entries = split_entries(bytes);
    let first = (0..bytes.len()).find(|&i| (i == 0 || bytes[i - 1] == b'\n') && bytes[i..].starts_with(b"From "));
    let Some(first) = first else {
        assert!(entries.is_empty(), "entries without a From line");
        return;
    };
    assert_eq!(entries.concat(), &bytes[first..], "the entries do not cover the file");
    for entry in &entries {
        assert!(entry.starts_with(b"From "), "an entry not starting with From");
        assert!(!contains(&entry[1..], b"\nFrom "), "an entry holding another From line");
    }
}

/// Something close to what maild accepts as an address: no whitespace or control.
fn address(u: &mut Unstructured) -> Result<String> {
    let text: String = u.arbitrary()?;
    Ok(text.chars().filter(|c| !c.is_whitespace() && !c.is_control()).take(64).collect())
}

/// maild's trace header always ends in CRLF, but a damaged or foreign record's may end
/// anywhere, even mid-line before a body that finishes a `From ` line (finding 3, fixed).
fn trace(u: &mut Unstructured) -> Result<String> {
    u.arbitrary()
}

fn round_trip(u: &mut Unstructured) -> Result<()> {
    let count = u.int_in_range(1..=4)?;
    let mut records = Vec::new();
    for i in 0..count {
        let recipients = (0..u.int_in_range(0..=3)?).map(|_| address(u)).collect::<Result<Vec<_>>>()?;
        records.push(MessageRecord {
            number: 1 + i as u64,
            received_at: u.arbitrary()?,
            sender: address(u)?,
            recipients,
            trace: trace(u)?,
            body: u.arbitrary()?,
        });
    }
    let mut file = Vec::new();
    let mut written = Vec::new();
    for record in &records {
        let mut entry = Vec::new();
        engine::mbox::write_entry(&mut entry, &StoredMessage::from_record(record)).unwrap();
        file.extend_from_slice(&entry);
        written.push(entry);
    }
    let entries = split_entries(&file);
    assert_eq!(
        entries.len(),
        records.len(),
        "{} entries written, {} read back from \"{}\"",
        records.len(),
        entries.len(),
        file.escape_ascii()
    );
    for ((entry, expected), record) in entries.iter().zip(&written).zip(&records) {
        assert_eq!(entry, expected, "an entry read back differs");
        // What verify looks for to place an entry.
        assert!(contains(entry, format!("\nNumber: {}\r", record.number).as_bytes()));
    }
    check_split(&file);
    Ok(())
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
