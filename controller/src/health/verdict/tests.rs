//! The verdict rules on recorded-style reports: healthy, unreachable, a broken link
//! hidden from the CSNs, a node behind, skewed clocks, and OpenDJ.

use clustermgr_protocol::health::{
    CertProbe, CertState, Consumer, Dirty, DiskUse, Heartbeat, KeptCopy, OpenDjReplica, PortReach,
};

use super::*;

const T0: i64 = 1_795_613_415_000;
const INTERVAL: i64 = 10_000;

fn csn(sid: &str, ms: i64) -> Csn {
    // As slapd writes them: generalized time with microseconds.
    let secs = ms.div_euclid(1000);
    let t = time::OffsetDateTime::from_unix_timestamp(secs).unwrap();
    Csn {
        server_id: sid.into(),
        csn: format!(
            "{:04}{:02}{:02}{:02}{:02}{:02}.{:06}Z#000000#{sid}#000000",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second(),
            ms.rem_euclid(1000) * 1000
        ),
    }
}

/// Three Gluu nodes reaching each other's LDAPS and csync2, in one csync2 group, and
/// a load balancer reaching their HTTPS.
fn members() -> Members {
    let probe = |i: usize, port: u16| PortProbe {
        node: format!("gluu{i}"),
        host: format!("10.0.0.{i}"),
        port,
    };
    let mut m = Members::default();
    for i in 1..=3 {
        m.nodes.insert(
            format!("gluu{i}"),
            Member {
                gluu: true,
                host: format!("10.0.0.{i}"),
                reach: (1..=3)
                    .filter(|p| *p != i)
                    .flat_map(|p| [probe(p, 1636), probe(p, 30865)])
                    .collect(),
                csync2: true,
                csync2_set_up: true,
                ..Member::default()
            },
        );
    }
    m.nodes.insert(
        "lb1".into(),
        Member {
            gluu: false,
            host: "10.0.0.9".into(),
            reach: (1..=3).map(|p| probe(p, 443)).collect(),
            csync2: false,
            ..Member::default()
        },
    );
    m
}

/// csync2 with nothing waiting, synced a minute before `T0`.
fn synced() -> Csync2State {
    Csync2State {
        configured: true,
        listener: Ok(()),
        dirty: Vec::new(),
        dirty_total: 0,
        last_sync_ms: Some(T0 - 60_000),
        kept: Vec::new(),
        error: None,
    }
}

/// A healthy node's state at `at`: linked to its two peers, every serverID's CSN at
/// `at - 1 s`, every heartbeat written 2 s before it was read.
fn state(me: usize, at: i64) -> LdapState {
    let peers: Vec<usize> = (1..=3).filter(|p| *p != me).collect();
    LdapState {
        server: LdapServer::OpenLdap,
        took_ms: 3,
        csns: (1..=3)
            .map(|s| csn(&format!("{s:03}"), at - 1000))
            .collect(),
        consumers: peers
            .iter()
            .map(|p| Consumer {
                name: format!("Consumer {p:03}"),
                provider: format!("ldap://10.0.0.{p}:389"),
                connected: true,
                phase: "Persist".into(),
                last_contact_ms: Some(at - 500),
                next_connect_ms: None,
            })
            .collect(),
        replicas: Vec::new(),
        heartbeats: (1..=3)
            .map(|n| Heartbeat {
                node: format!("gluu{n}"),
                written_ms: at - 2000,
                read_ms: at,
            })
            .collect(),
        heartbeat_error: None,
    }
}

/// `node`'s report: its LDAP state, every port it must reach open, csync2 in sync.
fn report(node: &str, s: LdapState, skew_ms: i64) -> NodeRound {
    NodeRound::Report {
        report: CheckReport {
            started_ms: T0 + skew_ms,
            ldap: Some(Ok(s)),
            disks: disks(50),
            ports: all_open(node),
            csync2: Some(synced()),
            certs: Vec::new(),
            services: Vec::new(),
        },
        skew_ms,
    }
}

