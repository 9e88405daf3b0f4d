//! Health checks on the node: one round per controller request ([`round`]), and the
//! LDAP heartbeat, written on a thread of its own ([`Heartbeats`]) so peers see fresh
//! heartbeats even while no controller asks.

pub mod csync2;
pub mod ldap;
pub mod services;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use clustermgr_protocol::health::{
    CertProbe, CertState, CheckReport, CheckSpec, PortProbe, PortReach,
};

use crate::config::{AgentConfig, LdapConfig};

/// The `[ldap]` section in force: replaced when the agent re-reads `agent.toml` on
/// SIGHUP, read by every round and every heartbeat.
pub type LiveLdap = Arc<Mutex<LdapConfig>>;

/// The LDAP operation counters read last, waiting for the telemetry collector's next
/// tick (which takes them, so each reading is sent once).
pub type LdapSamples = Arc<Mutex<Vec<clustermgr_protocol::telemetry::Sample>>>;

/// `cfg` with the `[ldap]` section in force now.
pub fn with_live(cfg: &AgentConfig, ldap: &LiveLdap) -> AgentConfig {
    let mut c = cfg.clone();
    c.ldap = ldap.lock().unwrap_or_else(|p| p.into_inner()).clone();
    c
}
use crate::journal::now_ms;

/// The heartbeat interval before any controller said: the default check interval.
const DEFAULT_INTERVAL_MS: u64 = 10_000;
/// The shortest interval a controller may set: a typo must not hammer the directory.
const MIN_INTERVAL_MS: u64 = 200;

/// The heartbeat writer's shared state.
#[derive(Debug)]
struct Shared {
    interval_ms: AtomicU64,
    last_error: Mutex<Option<String>>,
}

/// The running heartbeat writer; stops when dropped (without waiting for a write in
/// progress, which ends at its own deadline).
#[derive(Debug)]
pub struct Heartbeats {
    shared: Arc<Shared>,
    /// A message wakes the writer (the interval changed); dropping it stops it.
    wake: mpsc::Sender<()>,
}

impl Heartbeats {
    /// Starts writing this node's heartbeat every interval, while `[ldap] heartbeat`
    /// is on and the node has an LDAP server.
    /// Each beat also reads the server's operation counters into `samples`.
    pub fn start(
        cfg: &AgentConfig,
        node: &str,
        ldap: LiveLdap,
        samples: LdapSamples,
    ) -> std::io::Result<Heartbeats> {
        let shared = Arc::new(Shared {
            interval_ms: AtomicU64::new(DEFAULT_INTERVAL_MS),
            last_error: Mutex::new(None),
        });
        let (stop, stopped) = mpsc::channel::<()>();
        let (cfg, node, s) = (cfg.clone(), node.to_string(), shared.clone());
        std::thread::Builder::new()
            .name("heartbeat".into())
            .spawn(move || {
                loop {
                    let error = beat(&with_live(&cfg, &ldap), &node, &samples).err();
                    if let Some(e) = &error {
                        tracing::debug!("{e}");
                    }
                    *s.last_error.lock().unwrap_or_else(|p| p.into_inner()) = error;
                    let wait = Duration::from_millis(s.interval_ms.load(Ordering::Relaxed));
                    match stopped.recv_timeout(wait) {
                        Ok(()) | Err(mpsc::RecvTimeoutError::Timeout) => {}
                        Err(mpsc::RecvTimeoutError::Disconnected) => return,
                    }
                }
            })?;
        Ok(Heartbeats { shared, wake: stop })
    }

    /// Follows the controller's check interval from now on; a new interval starts
    /// with a heartbeat now, so a shorter one is not waited out at the old length.
    fn set_interval(&self, ms: u64) {
        let ms = ms.max(MIN_INTERVAL_MS);
        if self.shared.interval_ms.swap(ms, Ordering::Relaxed) != ms {
            let _ = self.wake.send(());
        }
    }

