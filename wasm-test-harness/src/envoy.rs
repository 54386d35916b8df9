//! One Envoy process with the Sluice filter delivered through ECDS.
//!
//! [`Envoy::start`] renders the bootstrap template into a run directory,
//! writes the ECDS resource, starts Envoy (through `func-e` when it is on
//! `PATH`) in its own process group, waits until the admin endpoint reports
//! `LIVE`, and checks that the V8 Wasm runtime is compiled in. Dropping the
//! handle stops the whole process group; during a panic the tail of Envoy's
//! log is printed first.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};

use crate::process::{self, Group};
use crate::upstream::Upstream;
use crate::{ecds, http, paths, template};

/// The Envoy version the stack is built and tested against.
pub const ENVOY_VERSION: &str = "1.40.0";

const READY_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_GRACE: Duration = Duration::from_secs(5);

/// How to start an [`Envoy`].
#[derive(Debug, Clone)]
pub struct EnvoyOptions {
    /// Instance number, rendered into the node id.
    pub instance: u32,
    /// Listener port; 0 picks a free one.
    pub port: u16,
    /// Admin port; 0 lets Envoy pick one.
    pub admin_port: u16,
    /// Port of the upstream on 127.0.0.1 (the echo server).
    pub upstream_port: u16,
    /// Another upstream instead (`make run UPSTREAM=...`); overrides
    /// `upstream_port`.
    pub upstream: Option<Upstream>,
    /// Port of the counter service on 127.0.0.1 (cluster `sluice_counter`);
    /// 0 points the cluster at a port nothing listens on.
    pub counter_port: u16,
    /// The Sluice policy handed to the filter.
    pub policy_json: String,
    /// Envoy worker threads.
    pub concurrency: u32,
    /// Where config and logs go; `None` makes a fresh temporary directory.
    pub run_dir: Option<PathBuf>,
    /// Bootstrap template.
    pub template: PathBuf,
    /// More `{{NAME}}` replacements for the template.
    pub extra_vars: Vec<(String, String)>,
    /// Envoy's `-l` log level.
    pub log_level: String,
    /// Filter module; `None` means [`paths::wasm_module`].
    pub wasm: Option<PathBuf>,
    /// The counter service's secret, put in Envoy's environment as
    /// [`ecds::COUNTER_SECRET_ENV`] (which the ECDS resource hands to the
    /// filter's VM); `None` leaves the variable unset.
    pub counter_secret: Option<String>,
}

impl Default for EnvoyOptions {
    fn default() -> Self {
        EnvoyOptions {
            instance: 0,
            port: 0,
            admin_port: 0,
            upstream_port: 0,
            upstream: None,
            counter_port: 0,
            policy_json: "{}".to_string(),
            concurrency: 2,
            run_dir: None,
            template: paths::repo_root().join("envoy.yaml"),
            extra_vars: Vec::new(),
            log_level: "info".to_string(),
            wasm: None,
            counter_secret: None,
        }
    }
}

/// A running Envoy; stopped (with its whole process group) on drop.
pub struct Envoy {
    group: Group,
    port: u16,
    egress_port: u16,
    admin_port: u16,
    run_dir: PathBuf,
    wasm: PathBuf,
    // A temporary run directory, deleted after Envoy stops (kept when a test panics).
    temp: Option<tempfile::TempDir>,
}

impl Envoy {
    /// Starts Envoy and waits until it is live. The ports chosen here were
    /// free a moment before Envoy binds them; the kernel may hand one to
    /// another socket first (Envoy's own admin port among them), and such
    /// a start is tried again with new ports (see
    /// [`process::on_fresh_ports`]), unless the caller gave the port.
    pub fn start(opts: EnvoyOptions) -> anyhow::Result<Envoy> {
        if opts.port != 0 {
            return Envoy::start_once(&opts);
        }
        process::on_fresh_ports(
            || Envoy::start_once(&opts),
            |e| format!("{e:#}").contains("Address already in use"),
        )
    }

