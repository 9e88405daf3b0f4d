//! The packaging files generated from the workspace: the .deb control files (version,
//! licence and homepage from Cargo.toml) and the packaged agent unit (the bootstrap
//! unit with the package's binary path). They are committed so a release can be built
//! from the tree alone; `cargo run -p clustermgr-tests --bin packaging-gen` rewrites
//! them, and `tests/tests/packaging.rs` fails when they drift.

use std::path::{Path, PathBuf};

/// The packages' architecture: `packaging/build` makes x86_64 binaries only.
pub const DEB_ARCH: &str = "amd64";

/// The glibc the shipped binaries are built against: the oldest a Gluu host has
/// (CentOS 7).
pub const GLIBC_BASELINE: (u32, u32) = (2, 17);

/// Where bootstrap installs the agent, and where the .deb does.
const BOOTSTRAP_AGENT: &str = "/usr/local/bin/clustermgr-agent";
const DEB_AGENT: &str = "/usr/bin/clustermgr-agent";

const MAINTAINER: &str = "clustermgr maintainers <clustermgr@example.invalid>";

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The Debian version of a Cargo version, revision 1: a pre-release sorts before its
/// release (`0.2.0-rc.1` → `0.2.0~rc.1-1`), and build metadata is dropped.
pub fn deb_version(cargo: &str) -> String {
    let cargo = cargo.split('+').next().unwrap_or(cargo);
    match cargo.split_once('-') {
        Some((release, pre)) => format!("{release}~{pre}-1"),
        None => format!("{cargo}-1"),
    }
}

/// Every generated file: its path from the workspace root, and what it must hold.
/// `root` is read for the files the generated ones derive from.
pub fn generated(root: &Path) -> Vec<(PathBuf, String)> {
    let version = deb_version(env!("CARGO_PKG_VERSION"));
    let homepage = env!("CARGO_PKG_REPOSITORY");
    let (major, minor) = GLIBC_BASELINE;
    let libc = format!("libc6 (>= {major}.{minor})");
    let fields = |package: &str, depends: &str, extra: &str, description: &str| {
        format!(
            "Package: {package}\nVersion: {version}\nArchitecture: {DEB_ARCH}\n\
             Maintainer: {MAINTAINER}\nDepends: {depends}\n{extra}Section: admin\n\
             Priority: optional\nHomepage: {homepage}\nDescription: {description}"
        )
    };
    let agent_control = fields(
        "clustermgr-agent",
        &libc,
        "",
        "node agent of clustermgr, the Gluu Server cluster manager
 clustermgr-agent runs on every Gluu, load-balancer and cache host of a
 cluster that clustermgr manages. It answers the controller over mutual-TLS
 QUIC on UDP 7443: host facts, commands, certificate renewal.
 .
 The service is not started on install: enroll the host first (see
 /usr/share/doc/clustermgr-agent/README.md), then run
 `systemctl enable --now clustermgr-agent`.
",
    );
    let controller_control = fields(
        "clustermgr",
        &format!("{libc}, adduser"),
        "Recommends: openssh-client\n",
        &format!(
            "controller and CLI of clustermgr, the Gluu Server cluster manager
 clustermgr runs a cluster of Gluu Server nodes behind an nginx load
 balancer: it enrolls each host's agent over one SSH session, then talks to
 the agents over mutual-TLS QUIC only.
 .
 This package also holds the agent binary built for old hosts (glibc
 {major}.{minor}, kernel 3.10), in /usr/lib/clustermgr, which bootstrap uploads to
 the nodes. `clustermgr serve` runs as the system user clustermgr
 (clustermgr-serve.service).
"
        ),
    );
    let copyright = format!(
        "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\
         Upstream-Name: clustermgr\nSource: {homepage}\n\n\
         Files: *\nCopyright: clustermgr authors\nLicense: {}\n \
         On Debian systems the full text of the Apache License 2.0 is in\n \
         /usr/share/common-licenses/Apache-2.0.\n",
        env!("CARGO_PKG_LICENSE")
    );
    let unit = root.join("packaging/systemd/clustermgr-agent.service");
    let unit = std::fs::read_to_string(&unit).unwrap_or_else(|e| panic!("{}: {e}", unit.display()));
    let mut files = vec![
        (
            "packaging/deb/clustermgr-agent/control".into(),
            agent_control,
        ),
        (
            "packaging/deb/clustermgr-agent/conffiles".into(),
            "/etc/clustermgr/agent.toml\n".into(),
        ),
        (
            "packaging/deb/clustermgr-agent/clustermgr-agent.service".into(),
            deb_agent_unit(&unit),
        ),
        (
            "packaging/deb/clustermgr/control".into(),
            controller_control,
        ),
        ("packaging/deb/copyright".into(), copyright),
        // The README's exit-code table, from the codes' one definition.
        (
            "README.md".into(),
            clustermgr::exit::readme_with_table(
                &std::fs::read_to_string(root.join("README.md")).expect("README.md"),
            ),
        ),
    ];
    // The JSON contract's schemas and their index, from the view types.
    files.extend(clustermgr::contract::checked_in());
    files
}

/// The bootstrap unit with the package's binary path, and a header that says where it
/// comes from in place of the bootstrap unit's own.
fn deb_agent_unit(bootstrap: &str) -> String {
    let body = bootstrap.trim_start_matches(|c| c != '[');
    assert_eq!(
        body.matches(BOOTSTRAP_AGENT).count(),
        1,
        "the bootstrap unit names {BOOTSTRAP_AGENT} once, in ExecStart"
    );
    format!(
        "# clustermgr-agent.service as the clustermgr-agent .deb installs it (in\n\
         # /lib/systemd/system). Generated from packaging/systemd/clustermgr-agent.service\n\
         # by `cargo run -p clustermgr-tests --bin packaging-gen`: edit that one.\n{}",
        body.replace(BOOTSTRAP_AGENT, DEB_AGENT)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cargo_versions_become_debian_versions_that_sort_the_same() {
        assert_eq!(deb_version("0.1.0"), "0.1.0-1");
        assert_eq!(deb_version("0.2.0-rc.1"), "0.2.0~rc.1-1");
        assert_eq!(deb_version("1.0.0+build.5"), "1.0.0-1");
    }

    #[test]
    fn the_packaged_unit_differs_from_the_bootstrap_one_only_in_the_path() {
        let unit = "# bootstrap\n[Service]\nExecStart=/usr/local/bin/clustermgr-agent run\n";
        let deb = deb_agent_unit(unit);
        assert!(deb.ends_with("[Service]\nExecStart=/usr/bin/clustermgr-agent run\n"));
        assert!(!deb.contains("# bootstrap"));
    }
}