/// A root file system `used_pct` full, and an empty data disk.
fn disks(used_pct: u64) -> Vec<DiskUse> {
    vec![
        DiskUse {
            mount: "/".into(),
            size_bytes: 100 << 30,
            avail_bytes: (100 - used_pct) << 30,
        },
        DiskUse {
            mount: "/opt".into(),
            size_bytes: 500 << 30,
            avail_bytes: 500 << 30,
        },
    ]
}

fn round(states: Vec<(usize, NodeRound)>) -> BTreeMap<String, NodeRound> {
    let mut r: BTreeMap<String, NodeRound> = states
        .into_iter()
        .map(|(i, s)| (format!("gluu{i}"), s))
        .collect();
    r.insert(
        "lb1".into(),
        NodeRound::Report {
            report: CheckReport {
                started_ms: T0,
                ldap: None,
                disks: disks(50),
                ports: Vec::new(),
                csync2: None,
                certs: Vec::new(),
                services: Vec::new(),
            },
            skew_ms: 0,
        },
    );
    if let Some(NodeRound::Report { report, .. }) = r.get_mut("lb1") {
        report.ports = all_open("lb1");
    }
    r
}

/// Every port `node` must reach, open.
fn all_open(node: &str) -> Vec<PortReach> {
    members().nodes[node]
        .reach
        .iter()
        .map(|p| PortReach {
            probe: p.clone(),
            result: Ok(1),
        })
        .collect()
}

fn healthy() -> BTreeMap<String, NodeRound> {
    round(
        (1..=3)
            .map(|i| (i, report(&format!("gluu{i}"), state(i, T0), 0)))
            .collect(),
    )
}

fn level(v: &[Verdict], node: &str, check: &str) -> (Level, String) {
    let x = v
        .iter()
        .find(|v| v.node == node && v.check == check)
        .unwrap_or_else(|| panic!("no {check} verdict for {node}: {v:#?}"));
    (x.level, x.reason.clone())
}

#[test]
fn a_healthy_cluster_is_all_ok() {
    let v = verdicts(&members(), &healthy(), Some(&healthy()), INTERVAL);
    assert!(v.iter().all(|v| v.level == Level::Ok), "{v:#?}");
    // The LB has no LDAP checks.
    assert!(
        !v.iter()
            .any(|v| v.node == "lb1" && v.check.starts_with("ldap"))
    );
    assert_eq!(level(&v, "gluu1", "ldap-links").1, "2 syncrepl links live");
    assert_eq!(Level::worst(v.iter().map(|v| v.level)).exit_code(), 0);
}

#[test]
fn an_unreachable_node_is_critical_its_checks_unknown_and_its_peers_stay_green() {
    let mut now = healthy();
    now.insert(
        "gluu3".into(),
        NodeRound::Unreachable("no reply within 3 s".into()),
    );
    for i in [1, 2] {
        let mut s = state(i, T0);
        // Its link to the dead node is down, and its heartbeat is stale.
        for c in &mut s.consumers {
            if c.provider.contains("10.0.0.3") {
                c.connected = false;
            }
        }
        for h in &mut s.heartbeats {
            if h.node == "gluu3" {
                h.written_ms = T0 - 600_000;
            }
        }
        now.insert(format!("gluu{i}"), report(&format!("gluu{i}"), s, 0));
        // Its ports are shut, and files wait for it.
        if let Some(NodeRound::Report { report, .. }) = now.get_mut(&format!("gluu{i}")) {
            for p in &mut report.ports {
                if p.probe.node == "gluu3" {
                    p.result = Err("no answer within 1 s".into());
                }
            }
            let c = report.csync2.as_mut().unwrap();
            c.dirty = vec![Dirty {
                peer: "gluu3".into(),
                path: "/opt/x".into(),
            }];
            c.dirty_total = 1;
        }
    }
    let v = verdicts(&members(), &now, None, INTERVAL);
    let (l, why) = level(&v, "gluu3", "agent");
    assert_eq!(l, Level::Critical);
    assert!(why.contains("unreachable: no reply"), "{why}");
    for c in [
        "ldap",
        "ldap-links",
        "ldap-csn",
        "heartbeat",
        "ports",
        "csync2",
        "clock",
        "disk",
    ] {
        assert_eq!(level(&v, "gluu3", c).0, Level::Unknown, "{c}");
    }
    assert!(
        level(&v, "gluu1", "csync2")
            .1
            .contains("only unreachable nodes wait"),
        "{v:#?}"
    );
    for n in ["gluu1", "gluu2"] {
        assert!(
            v.iter()
                .filter(|v| v.node == n)
                .all(|v| v.level == Level::Ok),
            "{n}: {v:#?}"
        );
    }
    assert_eq!(Level::worst(v.iter().map(|v| v.level)).exit_code(), 2);
}

