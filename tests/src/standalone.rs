//! Standalone Gluu nodes for the build tests and benchmark: three harness hosts
//! (more can join), each with its own slapd holding a minimal Gluu tree of its own
//! (4.x layout: `ou=configuration` with Gluu's cache and authentication documents as
//! Gluu's setup writes them, `ou=oxauth` at revision 1 with oxAuth's settings,
//! `ou=tokens`), the container's salt, and the
//! agent bound to its slapd; and readers of what replication and `apply` made.

use std::time::Duration;

use clustermgr_agent::ldap::client::{Connection, Scope, Target};

use crate::Controller;
use crate::gluu::bind_agent;
use crate::netns::{Host, Net};
use crate::slapd::{ROOT_DN, Slapd};

/// A connection to `s` bound as its administrator.
pub fn connect(s: &Slapd) -> Connection {
    let target = Target {
        addr: format!("{}:{}", s.ip, s.ldap_port),
        tls: None,
    };
    let mut c = Connection::open(&target, Duration::from_secs(5)).expect("connect");
    c.bind(ROOT_DN, s.root_pw.as_bytes()).expect("bind");
    c
}

/// Adds an `organizationalRole` entry to `s`.
pub fn add(s: &Slapd, dn: &str, cn: &str) {
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

/// Whether `s` holds `dn`.
pub fn has(s: &Slapd, dn: &str) -> bool {
    connect(s)
        .search(dn, Scope::Base, "(objectClass=*)", &["1.1"])
        .is_ok_and(|e| !e.is_empty())
}

/// Three standalone Gluu hosts, each its slapd with a directory of its own, and the
/// agents bound to them.
pub fn standalone() -> (Net, Controller, Vec<Slapd>) {
    let (net, ctl) = crate::gluu::hosts();
    let mut servers = Vec::new();
    for (i, h) in net.hosts().iter().enumerate() {
        // slapd runs on the host here but chrooted in a Gluu container: it reads the
        // container's /etc/certs, where apply writes the peers' certificates.
        servers.push(gluu_node(h, i + 1));
    }
    (net, ctl, servers)
}

/// `h` as a standalone Gluu node: its slapd with a directory of its own (with
/// `cn=own-I,o=gluu`), the container's salt and certificate directory, and its agent
/// bound to the slapd.
pub fn gluu_node(h: &Host, i: usize) -> Slapd {
    // slapd runs on the host here but chrooted in a Gluu container: it reads the
    // container's /etc/certs, where apply writes the peers' certificates.
    h.sh("mkdir -p /opt/gluu-server/etc/certs /opt/gluu-server/etc/gluu/conf && ln -sfn /opt/gluu-server/etc/certs /etc/certs");
    let s = Slapd::start_on(h);
    add_suffix(&s);
    add_gluu_tree(&s, h);
    add(&s, &format!("cn=own-{i},o=gluu"), &format!("own-{i}"));
    bind_agent(h, &s);
    s
}

/// A new harness host `name` bootstrapped into the cluster as a standalone Gluu node
/// (number `i`).
pub fn join(net: &mut Net, ctl: &Controller, name: &str, i: usize) -> Slapd {
    net.add_host(name);
    let h = net.host(name);
    crate::succeeded(
        ctl.run(&[
            "node",
            "add",
            name,
            "--ssh",
            &h.ssh_target(),
            "--identity",
            &net.client_key().display().to_string(),
            "--known-hosts",
            &net.known_hosts().display().to_string(),
        ]),
        "node add",
    );
    gluu_node(h, i)
}

/// The key this test's Gluu containers encrypt passwords with.
pub const SALT: &str = "0123456789abcdefghijklmn";

/// The keys Gluu's setup published on a node (one, abridged), before the cluster's.
pub const SETUP_WEB_KEYS: &str = r#"{"keys": [{"kid": "setup-key_sig_rs256", "kty": "RSA", "use": "sig", "alg": "RS256", "crv": "", "exp": 1, "n": "AQAB", "e": "AQAB", "x5c": []}]}"#;

/// A standalone Gluu node's own settings, as Gluu's setup writes them (4.x layout):
/// the cache in memory, its LDAP server alone, revision 1; and the container's salt.
pub fn add_gluu_tree(s: &Slapd, h: &Host) {
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
            (
                "oxAuthConfDynamic",
                vec![r#"{"issuer": "https://gluu.example", "cleanServiceInterval": 60, "cleanServiceBatchChunkSize": 100, "keyRegenerationEnabled": true, "keyRegenerationInterval": 48, "webKeysStorage": "keystore", "keyStoreFile": "/etc/certs/oxauth-keys.jks", "keyStoreSecret": "setup-secret"}"#.into()],
            ),
            (
                "oxAuthConfWebKeys",
                vec![SETUP_WEB_KEYS.into()],
            ),
        ],
    )
    .expect("ou=oxauth");
    c.add(
        "ou=tokens,o=gluu",
        &[
            ("objectClass", vec!["organizationalUnit".into()]),
            ("ou", vec!["tokens".into()]),
        ],
    )
    .expect("ou=tokens");
}

/// Adds a token to `s` that oxAuth marked deletable and that expired a minute ago.
pub fn add_expired_token(s: &Slapd, code: &str) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64;
    let exp = clustermgr_protocol::health::generalized_time(now - 60_000);
    connect(s)
        .add(
            &format!("tknCde={code},ou=tokens,o=gluu"),
            &[
                ("objectClass", vec!["token".into()]),
                ("tknCde", vec![code.into()]),
                ("exp", vec![exp]),
                ("del", vec!["TRUE".into()]),
            ],
        )
        .expect("the token");
}

/// A JSON attribute of `ou=configuration,o=gluu` on `s`.
pub fn setting(s: &Slapd, attribute: &str) -> serde_json::Value {
    setting_of(s, "ou=configuration,o=gluu", attribute)
}

/// A JSON attribute of `dn` on `s`.
pub fn setting_of(s: &Slapd, dn: &str, attribute: &str) -> serde_json::Value {
    let found = connect(s)
        .search(dn, Scope::Base, "(objectClass=*)", &[attribute])
        .expect(dn);
    let text = found[0].first(attribute).expect("the attribute");
    serde_json::from_str(&text).expect("JSON")
}

/// `oxRevision` of `ou=oxauth,ou=configuration,o=gluu` on `s`.
pub fn revision(s: &Slapd) -> i64 {
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

/// The suffix entry `o=gluu`.
pub fn add_suffix(s: &Slapd) {
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

/// What the controller made to build the cluster, read from its store (no command is
/// running, so the store is free).
pub fn build_record(ctl: &Controller) -> clustermgr::store::BuildRecord {
    clustermgr::store::Store::open(
        &ctl.home.join("inventory.redb"),
        &ctl.home.join("serve.sock"),
    )
    .and_then(|s| s.build())
    .expect("the store's build record")
}

/// How many of the server's syncrepl consumers are connected and following changes.
pub fn live_consumers(s: &Slapd) -> usize {
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
