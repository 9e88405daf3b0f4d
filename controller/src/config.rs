//! The controller's settings file, `HOME/controller.toml`: connection timeouts and the
//! frame limit. `init` writes the commented defaults; a missing file means defaults;
//! `--connect-timeout` overrides its value for one command.

use std::path::Path;
use std::time::Duration;

use clustermgr_protocol::frame::DEFAULT_MAX_FRAME_BYTES;
use clustermgr_protocol::transport::Timeouts;
use serde::Deserialize;

use crate::CtlError;

/// The commented example, as `init` writes it (also `packaging/controller.toml`).
pub const EXAMPLE: &str = include_str!("../../packaging/controller.toml");

/// Everything `controller.toml` may say.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ControllerConfig {
    /// How long a node has to answer a connection, in milliseconds.
    pub connect_timeout_ms: u64,
    /// The largest frame accepted from an agent.
    pub max_frame_bytes: u32,
    /// Keep-alive and idle timeout; must match the agents'.
    pub timeouts: Timeouts,
    /// What `serve` keeps of the telemetry.
    pub retention: Retention,
    /// How often the health checks run.
    pub health: HealthConfig,
    /// Where `serve` sends each health change.
    pub alerts: AlertsConfig,
    /// Other local users' roles, and the socket they reach `serve` through.
    pub access: crate::access::AccessConfig,
    /// The web console `serve` serves.
    pub web: WebConfig,
    /// How oxAuth's keys rotate.
    pub keys: KeysConfig,
}

/// The `[keys]` section: which oxAuth keys `keys rotate` makes, and how often `serve`
/// rotates them once the first rotation has been made.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KeysConfig {
    /// Hours between two rotations by `serve`; 0: only `keys rotate` rotates. A new key
    /// is published one interval before it signs, so this is also how long relying
    /// parties have to fetch it.
    pub interval_hours: u64,
    /// Hours a key that stopped signing stays published: at least the longest lifetime
    /// of a token oxAuth signs (ID tokens: `idTokenLifetime`, 1 hour by default).
    pub keep_hours: u64,
    /// Each key's `exp` and certificate validity, days.
    pub lifetime_days: u64,
    /// The algorithms a rotation makes one key each for (JWA names).
    pub algorithms: Vec<String>,
}

