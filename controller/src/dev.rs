//! `clustermgr dev`: a complete cluster on one machine. Real `clustermgr-agent`
//! processes, each on its own loopback address with its own state directory and a
//! sandbox root standing in for `/`, enrolled through the same CSR path as real
//! nodes, and the controller running as `serve` does. The test harness builds on it.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use clustermgr_protocol::NodeName;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

use crate::CtlError;
use crate::clock;
use crate::ops::{self, Ctx, CtxOptions, Invocation, Operation, Report};
use crate::store::Role;

/// How long an agent has to bind its socket after it is started.
const AGENT_START_TIMEOUT: Duration = Duration::from_secs(10);

/// One sandbox node to create.
#[derive(Clone, Debug)]
pub struct NodeSpec {
    /// Its name.
    pub name: String,
    /// Its roles.
    pub roles: Vec<Role>,
    /// The address its agent binds (port 0 picks a free one).
    pub listen: std::net::SocketAddr,
    /// Extra lines for its agent.toml (e.g. `allow_exec = false`).
    pub extra_config: String,
}

/// A running sandbox agent.
#[derive(Debug)]
pub struct SandboxAgent {
    /// The node.
    pub name: String,
    /// The address it listens on.
    pub address: std::net::SocketAddr,
    /// Its directory: `etc/` (its identity), `state/`, `root/` (its `/`), `agent.log`.
    pub dir: PathBuf,
    /// The agent process.
    pub child: Child,
}

impl SandboxAgent {
    /// Its configuration file.
    pub fn config(&self) -> PathBuf {
        self.dir.join("etc/agent.toml")
    }
}

/// The default node names and roles for `dev --nodes N`: Gluu nodes, and from four
/// nodes on, the last one a load balancer.
pub fn default_nodes(n: usize, port: u16) -> Vec<NodeSpec> {
    (0..n)
        .map(|i| {
            let lb = n >= 4 && i == n - 1;
            NodeSpec {
                name: if lb {
                    "lb1".to_string()
                } else {
                    format!("gluu{}", i + 1)
                },
                roles: vec![if lb { Role::Lb } else { Role::Gluu }],
                listen: std::net::SocketAddr::from(([127, 77, 0, (i + 1) as u8], port)),
                extra_config: String::new(),
            }
        })
        .collect()
}

/// Runs one operation in-process as `serve` would, discarding its progress events.
pub async fn one_shot(ctx: &Arc<Ctx>, user: &str, op: Operation) -> Result<Report, CtlError> {
    let (tx, mut rx) = mpsc::channel(64);
    let drain = tokio::spawn(async move { while rx.recv().await.is_some() {} });
    let inv = Invocation {
        user: user.to_string(),
        op,
        connect_timeout_ms: None,
    };
    let r = ops::run(ctx.clone(), inv, tx).await;
    let _ = drain.await;
    r
}