    fn start_once(opts: &EnvoyOptions) -> anyhow::Result<Envoy> {
        let envoy_bin = paths::envoy_binary()?;
        let wasm = opts.wasm.clone().unwrap_or_else(paths::wasm_module);
        if !wasm.is_file() {
            bail!(
                "filter module {} not found; build it with `cargo build --release --target wasm32-wasip1` (or set SLUICE_WASM)",
                wasm.display()
            );
        }
        let wasm = std::path::absolute(&wasm)?;
        let (run_dir, temp) = match &opts.run_dir {
            Some(dir) => (dir.clone(), None),
            None => {
                let t = tempfile::Builder::new().prefix("sluice-envoy-").tempdir()?;
                (t.path().to_path_buf(), Some(t))
            }
        };
        let ecds_dir = run_dir.join("ecds");
        std::fs::create_dir_all(&ecds_dir)
            .with_context(|| format!("creating {}", ecds_dir.display()))?;
        let run_dir = std::path::absolute(&run_dir)?;
        let ecds_dir = run_dir.join("ecds");
        let port = if opts.port == 0 {
            paths::free_port()
        } else {
            opts.port
        };

        let egress_port = paths::free_port();
        let text = std::fs::read_to_string(&opts.template)
            .with_context(|| format!("reading template {}", opts.template.display()))?;
        let mut vars = vec![
            ("INSTANCE".to_string(), opts.instance.to_string()),
            ("PORT".to_string(), port.to_string()),
            ("EGRESS_PORT".to_string(), egress_port.to_string()),
            ("ADMIN_PORT".to_string(), opts.admin_port.to_string()),
            (
                "COUNTER_PORT".to_string(),
                if opts.counter_port == 0 {
                    paths::free_port()
                } else {
                    opts.counter_port
                }
                .to_string(),
            ),
            (
                "ECDS_DIR".to_string(),
                ecds_dir.to_string_lossy().into_owned(),
            ),
            (
                "ACCESS_LOG".to_string(),
                run_dir.join("access.log").to_string_lossy().into_owned(),
            ),
        ];
        let upstream = opts
            .upstream
            .clone()
            .unwrap_or_else(|| Upstream::local(opts.upstream_port));
        vars.extend(upstream.template_vars());
        vars.extend(opts.extra_vars.iter().cloned());
        let refs: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let rendered = template::render_template(&text, &refs)
            .with_context(|| format!("rendering {}", opts.template.display()))?;
        let config = run_dir.join("envoy.yaml");
        std::fs::write(&config, rendered)?;
        ecds::write_ecds(&ecds_dir, &wasm, &opts.policy_json)?;

        let admin_file = run_dir.join("admin-address.txt");
        let _ = std::fs::remove_file(&admin_file);
        let cmd = command(&envoy_bin, &config, &admin_file, opts);
        let group = Group::spawn(
            cmd,
            Some((&run_dir.join("stdout.log"), &run_dir.join("stderr.log"))),
            STOP_GRACE,
        )?;
        let mut envoy = Envoy {
            group,
            port,
            egress_port,
            admin_port: opts.admin_port,
            run_dir,
            wasm,
            temp,
        };
        envoy.wait_live(&admin_file)?;
        envoy.check_v8()?;
        let dump = http::get(&envoy.admin_url("/config_dump"), &[])?;
        std::fs::write(envoy.run_dir.join("config_dump.json"), dump.body)?;
        Ok(envoy)
    }

    fn wait_live(&mut self, admin_file: &Path) -> anyhow::Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self.group.exited() {
                bail!(
                    "Envoy exited ({status}) before becoming ready:\n{}",
                    self.logs_tail(60)
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "Envoy not ready after {READY_TIMEOUT:?}:\n{}",
                    self.logs_tail(60)
                );
            }
            if self.admin_port == 0 {
                self.admin_port = read_admin_port(admin_file).unwrap_or(0);
            }
            if self.admin_port != 0 {
                if let Ok(r) = http::get(&self.admin_url("/ready"), &[]) {
                    if r.status == 200 && r.body.trim() == "LIVE" {
                        return Ok(());
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn check_v8(&self) -> anyhow::Result<()> {
        let info = http::get(&self.admin_url("/server_info"), &[])?.json()?;
        let has_v8 = info["node"]["extensions"]
            .as_array()
            .is_some_and(|exts| exts.iter().any(|e| e["name"] == "envoy.wasm.runtime.v8"));
        if !has_v8 {
            bail!("this Envoy build lacks the envoy.wasm.runtime.v8 extension");
        }
        Ok(())
    }

    /// Listener port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Admin port.
    /// The ingress listener's JSON access log (one line per request).
    pub fn access_log(&self) -> PathBuf {
        self.run_dir.join("access.log")
    }

    /// Port of the egress listener (calls to third-party APIs).
    pub fn egress_port(&self) -> u16 {
        self.egress_port
    }

    /// URL of `path` on the egress listener.
    pub fn egress_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.egress_port, path)
    }

    pub fn admin_port(&self) -> u16 {
        self.admin_port
    }

    /// Run directory (rendered config, ECDS dir, logs, config dump).
    pub fn run_dir(&self) -> &Path {
        &self.run_dir
    }

    /// Directory Envoy watches for `sluice.json`.
    pub fn ecds_dir(&self) -> PathBuf {
        self.run_dir.join("ecds")
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port, path)
    }

