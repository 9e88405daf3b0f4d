//! The services a node offers, tried as a client would: the Gluu health endpoints on
//! the node itself (for the components it has installed) and, on the load balancer,
//! through nginx; Redis, directly on the cache host and through the stunnel tunnel on
//! the Gluu nodes.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::Path;
use std::time::{Duration, Instant};

use clustermgr_protocol::changeset::HttpsProbe;
use clustermgr_protocol::health::{GLUU_ENDPOINTS, ServiceKind, ServiceProbe, ServiceState};
use clustermgr_protocol::message::GluuInstall;

/// How long one service has for each connect, read and write.
const TIMEOUT: Duration = Duration::from_secs(2);
/// How much of a body is read to find what it must hold.
const BODY_LIMIT: usize = 64 * 1024;

/// The health endpoints of the Gluu components installed in `gluu`, asked for by
/// `hostname` on the node's own 443, Apache's certificate pinned.
pub fn gluu_endpoints(gluu: &GluuInstall, hostname: &str) -> Vec<ServiceProbe> {
    let cert = crate::info::httpd_cert(gluu);
    GLUU_ENDPOINTS
        .iter()
        .filter(|e| gluu.components.iter().any(|c| c == e.component))
        .map(|e| ServiceProbe {
            label: format!("{} on the node", e.name),
            kind: ServiceKind::Https {
                port: 443,
                host: hostname.to_string(),
                path: e.path.to_string(),
                expect: e.expect.to_string(),
                cert: cert.display().to_string(),
            },
        })
        .collect()
}

/// Tries every probe at once.
pub fn try_all(root: &Path, probes: &[ServiceProbe]) -> Vec<ServiceState> {
    super::in_parallel(probes, |p| try_one(root, &p.kind))
        .into_iter()
        .zip(probes)
        .map(|(result, p)| ServiceState {
            label: p.label.clone(),
            result,
        })
        .collect()
}

fn try_one(root: &Path, kind: &ServiceKind) -> Result<String, String> {
    let started = Instant::now();
    let took = || format!("{} ms", started.elapsed().as_millis());
    match kind {
        ServiceKind::Https {
            port,
            host,
            path,
            expect,
            cert,
        } => {
            let file = root.join(cert.trim_start_matches('/'));
            let pem = std::fs::read_to_string(&file)
                .map_err(|e| format!("cannot read the certificate {}: {e}", file.display()))?;
            let der = clustermgr_protocol::identity::cert_from_pem(&pem)
                .map_err(|e| format!("{}: {e}", file.display()))?;
            let probe = HttpsProbe {
                port: *port,
                host: host.clone(),
                path: path.clone(),
                cert_sha256: clustermgr_protocol::identity::sha256_hex(&der),
            };
            let (line, body) = crate::apply::probe::https_fetch(&probe, TIMEOUT, BODY_LIMIT)
                .map_err(|e| format!("GET https://{host}:{port}{path}: {e}"))?;
            let code = crate::apply::probe::status_code(&line).unwrap_or(0);
            let excerpt: String = body.trim().chars().take(120).collect();
            if !(200..300).contains(&code) {
                return Err(format!("GET {path} answered {line}: {excerpt}"));
            }
            if !body.contains(expect.as_str()) {
                return Err(format!(
                    "GET {path} answered {code} without \"{expect}\": {excerpt}"
                ));
            }
            Ok(format!("{code} in {}", took()))
        }
        ServiceKind::RedisPing { addr } => {
            let a: SocketAddr = addr
                .to_socket_addrs()
                .map_err(|e| format!("{addr}: {e}"))?
                .next()
                .ok_or_else(|| format!("{addr} has no address"))?;
            let mut s = TcpStream::connect_timeout(&a, TIMEOUT)
                .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
            s.set_read_timeout(Some(TIMEOUT))
                .map_err(|e| e.to_string())?;
            s.set_write_timeout(Some(TIMEOUT))
                .map_err(|e| e.to_string())?;
            s.write_all(b"PING\r\n")
                .map_err(|e| format!("{addr}: {e}"))?;
            let mut buf = [0u8; 128];
            let n = s.read(&mut buf).map_err(|e| match e.kind() {
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => format!(
                    "{addr} accepted but did not answer PING within {} s",
                    TIMEOUT.as_secs()
                ),
                _ => format!("{addr}: {e}"),
            })?;
            let answer = String::from_utf8_lossy(&buf[..n]).trim().to_string();
            if answer.starts_with("+PONG") {
                Ok(format!("PONG in {}", took()))
            } else if answer.starts_with("-NOAUTH") {
                Ok(format!("answers (asks for its password) in {}", took()))
            } else if answer.is_empty() {
                Err(format!(
                    "{addr} closed the connection without answering PING (a tunnel whose far end is down?)"
                ))
            } else {
                Err(format!("{addr} answered PING with {answer:?}"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_follow_the_installed_components() {
        let t = tempfile::tempdir().unwrap();
        let c = t.path().join("opt/gluu-server");
        for m in ["opt/gluu/jetty/oxauth", "opt/gluu/jetty/identity"] {
            std::fs::create_dir_all(c.join(m)).unwrap();
        }
        let gluu = crate::info::detect_gluu(t.path()).unwrap();
        let e = gluu_endpoints(&gluu, "idp.example.org");
        let labels: Vec<&str> = e.iter().map(|p| p.label.as_str()).collect();
        assert_eq!(labels, ["oxAuth on the node", "oxTrust on the node"]);
        let ServiceKind::Https { cert, host, .. } = &e[0].kind else {
            panic!("{e:?}")
        };
        assert_eq!(cert, "/opt/gluu-server/etc/certs/httpd.crt");
        assert_eq!(host, "idp.example.org");
    }

    #[test]
    fn redis_ping_tells_an_answer_from_a_silent_tunnel() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let server = std::thread::spawn(move || {
            for answer in [
                &b"+PONG\r\n"[..],
                b"-NOAUTH Authentication required.\r\n",
                b"",
            ] {
                let (mut s, _) = l.accept().unwrap();
                let mut buf = [0u8; 16];
                let _ = s.read(&mut buf);
                s.write_all(answer).unwrap();
            }
        });
        let ping = || {
            try_one(
                Path::new("/"),
                &ServiceKind::RedisPing { addr: addr.clone() },
            )
        };
        assert!(ping().unwrap().starts_with("PONG"));
        assert!(ping().unwrap().contains("password"));
        assert!(ping().unwrap_err().contains("without answering"));
        server.join().unwrap();
    }
}
