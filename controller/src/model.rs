//! The cluster model: the settings `clustermgr cluster set` changes, from which the
//! generators derive every node's configuration. Stored in the inventory store.

use serde::{Deserialize, Serialize};

use crate::CtlError;

/// Where Gluu 3.x and 4.x install their container.
pub const DEFAULT_GLUU_ROOT: &str = "/opt/gluu-server";

/// The paths csync2 replicates by default, inside the container root (from
/// GLUU-REFERENCE.md).
pub const DEFAULT_REPLICATED_PATHS: &[&str] = &[
    "/opt/gluu/python/libs",
    "/opt/gluu/jetty/oxauth/custom",
    "/opt/gluu/jetty/identity/custom",
    "/opt/gluu/jetty/casa/static",
    "/opt/gluu/jetty/casa/plugins",
    "/opt/gluu/jetty/identity/conf/shibboleth3/idp",
    "/opt/gluu/jetty/identity/conf/shibboleth3/sp",
    "/opt/shibboleth-idp/conf",
    "/opt/shibboleth-idp/metadata",
    "/opt/shibboleth-idp/sp",
    "/opt/shibboleth-idp/temp_metadata",
    "/etc/gluu/conf",
];

/// How the load balancer keeps a browser on one node for the apps that hold sessions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LbSession {
    /// nginx's `ip_hash`.
    IpHash,
    /// The third-party sticky module's `sticky` cookie.
    Sticky,
}

/// Which cache the Gluu nodes share.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Cache {
    /// None: each node keeps its own.
    None,
    /// Redis on the cache host, reached through stunnel.
    Redis,
}

/// The cluster's settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterModel {
    /// The public name the load balancer serves.
    pub hostname: Option<String>,
    /// The Gluu Server version the nodes run (`4.2.3`).
    pub gluu_version: Option<String>,
    /// The container root on the Gluu nodes.
    pub gluu_root: String,
    /// Session affinity for `/identity`, `/idp`, `/passport`, `/casa`.
    pub lb_session: LbSession,
    /// What csync2 keeps equal across the Gluu nodes, inside the container root.
    pub replicated_paths: Vec<String>,
    /// The shared cache.
    pub cache: Cache,
    /// Whether the nodes' `/etc/hosts` get a block naming every node.
    pub manage_hosts: bool,
    /// Gluu nodes the load balancer marks `down`.
    pub drained: Vec<String>,
}

impl Default for ClusterModel {
    fn default() -> Self {
        ClusterModel {
            hostname: None,
            gluu_version: None,
            gluu_root: DEFAULT_GLUU_ROOT.to_string(),
            lb_session: LbSession::IpHash,
            replicated_paths: DEFAULT_REPLICATED_PATHS
                .iter()
                .map(|s| s.to_string())
                .collect(),
            cache: Cache::None,
            manage_hosts: true,
            drained: Vec::new(),
        }
    }
}

/// The keys `cluster set` knows, with what each takes.
pub const KEYS: &[(&str, &str)] = &[
    (
        "hostname",
        "the cluster's public DNS name, served by the load balancer",
    ),
    ("gluu-version", "the Gluu Server version, such as 4.2.3"),
    (
        "gluu-root",
        "the container root on the Gluu nodes (absolute path)",
    ),
    ("lb-session", "ip_hash or sticky"),
    (
        "replicated-paths",
        "comma-separated absolute paths inside the container, or `default`",
    ),
    ("cache", "none or redis"),
    ("manage-hosts", "true or false"),
    (
        "ldap-replication",
        "on or off: apply sets up OpenLDAP replication between the Gluu nodes",
    ),
    (
        "packages",
        "off, repository or directory: where apply installs the nodes' packages from",
    ),
    (
        "package-dir",
        "a directory of .deb/.rpm files on this machine (sets packages = directory)",
    ),
    (
        "ntp-servers",
        "comma-separated time servers for the Gluu nodes' chrony, or none",
    ),
];

/// The secrets `cluster set` takes from a file.
pub const SECRET_KEYS: &[&str] = &["tls-cert", "tls-key"];

