//! The LDAP facts of this node: which server, the suffix's `contextCSN` per serverID,
//! the syncrepl consumers (OpenLDAP) or replication domains (OpenDJ) from the monitor,
//! and every node's heartbeat entry; and the writing of this node's heartbeat.

use std::time::Instant;

use clustermgr_protocol::health::{
    Consumer, Csn, Heartbeat, LdapServer, LdapState, OpenDjReplica, generalized_time_ms,
};
use clustermgr_protocol::telemetry::Sample;

use crate::ldap::client::{self, Connection, Entry, Failure, Scope};

/// The container of the heartbeat entries, under the suffix.
const HEARTBEAT_OU: &str = "clustermgr-heartbeat";

fn heartbeat_base(suffix: &str) -> String {
    format!("ou={HEARTBEAT_OU},{suffix}")
}

/// Reads this node's LDAP facts over `c` (bound). `now` gives this node's clock.
pub fn state(c: &mut Connection, suffix: &str, now: impl Fn() -> i64) -> Result<LdapState, String> {
    let t0 = Instant::now();
    let server = server(c)?;
    let csns = match c.search(suffix, Scope::Base, "(objectClass=*)", &["contextCSN"]) {
        Ok(e) => e
            .first()
            .map(|e| {
                e.values("contextCSN")
                    .iter()
                    .filter_map(|v| Csn::parse(v))
                    .collect()
            })
            .unwrap_or_default(),
        Err(Failure::Result {
            code: client::NO_SUCH_OBJECT,
            ..
        }) => Vec::new(),
        Err(e) => return Err(format!("reading {suffix}: {e}")),
    };
    let consumers = match server {
        LdapServer::OpenLdap => monitor(c, "(objectClass=olmSyncReplInstance)")?
            .iter()
            .map(consumer_of)
            .collect(),
        _ => Vec::new(),
    };
    let replicas = match server {
        LdapServer::OpenDj => monitor(c, "(&(missing-changes=*)(server-id=*))")?
            .iter()
            .map(replica_of)
            .collect(),
        _ => Vec::new(),
    };
    let heartbeats = match c.search(
        &heartbeat_base(suffix),
        Scope::One,
        "(objectClass=organizationalRole)",
        &["cn", "description"],
    ) {
        Ok(entries) => {
            let read_ms = now();
            entries
                .iter()
                .filter_map(|e| {
                    Some(Heartbeat {
                        node: e.first("cn")?,
                        written_ms: e.first("description")?.trim().parse().ok()?,
                        read_ms,
                    })
                })
                .collect()
        }
        Err(Failure::Result {
            code: client::NO_SUCH_OBJECT,
            ..
        }) => Vec::new(),
        Err(e) => return Err(format!("reading the heartbeats: {e}")),
    };
    Ok(LdapState {
        server,
        took_ms: t0.elapsed().as_millis() as u64,
        csns,
        consumers,
        replicas,
        heartbeats,
        heartbeat_error: None,
    })
}

/// The monitor's entries matching `filter`; none when the monitor is not readable
/// to this bind (no monitor database, or no access): the report then says so by
/// having none.
fn monitor(c: &mut Connection, filter: &str) -> Result<Vec<Entry>, String> {
    match c.search("cn=monitor", Scope::Sub, filter, &["*", "+"]) {
        Ok(e) => Ok(e),
        Err(Failure::Result {
            code: client::NO_SUCH_OBJECT | 50,
            ..
        }) => Ok(Vec::new()),
        Err(e) => Err(format!("reading cn=monitor: {e}")),
    }
}

/// The server's kind, from its root DSE.
pub fn server(c: &mut Connection) -> Result<LdapServer, String> {
    let root = c
        .search(
            "",
            Scope::Base,
            "(objectClass=*)",
            &["vendorName", "vendorVersion", "configContext"],
        )
        .map_err(|e| format!("reading the root DSE: {e}"))?;
    Ok(root.first().map_or(LdapServer::Other, server_of))
}

