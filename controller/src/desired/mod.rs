//! Desired-state operations: `cluster set/show`, `plan`, `apply`, `drift`, `history`,
//! `rollback`, `drain` and `undrain`, and serve's reconcile of revisions a node missed.
//!
//! Every path goes through [`desired_for`] (the generators' output for a node, minus
//! the paths a rollback holds) and the agent's one staging routine, so `plan` and
//! `apply` cannot disagree. Secrets reach the agents inside change sets, and come
//! back only as hashes: nothing here formats an entry's content except a diff of a
//! non-secret entry's text that the agent returned.

use std::collections::BTreeMap;
use std::time::Duration;

use clustermgr_protocol::changeset::{
    Action, ApplyReport, ApplyResult, ChangeSet, Entry, EntryPlan, HttpsProbe, Meta, ProbeSpec,
    RestoreSpec, Scope, Validator,
};
use clustermgr_protocol::message::{Reply, Request};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::CtlError;
use crate::clock::{rfc3339, rfc3339_ms};
use crate::connect::NodeFailure;
use crate::ctx::{Ctx, Event, NodeOutcome, NodeState};
use crate::generate::{self, Inputs, Secrets, TunnelMaterial};
use crate::selector::select;
use crate::store::{ChangeRecord, DesiredRecord, Hold, NodeRecord, Role};

pub mod gluu;
pub mod keys;
mod provision;
mod replication;
pub use replication::leave as leave_replication;

/// How long an agent may take to compare a change set with its disk.
const PLAN_TIMEOUT: Duration = Duration::from_secs(30);
/// How long an apply may take: validators and service restarts (a Java app is slow).
const APPLY_TIMEOUT: Duration = Duration::from_secs(600);

/// What the desired-state operations answer; the dispatch turns it into its `Report`.
#[derive(Clone, Debug)]
pub enum View {
    /// `plan`, `drift`.
    Plan {
        /// Per node.
        views: Vec<NodePlanView>,
        /// Whether this is a drift report.
        drift: bool,
        /// The plan's digest (none for drift).
        digest: Option<String>,
    },
    /// `apply`, `drain`, a rollback.
    Applied(Vec<NodeApplyView>),
    /// `history`.
    History(Vec<ChangeView>),
    /// `cluster show`.
    Cluster(Box<ClusterView>),
    /// `rollback --list`.
    Generations {
        /// The node.
        node: String,
        /// The path.
        path: String,
        /// The kept versions.
        generations: Vec<GenerationView>,
    },
}

/// One entry of a node's plan, as shown.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct EntryView {
    /// The path, inside its scope.
    pub path: String,
    /// `host`, or `container /opt/gluu-server`.
    pub scope: String,
    /// `create`, `modify`, `metadata`, `unchanged`, `waiting`, `held`, `install` (a
    /// package).
    pub change: String,
    /// Whether its content is secret (no diff, only hashes).
    pub secret: bool,
    /// SHA-256 on the node now.
    pub old_sha256: Option<String>,
    /// SHA-256 as it would be; null when apply makes the content (a key the node
    /// generates, a certificate issued then).
    pub new_sha256: Option<String>,
    /// `0644 root:root → 0600 root:root`, when the metadata changes.
    pub metadata: Option<String>,
    /// A unified diff of the governed text (never for secrets).
    pub diff: Option<String>,
    /// The node's copy was edited by hand since clustermgr last applied it.
    pub drift: bool,
    /// What apply makes of it that a plan cannot show yet: a certificate it issues, a
    /// key the node generates.
    pub at_apply: Option<String>,
}

/// A path held at a kept version by a rollback.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct HeldView {
    /// The path.
    pub path: String,
    /// The kept generation it is held at.
    pub generation: u32,
}

/// A node's plan or drift report.
#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct NodePlanView {
    /// The node.
    pub node: String,
    /// Whether the node answered.
    pub state: NodeState,
    /// Why not.
    pub message: Option<String>,
    /// Entries that would change (or drifted), in change-set order.
    pub entries: Vec<EntryView>,
    /// How many entries already match.
    pub unchanged: usize,
    /// Validators that would run.
    pub validators: Vec<String>,
    /// Actions that would run.
    pub actions: Vec<String>,
    /// What the generators wait for before they can configure more of this node.
    pub waiting: Vec<String>,
    /// Paths a rollback holds, with the generation restored.
    pub held: Vec<HeldView>,
    /// A revision that the node has not received yet.
    pub pending_revision: Option<u64>,
}

/// One step an apply ran, as shown.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct StepView {
    /// What ran.
    pub step: String,
    /// Whether it succeeded.
    pub ok: bool,
    /// Its output.
    pub output: String,
}

impl From<clustermgr_protocol::changeset::StepRun> for StepView {
    fn from(r: clustermgr_protocol::changeset::StepRun) -> StepView {
        StepView {
            step: r.step,
            ok: r.ok,
            output: r.output,
        }
    }
}

/// How an apply went on one node.
#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct NodeApplyView {
    /// The node.
    pub node: String,
    /// ok, failed, unreachable or skipped.
    pub state: NodeState,
    /// `applied`, `unchanged`, `rolled back`, `not installed` (a package could not be
    /// installed; no file was written), `stale`, `pending` (unreachable: serve sends it
    /// when the node is back), `skipped`, `failed`.
    pub result: String,
    /// What went wrong, in words.
    pub message: Option<String>,
    /// The revision.
    pub revision: u64,
    /// The entries that changed (or would have).
    pub entries: Vec<EntryView>,
    /// The validators and actions that ran.
    pub steps: Vec<StepView>,
}

/// A line of `history`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ChangeView {
    /// Its number.
    pub id: u64,
    /// When, RFC 3339.
    #[schemars(extend("format" = "date-time"))]
    pub time: String,
    /// When, Unix milliseconds.
    pub time_ms: i64,
    /// Who.
    pub user: String,
    /// `apply`, `rollback`, `drain`, ...
    pub action: String,
    /// The desired-state revision applied (0 for a rollback, which restores a kept
    /// version).
    pub revision: u64,
    /// The node.
    pub node: String,
    /// The file, inside its scope.
    pub path: String,
    /// `create`, `modify`, `metadata`, ...
    pub change: String,
    /// Its SHA-256 before, if it existed.
    pub old_sha256: Option<String>,
    /// Its SHA-256 after.
    pub new_sha256: String,
    /// How it went.
    pub result: String,
}

/// `cluster show`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ClusterView {
    /// Every setting and its value, as the table shows them.
    pub settings: Vec<(String, String)>,
    /// Every secret: `set (sha256 …)` or `not set`.
    pub secrets: Vec<(String, String)>,
    /// The same, typed, as `--json` prints it.
    pub typed: ClusterSettings,
    /// What `cluster set` or `unset` did, in words (the text output shows this instead
    /// of the settings; `--json` shows the settings as they are now).
    pub said: Option<String>,
}

/// The cluster's settings as `cluster show --json` prints them: the keys `cluster set`
/// takes, absent values `null`, booleans and lists as such, secrets by their hash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub struct ClusterSettings {
    /// The cluster's public name.
    pub hostname: Option<String>,
    /// The Gluu Server version.
    pub gluu_version: Option<String>,
    /// The container root on the Gluu nodes.
    pub gluu_root: String,
    /// `ip_hash` or `sticky`.
    pub lb_session: String,
    /// The paths csync2 replicates, inside the container.
    pub replicated_paths: Vec<String>,
    /// `none` or `redis`.
    pub cache: String,
    /// Whether `/etc/hosts` is managed.
    pub manage_hosts: bool,
    /// The nodes drained from the load balancer.
    pub drained: Vec<String>,
    /// Whether `apply` sets up LDAP replication between the Gluu nodes.
    pub ldap_replication: bool,
    /// Where the nodes' packages come from: `off`, `repository` or `directory`.
    pub packages: String,
    /// The package directory on the controller.
    pub package_dir: Option<String>,
    /// The time servers the Gluu nodes' chrony uses.
    pub ntp_servers: Vec<String>,
    /// Each secret's SHA-256 (first 16 hex digits), `null` when not set.
    pub secrets: BTreeMap<String, Option<String>>,
}

/// A kept backup, as `rollback --list` shows it.
#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct GenerationView {
    /// 1 is the newest.
    pub generation: u32,
    /// When it was replaced.
    #[schemars(extend("format" = "date-time"))]
    pub replaced_at: String,
    /// Its SHA-256.
    pub sha256: String,
    /// Mode and owner.
    pub metadata: String,
}

/// What a node should get, and what it is waiting for.
struct NodeDesired {
    node: NodeRecord,
    /// The entries to send (held paths left out).
    entries: Vec<Entry>,
    waiting: Vec<String>,
    record: DesiredRecord,
    /// The holds still in force (their desired entry has not changed).
    holds: Vec<Hold>,
    /// Keys apply will have the node generate (when it has none) before it certifies
    /// them: their paths. Filled on the [`Basis::Preview`] only.
    generated_keys: Vec<String>,
    /// Entries applied before that stay applied beside `entries` (a reconcile sends
    /// only what changed): recorded with them, in the same transaction.
    kept: Vec<Entry>,
    /// What to record instead of the applied set, when the change is no new desired
    /// state (a rollback records a hold): in the same transaction as its history.
    record_as: Option<DesiredRecord>,
}

/// Fills `tunnel` as `ensure_tunnel` will leave it for `selected`: a stand-in for each
/// certificate it will issue (none yet, or a stunnel one near its end), for the CA it
/// will make, and for the revocation list it will renew. Returns, per node, the key
/// paths with no certificate yet (the node makes the key at apply if it has none).
fn preview_tunnel(
    ctx: &Ctx,
    model: &crate::model::ClusterModel,
    all: &[NodeRecord],
    selected: &[NodeRecord],
    record: Option<&crate::store::TunnelRecord>,
    tunnel: &mut TunnelMaterial,
) -> BTreeMap<String, Vec<String>> {
    let now = ctx.clock.now().unix_timestamp();
    let mut keys = BTreeMap::<String, Vec<String>>::new();
    let wanted = wanted_tunnel_keys(model, all, selected);
    let mut issues = false;
    for (purpose, node, path) in &wanted {
        let have = record.and_then(|r| r.certs.get(&format!("{purpose}/{}", node.name)));
        // csync2 certificates change with the key alone (see `ensure_tunnel`).
        let kept = have.is_some_and(|(pem, _, _)| {
            *purpose == "csync2"
                || clustermgr_protocol::identity::CertSummary::parse_pem(pem)
                    .is_ok_and(|c| c.not_after - now > TUNNEL_RENEW_BEFORE_SECS)
        });
        if kept {
            continue;
        }
        issues = true;
        let certs = if *purpose == "csync2" {
            &mut tunnel.csync2_certs
        } else {
            &mut tunnel.certs
        };
        certs.insert(node.name.clone(), generate::ISSUED_AT_APPLY.into());
        if have.is_none() {
            keys.entry(node.name.clone())
                .or_default()
                .push(path.to_string());
        }
    }
    match record {
        None if !wanted.is_empty() => {
            tunnel.ca_pem = generate::ISSUED_AT_APPLY.into();
            tunnel.crl_pem = generate::ISSUED_AT_APPLY.into();
        }
        Some(r) if issues || r.crl_next_update - now < CRL_RENEW_BEFORE_SECS => {
            tunnel.crl_pem = generate::ISSUED_AT_APPLY.into();
        }
        _ => {}
    }
    keys
}

