//! OpenLDAP replication of the Gluu nodes' directory as desired state: each node's
//! serverID, the syncprov overlay on the suffix, the replication account, and one
//! consumer per peer (multi-provider), with keepalive and the peers' certificates.
//!
//! A node replicates from the nodes that hold the cluster's data (`joined`: the primary
//! when replication began, then each node whose consumers caught up). A node not yet
//! among them gets consumers of those only, with `join` set: its own directory is
//! emptied first and filled from them, never the reverse. Once it caught up the
//! controller counts it in, and the next round gives every peer a consumer of it.

use clustermgr_protocol::changeset::{
    Content, Entry, LdapAttr, LdapObject, LdapValue, OPENDJ_PATH, OpenDjReplication, Scope,
    Validator,
};

/// The replicated suffix.
pub const SUFFIX: &str = "o=gluu";
/// Gluu's OpenLDAP LDAPS port, where consumers reach their providers.
pub const LDAPS_PORT: u16 = 1636;
/// The replication account, under the suffix so it replicates with the data.
pub const REPLICATOR_DN: &str = "cn=clustermgr-replicator,o=gluu";
/// The peers' LDAP certificates, as consumers verify their providers with them: in the
/// container, where Gluu keeps its own (`/etc/certs`).
pub const PEERS_PEM: &str = "/etc/certs/clustermgr-ldap-peers.pem";
/// How long an apply waits for a node's consumers to catch up.
pub const CATCH_UP_MS: u64 = 30_000;

/// A Gluu node as replication sees it.
#[derive(Clone, Debug)]
pub struct Member {
    /// Its name.
    pub name: String,
    /// The address its peers reach its LDAPS port at.
    pub ip: String,
    /// Its LDAPS port ([`LDAPS_PORT`] on a Gluu node).
    pub port: u16,
    /// Its serverID (also the rid of every consumer of it).
    pub server_id: u16,
    /// Its LDAP server's certificate, PEM, as its agent reported it.
    pub cert_pem: Option<String>,
}

/// What every node's replication entries are made of.
#[derive(Clone, Debug)]
pub struct Inputs<'a> {
    /// Every Gluu node, sorted by name.
    pub members: &'a [Member],
    /// The nodes that hold the cluster's data.
    pub joined: &'a [String],
    /// The nodes leaving: no consumers of their own, and no peer's of them.
    pub leaving: &'a [String],
    /// The replication account's password.
    pub password: &'a str,
    /// Where the entries' files live (the Gluu container).
    pub scope: Scope,
    /// [`PEERS_PEM`] as slapd sees it (in the container, the same path).
    pub peers_pem_seen: &'a str,
    /// How long an apply waits for the consumers.
    pub catch_up_ms: u64,
}

fn ldap(scope: &Scope, a: LdapAttr, secret: bool, validate: Option<Validator>) -> Entry {
    Entry {
        path: a.path(),
        scope: scope.clone(),
        content: Content::Ldap(Box::new(a)),
        secret,
        validate,
        on_change: Vec::new(),
    }
}

fn attr(object: LdapObject, attribute: &str, value: LdapValue) -> LdapAttr {
    LdapAttr {
        object,
        attribute: attribute.into(),
        value,
        create: Vec::new(),
        redact: Vec::new(),
        bump_revision: None,
        join: false,
        encrypt: false,
    }
}

fn database(child: Option<&str>) -> LdapObject {
    LdapObject::Database {
        suffix: SUFFIX.into(),
        child: child.map(str::to_string),
    }
}

/// `{SSHA}` of `password`, with a salt derived from it: the same password gives the
/// same value, so an unchanged account plans as unchanged (the password is random and
/// long, so a fixed salt costs nothing).
pub fn ssha(password: &str) -> String {
    use base64::Engine;
    let salt = &clustermgr_protocol::identity::sha256_hex(
        format!("clustermgr replicator salt {password}").as_bytes(),
    )
    .into_bytes()[..8];
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY);
    ctx.update(password.as_bytes());
    ctx.update(salt);
    let mut raw = ctx.finish().as_ref().to_vec();
    raw.extend_from_slice(salt);
    format!(
        "{{SSHA}}{}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    )
}

