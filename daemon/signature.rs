//! Signed mDNS announcements (`--discover-secret FILE`): servers that share a key sign
//! what they announce, and ignore announcements that are unsigned, badly signed or stale.
//!
//! The signature is HMAC-SHA256 with the shared key over the TXT fields that decide where
//! mail goes: the domains, the SMTP port, the addresses the announcer may be reached at,
//! and the time of signing (`ts`, seconds since the epoch). A receiver takes a signed
//! announcement only from one of the signed addresses, and only while it is fresh
//! ([`MAX_AGE`]; the announcer signs again every [`RESIGN_EVERY`]), so an announcement
//! copied by another host, or replayed after its server left, is worth nothing.

use std::net::IpAddr;
use std::path::Path;

use anyhow::{bail, Context, Result};
use ring::hmac;

/// A signed announcement older than this is ignored.
pub const MAX_AGE: u64 = 2 * 3600;
/// How far ahead of our clock a signing time may be (clocks on a LAN differ a little).
const MAX_SKEW: u64 = 600;
/// How often a server signs and announces its fields again.
pub const RESIGN_EVERY: std::time::Duration = std::time::Duration::from_secs(1800);
/// The shortest key accepted: 128 bits.
const MIN_KEY: usize = 16;

/// The fields a signature covers, as they appear in the TXT record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signed {
    pub domains: String,
    pub smtp: String,
    /// Comma-separated addresses, as announced in `addrs=`.
    pub addrs: String,
    pub ts: u64,
}

impl Signed {
    fn message(&self) -> String {
        format!(
            "maild-discover-v1\ndomains={}\nsmtp={}\naddrs={}\nts={}\n",
            self.domains, self.smtp, self.addrs, self.ts
        )
    }

    /// The addresses in `addrs`; unparsable entries are left out.
    pub fn addresses(&self) -> Vec<IpAddr> {
        self.addrs.split(',').filter_map(|a| a.trim().parse().ok()).collect()
    }
}

pub struct DiscoverySecret {
    key: hmac::Key,
}

impl DiscoverySecret {
    /// Reads the key: the file's bytes without trailing whitespace, at least 16 of them.
    pub fn load(path: &Path) -> Result<DiscoverySecret> {
        let bytes = std::fs::read(path).with_context(|| format!("--discover-secret {}", path.display()))?;
        let key = bytes.trim_ascii_end();
        if key.len() < MIN_KEY {
            bail!(
                "--discover-secret {}: the key is {} bytes; want at least {MIN_KEY} (e.g. `head -c 32 /dev/urandom | base64`)",
                path.display(),
                key.len()
            );
        }
        Ok(DiscoverySecret::new(key))
    }

    pub fn new(key: &[u8]) -> DiscoverySecret {
        DiscoverySecret { key: hmac::Key::new(hmac::HMAC_SHA256, key) }
    }

    /// The `sig=` value for `fields`: the HMAC in lower-case hex.
    pub fn sign(&self, fields: &Signed) -> String {
        hmac::sign(&self.key, fields.message().as_bytes()).as_ref().iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Why `fields` with `sig` may not be trusted now (`now`: seconds since the epoch).
    pub fn check(&self, fields: &Signed, sig: Option<&str>, now: u64) -> Result<(), String> {
        let sig = sig.ok_or("the announcement is not signed (no sig=)")?;
        let tag = decode_hex(sig).ok_or("its sig= is not a hex HMAC")?;
        hmac::verify(&self.key, fields.message().as_bytes(), &tag)
            .map_err(|_| "its signature does not match (another key, or altered fields)")?;
        if fields.ts.saturating_add(MAX_AGE) < now {
            return Err(format!("its signature is stale (signed {} s ago)", now - fields.ts));
        }
        if fields.ts > now.saturating_add(MAX_SKEW) {
            return Err("its signature is dated in the future".into());
        }
        Ok(())
    }
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || text.len() > 128 {
        return None;
    }
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(ts: u64) -> Signed {
        Signed { domains: "a.test,b.test".into(), smtp: "25".into(), addrs: "10.0.0.1,fe80::1".into(), ts }
    }

    #[test]
    fn a_signature_holds_for_its_fields_and_key_only_while_fresh() {
        let secret = DiscoverySecret::new(b"0123456789abcdef-shared");
        let now = 1_000_000;
        let sig = secret.sign(&fields(now));
        assert_eq!(secret.check(&fields(now), Some(&sig), now), Ok(()));
        assert_eq!(secret.check(&fields(now), Some(&sig), now + MAX_AGE), Ok(()));
        assert!(secret.check(&fields(now), Some(&sig), now + MAX_AGE + 1).unwrap_err().contains("stale"));
        assert!(secret.check(&fields(now), None, now).unwrap_err().contains("not signed"));
        assert!(secret.check(&fields(now), Some("zz"), now).unwrap_err().contains("not a hex"));
        let other = DiscoverySecret::new(b"another key, sixteen+ bytes");
        assert!(other.check(&fields(now), Some(&sig), now).unwrap_err().contains("does not match"));
        for altered in [
            Signed { domains: "a.test,b.test,gmail.com".into(), ..fields(now) },
            Signed { smtp: "26".into(), ..fields(now) },
            Signed { addrs: "10.0.0.66".into(), ..fields(now) },
            fields(now + 1),
        ] {
            assert!(secret.check(&altered, Some(&sig), now).is_err(), "{altered:?}");
        }
        let future = secret.sign(&fields(now + 3600));
        assert!(secret.check(&fields(now + 3600), Some(&future), now).unwrap_err().contains("future"));
        assert_eq!(fields(now).addresses(), ["10.0.0.1".parse::<IpAddr>().unwrap(), "fe80::1".parse().unwrap()]);
    }

    #[test]
    fn a_short_or_missing_key_file_is_refused_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        assert!(format!("{:#}", DiscoverySecret::load(&path).err().unwrap()).contains("secret"));
        std::fs::write(&path, "short\n").unwrap();
        let error = format!("{:#}", DiscoverySecret::load(&path).err().unwrap());
        assert!(error.contains("5 bytes") && error.contains(&path.display().to_string()), "{error}");
        std::fs::write(&path, "0123456789abcdef\n").unwrap();
        assert!(DiscoverySecret::load(&path).is_ok());
    }
}
