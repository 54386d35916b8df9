//! JSON-RPC 2.0 requests as MCP clients send them over Streamable HTTP
//! (`POST /mcp`): per call, the `method`, the `id` to answer with, and for
//! `tools/call` the tool (`params.name`). This module reads bodies only; it
//! owns no policy and no reply (see `limiter` and `response`).
//!
//! Bodies are hostile. What is read:
//! - a body of at most the filter's bound (64 KiB; larger ones are never
//!   handed to the core), parsed once: the parts read are shallow, and
//!   what is skipped (arguments, results) serde_json skips without
//!   recursion, so deep nesting costs time linear in its size and no stack;
//! - an object is one message, an array a batch of at most [`MAX_CALLS`]
//!   messages (an empty or larger batch is not JSON-RPC here);
//! - a message with a string `method` is a call: a request when it has an
//!   `id` (even `null`), a notification when it has none; a message with
//!   `result` or `error` and no `method` is a client's response to a server
//!   request and is no call; anything else makes the body not JSON-RPC;
//! - an `id` is echoed when it is a string of at most [`MAX_ID_LEN`] bytes or
//!   an integer; any other id (long, fractional, an object) is answered
//!   with `null`, as JSON-RPC does for an id it could not read;
//! - `jsonrpc: "2.0"` is not required: a server may be lenient, so a client
//!   must not escape method rules by leaving it out;
//! - a key given twice (`method`, `id`, `params`, `params.name`) counts
//!   with its last value, as most JSON readers (Python's, JavaScript's) do.
//!
//! Nothing else is kept: no JSON tree is built, keys are borrowed from
//! the body, and a decision parses its body once (see `limiter::attrs`).

use std::fmt;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// Most calls a batch may carry; a larger one is not read as JSON-RPC.
pub const MAX_CALLS: usize = 64;
/// Longest string id echoed in an answer (bytes); a longer one gets `null`.
pub const MAX_ID_LEN: usize = 256;

/// A request's id, as it goes back in the answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Id {
    /// An integer, as written.
    Number(String),
    String(String),
    /// `null`, or an id that cannot be echoed.
    Null,
}

impl Id {
    /// The id as JSON text.
    pub fn to_json(&self) -> String {
        match self {
            Id::Number(n) => n.clone(),
            Id::String(s) => serde_json::to_string(s).unwrap_or_else(|_| "null".to_string()),
            Id::Null => "null".to_string(),
        }
    }
}

/// One JSON-RPC call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Call {
    pub method: String,
    /// `None`: a notification (no answer expected).
    pub id: Option<Id>,
    /// `params.name` of a `tools/call`, when it is a string.
    pub tool: Option<String>,
}

/// A JSON-RPC body: one message or a batch.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Message {
    /// The calls, in order (responses to server requests are left out).
    pub calls: Vec<Call>,
    /// The body was an array: answers go back as an array.
    pub batch: bool,
}

/// Parses a request body; `None` when it is not JSON-RPC (not JSON, not
/// JSON-RPC's shape, an empty batch, or more than [`MAX_CALLS`] messages).
pub fn parse(body: &[u8]) -> Option<Message> {
    serde_json::from_slice::<Message>(body).ok()
}

/// The `Mcp-Method` / `Mcp-Name` headers (the newer MCP revision's copies of
/// the method and the tool) disagree with the body; `false` when absent.
/// Only a single call is compared: a batch has no one method.
pub fn headers_disagree(msg: &Message, mcp_method: Option<&str>, mcp_name: Option<&str>) -> bool {
    let [call] = msg.calls.as_slice() else { return false };
    let method = mcp_method.is_some_and(|m| m.trim() != call.method);
    let name = mcp_name.is_some_and(|n| call.tool.as_deref() != Some(n.trim()));
    method || name
}

