//! Cluster health: a round asks every node's agent for its checks
//! (`Request::Checks`), and [`verdict`] compares the reports across nodes.

pub mod alerts;
pub mod ports;
pub mod replication;
pub mod verdict;

use std::collections::BTreeMap;
use std::time::Duration;

use clustermgr_protocol::health::{
    CertProbe, CheckSpec, GLUU_ENDPOINTS, REDIS_ADDR, ServiceKind, ServiceProbe,
};
use clustermgr_protocol::message::{Reply, Request};
use serde::{Deserialize, Serialize};

use crate::CtlError;
use crate::ctx::Ctx;
use crate::store::{NodeRecord, Role};
use verdict::{Level, Member, Members, NodeRound, Verdict};

/// What `clustermgr health` shows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct HealthView {
    /// The worst state of all: the exit code.
    pub worst: Level,
    /// Every check of every selected node.
    pub verdicts: Vec<Verdict>,
    /// When `serve` ran the round shown (Unix milliseconds); `None` when this command
    /// ran its own.
    pub as_of_ms: Option<i64>,
    /// The same, RFC 3339.
    #[schemars(extend("format" = "date-time"))]
    pub as_of: Option<String>,
}

/// What the health operations answer; the dispatch turns it into its `Report`.
#[derive(Clone, Debug)]
pub enum View {
    /// `health`.
    Health(HealthView),
    /// `replication`.
    Replication(replication::ReplicationView),
    /// `ports`.
    Ports(ports::PortsView),
    /// `events`, `events ack` (the one event).
    Events(Vec<EventRecord>),
}

pub use crate::healthlog::Latest;

/// A node's worst check in `latest`, as `top` shows it: `ok`, or `critical: ldap`.
pub fn worst_word(latest: Option<&Latest>, node: &str) -> Option<String> {
    latest
        .and_then(|l| l.worst_of(node))
        .map(|(level, check)| match level {
            Level::Ok => "ok".to_string(),
            l => format!("{}: {check}", l.as_str()),
        })
}

/// `serve`'s latest round when it is recent (within two intervals and a moment): a
/// round older than that means the watch is stuck, and a round of one's own is better.
pub(crate) fn latest(ctx: &Ctx) -> Option<std::sync::Arc<Latest>> {
    let l = ctx
        .health_latest
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone()?;
    let now_ms = ctx.clock.now().unix_timestamp_nanos() as i64 / 1_000_000;
    let fresh = now_ms - l.at_ms <= 2 * l.interval.as_millis() as i64 + 5000;
    fresh.then_some(l)
}

/// The members a round concerns, from the inventory, the cluster's settings and the
/// nodes clustermgr has set csync2 up on, judged by `cfg`'s limits.
pub fn members(
    nodes: &[NodeRecord],
    model: &crate::model::ClusterModel,
    cfg: &crate::config::HealthConfig,
    csync2_set_up: &std::collections::BTreeSet<String>,
    keystore: Option<&str>,
) -> Members {
    let mut reach = ports::matrix(nodes, model);
    // csync2's port is wanted between two nodes once both are set up: before that
    // nothing of ours listens, and nothing calls it.
    for (from, probes) in &mut reach {
        probes.retain(|p| {
            p.port != clustermgr_protocol::health::CSYNC2_PORT
                || (csync2_set_up.contains(from) && csync2_set_up.contains(&p.node))
        });
    }
    Members {
        limits: verdict::Limits {
            disk_warning_pct: f64::from(cfg.disk_warning_pct),
            disk_critical_pct: f64::from(cfg.disk_critical_pct),
        },
        nodes: nodes
            .iter()
            .map(|n| {
                (
                    n.name.clone(),
                    Member {
                        gluu: n.has_role(Role::Gluu),
                        host: crate::generate::ip_of(n),
                        reach: reach.remove(&n.name).unwrap_or_default(),
                        csync2: crate::generate::csync2::member(n, nodes),
                        csync2_set_up: csync2_set_up.contains(&n.name),
                        certs: watched_certs(n),
                        services: tried_services(n, nodes, model, keystore),
                        gluu_endpoints: model.hostname.clone().filter(|_| n.has_role(Role::Gluu)),
                    },
                )
            })
            .collect(),
    }
}

