//! Verdicts from the agents' reports: pure functions of this round, the round before
//! (when `serve` has one), and each node's clock skew, so every rule is tested on
//! recorded reports.

use std::collections::BTreeMap;

use clustermgr_protocol::health::{
    CertState, CheckReport, Csn, Csync2State, DiskUse, LdapServer, LdapState, PortProbe,
    ServiceState,
};

pub use crate::healthlog::Level;

pub use crate::healthlog::{Limits, Member, Members, NodeRound, Verdict};

impl Members {
    /// The node an LDAP URL points at, when exactly one node has that host.
    fn node_of_url(&self, url: &str) -> Option<&str> {
        let rest = url.split_once("://").map_or(url, |(_, r)| r);
        let hostport = rest.split('/').next().unwrap_or(rest);
        let host = match hostport.rsplit_once(':') {
            Some((h, p)) if p.parse::<u16>().is_ok() => h,
            _ => hostport,
        }
        .trim_matches(['[', ']']);
        let mut found = self
            .nodes
            .iter()
            .filter(|(name, m)| m.host == host || name.as_str() == host);
        let first = found.next()?;
        found.next().is_none().then_some(first.0.as_str())
    }
}

/// Every verdict of a round. `previous` is the round one interval earlier, when there
/// is one; `interval_ms` the check interval.
pub fn verdicts(
    members: &Members,
    now: &BTreeMap<String, NodeRound>,
    previous: Option<&BTreeMap<String, NodeRound>>,
    interval_ms: i64,
) -> Vec<Verdict> {
    let mut out = Vec::new();
    let unreachable = |n: &str| matches!(now.get(n), Some(NodeRound::Unreachable(_)) | None);
    for (name, member) in &members.nodes {
        let v = |check: &str, level: Level, reason: String| Verdict {
            node: name.clone(),
            check: check.into(),
            level,
            reason,
        };
        let ldap_checks = ["ldap", "ldap-links", "ldap-csn", "heartbeat"];
        match now.get(name) {
            None | Some(NodeRound::Unreachable(_)) => {
                let why = match now.get(name) {
                    Some(NodeRound::Unreachable(m)) => m.clone(),
                    _ => "it was not asked".into(),
                };
                out.push(v("agent", Level::Critical, format!("unreachable: {why}")));
                for c in own_checks(member) {
                    out.push(v(c, Level::Unknown, "the node did not answer".into()));
                }
            }
            Some(NodeRound::Failed(why)) => {
                out.push(v("agent", Level::Ok, "answered".into()));
                for c in own_checks(member) {
                    out.push(v(
                        c,
                        Level::Unknown,
                        format!("the checks did not run: {why}"),
                    ));
                }
            }
            Some(NodeRound::Report { report, skew_ms }) => {
                out.push(v("agent", Level::Ok, "answered".into()));
                let (level, reason) = clock(name, *skew_ms, now);
                out.push(v("clock", level, reason));
                let (level, reason) = disk(&report.disks, &members.limits);
                out.push(v("disk", level, reason));
                let (level, reason) = ports(&member.reach, report, &unreachable);
                out.push(v("ports", level, reason));
                let (level, reason) = certs(&report.certs, report.started_ms - skew_ms);
                out.push(v("certs", level, reason));
                let (level, reason) = services(&report.services);
                out.push(v("services", level, reason));
                if member.csync2 {
                    // A peer csync2 cannot reach fails every `csync2 -x`, so the stamp
                    // of the last good sync says nothing while one is down.
                    let peer_down = members
                        .nodes
                        .iter()
                        .any(|(peer, m)| peer != name && m.csync2 && unreachable(peer))
                        || report.ports.iter().any(|p| {
                            p.probe.port == clustermgr_protocol::health::CSYNC2_PORT
                                && p.result.is_err()
                        });
                    let (level, reason) = if member.csync2_set_up {
                        csync2(
                            report.csync2.as_ref(),
                            &unreachable,
                            peer_down,
                            // The stamp's time is the node's clock, as is this.
                            report.started_ms,
                        )
                    } else {
                        (Level::Warning, NOT_SET_UP.into())
                    };
                    out.push(v("csync2", level, reason));
                }
                match &report.ldap {
                    None if member.gluu => out.push(v(
                        "ldap",
                        Level::Unknown,
                        "the agent finds no LDAP server: no Gluu LDAP settings and no [ldap] in agent.toml".into(),
                    )),
                    None => {}
                    Some(Err(e)) => {
                        out.push(v("ldap", Level::Critical, e.clone()));
                        for c in &ldap_checks[1..] {
                            out.push(v(c, Level::Unknown, "its LDAP server cannot be read".into()));
                        }
                    }
                    Some(Ok(state)) => {
                        out.push(v(
                            "ldap",
                            Level::Ok,
                            format!("{} answered in {} ms", server_name(state.server), state.took_ms),
                        ));
                        let (level, reason) = links(members, state, &unreachable);
                        out.push(v("ldap-links", level, reason));
                        let (level, reason) = csn(name, state, now, previous, interval_ms);
                        out.push(v("ldap-csn", level, reason));
                        let (level, reason) =
                            heartbeats(name, members, state, *skew_ms, now, &unreachable, interval_ms);
                        out.push(v("heartbeat", level, reason));
                    }
                }
            }
        }
    }
    out
}