/// Enrolls and starts one agent for `spec` under `base`, then adds it to the cluster.
pub async fn start_agent(
    ctx: &Arc<Ctx>,
    agent_bin: &Path,
    base: &Path,
    spec: &NodeSpec,
) -> Result<SandboxAgent, CtlError> {
    NodeName::new(&spec.name)?;
    let dir = base.join(&spec.name);
    let etc = dir.join("etc");
    for d in [&etc, &dir.join("state"), &dir.join("root/etc")] {
        std::fs::create_dir_all(d).map_err(|e| CtlError::io(d, e))?;
    }
    // The sandbox's own /etc/hosts, so `apply` has the cluster's hosts block to show.
    let hosts = dir.join("root/etc/hosts");
    if !hosts.exists() {
        std::fs::write(&hosts, "127.0.0.1 localhost\n").map_err(|e| CtlError::io(&hosts, e))?;
    }
    let out = Command::new(agent_bin)
        .args(["enroll", "--name", &spec.name, "--out"])
        .arg(&etc)
        .output()
        .await
        .map_err(|e| CtlError::io(agent_bin, e))?;
    if !out.status.success() {
        return Err(CtlError::Agent {
            node: spec.name.clone(),
            message: format!(
                "enroll failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    let csr_pem = String::from_utf8_lossy(&out.stdout).into_owned();
    let Report::Signed(signed) = one_shot(
        ctx,
        "dev",
        Operation::NodeSign {
            node: spec.name.clone(),
            csr_pem,
        },
    )
    .await?
    else {
        unreachable!("node sign reports a signed certificate")
    };
    let write = |name: &str, text: &str| {
        let p = etc.join(name);
        std::fs::write(&p, text).map_err(|e| CtlError::io(&p, e))
    };
    write("agent.crt", &signed.cert_pem)?;
    write("ca.crt", ctx.ca.cert_pem())?;
    let toml_path = |p: PathBuf| {
        p.display()
            .to_string()
            .replace('\\', "\\\\")
            .replace('"', "\\\"")
    };
    write(
        "agent.toml",
        &format!(
            "listen = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\nca = \"{}\"\nstate_dir = \"{}\"\nroot = \"{}\"\nwritable_roots = [\"{}\"]\nshutdown_grace_ms = 3000\n{}\n",
            spec.listen,
            toml_path(etc.join("agent.crt")),
            toml_path(etc.join("agent.key")),
            toml_path(etc.join("ca.crt")),
            toml_path(dir.join("state")),
            toml_path(dir.join("root")),
            toml_path(dir.join("root")),
            spec.extra_config,
        ),
    )?;
    let (child, address) = spawn_agent(agent_bin, &dir, &spec.name).await?;
    if spec.listen.port() == 0 {
        // The port it was given is its port from now on: a restart, or a resumed
        // sandbox, finds it where the inventory says.
        let path = etc.join("agent.toml");
        let text = std::fs::read_to_string(&path).map_err(|e| CtlError::io(&path, e))?;
        let pinned = text.replacen(
            &format!("listen = \"{}\"", spec.listen),
            &format!("listen = \"{address}\""),
            1,
        );
        std::fs::write(&path, pinned).map_err(|e| CtlError::io(&path, e))?;
    }
    let agent = SandboxAgent {
        name: spec.name.clone(),
        address,
        dir,
        child,
    };
    one_shot(
        ctx,
        "dev",
        Operation::NodeAdd {
            node: spec.name.clone(),
            address: address.to_string(),
            roles: spec.roles.clone(),
            primary: false,
            reenroll: false,
        },
    )
    .await?;
    Ok(agent)
}

/// Starts the agent configured in `dir/etc/agent.toml` and waits until it listens.
pub async fn spawn_agent(
    agent_bin: &Path,
    dir: &Path,
    name: &str,
) -> Result<(Child, std::net::SocketAddr), CtlError> {
    let log_path = dir.join("agent.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| CtlError::io(&log_path, e))?;
    let mut child = Command::new(agent_bin)
        .arg("run")
        .arg("--config")
        .arg(dir.join("etc/agent.toml"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| CtlError::io(agent_bin, e))?;
    let stdout = child.stdout.take().expect("piped");
    let mut lines = BufReader::new(stdout).lines();
    let first = tokio::time::timeout(AGENT_START_TIMEOUT, lines.next_line()).await;
    let address = match first {
        Ok(Ok(Some(line))) => line.strip_prefix("listening ").and_then(|a| a.parse().ok()),
        _ => None,
    };
    let Some(address) = address else {
        let _ = child.kill().await;
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(5).collect();
        return Err(CtlError::Agent {
            node: name.to_string(),
            message: format!(
                "the agent did not start listening; its last log lines:\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            ),
        });
    };
    // Keep reading so the agent never blocks on a full stdout pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok((child, address))
}

/// Stops sandbox agents: SIGTERM, then SIGKILL for any still running after a while.
pub async fn stop_agents(agents: Vec<SandboxAgent>) {
    for mut a in agents {
        if let Some(pid) = a.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
        if tokio::time::timeout(Duration::from_secs(5), a.child.wait())
            .await
            .is_err()
        {
            let _ = a.child.kill().await;
        }
    }
}

/// Programs later features use, and whether this machine has them.
pub fn missing_programs() -> Vec<(&'static str, &'static str)> {
    let wanted = [
        ("nginx", "the load balancer configuration"),
        ("csync2", "file replication between Gluu nodes"),
        ("slapd", "LDAP replication checks"),
        ("stunnel4", "the cache tunnels"),
        ("redis-server", "the cache"),
    ];
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs: Vec<PathBuf> = std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .collect();
    wanted
        .into_iter()
        .filter(|(prog, _)| !dirs.iter().any(|d| d.join(prog).is_file()))
        .collect()
}

/// A new directory under the system's temporary directory, with an unguessable name,
/// created here (so nobody can have planted it or links inside it) and owner-only.
fn fresh_temp_dir() -> Result<PathBuf, CtlError> {
    use ring::rand::SecureRandom;
    use std::os::unix::fs::DirBuilderExt;
    let mut bytes = [0u8; 8];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| CtlError::Random("naming the sandbox directory"))?;
    let suffix: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let dir = std::env::temp_dir().join(format!("clustermgr-dev-{suffix}"));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .map_err(|e| CtlError::io(&dir, e))?;
    Ok(dir)
}

/// Marks a home as a sandbox `clustermgr dev` made, so `dev --home` may resume it.
const MARKER: &str = "dev/sandbox";

/// What `clustermgr dev` is asked.
#[derive(Clone, Debug)]
pub struct DevAsk {
    /// Where to keep the sandbox (a temporary directory, removed at the end, if none).
    pub home: Option<PathBuf>,
    /// How many nodes a new sandbox has.
    pub nodes: usize,
    /// The UDP port of every agent.
    pub port: u16,
    /// Answer Prometheus scrapes here, as `serve --prometheus` does.
    pub prometheus: Option<std::net::SocketAddr>,
}

/// `clustermgr dev`: a new sandbox, or with `--home` a sandbox it made there before,
/// resumed (its agents started again on their state).
pub async fn run(ask: DevAsk) -> Result<i32, CtlError> {
    if !(1..=200).contains(&ask.nodes) {
        return Err(CtlError::BadArgument {
            flag: "--nodes",
            value: ask.nodes.to_string(),
            why: "must be between 1 and 200".into(),
        });
    }
    let agent_bin = crate::binary::beside_this_program()?;
    let temporary = ask.home.is_none();
    let dir = match &ask.home {
        Some(d) => d.clone(),
        None => fresh_temp_dir()?,
    };
    let resume = dir.join(MARKER).is_file();
    if !resume {
        if dir.join("ca.crt").exists() {
            return Err(CtlError::BadHome {
                path: dir.clone(),
                why: "holds a cluster that `clustermgr dev` did not make; a sandbox runs only in a home of its own (another --home, or none for a temporary one)",
            });
        }
        ops::init(&dir, "dev", 90, &clock::SystemClock)?;
    }
    let ctx = Arc::new(Ctx::open(
        &dir,
        clock::system(),
        &CtxOptions::default(),
        true,
    )?);
    let base = dir.join("dev");
    let started = if resume {
        resume_agents(&ctx, &agent_bin, &base).await
    } else {
        start_agents(&ctx, &agent_bin, &base, &default_nodes(ask.nodes, ask.port)).await
    };
    let agents = match started {
        Ok(a) => a,
        Err(e) => {
            if temporary {
                let _ = std::fs::remove_dir_all(&dir);
            }
            return Err(e);
        }
    };
    if !resume {
        console_account(&ctx, &dir).await?;
        let marker = dir.join(MARKER);
        std::fs::write(
            &marker,
            "made by `clustermgr dev`; `dev --home` resumes it\n",
        )
        .map_err(|e| CtlError::io(&marker, e))?;
    }
    let web = crate::config::ControllerConfig::load(&dir.join("controller.toml"))
        .map(|c| c.web)
        .unwrap_or_default();
    banner(&dir, &base, agents.len(), resume, temporary, &web);
    // Like a service manager, the sandbox starts an agent again that died.
    let agents = Arc::new(tokio::sync::Mutex::new(agents));
    let keeper = tokio::spawn(keep_running(agents.clone(), agent_bin.clone()));
    let export = crate::telemetry::export::ExportOptions {
        prometheus: ask.prometheus,
        ..Default::default()
    };
    let served = crate::serve::serve(ctx.clone(), crate::local::shutdown_signal(), &export).await;
    keeper.abort();
    eprintln!("stopping the sandbox agents");
    let agents = std::mem::take(&mut *agents.lock().await);
    stop_agents(agents).await;
    drop(ctx);
    if temporary {
        let _ = std::fs::remove_dir_all(&dir);
    }
    served?;
    Ok(crate::exit::OK)
}

/// Enrolls and starts a new sandbox's agents; on a failure, stops those started.
async fn start_agents(
    ctx: &Arc<Ctx>,
    agent_bin: &Path,
    base: &Path,
    specs: &[NodeSpec],
) -> Result<Vec<SandboxAgent>, CtlError> {
    let mut agents = Vec::new();
    for spec in specs {
        match start_agent(ctx, agent_bin, base, spec).await {
            Ok(a) => {
                eprintln!("started {} on udp {}", a.name, a.address);
                agents.push(a);
            }
            Err(e) => {
                stop_agents(agents).await;
                return Err(e);
            }
        }
    }
    Ok(agents)
}

/// Starts again the agents of a sandbox made before, on the identities, state and
/// addresses they had.
async fn resume_agents(
    ctx: &Arc<Ctx>,
    agent_bin: &Path,
    base: &Path,
) -> Result<Vec<SandboxAgent>, CtlError> {
    let mut agents = Vec::new();
    for node in ctx.store.nodes()? {
        let dir = base.join(&node.name);
        if !dir.join("etc/agent.toml").is_file() {
            eprintln!(
                "{}: not a sandbox agent (no {}); left alone",
                node.name,
                dir.join("etc/agent.toml").display()
            );
            continue;
        }
        match spawn_agent(agent_bin, &dir, &node.name).await {
            Ok((child, address)) => {
                eprintln!("resumed {} on udp {address}", node.name);
                agents.push(SandboxAgent {
                    name: node.name.clone(),
                    address,
                    dir,
                    child,
                });
            }
            Err(e) => {
                stop_agents(agents).await;
                return Err(e);
            }
        }
    }
    Ok(agents)
}

/// Checks every second that each agent runs, and starts again one that ended.
async fn keep_running(agents: Arc<tokio::sync::Mutex<Vec<SandboxAgent>>>, agent_bin: PathBuf) {
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let mut agents = agents.lock().await;
        for a in agents.iter_mut() {
            let Ok(Some(status)) = a.child.try_wait() else {
                continue;
            };
            tracing::warn!(
                "{}'s agent ended ({status}); starting it again (its log: {})",
                a.name,
                a.dir.join("agent.log").display()
            );
            match spawn_agent(&agent_bin, &a.dir, &a.name).await {
                Ok((child, _)) => a.child = child,
                Err(e) => tracing::warn!("{}: {e}; trying again in a second", a.name),
            }
        }
    }
}

/// The file holding the sandbox console account's password.
pub const CONSOLE_PASSWORD: &str = "console-password";
/// The sandbox console account.
pub const CONSOLE_ACCOUNT: &str = "dev";

/// Makes the sandbox's console account (`dev`, an admin) with a random password kept
/// in an owner-only file of the sandbox's home, through the one operation path.
async fn console_account(ctx: &Arc<Ctx>, dir: &Path) -> Result<(), CtlError> {
    use base64::Engine;
    use ring::rand::SecureRandom;
    let mut b = [0u8; 18];
    ring::rand::SystemRandom::new()
        .fill(&mut b)
        .map_err(|_| CtlError::Internal {
            what: "the sandbox's console password",
            why: "the system's random source failed".into(),
            next: "",
        })?;
    let password =
        zeroize::Zeroizing::new(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b));
    let file = dir.join(CONSOLE_PASSWORD);
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&file)
            .and_then(|mut f| f.write_all(format!("{}\n", *password).as_bytes()))
            .map_err(|e| CtlError::io(&file, e))?;
    }
    let op = Operation::UserAdd {
        name: CONSOLE_ACCOUNT.into(),
        role: crate::access::UserRole::Admin,
        password_hash: crate::desired::SecretText(crate::password::hash(&password)),
    };
    one_shot(ctx, "dev", op).await.map(|_| ())
}

/// How to reach the sandbox, printed once it runs.
fn banner(
    dir: &Path,
    base: &Path,
    agents: usize,
    resumed: bool,
    temporary: bool,
    web: &crate::config::WebConfig,
) {
    let cli = cli_as_typed();
    println!();
    println!(
        "clustermgr dev: {} and the controller are {}.",
        crate::words::count(agents, "agent", "agents"),
        if resumed { "running again" } else { "running" }
    );
    println!("In another terminal:");
    println!("    export CLUSTERMGR_HOME={}", dir.display());
    println!("    {cli} status");
    println!("    {cli} exec -- uname -a");
    println!("    {cli} health");
    println!(
        "Each node's files are under {}/NODE (root/ stands for its /).",
        base.display()
    );
    if let Ok(Some(addr)) = web.listen() {
        println!(
            "The web console: http://{addr}/ (account {CONSOLE_ACCOUNT}, its password in {}).",
            dir.join(CONSOLE_PASSWORD).display()
        );
    }
    println!(
        "The sandbox runs no Gluu, LDAP, csync2 or tunnels, so `health` shows their checks unknown,\nwaiting for `apply`, or failing (ports and services): what a real cluster would fix."
    );
    for (prog, feature) in missing_programs() {
        println!(
            "note: {prog} is not installed here, so {feature} cannot be tried in this sandbox"
        );
    }
    println!(
        "Press Ctrl-C to stop everything{}.",
        if temporary {
            " and remove the sandbox"
        } else {
            "; `clustermgr dev --home` with this directory resumes it"
        }
    );
}

/// How to type this program in another terminal: `clustermgr` when that is what PATH
/// finds, else its full path (`./target/release/clustermgr` in a checkout).
fn cli_as_typed() -> String {
    let me = std::env::current_exe().and_then(std::fs::canonicalize).ok();
    let path = std::env::var_os("PATH").unwrap_or_default();
    let on_path = std::env::split_paths(&path)
        .map(|d| d.join("clustermgr"))
        .find(|p| p.is_file())
        .and_then(|p| std::fs::canonicalize(p).ok());
    match me {
        Some(me) if on_path.as_ref() != Some(&me) => me.display().to_string(),
        _ => "clustermgr".into(),
    }
}
