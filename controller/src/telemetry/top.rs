//! `clustermgr top`: each node's CPU, memory, disk, network and load from the last two
//! metric ticks `serve` received, with its connection state.

use std::collections::HashMap;
use std::sync::Mutex;

use clustermgr_protocol::telemetry::Sample;
use serde::{Deserialize, Serialize};

/// One metric tick: its time and samples.
type Tick = (i64, Vec<Sample>);

/// The last two metric ticks of each node, as `serve` receives them.
#[derive(Debug, Default)]
pub struct Recent(Mutex<HashMap<String, [Option<Tick>; 2]>>);

impl Recent {
    /// A tick `node` sent.
    pub fn tick(&self, node: &str, time_ms: i64, samples: &[Sample]) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let slot = map.entry(node.to_string()).or_default();
        if slot[1].as_ref().is_some_and(|(t, _)| *t >= time_ms) {
            return;
        }
        slot[0] = slot[1].take();
        slot[1] = Some((time_ms, samples.to_vec()));
    }

    /// The two ticks of `node`, older first.
    fn ticks(&self, node: &str) -> Option<(Tick, Tick)> {
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match map.get(node) {
            Some([Some(a), Some(b)]) => Some((a.clone(), b.clone())),
            _ => None,
        }
    }
}

/// One node's row.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TopRow {
    /// The node.
    pub node: String,
    /// `connected` or `not connected`.
    pub state: String,
    /// Seconds since its last tick.
    pub age_secs: Option<f64>,
    /// CPU busy, percent of all its CPUs.
    pub cpu_pct: Option<f64>,
    /// Memory in use (not available), percent.
    pub mem_pct: Option<f64>,
    /// The fullest file system, percent used.
    pub disk_pct: Option<f64>,
    /// Bytes received per second, all interfaces but loopback.
    pub rx_bps: Option<f64>,
    /// Bytes sent per second.
    pub tx_bps: Option<f64>,
    /// Load average over a minute.
    pub load1: Option<f64>,
    /// The worst of its health checks in `serve`'s latest round, and which check
    /// (`critical: ldap`); `None` before the first round.
    pub health: Option<String>,
}

fn sum(s: &[Sample], name: &str, pick: impl Fn(&Sample) -> bool) -> Option<f64> {
    let v: Vec<f64> = s
        .iter()
        .filter(|x| x.name == name && pick(x))
        .map(|x| x.value)
        .collect();
    (!v.is_empty()).then(|| v.iter().sum())
}

