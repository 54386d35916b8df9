//! Reservations that span several windows: the instance's leader widens a
//! steady key's reservation ahead to [`MAX_SPAN`] windows in one ask, so
//! that each instance calls the counter service for that key about once
//! every four windows instead of every window; and it watches the keys it
//! widened, giving back the windows ahead of a key whose traffic here
//! dropped (see `Lease::give_back`), so that no budget stays reserved at
//! an instance the traffic left for more than the window in which it
//! left.
//!
//! The leader keeps the watch in its own memory: a new leader starts with
//! none, and a span the old one reserved for a key that then goes quiet
//! is not given back (it is spent or lost with its windows). A key leaves
//! the watch when its span ends or is given back: from then on its
//! requests reserve ahead at their own pace like any key's, and `widen`
//! watches it again when that is a span's worth.

use std::collections::BTreeMap;

use super::{global::rule_of, LeaseNeed};
use crate::counter_api::{Ask, MAX_SPAN};
use crate::policy::Policy;
use crate::store::{self, SharedStore, StoreError};

/// Most keys one leader watches; past it, asks ahead stay one window.
pub const MAX_WATCHED: usize = 1024;
/// Smallest limit whose reservations span windows: below it one call a
/// window per instance is a few percent of the requests anyway.
pub const SPAN_MIN_LIMIT: u64 = 100;
/// A key spans windows only when an instance asks ahead for at least
/// `1 / SPAN_MIN_SHARE` of its limit: a slow key's few units cost few
/// calls anyway, and its pace is too noisy to judge when to give back.
pub const SPAN_MIN_SHARE: u64 = 16;
/// Longest window a span covers (four of them reserved ahead).
pub const SPAN_MAX_WINDOW_MS: u64 = 60_000;
/// Leases reserved ahead the filter's leader looks at per tick, at most
/// (one shared-data read each): 6,400 a second, spread so that no tick
/// holds the worker's requests for long (see `Spans::sweep`).
pub const SWEEP_PER_TICK: usize = 64;

/// The keys whose spans this leader reserved, by lease fingerprint: the
/// need that asked, when to look at its lease next, and the last window
/// its span reserved (as the clock here sees windows, with one to spare).
#[derive(Default)]
pub struct Spans {
    watched: BTreeMap<u64, (LeaseNeed, u64, u64)>,
}

impl Spans {
    pub fn len(&self) -> usize {
        self.watched.len()
    }

    pub fn is_empty(&self) -> bool {
        self.watched.is_empty()
    }

    /// Widens the asks ahead among `needs` that may span windows, while
    /// the watch has room: the lease's own ask for the next window, of at
    /// least `1 / SPAN_MIN_SHARE` of the limit, for a rule with a limit of
    /// at least [`SPAN_MIN_LIMIT`] that neither
    /// queues (a turn counts exact windows) nor protects an upstream's
    /// limit (blocks end spans' use anyway).
    pub fn widen(&mut self, policy: &Policy, needs: &mut [LeaseNeed], now: u64) {
        for need in needs.iter_mut() {
            let a = &need.ask;
            let busy = u64::from(a.want).saturating_mul(SPAN_MIN_SHARE) >= a.limit;
            let fits = a.next && need.owns_ask && need.carry == 0 && a.release == 0 && busy && a.limit >= SPAN_MIN_LIMIT && a.window_ms <= SPAN_MAX_WINDOW_MS;
            // The rule's own limit (not one adapted to its upstream).
            let plain = rule_of(policy, need).is_some_and(|(_, r)| r.queue.is_none() && !r.obey_upstream && r.limit.requests == a.limit);
            if !fits || !plain || (self.watched.len() >= MAX_WATCHED && !self.watched.contains_key(&need.fingerprint)) {
                continue;
            }
            // Spans end on multiples of MAX_SPAN windows (as the clock
            // here sees them), for every key and instance: the rules of the
            // same requests renew in the same window, so that the instance
            // that wins one rule's budget wins the others' in the same call
            // rather than each rule's budget going to another instance.
            let target = (now / 1_000_000).checked_div(a.window_ms).unwrap_or(0).saturating_add(1);
            // (A span of one window is still watched: the leader renews it.)
            need.ask.windows = MAX_SPAN.saturating_sub(u32::try_from(target.checked_rem(u64::from(MAX_SPAN)).unwrap_or(0)).unwrap_or(0)).max(1);
            let last = target.saturating_add(u64::from(need.ask.windows));
            self.watched.insert(need.fingerprint, (need.clone(), now, last));
        }
    }

