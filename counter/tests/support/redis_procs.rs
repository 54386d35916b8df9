//! Redis processes the harness does not offer: a server with `DEBUG` enabled
//! and a three-node Redis Cluster. Every process is killed on drop.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use wasm_test_harness::free_port;

/// `$SLUICE_REDIS_SERVER` (as the harness honours it), else the packaged one.
fn redis_server() -> String {
    std::env::var("SLUICE_REDIS_SERVER")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "/usr/bin/redis-server".to_owned())
}

/// `$SLUICE_REDIS_CLI`, else the packaged one.
fn redis_cli() -> String {
    std::env::var("SLUICE_REDIS_CLI")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "/usr/bin/redis-cli".to_owned())
}

/// A redis-server child, killed and reaped on drop.
pub struct Server {
    pub port: u16,
    child: Child,
    args: Vec<String>,
}

impl Server {
    /// Starts redis-server on a free port with `extra` arguments and waits
    /// for `PING`.
    pub fn start(extra: &[&str], dir: &Path) -> Server {
        let port = free_port();
        let mut args: Vec<String> = vec![
            "--save".into(),
            String::new(),
            "--appendonly".into(),
            "no".into(),
            "--bind".into(),
            "127.0.0.1".into(),
            "--port".into(),
            port.to_string(),
            "--daemonize".into(),
            "no".into(),
            "--dir".into(),
            dir.display().to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let child = spawn(&args);
        let server = Server { port, child, args };
        server.wait_for_ping();
        server
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server at once (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Kills the server and starts it again with the same arguments and port.
    pub fn restart(&mut self) {
        self.kill();
        self.child = spawn(&self.args);
        self.wait_for_ping();
    }

    fn wait_for_ping(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while command(self.port, "PING").as_deref() != Some("+PONG") {
            assert!(
                Instant::now() < deadline,
                "redis-server on {} never answered",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

fn spawn(args: &[String]) -> Child {
    Command::new(redis_server())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server starts")
}

/// Sends one inline command and returns the first reply line (without CRLF).
pub fn command(port: u16, line: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(format!("{line}\r\n").as_bytes()).ok()?;
    let mut buf = vec![0u8; 4096];
    let n = s.read(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
    Some(text.trim_end().to_owned())
}

/// A Redis server that accepts `DEBUG` commands.
pub fn debug_server(dir: &Path) -> Server {
    Server::start(&["--enable-debug-command", "yes"], dir)
}

/// Three primaries forming one Redis Cluster (no replicas).
pub struct Cluster {
    pub nodes: Vec<Server>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// Starts three cluster-enabled nodes, joins them with `redis-cli --cluster
    /// create`, and waits until every node reports `cluster_state:ok`.
    pub fn start() -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let nodes: Vec<Server> = (0..3)
            .map(|i| {
                let bus = free_port().to_string();
                let conf = format!("nodes-{i}.conf");
                Server::start(
                    &[
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        &conf,
                        "--cluster-port",
                        &bus,
                        "--cluster-node-timeout",
                        "2000",
                    ],
                    dir.path(),
                )
            })
            .collect();
        let out = Command::new(redis_cli())
            .arg("--cluster")
            .arg("create")
            .args(nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)))
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .expect("redis-cli runs");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        for node in &nodes {
            loop {
                let info = cluster_info(node.port);
                if info.contains("cluster_state:ok") {
                    break;
                }
                assert!(Instant::now() < deadline, "cluster not ok: {info}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        Cluster { nodes, _dir: dir }
    }

    /// The seed URLs.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(Server::url).collect()
    }
}

fn cluster_info(port: u16) -> String {
    let out = Command::new(redis_cli())
        .args(["-p", &port.to_string(), "cluster", "info"])
        .output();
    out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}