/// The checks of a node's own, which are unknown when it cannot run them.
fn own_checks(member: &Member) -> Vec<&'static str> {
    let mut c = vec!["clock", "disk", "ports", "certs", "services"];
    if member.csync2 {
        c.push("csync2");
    }
    if member.gluu {
        c.extend(["ldap", "ldap-links", "ldap-csn", "heartbeat"]);
    }
    c
}

/// The node's row of the port matrix. A port of a node that did not answer this
/// round counts against that node, not this one.
fn ports(
    wanted: &[PortProbe],
    report: &CheckReport,
    unreachable: &dyn Fn(&str) -> bool,
) -> (Level, String) {
    let tried = &report.ports;
    let (mut open, mut missing, mut untried, mut skipped) = (0, Vec::new(), Vec::new(), 0);
    for p in wanted {
        if unreachable(&p.node) {
            skipped += 1;
            continue;
        }
        let name = super::ports::port_name(p.port);
        let what = if name.is_empty() {
            format!("{}:{}", p.node, p.port)
        } else {
            format!("{}:{} ({name})", p.node, p.port)
        };
        match tried.iter().find(|t| &t.probe == p).map(|t| &t.result) {
            Some(Ok(_)) => open += 1,
            Some(Err(e)) => missing.push(format!("{what}: {e}")),
            None => untried.push(what),
        }
    }
    if !missing.is_empty() {
        return (
            Level::Critical,
            format!("cannot reach {}", missing.join("; ")),
        );
    }
    if !untried.is_empty() {
        return (
            Level::Unknown,
            format!("the agent did not try {}", untried.join(", ")),
        );
    }
    let also = if skipped > 0 {
        format!(" ({skipped} of unreachable nodes left out)")
    } else {
        String::new()
    };
    match open {
        0 if skipped == 0 => (Level::Ok, "no peer ports to reach".into()),
        n => (Level::Ok, format!("{n} peer ports open{also}")),
    }
}

