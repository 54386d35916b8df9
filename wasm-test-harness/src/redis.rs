//! A throwaway Redis server on 127.0.0.1 without persistence.
//!
//! Uses `/usr/bin/redis-server` or `$SLUICE_REDIS_SERVER`; readiness is a
//! plain `PING` over TCP. `kill` and `restart` (same port) let tests simulate
//! outages; the server is killed on drop.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::bail;

use crate::paths;
use crate::process::{self, ExitedAtStart, Group};

const START_TIMEOUT: Duration = Duration::from_secs(10);

/// A running (or deliberately killed) Redis server.
pub struct Redis {
    port: u16,
    group: Option<Group>,
}

impl Redis {
    /// Starts Redis on a free port and waits until it answers `PING`.
    /// A port taken before Redis binds it is replaced (see
    /// [`process::on_fresh_ports`]).
    pub fn start() -> anyhow::Result<Redis> {
        process::on_fresh_ports(
            || {
                let mut redis = Redis {
                    port: paths::free_port(),
                    group: None,
                };
                redis.restart().map(|()| redis)
            },
            ExitedAtStart::is,
        )
    }

    /// Port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server at once (SIGKILL); a no-op if it is not running.
    pub fn kill(&mut self) {
        if let Some(mut group) = self.group.take() {
            group.kill();
        }
    }

    /// (Re)starts the server on the same port and waits for `PING`.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        let server = std::env::var_os("SLUICE_REDIS_SERVER")
            .filter(|s| !s.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/usr/bin/redis-server"));
        let mut cmd = Command::new(&server);
        cmd.args([
            "--save",
            "",
            "--appendonly",
            "no",
            "--bind",
            "127.0.0.1",
            "--enable-debug-command",
            "local",
        ])
        .args(["--port", &self.port.to_string(), "--daemonize", "no"]);
        let mut group = Group::spawn(cmd, None, Duration::from_secs(2))?;
        let deadline = Instant::now() + START_TIMEOUT;
        while !self.ping() {
            if let Some(status) = group.exited() {
                return Err(ExitedAtStart {
                    bin: server,
                    status,
                    port: self.port,
                }
                .into());
            }
            if Instant::now() > deadline {
                bail!(
                    "Redis on port {} not answering PING after {START_TIMEOUT:?}",
                    self.port
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.group = Some(group);
        Ok(())
    }

    /// Whether the server answers `PING` with `+PONG`.
    pub fn ping(&self) -> bool {
        let attempt = || -> std::io::Result<bool> {
            let addr = ("127.0.0.1", self.port);
            let mut s = TcpStream::connect(addr)?;
            s.set_read_timeout(Some(Duration::from_secs(1)))?;
            s.write_all(b"PING\r\n")?;
            let mut buf = [0u8; 16];
            let n = s.read(&mut buf)?;
            Ok(buf[..n].starts_with(b"+PONG"))
        };
        attempt().unwrap_or(false)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}
