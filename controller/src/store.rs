//! The inventory store (redb): cluster settings, nodes and their pinned keys, every
//! certificate issued, and the audit log. Telemetry is kept in another file, so one
//! cannot damage the other.
//!
//! Values are versioned postcard bytes (a format byte, then the record), never redb's
//! own typed encodings, so a store written by another release is refused plainly
//! instead of misread. Every change is one redb transaction, committed with fsync
//! before the command reports success: a `kill -9` loses nothing acknowledged.

use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use clustermgr_protocol::changeset::Entry;

use crate::CtlError;
use crate::model::ClusterModel;

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const NODES: TableDefinition<&str, &[u8]> = TableDefinition::new("nodes");
const CERTS: TableDefinition<&str, &[u8]> = TableDefinition::new("certs");
const AUDIT: TableDefinition<u64, &[u8]> = TableDefinition::new("audit");
/// Desired-state configuration: `model` and `secrets`, and the revision counter.
const CONFIG: TableDefinition<&str, &[u8]> = TableDefinition::new("config");
/// What each node last applied, and what is pending for it.
const DESIRED: TableDefinition<&str, &[u8]> = TableDefinition::new("desired");
/// The history of every path an apply or a rollback touched.
const CHANGES: TableDefinition<u64, &[u8]> = TableDefinition::new("changes");

/// The layout of tables and keys. An upgrade that changes it is an explicit, tested
/// migration from the previous value ([`Store::open`]).
const SCHEMA: u32 = 2;

/// The format byte in front of every record.
const RECORD_FORMAT: u8 = 1;

/// Cluster-wide settings, fixed at `init`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterMeta {
    /// The cluster's name.
    pub name: String,
    /// Lifetime of node and controller certificates, in days.
    pub cert_lifetime_days: u32,
    /// When `init` ran, Unix seconds.
    pub created_at: i64,
}

/// What a host does in the cluster.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// A Gluu Server node.
    Gluu,
    /// The nginx load balancer.
    Lb,
    /// The cache (Redis behind stunnel).
    Cache,
}

impl Role {
    /// The role's name on the command line and in output.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Gluu => "gluu",
            Role::Lb => "lb",
            Role::Cache => "cache",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = CtlError;
    fn from_str(s: &str) -> Result<Self, CtlError> {
        match s {
            "gluu" => Ok(Role::Gluu),
            "lb" => Ok(Role::Lb),
            "cache" => Ok(Role::Cache),
            other => Err(CtlError::UnknownRole {
                role: other.to_string(),
            }),
        }
    }
}

/// A node of the cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// Its name, which its certificate carries.
    pub name: String,
    /// Where its agent listens (`host:port`).
    pub address: String,
    /// What it does.
    pub roles: Vec<Role>,
    /// Whether it is the primary Gluu node.
    pub primary: bool,
    /// The agent's public key fingerprint; only this key is accepted for the node.
    pub pinned_key: String,
    /// A key a rekey in progress is moving the pin to: accepted too, and promoted to
    /// the pin as soon as the agent is seen with it (so a lost acknowledgement of the
    /// rekey cannot lock the node out).
    pub pending_key: Option<String>,
    /// Serial of its newest certificate.
    pub cert_serial: String,
    /// Expiry of its newest certificate, Unix seconds.
    pub cert_not_after: i64,
    /// When it was added, Unix seconds.
    pub added_at: i64,
}

impl NodeRecord {
    /// A node with only a name, an address and roles, for unit tests.
    #[cfg(test)]
    pub(crate) fn for_tests(name: &str, address: &str, roles: &[Role]) -> NodeRecord {
        NodeRecord {
            name: name.into(),
            address: address.into(),
            roles: roles.to_vec(),
            primary: false,
            pinned_key: String::new(),
            pending_key: None,
            cert_serial: String::new(),
            cert_not_after: 0,
            added_at: 0,
        }
    }

    /// Whether the node has `role`.
    pub fn has_role(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }
}

/// What a certificate was issued to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CertKind {
    /// The cluster CA.
    Ca,
    /// The controller.
    Controller,
    /// A node's agent.
    Node,
}

/// A certificate the CA issued.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertRecord {
    /// Serial, hex.
    pub serial: String,
    /// To whom.
    pub kind: CertKind,
    /// The node, for node certificates.
    pub node: Option<String>,
    /// Validity start, Unix seconds.
    pub not_before: i64,
    /// Validity end, Unix seconds.
    pub not_after: i64,
    /// Fingerprint of the certified key.
    pub key_fingerprint: String,
    /// When it was revoked, if it was.
    pub revoked_at: Option<i64>,
}

/// One entry of the audit log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// When, Unix milliseconds.
    pub time_ms: i64,
    /// Who (the local user running the command).
    pub user: String,
    /// What (`exec`, `node add`, ...).
    pub action: String,
    /// On which nodes.
    pub nodes: Vec<String>,
    /// The command or other detail.
    pub detail: String,
    /// Per node: the outcome (`exit 0`, `unreachable`, ...). Empty while running.
    pub results: Vec<(String, String)>,
}

/// Secrets of the cluster's configuration: generated by the controller (the csync2
/// key) or given to it (the cluster's TLS certificate and key). Never printed.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigSecrets {
    /// The csync2 group key.
    pub csync2_key: Option<Vec<u8>>,
    /// The cluster's TLS certificate chain, PEM.
    pub tls_cert_pem: Option<String>,
    /// The cluster's TLS key, PEM.
    pub tls_key_pem: Option<String>,
}

impl std::fmt::Debug for ConfigSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigSecrets").finish_non_exhaustive()
    }
}

/// A path a rollback holds at a backup until the desired state changes.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hold {
    /// The path.
    pub path: String,
    /// The desired entry when the rollback ran; a different one ends the hold.
    pub desired: Entry,
    /// The backup generation restored.
    pub generation: u32,
    /// When, Unix milliseconds.
    pub at_ms: i64,
}

/// What a node has of the desired state.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredRecord {
    /// The node.
    pub node: String,
    /// The revision of `applied`.
    pub applied_revision: u64,
    /// The entries the node last applied: what drift is judged against.
    pub applied: Vec<Entry>,
    /// A newer revision it has not received (it was unreachable), for `serve` to send.
    pub pending: Option<(u64, Vec<Entry>)>,
    /// Paths held by a rollback.
    pub holds: Vec<Hold>,
}

