//! Per-node edits: the `/etc/hosts` block naming every node, and the `servers:` line
//! of the node's LDAP client configuration (own LDAP first, then the others).

use std::collections::BTreeMap;

use clustermgr_protocol::changeset::{Content, Entry, Scope};

use super::{Inputs, NodeConfig, Sorted, ip_of};
use crate::store::{NodeRecord, Role};

pub(super) fn render(inputs: &Inputs, sorted: &Sorted, out: &mut BTreeMap<String, NodeConfig>) {
    if inputs.model.manage_hosts {
        // An /etc/hosts line must start with an address; a node reached by a DNS name
        // is left out (its name has to resolve as its address does) and the plan says so.
        let (by_ip, by_name): (Vec<&NodeRecord>, Vec<&NodeRecord>) = sorted
            .nodes
            .iter()
            .partition(|n| ip_of(n).parse::<std::net::IpAddr>().is_ok());
        let body: String = by_ip
            .iter()
            .map(|n| format!("{} {}\n", ip_of(n), n.name))
            .collect();
        let left_out: Vec<String> = by_name
            .iter()
            .map(|n| {
                format!(
                    "the /etc/hosts block to name {}: its address {} is a DNS name, not an IP address, so it is left out; re-add the node with `--address IP`, or make its name resolve and run `clustermgr cluster set manage-hosts false`",
                    n.name,
                    ip_of(n)
                )
            })
            .collect();
        let block = |scope: Scope| Entry {
            path: "/etc/hosts".into(),
            scope,
            content: Content::Block {
                name: "hosts".into(),
                body: body.clone(),
            },
            secret: false,
            validate: None,
            on_change: Vec::new(),
        };
        for n in &sorted.nodes {
            let cfg = out.entry(n.name.clone()).or_default();
            cfg.waiting.extend(left_out.iter().cloned());
            cfg.entries.push(block(Scope::Host));
            // The Gluu apps resolve the LDAP servers' names inside their container,
            // which has an /etc/hosts of its own.
            if n.has_role(Role::Gluu) && inputs.model.gluu_root != "/" {
                cfg.entries.push(block(Scope::Container {
                    root: inputs.model.gluu_root.clone(),
                }));
            }
        }
    }
    let gluu = sorted.with(Role::Gluu);
    // 3.x calls the file ox-ldap.properties; 4.x gluu-ldap.properties.
    let file = match &inputs.model.gluu_version {
        Some(v) if v.starts_with("3.") => "/etc/gluu/conf/ox-ldap.properties",
        _ => "/etc/gluu/conf/gluu-ldap.properties",
    };
    for n in &gluu {
        let mut servers = vec![format!("{}:1636", n.name)];
        servers.extend(
            gluu.iter()
                .filter(|o| o.name != n.name)
                .map(|o| format!("{}:1636", o.name)),
        );
        // No action: the Gluu apps read it when they start, and restarting them is the
        // administrator's call.
        out.entry(n.name.clone()).or_default().entries.push(Entry {
            path: file.into(),
            scope: Scope::Container {
                root: inputs.model.gluu_root.clone(),
            },
            content: Content::Property {
                key: "servers".into(),
                value: servers.join(","),
            },
            secret: false,
            validate: None,
            on_change: Vec::new(),
        });
    }
}