    /// `http://127.0.0.1:<admin_port><path>`.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.admin_port, path)
    }

    /// Replaces the filter's policy through ECDS (returns once written; Envoy
    /// applies it asynchronously).
    pub fn apply_policy(&self, json: &str) -> anyhow::Result<()> {
        ecds::write_ecds(&self.ecds_dir(), &self.wasm, json)
    }

    /// All counters and gauges.
    pub fn stats(&self) -> anyhow::Result<HashMap<String, u64>> {
        let body = http::get(&self.admin_url("/stats?format=json"), &[])?.json()?;
        parse_stats(&body)
    }

    /// One counter or gauge, if it exists.
    pub fn stat(&self, name: &str) -> Option<u64> {
        self.stats().ok()?.get(name).copied()
    }

    /// Sluice's shared-data reads and writes so far (its
    /// `sluice_shared_data_reads_total` and `..._writes_total`, summed), or
    /// `None` when Envoy has neither (another filter, or an older build).
    /// Each worker hands its counts over on its tick, within 100 ms.
    pub fn shared_data_calls(&self) -> Option<u64> {
        let stats = self.stats().ok()?;
        let of = |name: &str| {
            stats
                .iter()
                .find(|(k, _)| k.contains(name))
                .map(|(_, v)| *v)
        };
        match (
            of("sluice_shared_data_reads_total"),
            of("sluice_shared_data_writes_total"),
        ) {
            (None, None) => None,
            (r, w) => Some(r.unwrap_or(0).saturating_add(w.unwrap_or(0))),
        }
    }

    /// Polls `name` until `pred` holds; returns the satisfying value.
    pub fn wait_for_stat(
        &self,
        name: &str,
        pred: impl Fn(u64) -> bool,
        timeout: Duration,
    ) -> anyhow::Result<u64> {
        let deadline = Instant::now() + timeout;
        loop {
            let value = self.stat(name);
            if let Some(v) = value.filter(|v| pred(*v)) {
                return Ok(v);
            }
            if Instant::now() >= deadline {
                bail!("stat {name} did not reach the expected value within {timeout:?} (last: {value:?})");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Resident memory of the Envoy process.
    pub fn rss_bytes(&self) -> anyhow::Result<u64> {
        let pid = process::find_named(self.group.pid(), "envoy")
            .ok_or_else(|| anyhow!("no envoy process under pid {}", self.group.pid()))?;
        process::rss_bytes(pid)
    }

    /// Last `n` lines of Envoy's stderr log.
    pub fn logs_tail(&self, n: usize) -> String {
        process::tail(&self.run_dir.join("stderr.log"), n)
    }

    /// Stops Envoy (same as dropping it).
    pub fn stop(self) {
        drop(self)
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- Envoy {} stderr (last 80 lines) ----\n{}\n----",
                self.run_dir.display(),
                self.logs_tail(80)
            );
            // Keep the run directory of a failed test for inspection.
            if let Some(temp) = self.temp.take() {
                let _ = temp.keep();
            }
        }
        self.group.terminate();
    }
}

fn command(envoy: &Path, config: &Path, admin_file: &Path, opts: &EnvoyOptions) -> Command {
    let args: Vec<String> = vec![
        "-c".into(),
        config.to_string_lossy().into_owned(),
        "--admin-address-path".into(),
        admin_file.to_string_lossy().into_owned(),
        "--concurrency".into(),
        opts.concurrency.to_string(),
        "--use-dynamic-base-id".into(),
        "-l".into(),
        opts.log_level.clone(),
    ];
    let mut cmd = match process::on_path("func-e") {
        Some(func_e) => {
            let mut cmd = Command::new(func_e);
            cmd.arg("run")
                .args(args)
                .env("ENVOY_PATH", envoy)
                .env("ENVOY_VERSION", ENVOY_VERSION);
            cmd
        }
        None => {
            let mut cmd = Command::new(envoy);
            cmd.args(args);
            cmd
        }
    };
    // Only the secret this stack chose, never one from the caller's shell.
    match &opts.counter_secret {
        Some(secret) => cmd.env(ecds::COUNTER_SECRET_ENV, secret),
        None => cmd.env_remove(ecds::COUNTER_SECRET_ENV),
    };
    cmd
}

fn read_admin_port(file: &Path) -> Option<u16> {
    let text = std::fs::read_to_string(file).ok()?;
    text.trim().rsplit(':').next()?.parse().ok()
}

fn parse_stats(body: &serde_json::Value) -> anyhow::Result<HashMap<String, u64>> {
    let list = body["stats"]
        .as_array()
        .context("no `stats` array in /stats?format=json")?;
    Ok(list
        .iter()
        .filter_map(|s| Some((s["name"].as_str()?.to_string(), s["value"].as_u64()?)))
        .collect())
}