pub(crate) fn valid_keys() -> String {
    KEYS.iter()
        .map(|(k, what)| format!("  {k}: {what}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `path` (absolute) inside the container root `root`, as the Gluu node's host (and
/// csync2, which runs there) sees it.
pub fn in_gluu_root(root: &str, path: &str) -> String {
    if root == "/" {
        path.to_string()
    } else {
        format!("{}{path}", root.trim_end_matches('/'))
    }
}

/// A replicated path that csync2 must not copy between nodes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReservedReplica {
    /// The path as `replicated-paths` holds it.
    pub path: String,
    /// Where it lies on the host, inside `gluu-root`.
    pub on_host: String,
    /// The gluu-root it lies in.
    pub root: String,
    /// The run-later or agent-owned path it is, holds or lies in.
    pub reserved: &'static str,
}

impl std::fmt::Display for ReservedReplica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Self {
            path,
            on_host,
            root,
            reserved,
        } = self;
        if path == on_host {
            write!(f, "replicated path {path:?} is or holds {reserved}")?;
        } else {
            write!(
                f,
                "replicated path {path:?} is {on_host} on the Gluu nodes (inside gluu-root {root}), which is or holds {reserved}"
            )?;
        }
        write!(
            f,
            ": csync2 runs as root and must not copy the agent's own files, or files the system runs later, between nodes"
        )
    }
}

/// The first of `paths` that csync2 must not replicate: judged alone (it may be a
/// directory of any chroot) and where csync2 finds it, inside `root`
/// (`/cron.d` inside `/etc` is `/etc/cron.d`). csync2 runs as root and copies files
/// with their modes: a replicated cron or init directory, or the agent's identity,
/// would let one node's files run or act on every other.
pub fn reserved_replica(root: &str, paths: &[String]) -> Option<ReservedReplica> {
    paths.iter().find_map(|p| {
        let on_host = in_gluu_root(root, p);
        let reserved = clustermgr_protocol::runs_later::reserved_overlap(p)
            .or_else(|| clustermgr_protocol::runs_later::reserved_overlap(&on_host))?;
        Some(ReservedReplica {
            path: p.clone(),
            on_host,
            root: root.to_string(),
            reserved,
        })
    })
}

impl ClusterModel {
    /// Puts one key back to its default (`hostname` and `gluu-version` to none).
    pub fn unset(&mut self, key: &str) -> Result<(), CtlError> {
        let d = ClusterModel::default();
        let mut next = self.clone();
        match key {
            "hostname" => next.hostname = d.hostname,
            "gluu-version" => next.gluu_version = d.gluu_version,
            "gluu-root" => next.gluu_root = d.gluu_root,
            "lb-session" => next.lb_session = d.lb_session,
            "replicated-paths" => next.replicated_paths = d.replicated_paths,
            "cache" => next.cache = d.cache,
            "manage-hosts" => next.manage_hosts = d.manage_hosts,
            _ => return self.set(key, ""),
        }
        next.check_replicated(key)?;
        *self = next;
        Ok(())
    }

