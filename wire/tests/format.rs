//! The format on its own: defaults, what is skipped when default, and
//! strict requests against tolerant replies. Both sides' use of it is
//! `counter/tests/wire_contract.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: failing loudly is the point.

use serde_json::json;
use sluice_wire::{BlockRequest, LeaseReply, LeaseRequest, ReserveReply, ReserveRequest};

#[test]
fn optional_request_fields_have_their_old_meaning_and_are_sent_only_when_used() {
    let v =
        json!({"leases": [{"rule": "r", "id": "t", "limit": 10, "window_ms": 1000, "want": 1}]});
    let req: ReserveRequest = serde_json::from_value(v).expect("reads");
    let l = &req.leases[0];
    assert_eq!(req.instance, "");
    assert_eq!((l.next, l.windows, l.release, l.from), (false, 1, 0, None));
    let sent = serde_json::to_value(&req).expect("writes");
    assert_eq!(
        sent,
        json!({"instance": "", "leases": [{"rule": "r", "id": "t", "limit": 10, "window_ms": 1000, "want": 1, "next": false}]})
    );
    let back = LeaseRequest {
        want: 0,
        windows: 2,
        release: 3,
        from: Some(0),
        ..l.clone()
    };
    assert_eq!(
        serde_json::to_value(&back).expect("writes"),
        json!({"rule": "r", "id": "t", "limit": 10, "window_ms": 1000, "want": 0, "next": false,
               "windows": 2, "release": 3, "from": 0})
    );
}

#[test]
fn requests_are_strict_and_replies_tolerant() {
    let unknown = json!({"leases": [{"rule": "r", "id": "t", "limit": 10, "window_ms": 1000, "want": 1, "x": 1}]});
    assert!(serde_json::from_value::<ReserveRequest>(unknown).is_err());
    let unknown = json!({"blocks": [], "x": 1});
    assert!(serde_json::from_value::<BlockRequest>(unknown).is_err());
    let reply = json!({"leases": [{"granted": 1, "used": 2, "window": 3, "starts_in_ms": 0, "ends_in_ms": 4, "x": 1}], "y": 2});
    let reply: ReserveReply = serde_json::from_value(reply).expect("reads");
    assert_eq!(reply.now_ms, 0);
    assert_eq!(
        reply.leases,
        [LeaseReply {
            granted: 1,
            used: 2,
            limit: 0,
            window: 3,
            windows: 1,
            starts_in_ms: 0,
            ends_in_ms: 4,
            blocked_ms: 0,
            current_used: 0
        }]
    );
}
