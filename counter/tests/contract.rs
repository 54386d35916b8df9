//! The store contract, one body run against every store: memory, a single
//! Redis node and a three-node Redis Cluster. It goes through the HTTP router
//! so the reply format is checked on the way. Leases over several windows and
//! releases are checked with hour-long windows (the current window does not
//! change during a test) and, where time must move on, with short windows
//! slept through.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: failing loudly is the point.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use sluice_counter::{CounterStore, MemoryStore, RedisStore, RedisTarget};
use sluice_wire::calendar::{Calendar, Unit};
use support::redis_procs::{command, Cluster};
use support::{block_item, block_ok, give_back, lease, redis_store, reserve_ok, router, span};

fn n(v: &Value, field: &str) -> u64 {
    v[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} missing in {v}"))
}

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64
}

/// Ms since `since`, rounded up, plus 2 ms for clocks ticking in whole ms.
fn ms_since(since: Instant) -> u64 {
    since.elapsed().as_millis() as u64 + 3
}

/// Everything a store must do, checked through the router.
async fn contract(store: Arc<dyn CounterStore>) {
    let app = router(store);
    // Long windows keep the first checks away from window boundaries.
    let hour = 3_600_000;

    // Grants up to the limit, then nothing; want 0 only reads.
    let (now, r) = reserve_ok(&app, vec![lease("per-tenant", "t-1", 100, hour, 60, false)]).await;
    let wall = wall_ms();
    assert!(
        now.abs_diff(wall) < 5_000,
        "store clock {now} far from {wall}"
    );
    let r = &r[0];
    assert_eq!(
        (n(r, "granted"), n(r, "used"), n(r, "limit")),
        (60, 60, 100)
    );
    assert_eq!(n(r, "starts_in_ms"), 0);
    let window = n(r, "window");
    assert_eq!(window, now / hour);
    assert_eq!(n(r, "ends_in_ms"), (window + 1) * hour - now);
    assert_eq!(n(r, "blocked_ms"), 0, "no block");
    let (_, r) = reserve_ok(&app, vec![lease("per-tenant", "t-1", 100, hour, 60, false)]).await;
    assert_eq!((n(&r[0], "granted"), n(&r[0], "used")), (40, 100));
    let (_, r) = reserve_ok(&app, vec![lease("per-tenant", "t-1", 100, hour, 1, false)]).await;
    assert_eq!((n(&r[0], "granted"), n(&r[0], "used")), (0, 100));

    // Reads change nothing; a lower limit than `used` grants nothing.
    let (_, r) = reserve_ok(&app, vec![lease("per-tenant", "t-2", 10, hour, 3, false)]).await;
    assert_eq!(n(&r[0], "used"), 3);
    for _ in 0..3 {
        let (_, r) = reserve_ok(&app, vec![lease("per-tenant", "t-2", 10, hour, 0, false)]).await;
        assert_eq!((n(&r[0], "granted"), n(&r[0], "used")), (0, 3));
    }
    let (_, r) = reserve_ok(&app, vec![lease("per-tenant", "t-2", 2, hour, 2, false)]).await;
    assert_eq!((n(&r[0], "granted"), n(&r[0], "used")), (0, 3));

    // Rule, id and window length each name a separate counter; results come
    // in request order; an id that must be hashed works like any other.
    let long_id = "x".repeat(1024);
    let (_, r) = reserve_ok(
        &app,
        vec![
            lease("per-tenant", "t-1", 100, 30_000, 5, false),
            lease("other-rule", "t-1", 100, hour, 6, false),
            lease("per-tenant", "t-3", 100, hour, 7, false),
            lease("per-tenant", &long_id, 100, hour, 8, false),
            lease("per-tenant", "a b/{c}", 100, hour, 9, false),
        ],
    )
    .await;
    let granted: Vec<u64> = r.iter().map(|x| n(x, "granted")).collect();
    assert_eq!(granted, [5, 6, 7, 8, 9]);

    // The same counter twice in one request shares the limit.
    let (_, r) = reserve_ok(
        &app,
        vec![
            lease("dup", "d", 10, hour, 6, false),
            lease("dup", "d", 10, hour, 6, false),
        ],
    )
    .await;
    assert_eq!(n(&r[0], "granted") + n(&r[1], "granted"), 10);

    // Next window: reported with its start, counted apart from the current
    // one, and current once time reaches it.
    let short = 400;
    let (_, r) = reserve_ok(&app, vec![lease("shift", "s", 10, short, 0, false)]).await;
    if n(&r[0], "ends_in_ms") < 150 {
        // Start the pair well inside a window: each lease reads Redis TIME.
        tokio::time::sleep(Duration::from_millis(n(&r[0], "ends_in_ms") + 10)).await;
    }
    let (now, r) = reserve_ok(
        &app,
        vec![
            lease("shift", "s", 10, short, 4, true),
            lease("shift", "s", 10, short, 9, false),
        ],
    )
    .await;
    let (next, cur) = (&r[0], &r[1]);
    assert_eq!((n(next, "granted"), n(next, "used")), (4, 4));
    assert_eq!((n(cur, "granted"), n(cur, "used")), (9, 9));
    assert_eq!(n(next, "window"), n(cur, "window") + 1);
    assert_eq!(n(next, "window"), now / short + 1);
    let (starts, ends) = (n(next, "starts_in_ms"), n(cur, "ends_in_ms"));
    assert!(
        starts.abs_diff(ends) <= 5,
        "next starts in {starts}, current ends in {ends}"
    );
    assert_eq!(n(next, "ends_in_ms") - n(next, "starts_in_ms"), short);
    let wait = n(next, "starts_in_ms") + 30;
    tokio::time::sleep(Duration::from_millis(wait)).await;
    let (_, r) = reserve_ok(&app, vec![lease("shift", "s", 10, short, 10, false)]).await;
    assert_eq!(
        n(&r[0], "window"),
        n(next, "window"),
        "slept into the next window"
    );
    assert_eq!((n(&r[0], "granted"), n(&r[0], "used")), (6, 10));

    // A new window starts from zero.
    let wait = n(&r[0], "ends_in_ms") + 30;
    tokio::time::sleep(Duration::from_millis(wait)).await;
    let (_, r) = reserve_ok(&app, vec![lease("shift", "s", 10, short, 10, false)]).await;
    assert_eq!((n(&r[0], "granted"), n(&r[0], "used")), (10, 10));

    blocks(&app).await;
    spans(&app).await;
    releases(&app).await;
    spans_as_time_moves_on(&app).await;
    calendar_windows(&app).await;
}

