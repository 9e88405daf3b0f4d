//! The generators: every node's desired configuration, derived from the cluster model
//! and the inventory alone (so nodes can be prepared before Gluu is on them).
//! Deterministic: the same inputs give the same bytes, which the snapshot tests hold.

use std::collections::BTreeMap;

use clustermgr_protocol::changeset::Entry;

use crate::model::ClusterModel;
use crate::store::NodeRecord;

/// Secrets the generators place on nodes. Never printed; plans show only their hashes.
#[derive(Clone, Default)]
pub struct Secrets {
    /// The csync2 group key, generated once by the controller.
    pub csync2_key: Option<Vec<u8>>,
    /// The cluster's TLS certificate chain (PEM) and key (PEM), for the load balancer
    /// and each Gluu node's Apache.
    pub tls: Option<(String, String)>,
    /// The cache host's Redis password, generated once by the controller.
    pub redis_password: Option<String>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secrets").finish_non_exhaustive()
    }
}

/// What a plan puts where `apply` will write a certificate or revocation list it has
/// not made yet (issued for a key the node generates then): the plan shows the file,
/// says why its text is not known, and hashes the same stand-in `apply` checks against.
pub const ISSUED_AT_APPLY: &str = "(issued by clustermgr at apply)\n";

/// The tunnel CA's public material: what stunnel (and csync2) peers verify each other with.
#[derive(Clone, Debug, Default)]
pub struct TunnelMaterial {
    /// The tunnel CA certificate, PEM.
    pub ca_pem: String,
    /// Its current revocation list, PEM.
    pub crl_pem: String,
    /// Each node's stunnel certificate, PEM, by node name; a node without one yet is
    /// waiting for its key to be generated on it.
    pub certs: BTreeMap<String, String>,
    /// Each Gluu node's csync2 certificate (csync2 pins its peers' on first contact).
    pub csync2_certs: BTreeMap<String, String>,
}

/// Everything the generators read.
#[derive(Clone, Copy, Debug)]
pub struct Inputs<'a> {
    /// The cluster settings.
    pub model: &'a ClusterModel,
    /// Every node, sorted by name.
    pub nodes: &'a [NodeRecord],
    /// The secrets.
    pub secrets: &'a Secrets,
    /// The tunnel certificates.
    pub tunnel: &'a TunnelMaterial,
    /// What building the cluster made: LDAP replication's switch, serverIDs, password,
    /// joined nodes and the nodes' LDAP certificates.
    pub build: &'a crate::store::BuildRecord,
}

/// One node's desired configuration.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeConfig {
    /// The entries, in a fixed order.
    pub entries: Vec<Entry>,
    /// What some generator is waiting for before it can produce its part for this
    /// node, as sentences (`the load balancer's nginx waits for `cluster set hostname``).
    pub waiting: Vec<String>,
}

pub(crate) mod csync2;
pub mod gluu_settings;
mod hosts;
pub(crate) mod httpd;
pub mod keys;
pub(crate) mod nginx;
pub mod provision;
pub(crate) mod redis;
pub mod replication;
pub(crate) mod stunnel;
#[cfg(test)]
mod tests;

use clustermgr_protocol::changeset::{Action, Content, Scope, ServiceVerb};

use crate::store::Role;

/// The stunnel files `serve` renews without an apply.
pub const TUNNEL_RENEWED: &[&str] = stunnel::RENEWED;
/// Where each host's stunnel key is generated (on the host; never an entry).
pub const STUNNEL_KEY: &str = stunnel::KEY;
/// Where each Gluu node's csync2 key is generated: csync2 reads it from there.
pub const CSYNC2_KEY: &str = "/etc/csync2_ssl_key.pem";

