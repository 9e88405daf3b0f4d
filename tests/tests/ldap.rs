//! The agent's LDAP client and health checks against real slapd: binds, reads and
//! writes, the monitor, the pinned certificate, a frozen server ending in a timeout,
//! and rounds on three replicating servers (CSNs, consumers, heartbeats).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use clustermgr_agent::config::AgentConfig;
use clustermgr_agent::ldap::{self, client::Failure, client::Scope};
use clustermgr_tests::slapd::{self, ROOT_DN, Slapd};

fn agent_config(dir: &Path, ldap_section: &str) -> AgentConfig {
    let text = format!(
        "cert = \"c\"\nkey = \"k\"\nca = \"a\"\nstate_dir = \"s\"\nroot = \"{}\"\n{ldap_section}",
        dir.display()
    );
    AgentConfig::parse(&dir.join("agent.toml"), &text).expect("agent.toml")
}

/// `[ldap]` for `slapd`, over `url`, with the password in an owner-only file.
fn ldap_config(s: &Slapd, url: &str, password: &str, timeout_ms: u64) -> AgentConfig {
    let pw = s.path(&format!("pw-{}", password.len()));
    std::fs::write(&pw, format!("{password}\n")).unwrap();
    std::fs::set_permissions(&pw, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let cert = s.path("server.crt");
    agent_config(
        s.dir.path(),
        &format!(
            "[ldap]\nurl = \"{url}\"\nbind_dn = \"{ROOT_DN}\"\npassword_file = \"{}\"\ncert_file = \"{}\"\ntimeout_ms = {timeout_ms}\n",
            pw.display(),
            cert.display()
        ),
    )
}

fn access(s: &Slapd, url: &str, password: &str, timeout_ms: u64) -> ldap::Access {
    ldap::access(&ldap_config(s, url, password, timeout_ms))
        .expect("access")
        .expect("configured")
}

fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill {sig} {pid}");
}

#[test]
fn the_agent_reads_and_writes_a_real_slapd_over_ldap_and_pinned_ldaps() {
    let s = Slapd::start();
    let plain = access(&s, &s.ldap_url(), &s.root_pw, 5000);
    let mut c = plain
        .connect()
        .unwrap_or_else(|e| panic!("{e}\n{}", s.log()));
    let org = |o: &str| {
        vec![
            ("objectClass", vec!["organization".into()]),
            ("o", vec![o.into()]),
        ]
    };
    c.add("o=gluu", &org("gluu")).expect("add the suffix entry");
    let again = c.add("o=gluu", &org("gluu")).unwrap_err();
    assert!(
        matches!(
            again,
            Failure::Result {
                code: ldap::client::ALREADY_EXISTS,
                ..
            }
        ),
        "{again}"
    );
    c.add(
        "ou=clustermgr,o=gluu",
        &[
            ("objectClass", vec!["organizationalUnit".into()]),
            ("ou", vec!["clustermgr".into()]),
            ("description", vec!["first".into()]),
        ],
    )
    .expect("add an entry");
    c.replace(
        "ou=clustermgr,o=gluu",
        &[("description", vec!["second (with *)".into()])],
    )
    .expect("replace a value");
    let filter = format!("(description={})", ldap::client::escape("second (with *)"));
    let found = c
        .search("o=gluu", Scope::Sub, &filter, &["description", "entryCSN"])
        .expect("search");
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].dn, "ou=clustermgr,o=gluu");
    assert_eq!(
        found[0].first("description").as_deref(),
        Some("second (with *)")
    );
    assert!(
        found[0].first("entryCSN").is_some(),
        "operational attributes by name"
    );
    let missing = c
        .search("ou=nowhere,o=gluu", Scope::Base, "(objectClass=*)", &[])
        .unwrap_err();
    assert!(
        matches!(
            missing,
            Failure::Result {
                code: ldap::client::NO_SUCH_OBJECT,
                ..
            }
        ),
        "{missing}"
    );
    let suffix = c
        .search("o=gluu", Scope::Base, "(objectClass=*)", &["contextCSN"])
        .expect("the suffix");
    assert_eq!(suffix.len(), 1);
    c.unbind();

    // LDAPS with the server's certificate pinned; the monitor is readable.
    let tls = access(&s, &s.ldaps_url(), &s.root_pw, 5000);
    let mut c = tls.connect().unwrap_or_else(|e| panic!("{e}\n{}", s.log()));
    let monitor = c
        .search("cn=Monitor", Scope::Sub, "(objectClass=*)", &["*", "+"])
        .expect("read cn=Monitor");
    assert!(
        monitor
            .iter()
            .any(|e| e.dn.eq_ignore_ascii_case("cn=Operations,cn=Monitor")),
        "{:?}",
        monitor.iter().map(|e| &e.dn).collect::<Vec<_>>()
    );

    // A wrong password is an answer, not a transport failure, and says whose.
    let wrong = access(&s, &s.ldap_url(), "not-it", 5000);
    let err = wrong.connect().unwrap_err();
    assert!(err.contains("invalid credentials (49)"), "{err}");
    assert!(err.contains(ROOT_DN) && err.contains("[ldap]"), "{err}");
    assert!(
        !err.contains("not-it"),
        "the password stays out of messages: {err}"
    );

    // Another certificate than the server's is refused.
    std::fs::write(s.path("server.crt"), slapd::self_signed(&["localhost"]).0).unwrap();
    let impostor = access(&s, &s.ldaps_url(), &s.root_pw, 5000);
    let err = impostor.connect().unwrap_err();
    assert!(err.contains("pinned"), "{err}");
}