/// `pattern` matches `text`: `*` stands for any run of characters, the
/// rest compares without regard to ASCII case. Only the last `*` is ever
/// retried, so the cost is at most pattern × text, never exponential.
pub fn glob(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    // Every rule's match asks, mostly of a name or a prefix that differs
    // at once: the first byte, then the shapes policies use compared
    // whole, a name (`tools/call`) and a prefix (`notion*`).
    if let (Some(&a), Some(&b)) = (p.first(), t.first()) {
        if a != b'*' && !a.eq_ignore_ascii_case(&b) {
            return false;
        }
    }
    // Byte for byte first: names are mostly written as sent.
    let same = |a: &[u8], b: &[u8]| a == b || a.eq_ignore_ascii_case(b);
    match p.iter().position(|&b| b == b'*') {
        None => return same(p, t),
        Some(star) if star == p.len().saturating_sub(1) => {
            let head = p.get(..star).unwrap_or_default();
            return t.get(..star).is_some_and(|t| same(t, head));
        }
        Some(_) => {}
    }
    let (mut pi, mut ti) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match (p.get(pi), t.get(ti)) {
            (Some(b'*'), _) => {
                star = Some((pi, ti));
                pi = pi.saturating_add(1);
            }
            (Some(a), Some(b)) if a.eq_ignore_ascii_case(b) => {
                pi = pi.saturating_add(1);
                ti = ti.saturating_add(1);
            }
            _ => match star {
                Some((sp, st)) => {
                    pi = sp.saturating_add(1);
                    ti = st.saturating_add(1);
                    star = Some((sp, ti));
                }
                None => return false,
            },
        }
    }
    p.get(pi..).is_some_and(|rest| rest.iter().all(|&b| b == b'*'))
}

impl<'de> de::Deserialize<'de> for Message {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Message, D::Error> {
        d.deserialize_any(MessageVisitor)
    }
}

struct MessageVisitor;

impl<'de> Visitor<'de> for MessageVisitor {
    type Value = Message;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON-RPC message or a batch of them")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Message, A::Error> {
        let calls = CallVisitor.visit_map(map)?.into_iter().collect();
        Ok(Message { calls, batch: false })
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Message, A::Error> {
        let mut calls = Vec::new();
        let mut n = 0usize;
        while let Some(one) = seq.next_element::<Entry>()? {
            n = n.saturating_add(1);
            if n > MAX_CALLS {
                return Err(de::Error::custom(format!("a batch of more than {MAX_CALLS} messages")));
            }
            calls.extend(one.0);
        }
        if n == 0 {
            return Err(de::Error::custom("an empty batch"));
        }
        Ok(Message { calls, batch: true })
    }
}

/// One message of a batch: a call, or a response (no call).
struct Entry(Option<Call>);

impl<'de> de::Deserialize<'de> for Entry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Entry, D::Error> {
        d.deserialize_map(CallVisitor).map(Entry)
    }
}

struct CallVisitor;