    fn last_error(&self) -> Option<String> {
        self.shared
            .last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// Writes the heartbeat once and reads the operation counters; `Ok` also when there
/// is no LDAP server. The error is the heartbeat's: counters that cannot be read are
/// left out of the metrics (and logged at debug).
fn beat(cfg: &AgentConfig, node: &str, samples: &LdapSamples) -> Result<(), String> {
    let Some(access) = crate::ldap::access(cfg)? else {
        return Ok(());
    };
    let mut c = access.connect()?;
    let r = if cfg.ldap.heartbeat {
        ldap::write_heartbeat(&mut c, &cfg.ldap.suffix, node, now_ms())
    } else {
        Ok(())
    };
    match ldap::server(&mut c).and_then(|s| ldap::counters(&mut c, s)) {
        Ok(read) if !read.is_empty() => {
            *samples.lock().unwrap_or_else(|p| p.into_inner()) = read;
        }
        Ok(_) => {}
        Err(e) => tracing::debug!("LDAP counters: {e}"),
    }
    c.unbind();
    r
}

/// How long a peer's port has to accept a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// One round of checks (blocking: every probe has its own deadline, and the LDAP,
/// csync2 and port checks run side by side, so a frozen server costs its timeout
/// once).
pub fn round(cfg: &AgentConfig, spec: &CheckSpec, heartbeats: Option<&Heartbeats>) -> CheckReport {
    let started_ms = now_ms();
    if let Some(h) = heartbeats {
        h.set_interval(spec.interval_ms);
    }
    // csync2 walks the replicated trees; it gets most of the round, not all of it.
    let csync2_deadline =
        std::time::Instant::now() + Duration::from_millis(spec.deadline_ms.max(500) * 4 / 5);
    let access = crate::ldap::access(cfg);
    let gluu = crate::info::detect_gluu(&cfg.root);
    let (ldap, csync2, ports, services) = std::thread::scope(|s| {
        let csync2 = s.spawn(|| {
            spec.csync2
                .as_deref()
                .map(|name| csync2::state(&cfg.root, name, csync2_deadline))
        });
        let ports = s.spawn(|| reach(&spec.reach));
        let services = s.spawn(|| {
            let mut probes = spec.services.clone();
            if let (Some(host), Some(gluu)) = (&spec.gluu_endpoints, &gluu) {
                probes.extend(services::gluu_endpoints(gluu, host));
            }
            services::try_all(&cfg.root, &probes)
        });
        let ldap = ldap_state(cfg, &access, heartbeats);
        (
            ldap,
            csync2.join().unwrap_or(None),
            ports.join().unwrap_or_default(),
            services.join().unwrap_or_default(),
        )
    });
    let disks = crate::telemetry::metrics::filesystems(std::path::Path::new("/proc"))
        .into_iter()
        .map(|f| clustermgr_protocol::health::DiskUse {
            mount: f.mount,
            // What `df` counts: used plus available, leaving out root's reserve (and
            // what a thinly provisioned volume cannot give), so the percent used
            // matches what an administrator sees there.
            size_bytes: f
                .size_bytes
                .saturating_sub(f.free_bytes)
                .saturating_add(f.avail_bytes),
            avail_bytes: f.avail_bytes,
        })
        .collect();
    // The controller names node paths (below the sandbox under `clustermgr dev`); the
    // LDAP certificate's path is the one the agent reads. Those the node must have are
    // reported missing; the others are left out until their software is installed.
    let mut watched: Vec<(CertProbe, std::path::PathBuf, bool)> = spec
        .certs
        .iter()
        .map(|p| {
            (
                p.clone(),
                cfg.root.join(p.path.trim_start_matches('/')),
                false,
            )
        })
        .collect();
    if let Some(gluu) = &gluu {
        let cert = crate::info::httpd_cert(gluu);
        let probe = CertProbe {
            label: "cluster TLS certificate".into(),
            path: cert.display().to_string(),
        };
        let on_disk = cfg.root.join(cert.strip_prefix("/").unwrap_or(&cert));
        watched.push((probe, on_disk, true));
    }
    if let Ok(Some(a)) = &access
        && let Some(cert) = &a.cert
    {
        let probe = CertProbe {
            label: "LDAP server certificate".into(),
            path: cert.display().to_string(),
        };
        watched.push((probe, cert.clone(), true));
    }
    CheckReport {
        started_ms,
        ldap,
        disks,
        ports,
        csync2,
        certs: certs(watched),
        services,
    }
}

/// Reads each certificate's subject and expiry; a missing file is left out unless
/// the node must have it.
pub fn certs(probes: Vec<(CertProbe, std::path::PathBuf, bool)>) -> Vec<CertState> {
    probes
        .into_iter()
        .filter_map(|(probe, path, required)| {
            let pem = match std::fs::read_to_string(&path) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => return None,
                Err(e) => Err(format!("cannot read {}: {e}", path.display())),
                Ok(pem) => Ok(pem),
            };
            let result = pem.and_then(|pem| {
                clustermgr_protocol::identity::CertSummary::parse_pem(&pem)
                    .map(|s| (s.common_name, s.not_after))
                    .map_err(|e| format!("{}: {e}", path.display()))
            });
            Some(CertState { probe, result })
        })
        .collect()
}

fn ldap_state(
    cfg: &AgentConfig,
    access: &Result<Option<crate::ldap::Access>, String>,
    heartbeats: Option<&Heartbeats>,
) -> Option<Result<clustermgr_protocol::health::LdapState, String>> {
    match access {
        Ok(None) => None,
        Err(e) => Some(Err(e.clone())),
        Ok(Some(access)) => Some(access.connect().and_then(|mut c| {
            let state = ldap::state(&mut c, &cfg.ldap.suffix, now_ms);
            c.unbind();
            state.map(|mut s| {
                s.heartbeat_error = heartbeats.and_then(Heartbeats::last_error);
                s
            })
        })),
    }
}

/// A TCP connection to `host:port` within `timeout` (each of its addresses): how long
/// it took, milliseconds, or why not.
pub fn connect(host: &str, port: u16, timeout: Duration) -> Result<u32, String> {
    use std::net::{TcpStream, ToSocketAddrs};
    let started = std::time::Instant::now();
    let addrs: Vec<_> = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .collect();
    let mut last = format!("{host} has no address");
    for a in addrs {
        match TcpStream::connect_timeout(&a, timeout) {
            Ok(_) => return Ok(started.elapsed().as_millis() as u32),
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                last = format!("no answer within {} s", timeout.as_secs_f32())
            }
            Err(e) => last = e.to_string(),
        }
    }
    Err(last)
}

/// Tries every probe at once, each for at most [`CONNECT_TIMEOUT`].
pub fn reach(probes: &[PortProbe]) -> Vec<PortReach> {
    in_parallel(probes, |p| connect(&p.host, p.port, CONNECT_TIMEOUT))
        .into_iter()
        .zip(probes)
        .map(|(result, p)| PortReach {
            probe: p.clone(),
            result,
        })
        .collect()
}

/// `probe` run on each of `items` at once, a thread each (each has its own deadline,
/// so the slowest sets the time), the results in order.
fn in_parallel<T: Sync, R: Send>(
    items: &[T],
    probe: impl Fn(&T) -> Result<R, String> + Sync,
) -> Vec<Result<R, String>> {
    std::thread::scope(|s| {
        let tries: Vec<_> = items.iter().map(|i| s.spawn(|| probe(i))).collect();
        tries
            .into_iter()
            .map(|t| t.join().unwrap_or_else(|_| Err("the probe failed".into())))
            .collect()
    })
}
