//! Desired-state configuration on the wire: the change set the controller sends a node,
//! and what the agent answers when it plans, applies or restores one.
//!
//! The agent computes every answer with one routine (stage the entries, compare them
//! with the disk), so a plan never claims a change that an apply would not make. Secret
//! entries travel with their content (inside the TLS connection) but nothing the agent
//! sends back carries it: only hashes.

use serde::{Deserialize, Serialize};

use crate::message::Command;

/// What one node should have: whole files and edits of files it owns.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeSet {
    /// The controller's desired-state revision (0 for a one-off such as a restore).
    pub revision: u64,
    /// The entries, applied together: all of them or none.
    pub entries: Vec<Entry>,
    /// Who asked, for the agent's journal (`user@controller`).
    pub requested_by: String,
}

/// One path of a change set.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Absolute, normalized path, inside `scope`.
    pub path: String,
    /// Where the path (and the validator and actions) live.
    pub scope: Scope,
    /// What the path should hold.
    pub content: Content,
    /// Its content never appears in a plan, a diff, a log or the history: only a hash.
    pub secret: bool,
    /// Run once the whole set is in place, before any action; failure rolls back.
    pub validate: Option<Validator>,
    /// Run when this entry changed, after every validator passed; each action runs once
    /// per set however many entries name it.
    pub on_change: Vec<Action>,
}

/// Where an entry's path, validator and actions live.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Scope {
    /// The host itself.
    Host,
    /// Inside the Gluu container whose root directory (on the host) is given. Paths
    /// and symlinks are resolved inside it, commands run chrooted into it.
    Container {
        /// The container root on the host (`/opt/gluu-server`).
        root: String,
    },
}

/// What an entry's path should hold. Its `Debug` shows a file's length and hash, never
/// its bytes (they may be a key).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Content {
    /// The whole file.
    File {
        /// Its bytes.
        bytes: Vec<u8>,
        /// Permission bits (`0o644`).
        mode: u32,
        /// Owner name (or number), looked up in the scope's `/etc/passwd`; `None`
        /// leaves an existing file's owner and gives a new one the agent's.
        owner: Option<String>,
        /// Group, like `owner`.
        group: Option<String>,
    },
    /// One `key: value` (or `key=value`) line of a properties file; the rest of the
    /// file is never read by the controller. The line is appended if the key is absent.
    /// A missing file is left alone (the edit waits until the file exists).
    Property {
        /// The key.
        key: String,
        /// The value.
        value: String,
    },
    /// A block between `# BEGIN clustermgr NAME` and `# END clustermgr NAME` lines,
    /// appended if absent; the rest of the file is left alone.
    Block {
        /// The marker's name.
        name: String,
        /// The lines between the markers (each ending in a newline).
        body: String,
    },
    // New variants go last: postcard numbers variants by position.
    /// An attribute of an entry of the node's LDAP server (protocol version 2). The
    /// entry's `path` is [`LdapAttr::path`]; the scope says where the server's socket
    /// and files are (on the host, or in the container).
    Ldap(Box<LdapAttr>),
    /// OpenDJ replication of this node with its peers (Gluu 3.1.4+ and 4.x; protocol
    /// version 2), driven with OpenDJ's own tools in the container, passwords in
    /// owner-only files, never in arguments. Its path is [`OPENDJ_PATH`].
    OpenDj(Box<OpenDjReplication>),
    /// A package the node must have (protocol version 3). Its path is
    /// `package:NAME`. Installed with the node's own tools, before any file of the set
    /// is staged; never removed by clustermgr.
    Package(Box<PackageSpec>),
}

/// A package a node must have: the first of its names for the node's family is
/// installed when none of them is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageSpec {
    /// What it is for, the entry's path after `package:` (`nginx`, `time`).
    pub name: String,
    /// Its Debian and Ubuntu package names (`chrony`, or a time service already there:
    /// `ntp`, `systemd-timesyncd`).
    pub deb: Vec<String>,
    /// Its names on Red Hat's family.
    pub rpm: Vec<String>,
    /// The controller's package directory, whose files the node resolves the package
    /// and what it needs from; empty: the node's own repositories.
    pub files: Vec<PackageFile>,
}

