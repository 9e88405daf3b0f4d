//! Provisioning on the multi-host harness with the real package manager: hosts whose
//! `/usr` and `/var` are their own, made bare of nginx, csync2, stunnel, Redis and any
//! time service, get them in one `apply` from Debian's packages the controller fetched
//! into its package directory (`apt-get download`); no host reaches a registry. A
//! package directory that lacks a dependency is named per node before anything is
//! installed. And `gluu install` sets up a node from the primary's setup with the
//! stand-in `gluu-server` package of `tests/src/provision.rs`, built by the test and
//! installed for real with dpkg, by hand and as desired state (`gluu-version`).

use std::path::Path;

use clustermgr_tests::provision::{
    ADMIN_PASSWORD, LDAP_PASSWORD, PACKAGES, bare, build_deb, gluu_server_deb, hosts, installed,
    package_dir, primary,
};
use clustermgr_tests::{stderr, stdout, succeeded as ok};

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
    build_deb(
        dir,
        package,
        "9.9",
        &[],
        "#!/bin/sh\necho \"postinst says no\" >&2\nexit 1\n",
    );
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
async fn bare_hosts_of_every_role_are_healthy_after_one_apply() {
    // The Gluu-like harness with a load balancer and a cache host (three Gluu hosts with
    // real slapd replicating, csync2 as apply configures it, lb1's real nginx in front
    // of the oxAuth stand-ins, Redis behind stunnel on cache1, serve checking every
    // 2 s), every host made bare of what apply installs and of any time service before
    // the one apply, with the package directory set.
    let parent = tempfile::tempdir().unwrap();
    let dir = package_dir(parent.path(), PACKAGES);
    let c = clustermgr_tests::gluu::GluuCluster::start_whole(2, |net, ctl| {
        for h in net.hosts() {
            bare(h);
        }
        ok(
            ctl.run(&["cluster", "set", "package-dir", &dir.display().to_string()]),
            "cluster set package-dir",
        );
    })
    .await;
    let want: &[(&str, &[&str])] = &[
        ("gluu1", &["csync2", "chrony", "stunnel4"]),
        ("gluu2", &["csync2", "chrony", "stunnel4"]),
        ("gluu3", &["csync2", "chrony", "stunnel4"]),
        ("lb1", &["nginx"]),
        ("cache1", &["redis-server", "stunnel4"]),
    ];
    for (node, packages) in want {
        for p in *packages {
            assert!(installed(c.host(node), p).is_some(), "{p} on {node}");
        }
    }
    c.settled(std::time::Duration::from_secs(90)).await;
    // Every check of every node, the load balancer's oxAuth and oxTrust through nginx
    // and the cache through each Gluu node's tunnel among them.
    let (_, rows) = c.health();
    for (node, check) in [
        ("lb1", "services"),
        ("cache1", "services"),
        ("gluu2", "services"),
    ] {
        assert!(
            rows.iter()
                .any(|r| r.node == node && r.check == check && r.level == "ok"),
            "{node} {check}: {rows:#?}"
        );
    }
}