#[test]
fn a_frozen_slapd_is_a_timeout_not_a_hang() {
    let s = Slapd::start();
    let a = access(&s, &s.ldap_url(), &s.root_pw, 700);
    let mut c = a.connect().unwrap_or_else(|e| panic!("{e}\n{}", s.log()));
    c.search("cn=Monitor", Scope::Base, "(objectClass=*)", &[])
        .expect("answers while running");
    signal(s.pid(), "-STOP");
    // kill(2) only queues the signal: wait until every thread of slapd is stopped, or
    // one may still answer.
    clustermgr_tests::eventually_blocking("slapd to be stopped", Duration::from_secs(10), || {
        std::fs::read_dir(format!("/proc/{}/task", s.pid()))
            .map(|tasks| {
                tasks.flatten().all(|t| {
                    let stat = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
                    stat.rsplit_once(") ")
                        .is_some_and(|(_, rest)| rest.starts_with('T'))
                })
            })
            .unwrap_or(false)
    });
    let t0 = Instant::now();
    let err = c
        .search("cn=Monitor", Scope::Base, "(objectClass=*)", &[])
        .unwrap_err();
    let took = t0.elapsed();
    assert_eq!(err, Failure::Timeout(Duration::from_millis(700)));
    assert!(took < Duration::from_secs(3), "took {took:?}");
    // A new connection is accepted by the kernel, and its bind times out.
    let t0 = Instant::now();
    let err = a.connect().unwrap_err();
    assert!(err.contains("no answer within 0.7 s"), "{err}");
    assert!(t0.elapsed() < Duration::from_secs(3));
    signal(s.pid(), "-CONT");
    let mut c = a.connect().expect("answers again once thawed");
    c.search("cn=Monitor", Scope::Base, "(objectClass=*)", &[])
        .expect("search after the thaw");
}