/// The certificates a node's agent watches besides those it finds itself (its LDAP
/// server's, and Apache's in the Gluu install it detects): the load balancer's nginx.
fn watched_certs(n: &NodeRecord) -> Vec<CertProbe> {
    let mut out = Vec::new();
    if n.has_role(Role::Lb) {
        out.push(CertProbe {
            label: "load balancer's TLS certificate".into(),
            path: crate::generate::nginx::CERT.into(),
        });
    }
    out
}

/// The services a node's agent tries besides its Gluu endpoints: on the load
/// balancer, oxAuth and oxTrust through nginx by the cluster's name; Redis on the cache
/// host, and the cache through each Gluu node's tunnel; and on each Gluu node, once the
/// cluster's oxAuth keys exist, that its keystore is the cluster's (SHA-256 `keystore`).
fn tried_services(
    n: &NodeRecord,
    nodes: &[NodeRecord],
    model: &crate::model::ClusterModel,
    keystore: Option<&str>,
) -> Vec<ServiceProbe> {
    let mut out = Vec::new();
    if let Some(sha256) = keystore.filter(|_| n.has_role(Role::Gluu)) {
        out.push(ServiceProbe {
            label: "oxAuth's keystore".into(),
            kind: ServiceKind::FileSha256 {
                path: format!(
                    "{}{}",
                    model.gluu_root.trim_end_matches('/'),
                    crate::generate::keys::KEYSTORE
                ),
                sha256: sha256.into(),
                fix: "`clustermgr keys status` names the nodes; `clustermgr apply` sends the cluster's keystore".into(),
            },
        });
    }
    if n.has_role(Role::Lb)
        && let Some(host) = &model.hostname
    {
        // oxAuth and oxTrust, which every Gluu node runs.
        for e in &GLUU_ENDPOINTS[..2] {
            out.push(ServiceProbe {
                label: format!("{} through the load balancer", e.name),
                kind: ServiceKind::Https {
                    port: ports::HTTPS,
                    host: host.clone(),
                    path: e.path.into(),
                    expect: e.expect.into(),
                    cert: crate::generate::nginx::CERT.into(),
                },
            });
        }
    }
    let has_cache = nodes.iter().any(|c| c.has_role(Role::Cache));
    if model.cache == crate::model::Cache::Redis && has_cache {
        // Authenticated with the password `apply` wrote on the node (see
        // `generate::redis` for why a file and not this request).
        let password_file = crate::generate::redis::PASSWORD_FILE.to_string();
        if n.has_role(Role::Cache) {
            out.push(ServiceProbe {
                label: "Redis".into(),
                kind: ServiceKind::RedisPingAuth {
                    addr: REDIS_ADDR.into(),
                    password_file: password_file.clone(),
                },
            });
        }
        if n.has_role(Role::Gluu) {
            out.push(ServiceProbe {
                label: "the cache through the stunnel tunnel".into(),
                kind: ServiceKind::RedisPingAuth {
                    addr: format!("127.0.0.1:{}", crate::generate::stunnel::PORT),
                    password_file,
                },
            });
        }
    }
    out
}

