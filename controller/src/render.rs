//! What the CLI prints: live, node-prefixed command output; grouped output; tables;
//! and `--json`. It only ever sees [`Event`]s and [`Report`]s, so output is the same
//! whether an operation ran in-process or in `serve`.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};

use tokio::sync::mpsc;

use crate::clock::rfc3339;
use crate::contract;
use crate::ops::{Event, NodeOutcome, NodeState, Operation, Report};
use crate::store::Role;

/// A line of text on standard output, as `println!` would write it, with control
/// characters made visible when it goes to a terminal: node names are checked, but
/// reasons, paths and messages come from the nodes, where a service account may put an
/// escape sequence in a file name or a log line.
macro_rules! say {
    () => {
        $crate::render::say("")
    };
    ($($arg:tt)*) => {
        $crate::render::say(&format!($($arg)*))
    };
}

/// [`say!`] for standard error.
macro_rules! tell {
    ($($arg:tt)*) => {
        $crate::render::tell(&format!($($arg)*))
    };
}

/// How exec output is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputMode {
    /// Lines as they come, each prefixed with its node.
    Live,
    /// Each node's output whole, in node-name order, at the end.
    Group,
    /// `--json`: one document at the end (exec: a line per node as it finishes).
    Json,
    /// `--json` of a repeated report (`health --watch`): each report one compact line
    /// with its `type`.
    JsonLines,
}

impl OutputMode {
    /// Whether output is JSON.
    pub fn is_json(self) -> bool {
        matches!(self, OutputMode::Json | OutputMode::JsonLines)
    }
}

/// Bytes kept in memory per node before a grouped buffer spills to a temporary file.
const SPILL_AT: usize = 4 * 1024 * 1024;

/// A line longer than this is printed in pieces rather than held.
const MAX_LINE: usize = 64 * 1024;

/// One node's buffered output: memory first, then an unlinked temporary file.
#[derive(Default)]
pub struct NodeBuffer {
    mem: Vec<u8>,
    file: Option<File>,
}

impl NodeBuffer {
    fn push(&mut self, data: &[u8]) {
        if let Some(f) = &mut self.file
            && f.write_all(data).is_ok()
        {
            return;
        }
        self.mem.extend_from_slice(data);
        if self.file.is_none()
            && self.mem.len() > SPILL_AT
            && let Some(mut f) = spill_file()
            && f.write_all(&self.mem).is_ok()
        {
            self.mem = Vec::new();
            self.file = Some(f);
        }
    }

    /// Copies everything buffered to `out`.
    fn write_to(&mut self, out: &mut dyn Write) -> std::io::Result<()> {
        if let Some(f) = &mut self.file {
            f.seek(SeekFrom::Start(0))?;
            let mut chunk = vec![0u8; 64 * 1024];
            loop {
                let n = f.read(&mut chunk)?;
                if n == 0 {
                    break;
                }
                out.write_all(&shown(&chunk[..n]))?;
            }
        }
        out.write_all(&shown(&self.mem))
    }

    fn into_string(mut self) -> String {
        let mut v = Vec::new();
        let _ = self.write_to(&mut v);
        String::from_utf8_lossy(&v).into_owned()
    }

    fn ends_without_newline(&self) -> bool {
        !self.mem.is_empty() && !self.mem.ends_with(b"\n")
    }
}

/// Output bytes as the terminal should get them (see [`crate::terminal`]); as they are
/// into a pipe or a file.
fn shown(bytes: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    if crate::terminal::stdout_is_terminal() {
        crate::terminal::visible(bytes)
    } else {
        std::borrow::Cow::Borrowed(bytes)
    }
}

fn spill_file() -> Option<File> {
    // Owner-only and unlinked from the start (O_TMPFILE, or a random name removed at
    // once): command output may hold secrets, and the space is freed however we exit.
    tempfile::tempfile().ok()
}

/// Output gathered while events streamed, for the final report.
#[derive(Default)]
pub struct Gathered {
    stdout: BTreeMap<String, NodeBuffer>,
    stderr: BTreeMap<String, NodeBuffer>,
    /// The nodes that finished, as they did.
    done: Vec<NodeOutcome>,
    /// The nodes whose `exec --json` line is out.
    printed: std::collections::BTreeSet<String>,
}

impl Gathered {
    /// What an interrupted exec has to show: each node that finished as it did, and
    /// each that had said anything as interrupted, in node-name order.
    pub fn interrupted(&self) -> Vec<NodeOutcome> {
        let mut out = self.done.clone();
        for node in self.stdout.keys().chain(self.stderr.keys()) {
            if !out.iter().any(|o| &o.node == node) {
                let mut o = NodeOutcome::new(node);
                o.state = NodeState::Failed;
                o.message = Some("interrupted; the command was cancelled".into());
                out.push(o);
            }
        }
        out.sort_by(|a, b| a.node.cmp(&b.node));
        out
    }
}

