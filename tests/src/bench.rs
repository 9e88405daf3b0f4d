//! What the benchmark programs (`benches/*.rs`) share: samples and their nearest-rank
//! percentiles, the Markdown tables they print, timing whole processes, and the
//! OpenSSH peer's client and ControlMaster. One copy, so every bench reports the same
//! statistics the same way.

use std::fmt::Write as _;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A row's figures: its samples, or why it was not measured.
pub enum Value {
    /// Measured samples, in the row's unit.
    Samples(Vec<f64>),
    /// Why there are none.
    Skipped(String),
}

/// One measurement.
pub struct Row {
    /// Short stable name, used by the ratio table.
    pub id: &'static str,
    /// What was measured, for the reader.
    pub label: String,
    /// `ms`, `s`, `MiB`, `KiB` ...
    pub unit: &'static str,
    /// The samples.
    pub value: Value,
    /// The figure the row must stay under, if it has a target.
    pub target: Option<f64>,
    /// Which percentile the target bounds: 0.5 (the p50) unless a target says otherwise
    /// (a latency bounded at its p99).
    pub quantile: f64,
}

/// Everything a bench run measured, in the order it measured it.
#[derive(Default)]
pub struct Results {
    /// The rows.
    pub rows: Vec<Row>,
    /// Free-text notes printed under the tables.
    pub notes: Vec<String>,
    /// The load average when measuring began.
    load_before: String,
}

/// A process's resident memory, MiB (0 when it is gone).
pub fn rss_mib(pid: u32) -> f64 {
    proc_status_kib(pid, "VmRSS").map_or(0.0, |kib| kib as f64 / 1024.0)
}

/// A KiB field of `/proc/PID/status` (`VmRSS`, `VmHWM`).
pub fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    proc_kib(pid, "status", field)
}

/// A KiB field of `/proc/PID/smaps_rollup`: `Pss` (private pages plus a share of each
/// page mapped by other processes too, so a family of forked processes sums to what it
/// really holds), `Private_Clean`, `Private_Dirty`.
pub fn smaps_kib(pid: u32, field: &str) -> Option<u64> {
    proc_kib(pid, "smaps_rollup", field)
}

