//! Building the cluster on the multi-host harness with the real programs: three Gluu
//! hosts whose slapds start standalone, each with a directory of its own, become one
//! replicating cluster through `cluster set ldap-replication on` and one `apply`; a
//! second apply changes nothing.

use std::time::Duration;

use clustermgr_agent::ldap::client::{Connection, Scope, Target};
use clustermgr_tests::gluu::{NODES, bind_agent};
use clustermgr_tests::netns::Net;
use clustermgr_tests::slapd::{ROOT_DN, Slapd};
use clustermgr_tests::{Controller, succeeded as ok};

fn connect(s: &Slapd) -> Connection {
    let target = Target {
        addr: format!("{}:{}", s.ip, s.ldap_port),
        tls: None,
    };
    let mut c = Connection::open(&target, Duration::from_secs(5)).expect("connect");
    c.bind(ROOT_DN, s.root_pw.as_bytes()).expect("bind");
    c
}

fn add(s: &Slapd, dn: &str, cn: &str) {
    connect(s)
        .add(
            dn,
            &[
                ("objectClass", vec!["organizationalRole".into()]),
                ("cn", vec![cn.into()]),
            ],
        )
        .unwrap_or_else(|e| panic!("adding {dn}: {e}"));
}

fn has(s: &Slapd, dn: &str) -> bool {
    connect(s)
        .search(dn, Scope::Base, "(objectClass=*)", &["1.1"])
        .is_ok_and(|e| !e.is_empty())
}

/// Three standalone Gluu hosts, each its slapd with a directory of its own, and the
/// agents bound to them.
fn standalone() -> (Net, Controller, Vec<Slapd>) {
    let (net, ctl) = clustermgr_tests::gluu::hosts();
    let mut servers = Vec::new();
    for (i, h) in net.hosts().iter().enumerate() {
        // slapd runs on the host here but chrooted in a Gluu container: it reads the
        // container's /etc/certs, where apply writes the peers' certificates.
        h.sh("mkdir -p /opt/gluu-server/etc/certs /opt/gluu-server/etc/gluu/conf && ln -sfn /opt/gluu-server/etc/certs /etc/certs");
        let s = Slapd::start_on(h);
        add_suffix(&s);
        add_gluu_tree(&s, h);
        add(
            &s,
            &format!("cn=own-{},o=gluu", i + 1),
            &format!("own-{}", i + 1),
        );
        bind_agent(h, &s);
        servers.push(s);
    }
    (net, ctl, servers)
}

/// The key this test's Gluu containers encrypt passwords with.
const SALT: &str = "0123456789abcdefghijklmn";

