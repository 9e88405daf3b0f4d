//! The LDAP part of an apply: attributes of entries of the node's directory server
//! (`cn=config` through its `ldapi://` socket as root, data bound as the node's Gluu
//! administrator), compared and written with the same plan the controller shows, undone
//! value by value when anything after them fails.
//!
//! Not journaled like files: a crash between two LDAP writes leaves the ones made, and
//! the next apply (or `serve`'s reconcile) converges, since every entry says the whole
//! state it wants.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clustermgr_protocol::changeset::{
    Change, Entry, EntryPlan, LdapAttr, LdapObject, LdapValue, StepRun, Validator,
};
use clustermgr_protocol::identity::sha256_hex;

use crate::config::AgentConfig;
use crate::ldap::client::{self, Connection, Failure, Modify, Scope};

/// Where slapd's `ldapi://` socket usually is, inside the scope's root: Debian's, then
/// Symas OpenLDAP's (Gluu 3.1).
const LDAPI_SOCKETS: &[&str] = &[
    "var/run/slapd/ldapi",
    "run/slapd/ldapi",
    "var/symas/run/ldapi",
    "opt/symas/var/run/ldapi",
];

/// The least deadline of a `cn=config` change, milliseconds.
const CONFIG_TIMEOUT_MS: u64 = 30_000;

/// How long a consumer that is connected and refreshing may take to catch up: copying
/// a large directory takes minutes, and progress is not a failure.
const REFRESH_CAP: Duration = Duration::from_secs(1800);

/// How often a validator looks at the consumers again while it waits.
const POLL: Duration = Duration::from_millis(100);

/// One LDAP entry of a change set compared with the server.
#[derive(Debug)]
pub struct Staged {
    /// Its index in the change set.
    pub index: usize,
    attr: LdapAttr,
    base: PathBuf,
    /// The entry's DN on this server (`None`: absent and not to be created).
    dn: Option<String>,
    exists: bool,
    /// The attribute's values now (slapd's `{N}` prefixes kept).
    old: Vec<String>,
    /// The values to write; `None` when nothing is written.
    new: Option<Vec<String>>,
    validate: Option<Validator>,
    /// The plan line.
    pub plan: EntryPlan,
}

/// The connections of one plan or apply, opened when first needed.
pub struct Session<'a> {
    cfg: &'a AgentConfig,
    config: Option<Connection>,
    data: Option<Connection>,
    /// Whether the node has an LDAP server the agent knows of, read once (it reads
    /// Gluu's settings and the password file).
    knows_data: Option<bool>,
}

impl<'a> Session<'a> {
    /// A session for the agent configured by `cfg`.
    pub fn new(cfg: &'a AgentConfig) -> Self {
        Session {
            cfg,
            config: None,
            data: None,
            knows_data: None,
        }
    }

    fn conn(&mut self, object: &LdapObject, base: &Path) -> Result<&mut Connection, String> {
        match object {
            LdapObject::Data { .. } => self.data(),
            _ => self.config(base),
        }
    }

    fn config(&mut self, base: &Path) -> Result<&mut Connection, String> {
        if self.config.is_none() {
            // slapd answers a change of consumers once their tasks stopped, which takes
            // longer than a read: a generous deadline, still one.
            let timeout = Duration::from_millis(self.cfg.ldap.timeout_ms.max(CONFIG_TIMEOUT_MS));
            let socket = ldapi_socket(self.cfg, base)?;
            let mut c = Connection::open_unix(&socket, timeout)
                .map_err(|e| format!("slapd's socket {}: {e}", socket.display()))?;
            c.bind_external().map_err(|e| {
                format!(
                    "binding to cn=config through {} as this agent's user (SASL EXTERNAL) failed: {e}; grant it manage on cn=config (olcAccess of olcDatabase={{0}}config: by dn.exact=gidNumber=0+uidNumber=0,cn=peercred,cn=external,cn=auth manage, Debian's default)",
                    socket.display()
                )
            })?;
            self.config = Some(c);
        }
        Ok(self.config.as_mut().expect("just opened"))
    }

    /// Whether the node has an LDAP server the agent knows of.
    fn knows_data(&mut self) -> Result<bool, String> {
        if let Some(k) = self.knows_data {
            return Ok(k);
        }
        let k = crate::ldap::access(self.cfg)?.is_some();
        self.knows_data = Some(k);
        Ok(k)
    }

    fn data(&mut self) -> Result<&mut Connection, String> {
        if self.data.is_none() {
            let access = crate::ldap::access(self.cfg)?.ok_or_else(|| {
                "this node has no LDAP server the agent knows of (no Gluu LDAP settings, no [ldap] url in agent.toml)".to_string()
            })?;
            self.data = Some(access.connect()?);
        }
        Ok(self.data.as_mut().expect("just opened"))
    }
}

