//! Snapshot tests of the generators: fixed inputs, the whole output as readable text,
//! compared with a committed file (`UPDATE_SNAPSHOTS=1` rewrites them). Plus the
//! properties a snapshot cannot show: determinism, order, secrets.

use std::path::Path;

use clustermgr_protocol::changeset::{Content, Scope};
use clustermgr_protocol::identity::sha256_hex;

use super::*;
use crate::model::{Cache, ClusterModel};
use crate::store::{NodeRecord, Role};

fn node(name: &str, ip: &str, role: Role) -> NodeRecord {
    let mut n = NodeRecord::for_tests(name, &format!("{ip}:7443"), &[role]);
    n.primary = name == "gluu1";
    n
}

fn nodes() -> Vec<NodeRecord> {
    vec![
        node("lb1", "10.0.0.10", Role::Lb),
        node("gluu1", "10.0.0.11", Role::Gluu),
        node("gluu2", "10.0.0.12", Role::Gluu),
        node("gluu3", "10.0.0.13", Role::Gluu),
        node("cache1", "10.0.0.14", Role::Cache),
    ]
}

/// Certificates made once with openssl (fixed, so the snapshots are stable).
const SELF_SIGNED: &str = include_str!("testdata/self-signed.pem");
const LEAF: &str = include_str!("testdata/leaf.pem");
const ROOT: &str = include_str!("testdata/root.pem");

const KEY_PEM: &str =
    "-----BEGIN PRIVATE KEY-----\nSECRETSECRETSECRET\n-----END PRIVATE KEY-----\n";
const REDIS_PASSWORD: &str = "redispasswordredispasswordredispassword0";
const CSYNC2_KEY: &[u8] = b"csync2keycsync2keycsync2keycsync2keycsync2keycsync2keycsync2key00";

fn secrets() -> Secrets {
    Secrets {
        csync2_key: Some(CSYNC2_KEY.to_vec()),
        tls: Some((SELF_SIGNED.into(), KEY_PEM.into())),
        redis_password: Some(REDIS_PASSWORD.into()),
    }
}

fn tunnel(names: &[&str]) -> TunnelMaterial {
    let cert = |n: &str| format!("-----BEGIN CERTIFICATE-----\n{n}\n-----END CERTIFICATE-----\n");
    TunnelMaterial {
        ca_pem: cert("TUNNEL-CA"),
        crl_pem: "-----BEGIN X509 CRL-----\nCRL\n-----END X509 CRL-----\n".into(),
        certs: names.iter().map(|n| (n.to_string(), cert(n))).collect(),
        csync2_certs: names
            .iter()
            .map(|n| (n.to_string(), cert(&format!("csync2 {n}"))))
            .collect(),
    }
}

fn model() -> ClusterModel {
    let mut m = ClusterModel::default();
    m.set("hostname", "idp.example.org").unwrap();
    m.set("gluu-version", "4.2.3").unwrap();
    m.cache = Cache::Redis;
    m
}

