//! `cargo bench -p clustermgr-tests --bench provision`: three bare hosts to a
//! provisioned, configured and healthy Gluu-like cluster with one `node add --from`,
//! `gluu install` of the stand-in Gluu on the two non-primary nodes and one `apply`, on
//! the multi-host harness (needs root, like the provisioning tests). Prints a Markdown
//! table; BENCHMARKS.md keeps the figures and the peer's sleeps.
//!
//! What runs, `CLUSTERMGR_BENCH_REPS` times (default 3), each time on fresh hosts:
//! 1. **With packages.** Three Gluu harness hosts (`gluu1` the primary). Untimed first:
//!    `gluu1` made the primary an administrator set up with Gluu's own setup
//!    (`provision::primary`: the stand-in `gluu-server` of `tests/src/provision.rs`
//!    installed, its setup encrypted, its certificates, its `httpd` and `opendj` ones
//!    then replaced by one valid for years); each host with the oxAuth stand-in of
//!    `tests/src/gluu.rs` on its 443 presenting `gluu1`'s certificate (the cluster's:
//!    `gluu install` gives the others the primary's), the Gluu container
//!    laid out around it on `gluu1` only (on `gluu2` and `gluu3` nothing of Gluu but the
//!    stand-in's certificate, so that they do not run Gluu yet); and every host made
//!    bare of csync2 and any time service (`provision::bare`). Timed: `node add --from`
//!    (SSH bootstrap of the three). Then, untimed: the cluster's hostname,
//!    `ldap-replication on`, the package directory (Debian's csync2 and chrony and the
//!    stand-in `gluu-server`), and on `gluu2` and `gluu3` Java for the cacerts imports
//!    (`container::java`, its `/etc/gluu` removed, as the `gluu install` test does).
//!    Timed: `gluu install gluu2` and then `gluu install gluu3`, each with
//!    `--setup-password-file` (the package from the package directory, the container
//!    enabled and started, the stand-in's `setup.py` with the primary's properties, the
//!    primary's certificates and schema laid over, two certificates trusted in Java's
//!    cacerts by the real keytool, the container restarted). Then, untimed, as a Gluu
//!    install leaves them: oxAuth's `custom` directory (which csync2 replicates; the
//!    stand-in's setup does not make it), and on each host a standalone slapd with a
//!    Gluu tree of its own and the agent bound to it (`standalone::gluu_node`). Timed:
//!    the one `apply --yes`
//!    (installs csync2 and chrony from the package directory, writes csync2's set-up
//!    and `/etc/hosts`, makes the slapds one replicating cluster and writes Gluu's
//!    cluster-wide settings), and from its end until `clustermgr health` (no `serve`:
//!    each call asks every agent for a round now) reports every check of every node ok,
//!    polled (50 ms between calls) with a deadline. That window includes waiting for
//!    csync2's listeners and running the generated cron job's `csync2 -x` once on each
//!    node (what cron does within two minutes; the harness has no cron), timed on its
//!    own too, and the wait for the heartbeats: each agent writes its heartbeat every
//!    10 s counted from its own start, so after replication is built the peers wait
//!    for each node's next beat, up to 10 s depending on where the apply ends in that
//!    cycle; the first round with every check but `heartbeat` ok is timed on its own.
//!    Inside the apply, each agent's log gives when its apply request arrived and when
//!    it kept the last uploaded package file: what came before the agents' apply
//!    (planning, package uploads) is split from the agents' own apply.
//! 2. **Without packages**, the same set-up on hosts that keep the machine's csync2
//!    (not made bare, no package directory): `node add --from` and the same `apply`
//!    minus the package entries. The difference of the two applies is what packages
//!    cost (upload and `dpkg -i`).
//!
//! The order changed when `gluu install` was added: the primary's set-up comes before
//! the bootstrap, and the two installs (with the Java they need, untimed) between the
//! bootstrap and the slapds, as an administrator would install Gluu before building
//! the cluster. `bootstrap`, `apply` and `synced` time the same commands as before;
//! `healthy` (and with it `total`) moved, as the apply now ends elsewhere in the
//! agents' 10 s heartbeat cycle (see above). `total_with_gluu` adds the two installs.
//!
//! The peer, Gluu's own Cluster Manager (branch 4.2), cannot run here (it needs Gluu);
//! its fixed sleeps on the same path are summed in BENCHMARKS.md, and the ratio to them
//! is in the notes.

