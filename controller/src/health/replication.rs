//! `clustermgr replication`: the raw replication picture behind the verdicts, from
//! one round: the heartbeat lag matrix, the `contextCSN` table per serverID, each
//! node's replication links, and OpenDJ's replication domains.

use std::collections::{BTreeMap, BTreeSet};

use clustermgr_protocol::health::{Consumer, Csync2State, OpenDjReplica};
use serde::{Deserialize, Serialize};

use super::verdict::{Members, NodeRound};

/// What `replication` shows.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicationView {
    /// The nodes with an LDAP server that answered, in order.
    pub nodes: Vec<String>,
    /// Nodes whose LDAP could not be read, and why.
    pub unread: Vec<(String, String)>,
    /// (where read, whose heartbeat) → its age in milliseconds on the controller's
    /// clock.
    pub heartbeat_age_ms: BTreeMap<String, BTreeMap<String, i64>>,
    /// Node → serverID → that serverID's `contextCSN` as the node holds it.
    pub csns: BTreeMap<String, BTreeMap<String, String>>,
    /// Node → its syncrepl consumers.
    pub links: BTreeMap<String, Vec<Consumer>>,
    /// Node → its OpenDJ replication domains.
    pub replicas: BTreeMap<String, Vec<OpenDjReplica>>,
    /// Node → its csync2 state.
    pub csync2: BTreeMap<String, Csync2State>,
}

/// The view of a round.
pub fn view(members: &Members, round: &BTreeMap<String, NodeRound>) -> ReplicationView {
    let mut v = ReplicationView::default();
    let skew = |n: &str| match round.get(n) {
        Some(NodeRound::Report { skew_ms, .. }) => *skew_ms,
        _ => 0,
    };
    for (name, m) in &members.nodes {
        if let Some(NodeRound::Report { report, .. }) = round.get(name)
            && let Some(c) = &report.csync2
        {
            v.csync2.insert(name.clone(), c.clone());
        }
        if !m.gluu {
            continue;
        }
        let state = match round.get(name) {
            Some(NodeRound::Report { report, skew_ms }) => match &report.ldap {
                Some(Ok(s)) => (s, *skew_ms),
                Some(Err(e)) => {
                    v.unread.push((name.clone(), e.clone()));
                    continue;
                }
                None => {
                    v.unread.push((name.clone(), "no LDAP server found".into()));
                    continue;
                }
            },
            Some(NodeRound::Failed(e)) => {
                v.unread
                    .push((name.clone(), format!("the checks did not run: {e}")));
                continue;
            }
            Some(NodeRound::Unreachable(e)) => {
                v.unread.push((name.clone(), format!("unreachable: {e}")));
                continue;
            }
            None => continue,
        };
        let (s, my_skew) = state;
        v.nodes.push(name.clone());
        v.heartbeat_age_ms.insert(
            name.clone(),
            s.heartbeats
                .iter()
                .map(|h| {
                    let age = (h.read_ms - my_skew) - (h.written_ms - skew(&h.node));
                    (h.node.clone(), age)
                })
                .collect(),
        );
        v.csns.insert(
            name.clone(),
            s.csns
                .iter()
                .map(|c| (c.server_id.clone(), c.csn.clone()))
                .collect(),
        );
        if !s.consumers.is_empty() {
            v.links.insert(name.clone(), s.consumers.clone());
        }
        if !s.replicas.is_empty() {
            v.replicas.insert(name.clone(), s.replicas.clone());
        }
    }
    v
}

impl ReplicationView {
    /// Every serverID any node holds a CSN of, in order.
    pub fn server_ids(&self) -> Vec<String> {
        let ids: BTreeSet<&String> = self.csns.values().flat_map(|m| m.keys()).collect();
        ids.into_iter().cloned().collect()
    }

    /// Every node any node holds a heartbeat of, in order.
    pub fn writers(&self) -> Vec<String> {
        let w: BTreeSet<&String> = self
            .heartbeat_age_ms
            .values()
            .flat_map(|m| m.keys())
            .collect();
        w.into_iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::verdict::Member;
    use clustermgr_protocol::health::{CheckReport, Csn, Heartbeat, LdapServer, LdapState};

    #[test]
    fn the_view_corrects_ages_for_skew_and_lists_what_could_not_be_read() {
        let mut members = Members::default();
        for n in ["gluu1", "gluu2", "gluu3"] {
            members.nodes.insert(
                n.into(),
                Member {
                    gluu: true,
                    host: n.into(),
                    ..Member::default()
                },
            );
        }
        let state = |read_ms: i64| LdapState {
            server: LdapServer::OpenLdap,
            took_ms: 1,
            csns: vec![Csn::parse("20261125133015.043388Z#000000#001#000000").unwrap()],
            consumers: Vec::new(),
            replicas: Vec::new(),
            heartbeats: vec![
                Heartbeat {
                    node: "gluu1".into(),
                    written_ms: 1000,
                    read_ms,
                },
                Heartbeat {
                    node: "gluu2".into(),
                    written_ms: 5000 + 1000,
                    read_ms,
                },
            ],
            heartbeat_error: None,
        };
        let mut round = BTreeMap::new();
        round.insert(
            "gluu1".to_string(),
            NodeRound::Report {
                report: CheckReport {
                    started_ms: 0,
                    ldap: Some(Ok(state(3000))),
                    disks: Vec::new(),
                    ports: Vec::new(),
                    csync2: None,
                    certs: Vec::new(),
                    services: Vec::new(),
                },
                skew_ms: 0,
            },
        );
        // gluu2's clock is 5 s ahead.
        round.insert(
            "gluu2".to_string(),
            NodeRound::Report {
                report: CheckReport {
                    started_ms: 0,
                    ldap: Some(Ok(state(5000 + 3000))),
                    disks: Vec::new(),
                    ports: Vec::new(),
                    csync2: None,
                    certs: Vec::new(),
                    services: Vec::new(),
                },
                skew_ms: 5000,
            },
        );
        round.insert(
            "gluu3".to_string(),
            NodeRound::Unreachable("no reply".into()),
        );
        let v = view(&members, &round);
        assert_eq!(v.nodes, ["gluu1", "gluu2"]);
        assert_eq!(v.heartbeat_age_ms["gluu1"]["gluu2"], 2000);
        assert_eq!(v.heartbeat_age_ms["gluu2"]["gluu1"], 2000);
        assert_eq!(
            v.unread,
            [("gluu3".to_string(), "unreachable: no reply".to_string())]
        );
        assert_eq!(v.server_ids(), ["001"]);
        assert_eq!(v.writers(), ["gluu1", "gluu2"]);
    }
}
