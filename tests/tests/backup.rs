//! End-to-end tests of `clustermgr backup` and `restore`: a cluster of real agents is
//! backed up, restored into a fresh home, and reached from there; a wrong passphrase or
//! a damaged archive restores nothing.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use clustermgr_tests::{Cluster, clustermgr_bin, stderr, stdout};

const PASSPHRASE: &str = "a passphrase long enough";

/// `clustermgr --home HOME ARGS`, with nothing on stdin.
fn run_in(home: &Path, args: &[&str]) -> Output {
    Command::new(clustermgr_bin())
        .arg("--home")
        .arg(home)
        .args(args)
        .env_remove("CLUSTERMGR_HOME")
        .stdin(Stdio::null())
        .output()
        .expect("run clustermgr")
}

/// A passphrase file only its owner can read.
fn passphrase_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("{text}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The JSON a successful command printed.
fn json_of(o: Output, schema: &str) -> serde_json::Value {
    assert!(o.status.success(), "{}", stderr(&o));
    clustermgr_tests::schema::json(&o, schema)
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// What a restore may have left in `dir`: anything at all is too much.
fn entries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_under_serve_restores_into_a_home_the_agents_accept() {
    let c = Cluster::gluu(2).await;
    let before = c.run(&["exec", "--", "true"]);
    assert!(before.status.success(), "{}", stderr(&before));
    let nodes_before = json_of(c.run(&["node", "list", "--json"]), "node-list");
    let tmp = tempfile::tempdir().unwrap();
    let pass = passphrase_file(tmp.path(), "pass", PASSPHRASE);
    let archive = tmp.path().join("cluster.cmbackup");

    // serve holds the store, so the snapshot can only come through its socket.
    let serve = c.serve().await;
    let args = ["--passphrase-file", s(&pass), "--json"];
    let report = json_of(
        c.run(&[&["backup", s(&archive)][..], &args].concat()),
        "backup",
    );
    assert_eq!(report["nodes"], 2);
    assert_eq!(report["cluster"], "e2e");
    drop(serve);
    assert_eq!(mode(&archive), 0o600);
    let sealed = std::fs::read(&archive).unwrap();
    assert!(sealed.starts_with(b"CMBACKUP"));
    assert!(
        !sealed.windows(11).any(|w| w == b"PRIVATE KEY"),
        "the CA key is not in the clear"
    );

    let new_home = tmp.path().join("new-machine").join(".clustermgr");
    let restore = [&["restore", s(&archive)][..], &args].concat();
    let report = json_of(run_in(&new_home, &restore), "restore");
    assert_eq!(report["nodes"], 2);
    // The restore reached every agent with its new controller certificate ...
    assert_eq!(report["reached"], serde_json::json!(["gluu1", "gluu2"]));
    assert_eq!(report["not_reached"], serde_json::json!([]));
    // ... so the backed-up machine's controller key (maybe on a lost machine) is
    // refused by them from now on.
    let o = c.run(&["ping"]);
    assert!(!o.status.success(), "{}", stdout(&o));
    assert!(
        stdout(&o).contains("gluu1") && stdout(&o).contains("gluu2"),
        "{}",
        stdout(&o)
    );
    assert_eq!(mode(&new_home), 0o700);
    assert_eq!(mode(&new_home.join("ca.key")), 0o600);
    assert_eq!(mode(&new_home.join("controller.key")), 0o600);
    assert_eq!(
        read(&new_home.join("ca.key")),
        read(&c.dir().join("ca.key"))
    );
    assert_eq!(
        read(&new_home.join("ca.crt")),
        read(&c.dir().join("ca.crt"))
    );
    assert_ne!(
        read(&new_home.join("controller.key")),
        read(&c.dir().join("controller.key")),
        "the controller's key does not travel; the restore made a new one"
    );
    assert_eq!(
        json_of(run_in(&new_home, &["node", "list", "--json"]), "node-list"),
        nodes_before,
        "the nodes come back with their pinned keys"
    );

    // The agents accept the restored controller: its new certificate chains to the CA
    // they trust, and it still pins their keys.
    let o = run_in(&new_home, &["ping"]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let o = run_in(&new_home, &["exec", "--", "echo", "from the restored home"]);
    assert!(o.status.success(), "{}", stderr(&o));
    for n in ["gluu1", "gluu2"] {
        assert!(
            stdout(&o).contains(&format!("{n} | from the restored home\n")),
            "{}",
            stdout(&o)
        );
    }
    let audit = json_of(run_in(&new_home, &["audit", "--json"]), "audit");
    let audit = audit["entries"].as_array().unwrap();
    let actions: Vec<&str> = audit
        .iter()
        .map(|a| a["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions[actions.len() - 4..],
        ["exec", "backup", "restore", "exec"],
        "{actions:?}"
    );
    assert!(
        audit[audit.len() - 3]["detail"]
            .as_str()
            .unwrap()
            .contains("cluster.cmbackup")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_passphrase_or_a_damaged_archive_restores_nothing() {
    let c = Cluster::gluu(1).await;
    let tmp = tempfile::tempdir().unwrap();
    let pass = passphrase_file(tmp.path(), "pass", PASSPHRASE);
    let wrong = passphrase_file(tmp.path(), "wrong", "not the passphrase at all");
    let archive = tmp.path().join("cluster.cmbackup");
    // Without serve: the CLI snapshots the store itself.
    let o = c.run(&["backup", s(&archive), "--passphrase-file", s(&pass)]);
    assert!(o.status.success(), "{}", stderr(&o));

    let targets = tmp.path().join("targets");
    std::fs::create_dir(&targets).unwrap();
    let fresh = targets.join("fresh");
    let o = run_in(
        &fresh,
        &["restore", s(&archive), "--passphrase-file", s(&wrong)],
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("passphrase is wrong") && stderr(&o).contains("Nothing was restored"),
        "{}",
        stderr(&o)
    );
    assert!(
        entries(&targets).is_empty(),
        "no home and no half-written staging directory: {:?}",
        entries(&targets)
    );

    // An empty directory stays empty.
    let empty = targets.join("empty");
    std::fs::create_dir(&empty).unwrap();
    let o = run_in(
        &empty,
        &["restore", s(&archive), "--passphrase-file", s(&wrong)],
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(entries(&empty).is_empty());
    assert_eq!(entries(&targets), ["empty"]);

    // A changed byte anywhere is the same refusal, even with the right passphrase.
    let mut damaged = std::fs::read(&archive).unwrap();
    let middle = damaged.len() / 2;
    damaged[middle] ^= 0x40;
    let damaged_file = tmp.path().join("damaged.cmbackup");
    std::fs::write(&damaged_file, &damaged).unwrap();
    let o = run_in(
        &fresh,
        &["restore", s(&damaged_file), "--passphrase-file", s(&pass)],
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("altered or damaged"), "{}", stderr(&o));
    assert!(!fresh.exists());

    // Never over a cluster.
    let o = run_in(
        &c.dir(),
        &["restore", s(&archive), "--passphrase-file", s(&pass)],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("already holds a cluster"),
        "{}",
        stderr(&o)
    );

    // The right passphrase, at last, restores.
    let o = run_in(
        &fresh,
        &["restore", s(&archive), "--passphrase-file", s(&pass)],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(run_in(&fresh, &["ping"]).status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_passphrase_comes_only_from_an_owner_only_file_or_a_terminal() {
    let c = Cluster::gluu(1).await;
    let tmp = tempfile::tempdir().unwrap();
    let archive = tmp.path().join("cluster.cmbackup");

    let open = passphrase_file(tmp.path(), "open", PASSPHRASE);
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o644)).unwrap();
    let o = c.run(&["backup", s(&archive), "--passphrase-file", s(&open)]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("chmod 600"), "{}", stderr(&o));

    let short = passphrase_file(tmp.path(), "short", "too short");
    let o = c.run(&["backup", s(&archive), "--passphrase-file", s(&short)]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("at least 12"), "{}", stderr(&o));

    // No terminal (a new session has none) and no file: say how to give one.
    let o = Command::new("setsid")
        .arg(clustermgr_bin())
        .arg("--home")
        .arg(c.dir())
        .args(["backup", s(&archive)])
        .stdin(Stdio::null())
        .output()
        .expect("run setsid");
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("--passphrase-file"), "{}", stderr(&o));

    assert!(!archive.exists(), "no refused backup wrote anything");
    let audit = stdout(&c.run(&["audit"]));
    assert!(
        !audit.contains("backup"),
        "nor left an audit entry: {audit}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_refuses_a_bad_target_before_work_and_its_outcome_is_audited() {
    let c = Cluster::gluu(1).await;
    let tmp = tempfile::tempdir().unwrap();
    let pass = passphrase_file(tmp.path(), "pass", PASSPHRASE);
    let with_pass = |target: &Path, more: &[&str]| {
        let mut args = vec!["backup", s(target), "--passphrase-file", s(&pass)];
        args.extend_from_slice(more);
        c.run(&args)
    };
    let audited = || stdout(&c.run(&["audit"]));

    // A directory, a folder that is not there, a passphrase file that is not there:
    // each named, exit 2, before any work and without an audit entry.
    let o = with_pass(tmp.path(), &[]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("is a directory; name the archive file"),
        "{}",
        stderr(&o)
    );
    let o = with_pass(&tmp.path().join("nowhere/cluster.cmbackup"), &[]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("does not exist"), "{}", stderr(&o));
    let archive = tmp.path().join("cluster.cmbackup");
    let o = c.run(&["backup", s(&archive), "--passphrase-file", "/nonexistent"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("cannot read the passphrase file /nonexistent"),
        "{}",
        stderr(&o)
    );
    assert!(!audited().contains("backup"), "{}", audited());

    // Written: the entry says so. An archive already there is not replaced unasked.
    let o = with_pass(&archive, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let size = std::fs::metadata(&archive).unwrap().len();
    assert!(
        audited().contains(&format!("-> cluster: written, {size} bytes")),
        "{}",
        audited()
    );
    let o = with_pass(&archive, &[]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("add --force to replace it"),
        "{}",
        stderr(&o)
    );
    assert!(with_pass(&archive, &["--force"]).status.success());

    // A backup that fails once the snapshot is taken (a folder anyone may write to,
    // where the archive could be swapped) is audited as failed, not as written.
    let open = tmp.path().join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    let o = with_pass(&open.join("cluster.cmbackup"), &[]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let last = audited().lines().last().unwrap().to_string();
    assert!(
        last.contains("backup") && last.contains("-> cluster: failed: "),
        "{last}"
    );
}
