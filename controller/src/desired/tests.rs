//! The desired-state operations against in-process agents: each node is the agent's own
//! engine over a temporary root, reached through the [`crate::connect::Agents`] seam,
//! so plan, apply, drift and rollback are tested without sockets, certificates or root.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use clustermgr_agent::apply::Engine;
use clustermgr_agent::config::AgentConfig;
use clustermgr_protocol::NodeName;
use clustermgr_protocol::message::{Reply, Request};
use futures_util::future::BoxFuture;

use super::*;
use crate::clock::{Clock, FixedClock, SystemClock};
use crate::connect::{Agents, Link};
use crate::store::Role;

/// One stand-in agent: the engine, and the root it writes under.
struct Node {
    name: NodeName,
    engine: Engine,
    root: PathBuf,
    /// How full its disk is, percent, in the health checks it answers.
    disk_pct: std::sync::atomic::AtomicU64,
    /// How its next apply breaks it, if it does.
    breaks: Mutex<Option<Break>>,
    /// Whether its HTTPS answers 503 (after a [`Break::Https`]).
    https_down: std::sync::atomic::AtomicBool,
}

/// What a change does to a stand-in node.
#[derive(Clone, Copy)]
enum Break {
    /// Its HTTPS answers 503: the rolling apply's check of the node fails.
    Https,
    /// Its disk fills: its health is worse than before the change.
    Disk,
}

impl Link for Node {
    fn request<'a>(
        &'a self,
        req: &'a Request,
        _timeout: Duration,
    ) -> BoxFuture<'a, Result<Reply, NodeFailure>> {
        Box::pin(async move {
            Ok(match req {
                Request::Checks(spec) => Reply::Checks(Box::new(self.checks(spec))),
                Request::Apply(_) if self.breaks.lock().unwrap().is_some() => {
                    match self.breaks.lock().unwrap().take() {
                        Some(Break::Https) => self.https_down.store(true, Ordering::SeqCst),
                        Some(Break::Disk) => self.disk_pct.store(99, Ordering::SeqCst),
                        None => {}
                    }
                    self.engine
                        .answer(req, &self.name)
                        .unwrap_or_else(Reply::Error)
                }
                // The services through the engine (in a sandbox root it does not run
                // them); the HTTPS answer as the test says, with no server to ask.
                Request::Probe(spec) => {
                    use clustermgr_protocol::changeset::{ProbeSpec, StepRun};
                    let services = ProbeSpec {
                        services: spec.services.clone(),
                        https: None,
                    };
                    let mut steps = self.engine.probe(&services);
                    if let Some(h) = &spec.https {
                        let down = self.https_down.load(Ordering::SeqCst);
                        steps.push(StepRun {
                            step: format!("HTTPS GET {} on port {}", h.path, h.port),
                            ok: !down,
                            output: if down {
                                "503 Service Unavailable"
                            } else {
                                "200 OK"
                            }
                            .into(),
                        });
                    }
                    Reply::Probed(steps)
                }
                _ => self
                    .engine
                    .answer(req, &self.name)
                    .unwrap_or_else(Reply::Error),
            })
        })
    }
}

impl Node {
    /// A health round as a healthy node answers it: every port reached, every service
    /// running, csync2 in sync, no LDAP server; its disk as full as the test says.
    fn checks(
        &self,
        spec: &clustermgr_protocol::health::CheckSpec,
    ) -> clustermgr_protocol::health::CheckReport {
        use clustermgr_protocol::health::*;
        let pct = self.disk_pct.load(std::sync::atomic::Ordering::Relaxed);
        let now_ms = SystemClock.now().unix_timestamp() * 1000;
        CheckReport {
            started_ms: now_ms,
            ldap: None,
            disks: vec![DiskUse {
                mount: "/".into(),
                size_bytes: 100 << 30,
                avail_bytes: (100 - pct) << 30,
            }],
            ports: spec
                .reach
                .iter()
                .map(|p| PortReach {
                    probe: p.clone(),
                    result: Ok(1),
                })
                .collect(),
            csync2: spec.csync2.as_ref().map(|_| Csync2State {
                configured: true,
                listener: Ok(()),
                dirty: Vec::new(),
                dirty_total: 0,
                last_sync_ms: Some(now_ms),
                kept: Vec::new(),
                error: None,
            }),
            certs: Vec::new(),
            services: spec
                .services
                .iter()
                .map(|s| ServiceState {
                    label: s.label.clone(),
                    result: Ok("running".into()),
                })
                .collect(),
        }
    }
}

