//! `clustermgr top`: each node's CPU, memory, disk, network and load from the last two
//! metric ticks `serve` received, with its connection state and a minute of CPU
//! history; and the screen that shows them in 80 columns.

use clustermgr_protocol::telemetry::Sample;
use serde::{Deserialize, Serialize};

pub use crate::recent::{HISTORY_MS, HISTORY_SLOTS, Recent};
use crate::recent::{cpu_pct, label, sum};

/// One node's row.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
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
    /// Memory in use (not available), bytes.
    #[serde(default)]
    pub mem_used_bytes: Option<f64>,
    /// CPU busy over the last minute, oldest first, in equal slots of time.
    #[serde(default)]
    pub cpu_history: Vec<Option<f64>>,
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
        mem_used_bytes: None,
        cpu_history: recent.cpu_history(node, now_ms),
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
    r.cpu_pct = cpu_pct(&a, &b);
    if let (Some(total), Some(avail)) = (
        sum(&b, "node_memory_total_bytes", |_| true),
        sum(&b, "node_memory_available_bytes", |_| true),
    ) && total > 0.0
    {
        r.mem_pct = Some(100.0 * (1.0 - avail / total));
        r.mem_used_bytes = Some(total - avail);
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

/// What `top`'s screen shows besides the rows.
#[derive(Clone, Copy, Debug)]
pub struct Screen<'a> {
    /// The cluster's name.
    pub cluster: &'a str,
    /// The time of day, `HH:MM:SS`.
    pub clock: &'a str,
    /// The terminal's width in columns (at least 80 is assumed).
    pub width: usize,
    /// Whether states are coloured (a terminal, and no `NO_COLOR`).
    pub colour: bool,
}

/// The lines of `top`'s screen: a header with the cluster, a summary of the whole,
/// then a row per node, each at most `width` columns wide (80 at least; a wider
/// terminal gives long node names and health room).
pub fn screen(s: &Screen<'_>, rows: &[TopRow]) -> Vec<String> {
    let width = s.width.max(80);
    let up = rows.iter().filter(|r| r.state == "connected").count();
    let mut levels: Vec<(&str, usize)> = Vec::new();
    for r in rows {
        let level = r
            .health
            .as_deref()
            .map_or("no round yet", |h| h.split(':').next().unwrap_or(h));
        match levels.iter_mut().find(|(l, _)| *l == level) {
            Some((_, n)) => *n += 1,
            None => levels.push((level, 1)),
        }
    }
    let health: Vec<String> = levels.iter().map(|(l, n)| format!("{n} {l}")).collect();
    let left = format!(
        "clustermgr top · {} · {}, {up} up · {}",
        s.cluster,
        crate::words::count(rows.len(), "node", "nodes"),
        health.join(", ")
    );
    let right = format!("q quits  {}", s.clock);
    let mut lines = vec![spread(&left, &right, width)];
    let known = |f: fn(&TopRow) -> Option<f64>| rows.iter().filter_map(f).collect::<Vec<_>>();
    let cpus = known(|r| r.cpu_pct);
    let newest = known(|r| r.age_secs).into_iter().reduce(f64::min);
    lines.push(fit(
        &format!(
            "CPU {} average · RX {} · TX {} · newest metrics {}",
            if cpus.is_empty() {
                "-".to_string()
            } else {
                format!("{:.0}%", cpus.iter().sum::<f64>() / cpus.len() as f64)
            },
            rate(known(|r| r.rx_bps).into_iter().reduce(|a, b| a + b)),
            rate(known(|r| r.tx_bps).into_iter().reduce(|a, b| a + b)),
            newest.map_or("not in yet".to_string(), |a| format!("{a:.0} s ago")),
        ),
        width,
    ));
    lines.push(String::new());
    // The fixed columns (state, CPU, its minute, memory, disk, RX, TX, load) and the
    // nine spaces between the ten; the node's name and health share what is left,
    // 12 and 9 columns at 80, the node's growing to its longest name on a wider one.
    const FIXED: usize = 4 + 4 + HISTORY_SLOTS + 8 + 4 + 8 + 8 + 4 + 9;
    let free = width - FIXED;
    let longest = rows
        .iter()
        .map(|r| r.node.chars().count())
        .max()
        .unwrap_or(0);
    let node_w = longest.clamp(12, free - 9);
    let health_w = free - node_w;
    lines.push(fit(
        &format!(
            "{:<node_w$} {:<4} {:>4} {:<10} {:>8} {:>4} {:>8} {:>8} {:>4} {}",
            "NODE", "UP", "CPU", "LAST MIN", "MEM", "DISK", "RX/s", "TX/s", "LOAD", "HEALTH"
        ),
        width,
    ));
    for r in rows {
        let up = r.state == "connected";
        let state = paint(
            s.colour,
            if up { GREEN } else { RED },
            &format!("{:<4}", if up { "up" } else { "down" }),
        );
        let (health, colour) = health_cell(r.health.as_deref(), health_w);
        let line = format!(
            "{} {state} {:>4} {:<10} {:>8} {:>4} {:>8} {:>8} {:>4} {}",
            pad(&r.node, node_w),
            r.cpu_pct.map_or("-".into(), |v| format!("{v:.0}%")),
            sparkline(&r.cpu_history),
            r.mem_used_bytes.map_or("-".into(), bytes),
            r.disk_pct.map_or("-".into(), |v| format!("{v:.0}%")),
            r.rx_bps.map_or("-".into(), |v| rate_short(Some(v))),
            r.tx_bps.map_or("-".into(), |v| rate_short(Some(v))),
            r.load1.map_or("-".into(), load),
            paint(s.colour && colour.is_some(), colour.unwrap_or(""), &health),
        );
        lines.push(line);
    }
    lines
}