#[test]
fn gluu_install_sets_up_a_node_from_the_primarys_setup() {
    let (net, ctl) = hosts(&["gluu1", "gluu2", "gluu3"]);
    let parent = tempfile::tempdir().unwrap();
    gluu_server_deb(parent.path());
    let dir = parent.path().join("packages");
    ok(
        ctl.run(&["cluster", "set", "hostname", "idp.example.org"]),
        "cluster set hostname",
    );
    // Refused before anything is done: packages are off.
    let o = ctl.run(&["gluu", "install", "gluu2"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("cluster set packages"),
        "{}",
        stderr(&o)
    );
    ok(
        ctl.run(&["cluster", "set", "package-dir", &dir.display().to_string()]),
        "cluster set package-dir",
    );
    primary(net.host("gluu1"), parent.path());
    // Java for the cacerts imports; the container is not set up yet (no /etc/gluu).
    for n in ["gluu2", "gluu3"] {
        clustermgr_tests::container::java(net.host(n));
        net.host(n).sh("rm -rf /opt/gluu-server/etc/gluu");
    }
    let pw = parent.path().join("admin-password");
    std::fs::write(&pw, format!("{ADMIN_PASSWORD}\n")).unwrap();
    std::fs::set_permissions(&pw, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let pw = pw.display().to_string();

    // Without the setup's password: the primary's LDAP password is not it, and it says
    // what to give.
    let o = ctl.run(&["gluu", "install", "gluu2"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("--setup-password-file"),
        "{}",
        stderr(&o)
    );
    assert!(
        !net.host("gluu2")
            .sh("dpkg -s gluu-server 2>&1 || true")
            .contains("Status: install ok")
    );

    let o = ctl.run(&["gluu", "install", "gluu2", "--setup-password-file", &pw]);
    let said = ok(o.clone(), "gluu install gluu2");
    assert!(
        said.contains("Gluu is installed on gluu2 from gluu1's setup"),
        "{said}"
    );
    let h2 = net.host("gluu2");
    let c2 = h2.path("/opt/gluu-server");
    let log =
        std::fs::read_to_string(c2.join("install/community-edition-setup/stand-in-setup.log"))
            .unwrap();
    let ip2 = h2.ip.to_string();
    assert!(log.contains("-c -n -f /install/community-edition-setup/setup.properties --listen_all_interfaces --no-data"), "{log}");
    assert!(
        log.contains("mode: 600")
            && log.contains(&format!("ip={ip2}"))
            && log.contains("hostname=idp.example.org")
            && log.contains("setup done"),
        "{log}"
    );
    assert!(
        !c2.join("install/community-edition-setup/setup.properties")
            .exists(),
        "the properties are removed after setup"
    );
    assert_eq!(
        std::fs::read(c2.join("etc/certs/httpd.crt")).unwrap(),
        std::fs::read(
            net.host("gluu1")
                .path("/opt/gluu-server/etc/certs/httpd.crt")
        )
        .unwrap(),
        "the primary's certificate replaced the node's own"
    );
    assert!(
        !c2.join("etc/certs/shadow.crt").exists(),
        "a link among the primary's certificates is not followed"
    );
    assert!(
        c2.join("opt/gluu/schema/opendj/77-customAttributes.ldif")
            .exists()
    );
    let serverd = std::fs::read_to_string(h2.path("/var/lib/gluu-stand-in.log")).unwrap();
    assert_eq!(
        serverd.lines().collect::<Vec<_>>(),
        ["enable", "start", "restart"]
    );
    // Trusted in Java's cacerts by the real keytool, as Gluu's setup names them.
    let listed = h2.sh("printf 'changeit\\n' | chroot /opt/gluu-server /opt/jre/bin/keytool -list -keystore /opt/jre/lib/security/cacerts 2>&1 || true");
    assert!(
        listed.contains("idp.example.org_httpd") && listed.contains("idp.example.org_opendj"),
        "{listed}"
    );
    // No password anywhere it could be read.
    let audit = ok(ctl.run(&["audit"]), "audit");
    for text in [&said, &stderr(&o), &audit] {
        assert!(
            !text.contains(LDAP_PASSWORD) && !text.contains(ADMIN_PASSWORD),
            "{text}"
        );
    }

    // A node that runs Gluu is not reinstalled without --force, which says what it does.
    let o = ctl.run(&["gluu", "install", "gluu2", "--setup-password-file", &pw]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("already runs Gluu") && stderr(&o).contains("--force"),
        "{}",
        stderr(&o)
    );
    let o = ctl.run(&[
        "gluu",
        "install",
        "gluu2",
        "--setup-password-file",
        &pw,
        "--force",
        "--json",
    ]);
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).expect("--json");
    assert_eq!(o.status.code(), Some(0), "{doc}");
    clustermgr_tests::schema::assert_valid("gluu-install", &doc);
    let moved = doc["moved_aside"].as_str().expect("moved aside");
    assert!(
        h2.path(moved)
            .join("install/community-edition-setup/stand-in-setup.log")
            .exists(),
        "{doc}"
    );

    // A setup that fails says where it stopped, with setup's own words; the
    // properties are gone all the same.
    net.host("gluu3").sh("touch /opt/gluu-server/fail-setup");
    let o = ctl.run(&["gluu", "install", "gluu3", "--setup-password-file", &pw]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    let said = stdout(&o);
    assert!(
        said.contains("stopped at")
            && said.contains("the stand-in setup fails, as the test asked")
            && said.contains("--force"),
        "{said}"
    );
    assert!(
        said.contains("ldapPass=(redacted)") && !said.contains(LDAP_PASSWORD),
        "what setup printed is shown without the passwords: {said}"
    );
    assert!(
        !net.host("gluu3")
            .path("/opt/gluu-server/install/community-edition-setup/setup.properties")
            .exists()
    );
}

/// The nodes' Gluu of `--json`'s plan: per node, the gluu-server entry's words if the
/// plan installs it, and what the node waits for.
fn gluu_in_plan(doc: &serde_json::Value) -> Vec<(String, Option<String>, Vec<String>)> {
    doc["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .map(|n| {
            let install = n["entries"]
                .as_array()
                .unwrap()
                .iter()
                .find(|e| e["path"] == "package:gluu-server")
                .map(|e| {
                    assert_eq!(e["change"], "install", "{e}");
                    e["at_apply"].as_str().unwrap().to_string()
                });
            let waiting = n["waiting"]
                .as_array()
                .unwrap()
                .iter()
                .map(|w| w.as_str().unwrap().to_string())
                .filter(|w| w.starts_with("Gluu:"))
                .collect();
            (n["node"].as_str().unwrap().to_string(), install, waiting)
        })
        .collect()
}

#[test]
fn desired_state_gives_gluu_of_the_clusters_version_to_the_nodes_without_it() {
    let (net, ctl) = hosts(&["gluu1", "gluu2", "gluu3"]);
    let parent = tempfile::tempdir().unwrap();
    // What a Gluu node's role needs beside Gluu (csync2, a time service) too.
    let dir = package_dir(parent.path(), PACKAGES);
    gluu_server_deb(parent.path());
    for (key, value) in [
        ("hostname", "idp.example.org"),
        ("package-dir", &dir.display().to_string()),
    ] {
        ok(ctl.run(&["cluster", "set", key, value]), "cluster set");
    }
    primary(net.host("gluu1"), parent.path());
    for n in ["gluu2", "gluu3"] {
        clustermgr_tests::container::java(net.host(n));
        net.host(n).sh("rm -rf /opt/gluu-server/etc/gluu");
    }
    let plan = || {
        let o = ctl.run(&["plan", "--json"]);
        let doc: serde_json::Value = serde_json::from_slice(&o.stdout).expect("plan --json");
        clustermgr_tests::schema::assert_valid("plan", &doc);
        gluu_in_plan(&doc)
    };
    // Without gluu-version, Gluu is no desired state: nothing about it in the plan.
    assert!(
        plan().iter().all(|(_, i, w)| i.is_none() && w.is_empty()),
        "{:?}",
        plan()
    );

    // A package of another release is named, and nothing is installed.
    ok(
        ctl.run(&["cluster", "set", "gluu-version", "4.2.2"]),
        "gluu-version",
    );
    for (node, install, waiting) in plan() {
        assert!(install.is_none(), "{node}: {install:?}");
        if node == "gluu1" {
            assert!(waiting.is_empty(), "the primary runs Gluu: {waiting:?}");
        } else {
            assert!(
                waiting.len() == 1
                    && waiting[0].contains("4.2.3~stand-in, not the cluster's gluu-version 4.2.2"),
                "{node}: {waiting:?}"
            );
        }
    }
    let o = ctl.run(&["apply", "--yes"]);
    assert!(
        !stdout(&o).contains("Gluu's setup"),
        "{}{}",
        stdout(&o),
        stderr(&o)
    );
    assert_eq!(installed(net.host("gluu2"), "gluu-server"), None);

    // The cluster's release: the plan says what each node without Gluu gets.
    ok(
        ctl.run(&["cluster", "set", "gluu-version", "4.2.3"]),
        "gluu-version",
    );
    let planned = plan();
    for (node, install, waiting) in &planned {
        assert!(waiting.is_empty(), "{node}: {waiting:?}");
        if node == "gluu1" {
            assert!(install.is_none());
        } else {
            let what = install.as_deref().unwrap_or_default();
            assert!(
                what.contains("gluu-server 4.2.3~stand-in from the package directory")
                    && what.contains("gluu1's properties, without data"),
                "{node}: {what}"
            );
        }
    }

    // The primary left only the encrypted setup, and its agent's LDAP password does not
    // open it: the apply says how to give it, installs nothing there, and goes on
    // elsewhere.
    let o = ctl.run(&["apply", "--yes"]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(
        stdout(&o).contains("clustermgr gluu install gluu2 --setup-password-file FILE"),
        "{}",
        stdout(&o)
    );
    assert_eq!(installed(net.host("gluu2"), "gluu-server"), None);

    // With the plain properties (as Gluu before 4.2.3 leaves them) one apply installs
    // Gluu on both, one at a time, each with its own address.
    let ces = net
        .host("gluu1")
        .path("/opt/gluu-server/install/community-edition-setup");
    std::fs::copy(
        parent.path().join("setup.properties.last"),
        ces.join("setup.properties.last"),
    )
    .unwrap();
    std::fs::set_permissions(
        ces.join("setup.properties.last"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let o = ctl.run(&["apply", "--yes"]);
    let said = stdout(&o);
    for n in ["gluu2", "gluu3"] {
        let h = net.host(n);
        let log = std::fs::read_to_string(
            h.path("/opt/gluu-server/install/community-edition-setup/stand-in-setup.log"),
        )
        .unwrap_or_else(|e| panic!("{n} ran no setup ({e}): {said}{}", stderr(&o)));
        assert!(
            log.contains("--no-data")
                && log.contains(&format!("ip={}", h.ip))
                && log.contains("setup done"),
            "{n}: {log}"
        );
        assert_eq!(
            installed(h, "gluu-server").as_deref(),
            Some("4.2.3~stand-in")
        );
    }
    assert!(
        said.contains("gluu2: applied") && said.contains("ok: Gluu's setup"),
        "{said}"
    );
    assert!(!said.contains(LDAP_PASSWORD), "{said}");
    let audit = ok(ctl.run(&["audit"]), "audit");
    assert!(
        audit.matches("gluu install").count() >= 2,
        "each install is audited: {audit}"
    );
    // Installed: the next plan has nothing of Gluu left to do.
    assert!(
        plan().iter().all(|(_, i, w)| i.is_none() && w.is_empty()),
        "{:?}",
        plan()
    );
}
