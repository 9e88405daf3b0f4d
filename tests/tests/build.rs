//! Building the cluster on the multi-host harness with the real programs: three Gluu
//! hosts whose slapds start standalone, each with a directory of its own, become one
//! replicating cluster through `cluster set ldap-replication on` and one `apply`; a
//! second apply changes nothing.

use std::time::Duration;

use clustermgr::generate::gluu_settings;
use clustermgr_tests::gluu::NODES;
use clustermgr_tests::standalone::{
    SALT, add, add_expired_token, build_record, has, join, live_consumers, revision, setting,
    setting_of, standalone,
};
use clustermgr_tests::succeeded as ok;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_apply_turns_standalone_slapds_into_a_replicating_cluster() {
    let (mut net, ctl, mut servers) = standalone();
    let o = ctl.run(&["cluster", "set", "ldap-replication", "on"]);
    ok(o.clone(), "cluster set ldap-replication on");
    let said = String::from_utf8_lossy(&o.stdout);
    assert!(
        said.contains("gluu1") && said.contains("replaced"),
        "{said}"
    );
    let plan = ctl.run(&["plan"]);
    let text = String::from_utf8_lossy(&plan.stdout).to_string();
    assert!(
        text.contains("olcSyncrepl"),
        "the plan shows the consumers: {text}"
    );
    assert_eq!(
        text.matches("its own o=gluu is emptied and replaced by the cluster's")
            .count(),
        2,
        "the plan says, in words, that gluu2's and gluu3's directories are replaced: {text}"
    );
    let o = ctl.run(&["apply", "--yes"]);
    ok(o.clone(), "apply");
    // The seed's data everywhere; the others' own entries replaced, never the reverse.
    for s in &servers[1..] {
        assert!(has(s, "cn=own-1,o=gluu"));
    }
    for (i, s) in servers.iter().enumerate().skip(1) {
        assert!(!has(s, &format!("cn=own-{},o=gluu", i + 1)));
    }
    assert!(!has(&servers[0], "cn=own-2,o=gluu"), "never the reverse");
    // Gluu's cluster-wide settings, written on the primary and replicated: the LDAP
    // cache with no shared cache, every LDAP server with the node's own first; the rest
    // of Gluu's documents as Gluu wrote them; oxAuth told to reload.
    let ldap_servers: Vec<String> = std::iter::once("localhost:1636".to_string())
        .chain(servers.iter().map(|s| format!("{}:1636", s.ip)))
        .collect();
    for s in &servers {
        let cache = setting(s, "oxCacheConfiguration");
        assert_eq!(cache["cacheProviderType"], "NATIVE_PERSISTENCE", "{cache}");
        assert_eq!(
            cache["memcachedConfiguration"]["servers"],
            "localhost:11211"
        );
        let idp = setting(s, "oxIDPAuthentication");
        assert_eq!(
            idp["config"]["servers"],
            serde_json::json!(ldap_servers),
            "{idp}"
        );
        assert_eq!(idp["config"]["configId"], "auth_ldap_server");
        assert!(revision(s) > 1, "oxRevision bumped");
    }
    // Health sees what apply set up, with no hand step: every LDAP check ok.
    clustermgr_tests::eventually_blocking(
        "every LDAP health check ok",
        Duration::from_secs(30),
        || ldap_health(&ctl).iter().all(|(_, _, level)| level == "ok"),
    );
    // Every node replicates to every other.
    for (i, s) in servers.iter().enumerate() {
        let cn = format!("written-on-{}", NODES[i]);
        add(s, &format!("cn={cn},o=gluu"), &cn);
        for (j, other) in servers.iter().enumerate() {
            if i != j {
                clustermgr_tests::eventually_blocking(
                    &format!("{cn} on {}", NODES[j]),
                    Duration::from_secs(10),
                    || has(other, &format!("cn={cn},o=gluu")),
                );
            }
        }
    }
    // oxAuth's own expired-entry cleaner is off everywhere (the setting replicates) and
    // the agent's runs from cron on the primary alone; what it deletes there is
    // deleted on every node.
    for s in &servers {
        let conf = setting_of(s, "ou=oxauth,ou=configuration,o=gluu", "oxAuthConfDynamic");
        assert_eq!(conf["cleanServiceInterval"], -1, "{conf}");
        assert_eq!(
            conf["issuer"], "https://gluu.example",
            "the rest as Gluu wrote it"
        );
    }
    let cron = |name: &str| {
        std::fs::read_to_string(net.host(name).path(gluu_settings::CLEANER_CRON))
            .unwrap_or_else(|e| panic!("{name}'s cleaner cron file: {e}"))
    };
    for other in &NODES[1..] {
        let text = cron(other);
        assert!(
            text.contains("deleted on gluu1, the primary, not here"),
            "{text}"
        );
        assert!(
            !text.contains("clean-expired"),
            "{other} runs no cleaner: {text}"
        );
    }
    let primary = cron("gluu1");
    let job = primary
        .lines()
        .find(|l| l.starts_with("* * * * * root "))
        .unwrap_or_else(|| panic!("gluu1 runs the cleaner every minute: {primary}"))
        .trim_start_matches("* * * * * root ")
        .to_string();
    add_expired_token(&servers[1], "expired-on-gluu2");
    let token = "tknCde=expired-on-gluu2,ou=tokens,o=gluu";
    clustermgr_tests::eventually_blocking(
        "the expired token replicated to gluu1",
        Duration::from_secs(10),
        || has(&servers[0], token),
    );
    // What cron runs, as cron runs it.
    net.host("gluu1").sh(&job);
    let said = std::fs::read_to_string(net.host("gluu1").path(gluu_settings::CLEANER_LOG))
        .expect("the cleaner's log");
    assert_eq!(said, "deleted 1 expired entry under ou=tokens,o=gluu\n");
    for (i, s) in servers.iter().enumerate() {
        clustermgr_tests::eventually_blocking(
            &format!("the expired token gone from {}", NODES[i]),
            Duration::from_secs(10),
            || !has(s, token),
        );
    }

    // The console's Replication page on this replicating cluster: every heartbeat read
    // on every node, in the heat map and in words (the README's screenshot).
    {
        use std::os::unix::fs::PermissionsExt;
        let toml = ctl.home.join("controller.toml");
        let text = std::fs::read_to_string(&toml).unwrap_or_default();
        let text = if text.contains("address = \"127.0.0.1:5000\"") {
            text.replace("address = \"127.0.0.1:5000\"", "address = \"127.0.0.1:0\"")
        } else {
            format!("{text}\n[web]\naddress = \"127.0.0.1:0\"\n")
        };
        std::fs::write(&toml, text).unwrap();
        let pw = ctl.home.parent().unwrap().join("vera.pw");
        std::fs::write(&pw, "vera's long password\n").unwrap();
        std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
        let pw_arg = pw.display().to_string();
        ok(
            ctl.run(&[
                "user",
                "add",
                "vera",
                "--role",
                "viewer",
                "--password-file",
                &pw_arg,
            ]),
            "user add",
        );
        let serve = ctl.serve().await;
        let addr = clustermgr_tests::web::console_address(&ctl.home, Duration::from_secs(10));
        let base = format!("http://{addr}");
        let b = clustermgr_tests::browser::Browser::start();
        b.goto(&format!("{base}/login"));
        let name = b.wait_for("#name", Duration::from_secs(10));
        b.type_into(&name, "vera");
        let field = b.wait_for("#password", Duration::from_secs(5));
        b.type_into(&field, "vera's long password\u{E007}");
        b.wait_until("the console", Duration::from_secs(10), |b| {
            b.url() == format!("{base}/")
        });
        b.goto(&format!("{base}/#/replication"));
        b.wait_until(
            "every heartbeat in the matrix",
            Duration::from_secs(30),
            |b| {
                let lag = b.text_of("#lag");
                NODES.iter().all(|n| lag.contains(n)) && !lag.contains('–')
            },
        );
        assert!(
            b.text_of("#links").contains("connected"),
            "{}",
            b.text_of("#links")
        );
        b.screenshot("replication");
        drop(b);
        serve.stop();
    }

    // An unchanged cluster changes nothing.
    let plan_json = ctl.run(&["--json", "plan"]);
    let v: serde_json::Value = serde_json::from_slice(&plan_json.stdout).expect("plan --json");
    clustermgr_tests::schema::assert_valid("plan", &v);
    for node in v["nodes"].as_array().expect("nodes") {
        for e in node["entries"].as_array().expect("entries") {
            assert!(
                e["change"] == "unchanged" || e["change"] == "waiting",
                "{}: {} is {} on a second plan",
                node["node"],
                e["path"],
                e["change"]
            );
        }
    }
    // The replication password is nowhere in what was printed, kept or logged.
    let pw = build_record(&ctl)
        .replication_password
        .expect("a password was made");
    let mut seen = String::new();
    for out in [&o.stdout, &o.stderr, &plan.stdout, &plan_json.stdout] {
        seen.push_str(&String::from_utf8_lossy(out));
    }
    seen.push_str(&String::from_utf8_lossy(
        &ctl.run(&["--json", "history"]).stdout,
    ));
    for h in net.hosts() {
        for f in [
            "/var/log/clustermgr-agent.log",
            "/var/lib/clustermgr/exec-journal.jsonl",
        ] {
            seen.push_str(&std::fs::read_to_string(h.path(f)).unwrap_or_default());
        }
    }
    assert!(
        seen.contains("apply of revision"),
        "the agents' logs were read"
    );
    assert!(!seen.contains(&pw), "the replication password leaked");

    // With the shared cache: oxCacheConfiguration names the node's own tunnel and
    // carries the Redis password, encrypted with the node's key as Gluu stores it.
    let rev = revision(&servers[1]);
    ok(
        ctl.run(&["cluster", "set", "cache", "redis"]),
        "cluster set cache redis",
    );
    let o = ctl.run(&["apply", "--yes"]);
    ok(o.clone(), "apply with the shared cache");
    let redis_pw = build_record(&ctl)
        .redis_password
        .expect("a Redis password was made");
    let encrypted = clustermgr_agent::ldap::gluu_encode(redis_pw.as_bytes(), SALT).unwrap();
    for s in &servers {
        clustermgr_tests::eventually_blocking(
            "oxCacheConfiguration with Redis on every node",
            Duration::from_secs(10),
            || setting(s, "oxCacheConfiguration")["cacheProviderType"] == "REDIS",
        );
        let cache = setting(s, "oxCacheConfiguration");
        let redis = &cache["redisConfiguration"];
        assert_eq!(redis["servers"], "localhost:16379", "{cache}");
        assert_eq!(redis["redisProviderType"], "STANDALONE");
        assert_eq!(redis["password"], encrypted.as_str());
        assert_eq!(
            redis["defaultPutExpiration"], 60,
            "Gluu's other fields stay"
        );
    }
    assert!(revision(&servers[1]) > rev, "oxAuth told to reload");
    let plan = ctl.run(&["--json", "plan"]);
    for out in [&o.stdout, &o.stderr, &plan.stdout] {
        let text = String::from_utf8_lossy(out);
        assert!(!text.contains(&redis_pw) && !text.contains(&encrypted));
    }

    // A fourth Gluu host joins by the same path: it takes the cluster's directory and
    // replicates both ways, and every peer gains a consumer of it.
    servers.push(join(&mut net, &ctl, "gluu4", 4));
    ok(ctl.run(&["apply", "--yes"]), "apply with gluu4");
    assert!(
        has(&servers[3], "cn=written-on-gluu1,o=gluu"),
        "gluu4 has the cluster's data"
    );
    assert!(
        !has(&servers[3], "cn=own-4,o=gluu"),
        "gluu4's own directory was replaced"
    );
    assert!(!has(&servers[0], "cn=own-4,o=gluu"), "never the reverse");
    add(&servers[3], "cn=from-gluu4,o=gluu", "from-gluu4");
    add(&servers[0], "cn=to-gluu4,o=gluu", "to-gluu4");
    for (i, s) in servers.iter().enumerate() {
        clustermgr_tests::eventually_blocking(
            &format!("both ways with gluu4, on node {}", i + 1),
            Duration::from_secs(10),
            || has(s, "cn=from-gluu4,o=gluu") && has(s, "cn=to-gluu4,o=gluu"),
        );
    }
    for (i, s) in servers.iter().enumerate() {
        clustermgr_tests::eventually_blocking(
            &format!("node {} consuming from its three peers", i + 1),
            Duration::from_secs(10),
            || live_consumers(s) == 3,
        );
    }
    // It leaves by `node remove`: every remaining peer stops replicating from it.
    let o = ctl.run(&["node", "remove", "gluu4", "--yes"]);
    let said = ok(o, "node remove gluu4");
    assert!(said.contains("no longer replicate from it"), "{said}");
    clustermgr_tests::eventually_blocking(
        "gluu4 consuming from nobody",
        Duration::from_secs(10),
        || live_consumers(&servers[3]) == 0,
    );
    for (i, s) in servers.iter().take(3).enumerate() {
        clustermgr_tests::eventually_blocking(
            &format!("node {} consuming from its two peers", i + 1),
            Duration::from_secs(10),
            || live_consumers(s) == 2,
        );
    }
    add(
        &servers[1],
        "cn=after-gluu4-left,o=gluu",
        "after-gluu4-left",
    );
    for s in [&servers[0], &servers[2]] {
        clustermgr_tests::eventually_blocking(
            "replication among the three after gluu4 left",
            Duration::from_secs(10),
            || has(s, "cn=after-gluu4-left,o=gluu"),
        );
    }
    // csync2, nginx and Gluu's server lists still name gluu4 until the next apply,
    // which leaves every LDAP entry as it is but those lists.
    ok(ctl.run(&["apply", "--yes"]), "apply after gluu4 left");
    let plan = ctl.run(&["--json", "plan"]);
    let v: serde_json::Value = serde_json::from_slice(&plan.stdout).expect("plan --json");
    for node in v["nodes"].as_array().expect("nodes") {
        for e in node["entries"].as_array().expect("entries") {
            assert!(
                e["change"] == "unchanged" || e["change"] == "waiting",
                "after the removal {}: {} is {}",
                node["node"],
                e["path"],
                e["change"]
            );
        }
    }
    for s in servers.iter().take(3) {
        let idp = setting(s, "oxIDPAuthentication");
        assert_eq!(
            idp["config"]["servers"].as_array().map(Vec::len),
            Some(4),
            "{idp}"
        );
    }
}