/// Every node's config as text; secrets only as their hash.
fn dump(out: &BTreeMap<String, NodeConfig>) -> String {
    let mut s = String::new();
    for (node, cfg) in out {
        s.push_str(&format!("=== {node}\n"));
        for w in &cfg.waiting {
            s.push_str(&format!("waiting: {w}\n"));
        }
        for e in &cfg.entries {
            let scope = match &e.scope {
                Scope::Host => "host".to_string(),
                Scope::Container { root } => format!("container {root}"),
            };
            s.push_str(&format!(
                "--- {} ({scope}) validate={:?} on_change={:?}\n",
                e.path, e.validate, e.on_change
            ));
            match &e.content {
                Content::OpenDj(o) => s.push_str(&format!(
                    "opendj host={} peers={:?} base_dns={:?} join={} <secret admin password>\n",
                    o.host, o.peers, o.base_dns, o.join
                )),
                Content::Ldap(a) => {
                    s.push_str(&format!(
                        "ldap {:?} {:?} create={:?} redact={:?} bump={:?} join={} encrypt={}\n",
                        a.object,
                        a.attribute,
                        a.create,
                        a.redact,
                        a.bump_revision,
                        a.join,
                        a.encrypt
                    ));
                    let shown = match &a.value {
                        clustermgr_protocol::changeset::LdapValue::JsonField { pointer, json } => {
                            format!("json {pointer} = {json}\n")
                        }
                        v => format!("{v:?}\n"),
                    };
                    if e.secret {
                        s.push_str(&format!(
                            "<secret sha256 {}>\n",
                            sha256_hex(shown.as_bytes())
                        ));
                    } else {
                        s.push_str(&shown);
                    }
                }
                Content::File {
                    bytes, mode, owner, ..
                } => {
                    s.push_str(&format!("file {mode:04o} {owner:?}\n"));
                    if e.secret {
                        s.push_str(&format!("<secret sha256 {}>\n", sha256_hex(bytes)));
                    } else {
                        s.push_str(&String::from_utf8_lossy(bytes));
                    }
                }
                Content::Property { key, value } => {
                    s.push_str(&format!("property {key} = {value}\n"))
                }
                Content::Block { name, body } if e.secret => s.push_str(&format!(
                    "block {name}\n<secret sha256 {}>\n",
                    sha256_hex(body.as_bytes())
                )),
                Content::Block { name, body } => s.push_str(&format!("block {name}\n{body}")),
                Content::Package(p) => s.push_str(&format!(
                    "package {} deb {:?} rpm {:?}\n",
                    p.name, p.deb, p.rpm
                )),
            }
        }
    }
    s
}

fn snapshot(name: &str, text: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src/generate/snapshots")
        .join(format!("{name}.txt"));
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, text).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|_| {
        panic!(
            "no snapshot {}: run with UPDATE_SNAPSHOTS=1 and review it",
            path.display()
        )
    });
    if want != text {
        let diff = similar::TextDiff::from_lines(want.as_str(), text)
            .unified_diff()
            .header("snapshot", "now")
            .to_string();
        panic!("{name} differs from its snapshot (UPDATE_SNAPSHOTS=1 to accept):\n{diff}");
    }
}

fn render_with(
    m: &ClusterModel,
    n: &[NodeRecord],
    s: &Secrets,
    t: &TunnelMaterial,
) -> BTreeMap<String, NodeConfig> {
    render(&Inputs {
        build: &Default::default(),
        model: m,
        nodes: n,
        secrets: s,
        tunnel: t,
    })
    .expect("the model renders")
}

#[test]
fn a_full_cluster_matches_its_snapshot() {
    let t = tunnel(&["gluu1", "gluu2", "gluu3", "cache1"]);
    let out = render_with(&model(), &nodes(), &secrets(), &t);
    let text = dump(&out);
    snapshot("full", &text);
    assert!(!text.contains("SECRETSECRET"));
    assert!(!text.contains(std::str::from_utf8(CSYNC2_KEY).unwrap()));
}

#[test]
fn a_stored_replicated_path_that_lands_on_a_reserved_one_inside_the_gluu_root_is_refused() {
    // Stored before `cluster set` judged the two together: /cron.d inside /etc.
    let mut m = model();
    m.gluu_root = "/etc".into();
    m.replicated_paths = vec!["/opt/gluu/python/libs".into(), "/cron.d".into()];
    let t = tunnel(&["gluu1", "gluu2", "gluu3", "cache1"]);
    let err = render(&Inputs {
        build: &Default::default(),
        model: &m,
        nodes: &nodes(),
        secrets: &secrets(),
        tunnel: &t,
    })
    .expect_err("refused")
    .to_string();
    for part in [
        "\"/cron.d\"",
        "/etc/cron.d",
        "gluu-root /etc",
        "cluster set replicated-paths",
    ] {
        assert!(err.contains(part), "{part:?} not in {err}");
    }
    // With one Gluu node there is no csync2, so nothing to refuse.
    let one: Vec<NodeRecord> = nodes()
        .into_iter()
        .filter(|n| n.name != "gluu2" && n.name != "gluu3")
        .collect();
    render_with(&m, &one, &secrets(), &t);
}

