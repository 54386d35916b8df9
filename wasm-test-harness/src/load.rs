//! A closed-loop HTTP/1.1 load generator.
//!
//! `connections` keep-alive connections to 127.0.0.1:`port` share one request
//! counter; each request is built from its index by a caller-supplied
//! function. The run ends after `total` requests or after `duration`,
//! whichever comes first, optionally paced to `rate` requests per second
//! overall (by a thread of its own, to the tens of microseconds). Connection failures and timeouts count as errors, never retried.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Builds the request with the given index.
pub type RequestFn = Arc<dyn Fn(u64) -> RequestSpec + Send + Sync>;

/// One request to send (no body).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestSpec {
    pub method: String,
    /// Path and query, e.g. `/api/v1/tools/list?x=1`.
    pub path: String,
    pub headers: Vec<(String, String)>,
}

impl RequestSpec {
    /// `GET path` without extra headers.
    pub fn get(path: &str) -> RequestSpec {
        RequestSpec {
            method: "GET".into(),
            path: path.into(),
            headers: Vec::new(),
        }
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: &str) -> RequestSpec {
        self.headers.push((name.into(), value.into()));
        self
    }
}

/// What to run.
#[derive(Clone)]
pub struct LoadOptions {
    pub port: u16,
    pub connections: usize,
    /// Stop after this many requests.
    pub total: Option<u64>,
    /// Stop after this long.
    pub duration: Option<Duration>,
    /// Overall requests per second; `None` means as fast as possible.
    pub rate: Option<f64>,
    pub request: RequestFn,
    /// Per-request timeout.
    pub timeout: Duration,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            port: 0,
            connections: 16,
            total: None,
            duration: None,
            rate: None,
            request: Arc::new(|_| RequestSpec::get("/")),
            timeout: Duration::from_secs(10),
        }
    }
}

/// Outcome of a run.
#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    /// Responses per status code.
    pub statuses: BTreeMap<u16, u64>,
    /// Requests that got no response (connect failure, reset, timeout).
    pub errors: u64,
    pub elapsed: Duration,
    pub p50_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
}

impl LoadReport {
    /// Responses received (any status).
    pub fn responses(&self) -> u64 {
        self.statuses.values().sum()
    }

    /// Responses with the given status.
    pub fn count(&self, status: u16) -> u64 {
        self.statuses.get(&status).copied().unwrap_or(0)
    }