// Entries carry secret contents: never in a log line.
impl std::fmt::Debug for DesiredRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DesiredRecord")
            .field("node", &self.node)
            .field("applied_revision", &self.applied_revision)
            .field("pending", &self.pending.as_ref().map(|p| p.0))
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Hold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hold")
            .field("path", &self.path)
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

/// One path changed (or tried) on one node: a line of `clustermgr history`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeRecord {
    /// When, Unix milliseconds.
    pub time_ms: i64,
    /// Who ran it.
    pub user: String,
    /// `apply`, `rollback` or `reconcile` (serve).
    pub action: String,
    /// The desired-state revision (0 for a rollback).
    pub revision: u64,
    /// The node.
    pub node: String,
    /// The path.
    pub path: String,
    /// `create`, `modify`, `metadata`.
    pub change: String,
    /// SHA-256 before.
    pub old_sha256: Option<String>,
    /// SHA-256 after (as intended).
    pub new_sha256: String,
    /// `applied`, `rolled back: WHY`, `failed: WHY`.
    pub result: String,
}

/// The tunnel CA (stunnel and csync2 between the nodes), its revocation list, and the
/// certificates it issued. Its key is a secret: `Debug` never shows it.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TunnelRecord {
    /// The tunnel CA certificate, PEM.
    pub ca_cert_pem: String,
    /// Its key, PEM.
    pub ca_key_pem: String,
    /// The current revocation list, PEM.
    pub crl_pem: String,
    /// Its number.
    pub crl_number: u64,
    /// When it stops being valid, Unix seconds.
    pub crl_next_update: i64,
    /// Issued certificates by `PURPOSE/NODE`: (PEM, serial, key fingerprint).
    pub certs: std::collections::BTreeMap<String, (String, String, String)>,
    /// Revoked serials, with when.
    pub revoked: Vec<(String, i64)>,
}

impl std::fmt::Debug for TunnelRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TunnelRecord")
            .field("certs", &self.certs.keys().collect::<Vec<_>>())
            .field("revoked", &self.revoked.len())
            .finish_non_exhaustive()
    }
}

/// What the controller made to build the cluster (issue 18): the passwords of the
/// services it configures and each Gluu node's LDAP replication identity. A record of
/// its own (not fields of [`ConfigSecrets`]) so stores written before it read unchanged.
/// Its passwords are secrets: `Debug` never shows them.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildRecord {
    /// Whether `apply` sets up LDAP replication (`cluster set ldap-replication`).
    pub ldap_replication: bool,
    /// Each Gluu node's LDAP server certificate (public), as its agent last sent it:
    /// what its peers verify it by.
    pub ldap_certs: std::collections::BTreeMap<String, String>,
    /// The password LDAP consumers bind with to their providers.
    pub replication_password: Option<String>,
    /// The cache host's Redis `requirepass`, also in `oxCacheConfiguration`.
    pub redis_password: Option<String>,
    /// Each Gluu node's LDAP serverID: given once, never reused while the node exists.
    pub server_ids: std::collections::BTreeMap<String, u16>,
    /// The Gluu nodes whose directory holds the cluster's data: the first is the seed
    /// (the primary when replication began); a node joins once its consumers caught up.
    pub joined: Vec<String>,
    /// Gluu nodes `node remove` is taking out: their own replication is stopped (no
    /// consumers; OpenDJ's `disable`) before they leave the inventory.
    pub leaving: Vec<String>,
}

impl std::fmt::Debug for BuildRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BuildRecord")
            .field("ldap_replication", &self.ldap_replication)
            .field("server_ids", &self.server_ids)
            .field("joined", &self.joined)
            .finish_non_exhaustive()
    }
}

/// Where the nodes' packages come from (`cluster set packages`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum PackageSource {
    /// Not managed: the administrator installs them (the default).
    #[default]
    Off,
    /// Each node's own package manager and repositories.
    Repository,
    /// The controller's package directory, uploaded to the nodes.
    Directory,
}

impl PackageSource {
    /// The word `cluster set packages` takes and `cluster show` prints.
    pub fn as_str(self) -> &'static str {
        match self {
            PackageSource::Off => "off",
            PackageSource::Repository => "repository",
            PackageSource::Directory => "directory",
        }
    }
}

/// What provisioning the nodes needs (issue 20): a record of its own, like the build
/// record, so stores and backups written before it read unchanged.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProvisionRecord {
    /// Where packages come from.
    pub packages: PackageSource,
    /// The package directory on the controller (`cluster set package-dir`).
    pub package_dir: Option<String>,
    /// The time servers the nodes' time service uses (`cluster set ntp-servers`).
    pub ntp_servers: Vec<String>,
}

/// The cluster's oxAuth signing and encryption keys (issue 20): the keystore every Gluu
/// node holds (made on the primary by its `keytool`), its password, and every key
/// published. A record of its own, so stores written before it read unchanged. The
/// keystore and the password are secrets: `Debug` shows neither.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeysRecord {
    /// The keystore (JKS); empty before the first rotation.
    pub keystore: Vec<u8>,
    /// Its password, which is also every key's and `keyStoreSecret`.
    pub password: Option<String>,
    /// The keys published, oldest first: those in the keystore and those retired from
    /// it but still published for the tokens they signed.
    pub keys: Vec<KeyRecord>,
    /// The last rotation's number (1 the first).
    pub generation: u64,
    /// When the last rotation was, Unix milliseconds.
    pub rotated_ms: i64,
}

impl std::fmt::Debug for KeysRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeysRecord")
            .field("keystore_len", &self.keystore.len())
            .field("keys", &self.keys)
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

/// One published oxAuth key: its public JWK and where it is in its life.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRecord {
    /// The JWK's `kid`, also its keystore alias.
    pub kid: String,
    /// The JWK's `alg` (`RS256`, `RSA-OAEP`).
    pub alg: String,
    /// The rotation that made it.
    pub generation: u64,
    /// When it was made, Unix milliseconds.
    pub made_ms: i64,
    /// The JWK's `exp`, Unix milliseconds.
    pub exp_ms: i64,
    /// When it left the keystore (it signs no more, and stays published until no
    /// token it signed can still be valid); `None` while in the keystore.
    pub retired_ms: Option<i64>,
    /// The public JWK, JSON.
    pub jwk: String,
}

/// A console account (issue 19): its role, its password as an argon2id PHC string
/// (never the password), and its API tokens as digests. `Debug` shows neither.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
    /// The account's name.
    pub name: String,
    /// What it may do.
    pub role: crate::access::UserRole,
    /// `$argon2id$...`.
    pub password_hash: String,
    /// When it was made, Unix milliseconds.
    pub created_ms: i64,
    /// When its password was last set.
    pub password_set_ms: i64,
    /// Its API tokens.
    pub tokens: Vec<TokenRecord>,
}