/// The `FIELD:   N kB` line of `/proc/PID/FILE`.
fn proc_kib(pid: u32, file: &str, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/{file}")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Waits until `probe` reads the same for a whole second (polled every 50 ms), at most
/// `patience`: how a bench knows what it measures is idle before it reads its memory.
/// `probe` gives None when the process is gone. Returns the last reading and how long
/// it took to settle.
pub async fn settle<T: PartialEq + std::fmt::Debug>(
    patience: Duration,
    mut probe: impl FnMut() -> Option<T>,
) -> Result<(T, Duration), String> {
    const STILL: usize = 20;
    let start = Instant::now();
    let mut last = None;
    let mut still = 0;
    loop {
        let now = probe().ok_or("the process is gone")?;
        if last.as_ref() == Some(&now) {
            still += 1;
            if still >= STILL {
                return Ok((now, start.elapsed()));
            }
        } else {
            still = 0;
        }
        if start.elapsed() > patience {
            return Err(format!(
                "it did not settle within {patience:?} (last reading {now:?})"
            ));
        }
        last = Some(now);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A positive count from the environment variable `name`, else `default`.
pub fn env_count(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|n| *n > 0)
        .unwrap_or(default)
}

/// Builds the binaries under test (with this program's profile, so release under
/// `cargo bench`) and starts the results, noting when they are not a release build.
/// Returns them with the moment measuring began.
pub fn begin() -> (Results, Instant) {
    let build = Instant::now();
    eprintln!("building the binaries under test (same profile as this benchmark)");
    let bins = crate::bin_dir();
    eprintln!(
        "binaries: {} (ready after {:.1} s)",
        bins.display(),
        build.elapsed().as_secs_f64()
    );
    let mut res = Results {
        load_before: loadavg(),
        ..Results::default()
    };
    if !bins.ends_with("release") {
        res.note(format!(
            "the binaries under test are NOT a release build ({}); run through `cargo bench`",
            bins.display()
        ));
    }
    (res, Instant::now())
}

impl Results {
    /// Records a row; an error or no samples makes it a skipped row saying why.
    pub fn add(
        &mut self,
        id: &'static str,
        label: impl Into<String>,
        unit: &'static str,
        value: Result<Vec<f64>, String>,
        target: Option<f64>,
    ) {
        self.add_at(id, label, unit, value, target, 0.5);
    }

    /// [`Results::add`] with the target bounding the `quantile` percentile (0.99: the
    /// p99) instead of the p50; the table shows that percentile beside the verdict.
    pub fn add_at(
        &mut self,
        id: &'static str,
        label: impl Into<String>,
        unit: &'static str,
        value: Result<Vec<f64>, String>,
        target: Option<f64>,
        quantile: f64,
    ) {
        let value = match value {
            Ok(v) if !v.is_empty() => Value::Samples(v),
            Ok(_) => Value::Skipped("no samples".into()),
            Err(e) => Value::Skipped(e),
        };
        if let Value::Skipped(why) = &value {
            eprintln!("  {id}: not measured: {why}");
        }
        self.rows.push(Row {
            id,
            label: label.into(),
            unit,
            value,
            target,
            quantile,
        });
    }

    /// Records a note (also shown on stderr as it happens).
    pub fn note(&mut self, s: impl Into<String>) {
        let s = s.into();
        eprintln!("  note: {s}");
        self.notes.push(s);
    }

    /// (p50, p90) of a measured row.
    pub fn stats(&self, id: &str) -> Option<(f64, f64)> {
        self.rows
            .iter()
            .find(|r| r.id == id)
            .and_then(|r| match &r.value {
                Value::Samples(s) => Some(stats(s)),
                Value::Skipped(_) => None,
            })
    }

    /// The report's beginning: `## TITLE (N CPUs, DETAIL; ...)`, the table of every row,
    /// and the ratios `(numerator id, denominator id, label)` of their p50s. It ends
    /// with the last ratio row, so a caller may add rows of its own.
    pub fn report_head(&self, title: &str, detail: &str, ratios: &[(&str, &str, &str)]) -> String {
        let mut w = String::new();
        let _ = writeln!(
            w,
            "\n## {title} ({} CPUs, {detail}; p50/p90 nearest rank)\n",
            std::thread::available_parallelism().map_or(0, |n| n.get())
        );
        w.push_str(&self.table());
        let _ = writeln!(w, "\n### Ratios (p50 / p50, same run)\n");
        w.push_str(&self.ratio_table(ratios));
        w
    }

    /// The report's end: the notes, the load average before and now (the machine may be
    /// shared), and how long measuring took.
    pub fn report_tail(&mut self, elapsed: Duration) -> String {
        self.note(format!(
            "load average (1, 5, 15 min) before: {}; after: {} (other work shares this machine)",
            self.load_before,
            loadavg()
        ));
        let mut w = self.notes_section();
        let _ = writeln!(
            w,
            "\nmeasuring took {:.1} s (after building the binaries under test)",
            elapsed.as_secs_f64()
        );
        w
    }

    /// The table of every row: n, p50, p90, target and verdict (on the p50, or on the
    /// percentile the row's target names, shown beside the verdict).
    fn table(&self) -> String {
        let mut w = String::new();
        let _ = writeln!(w, "| id | measurement | n | p50 | p90 | target | verdict |");
        let _ = writeln!(w, "|---|---|---:|---:|---:|---:|---|");
        for r in &self.rows {
            let at_p50 = r.quantile == 0.5;
            let name = format!("p{:.0}", r.quantile * 100.0);
            let target = match r.target {
                None => "-".to_string(),
                Some(t) if at_p50 => format!("< {t} {}", r.unit),
                Some(t) => format!("{name} < {t} {}", r.unit),
            };
            match &r.value {
                Value::Samples(s) => {
                    let (p50, p90) = stats(s);
                    let mut sorted = s.clone();
                    sorted.sort_by(f64::total_cmp);
                    let bounded = percentile(&sorted, r.quantile);
                    let verdict = match r.target {
                        Some(t) if bounded < t => "met",
                        Some(_) => "MISSED",
                        None => "context",
                    };
                    let verdict = if at_p50 || r.target.is_none() {
                        verdict.to_string()
                    } else {
                        format!("{verdict} ({name} {})", fmt_value(bounded, r.unit))
                    };
                    let p90 = if s.len() > 1 {
                        fmt_value(p90, r.unit)
                    } else {
                        "-".into()
                    };
                    let _ = writeln!(
                        w,
                        "| {} | {} | {} | {} | {} | {} | {} |",
                        r.id,
                        r.label,
                        s.len(),
                        fmt_value(p50, r.unit),
                        p90,
                        target,
                        verdict
                    );
                }
                Value::Skipped(why) => {
                    let _ = writeln!(
                        w,
                        "| {} | {} | 0 | - | - | {} | not measured: {} |",
                        r.id,
                        r.label,
                        target,
                        why.replace('|', "/").replace('\n', " ")
                    );
                }
            }
        }
        w
    }

    /// A ratio table: for each (numerator id, denominator id, label), p50 / p50.
    fn ratio_table(&self, ratios: &[(&str, &str, &str)]) -> String {
        let mut w = String::new();
        let _ = writeln!(w, "| ratio | value |");
        let _ = writeln!(w, "|---|---:|");
        for (a, b, label) in ratios {
            let v = match (self.stats(a), self.stats(b)) {
                (Some((x, _)), Some((y, _))) if y > 0.0 => format!("{:.3}", x / y),
                _ => "n/a (not measured)".into(),
            };
            let _ = writeln!(w, "| {label} | {v} |");
        }
        w
    }

    /// The notes as a Markdown section, or nothing when there are none.
    fn notes_section(&self) -> String {
        let mut w = String::new();
        if !self.notes.is_empty() {
            let _ = writeln!(w, "\n### Notes\n");
            for n in &self.notes {
                let _ = writeln!(w, "- {n}");
            }
        }
        w
    }
}

/// Nearest-rank percentile of sorted samples.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// (p50, p90), nearest rank.
pub fn stats(samples: &[f64]) -> (f64, f64) {
    let mut s = samples.to_vec();
    s.sort_by(f64::total_cmp);
    (percentile(&s, 0.5), percentile(&s, 0.9))
}

/// Milliseconds, as the tables count them.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// A figure with as many digits as its size deserves.
pub fn fmt_value(v: f64, unit: &str) -> String {
    match unit {
        "ms" if v < 10.0 => format!("{v:.2} ms"),
        "ms" => format!("{v:.1} ms"),
        "s" => format!("{v:.2} s"),
        "MiB" => format!("{v:.2} MiB"),
        "KiB" => format!("{v:.0} KiB"),
        _ => format!("{v:.2} {unit}"),
    }
}

/// The first three fields of /proc/loadavg.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// CPU time of process `pid` in ms, from /proc/PID/stat: (its own user + system,
/// that of its children it has reaped). Clock-tick resolution (10 ms on Linux).
pub fn cpu_ms(pid: u32) -> Option<(f64, f64)> {
    static TICK_MS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    let tick_ms = *TICK_MS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .trim()
                    .parse::<f64>()
                    .ok()
            })
            .map_or(10.0, |hz| 1000.0 / hz)
    });
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces; the fields after it are fixed.
    let rest = &text[text.rfind(')')? + 2..];
    let f: Vec<f64> = rest
        .split_whitespace()
        .skip(11)
        .take(4)
        .map(|v| v.parse().unwrap_or(0.0))
        .collect();
    match f[..] {
        [utime, stime, cutime, cstime] => {
            Some(((utime + stime) * tick_ms, (cutime + cstime) * tick_ms))
        }
        _ => None,
    }
}

