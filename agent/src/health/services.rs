//! The services a node offers, tried as a client would: the Gluu health endpoints on
//! the node itself (for the components it has installed) and, on the load balancer,
//! through nginx; Redis, directly on the cache host and through the stunnel tunnel on
//! the Gluu nodes.

use std::io::{BufRead, Read, Write};
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
        ServiceKind::RedisPing { addr } => redis_ping(addr, None, &took),
        ServiceKind::RedisPingAuth {
            addr,
            password_file,
        } => {
            let file = root.join(password_file.trim_start_matches('/'));
            match std::fs::read_to_string(&file) {
                Ok(text) => redis_ping(addr, Some(text.trim_end_matches(['\n', '\r'])), &took),
                // Before the apply that writes it: the check as it was before passwords.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    redis_ping(addr, None, &took).map(|ok| {
                        format!("{ok}, not authenticated: no {password_file} yet (`clustermgr apply` writes it)")
                    })
                }
                Err(e) => Err(format!(
                    "cannot read the Redis password file {}: {e}",
                    file.display()
                )),
            }
        }
        ServiceKind::FileSha256 { path, sha256, fix } => {
            let file = root.join(path.trim_start_matches('/'));
            match file_sha256(&file) {
                Ok(got) if got == *sha256 => Ok("the cluster's".into()),
                Ok(_) => Err(format!("{path} differs from the cluster's; {fix}")),
                Err(e) => Err(format!("{path}: {e}; {fix}")),
            }
        }
    }
}

/// The largest file [`ServiceKind::FileSha256`] reads: a keystore is a few KiB.
const HASHED_LIMIT: u64 = 4 * 1024 * 1024;

/// The SHA-256 of the regular file `file`, opened without following a link (a user
/// owning its directory could otherwise point it at any file root may read).
fn file_sha256(file: &Path) -> Result<String, String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(file)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => "is missing".to_string(),
            _ => format!("cannot be read ({e}); a link is never followed"),
        })?;
    let meta = f.metadata().map_err(|e| e.to_string())?;
    if !meta.is_file() || meta.len() > HASHED_LIMIT {
        return Err("is not a regular file of a keystore's size".into());
    }
    let mut bytes = Vec::new();
    f.take(HASHED_LIMIT)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    Ok(clustermgr_protocol::identity::sha256_hex(&bytes))
}

/// A Redis command as a RESP array of bulk strings: any bytes in an argument (a
/// password) are sent as they are, never parsed as an inline command's separators.
fn resp(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// `PING` at `addr`, after `AUTH` when a password is given. Redis answers each
/// command with one line; an error line is reported as Redis said it (`WRONGPASS
/// ...`, `NOAUTH ...`), never with the password.
fn redis_ping(
    addr: &str,
    password: Option<&str>,
    took: &dyn Fn() -> String,
) -> Result<String, String> {
    let a: SocketAddr = addr
        .to_socket_addrs()
        .map_err(|e| format!("{addr}: {e}"))?
        .next()
        .ok_or_else(|| format!("{addr} has no address"))?;
    let s = TcpStream::connect_timeout(&a, TIMEOUT)
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    s.set_read_timeout(Some(TIMEOUT))
        .map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(TIMEOUT))
        .map_err(|e| e.to_string())?;
    let mut request = Vec::new();
    if let Some(p) = password {
        request.extend(resp(&["AUTH", p]));
    }
    request.extend(resp(&["PING"]));
    (&s).write_all(&request)
        .map_err(|e| format!("{addr}: {e}"))?;
    let mut lines = std::io::BufReader::new(&s);
    let mut line = |what: &str| -> Result<String, String> {
        let mut buf = Vec::new();
        (&mut lines)
            .take(512)
            .read_until(b'\n', &mut buf)
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => format!(
                    "{addr} accepted but did not answer {what} within {} s",
                    TIMEOUT.as_secs()
                ),
                _ => format!("{addr}: {e}"),
            })?;
        Ok(String::from_utf8_lossy(&buf).trim().to_string())
    };
    if password.is_some() {
        let answer = line("AUTH")?;
        if answer.is_empty() {
            return Err(format!(
                "{addr} closed the connection without answering AUTH (a tunnel whose far end is down?)"
            ));
        }
        if !answer.starts_with("+OK") {
            return Err(format!(
                "{addr} refused the password: {}",
                answer.trim_start_matches('-')
            ));
        }
    }
    let answer = line("PING")?;
    if answer.starts_with("+PONG") {
        Ok(format!(
            "PONG in {}{}",
            took(),
            if password.is_some() {
                ", authenticated"
            } else {
                ""
            }
        ))
    } else if answer.starts_with("-NOAUTH") && password.is_none() {
        Ok(format!("answers (asks for its password) in {}", took()))
    } else if answer.is_empty() {
        Err(format!(
            "{addr} closed the connection without answering PING (a tunnel whose far end is down?)"
        ))
    } else {
        Err(format!("{addr} answered PING with {answer:?}"))
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

    #[test]
    fn redis_auth_sends_the_file_s_password_and_reports_redis_s_refusal() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("etc")).unwrap();
        std::fs::write(t.path().join("etc/pw"), "s3cret pass\n").unwrap();
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let server = std::thread::spawn(move || {
            let mut seen = Vec::new();
            for answer in [
                &b"+OK\r\n+PONG\r\n"[..],
                b"-WRONGPASS invalid username-password pair or user is disabled.\r\n",
                b"-NOAUTH Authentication required.\r\n",
            ] {
                let (mut s, _) = l.accept().unwrap();
                let mut buf = [0u8; 256];
                let n = s.read(&mut buf).unwrap();
                seen.push(buf[..n].to_vec());
                s.write_all(answer).unwrap();
            }
            seen
        });
        let ping = |file: &str| {
            try_one(
                t.path(),
                &ServiceKind::RedisPingAuth {
                    addr: addr.clone(),
                    password_file: file.into(),
                },
            )
        };
        let ok = ping("/etc/pw").unwrap();
        assert!(
            ok.starts_with("PONG") && ok.contains("authenticated"),
            "{ok}"
        );
        let refused = ping("/etc/pw").unwrap_err();
        assert!(refused.contains("WRONGPASS invalid"), "{refused}");
        assert!(!refused.contains("s3cret"), "{refused}");
        // No file yet (before apply): Redis asking for its password still answers.
        let unauth = ping("/etc/absent").unwrap();
        assert!(
            unauth.contains("not authenticated: no /etc/absent"),
            "{unauth}"
        );
        let seen = server.join().unwrap();
        // The password went as a RESP bulk string, its space and all, then PING.
        assert_eq!(
            seen[0],
            b"*2\r\n$4\r\nAUTH\r\n$11\r\ns3cret pass\r\n*1\r\n$4\r\nPING\r\n"
        );
        assert_eq!(seen[2], b"*1\r\n$4\r\nPING\r\n");
    }
}