fn label<'a>(s: &'a Sample, key: &str) -> Option<&'a str> {
    s.labels
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// A node's row from its last two ticks.
pub fn row(node: &str, connected: bool, recent: &Recent, now_ms: i64) -> TopRow {
    let mut r = TopRow {
        node: node.to_string(),
        state: if connected {
            "connected"
        } else {
            "not connected"
        }
        .into(),
        age_secs: None,
        cpu_pct: None,
        mem_pct: None,
        disk_pct: None,
        rx_bps: None,
        tx_bps: None,
        load1: None,
        health: None,
    };
    let Some(((t0, a), (t1, b))) = recent.ticks(node) else {
        return r;
    };
    let dt = (t1 - t0) as f64 / 1000.0;
    r.age_secs = Some((now_ms - t1) as f64 / 1000.0);
    let cpu = |s: &[Sample], idle: bool| {
        sum(s, "node_cpu_seconds_total", |x| {
            let m = label(x, "mode").unwrap_or("");
            !idle || m == "idle" || m == "iowait"
        })
    };
    if let (Some(all0), Some(all1), Some(idle0), Some(idle1)) =
        (cpu(&a, false), cpu(&b, false), cpu(&a, true), cpu(&b, true))
        && all1 > all0
    {
        r.cpu_pct = Some(100.0 * (1.0 - (idle1 - idle0) / (all1 - all0)));
    }
    if let (Some(total), Some(avail)) = (
        sum(&b, "node_memory_total_bytes", |_| true),
        sum(&b, "node_memory_available_bytes", |_| true),
    ) && total > 0.0
    {
        r.mem_pct = Some(100.0 * (1.0 - avail / total));
    }
    r.disk_pct = b
        .iter()
        .filter(|x| x.name == "node_filesystem_size_bytes" && x.value > 0.0)
        .filter_map(|size| {
            let of = |name: &str| {
                b.iter()
                    .find(|x| x.name == name && x.labels == size.labels)
                    .map(|x| x.value)
            };
            let avail = of("node_filesystem_avail_bytes")?;
            // As `df` counts: used / (used + available), so root's reserve (and what a
            // thin volume cannot give) is not counted as used.
            let used = size.value - of("node_filesystem_free_bytes").unwrap_or(avail);
            (used + avail > 0.0).then(|| 100.0 * used / (used + avail))
        })
        .reduce(f64::max);
    let not_lo = |x: &Sample| label(x, "device") != Some("lo");
    let rate = |name: &str| {
        let (v0, v1) = (sum(&a, name, not_lo)?, sum(&b, name, not_lo)?);
        (dt > 0.0 && v1 >= v0).then(|| (v1 - v0) / dt)
    };
    r.rx_bps = rate("node_network_receive_bytes_total");
    r.tx_bps = rate("node_network_transmit_bytes_total");
    r.load1 = sum(&b, "node_load1", |_| true);
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::sample as s;

    fn tick(cpu_user: f64, cpu_idle: f64, rx: f64) -> Vec<Sample> {
        vec![
            s("node_cpu_seconds_total", &[("mode", "user")], cpu_user),
            s("node_cpu_seconds_total", &[("mode", "idle")], cpu_idle),
            s("node_memory_total_bytes", &[], 1000.0),
            s("node_memory_available_bytes", &[], 250.0),
            s("node_filesystem_size_bytes", &[("mount", "/")], 100.0),
            s("node_filesystem_avail_bytes", &[("mount", "/")], 40.0),
            s("node_filesystem_free_bytes", &[("mount", "/")], 40.0),
            s("node_filesystem_size_bytes", &[("mount", "/var")], 100.0),
            s("node_filesystem_avail_bytes", &[("mount", "/var")], 10.0),
            s("node_filesystem_free_bytes", &[("mount", "/var")], 10.0),
            s(
                "node_network_receive_bytes_total",
                &[("device", "eth0")],
                rx,
            ),
            s(
                "node_network_receive_bytes_total",
                &[("device", "lo")],
                rx * 100.0,
            ),
            s(
                "node_network_transmit_bytes_total",
                &[("device", "eth0")],
                0.0,
            ),
            s("node_load1", &[], 0.75),
        ]
    }

    #[test]
    fn disk_use_is_what_df_says() {
        // A thinly provisioned volume: 252 GiB, 11 used, 80 available (df: 13 %, where
        // 1 - avail/size would say 68 %).
        let disk = vec![
            s("node_filesystem_size_bytes", &[("mount", "/")], 252.0),
            s("node_filesystem_avail_bytes", &[("mount", "/")], 80.0),
            s("node_filesystem_free_bytes", &[("mount", "/")], 241.0),
        ];
        let r = Recent::default();
        r.tick("n1", 10_000, &disk);
        r.tick("n1", 20_000, &disk);
        let pct = row("n1", true, &r, 21_000).disk_pct.unwrap();
        assert!((pct - 100.0 * 11.0 / 91.0).abs() < 0.01, "{pct}");
    }

    #[test]
    fn a_row_comes_from_the_last_two_ticks() {
        let r = Recent::default();
        assert_eq!(row("n1", true, &r, 0).cpu_pct, None);
        r.tick("n1", 10_000, &tick(10.0, 30.0, 1000.0));
        r.tick("n1", 20_000, &tick(13.0, 37.0, 6000.0));
        // A late duplicate changes nothing.
        r.tick("n1", 15_000, &tick(0.0, 0.0, 0.0));
        let got = row("n1", true, &r, 21_000);
        assert!(
            (got.cpu_pct.unwrap() - 30.0).abs() < 1e-9,
            "{:?}",
            got.cpu_pct
        );
        assert_eq!(got.mem_pct, Some(75.0));
        assert_eq!(got.disk_pct, Some(90.0), "the fullest file system");
        assert_eq!(got.rx_bps, Some(500.0), "loopback left out");
        assert_eq!(got.tx_bps, Some(0.0));
        assert_eq!(got.load1, Some(0.75));
        assert_eq!(got.age_secs, Some(1.0));
        assert_eq!(row("n2", false, &r, 0).state, "not connected");
    }
}
