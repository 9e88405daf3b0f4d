//! The port matrix: which peer ports each node must reach for its role (the
//! existing Cluster Manager's "dry run", done every round), and `clustermgr ports`.

use std::collections::BTreeMap;

use clustermgr_protocol::health::{PortProbe, PortReach};
use serde::{Deserialize, Serialize};

use super::verdict::{Level, Members, NodeRound};
use crate::model::{Cache, ClusterModel};
use crate::store::{NodeRecord, Role};

/// LDAPS, which Gluu's applications and OpenLDAP's replication use.
pub const LDAPS: u16 = 1636;
/// OpenDJ's administration connector (replication setup).
pub const OPENDJ_ADMIN: u16 = 4444;
/// OpenDJ's replication port.
pub const OPENDJ_REPLICATION: u16 = 8989;
/// HTTPS, which the load balancer forwards to.
pub const HTTPS: u16 = 443;

/// What a port is for, in words.
pub fn port_name(port: u16) -> &'static str {
    match port {
        HTTPS => "https",
        LDAPS => "ldaps",
        OPENDJ_ADMIN => "opendj-admin",
        OPENDJ_REPLICATION => "opendj-replication",
        crate::generate::stunnel::PORT => "stunnel",
        clustermgr_protocol::health::CSYNC2_PORT => "csync2",
        _ => "",
    }
}

/// Each node's row of the matrix: the peers' ports it must reach. Gluu nodes reach
/// each other's LDAPS, csync2 (with two or more), and on Gluu 4 OpenDJ's admin and
/// replication ports, and the cache host's tunnel; the load balancer reaches every
/// Gluu node's HTTPS.
pub fn matrix(nodes: &[NodeRecord], model: &ClusterModel) -> BTreeMap<String, Vec<PortProbe>> {
    let gluu: Vec<&NodeRecord> = nodes.iter().filter(|n| n.has_role(Role::Gluu)).collect();
    let opendj = model
        .gluu_version
        .as_deref()
        .and_then(|v| v.split('.').next()?.parse::<u32>().ok())
        .is_some_and(|major| major >= 4);
    let mut peer_ports = vec![LDAPS];
    if gluu
        .first()
        .is_some_and(|n| crate::generate::csync2::member(n, nodes))
    {
        peer_ports.push(clustermgr_protocol::health::CSYNC2_PORT);
    }
    if opendj {
        peer_ports.extend([OPENDJ_ADMIN, OPENDJ_REPLICATION]);
    }
    let probe = |to: &NodeRecord, port: u16| PortProbe {
        node: to.name.clone(),
        host: crate::generate::ip_of(to),
        port,
    };
    let mut out = BTreeMap::new();
    for n in nodes {
        let mut row = Vec::new();
        if n.has_role(Role::Gluu) {
            for peer in gluu.iter().filter(|p| p.name != n.name) {
                row.extend(peer_ports.iter().map(|&port| probe(peer, port)));
            }
            if model.cache == Cache::Redis {
                for cache in nodes.iter().filter(|c| c.has_role(Role::Cache)) {
                    row.push(probe(cache, crate::generate::stunnel::PORT));
                }
            }
        }
        if n.has_role(Role::Lb) {
            row.extend(gluu.iter().map(|g| probe(g, HTTPS)));
        }
        out.insert(n.name.clone(), row);
    }
    out
}

/// One cell of `clustermgr ports`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct PortCell {
    /// Where the connection was tried from.
    pub from: String,
    /// The peer.
    pub to: String,
    /// The port.
    pub port: u16,
    /// What it is for.
    pub service: String,
    /// `ok`, `critical` (missing) or `unknown` (the node could not try).
    pub level: Level,
    /// The time the connection took, or why it failed.
    pub detail: String,
}

/// What `clustermgr ports` shows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct PortsView {
    /// The worst cell: the exit code (ok with no cells).
    pub worst: Level,
    /// Every port of every pair, by source.
    pub cells: Vec<PortCell>,
}

/// The matrix as one round found it.
pub fn view(members: &Members, round: &BTreeMap<String, NodeRound>) -> PortsView {
    let mut cells = Vec::new();
    for (from, m) in &members.nodes {
        let (report, why) = match round.get(from) {
            Some(NodeRound::Report { report, .. }) => (Some(report), None),
            Some(NodeRound::Failed(e)) => (None, Some(format!("its checks did not run: {e}"))),
            Some(NodeRound::Unreachable(e)) => (None, Some(format!("unreachable: {e}"))),
            None => (None, Some("it was not asked".into())),
        };
        let tried: &[PortReach] = report.map_or(&[], |r| &r.ports);
        for p in &m.reach {
            let found = tried.iter().find(|t| &t.probe == p);
            let (level, detail) = match (found, &why) {
                (_, Some(why)) => (Level::Unknown, why.clone()),
                (None, None) => (Level::Unknown, "the agent did not try it".into()),
                (Some(t), None) => match &t.result {
                    Ok(ms) => (Level::Ok, format!("open ({ms} ms)")),
                    Err(e) => (Level::Critical, e.clone()),
                },
            };
            cells.push(PortCell {
                from: from.clone(),
                to: p.node.clone(),
                port: p.port,
                service: port_name(p.port).to_string(),
                level,
                detail,
            });
        }
    }
    PortsView {
        worst: Level::worst(cells.iter().map(|c| c.level)),
        cells,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, addr: &str, roles: &[Role]) -> NodeRecord {
        NodeRecord::for_tests(name, addr, roles)
    }

    #[test]
    fn each_role_reaches_what_it_needs() {
        let nodes = vec![
            node("gluu1", "10.0.0.1:7443", &[Role::Gluu]),
            node("gluu2", "10.0.0.2:7443", &[Role::Gluu]),
            node("lb1", "10.0.0.9:7443", &[Role::Lb]),
            node("cache", "10.0.0.8:7443", &[Role::Cache]),
        ];
        let mut model = ClusterModel::default();
        let m = matrix(&nodes, &model);
        let row = |n: &str, m: &BTreeMap<String, Vec<PortProbe>>| -> Vec<String> {
            m[n].iter()
                .map(|p| format!("{}@{}:{}", p.node, p.host, p.port))
                .collect()
        };
        assert_eq!(
            row("gluu1", &m),
            ["gluu2@10.0.0.2:1636", "gluu2@10.0.0.2:30865"]
        );
        assert_eq!(row("lb1", &m), ["gluu1@10.0.0.1:443", "gluu2@10.0.0.2:443"]);
        assert!(m["cache"].is_empty());
        model.gluu_version = Some("4.2.3".into());
        model.cache = Cache::Redis;
        let m = matrix(&nodes, &model);
        assert_eq!(
            row("gluu2", &m),
            [
                "gluu1@10.0.0.1:1636",
                "gluu1@10.0.0.1:30865",
                "gluu1@10.0.0.1:4444",
                "gluu1@10.0.0.1:8989",
                "cache@10.0.0.8:16379"
            ]
        );
        // One Gluu node: no csync2 to reach.
        let m = matrix(&nodes[..1], &ClusterModel::default());
        assert!(m["gluu1"].is_empty());
    }
}
