//! Telemetry on the controller: the store (`store.rs`) and its encodings
//! (`gorilla.rs`), and the `logs` operation over it.

pub mod gorilla;
pub mod store;

use std::collections::HashMap;

use tokio::sync::{broadcast, mpsc};

use crate::CtlError;
use crate::ops::{Ctx, Event, Report};
use crate::selector::select;
use store::{LogQuery, NodeLine};

/// What `clustermgr logs` asks for.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct LogsSpec {
    /// Node selector.
    pub nodes: String,
    /// Only this source.
    pub source: Option<String>,
    /// `10m`, `2h`, `1d`, or an RFC 3339 time.
    pub since: Option<String>,
    /// Only lines this regular expression matches.
    pub grep: Option<String>,
    /// Keep printing lines as they are stored.
    pub follow: bool,
    /// The last this many lines of history.
    pub limit: usize,
}

/// A `--since` argument as Unix milliseconds: a duration back from `now_ms` (`90s`,
/// `10m`, `2h`, `7d`) or an RFC 3339 time.
pub fn parse_since(text: &str, now_ms: i64) -> Result<i64, CtlError> {
    let bad = || {
        CtlError::Usage(format!(
            "--since {text:?} is neither a duration (90s, 10m, 2h, 7d) nor a time (2026-11-25T10:00:00Z)"
        ))
    };
    let t = text.trim();
    if let Some((n, unit)) = t
        .find(|c: char| !c.is_ascii_digit())
        .filter(|&i| i > 0)
        .map(|i| t.split_at(i))
    {
        let secs = match unit {
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86_400,
            _ => 0,
        };
        if secs > 0 {
            let n: i64 = n.parse().map_err(|_| bad())?;
            return Ok(now_ms - n.saturating_mul(secs).saturating_mul(1000));
        }
    }
    let at = time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
        .map_err(|_| bad())?;
    Ok((at.unix_timestamp_nanos() / 1_000_000) as i64)
}

/// `logs`: the stored lines, merged across nodes in time order; with `follow`, then
/// every line `serve` stores, until the client goes away.
pub async fn logs(
    ctx: &Ctx,
    spec: &LogsSpec,
    events: &mpsc::Sender<Event>,
) -> Result<Report, CtlError> {
    let nodes: Vec<String> = select(&ctx.store.nodes()?, &spec.nodes)?
        .into_iter()
        .map(|n| n.name)
        .collect();
    let grep = spec
        .grep
        .as_deref()
        .map(regex_lite::Regex::new)
        .transpose()
        .map_err(|e| CtlError::Usage(format!("--grep: {e}")))?;
    let since_ms = spec
        .since
        .as_deref()
        .map(|s| parse_since(s, ctx.clock.now().unix_timestamp() * 1000))
        .transpose()?;
    if spec.follow && ctx.pool.is_none() {
        return Err(CtlError::Usage(
            "`logs -f` follows what `clustermgr serve` stores as the agents send it; start `clustermgr serve` and run this again (`logs` without -f reads what is stored)".into(),
        ));
    }
    // Subscribed before the query, so no line falls between the two.
    let mut live = spec.follow.then(|| ctx.live_logs.subscribe());
    let store = ctx.telemetry()?;
    let q = LogQuery {
        nodes: nodes.clone(),
        source: spec.source.clone(),
        since_ms,
        limit: None,
    };
    let mut lines = tokio::task::spawn_blocking(move || store.logs(&q))
        .await
        .map_err(|e| CtlError::Refused(e.to_string()))??;
    let wanted = |n: &NodeLine| {
        nodes.contains(&n.node)
            && spec.source.as_ref().is_none_or(|s| *s == n.source)
            && grep.as_ref().is_none_or(|g| g.is_match(&n.line))
    };
    lines.retain(|l| wanted(l));
    if lines.len() > spec.limit && since_ms.is_none() {
        lines.drain(..lines.len() - spec.limit);
    }
    let Some(live) = live.as_mut() else {
        return Ok(Report::Logs(lines));
    };
    let mut printed: HashMap<String, u64> = HashMap::new();
    for l in lines {
        let seq = printed.entry(l.node.clone()).or_default();
        *seq = (*seq).max(l.seq);
        if events.send(Event::Log(l)).await.is_err() {
            return Ok(Report::Logs(Vec::new()));
        }
    }
    loop {
        let l = match live.recv().await {
            Ok(l) => l,
            Err(broadcast::error::RecvError::Lagged(n)) => NodeLine {
                node: String::new(),
                seq: 0,
                time_ms: ctx.clock.now().unix_timestamp() * 1000,
                source: "clustermgr".into(),
                line: format!(
                    "{n} lines came faster than this terminal took them and were skipped here; `clustermgr logs --since` shows them from the store"
                ),
            },
            Err(broadcast::error::RecvError::Closed) => break,
        };
        if !l.node.is_empty() {
            if !wanted(&l) {
                continue;
            }
            let seq = printed.entry(l.node.clone()).or_default();
            if l.seq <= *seq {
                continue;
            }
            *seq = l.seq;
        }
        if events.send(Event::Log(l)).await.is_err() {
            break;
        }
    }
    Ok(Report::Logs(Vec::new()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_durations_and_times() {
        let now = 1_800_000_000_000;
        assert_eq!(parse_since("90s", now).unwrap(), now - 90_000);
        assert_eq!(parse_since("10m", now).unwrap(), now - 600_000);
        assert_eq!(parse_since("2h", now).unwrap(), now - 7_200_000);
        assert_eq!(parse_since("7d", now).unwrap(), now - 604_800_000);
        assert_eq!(
            parse_since("2026-11-25T10:00:00Z", now).unwrap(),
            1_795_600_800_000
        );
        for bad in ["", "10", "m", "10y", "yesterday"] {
            let e = parse_since(bad, now).unwrap_err().to_string();
            assert!(e.contains("--since"), "{bad}: {e}");
        }
    }
}
