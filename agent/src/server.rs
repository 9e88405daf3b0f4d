//! The agent's QUIC server: accepts only the cluster's controller, negotiates the
//! protocol version, serves one request per stream, renews its certificate in place,
//! and shuts down gracefully.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clustermgr_protocol::NodeName;
use clustermgr_protocol::atomic_file::write_atomic;
use clustermgr_protocol::frame::write_message;
use clustermgr_protocol::throttle::Throttle;

use crate::budget::RequestBudget;
use crate::newest_controller::NewestController;
use clustermgr_protocol::identity::{
    AgentCertStatus, CertSummary, Credentials, agent_server_config, cert_from_pem,
    spki_fingerprint, verify_agent_cert,
};
use clustermgr_protocol::message::{
    ErrorKind, ExecEvent, Hello, HelloReply, RemoteError, Reply, Request,
};
use clustermgr_protocol::version::{VersionRange, negotiate};
use rustls::pki_types::{CertificateDer, UnixTime};
use tokio::sync::watch;

use crate::AgentError;
use crate::config::AgentConfig;
use crate::exec::{self, ExecContext};
use crate::journal::Journal;
use crate::upgrade::{Received, Restart, Trial};

/// How long a new connection has to send its Hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at once.
const MAX_HANDSHAKES: usize = 32;
/// How long a handshake may take (the controller's connect timeout is 3 s).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// How often refused handshakes are logged (with a count of those in between).
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(60);
/// Authenticated controller connections served at once: one controller's `serve` and a
/// few CLIs. Each may have its receive window (32 MiB) in flight beside the request
/// budget, so this bounds what controllers can make the agent buffer.
const MAX_CONTROLLER_CONNECTIONS: usize = 8;

/// A configured agent, ready to start.
pub struct Agent {
    cfg: AgentConfig,
    node: NodeName,
    ca: CertificateDer<'static>,
    cert_pem: String,
    key_pem: String,
    trial: Option<Arc<Trial>>,
}

