//! `cargo bench -p clustermgr-tests --bench build`: building the cluster on the
//! multi-host harness (needs root). Prints a Markdown table; BENCHMARKS.md keeps the
//! figures.
//!
//! What runs, `CLUSTERMGR_BENCH_REPS` times (default 3), each on fresh hosts:
//! 1. From three standalone slapds (each with a directory of its own) to a verified
//!    replicating cluster: `cluster set ldap-replication on`, one `apply --yes`, then
//!    an entry written on each node read on the other two. The sample ends when the
//!    last read succeeds.
//! 2. `plan` of the unchanged cluster, replication included, 20 times (whole CLI
//!    processes, no `serve`).
//! 3. A fourth node joining (`apply --yes` after `node add`, until an entry it writes
//!    is read on the first node and the newest cluster entry is read on it), with the
//!    cluster holding its own few entries, and then again on a fifth node with
//!    `CLUSTERMGR_BENCH_ENTRIES` more entries (default 10,000) in the directory: the
//!    difference is the time its initial refresh of those entries takes. Beside it,
//!    the time the first node took to write those entries itself: slapd commits (and
//!    syncs) each entry, so writing them is the floor a refresh cannot beat.
//!
//! The peer, Gluu's own Cluster Manager, cannot run here (it needs Gluu); its
//! replication sequence sleeps 60 s per node before it checks anything, so 180 s for
//! three nodes is where it starts: the first row's ratio is to that.

use std::io::Write as _;
use std::time::{Duration, Instant};

use clustermgr_tests::bench::{env_count, ms};
use clustermgr_tests::netns::Net;
use clustermgr_tests::slapd::Slapd;
use clustermgr_tests::standalone::{add, has, join, standalone};
use clustermgr_tests::{Controller, succeeded as ok};

const REPS_ENV: &str = "CLUSTERMGR_BENCH_REPS";
const DEFAULT_REPS: usize = 3;
const ENTRIES_ENV: &str = "CLUSTERMGR_BENCH_ENTRIES";
const DEFAULT_ENTRIES: usize = 10_000;
const PLANS: usize = 20;
/// The existing Cluster Manager's fixed sleeps for three nodes.
const PEER_S: f64 = 180.0;
const PATIENCE: Duration = Duration::from_secs(120);