/// A lease of calendar windows.
fn calendar_lease(rule: &str, unit: Unit, offset_min: i32, want: u64, next: bool) -> Value {
    let c = Calendar { unit, offset_min };
    let mut l = lease(rule, "c-1", 10, c.window_ms(), want, next);
    l["calendar"] = serde_json::to_value(c).expect("json");
    l
}

/// Calendar windows: the day or month the service's clock is in, at the
/// offset; their budget, their bounds; and what is refused.
async fn calendar_windows(app: &axum::Router) {
    for (unit, offset_min) in [(Unit::Day, 120), (Unit::Month, -300), (Unit::Month, 0)] {
        let c = Calendar { unit, offset_min };
        let rule = format!("cal-{offset_min}");
        let (now, r) =
            reserve_ok(app, vec![calendar_lease(&rule, unit, offset_min, 7, false)]).await;
        let w = c.index(now);
        assert_eq!(n(&r[0], "window"), w, "{c:?}");
        assert_eq!(n(&r[0], "ends_in_ms"), c.end_ms(w) - now, "{c:?}");
        assert_eq!(n(&r[0], "granted"), 7);
        let (_, r) = reserve_ok(app, vec![calendar_lease(&rule, unit, offset_min, 7, false)]).await;
        assert_eq!(
            (n(&r[0], "granted"), n(&r[0], "used")),
            (3, 10),
            "{c:?}: the window's budget"
        );
        let (now, r) =
            reserve_ok(app, vec![calendar_lease(&rule, unit, offset_min, 4, true)]).await;
        assert_eq!(
            (n(&r[0], "granted"), n(&r[0], "window")),
            (4, w + 1),
            "{c:?}: the next one"
        );
        assert_eq!(n(&r[0], "starts_in_ms"), c.end_ms(w) - now);
        assert_eq!(n(&r[0], "ends_in_ms"), c.end_ms(w + 1) - now);
        assert_eq!(n(&r[0], "current_used"), 10);
    }
    let refused = |mut l: Value, field: &str, value: Value| {
        l[field] = value;
        l
    };
    for (l, field) in [
        (
            refused(
                calendar_lease("c", Unit::Day, 0, 1, false),
                "window_ms",
                1000.into(),
            ),
            "leases[0].window_ms",
        ),
        (
            refused(
                calendar_lease("c", Unit::Day, 0, 1, false),
                "calendar",
                serde_json::json!({"unit": "day", "offset_min": 900}),
            ),
            "leases[0].calendar.offset_min",
        ),
    ] {
        let (status, reply) = support::reserve(app, &serde_json::json!({"leases": [l]})).await;
        assert_eq!(status, 400, "{reply}");
        assert_eq!(reply["field"], field, "{reply}");
    }
    let week = refused(
        calendar_lease("c", Unit::Day, 0, 1, false),
        "calendar",
        serde_json::json!({"unit": "week"}),
    );
    let (status, reply) = support::reserve(app, &serde_json::json!({"leases": [week]})).await;
    assert_eq!(status, 400, "{reply}");
}