/// One consumer of `provider`.
fn consumer(provider: &Member, inputs: &Inputs) -> String {
    format!(
        "rid={:03} provider=ldaps://{}:{} bindmethod=simple binddn=\"{REPLICATOR_DN}\" credentials={} searchbase=\"{SUFFIX}\" type=refreshAndPersist retry=\"1 10 5 +\" network-timeout=5 keepalive=60:3:5 tls_reqcert=demand tls_cacert={}",
        provider.server_id,
        if provider.ip.contains(':') {
            format!("[{}]", provider.ip)
        } else {
            provider.ip.clone()
        },
        provider.port,
        inputs.password,
        inputs.peers_pem_seen,
    )
}

/// The base DNs OpenDJ replicates in a Gluu cluster.
pub const OPENDJ_BASE_DNS: &[&str] = &["o=gluu", "o=site"];

/// Whether Gluu `version` runs OpenDJ (3.1.4 and later, 4.x) rather than OpenLDAP.
pub fn runs_opendj(version: Option<&str>) -> bool {
    let Some(v) = version else { return false };
    let n: Vec<u32> = v
        .split(['.', '-', '_'])
        .map_while(|p| p.parse().ok())
        .collect();
    match n.as_slice() {
        [major, ..] if *major >= 4 => true,
        [3, 1, patch, ..] => *patch >= 4,
        _ => false,
    }
}

/// `node`'s OpenDJ replication entry: replicate with the nodes holding the cluster's
/// data; a node not among them is initialized from the first of them.
pub fn opendj_entry(inputs: &Inputs, node: &str) -> Result<Entry, String> {
    let me = inputs
        .members
        .iter()
        .find(|m| m.name == node)
        .ok_or_else(|| format!("{node} is not a Gluu node"))?;
    let joined = inputs.joined.iter().any(|j| j == node);
    let leave = inputs.leaving.iter().any(|l| l == node);
    let peers: Vec<String> = inputs
        .joined
        .iter()
        .filter(|j| *j != node && !leave)
        .filter_map(|j| inputs.members.iter().find(|m| &m.name == j))
        .map(|m| m.ip.clone())
        .collect();
    Ok(Entry {
        path: OPENDJ_PATH.into(),
        scope: inputs.scope.clone(),
        content: Content::OpenDj(Box::new(OpenDjReplication {
            host: me.ip.clone(),
            peers,
            base_dns: OPENDJ_BASE_DNS.iter().map(|b| b.to_string()).collect(),
            admin_password: inputs.password.to_string(),
            join: !joined && !leave,
            leave,
        })),
        // Not secret although it carries the replication administrator's password: the
        // agent's plan says which pairs it enables and never shows the password, and
        // the plan should show that (a secret entry shows hashes only).
        secret: false,
        validate: None,
        on_change: Vec::new(),
    })
}

