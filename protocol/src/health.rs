//! Health checks on the wire: what the controller asks an agent to check each round
//! ([`CheckSpec`]), and what the agent found on its own host ([`CheckReport`]). The
//! agent reports facts; verdicts are the controller's, which compares across nodes.

use serde::{Deserialize, Serialize};

/// The file the generated csync2 cron job touches after each `csync2 -x` that
/// succeeded: the agent reports its age as the last good sync.
pub const CSYNC2_SYNCED_STAMP: &str = "/var/lib/csync2/clustermgr-synced";
/// csync2's port.
pub const CSYNC2_PORT: u16 = 30865;

/// Where Redis listens on the cache host (the tunnel's far end connects there).
pub const REDIS_ADDR: &str = "127.0.0.1:6379";

/// A Gluu component's health endpoint: the component (as the agent's Gluu detection
/// names it), its name in words, the path, and what a healthy body holds.
pub struct GluuEndpoint {
    /// The component (`oxauth`).
    pub component: &'static str,
    /// Its name (`oxAuth`).
    pub name: &'static str,
    /// The path.
    pub path: &'static str,
    /// What a healthy answer's body holds.
    pub expect: &'static str,
}

/// Every Gluu component with a health endpoint; oxAuth and oxTrust, which every Gluu
/// node runs, come first (the load balancer's checks take those two).
pub const GLUU_ENDPOINTS: &[GluuEndpoint] = &[
    GluuEndpoint {
        component: "oxauth",
        name: "oxAuth",
        path: "/oxauth/restv1/health-check",
        expect: "running",
    },
    GluuEndpoint {
        component: "identity",
        name: "oxTrust",
        path: "/identity/restv1/health-check",
        expect: "running",
    },
    GluuEndpoint {
        component: "shibboleth",
        name: "the Shibboleth IdP",
        path: "/idp/shibboleth",
        expect: "X509Certificate",
    },
    GluuEndpoint {
        component: "casa",
        name: "Casa",
        path: "/casa/health-check",
        expect: "ok",
    },
];
/// Where the generated cron job leaves the output of the last `csync2 -x`.
pub const CSYNC2_LOG: &str = "/var/log/csync2.log";

/// One round's request: what the agent cannot know alone.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckSpec {
    /// The check interval; the agent writes its LDAP heartbeat this often.
    pub interval_ms: u64,
    /// The time the whole report must be ready within; each probe's own deadline is
    /// shorter.
    pub deadline_ms: u64,
    /// The peers' ports this node must reach: its row of the port matrix.
    pub reach: Vec<PortProbe>,
    /// The node's csync2 name, when it is a member of the cluster's csync2 group (the
    /// controller generated its configuration).
    pub csync2: Option<String>,
    /// Certificate files to watch for expiry (the agent adds its LDAP server's).
    pub certs: Vec<CertProbe>,
    /// Services to try (the load balancer's endpoints, the cache, the tunnels).
    pub services: Vec<ServiceProbe>,
    /// The cluster's hostname, when the node runs Gluu: the agent tries the health
    /// endpoints of the Gluu components it finds installed, by this name.
    pub gluu_endpoints: Option<String>,
}

/// A service to try on the node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceProbe {
    /// What it is, in words (`oxAuth through the load balancer`).
    pub label: String,
    /// How to try it.
    pub kind: ServiceKind,
}

/// How a service is tried.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServiceKind {
    /// `GET path` over TLS to 127.0.0.1:`port`, asking for `host`, the server's
    /// certificate pinned to the node's file `cert`; healthy when the status is 2xx
    /// and the body holds `expect`.
    Https {
        /// The port.
        port: u16,
        /// The name asked for (SNI and `Host:`).
        host: String,
        /// The path.
        path: String,
        /// What the body must hold.
        expect: String,
        /// The certificate file the server must present.
        cert: String,
    },
    /// A Redis `PING` at `addr` (the cache itself, or through the tunnel to it);
    /// healthy on `+PONG` (or Redis asking for its password, which proves it answers).
    RedisPing {
        /// `host:port`.
        addr: String,
    },
    // New variants go last: postcard numbers variants by position.
    /// A Redis `AUTH` with the password in the node's file `password_file`, then
    /// `PING` (protocol version 2); healthy on `+PONG`, and a refused password is
    /// unhealthy in Redis's own words. The password stays on the nodes that need it
    /// (written there by `apply`), never in a round's request. Without the file yet
    /// (before the `apply` that writes it) it is [`ServiceKind::RedisPing`].
    RedisPingAuth {
        /// `host:port`.
        addr: String,
        /// The owner-only file holding the password, on the node.
        password_file: String,
    },
    /// The node's file `path` (a regular file, never through a link) holds exactly the
    /// bytes whose SHA-256 is `sha256` (protocol version 4: oxAuth's keystore). What
    /// it holds instead is never told, only that it differs, and `fix`.
    FileSha256 {
        /// The file, on the host.
        path: String,
        /// The SHA-256 it must have, lowercase hex.
        sha256: String,
        /// What to do when it differs, in words.
        fix: String,
    },
}

