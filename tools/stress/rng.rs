//! Randomness: engine's SplitMix64, so a printed seed replays a run's scenarios.

use super::*;
use engine::rng::SplitMix64;

#[derive(Clone)]
pub(super) struct Rng(SplitMix64);

impl Rng {
    pub(super) fn new(seed: u64) -> Rng {
        Rng(SplitMix64::new(seed))
    }

    pub(super) fn next(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// A number in `0..n` (n > 0).
    pub(super) fn below(&mut self, n: u64) -> u64 {
        self.0.below(n)
    }

    pub(super) fn index(&mut self, len: usize) -> usize {
        let len = u64::try_from(len).unwrap_or(u64::MAX);
        usize::try_from(self.below(len)).unwrap_or(0)
    }

    /// True with this probability in percent.
    pub(super) fn chance(&mut self, percent: u64) -> bool {
        self.0.chance(percent)
    }

    pub(super) fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.index(items.len())]
    }

    /// A lowercase hex tag, to make addresses no one has.
    pub(super) fn tag(&mut self) -> String {
        format!("{:08x}", self.next() >> 32)
    }
}

pub(super) fn clock_seed() -> u64 {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let low = u64::try_from(nanos & u128::from(u64::MAX)).unwrap_or(0);
    Rng::new(low ^ u64::from(std::process::id())).next()
}
