//! The end-to-end test harness: real `clustermgr` and `clustermgr-agent` processes on
//! loopback, built once per test run, and removed with everything they started when a
//! test ends, whether it passed or not.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

pub mod bench;
pub mod browser;
pub mod container;
pub mod fleet;
pub mod gluu;
pub mod netns;

use clustermgr::clock;
use clustermgr::dev::{NodeSpec, SandboxAgent, spawn_agent, start_agent};
use clustermgr::ops::{Ctx, CtxOptions};
use clustermgr::store::Role;

pub mod packaging;
pub mod provision;
pub mod schema;
pub mod slapd;
pub mod standalone;
pub mod web;

/// Like [`eventually`], for tests without an async runtime (the multi-host tests).
pub fn eventually_blocking<F: FnMut() -> bool>(what: &str, patience: Duration, mut cond: F) {
    let deadline = Instant::now() + patience;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {patience:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits for `cond` to hold, checking every 20 ms, failing the test with `what` after
/// `patience`. The only way tests wait: never a fixed sleep.
pub async fn eventually<F: FnMut() -> bool>(what: &str, patience: Duration, mut cond: F) {
    let deadline = Instant::now() + patience;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {patience:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The directory holding the real binaries: `CLUSTERMGR_TEST_BINS` when `tests/run`
/// built them once before the tests (`cargo build --bins`), else built here, once per
/// test binary, with the same profile as this test (a plain `cargo test`).
pub fn bin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        if let Some(dir) = std::env::var_os("CLUSTERMGR_TEST_BINS") {
            let dir = PathBuf::from(dir);
            for bin in ["clustermgr", "clustermgr-agent"] {
                assert!(
                    dir.join(bin).is_file(),
                    "CLUSTERMGR_TEST_BINS={} holds no {bin}: build it (`cargo build --bins`) or unset the variable",
                    dir.display()
                );
            }
            return dir;
        }
        let exe = std::env::current_exe().expect("test executable path");
        // target/<profile>/deps/e2e-xxxx
        let dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("target dir")
            .to_path_buf();
        let release = dir.file_name().is_some_and(|n| n == "release");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args([
            "build",
            "--quiet",
            "-p",
            "clustermgr",
            "-p",
            "clustermgr-agent",
            "--bins",
        ]);
        if release {
            cmd.arg("--release");
        }
        // Cargo runs this test with the tested package's variables set (CARGO_PKG_NAME,
        // CARGO_MANIFEST_DIR ...). ring's build script watches those with
        // rerun-if-env-changed, so with them set this build would rebuild ring and all
        // above it (a minute or two here), and the next plain cargo command again.
        for (key, _) in std::env::vars_os() {
            if let Some(k) = key.to_str()
                && (k.starts_with("CARGO_PKG_")
                    || matches!(k, "CARGO_MANIFEST_DIR" | "CARGO_MANIFEST_PATH" | "OUT_DIR"))
            {
                cmd.env_remove(k);
            }
        }
        let status = cmd
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("run cargo build for the binaries under test");
        assert!(
            status.success(),
            "building clustermgr and clustermgr-agent failed"
        );
        dir
    })
}

/// The controller binary.
pub fn clustermgr_bin() -> PathBuf {
    bin_dir().join("clustermgr")
}

/// The agent binary.
pub fn agent_bin() -> PathBuf {
    bin_dir().join("clustermgr-agent")
}

/// A cluster of real agents on 127.0.0.1 (each on its own port), and a home.
pub struct Cluster {
    /// The controller's home (a temporary directory).
    pub home: tempfile::TempDir,
    /// The agents, in the order they were made.
    pub agents: Vec<SandboxAgent>,
}

impl Cluster {
    /// Initialises a home and starts `specs` as enrolled, added agents. The store is
    /// closed again when this returns, so the CLI can open it.
    pub async fn start(specs: Vec<NodeSpec>) -> Cluster {
        Cluster::start_with(&agent_bin(), specs).await
    }

    /// [`Cluster::start`] with another agent program (a packaged build, or a wrapper
    /// that runs one).
    pub async fn start_with(agent: &Path, specs: Vec<NodeSpec>) -> Cluster {
        let home = tempfile::Builder::new()
            .prefix("cm-e2e")
            .tempdir()
            .expect("tempdir");
        let dir = home.path().join("home");
        clustermgr::ops::init(&dir, "e2e", 90, &clock::SystemClock).expect("init");
        let ctx = Arc::new(
            Ctx::open(&dir, clock::system(), &CtxOptions::default(), false).expect("open"),
        );
        let mut agents = Vec::new();
        for spec in &specs {
            agents.push(
                start_agent(&ctx, agent, &home.path().join("nodes"), spec)
                    .await
                    .unwrap_or_else(|e| panic!("starting {}: {e}", spec.name)),
            );
        }
        ctx.dialer.close().await;
        drop(ctx);
        Cluster { home, agents }
    }

    /// `n` Gluu nodes named gluu1..gluuN.
    pub async fn gluu(n: usize) -> Cluster {
        Cluster::start((1..=n).map(|i| node(&format!("gluu{i}"), "")).collect()).await
    }

    /// The controller home directory.
    pub fn dir(&self) -> PathBuf {
        self.home.path().join("home")
    }

    /// The agent of `name`.
    pub fn agent(&self, name: &str) -> &SandboxAgent {
        self.agents
            .iter()
            .find(|a| a.name == name)
            .expect("agent exists")
    }

    /// The agent of `name`, mutably.
    pub fn agent_mut(&mut self, name: &str) -> &mut SandboxAgent {
        self.agents
            .iter_mut()
            .find(|a| a.name == name)
            .expect("agent exists")
    }

    /// A `clustermgr` command for this cluster.
    pub fn cli(&self) -> Command {
        self.cli_of(&clustermgr_bin())
    }

    /// A command for this cluster with another controller program.
    pub fn cli_of(&self, program: &Path) -> Command {
        let mut c = Command::new(program);
        c.arg("--home")
            .arg(self.dir())
            .env_remove("CLUSTERMGR_HOME");
        c
    }

    /// Runs `clustermgr ARGS` to completion.
    pub fn run(&self, args: &[&str]) -> Output {
        self.cli()
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run clustermgr")
    }

    /// Opens the cluster in-process (library-level tests).
    pub fn ctx(&self) -> Ctx {
        Ctx::open(&self.dir(), clock::system(), &CtxOptions::default(), false).expect("open ctx")
    }

    /// Starts `clustermgr serve` and waits until its socket answers.
    pub async fn serve(&self) -> Serve {
        start_serve(self.cli(), &self.dir()).await
    }

    /// Stops an agent (SIGKILL) so it stops answering.
    pub async fn kill_agent(&mut self, name: &str) {
        let a = self.agent_mut(name);
        let _ = a.child.kill().await;
    }

    /// Stops an agent as its service manager would (SIGTERM), and waits for it to exit.
    pub async fn stop_agent(&mut self, name: &str) {
        let a = self.agent_mut(name);
        if let Some(pid) = a.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
        let exited = tokio::time::timeout(Duration::from_secs(20), a.child.wait()).await;
        assert!(exited.is_ok(), "{name} did not stop within 20 s of SIGTERM");
    }

    /// Starts an agent again from its configuration, on the address it had (which the
    /// store knows it by).
    pub async fn restart_agent(&mut self, name: &str) -> std::net::SocketAddr {
        let a = self.agent_mut(name);
        let _ = a.child.kill().await;
        let config = a.config();
        let text = std::fs::read_to_string(&config).expect("agent config");
        let pinned: String = text
            .lines()
            .map(|l| {
                if l.starts_with("listen = ") {
                    format!("listen = \"{}\"", a.address)
                } else {
                    l.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        std::fs::write(&config, pinned).expect("rewrite agent config");
        // Its UDP port was free a moment ago; a short-lived client socket (a CLI's QUIC
        // dial) may hold it for an instant now: try again, within a deadline.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let (child, addr) = loop {
            match spawn_agent(&agent_bin(), &a.dir.clone(), name).await {
                Ok(started) => break started,
                Err(e)
                    if e.to_string().contains("Address already in use")
                        && tokio::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("restart agent: {e:?}"),
            }
        };
        a.child = child;
        a.address = addr;
        addr
    }

    /// The lines of an agent's exec journal.
    pub fn journal(&self, name: &str) -> Vec<serde_json::Value> {
        let path = self.agent(name).dir.join("state/exec-journal.jsonl");
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("journal line is JSON"))
            .collect()
    }
}

/// `clustermgr logs -f ARGS` on `c`: the child, and its stdout's lines, each with the
/// moment it was read (from a thread).
pub fn follow_logs(
    c: &Cluster,
    args: &[&str],
) -> (
    std::process::Child,
    std::sync::mpsc::Receiver<(Instant, String)>,
) {
    follow_with(c.cli(), args)
}

/// `logs -f ARGS` run by `cli` (a `clustermgr` command for some home), as
/// [`follow_logs`].
pub fn follow_with(
    mut cli: Command,
    args: &[&str],
) -> (
    std::process::Child,
    std::sync::mpsc::Receiver<(Instant, String)>,
) {
    use std::io::BufRead;
    let mut child = cli
        .args(["logs", "-f"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("logs -f");
    let out = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send((Instant::now(), line)).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

/// Reads `rx` (from [`follow_logs`]) until a line contains `want`; when it was read.
pub fn wait_for_line(
    rx: &std::sync::mpsc::Receiver<(Instant, String)>,
    want: &str,
    patience: Duration,
) -> Result<Instant, String> {
    let end = Instant::now() + patience;
    loop {
        let left = end.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok((at, l)) if l.contains(want) => return Ok(at),
            Ok(_) => {}
            Err(_) => return Err(format!("no line with {want:?} within {patience:?}")),
        }
    }
}

/// Starts `clustermgr serve` from `cli` (a `clustermgr` command for the home `home`)
/// and waits until its socket answers.
pub async fn start_serve(cli: Command, home: &Path) -> Serve {
    start_serve_with(cli, home, &[]).await
}

/// [`start_serve`] with more arguments for `serve`.
pub async fn start_serve_with(mut cli: Command, home: &Path, args: &[&str]) -> Serve {
    // Its log goes beside the home, for tests that scan it (for secrets, say).
    let log = home
        .parent()
        .map(|p| p.join("serve.log"))
        .and_then(|p| std::fs::File::create(p).ok());
    let child = cli
        .arg("serve")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log.map_or_else(Stdio::null, Stdio::from))
        .spawn()
        .expect("spawn serve");
    let sock = home.join("serve.sock");
    eventually("serve's socket", Duration::from_secs(10), || {
        std::os::unix::net::UnixStream::connect(&sock).is_ok()
    })
    .await;
    Serve(child)
}

/// An initialised controller home with no nodes, for bootstrapping the hosts of a
/// [`netns::Net`] over SSH.
pub struct Controller {
    _tmp: tempfile::TempDir,
    /// The home directory (its parent is a temporary directory for other files).
    pub home: PathBuf,
}

impl Controller {
    /// `clustermgr init` in a new temporary home.
    pub fn new() -> Controller {
        let tmp = tempfile::Builder::new()
            .prefix("cm-mh")
            .tempdir()
            .expect("tempdir");
        let home = tmp.path().join("home");
        let c = Controller { _tmp: tmp, home };
        let out = c.run(&["init", "--cluster", "mh"]);
        assert!(out.status.success(), "{}", stderr(&out));
        c
    }

    /// A `clustermgr` command for this home, with no standard input.
    pub fn cmd(&self) -> Command {
        let mut c = Command::new(clustermgr_bin());
        c.arg("--home")
            .arg(&self.home)
            .env_remove("CLUSTERMGR_HOME");
        c.stdin(Stdio::null());
        c
    }

    /// Runs `clustermgr ARGS` to completion.
    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().expect("run clustermgr")
    }

    /// `node add NAME --ssh root@HOST --identity KEY ARGS` (`--json` first if given).
    pub fn add_json(&self, net: &netns::Net, name: &str, args: &[String]) -> Output {
        let (global, rest): (Vec<&String>, Vec<&String>) =
            args.iter().partition(|a| *a == "--json");
        let h = net.host(name);
        self.cmd()
            .args(global)
            .args(["node", "add", name, "--ssh", &h.ssh_target(), "--identity"])
            .arg(net.client_key())
            .args(rest)
            .output()
            .expect("run clustermgr")
    }

    /// `node add NAME --ssh root@HOST` with the harness's key.
    pub fn add(&self, net: &netns::Net, name: &str, extra: &[&str]) -> Output {
        let h = net.host(name);
        self.cmd()
            .args(["node", "add", name, "--ssh", &h.ssh_target(), "--identity"])
            .arg(net.client_key())
            .args(extra)
            .output()
            .expect("run clustermgr")
    }

    /// Writes a `node add --from` inventory of every host of `net` (the harness's key
    /// and a fresh known_hosts; role `lb` for hosts named `lb*`, `gluu` for the others;
    /// `primary` the primary) beside the home, and returns its path.
    pub fn inventory(&self, net: &netns::Net, primary: &str) -> PathBuf {
        let kh = net.known_hosts();
        let path = self
            .home
            .parent()
            .expect("home has a parent")
            .join("hosts.toml");
        let mut text = format!(
            "identity = \"{}\"\nknown_hosts = \"{}\"\n",
            net.client_key().display(),
            kh.display()
        );
        for h in net.hosts() {
            text.push_str(&format!(
                "[[node]]\nname = \"{}\"\nssh = \"{}\"\nroles = [\"{}\"]\n{}",
                h.name,
                h.ssh_target(),
                if h.name.starts_with("lb") {
                    "lb"
                } else if h.name.starts_with("cache") {
                    "cache"
                } else {
                    "gluu"
                },
                if h.name == primary {
                    "primary = true\n"
                } else {
                    ""
                },
            ));
        }
        std::fs::write(&path, text).expect("write the inventory");
        path
    }

    /// Starts `clustermgr serve` on this home and waits until its socket answers.
    pub async fn serve(&self) -> Serve {
        start_serve(self.cmd(), &self.home).await
    }
}

impl Default for Controller {
    fn default() -> Self {
        Controller::new()
    }
}

/// agent.toml lines that make an agent follow `log` as the log source `app` (and no
/// default logs), sampling metrics every second.
pub fn following_app_log(log: &Path) -> String {
    format!(
        "[telemetry]\nmetrics_interval_secs = 1\ndefault_logs = false\nlogs = [\"app={}\"]\n",
        log.display()
    )
}

/// A node spec on 127.0.0.1 with a free port; `extra` goes into its agent.toml.
pub fn node(name: &str, extra: &str) -> NodeSpec {
    NodeSpec {
        name: name.to_string(),
        roles: vec![Role::Gluu],
        listen: "127.0.0.1:0".parse().expect("address"),
        extra_config: extra.to_string(),
    }
}

/// A running `clustermgr serve`, killed when dropped.
pub struct Serve(pub std::process::Child);

impl Serve {
    /// Stops serve as its service manager would (SIGTERM) and waits for it to exit.
    pub fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("serve did not stop within 30 s of SIGTERM");
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The stdout of a command that must have succeeded; panics with both outputs when it
/// did not.
pub fn succeeded(o: Output, what: &str) -> String {
    assert!(
        o.status.success(),
        "{what} failed:\n{}\n{}",
        stdout(&o),
        stderr(&o)
    );
    stdout(&o)
}

/// Text of a command's stdout.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Text of a command's stderr.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `tmux ARGS` on a server of its own (`-L socket`), so tests do not meet: how a test
/// gets a pseudo-terminal of a chosen size and reads the screen back. Its output.
pub fn tmux(socket: &str, args: &[&str]) -> String {
    let o = Command::new("tmux")
        .args(["-L", socket])
        .args(args)
        .output()
        .expect("tmux");
    String::from_utf8_lossy(&o.stdout).into_owned()
}
