//! What the core may ask about a request. The filter answers from Envoy
//! (headers, attributes); tests and `make simulate` answer from memory.
//! Every answer is optional: a missing value is a normal case.

pub trait Request {
    /// `:method`.
    fn method(&mut self) -> Option<String>;
    /// `:path`, with its query.
    fn path(&mut self) -> Option<String>;
    /// `:authority`.
    fn authority(&mut self) -> Option<String>;
    /// A request header by lower-case name.
    fn header(&mut self, name: &str) -> Option<String>;
    /// An Envoy attribute, e.g. `["source", "address"]`.
    fn property(&mut self, path: &[String]) -> Option<Vec<u8>>;
    /// The request body, when it was read (only for policies that need it).
    /// Borrowed: a decision asks for it once for each use (JSON-RPC, a key,
    /// a cost), and an implementation fetches it once.
    fn body(&mut self) -> Option<&[u8]> {
        None
    }
    /// The body was too large to read (beyond the filter's bound).
    fn body_too_large(&mut self) -> bool {
        false
    }
    /// The host has buffered the whole body, `size` bytes (or the first
    /// `size`, past the bound): what `body` then reads.
    fn body_buffered(&mut self, _size: usize) {}
}

/// A request held in memory.
#[derive(Clone, Debug, Default)]
pub struct MemoryRequest {
    pub method: String,
    pub path: String,
    pub authority: String,
    pub headers: Vec<(String, String)>,
    /// `source.address`, e.g. `10.0.0.1:5555`.
    pub source_address: String,
    pub properties: Vec<(Vec<String>, Vec<u8>)>,
    pub body: Option<Vec<u8>>,
}

impl MemoryRequest {
    pub fn new(method: &str, path: &str) -> MemoryRequest {
        MemoryRequest {
            method: method.into(),
            path: path.into(),
            authority: "localhost".into(),
            source_address: "127.0.0.1:40000".into(),
            ..Default::default()
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> MemoryRequest {
        self.headers.push((name.to_ascii_lowercase(), value.into()));
        self
    }

    pub fn from_address(mut self, source_address: &str) -> MemoryRequest {
        self.source_address = source_address.into();
        self
    }
}

impl Request for MemoryRequest {
    fn method(&mut self) -> Option<String> {
        Some(self.method.clone())
    }
    fn path(&mut self) -> Option<String> {
        Some(self.path.clone())
    }
    fn authority(&mut self) -> Option<String> {
        Some(self.authority.clone())
    }
    fn header(&mut self, name: &str) -> Option<String> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone())
    }
    fn property(&mut self, path: &[String]) -> Option<Vec<u8>> {
        if path == ["source", "address"] {
            return Some(self.source_address.clone().into_bytes());
        }
        self.properties.iter().find(|(p, _)| p == path).map(|(_, v)| v.clone())
    }
    fn body(&mut self) -> Option<&[u8]> {
        self.body.as_deref()
    }
}

/// A header map as proxy-wasm hands it over in one hostcall
/// (`proxy_get_header_map_pairs`): a little-endian `u32` pair count, then
/// each pair's key and value lengths (`u32` each), then each key and value
/// followed by a NUL byte. One crossing for every header a decision reads,
/// instead of one per header.
#[derive(Clone, Debug, Default)]
pub struct HeaderPairs {
    buf: Vec<u8>,
    /// (key start, key end, value start, value end) in `buf`.
    pairs: Vec<(usize, usize, usize, usize)>,
}

impl HeaderPairs {
    /// Bytes of the map as the host sent it.
    pub fn size(&self) -> usize {
        self.buf.len()
    }

    /// Parses `buf`. A malformed map keeps the pairs read before the fault
    /// (a truncated map loses its tail, never a panic).
    pub fn parse(buf: Vec<u8>) -> HeaderPairs {
        let u32_at = |at: usize| crate::little_endian::u32_at(&buf, at).and_then(|v| usize::try_from(v).ok());
        let mut pairs = Vec::new();
        if let Some(n) = u32_at(0) {
            // Never more pairs than the sizes that fit in the buffer.
            let n = n.min(buf.len().saturating_sub(4) / 8);
            // n fits in the buffer's length, so these offsets cannot overflow.
            let mut data = n.saturating_mul(8).saturating_add(4);
            for i in 0..n {
                let size_at = i.saturating_mul(8).saturating_add(4);
                let (Some(klen), Some(vlen)) = (u32_at(size_at), u32_at(size_at.saturating_add(4))) else { break };
                let Some(key_end) = data.checked_add(klen) else { break };
                let Some(value_end) = key_end.checked_add(1).and_then(|s| s.checked_add(vlen)) else { break };
                if value_end >= buf.len() {
                    break;
                }
                // value_end < buf.len(): adding 1 cannot overflow.
                pairs.push((data, key_end, key_end.saturating_add(1), value_end));
                data = value_end.saturating_add(1);
            }
        }
        HeaderPairs { buf, pairs }
    }

