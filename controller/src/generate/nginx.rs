//! The load balancer's nginx: two upstreams over the Gluu nodes' 443 with passive
//! health, the Gluu location routing, the 80→443 redirect, the cluster certificate and
//! a ping location. Needs nginx 1.13 or later (TLS 1.3); an older nginx fails the
//! `nginx -t` validation and the apply is rolled back with its words.
//!
//! The load balancer verifies each node's certificate when the cluster certificate's
//! chain ends at its root (Gluu's own setup makes a self-signed one): it trusts exactly
//! that chain, and checks the cluster hostname. A chain that stops below its root cannot
//! be verified without the distribution's CA bundle, whose path differs by distribution;
//! the plan says so.

use std::collections::BTreeMap;
use std::fmt::Write;

use clustermgr_protocol::changeset::{ServiceVerb, Validator};

use super::{HEADER, Inputs, NodeConfig, Sorted, file, ip_port, service};
use crate::model::LbSession;
use crate::store::Role;

/// Where the cluster's certificate and key go on the load balancer.
pub const CERT: &str = "/etc/nginx/ssl/clustermgr/cluster.crt";
/// The key, secret.
pub const KEY: &str = "/etc/nginx/ssl/clustermgr/cluster.key";
/// The main configuration: the whole file, so no distribution default site binds 80.
pub const CONF: &str = "/etc/nginx/nginx.conf";

use crate::keymatch::Pair;

pub(super) fn render(inputs: &Inputs, sorted: &Sorted, out: &mut BTreeMap<String, NodeConfig>) {
    let lbs = sorted.with(Role::Lb);
    if lbs.is_empty() {
        return;
    }
    let gluu = sorted.with(Role::Gluu);
    let mut missing = Vec::new();
    let hostname = inputs.model.hostname.as_deref();
    if hostname.is_none() {
        missing.push("the cluster hostname: run `clustermgr cluster set hostname NAME`");
    }
    match &inputs.secrets.tls {
        None => missing.push(
            "the cluster's TLS certificate and key: run `clustermgr cluster set tls-cert FILE` and `clustermgr cluster set tls-key FILE`",
        ),
        // A wrong pair would fail `nginx -t` at best; it is said here, at `plan`.
        Some((cert, key)) if crate::keymatch::compare(cert, key) == Pair::Differs => missing.push(
            "a TLS key that matches the cluster's certificate (the tls-key set is not the one tls-cert certifies): set the pair's other half with `clustermgr cluster set tls-key FILE` (or tls-cert)",
        ),
        Some(_) => {}
    }
    if gluu.is_empty() {
        missing.push("a Gluu node to balance: add one with `clustermgr node add NODE --role gluu`");
    }
    for lb in &lbs {
        let cfg = out.entry(lb.name.clone()).or_default();
        if !missing.is_empty() {
            for m in &missing {
                cfg.waiting
                    .push(format!("the load balancer's nginx waits for {m}"));
            }
            continue;
        }
        let (Some(hostname), Some((cert, key))) = (hostname, inputs.secrets.tls.as_ref()) else {
            continue;
        };
        let reload = service("nginx", ServiceVerb::Reload);
        cfg.entries
            .push(file(CERT, cert.clone(), 0o644, reload.clone()));
        let mut k = file(KEY, key.clone(), 0o600, reload.clone());
        k.secret = true;
        cfg.entries.push(k);
        let verify = chain_ends_at_root(cert);
        if !verify {
            cfg.waiting.push(
                "the load balancer to verify the Gluu nodes' certificates: the tls-cert file's chain does not end at a root certificate; append the root to it and run `clustermgr cluster set tls-cert FILE` again (until then the nodes' certificates are not checked)".into(),
            );
        }
        let mut conf = file(CONF, config(inputs, &gluu, hostname, verify), 0o644, reload);
        conf.validate = Some(Validator::Nginx);
        cfg.entries.push(conf);
    }
}

/// Whether the last certificate of a PEM chain is self-issued: then the chain can be
/// the load balancer's trust anchor for the nodes.
fn chain_ends_at_root(pem: &str) -> bool {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let Some(Ok(last)) = CertificateDer::pem_slice_iter(pem.as_bytes()).last() else {
        return false;
    };
    x509_parser::parse_x509_certificate(&last)
        .is_ok_and(|(_, c)| c.subject().as_raw() == c.issuer().as_raw())
}

fn config(
    inputs: &Inputs,
    gluu: &[&crate::store::NodeRecord],
    hostname: &str,
    verify: bool,
) -> String {
    let mut upstreams = String::new();
    for (name, affinity) in [
        ("backend", None),
        (
            "backend_id",
            Some(match inputs.model.lb_session {
                LbSession::IpHash => "ip_hash",
                LbSession::Sticky => "sticky",
            }),
        ),
    ] {
        let _ = writeln!(upstreams, "    upstream {name} {{");
        if let Some(a) = affinity {
            let _ = writeln!(upstreams, "        {a};");
        }
        for n in gluu {
            let down = if inputs.model.drained.contains(&n.name) {
                " down"
            } else {
                ""
            };
            let _ = writeln!(
                upstreams,
                "        server {} max_fails=2 fail_timeout=10s{down};  # {}",
                ip_port(n, 443),
                n.name
            );
        }
        upstreams.push_str("    }\n\n");
    }
    let names: Vec<&str> = gluu.iter().map(|n| n.name.as_str()).collect();
    let proxy = |upstream: &str| {
        format!(
            "            proxy_pass https://{upstream};\n            proxy_set_header Host {hostname};\n            proxy_set_header X-Real-IP $remote_addr;\n            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n            proxy_set_header X-Forwarded-Proto https;\n            proxy_next_upstream error timeout http_500 http_502 http_503 http_504;\n            proxy_ssl_server_name on;\n            proxy_ssl_name {hostname};\n"
        )
    };
    let verify = if verify {
        format!(
            "        proxy_ssl_verify on;\n        proxy_ssl_verify_depth 4;\n        proxy_ssl_trusted_certificate {CERT};\n\n"
        )
    } else {
        "        proxy_ssl_verify off;\n\n".to_string()
    };
    let mut locations = String::new();
    for (loc, upstream) in [
        ("/", "backend"),
        ("/.well-known", "backend"),
        ("/oxauth", "backend"),
        ("/identity", "backend_id"),
        ("/idp", "backend_id"),
        ("/passport", "backend_id"),
        ("/casa", "backend_id"),
    ] {
        let _ = write!(
            locations,
            "        location {loc} {{\n{}        }}\n\n",
            proxy(upstream)
        );
    }
    format!(
        "{HEADER}worker_processes auto;\npid /run/nginx.pid;\n\nevents {{\n    worker_connections 1024;\n}}\n\nhttp {{\n    include /etc/nginx/mime.types;\n    default_type application/octet-stream;\n    sendfile on;\n    keepalive_timeout 65;\n    server_tokens off;\n    access_log /var/log/nginx/access.log;\n    error_log /var/log/nginx/error.log;\n\n{upstreams}    server {{\n        listen 80;\n        server_name {hostname};\n        return 301 https://$host$request_uri;\n    }}\n\n    server {{\n        listen 443 ssl;\n        server_name {hostname};\n        ssl_certificate {CERT};\n        ssl_certificate_key {KEY};\n        ssl_protocols TLSv1.2 TLSv1.3;\n        ssl_prefer_server_ciphers on;\n\n        location = /clustermgr/ping {{\n            default_type text/plain;\n            return 200 \"ok {}\\n\";\n        }}\n\n{verify}{locations}    }}\n}}\n",
        names.join(" ")
    )
}