    /// Looks at the watched leases due (each about eight times a window):
    /// returns the give-backs to send, and the renewals of spans whose
    /// key is still busy here (a span's last window reserves the next
    /// ones even when no request of this rule reaches its lease, as when
    /// another rule of the same requests refuses them first). Stops
    /// watching a key once its span ended or was given back (and no ask
    /// of it is in flight). A lease that cannot be read is looked at again
    /// later.
    ///
    /// At most `budget` leases are looked at, the longest due first; the
    /// others stay due for the next sweep. Each look reads a lease from
    /// shared data: a leader watching 1024 keys of one-second windows,
    /// eight looks a window each, looks at 8192 a second, and doing them in
    /// one go every 50 ms held the worker's requests for about a
    /// millisecond each time.
    pub fn sweep(&mut self, policy: &Policy, store: &dyn SharedStore, now: u64, budget: usize) -> (Vec<LeaseNeed>, Vec<StoreError>) {
        let mut out = Vec::new();
        let mut renewed = Vec::new();
        let mut errors = Vec::new();
        let mut done = Vec::new();
        let mut ready: Vec<(u64, u64)> = self.watched.iter().filter(|(_, (_, due, _))| *due <= now).map(|(fp, (_, due, _))| (*due, *fp)).collect();
        if ready.len() > budget {
            // The `budget` longest due, in linear time (every tick, over
            // up to 1,024 keys).
            ready.select_nth_unstable(budget);
            ready.truncate(budget);
        }
        for fp in ready.into_iter().map(|(_, fp)| fp) {
            let Some((need, due, last)) = self.watched.get_mut(&fp) else { continue };
            let last = *last;
            let Some((_, rule)) = rule_of(policy, need) else {
                done.push(fp);
                continue;
            };
            let per = rule.limit.window_ns(now);
            *due = now.saturating_add(per / 8);
            let looked = store::lease_update(store, policy.slots, fp, &rule.limit, now, |l| {
                let (back, mut after) = l.give_back(now, per);
                let gave = back.iter().any(Option::is_some);
                let renew = if gave || after.seen == 0 { None } else { after.want(now, &rule.limit).filter(|(_, ahead)| *ahead) };
                if renew.is_some() {
                    after.asked_at = now;
                }
                // While an ask is in flight, and until the span ends or is
                // given back: then the key is like any other, whose
                // requests reserve ahead at their own pace (and `widen`
                // watches it again if that is a span's worth). A key that
                // stayed watched while it knew a window was looked at
                // forever once a burst had widened it.
                let watching = after.asking(now) || after.spans() || (!gave && after.window != 0 && after.window <= last);
                ((back, renew, watching), (gave || renew.is_some()).then_some(after))
            });
            match looked {
                Ok((back, renew, watching)) => {
                    // The rule as it stands (a reload may have changed its
                    // limit): never more given back than it allows.
                    let base =
                        Ask { limit: rule.limit.requests, window_ms: rule.limit.per.nanos() / 1_000_000, calendar: rule.limit.calendar, ..need.ask.clone() };
                    for b in back.into_iter().flatten() {
                        let units = u32::try_from(u64::from(b.units).min(base.limit)).unwrap_or(b.units);
                        let ask = Ask { want: 0, next: false, windows: b.windows, release: units, from: b.from, ..base.clone() };
                        out.push(LeaseNeed { owns_ask: false, carry: 0, ask, ..need.clone() });
                    }
                    if let Some((want, _)) = renew {
                        renewed.push(LeaseNeed { owns_ask: true, carry: 0, ask: Ask { want, windows: 1, ..base }, ..need.clone() });
                    } else if !watching {
                        done.push(fp);
                    }
                }
                Err(e) => errors.push(e),
            }
        }
        for fp in done {
            self.watched.remove(&fp);
        }
        self.widen(policy, &mut renewed, now);
        out.extend(renewed);
        (out, errors)
    }
}