#[test]
fn a_broken_link_shows_even_when_the_csns_agree() {
    let mut now = healthy();
    let mut s = state(2, T0);
    s.consumers[0].connected = false;
    s.consumers[0].phase = "Refresh".into();
    now.insert("gluu2".into(), report("gluu2", s, 0));
    let v = verdicts(&members(), &now, Some(&healthy()), INTERVAL);
    let (l, why) = level(&v, "gluu2", "ldap-links");
    assert_eq!(l, Level::Critical);
    assert_eq!(why, "no link to gluu1 (ldap://10.0.0.1:389)");
    assert_eq!(level(&v, "gluu2", "ldap-csn").0, Level::Ok);
    // Connected but still refreshing is a warning.
    let mut s = state(2, T0);
    s.consumers[0].phase = "Refresh".into();
    now.insert("gluu2".into(), report("gluu2", s, 0));
    let v = verdicts(&members(), &now, None, INTERVAL);
    assert_eq!(level(&v, "gluu2", "ldap-links").0, Level::Warning);
}

#[test]
fn a_node_behind_the_previous_round_is_behind_and_moments_apart_is_not() {
    // Previous round: gluu1 had serverID 001's change at T0 - 1 s.
    let previous = healthy();
    // Now gluu3 still has 001 at T0 - 40 s: behind what gluu1 had a round ago.
    let mut now = healthy();
    let mut s = state(3, T0 + INTERVAL);
    s.csns[0] = csn("001", T0 - 40_000);
    now.insert("gluu3".into(), report("gluu3", s, 0));
    let v = verdicts(&members(), &now, Some(&previous), INTERVAL);
    let (l, why) = level(&v, "gluu3", "ldap-csn");
    assert_eq!(l, Level::Warning);
    assert!(why.contains("serverID 001 39.0 s behind gluu1"), "{why}");
    // More than six intervals: critical.
    let mut s = state(3, T0 + INTERVAL);
    s.csns[0] = csn("001", T0 - 90_000);
    now.insert("gluu3".into(), report("gluu3", s, 0));
    let v = verdicts(&members(), &now, Some(&previous), INTERVAL);
    assert_eq!(level(&v, "gluu3", "ldap-csn").0, Level::Critical);
    // Without a previous round, CSNs read moments apart under load are in step.
    let mut now = healthy();
    let mut s = state(3, T0);
    s.csns[0] = csn("001", T0 - 1300);
    now.insert("gluu3".into(), report("gluu3", s, 0));
    let v = verdicts(&members(), &now, None, INTERVAL);
    assert_eq!(level(&v, "gluu3", "ldap-csn").0, Level::Ok);
    // A serverID another node has and this one never saw.
    let mut s = state(3, T0);
    s.csns.remove(1);
    now.insert("gluu3".into(), report("gluu3", s, 0));
    let v = verdicts(&members(), &now, None, INTERVAL);
    let (l, why) = level(&v, "gluu3", "ldap-csn");
    assert_eq!(l, Level::Critical);
    assert!(why.contains("no change from serverID 002 yet"), "{why}");
}

