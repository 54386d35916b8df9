//! Command-line flags ([`Args`]) and turning them into the service's
//! [`AppState`]; [`StartError`] says what keeps the service from starting.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
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
    /// Redis URL (redis://[:password@]host:port[/db]); counters stay in
    /// memory without it. From the environment when it holds a password.
    #[arg(long, env = "SLUICE_COUNTER_REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,
    /// Treat --redis-url as a comma-separated list of Redis Cluster seed nodes.
    #[arg(long, requires = "redis_url")]
    pub cluster: bool,
    /// Prefix of every counter key.
    #[arg(long, default_value = "rl:")]
    pub prefix: String,
    /// File holding the shared secret every /v1 request must carry in
    /// x-sluice-secret (e.g. a mounted Kubernetes Secret; one trailing
    /// newline is ignored).
    #[arg(long, env = "SLUICE_COUNTER_SECRET_FILE", value_name = "PATH")]
    pub secret_file: Option<PathBuf>,
    /// The shared secret itself, from the environment variable
    /// SLUICE_COUNTER_SECRET only: a command line is readable by every user
    /// of the machine (`ps`, /proc/PID/cmdline).
    #[arg(skip = std::env::var("SLUICE_COUNTER_SECRET").ok())]
    pub secret: Option<String>,
    /// Serve /v1 to any caller that reaches the port, without a secret.
    /// Only where the network itself admits nothing but Envoy (a mesh
    /// policy, a private loopback stack).
    #[arg(long, conflicts_with = "secret_file")]
    pub insecure_no_secret: bool,
    /// Give up on a Redis call after this many milliseconds (answering 503).
    #[arg(long, default_value_t = 40, value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub redis_timeout_ms: u64,
}

/// Why the service cannot start.
#[derive(Debug)]
pub enum StartError {
    /// `--prefix` cannot start keys.
    Prefix(&'static str),
    /// The secret (file or variable) is set but empty.
    EmptySecret,
    /// No secret and no `--insecure-no-secret`.
    NoSecret,
    /// Both a secret and `--insecure-no-secret`.
    SecretAndInsecure,
    /// `--secret-file` cannot be read, or is not UTF-8.
    SecretFile(PathBuf, std::io::Error),
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
                "the shared secret (--secret-file or SLUICE_COUNTER_SECRET) is empty; give a value",
            ),
            StartError::NoSecret => f.write_str(
                "no shared secret: give one with --secret-file PATH or SLUICE_COUNTER_SECRET \
                 (and the same value to the filter, docs/global.md), or serve every caller \
                 with --insecure-no-secret",
            ),
            StartError::SecretAndInsecure => f.write_str(
                "--insecure-no-secret is given but so is a secret (SLUICE_COUNTER_SECRET); drop one",
            ),
            StartError::SecretFile(path, err) => {
                write!(f, "--secret-file {}: {err}", path.display())
            }
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
        let secret = self.shared_secret()?;
        let store: Arc<dyn CounterStore> = match self.redis_target() {
            None => Arc::new(MemoryStore::new()),
            Some(target) => {
                let timeout = Duration::from_millis(self.redis_timeout_ms);
                Arc::new(RedisStore::new(&target, timeout).map_err(StartError::Redis)?)
            }
        };
        let mut state = AppState::new(store);
        state.prefix = Arc::from(self.prefix.as_str());
        state.secret = secret.as_deref().map(Arc::from);
        Ok(state)
    }

    /// The secret callers must send, from `--secret-file` (first) or
    /// `SLUICE_COUNTER_SECRET`; `None` only with `--insecure-no-secret`.
    pub fn shared_secret(&self) -> Result<Option<String>, StartError> {
        let secret = match &self.secret_file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| StartError::SecretFile(path.clone(), e))?;
                let text = text.strip_suffix('\n').unwrap_or(&text);
                Some(text.strip_suffix('\r').unwrap_or(text).to_owned())
            }
            None => self.secret.clone(),
        };
        match (secret, self.insecure_no_secret) {
            (Some(s), _) if s.is_empty() => Err(StartError::EmptySecret),
            (Some(_), true) => Err(StartError::SecretAndInsecure),
            (Some(s), false) => Ok(Some(s)),
            (None, true) => Ok(None),
            (None, false) => Err(StartError::NoSecret),
        }
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
        args.secret = Some("k".into());
        assert!(matches!(args.state(), Err(StartError::Prefix(_))));
        args.prefix = "rl:".into();
        args.secret = Some(String::new());
        assert!(matches!(args.state(), Err(StartError::EmptySecret)));
    }

    fn without_env(argv: &[&str]) -> Args {
        let mut args = Args::try_parse_from(argv).expect("parse");
        args.secret = None;
        args
    }

    #[test]
    fn a_secret_is_required_unless_refused_explicitly() {
        let args = without_env(&["sluice-counter"]);
        assert!(matches!(args.shared_secret(), Err(StartError::NoSecret)));
        assert!(args.state().is_err(), "started without a secret");
        assert!(StartError::NoSecret
            .to_string()
            .contains("--insecure-no-secret"));

        let open = without_env(&["sluice-counter", "--insecure-no-secret"]);
        assert_eq!(open.shared_secret().ok(), Some(None));

        let mut env = without_env(&["sluice-counter"]);
        env.secret = Some("from-env".into());
        assert_eq!(env.shared_secret().ok(), Some(Some("from-env".into())));
        env.insecure_no_secret = true;
        assert!(matches!(
            env.shared_secret(),
            Err(StartError::SecretAndInsecure)
        ));

        // Not on the command line.
        assert!(Args::try_parse_from(["sluice-counter", "--secret", "k"]).is_err());
        assert!(Args::try_parse_from([
            "sluice-counter",
            "--secret-file",
            "f",
            "--insecure-no-secret"
        ])
        .is_err());
    }

    #[test]
    fn the_secret_file_wins_and_loses_one_newline() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("secret");
        let p = path.to_str().expect("utf-8 path");
        for (content, want) in [
            ("s3cret\n", Some("s3cret")),
            ("s3cret", Some("s3cret")),
            ("s3 cret\r\n", Some("s3 cret")),
            ("a\n\n", Some("a\n")),
        ] {
            std::fs::write(&path, content).expect("write");
            let mut args = without_env(&["sluice-counter", "--secret-file", p]);
            args.secret = Some("from-env".into());
            assert_eq!(
                args.shared_secret().ok().flatten().as_deref(),
                want,
                "{content:?}"
            );
        }
        std::fs::write(&path, "\n").expect("write");
        assert!(matches!(
            without_env(&["sluice-counter", "--secret-file", p]).shared_secret(),
            Err(StartError::EmptySecret)
        ));
        let missing = without_env(&["sluice-counter", "--secret-file", "/nonexistent/secret"]);
        assert!(matches!(
            missing.shared_secret(),
            Err(StartError::SecretFile(..))
        ));
    }
}
