//! Desired-state configuration on the multi-host harness, with the real programs: the
//! load balancer's nginx in front of HTTPS stand-ins on the Gluu hosts, following the
//! inventory, draining, refusing a config `nginx -t` rejects, and drift reported but
//! never reverted. No secret appears in any output.

use std::path::Path;
use std::process::Output;

use clustermgr_tests::netns::{Host, Net};
use clustermgr_tests::{Controller, eventually_blocking, stderr, stdout};

fn secs(n: u64) -> std::time::Duration {
    std::time::Duration::from_secs(n)
}

/// Every output a test produced, to scan for secrets at the end.
#[derive(Default)]
struct Transcript(String);

impl Transcript {
    fn keep(&mut self, o: &Output) {
        self.0.push_str(&stdout(o));
        self.0.push_str(&stderr(o));
    }
}

impl Transcript {
    /// Adds what the agents logged and journaled on every host, and the controller's
    /// history and plan as JSON, then checks that none of `secrets` (nor any private
    /// key) appears anywhere in it.
    fn assert_no_secrets(&mut self, ctl: &Controller, net: &Net, secrets: &[String]) {
        let mut logs = String::new();
        for h in net.hosts() {
            for f in [
                "/var/log/clustermgr-agent.log",
                "/var/lib/clustermgr/exec-journal.jsonl",
            ] {
                logs.push_str(&std::fs::read_to_string(h.path(f)).unwrap_or_default());
            }
        }
        // The scan reads the agents' real logs, where every apply is logged.
        assert!(logs.contains("apply of revision"), "no agent log found");
        if let Some(dir) = ctl.home.parent() {
            logs.push_str(&std::fs::read_to_string(dir.join("serve.log")).unwrap_or_default());
        }
        self.0.push_str(&logs);
        for args in [&["--json", "history"][..], &["--json", "plan"][..]] {
            let o = ctl.run(args);
            self.keep(&o);
        }
        assert!(
            !self.0.contains("PRIVATE KEY"),
            "a private key leaked into output"
        );
        for secret in secrets {
            // Any 24-character piece of it, so a line-wrapped copy is caught too.
            let body: String = secret.lines().filter(|l| !l.starts_with("-----")).collect();
            for chunk in body.as_bytes().chunks(24).filter(|c| c.len() >= 16) {
                let chunk = std::str::from_utf8(chunk).unwrap();
                assert!(
                    !self.0.contains(chunk),
                    "a secret leaked into output: {chunk}"
                );
            }
        }
    }
}

fn ok(t: &mut Transcript, o: Output, what: &str) -> String {
    t.keep(&o);
    clustermgr_tests::succeeded(o, what)
}

/// A controller with every host of `net` bootstrapped from an inventory (`gluu1`
/// primary).
fn bootstrapped(t: &mut Transcript, net: &Net) -> Controller {
    let ctl = Controller::new();
    let inventory = ctl.inventory(net, "gluu1").display().to_string();
    ok(
        t,
        ctl.run(&["node", "add", "--from", &inventory]),
        "node add --from",
    );
    ctl
}

/// A self-signed certificate and key for `name` in `dir`, made with openssl.
fn self_signed(dir: &Path, name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let (crt, key) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    let out = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args(["-nodes", "-days", "2", "-subj", &format!("/CN={name}")])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&crt)
        .output()
        .expect("openssl");
    assert!(out.status.success(), "{}", stderr(&out));
    (crt, key)
}

/// Starts an HTTPS stand-in for Gluu on `h`'s 443 that answers with the host's name,
/// and oxAuth's and oxTrust's health checks as they do, with the cluster's certificate
/// as Gluu nodes have it.
fn start_backend(h: &mut Host, dir: &Path, (crt, key): (&Path, &Path)) {
    let conf = format!(
        "pid /run/backend.pid;\nerror_log stderr;\nevents {{}}\nhttp {{\n access_log off;\n server {{\n  listen 443 ssl;\n  ssl_certificate {};\n  ssl_certificate_key {};\n  location / {{ return 200 \"{}\\n\"; }}\n  location ~ ^/(oxauth|identity)/restv1/health-check$ {{ return 200 '{{\"status\": \"running\"}}'; }}\n }}\n}}\n",
        crt.display(),
        key.display(),
        h.name
    );
    let path = dir.join(format!("backend-{}.conf", h.name));
    std::fs::write(&path, conf).unwrap();
    let path = path.display().to_string();
    h.add_service("backend", &["nginx", "-c", &path, "-g", "daemon off;"]);
    let name = h.name.clone();
    eventually_blocking(&format!("the backend on {name}"), secs(10), || {
        h.tcp_open(443)
    });
}