/// Runs the command from `make` `warm + n` times, one after another, and returns the
/// wall-clock milliseconds of the last `n` (spawn to exit). Any failure fails the lot.
pub fn time_process(
    n: usize,
    warm: usize,
    mut make: impl FnMut() -> Command,
) -> Result<Vec<f64>, String> {
    time_rounds(n, warm, 1, |_| make())
}

/// Runs `warm + n` rounds of `width` commands started together (`make(i)` makes the
/// i-th of a round) and returns the wall-clock milliseconds of the last `n` rounds,
/// from the first spawn to the last exit. Any failure fails the lot.
pub fn time_rounds(
    n: usize,
    warm: usize,
    width: usize,
    mut make: impl FnMut(usize) -> Command,
) -> Result<Vec<f64>, String> {
    let mut out = Vec::with_capacity(n);
    for round in 0..warm + n {
        let mut cmds: Vec<Command> = (0..width).map(&mut make).collect();
        let t = Instant::now();
        let mut children = Vec::with_capacity(width);
        for c in &mut cmds {
            c.stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped());
            children.push(c.spawn().map_err(|e| format!("{c:?}: {e}"))?);
        }
        // A failed command's stderr is small; reading each after the others is fine.
        let mut failed = None;
        for (c, child) in cmds.iter().zip(children) {
            let o = child
                .wait_with_output()
                .map_err(|e| format!("{c:?}: {e}"))?;
            if !o.status.success() && failed.is_none() {
                failed = Some(format!(
                    "{c:?} ended with {}: {}",
                    o.status,
                    String::from_utf8_lossy(&o.stderr).trim()
                ));
            }
        }
        let el = t.elapsed();
        if let Some(f) = failed {
            return Err(f);
        }
        if round >= warm {
            out.push(ms(el));
        }
    }
    Ok(out)
}

