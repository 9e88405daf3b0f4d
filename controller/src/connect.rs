//! Dialing agents: one QUIC client endpoint, a per-node TLS configuration that checks
//! the node's name and pinned key, the Hello exchange, and failures sorted into
//! "unreachable" (nothing answered in time) and "failed" (something answered wrongly).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clustermgr_protocol::frame::{expect_message, write_message};
use clustermgr_protocol::identity::{
    AgentCertStatus, CertSummary, Credentials, RefusalNote, controller_client_config_noting,
};
use clustermgr_protocol::message::{Hello, HelloReply, Reply, Request};
use clustermgr_protocol::transport::Timeouts;
use clustermgr_protocol::version::VersionRange;
use clustermgr_protocol::{DEFAULT_AGENT_PORT, NodeName};
use rustls::pki_types::CertificateDer;
use serde::{Deserialize, Serialize};

use crate::CtlError;
use crate::store::NodeRecord;

/// Whether a node failed by not answering or by answering wrongly.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailureKind {
    /// Nothing answered in time.
    Unreachable,
    /// It answered, but the operation failed.
    Failed,
}

/// Why one node's part of an operation did not succeed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeFailure {
    /// Unreachable or failed.
    pub kind: FailureKind,
    /// A sentence for the operator.
    pub message: String,
}

impl NodeFailure {
    /// A failure of the operation on a node that answered.
    pub fn failed(message: impl Into<String>) -> Self {
        NodeFailure {
            kind: FailureKind::Failed,
            message: message.into(),
        }
    }

    /// Nothing answered in time.
    pub(crate) fn unreachable(message: impl Into<String>) -> Self {
        NodeFailure {
            kind: FailureKind::Unreachable,
            message: message.into(),
        }
    }

    /// A failure of the stream a request ran on.
    pub fn stream(e: impl std::fmt::Display) -> Self {
        NodeFailure::failed(format!("the agent's reply broke off: {e}"))
    }
}

/// One agent, as the operations that send it a request and read one reply see it: a
/// greeted QUIC connection ([`AgentConn`]) in the product, a stand-in in unit tests
/// (plan, apply, rollback and the tunnel's renewal run against in-process agents).
pub trait Link: Send + Sync {
    /// Sends `req` and reads its reply, the agent's refusal ([`Reply::Error`])
    /// included.
    fn request<'a>(
        &'a self,
        req: &'a Request,
        timeout: Duration,
    ) -> futures_util::future::BoxFuture<'a, Result<Reply, NodeFailure>>;

    /// Sends `req`, then, once the agent says it is ready ([`Reply::UpgradeReady`]),
    /// the bytes of `file` raw on the same stream, read in pieces; returns the agent's
    /// last reply. Only a real connection carries raw bytes; the in-process stand-ins
    /// refuse.
    fn put<'a>(
        &'a self,
        req: &'a Request,
        file: &'a std::path::Path,
        timeout: Duration,
    ) -> futures_util::future::BoxFuture<'a, Result<Reply, NodeFailure>> {
        let _ = (req, file, timeout);
        Box::pin(async { Err(NodeFailure::failed("this link carries no uploads")) })
    }

    /// The protocol version negotiated with the agent: a request holding a later
    /// version's types is never sent (see [`too_old`]). The in-process stand-ins speak
    /// this build's.
    fn version(&self) -> u16 {
        clustermgr_protocol::version::CURRENT
    }

    /// [`Link::request`], the agent's refusal a failure.
    fn unary<'a>(
        &'a self,
        req: &'a Request,
        timeout: Duration,
    ) -> futures_util::future::BoxFuture<'a, Result<Reply, NodeFailure>> {
        Box::pin(async move {
            match self.request(req, timeout).await {
                Ok(Reply::Error(e)) => Err(NodeFailure::failed(e.message)),
                r => r,
            }
        })
    }
}

