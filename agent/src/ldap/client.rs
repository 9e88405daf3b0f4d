//! A small LDAPv3 client for the agent's own directory server: simple and SASL
//! EXTERNAL binds, search, modify, add and delete, over plain TCP (loopback only), TLS
//! with the server's certificate pinned, or the server's `ldapi://` Unix socket. Blocking, with a deadline on every read and write: a frozen server keeps
//! its connections open and never answers, and a check must end anyway.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use super::ber::{self, Tlv};

/// How a search reaches below its base.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// The base entry only.
    Base = 0,
    /// Its children.
    One = 1,
    /// The whole subtree.
    Sub = 2,
}

/// What a modification does with its values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Modify {
    /// Adds them.
    Add = 0,
    /// Deletes them (all, when none are given).
    Delete = 1,
    /// Replaces every value with them.
    Replace = 2,
}

/// A search result entry.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Entry {
    /// Its DN.
    pub dn: String,
    /// Attribute name (as the server wrote it) and values.
    pub attrs: Vec<(String, Vec<Vec<u8>>)>,
}

impl Entry {
    /// The values of `name` (compared without case), as text.
    pub fn values(&self, name: &str) -> Vec<String> {
        self.attrs
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .flat_map(|(_, v)| v.iter().map(|b| String::from_utf8_lossy(b).into_owned()))
            .collect()
    }

    /// The first value of `name`.
    pub fn first(&self, name: &str) -> Option<String> {
        self.values(name).into_iter().next()
    }
}

/// Why an LDAP operation failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    /// No connection, or it broke, or the server sent what is not LDAP.
    Transport(String),
    /// No answer within the deadline.
    Timeout(Duration),
    /// The server answered with a result code other than success.
    Result {
        /// The LDAP result code (32 no such object, 49 invalid credentials, 68 already
        /// exists ...).
        code: i64,
        /// The server's diagnostic message.
        message: String,
    },
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Transport(m) => f.write_str(m),
            Failure::Timeout(d) => write!(
                f,
                "no answer within {:.1} s (the server accepts connections but does not answer: stopped with SIGSTOP, or overloaded)",
                d.as_secs_f64()
            ),
            Failure::Result { code, message } => {
                write!(f, "the server answered {} ({code})", result_name(*code))?;
                if !message.is_empty() {
                    write!(f, ": {message}")?;
                }
                Ok(())
            }
        }
    }
}

/// The usual name of an LDAP result code.
fn result_name(code: i64) -> &'static str {
    match code {
        1 => "operations error",
        2 => "protocol error",
        3 => "time limit exceeded",
        4 => "size limit exceeded",
        8 => "stronger authentication required",
        10 => "referral",
        16 => "no such attribute",
        20 => "attribute or value exists",
        21 => "invalid attribute syntax",
        32 => "no such object",
        34 => "invalid DN syntax",
        48 => "inappropriate authentication",
        49 => "invalid credentials",
        50 => "insufficient access rights",
        51 => "busy",
        52 => "unavailable",
        53 => "unwilling to perform",
        64 => "naming violation",
        65 => "object class violation",
        68 => "entry already exists",
        80 => "other",
        _ => "an error",
    }
}

/// The result code of an entry that already exists.
pub const ALREADY_EXISTS: i64 = 68;
/// The result code of a base that does not exist.
pub const NO_SUCH_OBJECT: i64 = 32;
/// The result code of a search that reached its size limit.
pub const SIZE_LIMIT_EXCEEDED: i64 = 4;

trait Stream: Read + Write + Send {}
impl<T: Read + Write + Send> Stream for T {}

/// An open connection.
pub struct Connection {
    stream: Box<dyn Stream>,
    next_id: i64,
    buf: Vec<u8>,
    timeout: Duration,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("next_id", &self.next_id)
            .finish()
    }
}

