//! Failpoints: named places on the I/O paths where a test can make maild fail or crash.
//!
//! Compiled in only with the `failpoints` feature; without it [`hit`] is an inlined
//! `Ok(())` and costs nothing. With it, `MAILD_FAILPOINTS` (read once) configures them:
//!
//! ```text
//! MAILD_FAILPOINTS="persist.after_batch=crash@3,backup.mid_write=error"
//! ```
//!
//! `crash` aborts the process on the spot (no destructors, no flush: like `kill -9`),
//! `error` fails the I/O call with an I/O error, `full` with ENOSPC, `hang` never returns
//! (as sled's flush does after a write it could not finish). `@N` triggers on
//! the Nth hit only (counting from 1); without it, on every hit. Tests set the variable
//! in the environment of the `maild` they start, or call [`configure`] in-process.

use std::io;

/// Every failpoint, so tests and docs can name them all.
pub const ALL: &[&str] = &[
    "persist.before_batch",
    "persist.after_batch",
    "persist.after_flush",
    "deliver.before_batch",
    "deliver.after_batch",
    "backup.mid_write",
    "backup.before_rename",
    "backup.before_mark",
    "pop3.before_commit",
];

#[cfg(feature = "failpoints")]
mod active {
    use std::collections::HashMap;
    use std::io;
    use std::sync::{Mutex, OnceLock};

    #[derive(Clone, Copy, Debug)]
    enum Action {
        Crash,
        Error,
        Full,
        Hang,
    }

    struct Point {
        action: Action,
        /// Trigger on this hit only; `None`: every hit.
        on_hit: Option<u64>,
        hits: u64,
    }

    fn points() -> &'static Mutex<HashMap<String, Point>> {
        static POINTS: OnceLock<Mutex<HashMap<String, Point>>> = OnceLock::new();
        POINTS.get_or_init(|| Mutex::new(parse(&std::env::var("MAILD_FAILPOINTS").unwrap_or_default())))
    }

    fn parse(spec: &str) -> HashMap<String, Point> {
        let mut map = HashMap::new();
        for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let Some((name, action)) = item.split_once('=') else { continue };
            let (action, on_hit) = match action.split_once('@') {
                Some((a, n)) => (a, n.parse().ok()),
                None => (action, None),
            };
            let action = match action {
                "crash" => Action::Crash,
                "error" => Action::Error,
                "full" => Action::Full,
                "hang" => Action::Hang,
                _ => continue,
            };
            map.insert(name.to_string(), Point { action, on_hit, hits: 0 });
        }
        map
    }

    pub fn configure(spec: &str) {
        *points().lock().unwrap_or_else(|e| e.into_inner()) = parse(spec);
    }

    pub fn hit(name: &str) -> io::Result<()> {
        let mut points = points().lock().unwrap_or_else(|e| e.into_inner());
        let Some(point) = points.get_mut(name) else { return Ok(()) };
        point.hits += 1;
        if point.on_hit.is_some_and(|n| n != point.hits) {
            return Ok(());
        }
        let action = point.action;
        drop(points);
        match action {
            Action::Crash => {
                eprintln!("failpoint {name}: crash");
                std::process::abort()
            }
            Action::Error => Err(io::Error::other(format!("failpoint {name}"))),
            Action::Full => Err(io::Error::from_raw_os_error(28)),
            Action::Hang => {
                eprintln!("failpoint {name}: hang");
                loop {
                    std::thread::park();
                }
            }
        }
    }
}

/// Passes, fails, or crashes, as `MAILD_FAILPOINTS` says for `name`.
#[cfg(feature = "failpoints")]
pub fn hit(name: &str) -> io::Result<()> {
    debug_assert!(ALL.contains(&name), "unknown failpoint {name}");
    active::hit(name)
}

#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn hit(_name: &str) -> io::Result<()> {
    Ok(())
}

/// Replaces the configuration (in-process tests).
#[cfg(feature = "failpoints")]
pub fn configure(spec: &str) {
    active::configure(spec)
}
