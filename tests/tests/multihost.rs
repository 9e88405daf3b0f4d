//! Tests on the multi-host harness: hosts in network namespaces with real sshd. The
//! harness's own guarantees first (isolation, links, teardown), then SSH bootstrap.

use std::process::Command;

use clustermgr_tests::bench::ssh_command;
use clustermgr_tests::netns::{Net, sweep_stale};
use clustermgr_tests::{Controller, eventually_blocking, stderr, stdout};

fn secs(n: u64) -> std::time::Duration {
    std::time::Duration::from_secs(n)
}

fn netns_list() -> String {
    let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn has_ns(name: &str) -> bool {
    netns_list()
        .lines()
        .any(|l| l.split_whitespace().next() == Some(name))
}

#[test]
fn hosts_are_isolated_and_reach_each_other() {
    let mut net = Net::new();
    net.add_host("alpha");
    net.add_host("beta");
    let (a, b) = (net.host("alpha"), net.host("beta"));

    assert_eq!(a.sh("hostname").trim(), "alpha");
    assert_eq!(b.sh("hostname").trim(), "beta");

    // Writes under the overlaid paths stay with their host.
    a.sh("echo alpha-only > /etc/cm-harness-probe && mkdir -p /opt/gluu-server");
    assert_eq!(
        std::fs::read_to_string(a.path("/etc/cm-harness-probe")).unwrap(),
        "alpha-only\n"
    );
    assert!(!b.path("/etc/cm-harness-probe").exists());
    assert!(!std::path::Path::new("/etc/cm-harness-probe").exists());
    assert!(!b.path("/opt/gluu-server").exists());

    // Each host reaches the other's sshd over the bridge, and the controller reaches
    // both.
    let reach = format!("exec 3<>/dev/tcp/{}/22 && echo open", b.ip);
    assert_eq!(a.run(&["bash", "-c", &reach]).stdout, b"open\n");
    assert!(a.tcp_open(22) && b.tcp_open(22));

    // Cutting a link takes the host off the network; restoring brings it back.
    b.cut_link();
    assert!(!b.tcp_open(22));
    assert!(
        !a.run(&["bash", "-c", &format!("timeout 1 bash -c '{reach}'")])
            .status
            .success()
    );
    b.restore_link();
    // The kernel may take up to a second to pass traffic on a link that came back.
    eventually_blocking("beta to be reachable after restore", secs(10), || {
        b.tcp_open(22)
    });
}

#[test]
fn root_logs_in_with_the_key_and_a_verified_host_key() {
    let mut net = Net::new();
    net.add_host("gamma");
    let kh = net.known_hosts();
    let h = net.host("gamma");
    let out = ssh_command(&net.client_key(), &kh)
        .arg(h.ssh_target())
        .arg("hostname; id -u")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "gamma\n0\n");

    // An empty known_hosts: strict checking refuses the host.
    let empty = tempfile::NamedTempFile::new().unwrap();
    let out = ssh_command(&net.client_key(), empty.path())
        .arg(h.ssh_target())
        .arg("true")
        .output()
        .unwrap();
    assert!(!out.status.success());
}

#[test]
fn teardown_removes_everything_and_a_crashed_run_is_swept() {
    let mut net = Net::new();
    net.add_host("delta");
    let ns = net.host("delta").netns().to_string();
    let k = net.k();
    let bridge = format!("cmtbr{k}");
    assert!(has_ns(&ns));
    drop(net);
    assert!(!has_ns(&ns), "namespace {ns} outlived its Net");
    let link = Command::new("ip")
        .args(["link", "show", &bridge])
        .output()
        .unwrap();
    assert!(!link.status.success(), "bridge {bridge} outlived its Net");

    // A run that died without tearing down: its claim names a dead process.
    let mut crashed = Net::new();
    crashed.add_host("epsilon");
    let ns = crashed.host("epsilon").netns().to_string();
    let sshd_pids = Command::new("ip")
        .args(["netns", "pids", &ns])
        .output()
        .unwrap();
    assert!(!sshd_pids.stdout.is_empty());
    let mut dead = Command::new("true").spawn().unwrap();
    let dead_pid = dead.id();
    dead.wait().unwrap();
    std::fs::write(crashed.claim_file(), dead_pid.to_string()).unwrap();
    let leftover_dir = crashed.dir().to_path_buf();
    std::mem::forget(crashed);
    assert!(has_ns(&ns));

    sweep_stale();
    // Another test making its Net at this moment may have taken the stale claim and
    // be sweeping it.
    eventually_blocking(
        &format!("the crashed run's namespace {ns} to be swept"),
        secs(10),
        || !has_ns(&ns),
    );
    // A real crash leaves this in /tmp too; the forgotten Net's is removed here.
    std::fs::remove_dir_all(&leftover_dir).unwrap();
}

