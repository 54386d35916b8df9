//! `sluice-stack run`: N Envoys in front of the echo upstream (or of the
//! user's own service with `--upstream`), in the foreground until Ctrl-C or
//! SIGTERM, recorded in `<run-dir>/stack.json`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use wasm_test_harness::{
    Counter, CounterOptions, EchoServer, Envoy, EnvoyOptions, StackFile, StackInstance, Upstream,
};

#[derive(Args)]
pub struct RunArgs {
    /// Listener port of instance 0 (instance i listens on port + i).
    #[arg(long, default_value_t = 10000)]
    port: u16,
    /// Admin port of instance 0 (instance i uses admin-port + i).
    #[arg(long, default_value_t = 9901)]
    admin_port: u16,
    /// Policy file handed to the filter.
    #[arg(long, default_value = "policies/mcp-gateway.json")]
    policy: PathBuf,
    /// Number of Envoy instances.
    #[arg(long, default_value_t = 1)]
    instances: u16,
    /// Directory for configs, logs and stack.json.
    #[arg(long, default_value = ".sluice/run")]
    run_dir: PathBuf,
    /// Filter module (default: $SLUICE_WASM or target/wasm32-wasip1/release/sluice.wasm).
    #[arg(long)]
    wasm: Option<PathBuf>,
    /// Envoy worker threads per instance.
    #[arg(long, default_value_t = 2)]
    concurrency: u32,
    /// Redis behind the counter service (global rules); without it the
    /// service counts in memory.
    #[arg(long, env = "REDIS_URL")]
    redis_url: Option<String>,
    /// The service to protect instead of the echo server: `host:port` or
    /// `http://host:port` (HTTP/1.1), `h2c://host:port` (HTTP/2 without TLS).
    #[arg(long)]
    upstream: Option<String>,
}

