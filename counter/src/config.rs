//! Command-line flags ([`Args`]) and turning them into the service's
//! [`AppState`]; [`StartError`] says what keeps the service from starting.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;

use crate::api::AppState;
use crate::keys;
use crate::store::{CounterStore, MemoryStore, RedisStore, RedisTarget, StoreError};

/// Sluice's counter service: reserves rate-limit leases for Envoy instances.
#[derive(Clone, Debug, Parser)]
#[command(name = "sluice-counter", version)]
pub struct Args {
    /// Address to serve HTTP on; port 0 picks a free one (printed on stdout).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// Redis URL (redis://host:port[/db]); counters stay in memory without it.
    #[arg(long)]
    pub redis_url: Option<String>,
    /// Treat --redis-url as a comma-separated list of Redis Cluster seed nodes.
    #[arg(long, requires = "redis_url")]
    pub cluster: bool,
    /// Prefix of every counter key.
    #[arg(long, default_value = "rl:")]
    pub prefix: String,
    /// Shared secret every /v1 request must carry in x-sluice-secret.
    #[arg(long, env = "SLUICE_COUNTER_SECRET", hide_env_values = true)]
    pub secret: Option<String>,
    /// Give up on a Redis call after this many milliseconds (answering 503).
    #[arg(long, default_value_t = 40, value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub redis_timeout_ms: u64,
}

/// Why the service cannot start.
#[derive(Debug)]
pub enum StartError {
    /// `--prefix` cannot start keys.
    Prefix(&'static str),
    /// `--secret` (or its variable) is set but empty.
    EmptySecret,
    /// The Redis configuration is unusable.
    Redis(StoreError),
    /// The listen address cannot be bound.
    Listen(SocketAddr, std::io::Error),
    /// Serving failed.
    Serve(std::io::Error),
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::Prefix(why) => write!(f, "--prefix is not usable: {why}"),
            StartError::EmptySecret => f.write_str(
                "--secret (or SLUICE_COUNTER_SECRET) is empty; unset it or give a value",
            ),
            StartError::Redis(err) => write!(f, "--redis-url is not usable: {err}"),
            StartError::Listen(addr, err) => write!(f, "cannot listen on {addr}: {err}"),
            StartError::Serve(err) => write!(f, "serving HTTP failed: {err}"),
        }
    }
}

impl std::error::Error for StartError {}

impl Args {
    /// Where Redis is, if anywhere.
    pub fn redis_target(&self) -> Option<RedisTarget> {
        let url = self.redis_url.as_deref()?;
        Some(if self.cluster {
            let nodes = url
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect();
            RedisTarget::Cluster(nodes)
        } else {
            RedisTarget::Single(url.to_owned())
        })
    }

    /// The service state these flags describe. Needs a Tokio runtime (the
    /// Redis store connects in the background).
    pub fn state(&self) -> Result<AppState, StartError> {
        keys::check_prefix(&self.prefix).map_err(StartError::Prefix)?;
        if self.secret.as_deref() == Some("") {
            return Err(StartError::EmptySecret);
        }
        let store: Arc<dyn CounterStore> = match self.redis_target() {
            None => Arc::new(MemoryStore::new()),
            Some(target) => {
                let timeout = Duration::from_millis(self.redis_timeout_ms);
                Arc::new(RedisStore::new(&target, timeout).map_err(StartError::Redis)?)
            }
        };
        let mut state = AppState::new(store);
        state.prefix = Arc::from(self.prefix.as_str());
        state.secret = self.secret.as_deref().map(Arc::from);
        Ok(state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_parse_with_defaults() {
        let args = Args::try_parse_from(["sluice-counter"]).expect("defaults");
        assert_eq!(args.listen.to_string(), "127.0.0.1:0");
        assert_eq!((args.prefix.as_str(), args.redis_timeout_ms), ("rl:", 40));
        assert_eq!(args.redis_target(), None);
        let args = Args::try_parse_from([
            "sluice-counter",
            "--cluster",
            "--redis-url",
            "redis://127.0.0.1:1, redis://127.0.0.1:2",
        ])
        .expect("cluster");
        assert_eq!(
            args.redis_target(),
            Some(RedisTarget::Cluster(vec![
                "redis://127.0.0.1:1".into(),
                "redis://127.0.0.1:2".into()
            ]))
        );
        assert!(Args::try_parse_from(["sluice-counter", "--cluster"]).is_err());
        assert!(Args::try_parse_from(["sluice-counter", "--redis-timeout-ms", "0"]).is_err());
    }

    #[test]
    fn bad_settings_are_refused() {
        let mut args = Args::try_parse_from(["sluice-counter", "--prefix", "a{b"]).expect("parse");
        assert!(matches!(args.state(), Err(StartError::Prefix(_))));
        args.prefix = "rl:".into();
        args.secret = Some(String::new());
        assert!(matches!(args.state(), Err(StartError::EmptySecret)));
    }
}
