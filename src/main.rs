//! The `ringgate` command: `serve` runs the gateway, `check` validates a config, `stub` runs the
//! stand-in upstream. Signals: SIGTERM/SIGINT drain and stop (a second one stops at once), SIGHUP
//! reloads the config file, SIGUSR1 reopens the access log.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use ringgate::config::{Config, PathMatch, HostMatch};
use ringgate::runtime::Gateway;
use ringgate::stub::{self, StubOptions};

#[derive(Parser)]
#[command(
    name = "ringgate",
    version,
    about = "Thread-per-core HTTP/1.1 API gateway and reverse proxy (io_uring, epoll fallback)",
    long_about = "ringgate runs one shard per core, each with its own SO_REUSEPORT listener, routing \
trie, upstream connection pools and buffers, on monoio (io_uring where the kernel allows it, epoll \
otherwise). Configuration is one TOML file; see config/gateway.toml for every key.\n\n\
Signals: SIGTERM or SIGINT stop accepting and drain in-flight requests for up to timeouts.drain \
(a second signal exits at once); SIGHUP re-reads the config file (a config that fails `check` is \
refused and the old one keeps serving); SIGUSR1 reopens the access log file.\n\nEnvironment: RUST_LOG sets the log filter (default \"info\").",
    after_help = "Examples:\n  ringgate check --config config/gateway.toml\n  ringgate serve --config config/gateway.toml\n  ringgate stub --listen 127.0.0.1:3001 --name users --body-size 512"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Serve {
        /// Config file.
        #[arg(long, short, default_value = "config/gateway.toml")]
        config: PathBuf,
    },
    /// Validate a config file: print a summary, or every error with its key path and a fix.
    Check {
        #[arg(long, short, default_value = "config/gateway.toml")]
        config: PathBuf,
        /// Also connect to every `[cluster] redis` node (with its credentials) and PING it.
        #[arg(long)]
        connect: bool,
    },
    /// Run the stand-in upstream: answers every request with 200 and a JSON body.
    Stub {
        /// Address to listen on (port 0 picks a free port and prints it).
        #[arg(long, default_value = "127.0.0.1:3001")]
        listen: std::net::SocketAddr,
        /// Name echoed in the JSON body.
        #[arg(long, default_value = "stub")]
        name: String,
        /// Approximate response body size in bytes.
        #[arg(long, default_value_t = 256)]
        body_size: usize,
        /// Delay before each response, in milliseconds.
        #[arg(long, default_value_t = 0)]
        delay_ms: u64,
        /// Worker threads.
        #[arg(long, default_value_t = 1)]
        workers: usize,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_target(false)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match Cli::parse().command {
        Command::Check { config, connect } => match Config::load(&config) {
            Ok(cfg) => {
                let _ = writeln!(std::io::stdout(), "{} is valid", config.display());
                for w in &cfg.warnings {
                    let _ = writeln!(std::io::stdout(), "warning: {w}");
                }
                print_summary(&cfg, None);
                if !connect {
                    return ExitCode::SUCCESS;
                }
                let mut ok = true;
                for (addr, res) in ringgate::runtime::ping_redis(&cfg) {
                    match res {
                        Ok(()) => {
                            let _ = writeln!(std::io::stdout(), "cluster.redis {addr}: PONG");
                        }
                        Err(e) => {
                            ok = false;
                            eprintln!("cluster.redis {addr}: {e}\n    fix: start Redis there, or correct the address and credentials");
                        }
                    }
                }
                if ok {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                }
            }
            Err(errors) => {
                eprint!("{errors}");
                ExitCode::FAILURE
            }
        },
        Command::Serve { config } => serve(&config),
        Command::Stub { listen, name, body_size, delay_ms, workers } => {
            let opts = StubOptions { listen, name, body_size, delay: Duration::from_millis(delay_ms), workers };
            let res = stub::run(opts, |addr| {
                println!("stub listening on {addr}");
            });
            match res {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("stub: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn serve(path: &std::path::Path) -> ExitCode {
    let cfg = match Config::load(path) {
        Ok(c) => c,
        Err(errors) => {
            eprint!("{errors}");
            return ExitCode::FAILURE;
        }
    };
    for w in &cfg.warnings {
        tracing::warn!("{w}");
    }
    let summary_cfg = cfg.clone();
    let gateway = match Gateway::start_from(cfg, Some(path.to_path_buf())) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    if summary_cfg.server.driver == ringgate::config::DriverChoice::Auto && gateway.driver.name() == "epoll" {
        tracing::warn!("io_uring is unavailable on this kernel; using the epoll driver");
    }
    print_summary(&summary_cfg, Some(&gateway));
    if let Some(a) = gateway.admin_addr {
        tracing::info!(admin = %a, "admin listener: /metrics /healthz /ready /config, POST /reload");
    }
    let stopper = gateway.stopper();
    let reloader = gateway.reloader();
    let logs = gateway.log_reopener();
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1};
    match signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP, SIGUSR1]) {
        Ok(mut signals) => {
            std::thread::spawn(move || {
                let mut stops = 0;
                for sig in signals.forever() {
                    match sig {
                        SIGHUP => {
                            tracing::info!("SIGHUP: reloading the config");
                            // Errors are logged by the reloader; the old config keeps serving.
                            let _ = reloader.reload();
                        }
                        SIGUSR1 => {
                            tracing::info!("SIGUSR1: reopening the access log");
                            logs.reopen();
                        }
                        _ => {
                            stops += 1;
                            if stops == 1 {
                                tracing::info!(signal = sig, "stopping: no new connections, draining in-flight requests");
                                stopper.stop();
                            } else {
                                tracing::warn!("second signal: exiting now");
                                std::process::exit(1);
                            }
                        }
                    }
                }
            });
        }
        Err(e) => tracing::warn!(error = %e, "cannot install signal handlers"),
    }
    gateway.join();
    tracing::info!("stopped");
    ExitCode::SUCCESS
}

/// Prints the listeners, shards, driver and route table. Output errors (a closed pipe, as in
/// `ringgate check | head`) end the summary quietly instead of panicking.
fn print_summary(cfg: &Config, gateway: Option<&Gateway>) {
    let _ = write_summary(&mut std::io::stdout().lock(), cfg, gateway);
}

fn write_summary(out: &mut impl std::io::Write, cfg: &Config, gateway: Option<&Gateway>) -> std::io::Result<()> {
    let s = &cfg.server;
    match gateway {
        Some(g) => {
            let addrs: Vec<String> = g.addrs.iter().map(|a| a.to_string()).collect();
            writeln!(
                out,
                "ringgate {} listening on {} | shards {} ({}) | driver {}",
                env!("CARGO_PKG_VERSION"),
                addrs.join(", "),
                s.workers,
                if s.pin_cores { "pinned" } else { "unpinned" },
                g.driver.name()
            )?;
        }
        None => writeln!(out, "listen {:?} | shards {}", s.listen, s.workers)?,
    }
    writeln!(out, "routes:")?;
    for r in &cfg.routes {
        let paths: Vec<String> = r
            .paths
            .iter()
            .map(|p| match p {
                PathMatch::Prefix(p) => format!("{p}/*"),
                PathMatch::Exact(p) => format!("={p}"),
            })
            .collect();
        let hosts: Vec<String> = r
            .hosts
            .iter()
            .map(|h| match h {
                HostMatch::Exact(h) => h.clone(),
                HostMatch::Suffix(s) => format!("*{s}"),
            })
            .collect();
        let svc = &cfg.services[r.service];
        let ups: Vec<String> = svc.upstreams.iter().map(|a| a.to_string()).collect();
        writeln!(
            out,
            "  {:<12} {:<28} hosts {:<20} methods {:<12} -> {} [{}]{}",
            r.name,
            paths.join(" "),
            if hosts.is_empty() { "*".into() } else { hosts.join(",") },
            if r.methods.is_empty() { "any".into() } else { r.methods.join(",") },
            svc.name,
            ups.join(", "),
            if r.strip_prefix { " (strip prefix)" } else { "" }
        )?;
    }
    Ok(())
}
