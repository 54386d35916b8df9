//! Result files and the generated parts of README.md and docs/bench.md.
//!
//! Each scenario writes `<out>/<YYYY-MM-DD>-<scenario>.json` (machine,
//! settings, every run's raw figures, summaries, targets), `….md` (its
//! table) and its SVG charts beside them. README.md shows the latest table
//! of every scenario between `<!-- bench:start -->` and `<!-- bench:end -->`;
//! docs/bench.md lists the targets of the latest runs between
//! `<!-- bench:targets:start -->` and `<!-- bench:targets:end -->`. Both
//! blocks are rebuilt from the files in `<out>`, so a run of one scenario
//! keeps the others' latest results.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use crate::machine::Machine;
use crate::stats::number;
use crate::Scenario;
use sluice_core::response::civil_from_days;

pub const README_START: &str = "<!-- bench:start -->";
pub const README_END: &str = "<!-- bench:end -->";
pub const TARGETS_START: &str = "<!-- bench:targets:start -->";
pub const TARGETS_END: &str = "<!-- bench:targets:end -->";
/// Opens the set-up paragraph of a scenario's markdown, which README.md
/// leaves out (it links to the file instead).
pub const SETUP: &str = "_Set-up:_ ";

/// One target of the issue, checked against a run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Target {
    pub name: String,
    pub expected: String,
    pub measured: String,
    /// `None` when the run cannot tell (e.g. no variant to compare with).
    pub met: Option<bool>,
    /// A figure about Envoy or the VM on this machine ("≈" in the issue),
    /// not a target for Sluice: reported as within or outside its range.
    #[serde(default)]
    pub reference: bool,
    /// The machine moved the same figure more than the target's margin
    /// between rounds with nothing changed: no verdict (`met` is `None`).
    #[serde(default)]
    pub noisy: bool,
}

impl Target {
    pub fn new(name: &str, expected: &str, measured: String, met: Option<bool>) -> Target {
        Target { name: name.into(), expected: expected.into(), measured, met, reference: false, noisy: false }
    }

    /// No verdict when `noise` (how far a baseline's figure moved between
    /// rounds with nothing changed, `what`) exceeds `margin` (how close to
    /// the threshold a difference must be told): a difference that small
    /// cannot be told from the machine's own swings. A single round shows
    /// no noise.
    pub fn unless_noisy(self, noise: Option<f64>, margin: f64, what: &str) -> Target {
        match noise {
            Some(n) if n > margin => {
                Target { measured: format!("{}; {what} moved {} µs between rounds", self.measured, number(n, 0)), met: None, noisy: true, ..self }
            }
            _ => self,
        }
    }

    /// A reference figure, see [`Target::reference`].
    pub fn reference(name: &str, expected: &str, measured: String, within: Option<bool>) -> Target {
        Target { reference: true, ..Target::new(name, expected, measured, within) }
    }

    pub fn verdict(&self) -> &'static str {
        match (self.reference, self.met) {
            (false, Some(true)) => "met",
            (false, Some(false)) => "**missed**",
            (true, Some(true)) => "reference: within",
            (true, Some(false)) => "reference: outside",
            (_, None) if self.noisy => "too noisy to tell",
            (_, None) => "not measured",
        }
    }
}

/// What every result file starts with.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Envelope {
    pub scenario: String,
    pub title: String,
    pub date: String,
    pub started_at: String,
    pub finished_at: String,
    pub quick: bool,
    /// The command that produced the file.
    pub command: String,
    pub machine: Machine,
    pub targets: Vec<Target>,
    pub settings: serde_json::Value,
    pub result: serde_json::Value,
}

/// Where one scenario's files go: `<dir>/<date>-<scenario><suffix>`.
pub struct Files {
    pub dir: PathBuf,
    pub date: String,
    pub scenario: Scenario,
}

impl Files {
    pub fn name(&self, suffix: &str) -> String {
        format!("{}-{}{suffix}", self.date, self.scenario.name())
    }

    pub fn path(&self, suffix: &str) -> PathBuf {
        self.dir.join(self.name(suffix))
    }

    /// A markdown link target for a file beside the markdown file.
    pub fn link(&self, suffix: &str) -> String {
        format!("./{}", self.name(suffix))
    }

    /// Writes the JSON and markdown files.
    pub fn write(&self, envelope: &Envelope, markdown: &str) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.dir).with_context(|| format!("creating {}", self.dir.display()))?;
        let json = serde_json::to_string_pretty(envelope)?;
        std::fs::write(self.path(".json"), json + "\n")?;
        std::fs::write(self.path(".md"), markdown)?;
        Ok(())
    }
}

/// The latest `<date>-<scenario><suffix>` file in `dir`, if any.
pub fn latest(dir: &Path, scenario: Scenario, suffix: &str) -> Option<PathBuf> {
    let tail = format!("-{}{suffix}", scenario.name());
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.len() == 10 + tail.len() && n.ends_with(&tail) && is_date(&n[..10]))
        .collect();
    names.sort();
    names.pop().map(|n| dir.join(n))
}

fn is_date(s: &str) -> bool {
    s.bytes().enumerate().all(|(i, b)| if i == 4 || i == 7 { b == b'-' } else { b.is_ascii_digit() })
}