/// Checks `[keys]`; the message names the setting.
pub fn check_keys(cfg: &KeysConfig) -> Result<(), String> {
    if cfg.algorithms.is_empty() {
        return Err("[keys] algorithms must name at least one algorithm".into());
    }
    let mut seen = std::collections::BTreeSet::new();
    for a in &cfg.algorithms {
        if crate::generate::keys::alg(a).is_none() {
            return Err(format!(
                "[keys] algorithms: {a:?} is not one oxAuth keys are made for ({})",
                crate::generate::keys::ALGS
                    .iter()
                    .map(|a| a.name)
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        if !seen.insert(a) {
            return Err(format!("[keys] algorithms names {a} twice"));
        }
    }
    if cfg.lifetime_days == 0 || cfg.lifetime_days > 3650 {
        return Err("[keys] lifetime_days must be 1 to 3650".into());
    }
    if cfg.interval_hours > 87_600 || cfg.keep_hours > 87_600 {
        return Err(
            "[keys] interval_hours and keep_hours must be at most 87600 (ten years)".into(),
        );
    }
    // A key is the next one for an interval, signs for another, then stays published.
    let lived_hours = 2 * cfg.interval_hours + cfg.keep_hours;
    if cfg.lifetime_days * 24 < lived_hours {
        return Err(format!(
            "[keys] lifetime_days ({}) is shorter than a key is used: two intervals and keep_hours, {lived_hours} hours",
            cfg.lifetime_days
        ));
    }
    Ok(())
}

impl Default for KeysConfig {
    fn default() -> Self {
        KeysConfig {
            interval_hours: 48,
            keep_hours: 24,
            lifetime_days: 365,
            algorithms: crate::generate::keys::DEFAULT_ALGORITHMS
                .iter()
                .map(|a| a.to_string())
                .collect(),
        }
    }
}

/// The `[web]` section: where `serve` serves the console, and how long a login lasts.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebConfig {
    /// `host:port`, or `off`. A loopback address is reached from elsewhere with
    /// `ssh -L 5000:localhost:5000 CONTROLLER`.
    pub address: String,
    /// A session unused this long ends, in minutes.
    pub idle_minutes: u64,
    /// A session ends this long after the login whatever happens, in hours.
    pub absolute_hours: u64,
    /// TLS: `off` (loopback only), `files` (`tls_cert` and `tls_key`), or `issued` (a
    /// certificate for `tls_names` from a console CA of the controller's own).
    pub tls: WebTls,
    /// The certificate chain (PEM) with `tls = "files"`.
    pub tls_cert: Option<std::path::PathBuf>,
    /// Its key (PEM, readable by the owner only) with `tls = "files"`.
    pub tls_key: Option<std::path::PathBuf>,
    /// The names the issued certificate is for, with `tls = "issued"` (DNS names or
    /// IP addresses; default: the address's IP and this host's name).
    pub tls_names: Vec<String>,
    /// Login through an OpenID provider, beside the console's own accounts.
    pub oidc: Option<OidcConfig>,
}

/// How the console is served.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WebTls {
    /// Plain HTTP: loopback addresses only (reached with `ssh -L`).
    #[default]
    Off,
    /// HTTPS with the certificate and key files given.
    Files,
    /// HTTPS with a certificate the controller issues from a console CA of its own.
    Issued,
}

impl Default for WebConfig {
    fn default() -> Self {
        WebConfig {
            address: "127.0.0.1:5000".into(),
            idle_minutes: 30,
            absolute_hours: 12,
            tls: WebTls::Off,
            tls_cert: None,
            tls_key: None,
            tls_names: Vec::new(),
            oidc: None,
        }
    }
}

impl WebConfig {
    /// The address to listen on; `None` when the console is off.
    pub fn listen(&self) -> Result<Option<std::net::SocketAddr>, String> {
        if self.address == "off" {
            return Ok(None);
        }
        let addr: std::net::SocketAddr = self.address.parse().map_err(|_| {
            format!(
                "[web] address {:?} is not IP:PORT or \"off\" (such as \"127.0.0.1:5000\")",
                self.address
            )
        })?;
        if !addr.ip().is_loopback() && self.tls == WebTls::Off {
            return Err(format!(
                "[web] address {addr} is not a loopback address, and passwords must not cross a network in clear: set [web] tls = \"issued\" (a certificate from a console CA of the controller's own) or tls = \"files\" with tls_cert and tls_key, or keep 127.0.0.1:5000 and reach it with `ssh -L 5000:localhost:5000 THIS-HOST`"
            ));
        }
        if self.tls == WebTls::Files && (self.tls_cert.is_none() || self.tls_key.is_none()) {
            return Err(
                "[web] tls = \"files\" needs tls_cert and tls_key (PEM files; the key readable by its owner only)".into(),
            );
        }
        Ok(Some(addr))
    }
}

/// The `[alerts]` section: each health change (an event) goes to a command, a
/// webhook, or both, once, with retries.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AlertsConfig {
    /// A program and its arguments (no shell), run for each event with the event as
    /// JSON on its standard input; exit 0 means delivered.
    pub command: Vec<String>,
    /// An `http://` URL the event is POSTed to as JSON; a 2xx answer means delivered.
    pub webhook: Option<String>,
}

/// The `[health]` section.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HealthConfig {
    /// Seconds between two rounds of checks; also how often each node writes its LDAP
    /// heartbeat.
    pub interval_secs: u64,
    /// A file system fuller than this (percent) is a warning.
    pub disk_warning_pct: u8,
    /// Fuller than this is critical.
    pub disk_critical_pct: u8,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            interval_secs: 10,
            disk_warning_pct: 90,
            disk_critical_pct: 95,
        }
    }
}

impl Default for ControllerConfig {
    fn default() -> Self {
        ControllerConfig {
            connect_timeout_ms: 3_000,
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            timeouts: Timeouts::default(),
            retention: Default::default(),
            health: Default::default(),
            alerts: Default::default(),
            access: Default::default(),
            web: Default::default(),
            keys: Default::default(),
        }
    }
}