    /// Sets one key from its command-line form. A refused value leaves the model as it
    /// was.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), CtlError> {
        let mut next = self.clone();
        next.set_one(key, value)?;
        next.check_replicated(key)?;
        *self = next;
        Ok(())
    }

    /// After `key` changed: the replicated paths, judged where csync2 will find them.
    fn check_replicated(&self, key: &str) -> Result<(), CtlError> {
        if !matches!(key, "gluu-root" | "replicated-paths") {
            return Ok(());
        }
        let Some(r) = reserved_replica(&self.gluu_root, &self.replicated_paths) else {
            return Ok(());
        };
        let what_to_do = if key == "gluu-root" {
            "give the container root the Gluu nodes use, or first change replicated-paths (`clustermgr cluster set replicated-paths PATHS`)"
        } else {
            "name the directories of Gluu's own files instead"
        };
        Err(CtlError::BadSetting {
            key: key.to_string(),
            why: format!("{r}; {what_to_do}"),
        })
    }

    fn set_one(&mut self, key: &str, value: &str) -> Result<(), CtlError> {
        let bad = |why: &str| CtlError::BadSetting {
            key: key.to_string(),
            why: why.to_string(),
        };
        match key {
            "hostname" => {
                let name = value.trim_end_matches('.').to_ascii_lowercase();
                clustermgr_protocol::NodeName::new(&name).map_err(|_| {
                    bad(&format!(
                        "{value:?} is not a DNS name; give the name clients use, such as idp.example.org"
                    ))
                })?;
                self.hostname = Some(name);
            }
            "gluu-version" => {
                let ok = !value.is_empty()
                    && value.split('.').all(|p| {
                        !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    })
                    && value.starts_with(|c: char| c.is_ascii_digit());
                if !ok {
                    return Err(bad(&format!(
                        "{value:?} is not a version; use the form 4.2.3"
                    )));
                }
                // The generated files differ between 3.x and 4.x (ox-ldap.properties,
                // OpenDJ's ports); any other major would be generated for blindly.
                if !(value.starts_with("3.") || value.starts_with("4.")) {
                    return Err(bad(&format!(
                        "{value:?}: clustermgr knows Gluu Server 3.x and 4.x; give the version the nodes run, such as 4.2.3"
                    )));
                }
                self.gluu_version = Some(value.to_string());
            }
            "gluu-root" => {
                self.gluu_root = normalized_path(value).map_err(|why| bad(&why))?;
            }
            "lb-session" => {
                self.lb_session = match value {
                    "ip_hash" => LbSession::IpHash,
                    "sticky" => LbSession::Sticky,
                    _ => return Err(bad(&format!("{value:?}: use ip_hash or sticky"))),
                }
            }
            "replicated-paths" => {
                if value == "default" {
                    self.replicated_paths = ClusterModel::default().replicated_paths;
                } else {
                    let mut paths = Vec::new();
                    for p in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                        // Judged with the root by `check_replicated`.
                        paths.push(normalized_path(p).map_err(|why| bad(&why))?);
                    }
                    if paths.is_empty() {
                        return Err(bad("give at least one path, or `default`"));
                    }
                    paths.sort();
                    paths.dedup();
                    self.replicated_paths = paths;
                }
            }
            "cache" => {
                self.cache = match value {
                    "none" => Cache::None,
                    "redis" => Cache::Redis,
                    _ => return Err(bad(&format!("{value:?}: use none or redis"))),
                }
            }
            "manage-hosts" => {
                self.manage_hosts = match value {
                    "true" | "yes" | "on" => true,
                    "false" | "no" | "off" => false,
                    _ => return Err(bad(&format!("{value:?}: use true or false"))),
                }
            }
            _ => {
                let names = KEYS.iter().map(|(k, _)| *k).chain(["tls-cert", "tls-key"]);
                return Err(CtlError::UnknownSetting {
                    key: key.to_string(),
                    hint: crate::suggest::hint(key, names),
                });
            }
        }
        Ok(())
    }

    /// Every key with its value, as `cluster show` prints them.
    pub fn rows(&self) -> Vec<(&'static str, String)> {
        let or_unset = |v: &Option<String>| v.clone().unwrap_or_else(|| "(not set)".into());
        vec![
            ("hostname", or_unset(&self.hostname)),
            ("gluu-version", or_unset(&self.gluu_version)),
            ("gluu-root", self.gluu_root.clone()),
            (
                "lb-session",
                match self.lb_session {
                    LbSession::IpHash => "ip_hash",
                    LbSession::Sticky => "sticky",
                }
                .into(),
            ),
            ("replicated-paths", self.replicated_paths.join(",")),
            (
                "cache",
                match self.cache {
                    Cache::None => "none",
                    Cache::Redis => "redis",
                }
                .into(),
            ),
            ("manage-hosts", self.manage_hosts.to_string()),
            ("drained", self.drained.join(",")),
        ]
    }
}

