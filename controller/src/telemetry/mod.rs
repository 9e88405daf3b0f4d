//! Telemetry operations on the controller: `logs`, `metrics`, `top` and the exports,
//! over the telemetry store (`crate::telemetry_store`, also named `store` here).

pub mod export;
pub use crate::telemetry_store as store;
pub use crate::telemetry_store::gorilla;
pub mod top;

use std::collections::HashMap;

use tokio::sync::{broadcast, mpsc};

use crate::CtlError;
use crate::ctx::{Ctx, Event};
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
    /// The last this many lines of history: by default 100, or every line `since`.
    pub limit: Option<usize>,
}

/// What the telemetry operations answer; the dispatch turns it into its `Report`.
#[derive(Clone, Debug)]
pub enum View {
    /// `logs`.
    Logs(Vec<store::NodeLine>),
    /// `metrics` without `--metric`.
    MetricNames(Vec<MetricName>),
    /// `metrics --metric`.
    Metrics(Vec<SeriesView>),
    /// `top`.
    Top {
        /// The cluster's name.
        cluster: String,
        /// A row per node.
        rows: Vec<top::TopRow>,
    },
}

pub use crate::clock::parse_since;

/// `logs`: the stored lines, merged across nodes in time order; with `follow`, then
/// every line `serve` stores, until the client goes away.
pub async fn logs(
    ctx: &Ctx,
    spec: &LogsSpec,
    events: &mpsc::Sender<Event>,
) -> Result<View, CtlError> {
    let nodes: Vec<String> = select(&ctx.store.nodes()?, &spec.nodes)?
        .into_iter()
        .map(|n| n.name)
        .collect();
    let grep = spec
        .grep
        .as_deref()
        .map(regex_lite::Regex::new)
        .transpose()
        .map_err(|e| CtlError::BadArgument {
            flag: "--grep",
            value: format!("{:?}", spec.grep.as_deref().unwrap_or_default()),
            why: e.to_string(),
        })?;
    let since_ms = spec
        .since
        .as_deref()
        .map(|s| parse_since(s, ctx.clock.now().unix_timestamp() * 1000))
        .transpose()?;
    if spec.follow && ctx.pool.is_none() {
        return Err(CtlError::NeedsServe {
            what: "`logs -f` follows what `clustermgr serve` stores as the agents send it",
            instead: " (`logs` without -f reads what is stored)",
        });
    }
    // Subscribed before the query, so no line falls between the two.
    let mut live = spec.follow.then(|| ctx.live_logs.subscribe());
    let store = ctx.telemetry()?;
    let q = LogQuery {
        nodes: nodes.clone(),
        source: spec.source.clone(),
        since_ms,
        // With --since, every line since then unless --limit says how many; else the
        // newest `limit`.
        limit: spec
            .limit
            .or(since_ms.is_none().then_some(DEFAULT_LOG_LIMIT)),
    };
    let grep_text = grep.clone();
    let (lines, sources) = tokio::task::spawn_blocking(move || {
        let lines = store.logs(&q, &|l| {
            grep_text.as_ref().is_none_or(|g| g.is_match(&l.line))
        })?;
        // Nothing from a named source: was it a source at all?
        let sources = match &q.source {
            Some(_) if lines.is_empty() => Some(store.log_sources(&q.nodes, q.since_ms)?),
            _ => None,
        };
        Ok::<_, CtlError>((lines, sources))
    })
    .await
    .map_err(|e| CtlError::Internal {
        what: "the log query's worker",
        why: e.to_string(),
        next: "",
    })??;
    // A default source that has written nothing yet is a quiet log, not a typo.
    if let (Some(source), Some(known)) = (&spec.source, &sources)
        && !known.contains(source)
        && !clustermgr_protocol::telemetry::is_default_log_source(source)
    {
        let unknown = CtlError::UnknownSource {
            name: source.clone(),
            since: since_ms.is_some(),
            hint: crate::suggest::hint(source, known.iter().map(String::as_str)),
            known: known.iter().cloned().collect(),
        };
        if !spec.follow {
            return Err(unknown);
        }
        let why = unknown.to_string();
        // A source configured on a node may not have written yet: follow it anyway.
        let _ = events
            .send(Event::Log(notice(
                ctx,
                &format!("{why}; following it anyway"),
            )))
            .await;
    }
    let wanted = |n: &NodeLine| {
        nodes.contains(&n.node)
            && spec.source.as_ref().is_none_or(|s| *s == n.source)
            && grep.as_ref().is_none_or(|g| g.is_match(&n.line))
    };
    let Some(live) = live.as_mut() else {
        return Ok(View::Logs(lines));
    };
    let mut printed: HashMap<String, u64> = HashMap::new();
    for l in lines {
        let seq = printed.entry(l.node.clone()).or_default();
        *seq = (*seq).max(l.seq);
        if events.send(Event::Log(l)).await.is_err() {
            return Ok(View::Logs(Vec::new()));
        }
    }
    loop {
        let l = match live.recv().await {
            Ok(l) => l,
            Err(broadcast::error::RecvError::Lagged(n)) => notice(
                ctx,
                &format!(
                    "{n} lines came faster than this terminal took them and were skipped here; `clustermgr logs --since` shows them from the store"
                ),
            ),
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
    Ok(View::Logs(Vec::new()))
}

/// How many of the newest lines `logs` shows without `--since` or `--limit`.
pub const DEFAULT_LOG_LIMIT: usize = 100;

/// A line of clustermgr's own among the nodes' (no node: never filtered out).
fn notice(ctx: &Ctx, text: &str) -> NodeLine {
    NodeLine {
        node: String::new(),
        seq: 0,
        time_ms: (ctx.clock.now().unix_timestamp_nanos() / 1_000_000) as i64,
        source: "clustermgr".into(),
        line: text.to_string(),
    }
}

/// `top`: a row per node from the ticks `serve` received last, with `health`'s word
/// for each node (its worst check in serve's latest round, from the dispatch, which
/// has the health side).
pub fn top(
    ctx: &Ctx,
    nodes: &str,
    health: &dyn Fn(&str) -> Option<String>,
) -> Result<View, CtlError> {
    let Some(pool) = ctx.pool.as_ref() else {
        return Err(CtlError::NeedsServe {
            what: "`top` shows what `clustermgr serve` receives from the agents",
            instead: "",
        });
    };
    let now_ms = (ctx.clock.now().unix_timestamp_nanos() / 1_000_000) as i64;
    Ok(View::Top {
        cluster: ctx.meta.name.clone(),
        rows: select(&ctx.store.nodes()?, nodes)?
            .iter()
            .map(|n| {
                let mut r = top::row(&n.name, pool.get_pinned(n).is_some(), &ctx.recent, now_ms);
                r.health = health(&n.name);
                r
            })
            .collect(),
    })
}

/// What `clustermgr metrics` asks for.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct MetricsSpec {
    /// Node selector.
    pub nodes: String,
    /// The metric's name; `None` lists the metrics there are.
    pub metric: Option<String>,
    /// From when (`--since`), default one hour back.
    pub since: Option<String>,
    /// Seconds per point; default: the range in 60 points.
    pub step_secs: Option<u64>,
}

/// One series as `metrics` shows it.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct SeriesView {
    /// The node.
    pub node: String,
    /// The series, `name{labels}`.
    pub series: String,
    /// `per second` for a counter (shown as its rate), else empty.
    pub unit: String,
    /// A point per step; a step without samples is left out.
    pub points: Vec<Point>,
}