impl PackageSpec {
    /// The entry path of a package.
    pub fn path(name: &str) -> String {
        format!("package:{name}")
    }
}

/// A file of the controller's package directory.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PackageFile {
    /// Its name in the directory (`nginx_1.22.1-9_amd64.deb`).
    pub file: String,
    /// Its length.
    pub size: u64,
    /// Its SHA-256, lowercase hex; the node keeps it only if the bytes match.
    pub sha256: String,
}

impl std::fmt::Debug for OpenDjReplication {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenDjReplication")
            .field("host", &self.host)
            .field("peers", &self.peers)
            .field("base_dns", &self.base_dns)
            .field("join", &self.join)
            .field("leave", &self.leave)
            .finish_non_exhaustive()
    }
}

/// The path of the OpenDJ replication entry.
pub const OPENDJ_PATH: &str = "opendj:replication";

/// What OpenDJ replication a node should have. Its `Debug` leaves the password out.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenDjReplication {
    /// This node, as its peers reach its admin port.
    pub host: String,
    /// The peers it replicates with (the nodes that hold the cluster's data).
    pub peers: Vec<String>,
    /// The replicated base DNs (`o=gluu`, `o=site`).
    pub base_dns: Vec<String>,
    /// The replication administrator's password (`admin`), made by the controller.
    pub admin_password: String,
    /// A node not yet holding the cluster's data: once enabled, it is initialized from
    /// its first peer (never a peer from it).
    pub join: bool,
    /// A node leaving the cluster: its replication is disabled (`--disableAll`).
    pub leave: bool,
}

/// One attribute (or one field of a JSON attribute) of one LDAP entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LdapAttr {
    /// Which entry.
    pub object: LdapObject,
    /// The attribute's name.
    pub attribute: String,
    /// What it should hold.
    pub value: LdapValue,
    /// The entry's attributes, when it may be created if absent (the syncprov overlay);
    /// empty: an absent entry waits, like an edit of an absent file.
    pub create: Vec<(String, Vec<String>)>,
    /// Words whose values a plan shows as hashes: `olcSyncrepl` keywords
    /// (`credentials`) and JSON fields (`password`), wherever they appear.
    pub redact: Vec<String>,
    /// After a change, the entry whose `oxRevision` is incremented so Gluu's
    /// applications reload their configuration.
    pub bump_revision: Option<String>,
    /// When set on a database's `olcSyncrepl`: the first time this node replicates,
    /// its own directory under the suffix is emptied first, so the cluster's replaces
    /// it (never the reverse); then the apply waits until the consumers caught up.
    pub join: bool,
    /// A [`LdapValue::JsonField`] holding a password Gluu keeps encrypted with the
    /// node's own key (`etc/gluu/conf/salt`): the agent encrypts it there, so the key
    /// never leaves the node.
    pub encrypt: bool,
}

/// Which LDAP entry, and so which connection: `cn=config` entries through the
/// server's `ldapi://` socket as root (SASL EXTERNAL), data entries bound as the
/// node's Gluu administrator.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum LdapObject {
    /// An entry of the directory's data (`ou=configuration,o=gluu`).
    Data {
        /// Its DN.
        dn: String,
    },
    /// An entry of `cn=config` by DN (`cn=config`, `cn=module{0},cn=config`).
    Config {
        /// Its DN.
        dn: String,
    },
    /// The `cn=config` entry of the database holding `suffix`, or the entry `child`
    /// under it (`olcOverlay=syncprov`, matched without slapd's `{N}` prefix): its
    /// number differs from node to node.
    Database {
        /// The suffix (`o=gluu`).
        suffix: String,
        /// The RDN of an entry under the database's.
        child: Option<String>,
    },
}