/// Where and how to connect.
#[derive(Clone, Debug)]
pub struct Target {
    /// `host:port`.
    pub addr: String,
    /// TLS with this configuration, or plain TCP.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

impl Connection {
    /// Connects within `timeout`; every later read and write has the same deadline.
    pub fn open(target: &Target, timeout: Duration) -> Result<Connection, Failure> {
        let addrs: Vec<SocketAddr> = target
            .addr
            .to_socket_addrs()
            .map_err(|e| Failure::Transport(format!("cannot resolve {}: {e}", target.addr)))?
            .collect();
        let mut last = Failure::Transport(format!("{} resolves to no address", target.addr));
        let mut tcp = None;
        for a in addrs {
            match TcpStream::connect_timeout(&a, timeout) {
                Ok(s) => {
                    tcp = Some(s);
                    break;
                }
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                    last = Failure::Timeout(timeout);
                }
                Err(e) => last = Failure::Transport(format!("cannot connect to {a}: {e}")),
            }
        }
        let tcp = tcp.ok_or(last)?;
        let io = |e: std::io::Error| Failure::Transport(e.to_string());
        tcp.set_read_timeout(Some(timeout)).map_err(io)?;
        tcp.set_write_timeout(Some(timeout)).map_err(io)?;
        tcp.set_nodelay(true).map_err(io)?;
        let stream: Box<dyn Stream> = match &target.tls {
            None => Box::new(tcp),
            Some(cfg) => {
                let host = target
                    .addr
                    .rsplit_once(':')
                    .map_or(target.addr.as_str(), |(h, _)| h)
                    .trim_matches(['[', ']'])
                    .to_string();
                let name = rustls::pki_types::ServerName::try_from(host)
                    .map_err(|e| Failure::Transport(format!("{}: {e}", target.addr)))?;
                let conn = rustls::ClientConnection::new(cfg.clone(), name)
                    .map_err(|e| Failure::Transport(format!("TLS: {e}")))?;
                let mut tls = rustls::StreamOwned::new(conn, tcp);
                // The handshake now, so a refused certificate reads as such.
                while tls.conn.is_handshaking() {
                    tls.conn
                        .complete_io(&mut tls.sock)
                        .map_err(|e| io_failure(e, timeout, "the TLS handshake"))?;
                }
                Box::new(tls)
            }
        };
        Ok(Connection {
            stream,
            next_id: 1,
            buf: Vec::new(),
            timeout,
        })
    }

    /// Connects to the `ldapi://` socket at `path` within `timeout`, with the same
    /// deadline on every later read and write.
    pub fn open_unix(path: &std::path::Path, timeout: Duration) -> Result<Connection, Failure> {
        let sock = std::os::unix::net::UnixStream::connect(path).map_err(|e| {
            Failure::Transport(format!("cannot connect to {}: {e}", path.display()))
        })?;
        let io = |e: std::io::Error| Failure::Transport(e.to_string());
        sock.set_read_timeout(Some(timeout)).map_err(io)?;
        sock.set_write_timeout(Some(timeout)).map_err(io)?;
        Ok(Connection {
            stream: Box::new(sock),
            next_id: 1,
            buf: Vec::new(),
            timeout,
        })
    }

    /// A SASL EXTERNAL bind: over `ldapi://` the server knows the peer's uid and gid
    /// (root is `gidNumber=0+uidNumber=0,cn=peercred,cn=external,cn=auth`).
    pub fn bind_external(&mut self) -> Result<(), Failure> {
        let op = ber::constructed(
            ber::application(0, true),
            &[
                ber::integer(ber::INTEGER, 3),
                ber::tlv(ber::OCTET_STRING, b""),
                ber::constructed(
                    ber::context(3, true),
                    // An empty authorization identity: be who the socket says. Without
                    // the (empty) credentials Cyrus SASL asks for another round.
                    &[
                        ber::tlv(ber::OCTET_STRING, b"EXTERNAL"),
                        ber::tlv(ber::OCTET_STRING, b""),
                    ],
                ),
            ],
        );
        let id = self.send(op)?;
        let reply = self.receive(id)?;
        result_of(&reply, ber::application(1, true))
    }