/// How the operations reach an agent for a [`Link`]: in unit tests, a set of stand-in
/// agents given to [`crate::ctx::Ctx::with_agents`]; otherwise the dialer and the pool.
pub trait Agents: Send + Sync {
    /// The agent of `node`, reached within `within`.
    fn link<'a>(
        &'a self,
        node: &'a NodeRecord,
        within: Duration,
    ) -> futures_util::future::BoxFuture<'a, Result<std::sync::Arc<dyn Link>, NodeFailure>>;
}

impl Link for AgentConn {
    fn request<'a>(
        &'a self,
        req: &'a Request,
        timeout: Duration,
    ) -> futures_util::future::BoxFuture<'a, Result<Reply, NodeFailure>> {
        Box::pin(AgentConn::request(self, req, timeout))
    }

    fn put<'a>(
        &'a self,
        req: &'a Request,
        file: &'a std::path::Path,
        timeout: Duration,
    ) -> futures_util::future::BoxFuture<'a, Result<Reply, NodeFailure>> {
        Box::pin(AgentConn::put(self, req, file, timeout))
    }

    fn version(&self) -> u16 {
        self.version
    }
}

/// Why `req` cannot go to `node`'s agent, which speaks protocol `version`: it holds a
/// later version's type, which the agent could not decode. Says which node and how to
/// fix it; `None` when it can go.
pub fn too_old(node: &str, version: u16, req: &Request) -> Option<NodeFailure> {
    let (needed, what) = req.needs_version()?;
    (needed > version).then(|| {
        NodeFailure::failed(format!(
            "{node}'s agent is too old: it speaks protocol version {version}, and {what} needs version {needed}; nothing was sent to it. Upgrade it with `clustermgr node upgrade --nodes {node}`, then try again"
        ))
    })
}

/// An open, greeted connection to one agent.
#[derive(Clone, Debug)]
pub struct AgentConn {
    /// The node.
    pub node: NodeName,
    /// The QUIC connection.
    pub conn: quinn::Connection,
    /// The negotiated protocol version.
    pub version: u16,
    /// The agent's software version.
    pub software: String,
    /// The certificate the agent presented.
    pub cert: CertSummary,
    /// Whether that certificate is valid now or only pinned.
    pub status: AgentCertStatus,
    max_frame: u32,
}

impl AgentConn {
    /// Sends a unary request and reads its reply; the agent's refusal is a failure.
    pub async fn unary(&self, req: &Request, timeout: Duration) -> Result<Reply, NodeFailure> {
        match self.request(req, timeout).await {
            Ok(Reply::Error(e)) => Err(NodeFailure::failed(e.message)),
            r => r,
        }
    }

    /// Sends a unary request and reads its reply, the agent's refusal
    /// ([`Reply::Error`]) included: for callers that treat a refusal differently from
    /// a broken exchange.
    pub async fn request(&self, req: &Request, timeout: Duration) -> Result<Reply, NodeFailure> {
        self.exchange(req, None, timeout).await
    }

    /// [`Link::put`].
    pub async fn put(
        &self,
        req: &Request,
        file: &std::path::Path,
        timeout: Duration,
    ) -> Result<Reply, NodeFailure> {
        self.exchange(req, Some(file), timeout).await
    }

    /// One request stream: `req`, then, with `file`, the agent's readiness and the
    /// file's bytes raw; then the reply.
    async fn exchange(
        &self,
        req: &Request,
        file: Option<&std::path::Path>,
        timeout: Duration,
    ) -> Result<Reply, NodeFailure> {
        if let Some(f) = too_old(self.node.as_str(), self.version, req) {
            return Err(f);
        }
        let exchange = async {
            let (mut send, mut recv) = self.conn.open_bi().await.map_err(NodeFailure::stream)?;
            write_message(&mut send, req)
                .await
                .map_err(NodeFailure::stream)?;
            if let Some(path) = file {
                match expect_message::<Reply, _>(&mut recv, self.max_frame, "reply")
                    .await
                    .map_err(NodeFailure::stream)?
                {
                    Reply::UpgradeReady => {}
                    other => return Ok(other),
                }
                let mut from = tokio::fs::File::open(path).await.map_err(|e| {
                    NodeFailure::failed(format!("cannot read {}: {e}", path.display()))
                })?;
                tokio::io::copy(&mut from, &mut send).await.map_err(|e| {
                    NodeFailure::failed(format!("the upload of {} broke off: {e}", path.display()))
                })?;
            }
            let _ = send.finish();
            expect_message::<Reply, _>(&mut recv, self.max_frame, "reply")
                .await
                .map_err(NodeFailure::stream)
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(r) => r,
            Err(_) => Err(NodeFailure::unreachable(format!(
                "no reply within {} s",
                timeout.as_secs_f32()
            ))),
        }
    }

