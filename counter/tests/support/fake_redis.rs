//! A fake Redis that answers `+OK` to every command: a server speaking valid
//! RESP but replying garbage to the counter's script and `PING`.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The fake server; stops accepting when dropped.
pub struct FakeRedis {
    pub port: u16,
    stop: Arc<AtomicBool>,
}

impl FakeRedis {
    pub fn start() -> FakeRedis {
        let listener = TcpListener::bind(("127.0.0.1", 0)).expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("addr").port();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let flag = flag.clone();
                        std::thread::spawn(move || serve(stream, &flag));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        FakeRedis { port, stop }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for FakeRedis {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn serve(mut stream: TcpStream, stop: &AtomicBool) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_millis(100)));
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !stop.load(Ordering::Relaxed) {
        match stream.read(&mut chunk) {
            Ok(0) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => continue,
        }
        while let Some(used) = command_len(&buf) {
            buf.drain(..used);
            if stream.write_all(b"+OK\r\n").is_err() {
                return;
            }
        }
    }
}

/// Length of the first complete RESP array of bulk strings in `buf`.
fn command_len(buf: &[u8]) -> Option<usize> {
    let (count, mut at) = header(buf, 0, b'*')?;
    for _ in 0..count {
        let (len, start) = header(buf, at, b'$')?;
        at = start + len + 2;
        if buf.len() < at {
            return None;
        }
    }
    Some(at)
}

/// Parses `<kind><number>\r\n` at `at`; returns the number and where it ends.
fn header(buf: &[u8], at: usize, kind: u8) -> Option<(usize, usize)> {
    if *buf.get(at)? != kind {
        return None;
    }
    let end = at + buf[at..].windows(2).position(|w| w == b"\r\n")?;
    let n = std::str::from_utf8(&buf[at + 1..end]).ok()?.parse().ok()?;
    Some((n, end + 2))
}
