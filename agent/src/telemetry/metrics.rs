//! The host's metrics, read from `/proc` and `statvfs` each tick: CPU per state, load,
//! memory and swap, file systems, disk I/O, network, uptime, and the CPU and memory of
//! the Gluu cluster's processes. Counters are sent as counters (Prometheus style);
//! rates are the reader's business.
//!
//! Cheap on purpose: a handful of small `/proc` files per tick; the process table is
//! walked only every [`RESCAN_EVERY`] ticks or when a known process went away, and
//! otherwise only the known processes' `stat` files are read.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use clustermgr_protocol::telemetry::Sample;

/// Ticks between full walks of the process table.
pub const RESCAN_EVERY: u32 = 6;

/// File systems worth reporting (not proc, tmpfs, overlay layers and the like).
const REAL_FS: &[&str] = &[
    "ext2", "ext3", "ext4", "xfs", "btrfs", "zfs", "vfat", "jfs", "reiserfs", "f2fs", "nfs", "nfs4",
];

/// A process the cluster cares about: which app, from its name and command line.
fn app_of(comm: &str, cmdline: &str) -> Option<String> {
    Some(match comm {
        "java" => {
            // Jetty apps name their base; OpenDJ and Shibboleth's IdP their home.
            if let Some(base) = cmdline
                .split('\0')
                .find_map(|a| a.strip_prefix("-Djetty.base="))
            {
                base.rsplit('/').next().unwrap_or("java").to_string()
            } else if cmdline.contains("opendj") {
                "opendj".into()
            } else {
                "java".into()
            }
        }
        "slapd" => "slapd".into(),
        "nginx" => "nginx".into(),
        "csync2" => "csync2".into(),
        "stunnel" | "stunnel4" => "stunnel".into(),
        "redis-server" => "redis".into(),
        "apache2" | "httpd" => "apache".into(),
        "node" if cmdline.contains("passport") => "passport".into(),
        "clustermgr-agen" => "clustermgr-agent".into(),
        _ => return None,
    })
}

/// Reads metrics. One per agent.
#[derive(Debug)]
pub struct Sampler {
    proc: PathBuf,
    ticks: u32,
    /// Known processes: pid → app.
    procs: BTreeMap<u32, String>,
    clock_ticks: f64,
    page: f64,
}