/// The cluster's stand-in agents; a node in `down` does not answer.
#[derive(Default)]
struct InProcess {
    nodes: BTreeMap<String, Arc<Node>>,
    down: Mutex<BTreeSet<String>>,
}

impl Agents for InProcess {
    fn link<'a>(
        &'a self,
        node: &'a NodeRecord,
        _within: Duration,
    ) -> BoxFuture<'a, Result<Arc<dyn Link>, NodeFailure>> {
        Box::pin(async move {
            if self.down.lock().unwrap().contains(&node.name) {
                return Err(NodeFailure::unreachable("no answer (stopped by the test)"));
            }
            match self.nodes.get(&node.name) {
                Some(n) => Ok(n.clone() as Arc<dyn Link>),
                None => Err(NodeFailure::unreachable("no such stand-in")),
            }
        })
    }
}

struct Cluster {
    _dir: tempfile::TempDir,
    ctx: Ctx,
    agents: Arc<InProcess>,
}

const WITHIN: Duration = Duration::from_secs(3);

/// A home with `nodes` (the first Gluu node the primary), each a stand-in agent.
fn cluster(nodes: &[(&str, Role)]) -> Cluster {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    crate::ops::init(&home, "unit", 90, &SystemClock).unwrap();
    let clock = Arc::new(FixedClock(SystemClock.now()));
    let ctx = Ctx::open(&home, clock, &crate::config::CtxOptions::default(), false).unwrap();
    let mut agents = InProcess::default();
    let mut records = Vec::new();
    for (i, (name, role)) in nodes.iter().enumerate() {
        let mut rec = NodeRecord::for_tests(name, &format!("127.0.0.{}:7443", i + 1), &[*role]);
        rec.primary = *role == Role::Gluu && !records.iter().any(|r: &NodeRecord| r.primary);
        records.push(rec);
        let base = dir.path().join("nodes").join(name);
        let root = base.join("root");
        std::fs::create_dir_all(&root).unwrap();
        let text = format!(
            "cert = \"c\"\nkey = \"k\"\nca = \"a\"\nstate_dir = \"{}\"\nroot = \"{}\"\nwritable_roots = [\"{}\"]\n",
            base.join("state").display(),
            root.display(),
            root.display(),
        );
        let cfg = AgentConfig::parse(std::path::Path::new("agent.toml"), &text).unwrap();
        let node = Node {
            name: NodeName::new(name).unwrap(),
            engine: Engine::new(Arc::new(cfg)),
            root,
            disk_pct: std::sync::atomic::AtomicU64::new(40),
            breaks: Mutex::new(None),
            https_down: std::sync::atomic::AtomicBool::new(false),
        };
        agents.nodes.insert(name.to_string(), Arc::new(node));
    }
    ctx.store.put_nodes(&records).unwrap();
    let agents = Arc::new(agents);
    let ctx = ctx.with_agents(agents.clone());
    Cluster {
        _dir: dir,
        ctx,
        agents,
    }
}

impl Cluster {
    fn read(&self, node: &str, path: &str) -> Option<String> {
        let root = &self.agents.nodes[node].root;
        std::fs::read_to_string(root.join(path.trim_start_matches('/'))).ok()
    }

    fn write(&self, node: &str, path: &str, text: &str) {
        let root = &self.agents.nodes[node].root;
        std::fs::write(root.join(path.trim_start_matches('/')), text).unwrap();
    }

    async fn plan(&self, drift: bool) -> (Vec<NodePlanView>, Option<String>) {
        match plan(&self.ctx, "all", drift, WITHIN).await.unwrap() {
            View::Plan { views, digest, .. } => (views, digest),
            _ => panic!("a plan answers with a plan"),
        }
    }

