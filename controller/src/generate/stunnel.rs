//! stunnel between the Gluu nodes and the cache host: every host its own key
//! (generated on it) and certificate from the tunnel CA, and every end verifying the
//! other's chain, and the client also the server's name, against that CA and its
//! revocation list.

use std::collections::BTreeMap;

use clustermgr_protocol::changeset::ServiceVerb;
use clustermgr_protocol::health::REDIS_ADDR;

use super::{HEADER, Inputs, NodeConfig, Sorted, file, ip_of, service, service_files};
use crate::model::Cache;
use crate::store::Role;

/// The service that runs the tunnels.
pub const SERVICE: &str = "clustermgr-stunnel";
/// The host's tunnel key, generated on the host; never an entry.
pub const KEY: &str = "/etc/stunnel/clustermgr/host.key";
const DIR: &str = "/etc/stunnel/clustermgr";
/// The files `serve` renews on its own (certificates and revocation list), without
/// an `apply`: they expire, and nothing else changes with them.
pub const RENEWED: &[&str] = &[
    "/etc/stunnel/clustermgr/ca.crt",
    "/etc/stunnel/clustermgr/crl.pem",
    "/etc/stunnel/clustermgr/host.crt",
];
/// Where the tunnel ends on the cache host.
pub const PORT: u16 = 16379;
/// The configuration: in its own directory, since Debian's `stunnel4` service starts
/// every `/etc/stunnel/*.conf` and would run it a second time.
pub const CONF: &str = "/etc/stunnel/clustermgr/stunnel.conf";

/// `ip:port` as stunnel reads it: it splits on the last colon and refuses brackets.
fn addr(n: &crate::store::NodeRecord, port: u16) -> String {
    format!("{}:{port}", ip_of(n))
}

pub(super) fn render(inputs: &Inputs, sorted: &Sorted, out: &mut BTreeMap<String, NodeConfig>) {
    if inputs.model.cache != Cache::Redis {
        return;
    }
    let caches = sorted.with(Role::Cache);
    let gluu = sorted.with(Role::Gluu);
    let cache = match caches.as_slice() {
        [one] => *one,
        _ => {
            let why = if caches.is_empty() {
                "a cache node: add one with `--role cache`, or `cluster set cache none`"
            } else {
                "exactly one cache node, and there are several"
            };
            for n in caches.iter().chain(&gluu) {
                out.entry(n.name.clone())
                    .or_default()
                    .waiting
                    .push(format!("stunnel waits for {why}"));
            }
            return;
        }
    };
    let restart = service(SERVICE, ServiceVerb::Restart);
    let common = format!("{HEADER}pid = /run/{SERVICE}.pid\n\n");
    let tls = format!(
        "cert = {DIR}/host.crt\nkey = {KEY}\nCAfile = {DIR}/ca.crt\nCRLfile = {DIR}/crl.pem\nverifyChain = yes\n"
    );
    for n in std::iter::once(&cache).chain(gluu.iter()) {
        let cfg = out.entry(n.name.clone()).or_default();
        let Some(cert) = inputs.tunnel.certs.get(&n.name) else {
            cfg.waiting.push(format!(
                "stunnel waits for {}'s tunnel key: `clustermgr apply` has it generated on the node",
                n.name
            ));
            continue;
        };
        let service_conf = if n.name == cache.name {
            format!(
                "[redis]\naccept = {}\nconnect = {REDIS_ADDR}\n{tls}",
                addr(cache, PORT)
            )
        } else {
            format!(
                "[redis]\nclient = yes\naccept = 127.0.0.1:{PORT}\nconnect = {}\ncheckHost = {}\n{tls}",
                addr(cache, PORT),
                cache.name
            )
        };
        cfg.entries.push(file(
            RENEWED[0],
            inputs.tunnel.ca_pem.clone(),
            0o644,
            restart.clone(),
        ));
        cfg.entries.push(file(
            RENEWED[1],
            inputs.tunnel.crl_pem.clone(),
            0o644,
            restart.clone(),
        ));
        cfg.entries
            .push(file(RENEWED[2], cert.clone(), 0o644, restart.clone()));
        cfg.entries.push(file(
            CONF,
            format!("{common}{service_conf}"),
            0o644,
            restart.clone(),
        ));
        cfg.entries.extend(service_files(
            SERVICE,
            "stunnel for the Gluu cluster's cache (clustermgr)",
            &["stunnel4", "stunnel"],
            CONF,
            true,
            &restart,
        ));
    }
}
