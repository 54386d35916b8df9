//! Calendar windows on a fake clock: local rules that reset at UTC and
//! offset day boundaries and at month ends (February of leap and common
//! years, a month of 31 days), what validation refuses, and a global daily
//! budget over a simulated day at three instances sharing the in-memory
//! counter service, through restarts of every instance.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: failing loudly is the point.

mod support;

use sluice_core::civil::days_from_civil;
use sluice_core::policy::Policy;
use sluice_core::request::MemoryRequest;
use support::{FakeCounter, Instance};

const S: u64 = 1_000_000_000;
const H: u64 = 3_600 * S;
const DAY: u64 = 24 * H;

/// `y-m-d` at `h` o'clock UTC, in ns since the epoch.
fn at(y: i64, m: u32, d: u32, h: u64) -> u64 {
    u64::try_from(days_from_civil(y, m, d).unwrap()).unwrap() * DAY + h * H
}

fn local_policy() -> Policy {
    Policy::from_json(
        r#"{"rules": [
        {"name": "day-plus2", "match": {"paths": [{"exact": "/d"}]}, "key": [],
         "limit": {"requests": 3, "calendar": "day", "utc_offset": "+02:00"}},
        {"name": "month", "match": {"paths": [{"exact": "/m"}]}, "key": [],
         "limit": {"requests": 2, "calendar": "month"}},
        {"name": "month-minus5", "match": {"paths": [{"exact": "/m5"}]}, "key": [],
         "limit": {"requests": 2, "calendar": "month", "utc_offset": "-05:00"}}]}"#,
    )
    .unwrap()
}

/// How many of `n` requests to `path` at `now` pass.
fn passed(inst: &mut Instance, counter: &mut FakeCounter, path: &str, n: usize, now: u64) -> usize {
    let req = MemoryRequest::new("GET", path);
    (0..n).filter(|_| inst.send(counter, &req, now).ruling.denied_by.is_none()).count()
}