/// Asks every node for its checks at once; each has `interval` to answer.
pub async fn round(
    ctx: &Ctx,
    nodes: &[NodeRecord],
    members: &Members,
    interval: Duration,
    within: Duration,
) -> BTreeMap<String, NodeRound> {
    use futures_util::stream::{FuturesUnordered, StreamExt};
    // The agent answers within the deadline; the reply has a moment more to arrive.
    let deadline = interval
        .saturating_sub(Duration::from_millis(500))
        .max(Duration::from_secs(1));
    // A node that does not answer is given up on within the interval (the agent's
    // deadline is half a second under it), so one cut agent never makes the round
    // outlast it and delay every other node's verdicts.
    let reply_timeout = interval.max(deadline + Duration::from_millis(500));
    let mut asks: FuturesUnordered<_> = nodes
        .iter()
        .map(|n| {
            let m = members.nodes.get(&n.name);
            let spec = CheckSpec {
                interval_ms: interval.as_millis() as u64,
                deadline_ms: deadline.as_millis() as u64,
                reach: m.map(|m| m.reach.clone()).unwrap_or_default(),
                csync2: m
                    .filter(|m| m.csync2 && m.csync2_set_up)
                    .map(|_| n.name.clone()),
                certs: m.map(|m| m.certs.clone()).unwrap_or_default(),
                services: m.map(|m| m.services.clone()).unwrap_or_default(),
                gluu_endpoints: m.and_then(|m| m.gluu_endpoints.clone()),
            };
            async move {
                let got = match tokio::time::timeout(
                    reply_timeout,
                    ask(ctx, n, spec, reply_timeout, within),
                )
                .await
                {
                    Ok(got) => got,
                    Err(_) => NodeRound::Unreachable(format!(
                        "no reply within {:.1} s",
                        reply_timeout.as_secs_f64()
                    )),
                };
                (n.name.clone(), got)
            }
        })
        .collect();
    let mut out = BTreeMap::new();
    while let Some((name, got)) = asks.next().await {
        out.insert(name, got);
    }
    out
}

async fn ask(
    ctx: &Ctx,
    node: &NodeRecord,
    spec: CheckSpec,
    timeout: Duration,
    within: Duration,
) -> NodeRound {
    let conn = match ctx.link(node, within).await {
        Ok(c) => c,
        Err(f) => return NodeRound::Unreachable(f.message),
    };
    // An older agent gets the checks it can decode (the Redis PING without AUTH).
    let spec = spec.for_version(conn.version());
    let sent_ms = ctx.clock.now().unix_timestamp_nanos() as i64 / 1_000_000;
    match conn.request(&Request::Checks(spec), timeout).await {
        Ok(Reply::Checks(report)) => NodeRound::Report {
            skew_ms: report.started_ms - sent_ms,
            report: *report,
        },
        Ok(Reply::Error(e)) => NodeRound::Failed(e.message),
        Ok(other) => NodeRound::Failed(format!("it answered the checks with {other:?}")),
        Err(f) => NodeRound::Unreachable(f.message),
    }
}

/// One round over every node, for the one-shot commands: `serve`'s latest when it is
/// recent, else one now; the members, the round and the interval it was asked with.
async fn one_round(
    ctx: &Ctx,
    within: Duration,
) -> Result<(Members, BTreeMap<String, NodeRound>, Duration), CtlError> {
    if let Some(l) = latest(ctx) {
        return Ok((l.members.clone(), l.round.clone(), l.interval));
    }
    own_round(ctx, within).await
}

/// The SHA-256 of the cluster's oxAuth keystore, once `keys rotate` made it.
fn keystore_sha256(ctx: &Ctx) -> Result<Option<String>, CtlError> {
    let rec = ctx.store.keys()?;
    Ok(
        (!rec.keystore.is_empty())
            .then(|| clustermgr_protocol::identity::sha256_hex(&rec.keystore)),
    )
}

/// A round asked now, whatever `serve` has.
async fn own_round(
    ctx: &Ctx,
    within: Duration,
) -> Result<(Members, BTreeMap<String, NodeRound>, Duration), CtlError> {
    let all = ctx.store.nodes()?;
    let cfg = crate::config::ControllerConfig::load(&ctx.home.config())?;
    let interval = Duration::from_secs(cfg.health.interval_secs);
    let set_up = crate::generate::csync2::set_up(&ctx.store.all_desired()?);
    let keystore = keystore_sha256(ctx)?;
    let members = members(
        &all,
        &ctx.store.model()?,
        &cfg.health,
        &set_up,
        keystore.as_deref(),
    );
    let now = round(ctx, &all, &members, interval, within).await;
    Ok((members, now, interval))
}