/// The LDAP checks of `health --json`: (node, check, level), asserting one of each
/// kind per Gluu node is there.
fn ldap_health(ctl: &clustermgr_tests::Controller) -> Vec<(String, String, String)> {
    let out = ctl.run(&["--json", "health"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let rows: Vec<(String, String, String)> = v["verdicts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| {
            ["ldap", "ldap-links", "ldap-csn", "heartbeat"]
                .contains(&r["check"].as_str().unwrap_or_default())
        })
        .map(|r| {
            let s = |k: &str| r[k].as_str().unwrap_or_default().to_string();
            (s("node"), s("check"), s("level"))
        })
        .collect();
    if rows.len() < NODES.len() * 4 {
        eprintln!("health so far: {rows:?}");
        return vec![(String::new(), String::new(), "missing".into())];
    }
    rows
}

/// OpenDJ's `dsreplication`, stood in for in the container: it refuses a password in
/// its arguments (and records that), checks that every password file it is given is
/// the owner's alone, keeps the replication topology and a log of what it did in
/// `/shared`, a directory every host's container shares, and fails on purpose when a
/// `fail-SUBCOMMAND-HOST` file is there.
const DSREPLICATION: &str = r#"#!/bin/sh
S=/shared
for a in "$@"; do
  case "$a" in
    --bindPassword1|--bindPassword2|--adminPassword|--bindPassword|-w|-j)
      echo "option $a in the arguments" >> $S/violations; echo "refused: a password option" >&2; exit 2;;
  esac
  if grep -qxF -- "$a" $S/passwords; then
    echo "a password in the arguments" >> $S/violations; echo "refused: a password in argv" >&2; exit 2
  fi