#[test]
fn a_local_day_resets_at_the_offset_midnight() {
    let (mut inst, mut c) = (Instance::new(local_policy()), FakeCounter::default());
    // Midnight at +02:00 is 22:00 UTC.
    let midnight = at(2026, 3, 14, 22);
    assert_eq!(passed(&mut inst, &mut c, "/d", 5, midnight - 2 * H), 3);
    assert_eq!(passed(&mut inst, &mut c, "/d", 1, midnight - 1), 0, "1 ns before the boundary");
    let req = MemoryRequest::new("GET", "/d");
    let d = inst.send(&mut c, &req, midnight - S);
    let denied = d.ruling.denied_by.expect("refused");
    assert_eq!(denied.outcome.retry_after_ns, S, "waits until the boundary");
    let reply = sluice_core::response::denial(&inst.policy, &d, midnight - S, 0).unwrap();
    assert!(reply.body.contains(r#""window":"1 day (UTC+02:00)","remaining":0,"resetAt":"2026-03-14T22:00:00Z""#), "{}", reply.body);
    assert_eq!(passed(&mut inst, &mut c, "/d", 5, midnight), 3, "a new day");
    assert_eq!(passed(&mut inst, &mut c, "/d", 1, midnight + DAY - 1), 0);
    assert_eq!(passed(&mut inst, &mut c, "/d", 1, midnight + DAY), 1);
}

#[test]
fn a_local_month_resets_on_the_first_whatever_its_length() {
    for (y, m, days) in [(2024, 2, 29), (2025, 2, 28), (2026, 1, 31), (2026, 4, 30), (2025, 12, 31), (2100, 2, 28), (2000, 2, 29)] {
        let (mut inst, mut c) = (Instance::new(local_policy()), FakeCounter::default());
        let first = at(y, m, 1, 0);
        let next = first + days * DAY;
        assert_eq!(passed(&mut inst, &mut c, "/m", 3, first + H), 2, "{y}-{m}");
        assert_eq!(passed(&mut inst, &mut c, "/m", 1, next - 1), 0, "{y}-{m}: the month's last ns");
        assert_eq!(passed(&mut inst, &mut c, "/m", 3, next), 2, "{y}-{m}: the next month");
        // At -05:00 the month ends five hours later.
        assert_eq!(passed(&mut inst, &mut c, "/m5", 3, next - H), 2, "{y}-{m} at -05:00");
        assert_eq!(passed(&mut inst, &mut c, "/m5", 1, next + 5 * H - 1), 0);
        assert_eq!(passed(&mut inst, &mut c, "/m5", 1, next + 5 * H), 1);
    }
}

#[test]
fn validation_refuses_what_has_no_calendar_meaning() {
    let rule = |limit: &str, extra: &str| format!(r#"{{"rules": [{{"name": "r", "key": [], "limit": {limit}{extra}}}]}}"#);
    for (limit, extra, path) in [
        (r#"{"requests": 10, "calendar": "week"}"#, "", "rules[0].limit.calendar"),
        (r#"{"requests": 10, "calendar": "day", "per": "1d"}"#, "", "rules[0].limit.calendar"),
        (r#"{"requests": 10, "calendar": "day", "burst": 5}"#, "", "rules[0].limit.calendar"),
        (r#"{"requests": 10, "calendar": "day"}"#, r#", "algorithm": "token_bucket""#, "rules[0].algorithm"),
        (r#"{"requests": 10, "calendar": "month"}"#, r#", "algorithm": "sliding_window""#, "rules[0].algorithm"),
        (r#"{"requests": 10, "calendar": "day", "utc_offset": "+15:00"}"#, "", "rules[0].limit.utc_offset"),
        (r#"{"requests": 10, "calendar": "day", "utc_offset": "Europe/Paris"}"#, "", "rules[0].limit.utc_offset"),
        (r#"{"requests": 10, "per": "1s", "utc_offset": "+02:00"}"#, "", "rules[0].limit.utc_offset"),
        (r#"{"requests": 0, "calendar": "day"}"#, "", "rules[0].limit.requests"),
        (r#"{"concurrent": 3, "calendar": "day"}"#, "", "rules[0].limit.concurrent"),
        (r#"{"requests": 10, "calendar": "day"}"#, r#", "queue": {"max_wait": "1s"}"#, "rules[0].queue"),
    ] {
        let err = Policy::from_json(&rule(limit, extra)).expect_err(limit).to_string();
        assert!(err.contains(path), "{limit}{extra}: {err}");
    }
    let ok = Policy::from_json(&rule(r#"{"requests": 10, "calendar": "day"}"#, r#", "algorithm": "fixed_window""#)).unwrap();
    assert!(ok.rules[0].limit.calendar.is_some());
}

const BUDGET: u64 = 100;

/// The example policy, its daily budget set to `budget`.
fn budget_policy(budget: u64) -> Policy {
    let text = include_str!("../../policies/examples/daily-budget.json");
    let rule = r#""limit": {"requests": 100, "calendar": "day"}"#;
    assert!(text.contains(rule));
    Policy::from_json(&text.replace(rule, &format!(r#""limit": {{"requests": {budget}, "calendar": "day"}}"#))).unwrap()
}

/// What a run admitted per UTC day, and the service's count of the day
/// holding `probe`, read at `probe`.
struct Days {
    admitted: std::collections::BTreeMap<u64, u64>,
    counted: u64,
}

/// Sends `POST /api/v1/tools/select` for `tenant` every `gap` over
/// `[from, to)`, round robin over three instances whose leaders tick
/// every second; `restarts`: times at which every instance starts afresh
/// (its shared data gone; the counter service keeps its counts). Returns
/// the requests admitted in each UTC day, by day index.
fn run_days(budget: u64, (from, to): (u64, u64), gap: u64, restarts: &[u64], probe: u64) -> Days {
    let mut counter = FakeCounter::default();
    let counter = &mut counter;
    let mut counted = 0;
    let policy = budget_policy(budget);
    let fresh = || (0..3).map(|_| Instance::new(policy.clone())).collect::<Vec<_>>();
    let mut instances = fresh();
    let req = MemoryRequest::new("POST", "/api/v1/tools/select").header("x-tenant-id", "acme").from_address("10.0.0.7:4000");
    let mut admitted = std::collections::BTreeMap::new();
    let (mut t, mut i, mut next_tick) = (from, 0usize, from);
    let mut restarts = restarts.iter().peekable();
    while t < to {
        while next_tick <= t {
            for inst in &mut instances {
                inst.tick(counter, next_tick);
            }
            next_tick += S;
        }
        if t <= probe && probe < t + gap {
            counted = counter.used("tools-select-daily", "acme", probe / DAY);
        }
        if restarts.next_if(|r| **r <= t).is_some() {
            instances = fresh();
        }
        if instances[i % 3].send(counter, &req, t).ruling.denied_by.is_none() {
            *admitted.entry(t / DAY).or_insert(0) += 1;
        }
        i += 1;
        t += gap;
    }
    Days { admitted, counted }
}

#[test]
fn a_global_daily_budget_is_kept_over_a_day_at_three_instances() {
    // From 22:00 on 28 February 2028 (a leap year) to 02:00 on 1 March, a
    // request every `gap`, round robin: 100 and 4 times the budget.
    let (from, to) = (at(2028, 2, 28, 22), at(2028, 3, 1, 2));
    let leap_day = at(2028, 2, 29, 0) / DAY;
    for (budget, gap) in [(BUDGET, 2 * S), (10_000, 2 * S)] {
        let days = run_days(budget, (from, to), gap, &[], at(2028, 3, 1, 0) - gap);
        let whole = days.admitted[&leap_day];
        let share = whole as f64 / budget as f64;
        println!(
            "daily budget {budget}, 29 February 2028, 3 instances, {} offered: admitted {whole} ({:.2} %), reserved at the service {}, leased and unspent {}, overrun {}",
            DAY / gap,
            share * 100.0,
            days.counted,
            days.counted.saturating_sub(whole),
            whole.saturating_sub(budget)
        );
        assert!((0.999..=1.0).contains(&share), "admitted {whole} of {budget}");
        assert!(days.counted <= budget, "the service never grants past the budget");
        for day in [leap_day - 1, leap_day + 1] {
            let n = days.admitted.get(&day).copied().unwrap_or(0);
            assert!((1..=budget).contains(&n), "day {day}: {n}");
        }
    }
}

#[test]
fn a_global_daily_budget_survives_every_instance_restarting() {
    let day = at(2027, 7, 31, 0);
    // Every instance restarts three times in the day, before and after the
    // budget is gone; the counter service's counts (Redis) stay. Units an
    // instance leased and had not spent are lost with it: never more than
    // the budget, a little less.
    let restarts = [day + 60 * S, day + 3 * H, day + 20 * H];
    let days = run_days(BUDGET, (day, day + DAY), 5 * S, &restarts, day + DAY - 5 * S);
    let n = days.admitted[&(day / DAY)];
    println!(
        "daily budget {BUDGET}, 3 restarts of all 3 instances: admitted {n}, reserved at the service {}, lost with the restarts {}",
        days.counted,
        days.counted - n
    );
    assert!((90..=BUDGET).contains(&n), "admitted {n}");
    assert_eq!(days.counted, BUDGET);
}