impl std::fmt::Debug for UserRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserRecord")
            .field("name", &self.name)
            .field("role", &self.role)
            .field("tokens", &self.tokens.len())
            .finish_non_exhaustive()
    }
}

/// An API token of a console account, kept as the SHA-256 of the token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// Its public name (the digest's first 12 hex digits).
    pub id: String,
    /// The token's SHA-256, hex.
    pub sha256: String,
    /// When it was made, Unix milliseconds.
    pub created_ms: i64,
}

/// The configuration part of a store snapshot.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigSnapshot {
    /// The cluster model.
    pub model: Option<ClusterModel>,
    /// The configuration secrets.
    pub secrets: ConfigSecrets,
    /// The last revision number issued.
    pub revision: u64,
    /// Every node's desired-state record.
    pub desired: Vec<DesiredRecord>,
    /// The whole change history with its numbers.
    pub changes: Vec<(u64, ChangeRecord)>,
    /// The tunnel CA and its certificates.
    pub tunnel: Option<TunnelRecord>,
    /// What the controller made to build the cluster. A backup of contents format 2
    /// lacks it, and is read with its default appended (`crate::archive`).
    pub build: BuildRecord,
    /// The console's accounts. A backup of contents format 3 lacks them, and is read
    /// with none appended.
    pub users: Vec<UserRecord>,
    /// Provisioning's settings. A backup of contents format 4 lacks them, and is read
    /// with the default appended.
    pub provision: ProvisionRecord,
    /// The oxAuth keys. Last: a backup of contents format 5 lacks them, and is read
    /// with none appended.
    pub keys: KeysRecord,
}

/// Every record of a store, read in one transaction: what a backup carries.
///
/// Its fields are the store's own record types, so a change to any of them (a new
/// [`RECORD_FORMAT`]) is also a new backup contents format (see `crate::archive`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreSnapshot {
    /// The cluster settings.
    pub meta: ClusterMeta,
    /// Every node, by name.
    pub nodes: Vec<NodeRecord>,
    /// Every certificate issued, by serial.
    pub certs: Vec<CertRecord>,
    /// The whole audit log with its entry numbers, oldest first.
    pub audit: Vec<(u64, AuditRecord)>,
    /// The desired-state configuration.
    pub config: ConfigSnapshot,
}

fn encode<T: Serialize>(rec: &T) -> Vec<u8> {
    let mut out = vec![RECORD_FORMAT];
    out.extend(clustermgr_protocol::codec::encode(rec));
    out
}

/// The inventory store.
pub struct Store {
    db: Database,
    path: PathBuf,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

impl Store {
    /// Creates a new store holding `meta`.
    pub fn create(path: &Path, meta: &ClusterMeta) -> Result<Store, CtlError> {
        crate::home::private_file(path)?;
        let db = Database::create(path).map_err(|e| store_error(path, e))?;
        let store = Store {
            db,
            path: path.to_path_buf(),
        };
        store.write(|txn| {
            let mut t = txn.open_table(META)?;
            t.insert("schema", SCHEMA.to_le_bytes().as_slice())?;
            t.insert("cluster", encode(meta).as_slice())?;
            txn.open_table(NODES)?;
            txn.open_table(CERTS)?;
            txn.open_table(AUDIT)?;
            create_config_tables(txn)
        })?;
        Ok(store)
    }

    /// Creates a new store holding everything `snapshot` holds, audit entry numbers
    /// included, in one transaction (a restore).
    pub fn restore(path: &Path, snapshot: &StoreSnapshot) -> Result<Store, CtlError> {
        let store = Store::create(path, &snapshot.meta)?;
        store.write(|txn| {
            let mut nodes = txn.open_table(NODES)?;
            for rec in &snapshot.nodes {
                nodes.insert(rec.name.as_str(), encode(rec).as_slice())?;
            }
            let mut certs = txn.open_table(CERTS)?;
            for rec in &snapshot.certs {
                certs.insert(rec.serial.as_str(), encode(rec).as_slice())?;
            }
            let mut audit = txn.open_table(AUDIT)?;
            for (id, rec) in &snapshot.audit {
                audit.insert(*id, encode(rec).as_slice())?;
            }
            let c = &snapshot.config;
            let mut config = txn.open_table(CONFIG)?;
            if let Some(m) = &c.model {
                config.insert("model", encode(m).as_slice())?;
            }
            config.insert("secrets", encode(&c.secrets).as_slice())?;
            config.insert("revision", encode(&c.revision).as_slice())?;
            if let Some(t) = &c.tunnel {
                config.insert("tunnel", encode(t).as_slice())?;
            }
            config.insert("build", encode(&c.build).as_slice())?;
            config.insert("users", encode(&c.users).as_slice())?;
            config.insert("provision", encode(&c.provision).as_slice())?;
            config.insert("keys", encode(&c.keys).as_slice())?;
            let mut desired = txn.open_table(DESIRED)?;
            for rec in &c.desired {
                desired.insert(rec.node.as_str(), encode(rec).as_slice())?;
            }
            let mut changes = txn.open_table(CHANGES)?;
            for (id, rec) in &c.changes {
                changes.insert(*id, encode(rec).as_slice())?;
            }
            Ok(())
        })?;
        Ok(store)
    }

    /// Opens an existing store. `socket` names serve's socket for the message when
    /// another process holds the store.
    pub fn open(path: &Path, socket: &Path) -> Result<Store, CtlError> {
        if path.exists() {
            crate::home::check_owner_only(
                path,
                "a store holding private keys, readable or writable by group or others",
            )?;
        }
        let db = Database::open(path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => CtlError::StoreLocked {
                store: path.to_path_buf(),
                socket: socket.to_path_buf(),
            },
            other => store_error(path, other),
        })?;
        let store = Store {
            db,
            path: path.to_path_buf(),
        };
        let schema = store.read(|txn| {
            let t = txn.open_table(META)?;
            Ok(t.get("schema")?.map(|v| v.value().to_vec()))
        })?;
        let schema = schema
            .and_then(|b| <[u8; 4]>::try_from(b.as_slice()).ok())
            .map(u32::from_le_bytes);
        match schema {
            Some(SCHEMA) => Ok(store),
            Some(1) => {
                // Schema 1 had no configuration tables; adding them is the whole upgrade.
                store.write(|txn| {
                    create_config_tables(txn)?;
                    txn.open_table(META)?
                        .insert("schema", SCHEMA.to_le_bytes().as_slice())?;
                    Ok(())
                })?;
                Ok(store)
            }
            Some(other) => Err(store_error(
                path,
                format!(
                    "its schema is version {other}, this clustermgr reads version {SCHEMA}; use the clustermgr release that wrote it"
                ),
            )),
            None => Err(store_error(
                path,
                "it has no schema version; it is not a clustermgr store",
            )),
        }
    }