fn identity_error(path: &Path, message: impl Into<String>) -> AgentError {
    AgentError::Identity {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

fn read(path: &Path) -> Result<String, AgentError> {
    std::fs::read_to_string(path).map_err(|e| {
        identity_error(
            path,
            format!("cannot read it: {e} (has this host been enrolled? see clustermgr node add)"),
        )
    })
}

fn key_fingerprint(key_pem: &str, path: &Path) -> Result<String, AgentError> {
    let key = rcgen::KeyPair::from_pem(key_pem)
        .map_err(|e| identity_error(path, format!("not a usable private key: {e}")))?;
    Ok(spki_fingerprint(
        &rcgen::PublicKeyData::subject_public_key_info(&key),
    ))
}

fn pending_cert_path(cert: &Path) -> PathBuf {
    cert.with_extension("crt.new")
}

fn pending_key_path(key: &Path) -> PathBuf {
    key.with_extension("key.new")
}

impl std::fmt::Debug for Agent {
    // Never the key: a `{:?}` anywhere must not print it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

impl Agent {
    /// Reads the agent's identity: key, certificate (which names the node) and CA.
    pub fn load(cfg: AgentConfig) -> Result<Self, AgentError> {
        finish_interrupted_rekey(&cfg)?;
        let key_pem = read(&cfg.key)?;
        let cert_pem = read(&cfg.cert)?;
        let ca_pem = read(&cfg.ca)?;
        let ca = cert_from_pem(&ca_pem).map_err(|e| identity_error(&cfg.ca, e.to_string()))?;
        let summary = CertSummary::parse_pem(&cert_pem)
            .map_err(|e| identity_error(&cfg.cert, e.to_string()))?;
        if summary.key_fingerprint != key_fingerprint(&key_pem, &cfg.key)? {
            return Err(identity_error(
                &cfg.cert,
                format!(
                    "this certificate does not belong to the key {}; enroll the host again",
                    cfg.key.display()
                ),
            ));
        }
        let node = summary
            .dns_names
            .first()
            .and_then(|n| NodeName::new(n).ok())
            .ok_or_else(|| identity_error(&cfg.cert, "the certificate names no node"))?;
        std::fs::create_dir_all(&cfg.state_dir).map_err(|source| AgentError::Write {
            path: cfg.state_dir.clone(),
            source,
        })?;
        Ok(Agent {
            cfg,
            node,
            ca,
            cert_pem,
            key_pem,
            trial: None,
        })
    }

    /// Marks this agent as the new binary of an unconfirmed upgrade (see
    /// [`crate::upgrade::on_start`]): it answers the controller's confirmation, and
    /// puts the old binary back if none comes in time.
    pub fn on_trial(mut self, trial: Option<Arc<Trial>>) -> Self {
        self.trial = trial;
        self
    }

    /// The node this agent is.
    pub fn node(&self) -> &NodeName {
        &self.node
    }

    /// Binds the UDP socket and starts serving.
    pub fn start(self) -> Result<AgentHandle, AgentError> {
        let creds = Credentials::from_pem(&self.cert_pem, &self.key_pem)?;
        let newest = NewestController::load(&self.cfg.state_dir, &self.ca);
        let server = agent_server_config(
            creds,
            self.ca.clone(),
            &self.cfg.timeouts,
            newest.seen.clone(),
        )?;
        let listen_error = |source| AgentError::Listen {
            addr: self.cfg.listen,
            source,
        };
        let socket = std::net::UdpSocket::bind(self.cfg.listen).map_err(listen_error)?;
        let runtime = quinn::default_runtime()
            .ok_or_else(|| listen_error(std::io::Error::other("no async runtime")))?;
        let endpoint = quinn::Endpoint::new(
            restart_stable_endpoint_config(&self.key_pem),
            Some(server),
            socket,
            runtime,
        )
        .map_err(listen_error)?;
        let local_addr = endpoint.local_addr().unwrap_or(self.cfg.listen);
        let (abort_tx, abort_rx) = watch::channel(false);
        let (stop_tx, stop_rx) = watch::channel(false);
        let restart = Arc::new(Mutex::new(None));
        let ldap: crate::health::LiveLdap = Arc::new(Mutex::new(self.cfg.ldap.clone()));
        let apply = Arc::new(
            crate::apply::Engine::new(Arc::new(self.cfg.clone())).with_live_ldap(ldap.clone()),
        );
        // A change set a crash interrupted is finished or undone before the controller
        // can see the node, so it never reads a half-applied set.
        if let Some(what) = apply.recover() {
            tracing::warn!("config apply recovery: {what}");
        }
        // Collection runs whether or not a controller is connected; a spool that cannot
        // open leaves the agent serving everything else.
        let ldap_samples = crate::health::LdapSamples::default();
        let (telemetry, collector) = if self.cfg.telemetry.enabled {
            match crate::telemetry::start(&self.cfg, ldap_samples.clone()) {
                Ok((h, c)) => (Some(h), Some(c)),
                Err(e) => {
                    tracing::error!(
                        "telemetry is off: its spool in {} cannot be used: {e}",
                        self.cfg.state_dir.join("telemetry").display()
                    );
                    (None, None)
                }
            }
        } else {
            (None, None)
        };
        let heartbeats = crate::health::Heartbeats::start(
            &self.cfg,
            self.node.as_str(),
            ldap.clone(),
            ldap_samples,
        )
        .map_err(|e| tracing::error!("the LDAP heartbeat cannot start: {e}"))
        .ok()
        .map(Arc::new);
        let config_path = self.cfg.path.clone();
        let shared = Arc::new(Shared {
            newest,
            budget: RequestBudget::new(self.cfg.max_frame_bytes),
            refusals: Mutex::new(Throttle::new(REFUSAL_LOG_EVERY)),
            controllers: Arc::new(tokio::sync::Semaphore::new(MAX_CONTROLLER_CONNECTIONS)),
            ldap: ldap.clone(),
            heartbeats,
            telemetry,
            apply,
            journal: Arc::new(Journal::open(&self.cfg.state_dir)),
            node: self.node,
            ca: self.ca,
            key_pem: Mutex::new(self.key_pem),
            pending_key: Mutex::new(None),
            endpoint: endpoint.clone(),
            abort: abort_rx,
            inflight: watch::channel(0).0,
            stopping: std::sync::atomic::AtomicBool::new(false),
            stop: stop_tx.clone(),
            restart: restart.clone(),
            upgrading: tokio::sync::Mutex::new(()),
            trial: self.trial,
            cfg: self.cfg,
        });
        tracing::info!(node = %shared.node, "listening on udp {local_addr}");
        if let Some(trial) = shared.trial.clone() {
            let shared = shared.clone();
            tokio::spawn(async move {
                if let Some(old) = trial.expire().await {
                    shared.restart_as(old);
                }
            });
        }
        let task = tokio::spawn(accept_loop(shared, stop_rx, abort_tx));
        Ok(AgentHandle {
            local_addr,
            stop: stop_tx,
            restart,
            task,
            collector,
            ldap,
            config_path,
        })
    }
}

/// An endpoint configuration that survives a restart: the stateless-reset key and the
/// connection-ID key are derived from the agent's private key instead of drawn at
/// random. A restarted agent then recognises the connection IDs it handed out before
/// and answers packets on those dead connections with a stateless reset, so the
/// controller learns at once that they are gone instead of waiting out its idle
/// timeout. The derivations are one-way: nothing of the private key is revealed.
fn restart_stable_endpoint_config(key_pem: &str) -> quinn::EndpointConfig {
    let derive = |purpose: &[u8]| {
        let mut input = purpose.to_vec();
        input.extend_from_slice(key_pem.as_bytes());
        ring::digest::digest(&ring::digest::SHA256, &input)
    };
    let reset = derive(b"clustermgr stateless reset key\0");
    let mut cfg = quinn::EndpointConfig::new(Arc::new(ring::hmac::Key::new(
        ring::hmac::HMAC_SHA256,
        reset.as_ref(),
    )));
    let cid = derive(b"clustermgr connection id key\0");
    let cid_key = u64::from_le_bytes(cid.as_ref()[..8].try_into().expect("a SHA-256 digest"));
    cfg.cid_generator(move || {
        Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(cid_key))
    });
    cfg
}

/// Completes a key rotation that a crash interrupted between its two renames.
fn finish_interrupted_rekey(cfg: &AgentConfig) -> Result<(), AgentError> {
    let new_cert = pending_cert_path(&cfg.cert);
    let new_key = pending_key_path(&cfg.key);
    let Ok(cert) = std::fs::read_to_string(&new_cert) else {
        return Ok(());
    };
    let Ok(cert_key) = CertSummary::parse_pem(&cert).map(|c| c.key_fingerprint) else {
        return Ok(());
    };
    let fingerprint_of = |path: &Path| {
        std::fs::read_to_string(path)
            .ok()
            .and_then(|pem| key_fingerprint(&pem, path).ok())
    };
    // Crashed before the first rename: both new files are there. The controller has
    // the new key as pending already (it records that before sending the certificate),
    // so finishing is safe.
    if fingerprint_of(&new_key).as_ref() == Some(&cert_key) {
        rename_durably(&new_key, &cfg.key)?;
        rename_durably(&new_cert, &cfg.cert)?;
    // Crashed between the renames: the key is already the new one.
    } else if fingerprint_of(&cfg.key).as_ref() == Some(&cert_key) {
        rename_durably(&new_cert, &cfg.cert)?;
    }
    Ok(())
}

/// Renames `from` over `to` and fsyncs the directory, so the rename survives a crash.
pub(crate) fn rename_durably(from: &Path, to: &Path) -> Result<(), AgentError> {
    let error = |source| AgentError::Write {
        path: to.to_path_buf(),
        source,
    };
    std::fs::rename(from, to).map_err(error)?;
    let dir = to
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(error)
}

/// A running agent.
#[derive(Debug)]
pub struct AgentHandle {
    /// The address it listens on.
    pub local_addr: std::net::SocketAddr,
    stop: watch::Sender<bool>,
    restart: Arc<Mutex<Option<Restart>>>,
    task: tokio::task::JoinHandle<()>,
    collector: Option<crate::telemetry::Collector>,
    ldap: crate::health::LiveLdap,
    config_path: std::path::PathBuf,
}

impl AgentHandle {
    /// Re-reads `agent.toml` (SIGHUP): its `[ldap]` section takes effect at the next
    /// round and heartbeat; the rest at the next restart. A file that does not parse
    /// changes nothing, and the error names it.
    pub fn reload(&self) -> Result<(), AgentError> {
        let cfg = AgentConfig::load(&self.config_path)?;
        *self.ldap.lock().unwrap_or_else(|p| p.into_inner()) = cfg.ldap;
        Ok(())
    }

    /// Resolves once the agent decided to stop by itself (after an uninstall, or to
    /// restart as another binary).
    pub async fn stop_requested(&self) {
        let mut rx = self.stop.subscribe();
        let _ = rx.wait_for(|stop| *stop).await;
    }
}

impl AgentHandle {
    /// Stops accepting, lets in-flight work finish within the grace period, cancels
    /// what is left, and closes every connection cleanly. Returns the restart the agent
    /// asked for, if it did (an upgrade): the caller [`Restart::exec`]s it.
    pub async fn shutdown(self) -> Option<Restart> {
        let _ = self.stop.send(true);
        let _ = self.task.await;
        if let Some(c) = self.collector {
            // Held lines written, the spool flushed, the log positions saved.
            let _ = tokio::task::spawn_blocking(move || c.stop()).await;
        }
        self.restart
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }
}

struct Shared {
    cfg: AgentConfig,
    node: NodeName,
    ca: CertificateDer<'static>,
    key_pem: Mutex<String>,
    pending_key: Mutex<Option<String>>,
    endpoint: quinn::Endpoint,
    journal: Arc<Journal>,
    abort: watch::Receiver<bool>,
    /// Requests being served now; shutdown waits for this to reach zero.
    inflight: watch::Sender<usize>,
    /// Set once shutdown begins: new requests are refused.
    stopping: std::sync::atomic::AtomicBool,
    /// Stops the agent from inside (uninstall, upgrade).
    stop: watch::Sender<bool>,
    /// What to run once stopped, if not simply exit.
    restart: Arc<Mutex<Option<Restart>>>,
    /// Held while an upgrade is received: one at a time.
    upgrading: tokio::sync::Mutex<()>,
    /// Set when this process is the new binary of an unconfirmed upgrade.
    trial: Option<Arc<Trial>>,
    /// Config plan, apply and restore.
    apply: Arc<crate::apply::Engine>,
    /// The telemetry spool's readers; `None` when collection is off.
    telemetry: Option<crate::telemetry::Handle>,
    /// The LDAP heartbeat writer; `None` when its thread could not start.
    heartbeats: Option<Arc<crate::health::Heartbeats>>,
    /// The `[ldap]` section in force (re-read on SIGHUP).
    ldap: crate::health::LiveLdap,
    /// What every stream's frames may hold in memory together.
    budget: RequestBudget,
    /// The newest controller certificate seen; older ones are refused.
    newest: NewestController,
    /// Refused handshakes, logged as a count rather than one line each.
    refusals: Mutex<Throttle>,
    /// The places of authenticated controller connections.
    controllers: Arc<tokio::sync::Semaphore>,
}

impl Shared {
    /// Stops the agent gracefully, then becomes `restart`'s program.
    fn restart_as(&self, restart: Restart) {
        *self.restart.lock().unwrap_or_else(|p| p.into_inner()) = Some(restart);
        let _ = self.stop.send(true);
    }
}

/// Counts one request in flight while it lives. Taken before the request's task is
/// spawned, so shutdown never sees zero while a request is about to start.
struct InflightGuard(Arc<Shared>);

impl InflightGuard {
    fn enter(shared: Arc<Shared>) -> Self {
        shared.inflight.send_modify(|n| *n += 1);
        InflightGuard(shared)
    }
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.0.inflight.send_modify(|n| *n -= 1);
    }
}

async fn accept_loop(
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
    abort: watch::Sender<bool>,
) {
    // Handshakes in progress at once: each holds some 100 KiB until it ends, and anyone
    // who reaches the port can start them, so the rest wait in quinn's queue (itself
    // bounded, see `agent_server_config`) rather than in the agent's memory. Each has
    // a deadline, so an abandoned one frees its slot in seconds, not at the idle
    // timeout. (Dropping the oldest for a newcomer, as serve's Prometheus listener
    // does, was tried: an abandoned quinn handshake keeps its state until it times
    // out, and the agent grew to 330 MiB under a flood.)
    let handshakes = Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES));
    let mut tell_refusals = tokio::time::interval(REFUSAL_LOG_EVERY);
    loop {
        let slot = tokio::select! {
            _ = crate::exec::became_true(&mut stop) => break,
            _ = tell_refusals.tick() => {
                let count = shared
                    .refusals
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .flush(std::time::Instant::now());
                if let Some(n) = count {
                    tracing::info!("refused {n} more connections since the last such line");
                }
                continue;
            }
            slot = handshakes.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
        };
        tokio::select! {
            _ = crate::exec::became_true(&mut stop) => break,
            incoming = shared.endpoint.accept() => {
                let Some(incoming) = incoming else { break };
                tokio::spawn(handshake(incoming, shared.clone(), slot));
            }
        }
    }
    tracing::info!("shutting down: no new connections or requests");
    shared.endpoint.set_server_config(None);
    shared
        .stopping
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let grace = Duration::from_millis(shared.cfg.shutdown_grace_ms);
    if tokio::time::timeout(grace, idle_requests(&shared))
        .await
        .is_err()
    {
        tracing::warn!("grace period over: cancelling the work still running");
        let _ = abort.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(2), idle_requests(&shared)).await;
    }
    shared
        .endpoint
        .close(quinn::VarInt::from_u32(0), b"agent shutting down");
    let _ = tokio::time::timeout(Duration::from_secs(2), shared.endpoint.wait_idle()).await;
}