/// `node`'s replication entries, or what they wait for.
pub fn node_entries(inputs: &Inputs, node: &str) -> Result<Vec<Entry>, String> {
    let me = inputs
        .members
        .iter()
        .find(|m| m.name == node)
        .ok_or_else(|| format!("{node} is not a Gluu node"))?;
    let mut pems = String::new();
    for m in inputs.members {
        match &m.cert_pem {
            Some(p) => pems.push_str(p.trim_end()),
            None => {
                return Err(format!(
                    "LDAP replication waits for {}'s LDAP server certificate (its agent reports it once slapd's certificate file is readable: [ldap] cert_file in agent.toml, or Gluu's etc/certs/openldap.crt)",
                    m.name
                ));
            }
        }
        pems.push('\n');
    }
    let scope = &inputs.scope;
    let joined = inputs.joined.iter().any(|j| j == node);
    let leave = inputs.leaving.iter().any(|l| l == node);
    // A joined node replicates from every other joined node; a joining one from the
    // seed alone while it copies the directory (one full refresh, not one per peer),
    // and from the others once it is counted in; a leaving one from none.
    let providers: Vec<&Member> = inputs
        .members
        .iter()
        .filter(|m| {
            m.name != node
                && !leave
                && if joined {
                    inputs.joined.contains(&m.name)
                } else {
                    inputs.joined.first() == Some(&m.name)
                }
        })
        .collect();
    let consumers: Vec<String> = providers.iter().map(|p| consumer(p, inputs)).collect();
    let mut out = vec![Entry {
        path: PEERS_PEM.into(),
        scope: scope.clone(),
        content: Content::File {
            bytes: pems.into_bytes(),
            mode: 0o644,
            owner: Some("root".into()),
            group: Some("root".into()),
        },
        secret: false,
        validate: None,
        on_change: Vec::new(),
    }];
    out.push(ldap(
        scope,
        attr(
            LdapObject::Config {
                dn: "cn=config".into(),
            },
            "olcServerID",
            LdapValue::Exactly(vec![me.server_id.to_string()]),
        ),
        false,
        None,
    ));
    out.push(ldap(
        scope,
        attr(
            LdapObject::Config {
                dn: "cn=module{0},cn=config".into(),
            },
            "olcModuleLoad",
            LdapValue::Include(vec!["syncprov".into()]),
        ),
        false,
        None,
    ));
    let mut overlay = attr(
        database(Some("olcOverlay=syncprov")),
        "olcSpCheckpoint",
        LdapValue::Exactly(vec!["100 10".into()]),
    );
    overlay.create = vec![
        (
            "objectClass".into(),
            vec!["olcOverlayConfig".into(), "olcSyncProvConfig".into()],
        ),
        ("olcOverlay".into(), vec!["syncprov".into()]),
    ];
    out.push(ldap(scope, overlay, false, None));
    out.push(ldap(
        scope,
        attr(
            database(None),
            "olcLimits",
            LdapValue::Include(vec![format!(
                "dn.exact=\"{REPLICATOR_DN}\" time=unlimited size=unlimited"
            )]),
        ),
        false,
        None,
    ));
    if joined {
        let mut account = attr(
            LdapObject::Data {
                dn: REPLICATOR_DN.into(),
            },
            "userPassword",
            LdapValue::Exactly(vec![ssha(inputs.password)]),
        );
        account.create = vec![
            (
                "objectClass".into(),
                vec!["organizationalRole".into(), "simpleSecurityObject".into()],
            ),
            ("cn".into(), vec!["clustermgr-replicator".into()]),
        ];
        out.push(ldap(scope, account, true, None));
    }
    let mut syncrepl = attr(
        database(None),
        "olcSyncrepl",
        LdapValue::Exactly(consumers.clone()),
    );
    syncrepl.redact = vec!["credentials".into()];
    syncrepl.join = !joined && !leave;
    let syncrepl = ldap(
        scope,
        syncrepl,
        false,
        Some(Validator::Replication {
            suffix: SUFFIX.into(),
            deadline_ms: inputs.catch_up_ms,
        }),
    );
    let multi = ldap(
        scope,
        attr(
            database(None),
            "olcMultiProvider",
            LdapValue::Exactly(if consumers.is_empty() {
                Vec::new()
            } else {
                vec!["TRUE".into()]
            }),
        ),
        false,
        None,
    );
    // slapd takes multi-provider only from a database that has consumers.
    if consumers.is_empty() {
        out.extend([multi, syncrepl]);
    } else {
        out.extend([syncrepl, multi]);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members() -> Vec<Member> {
        (1..=3)
            .map(|i| Member {
                name: format!("gluu{i}"),
                ip: format!("10.0.0.{i}"),
                port: LDAPS_PORT,
                server_id: i,
                cert_pem: Some(format!(
                    "-----BEGIN CERTIFICATE-----\nMII{i}\n-----END CERTIFICATE-----\n"
                )),
            })
            .collect()
    }

    fn inputs<'a>(members: &'a [Member], joined: &'a [String]) -> Inputs<'a> {
        Inputs {
            members,
            joined,
            leaving: &[],
            password: "pw0123456789",
            scope: Scope::Container {
                root: "/opt/gluu-server".into(),
            },
            peers_pem_seen: PEERS_PEM,
            catch_up_ms: CATCH_UP_MS,
        }
    }

    fn syncrepl(entries: &[Entry]) -> &LdapAttr {
        entries
            .iter()
            .find_map(|e| match &e.content {
                Content::Ldap(a) if a.attribute == "olcSyncrepl" => Some(a.as_ref()),
                _ => None,
            })
            .expect("a syncrepl entry")
    }

    #[test]
    fn a_joining_node_replicates_from_the_joined_only_and_empties_itself_first() {
        let m = members();
        let joined = vec!["gluu1".to_string()];
        let i = inputs(&m, &joined);
        let seed = node_entries(&i, "gluu1").unwrap();
        let s = syncrepl(&seed);
        assert_eq!(
            s.value,
            LdapValue::Exactly(Vec::new()),
            "the seed has no provider yet"
        );
        assert!(!s.join);
        assert!(
            seed.iter().any(|e| e.path.contains(REPLICATOR_DN)),
            "the seed holds the account"
        );
        let joining = node_entries(&i, "gluu2").unwrap();
        let s = syncrepl(&joining);
        assert!(
            s.join,
            "a joining node's directory is replaced by the cluster's"
        );
        let LdapValue::Exactly(v) = &s.value else {
            panic!()
        };
        assert_eq!(v.len(), 1);
        assert!(
            v[0].starts_with("rid=001 provider=ldaps://10.0.0.1:1636 "),
            "{}",
            v[0]
        );
        assert!(v[0].contains("keepalive="), "a cut link must be seen");
        assert!(
            !joining.iter().any(|e| e.path.contains(REPLICATOR_DN)),
            "the account arrives with the cluster's data"
        );
    }

    #[test]
    fn joined_nodes_replicate_from_every_other_and_the_account_is_a_hashed_secret() {
        let m = members();
        let joined: Vec<String> = m.iter().map(|m| m.name.clone()).collect();
        let i = inputs(&m, &joined);
        let e = node_entries(&i, "gluu2").unwrap();
        let s = syncrepl(&e);
        assert!(!s.join);
        let LdapValue::Exactly(v) = &s.value else {
            panic!()
        };
        let rids: Vec<&str> = v.iter().map(|c| &c[..7]).collect();
        assert_eq!(rids, ["rid=001", "rid=003"]);
        assert_eq!(s.redact, ["credentials"]);
        let account = e.iter().find(|e| e.path.contains(REPLICATOR_DN)).unwrap();
        assert!(account.secret);
        let Content::Ldap(a) = &account.content else {
            panic!()
        };
        let LdapValue::Exactly(pw) = &a.value else {
            panic!()
        };
        assert!(pw[0].starts_with("{SSHA}") && !pw[0].contains("pw0123456789"));
        assert_eq!(ssha("x"), ssha("x"), "the same password plans as unchanged");
    }

    #[test]
    fn the_gluu_version_says_which_directory_server_replicates() {
        assert!(runs_opendj(Some("4.2.3")));
        assert!(runs_opendj(Some("3.1.4")));
        assert!(runs_opendj(Some("3.1.6-sp1")));
        assert!(!runs_opendj(Some("3.1.3")));
        assert!(!runs_opendj(Some("3.0.2")));
        assert!(!runs_opendj(None));
    }

    #[test]
    fn an_opendj_node_replicates_with_the_joined_and_a_new_one_is_initialized() {
        let m = members();
        let joined = vec!["gluu1".to_string()];
        let i = inputs(&m, &joined);
        let e = opendj_entry(&i, "gluu2").unwrap();
        let leaving = vec!["gluu2".to_string()];
        let gone = Inputs {
            leaving: &leaving,
            ..inputs(&m, &joined)
        };
        let Content::OpenDj(l) = &opendj_entry(&gone, "gluu2").unwrap().content else {
            panic!()
        };
        assert!(
            l.leave && !l.join && l.peers.is_empty(),
            "a leaving node disables"
        );
        assert!(
            !format!("{e:?}").contains("pw0123456789"),
            "its Debug leaves the admin password out"
        );
        let Content::OpenDj(o) = &e.content else {
            panic!()
        };
        assert_eq!(o.peers, ["10.0.0.1"]);
        assert!(o.join);
        let Content::OpenDj(seed) = &opendj_entry(&i, "gluu1").unwrap().content else {
            panic!()
        };
        assert!(
            seed.peers.is_empty() && !seed.join,
            "the seed is never initialized"
        );
    }

    #[test]
    fn replication_waits_for_every_certificate() {
        let mut m = members();
        m[2].cert_pem = None;
        let joined = vec!["gluu1".to_string()];
        let err = node_entries(&inputs(&m, &joined), "gluu1").unwrap_err();
        assert!(err.contains("gluu3's LDAP server certificate"), "{err}");
    }
}
