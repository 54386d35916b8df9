//! The loads of scenario `accuracy` (see [`crate::accuracy`]): offers at a
//! fixed rate to every instance at once, measured over whole windows or
//! window by window ([`measure`], [`measure_windows`]), and a timeline of
//! every answer ([`timeline`]), with the Envoy counters read around them.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use wasm_test_harness::{load_each, Envoy, LoadReport, RequestSpec};

/// Load at one instance: `rate`/s from window `from` to window `to`
/// (exclusive) of a timeline.
pub struct Stretch {
    instance: usize,
    from: u32,
    to: u32,
    rate: f64,
}

impl Stretch {
    pub fn new(instance: usize, from: u32, to: u32, rate: f64) -> Stretch {
        Stretch { instance, from, to, rate }
    }
}

/// One answer of a timeline.
pub struct Answer {
    pub instance: usize,
    /// The request's index among its instance's requests.
    pub index: u64,
    /// The window it arrived in: 0 is the first.
    pub window: i64,
    pub status: u16,
    /// From sending the request to its answer.
    pub took: Duration,
}

/// What [`timeline`] saw.
pub struct Timeline {
    pub responses: Vec<Answer>,
    /// Requests without an answer.
    pub errors: u64,
    /// Counter calls from the start of window 1 until every answer came.
    pub calls: u64,
}

impl Timeline {
    pub fn count(&self, pred: impl Fn(&Answer) -> bool) -> u64 {
        self.responses.iter().filter(|r| pred(r)).count() as u64
    }
}

/// Offers the `stretches` from the next whole second on, without a pause,
/// `connections` keep-alive connections per instance (a request is sent
/// when its time comes and a connection is free). Request `index` of
/// `instance` is `spec(instance, index)`. Each answer is counted in the
/// one-second window in which it arrived (a request held in a queue counts
/// when it is let through); counter calls are counted from the start of
/// window 1 (after the warm-up window 0) until the last answer.
pub fn timeline(envoys: &[Envoy], stretches: &[Stretch], connections: usize, spec: impl Fn(usize, u64) -> RequestSpec + Sync) -> Timeline {
    let schedules: Vec<Vec<Duration>> = (0..envoys.len())
        .map(|instance| {
            let mut at = Vec::new();
            for s in stretches.iter().filter(|s| s.instance == instance) {
                let (from, to) = (f64::from(s.from), f64::from(s.to));
                let mut k = 0u64;
                loop {
                    let t = from + k as f64 / s.rate;
                    if t >= to {
                        break;
                    }
                    at.push(Duration::from_secs_f64(t));
                    k += 1;
                }
            }
            at.sort();
            at
        })
        .collect();
    align_to_second();
    let (start, now) = (Instant::now(), unix_seconds(SystemTime::now()));
    let first_second = now.floor();
    // When window 0 began, on the monotonic clock.
    let window_start = start.checked_sub(Duration::from_secs_f64(now - first_second)).unwrap_or(start);
    let answers = Mutex::new(Vec::new());
    let errors = AtomicU64::new(0);
    let mut calls_before = 0;
    std::thread::scope(|s| {
        for (instance, schedule) in schedules.iter().enumerate() {
            let next = std::sync::Arc::new(AtomicU64::new(0));
            let port = envoys[instance].port();
            for _ in 0..connections {
                let (next, answers, errors, spec) = (next.clone(), &answers, &errors, &spec);
                s.spawn(move || {
                    let mut conn = None;
                    let mut mine = Vec::new();
                    loop {
                        let index = next.fetch_add(1, Ordering::Relaxed);
                        let Some(at) = schedule.get(index as usize) else { break };
                        if let Some(wait) = (window_start + *at).checked_duration_since(Instant::now()) {
                            std::thread::sleep(wait);
                        }
                        let sent = Instant::now();
                        match exchange(&mut conn, port, &spec(instance, index)) {
                            Ok(status) => {
                                let window = (unix_seconds(SystemTime::now()) - first_second).floor() as i64;
                                mine.push(Answer { instance, index, window, status, took: sent.elapsed() });
                            }
                            Err(_) => {
                                conn = None;
                                errors.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                    if let Ok(mut all) = answers.lock() {
                        all.extend(mine);
                    }
                });
            }
        }
        if let Some(wait) = (window_start + Duration::from_secs(1)).checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        calls_before = counter_calls(envoys);
    });
    let calls = counter_calls(envoys) - calls_before;
    Timeline { responses: answers.into_inner().unwrap_or_default(), errors: errors.into_inner(), calls }
}

fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// One request on a keep-alive connection to 127.0.0.1:`port` (opened if
/// there is none); the answer's status. The connection is kept unless the
/// answer closes it.
fn exchange(conn: &mut Option<BufReader<TcpStream>>, port: u16, spec: &RequestSpec) -> std::io::Result<u16> {
    let reader = match conn {
        Some(r) => r,
        None => {
            let stream = TcpStream::connect(("127.0.0.1", port))?;
            stream.set_nodelay(true)?;
            stream.set_read_timeout(Some(Duration::from_secs(10)))?;
            conn.insert(BufReader::new(stream))
        }
    };
    let mut head = format!("{} {} HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\ncontent-length: 0\r\n", spec.method, spec.path);
    for (name, value) in &spec.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    reader.get_mut().write_all(head.as_bytes())?;
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string());
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Err(bad("connection closed"));
    }
    let status: u16 = line.split_whitespace().nth(1).and_then(|s| s.parse().ok()).ok_or_else(|| bad("no status"))?;
    let (mut length, mut chunked, mut close) = (0usize, false, false);
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Err(bad("connection closed in the headers"));
        }
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        let Some((name, value)) = header.split_once(':') else { continue };
        let value = value.trim().to_ascii_lowercase();
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => length = value.parse().map_err(|_| bad("content-length"))?,
            "transfer-encoding" => chunked = value.contains("chunked"),
            "connection" => close = value.contains("close"),
            _ => {}
        }
    }
    if chunked {
        loop {
            line.clear();
            reader.read_line(&mut line)?;
            let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16).map_err(|_| bad("chunk size"))?;
            if size == 0 {
                // Trailers, up to the empty line.
                loop {
                    line.clear();
                    if reader.read_line(&mut line)? == 0 || line.trim_end().is_empty() {
                        break;
                    }
                }
                break;
            }
            std::io::copy(&mut reader.by_ref().take(size as u64 + 2), &mut std::io::sink())?;
        }
    } else {
        std::io::copy(&mut reader.by_ref().take(length as u64), &mut std::io::sink())?;
    }
    if close {
        *conn = None;
    }
    Ok(status)
}