/// Waits until no request is in flight. Idle connections do not count: they are
/// closed once this returns.
async fn idle_requests(shared: &Shared) {
    let mut rx = shared.inflight.subscribe();
    let _ = rx.wait_for(|n| *n == 0).await;
}

/// One handshake, within its deadline, holding a slot until it ends; then the
/// connection it made is served.
async fn handshake(
    incoming: quinn::Incoming,
    shared: Arc<Shared>,
    slot: tokio::sync::OwnedSemaphorePermit,
) {
    let remote = incoming.remote_address();
    let handshaken = tokio::time::timeout(HANDSHAKE_TIMEOUT, incoming).await;
    drop(slot);
    // One that runs out of time is dropped, which closes it.
    if let Ok(handshaken) = handshaken {
        serve_connection(handshaken, remote, shared).await;
    }
}

async fn serve_connection(
    handshaken: Result<quinn::Connection, quinn::ConnectionError>,
    remote: std::net::SocketAddr,
    shared: Arc<Shared>,
) {
    let conn = match handshaken {
        Ok(c) => c,
        Err(e) => return refused(&shared, remote, &e),
    };
    // Authenticated (the handshake checked the controller's certificate), and served
    // only while it has a place; a full house is told why.
    let Ok(_place) = shared.controllers.clone().try_acquire_owned() else {
        let why = format!(
            "the agent serves {MAX_CONTROLLER_CONNECTIONS} controller connections at once, its limit; let other clustermgr commands on this node finish (or run `clustermgr serve`, whose connection they share), then try again"
        );
        refused(&shared, remote, &why);
        conn.close(quinn::VarInt::from_u32(4), why.as_bytes());
        return;
    };
    let controller = match hello(&conn, &shared).await {
        // Who is on the other end is what its certificate says, not what its Hello
        // claims: the journal records the certificate.
        Ok(Some(_claimed)) => controller_cert(&conn).map_or_else(
            || "a controller whose certificate cannot be read".to_string(),
            |c| format!("{} (certificate {})", c.common_name, c.serial),
        ),
        Ok(None) => return,
        Err(e) => {
            tracing::info!("connection from {remote} failed before its Hello: {e}");
            conn.close(quinn::VarInt::from_u32(2), b"no hello");
            return;
        }
    };
    tracing::debug!("controller {controller} connected from {remote}");
    // This controller certificate supersedes every older one: from now on they are
    // refused at the handshake, and their open connections are closed.
    let issued = controller_cert(&conn).map(|c| c.not_before);
    if let Some(t) = issued {
        shared.newest.saw(t).await;
    }
    let mut newest = shared.newest.changed.subscribe();
    let mut abort = shared.abort.clone();
    loop {
        let (mut send, recv) = tokio::select! {
            s = conn.accept_bi() => match s {
                Ok(s) => s,
                Err(_) => return,
            },
            _ = crate::exec::became_true(&mut abort) => return,
            _ = superseded(&mut newest, issued) => {
                tracing::info!("closing a connection of controller {controller}: a newer controller certificate has been seen");
                conn.close(quinn::VarInt::from_u32(3), b"controller certificate superseded");
                return;
            }
        };
        if shared.stopping.load(std::sync::atomic::Ordering::SeqCst) {
            let refusal = Reply::Error(RemoteError {
                kind: ErrorKind::Refused,
                message: "the agent is shutting down; try again when it is back".into(),
            });
            tokio::spawn(async move {
                let _ = reply(&mut send, refusal).await;
                drop(recv);
            });
            continue;
        }
        let guard = InflightGuard::enter(shared.clone());
        let controller = controller.clone();
        tokio::spawn(async move {
            handle_request(send, recv, &guard.0, controller).await;
            drop(guard);
        });
    }
}