pub fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let policy = match crate::load_policy(&args.policy) {
        Ok(p) => p,
        Err(code) => return Ok(code),
    };
    let upstream = match args
        .upstream
        .as_deref()
        .map(str::trim)
        .filter(|u| !u.is_empty())
    {
        Some(text) => match Upstream::parse(text) {
            Ok(u) => Some(u),
            Err(e) => {
                eprintln!("error: {e:#}");
                return Ok(ExitCode::from(2));
            }
        },
        None => None,
    };
    let wasm = std::path::absolute(args.wasm.unwrap_or_else(wasm_test_harness::wasm_module))?;
    std::fs::create_dir_all(&args.run_dir)
        .with_context(|| format!("creating {}", args.run_dir.display()))?;
    let run_dir = std::path::absolute(&args.run_dir)?;
    let _ = std::fs::remove_file(run_dir.join(wasm_test_harness::STACK_FILE));

    // The echo server only when nothing else is protected.
    let echo = match upstream {
        Some(_) => None,
        None => Some(EchoServer::start()?),
    };
    let upstream =
        upstream.unwrap_or_else(|| Upstream::local(echo.as_ref().map_or(0, EchoServer::port)));
    // The counter service requires a secret, as in every deployment: the
    // policy's own, or one drawn for this stack and handed to Envoy in its
    // environment (`load_policy` points the policy's `global.secret_env`
    // at it), so that no file holds it.
    let inline_secret = sluice_core::policy::Policy::from_json(&policy)
        .ok()
        .and_then(|p| p.global)
        .and_then(|g| g.secret);
    let secret = match inline_secret {
        Some(s) => s,
        None => {
            wasm_test_harness::random_secret().context("drawing the counter service's secret")?
        }
    };
    let counter = Counter::start(CounterOptions {
        redis_url: args.redis_url.clone().filter(|u| !u.is_empty()),
        log_dir: Some(run_dir.clone()),
        secret: Some(secret.clone()),
        ..CounterOptions::default()
    })
    .context("starting the counter service")?;
    let mut envoys = Vec::new();
    for i in 0..args.instances {
        let envoy = Envoy::start(EnvoyOptions {
            instance: u32::from(i),
            port: args.port.checked_add(i).context("port out of range")?,
            admin_port: args
                .admin_port
                .checked_add(i)
                .context("admin port out of range")?,
            upstream: Some(upstream.clone()),
            counter_port: counter.port(),
            policy_json: policy.clone(),
            concurrency: args.concurrency,
            run_dir: Some(run_dir.join(format!("envoy-{i}"))),
            wasm: Some(wasm.clone()),
            counter_secret: Some(secret.clone()),
            ..EnvoyOptions::default()
        })
        .with_context(|| format!("starting Envoy instance {i}"))?;
        envoys.push(envoy);
    }
    let stack = StackFile {
        instances: envoys
            .iter()
            .map(|e| StackInstance {
                port: e.port(),
                admin_port: e.admin_port(),
                ecds_dir: e.ecds_dir(),
            })
            .collect(),
        wasm,
    };
    stack.write(&run_dir)?;

    let routes_to = match &echo {
        Some(e) => format!("echo upstream on 127.0.0.1:{}", e.port()),
        None => format!("routing to {upstream}"),
    };
    println!(
        "Sluice stack is up ({routes_to}, counter service on 127.0.0.1:{} with {}).",
        counter.port(),
        match &args.redis_url {
            Some(url) if !url.is_empty() => format!("Redis at {url}"),
            _ => "its in-memory store".to_string(),
        }
    );
    for e in &envoys {
        println!(
            "  listening on http://127.0.0.1:{}  egress http://127.0.0.1:{}  admin http://127.0.0.1:{}  run dir {}",
            e.port(),
            e.egress_port(),
            e.admin_port(),
            e.run_dir().display()
        );
    }
    println!("  {}", trust_line(&policy));
    println!(
        "Try:\n  curl -i http://127.0.0.1:{}/api/v1/tools/list -H 'x-tenant-id: tenant-123'",
        args.port
    );
    if let Some(e) = envoys.first() {
        println!(
            "  curl -i http://127.0.0.1:{}/v1/search -H 'host: api.notion.com' -H 'x-tenant-id: tenant-123'   (egress: a Notion call)",
            e.egress_port()
        );
    }
    println!("Press Ctrl-C to stop.");

    wait_for_shutdown()?;
    println!("Stopping…");
    drop(envoys);
    drop(counter);
    drop(echo);
    let _ = std::fs::remove_file(run_dir.join(wasm_test_harness::STACK_FILE));
    Ok(ExitCode::SUCCESS)
}

fn wait_for_shutdown() -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        // A closed terminal: Envoy and the counter service lead process
        // groups of their own, so only this process would hear of it.
        let mut hangup = signal(SignalKind::hangup())?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r,
            _ = term.recv() => Ok(()),
            _ = hangup.recv() => Ok(()),
        }
    })?;
    Ok(())
}

/// What the listener believes about the client's address, from the
/// policy's `trusted_hops` (docs/policy.md, Client IP).
fn trust_line(policy_json: &str) -> String {
    match sluice_core::policy::Policy::from_json(policy_json).map(|p| p.trusted_hops) {
        Ok(0) => "client IP: the TCP peer; X-Forwarded-For is ignored (trusted_hops 0: Envoy is the edge)".to_string(),
        Ok(n) => format!(
            "client IP: the X-Forwarded-For entry {n} from the right (trusted_hops {n}); only safe when {n} proxy hop(s) in front of Envoy set that header, otherwise any client can choose its own per-IP bucket"
        ),
        Err(e) => format!("client IP: unknown ({})", e.one_line()),
    }
}

#[cfg(test)]
mod tests {
    use super::trust_line;

    #[test]
    fn trust_line_names_who_sets_the_address() {
        assert!(trust_line(r#"{"rules": []}"#).contains("X-Forwarded-For is ignored"));
        let two = trust_line(r#"{"trusted_hops": 2, "rules": []}"#);
        assert!(two.contains("entry 2 from the right"), "{two}");
        assert!(two.contains("any client can choose"), "{two}");
    }
}
