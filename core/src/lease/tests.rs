#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use super::*;
use crate::duration::Span;
use crate::testing::{per_second as limit, S};

fn answer(granted: u32, used: u32, window: u64, ends_in_ns: u64) -> Answer {
    Answer { granted, used, window, starts_in_ns: 0, ends_in_ns, blocked_ns: 0, windows: 1, current_used: 0 }
}

#[test]
fn spends_what_was_granted_then_asks() {
    let l = limit(100);
    let now = 10 * S;
    // A busy key (60 of 100 reserved in the window before) waits.
    let busy = Lease { used_before: 60, ..Lease::default() };
    let (step, lease) = busy.spend(now, &l, 1, true);
    assert_eq!(step, Step::Missing);
    assert_eq!(lease.want(now, &l), Some((1, false)));
    let mut lease = lease.grant(now, &l, &answer(3, 63, 10, S));
    for _ in 0..3 {
        let (step, next) = lease.spend(now, &l, 1, true);
        assert_eq!(step, Step::Spent);
        lease = next;
    }
    assert_eq!(lease.spend(now, &l, 1, true).0, Step::Missing);
}

#[test]
fn a_quiet_key_spends_on_credit_and_the_grant_pays_the_debt() {
    let l = limit(100);
    let now = 10 * S;
    // A key never seen: its first request does not wait.
    let (step, lease) = Lease::default().spend(now, &l, 1, true);
    assert_eq!(step, Step::Spent);
    assert_eq!(lease.owed, 1);
    assert_eq!(Lease::default().spend(now, &l, 1, false).0, Step::Missing, "without credit it waits");
    // One debt at a time: the next request waits for the refill.
    assert_eq!(lease.spend(now, &l, 1, true).0, Step::Missing);
    let (want, next) = lease.want(now, &l).expect("the debt is asked for");
    assert!(!next && want >= 1, "{want}");
    let lease = lease.grant(now, &l, &answer(3, 3, 10, S));
    assert_eq!((lease.owed, lease.units), (0, 2), "the grant paid the debt first");
    // A grant short of the debt leaves it owed: no more credit.
    let short = Lease { window: 10, ends_at: now + S, owed: 2, ..Lease::default() }.grant(now, &l, &answer(1, 100, 10, S));
    assert_eq!((short.owed, short.units), (1, 0));
    assert!(matches!(short.spend(now, &l, 1, true).0, Step::Exhausted { .. }));
}

#[test]
fn credit_needs_a_quiet_window_and_the_one_before() {
    let l = limit(100);
    let now = 10 * S;
    let known = Lease { window: 10, ends_at: now + S / 2, ..Lease::default() };
    assert_eq!(Lease { used: 49, ..known }.spend(now, &l, 1, true).0, Step::Spent);
    assert_eq!(Lease { used: 50, ..known }.spend(now, &l, 1, true).0, Step::Missing);
    assert_eq!(Lease { used_before: 50, ..known }.spend(now, &l, 1, true).0, Step::Missing);
    assert_eq!(Lease { used: 10, ..known }.spend(now, &l, 41, true).0, Step::Missing, "room for the whole cost");
    // The window's reservations become the one before's.
    let rolled = Lease { used: 70, next_used: 5, next_units: 5, ..known }.roll(now + S / 2, S);
    assert_eq!((rolled.used, rolled.used_before), (5, 70));
    let unknown = Lease { used: 70, ..known }.roll(now + S / 2, S);
    assert_eq!((unknown.window, unknown.used_before), (0, 70));
    assert_eq!(unknown.spend(now + S / 2, &l, 1, true).0, Step::Missing);
}