    fn write<T>(
        &self,
        f: impl FnOnce(&redb::WriteTransaction) -> Result<T, StoreOpError>,
    ) -> Result<T, CtlError> {
        let txn = self
            .db
            .begin_write()
            .map_err(|e| store_error(&self.path, e))?;
        let out = f(&txn).map_err(|e| e.into_ctl(&self.path))?;
        txn.commit().map_err(|e| store_error(&self.path, e))?;
        Ok(out)
    }

    fn read<T>(
        &self,
        f: impl FnOnce(&redb::ReadTransaction) -> Result<T, StoreOpError>,
    ) -> Result<T, CtlError> {
        let txn = self
            .db
            .begin_read()
            .map_err(|e| store_error(&self.path, e))?;
        f(&txn).map_err(|e| e.into_ctl(&self.path))
    }

    /// The cluster settings.
    pub fn meta(&self) -> Result<ClusterMeta, CtlError> {
        self.read(|txn| {
            let t = txn.open_table(META)?;
            let v = t
                .get("cluster")?
                .ok_or(StoreOpError::Missing("cluster settings"))?;
            decode(v.value())
        })
    }

    /// Every node, by name.
    pub fn nodes(&self) -> Result<Vec<NodeRecord>, CtlError> {
        self.all(NODES)
    }

    /// One node.
    pub fn node(&self, name: &str) -> Result<Option<NodeRecord>, CtlError> {
        self.read(|txn| {
            let t = txn.open_table(NODES)?;
            t.get(name)?.map(|v| decode(v.value())).transpose()
        })
    }

    /// Adds or replaces nodes, all in one transaction.
    pub fn put_nodes(&self, recs: &[NodeRecord]) -> Result<(), CtlError> {
        self.write(|txn| {
            let mut t = txn.open_table(NODES)?;
            for rec in recs {
                t.insert(rec.name.as_str(), encode(rec).as_slice())?;
            }
            Ok(())
        })
    }

    /// Reads every node and writes back the records `f` returns, in one write
    /// transaction: a decision that depends on the other nodes (which one is the
    /// primary) cannot be overtaken by another made meanwhile.
    pub fn update_nodes(
        &self,
        f: impl FnOnce(&[NodeRecord]) -> Vec<NodeRecord>,
    ) -> Result<(), CtlError> {
        self.write(|txn| {
            let mut t = txn.open_table(NODES)?;
            let all = t
                .iter()?
                .map(|r| decode(r?.1.value()))
                .collect::<Result<Vec<NodeRecord>, _>>()?;
            for rec in f(&all) {
                t.insert(rec.name.as_str(), encode(&rec).as_slice())?;
            }
            Ok(())
        })
    }

    /// Removes a node and revokes every certificate issued to it, in one transaction.
    pub fn remove_node(&self, name: &str, now: i64) -> Result<(), CtlError> {
        self.write(|txn| {
            txn.open_table(NODES)?.remove(name)?;
            txn.open_table(DESIRED)?.remove(name)?;
            revoke_where(&mut txn.open_table(CERTS)?, now, |c| {
                c.node.as_deref() == Some(name)
            })
        })
    }

    /// Replaces a node's record after it was enrolled again with a new key, and
    /// revokes the certificates of its other keys, in one transaction.
    pub fn repin(&self, rec: &NodeRecord, now: i64) -> Result<(), CtlError> {
        self.write(|txn| {
            txn.open_table(NODES)?
                .insert(rec.name.as_str(), encode(rec).as_slice())?;
            revoke_where(&mut txn.open_table(CERTS)?, now, |c| {
                c.node.as_deref() == Some(rec.name.as_str()) && c.key_fingerprint != rec.pinned_key
            })
        })
    }

    /// Records an issued certificate.
    pub fn put_cert(&self, rec: &CertRecord) -> Result<(), CtlError> {
        self.write(|txn| {
            txn.open_table(CERTS)?
                .insert(rec.serial.as_str(), encode(rec).as_slice())?;
            Ok(())
        })
    }

    /// Starts a rekey: records the certificate for the node's new key and that key as
    /// the node's pending key, in one transaction, but only if the node is still pinned
    /// to `expected_pin` (it was not removed or rekeyed meanwhile).
    pub fn begin_rekey(
        &self,
        node: &str,
        expected_pin: &str,
        cert: &CertRecord,
    ) -> Result<(), CtlError> {
        self.write(|txn| {
            let mut nodes = txn.open_table(NODES)?;
            let mut rec: NodeRecord = match nodes.get(node)? {
                Some(v) => decode(v.value())?,
                None => return Err(StoreOpError::Changed(format!("{node} was removed"))),
            };
            if rec.pinned_key != expected_pin {
                return Err(StoreOpError::Changed(format!(
                    "{node}'s key changed meanwhile"
                )));
            }
            rec.pending_key = Some(cert.key_fingerprint.clone());
            nodes.insert(node, encode(&rec).as_slice())?;
            txn.open_table(CERTS)?
                .insert(cert.serial.as_str(), encode(cert).as_slice())?;
            Ok(())
        })
    }

    /// Records a certificate the agent now uses and pins its key, in one transaction:
    /// the node points at it, a pending key is settled, and certificates of the node for
    /// any other key are revoked at `now` (after a rekey the old key is no longer the
    /// node). Refused if the node was removed, or if the key is neither its pinned nor
    /// its pending one.
    pub fn complete_renewal(
        &self,
        node: &str,
        cert: &CertRecord,
        now: i64,
    ) -> Result<(), CtlError> {
        self.write(|txn| {
            let mut nodes = txn.open_table(NODES)?;
            let mut rec: NodeRecord = match nodes.get(node)? {
                Some(v) => decode(v.value())?,
                None => return Err(StoreOpError::Changed(format!("{node} was removed"))),
            };
            let key = &cert.key_fingerprint;
            if &rec.pinned_key != key && rec.pending_key.as_ref() != Some(key) {
                return Err(StoreOpError::Changed(format!(
                    "{node} is no longer pinned to {key}"
                )));
            }
            rec.pinned_key = key.clone();
            rec.pending_key = None;
            rec.cert_serial = cert.serial.clone();
            rec.cert_not_after = cert.not_after;
            nodes.insert(node, encode(&rec).as_slice())?;
            let mut certs = txn.open_table(CERTS)?;
            revoke_where(&mut certs, now, |c| {
                c.node.as_deref() == Some(node) && &c.key_fingerprint != key
            })?;
            certs.insert(cert.serial.as_str(), encode(cert).as_slice())?;
            Ok(())
        })
    }

