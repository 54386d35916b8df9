//! [`RedisStore`]: counters in Redis, one hash per counter, each lease applied
//! by one `EVALSHA` of [`script::RESERVE_LUA`](super::script) (falling back to
//! `EVAL` on `NOSCRIPT`), which also reads the key's upstream block. Each block
//! is recorded by one `EVALSHA` of [`script::BLOCK_LUA`](super::script). Works
//! against a single node or a Redis Cluster.
//!
//! Every call is bounded by the configured timeout: past it the call fails with
//! [`StoreError::Timeout`] and the caller answers 503 at once. Connections are
//! made lazily and remade in the background after a loss, so the service starts
//! and keeps answering (503) while Redis is down and recovers by itself when
//! Redis returns. The leases (or blocks) of one call are sent concurrently over
//! the same multiplexed connection(s).

use std::time::Duration;

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::cluster::ClusterClient;
use ::redis::cluster_async::ClusterConnection;
use ::redis::{Cmd, ErrorKind, RedisResult, Script, ServerErrorKind, Value};
use futures_util::future::try_join_all;
use tokio::sync::watch;

use sluice_wire::calendar::{Calendar, Unit, MAX_OFFSET_MIN};

use super::script::{parse_block_reply, parse_reply, BLOCK_LUA, RESERVE_LUA};
use super::{Block, Blocked, BoxFuture, CounterStore, Lease, Reserved, StoreError};

/// Delay bounds between reconnection attempts.
const RETRY_MIN: Duration = Duration::from_millis(50);
const RETRY_MAX: Duration = Duration::from_secs(1);
/// Time allowed to open one TCP connection (in the background).
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// How much longer than the configured timeout the client library waits
/// for a reply: the configured one fires first, with a clear message.
const RESPONSE_SLACK: Duration = Duration::from_millis(100);

/// Where Redis is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RedisTarget {
    /// One node, as `redis://host:port[/db]`.
    Single(String),
    /// Seed nodes of a Redis Cluster.
    Cluster(Vec<String>),
}

/// Counters in Redis.
pub struct RedisStore {
    conn: Conn,
    timeout: Duration,
    reserve: Lua,
    block: Lua,
}

/// A script and its SHA1.
struct Lua {
    source: &'static str,
    sha: String,
}

impl Lua {
    fn new(source: &'static str) -> Lua {
        Lua {
            source,
            sha: Script::new(source).get_hash().to_owned(),
        }
    }
}

enum Conn {
    Single(ConnectionManager),
    Cluster(watch::Receiver<Option<ClusterConnection>>),
}

/// A connection handle for one command (both kinds are cheap clones).
enum Handle {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl Handle {
    async fn query(&mut self, cmd: &Cmd) -> RedisResult<Value> {
        match self {
            Handle::Single(c) => cmd.query_async(c).await,
            Handle::Cluster(c) => cmd.query_async(c).await,
        }
    }
}

impl RedisStore {
    /// A store for `target` whose calls give up after `timeout`. Does not
    /// connect yet (a down Redis is not an error here); must be called inside
    /// a Tokio runtime. Fails only on malformed URLs.
    pub fn new(target: &RedisTarget, timeout: Duration) -> Result<RedisStore, StoreError> {
        let conn = match target {
            RedisTarget::Single(url) => {
                let client = ::redis::Client::open(url.as_str())?;
                // The library's own response timeout (500 ms by default)
                // would cut a longer configured one short.
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(CONNECT_TIMEOUT))
                    .set_response_timeout(Some(timeout.saturating_add(RESPONSE_SLACK)))
                    .set_min_delay(RETRY_MIN)
                    .set_max_delay(RETRY_MAX)
                    .set_number_of_retries(8);
                Conn::Single(ConnectionManager::new_lazy_with_config(client, config)?)
            }
            RedisTarget::Cluster(nodes) => {
                if nodes.is_empty() {
                    return Err(StoreError::Config("no cluster seed node given".to_owned()));
                }
                let client = ClusterClient::builder(nodes.iter().map(String::as_str))
                    .connection_timeout(CONNECT_TIMEOUT)
                    .response_timeout(timeout.saturating_add(RESPONSE_SLACK))
                    .retries(2)
                    .build()?;
                let (tx, rx) = watch::channel(None);
                tokio::spawn(connect_cluster(client, tx));
                Conn::Cluster(rx)
            }
        };
        Ok(RedisStore {
            conn,
            timeout,
            reserve: Lua::new(RESERVE_LUA),
            block: Lua::new(BLOCK_LUA),
        })
    }

    /// A connection; for a cluster not yet reached, waits for the background
    /// connection (callers bound the wait with the timeout).
    async fn handle(&self) -> Result<Handle, StoreError> {
        match &self.conn {
            Conn::Single(c) => Ok(Handle::Single(c.clone())),
            Conn::Cluster(rx) => {
                let mut rx = rx.clone();
                let conn = rx.wait_for(Option::is_some).await.map_err(|_| {
                    StoreError::Unreachable("the cluster connection task stopped".to_owned())
                })?;
                conn.clone()
                    .map(Handle::Cluster)
                    .ok_or_else(|| StoreError::Unreachable("no cluster connection".to_owned()))
            }
        }
    }

