//! The context every operation runs in: the home, the stores, the CA, the dialer and
//! the clock, `serve`'s warm connections and what it keeps for followers; the
//! outcomes and events operations report; and the audit log's pending entries. Core:
//! it knows no operation and no front end.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clustermgr_protocol::NodeName;
use clustermgr_protocol::atomic_file::write_atomic;
use clustermgr_protocol::identity::{AgentCertStatus, CertSummary, Credentials, cert_from_pem};
use clustermgr_protocol::message::{NodeInfo, Reply, Request};
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

use crate::CtlError;
use crate::ca::{Ca, csr_public_key};
use crate::clock::{Clock, rfc3339};
pub use crate::config::CtxOptions;
use crate::connect::{AgentConn, Dialer, FailureKind, NodeFailure};
use crate::home::Home;
use crate::store::{AuditRecord, CertKind, CertRecord, ClusterMeta, NodeRecord, Store};

/// How many handshakes `serve` runs at once when (re)connecting.
const HANDSHAKES_IN_FLIGHT: usize = 32;

/// How long a unary request (Info, CSR, certificate install) may take.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The audit log's "who": the account name of `uid` and the uid. The uid is what counts:
/// `serve` passes the one the kernel reports for its socket's peer, and the name comes
/// from `/etc/passwd` or the name service, never from the client or its environment (`$USER` is
/// whatever the caller set); a uid with no entry is recorded bare.
pub fn audit_user(uid: u32) -> String {
    match passwd_name(uid) {
        Some(name) => format!("{name} (uid {uid})"),
        None => format!("uid {uid}"),
    }
}

/// The login name of `uid` from the name service, if it has one.
pub fn user_name(uid: u32) -> Option<String> {
    passwd_name(uid)
}

fn passwd_name(uid: u32) -> Option<String> {
    name_of(
        uid,
        std::path::Path::new("/etc/passwd"),
        std::path::Path::new("/usr/bin/getent"),
    )
}

/// [`passwd_name`] with the passwd file and the getent program given (tests).
fn name_of(uid: u32, passwd: &std::path::Path, getent: &std::path::Path) -> Option<String> {
    // The local file first (no process to start on every command); a uid it does not
    // have may be an LDAP or SSSD user, which the name service switch knows (`getent`,
    // by its path).
    let local = std::fs::read_to_string(passwd).ok().and_then(|text| {
        text.lines().find_map(|line| {
            let mut fields = line.split(':');
            let name = fields.next()?;
            let id: u32 = fields.nth(1)?.parse().ok()?;
            (id == uid).then(|| name.to_string())
        })
    });
    local.or_else(|| {
        let o = std::process::Command::new(getent)
            .args(["passwd", &uid.to_string()])
            .stdin(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&o.stdout);
        let name = text.split(':').next()?.trim();
        (o.status.success() && !name.is_empty()).then(|| name.to_string())
    })
}

/// Progress of an operation, streamed while it runs.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Event {
    /// Output of a command on a node.
    Output {
        /// The node.
        node: String,
        /// Whether it came from stderr.
        stderr: bool,
        /// The bytes.
        data: Vec<u8>,
    },
    /// One node's part is over.
    NodeDone(NodeOutcome),
    /// The next part of a store snapshot: together, in order, the postcard bytes of a
    /// [`crate::store::StoreSnapshot`]. In parts because a long audit log can outgrow
    /// one frame of serve's socket.
    Snapshot(Vec<u8>),
    /// A log line, for `logs -f`.
    Log(crate::telemetry_store::NodeLine),
    /// A health change, for `events -f`.
    Health(crate::healthlog::HealthEvent),
    /// Long work (`apply`, `node upgrade`) starts on these nodes: what its progress
    /// shows until each is done.
    Working {
        /// What is done (`apply`).
        what: String,
        /// The nodes, in the order they are worked on.
        nodes: Vec<String>,
        /// One after another (a rolling apply, an upgrade), not all at once.
        sequential: bool,
    },
}