/// Consumes events until the operation ends, printing live output as it comes.
/// `live_failures` prints each node's failure as it happens (exec, whose report is
/// only a summary); other reports list every node themselves.
/// If the reader of standard output goes away (`exec -- yes | head -1`), `closed`
/// becomes true and consuming stops, so the caller can cancel the operation.
pub async fn consume(
    mut rx: mpsc::Receiver<Event>,
    mode: OutputMode,
    live_failures: bool,
    closed: tokio::sync::watch::Sender<bool>,
) -> Gathered {
    let mut gathered = Gathered::default();
    let mut partial: BTreeMap<(String, bool), Vec<u8>> = BTreeMap::new();
    let mut progress: Option<crate::terminal::Progress> = None;
    while let Some(ev) = rx.recv().await {
        match ev {
            Event::Working {
                what,
                nodes,
                sequential,
            } => {
                // Only where a person watches: the report that follows says the rest.
                if crate::terminal::stderr_is_terminal() && mode == OutputMode::Live {
                    let p = crate::terminal::Progress::new(&what, &nodes, sequential, false);
                    progress = Some(p);
                }
            }
            Event::Output { node, stderr, data } => match mode {
                OutputMode::Live => {
                    let buf = partial.entry((node.clone(), stderr)).or_default();
                    buf.extend_from_slice(&data);
                    let mut start = 0;
                    let mut gone = false;
                    while let Some(pos) = buf[start..].iter().position(|&b| b == b'\n') {
                        gone |= print_line(&node, stderr, &buf[start..start + pos]).is_err();
                        start += pos + 1;
                    }
                    buf.drain(..start);
                    if buf.len() > MAX_LINE {
                        gone |= print_line(&node, stderr, buf).is_err();
                        buf.clear();
                    }
                    if gone {
                        let _ = closed.send(true);
                        return gathered;
                    }
                }
                OutputMode::Group => gathered.stdout.entry(node).or_default().push(&data),
                OutputMode::Json | OutputMode::JsonLines => {
                    let map = if stderr {
                        &mut gathered.stderr
                    } else {
                        &mut gathered.stdout
                    };
                    map.entry(node).or_default().push(&data);
                }
            },
            Event::NodeDone(o) => {
                gathered.done.push(o.clone());
                if let Some(p) = &progress {
                    p.step(&o.node, &outcome_sentence(&o), true);
                }
                if mode == OutputMode::Live {
                    for stderr in [false, true] {
                        if let Some(rest) = partial.remove(&(o.node.clone(), stderr))
                            && !rest.is_empty()
                        {
                            let _ = print_line(&o.node, stderr, &rest);
                        }
                    }
                    if live_failures && o.state != NodeState::Ok {
                        tell!("{}: {}", o.node, outcome_sentence(&o));
                    }
                }
                // `exec --json`: a node's line as soon as it is done.
                if live_failures && mode.is_json() && print_exec_line(&mut gathered, &o).is_err() {
                    let _ = closed.send(true);
                    return gathered;
                }
            }
            // Only `backup` asks for a snapshot, and it collects the parts itself.
            Event::Snapshot(_) => {}
            Event::Log(l) if mode.is_json() => {
                say!("{}", contract::line(&contract::LogLine::Log(l.into())));
            }
            Event::Log(l) => print_log(&l),
            Event::Health(e) if mode.is_json() => {
                say!("{}", contract::line(&contract::EventLine::Event(e.into())));
            }
            Event::Health(e) => print_event(&e, None),
        }
    }
    if let Some(p) = progress {
        p.finish();
    }
    gathered
}