#[test]
fn a_new_cluster_waits_and_says_for_what() {
    let m = ClusterModel::default();
    let out = render_with(
        &m,
        &nodes(),
        &Secrets::default(),
        &TunnelMaterial::default(),
    );
    snapshot("waiting", &dump(&out));
    let lb = &out["lb1"];
    assert!(
        lb.waiting
            .iter()
            .any(|w| w.contains("cluster set hostname")),
        "{lb:?}"
    );
    assert!(lb.entries.iter().all(|e| !e.path.starts_with("/etc/nginx")));
}

#[test]
fn output_is_deterministic_and_independent_of_node_order() {
    let t = tunnel(&["gluu1", "gluu2", "gluu3", "cache1"]);
    let a = dump(&render_with(&model(), &nodes(), &secrets(), &t));
    let mut reversed = nodes();
    reversed.reverse();
    let b = dump(&render_with(&model(), &reversed, &secrets(), &t));
    assert_eq!(a, b);
}

#[test]
fn a_drained_node_is_down_in_both_upstreams() {
    let mut m = model();
    m.drained = vec!["gluu2".into()];
    let t = tunnel(&[]);
    let out = render_with(&m, &nodes(), &secrets(), &t);
    let text = dump(&out);
    assert_eq!(
        text.matches("server 10.0.0.12:443 max_fails=2 fail_timeout=10s down;")
            .count(),
        2,
        "{text}"
    );
    assert_eq!(text.matches(" down;").count(), 2);
}

#[test]
fn ipv6_nodes_are_bracketed() {
    let mut n = nodes();
    n[1].address = "[fd00::11]:7443".into();
    let out = render_with(&model(), &n, &secrets(), &tunnel(&[]));
    let text = dump(&out);
    assert!(text.contains("server [fd00::11]:443 "), "{text}");
    assert!(text.contains("fd00::11 gluu1\n"), "{text}");
}

#[test]
fn the_ldap_servers_line_puts_the_node_first_and_uses_the_3x_name_on_3x() {
    let mut m = model();
    m.set("gluu-version", "3.1.6").unwrap();
    let out = render_with(&m, &nodes(), &secrets(), &tunnel(&[]));
    let e = out["gluu2"]
        .entries
        .iter()
        .find(|e| e.path.ends_with("ldap.properties"))
        .unwrap();
    assert_eq!(e.path, "/etc/gluu/conf/ox-ldap.properties");
    assert_eq!(
        e.content,
        Content::Property {
            key: "servers".into(),
            value: "gluu2:1636,gluu1:1636,gluu3:1636".into()
        }
    );
}

#[test]
fn nginx_accepts_the_generated_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let ck = rcgen::generate_simple_self_signed(vec!["idp.example.org".into()]).unwrap();
    let (crt, key) = (dir.path().join("c.crt"), dir.path().join("c.key"));
    std::fs::write(&crt, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    let out = render_with(&model(), &nodes(), &secrets(), &tunnel(&[]));
    let conf = out["lb1"]
        .entries
        .iter()
        .find(|e| e.path == nginx::CONF)
        .unwrap();
    let Content::File { bytes, .. } = &conf.content else {
        panic!()
    };
    let text = String::from_utf8(bytes.clone())
        .unwrap()
        .replace(nginx::CERT, &crt.display().to_string())
        .replace(nginx::KEY, &key.display().to_string())
        .replace(
            "pid /run/nginx.pid;",
            &format!("pid {}/nginx.pid;", dir.path().display()),
        );
    let path = dir.path().join("nginx.conf");
    std::fs::write(&path, text).unwrap();
    let run = std::process::Command::new("nginx")
        .arg("-t")
        .arg("-c")
        .arg(&path)
        .output()
        .expect("nginx is installed (tests/run installs it)");
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
}

