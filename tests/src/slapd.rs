//! Real OpenLDAP servers for the tests: Debian's slapd, configured through `cn=config`
//! in a temporary directory, listening with plain LDAP and LDAPS (on loopback, or on a
//! harness host's address, its ports 389 and 1636), with the `o=gluu` suffix and the
//! monitor database, as a Gluu 3.1 node's.

use std::net::{Ipv4Addr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The suffix's administrator, as Gluu names it.
pub const ROOT_DN: &str = "cn=directory manager,o=gluu";

/// One running slapd; killed when dropped.
#[derive(Debug)]
pub struct Slapd {
    /// Its directory (config, data, certificate, log).
    pub dir: tempfile::TempDir,
    /// The address it listens on.
    pub ip: Ipv4Addr,
    /// `ldap://IP:PORT`.
    pub ldap_port: u16,
    /// `ldaps://IP:PORT`.
    pub ldaps_port: u16,
    /// The administrator's password.
    pub root_pw: String,
    /// The server certificate (PEM), self-signed for `localhost` and its address.
    pub cert_pem: String,
    /// The prefix that runs it inside a harness host; empty on this machine.
    enter: Vec<String>,
    child: Child,
}

/// A loopback TCP port nobody listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// The Gluu attribute types and object classes the cluster-wide settings live in,
/// written from Gluu's published definitions (community-edition-setup's
/// `schema/gluu_schema.json`: names, syntaxes and matching rules) under Gluu's OID arc
/// (1.3.6.1.4.1.48710.1.3 attributes, .1.4 classes; the numbers are this file's own).
const GLUU_SCHEMA: &str = "dn: cn=gluu,cn=schema,cn=config
objectClass: olcSchemaConfig
cn: gluu
olcAttributeTypes: ( 1.3.6.1.4.1.48710.1.3.9001 NAME 'oxCacheConfiguration' DESC 'Cache configuration' EQUALITY caseIgnoreMatch SUBSTR caseIgnoreSubstringsMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 X-ORIGIN 'Gluu created attribute' )
olcAttributeTypes: ( 1.3.6.1.4.1.48710.1.3.9002 NAME 'oxIDPAuthentication' DESC 'Custom IDP authentication configuration' EQUALITY caseIgnoreMatch SUBSTR caseIgnoreSubstringsMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 X-ORIGIN 'Gluu created attribute' )
olcAttributeTypes: ( 1.3.6.1.4.1.48710.1.3.9003 NAME 'oxRevision' DESC 'Revision' EQUALITY integerMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.27 X-ORIGIN 'Gluu created attribute' )
olcAttributeTypes: ( 1.3.6.1.4.1.48710.1.3.9004 NAME 'gluuHostname' DESC 'The hostname of the Gluu Server instance' EQUALITY caseIgnoreMatch SUBSTR caseIgnoreSubstringsMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 X-ORIGIN 'Gluu created attribute' )
olcAttributeTypes: ( 1.3.6.1.4.1.48710.1.3.9005 NAME 'oxAuthConfDynamic' DESC 'oxAuth Dynamic Configuration' EQUALITY caseIgnoreMatch SUBSTR caseIgnoreSubstringsMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 X-ORIGIN 'Gluu created attribute' )
olcAttributeTypes: ( 1.3.6.1.4.1.48710.1.3.9006 NAME 'exp' DESC 'oxAuth Expiration' EQUALITY generalizedTimeMatch ORDERING generalizedTimeOrderingMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.24 X-ORIGIN 'Gluu created attribute' )
olcAttributeTypes: ( 1.3.6.1.4.1.48710.1.3.9007 NAME 'del' DESC 'del' EQUALITY booleanMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.7 X-ORIGIN 'Gluu created attribute' )
olcAttributeTypes: ( 1.3.6.1.4.1.48710.1.3.9008 NAME 'oxAuthExpiration' DESC 'oxAuth Expiration' EQUALITY generalizedTimeMatch ORDERING generalizedTimeOrderingMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.24 X-ORIGIN 'Gluu created attribute' )
olcAttributeTypes: ( 1.3.6.1.4.1.48710.1.3.9009 NAME 'uuid' DESC 'Unique identifier' EQUALITY caseIgnoreMatch SUBSTR caseIgnoreSubstringsMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 X-ORIGIN 'Gluu created attribute' )
olcAttributeTypes: ( 1.3.6.1.4.1.48710.1.3.9010 NAME 'tknCde' DESC 'oxAuth Token Code' EQUALITY caseIgnoreMatch SUBSTR caseIgnoreSubstringsMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 X-ORIGIN 'Gluu created attribute' )
olcAttributeTypes: ( 1.3.6.1.4.1.48710.1.3.9011 NAME 'oxAuthConfWebKeys' DESC 'oxAuth web keys' EQUALITY caseIgnoreMatch SUBSTR caseIgnoreSubstringsMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 X-ORIGIN 'Gluu created attribute' )
olcObjectClasses: ( 1.3.6.1.4.1.48710.1.4.9001 NAME 'gluuConfiguration' SUP top STRUCTURAL MUST objectClass MAY ( ou $ gluuHostname $ oxCacheConfiguration $ oxIDPAuthentication ) X-ORIGIN 'Gluu created objectclass' )
olcObjectClasses: ( 1.3.6.1.4.1.48710.1.4.9002 NAME 'oxAuthConfiguration' SUP top STRUCTURAL MUST objectClass MAY ( ou $ oxAuthConfDynamic $ oxAuthConfWebKeys $ oxRevision ) X-ORIGIN 'Gluu created objectclass' )
olcObjectClasses: ( 1.3.6.1.4.1.48710.1.4.9003 NAME 'token' SUP top STRUCTURAL MUST objectClass MAY ( exp $ del $ tknCde $ uuid ) X-ORIGIN 'Gluu created objectclass' )
olcObjectClasses: ( 1.3.6.1.4.1.48710.1.4.9004 NAME 'cache' SUP top STRUCTURAL MUST objectClass MAY ( uuid $ exp $ del ) X-ORIGIN 'Gluu created objectclass' )
olcObjectClasses: ( 1.3.6.1.4.1.48710.1.4.9005 NAME 'oxAuthGrant' SUP top STRUCTURAL MUST objectClass MAY ( uuid $ oxAuthExpiration $ del ) X-ORIGIN 'Gluu 3.1 objectclass, with del' )
";

fn config_ldif(dir: &Path, root_pw: &str) -> String {
    let d = dir.display();
    format!(
        "dn: cn=config
objectClass: olcGlobal
cn: config
olcPidFile: {d}/slapd.pid
olcTLSCertificateFile: {d}/server.crt
olcTLSCertificateKeyFile: {d}/server.key

dn: cn=module{{0}},cn=config
objectClass: olcModuleList
cn: module{{0}}
olcModulePath: /usr/lib/ldap
olcModuleLoad: back_mdb
olcModuleLoad: syncprov

dn: cn=schema,cn=config
objectClass: olcSchemaConfig
cn: schema

include: file:///etc/ldap/schema/core.ldif
include: file:///etc/ldap/schema/cosine.ldif
include: file:///etc/ldap/schema/inetorgperson.ldif

{GLUU_SCHEMA}

dn: olcDatabase={{-1}}frontend,cn=config
objectClass: olcDatabaseConfig
objectClass: olcFrontendConfig
olcDatabase: {{-1}}frontend

dn: olcDatabase={{0}}config,cn=config
objectClass: olcDatabaseConfig
olcDatabase: {{0}}config
olcAccess: to * by dn.exact=gidNumber=0+uidNumber=0,cn=peercred,cn=external,cn=auth manage by * break
olcRootDN: cn=admin,cn=config
olcRootPW: {root_pw}

dn: olcDatabase={{1}}mdb,cn=config
objectClass: olcDatabaseConfig
objectClass: olcMdbConfig
olcDatabase: {{1}}mdb
olcSuffix: o=gluu
olcRootDN: {ROOT_DN}
olcRootPW: {root_pw}
olcDbDirectory: {d}/data
olcDbMaxSize: 67108864
olcDbIndex: objectClass eq

dn: olcDatabase={{2}}monitor,cn=config
objectClass: olcDatabaseConfig
olcDatabase: {{2}}monitor
olcAccess: to * by dn.exact=\"{ROOT_DN}\" read by * none
"
    )
}

/// Runs slapd on the configuration in `dir`, in the foreground (so the test owns the
/// process: nsenter execs it), logging to `dir/slapd.log`.
fn spawn(enter: &[String], dir: &Path, ip: Ipv4Addr, ldap_port: u16, ldaps_port: u16) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("slapd.log"))
        .expect("log");
    let mut argv = enter.to_vec();
    argv.push("slapd".into());
    Command::new(&argv[0])
        .args(&argv[1..])
        .arg("-F")
        .arg(dir.join("slapd.d"))
        .arg("-h")
        .arg(format!(
            "ldap://{ip}:{ldap_port}/ ldaps://{ip}:{ldaps_port}/ ldapi://{}",
            dir.join("ldapi")
                .display()
                .to_string()
                .replace('%', "%25")
                .replace('/', "%2F")
        ))
        .args(["-d", "0"])
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("slapd")
}