/// `ssh` as the benches run it: no user configuration (`-F /dev/null`), only `key`,
/// and a host key that must already be in `known_hosts` (never accepted blindly).
pub fn ssh_command(key: &Path, known_hosts: &Path) -> Command {
    let mut c = Command::new("ssh");
    c.arg("-F")
        .arg("/dev/null")
        .arg("-i")
        .arg(key)
        .args(["-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-o"])
        .arg(format!("UserKnownHostsFile={}", known_hosts.display()))
        .args([
            "-o",
            "GlobalKnownHostsFile=/dev/null",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "LogLevel=ERROR",
        ]);
    c
}

/// A warm OpenSSH ControlMaster connection, closed when dropped.
pub struct ControlMaster {
    child: Child,
    socket: PathBuf,
    target: String,
}

impl ControlMaster {
    /// Starts `ssh -M -S SOCKET -N TARGET` from `ssh` (a command carrying the connection
    /// options, called again for every check) and waits until `ssh -O check` answers.
    pub fn start(
        ssh: impl Fn() -> Command,
        socket: &Path,
        target: &str,
    ) -> Result<ControlMaster, String> {
        let child = ssh()
            .arg("-M")
            .arg("-S")
            .arg(socket)
            .args(["-N", "-o", "ControlPersist=no"])
            .arg(target)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start the ControlMaster to {target}: {e}"))?;
        let mut m = ControlMaster {
            child,
            socket: socket.to_path_buf(),
            target: target.to_string(),
        };
        let check = || {
            ssh()
                .arg("-S")
                .arg(socket)
                .args(["-O", "check"])
                .arg(target)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if check() {
                return Ok(m);
            }
            if let Ok(Some(st)) = m.child.try_wait() {
                let mut err = String::new();
                if let Some(mut e) = m.child.stderr.take() {
                    let _ = e.read_to_string(&mut err);
                }
                return Err(format!(
                    "the ControlMaster to {target} exited ({st}): {}",
                    err.trim()
                ));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "the ControlMaster to {target} did not come up within 10 s"
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `ssh` (from `base`, the same options the master was started with) over this
    /// master, running `argv` on the host.
    pub fn command(&self, mut base: Command, argv: &[&str]) -> Command {
        base.arg("-S")
            .arg(&self.socket)
            .arg(&self.target)
            .args(argv);
        base
    }
}

impl Drop for ControlMaster {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The runtime the benches run in: multi-threaded, so that blocking work (whole
/// processes timed one after another) can run in place with `block_in_place`, on two
/// workers.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// Raises the soft open-files limit towards `want` (as `ulimit -n` would); returns the
/// limit in force.
pub fn raise_nofile(want: u64) -> u64 {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let lim = getrlimit(Resource::Nofile);
    let current = lim.current.unwrap_or(u64::MAX);
    if current >= want {
        return current;
    }
    let raised = lim.maximum.map_or(want, |max| want.min(max));
    let new = Rlimit {
        current: Some(raised),
        maximum: lim.maximum,
    };
    if setrlimit(Resource::Nofile, new).is_ok() {
        raised
    } else {
        current
    }
}
