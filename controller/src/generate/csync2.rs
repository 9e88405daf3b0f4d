//! csync2 on the Gluu nodes: one group over every Gluu node with the replicated paths
//! and the per-node files excluded, the shared key, each node's TLS certificate, a
//! listener on 30865, and a sync every two minutes, staggered per node, which leaves
//! its output in `/var/log/csync2.log` and, when it succeeded, touches a stamp the
//! agent's health check reads.

use std::collections::BTreeMap;

use clustermgr_protocol::changeset::ServiceVerb;
use clustermgr_protocol::health::{CSYNC2_LOG, CSYNC2_SYNCED_STAMP};

use super::{HEADER, Inputs, NodeConfig, Sorted, file, service, service_files};
use crate::CtlError;
use crate::model::{in_gluu_root, reserved_replica};
use crate::store::{NodeRecord, Role};

/// Whether `node` is in the cluster's csync2 group: every Gluu node, once there are
/// two (one node has nothing to sync with).
pub fn member<'a>(node: &NodeRecord, all: impl IntoIterator<Item = &'a NodeRecord>) -> bool {
    node.has_role(Role::Gluu) && all.into_iter().filter(|n| n.has_role(Role::Gluu)).count() >= 2
}

/// csync2's configuration.
pub const CONFIG: &str = "/etc/csync2.cfg";

/// The nodes clustermgr has set csync2 up on: its configuration is among what they
/// last applied (`records`, the store's). A file a package left, Debian's example,
/// does not count.
pub fn set_up(records: &[crate::store::DesiredRecord]) -> std::collections::BTreeSet<String> {
    use clustermgr_protocol::changeset::Scope;
    records
        .iter()
        .filter(|r| {
            r.applied
                .iter()
                .any(|e| e.scope == Scope::Host && e.path == CONFIG)
        })
        .map(|r| r.node.clone())
        .collect()
}

/// The service that runs the listener.
pub const SERVICE: &str = "clustermgr-csync2";
/// Where csync2 (Debian's build) looks for its certificate (its key, generated on the
/// node, is `/etc/csync2_ssl_key.pem` beside it).
pub const SSL_CERT: &str = "/etc/csync2_ssl_cert.pem";

/// Files that must differ per node, inside the container root: each node's LDAP
/// client list names its own server first, the salt encodes its passwords, and
/// oxTrust's log settings (its log rotation under `/etc/gluu/conf`, its log4j2 file)
/// are per node. (Excluding only the 3.x name, as the existing Cluster Manager does,
/// lets 4.x nodes overwrite each other's `servers:` line.) Only those under a
/// replicated path are written: an exclusion of a path csync2 never includes says
/// nothing.
const PER_NODE: &[&str] = &[
    "/etc/gluu/conf/gluu-ldap.properties",
    "/etc/gluu/conf/ox-ldap.properties",
    "/etc/gluu/conf/salt",
    "/etc/gluu/conf/oxTrustLogRotationConfiguration.xml",
    "/opt/gluu/jetty/identity/resources/log4j2.xml",
];