/// The README block: every scenario's latest table, links made relative to
/// the repository root (`results` is `dir` relative to it).
pub fn readme_block(dir: &Path, results: &str) -> String {
    let mut parts = vec![format!(
        "Latest results of `make bench` (written by `sluice-bench` into `{results}/`; \
         [docs/bench.md](docs/bench.md) explains the scenarios and the targets). \
         Medians over interleaved rounds with min–max; ratios are the figures to compare."
    )];
    for scenario in Scenario::ALL {
        let Some(path) = latest(dir, scenario, ".md") else { continue };
        let Ok(text) = std::fs::read_to_string(&path) else { continue };
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let kept: Vec<&str> = text.trim().split("\n\n").filter(|p| !p.starts_with(SETUP)).collect();
        let mut block = kept.join("\n\n").replace("](./", &format!("]({results}/"));
        block.push_str(&format!("\n\nSet-up and raw figures: [{name}]({results}/{name}) and its `.json`."));
        parts.push(block);
    }
    parts.join("\n\n")
}

/// The docs/bench.md block: the targets of every scenario's latest run.
pub fn targets_block(dir: &Path, results: &str) -> String {
    let mut rows = Vec::new();
    for scenario in Scenario::ALL {
        let Some(path) = latest(dir, scenario, ".json") else { continue };
        let Ok(envelope) =
            std::fs::read_to_string(&path).map_err(anyhow::Error::from).and_then(|t| serde_json::from_str::<Envelope>(&t).map_err(anyhow::Error::from))
        else {
            continue;
        };
        let file = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let run = if envelope.quick { "quick run" } else { "full run" };
        for t in &envelope.targets {
            rows.push(format!("| {} | {} | {} | {} | [{}]({results}/{file}), {run} |", t.name, t.expected, t.measured, t.verdict(), envelope.date));
        }
    }
    if rows.is_empty() {
        return "No results yet: run `make bench`.".into();
    }
    let mut out = vec!["| target | expected | latest | verdict | from |".to_string(), "|---|---|---|---|---|".to_string()];
    out.extend(rows);
    out.join("\n")
}

/// Replaces what lies between `start` and `end` (markers kept).
pub fn replace_between(text: &str, start: &str, end: &str, body: &str) -> anyhow::Result<String> {
    let Some(a) = text.find(start) else { bail!("marker {start} not found") };
    let from = a + start.len();
    let Some(b) = text[from..].find(end).map(|i| i + from) else { bail!("marker {end} not found after {start}") };
    Ok(format!("{}\n{}\n{}", &text[..from], body.trim(), &text[b..]))
}

/// Rewrites the block between `start` and `end` in `file`.
pub fn rewrite(file: &Path, start: &str, end: &str, body: &str) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let new = replace_between(&text, start, end, body).with_context(|| format!("in {}", file.display()))?;
    if new != text {
        std::fs::write(file, new).with_context(|| format!("writing {}", file.display()))?;
    }
    Ok(())
}

/// Today's UTC date (`YYYY-MM-DD`) and the time (`YYYY-MM-DDTHH:MM:SSZ`).
pub fn utc_now() -> (String, String) {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    utc(secs)
}

fn utc(secs: u64) -> (String, String) {
    let days = (secs / 86_400) as i64;
    let rest = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    let date = format!("{y:04}-{m:02}-{d:02}");
    let time = format!("{date}T{:02}:{:02}:{:02}Z", rest / 3600, rest / 60 % 60, rest % 60);
    (date, time)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_from_unix_seconds() {
        assert_eq!(utc(0), ("1970-01-01".into(), "1970-01-01T00:00:00Z".into()));
        assert_eq!(utc(951_782_400).0, "2000-02-29");
        assert_eq!(utc(1_700_000_000).1, "2023-11-14T22:13:20Z");
        assert_eq!(utc(1_798_761_599).1, "2026-12-31T23:59:59Z");
    }

    #[test]
    fn the_block_between_markers_is_replaced() {
        let text = "intro\n<!-- a -->\nold\nlines\n<!-- b -->\nrest\n";
        let new = replace_between(text, "<!-- a -->", "<!-- b -->", "new\n").unwrap();
        assert_eq!(new, "intro\n<!-- a -->\nnew\n<!-- b -->\nrest\n");
        assert_eq!(replace_between(&new, "<!-- a -->", "<!-- b -->", "new").unwrap(), new);
        assert!(replace_between("no markers", "<!-- a -->", "<!-- b -->", "x").is_err());
        assert!(replace_between("<!-- b --> <!-- a -->", "<!-- a -->", "<!-- b -->", "x").is_err());
    }

    #[test]
    fn the_latest_file_is_the_last_date() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["2026-01-02-overhead.md", "2026-11-27-overhead.md", "2026-12-01-denial.md", "notes-overhead.md"] {
            std::fs::write(dir.path().join(name), "### x\n\n_Set-up:_ long\n\n![c](./2026-11-27-overhead-rps.svg)\n").unwrap();
        }
        let latest = latest(dir.path(), Scenario::Overhead, ".md").unwrap();
        assert!(latest.ends_with("2026-11-27-overhead.md"));
        let block = readme_block(dir.path(), "bench/results");
        assert!(block.contains("](bench/results/2026-11-27-overhead-rps.svg)"), "{block}");
        assert!(block.contains("[2026-11-27-overhead.md](bench/results/2026-11-27-overhead.md)"), "{block}");
        assert!(!block.contains("long"), "{block}");
        assert!(latest_is_none_for_missing(dir.path()));
    }

    fn latest_is_none_for_missing(dir: &Path) -> bool {
        latest(dir, Scenario::Outage, ".md").is_none()
    }
}