/// Every node's desired configuration. Nodes without any part get an empty config.
/// Refused when the model holds what no node may be given (a replicated path csync2
/// must not copy).
pub fn render(inputs: &Inputs) -> Result<BTreeMap<String, NodeConfig>, crate::CtlError> {
    let mut nodes: Vec<&NodeRecord> = inputs.nodes.iter().collect();
    nodes.sort_by(|a, b| a.name.cmp(&b.name));
    let mut out: BTreeMap<String, NodeConfig> = nodes
        .iter()
        .map(|n| (n.name.clone(), NodeConfig::default()))
        .collect();
    let sorted = Sorted { nodes };
    nginx::render(inputs, &sorted, &mut out);
    csync2::render(inputs, &sorted, &mut out)?;
    stunnel::render(inputs, &sorted, &mut out);
    redis::render(inputs, &sorted, &mut out);
    httpd::render(inputs, &sorted, &mut out);
    hosts::render(inputs, &sorted, &mut out);
    render_replication(inputs, &sorted, &mut out);
    gluu_settings::render(inputs, &sorted, &mut out);
    Ok(out)
}

/// Every Gluu node's LDAP replication entries, when `ldap-replication` is on.
fn render_replication(inputs: &Inputs, sorted: &Sorted, out: &mut BTreeMap<String, NodeConfig>) {
    let b = inputs.build;
    if !b.ldap_replication {
        return;
    }
    let gluu = sorted.with(Role::Gluu);
    let Some(password) = b.replication_password.as_deref() else {
        for n in &gluu {
            if let Some(cfg) = out.get_mut(&n.name) {
                cfg.waiting.push(
                    "LDAP replication waits for its account's password, which `clustermgr apply` makes".into(),
                );
            }
        }
        return;
    };
    let mut members = Vec::new();
    let mut missing = Vec::new();
    for n in &gluu {
        match b.server_ids.get(&n.name) {
            Some(id) => members.push(replication::Member {
                name: n.name.clone(),
                ip: ip_of(n),
                port: replication::LDAPS_PORT,
                server_id: *id,
                cert_pem: b.ldap_certs.get(&n.name).cloned(),
            }),
            None => missing.push(n.name.clone()),
        }
    }
    let seen = replication::PEERS_PEM.to_string();
    let ri = replication::Inputs {
        members: &members,
        joined: &b.joined,
        leaving: &b.leaving,
        password,
        scope: Scope::Container {
            root: inputs.model.gluu_root.clone(),
        },
        peers_pem_seen: &seen,
        catch_up_ms: replication::CATCH_UP_MS,
    };
    let opendj = replication::runs_opendj(inputs.model.gluu_version.as_deref());
    for n in &gluu {
        let Some(cfg) = out.get_mut(&n.name) else {
            continue;
        };
        if opendj {
            match replication::opendj_entry(&ri, &n.name) {
                Ok(e) => cfg.entries.push(e),
                Err(why) => cfg.waiting.push(why),
            }
            continue;
        }
        if !missing.is_empty() {
            cfg.waiting.push(format!(
                "LDAP replication waits for the serverID of {}, which `clustermgr apply` gives",
                missing.join(", ")
            ));
            continue;
        }
        match replication::node_entries(&ri, &n.name) {
            Ok(entries) => cfg.entries.extend(entries),
            Err(why) => cfg.waiting.push(why),
        }
    }
}

/// The nodes, sorted by name.
struct Sorted<'a> {
    nodes: Vec<&'a NodeRecord>,
}

impl<'a> Sorted<'a> {
    fn with(&self, role: Role) -> Vec<&'a NodeRecord> {
        self.nodes
            .iter()
            .copied()
            .filter(|n| n.has_role(role))
            .collect()
    }
}

/// The host part of a node's agent address: its IP (brackets kept off IPv6).
pub(crate) fn ip_of(n: &NodeRecord) -> String {
    let a = n.address.as_str();
    if let Some(rest) = a.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest).to_string();
    }
    match a.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') && p.bytes().all(|b| b.is_ascii_digit()) => h.into(),
        _ => a.to_string(),
    }
}

/// `ip:port`, bracketing IPv6.
fn ip_port(n: &NodeRecord, port: u16) -> String {
    let ip = ip_of(n);
    if ip.contains(':') {
        format!("[{ip}]:{port}")
    } else {
        format!("{ip}:{port}")
    }
}

