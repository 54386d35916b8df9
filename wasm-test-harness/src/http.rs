//! A small blocking HTTP/1.1 client for tests.
//!
//! Each call opens one connection, sends exactly the headers given (adding
//! `Host` only when the caller did not), never retries and gives up after
//! 10 seconds. Header names in the [`Response`] are lowercase.

use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

const TIMEOUT: Duration = Duration::from_secs(10);

/// A complete HTTP response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    /// `(name, value)` pairs in arrival order, names lowercase.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    /// First value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body parsed as JSON.
    pub fn json(&self) -> anyhow::Result<serde_json::Value> {
        serde_json::from_str(&self.body)
            .with_context(|| format!("response body is not JSON: {:.200}", self.body))
    }
}

/// `GET url` with extra `headers`.
pub fn get(url: &str, headers: &[(&str, &str)]) -> anyhow::Result<Response> {
    request("GET", url, headers, "")
}

/// Sends one request and waits for the whole response.
pub fn request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: impl AsRef<[u8]>,
) -> anyhow::Result<Response> {
    let req = build(method, url, headers, Bytes::copy_from_slice(body.as_ref()))?;
    let run = move || -> anyhow::Result<Response> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async { tokio::time::timeout(TIMEOUT, send(req)).await? })
            .with_context(|| format!("{method} {url}"))
    };
    // A runtime cannot be started inside another one: hop to a plain thread.
    if tokio::runtime::Handle::try_current().is_ok() {
        std::thread::scope(|s| s.spawn(run).join())
            .map_err(|_| anyhow!("HTTP client thread panicked"))?
    } else {
        run()
    }
}

fn build(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> anyhow::Result<Request<Full<Bytes>>> {
    let uri: hyper::Uri = url.parse().with_context(|| format!("bad URL {url}"))?;
    if uri.scheme_str() != Some("http") {
        bail!("only http:// URLs are supported: {url}");
    }
    let authority = uri
        .authority()
        .ok_or_else(|| anyhow!("URL has no host: {url}"))?
        .clone();
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let mut builder = Request::builder().method(method).uri(path);
    if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("host")) {
        builder = builder.header("host", authority.as_str());
    }
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let mut req = builder.body(Full::new(body))?;
    req.extensions_mut().insert(authority);
    Ok(req)
}

async fn send(req: Request<Full<Bytes>>) -> anyhow::Result<Response> {
    let authority = req
        .extensions()
        .get::<hyper::http::uri::Authority>()
        .ok_or_else(|| anyhow!("request without target"))?;
    let port = authority.port_u16().unwrap_or(80);
    let stream = TcpStream::connect((authority.host(), port)).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    let driver = tokio::spawn(conn);
    let resp = sender.send_request(req).await?;
    let status = resp.status().as_u16();
    let headers = resp
        .headers()
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = resp.into_body().collect().await?.to_bytes();
    driver.abort();
    Ok(Response {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}