/// A number short enough for a table: three decimals at most and an SI prefix.
fn short_number(v: f64) -> String {
    if !v.is_finite() {
        return "-".into();
    }
    let (x, p) = [(1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")]
        .into_iter()
        .find(|(s, _)| v.abs() >= *s)
        .map_or((v, ""), |(s, p)| (v / s, p));
    let s = format!("{x:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    format!("{s}{p}")
}

/// A series: its last value, its range, and a small chart of its points.
fn print_series(v: &crate::telemetry::SeriesView) {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let values: Vec<f64> = v.points.iter().filter_map(|p| p.value).collect();
    let (min, max) = values
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &x| {
            (lo.min(x), hi.max(x))
        });
    let chart: String = values
        .iter()
        .map(|&x| {
            if max > min {
                BARS[(((x - min) / (max - min)) * 7.0).round() as usize]
            } else {
                BARS[0]
            }
        })
        .collect();
    let last = values.last().copied().unwrap_or(f64::NAN);
    let unit = if v.unit.is_empty() {
        String::new()
    } else {
        format!(" {}", v.unit)
    };
    say!("{} {}", v.node, v.series);
    say!(
        "  last {}{unit}  min {}{unit}  max {}{unit}",
        short_number(last),
        short_number(min),
        short_number(max)
    );
    // What the chart spans: a bar per step, the lowest bar the minimum.
    let span = match (v.points.first(), v.points.last()) {
        (Some(a), Some(b)) if v.points.len() > 1 => {
            let step = (b.time_ms - a.time_ms) / (v.points.len() as i64 - 1).max(1);
            format!(
                "{} to {}, a bar per {}",
                crate::clock::rfc3339(a.time_ms / 1000),
                crate::clock::rfc3339(b.time_ms / 1000),
                duration_words(step)
            )
        }
        _ => "one point".into(),
    };
    say!("  {chart}  ({span}; min to max)");
}

/// `90 s`, `5 min`, `2 h`: a step in the unit that reads best.
fn duration_words(ms: i64) -> String {
    let s = ms / 1000;
    if s % 3600 == 0 && s >= 3600 {
        format!("{} h", s / 3600)
    } else if s % 60 == 0 && s >= 60 {
        format!("{} min", s / 60)
    } else {
        format!("{s} s")
    }
}

/// What an empty `logs`, `metrics` or `events` says (on stderr, so a pipe gets nothing),
/// since an empty answer alone does not tell a quiet cluster from a store nobody fills.
fn nothing_stored(what: &str) {
    tell!(
        "clustermgr: no {what}. The store holds what `clustermgr serve` received from the agents while it ran: is it running (`systemctl status clustermgr-serve`), and for long enough?"
    );
}

/// `top`'s screen. On a terminal it is redrawn in place each second: every line clears
/// to its end and the screen below the last is cleared, so nothing flickers (the
/// caller homes the cursor first); elsewhere it is printed once, plainly.
fn print_top(cluster: &str, rows: &[crate::telemetry::top::TopRow]) {
    use std::io::{IsTerminal, Write};
    let terminal = std::io::stdout().is_terminal();
    let width = terminal_size::terminal_size().map_or(80, |(w, _)| usize::from(w.0));
    let clock = crate::clock::Clock::now(&crate::clock::SystemClock);
    let clock = format!(
        "{:02}:{:02}:{:02} UTC",
        clock.hour(),
        clock.minute(),
        clock.second()
    );
    let screen = crate::telemetry::top::Screen {
        cluster,
        clock: &clock,
        width: if terminal { width } else { 80 },
        colour: terminal && std::env::var_os("NO_COLOR").is_none(),
    };
    let mut out = std::io::stdout().lock();
    let end = if terminal { "\x1b[K" } else { "" };
    for line in crate::telemetry::top::screen(&screen, rows) {
        let _ = writeln!(out, "{line}{end}");
    }
    if terminal {
        let _ = write!(out, "\x1b[J");
    }
    let _ = out.flush();
}

fn print_replication(r: &crate::health::replication::ReplicationView) {
    let writers = r.writers();
    if r.nodes.is_empty() {
        say!("No node's LDAP server could be read.");
    } else {
        print_heartbeat_matrix(r, &writers);
    }
    print_csns_and_links(r);
    for u in &r.unread {
        say!("{}: not read: {}", u.node, u.reason);
    }
    print_csync2(r);
}

fn print_csync2(r: &crate::health::replication::ReplicationView) {
    if r.csync2.is_empty() {
        return;
    }
    say!("\nCSYNC2");
    let now = (crate::clock::Clock::now(&crate::clock::SystemClock).unix_timestamp_nanos()
        / 1_000_000) as i64;
    for (n, c) in &r.csync2 {
        if !c.configured {
            // Asked only of nodes clustermgr set csync2 up on: the file went since.
            say!("{n:<16} /etc/csync2.cfg is gone from this node: `clustermgr apply` puts it back");
            continue;
        }
        let listener = match &c.listener_error {
            None => "listening".to_string(),
            Some(e) => format!("NOT LISTENING ({e})"),
        };
        let last = c.last_sync.as_ref().map_or("never".to_string(), |t| {
            format!("{:.0} s ago", (now - t.time_ms).max(0) as f64 / 1000.0)
        });
        say!(
            "{n:<16} {listener}; {} dirty; last good sync {last}",
            c.dirty_total
        );
        if let Some(e) = &c.error {
            say!("{:<16} check failed: {e}", "");
        }
        for d in &c.dirty {
            say!("{:<16} waits for {:<16} {}", "", d.peer, d.path);
        }
        for k in &c.kept {
            say!(
                "{:<16} kept {} ({})",
                "",
                k.path,
                rfc3339(k.time_ms.div_euclid(1000))
            );
        }
    }
}

fn print_heartbeat_matrix(r: &crate::health::replication::ReplicationView, writers: &[String]) {
    say!("HEARTBEAT AGE, s (rows: where read; columns: whose)");
    print!("{:<16}", "");
    for w in writers {
        print!(" {w:>10}");
    }
    say!();
    for n in &r.nodes {
        print!("{n:<16}");
        for w in writers {
            match r.heartbeat_age_ms.get(n).and_then(|m| m.get(w)) {
                Some(ms) => print!(" {:>10.1}", *ms as f64 / 1000.0),
                None => print!(" {:>10}", "-"),
            }
        }
        say!();
    }
}

fn print_csns_and_links(r: &crate::health::replication::ReplicationView) {
    let ids = r.server_ids();
    if !ids.is_empty() {
        say!("\nCONTEXTCSN (rows: node; columns: serverID)");
        for n in &r.nodes {
            let csns = r.csns.get(n);
            let cells: Vec<String> = ids
                .iter()
                .map(|id| {
                    format!(
                        "{id}={}",
                        csns.and_then(|m| m.get(id))
                            .map_or("-", |c| c.split('#').next().unwrap_or(c))
                    )
                })
                .collect();
            say!("{n:<16} {}", cells.join("  "));
        }
    }
    if !r.links.is_empty() || !r.replicas.is_empty() {
        say!("\nLINKS");
        for (n, consumers) in &r.links {
            for c in consumers {
                say!(
                    "{n:<16} <- {:<32} {:<13} {}",
                    c.provider,
                    if c.connected {
                        "connected"
                    } else {
                        "NOT CONNECTED"
                    },
                    c.phase
                );
            }
        }
        for (n, replicas) in &r.replicas {
            for d in replicas {
                say!(
                    "{n:<16} {} server-id {}: {} missing, {} ms behind, {}",
                    d.domain,
                    d.server_id,
                    d.missing_changes.map_or("?".into(), |m| m.to_string()),
                    d.approximate_delay_ms.map_or("?".into(), |m| m.to_string()),
                    d.connected_to.as_deref().unwrap_or("NO REPLICATION SERVER")
                );
            }
        }
    }
}

/// One health change: its number (for `events ack`), time (UTC), node, check, from ->
/// to, why; then who acknowledged it, when there is someone.
fn print_event(e: &crate::health::HealthEvent, ack: Option<&crate::health::Ack>) {
    say!(
        "#{:<5} {} {:<16} {:<11} {} -> {}: {}",
        e.id,
        rfc3339(e.time_ms.div_euclid(1000)),
        e.node,
        e.check,
        e.from.as_str(),
        e.to.as_str(),
        e.reason
    );
    if let Some(a) = ack {
        say!(
            "       acknowledged by {} at {}{}",
            a.by,
            rfc3339(a.time_ms.div_euclid(1000)),
            if a.note.is_empty() {
                String::new()
            } else {
                format!(": {}", a.note)
            }
        );
    }
}

/// `ports`: the matrix by source, then what is missing.
fn print_ports(p: &crate::health::ports::PortsView) {
    use crate::health::verdict::Level;
    if p.cells.is_empty() {
        say!("No node needs a peer's port (one Gluu node and no load balancer).");
        return;
    }
    say!(
        "{:<16} {:<16} {:>5} {:<18} {:<8} DETAIL",
        "FROM",
        "TO",
        "PORT",
        "SERVICE",
        "STATE"
    );
    for c in &p.cells {
        let state = match c.level {
            Level::Ok => "open",
            Level::Critical => "MISSING",
            _ => "unknown",
        };
        say!(
            "{:<16} {:<16} {:>5} {:<18} {:<8} {}",
            c.from,
            c.to,
            c.port,
            c.service,
            state,
            c.detail
        );
    }
    let missing = p
        .cells
        .iter()
        .filter(|c| c.level == Level::Critical)
        .count();
    let unknown = p.cells.iter().filter(|c| c.level == Level::Unknown).count();
    say!(
        "{} of {} open, {missing} missing, {unknown} not tried",
        p.cells.len() - missing - unknown,
        p.cells.len()
    );
}

fn print_health(h: &crate::health::HealthView) {
    say!("{:<16} {:<11} {:<9} REASON", "NODE", "CHECK", "STATE");
    for v in &h.verdicts {
        say!(
            "{:<16} {:<11} {:<9} {}",
            v.node,
            v.check,
            v.level.as_str(),
            v.reason
        );
    }
    match h.as_of_ms {
        Some(t) => say!(
            "overall: {} (serve's round at {})",
            h.worst.as_str(),
            rfc3339(t.div_euclid(1000))
        ),
        None => say!("overall: {}", h.worst.as_str()),
    }
}

/// One log line: time (UTC, milliseconds), node, source, text.
fn print_log(l: &crate::telemetry::store::NodeLine) {
    let t = l.time_ms;
    let stamp = rfc3339(t.div_euclid(1000));
    // 2026-11-25T10:00:00Z → 2026-11-25T10:00:00.123Z
    let stamp = match stamp.strip_suffix('Z') {
        Some(s) => format!("{s}.{:03}Z", t.rem_euclid(1000)),
        None => stamp,
    };
    say!("{stamp} {} {} | {}", l.node, l.source, l.line);
}

/// Prints one line of a node's output; an error only when standard output's reader
/// is gone (a closed stderr is not worth stopping for).
fn print_line(node: &str, stderr: bool, line: &[u8]) -> std::io::Result<()> {
    let terminal = if stderr {
        crate::terminal::stderr_is_terminal()
    } else {
        crate::terminal::stdout_is_terminal()
    };
    let line = if terminal {
        crate::terminal::visible(line)
    } else {
        std::borrow::Cow::Borrowed(line)
    };
    let line = &line[..];
    let mut buf = Vec::with_capacity(node.len() + line.len() + 4);
    buf.extend_from_slice(node.as_bytes());
    buf.extend_from_slice(b" | ");
    buf.extend_from_slice(line);
    buf.push(b'\n');
    // One write per line, so lines from different nodes never interleave mid-line.
    if stderr {
        let _ = std::io::stderr().lock().write_all(&buf);
        Ok(())
    } else {
        let mut out = std::io::stdout().lock();
        out.write_all(&buf).and_then(|()| out.flush())
    }
}

fn outcome_sentence(o: &NodeOutcome) -> String {
    let state = o.state.as_str();
    match &o.message {
        Some(m) => format!("{state}: {m}"),
        None => state.to_string(),
    }
}

fn roles(r: &[Role]) -> String {
    r.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(",")
}

fn ms(us: Option<u64>) -> String {
    us.map(|u| format!("{:.2} ms", u as f64 / 1000.0))
        .unwrap_or_else(|| "-".into())
}

/// A node's `exec --json` line, with the output it gave, once.
fn print_exec_line(gathered: &mut Gathered, o: &NodeOutcome) -> std::io::Result<()> {
    if !gathered.printed.insert(o.node.clone()) {
        return Ok(());
    }
    let take = |map: &mut BTreeMap<String, NodeBuffer>| {
        map.remove(&o.node)
            .map(NodeBuffer::into_string)
            .unwrap_or_default()
    };
    let stdout = take(&mut gathered.stdout);
    let stderr = take(&mut gathered.stderr);
    let line = contract::ExecLine::Result(contract::ExecResult::of(o, stdout, stderr));
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", contract::line(&line)).and_then(|()| out.flush())
}

/// Writes `line` and a newline to standard output, control characters made visible on
/// a terminal (see [`say!`]). A closed output panics as `println!` does, which the CLI
/// turns into a quiet exit.
pub fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = out
        .write_all(&shown(line.as_bytes()))
        .and_then(|()| out.write_all(b"\n"))
    {
        panic!("failed printing to stdout: {e}");
    }
}

/// [`say`] on standard error, which may be a terminal when standard output is not.
pub fn tell(line: &str) {
    let text = if crate::terminal::stderr_is_terminal() {
        crate::terminal::visible_str(line)
    } else {
        std::borrow::Cow::Borrowed(line)
    };
    let _ = writeln!(std::io::stderr().lock(), "{text}");
}

/// A command's failure on standard error: a sentence, or with `--json` one JSON object
/// (`{"error": MESSAGE, "exit_code": CODE}`), so a script reads it as it reads results.
pub fn error(message: &str, exit_code: i32, as_json: bool) {
    if as_json {
        let doc = contract::ErrorDoc {
            error: message.to_string(),
            exit_code,
        };
        eprintln!("{}", contract::line(&doc)); // JSON escapes control characters itself
    } else {
        tell!("clustermgr: {message}");
    }
}

pub(crate) fn json<T: serde::Serialize>(v: &T) {
    println!(
        "{}",
        serde_json::to_string_pretty(v).expect("report serializes")
    );
}

/// Prints an operation's report (`op` says which command it answers); `gathered` is
/// exec's output.
pub fn report(report: Report, mut gathered: Gathered, mode: OutputMode, op: &Operation) {
    let is_exec = matches!(op, Operation::Exec { .. });
    if mode.is_json() {
        return match report {
            // The nodes not yet printed (an interrupted exec's, for one).
            Report::Outcomes(outcomes) if is_exec => {
                for o in &outcomes {
                    if print_exec_line(&mut gathered, o).is_err() {
                        return;
                    }
                }
            }
            Report::Health(h) if mode == OutputMode::JsonLines => {
                say!("{}", contract::line(&contract::HealthLine::Health(h)));
            }
            report => {
                if let Some(doc) = contract::document(op, report) {
                    json(&doc);
                }
            }
        };
    }
    match report {
        Report::Outcomes(outcomes) if is_exec => match mode {
            OutputMode::Json | OutputMode::JsonLines => {}
            OutputMode::Group => {
                let mut out = std::io::stdout().lock();
                for o in &outcomes {
                    let _ = writeln!(out, "== {} ({}) ==", o.node, outcome_sentence(o));
                    if let Some(buf) = gathered.stdout.get_mut(&o.node) {
                        let _ = buf.write_to(&mut out);
                        if buf.ends_without_newline() {
                            let _ = writeln!(out);
                        }
                    }
                }
                summary(&outcomes);
            }
            OutputMode::Live => summary(&outcomes),
        },
        Report::Outcomes(outcomes) => {
            for o in &outcomes {
                match (&o.state, &o.info) {
                    (NodeState::Ok, Some(i)) => say!(
                        "{:<16} ok    {:>10}  agent {} on {} ({})",
                        o.node,
                        ms(o.rtt_us),
                        i.agent_version,
                        i.os_release,
                        i.arch
                    ),
                    _ => say!("{:<16} {}", o.node, outcome_sentence(o)),
                }
            }
            summary(&outcomes);
        }
        Report::ControllerRevoked(v) => {
            say!(
                "revoked controller certificate {}; the controller now uses {} (until {})",
                v.revoked_serial,
                v.serial,
                v.expires
            );
            for o in &v.nodes {
                match o.state {
                    NodeState::Ok => {
                        say!("{:<16} refuses the old certificate from now on", o.node)
                    }
                    _ => say!(
                        "{:<16} not reached ({}): it refuses the old certificate at its next contact with this controller",
                        o.node,
                        outcome_sentence(o)
                    ),
                }
            }
            summary(&v.nodes);
        }
        Report::Signed(s) => print!("{}", s.cert_pem),
        Report::Node(n) => {
            say!("name:      {}", n.name);
            say!("address:   {}", n.address);
            say!(
                "roles:     {}{}",
                roles(&n.roles),
                if n.primary { " (primary)" } else { "" }
            );
            say!("key:       {}", n.key);
            say!(
                "cert:      serial {}, expires {}",
                n.cert_serial,
                n.cert_expires
            );
            say!("added:     {}", n.added);
            if let Some(i) = &n.host {
                say!(
                    "host:      {} ({} {}, kernel {})",
                    i.hostname,
                    i.os_release,
                    i.arch,
                    i.kernel
                );
                say!("glibc:     {}", i.glibc.as_deref().unwrap_or("not glibc"));
                say!(
                    "agent:     {} (exec {})",
                    i.agent_version,
                    if i.exec_allowed { "allowed" } else { "refused" }
                );
                match &i.gluu {
                    Some(g) => say!(
                        "gluu:      {} in {} ({})",
                        g.version.as_deref().unwrap_or("unknown version"),
                        g.root,
                        g.components.join(", ")
                    ),
                    None => say!("gluu:      not installed"),
                }
            }
            if let Some(e) = &n.error {
                say!("live:      unavailable: {e}");
            }
        }
        Report::Nodes(nodes) => {
            if nodes.is_empty() {
                say!("no nodes yet: add one with `clustermgr node add NODE --address HOST`");
                return;
            }
            say!(
                "{:<16} {:<24} {:<14} {:<8} CERT EXPIRES",
                "NODE",
                "ADDRESS",
                "ROLES",
                "PRIMARY"
            );
            for n in nodes {
                say!(
                    "{:<16} {:<24} {:<14} {:<8} {}",
                    n.name,
                    n.address,
                    roles(&n.roles),
                    if n.primary { "yes" } else { "" },
                    n.cert_expires
                );
            }
        }
        Report::Plan {
            views,
            drift,
            digest,
        } => {
            for v in &views {
                print_plan(v, drift);
            }
            if let Some(d) = digest {
                let short = &d[..crate::desired::DIGEST_SHOWN.min(d.len())];
                say!(
                    "plan {short}: `clustermgr apply --plan {short}` applies exactly this, or nothing if the desired state changes first"
                );
            }
        }
        Report::Applied(views) => {
            for v in &views {
                print_applied(v);
            }
        }
        Report::MetricNames(names) if names.is_empty() => nothing_stored("metrics are stored"),
        Report::MetricNames(names) => {
            say!("{:<44} SERIES", "METRIC");
            for n in names {
                say!("{:<44} {}", n.name, n.series);
            }
        }
        Report::Metrics(views) => {
            for v in &views {
                print_series(v);
            }
        }
        Report::Replication(r) => print_replication(&r),
        Report::Ports(p) => print_ports(&p),
        Report::Events(e) if e.is_empty() => nothing_stored("health changes matched"),
        Report::Events(e) => e.iter().for_each(|r| print_event(&r.event, r.ack.as_ref())),
        Report::Health(h) => print_health(&h),
        Report::Keys(k) => print_keys(&k),
        Report::GluuAdd(g) => {
            for n in &g.nodes {
                say!("{:<16} {}", n.node, n.result);
                print_step_lines(&n.steps);
            }
            say!("{}", g.message);
        }
        Report::GluuInstall(g) => {
            for s in &g.steps {
                say!("{} {}", if s.ok { "ok  " } else { "FAIL" }, s.step);
                if !s.ok && !s.output.is_empty() {
                    for line in s.output.lines() {
                        say!("     {line}");
                    }
                }
            }
            if let Some(m) = &g.moved_aside {
                say!("the old Gluu was moved to {m}");
            }
            say!("{}", g.message);
        }
        Report::Top { cluster, rows } => print_top(&cluster, &rows),
        Report::Logs(lines) if lines.is_empty() => nothing_stored("log lines matched"),
        Report::Logs(lines) => {
            for l in &lines {
                print_log(l);
            }
        }
        Report::History(lines) => {
            for r in lines {
                let short = |h: &str| h.get(..12).unwrap_or(h).to_string();
                // A rollback restores a kept version: it has no revision of its own.
                let revision = match r.revision {
                    0 => "-".to_string(),
                    n => format!("r{n}"),
                };
                say!(
                    "{:>5} {} {:<10} {:<9} {:<5} {:<14} {} {} {}→{} {}",
                    r.id,
                    crate::clock::rfc3339(r.time_ms.div_euclid(1000)),
                    r.user,
                    r.action,
                    revision,
                    r.node,
                    r.path,
                    r.change,
                    r.old_sha256
                        .as_deref()
                        .map(short)
                        .unwrap_or_else(|| "-".into()),
                    short(&r.new_sha256),
                    r.result
                );
            }
        }
        Report::Cluster(c) if c.said.is_some() => say!("{}", c.said.unwrap_or_default()),
        Report::Cluster(c) => {
            for (k, v) in c.settings.iter().chain(&c.secrets) {
                say!("{k:<18} {v}");
            }
        }
        Report::Generations {
            node,
            path,
            generations,
        } => {
            if generations.is_empty() {
                say!("{node}: no kept versions of {path}");
            }
            for g in generations {
                say!(
                    "{node} {path} generation {}: replaced {} sha256 {} {}",
                    g.generation,
                    g.replaced_at,
                    g.sha256,
                    g.metadata
                );
            }
        }
        Report::Done(msg) => say!("{msg}"),
        Report::User(crate::users::View::Users(users)) => {
            if users.is_empty() {
                say!("no console accounts yet: `clustermgr user add NAME --role admin` makes one");
            }
            for u in &users {
                say!(
                    "{:<20} {:<9} password set {}  {} API token{}",
                    u.name,
                    u.role.as_str(),
                    u.password_set,
                    u.tokens.len(),
                    if u.tokens.len() == 1 { "" } else { "s" }
                );
            }
        }
        Report::User(crate::users::View::Done { said, .. }) => say!("{said}"),
        // Printed by the CLI, which knows where the token went.
        Report::User(crate::users::View::Token { .. }) => {}
        Report::Status(s) => {
            say!(
                "cluster {}: {}",
                s.cluster,
                crate::words::count(s.nodes.len(), "node", "nodes")
            );
            say!(
                "{:<16} {:<12} {:<12} {:>10} {:>9} {:>9}  DETAIL",
                "NODE",
                "ROLES",
                "STATE",
                "RTT",
                "SKEW",
                "CERT"
            );
            for n in &s.nodes {
                let state = n.state.as_str();
                let detail = n.message.clone().unwrap_or_else(|| {
                    format!(
                        "{}{}",
                        n.os.clone().unwrap_or_default(),
                        n.gluu
                            .as_ref()
                            .map(|g| format!("; gluu {g}"))
                            .unwrap_or_default()
                    )
                });
                say!(
                    "{:<16} {:<12} {:<12} {:>10} {:>9} {:>8}d  {}",
                    format!("{}{}", n.name, if n.primary { "*" } else { "" }),
                    roles(&n.roles),
                    state,
                    ms(n.rtt_us),
                    n.clock_skew_ms
                        .map(|s| format!("{s} ms"))
                        .unwrap_or_else(|| "-".into()),
                    n.cert_days_left,
                    detail
                );
            }
        }
        Report::Audit(a) => {
            for e in a {
                let results = e
                    .results
                    .iter()
                    .map(|r| format!("{}: {}", r.node, r.result))
                    .collect::<Vec<_>>()
                    .join(", ");
                say!(
                    "{:>5} {} {:<10} {:<16} [{}] {}{}",
                    e.id,
                    e.time,
                    e.user,
                    e.action,
                    e.nodes.join(","),
                    e.detail,
                    if results.is_empty() {
                        String::new()
                    } else {
                        format!(" -> {results}")
                    }
                );
            }
        }
        // `backup` seals a snapshot into an archive and reports that with [`backup`].
        Report::Snapshot { .. } => {}
        Report::Certs(c) => {
            say!(
                "{:<16} {:<34} {:<22} {:>6}  STATE",
                "SUBJECT",
                "SERIAL",
                "EXPIRES",
                "DAYS"
            );
            for v in c {
                say!(
                    "{:<16} {:<34} {:<22} {:>6}  {}",
                    v.subject,
                    v.serial,
                    v.expires,
                    v.days_left,
                    v.state
                );
            }
        }
    }
}

fn summary(outcomes: &[NodeOutcome]) {
    let bad: Vec<&NodeOutcome> = outcomes
        .iter()
        .filter(|o| o.state != NodeState::Ok)
        .collect();
    if !bad.is_empty() {
        tell!(
            "{} did not succeed: {}",
            match outcomes.len() {
                1 => "the node".to_string(),
                n => format!("{} of {n} nodes", bad.len()),
            },
            bad.iter()
                .map(|o| format!("{} ({})", o.node, o.state.as_str()))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
}

fn print_entry(e: &crate::desired::EntryView) {
    let short = |h: &str| h.get(..12).unwrap_or(h).to_string();
    if e.change == "waiting" {
        say!(
            "  waiting for {} ({}) to exist: the edit is made once it does",
            e.path,
            e.scope
        );
        return;
    }
    let mut line = format!("  {} {} ({})", e.change, e.path, e.scope);
    if e.drift {
        line.push_str(" [edited on the node since the last apply]");
    }
    if let Some(note) = &e.at_apply {
        say!("{line}");
        say!("    {note}");
        return;
    }
    if e.secret {
        line.push_str(&format!(
            " secret: sha256 {} -> {}",
            e.old_sha256
                .as_deref()
                .map(short)
                .unwrap_or_else(|| "none".into()),
            e.new_sha256
                .as_deref()
                .map(short)
                .unwrap_or_else(|| "made at apply".into())
        ));
    }
    say!("{line}");
    if let Some(m) = &e.metadata {
        say!("    metadata {m}");
    }
    if let Some(d) = &e.diff {
        for l in d.lines() {
            say!("    {l}");
        }
    }
}

fn print_plan(v: &crate::desired::NodePlanView, drift: bool) {
    if v.state != NodeState::Ok {
        say!(
            "{}: {}: {}",
            v.node,
            v.state.as_str(),
            v.message.as_deref().unwrap_or("")
        );
        return;
    }
    let changes = v.entries.iter().filter(|e| e.change != "waiting").count();
    if drift {
        if changes == 0 {
            say!(
                "{}: no drift ({} as applied)",
                v.node,
                crate::words::count(v.unchanged, "entry", "entries")
            );
        } else {
            say!(
                "{}: {changes} edited on the node since the last apply",
                v.node
            );
        }
    } else if changes == 0 {
        say!(
            "{}: no changes ({} up to date)",
            v.node,
            crate::words::count(v.unchanged, "entry", "entries")
        );
    } else {
        say!(
            "{}: {changes} to change, {} up to date",
            v.node,
            v.unchanged
        );
    }
    for e in &v.entries {
        print_entry(e);
    }
    for s in &v.validators {
        say!("  validate: {s}");
    }
    for s in &v.actions {
        say!("  then: {s}");
    }
    for h in &v.held {
        say!(
            "  held: {} at backup generation {} (a rollback) until the desired state changes",
            h.path,
            h.generation
        );
    }
    if let Some(r) = v.pending_revision {
        say!("  pending: revision {r} has not reached this node yet");
    }
    for w in &v.waiting {
        say!("  waiting: {w}");
    }
}

fn print_applied(v: &crate::desired::NodeApplyView) {
    let revision = match v.revision {
        0 => String::new(),
        n => format!(" (revision {n})"),
    };
    match &v.message {
        Some(m) => say!("{}: {}{revision}: {m}", v.node, v.result),
        None => say!("{}: {}{revision}", v.node, v.result),
    }
    for e in &v.entries {
        say!("  {} {}", e.change, e.path);
    }
    for s in &v.steps {
        let mark = if s.ok { "ok" } else { "FAILED" };
        say!("  {mark}: {}", s.step);
        if !s.ok && !s.output.is_empty() {
            for l in s.output.lines() {
                say!("    {l}");
            }
        }
    }
}

/// The steps of a Gluu node's work, each with its output when it failed.
fn print_step_lines(steps: &[crate::desired::StepView]) {
    for s in steps {
        say!("  {} {}", if s.ok { "ok  " } else { "FAIL" }, s.step);
        if !s.ok && !s.output.is_empty() {
            for line in s.output.lines() {
                say!("       {line}");
            }
        }
    }
}

/// `keys rotate` and `keys status`: the sentence, the keys, each node's copy.
fn print_keys(k: &crate::desired::keys::KeysView) {
    say!("{}", k.message);
    if let Some(next) = &k.next_rotation {
        say!("next rotation by serve: {next}");
    }
    if !k.keys.is_empty() {
        say!("");
        say!(
            "{:<50} {:<9} {:<8} {:>3} {:<20} {:<20} PUBLISHED UNTIL",
            "KID",
            "ALG",
            "STATE",
            "GEN",
            "MADE",
            "EXPIRES"
        );
        for key in &k.keys {
            say!(
                "{:<50} {:<9} {:<8} {:>3} {:<20} {:<20} {}",
                key.kid,
                key.alg,
                key.state,
                key.generation,
                key.made,
                key.expires,
                key.published_until.as_deref().unwrap_or("-")
            );
        }
    }
    if !k.nodes.is_empty() {
        say!("");
        say!(
            "{:<16} {:<12} {:<12} DETAIL",
            "NODE",
            "KEYSTORE",
            "PUBLISHED"
        );
        for n in &k.nodes {
            say!(
                "{:<16} {:<12} {:<12} {}",
                n.node,
                n.keystore,
                n.published.as_deref().unwrap_or("-"),
                n.detail.as_deref().unwrap_or("")
            );
        }
    }
}

#[cfg(test)]
mod tests {
    /// Every line of text goes through `say!`/`tell!` (control characters made visible
    /// on a terminal); only the JSON printers write directly, JSON escaping them itself.
    #[test]
    fn text_reaches_the_terminal_only_through_say_and_tell() {
        let source = include_str!("render.rs");
        let code = &source[..source.find("#[cfg(test)]").unwrap_or(source.len())];
        let direct = |mac: &str| {
            code.lines()
                .filter(|l| !l.trim_start().starts_with("//"))
                .filter(|l| l.contains(mac) && !l.contains(&format!("e{mac}")))
                .count()
        };
        assert_eq!(direct("println!("), 1, "only `json` may print directly");
        assert_eq!(
            direct("eprintln!("),
            1,
            "only `error`'s JSON may print directly"
        );
    }
}
