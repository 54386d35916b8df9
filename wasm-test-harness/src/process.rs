//! Child processes in their own process group, and a few `/proc` readers.
//!
//! [`Group`] owns a spawned child that leads a fresh process group; dropping it
//! sends SIGTERM to the whole group, waits up to a grace period, then SIGKILLs
//! whatever is left, so wrappers (func-e) and their children go too.
//! A process that a signal ends runs no `Drop`: [`stop_children_on_signal`]
//! makes SIGINT, SIGTERM and SIGHUP stop its children first.

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

/// Makes SIGINT, SIGTERM and SIGHUP stop the processes this one started
/// before it exits with 128 + the signal. Envoy, Redis and the counter
/// service each lead a process group of their own, so a signal sent to
/// this process alone (`kill`, `timeout`, a closed terminal) does not reach
/// them, and a process that a signal ends runs no `Drop` to stop them.
/// For a program's `main`. The signals are caught by handlers, not
/// blocked, so the children start with Envoy's usual signal mask.
pub fn stop_children_on_signal() -> anyhow::Result<()> {
    let mut signals =
        signal_hook::iterator::Signals::new([libc::SIGINT, libc::SIGTERM, libc::SIGHUP])
            .context("catching SIGINT, SIGTERM and SIGHUP")?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if let Some(signal) = signals.forever().next() {
                stop_children();
                std::process::exit(128 + signal);
            }
        })?;
    Ok(())
}

/// SIGKILLs this process's children: the process group each one leads
/// (with what it started), or the child alone when it shares ours (wrk,
/// the peers' rate-limit service). Twice, for a child started meanwhile.
fn stop_children() {
    for _ in 0..2 {
        for child in children(std::process::id()) {
            let Ok(pid) = libc::pid_t::try_from(child) else {
                continue;
            };
            // SAFETY: kill(2) signals the group `pid` leads, or the process.
            unsafe {
                if libc::kill(-pid, libc::SIGKILL) != 0 {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
        }
    }
}

/// A running child leading its own process group.
pub(crate) struct Group {
    child: Child,
    grace: Duration,
}

/// A child exited before it answered: the counter service and Redis exit
/// at once when they cannot listen, as when their port was taken.
#[derive(Debug)]
pub struct ExitedAtStart {
    pub bin: std::path::PathBuf,
    pub status: ExitStatus,
    pub port: u16,
}

impl std::fmt::Display for ExitedAtStart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} exited ({}) on port {}",
            self.bin.display(),
            self.status,
            self.port
        )
    }
}

impl std::error::Error for ExitedAtStart {}

/// Runs `start` (which picks fresh ports each time) up to three times
/// while its error says a port was `taken`. A port from `free_port` was
/// free a moment before the child binds it; the kernel may hand it to
/// another socket first (an outgoing connection's local port, or Envoy's
/// own admin port).
pub(crate) fn on_fresh_ports<T>(
    mut start: impl FnMut() -> anyhow::Result<T>,
    taken: impl Fn(&anyhow::Error) -> bool,
) -> anyhow::Result<T> {
    let mut attempts = 0;
    loop {
        attempts += 1;
        match start() {
            Err(e) if attempts < 3 && taken(&e) => continue,
            other => return other,
        }
    }
}

impl ExitedAtStart {
    /// Whether `e` is a child's exit at start: for the counter service and
    /// Redis, a port taken before they bound it.
    pub(crate) fn is(e: &anyhow::Error) -> bool {
        e.downcast_ref::<ExitedAtStart>().is_some()
    }
}

impl Group {
    /// Spawns `cmd` as leader of a new process group. Output goes to the given
    /// log files, or nowhere.
    pub(crate) fn spawn(
        mut cmd: Command,
        logs: Option<(&Path, &Path)>,
        grace: Duration,
    ) -> anyhow::Result<Group> {
        cmd.process_group(0).stdin(Stdio::null());
        match logs {
            Some((out, err)) => {
                cmd.stdout(
                    File::create(out).with_context(|| format!("creating {}", out.display()))?,
                );
                cmd.stderr(
                    File::create(err).with_context(|| format!("creating {}", err.display()))?,
                );
            }
            None => {
                cmd.stdout(Stdio::null()).stderr(Stdio::null());
            }
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", cmd.get_program().to_string_lossy()))?;
        Ok(Group { child, grace })
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit status if the leader has exited.
    pub(crate) fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// SIGTERM the group, wait for the leader up to the grace period, then
    /// SIGKILL the group.
    pub(crate) fn terminate(&mut self) {
        let pgid = self.child.id() as libc::pid_t;
        if self.exited().is_none() {
            signal_group(pgid, libc::SIGTERM);
            let deadline = Instant::now() + self.grace;
            while self.exited().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        // Also reaches children a wrapper may have left behind.
        signal_group(pgid, libc::SIGKILL);
        let _ = self.child.wait();
    }

    /// SIGKILL the group at once and reap the leader.
    pub(crate) fn kill(&mut self) {
        signal_group(self.child.id() as libc::pid_t, libc::SIGKILL);
        let _ = self.child.wait();
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.terminate();
    }
}

fn signal_group(pgid: libc::pid_t, signal: libc::c_int) {
    if pgid > 0 {
        // SAFETY: kill(2) with a negative pid only signals that process group.
        unsafe {
            libc::kill(-pgid, signal);
        }
    }
}

/// The last `n` lines of a text file (empty if unreadable).
pub(crate) fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// `pid` itself if its command name is `name`, else the first descendant that is.
pub(crate) fn find_named(pid: u32, name: &str) -> Option<u32> {
    if comm(pid).as_deref() == Some(name) {
        return Some(pid);
    }
    children(pid).into_iter().find_map(|c| find_named(c, name))
}

fn comm(pid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|s| s.trim().to_string())
}

fn children(pid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| parent(*p) == Some(pid))
        .collect()
}

fn parent(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name: state, ppid, ...
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// Resident set size of `pid` in bytes, from `/proc/<pid>/status`.
pub(crate) fn rss_bytes(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .with_context(|| format!("no VmRSS in /proc/{pid}/status"))?;
    Ok(kb * 1024)
}

/// Whether `program` is an executable file in one of the `PATH` directories.
pub(crate) fn on_path(program: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    use std::os::unix::fs::PermissionsExt;
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| {
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    #[test]
    fn stopping_the_children_kills_group_leaders_and_plain_children() {
        let mut sleep = Command::new("sleep");
        sleep.arg("30");
        let mut leader =
            Group::spawn(sleep, None, Duration::from_secs(1)).expect("sleep in a group");
        let mut plain = Command::new("sleep").arg("30").spawn().expect("sleep");
        stop_children();
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut stopped = None;
        while (stopped.is_none() || plain.try_wait().ok().flatten().is_none())
            && Instant::now() < deadline
        {
            stopped = stopped.or_else(|| leader.exited());
            std::thread::sleep(Duration::from_millis(10));
        }
        if plain.try_wait().ok().flatten().is_none() {
            // Not stopped: ended here with SIGTERM, which the check below tells apart.
            // SAFETY: kill(2) on our own child.
            unsafe { libc::kill(plain.id() as libc::pid_t, libc::SIGTERM) };
        }
        let plain = plain.wait().expect("the plain child reaped");
        assert_eq!(
            stopped.and_then(|s| s.signal()),
            Some(libc::SIGKILL),
            "the group's leader"
        );
        assert_eq!(plain.signal(), Some(libc::SIGKILL), "the plain child");
    }
}
