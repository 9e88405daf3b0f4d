//! `clustermgr node add --ssh`: the one time SSH is used. Over one multiplexed OpenSSH
//! session (so `~/.ssh/config`, ssh-agent and ProxyJump work) it verifies the host key,
//! learns the host, uploads and checks the agent binary, has the host make its own
//! key, signs its CSR, installs and starts the service, and records the node only once
//! the controller's mutual-TLS Hello succeeds.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use clustermgr_protocol::NodeName;
use serde::Serialize;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use crate::CtlError;
use crate::store::Role;

/// Where the agent is installed on a node.
pub const REMOTE_BIN: &str = crate::binary::INSTALLED;
/// The agent's configuration and identity directory on a node.
pub const REMOTE_ETC: &str = "/etc/clustermgr";
/// The pidfile the fallback service keeps.
pub const REMOTE_PIDFILE: &str = "/run/clustermgr-agent.pid";
/// The fallback service's log.
pub const REMOTE_LOG: &str = "/var/log/clustermgr-agent.log";

/// The systemd unit and the fallback init script, as shipped in packaging/.
const SYSTEMD_UNIT: &str = include_str!("../../packaging/systemd/clustermgr-agent.service");
const INIT_SCRIPT: &str = include_str!("../../packaging/init.d/clustermgr-agent");

/// How long a started agent has to write its pidfile (it does once it listens).
const AGENT_READY_TIMEOUT: Duration = Duration::from_secs(15);

/// Room the upload needs beyond the binary itself (the old binary stays until the swap).
const DISK_MARGIN_KB: u64 = 10 * 1024;

/// `USER@HOST[:PORT]`, validated so that nothing in it can become an ssh option or a
/// shell word.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SshTarget {
    /// The login.
    pub user: String,
    /// The host name or address (IPv6 without brackets).
    pub host: String,
    /// The port, if not ssh's default (or ~/.ssh/config's).
    pub port: Option<u16>,
}

impl SshTarget {
    /// Parses `USER@HOST[:PORT]` (`USER@[v6]:PORT` for IPv6 with a port).
    pub fn parse(s: &str) -> Result<SshTarget, CtlError> {
        let bad = |why: &str| CtlError::BadArgument {
            flag: "--ssh",
            value: format!("{s:?}"),
            why: format!("{why}; give USER@HOST or USER@HOST:PORT (e.g. root@gluu1.example.org)"),
        };
        let (user, rest) = s.split_once('@').ok_or_else(|| bad("no user"))?;
        let user_ok = !user.is_empty()
            && !user.starts_with('-')
            && user
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
        if !user_ok {
            return Err(bad(
                "the user may hold only letters, digits, '.', '_' and '-'",
            ));
        }
        let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
            let (h, after) = v6.split_once(']').ok_or_else(|| bad("unclosed '['"))?;
            let port = match after.strip_prefix(':') {
                Some(p) => Some(p),
                None if after.is_empty() => None,
                None => return Err(bad("unexpected text after ']'")),
            };
            (h, port)
        } else if rest.matches(':').count() > 1 {
            (rest, None)
        } else {
            match rest.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (rest, None),
            }
        };
        let port = port
            .map(|p| {
                p.parse::<u16>()
                    .ok()
                    .filter(|p| *p > 0)
                    .ok_or_else(|| bad("bad port"))
            })
            .transpose()?;
        let host_ok = !host.is_empty()
            && !host.starts_with('-')
            && host.len() <= 253
            && (host.parse::<std::net::IpAddr>().is_ok()
                || host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || ".-_".contains(c)));
        if !host_ok {
            return Err(bad("the host must be a DNS name or an IP address"));
        }
        Ok(SshTarget {
            user: user.to_string(),
            host: host.to_string(),
            port,
        })
    }

    /// The agent's default address: the same host, on the agent's UDP port.
    pub fn default_agent_address(&self) -> String {
        let port = clustermgr_protocol::DEFAULT_AGENT_PORT;
        if self.host.contains(':') {
            format!("[{}]:{port}", self.host)
        } else {
            format!("{}:{port}", self.host)
        }
    }
}

impl std::fmt::Display for SshTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.user, self.host)?;
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        Ok(())
    }
}

/// How to reach and trust a host over SSH.
#[derive(Clone, Debug, Default)]
pub struct SshOptions {
    /// `-i`: a private key file (ssh-agent is used when absent).
    pub identity: Option<PathBuf>,
    /// A known_hosts file to use instead of ssh's default ones.
    pub known_hosts: Option<PathBuf>,
    /// A host key fingerprint (`SHA256:...`) the administrator checked out of band.
    pub accept_host_key: Option<String>,
}

/// One host to bootstrap.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The node's name in the cluster.
    pub node: NodeName,
    /// How to log in.
    pub ssh: SshTarget,
    /// How the controller reaches the agent (HOST:PORT).
    pub address: String,
    /// Its roles.
    pub roles: Vec<Role>,
    /// Make it the primary.
    pub primary: bool,
    /// SSH trust and identity.
    pub ssh_options: SshOptions,
    /// Make a new key even if the host has one.
    pub reenroll: bool,
}

