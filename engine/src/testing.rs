//! Helpers for engine's unit tests.

/// Feeds `input` to a sans-I/O reader `chunk` bytes at a time, as a socket would hand
/// them over, and collects what it completes until the first error. `push` takes bytes
/// and returns how many it took and, once something is whole, that or why not.
pub fn feed_in_chunks<T>(
    input: &[u8],
    chunk: usize,
    mut push: impl FnMut(&[u8]) -> (usize, Option<Result<T, String>>),
) -> (Vec<T>, Option<String>) {
    let mut got = Vec::new();
    for piece in input.chunks(chunk.max(1)) {
        let mut piece = piece;
        while !piece.is_empty() {
            let (taken, item) = push(piece);
            piece = &piece[taken..];
            match item {
                Some(Ok(item)) => got.push(item),
                Some(Err(error)) => return (got, Some(error)),
                None => {}
            }
        }
    }
    (got, None)
}
