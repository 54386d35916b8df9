//! The JSON bodies of `POST /v1/reserve` and `POST /v1/block`, exactly as
//! they travel.

use serde::{Deserialize, Serialize};

/// Request body.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ReserveRequest {
    /// Who asks (informational, at most 64 bytes).
    #[serde(default)]
    pub instance: String,
    /// What to reserve (1..=256 items).
    pub leases: Vec<LeaseRequest>,
}

/// One lease wanted.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LeaseRequest {
    /// Rule name: 1-64 of `[A-Za-z0-9_-]`.
    pub rule: String,
    /// What is limited (tenant, client address...): 1-1024 bytes.
    pub id: String,
    /// Units per window: 1..=1_000_000_000.
    pub limit: u64,
    /// Window length: 1..=604_800_000 ms.
    pub window_ms: u64,
    /// Units wanted: 0..=limit; 0 only reads.
    pub want: u64,
    /// Reserve in the window that starts next.
    #[serde(default)]
    pub next: bool,
    /// Consecutive windows covered, from the target window (or from `from`
    /// for a release): 1..=4, default 1. A reservation grants the same units
    /// in each of them.
    #[serde(default = "one")]
    pub windows: u64,
    /// Units given back in each of the `windows` windows from `from`:
    /// 0..=limit, default 0. Non-zero makes the lease a release: `want` must
    /// be 0 and `next` false.
    #[serde(default)]
    pub release: u64,
    /// Index of the first window given back in: required with `release` > 0,
    /// refused otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<u64>,
}

/// The default number of windows a lease covers.
fn one() -> u64 {
    1
}

/// Reply body.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ReserveReply {
    /// Store time, ms since the epoch (the latest seen across leases).
    pub now_ms: u64,
    /// One result per requested lease, in request order.
    pub leases: Vec<LeaseReply>,
}

/// One lease result.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LeaseReply {
    /// Units granted, in each window covered (0 for a release).
    pub granted: u64,
    /// Units reserved after this request: the largest count among the
    /// windows covered (with one window, that window's count); for a
    /// release, the current window's count.
    pub used: u64,
    /// The limit asked with.
    pub limit: u64,
    /// Index of the target window, the first one covered (for a release,
    /// the current window): floor(ms since epoch / window_ms).
    pub window: u64,
    /// Windows covered: the `windows` asked with (1 when not given).
    #[serde(default = "one")]
    pub windows: u64,
    /// Ms until `window` starts (0 for the current window).
    pub starts_in_ms: u64,
    /// Ms until `window` ends.
    pub ends_in_ms: u64,
    /// Ms the key (rule, id) stays blocked by `/v1/block`; 0 when it is not.
    /// While it is, `granted` is 0.
    #[serde(default)]
    pub blocked_ms: u64,
    /// Units reserved in the current window, all instances, after this
    /// request: an instance that reserved the next window learns whether
    /// the current one's budget was all taken (its own answer from earlier
    /// in the window only knew the reservations made before it).
    #[serde(default)]
    pub current_used: u64,
}

/// `POST /v1/block` request body.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BlockRequest {
    /// Who asks (informational, at most 64 bytes).
    #[serde(default)]
    pub instance: String,
    /// What to block (1..=256 items).
    pub blocks: Vec<KeyBlockRequest>,
}

/// One key to block.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KeyBlockRequest {
    /// Rule name: 1-64 of `[A-Za-z0-9_-]`.
    pub rule: String,
    /// What is limited: 1-1024 bytes.
    pub id: String,
    /// Block for this many ms from the store's clock: 1..=3_600_000.
    pub for_ms: u64,
}

/// `POST /v1/block` reply body.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct BlockReply {
    /// Store time, ms since the epoch (the latest seen across blocks).
    pub now_ms: u64,
    /// One result per requested block, in request order.
    pub blocks: Vec<KeyBlockReply>,
}

/// One block result.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct KeyBlockReply {
    /// Ms the key stays blocked (at least the asked `for_ms`, more when a
    /// longer block was already in place).
    pub blocked_ms: u64,
}
