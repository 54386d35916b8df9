//! The counter service (`sluice-counter`) as a child process on 127.0.0.1:
//! in-memory by default, or in front of a Redis URL. `kill` and `restart`
//! (same port) let tests simulate outages; it is stopped on drop.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::bail;

use crate::http;
use crate::paths;
use crate::process::{self, ExitedAtStart, Group};

const START_TIMEOUT: Duration = Duration::from_secs(10);

/// How to start a [`Counter`].
#[derive(Debug, Clone, Default)]
pub struct CounterOptions {
    /// Redis URL(s); `None` is the in-memory store.
    pub redis_url: Option<String>,
    /// Treat `redis_url` as comma-separated Redis Cluster seeds.
    pub cluster: bool,
    /// Shared secret the service requires, handed over in its environment
    /// (never on the command line, which every local user can read);
    /// `None` runs it with `--insecure-no-secret`, for stacks that only
    /// listen on loopback.
    pub secret: Option<String>,
    /// The service's timeout for Redis commands (its default otherwise).
    pub redis_timeout_ms: Option<u64>,
    /// Port on 127.0.0.1; 0 picks a free one.
    pub port: u16,
    /// Where stdout/stderr go; `None` discards them.
    pub log_dir: Option<PathBuf>,
}

/// A running (or deliberately killed) counter service.
pub struct Counter {
    opts: CounterOptions,
    group: Option<Group>,
}

/// The `sluice-counter` binary: `$SLUICE_COUNTER`, else the release or
/// debug build under `<repo>/target`.
pub fn counter_binary() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("SLUICE_COUNTER").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    for profile in ["release", "debug"] {
        let path = paths::repo_root()
            .join("target")
            .join(profile)
            .join("sluice-counter");
        if path.is_file() {
            return Ok(path);
        }
    }
    bail!("sluice-counter not built; run `cargo build --release -p sluice-counter` (or set SLUICE_COUNTER)")
}

impl Counter {
    /// Starts the service and waits until `/healthz` answers.
    pub fn start(opts: CounterOptions) -> anyhow::Result<Counter> {
        Counter::start_choosing(opts, paths::free_port)
    }

    /// [`Counter::start`], with `choose` picking the port when
    /// `opts.port` is 0, tried again on a new port when the one chosen was
    /// taken (see [`process::on_fresh_ports`]). A port the caller gave is
    /// never replaced.
    pub fn start_choosing(
        opts: CounterOptions,
        mut choose: impl FnMut() -> u16,
    ) -> anyhow::Result<Counter> {
        let start = |port: u16| {
            let mut counter = Counter {
                opts: CounterOptions {
                    port,
                    ..opts.clone()
                },
                group: None,
            };
            counter.restart().map(|()| counter)
        };
        if opts.port != 0 {
            return start(opts.port);
        }
        process::on_fresh_ports(|| start(choose()), ExitedAtStart::is)
    }

    pub fn port(&self) -> u16 {
        self.opts.port
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.opts.port)
    }

    /// Kills the service at once (SIGKILL); a no-op if it is not running.
    pub fn kill(&mut self) {
        if let Some(mut group) = self.group.take() {
            group.kill();
        }
    }

    /// (Re)starts the service on the same port.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        let bin = counter_binary()?;
        let mut cmd = Command::new(&bin);
        cmd.args(["--listen", &format!("127.0.0.1:{}", self.opts.port)]);
        if let Some(url) = &self.opts.redis_url {
            cmd.args(["--redis-url", url]);
        }
        if self.opts.cluster {
            cmd.arg("--cluster");
        }
        if let Some(ms) = self.opts.redis_timeout_ms {
            cmd.args(["--redis-timeout-ms", &ms.to_string()]);
        }
        match &self.opts.secret {
            Some(secret) => {
                cmd.env(crate::ecds::COUNTER_SECRET_ENV, secret);
            }
            None => {
                cmd.env_remove(crate::ecds::COUNTER_SECRET_ENV)
                    .arg("--insecure-no-secret");
            }
        }
        cmd.env_remove("SLUICE_COUNTER_SECRET_FILE");
        let logs = self
            .opts
            .log_dir
            .as_ref()
            .map(|d| (d.join("counter.stdout.log"), d.join("counter.stderr.log")));
        let mut group = Group::spawn(
            cmd,
            logs.as_ref().map(|(o, e)| (o.as_path(), e.as_path())),
            Duration::from_secs(2),
        )?;
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if http::get(&self.url("/healthz"), &[]).is_ok_and(|r| r.status == 200) {
                break;
            }
            if let Some(status) = group.exited() {
                return Err(ExitedAtStart {
                    bin,
                    status,
                    port: self.opts.port,
                }
                .into());
            }
            if Instant::now() > deadline {
                bail!(
                    "counter service on port {} not healthy after {START_TIMEOUT:?}",
                    self.opts.port
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.group = Some(group);
        Ok(())
    }
}

impl Drop for Counter {
    fn drop(&mut self) {
        if let Some(mut group) = self.group.take() {
            group.terminate();
        }
    }
}

/// A fresh secret for a stack's counter service: 32 hex digits from the
/// kernel's random source.
pub fn random_secret() -> anyhow::Result<String> {
    use std::io::Read;
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// `policy_json` with `global.secret_env` naming
/// [`COUNTER_SECRET_ENV`](crate::COUNTER_SECRET_ENV) when its `global`
/// section gives no secret of its own, so that a stack whose counter
/// service requires a secret can run any policy; other policies are
/// returned unchanged.
pub fn policy_with_secret_env(policy_json: &str) -> anyhow::Result<String> {
    let mut doc: serde_json::Value = serde_json::from_str(policy_json)?;
    let Some(global) = doc
        .get_mut("global")
        .and_then(serde_json::Value::as_object_mut)
    else {
        return Ok(policy_json.to_string());
    };
    if global.contains_key("secret") || global.contains_key("secret_env") {
        return Ok(policy_json.to_string());
    }
    global.insert("secret_env".into(), crate::ecds::COUNTER_SECRET_ENV.into());
    Ok(serde_json::to_string_pretty(&doc)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_fresh_hex() {
        let (a, b) = (
            random_secret().unwrap_or_default(),
            random_secret().unwrap_or_default(),
        );
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }

    #[test]
    fn a_global_section_without_a_secret_gets_the_variable() {
        let with = policy_with_secret_env(r#"{"global": {"timeout": "1s"}, "rules": []}"#)
            .unwrap_or_default();
        let doc: serde_json::Value = serde_json::from_str(&with).unwrap_or_default();
        assert_eq!(doc["global"]["secret_env"], "SLUICE_COUNTER_SECRET");
        assert_eq!(doc["global"]["timeout"], "1s");
        for unchanged in [
            r#"{"rules": []}"#,
            r#"{"global": {"secret": "k"}, "rules": []}"#,
            r#"{"global": {"secret_env": "X"}, "rules": []}"#,
        ] {
            assert_eq!(
                policy_with_secret_env(unchanged).unwrap_or_default(),
                unchanged
            );
        }
        assert!(policy_with_secret_env("not json").is_err());
    }
}