/// A self-signed certificate for `names` and its key, both PEM.
pub fn self_signed(names: &[&str]) -> (String, String) {
    let key = rcgen::KeyPair::generate().expect("key");
    let cert =
        rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .expect("params")
            .self_signed(&key)
            .expect("certificate");
    (cert.pem(), key.serialize_pem())
}

impl Slapd {
    /// Configures and starts a slapd on loopback, and waits until it accepts
    /// connections.
    pub fn start() -> Slapd {
        Slapd::start_with(Vec::new(), Ipv4Addr::LOCALHOST, free_port(), free_port())
    }

    /// Configures and starts a slapd on a harness host, on its address's ports 389 and
    /// 1636, as a Gluu node's.
    pub fn start_on(host: &crate::netns::Host) -> Slapd {
        Slapd::start_with(host.enter_argv(), host.ip, 389, 1636)
    }

    fn start_with(enter: Vec<String>, ip: Ipv4Addr, ldap_port: u16, ldaps_port: u16) -> Slapd {
        let dir = tempfile::tempdir().expect("tempdir");
        let root_pw = format!("pw-{}", std::process::id());
        let (cert_pem, key_pem) = self_signed(&["localhost", &ip.to_string()]);
        std::fs::write(dir.path().join("server.crt"), &cert_pem).expect("cert");
        std::fs::write(dir.path().join("server.key"), key_pem).expect("key");
        std::fs::create_dir_all(dir.path().join("data")).expect("data dir");
        std::fs::create_dir_all(dir.path().join("slapd.d")).expect("config dir");
        let ldif = dir.path().join("config.ldif");
        std::fs::write(&ldif, config_ldif(dir.path(), &root_pw)).expect("config");
        let out = Command::new("slapadd")
            .args(["-n0", "-F"])
            .arg(dir.path().join("slapd.d"))
            .arg("-l")
            .arg(&ldif)
            .output()
            .expect("slapadd (install slapd: tests/run does)");
        assert!(
            out.status.success(),
            "slapadd of the test configuration failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let child = spawn(&enter, dir.path(), ip, ldap_port, ldaps_port);
        let mut s = Slapd {
            dir,
            ip,
            enter,
            ldap_port,
            ldaps_port,
            root_pw,
            cert_pem,
            child,
        };
        s.wait_ready();
        s
    }

    fn wait_ready(&mut self) {
        crate::eventually_blocking(
            "slapd to accept connections",
            Duration::from_secs(20),
            || {
                TcpStream::connect((self.ip, self.ldap_port)).is_ok()
                    && TcpStream::connect((self.ip, self.ldaps_port)).is_ok()
            },
        );
    }

    /// Starts a killed server again, with its configuration and data, on its ports.
    pub fn restart(&mut self) {
        self.kill();
        self.child = spawn(
            &self.enter,
            self.dir.path(),
            self.ip,
            self.ldap_port,
            self.ldaps_port,
        );
        self.wait_ready();
    }

    /// Plain LDAP.
    pub fn ldap_url(&self) -> String {
        format!("ldap://{}:{}", self.ip, self.ldap_port)
    }

    /// LDAPS, by a name its certificate holds (`localhost` on loopback).
    pub fn ldaps_url(&self) -> String {
        if self.ip.is_loopback() {
            format!("ldaps://localhost:{}", self.ldaps_port)
        } else {
            format!("ldaps://{}:{}", self.ip, self.ldaps_port)
        }
    }

    /// Stops the server for good, keeping its files.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The server's process id (to stop or freeze it).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its log so far, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("slapd.log")).unwrap_or_default()
    }

