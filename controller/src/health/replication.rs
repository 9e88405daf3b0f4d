//! `clustermgr replication`: the raw replication picture behind the verdicts, from
//! one round: the heartbeat lag matrix, the `contextCSN` table per serverID, each
//! node's replication links, and OpenDJ's replication domains.

use std::collections::{BTreeMap, BTreeSet};

use clustermgr_protocol::health::{Consumer, Csync2State, OpenDjReplica};
use serde::{Deserialize, Serialize};

use crate::clock::{Moment, rfc3339_ms};

use super::verdict::{Members, NodeRound};

/// What `replication` shows.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ReplicationView {
    /// The nodes with an LDAP server that answered, in order.
    pub nodes: Vec<String>,
    /// Nodes whose LDAP could not be read, and why.
    pub unread: Vec<Unread>,
    /// (where read, whose heartbeat) → its age in milliseconds on the controller's
    /// clock.
    pub heartbeat_age_ms: BTreeMap<String, BTreeMap<String, i64>>,
    /// Node → serverID → that serverID's `contextCSN` as the node holds it.
    pub csns: BTreeMap<String, BTreeMap<String, String>>,
    /// Node → its syncrepl consumers.
    pub links: BTreeMap<String, Vec<LinkView>>,
    /// Node → its OpenDJ replication domains.
    pub replicas: BTreeMap<String, Vec<ReplicaView>>,
    /// Node → its csync2 state.
    pub csync2: BTreeMap<String, Csync2View>,
}

/// A node whose LDAP could not be read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Unread {
    /// The node.
    pub node: String,
    /// Why.
    pub reason: String,
}

impl Unread {
    fn new(node: &str, reason: String) -> Unread {
        Unread {
            node: node.to_string(),
            reason,
        }
    }
}

/// One syncrepl consumer (a replication link into the node), as the node reported it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct LinkView {
    /// The consumer's name (`rid=...`).
    pub name: String,
    /// The provider it replicates from.
    pub provider: String,
    /// Whether it is connected now.
    pub connected: bool,
    /// What it is doing (`refresh`, `persist`, ...).
    pub phase: String,
    /// When it last heard from its provider.
    pub last_contact: Option<Moment>,
    /// When it next tries to connect, if it is waiting to.
    pub next_connect: Option<Moment>,
}

impl From<&Consumer> for LinkView {
    fn from(c: &Consumer) -> LinkView {
        LinkView {
            name: c.name.clone(),
            provider: c.provider.clone(),
            connected: c.connected,
            phase: c.phase.clone(),
            last_contact: c.last_contact_ms.map(Moment::of_ms),
            next_connect: c.next_connect_ms.map(Moment::of_ms),
        }
    }
}

/// One OpenDJ replication domain on a node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ReplicaView {
    /// Its monitor entry's DN.
    pub dn: String,
    /// The replicated suffix.
    pub domain: String,
    /// The node's server ID in it.
    pub server_id: String,
    /// Changes not yet replayed here.
    pub missing_changes: Option<i64>,
    /// How far behind, milliseconds.
    pub approximate_delay_ms: Option<i64>,
    /// The oldest change not yet replayed here.
    pub oldest_unsynced: Option<Moment>,
    /// The domain's generation ID.
    pub generation_id: Option<String>,
    /// The replication server it is connected to, if any.
    pub connected_to: Option<String>,
}

impl From<&OpenDjReplica> for ReplicaView {
    fn from(r: &OpenDjReplica) -> ReplicaView {
        ReplicaView {
            dn: r.dn.clone(),
            domain: r.domain.clone(),
            server_id: r.server_id.clone(),
            missing_changes: r.missing_changes,
            approximate_delay_ms: r.approximate_delay_ms,
            oldest_unsynced: r.oldest_unsynced_ms.map(Moment::of_ms),
            generation_id: r.generation_id.clone(),
            connected_to: r.connected_to.clone(),
        }
    }
}

/// A node's csync2 state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Csync2View {
    /// Whether `/etc/csync2.cfg` is there.
    pub configured: bool,
    /// Whether csync2 listens on its port.
    pub listening: bool,
    /// Why it does not, if it does not.
    pub listener_error: Option<String>,
    /// Files waiting to be sent, and to which peer (the first few).
    pub dirty: Vec<DirtyView>,
    /// How many files wait in all.
    pub dirty_total: u32,
    /// The last sync that found nothing to send.
    pub last_sync: Option<Moment>,
    /// Copies csync2 kept of files it replaced in a conflict.
    pub kept: Vec<KeptView>,
    /// Why the check itself failed, if it did.
    pub error: Option<String>,
}

/// A file csync2 has yet to send.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct DirtyView {
    /// The peer it waits for.
    pub peer: String,
    /// The file.
    pub path: String,
}

/// A copy csync2 kept.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct KeptView {
    /// The kept copy.
    pub path: String,
    /// When it was kept.
    pub time: String,
    /// When it was kept, Unix milliseconds.
    pub time_ms: i64,
}

impl From<&Csync2State> for Csync2View {
    fn from(c: &Csync2State) -> Csync2View {
        Csync2View {
            configured: c.configured,
            listening: c.listener.is_ok(),
            listener_error: c.listener.as_ref().err().cloned(),
            dirty: c
                .dirty
                .iter()
                .map(|d| DirtyView {
                    peer: d.peer.clone(),
                    path: d.path.clone(),
                })
                .collect(),
            dirty_total: c.dirty_total,
            last_sync: c.last_sync_ms.map(Moment::of_ms),
            kept: c
                .kept
                .iter()
                .map(|k| KeptView {
                    path: k.path.clone(),
                    time: rfc3339_ms(k.time_ms),
                    time_ms: k.time_ms,
                })
                .collect(),
            error: c.error.clone(),
        }
    }
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
            v.csync2.insert(name.clone(), c.into());
        }
        if !m.gluu {
            continue;
        }
        let state = match round.get(name) {
            Some(NodeRound::Report { report, skew_ms }) => match &report.ldap {
                Some(Ok(s)) => (s, *skew_ms),
                Some(Err(e)) => {
                    v.unread.push(Unread::new(name, e.clone()));
                    continue;
                }
                None => {
                    v.unread
                        .push(Unread::new(name, "no LDAP server found".into()));
                    continue;
                }
            },
            Some(NodeRound::Failed(e)) => {
                v.unread
                    .push(Unread::new(name, format!("the checks did not run: {e}")));
                continue;
            }
            Some(NodeRound::Unreachable(e)) => {
                v.unread
                    .push(Unread::new(name, format!("unreachable: {e}")));
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
            v.links.insert(
                name.clone(),
                s.consumers.iter().map(LinkView::from).collect(),
            );
        }
        if !s.replicas.is_empty() {
            v.replicas.insert(
                name.clone(),
                s.replicas.iter().map(ReplicaView::from).collect(),
            );
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
            [Unread::new("gluu3", "unreachable: no reply".to_string())]
        );
        assert_eq!(v.server_ids(), ["001"]);
        assert_eq!(v.writers(), ["gluu1", "gluu2"]);
    }
}