impl CheckSpec {
    /// The protocol version this spec needs.
    pub fn needs_version(&self) -> Option<(u16, &'static str)> {
        if self
            .services
            .iter()
            .any(|s| matches!(s.kind, ServiceKind::FileSha256 { .. }))
        {
            return Some((crate::version::ROTATES_KEYS, "the keystore check"));
        }
        self.services
            .iter()
            .any(|s| matches!(s.kind, ServiceKind::RedisPingAuth { .. }))
            .then_some((
                crate::version::BUILDS_CLUSTER,
                "the Redis check that authenticates",
            ))
    }

    /// The spec as an agent speaking protocol `version` can read it: an older agent
    /// gets the checks it knows (the unauthenticated `PING`, which counts Redis asking
    /// for its password as an answer; no keystore check).
    pub fn for_version(mut self, version: u16) -> CheckSpec {
        if version < crate::version::ROTATES_KEYS {
            self.services
                .retain(|s| !matches!(s.kind, ServiceKind::FileSha256 { .. }));
        }
        if version < crate::version::BUILDS_CLUSTER {
            for s in &mut self.services {
                if let ServiceKind::RedisPingAuth { addr, .. } = &s.kind {
                    s.kind = ServiceKind::RedisPing { addr: addr.clone() };
                }
            }
        }
        self
    }
}

/// A service as the agent found it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceState {
    /// What it is.
    pub label: String,
    /// What answered, or why it failed.
    pub result: Result<String, String>,
}

/// A certificate file on the node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertProbe {
    /// What it is, in words (`cluster TLS certificate`).
    pub label: String,
    /// Where it is on the node.
    pub path: String,
}

/// A watched certificate as the agent read it (one whose file is missing is left
/// out: the software it belongs to is not installed yet).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertState {
    /// The probe.
    pub probe: CertProbe,
    /// Its subject's common name and end of validity (Unix seconds), or why it could
    /// not be read.
    pub result: Result<(String, i64), String>,
}

/// One port of one peer to try.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortProbe {
    /// The peer.
    pub node: String,
    /// Its address (without the port).
    pub host: String,
    /// The port.
    pub port: u16,
}

/// Whether a peer's port answered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortReach {
    /// The probe.
    pub probe: PortProbe,
    /// How long the connection took, milliseconds; or why it failed.
    pub result: Result<u32, String>,
}

/// The node's csync2 as its agent found it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Csync2State {
    /// Whether `/etc/csync2.cfg` exists: before the first `apply` nothing else is
    /// tried.
    pub configured: bool,
    /// Whether the listener (port 30865) accepted a connection; why not otherwise.
    pub listener: Result<(), String>,
    /// Files changed here and not yet sent (`csync2 -cr` then `-M`), at most
    /// [`Csync2State::DIRTY_SHOWN`].
    pub dirty: Vec<Dirty>,
    /// How many files are dirty in all (an entry is a file and a peer).
    pub dirty_total: u32,
    /// When `csync2 -x` last finished without an error, Unix milliseconds.
    pub last_sync_ms: Option<i64>,
    /// The copies csync2 kept in the last day before overwriting a file with a peer's
    /// version (it keeps one at every incoming update; the losing side of an `auto
    /// younger` conflict goes there too), newest first, at most
    /// [`Csync2State::DIRTY_SHOWN`].
    pub kept: Vec<KeptCopy>,
    /// Why the check (`-cr`, `-M`) could not run, when it could not.
    pub error: Option<String>,
}

