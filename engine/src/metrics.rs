//! What `--metrics` serves, in the Prometheus text format (the `prometheus-client` crate).
//!
//! The stages and the daemon count into one shared [`Metrics`]; what is cheaper to read
//! than to keep up to date (queue depth and age, store size) is read from the store at
//! each scrape.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

use crate::store::Store;

type Labels = Vec<(&'static str, String)>;

pub struct Metrics {
    registry: Mutex<Registry>,
    messages_accepted: Counter,
    smtp_replies: Family<Labels, Counter>,
    commit_batch_size: Histogram,
    commit_seconds: Histogram,
    ack_seconds: Histogram,
    forwarded: Family<Labels, Counter>,
    auth_failures: Family<Labels, Counter>,
    connections: Family<Labels, Counter>,
    open_connections: Family<Labels, Gauge>,
    queue_depth: Gauge,
    queue_oldest: Gauge,
    store_bytes: Gauge,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    pub fn new() -> Arc<Metrics> {
        let metrics = Metrics {
            registry: Mutex::new(Registry::with_prefix("maild")),
            messages_accepted: Counter::default(),
            smtp_replies: Family::default(),
            // 1, 2, 4 … 512 messages per group commit.
            commit_batch_size: Histogram::new(exponential_buckets(1.0, 2.0, 10)),
            // 100 µs … ~1.6 s.
            commit_seconds: Histogram::new(exponential_buckets(0.0001, 2.0, 15)),
            ack_seconds: Histogram::new(exponential_buckets(0.0001, 2.0, 15)),
            forwarded: Family::default(),
            auth_failures: Family::default(),
            connections: Family::default(),
            open_connections: Family::default(),
            queue_depth: Gauge::default(),
            queue_oldest: Gauge::default(),
            store_bytes: Gauge::default(),
        };
        {
            let mut r = metrics.registry.lock().unwrap_or_else(|e| e.into_inner());
            r.register("messages_accepted", "Messages acknowledged with 250", metrics.messages_accepted.clone());
            r.register("smtp_replies", "SMTP replies sent, by reply code", metrics.smtp_replies.clone());
            r.register("commit_batch_size", "Messages per group commit", metrics.commit_batch_size.clone());
            r.register_with_unit(
                "commit",
                "Time of one group commit: the batch write and its fsync",
                Unit::Seconds,
                metrics.commit_seconds.clone(),
            );
            r.register_with_unit(
                "ack",
                "From the end of DATA to the 250 (or 4xx) reply",
                Unit::Seconds,
                metrics.ack_seconds.clone(),
            );
            r.register(
                "forwarded",
                "Recipients handed to peers or MX hosts, by domain and outcome (delivered, bounced)",
                metrics.forwarded.clone(),
            );
            r.register("auth_failures", "Failed password checks, by mechanism", metrics.auth_failures.clone());
            r.register("connections", "Client connections accepted, by listener", metrics.connections.clone());
            r.register(
                "open_connections",
                "Client connections open now, by listener",
                metrics.open_connections.clone(),
            );
            r.register("queue_depth", "Messages waiting in the outbound queue", metrics.queue_depth.clone());
            r.register_with_unit(
                "queue_oldest_age",
                "Age of the oldest message in the outbound queue",
                Unit::Seconds,
                metrics.queue_oldest.clone(),
            );
            r.register_with_unit("store_size", "Size of the store on disk", Unit::Bytes, metrics.store_bytes.clone());
        }
        Arc::new(metrics)
    }

    pub fn committed(&self, messages: usize, took: Duration) {
        self.messages_accepted.inc_by(messages as u64);
        self.commit_batch_size.observe(messages as f64);
        self.commit_seconds.observe(took.as_secs_f64());
    }

    pub fn acknowledged(&self, took: Duration) {
        self.ack_seconds.observe(took.as_secs_f64());
    }

    pub fn smtp_reply(&self, code: u16) {
        self.smtp_replies.get_or_create(&vec![("code", code.to_string())]).inc();
    }

    pub fn forwarded(&self, domain: &str, outcome: &'static str) {
        self.forwarded.get_or_create(&vec![("domain", domain.to_string()), ("outcome", outcome.to_string())]).inc();
    }

    pub fn auth_failed(&self, mechanism: &str) {
        self.auth_failures.get_or_create(&vec![("mechanism", mechanism.to_string())]).inc();
    }

    pub fn connection_opened(&self, listener: &str) {
        let labels = vec![("listener", listener.to_string())];
        self.connections.get_or_create(&labels).inc();
        self.open_connections.get_or_create(&labels).inc();
    }

    pub fn connection_closed(&self, listener: &str) {
        self.open_connections.get_or_create(&vec![("listener", listener.to_string())]).dec();
    }

    /// The text a scrape gets, with the store's figures read now.
    pub fn scrape(&self, store: &Store) -> String {
        if let Ok(queue) = store.queue() {
            let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
            let oldest = queue.iter().map(|(_, r)| r.queued_at).min().map_or(0, |t| now.saturating_sub(t));
            self.queue_depth.set(queue.len() as i64);
            self.queue_oldest.set(oldest as i64);
        }
        if let Ok(size) = store.size_on_disk() {
            self.store_bytes.set(size as i64);
        }
        let mut text = String::new();
        let registry = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        if encode(&mut text, &registry).is_err() {
            text.clear();
        }
        text
    }
}