    async fn bounded<T>(
        &self,
        work: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        tokio::time::timeout(self.timeout, work)
            .await
            .unwrap_or(Err(StoreError::Timeout(self.timeout)))
    }

    /// Runs `lua` on `keys` (all in one hash slot) with `args`: `EVALSHA`,
    /// then `EVAL` if Redis does not know the script yet.
    async fn eval(&self, lua: &Lua, keys: &[&str], args: &[u64]) -> Result<Value, StoreError> {
        let mut handle = self.handle().await?;
        let command = |name: &str, script: &str| {
            let mut cmd = ::redis::cmd(name);
            cmd.arg(script).arg(keys.len()).arg(keys).arg(args);
            cmd
        };
        match handle.query(&command("EVALSHA", &lua.sha)).await {
            Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                Ok(handle.query(&command("EVAL", lua.source)).await?)
            }
            other => Ok(other?),
        }
    }

    /// `KEYS[1..2]` and `ARGV[1..9]` of the reserve script, as documented in
    /// [`super::script`].
    async fn reserve_one(&self, lease: &Lease) -> Result<Reserved, StoreError> {
        let keys = [lease.key.as_str(), lease.block_key.as_str()];
        let args = [
            lease.window_ms,
            lease.limit,
            lease.want,
            u64::from(lease.next),
            lease.windows,
            lease.release,
            lease.from,
            calendar_unit(lease.calendar),
            calendar_offset(lease.calendar),
        ];
        let value = self.eval(&self.reserve, &keys, &args).await?;
        let (granted, used, window, now_ms, blocked_ms, current_used) = parse_reply(&value)?;
        Ok(Reserved {
            granted,
            used,
            window,
            now_ms,
            blocked_ms,
            current_used,
        })
    }

    /// `KEYS[1]` and `ARGV[1]` of the block script.
    async fn block_one(&self, block: &Block) -> Result<Blocked, StoreError> {
        let value = self
            .eval(&self.block, &[block.key.as_str()], &[block.for_ms])
            .await?;
        let (blocked_ms, now_ms) = parse_block_reply(&value)?;
        Ok(Blocked { blocked_ms, now_ms })
    }
}

/// Connects to the cluster in the background until it succeeds or the store
/// is dropped, then publishes the connection. Once connected, the cluster
/// connection follows topology changes and reconnects to nodes by itself.
async fn connect_cluster(client: ClusterClient, tx: watch::Sender<Option<ClusterConnection>>) {
    let mut delay = RETRY_MIN;
    while !tx.is_closed() {
        if let Ok(conn) = client.get_async_connection().await {
            let _ = tx.send(Some(conn));
            return;
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(RETRY_MAX);
    }
}

impl CounterStore for RedisStore {
    fn reserve<'a>(
        &'a self,
        leases: &'a [Lease],
    ) -> BoxFuture<'a, Result<Vec<Reserved>, StoreError>> {
        Box::pin(self.bounded(try_join_all(leases.iter().map(|l| self.reserve_one(l)))))
    }

    fn block<'a>(&'a self, blocks: &'a [Block]) -> BoxFuture<'a, Result<Vec<Blocked>, StoreError>> {
        Box::pin(self.bounded(try_join_all(blocks.iter().map(|b| self.block_one(b)))))
    }

    fn ping(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(self.bounded(async {
            let value = self.handle().await?.query(&::redis::cmd("PING")).await?;
            match value {
                Value::SimpleString(s) if s == "PONG" => Ok(()),
                other => Err(StoreError::BadReply(format!("{other:?} to PING"))),
            }
        }))
    }

    fn describe(&self) -> String {
        match self.conn {
            Conn::Single(_) => "redis".to_owned(),
            Conn::Cluster(_) => "redis cluster".to_owned(),
        }
    }
}

/// `ARGV[8]` of the reserve script: 0 without a calendar, 1 for days, 2 for
/// months.
fn calendar_unit(calendar: Option<Calendar>) -> u64 {
    match calendar.map(|c| c.unit) {
        None => 0,
        Some(Unit::Day) => 1,
        Some(Unit::Month) => 2,
    }
}

/// `ARGV[9]`: the calendar's offset in minutes plus
/// [`MAX_OFFSET_MIN`](sluice_wire::calendar::MAX_OFFSET_MIN), so that it is
/// never negative (validation keeps it within ±that).
fn calendar_offset(calendar: Option<Calendar>) -> u64 {
    let offset = calendar.map_or(0, |c| c.offset_min.clamp(-MAX_OFFSET_MIN, MAX_OFFSET_MIN));
    u64::try_from(offset.saturating_add(MAX_OFFSET_MIN)).unwrap_or(0)
}