/// How one node's part of a fan-out went.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum NodeState {
    /// It worked.
    Ok,
    /// The node answered but the operation failed.
    Failed,
    /// The node did not answer in time.
    Unreachable,
    /// It was not tried, because an earlier node of a one-at-a-time operation failed.
    Skipped,
}

impl NodeState {
    /// The word the CLI prints.
    pub fn as_str(&self) -> &'static str {
        match self {
            NodeState::Ok => "ok",
            NodeState::Failed => "failed",
            NodeState::Unreachable => "unreachable",
            NodeState::Skipped => "skipped",
        }
    }
}

/// One node's result.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NodeOutcome {
    /// The node.
    pub node: String,
    /// Ok, failed or unreachable.
    pub state: NodeState,
    /// What went wrong, if anything.
    pub message: Option<String>,
    /// A command's exit code.
    pub exit_code: Option<i32>,
    /// The signal that ended a command.
    pub signal: Option<i32>,
    /// The command was killed by its timeout.
    pub timed_out: bool,
    /// Round trip of the request, microseconds.
    pub rtt_us: Option<u64>,
    /// How long the node's part took, milliseconds.
    pub duration_ms: u64,
    /// Host facts, for ping and status.
    pub info: Option<Box<NodeInfo>>,
    /// The node's clock minus the controller's, measured when its reply arrived (never
    /// across the wait for another node), for ping and status.
    pub clock_skew_ms: Option<i64>,
}

impl NodeOutcome {
    pub(crate) fn new(node: &str) -> Self {
        NodeOutcome {
            node: node.to_string(),
            state: NodeState::Ok,
            message: None,
            exit_code: None,
            signal: None,
            timed_out: false,
            rtt_us: None,
            duration_ms: 0,
            info: None,
            clock_skew_ms: None,
        }
    }

    pub(crate) fn failure(node: &str, f: NodeFailure) -> Self {
        NodeOutcome {
            state: match f.kind {
                FailureKind::Unreachable => NodeState::Unreachable,
                FailureKind::Failed => NodeState::Failed,
            },
            message: Some(f.message),
            ..NodeOutcome::new(node)
        }
    }
}

/// Warm connections and their reconnect schedule, kept by `serve`.
#[derive(Debug, Default)]
pub struct Pool {
    conns: Mutex<HashMap<String, AgentConn>>,
}

impl Pool {
    /// The open connection to `node`, if there is one.
    pub fn get(&self, node: &str) -> Option<AgentConn> {
        let conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        conns.get(node).filter(|c| c.is_open()).cloned()
    }

    /// The open connection to `node`, only if its agent holds a key `node` pins (a
    /// connection to an agent since unpinned must never be reused).
    pub fn get_pinned(&self, node: &NodeRecord) -> Option<AgentConn> {
        self.get(&node.name).filter(|c| {
            let key = &c.cert.key_fingerprint;
            key == &node.pinned_key || node.pending_key.as_ref() == Some(key)
        })
    }

    pub(crate) fn put(&self, conn: AgentConn) {
        let mut conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        conns.insert(conn.node.to_string(), conn);
    }

    /// Forgets and closes every connection (they were made with a controller
    /// certificate that is no longer ours).
    pub fn close_all(&self) {
        let mut conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        for (_, c) in conns.drain() {
            c.conn.close(
                quinn::VarInt::from_u32(0),
                b"controller certificate replaced",
            );
        }
    }

    /// Forgets (and closes) the connection to `node`.
    pub fn drop_node(&self, node: &str) {
        let mut conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = conns.remove(node) {
            c.conn.close(quinn::VarInt::from_u32(0), b"node removed");
        }
    }

    /// Forgets `conn` if it is still the pooled connection of its node (another task
    /// may already have put a fresh one there).
    pub(crate) fn forget(&self, conn: &AgentConn) {
        let mut conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        let node = conn.node.as_str();
        if conns
            .get(node)
            .is_some_and(|c| c.conn.stable_id() == conn.conn.stable_id())
        {
            conns.remove(node);
        }
    }

