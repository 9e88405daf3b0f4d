//! `clustermgr node upgrade`: replaces the agents' binary through the agents
//! themselves, one node at a time. For each node: check that the binary runs on that
//! host, send it over the node's own connection (the agent checks its SHA-256, runs it
//! once and swaps it in, keeping the old one), wait until the restarted agent answers
//! the mutual-TLS Hello, and confirm it. An agent that is not confirmed puts its old
//! binary back by itself (see the agent's `upgrade` module), so a failed node is left
//! running what it ran before, and the upgrade stops there.

use std::time::{Duration, Instant};

use clustermgr_protocol::frame::{expect_message, write_message};
use clustermgr_protocol::message::{Reply, Request, UpgradeSpec};
use tokio::sync::mpsc;

use crate::CtlError;
use crate::binary::AgentBinary;
use crate::connect::{FailureKind, NodeFailure};
use crate::ctx::{Ctx, Event, NodeOutcome, NodeState, PendingAudit};
use crate::selector::select;
use crate::store::NodeRecord;

/// How long the agent may take to hash its binary and answer the request.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// How long receiving, checking and test-running the new binary may take.
const STAGED_TIMEOUT: Duration = Duration::from_secs(120);

/// How long the old agent may take to stop: its shutdown grace for running commands,
/// and some.
const STOP_TIMEOUT: Duration = Duration::from_secs(40);

/// After the new binary's confirmation deadline, how long the old one has to be back.
const ROLLBACK_GRACE: Duration = Duration::from_secs(30);

/// One dial attempt while waiting for the restarted agent.
const REDIAL: Duration = Duration::from_secs(2);

/// `node upgrade`.
pub(crate) async fn node_upgrade(
    ctx: &Ctx,
    user: &str,
    selector: &str,
    binary: Option<&str>,
    commit_within: Duration,
    within: Duration,
    events: &mpsc::Sender<Event>,
) -> Result<Vec<NodeOutcome>, CtlError> {
    if commit_within < Duration::from_secs(1) || commit_within > Duration::from_secs(3600) {
        return Err(CtlError::BadArgument {
            flag: "--commit-within",
            value: commit_within.as_secs().to_string(),
            why: "must be between 1 and 3600 seconds".into(),
        });
    }
    let nodes = select(&ctx.store.nodes()?, selector)?;
    let bin = AgentBinary::find(binary.map(std::path::Path::new))?;
    let names: Vec<String> = nodes.iter().map(|n| n.name.clone()).collect();
    let detail = format!("{} (sha256 {})", bin.path.display(), bin.facts.sha256);
    let (id, rec) = ctx.audit(user, "node upgrade", &names, &detail)?;
    let mut pending = PendingAudit::new(&ctx.store, id, rec);
    let working = Event::Working {
        what: "node upgrade".into(),
        nodes: names.clone(),
        sequential: true,
    };
    let _ = events.send(working).await;
    let mut outcomes = Vec::new();
    let mut stopped_at: Option<String> = None;
    for node in nodes {
        let outcome = match &stopped_at {
            Some(failed) => NodeOutcome {
                state: NodeState::Skipped,
                message: Some(format!(
                    "not upgraded: the upgrade stopped after {failed} failed; fix it and re-run"
                )),
                ..NodeOutcome::new(&node.name)
            },
            None => upgrade_one(ctx, &node, &bin, commit_within, within, events).await,
        };
        if outcome.state != NodeState::Ok && stopped_at.is_none() {
            stopped_at = Some(node.name.clone());
        }
        let _ = events.send(Event::NodeDone(outcome.clone())).await;
        outcomes.push(outcome);
    }
    pending.finish(
        outcomes
            .iter()
            .map(|o| (o.node.clone(), o.message.clone().unwrap_or_default()))
            .collect(),
    )?;
    Ok(outcomes)
}

async fn upgrade_one(
    ctx: &Ctx,
    node: &NodeRecord,
    bin: &AgentBinary,
    commit_within: Duration,
    within: Duration,
    events: &mpsc::Sender<Event>,
) -> NodeOutcome {
    let start = Instant::now();
    let progress = |line: String| async move {
        let data = format!("{line}\n").into_bytes();
        let _ = events
            .send(Event::Output {
                node: node.name.clone(),
                stderr: true,
                data,
            })
            .await;
    };
    let mut outcome = match upgrade(ctx, node, bin, commit_within, within, progress).await {
        Ok(message) => NodeOutcome {
            message: Some(message),
            ..NodeOutcome::new(&node.name)
        },
        Err(f) => NodeOutcome::failure(&node.name, f),
    };
    outcome.duration_ms = start.elapsed().as_millis() as u64;
    outcome
}