impl ControllerConfig {
    /// Reads `path`; a missing file gives the defaults.
    pub fn load(path: &Path) -> Result<Self, CtlError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(path, &text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(CtlError::io(path, e)),
        }
    }

    fn parse(path: &Path, text: &str) -> Result<Self, CtlError> {
        let invalid = |m: String| CtlError::BadFile {
            path: path.to_path_buf(),
            why: format!("invalid: {m}"),
        };
        let cfg: ControllerConfig = toml::from_str(text).map_err(|e| invalid(e.to_string()))?;
        if let Some(socket) = &cfg.access.socket
            && !socket.is_absolute()
        {
            return Err(invalid(format!(
                "[access] socket {} must be an absolute path",
                socket.display()
            )));
        }
        cfg.web.listen().map_err(invalid)?;
        if cfg.web.idle_minutes == 0 || cfg.web.absolute_hours == 0 {
            return Err(invalid(
                "[web] idle_minutes and absolute_hours must be above 0".into(),
            ));
        }
        if cfg.connect_timeout_ms == 0 {
            return Err(invalid("connect_timeout_ms must be above 0".into()));
        }
        if let Some(url) = &cfg.alerts.webhook {
            crate::http::Target::parse(url, "[alerts] webhook", 80, "/")?;
        }
        if cfg
            .alerts
            .command
            .first()
            .is_some_and(|p| !p.starts_with('/'))
        {
            return Err(invalid(
                "[alerts] command must start with an absolute path (no shell runs it)".into(),
            ));
        }
        if !(cfg.health.disk_warning_pct <= cfg.health.disk_critical_pct
            && cfg.health.disk_critical_pct <= 100)
        {
            return Err(invalid(
                "health.disk_warning_pct must not exceed health.disk_critical_pct, nor that 100"
                    .into(),
            ));
        }
        if cfg.health.interval_secs == 0 {
            return Err(invalid("health.interval_secs must be above 0".into()));
        }
        check_keys(&cfg.keys).map_err(invalid)?;
        if cfg.max_frame_bytes < 64 * 1024 {
            return Err(invalid("max_frame_bytes must be at least 65536".into()));
        }
        if cfg.timeouts.keep_alive_ms >= cfg.timeouts.idle_ms {
            return Err(invalid(
                "timeouts.keep_alive_ms must be below timeouts.idle_ms, or idle connections die"
                    .into(),
            ));
        }
        Ok(cfg)
    }

    /// The options an operation context is opened with.
    pub fn options(&self) -> CtxOptions {
        CtxOptions {
            connect_timeout: Duration::from_millis(self.connect_timeout_ms),
            timeouts: self.timeouts,
            max_frame_bytes: self.max_frame_bytes,
            socket: None,
        }
    }
}

/// Settings of a controller process (from `controller.toml`).
#[derive(Clone, Debug)]
pub struct CtxOptions {
    /// How long a node has to answer a connection.
    pub connect_timeout: Duration,
    /// Keep-alive and idle timeout.
    pub timeouts: Timeouts,
    /// The largest frame accepted from an agent.
    pub max_frame_bytes: u32,
    /// A `serve` socket to use instead of the home's (`--socket`): another local user
    /// reaching the owner's `serve`; operations then never run in this process.
    pub socket: Option<std::path::PathBuf>,
}

impl Default for CtxOptions {
    fn default() -> Self {
        ControllerConfig::default().options()
    }
}

/// How long each kind of telemetry is kept, and how large the store may grow.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Retention {
    /// Raw samples, in days.
    pub raw_days: u32,
    /// 1-minute points, in days.
    pub minute_days: u32,
    /// 1-hour points, in days.
    pub hour_days: u32,
    /// Log lines, in days.
    pub log_days: u32,
    /// The most the stored logs and samples may take, in MiB; beyond it the oldest
    /// log blocks and raw chunks go first.
    pub max_mib: u64,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            raw_days: 7,
            minute_days: 90,
            hour_days: 730,
            log_days: 30,
            max_mib: 10 * 1024,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_packaged_example_parses_to_the_defaults() {
        let cfg = ControllerConfig::parse(Path::new("controller.toml"), EXAMPLE).unwrap();
        assert_eq!(cfg, ControllerConfig::default());
    }

    #[test]
    fn bad_settings_are_refused_with_the_file_named() {
        let err = ControllerConfig::parse(Path::new("/h/controller.toml"), "conect_timeout_ms = 5")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("/h/controller.toml") && err.contains("conect_timeout_ms"),
            "{err}"
        );
        let err = ControllerConfig::parse(
            Path::new("c.toml"),
            "[timeouts]\nkeep_alive_ms = 40000\nidle_ms = 30000",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("keep_alive_ms"), "{err}");
    }
}

/// The `[web.oidc]` section.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcConfig {
    /// The provider's issuer URL (its discovery document is under
    /// `/.well-known/openid-configuration`).
    pub issuer: String,
    /// The client registered for the console.
    pub client_id: String,
    /// A file holding the client's secret (owner-only); none for a public client.
    #[serde(default)]
    pub client_secret_file: Option<std::path::PathBuf>,
    /// Where the provider sends the browser back: the console's
    /// `/login/oidc/callback` as the browser reaches it.
    pub redirect_uri: String,
    /// The claim that holds the role.
    #[serde(default = "default_role_claim")]
    pub role_claim: String,
    /// The claim values that give a role.
    #[serde(default = "default_roles")]
    pub roles: std::collections::BTreeMap<String, crate::access::UserRole>,
    /// The claim that names the person (else `preferred_username`, `email`, `sub`).
    #[serde(default)]
    pub name_claim: Option<String>,
    /// The scopes asked for.
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
}

fn default_role_claim() -> String {
    "role".into()
}

fn default_roles() -> std::collections::BTreeMap<String, crate::access::UserRole> {
    [("clusteradmin".to_string(), crate::access::UserRole::Admin)].into()
}

fn default_scopes() -> Vec<String> {
    vec!["openid".into(), "profile".into(), "email".into()]
}