    /// Its `ldapi://` socket, through which root changes `cn=config` (SASL EXTERNAL).
    pub fn ldapi(&self) -> PathBuf {
        self.dir.path().join("ldapi")
    }

    /// A file in its directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        // A frozen server must be thawed to die of SIGTERM; SIGKILL needs no thaw.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Adds `n` entries `ou=TAG-I,o=gluu` to `s` over one plain connection.
pub fn add_many(s: &Slapd, tag: &str, n: usize) {
    use clustermgr_agent::ldap::client::{Connection, Target};
    let target = Target {
        addr: format!("{}:{}", s.ip, s.ldap_port),
        tls: None,
    };
    let mut c = Connection::open(&target, Duration::from_secs(5)).expect("connect");
    c.bind(ROOT_DN, s.root_pw.as_bytes()).expect("bind");
    for i in 0..n {
        c.add(
            &format!("ou={tag}-{i},o=gluu"),
            &[
                ("objectClass", vec!["organizationalUnit".into()]),
                ("ou", vec![format!("{tag}-{i}")]),
            ],
        )
        .expect("add an entry");
    }
    c.unbind();
}

/// `n` slapds on loopback replicating `o=gluu` to each other: [`replicate`].
pub fn replicating(n: usize) -> Vec<Slapd> {
    replicate((0..n).map(|_| Slapd::start()).collect())
}

/// `servers` replicating `o=gluu` to each other (multi-provider, each a consumer of
/// every other), configured online through `cn=config` as an administrator would:
/// serverIDs, the syncprov overlay, then the consumers, with TCP keepalive so a
/// silently dropped link is noticed in seconds. Returns them once the suffix entry
/// written on the first has reached all.
pub fn replicate(servers: Vec<Slapd>) -> Vec<Slapd> {
    use clustermgr_agent::ldap::client::{Connection, Scope, Target};
    let ids: Vec<String> = servers
        .iter()
        .enumerate()
        .map(|(i, s)| format!("{} {}/", i + 1, s.ldap_url()))
        .collect();
    let open = |s: &Slapd, dn: &str| {
        let target = Target {
            addr: format!("{}:{}", s.ip, s.ldap_port),
            tls: None,
        };
        let mut c = Connection::open(&target, Duration::from_secs(5)).expect("connect");
        c.bind(dn, s.root_pw.as_bytes()).expect("bind");
        c
    };
    for s in &servers {
        let mut c = open(s, "cn=admin,cn=config");
        c.replace("cn=config", &[("olcServerID", ids.clone())])
            .unwrap_or_else(|e| panic!("olcServerID: {e}\n{}", s.log()));
        c.add(
            "olcOverlay=syncprov,olcDatabase={1}mdb,cn=config",
            &[
                (
                    "objectClass",
                    vec!["olcOverlayConfig".into(), "olcSyncProvConfig".into()],
                ),
                ("olcOverlay", vec!["syncprov".into()]),
            ],
        )
        .unwrap_or_else(|e| panic!("syncprov: {e}\n{}", s.log()));
        let consumers: Vec<String> = servers
            .iter()
            .enumerate()
            .map(|(i, p)| {
                format!(
                    "rid={:03} provider={} binddn=\"{ROOT_DN}\" bindmethod=simple credentials={} searchbase=\"o=gluu\" type=refreshAndPersist retry=\"1 +\" timeout=2 network-timeout=2 keepalive=2:2:1",
                    i + 1,
                    p.ldap_url(),
                    p.root_pw
                )
            })
            .collect();
        c.replace(
            "olcDatabase={1}mdb,cn=config",
            &[
                ("olcSyncrepl", consumers),
                ("olcMultiProvider", vec!["TRUE".into()]),
            ],
        )
        .unwrap_or_else(|e| panic!("syncrepl: {e}\n{}", s.log()));
        c.unbind();
    }
    let mut c = open(&servers[0], ROOT_DN);
    c.add(
        "o=gluu",
        &[
            ("objectClass", vec!["organization".into()]),
            ("o", vec!["gluu".into()]),
        ],
    )
    .expect("the suffix entry");
    for s in &servers {
        crate::eventually_blocking(
            "the suffix entry to replicate",
            Duration::from_secs(20),
            || {
                open(s, ROOT_DN)
                    .search("o=gluu", Scope::Base, "(objectClass=*)", &[])
                    .is_ok()
            },
        );
    }
    // A consumer that started before its provider had syncprov retries a second later:
    // wait until every link is live, so tests begin from a settled cluster.
    let now_ms = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64)
    };
    for s in &servers {
        crate::eventually_blocking(
            "every syncrepl consumer to be live",
            Duration::from_secs(20),
            || {
                let mut c = open(s, ROOT_DN);
                clustermgr_agent::health::ldap::state(&mut c, "o=gluu", now_ms).is_ok_and(|st| {
                    st.consumers.len() == servers.len()
                        && st
                            .consumers
                            .iter()
                            .all(|c| c.connected && c.phase == "Persist")
                })
            },
        );
    }
    servers
}