#[test]
fn three_slapds_configured_through_cn_config_replicate_every_way() {
    let servers = slapd::replicating(3);
    let conns: Vec<_> = servers
        .iter()
        .map(|s| {
            access(s, &s.ldap_url(), &s.root_pw, 5000)
                .connect()
                .unwrap_or_else(|e| panic!("{e}\n{}", s.log()))
        })
        .collect();
    let mut conns = conns;
    conns[2]
        .add(
            "ou=people,o=gluu",
            &[
                ("objectClass", vec!["organizationalUnit".into()]),
                ("ou", vec!["people".into()]),
            ],
        )
        .expect("a write on the third");
    for (i, c) in conns.iter_mut().enumerate() {
        clustermgr_tests::eventually_blocking(
            &format!("the third's write on server {}", i + 1),
            Duration::from_secs(20),
            || {
                c.search("ou=people,o=gluu", Scope::Base, "(objectClass=*)", &[])
                    .is_ok()
            },
        );
    }
    // Each server's suffix entry carries a contextCSN per serverID that wrote: the
    // first (the suffix entry) and the third.
    for (i, c) in conns.iter_mut().enumerate() {
        clustermgr_tests::eventually_blocking(
            &format!("server {} to hold both writers' CSNs", i + 1),
            Duration::from_secs(20),
            || {
                let csns = c
                    .search("o=gluu", Scope::Base, "(objectClass=*)", &["contextCSN"])
                    .map(|e| e[0].values("contextCSN"))
                    .unwrap_or_default();
                csns.iter().any(|v| v.contains("#001#")) && csns.iter().any(|v| v.contains("#003#"))
            },
        );
    }
}

#[test]
fn health_rounds_see_csns_consumers_and_every_nodes_fresh_heartbeat() {
    use clustermgr_agent::health::{self, Heartbeats};
    use clustermgr_protocol::health::{CheckSpec, LdapServer, LdapState};
    let mut servers = slapd::replicating(3);
    let names = ["gluu1", "gluu2", "gluu3"];
    let cfgs: Vec<AgentConfig> = servers
        .iter()
        .map(|s| ldap_config(s, &s.ldap_url(), &s.root_pw, 1000))
        .collect();
    let spec = CheckSpec {
        interval_ms: 300,
        deadline_ms: 5000,
        reach: Vec::new(),
        csync2: None,
        certs: Vec::new(),
        services: Vec::new(),
        gluu_endpoints: None,
    };
    let beats: Vec<Heartbeats> = cfgs
        .iter()
        .zip(names)
        .map(|(c, n)| {
            let live = std::sync::Arc::new(std::sync::Mutex::new(c.ldap.clone()));
            let b = Heartbeats::start(c, n, live, Default::default()).expect("heartbeat thread");
            // The round tells the writer the interval.
            health::round(c, &spec, Some(&b));
            b
        })
        .collect();
    let state = |i: usize| -> LdapState {
        let r = health::round(&cfgs[i], &spec, Some(&beats[i]));
        r.ldap.expect("an LDAP server").expect("readable")
    };
    for i in 0..3 {
        clustermgr_tests::eventually_blocking(
            &format!("{} to hold every node's fresh heartbeat", names[i]),
            Duration::from_secs(20),
            || {
                let s = state(i);
                names.iter().all(|n| {
                    s.heartbeats
                        .iter()
                        .any(|h| h.node == *n && h.read_ms - h.written_ms < 3000)
                })
            },
        );
    }
    let s = state(0);
    assert_eq!(s.server, LdapServer::OpenLdap);
    assert_eq!(s.heartbeat_error, None);
    for sid in ["001", "002", "003"] {
        assert!(
            s.csns.iter().any(|c| c.server_id == sid),
            "every node wrote its heartbeat, so every serverID has a CSN: {:?}",
            s.csns
        );
    }
    let peer_urls: Vec<String> = servers[1..].iter().map(|p| p.ldap_url()).collect();
    for url in &peer_urls {
        let c = s
            .consumers
            .iter()
            .find(|c| c.provider.starts_with(url.as_str()))
            .unwrap_or_else(|| panic!("a consumer of {url}: {:?}", s.consumers));
        assert!(c.connected && c.phase == "Persist", "{c:?}");
    }

    // The third server goes away: the first's consumer of it loses its link, and the
    // third's heartbeat stops advancing there while the second's goes on.
    let third_url = servers[2].ldap_url();
    servers[2].kill();
    let before = state(0);
    let seen = |s: &LdapState, n: &str| {
        s.heartbeats
            .iter()
            .find(|h| h.node == n)
            .map(|h| h.written_ms)
            .unwrap_or(0)
    };
    clustermgr_tests::eventually_blocking(
        "the first server's consumer of the third to lose its link",
        Duration::from_secs(20),
        || {
            state(0)
                .consumers
                .iter()
                .any(|c| c.provider.starts_with(third_url.as_str()) && !c.connected)
        },
    );
    clustermgr_tests::eventually_blocking(
        "the second's heartbeat to advance on the first",
        Duration::from_secs(20),
        || seen(&state(0), "gluu2") > seen(&before, "gluu2"),
    );
    assert_eq!(
        seen(&state(0), "gluu3"),
        seen(&before, "gluu3"),
        "the third's heartbeat stays where it stopped"
    );
    let err = health::round(&cfgs[2], &spec, Some(&beats[2]))
        .ldap
        .expect("configured")
        .unwrap_err();
    assert!(err.contains("cannot connect"), "{err}");
}

