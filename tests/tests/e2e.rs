//! End-to-end tests: real agents on loopback, the real CLI, and library-level clients
//! for the refusals a well-behaved controller can never produce.

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clustermgr::ca::{Ca, csr_public_key};
use clustermgr::store::NodeRecord;
use clustermgr_protocol::NodeName;
use clustermgr_protocol::frame::{expect_message, read_message, write_message};
use clustermgr_protocol::identity::{
    CertSummary, Credentials, cert_from_pem, controller_client_config,
};
use clustermgr_protocol::message::{
    Command, ExecEvent, ExecSpec, Hello, HelloReply, Reply, Request,
};
use clustermgr_protocol::transport::Timeouts;
use clustermgr_protocol::version::VersionRange;
use clustermgr_tests::{Cluster, eventually, node, schema, stderr, stdout};
use rustls::pki_types::CertificateDer;

const PATIENCE: Duration = Duration::from_secs(15);

fn day() -> time::Duration {
    time::Duration::days(1)
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn home_ca(c: &Cluster) -> Ca {
    Ca::load(
        &read(&c.dir().join("ca.crt")),
        &read(&c.dir().join("ca.key")),
    )
    .unwrap()
}

fn ca_der(c: &Cluster) -> CertificateDer<'static> {
    cert_from_pem(&read(&c.dir().join("ca.crt"))).unwrap()
}

fn controller_creds(c: &Cluster) -> Credentials {
    Credentials::from_pem(
        &read(&c.dir().join("controller.crt")),
        &read(&c.dir().join("controller.key")),
    )
    .unwrap()
}

fn pin_of(c: &Cluster, name: &str) -> String {
    CertSummary::parse_pem(&read(&c.agent(name).dir.join("etc/agent.crt")))
        .unwrap()
        .key_fingerprint
}

fn touch_spec(marker: &Path) -> ExecSpec {
    ExecSpec {
        command: Command::Argv(vec!["touch".into(), marker.display().to_string()]),
        env: Vec::new(),
        cwd: None,
        stdin: false,
        timeout_ms: Some(5_000),
        requested_by: "test".into(),
    }
}

/// Connects with `tls` to the agent at `addr`, says Hello, and asks it to create
/// `marker`. Returns whether the command ran, or why the agent refused.
async fn exec_with(
    tls: quinn::ClientConfig,
    addr: std::net::SocketAddr,
    server_name: &str,
    marker: &Path,
) -> Result<(), String> {
    let ep = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    let result = async {
        let conn = ep
            .connect_with(tls, addr, server_name)
            .map_err(|e| e.to_string())?
            .await
            .map_err(|e| e.to_string())?;
        let (mut s, mut r) = conn.open_bi().await.map_err(|e| e.to_string())?;
        let hello = Hello {
            versions: VersionRange::ours(),
            identity: "test".into(),
            software: "test".into(),
        };
        write_message(&mut s, &hello)
            .await
            .map_err(|e| e.to_string())?;
        match expect_message::<HelloReply, _>(&mut r, 1 << 20, "hello reply").await {
            Ok(HelloReply::Accepted { .. }) => {}
            Ok(other) => return Err(format!("{other:?}")),
            Err(e) => return Err(e.to_string()),
        }
        let (mut s, mut r) = conn.open_bi().await.map_err(|e| e.to_string())?;
        write_message(&mut s, &Request::Exec(touch_spec(marker)))
            .await
            .map_err(|e| e.to_string())?;
        loop {
            match read_message::<ExecEvent, _>(&mut r, 1 << 20, "event").await {
                Ok(Some(ExecEvent::Finished(_))) => return Ok(()),
                Ok(Some(ExecEvent::Refused(e))) => return Err(e.message),
                Ok(Some(_)) => {}
                Ok(None) => return Err("stream ended".into()),
                Err(e) => return Err(e.to_string()),
            }
        }
    };
    let r = tokio::time::timeout(Duration::from_secs(10), result)
        .await
        .unwrap_or_else(|_| Err("timed out".into()));
    ep.close(0u32.into(), b"");
    r
}

/// The genuine controller's TLS configuration for reaching gluu1.
fn genuine_tls(c: &Cluster) -> quinn::ClientConfig {
    controller_client_config(
        &controller_creds(c),
        ca_der(c),
        NodeName::new("gluu1").unwrap(),
        pin_of(c, "gluu1"),
        &Timeouts::default(),
    )
    .unwrap()
}

/// A connection to gluu1 as the genuine controller, before any Hello.
async fn raw_connect(c: &Cluster) -> (quinn::Endpoint, quinn::Connection) {
    let ep = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    let conn = ep
        .connect_with(genuine_tls(c), c.agent("gluu1").address, "gluu1")
        .unwrap()
        .await
        .unwrap();
    (ep, conn)
}

/// A connection to gluu1 that has said Hello with our versions.
async fn greeted(c: &Cluster) -> (quinn::Endpoint, quinn::Connection) {
    let (ep, conn) = raw_connect(c).await;
    let (mut s, mut r) = conn.open_bi().await.unwrap();
    let hello = Hello {
        versions: VersionRange::ours(),
        identity: "test".into(),
        software: "test".into(),
    };
    write_message(&mut s, &hello).await.unwrap();
    let reply = expect_message::<HelloReply, _>(&mut r, 1 << 20, "reply")
        .await
        .unwrap();
    assert!(matches!(reply, HelloReply::Accepted { .. }), "{reply:?}");
    (ep, conn)
}

