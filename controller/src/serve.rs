//! `clustermgr serve`: holds the store, keeps the agents' connections warm (reconnect
//! with exponential backoff and full jitter, a bounded number of handshakes at once),
//! renews certificates, and answers the CLI on a Unix socket only its owner can open.

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::PermissionsExt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clustermgr_protocol::frame::write_message;
use tokio::io::AsyncReadExt;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::CtlError;
use crate::accept::Counted;
use crate::local::{ServeError, ServeMsg, read_request};
use crate::ops::{self, Ctx};

/// The first reconnect delay's ceiling.
const BACKOFF_BASE: Duration = Duration::from_millis(500);
/// The largest reconnect delay.
const BACKOFF_CAP: Duration = Duration::from_secs(60);
/// How often the keeper looks at the connections.
const KEEPER_TICK: Duration = Duration::from_millis(500);
/// How often serve looks at the tunnel certificates' and revocation list's dates:
/// they are renewed 60 days ahead, so hourly is plenty.
const TUNNEL_CHECK: Duration = Duration::from_secs(3600);

/// CLI connections served at once (each `logs -f` or `exec` holds one while it runs);
/// more wait in the socket's backlog.
const CLI_CONNECTIONS: usize = 128;
/// One deadline for a CLI's whole request, which it sends at once.
const CLI_REQUEST_DEADLINE: Duration = Duration::from_secs(5);
/// How often bad requests on the CLI socket are logged (with a count of the rest).
const BAD_REQUEST_LOG_EVERY: Duration = Duration::from_secs(60);

/// Runs `serve` until `shutdown` resolves.
pub async fn serve(
    ctx: Arc<Ctx>,
    shutdown: impl std::future::Future<Output = ()>,
    exports: &crate::telemetry::export::ExportOptions,
) -> Result<(), CtlError> {
    let exports = crate::telemetry::export::start(exports).await?;
    let socket = ctx.home.socket();
    // We hold the store's lock, so no other serve is alive: a socket file left here is
    // stale.
    let _ = std::fs::remove_file(&socket);
    let listener = UnixListener::bind(&socket).map_err(|e| CtlError::io(&socket, e))?;
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| CtlError::io(&socket, e))?;
    tracing::info!("serving the CLI on {}", socket.display());
    let access = Arc::new(crate::config::ControllerConfig::load(&ctx.home.config())?.access);
    let shared = match &access.socket {
        Some(path) => Some((bind_shared(path)?, path.clone())),
        None => None,
    };
    let keeper = tokio::spawn(keep_connections(ctx.clone()));
    let tunnel_keeper = tokio::spawn(keep_tunnel(ctx.clone()));
    let keys_keeper = tokio::spawn(keep_keys(ctx.clone()));
    let telemetry_keeper = tokio::spawn(keep_telemetry(ctx.clone(), exports.clone()));
    let telemetry_upkeep = tokio::spawn(maintain_telemetry(ctx.clone()));
    let health_watch = tokio::spawn(crate::health::watch(ctx.clone()));
    let web_cfg = crate::config::ControllerConfig::load(&ctx.home.config())?.web;
    let console = tokio::spawn(crate::web::run(ctx.clone(), web_cfg));
    let alerts = tokio::spawn(crate::health::alerts::deliver(ctx.clone()));
    let cli_ctx = ctx.clone();
    // Anyone with the socket can send bad requests at will: a line a minute, counted.
    let bad_requests = Arc::new(Counted::new(
        BAD_REQUEST_LOG_EVERY,
        "bad requests (or hang-ups) from CLI clients".into(),
    ));
    let bad = bad_requests.clone();
    let own_access = access.clone();
    let accepting = crate::accept::serve_bounded(listener, CLI_CONNECTIONS, "CLI", move |stream| {
        client(cli_ctx.clone(), stream, bad.clone(), own_access.clone())
    });
    // Other local users' CLIs, each with the role [access] gives it; the same bound.
    let shared_accepting = async {
        match shared {
            Some((listener, path)) => {
                tracing::info!("serving other local users' CLIs on {}", path.display());
                let (ctx, bad) = (ctx.clone(), bad_requests.clone());
                crate::accept::serve_bounded(listener, CLI_CONNECTIONS, "shared CLI", move |s| {
                    client(ctx.clone(), s, bad.clone(), access.clone())
                })
                .await
            }
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = shutdown => {}
        _ = bad_requests.flushing(accepting) => {}
        _ = shared_accepting => {}
    }
    keeper.abort();
    tunnel_keeper.abort();
    keys_keeper.abort();
    telemetry_keeper.abort();
    telemetry_upkeep.abort();
    health_watch.abort();
    console.abort();
    alerts.abort();
    exports.close(Duration::from_secs(10)).await;
    let _ = std::fs::remove_file(&socket);
    if let Some(path) = &crate::config::ControllerConfig::load(&ctx.home.config())
        .ok()
        .and_then(|c| c.access.socket)
    {
        let _ = std::fs::remove_file(path);
    }
    ctx.dialer.close().await;
    Ok(())
}

