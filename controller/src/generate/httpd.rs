//! The cluster's TLS certificate on every Gluu node: Apache's `etc/certs/httpd.crt`
//! and `httpd.key` in the container (the load balancer re-encrypts to the nodes and
//! checks their certificate against the cluster's), the certificate trusted by the
//! container's Java under the alias Gluu's setup gives it (`HOSTNAME_httpd`: oxAuth and
//! oxTrust call each other by the cluster's name), then Apache and the applications
//! restarted to load both.
//!
//! Ownership is left as the node has it: Gluu's setup makes `/etc/certs` its Java
//! user's (`jetty` on 3.1 and 4.x, `tomcat` or `apache` on older releases), and Apache
//! reads the key as root whatever its owner, so naming one user would be wrong for
//! some release and would fail on a node whose container has no such user yet. The
//! key's mode is 0600 (setup's is 0500 or 0700: owner-only either way).

use std::collections::BTreeMap;

use clustermgr_protocol::changeset::{Action, Content, Entry, Scope};

use super::{Inputs, NodeConfig, Sorted};
use crate::keymatch::Pair;
use crate::store::Role;

/// Apache's certificate, in the container.
pub const CERT: &str = "/etc/certs/httpd.crt";
/// Its key, secret.
pub const KEY: &str = "/etc/certs/httpd.key";
/// What restarts when either changes, each only where installed: Apache by either
/// distribution's name, then oxAuth and oxTrust, which read the trust store at start.
const RESTARTED: &[&str] = &["apache2", "httpd", "oxauth", "identity"];

pub(super) fn render(inputs: &Inputs, sorted: &Sorted, out: &mut BTreeMap<String, NodeConfig>) {
    // No cluster certificate: the nodes keep the one Gluu's setup made.
    let Some((cert, key)) = inputs.secrets.tls.as_ref() else {
        return;
    };
    let gluu = sorted.with(Role::Gluu);
    let waits = match (&inputs.model.hostname, crate::keymatch::compare(cert, key)) {
        (_, Pair::Differs) => Some(
            "a TLS key that matches the cluster's certificate: set the pair's other half with `clustermgr cluster set tls-key FILE` (or tls-cert)",
        ),
        (None, _) => Some(
            "the cluster hostname, which names the certificate in Java's trust store: run `clustermgr cluster set hostname NAME`",
        ),
        _ => None,
    };
    if let Some(why) = waits {
        for n in &gluu {
            out.entry(n.name.clone())
                .or_default()
                .waiting
                .push(format!("Apache's certificate on the node waits for {why}"));
        }
        return;
    }
    let Some(hostname) = &inputs.model.hostname else {
        return;
    };
    let root = inputs.model.gluu_root.as_str();
    let scope = if root == "/" {
        Scope::Host
    } else {
        Scope::Container {
            root: root.to_string(),
        }
    };
    let restart = Action::RestartInstalled {
        services: RESTARTED.iter().map(|s| s.to_string()).collect(),
    };
    let entry = |path: &str, bytes: &str, mode: u32, secret: bool, on_change: Vec<Action>| Entry {
        path: path.into(),
        scope: scope.clone(),
        content: Content::File {
            bytes: bytes.as_bytes().to_vec(),
            mode,
            owner: None,
            group: None,
        },
        secret,
        validate: None,
        on_change,
    };
    for n in &gluu {
        let cfg = out.entry(n.name.clone()).or_default();
        // The import before the restarts: the applications read the store at start.
        cfg.entries.push(entry(
            CERT,
            cert,
            0o644,
            false,
            vec![
                Action::JavaTrust {
                    alias: format!("{hostname}_httpd"),
                    cert: CERT.into(),
                },
                restart.clone(),
            ],
        ));
        cfg.entries
            .push(entry(KEY, key, 0o600, true, vec![restart.clone()]));
    }
}
