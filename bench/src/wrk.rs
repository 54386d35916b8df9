//! Saturation load from wrk (`wrk -t1 -c<N> -d<secs> --latency`), driven by
//! `bench/wrk/mix.lua`, whose `done()` prints the exact figures read here.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use crate::mix::Mix;

/// Prefix of the line `mix.lua` prints at the end of a run.
const MARKER: &str = "sluice-bench ";

/// What one wrk run measured.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WrkResult {
    pub requests: u64,
    pub duration_us: u64,
    /// Responses other than 2xx/3xx (the denials).
    pub non2xx: u64,
    pub connect_errors: u64,
    pub read_errors: u64,
    pub write_errors: u64,
    pub timeouts: u64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
}

impl WrkResult {
    /// Responses per second.
    pub fn rps(&self) -> f64 {
        self.requests as f64 / (self.duration_us.max(1) as f64 / 1e6)
    }

    /// Share of the responses that were not 2xx/3xx.
    pub fn denied(&self) -> f64 {
        self.non2xx as f64 / self.requests.max(1) as f64
    }

    /// Socket errors of any kind.
    pub fn errors(&self) -> u64 {
        self.connect_errors + self.read_errors + self.write_errors + self.timeouts
    }
}

/// The `wrk` binary and the mix script.
#[derive(Debug, Clone)]
pub struct Wrk {
    bin: PathBuf,
    script: PathBuf,
    /// Connections (`-c`); one thread (`-t1`) drives them all.
    pub connections: u32,
}

impl Wrk {
    /// Finds `wrk` on `PATH` and the script beside this crate.
    pub fn find(connections: u32) -> anyhow::Result<Wrk> {
        let Some(bin) = on_path("wrk") else {
            bail!("wrk is not installed: run `make wrk` (Debian package wrk)");
        };
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("wrk/mix.lua");
        if !script.is_file() {
            bail!("{} is missing", script.display());
        }
        Ok(Wrk { bin, script, connections })
    }

    /// Runs `mix` against 127.0.0.1:`port` for `duration`.
    pub fn run(&self, port: u16, mix: &Mix, duration: Duration) -> anyhow::Result<WrkResult> {
        self.run_script(port, &self.script, self.connections, &mix.wrk_args(), duration)
    }

    /// Runs `bench/wrk/<name>` with `args` after `--`, `connections`
    /// connections (one thread), against 127.0.0.1:`port` for `duration`.
    /// The script prints the `sluice-bench {json}` line as `mix.lua` does.
    pub fn run_named(&self, port: u16, name: &str, connections: u32, args: &[String], duration: Duration) -> anyhow::Result<WrkResult> {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("wrk").join(name);
        if !script.is_file() {
            bail!("{} is missing", script.display());
        }
        self.run_script(port, &script, connections, args, duration)
    }

    fn run_script(&self, port: u16, script: &Path, connections: u32, args: &[String], duration: Duration) -> anyhow::Result<WrkResult> {
        let secs = duration.as_secs().max(1);
        let out = Command::new(&self.bin)
            .arg("-t1")
            .arg(format!("-c{connections}"))
            .arg(format!("-d{secs}s"))
            .arg("--latency")
            .arg("-s")
            .arg(script)
            .arg(format!("http://127.0.0.1:{port}/"))
            .arg("--")
            .args(args)
            .output()
            .with_context(|| format!("running {}", self.bin.display()))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            bail!("wrk failed ({}): {}{}", out.status, stdout, String::from_utf8_lossy(&out.stderr));
        }
        parse(&stdout)
    }
}

/// The figures from wrk's output (the line `mix.lua` prints).
pub fn parse(stdout: &str) -> anyhow::Result<WrkResult> {
    let line = stdout.lines().find_map(|l| l.strip_prefix(MARKER)).with_context(|| format!("no `{MARKER}` line in wrk's output:\n{stdout}"))?;
    let result: WrkResult = serde_json::from_str(line).with_context(|| format!("bad wrk summary: {line}"))?;
    if result.requests == 0 {
        bail!("wrk completed no request:\n{stdout}");
    }
    Ok(result)
}

/// `program` if it is an executable file in a `PATH` directory.
pub fn on_path(program: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(program)).find(|p| p.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUTPUT: &str = "Running 3s test @ http://127.0.0.1:4000/
  1 threads and 32 connections
  Latency Distribution
     50%  820.00us
     99%    2.10ms
  94000 requests in 3.00s, 9.00MB read
  Non-2xx or 3xx responses: 47000
Requests/sec:  31333.33
sluice-bench {\"requests\": 94000, \"duration_us\": 3000000, \"non2xx\": 47000, \"connect_errors\": 0, \"read_errors\": 0, \"write_errors\": 0, \"timeouts\": 0, \"p50_us\": 820, \"p90_us\": 1300, \"p99_us\": 2100, \"max_us\": 9000}
";

    #[test]
    fn reads_the_summary_line() {
        let r = parse(OUTPUT).unwrap();
        assert_eq!(r.requests, 94_000);
        assert_eq!(r.p99_us, 2_100);
        assert!((r.rps() - 31_333.3).abs() < 0.1);
        assert!((r.denied() - 0.5).abs() < 1e-9);
        assert_eq!(r.errors(), 0);
    }

    #[test]
    fn refuses_output_without_a_summary_or_requests() {
        assert!(parse("Requests/sec: 1\n").is_err());
        let none = OUTPUT.replace("\"requests\": 94000", "\"requests\": 0");
        assert!(parse(&none).is_err());
    }
}