/// The line every generated text file starts with (in `#` comment syntax).
const HEADER: &str =
    "# Written by clustermgr from the cluster model; an edit here is reported as drift.\n";

/// A whole file on the host, owned by root.
fn file(path: &str, text: String, mode: u32, on_change: Vec<Action>) -> Entry {
    Entry {
        path: path.to_string(),
        scope: Scope::Host,
        content: Content::File {
            bytes: text.into_bytes(),
            mode,
            owner: Some("root".into()),
            group: Some("root".into()),
        },
        secret: false,
        validate: None,
        on_change,
    }
}

fn service(name: &str, verb: ServiceVerb) -> Vec<Action> {
    vec![Action::Service {
        name: name.to_string(),
        verb,
    }]
}

/// A service run as a supervised foreground process under systemd, and by an LSB init
/// script elsewhere, under one name so an action never depends on the init system.
/// `programs` are the program's names across distributions (Debian's `stunnel4` is
/// Red Hat's `stunnel`): the first one the host has runs.
fn service_files(
    name: &str,
    description: &str,
    programs: &[&str],
    args: &str,
    daemonizes: bool,
    on_change: &[Action],
) -> Vec<Entry> {
    let found = programs
        .iter()
        .map(|p| format!("command -v {p}"))
        .collect::<Vec<_>>()
        .join(" || ");
    let exec = match programs {
        [one] => format!("{one} {args}"),
        _ => format!("/bin/sh -c 'exec \"$$({found})\" {args}'"),
    };
    // csync2's actions restart Gluu services from inside the listener: with systemd's
    // default kill mode, restarting the listener would take them down too.
    let unit = format!(
        "{HEADER}[Unit]\nDescription={description}\nAfter=network-online.target\n\n[Service]\n{}ExecStart={exec}\nRestart=always\nRestartSec=2\nKillMode=process\n\n[Install]\nWantedBy=multi-user.target\n",
        if daemonizes {
            format!("Type=forking\nPIDFile=/run/{name}.pid\n")
        } else {
            String::new()
        }
    );
    // start-stop-daemon backgrounds a program that stays in the foreground; one that
    // daemonizes itself writes the pid file on its own.
    let start = if daemonizes {
        format!("start-stop-daemon --start --quiet --pidfile $PIDFILE --exec \"$DAEMON\" -- {args}")
    } else {
        format!(
            "start-stop-daemon --start --quiet --background --make-pidfile --pidfile $PIDFILE --exec \"$DAEMON\" -- {args}"
        )
    };
    let script = format!(
        "#!/bin/sh\n{HEADER}### BEGIN INIT INFO\n# Provides:          {name}\n# Required-Start:    $network $remote_fs\n# Required-Stop:     $network $remote_fs\n# Default-Start:     2 3 4 5\n# Default-Stop:      0 1 6\n# Short-Description: {description}\n### END INIT INFO\nPIDFILE=/run/{name}.pid\nDAEMON=$({found})\ncase \"$1\" in\n  start)\n    start-stop-daemon --status --pidfile $PIDFILE --exec \"$DAEMON\" && exit 0\n    {start}\n    ;;\n  stop)\n    start-stop-daemon --stop --quiet --retry 5 --oknodo --pidfile $PIDFILE --exec \"$DAEMON\"\n    rm -f $PIDFILE\n    ;;\n  restart|reload|force-reload)\n    \"$0\" stop && \"$0\" start\n    ;;\n  status)\n    start-stop-daemon --status --pidfile $PIDFILE --exec \"$DAEMON\"\n    ;;\n  *)\n    echo \"usage: $0 start|stop|restart|status\" >&2\n    exit 3\n    ;;\nesac\n"
    );
    vec![
        file(
            &format!("/etc/systemd/system/{name}.service"),
            unit,
            0o644,
            on_change.to_vec(),
        ),
        file(
            &format!("/etc/init.d/{name}"),
            script,
            0o755,
            on_change.to_vec(),
        ),
    ]
}