/// Whether a digest given to `apply` (whole, or its first 12 or more characters, as
/// the plan prints it) is `now`'s.
fn digest_matches(given: &str, now: &str) -> bool {
    let given = given.trim().to_ascii_lowercase();
    given.len() >= DIGEST_SHOWN && now.starts_with(&given)
}

/// How many characters of a plan's digest it prints, and the fewest apply accepts.
pub const DIGEST_SHOWN: usize = 12;

/// The digest of what `apply` will send `desired` (on the [`Basis::Preview`]): a plan
/// prints it, and an apply given it refuses when the desired state has moved since.
fn plan_digest(desired: &[NodeDesired]) -> Result<String, CtlError> {
    let parts: Vec<_> = desired
        .iter()
        .map(|d| {
            let holds: Vec<(&str, u32)> = d
                .holds
                .iter()
                .map(|h| (h.path.as_str(), h.generation))
                .collect();
            (
                &d.node.name,
                &d.entries,
                &d.waiting,
                holds,
                &d.generated_keys,
            )
        })
        .collect();
    // Plain data with string keys: serialising it cannot fail, short of memory.
    let bytes = serde_json::to_vec(&parts)
        .map_err(|e| CtlError::Serve(format!("cannot digest the plan: {e}")))?;
    Ok(clustermgr_protocol::identity::sha256_hex(&bytes))
}

fn scope_text(s: &Scope) -> String {
    match s {
        Scope::Host => "host".into(),
        Scope::Container { root } => format!("container {root}"),
    }
}

fn describe_action(a: &Action) -> String {
    match a {
        Action::Service { name, verb } => format!("{} {name}", verb.as_str()),
        Action::Command(c) => c.display_line(),
        Action::JavaTrust { alias, cert } => format!("trust {cert} in Java's cacerts as {alias}"),
        Action::RestartInstalled { services } => {
            format!("restart {} (those installed)", services.join(", "))
        }
    }
}

fn describe_validator(v: &Validator, path: &str) -> String {
    match v {
        Validator::Nginx => format!("nginx -t -c {path}"),
        Validator::Command(c) => c.display_line(),
        Validator::Replication { suffix, .. } => format!("replication of {suffix}"),
    }
}

fn meta_text(m: &Meta) -> String {
    format!("{:04o} {}:{}", m.mode, m.uid, m.gid)
}

fn now_ms(ctx: &Ctx) -> i64 {
    (ctx.clock.now().unix_timestamp_nanos() / 1_000_000) as i64
}

/// A random csync2 key: 64 characters of csync2's own key alphabet.
fn new_csync2_key() -> Result<Vec<u8>, CtlError> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._";
    let mut raw = [0u8; 64];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut raw)
        .map_err(|_| CtlError::Random("making the csync2 key"))?;
    Ok(raw.iter().map(|b| ALPHABET[(*b & 63) as usize]).collect())
}

/// A password the controller makes for a service (Redis's `requirepass`, the LDAP
/// replication account): 40 letters and digits (238 bits), so it needs no quoting in
/// any file, JSON or slapd setting it goes into.
pub(crate) fn new_password() -> Result<String, CtlError> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut out = String::with_capacity(40);
    while out.len() < 40 {
        let mut raw = [0u8; 64];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut raw)
            .map_err(|_| CtlError::Random("making a password"))?;
        // Only bytes below the largest multiple of 62, so every character is as likely.
        out.extend(
            raw.iter()
                .filter(|b| usize::from(**b) < 248)
                .map(|b| char::from(ALPHABET[usize::from(*b) % 62]))
                .take(40 - out.len()),
        );
    }
    Ok(out)
}

/// The generators' output for `selected`, with the cluster's secrets generated once.
/// Whether the desired state is what `apply` will send, or what it will send as far as
/// it can be known before apply runs (a plan, and the check of the plan's digest).
enum Basis {
    /// With the certificates the store holds now.
    Now,
    /// With [`generate::ISSUED_AT_APPLY`] where apply will issue a certificate, make the
    /// tunnel CA or renew its revocation list first.
    Preview,
    /// The preview from the tunnel record as it was (before apply issued anything): how
    /// apply checks, after rendering, that the plan approved still holds.
    PreviewAsOf(Option<crate::store::TunnelRecord>),
}

fn desired_for(
    ctx: &Ctx,
    selected: &[NodeRecord],
    basis: &Basis,
) -> Result<Vec<NodeDesired>, CtlError> {
    let all = ctx.store.nodes()?;
    let model = ctx.store.model()?;
    let mut stored = ctx.store.secrets()?;
    if stored.csync2_key.is_none() && all.iter().filter(|n| n.has_role(Role::Gluu)).count() > 1 {
        let key = new_csync2_key()?;
        stored = ctx.store.update_secrets(|s| {
            s.csync2_key.get_or_insert(key);
        })?;
    }
    let mut build = ctx.store.build()?;
    if build.redis_password.is_none() && model.cache == crate::model::Cache::Redis {
        let password = new_password()?;
        // In the store's transaction: two plans at once keep one password.
        build = ctx.store.update_build(|b| {
            b.redis_password.get_or_insert(password);
            b.clone()
        })?;
    }
    let secrets = Secrets {
        csync2_key: stored.csync2_key.clone(),
        tls: stored_certificate(stored.tls_cert_pem.as_deref())?.zip(stored.tls_key_pem.clone()),
        redis_password: build.redis_password.clone(),
    };
    let record = match basis {
        Basis::PreviewAsOf(r) => r.clone(),
        _ => ctx.store.tunnel()?,
    };
    let mut tunnel = match &record {
        Some(t) => {
            let pick = |purpose: &str| {
                t.certs
                    .iter()
                    .filter_map(|(k, (pem, _, _))| {
                        let (p, node) = k.split_once('/')?;
                        (p == purpose).then(|| (node.to_string(), pem.clone()))
                    })
                    .collect()
            };
            TunnelMaterial {
                ca_pem: t.ca_cert_pem.clone(),
                crl_pem: t.crl_pem.clone(),
                certs: pick("stunnel"),
                csync2_certs: pick("csync2"),
            }
        }
        None => TunnelMaterial::default(),
    };
    let mut made_on_node = BTreeMap::<String, Vec<String>>::new();
    if !matches!(basis, &Basis::Now) {
        made_on_node = preview_tunnel(ctx, &model, &all, selected, record.as_ref(), &mut tunnel);
    }
    let mut rendered = generate::render(&Inputs {
        build: &build,
        model: &model,
        nodes: &all,
        secrets: &secrets,
        tunnel: &tunnel,
    })?;
    let prov = ctx.store.provision()?;
    let package_files = provision::files(&prov)?;
    generate::provision::render(&model, &prov, &all, &package_files, &mut rendered);
    generate::keys::render(&model, &build, &all, &ctx.store.keys()?, &mut rendered);
    let mut out = Vec::new();
    for node in selected {
        let cfg = rendered.remove(&node.name).unwrap_or_default();
        let record = ctx.store.desired(&node.name)?;
        let mut holds = Vec::new();
        let mut entries = Vec::new();
        for e in cfg.entries {
            match record
                .holds
                .iter()
                .find(|h| h.path == e.path && h.desired.scope == e.scope)
            {
                Some(h) if h.desired == e => holds.push(h.clone()),
                _ => entries.push(e),
            }
        }
        out.push(NodeDesired {
            generated_keys: made_on_node.remove(&node.name).unwrap_or_default(),
            kept: Vec::new(),
            record_as: None,
            node: node.clone(),
            entries,
            waiting: cfg.waiting,
            record,
            holds,
        });
    }
    Ok(out)
}

/// What a plan says of an entry holding [`generate::ISSUED_AT_APPLY`].
const ISSUED_NOTE: &str = "holds a certificate or revocation list clustermgr issues at apply (for the key on the node); its text is known then";

/// What a plan says of a key the node generates at apply.
const GENERATED_NOTE: &str =
    "generated on the node at apply, unless it has one; the private key never leaves it";

/// The view of one entry compared by the agent.
fn entry_view(e: &Entry, p: &EntryPlan, applied: &[Entry], drift: bool) -> EntryView {
    let issued = match &e.content {
        clustermgr_protocol::changeset::Content::File { bytes, .. } => bytes
            .windows(generate::ISSUED_AT_APPLY.len())
            .any(|w| w == generate::ISSUED_AT_APPLY.as_bytes()),
        _ => false,
    };
    if issued {
        return EntryView {
            path: e.path.clone(),
            scope: scope_text(&e.scope),
            change: p.change.as_str().into(),
            secret: e.secret,
            old_sha256: p.old_sha256.clone(),
            // The stand-in's hash would be no file's.
            new_sha256: None,
            metadata: None,
            diff: None,
            drift: false,
            at_apply: Some(ISSUED_NOTE.into()),
        };
    }
    // A whole file's lines are numbered as in the file; an edit's only within the part
    // clustermgr governs (the managed block, the one property line).
    let part = !matches!(
        e.content,
        clustermgr_protocol::changeset::Content::File { .. }
    );
    let diff = match (&p.old_text, &p.new_text) {
        // Drift shows what changed on the node as the change: from what was applied to
        // what the node has, so a line added by hand is a `+`.
        (Some(old), Some(new)) if !e.secret && old != new && drift => {
            Some(unified(&e.path, new, old, part, Sides::Drift))
        }
        (Some(old), Some(new)) if !e.secret && old != new => {
            Some(unified(&e.path, old, new, part, Sides::Plan))
        }
        (None, Some(new)) if !e.secret && p.old_sha256.is_none() => {
            Some(unified(&e.path, "", new, part, Sides::Plan))
        }
        // The agent keeps a file's text on the node unless it wrote the file itself,
        // anyone there may read it and it is no known secret (README, Security): show
        // what the file will hold, and say why the other side is missing.
        (None, Some(new)) if !e.secret && p.change.writes() => Some(format!(
            "--- {path} (on the node: text not sent, since clustermgr did not write this file, or it is not readable by others, or it holds secrets)\n+++ {path} (desired)\n{}",
            new.lines().map(|l| format!("+{l}\n")).collect::<String>(),
            path = e.path
        )),
        _ => None,
    };
    let metadata = match (&p.old_meta, &p.new_meta) {
        (Some(o), Some(n)) if o != n => Some(format!("{} → {}", meta_text(o), meta_text(n))),
        _ => None,
    };
    // A package is installed, not created: what will be installed (name, version,
    // from where) is said in words rather than as a diff.
    if let clustermgr_protocol::changeset::Content::Package(_) = &e.content {
        let install = p.change.writes();
        return package_view(
            e.path.clone(),
            &e.scope,
            if install {
                "install"
            } else {
                p.change.as_str()
            },
            p.new_text
                .as_deref()
                .filter(|_| install)
                .map(|t| t.trim_end().replace('\n', "; ")),
        );
    }
    let change = p.change.as_str();
    EntryView {
        path: e.path.clone(),
        scope: scope_text(&e.scope),
        change: change.into(),
        secret: e.secret,
        old_sha256: p.old_sha256.clone(),
        new_sha256: Some(p.new_sha256.clone()).filter(|h| !h.is_empty()),
        metadata,
        diff,
        // The desired entry is what was last applied, yet the disk differs: a hand edit.
        drift: p.change.writes() && applied.contains(e),
        at_apply: joins(e, p).then(|| JOIN_NOTE.to_string()),
    }
}