done
p=""
for a in "$@"; do
  case "$p" in
    --bindPasswordFile1|--bindPasswordFile2|--adminPasswordFile|--bindPasswordFile)
      [ -f "$a" ] || { echo "no password file $a" >&2; exit 3; }
      m=$(stat -c %a "$a")
      [ "$m" = 600 ] || { echo "$a has mode $m" >> $S/violations; exit 3; };;
  esac
  p="$a"
done
arg() { k="$1"; shift; p=""; for a in "$@"; do [ "$p" = "$k" ] && { echo "$a"; return; }; p="$a"; done; }
cmd="$1"
case "$cmd" in
  status)
    [ -s $S/topology ] || { echo "There are no base DNs replicated"; exit 0; }
    while read base host; do echo "$base : $host:4444 : 10 : true : 1 : 2 : 8989 : 0 : : true"; done < $S/topology;;
  enable)
    h1=$(arg --host1 "$@"); h2=$(arg --host2 "$@")
    [ -f $S/fail-enable-$h2 ] && { echo "An error occurred enabling $h1 and $h2 (stand-in failure)" >&2; exit 1; }
    echo "enable $h1 $h2" >> $S/log
    p=""
    for a in "$@"; do
      if [ "$p" = --baseDN ]; then
        for h in $h1 $h2; do grep -qxF "$a $h" $S/topology 2>/dev/null || echo "$a $h" >> $S/topology; done
      fi
      p="$a"
    done;;
  initialize)
    src=$(arg --hostSource "$@"); dst=$(arg --hostDestination "$@")
    [ -f $S/fail-initialize-$dst ] && { echo "Error initializing $dst from $src (stand-in failure)" >&2; exit 1; }
    echo "initialize $src $dst" >> $S/log;;
  disable)
    h=$(arg --hostname "$@")
    echo "disable $h" >> $S/log
    # Replaced at once, as a real server's topology changes: a status read by another
    # node's apply never sees it half-written.
    grep -v " $h\$" $S/topology > $S/topology.$$; mv $S/topology.$$ $S/topology;;
  *) echo "unknown subcommand $cmd" >&2; exit 4;;