/// Logs a refused connection. Anyone who reaches the port can fail a handshake at
/// will: a count and the latest, once a minute, not a line each (the agent follows its
/// own log into telemetry, too).
fn refused(shared: &Shared, remote: std::net::SocketAddr, why: &dyn std::fmt::Display) {
    let admitted = shared
        .refusals
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .admit(std::time::Instant::now());
    match admitted {
        Some(0) => tracing::info!("refused a connection from {remote}: {why}"),
        Some(earlier) => tracing::info!(
            "refused a connection from {remote}: {why} (and {earlier} more since the last such line)"
        ),
        None => {}
    }
}

/// The certificate the controller on `conn` presented.
fn controller_cert(conn: &quinn::Connection) -> Option<CertSummary> {
    let certs = conn
        .peer_identity()?
        .downcast::<Vec<CertificateDer<'static>>>()
        .ok()?;
    CertSummary::parse(certs.first()?).ok()
}

/// Resolves once a controller certificate newer than `issued` has been seen.
async fn superseded(newest: &mut watch::Receiver<i64>, issued: Option<i64>) {
    let Some(issued) = issued else {
        return std::future::pending().await;
    };
    if newest.wait_for(|n| *n > issued).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// The Hello exchange; `Ok(None)` when the versions did not meet (already answered).
async fn hello(conn: &quinn::Connection, shared: &Shared) -> Result<Option<String>, AgentError> {
    let max = shared.cfg.max_frame_bytes;
    let (mut send, mut recv) = tokio::time::timeout(HELLO_TIMEOUT, conn.accept_bi())
        .await
        .map_err(|_| clustermgr_protocol::ProtocolError::Stream("no Hello within 10 s".into()))?
        .map_err(|e| clustermgr_protocol::ProtocolError::Stream(e.to_string()))?;
    let (hello, _held): (Hello, _) =
        tokio::time::timeout(HELLO_TIMEOUT, shared.budget.read(&mut recv, max, "Hello"))
            .await
            .map_err(|_| {
                clustermgr_protocol::ProtocolError::Stream("no Hello within 10 s".into())
            })??
            .ok_or_else(|| {
                clustermgr_protocol::ProtocolError::Stream(
                    "the peer closed the stream before its Hello message".into(),
                )
            })?;
    let ours = VersionRange::ours();
    match negotiate(ours, hello.versions) {
        Ok(version) => {
            write_message(
                &mut send,
                &HelloReply::Accepted {
                    version,
                    node: shared.node.clone(),
                    software: env!("CARGO_PKG_VERSION").to_string(),
                },
            )
            .await?;
            let _ = send.finish();
            Ok(Some(hello.identity))
        }
        Err(e) => {
            let reason = e.to_string();
            tracing::warn!("refused controller {}: {reason}", hello.identity);
            write_message(
                &mut send,
                &HelloReply::Refused {
                    reason: reason.clone(),
                    versions: ours,
                },
            )
            .await?;
            let _ = send.finish();
            let _ = tokio::time::timeout(Duration::from_secs(2), send.stopped()).await;
            conn.close(quinn::VarInt::from_u32(1), b"no common protocol version");
            Ok(None)
        }
    }
}

async fn handle_request(
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    shared: &Shared,
    controller: String,
) {
    // The request's bytes stay counted in the budget until it has been served.
    let closed = || {
        clustermgr_protocol::ProtocolError::Stream(
            "the peer closed the stream before its request message".into(),
        )
    };
    let (request, _held): (Request, _) = match shared
        .budget
        .read(&mut recv, shared.cfg.max_frame_bytes, "request")
        .await
        .and_then(|r| r.ok_or_else(closed))
    {
        Ok(r) => r,
        Err(e) => {
            tracing::info!("bad request from {controller}: {e}");
            let _ = reply(
                &mut send,
                Reply::Error(RemoteError {
                    kind: ErrorKind::Invalid,
                    message: e.to_string(),
                }),
            )
            .await;
            return;
        }
    };
    let answer = match request {
        Request::PackagesMissing(files) => {
            let cache = crate::packages::Cache::new(&shared.cfg.state_dir);
            match crate::packages::allowed(&shared.cfg).and_then(|()| cache.missing(&files)) {
                Ok(m) => Reply::PackagesMissing(m),
                Err(why) => Reply::Error(RemoteError::refused(why)),
            }
        }
        Request::PackagePut(file) => {
            match put_package(&shared.cfg, &file, &mut send, &mut recv).await {
                Ok(()) => {
                    tracing::info!(
                        "package file {} ({}) kept, from {controller}",
                        file.file,
                        file.sha256
                    );
                    Reply::PackageStored
                }
                Err(e) => Reply::Error(e),
            }
        }
        Request::Exec(spec) => {
            let ctx = exec_context(shared, controller);
            return exec::run(spec, send, recv, ctx).await;
        }
        Request::Info => Reply::Info(Box::new(crate::info::node_info(
            &shared.node,
            &shared.cfg.root,
            shared.cfg.allow_exec,
        ))),
        Request::Csr { new_key } => make_csr(shared, new_key).unwrap_or_else(internal),
        Request::InstallCert { cert_pem } => {
            install_cert(shared, &cert_pem).unwrap_or_else(internal)
        }
        Request::Uninstall => match crate::uninstall::begin() {
            Ok(()) => {
                let _ = reply(&mut send, Reply::Uninstalling).await;
                tracing::warn!("uninstall requested by {controller}: stopping");
                let _ = shared.stop.send(true);
                return;
            }
            Err(message) => Reply::Error(RemoteError {
                kind: ErrorKind::Refused,
                message,
            }),
        },
        Request::Upgrade(spec) => {
            let Ok(_one) = shared.upgrading.try_lock() else {
                let busy = RemoteError {
                    kind: ErrorKind::Refused,
                    message: "another upgrade of this agent is in progress".into(),
                };
                let _ = reply(&mut send, Reply::Error(busy)).await;
                return;
            };
            let trial = shared.trial.as_deref();
            match crate::upgrade::receive(spec, &mut send, &mut recv, &shared.cfg, trial).await {
                Ok(Received::UpToDate) => Reply::UpToDate {
                    version: env!("CARGO_PKG_VERSION").into(),
                },
                Ok(Received::Staged { to, restart }) => {
                    let upgrading = Reply::Upgrading {
                        from: env!("CARGO_PKG_VERSION").into(),
                        to: to.clone(),
                    };
                    let _ = reply(&mut send, upgrading).await;
                    tracing::warn!("upgrade requested by {controller}: restarting as {to}");
                    shared.restart_as(restart);
                    return;
                }
                Err(e) => Reply::Error(e),
            }
        }
        Request::UpgradeCommit { sha256 } => {
            crate::upgrade::commit(shared.trial.as_deref(), &shared.cfg.state_dir, &sha256)
        }
        req @ (Request::Plan(_)
        | Request::Apply(_)
        | Request::Backups { .. }
        | Request::Restore(_)
        | Request::HostKey { .. }
        | Request::LdapCert
        | Request::KeysMake(_)
        | Request::GluuExport(_)
        | Request::GluuSetup(_)
        | Request::GluuRemove { .. }
        | Request::GluuAddComponents { .. }
        | Request::Probe(_)) => {
            match &req {
                Request::Apply(set) => tracing::info!(
                    "apply of revision {} ({} entries) requested by {}",
                    set.revision,
                    set.entries.len(),
                    set.requested_by
                ),
                Request::KeysMake(spec) => tracing::info!(
                    "making {} oxAuth keys and deleting {} in a copy of the cluster's keystore, requested by {controller}",
                    spec.make.len(),
                    spec.delete.len()
                ),
                Request::GluuExport(spec) => tracing::info!(
                    "reading the Gluu setup in {} for another node's install, requested by {controller}",
                    spec.root
                ),
                Request::GluuSetup(spec) => tracing::warn!(
                    "setting up Gluu in {} from the primary's setup, requested by {controller}",
                    spec.root
                ),
                Request::GluuAddComponents { root, components } => tracing::warn!(
                    "adding Gluu components {} in {root}, requested by {controller}",
                    components.join(", ")
                ),
                Request::GluuRemove { root } => tracing::warn!(
                    "removing the Gluu in {root} before a reinstall, requested by {controller}"
                ),
                Request::Restore(spec) => tracing::info!(
                    "restore of {} generation {} requested by {}",
                    spec.path,
                    spec.generation,
                    spec.requested_by
                ),
                _ => {}
            }
            let node = shared.node.clone();
            blocking(shared, move |e| e.answer(&req, &node)).await
        }
        Request::Telemetry { after } => {
            return telemetry_stream(shared, after, send, recv).await;
        }
        Request::Checks(spec) => {
            let deadline = Duration::from_millis(spec.deadline_ms.max(100));
            let cfg = crate::health::with_live(&shared.cfg, &shared.ldap);
            let beats = shared.heartbeats.clone();
            let work = tokio::task::spawn_blocking(move || {
                crate::health::round(&cfg, &spec, beats.as_deref())
            });
            match tokio::time::timeout(deadline, work).await {
                Ok(Ok(report)) => Reply::Checks(Box::new(report)),
                Ok(Err(e)) => Reply::Error(RemoteError {
                    kind: ErrorKind::Internal,
                    message: format!("the checks failed: {e}"),
                }),
                // The probes end at their own deadlines; the round is answered now.
                Err(_) => Reply::Error(RemoteError {
                    kind: ErrorKind::Internal,
                    message: format!(
                        "the checks did not finish within the round's {} ms",
                        deadline.as_millis()
                    ),
                }),
            }
        }
        Request::ExecInContainer { root, spec } => {
            let ctx = exec_context(shared, controller);
            match crate::apply::container_exec(&shared.cfg, &root, spec) {
                Ok(spec) => return exec::run(spec, send, recv, ctx).await,
                // An exec stream carries exec events, its refusal included: a `Reply`
                // there would not decode at the controller.
                Err(e) => {
                    let _ = write_message(&mut send, &ExecEvent::Refused(e)).await;
                    let _ = send.finish();
                    return;
                }
            }
        }
    };
    let _ = reply(&mut send, answer).await;
}

fn exec_context(shared: &Shared, controller: String) -> ExecContext {
    ExecContext {
        journal: shared.journal.clone(),
        allow_exec: shared.cfg.allow_exec,
        controller,
        max_frame: shared.cfg.max_frame_bytes,
        budget: shared.budget.clone(),
        abort: shared.abort.clone(),
    }
}

/// Runs file work off the async threads (it fsyncs, and runs validators and reloads).
async fn blocking(
    shared: &Shared,
    work: impl FnOnce(&crate::apply::Engine) -> Result<Reply, RemoteError> + Send + 'static,
) -> Reply {
    let engine = shared.apply.clone();
    match tokio::task::spawn_blocking(move || work(&engine)).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => Reply::Error(e),
        Err(e) => Reply::Error(RemoteError {
            kind: ErrorKind::Internal,
            message: format!("the apply task failed: {e}"),
        }),
    }
}