/// A package's entry as shown: what will be installed (name, version, from where) is
/// said in words rather than as a diff.
fn package_view(path: String, scope: &Scope, change: &str, words: Option<String>) -> EntryView {
    EntryView {
        path,
        scope: scope_text(scope),
        change: change.into(),
        secret: false,
        old_sha256: None,
        new_sha256: None,
        metadata: None,
        diff: None,
        drift: false,
        at_apply: words,
    }
}

/// What a plan says of a node's first consumers: its directory is replaced.
const JOIN_NOTE: &str = "this node joins LDAP replication: its own o=gluu is emptied and replaced by the cluster's (never the reverse); apply waits until it has caught up";

/// Whether applying `e` as planned makes the node take the cluster's directory: its
/// first consumers, on a node that replicates from nobody yet.
fn joins(e: &Entry, p: &EntryPlan) -> bool {
    match &e.content {
        clustermgr_protocol::changeset::Content::Ldap(a) => {
            a.join && p.change.writes() && p.old_sha256.is_none()
        }
        clustermgr_protocol::changeset::Content::OpenDj(o) => o.join && p.change.writes(),
        _ => false,
    }
}

/// Which way a diff reads.
#[derive(Clone, Copy)]
enum Sides {
    /// From the node to what apply would write.
    Plan,
    /// From what clustermgr applied to what the node has now.
    Drift,
}

fn unified(path: &str, old: &str, new: &str, part: bool, sides: Sides) -> String {
    let what = if part { ", clustermgr's part" } else { "" };
    let (from, to) = match sides {
        Sides::Plan => ("on the node", "desired"),
        Sides::Drift => ("as clustermgr applied it", "on the node now"),
    };
    let diff = similar::TextDiff::from_lines(old, new)
        .unified_diff()
        .context_radius(3)
        .header(
            &format!("{path}{what} ({from})"),
            &format!("{path}{what} ({to})"),
        )
        .to_string();
    if !part {
        return diff;
    }
    // Line numbers within the part would read as the file's: the hunks say where they
    // are instead.
    diff.lines()
        .map(|l| {
            if l.starts_with("@@") {
                "@@ within clustermgr's part of the file @@\n".to_string()
            } else {
                format!("{l}\n")
            }
        })
        .collect()
}

/// The steps an entry list would run if these entries change.
fn steps_of(entries: &[Entry], plans: &[EntryPlan]) -> (Vec<String>, Vec<String>) {
    let mut validators = Vec::new();
    let mut actions = Vec::new();
    if !plans.iter().any(|p| p.change.writes()) {
        return (validators, actions);
    }
    for (e, p) in entries.iter().zip(plans) {
        if let Some(v) = &e.validate {
            let d = describe_validator(v, &e.path);
            if !validators.contains(&d) {
                validators.push(d);
            }
        }
        if p.change.writes() {
            for a in &e.on_change {
                let d = describe_action(a);
                if !actions.contains(&d) {
                    actions.push(d);
                }
            }
        }
    }
    (validators, actions)
}

async fn agent_plan(
    ctx: &Ctx,
    node: &NodeRecord,
    entries: &[Entry],
    within: Duration,
) -> Result<Vec<EntryPlan>, NodeFailure> {
    let conn = ctx.link(node, within).await?;
    provision::upload(ctx, conn.as_ref(), entries).await?;
    let set = ChangeSet {
        revision: 0,
        entries: entries.to_vec(),
        requested_by: String::new(),
    };
    match conn.request(&Request::Plan(set), PLAN_TIMEOUT).await? {
        Reply::Planned(p) if p.len() == entries.len() => Ok(p),
        Reply::Error(e) => Err(NodeFailure::failed(e.message)),
        other => Err(NodeFailure::failed(format!(
            "unexpected reply to a plan: {}",
            reply_kind(&other)
        ))),
    }
}

/// An agent's failure or refusal on `node`: the operation failed there (exit 1), it
/// was no usage error.
fn agent_error(node: &str, message: String) -> CtlError {
    CtlError::Agent {
        node: node.to_string(),
        message,
    }
}

/// What an unexpected reply was, in words (never its contents).
fn unexpected(reply: &Reply) -> String {
    format!("unexpected reply {}", reply_kind(reply))
}

/// A reply's variant, for messages (never its contents).
fn reply_kind(r: &Reply) -> &'static str {
    match r {
        Reply::Planned(_) => "Planned",
        Reply::Applied(_) => "Applied",
        Reply::Error(_) => "Error",
        _ => "another reply",
    }
}

fn failed_plan(d: &NodeDesired, f: NodeFailure) -> NodePlanView {
    let o = NodeOutcome::failure(&d.node.name, f);
    NodePlanView {
        node: d.node.name.clone(),
        state: o.state,
        message: o.message,
        entries: Vec::new(),
        unchanged: 0,
        validators: Vec::new(),
        actions: Vec::new(),
        waiting: d.waiting.clone(),
        held: held_list(&d.holds),
        pending_revision: d.record.pending.as_ref().map(|p| p.0),
    }
}

fn held_list(holds: &[Hold]) -> Vec<HeldView> {
    holds
        .iter()
        .map(|h| HeldView {
            path: h.path.clone(),
            generation: h.generation,
        })
        .collect()
}

/// `plan` (what `apply` would do) or, with `drift`, what was edited on the nodes since
/// clustermgr last applied (their last applied entries compared with the disk).
pub async fn plan(
    ctx: &Ctx,
    selector: &str,
    drift: bool,
    within: Duration,
) -> Result<View, CtlError> {
    let selected = select(&ctx.store.nodes()?, selector)?;
    let basis = if drift { Basis::Now } else { Basis::Preview };
    if !drift {
        replication::prepare(ctx, within).await?;
    }
    let mut desired = desired_for(ctx, &selected, &basis)?;
    let digest = (!drift).then(|| plan_digest(&desired)).transpose()?;
    if drift {
        for d in &mut desired {
            // A held path differs from what was applied on purpose: not drift.
            d.entries = d
                .record
                .applied
                .iter()
                .filter(|e| {
                    !d.record
                        .holds
                        .iter()
                        .any(|h| h.path == e.path && h.desired.scope == e.scope)
                })
                .cloned()
                .collect();
            d.waiting.clear();
        }
    }
    let futures = desired.iter().map(|d| async move {
        match agent_plan(ctx, &d.node, &d.entries, within).await {
            Ok(plans) => plan_view(d, &plans, drift),
            Err(f) => failed_plan(d, f),
        }
    });
    let mut views = futures_util::future::join_all(futures).await;
    if !drift {
        // Gluu, on the nodes desired state gives it to, comes first in their apply;
        // only the nodes that answered are asked (the others' plans say so already).
        let answered: Vec<NodeRecord> = selected
            .iter()
            .filter(|n| {
                views
                    .iter()
                    .any(|v| v.node == n.name && v.state == NodeState::Ok)
            })
            .cloned()
            .collect();
        for w in gluu::wanted(ctx, &answered, within).await? {
            let Some(v) = views.iter_mut().find(|v| v.node == w.node) else {
                continue;
            };
            match w.install {
                Ok(what) => v.entries.insert(
                    0,
                    package_view(
                        clustermgr_protocol::changeset::PackageSpec::path("gluu-server"),
                        &Scope::Host,
                        "install",
                        Some(what),
                    ),
                ),
                Err(why) => v.waiting.push(why),
            }
        }
    }
    views.sort_by(|a, b| a.node.cmp(&b.node));
    Ok(View::Plan {
        views,
        drift,
        digest,
    })
}

fn plan_view(d: &NodeDesired, plans: &[EntryPlan], drift: bool) -> NodePlanView {
    let applied = &d.record.applied;
    let mut entries = Vec::new();
    let mut unchanged = 0;
    for (e, p) in d.entries.iter().zip(plans) {
        if p.change.writes()
            || (!drift && p.change == clustermgr_protocol::changeset::Change::Waiting)
        {
            let mut v = entry_view(e, p, applied, drift);
            if drift {
                v.drift = p.change.writes();
            }
            entries.push(v);
        } else {
            unchanged += 1;
        }
    }
    // Made by the node itself, so never an entry: listed first, as apply makes them
    // before it writes anything.
    let keys = d.generated_keys.iter().map(|path| EntryView {
        path: path.clone(),
        scope: scope_text(&Scope::Host),
        change: "create".into(),
        secret: true,
        old_sha256: None,
        new_sha256: None,
        metadata: None,
        diff: None,
        drift: false,
        at_apply: Some(GENERATED_NOTE.into()),
    });
    let entries = keys.chain(entries).collect();
    let (validators, actions) = if drift {
        (Vec::new(), Vec::new())
    } else {
        steps_of(&d.entries, plans)
    };
    NodePlanView {
        node: d.node.name.clone(),
        state: NodeState::Ok,
        message: None,
        entries,
        unchanged,
        validators,
        actions,
        waiting: d.waiting.clone(),
        held: held_list(&d.holds),
        pending_revision: d.record.pending.as_ref().map(|p| p.0),
    }
}

/// What an apply is asked to do, and how the audit log names it.
#[derive(Clone, Debug)]
pub struct ApplyAsk<'a> {
    /// The node selector.
    pub selector: &'a str,
    /// One node at a time, stopping at the first that does not come through.
    pub rolling: bool,
    /// The digest of the plan the user approved.
    pub approved: Option<&'a str>,
    /// The audited action and the nodes it is about, when the apply serves another
    /// operation (`drain gluu2` applies the load balancers); `apply` and the nodes
    /// applied otherwise.
    pub on_behalf: Option<(&'a str, &'a str)>,
}

/// `apply`: every selected node at once, or one at a time with `rolling`, stopping at
/// the first node that does not come through.
pub async fn apply(
    ctx: &Ctx,
    user: &str,
    ask: &ApplyAsk<'_>,
    within: Duration,
    events: &mpsc::Sender<Event>,
) -> Result<View, CtlError> {
    let ApplyAsk {
        selector, approved, ..
    } = *ask;
    let selected = select(&ctx.store.nodes()?, selector)?;
    // The plan approved is exactly what is applied, or nothing is: checked before
    // anything is issued, and again on the desired state rendered to send, in case the
    // model moved meanwhile.
    // serverIDs, the account's password and the peers' LDAP certificates, as the plan
    // approved had them (made then, or now if no plan ran).
    replication::prepare(ctx, within).await?;
    let before = Basis::PreviewAsOf(ctx.store.tunnel()?);
    let check = |approved: &str| -> Result<(), CtlError> {
        let now = plan_digest(&desired_for(ctx, &selected, &before)?)?;
        if digest_matches(approved, &now) {
            Ok(())
        } else {
            Err(CtlError::PlanChanged {
                approved: approved.to_string(),
                now: now[..DIGEST_SHOWN].to_string(),
            })
        }
    };
    if let Some(approved) = approved {
        check(approved)?;
    }
    let key_problems = ensure_tunnel(ctx, &selected, within).await?;
    let mut desired = desired_for(ctx, &selected, &Basis::Now)?;
    if let Some(approved) = approved {
        check(approved)?;
    }
    // Gluu first on the nodes desired state gives it to, one at a time; a node whose
    // install failed gets nothing else (its container may be set up in part).
    let (installs, mut selected) = install_gluu(ctx, user, selected, within, events).await?;
    if installs.iter().any(|(_, r)| r.is_ok()) {
        // The new nodes' LDAP certificates, for replication in this same apply.
        replication::prepare(ctx, within).await?;
        desired = desired_for(ctx, &selected, &Basis::Now)?;
    } else {
        desired.retain(|d| selected.iter().any(|n| n.name == d.node.name));
    }
    selected.sort_by(|a, b| a.name.cmp(&b.name));
    let mut round = Round {
        selected: &selected,
        desired,
        key_problems: &key_problems,
        why: "",
    };
    let mut views = apply_round(ctx, user, ask, &round, within, events).await?;
    // A node that joined LDAP replication (its consumers caught up) is a provider for
    // its peers from now on: one more round gives them consumers of it.
    if replication::count_in(ctx, &round.desired, &views)? {
        round.desired = desired_for(ctx, &selected, &Basis::Now)?;
        round.why = ", LDAP replication from the nodes that joined";
        let again = apply_round(ctx, user, ask, &round, within, events).await?;
        views = merge_rounds(views, again);
    }
    for (node, result) in installs {
        match result {
            Ok(steps) => {
                if let Some(v) = views.iter_mut().find(|v| v.node == node) {
                    v.steps.splice(0..0, steps);
                    if v.result == "unchanged" {
                        // Gluu was installed, whatever its configuration needed.
                        v.result = "applied".into();
                    }
                }
            }
            Err(v) => views.push(*v),
        }
    }
    views.sort_by(|a, b| a.node.cmp(&b.node));
    Ok(View::Applied(views))
}