#[test]
fn a_debt_is_refunded_or_forgotten_with_its_window() {
    let l = limit(100);
    let now = 10 * S;
    let (_, owing) = Lease { window: 10, ends_at: now + S / 2, ..Lease::default() }.spend(now, &l, 1, true);
    assert_eq!(owing.owed, 1);
    // Denied by another rule: the debt is cancelled, not turned into a unit.
    let refunded = owing.refund(now, &l, 10, 1);
    assert_eq!((refunded.owed, refunded.units), (0, 0));
    // A debt the service never covered stays with its window.
    assert_eq!(owing.roll(now + S / 2, S).owed, 0);
    // Taken while the window was unknown, it is the answer's window's.
    let (_, fresh) = Lease::default().spend(now, &l, 1, true);
    let refunded = fresh.refund(now, &l, 0, 1);
    assert_eq!((refunded.owed, refunded.units), (0, 0));
}

#[test]
fn demand_counts_the_requests_the_other_rules_admit() {
    let l = limit(100);
    let now = 10 * S;
    let lease = Lease::default().grant(now, &l, &answer(5, 5, 10, S));
    let (_, spent) = lease.spend(now, &l, 1, false);
    assert_eq!(spent.seen, 1);
    // Another rule refused it: its unit and its count come back.
    let refunded = spent.refund(now, &l, 10, 1);
    assert_eq!((refunded.units, refunded.seen), (5, 0));
    // This rule refuses it: it counts.
    let gone = Lease { window: 10, ends_at: now + S, used: 100, ..Lease::default() };
    assert_eq!(gone.spend(now, &l, 1, false).1.seen, 1);
    // It waits for units: it counts once decided with them.
    let busy = Lease { window: 10, ends_at: now + S, used: 60, ..Lease::default() };
    let (step, waiting) = busy.spend(now, &l, 1, false);
    assert_eq!((step, waiting.seen), (Step::Missing, 0));
    assert_eq!(waiting.spend_carried(now, &l, 1).seen, 1);
    // A refund for a window gone leaves the counts alone.
    let later = spent.refund(now + S, &l, 10, 1);
    assert_eq!((later.seen, later.seen_before), (0, 1));
}

#[test]
fn an_exhausted_window_denies_without_asking() {
    let l = limit(10);
    let now = 10 * S + S / 2;
    let lease = Lease::default().grant(now, &l, &answer(2, 10, 10, S / 2));
    let (_, lease) = lease.spend(now, &l, 1, true);
    let (_, lease) = lease.spend(now, &l, 1, true);
    let (step, _) = lease.spend(now, &l, 1, true);
    assert_eq!(step, Step::Exhausted { retry_after_ns: S / 2 });
}

#[test]
fn the_next_window_is_reserved_ahead_and_takes_over() {
    let l = limit(100);
    let start = 10 * S;
    let mut lease = Lease::default().grant(start, &l, &answer(100, 100, 10, S));
    // 100 requests over the window; in its second half it wants the next.
    for i in 0..100 {
        lease = lease.spend(start + i * S / 100, &l, 1, true).1;
    }
    let late = start + 4 * S / 5;
    let (want, next) = lease.want(late, &l).expect("asks ahead");
    assert!(next);
    assert!((100..=120).contains(&want), "{want}");
    lease = lease.grant(
        late,
        &l,
        &Answer { granted: 100, used: 100, window: 11, starts_in_ns: S / 5, ends_in_ns: 6 * S / 5, blocked_ns: 0, windows: 1, current_used: 0 },
    );
    let (step, rolled) = lease.spend(start + S + 1, &l, 1, true);
    assert_eq!(step, Step::Spent);
    assert_eq!((rolled.window, rolled.units, rolled.seen_before), (11, 99, 100));
}

