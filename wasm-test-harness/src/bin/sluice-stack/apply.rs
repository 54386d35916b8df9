//! `sluice-stack apply`: validate a policy, write it to every instance's ECDS
//! directory, and confirm through the admin stats that each Envoy took it.
//!
//! Envoy's ECDS counters for the `sluice` filter live under
//! `extension_config_discovery.http_filter.sluice.`: `update_success` grows
//! when a resource is accepted; `update_rejected` (with `config_fail`) when the
//! filter refuses it, e.g. its `on_configure` fails; `update_failure` when the
//! file cannot be parsed. `config_reload` grows on rejection too, so it is not
//! a success signal.
//!
//! When an instance refuses the new resource, Envoy keeps running the last
//! good config, but its ECDS file now holds the refused one, which a restart
//! would load. So the previous file content is read before anything is
//! written and put back (atomically, like the update) on every instance that
//! refused it.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use wasm_test_harness::{get, write_ecds, StackFile, StackInstance, ECDS_FILE};

const PREFIX: &str = "extension_config_discovery.http_filter.sluice.";
const SUCCESS: &str = "update_success";
const FAILURES: [&str; 3] = ["update_rejected", "update_failure", "config_fail"];
const TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Args)]
pub struct ApplyArgs {
    /// Policy file to apply.
    #[arg(long)]
    policy: PathBuf,
    /// Run directory of the stack (holds stack.json).
    #[arg(long, default_value = ".sluice/run")]
    run_dir: PathBuf,
}

pub fn apply(args: ApplyArgs) -> anyhow::Result<ExitCode> {
    let policy = match crate::load_policy(&args.policy) {
        Ok(p) => p,
        Err(code) => return Ok(code),
    };
    let stack = StackFile::read(&args.run_dir)?;
    let before: Vec<HashMap<String, u64>> = stack
        .instances
        .iter()
        .map(counters)
        .collect::<anyhow::Result<_>>()?;
    let previous: Vec<Vec<u8>> = stack
        .instances
        .iter()
        .map(|inst| {
            let path = inst.ecds_dir.join(ECDS_FILE);
            std::fs::read(&path).with_context(|| format!("reading {}", path.display()))
        })
        .collect::<anyhow::Result<_>>()?;
    for inst in &stack.instances {
        write_ecds(&inst.ecds_dir, &stack.wasm, &policy)?;
    }
    let mut failed = 0;
    for (i, ((inst, before), previous)) in stack
        .instances
        .iter()
        .zip(&before)
        .zip(&previous)
        .enumerate()
    {
        let name = format!(
            "instance {i} (port {}, admin {})",
            inst.port, inst.admin_port
        );
        match confirm(inst, before) {
            Ok(()) => continue,
            Err(Refusal::Rejected(counter)) => {
                eprintln!(
                    "error: {name} rejected the policy ({PREFIX}{counter} increased); see {}",
                    stderr_log(inst).display()
                );
                match restore(&inst.ecds_dir, previous) {
                    Ok(()) => eprintln!(
                        "  restored its previous {} so a restart keeps the running policy",
                        inst.ecds_dir.join(ECDS_FILE).display()
                    ),
                    Err(e) => eprintln!(
                        "  could not restore its previous ECDS file ({e:#}); a restart would load the refused policy"
                    ),
                }
            }
            Err(Refusal::Other(msg)) => eprintln!("error: {name}: {msg}"),
        }
        failed += 1;
    }
    if failed > 0 {
        eprintln!(
            "error: policy not applied on {failed} of {} instance(s)",
            stack.instances.len()
        );
        return Ok(ExitCode::from(1));
    }
    println!("applied to {} instance(s)", stack.instances.len());
    Ok(ExitCode::SUCCESS)
}

/// Why an instance did not confirm the update.
enum Refusal {
    /// Envoy refused the resource; the named failure counter grew.
    Rejected(&'static str),
    /// No verdict: admin unreachable, or no counter moved in time.
    Other(String),
}

fn confirm(inst: &StackInstance, before: &HashMap<String, u64>) -> Result<(), Refusal> {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let now = counters(inst).map_err(|e| Refusal::Other(format!("{e:#}")))?;
        let grew = |k: &str| now.get(k).copied().unwrap_or(0) > before.get(k).copied().unwrap_or(0);
        if let Some(k) = FAILURES.iter().find(|k| grew(k)) {
            return Err(Refusal::Rejected(k));
        }
        if grew(SUCCESS) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(Refusal::Other(format!(
                "Envoy did not pick up the policy within {TIMEOUT:?}; see {}",
                stderr_log(inst).display()
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Envoy's log for `inst`: `stderr.log` beside its ECDS directory.
fn stderr_log(inst: &StackInstance) -> PathBuf {
    inst.ecds_dir
        .parent()
        .map(|d| d.join("stderr.log"))
        .unwrap_or_default()
}

/// Puts `content` back as `dir/sluice.json` the way [`write_ecds`] writes:
/// a temporary sibling renamed into place.
fn restore(dir: &Path, content: &[u8]) -> anyhow::Result<()> {
    let mut tmp = tempfile::Builder::new()
        .prefix(".sluice.json.tmp-")
        .tempfile_in(dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    tmp.write_all(content)?;
    tmp.as_file().sync_all()?;
    let target = dir.join(ECDS_FILE);
    tmp.persist(&target)
        .with_context(|| format!("renaming into {}", target.display()))?;
    Ok(())
}

fn counters(inst: &StackInstance) -> anyhow::Result<HashMap<String, u64>> {
    let url = format!(
        "http://127.0.0.1:{}/stats?format=json&filter=extension_config_discovery.http_filter.sluice.",
        inst.admin_port
    );
    let body = get(&url, &[])
        .map_err(|e| {
            anyhow::anyhow!(
                "admin on port {} unreachable ({e:#}); is the stack still running?",
                inst.admin_port
            )
        })?
        .json()?;
    let stats = body["stats"].as_array().cloned().unwrap_or_default();
    Ok(stats
        .iter()
        .filter_map(|s| {
            let name = s["name"].as_str()?.strip_prefix(PREFIX)?;
            Some((name.to_string(), s["value"].as_u64()?))
        })
        .collect())
}