#[test]
fn the_ldap_thread_reads_slapds_operation_counters_for_the_metrics() {
    use clustermgr_agent::health::{Heartbeats, LdapSamples};
    let s = Slapd::start();
    let cfg = ldap_config(&s, &s.ldap_url(), &s.root_pw, 1000);
    let live = std::sync::Arc::new(std::sync::Mutex::new(cfg.ldap.clone()));
    let samples = LdapSamples::default();
    let _beats = Heartbeats::start(&cfg, "gluu1", live, samples.clone()).expect("thread");
    clustermgr_tests::eventually_blocking(
        "the operation counters",
        Duration::from_secs(10),
        || {
            let got = samples.lock().unwrap();
            let has = |name: &str, op: Option<&str>| {
                got.iter().any(|x| {
                    x.name == name
                        && op.is_none_or(|o| x.labels == vec![("op".to_string(), o.to_string())])
                })
            };
            has("ldap_operations_total", Some("search"))
                && has("ldap_operations_total", Some("bind"))
                && has("ldap_connections_total", None)
                && has("ldap_connections", None)
        },
    );
    let binds = samples
        .lock()
        .unwrap()
        .iter()
        .find(|x| x.labels == vec![("op".to_string(), "bind".to_string())])
        .map(|x| x.value)
        .unwrap_or(0.0);
    assert!(binds >= 1.0, "the thread's own bind was counted: {binds}");
}

/// One node of the replication test: its slapd, and an agent engine bound to it whose
/// root is a directory of its own (with a Gluu container directory in it).
struct BuildNode {
    name: String,
    slapd: Slapd,
    root: tempfile::TempDir,
    engine: clustermgr_agent::apply::Engine,
}