    /// Names of nodes with an open connection.
    pub fn connected(&self) -> Vec<String> {
        let conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        conns
            .iter()
            .filter(|(_, c)| c.is_open())
            .map(|(n, _)| n.clone())
            .collect()
    }
}

/// Live log lines `serve` keeps for a follower that fell behind before it is told so.
const LIVE_LOG_LINES: usize = 8192;

/// One async lock per node, made on first use.
#[derive(Default)]
struct NodeLocks(Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>);

impl NodeLocks {
    pub(crate) fn of(&self, node: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.0.lock().unwrap_or_else(|p| p.into_inner());
        locks.entry(node.to_string()).or_default().clone()
    }
}

/// Everything an operation needs: the home, the store, the CA, the dialer, the clock,
/// and (under `serve`) the warm connections.
pub struct Ctx {
    /// The state directory.
    pub home: Home,
    /// The inventory store.
    pub store: Store,
    /// The cluster CA.
    pub ca: Ca,
    /// Cluster settings.
    pub meta: ClusterMeta,
    /// Dials agents.
    pub dialer: Dialer,
    /// Now.
    pub clock: Arc<dyn Clock>,
    /// `serve`'s warm connections; `None` in a one-shot CLI process.
    pub pool: Option<Pool>,
    handshakes: Semaphore,
    renewals: NodeLocks,
    config_changes: NodeLocks,
    telemetry: std::sync::OnceLock<Arc<crate::telemetry_store::TelemetryStore>>,
    /// Held while the telemetry store is opened: redb refuses a second open of the same
    /// file, so two tasks asking at once must not both try.
    telemetry_opening: Mutex<()>,
    /// Log lines as `serve` stores them, for `logs -f`.
    pub live_logs: tokio::sync::broadcast::Sender<crate::telemetry_store::NodeLine>,
    /// Each node's last two metric ticks as `serve` stores them, for `top`.
    pub recent: crate::recent::Recent,
    /// Health changes as `serve`'s watch stores them, for `events -f`.
    pub health_events: tokio::sync::broadcast::Sender<crate::healthlog::HealthEvent>,
    /// `serve`'s latest health round, for `health`, `replication`, `ports` and `top`.
    pub health_latest: Mutex<Option<Arc<crate::healthlog::Latest>>>,
    pub(crate) controller_cert: Mutex<CertSummary>,
    /// Stand-in agents (unit tests); `None` dials the real ones.
    stand_in: Option<Arc<dyn crate::connect::Agents>>,
}

impl std::fmt::Debug for Ctx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx")
            .field("home", &self.home)
            .finish_non_exhaustive()
    }
}

pub(crate) fn read_file(path: &std::path::Path) -> Result<String, CtlError> {
    std::fs::read_to_string(path).map_err(|e| CtlError::io(path, e))
}

pub(crate) fn write_file(path: &std::path::Path, text: &str, mode: u32) -> Result<(), CtlError> {
    write_atomic(path, text.as_bytes(), mode).map_err(|e| CtlError::io(path, e))
}

pub(crate) fn cert_record(kind: CertKind, node: Option<&str>, s: &CertSummary) -> CertRecord {
    CertRecord {
        serial: s.serial.clone(),
        kind,
        node: node.map(str::to_string),
        not_before: s.not_before,
        not_after: s.not_after,
        key_fingerprint: s.key_fingerprint.clone(),
        revoked_at: None,
    }
}

/// A one-shot command's connection for the requests of one [`Ctx::link`], closed when
/// they are done rather than when the command ends: a rolling apply asks every node for
/// a health round each second, and an agent serves only a few controller connections at
/// once. (`serve` keeps one warm connection per node instead.)
struct OneShot(AgentConn);