/// Binds `[access] socket`, which any local user may connect to (0666: the kernel's
/// word on who connects decides what they may do). Refused in a directory others may
/// write, where someone could swap the socket for one of their own and read what the
/// CLIs send.
fn bind_shared(path: &std::path::Path) -> Result<UnixListener, CtlError> {
    use std::os::unix::fs::MetadataExt;
    let dir = path.parent().unwrap_or(std::path::Path::new("/"));
    let meta = std::fs::metadata(dir).map_err(|e| CtlError::io(dir, e))?;
    let me = std::fs::metadata("/proc/self").map(|m| m.uid()).ok();
    if !(meta.uid() == 0 || Some(meta.uid()) == me) {
        return Err(CtlError::BadFile {
            path: dir.to_path_buf(),
            why: "[access] socket must be in a directory owned by root or by the controller's user (another owner could replace the socket)".into(),
        });
    }
    if meta.permissions().mode() & 0o022 != 0 {
        return Err(CtlError::Insecure {
            path: dir.to_path_buf(),
            what: "the directory of [access] socket, writable by group or others",
            mode: meta.permissions().mode() & 0o7777,
            fix: "755",
        });
    }
    // Ours from an earlier serve (we hold the store's lock, so none runs now).
    if let Ok(m) = std::fs::symlink_metadata(path) {
        use std::os::unix::fs::FileTypeExt;
        if m.file_type().is_socket() {
            let _ = std::fs::remove_file(path);
        }
    }
    let listener = UnixListener::bind(path).map_err(|e| CtlError::io(path, e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))
        .map_err(|e| CtlError::io(path, e))?;
    Ok(listener)
}

async fn client(
    ctx: Arc<Ctx>,
    stream: UnixStream,
    bad_requests: Arc<Counted>,
    access: Arc<crate::access::AccessConfig>,
) {
    let cred = stream.peer_cred().ok();
    let peer_uid = cred.map(|c| c.uid());
    let (mut rd, mut wr) = stream.into_split();
    let (hello, mut inv) = match tokio::time::timeout(CLI_REQUEST_DEADLINE, read_request(&mut rd))
        .await
    {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            if let Some(earlier) = bad_requests.admit() {
                tracing::info!(
                    "a CLI client sent a bad request: {e} ({earlier} more since the last such line)"
                );
            }
            return;
        }
        // Its slot goes to someone else; not logged, since anyone could repeat it.
        Err(_) => return,
    };
    let ours = env!("CARGO_PKG_VERSION");
    if hello.software != ours {
        let _ = write_message(
            &mut wr,
            &ServeMsg::Refused(format!(
                "it runs clustermgr {ours} and this CLI is {}; restart `clustermgr serve` after an upgrade",
                hello.software
            )),
        )
        .await;
        return;
    }
    // The socket is the owner's only (0600), but the audit log takes the kernel's word
    // for who is on the other end, not the client's.
    let role = match cred {
        Some(c) => {
            inv.user = ops::audit_user(c.uid());
            let peer = crate::access::Peer {
                uid: c.uid(),
                name: crate::ctx::user_name(c.uid()),
                groups: c
                    .pid()
                    .map(|pid| crate::access::groups_of_process(pid, c.uid(), c.gid()))
                    .unwrap_or_default(),
            };
            let owner = std::fs::metadata("/proc/self")
                .map_or(u32::MAX, |m| std::os::unix::fs::MetadataExt::uid(&m));
            access.role_of(&peer, owner)
        }
        None => None,
    };
    let refused = match (peer_uid, role) {
        (Some(_), Some(role)) => inv.op.allowed(&inv.user, role).err(),
        (Some(_), None) => Some(CtlError::NoRole {
            who: inv.user.clone(),
        }),
        (None, _) => None,
    };
    if let Some(e) = refused {
        if let Some(earlier) = bad_requests.admit() {
            tracing::info!(
                "{e} ({earlier} more refusals or bad requests since the last such line)"
            );
        }
        let _ = write_message(
            &mut wr,
            &ServeMsg::Done(Err(ServeError {
                message: e.to_string(),
                exit_code: e.exit_code(),
            })),
        )
        .await;
        return;
    }
    match peer_uid {
        Some(_) => {}
        None => {
            let _ = write_message(
                &mut wr,
                &ServeMsg::Refused("cannot tell which user is connecting".into()),
            )
            .await;
            return;
        }
    }
    let (tx, mut rx) = mpsc::channel(64);
    let op = ops::run(ctx, inv, tx);
    tokio::pin!(op);
    let mut gone = [0u8; 1];
    let result = loop {
        tokio::select! {
            biased;
            ev = rx.recv() => {
                if let Some(ev) = ev
                    && write_message(&mut wr, &ServeMsg::Event(ev)).await.is_err() {
                        return;
                    }
            }
            result = &mut op => break result,
            // The CLI sends nothing more; a read returning means it went away (Ctrl-C),
            // and returning drops the operation, which cancels its commands.
            _ = rd.read(&mut gone) => return,
        }
    };
    while let Ok(ev) = rx.try_recv() {
        if write_message(&mut wr, &ServeMsg::Event(ev)).await.is_err() {
            return;
        }
    }
    let done = result.map_err(|e| ServeError {
        message: e.to_string(),
        exit_code: e.exit_code(),
    });
    let _ = write_message(&mut wr, &ServeMsg::Done(done)).await;
}