esac
"#;

/// `dsconfig`, stood in for: the same argument checks, and a line in the log.
const DSCONFIG: &str = r#"#!/bin/sh
S=/shared
for a in "$@"; do
  case "$a" in
    --bindPassword|-w|-j) echo "option $a in the arguments" >> $S/violations; exit 2;;
  esac
  if grep -qxF -- "$a" $S/passwords; then echo "a password in the arguments" >> $S/violations; exit 2; fi
done
echo "dsconfig $1" >> $S/log
"#;

/// OpenDJ's tools (the stand-ins) in `h`'s Gluu container, busybox for their shell,
/// and `shared` mounted at the container's `/shared`.
fn opendj_stand_ins(h: &clustermgr_tests::netns::Host, shared: &std::path::Path) {
    let bin = "/opt/gluu-server/opt/opendj/bin";
    h.sh(&format!(
        "set -e; r=/opt/gluu-server; mkdir -p $r/bin $r/shared $r/tmp {bin}; chmod 1777 $r/tmp; cp /bin/busybox $r/bin/busybox; \
         for t in sh grep stat cat mv; do ln -sf busybox $r/bin/$t; done; \
         mount --bind {} $r/shared",
        shared.display()
    ));
    for (name, text) in [("dsreplication", DSREPLICATION), ("dsconfig", DSCONFIG)] {
        let path = h.path(&format!("{bin}/{name}"));
        std::fs::write(&path, text).expect("a stand-in tool");
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("chmod");
    }
}