    /// A simple bind.
    pub fn bind(&mut self, dn: &str, password: &[u8]) -> Result<(), Failure> {
        let op = ber::constructed(
            ber::application(0, true),
            &[
                ber::integer(ber::INTEGER, 3),
                ber::tlv(ber::OCTET_STRING, dn.as_bytes()),
                ber::tlv(ber::context(0, false), password),
            ],
        );
        let id = self.send(op)?;
        let reply = self.receive(id)?;
        result_of(&reply, ber::application(1, true))
    }

    /// A search for entries matching `filter` (RFC 4515: `&`, `|`, `!`, `=`, `>=`,
    /// `<=`, `=*`), with the `attrs` asked for (operational ones by name or `+`).
    pub fn search(
        &mut self,
        base: &str,
        scope: Scope,
        filter: &str,
        attrs: &[&str],
    ) -> Result<Vec<Entry>, Failure> {
        self.search_at_most(base, scope, filter, attrs, 0)
            .map(|(found, _)| found)
    }

    /// [`Connection::search`] for at most `limit` entries (0: as many as the server
    /// gives); `true` with them when the server stopped at the limit.
    pub fn search_at_most(
        &mut self,
        base: &str,
        scope: Scope,
        filter: &str,
        attrs: &[&str],
        limit: u32,
    ) -> Result<(Vec<Entry>, bool), Failure> {
        let filter = parse_filter(filter)
            .map_err(|e| Failure::Transport(format!("filter {filter}: {e}")))?;
        let attrs: Vec<Vec<u8>> = attrs
            .iter()
            .map(|a| ber::tlv(ber::OCTET_STRING, a.as_bytes()))
            .collect();
        let op = ber::constructed(
            ber::application(3, true),
            &[
                ber::tlv(ber::OCTET_STRING, base.as_bytes()),
                ber::integer(ber::ENUMERATED, scope as i64),
                ber::integer(ber::ENUMERATED, 0),
                ber::integer(ber::INTEGER, i64::from(limit)),
                ber::integer(ber::INTEGER, self.timeout.as_secs().max(1) as i64),
                ber::tlv(ber::BOOLEAN, &[0]),
                filter,
                ber::constructed(ber::SEQUENCE, &attrs),
            ],
        );
        let id = self.send(op)?;
        let mut out = Vec::new();
        loop {
            let reply = self.receive(id)?;
            let (op, _) = protocol_op(&reply)?;
            match op.tag {
                t if t == ber::application(4, true) => out.push(entry_of(&op).map_err(bad)?),
                // A continuation reference: the entries it points to are elsewhere.
                t if t == ber::application(19, true) => {}
                t if t == ber::application(5, true) => {
                    return match result_of(&reply, ber::application(5, true)) {
                        Ok(()) => Ok((out, false)),
                        Err(Failure::Result {
                            code: SIZE_LIMIT_EXCEEDED,
                            ..
                        }) if limit > 0 => Ok((out, true)),
                        Err(e) => Err(e),
                    };
                }
                t => return Err(bad(format!("a search answered with tag 0x{t:02x}"))),
            }
        }
    }

    /// Replaces the values of each attribute of `dn`.
    pub fn replace(&mut self, dn: &str, attrs: &[(&str, Vec<String>)]) -> Result<(), Failure> {
        let changes: Vec<Vec<u8>> = attrs
            .iter()
            .map(|(name, values)| {
                ber::constructed(
                    ber::SEQUENCE,
                    &[ber::integer(ber::ENUMERATED, 2), attribute(name, values)],
                )
            })
            .collect();
        self.entry_op(6, dn, changes)
    }

