//! A plain HTTP/1.1 client for the console's tests: one request per connection, what
//! a browser or a script would send, read whole (or, for an event stream, until a
//! wanted text arrives), with deadlines.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

/// An answer.
#[derive(Clone, Debug)]
pub struct Answer {
    /// The status code.
    pub status: u16,
    /// The headers, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Answer {
    /// The first header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "not JSON ({e}): {} {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends one request and reads the whole answer.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Answer {
    try_request(addr, method, path, headers, body).unwrap_or_else(|e| panic!("{e}"))
}

/// [`request`], saying what went wrong instead of panicking (for the benchmarks, which
/// report a failed measurement and go on).
pub fn try_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<Answer, String> {
    let what = |e: std::io::Error| format!("{method} {path} on {addr}: {e}");
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(what)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(what)?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).map_err(what)?;
    s.write_all(body).map_err(what)?;
    // Read the head, then as much body as it announces: some servers (chromedriver)
    // say `Connection: close` and keep the socket open.
    let mut raw = Vec::new();
    let mut buf = [0u8; 16384];
    loop {
        if let Some(split) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok());
            let chunked = head.contains("transfer-encoding: chunked")
                || head.contains("transfer-encoding:chunked");
            let body = &raw[split + 4..];
            let whole = match length {
                Some(n) => body.len() >= n,
                None if chunked => body.windows(5).any(|w| w == b"0\r\n\r\n"),
                None => false,
            };
            if whole || method == "HEAD" {
                break;
            }
        }
        let n = match s.read(&mut buf) {
            Ok(n) => n,
            // A signal (a child of the test ending) is no answer: read again.
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(what(e)),
        };
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&buf[..n]);
    }
    parse(&raw).ok_or_else(|| {
        format!(
            "{method} {path} on {addr}: not an HTTP answer: {:?}",
            String::from_utf8_lossy(&raw[..raw.len().min(200)])
        )
    })
}

fn parse(raw: &[u8]) -> Option<Answer> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    if headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"))
    {
        body = dechunk(&body);
    }
    Some(Answer {
        status,
        headers,
        body,
    })
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(end) = b.windows(2).position(|w| w == b"\r\n") {
        let size =
            usize::from_str_radix(String::from_utf8_lossy(&b[..end]).trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        let start = end + 2;
        out.extend_from_slice(&b[start..(start + size).min(b.len())]);
        b = &b[(start + size + 2).min(b.len())..];
    }
    out
}

/// Opens `path` (an event stream) and reads until `want` has arrived, within
/// `patience`; returns what was read.
pub fn read_stream_until(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    want: &str,
    patience: Duration,
) -> String {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut head = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).unwrap();
    let deadline = Instant::now() + patience;
    let mut got = Vec::new();
    let mut buf = [0u8; 8192];
    while Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
        if String::from_utf8_lossy(&got).contains(want) {
            break;
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

/// The console's address, from the line `serve` logs once it listens (its log beside
/// the home, as `start_serve` keeps it), within `patience`.
pub fn console_address(home: &Path, patience: Duration) -> SocketAddr {
    let log = home.parent().expect("the home's parent").join("serve.log");
    let deadline = Instant::now() + patience;
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if let Some(at) = text.find("serving the web console on ") {
            let rest = &text[at + "serving the web console on ".len()..];
            let rest = rest.split_once("://").map_or(rest, |(_, r)| r);
            let addr = rest.split('/').next().unwrap_or_default();
            return addr.parse().expect("an address");
        }
        assert!(
            Instant::now() < deadline,
            "serve did not say it serves the console: {text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The `name=value` of a `Set-Cookie` answer.
pub fn cookie(a: &Answer) -> String {
    a.header("set-cookie")
        .and_then(|c| c.split(';').next())
        .expect("a cookie")
        .to_string()
}

/// Makes console account `name` with `role` and the password `pw` through the CLI of
/// `c` (the password in an owner-only file in `dir`).
pub fn make_account(c: &crate::Cluster, dir: &Path, name: &str, role: &str, pw: &str) {
    use std::os::unix::fs::PermissionsExt;
    let file = dir.join(format!("{name}.pw"));
    std::fs::write(&file, format!("{pw}\n")).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let o = c.run(&[
        "user",
        "add",
        name,
        "--role",
        role,
        "--password-file",
        &file.display().to_string(),
    ]);
    assert!(o.status.success(), "user add {name}: {}", crate::stderr(&o));
}
