//! The `clustermgr-agent` binary: thin, the work is in the library.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use clustermgr_agent::config::AgentConfig;
use clustermgr_agent::{Agent, AgentError, enroll, upgrade};
use clustermgr_protocol::NodeName;
use clustermgr_protocol::atomic_file::write_atomic;

/// The clustermgr agent: one per Gluu, load-balancer and cache host.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the controller (the systemd unit runs this).
    Run {
        /// The configuration file.
        #[arg(long, default_value = "/etc/clustermgr/agent.toml")]
        config: PathBuf,
        /// Write the process id here once listening (hosts without systemd), and
        /// remove it on a clean exit.
        #[arg(long, value_name = "FILE")]
        pidfile: Option<PathBuf>,
    },
    /// Generate this host's private key (kept here, mode 0600) and print a CSR for
    /// `clustermgr node sign`.
    Enroll {
        /// The node name the controller knows this host by.
        #[arg(long)]
        name: NodeName,
        /// Where to keep the key (and a copy of the CSR).
        #[arg(long, default_value = "/etc/clustermgr")]
        out: PathBuf,
        /// Replace an existing key instead of reusing it.
        #[arg(long)]
        new_key: bool,
    },
    /// Delete this node's expired Gluu entries once (cron runs this on the one node
    /// that cleans for the cluster; oxAuth's own cleaner is off on every node).
    CleanExpired {
        /// The configuration file.
        #[arg(long, default_value = "/etc/clustermgr/agent.toml")]
        config: PathBuf,
    },
    /// Check a configuration file and exit.
    CheckConfig {
        /// The configuration file.
        #[arg(long, default_value = "/etc/clustermgr/agent.toml")]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    clustermgr_protocol::log::init("info");
    let result = match cli.command {
        Command::Enroll { name, out, new_key } => enroll::enroll(&name, &out, new_key).map(|csr| {
            print!("{csr}");
        }),
        Command::CheckConfig { config } => AgentConfig::load(&config).map(|_| {
            println!("{}: ok", config.display());
        }),
        Command::Run { config, pidfile } => run(&config, pidfile.as_deref()),
        Command::CleanExpired { config } => return clean_expired(&config),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("clustermgr-agent: {e}");
            ExitCode::from(1)
        }
    }
}

/// One run of the expired-entry cleaner: a line per base it deleted from; exit 1 with
/// the reason when it could not run or some entries were left.
fn clean_expired(config: &Path) -> ExitCode {
    use clustermgr_agent::cleaner::{self, CleanError};
    let cfg = match AgentConfig::load(config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("clustermgr-agent: {e}");
            return ExitCode::from(1);
        }
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let (swept, error) = match cleaner::run(&cfg, now) {
        Ok(s) => (s, None),
        Err(e) => {
            let swept = match &e {
                CleanError::Partly { swept, .. } => swept.clone(),
                _ => Vec::new(),
            };
            (swept, Some(e))
        }
    };
    for s in &swept {
        println!("{s}");
    }
    match error {
        None => ExitCode::SUCCESS,
        Some(e) => {
            eprintln!("clustermgr-agent clean-expired: {e}");
            ExitCode::from(1)
        }
    }
}

fn run(config: &Path, pidfile: Option<&Path>) -> Result<(), AgentError> {
    let cfg = AgentConfig::load(config)?;
    // Finishes or undoes an upgrade first; may put the old binary back and run it.
    let trial = upgrade::on_start(&cfg)?.map(Arc::new);
    match serve(cfg, pidfile, trial.clone()) {
        Ok(None) => Ok(()),
        Ok(Some(restart)) => Err(restart.exec()),
        Err(e) => {
            let reason = format!("the new agent could not start: {e}");
            match trial.map(|t| t.abandon(&reason)) {
                Some(Ok(Some(old))) => Err(old.exec()),
                Some(Err(undo)) => {
                    eprintln!("clustermgr-agent: {e}");
                    Err(undo)
                }
                _ => Err(e),
            }
        }
    }
}

/// Serves until stopped; returns the restart the agent asked for, if any.
fn serve(
    cfg: AgentConfig,
    pidfile: Option<&Path>,
    trial: Option<Arc<upgrade::Trial>>,
) -> Result<Option<upgrade::Restart>, AgentError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| AgentError::Write {
            path: cfg.path.clone(),
            source,
        })?;
    let cfg_path = cfg.path.clone();
    runtime.block_on(async {
        let agent = Agent::load(cfg)?.on_trial(trial);
        let handle = agent.start()?;
        // Tests and `clustermgr dev` wait for this line to know the socket is bound.
        println!("listening {}", handle.local_addr);
        // Written only once the socket is bound, so whoever waits for it (the init
        // script, SSH bootstrap) knows the agent is ready, not merely started.
        if let Some(path) = pidfile {
            write_atomic(path, format!("{}\n", std::process::id()).as_bytes(), 0o644).map_err(
                |source| AgentError::Write {
                    path: path.to_path_buf(),
                    source,
                },
            )?;
        }
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .expect("SIGHUP handler");
        loop {
            tokio::select! {
                _ = wait_for_signal() => break,
                _ = handle.stop_requested() => break,
                _ = hup.recv() => match handle.reload() {
                    Ok(()) => tracing::info!(
                        "re-read {}: [ldap] applies from the next check; other settings at the next restart",
                        cfg_path.display()
                    ),
                    Err(e) => tracing::error!("{e}; the settings in force stay"),
                },
            }
        }
        let restart = handle.shutdown().await;
        // A restart keeps the process id, so the pidfile stays true.
        if restart.is_none()
            && let Some(path) = pidfile
        {
            let _ = std::fs::remove_file(path);
        }
        Ok(restart)
    })
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