#[test]
fn heartbeat_ages_are_measured_on_the_controllers_clock() {
    // gluu2's clock is 30 s ahead: its heartbeats look 30 s old on gluu1's clock, but
    // are fresh on the controller's.
    let mut now = healthy();
    for i in 1..=3 {
        let skew = if i == 2 { 30_000 } else { 0 };
        let mut s = state(i, T0 + skew);
        for h in &mut s.heartbeats {
            let writer_skew = if h.node == "gluu2" { 30_000 } else { 0 };
            h.written_ms = T0 - 2000 + writer_skew;
            h.read_ms = T0 + skew;
        }
        now.insert(format!("gluu{i}"), report(&format!("gluu{i}"), s, skew));
    }
    let v = verdicts(&members(), &now, None, INTERVAL);
    for i in 1..=3 {
        assert_eq!(
            level(&v, &format!("gluu{i}"), "heartbeat").0,
            Level::Ok,
            "{v:#?}"
        );
    }
    // A peer's heartbeat 45 s old (a cut link on an idle cluster): warning; 2 min:
    // critical. gluu2 wrote it by its own clock, 30 s ahead.
    let mut s = state(1, T0);
    s.heartbeats[1].written_ms = T0 + 30_000 - 45_000;
    now.insert("gluu1".into(), report("gluu1", s.clone(), 0));
    let v = verdicts(&members(), &now, None, INTERVAL);
    let (l, why) = level(&v, "gluu1", "heartbeat");
    assert_eq!((l, why.as_str()), (Level::Warning, "gluu2's is 45 s old"));
    s.heartbeats[1].written_ms = T0 + 30_000 - 120_000;
    now.insert("gluu1".into(), report("gluu1", s, 0));
    let v = verdicts(&members(), &now, None, INTERVAL);
    assert_eq!(level(&v, "gluu1", "heartbeat").0, Level::Critical);
}

#[test]
fn opendj_replication_reads_from_its_monitor() {
    let replica = |missing: i64, connected: bool| OpenDjReplica {
        dn: "cn=Directory server DS(27137),cn=o_gluu,cn=Replication,cn=monitor".into(),
        domain: "o=gluu".into(),
        server_id: "27137".into(),
        missing_changes: Some(missing),
        approximate_delay_ms: Some(4200),
        oldest_unsynced_ms: Some(5000),
        generation_id: Some("o=gluu 7649".into()),
        connected_to: connected.then(|| "Replication Server 8989 31338".into()),
    };
    let mut now = healthy();
    let mut s = state(1, T0);
    s.server = LdapServer::OpenDj;
    s.consumers.clear();
    s.csns.clear();
    s.replicas = vec![replica(0, true)];
    now.insert("gluu1".into(), report("gluu1", s.clone(), 0));
    let v = verdicts(&members(), &now, None, INTERVAL);
    assert_eq!(level(&v, "gluu1", "ldap-links").0, Level::Ok);
    assert!(level(&v, "gluu1", "ldap").1.starts_with("OpenDJ answered"));
    s.replicas = vec![replica(12, true)];
    now.insert("gluu1".into(), report("gluu1", s.clone(), 0));
    let v = verdicts(&members(), &now, None, INTERVAL);
    let (l, why) = level(&v, "gluu1", "ldap-csn");
    assert_eq!(l, Level::Warning);
    assert_eq!(why, "12 changes not replayed yet (about 4 s behind)");
    s.replicas = vec![replica(0, false)];
    now.insert("gluu1".into(), report("gluu1", s, 0));
    let v = verdicts(&members(), &now, None, INTERVAL);
    assert_eq!(level(&v, "gluu1", "ldap-links").0, Level::Critical);
}

#[test]
fn clocks_and_disks_are_judged_on_every_node() {
    let mut now = healthy();
    let lb = |skew_ms: i64, used: u64| NodeRound::Report {
        report: CheckReport {
            started_ms: T0 + skew_ms,
            ldap: None,
            disks: disks(used),
            ports: Vec::new(),
            csync2: None,
            certs: Vec::new(),
            services: Vec::new(),
        },
        skew_ms,
    };
    now.insert("lb1".into(), lb(-5000, 93));
    let v = verdicts(&members(), &now, None, INTERVAL);
    let (l, why) = level(&v, "lb1", "clock");
    assert_eq!(
        (l, why.as_str()),
        (Level::Warning, "5.0 s behind the controller's: check NTP")
    );
    let (l, why) = level(&v, "lb1", "disk");
    assert_eq!(
        (l, why.as_str()),
        (Level::Warning, "/ 93 % used (7.0 GiB left)")
    );
    now.insert("lb1".into(), lb(120_000, 97));
    let v = verdicts(&members(), &now, None, INTERVAL);
    assert_eq!(level(&v, "lb1", "clock").0, Level::Critical);
    assert_eq!(level(&v, "lb1", "disk").0, Level::Critical);
    assert_eq!(level(&v, "gluu1", "disk").1, "the fullest, /, is 50 % used");
    now.insert("lb1".into(), NodeRound::Unreachable("gone".into()));
    let v = verdicts(&members(), &now, None, INTERVAL);
    assert_eq!(level(&v, "lb1", "disk").0, Level::Unknown);
    assert_eq!(level(&v, "lb1", "clock").0, Level::Unknown);
}

