//! A rolling apply's gate, run on the node: the services the change touched are
//! running, and the node answers HTTPS itself with the cluster's certificate (pinned by
//! its hash: the probe never accepts a certificate blindly).

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use clustermgr_protocol::changeset::{HttpsProbe, ProbeSpec, StepRun};
use rustls::pki_types::ServerName;

use super::step;
use crate::config::AgentConfig;

/// How long one probe may take.
const TIMEOUT: Duration = Duration::from_secs(5);

/// Runs every check of `spec`; `scratch` takes the status commands' output.
pub fn probe(cfg: &AgentConfig, spec: &ProbeSpec, scratch: &std::path::Path) -> Vec<StepRun> {
    let mut out = Vec::new();
    for name in &spec.services {
        out.push(match step::status_step(name, &cfg.root) {
            Ok(s) => step::run(&s, step::VALIDATE_TIMEOUT, scratch),
            Err(why) => StepRun {
                step: format!("{name} running"),
                ok: false,
                output: why,
            },
        });
    }
    if let Some(h) = &spec.https {
        let step = format!("HTTPS GET {} on port {}", h.path, h.port);
        out.push(match https_get(h) {
            Ok(status) => StepRun {
                step,
                ok: status_code(&status).is_some_and(|c| c < 500),
                output: status,
            },
            Err(why) => StepRun {
                step,
                ok: false,
                output: why,
            },
        });
    }
    out
}

fn status_code(line: &str) -> Option<u16> {
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The status line of `GET path` over TLS to this host's `port`.
fn https_get(p: &HttpsProbe) -> Result<String, String> {
    let config = clustermgr_protocol::identity::pinned_client_config(&p.cert_sha256)
        .map_err(|e| e.to_string())?;
    let name = ServerName::try_from(p.host.clone()).map_err(|e| format!("{}: {e}", p.host))?;
    let mut conn =
        rustls::ClientConnection::new(Arc::new(config), name).map_err(|e| e.to_string())?;
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, p.port));
    let mut sock = TcpStream::connect_timeout(&addr, TIMEOUT)
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    sock.set_read_timeout(Some(TIMEOUT))
        .map_err(|e| e.to_string())?;
    sock.set_write_timeout(Some(TIMEOUT))
        .map_err(|e| e.to_string())?;
    let mut tls = rustls::Stream::new(&mut conn, &mut sock);
    let request = format!(
        "GET {} HTTP/1.0\r\nHost: {}\r\nConnection: close\r\n\r\n",
        p.path, p.host
    );
    tls.write_all(request.as_bytes())
        .map_err(|e| format!("TLS with {addr} failed: {e}"))?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while head.len() < 1024 && !head.ends_with(b"\r\n") {
        match tls.read(&mut byte) {
            Ok(0) => break,
            Ok(_) => head.push(byte[0]),
            Err(e) => return Err(format!("no answer from {addr}: {e}")),
        }
    }
    let line = String::from_utf8_lossy(&head).trim().to_string();
    if status_code(&line).is_none() {
        return Err(format!("{addr} did not answer HTTP: {line:?}"));
    }
    Ok(line)
}