/// Whether `path` is `dir` or below it.
fn under(path: &str, dir: &str) -> bool {
    let dir = dir.trim_end_matches('/');
    path == dir
        || path
            .strip_prefix(dir)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// The command csync2 runs when Shibboleth's configuration changed: restart the IdP
/// and oxTrust (identity) inside the container. Gluu 4.x runs the container as a
/// systemd-nspawn machine with its own systemd, which a chrooted init script does not
/// reach: the machine whose root directory is the container root gets the restart
/// through `systemctl --machine`; a 3.x chroot (no such machine) gets its init
/// scripts. Inside csync2's double-quoted `exec`, so it holds no double quote.
fn shibboleth_restart(root: &str) -> String {
    if root == "/" {
        return "/etc/init.d/identity restart; /etc/init.d/idp restart".into();
    }
    format!(
        "for m in $(machinectl list --no-legend 2>/dev/null | awk '{{print $1}}'); do \
         [ $(machinectl show $m -p RootDirectory --value 2>/dev/null) = {root} ] && \
         exec systemctl --machine=$m restart identity idp; done; \
         chroot {root} /etc/init.d/identity restart; chroot {root} /etc/init.d/idp restart"
    )
}

/// csync2's configuration for the Gluu nodes; refused (nothing generated) while a
/// replicated path is one csync2 must not copy, as a model stored before `cluster set`
/// judged the paths inside gluu-root may hold.
pub(super) fn render(
    inputs: &Inputs,
    sorted: &Sorted,
    out: &mut BTreeMap<String, NodeConfig>,
) -> Result<(), CtlError> {
    let gluu = sorted.with(Role::Gluu);
    if !gluu
        .first()
        .is_some_and(|n| member(n, sorted.nodes.iter().copied()))
    {
        return Ok(());
    }
    let root = inputs.model.gluu_root.as_str();
    if let Some(r) = reserved_replica(root, &inputs.model.replicated_paths) {
        return Err(CtlError::BadSetting {
            key: "replicated-paths".into(),
            why: format!(
                "cannot generate csync2's configuration: {r}. Nothing was planned or sent; change the setting with `clustermgr cluster set replicated-paths PATHS` (or `cluster set gluu-root ROOT`)"
            ),
        });
    }
    let Some(key) = &inputs.secrets.csync2_key else {
        for n in &gluu {
            out.entry(n.name.clone())
                .or_default()
                .waiting
                .push("csync2 waits for the cluster's csync2 key".into());
        }
        return Ok(());
    };
    let mut cfg = format!("{HEADER}group gluu {{\n");
    for n in &gluu {
        cfg.push_str(&format!("    host {};\n", n.name));
    }
    cfg.push_str("    key /etc/csync2.key;\n");
    for p in &inputs.model.replicated_paths {
        cfg.push_str(&format!("    include {};\n", in_gluu_root(root, p)));
    }
    for p in PER_NODE
        .iter()
        .filter(|p| inputs.model.replicated_paths.iter().any(|r| under(p, r)))
    {
        cfg.push_str(&format!("    exclude {};\n", in_gluu_root(root, p)));
    }
    // Editor backups and dotfiles (an editor's swap file, a half-written temporary)
    // are never the cluster's files.
    cfg.push_str("    exclude *~ .*;\n");
    let shib = [
        in_gluu_root(root, "/opt/shibboleth-idp/conf/*"),
        in_gluu_root(root, "/opt/gluu/jetty/identity/conf/shibboleth3/idp/*"),
    ];
    let restart = shibboleth_restart(root);
    cfg.push_str(&format!(
        "    backup-directory /var/backups/csync2;\n    backup-generations 3;\n    auto younger;\n\n    # Shibboleth reads its configuration at start: restart it where it changed.\n    action {{\n        pattern {};\n        pattern {};\n        exec \"{restart}\";\n        logfile \"/var/log/csync2_action.log\";\n        do-local;\n    }}\n}}\n",
        shib[0], shib[1]
    ));
    let restart_listener = service(SERVICE, ServiceVerb::Restart);
    for (i, n) in gluu.iter().enumerate() {
        let node_cfg = out.entry(n.name.clone()).or_default();
        let Some(cert) = inputs.tunnel.csync2_certs.get(&n.name) else {
            node_cfg.waiting.push(format!(
                "csync2 waits for {}'s key: `clustermgr apply` has it generated on the node",
                n.name
            ));
            continue;
        };
        node_cfg
            .entries
            .push(file(CONFIG, cfg.clone(), 0o644, restart_listener.clone()));
        let mut k = file(
            "/etc/csync2.key",
            String::from_utf8_lossy(key).into_owned() + "\n",
            0o600,
            restart_listener.clone(),
        );
        k.secret = true;
        node_cfg.entries.push(k);
        node_cfg.entries.push(file(
            SSL_CERT,
            // csync2 sends only this file as its chain, and a peer's GnuTLS does not
            // send its own certificate to a server whose trusted list lacks the CA
            // (LINBIT/csync2#38): the host's certificate, then the CA's.
            format!("{cert}{}", inputs.tunnel.ca_pem),
            0o644,
            restart_listener.clone(),
        ));
        node_cfg.entries.extend(service_files(
            SERVICE,
            "csync2 listener for the Gluu cluster (clustermgr)",
            &["/usr/sbin/csync2"],
            &format!("-ii -N {}", n.name),
            false,
            &restart_listener,
        ));
        node_cfg.entries.push(file(
            "/etc/cron.d/clustermgr-csync2",
            format!(
                "{HEADER}SHELL=/bin/sh\n{}-59/2 * * * * root sleep {}; /usr/sbin/csync2 -x -N {} >{CSYNC2_LOG} 2>&1 && touch {CSYNC2_SYNCED_STAMP}\n",
                i % 2,
                (i * 20) % 60,
                n.name
            ),
            0o644,
            Vec::new(),
        ));
    }
    Ok(())
}