impl crate::connect::Link for OneShot {
    fn request<'a>(
        &'a self,
        req: &'a clustermgr_protocol::message::Request,
        timeout: Duration,
    ) -> futures_util::future::BoxFuture<'a, Result<clustermgr_protocol::message::Reply, NodeFailure>>
    {
        Box::pin(self.0.request(req, timeout))
    }

    fn put<'a>(
        &'a self,
        req: &'a clustermgr_protocol::message::Request,
        file: &'a std::path::Path,
        timeout: Duration,
    ) -> futures_util::future::BoxFuture<'a, Result<clustermgr_protocol::message::Reply, NodeFailure>>
    {
        Box::pin(self.0.put(req, file, timeout))
    }

    fn version(&self) -> u16 {
        self.0.version
    }
}

impl Drop for OneShot {
    fn drop(&mut self) {
        self.0.conn.close(quinn::VarInt::from_u32(0), b"done");
    }
}

impl Ctx {
    /// Opens the cluster in `dir` for operations, renewing the controller's own
    /// certificate first if it is due.
    pub fn open(
        dir: &std::path::Path,
        clock: Arc<dyn Clock>,
        opts: &CtxOptions,
        serving: bool,
    ) -> Result<Ctx, CtlError> {
        let home = Home::open(dir)?;
        let store = Store::open(&home.store(), &home.socket())?;
        let meta = store.meta()?;
        let ca_pem = read_file(&home.ca_cert())?;
        let ca = Ca::load(&ca_pem, &read_file(&home.ca_key())?)?;
        let cert_pem = read_file(&home.controller_cert())?;
        let key_pem = read_file(&home.controller_key())?;
        let summary = CertSummary::parse_pem(&cert_pem)?;
        let mut dialer = Dialer::new(
            Credentials::from_pem(&cert_pem, &key_pem)?,
            cert_from_pem(&ca_pem)?,
            meta.name.clone(),
            opts.timeouts,
            opts.connect_timeout,
            opts.max_frame_bytes,
            clock.clone(),
        )?;
        if !serving {
            dialer.track_until_close();
        }
        let ctx = Ctx {
            home,
            store,
            ca,
            meta,
            dialer,
            clock,
            pool: serving.then(Pool::default),
            handshakes: Semaphore::new(HANDSHAKES_IN_FLIGHT),
            renewals: NodeLocks::default(),
            config_changes: NodeLocks::default(),
            telemetry: std::sync::OnceLock::new(),
            telemetry_opening: Mutex::new(()),
            // Only serve has followers (`logs -f` and the console need it); a one-shot
            // command's channels stay one slot, not 8192 slots written at every start.
            live_logs: tokio::sync::broadcast::channel(if serving { LIVE_LOG_LINES } else { 1 }).0,
            recent: Default::default(),
            health_events: tokio::sync::broadcast::channel(if serving { 1024 } else { 1 }).0,
            health_latest: Mutex::new(None),
            controller_cert: Mutex::new(summary),
            stand_in: None,
        };
        ctx.renew_controller_if_due()?;
        Ok(ctx)
    }

    /// Renews the controller's own certificate and key once past two thirds of its
    /// life: at every open, and on every keeper tick while `serve` runs (a serve that
    /// outlived its certificate would be refused by every agent it reconnects to).
    pub fn renew_controller_if_due(&self) -> Result<bool, CtlError> {
        let due = self
            .controller_cert
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .renewal_due(self.clock.unix());
        if !due {
            return Ok(false);
        }
        let issued = self.replace_controller_cert()?;
        tracing::info!(
            "renewed the controller certificate (serial {}, until {})",
            issued.serial,
            rfc3339(issued.not_after)
        );
        Ok(true)
    }