    async fn apply(&self, approved: Option<&str>) -> Result<Vec<NodeApplyView>, CtlError> {
        self.apply_as(approved, false).await
    }

    async fn apply_as(
        &self,
        approved: Option<&str>,
        rolling: bool,
    ) -> Result<Vec<NodeApplyView>, CtlError> {
        let ask = ApplyAsk {
            selector: "all",
            rolling,
            approved,
            on_behalf: None,
        };
        let (tx, mut rx) = tokio::sync::mpsc::channel(64);
        let drain = tokio::spawn(async move { while rx.recv().await.is_some() {} });
        let out = apply(&self.ctx, "unit", &ask, WITHIN, &tx).await;
        drop(tx);
        drain.await.unwrap();
        match out? {
            View::Applied(v) => Ok(v),
            _ => panic!("an apply answers with what it applied"),
        }
    }
}

/// The paths a plan would write (an edit waiting for its file to exist writes none).
fn paths(view: &NodePlanView) -> Vec<&str> {
    view.entries
        .iter()
        .filter(|e| e.change != "waiting")
        .map(|e| e.path.as_str())
        .collect()
}

#[tokio::test]
async fn a_plan_is_what_apply_writes_and_then_nothing_is_left_to_change() {
    let c = cluster(&[("gluu1", Role::Gluu), ("gluu2", Role::Gluu)]);
    let (views, digest) = c.plan(false).await;
    assert_eq!(views.len(), 2);
    for v in &views {
        assert_eq!(v.state, NodeState::Ok, "{v:?}");
        for path in [
            "/etc/csync2.cfg",
            "/etc/csync2.key",
            "/etc/csync2_ssl_key.pem",
        ] {
            assert!(paths(v).contains(&path), "{path} not in {:?}", paths(v));
        }
        // Nothing is written by a plan.
        assert!(c.read(&v.node, "/etc/csync2.cfg").is_none());
    }
    let applied = c.apply(digest.as_deref()).await.unwrap();
    for v in &applied {
        assert_eq!(v.state, NodeState::Ok, "{v:?}");
    }
    for node in ["gluu1", "gluu2"] {
        let cfg = c.read(node, "/etc/csync2.cfg").expect("csync2.cfg written");
        assert!(cfg.contains("gluu1") && cfg.contains("gluu2"), "{cfg}");
        // The key was made on the node, and its certificate issued for it.
        assert!(c.read(node, "/etc/csync2_ssl_key.pem").is_some());
        assert!(
            c.read(node, "/etc/csync2_ssl_cert.pem")
                .is_some_and(|p| p.contains("BEGIN CERTIFICATE"))
        );
    }
    // Converged: a second plan changes nothing, and there is no drift.
    let (again, _) = c.plan(false).await;
    for v in &again {
        assert!(paths(v).is_empty(), "{:?}", paths(v));
    }
    let (drift, _) = c.plan(true).await;
    assert!(drift.iter().all(|v| paths(v).is_empty()));
    // Each applied file is in the history, as applied by the user who asked.
    let View::History(changes) = history(&c.ctx, "all", Some("/etc/csync2.cfg"), 10).unwrap()
    else {
        panic!("history answers with changes");
    };
    assert_eq!(changes.len(), 2, "{changes:?}");
    assert!(
        changes
            .iter()
            .all(|ch| ch.user == "unit" && ch.result == "applied")
    );
}

#[tokio::test]
async fn a_hand_edit_is_drift_and_the_next_apply_puts_it_back() {
    let c = cluster(&[("gluu1", Role::Gluu), ("gluu2", Role::Gluu)]);
    c.apply(None).await.unwrap();
    let before = c.read("gluu2", "/etc/csync2.cfg").unwrap();
    c.write(
        "gluu2",
        "/etc/csync2.cfg",
        &format!("{before}# edited by hand\n"),
    );
    let (drift, digest) = c.plan(true).await;
    assert!(digest.is_none(), "a drift report is no plan to apply");
    let gluu2 = drift.iter().find(|v| v.node == "gluu2").unwrap();
    assert_eq!(paths(gluu2), ["/etc/csync2.cfg"]);
    assert!(gluu2.entries[0].drift);
    assert!(
        gluu2.entries[0]
            .diff
            .as_deref()
            .is_some_and(|d| d.contains("+# edited by hand")),
        "{:?}",
        gluu2.entries[0].diff
    );
    assert!(paths(drift.iter().find(|v| v.node == "gluu1").unwrap()).is_empty());
    c.apply(None).await.unwrap();
    assert_eq!(c.read("gluu2", "/etc/csync2.cfg").unwrap(), before);
}

