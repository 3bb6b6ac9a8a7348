//! Delivery status notifications: placeholder with the agreed API (being written).

pub struct FailedRecipient {
    pub recipient: String,
    pub status: String,
    pub diagnostic: String,
    pub remote_mta: Option<String>,
}

pub fn bounce(
    _hostname: &str,
    _original_sender: &str,
    _arrival: time::OffsetDateTime,
    _now: time::OffsetDateTime,
    _original: &[&[u8]],
    _failed: &[FailedRecipient],
) -> Option<Vec<u8>> {
    None
}
