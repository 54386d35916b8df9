//! The Lua script that applies one lease to one counter hash, and the parsing
//! of its reply. It mirrors [`window::reserve`](crate::window::reserve) and
//! [`window::expires_at_ms`](crate::window::expires_at_ms).
//!
//! `reserve.lua`:
//! - `KEYS[1]`: the counter key, a hash with fields `w` (window index), `n`
//!   (units reserved in window `w`) and `m` (units reserved in `w + 1`).
//! - `ARGV[1]`: window length in ms; `ARGV[2]`: limit; `ARGV[3]`: units
//!   wanted (0 = read only); `ARGV[4]`: `1` to reserve in the next window, `0`
//!   for the current one.
//! - Reply: `{granted, used, window, now_ms}` (integers), where `used` is the
//!   target window's count after the reservation and `now_ms` is Redis `TIME`.
//!
//! The script touches only `KEYS[1]` (cluster-safe) and writes only when it
//! grants units: it stores all three fields and `PEXPIRE`s the key to the end
//! of the latest window it holds plus max(1 s, window / 10). Numbers stay below
//! 2^53, exact in Lua's doubles, and are written with `%.0f` so they never turn
//! into exponent notation.

use ::redis::Value;

use super::StoreError;

/// The script source.
pub const RESERVE_LUA: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local wms = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local nxt = tonumber(ARGV[4])
local cur = math.floor(now / wms)
local h = redis.call('HMGET', KEYS[1], 'w', 'n', 'm')
local w = tonumber(h[1])
local n, m = 0, 0
if w ~= nil then
  if w == cur then
    n = tonumber(h[2]) or 0
    m = tonumber(h[3]) or 0
  elseif w + 1 == cur then
    n = tonumber(h[3]) or 0
  elseif w > cur then
    cur = w
    n = tonumber(h[2]) or 0
    m = tonumber(h[3]) or 0
  end
end
local used = n
if nxt == 1 then used = m end
local granted = limit - used
if want < granted then granted = want end
if granted < 0 then granted = 0 end
if granted > 0 then
  used = used + granted
  if nxt == 1 then m = used else n = used end
  redis.call('HSET', KEYS[1], 'w', string.format('%.0f', cur),
    'n', string.format('%.0f', n), 'm', string.format('%.0f', m))
  local latest = cur
  if m > 0 then latest = cur + 1 end
  local margin = math.max(1000, math.floor(wms / 10))
  redis.call('PEXPIRE', KEYS[1], string.format('%.0f', (latest + 1) * wms + margin - now))
end
return {granted, used, cur + nxt, now}
"#;

/// The script's reply as numbers: (granted, used, window, now_ms).
pub fn parse_reply(value: &Value) -> Result<(u64, u64, u64, u64), StoreError> {
    let garbage = || StoreError::BadReply(format!("{value:?}"));
    let Value::Array(items) = value else {
        return Err(garbage());
    };
    let numbers: Vec<u64> = items
        .iter()
        .map(|item| match item {
            Value::Int(n) => u64::try_from(*n).ok(),
            _ => None,
        })
        .collect::<Option<_>>()
        .ok_or_else(garbage)?;
    match numbers[..] {
        [granted, used, window, now_ms] => Ok((granted, used, window, now_ms)),
        _ => Err(garbage()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_are_checked() {
        let ok = Value::Array(vec![
            Value::Int(1),
            Value::Int(2),
            Value::Int(3),
            Value::Int(4),
        ]);
        assert_eq!(parse_reply(&ok).expect("valid"), (1, 2, 3, 4));
        assert!(parse_reply(&Value::Okay).is_err());
        assert!(parse_reply(&Value::Array(vec![Value::Int(1)])).is_err());
        let negative = Value::Array(vec![Value::Int(-1); 4]);
        assert!(parse_reply(&negative).is_err());
    }
}
