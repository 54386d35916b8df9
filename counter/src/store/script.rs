//! The Lua scripts: one applies a lease to a counter hash, the other records
//! an upstream block; and the parsing of their replies. They mirror
//! [`window::reserve`](crate::window::reserve),
//! [`window::expires_at_ms`](crate::window::expires_at_ms),
//! [`window::blocked_ms`](crate::window::blocked_ms) and
//! [`window::block_until`](crate::window::block_until).
//!
//! `reserve.lua`:
//! - `KEYS[1]`: the counter key, a hash with fields `w` (window index), `n`
//!   (units reserved in window `w`) and `m` (units reserved in `w + 1`).
//! - `KEYS[2]`: the block key of the counter's rule and id (same hash slot), a
//!   string holding the ms since the epoch at which the block ends.
//! - `ARGV[1]`: window length in ms; `ARGV[2]`: limit; `ARGV[3]`: units
//!   wanted (0 = read only); `ARGV[4]`: `1` to reserve in the next window, `0`
//!   for the current one.
//! - Reply: `{granted, used, window, now_ms, blocked_ms}` (integers), where
//!   `used` is the target window's count after the reservation, `now_ms` is
//!   Redis `TIME` and `blocked_ms` the time left on the block (0: none). While
//!   the block holds, the script only reads (as with `want` 0).
//!
//! It writes only `KEYS[1]` and only when it grants units: it stores all three
//! fields and `PEXPIRE`s the key to the end of the latest window it holds plus
//! max(1 s, window / 10).
//!
//! `block.lua`:
//! - `KEYS[1]`: the block key.
//! - `ARGV[1]`: block for this many ms from Redis `TIME`.
//! - Reply: `{blocked_ms, now_ms}` (integers): the time left on the block
//!   afterwards.
//!
//! It sets the key to now + `ARGV[1]` with a matching `PX`, unless the key
//! already holds that time or a later one; so a block is never shortened, and
//! the key disappears by itself when the block ends.
//!
//! Both scripts touch only keys of one hash tag (cluster-safe). Numbers stay
//! below 2^53, exact in Lua's doubles, and are written with `%.0f` so they
//! never turn into exponent notation.

use ::redis::Value;

use super::StoreError;

/// The reserve script source.
pub const RESERVE_LUA: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local wms = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local nxt = tonumber(ARGV[4])
local blocked = 0
local untl = tonumber(redis.call('GET', KEYS[2]))
if untl ~= nil and untl > now then
  blocked = untl - now
  want = 0
end
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
return {granted, used, cur + nxt, now, blocked}
"#;

/// The block script source.
pub const BLOCK_LUA: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local untl = now + tonumber(ARGV[1])
local old = tonumber(redis.call('GET', KEYS[1]))
if old ~= nil and old >= untl then
  untl = old
else
  redis.call('SET', KEYS[1], string.format('%.0f', untl),
    'PX', string.format('%.0f', untl - now))
end
return {untl - now, now}
"#;

/// A script's reply as `N` non-negative integers.
fn numbers<const N: usize>(value: &Value) -> Result<[u64; N], StoreError> {
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
    <[u64; N]>::try_from(numbers).map_err(|_| garbage())
}

/// The reserve script's reply as numbers: (granted, used, window, now_ms,
/// blocked_ms).
pub fn parse_reply(value: &Value) -> Result<(u64, u64, u64, u64, u64), StoreError> {
    let [granted, used, window, now_ms, blocked_ms] = numbers(value)?;
    Ok((granted, used, window, now_ms, blocked_ms))
}

/// The block script's reply as numbers: (blocked_ms, now_ms).
pub fn parse_block_reply(value: &Value) -> Result<(u64, u64), StoreError> {
    let [blocked_ms, now_ms] = numbers(value)?;
    Ok((blocked_ms, now_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_are_checked() {
        let ints = |ns: &[i64]| Value::Array(ns.iter().map(|n| Value::Int(*n)).collect());
        let ok = ints(&[1, 2, 3, 4, 5]);
        assert_eq!(parse_reply(&ok).expect("valid"), (1, 2, 3, 4, 5));
        assert!(parse_reply(&Value::Okay).is_err());
        assert!(parse_reply(&ints(&[1])).is_err());
        assert!(
            parse_reply(&ints(&[1, 2, 3, 4])).is_err(),
            "the old 4-item reply"
        );
        assert!(parse_reply(&ints(&[-1; 5])).is_err());
        assert_eq!(parse_block_reply(&ints(&[7, 8])).expect("valid"), (7, 8));
        assert!(parse_block_reply(&ints(&[7])).is_err());
        assert!(parse_block_reply(&ints(&[7, -8])).is_err());
        assert!(parse_block_reply(&Value::Okay).is_err());
    }
}
