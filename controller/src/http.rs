//! A minimal HTTP/1.1 client for posting to the administrator's own services (InfluxDB,
//! an alert webhook) on a private network or loopback: plain http only, one request
//! per connection, with deadlines. A URL with credentials in it is taken only to this
//! machine.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::CtlError;

/// An `http://host:port/path?query` URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
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
        let rest = url.strip_prefix("http://").ok_or_else(|| {
            if url.starts_with("https://") {
                bad("https is not supported; reach it over http on a private network or loopback (a local proxy can add TLS)")
            } else {
                bad(&format!(
                    "give an http:// URL, such as http://127.0.0.1:{default_port}{default_path}"
                ))
            }
        })?;
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
            host,
            port,
            path: if path.is_empty() {
                default_path.into()
            } else {
                path.into()
            },
        };
        let credentials = userinfo.is_some() || query_credential(&t.path).is_some();
        if credentials && !t.is_loopback() {
            return Err(bad(
                "the credentials in it would cross the network in the clear (plain http to a host that is not this machine); reach the service on loopback, through an SSH tunnel or a local TLS proxy",
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

/// POSTs `body` as `content_type`, with an `Authorization` header when given; returns
/// the status code and the reply body's first bytes.
pub async fn post(
    t: &Target,
    content_type: &str,
    authorization: Option<&str>,
    body: &[u8],
) -> Result<(u16, String), String> {
    let connect = tokio::net::TcpStream::connect((t.host.trim_matches(['[', ']']), t.port));
    let mut sock = tokio::time::timeout(Duration::from_secs(10), connect)
        .await
        .map_err(|_| "no answer within 10 s".to_string())?
        .map_err(|e| e.to_string())?;
    let auth = authorization.map_or(String::new(), |a| format!("Authorization: {a}\r\n"));
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: {}:{}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{auth}Connection: close\r\n\r\n",
        t.path,
        t.host,
        t.port,
        body.len()
    );
    let exchange = async {
        sock.write_all(head.as_bytes()).await?;
        sock.write_all(body).await?;
        let mut reply = Vec::new();
        (&mut sock).take(MAX_REPLY).read_to_end(&mut reply).await?;
        Ok::<_, std::io::Error>(reply)
    };
    let reply = tokio::time::timeout(Duration::from_secs(30), exchange)
        .await
        .map_err(|_| "no reply within 30 s".to_string())?
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&reply);
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| "not an HTTP reply".to_string())?;
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    Ok((code, body.chars().take(300).collect()))
}

#[cfg(test)]
mod tests {
    use super::*;

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
                host: "127.0.0.1".into(),
                port: 8086,
                path: "/write?db=x".into()
            }
        );
        assert_eq!(parse("http://influx").unwrap().port, 8086);
        assert_eq!(parse("http://influx").unwrap().path, "/write?db=clustermgr");
        let https = parse("https://influx").unwrap_err().to_string();
        assert!(
            https.contains("--influxdb https://influx: https"),
            "{https}"
        );
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
