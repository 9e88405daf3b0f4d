//! The web console in a real browser: headless Chromium through WebDriver against a
//! real `serve` with sandbox agents. A person logs in (and a wrong password is said),
//! the Overview fills with the nodes and keeps itself live, a viewer sees no button to
//! plan or apply, an admin's plan shows a hand edit as a diff and an apply through the
//! page changes the node's file and lands in the audit log under their name, and a
//! session that ends sends the browser to the login page. Screenshots are kept under
//! `target/screenshots/`.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use clustermgr_tests::browser::Browser;
use clustermgr_tests::web::console_address;
use clustermgr_tests::{Cluster, node, stderr, stdout};

fn log_in(b: &Browser, base: &str, name: &str, pw: &str) {
    b.goto(&format!("{base}/login"));
    let user = b.wait_for("#name", Duration::from_secs(10));
    b.type_into(&user, name);
    let p = b.wait_for("#password", Duration::from_secs(5));
    b.type_into(&p, pw);
    // The keyboard alone: Enter in the password field submits.
    b.type_into(&p, "\u{E007}");
}

const PATIENCE: Duration = Duration::from_secs(15);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_logs_in_watches_the_cluster_live_and_applies_by_role() {
    let mut lb = node("lb1", "");
    lb.roles = vec![clustermgr::store::Role::Lb];
    let logs = tempfile::tempdir().unwrap();
    let app_log = logs.path().join("app.log");
    std::fs::write(&app_log, "").unwrap();
    let c = Cluster::start(vec![
        node("gluu1", &clustermgr_tests::following_app_log(&app_log)),
        node("gluu2", ""),
        lb,
    ])
    .await;
    std::fs::write(
        c.dir().join("controller.toml"),
        "[web]\naddress = \"127.0.0.1:0\"\n",
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    clustermgr_tests::web::make_account(&c, dir.path(), "alice", "admin", "alice's long password");
    clustermgr_tests::web::make_account(&c, dir.path(), "vera", "viewer", "vera's long password");
    // The configuration is applied once, so a hand edit is drift.
    let o = c.run(&["apply", "--yes"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let _serve = c.serve().await;
    let base = format!("http://{}", console_address(&c.dir(), PATIENCE));
    let b = Browser::start();

    // Without a session, the console is the login page; a wrong password is said.
    b.goto(&format!("{base}/"));
    b.wait_until("the login page", PATIENCE, |b| b.url().ends_with("/login"));
    log_in(&b, &base, "alice", "not alice's password");
    b.wait_until("the refusal shown", PATIENCE, |b| {
        b.text_of("#said")
            .contains("wrong account name or password")
    });

    // The admin: the Overview lists every node, live.
    log_in(&b, &base, "alice", "alice's long password");
    b.wait_until("the console", PATIENCE, |b| b.url() == format!("{base}/"));
    b.wait_until("the nodes on the Overview", PATIENCE, |b| {
        b.find_all("#nodes tbody tr").len() == 3
    });
    let overview = b.text_of("#nodes");
    for n in ["gluu1", "gluu2", "lb1", "connected"] {
        assert!(overview.contains(n), "{overview}");
    }
    b.wait_until("the live mark", PATIENCE, |b| {
        b.text_of("#live").starts_with("live")
    });
    b.wait_until("the worst state, in words", PATIENCE, |b| {
        b.text_of("#worst").starts_with("cluster: ")
    });
    // The CPU sparkline has drawn pixels once a tick with history came.
    b.wait_until("a sparkline with pixels", Duration::from_secs(30), |b| {
        b.execute(
            "const c = document.querySelector('canvas.spark'); if (!c) return false; \
             const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; \
             for (let i = 3; i < d.length; i += 4) if (d[i] > 0) return true; return false;",
            serde_json::json!([]),
        ) == true
    });
    b.screenshot("overview");
    // Readable on a phone: the wide columns give way, the names stay.
    b.resize(390, 844);
    assert!(b.text_of("#nodes").contains("gluu1"));
    let wide = b.execute(
        "return getComputedStyle(document.querySelector('#nodes td.wide')).display;",
        serde_json::json!([]),
    );
    assert_eq!(wide, "none", "the wide columns give way on a phone");
    b.screenshot("overview-phone");
    b.resize(1280, 900);

    // A node's page: its facts, checks, and charts of its metrics drawn from the store.
    b.goto(&format!("{base}/#/node/gluu1"));
    b.wait_for("#facts", PATIENCE);
    assert!(
        b.text_of("#checks").contains("ports"),
        "{}",
        b.text_of("#checks")
    );
    // Pixels in the first series' blue, not the frame's grey.
    b.wait_until("a chart with drawn pixels", Duration::from_secs(30), |b| {
        b.execute(
            "for (const c of document.querySelectorAll('canvas.chart')) { \
               const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; \
               for (let i = 0; i < d.length; i += 4) \
                 if (d[i + 3] > 200 && d[i + 2] > 150 && d[i] < 100) return true; } \
             return false;",
            serde_json::json!([]),
        ) == true
    });
    // Tall enough for the charts in the picture.
    b.resize(1280, 1700);
    b.screenshot("node");
    b.resize(1280, 900);

    // Logs: a line appended to a node's log file is on the page within two seconds.
    b.goto(&format!("{base}/#/logs"));
    b.wait_until("the log stream", PATIENCE, |b| {
        b.text_of("#log-said") == "following"
    });
    let marker = "console-marker-line 42";
    let written = std::time::Instant::now();
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&app_log)
            .unwrap();
        writeln!(f, "{marker}").unwrap();
    }
    b.wait_until(
        "the appended line on the Logs page",
        Duration::from_secs(2),
        |b| b.text_of("#log-lines").contains(marker),
    );
    assert!(written.elapsed() < Duration::from_secs(2));
    // The stored lines can be searched too, by regular expression.
    let grep = b.wait_for("#log-grep", PATIENCE);
    b.type_into(&grep, "marker-line");
    let search = b.wait_for("#log-search", PATIENCE);
    b.click(&search);
    b.wait_until("the stored line found", PATIENCE, |b| {
        b.text_of("#log-said").ends_with("stored lines") && b.text_of("#log-lines").contains(marker)
    });
    let follow = b.wait_for("#log-filter button[type=submit]", PATIENCE);
    b.click(&follow);
    b.wait_until("following again", PATIENCE, |b| {
        b.text_of("#log-said") == "following"
    });
    // Paused, new lines are not shown until resumed.
    let pause = b.wait_for("#log-pause", PATIENCE);
    b.click(&pause);
    b.wait_until("paused", PATIENCE, |b| {
        b.text_of("#log-said").starts_with("paused")
    });
    b.screenshot("logs");

    // Health: every check, the event timeline with its filters, and the port matrix.
    b.goto(&format!("{base}/#/health"));
    b.wait_for("#ports", PATIENCE);
    assert!(b.text_of("#verdicts").contains("ports"));
    assert!(
        b.text_of("#ports").contains("gluu2"),
        "{}",
        b.text_of("#ports")
    );
    assert!(!b.find_all("#ev-node").is_empty() && !b.find_all("#ev-check").is_empty());
    // A change for the worse (the harness has no slapd, so a Gluu node's LDAP check is
    // not ok) is acknowledged from the timeline with a note; the page and `events` then
    // say who, and the audit has it.
    b.wait_until("an event to acknowledge", Duration::from_secs(30), |b| {
        b.goto(&format!("{base}/#/health"));
        b.wait_for("#ports", PATIENCE);
        !b.find_all("form.ack").is_empty()
    });
    let id = b.execute(
        "return document.querySelector('form.ack').dataset.event;",
        serde_json::json!([]),
    );
    let id = id.as_str().expect("the event's number").to_string();
    let note = b.wait_for("form.ack input", PATIENCE);
    b.type_into(&note, "on it from the console");
    let ack = b.wait_for("form.ack button", PATIENCE);
    b.click(&ack);
    b.wait_until("the acknowledgement shown", PATIENCE, |b| {
        b.text_of(&format!("#event-{id}"))
            .contains("acknowledged by alice (console, password)")
    });
    let listed = stdout(&c.run(&["events"]));
    assert!(
        listed.contains("acknowledged by alice (console, password)")
            && listed.contains("on it from the console"),
        "{listed}"
    );

    // Replication: the heartbeat matrix, CSNs, links and csync2, in words as well.
    b.goto(&format!("{base}/#/replication"));
    b.wait_until("the replication page", PATIENCE, |b| {
        b.text_of("main").contains("Heartbeat lag")
    });
    b.screenshot("replication");

    // A hand edit of gluu1's /etc/hosts block shows as a diff in the plan; the admin
    // applies exactly that plan, and it is audited under their name.
    let hosts = c.agent("gluu1").dir.join("root/etc/hosts");
    let before = std::fs::read_to_string(&hosts).expect("the applied /etc/hosts");
    let edited = before.replacen(" gluu2", " gluu2 edited-by-hand", 1);
    assert_ne!(edited, before, "{before}");
    std::fs::write(&hosts, &edited).unwrap();
    b.goto(&format!("{base}/#/config"));
    // Drift names the edit before any plan; History lists what clustermgr changed.
    let drift = b.wait_for("#drift-button", PATIENCE);
    b.click(&drift);
    b.wait_until("the drift report", PATIENCE, |b| {
        b.text_of("#plan").contains("/etc/hosts edited by hand")
    });
    assert!(
        b.text_of("#history").contains("/etc/hosts"),
        "{}",
        b.text_of("#history")
    );
    let plan = b.wait_for("#plan-button", PATIENCE);
    b.click(&plan);
    b.wait_until("the plan's diff", PATIENCE, |b| {
        b.text_of("#plan").contains("edited-by-hand")
    });
    b.screenshot("plan");
    let apply = b.wait_for("#apply-button", PATIENCE);
    b.click(&apply);
    b.wait_until("the apply's outcome", Duration::from_secs(30), |b| {
        b.text_of("#said").starts_with("Applied:")
    });
    // Each node's part as it went, in words.
    let progress = b.text_of("#progress");
    for n in ["gluu1: ok", "gluu2: ok", "lb1: ok"] {
        assert!(progress.contains(n), "{progress}");
    }
    assert_eq!(std::fs::read_to_string(&hosts).unwrap(), before);
    // Rollback from the page: the version the apply replaced (the hand edit) goes back.
    b.goto(&format!("{base}/#/audit"));
    b.goto(&format!("{base}/#/config"));
    b.wait_for("#history", PATIENCE);
    let clicked = b.execute(
        "for (const tr of document.querySelectorAll('#history tbody tr')) \
           if (tr.textContent.includes('gluu1') && tr.textContent.includes('/etc/hosts')) { \
             tr.querySelector('button.versions').click(); return true; } \
         return false;",
        serde_json::json!([]),
    );
    assert_eq!(clicked, true);
    let back = b.wait_for("#generations button.rollback", PATIENCE);
    b.click(&back);
    b.wait_until("the rollback's outcome", Duration::from_secs(30), |b| {
        b.text_of("#said").starts_with("Rolled back:")
    });
    assert_eq!(std::fs::read_to_string(&hosts).unwrap(), edited);
    b.goto(&format!("{base}/#/audit"));
    b.wait_until("the audit entry", PATIENCE, |b| {
        b.text_of("#audit").contains("alice (console, password)")
            && b.text_of("#audit").contains("apply")
    });

    // A session that ends (here: a new password) sends the browser to the login page.
    let pw = dir.path().join("alice2.pw");
    std::fs::write(&pw, "alice's newer long password\n").unwrap();
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
    let o = c.run(&[
        "user",
        "passwd",
        "alice",
        "--password-file",
        &pw.display().to_string(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    b.wait_until(
        "the login page after the session ended",
        Duration::from_secs(30),
        |b| b.url().ends_with("/login"),
    );

    // A viewer sees no button to plan or apply (and the API refuses them anyway).
    log_in(&b, &base, "vera", "vera's long password");
    b.wait_until("the console", PATIENCE, |b| b.url() == format!("{base}/"));
    b.goto(&format!("{base}/#/config"));
    b.wait_for("#settings", PATIENCE);
    assert!(b.find_all("#plan-button").is_empty());
    assert!(b.find_all("#apply-button").is_empty());
    assert!(b.text_of("main").contains("planning needs operator"));
    // Nor a form to acknowledge an event; the API refuses a well-made one.
    b.goto(&format!("{base}/#/health"));
    b.wait_for("#ports", PATIENCE);
    assert!(b.find_all("form.ack").is_empty());
    let refused = b.execute_async(
        "const done = arguments[arguments.length - 1]; \
         fetch('/api/v1/session').then((r) => r.json()).then((s) => \
           fetch('/api/v1/events/1/ack', { method: 'POST', headers: { 'X-CSRF-Token': s.csrf } })) \
           .then((r) => done(r.status));",
        serde_json::json!([]),
    );
    assert_eq!(refused, 403);
    let audit = stdout(&c.run(&["audit"]));
    assert!(audit.contains("vera (console, password)"), "{audit}");
}

/// The OpenID provider of `tests/oidc` (oidc-provider from the npm registry, installed
/// there by `tests/run`), on a loopback port; killed when dropped.
struct Provider(std::process::Child);

impl Drop for Provider {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_provider(cfg: &std::path::Path) -> Provider {
    use std::io::BufRead;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("oidc");
    let mut child = std::process::Command::new("node")
        .arg(dir.join("provider.js"))
        .arg(cfg)
        .current_dir(&dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("node (Debian's nodejs; tests/run installs it and the provider)");
    let out = child.stdout.take().unwrap();
    let mut lines = std::io::BufReader::new(out).lines();
    let first = lines.next().and_then(Result::ok).unwrap_or_default();
    assert!(
        first.starts_with("listening"),
        "the provider did not start: {first}"
    );
    // Whatever it says later is read, so it never writes to a closed pipe.
    std::thread::spawn(move || lines.for_each(drop));
    Provider(child)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_logs_in_through_an_openid_provider_with_the_role_its_claim_gives() {
    let c = Cluster::gluu(1).await;
    let dir = tempfile::tempdir().unwrap();
    let (op_port, console_port) = (
        clustermgr_tests::slapd::free_port(),
        clustermgr_tests::slapd::free_port(),
    );
    let issuer = format!("http://127.0.0.1:{op_port}");
    let base = format!("http://127.0.0.1:{console_port}");
    let redirect = format!("{base}/login/oidc/callback");
    let secret = "the console's client secret, 32+ chars";
    let op_cfg = dir.path().join("provider.json");
    std::fs::write(
        &op_cfg,
        serde_json::json!({
            "port": op_port, "client_id": "clustermgr", "client_secret": secret,
            "redirect_uri": redirect,
            "roles": {"alice": "clusteradmin", "bob": "staff"},
            "other_clients": [{
                "client_id": "grafana", "client_secret": "grafana-client-secret-0123456789abcdef",
                "redirect_uri": format!("http://127.0.0.1:{}/cb", clustermgr_tests::slapd::free_port()),
            }],
        })
        .to_string(),
    )
    .unwrap();
    let _provider = start_provider(&op_cfg);
    let secret_file = dir.path().join("oidc-secret");
    std::fs::write(&secret_file, format!("{secret}\n")).unwrap();
    std::fs::set_permissions(&secret_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(
        c.dir().join("controller.toml"),
        format!(
            "[web]\naddress = \"127.0.0.1:{console_port}\"\n[web.oidc]\nissuer = \"{issuer}\"\nclient_id = \"clustermgr\"\nclient_secret_file = \"{}\"\nredirect_uri = \"{redirect}\"\nscopes = [\"openid\", \"profile\"]\n",
            secret_file.display()
        ),
    )
    .unwrap();
    // The console is served once there is an account of its own.
    clustermgr_tests::web::make_account(&c, dir.path(), "root", "admin", "root's long password");
    let _serve = c.serve().await;
    console_address(&c.dir(), PATIENCE);
    let b = Browser::start_with_network_log();
    let through_provider = |b: &Browser, name: &str| {
        b.goto(&format!("{base}/login"));
        b.wait_until("the provider's link", PATIENCE, |b| {
            b.text_of("#oidc-link").contains(&issuer)
        });
        b.click_on("#oidc-link", PATIENCE);
        provider_login(b, name);
        // The provider asks once for consent.
        b.wait_until("the consent page or the way back", PATIENCE, |b| {
            !b.url().contains("/interaction/") || b.text_of("body").contains("Authorize")
        });
        if b.url().contains("/interaction/") {
            b.click_on("button[type=submit]", PATIENCE);
        }
    };

    // alice's claim says clusteradmin: an admin, logged in by the provider.
    through_provider(&b, "alice");
    b.wait_until("the console as alice", PATIENCE, |b| {
        b.url() == format!("{base}/") && b.text_of("#who") == "alice (admin)"
    });
    b.wait_for("#nodes tbody tr", PATIENCE);
    let audit = stdout(&c.run(&["audit"]));
    assert!(
        audit.lines().any(
            |l| l.contains(&format!("alice (console, OpenID Connect {issuer})"))
                && l.contains("console login")
        ),
        "{audit}"
    );

    // The callback that logged alice in, replayed with the browser's own state cookie
    // (so only the used-up state can refuse it), is refused.
    let callback = b
        .network_urls()
        .into_iter()
        .find(|u| u.starts_with(&format!("{redirect}?")))
        .expect("the callback's URL in the browser's network log");
    assert!(callback.contains("code="), "{callback}");
    let path = callback.trim_start_matches(&base).to_string();
    let state = path
        .split(['?', '&'])
        .find_map(|p| p.strip_prefix("state="))
        .expect("the callback's state")
        .to_string();
    let a = clustermgr_tests::web::request(
        format!("127.0.0.1:{console_port}").parse().unwrap(),
        "GET",
        &path,
        &[("Cookie", &format!("cm_oidc={state}"))],
        b"",
    );
    assert_eq!(a.status, 403, "{}", a.text());
    assert!(a.text().contains("already used"), "{}", a.text());

    // A real token the same provider issued to another application (grafana), and a
    // copy of it with one claim changed: the console's checks refuse both, and take the
    // genuine one for the application it was issued to.
    {
        use clustermgr::web::oidc::{OidcConfig, Refused, verify};
        let grafana =
            serde_json::from_str::<serde_json::Value>(&std::fs::read_to_string(&op_cfg).unwrap())
                .unwrap()["other_clients"][0]
                .clone();
        let ob = Browser::start_with_network_log();
        let (token, nonce) = token_for(&ob, &issuer, &grafana, "alice");
        drop(ob);
        let jwks = clustermgr_tests::web::request(
            format!("127.0.0.1:{op_port}").parse().unwrap(),
            "GET",
            "/jwks",
            &[],
            b"",
        )
        .json();
        let keys = jwks["keys"].as_array().unwrap().clone();
        let console = OidcConfig {
            issuer: issuer.clone(),
            client_id: "clustermgr".into(),
            client_secret_file: None,
            redirect_uri: redirect.clone(),
            role_claim: "role".into(),
            roles: [(
                "clusteradmin".to_string(),
                clustermgr::access::UserRole::Admin,
            )]
            .into(),
            name_claim: None,
            scopes: vec!["openid".into()],
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let refused = verify(&token, &keys, &console, &nonce, now).unwrap_err();
        assert!(
            matches!(&refused, Refused::Bad(why) if why.contains("not this console")),
            "{refused:?}"
        );
        let mut theirs = console.clone();
        theirs.client_id = "grafana".into();
        let claims = verify(&token, &keys, &theirs, &nonce, now).expect("genuine for grafana");
        assert_eq!(claims["role"], "clusteradmin");
        // Tampered: the claims made to say the console is the audience.
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let parts: Vec<&str> = token.split('.').collect();
        let mut c: serde_json::Value =
            serde_json::from_slice(&b64.decode(parts[1]).unwrap()).unwrap();
        c["aud"] = "clustermgr".into();
        let forged = format!("{}.{}.{}", parts[0], b64.encode(c.to_string()), parts[2]);
        assert_eq!(
            verify(&forged, &keys, &console, &nonce, now).unwrap_err(),
            Refused::Bad("its signature does not verify".into())
        );
    }

    // bob's claim names no role clustermgr knows: refused, and said why. (Another
    // browser: this one's session at the provider would log alice in again.)
    let logout = b.wait_for("#logout", PATIENCE);
    b.click(&logout);
    b.wait_until("the login page", PATIENCE, |b| b.url().ends_with("/login"));
    drop(b);
    let b = Browser::start();
    through_provider(&b, "bob");
    b.wait_until("the refusal", PATIENCE, |b| {
        b.text_of("#said").contains("bob has no role here")
    });
    assert!(
        b.text_of("#said").contains("says staff"),
        "{}",
        b.text_of("#said")
    );
}

/// A real ID token the provider issued to `client` (another application) for `name`:
/// the code flow walked in `b`, the code taken from the browser's network log (nothing
/// listens at the client's redirect URI), exchanged at the token endpoint. Returns the
/// token and the nonce it was asked with.
fn token_for(
    b: &Browser,
    issuer: &str,
    client: &serde_json::Value,
    name: &str,
) -> (String, String) {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let verifier = "a-verifier-long-enough-for-pkce-0123456789abcdef";
    let digest = clustermgr_protocol::identity::sha256_hex(verifier.as_bytes());
    let raw: Vec<u8> = (0..digest.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&digest[i..i + 2], 16).unwrap())
        .collect();
    let challenge = b64.encode(raw);
    let redirect = client["redirect_uri"].as_str().unwrap();
    let nonce = "another-apps-nonce";
    b.goto(&format!(
        "{issuer}/auth?response_type=code&client_id={}&redirect_uri={}&scope=openid%20profile&state=s1&nonce={nonce}&code_challenge={challenge}&code_challenge_method=S256",
        client["client_id"].as_str().unwrap(),
        redirect.replace(':', "%3A").replace('/', "%2F"),
    ));
    provider_login(b, name);
    let mut code = None;
    let deadline = std::time::Instant::now() + PATIENCE;
    while code.is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "no code for the other client"
        );
        if b.url().contains("/interaction/")
            && let Some(ok) = b.find_all("button[type=submit]").into_iter().next()
        {
            // A page replaced meanwhile (the login's, on its way to the consent) is
            // looked at again in the next turn.
            b.try_click(&ok);
        }
        code = b.network_urls().into_iter().find_map(|u| {
            let q = u.strip_prefix(&format!("{redirect}?"))?.to_string();
            q.split('&')
                .find_map(|kv| kv.strip_prefix("code=").map(str::to_string))
        });
        std::thread::sleep(Duration::from_millis(50));
    }
    let body = format!(
        "grant_type=authorization_code&code={}&redirect_uri={}&code_verifier={verifier}",
        code.unwrap(),
        redirect.replace(':', "%3A").replace('/', "%2F")
    );
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!(
            "{}:{}",
            client["client_id"].as_str().unwrap(),
            client["client_secret"].as_str().unwrap()
        ))
    );
    let a = clustermgr_tests::web::request(
        issuer.trim_start_matches("http://").parse().unwrap(),
        "POST",
        "/token",
        &[
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Authorization", &basic),
        ],
        body.as_bytes(),
    );
    assert_eq!(a.status, 200, "{}", a.text());
    (
        a.json()["id_token"].as_str().unwrap().to_string(),
        nonce.to_string(),
    )
}

/// Fills the provider's login form (its development interactions take any password).
fn provider_login(b: &Browser, name: &str) {
    let login = b.wait_for("input[name=login]", PATIENCE);
    b.type_into(&login, name);
    let pw = b.wait_for("input[name=password]", PATIENCE);
    b.type_into(&pw, "any password");
    b.click_on("button[type=submit]", PATIENCE);
}
