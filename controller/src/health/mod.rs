//! Cluster health: a round asks every node's agent for its checks
//! (`Request::Checks`), and [`verdict`] compares the reports across nodes.

pub mod verdict;

use std::collections::BTreeMap;
use std::time::Duration;

use clustermgr_protocol::health::CheckSpec;
use clustermgr_protocol::message::{Reply, Request};
use serde::{Deserialize, Serialize};

use crate::CtlError;
use crate::ops::Ctx;
use crate::store::{NodeRecord, Role};
use verdict::{Level, Member, Members, NodeRound, Verdict};

/// What `clustermgr health` shows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthView {
    /// The worst state of all: the exit code.
    pub worst: Level,
    /// Every check of every selected node.
    pub verdicts: Vec<Verdict>,
}

/// The members a round concerns, from the inventory.
pub fn members(nodes: &[NodeRecord]) -> Members {
    Members {
        nodes: nodes
            .iter()
            .map(|n| {
                let host = match n.address.rsplit_once(':') {
                    Some((h, p)) if p.parse::<u16>().is_ok() => h,
                    _ => n.address.as_str(),
                }
                .trim_matches(['[', ']'])
                .to_string();
                (
                    n.name.clone(),
                    Member {
                        gluu: n.has_role(Role::Gluu),
                        host,
                    },
                )
            })
            .collect(),
    }
}

/// Asks every node for its checks at once; each has `interval` to answer.
pub async fn round(
    ctx: &Ctx,
    nodes: &[NodeRecord],
    interval: Duration,
    within: Duration,
) -> BTreeMap<String, NodeRound> {
    use futures_util::stream::{FuturesUnordered, StreamExt};
    // The agent answers within the deadline; the reply has a moment more to arrive.
    let deadline = interval
        .saturating_sub(Duration::from_millis(500))
        .max(Duration::from_secs(1));
    let spec = CheckSpec {
        interval_ms: interval.as_millis() as u64,
        deadline_ms: deadline.as_millis() as u64,
    };
    let mut asks: FuturesUnordered<_> = nodes
        .iter()
        .map(|n| {
            let spec = spec.clone();
            async move {
                let got = ask(ctx, n, spec, deadline + Duration::from_secs(1), within).await;
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
    let conn = match ctx.connection_within(node, within).await {
        Ok(c) => c,
        Err(f) => return NodeRound::Unreachable(f.message),
    };
    let sent_ms = ctx.clock.now().unix_timestamp_nanos() as i64 / 1_000_000;
    match conn.request(&Request::Checks(spec), timeout).await {
        Ok(Reply::Checks(report)) => NodeRound::Report {
            skew_ms: report.started_ms - sent_ms,
            report,
        },
        Ok(Reply::Error(e)) => NodeRound::Failed(e.message),
        Ok(other) => NodeRound::Failed(format!("it answered the checks with {other:?}")),
        Err(f) => NodeRound::Unreachable(f.message),
    }
}

/// `clustermgr health`: one round now, judged against the whole cluster, shown for
/// the selected nodes.
pub async fn health(
    ctx: &Ctx,
    selector: &str,
    within: Duration,
) -> Result<crate::ops::Report, CtlError> {
    let all = ctx.store.nodes()?;
    let shown: Vec<String> = crate::selector::select(&all, selector)?
        .into_iter()
        .map(|n| n.name)
        .collect();
    let cfg = crate::config::ControllerConfig::load(&ctx.home.config())?;
    let interval = Duration::from_secs(cfg.health.interval_secs);
    let now = round(ctx, &all, interval, within).await;
    let verdicts: Vec<Verdict> =
        verdict::verdicts(&members(&all), &now, None, interval.as_millis() as i64)
            .into_iter()
            .filter(|v| shown.contains(&v.node))
            .collect();
    Ok(crate::ops::Report::Health(HealthView {
        worst: Level::worst(verdicts.iter().map(|v| v.level)),
        verdicts,
    }))
}