    /// Changes attributes of `dn`: each change adds, deletes (no values: all of them)
    /// or replaces values, in order, atomically.
    pub fn modify(
        &mut self,
        dn: &str,
        changes: &[(Modify, &str, Vec<String>)],
    ) -> Result<(), Failure> {
        let changes: Vec<Vec<u8>> = changes
            .iter()
            .map(|(op, name, values)| {
                ber::constructed(
                    ber::SEQUENCE,
                    &[
                        ber::integer(ber::ENUMERATED, *op as i64),
                        attribute(name, values),
                    ],
                )
            })
            .collect();
        self.entry_op(6, dn, changes)
    }

    /// Deletes the leaf entry `dn`.
    pub fn delete(&mut self, dn: &str) -> Result<(), Failure> {
        let op = ber::tlv(ber::application(10, false), dn.as_bytes());
        let id = self.send(op)?;
        let reply = self.receive(id)?;
        result_of(&reply, ber::application(11, true))
    }

    /// Adds the entry `dn` with its attributes.
    pub fn add(&mut self, dn: &str, attrs: &[(&str, Vec<String>)]) -> Result<(), Failure> {
        let list: Vec<Vec<u8>> = attrs.iter().map(|(n, v)| attribute(n, v)).collect();
        self.entry_op(8, dn, list)
    }

    /// An operation on one entry, `[APPLICATION request] { dn, SEQUENCE OF parts }`,
    /// answered by an LDAPResult under the next application number.
    fn entry_op(&mut self, request: u8, dn: &str, parts: Vec<Vec<u8>>) -> Result<(), Failure> {
        let op = ber::constructed(
            ber::application(request, true),
            &[
                ber::tlv(ber::OCTET_STRING, dn.as_bytes()),
                ber::constructed(ber::SEQUENCE, &parts),
            ],
        );
        let id = self.send(op)?;
        let reply = self.receive(id)?;
        result_of(&reply, ber::application(request + 1, true))
    }

    /// Says goodbye; the connection is dropped either way.
    pub fn unbind(mut self) {
        let _ = self.send(ber::tlv(ber::application(2, false), &[]));
    }

    fn send(&mut self, op: Vec<u8>) -> Result<i64, Failure> {
        let id = self.next_id;
        self.next_id += 1;
        let msg = ber::constructed(ber::SEQUENCE, &[ber::integer(ber::INTEGER, id), op]);
        let timeout = self.timeout;
        self.stream
            .write_all(&msg)
            .and_then(|_| self.stream.flush())
            .map_err(|e| io_failure(e, timeout, "sending a request"))?;
        Ok(id)
    }

