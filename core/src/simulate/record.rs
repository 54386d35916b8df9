//! One line of the access log that `envoy.yaml` writes, read as a
//! recorded request (see `docs/operations.md`), and the times it carries.

use crate::civil::{civil_from_days, days_from_civil};
use crate::request::MemoryRequest;

use super::{NS_PER_MS, NS_PER_S};

/// One recorded request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Record {
    /// When it arrived: nanoseconds since the epoch.
    pub time_ns: u64,
    pub method: String,
    /// `:path`, with its query.
    pub path: String,
    /// `:authority`, when recorded.
    pub authority: Option<String>,
    /// The TCP peer's address (no port), when recorded.
    pub client_ip: Option<String>,
    /// Headers present on the request (lower-case names).
    pub headers: Vec<(String, String)>,
    /// The request body, for policies that read it.
    pub body: Option<String>,
    /// How long the request took, arrival to the end of its response
    /// (Envoy's `%DURATION%`), when recorded: how long it held the units
    /// of concurrency limits.
    pub duration_ns: Option<u64>,
}

impl Record {
    /// Parses one access-log line: a JSON object with `ts` (epoch seconds
    /// as a string or number, or an RFC 3339 time), `method`, `path`, and
    /// optionally `authority`, `client_ip`, `headers` (an object of strings,
    /// `null` for an absent header), `body` (a string) and `duration_ms` (a
    /// whole number, or a string of one). Other fields (`status`, ...) are
    /// ignored.
    pub fn parse(line: &str) -> Result<Record, String> {
        let value: serde_json::Value = serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
        let obj = value.as_object().ok_or("not a JSON object")?;
        let time_ns = match obj.get("ts") {
            None | Some(serde_json::Value::Null) => return Err("no \"ts\"".into()),
            Some(ts) => parse_time(ts).map_err(|e| format!("\"ts\": {e}"))?,
        };
        let method = text(obj, "method")?.filter(|m| !m.is_empty()).ok_or("no \"method\"")?;
        if !method.bytes().all(|b| b.is_ascii_alphabetic() || b == b'-' || b == b'_') {
            return Err(format!("\"method\": {method:?} is not an HTTP method"));
        }
        let path = text(obj, "path")?.filter(|p| !p.is_empty()).ok_or("no \"path\"")?;
        let authority = text(obj, "authority")?;
        let client_ip = text(obj, "client_ip")?;
        if let Some(ip) = &client_ip {
            if crate::client_ip::peer_ip(ip).is_none() {
                return Err(format!("\"client_ip\": {ip:?} is not an IP address"));
            }
        }
        let mut headers = Vec::new();
        match obj.get("headers") {
            None | Some(serde_json::Value::Null) => {}
            Some(serde_json::Value::Object(map)) => {
                for (name, v) in map {
                    match v {
                        serde_json::Value::Null => {}
                        serde_json::Value::String(s) => headers.push((name.to_ascii_lowercase(), s.clone())),
                        _ => return Err(format!("header {name:?}: not a string or null")),
                    }
                }
            }
            Some(_) => return Err("\"headers\" is not an object".into()),
        }
        let body = text(obj, "body")?;
        let duration_ns = match obj.get("duration_ms") {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::Number(n)) => Some(n.as_u64().ok_or_else(|| format!("\"duration_ms\": {n} is not a whole number of ms"))?),
            Some(serde_json::Value::String(s)) if s == "-" => None,
            Some(serde_json::Value::String(s)) => Some(s.parse::<u64>().map_err(|_| format!("\"duration_ms\": {s:?} is not a whole number of ms"))?),
            Some(_) => return Err("\"duration_ms\" is not a number".into()),
        }
        .map(|ms| ms.saturating_mul(NS_PER_MS));
        Ok(Record { time_ns, method, path, authority, client_ip, headers, body, duration_ns })
    }

    /// The request as the core asks about it.
    pub fn request(&self) -> MemoryRequest {
        MemoryRequest {
            method: self.method.clone(),
            path: self.path.clone(),
            authority: self.authority.clone().unwrap_or_default(),
            headers: self.headers.clone(),
            source_address: self.client_ip.clone().unwrap_or_default(),
            properties: Vec::new(),
            body: self.body.as_ref().map(|b| b.clone().into_bytes()),
        }
    }
}

/// A field that is a string, `null` or absent.
fn text(obj: &serde_json::Map<String, serde_json::Value>, name: &str) -> Result<Option<String>, String> {
    match obj.get(name) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(format!("\"{name}\" is not a string")),
    }
}

/// Times from this one on (2200-01-01T00:00:00Z) are refused, keeping the
/// replay's arithmetic far from the end of `u64` nanoseconds.
const LATEST_NS: u64 = 7_258_118_400 * NS_PER_S;

/// A time as nanoseconds since the epoch: epoch seconds (`1795745929.312`,
/// as a string or a number) or RFC 3339 (`2026-11-26T12:34:45.312Z`),
/// before the year 2200.
pub fn parse_time(value: &serde_json::Value) -> Result<u64, String> {
    let ns = any_time(value)?;
    if ns >= LATEST_NS {
        return Err(format!("{value} is after the year 2200"));
    }
    Ok(ns)
}