/// The `ldapi://` socket: `[ldap] ldapi`, else the first usual place that exists in
/// the scope's root, then on the host.
fn ldapi_socket(cfg: &AgentConfig, base: &Path) -> Result<PathBuf, String> {
    if let Some(p) = &cfg.ldap.ldapi {
        return Ok(p.clone());
    }
    let mut tried = Vec::new();
    for root in [base, cfg.root.as_path()] {
        for s in LDAPI_SOCKETS {
            let p = root.join(s);
            if p.exists() {
                return Ok(p);
            }
            tried.push(p.display().to_string());
        }
    }
    Err(format!(
        "slapd's ldapi:// socket is not at {}; start slapd with ldapi:/// among its -h URLs, or set [ldap] ldapi in agent.toml",
        tried.join(", ")
    ))
}

/// With `allow_exec = false`, the LDAP entries the agent takes: any attribute of the
/// directory's data, and in `cn=config` only what replication needs. Anything else
/// there runs code as slapd (a module path, an overlay of one's choosing, a database
/// directory) and needs `allow_exec`.
pub fn check_policy(a: &LdapAttr) -> Result<(), String> {
    let attr = a.attribute.to_ascii_lowercase();
    let ok = match &a.object {
        LdapObject::Data { .. } => true,
        LdapObject::Config { dn } if dn.eq_ignore_ascii_case("cn=config") => attr == "olcserverid",
        LdapObject::Config { dn } => {
            dn.to_ascii_lowercase().starts_with("cn=module")
                && attr == "olcmoduleload"
                && match &a.value {
                    LdapValue::Include(v) => v.iter().all(|m| {
                        m.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
                    }),
                    _ => false,
                }
        }
        LdapObject::Database { child: None, .. } => [
            "olcsyncrepl",
            "olcmultiprovider",
            "olcmirrormode",
            "olclimits",
        ]
        .contains(&attr.as_str()),
        LdapObject::Database { child: Some(c), .. } => {
            c.eq_ignore_ascii_case("olcOverlay=syncprov")
        }
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{} is a cn=config setting this agent changes only with allow_exec = true (it can make slapd load or run code)",
            a.path()
        ))
    }
}

/// The node's LDAP server certificate (public), for its replication peers: the file
/// the agent pins its own LDAPS connection to. Only the first certificate of the file,
/// and never a file holding a key.
pub fn server_cert(cfg: &AgentConfig) -> Result<Option<String>, String> {
    let Some(access) = crate::ldap::access(cfg)? else {
        return Ok(None);
    };
    let Some(path) = access.cert else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read the LDAP certificate {}: {e}", path.display()))?;
    if text.contains("PRIVATE KEY") {
        return Err(format!(
            "{} holds a private key; the agent sends only certificates",
            path.display()
        ));
    }
    const END: &str = "-----END CERTIFICATE-----";
    let first = text.find("-----BEGIN CERTIFICATE-----").and_then(|b| {
        text[b..]
            .find(END)
            .map(|e| text[b..b + e + END.len()].to_string())
    });
    match first {
        Some(pem) => {
            clustermgr_protocol::identity::cert_from_pem(&pem)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            Ok(Some(pem + "\n"))
        }
        None => Err(format!("{} holds no PEM certificate", path.display())),
    }
}

/// Strips slapd's ordering prefix (`{3}value` is `value`).
fn unordered(v: &str) -> &str {
    if let Some(rest) = v.strip_prefix('{')
        && let Some((n, tail)) = rest.split_once('}')
        && !n.is_empty()
        && n.bytes().all(|b| b.is_ascii_digit() || b == b'-')
    {
        return tail;
    }
    v
}

/// `keyword=value` pairs of an `olcSyncrepl` value, quotes removed.
pub fn syncrepl_words(v: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut chars = unordered(v).chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c.is_whitespace() {
                break;
            }
            key.push(c);
            chars.next();
        }
        if key.is_empty() {
            return out;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'=') {
            chars.next();
            if chars.peek() == Some(&'"') {
                chars.next();
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => value.extend(chars.next()),
                        '"' => break,
                        c => value.push(c),
                    }
                }
            } else {
                while let Some(&c) = chars.peek() {
                    if c.is_whitespace() {
                        break;
                    }
                    value.push(c);
                    chars.next();
                }
            }
        }
        out.insert(key.to_ascii_lowercase(), value);
    }
}

/// Whether the value on the server is the one wanted: slapd rewrites `olcSyncrepl`
/// in its own order and quoting, and adds its defaults, so those compare by keyword
/// (every keyword wanted, with its value).
fn same_value(attribute: &str, wanted: &str, found: &str) -> bool {
    let found = unordered(found);
    let wanted = unordered(wanted);
    if attribute.eq_ignore_ascii_case("olcSyncrepl") {
        let f = syncrepl_words(found);
        return syncrepl_words(wanted)
            .iter()
            .all(|(k, v)| f.get(k).is_some_and(|fv| fv.eq_ignore_ascii_case(v)));
    }
    if attribute.eq_ignore_ascii_case("olcModuleLoad") {
        let stem = |s: &str| s.trim().trim_end_matches(".la").to_ascii_lowercase();
        return stem(found) == stem(wanted);
    }
    found == wanted
}

fn hash_tag(secret: &str) -> String {
    format!("(secret sha256:{})", &sha256_hex(secret.as_bytes())[..16])
}