    /// Responses per second.
    pub fn rps(&self) -> f64 {
        self.responses() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

struct Shared {
    opts: LoadOptions,
    next: AtomicU64,
    deadline: Option<Instant>,
    /// With a rate: one message per request, sent on time by the pacer. A
    /// receiver gets every message sent before the pacer hung up, so no
    /// request released at the end is lost.
    pace: Option<tokio::sync::Mutex<tokio::sync::mpsc::UnboundedReceiver<()>>>,
}

#[derive(Default)]
struct Tally {
    statuses: BTreeMap<u16, u64>,
    errors: u64,
    latencies_us: Vec<u32>,
}

/// Offers `rate` requests/s of `spec` to each of `ports` at once for
/// `span` (8 connections each, one thread per port); one result per port,
/// in order.
pub fn load_each(
    ports: &[u16],
    rate: f64,
    span: Duration,
    spec: &RequestSpec,
) -> Vec<anyhow::Result<LoadReport>> {
    std::thread::scope(|s| {
        let threads: Vec<_> = ports
            .iter()
            .map(|&port| {
                let spec = spec.clone();
                s.spawn(move || {
                    load(LoadOptions {
                        port,
                        connections: 8,
                        duration: Some(span),
                        rate: Some(rate),
                        request: Arc::new(move |_| spec.clone()),
                        ..Default::default()
                    })
                })
            })
            .collect();
        threads
            .into_iter()
            .map(|t| {
                t.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a load thread panicked")))
            })
            .collect()
    })
}

/// Runs the load and reports; blocks until done.
pub fn load(opts: LoadOptions) -> anyhow::Result<LoadReport> {
    if opts.connections == 0 {
        bail!("load: connections must be at least 1");
    }
    if opts.total.is_none() && opts.duration.is_none() {
        bail!("load: give `total` or `duration`");
    }
    if opts.rate.is_some_and(|r| !(r > 0.0 && r.is_finite())) {
        bail!("load: rate must be a positive number");
    }
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(opts.connections);
    let run = move || -> anyhow::Result<LoadReport> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
            .context("building the load runtime")?;
        rt.block_on(run(opts))
    };
    if tokio::runtime::Handle::try_current().is_ok() {
        std::thread::scope(|s| s.spawn(run).join())
            .map_err(|_| anyhow::anyhow!("load thread panicked"))?
    } else {
        run()
    }
}

async fn run(opts: LoadOptions) -> anyhow::Result<LoadReport> {
    let start = Instant::now();
    let deadline = opts.duration.map(|d| start + d);
    let (pace, pacer) = match opts.rate {
        Some(rate) => {
            let (due, pace) = tokio::sync::mpsc::unbounded_channel();
            let total = opts.total;
            let pacer = std::thread::spawn(move || pacer(&due, start, rate, deadline, total));
            (Some(tokio::sync::Mutex::new(pace)), Some(pacer))
        }
        None => (None, None),
    };
    let shared = Arc::new(Shared {
        deadline,
        opts,
        next: AtomicU64::new(0),
        pace,
    });
    let workers: Vec<_> = (0..shared.opts.connections)
        .map(|_| tokio::spawn(worker(shared.clone())))
        .collect();
    let mut all = Tally::default();
    for w in workers {
        let t = w.await?;
        for (status, n) in t.statuses {
            *all.statuses.entry(status).or_default() += n;
        }
        all.errors += t.errors;
        all.latencies_us.extend(t.latencies_us);
    }
    let elapsed = start.elapsed();
    if let Some(p) = pacer {
        p.join()
            .map_err(|_| anyhow::anyhow!("pacer thread panicked"))?;
    }
    all.latencies_us.sort_unstable();
    let pct = |p: f64| -> u64 {
        let l = &all.latencies_us;
        if l.is_empty() {
            return 0;
        }
        let i = ((l.len() as f64 * p).ceil() as usize).clamp(1, l.len()) - 1;
        u64::from(l[i])
    };
    Ok(LoadReport {
        p50_us: pct(0.50),
        p99_us: pct(0.99),
        max_us: pct(1.0),
        statuses: all.statuses,
        errors: all.errors,
        elapsed,
    })
}

async fn worker(shared: Arc<Shared>) -> Tally {
    let opts = &shared.opts;
    let mut tally = Tally::default();
    let mut conn: Option<SendRequest<Full<Bytes>>> = None;
    loop {
        if let Some(pace) = &shared.pace {
            // None once the pacer is done and every due request is taken.
            if pace.lock().await.recv().await.is_none() {
                break;
            }
        }
        let idx = shared.next.fetch_add(1, Ordering::Relaxed);
        if opts.total.is_some_and(|t| idx >= t) {
            break;
        }
        if shared.deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        let sender = match conn.take().filter(|s| !s.is_closed()) {
            Some(s) => s,
            None => match connect(opts.port).await {
                Ok(s) => s,
                Err(_) => {
                    tally.errors += 1;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let req = match build(&(opts.request)(idx), opts.port) {
            Ok(r) => r,
            Err(_) => {
                tally.errors += 1;
                conn = Some(sender);
                continue;
            }
        };
        let began = Instant::now();
        match tokio::time::timeout(opts.timeout, exchange(sender, req)).await {
            Ok(Ok((status, sender))) => {
                let us = began.elapsed().as_micros().min(u128::from(u32::MAX)) as u32;
                tally.latencies_us.push(us);
                *tally.statuses.entry(status).or_default() += 1;
                conn = Some(sender);
            }
            _ => tally.errors += 1,
        }
    }
    tally
}

/// Sends one message per request at `start + idx / rate`, from a thread
/// of its own: tokio's timer counts whole milliseconds, so pacing with it
/// would send every request due within the same millisecond at once (two
/// at a time at 2,000 requests/s, the second queued behind the first in
/// Envoy), and spinning to the microsecond would take the CPU from what
/// shares it with the load (the counter service, Redis). A thread's sleep
/// wakes within tens of microseconds. Hangs up (drops `due`) at the end.
fn pacer(
    due: &tokio::sync::mpsc::UnboundedSender<()>,
    start: Instant,
    rate: f64,
    deadline: Option<Instant>,
    total: Option<u64>,
) {
    let mut idx = 0u64;
    while total.is_none_or(|t| idx < t) {
        let at = start + Duration::from_secs_f64(idx as f64 / rate);
        if deadline.is_some_and(|d| at >= d) {
            break;
        }
        if let Some(wait) = at.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        if due.send(()).is_err() {
            break;
        }
        idx += 1;
    }
}

async fn connect(port: u16) -> anyhow::Result<SendRequest<Full<Bytes>>> {
    let stream = TcpStream::connect(("127.0.0.1", port)).await?;
    stream.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    Ok(sender)
}

async fn exchange(
    mut sender: SendRequest<Full<Bytes>>,
    req: Request<Full<Bytes>>,
) -> anyhow::Result<(u16, SendRequest<Full<Bytes>>)> {
    sender.ready().await?;
    let resp = sender.send_request(req).await?;
    let status = resp.status().as_u16();
    resp.into_body().collect().await?;
    Ok((status, sender))
}

fn build(spec: &RequestSpec, port: u16) -> anyhow::Result<Request<Full<Bytes>>> {
    let mut b = Request::builder()
        .method(spec.method.as_str())
        .uri(spec.path.as_str());
    if !spec
        .headers
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case("host"))
    {
        b = b.header("host", format!("127.0.0.1:{port}"));
    }
    for (name, value) in &spec.headers {
        b = b.header(name.as_str(), value.as_str());
    }
    Ok(b.body(Full::new(Bytes::new()))?)
}