    /// Opens a request stream.
    pub async fn open(&self) -> Result<(quinn::SendStream, quinn::RecvStream), NodeFailure> {
        self.conn.open_bi().await.map_err(NodeFailure::stream)
    }

    /// The frame limit of this connection.
    pub fn max_frame(&self) -> u32 {
        self.max_frame
    }

    /// Whether the connection is still open.
    pub fn is_open(&self) -> bool {
        self.conn.close_reason().is_none()
    }

    /// Resolves, with the failure to report, once the agent stops answering while a
    /// long request (an exec) waits on this connection: whenever [`LIVENESS_QUIET`]
    /// passes with nothing heard (`heard`: milliseconds since `origin`, kept by the
    /// caller), an `Info` request must be answered within [`LIVENESS_ANSWER`]. QUIC's
    /// own idle timeout would take half a minute to say what this says in seconds. The
    /// connection is closed then, so all its work fails at once and the next use dials
    /// again (a restarted agent answers that).
    pub async fn until_silent(&self, origin: Instant, heard: &AtomicU64) -> NodeFailure {
        loop {
            let last = Duration::from_millis(heard.load(Ordering::Relaxed));
            let quiet = origin.elapsed().saturating_sub(last);
            if quiet < LIVENESS_QUIET {
                tokio::time::sleep(LIVENESS_QUIET - quiet).await;
                continue;
            }
            match self.request(&Request::Info, LIVENESS_ANSWER).await {
                // Alive, only the command is quiet.
                Ok(_) => heard.store(origin.elapsed().as_millis() as u64, Ordering::Relaxed),
                Err(f) => {
                    let why = format!(
                        "lost the connection: the agent stopped answering (nothing for {} s, then no reply to a check within {} s); what it ran may have ended with it",
                        LIVENESS_QUIET.as_secs(),
                        LIVENESS_ANSWER.as_secs()
                    );
                    self.conn
                        .close(quinn::VarInt::from_u32(0), b"the agent stopped answering");
                    return NodeFailure {
                        kind: f.kind,
                        message: if f.kind == FailureKind::Unreachable {
                            why
                        } else {
                            f.message
                        },
                    };
                }
            }
        }
    }
}

/// How long a long request may go without a word from the agent before it is checked.
pub const LIVENESS_QUIET: Duration = Duration::from_secs(2);
/// How long that check may take.
pub const LIVENESS_ANSWER: Duration = Duration::from_secs(3);

/// The controller's side of every agent connection.
pub struct Dialer {
    endpoint: quinn::Endpoint,
    /// Swapped when the controller's certificate renews while `serve` runs.
    creds: std::sync::Mutex<std::sync::Arc<Credentials>>,
    ca: CertificateDer<'static>,
    cluster: String,
    /// Keep-alive and idle timeout, the same as the agents'.
    pub timeouts: Timeouts,
    /// How long a node has to complete the handshake and Hello.
    pub connect_timeout: Duration,
    /// The frame limit.
    pub max_frame: u32,
    /// A one-shot process's connections, so [`Dialer::close`] knows when each has told
    /// its agent goodbye; `None` under `serve`, whose connections come and go.
    tracked: Option<std::sync::Mutex<Vec<quinn::Connection>>>,
    /// What an agent certificate's validity is judged against.
    clock: std::sync::Arc<dyn crate::clock::Clock>,
}