fn build_node(i: usize) -> BuildNode {
    let slapd = Slapd::start();
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("opt/gluu-server/etc/certs")).unwrap();
    let pw = slapd.path("root.pw");
    std::fs::write(&pw, format!("{}\n", slapd.root_pw)).unwrap();
    std::fs::set_permissions(&pw, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let text = format!(
        "cert = \"c\"\nkey = \"k\"\nca = \"a\"\nstate_dir = \"{}\"\nroot = \"{}\"\nwritable_roots = [\"{}/opt/gluu-server\"]\n[ldap]\nurl = \"{}\"\nbind_dn = \"{ROOT_DN}\"\npassword_file = \"{}\"\ncert_file = \"{}\"\nldapi = \"{}\"\ntimeout_ms = 3000\nheartbeat = false\n",
        root.path().join("state").display(),
        root.path().display(),
        root.path().display(),
        slapd.ldaps_url(),
        pw.display(),
        slapd.path("server.crt").display(),
        slapd.ldapi().display(),
    );
    let cfg = AgentConfig::parse(&root.path().join("agent.toml"), &text).expect("agent.toml");
    // A standalone Gluu directory with data of its own.
    let mut c = access(&slapd, &slapd.ldaps_url(), &slapd.root_pw, 3000)
        .connect()
        .unwrap();
    c.add(
        "o=gluu",
        &[
            ("objectClass", vec!["organization".into()]),
            ("o", vec!["gluu".into()]),
        ],
    )
    .unwrap();
    c.add(
        &format!("cn=own-{i},o=gluu"),
        &[
            ("objectClass", vec!["organizationalRole".into()]),
            ("cn", vec![format!("own-{i}")]),
        ],
    )
    .unwrap();
    BuildNode {
        name: format!("n{i}"),
        slapd,
        engine: clustermgr_agent::apply::Engine::new(std::sync::Arc::new(cfg)),
        root,
    }
}

fn members(nodes: &[BuildNode]) -> Vec<clustermgr::generate::replication::Member> {
    nodes
        .iter()
        .enumerate()
        .map(|(i, n)| clustermgr::generate::replication::Member {
            name: n.name.clone(),
            // libldap checks a name against the certificate after canonicalizing it
            // (localhost becomes the machine's name): providers are named by address.
            ip: "127.0.0.1".into(),
            port: n.slapd.ldaps_port,
            server_id: i as u16 + 1,
            cert_pem: Some(n.slapd.cert_pem.clone()),
        })
        .collect()
}

/// `node`'s change set for `joined`, with `password`.
fn replication_set(
    nodes: &[BuildNode],
    node: usize,
    joined: &[&str],
    password: &str,
    revision: u64,
) -> clustermgr_protocol::changeset::ChangeSet {
    use clustermgr::generate::replication::{Inputs, PEERS_PEM, node_entries};
    let members = members(nodes);
    let joined: Vec<String> = joined.iter().map(|s| s.to_string()).collect();
    let seen = nodes[node]
        .root
        .path()
        .join("opt/gluu-server")
        .join(PEERS_PEM.trim_start_matches('/'))
        .display()
        .to_string();
    let inputs = Inputs {
        members: &members,
        joined: &joined,
        leaving: &[],
        password,
        scope: clustermgr_protocol::changeset::Scope::Container {
            root: "/opt/gluu-server".into(),
        },
        peers_pem_seen: &seen,
        catch_up_ms: 8000,
    };
    clustermgr_protocol::changeset::ChangeSet {
        revision,
        entries: node_entries(&inputs, &nodes[node].name).unwrap(),
        requested_by: "test@controller".into(),
    }
}

fn has_entry(n: &BuildNode, dn: &str) -> bool {
    let mut c = access(&n.slapd, &n.slapd.ldaps_url(), &n.slapd.root_pw, 3000)
        .connect()
        .unwrap();
    c.search(dn, Scope::Base, "(objectClass=*)", &["1.1"])
        .is_ok_and(|e| !e.is_empty())
}

fn add_role(n: &BuildNode, cn: &str) {
    let mut c = access(&n.slapd, &n.slapd.ldaps_url(), &n.slapd.root_pw, 3000)
        .connect()
        .unwrap();
    c.add(
        &format!("cn={cn},o=gluu"),
        &[
            ("objectClass", vec!["organizationalRole".into()]),
            ("cn", vec![cn.to_string()]),
        ],
    )
    .unwrap();
}