/// What an LDAP attribute should hold.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LdapValue {
    /// Exactly these values (order aside; slapd's `{N}` prefixes ignored); none
    /// removes the attribute.
    Exactly(Vec<String>),
    /// At least these values; others are left alone (`olcModuleLoad`).
    Include(Vec<String>),
    /// One field of the JSON the attribute holds, by JSON pointer (`/config/servers`),
    /// set to this JSON text; the rest of the JSON is left alone.
    JsonField {
        /// The field, as an RFC 6901 pointer.
        pointer: String,
        /// Its value, JSON.
        json: String,
    },
}

impl LdapAttr {
    /// The name an entry of this attribute has in plans, history and backups:
    /// `ldap:data/DN?attribute`, `ldap:config/DN?attribute`,
    /// `ldap:database/SUFFIX[/CHILD]?attribute`, with `#POINTER` for a JSON field.
    pub fn path(&self) -> String {
        let object = match &self.object {
            LdapObject::Data { dn } => format!("data/{dn}"),
            LdapObject::Config { dn } => format!("config/{dn}"),
            LdapObject::Database {
                suffix,
                child: None,
            } => format!("database/{suffix}"),
            LdapObject::Database {
                suffix,
                child: Some(c),
            } => format!("database/{suffix}/{c}"),
        };
        match &self.value {
            LdapValue::JsonField { pointer, .. } => {
                format!("ldap:{object}?{}#{pointer}", self.attribute)
            }
            _ => format!("ldap:{object}?{}", self.attribute),
        }
    }
}

/// Whether an entry path names an LDAP attribute rather than a file.
pub fn is_ldap_path(path: &str) -> bool {
    path.starts_with("ldap:")
}

impl std::fmt::Debug for Content {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Content::File {
                bytes,
                mode,
                owner,
                group,
            } => f
                .debug_struct("File")
                .field("len", &bytes.len())
                .field("sha256", &crate::identity::sha256_hex(bytes))
                .field("mode", &format_args!("{mode:04o}"))
                .field("owner", owner)
                .field("group", group)
                .finish(),
            Content::Property { key, .. } => f
                .debug_struct("Property")
                .field("key", key)
                .finish_non_exhaustive(),
            Content::Block { name, .. } => f
                .debug_struct("Block")
                .field("name", name)
                .finish_non_exhaustive(),
            Content::Ldap(a) => f
                .debug_struct("Ldap")
                .field("path", &a.path())
                .finish_non_exhaustive(),
            Content::Package(p) => p.fmt(f),
            Content::OpenDj(o) => f
                .debug_struct("OpenDj")
                .field("host", &o.host)
                .field("peers", &o.peers)
                .finish_non_exhaustive(),
        }
    }
}

/// A check of the staged result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Validator {
    /// `nginx -t -c PATH`: built in, allowed with `allow_exec = false`.
    Nginx,
    /// A command; `{}` in an argument stands for the entry's path. Needs `allow_exec`.
    Command(Command),
    // New variants go last: postcard numbers variants by position.
    /// The database's replication works (protocol version 2): every consumer reaches
    /// its provider and finishes its refresh within the deadline; a consumer that does
    /// not is reported with what its provider answers to the same bind.
    Replication {
        /// The suffix (`o=gluu`).
        suffix: String,
        /// How long to wait, milliseconds.
        deadline_ms: u64,
    },
}