    /// The first value of header `name` (ASCII case-insensitive); `None`
    /// when absent or not UTF-8.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs.iter().find_map(|&(ks, ke, vs, ve)| {
            let key = self.buf.get(ks..ke)?;
            if !key.eq_ignore_ascii_case(name.as_bytes()) {
                return None;
            }
            std::str::from_utf8(self.buf.get(vs..ve)?).ok()
        })
    }

    /// Every pair whose name and value are UTF-8, in order; the others
    /// (an upstream may send any byte in a value) are left out.
    pub fn utf8_pairs(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        self.pairs.iter().filter_map(|&(ks, ke, vs, ve)| {
            let key = std::str::from_utf8(self.buf.get(ks..ke)?).ok()?;
            Some((key, std::str::from_utf8(self.buf.get(vs..ve)?).ok()?))
        })
    }

    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serialize(pairs: &[(&str, &str)]) -> Vec<u8> {
        let mut b = (pairs.len() as u32).to_le_bytes().to_vec();
        for (k, v) in pairs {
            b.extend((k.len() as u32).to_le_bytes());
            b.extend((v.len() as u32).to_le_bytes());
        }
        for (k, v) in pairs {
            b.extend(k.as_bytes());
            b.push(0);
            b.extend(v.as_bytes());
            b.push(0);
        }
        b
    }

    #[test]
    fn finds_every_header_by_name_in_any_case_and_the_first_of_repeats() {
        let h = HeaderPairs::parse(serialize(&[
            (":method", "GET"),
            (":path", "/api/v1/items?x=1"),
            ("x-tenant-id", "acme"),
            ("empty", ""),
            ("x-forwarded-for", "10.0.0.1"),
            ("x-forwarded-for", "10.0.0.2"),
        ]));
        assert_eq!(h.len(), 6);
        assert_eq!(h.get(":method"), Some("GET"));
        assert_eq!(h.get(":path"), Some("/api/v1/items?x=1"));
        assert_eq!(h.get("X-Tenant-ID"), Some("acme"));
        assert_eq!(h.get("empty"), Some(""));
        assert_eq!(h.get("x-forwarded-for"), Some("10.0.0.1"));
        assert_eq!(h.get("x-missing"), None);
    }

    #[test]
    fn values_that_are_not_utf8_are_skipped_not_fatal() {
        let mut map = serialize(&[(":status", "429"), ("x-bad", "??"), ("retry-after", "3")]);
        // The value of x-bad becomes 0xff 0xfe, as an upstream may send it.
        let at = map.windows(2).position(|w| w == b"??").unwrap_or(0);
        map[at] = 0xff;
        map[at + 1] = 0xfe;
        let h = HeaderPairs::parse(map);
        assert_eq!(h.len(), 3);
        assert_eq!(h.get("x-bad"), None);
        let pairs: Vec<(&str, &str)> = h.utf8_pairs().collect();
        assert_eq!(pairs, vec![(":status", "429"), ("retry-after", "3")]);
    }

    #[test]
    fn a_malformed_map_keeps_what_was_whole_and_never_panics() {
        let whole = serialize(&[("a", "1"), ("bb", "22"), ("ccc", "333")]);
        // Cut anywhere: the pairs before the cut survive, nothing panics.
        for cut in 0..whole.len() {
            let h = HeaderPairs::parse(whole[..cut].to_vec());
            assert!(h.len() <= 3);
            if h.get("a").is_some() {
                assert_eq!(h.get("a"), Some("1"));
            }
            assert_ne!(h.get("ccc"), Some("333"), "cut at {cut} still had the last pair");
        }
        assert_eq!(HeaderPairs::parse(whole).get("ccc"), Some("333"));
        // A count far beyond the buffer, and lengths that overflow.
        let mut huge = u32::MAX.to_le_bytes().to_vec();
        huge.extend(u32::MAX.to_le_bytes());
        huge.extend(u32::MAX.to_le_bytes());
        assert!(HeaderPairs::parse(huge).is_empty());
        assert!(HeaderPairs::parse(Vec::new()).is_empty());
        // A value that is not UTF-8 is absent, its neighbours are not.
        let mut bad = serialize(&[("x", "\u{e9}"), ("y", "ok")]);
        let at = bad.iter().position(|b| *b == 0xc3).unwrap();
        bad[at] = 0xff;
        let h = HeaderPairs::parse(bad);
        assert_eq!((h.get("x"), h.get("y")), (None, Some("ok")));
    }
}