#[test]
fn levels_order_as_monitoring_expects() {
    assert_eq!(Level::worst([Level::Ok, Level::Unknown]), Level::Unknown);
    assert_eq!(
        Level::worst([Level::Unknown, Level::Warning]),
        Level::Warning
    );
    assert_eq!(
        Level::worst([Level::Warning, Level::Critical]),
        Level::Critical
    );
    assert_eq!(Level::worst([]), Level::Ok);
    assert_eq!(
        [Level::Ok, Level::Warning, Level::Critical, Level::Unknown].map(Level::exit_code),
        [0, 1, 2, 3]
    );
}

#[test]
fn a_missing_port_is_critical_on_the_node_that_cannot_reach_it() {
    let mut now = healthy();
    if let Some(NodeRound::Report { report, .. }) = now.get_mut("lb1") {
        report.ports[1].result = Err("Connection refused (os error 111)".into());
    }
    if let Some(NodeRound::Report { report, .. }) = now.get_mut("gluu1") {
        report
            .ports
            .retain(|p| p.probe.port != 30865 || p.probe.node != "gluu3");
    }
    let v = verdicts(&members(), &now, None, INTERVAL);
    let (l, why) = level(&v, "lb1", "ports");
    assert_eq!(l, Level::Critical);
    assert_eq!(
        why,
        "cannot reach gluu2:443 (https): Connection refused (os error 111)"
    );
    // A probe the agent did not answer for is unknown, never ok.
    let (l, why) = level(&v, "gluu1", "ports");
    assert_eq!(l, Level::Unknown);
    assert!(why.contains("gluu3:30865 (csync2)"), "{why}");
    assert_eq!(level(&v, "gluu2", "ports").1, "4 peer ports open");
}

#[test]
fn csync2_judges_the_listener_waiting_files_and_the_last_sync() {
    let judge = |c: Csync2State| {
        let mut now = healthy();
        if let Some(NodeRound::Report { report, .. }) = now.get_mut("gluu2") {
            report.csync2 = Some(c);
        }
        level(
            &verdicts(&members(), &now, None, INTERVAL),
            "gluu2",
            "csync2",
        )
    };
    let (l, why) = judge(synced());
    assert_eq!(
        (l, why.as_str()),
        (Level::Ok, "in sync; last sync 60 s ago")
    );
    let mut c = synced();
    c.listener = Err("nothing answers on port 30865: Connection refused".into());
    assert_eq!(judge(c).0, Level::Critical);
    // A file changed here and not yet sent: a warning, naming the file and the peers.
    let mut c = synced();
    c.dirty = vec![
        Dirty {
            peer: "gluu3".into(),
            path: "/opt/a".into(),
        },
        Dirty {
            peer: "gluu1".into(),
            path: "/opt/a".into(),
        },
    ];
    c.dirty_total = 2;
    let (l, why) = judge(c.clone());
    assert_eq!(l, Level::Warning);
    assert!(
        why.starts_with("2 changed files wait to be sent (first /opt/a) to gluu1, gluu3"),
        "{why}"
    );
    // ... critical once syncs have failed for ten minutes.
    c.last_sync_ms = Some(T0 - 11 * 60_000);
    assert_eq!(judge(c.clone()).0, Level::Critical);
    // ... but not while a peer is down, which fails every sync: the files waiting
    // for the others go at the next one.
    let mut now = healthy();
    now.insert("gluu3".into(), NodeRound::Unreachable("no reply".into()));
    if let Some(NodeRound::Report { report, .. }) = now.get_mut("gluu2") {
        report.csync2 = Some(c.clone());
    }
    let v = verdicts(&members(), &now, None, INTERVAL);
    assert_eq!(level(&v, "gluu2", "csync2").0, Level::Warning, "{v:#?}");
    // Never synced: a cluster being set up, a warning.
    c.last_sync_ms = None;
    assert_eq!(judge(c).0, Level::Warning);
    // Set up by clustermgr, and its configuration gone since: critical, saying how to
    // see it and put it back.
    let mut c = synced();
    c.configured = false;
    let (l, why) = judge(c);
    assert_eq!(l, Level::Critical);
    assert!(why.contains("`clustermgr apply` puts it back"), "{why}");
    // Not set up by clustermgr yet (before the first apply): a warning saying what to
    // do, whatever the agent found (a package's example configuration).
    let mut m = members();
    m.nodes.get_mut("gluu2").unwrap().csync2_set_up = false;
    let v = verdicts(&m, &healthy(), None, INTERVAL);
    let (l, why) = level(&v, "gluu2", "csync2");
    assert_eq!(l, Level::Warning);
    assert!(why.contains("`clustermgr apply` sets it up"), "{why}");
    // The check could not run: a warning with csync2's words.
    let mut c = synced();
    c.error = Some("`csync2 -M` failed (exit status 1): database is locked".into());
    let (l, why) = judge(c);
    assert_eq!(l, Level::Warning);
    assert!(why.contains("database is locked"), "{why}");
    // Where a peer's version replaced a file, the kept copy is named.
    let mut c = synced();
    c.kept = vec![KeptCopy {
        path: "/var/backups/csync2/opt/a.1".into(),
        time_ms: T0 - 1000,
    }];
    let (l, why) = judge(c);
    assert_eq!(l, Level::Ok);
    assert!(why.contains("newest /var/backups/csync2/opt/a.1"), "{why}");
    // An agent that did not check: unknown.
    assert_eq!(judge_none(), Level::Unknown);
}