/// A node's Gluu install in an apply: its steps, or the view of its failure.
type Installed = (String, Result<Vec<StepView>, Box<NodeApplyView>>);

/// Gluu on each of `selected` that desired state gives it to ([`gluu::wanted`]), one
/// node at a time: per node installed, its steps, or the view of its failure; and the
/// nodes the apply goes on with (all but those whose install failed).
async fn install_gluu(
    ctx: &Ctx,
    user: &str,
    selected: Vec<NodeRecord>,
    within: Duration,
    events: &mpsc::Sender<Event>,
) -> Result<(Vec<Installed>, Vec<NodeRecord>), CtlError> {
    let mut out = Vec::new();
    let mut failed = Vec::new();
    for w in gluu::wanted(ctx, &selected, within).await? {
        if w.install.is_err() {
            // What it waits for, the plan says; its configuration goes on.
            continue;
        }
        let (ok, message, steps) =
            match gluu::install(ctx, user, &w.node, false, None, within, events).await {
                Ok(v) => (v.ok, v.message, v.steps),
                Err(e) => (false, e.to_string(), Vec::new()),
            };
        if ok {
            out.push((w.node, Ok(steps)));
            continue;
        }
        failed.push(w.node.clone());
        let message = if message.contains("--setup-password-file") {
            format!(
                "{message} (`clustermgr gluu install {} --setup-password-file FILE` installs it with the password the primary's setup was encrypted with)",
                w.node
            )
        } else {
            message
        };
        let view = NodeApplyView {
            node: w.node.clone(),
            state: NodeState::Failed,
            result: "failed".into(),
            message: Some(format!(
                "Gluu was not installed, so nothing else was applied there: {message}"
            )),
            revision: 0,
            entries: Vec::new(),
            steps,
        };
        out.push((w.node, Err(Box::new(view))));
    }
    let rest = selected
        .into_iter()
        .filter(|n| !failed.contains(&n.name))
        .collect();
    Ok((out, rest))
}

/// One round's views merged into the first's: what both changed, the later outcome
/// unless the first failed.
fn merge_rounds(first: Vec<NodeApplyView>, second: Vec<NodeApplyView>) -> Vec<NodeApplyView> {
    first
        .into_iter()
        .map(|mut a| {
            let Some(b) = second.iter().find(|b| b.node == a.node) else {
                return a;
            };
            a.entries.extend(b.entries.iter().cloned());
            a.steps.extend(b.steps.iter().cloned());
            a.revision = b.revision;
            if a.state == NodeState::Ok {
                a.state = b.state.clone();
                if b.result != "unchanged" || a.result == "unchanged" {
                    a.result = b.result.clone();
                }
                a.message = b.message.clone();
            }
            a
        })
        .collect()
}

/// What one round of an apply sends.
struct Round<'a> {
    selected: &'a [NodeRecord],
    desired: Vec<NodeDesired>,
    key_problems: &'a BTreeMap<String, String>,
    /// Why this round, for the audit (`""` for the first).
    why: &'static str,
}

/// One round of an apply: a new revision sent to the round's nodes (one at a time when
/// rolling), audited, with each node's outcome as it comes.
async fn apply_round(
    ctx: &Ctx,
    user: &str,
    ask: &ApplyAsk<'_>,
    round: &Round<'_>,
    within: Duration,
    events: &mpsc::Sender<Event>,
) -> Result<Vec<NodeApplyView>, CtlError> {
    let ApplyAsk {
        rolling, on_behalf, ..
    } = *ask;
    let Round {
        selected,
        desired,
        key_problems,
        why,
    } = round;
    let revision = ctx.store.next_revision()?;
    let names: Vec<String> = selected.iter().map(|n| n.name.clone()).collect();
    let detail = format!(
        "revision {revision}{}{why}",
        if rolling { ", rolling" } else { "" }
    );
    let (audit_id, audit) = match on_behalf {
        Some((action, node)) => ctx.audit(
            user,
            action,
            &[node.to_string()],
            &format!("on {}: {detail}", names.join(", ")),
        )?,
        None => ctx.audit(user, "apply", &names, &detail)?,
    };
    let mut pending = crate::ctx::PendingAudit::new(&ctx.store, audit_id, audit);
    let by = format!("{user}@{}", ctx.meta.name);
    let working = Event::Working {
        what: if rolling { "apply --rolling" } else { "apply" }.into(),
        nodes: names.clone(),
        sequential: rolling,
    };
    let _ = events.send(working).await;
    let mut views = Vec::new();
    if rolling {
        let mut gate = Gate::of(ctx, within).await?;
        let mut stop = false;
        for d in desired {
            if stop {
                views.push(skipped(d, revision));
                continue;
            }
            let v = rolling_one(ctx, user, &by, d, revision, &mut gate, within).await?;
            stop = v.state != NodeState::Ok;
            let _ = events.send(Event::NodeDone(done(&v))).await;
            views.push(v);
        }
    } else {
        let futures = desired.iter().map(|d| async {
            let v = apply_one(ctx, user, &by, d, revision, "apply", within).await;
            if let Ok(v) = &v {
                let _ = events.send(Event::NodeDone(done(v))).await;
            }
            v
        });
        for v in futures_util::future::join_all(futures).await {
            views.push(v?);
        }
    }
    for v in &mut views {
        if let Some(problem) = key_problems.get(&v.node) {
            // What it waits for is the administrator's to fix: not a success.
            v.state = NodeState::Failed;
            let note =
                format!("its tunnel key could not be made or read, so its tunnels wait: {problem}");
            v.message = Some(match v.message.take() {
                Some(m) => format!("{m}; {note}"),
                None => note,
            });
        }
    }
    views.sort_by(|a, b| a.node.cmp(&b.node));
    pending.finish(
        views
            .iter()
            .map(|v| (v.node.clone(), v.result.clone()))
            .collect(),
    )?;
    Ok(views)
}

/// What a rolling apply checks after each node: the cluster certificate the Gluu nodes
/// must answer HTTPS with, and whether there is a load balancer to drain from.
struct Gate {
    https: Option<(String, String)>,
    has_lb: bool,
    health: crate::health::HealthGate,
}

impl Gate {
    async fn of(ctx: &Ctx, within: Duration) -> Result<Gate, CtlError> {
        let model = ctx.store.model()?;
        let secrets = ctx.store.secrets()?;
        let https = match (model.hostname, secrets.tls_cert_pem) {
            (Some(host), Some(pem)) => {
                let der = clustermgr_protocol::identity::cert_from_pem(&pem)?;
                Some((host, clustermgr_protocol::identity::sha256_hex(&der)))
            }
            _ => None,
        };
        Ok(Gate {
            https,
            has_lb: ctx.store.nodes()?.iter().any(|n| n.has_role(Role::Lb)),
            health: crate::health::HealthGate::before(ctx, within).await?,
        })
    }
}

/// One node of a rolling apply: drained from the load balancer while it changes (a
/// Gluu node with changes), applied, checked (its validators passed, the services its
/// change touched run, and a Gluu node answers HTTPS with the cluster certificate),
/// and put back. A node that fails its check stays drained.
async fn rolling_one(
    ctx: &Ctx,
    user: &str,
    by: &str,
    d: &NodeDesired,
    revision: u64,
    gate: &mut Gate,
    within: Duration,
) -> Result<NodeApplyView, CtlError> {
    let gluu = d.node.has_role(Role::Gluu);
    let changes = match agent_plan(ctx, &d.node, &d.entries, within).await {
        Ok(p) => p.iter().any(|e| e.change.writes()),
        Err(_) => true,
    };
    let already = ctx.store.model()?.drained.contains(&d.node.name);
    let drain = gluu && gate.has_lb && changes && !already;
    if drain {
        set_drained(ctx, &d.node.name, true)?;
        if let Err(why) = push_lb(ctx, user, by, within).await {
            set_drained(ctx, &d.node.name, false)?;
            return Ok(failed_apply(
                d,
                revision,
                format!("could not drain it from the load balancer first: {why}"),
            ));
        }
    }
    // A load balancer that an earlier node's drain already brought a later revision
    // gets the current state under a new one (the agent refuses to go back).
    let current;
    let (d, revision) = if ctx.store.desired(&d.node.name)?.applied_revision > revision {
        current = desired_for(ctx, std::slice::from_ref(&d.node), &Basis::Now)?
            .pop()
            .ok_or_else(|| CtlError::unknown_node(&d.node.name, []))?;
        (&current, ctx.store.next_revision()?)
    } else {
        (d, revision)
    };
    let mut v = apply_one(ctx, user, by, d, revision, "apply", within).await?;
    if v.state == NodeState::Ok && v.result == "applied" {
        let services: Vec<String> = d
            .entries
            .iter()
            .filter(|e| {
                e.scope == Scope::Host
                    && v.entries
                        .iter()
                        .any(|c| c.path == e.path && c.scope == scope_text(&e.scope))
            })
            .flat_map(|e| e.on_change.iter())
            .filter_map(|a| match a {
                Action::Service { name, .. } => Some(name.clone()),
                Action::Command(_) | Action::JavaTrust { .. } | Action::RestartInstalled { .. } => {
                    None
                }
            })
            .fold(Vec::new(), |mut acc, n| {
                if !acc.contains(&n) {
                    acc.push(n);
                }
                acc
            });
        let https = match (&gate.https, gluu) {
            (Some((host, sha)), true) => Some(HttpsProbe {
                port: 443,
                host: host.clone(),
                path: "/".into(),
                cert_sha256: sha.clone(),
            }),
            _ => None,
        };
        let mut checks = Vec::new();
        if !services.is_empty() || https.is_some() {
            let spec = ProbeSpec { services, https };
            checks = match ctx.link(&d.node, within).await {
                Ok(conn) => match conn.unary(&Request::Probe(spec), PLAN_TIMEOUT).await {
                    Ok(Reply::Probed(steps)) => steps,
                    Ok(other) => vec![probe_failure(format!(
                        "unexpected reply: {}",
                        reply_kind(&other)
                    ))],
                    Err(f) => vec![probe_failure(f.message)],
                },
                Err(f) => vec![probe_failure(f.message)],
            };
        }
        // The cluster's health checks, once the node's own passed: no check worse
        // than before the rollout.
        if checks.iter().all(|c| c.ok) {
            let (ok, output) = match gate.health.after(ctx, &d.node.name, within).await {
                Ok(words) => (true, words),
                Err(words) => (false, words),
            };
            checks.push(clustermgr_protocol::changeset::StepRun {
                step: "the cluster's health".into(),
                ok,
                output,
            });
        }
        let failed: Vec<String> = checks
            .iter()
            .filter(|c| !c.ok)
            .map(|c| format!("{}: {}", c.step, c.output))
            .collect();
        v.steps.extend(checks.into_iter().map(StepView::from));
        if !failed.is_empty() {
            v.state = NodeState::Failed;
            v.result = "check failed".into();
            v.message = Some(format!(
                "the change is in place but the node's check failed ({}){}; the rolling apply stops here",
                failed.join("; "),
                if drain || already {
                    format!(
                        ", and it stays drained: `clustermgr undrain {}` once it is fixed",
                        d.node.name
                    )
                } else {
                    String::new()
                }
            ));
            return Ok(v);
        }
    }
    if drain && v.state == NodeState::Ok {
        set_drained(ctx, &d.node.name, false)?;
        if let Err(why) = push_lb(ctx, user, by, within).await {
            v.message = Some(format!(
                "applied, but putting it back in the load balancer failed: {why}; run `clustermgr undrain {}`",
                d.node.name
            ));
            v.state = NodeState::Failed;
        }
    } else if drain {
        // The node failed to apply: it stays out of the load balancer until fixed.
        let note = format!(
            "; it stays drained: `clustermgr undrain {}` once it is fixed",
            d.node.name
        );
        v.message = Some(v.message.unwrap_or_default() + &note);
    }
    Ok(v)
}