/// `(granted, used, window, windows)` of a lease result.
fn grant(r: &Value) -> (u64, u64, u64, u64) {
    (
        n(r, "granted"),
        n(r, "used"),
        n(r, "window"),
        n(r, "windows"),
    )
}

/// A lease over several windows grants the same units in each, as many as
/// the fullest of them has room for, and reports that fullest count.
async fn spans(app: &axum::Router) {
    let hour = 3_600_000;
    let (now, r) = reserve_ok(
        app,
        vec![
            lease("span", "u", 10, hour, 3, false),
            lease("span", "u", 10, hour, 6, true),
        ],
    )
    .await;
    let w = now / hour;
    assert_eq!(grant(&r[0]), (3, 3, w, 1), "windows is 1 when not asked");
    assert_eq!(grant(&r[1]), (6, 6, w + 1, 1));

    // Window w has room for 7, w + 1 for 4, w + 2 for 10: 4 in each.
    let (now, r) = reserve_ok(app, vec![span(lease("span", "u", 10, hour, 8, false), 3)]).await;
    assert_eq!(grant(&r[0]), (4, 10, w, 3));
    assert_eq!(n(&r[0], "starts_in_ms"), 0, "timing of the first window");
    assert_eq!(n(&r[0], "ends_in_ms"), (w + 1) * hour - now);
    // Leases of one request may run in any order: these only read, or
    // touch windows no other one reads.
    let (_, r) = reserve_ok(
        app,
        vec![
            lease("span", "u", 10, hour, 0, false),
            lease("span", "u", 10, hour, 0, true),
            span(lease("span", "u", 10, hour, 0, true), 4),
            span(lease("span", "u", 10, hour, 10, true), 4),
        ],
    )
    .await;
    assert_eq!(grant(&r[0]), (0, 7, w, 1), "w: 3 + 4");
    assert_eq!(grant(&r[1]), (0, 10, w + 1, 1), "w + 1: 6 + 4");
    assert_eq!(
        grant(&r[2]),
        (0, 10, w + 1, 4),
        "a read reports the fullest"
    );
    assert_eq!(grant(&r[3]), (0, 10, w + 1, 4), "w + 1 is full");
    let (_, r) = reserve_ok(app, vec![span(lease("span", "u", 10, hour, 10, false), 1)]).await;
    assert_eq!(grant(&r[0]), (3, 10, w, 1), "windows 1 is a plain lease");
    // Now w and w + 1 are full: nothing, however many windows.
    let (_, r) = reserve_ok(app, vec![span(lease("span", "u", 10, hour, 9, false), 4)]).await;
    assert_eq!(grant(&r[0]), (0, 10, w, 4));
    let (_, r) = reserve_ok(app, vec![span(lease("span", "u", 10, hour, 9, true), 1)]).await;
    assert_eq!(grant(&r[0]), (0, 10, w + 1, 1));

    // On a fresh counter the whole want is granted in every window, from
    // the next one; the reply times that first window.
    let (now, r) = reserve_ok(app, vec![span(lease("span", "f", 10, 60_000, 10, true), 4)]).await;
    let w = now / 60_000;
    assert_eq!(grant(&r[0]), (10, 10, w + 1, 4));
    assert_eq!(n(&r[0], "ends_in_ms") - n(&r[0], "starts_in_ms"), 60_000);
    let (_, r) = reserve_ok(
        app,
        vec![
            lease("span", "f", 10, 60_000, 10, false),
            span(lease("span", "f", 10, 60_000, 1, true), 4),
        ],
    )
    .await;
    assert_eq!(grant(&r[0]), (10, 10, w, 1), "the current window is apart");
    assert_eq!(grant(&r[1]), (0, 10, w + 1, 4));
    // Every answer tells the current window's count, whatever it targets:
    // an instance reserving ahead learns that this window is full.
    assert_eq!(
        [n(&r[0], "current_used"), n(&r[1], "current_used")],
        [10, 10]
    );
    let (_, r) = reserve_ok(
        app,
        vec![
            lease("span", "g", 10, 60_000, 4, false),
            lease("span", "g", 10, 60_000, 2, true),
        ],
    )
    .await;
    assert_eq!([n(&r[0], "current_used"), n(&r[1], "current_used")], [4, 4]);
}