fn assert_nothing_ran(c: &Cluster, name: &str, marker: &Path) {
    assert!(!marker.exists(), "the command ran on {name}");
    assert!(
        c.journal(name).is_empty(),
        "the agent journaled an exec: {:?}",
        c.journal(name)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_fans_out_to_every_node_and_is_journaled_and_audited() {
    let c = Cluster::gluu(3).await;
    let o = c.run(&["exec", "--", "sh", "-c", "echo hello; echo oops >&2"]);
    assert!(o.status.success(), "{}", stderr(&o));
    for n in ["gluu1", "gluu2", "gluu3"] {
        assert!(
            stdout(&o).contains(&format!("{n} | hello\n")),
            "{}",
            stdout(&o)
        );
        assert!(
            stderr(&o).contains(&format!("{n} | oops\n")),
            "{}",
            stderr(&o)
        );
        let j = c.journal(n);
        assert_eq!(j.len(), 2, "start and finish: {j:?}");
        assert_eq!(j[1]["exit_code"], 0);
        assert!(j[1]["command"].as_str().unwrap().starts_with("sh -c"));
        // Who ran it: the controller's certificate, not what its Hello claimed.
        let serial = CertSummary::parse_pem(&read(&c.dir().join("controller.crt")))
            .unwrap()
            .serial;
        let who = j[0]["controller"].as_str().unwrap();
        assert_eq!(
            who,
            format!("clustermgr controller e2e (certificate {serial})")
        );
    }
    let ctx = c.ctx();
    let audit = ctx.store.audit(10).unwrap();
    let (_, last) = audit.last().unwrap();
    assert_eq!(last.action, "exec");
    let uid = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self").unwrap());
    assert!(
        last.user.ends_with(&format!("(uid {uid})")),
        "{}",
        last.user
    );
    if uid == 0 {
        assert_eq!(
            last.user, "root (uid 0)",
            "the name comes from the passwd database"
        );
    }
    assert_eq!(last.nodes, ["gluu1", "gluu2", "gluu3"]);
    assert!(
        last.results.iter().all(|(_, r)| r == "exit 0"),
        "{:?}",
        last.results
    );
    drop(ctx);
    let o = c.run(&["audit"]);
    let line = stdout(&o).lines().last().unwrap().to_string();
    assert!(
        line.contains(" exec ") && line.contains("[gluu1,gluu2,gluu3]"),
        "{line}"
    );
    assert!(line.contains("gluu2: exit 0"), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_and_in_process_give_identical_results() {
    let c = Cluster::gluu(3).await;
    let scrub = |s: String| -> Vec<serde_json::Value> {
        let mut lines = schema::json_lines(&s, "exec");
        for v in &mut lines {
            v["duration_ms"] = 0.into();
        }
        // A line each as its node finishes: in whatever order they did.
        lines.sort_by_key(|v| v["node"].to_string());
        lines
    };
    let cmd = [
        "exec",
        "--json",
        "--nodes",
        "gluu*",
        "--shell",
        "--",
        "echo $((6*7)); exit 3",
    ];
    let direct = c.run(&cmd);
    let list_direct = schema::json(&c.run(&["node", "list", "--json"]), "node-list");
    let _serve = c.serve().await;
    let served = c.run(&cmd);
    let list_served = schema::json(&c.run(&["node", "list", "--json"]), "node-list");
    assert_eq!(direct.status.code(), Some(1));
    assert_eq!(served.status.code(), Some(1));
    let (a, b) = (scrub(stdout(&direct)), scrub(stdout(&served)));
    assert_eq!(a.len(), 3);
    assert_eq!(a, b);
    assert_eq!(a[0]["type"], "result");
    assert_eq!(a[0]["stdout"], "42\n");
    assert_eq!(a[0]["exit_code"], 3);
    assert_eq!(list_direct, list_served);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_node_is_reported_within_the_connect_timeout() {
    let mut c = Cluster::gluu(2).await;
    c.kill_agent("gluu2").await;
    let start = Instant::now();
    let o = c.run(&["--connect-timeout", "1", "exec", "--", "true"]);
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "took {:?}",
        start.elapsed()
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("gluu2: unreachable"), "{}", stderr(&o));
    let o = c.run(&["--connect-timeout", "1", "ping", "--json"]);
    let v = schema::json(&o, "ping");
    assert_eq!(v["nodes"][0]["state"], "ok");
    assert!(v["nodes"][0]["host"]["agent_version"].is_string(), "{v}");
    assert_eq!(v["nodes"][1]["state"], "unreachable");
    assert!(v["nodes"][1]["host"].is_null(), "{v}");
    // Through serve, the caller's --connect-timeout still applies (serve's own is 3 s).
    let _serve = c.serve().await;
    let start = Instant::now();
    let o = c.run(&["--connect-timeout", "1", "exec", "--", "true"]);
    assert!(
        start.elapsed() < Duration::from_millis(2500),
        "took {:?}",
        start.elapsed()
    );
    assert!(stderr(&o).contains("within 1 s"), "{}", stderr(&o));
}

fn pid_alive(pid: u32) -> bool {
    // A zombie has exited; only its parent has not collected it yet.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.contains(") Z "))
        .unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_kills_the_whole_process_group() {
    let c = Cluster::gluu(1).await;
    let start = Instant::now();
    let o = c.run(&[
        "exec",
        "--timeout",
        "1",
        "--shell",
        "--",
        "sleep 300 & echo $!; sleep 301",
    ]);
    assert!(start.elapsed() < Duration::from_secs(10));
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("timed out"), "{}", stderr(&o));
    let bg: u32 = stdout(&o)
        .trim()
        .strip_prefix("gluu1 | ")
        .unwrap()
        .parse()
        .unwrap();
    eventually("the background child to die", PATIENCE, || !pid_alive(bg)).await;
    assert_eq!(c.journal("gluu1")[1]["timed_out"], true);
}

async fn interrupt_cancels(c: &Cluster) {
    let mut child = tokio::process::Command::new(clustermgr_tests::clustermgr_bin())
        .arg("--home")
        .arg(c.dir())
        .args(["exec", "--shell", "--", "echo $$; sleep 300"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    use tokio::io::AsyncBufReadExt;
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(PATIENCE, lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let pid: u32 = line.strip_prefix("gluu1 | ").unwrap().parse().unwrap();
    assert!(pid_alive(pid));
    let _ = std::process::Command::new("kill")
        .args(["-INT", &child.id().unwrap().to_string()])
        .status();
    let status = tokio::time::timeout(PATIENCE, child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(130));
    eventually("the remote command to be killed", PATIENCE, || {
        !pid_alive(pid)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_cancels_the_remote_command_in_process_and_through_serve() {
    let c = Cluster::gluu(1).await;
    interrupt_cancels(&c).await;
    let _serve = c.serve().await;
    interrupt_cancels(&c).await;
    // The agent journals the end after the kill, a moment after the process is gone.
    eventually("both cancels in the journal", PATIENCE, || {
        c.journal("gluu1")
            .iter()
            .filter(|e| e["event"] == "finish")
            .count()
            >= 2
    })
    .await;
    let j = c.journal("gluu1");
    assert_eq!(
        j.iter().filter(|e| e["cancelled"] == true).count(),
        2,
        "{j:?}"
    );
    drop(_serve);
    let ctx = c.ctx();
    let audit = ctx.store.audit(10).unwrap();
    let interrupted: Vec<_> = audit
        .iter()
        .filter(|(_, a)| a.action == "exec")
        .map(|(_, a)| a.results.clone())
        .collect();
    assert_eq!(interrupted.len(), 2);
    for r in interrupted {
        assert_eq!(r.len(), 1);
        assert!(r[0].1.starts_with("interrupted"), "{r:?}");
    }
}

fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_megabytes_of_output_stream_through_in_bounded_memory() {
    let c = Cluster::gluu(1).await;
    // 1,000,000 lines of 99 characters and a newline: 100 MB.
    let mut child = c
        .cli()
        .args(["exec", "--shell", "--", "yes 012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789012345678 | head -n 1000000"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut out = child.stdout.take().unwrap();
    let counter = std::thread::spawn(move || {
        use std::io::Read;
        let mut buf = vec![0u8; 1 << 16];
        let (mut bytes, mut lines) = (0u64, 0u64);
        loop {
            let n = out.read(&mut buf).unwrap();
            if n == 0 {
                return (bytes, lines);
            }
            bytes += n as u64;
            lines += buf[..n].iter().filter(|&&b| b == b'\n').count() as u64;
        }
    });
    let mut peak = 0;
    while child.try_wait().unwrap().is_none() {
        peak = peak.max(peak_rss_kib(pid).unwrap_or(0));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (bytes, lines) = counter.join().unwrap();
    assert!(child.wait().unwrap().success());
    assert_eq!(lines, 1_000_000);
    assert_eq!(bytes, 1_000_000 * (100 + "gluu1 | ".len() as u64));
    assert!(
        peak > 0 && peak < 64 * 1024,
        "the CLI's peak RSS was {peak} KiB"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_whose_certificate_expired_while_away_is_renewed_without_ssh() {
    let mut c = Cluster::gluu(1).await;
    let agent_dir = c.agent("gluu1").dir.clone();
    let name = NodeName::new("gluu1").unwrap();
    // Issue the agent a certificate that ran out 10 days ago, as if the controller had
    // been away for months: the CA signs with a clock set 100 days back.
    let key = rcgen::KeyPair::from_pem(&read(&agent_dir.join("etc/agent.key"))).unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["gluu1".to_string()]).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "gluu1");
    let csr = params.serialize_request(&key).unwrap().pem().unwrap();
    let past = time::OffsetDateTime::now_utc() - 100 * day();
    let old = home_ca(&c)
        .sign_node(
            &name,
            &csr_public_key(&name, &csr).unwrap(),
            past,
            90 * day(),
        )
        .unwrap();
    assert!(
        old.summary
            .expired(time::OffsetDateTime::now_utc().unix_timestamp())
    );
    std::fs::write(agent_dir.join("etc/agent.crt"), &old.pem).unwrap();
    c.restart_agent("gluu1").await;
    let o = c.run(&["ping"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let renewed = CertSummary::parse_pem(&read(&agent_dir.join("etc/agent.crt"))).unwrap();
    assert_ne!(renewed.serial, old.summary.serial);
    assert_eq!(
        renewed.key_fingerprint, old.summary.key_fingerprint,
        "same key, new certificate"
    );
    assert!(renewed.not_after > now + 89 * 86_400);
    let o = c.run(&["cert", "status", "--json"]);
    let v = schema::json(&o, "cert-status");
    let row = v["certificates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["subject"] == "gluu1")
        .unwrap();
    assert_eq!(row["state"], "ok");
    assert_eq!(row["serial"], renewed.serial.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_without_a_client_certificate() {
    #[derive(Debug)]
    struct TrustAnything;
    impl rustls::client::danger::ServerCertVerifier for TrustAnything {
        fn verify_server_cert(
            &self,
            _: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: &rustls::pki_types::ServerName<'_>,
            _: &[u8],
            _: rustls::pki_types::UnixTime,
        ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            _: &[u8],
            _: &CertificateDer<'_>,
            _: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
        }
        fn verify_tls13_signature(
            &self,
            _: &[u8],
            _: &CertificateDer<'_>,
            _: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
        }
        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            clustermgr_protocol::identity::provider()
                .signature_verification_algorithms
                .supported_schemes()
        }
    }
    let c = Cluster::gluu(1).await;
    let mut tls =
        rustls::ClientConfig::builder_with_provider(clustermgr_protocol::identity::provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(TrustAnything))
            .with_no_client_auth();
    tls.alpn_protocols = vec![clustermgr_protocol::ALPN.to_vec()];
    let tls = quinn::ClientConfig::new(Arc::new(
        quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap(),
    ));
    let marker = c.home.path().join("marker");
    let err = exec_with(tls, c.agent("gluu1").address, "gluu1", &marker)
        .await
        .unwrap_err();
    assert!(!err.is_empty());
    assert_nothing_ran(&c, "gluu1", &marker);
}

async fn refused_with_creds(c: &Cluster, creds: Credentials) -> String {
    let tls = controller_client_config(
        &creds,
        ca_der(c),
        NodeName::new("gluu1").unwrap(),
        pin_of(c, "gluu1"),
        &Timeouts::default(),
    )
    .unwrap();
    let marker = c.home.path().join("marker");
    let err = exec_with(tls, c.agent("gluu1").address, "gluu1", &marker)
        .await
        .expect_err("the agent must refuse this client");
    assert_nothing_ran(c, "gluu1", &marker);
    err
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_refuses_bad_controller_certificates() {
    let c = Cluster::gluu(2).await;
    let now = time::OffsetDateTime::now_utc();

    // A certificate from another cluster's CA.
    let (other, _) = Ca::create("other", now).unwrap();
    let (cert, key) = other
        .issue_controller("other", now, 90 * day(), None)
        .unwrap();
    refused_with_creds(&c, Credentials::from_pem(&cert.pem, &key).unwrap()).await;

    // Another agent's certificate (same CA) presented as the controller.
    let d = c.agent("gluu2").dir.join("etc");
    refused_with_creds(
        &c,
        Credentials::from_pem(&read(&d.join("agent.crt")), &read(&d.join("agent.key"))).unwrap(),
    )
    .await;

    // The right CA, the controller identity, but expired.
    let (cert, key) = home_ca(&c)
        .issue_controller("e2e", now - 200 * day(), 90 * day(), None)
        .unwrap();
    refused_with_creds(&c, Credentials::from_pem(&cert.pem, &key).unwrap()).await;

    // And the genuine controller certificate works, so the refusals above were real.
    let marker = c.home.path().join("marker-ok");
    exec_with(genuine_tls(&c), c.agent("gluu1").address, "gluu1", &marker)
        .await
        .unwrap();
    assert!(marker.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controller_refuses_wrong_agents() {
    let mut c = Cluster::gluu(2).await;
    let ctx = c.ctx();
    let marker = c.home.path().join("marker");
    let touch = ["exec", "--nodes", "gluu1", "--", "touch"];

    // An agent whose certificate names a different node: gluu2 answering for gluu1.
    let mut impostor: NodeRecord = ctx.store.node("gluu1").unwrap().unwrap();
    impostor.address = c.agent("gluu2").address.to_string();
    impostor.pinned_key = pin_of(&c, "gluu2");
    let err = ctx.connection(&impostor).await.unwrap_err();
    assert!(err.message.contains("not node gluu1"), "{}", err.message);

    // An agent whose key is not the pinned one.
    let mut wrong_pin = ctx.store.node("gluu1").unwrap().unwrap();
    wrong_pin.pinned_key = pin_of(&c, "gluu2");
    let err = ctx.connection(&wrong_pin).await.unwrap_err();
    assert!(err.message.contains("is pinned to"), "{}", err.message);
    drop(ctx);

    // The same through the CLI: gluu1 rebuilt with a new key and a certificate the CA
    // really signed. Its name is right, its key is not the pinned one.
    let etc = c.agent("gluu1").dir.join("etc");
    let out = std::process::Command::new(clustermgr_tests::agent_bin())
        .args(["enroll", "--name", "gluu1", "--new-key", "--out"])
        .arg(&etc)
        .output()
        .unwrap();
    let name = NodeName::new("gluu1").unwrap();
    let key = csr_public_key(&name, &String::from_utf8_lossy(&out.stdout)).unwrap();
    let cert = home_ca(&c)
        .sign_node(&name, &key, time::OffsetDateTime::now_utc(), 90 * day())
        .unwrap();
    std::fs::write(etc.join("agent.crt"), cert.pem).unwrap();
    c.restart_agent("gluu1").await;
    let mut args = touch.to_vec();
    let m = marker.display().to_string();
    args.push(&m);
    let o = c.run(&args);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("is pinned to"), "{}", stderr(&o));
    assert_nothing_ran(&c, "gluu1", &marker);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_node_is_revoked_and_refused() {
    let c = Cluster::gluu(2).await;
    let marker = c.home.path().join("marker");
    let m = marker.display().to_string();
    let o = c.run(&["node", "remove", "gluu2", "--yes"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = c.run(&["exec", "--nodes", "gluu2", "--", "touch", &m]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("no node named gluu2"), "{}", stderr(&o));
    // Adding it back with its old, now revoked, certificate is refused too.
    let addr = c.agent("gluu2").address.to_string();
    let o = c.run(&["node", "add", "gluu2", "--address", &addr]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("no valid certificate has been signed for gluu2"),
        "{}",
        stderr(&o)
    );
    let o = c.run(&["cert", "status", "--json"]);
    schema::json(&o, "cert-status");
    assert!(!stdout(&o).contains("gluu2"));
    let ctx = c.ctx();
    let certs = ctx.store.certs().unwrap();
    assert!(
        certs
            .iter()
            .filter(|c| c.node.as_deref() == Some("gluu2"))
            .all(|c| c.revoked_at.is_some())
    );
    assert_nothing_ran(&c, "gluu2", &marker);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_primary_is_removed_last_and_can_be_moved() {
    let c = Cluster::gluu(2).await;
    let o = c.run(&["node", "remove", "gluu1", "--yes"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("set-primary"), "{}", stderr(&o));
    assert!(c.run(&["node", "set-primary", "gluu2"]).status.success());
    assert!(
        c.run(&["node", "remove", "gluu1", "--yes"])
            .status
            .success()
    );
    let list = schema::json(&c.run(&["node", "list", "--json"]), "node-list");
    assert_eq!(list["nodes"][0]["name"], "gluu2");
    assert_eq!(list["nodes"][0]["primary"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_exec_false_refuses_commands_but_still_answers() {
    let c = Cluster::start(vec![node("gluu1", "allow_exec = false")]).await;
    let marker = c.home.path().join("marker");
    let o = c.run(&["exec", "--", "touch", &marker.display().to_string()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("allow_exec = false"), "{}", stderr(&o));
    assert!(!marker.exists());
    assert_eq!(c.journal("gluu1")[0]["event"], "refused");
    assert!(c.run(&["ping"]).status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controller_with_no_common_version_is_told_both_ranges() {
    let c = Cluster::gluu(1).await;
    let (_ep, conn) = raw_connect(&c).await;
    let (mut s, mut r) = conn.open_bi().await.unwrap();
    let hello = Hello {
        versions: VersionRange { min: 7, max: 9 },
        identity: "future".into(),
        software: "9".into(),
    };
    write_message(&mut s, &hello).await.unwrap();
    match expect_message::<HelloReply, _>(&mut r, 1 << 20, "reply")
        .await
        .unwrap()
    {
        HelloReply::Refused { reason, versions } => {
            assert!(
                reason.contains("versions 7 to 9")
                    && reason.contains(&VersionRange::ours().to_string()),
                "{reason}"
            );
            assert_eq!(versions, VersionRange::ours());
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    tokio::time::timeout(PATIENCE, conn.closed())
        .await
        .expect("the agent closes the connection");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_one_stream_does_not_disturb_the_agent() {
    let c = Cluster::gluu(1).await;
    let (_ep, conn) = greeted(&c).await;
    // Unknown variant, oversized length prefix, truncated frame.
    for junk in [
        vec![0, 0, 0, 2, 0xff, 0x7f],
        vec![0xff, 0xff, 0xff, 0xff],
        vec![0, 0, 0, 9, 1],
    ] {
        let (mut s, mut r) = conn.open_bi().await.unwrap();
        s.write_all(&junk).await.unwrap();
        s.finish().unwrap();
        match expect_message::<Reply, _>(&mut r, 1 << 20, "reply").await {
            Ok(Reply::Error(e)) => assert!(!e.message.is_empty()),
            other => panic!("expected an error reply, got {other:?}"),
        }
    }
    // The same connection and a new one still work.
    let (mut s, mut r) = conn.open_bi().await.unwrap();
    write_message(&mut s, &Request::Info).await.unwrap();
    assert!(matches!(
        expect_message::<Reply, _>(&mut r, 1 << 20, "r")
            .await
            .unwrap(),
        Reply::Info(_)
    ));
    assert!(c.run(&["ping"]).status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_in_flight_commands_finish() {
    let c = Cluster::gluu(1).await;
    let child = c
        .cli()
        .args([
            "exec",
            "--shell",
            "--",
            "echo started; sleep 1; echo finished",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    eventually("the command to start", PATIENCE, || {
        c.journal("gluu1").len() == 1
    })
    .await;
    let agent_pid = c.agent("gluu1").child.id().unwrap();
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &agent_pid.to_string()])
        .status();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("gluu1 | finished"), "{}", stdout(&o));
    eventually("the agent to exit", PATIENCE, || !pid_alive(agent_pid)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_keeps_every_acknowledged_change_across_kill_9_of_serve() {
    let c = Cluster::gluu(1).await;
    let mut acknowledged = Vec::new();
    let mut serve = c.serve().await;
    let mut kills = 0;
    for i in 0..24 {
        let name = format!("n{i}");
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec![name.clone()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name.as_str());
        let csr = c.home.path().join(format!("{name}.csr"));
        std::fs::write(&csr, params.serialize_request(&key).unwrap().pem().unwrap()).unwrap();
        let child = c
            .cli()
            .args(["node", "sign", &name, csr.to_str().unwrap(), "--json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Every third request, kill serve while the request is in flight.
        if i % 3 == 1 {
            let _ = serve.0.kill();
            let _ = serve.0.wait();
            kills += 1;
        }
        let o = child.wait_with_output().unwrap();
        if o.status.success() {
            let v = schema::json(&o, "node-sign");
            acknowledged.push(v["serial"].as_str().unwrap().to_string());
        }
        if i % 3 == 1 {
            serve = c.serve().await;
        }
    }
    let _ = serve.0.kill();
    let _ = serve.0.wait();
    assert!(kills >= 8);
    assert!(
        acknowledged.len() >= 16,
        "most requests succeed: {}",
        acknowledged.len()
    );
    let ctx = c.ctx();
    let stored: Vec<String> = ctx
        .store
        .certs()
        .unwrap()
        .into_iter()
        .map(|c| c.serial)
        .collect();
    for serial in &acknowledged {
        assert!(
            stored.contains(serial),
            "acknowledged certificate {serial} was lost"
        );
    }
    let audit = ctx.store.audit(100).unwrap();
    assert!(
        audit
            .iter()
            .filter(|(_, a)| a.action == "node sign")
            .count()
            >= acknowledged.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cert_renew_keeps_the_key_and_rekey_moves_the_pin() {
    let c = Cluster::gluu(2).await;
    let etc = c.agent("gluu1").dir.join("etc");
    let before = CertSummary::parse_pem(&read(&etc.join("agent.crt"))).unwrap();

    let o = c.run(&["cert", "renew", "--nodes", "gluu1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let renewed = CertSummary::parse_pem(&read(&etc.join("agent.crt"))).unwrap();
    assert_ne!(renewed.serial, before.serial);
    assert_eq!(renewed.key_fingerprint, before.key_fingerprint);

    let old_key = read(&etc.join("agent.key"));
    let o = c.run(&["cert", "renew", "--nodes", "gluu1", "--rekey", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v = schema::json(&o, "node-results");
    assert_eq!(v["nodes"][0]["node"], "gluu1");
    assert_eq!(v["nodes"][0]["state"], "ok");
    assert_ne!(
        read(&etc.join("agent.key")),
        old_key,
        "a new key was made on the host"
    );
    let rekeyed = CertSummary::parse_pem(&read(&etc.join("agent.crt"))).unwrap();
    assert_ne!(rekeyed.key_fingerprint, before.key_fingerprint);
    assert!(!stdout(&o).contains("PRIVATE KEY"));
    let ctx = c.ctx();
    assert_eq!(
        ctx.store.node("gluu1").unwrap().unwrap().pinned_key,
        rekeyed.key_fingerprint
    );
    let certs = ctx.store.certs().unwrap();
    for old in certs
        .iter()
        .filter(|c| c.key_fingerprint == before.key_fingerprint)
    {
        assert!(
            old.revoked_at.is_some(),
            "the old key's certificate {} is revoked",
            old.serial
        );
    }
    drop(ctx);
    // A fresh connection now checks the new key, and it is accepted.
    let o = c.run(&["exec", "--nodes", "gluu1", "--", "true"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(c.run(&["ping"]).status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_passes_stdin_environment_and_working_directory() {
    let c = Cluster::gluu(1).await;
    let (_ep, conn) = greeted(&c).await;
    let (mut s, mut r) = conn.open_bi().await.unwrap();
    let spec = ExecSpec {
        command: Command::Shell("pwd; echo \"$GREETING\"; tr a-z A-Z".into()),
        env: vec![("GREETING".into(), "hello there".into())],
        cwd: Some("/tmp".into()),
        stdin: true,
        timeout_ms: Some(10_000),
        requested_by: "test".into(),
    };
    write_message(&mut s, &Request::Exec(spec)).await.unwrap();
    use clustermgr_protocol::message::ExecInput;
    write_message(&mut s, &ExecInput::Stdin(b"piped ".to_vec()))
        .await
        .unwrap();
    write_message(&mut s, &ExecInput::Stdin(b"input\n".to_vec()))
        .await
        .unwrap();
    write_message(&mut s, &ExecInput::StdinEnd).await.unwrap();
    let mut out = Vec::new();
    loop {
        match read_message::<ExecEvent, _>(&mut r, 1 << 20, "event")
            .await
            .unwrap()
            .unwrap()
        {
            ExecEvent::Stdout(d) => out.extend(d),
            ExecEvent::Finished(f) => {
                assert_eq!(f.code, Some(0));
                break;
            }
            ExecEvent::Refused(e) => panic!("{}", e.message),
            _ => {}
        }
    }
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "/tmp\nhello there\nPIPED INPUT\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_runs_a_sandbox_cluster_and_cleans_up_after_itself() {
    let (mut dev, printed) = dev_running(&["--nodes", "4", "--port", "0"]).await;
    let home = printed
        .lines()
        .find_map(|l| l.trim().strip_prefix("export CLUSTERMGR_HOME="))
        .map(std::path::PathBuf::from);
    let home = home.expect("dev prints the home");
    let cli = |args: &[&str]| {
        std::process::Command::new(clustermgr_tests::clustermgr_bin())
            .env("CLUSTERMGR_HOME", &home)
            .args(args)
            .output()
            .unwrap()
    };
    let o = cli(&["status", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v = schema::json(&o, "status");
    let names: Vec<&str> = v["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["gluu1", "gluu2", "gluu3", "lb1"]);
    assert!(
        v["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|n| n["state"] == "ok")
    );
    let o = cli(&["exec", "--nodes", "role:lb", "--", "echo", "balanced"]);
    assert_eq!(stdout(&o), "lb1 | balanced\n");
    // Each agent's config points its writes at its own sandbox root.
    let cfg = read(&home.join("dev/gluu1/etc/agent.toml"));
    assert!(cfg.contains(&format!(
        "root = \"{}\"",
        home.join("dev/gluu1/root").display()
    )));
    let agent_pids: Vec<u32> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|pid: &u32| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(home.to_str().unwrap()))
                .unwrap_or(false)
        })
        .collect();
    assert_eq!(agent_pids.len(), 4, "four sandbox agents run");
    stop_dev(&mut dev).await;
    assert!(
        agent_pids.iter().all(|&p| !pid_alive(p)),
        "every agent stopped"
    );
    assert!(!home.exists(), "the temporary home is removed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_of_another_cluster_is_reported_as_refusing_us() {
    let mut c = Cluster::gluu(1).await;
    let (other, _) = Ca::create("other", time::OffsetDateTime::now_utc()).unwrap();
    let etc = c.agent("gluu1").dir.join("etc");
    std::fs::write(etc.join("ca.crt"), other.cert_pem()).unwrap();
    c.restart_agent("gluu1").await;
    let o = c.run(&["ping"]);
    assert_eq!(o.status.code(), Some(1));
    let out = stdout(&o);
    assert!(out.contains("gluu1") && out.contains("failed"), "{out}");
    assert!(out.contains("refused our certificate"), "{out}");
    assert!(
        out.contains("ca.crt"),
        "the message says what to check: {out}"
    );
    assert!(
        !out.contains("unreachable"),
        "a refusal is not a timeout: {out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_held_by_a_silent_process_is_explained() {
    let c = Cluster::gluu(1).await;
    // Hold the store the way a hung clustermgr would, with no serve socket answering.
    let held = c.ctx();
    let o = c
        .cli()
        .args(["node", "list"])
        .env("CLUSTERMGR_STORE_WAIT_SECS", "1")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(err.contains("in use by another process"), "{err}");
    assert!(
        err.contains("serve.sock") && err.contains("fuser"),
        "says how to recover: {err}"
    );
    drop(held);
    assert!(c.run(&["node", "list"]).status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_refuses_a_home_others_can_write_and_an_existing_cluster() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let open = tmp.path().join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    let run = |home: &Path, args: &[&str]| {
        std::process::Command::new(clustermgr_tests::clustermgr_bin())
            .arg("--home")
            .arg(home)
            .args(args)
            .output()
            .unwrap()
    };
    let o = run(&open, &["init"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("chmod 700"), "{}", stderr(&o));
    let home = tmp.path().join("home");
    assert!(run(&home, &["init", "--cluster", "prod"]).status.success());
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&home), 0o700);
    assert_eq!(mode(&home.join("ca.key")), 0o600);
    assert_eq!(mode(&home.join("controller.key")), 0o600);
    // The store holds the cluster's TLS and tunnel keys once they are set.
    assert_eq!(mode(&home.join("inventory.redb")), 0o600);
    // A home made by hand, readable by others, is made owner-only by init.
    let made = tmp.path().join("made");
    std::fs::create_dir(&made).unwrap();
    std::fs::set_permissions(&made, std::fs::Permissions::from_mode(0o755)).unwrap();
    assert!(run(&made, &["init"]).status.success());
    assert_eq!(mode(&made), 0o700);
    // One opened up since is refused by every command.
    std::fs::set_permissions(&made, std::fs::Permissions::from_mode(0o750)).unwrap();
    let o = run(&made, &["node", "list"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("open to group or others"),
        "{}",
        stderr(&o)
    );
    // A store others can read is refused too.
    std::fs::set_permissions(&made, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::set_permissions(
        made.join("inventory.redb"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let o = run(&made, &["node", "list"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("chmod 600"), "{}", stderr(&o));
    let o = run(&home, &["init"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("already holds a cluster"),
        "{}",
        stderr(&o)
    );
    // A key others can read is refused before any use.
    std::fs::set_permissions(home.join("ca.key"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let o = run(&home, &["node", "list"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("chmod 600"), "{}", stderr(&o));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_does_not_wait_for_idle_connections() {
    let mut c = Cluster::gluu(1).await;
    // A long grace period: shutdown must not spend it on connections with no work.
    let config = c.agent("gluu1").config();
    let text = read(&config).replace("shutdown_grace_ms = 3000", "shutdown_grace_ms = 60000");
    std::fs::write(&config, text).unwrap();
    c.restart_agent("gluu1").await;
    let _serve = c.serve().await;
    // serve's warm connection is up once a ping through it succeeds.
    assert!(c.run(&["ping"]).status.success());
    let agent_pid = c.agent("gluu1").child.id().unwrap();
    let start = Instant::now();
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &agent_pid.to_string()])
        .status();
    eventually("the agent to exit", Duration::from_secs(10), || {
        !pid_alive(agent_pid)
    })
    .await;
    assert!(start.elapsed() < Duration::from_secs(10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_recovers_at_once_when_an_agent_crashes_and_restarts() {
    let mut c = Cluster::gluu(1).await;
    let _serve = c.serve().await;
    // Warm serve's connection, then crash the agent (no CONNECTION_CLOSE) and restart it.
    assert!(c.run(&["ping"]).status.success());
    c.restart_agent("gluu1").await;
    // Without a stable stateless-reset key the old connection would look alive to serve
    // until its 30 s idle timeout, and this command would hang and fail.
    let start = Instant::now();
    let o = c.run(&["exec", "--", "echo", "back"]);
    assert!(
        o.status.success(),
        "after {:?}: {}",
        start.elapsed(),
        stderr(&o)
    );
    assert_eq!(stdout(&o), "gluu1 | back\n");
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "took {:?}",
        start.elapsed()
    );
    c.restart_agent("gluu1").await;
    let o = c.run(&["ping"]);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grouped_output_spills_to_disk_and_comes_back_whole_in_node_order() {
    let c = Cluster::gluu(2).await;
    // 6 MB per node, past the 4 MiB kept in memory.
    let o = c.run(&[
        "exec",
        "--group",
        "--shell",
        "--",
        "yes abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz012345678 | head -n 80000",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    let g1 = out.find("== gluu1 (ok) ==\n").expect("gluu1 header");
    let g2 = out.find("== gluu2 (ok) ==\n").expect("gluu2 header");
    assert!(g1 < g2, "node-name order");
    let line = "abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz012345678\n";
    for body in [&out[g1..g2], &out[g2..]] {
        let body = &body[body.find('\n').unwrap() + 1..];
        assert_eq!(body.len(), 80_000 * line.len());
        assert!(body.lines().all(|l| l.len() + 1 == line.len()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_does_not_fire_on_a_command_that_already_exited() {
    let c = Cluster::gluu(1).await;
    // The command exits 0 at once, but a background child keeps its pipes open past
    // the 1 s timeout: the result is the exit, not a timeout.
    let o = c.run(&[
        "exec",
        "--json",
        "--timeout",
        "1",
        "--shell",
        "--",
        "sleep 3 & echo hi; exit 0",
    ]);
    let v = schema::json_lines(&stdout(&o), "exec").remove(0);
    assert_eq!(v["state"], "ok", "{v}");
    assert_eq!(v["exit_code"], 0);
    assert_eq!(v["timed_out"], false);
    assert!(o.status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rekey_whose_acknowledgement_was_lost_does_not_lock_the_node_out() {
    let mut c = Cluster::gluu(1).await;
    let ctx = c.ctx();
    let rec = ctx.store.node("gluu1").unwrap().unwrap();
    let old_pin = rec.pinned_key.clone();
    let conn = ctx.connection(&rec).await.unwrap();
    // The rekey's steps as the controller takes them, up to the agent installing the
    // certificate; then the acknowledgement is "lost": the controller never completes.
    let Reply::Csr { pem } = conn
        .unary(&Request::Csr { new_key: true }, Duration::from_secs(10))
        .await
        .unwrap()
    else {
        panic!("no CSR")
    };
    let name = NodeName::new("gluu1").unwrap();
    let key = csr_public_key(&name, &pem).unwrap();
    let cert = ctx
        .ca
        .sign_node(&name, &key, time::OffsetDateTime::now_utc(), 90 * day())
        .unwrap();
    let record = clustermgr::store::CertRecord {
        serial: cert.summary.serial.clone(),
        kind: clustermgr::store::CertKind::Node,
        node: Some("gluu1".into()),
        not_before: cert.summary.not_before,
        not_after: cert.summary.not_after,
        key_fingerprint: key.fingerprint.clone(),
        revoked_at: None,
    };
    ctx.store.begin_rekey("gluu1", &old_pin, &record).unwrap();
    let installed = conn
        .unary(
            &Request::InstallCert { cert_pem: cert.pem },
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    assert_eq!(installed, Reply::CertInstalled);
    ctx.dialer.close().await;
    drop(ctx);
    // The agent restarts on its new key; the controller still has the old pin.
    c.restart_agent("gluu1").await;
    let o = c.run(&["exec", "--", "true"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let ctx = c.ctx();
    let rec = ctx.store.node("gluu1").unwrap().unwrap();
    assert_eq!(
        rec.pinned_key, key.fingerprint,
        "the pending key became the pin"
    );
    assert_eq!(rec.pending_key, None);
    let old_certs = ctx.store.certs().unwrap();
    assert!(
        old_certs
            .iter()
            .filter(|c| c.key_fingerprint == old_pin)
            .all(|c| c.revoked_at.is_some())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_re_enrolled_node_is_never_reached_through_serves_old_connection() {
    let c = Cluster::gluu(2).await;
    let _serve = c.serve().await;
    assert!(
        c.run(&["ping"]).status.success(),
        "serve holds warm connections"
    );
    assert!(
        c.run(&["node", "remove", "gluu2", "--yes"])
            .status
            .success()
    );
    // Re-enroll gluu2 with a new key, at an address where nothing listens.
    let dir = c.home.path().join("rebuilt");
    let out = std::process::Command::new(clustermgr_tests::agent_bin())
        .args(["enroll", "--name", "gluu2", "--out"])
        .arg(&dir)
        .output()
        .unwrap();
    std::fs::write(dir.join("gluu2.csr"), &out.stdout).unwrap();
    let csr = dir.join("gluu2.csr");
    assert!(
        c.run(&["node", "sign", "gluu2", csr.to_str().unwrap()])
            .status
            .success()
    );
    let o = c.run(&[
        "--connect-timeout",
        "1",
        "node",
        "add",
        "gluu2",
        "--address",
        "127.0.0.1:9",
    ]);
    assert_eq!(
        o.status.code(),
        Some(1),
        "the old agent must not answer for the new key"
    );
    assert!(stderr(&o).contains("not added"), "{}", stderr(&o));
    assert!(
        c.journal("gluu2").is_empty(),
        "nothing ran on the old agent"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_not_installed_by_bootstrap_refuses_to_uninstall_and_the_node_stays() {
    let c = Cluster::gluu(1).await;
    let o = c.run(&["node", "remove", "gluu1", "--uninstall", "--yes"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("refused to uninstall") && err.contains("not removed"),
        "{err}"
    );
    assert!(stdout(&c.run(&["node", "list"])).contains("gluu1"));
    let o = c.run(&["ping"]);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_upgrade_refuses_what_it_cannot_do_safely() {
    let c = Cluster::start(vec![node("gluu1", ""), node("gluu2", "allow_exec = false")]).await;
    // Not an ELF binary: refused before any node is asked.
    let text = c.home.path().join("agent.sh");
    std::fs::write(&text, "#!/bin/sh\n").unwrap();
    let o = c.run(&[
        "node",
        "upgrade",
        "--agent-binary",
        &text.display().to_string(),
    ]);
    assert_ne!(o.status.code(), Some(0));
    assert!(
        stderr(&o).contains(&text.display().to_string()),
        "{}",
        stderr(&o)
    );
    assert!(!stdout(&c.run(&["audit"])).contains("node upgrade"));

    // A sandbox agent was not installed by bootstrap: it will not replace itself, and
    // the nodes after it are left alone.
    let o = c.run(&["--json", "node", "upgrade"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let outcomes = schema::json(&o, "node-results")["nodes"].clone();
    assert_eq!(outcomes[0]["node"], "gluu1");
    assert_eq!(outcomes[0]["state"], "failed");
    let why = outcomes[0]["message"].as_str().unwrap();
    assert!(
        why.contains("not from /usr/local/bin/clustermgr-agent"),
        "{why}"
    );
    assert_eq!(outcomes[1]["state"], "skipped", "{outcomes}");

    // allow_exec = false: a new binary would be a way around it.
    let o = c.run(&["node", "upgrade", "--nodes", "gluu2"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stdout(&o).contains("allow_exec = false"), "{}", stdout(&o));
    assert!(c.run(&["ping"]).status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_goes_away_ends_the_cli_quietly() {
    let c = Cluster::gluu(1).await;
    let mut child = c
        .cli()
        .args(["node", "list"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The reading end closes before anything is written: the first line meets EPIPE.
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(141), "{}", stderr(&out));
    assert!(
        !stderr(&out).contains("panicked"),
        "no backtrace: {}",
        stderr(&out)
    );
}

/// `creds`' TLS configuration for reaching `node`.
fn tls_for(c: &Cluster, creds: Credentials, node: &str) -> quinn::ClientConfig {
    controller_client_config(
        &creds,
        ca_der(c),
        NodeName::new(node).unwrap(),
        pin_of(c, node),
        &Timeouts::default(),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_controller_key_is_refused_where_the_new_one_was_seen_and_elsewhere_at_next_contact()
 {
    let mut c = Cluster::gluu(2).await;
    // A copy of the controller's key, as someone who left (or a lost machine) has it.
    let (cert, key) = (
        read(&c.dir().join("controller.crt")),
        read(&c.dir().join("controller.key")),
    );
    let old = move || Credentials::from_pem(&cert, &key).unwrap();
    let marker = c.home.path().join("marker");
    exec_with(
        tls_for(&c, old(), "gluu1"),
        c.agent("gluu1").address,
        "gluu1",
        &marker,
    )
    .await
    .expect("the key works before it is revoked");
    c.stop_agent("gluu2").await;

    let o = c.run(&["cert", "revoke-controller", "--json"]);
    let v = schema::json(&o, "cert-revoke-controller");
    assert_eq!(v["nodes"][0]["node"], "gluu1");
    assert_eq!(v["nodes"][0]["state"], "ok");
    assert_eq!(v["nodes"][1]["state"], "unreachable");
    assert_ne!(v["serial"], v["revoked_serial"]);

    // gluu1 saw the new certificate: the old one is refused, also after a restart.
    let refused = |c: &Cluster, node: &'static str| {
        let tls = tls_for(c, old(), node);
        let addr = c.agent(node).address;
        let marker = c.home.path().join(format!("marker-{node}"));
        async move {
            let err = exec_with(tls, addr, node, &marker).await.unwrap_err();
            assert!(!marker.exists(), "{node} ran a command for the old key");
            err
        }
    };
    refused(&c, "gluu1").await;
    c.restart_agent("gluu1").await;
    refused(&c, "gluu1").await;

    // gluu2 was away: it still takes the old key until this controller reaches it. A
    // connection the old key holds open then is closed.
    c.restart_agent("gluu2").await;
    let ep = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    let held = ep
        .connect_with(
            tls_for(&c, old(), "gluu2"),
            c.agent("gluu2").address,
            "gluu2",
        )
        .unwrap()
        .await
        .expect("not yet told");
    let (mut s, mut r) = held.open_bi().await.unwrap();
    let hello = Hello {
        versions: VersionRange::ours(),
        identity: "old".into(),
        software: "test".into(),
    };
    write_message(&mut s, &hello).await.unwrap();
    let reply = expect_message::<HelloReply, _>(&mut r, 1 << 20, "reply").await;
    assert!(
        matches!(reply, Ok(HelloReply::Accepted { .. })),
        "{reply:?}"
    );
    let o = c.run(&["ping"]);
    assert!(o.status.success(), "{}", stderr(&o));
    tokio::time::timeout(Duration::from_secs(5), held.closed())
        .await
        .expect("the old key's open connection is closed once the new one is seen");
    refused(&c, "gluu2").await;
    // The current key works everywhere.
    let o = c.run(&["exec", "--", "true"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let audit = stdout(&c.run(&["audit"]));
    assert!(audit.contains("cert revoke-controller"), "{audit}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewal_under_serve_retires_the_old_controller_key_at_agents_it_holds_warm() {
    let c = Cluster::gluu(1).await;
    // A controller certificate whose renewal falls due a few seconds into serve's run:
    // the CA backdates by 5 minutes, and renewal is due at two thirds of the life.
    let cert_path = c.dir().join("controller.crt");
    let current = || CertSummary::parse_pem(&read(&cert_path)).unwrap();
    let due_in = 12;
    let (short, key) = home_ca(&c)
        .issue_controller(
            "e2e",
            time::OffsetDateTime::now_utc(),
            time::Duration::seconds(due_in * 3 / 2 + 150),
            Some(current().not_before),
        )
        .unwrap();
    std::fs::write(&cert_path, &short.pem).unwrap();
    std::fs::write(c.dir().join("controller.key"), &key).unwrap();
    let newest = c.agent("gluu1").dir.join("state/controller-newest");
    let seen = || {
        std::fs::read_to_string(&newest)
            .ok()
            .and_then(|t| t.split_whitespace().nth(1)?.parse::<i64>().ok())
    };
    let serve = c.serve().await;
    // serve's keeper reaches gluu1 with it, and keeps that connection warm.
    eventually("gluu1 to see the short-lived certificate", PATIENCE, || {
        seen() == Some(short.summary.not_before)
    })
    .await;
    assert_eq!(
        current().serial,
        short.summary.serial,
        "renewed before serve connected"
    );
    eventually(
        "serve to renew its certificate",
        Duration::from_secs(40),
        || current().serial != short.summary.serial,
    )
    .await;
    // gluu1, which serve reached only through the warm connection, handshakes with the
    // new certificate at once, and refuses the old key from then on.
    let renewed = current();
    eventually("gluu1 to see the renewed certificate", PATIENCE, || {
        seen() == Some(renewed.not_before)
    })
    .await;
    let marker = c.home.path().join("marker");
    let old = Credentials::from_pem(&short.pem, &key).unwrap();
    exec_with(
        tls_for(&c, old, "gluu1"),
        c.agent("gluu1").address,
        "gluu1",
        &marker,
    )
    .await
    .expect_err("the renewed-away key is refused");
    assert!(!marker.exists(), "gluu1 ran a command for the old key");
    let o = c.run(&["exec", "--", "true"]);
    assert!(o.status.success(), "{}", stderr(&o));
    serve.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escape_sequences_from_a_node_reach_a_terminal_shown_not_obeyed() {
    let c = Cluster::gluu(1).await;
    let printf = r"printf '\033]0;owned\007\033[2Jtext\n'";
    // Into a pipe, the bytes go as they are (a script may want them).
    let o = c.run(&["exec", "--", "sh", "-c", printf]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(o.stdout.windows(2).any(|w| w == b"\x1b]"), "{:?}", o.stdout);
    // On a terminal (script(1) gives the CLI one), they are made visible.
    let line = format!(
        "{} --home {} exec -- sh -c \"{printf}\"",
        clustermgr_tests::clustermgr_bin().display(),
        c.dir().display()
    );
    for extra in [&[][..], &["--group"][..]] {
        let line = format!("{line} {}", extra.join(" "));
        let o = std::process::Command::new("script")
            .args(["-qec", &line, "/dev/null"])
            .stdin(std::process::Stdio::null())
            .output()
            .expect("run script");
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(out.contains(r"\x1b]0;owned\x07\x1b[2Jtext"), "{out:?}");
        assert!(!o.stdout.contains(&0x1b), "{out:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_on_the_prometheus_port_leave_serve_answering_and_its_log_quiet() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let c = Cluster::gluu(1).await;
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let addr = format!("127.0.0.1:{port}");
    // serve with few file descriptors, so a flood it accepted without bound would use
    // them all: then every accept fails at once (and was logged each time), and the
    // CLI's socket and the agents' connections with it.
    let mut cli = std::process::Command::new("prlimit");
    cli.arg("--nofile=512:512")
        .arg("--")
        .arg(clustermgr_tests::clustermgr_bin())
        .arg("--home")
        .arg(c.dir());
    let _serve = clustermgr_tests::start_serve_with(cli, &c.dir(), &["--prometheus", &addr]).await;
    let log = c.dir().parent().unwrap().join("serve.log");
    let log_before = std::fs::metadata(&log).map_or(0, |m| m.len());
    // More slow clients than serve has descriptors for: each sends half a head and
    // stalls.
    let mut slow = Vec::new();
    for _ in 0..600 {
        let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let _ = s.write_all(b"GET /metr").await;
        slow.push(s);
    }
    // The CLI's own work through serve is not held up by them.
    for _ in 0..3 {
        let start = Instant::now();
        let o = c.run(&["exec", "--", "true"]);
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "exec took {:?} during the flood",
            start.elapsed()
        );
    }
    // A genuine scrape is answered during the flood: it takes the place of the oldest
    // slow client rather than waiting behind them all.
    let scrape = async {
        let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut reply = String::new();
        s.read_to_string(&mut reply).await.unwrap();
        reply
    };
    let reply = tokio::time::timeout(Duration::from_secs(2), scrape)
        .await
        .expect("a scrape is answered during the flood");
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    drop(slow);
    // The flood is not written to the log line by line.
    let grown = std::fs::metadata(&log).map_or(0, |m| m.len()) - log_before;
    assert!(
        grown < 4096,
        "serve's log grew {grown} bytes during the flood"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_handshakes_are_counted_in_the_agents_log_not_written_one_by_one() {
    let c = Cluster::gluu(1).await;
    let now = time::OffsetDateTime::now_utc();
    let (other, _) = Ca::create("other", now).unwrap();
    let (cert, key) = other
        .issue_controller("other", now, 90 * day(), None)
        .unwrap();
    let log = c.agent("gluu1").dir.join("agent.log");
    let refusals = || {
        read(&log)
            .lines()
            .filter(|l| l.contains("refused a connection"))
            .count()
    };
    let before = refusals();
    for _ in 0..50 {
        refused_with_creds(&c, Credentials::from_pem(&cert.pem, &key).unwrap()).await;
    }
    // One line for the first; the rest are counted into the next line a minute on.
    assert_eq!(refusals() - before, 1, "{}", read(&log));
    // The genuine controller still gets through.
    let o = c.run(&["ping"]);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_serves_eight_controller_connections_at_once_and_refuses_more_saying_why() {
    let c = Cluster::gluu(1).await;
    // Eight authenticated connections are served: each may have 32 MiB in flight.
    let mut held = Vec::new();
    for _ in 0..8 {
        held.push(greeted(&c).await);
    }
    // A ninth, as authenticated, is closed at once with the reason.
    let (_ep, ninth) = raw_connect(&c).await;
    let closed = tokio::time::timeout(Duration::from_secs(5), ninth.closed())
        .await
        .expect("the ninth connection is closed by the agent");
    let quinn::ConnectionError::ApplicationClosed(why) = closed else {
        panic!("{closed}");
    };
    let why = String::from_utf8_lossy(&why.reason).to_string();
    assert!(why.contains("8 controller connections at once"), "{why}");
    // The CLI says so.
    let o = c.run(&["exec", "--", "true"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("8 controller connections at once"),
        "{}",
        stderr(&o)
    );
    // The eight are still answered.
    for (_, conn) in &held {
        let (mut s, mut r) = conn.open_bi().await.unwrap();
        write_message(&mut s, &Request::Info).await.unwrap();
        let reply = expect_message::<Reply, _>(&mut r, 1 << 20, "reply").await;
        assert!(matches!(reply, Ok(Reply::Info(_))), "{reply:?}");
    }
    // One of them goes: its place is free.
    let (ep, conn) = held.pop().unwrap();
    conn.close(0u32.into(), b"done");
    ep.wait_idle().await;
    eventually("a place to be free", PATIENCE, || {
        c.run(&["ping"]).status.success()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_hang_up_on_serves_socket_are_counted_not_logged_each() {
    let c = Cluster::gluu(1).await;
    let _serve = c.serve().await;
    let log = c.dir().parent().unwrap().join("serve.log");
    let lines = || {
        read(&log)
            .lines()
            .filter(|l| l.contains("bad request"))
            .count()
    };
    for _ in 0..50 {
        drop(
            tokio::net::UnixStream::connect(c.dir().join("serve.sock"))
                .await
                .unwrap(),
        );
    }
    // Accepted after them, so served once they were judged.
    let o = c.run(&["ping"]);
    assert!(o.status.success(), "{}", stderr(&o));
    // One line for the first of the minute (which may have been serve's own readiness
    // probe at start), the rest counted.
    assert!(lines() <= 1, "{}", read(&log));
    // A log file gets no colour codes.
    assert!(!read(&log).contains('\x1b'), "{}", read(&log));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_in_a_container_that_is_not_there_says_the_agents_reason() {
    let c = Cluster::gluu(1).await;
    let o = c.run(&["exec", "--in-container", "--", "true"]);
    assert!(!o.status.success());
    let all = format!("{}{}", stdout(&o), stderr(&o));
    assert!(all.contains("does not look like a Gluu container"), "{all}");
    assert!(!all.contains("malformed"), "{all}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_does_not_answer_does_not_skew_the_others_clocks() {
    let mut c = Cluster::gluu(2).await;
    c.kill_agent("gluu2").await;
    let o = c.run(&["status", "--json", "--connect-timeout", "1"]);
    let v = schema::json(&o, "status");
    let nodes = v["nodes"].as_array().unwrap();
    let gluu1 = nodes.iter().find(|n| n["name"] == "gluu1").unwrap();
    let skew = gluu1["clock_skew_ms"].as_i64().expect("measured");
    // The same clock: what is left is the measurement's own error, not the second it
    // waited for gluu2.
    assert!(skew.abs() < 200, "gluu1's skew is {skew} ms: {gluu1}");
    let gluu2 = nodes.iter().find(|n| n["name"] == "gluu2").unwrap();
    assert!(gluu2["clock_skew_ms"].is_null(), "{gluu2}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_closes_exec_output_cancels_the_remote_command() {
    let c = Cluster::gluu(1).await;
    let run = |c: &Cluster| {
        let line = format!(
            "{} --home {} exec --timeout 20 -- yes | head -1; echo \"status ${{PIPESTATUS[0]}}\"",
            clustermgr_tests::clustermgr_bin().display(),
            c.dir().display()
        );
        let start = Instant::now();
        let o = std::process::Command::new("bash")
            .args(["-c", &line])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        (stdout(&o), start.elapsed())
    };
    let (out, took) = run(&c);
    assert_eq!(out, "gluu1 | y\nstatus 141\n");
    assert!(took < Duration::from_secs(10), "took {took:?}");
    let _serve = c.serve().await;
    let (out, took) = run(&c);
    assert_eq!(out, "gluu1 | y\nstatus 141\n");
    assert!(took < Duration::from_secs(10), "took {took:?}");
    // Both remote commands were cancelled, not left running.
    eventually("both cancels in the journal", PATIENCE, || {
        c.journal("gluu1")
            .iter()
            .filter(|e| e["event"] == "finish" && e["cancelled"] == true)
            .count()
            == 2
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_serve_says_the_first_runs_and_its_pid() {
    let c = Cluster::gluu(1).await;
    let serve = c.serve().await;
    let o = c.run(&["serve"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains(&format!(
            "already running for {} (pid {})",
            c.dir().display(),
            serve.0.id()
        )),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_disk_check_says_what_df_says() {
    let c = Cluster::gluu(1).await;
    let o = c.run(&["health"]);
    let out = stdout(&o);
    // "the fullest, MOUNT, is N % used" or "MOUNT N % used (...)".
    let (mount, pct) = out
        .lines()
        .find_map(|l| {
            let rest = l.split("the fullest, ").nth(1)?;
            let (mount, rest) = rest.split_once(", is ")?;
            let pct: f64 = rest.split(" % used").next()?.parse().ok()?;
            Some((mount.to_string(), pct))
        })
        .or_else(|| {
            out.lines().find_map(|l| {
                let i = l.find(" % used (")?;
                let mut words = l[..i].rsplit(' ');
                let pct: f64 = words.next()?.parse().ok()?;
                Some((words.next()?.to_string(), pct))
            })
        })
        .unwrap_or_else(|| panic!("no disk line in {out}"));
    let df = std::process::Command::new("df")
        .args(["--output=pcent", &mount])
        .output()
        .unwrap();
    let df_pct: f64 = stdout(&df)
        .lines()
        .nth(1)
        .unwrap()
        .trim()
        .trim_end_matches('%')
        .parse()
        .unwrap();
    // df rounds up; ours is rounded to the nearest.
    assert!(
        (pct - df_pct).abs() <= 1.0,
        "{mount}: ours {pct} %, df {df_pct} %\n{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_waits_for_the_store_another_command_holds() {
    let c = Cluster::gluu(1).await;
    // Without serve, an exec holds the store while its command runs.
    let mut first = c
        .cli()
        .args(["exec", "--", "sleep", "2"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let store = c.dir().join("inventory.redb");
    eventually("the first command to hold the store", PATIENCE, || {
        std::fs::read_to_string("/proc/locks").is_ok_and(|l| {
            let ino = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&store).unwrap());
            l.lines().any(|x| {
                x.ends_with(&format!(":{ino} 0 EOF")) && x.contains(&first.id().to_string())
            })
        })
    })
    .await;
    let o = c.run(&["node", "list"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("gluu1"), "{}", stdout(&o));
    let err = stderr(&o);
    assert!(
        err.contains(&format!("which process {} (", first.id())) && err.contains("exec -- sleep 2"),
        "{err}"
    );
    assert_eq!(err.matches("waiting for the store").count(), 1, "{err}");
    assert!(first.wait().unwrap().success());
}

/// The (node, path) pairs a plan's or an apply's `--json` says are written (an edit
/// waiting for its file to exist is not).
fn named_paths(nodes: &serde_json::Value) -> std::collections::BTreeSet<(String, String)> {
    let mut out = std::collections::BTreeSet::new();
    for n in nodes.as_array().unwrap() {
        for e in n["entries"].as_array().unwrap() {
            if e["change"] == "waiting" {
                continue;
            }
            let node = n["node"].as_str().unwrap().to_string();
            out.insert((node, e["path"].as_str().unwrap().to_string()));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_writes_only_what_the_plan_showed_and_refuses_a_plan_that_moved() {
    let c = Cluster::gluu(2).await;
    let plan = |c: &Cluster| {
        let o = c.run(&["--json", "plan"]);
        assert!(o.status.success(), "{}", stderr(&o));
        schema::json(&o, "plan")
    };
    // A fresh pair of Gluu nodes: csync2's files are in the plan, the key the node
    // makes and the certificate issued for it too, with what cannot be known yet said.
    let first = plan(&c);
    let shown = named_paths(&first["nodes"]);
    for path in [
        "/etc/csync2.cfg",
        "/etc/csync2.key",
        "/etc/csync2_ssl_key.pem",
        "/etc/csync2_ssl_cert.pem",
        "/etc/cron.d/clustermgr-csync2",
    ] {
        assert!(
            shown.contains(&("gluu1".into(), path.into())),
            "{path}: {first:#}"
        );
    }
    let entries = first["nodes"][0]["entries"].as_array().unwrap();
    let key = entries
        .iter()
        .find(|e| e["path"] == "/etc/csync2_ssl_key.pem")
        .unwrap();
    assert!(
        key["at_apply"]
            .as_str()
            .unwrap()
            .contains("generated on the node")
    );
    let text = stdout(&c.run(&["plan"]));
    assert!(!text.contains("waits for gluu1's key"), "{text}");

    // The model moves between the plan and the apply: the apply of the old plan is
    // refused before anything reaches a node.
    let old = first["digest"].as_str().unwrap().to_string();
    let o = c.run(&["cluster", "set", "manage-hosts", "no"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = c.run(&["--json", "apply", "--plan", &old[..12]]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert_eq!(schema::json_error(&o)["exit_code"], 1);
    assert!(
        stderr(&o).contains("changed since the plan you approved"),
        "{}",
        stderr(&o)
    );
    let root = c.agent("gluu1").dir.join("root");
    for path in ["etc/csync2.cfg", "etc/csync2_ssl_key.pem"] {
        assert!(!root.join(path).exists(), "{path} was written");
    }

    // The plan as it is now applies, and writes exactly what it showed.
    let second = plan(&c);
    let digest = second["digest"].as_str().unwrap();
    assert_ne!(digest, old);
    let o = c.run(&["--json", "apply", "--plan", digest]);
    assert!(o.status.success(), "{}", stderr(&o));
    let applied = schema::json(&o, "apply");
    let mut written = named_paths(&applied["nodes"]);
    for node in ["gluu1", "gluu2"] {
        // Made by the agent at the controller's request, not sent as an entry.
        assert!(
            c.agent(node)
                .dir
                .join("root/etc/csync2_ssl_key.pem")
                .exists()
        );
        written.insert((node.into(), "/etc/csync2_ssl_key.pem".into()));
    }
    assert_eq!(written, named_paths(&second["nodes"]));
}

/// Whether process group `pgid` has any member left.
fn group_alive(pgid: u64) -> bool {
    std::fs::read_dir("/proc").unwrap().flatten().any(|e| {
        std::fs::read_to_string(e.path().join("stat")).is_ok_and(|s| {
            let rest = &s[s.rfind(')').unwrap() + 1..];
            rest.split_whitespace().nth(2) == Some(&pgid.to_string())
        })
    })
}

/// The pid an agent's journal gives the running command `command`.
fn started_pid(c: &Cluster, node: &str, command: &str) -> Option<u64> {
    c.journal(node)
        .iter()
        .find(|e| e["event"] == "start" && e["command"] == command)
        .and_then(|e| e["pid"].as_u64())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_agent_is_noticed_in_seconds_and_its_next_life_ends_what_it_left() {
    let mut c = Cluster::gluu(2).await;
    // One node's agent dies mid-command and stays down: the other node's result comes
    // at once, and this one is called lost in seconds, not at QUIC's 30 s idle timeout.
    let start = Instant::now();
    let cli = c
        .cli()
        .args(["exec", "--", "sleep", "3"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    eventually("both nodes to start the command", PATIENCE, || {
        ["gluu1", "gluu2"]
            .iter()
            .all(|n| started_pid(&c, n, "sleep 3").is_some())
    })
    .await;
    let orphan = started_pid(&c, "gluu1", "sleep 3").unwrap();
    c.agent_mut("gluu1").child.kill().await.unwrap();
    let o = cli.wait_with_output().unwrap();
    let took = start.elapsed();
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    let err = stderr(&o);
    assert!(
        err.contains("gluu1") && err.contains("lost the connection"),
        "{err}"
    );
    assert!(took < Duration::from_secs(9), "took {took:?}: {err}");

    // The command the dead agent left ran on; when the agent comes back it is ended
    // (had it still been running) and journaled as interrupted.
    let cli = c
        .cli()
        .args(["exec", "--nodes", "gluu2", "--", "sleep", "60"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    eventually("gluu2 to start sleep 60", PATIENCE, || {
        started_pid(&c, "gluu2", "sleep 60").is_some()
    })
    .await;
    let long = started_pid(&c, "gluu2", "sleep 60").unwrap();
    let start = Instant::now();
    c.restart_agent("gluu2").await;
    eventually(
        "the restarted agent to end the group it left",
        PATIENCE,
        || !group_alive(long),
    )
    .await;
    let o = cli.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    // A restarted agent answers the old connection with a stateless reset.
    assert!(
        start.elapsed() < Duration::from_secs(9),
        "{:?}",
        start.elapsed()
    );
    let ended = c
        .journal("gluu2")
        .into_iter()
        .find(|e| e["event"] == "interrupted" && e["pid"] == long)
        .expect("journaled as interrupted");
    assert_eq!(ended["command"], "sleep 60");
    assert_eq!(ended["signal"], 9);
    // gluu1's orphan had ended by itself: it is journaled so at gluu1's restart.
    eventually("gluu1's sleep 3 to end", PATIENCE, || !group_alive(orphan)).await;
    c.restart_agent("gluu1").await;
    let e = c
        .journal("gluu1")
        .into_iter()
        .find(|e| e["event"] == "interrupted")
        .expect("gluu1's command journaled as interrupted");
    assert!(e["signal"].is_null(), "{e}");
    assert!(c.run(&["ping"]).status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_audited_operation_records_what_was_asked_on_what_and_each_outcome() {
    let mut lb = node("lb1", "");
    lb.roles = vec![clustermgr::store::Role::Lb];
    let c = Cluster::start(vec![node("gluu1", ""), node("gluu2", ""), lb]).await;
    let run = |args: &[&str]| {
        let o = c.run(args);
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
    };
    run(&["drain", "gluu2"]);
    run(&["cert", "renew"]);
    run(&["cluster", "set", "manage-hosts", "yes"]);
    run(&["node", "set-primary", "gluu2"]);
    let audit = stdout(&c.run(&["audit"]));
    let line = |action: &str| {
        audit
            .lines()
            .find(|l| l.contains(&format!(" {action} ")))
            .unwrap_or_else(|| panic!("no {action} in {audit}"))
            .to_string()
    };
    // The drain is about gluu2, done on the load balancer.
    let drain = line("drain");
    assert!(
        drain.contains("[gluu2] on lb1: revision") && drain.contains("-> lb1: "),
        "{drain}"
    );
    let renew = line("cert renew");
    for n in ["gluu1", "gluu2", "lb1"] {
        assert!(renew.contains(&format!("{n}: renewed")), "{renew}");
    }
    // The value as stored, not as typed.
    let set = line("cluster set");
    assert!(set.contains("manage-hosts = true -> cluster: set"), "{set}");
    assert!(line("node set-primary").contains("-> gluu2: now the primary"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_exec_prints_what_it_gathered_in_every_output_mode() {
    let c = Cluster::gluu(2).await;
    let dir = tempfile::tempdir().unwrap();
    for (i, mode) in ["--group", "--json"].into_iter().enumerate() {
        // Each tick is written to the file after it is sent: a second of ticks in the
        // file means the first ones reached the CLI long ago.
        let ticks = dir.path().join(format!("ticks{i}"));
        let script = format!(
            "while :; do echo tick; echo tick >> {}; sleep 0.05; done",
            ticks.display()
        );
        let child = c
            .cli()
            .args(["exec", mode, "--shell", "--", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        eventually("a second of ticks", PATIENCE, || {
            std::fs::read_to_string(&ticks).is_ok_and(|t| t.lines().count() >= 40)
        })
        .await;
        let _ = std::process::Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status();
        let o = child.wait_with_output().unwrap();
        assert_eq!(o.status.code(), Some(130), "{mode}: {}", stderr(&o));
        let out = stdout(&o);
        for node in ["gluu1", "gluu2"] {
            match mode {
                "--group" => assert!(
                    out.contains(&format!(
                        "== {node} (failed: interrupted; the command was cancelled) ==\ntick\n"
                    )),
                    "{out}"
                ),
                _ => {
                    let line = schema::json_lines(&out, "exec")
                        .into_iter()
                        .find(|v| v["node"] == node)
                        .unwrap_or_else(|| panic!("no {node} in {out}"));
                    assert!(
                        line["stdout"].as_str().unwrap().starts_with("tick\n"),
                        "{line}"
                    );
                    assert_eq!(line["state"], "failed", "{line}");
                }
            }
        }
    }
}

/// A self-signed certificate for `name` and its key, as PEM.
fn tls_pair(name: &str) -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec![name.into()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    (cert.pem(), key.serialize_pem())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mistakes_exit_as_the_table_says_and_the_tls_pair_is_checked() {
    let mut lb = node("lb1", "");
    lb.roles = vec![clustermgr::store::Role::Lb];
    let c = Cluster::start(vec![node("gluu1", ""), lb]).await;
    let code = |args: &[&str]| {
        let o = c.run(args);
        (o.status.code(), stderr(&o), stdout(&o))
    };
    // A name that cannot be a node's is a usage error, as a bad flag is.
    let (status, err, _) = code(&["node", "add", "Bad_Name", "--address", "127.0.0.1:9"]);
    assert_eq!(status, Some(2), "{err}");
    // A --home that is a file.
    let file = c.dir().join("controller.toml");
    std::fs::write(&file, "").unwrap();
    let o = std::process::Command::new(clustermgr_tests::clustermgr_bin())
        .args(["--home", file.to_str().unwrap(), "node", "list"])
        .env_remove("CLUSTERMGR_HOME")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("not a directory you own"),
        "{}",
        stderr(&o)
    );
    let (status, err, _) = code(&["--connect-timeout", "0", "ping"]);
    assert_eq!(status, Some(2));
    assert!(err.contains("more than 0 and at most 3600"), "{err}");
    // A zero timeout would kill at once: refused, saying what to do instead.
    let (status, err, _) = code(&["exec", "--timeout", "0", "--", "true"]);
    assert_eq!(status, Some(2));
    assert!(err.contains("leave --timeout out for no limit"), "{err}");
    // Typos are answered with what was probably meant.
    let (status, err, _) = code(&["exec", "--nodes", "glu1", "--", "true"]);
    assert_eq!(status, Some(2));
    assert!(
        err.contains("no node named glu1 in this cluster; did you mean gluu1?"),
        "{err}"
    );
    let (status, err, _) = code(&["cluster", "set", "hostnme", "idp.example.org"]);
    assert_eq!(status, Some(2));
    assert!(err.contains("did you mean hostname?"), "{err}");
    // With --json an error is JSON too, on stderr, with its exit code.
    let (status, err, out) = code(&["--json", "exec", "--nodes", "glu1", "--", "true"]);
    assert_eq!(status, Some(2));
    assert!(out.is_empty(), "{out}");
    let doc: serde_json::Value = serde_json::from_str(err.trim()).unwrap();
    schema::assert_valid("error", &doc);
    assert_eq!(doc["exit_code"], 2);
    assert!(
        doc["error"]
            .as_str()
            .unwrap()
            .contains("did you mean gluu1?"),
        "{doc}"
    );
    // No LDAP server could be read anywhere: a failure, not a success.
    let (status, _, out) = code(&["replication"]);
    assert_eq!(status, Some(1), "{out}");

    // The cluster certificate and key: a missing file and a key others may read are
    // usage errors; a key that is not the certificate's is said, and waited for.
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str, mode: u32| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(mode)).unwrap();
        p.to_str().unwrap().to_string()
    };
    let (status, err, _) = code(&["cluster", "set", "tls-cert", "/nonexistent.pem"]);
    assert_eq!(status, Some(2), "{err}");
    assert!(
        err.contains("/nonexistent.pem: cannot read this tls-cert file"),
        "{err}"
    );
    let (cert, key) = tls_pair("idp.example.org");
    let (_, other_key) = tls_pair("idp.example.org");
    let open_key = write("open.key", &key, 0o644);
    let (status, err, _) = code(&["cluster", "set", "tls-key", &open_key]);
    assert_eq!(status, Some(2), "{err}");
    assert!(err.contains("chmod 600"), "{err}");
    assert_eq!(
        code(&["cluster", "set", "hostname", "idp.example.org"]).0,
        Some(0)
    );
    assert_eq!(
        code(&["cluster", "set", "tls-cert", &write("c.pem", &cert, 0o644)]).0,
        Some(0)
    );
    let (status, err, out) = code(&[
        "cluster",
        "set",
        "tls-key",
        &write("o.key", &other_key, 0o600),
    ]);
    assert_eq!(status, Some(0), "{err}");
    assert!(out.contains("does not match the other half"), "{out}");
    let (_, _, plan) = code(&["plan", "--nodes", "lb1"]);
    assert!(
        plan.contains("waits for a TLS key that matches the cluster's certificate"),
        "{plan}"
    );
    assert!(!plan.contains("nginx.conf"), "{plan}");
    let (status, _, out) = code(&["cluster", "set", "tls-key", &write("k.key", &key, 0o600)]);
    assert_eq!(status, Some(0));
    assert!(!out.contains("does not match"), "{out}");
    let (_, _, plan) = code(&["plan", "--nodes", "lb1"]);
    assert!(plan.contains("/etc/nginx/nginx.conf"), "{plan}");
}

/// Stops `dev` as a service manager would, and checks it ended cleanly.
async fn stop_dev(dev: &mut tokio::process::Child) {
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &dev.id().unwrap().to_string()])
        .status();
    let status = tokio::time::timeout(PATIENCE, dev.wait()).await.unwrap();
    assert!(status.unwrap().success());
}

/// `clustermgr dev ARGS`, once it says it runs: the process and what it printed.
async fn dev_running(args: &[&str]) -> (tokio::process::Child, String) {
    let mut dev = tokio::process::Command::new(clustermgr_tests::clustermgr_bin())
        .arg("dev")
        .args(args)
        .env_remove("CLUSTERMGR_HOME")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    use tokio::io::AsyncBufReadExt;
    let mut lines = tokio::io::BufReader::new(dev.stdout.take().unwrap()).lines();
    let mut printed = String::new();
    loop {
        let line = tokio::time::timeout(PATIENCE, lines.next_line())
            .await
            .unwrap()
            .unwrap()
            .unwrap_or_else(|| panic!("dev ended: {printed}"));
        printed.push_str(&line);
        printed.push('\n');
        if line.starts_with("Press Ctrl-C") {
            break;
        }
    }
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (dev, printed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_sandbox_resumes_and_a_dead_agent_is_started_again() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("sandbox");
    let home_s = home.to_str().unwrap();
    let cli = |args: &[&str]| {
        std::process::Command::new(clustermgr_tests::clustermgr_bin())
            .env("CLUSTERMGR_HOME", &home)
            .args(args)
            .output()
            .unwrap()
    };
    let (mut dev, printed) = dev_running(&["--home", home_s, "--nodes", "2", "--port", "0"]).await;
    // The banner's commands work as printed: this program by the path it was run as.
    let exe = std::fs::canonicalize(clustermgr_tests::clustermgr_bin()).unwrap();
    assert!(
        printed.contains(&format!("    {} status", exe.display())),
        "{printed}"
    );
    assert!(
        printed.contains("`clustermgr dev --home` with this directory resumes it"),
        "{printed}"
    );
    assert!(cli(&["ping"]).status.success());
    // A sandbox agent that dies is started again, as a service manager would.
    let pid_of = |node: &str| -> u32 {
        let cfg = home.join(format!("dev/{node}/etc/agent.toml"));
        std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .find(|pid: &u32| {
                std::fs::read(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|c| String::from_utf8_lossy(&c).contains(cfg.to_str().unwrap()))
            })
            .unwrap_or(0)
    };
    let first = pid_of("gluu1");
    assert!(first > 0);
    let _ = std::process::Command::new("kill")
        .args(["-KILL", &first.to_string()])
        .status();
    eventually("gluu1's agent to run again", PATIENCE, || {
        let now = pid_of("gluu1");
        now > 0 && now != first
    })
    .await;
    eventually("gluu1 to answer again", PATIENCE, || {
        cli(&["ping", "--nodes", "gluu1"]).status.success()
    })
    .await;
    // Stopped, the kept home stays; started again on it, the same cluster resumes.
    stop_dev(&mut dev).await;
    assert!(home.join("ca.crt").exists());
    let (mut dev, printed) = dev_running(&["--home", home_s]).await;
    assert!(
        printed.contains("2 agents and the controller are running again"),
        "{printed}"
    );
    let o = cli(&["ping"]);
    assert!(o.status.success(), "{}", stderr(&o));
    stop_dev(&mut dev).await;
    // A home holding a cluster dev did not make is not taken over.
    let other = tmp.path().join("real");
    clustermgr::ops::init(&other, "prod", 90, &clustermgr::clock::SystemClock).unwrap();
    let o = std::process::Command::new(clustermgr_tests::clustermgr_bin())
        .args(["dev", "--home", other.to_str().unwrap()])
        .env_remove("CLUSTERMGR_HOME")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("that `clustermgr dev` did not make"),
        "{}",
        stderr(&o)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_takes_a_selector_settings_unset_and_a_removal_is_confirmed() {
    let c = Cluster::gluu(2).await;
    let o = c.run(&["--json", "status", "--nodes", "gluu2"]);
    let v = schema::json(&o, "status");
    let names: Vec<&str> = v["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["gluu2"]);
    // A setting back to its default, a secret forgotten.
    assert!(
        c.run(&["cluster", "set", "hostname", "idp.example.org"])
            .status
            .success()
    );
    assert!(
        c.run(&["cluster", "set", "cache", "redis"])
            .status
            .success()
    );
    for key in ["hostname", "cache", "tls-key"] {
        let o = c.run(&["cluster", "unset", key]);
        assert!(o.status.success(), "{key}: {}", stderr(&o));
    }
    let shown = stdout(&c.run(&["cluster", "show"]));
    assert!(!shown.contains("idp.example.org"), "{shown}");
    assert!(
        shown
            .lines()
            .any(|l| l.starts_with("cache") && l.ends_with("none")),
        "{shown}"
    );
    let o = c.run(&["cluster", "unset", "hostnam"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("did you mean hostname?"),
        "{}",
        stderr(&o)
    );
    // Removing a node asks first; a script without a terminal says --yes.
    let o = c.run(&["node", "remove", "gluu2"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("clustermgr node remove gluu2 --yes"),
        "{}",
        stderr(&o)
    );
    assert!(stdout(&c.run(&["node", "list"])).contains("gluu2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_stdin_gives_every_node_a_copy_and_the_audit_only_its_size() {
    let c = Cluster::gluu(2).await;
    let run = || {
        let mut child = c
            .cli()
            .args(["exec", "--stdin", "--shell", "--", "tr a-z A-Z"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(b"the secret word\n")
            .unwrap();
        child.wait_with_output().unwrap()
    };
    let o = run();
    assert!(o.status.success(), "{}", stderr(&o));
    for node in ["gluu1", "gluu2"] {
        assert!(
            stdout(&o).contains(&format!("{node} | THE SECRET WORD\n")),
            "{}",
            stdout(&o)
        );
    }
    // Through serve the same.
    let serve = c.serve().await;
    let o = run();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o).matches("THE SECRET WORD").count(), 2);
    drop(serve);
    let audit = stdout(&c.run(&["audit"]));
    assert!(
        audit.contains("sh -c \"tr a-z A-Z\" (with 16 bytes on stdin)"),
        "{audit}"
    );
    assert!(!audit.contains("secret word"), "{audit}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_on_a_terminal_goes_through_the_pager_unless_told_not_to() {
    let c = Cluster::gluu(2).await;
    let dir = tempfile::tempdir().unwrap();
    // A tmux server of its own per run: the first run's server exits with its session,
    // and a second session asked of it meanwhile would be lost.
    let socket = |name: &str| format!("cm-pager-{}-{name}", std::process::id());
    let run = |name: &str, extra: &str| {
        let paged = dir.path().join(format!("{name}.paged"));
        let done = dir.path().join(format!("{name}.done"));
        let command = format!(
            "PAGER='cat > {}' {} --home {} plan {extra}; touch {}",
            paged.display(),
            clustermgr_tests::clustermgr_bin().display(),
            c.dir().display(),
            done.display()
        );
        clustermgr_tests::tmux(
            &socket(name),
            &["new-session", "-d", "-x", "100", "-y", "30", &command],
        );
        (paged, done)
    };
    let (paged, done) = run("paged", "");
    eventually("the paged plan", PATIENCE, || done.exists()).await;
    let text = std::fs::read_to_string(&paged).unwrap();
    assert!(
        text.contains("/etc/csync2.cfg") && text.contains("plan "),
        "{text}"
    );
    let (paged, done) = run("direct", "--no-pager");
    eventually("the plan without pager", PATIENCE, || done.exists()).await;
    assert!(!paged.exists(), "--no-pager pages nothing");
    for name in ["paged", "direct"] {
        clustermgr_tests::tmux(&socket(name), &["kill-server"]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_on_a_node_that_does_not_answer_is_a_failure_not_a_usage_error() {
    let mut c = Cluster::gluu(2).await;
    let o = c.run(&["apply", "--yes"]);
    assert!(o.status.success(), "{}", stderr(&o));
    c.kill_agent("gluu1").await;
    let o = c.run(&[
        "--connect-timeout",
        "1",
        "rollback",
        "gluu1",
        "/etc/hosts",
        "--list",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).starts_with("clustermgr: gluu1: "),
        "{}",
        stderr(&o)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_show_json_is_typed() {
    let c = Cluster::gluu(1).await;
    let o = c.run(&["--json", "cluster", "show"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v = schema::json(&o, "cluster");
    // Absent is null, booleans are booleans, lists are lists, secrets only by hash.
    assert!(v["hostname"].is_null(), "{v}");
    assert_eq!(v["manage-hosts"], true);
    assert_eq!(v["gluu-root"], "/opt/gluu-server");
    assert!(
        v["replicated-paths"]
            .as_array()
            .is_some_and(|p| !p.is_empty()),
        "{v}"
    );
    assert!(v["secrets"]["tls-key"].is_null(), "{v}");
    // `cluster set --json` answers with the settings as they are now.
    let o = c.run(&["--json", "cluster", "set", "hostname", "idp.example.org"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(schema::json(&o, "cluster")["hostname"], "idp.example.org");
    let o = c.run(&["--json", "cluster", "show"]);
    let v = schema::json(&o, "cluster");
    assert_eq!(v["hostname"], "idp.example.org");
    let o = c.run(&["--json", "cluster", "unset", "hostname"]);
    assert!(schema::json(&o, "cluster")["hostname"].is_null());
}

/// The first line `clustermgr ARGS` prints, within `patience`; the command is then
/// stopped (a stream, which would go on until Ctrl-C).
fn first_line(c: &Cluster, args: &[&str], patience: Duration) -> String {
    use std::io::BufRead;
    let mut child = c
        .cli()
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = std::io::BufReader::new(out).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx.recv_timeout(patience);
    let _ = child.kill();
    let _ = child.wait();
    line.unwrap_or_else(|_| panic!("{args:?} printed no line within {patience:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_prints_what_its_published_schema_says() {
    let logs = tempfile::tempdir().unwrap();
    let app = logs.path().join("app.log");
    std::fs::write(&app, "").unwrap();
    let extra = clustermgr_tests::following_app_log(&app);
    let mut lb = node("lb1", "");
    lb.roles = vec![clustermgr::store::Role::Lb];
    let c = Cluster::start(vec![node("gluu1", &extra), node("gluu2", ""), lb]).await;
    let seen = std::cell::RefCell::new(std::collections::BTreeSet::new());
    let doc = |args: &[&str], name: &'static str| {
        seen.borrow_mut().insert(name);
        let o = c.run(&[&["--json"][..], args].concat());
        schema::json(&o, name)
    };
    let lines = |text: &str, name: &'static str| {
        seen.borrow_mut().insert(name);
        let v = schema::json_lines(text, name);
        assert!(!v.is_empty(), "no {name} line");
        v
    };

    // A new cluster of its own.
    let fresh = c.home.path().join("fresh");
    let o = std::process::Command::new(clustermgr_tests::clustermgr_bin())
        .env_remove("CLUSTERMGR_HOME")
        .args([
            "--home",
            fresh.to_str().unwrap(),
            "--json",
            "init",
            "--cluster",
            "fresh",
        ])
        .output()
        .unwrap();
    seen.borrow_mut().insert("init");
    assert_eq!(schema::json(&o, "init")["cluster"], "fresh");

    assert_eq!(
        doc(&["node", "list"], "node-list")["nodes"][2]["roles"][0],
        "lb"
    );
    let shown = doc(&["node", "show", "gluu1"], "node");
    assert!(shown["host"]["clock"]["time"].is_string(), "{shown}");
    doc(&["ping"], "ping");
    doc(&["status"], "status");
    doc(&["cert", "status"], "cert-status");
    let renewed = doc(&["cert", "renew", "--nodes", "gluu2"], "node-results");
    assert_eq!(renewed["nodes"][0]["state"], "ok");
    let o = c.run(&["--json", "exec", "--", "echo", "hi"]);
    for l in lines(&stdout(&o), "exec") {
        assert_eq!(l["stdout"], "hi\n", "{l}");
    }
    doc(
        &["cluster", "set", "hostname", "idp.example.org"],
        "cluster",
    );
    doc(&["cluster", "unset", "hostname"], "cluster");
    doc(&["cluster", "show"], "cluster");

    // Desired state: a plan, its apply, no drift, the history, a drain.
    let plan = doc(&["plan"], "plan");
    let digest = plan["digest"].as_str().unwrap();
    let applied = doc(&["apply", "--yes", "--plan", digest], "apply");
    assert!(
        applied["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|n| n["state"] == "ok"),
        "{applied}"
    );
    doc(&["drift"], "drift");
    let history = doc(&["history"], "history");
    assert!(!history["changes"].as_array().unwrap().is_empty());
    doc(
        &["rollback", "gluu1", "/etc/csync2.cfg", "--list"],
        "rollback-list",
    );
    doc(&["drain", "gluu2"], "apply");
    doc(&["undrain", "gluu2"], "apply");

    // Health, one round of this command's own.
    doc(&["health"], "health");
    doc(&["ports"], "ports");
    doc(&["replication"], "replication");

    // What serve gathers: telemetry, health changes, and the streams.
    let _serve = c.serve().await;
    std::fs::write(&app, "one line\n").unwrap();
    eventually("a stored log line", PATIENCE, || {
        stdout(&c.run(&["logs", "--source", "app"])).contains("one line")
    })
    .await;
    let stored = doc(&["logs", "--source", "app"], "logs");
    assert_eq!(stored["lines"][0]["line"], "one line");
    let line = first_line(&c, &["--json", "logs", "-f", "--source", "app"], PATIENCE);
    assert_eq!(lines(&line, "logs-follow")[0]["type"], "log");
    eventually("a stored load sample", PATIENCE, || {
        stdout(&c.run(&["metrics"])).contains("node_load1")
    })
    .await;
    doc(&["metrics"], "metrics");
    let series = doc(&["metrics", "--metric", "node_load1"], "metrics-series");
    assert!(
        series["series"][0]["points"][0]["time"].is_string(),
        "{series}"
    );
    doc(&["top"], "top");
    eventually("a stored health change", PATIENCE, || {
        stdout(&c.run(&["events"])).contains("gluu")
    })
    .await;
    doc(&["events"], "events");
    let line = first_line(&c, &["--json", "events", "-f", "--since", "1h"], PATIENCE);
    assert_eq!(lines(&line, "events-follow")[0]["type"], "event");
    let line = first_line(&c, &["--json", "health", "--watch"], PATIENCE);
    assert_eq!(lines(&line, "health-watch")[0]["type"], "health");
    doc(&["audit"], "audit");

    // One-line answers, and a failure.
    doc(&["node", "set-primary", "gluu2"], "message");
    let o = c.run(&["--json", "node", "show", "gluu9"]);
    assert_eq!(o.status.code(), Some(2));
    seen.borrow_mut().insert("error");
    assert!(
        schema::json_error(&o)["error"]
            .as_str()
            .unwrap()
            .contains("gluu9")
    );

    // Every published schema is checked somewhere: here, or (for what needs more
    // than a sandbox) in the test named.
    let elsewhere = [
        // e2e: the_store_keeps_every_acknowledged_change_across_kill_9_of_serve and
        // a_revoked_controller_key_is_refused_where_the_new_one_was_seen_*.
        "node-sign",
        "cert-revoke-controller",
        // backup: a_backup_taken_under_serve_restores_into_a_home_the_agents_accept.
        "backup",
        "restore",
        // multihost: bootstrap over SSH.
        "node-add-ssh",
        // access: console_accounts_are_made_listed_given_tokens_and_removed.
        "user-list",
        "user",
        "user-token",
        // keys: one_keystore_for_every_node_and_published_keys_that_verify_*.
        "keys",
        // provision: gluu_install_sets_up_a_node_from_the_primarys_setup.
        "gluu-install",
        "gluu-add",
    ];
    for p in clustermgr::contract::published() {
        assert!(
            seen.borrow().contains(p.name) || elsewhere.contains(&p.name),
            "docs/schema/{}.json is checked by no test",
            p.name
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escape_sequences_in_what_nodes_report_reach_a_terminal_shown_not_obeyed() {
    // A log line a service account wrote, as `logs` shows it: on a terminal, made
    // visible (every table goes through the same writer); into a pipe, as it is.
    let logs = tempfile::tempdir().unwrap();
    let app = logs.path().join("app.log");
    std::fs::write(&app, "").unwrap();
    let extra = clustermgr_tests::following_app_log(&app);
    let c = Cluster::start(vec![node("gluu1", &extra)]).await;
    let _serve = c.serve().await;
    std::fs::write(&app, "\x1b]0;owned\x07\x1b[2Jtext\n").unwrap();
    eventually("the line stored", PATIENCE, || {
        stdout(&c.run(&["logs", "--source", "app"])).contains("text")
    })
    .await;
    let o = c.run(&["logs", "--source", "app"]);
    assert!(o.stdout.windows(2).any(|w| w == b"\x1b]"), "{:?}", o.stdout);
    let line = format!(
        "{} --home {} logs --source app",
        clustermgr_tests::clustermgr_bin().display(),
        c.dir().display()
    );
    let o = std::process::Command::new("script")
        .args(["-qec", &line, "/dev/null"])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run script");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains(r"\x1b]0;owned\x07\x1b[2Jtext"), "{out:?}");
    assert!(!o.stdout.contains(&0x1b), "{out:?}");
}
