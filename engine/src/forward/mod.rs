//! The forward stage: delivers messages for peer domains over SMTP, from a durable queue.
//!
//! - [`client`]: the outbound SMTP client (one connection, several messages).
//! - [`dsn`]: delivery status notifications (RFC 3464) for mail that cannot be delivered.
//! - [`mx`]: where to send a domain's mail (MX lookup, RFC 5321 §5.1) and in what order.
//! - [`tls`]: the client side of opportunistic STARTTLS.

pub mod client;
pub mod dsn;
pub mod mx;
pub mod tls;