/// A standalone Gluu node's own settings, as Gluu's setup writes them (4.x layout):
/// the cache in memory, its LDAP server alone, revision 1; and the container's salt.
fn add_gluu_tree(s: &Slapd, h: &clustermgr_tests::netns::Host) {
    std::fs::write(
        h.path("/opt/gluu-server/etc/gluu/conf/salt"),
        format!("encodeSalt = {SALT}\n"),
    )
    .expect("salt");
    let mut c = connect(s);
    c.add(
        "ou=configuration,o=gluu",
        &[
            ("objectClass", vec!["top".into(), "gluuConfiguration".into()]),
            ("ou", vec!["configuration".into()]),
            (
                "oxCacheConfiguration",
                vec![r#"{"cacheProviderType": "IN_MEMORY", "memcachedConfiguration": {"servers":"localhost:11211"}, "inMemoryConfiguration": {"defaultPutExpiration":60}, "redisConfiguration":{"servers":"localhost:6379", "defaultPutExpiration": 60}}"#.into()],
            ),
            (
                "oxIDPAuthentication",
                vec![r#"{"type": "auth", "name": null, "level": 0, "priority": 1, "enabled": false, "version": 0, "config": {"configId": "auth_ldap_server", "servers": ["localhost:1636"], "maxConnections": 1000, "useSSL": "true", "baseDNs": ["ou=people,o=gluu"], "primaryKey": "uid", "localPrimaryKey": "uid"}}"#.into()],
            ),
        ],
    )
    .expect("ou=configuration");
    c.add(
        "ou=oxauth,ou=configuration,o=gluu",
        &[
            (
                "objectClass",
                vec!["top".into(), "oxAuthConfiguration".into()],
            ),
            ("ou", vec!["oxauth".into()]),
            ("oxRevision", vec!["1".into()]),
        ],
    )
    .expect("ou=oxauth");
}

/// A JSON attribute of `ou=configuration,o=gluu` on `s`.
fn setting(s: &Slapd, attribute: &str) -> serde_json::Value {
    let found = connect(s)
        .search(
            "ou=configuration,o=gluu",
            Scope::Base,
            "(objectClass=*)",
            &[attribute],
        )
        .expect("ou=configuration");
    let text = found[0].first(attribute).expect("the attribute");
    serde_json::from_str(&text).expect("JSON")
}

fn revision(s: &Slapd) -> i64 {
    connect(s)
        .search(
            "ou=oxauth,ou=configuration,o=gluu",
            Scope::Base,
            "(objectClass=*)",
            &["oxRevision"],
        )
        .expect("ou=oxauth")[0]
        .first("oxRevision")
        .and_then(|v| v.parse().ok())
        .expect("oxRevision")
}

fn add_suffix(s: &Slapd) {
    connect(s)
        .add(
            "o=gluu",
            &[
                ("objectClass", vec!["organization".into()]),
                ("o", vec!["gluu".into()]),
            ],
        )
        .expect("the suffix");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_apply_turns_standalone_slapds_into_a_replicating_cluster() {
    let (mut net, ctl, mut servers) = standalone();
    let o = ctl.run(&["cluster", "set", "ldap-replication", "on"]);
    ok(o.clone(), "cluster set ldap-replication on");
    let said = String::from_utf8_lossy(&o.stdout);
    assert!(
        said.contains("gluu1") && said.contains("replaced"),
        "{said}"
    );
    let plan = ctl.run(&["plan"]);
    let text = String::from_utf8_lossy(&plan.stdout).to_string();
    assert!(
        text.contains("olcSyncrepl"),
        "the plan shows the consumers: {text}"
    );
    assert_eq!(
        text.matches("its own o=gluu is emptied and replaced by the cluster's")
            .count(),
        2,
        "the plan says, in words, that gluu2's and gluu3's directories are replaced: {text}"
    );
    let o = ctl.run(&["apply", "--yes"]);
    ok(o.clone(), "apply");
    // The seed's data everywhere; the others' own entries replaced, never the reverse.
    for s in &servers[1..] {
        assert!(has(s, "cn=own-1,o=gluu"));
    }
    for (i, s) in servers.iter().enumerate().skip(1) {
        assert!(!has(s, &format!("cn=own-{},o=gluu", i + 1)));
    }
    assert!(!has(&servers[0], "cn=own-2,o=gluu"), "never the reverse");
    // Gluu's cluster-wide settings, written on the primary and replicated: the LDAP
    // cache with no shared cache, every LDAP server with the node's own first; the rest
    // of Gluu's documents as Gluu wrote them; oxAuth told to reload.
    let ldap_servers: Vec<String> = std::iter::once("localhost:1636".to_string())
        .chain(servers.iter().map(|s| format!("{}:1636", s.ip)))
        .collect();
    for s in &servers {
        let cache = setting(s, "oxCacheConfiguration");
        assert_eq!(cache["cacheProviderType"], "NATIVE_PERSISTENCE", "{cache}");
        assert_eq!(
            cache["memcachedConfiguration"]["servers"],
            "localhost:11211"
        );
        let idp = setting(s, "oxIDPAuthentication");
        assert_eq!(
            idp["config"]["servers"],
            serde_json::json!(ldap_servers),
            "{idp}"
        );
        assert_eq!(idp["config"]["configId"], "auth_ldap_server");
        assert!(revision(s) > 1, "oxRevision bumped");
    }
    // Every node replicates to every other.
    for (i, s) in servers.iter().enumerate() {
        let cn = format!("written-on-{}", NODES[i]);
        add(s, &format!("cn={cn},o=gluu"), &cn);
        for (j, other) in servers.iter().enumerate() {
            if i != j {
                clustermgr_tests::eventually_blocking(
                    &format!("{cn} on {}", NODES[j]),
                    Duration::from_secs(10),
                    || has(other, &format!("cn={cn},o=gluu")),
                );
            }
        }
    }
    // An unchanged cluster changes nothing.
    let plan_json = ctl.run(&["--json", "plan"]);
    let v: serde_json::Value = serde_json::from_slice(&plan_json.stdout).expect("plan --json");
    clustermgr_tests::schema::assert_valid("plan", &v);
    for node in v["nodes"].as_array().expect("nodes") {
        for e in node["entries"].as_array().expect("entries") {
            assert!(
                e["change"] == "unchanged" || e["change"] == "waiting",
                "{}: {} is {} on a second plan",
                node["node"],
                e["path"],
                e["change"]
            );
        }
    }
    // The replication password is nowhere in what was printed, kept or logged.
    let pw = build_record(&ctl)
        .replication_password
        .expect("a password was made");
    let mut seen = String::new();
    for out in [&o.stdout, &o.stderr, &plan.stdout, &plan_json.stdout] {
        seen.push_str(&String::from_utf8_lossy(out));
    }
    seen.push_str(&String::from_utf8_lossy(
        &ctl.run(&["--json", "history"]).stdout,
    ));
    for h in net.hosts() {
        for f in [
            "/var/log/clustermgr-agent.log",
            "/var/lib/clustermgr/exec-journal.jsonl",
        ] {
            seen.push_str(&std::fs::read_to_string(h.path(f)).unwrap_or_default());
        }
    }
    assert!(
        seen.contains("apply of revision"),
        "the agents' logs were read"
    );
    assert!(!seen.contains(&pw), "the replication password leaked");

    // With the shared cache: oxCacheConfiguration names the node's own tunnel and
    // carries the Redis password, encrypted with the node's key as Gluu stores it.
    let rev = revision(&servers[1]);
    ok(
        ctl.run(&["cluster", "set", "cache", "redis"]),
        "cluster set cache redis",
    );
    let o = ctl.run(&["apply", "--yes"]);
    ok(o.clone(), "apply with the shared cache");
    let redis_pw = build_record(&ctl)
        .redis_password
        .expect("a Redis password was made");
    let encrypted = clustermgr_agent::ldap::gluu_encode(redis_pw.as_bytes(), SALT).unwrap();
    for s in &servers {
        clustermgr_tests::eventually_blocking(
            "oxCacheConfiguration with Redis on every node",
            Duration::from_secs(10),
            || setting(s, "oxCacheConfiguration")["cacheProviderType"] == "REDIS",
        );
        let cache = setting(s, "oxCacheConfiguration");
        let redis = &cache["redisConfiguration"];
        assert_eq!(redis["servers"], "localhost:16379", "{cache}");
        assert_eq!(redis["redisProviderType"], "STANDALONE");
        assert_eq!(redis["password"], encrypted.as_str());
        assert_eq!(
            redis["defaultPutExpiration"], 60,
            "Gluu's other fields stay"
        );
    }
    assert!(revision(&servers[1]) > rev, "oxAuth told to reload");
    let plan = ctl.run(&["--json", "plan"]);
    for out in [&o.stdout, &o.stderr, &plan.stdout] {
        let text = String::from_utf8_lossy(out);
        assert!(!text.contains(&redis_pw) && !text.contains(&encrypted));
    }

    // A fourth Gluu host joins by the same path: it takes the cluster's directory and
    // replicates both ways, and every peer gains a consumer of it.
    net.add_host("gluu4");
    let h4 = net.host("gluu4");
    ok(
        ctl.run(&[
            "node",
            "add",
            "gluu4",
            "--ssh",
            &h4.ssh_target(),
            "--identity",
            &net.client_key().display().to_string(),
            "--known-hosts",
            &net.known_hosts().display().to_string(),
        ]),
        "node add gluu4",
    );
    h4.sh("mkdir -p /opt/gluu-server/etc/certs /opt/gluu-server/etc/gluu/conf && ln -sfn /opt/gluu-server/etc/certs /etc/certs");
    let s4 = Slapd::start_on(h4);
    add_suffix(&s4);
    add_gluu_tree(&s4, h4);
    add(&s4, "cn=own-4,o=gluu", "own-4");
    bind_agent(h4, &s4);
    servers.push(s4);
    ok(ctl.run(&["apply", "--yes"]), "apply with gluu4");
    assert!(
        has(&servers[3], "cn=written-on-gluu1,o=gluu"),
        "gluu4 has the cluster's data"
    );
    assert!(
        !has(&servers[3], "cn=own-4,o=gluu"),
        "gluu4's own directory was replaced"
    );
    assert!(!has(&servers[0], "cn=own-4,o=gluu"), "never the reverse");
    add(&servers[3], "cn=from-gluu4,o=gluu", "from-gluu4");
    add(&servers[0], "cn=to-gluu4,o=gluu", "to-gluu4");
    for (i, s) in servers.iter().enumerate() {
        clustermgr_tests::eventually_blocking(
            &format!("both ways with gluu4, on node {}", i + 1),
            Duration::from_secs(10),
            || has(s, "cn=from-gluu4,o=gluu") && has(s, "cn=to-gluu4,o=gluu"),
        );
    }
    for (i, s) in servers.iter().enumerate() {
        clustermgr_tests::eventually_blocking(
            &format!("node {} consuming from its three peers", i + 1),
            Duration::from_secs(10),
            || live_consumers(s) == 3,
        );
    }
    // It leaves by `node remove`: every remaining peer stops replicating from it.
    let o = ctl.run(&["node", "remove", "gluu4", "--yes"]);
    let said = ok(o, "node remove gluu4");
    assert!(said.contains("no longer replicate from it"), "{said}");
    for (i, s) in servers.iter().take(3).enumerate() {
        clustermgr_tests::eventually_blocking(
            &format!("node {} consuming from its two peers", i + 1),
            Duration::from_secs(10),
            || live_consumers(s) == 2,
        );
    }
    add(
        &servers[1],
        "cn=after-gluu4-left,o=gluu",
        "after-gluu4-left",
    );
    for s in [&servers[0], &servers[2]] {
        clustermgr_tests::eventually_blocking(
            "replication among the three after gluu4 left",
            Duration::from_secs(10),
            || has(s, "cn=after-gluu4-left,o=gluu"),
        );
    }
    // csync2, nginx and Gluu's server lists still name gluu4 until the next apply,
    // which leaves every LDAP entry as it is but those lists.
    ok(ctl.run(&["apply", "--yes"]), "apply after gluu4 left");
    let plan = ctl.run(&["--json", "plan"]);
    let v: serde_json::Value = serde_json::from_slice(&plan.stdout).expect("plan --json");
    for node in v["nodes"].as_array().expect("nodes") {
        for e in node["entries"].as_array().expect("entries") {
            assert!(
                e["change"] == "unchanged" || e["change"] == "waiting",
                "after the removal {}: {} is {}",
                node["node"],
                e["path"],
                e["change"]
            );
        }
    }
    for s in servers.iter().take(3) {
        let idp = setting(s, "oxIDPAuthentication");
        assert_eq!(
            idp["config"]["servers"].as_array().map(Vec::len),
            Some(4),
            "{idp}"
        );
    }
}

/// What the controller made to build the cluster, read from its store (no command is
/// running, so the store is free).
fn build_record(ctl: &Controller) -> clustermgr::store::BuildRecord {
    clustermgr::store::Store::open(
        &ctl.home.join("inventory.redb"),
        &ctl.home.join("serve.sock"),
    )
    .and_then(|s| s.build())
    .expect("the store's build record")
}

/// How many of the server's syncrepl consumers are connected and following changes.
fn live_consumers(s: &Slapd) -> usize {
    let now = || 0;
    clustermgr_agent::health::ldap::state(&mut connect(s), "o=gluu", now)
        .map(|st| {
            st.consumers
                .iter()
                .filter(|c| c.connected && c.phase == "Persist")
                .count()
        })
        .unwrap_or(0)
}
