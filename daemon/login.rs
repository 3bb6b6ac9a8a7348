//! Password checks for POP3 and SMTP AUTH, slowed for clients that keep failing.
//!
//! RFC 1939 §8 suggests slowing failed logins: the first failure costs about a second,
//! repeated failures from one address cost more, up to [`MAX_FAILURE_DELAY`]. The delay
//! is slept on the failing client's own worker thread, so no other client waits. One
//! table serves both protocols, so guessing over SMTP does not reset the POP3 count.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use engine::users::Users;

const MAX_FAILURE_DELAY: Duration = Duration::from_secs(8);
/// Failures older than this are forgotten.
const FAILURE_MEMORY: Duration = Duration::from_secs(600);

pub struct Logins {
    users: Users,
    /// Recent failed logins per client address.
    failures: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

impl Logins {
    pub fn new(users: Users) -> Logins {
        Logins { users, failures: Mutex::default() }
    }

    /// The user's key if the password is right; otherwise `None`, after the delay.
    pub fn check(&self, client: IpAddr, user: &str, password: &str) -> Option<String> {
        match self.users.authenticate(user, password) {
            Some(key) => {
                self.failures.lock().unwrap_or_else(|e| e.into_inner()).remove(&client);
                Some(key)
            }
            None => {
                std::thread::sleep(self.failure_delay(client));
                None
            }
        }
    }

    /// The delay before answering a failed login, growing with recent failures.
    fn failure_delay(&self, client: IpAddr) -> Duration {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        failures.retain(|_, (_, last)| now.duration_since(*last) < FAILURE_MEMORY);
        let entry = failures.entry(client).or_insert((0, now));
        entry.0 = entry.0.saturating_add(1);
        entry.1 = now;
        let extra = entry.0.saturating_sub(3).min(3);
        Duration::from_secs(1 << extra).min(MAX_FAILURE_DELAY)
    }
}