#[test]
fn bootstrap_four_hosts_then_work_without_ssh() {
    let mut net = Net::new();
    for h in ["gluu1", "gluu2", "gluu3", "lb1"] {
        net.add_host(h);
    }
    // gluu1 runs Gluu in its container root, as bootstrap should notice.
    net.host("gluu1")
        .sh("mkdir -p /opt/gluu-server/opt/gluu/jetty/oxauth");
    let ctl = Controller::new();
    let inventory = ctl.inventory(&net, "gluu1");
    let started = std::time::Instant::now();
    let out = ctl
        .cmd()
        .args(["--json", "node", "add", "--from"])
        .arg(&inventory)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    eprintln!("bootstrapped 4 hosts in {:?}", started.elapsed());
    let results = clustermgr_tests::schema::json(&out, "node-add-ssh");
    let results = results["nodes"].as_array().unwrap();
    assert_eq!(results.len(), 4);
    for r in results {
        assert_eq!(r["ok"], true, "{r}");
        let o = &r["outcome"];
        assert_eq!(o["identity"], "new");
        assert_eq!(o["binary"], "installed");
        // No systemd here: the init script, registered with update-rc.d.
        assert_eq!(o["service"], "init-script", "{o}");
        assert_eq!(o["facts"]["arch"], std::env::consts::ARCH);
        assert!(o["facts"]["glibc"].is_string());
        assert!(o["facts"]["free_kb"].as_u64().unwrap() > 0);
        assert_eq!(o["facts"]["systemd"], false);
        let gluu_root = if r["node"] == "gluu1" {
            serde_json::json!("/opt/gluu-server")
        } else {
            serde_json::Value::Null
        };
        assert_eq!(o["facts"]["gluu_root"], gluu_root, "{o}");
    }
    for h in net.hosts() {
        // The key was made on the host and stays there; the agent runs from the
        // installed binary under the init script's pidfile.
        let key = h.path("/etc/clustermgr/agent.key");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(!ctl.home.join(format!("{}.key", h.name)).exists());
        h.sh("test -x /usr/local/bin/clustermgr-agent && /etc/init.d/clustermgr-agent status");
    }
    let list = ctl.run(&["--json", "node", "list"]);
    let nodes = clustermgr_tests::schema::json(&list, "node-list");
    let primary: Vec<_> = nodes["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["primary"] == true)
        .map(|n| n["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(primary, ["gluu1"]);

    // From here on, no SSH at all.
    for h in net.hosts_mut() {
        h.stop_sshd();
        assert!(!h.tcp_open(22));
    }
    let out = ctl.run(&["--json", "exec", "--", "hostname"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let mut seen: Vec<(String, String)> =
        clustermgr_tests::schema::json_lines(&stdout(&out), "exec")
            .into_iter()
            .map(|o| {
                (
                    o["node"].as_str().unwrap().to_string(),
                    o["stdout"].as_str().unwrap_or_default().trim().to_string(),
                )
            })
            .collect();
    seen.sort();
    let want: Vec<(String, String)> = ["gluu1", "gluu2", "gluu3", "lb1"]
        .iter()
        .map(|n| (n.to_string(), n.to_string()))
        .collect();
    assert_eq!(seen, want);
    let out = ctl.run(&["ping"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = ctl.run(&["--json", "status"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let status = clustermgr_tests::schema::json(&out, "status");
    let states: Vec<_> = status["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["state"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(states, ["ok"; 4], "{status}");
}

/// The `--json` outcome of a single-host `node add --ssh`.
fn outcome(out: &std::process::Output) -> serde_json::Value {
    assert!(out.status.success(), "{}\n{}", stdout(out), stderr(out));
    let v = clustermgr_tests::schema::json(out, "node-add-ssh");
    v["nodes"][0]["outcome"].clone()
}

#[test]
fn bootstrap_verifies_host_keys_and_keeps_or_renews_identity() {
    let mut net = Net::new();
    net.add_host("solo");
    let known = net.known_hosts();
    let ctl = Controller::new();
    let dir = ctl.home.parent().unwrap().to_path_buf();
    let empty = dir.join("empty_known_hosts");
    std::fs::write(&empty, "").unwrap();
    let fp = net.host("solo").host_key_fingerprint();
    let kh = |p: &std::path::Path| ["--known-hosts".to_string(), p.display().to_string()];

    // Unknown key: refused, showing the fingerprint and the flag to accept it.
    let out = ctl.add(&net, "solo", &kh(&empty).each_ref().map(|s| s.as_str()));
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains(&fp) && err.contains("--accept-host-key"),
        "{err}"
    );
    assert!(
        !net.host("solo")
            .path("/usr/local/bin/clustermgr-agent")
            .exists()
    );

    // A fingerprint that is not the host's: refused.
    let mut args = kh(&empty).to_vec();
    args.extend([
        "--accept-host-key".into(),
        "SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".into(),
    ]);
    let out = ctl.add(
        &net,
        "solo",
        &args.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("refusing"), "{}", stderr(&out));

    // A changed key (known_hosts names another key for this address): refused always,
    // even with the right fingerprint offered.
    let other = dir.join("other_key");
    let st = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&other)
        .status()
        .unwrap();
    assert!(st.success());
    let other_pub = std::fs::read_to_string(dir.join("other_key.pub")).unwrap();
    let changed = dir.join("changed_known_hosts");
    let line: Vec<&str> = other_pub.split_whitespace().take(2).collect();
    std::fs::write(
        &changed,
        format!("{} {}\n", net.host("solo").ip, line.join(" ")),
    )
    .unwrap();
    let mut args = kh(&changed).to_vec();
    args.extend(["--accept-host-key".into(), fp.clone()]);
    let out = ctl.add(
        &net,
        "solo",
        &args.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("CHANGED"), "{}", stderr(&out));

    // The right fingerprint: accepted, and the node enrolled.
    let mut args = vec!["--json".to_string()];
    args.extend(kh(&empty));
    args.extend(["--accept-host-key".into(), fp.clone()]);
    let out = ctl.add_json(&net, "solo", &args);
    let first = outcome(&out);
    assert_eq!(first["identity"], "new");
    let key_before = std::fs::read(net.host("solo").path("/etc/clustermgr/agent.key")).unwrap();

    // Again: nothing changes but what must; the identity stays.
    let out = ctl.add_json(
        &net,
        "solo",
        &[
            "--json".into(),
            kh(&known)[0].clone(),
            kh(&known)[1].clone(),
        ],
    );
    let again = outcome(&out);
    assert_eq!(again["identity"], "kept");
    assert_eq!(again["binary"], "unchanged");
    assert_eq!(again["key"], first["key"]);
    assert_eq!(
        std::fs::read(net.host("solo").path("/etc/clustermgr/agent.key")).unwrap(),
        key_before
    );

    // --reenroll: a new key made on the host, pinned, and the old one's certs revoked.
    let out = ctl.add_json(
        &net,
        "solo",
        &[
            "--json".into(),
            kh(&known)[0].clone(),
            kh(&known)[1].clone(),
            "--reenroll".into(),
        ],
    );
    let re = outcome(&out);
    assert_eq!(re["identity"], "reenrolled");
    assert_ne!(re["key"], first["key"]);
    assert_ne!(
        std::fs::read(net.host("solo").path("/etc/clustermgr/agent.key")).unwrap(),
        key_before
    );
    let out = ctl.run(&["ping"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let store = clustermgr::store::Store::open(
        &ctl.home.join("inventory.redb"),
        &ctl.home.join("serve.sock"),
    )
    .unwrap();
    let certs = store.certs().unwrap();
    let old_key = first["key"].as_str().unwrap();
    let old: Vec<_> = certs
        .iter()
        .filter(|c| c.key_fingerprint == old_key)
        .collect();
    assert!(!old.is_empty());
    assert!(old.iter().all(|c| c.revoked_at.is_some()), "{old:?}");
    assert_eq!(
        store.node("solo").unwrap().unwrap().pinned_key,
        re["key"].as_str().unwrap()
    );
}

#[test]
fn bootstrap_errors_name_the_host_and_the_next_step() {
    let mut net = Net::new();
    net.add_host("edge");
    net.add_host("busy");
    let known = net.known_hosts();
    let ctl = Controller::new();
    let dir = ctl.home.parent().unwrap().to_path_buf();
    let kh = ["--known-hosts".to_string(), known.display().to_string()];

    // A key the host does not accept.
    let stranger = dir.join("stranger");
    assert!(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&stranger)
            .status()
            .unwrap()
            .success()
    );
    let out = ctl
        .cmd()
        .args([
            "node",
            "add",
            "edge",
            "--ssh",
            &net.host("edge").ssh_target(),
            "--identity",
        ])
        .arg(&stranger)
        .args(&kh)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("edge") && err.contains("refused") && err.contains("--identity"),
        "{err}"
    );

    // A login that is neither root nor allowed sudo.
    // "*" rather than useradd's "!": a locked account cannot log in at all.
    net.host("edge")
        .sh("useradd -M -s /bin/sh cmuser && usermod -p '*' cmuser");
    let out = ctl
        .cmd()
        .args(["node", "add", "edge", "--ssh"])
        .arg(format!("cmuser@{}", net.host("edge").ip))
        .arg("--identity")
        .arg(net.client_key())
        .args(&kh)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("not root"), "{}", stderr(&out));

    // A binary for another architecture: refused before anything is uploaded.
    let mut foreign = std::fs::read(clustermgr_tests::agent_bin()).unwrap();
    foreign[0x12..0x14].copy_from_slice(&183u16.to_le_bytes());
    let foreign_path = dir.join("clustermgr-agent-aarch64");
    std::fs::write(&foreign_path, &foreign).unwrap();
    let mut args = kh.to_vec();
    args.extend(["--agent-binary".into(), foreign_path.display().to_string()]);
    let out = ctl.add(
        &net,
        "edge",
        &args.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
    );
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("aarch64") && err.contains("--agent-binary"),
        "{err}"
    );
    assert!(
        !net.host("edge")
            .path("/usr/local/bin/clustermgr-agent")
            .exists()
    );

    // The agent's port is taken on the host: it does not come up, and the error shows
    // the agent's own last words.
    net.host_mut("busy").add_service(
        "squatter",
        &[
            "perl",
            "-MIO::Socket::INET",
            "-e",
            "$| = 1; my $s = IO::Socket::INET->new(LocalAddr => '0.0.0.0:7443', Proto => 'udp') or die $!; print qq(bound\n); sleep 3600",
        ],
    );
    eventually_blocking("the squatter to bind", secs(10), || {
        net.host("busy").service_log("squatter").contains("bound")
    });
    let out = ctl.add(
        &net,
        "busy",
        &kh.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
    );
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("did not come up") && err.contains("7443"),
        "{err}"
    );

    // The agent runs but the controller cannot reach the address given: the error
    // points at the UDP port between them. Nothing is recorded.
    let mut args = kh.to_vec();
    args.extend(["--address".into(), format!("10.213.{}.250:7443", net.k())]);
    let out = ctl
        .cmd()
        .args([
            "--connect-timeout",
            "1",
            "node",
            "add",
            "edge",
            "--ssh",
            &net.host("edge").ssh_target(),
            "--identity",
        ])
        .arg(net.client_key())
        .args(&args)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("UDP port 7443") && err.contains("--address"),
        "{err}"
    );
    let list = stdout(&ctl.run(&["node", "list"]));
    assert!(!list.contains("edge"), "{list}");
}

#[test]
fn remove_uninstall_has_the_agent_remove_itself_without_ssh() {
    let mut net = Net::new();
    net.add_host("gone");
    let known = net.known_hosts();
    let ctl = Controller::new();
    let out = ctl.add_json(
        &net,
        "gone",
        &[
            "--json".into(),
            "--known-hosts".into(),
            known.display().to_string(),
        ],
    );
    assert_eq!(outcome(&out)["identity"], "new");
    net.host_mut("gone").stop_sshd();

    let out = ctl.run(&["node", "remove", "gone", "--uninstall", "--yes"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let h = net.host("gone");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let installed = [
        "/usr/local/bin/clustermgr-agent",
        "/etc/clustermgr",
        "/etc/init.d/clustermgr-agent",
        "/var/lib/clustermgr",
        "/run/clustermgr-agent.pid",
    ];
    while installed.iter().any(|p| h.path(p).exists()) {
        assert!(
            std::time::Instant::now() < deadline,
            "still there: {:?}",
            installed
                .iter()
                .filter(|p| h.path(p).exists())
                .collect::<Vec<_>>()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // No rc links left behind, no agent process, and the log kept.
    let links = h.sh("ls /etc/rc*.d/ | grep -c clustermgr || true");
    assert_eq!(links.trim(), "0");
    let agents: Vec<String> = h
        .processes()
        .into_iter()
        .filter(|c| c.contains("clustermgr-agent run"))
        .collect();
    assert!(agents.is_empty(), "{agents:?}");
    assert!(h.path("/var/log/clustermgr-agent.log").exists());
    let list = stdout(&ctl.run(&["node", "list"]));
    assert!(!list.contains("gone"), "{list}");
}

fn sha256(path: &std::path::Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    assert!(out.status.success(), "sha256sum {}", path.display());
    stdout(&out).split_whitespace().next().unwrap().to_string()
}

const AGENT: &str = "/usr/local/bin/clustermgr-agent";

/// The process id in the init script's pidfile.
fn agent_pid(h: &clustermgr_tests::netns::Host) -> u32 {
    let text = std::fs::read_to_string(h.path("/run/clustermgr-agent.pid")).unwrap();
    text.trim().parse().unwrap()
}

/// Bootstraps every host of `net` over SSH, then stops every sshd.
fn bootstrapped(net: &mut Net, ctl: &Controller) {
    let known = net.known_hosts();
    let names: Vec<String> = net.hosts().iter().map(|h| h.name.clone()).collect();
    for name in &names {
        let out = ctl.add(net, name, &["--known-hosts", known.to_str().unwrap()]);
        assert!(out.status.success(), "{name}: {}", stderr(&out));
    }
    for h in net.hosts_mut() {
        h.stop_sshd();
    }
}

/// `node upgrade ARGS --json`: the exit status and the outcome of each node by name.
fn upgrade(ctl: &Controller, args: &[&str]) -> (bool, Vec<(String, String, String)>) {
    let out = ctl
        .cmd()
        .args(["--json", "node", "upgrade"])
        .args(args)
        .output()
        .unwrap();
    let outcomes = clustermgr_tests::schema::json(&out, "node-results");
    let outcomes = outcomes["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            let s = |k: &str| o[k].as_str().unwrap_or_default().to_string();
            (s("node"), s("state"), s("message"))
        })
        .collect();
    (out.status.success(), outcomes)
}

#[test]
fn upgrade_replaces_each_agent_through_itself_keeping_its_process() {
    let mut net = Net::new();
    for h in ["up1", "up2"] {
        net.add_host(h);
    }
    let ctl = Controller::new();
    bootstrapped(&mut net, &ctl);
    let pids: Vec<u32> = net.hosts().iter().map(agent_pid).collect();
    // A new build: the same agent with bytes appended, so its checksum differs.
    let new = ctl.home.parent().unwrap().join("agent-new");
    let mut bytes = std::fs::read(clustermgr_tests::agent_bin()).unwrap();
    bytes.extend_from_slice(b"\nclustermgr upgrade test build\n");
    std::fs::write(&new, bytes).unwrap();
    let new_sha = sha256(&new);

    let (ok, outcomes) = upgrade(&ctl, &["--agent-binary", new.to_str().unwrap()]);
    assert!(ok, "{outcomes:?}");
    assert_eq!(outcomes.len(), 2);
    for (node, state, message) in &outcomes {
        assert_eq!(state, "ok", "{node}: {message}");
        assert!(message.contains("upgraded from agent"), "{node}: {message}");
    }
    for (h, pid) in net.hosts().iter().zip(pids) {
        assert_eq!(sha256(&h.path(AGENT)), new_sha, "{}", h.name);
        // The same process, now running the new binary: exec kept its id.
        assert_eq!(agent_pid(h), pid, "{}", h.name);
        assert_eq!(
            sha256(std::path::Path::new(&format!("/proc/{pid}/exe"))),
            new_sha
        );
        // Confirmed: neither the old binary nor the upgrade's state is left.
        assert!(!h.path("/usr/local/bin/clustermgr-agent.prev").exists());
        assert!(!h.path("/usr/local/bin/clustermgr-agent.upload").exists());
        assert!(!h.path("/var/lib/clustermgr/upgrade.json").exists());
    }
    let out = ctl.run(&["exec", "--", "true"]);
    assert!(out.status.success(), "{}", stderr(&out));

    // Once more: nothing to send.
    let (ok, outcomes) = upgrade(&ctl, &["--agent-binary", new.to_str().unwrap()]);
    assert!(ok, "{outcomes:?}");
    for (node, _, message) in &outcomes {
        assert!(
            message.contains("already runs this build"),
            "{node}: {message}"
        );
    }
    let audit = stdout(&ctl.run(&["audit"]));
    assert!(audit.contains("node upgrade"), "{audit}");
}

#[test]
fn upgrade_rolls_back_a_new_agent_that_does_not_come_up_and_stops() {
    let mut net = Net::new();
    for h in ["rb1", "rb2"] {
        net.add_host(h);
    }
    let ctl = Controller::new();
    bootstrapped(&mut net, &ctl);
    let fake = env!("CARGO_BIN_EXE_agent-that-fails");
    let h = net.host("rb1");
    let cmt = h.path("/opt/cmt");
    std::fs::create_dir_all(&cmt).unwrap();
    std::fs::copy(clustermgr_tests::agent_bin(), cmt.join("clustermgr-agent")).unwrap();
    let cfg = std::fs::read_to_string(h.path("/etc/clustermgr/agent.toml")).unwrap();
    let no_key = cfg.replace("/etc/clustermgr/agent.key", "/opt/cmt/missing.key");
    std::fs::write(cmt.join("no-key.toml"), no_key).unwrap();
    let other_port = cfg.replace(":7443", ":7999");
    assert_ne!(other_port, cfg);
    std::fs::write(cmt.join("other-port.toml"), other_port).unwrap();
    let before: Vec<String> = net.hosts().iter().map(|h| sha256(&h.path(AGENT))).collect();
    let pid = agent_pid(h);

    for (mode, why) in [
        ("start", "could not start"),
        ("unreachable", "did not confirm"),
    ] {
        std::fs::write(cmt.join("fail-mode"), mode).unwrap();
        let (ok, outcomes) = upgrade(&ctl, &["--agent-binary", fake, "--commit-within", "3"]);
        assert!(!ok, "{mode}: {outcomes:?}");
        let (node, state, message) = &outcomes[0];
        assert_eq!(
            (node.as_str(), state.as_str()),
            ("rb1", "failed"),
            "{mode}: {message}"
        );
        assert!(
            message.contains("rolled back") && message.contains(why),
            "{mode}: {message}"
        );
        // One node at a time: the next one is not touched.
        let (node, state, message) = &outcomes[1];
        assert_eq!(
            (node.as_str(), state.as_str()),
            ("rb2", "skipped"),
            "{mode}: {message}"
        );
        for (h, sha) in net.hosts().iter().zip(&before) {
            assert_eq!(&sha256(&h.path(AGENT)), sha, "{mode}: {}", h.name);
        }
        // The old binary runs again, in the same process, and answers.
        assert_eq!(agent_pid(h), pid, "{mode}");
        assert_eq!(
            sha256(std::path::Path::new(&format!("/proc/{pid}/exe"))),
            before[0]
        );
        assert!(!h.path("/usr/local/bin/clustermgr-agent.prev").exists());
        let out = ctl.run(&["ping", "--nodes", "rb1"]);
        assert!(out.status.success(), "{mode}: {}", stderr(&out));
    }

    // The new agent crashes while on trial and the host's init starts it again (as
    // systemd's Restart= would): its second start puts the old binary back.
    std::fs::write(cmt.join("fail-mode"), "unreachable").unwrap();
    let cli = ctl
        .cmd()
        .args([
            "--json",
            "node",
            "upgrade",
            "--nodes",
            "rb1",
            "--agent-binary",
            fake,
        ])
        .args(["--commit-within", "120"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let marker = h.path("/var/lib/clustermgr/upgrade.json");
    eventually_blocking("the new agent to start on trial", secs(60), || {
        let m = std::fs::read_to_string(&marker).unwrap_or_default();
        m.contains("\"Pending\"") && m.contains("\"starts\": 1")
    });
    h.sh(&format!("kill -9 {pid}"));
    // Dead (or a zombie waiting for its parent) before init looks: a start that still
    // sees it running does nothing, as start-stop-daemon --status says.
    eventually_blocking("the killed agent to be gone", secs(10), || {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |st| {
            st.rsplit(')')
                .next()
                .is_some_and(|rest| rest.trim_start().starts_with('Z'))
        })
    });
    h.sh("/etc/init.d/clustermgr-agent start");
    let out = cli.wait_with_output().unwrap();
    assert!(!out.status.success());
    let o = clustermgr_tests::schema::json(&out, "node-results");
    let message = o["nodes"][0]["message"].as_str().unwrap();
    assert!(
        message.contains("rolled back")
            && message.contains("stopped before the controller confirmed it"),
        "{message}"
    );
    assert_eq!(sha256(&h.path(AGENT)), before[0]);
    let out = ctl.run(&["ping", "--nodes", "rb1"]);
    assert!(out.status.success(), "{}", stderr(&out));
}