fn judge_none() -> Level {
    let mut now = healthy();
    if let Some(NodeRound::Report { report, .. }) = now.get_mut("gluu2") {
        report.csync2 = None;
    }
    level(
        &verdicts(&members(), &now, None, INTERVAL),
        "gluu2",
        "csync2",
    )
    .0
}

#[test]
fn certificates_warn_a_month_ahead_and_are_critical_a_week_ahead() {
    let judge = |days: i64| {
        let mut now = healthy();
        if let Some(NodeRound::Report { report, .. }) = now.get_mut("gluu1") {
            report.certs = vec![CertState {
                probe: CertProbe {
                    label: "cluster TLS certificate".into(),
                    path: "/opt/gluu-server/etc/certs/httpd.crt".into(),
                },
                result: Ok(("idp.example.org".into(), T0 / 1000 + days * 86_400 + 60)),
            }];
        }
        level(
            &verdicts(&members(), &now, None, INTERVAL),
            "gluu1",
            "certs",
        )
    };
    let (l, why) = judge(200);
    assert_eq!(l, Level::Ok);
    assert_eq!(
        why,
        "1 certificate; the first to expire, the cluster TLS certificate, in 200 days"
    );
    let (l, why) = judge(20);
    assert_eq!(l, Level::Warning);
    assert!(why.contains("expires in 20 days: renew it"), "{why}");
    assert!(why.contains("idp.example.org"), "{why}");
    assert_eq!(judge(3).0, Level::Critical);
    let (l, why) = judge(-2);
    assert_eq!(l, Level::Critical);
    assert!(why.contains("has expired"), "{why}");
    // None yet (Gluu not installed): ok, and said so.
    assert_eq!(judge_none_certs(), "no certificates to watch yet");
}

fn judge_none_certs() -> String {
    level(
        &verdicts(&members(), &healthy(), None, INTERVAL),
        "gluu1",
        "certs",
    )
    .1
}

#[test]
fn two_clocks_each_near_the_controllers_can_be_too_far_apart() {
    let mut now = healthy();
    for (n, skew) in [("gluu1", 1900), ("gluu2", -1900)] {
        if let Some(NodeRound::Report { skew_ms, .. }) = now.get_mut(n) {
            *skew_ms = skew;
        }
    }
    let v = verdicts(&members(), &now, None, INTERVAL);
    let (l, why) = level(&v, "gluu1", "clock");
    assert_eq!(l, Level::Warning);
    assert_eq!(
        why,
        "within 1.9 s of the controller's; 3.8 s ahead of gluu2's: check NTP"
    );
    assert_eq!(level(&v, "gluu2", "clock").0, Level::Warning);
    // gluu3, 1.9 s from each, is fine.
    assert_eq!(level(&v, "gluu3", "clock").0, Level::Ok);
}