/// Which backend answered one request through the load balancer.
fn through_lb(lb: &Host) -> String {
    let out = std::process::Command::new("curl")
        .args(["-sk", "--max-time", "5", "--resolve"])
        .arg(format!("idp.test:443:{}", lb.ip))
        .arg("https://idp.test/oxauth/")
        .output()
        .expect("curl");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The backends that answered `n` requests through the load balancer.
fn answering(lb: &Host, n: usize) -> std::collections::BTreeSet<String> {
    (0..n).map(|_| through_lb(lb)).collect()
}

#[test]
fn the_load_balancer_follows_the_inventory_drains_and_refuses_a_broken_config() {
    let mut t = Transcript::default();
    let mut net = Net::new();
    for name in ["lb", "gluu1", "gluu2", "gluu3"] {
        net.add_host(name);
    }
    let dir = tempfile::tempdir().unwrap();
    let (crt, key) = self_signed(dir.path(), "idp.test");
    for name in ["gluu1", "gluu2", "gluu3"] {
        start_backend(net.host_mut(name), dir.path(), (&crt, &key));
    }
    let ctl = bootstrapped(&mut t, &net);
    // Before the cluster has a name and a certificate, the LB's nginx waits for them.
    let plan = ok(&mut t, ctl.run(&["plan", "--nodes", "lb"]), "plan");
    assert!(
        plan.contains("waiting:") && plan.contains("hostname"),
        "{plan}"
    );

    let key_body = std::fs::read_to_string(&key).unwrap();
    ok(
        &mut t,
        ctl.run(&["cluster", "set", "hostname", "idp.test"]),
        "set hostname",
    );
    ok(
        &mut t,
        ctl.run(&["cluster", "set", "tls-cert", &crt.display().to_string()]),
        "set tls-cert",
    );
    ok(
        &mut t,
        ctl.run(&["cluster", "set", "tls-key", &key.display().to_string()]),
        "set tls-key",
    );
    let shown = ok(&mut t, ctl.run(&["cluster", "show"]), "cluster show");
    assert!(
        shown.contains("tls-key") && shown.contains("set (sha256"),
        "{shown}"
    );

    let plan = ok(&mut t, ctl.run(&["plan", "--nodes", "lb"]), "plan");
    assert!(
        plan.contains("create /etc/nginx/ssl/clustermgr/cluster.key"),
        "{plan}"
    );
    assert!(
        plan.contains("validate: nginx -t -c /etc/nginx/nginx.conf"),
        "{plan}"
    );
    assert!(plan.contains("then: reload nginx"), "{plan}");
    // Without a terminal, apply asks for --yes instead of applying.
    let refused = ctl.run(&["apply"]);
    t.keep(&refused);
    assert!(!refused.status.success());
    assert!(stderr(&refused).contains("--yes"), "{}", stderr(&refused));

    ok(&mut t, ctl.run(&["apply", "--yes"]), "apply");
    let lb = net.host("lb");
    eventually_blocking("nginx on the LB to serve", secs(10), || lb.tcp_open(443));
    let seen = answering(lb, 12);
    let three: std::collections::BTreeSet<String> = ["gluu1", "gluu2", "gluu3"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(seen, three, "round robin over the three Gluu nodes");
    // Health tries oxAuth and oxTrust through the LB, its certificate pinned.
    eventually_blocking("the LB's endpoints checked", secs(20), || {
        let (level, why) = services(&ctl, "lb");
        level == "ok"
            && why
                == "2 services answer: oxAuth through the load balancer, oxTrust through the load balancer"
    });

    // An applied cluster plans no change.
    let plan = ok(&mut t, ctl.run(&["plan"]), "plan");
    assert!(!plan.contains(" to change"), "{plan}");

    // A fourth Gluu node joins the upstreams once applied; first with a certificate
    // of the right name that is not the cluster's, which the LB refuses to talk to.
    net.add_host("gluu4");
    let impostor = tempfile::tempdir().unwrap();
    let (fake_crt, fake_key) = self_signed(impostor.path(), "idp.test");
    start_backend(net.host_mut("gluu4"), dir.path(), (&fake_crt, &fake_key));
    let kh = net.known_hosts().display().to_string();
    ok(
        &mut t,
        ctl.add(&net, "gluu4", &["--role", "gluu", "--known-hosts", &kh]),
        "node add gluu4",
    );
    let lb = net.host("lb");
    let plan = ok(&mut t, ctl.run(&["plan", "--nodes", "lb"]), "plan");
    assert!(plan.contains("modify /etc/nginx/nginx.conf"), "{plan}");
    let added = format!("+        server {}:443 max_fails=2", net.host("gluu4").ip);
    assert_eq!(plan.matches(&added).count(), 2, "in both upstreams: {plan}");
    ok(&mut t, ctl.run(&["apply", "--yes"]), "apply");
    let lb_errors =
        || std::fs::read_to_string(lb.path("/var/log/nginx/error.log")).unwrap_or_default();
    eventually_blocking("the LB to refuse gluu4's certificate", secs(10), || {
        answering(lb, 4).len() == 3 && lb_errors().contains("upstream SSL certificate verify error")
    });
    let seen = answering(lb, 16);
    assert!(!seen.contains("gluu4") && seen.len() == 3, "{seen:?}");
    // With the cluster certificate it is let in.
    let h = net.host_mut("gluu4");
    h.sh("kill $(cat /run/backend.pid)");
    eventually_blocking("the impostor to stop", secs(10), || !h.tcp_open(443));
    start_backend(h, dir.path(), (&crt, &key));
    let lb = net.host("lb");
    eventually_blocking("gluu4 to answer through the LB", secs(30), || {
        through_lb(lb) == "gluu4"
    });

    // Drained, a node gets no more requests.
    ok(&mut t, ctl.run(&["drain", "gluu2"]), "drain");
    // nginx's old workers finish what they accepted before the reload.
    eventually_blocking("gluu2 to be drained", secs(10), || {
        !answering(lb, 8).contains("gluu2")
    });
    let seen = answering(lb, 16);
    assert!(!seen.contains("gluu2") && seen.len() == 3, "{seen:?}");
    ok(&mut t, ctl.run(&["undrain", "gluu2"]), "undrain");
    eventually_blocking("gluu2 back behind the LB", secs(10), || {
        through_lb(lb) == "gluu2"
    });

    // A config nginx -t rejects (stock nginx has no sticky module) is rolled back, and
    // nginx keeps serving the old one.
    let before = std::fs::read_to_string(lb.path("/etc/nginx/nginx.conf")).unwrap();
    ok(
        &mut t,
        ctl.run(&["cluster", "set", "lb-session", "sticky"]),
        "set sticky",
    );
    let out = ctl.run(&["apply", "--yes", "--nodes", "lb"]);
    t.keep(&out);
    assert!(!out.status.success(), "{}", stdout(&out));
    let text = stdout(&out);
    assert!(text.contains("rolled back"), "{text}");
    assert!(text.contains("sticky"), "nginx's own words: {text}");
    assert_eq!(
        std::fs::read_to_string(lb.path("/etc/nginx/nginx.conf")).unwrap(),
        before
    );
    assert_eq!(answering(lb, 16).len(), 4, "still serving the old config");
    ok(
        &mut t,
        ctl.run(&["cluster", "set", "lb-session", "ip_hash"]),
        "unset sticky",
    );

    // A hand edit shows in plan and drift, exactly, and serve leaves it alone.
    lb.sh("echo '# emergency edit' >> /etc/nginx/nginx.conf");
    let drift = ctl.run(&["drift", "--nodes", "lb"]);
    t.keep(&drift);
    assert_eq!(drift.status.code(), Some(2), "{}", stdout(&drift));
    let text = stdout(&drift);
    // What changed on the node reads as the change: a line added by hand is a `+`,
    // from what clustermgr applied to what the node has now.
    assert!(text.contains("+# emergency edit"), "{text}");
    assert!(
        text.contains("--- /etc/nginx/nginx.conf (as clustermgr applied it)")
            && text.contains("+++ /etc/nginx/nginx.conf (on the node now)"),
        "{text}"
    );
    let changed: Vec<&str> = text
        .lines()
        .filter(|l| {
            (l.starts_with("    -") && !l.starts_with("    ---"))
                || (l.starts_with("    +") && !l.starts_with("    +++"))
        })
        .collect();
    assert_eq!(
        changed,
        ["    +# emergency edit"],
        "exactly the edit: {text:?}"
    );
    let plan = ok(&mut t, ctl.run(&["plan", "--nodes", "lb"]), "plan");
    assert!(
        plan.contains("[edited on the node since the last apply]"),
        "{plan}"
    );

    let history = ok(&mut t, ctl.run(&["history", "--nodes", "lb"]), "history");
    assert!(history.contains("/etc/nginx/nginx.conf"), "{history}");
    assert!(history.contains("rolled back"), "{history}");
    let o = ctl.run(&["--json", "history"]);
    let history = clustermgr_tests::schema::json(&o, "history");
    assert!(
        history["changes"]
            .as_array()
            .is_some_and(|c| c.iter().any(|c| c["result"]
                .as_str()
                .is_some_and(|r| r.starts_with("rolled back")))),
        "{history}"
    );
    let o = ctl.run(&["--json", "plan"]);
    clustermgr_tests::schema::json(&o, "plan");

    // A rolling apply drains each Gluu node while it changes, checks it (the service
    // its change restarts runs, and it answers HTTPS with the cluster certificate),
    // and puts it back.
    ok(
        &mut t,
        ctl.run(&[
            "cluster",
            "set",
            "replicated-paths",
            "/opt/gluu/python/libs",
        ]),
        "set replicated-paths",
    );
    let rolled = ok(
        &mut t,
        ctl.run(&["apply", "--yes", "--rolling"]),
        "apply --rolling",
    );
    for node in ["gluu1", "gluu2", "gluu3", "gluu4"] {
        assert!(rolled.contains(&format!("{node}: applied")), "{rolled}");
    }
    assert_eq!(
        rolled.matches("ok: clustermgr-csync2 running").count(),
        4,
        "{rolled}"
    );
    assert_eq!(
        rolled.matches("ok: HTTPS GET / on port 443").count(),
        4,
        "{rolled}"
    );
    // ... and the cluster's health checks after each: nothing newly critical.
    assert_eq!(
        rolled.matches("ok: the cluster's health").count(),
        4,
        "{rolled}"
    );
    let shown = ok(&mut t, ctl.run(&["cluster", "show"]), "cluster show");
    assert!(
        shown.lines().any(|l| l.trim() == "drained"),
        "none left drained: {shown}"
    );
    // A node that stops answering fails its check: the rolling apply stops there, and
    // it stays out of the load balancer.
    // The bracket keeps pkill from matching its own shell.
    net.host("gluu2").sh("pkill -f 'backend-gluu[2].conf'");
    ok(
        &mut t,
        ctl.run(&["cluster", "set", "replicated-paths", "default"]),
        "default",
    );
    let out = ctl.run(&["apply", "--yes", "--rolling"]);
    t.keep(&out);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("gluu1: applied"), "{text}");
    assert!(text.contains("gluu2: check failed"), "{text}");
    assert!(text.contains("undrain gluu2"), "{text}");
    assert!(text.contains("gluu3: skipped"), "{text}");
    let shown = ok(&mut t, ctl.run(&["cluster", "show"]), "cluster show");
    assert!(shown.contains("drained            gluu2"), "{shown}");
    eventually_blocking("gluu2 out of the load balancer", secs(10), || {
        !answering(lb, 8).contains("gluu2")
    });
    // Every backend down: the LB's health check says what nginx answered.
    for n in ["gluu1", "gluu3", "gluu4"] {
        net.host(n)
            .sh(&format!("pkill -f 'backend-{}[.]conf' || true", n));
    }
    eventually_blocking("the LB's endpoints failing", secs(30), || {
        let (level, why) = services(&ctl, "lb");
        level == "critical"
            && why.contains("oxAuth through the load balancer: GET /oxauth/restv1/health-check answered HTTP/1.1 50")
    });

    // No secret in anything printed, logged or journaled.
    t.assert_no_secrets(&ctl, &net, &[key_body]);
}

/// The content every file of version `v` has.
fn versioned(i: usize, v: usize) -> String {
    format!("file {i} of version {v}\n{}\n", "x".repeat(4096))
}

/// Which version each of `n` files under `dir` holds (`None`: absent).
fn versions_on_disk(dir: &Path, n: usize) -> Vec<Option<usize>> {
    (0..n)
        .map(|i| {
            let text = std::fs::read_to_string(dir.join(format!("f{i}.conf"))).ok()?;
            let v = text.lines().next()?.rsplit(' ').next()?.parse().ok()?;
            assert_eq!(text, versioned(i, v), "file {i} is whole");
            Some(v)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_set_killed_at_any_moment_is_wholly_old_or_wholly_new() {
    use clustermgr_protocol::changeset::{Action, ChangeSet, Content, Entry, Scope, Validator};
    use clustermgr_protocol::message::{Command, Request};

    const FILES: usize = 20;
    let mut c = clustermgr_tests::Cluster::gluu(1).await;
    let root = c.agent("gluu1").dir.join("root");
    let dir = root.join("etc/app");
    std::fs::create_dir_all(&dir).unwrap();
    let set = |v: usize| ChangeSet {
        revision: v as u64,
        entries: (0..FILES)
            .map(|i| Entry {
                path: format!("/etc/app/f{i}.conf"),
                scope: Scope::Host,
                content: Content::File {
                    bytes: versioned(i, v).into_bytes(),
                    mode: 0o644,
                    owner: None,
                    group: None,
                },
                secret: false,
                validate: (i == 0)
                    .then(|| Validator::Command(Command::Shell("sleep 0.02; test -s {}".into()))),
                // The actions take a while, so kills land in every phase.
                on_change: vec![Action::Command(Command::Shell(format!(
                    "sleep 0.0{}",
                    i % 4
                )))],
            })
            .collect(),
        requested_by: "test".into(),
    };
    let ctx = c.ctx();
    let rec = ctx.store.node("gluu1").unwrap().unwrap();
    let mut previous: Vec<Option<usize>> = vec![None; FILES];
    let (mut old, mut new) = (0, 0);
    for round in 1..=16usize {
        let conn = ctx.connection(&rec).await.expect("agent answers");
        let req = Request::Apply(set(round));
        let apply =
            tokio::spawn(async move { conn.unary(&req, std::time::Duration::from_secs(30)).await });
        // Spread the kills over the apply: staging, swapping, validating, acting.
        tokio::time::sleep(std::time::Duration::from_millis((round as u64 * 7) % 110)).await;
        c.restart_agent("gluu1").await;
        // Its answer, if any, no longer matters: the disk is what the test judges (and
        // a request waiting on the killed agent would only end at the next keep-alive).
        apply.abort();
        let now = versions_on_disk(&dir, FILES);
        let wholly_new = now.iter().all(|v| *v == Some(round));
        let wholly_old = now == previous;
        assert!(
            wholly_new || wholly_old,
            "round {round}: a mixed set on disk: {now:?} (before: {previous:?})"
        );
        if wholly_new {
            new += 1;
        } else {
            old += 1;
        }
        let leftovers: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with('.'))
            .collect();
        assert!(leftovers.is_empty(), "round {round}: {leftovers:?}");
        previous = now;
    }
    eprintln!("killed 16 applies: {new} ended wholly new, {old} wholly old");
    // The agent still applies normally afterwards.
    let conn = ctx.connection(&rec).await.unwrap();
    let reply = conn
        .unary(&Request::Apply(set(99)), std::time::Duration::from_secs(30))
        .await
        .unwrap();
    assert!(
        matches!(reply, clustermgr_protocol::message::Reply::Applied(_)),
        "{reply:?}"
    );
    assert!(versions_on_disk(&dir, FILES).iter().all(|v| *v == Some(99)));
}

/// Where `apply` leaves the Redis password on the nodes that check Redis.
const REDIS_PASSWORD_FILE: &str = "/etc/stunnel/clustermgr/redis-password";

/// `redis-cli COMMAND...` on `h` at 127.0.0.1:`port` (the tunnel's local end, or Redis
/// itself on the cache host), authenticated with the node's password file when `auth`
/// (through the environment, as redis-cli reads it, never its arguments).
fn redis_cli(h: &Host, port: u16, auth: bool, command: &str) -> String {
    let env = if auth {
        format!("REDISCLI_AUTH=\"$(cat {REDIS_PASSWORD_FILE})\" ")
    } else {
        String::new()
    };
    h.sh(&format!(
        "{env}timeout 5 redis-cli -h 127.0.0.1 -p {port} {command} 2>&1 || true"
    ))
    .trim()
    .to_string()
}

/// `PING` on `h` through the tunnel's local end on `port`, authenticated.
fn redis_ping(h: &Host, port: u16) -> String {
    redis_cli(h, port, true, "PING")
}

#[test]
fn csync2_replicates_and_stunnel_verifies_both_ends() {
    let mut t = Transcript::default();
    let mut net = Net::new();
    for name in ["gluu1", "gluu2", "gluu3"] {
        net.add_host(name);
    }
    let ctl = bootstrapped(&mut t, &net);
    net.add_host("cache");
    let kh = net.known_hosts().display().to_string();
    ok(
        &mut t,
        ctl.add(&net, "cache", &["--role", "cache", "--known-hosts", &kh]),
        "node add cache",
    );
    // Redis as Debian packages it: its own redis.conf and init script, which `apply`
    // edits and restarts (nothing runs it before).
    ok(
        &mut t,
        ctl.run(&["cluster", "set", "cache", "redis"]),
        "set cache",
    );
    let custom = "/opt/gluu-server/opt/gluu/jetty/oxauth/custom";
    for h in net.hosts() {
        h.sh(&format!("mkdir -p {custom} /opt/gluu-server/etc/gluu/conf"));
    }
    let plan = ok(&mut t, ctl.run(&["plan"]), "plan");
    // The keys the hosts will make, and the certificates issued for them, are in the
    // plan: apply writes nothing it did not show.
    for key in [
        "/etc/csync2_ssl_key.pem",
        "/etc/stunnel/clustermgr/host.key",
    ] {
        assert!(
            plan.contains(&format!(
                "create {key} (host)\n    generated on the node at apply"
            )),
            "{plan}"
        );
    }
    assert!(!plan.contains("waits for gluu1's key"), "{plan}");

    let applied = ok(&mut t, ctl.run(&["apply", "--yes"]), "apply");
    assert!(applied.contains("restart clustermgr-csync2"), "{applied}");
    // Keys were made on the hosts, owner-only, and never left them.
    let g1 = net.host("gluu1");
    // The generated services start at boot too.
    let links = g1.sh("ls /etc/rc2.d");
    assert!(
        links.contains("clustermgr-csync2") && links.contains("clustermgr-stunnel"),
        "{links}"
    );
    let mode = g1.sh("stat -c %a /etc/csync2_ssl_key.pem /etc/stunnel/clustermgr/host.key");
    assert_eq!(mode, "600\n600\n");
    let plan = ok(&mut t, ctl.run(&["plan"]), "plan");
    assert!(
        !plan.contains(" to change"),
        "an applied cluster plans nothing: {plan}"
    );

    // csync2: a file under a replicated path reaches the other two; a per-node one not.
    for h in ["gluu1", "gluu2", "gluu3"] {
        let h = net.host(h);
        eventually_blocking(&format!("csync2 listening on {}", h.name), secs(10), || {
            h.tcp_open(30865)
        });
    }
    g1.sh(&format!(
        "echo shared > {custom}/login.xhtml && echo mine > /opt/gluu-server/etc/gluu/conf/salt"
    ));
    let sync = g1.run(&["csync2", "-x", "-N", "gluu1"]);
    assert!(
        sync.status.success(),
        "csync2 -x: {:?} {}",
        sync.status,
        String::from_utf8_lossy(&sync.stderr)
    );
    for h in ["gluu2", "gluu3"] {
        let h = net.host(h);
        assert_eq!(
            std::fs::read_to_string(h.path(&format!("{custom}/login.xhtml"))).ok(),
            Some("shared\n".into()),
            "on {}",
            h.name
        );
        assert!(!h.path("/opt/gluu-server/etc/gluu/conf/salt").exists());
    }

    // stunnel: a Gluu node reaches Redis on the cache host only through the tunnel.
    let cache = net.host("cache");
    eventually_blocking("the tunnel's server end", secs(10), || {
        cache.tcp_open(16379)
    });
    eventually_blocking("PONG through the tunnel", secs(10), || {
        redis_ping(g1, 16379) == "PONG"
    });
    // Redis: on loopback only, with the password the controller made (the one in its
    // store), which every checking node has and the load balancer does not need.
    let password = {
        // No serve runs, so the store is free to open (and closed again at once).
        let store = clustermgr::store::Store::open(
            &ctl.home.join("inventory.redb"),
            &ctl.home.join("serve.sock"),
        )
        .unwrap();
        store.build().unwrap().redis_password.unwrap()
    };
    assert_eq!(password.len(), 40);
    for h in ["cache", "gluu1", "gluu2", "gluu3"] {
        let h = net.host(h);
        assert_eq!(
            std::fs::read_to_string(h.path(REDIS_PASSWORD_FILE)).unwrap(),
            format!("{password}\n")
        );
        assert_eq!(
            h.sh(&format!("stat -c %a:%U {REDIS_PASSWORD_FILE}")),
            "600:root\n"
        );
    }
    let listening = cache.sh("ss -Hltn 'sport = :6379'");
    assert!(
        listening.contains("127.0.0.1:6379") && !listening.contains("0.0.0.0:6379"),
        "{listening}"
    );
    // What one node writes through its tunnel, another reads through its own; without
    // the password Redis refuses.
    assert_eq!(
        redis_cli(g1, 16379, true, "SET cluster-key from-gluu1"),
        "OK"
    );
    let g2 = net.host("gluu2");
    assert_eq!(redis_cli(g2, 16379, true, "GET cluster-key"), "from-gluu1");
    let refused = redis_cli(g2, 16379, false, "GET cluster-key");
    assert!(refused.starts_with("NOAUTH"), "{refused}");
    // Health tries the cache on its host and through each Gluu node's tunnel, and
    // authenticates.
    eventually_blocking("the cache checked through the tunnel", secs(20), || {
        let (level, why) = services(&ctl, "gluu1");
        level == "ok"
            && why.contains("the cache through the stunnel tunnel answers (PONG")
            && why.contains("authenticated")
    });
    let (level, why) = services(&ctl, "cache");
    assert!(
        level == "ok" && why.contains("Redis answers (PONG") && why.contains("authenticated"),
        "{why}"
    );
    // A wrong password is unhealthy in Redis's words; apply puts the right one back.
    g2.sh(&format!("echo wrong-password > {REDIS_PASSWORD_FILE}"));
    eventually_blocking("the wrong password in gluu2's check", secs(20), || {
        let (level, why) = services(&ctl, "gluu2");
        level == "critical" && why.contains("WRONGPASS")
    });
    ok(
        &mut t,
        ctl.run(&["apply", "--yes", "--nodes", "gluu2"]),
        "apply",
    );
    eventually_blocking("gluu2's check authenticated again", secs(20), || {
        services(&ctl, "gluu2").0 == "ok"
    });
    // A second apply changes nothing: Redis is not restarted again.
    let again = ok(&mut t, ctl.run(&["apply", "--yes"]), "apply");
    assert!(!again.contains("restart redis-server"), "{again}");
    // A client with a certificate from another CA is refused.
    let d = "/etc/stunnel/rogue";
    g1.sh(&format!(
        "mkdir -p {d} && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=gluu1 -keyout {d}/k.pem -out {d}/c.pem 2>/dev/null"
    ));
    g1.sh(&format!(
        "printf 'pid = /run/rogue.pid\\n[r]\\nclient = yes\\naccept = 0.0.0.0:26379\\nconnect = {}:16379\\ncert = {d}/c.pem\\nkey = {d}/k.pem\\n' > {d}/s.conf && stunnel4 {d}/s.conf",
        cache.ip
    ));
    eventually_blocking("the rogue client's port", secs(10), || g1.tcp_open(26379));
    assert_ne!(
        redis_ping(g1, 26379),
        "PONG",
        "another CA's certificate got through"
    );

    // A removed node's certificate is revoked: once the cache host has the new list,
    // its tunnel is refused.
    let g3 = net.host("gluu3");
    assert_eq!(redis_ping(g3, 16379), "PONG");
    ok(
        &mut t,
        ctl.run(&["node", "remove", "gluu3", "--yes"]),
        "node remove",
    );
    let applied = ok(&mut t, ctl.run(&["apply", "--yes"]), "apply");
    assert!(applied.contains("crl.pem"), "{applied}");
    eventually_blocking("gluu3 refused", secs(10), || {
        redis_ping(g3, 16379) != "PONG"
    });
    assert_eq!(redis_ping(g1, 16379), "PONG", "the others still pass");

    // A tunnel key the node cannot use is reported by apply, for that node, with the
    // file to fix; the others apply.
    let k = "/etc/stunnel/clustermgr/host.key";
    g2.sh(&format!(
        "mv {k} {k}.good && echo junk > {k} && chmod 600 {k}"
    ));
    let out = ctl.run(&["apply", "--yes"]);
    t.keep(&out);
    assert!(
        !out.status.success(),
        "{}{}{}",
        stdout(&out),
        stderr(&out),
        g2.sh(&format!("ls -la {k}*; cat {k}"))
    );
    let text = stdout(&out);
    let line = text
        .lines()
        .find(|l| l.starts_with("gluu2") && l.contains("(revision"))
        .unwrap_or_default();
    assert!(
        line.contains("tunnel key")
            && line.contains(k)
            && line.contains("not a usable private key"),
        "{text}"
    );
    assert!(
        !text
            .lines()
            .any(|l| l.starts_with("gluu1") && l.contains("tunnel key")),
        "{text}"
    );
    g2.sh(&format!("mv {k}.good {k}"));
    ok(
        &mut t,
        ctl.run(&["apply", "--yes"]),
        "apply with the key back",
    );

    // Redis down: the cache host's check and every tunnel's fail, in words.
    redis_cli(cache, 6379, true, "shutdown nosave");
    eventually_blocking("Redis down in the health checks", secs(20), || {
        let (level, why) = services(&ctl, "gluu1");
        level == "critical" && why.contains("the cache through the stunnel tunnel")
    });
    let (level, why) = services(&ctl, "cache");
    assert!(
        level == "critical" && why.contains("Redis: cannot connect to 127.0.0.1:6379"),
        "{why}"
    );

    let host_secrets: Vec<String> = [
        "/etc/csync2.key",
        "/etc/csync2_ssl_key.pem",
        "/etc/stunnel/clustermgr/host.key",
        REDIS_PASSWORD_FILE,
    ]
    .iter()
    .map(|f| std::fs::read_to_string(g1.path(f)).unwrap())
    .collect();
    t.assert_no_secrets(&ctl, &net, &host_secrets);
}

/// The `services` health check of `node`: its level and reason.
fn services(ctl: &Controller, node: &str) -> (String, String) {
    let out = ctl.run(&["--json", "health"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    if !v.is_null() {
        clustermgr_tests::schema::assert_valid("health", &v);
    }
    v["verdicts"]
        .as_array()
        .and_then(|a| {
            a.iter()
                .find(|r| r["node"] == node && r["check"] == "services")
                .map(|r| {
                    (
                        r["level"].as_str().unwrap_or_default().to_string(),
                        r["reason"].as_str().unwrap_or_default().to_string(),
                    )
                })
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gluu_nodes_are_configured_inside_their_container_and_a_returning_node_catches_up() {
    let mut t = Transcript::default();
    let mut net = Net::new();
    for name in ["gluu1", "gluu2"] {
        net.add_host(name);
        clustermgr_tests::container::busybox(net.host(name));
    }
    let ctl = bootstrapped(&mut t, &net);
    let ldap = "/etc/gluu/conf/gluu-ldap.properties";

    // The servers line is an edit inside the container: the plan shows that line only,
    // and not the line it replaces, since the file holds Gluu's bind password.
    let plan = ok(&mut t, ctl.run(&["plan", "--nodes", "gluu1"]), "plan");
    assert!(
        plan.contains(&format!("modify {ldap} (container /opt/gluu-server)")),
        "{plan}"
    );
    assert!(!plan.contains("-servers: localhost:1636"), "{plan}");
    assert!(!plan.contains("bindPassword"), "{plan}");
    assert!(plan.contains("+servers: gluu1:1636,gluu2:1636"), "{plan}");
    ok(&mut t, ctl.run(&["apply", "--yes"]), "apply");
    let g1 = net.host("gluu1");
    let text = std::fs::read_to_string(g1.path(&format!("/opt/gluu-server{ldap}"))).unwrap();
    assert_eq!(
        text,
        "bindDN: cn=directory manager\nbindPassword: c2VjcmV0LXBhc3N3b3Jk\nservers: gluu1:1636,gluu2:1636\nuseSSL: true\n"
    );
    // The container's own /etc/hosts names the nodes too, for the LDAP servers line.
    let hosts = std::fs::read_to_string(g1.path("/opt/gluu-server/etc/hosts")).unwrap();
    assert!(
        hosts.contains(&format!("{} gluu2\n", net.host("gluu2").ip)),
        "{hosts}"
    );
    // exec --in-container runs chrooted into the container.
    let out = ok(
        &mut t,
        ctl.run(&[
            "exec",
            "--in-container",
            "--nodes",
            "gluu2",
            "--",
            "grep",
            "servers",
            ldap,
        ]),
        "exec --in-container",
    );
    assert!(out.contains("servers: gluu2:1636,gluu1:1636"), "{out}");
    let out = ok(
        &mut t,
        ctl.run(&[
            "exec",
            "--in-container",
            "--nodes",
            "gluu2",
            "--",
            "ls",
            "/",
        ]),
        "exec --in-container ls",
    );
    assert_eq!(
        out.lines()
            .map(|l| l.rsplit(' ').next().unwrap())
            .collect::<Vec<_>>(),
        ["bin", "etc"],
        "{out}"
    );

    // gluu2 is away for an apply: it keeps the revision, and serve sends it when the node
    // is back, without undoing a hand edit of an entry that did not change.
    let g2 = net.host("gluu2");
    g2.sh("sed -i '/^# END clustermgr hosts/i 10.9.9.9 emergency' /etc/hosts");
    g2.cut_link();
    ok(
        &mut t,
        ctl.run(&[
            "cluster",
            "set",
            "replicated-paths",
            "/opt/gluu/jetty/oxauth/custom",
        ]),
        "set replicated-paths",
    );
    let out = ctl.run(&["apply", "--yes", "--connect-timeout", "1"]);
    t.keep(&out);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(stdout(&out).contains("gluu2: pending"), "{}", stdout(&out));
    let cfg = |h: &Host| std::fs::read_to_string(h.path("/etc/csync2.cfg")).unwrap();
    assert!(
        !cfg(g1).contains("include /opt/gluu-server/opt/shibboleth-idp/conf;"),
        "gluu1 has the new revision"
    );
    assert!(
        cfg(g2).contains("include /opt/gluu-server/opt/shibboleth-idp/conf;"),
        "gluu2 still has the old one"
    );
    let _serve = ctl.serve().await;
    g2.restore_link();
    clustermgr_tests::eventually("serve to send gluu2 its missed revision", secs(60), || {
        !cfg(g2).contains("include /opt/gluu-server/opt/shibboleth-idp/conf;")
    })
    .await;
    let hosts = std::fs::read_to_string(g2.path("/etc/hosts")).unwrap();
    assert!(
        hosts.contains("10.9.9.9 emergency"),
        "the hand edit stays: {hosts}"
    );
    // The node has the files a moment before serve has recorded its answer.
    clustermgr_tests::eventually("the reconcile in the history", secs(10), || {
        let out = ctl.run(&["history", "--nodes", "gluu2"]);
        stdout(&out).contains("reconcile")
    })
    .await;
    let drift = ctl.run(&["drift", "--nodes", "gluu2"]);
    t.keep(&drift);
    assert_eq!(drift.status.code(), Some(2));
    // Inside the managed block of /etc/hosts: its hunks say so rather than give line
    // numbers that would read as the file's.
    assert!(
        stdout(&drift).contains("+10.9.9.9 emergency")
            && stdout(&drift).contains("@@ within clustermgr's part of the file @@"),
        "{}",
        stdout(&drift)
    );

    // A rollback restores the previous csync2.cfg and holds it there through an apply.
    let list = ok(
        &mut t,
        ctl.run(&["rollback", "gluu1", "/etc/csync2.cfg", "--list"]),
        "rollback --list",
    );
    assert!(list.contains("generation 1"), "{list}");
    ok(
        &mut t,
        ctl.run(&["rollback", "gluu1", "/etc/csync2.cfg"]),
        "rollback",
    );
    assert!(
        cfg(g1).contains("include /opt/gluu-server/opt/shibboleth-idp/conf;"),
        "the previous version is back"
    );
    let plan = ok(&mut t, ctl.run(&["plan", "--nodes", "gluu1"]), "plan");
    assert!(plan.contains("held: /etc/csync2.cfg"), "{plan}");
    ok(
        &mut t,
        ctl.run(&["apply", "--yes", "--nodes", "gluu1"]),
        "apply",
    );
    assert!(
        cfg(g1).contains("include /opt/gluu-server/opt/shibboleth-idp/conf;"),
        "held through an apply"
    );
    // A new desired state ends the hold.
    ok(
        &mut t,
        ctl.run(&["cluster", "set", "replicated-paths", "default"]),
        "default",
    );
    ok(
        &mut t,
        ctl.run(&[
            "cluster",
            "set",
            "replicated-paths",
            "/opt/gluu/python/libs",
        ]),
        "libs",
    );
    ok(
        &mut t,
        ctl.run(&["apply", "--yes", "--nodes", "gluu1"]),
        "apply",
    );
    assert!(
        !cfg(g1).contains("include /opt/gluu-server/opt/shibboleth-idp/conf;")
            && cfg(g1).contains("python/libs")
    );

    // /etc/hosts is managed on the host and inside the container: --in-container picks
    // the container's copy, and a held file is not reported as drift.
    ok(
        &mut t,
        ctl.run(&["rollback", "gluu1", "/etc/hosts", "--in-container"]),
        "rollback --in-container",
    );
    let inside = std::fs::read_to_string(g1.path("/opt/gluu-server/etc/hosts")).unwrap();
    assert_eq!(inside, "127.0.0.1 localhost\n");
    let outside = std::fs::read_to_string(g1.path("/etc/hosts")).unwrap();
    assert!(outside.contains("# BEGIN clustermgr hosts"), "{outside}");
    let drift = ctl.run(&["drift", "--nodes", "gluu1"]);
    t.keep(&drift);
    assert_eq!(drift.status.code(), Some(0), "{}", stdout(&drift));
    let serve_log = std::fs::read_to_string(ctl.home.parent().unwrap().join("serve.log")).unwrap();
    assert!(serve_log.contains("revision 2 it missed"), "{serve_log}");
    let csync2_key = std::fs::read_to_string(g1.path("/etc/csync2.key")).unwrap();
    t.assert_no_secrets(
        &ctl,
        &net,
        &["c2VjcmV0LXBhc3N3b3Jk".to_string(), csync2_key],
    );
}

/// The tunnel keeper of `serve`, once the tunnel certificates near their end: the
/// stunnel certificates and the revocation list are renewed and delivered as a revision
/// of those files alone, so neither a hand edit nor a model change not applied yet
/// goes out with them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tunnel_certificates_are_renewed_before_they_end_and_nothing_else_is_sent() {
    use clustermgr::store::Role;
    let mut cache = clustermgr_tests::node("cache", "");
    cache.roles = vec![Role::Cache];
    let c = clustermgr_tests::Cluster::start(vec![
        clustermgr_tests::node("gluu1", ""),
        clustermgr_tests::node("gluu2", ""),
        cache,
    ])
    .await;
    let run = |args: &[&str]| {
        let out = c.run(args);
        assert!(
            out.status.success(),
            "{args:?}: {}{}",
            stdout(&out),
            stderr(&out)
        );
        stdout(&out)
    };
    run(&["cluster", "set", "cache", "redis"]);
    run(&["apply", "--yes"]);
    let file = |node: &str, path: &str| {
        std::fs::read_to_string(
            c.agent(node)
                .dir
                .join("root")
                .join(path.trim_start_matches('/')),
        )
        .unwrap_or_else(|e| panic!("{node}:{path}: {e}"))
    };
    let not_after = |pem: &str| {
        clustermgr_protocol::identity::CertSummary::parse_pem(pem)
            .unwrap()
            .not_after
    };
    let crt = "/etc/stunnel/clustermgr/host.crt";
    let crl = "/etc/stunnel/clustermgr/crl.pem";
    let conf = "/etc/stunnel/clustermgr/stunnel.conf";
    let (old_crt, old_crl) = (file("gluu1", crt), file("cache", crl));
    // A hand edit, and a model change nobody applied yet.
    let edited = c
        .agent("gluu1")
        .dir
        .join("root")
        .join(conf.trim_start_matches('/'));
    let mut text = std::fs::read_to_string(&edited).unwrap();
    text.push_str("# emergency edit\n");
    std::fs::write(&edited, &text).unwrap();
    run(&["cluster", "set", "replicated-paths", "/opt/not-applied"]);

    // Today nothing is due.
    let ctx = c.ctx();
    let given = clustermgr::desired::renew_tunnel(&ctx, secs(5))
        .await
        .unwrap();
    assert!(given.is_empty(), "{given:?}");

    // Then the stunnel certificates and the list are 30 days from their end (made so
    // by certifying the hosts' keys again for 30 days: the agents check real time, so
    // the controller's clock cannot simply be moved).
    let mut csrs = Vec::new();
    for name in ["gluu1", "gluu2"] {
        let node = ctx.store.node(name).unwrap().unwrap();
        let conn = ctx.connection(&node).await.unwrap();
        let req = clustermgr_protocol::message::Request::HostKey {
            path: clustermgr::generate::STUNNEL_KEY.into(),
            scope: clustermgr_protocol::changeset::Scope::Host,
        };
        match conn.unary(&req, secs(5)).await.unwrap() {
            clustermgr_protocol::message::Reply::Csr { pem } => csrs.push((name, pem)),
            other => panic!("{other:?}"),
        }
    }
    let now = time::OffsetDateTime::now_utc();
    ctx.store
        .update_tunnel(|slot| {
            let rec = slot.as_mut().expect("a tunnel CA");
            let ca = clustermgr::ca::Ca::load(&rec.ca_cert_pem, &rec.ca_key_pem)?;
            for (name, csr) in &csrs {
                let node = clustermgr_protocol::NodeName::new(name).unwrap();
                let key = clustermgr::ca::csr_public_key(&node, csr)?;
                let issued = ca.sign_tunnel(&node, &key, now, time::Duration::days(30))?;
                rec.certs.insert(
                    format!("stunnel/{name}"),
                    (issued.pem, issued.summary.serial, key.fingerprint),
                );
            }
            rec.crl_next_update = (now + time::Duration::days(30)).unix_timestamp();
            Ok(())
        })
        .unwrap();
    let mut given = clustermgr::desired::renew_tunnel(&ctx, secs(5))
        .await
        .unwrap();
    given.sort();
    assert_eq!(given, ["cache", "gluu1", "gluu2"]);
    for node in ctx.store.nodes().unwrap() {
        let v = clustermgr::desired::reconcile(&ctx, &node)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{} got nothing", node.name));
        assert_eq!(v.state, clustermgr::ops::NodeState::Ok, "{:?}", v.message);
        let mut paths: Vec<&str> = v.entries.iter().map(|e| e.path.as_str()).collect();
        paths.sort();
        let want: &[&str] = if node.name == "cache" {
            &[crl]
        } else {
            &[crl, crt]
        };
        assert_eq!(paths, want, "{}: only the renewed files", node.name);
    }
    let new_crt = file("gluu1", crt);
    assert_ne!(new_crt, old_crt);
    assert!(not_after(&new_crt) > now.unix_timestamp() + 300 * 86_400);
    assert_ne!(file("cache", crl), old_crl);
    assert!(file("gluu1", conf).ends_with("# emergency edit\n"));
    assert!(!file("gluu1", "/etc/csync2.cfg").contains("/opt/not-applied"));
    // Delivered: nothing is pending any more, and a second pass renews nothing.
    for node in ["cache", "gluu1", "gluu2"] {
        assert!(ctx.store.desired(node).unwrap().pending.is_none(), "{node}");
    }
    assert!(
        clustermgr::desired::renew_tunnel(&ctx, secs(5))
            .await
            .unwrap()
            .is_empty()
    );
    ctx.dialer.close().await;
}

/// A Gluu container on `h` whose Java is the machine's: busybox for its shell, the
/// machine's `/usr` (and `/proc`, `/dev`, Java's `/etc` settings) bound in, so the
/// real `keytool` runs chrooted as Gluu's does, at `/opt/jre/bin/keytool` with
/// Java 11's layout (`/opt/jre/lib/security/cacerts`). Its trust store already holds an
/// older certificate under the cluster's alias (`old`), and Gluu's own Apache key is
/// owned by its `jetty` user. Stand-in init scripts for Apache and oxAuth log their
/// restarts; oxTrust is not installed.
fn make_java_container(h: &Host, old: &Path) {
    clustermgr_tests::container::java(h);
    h.sh(&format!(
        "set -e; r=/opt/gluu-server; mkdir -p $r/etc/init.d; \
         echo old-key > $r/etc/certs/httpd.key; chown 1001:1001 $r/etc/certs/httpd.key; chmod 500 $r/etc/certs/httpd.key; \
         cp {} $r/etc/certs/old.crt; \
         printf 'changeit\\nchangeit\\n' | chroot $r /opt/jre/bin/keytool -importcert -noprompt -alias idp.test_httpd -file /etc/certs/old.crt -keystore /opt/jre/lib/security/cacerts >/dev/null 2>&1; \
         for s in apache2 oxauth; do printf '#!/bin/sh\\necho \"$1\" >> /restarts-%s\\n' $s > $r/etc/init.d/$s; chmod 755 $r/etc/init.d/$s; done",
        old.display(),
    ));
}

/// The SHA-256 fingerprint `keytool -list` shows for the cluster's alias in `h`'s
/// container, as uppercase hex without colons.
fn trusted_fingerprint(h: &Host) -> String {
    let out = h.sh(
        "printf 'changeit\\n' | chroot /opt/gluu-server /opt/jre/bin/keytool -list -alias idp.test_httpd -keystore /opt/jre/lib/security/cacerts 2>&1 || true",
    );
    out.lines()
        .find_map(|l| l.split("(SHA-256): ").nth(1))
        .unwrap_or_else(|| panic!("no fingerprint in: {out}"))
        .trim()
        .replace(':', "")
}

#[test]
fn every_gluu_node_gets_the_cluster_certificate_and_its_java_trusts_it_one_node_at_a_time() {
    let mut t = Transcript::default();
    let mut net = Net::new();
    let dir = tempfile::tempdir().unwrap();
    let (crt, key) = self_signed(dir.path(), "idp.test");
    let old_dir = tempfile::tempdir().unwrap();
    let (old_crt, _) = self_signed(old_dir.path(), "idp.test");
    for name in ["gluu1", "gluu2"] {
        net.add_host(name);
        make_java_container(net.host(name), &old_crt);
        // The node's HTTPS, which the rolling apply's probe checks, serves the cluster's.
        start_backend(net.host_mut(name), dir.path(), (&crt, &key));
    }
    let ctl = bootstrapped(&mut t, &net);
    for (k, v) in [
        ("hostname", "idp.test".to_string()),
        ("tls-cert", crt.display().to_string()),
        ("tls-key", key.display().to_string()),
    ] {
        ok(&mut t, ctl.run(&["cluster", "set", k, &v]), "cluster set");
    }
    let plan = ok(&mut t, ctl.run(&["plan"]), "plan");
    assert!(
        plan.contains("modify /etc/certs/httpd.key (container /opt/gluu-server)")
            && plan
                .contains("then: trust /etc/certs/httpd.crt in Java's cacerts as idp.test_httpd\n")
            && plan.contains("then: restart apache2, httpd, oxauth, identity (those installed)\n"),
        "{plan}"
    );
    let applied = ok(
        &mut t,
        ctl.run(&["apply", "--yes", "--rolling"]),
        "apply --rolling",
    );
    // One node after the other, each imported then restarted, oxTrust skipped.
    let (a, b) = (
        applied.find("gluu1").unwrap_or(usize::MAX),
        applied.find("gluu2").unwrap_or(usize::MAX),
    );
    assert!(a < b && b != usize::MAX, "{applied}");
    assert!(
        applied.contains("restart httpd, identity (not installed here: skipped)"),
        "{applied}"
    );
    let want = {
        let out = std::process::Command::new("openssl")
            .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
            .arg(&crt)
            .output()
            .unwrap();
        stdout(&out)
            .trim()
            .rsplit('=')
            .next()
            .unwrap()
            .replace(':', "")
    };
    for name in ["gluu1", "gluu2"] {
        let h = net.host(name);
        assert_eq!(trusted_fingerprint(h), want, "on {name}");
        let c = "/opt/gluu-server/etc/certs";
        assert_eq!(
            std::fs::read_to_string(h.path(&format!("{c}/httpd.crt"))).unwrap(),
            std::fs::read_to_string(&crt).unwrap()
        );
        // Owner-only, and still the owner Gluu's setup gave it.
        assert_eq!(
            h.sh(&format!("stat -c %a:%u {c}/httpd.key")),
            "600:1001\n",
            "on {name}"
        );
        for s in ["apache2", "oxauth"] {
            assert_eq!(
                std::fs::read_to_string(h.path(&format!("/opt/gluu-server/restarts-{s}")))
                    .unwrap_or_default(),
                "restart\n",
                "{s} on {name}"
            );
        }
    }
    // Applied, nothing more to do, and no second import.
    let plan = ok(&mut t, ctl.run(&["plan"]), "plan");
    assert!(!plan.contains(" to change"), "{plan}");
    t.assert_no_secrets(&ctl, &net, &[std::fs::read_to_string(&key).unwrap()]);
}