impl std::fmt::Debug for Dialer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dialer")
            .field("cluster", &self.cluster)
            .finish()
    }
}

/// Splits `host[:port]` (or `[v6]:port`), defaulting the port to the agent's.
pub fn address_with_port(address: &str) -> String {
    if address.parse::<SocketAddr>().is_ok() {
        return address.to_string();
    }
    match address.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') && port.parse::<u16>().is_ok() => {
            address.to_string()
        }
        _ if address.parse::<std::net::Ipv6Addr>().is_ok() => {
            format!("[{address}]:{DEFAULT_AGENT_PORT}")
        }
        _ => format!("{address}:{DEFAULT_AGENT_PORT}"),
    }
}

impl Dialer {
    /// A dialer presenting `creds`, trusting agents signed by `ca`.
    pub fn new(
        creds: Credentials,
        ca: CertificateDer<'static>,
        cluster: String,
        timeouts: Timeouts,
        connect_timeout: Duration,
        max_frame: u32,
        clock: std::sync::Arc<dyn crate::clock::Clock>,
    ) -> Result<Dialer, CtlError> {
        let endpoint = quinn::Endpoint::client(SocketAddr::from(([0u16; 8], 0)))
            .or_else(|_| quinn::Endpoint::client(SocketAddr::from(([0, 0, 0, 0], 0))))
            .map_err(|e| CtlError::io("UDP client socket", e))?;
        Ok(Dialer {
            endpoint,
            creds: std::sync::Mutex::new(std::sync::Arc::new(creds)),
            ca,
            cluster,
            timeouts,
            connect_timeout,
            max_frame,
            tracked: None,
            clock,
        })
    }

    /// Keeps every connection until [`Dialer::close`], for a process that ends with it
    /// (the CLI without `serve`), so the close waits exactly until each agent is told.
    pub fn track_until_close(&mut self) {
        self.tracked = Some(std::sync::Mutex::default());
    }