/// A uniformly random duration in `[0, ceiling)`: "full jitter", so agents that went
/// down together are not all redialled in the same instant.
fn full_jitter(ceiling: Duration) -> Duration {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 8];
    let _ = ring::rand::SystemRandom::new().fill(&mut b);
    let ms = ceiling.as_millis().max(1) as u64;
    Duration::from_millis(u64::from_le_bytes(b) % ms)
}

/// The delay before reconnect attempt `failures` (1, 2, ...).
pub fn backoff(failures: u32) -> Duration {
    let exp = BACKOFF_BASE.saturating_mul(1u32 << failures.min(16));
    full_jitter(exp.min(BACKOFF_CAP))
}

async fn keep_connections(ctx: Arc<Ctx>) {
    // Per node: consecutive failures and the earliest next attempt, for reconnects and
    // renewals alike (a node is either connected or not, so one schedule serves both).
    let schedule: Arc<Mutex<HashMap<String, (u32, Instant)>>> = Arc::default();
    let busy: Arc<Mutex<HashSet<String>>> = Arc::default();
    let Some(pool) = ctx.pool.as_ref() else {
        return;
    };
    loop {
        if let Err(e) = ctx.renew_controller_if_due() {
            tracing::warn!("renewing the controller certificate failed: {e}");
        }
        let nodes = ctx.store.nodes().unwrap_or_default();
        let now = Instant::now();
        for node in nodes {
            // A warm connection outlives certificates: renew through it when due.
            let work = match pool.get(&node.name) {
                Some(conn) if conn.cert.renewal_due(ctx.clock.unix()) => Work::Renew,
                Some(_) if has_pending(&ctx, &node.name) => Work::Reconcile,
                Some(_) => continue,
                None => Work::Connect,
            };
            let due = schedule
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&node.name)
                .is_none_or(|(_, at)| *at <= now);
            if !due
                || !busy
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(node.name.clone())
            {
                continue;
            }
            let (ctx, schedule, busy) = (ctx.clone(), schedule.clone(), busy.clone());
            tokio::spawn(async move {
                let result = match work {
                    Work::Connect => ctx.connection(&node).await.map(|_| ()),
                    Work::Renew => ctx.renew_pooled(&node).await,
                    Work::Reconcile => {
                        reconcile(&ctx, &node).await;
                        Ok(())
                    }
                };
                let mut sched = schedule.lock().unwrap_or_else(|p| p.into_inner());
                match result {
                    Ok(()) => {
                        sched.remove(&node.name);
                    }
                    Err(f) => {
                        let failures = sched.get(&node.name).map_or(1, |(n, _)| n + 1);
                        let delay = backoff(failures);
                        tracing::info!(
                            "{}: {} (retrying in {:.1} s)",
                            node.name,
                            f.message,
                            delay.as_secs_f32()
                        );
                        sched.insert(node.name.clone(), (failures, Instant::now() + delay));
                    }
                }
                busy.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&node.name);
            });
        }
        tokio::time::sleep(KEEPER_TICK).await;
    }
}