fn opendj_log(shared: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(shared.join("log"))
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.starts_with("dsconfig"))
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opendj_replication_is_driven_through_its_own_tools_enabling_only_what_is_missing() {
    let (mut net, ctl) = clustermgr_tests::gluu::hosts();
    let shared = tempfile::tempdir().expect("tempdir");
    let mut servers = Vec::new();
    for (i, h) in net.hosts().iter().enumerate() {
        servers.push(clustermgr_tests::standalone::gluu_node(h, i + 1));
        opendj_stand_ins(h, shared.path());
    }
    let passwords = |servers: &[clustermgr_tests::slapd::Slapd]| {
        let all: String = servers.iter().map(|s| format!("{}\n", s.root_pw)).collect();
        std::fs::write(shared.path().join("passwords"), all).expect("passwords");
    };
    passwords(&servers);
    let ip = |i: usize| net.hosts()[i].ip.to_string();
    let (ip1, ip2, ip3) = (ip(0), ip(1), ip(2));
    ok(
        ctl.run(&["cluster", "set", "gluu-version", "4.2.3"]),
        "gluu-version",
    );
    ok(
        ctl.run(&["cluster", "set", "ldap-replication", "on"]),
        "ldap-replication",
    );
    let plan = ok(ctl.run(&["plan"]), "plan");
    assert_eq!(
        plan.matches("create opendj:replication").count(),
        2,
        "the two joining nodes' replication is planned (the seed has nothing to do yet): {plan}"
    );
    assert_eq!(
        plan.matches("its own o=gluu is emptied and replaced")
            .count(),
        2,
        "gluu2 and gluu3 are said to take the cluster's directory: {plan}"
    );
    let v: serde_json::Value =
        serde_json::from_slice(&ctl.run(&["--json", "plan"]).stdout).expect("plan --json");
    let diffs = v.to_string();
    assert!(
        diffs.contains(&format!("initialize {ip2} from {ip1}")),
        "{diffs}"
    );
    let o = ctl.run(&["apply", "--yes"]);
    let applied = ok(o.clone(), "apply");
    let mut log = opendj_log(shared.path());
    log.sort();
    let mut want = vec![
        format!("enable {ip1} {ip2}"),
        format!("enable {ip1} {ip3}"),
        format!("initialize {ip1} {ip2}"),
        format!("initialize {ip1} {ip3}"),
    ];
    want.sort();
    assert_eq!(
        log, want,
        "only the missing pairs, and only the new nodes initialized"
    );
    assert!(
        !shared.path().join("violations").exists(),
        "{:?}",
        std::fs::read_to_string(shared.path().join("violations"))
    );
    // An unchanged cluster changes nothing: no enable, no initialize.
    ok(ctl.run(&["apply", "--yes"]), "a second apply");
    assert_eq!(
        opendj_log(shared.path()).len(),
        4,
        "a working cluster is left alone"
    );
    // A node joining whose initialize fails halfway: said with the tool's words; the
    // next apply initializes it without enabling its pair again.
    let s4 = clustermgr_tests::standalone::join(&mut net, &ctl, "gluu4", 4);
    let h4 = net.host("gluu4");
    opendj_stand_ins(h4, shared.path());
    servers.push(s4);
    passwords(&servers);
    let ip4 = h4.ip.to_string();
    std::fs::write(shared.path().join(format!("fail-initialize-{ip4}")), "").unwrap();
    let o = ctl.run(&["apply", "--yes"]);
    assert!(!o.status.success(), "a failed initialize fails the apply");
    let err = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        err.contains("stand-in failure"),
        "the tool's own words: {err}"
    );
    assert!(err.contains("gluu4"), "{err}");
    std::fs::remove_file(shared.path().join(format!("fail-initialize-{ip4}"))).unwrap();
    ok(
        ctl.run(&["apply", "--yes"]),
        "apply once the cause is fixed",
    );
    let log = opendj_log(shared.path());
    assert_eq!(
        log.iter()
            .filter(|l| l.starts_with("enable") && l.ends_with(&ip4))
            .count(),
        1,
        "{log:?}"
    );
    assert_eq!(
        log.iter()
            .filter(|l| *l == &format!("initialize {ip1} {ip4}"))
            .count(),
        1,
        "{log:?}"
    );
    assert!(
        !log.iter().any(|l| l.starts_with("initialize")
            && !l.ends_with(&ip4)
            && !l.ends_with(&ip2)
            && !l.ends_with(&ip3)),
        "no running node was initialized: {log:?}"
    );
    assert!(!shared.path().join("violations").exists());
    // It leaves by `node remove`: its own replication is disabled, the others' left be.
    ok(
        ctl.run(&["node", "remove", "gluu4", "--yes"]),
        "node remove gluu4",
    );
    let log = opendj_log(shared.path());
    assert_eq!(log.last(), Some(&format!("disable {ip4}")), "{log:?}");
    let topology = std::fs::read_to_string(shared.path().join("topology")).unwrap();
    assert!(
        !topology.contains(&ip4) && topology.contains(&ip3),
        "{topology}"
    );
    // The password files are gone from every container, and no password was printed.
    for h in net.hosts() {
        let left = h.sh("ls /opt/gluu-server/tmp 2>/dev/null || true");
        assert!(
            !left.contains("clustermgr-opendj"),
            "password files left on {}: {left}",
            h.name
        );
    }
    let pw = build_record(&ctl).replication_password.expect("a password");
    assert!(!applied.contains(&pw) && !plan.contains(&pw));
}
