//! `limitador-rls`: the bench's peer for global limits, Envoy's rate-limit
//! service (`envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit`,
//! gRPC) on the `limitador` library, counting in memory or in Redis. It is
//! what Envoy's `envoy.filters.http.ratelimit` calls for every request in
//! variants `envoy-ratelimit-limitador-memory` and
//! `envoy-ratelimit-limitador-redis` (docs/bench.md).
//!
//! ```text
//! limitador-rls --listen 127.0.0.1:PORT --limits FILE [--redis-url URL]
//! ```
//!
//! `FILE` holds Limitador limits as JSON, in the library's own format (a
//! list of `{"namespace", "max_value", "seconds", "name", "conditions",
//! "variables"}`). A request is handled as Limitador's server handles it,
//! with one difference in how descriptors become values: the namespace is
//! the request's `domain`, and one `check_rate_limited_and_update` with
//! `hits_addend` (1 when unset) decides for all of the request's
//! descriptors at once; over limit is `OVER_LIMIT`, a storage error is
//! gRPC `UNAVAILABLE` (Envoy then fails open or closed as its filter is
//! set). The entries of every descriptor are merged into one set of values
//! (Limitador's server binds them as a list, `descriptors[i]`, for CEL
//! conditions): the bench gives each rule's entries keys of their own, so
//! nothing is lost, and a limit applies exactly when its variables are all
//! present, without a condition to evaluate. The draft-03 `X-RateLimit-*`
//! headers of the most restrictive counter go back in
//! `response_headers_to_add`, like the server's `--rate-limit-headers
//! DRAFT_VERSION_03`.
//!
//! Storage: in memory (`RateLimiter`, a cache of `--cache-size` counters),
//! or with `--redis-url` Limitador's asynchronous Redis storage (shared by
//! every instance: a check, and for an admitted request a second round trip
//! that counts it; the server's default `redis_cached`, which batches
//! writes and may over-admit, is not used).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;
use envoy_types::pb::envoy::config::core::v3::HeaderValue;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::Code;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_server::{RateLimitService, RateLimitServiceServer};
use envoy_types::pb::envoy::service::ratelimit::v3::{RateLimitRequest, RateLimitResponse};
use limitador::limit::{Context, Limit};
use limitador::storage::redis::AsyncRedisStorage;
use limitador::{AsyncRateLimiter, CheckResult, RateLimiter};
use tonic::{Request, Response, Status};

#[derive(Debug, Parser)]
#[command(name = "limitador-rls", about = "Envoy's rate-limit service (gRPC, v3) on the limitador library")]
struct Args {
    /// Address to serve gRPC (HTTP/2 without TLS) on.
    #[arg(long, default_value = "127.0.0.1:8081")]
    listen: SocketAddr,
    /// Limitador limits, a JSON list.
    #[arg(long)]
    limits: PathBuf,
    /// Count in this Redis instead of in memory.
    #[arg(long)]
    redis_url: Option<String>,
    /// Counters the in-memory storage keeps.
    #[arg(long, default_value_t = 65_536)]
    cache_size: u64,
}

enum Limiter {
    Memory(RateLimiter),
    Redis(AsyncRateLimiter),
}

impl Limiter {
    async fn check(&self, namespace: &str, ctx: &Context<'_>, hits: u64) -> Result<CheckResult, limitador::errors::LimitadorError> {
        let namespace = namespace.into();
        match self {
            Limiter::Memory(l) => l.check_rate_limited_and_update(&namespace, ctx, hits),
            Limiter::Redis(l) => l.check_rate_limited_and_update(&namespace, ctx, hits).await,
        }
    }
}

struct Service {
    limiter: Limiter,
}

/// The values a request's descriptors carry, every descriptor's entries in one map.
fn values(request: &RateLimitRequest) -> HashMap<String, String> {
    request.descriptors.iter().flat_map(|d| d.entries.iter()).map(|e| (e.key.clone(), e.value.clone())).collect()
}

fn response(code: Code, mut result: Option<CheckResult>) -> RateLimitResponse {
    let mut headers: Vec<HeaderValue> = result
        .as_mut()
        .map(|r| r.response_header().into_iter().map(|(key, value)| HeaderValue { key, value, ..Default::default() }).collect())
        .unwrap_or_default();
    headers.sort_by(|a, b| a.key.cmp(&b.key));
    RateLimitResponse { overall_code: code.into(), response_headers_to_add: headers, ..Default::default() }
}