/// What bootstrap found on a host.
#[derive(Clone, Debug, Default, Serialize, schemars::JsonSchema)]
pub struct HostFacts {
    /// `uname -m`.
    pub arch: String,
    /// `uname -r`.
    pub kernel: String,
    /// The C library's version, if it is glibc.
    pub glibc: Option<String>,
    /// `ID VERSION_ID` from /etc/os-release.
    pub os: String,
    /// The name of PID 1.
    pub pid1: String,
    /// Whether systemd manages the host.
    pub systemd: bool,
    /// A Gluu install: its container root, or `/` for a nochroot install.
    pub gluu_root: Option<String>,
    /// Free space where the binary goes, KiB.
    pub free_kb: u64,
    /// Whether the host already has an agent key.
    pub has_key: bool,
    /// The installed agent binary's SHA-256, if there is one.
    pub agent_sha256: Option<String>,
    /// Whether commands need `sudo`.
    pub sudo: bool,
}

/// How the agent runs on a host.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ServiceKind {
    /// The systemd unit.
    Systemd,
    /// /etc/init.d/clustermgr-agent, registered with update-rc.d or chkconfig.
    InitScript,
    /// /etc/init.d/clustermgr-agent, started now but not registered to start at boot
    /// (the host has no tool to register it with).
    Detached,
}

impl ServiceKind {
    /// A sentence for the administrator.
    pub fn describe(self) -> &'static str {
        match self {
            ServiceKind::Systemd => "systemd unit clustermgr-agent.service (enabled)",
            ServiceKind::InitScript => {
                "/etc/init.d/clustermgr-agent (no systemd; starts at boot, not restarted if it crashes)"
            }
            ServiceKind::Detached => {
                "/etc/init.d/clustermgr-agent, started detached (no systemd and no init tool to register it: it will not start at boot)"
            }
        }
    }
}

/// What happened to the agent binary.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum BinaryAction {
    /// It was not there.
    Installed,
    /// A different one was there.
    Upgraded,
    /// The same one was there.
    Unchanged,
}

/// What happened to the node's identity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Identity {
    /// A new node, with a key made now.
    New,
    /// A new node, with the key the host already had.
    ExistingKey,
    /// Already in the cluster with this key: kept.
    Kept,
    /// Already in the cluster: a new key was made and pinned.
    Reenrolled,
}

/// The result of bootstrapping one host.
#[derive(Clone, Debug, Serialize, schemars::JsonSchema)]
pub struct Outcome {
    /// The node.
    pub node: String,
    /// Where the controller reaches it.
    pub address: String,
    /// What was found on the host.
    pub facts: HostFacts,
    /// How the agent runs there.
    pub service: ServiceKind,
    /// What happened to the binary.
    pub binary: BinaryAction,
    /// What happened to the identity.
    pub identity: Identity,
    /// The pinned key.
    pub key: String,
}

/// Quotes a word for a POSIX shell.
pub fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

pub use crate::binary::AgentBinary;

/// What bootstrap asks of the cluster (through `serve` or in this process): its own
/// calls, so it depends on no front end's or dispatcher's types.
pub trait Operations: Send + Sync {
    /// Signs `csr_pem` for `node`; the certificate, PEM.
    fn sign(
        &self,
        node: &str,
        csr_pem: String,
    ) -> impl std::future::Future<Output = Result<String, CtlError>> + Send;
    /// Whether `node`'s agent answers the controller: why not, when it does not.
    fn reach(
        &self,
        node: &str,
    ) -> impl std::future::Future<Output = Result<Result<(), String>, CtlError>> + Send;
    /// Records the node (its agent must answer as that node, with the key it has).
    fn add(&self, node: NewNode) -> impl std::future::Future<Output = Result<(), CtlError>> + Send;
    /// The cluster CA certificate, PEM.
    fn ca_pem(&self) -> Result<String, CtlError>;
    /// The key pinned for `node`, if it is in the cluster.
    fn pinned_key(
        &self,
        node: &str,
    ) -> impl std::future::Future<Output = Result<Option<String>, CtlError>> + Send;
}

/// A node bootstrap adds, once its agent runs.
#[derive(Clone, Debug)]
pub struct NewNode {
    /// Its name.
    pub node: String,
    /// Where its agent listens.
    pub address: String,
    /// Its roles.
    pub roles: Vec<Role>,
    /// Whether it becomes the primary.
    pub primary: bool,
    /// Whether its new key replaces the one pinned.
    pub reenroll: bool,
}

/// An open, verified, multiplexed SSH session to one host.
struct Session {
    node: String,
    target: SshTarget,
    // Holds the control socket and a trusted known_hosts; owner-only.
    dir: tempfile::TempDir,
    known_hosts: Option<PathBuf>,
    sudo: bool,
}

