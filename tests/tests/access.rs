//! Who may do what through `serve`: other local users reach it through `[access]
//! socket` with the role `controller.toml` gives their name or group (an operator
//! drains and cannot apply, a viewer reads and cannot plan, a stranger is refused), and
//! the console's accounts are made, listed and removed by admins only.

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output, Stdio};

use clustermgr_tests::{Cluster, clustermgr_bin, node, stderr, stdout};

/// `clustermgr --socket SOCKET ARGS` run as `uid`/`gid` (no supplementary groups), with
/// a HOME of its own that does not exist, as a second Unix account's would be.
fn as_user(uid: u32, gid: u32, socket: &std::path::Path, args: &[&str]) -> Output {
    Command::new("setpriv")
        .args([
            &format!("--reuid={uid}"),
            &format!("--regid={gid}"),
            "--clear-groups",
            "--",
        ])
        .arg(clustermgr_bin())
        .arg("--socket")
        .arg(socket)
        .args(args)
        .env("HOME", "/nonexistent")
        .env_remove("CLUSTERMGR_HOME")
        .stdin(Stdio::null())
        .output()
        .expect("setpriv")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_local_users_get_the_role_access_gives_them_on_the_shared_socket() {
    let mut lb = node("lb1", "");
    lb.roles = vec![clustermgr::store::Role::Lb];
    let c = Cluster::start(vec![node("gluu1", ""), node("gluu2", ""), lb]).await;
    // The socket's directory: reachable by everyone, writable by root only.
    let shared = tempfile::tempdir().unwrap();
    std::fs::set_permissions(shared.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let socket = shared.path().join("serve.sock");
    std::fs::write(
        c.dir().join("controller.toml"),
        format!(
            "[access]\nsocket = \"{}\"\n[access.users]\nnobody = \"operator\"\n[access.groups]\nnogroup = \"viewer\"\n",
            socket.display()
        ),
    )
    .unwrap();
    let _serve = c.serve().await;
    clustermgr_tests::eventually(
        "the shared socket",
        std::time::Duration::from_secs(10),
        || socket.exists(),
    )
    .await;
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o666, "anyone may connect; the kernel says who did");

    // nobody (uid 65534) is an operator by name: drains, and cannot apply.
    let o = as_user(65534, 65534, &socket, &["drain", "gluu2"]);
    assert!(o.status.success(), "an operator drains: {}", stderr(&o));
    let o = as_user(65534, 65534, &socket, &["apply", "--yes", "--json"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let said = stderr(&o);
    assert!(
        said.contains("nobody (uid 65534) is an operator, and `apply` needs admin"),
        "{said}"
    );
    // A uid with no name, in the group nogroup: a viewer, by the group.
    let o = as_user(65533, 65534, &socket, &["status"]);
    assert!(o.status.success(), "a viewer reads: {}", stderr(&o));
    let o = as_user(65533, 65534, &socket, &["plan"]);
    assert!(
        stderr(&o).contains("uid 65533 is a viewer, and `plan` needs operator"),
        "{}",
        stderr(&o)
    );
    // No name and no group [access] knows: no role at all.
    let o = as_user(65532, 65532, &socket, &["status"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("uid 65532 has no role on this controller"),
        "{}",
        stderr(&o)
    );
    // An operator manages no accounts.
    let o = as_user(65534, 65534, &socket, &["user", "list"]);
    assert!(
        stderr(&o).contains("`user list` needs admin"),
        "{}",
        stderr(&o)
    );

    // The audit log names the person the kernel said connected.
    let audit = stdout(&c.run(&["audit"]));
    assert!(
        audit
            .lines()
            .any(|l| l.contains("nobody (uid 65534)") && l.contains(" drain ")),
        "{audit}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_accounts_are_made_listed_given_tokens_and_removed() {
    let c = Cluster::gluu(1).await;
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "a long enough password\n").unwrap();
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
    let pw_arg = pw.display().to_string();
    let o = c.run(&[
        "user",
        "add",
        "alice",
        "--role",
        "admin",
        "--password-file",
        &pw_arg,
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("console account alice made, role admin"));
    // A short password, a taken name, a bad name, a bad role: each said plainly.
    let short = dir.path().join("short");
    std::fs::write(&short, "tiny\n").unwrap();
    std::fs::set_permissions(&short, std::fs::Permissions::from_mode(0o600)).unwrap();
    let o = c.run(&[
        "user",
        "add",
        "bob",
        "--role",
        "viewer",
        "--password-file",
        &short.display().to_string(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("needs at least 12"), "{}", stderr(&o));
    let o = c.run(&[
        "user",
        "add",
        "alice",
        "--role",
        "viewer",
        "--password-file",
        &pw_arg,
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("already a console account \"alice\""));
    let o = c.run(&[
        "user",
        "add",
        "Al ice",
        "--role",
        "viewer",
        "--password-file",
        &pw_arg,
    ]);
    assert_eq!(o.status.code(), Some(2));
    let o = c.run(&[
        "user",
        "add",
        "carol",
        "--role",
        "root",
        "--password-file",
        &pw_arg,
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("viewer, operator or admin"),
        "{}",
        stderr(&o)
    );

    // A token: printed once, never in --json, kept as a digest.
    let o = c.run(&["user", "token", "alice"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let token = stdout(&o).trim().to_string();
    assert!(token.starts_with("cmt_"), "{token}");
    let o = c.run(&["--json", "user", "token", "alice"]);
    assert_eq!(o.status.code(), Some(2), "--json needs --out");
    let out = dir.path().join("token");
    let o = c.run(&[
        "--json",
        "user",
        "token",
        "alice",
        "--out",
        &out.display().to_string(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let doc: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    clustermgr_tests::schema::assert_valid("user-token", &doc);
    let written = std::fs::read_to_string(&out).unwrap();
    assert!(
        !stdout(&o).contains(written.trim()),
        "the token stays out of --json"
    );
    assert_eq!(
        std::fs::metadata(&out).unwrap().permissions().mode() & 0o777,
        0o600
    );

    let o = c.run(&["--json", "user", "list"]);
    let list: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    clustermgr_tests::schema::assert_valid("user-list", &list);
    assert_eq!(list["users"][0]["name"], "alice");
    assert_eq!(list["users"][0]["role"], "admin");
    assert_eq!(list["users"][0]["tokens"].as_array().unwrap().len(), 2);
    let everything = format!("{list}");
    assert!(!everything.contains("argon2") && !everything.contains(&token));

    // Neither the password nor the token reaches the store or the audit log as text.
    let store = std::fs::read(c.dir().join("inventory.redb")).unwrap();
    let has = |needle: &str| store.windows(needle.len()).any(|w| w == needle.as_bytes());
    assert!(!has("a long enough password") && !has(&token));
    assert!(has("$argon2id$v=19$"));
    let audit = stdout(&c.run(&["audit"]));
    assert!(
        audit.contains("user add") && audit.contains("alice as admin"),
        "{audit}"
    );

    let o = c.run(&["user", "remove", "alice"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = c.run(&["user", "remove", "alice"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("no console account \"alice\""));
    assert!(stdout(&c.run(&["user", "list"])).contains("no console accounts yet"));
}