fn any_time(value: &serde_json::Value) -> Result<u64, String> {
    match value {
        serde_json::Value::String(s) if s.as_bytes().get(4) == Some(&b'-') => parse_rfc3339(s),
        serde_json::Value::String(s) => parse_epoch(s),
        serde_json::Value::Number(n) => {
            if let Some(secs) = n.as_u64() {
                return secs.checked_mul(NS_PER_S).ok_or_else(|| format!("{n} is too large"));
            }
            let text = n.to_string();
            if text.contains(['e', 'E']) {
                let f = n.as_f64().unwrap_or(-1.0);
                if !(0.0..1.8e10).contains(&f) {
                    return Err(format!("{n} is not epoch seconds"));
                }
                return Ok((f * 1e9).round() as u64);
            }
            parse_epoch(&text)
        }
        _ => Err("not a time: expected epoch seconds or an RFC 3339 string".into()),
    }
}

/// `<seconds>[.<fraction>]`, to the nanosecond.
fn parse_epoch(s: &str) -> Result<u64, String> {
    let bad = || format!("{s:?} is not epoch seconds or an RFC 3339 time");
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    if secs.is_empty() || !secs.bytes().all(|b| b.is_ascii_digit()) || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let secs: u64 = secs.parse().map_err(|_| bad())?;
    secs.checked_mul(NS_PER_S).and_then(|n| n.checked_add(fraction_ns(frac.as_bytes()))).ok_or_else(|| format!("{s:?} is too large"))
}

/// Nanoseconds of the decimal digits after a point (beyond the ninth
/// ignored).
fn fraction_ns(digits: &[u8]) -> u64 {
    let mut scale = 100_000_000u64;
    let mut nanos = 0u64;
    for d in digits.iter().take(9) {
        nanos = nanos.saturating_add(u64::from(d.saturating_sub(b'0')).saturating_mul(scale));
        scale /= 10;
    }
    nanos
}

/// `YYYY-MM-DDTHH:MM:SS[.fraction](Z|+HH:MM|-HH:MM)`.
fn parse_rfc3339(s: &str) -> Result<u64, String> {
    let bad = || format!("{s:?} is not an RFC 3339 time (like 2026-11-26T12:34:45.312Z)");
    let b = s.as_bytes();
    let num = |from: usize, len: usize| -> Result<u32, String> {
        let part = from.checked_add(len).and_then(|end| b.get(from..end)).ok_or_else(bad)?;
        if !part.iter().all(u8::is_ascii_digit) {
            return Err(bad());
        }
        std::str::from_utf8(part).ok().and_then(|p| p.parse().ok()).ok_or_else(bad)
    };
    let sep = |at: usize, want: &[u8]| b.get(at).is_some_and(|c| want.contains(c));
    if !(sep(4, b"-") && sep(7, b"-") && sep(10, b"Tt ") && sep(13, b":") && sep(16, b":")) {
        return Err(bad());
    }
    let (year, month, day) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
    let (hour, minute, second) = (num(11, 2)?, num(14, 2)?, num(17, 2)?);
    if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) || hour > 23 || minute > 59 || second > 60 {
        return Err(bad());
    }
    // After the seconds: an optional fraction, then the offset.
    let rest = b.get(19..).unwrap_or_default();
    let (nanos, rest) = match rest.split_first() {
        Some((b'.', after)) => {
            let digits = after.iter().take_while(|c| c.is_ascii_digit()).count();
            let (fraction, rest) = after.split_at(digits);
            if fraction.is_empty() {
                return Err(bad());
            }
            (fraction_ns(fraction), rest)
        }
        _ => (0, rest),
    };
    let offset_s: i64 = match rest {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] if [h1, h2, m1, m2].iter().all(|c| c.is_ascii_digit()) => {
            let two = |a: &u8, b: &u8| i64::from(a.saturating_sub(b'0')).saturating_mul(10).saturating_add(i64::from(b.saturating_sub(b'0')));
            let (h, m) = (two(h1, h2), two(m1, m2));
            if h > 23 || m > 59 {
                return Err(bad());
            }
            let o = h.saturating_mul(3600).saturating_add(m.saturating_mul(60));
            if *sign == b'+' {
                o
            } else {
                o.saturating_neg()
            }
        }
        _ => return Err(bad()),
    };
    let days = days_from_civil(i64::from(year), month, day).ok_or_else(bad)?;
    let clock = i64::from(hour.saturating_mul(3600).saturating_add(minute.saturating_mul(60)).saturating_add(second));
    let secs = days.checked_mul(86_400).and_then(|d| d.checked_add(clock)).and_then(|s| s.checked_sub(offset_s)).ok_or_else(bad)?;
    let secs = u64::try_from(secs).map_err(|_| format!("{s:?} is before 1970"))?;
    secs.checked_mul(NS_PER_S).and_then(|n| n.checked_add(nanos)).ok_or_else(|| format!("{s:?} is too far ahead"))
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        2 if year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400)) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Nanoseconds since the epoch as RFC 3339 UTC, to the millisecond.
pub fn format_time(ns: u64) -> String {
    let secs = ns / NS_PER_S;
    let (year, month, day) = civil_from_days((secs / 86_400) as i64);
    let rest = secs % 86_400;
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z", rest / 3600, rest / 60 % 60, rest % 60, ns % NS_PER_S / NS_PER_MS)
}
