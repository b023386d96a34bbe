//! Hot reload: re-reads the config file (on SIGHUP or `POST /reload`), refuses a config that
//! fails `check` or changes what only a restart can change, opens listeners the new config adds,
//! and publishes it; every shard switches on its next tick (within 50 ms), and requests in flight
//! finish on the generation they started on. Shared state carries over by name (see
//! `generation`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use super::generation::Published;
use super::shard::{Global, ListenerSet};
use crate::config::Config;
use crate::observe::log::Sink;

/// What reloads have done, for the metrics.
#[derive(Clone, Copy, Debug, Default)]
pub struct ReloadStatus {
    /// Unix time of the last attempt (0 if none).
    pub last_unix: f64,
    pub last_ok: bool,
    pub ok: u64,
    pub failed: u64,
}

pub struct Reloader {
    path: Option<PathBuf>,
    global: Arc<Global>,
    sink: Arc<Sink>,
    backlog: i32,
    status: Mutex<ReloadStatus>,
    /// Serialises reloads (a signal and an admin request at once).
    busy: Mutex<()>,
}

impl Reloader {
    pub fn new(path: Option<PathBuf>, global: Arc<Global>, sink: Arc<Sink>, backlog: i32) -> Reloader {
        Reloader { path, global, sink, backlog, status: Mutex::new(ReloadStatus { last_ok: true, ..Default::default() }), busy: Mutex::new(()) }
    }

    pub fn global(&self) -> &Arc<Global> {
        &self.global
    }

    pub fn status(&self) -> ReloadStatus {
        *self.status.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reloads from the config file the gateway was started with.
    pub fn reload(&self) -> Result<u64, Vec<String>> {
        let Some(path) = &self.path else {
            return Err(vec!["the gateway was started without a config file; nothing to re-read".into()]);
        };
        let res = Config::load(path).map_err(|e| e.errors.iter().map(|x| x.to_string()).collect()).and_then(|cfg| self.apply(cfg));
        self.finish(res)
    }

    /// Applies an already-parsed config (tests, and `reload`).
    pub fn reload_with(&self, cfg: Config) -> Result<u64, Vec<String>> {
        let res = self.apply(cfg);
        self.finish(res)
    }

    fn finish(&self, res: Result<u64, Vec<String>>) -> Result<u64, Vec<String>> {
        let mut st = self.status.lock().unwrap_or_else(|e| e.into_inner());
        st.last_unix = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
        st.last_ok = res.is_ok();
        match &res {
            Ok(g) => {
                st.ok += 1;
                tracing::info!(generation = g, "config reloaded");
            }
            Err(errors) => {
                st.failed += 1;
                tracing::error!(errors = errors.len(), "config reload refused; the previous config keeps serving");
                for e in errors {
                    tracing::error!("reload: {e}");
                }
            }
        }
        res
    }

    fn apply(&self, cfg: Config) -> Result<u64, Vec<String>> {
        let _busy = self.busy.lock().unwrap_or_else(|e| e.into_inner());
        let old = self.global.published();
        let problems = restart_only_changes(&old.cfg, &cfg);
        if !problems.is_empty() {
            return Err(problems);
        }
        // Listeners the new config adds: one socket per shard, each taken by its shard when it
        // switches. Removed ones leave the registry here (untaken sockets close) and are closed
        // by the shards when they switch.
        let added: Vec<SocketAddr> = cfg.server.listen.iter().filter(|a| !old.cfg.server.listen.contains(a)).copied().collect();
        let mut opened = Vec::new();
        for &want in &added {
            let sockets = super::bind_all(want, self.global.shards, self.backlog).map_err(|e| vec![e])?;
            opened.push((want, sockets));
        }
        let id = old.id + 1;
        {
            let mut reg = self.global.listeners.lock().unwrap_or_else(|e| e.into_inner());
            reg.retain(|set| cfg.server.listen.contains(&set.addr));
            for (addr, sockets) in opened {
                reg.push(ListenerSet { addr, version: id, slots: sockets.into_iter().map(Some).collect() });
            }
        }
        self.sink.set_target(&cfg.log.access);
        self.global.publish(Published::new(id, Arc::new(cfg), Some(&old)));
        Ok(id)
    }
}

/// Settings a running gateway cannot change (its threads, rings and buffers are made at start).
fn restart_only_changes(old: &Config, new: &Config) -> Vec<String> {
    let (o, n) = (&old.server, &new.server);
    let mut out = Vec::new();
    let mut check = |key: &str, changed: bool| {
        if changed {
            out.push(format!("{key}: cannot change while running; restart the gateway to apply it"));
        }
    };
    check("server.workers", o.workers != n.workers);
    check("server.pin_cores", o.pin_cores != n.pin_cores);
    check("server.driver", o.driver != n.driver);
    check("server.uring_entries", o.uring_entries != n.uring_entries);
    check("server.read_buffer", o.read_buffer != n.read_buffer);
    check("server.pooled_buffers", o.pooled_buffers != n.pooled_buffers);
    check("server.backlog", o.backlog != n.backlog);
    check("admin.listen", old.admin.listen != new.admin.listen);
    // Buffers are sized for the first config's head limit.
    check("limits.max_head (above the buffer size set at start)", new.limits.max_head > o.read_buffer.max(old.limits.max_head));
    out
}