fn internal(e: AgentError) -> Reply {
    Reply::Error(RemoteError {
        kind: ErrorKind::Internal,
        message: e.to_string(),
    })
}

/// The most records, and roughly the most bytes, in one telemetry frame.
const TELEMETRY_BATCH: usize = 8192;
const TELEMETRY_BATCH_BYTES: usize = 1 << 20;

/// Streams the spool from the record after `after` until the controller closes the
/// stream or the agent stops; the controller's acknowledgements free the spool.
async fn telemetry_stream(
    shared: &Shared,
    after: u64,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) {
    use clustermgr_protocol::codec;
    use clustermgr_protocol::frame::write_frame;
    use clustermgr_protocol::telemetry::{TelemetryAck, TelemetryFrame};
    let Some(handle) = shared.telemetry.clone() else {
        let _ = write_message(
            &mut send,
            &TelemetryFrame::Refused(RemoteError::refused(
                "telemetry is off on this node (telemetry.enabled = false in agent.toml, or its spool could not be opened: see the agent's log)",
            )),
        )
        .await;
        let _ = send.finish();
        return;
    };
    let max_frame = shared.cfg.max_frame_bytes;
    let acks = {
        let handle = handle.clone();
        let budget = shared.budget.clone();
        tokio::spawn(async move {
            while let Ok(Some((a, _held))) = budget
                .read::<TelemetryAck, _>(&mut recv, max_frame, "ack")
                .await
            {
                handle.ack(a.stored_through);
            }
        })
    };
    let mut stop = shared.stop.subscribe();
    let mut watch = handle.watch();
    let mut reader = Some(handle.reader(after));
    // Catching up reads megabytes, which may come from disk: off the async threads.
    // At the tail a read is one collector round, just written and in the page cache,
    // and a blocking-pool hand-off would cost more than the read itself.
    let mut catching_up = true;
    loop {
        let Some(mut r) = reader.take() else {
            break;
        };
        // Seen before reading: a flush after this point wakes the wait below, one
        // before it is in what is read.
        watch.borrow_and_update();
        let read = move || {
            // Forwarded as the spool holds them, encoded.
            let (mut records, mut count) = (Vec::new(), 0usize);
            // Well under the frame limit, which may be as low as 64 KiB.
            let max_bytes = TELEMETRY_BATCH_BYTES.min(max_frame as usize / 4);
            while count < TELEMETRY_BATCH && records.len() < max_bytes {
                if r.next_encoded(&mut records).is_none() {
                    break;
                }
                count += 1;
            }
            let full = count >= TELEMETRY_BATCH || records.len() >= max_bytes;
            let batch =
                (count > 0).then(|| TelemetryFrame::pack(codec::telemetry_batch(count, &records)));
            (r, batch, full)
        };
        let (r, batch, full) = if catching_up {
            let Ok(read) = tokio::task::spawn_blocking(read).await else {
                break;
            };
            read
        } else {
            read()
        };
        catching_up = full;
        reader = Some(r);
        if let Some(batch) = batch {
            // Waits while the controller is slow: back-pressure reaches only this
            // stream; the collector writes to disk regardless.
            if write_frame(&mut send, &batch).await.is_err() {
                break;
            }
            if full {
                // More is waiting: no need to be told.
                continue;
            }
        }
        tokio::select! {
            changed = watch.changed() => if changed.is_err() { break },
            _ = stop.wait_for(|s| *s) => break,
            _ = send.stopped() => break,
        }
        if acks.is_finished() {
            break;
        }
    }
    acks.abort();
    let _ = send.finish();
}