impl<'de> Visitor<'de> for CallVisitor {
    type Value = Option<Call>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON-RPC message object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Option<Call>, A::Error> {
        let (mut method, mut id, mut name, mut response) = (None, None, None, false);
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            match key.as_ref() {
                "method" => method = Some(map.next_value::<String>()?),
                "id" => id = Some(map.next_value::<RawId>()?.0),
                "params" => name = map.next_value::<Params>()?.0,
                "result" | "error" => {
                    map.next_value::<IgnoredAny>()?;
                    response = true;
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        match method {
            Some(method) => {
                let tool = if method == "tools/call" { name } else { None };
                Ok(Some(Call { method, id, tool }))
            }
            None if response => Ok(None),
            None => Err(de::Error::custom("neither a call (no method) nor a response")),
        }
    }
}

/// An `id` value, reduced to what can be echoed.
struct RawId(Id);

impl<'de> de::Deserialize<'de> for RawId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<RawId, D::Error> {
        d.deserialize_any(IdVisitor).map(RawId)
    }
}

struct IdVisitor;

impl<'de> Visitor<'de> for IdVisitor {
    type Value = Id;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON-RPC id")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Id, E> {
        Ok(if v.len() <= MAX_ID_LEN { Id::String(v.to_string()) } else { Id::Null })
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Id, E> {
        Ok(Id::Number(v.to_string()))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Id, E> {
        Ok(Id::Number(v.to_string()))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Id, E> {
        Ok(Id::Null)
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Id, E> {
        Ok(Id::Null)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Id, E> {
        Ok(Id::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Id, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Id::Null)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Id, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Id::Null)
    }
}

/// `params`, of which only a string `name` is kept.
struct Params(Option<String>);

impl<'de> de::Deserialize<'de> for Params {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Params, D::Error> {
        d.deserialize_any(ParamsVisitor).map(Params)
    }
}

/// The `visit_*` methods of a visitor whose value is `Option<String>`, for
/// the JSON values that are never it (arrays, null, booleans, numbers):
/// skipped whole, read as `None`.
macro_rules! none_for_other_values {
    () => {
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Option<String>, A::Error> {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok(None)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Option<String>, E> {
            Ok(None)
        }
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<Option<String>, E> {
            Ok(None)
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<Option<String>, E> {
            Ok(None)
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<Option<String>, E> {
            Ok(None)
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Option<String>, E> {
            Ok(None)
        }
    };
}

struct ParamsVisitor;

impl<'de> Visitor<'de> for ParamsVisitor {
    type Value = Option<String>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("JSON-RPC params")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Option<String>, A::Error> {
        let mut name = None;
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            if key == "name" {
                name = map.next_value::<NameValue>()?.0;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(name)
    }
    none_for_other_values!();
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Option<String>, E> {
        Ok(None)
    }
}

/// A tool name: a string, or nothing for any other value.
struct NameValue(Option<String>);

impl<'de> de::Deserialize<'de> for NameValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<NameValue, D::Error> {
        d.deserialize_any(NameVisitor).map(NameValue)
    }
}

struct NameVisitor;

impl<'de> Visitor<'de> for NameVisitor {
    type Value = Option<String>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a tool name")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Option<String>, E> {
        Ok(Some(v.to_string()))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Option<String>, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(None)
    }
    none_for_other_values!();
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    fn call(method: &str, id: Option<Id>, tool: Option<&str>) -> Call {
        Call { method: method.into(), id, tool: tool.map(str::to_string) }
    }
    fn num(n: &str) -> Option<Id> {
        Some(Id::Number(n.into()))
    }

    #[test]
    fn reads_calls() {
        let long = "x".repeat(MAX_ID_LEN + 1);
        let long_id = format!(r#"{{"jsonrpc":"2.0","id":"{long}","method":"ping"}}"#);
        let cases: Vec<(&str, Vec<Call>, bool)> = vec![
            (r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18"}}"#, vec![call("initialize", num("1"), None)], false),
            (
                r#"{"jsonrpc":"2.0","id":"a-1","method":"tools/call","params":{"name":"notion-search","arguments":{"q":"x"}}}"#,
                vec![call("tools/call", Some(Id::String("a-1".into())), Some("notion-search"))],
                false,
            ),
            (r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#, vec![call("notifications/initialized", None, None)], false),
            (r#"{"jsonrpc":"2.0","id":null,"method":"ping"}"#, vec![call("ping", Some(Id::Null), None)], false),
            (r#"{"id":-7,"method":"ping"}"#, vec![call("ping", num("-7"), None)], false),
            (r#"{"id":1.5,"method":"ping"}"#, vec![call("ping", Some(Id::Null), None)], false),
            (r#"{"id":123456789012345678901234567890,"method":"ping"}"#, vec![call("ping", Some(Id::Null), None)], false),
            (r#"{"id":{"a":[1,2]},"method":"ping"}"#, vec![call("ping", Some(Id::Null), None)], false),
            (&long_id, vec![call("ping", Some(Id::Null), None)], false),
            // Only a tools/call has a tool; a name of another type is none.
            (r#"{"id":2,"method":"prompts/get","params":{"name":"p"}}"#, vec![call("prompts/get", num("2"), None)], false),
            (r#"{"id":2,"method":"tools/call","params":{"name":{"x":1}}}"#, vec![call("tools/call", num("2"), None)], false),
            (r#"{"id":2,"method":"tools/call","params":["notion"]}"#, vec![call("tools/call", num("2"), None)], false),
            // A client's answer to a server request is no call.
            (r#"{"jsonrpc":"2.0","id":5,"result":{}}"#, vec![], false),
            (
                r#"[{"id":1,"method":"tools/list"},{"method":"notifications/progress"},{"id":9,"error":{"code":1,"message":"m"}},{"id":"b","method":"tools/call","params":{"name":"gh"}}]"#,
                vec![
                    call("tools/list", num("1"), None),
                    call("notifications/progress", None, None),
                    call("tools/call", Some(Id::String("b".into())), Some("gh")),
                ],
                true,
            ),
        ];
        for (body, calls, batch) in cases {
            assert_eq!(parse(body.as_bytes()), Some(Message { calls, batch }), "{body}");
        }
    }

    #[test]
    fn refuses_what_is_not_json_rpc() {
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        let one = r#"{"id":1,"method":"ping"}"#;
        let too_many = format!("[{}]", vec![one; MAX_CALLS + 1].join(","));
        let cases: Vec<&str> = vec![
            "",
            "not json",
            "\u{feff}{}",
            r#"{"id":1,"method":"ping""#,
            "{}",
            r#"{"id":1}"#,
            r#"{"id":1,"method":7}"#,
            r#"{"id":1,"method":null}"#,
            "[]",
            "[1]",
            "[[]]",
            r#"[{"id":1,"method":"ping"},"x"]"#,
            "42",
            r#""tools/call""#,
            "null",
            &deep,
            &too_many,
        ];
        for body in cases {
            assert_eq!(parse(body.as_bytes()), None, "{body:.80}");
        }
        let full = format!("[{}]", vec![one; MAX_CALLS].join(","));
        assert_eq!(parse(full.as_bytes()).map(|m| m.calls.len()), Some(MAX_CALLS));
        assert_eq!(parse(&[0xff, 0xfe, b'{']), None, "not UTF-8");
        // What is skipped is skipped without recursion: a body as deep as
        // the 64 KiB bound allows is read, not a stack overflow.
        let deep_params = format!(r#"{{"id":1,"method":"tools/call","params":{{"a":{}1{},"name":"n"}}}}"#, "[".repeat(32_000), "]".repeat(32_000));
        assert_eq!(parse(deep_params.as_bytes()).map(|m| m.calls), Some(vec![call("tools/call", num("1"), Some("n"))]));
    }

    #[test]
    fn a_repeated_key_counts_with_its_last_value() {
        // As most JSON readers do (Python's json, JavaScript's JSON.parse): a
        // client cannot show a rule one method or tool and the server another.
        let cases = [
            (r#"{"id":1,"method":"ping","method":"tools/call","params":{"name":"a","name":"b"}}"#, call("tools/call", num("1"), Some("b"))),
            (r#"{"id":1,"id":"x","method":"ping"}"#, call("ping", Some(Id::String("x".into())), None)),
            (r#"{"method":"tools/call","params":{"name":"a"},"params":{}}"#, call("tools/call", None, None)),
            (r#"{"params":{"name":"a"},"method":"tools/call","id":2}"#, call("tools/call", num("2"), Some("a"))),
        ];
        for (body, want) in cases {
            assert_eq!(parse(body.as_bytes()).map(|m| m.calls), Some(vec![want]), "{body}");
        }
    }

    #[test]
    fn ids_go_back_as_json() {
        assert_eq!(Id::Number("-3".into()).to_json(), "-3");
        assert_eq!(Id::String("a\"b".into()).to_json(), r#""a\"b""#);
        assert_eq!(Id::Null.to_json(), "null");
    }

    #[test]
    fn globs() {
        let cases = [
            ("notion*", "notion-search", true),
            ("notion*", "NOTION", true),
            ("notion*", "not", false),
            ("tools/call", "tools/call", true),
            ("tools/call", "tools/call2", false),
            ("notifications/*", "notifications/initialized", true),
            ("*search", "notion-search", true),
            ("*search", "search-notion", false),
            ("a*b*c", "axxbyyc", true),
            ("a*b*c", "axxbyy", false),
            ("*", "", true),
            ("", "", true),
            ("", "x", false),
            ("**a", "bbba", true),
        ];
        for (p, t, want) in cases {
            assert_eq!(glob(p, t), want, "{p} ~ {t}");
        }
        // Many stars against a long miss stay cheap (no backtracking blow-up).
        let text = "a".repeat(10_000);
        assert!(!glob("*a*a*a*a*a*b", &text));
    }

    #[test]
    fn mcp_headers_are_checked_against_the_body() {
        let one = parse(br#"{"id":1,"method":"tools/call","params":{"name":"notion-search"}}"#).unwrap();
        assert!(!headers_disagree(&one, None, None));
        assert!(!headers_disagree(&one, Some("tools/call"), Some("notion-search")));
        assert!(headers_disagree(&one, Some("tools/list"), None));
        assert!(headers_disagree(&one, Some("tools/call"), Some("github-search")));
        let list = parse(br#"{"id":1,"method":"tools/list"}"#).unwrap();
        assert!(headers_disagree(&list, Some("tools/list"), Some("x")), "a name where the body has no tool");
    }
}
