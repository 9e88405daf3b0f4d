//! Per-node edits: the `/etc/hosts` block naming every node, and the `servers:` line
//! of the node's LDAP client configuration (own LDAP first, then the others).

use std::collections::BTreeMap;

use clustermgr_protocol::changeset::{Content, Entry, Scope};

use super::{Inputs, NodeConfig, Sorted, ip_of};
use crate::store::Role;

pub(super) fn render(inputs: &Inputs, sorted: &Sorted, out: &mut BTreeMap<String, NodeConfig>) {
    if inputs.model.manage_hosts {
        let body: String = sorted
            .nodes
            .iter()
            .map(|n| format!("{} {}\n", ip_of(n), n.name))
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