/// OpenDJ's per-handler request counters, and the operation each counts.
const OPENDJ_COUNTERS: &[(&str, &str)] = &[
    ("bindRequests", "bind"),
    ("searchRequests", "search"),
    ("addRequests", "add"),
    ("modifyRequests", "modify"),
    ("deleteRequests", "delete"),
    ("modifyDNRequests", "modrdn"),
    ("compareRequests", "compare"),
];

/// The server's operation counters as metrics: `ldap_operations_total{op}` (completed
/// operations) and, for OpenLDAP, `ldap_connections_total` and `ldap_connections`.
/// Empty when the monitor is not readable to this bind.
pub fn counters(c: &mut Connection, server: LdapServer) -> Result<Vec<Sample>, String> {
    let entries = match server {
        LdapServer::OpenLdap => monitor(c, "(|(monitorOpCompleted=*)(monitorCounter=*))")?,
        LdapServer::OpenDj => monitor(c, "(searchRequests=*)")?,
        LdapServer::Other => Vec::new(),
    };
    Ok(counters_of(&entries, server))
}

/// [`counters`] from the monitor entries read.
pub fn counters_of(entries: &[Entry], server: LdapServer) -> Vec<Sample> {
    let sample = |name: &str, op: Option<&str>, value: f64| Sample {
        name: name.into(),
        labels: op
            .map(|o| vec![("op".to_string(), o.to_string())])
            .unwrap_or_default(),
        value,
    };
    let mut out = Vec::new();
    match server {
        LdapServer::OpenLdap => {
            for e in entries {
                let dn = e.dn.to_ascii_lowercase();
                let cn = e.first("cn").unwrap_or_default().to_ascii_lowercase();
                let num = |a: &str| e.first(a).and_then(|v| v.trim().parse::<f64>().ok());
                if dn.ends_with(",cn=operations,cn=monitor") {
                    if let Some(v) = num("monitorOpCompleted") {
                        out.push(sample("ldap_operations_total", Some(&cn), v));
                    }
                } else if dn == "cn=total,cn=connections,cn=monitor" {
                    if let Some(v) = num("monitorCounter") {
                        out.push(sample("ldap_connections_total", None, v));
                    }
                } else if dn == "cn=current,cn=connections,cn=monitor"
                    && let Some(v) = num("monitorCounter")
                {
                    out.push(sample("ldap_connections", None, v));
                }
            }
        }
        LdapServer::OpenDj => {
            // Summed over the connection handlers (LDAP and LDAPS).
            let mut sums = vec![0f64; OPENDJ_COUNTERS.len()];
            let mut seen = false;
            for e in entries {
                seen = true;
                for (i, (attr, _)) in OPENDJ_COUNTERS.iter().enumerate() {
                    sums[i] += e
                        .first(attr)
                        .and_then(|v| v.trim().parse::<f64>().ok())
                        .unwrap_or(0.0);
                }
            }
            if seen {
                for (i, (_, op)) in OPENDJ_COUNTERS.iter().enumerate() {
                    out.push(sample("ldap_operations_total", Some(op), sums[i]));
                }
            }
        }
        LdapServer::Other => {}
    }
    out
}

/// Which server the root DSE describes.
pub fn server_of(root: &Entry) -> LdapServer {
    let vendor = root
        .first("vendorName")
        .unwrap_or_default()
        .to_ascii_lowercase();
    let version = root
        .first("vendorVersion")
        .unwrap_or_default()
        .to_ascii_lowercase();
    if ["opendj", "forgerock", "wren", "sun microsystems", "gluu"]
        .iter()
        .any(|v| vendor.contains(v) || version.contains(v))
    {
        LdapServer::OpenDj
    } else if vendor.contains("openldap") || root.first("configContext").is_some() {
        LdapServer::OpenLdap
    } else {
        LdapServer::Other
    }
}

/// A consumer from its `olmSyncReplInstance` entry.
pub fn consumer_of(e: &Entry) -> Consumer {
    let time = |a: &str| {
        e.first(a)
            .and_then(|v| generalized_time_ms(&v))
            .filter(|t| *t > 0)
    };
    Consumer {
        name: e.first("cn").unwrap_or_else(|| e.dn.clone()),
        provider: e.first("olmSRProviderURIList").unwrap_or_default(),
        connected: e.first("olmSRConnection").is_some_and(|v| !v.is_empty()),
        phase: e.first("olmSRSyncPhase").unwrap_or_default(),
        last_contact_ms: time("olmSRLastContact"),
        next_connect_ms: time("olmSRNextConnect"),
    }
}