impl Csync2State {
    /// How many dirty entries and kept copies a report carries by name.
    pub const DIRTY_SHOWN: usize = 20;
}

/// One file waiting to be sent to one peer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dirty {
    /// The peer it waits for.
    pub peer: String,
    /// The file.
    pub path: String,
}

/// A copy csync2 kept before overwriting a file with a peer's version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeptCopy {
    /// Where the copy is.
    pub path: String,
    /// When it was kept, Unix milliseconds.
    pub time_ms: i64,
}

/// What an agent found this round.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckReport {
    /// The agent's clock when it began the round, Unix milliseconds (clock skew).
    pub started_ms: i64,
    /// The node's LDAP server: `None` when the node has none (no Gluu LDAP settings
    /// and no `[ldap]`); `Some(Err)` says why it could not be read.
    pub ldap: Option<Result<LdapState, String>>,
    /// The node's real file systems.
    pub disks: Vec<DiskUse>,
    /// The spec's ports, tried.
    pub ports: Vec<PortReach>,
    /// csync2, when the spec named the node a member.
    pub csync2: Option<Csync2State>,
    /// The watched certificates.
    pub certs: Vec<CertState>,
    /// The services tried.
    pub services: Vec<ServiceState>,
    // New fields go last, each a new protocol version.
}

/// One file system's space.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskUse {
    /// Where it is mounted.
    pub mount: String,
    /// Its usable size, as `df` counts it: used plus available, bytes.
    pub size_bytes: u64,
    /// What is left for writers other than root, bytes.
    pub avail_bytes: u64,
}

/// Which LDAP server a node runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LdapServer {
    /// OpenLDAP (Gluu 3.1 and earlier): syncrepl, `contextCSN`.
    OpenLdap,
    /// OpenDJ (Gluu 4.x): its replication monitor.
    OpenDj,
    /// Something else answering; only the bind and heartbeats are read.
    Other,
}

/// The LDAP facts of one node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LdapState {
    /// Which server.
    pub server: LdapServer,
    /// How long the bind and reads took, milliseconds.
    pub took_ms: u64,
    /// OpenLDAP: the suffix entry's `contextCSN` values, one per serverID that wrote.
    pub csns: Vec<Csn>,
    /// OpenLDAP: the syncrepl consumers' state from `cn=Monitor`.
    pub consumers: Vec<Consumer>,
    /// OpenDJ: the replication domains' monitor entries.
    pub replicas: Vec<OpenDjReplica>,
    /// Every node's heartbeat entry as this node's server holds it.
    pub heartbeats: Vec<Heartbeat>,
    /// Why this node's own heartbeat could not be written this round, if it could not.
    pub heartbeat_error: Option<String>,
}

/// One `contextCSN` value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Csn {
    /// The serverID that made the change (the CSN's third field, hex: `001`).
    pub server_id: String,
    /// The whole CSN (`20261125133015.043388Z#000000#001#000000`): CSNs of one
    /// serverID order as strings.
    pub csn: String,
}

impl Csn {
    /// Parses a CSN value; `None` when it is not one.
    pub fn parse(v: &str) -> Option<Csn> {
        let mut parts = v.split('#');
        let (time, _count, sid, _m) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() || !time.ends_with('Z') || sid.is_empty() {
            return None;
        }
        Some(Csn {
            server_id: sid.to_string(),
            csn: v.to_string(),
        })
    }

    /// The CSN's time, Unix milliseconds.
    pub fn time_ms(&self) -> Option<i64> {
        generalized_time_ms(self.csn.split('#').next()?)
    }
}

/// One syncrepl consumer (`olmSyncReplInstance`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Consumer {
    /// Its name under `cn=Monitor` (`Consumer 002`).
    pub name: String,
    /// The provider it replicates from (`olmSRProviderURIList`).
    pub provider: String,
    /// Whether it holds a connection to the provider (`olmSRConnection` set).
    pub connected: bool,
    /// `olmSRSyncPhase`: `Persist` when following changes live, `Refresh` while
    /// catching up or reconnecting.
    pub phase: String,
    /// `olmSRLastContact`, Unix milliseconds.
    pub last_contact_ms: Option<i64>,
    /// `olmSRNextConnect`, Unix milliseconds, when a reconnect is scheduled.
    pub next_connect_ms: Option<i64>,
}