fn ssh_err(node: &str, target: &SshTarget, message: String) -> CtlError {
    CtlError::Bootstrap {
        node: node.to_string(),
        host: target.to_string(),
        message,
    }
}

impl Session {
    fn control_path(&self) -> PathBuf {
        self.dir.path().join("ctl")
    }

    /// ssh with the options every invocation shares.
    fn ssh(&self, opts: &SshOptions, extra: &[&str]) -> Command {
        let mut c = Command::new("ssh");
        c.arg("-o").arg("BatchMode=yes");
        c.arg("-o").arg("ForwardAgent=no");
        c.arg("-o").arg("ForwardX11=no");
        c.arg("-o").arg("ConnectTimeout=10");
        c.arg("-o").arg("ServerAliveInterval=5");
        let mut cp = OsString::from("ControlPath=");
        cp.push(self.control_path());
        c.arg("-o").arg(cp);
        if let Some(kh) = &self.known_hosts {
            let mut o = OsString::from("UserKnownHostsFile=");
            o.push(kh);
            c.arg("-o").arg(o);
            c.arg("-o").arg("GlobalKnownHostsFile=/dev/null");
        }
        if let Some(id) = &opts.identity {
            c.arg("-o").arg("IdentitiesOnly=yes");
            c.arg("-i").arg(id);
        }
        if let Some(p) = self.target.port {
            c.arg("-p").arg(p.to_string());
        }
        c.args(extra);
        c.arg("-l").arg(&self.target.user);
        c.arg("--").arg(&self.target.host);
        c.stdin(Stdio::null()).kill_on_drop(true);
        c
    }

    /// Opens the master connection, verifying the host key first.
    async fn open(plan: &Plan) -> Result<Session, CtlError> {
        let node = plan.node.to_string();
        let target = plan.ssh.clone();
        let err = |m: String| ssh_err(&node, &target, m);
        let dir = private_tempdir()?;
        let mut s = Session {
            node: node.clone(),
            target: target.clone(),
            dir,
            known_hosts: plan.ssh_options.known_hosts.clone(),
            sudo: false,
        };
        let opts = &plan.ssh_options;
        match s.master(opts, "yes").await {
            Ok(()) => {}
            Err(MasterError::HostKeyChanged(text)) => {
                return Err(err(format!(
                    "its SSH host key has CHANGED since it was recorded in known_hosts; refusing, always. If the host was reinstalled, check its new key on the console and replace the old entry (`ssh-keygen -R {}`). ssh said: {text}",
                    target.host
                )));
            }
            Err(MasterError::HostKeyUnknown) => {
                let seen = s.probe_fingerprint(opts).await?;
                match &opts.accept_host_key {
                    None => {
                        return Err(err(format!(
                            "its SSH host key is not known (fingerprint {seen}). Check it on the host (`ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub`), then re-run with --accept-host-key {seen}, or add the key to known_hosts"
                        )));
                    }
                    Some(want) if want != &seen => {
                        return Err(err(format!(
                            "its SSH host key has fingerprint {seen}, not the {want} given with --accept-host-key; refusing"
                        )));
                    }
                    Some(want) => {
                        // Trust exactly this key for this session: ssh records what the
                        // host presents in a file of our own, and we check it before
                        // running anything.
                        let kh = s.dir.path().join("known_hosts");
                        std::fs::write(&kh, "").map_err(|e| CtlError::io(&kh, e))?;
                        s.known_hosts = Some(kh.clone());
                        s.master(opts, "accept-new")
                            .await
                            .map_err(|e| err(e.describe(&target)))?;
                        let recorded = fingerprints(&kh).await;
                        if recorded.len() != 1 || &recorded[0] != want {
                            s.close(opts).await;
                            return Err(err(format!(
                                "the host presented {recorded:?} on the second connection, not {want}; refusing"
                            )));
                        }
                    }
                }
            }
            Err(e) => return Err(err(e.describe(&target))),
        }
        Ok(s)
    }

    async fn master(&self, opts: &SshOptions, strict: &str) -> Result<(), MasterError> {
        let log = self.dir.path().join("master.log");
        let file = std::fs::File::create(&log).map_err(|e| MasterError::Other(e.to_string()))?;
        let strict = format!("StrictHostKeyChecking={strict}");
        // -f: the master goes to the background once authenticated, keeping its
        // stderr; so it writes to a file, never to a pipe we would wait on.
        let status = self
            .ssh(
                opts,
                &[
                    "-o",
                    &strict,
                    "-o",
                    "ControlMaster=yes",
                    "-o",
                    "ControlPersist=yes",
                    "-N",
                    "-f",
                ],
            )
            .stdout(Stdio::null())
            .stderr(file)
            .status()
            .await
            .map_err(|e| MasterError::Other(format!("cannot run ssh: {e}")))?;
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if status.success() {
            return Ok(());
        }
        Err(MasterError::classify(text.trim()))
    }

