//! The validate stage: checks a whole message before it is given a number.
//!
//! Today that is loop detection: a message that already carries more `Received:` headers
//! than `max_hops` is refused with `554 5.4.6` (RFC 5321 §6.3), so two misconfigured
//! servers cannot pass a message back and forth forever. Refused messages never reach
//! persist and use no number.

use crossbeam_channel::{Receiver, Sender};

use super::{PipelineConfig, Submission};
use crate::envelope::CommitError;

/// How far into a message the `Received:` count looks: far past any real header block.
const HEADER_SCAN: usize = 256 * 1024;

pub fn run(input: Receiver<Submission>, output: Sender<Submission>, config: &PipelineConfig) {
    for mut submission in input {
        let hops = match submission.message.body.head(HEADER_SCAN) {
            Ok(head) => received_count(&head),
            Err(error) => {
                log::error!("reading a spooled message's header block: {error}");
                submission.answer(Err(CommitError::Transient));
                continue;
            }
        };
        if hops > config.max_hops {
            submission.answer(Err(CommitError::TooManyHops));
            continue;
        }
        if let Err(crossbeam_channel::SendError(submission)) = output.send(submission) {
            submission.answer(Err(CommitError::Transient));
        }
    }
}

/// Counts `Received:` header fields in the header block (up to the first empty line).
pub fn received_count(message: &[u8]) -> usize {
    let mut count = 0;
    for line in message.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            break;
        }
        if line.len() >= 9 && line[..9].eq_ignore_ascii_case(b"received:") {
            count += 1;
        }
    }
    count
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_only_header_received_lines() {
        assert_eq!(
            received_count(b"Received: a\r\nRECEIVED: b\r\n\tfolded\r\nSubject: x\r\n\r\nReceived: body\r\n"),
            2
        );
        assert_eq!(received_count(b""), 0);
    }
}