/// A release gives units back in the windows it names (a later lease gets
/// them), never below 0, skipping windows that are over and ignoring those
/// past what a counter holds.
async fn releases(app: &axum::Router) {
    let hour = 3_600_000;
    let (now, r) = reserve_ok(app, vec![span(lease("rel", "r", 10, hour, 6, false), 3)]).await;
    let w = now / hour;
    assert_eq!(grant(&r[0]), (6, 6, w, 3));

    // 4 back in w and w + 1; w + 2 keeps its 6.
    let (now, r) = reserve_ok(app, vec![give_back("rel", "r", 10, hour, 4, w, 2)]).await;
    assert_eq!(grant(&r[0]), (0, 2, w, 2), "used: the current window");
    assert_eq!(n(&r[0], "limit"), 10);
    assert_eq!(n(&r[0], "starts_in_ms"), 0);
    assert_eq!(n(&r[0], "ends_in_ms"), (w + 1) * hour - now);
    let (_, r) = reserve_ok(app, vec![span(lease("rel", "r", 10, hour, 0, true), 2)]).await;
    assert_eq!(
        grant(&r[0]),
        (0, 6, w + 1, 2),
        "w + 1 holds 2, w + 2 still 6"
    );
    let (_, r) = reserve_ok(
        app,
        vec![
            lease("rel", "r", 10, hour, 10, false),
            lease("rel", "r", 10, hour, 10, true),
        ],
    )
    .await;
    assert_eq!(
        grant(&r[0]),
        (8, 10, w, 1),
        "the released units are granted"
    );
    assert_eq!(grant(&r[1]), (8, 10, w + 1, 1));
    let (_, r) = reserve_ok(app, vec![give_back("rel", "r", 10, hour, 1, w + 1, 2)]).await;
    assert_eq!(grant(&r[0]), (0, 10, w, 2));
    let (_, r) = reserve_ok(app, vec![span(lease("rel", "r", 10, hour, 10, true), 2)]).await;
    assert_eq!(grant(&r[0]), (1, 10, w + 1, 2), "w + 1 had 1 back, w + 2 5");
    let (_, r) = reserve_ok(app, vec![span(lease("rel", "r", 10, hour, 10, true), 3)]).await;
    assert_eq!(grant(&r[0]), (0, 10, w + 1, 3));

    // Never below 0: 10 back from a count of 3 leaves 0, not -7.
    reserve_ok(app, vec![lease("rel", "z", 10, hour, 3, false)]).await;
    let (_, r) = reserve_ok(app, vec![give_back("rel", "z", 10, hour, 10, w, 1)]).await;
    assert_eq!(grant(&r[0]), (0, 0, w, 1));
    let (_, r) = reserve_ok(app, vec![lease("rel", "z", 10, hour, 10, false)]).await;
    assert_eq!(grant(&r[0]), (10, 10, w, 1), "not 13");

    // Windows already over are skipped: from w - 2 over three windows only
    // w gives back; from w - 4 over two windows nothing does.
    reserve_ok(app, vec![span(lease("rel", "p", 10, hour, 5, false), 2)]).await;
    let (_, r) = reserve_ok(app, vec![give_back("rel", "p", 10, hour, 2, w - 2, 3)]).await;
    assert_eq!(grant(&r[0]), (0, 3, w, 3));
    let (_, r) = reserve_ok(app, vec![give_back("rel", "p", 10, hour, 2, w - 4, 2)]).await;
    assert_eq!(grant(&r[0]), (0, 3, w, 2), "nothing given back");
    let (_, r) = reserve_ok(app, vec![lease("rel", "p", 10, hour, 0, true)]).await;
    assert_eq!(grant(&r[0]), (0, 5, w + 1, 1), "w + 1 untouched");

    // Windows past the five a counter holds hold nothing; a huge `from` is
    // harmless; nor does a release on a counter without state grant anything.
    let (_, r) = reserve_ok(
        app,
        vec![
            give_back("rel", "p", 10, hour, 2, w + 4, 4),
            give_back("rel", "p", 10, hour, 2, u64::MAX, 4),
            give_back("rel", "none", 10, hour, 2, w, 4),
        ],
    )
    .await;
    assert_eq!(grant(&r[0]), (0, 3, w, 4));
    assert_eq!(grant(&r[1]), (0, 3, w, 4));
    assert_eq!(grant(&r[2]), (0, 0, w, 4));
    let (_, r) = reserve_ok(app, vec![lease("rel", "none", 10, hour, 10, false)]).await;
    assert_eq!(grant(&r[0]), (10, 10, w, 1));
}