    /// Every certificate issued.
    pub fn certs(&self) -> Result<Vec<CertRecord>, CtlError> {
        self.all(CERTS)
    }

    /// Every record of a table keyed by name, in key order.
    fn all<T: DeserializeOwned>(
        &self,
        table: TableDefinition<&str, &[u8]>,
    ) -> Result<Vec<T>, CtlError> {
        self.read(|txn| records(txn, table))
    }

    /// Every record, as of one moment: a single read transaction, so a change committed
    /// meanwhile (by `serve`, say) is either wholly in it or wholly absent.
    pub fn snapshot(&self) -> Result<StoreSnapshot, CtlError> {
        self.read(|txn| {
            let meta = txn
                .open_table(META)?
                .get("cluster")?
                .ok_or(StoreOpError::Missing("cluster settings"))?;
            let mut audit = Vec::new();
            for r in txn.open_table(AUDIT)?.iter()? {
                let (k, v) = r?;
                audit.push((k.value(), decode(v.value())?));
            }
            let mut changes = Vec::new();
            for r in txn.open_table(CHANGES)?.iter()? {
                let (k, v) = r?;
                changes.push((k.value(), decode(v.value())?));
            }
            let config = txn.open_table(CONFIG)?;
            let get = |key: &str| -> Result<Option<Vec<u8>>, StoreOpError> {
                Ok(config.get(key)?.map(|v| v.value().to_vec()))
            };
            Ok(StoreSnapshot {
                meta: decode(meta.value())?,
                nodes: records(txn, NODES)?,
                certs: records(txn, CERTS)?,
                audit,
                config: ConfigSnapshot {
                    model: get("model")?.map(|b| decode(&b)).transpose()?,
                    secrets: get("secrets")?
                        .map(|b| decode(&b))
                        .transpose()?
                        .unwrap_or_default(),
                    revision: get("revision")?
                        .map(|b| decode(&b))
                        .transpose()?
                        .unwrap_or(0),
                    desired: records(txn, DESIRED)?,
                    changes,
                    tunnel: get("tunnel")?.map(|b| decode(&b)).transpose()?,
                    build: get("build")?
                        .map(|b| decode(&b))
                        .transpose()?
                        .unwrap_or_default(),
                    users: get("users")?
                        .map(|b| decode(&b))
                        .transpose()?
                        .unwrap_or_default(),
                    provision: get("provision")?
                        .map(|b| decode(&b))
                        .transpose()?
                        .unwrap_or_default(),
                    keys: get("keys")?
                        .map(|b| decode(&b))
                        .transpose()?
                        .unwrap_or_default(),
                },
            })
        })
    }

    /// Appends an audit entry and returns its number.
    pub fn audit_append(&self, rec: &AuditRecord) -> Result<u64, CtlError> {
        self.write(|txn| {
            let mut t = txn.open_table(AUDIT)?;
            let id = t.last()?.map(|(k, _)| k.value() + 1).unwrap_or(1);
            t.insert(id, encode(rec).as_slice())?;
            Ok(id)
        })
    }

    /// Replaces audit entry `id` (to add the results of a finished command).
    pub fn audit_update(&self, id: u64, rec: &AuditRecord) -> Result<(), CtlError> {
        self.write(|txn| {
            txn.open_table(AUDIT)?.insert(id, encode(rec).as_slice())?;
            Ok(())
        })
    }

    /// The newest `limit` audit entries, oldest first.
    pub fn audit(&self, limit: usize) -> Result<Vec<(u64, AuditRecord)>, CtlError> {
        self.read(|txn| {
            let t = txn.open_table(AUDIT)?;
            let mut out = Vec::new();
            for r in t.iter()?.rev().take(limit) {
                let (k, v) = r?;
                out.push((k.value(), decode(v.value())?));
            }
            out.reverse();
            Ok(out)
        })
    }
}

fn create_config_tables(txn: &redb::WriteTransaction) -> Result<(), StoreOpError> {
    txn.open_table(CONFIG)?;
    txn.open_table(DESIRED)?;
    txn.open_table(CHANGES)?;
    Ok(())
}

impl Store {
    /// The cluster model (the defaults until `cluster set` first runs).
    pub fn model(&self) -> Result<ClusterModel, CtlError> {
        self.read(|txn| {
            let t = txn.open_table(CONFIG)?;
            t.get("model")?
                .map(|v| decode(v.value()))
                .transpose()
                .map(Option::unwrap_or_default)
        })
    }

    /// Changes the cluster model with `f`, in one transaction; returns the new model.
    pub fn update_model(
        &self,
        f: impl FnOnce(&mut ClusterModel) -> Result<(), CtlError>,
    ) -> Result<ClusterModel, CtlError> {
        let mut failed = None;
        let out = self.write(|txn| {
            let mut t = txn.open_table(CONFIG)?;
            let mut model: ClusterModel = t
                .get("model")?
                .map(|v| decode(v.value()))
                .transpose()?
                .unwrap_or_default();
            if let Err(e) = f(&mut model) {
                failed = Some(e);
                return Ok(model);
            }
            t.insert("model", encode(&model).as_slice())?;
            Ok(model)
        });
        match failed {
            Some(e) => Err(e),
            None => out,
        }
    }

    /// The configuration secrets.
    pub fn secrets(&self) -> Result<ConfigSecrets, CtlError> {
        self.read(|txn| {
            let t = txn.open_table(CONFIG)?;
            t.get("secrets")?
                .map(|v| decode(v.value()))
                .transpose()
                .map(Option::unwrap_or_default)
        })
    }

    /// Changes the configuration secrets with `f`, in one transaction.
    pub fn update_secrets(
        &self,
        f: impl FnOnce(&mut ConfigSecrets),
    ) -> Result<ConfigSecrets, CtlError> {
        self.write(|txn| {
            let mut t = txn.open_table(CONFIG)?;
            let mut s: ConfigSecrets = t
                .get("secrets")?
                .map(|v| decode(v.value()))
                .transpose()?
                .unwrap_or_default();
            f(&mut s);
            t.insert("secrets", encode(&s).as_slice())?;
            Ok(s)
        })
    }

