//! Proleptic Gregorian dates: defined once in `sluice-wire` (the counter
//! service counts calendar windows with the same arithmetic), used here for
//! HTTP dates, RFC 3339 times and the 429 body's `resetAt`.

pub use sluice_wire::civil::{civil_from_days, days_from_civil};