fn sample(name: &str, labels: &[(&str, &str)], value: f64) -> Sample {
    let mut labels: Vec<(String, String)> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    labels.sort();
    Sample {
        name: name.to_string(),
        labels,
        value,
    }
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

impl Sampler {
    /// A sampler of the machine's `/proc`.
    pub fn new() -> Sampler {
        Sampler::of(Path::new("/proc"))
    }

    /// A sampler of a `/proc` somewhere else (tests).
    pub fn of(proc: &Path) -> Sampler {
        Sampler {
            proc: proc.to_path_buf(),
            ticks: 0,
            procs: BTreeMap::new(),
            clock_ticks: rustix::param::clock_ticks_per_second() as f64,
            page: rustix::param::page_size() as f64,
        }
    }

    /// One tick's samples.
    pub fn sample(&mut self) -> Vec<Sample> {
        let mut out = Vec::with_capacity(96);
        self.cpu(&mut out);
        self.load(&mut out);
        self.memory(&mut out);
        self.filesystems(&mut out);
        self.disks(&mut out);
        self.network(&mut out);
        if let Some(up) = read(&self.proc.join("uptime"))
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<f64>().ok())
        {
            out.push(sample("node_uptime_seconds", &[], up));
        }
        self.processes(&mut out);
        self.ticks = self.ticks.wrapping_add(1);
        out
    }

    fn cpu(&self, out: &mut Vec<Sample>) {
        const MODES: [&str; 8] = [
            "user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal",
        ];
        let text = read(&self.proc.join("stat"));
        let Some(line) = text.lines().find(|l| l.starts_with("cpu ")) else {
            return;
        };
        for (mode, v) in MODES.iter().zip(line.split_whitespace().skip(1)) {
            if let Ok(v) = v.parse::<f64>() {
                out.push(sample(
                    "node_cpu_seconds_total",
                    &[("mode", mode)],
                    v / self.clock_ticks,
                ));
            }
        }
        let cpus = text
            .lines()
            .filter(|l| l.starts_with("cpu") && !l.starts_with("cpu "))
            .count();
        out.push(sample("node_cpus", &[], cpus as f64));
    }

    fn load(&self, out: &mut Vec<Sample>) {
        let text = read(&self.proc.join("loadavg"));
        for (name, v) in ["node_load1", "node_load5", "node_load15"]
            .iter()
            .zip(text.split_whitespace())
        {
            if let Ok(v) = v.parse() {
                out.push(sample(name, &[], v));
            }
        }
    }

    fn memory(&self, out: &mut Vec<Sample>) {
        let text = read(&self.proc.join("meminfo"));
        for line in text.lines() {
            let Some((key, rest)) = line.split_once(':') else {
                continue;
            };
            let name = match key {
                "MemTotal" => "node_memory_total_bytes",
                "MemAvailable" => "node_memory_available_bytes",
                "MemFree" => "node_memory_free_bytes",
                "Buffers" => "node_memory_buffers_bytes",
                "Cached" => "node_memory_cached_bytes",
                "SwapTotal" => "node_swap_total_bytes",
                "SwapFree" => "node_swap_free_bytes",
                _ => continue,
            };
            if let Some(kib) = rest
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<f64>().ok())
            {
                out.push(sample(name, &[], kib * 1024.0));
            }
        }
    }

    fn filesystems(&self, out: &mut Vec<Sample>) {
        for fs in filesystems(&self.proc) {
            let labels = [("mount", fs.mount.as_str()), ("fstype", fs.fstype.as_str())];
            out.push(sample(
                "node_filesystem_size_bytes",
                &labels,
                fs.size_bytes as f64,
            ));
            out.push(sample(
                "node_filesystem_avail_bytes",
                &labels,
                fs.avail_bytes as f64,
            ));
            out.push(sample(
                "node_filesystem_free_bytes",
                &labels,
                fs.free_bytes as f64,
            ));
        }
    }

    fn disks(&self, out: &mut Vec<Sample>) {
        let text = read(&self.proc.join("diskstats"));
        for line in text.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 14 {
                continue;
            }
            let dev = f[2];
            // Whole disks only: partitions are counted in their disk already.
            let whole = (dev.starts_with("sd") || dev.starts_with("vd") || dev.starts_with("xvd"))
                && !dev.ends_with(|c: char| c.is_ascii_digit())
                || dev.starts_with("nvme") && !dev.contains('p')
                || dev.starts_with("dm-");
            if !whole {
                continue;
            }
            let n = |i: usize| f[i].parse::<f64>().unwrap_or(0.0);
            let labels = [("device", dev)];
            out.push(sample("node_disk_reads_completed_total", &labels, n(3)));
            out.push(sample("node_disk_read_bytes_total", &labels, n(5) * 512.0));
            out.push(sample("node_disk_writes_completed_total", &labels, n(7)));
            out.push(sample(
                "node_disk_written_bytes_total",
                &labels,
                n(9) * 512.0,
            ));
            out.push(sample(
                "node_disk_io_time_seconds_total",
                &labels,
                n(12) / 1000.0,
            ));
        }
    }

    fn network(&self, out: &mut Vec<Sample>) {
        let text = read(&self.proc.join("net/dev"));
        for line in text.lines().skip(2) {
            let Some((iface, rest)) = line.split_once(':') else {
                continue;
            };
            let iface = iface.trim();
            let f: Vec<f64> = rest
                .split_whitespace()
                .map(|v| v.parse().unwrap_or(0.0))
                .collect();
            if f.len() < 10 {
                continue;
            }
            let labels = [("device", iface)];
            out.push(sample("node_network_receive_bytes_total", &labels, f[0]));
            out.push(sample("node_network_receive_packets_total", &labels, f[1]));
            out.push(sample("node_network_transmit_bytes_total", &labels, f[8]));
            out.push(sample("node_network_transmit_packets_total", &labels, f[9]));
        }
    }

    fn processes(&mut self, out: &mut Vec<Sample>) {
        if self.ticks.is_multiple_of(RESCAN_EVERY) {
            self.rescan();
        }
        // app → (clock ticks, resident pages, processes). Summed as integers and
        // divided once, so the seconds stay exact hundredths, which the controller
        // stores in a byte or two where a float would take six.
        let mut per_app: BTreeMap<String, (u64, u64, u32)> = BTreeMap::new();
        let mut gone = false;
        for (pid, app) in &self.procs {
            let dir = self.proc.join(pid.to_string());
            let stat = read(&dir.join("stat"));
            // The fields after the command (which may hold spaces) start after ')'.
            let Some(after) = stat.rsplit_once(')').map(|(_, r)| r) else {
                gone = true;
                continue;
            };
            let f: Vec<&str> = after.split_whitespace().collect();
            if f.len() < 22 {
                gone = true;
                continue;
            }
            let utime: u64 = f[11].parse().unwrap_or(0);
            let stime: u64 = f[12].parse().unwrap_or(0);
            let rss: u64 = f[21].parse().unwrap_or(0);
            let e = per_app.entry(app.clone()).or_default();
            e.0 += utime + stime;
            e.1 += rss;
            e.2 += 1;
        }
        if gone {
            // Counted from the survivors this tick; the table is walked again next.
            self.ticks = RESCAN_EVERY - 1;
        }
        for (app, (ticks, pages, n)) in per_app {
            let labels = [("app", app.as_str())];
            let cpu = ticks as f64 / self.clock_ticks;
            out.push(sample("gluu_process_cpu_seconds_total", &labels, cpu));
            let rss = pages as f64 * self.page;
            out.push(sample("gluu_process_resident_memory_bytes", &labels, rss));
            out.push(sample("gluu_processes", &labels, f64::from(n)));
        }
    }

    fn rescan(&mut self) {
        self.procs.clear();
        let Ok(dir) = std::fs::read_dir(&self.proc) else {
            return;
        };
        for e in dir.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            let comm = read(&e.path().join("comm"));
            let comm = comm.trim_end();
            let cmdline = if comm == "java" || comm == "node" {
                read(&e.path().join("cmdline"))
            } else {
                String::new()
            };
            if let Some(app) = app_of(comm, &cmdline) {
                self.procs.insert(pid, app);
            }
        }
    }
}