/// Receives one package file into the owner-only cache, keeping it only when its
/// SHA-256 matches what the controller announced.
async fn put_package(
    cfg: &AgentConfig,
    file: &clustermgr_protocol::changeset::PackageFile,
    send: &mut quinn::SendStream,
    recv: &mut quinn::RecvStream,
) -> Result<(), RemoteError> {
    crate::packages::allowed(cfg).map_err(RemoteError::refused)?;
    let cache = crate::packages::Cache::new(&cfg.state_dir);
    let upload = cache.upload_path(file).map_err(RemoteError::invalid)?;
    let dir = upload.parent().unwrap_or(Path::new("/"));
    let free = crate::sys::free_bytes(dir).map_err(RemoteError::internal)?;
    if free < file.size + (64 << 20) {
        return Err(RemoteError::refused(format!(
            "not enough space in {} for {}: {} MiB free, {} MiB needed",
            dir.display(),
            file.file,
            free >> 20,
            (file.size >> 20) + 64
        )));
    }
    // Not `reply`, which finishes the stream: the stored answer follows the bytes.
    write_message(send, &Reply::UpgradeReady)
        .await
        .map_err(RemoteError::internal)?;
    let got = crate::upgrade::receive_bytes(recv, &upload, file.size, 0o600).await;
    let got = match got {
        Ok(g) => g,
        Err(e) => {
            let _ = std::fs::remove_file(&upload);
            return Err(e);
        }
    };
    cache
        .keep(file, &upload, &got)
        .map_err(RemoteError::invalid)
}

