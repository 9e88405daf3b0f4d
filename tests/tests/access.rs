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
    // Acknowledging alerts is the operator's: the viewer is refused by role, the
    // operator gets as far as the store (which has no event 99999).
    let o = as_user(65533, 65534, &socket, &["events", "ack", "99999"]);
    assert!(
        stderr(&o).contains("uid 65533 is a viewer, and `events ack` needs operator"),
        "{}",
        stderr(&o)
    );
    let o = as_user(65534, 65534, &socket, &["events", "ack", "99999"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("health event 99999 does not exist"),
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
    let o = c.run(&[
        "--json",
        "user",
        "add",
        "bob",
        "--role",
        "operator",
        "--password-file",
        &pw_arg,
    ]);
    let doc = clustermgr_tests::schema::json(&o, "user");
    assert_eq!(doc["user"]["role"], "operator");
    let o = c.run(&["--json", "user", "remove", "bob"]);
    assert!(clustermgr_tests::schema::json(&o, "user")["user"].is_null());
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_logs_people_in_and_answers_each_by_role() {
    use clustermgr_tests::web::{console_address, cookie, read_stream_until, request};
    use std::time::Duration;
    let mut lb = node("lb1", "");
    lb.roles = vec![clustermgr::store::Role::Lb];
    let c = Cluster::start(vec![node("gluu1", ""), node("gluu2", ""), lb]).await;
    std::fs::write(
        c.dir().join("controller.toml"),
        "[web]\naddress = \"127.0.0.1:0\"\n",
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let _serve = c.serve().await;
    // No account, no console: serve says how to make one, and starts it once there is.
    let log = c.home.path().join("serve.log");
    clustermgr_tests::eventually(
        "serve to say the console waits",
        Duration::from_secs(10),
        || {
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains("`clustermgr user add NAME --role admin`")
        },
    )
    .await;
    clustermgr_tests::web::make_account(&c, dir.path(), "alice", "admin", "alice's long password");
    clustermgr_tests::web::make_account(&c, dir.path(), "vera", "viewer", "vera's long password");
    clustermgr_tests::web::make_account(&c, dir.path(), "otto", "operator", "otto's long password");
    let addr = console_address(&c.dir(), Duration::from_secs(10));

    // Nothing without a login but the login page and its assets, with strict headers.
    let a = request(addr, "GET", "/", &[], b"");
    assert_eq!((a.status, a.header("location")), (303, Some("/login")));
    let a = request(addr, "GET", "/api/v1/status", &[], b"");
    assert_eq!(a.status, 401, "{}", a.text());
    let a = request(addr, "GET", "/login", &[], b"");
    assert_eq!(a.status, 200);
    let csp = a.header("content-security-policy").expect("a CSP");
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert_eq!(a.header("x-frame-options"), Some("DENY"));
    assert!(!a.text().contains("<script>"), "no inline script");
    // A body announced and never sent does not hold its connection: it is answered
    // 408 within the head's deadline (10 s).
    {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s.write_all(
            format!("POST /api/v1/login HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{")
                .as_bytes(),
        )
        .unwrap();
        let started = std::time::Instant::now();
        let mut answer = [0u8; 12];
        s.read_exact(&mut answer)
            .expect("an answer, not a held connection");
        assert_eq!(&answer, b"HTTP/1.1 408");
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "{:?}",
            started.elapsed()
        );
    }

    let login = |name: &str, pw: &str| {
        request(
            addr,
            "POST",
            "/api/v1/login",
            &[("Content-Type", "application/json")],
            serde_json::json!({"name": name, "password": pw})
                .to_string()
                .as_bytes(),
        )
    };
    // A login as a form (what another site could make a browser send) is refused.
    let a = request(
        addr,
        "POST",
        "/api/v1/login",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        b"name=alice&password=x",
    );
    assert_eq!(a.status, 403);
    let a = login("alice", "alice's long password");
    assert_eq!(a.status, 200, "{}", a.text());
    let set = a.header("set-cookie").unwrap();
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict"),
        "{set}"
    );
    let admin = cookie(&a);
    let admin_csrf = a.json()["csrf"].as_str().unwrap().to_string();

    // The API answers with the CLI's documents.
    let a = request(addr, "GET", "/api/v1/status", &[("Cookie", &admin)], b"");
    assert_eq!(a.status, 200, "{}", a.text());
    clustermgr_tests::schema::assert_valid("status", &a.json());
    let a = request(addr, "GET", "/", &[("Cookie", &admin)], b"");
    assert_eq!(a.status, 200);
    assert!(a.text().contains("/assets/app.js"));

    // A change without the session's CSRF token, or from another site, is refused.
    let drain = "/api/v1/nodes/gluu2/drain";
    let a = request(addr, "POST", drain, &[("Cookie", &admin)], b"");
    assert_eq!(a.status, 403, "{}", a.text());
    assert!(a.text().contains("CSRF"));
    let a = request(
        addr,
        "POST",
        drain,
        &[
            ("Cookie", &admin),
            ("X-CSRF-Token", &admin_csrf),
            ("Origin", "http://evil.example"),
        ],
        b"",
    );
    assert_eq!(a.status, 403, "{}", a.text());
    let a = request(
        addr,
        "POST",
        drain,
        &[("Cookie", &admin), ("X-CSRF-Token", &admin_csrf)],
        b"",
    );
    assert_eq!(a.status, 200, "{}", a.text());
    clustermgr_tests::schema::assert_valid("apply", &a.json());

    // A viewer reads, and may not plan or apply, even with a well-made request.
    let a = login("vera", "vera's long password");
    let viewer = cookie(&a);
    let viewer_csrf = a.json()["csrf"].as_str().unwrap().to_string();
    let a = request(addr, "GET", "/api/v1/health", &[("Cookie", &viewer)], b"");
    assert_eq!(a.status, 200, "{}", a.text());
    let a = request(addr, "GET", "/api/v1/plan", &[("Cookie", &viewer)], b"");
    assert_eq!(a.status, 403, "{}", a.text());
    let a = request(
        addr,
        "POST",
        "/api/v1/apply",
        &[
            ("Cookie", &viewer),
            ("X-CSRF-Token", &viewer_csrf),
            ("Content-Type", "application/json"),
        ],
        br#"{"plan": "0000"}"#,
    );
    assert_eq!(a.status, 403, "{}", a.text());
    assert!(
        a.text().contains("vera (console, password) is a viewer"),
        "{}",
        a.text()
    );

    // A script's token has its account's role: an operator plans, cannot apply.
    let token_file = dir.path().join("otto.token");
    let o = c.run(&[
        "user",
        "token",
        "otto",
        "--out",
        &token_file.display().to_string(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let bearer = format!(
        "Bearer {}",
        std::fs::read_to_string(&token_file).unwrap().trim()
    );
    let a = request(
        addr,
        "GET",
        "/api/v1/plan",
        &[("Authorization", &bearer)],
        b"",
    );
    assert_eq!(a.status, 200, "{}", a.text());
    let digest = a.json()["digest"].as_str().unwrap().to_string();
    let body = serde_json::json!({ "plan": digest }).to_string();
    let a = request(
        addr,
        "POST",
        "/api/v1/apply",
        &[
            ("Authorization", &bearer),
            ("Content-Type", "application/json"),
        ],
        body.as_bytes(),
    );
    assert_eq!(a.status, 403, "{}", a.text());
    let a = request(
        addr,
        "GET",
        "/api/v1/plan",
        &[("Authorization", "Bearer cmt_forged")],
        b"",
    );
    assert_eq!(a.status, 401);

    // The admin applies exactly the plan shown, under their name in the audit log.
    let a = request(
        addr,
        "POST",
        "/api/v1/apply",
        &[
            ("Cookie", &admin),
            ("X-CSRF-Token", &admin_csrf),
            ("Content-Type", "application/json"),
        ],
        body.as_bytes(),
    );
    assert_eq!(a.status, 200, "{}", a.text());
    let audit = stdout(&c.run(&["audit"]));
    assert!(
        audit
            .lines()
            .any(|l| l.contains("alice (console, password)") && l.contains(" apply ")),
        "{audit}"
    );
    assert!(audit.contains("console login"), "{audit}");

    // The live stream sends the nodes' ticks.
    let got = read_stream_until(
        addr,
        "/api/v1/stream",
        &[("Cookie", &admin)],
        "event: top",
        Duration::from_secs(10),
    );
    assert!(got.contains("event: top"), "{got}");

    // Logout ends the session on the server; a new password ends the others.
    let a = request(
        addr,
        "POST",
        "/api/v1/logout",
        &[("Cookie", &admin), ("X-CSRF-Token", &admin_csrf)],
        b"",
    );
    assert_eq!(a.status, 200);
    assert_eq!(
        request(addr, "GET", "/api/v1/status", &[("Cookie", &admin)], b"").status,
        401
    );
    let pw = dir.path().join("vera2.pw");
    std::fs::write(&pw, "vera's new long password\n").unwrap();
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
    let o = c.run(&[
        "user",
        "passwd",
        "vera",
        "--password-file",
        &pw.display().to_string(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        request(addr, "GET", "/api/v1/health", &[("Cookie", &viewer)], b"").status,
        401
    );

    // Wrong passwords are refused and counted: after five, even the right one waits,
    // from that address, for as long as Retry-After says. The wait doubles with each
    // failure after the fifth; failing on until it is 8 s makes the right password's
    // refusal below independent of how slowly this machine runs.
    for _ in 0..5 {
        assert_eq!(login("otto", "not the password").status, 401);
    }
    let mut failures = 5;
    clustermgr_tests::eventually_blocking(
        "failures enough for an 8 s wait",
        Duration::from_secs(30),
        || {
            let a = login("otto", "not the password");
            assert!(matches!(a.status, 401 | 429), "{}", a.text());
            if a.status == 401 {
                failures += 1;
            }
            failures >= 8
        },
    );
    let a = login("otto", "otto's long password");
    assert_eq!(a.status, 429, "{}", a.text());
    let wait: u64 = a.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=900).contains(&wait), "{wait}");
    let log_text = std::fs::read_to_string(&log).unwrap();
    assert!(
        log_text.contains("failed console login for \"otto\""),
        "{log_text}"
    );
    assert!(!log_text.contains("not the password"));
    clustermgr_tests::eventually_blocking(
        "the throttle to let otto try again",
        Duration::from_secs(wait + 5),
        || login("otto", "otto's long password").status == 200,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_serves_https_with_a_certificate_from_a_ca_of_its_own() {
    use std::time::Duration;
    let c = Cluster::gluu(1).await;
    // Beyond loopback, plain HTTP is refused before anything runs.
    std::fs::write(
        c.dir().join("controller.toml"),
        "[web]\naddress = \"0.0.0.0:5000\"\n",
    )
    .unwrap();
    let o = c.run(&["status"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("passwords must not cross a network in clear"),
        "{}",
        stderr(&o)
    );
    std::fs::write(
        c.dir().join("controller.toml"),
        "[web]\naddress = \"127.0.0.1:0\"\ntls = \"issued\"\n",
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    clustermgr_tests::web::make_account(&c, dir.path(), "alice", "admin", "alice's long password");
    let _serve = c.serve().await;
    let addr = clustermgr_tests::web::console_address(&c.dir(), Duration::from_secs(10));
    let ca = c.dir().join("console-ca.crt");
    let key_mode = std::fs::metadata(c.dir().join("console-ca.key"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(key_mode, 0o600);
    let log = std::fs::read_to_string(c.home.path().join("serve.log")).unwrap();
    assert!(log.contains("serving the web console on https://"), "{log}");
    assert!(log.contains("SHA-256"), "{log}");
    let curl = |extra: &[&str], url: &str| {
        Command::new("curl")
            .args(["-sS", "-i", "--max-time", "10"])
            .args(extra)
            .arg(url)
            .output()
            .expect("curl")
    };
    let base = format!("https://{addr}");
    // Trusted with the console CA, refused without it.
    let o = curl(
        &["--cacert", &ca.display().to_string()],
        &format!("{base}/login"),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).starts_with("HTTP/1.1 200"), "{}", stdout(&o));
    let o = curl(&[], &format!("{base}/login"));
    // curl's 60: the peer's certificate cannot be verified with the known CAs.
    assert_eq!(
        o.status.code(),
        Some(60),
        "an unknown CA is refused: {}",
        stderr(&o)
    );
    // Under TLS the session cookie is Secure.
    let o = curl(
        &[
            "--cacert",
            &ca.display().to_string(),
            "-H",
            "Content-Type: application/json",
            "-d",
            r#"{"name": "alice", "password": "alice's long password"}"#,
        ],
        &format!("{base}/api/v1/login"),
    );
    let head = stdout(&o);
    let cookie = head
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .unwrap_or_else(|| panic!("{head}"));
    assert!(
        cookie.contains("; Secure") && cookie.contains("HttpOnly"),
        "{cookie}"
    );
}