    /// The next message for `id` (bytes of one whole LDAPMessage).
    fn receive(&mut self, id: i64) -> Result<Vec<u8>, Failure> {
        loop {
            if let Some(n) = ber::needed(&self.buf).map_err(bad)?
                && self.buf.len() >= n
            {
                let msg: Vec<u8> = self.buf.drain(..n).collect();
                let (t, _) = ber::read(&msg)
                    .map_err(bad)?
                    .ok_or_else(|| bad("a cut message"))?;
                let kids = t.children().map_err(bad)?;
                let got = kids.first().map(Tlv::int).transpose().map_err(bad)?;
                if got == Some(0) {
                    // An unsolicited notification: the server is closing.
                    return Err(Failure::Transport(
                        "the server ended the session (notice of disconnection)".into(),
                    ));
                }
                if got != Some(id) {
                    continue;
                }
                return Ok(msg);
            }
            let mut chunk = [0u8; 16 * 1024];
            let timeout = self.timeout;
            let n = self
                .stream
                .read(&mut chunk)
                .map_err(|e| io_failure(e, timeout, "waiting for an answer"))?;
            if n == 0 {
                return Err(Failure::Transport(
                    "the server closed the connection".into(),
                ));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

fn bad(detail: impl std::fmt::Display) -> Failure {
    Failure::Transport(format!("the server sent what is not LDAP: {detail}"))
}

fn io_failure(e: std::io::Error, timeout: Duration, doing: &str) -> Failure {
    match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => Failure::Timeout(timeout),
        _ => Failure::Transport(format!("{doing}: {e}")),
    }
}

fn attribute(name: &str, values: &[String]) -> Vec<u8> {
    let vals: Vec<Vec<u8>> = values
        .iter()
        .map(|v| ber::tlv(ber::OCTET_STRING, v.as_bytes()))
        .collect();
    ber::constructed(
        ber::SEQUENCE,
        &[
            ber::tlv(ber::OCTET_STRING, name.as_bytes()),
            ber::constructed(ber::SET, &vals),
        ],
    )
}

/// The protocol operation of an LDAPMessage, and the message's other parts.
fn protocol_op(msg: &[u8]) -> Result<(Tlv<'_>, Vec<Tlv<'_>>), Failure> {
    let (t, _) = ber::read(msg)
        .map_err(bad)?
        .ok_or_else(|| bad("a cut message"))?;
    let kids = t.children().map_err(bad)?;
    let op = *kids
        .get(1)
        .ok_or_else(|| bad("a message without an operation"))?;
    Ok((op, kids))
}

/// Success, or the failure an LDAPResult of the `expect`ed operation carries.
fn result_of(msg: &[u8], expect: u8) -> Result<(), Failure> {
    let (op, _) = protocol_op(msg)?;
    if op.tag != expect {
        return Err(bad(format!(
            "an answer with tag 0x{:02x} where 0x{expect:02x} was due",
            op.tag
        )));
    }
    let parts = op.children().map_err(bad)?;
    let code = parts
        .first()
        .ok_or_else(|| bad("a result without a code"))?
        .int()
        .map_err(bad)?;
    if code == 0 {
        return Ok(());
    }
    Err(Failure::Result {
        code,
        message: parts.get(2).map(Tlv::text).unwrap_or_default(),
    })
}

fn entry_of(op: &Tlv) -> Result<Entry, String> {
    let parts = op.children()?;
    let dn = parts.first().ok_or("an entry without a DN")?.text();
    let mut attrs = Vec::new();
    if let Some(list) = parts.get(1) {
        for a in list.children()? {
            let kv = a.children()?;
            let name = kv.first().ok_or("an attribute without a name")?.text();
            let values = match kv.get(1) {
                Some(set) => set.children()?.iter().map(|v| v.content.to_vec()).collect(),
                None => Vec::new(),
            };
            attrs.push((name, values));
        }
    }
    Ok(Entry { dn, attrs })
}

/// An RFC 4515 filter string as BER. Substring and extensible matches are not
/// needed by the agent and are refused.
pub fn parse_filter(s: &str) -> Result<Vec<u8>, String> {
    let s = s.trim();
    let (f, rest) = filter_at(s.as_bytes())?;
    if !rest.is_empty() {
        return Err(format!(
            "unexpected text after the filter: {}",
            String::from_utf8_lossy(rest)
        ));
    }
    Ok(f)
}

fn filter_at(s: &[u8]) -> Result<(Vec<u8>, &[u8]), String> {
    let inner = s.strip_prefix(b"(").ok_or("a filter starts with (")?;
    match inner.first() {
        Some(op @ (b'&' | b'|')) => {
            let tag = ber::context(if *op == b'&' { 0 } else { 1 }, true);
            let mut rest = &inner[1..];
            let mut parts = Vec::new();
            while rest.first() == Some(&b'(') {
                let (f, r) = filter_at(rest)?;
                parts.push(f);
                rest = r;
            }
            let rest = rest.strip_prefix(b")").ok_or("a ) is missing")?;
            Ok((ber::constructed(tag, &parts), rest))
        }
        Some(b'!') => {
            let (f, rest) = filter_at(&inner[1..])?;
            let rest = rest.strip_prefix(b")").ok_or("a ) is missing")?;
            Ok((ber::tlv(ber::context(2, true), &f), rest))
        }
        _ => {
            let end = inner
                .iter()
                .position(|b| *b == b')')
                .ok_or("a ) is missing")?;
            let item = &inner[..end];
            let rest = &inner[end + 1..];
            let eq = item
                .iter()
                .position(|b| *b == b'=')
                .ok_or("an item without =")?;
            let (attr, value) = (&item[..eq], &item[eq + 1..]);
            let (attr, tag) = match attr.last() {
                Some(b'>') => (&attr[..attr.len() - 1], ber::context(5, true)),
                Some(b'<') => (&attr[..attr.len() - 1], ber::context(6, true)),
                Some(b'~' | b':') => {
                    return Err("approximate and extensible matches are not supported".into());
                }
                _ => (attr, ber::context(3, true)),
            };
            if attr.is_empty() {
                return Err("an item without an attribute".into());
            }
            if value == b"*" && tag == ber::context(3, true) {
                return Ok((ber::tlv(ber::context(7, false), attr), rest));
            }
            if value.contains(&b'*') {
                return Err("substring matches are not supported".into());
            }
            let value = unescape(value)?;
            Ok((
                ber::constructed(
                    tag,
                    &[
                        ber::tlv(ber::OCTET_STRING, attr),
                        ber::tlv(ber::OCTET_STRING, &value),
                    ],
                ),
                rest,
            ))
        }
    }
}

/// `\XX` escapes of a filter value.
fn unescape(v: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(v.len());
    let mut i = 0;
    while i < v.len() {
        if v[i] == b'\\' {
            let hex = v.get(i + 1..i + 3).ok_or("a \\ without two hex digits")?;
            let hex = std::str::from_utf8(hex).map_err(|_| "a \\ without two hex digits")?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| "a \\ without two hex digits")?);
            i += 3;
        } else {
            out.push(v[i]);
            i += 1;
        }
    }
    Ok(out)
}

/// `\XX`-escapes what a filter value cannot hold as it is.
pub fn escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for b in v.bytes() {
        match b {
            b'*' | b'(' | b')' | b'\\' | 0 => out.push_str(&format!("\\{b:02x}")),
            _ => out.push(b as char),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_encode_as_rfc_4511_says() {
        // (objectClass=*) is a primitive [7] holding the attribute.
        assert_eq!(parse_filter("(objectClass=*)").unwrap(), {
            let mut v = vec![0x87, 11];
            v.extend_from_slice(b"objectClass");
            v
        });
        let f = parse_filter("(&(cn=a\\2ab)(!(x>=5))(|(y<=2)(z=*)))").unwrap();
        let (t, rest) = ber::read(&f).unwrap().unwrap();
        assert!(rest.is_empty());
        assert_eq!(t.tag, 0xa0);
        let kids = t.children().unwrap();
        assert_eq!(kids.len(), 3);
        assert_eq!(kids[0].tag, 0xa3);
        assert_eq!(kids[0].children().unwrap()[1].content, b"a*b");
        assert_eq!(kids[1].tag, 0xa2);
        assert_eq!(kids[1].children().unwrap()[0].tag, 0xa5);
        assert_eq!(kids[2].children().unwrap()[0].tag, 0xa6);
        for bad in [
            "cn=x", "(cn=x", "(cn=a*b)", "(cn~=x)", "(=x)", "(cn=x))", "(cn=\\4)",
        ] {
            assert!(parse_filter(bad).is_err(), "{bad}");
        }
        assert_eq!(escape("a*(b)\\"), "a\\2a\\28b\\29\\5c");
        assert_eq!(
            parse_filter(&format!("(cn={})", escape("a*(b)\\"))).unwrap(),
            parse_filter("(cn=a\\2a\\28b\\29\\5c)").unwrap()
        );
    }

    #[test]
    fn failures_read_as_sentences() {
        let f = Failure::Result {
            code: 49,
            message: String::new(),
        };
        assert_eq!(
            f.to_string(),
            "the server answered invalid credentials (49)"
        );
        assert!(
            Failure::Timeout(Duration::from_secs(2))
                .to_string()
                .contains("SIGSTOP")
        );
    }
}
