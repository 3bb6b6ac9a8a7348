//! The intake journal's reader (`engine::store::journal::scan`): what a crash or a power
//! cut leaves in `store/journal` (torn frames, stale frames behind newer ones, any bytes)
//! must never make it panic, and a run of whole frames written by `encode` must always
//! come back, in order, whatever follows them.
//!
//! Input: `[n] bytes`. The first `n % 8` frames are made from the input (each takes a
//! length byte and that many bytes as a value, under a numbered key; every other frame
//! also removes a key), written with ids 1, 2, …; the rest of the input follows them as
//! it is. The bytes as they are must scan without panicking too.
#![no_main]

use engine::store::journal::{encode, scan, Frame, Op};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = scan(data, 0);
    let Some((&count, mut rest)) = data.split_first() else { return };
    let mut frames = Vec::new();
    for id in 1..=u64::from(count % 8) {
        let Some((&len, tail)) = rest.split_first() else { break };
        let len = usize::from(len).min(tail.len());
        let (value, tail) = tail.split_at(len);
        rest = tail;
        let mut ops = vec![Op::Insert(id.to_be_bytes().to_vec(), value.to_vec())];
        if id % 2 == 0 {
            ops.push(Op::Remove(b"h".to_vec()));
        }
        frames.push(Frame { id, ops });
    }
    let mut bytes: Vec<u8> = frames.iter().flat_map(|f| encode(f.id, &f.ops)).collect();
    bytes.extend_from_slice(rest);
    let (found, last) = scan(&bytes, 0);
    assert!(found.len() >= frames.len(), "{} of {} whole frames found", found.len(), frames.len());
    assert_eq!(found[..frames.len()], frames[..]);
    assert!(last >= frames.len() as u64);
    // Frames at or below the applied id are read past, not returned.
    let (after, _) = scan(&bytes, 2);
    assert_eq!(
        after.iter().map(|f| f.id).collect::<Vec<_>>(),
        found.iter().map(|f| f.id).filter(|id| *id > 2).collect::<Vec<_>>()
    );
});