#[tonic::async_trait]
impl RateLimitService for Service {
    async fn should_rate_limit(&self, request: Request<RateLimitRequest>) -> Result<Response<RateLimitResponse>, Status> {
        let request = request.into_inner();
        if request.domain.is_empty() {
            return Ok(Response::new(response(Code::Unknown, None)));
        }
        let ctx = Context::from(values(&request));
        let hits = u64::from(request.hits_addend.max(1));
        match self.limiter.check(&request.domain, &ctx, hits).await {
            Ok(result) => {
                let code = if result.limited { Code::OverLimit } else { Code::Ok };
                Ok(Response::new(response(code, Some(result))))
            }
            Err(e) => {
                eprintln!("limitador-rls: {e}");
                Err(Status::unavailable("limit storage unavailable"))
            }
        }
    }
}

fn read_limits(path: &PathBuf) -> anyhow::Result<Vec<Limit>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{}: not a JSON list of Limitador limits", path.display()))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let limits = read_limits(&args.limits)?;
    let limiter = match &args.redis_url {
        Some(url) => {
            let storage = AsyncRedisStorage::new(url).await.with_context(|| format!("connecting to {url}"))?;
            let limiter = AsyncRateLimiter::new_with_storage(Box::new(storage));
            limiter.configure_with(limits).await.map_err(|e| anyhow::anyhow!("configuring the limits: {e}"))?;
            Limiter::Redis(limiter)
        }
        None => {
            let limiter = RateLimiter::new(args.cache_size);
            limiter.configure_with(limits).map_err(|e| anyhow::anyhow!("configuring the limits: {e}"))?;
            Limiter::Memory(limiter)
        }
    };
    let listener = tokio::net::TcpListener::bind(args.listen).await.with_context(|| format!("binding {}", args.listen))?;
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    tonic::transport::Server::builder()
        .add_service(RateLimitServiceServer::new(Service { limiter }))
        .serve_with_incoming_shutdown(incoming, async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::Entry;
    use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;

    fn request(descriptors: &[&[(&str, &str)]]) -> Request<RateLimitRequest> {
        Request::new(RateLimitRequest {
            domain: "sluice".into(),
            descriptors: descriptors
                .iter()
                .map(|d| RateLimitDescriptor { entries: d.iter().map(|(k, v)| Entry { key: (*k).into(), value: (*v).into() }).collect(), ..Default::default() })
                .collect(),
            hits_addend: 0,
        })
    }

    fn service(json: &str) -> Service {
        let limits: Vec<Limit> = serde_json::from_str(json).unwrap();
        let limiter = RateLimiter::new(100);
        limiter.configure_with(limits).unwrap();
        Service { limiter: Limiter::Memory(limiter) }
    }

    const LIMITS: &str = r#"[
        {"namespace": "sluice", "name": "per-tenant", "max_value": 3, "seconds": 60, "conditions": [], "variables": ["per_tenant_tenant"]},
        {"namespace": "sluice", "name": "tools-list", "max_value": 1, "seconds": 60, "conditions": [], "variables": ["tools_list_tenant"]}
    ]"#;

    async fn code(s: &Service, descriptors: &[&[(&str, &str)]]) -> Code {
        let r = s.should_rate_limit(request(descriptors)).await.unwrap().into_inner();
        Code::try_from(r.overall_code).unwrap()
    }

    #[tokio::test]
    async fn the_limit_plus_first_request_of_a_key_is_over_limit_and_other_keys_are_not() {
        let s = service(LIMITS);
        for _ in 0..3 {
            assert_eq!(code(&s, &[&[("per_tenant_tenant", "a")]]).await, Code::Ok);
        }
        assert_eq!(code(&s, &[&[("per_tenant_tenant", "a")]]).await, Code::OverLimit);
        assert_eq!(code(&s, &[&[("per_tenant_tenant", "b")]]).await, Code::Ok);
        // No limit's variables present: nothing applies.
        assert_eq!(code(&s, &[&[("other", "a")]]).await, Code::Ok);
    }

    #[tokio::test]
    async fn descriptors_of_two_rules_are_decided_at_once() {
        let s = service(LIMITS);
        let both: &[&[(&str, &str)]] = &[&[("per_tenant_tenant", "a")], &[("tools_list", "1"), ("tools_list_tenant", "a")]];
        assert_eq!(code(&s, both).await, Code::Ok);
        // tools-list is spent: refused, and per-tenant is not charged for it.
        assert_eq!(code(&s, both).await, Code::OverLimit);
        assert_eq!(code(&s, &[&[("per_tenant_tenant", "a")]]).await, Code::Ok);
        assert_eq!(code(&s, &[&[("per_tenant_tenant", "a")]]).await, Code::Ok);
        assert_eq!(code(&s, &[&[("per_tenant_tenant", "a")]]).await, Code::OverLimit);
        let r = s.should_rate_limit(request(&[&[("per_tenant_tenant", "c")]])).await.unwrap().into_inner();
        let remaining = r.response_headers_to_add.iter().find(|h| h.key == "X-RateLimit-Remaining").map(|h| h.value.as_str());
        assert_eq!(remaining, Some("2"));
    }
}