#[tokio::test]
async fn an_apply_of_a_plan_the_model_moved_past_is_refused_before_anything_is_written() {
    let c = cluster(&[("gluu1", Role::Gluu), ("gluu2", Role::Gluu)]);
    let (_, digest) = c.plan(false).await;
    let digest = digest.unwrap();
    cluster_set(&c.ctx, "unit", "manage-hosts", "no").unwrap();
    let err = c.apply(Some(&digest[..12])).await.unwrap_err();
    assert!(matches!(err, CtlError::PlanChanged { .. }), "{err}");
    assert_eq!(err.exit_code(), crate::exit::FAILED);
    assert!(c.read("gluu1", "/etc/csync2.cfg").is_none());
    assert!(c.read("gluu1", "/etc/csync2_ssl_key.pem").is_none());
}

#[tokio::test]
async fn a_node_that_does_not_answer_fails_alone_and_is_applied_when_it_is_back() {
    let c = cluster(&[("gluu1", Role::Gluu), ("gluu2", Role::Gluu)]);
    c.agents.down.lock().unwrap().insert("gluu2".into());
    let applied = c.apply(None).await.unwrap();
    let state = |n: &str| applied.iter().find(|v| v.node == n).unwrap().state.clone();
    assert_eq!(state("gluu1"), NodeState::Ok);
    assert_eq!(state("gluu2"), NodeState::Unreachable);
    assert!(c.read("gluu2", "/etc/csync2.cfg").is_none());
    c.agents.down.lock().unwrap().clear();
    let (views, _) = c.plan(false).await;
    let gluu2 = views.iter().find(|v| v.node == "gluu2").unwrap();
    assert!(
        paths(gluu2).contains(&"/etc/csync2.cfg"),
        "{:?}",
        paths(gluu2)
    );
    c.apply(None).await.unwrap();
    assert!(c.read("gluu2", "/etc/csync2.cfg").is_some());
}

#[tokio::test]
async fn a_rollback_restores_the_kept_version_and_holds_it_until_the_desired_state_changes() {
    let c = cluster(&[("gluu1", Role::Gluu), ("gluu2", Role::Gluu)]);
    c.apply(None).await.unwrap();
    let first = c.read("gluu1", "/etc/csync2.cfg").unwrap();
    // A change of the model rewrites the file; the agent keeps the version it replaced.
    cluster_set(&c.ctx, "unit", "replicated-paths", "/opt/gluu/python/libs").unwrap();
    c.apply(None).await.unwrap();
    let second = c.read("gluu1", "/etc/csync2.cfg").unwrap();
    assert_ne!(first, second);
    let what = |list: bool| RollbackSpec {
        node: "gluu1",
        path: "/etc/csync2.cfg",
        generation: None,
        list,
        in_container: false,
    };
    let View::Generations { generations, .. } =
        rollback(&c.ctx, "unit", &what(true), WITHIN).await.unwrap()
    else {
        panic!("--list answers with the kept versions");
    };
    assert_eq!(generations[0].generation, 1);
    assert_eq!(
        generations[0].sha256,
        clustermgr_protocol::identity::sha256_hex(first.as_bytes())
    );
    rollback(&c.ctx, "unit", &what(false), WITHIN)
        .await
        .unwrap();
    assert_eq!(c.read("gluu1", "/etc/csync2.cfg").unwrap(), first);
    // Held: the plan leaves it alone and says so, and so does an apply.
    let (views, _) = c.plan(false).await;
    let gluu1 = views.iter().find(|v| v.node == "gluu1").unwrap();
    assert_eq!(gluu1.held[0].path, "/etc/csync2.cfg", "{gluu1:?}");
    c.apply(None).await.unwrap();
    assert_eq!(c.read("gluu1", "/etc/csync2.cfg").unwrap(), first);
    // The desired state moves on: the hold ends and the new content is applied.
    cluster_set(
        &c.ctx,
        "unit",
        "replicated-paths",
        "/opt/gluu/jetty/oxauth/custom",
    )
    .unwrap();
    c.apply(None).await.unwrap();
    let third = c.read("gluu1", "/etc/csync2.cfg").unwrap();
    assert!(third.contains("/opt/gluu/jetty/oxauth/custom"), "{third}");
}