/// A value as a plan shows it: the redacted `olcSyncrepl` keywords replaced by a hash.
fn shown_value(attribute: &str, v: &str, redact: &[String]) -> String {
    let v = unordered(v);
    if !attribute.eq_ignore_ascii_case("olcSyncrepl") {
        return v.to_string();
    }
    syncrepl_words(v)
        .into_iter()
        .map(|(k, val)| {
            if redact.iter().any(|r| r.eq_ignore_ascii_case(&k)) {
                format!("{k}={}", hash_tag(&val))
            } else if val.contains(char::is_whitespace) || val.is_empty() {
                format!("{k}=\"{val}\"")
            } else {
                format!("{k}={val}")
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// JSON with every field `redact` names replaced by a hash of its value.
fn redact_json(v: &serde_json::Value, redact: &[String]) -> serde_json::Value {
    match v {
        serde_json::Value::Object(m) => serde_json::Value::Object(
            m.iter()
                .map(|(k, val)| {
                    let shown = if redact.iter().any(|r| r == k) {
                        serde_json::Value::String(hash_tag(&val.to_string()))
                    } else {
                        redact_json(val, redact)
                    };
                    (k.clone(), shown)
                })
                .collect(),
        ),
        serde_json::Value::Array(a) => {
            serde_json::Value::Array(a.iter().map(|x| redact_json(x, redact)).collect())
        }
        other => other.clone(),
    }
}

fn pretty(v: &serde_json::Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default() + "\n"
}

/// Sets the field at `pointer` (creating objects on the way) to `value`.
fn set_pointer(
    root: &mut serde_json::Value,
    pointer: &str,
    value: serde_json::Value,
) -> Result<(), String> {
    if pointer.is_empty() {
        *root = value;
        return Ok(());
    }
    let Some(rest) = pointer.strip_prefix('/') else {
        return Err(format!(
            "{pointer} is not a JSON pointer (it must start with /)"
        ));
    };
    let mut at = root;
    let parts: Vec<String> = rest
        .split('/')
        .map(|p| p.replace("~1", "/").replace("~0", "~"))
        .collect();
    for (i, part) in parts.iter().enumerate() {
        let obj = at
            .as_object_mut()
            .ok_or_else(|| format!("{pointer}: what holds {part} is not a JSON object"))?;
        if i + 1 == parts.len() {
            obj.insert(part.clone(), value);
            return Ok(());
        }
        at = obj
            .entry(part.clone())
            .or_insert_with(|| serde_json::Value::Object(Default::default()));
    }
    Ok(())
}

/// Finds the entry's DN on this server: a database's `cn=config` entry has a number
/// that differs from node to node.
fn resolve(c: &mut Connection, object: &LdapObject) -> Result<(Option<String>, bool), String> {
    let (suffix, child) = match object {
        LdapObject::Data { dn } | LdapObject::Config { dn } => {
            return Ok((Some(dn.clone()), false));
        }
        LdapObject::Database { suffix, child } => (suffix, child),
    };
    let filter = format!("(olcSuffix={})", client::escape(suffix));
    let dbs = c
        .search("cn=config", Scope::One, &filter, &["olcSuffix"])
        .map_err(|e| format!("finding the database of {suffix} in cn=config: {e}"))?;
    let Some(db) = dbs.first() else {
        return Err(format!(
            "slapd has no database for {suffix} (no olcSuffix: {suffix} in cn=config)"
        ));
    };
    let Some(child) = child else {
        return Ok((Some(db.dn.clone()), true));
    };
    let (want_attr, want_value) = child
        .split_once('=')
        .ok_or_else(|| format!("{child} is not an RDN"))?;
    let kids = c
        .search(&db.dn, Scope::One, "(objectClass=*)", &["1.1"])
        .map_err(|e| format!("reading the entries under {}: {e}", db.dn))?;
    for k in kids {
        let rdn = k.dn.split(',').next().unwrap_or_default();
        if let Some((a, v)) = rdn.split_once('=')
            && a.eq_ignore_ascii_case(want_attr)
            && unordered(v).eq_ignore_ascii_case(want_value)
        {
            return Ok((Some(k.dn.clone()), true));
        }
    }
    Ok((Some(format!("{child},{}", db.dn)), false))
}

/// Compares one LDAP entry with the server.
fn stage_one(
    session: &mut Session,
    index: usize,
    e: &Entry,
    a: &LdapAttr,
    base: PathBuf,
) -> Result<Staged, String> {
    if matches!(a.object, LdapObject::Data { .. }) && !session.knows_data()? {
        // Gluu not installed yet (or no [ldap]): like an edit of a file not there.
        return Ok(Staged {
            index,
            attr: a.clone(),
            base,
            dn: None,
            exists: false,
            old: Vec::new(),
            new: None,
            validate: e.validate.clone(),
            plan: EntryPlan {
                path: e.path.clone(),
                change: Change::Waiting,
                old_sha256: None,
                new_sha256: String::new(),
                old_meta: None,
                new_meta: None,
                old_text: None,
                new_text: None,
            },
        });
    }
    // A field's value as it is stored: a password Gluu keeps encrypted is encrypted
    // here, with the node's own key (only once there is a document to put it in).
    let stored = |json: &str, pointer: &str| -> Result<serde_json::Value, String> {
        let v: serde_json::Value = serde_json::from_str(json)
            .map_err(|e| format!("the value for {pointer} is not JSON: {e}"))?;
        if !a.encrypt {
            return Ok(v);
        }
        let plain = v.as_str().ok_or_else(|| {
            format!("the value for {pointer} is to be encrypted, so it must be a JSON string")
        })?;
        let salt = crate::ldap::gluu_salt(&base)?;
        Ok(serde_json::Value::String(crate::ldap::gluu_encode(
            plain.as_bytes(),
            &salt,
        )?))
    };
    let c = session.conn(&a.object, &base)?;
    let (dn, mut exists) = resolve(c, &a.object)?;
    let dn = dn.expect("resolve names a DN");
    let mut old = Vec::new();
    if exists || !matches!(a.object, LdapObject::Database { .. }) {
        match c.search(&dn, Scope::Base, "(objectClass=*)", &[a.attribute.as_str()]) {
            Ok(found) => {
                exists = !found.is_empty();
                old = found
                    .first()
                    .map(|f| f.values(&a.attribute))
                    .unwrap_or_default();
            }
            Err(Failure::Result {
                code: client::NO_SUCH_OBJECT,
                ..
            }) => exists = false,
            Err(e) => return Err(format!("reading {dn}: {e}")),
        }
    }
    let attribute = a.attribute.as_str();
    let shown = |vals: &[String]| -> String {
        vals.iter()
            .map(|v| shown_value(attribute, v, &a.redact) + "\n")
            .collect()
    };
    let canonical = |vals: &[String]| -> String {
        let mut v: Vec<&str> = vals.iter().map(|v| unordered(v)).collect();
        v.sort_unstable();
        v.join("\n")
    };
    let (change, new, old_text, new_text, old_hash, new_hash) = match &a.value {
        LdapValue::Exactly(want) | LdapValue::Include(want) => {
            let include = matches!(a.value, LdapValue::Include(_));
            let missing: Vec<&String> = want
                .iter()
                .filter(|w| !old.iter().any(|o| same_value(attribute, w, o)))
                .collect();
            let matches = missing.is_empty() && (include || old.len() == want.len());
            let new_vals: Vec<String> = if include {
                old.iter()
                    .map(|o| unordered(o).to_string())
                    .chain(missing.iter().map(|m| m.to_string()))
                    .collect()
            } else {
                want.clone()
            };
            let change = if !exists && a.create.is_empty() {
                Change::Waiting
            } else if !exists || (old.is_empty() && !new_vals.is_empty()) {
                Change::Create
            } else if matches {
                Change::Unchanged
            } else {
                Change::Modify
            };
            let new_hash = sha256_hex(canonical(&new_vals).as_bytes());
            let old_hash = if matches {
                new_hash.clone()
            } else {
                sha256_hex(canonical(&old).as_bytes())
            };
            (
                change,
                (change.writes()).then_some(new_vals.clone()),
                exists.then(|| shown(&old)),
                Some(shown(&new_vals)),
                (exists && !old.is_empty()).then_some(old_hash),
                new_hash,
            )
        }
        LdapValue::JsonField { pointer, json } => match old.as_slice() {
            [] => (
                Change::Waiting,
                None,
                None,
                None,
                None,
                sha256_hex(json.as_bytes()),
            ),
            [one] => {
                let want = stored(json, pointer)?;
                let mut doc: serde_json::Value = serde_json::from_str(one).map_err(|e| {
                    format!("{dn}'s {attribute} is not JSON ({e}); it is left alone")
                })?;
                let now = doc.pointer(pointer).cloned();
                let old_hash = now.as_ref().map(|v| sha256_hex(v.to_string().as_bytes()));
                let new_hash = sha256_hex(want.to_string().as_bytes());
                let change = if now.as_ref() == Some(&want) {
                    Change::Unchanged
                } else if now.is_none() {
                    Change::Create
                } else {
                    Change::Modify
                };
                set_pointer(&mut doc, pointer, want.clone())?;
                (
                    change,
                    change.writes().then(|| vec![doc.to_string()]),
                    now.as_ref().map(|v| pretty(&redact_json(v, &a.redact))),
                    Some(pretty(&redact_json(&want, &a.redact))),
                    old_hash,
                    new_hash,
                )
            }
            _ => {
                return Err(format!(
                    "{dn} has {} values of {attribute}, where one JSON document was expected; it is left alone",
                    old.len()
                ));
            }
        },
    };
    let (old_text, new_text) = if e.secret {
        (None, None)
    } else {
        (old_text, new_text)
    };
    Ok(Staged {
        index,
        attr: a.clone(),
        base,
        dn: Some(dn),
        exists,
        old,
        new,
        validate: e.validate.clone(),
        plan: EntryPlan {
            path: e.path.clone(),
            change,
            old_sha256: old_hash,
            new_sha256: new_hash,
            old_meta: None,
            new_meta: None,
            old_text,
            new_text,
        },
    })
}

/// Compares the LDAP entries of a change set (`(index, entry, attribute, scope base)`)
/// with the server; every error is collected, as for files.
pub fn stage(
    session: &mut Session,
    entries: Vec<(usize, &Entry, &LdapAttr, PathBuf)>,
) -> Result<Vec<Staged>, Vec<String>> {
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for (index, e, a, base) in entries {
        if e.path != a.path() {
            errors.push(format!("{}: its path should be {}", e.path, a.path()));
            continue;
        }
        match stage_one(session, index, e, a, base) {
            Ok(s) => out.push(s),
            Err(why) => errors.push(format!("{}: {why}", e.path)),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

/// What an applied write changed, to undo it.
enum Undo {
    /// Put these values back (none: remove the attribute).
    Values {
        object: LdapObject,
        base: PathBuf,
        dn: String,
        attribute: String,
        old: Vec<String>,
    },
    /// Remove the entry the apply created.
    Added {
        object: LdapObject,
        base: PathBuf,
        dn: String,
    },
    /// Add back the entries a join removed, parents first.
    Emptied { entries: Vec<client::Entry> },
}

/// The LDAP writes of an apply, undone in reverse when something after fails.
#[derive(Default)]
pub struct Written {
    undo: Vec<Undo>,
    /// What each changed entry held before, to keep as its backup once the apply
    /// stands.
    pub kept: Vec<Kept>,
}

/// An LDAP attribute's previous values, kept like a file's previous version: what a
/// `rollback` puts back (the whole attribute, as it was).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Kept {
    /// The entry's path (`ldap:...`).
    pub path: String,
    /// The entry and attribute.
    pub object: LdapObject,
    /// The attribute's name.
    pub attribute: String,
    /// Its values before (none: it was absent).
    pub old: Vec<String>,
}

impl Kept {
    /// The entry that puts the kept values back.
    pub fn restoring(&self) -> LdapAttr {
        LdapAttr {
            object: self.object.clone(),
            attribute: self.attribute.clone(),
            value: LdapValue::Exactly(self.old.clone()),
            create: Vec::new(),
            redact: vec!["credentials".into(), "password".into()],
            bump_revision: None,
            join: false,
            encrypt: false,
        }
    }
}

fn step(label: String, result: Result<(), String>) -> StepRun {
    match result {
        Ok(()) => StepRun {
            step: label,
            ok: true,
            output: String::new(),
        },
        Err(why) => StepRun {
            step: label,
            ok: false,
            output: why,
        },
    }
}

/// Writes every changed entry, in order, then bumps the revisions they name; stops at
/// the first failure (the caller undoes what was written).
pub fn write(
    session: &mut Session,
    staged: &[Staged],
    written: &mut Written,
    steps: &mut Vec<StepRun>,
) -> Result<(), (String, String)> {
    let mut bumps: Vec<String> = Vec::new();
    for s in staged {
        let Some(new) = &s.new else { continue };
        let dn = s.dn.clone().expect("a written entry has a DN");
        let a = &s.attr;
        let label = format!("ldap modify {dn} {}", a.attribute);
        if a.join
            && s.old.is_empty()
            && let LdapObject::Database { suffix, .. } = &a.object
        {
            let label = format!("empty {suffix} on this node (it joins the cluster's replication)");
            let r = empty_suffix(session, suffix, written);
            let failed = r.as_ref().err().cloned();
            steps.push(step(label.clone(), r));
            if let Some(why) = failed {
                return Err((label, why));
            }
        }
        let r = (|| -> Result<(), String> {
            let c = session.conn(&a.object, &s.base)?;
            if !s.exists {
                let mut attrs: Vec<(&str, Vec<String>)> = a
                    .create
                    .iter()
                    .map(|(n, v)| (n.as_str(), v.clone()))
                    .collect();
                if !new.is_empty()
                    && !attrs
                        .iter()
                        .any(|(n, _)| n.eq_ignore_ascii_case(&a.attribute))
                {
                    attrs.push((a.attribute.as_str(), new.clone()));
                }
                c.add(&dn, &attrs)
                    .map_err(|e| format!("adding {dn}: {e}"))?;
                written.undo.push(Undo::Added {
                    object: a.object.clone(),
                    base: s.base.clone(),
                    dn: dn.clone(),
                });
                return Ok(());
            }
            let not_in = |these: &[String], those: &[String]| -> Vec<String> {
                these
                    .iter()
                    .filter(|t| !those.iter().any(|o| same_value(&a.attribute, t, o)))
                    .cloned()
                    .collect()
            };
            let name = a.attribute.as_str();
            if let LdapValue::JsonField { pointer, .. } = &a.value {
                // Read again: an earlier entry of this apply may have set another field
                // of the same document.
                let now = c
                    .search(&dn, Scope::Base, "(objectClass=*)", &[name])
                    .map_err(|e| format!("reading {dn}: {e}"))?
                    .first()
                    .map(|f| f.values(name))
                    .unwrap_or_default();
                let [one] = now.as_slice() else {
                    return Err(format!("{dn}'s {name} changed during the apply"));
                };
                let mut doc: serde_json::Value =
                    serde_json::from_str(one).map_err(|e| format!("{dn}'s {name}: {e}"))?;
                let staged: serde_json::Value =
                    serde_json::from_str(&new[0]).map_err(|e| format!("{dn}'s {name}: {e}"))?;
                let field = staged.pointer(pointer).cloned().unwrap_or_default();
                set_pointer(&mut doc, pointer, field)?;
                c.modify(&dn, &[(Modify::Replace, name, vec![doc.to_string()])])
                    .map_err(|e| e.to_string())?;
                written.undo.push(Undo::Values {
                    object: a.object.clone(),
                    base: s.base.clone(),
                    dn: dn.clone(),
                    attribute: a.attribute.clone(),
                    old: now,
                });
                return Ok(());
            }
            let changes = match &a.value {
                LdapValue::Include(_) => vec![(Modify::Add, name, not_in(new, &s.old))],
                _ if new.is_empty() => vec![(Modify::Delete, name, Vec::new())],
                // New consumers are added beside the running ones (a replace would
                // restart every one). A removed one takes a replace: slapd 2.5 drops
                // every consumer's monitor entry when one value is deleted, and the
                // others would no longer be seen.
                _ if name.eq_ignore_ascii_case("olcSyncrepl")
                    && !s.old.is_empty()
                    && not_in(&s.old, new).is_empty() =>
                {
                    vec![(Modify::Add, name, not_in(new, &s.old))]
                }
                _ => vec![(Modify::Replace, name, new.clone())],
            };
            c.modify(&dn, &changes).map_err(|e| e.to_string())?;
            written.undo.push(Undo::Values {
                object: a.object.clone(),
                base: s.base.clone(),
                dn: dn.clone(),
                attribute: a.attribute.clone(),
                old: s.old.iter().map(|v| unordered(v).to_string()).collect(),
            });
            Ok(())
        })();
        let failed = r.as_ref().err().cloned();
        steps.push(step(label.clone(), r));
        if let Some(why) = failed {
            return Err((label, why));
        }
        let path = a.path();
        // Every field of one JSON document keeps the document as it was before.
        if s.exists && !written.kept.iter().any(|k| k.path == path) {
            written.kept.push(Kept {
                path,
                object: a.object.clone(),
                attribute: a.attribute.clone(),
                old: s.old.iter().map(|v| unordered(v).to_string()).collect(),
            });
        }
        if let Some(b) = &a.bump_revision
            && !bumps.contains(b)
        {
            bumps.push(b.clone());
        }
    }
    for dn in bumps {
        let label = format!("ldap bump oxRevision of {dn}");
        let r = bump_revision(session, &dn);
        let failed = r.as_ref().err().cloned();
        steps.push(step(label.clone(), r));
        if let Some(why) = failed {
            return Err((label, why));
        }
    }
    Ok(())
}

/// Increments `oxRevision` of `dn`, so Gluu's applications reload.
fn bump_revision(session: &mut Session, dn: &str) -> Result<(), String> {
    let c = session.data()?;
    let found = c
        .search(dn, Scope::Base, "(objectClass=*)", &["oxRevision"])
        .map_err(|e| format!("reading {dn}: {e}"))?;
    let now: i64 = found
        .first()
        .and_then(|e| e.first("oxRevision"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    c.modify(
        dn,
        &[(Modify::Replace, "oxRevision", vec![(now + 1).to_string()])],
    )
    .map_err(|e| e.to_string())
}

/// Removes every entry under (and including) `suffix`, keeping them to add back if the
/// apply is undone. Leaves first; again while something (the heartbeat) adds entries.
fn empty_suffix(session: &mut Session, suffix: &str, written: &mut Written) -> Result<(), String> {
    let c = session.data()?;
    let mut kept: Vec<client::Entry> = Vec::new();
    for _ in 0..5 {
        let mut entries = match c.search(suffix, Scope::Sub, "(objectClass=*)", &["*"]) {
            Ok(e) => e,
            Err(Failure::Result {
                code: client::NO_SUCH_OBJECT,
                ..
            }) => break,
            Err(e) => return Err(format!("reading {suffix}: {e}")),
        };
        if entries.is_empty() {
            break;
        }
        entries.sort_by_key(|e| std::cmp::Reverse(depth(&e.dn)));
        for e in &entries {
            match c.delete(&e.dn) {
                Ok(()) => kept.push(e.clone()),
                // Something was added under it meanwhile: the next round takes both.
                Err(Failure::Result { code: 66, .. }) => {}
                Err(Failure::Result {
                    code: client::NO_SUCH_OBJECT,
                    ..
                }) => {}
                Err(err) => {
                    written.undo.push(Undo::Emptied { entries: kept });
                    return Err(format!("removing {}: {err}", e.dn));
                }
            }
        }
    }
    written.undo.push(Undo::Emptied { entries: kept });
    Ok(())
}

fn depth(dn: &str) -> usize {
    dn.split(',').count()
}

/// Undoes the writes in reverse; returns the steps it ran.
pub fn undo(session: &mut Session, written: &mut Written) -> Vec<StepRun> {
    let mut steps = Vec::new();
    while let Some(u) = written.undo.pop() {
        let (label, r) = match u {
            Undo::Values {
                object,
                base,
                dn,
                attribute,
                old,
            } => (
                format!("ldap restore {dn} {attribute}"),
                session.conn(&object, &base).and_then(|c| {
                    let change = if old.is_empty() {
                        (Modify::Delete, attribute.as_str(), Vec::new())
                    } else {
                        (Modify::Replace, attribute.as_str(), old)
                    };
                    c.modify(&dn, &[change]).map_err(|e| e.to_string())
                }),
            ),
            Undo::Added { object, base, dn } => (
                format!("ldap remove {dn}"),
                session.conn(&object, &base).and_then(|c| {
                    // slapd numbers a database's children (`olcOverlay={0}syncprov`).
                    let dn = match resolve(c, &object) {
                        Ok((Some(found), true)) => found,
                        _ => dn,
                    };
                    c.delete(&dn).map_err(|e| e.to_string())
                }),
            ),
            Undo::Emptied { mut entries } => {
                entries.sort_by_key(|e| depth(&e.dn));
                (
                    format!("ldap add back the {} entries removed", entries.len()),
                    session.data().and_then(|c| {
                        for e in &entries {
                            let attrs: Vec<(&str, Vec<String>)> = e
                                .attrs
                                .iter()
                                .map(|(n, v)| {
                                    (
                                        n.as_str(),
                                        v.iter()
                                            .map(|b| String::from_utf8_lossy(b).into_owned())
                                            .collect(),
                                    )
                                })
                                .collect();
                            match c.add(&e.dn, &attrs) {
                                Ok(())
                                | Err(Failure::Result {
                                    code: client::ALREADY_EXISTS,
                                    ..
                                }) => {}
                                Err(err) => return Err(format!("{}: {err}", e.dn)),
                            }
                        }
                        Ok(())
                    }),
                )
            }
        };
        steps.push(step(label, r));
    }
    steps
}

/// Runs the replication validators of the staged entries that are in place: waits
/// until every consumer of the suffix is connected and following changes live.
pub fn validate(
    session: &mut Session,
    staged: &[Staged],
    steps: &mut Vec<StepRun>,
) -> Result<(), (String, String)> {
    for s in staged {
        let Some(Validator::Replication {
            suffix,
            deadline_ms,
        }) = &s.validate
        else {
            continue;
        };
        if s.plan.change == Change::Waiting {
            continue;
        }
        let wanted: Vec<BTreeMap<String, String>> = match &s.attr.value {
            LdapValue::Exactly(v) | LdapValue::Include(v) => {
                v.iter().map(|v| syncrepl_words(v)).collect()
            }
            LdapValue::JsonField { .. } => Vec::new(),
        };
        let label = format!("replication of {suffix}");
        let r = wait_live(
            session,
            &s.base,
            suffix,
            &wanted,
            Duration::from_millis(*deadline_ms),
        );
        let failed = r.as_ref().err().cloned();
        steps.push(step(label.clone(), r));
        if let Some(why) = failed {
            return Err((label, why));
        }
    }
    Ok(())
}

/// Waits until a consumer of every wanted provider is live; at the deadline, says which
/// are not and what their providers answer to the same bind.
fn wait_live(
    session: &mut Session,
    base: &Path,
    suffix: &str,
    wanted: &[BTreeMap<String, String>],
    deadline: Duration,
) -> Result<(), String> {
    let start = Instant::now();
    let providers: Vec<&str> = wanted
        .iter()
        .filter_map(|w| w.get("provider").map(String::as_str))
        .collect();
    let last: Vec<(String, String)> = loop {
        let c = session.data()?;
        let state = crate::health::ldap::state(c, suffix, crate::journal::now_ms)?;
        // A consumer connected and still refreshing is making progress (a big
        // directory takes longer than the deadline to copy): it may go on up to
        // REFRESH_CAP; one that is not connected has the deadline only.
        let mut refreshing = true;
        let behind: Vec<(String, String)> = providers
            .iter()
            .filter_map(|p| {
                let mine = state
                    .consumers
                    .iter()
                    .find(|c| c.provider.trim_end_matches('/') == p.trim_end_matches('/'));
                match mine {
                    Some(c) if c.connected && c.phase == "Persist" => None,
                    Some(c) => Some({
                        refreshing &= c.connected;
                        (
                            p.to_string(),
                            format!(
                                " (phase {}, {})",
                                if c.phase.is_empty() { "none" } else { &c.phase },
                                if c.connected {
                                    "connected"
                                } else {
                                    "not connected"
                                }
                            ),
                        )
                    }),
                    None => Some({
                        refreshing = false;
                        (
                            p.to_string(),
                            " (slapd's monitor shows no such consumer)".into(),
                        )
                    }),
                }
            })
            .collect();
        if behind.is_empty() {
            return Ok(());
        }
        let limit = if refreshing {
            REFRESH_CAP.max(deadline)
        } else {
            deadline
        };
        if start.elapsed() >= limit {
            break behind;
        }
        std::thread::sleep(POLL);
    };
    let why: Vec<String> = last
        .iter()
        .map(|(p, seen)| {
            let w = wanted
                .iter()
                .find(|w| w.get("provider").map(String::as_str) == Some(p.as_str()));
            let answer = w.map_or_else(String::new, |w| try_bind(session.cfg, base, w));
            format!("the consumer of {p} has not caught up{seen}{answer}")
        })
        .collect();
    Err(format!(
        "after {:.0} s: {}",
        deadline.as_secs_f64(),
        why.join("; ")
    ))
}

/// Binds to a consumer's provider as the consumer does, for the provider's own words.
fn try_bind(cfg: &AgentConfig, base: &Path, w: &BTreeMap<String, String>) -> String {
    let (Some(provider), Some(binddn), Some(credentials)) =
        (w.get("provider"), w.get("binddn"), w.get("credentials"))
    else {
        return String::new();
    };
    let timeout = Duration::from_millis(cfg.ldap.timeout_ms.max(100));
    let rest = provider
        .strip_prefix("ldaps://")
        .map(|r| (true, r))
        .or_else(|| provider.strip_prefix("ldap://").map(|r| (false, r)));
    let Some((tls, hostport)) = rest else {
        return String::new();
    };
    let addr = hostport.trim_end_matches('/').to_string();
    let tls = if tls {
        let pins: Vec<String> = w
            .get("tls_cacert")
            // As slapd sees it: in the container (Gluu's chrooted slapd), else as is.
            .and_then(|f| {
                std::fs::read_to_string(base.join(f.trim_start_matches('/')))
                    .or_else(|_| std::fs::read_to_string(f))
                    .ok()
            })
            .map(|pem| {
                pem.split_inclusive("-----END CERTIFICATE-----")
                    .filter_map(|c| clustermgr_protocol::identity::cert_from_pem(c).ok())
                    .map(|der| sha256_hex(&der))
                    .collect()
            })
            .unwrap_or_default();
        match clustermgr_protocol::identity::pinned_any_client_config(&pins) {
            Ok(c) => Some(std::sync::Arc::new(c)),
            Err(_) => return String::new(),
        }
    } else {
        None
    };
    let target = client::Target { addr, tls };
    let result = Connection::open(&target, timeout).and_then(|mut c| {
        let r = c.bind(binddn, credentials.as_bytes());
        c.unbind();
        r
    });
    match result {
        Ok(()) => {
            " (its provider accepts the replication bind: it may still be sending the directory)"
                .into()
        }
        Err(e) => format!(": binding there as {binddn}: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syncrepl_values_compare_by_keyword_whatever_slapd_rewrote() {
        let wanted = "rid=002 provider=ldaps://10.0.0.2:1636 binddn=\"cn=replicator,o=gluu\" credentials=s3cret searchbase=\"o=gluu\" keepalive=60:5:10";
        let found = "{1}rid=002 provider=ldaps://10.0.0.2:1636 bindmethod=simple timeout=0 network-timeout=0 binddn=\"cn=replicator,o=gluu\" credentials=\"s3cret\" keepalive=60:5:10 searchbase=\"o=gluu\" type=refreshOnly";
        assert!(same_value("olcSyncrepl", wanted, found));
        assert!(!same_value(
            "olcSyncrepl",
            wanted,
            &found.replace("s3cret", "other")
        ));
        assert!(same_value("olcModuleLoad", "syncprov", "{1}syncprov.la"));
        assert!(!same_value("olcServerID", "2", "{0}3"));
    }

    #[test]
    fn plans_show_secrets_as_hashes() {
        let v = "rid=1 provider=ldap://x credentials=\"s3cret pw\" binddn=\"cn=r,o=gluu\"";
        let shown = shown_value("olcSyncrepl", v, &["credentials".into()]);
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("credentials=(secret sha256:"), "{shown}");
        assert!(shown.contains("binddn=cn=r,o=gluu "), "{shown}");
        let j: serde_json::Value = serde_json::from_str(
            r#"{"redisConfiguration":{"password":"pw","servers":"localhost:16379"}}"#,
        )
        .unwrap();
        let shown = pretty(&redact_json(&j, &["password".into()]));
        assert!(!shown.contains("\"pw\""), "{shown}");
        assert!(shown.contains("localhost:16379"), "{shown}");
    }

    #[test]
    fn a_json_pointer_sets_one_field_and_keeps_the_rest() {
        let mut doc: serde_json::Value =
            serde_json::from_str(r#"{"a":1,"config":{"servers":["x"],"keep":true}}"#).unwrap();
        set_pointer(&mut doc, "/config/servers", serde_json::json!(["y", "z"])).unwrap();
        set_pointer(&mut doc, "/new/deep", serde_json::json!(3)).unwrap();
        assert_eq!(
            doc,
            serde_json::json!({"a":1,"config":{"servers":["y","z"],"keep":true},"new":{"deep":3}})
        );
        assert!(set_pointer(&mut doc, "a/b", serde_json::json!(1)).is_err());
        assert!(set_pointer(&mut doc, "/a/b", serde_json::json!(1)).is_err());
    }
}