/// An OpenDJ replication domain from its monitor entry.
pub fn replica_of(e: &Entry) -> OpenDjReplica {
    let num = |a: &str| e.first(a).and_then(|v| v.trim().parse::<i64>().ok());
    OpenDjReplica {
        dn: e.dn.clone(),
        domain: e.first("domain-name").unwrap_or_default(),
        server_id: e.first("server-id").unwrap_or_default(),
        missing_changes: num("missing-changes"),
        approximate_delay_ms: num("approximate-delay"),
        oldest_unsynced_ms: num("approx-older-change-not-synchronized-millis"),
        generation_id: e.first("generation-id"),
        connected_to: e.first("connected-to").filter(|v| !v.is_empty()),
    }
}

/// Writes this node's heartbeat: `cn=NODE,ou=clustermgr-heartbeat,SUFFIX` with the
/// time in `description`, making the container and the entry the first time.
pub fn write_heartbeat(
    c: &mut Connection,
    suffix: &str,
    node: &str,
    now_ms: i64,
) -> Result<(), String> {
    let base = heartbeat_base(suffix);
    let dn = format!("cn={},{base}", dn_value(node));
    let value = vec![now_ms.to_string()];
    let fail = |e: Failure| format!("writing the heartbeat {dn}: {e}");
    match c.replace(&dn, &[("description", value.clone())]) {
        Ok(()) => return Ok(()),
        Err(Failure::Result {
            code: client::NO_SUCH_OBJECT,
            ..
        }) => {}
        Err(e) => return Err(fail(e)),
    }
    // Another node may make the container at the same moment: that is fine.
    match c.add(
        &base,
        &[
            ("objectClass", vec!["organizationalUnit".into()]),
            ("ou", vec![HEARTBEAT_OU.into()]),
        ],
    ) {
        Ok(())
        | Err(Failure::Result {
            code: client::ALREADY_EXISTS,
            ..
        }) => {}
        Err(e) => return Err(fail(e)),
    }
    c.add(
        &dn,
        &[
            ("objectClass", vec!["organizationalRole".into()]),
            ("cn", vec![node.into()]),
            ("description", value),
        ],
    )
    .map_err(fail)
}