#[tokio::test]
async fn rolling_back_a_file_clustermgr_does_not_manage_is_refused_by_name() {
    let c = cluster(&[("gluu1", Role::Gluu), ("gluu2", Role::Gluu)]);
    c.apply(None).await.unwrap();
    let spec = RollbackSpec {
        node: "gluu1",
        path: "/etc/passwd",
        generation: None,
        list: true,
        in_container: false,
    };
    let err = rollback(&c.ctx, "unit", &spec, WITHIN).await.unwrap_err();
    assert!(matches!(err, CtlError::NotManaged { .. }), "{err}");
    assert_eq!(err.exit_code(), crate::exit::USAGE);
}

impl Cluster {
    /// The same home and agents, its clock moved to `at` (the store is reopened).
    fn at(self, at: time::OffsetDateTime) -> Cluster {
        let Cluster { _dir, ctx, agents } = self;
        let home = ctx.home.dir().to_path_buf();
        drop(ctx);
        let ctx = Ctx::open(
            &home,
            Arc::new(FixedClock(at)),
            &crate::config::CtxOptions::default(),
            false,
        )
        .unwrap()
        .with_agents(agents.clone());
        Cluster { _dir, ctx, agents }
    }
}

#[tokio::test]
async fn a_tunnel_certificate_near_its_end_is_issued_anew_at_the_next_apply_and_not_before() {
    let c = cluster(&[
        ("gluu1", Role::Gluu),
        ("gluu2", Role::Gluu),
        ("cache1", Role::Cache),
    ]);
    cluster_set(&c.ctx, "unit", "cache", "redis").unwrap();
    c.apply(None).await.unwrap();
    const CERT: &str = "/etc/stunnel/clustermgr/host.crt";
    const KEY: &str = crate::generate::STUNNEL_KEY;
    let cert = |c: &Cluster| c.read("gluu1", CERT).expect("the stunnel certificate");
    let first = cert(&c);
    let key = c.read("gluu1", KEY).expect("the key made on the node");
    let csync2 = c.read("gluu1", "/etc/csync2_ssl_cert.pem").unwrap();
    let start = c.ctx.clock.now();
    // 200 days on, it has more than 60 days left: nothing to issue.
    let c = c.at(start + time::Duration::days(200));
    let (views, _) = c.plan(false).await;
    assert!(views.iter().all(|v| paths(v).is_empty()), "{views:?}");
    c.apply(None).await.unwrap();
    assert_eq!(cert(&c), first);
    // Past the mark (a year's certificate with 55 days left): the plan says a
    // certificate is issued at apply, and the apply issues it for the same key.
    let c = c.at(start + time::Duration::days(310));
    let (views, _) = c.plan(false).await;
    let gluu1 = views.iter().find(|v| v.node == "gluu1").unwrap();
    assert!(
        gluu1
            .entries
            .iter()
            .any(|e| e.path == CERT && e.at_apply.is_some()),
        "{:?}",
        gluu1.entries
    );
    c.apply(None).await.unwrap();
    let renewed = cert(&c);
    assert_ne!(renewed, first);
    assert_eq!(c.read("gluu1", KEY).unwrap(), key);
    let old = clustermgr_protocol::identity::CertSummary::parse_pem(&first).unwrap();
    let new = clustermgr_protocol::identity::CertSummary::parse_pem(&renewed).unwrap();
    assert!(new.not_after > old.not_after);
    assert_eq!(new.key_fingerprint, old.key_fingerprint);
    // The old one is revoked in the list every tunnel end checks.
    let tunnel = c.ctx.store.tunnel().unwrap().unwrap();
    assert!(
        tunnel
            .revoked
            .iter()
            .any(|(serial, _)| *serial == old.serial),
        "{:?}",
        tunnel.revoked
    );
    // csync2's certificate is pinned by csync2 and changes with its key only.
    assert_eq!(c.read("gluu1", "/etc/csync2_ssl_cert.pem").unwrap(), csync2);
}

