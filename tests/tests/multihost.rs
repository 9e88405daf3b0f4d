//! Tests on the multi-host harness: hosts in network namespaces with real sshd. The
//! harness's own guarantees first (isolation, links, teardown), then SSH bootstrap.

use std::process::Command;

use clustermgr_tests::netns::{Net, sweep_stale};

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
    assert!(!a.run(&["bash", "-c", &format!("timeout 1 bash -c '{reach}'")]).status.success());
    b.restore_link();
    // The kernel may take up to a second to pass traffic on a link that came back.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !b.tcp_open(22) {
        assert!(std::time::Instant::now() < deadline, "beta unreachable after restore");
    }
}

#[test]
fn root_logs_in_with_the_key_and_a_verified_host_key() {
    let mut net = Net::new();
    net.add_host("gamma");
    let kh = net.known_hosts();
    let h = net.host("gamma");
    let out = Command::new("ssh")
        .args(["-F", "/dev/null", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes"])
        .arg("-o")
        .arg(format!("UserKnownHostsFile={}", kh.display()))
        .arg("-i")
        .arg(net.client_key())
        .arg(h.ssh_target())
        .arg("hostname; id -u")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "gamma\n0\n");

    // An empty known_hosts: strict checking refuses the host.
    let empty = tempfile::NamedTempFile::new().unwrap();
    let out = Command::new("ssh")
        .args(["-F", "/dev/null", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes"])
        .arg("-o")
        .arg(format!("UserKnownHostsFile={}", empty.path().display()))
        .arg("-i")
        .arg(net.client_key())
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
    let link = Command::new("ip").args(["link", "show", &bridge]).output().unwrap();
    assert!(!link.status.success(), "bridge {bridge} outlived its Net");

    // A run that died without tearing down: its claim names a dead process.
    let mut crashed = Net::new();
    crashed.add_host("epsilon");
    let ns = crashed.host("epsilon").netns().to_string();
    let sshd_pids = Command::new("ip").args(["netns", "pids", &ns]).output().unwrap();
    assert!(!sshd_pids.stdout.is_empty());
    let mut dead = Command::new("true").spawn().unwrap();
    let dead_pid = dead.id();
    dead.wait().unwrap();
    std::fs::write(crashed.claim_file(), dead_pid.to_string()).unwrap();
    std::mem::forget(crashed);
    assert!(has_ns(&ns));

    sweep_stale();
    assert!(!has_ns(&ns), "the crashed run's namespace {ns} was not swept");
}
