//! Real `redis-server` instances for the cluster-limit tests, each on a free loopback port in a
//! directory of its own, stopped (by PID) on drop; and gateway processes (`ringgate serve`).

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// A port nobody listens on right now (bound and released; callers retry if it is taken).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ringgate-test-{tag}-{}-{}", std::process::id(), free_port()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub struct Redis {
    pub port: u16,
    child: Option<Child>,
    dir: PathBuf,
    cluster: bool,
    extra: Vec<String>,
    password: Option<String>,
}

impl Redis {
    /// A standalone Redis (no persistence).
    pub fn start() -> Redis {
        Redis::start_on(free_port(), false, &[])
    }

    /// A standalone Redis with more `redis-server` arguments (e.g. `--requirepass`).
    pub fn start_with(args: &[&str]) -> Redis {
        Redis::start_on(free_port(), false, args)
    }

    /// A node with cluster mode on (not yet part of a cluster).
    pub fn start_cluster_node() -> Redis {
        // Its cluster bus listens on port + 10000: both must be free.
        let port = (0..1000)
            .map(|_| free_port())
            .find(|p| *p < 55_000 && TcpListener::bind(("127.0.0.1", p + 10_000)).is_ok())
            .expect("a free port pair for a cluster node");
        Redis::start_on(port, true, &[])
    }

    fn start_on(port: u16, cluster: bool, extra: &[&str]) -> Redis {
        let password = extra.windows(2).find(|w| w[0] == "--requirepass").map(|w| w[1].to_string());
        let extra = extra.iter().map(|a| a.to_string()).collect();
        let mut r = Redis { port, child: None, dir: temp_dir("redis"), cluster, extra, password };
        r.spawn();
        r
    }

    fn spawn(&mut self) {
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--dir", self.dir.to_str().unwrap()]);
        cmd.args(&self.extra);
        if self.cluster {
            cmd.args(["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "5000"]);
        }
        let child = cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap_or_else(|e| {
            panic!("cannot start redis-server ({e}); install it (Debian: apt-get install redis-server) — .ci/run does")
        });
        self.child = Some(child);
        let end = Instant::now() + Duration::from_secs(10);
        while Instant::now() < end {
            if self.cli(&["PING"]).trim() == "PONG" {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server on port {} did not answer PING", self.port);
    }

    /// `redis-cli -p PORT ARGS...`, its output.
    pub fn cli(&self, args: &[&str]) -> String {
        let mut cmd = Command::new("redis-cli");
        cmd.args(["-h", "127.0.0.1", "-p", &self.port.to_string()]);
        if let Some(p) = &self.password {
            cmd.env("REDISCLI_AUTH", p);
        }
        let out = cmd.args(args).output();
        match out {
            Ok(o) => String::from_utf8_lossy(&o.stdout).into_owned(),
            Err(e) => panic!("cannot run redis-cli ({e}); it comes with redis-server"),
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Stops the server (SIGKILL: as a crash would).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port, empty (scripts and keys gone).
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Every key with its TTL in ms (`-1`: none), via SCAN.
    pub fn keys_with_ttl(&self) -> Vec<(String, i64)> {
        let keys = self.cli(&["--scan"]);
        keys.lines()
            .filter(|k| !k.is_empty())
            .map(|k| (k.to_string(), self.cli(&["PTTL", k]).trim().parse().unwrap_or(-3)))
            .collect()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Three cluster nodes made into one cluster by `redis-cli --cluster create`.
pub fn cluster3() -> Vec<Redis> {
    let nodes: Vec<Redis> = (0..3).map(|_| Redis::start_cluster_node()).collect();
    let addrs: Vec<String> = nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)).collect();
    let out = Command::new("redis-cli")
        .args(["--cluster", "create"])
        .args(&addrs)
        .args(["--cluster-replicas", "0", "--cluster-yes"])
        .output()
        .expect("redis-cli --cluster create");
    assert!(out.status.success(), "cluster create failed: {}", String::from_utf8_lossy(&out.stdout));
    let end = Instant::now() + Duration::from_secs(20);
    while Instant::now() < end {
        if nodes.iter().all(|n| n.cli(&["CLUSTER", "INFO"]).contains("cluster_state:ok")) {
            return nodes;
        }
        thread::sleep(Duration::from_millis(50));
    }
    panic!("cluster did not reach cluster_state:ok");
}

/// A `ringgate serve` process on a free port; killed (by PID) on drop.
pub struct GwProc {
    pub addr: SocketAddr,
    child: Child,
    dir: PathBuf,
}

impl GwProc {
    /// `config` with `{listen}` replaced by the address picked for it.
    pub fn start(config: &str) -> GwProc {
        for _ in 0..3 {
            let port = free_port();
            let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
            let dir = temp_dir("gw");
            let path = dir.join("gateway.toml");
            std::fs::write(&path, config.replace("{listen}", &addr.to_string())).unwrap();
            let child = Command::new(env!("CARGO_BIN_EXE_ringgate"))
                .args(["serve", "--config", path.to_str().unwrap()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start ringgate serve");
            let mut gw = GwProc { addr, child, dir };
            let end = Instant::now() + Duration::from_secs(10);
            while Instant::now() < end {
                if TcpStream::connect(addr).is_ok() {
                    return gw;
                }
                if let Ok(Some(_)) = gw.child.try_wait() {
                    break; // lost the port race: try another
                }
                thread::sleep(Duration::from_millis(20));
            }
            let _ = gw.child.kill();
        }
        panic!("ringgate serve did not start");
    }
}

impl Drop for GwProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
