//! `powercut-fs MOUNTPOINT`: serves a power-cut file system in the foreground, for trying it by hand.
//! SIGUSR1 cuts the power (and reboots onto what survived); SIGTERM or SIGINT unmounts and exits.

use std::path::PathBuf;
use std::process::ExitCode;

use signal_hook::consts::{SIGINT, SIGTERM, SIGUSR1};
use signal_hook::iterator::Signals;

fn main() -> ExitCode {
    let Some(path) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: powercut-fs MOUNTPOINT");
        return ExitCode::from(2);
    };
    // Signals are claimed before mounting so that a SIGTERM arriving early still unmounts cleanly.
    let mut signals = match Signals::new([SIGUSR1, SIGTERM, SIGINT]) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("powercut-fs: cannot handle signals: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut mount = match powercut::Mount::new(&path) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("powercut-fs: cannot mount {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    };
    eprintln!("powercut-fs: serving {} as pid {}", path.display(), std::process::id());
    for signal in signals.forever() {
        if signal != SIGUSR1 {
            break;
        }
        match mount.power_cut() {
            Ok(report) => eprintln!("powercut-fs: power cut: {report:?}; {:?}", mount.stats()),
            Err(e) => {
                eprintln!("powercut-fs: remounting after the cut failed: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    drop(mount);
    ExitCode::SUCCESS
}