async fn upgrade<P, F>(
    ctx: &Ctx,
    node: &NodeRecord,
    bin: &AgentBinary,
    commit_within: Duration,
    within: Duration,
    progress: P,
) -> Result<String, NodeFailure>
where
    P: Fn(String) -> F,
    F: std::future::Future<Output = ()>,
{
    let conn = ctx.connection_within(node, within).await?;
    let Reply::Info(info) = conn
        .unary(&Request::Info, crate::ctx::REQUEST_TIMEOUT)
        .await?
    else {
        return Err(NodeFailure::failed("the agent did not describe its host"));
    };
    bin.facts
        .serves(&info.arch, info.glibc.as_deref())
        .map_err(|why| {
            NodeFailure::failed(format!(
                "the agent binary {} cannot run there: {why}. Give a build for this host with --agent-binary PATH",
                bin.path.display()
            ))
        })?;
    let spec = UpgradeSpec {
        size: bin.bytes.len() as u64,
        sha256: bin.facts.sha256.clone(),
        commit_within_ms: commit_within.as_millis() as u64,
    };
    let (mut send, mut recv) = conn.open().await?;
    let max = conn.max_frame();
    write_message(&mut send, &Request::Upgrade(spec))
        .await
        .map_err(NodeFailure::stream)?;
    match reply(&mut recv, max, READY_TIMEOUT).await? {
        Reply::UpgradeReady => {}
        Reply::UpToDate { version } => {
            let _ = send.finish();
            return Ok(format!("already runs this build (agent {version})"));
        }
        other => return Err(unexpected(&other)),
    }
    progress(format!(
        "sending the agent ({} MiB, sha256 {})",
        bin.bytes.len() >> 20,
        &bin.facts.sha256[..12]
    ))
    .await;
    send.write_all(&bin.bytes)
        .await
        .map_err(|e| NodeFailure::failed(format!("the upload broke off: {e}")))?;
    let _ = send.finish();
    let (from, to) = match reply(&mut recv, max, STAGED_TIMEOUT).await? {
        Reply::Upgrading { from, to } => (from, to),
        other => return Err(unexpected(&other)),
    };
    progress(format!("restarting as agent {to} (was {from})")).await;
    let restarted = Instant::now();
    // The old agent closes every connection once it has stopped.
    let _ = tokio::time::timeout(STOP_TIMEOUT, conn.conn.closed()).await;
    let deadline = restarted + commit_within + ROLLBACK_GRACE;
    let commit = Request::UpgradeCommit {
        sha256: bin.facts.sha256.clone(),
    };
    let mut last = String::from("no answer yet");
    while Instant::now() < deadline {
        let attempt = async {
            let conn = ctx.connection_within(node, REDIAL).await?;
            conn.unary(&commit, crate::ctx::REQUEST_TIMEOUT).await
        };
        match attempt.await {
            Ok(Reply::UpgradeCommitted { version }) => {
                return Ok(format!(
                    "upgraded from agent {from} to {version}, answering again after {:.1} s",
                    restarted.elapsed().as_secs_f64()
                ));
            }
            Ok(Reply::UpgradeRolledBack { version, reason }) => {
                return Err(NodeFailure::failed(format!(
                    "the new agent {to} was rolled back: {reason}. Agent {version} runs there again"
                )));
            }
            Ok(other) => return Err(unexpected(&other)),
            Err(f) => {
                last = f.message;
                // The old agent, still stopping, refuses at once; do not spin on it.
                if f.kind == FailureKind::Failed {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }
    Err(NodeFailure::unreachable(format!(
        "the agent did not answer after restarting as {to}, nor as {from} after its rollback deadline ({last}); on the host, see the agent's log (/var/log/clustermgr-agent.log, or `journalctl -u clustermgr-agent`)"
    )))
}

/// Reads one reply of the upgrade exchange, the agent's errors made failures.
async fn reply(
    recv: &mut quinn::RecvStream,
    max: u32,
    timeout: Duration,
) -> Result<Reply, NodeFailure> {
    let read = expect_message::<Reply, _>(recv, max, "reply");
    match tokio::time::timeout(timeout, read).await {
        Ok(Ok(Reply::Error(e))) => Err(NodeFailure::failed(e.message)),
        Ok(Ok(r)) => Ok(r),
        Ok(Err(e)) => Err(NodeFailure::stream(e)),
        Err(_) => Err(NodeFailure::unreachable(format!(
            "the agent did not answer within {} s",
            timeout.as_secs()
        ))),
    }
}

fn unexpected(reply: &Reply) -> NodeFailure {
    NodeFailure::failed(format!("unexpected reply to the upgrade: {reply:?}"))
}
