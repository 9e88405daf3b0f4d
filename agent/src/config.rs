//! The agent's configuration file (`/etc/clustermgr/agent.toml`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clustermgr_protocol::frame::DEFAULT_MAX_FRAME_BYTES;
use clustermgr_protocol::transport::Timeouts;
use serde::Deserialize;

use crate::AgentError;

/// The directory holding the agent's own identity and configuration; never writable
/// through a config push.
pub const RESERVED_DIR: &str = "/etc/clustermgr";

/// Everything `clustermgr-agent run` is told.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// UDP address to listen on.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// The agent's certificate (PEM).
    pub cert: PathBuf,
    /// The agent's private key (PEM, mode 0600).
    pub key: PathBuf,
    /// The cluster CA certificate (PEM).
    pub ca: PathBuf,
    /// Where the agent keeps its journal and other state.
    pub state_dir: PathBuf,
    /// The directory that stands for `/` on this host: `/` on a real node, a sandbox
    /// directory under `clustermgr dev`. Gluu markers are looked up below it.
    #[serde(default = "default_root")]
    pub root: PathBuf,
    /// Directories (or single files) that config pushes may write under. Never
    /// `/etc/clustermgr`. The default is every path the generated Gluu cluster
    /// configuration uses ([`DEFAULT_WRITABLE_ROOTS`]).
    #[serde(default = "default_writable_roots")]
    pub writable_roots: Vec<PathBuf>,
    /// Whether the controller may run commands here.
    #[serde(default = "default_true")]
    pub allow_exec: bool,
    /// Whether `apply` may install the packages the cluster needs (their scripts run
    /// as root).
    #[serde(default = "default_true")]
    pub allow_packages: bool,
    /// The largest frame accepted.
    #[serde(default = "default_max_frame")]
    pub max_frame_bytes: u32,
    /// How long in-flight work may finish after SIGTERM, in milliseconds.
    #[serde(default = "default_grace")]
    pub shutdown_grace_ms: u64,
    /// Keep-alive and idle timeout; must match the controller's.
    #[serde(default)]
    pub timeouts: Timeouts,
    /// Log and metric collection.
    #[serde(default)]
    pub telemetry: TelemetryConfig,
    /// The node's LDAP server, when the Gluu configuration does not say.
    #[serde(default)]
    pub ldap: LdapConfig,
    /// The file this was read from (a self-upgrade has the new binary check it).
    #[serde(skip)]
    pub path: PathBuf,
}

/// What config pushes may write when `agent.toml` does not say: the files the
/// controller generates for a Gluu cluster (nginx, csync2, stunnel and their services,
/// the `/etc/hosts` block, the cache host's Redis settings: Debian's and Red Hat's
/// file, only the file, so the rest of `/etc/redis` stays out of reach) and the Gluu
/// container.
pub const DEFAULT_WRITABLE_ROOTS: &[&str] = &[
    "/etc/nginx",
    "/etc/stunnel",
    "/etc/csync2.cfg",
    "/etc/csync2.key",
    "/etc/csync2_ssl_key.pem",
    "/etc/csync2_ssl_cert.pem",
    "/etc/hosts",
    "/etc/cron.d/clustermgr-csync2",
    "/etc/cron.d/clustermgr-clean-expired",
    "/etc/init.d/clustermgr-csync2",
    "/etc/init.d/clustermgr-stunnel",
    "/etc/systemd/system/clustermgr-csync2.service",
    "/etc/systemd/system/clustermgr-stunnel.service",
    "/etc/redis/redis.conf",
    "/etc/redis.conf",
    "/etc/chrony/chrony.conf",
    "/etc/chrony.conf",
    "/opt/gluu-server",
];

/// The `[telemetry]` section: what the agent collects and how much it keeps while no
/// controller takes it.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// Whether to collect at all.
    pub enabled: bool,
    /// Seconds between metric samples (1 at least).
    pub metrics_interval_secs: u64,
    /// The spool's size bound in MiB; the oldest records go first.
    pub spool_mib: u64,
    /// Whether to follow the Gluu, LDAP, web server, nginx, csync2, stunnel and agent
    /// logs where they usually are (files that do not exist are followed once they do).
    pub default_logs: bool,
    /// More files to follow, as `NAME=PATH` (the path on the host).
    pub logs: Vec<String>,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            enabled: true,
            metrics_interval_secs: 10,
            spool_mib: 256,
            default_logs: true,
            logs: Vec::new(),
        }
    }
}

/// The `[ldap]` section: how the agent reaches its node's LDAP server for the health
/// checks. Without `url` the agent reads the Gluu installation's own settings
/// (`gluu-ldap.properties` or `ox-ldap.properties`, decoded with the node's salt).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LdapConfig {
    /// `ldaps://host:port`, or `ldap://` to a loopback address.
    pub url: Option<String>,
    /// The DN to bind as.
    pub bind_dn: Option<String>,
    /// A file on this node holding the password (mode 0600; one line).
    pub password_file: Option<PathBuf>,
    /// The LDAP server's certificate (PEM), pinned for `ldaps://`.
    pub cert_file: Option<PathBuf>,
    /// The deadline of every LDAP connect, read and write, in milliseconds.
    pub timeout_ms: u64,
    /// The replicated suffix the heartbeat entries live under.
    pub suffix: String,
    /// Whether this node writes its heartbeat entry (every check interval), by which
    /// its peers measure replication lag.
    pub heartbeat: bool,
    /// slapd's `ldapi://` socket, through which the agent changes `cn=config` as root
    /// (SASL EXTERNAL) when it sets up replication; found at the usual places in the
    /// Gluu container or on the host when not set.
    pub ldapi: Option<PathBuf>,
}

