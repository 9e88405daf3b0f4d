//! Many agents for the benchmarks: each enrolled with its own key (as `clustermgr-agent
//! enroll` does) and signed through the one operation path (`NodeSign`), all served by
//! one child process of the benchmark, and recorded in the home as `node add` would.
//! One copy for every benchmark that needs a fleet.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clustermgr::clock::{self, Clock};
use clustermgr::ctx::Ctx;
use clustermgr::ops::{Operation, Report};
use clustermgr::store::{NodeRecord, Role};
use clustermgr_agent::Agent;
use clustermgr_agent::config::AgentConfig;
use clustermgr_protocol::NodeName;
use clustermgr_protocol::identity::CertSummary;
use tokio::io::{AsyncBufReadExt, BufReader};

/// Set in the child that hosts the agents: the directory listing them.
const AGENT_HOST_ENV: &str = "CLUSTERMGR_BENCH_AGENT_HOST";

/// Call first in a benchmark's `main`: in the agent host child, serves the agents and
/// exits; otherwise returns.
pub fn serve_agents_if_host() {
    if let Some(dir) = std::env::var_os(AGENT_HOST_ENV) {
        agent_host(PathBuf::from(dir));
    }
}

/// The child: starts every agent listed in `dir/nodes.txt` in this process, prints
/// `listening NAME ADDR` for each and then `ready`, serves until stdin closes, exits.
fn agent_host(dir: PathBuf) -> ! {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("agent host runtime");
    rt.block_on(async {
        let mut out = std::io::BufWriter::new(std::io::stdout());
        let names = std::fs::read_to_string(dir.join("nodes.txt")).unwrap_or_default();
        let mut handles = Vec::new();
        for name in names.lines() {
            let config = dir.join(name).join("etc/agent.toml");
            match AgentConfig::load(&config)
                .and_then(Agent::load)
                .and_then(Agent::start)
            {
                Ok(h) => {
                    let _ = writeln!(out, "listening {name} {}", h.local_addr);
                    handles.push(h);
                }
                Err(e) => {
                    let _ = writeln!(out, "error {name}: {e}");
                    let _ = out.flush();
                    return;
                }
            }
        }
        let _ = writeln!(out, "ready");
        let _ = out.flush();
        // Serve until the benchmark closes our stdin.
        let _ = tokio::task::spawn_blocking(|| {
            let mut sink = Vec::new();
            let _ = std::io::stdin().read_to_end(&mut sink);
        })
        .await;
        drop(handles);
    });
    // Skip tearing down a thousand endpoints one by one.
    #[allow(
        clippy::disallowed_methods,
        reason = "a helper process of the benchmark: its thousand endpoints need no orderly end"
    )]
    std::process::exit(0);
}

/// A path as a TOML basic string's contents.
pub fn toml_path(p: &Path) -> String {
    p.display()
        .to_string()
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
}

/// Agents served by one child process, recorded in a home.
pub struct Fleet {
    /// Their names (`node0001` ...).
    pub names: Vec<String>,
    /// Their records, as the home holds them (the first is the primary).
    pub records: Vec<NodeRecord>,
    /// The child's process id.
    pub host_pid: u32,
    /// How long enrolling and signing took.
    pub signed_in: Duration,
    /// How long until every agent listened.
    pub agents_up: Duration,
    host: tokio::process::Child,
}