/// One real file system's space.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FsUse {
    /// Where it is mounted.
    pub mount: String,
    /// Its type (ext4, xfs ...).
    pub fstype: String,
    /// Its size.
    pub size_bytes: u64,
    /// What an unprivileged writer may still use.
    pub avail_bytes: u64,
    /// What is free, the root reserve included.
    pub free_bytes: u64,
}

/// The real file systems in `proc`'s mount table, each device once.
pub fn filesystems(proc: &Path) -> Vec<FsUse> {
    let text = read(&proc.join("mounts"));
    let mut seen = std::collections::BTreeSet::new();
    let mut out = Vec::new();
    for line in text.lines() {
        let mut f = line.split_whitespace();
        let (Some(dev), Some(mount), Some(fstype)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        if !REAL_FS.contains(&fstype) || !seen.insert(dev.to_string()) {
            continue;
        }
        // /proc/mounts escapes spaces and the like as octal.
        let mount = mount.replace("\\040", " ");
        if let Ok(st) = rustix::fs::statvfs(mount.as_str()) {
            out.push(FsUse {
                size_bytes: st.f_blocks * st.f_frsize,
                avail_bytes: st.f_bavail * st.f_frsize,
                free_bytes: st.f_bfree * st.f_frsize,
                mount,
                fstype: fstype.to_string(),
            });
        }
    }
    out
}

impl Default for Sampler {
    fn default() -> Self {
        Sampler::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn find<'a>(s: &'a [Sample], name: &str, label: Option<(&str, &str)>) -> Option<&'a Sample> {
        s.iter().find(|x| {
            x.name == name
                && label.is_none_or(|(k, v)| x.labels.iter().any(|(a, b)| a == k && b == v))
        })
    }

    #[test]
    fn a_recorded_proc_reads_as_the_metrics_it_holds() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path();
        std::fs::write(
            p.join("stat"),
            "cpu  100 5 50 1000 20 1 2 0 0 0\ncpu0 50 2 25 500 10 0 1 0 0 0\ncpu1 50 3 25 500 10 1 1 0 0 0\n",
        )
        .unwrap();
        std::fs::write(p.join("loadavg"), "0.50 0.25 0.10 1/100 999\n").unwrap();
        std::fs::write(
            p.join("meminfo"),
            "MemTotal:       2048 kB\nMemFree:         512 kB\nMemAvailable:   1024 kB\nSwapTotal: 0 kB\n",
        )
        .unwrap();
        std::fs::write(p.join("uptime"), "12345.67 2000.00\n").unwrap();
        std::fs::create_dir_all(p.join("net")).unwrap();
        std::fs::write(
            p.join("net/dev"),
            "Inter-|   Receive\n face |bytes\n  eth0: 1000 10 0 0 0 0 0 0 2000 20 0 0 0 0 0 0\n",
        )
        .unwrap();
        std::fs::write(
            p.join("diskstats"),
            "   8       0 sda 10 0 80 5 20 0 160 7 0 9 12 0 0 0 0\n   8       1 sda1 1 0 8 0 2 0 16 0 0 1 1 0 0 0 0\n",
        )
        .unwrap();
        std::fs::write(p.join("mounts"), "proc /proc proc rw 0 0\n").unwrap();
        for (pid, comm, cmd) in [
            (
                "41",
                "java",
                "java\0-Djetty.base=/opt/gluu/jetty/oxauth\0-jar\0start.jar",
            ),
            ("42", "slapd", ""),
            ("43", "bash", ""),
        ] {
            let d = p.join(pid);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("comm"), format!("{comm}\n")).unwrap();
            std::fs::write(d.join("cmdline"), cmd).unwrap();
            std::fs::write(
                d.join("stat"),
                format!(
                    "{pid} ({comm} x) S 1 1 1 0 -1 0 0 0 0 0 300 100 0 0 20 0 1 0 5 1000 250 0"
                ),
            )
            .unwrap();
        }
        let mut s = Sampler::of(p);
        s.clock_ticks = 100.0;
        s.page = 4096.0;
        let got = s.sample();
        let v = |name: &str, label: Option<(&str, &str)>| {
            find(&got, name, label)
                .unwrap_or_else(|| panic!("no {name} {label:?} in {got:?}"))
                .value
        };
        assert_eq!(v("node_cpu_seconds_total", Some(("mode", "user"))), 1.0);
        assert_eq!(v("node_cpu_seconds_total", Some(("mode", "iowait"))), 0.2);
        assert_eq!(v("node_cpus", None), 2.0);
        assert_eq!(v("node_load15", None), 0.1);
        assert_eq!(v("node_memory_available_bytes", None), 1024.0 * 1024.0);
        assert_eq!(v("node_uptime_seconds", None), 12345.67);
        assert_eq!(
            v(
                "node_network_transmit_bytes_total",
                Some(("device", "eth0"))
            ),
            2000.0
        );
        assert_eq!(
            v("node_disk_read_bytes_total", Some(("device", "sda"))),
            80.0 * 512.0
        );
        assert!(find(&got, "node_disk_read_bytes_total", Some(("device", "sda1"))).is_none());
        assert_eq!(
            v("gluu_process_cpu_seconds_total", Some(("app", "oxauth"))),
            4.0
        );
        assert_eq!(
            v("gluu_process_resident_memory_bytes", Some(("app", "slapd"))),
            250.0 * 4096.0
        );
        assert!(find(&got, "gluu_processes", Some(("app", "bash"))).is_none());
        // A process that goes away is dropped, and the table walked again.
        std::fs::remove_dir_all(p.join("42")).unwrap();
        let got = s.sample();
        assert!(find(&got, "gluu_processes", Some(("app", "slapd"))).is_none());
        assert!(find(&got, "gluu_processes", Some(("app", "oxauth"))).is_some());
    }

    #[test]
    fn this_machine_reads_without_error() {
        let got = Sampler::new().sample();
        assert!(got.iter().any(|s| s.name == "node_cpu_seconds_total"));
        assert!(got.iter().any(|s| s.name == "node_memory_total_bytes"));
        assert!(got.iter().any(|s| s.name == "node_load1"));
    }
}
