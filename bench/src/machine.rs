//! What the results were measured on (CPU, Envoy, commit), and CPU pinning:
//! Envoy on one core, the load generators and everything else on another,
//! so that they do not take turns on the same core.

use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use wasm_test_harness::Envoy;

use crate::wrk::on_path;

/// The machine and software a run used.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Machine {
    /// CPUs available to the bench when it started.
    pub nproc: usize,
    pub cpu_model: String,
    pub kernel: String,
    /// `envoy --version`.
    pub envoy_version: String,
    /// `git rev-parse --short HEAD`, `-dirty` when the tree has changes.
    pub git_commit: String,
    /// How Envoy and the load were placed on CPUs.
    pub pinning: String,
}

impl Machine {
    pub fn detect(pinning: Option<&Pinning>) -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model =
            cpuinfo.lines().find_map(|l| l.strip_prefix("model name")?.split_once(':').map(|(_, v)| v.trim().to_string())).unwrap_or_else(|| "unknown".into());
        Machine {
            nproc: nproc(),
            cpu_model,
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease").map_or_else(|_| "unknown".into(), |s| s.trim().into()),
            envoy_version: envoy_version().unwrap_or_else(|e| format!("unknown ({e})")),
            git_commit: git_commit().unwrap_or_else(|| "unknown".into()),
            pinning: pinning.map_or_else(|| "none (taskset missing or a single CPU)".into(), Pinning::describe),
        }
    }
}

/// CPUs this process may run on.
pub fn nproc() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn envoy_version() -> anyhow::Result<String> {
    let bin = wasm_test_harness::envoy_binary()?;
    let out = Command::new(&bin).arg("--version").output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find(|l| l.contains("version")).unwrap_or("").trim();
    Ok(line.rsplit("version:").next().unwrap_or(line).trim().to_string())
}

fn git_commit() -> Option<String> {
    let root = wasm_test_harness::repo_root();
    let git = |args: &[&str]| -> Option<String> {
        let out = Command::new("git").arg("-C").arg(&root).args(args).stderr(Stdio::null()).output().ok()?;
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    let commit = git(&["rev-parse", "--short", "HEAD"])?;
    let dirty = git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    Some(if dirty { format!("{commit}-dirty") } else { commit })
}

/// Envoy on CPU 0, the bench and everything it starts (wrk, the load
/// generator, Redis, the counter service) on CPU 1, set with `taskset`.
#[derive(Debug, Clone)]
pub struct Pinning {
    envoy_cpu: usize,
    load_cpu: usize,
    all: String,
}

impl Pinning {
    /// `None` without `taskset` or with a single CPU.
    pub fn detect() -> Option<Pinning> {
        let n = nproc();
        (n >= 2 && on_path("taskset").is_some()).then(|| Pinning { envoy_cpu: 0, load_cpu: 1, all: format!("0-{}", n - 1) })
    }

    pub fn describe(&self) -> String {
        format!("Envoy on CPU {}, load generators and the rest on CPU {} (taskset)", self.envoy_cpu, self.load_cpu)
    }

    /// Moves this process (every thread) and so all it starts from now on
    /// to the load CPU.
    pub fn bench_to_load_cpu(&self) -> anyhow::Result<()> {
        taskset(std::process::id(), &self.load_cpu.to_string())
    }

    /// Lets this process run anywhere again.
    pub fn release_bench(&self) -> anyhow::Result<()> {
        taskset(std::process::id(), &self.all)
    }

    /// Moves every thread of `envoy` to the Envoy CPU.
    pub fn envoy_to_its_cpu(&self, envoy: &Envoy) -> anyhow::Result<()> {
        let pid = envoy_pid(envoy).context("finding Envoy's process id")?;
        taskset(pid, &self.envoy_cpu.to_string())
    }
}

fn taskset(pid: u32, cpus: &str) -> anyhow::Result<()> {
    let status = Command::new("taskset").args(["-a", "-p", "-c", cpus]).arg(pid.to_string()).stdout(Stdio::null()).status().context("running taskset")?;
    if !status.success() {
        bail!("taskset -a -p -c {cpus} {pid} failed ({status})");
    }
    Ok(())
}

/// The process named `envoy` whose command line names this Envoy's config.
/// CPU time Envoy's threads have used so far, in nanoseconds (the first
/// field of every `/proc/<pid>/task/<tid>/schedstat`); `None` when the
/// process or schedstat cannot be read.
pub fn envoy_cpu_ns(envoy: &Envoy) -> Option<u64> {
    let pid = envoy_pid(envoy)?;
    let tasks = std::fs::read_dir(Path::new("/proc").join(pid.to_string()).join("task")).ok()?;
    let mut total = 0u64;
    for task in tasks {
        let text = std::fs::read_to_string(task.ok()?.path().join("schedstat")).ok()?;
        total = total.saturating_add(text.split_whitespace().next()?.parse::<u64>().ok()?);
    }
    Some(total)
}

fn envoy_pid(envoy: &Envoy) -> Option<u32> {
    let config = envoy.run_dir().join("envoy.yaml");
    let config = config.to_string_lossy();
    std::fs::read_dir("/proc").ok()?.find_map(|entry| {
        let pid: u32 = entry.ok()?.file_name().to_str()?.parse().ok()?;
        let dir = Path::new("/proc").join(pid.to_string());
        let comm = std::fs::read_to_string(dir.join("comm")).ok()?;
        let cmdline = std::fs::read(dir.join("cmdline")).ok()?;
        let named = comm.trim() == "envoy" && cmdline.split(|b| *b == 0).any(|arg| arg == config.as_bytes());
        named.then_some(pid)
    })
}