    /// What the controller made to build the cluster.
    pub fn build(&self) -> Result<BuildRecord, CtlError> {
        self.read(|txn| {
            let t = txn.open_table(CONFIG)?;
            t.get("build")?
                .map(|v| decode(v.value()))
                .transpose()
                .map(Option::unwrap_or_default)
        })
    }

    /// Changes the build record with `f`, in one transaction (two applies giving
    /// serverIDs at once cannot give one twice).
    pub fn update_build<T>(&self, f: impl FnOnce(&mut BuildRecord) -> T) -> Result<T, CtlError> {
        self.write(|txn| {
            let mut t = txn.open_table(CONFIG)?;
            let mut rec: BuildRecord = t
                .get("build")?
                .map(|v| decode(v.value()))
                .transpose()?
                .unwrap_or_default();
            let out = f(&mut rec);
            t.insert("build", encode(&rec).as_slice())?;
            Ok(out)
        })
    }

    /// Provisioning's settings.
    pub fn provision(&self) -> Result<ProvisionRecord, CtlError> {
        self.config_record("provision")
    }

    /// Changes provisioning's settings with `f`, in one transaction.
    pub fn update_provision(
        &self,
        f: impl FnOnce(&mut ProvisionRecord) -> Result<(), CtlError>,
    ) -> Result<ProvisionRecord, CtlError> {
        self.update_config_record("provision", |rec: &mut ProvisionRecord| {
            f(rec).map(|()| rec.clone())
        })
    }

    /// The cluster's oxAuth keys.
    pub fn keys(&self) -> Result<KeysRecord, CtlError> {
        self.config_record("keys")
    }

    /// Changes the keys record with `f`, in one transaction; nothing is written when
    /// `f` fails.
    pub fn update_keys<T>(
        &self,
        f: impl FnOnce(&mut KeysRecord) -> Result<T, CtlError>,
    ) -> Result<T, CtlError> {
        self.update_config_record("keys", f)
    }

    /// A record of the configuration table kept under `key`, its default when absent.
    fn config_record<R: serde::de::DeserializeOwned + Default>(
        &self,
        key: &str,
    ) -> Result<R, CtlError> {
        self.read(|txn| {
            let t = txn.open_table(CONFIG)?;
            t.get(key)?
                .map(|v| decode(v.value()))
                .transpose()
                .map(Option::unwrap_or_default)
        })
    }

    /// Changes the record under `key` with `f` in one transaction, writing it only
    /// when `f` succeeds.
    fn update_config_record<R, T>(
        &self,
        key: &str,
        f: impl FnOnce(&mut R) -> Result<T, CtlError>,
    ) -> Result<T, CtlError>
    where
        R: Serialize + serde::de::DeserializeOwned + Default,
    {
        let mut failed = None;
        let out = self.write(|txn| {
            let mut t = txn.open_table(CONFIG)?;
            let mut rec: R = t
                .get(key)?
                .map(|v| decode(v.value()))
                .transpose()?
                .unwrap_or_default();
            match f(&mut rec) {
                Ok(out) => {
                    t.insert(key, encode(&rec).as_slice())?;
                    Ok(Some(out))
                }
                Err(e) => {
                    failed = Some(e);
                    Ok(None)
                }
            }
        })?;
        match (failed, out) {
            (Some(e), _) => Err(e),
            (None, Some(out)) => Ok(out),
            (None, None) => unreachable!("a record change either fails or gives its result"),
        }
    }

    /// The console's accounts, by name.
    pub fn users(&self) -> Result<Vec<UserRecord>, CtlError> {
        self.read(|txn| {
            let t = txn.open_table(CONFIG)?;
            t.get("users")?
                .map(|v| decode(v.value()))
                .transpose()
                .map(Option::unwrap_or_default)
        })
    }

    /// Changes the accounts with `f`, in one transaction; an error from `f` writes
    /// nothing.
    pub fn update_users<T>(
        &self,
        f: impl FnOnce(&mut Vec<UserRecord>) -> Result<T, CtlError>,
    ) -> Result<T, CtlError> {
        let mut failed = None;
        let out = self.write(|txn| {
            let mut t = txn.open_table(CONFIG)?;
            let mut users: Vec<UserRecord> = t
                .get("users")?
                .map(|v| decode(v.value()))
                .transpose()?
                .unwrap_or_default();
            match f(&mut users) {
                Ok(out) => {
                    users.sort_by(|a, b| a.name.cmp(&b.name));
                    t.insert("users", encode(&users).as_slice())?;
                    Ok(Some(out))
                }
                Err(e) => {
                    failed = Some(e);
                    Ok(None)
                }
            }
        })?;
        match (out, failed) {
            (Some(out), _) => Ok(out),
            (None, Some(e)) => Err(e),
            (None, None) => unreachable!("f either returned or failed"),
        }
    }

    /// The tunnel CA record, once made.
    pub fn tunnel(&self) -> Result<Option<TunnelRecord>, CtlError> {
        self.read(|txn| {
            let t = txn.open_table(CONFIG)?;
            t.get("tunnel")?.map(|v| decode(v.value())).transpose()
        })
    }

    /// Changes the tunnel CA record (`None` until it is made) with `f`, in one
    /// transaction, so two applies issuing certificates at once cannot lose one.
    pub fn update_tunnel(
        &self,
        f: impl FnOnce(&mut Option<TunnelRecord>) -> Result<(), CtlError>,
    ) -> Result<(), CtlError> {
        let mut failed = None;
        let out = self.write(|txn| {
            let mut t = txn.open_table(CONFIG)?;
            let mut rec: Option<TunnelRecord> =
                t.get("tunnel")?.map(|v| decode(v.value())).transpose()?;
            if let Err(e) = f(&mut rec) {
                failed = Some(e);
                return Ok(());
            }
            if let Some(rec) = &rec {
                t.insert("tunnel", encode(rec).as_slice())?;
            }
            Ok(())
        });
        match failed {
            Some(e) => Err(e),
            None => out,
        }
    }

    /// Issues the next desired-state revision number.
    pub fn next_revision(&self) -> Result<u64, CtlError> {
        self.raise_revision(0)
    }