/// `clustermgr health`: one round now, judged against the whole cluster, shown for
/// the selected nodes.
pub async fn health(ctx: &Ctx, selector: &str, within: Duration) -> Result<View, CtlError> {
    let shown: Vec<String> = crate::selector::select(&ctx.store.nodes()?, selector)?
        .into_iter()
        .map(|n| n.name)
        .collect();
    let (all, as_of_ms) = match latest(ctx) {
        Some(l) => (l.verdicts.clone(), Some(l.at_ms)),
        None => {
            let (members, now, interval) = one_round(ctx, within).await?;
            let v = verdict::verdicts(&members, &now, None, interval.as_millis() as i64);
            (v, None)
        }
    };
    let verdicts: Vec<Verdict> = all
        .into_iter()
        .filter(|v| shown.contains(&v.node))
        .collect();
    Ok(View::Health(HealthView {
        worst: Level::worst(verdicts.iter().map(|v| v.level)),
        verdicts,
        as_of: as_of_ms.map(crate::clock::rfc3339_ms),
        as_of_ms,
    }))
}

/// `clustermgr replication`: one round's raw replication picture.
pub async fn replication(ctx: &Ctx, within: Duration) -> Result<View, CtlError> {
    let (members, now, _) = one_round(ctx, within).await?;
    Ok(View::Replication(replication::view(&members, &now)))
}

/// `clustermgr ports`: one round's port matrix, with what is missing.
pub async fn ports(ctx: &Ctx, within: Duration) -> Result<View, CtlError> {
    let (members, now, _) = one_round(ctx, within).await?;
    Ok(View::Ports(ports::view(&members, &now)))
}

/// The rolling apply's health gate: the cluster's checks before the rollout began,
/// and the last round, so each node's change is judged by whether it left the cluster
/// worse than it found it (a check that was already failing does not block the
/// rollout; one that breaks after a node's change does).
pub struct HealthGate {
    baseline: BTreeMap<(String, String), (Level, String)>,
    previous: Option<BTreeMap<String, NodeRound>>,
}

/// The checks whose reason lists failing items (ports, services, certificates), one
/// item each between `; `: a new item is a new failure even when the check was
/// already critical.
const ITEMISED: [&str; 3] = ["ports", "services", "certs"];

fn items(reason: &str) -> Vec<&str> {
    reason
        .trim_start_matches("cannot reach ")
        .split("; ")
        .collect()
}

impl HealthGate {
    /// A round of the gate's own (`serve`'s latest may predate the change it judges),
    /// judged against the gate's previous round.
    async fn judge(
        &mut self,
        ctx: &Ctx,
        within: Duration,
    ) -> Result<(Vec<Verdict>, Duration), CtlError> {
        let (members, now, interval) = own_round(ctx, within).await?;
        let v = verdict::verdicts(
            &members,
            &now,
            self.previous.as_ref(),
            interval.as_millis() as i64,
        );
        self.previous = Some(now);
        Ok((v, interval))
    }

    /// The cluster's checks now, before anything changes.
    pub async fn before(ctx: &Ctx, within: Duration) -> Result<HealthGate, CtlError> {
        let mut gate = HealthGate {
            baseline: BTreeMap::new(),
            previous: None,
        };
        let (v, _) = gate.judge(ctx, within).await?;
        gate.baseline = v
            .into_iter()
            .map(|v| ((v.node, v.check), (v.level, v.reason)))
            .collect();
        Ok(gate)
    }

    /// A gate whose baseline is `verdicts`, for unit tests.
    #[cfg(test)]
    pub(crate) fn for_tests(verdicts: &[Verdict]) -> HealthGate {
        HealthGate {
            baseline: verdicts
                .iter()
                .map(|v| {
                    (
                        (v.node.clone(), v.check.clone()),
                        (v.level, v.reason.clone()),
                    )
                })
                .collect(),
            previous: None,
        }
    }

