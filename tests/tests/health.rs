//! `clustermgr health` end to end: real agents, each bound to its own real slapd, the
//! three replicating; verdicts and exit codes as monitoring reads them.

use std::time::Duration;

use clustermgr_tests::slapd::{self, ROOT_DN, Slapd};
use clustermgr_tests::{Cluster, node, stderr};

/// Checks every second; this machine's own disk fill is no business of these tests.
const HEALTH_TOML: &str =
    "[health]\ninterval_secs = 1\ndisk_warning_pct = 100\ndisk_critical_pct = 100\n";

/// `[ldap]` for an agent whose server is `s`, its password in an owner-only file.
fn ldap_section(s: &Slapd) -> String {
    let pw = s.path("agent-ldap.secret");
    std::fs::write(&pw, format!("{}\n", s.root_pw)).unwrap();
    std::fs::set_permissions(&pw, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    format!(
        "[telemetry]\nenabled = false\n[ldap]\nurl = \"{}\"\nbind_dn = \"{ROOT_DN}\"\npassword_file = \"{}\"\ntimeout_ms = 1000\n",
        s.ldap_url(),
        pw.display()
    )
}

/// `health --json`: the exit code and the verdicts (node, check, level, reason).
fn health(c: &Cluster, args: &[&str]) -> (i32, Vec<(String, String, String, String)>) {
    let mut all = vec!["--json", "health"];
    all.extend_from_slice(args);
    let out = c.run(&all);
    let code = out.status.code().unwrap_or(-1);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    if !v.is_null() {
        clustermgr_tests::schema::assert_valid("health", &v);
    }
    let rows = v["verdicts"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|r| {
                    let s = |k: &str| r[k].as_str().unwrap_or_default().to_string();
                    (s("node"), s("check"), s("level"), s("reason"))
                })
                .collect()
        })
        .unwrap_or_default();
    (code, rows)
}

/// Real agents named gluu1.., each bound to one of `servers`, with health checks every
/// second.
async fn cluster_on(servers: &[Slapd]) -> Cluster {
    let specs = servers
        .iter()
        .enumerate()
        .map(|(i, s)| node(&format!("gluu{}", i + 1), &ldap_section(s)))
        .collect();
    let c = Cluster::start(specs).await;
    std::fs::write(c.dir().join("controller.toml"), HEALTH_TOML).unwrap();
    c
}

/// The checks these loopback clusters cannot pass: their nodes share one address,
/// with no csync2 and none of Gluu's ports (the multi-host tests run those for real).
const NOT_HERE: [&str; 2] = ["ports", "csync2"];

/// Every check but [`NOT_HERE`] is ok.
fn healthy_here(rows: &[(String, String, String, String)]) -> bool {
    !rows.is_empty()
        && rows
            .iter()
            .filter(|r| !NOT_HERE.contains(&r.1.as_str()))
            .all(|r| r.2 == "ok")
}