#[test]
fn csync2_accepts_the_generated_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let out = render_with(
        &model(),
        &nodes(),
        &secrets(),
        &tunnel(&["gluu1", "gluu2", "gluu3"]),
    );
    for e in &out["gluu1"].entries {
        let Content::File { bytes, .. } = &e.content else {
            continue;
        };
        if e.path == "/etc/csync2.cfg" {
            let text = String::from_utf8(bytes.clone()).unwrap().replace(
                "key /etc/csync2.key;",
                &format!("key {}/csync2.key;", dir.path().display()),
            );
            std::fs::write(dir.path().join("csync2.cfg"), text).unwrap();
        } else if e.path == "/etc/csync2.key" {
            std::fs::write(dir.path().join("csync2.key"), bytes).unwrap();
        }
    }
    let db = dir.path().join("db");
    std::fs::create_dir(&db).unwrap();
    let run = std::process::Command::new("csync2")
        .env("CSYNC2_SYSTEM_DIR", dir.path())
        .args(["-N", "gluu1", "-D"])
        .arg(&db)
        .arg("-M")
        .output()
        .expect("csync2 is installed (tests/run installs it)");
    // -M exits 2 for an empty dirty list: the config parsed and names this host.
    assert_eq!(
        run.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
}

#[test]
fn the_load_balancer_verifies_the_nodes_only_against_a_chain_that_ends_at_its_root() {
    let nodes = nodes();
    let conf = |cert: &str| {
        let secrets = Secrets {
            tls: Some((cert.to_string(), KEY_PEM.into())),
            ..secrets()
        };
        let out = render_with(&model(), &nodes, &secrets, &tunnel(&[]));
        let lb = &out["lb1"];
        let text = lb
            .entries
            .iter()
            .find(|e| e.path == nginx::CONF)
            .and_then(|e| match &e.content {
                Content::File { bytes, .. } => Some(String::from_utf8_lossy(bytes).into_owned()),
                _ => None,
            })
            .unwrap();
        (text.contains("proxy_ssl_verify on;"), lb.waiting.clone())
    };
    for chain in [SELF_SIGNED.to_string(), format!("{LEAF}{ROOT}")] {
        let (on, waiting) = conf(&chain);
        assert!(on && waiting.is_empty(), "{waiting:?}");
    }
    let (on, waiting) = conf(LEAF);
    assert!(!on);
    assert!(
        waiting.iter().any(|w| w.contains("append the root")),
        "{waiting:?}"
    );
}

#[test]
fn a_node_reached_by_a_dns_name_is_left_out_of_the_hosts_block_and_said_so() {
    let mut nodes = nodes();
    nodes[1].address = "gluu1.example.org:7443".into();
    let out = render_with(&model(), &nodes, &secrets(), &tunnel(&[]));
    for (name, cfg) in &out {
        let block = cfg
            .entries
            .iter()
            .find_map(|e| match &e.content {
                Content::Block { name, body } if e.scope == Scope::Host && name == "hosts" => {
                    Some(body.clone())
                }
                _ => None,
            })
            .unwrap();
        assert!(!block.contains("gluu1"), "{name}: {block}");
        assert!(block.contains("10.0.0.12 gluu2"), "{name}: {block}");
        assert!(
            cfg.waiting
                .iter()
                .any(|w| w.contains("gluu1.example.org is a DNS name")),
            "{name}: {:?}",
            cfg.waiting
        );
    }
}

/// gluu1's csync2 configuration as text.
fn csync2_cfg(m: &ClusterModel) -> String {
    let out = render_with(
        m,
        &nodes(),
        &secrets(),
        &tunnel(&["gluu1", "gluu2", "gluu3"]),
    );
    let e = out["gluu1"]
        .entries
        .iter()
        .find(|e| e.path == "/etc/csync2.cfg")
        .expect("csync2's configuration");
    let Content::File { bytes, .. } = &e.content else {
        panic!("a whole file");
    };
    String::from_utf8(bytes.clone()).unwrap()
}

