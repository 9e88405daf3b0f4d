//! The HTTP/1.1 client that posts to the administrator's services (InfluxDB, an alert
//! webhook): hyper over a TCP connection, or over TLS (rustls) for an `https://` URL,
//! the server's certificate verified against the system's CA bundle
//! (`/etc/ssl/certs/ca-certificates.crt`, or `SSL_CERT_FILE` as OpenSSL reads it) and
//! its name. One request per connection, with deadlines, and only the first bytes of
//! a reply read. A secret (credentials in the URL, a token) goes only over https or
//! to this machine.

use std::time::Duration;

use crate::CtlError;

/// An `http://` or `https://host:port/path?query` URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// Over TLS (`https://`).
    pub tls: bool,
    /// The host (a name or an address; IPv6 in brackets).
    pub host: String,
    /// The port.
    pub port: u16,
    /// The path and query.
    pub path: String,
}

impl Target {
    /// Parses `url`, given as `what` (the flag or setting, for messages), with the
    /// port and path used when it names none.
    pub fn parse(
        url: &str,
        what: &'static str,
        default_port: u16,
        default_path: &str,
    ) -> Result<Target, CtlError> {
        let bad = |why: &str| CtlError::BadArgument {
            flag: what,
            value: redacted(url),
            why: why.to_string(),
        };
        let (tls, rest) = match (url.strip_prefix("https://"), url.strip_prefix("http://")) {
            (Some(r), _) => (true, r),
            (None, Some(r)) => (false, r),
            _ => {
                return Err(bad(&format!(
                    "give an http:// or https:// URL, such as http://127.0.0.1:{default_port}{default_path}"
                )));
            }
        };
        let default_port = if tls { 443 } else { default_port };
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let (userinfo, authority) = match authority.rsplit_once('@') {
            Some((u, a)) => (Some(u), a),
            None => (None, authority),
        };
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => (
                h.to_string(),
                p.parse().map_err(|_| bad("the port is not a number"))?,
            ),
            _ => (authority.to_string(), default_port),
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let t = Target {
            tls,
            host,
            port,
            path: if path.is_empty() {
                default_path.into()
            } else {
                path.into()
            },
        };
        let credentials = userinfo.is_some() || query_credential(&t.path).is_some();
        if credentials && !t.private() {
            return Err(bad(
                "the credentials in it would cross the network in the clear (plain http to a host that is not this machine); use https, or reach the service on loopback or through an SSH tunnel",
            ));
        }
        if userinfo.is_some() {
            return Err(bad(
                "a user and password before the host are not sent (clustermgr sends no basic authentication); pass them as the service reads them from the query (InfluxDB 1.x: ?u=NAME&p=PASSWORD), or use a token file",
            ));
        }
        Ok(t)
    }
}

/// The query keys that carry a secret: InfluxDB 1.x's user and password, a token.
const CREDENTIAL_KEYS: &[&str] = &["u", "p", "password", "token"];

/// The first credential key in `path`'s query, if any.
fn query_credential(path: &str) -> Option<&str> {
    let (_, query) = path.split_once('?')?;
    query
        .split('&')
        .map(|pair| pair.split_once('=').map_or(pair, |(k, _)| k))
        .find(|k| CREDENTIAL_KEYS.contains(k))
}

/// `url` with its user and password and its query's credentials made `***`, for
/// messages.
fn redacted(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let authority = match authority.rsplit_once('@') {
        Some((_, host)) => format!("***@{host}"),
        None => authority.to_string(),
    };
    let path = match path.split_once('?') {
        Some((p, query)) => {
            let pairs: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((k, _)) if CREDENTIAL_KEYS.contains(&k) => format!("{k}=***"),
                    _ => pair.to_string(),
                })
                .collect();
            format!("{p}?{}", pairs.join("&"))
        }
        None => path.to_string(),
    };
    let scheme = if scheme.is_empty() {
        String::new()
    } else {
        format!("{scheme}://")
    };
    format!("{scheme}{authority}{path}")
}

