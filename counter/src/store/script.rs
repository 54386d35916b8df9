//! The Lua scripts: one applies a lease to a counter hash, the other records
//! an upstream block; and the parsing of their replies. They mirror
//! [`window::reserve_span`](crate::window::reserve_span),
//! [`window::release`](crate::window::release),
//! [`window::expires_at_ms`](crate::window::expires_at_ms),
//! [`window::blocked_ms`](crate::window::blocked_ms) and
//! [`window::block_until`](crate::window::block_until).
//!
//! `reserve.lua`:
//! - `KEYS[1]`: the counter key, a hash with fields `w` (window index), `n`
//!   (units reserved in window `w`), `m` (in `w + 1`), `a2`, `a3` and `a4`
//!   (in `w + 2` to `w + 4`). A missing field counts 0, so a hash holding
//!   only `w`, `n` and `m` (written by an older version) reads as it was.
//! - `KEYS[2]`: the block key of the counter's rule and id (same hash slot), a
//!   string holding the ms since the epoch at which the block ends.
//! - `ARGV[1]`: window length in ms; `ARGV[2]`: limit; `ARGV[3]`: units
//!   wanted (0 = read only); `ARGV[4]`: `1` to reserve from the next window,
//!   `0` from the current one; `ARGV[5]`: number of consecutive windows
//!   covered; `ARGV[6]`: units to give back in each of them (0: not a
//!   release); `ARGV[7]`: the first window given back in; `ARGV[8]`: 0 for
//!   windows of `ARGV[1]` ms, 1 for calendar days, 2 for calendar months;
//!   `ARGV[9]`: the calendar's offset from UTC in minutes, plus 840 (never
//!   negative). Older callers sending `ARGV[1..4]` alone get one window and
//!   no release; without `ARGV[8..9]`, windows of `ARGV[1]` ms. Calendar
//!   windows are counted as [`sluice_wire::calendar`] counts them
//!   (`civil`/`first` are Howard Hinnant's `civil_from_days` and
//!   `days_from_civil`).
//! - Reply: `{granted, used, window, now_ms, blocked_ms}` (integers), where
//!   `used` is the largest count among the windows covered after the
//!   reservation (for a release: the current window's count), `window` the
//!   first window covered (for a release: the current one), `now_ms` is Redis
//!   `TIME` and `blocked_ms` the time left on the block (0: none). While the
//!   block holds, a reservation only reads (as with `want` 0); a release
//!   still gives units back.
//!
//! It writes only `KEYS[1]` and only when it grants units or a release lowers
//! a count: it stores all six fields and `PEXPIRE`s the key to the end of the
//! latest window it holds units for (at least `w`) plus max(1 s, window / 10)
//! (with a calendar, `ARGV[1]` is its longest window: a day, or 31 days).
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
//! never turn into exponent notation (a release's first window may be larger,
//! but then it lies past every window held and changes nothing).

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
local span = tonumber(ARGV[5]) or 1
local give = tonumber(ARGV[6]) or 0
local from = tonumber(ARGV[7]) or 0
local cal = tonumber(ARGV[8]) or 0
local off = ((tonumber(ARGV[9]) or 840) - 840) * 60000
local DAY = 86400000
local function civil(z)
  z = z + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524)
    - math.floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local m = mp < 10 and mp + 3 or mp - 9
  local y = yoe + era * 400
  if m <= 2 then y = y + 1 end
  return y, m
end
local function first(y, m)
  if m <= 2 then y = y - 1 end
  local era = math.floor(y / 400)
  local yoe = y - era * 400
  local doy = math.floor((153 * ((m + 9) % 12) + 2) / 5)
  local doe = yoe * 365 + math.floor(yoe / 4) - math.floor(yoe / 100) + doy
  return era * 146097 + doe - 719468
end
local function index(ms)
  if cal == 0 then return math.floor(ms / wms) end
  local d = math.floor((ms + off) / DAY)
  if cal == 1 then return math.max(d, 0) end
  local y, m = civil(d)
  return math.max((y - 1970) * 12 + m - 1, 0)
end
local function start(i)
  if cal == 0 then return i * wms end
  if cal == 1 then return math.max(i * DAY - off, 0) end
  return math.max(first(1970 + math.floor(i / 12), i % 12 + 1) * DAY - off, 0)
end
local blocked = 0
local untl = tonumber(redis.call('GET', KEYS[2]))
if untl ~= nil and untl > now then
  blocked = untl - now
  want = 0
end
local cur = index(now)
local c = {0, 0, 0, 0, 0}
local h = redis.call('HMGET', KEYS[1], 'w', 'n', 'm', 'a2', 'a3', 'a4')
local w = tonumber(h[1])
if w ~= nil then
  if w > cur then cur = w end
  local d = cur - w
  for i = 1, 5 do
    if d + i <= 5 then c[i] = tonumber(h[1 + d + i]) or 0 end
  end
end
local granted, used, window = 0, 0, cur
local changed = false
if give > 0 then
  for j = 0, span - 1 do
    local k = from + j - cur + 1
    if k >= 1 and k <= 5 then
      local back = math.min(give, c[k])
      if back > 0 then
        c[k] = c[k] - back
        changed = true
      end
    end
  end
  used = c[1]
else
  if span < 1 then span = 1 end
  local first = 1 + nxt
  local last = math.min(first + span - 1, 5)
  granted = want
  for k = first, last do
    if limit - c[k] < granted then granted = limit - c[k] end
  end
  if granted < 0 then granted = 0 end
  for k = first, last do
    c[k] = c[k] + granted
    if c[k] > used then used = c[k] end
  end
  window = cur + nxt
  changed = granted > 0
end
if changed then
  local f = function(x) return string.format('%.0f', x) end
  redis.call('HSET', KEYS[1], 'w', f(cur), 'n', f(c[1]), 'm', f(c[2]),
    'a2', f(c[3]), 'a3', f(c[4]), 'a4', f(c[5]))
  local latest = cur
  for k = 1, 5 do
    if c[k] > 0 then latest = cur + k - 1 end
  end
  local margin = math.max(1000, math.floor(wms / 10))
  redis.call('PEXPIRE', KEYS[1], f(start(latest + 1) + margin - now))
end
return {granted, used, window, now, blocked, c[1]}
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
pub fn parse_reply(value: &Value) -> Result<(u64, u64, u64, u64, u64, u64), StoreError> {
    let [granted, used, window, now_ms, blocked_ms, current] = numbers(value)?;
    Ok((granted, used, window, now_ms, blocked_ms, current))
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
        let ok = ints(&[1, 2, 3, 4, 5, 6]);
        assert_eq!(parse_reply(&ok).expect("valid"), (1, 2, 3, 4, 5, 6));
        assert!(parse_reply(&Value::Okay).is_err());
        assert!(parse_reply(&ints(&[1])).is_err());
        assert!(
            parse_reply(&ints(&[1, 2, 3, 4])).is_err(),
            "the old 4-item reply"
        );
        assert!(
            parse_reply(&ints(&[1, 2, 3, 4, 5])).is_err(),
            "the 5-item reply without the current count"
        );
        assert!(parse_reply(&ints(&[-1; 6])).is_err());
        assert_eq!(parse_block_reply(&ints(&[7, 8])).expect("valid"), (7, 8));
        assert!(parse_block_reply(&ints(&[7])).is_err());
        assert!(parse_block_reply(&ints(&[7, -8])).is_err());
        assert!(parse_block_reply(&Value::Okay).is_err());
    }
}
