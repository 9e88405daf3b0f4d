//! Cluster health on the multi-host harness with the real programs: three Gluu hosts
//! running slapd (multi-provider, set up through `cn=config`) and csync2 as `apply`
//! configures it, watched by `serve`. Healthy, every check is ok; each fault is
//! reported within two check intervals with the right verdict, clears when healed, and
//! reaches the alert command once.

use std::time::Duration;

use clustermgr_tests::gluu::{CUSTOM, GluuCluster, HTTPD_CRT, NODES, Row};

const INTERVAL_SECS: u64 = 2;

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// Where the events stood before a fault: the newest event's id and the time.
struct Mark {
    after: u64,
    t0_ms: i64,
}

fn mark(c: &GluuCluster) -> Mark {
    Mark {
        after: c.last_event(),
        t0_ms: GluuCluster::now_ms(),
    }
}

/// Waits for the event `first` names after `m`, and checks that `serve` saw it within
/// two intervals and the round's own time to answer (its deadline is half a second
/// under the interval).
async fn detected(c: &GluuCluster, m: &Mark, what: &str, first: impl Fn(&Row) -> bool) -> Row {
    let (e, took) = c.wait_event(m.after, m.t0_ms, secs(30), what, first).await;
    let limit = secs(2 * INTERVAL_SECS) + Duration::from_millis(1500);
    assert!(took <= limit, "{what}: seen after {took:?}: {e:?}");
    eprintln!(
        "{what}: {} {} {} -> {} after {took:?}: {}",
        e.node, e.check, e.from, e.level, e.reason
    );
    e
}

fn is(e: &Row, node: &str, check: &str, levels: &[&str]) -> bool {
    e.node == node && e.check == check && levels.contains(&e.level.as_str())
}

/// The events after `m`.
fn since(c: &GluuCluster, m: &Mark) -> Vec<Row> {
    c.events().into_iter().filter(|e| e.id > m.after).collect()
}