fn probe_failure(message: String) -> clustermgr_protocol::changeset::StepRun {
    clustermgr_protocol::changeset::StepRun {
        step: "the check".into(),
        ok: false,
        output: message,
    }
}

fn set_drained(ctx: &Ctx, node: &str, down: bool) -> Result<(), CtlError> {
    ctx.store.update_model(|m| {
        m.drained.retain(|n| n != node);
        if down {
            m.drained.push(node.to_string());
            m.drained.sort();
        }
        Ok(())
    })?;
    Ok(())
}

/// Applies the load balancers' desired state (after a drain or undrain).
async fn push_lb(ctx: &Ctx, user: &str, by: &str, within: Duration) -> Result<(), String> {
    let lbs: Vec<NodeRecord> = ctx
        .store
        .nodes()
        .map_err(|e| e.to_string())?
        .into_iter()
        .filter(|n| n.has_role(Role::Lb))
        .collect();
    let desired = desired_for(ctx, &lbs, &Basis::Now).map_err(|e| e.to_string())?;
    let revision = ctx.store.next_revision().map_err(|e| e.to_string())?;
    for d in &desired {
        let v = apply_one(ctx, user, by, d, revision, "drain", within)
            .await
            .map_err(|e| e.to_string())?;
        if v.state != NodeState::Ok {
            return Err(format!("{}: {}", v.node, v.message.unwrap_or(v.result)));
        }
    }
    Ok(())
}

fn done(v: &NodeApplyView) -> NodeOutcome {
    NodeOutcome {
        state: v.state.clone(),
        message: Some(v.message.clone().unwrap_or_else(|| v.result.clone())),
        ..NodeOutcome::new(&v.node)
    }
}

fn skipped(d: &NodeDesired, revision: u64) -> NodeApplyView {
    NodeApplyView {
        node: d.node.name.clone(),
        state: NodeState::Skipped,
        result: "skipped".into(),
        message: Some("not tried: an earlier node of this rolling apply failed".into()),
        revision,
        entries: Vec::new(),
        steps: Vec::new(),
    }
}

/// Applies one node's desired entries and records the outcome.
async fn apply_one(
    ctx: &Ctx,
    user: &str,
    by: &str,
    d: &NodeDesired,
    revision: u64,
    action: &str,
    within: Duration,
) -> Result<NodeApplyView, CtlError> {
    let set = ChangeSet {
        revision,
        entries: d.entries.clone(),
        requested_by: by.to_string(),
    };
    let lock = ctx.config_lock(&d.node.name);
    let _changing = lock.lock().await;
    let reply = match ctx.link(&d.node, within).await {
        Ok(conn) => match provision::upload(ctx, conn.as_ref(), &d.entries).await {
            Ok(()) => conn.request(&Request::Apply(set), APPLY_TIMEOUT).await,
            Err(f) => Err(f),
        },
        Err(f) => Err(f),
    };
    // Read again under the lock: a reconcile or a rollback may have changed it since.
    let mut record = ctx.store.desired(&d.node.name)?;
    let report = match reply {
        Ok(Reply::Applied(r)) => *r,
        Ok(Reply::Error(e)) => {
            return Ok(failed_apply(d, revision, e.message));
        }
        Ok(other) => {
            return Ok(failed_apply(
                d,
                revision,
                format!("unexpected reply to an apply: {}", reply_kind(&other)),
            ));
        }
        Err(f) => {
            let o = NodeOutcome::failure(&d.node.name, f);
            if o.state == NodeState::Unreachable {
                // Kept for serve, which sends it as soon as the node answers again.
                record.pending = Some((revision, d.entries.clone()));
                record.holds = d.holds.clone();
                ctx.store.record_desired(&record, &[])?;
                return Ok(NodeApplyView {
                    node: d.node.name.clone(),
                    state: NodeState::Unreachable,
                    result: "pending".into(),
                    message: Some(format!(
                        "{}; revision {revision} is kept for it, and `clustermgr serve` applies it when the node answers again",
                        o.message.unwrap_or_default()
                    )),
                    revision,
                    entries: Vec::new(),
                    steps: Vec::new(),
                });
            }
            return Ok(failed_apply(d, revision, o.message.unwrap_or_default()));
        }
    };
    record_apply(ctx, user, d, record, revision, action, report)
}

fn failed_apply(d: &NodeDesired, revision: u64, message: String) -> NodeApplyView {
    NodeApplyView {
        node: d.node.name.clone(),
        state: NodeState::Failed,
        result: "failed".into(),
        message: Some(message),
        revision,
        entries: Vec::new(),
        steps: Vec::new(),
    }
}

/// Stores what an agent's apply report means: the new applied state and the history.
fn record_apply(
    ctx: &Ctx,
    user: &str,
    d: &NodeDesired,
    mut record: DesiredRecord,
    revision: u64,
    action: &str,
    report: ApplyReport,
) -> Result<NodeApplyView, CtlError> {
    let (state, result, message) = match &report.result {
        ApplyResult::Stale { applied } => {
            // Also what a store restored from an older backup meets: the next apply
            // must get a revision the nodes accept.
            ctx.store.raise_revision(*applied)?;
            return Ok(NodeApplyView {
                message: Some(format!(
                    "{} already applied revision {applied}, later than {revision} (another apply reached it first); nothing was changed. Run `clustermgr plan --nodes {}` to see where it stands",
                    d.node.name, d.node.name
                )),
                result: "stale".into(),
                ..failed_apply(d, revision, String::new())
            });
        }
        ApplyResult::NotInstalled { step, output } => (
            NodeState::Failed,
            "not installed".to_string(),
            Some(format!(
                "{step} failed, so no file of this node's configuration was written (what the package manager installed before it failed stays, and the next apply goes on from there): {output}"
            )),
        ),
        ApplyResult::Applied => (NodeState::Ok, "applied".to_string(), None),
        ApplyResult::Unchanged => (NodeState::Ok, "unchanged".to_string(), None),
        ApplyResult::RolledBack {
            step,
            output,
            restored_cleanly,
        } => (
            NodeState::Failed,
            "rolled back".to_string(),
            Some(format!(
                "{step} failed, so the previous files were put back{}: {output}",
                if *restored_cleanly {
                    ""
                } else {
                    " (but re-running the actions on them failed too: see the steps)"
                }
            )),
        ),
    };
    let ok = state == NodeState::Ok;
    let time_ms = now_ms(ctx);
    let history: Vec<ChangeRecord> = d
        .entries
        .iter()
        .zip(&report.entries)
        .filter(|(_, p)| p.change.writes())
        .map(|(_, p)| ChangeRecord {
            time_ms,
            user: user.to_string(),
            action: action.to_string(),
            revision,
            node: d.node.name.clone(),
            path: p.path.clone(),
            change: p.change.as_str().into(),
            old_sha256: p.old_sha256.clone(),
            new_sha256: p.new_sha256.clone(),
            result: if ok {
                "applied".into()
            } else {
                format!("rolled back: {}", message.clone().unwrap_or_default())
            },
        })
        .collect();
    if ok {
        // Held paths keep the entry they were last applied with; a reconcile's
        // unchanged entries stay applied too, in this same write (a reader between two
        // writes would see them gone).
        let mut applied = d.entries.clone();
        applied.extend(d.kept.iter().cloned());
        for h in &d.holds {
            if let Some(prev) = record
                .applied
                .iter()
                .find(|e| e.path == h.path && e.scope == h.desired.scope)
            {
                applied.push(prev.clone());
            }
        }
        record.applied = applied;
        record.applied_revision = revision;
        record.pending = None;
        record.holds = d.holds.clone();
    }
    if let Some(instead) = &d.record_as {
        record = instead.clone();
    }
    ctx.store.record_desired(&record, &history)?;
    let entries = d
        .entries
        .iter()
        .zip(&report.entries)
        .filter(|(_, p)| p.change.writes())
        .map(|(e, p)| entry_view(e, p, &d.record.applied, false))
        .collect();
    Ok(NodeApplyView {
        node: d.node.name.clone(),
        state,
        result,
        message,
        revision,
        entries,
        steps: report.steps.into_iter().map(StepView::from).collect(),
    })
}

/// serve's reconcile: sends a node the revision it missed while unreachable, only the
/// entries that differ from what it last applied (so neither a hand edit of an
/// unchanged entry nor a rollback's hold is undone).
pub async fn reconcile(ctx: &Ctx, node: &NodeRecord) -> Result<Option<NodeApplyView>, CtlError> {
    let lock = ctx.config_lock(&node.name);
    let _changing = lock.lock().await;
    let record = ctx.store.desired(&node.name)?;
    let Some((revision, entries)) = record.pending.clone() else {
        return Ok(None);
    };
    let holds: Vec<Hold> = record.holds.clone();
    let send: Vec<Entry> = entries
        .into_iter()
        .filter(|e| !record.applied.contains(e))
        .filter(|e| !holds.iter().any(|h| &h.desired == e))
        .collect();
    let mut keep = record.applied.clone();
    keep.retain(|a| !send.iter().any(|s| s.path == a.path && s.scope == a.scope));
    let d = NodeDesired {
        node: node.clone(),
        entries: send,
        waiting: Vec::new(),
        record: record.clone(),
        holds,
        generated_keys: Vec::new(),
        kept: keep,
        record_as: None,
    };
    let set = ChangeSet {
        revision,
        entries: d.entries.clone(),
        requested_by: format!("serve@{}", ctx.meta.name),
    };
    let conn = match ctx.link(node, ctx.dialer.connect_timeout).await {
        Ok(c) => c,
        Err(_) => return Ok(None),
    };
    let sent = match provision::upload(ctx, conn.as_ref(), &d.entries).await {
        Ok(()) => conn.request(&Request::Apply(set), APPLY_TIMEOUT).await,
        Err(f) => Err(f),
    };
    let report = match sent {
        Ok(Reply::Applied(r)) => *r,
        Ok(Reply::Error(e)) => {
            let mut rec = record;
            rec.pending = None;
            ctx.store.record_desired(&rec, &[])?;
            return Ok(Some(failed_apply(&d, revision, e.message)));
        }
        _ => return Ok(None),
    };
    let view = record_apply(ctx, "serve", &d, record, revision, "reconcile", report)?;
    if view.state != NodeState::Ok {
        // A revision the node refuses is not retried on every reconnect.
        let mut rec = ctx.store.desired(&node.name)?;
        rec.pending = None;
        ctx.store.record_desired(&rec, &[])?;
    }
    Ok(Some(view))
}