    /// Makes the next revision at least `floor + 1`, and returns it: a node that applied
    /// revision `floor` (from a store since restored from an older backup) must accept
    /// the next apply.
    pub fn raise_revision(&self, floor: u64) -> Result<u64, CtlError> {
        self.write(|txn| {
            let mut t = txn.open_table(CONFIG)?;
            let last: u64 = t
                .get("revision")?
                .map(|v| decode(v.value()))
                .transpose()?
                .unwrap_or(0);
            let next = last.max(floor) + 1;
            t.insert("revision", encode(&next).as_slice())?;
            Ok(next)
        })
    }

    /// A node's desired-state record (empty if it never had one).
    pub fn desired(&self, node: &str) -> Result<DesiredRecord, CtlError> {
        self.read(|txn| {
            let t = txn.open_table(DESIRED)?;
            Ok(t.get(node)?
                .map(|v| decode(v.value()))
                .transpose()?
                .unwrap_or_else(|| DesiredRecord {
                    node: node.to_string(),
                    ..DesiredRecord::default()
                }))
        })
    }

    /// Every node's desired-state record.
    pub fn all_desired(&self) -> Result<Vec<DesiredRecord>, CtlError> {
        self.all(DESIRED)
    }

    /// Stores a node's record and appends its history lines, in one transaction.
    pub fn record_desired(
        &self,
        rec: &DesiredRecord,
        changes: &[ChangeRecord],
    ) -> Result<(), CtlError> {
        self.write(|txn| {
            txn.open_table(DESIRED)?
                .insert(rec.node.as_str(), encode(rec).as_slice())?;
            let mut t = txn.open_table(CHANGES)?;
            let first = t.last()?.map(|(k, _)| k.value() + 1).unwrap_or(1);
            for (id, c) in (first..).zip(changes) {
                t.insert(id, encode(c).as_slice())?;
            }
            Ok(())
        })
    }

    /// The newest `limit` history lines that `keep` selects, oldest first.
    pub fn changes(
        &self,
        limit: usize,
        keep: impl Fn(&ChangeRecord) -> bool,
    ) -> Result<Vec<(u64, ChangeRecord)>, CtlError> {
        self.read(|txn| {
            let t = txn.open_table(CHANGES)?;
            let mut out = Vec::new();
            for r in t.iter()?.rev() {
                if out.len() >= limit {
                    break;
                }
                let (k, v) = r?;
                let rec: ChangeRecord = decode(v.value())?;
                if keep(&rec) {
                    out.push((k.value(), rec));
                }
            }
            out.reverse();
            Ok(out)
        })
    }
}

/// Every record of a table keyed by name, in key order, within `txn`.
fn records<T: DeserializeOwned>(
    txn: &redb::ReadTransaction,
    table: TableDefinition<&str, &[u8]>,
) -> Result<Vec<T>, StoreOpError> {
    txn.open_table(table)?
        .iter()?
        .map(|r| decode(r?.1.value()))
        .collect()
}

/// Revokes, at `now`, every unrevoked certificate that `pick` selects.
fn revoke_where(
    certs: &mut redb::Table<&str, &[u8]>,
    now: i64,
    pick: impl Fn(&CertRecord) -> bool,
) -> Result<(), StoreOpError> {
    let mut revoke = Vec::new();
    for r in certs.iter()? {
        let (k, v) = r?;
        let mut rec: CertRecord = decode(v.value())?;
        if rec.revoked_at.is_none() && pick(&rec) {
            rec.revoked_at = Some(now);
            revoke.push((k.value().to_string(), rec));
        }
    }
    for (k, rec) in revoke {
        certs.insert(k.as_str(), encode(&rec).as_slice())?;
    }
    Ok(())
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreOpError> {
    match bytes.split_first() {
        Some((&RECORD_FORMAT, rest)) => clustermgr_protocol::codec::decode("store record", rest)
            .map_err(|e| StoreOpError::Corrupt(e.to_string())),
        Some((other, _)) => Err(StoreOpError::Corrupt(format!(
            "a record has format {other}, this clustermgr reads format {RECORD_FORMAT}; use the release that wrote it"
        ))),
        None => Err(StoreOpError::Corrupt("an empty record".into())),
    }
}

/// Errors inside a transaction, converted to [`CtlError`] with the store's path.
#[derive(Debug)]
enum StoreOpError {
    Redb(String),
    Corrupt(String),
    Missing(&'static str),
    /// A conditional change found the record changed by someone else.
    Changed(String),
}

impl StoreOpError {
    fn into_ctl(self, path: &Path) -> CtlError {
        match self {
            StoreOpError::Changed(m) => CtlError::StoreChanged(m),
            StoreOpError::Redb(m) | StoreOpError::Corrupt(m) => store_error(path, m),
            StoreOpError::Missing(what) => store_error(path, format!("the {what} are missing")),
        }
    }
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreOpError {
            fn from(e: $t) -> Self {
                StoreOpError::Redb(e.to_string())
            }
        }
    )*};
}
from_redb!(redb::TableError, redb::StorageError);