    /// What in `verdicts` is worse than before the rollout: a check critical that was
    /// not; a new failing item of a check that was (another port, service or
    /// certificate); and on `changed`, the node just changed, a check that was ok or
    /// warning and now cannot be judged. Warnings do not stop it: files waiting for the
    /// next csync2 sync after a change of the replicated paths are the change working.
    pub(crate) fn regressions(&self, verdicts: &[Verdict], changed: &str) -> Vec<String> {
        let mut out = Vec::new();
        for v in verdicts {
            let before = self.baseline.get(&(v.node.clone(), v.check.clone()));
            let was = before.map_or(Level::Ok, |b| b.0);
            let worse = match v.level {
                Level::Critical if was != Level::Critical => Some(v.reason.clone()),
                Level::Critical if ITEMISED.contains(&v.check.as_str()) => {
                    let old = items(before.map_or("", |b| b.1.as_str()));
                    let new: Vec<&str> = items(&v.reason)
                        .into_iter()
                        .filter(|i| !old.contains(i))
                        .collect();
                    (!new.is_empty()).then(|| new.join("; "))
                }
                Level::Unknown
                    if v.node == changed && matches!(was, Level::Ok | Level::Warning) =>
                {
                    Some(format!("cannot be checked after its change: {}", v.reason))
                }
                _ => None,
            };
            if let Some(why) = worse {
                out.push(format!(
                    "{} {} {}: {why}",
                    v.node,
                    v.check,
                    v.level.as_str()
                ));
            }
        }
        out
    }

