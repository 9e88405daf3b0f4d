//! Provisioning on the multi-host harness with the real package manager: hosts whose
//! `/usr` and `/var` are their own, made bare of nginx, csync2, stunnel, Redis and any
//! time service, get them in one `apply` from Debian's packages the controller fetched
//! into its package directory (`apt-get download`); no host reaches a registry. A
//! package directory that lacks a dependency is named per node before anything is
//! installed.

use std::path::{Path, PathBuf};

use clustermgr_tests::netns::{Host, Net};
use clustermgr_tests::{Controller, stderr, stdout, succeeded as ok};

/// What the harness hosts are made bare of (the machine has them: `tests/run`
/// installs them), and chrony, which the machine lacks.
const PACKAGES: &[&str] = &[
    "nginx",
    "nginx-common",
    "csync2",
    "stunnel4",
    "redis-server",
    "redis-tools",
    "chrony",
];

/// Debian's package files of [`PACKAGES`], downloaded once into the target directory
/// by `apt-get download` on the controller (the machine).
fn downloaded() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("debs");
    std::fs::create_dir_all(&dir).unwrap();
    let have = |name: &str| {
        std::fs::read_dir(&dir).unwrap().any(|e| {
            e.unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with(&format!("{name}_"))
        })
    };
    let missing: Vec<&str> = PACKAGES.iter().copied().filter(|p| !have(p)).collect();
    if !missing.is_empty() {
        let o = std::process::Command::new("apt-get")
            .arg("download")
            .args(&missing)
            .current_dir(&dir)
            .output()
            .expect("apt-get");
        assert!(o.status.success(), "apt-get download: {}", stderr(&o));
    }
    dir
}

/// A package directory holding the downloaded files whose package is in `names`.
fn package_dir(parent: &Path, names: &[&str]) -> PathBuf {
    let dir = parent.join("packages");
    std::fs::create_dir_all(&dir).unwrap();
    for e in std::fs::read_dir(downloaded()).unwrap() {
        let e = e.unwrap();
        let file = e.file_name().to_string_lossy().into_owned();
        let package = file.split('_').next().unwrap_or_default().to_string();
        if file.ends_with(".deb") && names.contains(&package.as_str()) {
            std::fs::copy(e.path(), dir.join(&file)).unwrap();
        }
    }
    dir
}

/// Makes `h` bare of [`PACKAGES`] (chrony too, should the machine have it) and of the
/// time service the machine has, in the
/// host's own `/usr`, `/etc` and `/var`; chrony, once installed, is told not to touch
/// the clock (the hosts share the machine's).
fn bare(h: &Host) {
    h.sh(
        "dpkg --purge --force-depends nginx nginx-common csync2 stunnel4 redis-server redis-tools chrony systemd-timesyncd >/dev/null 2>&1; \
         mkdir -p /etc/default && echo 'DAEMON_OPTS=\"-F 1 -x\"' > /etc/default/chrony",
    );
    for p in PACKAGES {
        assert_eq!(installed(h, p), None, "{p} still on {}", h.name);
    }
}

/// The version of `package` installed on `h`.
fn installed(h: &Host, package: &str) -> Option<String> {
    let o = h.run(&[
        "dpkg-query",
        "-W",
        "-f=${db:Status-Status} ${Version}",
        package,
    ]);
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    text.strip_prefix("installed ").map(str::to_string)
}

/// Hosts bootstrapped into a new controller home, each made bare.
fn hosts(names: &[&str]) -> (Net, Controller) {
    let mut net = Net::new();
    for n in names {
        net.add_host(n);
    }
    for h in net.hosts() {
        bare(h);
    }
    let ctl = Controller::new();
    let inventory = ctl.inventory(&net, "gluu1").display().to_string();
    ok(
        ctl.run(&["node", "add", "--from", &inventory]),
        "node add --from",
    );
    (net, ctl)
}

