//! The leader's asks on their way to the counter service. What one round
//! of lease work gathers (the workers' refills, spans widened, give-backs
//! and renewals) goes out at most [`ASKS_PER_TICK`] a tick, the current
//! windows' asks first, in as many calls as the service's bounds take
//! ([`batch_len`]).
//!
//! Why a bound: the answer to a call is applied in one block on the thread
//! that made it, about 2 µs a key plus the body's parsing. With a thousand
//! keys that reserve the next window from the middle of the current one,
//! a round gathered 100–250 asks, and their answer held Envoy's main thread
//! for 0.6–1.1 ms; where that thread shares a CPU with a worker, the
//! worker's requests waited as long. At most 64 asks a tick keep each block
//! near a quarter of a millisecond, and still let 6,400 keys a second
//! through; a round of fewer asks (every accuracy row of the bench, any
//! policy with fewer busy keys) goes out whole on its own tick, as before.
//! An ask waits here a few ticks at most, far within its expiry
//! (`lease::ASK_EXPIRES_NS`, 500 ms).

use super::LeaseNeed;
use crate::counter_api::batch_len;

/// Most asks the leader sends on one tick.
pub const ASKS_PER_TICK: usize = 64;

/// The asks waiting to go out, in the order they were gathered.
#[derive(Debug, Default)]
pub struct Outbox {
    waiting: Vec<LeaseNeed>,
}

impl Outbox {
    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    /// Adds a round's asks after those still waiting.
    pub fn push(&mut self, needs: impl IntoIterator<Item = LeaseNeed>) {
        self.waiting.extend(needs);
    }

    /// The calls to make on this tick: at most `budget` asks, those for
    /// the current window before those for windows ahead (each kind in
    /// its order), cut into batches the service accepts. The rest waits.
    pub fn calls(&mut self, budget: usize) -> Vec<Vec<LeaseNeed>> {
        let (mut now, ahead): (Vec<LeaseNeed>, Vec<LeaseNeed>) = std::mem::take(&mut self.waiting).into_iter().partition(|n| !n.ask.next);
        now.extend(ahead);
        self.waiting = now.split_off(budget.min(now.len()));
        let mut calls = Vec::new();
        let mut rest = now;
        while !rest.is_empty() {
            let len = batch_len(rest.iter().map(|n| &n.ask));
            let tail = rest.split_off(len.clamp(1, rest.len()));
            calls.push(std::mem::replace(&mut rest, tail));
        }
        calls
    }

    /// Everything still waiting (the lead was lost, or the service is
    /// down: their keys forget the asks and may ask again).
    pub fn take_all(&mut self) -> Vec<LeaseNeed> {
        std::mem::take(&mut self.waiting)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::counter_api::{Ask, MAX_ASKS};

    fn need(i: u64, next: bool) -> LeaseNeed {
        let id = format!("tenant-{i}");
        let ask = Ask { rule: "per-tenant".into(), id, limit: 100, window_ms: 1000, want: 2, next, windows: 1, release: 0, from: 0, calendar: None };
        LeaseNeed { rule: 0, fingerprint: i, ask, owns_ask: true, carry: 0, bucket: i }
    }

    fn ids(calls: &[Vec<LeaseNeed>]) -> Vec<u64> {
        calls.iter().flatten().map(|n| n.fingerprint).collect()
    }

    #[test]
    fn a_round_of_few_asks_goes_out_whole_in_one_call() {
        let mut outbox = Outbox::default();
        outbox.push((0..50).map(|i| need(i, i % 2 == 0)));
        let calls = outbox.calls(ASKS_PER_TICK);
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].len(), 50);
        assert!(outbox.is_empty());
        assert!(outbox.calls(ASKS_PER_TICK).is_empty(), "nothing twice");
    }

    #[test]
    fn a_large_round_goes_out_over_ticks_current_windows_first() {
        let mut outbox = Outbox::default();
        // 150 asks ahead, then 100 for the current window.
        outbox.push((0..150).map(|i| need(i, true)));
        outbox.push((150..250).map(|i| need(i, false)));
        let mut sent = Vec::new();
        let mut ticks = 0;
        while !outbox.is_empty() {
            let calls = outbox.calls(ASKS_PER_TICK);
            assert!(calls.iter().map(Vec::len).sum::<usize>() <= ASKS_PER_TICK);
            sent.extend(ids(&calls));
            ticks += 1;
        }
        assert_eq!(ticks, 4, "250 asks, 64 a tick");
        let want: Vec<u64> = (150..250).chain(0..150).collect();
        assert_eq!(sent, want, "every ask once, the current window's first, each kind in order");
    }

    #[test]
    fn asks_of_a_later_round_wait_behind_the_current_ones_of_an_earlier() {
        let mut outbox = Outbox::default();
        outbox.push((0..100).map(|i| need(i, true)));
        assert_eq!(ids(&outbox.calls(ASKS_PER_TICK)), (0..64).collect::<Vec<_>>());
        outbox.push([need(500, false), need(501, true)]);
        let next = ids(&outbox.calls(ASKS_PER_TICK));
        assert_eq!(next.first(), Some(&500), "a current window's ask is not held behind asks ahead");
        assert_eq!(next.len(), 38);
        assert_eq!(next.last(), Some(&501));
    }

    #[test]
    fn a_tick_cuts_its_asks_into_calls_the_service_accepts() {
        let mut outbox = Outbox::default();
        outbox.push((0..(2 * MAX_ASKS as u64 + 3)).map(|i| need(i, false)));
        let calls = outbox.calls(usize::MAX);
        assert!(calls.iter().all(|c| !c.is_empty() && c.len() <= MAX_ASKS));
        assert_eq!(ids(&calls), (0..(2 * MAX_ASKS as u64 + 3)).collect::<Vec<_>>());
        assert_eq!(outbox.take_all(), Vec::new());
    }

    #[test]
    fn what_waits_can_be_taken_back_whole() {
        let mut outbox = Outbox::default();
        outbox.push((0..100).map(|i| need(i, true)));
        let _ = outbox.calls(ASKS_PER_TICK);
        assert_eq!(outbox.take_all().iter().map(|n| n.fingerprint).collect::<Vec<_>>(), (64..100).collect::<Vec<_>>());
        assert!(outbox.is_empty());
    }
}