/// What to do when an entry changed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Action {
    /// Reload or restart a service: built in, allowed with `allow_exec = false`.
    Service {
        /// The service's name (`nginx`, `stunnel4`).
        name: String,
        /// What to do with it.
        verb: ServiceVerb,
    },
    /// A command. Needs `allow_exec`.
    Command(Command),
    // New variants go last: postcard numbers variants by position.
    /// Trust a certificate in the scope's Java (protocol version 2): the file `cert` (a
    /// path in the scope) is imported into Java's `cacerts` under `alias`, replacing
    /// an alias of that name. Built in: the agent runs the scope's own `keytool` with
    /// fixed arguments and the store's password on its standard input, so it is
    /// allowed with `allow_exec = false`. A scope without Java (Gluu not installed yet)
    /// has no store to trust it in: the step says so and succeeds.
    JavaTrust {
        /// The alias (`idp.example.org_httpd`, as Gluu's setup names it).
        alias: String,
        /// The certificate file, in the scope.
        cert: String,
    },
    /// Restart each of `services` the scope has (an init script or a systemd unit of
    /// that name) and skip the others (protocol version 2): a Gluu container's Apache
    /// is `apache2` or `httpd` by its distribution, and its applications are the
    /// components installed, neither of which the controller knows. Built in, like
    /// [`Action::Service`].
    RestartInstalled {
        /// The services, in the order they restart.
        services: Vec<String>,
    },
}

impl Action {
    /// The protocol version that carries this action, and what it is in words when
    /// that is later than the first.
    pub fn needs_version(&self) -> Option<(u16, &'static str)> {
        match self {
            Action::Service { .. } | Action::Command(_) => None,
            Action::JavaTrust { .. } => Some((
                crate::version::BUILDS_CLUSTER,
                "importing the cluster's certificate into Java's trust store",
            )),
            Action::RestartInstalled { .. } => Some((
                crate::version::BUILDS_CLUSTER,
                "restarting the Gluu services a node has installed",
            )),
        }
    }
}

impl Validator {
    /// Like [`Action::needs_version`].
    pub fn needs_version(&self) -> Option<(u16, &'static str)> {
        match self {
            Validator::Nginx | Validator::Command(_) => None,
            Validator::Replication { .. } => {
                Some((crate::version::BUILDS_CLUSTER, "checking LDAP replication"))
            }
        }
    }
}

impl Entry {
    /// The protocol version that carries this entry (its content, validator and
    /// actions), and what needs it in words when that is later than the first: the
    /// controller never sends a peer what it cannot decode.
    pub fn needs_version(&self) -> Option<(u16, &'static str)> {
        let content = match self.content {
            Content::Ldap(_) => Some((crate::version::BUILDS_CLUSTER, "LDAP attribute entries")),
            Content::OpenDj(_) => Some((crate::version::BUILDS_CLUSTER, "OpenDJ replication")),
            Content::Package(_) => Some((crate::version::PROVISIONS, "installing packages")),
            _ => None,
        };
        content
            .into_iter()
            .chain(self.validate.iter().filter_map(Validator::needs_version))
            .chain(self.on_change.iter().filter_map(Action::needs_version))
            .max_by_key(|(v, _)| *v)
    }
}

/// What to do with a service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ServiceVerb {
    /// Reload its configuration.
    Reload,
    /// Restart it.
    Restart,
}

impl ServiceVerb {
    /// The verb as `systemctl` and init scripts spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceVerb::Reload => "reload",
            ServiceVerb::Restart => "restart",
        }
    }
}

/// A file's metadata, as compared.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    /// Permission bits.
    pub mode: u32,
    /// Owner uid.
    pub uid: u32,
    /// Group gid.
    pub gid: u32,
}

/// How an entry compares with the disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Change {
    /// Content and metadata already match: nothing is written, nothing runs.
    Unchanged,
    /// The file does not exist and will be created.
    Create,
    /// The content differs.
    Modify,
    /// Only the mode or ownership differ.
    Metadata,
    /// An edit of a file that does not exist yet: left alone until it does.
    Waiting,
}

impl Change {
    /// Whether applying would write something.
    pub fn writes(self) -> bool {
        matches!(self, Change::Create | Change::Modify | Change::Metadata)
    }

    /// The word for output.
    pub fn as_str(self) -> &'static str {
        match self {
            Change::Unchanged => "unchanged",
            Change::Create => "create",
            Change::Modify => "modify",
            Change::Metadata => "metadata",
            Change::Waiting => "waiting",
        }
    }
}