/// An absolute path with no `.`, `..`, empty components or trailing slash, of the
/// characters the generated configurations can carry as they are: these paths go into
/// csync2's `include` lines and the shell command of its action, where a space, a
/// quote, `;` or a brace would break the file or run something else.
fn normalized_path(p: &str) -> Result<String, String> {
    if !p.starts_with('/') {
        return Err(format!("{p:?} is not an absolute path"));
    }
    if let Some(c) = p
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "/._-+@=".contains(*c)))
    {
        return Err(format!(
            "{p:?} has {c:?}, which the generated csync2 configuration cannot carry: use letters, digits and / . _ - + @ ="
        ));
    }
    let parts: Vec<&str> = p.split('/').skip(1).collect();
    if p == "/" {
        return Ok(p.to_string());
    }
    if parts
        .iter()
        .any(|c| c.is_empty() || *c == "." || *c == ".." || c.contains('\0'))
    {
        return Err(format!(
            "{p:?} is not a normalized path (no `.`, `..`, `//` or trailing `/`)"
        ));
    }
    Ok(p.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_list_the_valid_ones() {
        let err = ClusterModel::default()
            .set("hostnme", "x")
            .unwrap_err()
            .to_string();
        for (k, _) in KEYS {
            assert!(err.contains(k), "{err}");
        }
    }

    #[test]
    fn bad_values_are_refused_and_leave_the_model_alone() {
        let mut m = ClusterModel::default();
        for (k, v) in [
            ("hostname", "not a name"),
            ("gluu-root", "opt/gluu"),
            ("gluu-root", "/opt/../etc"),
            ("lb-session", "round_robin"),
            ("cache", "memcached"),
            ("manage-hosts", "maybe"),
            ("replicated-paths", "/a,relative"),
            ("replicated-paths", "/opt/a b"),
            ("replicated-paths", "/opt/a;b"),
            ("replicated-paths", "/etc/clustermgr"),
            ("replicated-paths", "/opt/gluu/x,/etc/cron.d"),
            ("replicated-paths", "/etc"),
            ("replicated-paths", "/"),
            ("replicated-paths", "/etc/init.d/x"),
            ("gluu-root", "/opt/gluu\"; rm -rf /; \""),
            ("gluu-root", "/opt/{x}"),
            ("gluu-version", "latest"),
            ("gluu-version", "9"),
            ("gluu-version", "5.0.1"),
        ] {
            let err = m.set(k, v).unwrap_err().to_string();
            assert!(err.starts_with(k), "{err}");
        }
        assert_eq!(m, ClusterModel::default());
        // Gluu's own directories, the default, are not reserved.
        m.set("replicated-paths", &DEFAULT_REPLICATED_PATHS.join(","))
            .unwrap();
    }

    #[test]
    fn replicated_paths_are_judged_where_csync2_finds_them_inside_the_gluu_root() {
        // The path set second.
        let mut m = ClusterModel::default();
        m.set("gluu-root", "/etc").unwrap();
        let before = m.clone();
        let err = m
            .set("replicated-paths", "/cron.d")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("replicated-paths"), "{err}");
        assert!(err.contains("/etc/cron.d"), "{err}");
        assert_eq!(m, before);
        // The root set second: the stored paths are judged again, and the one that
        // lands on the agent's state is named.
        let mut m = ClusterModel::default();
        m.set("replicated-paths", "/opt/gluu/x,/clustermgr-agent")
            .unwrap();
        let before = m.clone();
        let err = m.set("gluu-root", "/var/lib").unwrap_err().to_string();
        assert!(err.starts_with("gluu-root"), "{err}");
        assert!(err.contains("\"/clustermgr-agent\""), "{err}");
        assert!(err.contains("/var/lib/clustermgr-agent"), "{err}");
        assert_eq!(m, before);
        // A whole container root is the same as its parts.
        let mut m = ClusterModel::default();
        m.set("gluu-root", "/var").unwrap();
        assert!(m.set("replicated-paths", "/lib").is_err());
        // Gluu's own directories stay replicable under any container root.
        for root in ["/", "/opt/gluu-server-4.2.3", "/etc"] {
            let mut m = ClusterModel::default();
            m.set("gluu-root", root).unwrap();
            m.set("replicated-paths", "default").unwrap();
        }
    }

    #[test]
    fn values_are_normalized() {
        let mut m = ClusterModel::default();
        m.set("hostname", "IdP.Example.org.").unwrap();
        m.set("replicated-paths", "/b, /a,/b").unwrap();
        assert_eq!(m.hostname.as_deref(), Some("idp.example.org"));
        assert_eq!(m.replicated_paths, ["/a", "/b"]);
        m.set("replicated-paths", "default").unwrap();
        assert_eq!(m.replicated_paths, ClusterModel::default().replicated_paths);
    }
}