#[test]
fn a_span_reserved_ahead_becomes_current_window_by_window() {
    let l = limit(100);
    let start = 10 * S;
    let lease = Lease::default().grant(start, &l, &answer(40, 100, 10, S));
    let late = start + 3 * S / 4;
    let span = Answer { granted: 40, used: 90, window: 11, starts_in_ns: S / 4, ends_in_ns: 5 * S / 4, blocked_ns: 0, windows: 4, current_used: 0 };
    let lease = lease.grant(late, &l, &span);
    assert!(lease.spans());
    assert_eq!((lease.next_units, lease.ahead_units, lease.ahead_last), (40, 40, 14));
    // Windows 11 to 14 each start with 40 units, and nothing is asked
    // ahead while the next window is held.
    let mut at = lease;
    for w in 11..=14u64 {
        let now = start + (w - 10) * S + S / 10;
        let (step, next) = at.spend(now, &l, 1, false);
        assert_eq!(step, Step::Spent, "window {w}");
        assert_eq!((next.window, next.units, next.used), (w, 39, 90));
        assert_eq!(next.next_units, if w < 14 { 40 } else { 0 }, "window {w}");
        assert_eq!(next.want(start + (w - 10) * S + 3 * S / 4, &l).map(|(_, ahead)| ahead), if w < 14 { None } else { Some(true) }, "window {w}");
        at = next;
    }
    assert!(!at.spans());
    // Quiet for two windows within the span: the third still holds its units.
    let skipped = lease.roll(start + 3 * S + 1, S);
    assert_eq!((skipped.window, skipped.units, skipped.next_units), (13, 40, 40));
    assert_eq!(lease.roll(start + 6 * S, S).window, 0, "past the span: nothing known");
}

#[test]
fn a_span_the_traffic_left_is_given_back() {
    let l = limit(100);
    let start = 10 * S;
    let span = Answer { granted: 40, used: 90, window: 11, starts_in_ns: S / 4, ends_in_ns: 5 * S / 4, blocked_ns: 0, windows: 4, current_used: 0 };
    let lease = Lease::default().grant(start, &l, &answer(40, 100, 10, S)).grant(start + 3 * S / 4, &l, &span);
    let in_11 = start + S;
    // Early in a window nothing is judged, unless the key is idle.
    let kept = Lease { seen_before: 7, ..lease.roll(in_11, S) };
    assert_eq!(kept.give_back(in_11 + S / 5, S).0, [None, None]);
    let (back, after) = lease.give_back(in_11 + S / 5, S);
    assert_eq!(back, [None, None], "nothing was expected yet");
    assert_eq!(after.units, 40);
    // A quarter in without a request: windows 12 to 14 go back.
    let (back, after) = kept.give_back(in_11 + S / 4, S);
    assert_eq!(back, [None, Some(GiveBack { units: 40, from: 12, windows: 3 })]);
    assert_eq!((after.window, after.units, after.next_units), (11, 40, 0));
    assert!(!after.spans());
    assert_eq!(after.give_back(in_11 + S / 2, S).0, [None, None], "once");
    // The traffic left: 100 in the window before, none in 0.1 s of this
    // one. The current window's units go back too, at once.
    let left = Lease { seen_before: 100, ..lease.roll(in_11, S) };
    let (back, after) = left.give_back(in_11 + S / 10, S);
    assert_eq!(back, [Some(GiveBack { units: 40, from: 11, windows: 1 }), Some(GiveBack { units: 40, from: 12, windows: 3 })]);
    assert_eq!((after.units, after.next_units), (0, 0));
    assert_eq!(left.give_back(in_11 + S / 20, S).0, [None, None], "5 expected: not yet idle");
    // Requests that come but another rule refuses: not idle, not slower.
    let refused = (0..30).fold(left, |l, i| {
        let (_, spent) = l.spend(in_11 + i * S / 300, &l_limit(), 1, false);
        spent.refund(in_11 + i * S / 300, &l_limit(), 11, 1)
    });
    assert_eq!((refused.seen, refused.arrived), (0, 30));
    assert_eq!(refused.give_back(in_11 + S / 2, S).0, [None, None]);
    // At a pace that spends a quarter of a window's units it keeps them.
    let mut busy = lease;
    for i in 0..12 {
        busy = busy.spend(in_11 + i * S / 40, &l, 1, false).1;
    }
    assert_eq!(busy.give_back(in_11 + 3 * S / 10, S).0, [None, None], "40 a window, of 40 held");
    assert_eq!(busy.give_back(in_11 + 9 * S / 10, S).0, [None, None], "12 in 0.9 s: over a quarter");
    let slow = lease.spend(in_11, &l, 1, false).1;
    assert!(slow.give_back(in_11 + S / 2, S).0[1].is_some(), "1 in 0.5 s: under a quarter");
    // What is given back never exceeds what is held in every window.
    let short = Lease { next_units: 10, ..lease.roll(in_11, S) };
    assert_eq!(short.give_back(in_11 + S / 2, S).0[1].map(|b| b.units), Some(10));
}

