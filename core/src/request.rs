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
    fn body(&mut self) -> Option<Vec<u8>> {
        None
    }
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
    fn body(&mut self) -> Option<Vec<u8>> {
        self.body.clone()
    }
}