impl Target {
    /// Whether a secret may go there: over https, or to this machine.
    pub fn private(&self) -> bool {
        self.tls || self.is_loopback()
    }

    /// Whether the host is this machine (a loopback address or `localhost`): the only
    /// place a secret may go over plain http.
    pub fn is_loopback(&self) -> bool {
        let host = self.host.trim_matches(['[', ']']);
        host.eq_ignore_ascii_case("localhost")
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    }
}

/// The most of a reply read: enough for any status line and error message, and a
/// server that never stops sending cannot grow the controller's memory.
const MAX_REPLY: u64 = 64 * 1024;

/// Where the system keeps the CAs it trusts (Debian's bundle), unless `SSL_CERT_FILE`
/// names another, as OpenSSL and curl read it.
const SYSTEM_CAS: &str = "/etc/ssl/certs/ca-certificates.crt";

/// The TLS client settings: the system's CAs, rustls' safe defaults.
fn tls_config() -> Result<std::sync::Arc<rustls::ClientConfig>, String> {
    let path = std::env::var_os("SSL_CERT_FILE")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| SYSTEM_CAS.into());
    tls_config_from(&path)
}

/// The TLS client settings trusting the CAs in the PEM bundle `path`.
fn tls_config_from(path: &std::path::Path) -> Result<std::sync::Arc<rustls::ClientConfig>, String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let pem = std::fs::read(path).map_err(|e| {
        format!(
            "cannot read the CA bundle {} to verify the server with: {e} (install ca-certificates, or set SSL_CERT_FILE)",
            path.display()
        )
    })?;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(&pem).flatten() {
        let _ = roots.add(c);
    }
    if roots.is_empty() {
        return Err(format!("no CA certificate in {}", path.display()));
    }
    let cfg = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(std::sync::Arc::new(cfg))
}

/// POSTs `body` as `content_type`, with an `Authorization` header when given; returns
/// the status code and the reply body's first bytes.
pub async fn post(
    t: &Target,
    content_type: &str,
    authorization: Option<&str>,
    body: &[u8],
) -> Result<(u16, String), String> {
    let tls = if t.tls { Some(tls_config()?) } else { None };
    post_with(t, content_type, authorization, body, tls).await
}

/// [`post`] with the TLS settings given (`None` for plain http).
async fn post_with(
    t: &Target,
    content_type: &str,
    authorization: Option<&str>,
    body: &[u8],
    tls: Option<std::sync::Arc<rustls::ClientConfig>>,
) -> Result<(u16, String), String> {
    let mut headers = vec![("Content-Type", content_type)];
    if let Some(a) = authorization {
        headers.push(("Authorization", a));
    }
    let (code, got) = request(t, "POST", &headers, body, MAX_REPLY as usize, tls).await?;
    let text = String::from_utf8_lossy(&got);
    Ok((code, text.chars().take(300).collect()))
}

/// Sends `method` with `headers` and `body` to `t`; returns the status code and at most
/// `max` bytes of the reply (documents an OpenID provider publishes, say).
pub async fn fetch(
    t: &Target,
    method: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    max: usize,
) -> Result<(u16, Vec<u8>), String> {
    let tls = if t.tls { Some(tls_config()?) } else { None };
    request(t, method, headers, body, max, tls).await
}

async fn request(
    t: &Target,
    method: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    max: usize,
    tls: Option<std::sync::Arc<rustls::ClientConfig>>,
) -> Result<(u16, Vec<u8>), String> {
    let host = t.host.trim_matches(['[', ']']).to_string();
    let connect = tokio::net::TcpStream::connect((host.as_str(), t.port));
    let sock = tokio::time::timeout(Duration::from_secs(10), connect)
        .await
        .map_err(|_| "no answer within 10 s".to_string())?
        .map_err(|e| e.to_string())?;
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(&t.path)
        .header(hyper::header::HOST, format!("{}:{}", t.host, t.port))
        .header(hyper::header::CONNECTION, "close");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req
        .body(http_body_util::Full::new(
            hyper::body::Bytes::copy_from_slice(body),
        ))
        .map_err(|e| e.to_string())?;
    let exchange = async {
        if let Some(cfg) = tls {
            let name = rustls::pki_types::ServerName::try_from(host.clone())
                .map_err(|e| format!("{host}: {e}"))?;
            let tls = tokio_rustls::TlsConnector::from(cfg)
                .connect(name, sock)
                .await
                .map_err(|e| format!("TLS with {host}: {e}"))?;
            exchange(tls, req, max).await
        } else {
            exchange(sock, req, max).await
        }
    };
    tokio::time::timeout(Duration::from_secs(30), exchange)
        .await
        .map_err(|_| "no reply within 30 s".to_string())?
}

