//! The echo upstream: answers every request with a JSON description of it.
//!
//! Body: `{"method", "path" (with query), "headers": {name: value}}`. Request
//! headers steer the answer: `x-echo-status: NNN` sets the status, each
//! `x-echo-header: name=value` adds a response header (the value
//! percent-decoded, so any byte can be asked for), and
//! `x-echo-delay-ms: N` (at most 10000) delays it.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

const MAX_DELAY_MS: u64 = 10_000;

/// An echo server on 127.0.0.1 running on its own thread; stops on drop.
pub struct EchoServer {
    port: u16,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl EchoServer {
    /// Starts on a free port.
    pub fn start() -> anyhow::Result<EchoServer> {
        let std_listener = std::net::TcpListener::bind(("127.0.0.1", 0))?;
        std_listener.set_nonblocking(true)?;
        let port = std_listener.local_addr()?.port();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("echo-server")
            .enable_all()
            .build()
            .context("building the echo server runtime")?;
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("echo-server".into())
            .spawn(move || {
                rt.block_on(async move {
                    let Ok(listener) = TcpListener::from_std(std_listener) else {
                        return;
                    };
                    tokio::select! {
                        _ = serve_echo(listener) => {}
                        _ = stopped => {}
                    }
                });
                rt.shutdown_timeout(Duration::from_millis(100));
            })?;
        Ok(EchoServer {
            port,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// The port it listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Serves the echo protocol on `listener` until the future is dropped.
pub async fn serve_echo(listener: TcpListener) {
    loop {
        let Ok((stream, _peer)): std::io::Result<(_, SocketAddr)> = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(echo);
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn echo(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let mut headers = serde_json::Map::new();
    for (name, value) in req.headers() {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        match headers.get_mut(name.as_str()) {
            Some(serde_json::Value::String(prev)) => {
                prev.push_str(", ");
                prev.push_str(&value);
            }
            _ => {
                headers.insert(name.as_str().to_string(), value.into());
            }
        }
    }
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let body = serde_json::json!({
        "method": req.method().as_str(),
        "path": path,
        "headers": headers,
    });

    let h = req.headers();
    let delay = h
        .get("x-echo-delay-ms")
        .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok())
        .map(|ms| ms.min(MAX_DELAY_MS));
    let status = h
        .get("x-echo-status")
        .and_then(|v| v.to_str().ok()?.trim().parse::<u16>().ok())
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::OK);
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    for extra in h.get_all("x-echo-header") {
        if let Some((name, value)) = extra.to_str().ok().and_then(parse_header) {
            resp.headers_mut().append(name, value);
        }
    }
    if let Some(ms) = delay {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    Ok(resp)
}

/// `name=value`, the value percent-decoded, so that a test can ask for a
/// value with any byte (`x-bad=%FF%FE`, as hostile upstreams send).
fn parse_header(spec: &str) -> Option<(HeaderName, HeaderValue)> {
    let (name, value) = spec.split_once('=')?;
    let name = HeaderName::from_bytes(name.trim().as_bytes()).ok()?;
    let value: Vec<u8> = percent_encoding::percent_decode_str(value.trim()).collect();
    let value = HeaderValue::from_bytes(&value).ok()?;
    Some((name, value))
}