#[test]
fn csync2_excludes_the_per_node_files_it_would_copy_and_editor_leftovers() {
    let cfg = csync2_cfg(&model());
    // oxTrust's log rotation is under /etc/gluu/conf, which is replicated; log4j2.xml
    // is under no replicated path, so excluding it would say nothing.
    assert!(
        cfg.contains("exclude /opt/gluu-server/etc/gluu/conf/oxTrustLogRotationConfiguration.xml;"),
        "{cfg}"
    );
    assert!(!cfg.contains("log4j2.xml"), "{cfg}");
    assert!(cfg.contains("    exclude *~ .*;\n"), "{cfg}");
    // Replicating oxTrust's resources brings its log4j2 file under csync2: excluded.
    let mut m = model();
    m.replicated_paths
        .push("/opt/gluu/jetty/identity/resources".into());
    let cfg = csync2_cfg(&m);
    assert!(
        cfg.contains("exclude /opt/gluu-server/opt/gluu/jetty/identity/resources/log4j2.xml;"),
        "{cfg}"
    );
}

/// Runs csync2's action for a Shibboleth change with stand-in `machinectl`,
/// `systemctl` and `chroot` that record how they were called; `machine_root` is the
/// root directory the one machine reports.
fn run_shibboleth_action(cfg: &str, machine_root: &str) -> String {
    let exec = cfg
        .lines()
        .find_map(|l| l.trim().strip_prefix("exec \""))
        .and_then(|l| l.strip_suffix("\";"))
        .expect("an exec line");
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("calls");
    let stub = |name: &str, body: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    };
    stub(
        "machinectl",
        &format!(
            "case $1 in list) echo 'gluu_server container systemd-nspawn debian 12 -';; \
             show) echo {machine_root};; esac"
        ),
    );
    for name in ["systemctl", "chroot"] {
        stub(name, &format!("echo {name} \"$@\" >> {}", log.display()));
    }
    let path = format!("{}:/usr/bin:/bin", dir.path().display());
    let status = std::process::Command::new("/bin/sh")
        .args(["-c", exec])
        .env("PATH", path)
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::read_to_string(&log).unwrap_or_default()
}

#[test]
fn csync2_restarts_shibboleth_in_a_4x_machine_through_its_systemd_and_in_a_3x_chroot_by_script() {
    let cfg = csync2_cfg(&model());
    // Gluu 4.x: the nspawn machine whose root is the container root.
    assert_eq!(
        run_shibboleth_action(&cfg, "/opt/gluu-server"),
        "systemctl --machine=gluu_server restart identity idp\n"
    );
    // No machine of that root (3.x, or another container): the chrooted init scripts.
    assert_eq!(
        run_shibboleth_action(&cfg, "/var/lib/machines/other"),
        "chroot /opt/gluu-server /etc/init.d/identity restart\nchroot /opt/gluu-server /etc/init.d/idp restart\n"
    );
}

#[test]
fn redis_listens_on_loopback_with_the_generated_password_and_each_checker_can_read_it() {
    let out = render_with(&model(), &nodes(), &secrets(), &tunnel(&[]));
    let cache = &out["cache1"];
    let blocks: Vec<(&str, &str, &[clustermgr_protocol::changeset::Action])> = cache
        .entries
        .iter()
        .filter_map(|e| match &e.content {
            Content::Block { name, body } if name == "redis" => {
                assert!(e.secret, "{}: the block holds the password", e.path);
                Some((e.path.as_str(), body.as_str(), e.on_change.as_slice()))
            }
            _ => None,
        })
        .collect();
    // Debian's file and service, then Red Hat's: the one the host lacks waits.
    let services: Vec<(&str, String)> = blocks
        .iter()
        .map(|(p, _, a)| (*p, format!("{a:?}")))
        .collect();
    assert_eq!(services.len(), 2, "{services:?}");
    assert_eq!(services[0].0, "/etc/redis/redis.conf");
    assert!(services[0].1.contains("\"redis-server\", verb: Restart"));
    assert_eq!(services[1].0, "/etc/redis.conf");
    assert!(services[1].1.contains("\"redis\", verb: Restart"));
    for (_, body, _) in &blocks {
        assert!(
            body.contains(&format!(
                "bind 127.0.0.1\nport 6379\nprotected-mode yes\nrequirepass {REDIS_PASSWORD}\n"
            )),
            "{body}"
        );
    }
    // The password file: on the cache host and every Gluu node (their checks), owner-only
    // and secret; not on the load balancer.
    for (name, cfg) in &out {
        let f = cfg.entries.iter().find(|e| e.path == redis::PASSWORD_FILE);
        if name == "lb1" {
            assert!(f.is_none());
            continue;
        }
        let f = f.unwrap_or_else(|| panic!("{name} has no password file"));
        assert!(f.secret);
        let Content::File { bytes, mode, .. } = &f.content else {
            panic!("{f:?}")
        };
        assert_eq!(
            (bytes.as_slice(), *mode),
            (format!("{REDIS_PASSWORD}\n").as_bytes(), 0o600)
        );
    }
    // Without the Redis cache, none of it.
    let mut m = model();
    m.cache = Cache::None;
    let out = render_with(&m, &nodes(), &secrets(), &tunnel(&[]));
    assert!(
        out.values()
            .flat_map(|c| &c.entries)
            .all(|e| !e.path.contains("redis")),
        "{out:?}"
    );
}

