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

/// The status line of `GET path` over TLS to this host's `port`.
fn https_get(p: &HttpsProbe) -> Result<String, String> {
    https_fetch(p, TIMEOUT, 0).map(|(line, _)| line)
}

/// `GET path` over TLS to this host's `port`, the certificate pinned: the status line
/// and up to `body_limit` bytes of the body, all within `timeout` (a server that
/// trickles its answer is cut off there, not given `timeout` per read).
pub fn https_fetch(
    p: &HttpsProbe,
    timeout: Duration,
    body_limit: usize,
) -> Result<(String, String), String> {
    let config = clustermgr_protocol::identity::pinned_client_config(&p.cert_sha256)
        .map_err(|e| e.to_string())?;
    let name = ServerName::try_from(p.host.clone()).map_err(|e| format!("{}: {e}", p.host))?;
    let mut conn =
        rustls::ClientConnection::new(Arc::new(config), name).map_err(|e| e.to_string())?;
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, p.port));
    let deadline = std::time::Instant::now() + timeout;
    let mut sock = TcpStream::connect_timeout(&addr, timeout)
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    let left = || {
        deadline
            .saturating_duration_since(std::time::Instant::now())
            .max(Duration::from_millis(1))
    };
    sock.set_write_timeout(Some(left()))
        .map_err(|e| e.to_string())?;
    sock.set_read_timeout(Some(left()))
        .map_err(|e| e.to_string())?;
    let mut tls = rustls::Stream::new(&mut conn, &mut sock);
    let request = format!(
        "GET {} HTTP/1.0\r\nHost: {}\r\nConnection: close\r\n\r\n",
        p.path, p.host
    );
    tls.write_all(request.as_bytes())
        .map_err(|e| format!("TLS with {addr} failed: {e}"))?;
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    // Headers (up to 16 KiB) and then the body up to its limit.
    loop {
        let head_end = got.windows(4).position(|w| w == b"\r\n\r\n");
        let enough = match head_end {
            Some(h) => got.len() >= h + 4 + body_limit,
            None => got.len() >= 16 * 1024,
        };
        if enough || (body_limit == 0 && got.windows(2).any(|w| w == b"\r\n")) {
            break;
        }
        if std::time::Instant::now() >= deadline {
            return Err(format!(
                "{addr} did not finish answering within {} s",
                timeout.as_secs()
            ));
        }
        tls.sock
            .set_read_timeout(Some(left()))
            .map_err(|e| e.to_string())?;
        match tls.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&chunk[..n]),
            // A server closing without TLS close_notify has still sent what it sent.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !got.is_empty() => break,
            Err(e) => return Err(format!("no answer from {addr}: {e}")),
        }
    }
    let text = String::from_utf8_lossy(&got);
    let line = text.lines().next().unwrap_or_default().trim().to_string();
    if status_code(&line).is_none() {
        return Err(format!("{addr} did not answer HTTP: {line:?}"));
    }
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.chars().take(body_limit).collect())
        .unwrap_or_default();
    Ok((line, body))
}

/// The HTTP status code of a status line.
pub fn status_code(line: &str) -> Option<u16> {
    line.split_whitespace().nth(1)?.parse().ok()
}