/// Units a lease reserved ahead over several windows count in each of them
/// once time reaches it.
async fn spans_as_time_moves_on(app: &axum::Router) {
    let short = 400;
    let (_, r) = reserve_ok(app, vec![lease("ahead", "a", 10, short, 0, false)]).await;
    if n(&r[0], "ends_in_ms") < 150 {
        tokio::time::sleep(Duration::from_millis(n(&r[0], "ends_in_ms") + 10)).await;
    }
    let (_, r) = reserve_ok(app, vec![span(lease("ahead", "a", 10, short, 4, false), 3)]).await;
    let w = n(&r[0], "window");
    assert_eq!(grant(&r[0]), (4, 4, w, 3));
    let (_, r) = reserve_ok(app, vec![span(lease("ahead", "a", 10, short, 3, true), 3)]).await;
    assert_eq!(grant(&r[0]), (3, 7, w + 1, 3));
    // Counts: w 4, w + 1 7, w + 2 7, w + 3 3.
    let mut ends = n(&r[0], "ends_in_ms") - n(&r[0], "starts_in_ms");
    for (step, left) in [(1, 3), (2, 3), (3, 7), (4, 10)] {
        tokio::time::sleep(Duration::from_millis(ends + 30)).await;
        let (_, r) = reserve_ok(app, vec![lease("ahead", "a", 10, short, 10, false)]).await;
        assert_eq!(n(&r[0], "window"), w + step, "slept into window w + {step}");
        assert_eq!(
            grant(&r[0]),
            (left, 10, w + step, 1),
            "in window w + {step}"
        );
        ends = n(&r[0], "ends_in_ms");
    }
}