#[test]
fn a_service_that_does_not_answer_is_critical_with_its_words() {
    let judge = |services: Vec<ServiceState>| {
        let mut now = healthy();
        if let Some(NodeRound::Report { report, .. }) = now.get_mut("lb1") {
            report.services = services;
        }
        level(
            &verdicts(&members(), &now, None, INTERVAL),
            "lb1",
            "services",
        )
    };
    let up = |label: &str| ServiceState {
        label: label.into(),
        result: Ok("200 in 3 ms".into()),
    };
    assert_eq!(
        judge(vec![]),
        (Level::Ok, "no services to try here".to_string())
    );
    assert_eq!(
        judge(vec![up("oxAuth through the load balancer")]),
        (
            Level::Ok,
            "oxAuth through the load balancer answers (200 in 3 ms)".to_string()
        )
    );
    let (l, why) = judge(vec![
        up("oxAuth through the load balancer"),
        ServiceState {
            label: "oxTrust through the load balancer".into(),
            result: Err(
                "GET /identity/restv1/health-check answered HTTP/1.1 502 Bad Gateway: ".into(),
            ),
        },
    ]);
    assert_eq!(l, Level::Critical);
    assert!(
        why.starts_with("oxTrust through the load balancer: GET /identity"),
        "{why}"
    );
}

#[test]
fn the_gate_stops_on_what_broke_not_on_what_was_already_broken_or_warns() {
    let v = |node: &str, check: &str, level: Level, reason: &str| Verdict {
        node: node.into(),
        check: check.into(),
        level,
        reason: reason.into(),
    };
    let gate = crate::health::HealthGate::for_tests(&[
        v(
            "gluu1",
            "ports",
            Level::Critical,
            "cannot reach gluu2:1636 (ldaps): refused",
        ),
        v("gluu1", "csync2", Level::Warning, "files wait"),
        v("gluu2", "ldap", Level::Unknown, "no LDAP"),
        v("gluu3", "disk", Level::Ok, "fine"),
    ]);
    let same = [
        v(
            "gluu1",
            "ports",
            Level::Critical,
            "cannot reach gluu2:1636 (ldaps): refused",
        ),
        v("gluu1", "csync2", Level::Warning, "files wait"),
        v("gluu2", "ldap", Level::Unknown, "no LDAP"),
        v("gluu3", "disk", Level::Ok, "fine"),
        // A new warning (files waiting for the next sync) does not stop a rollout.
        v("gluu3", "csync2", Level::Warning, "files wait"),
    ];
    assert!(gate.regressions(&same, "gluu1").is_empty());
    assert_eq!(
        gate.regressions(
            &[
                // Already critical, but a port more is missing.
                v(
                    "gluu1",
                    "ports",
                    Level::Critical,
                    "cannot reach gluu2:1636 (ldaps): refused; gluu3:30865 (csync2): refused"
                ),
                v("gluu1", "csync2", Level::Critical, "listener down"),
                v("gluu2", "ldap", Level::Critical, "refused"),
                v("gluu3", "agent", Level::Critical, "unreachable"),
                // The changed node's check that can no longer be judged.
                v("gluu3", "disk", Level::Unknown, "the checks did not run"),
            ],
            "gluu3"
        ),
        [
            "gluu1 ports critical: gluu3:30865 (csync2): refused",
            "gluu1 csync2 critical: listener down",
            "gluu2 ldap critical: refused",
            "gluu3 agent critical: unreachable",
            "gluu3 disk unknown: cannot be checked after its change: the checks did not run"
        ]
    );
    // Unknown elsewhere than on the changed node is not the change's doing.
    assert!(
        gate.regressions(&[v("gluu3", "disk", Level::Unknown, "x")], "gluu1")
            .is_empty()
    );
}
