//! The counter service's wire contract, written once: the JSON bodies of
//! `POST /v1/reserve` and `POST /v1/block` exactly as they travel, the
//! paths, the secret header and the bounds the service checks. The filter
//! (`sluice-core`'s `counter_api`) writes requests and reads replies with
//! these types; the service (`sluice-counter`) reads requests and writes
//! replies with them.
//!
//! # Compatibility between versions
//!
//! There is no version field: each side's reading rules keep a filter and
//! a service of different versions safe, never admitting more than the
//! service granted.
//!
//! - Requests are read strictly: the service refuses an unknown field with
//!   400 naming it (`leases[0].windows`). A field a newer filter sends to an
//!   older service is therefore never silently ignored; the call is refused,
//!   and the filter grants nothing from a refused call (the requests that
//!   waited for it follow their rule's failure mode).
//! - Optional request fields are sent only when they differ from their
//!   default, and their default is the behaviour from before they existed:
//!   a request that does not use a newer feature is the same bytes as before
//!   it, so an older service serves it, and a newer service reads an older
//!   filter's request as it always did.
//! - Replies are read tolerantly: the filter ignores reply fields it does
//!   not know, and fields added after the first version have defaults for
//!   older services. A service must therefore express every refusal in the
//!   fields every filter reads (`granted` is 0 while a key is blocked), and a
//!   reply field may only add information.
//! - A reply field that confirms a request field is checked by the filter
//!   against what it asked: `windows` (1 when absent) must equal the span
//!   asked, so a service that ignored `windows` is never believed to have
//!   reserved several windows.
//!
//! So: upgrade every counter replica before the filters that use a new
//! request field. A newer service answers older filters unchanged.

#![cfg_attr(
    not(test),
    deny(clippy::arithmetic_side_effects, clippy::indexing_slicing)
)]

use serde::{Deserialize, Serialize};

pub mod calendar;
pub mod civil;

pub use calendar::Calendar;

/// Where reservations are asked.
pub const RESERVE_PATH: &str = "/v1/reserve";
/// Where upstream blocks are shared.
pub const BLOCK_PATH: &str = "/v1/block";
/// The header carrying the service's shared secret, when it has one.
pub const SECRET_HEADER: &str = "x-sluice-secret";

/// Largest request body the service reads (413 beyond).
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Longest `instance`, in bytes.
pub const MAX_INSTANCE: usize = 64;
/// Most leases in one reserve request.
pub const MAX_LEASES: usize = 256;
/// Most blocks in one block request.
pub const MAX_BLOCKS: usize = 256;
/// Longest rule name, in bytes (of `[A-Za-z0-9_-]`).
pub const MAX_RULE: usize = 64;
/// Longest key id, in bytes.
pub const MAX_ID: usize = 1024;
/// Largest `limit` (units per window).
pub const MAX_LIMIT: u64 = 1_000_000_000;
/// Longest `window_ms` of a lease without a calendar: seven days.
pub const MAX_WINDOW_MS: u64 = 7 * 24 * 3_600_000;
/// Most consecutive windows one lease covers (`windows`): the service keeps
/// the current window and four ahead.
pub const MAX_WINDOWS: u64 = 4;
/// Longest block the service accepts (`for_ms`): one hour.
pub const SERVICE_MAX_BLOCK_MS: u64 = 3_600_000;
/// Longest upstream block a filter shares, or believes from a reply's
/// `blocked_ms`: five minutes, well within [`SERVICE_MAX_BLOCK_MS`], so that
/// a service (or an upstream) can never hold a key back for longer.
pub const FILTER_MAX_BLOCK_MS: u64 = 300_000;

const _: () = assert!(FILTER_MAX_BLOCK_MS <= SERVICE_MAX_BLOCK_MS);

/// `POST /v1/reserve` request body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReserveRequest {
    /// Who asks (informational, at most [`MAX_INSTANCE`] bytes); may be
    /// omitted.
    #[serde(default)]
    pub instance: String,
    /// What to reserve (1..=[`MAX_LEASES`] items).
    pub leases: Vec<LeaseRequest>,
}