/// Upstream blocks: a blocked key grants nothing and says for how long; a
/// shorter block does not shorten it, a longer one lengthens it; once it ends
/// the key grants again; other ids and rules are never affected.
async fn blocks(app: &axum::Router) {
    let hour = 3_600_000;
    let (_, r) = reserve_ok(app, vec![lease("blk", "b-1", 100, hour, 5, false)]).await;
    assert_eq!((n(&r[0], "granted"), n(&r[0], "blocked_ms")), (5, 0));

    let blocked_at = Instant::now();
    let (now, b) = block_ok(
        app,
        vec![
            block_item("blk", "b-1", 400),
            block_item("blk", "b-9", 1_000),
            block_item("blk", "a b/{c}", 2_000),
        ],
    )
    .await;
    assert!(now.abs_diff(wall_ms()) < 5_000, "store clock {now}");
    let fresh: Vec<u64> = b.iter().map(|x| n(x, "blocked_ms")).collect();
    assert_eq!(fresh, [400, 1_000, 2_000], "fresh blocks, in request order");

    // b-1 is blocked for every window length, current and next; b-2 and
    // another rule with id b-1 are not.
    let (now, r) = reserve_ok(
        app,
        vec![
            lease("blk", "b-1", 100, hour, 5, false),
            lease("blk", "b-1", 100, 30_000, 5, true),
            lease("blk", "b-1", 100, hour, 0, false),
            lease("blk", "b-2", 100, hour, 5, false),
            lease("blk-other", "b-1", 100, hour, 5, false),
            lease("blk", "a b/{c}", 100, hour, 5, false),
        ],
    )
    .await;
    let elapsed = ms_since(blocked_at);
    let r0 = &r[0];
    assert_eq!(
        (n(r0, "granted"), n(r0, "used"), n(r0, "limit")),
        (0, 5, 100)
    );
    assert_eq!(n(r0, "window"), now / hour, "timing reported as usual");
    assert_eq!(n(r0, "starts_in_ms"), 0);
    // now_ms is the latest of the leases' clocks (each lease reads its own).
    let ends = (now / hour + 1) * hour - now;
    assert!(
        (ends..=ends + elapsed).contains(&n(r0, "ends_in_ms")),
        "ends_in_ms {} vs {ends}",
        n(r0, "ends_in_ms")
    );
    for blocked in [&r[0], &r[1], &r[2]] {
        let ms = n(blocked, "blocked_ms");
        assert!(
            (400u64.saturating_sub(elapsed)..=400).contains(&ms),
            "blocked_ms {ms} not within {elapsed} ms of 400: {blocked}"
        );
        assert_eq!(n(blocked, "granted"), 0, "{blocked}");
    }
    assert_eq!(n(&r[1], "window"), now / 30_000 + 1);
    assert_eq!((n(&r[1], "used"), n(&r[2], "used")), (0, 5));
    for (free, used) in [(&r[3], 5), (&r[4], 5)] {
        assert_eq!(
            (n(free, "granted"), n(free, "used"), n(free, "blocked_ms")),
            (5, used, 0),
            "{free}"
        );
    }
    assert_eq!(n(&r[5], "granted"), 0, "a hashed id is blocked too");
    assert!(n(&r[5], "blocked_ms") > 1_000);

    // A shorter block leaves the longer one; a longer one replaces it.
    let asked = Instant::now();
    let (_, b) = block_ok(
        app,
        vec![
            block_item("blk", "b-1", 50),
            block_item("blk", "b-9", 1_500),
        ],
    )
    .await;
    let elapsed = ms_since(blocked_at);
    let left = n(&b[0], "blocked_ms");
    assert!(
        (400u64.saturating_sub(elapsed)..=400).contains(&left),
        "a 50 ms block shortened a 400 ms one to {left} ms after {elapsed} ms"
    );
    assert_eq!(n(&b[1], "blocked_ms"), 1_500, "a longer block lengthens");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (_, r) = reserve_ok(app, vec![lease("blk", "b-1", 100, hour, 5, false)]).await;
    let ms = n(&r[0], "blocked_ms");
    assert_eq!(
        n(&r[0], "granted"),
        0,
        "still blocked 100 ms after a 50 ms block"
    );
    // At least 100 ms passed on the store's clock (99 after truncating to
    // whole ms), and at most the time since the block call was sent.
    assert!(
        (left.saturating_sub(ms_since(asked))..=left.saturating_sub(99)).contains(&ms),
        "blocked_ms {ms}, {left} before"
    );

    // Once the block ends the key grants again (and is not blocked).
    tokio::time::sleep(Duration::from_millis(ms + 30)).await;
    let (_, r) = reserve_ok(app, vec![lease("blk", "b-1", 100, hour, 5, false)]).await;
    assert_eq!(
        (
            n(&r[0], "granted"),
            n(&r[0], "used"),
            n(&r[0], "blocked_ms")
        ),
        (5, 10, 0),
        "the block ended"
    );
    let (_, r) = reserve_ok(app, vec![lease("blk", "b-9", 100, hour, 5, false)]).await;
    assert_eq!(n(&r[0], "granted"), 0, "b-9's 1.5 s block still holds");
    assert!(n(&r[0], "blocked_ms") > 0);

    // Blocking again after the end starts a fresh block.
    let (_, b) = block_ok(app, vec![block_item("blk", "b-1", 300)]).await;
    assert_eq!(n(&b[0], "blocked_ms"), 300);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_store_meets_the_contract() {
    contract(Arc::new(MemoryStore::new())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_store_meets_the_contract() {
    let redis = wasm_test_harness::Redis::start().expect("redis");
    contract(redis_store(&redis.url(), 1_000)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_cluster_store_meets_the_contract() {
    let cluster = Cluster::start();
    let target = RedisTarget::Cluster(cluster.urls());
    let store = RedisStore::new(&target, Duration::from_millis(1_000)).expect("store");
    contract(Arc::new(store)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_keys_are_expiring_hashes_in_the_documented_format() {
    let redis = wasm_test_harness::Redis::start().expect("redis");
    let mut state = support::state(redis_store(&redis.url(), 1_000));
    state.prefix = Arc::from("rl:");
    let app = sluice_counter::app(state);
    reserve_ok(
        &app,
        vec![lease("per-tenant", "tenant-123", 100, 60_000, 20, false)],
    )
    .await;
    reserve_ok(&app, vec![lease("per-ip", "10.0.0.1", 5, 1_500, 1, true)]).await;
    reserve_ok(&app, vec![lease("per-ip", "10.0.0.2", 5, 1_500, 0, false)]).await;
    let port = redis.port();
    let key = "rl:per-tenant:{tenant-123}:60";
    assert_eq!(
        command(port, &format!("TYPE {key}")).as_deref(),
        Some("+hash")
    );
    let pttl: u64 = command(port, &format!("PTTL {key}")).expect("pttl")[1..]
        .parse()
        .expect("int");
    // End of the current window (≤ 60 s away) plus a 6 s margin.
    assert!((6_000..=66_000).contains(&pttl), "PTTL {pttl}");
    // A month's counter lives until 3.1 days after the month ends.
    let month = Calendar {
        unit: Unit::Month,
        offset_min: 120,
    };
    let (now, _) = reserve_ok(
        &app,
        vec![calendar_lease("budget", Unit::Month, 120, 5, false)],
    )
    .await;
    let pttl: u64 = command(port, "PTTL rl:budget:{c-1}:month+0200").expect("pttl")[1..]
        .parse()
        .expect("int");
    let end = month.end_ms(month.index(now)) - now + month.window_ms() / 10;
    assert!(
        (end - 5_000..=end).contains(&pttl),
        "PTTL {pttl}, expected {end}"
    );
    let key = "rl:per-ip:{10.0.0.1}:1500ms";
    let pttl: u64 = command(port, &format!("PTTL {key}")).expect("pttl")[1..]
        .parse()
        .expect("int");
    // Holds the next window: up to two windows plus a 1 s margin.
    assert!((2_500..=4_000).contains(&pttl), "PTTL {pttl}");
    assert_eq!(
        command(port, "EXISTS rl:per-ip:{10.0.0.2}:1500ms").as_deref(),
        Some(":0"),
        "a read creates no key"
    );

    // A block is a string of its end time (Redis clock) that expires with it.
    let (now, b) = block_ok(&app, vec![block_item("per-tenant", "tenant-123", 250)]).await;
    assert_eq!(b[0]["blocked_ms"], 250);
    let key = "rl:per-tenant:{tenant-123}:block";
    assert_eq!(
        command(port, &format!("TYPE {key}")).as_deref(),
        Some("+string")
    );
    let value = command(port, &format!("GET {key}")).expect("get");
    assert_eq!(value.lines().last(), Some((now + 250).to_string().as_str()));
    let pttl: u64 = command(port, &format!("PTTL {key}")).expect("pttl")[1..]
        .parse()
        .expect("int");
    assert!((1..=250).contains(&pttl), "PTTL {pttl}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        command(port, &format!("EXISTS {key}")).as_deref(),
        Some(":0"),
        "the block key expires by itself"
    );
}

/// The values of an array reply as `command` returns it (`nil` for a
/// missing field).
fn bulk_strings(reply: &str) -> Vec<String> {
    let mut lines = reply.lines().skip(1);
    let mut values = Vec::new();
    while let Some(line) = lines.next() {
        if line == "$-1" {
            values.push("nil".to_owned());
        } else {
            values.push(lines.next().expect("bulk value").to_owned());
        }
    }
    values
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_are_stored_in_six_fields_and_old_hashes_read_as_before() {
    let redis = wasm_test_harness::Redis::start().expect("redis");
    let mut state = support::state(redis_store(&redis.url(), 1_000));
    state.prefix = Arc::from("rl:");
    let app = sluice_counter::app(state);
    let port = redis.port();
    let minute = 60_000;
    let fields = |key: &str| {
        bulk_strings(&command(port, &format!("HMGET {key} w n m a2 a3 a4")).expect("hmget"))
            .join(" ")
    };
    let pttl = |key: &str| -> u64 {
        command(port, &format!("PTTL {key}")).expect("pttl")[1..]
            .parse()
            .expect("int")
    };

    // A lease over three windows from the next one: counts in m, a2, a3;
    // the key lives until the end of w + 3 plus the 6 s margin.
    let (now, r) = reserve_ok(&app, vec![span(lease("s", "a", 10, minute, 4, true), 3)]).await;
    let w = now / minute;
    assert_eq!(grant(&r[0]), (4, 4, w + 1, 3));
    let key = "rl:s:{a}:60";
    assert_eq!(fields(key), format!("{w} 0 4 4 4 0"), "w n m a2 a3 a4");
    let ttl = pttl(key);
    let end = (w + 4) * minute + 6_000 - now;
    assert!(
        (end - 1_000..=end).contains(&ttl),
        "PTTL {ttl}, end in {end}"
    );

    // Giving everything back in the last two leaves the key until w + 1
    // ends; a release that changes nothing writes nothing, and one on a
    // counter without state creates no key.
    let (_, r) = reserve_ok(&app, vec![give_back("s", "a", 10, minute, 9, w + 2, 2)]).await;
    assert_eq!(grant(&r[0]), (0, 0, w, 2));
    assert_eq!(fields(key), format!("{w} 0 4 0 0 0"));
    let ttl = pttl(key);
    let end = (w + 2) * minute + 6_000 - now;
    assert!(ttl <= end && ttl + 2_000 > end, "PTTL {ttl}, end in {end}");
    command(port, &format!("PEXPIRE {key} 50000")).expect("pexpire");
    reserve_ok(&app, vec![give_back("s", "a", 10, minute, 9, w + 2, 2)]).await;
    assert!(pttl(key) <= 50_000, "not written again");
    reserve_ok(&app, vec![give_back("s", "b", 10, minute, 9, w, 4)]).await;
    assert_eq!(command(port, "EXISTS rl:s:{b}:60").as_deref(), Some(":0"));

    // A hash of the older format (w, n, m only) reads as it was, in the
    // current window and one window on.
    command(port, &format!("HSET rl:s:{{old}}:60 w {w} n 7 m 3")).expect("hset");
    command(port, &format!("HSET rl:s:{{older}}:60 w {} n 9 m 5", w - 1)).expect("hset");
    let (_, r) = reserve_ok(
        &app,
        vec![
            span(lease("s", "old", 10, minute, 5, false), 3),
            lease("s", "older", 10, minute, 0, false),
            lease("s", "older", 10, minute, 0, true),
        ],
    )
    .await;
    assert_eq!(grant(&r[0]), (3, 10, w, 3), "w has room for 3, w + 1 for 7");
    assert_eq!(fields("rl:s:{old}:60"), format!("{w} 10 6 3 0 0"));
    assert_eq!(grant(&r[1]), (0, 5, w, 1), "m of w - 1 is the count of w");
    assert_eq!(grant(&r[2]), (0, 0, w + 1, 1));
}