/// One step of a series.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct Point {
    /// The step's start, RFC 3339.
    #[schemars(extend("format" = "date-time"))]
    pub time: String,
    /// The step's start, Unix milliseconds.
    pub time_ms: i64,
    /// The value (a counter's rate per second); null when it is not a finite number.
    pub value: Option<f64>,
}

/// A metric name and how many series (node and labels) it has.
#[derive(
    Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
pub struct MetricName {
    /// The name.
    pub name: String,
    /// Its series.
    pub series: usize,
}

/// Resamples a series to one point per `step_ms` from `from_ms`: a gauge's last value
/// in each step, a counter's average rate per second over it (a counter that went
/// down was reset, and counts from zero).
pub fn resample(
    samples: &[(i64, f64)],
    counter: bool,
    from_ms: i64,
    step_ms: i64,
) -> Vec<(i64, f64)> {
    let step_ms = step_ms.max(1);
    let bucket = |t: i64| from_ms + (t - from_ms).div_euclid(step_ms) * step_ms;
    let mut out: Vec<(i64, f64)> = Vec::new();
    if !counter {
        for &(t, v) in samples {
            match out.last_mut() {
                Some((b, last)) if *b == bucket(t) => *last = v,
                _ => out.push((bucket(t), v)),
            }
        }
        return out;
    }
    // (bucket, increase, seconds covered)
    let mut acc: Vec<(i64, f64, f64)> = Vec::new();
    for w in samples.windows(2) {
        let ((t0, v0), (t1, v1)) = (w[0], w[1]);
        let inc = if v1 >= v0 { v1 - v0 } else { v1 };
        let secs = (t1 - t0) as f64 / 1000.0;
        match acc.last_mut() {
            Some((b, i, s)) if *b == bucket(t1) => {
                *i += inc;
                *s += secs;
            }
            _ => acc.push((bucket(t1), inc, secs)),
        }
    }
    acc.into_iter()
        .filter(|(_, _, s)| *s > 0.0)
        .map(|(b, i, s)| (b, i / s))
        .collect()
}