fn l_limit() -> Limit {
    limit(100)
}

#[test]
fn an_instance_without_units_tops_up_with_its_reservation_ahead() {
    let l = limit(100);
    let now = 10 * S;
    let starving = Lease { window: 10, ends_at: now + S / 2, used: 100, seen: 150, ..Lease::default() };
    // 150 in half a window: 300 a window, 150 for the half left.
    assert_eq!(starving.top_up(now, &l), Some(100));
    assert_eq!(Lease { units: 1, ..starving }.top_up(now, &l), None, "it holds units");
    assert_eq!(starving.top_up(now + S / 2 - S / 10, &l), None, "too late in the window");
    assert_eq!(Lease::default().top_up(now, &l), None, "no window known");
}

#[test]
fn refills_never_exceed_the_budget_left() {
    let l = limit(100);
    let now = 10 * S;
    // Busy: 80 seen in the first fifth of the window, 5 units left,
    // the service had 90 reserved in all.
    let lease = Lease { window: 10, units: 5, used: 90, ends_at: now + 4 * S / 5, seen: 80, ..Lease::default() };
    let (want, next) = lease.want(now, &l).expect("refill");
    assert!(!next);
    assert_eq!(want, 10, "all the budget left, no more");
    let asked = Lease { asked_at: now, ..lease };
    assert_eq!(asked.want(now + 1, &l), None, "one ask in flight at a time");
    assert!(asked.want(now + ASK_EXPIRES_NS, &l).is_some(), "a lost ask expires");
}

#[test]
fn a_window_without_reservation_starts_empty() {
    let l = limit(100);
    let lease = Lease { window: 10, units: 7, used: 50, ends_at: 11 * S, seen: 9, ..Lease::default() };
    let rolled = lease.roll(11 * S + 1, S);
    assert_eq!((rolled.window, rolled.units, rolled.seen_before), (0, 0, 9));
    let far = lease.roll(15 * S, S);
    assert_eq!(far.seen_before, 0);
    assert_eq!(lease.spend(11 * S + 1, &l, 1, true).0, Step::Missing);
}

#[test]
fn refund_returns_the_unit_to_its_window() {
    let l = limit(100);
    let lease = Lease::default().grant(S, &l, &answer(1, 1, 1, S));
    let (_, spent) = lease.spend(S, &l, 1, true);
    assert_eq!(spent.units, 0);
    assert_eq!(spent.refund(S, &l, 1, 1).units, 1);
    assert_eq!(spent.refund(S, &l, 2, 1).units, 0, "another window's unit is not ours");
}