/// Sends `req` on `io` and reads the status and at most `max` bytes of the reply.
async fn exchange<IO>(
    io: IO,
    req: hyper::Request<http_body_util::Full<hyper::body::Bytes>>,
    max: usize,
) -> Result<(u16, Vec<u8>), String>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    use http_body_util::BodyExt;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io))
            .await
            .map_err(|e| e.to_string())?;
    let driver = tokio::spawn(conn);
    let res = sender.send_request(req).await.map_err(|e| e.to_string());
    let res = match res {
        Ok(r) => r,
        Err(e) => {
            driver.abort();
            return Err(e);
        }
    };
    let code = res.status().as_u16();
    let mut body = res.into_body();
    let mut got = Vec::new();
    while got.len() < max {
        match body.frame().await {
            Some(Ok(f)) => {
                if let Some(d) = f.data_ref() {
                    got.extend_from_slice(d);
                }
            }
            _ => break,
        }
    }
    driver.abort();
    got.truncate(max);
    Ok((code, got))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// An HTTPS server on loopback answering one request with 204, with a
    /// certificate for `name` from a new CA; the CA's PEM and the port.
    async fn https_server(name: &str) -> (String, u16) {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let now = crate::clock::Clock::now(&crate::clock::SystemClock);
        let (ca, _) = crate::ca::Ca::create_console("t", now).unwrap();
        let (cert, key) = ca
            .issue_console(&[name.to_string()], now, time::Duration::days(1))
            .unwrap();
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(cert.pem.as_bytes())
                .collect::<Result<_, _>>()
                .unwrap();
        let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
        let cfg = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(cfg));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((c, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    if let Ok(mut s) = acceptor.accept(c).await {
                        let mut buf = [0u8; 4096];
                        let _ = s.read(&mut buf).await;
                        let _ = s
                            .write_all(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n")
                            .await;
                        let _ = s.shutdown().await;
                    }
                });
            }
        });
        (ca.cert_pem().to_string(), port)
    }

    #[tokio::test]
    async fn https_verifies_the_servers_certificate_and_name() {
        let (ca_pem, port) = https_server("127.0.0.1").await;
        let dir = tempfile::tempdir().unwrap();
        let bundle = dir.path().join("ca.pem");
        std::fs::write(&bundle, &ca_pem).unwrap();
        let trusted = tls_config_from(&bundle).unwrap();
        let t = Target::parse(
            &format!("https://127.0.0.1:{port}/hook?token=s3cret"),
            "[alerts] webhook",
            80,
            "/",
        )
        .expect("credentials may go over https");
        assert!(t.tls && t.private());
        let (code, _) = post_with(&t, "application/json", None, b"{}", Some(trusted))
            .await
            .unwrap();
        assert_eq!(code, 204);
        // Another CA's certificate is refused, and so is the right CA's for another name.
        let other = dir.path().join("other.pem");
        let (other_ca, _) = crate::ca::Ca::create_console(
            "o",
            crate::clock::Clock::now(&crate::clock::SystemClock),
        )
        .unwrap();
        std::fs::write(&other, other_ca.cert_pem()).unwrap();
        let err = post_with(
            &t,
            "application/json",
            None,
            b"{}",
            Some(tls_config_from(&other).unwrap()),
        )
        .await
        .unwrap_err();
        assert!(err.contains("TLS with 127.0.0.1"), "{err}");
        let (ca2, port2) = https_server("elsewhere.example").await;
        std::fs::write(&bundle, &ca2).unwrap();
        let t2 = Target::parse(&format!("https://127.0.0.1:{port2}/"), "w", 80, "/").unwrap();
        let err = post_with(
            &t2,
            "a/b",
            None,
            b"",
            Some(tls_config_from(&bundle).unwrap()),
        )
        .await
        .unwrap_err();
        assert!(err.contains("TLS"), "{err}");
        assert!(
            tls_config_from(&dir.path().join("none.pem"))
                .unwrap_err()
                .contains("SSL_CERT_FILE")
        );
    }

    #[test]
    fn only_this_machine_is_loopback() {
        let t = |u: &str| Target::parse(u, "--influxdb", 8086, "/write").unwrap();
        for u in [
            "http://127.0.0.1:8086",
            "http://localhost",
            "http://[::1]:8086/w",
        ] {
            assert!(t(u).is_loopback(), "{u}");
        }
        for u in [
            "http://10.0.0.5:8086",
            "http://influx.example.com",
            "http://[fe80::1]:1",
        ] {
            assert!(!t(u).is_loopback(), "{u}");
        }
    }

    #[test]
    fn credentials_in_a_url_never_go_over_plain_http_to_another_host() {
        let parse = |u: &str| Target::parse(u, "--influxdb", 8086, "/write?db=clustermgr");
        for url in [
            "http://user:s3cret@10.0.0.5:8086/write?db=x",
            "http://10.0.0.5:8086/write?db=x&u=me&p=s3cret",
            "http://influx.example.com/query?p=s3cret",
            "http://influx.example.com/api/v2/write?org=o&bucket=b&token=s3cret",
        ] {
            let err = parse(url).unwrap_err().to_string();
            assert!(err.contains("in the clear"), "{url}: {err}");
            assert!(!err.contains("s3cret"), "{url}: {err}");
        }
        // On this machine they may be in the query; before the host they would not be
        // sent at all, so that is said.
        let local = parse("http://127.0.0.1:8086/write?db=x&u=me&p=s3cret").unwrap();
        assert_eq!(local.path, "/write?db=x&u=me&p=s3cret");
        let err = parse("http://me:s3cret@localhost:8086/write")
            .unwrap_err()
            .to_string();
        assert!(err.contains("not sent"), "{err}");
        assert!(!err.contains("s3cret"), "{err}");
        // Without credentials, any host.
        assert!(parse("http://10.0.0.5:8086/write?db=x&precision=ms").is_ok());
    }

    #[tokio::test]
    async fn a_reply_that_never_ends_is_cut_at_its_bound() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut c, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 4096];
            let _ = c.read(&mut buf).await;
            let _ = c.write_all(b"HTTP/1.1 500 Oops\r\n\r\n").await;
            let junk = vec![b'x'; 64 * 1024];
            while c.write_all(&junk).await.is_ok() {}
        });
        let t = Target::parse(&format!("http://127.0.0.1:{port}/w"), "x", 1, "/").unwrap();
        let (code, body) = post(&t, "text/plain", None, b"x").await.unwrap();
        assert_eq!(code, 500);
        assert!(body.len() <= 300);
    }

    #[test]
    fn urls_are_checked_before_serve_starts() {
        let parse = |u: &str| Target::parse(u, "--influxdb", 8086, "/write?db=clustermgr");
        assert_eq!(
            parse("http://127.0.0.1:8086/write?db=x").unwrap(),
            Target {
                tls: false,
                host: "127.0.0.1".into(),
                port: 8086,
                path: "/write?db=x".into()
            }
        );
        assert_eq!(parse("http://influx").unwrap().port, 8086);
        assert_eq!(parse("http://influx").unwrap().path, "/write?db=clustermgr");
        // https defaults to 443.
        let https = parse("https://influx").unwrap();
        assert!(https.tls && https.port == 443, "{https:?}");
        assert!(
            parse("influx:8086")
                .unwrap_err()
                .to_string()
                .contains("http://")
        );
        assert!(parse("http://h:x/").is_err());
        assert!(parse("http://:80/").is_err());
    }
}