/// Renews the stunnel certificates and the revocation list before they expire; the
/// connection keeper delivers them as pending revisions.
async fn keep_tunnel(ctx: Arc<Ctx>) {
    loop {
        match crate::desired::renew_tunnel(&ctx, ctx.dialer.connect_timeout).await {
            Ok(nodes) if !nodes.is_empty() => tracing::info!(
                "renewed tunnel certificates or their revocation list; sending them to {}",
                nodes.join(", ")
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!("renewing the tunnel certificates failed: {e}"),
        }
        tokio::time::sleep(TUNNEL_CHECK).await;
    }
}

/// How often serve looks whether oxAuth's keys are due for rotation.
const KEYS_CHECK: Duration = Duration::from_secs(600);

/// Rotates oxAuth's keys every `[keys] interval_hours` once the first rotation was
/// made (`keys rotate`): a cluster whose keys clustermgr never made keeps Gluu's own
/// until the administrator decides. A failed rotation is logged and tried again at the
/// next check.
async fn keep_keys(ctx: Arc<Ctx>) {
    loop {
        let due = crate::config::ControllerConfig::load(&ctx.home.config())
            .ok()
            .and_then(|c| {
                let rec = ctx.store.keys().ok()?;
                crate::desired::keys::next_rotation_ms(&rec, &c.keys)
            })
            .is_some_and(|at| at <= ctx.clock.unix_ms());
        if due {
            let (events, mut drained) = tokio::sync::mpsc::channel(64);
            let draining = tokio::spawn(async move { while drained.recv().await.is_some() {} });
            match crate::desired::keys::rotate(&ctx, "serve", ctx.dialer.connect_timeout, &events)
                .await
            {
                Ok(v) => tracing::info!("{}", v.message),
                Err(e) => tracing::warn!("rotating oxAuth's keys failed: {e}"),
            }
            drop(events);
            let _ = draining.await;
        }
        tokio::time::sleep(KEYS_CHECK).await;
    }
}

/// How often serve rolls samples up into the 1-minute and 1-hour tiers and applies
/// the retention.
const TELEMETRY_UPKEEP: Duration = Duration::from_secs(60);

/// Rolls up and prunes the telemetry store every [`TELEMETRY_UPKEEP`].
async fn maintain_telemetry(ctx: Arc<Ctx>) {
    // The size bound is checked hourly: it reads every stored value.
    let mut size_checked = Instant::now();
    loop {
        tokio::time::sleep(TELEMETRY_UPKEEP).await;
        let keep = match crate::config::ControllerConfig::load(&ctx.home.config()) {
            Ok(c) => c.retention,
            Err(e) => {
                tracing::warn!("{e}; the telemetry retention defaults apply");
                Default::default()
            }
        };
        let Ok(store) = ctx.telemetry() else {
            continue;
        };
        let now = ctx.clock.now().unix_timestamp() * 1000;
        let check_size = size_checked.elapsed() >= Duration::from_secs(3600);
        if check_size {
            size_checked = Instant::now();
        }
        match tokio::task::spawn_blocking(move || store.maintain(now, &keep, check_size)).await {
            Ok(Ok(m)) if m.removed > 0 => tracing::info!(
                "telemetry: {} points rolled up, {} old chunks and log blocks removed",
                m.rolled_up,
                m.removed
            ),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!("telemetry upkeep: {e}"),
            Err(e) => tracing::warn!("telemetry upkeep: {e}"),
        }
    }
}

/// Keeps one telemetry stream open per connected node, resuming each from the last
/// record the store holds; a stream that fails is tried again with the backoff.
async fn keep_telemetry(ctx: Arc<Ctx>, exports: Arc<crate::telemetry::export::Exports>) {
    // A store that cannot open now (a full disk, a file locked by another process) is
    // tried again: the agents keep spooling meanwhile.
    let mut failures = 0;
    let store = loop {
        match ctx.telemetry() {
            Ok(s) => break s,
            Err(e) => {
                failures += 1;
                let delay = backoff(failures);
                tracing::error!(
                    "telemetry is not stored: {e}; trying again in {:.0} s (the agents keep it meanwhile)",
                    delay.as_secs_f32()
                );
                tokio::time::sleep(delay).await;
            }
        }
    };
    let Some(pool) = ctx.pool.as_ref() else {
        return;
    };
    let streaming: Arc<Mutex<HashSet<String>>> = Arc::default();
    let mut retry: HashMap<String, (u32, Instant)> = HashMap::new();
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<(String, Result<(), String>)>();
    loop {
        while let Ok((node, result)) = done_rx.try_recv() {
            streaming
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&node);
            match result {
                Ok(()) => {
                    retry.remove(&node);
                }
                Err(why) => {
                    let failures = retry.get(&node).map_or(1, |(n, _)| n + 1);
                    let delay = backoff(failures);
                    tracing::info!(
                        "{node}: telemetry stream: {why} (again in {:.1} s)",
                        delay.as_secs_f32()
                    );
                    retry.insert(node, (failures, Instant::now() + delay));
                }
            }
        }
        let now = Instant::now();
        for node in ctx.store.nodes().unwrap_or_default() {
            if retry.get(&node.name).is_some_and(|(_, at)| *at > now)
                || streaming
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .contains(&node.name)
            {
                continue;
            }
            let Some(conn) = pool.get_pinned(&node) else {
                continue;
            };
            streaming
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(node.name.clone());
            let (ctx, store, done) = (ctx.clone(), store.clone(), done_tx.clone());
            let exports = exports.clone();
            tokio::spawn(async move {
                let r = stream_telemetry(&ctx, &store, &exports, &node.name, conn).await;
                let _ = done.send((node.name, r));
            });
        }
        tokio::time::sleep(KEEPER_TICK).await;
    }
}