/// A cluster of two Gluu nodes behind a load balancer, its certificate set.
fn balanced() -> Cluster {
    let c = cluster(&[
        ("gluu1", Role::Gluu),
        ("gluu2", Role::Gluu),
        ("lb1", Role::Lb),
    ]);
    // The load balancer's configuration waits for the cluster's certificate and key.
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["idp.example.org".into()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    cluster_set(&c.ctx, "unit", "hostname", "idp.example.org").unwrap();
    let secret = |k: &str, pem: String| cluster_set_secret(&c.ctx, "unit", k, &SecretText(pem));
    secret("tls-cert", cert.pem()).unwrap();
    secret("tls-key", key.serialize_pem()).unwrap();
    c
}

/// A rolling apply of a model change that `breaks` gluu1: it is the first, fails, and
/// stays drained; gluu2 is skipped and keeps its files.
async fn rolling_stops_at(c: &Cluster, breaks: Break, why: &str) {
    c.apply_as(None, true).await.unwrap();
    cluster_set(&c.ctx, "unit", "replicated-paths", "/opt/gluu/python/libs").unwrap();
    let before = c.read("gluu2", "/etc/csync2.cfg").unwrap();
    *c.agents.nodes["gluu1"].breaks.lock().unwrap() = Some(breaks);
    let applied = c.apply_as(None, true).await.unwrap();
    let view = |n: &str| applied.iter().find(|v| v.node == n).unwrap();
    assert_eq!(view("gluu1").state, NodeState::Failed, "{applied:?}");
    let message = view("gluu1").message.clone().unwrap_or_default();
    assert!(message.contains(why), "{message}");
    assert!(message.contains("stays drained"), "{message}");
    assert_eq!(view("gluu2").state, NodeState::Skipped, "{applied:?}");
    assert_eq!(c.read("gluu2", "/etc/csync2.cfg").unwrap(), before);
    let nginx = c.read("lb1", crate::generate::nginx::CONF).unwrap();
    // `server ADDRESS max_fails=2 fail_timeout=10s[ down];  # NODE`, per upstream.
    let upstream: Vec<&str> = nginx.lines().filter(|l| l.contains("max_fails")).collect();
    assert!(
        upstream
            .iter()
            .any(|l| l.ends_with("# gluu1") && l.contains(" down;")),
        "{upstream:?}"
    );
    assert!(
        upstream
            .iter()
            .any(|l| l.ends_with("# gluu2") && !l.contains(" down;")),
        "{upstream:?}"
    );
}

// Time paused: the gate's waits for a recovery pass at once (the stand-ins answer
// without timers of their own).
#[tokio::test(start_paused = true)]
async fn a_rolling_apply_stops_at_the_first_node_whose_check_fails_after_its_change() {
    rolling_stops_at(&balanced(), Break::Https, "503").await;
}

#[tokio::test(start_paused = true)]
async fn a_rolling_apply_stops_at_the_first_node_whose_health_is_worse_after_its_change() {
    rolling_stops_at(&balanced(), Break::Disk, "disk").await;
}

#[tokio::test]
async fn a_rolling_apply_of_healthy_nodes_drains_each_in_turn_and_puts_it_back() {
    let c = balanced();
    let applied = c.apply_as(None, true).await.unwrap();
    for v in &applied {
        assert_eq!(v.state, NodeState::Ok, "{v:?}");
    }
    let nginx = c.read("lb1", crate::generate::nginx::CONF).unwrap();
    for n in ["gluu1", "gluu2"] {
        assert!(nginx.contains(n), "{nginx}");
    }
    assert!(!nginx.contains(" down;"), "{nginx}");
}
