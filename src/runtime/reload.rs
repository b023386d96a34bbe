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
        let (old_listen, new_listen) = (old.cfg.listeners(), cfg.listeners());
        let added: Vec<(SocketAddr, bool)> = new_listen.iter().filter(|a| !old_listen.contains(a)).copied().collect();
        let mut opened = Vec::new();
        for &(want, tls) in &added {
            let sockets = super::bind_all(want, self.global.shards, self.backlog).map_err(|e| vec![e])?;
            opened.push((want, tls, sockets));
        }
        let id = old.id + 1;
        {
            let mut reg = self.global.listeners.lock().unwrap_or_else(|e| e.into_inner());
            reg.retain(|set| new_listen.contains(&(set.addr, set.tls)));
            for (addr, tls, sockets) in opened {
                reg.push(ListenerSet { addr, tls, version: id, slots: sockets.into_iter().map(Some).collect() });
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

/// Re-resolves upstream host names every `upstream.resolve_every`, for as long as the gateway
/// runs, when any entry is a name. A changed address set is applied as a reload of the running
/// config (so every shard switches cleanly and idle connections to addresses that stayed are
/// kept); a failed lookup keeps the last known addresses.
pub fn start_resolver(reloader: Arc<Reloader>) {
    let uses_names = |cfg: &Config| cfg.services.iter().flat_map(|s| &s.entries).any(|(e, _)| e.parse::<SocketAddr>().is_err());
    if !uses_names(&reloader.global.published().cfg) {
        return;
    }
    let spawned = std::thread::Builder::new().name("ringgate-resolve".into()).spawn(move || loop {
        let every = reloader.global.published().cfg.upstream.resolve_every;
        let wake = std::time::Instant::now() + every;
        while std::time::Instant::now() < wake {
            if reloader.global.stop.load(std::sync::atomic::Ordering::Relaxed) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let current = reloader.global.published().cfg.clone();
        if let Some(next) = re_resolved(&current, system_resolve) {
            tracing::info!("upstream addresses changed; applying them");
            let _ = reloader.reload_with(next);
        }
    });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start the upstream resolver; names keep their first addresses");
    }
}

fn system_resolve(entry: &str) -> Vec<SocketAddr> {
    use std::net::ToSocketAddrs;
    entry.to_socket_addrs().map(|it| it.collect()).unwrap_or_default()
}

/// `cfg` with every service's endpoints resolved again by `resolve`, or `None` if nothing changed.
fn re_resolved(cfg: &Config, resolve: impl Fn(&str) -> Vec<SocketAddr>) -> Option<Config> {
    let mut next = cfg.clone();
    let mut changed = false;
    for s in &mut next.services {
        if let Some((addrs, weights)) = s.re_resolved(&resolve) {
            tracing::info!(service = %s.name, before = ?s.upstreams, after = ?addrs, "upstream addresses changed");
            s.upstreams = addrs;
            s.weights = weights;
            changed = true;
        }
    }
    changed.then_some(next)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_changed_address_set_is_a_new_config_and_a_failed_lookup_is_not() {
        let cfg = Config::parse(
            "[[services]]\nname = \"s\"\nupstreams = [\"localhost:80\", { addr = \"127.0.0.9:81\", weight = 2 }]\n\
             [[routes]]\nname = \"r\"\npaths = [\"/\"]\nservice = \"s\"\n",
        )
        .unwrap();
        let same = |e: &str| if e.starts_with("localhost") { cfg.services[0].upstreams[..cfg.services[0].upstreams.len() - 1].to_vec() } else { vec!["127.0.0.9:81".parse().unwrap()] };
        assert!(re_resolved(&cfg, same).is_none());
        let moved = |e: &str| if e.starts_with("localhost") { vec!["127.0.0.5:80".parse().unwrap(), "127.0.0.6:80".parse().unwrap()] } else { vec!["127.0.0.9:81".parse().unwrap()] };
        let next = re_resolved(&cfg, moved).expect("a change");
        let want: Vec<SocketAddr> = ["127.0.0.5:80", "127.0.0.6:80", "127.0.0.9:81"].iter().map(|a| a.parse().unwrap()).collect();
        assert_eq!(next.services[0].upstreams, want);
        assert_eq!(next.services[0].weights, vec![1, 1, 2]);
        let failing = |e: &str| if e.starts_with("localhost") { Vec::new() } else { vec!["127.0.0.9:81".parse().unwrap()] };
        assert!(re_resolved(&cfg, failing).is_none(), "a failed lookup keeps the last addresses");
    }
}