/// The services tried on the node: one that does not answer as it should is
/// critical.
fn services(tried: &[ServiceState]) -> (Level, String) {
    let failed: Vec<String> = tried
        .iter()
        .filter_map(|s| s.result.as_ref().err().map(|e| format!("{}: {e}", s.label)))
        .collect();
    if !failed.is_empty() {
        return (Level::Critical, failed.join("; "));
    }
    match tried {
        [] => (Level::Ok, "no services to try here".into()),
        [one] => (
            Level::Ok,
            format!(
                "{} answers ({})",
                one.label,
                one.result.as_deref().unwrap_or("")
            ),
        ),
        all => (
            Level::Ok,
            format!(
                "{} services answer: {}",
                all.len(),
                all.iter()
                    .map(|s| s.label.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ),
    }
}

/// Days before expiry that warn, and that are critical.
const CERT_WARNING_DAYS: i64 = 30;
const CERT_CRITICAL_DAYS: i64 = 7;

/// The watched certificates' expiry at `now_ms` (the controller's clock).
fn certs(certs: &[CertState], now_ms: i64) -> (Level, String) {
    let now = now_ms.div_euclid(1000);
    let (mut worst, mut notes, mut soonest) = (Level::Ok, Vec::new(), None::<(i64, &str)>);
    for c in certs {
        let label = &c.probe.label;
        match &c.result {
            Err(e) => {
                worst = Level::worst([worst, Level::Warning]);
                notes.push(format!("{label}: {e}"));
            }
            Ok((subject, not_after)) => {
                let days = (not_after - now).div_euclid(86_400);
                let level = if *not_after <= now || days < CERT_CRITICAL_DAYS {
                    Level::Critical
                } else if days < CERT_WARNING_DAYS {
                    Level::Warning
                } else {
                    Level::Ok
                };
                if *not_after <= now {
                    notes.push(format!(
                        "{label} ({subject}, {}) has expired: renew it",
                        c.probe.path
                    ));
                } else if level != Level::Ok {
                    notes.push(format!(
                        "{label} ({subject}, {}) expires in {days} days: renew it",
                        c.probe.path
                    ));
                }
                worst = Level::worst([worst, level]);
                if soonest.is_none_or(|(d, _)| days < d) {
                    soonest = Some((days, label));
                }
            }
        }
    }
    if !notes.is_empty() {
        return (worst, notes.join("; "));
    }
    match soonest {
        None => (Level::Ok, "no certificates to watch yet".into()),
        Some((days, label)) => (
            Level::Ok,
            format!(
                "{}; the first to expire, the {label}, in {}",
                crate::words::count(certs.len(), "certificate", "certificates"),
                crate::words::count(days.max(0) as usize, "day", "days")
            ),
        ),
    }
}

/// What the csync2 check says of a member clustermgr has not set csync2 up on.
const NOT_SET_UP: &str =
    "csync2 is not set up on this node yet: `clustermgr apply` sets it up (`plan` shows how)";

/// How long dirty files may wait for a sync that keeps failing: the generated cron
/// job syncs every two minutes, so this is five missed syncs.
const CSYNC2_STALE_MS: i64 = 10 * 60 * 1000;

/// csync2 on the node: its listener, files waiting to be sent, the last good sync, and
/// the copies kept where a peer's version replaced a file. Files waiting only for nodes that did
/// not answer count against those nodes.
fn csync2(
    state: Option<&Csync2State>,
    unreachable: &dyn Fn(&str) -> bool,
    peer_down: bool,
    now_ms: i64,
) -> (Level, String) {
    let Some(s) = state else {
        return (Level::Unknown, "the agent did not report csync2".into());
    };
    if !s.configured {
        return (
            Level::Critical,
            "clustermgr set csync2 up here, but /etc/csync2.cfg is gone: `clustermgr drift` shows it, `clustermgr apply` puts it back".into(),
        );
    }
    if let Err(e) = &s.listener {
        return (Level::Critical, format!("listener: {e}"));
    }
    if let Some(e) = &s.error {
        return (Level::Warning, e.clone());
    }
    let age = |ms: i64| format!("{:.0} s", (now_ms - ms).max(0) as f64 / 1000.0);
    let last = s.last_sync_ms.map_or_else(
        || "no sync recorded yet".to_string(),
        |t| format!("last sync {} ago", age(t)),
    );
    let kept = match s.kept.first() {
        Some(k) => format!(
            "; {} copies kept in the last day where a peer's version replaced a file (a lost conflict's among them), newest {}",
            s.kept.len(),
            k.path
        ),
        None => String::new(),
    };
    if s.dirty_total == 0 {
        return (Level::Ok, format!("in sync; {last}{kept}"));
    }
    let mut peers: Vec<&str> = s.dirty.iter().map(|d| d.peer.as_str()).collect();
    peers.sort();
    peers.dedup();
    let (down, up): (Vec<&str>, Vec<&str>) = peers.into_iter().partition(|p| unreachable(p));
    let first = s.dirty.first().map(|d| d.path.as_str()).unwrap_or_default();
    let words = format!(
        "{} to be sent (first {first}) to {}; {last}{kept}",
        match s.dirty_total {
            1 => "1 changed file waits".to_string(),
            n => format!("{n} changed files wait"),
        },
        up.iter()
            .chain(&down)
            .copied()
            .collect::<Vec<_>>()
            .join(", ")
    );
    if up.is_empty() {
        return (Level::Ok, format!("{words} (only unreachable nodes wait)"));
    }
    // Never synced is a cluster being set up (its first rollout), not a sync that
    // stopped working; nor is a stale stamp while a peer is down (see the caller).
    let stale = !peer_down && s.last_sync_ms.is_some_and(|t| now_ms - t > CSYNC2_STALE_MS);
    (
        if stale {
            Level::Critical
        } else {
            Level::Warning
        },
        words,
    )
}

/// A node's clock against the controller's and against the other nodes' (two nodes
/// each 1.9 s off the controller's, either way, are 3.8 s apart): LDAP replication
/// orders changes by time, and tokens expire by it, so a few seconds matter.
fn clock(name: &str, skew_ms: i64, now: &BTreeMap<String, NodeRound>) -> (Level, String) {
    let judge = |ms: i64| match ms.unsigned_abs() {
        0..=2000 => Level::Ok,
        2001..=30_000 => Level::Warning,
        _ => Level::Critical,
    };
    let secs = |ms: i64| ms.unsigned_abs() as f64 / 1000.0;
    let words = |ms: i64| if ms >= 0 { "ahead of" } else { "behind" };
    // Only between nodes each within bounds of the controller's: a node far off the
    // controller's is its own verdict, not its peers'.
    let farthest = now
        .iter()
        .filter(|(n, _)| n.as_str() != name)
        .filter_map(|(n, r)| match r {
            NodeRound::Report {
                skew_ms: theirs, ..
            } if judge(*theirs) == Level::Ok => Some((n, skew_ms - theirs)),
            _ => None,
        })
        .filter(|_| judge(skew_ms) == Level::Ok)
        .max_by_key(|(_, d)| d.unsigned_abs());
    let mut level = judge(skew_ms);
    let mut reason = match level {
        Level::Ok => format!("within {:.1} s of the controller's", secs(skew_ms)),
        _ => format!("{:.1} s {} the controller's", secs(skew_ms), words(skew_ms)),
    };
    if let Some((peer, d)) = farthest
        && judge(d) != Level::Ok
    {
        level = Level::worst([level, judge(d)]);
        reason.push_str(&format!("; {:.1} s {} {peer}'s", secs(d), words(d)));
    }
    match level {
        Level::Ok => {}
        Level::Critical => {
            reason.push_str(": replication and tokens go wrong; fix NTP");
        }
        _ => reason.push_str(": check NTP"),
    }
    (level, reason)
}

/// The fullest file systems against the limits (LDAP and csync2 stop writing when
/// full).
fn disk(disks: &[DiskUse], limits: &Limits) -> (Level, String) {
    let used = |d: &DiskUse| {
        if d.size_bytes == 0 {
            0.0
        } else {
            100.0 * (1.0 - d.avail_bytes as f64 / d.size_bytes as f64)
        }
    };
    let Some(fullest) = disks.iter().max_by(|a, b| used(a).total_cmp(&used(b))) else {
        return (Level::Unknown, "the agent reported no file systems".into());
    };
    let mut full: Vec<&DiskUse> = disks
        .iter()
        .filter(|d| used(d) > limits.disk_warning_pct)
        .collect();
    if full.is_empty() {
        return (
            Level::Ok,
            format!(
                "the fullest, {}, is {:.0} % used",
                fullest.mount,
                used(fullest)
            ),
        );
    }
    full.sort_by(|a, b| used(b).total_cmp(&used(a)));
    let words: Vec<String> = full
        .iter()
        .map(|d| {
            format!(
                "{} {:.0} % used ({:.1} GiB left)",
                d.mount,
                used(d),
                d.avail_bytes as f64 / (1u64 << 30) as f64
            )
        })
        .collect();
    let level = if used(full[0]) > limits.disk_critical_pct {
        Level::Critical
    } else {
        Level::Warning
    };
    (level, words.join("; "))
}

fn server_name(s: LdapServer) -> &'static str {
    match s {
        LdapServer::OpenLdap => "OpenLDAP",
        LdapServer::OpenDj => "OpenDJ",
        LdapServer::Other => "the LDAP server",
    }
}

/// The replication links this node's server holds: syncrepl consumers (OpenLDAP) or
/// the replication server connection (OpenDJ). A link to a node that did not answer
/// this round counts against that node, not this one.
fn links(
    members: &Members,
    state: &LdapState,
    unreachable: &dyn Fn(&str) -> bool,
) -> (Level, String) {
    let mut broken = Vec::new();
    let mut catching_up = Vec::new();
    for c in &state.consumers {
        let peer = members.node_of_url(&c.provider);
        if peer.is_some_and(unreachable) {
            continue;
        }
        let who = peer.map_or_else(|| c.provider.clone(), |p| format!("{p} ({})", c.provider));
        if !c.connected {
            broken.push(who);
        } else if c.phase != "Persist" {
            catching_up.push(format!("{who}: {}", c.phase));
        }
    }
    for r in &state.replicas {
        if r.connected_to.is_none() {
            broken.push(format!(
                "{} (server-id {}): no replication server",
                r.domain, r.server_id
            ));
        }
    }
    if !broken.is_empty() {
        return (Level::Critical, format!("no link to {}", broken.join(", ")));
    }
    if !catching_up.is_empty() {
        return (
            Level::Warning,
            format!("catching up from {}", catching_up.join(", ")),
        );
    }
    match (state.consumers.len(), state.replicas.len()) {
        (0, 0) => (Level::Ok, "no replication configured".into()),
        (n, 0) => (Level::Ok, format!("{n} syncrepl links live")),
        (_, n) => (Level::Ok, format!("{n} replication domains connected")),
    }
}

/// Whether this node is behind: for OpenLDAP, per serverID, its `contextCSN` against
/// the newest the other nodes reported a round earlier (this round's, one interval
/// older, without a previous round); for OpenDJ, its missing changes.
fn csn(
    name: &str,
    state: &LdapState,
    now: &BTreeMap<String, NodeRound>,
    previous: Option<&BTreeMap<String, NodeRound>>,
    interval_ms: i64,
) -> (Level, String) {
    let missing: i64 = state
        .replicas
        .iter()
        .filter_map(|r| r.missing_changes)
        .sum();
    if missing > 0 {
        let delay = state
            .replicas
            .iter()
            .filter_map(|r| r.approximate_delay_ms)
            .max()
            .unwrap_or(0);
        return (
            Level::Warning,
            format!(
                "{missing} changes not replayed yet (about {} s behind)",
                delay / 1000
            ),
        );
    }
    let mine: BTreeMap<&str, &Csn> = state
        .csns
        .iter()
        .map(|c| (c.server_id.as_str(), c))
        .collect();
    // The reference: others' CSNs from the previous round, else this round's minus an
    // interval (CSNs read moments apart differ under load; an interval does not).
    let (reference, slack) = match previous {
        Some(p) => (p, 0),
        None => (now, interval_ms),
    };
    let mut behind = Vec::new();
    for (other, round) in reference {
        if other == name {
            continue;
        }
        let NodeRound::Report { report, .. } = round else {
            continue;
        };
        let Some(Ok(theirs)) = &report.ldap else {
            continue;
        };
        for c in &theirs.csns {
            let Some(their_ms) = c.time_ms() else {
                continue;
            };
            let my = mine.get(c.server_id.as_str());
            if my.is_some_and(|m| m.csn >= c.csn) {
                continue;
            }
            let lag = match my.and_then(|m| m.time_ms()) {
                Some(m) => their_ms - m,
                None => i64::MAX,
            };
            if lag > slack {
                behind.push((c.server_id.clone(), other.clone(), lag));
            }
        }
    }
    if behind.is_empty() {
        return (
            Level::Ok,
            format!("in step for {} serverIDs", state.csns.len()),
        );
    }
    behind.sort();
    behind.dedup_by(|a, b| a.0 == b.0);
    let words: Vec<String> = behind
        .iter()
        .map(|(sid, other, lag)| match *lag {
            i64::MAX => format!("no change from serverID {sid} yet ({other} has some)"),
            l => format!("serverID {sid} {:.1} s behind {other}", l as f64 / 1000.0),
        })
        .collect();
    let worst = behind.iter().map(|b| b.2).max().unwrap_or(0);
    let level = if worst > 6 * interval_ms {
        Level::Critical
    } else {
        Level::Warning
    };
    (level, format!("behind: {}", words.join("; ")))
}

/// How old every peer's heartbeat is as this node's server holds it, clocks corrected:
/// replication lag in seconds, and a cut link on an idle cluster.
fn heartbeats(
    name: &str,
    members: &Members,
    state: &LdapState,
    skew_ms: i64,
    now: &BTreeMap<String, NodeRound>,
    unreachable: &dyn Fn(&str) -> bool,
    interval_ms: i64,
) -> (Level, String) {
    let skew_of = |n: &str| match now.get(n) {
        Some(NodeRound::Report { skew_ms, .. }) => *skew_ms,
        _ => 0,
    };
    let (mut worst, mut notes, mut ages) = (Level::Ok, Vec::new(), Vec::new());
    for (peer, m) in &members.nodes {
        if peer == name || !m.gluu || unreachable(peer) {
            continue;
        }
        let Some(h) = state.heartbeats.iter().find(|h| &h.node == peer) else {
            worst = Level::worst([worst, Level::Warning]);
            notes.push(format!("none from {peer} yet"));
            continue;
        };
        // Both times on the controller's clock.
        let age = (h.read_ms - skew_ms) - (h.written_ms - skew_of(peer));
        ages.push(age);
        let level = if age > 6 * interval_ms {
            Level::Critical
        } else if age > 3 * interval_ms {
            Level::Warning
        } else {
            Level::Ok
        };
        if level != Level::Ok {
            notes.push(format!("{peer}'s is {:.0} s old", age as f64 / 1000.0));
        }
        worst = Level::worst([worst, level]);
    }
    if notes.is_empty() {
        let newest = ages.iter().max().copied().unwrap_or(0).max(0);
        return (
            Level::Ok,
            format!(
                "{} peers' heartbeats, the oldest {:.1} s",
                ages.len(),
                newest as f64 / 1000.0
            ),
        );
    }
    (worst, notes.join("; "))
}

#[cfg(test)]
mod tests;
