//! Host facts for the Info request: OS, kernel, architecture, C library, uptime,
//! clock, and the Gluu Server install if there is one.

use std::path::Path;

use clustermgr_protocol::NodeName;
use clustermgr_protocol::message::{GluuInstall, NodeInfo};

/// Reads the host's facts. `root` stands for `/` (a sandbox under `clustermgr dev`).
pub fn node_info(node: &NodeName, root: &Path, exec_allowed: bool) -> NodeInfo {
    NodeInfo {
        node: node.clone(),
        hostname: read_trimmed("/proc/sys/kernel/hostname").unwrap_or_default(),
        os_release: os_release(&root.join("etc/os-release"))
            .or_else(|| os_release(Path::new("/etc/os-release")))
            .unwrap_or_else(|| "unknown".to_string()),
        kernel: read_trimmed("/proc/sys/kernel/osrelease").unwrap_or_default(),
        arch: std::env::consts::ARCH.to_string(),
        glibc: crate::sys::glibc_version(),
        agent_version: env!("CARGO_PKG_VERSION").to_string(),
        uptime_secs: read_trimmed("/proc/uptime")
            .and_then(|s| s.split('.').next().and_then(|n| n.parse().ok()))
            .unwrap_or(0),
        clock_unix_ms: crate::journal::now_ms(),
        gluu: detect_gluu(root),
        exec_allowed,
    }
}

fn read_trimmed(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

fn os_release(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines().find_map(|l| {
        l.strip_prefix("PRETTY_NAME=")
            .map(|v| v.trim_matches('"').to_string())
    })
}

/// Marker paths (relative to a container root) and the component each shows.
const MARKERS: &[(&str, &str)] = &[
    ("opt/gluu/jetty/oxauth", "oxauth"),
    ("opt/gluu/jetty/identity", "identity"),
    ("opt/shibboleth-idp", "shibboleth"),
    ("opt/gluu/node/passport", "passport"),
    ("opt/gluu/jetty/casa", "casa"),
    ("opt/oxd-server", "oxd"),
    ("opt/opendj", "opendj"),
];

const SETUP_MARKERS: &[&str] = &[
    "install/community-edition-setup/setup.properties.last",
    "install/community-edition-setup/setup.properties.last.enc",
];

/// Where a Gluu install keeps Apache's certificate (the cluster's TLS certificate, the
/// one the node answers HTTPS with), as a path on the node.
pub fn httpd_cert(gluu: &GluuInstall) -> std::path::PathBuf {
    Path::new(&gluu.root).join("etc/certs/httpd.crt")
}

/// Looks for a Gluu container under `root/opt` (`gluu-server`, `gluu-server-<ver>`),
/// then for a nochroot install in `root` itself.
pub fn detect_gluu(root: &Path) -> Option<GluuInstall> {
    let mut candidates: Vec<(std::path::PathBuf, String, Option<String>)> = Vec::new();
    if let Ok(entries) = std::fs::read_dir(root.join("opt")) {
        let mut names: Vec<String> = entries
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n == "gluu-server" || n.starts_with("gluu-server-"))
            .collect();
        names.sort();
        for name in names {
            let version = name.strip_prefix("gluu-server-").map(str::to_string);
            candidates.push((
                root.join("opt").join(&name),
                format!("/opt/{name}"),
                version,
            ));
        }
    }
    candidates.push((root.to_path_buf(), "/".to_string(), None));
    for (dir, shown, version) in candidates {
        let components: Vec<String> = MARKERS
            .iter()
            .filter(|(m, _)| dir.join(m).exists())
            .map(|(_, c)| c.to_string())
            .collect();
        let has_setup = SETUP_MARKERS.iter().any(|m| dir.join(m).exists());
        if !components.is_empty() || has_setup {
            return Some(GluuInstall {
                version,
                root: shown,
                components,
            });
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_versioned_container_and_its_components() {
        let root = tempfile::tempdir().unwrap();
        let c = root.path().join("opt/gluu-server-4.2.3");
        std::fs::create_dir_all(c.join("opt/gluu/jetty/oxauth")).unwrap();
        std::fs::create_dir_all(c.join("opt/shibboleth-idp")).unwrap();
        let g = detect_gluu(root.path()).unwrap();
        assert_eq!(g.root, "/opt/gluu-server-4.2.3");
        assert_eq!(g.version.as_deref(), Some("4.2.3"));
        assert_eq!(g.components, vec!["oxauth", "shibboleth"]);
    }

    #[test]
    fn finds_nochroot_installs_and_nothing_on_a_bare_host() {
        let root = tempfile::tempdir().unwrap();
        assert!(detect_gluu(root.path()).is_none());
        std::fs::create_dir_all(root.path().join("opt/gluu/jetty/identity")).unwrap();
        let g = detect_gluu(root.path()).unwrap();
        assert_eq!(g.root, "/");
        assert_eq!(g.components, vec!["identity"]);
    }
}