/// No event after `m` turned a check of `nodes` to warning or critical.
fn stayed_green(c: &GluuCluster, m: &Mark, nodes: &[&str]) {
    let bad: Vec<Row> = since(c, m)
        .into_iter()
        .filter(|e| nodes.contains(&e.node.as_str()) && e.level != "ok")
        .collect();
    assert!(bad.is_empty(), "{nodes:?} should have stayed ok: {bad:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_on_real_hosts_are_reported_within_two_intervals_and_alerted_once() {
    let mut c = GluuCluster::start(INTERVAL_SECS).await;

    // Healthy: every check of every node ok, exit 0; the port matrix all open.
    c.settled(secs(60)).await;
    let (code, rows) = c.health();
    assert_eq!(code, 0, "{rows:#?}");
    for n in NODES {
        for check in [
            "agent",
            "clock",
            "disk",
            "ports",
            "csync2",
            "certs",
            "services",
            "ldap",
            "ldap-links",
            "ldap-csn",
            "heartbeat",
        ] {
            assert!(
                rows.iter()
                    .any(|r| r.node == n && r.check == check && r.level == "ok"),
                "{n} {check}: {rows:#?}"
            );
        }
    }
    let services = rows
        .iter()
        .find(|r| r.node == "gluu1" && r.check == "services")
        .expect("a services verdict");
    assert!(
        services
            .reason
            .starts_with("oxAuth on the node answers (200 in"),
        "{services:?}"
    );
    let ports = c.ctl.run(&["ports"]);
    let text = String::from_utf8_lossy(&ports.stdout).into_owned();
    assert_eq!(ports.status.code(), Some(0), "{text}");
    assert!(text.contains("12 of 12 open, 0 missing"), "{text}");
    let start = mark(&c);

    // oxAuth down on gluu1: its health endpoint does not answer.
    let m = mark(&c);
    c.stop_oxauth("gluu1");
    let e = detected(&c, &m, "oxAuth down", |e| {
        is(e, "gluu1", "services", &["critical"])
    })
    .await;
    assert!(
        e.reason.starts_with(
            "oxAuth on the node: GET https://idp.example.org:443/oxauth/restv1/health-check"
        ),
        "{e:?}"
    );
    stayed_green(&c, &m, &["gluu2", "gluu3"]);
    c.start_oxauth("gluu1");
    c.settled(secs(60)).await;

    // slapd stopped on gluu3: its LDAP is critical.
    let m = mark(&c);
    c.slapd("gluu3").kill();
    let e = detected(&c, &m, "slapd stopped", |e| {
        is(e, "gluu3", "ldap", &["critical"])
    })
    .await;
    assert!(e.reason.contains("cannot connect"), "{e:?}");
    c.slapd("gluu3").restart();
    c.settled(secs(60)).await;

    // The link between gluu1 and gluu2 cut, the controller reaching both: their ports
    // to each other are missing at once, and syncrepl's keepalive breaks the consumer
    // while the CSNs still agree (changes flow around through gluu3).
    let m = mark(&c);
    c.cut("gluu1", "gluu2");
    let e = detected(&c, &m, "link cut", |e| {
        is(e, "gluu1", "ports", &["critical"])
    })
    .await;
    assert!(e.reason.contains("gluu2:1636 (ldaps)"), "{e:?}");
    c.wait_event(m.after, m.t0_ms, secs(30), "the consumer to break", |e| {
        is(e, "gluu1", "ldap-links", &["critical"])
    })
    .await;
    let (_, rows) = c.health();
    for n in NODES {
        let csn = rows
            .iter()
            .find(|r| r.node == n && r.check == "ldap-csn")
            .expect("a CSN verdict");
        assert_eq!(csn.level, "ok", "CSNs agree around the cut: {csn:?}");
    }
    stayed_green(&c, &m, &["gluu3"]);
    c.heal();
    c.settled(secs(60)).await;

    // gluu3 partitioned from its peers while gluu1 writes: behind, then catching up.
    let m = mark(&c);
    c.partition("gluu3");
    c.write_entries("gluu1", "partition", 5);
    detected(&c, &m, "partitioned and behind", |e| {
        is(e, "gluu3", "ldap-csn", &["warning", "critical"])
    })
    .await;
    let healed = mark(&c);
    c.heal();
    c.wait_event(
        healed.after,
        healed.t0_ms,
        secs(60),
        "gluu3 to catch up",
        |e| is(e, "gluu3", "ldap-csn", &["ok"]),
    )
    .await;
    c.settled(secs(60)).await;

    // slapd frozen on gluu2: searches time out; the agent still answers.
    let m = mark(&c);
    let pid = c.slapd("gluu2").pid().to_string();
    let stop = |sig: &str| {
        let ok = std::process::Command::new("kill")
            .args([sig, &pid])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill {sig}");
    };
    stop("-STOP");
    let e = detected(&c, &m, "slapd frozen", |e| {
        is(e, "gluu2", "ldap", &["critical"])
    })
    .await;
    assert!(e.reason.contains("no answer within"), "{e:?}");
    assert!(
        !since(&c, &m)
            .iter()
            .any(|e| e.node == "gluu2" && e.check == "agent"),
        "the agent kept answering"
    );
    stop("-CONT");
    c.settled(secs(60)).await;

    // The csync2 listener stopped on gluu2: critical there, and its port missing for
    // its peers.
    let m = mark(&c);
    c.host("gluu2").sh("/etc/init.d/clustermgr-csync2 stop");
    let e = detected(&c, &m, "csync2 listener stopped", |e| {
        is(e, "gluu2", "csync2", &["critical"])
    })
    .await;
    assert!(e.reason.contains("30865"), "{e:?}");
    c.wait_event(m.after, m.t0_ms, secs(30), "the peers' ports", |e| {
        is(e, "gluu1", "ports", &["critical"]) && e.reason.contains("gluu2:30865 (csync2)")
    })
    .await;
    c.host("gluu2").sh("/etc/init.d/clustermgr-csync2 start");
    c.settled(secs(60)).await;

    // A file changed on gluu1 and not yet synced: a warning naming it, until the
    // cron job's sync runs.
    let m = mark(&c);
    c.host("gluu1")
        .sh(&format!("echo changed > {CUSTOM}/login.xhtml"));
    let e = detected(&c, &m, "a file not yet synced", |e| {
        is(e, "gluu1", "csync2", &["warning"])
    })
    .await;
    assert!(
        e.reason.contains("login.xhtml") && e.reason.contains("gluu2, gluu3"),
        "{e:?}"
    );
    c.sync("gluu1");
    c.settled(secs(60)).await;
    assert_eq!(
        std::fs::read_to_string(c.host("gluu3").path(&format!("{CUSTOM}/login.xhtml"))).ok(),
        Some("changed\n".into())
    );

    // A conflict: one file edited on two hosts. `auto younger` keeps the younger edit,
    // and the older side's copy lands in its backup directory, which its check names.
    let f = format!("{CUSTOM}/conflict.txt");
    c.host("gluu2")
        .sh(&format!("echo older > {f} && touch -d '-1 min' {f}"));
    c.host("gluu1").sh(&format!("echo younger > {f}"));
    let log = |n: &str| {
        std::fs::read_to_string(c.host(n).path("/var/log/csync2.log")).unwrap_or_default()
    };
    let lost = c.try_sync("gluu2");
    assert!(!lost.status.success(), "the older edit cannot win");
    assert!(
        log("gluu2").contains("Lost 'younger/older' test"),
        "{}",
        log("gluu2")
    );
    c.sync("gluu1");
    assert!(
        log("gluu1").contains("Won 'younger/older' test"),
        "{}",
        log("gluu1")
    );
    for n in NODES {
        assert_eq!(
            std::fs::read_to_string(c.host(n).path(&f)).ok(),
            Some("younger\n".into()),
            "on {n}"
        );
    }
    clustermgr_tests::eventually("the lost side's kept copy named", secs(30), || {
        let (_, rows) = c.health();
        rows.iter().any(|r| {
            r.node == "gluu2"
                && r.check == "csync2"
                && r.reason.contains("where a peer's version replaced a file (a lost conflict's among them), newest /var/backups/csync2")
                && r.reason.contains("conflict.txt")
        })
    })
    .await;
    let _ = c.try_sync("gluu2");
    c.settled(secs(60)).await;

    // LDAPS blocked from gluu1 to gluu2 (replication here runs on 389): only gluu1's
    // row of the matrix is missing it.
    let m = mark(&c);
    let g1 = c.host("gluu1").ip;
    c.host("gluu2")
        .drop_incoming(&[format!("ip saddr {g1} tcp dport 1636")]);
    let e = detected(&c, &m, "a port blocked", |e| {
        is(e, "gluu1", "ports", &["critical"])
    })
    .await;
    assert_eq!(
        e.reason, "cannot reach gluu2:1636 (ldaps): no answer within 1 s",
        "{e:?}"
    );
    let ports = c.ctl.run(&["ports"]);
    let text = String::from_utf8_lossy(&ports.stdout).into_owned();
    assert_eq!(ports.status.code(), Some(2), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("gluu1") && l.contains("gluu2") && l.contains("MISSING")),
        "{text}"
    );
    assert!(text.contains("11 of 12 open, 1 missing"), "{text}");
    stayed_green(&c, &m, &["gluu2", "gluu3"]);
    c.heal();
    c.settled(secs(60)).await;

    // The cluster's TLS certificate on gluu2 three days from expiry: critical, named.
    let m = mark(&c);
    let crt = HTTPD_CRT;
    c.host("gluu2").sh(&format!(
        "cp {crt} {crt}.good && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3 -subj /CN=idp.example.org -keyout /tmp/httpd.key -out {crt} 2>/dev/null"
    ));
    let e = detected(&c, &m, "a certificate near expiry", |e| {
        is(e, "gluu2", "certs", &["critical"])
    })
    .await;
    assert!(
        e.reason.contains("cluster TLS certificate (idp.example.org, /opt/gluu-server/etc/certs/httpd.crt) expires in 2 days"),
        "{e:?}"
    );
    c.host("gluu2").sh(&format!("mv {crt}.good {crt}"));
    c.settled(secs(60)).await;

    // The controller cut from gluu3's agent: unreachable, its own checks unknown, and
    // nothing else turns red.
    let m = mark(&c);
    let gateway = c.net.gateway();
    c.host("gluu3")
        .drop_incoming(&[format!("ip saddr {gateway}")]);
    detected(&c, &m, "the controller cut from an agent", |e| {
        is(e, "gluu3", "agent", &["critical"])
    })
    .await;
    // `health` (serve's latest round) agrees: gluu3 unreachable, its peers entirely ok.
    clustermgr_tests::eventually("a round to agree", secs(30), || {
        let (_, rows) = c.health();
        rows.iter()
            .any(|r| r.node == "gluu3" && r.check == "agent" && r.level == "critical")
            && rows
                .iter()
                .filter(|r| r.node != "gluu3")
                .all(|r| r.level == "ok")
    })
    .await;
    stayed_green(&c, &m, &["gluu1", "gluu2"]);
    let others: Vec<Row> = since(&c, &m)
        .into_iter()
        .filter(|e| e.node == "gluu3" && e.check != "agent" && e.level != "unknown")
        .collect();
    assert!(others.is_empty(), "{others:#?}");
    c.heal();
    c.settled(secs(60)).await;

    // The alert command received every event since the faults began, once each, in
    // order.
    let wanted: Vec<u64> = c
        .events()
        .into_iter()
        .filter(|e| e.id > start.after)
        .map(|e| e.id)
        .collect();
    clustermgr_tests::eventually("the alerts to catch up", secs(30), || {
        c.alerted().ends_with(&wanted)
    })
    .await;
    let got: Vec<u64> = c
        .alerted()
        .into_iter()
        .filter(|id| *id > start.after)
        .collect();
    assert_eq!(got, wanted, "each event once, in order");
    assert!(wanted.len() >= 16, "{wanted:?}");
}