    /// The certificate and key new connections present.
    pub fn credentials(&self) -> std::sync::Arc<Credentials> {
        self.creds.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Presents `creds` on new connections from now on (open ones keep theirs).
    pub fn set_credentials(&self, creds: Credentials) {
        *self.creds.lock().unwrap_or_else(|p| p.into_inner()) = std::sync::Arc::new(creds);
    }

    /// Connects to `node`, checks its identity, and says Hello.
    pub async fn connect(&self, node: &NodeRecord) -> Result<AgentConn, NodeFailure> {
        self.connect_within(node, self.connect_timeout).await
    }

    /// Like [`Dialer::connect`], with its own connect timeout.
    pub async fn connect_within(
        &self,
        node: &NodeRecord,
        connect_timeout: Duration,
    ) -> Result<AgentConn, NodeFailure> {
        let name = NodeName::new(&node.name).map_err(|e| NodeFailure::failed(e.to_string()))?;
        let target = address_with_port(&node.address);
        let addr =
            match tokio::time::timeout(connect_timeout, tokio::net::lookup_host(&target)).await {
                Ok(Ok(mut addrs)) => addrs.next().ok_or_else(|| {
                    NodeFailure::unreachable(format!("{target} resolves to no address"))
                })?,
                Ok(Err(e)) => {
                    return Err(NodeFailure::unreachable(format!(
                        "cannot resolve {target}: {e}"
                    )));
                }
                Err(_) => {
                    return Err(NodeFailure::unreachable(format!(
                        "resolving {target} timed out"
                    )));
                }
            };
        let refusal = RefusalNote::default();
        let config = controller_client_config_noting(
            &self.credentials(),
            self.ca.clone(),
            name.clone(),
            std::iter::once(node.pinned_key.clone())
                .chain(node.pending_key.clone())
                .collect(),
            &self.timeouts,
            refusal.clone(),
        )
        .map_err(|e| NodeFailure::failed(e.to_string()))?;
        let attempt = async {
            let connecting = self
                .endpoint
                .connect_with(config, addr, name.as_str())
                .map_err(|e| NodeFailure::failed(format!("cannot connect to {addr}: {e}")))?;
            let conn = connecting.await.map_err(|e| {
                let ours = refusal.lock().unwrap_or_else(|p| p.into_inner()).take();
                match ours {
                    // We refused the agent: say why in our own words.
                    Some(why) => NodeFailure::failed(format!("refused the agent at {addr}: {why}")),
                    None => describe(e, addr),
                }
            })?;
            if let Some(tracked) = &self.tracked {
                tracked
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(conn.clone());
            }
            self.hello(conn, &name).await
        };
        match tokio::time::timeout(connect_timeout, attempt).await {
            Ok(r) => r,
            Err(_) => Err(NodeFailure::unreachable(format!(
                "no answer from {addr} within {} s (is clustermgr-agent running there, and is UDP port {} open from this machine?)",
                connect_timeout.as_secs_f32(),
                addr.port()
            ))),
        }
    }

    async fn hello(
        &self,
        conn: quinn::Connection,
        name: &NodeName,
    ) -> Result<AgentConn, NodeFailure> {
        let hello = Hello {
            versions: VersionRange::ours(),
            identity: self.cluster.clone(),
            software: env!("CARGO_PKG_VERSION").to_string(),
        };
        let exchange = async {
            let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
            write_message(&mut send, &hello)
                .await
                .map_err(|e| e.to_string())?;
            let _ = send.finish();
            expect_message::<HelloReply, _>(&mut recv, self.max_frame, "Hello reply")
                .await
                .map_err(|e| e.to_string())
        };
        // With TLS 1.3 our side of the handshake completes before the agent has judged
        // our certificate, so its refusal shows up as the connection closing at any step
        // of the Hello; the close reason says why.
        let reply = match exchange.await {
            Ok(r) => r,
            Err(e) => {
                return Err(match conn.close_reason() {
                    Some(reason) => describe(reason, conn.remote_address()),
                    None => NodeFailure::failed(format!("the agent did not answer our Hello: {e}")),
                });
            }
        };
        let (version, software) = match reply {
            HelloReply::Accepted {
                version,
                node,
                software,
            } => {
                if !VersionRange::ours().contains(version) {
                    return Err(NodeFailure::failed(format!(
                        "the agent chose protocol version {version}, which we did not offer"
                    )));
                }
                if &node != name {
                    return Err(NodeFailure::failed(format!(
                        "the agent says it is {node}, not {name}"
                    )));
                }
                (version, software)
            }
            HelloReply::Refused { reason, versions } => {
                let ours = VersionRange::ours();
                return Err(NodeFailure::failed(
                    if clustermgr_protocol::version::negotiate(ours, versions).is_err() {
                        format!(
                            "no common protocol version: this controller speaks {ours}, the agent speaks {versions}; upgrade the older side"
                        )
                    } else {
                        format!("the agent refused us: {reason}")
                    },
                ));
            }
        };
        let cert = conn
            .peer_identity()
            .and_then(|id| id.downcast::<Vec<CertificateDer<'static>>>().ok())
            .and_then(|certs| certs.first().and_then(|c| CertSummary::parse(c).ok()))
            .ok_or_else(|| NodeFailure::failed("the agent presented no readable certificate"))?;
        let now = self.clock.unix();
        let status = if now < cert.not_before || cert.expired(now) {
            AgentCertStatus::OutsideValidityButPinned
        } else {
            AgentCertStatus::Valid
        };
        Ok(AgentConn {
            node: name.clone(),
            conn,
            version,
            software,
            cert,
            status,
            max_frame: self.max_frame,
        })
    }

    /// Closes every connection and waits briefly for the agents to be told.
    pub async fn close(&self) {
        // Each connection still open, with how many datagrams it had sent: the close
        // is out once it has sent one more. (Closed by the agent or timed out, it
        // sends nothing more.)
        let open: Vec<(quinn::Connection, u64)> = self
            .tracked
            .as_ref()
            .map(|t| std::mem::take(&mut *t.lock().unwrap_or_else(|p| p.into_inner())))
            .unwrap_or_default()
            .into_iter()
            .filter(|c| c.close_reason().is_none())
            .map(|c| {
                let sent = c.stats().udp_tx.datagrams;
                (c, sent)
            })
            .collect();
        self.endpoint
            .close(quinn::VarInt::from_u32(0), b"controller done");
        // Waiting for wait_idle would add QUIC's whole draining period (3 PTO, ~100 ms)
        // to every one-shot CLI command, for nothing the agent needs. What the agent
        // needs is the CONNECTION_CLOSE datagram, which a connection's driver counts and
        // sends in one step under the connection's lock, so once every tracked
        // connection has counted another datagram, all are out. Untracked (serve), or
        // if a send stalls, a short bound; should the frame be lost, the agent drops
        // the connection at its idle timeout instead.
        let told = async {
            let out = |(c, before): &(quinn::Connection, u64)| c.stats().udp_tx.datagrams > *before;
            // The drivers are woken by the close: let them run. Yielding, not sleeping:
            // tokio's timer counts whole milliseconds, so any sleep here cost a
            // millisecond of every one-shot command; the bound below ends the spin.
            while !open.iter().all(out) {
                tokio::task::yield_now().await;
            }
        };
        let bound = Duration::from_millis(5);
        if self.tracked.is_some() {
            let _ = tokio::time::timeout(bound, told).await;
        } else {
            let _ = tokio::time::timeout(bound, self.endpoint.wait_idle()).await;
        }
    }
}

fn describe(e: quinn::ConnectionError, addr: SocketAddr) -> NodeFailure {
    use quinn::ConnectionError as E;
    match e {
        E::TimedOut => NodeFailure::unreachable(format!("no answer from {addr}")),
        E::TransportError(te) => {
            NodeFailure::failed(format!("refused the agent at {addr}: {}", te.reason))
        }
        E::ConnectionClosed(cc) if cc.error_code.to_string().contains("cryptographic") => {
            NodeFailure::failed(format!(
                "the agent at {addr} refused our certificate ({}): it trusts another cluster's CA, or ours is not valid; check that its ca.crt is this cluster's and see `clustermgr cert status`",
                cc.error_code
            ))
        }
        E::ConnectionClosed(cc) => {
            NodeFailure::failed(format!("the agent at {addr} closed the connection: {}", cc))
        }
        E::ApplicationClosed(ac) => NodeFailure::failed(format!(
            "the agent at {addr} closed the connection: {}",
            String::from_utf8_lossy(&ac.reason)
        )),
        other => NodeFailure::unreachable(format!("connection to {addr} failed: {other}")),
    }
}

#[cfg(test)]
mod tests {
    use clustermgr_protocol::changeset::{Action, RestoreSpec, Scope};

    use super::*;

    #[test]
    fn a_request_an_older_agent_could_not_decode_is_refused_with_the_node_and_the_fix() {
        // A restore whose actions hold a version-2 one.
        let req = Request::Restore(RestoreSpec {
            path: "/etc/certs/httpd.crt".into(),
            scope: Scope::Host,
            generation: 1,
            validate: None,
            on_change: vec![Action::JavaTrust {
                alias: "a".into(),
                cert: "/etc/certs/httpd.crt".into(),
            }],
            requested_by: String::new(),
        });
        let f = too_old("gluu2", 1, &req).expect("refused");
        let m = f.message;
        assert!(
            m.contains("gluu2's agent is too old")
                && m.contains("protocol version 1")
                && m.contains("`clustermgr node upgrade --nodes gluu2`"),
            "{m}"
        );
        assert!(too_old("gluu2", 2, &req).is_none());
        assert!(too_old("gluu2", 1, &Request::Info).is_none());
    }
}
