//! LDAP replication's part of `apply`: the `ldap-replication` setting, what the
//! controller makes before rendering (serverIDs, the account's password, the seed, the
//! nodes' LDAP certificates), and counting a node in once its consumers caught up, so
//! the next round gives its peers consumers of it.

use std::time::Duration;

use clustermgr_protocol::message::{Reply, Request};

use super::{NodeApplyView, new_password};
use crate::CtlError;
use crate::ctx::{Ctx, NodeState};
use crate::store::{BuildRecord, NodeRecord, Role};

/// The setting's key.
pub const KEY: &str = "ldap-replication";

/// The largest serverID: consumers are numbered by their provider's (`rid` has three
/// digits).
const MAX_SERVER_ID: u16 = 999;

/// The setting as `cluster show` prints it.
pub fn shown(on: bool) -> String {
    if on { "on" } else { "off" }.into()
}

/// `cluster set ldap-replication on|off`.
pub fn set(ctx: &Ctx, user: &str, value: &str) -> Result<super::View, CtlError> {
    let on = match value {
        "on" | "true" | "yes" => true,
        "off" | "false" | "no" => false,
        _ => {
            return Err(CtlError::BadSetting {
                key: KEY.into(),
                why: format!("{value:?}: use on or off"),
            });
        }
    };
    ctx.store.update_build(|b| b.ldap_replication = on)?;
    ctx.audited(
        user,
        "cluster set",
        &[],
        &format!("{KEY} = {}", shown(on)),
        "set",
    )?;
    let sentence = if on {
        let seed = seed(&ctx.store.nodes()?, &ctx.store.build()?);
        format!(
            "{KEY} = on; the first apply makes {} the source of the cluster's directory: every other Gluu node's own o=gluu is replaced by it. Run `clustermgr plan` to see what changes on the nodes",
            seed.unwrap_or_else(|| "the primary".into())
        )
    } else {
        format!(
            "{KEY} = off; clustermgr no longer changes the nodes' replication, which stays as it is"
        )
    };
    super::said(ctx, sentence)
}

/// The node whose directory the others take: the first joined, else the primary Gluu
/// node, else the first Gluu node by name.
fn seed(nodes: &[NodeRecord], b: &BuildRecord) -> Option<String> {
    if let Some(j) = b.joined.first() {
        return Some(j.clone());
    }
    let gluu: Vec<&NodeRecord> = nodes.iter().filter(|n| n.has_role(Role::Gluu)).collect();
    gluu.iter()
        .find(|n| n.primary)
        .or(gluu.first())
        .map(|n| n.name.clone())
}

/// Before rendering an apply: gives every Gluu node a serverID and the account its
/// password (once), names the seed, forgets removed nodes, and asks every reachable
/// Gluu node for its LDAP certificate.
pub async fn prepare(ctx: &Ctx, within: Duration) -> Result<(), CtlError> {
    let build = ctx.store.build()?;
    if !build.ldap_replication {
        return Ok(());
    }
    let nodes = ctx.store.nodes()?;
    let gluu: Vec<&NodeRecord> = nodes.iter().filter(|n| n.has_role(Role::Gluu)).collect();
    let password = match build.replication_password {
        Some(_) => None,
        None => Some(new_password()?),
    };
    let answers = futures_util::future::join_all(gluu.iter().map(|n| async move {
        let conn = ctx.link(n, within).await.ok()?;
        match conn.request(&Request::LdapCert, super::PLAN_TIMEOUT).await {
            Ok(Reply::LdapCert(pem)) => pem,
            Ok(Reply::Error(e)) => {
                tracing::warn!("{}: no LDAP certificate: {}", n.name, e.message);
                None
            }
            _ => None,
        }
    }))
    .await;
    let seed = seed(&nodes, &build);
    let mut full = None;
    ctx.store.update_build(|b| {
        if let Some(p) = password {
            b.replication_password.get_or_insert(p);
        }
        let here = |name: &String| gluu.iter().any(|n| &n.name == name);
        b.server_ids.retain(|k, _| here(k));
        b.joined.retain(|k| here(k));
        b.leaving.retain(|k| here(k));
        b.ldap_certs.retain(|k, _| here(k));
        if b.joined.is_empty()
            && let Some(s) = seed
        {
            b.joined.push(s);
        }
        for n in &gluu {
            if b.server_ids.contains_key(&n.name) {
                continue;
            }
            match (1..=MAX_SERVER_ID).find(|id| !b.server_ids.values().any(|v| v == id)) {
                Some(id) => drop(b.server_ids.insert(n.name.clone(), id)),
                None => full = Some(n.name.clone()),
            }
        }
        for (n, pem) in gluu.iter().zip(answers) {
            if let Some(pem) = pem {
                b.ldap_certs.insert(n.name.clone(), pem);
            }
        }
    })?;
    if let Some(node) = full {
        return Err(CtlError::BadSetting {
            key: KEY.into(),
            why: format!(
                "{node} cannot be given a serverID: all {MAX_SERVER_ID} are in use; remove nodes that are gone with `clustermgr node remove`"
            ),
        });
    }
    Ok(())
}