    /// After `changed`'s change: rounds until nothing is worse than before the rollout,
    /// for up to three check intervals (ten seconds at least), so a service that
    /// restarts has time to come back. The words for the apply's report, or what got
    /// worse.
    pub async fn after(
        &mut self,
        ctx: &Ctx,
        changed: &str,
        within: Duration,
    ) -> Result<String, String> {
        let started = tokio::time::Instant::now();
        loop {
            let (v, interval) = self.judge(ctx, within).await.map_err(|e| e.to_string())?;
            let worse = self.regressions(&v, changed);
            if worse.is_empty() {
                return Ok(format!(
                    "no check is worse than before the rollout ({} checks)",
                    v.len()
                ));
            }
            let patience = (interval * 3).max(Duration::from_secs(10));
            if started.elapsed() >= patience {
                return Err(format!(
                    "worse than before the rollout after {} s: {}",
                    patience.as_secs(),
                    worse.join("; ")
                ));
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

pub use crate::healthlog::{Ack, EventRecord, HealthEvent, HealthState};

/// The checks whose state must be stored: new ones and those whose level moved.
pub type StateChanges = Vec<(String, String, HealthState)>;

/// The changes `verdicts` make to `state` (which they update): the events (a check
/// whose level moved, or one seen for the first time as warning or critical: a check
/// starts unknown, so a first ok or unknown is no news), and the states to store.
/// A reason that changes while the level stays (a heartbeat's age) is neither.
pub fn changes(
    state: &mut BTreeMap<(String, String), HealthState>,
    verdicts: &[Verdict],
    time_ms: i64,
) -> (Vec<HealthEvent>, StateChanges) {
    let (mut out, mut dirty) = (Vec::new(), Vec::new());
    for v in verdicts {
        let key = (v.node.clone(), v.check.clone());
        let before = state.get(&key).map(|s| s.level);
        if before == Some(v.level) {
            continue;
        }
        let first_quiet = before.is_none() && matches!(v.level, Level::Ok | Level::Unknown);
        if !first_quiet {
            out.push(HealthEvent {
                id: 0,
                time_ms,
                node: v.node.clone(),
                check: v.check.clone(),
                from: before.unwrap_or(Level::Unknown),
                to: v.level,
                reason: v.reason.clone(),
            });
        }
        let now = HealthState {
            level: v.level,
            reason: v.reason.clone(),
        };
        dirty.push((v.node.clone(), v.check.clone(), now.clone()));
        state.insert(key, now);
    }
    (out, dirty)
}

/// `serve`'s health watch: a round every `[health] interval_secs`, judged against the
/// round before; each change stored as an event and told to `events -f`.
pub async fn watch(ctx: std::sync::Arc<Ctx>) {
    let mut previous: Option<BTreeMap<String, NodeRound>> = None;
    let mut state = match ctx.telemetry().and_then(|s| s.health_state()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("health: {e}; watching without the stored states");
            BTreeMap::new()
        }
    };
    loop {
        let cfg = match crate::config::ControllerConfig::load(&ctx.home.config()) {
            Ok(c) => c.health,
            Err(e) => {
                tracing::warn!("{e}; the [health] defaults apply");
                Default::default()
            }
        };
        let interval = Duration::from_secs(cfg.interval_secs);
        let started = tokio::time::Instant::now();
        let read = ctx.store.nodes().and_then(|n| {
            let set_up = crate::generate::csync2::set_up(&ctx.store.all_desired()?);
            Ok((n, ctx.store.model()?, set_up, keystore_sha256(&ctx)?))
        });
        let (nodes, model, set_up, keystore) = match read {
            Ok(got) => got,
            Err(e) => {
                tracing::warn!("health: {e}");
                tokio::time::sleep(interval).await;
                continue;
            }
        };
        let members = members(&nodes, &model, &cfg, &set_up, keystore.as_deref());
        let now = round(&ctx, &nodes, &members, interval, ctx.dialer.connect_timeout).await;
        let verdicts = verdict::verdicts(
            &members,
            &now,
            previous.as_ref(),
            interval.as_millis() as i64,
        );
        let time_ms = ctx.clock.now().unix_timestamp_nanos() as i64 / 1_000_000;
        // Taken only once stored: a round that cannot be stored is judged again.
        let mut next = state.clone();
        let (events, states) = changes(&mut next, &verdicts, time_ms);
        *ctx.health_latest.lock().unwrap_or_else(|p| p.into_inner()) =
            Some(std::sync::Arc::new(Latest {
                members,
                round: now.clone(),
                verdicts,
                at_ms: time_ms,
                interval,
            }));
        previous = Some(now);
        if states.is_empty() {
            tokio::time::sleep_until(started + interval).await;
            continue;
        }
        let stored = match ctx.telemetry() {
            Ok(store) => tokio::task::spawn_blocking(move || store.record_health(events, &states))
                .await
                .map_err(|e| CtlError::Internal {
                    what: "the health store's worker",
                    why: e.to_string(),
                    next: "",
                })
                .and_then(|r| r),
            Err(e) => Err(e),
        };
        match stored {
            Ok(events) => {
                state = next;
                for e in events {
                    tracing::info!(
                        "health: {} {} {} -> {}: {}",
                        e.node,
                        e.check,
                        e.from.as_str(),
                        e.to.as_str(),
                        e.reason
                    );
                    let _ = ctx.health_events.send(e);
                }
            }
            Err(e) => tracing::error!("health: storing the round failed: {e}"),
        }
        tokio::time::sleep_until(started + interval).await;
    }
}

/// `clustermgr events [--since T] [-f]`: the stored changes, then (with `-f`) each new
/// one as `serve` sees it.
pub async fn events(
    ctx: &Ctx,
    since: Option<&str>,
    follow: bool,
    limit: usize,
    out: &tokio::sync::mpsc::Sender<crate::ctx::Event>,
) -> Result<View, CtlError> {
    if follow && ctx.pool.is_none() {
        return Err(CtlError::NeedsServe {
            what: "`events -f` follows the checks `clustermgr serve` runs",
            instead: " (`events` without -f reads what is stored)",
        });
    }
    let since_ms = since
        .map(|s| crate::clock::parse_since(s, ctx.clock.now().unix_timestamp() * 1000))
        .transpose()?;
    // Subscribed before the query, so no event falls between the two.
    let mut live = follow.then(|| ctx.health_events.subscribe());
    let store = ctx.telemetry()?;
    let stored = tokio::task::spawn_blocking(move || store.health_events(since_ms, limit))
        .await
        .map_err(|e| CtlError::Internal {
            what: "the health store's worker",
            why: e.to_string(),
            next: "",
        })??;
    let Some(live) = live.as_mut() else {
        return Ok(View::Events(stored));
    };
    let mut last = 0;
    for e in stored {
        last = e.event.id;
        if out.send(crate::ctx::Event::Health(e.event)).await.is_err() {
            return Ok(View::Events(Vec::new()));
        }
    }
    loop {
        let news = match live.recv().await {
            Ok(e) => vec![e],
            // Fell behind the broadcast: the store has every one that was skipped.
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                let store = ctx.telemetry()?;
                tokio::task::spawn_blocking(move || store.health_events_after(last, usize::MAX))
                    .await
                    .map_err(|e| CtlError::Internal {
                        what: "the health store's worker",
                        why: e.to_string(),
                        next: "",
                    })??
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
        };
        for e in news {
            if e.id <= last {
                continue;
            }
            last = e.id;
            if out.send(crate::ctx::Event::Health(e)).await.is_err() {
                return Ok(View::Events(Vec::new()));
            }
        }
    }
    Ok(View::Events(Vec::new()))
}

/// The longest note an acknowledgement keeps.
const NOTE_MAX: usize = 500;

/// `events ack ID`: `user` says they have seen event `id`'s problem and are on it.
/// Recorded once (a second acknowledgement is told who was first) and audited. Only a
/// change to a worse state can be acknowledged: a return to ok needs nobody.
pub fn acknowledge(ctx: &Ctx, user: &str, id: u64, note: &str) -> Result<View, CtlError> {
    use crate::telemetry_store::Acknowledged;
    let note = note.trim();
    if note.chars().count() > NOTE_MAX || note.chars().any(char::is_control) {
        return Err(CtlError::BadArgument {
            flag: "--note",
            value: note.chars().take(40).collect(),
            why: format!("a note is one line of at most {NOTE_MAX} characters"),
        });
    }
    let store = ctx.telemetry()?;
    let ack = Ack {
        by: user.to_string(),
        time_ms: ctx.clock.now().unix_timestamp_nanos() as i64 / 1_000_000,
        note: note.to_string(),
    };
    let refuse = |why: String| CtlError::NotAcknowledgeable { id, why };
    let listed = " (`clustermgr events` lists the changes with their numbers)";
    let (record, new) = match store.acknowledge(id, ack, |e| e.to != Level::Ok)? {
        Acknowledged::Done { record, new } => (record, new),
        Acknowledged::Refused(e) => {
            return Err(refuse(format!(
                "is {}'s {} check returning to ok: there is nothing to acknowledge{listed}",
                e.node, e.check
            )));
        }
        Acknowledged::NoSuchEvent => return Err(refuse(format!("does not exist{listed}"))),
    };
    if new {
        let e = &record.event;
        let detail = format!(
            "event {id}: {} {} -> {}{}",
            e.check,
            e.from.as_str(),
            e.to.as_str(),
            if note.is_empty() {
                String::new()
            } else {
                format!(" ({note})")
            }
        );
        ctx.audited(
            user,
            "events ack",
            std::slice::from_ref(&e.node),
            &detail,
            "acknowledged",
        )?;
    }
    Ok(View::Events(vec![record]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(node: &str, check: &str, level: Level) -> Verdict {
        Verdict {
            node: node.into(),
            check: check.into(),
            level,
            reason: format!("{check} is {}", level.as_str()),
        }
    }

    #[test]
    fn only_moves_between_levels_are_events() {
        let mut state = BTreeMap::new();
        // First seen: ok and unknown are silent, worse is a change from unknown.
        let (e, stored) = changes(
            &mut state,
            &[
                v("a", "ldap", Level::Ok),
                v("b", "ldap", Level::Warning),
                v("c", "ldap", Level::Unknown),
            ],
            1,
        );
        assert_eq!(e.len(), 1);
        assert_eq!(stored.len(), 3, "every new check's state is stored");
        assert_eq!(
            (e[0].node.as_str(), e[0].from, e[0].to),
            ("b", Level::Unknown, Level::Warning)
        );
        // The same levels again, even with new reasons: nothing.
        let mut again = v("b", "ldap", Level::Warning);
        again.reason = "other words".into();
        let (e, stored) = changes(&mut state, &[v("a", "ldap", Level::Ok), again], 2);
        assert!(
            e.is_empty() && stored.is_empty(),
            "nothing to store: {stored:?}"
        );
        // A move: one event, from and to.
        let (e, stored) = changes(
            &mut state,
            &[
                v("a", "ldap", Level::Critical),
                v("c", "ldap", Level::Unknown),
            ],
            3,
        );
        assert_eq!(stored.len(), 1);
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!(
            (e[0].from, e[0].to, e[0].time_ms),
            (Level::Ok, Level::Critical, 3)
        );
        assert_eq!(
            state[&("a".to_string(), "ldap".to_string())].level,
            Level::Critical
        );
    }
}
