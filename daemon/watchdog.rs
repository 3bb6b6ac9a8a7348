//! The store watchdog: a store that hangs or breaks ends the process instead of leaving
//! clients waiting forever.
//!
//! sled 0.34 can block every later flush after one write it could not finish (a blob
//! file that could not be created, for instance when descriptors run out), and after a
//! failed write it could not undo, the running store no longer knows what is on disk.
//! Neither heals while maild runs; both heal at a restart, which recovers from the log.
//! So when a commit or flush has waited longer than `--store-timeout`, or the store
//! reports itself broken, the watchdog logs why, answers `451 4.3.0` to every session
//! waiting for a commit, and exits with [`EXIT_STORE_FAILED`] for a supervisor
//! (systemd's `Restart=on-failure`) to start maild again. Nothing acknowledged is at
//! risk: a `250` is only ever sent after its flush returned.

use std::time::Duration;

use engine::pipeline::Waiting;
use engine::Store;

/// The exit status after the store failed (`EX_TEMPFAIL` of sysexits.h: try again).
pub const EXIT_STORE_FAILED: i32 = 75;

/// How often the watchdog looks.
const POLL: Duration = Duration::from_millis(200);

/// Time the sessions get to write their `451` before the process exits.
const LAST_WORDS: Duration = Duration::from_secs(1);

/// Starts the watchdog thread; it runs until the process exits.
pub fn start(store: Store, waiting: Waiting, bound: Duration) -> std::io::Result<()> {
    std::thread::Builder::new().name("watchdog".into()).spawn(move || loop {
        std::thread::sleep(POLL);
        let why = match (store.broken(), store.stalled_for()) {
            (Some(why), _) => why,
            (None, Some(stalled)) if stalled > bound => {
                format!("a store commit or flush has not finished in {stalled:.1?} (--store-timeout {bound:?})")
            }
            _ => continue,
        };
        let answered = waiting.abandon();
        log::error!(
            "{why}; answered 451 to {answered} waiting session(s); exiting so that a restart recovers the store"
        );
        std::thread::sleep(LAST_WORDS);
        std::process::exit(EXIT_STORE_FAILED);
    })?;
    Ok(())
}