/// After a round: the joining nodes whose apply succeeded (their consumers caught up,
/// or the apply would have rolled back) now hold the cluster's data. Returns whether
/// any was counted in, so that another round gives their peers consumers of them.
pub(super) fn count_in(
    ctx: &Ctx,
    desired: &[super::NodeDesired],
    views: &[NodeApplyView],
) -> Result<bool, CtlError> {
    let build = ctx.store.build()?;
    if !build.ldap_replication {
        return Ok(false);
    }
    let caught_up: Vec<String> = views
        .iter()
        .filter(|v| {
            v.state == NodeState::Ok
                && !build.joined.contains(&v.node)
                && !build.leaving.contains(&v.node)
                && desired.iter().any(|d| {
                    d.node.name == v.node
                        && d.entries.iter().any(|e| {
                            e.path.ends_with("?olcSyncrepl")
                                || e.path == clustermgr_protocol::changeset::OPENDJ_PATH
                        })
                })
        })
        .map(|v| v.node.clone())
        .collect();
    if caught_up.is_empty() {
        return Ok(false);
    }
    ctx.store.update_build(|b| {
        for n in caught_up {
            if !b.joined.contains(&n) {
                b.joined.push(n);
            }
        }
    })?;
    Ok(true)
}

/// Before `node remove NODE`: when NODE holds the cluster's directory, its peers stop
/// replicating from it first, and its own replication is stopped (no consumers;
/// OpenDJ's `disable`), in one apply of them and it, so none keeps a link to a node
/// that is gone. Says what it did. A peer that fails keeps NODE in the cluster; NODE
/// itself failing (it may be dead, the reason it goes) is said and does not.
pub async fn leave(
    ctx: &Ctx,
    user: &str,
    node: &str,
    within: Duration,
) -> Result<Option<String>, CtlError> {
    let build = ctx.store.build()?;
    if !build.ldap_replication || !build.joined.iter().any(|j| j == node) {
        return Ok(None);
    }
    let peers: Vec<String> = build
        .joined
        .iter()
        .filter(|j| *j != node)
        .cloned()
        .collect();
    ctx.store.update_build(|b| {
        b.joined.retain(|j| j != node);
        if !b.leaving.iter().any(|l| l == node) {
            b.leaving.push(node.to_string());
        }
    })?;
    let selector = peers
        .iter()
        .map(String::as_str)
        .chain([node])
        .collect::<Vec<_>>()
        .join(",");
    let ask = super::ApplyAsk {
        selector: &selector,
        rolling: false,
        approved: None,
        on_behalf: Some(("node remove", node)),
    };
    // Nobody follows this apply's progress: it is one step of `node remove`.
    let (events, _) = tokio::sync::mpsc::channel(1);
    let outcome = super::apply(ctx, user, &ask, within, &events).await;
    let (views, failed) = match &outcome {
        Ok(super::View::Applied(views)) => (
            views.clone(),
            views
                .iter()
                .find(|v| v.state != NodeState::Ok && v.node != node)
                .map(|v| {
                    (
                        v.node.clone(),
                        v.message.clone().unwrap_or_else(|| v.result.clone()),
                    )
                }),
        ),
        Ok(_) => (Vec::new(), None),
        Err(e) => (Vec::new(), Some((selector.clone(), e.to_string()))),
    };
    if let Some((on, why)) = failed {
        ctx.store.update_build(|b| {
            b.leaving.retain(|l| l != node);
            if !b.joined.iter().any(|j| j == node) {
                b.joined.push(node.to_string());
            }
        })?;
        return Err(CtlError::Agent {
            node: on,
            message: format!(
                "taking {node} out of its peers' LDAP replication failed: {why}; {node} was not removed (fix that node, then run `clustermgr node remove {node}` again)"
            ),
        });
    }
    let own = views
        .iter()
        .find(|v| v.node == node && v.state != NodeState::Ok)
        .map(|v| {
            format!(
                "; {node}'s own replication could not be stopped ({}): stop its directory server by hand",
                v.message.clone().unwrap_or_else(|| v.result.clone())
            )
        })
        .unwrap_or_default();
    if peers.is_empty() {
        return Ok(Some(format!(
            "{node} was the only node of the LDAP replication{own}"
        )));
    }
    Ok(Some(format!(
        "{} no longer replicate from it{own}",
        peers.join(", ")
    )))
}