    /// The fingerprint of the key the host presents, read from ssh's own report
    /// before it refuses an unknown key (so ProxyJump and ssh_config apply). Nothing
    /// is authenticated or run.
    async fn probe_fingerprint(&self, opts: &SshOptions) -> Result<String, CtlError> {
        let probe = Session {
            node: self.node.clone(),
            target: self.target.clone(),
            dir: private_tempdir()?,
            known_hosts: Some(PathBuf::from("/dev/null")),
            sudo: false,
        };
        let out = probe
            .ssh(
                opts,
                &[
                    "-v",
                    "-o",
                    "StrictHostKeyChecking=yes",
                    "-o",
                    "ControlMaster=no",
                ],
            )
            .arg("true")
            .output()
            .await
            .map_err(|e| CtlError::io("ssh", e))?;
        let text = String::from_utf8_lossy(&out.stderr);
        text.lines()
            .find_map(|l| {
                l.split("Server host key: ")
                    .nth(1)
                    .and_then(|rest| rest.split_whitespace().nth(1))
                    .map(str::to_string)
            })
            .ok_or_else(|| {
                ssh_err(
                    &self.node,
                    &self.target,
                    format!(
                        "could not read its SSH host key: {}",
                        MasterError::classify(text.trim()).describe(&self.target)
                    ),
                )
            })
    }

    /// Runs `script` with /bin/sh as root on the host (through sudo when the login is
    /// not root), feeding it `input`.
    async fn run(
        &self,
        opts: &SshOptions,
        script: &str,
        input: Option<&[u8]>,
    ) -> Result<std::process::Output, CtlError> {
        let line = if self.sudo {
            format!("sudo -n /bin/sh -c {}", sh_quote(script))
        } else {
            format!("/bin/sh -c {}", sh_quote(script))
        };
        let mut cmd = self.ssh(opts, &["-o", "ControlMaster=no"]);
        cmd.arg(line)
            .stdin(if input.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|e| CtlError::io("ssh", e))?;
        if let Some(bytes) = input {
            let mut stdin = child.stdin.take().expect("piped");
            let bytes = bytes.to_vec();
            tokio::spawn(async move {
                let _ = stdin.write_all(&bytes).await;
                let _ = stdin.shutdown().await;
            });
        }
        child
            .wait_with_output()
            .await
            .map_err(|e| CtlError::io("ssh", e))
    }