async fn reply(send: &mut quinn::SendStream, answer: Reply) -> Result<(), AgentError> {
    write_message(send, &answer).await?;
    let _ = send.finish();
    let _ = send.stopped().await;
    Ok(())
}

fn make_csr(shared: &Shared, new_key: bool) -> Result<Reply, AgentError> {
    let key_pem = if new_key {
        let pem = crate::enroll::generate_key_pem()?;
        let path = pending_key_path(&shared.cfg.key);
        write_atomic(&path, pem.as_bytes(), 0o600)
            .map_err(|source| AgentError::Write { path, source })?;
        *shared.pending_key.lock().unwrap_or_else(|p| p.into_inner()) = Some(pem.clone());
        pem
    } else {
        shared
            .key_pem
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    };
    let pem = crate::enroll::csr_pem(&key_pem, &shared.node, &shared.cfg.key)?;
    Ok(Reply::Csr { pem })
}

fn install_cert(shared: &Shared, cert_pem: &str) -> Result<Reply, AgentError> {
    let cert_path = &shared.cfg.cert;
    let bad =
        |m: String| identity_error(cert_path, format!("refused the renewed certificate: {m}"));
    let der = cert_from_pem(cert_pem).map_err(|e| bad(e.to_string()))?;
    let summary = CertSummary::parse(&der).map_err(|e| bad(e.to_string()))?;
    let current = shared
        .key_pem
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let pending = shared
        .pending_key
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let key_pem = if summary.key_fingerprint == key_fingerprint(&current, &shared.cfg.key)? {
        current
    } else if let Some(p) = pending
        .filter(|p| key_fingerprint(p, &shared.cfg.key).is_ok_and(|f| f == summary.key_fingerprint))
    {
        p
    } else {
        return Err(bad("it is not for this agent's key".into()));
    };
    let status = verify_agent_cert(
        &shared.ca,
        &der,
        &shared.node,
        &[summary.key_fingerprint.as_str()],
        UnixTime::now(),
    )
    .map_err(|e| bad(e.to_string()))?;
    if status != AgentCertStatus::Valid {
        return Err(bad(
            "it is not valid by this host's clock; check the clocks of this host and the controller".into(),
        ));
    }
    let creds = Credentials::from_pem(cert_pem, &key_pem)?;
    let server = agent_server_config(
        creds,
        shared.ca.clone(),
        &shared.cfg.timeouts,
        shared.newest.seen.clone(),
    )?;
    let write = |path: &Path, bytes: &[u8], mode| {
        write_atomic(path, bytes, mode).map_err(|source| AgentError::Write {
            path: path.to_path_buf(),
            source,
        })
    };
    let rekey = key_pem != *shared.key_pem.lock().unwrap_or_else(|p| p.into_inner());
    if rekey {
        // Both new files exist before either replaces the old ones; a crash between the
        // two renames is finished by finish_interrupted_rekey at the next start.
        write(&pending_cert_path(cert_path), cert_pem.as_bytes(), 0o644)?;
        rename_durably(&pending_key_path(&shared.cfg.key), &shared.cfg.key)?;
        rename_durably(&pending_cert_path(cert_path), cert_path)?;
        *shared.key_pem.lock().unwrap_or_else(|p| p.into_inner()) = key_pem;
        *shared.pending_key.lock().unwrap_or_else(|p| p.into_inner()) = None;
    } else {
        write(cert_path, cert_pem.as_bytes(), 0o644)?;
    }
    shared.endpoint.set_server_config(Some(server));
    tracing::info!(
        "installed a renewed certificate (serial {}, valid until unix {})",
        summary.serial,
        summary.not_after
    );
    Ok(Reply::CertInstalled)
}