/// Waits for `ok`, polling; the time it took, or why not.
fn until(what: &str, mut ok: impl FnMut() -> bool) -> Result<(), String> {
    let start = Instant::now();
    while !ok() {
        if start.elapsed() > PATIENCE {
            return Err(format!("{what} not within {} s", PATIENCE.as_secs()));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

fn apply(ctl: &Controller) -> Result<(), String> {
    let o = ctl.run(&["apply", "--yes"]);
    if o.status.success() {
        Ok(())
    } else {
        Err(format!(
            "apply failed: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ))
    }
}

/// Builds three standalone nodes into a cluster; the seconds it took.
fn build(ctl: &Controller, servers: &[Slapd]) -> Result<f64, String> {
    ok(
        ctl.run(&["cluster", "set", "ldap-replication", "on"]),
        "cluster set ldap-replication on",
    );
    let t0 = Instant::now();
    apply(ctl)?;
    for (i, s) in servers.iter().enumerate() {
        let dn = format!("cn=bench-{i},o=gluu");
        add(s, &dn, &format!("bench-{i}"));
        for other in servers {
            until("an entry on every node", || has(other, &dn))?;
        }
    }
    Ok(t0.elapsed().as_secs_f64())
}

/// Adds a node to the cluster and times its joining; `newest` is an entry every
/// joined node holds.
fn join_time(
    net: &mut Net,
    ctl: &Controller,
    servers: &mut Vec<Slapd>,
    name: &str,
    newest: &str,
) -> Result<f64, String> {
    let i = servers.len() + 1;
    servers.push(join(net, ctl, name, i));
    let t0 = Instant::now();
    apply(ctl)?;
    let me = servers.last().expect("joined");
    until("the cluster's newest entry on the new node", || {
        has(me, newest)
    })?;
    let dn = format!("cn=from-{name},o=gluu");
    add(me, &dn, &format!("from-{name}"));
    until("the new node's entry on the first", || {
        has(&servers[0], &dn)
    })?;
    Ok(t0.elapsed().as_secs_f64())
}

fn main() {
    let (mut res, started) = clustermgr_tests::bench::begin();
    let reps = env_count(REPS_ENV, DEFAULT_REPS);
    let entries = env_count(ENTRIES_ENV, DEFAULT_ENTRIES);
    let mut builds = Vec::new();
    let mut plans = Vec::new();
    let mut joins = Vec::new();
    let mut big_joins = Vec::new();
    let mut writes = Vec::new();
    let mut failures = Vec::new();
    for rep in 0..reps {
        eprintln!("rep {}/{reps}", rep + 1);
        let (mut net, ctl, mut servers) = standalone();
        match build(&ctl, &servers) {
            Ok(s) => builds.push(s),
            Err(e) => {
                failures.push(e);
                continue;
            }
        }
        for _ in 0..PLANS {
            let t0 = Instant::now();
            let o = ctl.run(&["plan"]);
            plans.push(ms(t0.elapsed()));
            if !o.status.success() {
                failures.push(format!(
                    "plan failed: {}",
                    String::from_utf8_lossy(&o.stderr)
                ));
            }
        }
        match join_time(&mut net, &ctl, &mut servers, "gluu4", "cn=bench-2,o=gluu") {
            Ok(s) => joins.push(s),
            Err(e) => failures.push(e),
        }
        // The directory grows by `entries`, written on the first node and replicated.
        let t0 = Instant::now();
        clustermgr_tests::slapd::add_many(&servers[0], "bulk", entries);
        writes.push(t0.elapsed().as_secs_f64());
        let last = format!("ou=bulk-{},o=gluu", entries - 1);
        if let Err(e) = until("the bulk entries on every node", || {
            servers.iter().all(|s| has(s, &last))
        }) {
            failures.push(e);
            continue;
        }
        match join_time(&mut net, &ctl, &mut servers, "gluu5", &last) {
            Ok(s) => big_joins.push(s),
            Err(e) => failures.push(e),
        }
    }
    res.add(
        "build3",
        "three standalone slapds to a verified replicating cluster (one apply)",
        "s",
        Ok(builds),
        Some(10.0),
    );
    res.add(
        "plan",
        "plan of the unchanged cluster, replication included (CLI, no serve)",
        "ms",
        Ok(plans),
        Some(300.0),
    );
    res.add(
        "join",
        "a fourth node joining (few entries)",
        "s",
        Ok(joins),
        Some(5.0),
    );
    res.add(
        "join_big",
        format!("a fifth node joining with {entries} more entries"),
        "s",
        Ok(big_joins),
        None,
    );
    res.add(
        "write_big",
        format!("the same {entries} entries added on the first node over one LDAP connection (each its own transaction, as a refresh writes them)"),
        "s",
        Ok(writes),
        None,
    );
    for f in failures {
        res.note(format!("failed: {f}"));
    }
    if let Some((p50, _)) = res.stats("build3") {
        res.note(format!(
            "the existing Cluster Manager sleeps 60 s per node before it checks anything: {PEER_S:.0} s for three, so ours is {:.3} of that (its figure is a lower bound; it cannot run here)",
            p50 / PEER_S
        ));
    }
    if let (Some((big, _)), Some((small, _))) = (res.stats("join_big"), res.stats("join")) {
        res.note(format!(
            "the initial refresh of {entries} entries: about {:.1} s (fifth node minus fourth)",
            big - small
        ));
    }
    let mut w = res.report_head(
        "Building the cluster on the multi-host harness",
        &format!("{reps} runs"),
        &[(
            "join_big",
            "write_big",
            "joining with the entries / writing them on one node (the disk's floor)",
        )],
    );
    w.push_str(&res.report_tail(started.elapsed()));
    print!("{w}");
    let _ = std::io::stdout().flush();
}
