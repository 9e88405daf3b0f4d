//! Each node's last two metric ticks as `serve` receives them, and a minute of its CPU
//! use: what `top` reads, held in `serve`'s context.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use clustermgr_protocol::telemetry::Sample;

/// One metric tick: its time and samples.
type Tick = (i64, Vec<Sample>);

/// How far back `top`'s CPU history reaches, and in how many columns it is drawn.
pub const HISTORY_MS: i64 = 60_000;
/// The columns of the CPU history: one per six seconds of the last minute.
pub const HISTORY_SLOTS: usize = 10;

/// A node's last two ticks, and its CPU use between each two ticks of the last minute.
#[derive(Debug, Default)]
struct NodeTicks {
    last: [Option<Tick>; 2],
    cpu: VecDeque<(i64, f64)>,
}

/// The last two metric ticks of each node, as `serve` receives them.
#[derive(Debug, Default)]
pub struct Recent(Mutex<HashMap<String, NodeTicks>>);

impl Recent {
    /// A tick `node` sent.
    pub fn tick(&self, node: &str, time_ms: i64, samples: &[Sample]) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let slot = map.entry(node.to_string()).or_default();
        if slot.last[1].as_ref().is_some_and(|(t, _)| *t >= time_ms) {
            return;
        }
        slot.last[0] = slot.last[1].take();
        slot.last[1] = Some((time_ms, samples.to_vec()));
        if let Some((_, before)) = &slot.last[0]
            && let Some(pct) = cpu_pct(before, samples)
        {
            slot.cpu.push_back((time_ms, pct));
        }
        while slot
            .cpu
            .front()
            .is_some_and(|(t, _)| time_ms - t >= HISTORY_MS)
        {
            slot.cpu.pop_front();
        }
    }

    /// The two ticks of `node`, older first.
    pub(crate) fn ticks(&self, node: &str) -> Option<(Tick, Tick)> {
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match map.get(node).map(|n| &n.last) {
            Some([Some(a), Some(b)]) => Some((a.clone(), b.clone())),
            _ => None,
        }
    }

    /// `node`'s CPU use over the minute before `now_ms`, in [`HISTORY_SLOTS`] slots of
    /// equal time, oldest first: each the last value measured in it, or the one before
    /// when no tick fell in it (`None` before the first).
    pub(crate) fn cpu_history(&self, node: &str, now_ms: i64) -> Vec<Option<f64>> {
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let slot_ms = HISTORY_MS / HISTORY_SLOTS as i64;
        let start = now_ms - HISTORY_MS;
        let mut out = vec![None; HISTORY_SLOTS];
        for (t, pct) in map.get(node).map(|n| &n.cpu).into_iter().flatten() {
            if let Ok(i) = usize::try_from((t - start) / slot_ms)
                && *t >= start
            {
                out[i.min(HISTORY_SLOTS - 1)] = Some(*pct);
            }
        }
        for i in 1..out.len() {
            if out[i].is_none() {
                out[i] = out[i - 1];
            }
        }
        out
    }
}

/// CPU busy between two ticks, percent of all CPUs.
pub(crate) fn cpu_pct(a: &[Sample], b: &[Sample]) -> Option<f64> {
    let cpu = |s: &[Sample], idle: bool| {
        sum(s, "node_cpu_seconds_total", |x| {
            let m = label(x, "mode").unwrap_or("");
            !idle || m == "idle" || m == "iowait"
        })
    };
    let (all0, all1, idle0, idle1) = (cpu(a, false)?, cpu(b, false)?, cpu(a, true)?, cpu(b, true)?);
    (all1 > all0).then(|| 100.0 * (1.0 - (idle1 - idle0) / (all1 - all0)))
}

pub(crate) fn sum(s: &[Sample], name: &str, pick: impl Fn(&Sample) -> bool) -> Option<f64> {
    let v: Vec<f64> = s
        .iter()
        .filter(|x| x.name == name && pick(x))
        .map(|x| x.value)
        .collect();
    (!v.is_empty()).then(|| v.iter().sum())
}

pub(crate) fn label<'a>(s: &'a Sample, key: &str) -> Option<&'a str> {
    s.labels
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}