/// Offers `rate`/s of `spec` to every instance: one window of warm-up,
/// then `windows` windows each measured on its own. Returns the
/// admissions per window, the requests answered, the counter calls made
/// and the requests that got no answer.
pub fn measure_windows(envoys: &[Envoy], rate: f64, spec: &RequestSpec, windows: u32) -> (Vec<u64>, u64, u64, u64) {
    align_to_second();
    offer_for(envoys, rate, Duration::from_millis(950), spec);
    let before = counter_calls(envoys);
    let (mut offered, mut errors) = (0, 0);
    let per_window = (0..windows)
        .map(|_| {
            align_to_second();
            let reports = offer_for(envoys, rate, Duration::from_millis(935), spec);
            offered += reports.iter().map(LoadReport::responses).sum::<u64>();
            errors += reports.iter().map(|r| r.errors).sum::<u64>();
            reports.iter().map(|r| r.count(200)).sum()
        })
        .collect();
    (per_window, offered, counter_calls(envoys) - before, errors)
}

/// Offers `rate`/s of `spec` to every instance: one window of warm-up, then
/// `windows` whole windows. Returns the instances' reports merged and the
/// counter calls made meanwhile.
pub fn measure(envoys: &[Envoy], rate: f64, spec: RequestSpec, windows: u32) -> (LoadReport, u64) {
    let (all, grown) = measure_counting(envoys, rate, &spec, windows, &[COUNTER_CALLS]);
    (all, grown[0])
}

/// [`measure`], with how much each of Envoy's counters `stats` grew over
/// the measured windows, summed over the instances.
pub fn measure_counting(envoys: &[Envoy], rate: f64, spec: &RequestSpec, windows: u32, stats: &[&str]) -> (LoadReport, Vec<u64>) {
    align_to_second();
    offer(envoys, rate, 1, spec);
    align_to_second();
    let before = stat_sums(envoys, stats);
    let reports = offer(envoys, rate, windows, spec);
    let after = stat_sums(envoys, stats);
    let mut all = LoadReport::default();
    for r in reports {
        for (status, n) in r.statuses {
            *all.statuses.entry(status).or_default() += n;
        }
        all.errors += r.errors;
    }
    (all, after.iter().zip(&before).map(|(a, b)| a.saturating_sub(*b)).collect())
}

fn offer(envoys: &[Envoy], rate: f64, secs: u32, spec: &RequestSpec) -> Vec<LoadReport> {
    offer_for(envoys, rate, Duration::from_secs(u64::from(secs)), spec)
}

fn offer_for(envoys: &[Envoy], rate: f64, span: Duration, spec: &RequestSpec) -> Vec<LoadReport> {
    let ports: Vec<u16> = envoys.iter().map(Envoy::port).collect();
    load_each(&ports, rate, span, spec).into_iter().map(Result::unwrap_or_default).collect()
}

/// Envoy's counter of the requests to the counter service.
const COUNTER_CALLS: &str = "cluster.sluice_counter.upstream_rq_total";

/// Calls to the counter service made by every instance so far.
fn counter_calls(envoys: &[Envoy]) -> u64 {
    stat_sums(envoys, &[COUNTER_CALLS])[0]
}

/// Each of Envoy's counters `names`, summed over the instances (0 where an
/// instance has none).
pub fn stat_sums(envoys: &[Envoy], names: &[&str]) -> Vec<u64> {
    let all: Vec<_> = envoys.iter().map(|e| e.stats().unwrap_or_default()).collect();
    names.iter().map(|n| all.iter().map(|stats| stats.get(*n).copied().unwrap_or(0)).sum()).collect()
}

/// Sleeps until just after the next whole second: the counter service
/// counts windows aligned to the clock.
pub fn align_to_second() {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    std::thread::sleep(Duration::from_nanos(u64::from(1_000_000_000 - nanos) + 5_000_000));
}