/// `metrics`: the names there are, or one metric's series resampled.
pub fn metrics(ctx: &Ctx, spec: &MetricsSpec) -> Result<View, CtlError> {
    let nodes: Vec<String> = select(&ctx.store.nodes()?, &spec.nodes)?
        .into_iter()
        .map(|n| n.name)
        .collect();
    let now_ms = (ctx.clock.now().unix_timestamp_nanos() / 1_000_000) as i64;
    let from_ms = match spec.since.as_deref() {
        Some(s) => parse_since(s, now_ms)?,
        None => now_ms - 3_600_000,
    };
    let store = ctx.telemetry()?;
    let keep = crate::config::ControllerConfig::load(&ctx.home.config())?.retention;
    // The finest tier that still reaches back that far.
    let day = 86_400_000i64;
    let tier = if from_ms >= now_ms - i64::from(keep.raw_days) * day {
        store::Tier::Raw
    } else if from_ms >= now_ms - i64::from(keep.minute_days) * day {
        store::Tier::Minute
    } else {
        store::Tier::Hour
    };
    let Some(metric) = spec.metric.as_deref() else {
        let mut names: std::collections::BTreeMap<String, usize> = Default::default();
        for s in store.series_in(tier, &nodes, None, from_ms)? {
            let name = s.series.split('{').next().unwrap_or(&s.series).to_string();
            *names.entry(name).or_default() += 1;
        }
        return Ok(View::MetricNames(
            names
                .into_iter()
                .map(|(name, series)| MetricName { name, series })
                .collect(),
        ));
    };
    let step_ms = match spec.step_secs {
        Some(0) => {
            return Err(CtlError::BadArgument {
                flag: "--step",
                value: "0".into(),
                why: "must be 1 second or more".into(),
            });
        }
        Some(s) => s as i64 * 1000,
        None => ((now_ms - from_ms) / 60).max(1000),
    };
    let counter = metric.ends_with("_total");
    let views: Vec<SeriesView> = store
        .series_in(tier, &nodes, Some(metric), from_ms)?
        .into_iter()
        .map(|s| SeriesView {
            points: resample(&s.samples, counter, from_ms, step_ms)
                .into_iter()
                .map(|(time_ms, v)| Point {
                    time: crate::clock::rfc3339_ms(time_ms),
                    time_ms,
                    value: v.is_finite().then_some(v),
                })
                .collect(),
            node: s.node,
            series: s.series,
            unit: if counter {
                "per second".into()
            } else {
                String::new()
            },
        })
        .collect();
    if views.is_empty() {
        // As `metrics` without --metric reads them: only on this rare path.
        let names: std::collections::BTreeSet<String> = store
            .series_in(tier, &nodes, None, from_ms)?
            .into_iter()
            .map(|s| s.series.split('{').next().unwrap_or(&s.series).to_string())
            .collect();
        return Err(CtlError::UnknownMetric {
            metric: metric.to_string(),
            hint: crate::suggest::hint(metric, names.iter().map(String::as_str)),
        });
    }
    Ok(View::Metrics(views))
}

/// A sample from string pairs (tests).
#[cfg(test)]
pub(crate) fn sample(
    name: &str,
    labels: &[(&str, &str)],
    value: f64,
) -> clustermgr_protocol::telemetry::Sample {
    clustermgr_protocol::telemetry::Sample {
        name: name.into(),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        value,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gauges_keep_their_last_value_per_step_and_counters_become_rates() {
        let s: Vec<(i64, f64)> = (0..10).map(|i| (i * 1000, i as f64 * 10.0)).collect();
        assert_eq!(
            super::resample(&s, false, 0, 5000),
            [(0, 40.0), (5000, 90.0)]
        );
        // 10 a second, with a reset (a restarted process) in the middle.
        let mut c: Vec<(i64, f64)> = (0..5)
            .map(|i| (i * 1000, 100.0 + i as f64 * 10.0))
            .collect();
        c.extend((5..10).map(|i| (i * 1000, (i - 5) as f64 * 10.0 + 10.0)));
        let r = super::resample(&c, true, 0, 5000);
        assert_eq!(r, [(0, 10.0), (5000, 10.0)]);
    }

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