    /// Issues the controller a new key and certificate, which supersedes the current
    /// one at every agent that sees it, and uses it for every new connection. Under
    /// `serve` the warm connections, made with the old one, are closed: serve's keeper
    /// dials each node again at once, so every agent it holds sees the new certificate
    /// (and refuses the old key from then on) instead of going on with the old one.
    /// Returns the new certificate; the old one is recorded as revoked.
    pub fn replace_controller_cert(&self) -> Result<CertSummary, CtlError> {
        let old = self
            .controller_cert
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let (issued, key) = self.ca.issue_controller(
            &self.meta.name,
            self.clock.now(),
            self.lifetime(),
            Some(old.not_before),
        )?;
        let creds = Credentials::from_pem(&issued.pem, &key)?;
        write_file(&self.home.controller_key(), &key, 0o600)?;
        write_file(&self.home.controller_cert(), &issued.pem, 0o644)?;
        self.store
            .put_cert(&cert_record(CertKind::Controller, None, &issued.summary))?;
        let mut retired = cert_record(CertKind::Controller, None, &old);
        retired.revoked_at = Some(self.clock.unix());
        self.store.put_cert(&retired)?;
        self.dialer.set_credentials(creds);
        *self
            .controller_cert
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = issued.summary.clone();
        if let Some(pool) = &self.pool {
            pool.close_all();
        }
        Ok(issued.summary)
    }

    pub(crate) fn lifetime(&self) -> time::Duration {
        time::Duration::days(self.meta.cert_lifetime_days.into())
    }

    /// A greeted connection to `node`: a warm one under `serve`, else a new one. Its
    /// certificate is renewed first if it is past two thirds of its life or expired.
    pub async fn connection(&self, node: &NodeRecord) -> Result<AgentConn, NodeFailure> {
        self.connection_within(node, self.dialer.connect_timeout)
            .await
    }

    /// This context with its agents reached through `agents` instead of the network:
    /// the seam the operations' unit tests use.
    pub fn with_agents(mut self, agents: Arc<dyn crate::connect::Agents>) -> Ctx {
        self.stand_in = Some(agents);
        self
    }

    /// The agent of `node` for requests with one reply, reached within `within`: a
    /// connection as [`Ctx::connection_within`] makes it, or a stand-in.
    pub async fn link(
        &self,
        node: &NodeRecord,
        within: Duration,
    ) -> Result<Arc<dyn crate::connect::Link>, NodeFailure> {
        match &self.stand_in {
            Some(agents) => agents.link(node, within).await,
            None if self.pool.is_some() => {
                Ok(Arc::new(self.connection_within(node, within).await?))
            }
            None => Ok(Arc::new(OneShot(
                self.connection_within(node, within).await?,
            ))),
        }
    }

    /// Like [`Ctx::connection`], with the connect timeout of one operation.
    pub async fn connection_within(
        &self,
        node: &NodeRecord,
        connect_timeout: Duration,
    ) -> Result<AgentConn, NodeFailure> {
        if let Some(c) = self.pool.as_ref().and_then(|p| p.get_pinned(node)) {
            return Ok(c);
        }
        let presented = self.dialer.credentials();
        let mut conn = {
            let _permit = self.handshakes.acquire().await;
            self.dialer.connect_within(node, connect_timeout).await?
        };
        if let Err(e) = self.settle_pin(&conn, &node.name) {
            conn.conn.close(quinn::VarInt::from_u32(0), b"node changed");
            return Err(e);
        }
        self.renew_if_due(&mut conn, node).await?;
        if let Some(pool) = &self.pool {
            // A node removed while we dialled must not come back through the pool, nor
            // a connection made with a certificate replaced (and the pool closed)
            // meanwhile: the agent would not see the new one through it.
            if matches!(self.store.node(&node.name), Ok(Some(_)))
                && Arc::ptr_eq(&presented, &self.dialer.credentials())
            {
                pool.put(conn.clone());
            }
        }
        Ok(conn)
    }

    /// Renews the certificate of a node with a warm connection, if it is due (`serve`
    /// calls this periodically: a connection can outlive a certificate).
    pub async fn renew_pooled(&self, node: &NodeRecord) -> Result<(), NodeFailure> {
        let Some(pool) = &self.pool else {
            return Ok(());
        };
        let Some(mut conn) = pool.get(&node.name) else {
            return Ok(());
        };
        if conn.status == AgentCertStatus::Valid && !conn.cert.renewal_due(self.clock.unix()) {
            return Ok(());
        }
        // Unlike renew_if_due, a failure is returned even while the certificate is still
        // valid, so the caller can back off before trying again.
        let summary = self.renew_with(&conn, node, false).await?;
        conn.cert = summary;
        conn.status = AgentCertStatus::Valid;
        pool.put(conn);
        Ok(())
    }