#[test]
fn standalone_slapds_become_a_replicating_cluster_through_the_agents() {
    use clustermgr_protocol::changeset::{ApplyResult, Change};
    const PW: &str = "Repl1cationPassw0rd0123456789abc";
    let nodes: Vec<BuildNode> = (1..=3).map(build_node).collect();
    let apply = |i: usize, joined: &[&str], pw: &str, rev: u64| {
        let report = nodes[i]
            .engine
            .apply(&replication_set(&nodes, i, joined, pw, rev))
            .unwrap_or_else(|e| {
                panic!(
                    "apply on n{}: {}\n{}",
                    i + 1,
                    e.message,
                    nodes[i].slapd.log()
                )
            });
        let text = format!("{report:?}");
        assert!(
            !text.contains(PW) && !text.contains("wr0ngPassword"),
            "a password in a report: {text}"
        );
        report
    };
    // Round one: the primary is the seed; the others take its directory.
    for (i, n) in nodes.iter().enumerate() {
        let r = apply(i, &["n1"], PW, 1);
        assert_eq!(
            r.result,
            ApplyResult::Applied,
            "{}: {r:?}\n{}",
            n.name,
            n.slapd.log()
        );
    }
    for n in &nodes[1..] {
        assert!(
            has_entry(n, "cn=own-1,o=gluu"),
            "{} has the seed's data",
            n.name
        );
        let own = format!("cn=own-{},o=gluu", &n.name[1..]);
        assert!(
            !has_entry(n, &own),
            "{}'s own directory was replaced, not merged",
            n.name
        );
    }
    assert!(
        !has_entry(&nodes[0], "cn=own-2,o=gluu"),
        "never the reverse"
    );
    // Round two: everyone replicates from everyone.
    for i in 0..3 {
        let r = apply(i, &["n1", "n2", "n3"], PW, 2);
        assert_eq!(r.result, ApplyResult::Applied, "n{}: {r:?}", i + 1);
    }
    for (i, n) in nodes.iter().enumerate() {
        let cn = format!("written-on-{}", n.name);
        add_role(n, &cn);
        for (j, other) in nodes.iter().enumerate() {
            if i != j {
                clustermgr_tests::eventually_blocking(
                    &format!("{cn} on {}", other.name),
                    Duration::from_secs(10),
                    || has_entry(other, &format!("cn={cn},o=gluu")),
                );
            }
        }
    }
    // An unchanged cluster changes nothing.
    for i in 0..3 {
        let plan = nodes[i]
            .engine
            .plan(&replication_set(&nodes, i, &["n1", "n2", "n3"], PW, 3))
            .unwrap();
        let changed: Vec<_> = plan
            .iter()
            .filter(|p| p.change != Change::Unchanged)
            .collect();
        assert!(changed.is_empty(), "n{}: {changed:?}", i + 1);
        for p in &plan {
            for t in [&p.old_text, &p.new_text].into_iter().flatten() {
                assert!(!t.contains(PW), "the password in a plan: {t}");
            }
        }
    }
    // Rollback works for LDAP attributes as for files: n2's consumers as they were
    // before round two are kept, put back, and the next apply restores the desired ones.
    let path = "ldap:database/o=gluu?olcSyncrepl";
    let scope = clustermgr_protocol::changeset::Scope::Container {
        root: "/opt/gluu-server".into(),
    };
    let kept = nodes[1].engine.backups(path, &scope).unwrap();
    assert!(
        !kept.is_empty(),
        "round two kept n2's consumers of round one"
    );
    let r = nodes[1]
        .engine
        .restore(&clustermgr_protocol::changeset::RestoreSpec {
            path: path.into(),
            scope: scope.clone(),
            generation: 1,
            validate: None,
            on_change: Vec::new(),
            requested_by: "test@controller".into(),
        })
        .unwrap();
    assert_eq!(r.result, ApplyResult::Applied, "{r:?}");
    assert!(!format!("{r:?}").contains(PW), "a password in a report");
    let plan = nodes[1]
        .engine
        .plan(&replication_set(&nodes, 1, &["n1", "n2", "n3"], PW, 4))
        .unwrap();
    let syncrepl = plan.iter().find(|p| p.path == path).unwrap();
    assert_eq!(syncrepl.change, Change::Modify, "rolled back: {syncrepl:?}");
    let r = apply(1, &["n1", "n2", "n3"], PW, 4);
    assert_eq!(r.result, ApplyResult::Applied, "{r:?}");
    // A consumer that cannot bind: reported with its provider's own words and rolled
    // back on that node; the others keep replicating.
    let mut bad = replication_set(&nodes, 1, &["n1", "n2", "n3"], PW, 5);
    for e in &mut bad.entries {
        if let clustermgr_protocol::changeset::Content::Ldap(a) = &mut e.content
            && let clustermgr_protocol::changeset::LdapValue::Exactly(v) = &mut a.value
            && a.attribute == "olcSyncrepl"
        {
            for c in v.iter_mut() {
                *c = c.replace(PW, "wr0ngPassword");
            }
        }
    }
    let r = nodes[1].engine.apply(&bad).unwrap();
    assert!(
        !format!("{r:?}").contains("wr0ngPassword"),
        "a password in a report"
    );
    match &r.result {
        ApplyResult::RolledBack { step, output, .. } => {
            assert_eq!(step, "replication of o=gluu");
            assert!(output.contains("invalid credentials (49)"), "{output}");
        }
        other => panic!("a consumer that cannot bind was applied: {other:?}"),
    }
    let plan = nodes[1]
        .engine
        .plan(&replication_set(&nodes, 1, &["n1", "n2", "n3"], PW, 5))
        .unwrap();
    assert!(
        plan.iter().all(|p| p.change == Change::Unchanged),
        "rolled back: {plan:?}"
    );
    add_role(&nodes[0], "after-the-bad-change");
    for n in &nodes[1..] {
        clustermgr_tests::eventually_blocking(
            &format!("replication to {} after the bad change", n.name),
            Duration::from_secs(10),
            || has_entry(n, "cn=after-the-bad-change,o=gluu"),
        );
    }
}