fn level_of(rows: &[(String, String, String, String)], node: &str, check: &str) -> String {
    rows.iter()
        .find(|r| r.0 == node && r.1 == check)
        .map(|r| r.2.clone())
        .unwrap_or_else(|| panic!("no {check} verdict for {node}: {rows:#?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_judges_real_replication_and_exits_as_monitoring_expects() {
    let mut servers = slapd::replicating(3);
    let mut c = cluster_on(&servers).await;

    // Healthy: every check of every node is ok (but the ports and csync2 these
    // loopback nodes lack). The first rounds wait for every node's heartbeat to reach
    // every other.
    let mut last = (0, Vec::new());
    clustermgr_tests::eventually("a healthy cluster", Duration::from_secs(30), || {
        last = health(&c, &[]);
        healthy_here(&last.1)
    })
    .await;
    let (_, rows) = &last;
    for n in ["gluu1", "gluu2", "gluu3"] {
        for check in [
            "agent",
            "clock",
            "ldap",
            "ldap-links",
            "ldap-csn",
            "heartbeat",
        ] {
            assert_eq!(level_of(rows, n, check), "ok", "{n} {check}: {rows:#?}");
        }
        // This machine's own disks: the check runs, whatever their fill.
        assert!(
            rows.iter()
                .any(|r| r.0 == n && r.1 == "disk" && r.3.contains("% used"))
        );
    }

    // The replication picture behind it: every node's heartbeat read on every node,
    // a CSN per serverID, and the links.
    let out = c.run(&["--json", "replication"]);
    assert_eq!(out.status.code(), Some(0));
    let r = clustermgr_tests::schema::json(&out, "replication");
    for n in ["gluu1", "gluu2", "gluu3"] {
        for w in ["gluu1", "gluu2", "gluu3"] {
            let age = r["heartbeat_age_ms"][n][w].as_i64();
            assert!(age.is_some_and(|a| a < 5000), "{n} reading {w}: {age:?}");
        }
        assert!(r["csns"][n]["001"].is_string(), "{r}");
        assert_eq!(r["links"][n].as_array().map(Vec::len), Some(3), "{r}");
    }
    let text = String::from_utf8_lossy(&c.run(&["replication"]).stdout).into_owned();
    assert!(
        text.contains("HEARTBEAT AGE") && text.contains("CONTEXTCSN"),
        "{text}"
    );

    // The third node's slapd stops: its LDAP is critical, and its peers' links to it
    // break; exit 2.
    servers[2].kill();
    clustermgr_tests::eventually("slapd stopped on gluu3", Duration::from_secs(30), || {
        last = health(&c, &[]);
        last.0 == 2
            && level_of(&last.1, "gluu3", "ldap") == "critical"
            && level_of(&last.1, "gluu1", "ldap-links") == "critical"
    })
    .await;
    let reason = last
        .1
        .iter()
        .find(|r| r.0 == "gluu3" && r.1 == "ldap")
        .map(|r| r.3.clone())
        .unwrap_or_default();
    assert!(reason.contains("cannot connect"), "{reason}");
    assert!(
        !reason.contains(&servers[2].root_pw),
        "no password in reasons"
    );
    // --nodes shows only the selected node; the exit code is still its worst.
    let (code, rows) = health(&c, &["--nodes", "gluu2"]);
    assert!(rows.iter().all(|r| r.0 == "gluu2"), "{rows:#?}");
    assert_eq!(code, 2, "gluu2's link to gluu3 is down: {rows:#?}");
    assert_eq!(level_of(&rows, "gluu2", "ldap-links"), "critical");

    // The third's agent stops too: unreachable is critical, its own checks unknown.
    c.stop_agent("gluu3").await;
    let (code, rows) = health(&c, &[]);
    assert_eq!(code, 2);
    assert_eq!(level_of(&rows, "gluu3", "agent"), "critical");
    for check in [
        "clock",
        "disk",
        "ldap",
        "ldap-links",
        "ldap-csn",
        "heartbeat",
    ] {
        assert_eq!(level_of(&rows, "gluu3", check), "unknown", "{check}");
    }

    // A usage error is unknown to monitoring: 3.
    let out = c.run(&["health", "--no-such-flag"]);
    assert_eq!(out.status.code(), Some(3));
    let out = c.run(&["health", "--nodes", "nosuchnode"]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_takes_a_new_ldap_section_on_sighup_and_keeps_the_old_on_a_bad_file() {
    let s = Slapd::start();
    let mut c = Cluster::start(vec![node("gluu1", "[telemetry]\nenabled = false\n")]).await;
    std::fs::write(c.dir().join("controller.toml"), HEALTH_TOML).unwrap();
    // No Gluu installation and no [ldap]: the LDAP checks cannot run.
    let (code, rows) = health(&c, &[]);
    assert_eq!(code, 3, "{rows:#?}");
    assert_eq!(level_of(&rows, "gluu1", "ldap"), "unknown");
    let agent_toml = c.agent("gluu1").config();
    let before = std::fs::read_to_string(&agent_toml).unwrap();
    let pid = c
        .agent("gluu1")
        .child
        .id()
        .expect("a running agent")
        .to_string();
    let hup = || {
        let ok = std::process::Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill -HUP");
    };
    // A file that does not parse changes nothing, and the agent keeps serving.
    std::fs::write(&agent_toml, format!("{before}\n[ldap\n")).unwrap();
    hup();
    let (code, _) = health(&c, &[]);
    assert_eq!(code, 3);
    // The [ldap] section, then SIGHUP: the next round binds.
    let section = ldap_section(&s).replace("[telemetry]\nenabled = false\n", "");
    std::fs::write(&agent_toml, format!("{before}\n{section}")).unwrap();
    hup();
    let mut last = (0, Vec::new());
    clustermgr_tests::eventually("the new [ldap] to apply", Duration::from_secs(20), || {
        last = health(&c, &[]);
        last.0 == 0
    })
    .await;
    assert_eq!(level_of(&last.1, "gluu1", "ldap"), "ok", "{:#?}", last.1);
    let log = std::fs::read_to_string(c.agent("gluu1").dir.join("agent.log")).unwrap_or_default();
    assert!(log.contains("settings in force stay"), "{log}");
    c.stop_agent("gluu1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ldap_operation_counters_reach_the_metrics_store() {
    let s = Slapd::start();
    let section = ldap_section(&s).replace(
        "[telemetry]\nenabled = false\n",
        "[telemetry]\nmetrics_interval_secs = 1\ndefault_logs = false\n",
    );
    let c = Cluster::start(vec![node("gluu1", &section)]).await;
    let serve = c.serve().await;
    let mut shown = String::new();
    clustermgr_tests::eventually(
        "LDAP counters in `metrics`",
        Duration::from_secs(30),
        || {
            let out = c.run(&[
                "--json",
                "metrics",
                "--metric",
                "ldap_operations_total",
                "--since",
                "5m",
            ]);
            shown = String::from_utf8_lossy(&out.stdout).into_owned();
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
            if !v.is_null() {
                clustermgr_tests::schema::assert_valid("metrics-series", &v);
            }
            v["series"].as_array().is_some_and(|series| {
                series.iter().any(|x| {
                    x["node"] == "gluu1"
                        && x["series"] == r#"ldap_operations_total{op="search"}"#
                        && x["points"].as_array().is_some_and(|p| !p.is_empty())
                })
            })
        },
    )
    .await;
    assert!(shown.contains("gluu1"), "{shown}");
    serve.stop();
}

/// `events --json`: (node, check, from, to) of each stored change.
fn events(c: &Cluster) -> Vec<(String, String, String, String)> {
    let out = c.run(&["--json", "events"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    if !v.is_null() {
        clustermgr_tests::schema::assert_valid("events", &v);
    }
    v["events"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| {
                    let s = |k: &str| e[k].as_str().unwrap_or_default().to_string();
                    (s("node"), s("check"), s("from"), s("to"))
                })
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_watches_health_and_records_each_change_once() {
    let mut servers = slapd::replicating(3);
    let c = cluster_on(&servers).await;
    let serve = c.serve().await;
    // Quiet once healthy: a check first seen ok is not an event; whatever warned
    // while the heartbeats first spread has cleared.
    let settled = |ev: &[(String, String, String, String)]| {
        let mut last: std::collections::BTreeMap<(String, String), String> = Default::default();
        for e in ev {
            last.insert((e.0.clone(), e.1.clone()), e.3.clone());
        }
        last.iter()
            .filter(|((_, check), _)| !NOT_HERE.contains(&check.as_str()))
            .all(|(_, to)| to == "ok")
    };
    clustermgr_tests::eventually("a settled healthy cluster", Duration::from_secs(30), || {
        settled(&events(&c)) && healthy_here(&health(&c, &[]).1)
    })
    .await;
    let before = events(&c).len();
    // slapd stops on gluu3: within two intervals its ldap check turns critical.
    let t0 = std::time::Instant::now();
    servers[2].kill();
    clustermgr_tests::eventually("the change to be recorded", Duration::from_secs(10), || {
        events(&c)[before..]
            .iter()
            .any(|e| e.0 == "gluu3" && e.1 == "ldap" && e.2 == "ok" && e.3 == "critical")
    })
    .await;
    assert!(t0.elapsed() < Duration::from_secs(4), "{:?}", t0.elapsed());
    // Healed: it clears, and the critical was recorded once.
    servers[2].restart();
    clustermgr_tests::eventually("the change back to ok", Duration::from_secs(30), || {
        events(&c)[before..]
            .iter()
            .any(|e| e.0 == "gluu3" && e.1 == "ldap" && e.2 == "critical" && e.3 == "ok")
    })
    .await;
    let ev = events(&c);
    let downs = ev[before..]
        .iter()
        .filter(|e| e.0 == "gluu3" && e.1 == "ldap" && e.3 == "critical")
        .count();
    assert_eq!(downs, 1, "{ev:#?}");
    acknowledging(&c, before);
    // A restarted serve repeats none of it.
    serve.stop();
    let count = events(&c).len();
    let serve = c.serve().await;
    let health_ok = || healthy_here(&health(&c, &[]).1);
    clustermgr_tests::eventually("health again", Duration::from_secs(30), health_ok).await;
    let mut plain = c.cli();
    let out = plain.args(["events", "--since", "10m"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("gluu3") && text.contains("ok -> critical"),
        "{text}"
    );
    serve.stop();
    let after: Vec<_> = events(&c)[count..]
        .iter()
        .filter(|e| e.0 == "gluu3" && e.1 == "ldap")
        .cloned()
        .collect();
    assert!(after.is_empty(), "no repeat after a restart: {after:#?}");
}

/// `events ack`: the critical is acknowledged once, with a note, audited; the return to
/// ok and a number that does not exist are refused with the usage code and why.
fn acknowledging(c: &Cluster, before: usize) {
    let all = c.run(&["--json", "events"]);
    let all = clustermgr_tests::schema::json(&all, "events")["events"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mine = |to: &str| {
        all[before..]
            .iter()
            .find(|e| e["node"] == "gluu3" && e["check"] == "ldap" && e["to"] == to)
            .and_then(|e| e["id"].as_u64())
            .expect("the event")
    };
    let (down, up) = (mine("critical"), mine("ok"));
    assert!(all.iter().all(|e| e["acknowledged"].is_null()), "{all:#?}");
    let out = c.run(&[
        "--json",
        "events",
        "ack",
        &down.to_string(),
        "--note",
        "restarting slapd",
    ]);
    let doc = clustermgr_tests::schema::json(&out, "events");
    let ack = &doc["events"][0]["acknowledged"];
    assert_eq!(doc["events"][0]["id"].as_u64(), Some(down), "{doc}");
    assert_eq!(ack["note"], "restarting slapd", "{doc}");
    let by = ack["by"].as_str().unwrap_or_default().to_string();
    assert!(!by.is_empty(), "{doc}");
    // A second acknowledgement keeps the first (and is not audited again).
    let again = c.run(&[
        "--json",
        "events",
        "ack",
        &down.to_string(),
        "--note",
        "me too",
    ]);
    let again = clustermgr_tests::schema::json(&again, "events");
    assert_eq!(
        again["events"][0]["acknowledged"]["note"],
        "restarting slapd"
    );
    let listed = c.run(&["events"]);
    let text = String::from_utf8_lossy(&listed.stdout);
    assert!(
        text.contains(&format!("#{down}")) && text.contains(&format!("acknowledged by {by}")),
        "{text}"
    );
    for (id, says) in [(up, "nothing to acknowledge"), (999_999, "does not exist")] {
        let out = c
            .cli()
            .args(["events", "ack", &id.to_string()])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(
            err.contains(&format!("health event {id}")) && err.contains(says),
            "{err}"
        );
    }
    let audit = c.run(&["--json", "audit"]);
    let audit = clustermgr_tests::schema::json(&audit, "audit");
    let acks = audit["entries"]
        .as_array()
        .map(|a| a.iter().filter(|e| e["action"] == "events ack").count())
        .unwrap_or_default();
    assert_eq!(acks, 1, "{audit:#}");
}

/// A webhook receiver on loopback that answers 500 to the first request and 200 after:
/// the bodies it took, in order.
async fn webhook() -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let bodies = got.clone();
    tokio::spawn(async move {
        let mut first = true;
        while let Ok((mut sock, _)) = listener.accept().await {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            // Headers, then Content-Length bytes of body.
            let body = loop {
                let Ok(n) = sock.read(&mut chunk).await else {
                    break None;
                };
                if n == 0 {
                    break None;
                }
                buf.extend_from_slice(&chunk[..n]);
                let text = String::from_utf8_lossy(&buf).into_owned();
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let len: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("Content-Length: "))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    if body.len() >= len {
                        break Some(body.to_string());
                    }
                }
            };
            let status = if first {
                "500 Internal Server Error"
            } else {
                "200 OK"
            };
            if !first && let Some(b) = body {
                bodies.lock().unwrap().push(b);
            }
            first = false;
            let _ = sock
                .write_all(format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n").as_bytes())
                .await;
        }
    });
    (url, got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_change_reaches_the_alert_command_and_the_webhook_once() {
    let mut servers = slapd::replicating(3);
    let c = cluster_on(&servers).await;
    let out = c.dir().join("alerts.jsonl");
    let (url, hooked) = webhook().await;
    std::fs::write(
        c.dir().join("controller.toml"),
        format!(
            "{HEALTH_TOML}[alerts]\ncommand = [\"/bin/sh\", \"-c\", \"cat >> {}\"]\nwebhook = \"{url}\"\n",
            out.display()
        ),
    )
    .unwrap();
    let serve = c.serve().await;
    clustermgr_tests::eventually("a healthy cluster", Duration::from_secs(30), || {
        healthy_here(&health(&c, &[]).1)
    })
    .await;
    let before = events(&c).len();
    servers[2].kill();
    clustermgr_tests::eventually("the stop recorded", Duration::from_secs(10), || {
        events(&c).len() > before
    })
    .await;
    servers[2].restart();
    clustermgr_tests::eventually("healthy again", Duration::from_secs(30), || {
        healthy_here(&health(&c, &[]).1)
    })
    .await;
    // Every stored change after the alerts began, once each, in order, by both sinks.
    let ids = |text: &str| -> Vec<u64> {
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).expect("one JSON event a line");
                assert!(v["cluster"].is_string() && v["check"].is_string(), "{l}");
                v["id"].as_u64().expect("an id")
            })
            .collect()
    };
    let stored = {
        let o = c.run(&["--json", "events"]);
        clustermgr_tests::schema::json(&o, "events")["events"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|e| e["id"].as_u64())
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default()
    };
    let wanted: Vec<u64> = stored
        .into_iter()
        .filter(|id| *id as usize > before)
        .collect();
    assert!(
        wanted.len() >= 2,
        "a stop and a recovery at least: {wanted:?}"
    );
    clustermgr_tests::eventually("both sinks to catch up", Duration::from_secs(30), || {
        let by_command = ids(&std::fs::read_to_string(&out).unwrap_or_default());
        let by_hook = ids(&hooked.lock().unwrap().concat());
        by_command.ends_with(&wanted) && by_hook.ends_with(&wanted)
    })
    .await;
    let by_command = ids(&std::fs::read_to_string(&out).unwrap_or_default());
    let mut unique = by_command.clone();
    unique.dedup();
    assert_eq!(unique, by_command, "each event once");
    serve.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csync2_is_judged_by_what_clustermgr_applied_not_by_a_packaged_file() {
    let c = Cluster::gluu(2).await;
    // Debian's csync2 package leaves an example configuration naming no node of ours.
    for a in &c.agents {
        let etc = a.dir.join("root/etc");
        std::fs::create_dir_all(&etc).unwrap();
        std::fs::write(
            etc.join("csync2.cfg"),
            "# Please read the documentation\ngroup mygroup {\n host host1 host2;\n key /etc/csync2.key_mygroup;\n include /etc/apache;\n}\n",
        )
        .unwrap();
    }
    let (_, rows) = health(&c, &[]);
    let find = |rows: &[(String, String, String, String)], node: &str, check: &str| {
        rows.iter()
            .find(|r| r.0 == node && r.1 == check)
            .cloned()
            .unwrap_or_else(|| panic!("no {check} for {node}: {rows:#?}"))
    };
    for node in ["gluu1", "gluu2"] {
        let (_, _, level, reason) = find(&rows, node, "csync2");
        assert_eq!(level, "warning", "{reason}");
        assert!(reason.contains("not set up on this node yet"), "{reason}");
        let (_, _, _, ports) = find(&rows, node, "ports");
        assert!(
            !ports.contains("30865") && !ports.contains("csync2"),
            "{ports}"
        );
    }
    // Once applied, csync2 is clustermgr's and is checked.
    let o = c.run(&["apply", "--yes"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let (_, rows) = health(&c, &[]);
    let (_, _, _, reason) = find(&rows, "gluu1", "csync2");
    assert!(!reason.contains("not set up"), "{reason}");
}