#[test]
fn a_missing_dependency_is_named_per_node_before_anything_is_installed() {
    let (net, ctl) = hosts(&["lb1", "gluu1"]);
    // nginx without nginx-common, which it depends on at its exact version.
    let parent = tempfile::tempdir().unwrap();
    let dir = package_dir(parent.path(), &["nginx", "csync2", "chrony"]);
    ok(
        ctl.run(&["cluster", "set", "package-dir", &dir.display().to_string()]),
        "cluster set package-dir",
    );
    let o = ctl.run(&["plan"]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    let said = format!("{}{}", stdout(&o), stderr(&o));
    assert!(
        said.contains("lb1")
            && said.contains("lacks nginx-common (")
            && said.contains("nginx-common (>= 1.22")
            && said.contains("needed by nginx"),
        "{said}"
    );
    // gluu1 needs nothing the directory lacks: its plan shows the installs.
    assert!(said.contains("package:csync2"), "{said}");
    let o = ctl.run(&["apply", "--yes"]);
    assert!(!o.status.success());
    assert!(
        format!("{}{}", stdout(&o), stderr(&o)).contains("nginx-common"),
        "{}",
        stdout(&o)
    );
    assert_eq!(
        installed(net.host("lb1"), "nginx"),
        None,
        "nothing installed on lb1"
    );
}

#[test]
fn one_apply_installs_what_each_role_needs_from_the_package_directory() {
    let (net, ctl) = hosts(&["lb1", "gluu1", "gluu2", "cache1"]);
    let parent = tempfile::tempdir().unwrap();
    let dir = package_dir(parent.path(), PACKAGES);
    for (k, v) in [
        ("hostname", "idp.example.org"),
        ("cache", "redis"),
        ("ntp-servers", "127.0.0.1"),
        ("package-dir", &dir.display().to_string()),
    ] {
        ok(ctl.run(&["cluster", "set", k, v]), "cluster set");
    }
    // The plan names each install with its version, and installs nothing.
    let plan = ok(ctl.run(&["plan"]), "plan");
    assert!(plan.contains("install package:nginx"), "{plan}");
    assert!(plan.contains("nginx 1.22"), "{plan}");
    assert_eq!(installed(net.host("lb1"), "nginx"), None);
    let o = ctl.run(&["apply", "--yes"]);
    ok(o, "apply");
    let want: &[(&str, &[&str])] = &[
        ("lb1", &["nginx", "nginx-common"]),
        ("gluu1", &["csync2", "chrony", "stunnel4"]),
        ("gluu2", &["csync2", "chrony", "stunnel4"]),
        ("cache1", &["redis-server", "redis-tools", "stunnel4"]),
    ];
    for (node, packages) in want {
        let h = net.host(node);
        for p in *packages {
            assert!(installed(h, p).is_some(), "{p} on {node}");
        }
    }
    // Only what each role needs.
    assert_eq!(installed(net.host("lb1"), "redis-server"), None);
    assert_eq!(installed(net.host("cache1"), "nginx"), None);
    // The configuration that needed them went in after them.
    let conf = std::fs::read_to_string(net.host("gluu1").path("/etc/chrony/chrony.conf")).unwrap();
    assert!(conf.contains("server 127.0.0.1 iburst"), "{conf}");
    assert!(net.host("gluu1").path("/etc/csync2.cfg").exists());
    // A second plan installs nothing and changes nothing: what it lists is only what
    // waits for Gluu (the container's files), the packages are among the unchanged.
    let again = ok(ctl.run(&["--json", "plan"]), "plan");
    let v: serde_json::Value = serde_json::from_str(&again).unwrap();
    let nodes = v["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 4, "{again}");
    for n in nodes {
        let listed = n["entries"].as_array().unwrap();
        assert!(listed.iter().all(|e| e["change"] == "waiting"), "{again}");
        assert!(n["unchanged"].as_u64().unwrap_or(0) >= 2, "{again}");
    }
}

/// A package built by the test whose installation fails (its `postinst` exits 1),
/// standing in for a package of that name.
fn failing_deb(dir: &Path, package: &str) {
    let root = dir.join(format!("{package}-build"));
    let debian = root.join("DEBIAN");
    std::fs::create_dir_all(&debian).unwrap();
    std::fs::write(
        debian.join("control"),
        format!(
            "Package: {package}\nVersion: 9.9\nArchitecture: all\nMaintainer: clustermgr tests <tests@example.org>\nDescription: a package whose installation fails\n"
        ),
    )
    .unwrap();
    let postinst = debian.join("postinst");
    std::fs::write(
        &postinst,
        "#!/bin/sh\necho \"postinst says no\" >&2\nexit 1\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&postinst, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = dir.join("packages").join(format!("{package}_9.9_all.deb"));
    let o = std::process::Command::new("dpkg-deb")
        .args(["--build", "--root-owner-group"])
        .arg(&root)
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "dpkg-deb --build: {}", stderr(&o));
}

#[test]
fn a_failed_install_writes_no_file_and_says_what_the_package_manager_said() {
    let (net, ctl) = hosts(&["gluu1"]);
    let parent = tempfile::tempdir().unwrap();
    let dir = package_dir(parent.path(), &["chrony"]);
    failing_deb(parent.path(), "csync2");
    ok(
        ctl.run(&["cluster", "set", "package-dir", &dir.display().to_string()]),
        "cluster set package-dir",
    );
    let plan = ok(ctl.run(&["plan"]), "plan");
    assert!(
        plan.contains("csync2 9.9 from the package directory"),
        "{plan}"
    );
    assert!(plan.contains("/etc/hosts"), "{plan}");
    let o = ctl.run(&["apply", "--yes"]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    let said = stdout(&o);
    assert!(
        said.contains("not installed") && said.contains("postinst says no"),
        "{said}"
    );
    // No file of the set: the /etc/hosts block the plan showed is not there.
    let hosts = std::fs::read_to_string(net.host("gluu1").path("/etc/hosts")).unwrap();
    assert!(!hosts.contains("clustermgr"), "{hosts}");
    // The history has no line for it: nothing was written.
    let history = ok(ctl.run(&["history"]), "history");
    assert!(!history.contains("/etc/hosts"), "{history}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bare_gluu_hosts_are_healthy_after_one_apply() {
    // The Gluu-like harness (three hosts, real slapd replicating, csync2 as apply
    // configures it, serve checking every 2 s), its hosts made bare of csync2 and any
    // time service before its one apply, with the package directory set.
    let parent = tempfile::tempdir().unwrap();
    let dir = package_dir(parent.path(), &["csync2", "chrony"]);
    let c = clustermgr_tests::gluu::GluuCluster::start_with(2, |net, ctl| {
        for h in net.hosts() {
            bare(h);
        }
        ok(
            ctl.run(&["cluster", "set", "package-dir", &dir.display().to_string()]),
            "cluster set package-dir",
        );
    })
    .await;
    for h in c.net.hosts() {
        for p in ["csync2", "chrony"] {
            assert!(installed(h, p).is_some(), "{p} on {}", h.name);
        }
    }
    c.settled(std::time::Duration::from_secs(90)).await;
}
