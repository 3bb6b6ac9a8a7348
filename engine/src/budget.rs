//! A memory budget for message data held by all sessions at once.
//!
//! A session's `--max-message-size` bounds one message, but a crowd of slow senders could
//! each hold one; the budget bounds their sum. A session takes a [`Share`] as its buffer
//! grows and gives it back when the message is stored or dropped; when the budget is
//! spent, the message is refused with `452 4.3.1` instead of growing memory.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

#[derive(Debug)]
pub struct MemoryBudget {
    limit: usize,
    used: AtomicUsize,
}

impl MemoryBudget {
    pub fn new(limit: usize) -> Arc<MemoryBudget> {
        Arc::new(MemoryBudget { limit, used: AtomicUsize::new(0) })
    }

    pub fn unlimited() -> Arc<MemoryBudget> {
        MemoryBudget::new(usize::MAX)
    }

    /// Bytes held by all shares now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// An empty share of this budget.
    pub fn share(self: &Arc<Self>) -> Share {
        Share { budget: self.clone(), bytes: 0 }
    }

    fn take(&self, bytes: usize) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|&total| total <= self.limit)
            })
            .is_ok()
    }

    fn give_back(&self, bytes: usize) {
        self.used.fetch_sub(bytes, Ordering::AcqRel);
    }
}

/// What one buffer holds of a [`MemoryBudget`]; given back on drop.
#[derive(Debug)]
pub struct Share {
    budget: Arc<MemoryBudget>,
    bytes: usize,
}

impl Share {
    /// Grows this share to `bytes`; false (and unchanged) when the budget cannot cover it.
    pub fn grow_to(&mut self, bytes: usize) -> bool {
        if bytes <= self.bytes {
            return true;
        }
        if !self.budget.take(bytes - self.bytes) {
            return false;
        }
        self.bytes = bytes;
        true
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Gives everything back, keeping the share for later growth.
    pub fn clear(&mut self) {
        self.budget.give_back(std::mem::take(&mut self.bytes));
    }
}

impl Drop for Share {
    fn drop(&mut self) {
        self.budget.give_back(self.bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_are_bounded_by_the_budget_and_given_back_on_drop() {
        let budget = MemoryBudget::new(100);
        let mut a = budget.share();
        let mut b = budget.share();
        assert!(a.grow_to(60));
        assert!(!b.grow_to(41), "60 + 41 is over 100");
        assert_eq!(b.bytes(), 0);
        assert!(b.grow_to(40));
        assert!(a.grow_to(50), "shrinking requests change nothing");
        assert_eq!(budget.used(), 100);
        drop(a);
        assert_eq!(budget.used(), 40);
        drop(b);
        assert_eq!(budget.used(), 0);
    }
}