/// A DN attribute value with RFC 4514's specials escaped (node names are plain, but a
/// configured name is not ours to trust).
fn dn_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for (i, ch) in v.chars().enumerate() {
        let special = matches!(ch, ',' | '+' | '"' | '\\' | '<' | '>' | ';' | '=')
            || (i == 0 && (ch == '#' || ch == ' '))
            || (i == v.chars().count() - 1 && ch == ' ');
        if special {
            out.push('\\');
        }
        out.push(ch);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(dn: &str, attrs: &[(&str, &str)]) -> Entry {
        Entry {
            dn: dn.into(),
            attrs: attrs
                .iter()
                .map(|(k, v)| (k.to_string(), vec![v.as_bytes().to_vec()]))
                .collect(),
        }
    }

    #[test]
    fn root_dses_tell_the_server() {
        assert_eq!(
            server_of(&entry("", &[("configContext", "cn=config")])),
            LdapServer::OpenLdap
        );
        assert_eq!(
            server_of(&entry(
                "",
                &[
                    ("vendorName", "ForgeRock AS."),
                    ("vendorVersion", "OpenDJ 3.0.1-gluu")
                ]
            )),
            LdapServer::OpenDj
        );
        assert_eq!(server_of(&entry("", &[])), LdapServer::Other);
    }

    #[test]
    fn an_opendj_replication_monitor_entry_reads_as_its_documented_attributes() {
        // Written from OpenDJ's documented replication monitor attributes, as Gluu 4.x's
        // `cn=monitor` holds them (OpenDJ cannot run on these machines).
        let e = entry(
            "cn=Directory server DS(27137) gluu2.example.org:41444,cn=o_gluu,cn=Replication,cn=monitor",
            &[
                ("domain-name", "o=gluu"),
                ("server-id", "27137"),
                ("missing-changes", "12"),
                ("approximate-delay", "3400"),
                ("approx-older-change-not-synchronized-millis", "5120"),
                ("generation-id", "o=gluu 76493817"),
                ("connected-to", "Replication Server 8989 31338"),
            ],
        );
        let r = replica_of(&e);
        assert_eq!(r.domain, "o=gluu");
        assert_eq!(r.server_id, "27137");
        assert_eq!(r.missing_changes, Some(12));
        assert_eq!(r.approximate_delay_ms, Some(3400));
        assert_eq!(r.oldest_unsynced_ms, Some(5120));
        assert_eq!(r.generation_id.as_deref(), Some("o=gluu 76493817"));
        assert_eq!(
            r.connected_to.as_deref(),
            Some("Replication Server 8989 31338")
        );
        let bare = replica_of(&entry("cn=x", &[("server-id", "1"), ("connected-to", "")]));
        assert_eq!((bare.missing_changes, bare.connected_to), (None, None));
    }

    #[test]
    fn consumers_read_as_slapd_2_5_shows_them() {
        // As Debian 12's slapd printed a connected and a reconnecting consumer.
        let up = consumer_of(&entry(
            "cn=Consumer 001,cn=Database 1,cn=Databases,cn=Monitor",
            &[
                ("cn", "Consumer 001"),
                ("olmSRProviderURIList", "ldap://127.0.0.1:33569"),
                ("olmSRConnection", "IP=127.0.0.1:45492"),
                ("olmSRSyncPhase", "Persist"),
                ("olmSRNextConnect", "00000101000000Z"),
                ("olmSRLastContact", "20261125133016Z"),
            ],
        ));
        assert!(up.connected);
        assert_eq!(up.phase, "Persist");
        assert_eq!(up.next_connect_ms, None, "year 0 means none scheduled");
        assert_eq!(up.last_contact_ms, generalized_time_ms("20261125133016Z"));
        let down = consumer_of(&entry(
            "cn=Consumer 002,cn=Database 1,cn=Databases,cn=Monitor",
            &[
                ("cn", "Consumer 002"),
                ("olmSRConnection", ""),
                ("olmSRSyncPhase", "Refresh"),
                ("olmSRNextConnect", "20261125133017Z"),
            ],
        ));
        assert!(!down.connected);
        assert!(down.next_connect_ms.is_some());
    }

    #[test]
    fn opendj_counters_are_summed_over_its_connection_handlers() {
        // As the existing Cluster Manager reads them: the LDAP and LDAPS handlers'
        // statistics entries under cn=monitor.
        let handler = |port: &str, searches: &str| {
            entry(
                &format!("cn=LDAPS Connection Handler 0.0.0.0 port {port} Statistics,cn=monitor"),
                &[
                    ("searchRequests", searches),
                    ("addRequests", "2"),
                    ("modifyRequests", "7"),
                    ("deleteRequests", "1"),
                    ("bindRequests", "40"),
                ],
            )
        };
        let got = counters_of(
            &[handler("1636", "100"), handler("1389", "5")],
            LdapServer::OpenDj,
        );
        let get = |op: &str| {
            got.iter()
                .find(|s| s.labels == vec![("op".to_string(), op.to_string())])
                .map(|s| s.value)
        };
        assert_eq!(get("search"), Some(105.0));
        assert_eq!(get("modify"), Some(14.0));
        assert_eq!(get("compare"), Some(0.0));
        assert!(got.iter().all(|s| s.name == "ldap_operations_total"));
        assert!(counters_of(&[], LdapServer::OpenDj).is_empty());
    }

    #[test]
    fn dn_values_escape_what_rfc_4514_requires() {
        assert_eq!(dn_value("gluu1"), "gluu1");
        assert_eq!(dn_value("a,b=c+d"), "a\\,b\\=c\\+d");
        assert_eq!(dn_value("#x "), "\\#x\\ ");
    }
}