use std::io::Write as _;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clustermgr_tests::bench::env_count;
use clustermgr_tests::gluu::{CUSTOM, GluuCluster, HOSTNAME, HTTPD_CRT, HTTPD_KEY, NODES};
use clustermgr_tests::netns::{Host, Net};
use clustermgr_tests::provision::{
    ADMIN_PASSWORD, bare, gluu_server_deb, installed, package_dir, primary,
};
use clustermgr_tests::slapd::Slapd;
use clustermgr_tests::standalone::gluu_node;
use clustermgr_tests::{Controller, stderr, stdout};

const REPS_ENV: &str = "CLUSTERMGR_BENCH_REPS";
const DEFAULT_REPS: usize = 3;
/// How long the cluster may take to report every check ok after the apply.
const PATIENCE: Duration = Duration::from_secs(180);
/// The existing Cluster Manager's fixed sleeps on the path of this work (BENCHMARKS.md
/// lists them): replication's 20 s and 40 s, once for all servers.
const PEER_CORE_S: f64 = 60.0;
/// The same with the 13 s of sleeps per server in its Gluu install task, the one place
/// it installs the time service (ntpdate).
const PEER_WITH_INSTALL_S: f64 = 99.0;
/// Its Gluu install task's fixed sleeps for one server (`tasks/server.py:542`, `:595`,
/// `:677`, `:707`: 1 + 10 + 1 + 1 s).
const PEER_INSTALL_PER_NODE_S: f64 = 13.0;
/// The nodes `gluu install` sets up (the primary is set up by hand, as with the peer's
/// wizard, whose install task would run on it too).
const INSTALLED: [&str; 2] = ["gluu2", "gluu3"];

/// One run's figures, seconds.
#[derive(Default)]
struct Sample {
    bootstrap: f64,
    /// `gluu install` of each of [`INSTALLED`], one after the other.
    gluu_install: [f64; 2],
    /// From the first install's start to the second's end.
    gluu_both: f64,
    apply: f64,
    /// From the apply's start to the last agent's apply request (planning and uploads).
    before_agents: Option<f64>,
    /// From the apply's start to the last package file kept by an agent.
    uploaded: Option<f64>,
    /// From the apply's end: csync2 listening everywhere and the first sync run.
    synced: f64,
    /// From the apply's end to every check ok.
    healthy: f64,
    /// From the apply's end to the first round with every check but `heartbeat` ok
    /// (the heartbeats wait for each agent's next beat, up to its 10 s interval).
    healthy_but_heartbeat: Option<f64>,
    /// The longest `dpkg` ran on a host in the apply, whole seconds (`/var/log/dpkg.log`).
    dpkg: Option<f64>,
    /// The checks not ok in the last round before all were, with how long after the
    /// apply's end that round ended.
    held_by: String,
}

fn run(o: std::process::Output, what: &str) -> Result<String, String> {
    if o.status.success() {
        Ok(stdout(&o))
    } else {
        Err(format!(
            "{what} failed: {} {}",
            stdout(&o).trim(),
            stderr(&o).trim()
        ))
    }
}