impl Default for LdapConfig {
    fn default() -> Self {
        LdapConfig {
            url: None,
            bind_dn: None,
            password_file: None,
            cert_file: None,
            timeout_ms: 5000,
            suffix: "o=gluu".into(),
            heartbeat: true,
            ldapi: None,
        }
    }
}

fn default_writable_roots() -> Vec<PathBuf> {
    DEFAULT_WRITABLE_ROOTS.iter().map(PathBuf::from).collect()
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], clustermgr_protocol::DEFAULT_AGENT_PORT))
}
fn default_root() -> PathBuf {
    PathBuf::from("/")
}
fn default_true() -> bool {
    true
}
fn default_max_frame() -> u32 {
    DEFAULT_MAX_FRAME_BYTES
}
fn default_grace() -> u64 {
    10_000
}

impl AgentConfig {
    /// Reads and checks a configuration file.
    pub fn load(path: &Path) -> Result<Self, AgentError> {
        let text = std::fs::read_to_string(path).map_err(|source| AgentError::ConfigRead {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(path, &text)
    }

    /// Parses and checks configuration text; `path` is for messages.
    pub fn parse(path: &Path, text: &str) -> Result<Self, AgentError> {
        let invalid = |message: String| AgentError::ConfigInvalid {
            path: path.to_path_buf(),
            message,
        };
        let mut cfg: AgentConfig = toml::from_str(text).map_err(|e| invalid(e.to_string()))?;
        cfg.path = path.to_path_buf();
        for root in &cfg.writable_roots {
            if !root.is_absolute() {
                return Err(invalid(format!(
                    "writable_roots entry {} is not an absolute path",
                    root.display()
                )));
            }
            if root.starts_with(RESERVED_DIR) || Path::new(RESERVED_DIR).starts_with(root) {
                return Err(invalid(format!(
                    "writable_roots entry {} would let config pushes rewrite the agent's own identity in {RESERVED_DIR}; remove it",
                    root.display()
                )));
            }
        }
        let t = &cfg.telemetry;
        if t.metrics_interval_secs == 0 {
            return Err(invalid(
                "telemetry.metrics_interval_secs must be 1 or more".to_string(),
            ));
        }
        if t.spool_mib == 0 {
            return Err(invalid("telemetry.spool_mib must be 1 or more".to_string()));
        }
        for l in &t.logs {
            match l.split_once('=') {
                Some((name, path)) if !name.is_empty() && Path::new(path).is_absolute() => {}
                _ => {
                    return Err(invalid(format!(
                        "telemetry.logs entry {l:?} is not NAME=/absolute/path"
                    )));
                }
            }
        }
        if cfg.max_frame_bytes < 64 * 1024 {
            return Err(invalid(
                "max_frame_bytes must be at least 65536".to_string(),
            ));
        }
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_packaged_example_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/agent.toml");
        let cfg = AgentConfig::load(&path).unwrap();
        assert_eq!(cfg.listen.port(), 7443);
        assert!(cfg.allow_exec);
        // The example spells out the defaults, so an admin editing it starts from them.
        assert_eq!(cfg.writable_roots, default_writable_roots());
        let (t, d) = (&cfg.telemetry, TelemetryConfig::default());
        assert_eq!(
            (
                t.enabled,
                t.metrics_interval_secs,
                t.spool_mib,
                t.default_logs,
                &t.logs
            ),
            (
                d.enabled,
                d.metrics_interval_secs,
                d.spool_mib,
                d.default_logs,
                &d.logs
            )
        );
    }

    #[test]
    fn bad_telemetry_settings_are_named() {
        let base = "cert = \"/c\"\nkey = \"/k\"\nca = \"/a\"\nstate_dir = \"/s\"\n[telemetry]\n";
        for (bad, says) in [
            ("metrics_interval_secs = 0", "metrics_interval_secs"),
            ("spool_mib = 0", "spool_mib"),
            ("logs = [\"nopath\"]", "NAME=/absolute/path"),
            ("logs = [\"x=relative\"]", "NAME=/absolute/path"),
        ] {
            let err = AgentConfig::parse(Path::new("t.toml"), &format!("{base}{bad}\n"))
                .unwrap_err()
                .to_string();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }

    #[test]
    fn the_agents_own_directory_is_never_writable() {
        let text = r#"
            cert = "/etc/clustermgr/agent.crt"
            key = "/etc/clustermgr/agent.key"
            ca = "/etc/clustermgr/ca.crt"
            state_dir = "/var/lib/clustermgr-agent"
            writable_roots = ["/etc"]
        "#;
        let err = AgentConfig::parse(Path::new("t.toml"), text)
            .unwrap_err()
            .to_string();
        assert!(err.contains("/etc/clustermgr"), "{err}");
    }

    #[test]
    fn unknown_keys_are_refused() {
        let text = r#"
            cert = "a"
            key = "b"
            ca = "c"
            state_dir = "d"
            allow_exce = false
        "#;
        let err = AgentConfig::parse(Path::new("t.toml"), text)
            .unwrap_err()
            .to_string();
        assert!(err.contains("allow_exce"), "{err}");
    }
}