    /// Like `run`, but a failure is an error naming `what`.
    async fn must(
        &self,
        opts: &SshOptions,
        what: &str,
        script: &str,
        input: Option<&[u8]>,
    ) -> Result<String, CtlError> {
        let out = self.run(opts, script, input).await?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            return Err(ssh_err(
                &self.node,
                &self.target,
                format!("{what} failed: {}", stderr.trim()),
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    async fn close(&self, opts: &SshOptions) {
        let _ = self
            .ssh(opts, &["-O", "exit"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await;
    }
}

/// Why the master connection failed.
#[derive(Debug)]
enum MasterError {
    HostKeyUnknown,
    HostKeyChanged(String),
    AuthRefused(String),
    Unreachable(String),
    Other(String),
}

impl MasterError {
    fn classify(text: &str) -> MasterError {
        let last = text
            .lines()
            .filter(|l| !l.starts_with("debug"))
            .collect::<Vec<_>>()
            .join(" ");
        if text.contains("REMOTE HOST IDENTIFICATION HAS CHANGED")
            || text.contains("Host key for") && text.contains("has changed")
        {
            MasterError::HostKeyChanged(last)
        } else if text.contains("host key is known for")
            || text.contains("No matching host key")
            || text.contains("Host key verification failed")
        {
            MasterError::HostKeyUnknown
        } else if text.contains("Permission denied") {
            MasterError::AuthRefused(last)
        } else if text.contains("Connection refused")
            || text.contains("timed out")
            || text.contains("No route to host")
            || text.contains("Could not resolve")
            || text.contains("Network is unreachable")
        {
            MasterError::Unreachable(last)
        } else {
            MasterError::Other(last)
        }
    }

    fn describe(&self, target: &SshTarget) -> String {
        match self {
            MasterError::HostKeyUnknown => "its SSH host key is not known".into(),
            MasterError::HostKeyChanged(t) => format!("its SSH host key has changed: {t}"),
            MasterError::AuthRefused(t) => format!(
                "SSH authentication as {} was refused ({t}). Load the key into ssh-agent, or give it with --identity; the key must be in {}'s authorized_keys",
                target.user, target.user
            ),
            MasterError::Unreachable(t) => format!(
                "cannot reach its SSH server ({t}); check the address and port, or the ProxyJump in ~/.ssh/config"
            ),
            MasterError::Other(t) => format!("ssh failed: {t}"),
        }
    }
}

/// The SHA256 fingerprints of the keys in a known_hosts file.
async fn fingerprints(known_hosts: &Path) -> Vec<String> {
    let out = Command::new("ssh-keygen")
        .arg("-l")
        .arg("-f")
        .arg(known_hosts)
        .stdin(Stdio::null())
        .output()
        .await;
    out.map(|o| {
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter_map(|l| l.split_whitespace().nth(1).map(str::to_string))
            .collect()
    })
    .unwrap_or_default()
}

/// The facts script: one `key=value` per line.
const PROBE: &str = r#"
echo "uid=$(id -u)"
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then echo sudo=yes; else echo sudo=no; fi
fi
echo "arch=$(uname -m)"
echo "kernel=$(uname -r)"
g=$(getconf GNU_LIBC_VERSION 2>/dev/null)
case "$g" in glibc\ *) echo "glibc=${g#glibc }" ;; esac
if [ -r /etc/os-release ]; then (. /etc/os-release; echo "os=${ID:-unknown} ${VERSION_ID:-}"); fi
echo "pid1=$(cat /proc/1/comm 2>/dev/null)"
if [ -d /run/systemd/system ]; then echo systemd=yes; else echo systemd=no; fi
for d in /opt/gluu-server /opt/gluu-server-*; do [ -d "$d" ] && echo "gluu_root=$d"; done
if [ -d /opt/gluu/jetty/oxauth ] || [ -d /opt/gluu/jetty/identity ]; then echo gluu_root=/; fi
mkdir -p /usr/local/bin 2>/dev/null
echo "free_kb=$(df -Pk /usr/local/bin 2>/dev/null | awk 'NR==2 {print $4}')"
[ -f /etc/clustermgr/agent.key ] && echo has_key=yes
if [ -f /usr/local/bin/clustermgr-agent ]; then
  echo "agent_sha256=$(sha256sum /usr/local/bin/clustermgr-agent 2>/dev/null | cut -d' ' -f1)"
fi
command -v sha256sum >/dev/null 2>&1 || echo no_sha256sum=yes
"#;

fn parse_facts(text: &str) -> (HostFacts, Option<String>, bool, bool) {
    let mut f = HostFacts::default();
    let mut uid = None;
    let mut sudo_ok = false;
    let mut no_sha = false;
    for line in text.lines() {
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let v = v.trim();
        match k {
            "uid" => uid = Some(v.to_string()),
            "sudo" => sudo_ok = v == "yes",
            "arch" => f.arch = v.to_string(),
            "kernel" => f.kernel = v.to_string(),
            "glibc" if !v.is_empty() => f.glibc = Some(v.to_string()),
            "os" => f.os = v.to_string(),
            "pid1" => f.pid1 = v.to_string(),
            "systemd" => f.systemd = v == "yes",
            "gluu_root" if f.gluu_root.is_none() => f.gluu_root = Some(v.to_string()),
            "free_kb" => f.free_kb = v.parse().unwrap_or(0),
            "has_key" => f.has_key = true,
            "agent_sha256" if !v.is_empty() => f.agent_sha256 = Some(v.to_string()),
            "no_sha256sum" => no_sha = true,
            _ => {}
        }
    }
    (f, uid, sudo_ok, no_sha)
}

/// The agent.toml bootstrap writes.
fn agent_toml(listen_port: u16) -> String {
    format!(
        "# Written by `clustermgr node add --ssh`; see packaging/agent.toml for every setting.\n\
         listen = \"0.0.0.0:{listen_port}\"\n\
         cert = \"{REMOTE_ETC}/agent.crt\"\n\
         key = \"{REMOTE_ETC}/agent.key\"\n\
         ca = \"{REMOTE_ETC}/ca.crt\"\n\
         state_dir = \"/var/lib/clustermgr\"\n"
    )
}

/// The port in HOST:PORT (or the agent's default).
fn port_of(address: &str) -> u16 {
    address
        .rsplit_once(':')
        .filter(|(h, _)| !h.ends_with(':') && (h.starts_with('[') || !h.contains(':')))
        .and_then(|(_, p)| p.parse().ok())
        .unwrap_or(clustermgr_protocol::DEFAULT_AGENT_PORT)
}

/// Bootstraps one host. `progress` gets a line per step.
pub async fn bootstrap<O: Operations>(
    ops: &O,
    plan: &Plan,
    binary: &AgentBinary,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<Outcome, CtlError> {
    progress(&format!("connecting to {}", plan.ssh));
    let mut session = Session::open(plan).await?;
    let opts = plan.ssh_options.clone();
    let r = steps(ops, plan, binary, progress, &mut session, &opts).await;
    // The multiplexed connection lives only as long as the bootstrap.
    session.close(&opts).await;
    r
}

async fn steps<O: Operations>(
    ops: &O,
    plan: &Plan,
    binary: &AgentBinary,
    progress: &(dyn Fn(&str) + Sync),
    s: &mut Session,
    opts: &SshOptions,
) -> Result<Outcome, CtlError> {
    let node = plan.node.to_string();
    let err = |m: String| ssh_err(&node, &plan.ssh, m);

    progress("inspecting the host");
    let text = s.must(opts, "inspecting the host", PROBE, None).await?;
    let (facts, uid, sudo_ok, no_sha) = parse_facts(&text);
    if uid.as_deref() != Some("0") {
        if !sudo_ok {
            return Err(err(format!(
                "{} is not root and cannot use sudo without a password; log in as root, or allow {} passwordless sudo (NOPASSWD) for the bootstrap",
                plan.ssh.user, plan.ssh.user
            )));
        }
        s.sudo = true;
    }
    let mut facts = facts;
    facts.sudo = s.sudo;
    if no_sha {
        return Err(err(
            "the host has no sha256sum (coreutils), which bootstrap needs to check the upload; install coreutils".into(),
        ));
    }
    binary.facts.serves(&facts.arch, facts.glibc.as_deref()).map_err(|why| {
        err(format!(
            "the agent binary {} cannot run there: {why}. Give a build for this host with --agent-binary PATH",
            binary.path.display()
        ))
    })?;

    let pinned = ops.pinned_key(&node).await?;
    let binary_action = match &facts.agent_sha256 {
        Some(sha) if sha == &binary.facts.sha256 => BinaryAction::Unchanged,
        Some(_) => BinaryAction::Upgraded,
        None => BinaryAction::Installed,
    };
    if binary_action != BinaryAction::Unchanged {
        let need_kb = binary.bytes.len() as u64 / 1024 + DISK_MARGIN_KB;
        if facts.free_kb < need_kb {
            return Err(err(format!(
                "not enough space in /usr/local/bin: {} KiB free, {} KiB needed; free some space and re-run",
                facts.free_kb, need_kb
            )));
        }
        progress(&format!(
            "uploading the agent ({} KiB)",
            binary.bytes.len() / 1024
        ));
        // One session: receive, check the SHA-256 on the host, run it once before it
        // replaces anything (a loader or C library mismatch the ELF check missed shows
        // here, while the old binary still serves), then move it into place.
        let upload = format!(
            "set -e; umask 022; tmp={REMOTE_BIN}.upload; cat > \"$tmp\"; chmod 0755 \"$tmp\"; \
             got=$(sha256sum \"$tmp\" | cut -d' ' -f1); \
             if [ \"$got\" != {want} ]; then rm -f \"$tmp\"; echo \"$got\"; exit 3; fi; \
             if ! e=$(\"$tmp\" --version 2>&1); then rm -f \"$tmp\"; echo \"$e\" >&2; exit 4; fi; \
             mv -f \"$tmp\" {REMOTE_BIN}",
            want = binary.facts.sha256
        );
        let out = s.run(opts, &upload, Some(&binary.bytes)).await?;
        match out.status.code() {
            Some(0) => {}
            Some(3) => {
                return Err(err(format!(
                    "the uploaded agent's SHA-256 is {} on the host, not {}: the transfer was damaged; re-run",
                    String::from_utf8_lossy(&out.stdout).trim(),
                    binary.facts.sha256
                )));
            }
            Some(4) => {
                return Err(err(format!(
                    "running the uploaded agent failed: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                )));
            }
            _ => {
                return Err(err(format!(
                    "uploading the agent failed: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                )));
            }
        }
    }

    progress(if plan.reenroll || !facts.has_key {
        "writing the configuration and making the node's key on the host"
    } else {
        "writing the configuration and reading the node's CSR"
    });
    // One session: the configuration and the CA certificate (both public) as
    // here-documents, then `enroll`, whose CSR comes back on stdout.
    let enroll = format!(
        "set -e; umask 077; mkdir -p {REMOTE_ETC} /var/lib/clustermgr; chmod 0700 {REMOTE_ETC}\n{}umask 022\n{}{REMOTE_BIN} enroll --name {} --out {REMOTE_ETC}{}",
        here_document(
            &format!("{REMOTE_ETC}/agent.toml"),
            &agent_toml(port_of(&plan.address))
        )?,
        here_document(&format!("{REMOTE_ETC}/ca.crt"), &ops.ca_pem()?)?,
        sh_quote(plan.node.as_str()),
        if plan.reenroll { " --new-key" } else { "" }
    );
    let csr = s.must(opts, "enrolling", &enroll, None).await?;
    let key = crate::ca::csr_public_key(&plan.node, &csr)?.fingerprint;

    let identity = match &pinned {
        Some(pinned) if !plan.reenroll => {
            if *pinned != key {
                return Err(err(format!(
                    "its key {key} is not the one pinned for {node} ({pinned}): the host was reinstalled or its key replaced. Re-run with --reenroll to pin a new key"
                )));
            }
            Identity::Kept
        }
        Some(_) => Identity::Reenrolled,
        None if facts.has_key && !plan.reenroll => Identity::ExistingKey,
        None => Identity::New,
    };
    let mut cert = None;
    if identity != Identity::Kept {
        progress("signing its certificate");
        cert = Some(ops.sign(&node, csr).await?);
    }

    progress("starting the service");
    let service = start_service(s, opts, &facts, &node, plan, cert.as_deref()).await?;

    progress(&format!("checking mutual TLS to {}", plan.address));
    match identity {
        Identity::Kept => {
            if let Err(why) = ops.reach(&node).await? {
                return Err(err(format!(
                    "the agent runs on the host but the controller cannot reach it at {}: {why}. Open UDP port {} from the controller to the node",
                    plan.address,
                    port_of(&plan.address)
                )));
            }
        }
        _ => {
            ops.add(NewNode {
                node: node.clone(),
                address: plan.address.clone(),
                roles: plan.roles.clone(),
                primary: plan.primary,
                reenroll: identity == Identity::Reenrolled,
            })
            .await
            .map_err(|e| {
                err(format!(
                    "the agent runs on the host but the controller's mutual-TLS Hello to {} failed ({e}). If UDP port {} is blocked between the controller and the node, open it (firewalld: `firewall-cmd --permanent --add-port={}/udp`; ufw: `ufw allow {}/udp`), or give the reachable address with --address",
                    plan.address,
                    port_of(&plan.address),
                    port_of(&plan.address),
                    port_of(&plan.address),
                ))
            })?;
        }
    }
    Ok(Outcome {
        node,
        address: plan.address.clone(),
        facts,
        service,
        binary: binary_action,
        identity,
        key,
    })
}

/// Installs and (re)starts the service, and waits until the agent listens.
/// Writes a file on the host from a script: `text` as a quoted here-document (no
/// expansion), through a temporary file and a rename. Only for public text.
fn here_document(path: &str, text: &str) -> Result<String, CtlError> {
    const END: &str = "CLUSTERMGR_END_OF_FILE";
    if text.lines().any(|l| l == END) {
        return Err(CtlError::BadFile {
            path: path.into(),
            why: format!("its text holds the line {END}, which bootstrap cannot send"),
        });
    }
    let nl = if text.ends_with('\n') { "" } else { "\n" };
    Ok(format!(
        "cat > {path}.new <<'{END}'\n{text}{nl}{END}\nmv -f {path}.new {path}\n"
    ))
}

/// Installs the certificate (when it is new) and the service, and starts the agent,
/// all in one session; on failure the agent's last log lines come back.
async fn start_service(
    s: &Session,
    opts: &SshOptions,
    facts: &HostFacts,
    node: &str,
    plan: &Plan,
    cert: Option<&str>,
) -> Result<ServiceKind, CtlError> {
    let err = |m: String| ssh_err(node, &plan.ssh, m);
    let cert = match cert {
        Some(pem) => here_document(&format!("{REMOTE_ETC}/agent.crt"), pem)?,
        None => String::new(),
    };
    if facts.systemd {
        let script = format!(
            "set -e; umask 022\n{cert}\
             cat > /etc/systemd/system/clustermgr-agent.service.new; mv -f /etc/systemd/system/clustermgr-agent.service.new /etc/systemd/system/clustermgr-agent.service; \
             systemctl daemon-reload; systemctl enable clustermgr-agent.service >/dev/null 2>&1; systemctl restart clustermgr-agent.service; \
             i=0; while [ $i -lt {} ]; do systemctl is-active --quiet clustermgr-agent.service && exit 0; sleep 1; i=$((i+1)); done; \
             journalctl -u clustermgr-agent.service -n 20 --no-pager 2>&1; exit 5",
            AGENT_READY_TIMEOUT.as_secs()
        );
        let out = s.run(opts, &script, Some(SYSTEMD_UNIT.as_bytes())).await?;
        return match out.status.code() {
            Some(0) => Ok(ServiceKind::Systemd),
            Some(5) => Err(err(format!(
                "the agent did not come up under systemd; its last log lines:\n{}",
                String::from_utf8_lossy(&out.stdout).trim()
            ))),
            _ => Err(err(format!(
                "installing the systemd unit failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ))),
        };
    }
    let script = format!(
        "set -e; umask 022\n{cert}\
         mkdir -p /etc/init.d; cat > /etc/init.d/clustermgr-agent.new; chmod 0755 /etc/init.d/clustermgr-agent.new; mv -f /etc/init.d/clustermgr-agent.new /etc/init.d/clustermgr-agent; \
         if command -v update-rc.d >/dev/null 2>&1 && update-rc.d clustermgr-agent defaults >/dev/null 2>&1; then echo registered; \
         elif command -v chkconfig >/dev/null 2>&1 && chkconfig --add clustermgr-agent >/dev/null 2>&1; then echo registered; \
         else echo detached; fi; \
         /etc/init.d/clustermgr-agent restart >/dev/null 2>&1 || {{ echo; tail -n 20 {REMOTE_LOG} 2>&1; exit 5; }}"
    );
    let out = s.run(opts, &script, Some(INIT_SCRIPT.as_bytes())).await?;
    let text = String::from_utf8_lossy(&out.stdout);
    match out.status.code() {
        Some(0) => Ok(if text.trim() == "registered" {
            ServiceKind::InitScript
        } else {
            ServiceKind::Detached
        }),
        Some(5) => {
            let log = text.split_once('\n').map_or("", |(_, rest)| rest);
            Err(err(format!(
                "the agent did not come up; its last log lines ({REMOTE_LOG}):\n{}",
                log.trim()
            )))
        }
        _ => Err(err(format!(
            "installing /etc/init.d/clustermgr-agent failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))),
    }
}

/// A directory for the ControlMaster socket, its log and a session's known_hosts that
/// only this user can enter: in a shared `/tmp`, another user could otherwise reach
/// the master socket or swap the known_hosts file read before anything runs.
fn private_tempdir() -> Result<tempfile::TempDir, CtlError> {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::Builder::new()
        .prefix("cm-ssh")
        .permissions(std::fs::Permissions::from_mode(0o700))
        .tempdir()
        .map_err(|e| CtlError::io(std::env::temp_dir(), e))?;
    // The mode given at creation is filtered by the umask, which only takes bits away;
    // set it exactly anyway, so the directory is owner-only whatever happened.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))
        .map_err(|e| CtlError::io(dir.path(), e))?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_and_refuse_option_and_shell_injection() {
        let t = SshTarget::parse("root@gluu1.example.org").unwrap();
        assert_eq!(
            (t.user.as_str(), t.host.as_str(), t.port),
            ("root", "gluu1.example.org", None)
        );
        let t = SshTarget::parse("admin@10.0.0.5:2222").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("10.0.0.5", Some(2222)));
        let t = SshTarget::parse("root@[fd00::5]:22").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("fd00::5", Some(22)));
        assert_eq!(t.default_agent_address(), "[fd00::5]:7443");
        let t = SshTarget::parse("root@fd00::5").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("fd00::5", None));
        for bad in [
            "gluu1",
            "@host",
            "root@",
            "-oProxyCommand=x@host",
            "root@-oProxyCommand=touch",
            "root@host;rm -rf /",
            "root@host name",
            "ro$ot@host",
            "root@host:0",
            "root@host:99999",
            "root@[fd00::5",
        ] {
            assert!(SshTarget::parse(bad).is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn quoting_survives_quotes() {
        assert_eq!(sh_quote("a'b"), r"'a'\''b'");
        assert_eq!(sh_quote(""), "''");
    }

    #[test]
    fn facts_parse() {
        let (f, uid, sudo, no_sha) = parse_facts(
            "uid=1000\nsudo=yes\narch=x86_64\nkernel=3.10.0-1160.el7.x86_64\nglibc=2.17\nos=centos 7\npid1=systemd\nsystemd=yes\ngluu_root=/opt/gluu-server-4.2.3\nfree_kb=123456\nhas_key=yes\nagent_sha256=abc\n",
        );
        assert_eq!(uid.as_deref(), Some("1000"));
        assert!(sudo && !no_sha);
        assert_eq!(f.glibc.as_deref(), Some("2.17"));
        assert_eq!(f.os, "centos 7");
        assert!(f.systemd && f.has_key);
        assert_eq!(f.gluu_root.as_deref(), Some("/opt/gluu-server-4.2.3"));
        assert_eq!(f.free_kb, 123456);
        assert_eq!(f.agent_sha256.as_deref(), Some("abc"));
    }

    #[test]
    fn agent_port_comes_from_the_address() {
        assert_eq!(port_of("10.0.0.1:7443"), 7443);
        assert_eq!(port_of("gluu1:9000"), 9000);
        assert_eq!(port_of("[fd00::1]:9001"), 9001);
        assert_eq!(port_of("gluu1"), 7443);
    }

    #[test]
    fn ssh_errors_are_classified() {
        assert!(matches!(
            MasterError::classify(
                "No ED25519 host key is known for 10.0.0.2 and you have requested strict checking.\nHost key verification failed."
            ),
            MasterError::HostKeyUnknown
        ));
        assert!(matches!(
            MasterError::classify(
                "@@@@\n@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\nHost key verification failed."
            ),
            MasterError::HostKeyChanged(_)
        ));
        assert!(matches!(
            MasterError::classify("root@10.0.0.2: Permission denied (publickey)."),
            MasterError::AuthRefused(_)
        ));
        assert!(matches!(
            MasterError::classify("ssh: connect to host 10.0.0.2 port 22: Connection refused"),
            MasterError::Unreachable(_)
        ));
    }

    #[test]
    fn the_ssh_session_directory_is_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let d = super::private_tempdir().unwrap();
        let mode = std::fs::metadata(d.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
    }
}