/// Polls `cond` every 50 ms until it holds or `patience` runs out.
fn until(what: &str, patience: Duration, mut cond: impl FnMut() -> bool) -> Result<(), String> {
    let start = Instant::now();
    while !cond() {
        if start.elapsed() > patience {
            return Err(format!("{what} not within {} s", patience.as_secs()));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// The oxAuth stand-in of `tests/src/gluu.rs` (a private function there): Apache's
/// certificate and key (`pair`), nginx on the host's 443 answering oxAuth's health
/// endpoint with them, and with `laid_out` the container Gluu's setup leaves around
/// it (oxAuth's marker and `custom` directory, `/etc/gluu/conf`); without, the host
/// does not run Gluu yet (`gluu install` refuses a host that does), and its nginx
/// already presents the certificate the install lays down. Started before the host is
/// made bare (which takes nginx away), as the provisioning test does.
fn start_oxauth(h: &Host, (crt, key): &(String, String), laid_out: bool) -> Result<(), String> {
    let conf = "/opt/gluu-server/oxauth-standin.conf";
    if laid_out {
        h.sh(&format!(
            "mkdir -p {CUSTOM} /opt/gluu-server/etc/gluu/conf /opt/gluu-server/opt/gluu/jetty/oxauth /opt/gluu-server/etc/certs"
        ));
    } else {
        h.sh("mkdir -p /opt/gluu-server/etc/certs");
    }
    std::fs::write(h.path(HTTPD_CRT), crt).map_err(|e| e.to_string())?;
    std::fs::write(h.path(HTTPD_KEY), key).map_err(|e| e.to_string())?;
    std::fs::write(
        h.path(conf),
        format!(
            "pid /run/oxauth-standin.pid;\nerror_log /var/log/oxauth-standin.log;\nevents {{}}\nhttp {{\n access_log off;\n server {{\n  listen 443 ssl;\n  ssl_certificate {HTTPD_CRT};\n  ssl_certificate_key {HTTPD_KEY};\n  location = /oxauth/restv1/health-check {{ default_type application/json; return 200 '{{\"status\": \"running\", \"db_status\": \"online\"}}'; }}\n }}\n}}\n"
        ),
    )
    .map_err(|e| e.to_string())?;
    h.sh(&format!("nginx -c {conf}"));
    until(
        &format!("the oxAuth stand-in on {}", h.name),
        Duration::from_secs(10),
        || h.tcp_open(443),
    )
}

/// Unix seconds of an RFC 3339 UTC stamp as the agent's log writes it
/// (`2026-12-07T10:00:01.123456Z`).
fn unix_secs(stamp: &str) -> Option<f64> {
    let (date, time) = stamp.strip_suffix('Z')?.split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let mut t = time.split(':');
    let (h, mi) = (
        t.next()?.parse::<i64>().ok()?,
        t.next()?.parse::<i64>().ok()?,
    );
    let s: f64 = t.next()?.parse().ok()?;
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some((days * 86_400 + h * 3600 + mi * 60) as f64 + s)
}

/// From each host's agent log, the seconds after `since` (Unix seconds) of the latest
/// first `apply of revision` line and of the latest `package file ... kept` line.
fn agent_phases(net: &Net, since: f64) -> (Option<f64>, Option<f64>) {
    let mut request: Option<f64> = None;
    let mut kept: Option<f64> = None;
    for h in net.hosts() {
        let log =
            std::fs::read_to_string(h.path("/var/log/clustermgr-agent.log")).unwrap_or_default();
        let mut first_apply = None;
        for line in log.lines() {
            let Some(t) = line.split_whitespace().next().and_then(unix_secs) else {
                continue;
            };
            if t < since {
                continue;
            }
            if first_apply.is_none() && line.contains("apply of revision") {
                first_apply = Some(t - since);
            }
            if line.contains("package file") && line.contains("kept") {
                kept = Some(kept.map_or(t - since, |k: f64| k.max(t - since)));
            }
        }
        if let Some(a) = first_apply {
            request = Some(request.map_or(a, |r| r.max(a)));
        }
    }
    (request, kept)
}

/// The longest span of `dpkg.log` lines at or after `since` (Unix seconds) on a host:
/// how long `dpkg` ran there, in whole seconds (its log's resolution).
fn dpkg_span(net: &Net, since: f64) -> Option<f64> {
    let mut longest: Option<f64> = None;
    for h in net.hosts() {
        let log = std::fs::read_to_string(h.path("/var/log/dpkg.log")).unwrap_or_default();
        let stamps: Vec<f64> = log
            .lines()
            .filter_map(|l| {
                let mut w = l.split_whitespace();
                let (date, time) = (w.next()?, w.next()?);
                unix_secs(&format!("{date}T{time}Z"))
            })
            .filter(|t| *t >= since.floor())
            .collect();
        if let (Some(first), Some(last)) = (stamps.first(), stamps.last()) {
            let span = last - first;
            longest = Some(longest.map_or(span, |l| l.max(span)));
        }
    }
    longest
}

fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// One run on fresh hosts: with the package directory `packages` (hosts made bare, the
/// stand-in Gluu installed on [`INSTALLED`] with `gluu install`), or without (hosts
/// keep the machine's csync2, no Gluu install), timed up to the end of the apply. With
/// packages it goes on until every check is ok.
fn once(packages: Option<&Path>) -> Result<Sample, String> {
    let mut s = Sample::default();
    let mut net = Net::new();
    for n in NODES {
        net.add_host(n);
    }
    // With packages, gluu1 is the primary set up by hand, and its certificate is the
    // cluster's: the stand-ins present it, and `gluu install` gives it to the others.
    // The primary's own (30 days, which health rightly warns of) is replaced by one
    // valid for years, as its `httpd` and `opendj` certificates.
    let parent = packages.and_then(Path::parent);
    let cluster_pair = match parent {
        Some(parent) => {
            let h = net.host(NODES[0]);
            primary(h, parent);
            let pair = clustermgr_tests::slapd::self_signed(&[HOSTNAME]);
            for p in [HTTPD_CRT, "/opt/gluu-server/etc/certs/opendj.crt"] {
                std::fs::write(h.path(p), &pair.0).map_err(|e| e.to_string())?;
            }
            std::fs::write(h.path(HTTPD_KEY), &pair.1).map_err(|e| e.to_string())?;
            Some(pair)
        }
        None => None,
    };
    for h in net.hosts() {
        match &cluster_pair {
            Some(pair) => start_oxauth(h, pair, h.name == NODES[0])?,
            None => start_oxauth(h, &clustermgr_tests::slapd::self_signed(&[HOSTNAME]), true)?,
        }
        if packages.is_some() {
            bare(h);
        }
    }
    let ctl = Controller::new();
    let inventory = ctl.inventory(&net, "gluu1").display().to_string();
    let t = Instant::now();
    let o = ctl.run(&["node", "add", "--from", &inventory]);
    s.bootstrap = t.elapsed().as_secs_f64();
    run(o, "node add --from")?;

    let mut settings = vec![("hostname", HOSTNAME.to_string())];
    settings.push(("ldap-replication", "on".into()));
    if let Some(dir) = packages {
        settings.push(("package-dir", dir.display().to_string()));
    }
    for (k, v) in &settings {
        run(ctl.run(&["cluster", "set", k, v]), "cluster set")?;
    }
    if let Some(parent) = parent {
        gluu_install(&net, &ctl, parent, &mut s)?;
    }
    // The machine's own disks are not the cluster's to judge (as in tests/src/gluu.rs).
    std::fs::write(
        ctl.home.join("controller.toml"),
        "[health]\ndisk_warning_pct = 100\ndisk_critical_pct = 100\n",
    )
    .map_err(|e| e.to_string())?;
    let servers: Vec<Slapd> = net
        .hosts()
        .iter()
        .enumerate()
        .map(|(i, h)| gluu_node(h, i + 1))
        .collect();

    let since = now_secs();
    let t = Instant::now();
    let o = ctl.run(&["apply", "--yes"]);
    s.apply = t.elapsed().as_secs_f64();
    let end = Instant::now();
    run(o, "apply")?;
    (s.before_agents, s.uploaded) = agent_phases(&net, since);
    s.dpkg = dpkg_span(&net, since);
    if packages.is_none() {
        return Ok(s);
    }
    for h in net.hosts() {
        for p in ["csync2", "chrony"] {
            if installed(h, p).is_none() {
                return Err(format!("{p} not installed on {} by the apply", h.name));
            }
        }
    }

    for h in net.hosts() {
        until(&format!("csync2 listening on {}", h.name), PATIENCE, || {
            h.tcp_open(30865)
        })?;
    }
    let alerts = ctl.home.join("unused-alerts.jsonl");
    let c = GluuCluster {
        net,
        ctl,
        servers,
        serve: None,
        alerts,
        interval: Duration::from_secs(10),
    };
    // What the generated cron line runs within two minutes (the harness has no cron).
    for n in NODES {
        let o = c.try_sync(n);
        if !o.status.success() {
            return Err(format!("csync2 -x on {n}: {}", stderr(&o)));
        }
    }
    s.synced = end.elapsed().as_secs_f64();
    let mut last = Vec::new();
    let mut held = (String::new(), 0.0);
    let mut rounds = 0;
    let ready = until("every check ok", PATIENCE, || {
        let (code, rows) = c.health();
        rounds += 1;
        if s.healthy_but_heartbeat.is_none()
            && !rows.is_empty()
            && rows
                .iter()
                .all(|r| r.level == "ok" || r.check == "heartbeat")
        {
            s.healthy_but_heartbeat = Some(end.elapsed().as_secs_f64());
        }
        let ok = code == 0 && !rows.is_empty() && rows.iter().all(|r| r.level == "ok");
        if !ok {
            let bad: Vec<String> = rows
                .iter()
                .filter(|r| r.level != "ok")
                .map(|r| format!("{} {} {} ({})", r.node, r.check, r.level, r.reason))
                .collect();
            held = (bad.join("; "), end.elapsed().as_secs_f64());
        }
        last = rows;
        ok
    });
    s.healthy = end.elapsed().as_secs_f64();
    if let Err(e) = ready {
        return Err(format!("{e}: {}", held.0));
    }
    s.held_by = if held.0.is_empty() {
        "nothing: the first round was all ok".into()
    } else {
        format!(
            "{} (the last round with it ended {:.2} s after the apply)",
            held.0, held.1
        )
    };
    eprintln!(
        "  healthy after {rounds} health calls, {} checks ok; the last not ok: {}",
        last.len(),
        s.held_by
    );
    Ok(s)
}

/// `gluu install` of the stand-in on each of [`INSTALLED`] (timed, one after the
/// other), after giving them Java for the cacerts imports as the `gluu install` test
/// does; then checks each is set up with the primary's certificate (the one its oxAuth
/// stand-in presents) and gives it oxAuth's `custom` directory, which Gluu's setup
/// makes and csync2 replicates.
fn gluu_install(net: &Net, ctl: &Controller, parent: &Path, s: &mut Sample) -> Result<(), String> {
    for n in INSTALLED {
        let h = net.host(n);
        clustermgr_tests::container::java(h);
        h.sh("rm -rf /opt/gluu-server/etc/gluu");
    }
    let pw = parent.join("admin-password");
    std::fs::write(&pw, format!("{ADMIN_PASSWORD}\n")).map_err(|e| e.to_string())?;
    std::fs::set_permissions(&pw, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .map_err(|e| e.to_string())?;
    let pw = pw.display().to_string();
    let both = Instant::now();
    for (i, n) in INSTALLED.iter().enumerate() {
        let t = Instant::now();
        let o = ctl.run(&["gluu", "install", n, "--setup-password-file", &pw]);
        s.gluu_install[i] = t.elapsed().as_secs_f64();
        let said = run(o, &format!("gluu install {n}"))?;
        if !said.contains(&format!("Gluu is installed on {n}")) {
            return Err(format!("gluu install {n} said: {said}"));
        }
    }
    s.gluu_both = both.elapsed().as_secs_f64();
    let primary_crt =
        std::fs::read(net.host(NODES[0]).path(HTTPD_CRT)).map_err(|e| e.to_string())?;
    for n in INSTALLED {
        let h = net.host(n);
        if std::fs::read(h.path(HTTPD_CRT)).ok().as_deref() != Some(primary_crt.as_slice()) {
            return Err(format!(
                "{n}'s httpd.crt is not the primary's after gluu install"
            ));
        }
        h.sh(&format!("mkdir -p {CUSTOM}"));
    }
    Ok(())
}

fn main() {
    let (mut res, started) = clustermgr_tests::bench::begin();
    let reps = env_count(REPS_ENV, DEFAULT_REPS);
    let parent = tempfile::tempdir().expect("tempdir");
    let dir = package_dir(parent.path(), &["csync2", "chrony"]);
    gluu_server_deb(parent.path());
    let mut with: Vec<Sample> = Vec::new();
    let mut without: Vec<Sample> = Vec::new();
    let mut failures = Vec::new();
    for rep in 0..reps {
        eprintln!("rep {}/{reps}: with packages", rep + 1);
        match once(Some(&dir)) {
            Ok(s) => {
                eprintln!(
                    "  bootstrap {:.2} s, gluu install {:.2} s + {:.2} s, apply {:.2} s, healthy {:.2} s after",
                    s.bootstrap, s.gluu_install[0], s.gluu_install[1], s.apply, s.healthy
                );
                with.push(s);
            }
            Err(e) => failures.push(format!("with packages: {e}")),
        }
        eprintln!("rep {}/{reps}: without packages", rep + 1);
        match once(None) {
            Ok(s) => {
                eprintln!("  bootstrap {:.2} s, apply {:.2} s", s.bootstrap, s.apply);
                without.push(s);
            }
            Err(e) => failures.push(format!("without packages: {e}")),
        }
    }
    let col = |v: &[Sample], f: fn(&Sample) -> f64| Ok(v.iter().map(f).collect::<Vec<f64>>());
    let opt = |v: &[Sample], f: fn(&Sample) -> Option<f64>| {
        let got: Vec<f64> = v.iter().filter_map(f).collect();
        if got.is_empty() {
            Err("no log lines found".to_string())
        } else {
            Ok(got)
        }
    };
    res.add(
        "bootstrap",
        "`node add --from`: SSH bootstrap of the three bare hosts",
        "s",
        col(&with, |s| s.bootstrap),
        None,
    );
    res.add(
        "gluu_install_gluu2",
        "`gluu install gluu2 --setup-password-file`: the stand-in gluu-server from the package directory, its setup with the primary's properties, the primary's certificates and schema, two cacerts imports (real keytool), restart",
        "s",
        col(&with, |s| s.gluu_install[0]),
        None,
    );
    res.add(
        "gluu_install_gluu3",
        "the same on gluu3, right after",
        "s",
        col(&with, |s| s.gluu_install[1]),
        None,
    );
    res.add(
        "gluu_install",
        "both installs, one after the other (wall time)",
        "s",
        col(&with, |s| s.gluu_both),
        None,
    );
    res.add(
        "apply",
        "the one `apply`: csync2 and chrony from the package directory, csync2 set up, /etc/hosts, replication, Gluu's settings",
        "s",
        col(&with, |s| s.apply),
        None,
    );
    res.add(
        "apply_uploaded",
        "of which from its start to the last package file kept (agents' logs: planning and upload)",
        "s",
        opt(&with, |s| s.uploaded),
        None,
    );
    res.add(
        "apply_before",
        "of which from its start to the last agent's apply request (agents' logs)",
        "s",
        opt(&with, |s| s.before_agents),
        None,
    );
    res.add(
        "dpkg",
        "of which the longest `dpkg` ran on a host (its log's whole seconds: +-1 s)",
        "s",
        opt(&with, |s| s.dpkg),
        None,
    );
    res.add(
        "synced",
        "from the apply's end: csync2 listening on all three and the cron job's first `csync2 -x` run on each",
        "s",
        col(&with, |s| s.synced),
        None,
    );
    res.add(
        "healthy",
        "from the apply's end until `health` reports every check ok (includes `synced`)",
        "s",
        col(&with, |s| s.healthy),
        None,
    );
    res.add(
        "healthy_but_heartbeat",
        "of which until every check but `heartbeat` is ok (the rest is waiting for each agent's next heartbeat, written every 10 s from the agent's start)",
        "s",
        opt(&with, |s| s.healthy_but_heartbeat),
        None,
    );
    res.add(
        "total",
        "bootstrap + apply + until healthy",
        "s",
        col(&with, |s| s.bootstrap + s.apply + s.healthy),
        None,
    );
    res.add(
        "total_with_gluu",
        "bootstrap + both `gluu install` + apply + until healthy",
        "s",
        col(&with, |s| s.bootstrap + s.gluu_both + s.apply + s.healthy),
        None,
    );
    res.add(
        "bootstrap_nopkg",
        "context: `node add --from` on three hosts not made bare (second setup)",
        "s",
        col(&without, |s| s.bootstrap),
        None,
    );
    res.add(
        "apply_nopkg",
        "the same apply without packages (hosts keep the machine's csync2, no package directory)",
        "s",
        col(&without, |s| s.apply),
        None,
    );
    res.add(
        "apply_before_nopkg",
        "of which from its start to the last agent's apply request (agents' logs)",
        "s",
        opt(&without, |s| s.before_agents),
        None,
    );
    for f in failures {
        res.note(format!("failed: {f}"));
    }
    for (i, s) in with.iter().enumerate() {
        res.note(format!(
            "run {}: not ok in the last round before all were: {}",
            i + 1,
            s.held_by
        ));
    }
    if let (Some((a, _)), Some((b, _))) = (res.stats("apply"), res.stats("apply_nopkg")) {
        res.note(format!(
            "packages (upload and install of csync2 and chrony on three nodes) cost about {:.2} s of the apply (p50 with minus p50 without)",
            a - b
        ));
    }
    if let Some((t, _)) = res.stats("total") {
        res.note(format!(
            "the existing Cluster Manager's fixed sleeps on this path: {PEER_CORE_S:.0} s (replication), {PEER_WITH_INSTALL_S:.0} s with its Gluu install task's sleeps (where it installs ntpdate); ours is {:.3} and {:.3} of them (their sleeps are a lower bound of their time; it cannot run here)",
            t / PEER_CORE_S,
            t / PEER_WITH_INSTALL_S
        ));
    }
    let per_node: Vec<f64> = with.iter().flat_map(|s| s.gluu_install).collect();
    if !per_node.is_empty() {
        let (p50, _) = clustermgr_tests::bench::stats(&per_node);
        res.note(format!(
            "one `gluu install` (p50 of the {} installs) took {p50:.2} s, {:.3} of the {PEER_INSTALL_PER_NODE_S:.0} s its Gluu install task sleeps per server; the stand-in's setup takes no time, Gluu's real setup.py takes minutes in both",
            per_node.len(),
            p50 / PEER_INSTALL_PER_NODE_S
        ));
    }
    if let Some((t, _)) = res.stats("total_with_gluu") {
        let peer = PEER_CORE_S + INSTALLED.len() as f64 * PEER_INSTALL_PER_NODE_S;
        res.note(format!(
            "with the two installs: {t:.2} s against the peer's {peer:.0} s of sleeps for replication and its install task on the same two nodes ({:.3} of them)",
            t / peer
        ));
    }
    let mut w = res.report_head(
        "Three bare hosts to a healthy cluster (with the stand-in Gluu installed) on the multi-host harness",
        &format!("{reps} runs each"),
        &[
            ("apply_nopkg", "apply", "apply without packages / with"),
            ("bootstrap", "total", "bootstrap / total"),
            ("gluu_install", "total_with_gluu", "both gluu installs / total with them"),
            ("apply", "total", "apply / total"),
            ("healthy", "total", "until healthy / total"),
        ],
    );
    w.push_str(&res.report_tail(started.elapsed()));
    print!("{w}");
    let _ = std::io::stdout().flush();
}