/// One OpenDJ replication domain as its server's monitor shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenDjReplica {
    /// The monitor entry's DN.
    pub dn: String,
    /// `domain-name`: the replicated base DN (`o=gluu`).
    pub domain: String,
    /// `server-id`.
    pub server_id: String,
    /// `missing-changes`.
    pub missing_changes: Option<i64>,
    /// `approximate-delay`, milliseconds.
    pub approximate_delay_ms: Option<i64>,
    /// `approx-older-change-not-synchronized-millis`: the age of the oldest change
    /// not yet replayed.
    pub oldest_unsynced_ms: Option<i64>,
    /// `generation-id`: replicas of one domain must agree.
    pub generation_id: Option<String>,
    /// `connected-to`: the replication server this replica talks to, if any.
    pub connected_to: Option<String>,
}

/// A node's heartbeat entry as read on one server.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// The node that wrote it.
    pub node: String,
    /// When it wrote it, by its own clock, Unix milliseconds.
    pub written_ms: i64,
    /// When this node read it, by this node's clock.
    pub read_ms: i64,
}

/// LDAP generalized time (`20261125133015.043388Z`, `20261125133015Z`) as Unix
/// milliseconds.
pub fn generalized_time_ms(v: &str) -> Option<i64> {
    let v = v.strip_suffix('Z')?;
    let (whole, frac) = v.split_once('.').unwrap_or((v, ""));
    if whole.len() != 14 || !whole.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n = |r: std::ops::Range<usize>| whole[r].parse::<i64>().ok();
    let (y, mo, d) = (n(0..4)?, n(4..6)?, n(6..8)?);
    let (h, mi, s) = (n(8..10)?, n(10..12)?, n(12..14)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 60 {
        return None;
    }
    // Days from the civil date (Howard Hinnant's algorithm).
    let (yy, mm) = if mo <= 2 {
        (y - 1, mo + 9)
    } else {
        (y, mo - 3)
    };
    let era = yy.div_euclid(400);
    let yoe = yy - era * 400;
    let doy = (153 * mm + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let millis = match frac.len() {
        0 => 0,
        _ => {
            let digits: String = frac.chars().take(3).collect();
            if !frac.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            format!("{digits:0<3}").parse::<i64>().ok()?
        }
    };
    Some(((days * 24 + h) * 60 + mi) * 60_000 + s * 1000 + millis)
}

/// Unix milliseconds as LDAP generalized time with milliseconds
/// (`20261125133015.043Z`), the form Gluu writes `exp` in; the inverse of
/// [`generalized_time_ms`].
pub fn generalized_time(ms: i64) -> String {
    let (days, rest) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
    // The civil date of a day number (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let (h, mi, s, milli) = (
        rest / 3_600_000,
        rest / 60_000 % 60,
        rest / 1000 % 60,
        rest % 1000,
    );
    format!("{y:04}{m:02}{d:02}{h:02}{mi:02}{s:02}.{milli:03}Z")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csns_and_generalized_times_parse() {
        let c = Csn::parse("20261125133015.043388Z#000000#001#000000").unwrap();
        assert_eq!(c.server_id, "001");
        // 2026-11-25T13:30:15.043Z
        assert_eq!(c.time_ms(), Some(1_795_613_415_043));
        assert_eq!(generalized_time_ms("19700101000000Z"), Some(0));
        for ms in [0, 951_868_799_500, 1_795_613_415_043, 4_102_444_800_000] {
            assert_eq!(generalized_time_ms(&generalized_time(ms)), Some(ms), "{ms}");
        }
        assert_eq!(generalized_time(1_795_613_415_043), "20261125133015.043Z");
        assert_eq!(
            generalized_time_ms("20000229235959.5Z"),
            Some(951_868_799_500)
        );
        assert_eq!(
            generalized_time_ms("00000101000000Z").map(|v| v < 0),
            Some(true)
        );
        for bad in [
            "",
            "2026112513301Z",
            "20261325000000Z",
            "20261125133015",
            "2026112513301xZ",
        ] {
            assert_eq!(generalized_time_ms(bad), None, "{bad}");
        }
        for bad in [
            "",
            "x#y",
            "20261125133015Z#0#1",
            "20261125133015Z#0##0",
            "a#b#c#d#e",
        ] {
            assert_eq!(Csn::parse(bad), None, "{bad}");
        }
    }
}