#[test]
fn every_gluu_node_gets_the_cluster_certificate_in_its_container_and_java_trusts_it() {
    use clustermgr_protocol::changeset::Action;
    let out = render_with(&model(), &nodes(), &secrets(), &tunnel(&[]));
    for name in ["gluu1", "gluu2", "gluu3"] {
        let cfg = &out[name];
        let crt = cfg.entries.iter().find(|e| e.path == httpd::CERT).unwrap();
        let key = cfg.entries.iter().find(|e| e.path == httpd::KEY).unwrap();
        let container = Scope::Container {
            root: "/opt/gluu-server".into(),
        };
        assert_eq!((&crt.scope, &key.scope), (&container, &container));
        assert!(key.secret && !crt.secret);
        let Content::File {
            mode, owner, group, ..
        } = &key.content
        else {
            panic!("{key:?}")
        };
        // Owner-only; the owner Gluu's setup gave it is kept.
        assert_eq!((*mode, owner, group), (0o600, &None, &None));
        assert_eq!(
            crt.on_change[0],
            Action::JavaTrust {
                alias: "idp.example.org_httpd".into(),
                cert: "/etc/certs/httpd.crt".into()
            }
        );
        // The import, then the restarts, which the key's change shares.
        assert!(
            matches!(&crt.on_change[1], Action::RestartInstalled { services } if services[0] == "apache2")
        );
        assert_eq!(key.on_change, crt.on_change[1..]);
        // A version-1 agent could not decode it.
        assert_eq!(crt.needs_version().map(|v| v.0), Some(2));
    }
    assert!(
        ["lb1", "cache1"]
            .iter()
            .all(|n| out[*n].entries.iter().all(|e| e.path != httpd::KEY))
    );
    // A Gluu without a container: the host's /etc/certs.
    let mut m = model();
    m.set("gluu-root", "/").unwrap();
    let out = render_with(&m, &nodes(), &secrets(), &tunnel(&[]));
    let crt = out["gluu1"]
        .entries
        .iter()
        .find(|e| e.path == httpd::CERT)
        .unwrap();
    assert_eq!(crt.scope, Scope::Host);
    // No certificate set: Gluu's own stays. A key of another certificate: the nodes wait,
    // and say for what.
    let none = Secrets {
        tls: None,
        ..secrets()
    };
    let out = render_with(&model(), &nodes(), &none, &tunnel(&[]));
    assert!(out["gluu1"].entries.iter().all(|e| e.path != httpd::CERT));
    let other_key = rcgen::KeyPair::generate().unwrap().serialize_pem();
    let wrong = Secrets {
        tls: Some((SELF_SIGNED.into(), other_key)),
        ..secrets()
    };
    let out = render_with(&model(), &nodes(), &wrong, &tunnel(&[]));
    assert!(out["gluu1"].entries.iter().all(|e| e.path != httpd::KEY));
    assert!(
        out["gluu1"]
            .waiting
            .iter()
            .any(|w| w
                .starts_with("Apache's certificate on the node waits for a TLS key that matches")),
        "{:?}",
        out["gluu1"].waiting
    );
}