/// One node's telemetry stream: store each batch (once), acknowledge it, and hand its
/// lines to the `logs -f` followers.
async fn stream_telemetry(
    ctx: &Ctx,
    store: &Arc<crate::telemetry::store::TelemetryStore>,
    exports: &crate::telemetry::export::Exports,
    node: &str,
    conn: crate::connect::AgentConn,
) -> Result<(), String> {
    use clustermgr_protocol::frame::read_message;
    use clustermgr_protocol::message::Request;
    use clustermgr_protocol::telemetry::{TelemetryAck, TelemetryFrame};
    let after = store.cursor(node).map_err(|e| e.to_string())?;
    let (mut send, mut recv) = conn.open().await.map_err(|f| f.message)?;
    write_message(&mut send, &Request::Telemetry { after })
        .await
        .map_err(|e| e.to_string())?;
    // Acknowledgements only free the agent's spool, so a few a second do: one per
    // frame would wake the agent for every collector round. A frame within
    // `TELEMETRY_ACK_EVERY` of the last acknowledgement is acknowledged with the next
    // one (the agent sends its metrics at least every interval). What is stored but
    // not yet acknowledged when the stream breaks is sent again and skipped at ingest.
    let mut acked_at: Option<tokio::time::Instant> = None;
    loop {
        let frame = read_message::<TelemetryFrame, _>(&mut recv, conn.max_frame(), "telemetry")
            .await
            .map_err(|e| e.to_string())?;
        let Some(frame) = frame else { return Ok(()) };
        // A frame unpacks to no more than four frames' worth; the agent packs a
        // quarter of one at most.
        let unpacked = frame
            .unpacked(conn.max_frame() as usize * 4)
            .map_err(|e| e.to_string())?;
        let records = unpacked.map_err(|e| e.message)?;
        let (s, n) = (store.clone(), node.to_string());
        let ingested = tokio::task::spawn_blocking(move || s.ingest(&n, &records))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        for (t, samples) in &ingested.new_metrics {
            exports.samples(node, *t, samples);
            ctx.recent.tick(node, *t, samples);
        }
        for line in ingested.new_lines {
            // No follower is fine.
            let _ = ctx
                .live_logs
                .send(crate::telemetry::store::NodeLine::of(node, line));
        }
        if acked_at.is_none_or(|t| t.elapsed() >= TELEMETRY_ACK_EVERY) {
            acked_at = Some(tokio::time::Instant::now());
            write_message(
                &mut send,
                &TelemetryAck {
                    stored_through: ingested.cursor,
                },
            )
            .await
            .map_err(|e| e.to_string())?;
        }
    }
}