#[test]
fn hostile_counts_and_windows_do_not_wrap() {
    // A week's window (the longest) and counts at the top of u32:
    // `seen * per` is far past u64.
    let week = crate::duration::MAX_NS;
    let l = Limit { requests: u64::MAX, per: Span::from_nanos(week), burst: u64::MAX, calendar: None };
    let now = 10 * week;
    let lease = Lease { window: 10, ends_at: now + week / 4, seen: u32::MAX, seen_before: u32::MAX, units: 0, ..Lease::default() };
    // Three quarters of the window passed: the pace is seen * 4 / 3.
    let pace = u64::from(u32::MAX) * 4 / 3;
    assert_eq!(lease.rate(now, week), pace);
    // A quarter of the window left at that pace, an eighth more, and one.
    assert_eq!(lease.want(now, &l), Some((u32::try_from(pace / 4 + pace / 8 + 1).unwrap(), false)));
    // Rolled past u64::MAX: no wrap back to the start of time.
    let far = Lease { window: u64::MAX, ends_at: u64::MAX - 1, next_units: 1, ..Lease::default() };
    let rolled = far.roll(u64::MAX, 2).window;
    assert!(rolled == u64::MAX || rolled == 0, "{rolled}: the last window, or unknown");
    let last = Lease { window: u64::MAX, ends_at: now + week, ..Lease::default() };
    let answer = Answer { granted: 1, used: 1, window: u64::MAX, starts_in_ns: 5, ends_in_ns: 5, blocked_ns: 0, windows: 1, current_used: 0 };
    assert_eq!(last.grant(now, &l, &answer).next_units, 0, "no window after the last");
    let tiny = Limit { requests: 10, per: Span::from_nanos(1), burst: 10, calendar: None };
    assert_eq!(Lease { window: 1, ends_at: 1, seen: u32::MAX, ..Lease::default() }.want_next(0, &tiny), Some(10));
}

#[test]
fn encoding_round_trips() {
    let lease = Lease {
        window: 1,
        units: 2,
        used: 3,
        ends_at: 4,
        next_units: 5,
        next_used: 6,
        seen: 7,
        seen_before: 8,
        asked_at: 9,
        owed: 10,
        used_before: 11,
        ahead_units: 12,
        ahead_used: 13,
        ahead_last: 14,
        arrived: 15,
        held: 16,
    };
    let mut out = Vec::new();
    lease.encode_into(&mut out);
    assert_eq!(out.len(), Lease::ENCODED_LEN);
    assert_eq!(Lease::decode(&out), Some(lease));
    assert_eq!(Lease::decode(&out[..10]), None);
    let earlier = Lease::decode(&out[..48]).expect("a lease of an earlier version");
    assert_eq!(earlier, Lease { owed: 0, used_before: 0, ahead_units: 0, ahead_used: 0, ahead_last: 0, arrived: 0, held: 0, ..lease });
    let before_spans = Lease::decode(&out[..56]).expect("a lease stored before spans");
    assert_eq!(before_spans, Lease { ahead_units: 0, ahead_used: 0, ahead_last: 0, arrived: 0, held: 0, ..lease });
    let before_loans = Lease::decode(&out[..76]).expect("a lease stored before loans");
    assert_eq!(before_loans, Lease { held: 0, ..lease });
}

#[test]
fn a_loan_is_the_instances_and_comes_back_while_its_window_lasts() {
    let l = limit(100);
    let now = 10 * S;
    let lease = Lease::default().grant(now, &l, &answer(40, 40, 10, S / 2));
    let lent = lease.lend(8);
    assert_eq!((lent.units, lent.held, lent.held_here()), (32, 8, 40));
    // Lent units are still the instance's: the refill sizing is unchanged.
    assert_eq!(lent.want(now, &l), lease.want(now, &l));
    // Five admitted from the loan: counted, the other three back.
    let repaid = lent.repay(now + 1, &l, 10, 8, 5);
    assert_eq!((repaid.units, repaid.held, repaid.seen), (35, 0, 5));
    assert_eq!(repaid.arrived, 5);
    // Repaid after the window ended: the units ended with it, the requests
    // count in the window they were admitted in.
    let late = lent.repay(now + S / 2, &l, 10, 8, 5);
    assert_eq!((late.units, late.held, late.seen, late.seen_before), (0, 0, 0, 5));
    // Never more than the lease holds.
    assert_eq!(lease.lend(100).held_here(), 40);
}