const GREEN: &str = "\x1b[32m";
const YELLOW: &str = "\x1b[33m";
const RED: &str = "\x1b[31m";

fn paint(on: bool, colour: &str, text: &str) -> String {
    if on {
        format!("{colour}{text}\x1b[0m")
    } else {
        text.to_string()
    }
}

/// `left`, then `right` at the end of `width` columns (the left cut to make room).
fn spread(left: &str, right: &str, width: usize) -> String {
    let room = width.saturating_sub(right.chars().count() + 1);
    let left = fit(left, room);
    let gap = width - left.chars().count() - right.chars().count();
    format!("{left}{}{right}", " ".repeat(gap))
}

/// `text` cut to `width` columns, with `…` where it was cut.
fn fit(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_string();
    }
    let mut out: String = text.chars().take(width.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// `text` cut or padded to exactly `width` columns.
fn pad(text: &str, width: usize) -> String {
    let t = fit(text, width);
    let n = t.chars().count();
    format!("{t}{}", " ".repeat(width - n))
}

/// The health cell, shortened to `width`: `ok`, `warn disk`, `CRIT ldap`, `? csync2`.
fn health_cell(health: Option<&str>, width: usize) -> (String, Option<&'static str>) {
    let Some(h) = health else {
        return ("-".into(), None);
    };
    let (level, check) = h.split_once(": ").unwrap_or((h, ""));
    let (word, colour) = match level {
        "ok" => ("ok", Some(GREEN)),
        "warning" => ("warn", Some(YELLOW)),
        "critical" => ("CRIT", Some(RED)),
        _ => ("?", None),
    };
    let text = if check.is_empty() {
        word.to_string()
    } else {
        format!("{word} {check}")
    };
    (fit(&text, width), colour)
}

/// CPU history as a sparkline: one block per slot, its height the CPU use, blank
/// before the first measurement.
fn sparkline(history: &[Option<f64>]) -> String {
    const BLOCKS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let mut out: String = history
        .iter()
        .map(|v| match v {
            None => ' ',
            Some(pct) => BLOCKS[((pct.clamp(0.0, 100.0) / 100.0 * 7.0).round()) as usize],
        })
        .collect();
    while out.chars().count() < HISTORY_SLOTS {
        out.insert(0, ' ');
    }
    out
}

/// Bytes in binary units, at most 3 significant digits: `512 MiB`, `1.2 GiB`.
pub fn bytes(v: f64) -> String {
    scaled(v, 1024.0, &["B", "KiB", "MiB", "GiB", "TiB", "PiB"])
}

/// A rate in decimal units, as network tools give it: `237 kB/s`, `1.2 MB/s`.
fn rate(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| {
        format!("{}/s", scaled(v, 1000.0, &["B", "kB", "MB", "GB", "TB"]))
    })
}

/// [`rate`] without the `/s` (the column says it).
fn rate_short(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| {
        scaled(v, 1000.0, &["B", "kB", "MB", "GB", "TB"])
    })
}

fn scaled(v: f64, step: f64, units: &[&str]) -> String {
    let mut v = v.max(0.0);
    let mut unit = 0;
    // Below 1000 of a unit, so it fits 3 digits: 1000 MiB is shown as 0.98 GiB.
    while v >= 1000.0 && unit + 1 < units.len() {
        v /= step;
        unit += 1;
    }
    let digits = if v < 10.0 && unit > 0 { 1 } else { 0 };
    let digits = if v < 1.0 && unit > 0 { 2 } else { digits };
    format!("{v:.digits$} {}", units[unit])
}

fn load(v: f64) -> String {
    if v < 10.0 {
        format!("{v:.2}")
    } else if v < 100.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.0}")
    }
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