/// Adds `dn` with `attrs` (and the `objectClass`) through `c`.
fn add_entry(c: &mut ldap::client::Connection, dn: &str, class: &str, attrs: &[(&str, &str)]) {
    let mut all = vec![("objectClass", vec![class.to_string()])];
    all.extend(attrs.iter().map(|(k, v)| (*k, vec![v.to_string()])));
    c.add(dn, &all)
        .unwrap_or_else(|e| panic!("adding {dn}: {e}"));
}

#[test]
fn the_cleaner_deletes_expired_deletable_entries_only_and_one_run_at_a_time() {
    use clustermgr_agent::cleaner::{self, CleanError};
    use clustermgr_protocol::health::generalized_time;
    let s = Slapd::start();
    let state = s.path("state");
    std::fs::create_dir(&state).unwrap();
    let pw = s.path("pw");
    std::fs::write(&pw, format!("{}\n", s.root_pw)).unwrap();
    std::fs::set_permissions(&pw, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let text = format!(
        "cert = \"c\"\nkey = \"k\"\nca = \"a\"\nstate_dir = \"{}\"\nroot = \"{}\"\n[ldap]\nurl = \"{}\"\nbind_dn = \"{ROOT_DN}\"\npassword_file = \"{}\"\n",
        state.display(),
        s.dir.path().display(),
        s.ldap_url(),
        pw.display()
    );
    let cfg = AgentConfig::parse(&s.path("agent.toml"), &text).expect("agent.toml");
    let mut c = ldap::access(&cfg)
        .expect("access")
        .expect("configured")
        .connect()
        .unwrap_or_else(|e| panic!("{e}\n{}", s.log()));
    let now = 1_795_613_415_000_i64;
    let past = generalized_time(now - 60_000);
    let future = generalized_time(now + 3_600_000);
    add_entry(&mut c, "o=gluu", "organization", &[("o", "gluu")]);
    for ou in ["tokens", "cache", "clients"] {
        add_entry(
            &mut c,
            &format!("ou={ou},o=gluu"),
            "organizationalUnit",
            &[("ou", ou)],
        );
    }
    let token = |c: &mut ldap::client::Connection, id: &str, exp: &str, del: &str| {
        add_entry(
            c,
            &format!("tknCde={id},ou=tokens,o=gluu"),
            "token",
            &[("tknCde", id), ("exp", exp), ("del", del)],
        )
    };
    token(&mut c, "expired", &past, "TRUE");
    token(&mut c, "kept-not-deletable", &past, "FALSE");
    token(&mut c, "kept-not-expired", &future, "TRUE");
    add_entry(
        &mut c,
        "uuid=old,ou=cache,o=gluu",
        "cache",
        &[("uuid", "old"), ("exp", &past), ("del", "TRUE")],
    );
    // 3.1: a grant below a client, both expired; the child must go first.
    add_entry(
        &mut c,
        "uuid=grant,ou=clients,o=gluu",
        "oxAuthGrant",
        &[
            ("uuid", "grant"),
            ("oxAuthExpiration", &past),
            ("del", "TRUE"),
        ],
    );
    add_entry(
        &mut c,
        "uuid=child,uuid=grant,ou=clients,o=gluu",
        "oxAuthGrant",
        &[
            ("uuid", "child"),
            ("oxAuthExpiration", &past),
            ("del", "TRUE"),
        ],
    );
    for i in 0..3 {
        token(&mut c, &format!("backlog-{i}"), &past, "TRUE");
    }

    // A batch of two leaves the rest of a backlog to the next run, and says so.
    let (swept, failures) = cleaner::sweep(&mut c, "o=gluu", &generalized_time(now), 2);
    assert!(failures.is_empty(), "{failures:?}");
    let tokens = swept
        .iter()
        .find(|s| s.base == "ou=tokens,o=gluu")
        .expect("tokens swept");
    assert_eq!((tokens.deleted, tokens.more), (2, true), "{swept:?}");
    // Children before their parents: the grant below the client goes first.
    assert!(
        swept
            .iter()
            .any(|s| s.to_string() == "deleted 2 expired entries under ou=clients,o=gluu"),
        "{swept:?}"
    );

    // A run holding the lock keeps the next one out.
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(state.join("clean-expired.lock"))
        .unwrap();
    lock.lock().unwrap();
    let busy = cleaner::run(&cfg, now).unwrap_err();
    assert!(matches!(busy, CleanError::Busy { .. }), "{busy}");
    assert!(busy.to_string().contains("still working"), "{busy}");
    drop(lock);

    let swept = cleaner::run(&cfg, now).unwrap_or_else(|e| panic!("{e}\n{}", s.log()));
    let mut left: Vec<String> = c
        .search("o=gluu", Scope::Sub, "(del=*)", &["1.1"])
        .expect("search")
        .into_iter()
        .map(|e| e.dn)
        .collect();
    left.sort();
    assert_eq!(
        left,
        vec![
            "tknCde=kept-not-deletable,ou=tokens,o=gluu".to_string(),
            "tknCde=kept-not-expired,ou=tokens,o=gluu".to_string()
        ],
        "only expired deletable entries go ({swept:?})"
    );
    assert!(swept.iter().all(|s| !s.more), "{swept:?}");
    // The batch took two of the four expired tokens; this run the other two.
    assert_eq!(
        swept.iter().map(ToString::to_string).collect::<Vec<_>>(),
        vec!["deleted 2 expired entries under ou=tokens,o=gluu".to_string()]
    );

    // Nothing left to do is a quiet success; a node without LDAP says what it lacks.
    assert_eq!(cleaner::run(&cfg, now).expect("again"), Vec::new());
    let mut bare = agent_config(s.dir.path(), "");
    bare.state_dir = state.clone();
    let none = cleaner::run(&bare, now).unwrap_err();
    assert!(none.to_string().contains("no LDAP server"), "{none}");
}