/// One lease wanted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaseRequest {
    /// Rule name: 1..=[`MAX_RULE`] of `[A-Za-z0-9_-]`.
    pub rule: String,
    /// What is limited (tenant, client address...): 1..=[`MAX_ID`] bytes.
    pub id: String,
    /// Units per window: 1..=[`MAX_LIMIT`].
    pub limit: u64,
    /// Window length: 1..=[`MAX_WINDOW_MS`] ms.
    pub window_ms: u64,
    /// Units wanted: 0..=limit; 0 only reads.
    pub want: u64,
    /// Reserve in the window that starts next; may be omitted (false).
    #[serde(default)]
    pub next: bool,
    /// Consecutive windows covered, from the target window (or from `from`
    /// for a release): 1..=[`MAX_WINDOWS`], default 1, sent only above 1. A
    /// reservation grants the same units in each of them.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub windows: u64,
    /// Units given back in each of the `windows` windows from `from`:
    /// 0..=limit, default 0, sent only above 0. Non-zero makes the lease a
    /// release: `want` must be 0 and `next` false.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub release: u64,
    /// Index of the first window given back in: required with `release`
    /// above 0, refused otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<u64>,
    /// Calendar windows (days or months at an offset from UTC, see
    /// [`calendar`]) instead of `floor(ms / window_ms)`; sent only for a
    /// calendar rule. `window_ms` must then be the calendar's longest
    /// window ([`Calendar::window_ms`]), and window indices (`window`,
    /// `from`) count days or months.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calendar: Option<Calendar>,
}

/// `POST /v1/reserve` reply body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReserveReply {
    /// Store time, ms since the epoch (the latest seen across leases). Always
    /// sent; a reader takes 0 when it is absent.
    #[serde(default)]
    pub now_ms: u64,
    /// One result per requested lease, in request order.
    pub leases: Vec<LeaseReply>,
}

/// One lease result. The service sends every field; the defaults are for
/// replies of services from before the field existed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseReply {
    /// Units granted, in each window covered (0 for a release).
    pub granted: u64,
    /// Units reserved after this request: the largest count among the
    /// windows covered (with one window, that window's count); for a
    /// release, the current window's count.
    pub used: u64,
    /// The limit asked with (0 when absent; the filter does not read it).
    #[serde(default)]
    pub limit: u64,
    /// Index of the target window, the first one covered (for a release,
    /// the current window): floor(ms since epoch / window_ms), or the
    /// calendar's day or month.
    pub window: u64,
    /// Windows covered: the `windows` asked with (1 when absent: a service
    /// from before spans, which reserved one window).
    #[serde(default = "one")]
    pub windows: u64,
    /// Ms until `window` starts (0 for the current window).
    pub starts_in_ms: u64,
    /// Ms until `window` ends.
    pub ends_in_ms: u64,
    /// Ms the key (rule, id) stays blocked by `/v1/block`; 0 when it is not
    /// (or the service does not share blocks). While it is, `granted` is 0.
    #[serde(default)]
    pub blocked_ms: u64,
    /// Units reserved in the current window, all instances, after this
    /// request: an instance that reserved the next window learns whether
    /// the current one's budget was all taken (its own answer from earlier
    /// in the window only knew the reservations made before it). 0 when
    /// absent (a service from before spans).
    #[serde(default)]
    pub current_used: u64,
}

/// `POST /v1/block` request body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlockRequest {
    /// Who asks (informational, at most [`MAX_INSTANCE`] bytes); may be
    /// omitted.
    #[serde(default)]
    pub instance: String,
    /// What to block (1..=[`MAX_BLOCKS`] items).
    pub blocks: Vec<KeyBlockRequest>,
}

/// One key to block.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyBlockRequest {
    /// Rule name: 1..=[`MAX_RULE`] of `[A-Za-z0-9_-]`.
    pub rule: String,
    /// What is limited: 1..=[`MAX_ID`] bytes.
    pub id: String,
    /// Block for this many ms from the store's clock:
    /// 1..=[`SERVICE_MAX_BLOCK_MS`] (a filter sends at most
    /// [`FILTER_MAX_BLOCK_MS`]).
    pub for_ms: u64,
}

/// `POST /v1/block` reply body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockReply {
    /// Store time, ms since the epoch (the latest seen across blocks).
    pub now_ms: u64,
    /// One result per requested block, in request order.
    pub blocks: Vec<KeyBlockReply>,
}

/// One block result.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyBlockReply {
    /// Ms the key stays blocked (at least the asked `for_ms`, more when a
    /// longer block was already in place).
    pub blocked_ms: u64,
}

/// The default number of windows a lease covers.
fn one() -> u64 {
    1
}

fn is_one(v: &u64) -> bool {
    *v == 1
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}