fn store_error(path: &Path, e: impl std::fmt::Display) -> CtlError {
    CtlError::Store {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str) -> NodeRecord {
        NodeRecord {
            name: name.into(),
            address: "127.0.0.1:7443".into(),
            roles: vec![Role::Gluu],
            primary: false,
            pinned_key: "sha256:00".into(),
            pending_key: None,
            cert_serial: "01".into(),
            cert_not_after: 0,
            added_at: 0,
        }
    }

    fn meta() -> ClusterMeta {
        ClusterMeta {
            name: "c".into(),
            cert_lifetime_days: 90,
            created_at: 1,
        }
    }

    fn cert(serial: &str, node: &str, key: &str) -> CertRecord {
        CertRecord {
            serial: serial.into(),
            kind: CertKind::Node,
            node: Some(node.into()),
            not_before: 0,
            not_after: 10,
            key_fingerprint: key.into(),
            revoked_at: None,
        }
    }

    #[test]
    fn renewals_change_a_node_only_as_expected() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::create(&tmp.path().join("s.redb"), &meta()).unwrap();
        store.put_nodes(&[node("a")]).unwrap();
        store.put_cert(&cert("01", "a", "sha256:00")).unwrap();
        // A rekey must start from the pin it saw.
        let err = store.begin_rekey("a", "sha256:ff", &cert("02", "a", "sha256:11"));
        assert!(matches!(err, Err(CtlError::StoreChanged(_))));
        store
            .begin_rekey("a", "sha256:00", &cert("02", "a", "sha256:11"))
            .unwrap();
        assert_eq!(
            store.node("a").unwrap().unwrap().pending_key.as_deref(),
            Some("sha256:11")
        );
        // Completing with an unrelated key is refused; with the pending one, it pins it.
        let err = store.complete_renewal("a", &cert("03", "a", "sha256:22"), 5);
        assert!(matches!(err, Err(CtlError::StoreChanged(_))));
        store
            .complete_renewal("a", &cert("02", "a", "sha256:11"), 5)
            .unwrap();
        let a = store.node("a").unwrap().unwrap();
        assert_eq!((a.pinned_key.as_str(), a.pending_key), ("sha256:11", None));
        let old = store
            .certs()
            .unwrap()
            .into_iter()
            .find(|c| c.serial == "01")
            .unwrap();
        assert_eq!(old.revoked_at, Some(5));
        // A removed node is never written back.
        store.remove_node("a", 6).unwrap();
        let err = store.complete_renewal("a", &cert("04", "a", "sha256:11"), 7);
        assert!(matches!(err, Err(CtlError::StoreChanged(_))));
        assert!(store.node("a").unwrap().is_none());
    }

    #[test]
    fn records_round_trip_and_removal_revokes() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("s.redb");
        let meta = meta();
        let store = Store::create(&path, &meta).unwrap();
        store.put_nodes(&[node("a"), node("b")]).unwrap();
        store.put_cert(&cert("01", "a", "sha256:00")).unwrap();
        store.remove_node("a", 42).unwrap();
        drop(store);
        let store = Store::open(&path, Path::new("sock")).unwrap();
        assert_eq!(store.meta().unwrap(), meta);
        assert_eq!(store.nodes().unwrap(), vec![node("b")]);
        assert_eq!(store.certs().unwrap()[0].revoked_at, Some(42));
    }

    #[test]
    fn a_snapshot_restores_every_record_with_its_audit_numbers() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::create(&tmp.path().join("a.redb"), &meta()).unwrap();
        store.put_nodes(&[node("a"), node("b")]).unwrap();
        store.put_cert(&cert("01", "a", "sha256:00")).unwrap();
        let entry = |action: &str| AuditRecord {
            time_ms: 1,
            user: "u".into(),
            action: action.into(),
            nodes: vec!["a".into()],
            detail: String::new(),
            results: vec![("a".into(), "exit 0".into())],
        };
        for action in ["node add", "exec", "backup"] {
            store.audit_append(&entry(action)).unwrap();
        }
        let snapshot = store.snapshot().unwrap();
        assert_eq!(snapshot.audit.len(), 3);
        let path = tmp.path().join("b.redb");
        drop(Store::restore(&path, &snapshot).unwrap());
        let restored = Store::open(&path, Path::new("sock")).unwrap();
        assert_eq!(restored.snapshot().unwrap(), snapshot);
        // Numbering carries on after the restored entries.
        assert_eq!(restored.audit_append(&entry("restore")).unwrap(), 4);
    }

    #[test]
    fn a_second_opener_is_told_the_store_is_locked() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("s.redb");
        let meta = meta();
        let _held = Store::create(&path, &meta).unwrap();
        let err = Store::open(&path, Path::new("/x/serve.sock")).unwrap_err();
        assert!(matches!(err, CtlError::StoreLocked { .. }), "{err}");
    }

    #[test]
    fn a_record_of_an_unknown_format_is_refused_not_misread() {
        let err = decode::<ClusterMeta>(&[9, 1, 2]).unwrap_err();
        assert!(matches!(err, StoreOpError::Corrupt(m) if m.contains("format 9")));
    }

    #[test]
    fn a_schema_1_store_gains_the_config_tables_on_open() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("store.redb");
        let store = Store::create(&path, &meta()).unwrap();
        store.put_nodes(&[node("a")]).unwrap();
        // Make it what schema 1 wrote: no configuration tables.
        store
            .write(|txn| {
                txn.delete_table(CONFIG)?;
                txn.delete_table(DESIRED)?;
                txn.delete_table(CHANGES)?;
                txn.open_table(META)?
                    .insert("schema", 1u32.to_le_bytes().as_slice())?;
                Ok(())
            })
            .unwrap();
        drop(store);
        let store = Store::open(&path, Path::new("sock")).unwrap();
        assert_eq!(store.nodes().unwrap().len(), 1);
        assert_eq!(store.model().unwrap(), ClusterModel::default());
        assert_eq!(store.next_revision().unwrap(), 1);
        assert!(store.snapshot().unwrap().config.desired.is_empty());
        drop(store);
        // And it stays upgraded.
        Store::open(&path, Path::new("sock")).unwrap();
    }

    #[test]
    fn revisions_only_grow_and_a_node_ahead_raises_them() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::create(&tmp.path().join("a.redb"), &meta()).unwrap();
        assert_eq!(store.next_revision().unwrap(), 1);
        assert_eq!(store.next_revision().unwrap(), 2);
        // A node applied 40 from a store since restored: the next one passes it.
        assert_eq!(store.raise_revision(40).unwrap(), 41);
        assert_eq!(store.next_revision().unwrap(), 42);
        // A lower floor never lowers them.
        assert_eq!(store.raise_revision(3).unwrap(), 43);
    }

    #[test]
    fn desired_records_and_history_survive_a_snapshot_restore() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::create(&tmp.path().join("a.redb"), &meta()).unwrap();
        store
            .update_model(|m| m.set("hostname", "idp.example.org"))
            .unwrap();
        store
            .update_secrets(|s| s.csync2_key = Some(b"k".to_vec()))
            .unwrap();
        let rec = DesiredRecord {
            node: "a".into(),
            applied_revision: 3,
            ..DesiredRecord::default()
        };
        let change = ChangeRecord {
            time_ms: 1,
            user: "u".into(),
            action: "apply".into(),
            revision: 3,
            node: "a".into(),
            path: "/etc/x".into(),
            change: "create".into(),
            old_sha256: None,
            new_sha256: "00".into(),
            result: "applied".into(),
        };
        store
            .record_desired(&rec, std::slice::from_ref(&change))
            .unwrap();
        let snap = store.snapshot().unwrap();
        let copy = Store::restore(&tmp.path().join("b.redb"), &snap).unwrap();
        assert_eq!(copy.snapshot().unwrap(), snap);
        assert_eq!(copy.desired("a").unwrap(), rec);
        assert_eq!(copy.changes(10, |_| true).unwrap(), vec![(1, change)]);
        // A refused model change leaves the model alone.
        assert!(copy.update_model(|m| m.set("cache", "memcached")).is_err());
        assert_eq!(
            copy.model().unwrap().hostname.as_deref(),
            Some("idp.example.org")
        );
    }
}