/// `history`.
pub fn history(
    ctx: &Ctx,
    selector: &str,
    path: Option<&str>,
    limit: usize,
) -> Result<View, CtlError> {
    let nodes: Vec<String> = if selector == "all" {
        Vec::new()
    } else {
        select(&ctx.store.nodes()?, selector)?
            .into_iter()
            .map(|n| n.name)
            .collect()
    };
    let lines = ctx.store.changes(limit, |c| {
        (nodes.is_empty() || nodes.contains(&c.node)) && path.is_none_or(|p| c.path == p)
    })?;
    Ok(View::History(
        lines
            .into_iter()
            .map(|(id, r)| ChangeView {
                id,
                time: rfc3339_ms(r.time_ms),
                time_ms: r.time_ms,
                user: r.user,
                action: r.action,
                revision: r.revision,
                node: r.node,
                path: r.path,
                change: r.change,
                old_sha256: r.old_sha256,
                new_sha256: r.new_sha256,
                result: r.result,
            })
            .collect(),
    ))
}

/// `cluster set`.
pub fn cluster_set(ctx: &Ctx, user: &str, key: &str, value: &str) -> Result<View, CtlError> {
    if key == replication::KEY {
        return replication::set(ctx, user, value);
    }
    if provision::KEYS.contains(&key) {
        return provision::set(ctx, user, key, value);
    }
    let model = ctx.store.update_model(|m| m.set(key, value))?;
    let shown = model
        .rows()
        .into_iter()
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
        .unwrap_or_default();
    // The value as stored (`manage-hosts yes` is `true`), not as typed.
    ctx.audited(user, "cluster set", &[], &format!("{key} = {shown}"), "set")?;
    said(
        ctx,
        format!("{key} = {shown}; run `clustermgr plan` to see what changes on the nodes"),
    )
}

/// The settings as they are now, with what a change did in words.
fn said(ctx: &Ctx, sentence: String) -> Result<View, CtlError> {
    let mut view = cluster_view(ctx)?;
    view.said = Some(sentence);
    Ok(View::Cluster(Box::new(view)))
}

/// `cluster unset KEY`: a setting back to its default, a secret forgotten.
pub fn cluster_unset(ctx: &Ctx, user: &str, key: &str) -> Result<View, CtlError> {
    match key {
        "tls-cert" => drop(ctx.store.update_secrets(|s| s.tls_cert_pem = None)?),
        "tls-key" => drop(ctx.store.update_secrets(|s| s.tls_key_pem = None)?),
        replication::KEY => return replication::set(ctx, user, "off"),
        k if provision::KEYS.contains(&k) => provision::unset(ctx, k)?,
        _ => drop(ctx.store.update_model(|m| m.unset(key))?),
    }
    ctx.audited(user, "cluster unset", &[], key, "back to its default")?;
    said(
        ctx,
        format!(
            "{key} is back to its default; run `clustermgr plan` to see what changes on the nodes"
        ),
    )
}

/// The certificate chain of a `tls-cert` file: its CERTIFICATE blocks only, since the
/// load balancer gets it in a file anyone there may read and `plan` prints it. A file
/// that also holds a private key is refused, so the key is not kept by mistake.
fn certificate_blocks(text: &str) -> Result<String, CtlError> {
    if text.contains("PRIVATE KEY-----") {
        return Err(CtlError::BadSetting {
            key: "tls-cert".into(),
            why: "the file also holds a private key; give the certificate (and its chain) alone with `cluster set tls-cert FILE`, and the key with `cluster set tls-key FILE`".into(),
        });
    }
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find(BEGIN) {
        let Some(len) = rest[start..].find(END) else {
            break;
        };
        out.push_str(&rest[start..start + len + END.len()]);
        out.push('\n');
        rest = &rest[start + len + END.len()..];
    }
    if out.is_empty() {
        return Err(CtlError::BadSetting {
            key: "tls-cert".into(),
            why: "the file holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into(),
        });
    }
    Ok(out)
}

/// The stored `tls-cert` as the load balancer gets it: its CERTIFICATE blocks, again,
/// since one stored before `cluster set tls-cert` kept only those may hold more; one
/// that holds a private key is refused rather than written where others may read it.
fn stored_certificate(pem: Option<&str>) -> Result<Option<String>, CtlError> {
    match pem {
        Some(pem) if pem.contains("PRIVATE KEY-----") => Err(CtlError::BadSetting {
            key: "tls-cert".into(),
            why: "the stored certificate holds a private key too (it was set before `cluster set tls-cert` kept certificates only), and the load balancer's certificate file is readable by others; set it again with `clustermgr cluster set tls-cert FILE`, the certificate and its chain alone".into(),
        }),
        Some(pem) => certificate_blocks(pem).map(Some),
        None => Ok(None),
    }
}

/// `cluster set tls-cert FILE` / `tls-key FILE`: the PEM text, read by the CLI.
pub fn cluster_set_secret(
    ctx: &Ctx,
    user: &str,
    key: &str,
    pem: &SecretText,
) -> Result<View, CtlError> {
    let text = pem.0.trim().to_string() + "\n";
    match key {
        "tls-cert" => {
            let text = certificate_blocks(&text)?;
            ctx.store.update_secrets(|s| s.tls_cert_pem = Some(text))?;
        }
        "tls-key" => {
            if !text.contains("PRIVATE KEY-----") {
                return Err(CtlError::BadSetting {
                    key: "tls-key".into(),
                    why: "the file holds no PEM private key (-----BEGIN ... PRIVATE KEY-----)"
                        .into(),
                });
            }
            ctx.store.update_secrets(|s| s.tls_key_pem = Some(text))?;
        }
        other => {
            return Err(CtlError::NotFromFile {
                key: other.to_string(),
            });
        }
    }
    // Either half may be set first (a renewal replaces both), so a pair that does not
    // match yet is stored, said, and waited for by the load balancer's configuration.
    let stored = ctx.store.secrets()?;
    let pair = stored
        .tls_cert_pem
        .as_deref()
        .zip(stored.tls_key_pem.as_deref())
        .map(|(c, k)| crate::keymatch::compare(c, k));
    let (outcome, next) = match pair {
        Some(crate::keymatch::Pair::Differs) => (
            "set; does not match the other half yet",
            "; it does not match the other half (tls-key must be the key tls-cert certifies), so the load balancer waits: set the matching one",
        ),
        Some(crate::keymatch::Pair::Unknown(_)) => (
            "set; the pair could not be compared",
            "; whether tls-key matches tls-cert could not be checked here (nginx -t checks it at apply). Run `clustermgr plan` to see what changes on the load balancer",
        ),
        _ => (
            "set",
            "; run `clustermgr plan` to see what changes on the load balancer",
        ),
    };
    ctx.audited(
        user,
        "cluster set",
        &[],
        &format!("{key} (secret, from a file)"),
        outcome,
    )?;
    said(ctx, format!("{key} stored{next}"))
}

/// Text that is a secret: its Debug form never shows it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretText(pub String);

impl std::fmt::Debug for SecretText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretText(..)")
    }
}

/// `cluster show`.
pub fn cluster_show(ctx: &Ctx) -> Result<View, CtlError> {
    cluster_view(ctx).map(|v| View::Cluster(Box::new(v)))
}