/// The least time between two acknowledgements of a telemetry stream.
const TELEMETRY_ACK_EVERY: Duration = Duration::from_millis(250);

fn has_pending(ctx: &Ctx, node: &str) -> bool {
    ctx.store.desired(node).is_ok_and(|d| d.pending.is_some())
}

/// Sends a node the desired-state revision it missed while unreachable.
async fn reconcile(ctx: &Ctx, node: &crate::store::NodeRecord) {
    match crate::desired::reconcile(ctx, node).await {
        Ok(Some(v)) => tracing::info!(
            "{}: revision {} it missed: {}{}",
            node.name,
            v.revision,
            v.result,
            v.message.map(|m| format!(": {m}")).unwrap_or_default()
        ),
        Ok(None) => {}
        Err(e) => tracing::warn!("{}: sending the revision it missed failed: {e}", node.name),
    }
}

/// What the keeper does for one node.
#[derive(Clone, Copy)]
enum Work {
    /// It is connected and has a desired-state revision it has not received.
    Reconcile,
    /// It has no open connection: dial it.
    Connect,
    /// Its certificate is due: renew it over the warm connection.
    Renew,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_cli_request_that_trickles_in_is_dropped_at_the_requests_one_deadline() {
        let (ctx, _home) = scratch_ctx();
        let (mut cli, ours) = UnixStream::pair().unwrap();
        // A frame of 1000 bytes announced, which never ends.
        let mut request = 1000u32.to_be_bytes().to_vec();
        request.extend([b'a'; 100]);
        crate::accept::assert_dropped_while_trickling(
            client(
                ctx,
                ours,
                Arc::new(Counted::new(BAD_REQUEST_LOG_EVERY, "x".into())),
                Arc::default(),
            ),
            &mut cli,
            &request,
            CLI_REQUEST_DEADLINE,
        )
        .await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_short_burst_of_bad_cli_requests_is_counted_in_a_line_at_its_intervals_end() {
        let (log, _guard) = crate::accept::capture_log();
        let ctx = scratch_ctx();
        let bad = Arc::new(Counted::new(
            BAD_REQUEST_LOG_EVERY,
            "bad requests (or hang-ups) from CLI clients".into(),
        ));
        // Five clients that hang up at once, then none.
        for _ in 0..5 {
            let (cli, ours) = UnixStream::pair().unwrap();
            drop(cli);
            client(ctx.0.clone(), ours, bad.clone(), Arc::default()).await;
        }
        let quiet = tokio::time::sleep(3 * BAD_REQUEST_LOG_EVERY);
        bad.flushing(quiet).await;
        let log = String::from_utf8(log.lock().unwrap().clone()).unwrap();
        assert_eq!(
            log.matches("a CLI client sent a bad request").count(),
            1,
            "the first is logged as it happens: {log}"
        );
        assert!(
            log.contains(
                "4 more bad requests (or hang-ups) from CLI clients since the last such line"
            ),
            "the other four are told once their minute is over: {log}"
        );
    }

    /// A context on a fresh home, which lives as long as the returned directory.
    fn scratch_ctx() -> (Arc<Ctx>, tempfile::TempDir) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("home");
        let now = crate::clock::Clock::now(&crate::clock::SystemClock);
        ops::init(&dir, "c", 90, &crate::clock::FixedClock(now)).unwrap();
        let ctx = Ctx::open(&dir, crate::clock::system(), &Default::default(), true).unwrap();
        (Arc::new(ctx), tmp)
    }

    #[test]
    fn backoff_grows_to_its_cap_and_stays_jittered() {
        for failures in 0..40 {
            let ceiling = BACKOFF_BASE
                .saturating_mul(1u32 << failures.min(16))
                .min(BACKOFF_CAP);
            for _ in 0..50 {
                assert!(backoff(failures) < ceiling);
            }
        }
        let samples: HashSet<Duration> = (0..50).map(|_| backoff(10)).collect();
        assert!(samples.len() > 10, "full jitter spreads the retries");
    }
}
