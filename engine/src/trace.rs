//! The trace header maild adds to every message it accepts (RFC 5321 §4.4), and the
//! dates it writes.

use std::net::IpAddr;

use time::format_description::well_known::Rfc2822;
use time::OffsetDateTime;

use crate::envelope::Envelope;

/// Keeps a client-supplied word printable so it cannot break the header it is put in.
fn printable(word: &str) -> String {
    word.chars().map(|c| if c.is_ascii_graphic() { c } else { '?' }).collect()
}

/// `Received: from HELO ([IP]) by HOST (maild) with ESMTP id N for <rcpt>; DATE`,
/// folded over three lines, CRLF-terminated.
pub fn received_header(envelope: &Envelope, hostname: &str, number: u64, when: OffsetDateTime) -> String {
    // RFC 3848: S for STARTTLS, A for AUTH.
    let protocol = match (envelope.extended, envelope.tls, envelope.user.is_some()) {
        (false, _, _) => "SMTP",
        (true, false, false) => "ESMTP",
        (true, true, false) => "ESMTPS",
        (true, false, true) => "ESMTPA",
        (true, true, true) => "ESMTPSA",
    };
    let ip = match envelope.client_ip {
        IpAddr::V4(ip) => ip.to_string(),
        IpAddr::V6(ip) => format!("IPv6:{ip}"),
    };
    // RFC 5321 §7.2: naming the recipient is advised only for a single one.
    let for_clause = match envelope.recipients.as_slice() {
        [one] => format!("\r\n\tfor <{}>", printable(one)),
        _ => String::new(),
    };
    format!(
        "Received: from {} ([{ip}])\r\n\tby {} (maild) with {protocol} id {number}{for_clause};\r\n\t{}\r\n",
        printable(&envelope.helo),
        printable(hostname),
        rfc5322_date(when)
    )
}

pub fn rfc5322_date(when: OffsetDateTime) -> String {
    when.format(&Rfc2822).unwrap_or_else(|_| "Thu, 01 Jan 1970 00:00:00 +0000".into())
}

/// `rfc5322_date` of a time in seconds since the epoch (UTC).
pub fn rfc5322_date_of(unix_seconds: u64) -> String {
    rfc5322_date(utc(unix_seconds))
}

/// Seconds since the epoch now.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn utc(unix_seconds: u64) -> OffsetDateTime {
    i64::try_from(unix_seconds)
        .ok()
        .and_then(|s| OffsetDateTime::from_unix_timestamp(s).ok())
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// The date in an mbox `From ` line: `Sun Nov 22 03:31:00 2026` (asctime, UTC).
pub fn mbox_date(unix_seconds: u64) -> String {
    let when = utc(unix_seconds);
    let format = time::macros::format_description!(
        "[weekday repr:short] [month repr:short] [day padding:space] [hour]:[minute]:[second] [year]"
    );
    when.format(&format).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn dates_match_the_c_library() {
        // Expected values from Python's time.asctime(time.gmtime(t)) and strftime.
        let table = [
            (0, "Thu Jan  1 00:00:00 1970", "Thu, 01 Jan 1970 00:00:00 +0000"),
            (951_782_400, "Tue Feb 29 00:00:00 2000", "Tue, 29 Feb 2000 00:00:00 +0000"),
            (1_700_000_000, "Tue Nov 14 22:13:20 2023", "Tue, 14 Nov 2023 22:13:20 +0000"),
            (1_795_000_000, "Wed Nov 18 11:06:40 2026", "Wed, 18 Nov 2026 11:06:40 +0000"),
        ];
        for (seconds, asctime, rfc5322) in table {
            assert_eq!(mbox_date(seconds), asctime, "{seconds}");
            assert_eq!(rfc5322_date_of(seconds), rfc5322, "{seconds}");
        }
    }

    #[test]
    fn header_names_helo_ip_host_and_number() {
        let envelope = crate::envelope::Envelope {
            helo: "client\u{7f}x".into(),
            extended: false,
            tls: false,
            user: None,
            client_ip: IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)),
            sender: "a@b".into(),
            recipients: vec!["TA@CS4410".into()],
            routes: Vec::new(),
        };
        let when = OffsetDateTime::from_unix_timestamp(0).unwrap();
        let h = received_header(&envelope, "mx.test", 42, when);
        assert_eq!(
            h,
            "Received: from client?x ([127.0.0.1])\r\n\tby mx.test (maild) with SMTP id 42\r\n\tfor <TA@CS4410>;\r\n\tThu, 01 Jan 1970 00:00:00 +0000\r\n"
        );
        assert_eq!(mbox_date(0), "Thu Jan  1 00:00:00 1970");
    }
}