impl Fleet {
    /// Enrolls `n` agents under `base/agents`, signs each through `ctx` (its home), starts
    /// them in one child process and records them in the home. `telemetry` gives the
    /// `[telemetry]` section of the agent with that index.
    pub async fn start(
        ctx: &Arc<Ctx>,
        base: &Path,
        n: usize,
        telemetry: impl Fn(usize) -> &'static str,
    ) -> Result<Fleet, String> {
        let setup = Instant::now();
        let agents_dir = base.join("agents");
        let names: Vec<String> = (1..=n).map(|i| format!("node{i:04}")).collect();
        let mut certs = Vec::with_capacity(n);
        for (i, name) in names.iter().enumerate() {
            let node = NodeName::new(name).map_err(|e| e.to_string())?;
            let dir = agents_dir.join(name);
            let etc = dir.join("etc");
            for d in [&etc, &dir.join("state"), &dir.join("root")] {
                std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
            }
            // The agent's own enrollment: its key stays in its directory, a CSR comes out.
            let csr_pem =
                clustermgr_agent::enroll::enroll(&node, &etc, false).map_err(|e| e.to_string())?;
            let Report::Signed(signed) = clustermgr::dev::one_shot(
                ctx,
                "bench",
                Operation::NodeSign {
                    node: name.clone(),
                    csr_pem,
                },
            )
            .await
            .map_err(|e| e.to_string())?
            else {
                return Err("node sign did not report a certificate".into());
            };
            let w = |file: &str, text: &str| {
                std::fs::write(etc.join(file), text).map_err(|e| format!("{file}: {e}"))
            };
            w("agent.crt", &signed.cert_pem)?;
            w("ca.crt", ctx.ca.cert_pem())?;
            w(
                "agent.toml",
                &format!(
                    "listen = \"127.0.0.1:0\"\ncert = \"{}\"\nkey = \"{}\"\nca = \"{}\"\nstate_dir = \"{}\"\nroot = \"{}\"\nwritable_roots = [\"{}\"]\n{}",
                    toml_path(&etc.join("agent.crt")),
                    toml_path(&etc.join("agent.key")),
                    toml_path(&etc.join("ca.crt")),
                    toml_path(&dir.join("state")),
                    toml_path(&dir.join("root")),
                    toml_path(&dir.join("root")),
                    telemetry(i),
                ),
            )?;
            certs.push(CertSummary::parse_pem(&signed.cert_pem).map_err(|e| e.to_string())?);
        }
        std::fs::write(agents_dir.join("nodes.txt"), names.join("\n"))
            .map_err(|e| e.to_string())?;
        let signed_in = setup.elapsed();

        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let mut host = tokio::process::Command::new(exe)
            .env(AGENT_HOST_ENV, &agents_dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start the agent host: {e}"))?;
        let host_pid = host.id().unwrap_or(0);
        let mut lines = BufReader::new(host.stdout.take().ok_or("no stdout")?).lines();
        let mut addrs = std::collections::HashMap::new();
        tokio::time::timeout(Duration::from_secs(120), async {
            while let Ok(Some(line)) = lines.next_line().await {
                if line == "ready" {
                    return Ok(());
                }
                match line
                    .strip_prefix("listening ")
                    .and_then(|l| l.split_once(' '))
                {
                    Some((name, addr)) => {
                        addrs.insert(name.to_string(), addr.to_string());
                    }
                    None => return Err(format!("agent host: {line}")),
                }
            }
            Err("the agent host exited before it was ready".to_string())
        })
        .await
        .map_err(|_| "the agent host did not start within 120 s".to_string())??;
        let agents_up = setup.elapsed();

        // The records `node add` would write.
        let now = clock::SystemClock.unix();
        let records = names
            .iter()
            .zip(&certs)
            .enumerate()
            .map(|(i, (name, cert))| {
                Ok(NodeRecord {
                    name: name.clone(),
                    address: addrs
                        .get(name)
                        .cloned()
                        .ok_or_else(|| format!("{name} did not report its address"))?,
                    roles: vec![Role::Gluu],
                    primary: i == 0,
                    pinned_key: cert.key_fingerprint.clone(),
                    pending_key: None,
                    cert_serial: cert.serial.clone(),
                    cert_not_after: cert.not_after,
                    added_at: now,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        ctx.store.put_nodes(&records).map_err(|e| e.to_string())?;
        Ok(Fleet {
            names,
            records,
            host_pid,
            signed_in,
            agents_up,
            host,
        })
    }

    /// Ends the agent host: its stdin closes, and it exits.
    pub async fn stop(mut self) {
        drop(self.host.stdin.take());
        if tokio::time::timeout(Duration::from_secs(10), self.host.wait())
            .await
            .is_err()
        {
            let _ = self.host.kill().await;
        }
    }
}