    /// If `conn` is a warm connection the agent has reset (a restarted agent no longer
    /// knows it), forgets it so the next request dials anew, and says so.
    pub(crate) fn forget_if_reset(&self, conn: &AgentConn) -> bool {
        let reset = matches!(
            conn.conn.close_reason(),
            Some(quinn::ConnectionError::Reset)
        );
        if reset && let Some(pool) = &self.pool {
            pool.forget(conn);
            return true;
        }
        false
    }

    /// Renews the agent's certificate over `conn` when it is past two thirds of its
    /// life or outside its validity, and updates `conn` to describe the new one.
    /// Returns whether it renewed. A failed renewal of a still-valid certificate is
    /// only logged (the next contact tries again); of an invalid one, it is an error.
    pub(crate) async fn renew_if_due(
        &self,
        conn: &mut AgentConn,
        node: &NodeRecord,
    ) -> Result<bool, NodeFailure> {
        let now = self.clock.unix();
        if conn.status == AgentCertStatus::Valid && !conn.cert.renewal_due(now) {
            return Ok(false);
        }
        match self.renew_with(conn, node, false).await {
            Ok(summary) => {
                conn.cert = summary;
                conn.status = AgentCertStatus::Valid;
                Ok(true)
            }
            Err(e) if conn.status == AgentCertStatus::Valid => {
                tracing::warn!("{}: {}", node.name, e.message);
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// Has the agent make a CSR (with its key, or a new one when `new_key`), signs it,
    /// installs the certificate and records it. A new key comes over a connection the
    /// pinned key authenticated, so the pin moves to it and the old key's certificates
    /// are revoked.
    pub(crate) async fn renew_with(
        &self,
        conn: &AgentConn,
        node: &NodeRecord,
        new_key: bool,
    ) -> Result<CertSummary, NodeFailure> {
        let fail = |m: String| NodeFailure::failed(format!("certificate renewal: {m}"));
        // One renewal of a node at a time: the keeper's and a `cert renew --rekey` must
        // not interleave their store writes.
        let lock = self.renewal_lock(&node.name);
        let _held = lock.lock().await;
        let rec = self
            .store
            .node(&node.name)
            .map_err(|e| fail(e.to_string()))?
            .ok_or_else(|| fail(format!("{} was removed", node.name)))?;
        let current = &conn.cert.key_fingerprint;
        if current != &rec.pinned_key && rec.pending_key.as_ref() != Some(current) {
            return Err(fail(format!(
                "{}'s pinned key changed meanwhile; try again",
                node.name
            )));
        }
        let Reply::Csr { pem } = conn
            .unary(&Request::Csr { new_key }, REQUEST_TIMEOUT)
            .await?
        else {
            return Err(fail("the agent did not answer with a CSR".into()));
        };
        let name = NodeName::new(&node.name).map_err(|e| fail(e.to_string()))?;
        let key = csr_public_key(&name, &pem).map_err(|e| fail(e.to_string()))?;
        if new_key && &key.fingerprint == current {
            return Err(fail(
                "the agent offered its old key for a rekey; refusing".into(),
            ));
        }
        if !new_key && &key.fingerprint != current {
            return Err(fail(format!(
                "the agent's CSR carries key {}, not the key {current} it connected with; refusing",
                key.fingerprint
            )));
        }
        let issued = self
            .ca
            .sign_node(&name, &key, self.clock.now(), self.lifetime())
            .map_err(|e| fail(e.to_string()))?;
        let record = cert_record(CertKind::Node, Some(&node.name), &issued.summary);
        if new_key {
            // The new key is accepted from here on, before the agent switches to it, so
            // a lost acknowledgement below cannot lock the node out.
            self.store
                .begin_rekey(&node.name, current, &record)
                .map_err(|e| fail(e.to_string()))?;
        }
        match conn
            .unary(
                &Request::InstallCert {
                    cert_pem: issued.pem.clone(),
                },
                REQUEST_TIMEOUT,
            )
            .await?
        {
            Reply::CertInstalled => {}
            other => return Err(fail(format!("unexpected reply {other:?}"))),
        }
        self.store
            .complete_renewal(&node.name, &record, self.clock.unix())
            .map_err(|e| fail(e.to_string()))?;
        tracing::info!(
            "{}: renewed its certificate (serial {}, until {})",
            node.name,
            issued.summary.serial,
            rfc3339(issued.summary.not_after)
        );
        Ok(issued.summary)
    }

    pub(crate) fn renewal_lock(&self, node: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.renewals.of(node)
    }

    /// The telemetry store, opened on first use (by `serve`, which holds it while it
    /// runs; a CLI without `serve` opens it for its one query).
    pub fn telemetry(&self) -> Result<Arc<crate::telemetry_store::TelemetryStore>, CtlError> {
        if let Some(t) = self.telemetry.get() {
            return Ok(t.clone());
        }
        let _one = self
            .telemetry_opening
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(t) = self.telemetry.get() {
            return Ok(t.clone());
        }
        let t = Arc::new(crate::telemetry_store::TelemetryStore::open(
            &self.home.telemetry(),
        )?);
        Ok(self.telemetry.get_or_init(|| t).clone())
    }

    /// Held while a node's files change (apply, reconcile, rollback), so two of them
    /// never interleave their reads and writes of its desired-state record.
    pub fn config_lock(&self, node: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.config_changes.of(node)
    }

    /// After connecting: refuses a node removed meanwhile, and settles a rekey whose
    /// acknowledgement was lost (the agent shows the pending key: it becomes the pin).
    pub(crate) fn settle_pin(&self, conn: &AgentConn, node: &str) -> Result<(), NodeFailure> {
        let fail = |m: String| NodeFailure::failed(m);
        let rec = self
            .store
            .node(node)
            .map_err(|e| fail(e.to_string()))?
            .ok_or_else(|| fail(format!("{node} was removed from the cluster")))?;
        let key = &conn.cert.key_fingerprint;
        if rec.pending_key.as_ref() == Some(key) {
            let record = self
                .store
                .certs()
                .map_err(|e| fail(e.to_string()))?
                .into_iter()
                .filter(|c| c.node.as_deref() == Some(node) && &c.key_fingerprint == key)
                .max_by_key(|c| c.not_before)
                .ok_or_else(|| fail(format!("no certificate recorded for {node}'s new key")))?;
            self.store
                .complete_renewal(node, &record, self.clock.unix())
                .map_err(|e| fail(e.to_string()))?;
            tracing::info!(
                "{node}: its new key is now pinned (the rekey's acknowledgement had been lost)"
            );
        } else if &rec.pinned_key != key {
            return Err(fail(format!(
                "{node}'s pinned key changed meanwhile; try again"
            )));
        }
        Ok(())
    }

    pub(crate) fn audit(
        &self,
        user: &str,
        action: &str,
        nodes: &[String],
        detail: &str,
    ) -> Result<(u64, AuditRecord), CtlError> {
        let rec = AuditRecord {
            time_ms: self.clock.now().unix_timestamp_nanos() as i64 / 1_000_000,
            user: user.to_string(),
            action: action.to_string(),
            nodes: nodes.to_vec(),
            detail: detail.to_string(),
            results: Vec::new(),
        };
        let id = self.store.audit_append(&rec)?;
        Ok((id, rec))
    }

    /// The node named `name`, or an error offering the closest name there is.
    pub(crate) fn node_named(&self, name: &str) -> Result<NodeRecord, CtlError> {
        match self.store.node(name)? {
            Some(rec) => Ok(rec),
            None => {
                let all = self.store.nodes()?;
                Err(CtlError::unknown_node(
                    name,
                    all.iter().map(|n| n.name.as_str()),
                ))
            }
        }
    }

    /// Audits an operation done by the time it is recorded: `outcome` for each of
    /// `nodes`, or for the cluster when it concerns none.
    pub(crate) fn audited(
        &self,
        user: &str,
        action: &str,
        nodes: &[String],
        detail: &str,
        outcome: &str,
    ) -> Result<(), CtlError> {
        let (id, mut rec) = self.audit(user, action, nodes, detail)?;
        rec.results = outcome_for(nodes, outcome);
        self.store.audit_update(id, &rec)
    }

    /// Records the outcome of `backup` (audited before its snapshot was read) once the
    /// archive is written or has failed. Only a backup's entry, by the same user, still
    /// without an outcome, is completed.
    pub(crate) fn backup_finished(
        &self,
        user: &str,
        id: u64,
        outcome: &str,
    ) -> Result<(), CtlError> {
        let entry = self
            .store
            .audit(usize::MAX)?
            .into_iter()
            .find(|(i, _)| *i == id);
        match entry {
            Some((_, mut rec))
                if rec.action == "backup" && rec.user == user && rec.results.is_empty() =>
            {
                rec.results = outcome_for(&[], outcome);
                self.store.audit_update(id, &rec)
            }
            _ => Err(CtlError::NotPendingBackup { id }),
        }
    }
}

/// An audit entry's results: `outcome` per node, or once for the cluster.
fn outcome_for(nodes: &[String], outcome: &str) -> Vec<(String, String)> {
    if nodes.is_empty() {
        vec![("cluster".to_string(), outcome.to_string())]
    } else {
        nodes
            .iter()
            .map(|n| (n.clone(), outcome.to_string()))
            .collect()
    }
}

/// An operation's audit entry until its results are in. If the operation is dropped
/// first (Ctrl-C, or the CLI leaving serve), the entry still gets a result for every
/// node: interrupted, with an exec's exact exit in the node's own journal.
pub(crate) struct PendingAudit<'a> {
    store: &'a Store,
    id: u64,
    rec: Option<AuditRecord>,
}

impl<'a> PendingAudit<'a> {
    pub(crate) fn new(store: &'a Store, id: u64, rec: AuditRecord) -> Self {
        PendingAudit {
            store,
            id,
            rec: Some(rec),
        }
    }

    pub(crate) fn finish(&mut self, results: Vec<(String, String)>) -> Result<(), CtlError> {
        let Some(mut rec) = self.rec.take() else {
            return Ok(());
        };
        rec.results = results;
        self.store.audit_update(self.id, &rec)
    }
}

impl Drop for PendingAudit<'_> {
    fn drop(&mut self) {
        if let Some(rec) = &self.rec {
            let results = rec
                .nodes
                .iter()
                .map(|n| {
                    let why = "interrupted before it finished (a command's exit is in the node's journal)";
                    (n.clone(), why.to_string())
                })
                .collect();
            if let Err(e) = self.finish(results) {
                tracing::warn!("cannot record an interrupted operation in the audit log: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_uid_the_passwd_file_lacks_is_named_by_the_name_service() {
        let dir = tempfile::tempdir().unwrap();
        let passwd = dir.path().join("passwd");
        std::fs::write(&passwd, "root:x:0:0:root:/root:/bin/sh\n").unwrap();
        let getent = dir.path().join("getent");
        std::fs::write(
            &getent,
            "#!/bin/sh\n[ \"$1 $2\" = 'passwd 5000' ] && echo 'ldapuser:*:5000:5000::/home/ldapuser:/bin/bash' && exit 0\nexit 2\n",
        )
        .unwrap();
        std::fs::set_permissions(&getent, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        assert_eq!(name_of(0, &passwd, &getent).as_deref(), Some("root"));
        assert_eq!(name_of(5000, &passwd, &getent).as_deref(), Some("ldapuser"));
        assert_eq!(name_of(5001, &passwd, &getent), None);
        // No getent at all: the file alone.
        let none = dir.path().join("no-getent");
        assert_eq!(name_of(5000, &passwd, &none), None);
    }
}