/// The settings and secrets (by hash) as they are now.
fn cluster_view(ctx: &Ctx) -> Result<ClusterView, CtlError> {
    let model = ctx.store.model()?;
    let s = ctx.store.secrets()?;
    let digest = |b: Option<&[u8]>| {
        b.map(|b| clustermgr_protocol::identity::sha256_hex(b)[..16].to_string())
    };
    let secrets: BTreeMap<String, Option<String>> = [
        ("csync2-key", digest(s.csync2_key.as_deref())),
        (
            "tls-cert",
            digest(s.tls_cert_pem.as_deref().map(str::as_bytes)),
        ),
        (
            "tls-key",
            digest(s.tls_key_pem.as_deref().map(str::as_bytes)),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let build = ctx.store.build()?;
    let prov = ctx.store.provision()?;
    let mut rows = model.rows();
    rows.push((replication::KEY, replication::shown(build.ldap_replication)));
    rows.extend(provision::rows(&prov));
    let shown = |key: &str| {
        rows.iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let typed = ClusterSettings {
        hostname: model.hostname.clone(),
        gluu_version: model.gluu_version.clone(),
        gluu_root: model.gluu_root.clone(),
        lb_session: shown("lb-session"),
        replicated_paths: model.replicated_paths.clone(),
        cache: shown("cache"),
        manage_hosts: model.manage_hosts,
        drained: model.drained.clone(),
        ldap_replication: build.ldap_replication,
        packages: prov.packages.as_str().into(),
        package_dir: prov.package_dir.clone(),
        ntp_servers: prov.ntp_servers.clone(),
        secrets: secrets.clone(),
    };
    Ok(ClusterView {
        settings: rows
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect(),
        secrets: secrets
            .into_iter()
            .map(|(k, v)| {
                let shown = v.map_or("not set".into(), |h| format!("set (sha256 {h})"));
                (k, shown)
            })
            .collect(),
        typed,
        said: None,
    })
}

/// `drain` / `undrain`: marks a Gluu node down (or up) in the load balancer's nginx,
/// and applies that on the load balancers.
pub async fn drain(
    ctx: &Ctx,
    user: &str,
    node: &str,
    down: bool,
    within: Duration,
    events: &mpsc::Sender<Event>,
) -> Result<View, CtlError> {
    let rec = ctx.node_named(node)?;
    if !rec.has_role(Role::Gluu) {
        return Err(CtlError::NotGluu {
            node: node.to_string(),
            why: "only Gluu nodes sit behind the load balancer",
        });
    }
    if !ctx.store.nodes()?.iter().any(|n| n.has_role(Role::Lb)) {
        return Err(CtlError::NoLoadBalancer);
    }
    set_drained(ctx, node, down)?;
    let ask = ApplyAsk {
        selector: "role:lb",
        rolling: false,
        approved: None,
        on_behalf: Some((if down { "drain" } else { "undrain" }, node)),
    };
    apply(ctx, user, &ask, within, events).await
}

/// What `rollback` was asked.
#[derive(Clone, Copy, Debug)]
pub struct RollbackSpec<'a> {
    /// The node.
    pub node: &'a str,
    /// The managed path.
    pub path: &'a str,
    /// The backup generation (1, the newest, by default).
    pub generation: Option<u32>,
    /// List the generations instead.
    pub list: bool,
    /// The copy inside the Gluu container.
    pub in_container: bool,
}

/// `rollback NODE PATH [--to G] [--list] [--in-container]`.
pub async fn rollback(
    ctx: &Ctx,
    user: &str,
    what: &RollbackSpec<'_>,
    within: Duration,
) -> Result<View, CtlError> {
    let RollbackSpec {
        node,
        path,
        generation,
        list,
        in_container,
    } = *what;
    let rec = ctx.node_named(node)?;
    let lock = ctx.config_lock(node);
    let _changing = lock.lock().await;
    let mut desired = desired_for(ctx, std::slice::from_ref(&rec), &Basis::Now)?;
    let d = desired
        .pop()
        .ok_or_else(|| CtlError::unknown_node(node, []))?;
    let managed = d
        .entries
        .iter()
        .chain(d.holds.iter().map(|h| &h.desired))
        .chain(d.record.applied.iter())
        .find(|e| e.path == path && matches!(e.scope, Scope::Container { .. }) == in_container)
        .cloned()
        .ok_or_else(|| CtlError::NotManaged {
            node: node.to_string(),
            path: path.to_string(),
        })?;
    let conn = ctx
        .link(&rec, within)
        .await
        .map_err(|f| agent_error(node, f.message))?;
    if list {
        let req = Request::Backups {
            path: path.to_string(),
            scope: managed.scope.clone(),
        };
        return match conn.request(&req, PLAN_TIMEOUT).await {
            Ok(Reply::Backups(list)) => Ok(View::Generations {
                node: node.to_string(),
                path: path.to_string(),
                generations: list
                    .into_iter()
                    .map(|b| GenerationView {
                        generation: b.generation,
                        replaced_at: rfc3339(b.replaced_at_ms.div_euclid(1000)),
                        sha256: b.sha256,
                        metadata: meta_text(&b.meta),
                    })
                    .collect(),
            }),
            Ok(Reply::Error(e)) => Err(agent_error(node, e.message)),
            Ok(other) => Err(agent_error(node, unexpected(&other))),
            Err(f) => Err(agent_error(node, f.message)),
        };
    }
    let generation = generation.unwrap_or(1);
    let spec = RestoreSpec {
        path: path.to_string(),
        scope: managed.scope.clone(),
        generation,
        validate: managed.validate.clone(),
        on_change: managed.on_change.clone(),
        requested_by: format!("{user}@{}", ctx.meta.name),
    };
    let (audit_id, audit) = ctx.audit(
        user,
        "rollback",
        &[node.to_string()],
        &format!("{path} to generation {generation}"),
    )?;
    let mut pending = crate::ctx::PendingAudit::new(&ctx.store, audit_id, audit);
    let report = match conn.request(&Request::Restore(spec), APPLY_TIMEOUT).await {
        Ok(Reply::Applied(r)) => *r,
        Ok(Reply::Error(e)) => {
            pending.finish(vec![(node.to_string(), format!("failed: {}", e.message))])?;
            return Err(agent_error(node, e.message));
        }
        Ok(other) => return Err(agent_error(node, unexpected(&other))),
        Err(f) => {
            pending.finish(vec![(node.to_string(), f.message.clone())])?;
            return Err(agent_error(node, f.message));
        }
    };
    let restore_entry = Entry {
        secret: true,
        ..managed.clone()
    };
    let hold_desired = d
        .entries
        .iter()
        .find(|e| e.path == path && e.scope == managed.scope)
        .cloned()
        .unwrap_or(managed);
    let mut record = d.record.clone();
    record.node = node.to_string();
    let ok = matches!(report.result, ApplyResult::Applied | ApplyResult::Unchanged);
    if ok {
        record
            .holds
            .retain(|h| !(h.path == path && h.desired.scope == hold_desired.scope));
        record.holds.push(Hold {
            path: path.to_string(),
            desired: hold_desired,
            generation,
            at_ms: now_ms(ctx),
        });
    }
    // The restore is recorded as a hold, not as the new applied state, in the same
    // write as its history.
    let rd = NodeDesired {
        node: rec.clone(),
        entries: vec![restore_entry],
        waiting: Vec::new(),
        record: d.record.clone(),
        holds: record.holds.clone(),
        generated_keys: Vec::new(),
        kept: Vec::new(),
        record_as: Some(record),
    };
    let mut view = record_apply(ctx, user, &rd, d.record.clone(), 0, "rollback", report)?;
    if view.state == NodeState::Ok {
        view.result =
            format!("restored generation {generation}, held until the desired state changes");
    }
    pending.finish(vec![(node.to_string(), view.result.clone())])?;
    Ok(View::Applied(vec![view]))
}

/// How long tunnel certificates are valid.
const TUNNEL_CERT_DAYS: i64 = 365;
/// How long csync2 certificates are valid: csync2 pins them and ignores their dates.
const CSYNC2_CERT_DAYS: i64 = 3650;
/// A tunnel certificate is issued anew when less than this is left of it.
const TUNNEL_RENEW_BEFORE_SECS: i64 = 60 * 86_400;
/// A revocation list is renewed when less than this is left of it.
const CRL_RENEW_BEFORE_SECS: i64 = 60 * 86_400;

/// The tunnel keys `nodes` need: (purpose, node, where the key lives).
fn wanted_tunnel_keys(
    model: &crate::model::ClusterModel,
    all: &[NodeRecord],
    nodes: &[NodeRecord],
) -> Vec<(&'static str, NodeRecord, &'static str)> {
    let mut out = Vec::new();
    for n in nodes {
        if generate::csync2::member(n, all) {
            out.push(("csync2", n.clone(), generate::CSYNC2_KEY));
        }
        if model.cache == crate::model::Cache::Redis
            && (n.has_role(Role::Gluu) || n.has_role(Role::Cache))
        {
            out.push(("stunnel", n.clone(), generate::STUNNEL_KEY));
        }
    }
    out
}

/// Has every selected node that needs a tunnel key make one (on the node) and certifies
/// it with the tunnel CA, made on first need. A node whose key changed gets a new
/// certificate and the old one is revoked. Unreachable nodes are left waiting; the
/// nodes whose agent could not make or read its key are returned with the reason.
async fn ensure_tunnel(
    ctx: &Ctx,
    selected: &[NodeRecord],
    within: Duration,
) -> Result<BTreeMap<String, String>, CtlError> {
    let model = ctx.store.model()?;
    let all = ctx.store.nodes()?;
    let wanted = wanted_tunnel_keys(&model, &all, selected);
    let mut problems = BTreeMap::new();
    // With nothing to certify, only a tunnel CA that exists has a list to renew.
    if wanted.is_empty() && ctx.store.tunnel()?.is_none() {
        return Ok(problems);
    }
    let answers = futures_util::future::join_all(wanted.iter().map(|(_, node, path)| async move {
        let conn = ctx.link(node, within).await.ok()?;
        let req = Request::HostKey {
            path: path.to_string(),
            scope: Scope::Host,
        };
        match conn.request(&req, PLAN_TIMEOUT).await {
            Ok(Reply::Csr { pem }) => Some(Ok(pem)),
            Ok(Reply::Error(e)) => Some(Err(e.message)),
            _ => None,
        }
    }))
    .await;
    let mut csrs = Vec::new();
    for ((_, node, _), answer) in wanted.iter().zip(answers) {
        csrs.push(match answer {
            Some(Ok(pem)) => Some(pem),
            Some(Err(why)) => {
                tracing::warn!("{}: no tunnel key: {why}", node.name);
                problems
                    .entry(node.name.clone())
                    .and_modify(|p: &mut String| {
                        p.push_str("; ");
                        p.push_str(&why)
                    })
                    .or_insert(why);
                None
            }
            None => None,
        });
    }
    let now = ctx.clock.now();
    ctx.store.update_tunnel(|slot| {
        let rec = match slot {
            Some(r) => r,
            None => {
                let (ca, key_pem) = crate::ca::Ca::create_tunnel(&ctx.meta.name, now)?;
                slot.insert(crate::store::TunnelRecord {
                    ca_cert_pem: ca.cert_pem().to_string(),
                    ca_key_pem: key_pem,
                    ..Default::default()
                })
            }
        };
        let ca = crate::ca::Ca::load(&rec.ca_cert_pem, &rec.ca_key_pem)?;
        let mut changed = false;
        for ((purpose, node, _), csr) in wanted.iter().zip(csrs) {
            let Some(csr) = csr else { continue };
            let name = clustermgr_protocol::NodeName::new(&node.name)?;
            let key = crate::ca::csr_public_key(&name, &csr)?;
            let slot = format!("{purpose}/{}", node.name);
            // Kept while it certifies the host's key and has time left; a certificate
            // near its end is issued anew (and the old one revoked) at any apply.
            // csync2 pins its peers' certificates and never checks their dates: a new
            // one would only break the pins, so it changes with the key alone.
            let pinned = *purpose == "csync2";
            let current = rec.certs.get(&slot).is_some_and(|(pem, _, fp)| {
                if pinned {
                    *fp == key.fingerprint
                } else {
                    tunnel_cert_current(pem, fp, &key.fingerprint, now)
                }
            });
            if current {
                continue;
            }
            let days = if pinned {
                CSYNC2_CERT_DAYS
            } else {
                TUNNEL_CERT_DAYS
            };
            let issued = ca.sign_tunnel(&name, &key, now, time::Duration::days(days))?;
            if let Some((_, old, _)) = rec.certs.insert(
                slot,
                (issued.pem, issued.summary.serial, key.fingerprint.clone()),
            ) {
                rec.revoked.push((old, now.unix_timestamp()));
            }
            changed = true;
        }
        if changed || rec.crl_next_update - now.unix_timestamp() < CRL_RENEW_BEFORE_SECS {
            renew_crl(&ca, rec, now)?;
        }
        Ok(())
    })?;
    Ok(problems)
}

/// serve's tunnel keeper: when a stunnel certificate nears its end or the revocation
/// list is due, renews them (asking the connected nodes for a CSR of the key they
/// have), and gives each node that carries them a pending revision that differs from
/// what it applied only in those files, which the keeper's reconcile delivers. An
/// administrator's model changes not applied yet, and hand edits, are left alone.
/// Returns the nodes given a revision.
pub async fn renew_tunnel(ctx: &Ctx, within: Duration) -> Result<Vec<String>, CtlError> {
    let Some(rec) = ctx.store.tunnel()? else {
        return Ok(Vec::new());
    };
    let now = ctx.clock.now();
    let crl_due = rec.crl_next_update - now.unix_timestamp() < CRL_RENEW_BEFORE_SECS;
    let all = ctx.store.nodes()?;
    let due: Vec<NodeRecord> = all
        .iter()
        .filter(|n| {
            rec.certs
                .get(&format!("stunnel/{}", n.name))
                .is_some_and(|(pem, _, fp)| !tunnel_cert_current(pem, fp, fp, now))
        })
        .cloned()
        .collect();
    if due.is_empty() && !crl_due {
        return Ok(Vec::new());
    }
    for (node, why) in ensure_tunnel(ctx, &due, within).await? {
        tracing::warn!("{node}: its tunnel certificate cannot be renewed: {why}");
    }
    let carriers: Vec<NodeRecord> = all
        .into_iter()
        .filter(|n| {
            ctx.store
                .desired(&n.name)
                .is_ok_and(|d| d.applied.iter().any(is_renewed))
        })
        .collect();
    stage(
        ctx,
        desired_for(ctx, &carriers, &Basis::Now)?,
        is_renewed,
        false,
    )
    .await
}

/// Tells the progress display that `what` starts on `nodes`.
pub(crate) async fn working(
    events: &tokio::sync::mpsc::Sender<Event>,
    what: &str,
    nodes: &[String],
) {
    let _ = events
        .send(Event::Working {
            what: what.into(),
            nodes: nodes.to_vec(),
            sequential: false,
        })
        .await;
}

/// Tells the progress display that `node`'s part is over, and how.
pub(crate) async fn part_done(
    events: &tokio::sync::mpsc::Sender<Event>,
    node: &str,
    failed: Option<&str>,
) {
    let mut o = NodeOutcome::new(node);
    if let Some(why) = failed {
        o.state = NodeState::Failed;
        o.message = Some(why.to_string());
    }
    let _ = events.send(Event::NodeDone(o)).await;
}

/// Puts the entries `pick` selects, as rendered now, into a pending revision of each
/// node of `desired`, on top of what it has (or is already due to get): replacing the
/// node's own entries of those paths, and with `add` also adding those it lacks.
/// Returns the nodes given a revision; `serve`'s keeper delivers them, and
/// [`reconcile`] does at once.
async fn stage(
    ctx: &Ctx,
    desired: Vec<NodeDesired>,
    pick: fn(&Entry) -> bool,
    add: bool,
) -> Result<Vec<String>, CtlError> {
    let mut given = Vec::new();
    for d in desired {
        let lock = ctx.config_lock(&d.node.name);
        let _changing = lock.lock().await;
        let mut record = ctx.store.desired(&d.node.name)?;
        let base = match &record.pending {
            Some((_, entries)) => entries.clone(),
            None => record.applied.clone(),
        };
        let fresh: Vec<&Entry> = d.entries.iter().filter(|e| pick(e)).collect();
        let same = |a: &Entry, b: &Entry| a.path == b.path && a.scope == b.scope;
        let mut changed = false;
        let mut entries: Vec<Entry> = base
            .into_iter()
            .map(|e| {
                if !pick(&e) {
                    return e;
                }
                match fresh.iter().find(|n| same(n, &e)) {
                    Some(n) if **n != e => {
                        changed = true;
                        (*n).clone()
                    }
                    _ => e,
                }
            })
            .collect();
        if add {
            for n in &fresh {
                if !entries.iter().any(|e| same(e, n)) {
                    entries.push((*n).clone());
                    changed = true;
                }
            }
        }
        if changed {
            record.pending = Some((ctx.store.next_revision()?, entries));
            ctx.store.record_desired(&record, &[])?;
            given.push(d.node.name.clone());
        }
    }
    Ok(given)
}

/// The reply to `req` as `pick` takes it (handing back a reply of another kind), or in a
/// sentence why there is none: the agent refused, the link failed, or it answered
/// something else.
pub(crate) async fn ask<T>(
    link: &dyn crate::connect::Link,
    req: &Request,
    timeout: Duration,
    pick: impl FnOnce(Reply) -> Result<T, Reply>,
) -> Result<T, String> {
    match link.unary(req, timeout).await {
        Ok(reply) => pick(reply).map_err(|other| format!("it answered {other:?}")),
        Err(f) => Err(f.message),
    }
}

/// Gives each of `nodes` the entries `pick` selects, as rendered now, without the rest
/// of a plan: staged as a pending revision and sent at once. Per node, `None` once it
/// has them, else why not (an unreachable node keeps the revision pending, which
/// `serve` sends when it is back, as does the next `apply`).
pub async fn deliver(
    ctx: &Ctx,
    nodes: &[NodeRecord],
    pick: fn(&Entry) -> bool,
) -> Result<Vec<(String, Option<String>)>, CtlError> {
    stage(ctx, desired_for(ctx, nodes, &Basis::Now)?, pick, true).await?;
    let sent = futures_util::future::join_all(nodes.iter().map(|n| async move {
        let outcome = match reconcile(ctx, n).await {
            Ok(Some(v)) if v.state == NodeState::Ok => None,
            Ok(Some(v)) => Some(v.message.unwrap_or(v.result)),
            Ok(None) if ctx.store.desired(&n.name).is_ok_and(|d| d.pending.is_some()) => Some(
                "unreachable; it gets them when it is back (`serve`) or at the next `clustermgr apply`"
                    .to_string(),
            ),
            Ok(None) => None,
            Err(e) => Some(e.to_string()),
        };
        (n.name.clone(), outcome)
    }))
    .await;
    Ok(sent)
}

/// How the entries `pick` selects, as rendered now, compare with each of `nodes`:
/// each entry with the agent's word for it, or why the node could not say.
pub async fn compare(
    ctx: &Ctx,
    nodes: &[NodeRecord],
    pick: fn(&Entry) -> bool,
) -> Result<
    Vec<(
        String,
        Result<Vec<(Entry, clustermgr_protocol::changeset::Change)>, String>,
    )>,
    CtlError,
> {
    let desired = desired_for(ctx, nodes, &Basis::Now)?;
    let asked = futures_util::future::join_all(desired.into_iter().map(|d| async move {
        let entries: Vec<Entry> = d
            .entries
            .iter()
            .chain(d.holds.iter().map(|h| &h.desired))
            .filter(|e| pick(e))
            .cloned()
            .collect();
        let set = ChangeSet {
            revision: 0,
            entries: entries.clone(),
            requested_by: format!("compare@{}", ctx.meta.name),
        };
        let answer = match ctx.link(&d.node, ctx.dialer.connect_timeout).await {
            Err(f) => Err(f.message),
            Ok(link) => {
                ask(
                    link.as_ref(),
                    &Request::Plan(set),
                    PLAN_TIMEOUT,
                    |r| match r {
                        Reply::Planned(plans) => Ok(entries
                            .into_iter()
                            .zip(plans.into_iter().map(|p| p.change))
                            .collect()),
                        other => Err(other),
                    },
                )
                .await
            }
        };
        (d.node.name.clone(), answer)
    }))
    .await;
    Ok(asked)
}

fn is_renewed(e: &Entry) -> bool {
    e.scope == Scope::Host && generate::TUNNEL_RENEWED.contains(&e.path.as_str())
}

/// Whether an issued tunnel certificate is kept: it certifies the key the host has
/// now, and has more than [`TUNNEL_RENEW_BEFORE_SECS`] left.
fn tunnel_cert_current(
    pem: &str,
    fingerprint: &str,
    host_key: &str,
    now: time::OffsetDateTime,
) -> bool {
    fingerprint == host_key
        && clustermgr_protocol::identity::CertSummary::parse_pem(pem)
            .is_ok_and(|c| c.not_after - now.unix_timestamp() > TUNNEL_RENEW_BEFORE_SECS)
}

fn renew_crl(
    ca: &crate::ca::Ca,
    rec: &mut crate::store::TunnelRecord,
    now: time::OffsetDateTime,
) -> Result<(), CtlError> {
    rec.crl_number += 1;
    rec.crl_pem = ca.crl(&rec.revoked, now, rec.crl_number)?;
    rec.crl_next_update = (now + time::Duration::days(365)).unix_timestamp();
    Ok(())
}

/// `node remove`: revokes the node's tunnel certificates (the new revocation list
/// reaches the other nodes at the next `apply`).
pub fn revoke_tunnel(ctx: &Ctx, node: &str) -> Result<(), CtlError> {
    let now = ctx.clock.now();
    ctx.store.update_tunnel(|slot| {
        let Some(rec) = slot else {
            return Ok(());
        };
        let gone: Vec<String> = rec
            .certs
            .keys()
            .filter(|k| k.split_once('/').is_some_and(|(_, n)| n == node))
            .cloned()
            .collect();
        if gone.is_empty() {
            return Ok(());
        }
        for k in gone {
            if let Some((_, serial, _)) = rec.certs.remove(&k) {
                rec.revoked.push((serial, now.unix_timestamp()));
            }
        }
        let ca = crate::ca::Ca::load(&rec.ca_cert_pem, &rec.ca_key_pem)?;
        renew_crl(&ca, rec, now)
    })
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod certificate_tests {
    use super::*;

    #[test]
    fn a_tls_cert_file_keeps_its_certificates_only_and_one_with_a_key_is_refused() {
        let cert = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----";
        let chain = format!("Bag Attributes: x\n{cert}\nsubject=y\n{cert}\ntrailing\n");
        assert_eq!(
            certificate_blocks(&chain).unwrap(),
            format!("{cert}\n{cert}\n")
        );
        let with_key =
            format!("{cert}\n-----BEGIN PRIVATE KEY-----\nSECRET\n-----END PRIVATE KEY-----\n");
        let err = certificate_blocks(&with_key).unwrap_err().to_string();
        assert!(err.contains("also holds a private key"), "{err}");
        assert!(!err.contains("SECRET"));
        assert!(certificate_blocks("nothing").is_err());
    }

    #[tokio::test]
    async fn a_tls_cert_stored_with_its_key_before_the_filter_never_reaches_the_load_balancer() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("home");
        let now = crate::clock::Clock::now(&crate::clock::SystemClock);
        crate::ops::init(&dir, "c", 90, &crate::clock::FixedClock(now)).unwrap();
        let ctx = Ctx::open(&dir, crate::clock::system(), &Default::default(), false).unwrap();
        let nodes = [
            NodeRecord::for_tests("gluu1", "127.0.0.1:7443", &[Role::Gluu]),
            NodeRecord::for_tests("lb1", "127.0.0.2:7443", &[Role::Lb]),
        ];
        ctx.store.put_nodes(&nodes).unwrap();
        ctx.store
            .update_model(|m| {
                m.hostname = Some("idp.example.org".into());
                Ok(())
            })
            .unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["idp.example.org".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap()
            .pem();
        let key = key.serialize_pem();
        // As an older `cluster set tls-cert` stored a file that held both.
        ctx.store
            .update_secrets(|s| {
                s.tls_cert_pem = Some(format!("{cert}{key}"));
                s.tls_key_pem = Some(key.clone());
            })
            .unwrap();
        let err = match desired_for(&ctx, &nodes, &Basis::Now) {
            Ok(d) => {
                let cert_file = d
                    .iter()
                    .flat_map(|d| &d.entries)
                    .find(|e| e.path == crate::generate::nginx::CERT);
                panic!("generated, with the certificate file {cert_file:?}")
            }
            Err(e) => e.to_string(),
        };
        assert!(err.contains("tls-cert"), "{err}");
        assert!(err.contains("private key"), "{err}");
        assert!(!err.contains("PRIVATE KEY-----"), "{err}");
    }

    #[test]
    fn a_tunnel_certificate_is_kept_until_its_key_changes_or_its_end_nears() {
        let now = time::OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        let (ca, _) = crate::ca::Ca::create_tunnel("t", now).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let name = clustermgr_protocol::NodeName::new("gluu1").unwrap();
        let mut p = rcgen::CertificateParams::new(vec!["gluu1".into()]).unwrap();
        p.distinguished_name
            .push(rcgen::DnType::CommonName, "gluu1");
        let csr = p.serialize_request(&key).unwrap().pem().unwrap();
        let k = crate::ca::csr_public_key(&name, &csr).unwrap();
        let year = time::Duration::days(TUNNEL_CERT_DAYS);
        let pem = ca.sign_tunnel(&name, &k, now, year).unwrap().pem;
        let fp = k.fingerprint.as_str();
        assert!(tunnel_cert_current(&pem, fp, fp, now));
        assert!(tunnel_cert_current(
            &pem,
            fp,
            fp,
            now + time::Duration::days(300)
        ));
        assert!(!tunnel_cert_current(
            &pem,
            fp,
            fp,
            now + time::Duration::days(310)
        ));
        assert!(!tunnel_cert_current(&pem, fp, "sha256:other", now));
    }
}