/// How one entry compares with the disk: the agent's answer to a plan, and part of
/// an apply's answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryPlan {
    /// The entry's path, as sent.
    pub path: String,
    /// What applying does to it.
    pub change: Change,
    /// SHA-256 of the file now, lowercase hex; `None` if absent.
    pub old_sha256: Option<String>,
    /// SHA-256 of the file as it would be.
    pub new_sha256: String,
    /// Metadata now.
    pub old_meta: Option<Meta>,
    /// Metadata as it would be.
    pub new_meta: Option<Meta>,
    /// For a diff: the old text of what the entry governs (the whole file, or only the
    /// edited line or block). `None` for secrets, binary or very large files.
    pub old_text: Option<String>,
    /// The new text, like `old_text`.
    pub new_text: Option<String>,
}

/// How an apply ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ApplyResult {
    /// Every entry already matched: nothing was written or run.
    Unchanged,
    /// The set is in place, validated, and its actions ran.
    Applied,
    /// A validator or an action failed: the previous files are back (and the actions
    /// ran again on them).
    RolledBack {
        /// What failed (`nginx -t on /etc/nginx/nginx.conf`, `reload nginx`).
        step: String,
        /// The tool's own output.
        output: String,
        /// Whether the actions after restoring also succeeded.
        restored_cleanly: bool,
    },
    // New variants go last: postcard numbers variants by position.
    /// Refused: the node already applied a later revision (another apply reached it
    /// first); nothing was changed.
    Stale {
        /// The revision the node applied last.
        applied: u64,
    },
    /// The set's packages could not be installed (protocol version 3): no file of the
    /// set was written; what the package manager installed before it failed stays.
    NotInstalled {
        /// What failed (`install nginx nginx-common (package directory)`).
        step: String,
        /// The package manager's own output.
        output: String,
    },
}

/// One command the agent ran for an apply.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepRun {
    /// What ran (`nginx -t -c /etc/nginx/nginx.conf`, `reload nginx`).
    pub step: String,
    /// Whether it succeeded.
    pub ok: bool,
    /// Its output (stdout then stderr), capped.
    pub output: String,
}

/// The agent's answer to an apply or a restore.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyReport {
    /// The revision applied.
    pub revision: u64,
    /// Every entry, as it compared before the apply.
    pub entries: Vec<EntryPlan>,
    /// How it ended.
    pub result: ApplyResult,
    /// The validators and actions that ran, in order.
    pub steps: Vec<StepRun>,
}

/// A kept previous version of a file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupInfo {
    /// Its generation: 1 is the newest.
    pub generation: u32,
    /// When it was replaced, Unix milliseconds.
    pub replaced_at_ms: i64,
    /// SHA-256 of its content.
    pub sha256: String,
    /// Its metadata.
    pub meta: Meta,
}

/// A request to put a backup back.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreSpec {
    /// The path, as in its change set.
    pub path: String,
    /// Its scope.
    pub scope: Scope,
    /// Which backup: 1 is the newest.
    pub generation: u32,
    /// The validator to run on it.
    pub validate: Option<Validator>,
    /// The actions to run after.
    pub on_change: Vec<Action>,
    /// Who asked.
    pub requested_by: String,
}

/// The check a rolling apply makes of a node after changing it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeSpec {
    /// Services (on the host) that must be running.
    pub services: Vec<String>,
    /// An HTTPS request to the node itself, for Gluu nodes.
    pub https: Option<HttpsProbe>,
}

/// An HTTPS request to `127.0.0.1:port` on the node, verified against a pinned
/// certificate (the cluster's), never accepted blindly.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpsProbe {
    /// The port (443).
    pub port: u16,
    /// The name to ask for (SNI and `Host:`), the cluster's hostname.
    pub host: String,
    /// The path to request.
    pub path: String,
    /// SHA-256 of the DER certificate the node must present, lowercase hex.
    pub cert_sha256: String,
}
