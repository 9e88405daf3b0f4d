//! Desired-state apply on the node: plan, apply, list backups and restore, all through
//! one staging routine, so a plan never claims a change an apply would not make.
//!
//! An apply is a transaction journaled in `STATE_DIR/config/txn.json` before each
//! phase: *staging* (temp files beside their targets and backups of the old files),
//! *swapping* (renames, then validators), *acting* (service reloads), *rolling back*.
//! A crash anywhere is finished at the next start ([`Engine::recover`]): before the
//! actions, the old files come back; once the actions began, the new set stands and
//! the actions run again. Either way each set is wholly old or wholly new.

mod backup;
mod dir;
mod edit;
mod gluu;
mod keys;
mod ldap;
mod nginx_conf;
mod opendj;
mod path;
mod policy;
pub(crate) mod probe;
mod step;

use std::collections::BTreeSet;
use std::fs::File;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use clustermgr_protocol::atomic_file::write_atomic;
use clustermgr_protocol::changeset::{
    ApplyReport, ApplyResult, BackupInfo, Change, ChangeSet, Content, Entry, EntryPlan, Meta,
    RestoreSpec, Scope, StepRun,
};
use clustermgr_protocol::identity::sha256_hex;
use clustermgr_protocol::message::RemoteError;
use serde::{Deserialize, Serialize};

use crate::config::AgentConfig;
use crate::journal::now_ms;
use backup::{BackupMeta, Backups};
use dir::Dir;
pub use path::check_normalized;
use step::Step;

/// How many previous versions of each file are kept.
pub const KEEP_BACKUPS: usize = 5;

/// The largest file whose text a plan carries for a diff.
const DIFF_TEXT_LIMIT: usize = 256 * 1024;

/// The apply engine of one agent. One change set at a time.
#[derive(Debug)]
pub struct Engine {
    cfg: Arc<AgentConfig>,
    /// The `[ldap]` section in force (re-read on SIGHUP), for LDAP entries.
    live_ldap: Option<crate::health::LiveLdap>,
    dir: PathBuf,
    backups: Backups,
    lock: Mutex<()>,
    /// One Gluu install, removal or component add at a time (they run for minutes,
    /// outside the apply lock, and share their scratch file).
    gluu: Mutex<()>,
}

/// An entry compared with the disk.
struct Staged {
    res: path::Resolved,
    old: Option<(Vec<u8>, Meta)>,
    /// The bytes and metadata to write; `None` when the entry waits for its file.
    new: Option<(Vec<u8>, Meta)>,
    plan: EntryPlan,
}

/// A journaled transaction.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Txn {
    id: i64,
    revision: u64,
    phase: Phase,
    items: Vec<Item>,
    /// Actions to run, already resolved; run again after a rollback once they began.
    actions: Vec<StepSpec>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum Phase {
    Staging,
    Swapping,
    Acting,
    RollingBack { acted: bool },
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Item {
    real: PathBuf,
    temp: PathBuf,
    /// The backup of the old file; `None` when there was none (undo = remove).
    backup: Option<u64>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct StepSpec {
    label: String,
    argv: Vec<String>,
    reload_or_start: Option<(Vec<String>, Vec<String>)>,
    /// Absent from a journal an older agent wrote.
    #[serde(default)]
    stdin: Option<String>,
}

impl From<&Step> for StepSpec {
    fn from(s: &Step) -> Self {
        StepSpec {
            label: s.label.clone(),
            argv: s.argv.clone(),
            reload_or_start: s.reload_or_start.clone(),
            stdin: s.stdin.clone(),
        }
    }
}

impl From<&StepSpec> for Step {
    fn from(s: &StepSpec) -> Self {
        Step {
            label: s.label.clone(),
            argv: s.argv.clone(),
            reload_or_start: s.reload_or_start.clone(),
            stdin: s.stdin.clone(),
        }
    }
}

fn meta_of(m: &std::fs::Metadata) -> Meta {
    Meta {
        mode: m.permissions().mode() & 0o7777,
        uid: m.uid(),
        gid: m.gid(),
    }
}

fn own_ids() -> (u32, u32) {
    std::fs::metadata("/proc/self").map_or((0, 0), |m| (m.uid(), m.gid()))
}

fn text_for_diff(bytes: &[u8]) -> Option<String> {
    if bytes.len() > DIFF_TEXT_LIMIT {
        return None;
    }
    String::from_utf8(bytes.to_vec()).ok()
}

impl Engine {
    /// The engine for an agent configured by `cfg`.
    pub fn new(cfg: Arc<AgentConfig>) -> Self {
        let dir = cfg.state_dir.join("config");
        Engine {
            live_ldap: None,
            backups: Backups::new(dir.join("backups"), KEEP_BACKUPS),
            dir,
            cfg,
            lock: Mutex::new(()),
            gluu: Mutex::new(()),
        }
    }

    /// LDAP entries follow `ldap`, the `[ldap]` section as the agent re-reads it.
    pub fn with_live_ldap(mut self, ldap: crate::health::LiveLdap) -> Self {
        self.live_ldap = Some(ldap);
        self
    }

    /// The configuration with the `[ldap]` section in force now.
    fn ldap_cfg(&self) -> AgentConfig {
        let mut cfg = (*self.cfg).clone();
        if let Some(l) = &self.live_ldap {
            cfg.ldap = l.lock().unwrap_or_else(|p| p.into_inner()).clone();
        }
        cfg
    }

    fn txn_path(&self) -> PathBuf {
        self.dir.join("txn.json")
    }

    fn scratch(&self) -> PathBuf {
        self.dir.join(".step-output")
    }

    /// Refuses commands when `allow_exec` is off, before anything is read or written.
    fn check_commands(&self, entries: &[Entry]) -> Result<(), RemoteError> {
        if self.cfg.allow_exec {
            return Ok(());
        }
        policy::check_commands(entries)
    }

    /// Stages `entries` and, when `allow_exec` is off, judges what they would write.
    fn stage_checked(&self, entries: &[Entry]) -> Result<Vec<Staged>, RemoteError> {
        self.check_commands(entries)?;
        let staged = self.stage_all(entries)?;
        if !self.cfg.allow_exec {
            policy::check_staged(&self.cfg, entries, &staged)?;
        }
        Ok(staged)
    }

    /// Compares one entry with the disk.
    fn stage(&self, e: &Entry, managed: &BTreeSet<PathBuf>) -> Result<Staged, String> {
        let res = path::resolve(&self.cfg, &e.scope, &e.path)?;
        let old = match read_nofollow(&res.real) {
            Ok(found) => Some(found),
            Err(err) if err.kind() == io::ErrorKind::NotFound => None,
            Err(err) => return Err(format!("cannot be read: {err}")),
        };
        // What the node holds goes back only for a file this agent wrote, that anyone
        // on the node may read anyway, and that is not a known secret: a plan must
        // not be a way to read the container's shadow file or Gluu's salt.
        let old_shown = old.as_ref().is_some_and(|(_, m)| {
            managed.contains(&res.real)
                && m.mode & 0o004 != 0
                && !policy::secret_path(&policy::host_path(&self.cfg, &res.real))
        });
        // An edit's old part is shown when the file's text may be, or when it says
        // nothing the controller does not know (absent, or what it will be anyway).
        let edit_shown =
            |ed: &edit::Edited| old_shown || ed.old_part.is_empty() || ed.old_part == ed.new_part;
        let (own_uid, own_gid) = own_ids();
        let (new, old_text, new_text) = match &e.content {
            Content::File {
                bytes,
                mode,
                owner,
                group,
            } => {
                if *mode > 0o7777 {
                    return Err(format!("has an invalid mode {mode:o}"));
                }
                let uid = match owner {
                    Some(o) => path::lookup_id(&res.base, o, false)?,
                    None => old.as_ref().map_or(own_uid, |(_, m)| m.uid),
                };
                let gid = match group {
                    Some(g) => path::lookup_id(&res.base, g, true)?,
                    None => old.as_ref().map_or(own_gid, |(_, m)| m.gid),
                };
                let meta = Meta {
                    mode: *mode,
                    uid,
                    gid,
                };
                let (ot, nt) = if e.secret {
                    (None, None)
                } else {
                    (
                        old.as_ref()
                            .filter(|(b, _)| old_shown || b == bytes)
                            .and_then(|(b, _)| text_for_diff(b)),
                        text_for_diff(bytes),
                    )
                };
                (Some((bytes.clone(), meta)), ot, nt)
            }
            Content::Property { key, value } => match &old {
                None => (None, None, None),
                Some((bytes, meta)) => {
                    let text = std::str::from_utf8(bytes)
                        .map_err(|_| "is not a text file, so it cannot be edited".to_string())?;
                    let ed = edit::set_property(text, key, value);
                    let shown = edit_shown(&ed);
                    (
                        Some((ed.text.into_bytes(), meta.clone())),
                        shown.then_some(ed.old_part),
                        Some(ed.new_part),
                    )
                }
            },
            // The LDAP part of an apply stages these; a file is never one.
            Content::Ldap(_) | Content::OpenDj(_) => {
                return Err("is an LDAP entry, not a file".into());
            }
            Content::Package(_) => return Err("is a package, not a file".into()),
            Content::Block { name, body } => match &old {
                None => (None, None, None),
                Some((bytes, meta)) => {
                    let text = std::str::from_utf8(bytes)
                        .map_err(|_| "is not a text file, so it cannot be edited".to_string())?;
                    let ed = edit::set_block(text, name, body)?;
                    let shown = edit_shown(&ed);
                    (
                        Some((ed.text.into_bytes(), meta.clone())),
                        shown.then_some(ed.old_part),
                        Some(ed.new_part),
                    )
                }
            },
        };
        let change = match (&old, &new) {
            (_, None) => Change::Waiting,
            (None, Some(_)) => Change::Create,
            (Some((ob, om)), Some((nb, nm))) => {
                if ob != nb {
                    Change::Modify
                } else if om != nm {
                    Change::Metadata
                } else {
                    Change::Unchanged
                }
            }
        };
        // Texts go back only for a diff: an entry whose bytes stay as they are has
        // none, and sending both copies of every unchanged file made a plan of a large
        // unchanged set three times its size on the wire.
        let same_bytes = matches!(change, Change::Unchanged | Change::Metadata);
        let (old_text, new_text) = if e.secret || same_bytes {
            (None, None)
        } else {
            (old_text, new_text)
        };
        let plan = EntryPlan {
            path: e.path.clone(),
            change,
            old_sha256: old.as_ref().map(|(b, _)| sha256_hex(b)),
            new_sha256: new.as_ref().map(|(b, _)| sha256_hex(b)).unwrap_or_default(),
            old_meta: old.as_ref().map(|(_, m)| m.clone()),
            new_meta: new.as_ref().map(|(_, m)| m.clone()),
            old_text,
            new_text,
        };
        Ok(Staged {
            res,
            old,
            new,
            plan,
        })
    }

    fn stage_all(&self, entries: &[Entry]) -> Result<Vec<Staged>, RemoteError> {
        let mut seen = BTreeSet::new();
        let mut out = Vec::with_capacity(entries.len());
        let mut errors = Vec::new();
        let managed = self.managed();
        for e in entries {
            match self.stage(e, &managed) {
                Ok(s) => {
                    if !seen.insert(s.res.real.clone()) {
                        errors.push(format!(
                            "{}: is named twice in one change set (as {})",
                            e.path,
                            s.res.real.display()
                        ));
                    }
                    out.push(s);
                }
                Err(why) => errors.push(format!("{}: {why}", e.path)),
            }
        }
        if errors.is_empty() {
            Ok(out)
        } else {
            Err(RemoteError::invalid(format!(
                "nothing was changed, because {}",
                errors.join("; ")
            )))
        }
    }

    /// How `set` compares with the disk and the LDAP server; writes nothing.
    pub fn plan(&self, set: &ChangeSet) -> Result<Vec<EntryPlan>, RemoteError> {
        let entries = host_for_root_container(&set.entries);
        let packages = self.stage_packages(&entries)?;
        let (files, file_index) = split_files(&entries);
        let staged = self.stage_checked(&files)?;
        let cfg = self.ldap_cfg();
        let mut session = ldap::Session::new(&cfg);
        let part = LdapPart {
            staged: self.stage_ldap(&mut session, &entries)?,
            opendj: self.stage_opendj(&cfg, &entries)?,
            session,
        };
        Ok(merged_plans(
            entries.len(),
            &file_index,
            &staged,
            &part,
            &packages,
        ))
    }

    /// Compares the package entries of `entries` with what the node has installed, and
    /// resolves what is missing from its repositories or the uploaded files.
    fn stage_packages(&self, entries: &[Entry]) -> Result<Packages, RemoteError> {
        let wanted: Vec<(usize, &clustermgr_protocol::changeset::PackageSpec)> = entries
            .iter()
            .enumerate()
            .filter_map(|(i, e)| match &e.content {
                Content::Package(p) => Some((i, p.as_ref())),
                _ => None,
            })
            .collect();
        if wanted.is_empty() {
            return Ok(Packages::default());
        }
        crate::packages::allowed(&self.cfg).map_err(RemoteError::refused)?;
        let specs: Vec<_> = wanted.iter().map(|(_, p)| *p).collect();
        let cache = crate::packages::Cache::new(&self.cfg.state_dir);
        let states = crate::packages::stage(&specs, &cache)
            .map_err(|why| RemoteError::invalid(format!("{why}; nothing was changed")))?;
        let plans = wanted
            .iter()
            .zip(&states)
            .map(|((i, _), st)| {
                let text = st.describe();
                let installed = matches!(st, crate::packages::State::Installed { .. });
                (
                    *i,
                    EntryPlan {
                        path: entries[*i].path.clone(),
                        change: if installed {
                            Change::Unchanged
                        } else {
                            Change::Create
                        },
                        old_sha256: installed.then(|| sha256_hex(text.as_bytes())),
                        new_sha256: sha256_hex(text.as_bytes()),
                        old_meta: None,
                        new_meta: None,
                        old_text: installed.then(|| text.clone()),
                        new_text: Some(text),
                    },
                )
            })
            .collect();
        Ok(Packages { plans, states })
    }

    /// Compares the OpenDJ replication entry of `entries` (at most one) with the
    /// topology.
    fn stage_opendj(
        &self,
        cfg: &AgentConfig,
        entries: &[Entry],
    ) -> Result<Vec<opendj::Staged>, RemoteError> {
        let mut out = Vec::new();
        for (i, e) in entries.iter().enumerate() {
            if let Content::OpenDj(want) = &e.content {
                if e.path != clustermgr_protocol::changeset::OPENDJ_PATH || !out.is_empty() {
                    return Err(RemoteError::invalid(format!(
                        "{}: OpenDJ replication is one entry, {}; nothing was changed",
                        e.path,
                        clustermgr_protocol::changeset::OPENDJ_PATH
                    )));
                }
                let base = path::scope_base(&self.cfg, &e.scope)
                    .map_err(|why| RemoteError::invalid(format!("{}: {why}", e.path)))?;
                // The tools' output goes to the engine's scratch file, before any apply.
                std::fs::create_dir_all(&self.dir).map_err(|err| {
                    RemoteError::internal(format!("cannot create {}: {err}", self.dir.display()))
                })?;
                let staged =
                    opendj::stage(cfg, i, e, want, base, &self.scratch()).map_err(|why| {
                        RemoteError::invalid(format!("{}: {why}; nothing was changed", e.path))
                    })?;
                out.push(staged);
            }
        }
        Ok(out)
    }

    /// Compares the LDAP entries of `entries` with the server, after the policy on
    /// them (`allow_exec = false` allows only what replication and Gluu's settings use).
    fn stage_ldap(
        &self,
        session: &mut ldap::Session,
        entries: &[Entry],
    ) -> Result<Vec<ldap::Staged>, RemoteError> {
        let mut wanted = Vec::new();
        for (i, e) in entries.iter().enumerate() {
            if let Content::Ldap(a) = &e.content {
                if !self.cfg.allow_exec {
                    ldap::check_policy(a).map_err(|why| {
                        RemoteError::refused(format!("{}: {why}; nothing was changed", e.path))
                    })?;
                }
                let base = path::scope_base(&self.cfg, &e.scope)
                    .map_err(|why| RemoteError::invalid(format!("{}: {why}", e.path)))?;
                wanted.push((i, e, a.as_ref(), base));
            }
        }
        if wanted.is_empty() {
            return Ok(Vec::new());
        }
        ldap::stage(session, wanted).map_err(|errors| {
            RemoteError::invalid(format!(
                "nothing was changed, because {}",
                errors.join("; ")
            ))
        })
    }

    /// Applies `set`: all of it or none.
    pub fn apply(&self, set: &ChangeSet) -> Result<ApplyReport, RemoteError> {
        let entries = host_for_root_container(&set.entries);
        let entries = &entries[..];
        self.check_commands(entries)?;
        let _one = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        self.settle_earlier()?;
        let applied = self.last_revision();
        if set.revision < applied {
            // Two applies crossed (a reconcile of an old revision behind a new apply):
            // the older one must not undo the newer one.
            return Ok(self.report(
                set.revision,
                Vec::new(),
                ApplyResult::Stale { applied },
                Vec::new(),
            ));
        }
        // Packages first: the files of the set are compared with what the packages
        // laid down, and their validators need the programs.
        let packages = self.stage_packages(entries)?;
        let mut installed = Vec::new();
        if let Some((label, argv)) = crate::packages::install_command(&packages.states)
            .map_err(|why| RemoteError::invalid(format!("{why}; nothing was changed")))?
        {
            let step = Step {
                label,
                argv,
                reload_or_start: None,
                stdin: None,
            };
            // The step's output goes to the engine's scratch file; a first apply makes
            // its directory.
            std::fs::create_dir_all(&self.dir).map_err(|err| {
                RemoteError::internal(format!("cannot create {}: {err}", self.dir.display()))
            })?;
            let run = step::run(&step, crate::packages::INSTALL_TIMEOUT, &self.scratch());
            let ok = run.ok;
            installed.push(run);
            if !ok {
                // Nothing of the set was compared or written: no entry to report.
                let run = &installed[0];
                let result = ApplyResult::NotInstalled {
                    step: run.step.clone(),
                    output: run.output.clone(),
                };
                return Ok(self.report(set.revision, Vec::new(), result, installed));
            }
        }
        let (files, file_index) = split_files(entries);
        let staged = self.stage_checked(&files)?;
        let cfg = self.ldap_cfg();
        let mut session = ldap::Session::new(&cfg);
        let part = LdapPart {
            staged: self.stage_ldap(&mut session, entries)?,
            opendj: self.stage_opendj(&cfg, entries)?,
            session,
        };
        let plans = merged_plans(entries.len(), &file_index, &staged, &part, &packages);
        let mut report = self.run_txn(set.revision, &files, staged, plans, part)?;
        installed.append(&mut report.steps);
        report.steps = installed;
        if matches!(report.result, ApplyResult::Applied | ApplyResult::Unchanged) {
            self.note_revision(set.revision);
        }
        Ok(report)
    }

    fn managed_path(&self) -> PathBuf {
        self.dir.join("managed.json")
    }

    /// The files this agent has written: the only ones whose text a plan may show.
    fn managed(&self) -> BTreeSet<PathBuf> {
        std::fs::read(self.managed_path())
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    fn note_managed(&self, txn: &Txn) {
        let mut managed = self.managed();
        let before = managed.len();
        managed.extend(txn.items.iter().map(|i| i.real.clone()));
        if managed.len() == before {
            return;
        }
        let written = serde_json::to_vec(&managed)
            .map_err(io::Error::other)
            .and_then(|b| write_atomic(&self.managed_path(), &b, 0o600));
        if let Err(e) = written {
            tracing::warn!("cannot record the files this agent manages: {e}");
        }
    }

    fn revision_path(&self) -> PathBuf {
        self.dir.join("revision")
    }

    /// The highest revision this node applied; 0 before the first.
    fn last_revision(&self) -> u64 {
        std::fs::read_to_string(self.revision_path())
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(0)
    }

    fn note_revision(&self, revision: u64) {
        if revision <= self.last_revision() {
            return;
        }
        let text = format!("{revision}\n");
        if let Err(e) = write_atomic(&self.revision_path(), text.as_bytes(), 0o600) {
            tracing::warn!(
                "cannot record revision {revision} in {}: {e}",
                self.revision_path().display()
            );
        }
    }

    fn run_txn(
        &self,
        revision: u64,
        entries: &[Entry],
        staged: Vec<Staged>,
        plans: Vec<EntryPlan>,
        mut ldap: LdapPart,
    ) -> Result<ApplyReport, RemoteError> {
        if !plans.iter().any(|p| p.change.writes()) {
            return Ok(ApplyReport {
                revision,
                entries: plans,
                result: ApplyResult::Unchanged,
                steps: Vec::new(),
            });
        }
        // Validators of every entry that is in place, since a changed certificate can
        // break an unchanged config that names it; actions only of changed entries.
        let mut validators: Vec<Step> = Vec::new();
        let mut actions: Vec<Step> = Vec::new();
        let written: BTreeSet<&Path> = staged
            .iter()
            .filter(|s| s.new.is_some())
            .map(|s| s.res.real.as_path())
            .collect();
        let written = |p: &Path| written.contains(p);
        for (e, s) in entries.iter().zip(&staged) {
            if let Some(v) = &e.validate
                && s.new.is_some()
            {
                let st = step::validator_step(
                    v,
                    &e.scope,
                    &s.res.base,
                    &s.res.real,
                    &e.path,
                    &self.cfg.root,
                );
                if !validators.contains(&st) {
                    validators.push(st);
                }
            }
            if s.plan.change.writes() {
                for a in &e.on_change {
                    let sts =
                        step::action_steps(a, &e.scope, &s.res.base, &self.cfg.root, &written)
                            .map_err(|why| {
                                RemoteError::invalid(format!(
                                    "{}: {why}; nothing was changed",
                                    e.path
                                ))
                            })?;
                    for st in sts {
                        if !actions.contains(&st) {
                            actions.push(st);
                        }
                    }
                }
            }
        }
        std::fs::create_dir_all(&self.dir).map_err(|e| {
            RemoteError::internal(format!("cannot create {}: {e}", self.dir.display()))
        })?;
        let id = now_ms();
        let mut txn = Txn {
            id,
            revision,
            phase: Phase::Staging,
            items: Vec::new(),
            actions: actions.iter().map(StepSpec::from).collect(),
        };
        let changed: Vec<&Staged> = staged.iter().filter(|s| s.plan.change.writes()).collect();
        for s in &changed {
            let backup = s
                .old
                .as_ref()
                .map(|_| self.backups.next_counter(&s.res.real));
            txn.items.push(Item {
                real: s.res.real.clone(),
                temp: temp_beside(&s.res.real, id, ""),
                backup,
            });
        }
        self.write_txn(&txn)?;
        if let Err(e) = self.stage_files(&txn, &changed) {
            self.discard_staging(&txn);
            return Err(e);
        }
        txn.phase = Phase::Swapping;
        if let Err(e) = self.write_txn(&txn) {
            self.discard_staging(&txn);
            return Err(e);
        }
        if let Err(e) = swap(&txn) {
            let restored = self.roll_back(&mut txn, false);
            return Ok(self.report(
                revision,
                plans,
                ApplyResult::RolledBack {
                    step: "putting the files in place".into(),
                    output: e.to_string(),
                    restored_cleanly: restored.iter().all(|r| r.ok),
                },
                restored,
            ));
        }
        let mut steps = Vec::new();
        for v in &validators {
            let r = step::run(v, step::VALIDATE_TIMEOUT, &self.scratch());
            let failed = (!r.ok).then(|| r.clone());
            steps.push(r);
            if let Some(failed) = failed {
                let result = self.undo(&mut txn, false, failed.step, failed.output, &mut steps);
                return Ok(self.report(revision, plans, result, steps));
            }
        }
        // The LDAP entries once the files they may name (a CA bundle) are in place and
        // valid; their failure undoes them, then the files.
        let mut written = ldap::Written::default();
        let cfg = self.ldap_cfg();
        let ldap_result = ldap::write(&mut ldap.session, &ldap.staged, &mut written, &mut steps)
            .and_then(|()| ldap::validate(&mut ldap.session, &ldap.staged, &mut steps))
            .and_then(|()| {
                opendj::apply(&cfg, &ldap.opendj, &mut steps, &self.scratch()).map_err(
                    |(step, output)| {
                        (
                            step,
                            format!(
                                "{output}\n(replication enabled before this step stays; the next apply enables only what is missing)"
                            ),
                        )
                    },
                )
            });
        if let Err((step, output)) = ldap_result {
            let undone = ldap::undo(&mut ldap.session, &mut written);
            let ldap_clean = undone.iter().all(|r| r.ok);
            steps.extend(undone);
            let mut result = self.undo(&mut txn, false, step, output, &mut steps);
            if let ApplyResult::RolledBack {
                restored_cleanly, ..
            } = &mut result
            {
                *restored_cleanly &= ldap_clean;
            }
            return Ok(self.report(revision, plans, result, steps));
        }
        txn.phase = Phase::Acting;
        if let Err(e) = self.write_txn(&txn) {
            // Without the journal saying so, a crash now would undo a set whose actions
            // ran: put the old files back while nothing has loaded the new ones.
            let step = "journaling the apply".to_string();
            let result = self.undo(&mut txn, false, step, e.message, &mut steps);
            return Ok(self.report(revision, plans, result, steps));
        }
        for a in &actions {
            let r = step::run(a, step::ACTION_TIMEOUT, &self.scratch());
            let failed = (!r.ok).then(|| r.clone());
            steps.push(r);
            if let Some(failed) = failed {
                let result = self.undo(&mut txn, true, failed.step, failed.output, &mut steps);
                return Ok(self.report(revision, plans, result, steps));
            }
        }
        for item in &txn.items {
            self.backups.prune(&item.real);
        }
        self.keep_ldap(txn.id, &written.kept);
        self.note_managed(&txn);
        self.clear_txn();
        Ok(self.report(revision, plans, ApplyResult::Applied, steps))
    }

    /// Rolls a transaction back after `step` failed with `output`, adding the steps the
    /// rollback ran, and says how it ended.
    fn undo(
        &self,
        txn: &mut Txn,
        acted: bool,
        step: String,
        output: String,
        steps: &mut Vec<StepRun>,
    ) -> ApplyResult {
        let undo = self.roll_back(txn, acted);
        let restored_cleanly = undo.iter().all(|r| r.ok);
        steps.extend(undo);
        ApplyResult::RolledBack {
            step,
            output,
            restored_cleanly,
        }
    }

    fn report(
        &self,
        revision: u64,
        entries: Vec<EntryPlan>,
        result: ApplyResult,
        steps: Vec<StepRun>,
    ) -> ApplyReport {
        ApplyReport {
            revision,
            entries,
            result,
            steps,
        }
    }

    fn write_txn(&self, txn: &Txn) -> Result<(), RemoteError> {
        let json = serde_json::to_vec(txn).map_err(|e| RemoteError::internal(e.to_string()))?;
        write_atomic(&self.txn_path(), &json, 0o600).map_err(|e| {
            RemoteError::internal(format!(
                "cannot write the apply journal {}: {e}",
                self.txn_path().display()
            ))
        })
    }

    fn clear_txn(&self) {
        let _ = std::fs::remove_file(self.txn_path());
        if let Ok(d) = File::open(&self.dir) {
            let _ = d.sync_all();
        }
    }

    /// Writes the backups and the temp files of a transaction.
    fn stage_files(&self, txn: &Txn, changed: &[&Staged]) -> Result<(), RemoteError> {
        for (item, s) in txn.items.iter().zip(changed) {
            if let (Some(counter), Some((bytes, meta))) = (item.backup, &s.old) {
                let bm = BackupMeta {
                    replaced_at_ms: txn.id,
                    sha256: sha256_hex(bytes),
                    meta: meta.clone(),
                };
                self.backups
                    .save(&item.real, counter, bytes, &bm)
                    .map_err(|e| {
                        RemoteError::internal(format!(
                            "cannot keep a backup of {}: {e}; nothing was changed",
                            item.real.display()
                        ))
                    })?;
            }
            let (bytes, meta) = s
                .new
                .as_ref()
                .ok_or_else(|| RemoteError::internal("no content"))?;
            write_temp(&item.temp, bytes, meta).map_err(|e| {
                RemoteError::internal(format!(
                    "cannot write {}: {e}; nothing was changed",
                    item.temp.display()
                ))
            })?;
        }
        Ok(())
    }

    /// Undoes a transaction that never swapped: its temps and backups go.
    fn discard_staging(&self, txn: &Txn) {
        for item in &txn.items {
            let _ = remove_nofollow(&item.temp);
            if let Some(c) = item.backup {
                self.backups.remove(&item.real, c);
            }
        }
        self.clear_txn();
    }

    /// Puts every old file back, and runs the actions again if they ran on the new
    /// ones. Returns the steps it ran.
    fn roll_back(&self, txn: &mut Txn, acted: bool) -> Vec<StepRun> {
        txn.phase = Phase::RollingBack { acted };
        if let Err(e) = self.write_txn(txn) {
            tracing::error!("{}", e.message);
        }
        let mut failures = Vec::new();
        for item in &txn.items {
            let _ = remove_nofollow(&item.temp);
            if let Err(e) = self.restore_item(txn.id, item) {
                failures.push(format!("{}: {e}", item.real.display()));
            }
        }
        let mut steps = Vec::new();
        if !failures.is_empty() {
            // Keep the journal and the backups: the next start tries again.
            let msg = format!(
                "could not put back the old files ({}); the agent retries at its next start",
                failures.join("; ")
            );
            tracing::error!("{msg}");
            steps.push(StepRun {
                step: "restoring the old files".into(),
                ok: false,
                output: msg,
            });
            return steps;
        }
        if acted {
            for a in &txn.actions {
                steps.push(step::run(
                    &Step::from(a),
                    step::ACTION_TIMEOUT,
                    &self.scratch(),
                ));
            }
        }
        for item in &txn.items {
            if let Some(c) = item.backup {
                self.backups.remove(&item.real, c);
            }
        }
        self.clear_txn();
        steps
    }

    fn restore_item(&self, id: i64, item: &Item) -> io::Result<()> {
        match item.backup {
            None => remove_nofollow(&item.real)?,
            Some(counter) => {
                let bytes = self.backups.read(&item.real, counter)?;
                let meta = self.backups.meta(&item.real, counter)?.meta;
                let temp = temp_beside(&item.real, id, "-undo");
                write_temp(&temp, &bytes, &meta)?;
                rename_into_place(&temp, &item.real)?;
            }
        }
        Ok(())
    }

    /// Finishes or undoes a transaction a crash interrupted. Returns what it did, for
    /// the log.
    pub fn recover(&self) -> Option<String> {
        let _one = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        self.recover_locked()
    }

    /// Finishes an earlier transaction before a new one starts (one whose journal a
    /// failed write or a failed restore left behind), or refuses to start.
    fn settle_earlier(&self) -> Result<(), RemoteError> {
        if !self.txn_path().exists() {
            return Ok(());
        }
        if let Some(what) = self.recover_locked() {
            tracing::warn!("before this apply: {what}");
        }
        if self.txn_path().exists() {
            return Err(RemoteError::internal(format!(
                "an earlier apply on this node could not be finished or undone, and its journal {} is still there; see the agent's log, fix the cause, and restart the agent to retry",
                self.txn_path().display()
            )));
        }
        Ok(())
    }

    fn recover_locked(&self) -> Option<String> {
        let text = std::fs::read(self.txn_path()).ok()?;
        let mut txn: Txn = match serde_json::from_slice(&text) {
            Ok(t) => t,
            Err(e) => {
                // write_atomic never leaves a partial journal; this is a hand edit.
                return Some(format!(
                    "the apply journal {} is unreadable ({e}); it was left in place for inspection",
                    self.txn_path().display()
                ));
            }
        };
        let what = match txn.phase {
            Phase::Staging => {
                self.discard_staging(&txn);
                "an apply interrupted while staging was discarded; no file had changed".into()
            }
            Phase::Swapping => {
                let steps = self.roll_back(&mut txn, false);
                outcome(
                    "an apply interrupted before its actions was rolled back",
                    &steps,
                )
            }
            Phase::RollingBack { acted } => {
                let steps = self.roll_back(&mut txn, acted);
                outcome("an interrupted rollback was finished", &steps)
            }
            Phase::Acting => {
                let mut steps = Vec::new();
                let mut ok = true;
                for a in &txn.actions {
                    let r = step::run(&Step::from(a), step::ACTION_TIMEOUT, &self.scratch());
                    ok &= r.ok;
                    steps.push(r);
                }
                if ok {
                    for item in &txn.items {
                        self.backups.prune(&item.real);
                    }
                    self.note_managed(&txn);
                    self.clear_txn();
                    self.note_revision(txn.revision);
                    outcome(
                        "an apply interrupted during its actions was completed",
                        &steps,
                    )
                } else {
                    steps.extend(self.roll_back(&mut txn, true));
                    outcome(
                        "an apply interrupted during its actions failed them again and was rolled back",
                        &steps,
                    )
                }
            }
        };
        Some(format!("revision {}: {what}", txn.revision))
    }

    /// The kept previous versions of `path`.
    pub fn backups(&self, path: &str, scope: &Scope) -> Result<Vec<BackupInfo>, RemoteError> {
        if clustermgr_protocol::changeset::is_ldap_path(path) {
            return Ok(self.listed(Path::new(path)));
        }
        let res = path::resolve(&self.cfg, scope, path)
            .map_err(|w| RemoteError::invalid(format!("{path}: {w}")))?;
        Ok(self.listed(&res.real))
    }

    /// The kept versions of `key` (a file, or an LDAP attribute's path), newest first.
    fn listed(&self, key: &Path) -> Vec<BackupInfo> {
        self.backups
            .list(key)
            .into_iter()
            .enumerate()
            .map(|(i, (_, m))| BackupInfo {
                generation: i as u32 + 1,
                replaced_at_ms: m.replaced_at_ms,
                sha256: m.sha256,
                meta: m.meta,
            })
            .collect()
    }

    /// The kept version `spec` asks for, or a sentence saying there is none.
    fn generation(&self, key: &Path, spec: &RestoreSpec) -> Result<(u64, BackupMeta), RemoteError> {
        let list = self.backups.list(key);
        (spec.generation as usize)
            .checked_sub(1)
            .and_then(|i| list.get(i).cloned())
            .ok_or_else(|| {
                RemoteError::invalid(format!(
                    "{}: there is no backup generation {} on this node ({} kept); list them with `clustermgr rollback NODE PATH --list`",
                    spec.path,
                    spec.generation,
                    list.len()
                ))
            })
    }

    /// Puts a kept version back, as a one-entry apply (so it is itself backed up,
    /// validated, and its actions run).
    pub fn restore(&self, spec: &RestoreSpec) -> Result<ApplyReport, RemoteError> {
        if clustermgr_protocol::changeset::is_ldap_path(&spec.path) {
            return self.restore_ldap(spec);
        }
        let res = path::resolve(&self.cfg, &spec.scope, &spec.path)
            .map_err(|w| RemoteError::invalid(format!("{}: {w}", spec.path)))?;
        let (counter, meta) = self.generation(&res.real, spec)?;
        let bytes = self.backups.read(&res.real, counter).map_err(|e| {
            RemoteError::internal(format!("cannot read the backup of {}: {e}", spec.path))
        })?;
        let entry = Entry {
            path: spec.path.clone(),
            scope: spec.scope.clone(),
            content: Content::File {
                bytes,
                mode: meta.meta.mode,
                owner: Some(meta.meta.uid.to_string()),
                group: Some(meta.meta.gid.to_string()),
            },
            // The plan this returns is not shown as a diff; keep backups' text out of it.
            secret: true,
            validate: spec.validate.clone(),
            on_change: spec.on_change.clone(),
        };
        let entries = host_for_root_container(std::slice::from_ref(&entry)).into_owned();
        self.check_commands(&entries)?;
        let _one = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        self.settle_earlier()?;
        let staged = self.stage_checked(&entries)?;
        let plans = staged.iter().map(|s| s.plan.clone()).collect();
        let ldap = LdapPart {
            session: ldap::Session::new(&self.cfg),
            staged: Vec::new(),
            opendj: Vec::new(),
        };
        self.run_txn(0, &entries, staged, plans, ldap)
    }
}

impl Engine {
    /// Keeps the previous values of the LDAP attributes an apply changed, like files'
    /// previous versions (under their `ldap:` path; owner-only, they may hold a
    /// consumer's credentials).
    fn keep_ldap(&self, id: i64, kept: &[ldap::Kept]) {
        for k in kept {
            let key = Path::new(&k.path);
            let bytes = match serde_json::to_vec(k) {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!("cannot keep the previous {}: {e}", k.path);
                    continue;
                }
            };
            let meta = BackupMeta {
                replaced_at_ms: id,
                sha256: sha256_hex(&bytes),
                meta: Meta {
                    mode: 0o600,
                    uid: 0,
                    gid: 0,
                },
            };
            let counter = self.backups.next_counter(key);
            if let Err(e) = self.backups.save(key, counter, &bytes, &meta) {
                tracing::warn!("cannot keep the previous {}: {e}", k.path);
            }
            self.backups.prune(key);
        }
    }

    /// Puts an LDAP attribute's kept values back, as a one-entry apply (so what it
    /// replaces is kept in turn, and a failure is undone).
    fn restore_ldap(&self, spec: &RestoreSpec) -> Result<ApplyReport, RemoteError> {
        let key = Path::new(&spec.path);
        let (counter, _) = self.generation(key, spec)?;
        let kept: ldap::Kept = self
            .backups
            .read(key, counter)
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
            .map_err(|e| {
                RemoteError::internal(format!("cannot read the kept {}: {e}", spec.path))
            })?;
        let attr = kept.restoring();
        let entry = Entry {
            path: attr.path(),
            scope: spec.scope.clone(),
            content: Content::Ldap(Box::new(attr)),
            secret: false,
            validate: spec.validate.clone(),
            on_change: spec.on_change.clone(),
        };
        let entries = vec![entry];
        let _one = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        self.settle_earlier()?;
        let cfg = self.ldap_cfg();
        let mut session = ldap::Session::new(&cfg);
        let staged = self.stage_ldap(&mut session, &entries)?;
        let mut plans: Vec<EntryPlan> = staged.iter().map(|s| s.plan.clone()).collect();
        // Reported under the path the controller asked for.
        for p in &mut plans {
            p.path = spec.path.clone();
        }
        self.run_txn(
            0,
            &[],
            Vec::new(),
            plans,
            LdapPart {
                session,
                staged,
                opendj: Vec::new(),
            },
        )
    }

    /// The reply to a request the engine serves, for `node` (blocking: file work, and
    /// a validator or a service action may run). The server and the controller's
    /// in-process stand-in agents both answer through this.
    pub fn answer(
        &self,
        req: &clustermgr_protocol::message::Request,
        node: &clustermgr_protocol::NodeName,
    ) -> Result<clustermgr_protocol::message::Reply, RemoteError> {
        use clustermgr_protocol::message::{Reply, Request};
        match req {
            Request::Plan(set) => self.plan(set).map(Reply::Planned),
            Request::Apply(set) => self.apply(set).map(|r| Reply::Applied(Box::new(r))),
            Request::Backups { path, scope } => self.backups(path, scope).map(Reply::Backups),
            Request::Restore(spec) => self.restore(spec).map(|r| Reply::Applied(Box::new(r))),
            Request::HostKey { path, scope } => self
                .host_key(path, scope, node)
                .map(|pem| Reply::Csr { pem }),
            Request::Probe(spec) => Ok(Reply::Probed(self.probe(spec))),
            Request::LdapCert => ldap::server_cert(&self.ldap_cfg())
                .map(Reply::LdapCert)
                .map_err(RemoteError::invalid),
            Request::KeysMake(spec) => {
                let _ = std::fs::create_dir_all(&self.dir);
                keys::make(&self.cfg, spec, &self.dir.join(".keys-output")).map(Reply::KeysMade)
            }
            Request::GluuExport(spec) => {
                let _ = std::fs::create_dir_all(&self.dir);
                gluu::export(
                    &self.cfg,
                    &self.ldap_cfg(),
                    spec,
                    &self.dir.join(".gluu-export"),
                )
                .map(|e| Reply::GluuExported(Box::new(e)))
            }
            Request::GluuSetup(_)
            | Request::GluuRemove { .. }
            | Request::GluuAddComponents { .. } => {
                let Ok(_one) = self.gluu.try_lock() else {
                    return Err(RemoteError::refused(
                        "another Gluu install or component add is running on this node; try again when it is done",
                    ));
                };
                let _ = std::fs::create_dir_all(&self.dir);
                let scratch = self.dir.join(".gluu-output");
                match req {
                    Request::GluuSetup(spec) => {
                        gluu::setup(&self.cfg, spec, &scratch).map(Reply::GluuSetUp)
                    }
                    Request::GluuRemove { root } => gluu::remove(&self.cfg, root, &scratch)
                        .map(|moved_to| Reply::GluuRemoved { moved_to }),
                    Request::GluuAddComponents { root, components } => {
                        gluu::add_components(&self.cfg, root, components, &scratch)
                            .map(Reply::GluuSetUp)
                    }
                    _ => unreachable!("matched above"),
                }
            }
            _ => Err(RemoteError::invalid(
                "not a desired-state request; the engine answers plan, apply, backups, restore, host key, probe, LDAP certificate, keys and Gluu's setup",
            )),
        }
    }

    /// Makes sure a tunnel key exists at `path` (generated here if not, mode 0600,
    /// under the writable roots like any entry) and returns a CSR for it naming `node`.
    pub fn host_key(
        &self,
        path: &str,
        scope: &Scope,
        node: &clustermgr_protocol::NodeName,
    ) -> Result<String, RemoteError> {
        let res = path::resolve(&self.cfg, scope, path)
            .map_err(|w| RemoteError::invalid(format!("{path}: {w}")))?;
        let _one = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let pem = match read_nofollow(&res.real) {
            Ok((bytes, _)) => String::from_utf8(bytes).map_err(|_| {
                RemoteError::invalid(format!(
                    "{path} is not a PEM key; remove it on the node to have a new key generated"
                ))
            })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let pem = crate::enroll::generate_key_pem()
                    .map_err(|e| RemoteError::internal(e.to_string()))?;
                let (uid, gid) = own_ids();
                let meta = Meta {
                    mode: 0o600,
                    uid,
                    gid,
                };
                let temp = temp_beside(&res.real, now_ms(), "-key");
                write_temp(&temp, pem.as_bytes(), &meta)
                    .and_then(|()| rename_into_place(&temp, &res.real))
                    .map_err(|e| {
                        let _ = remove_nofollow(&temp);
                        RemoteError::internal(format!("cannot write {path}: {e}"))
                    })?;
                tracing::info!("generated a tunnel key at {path}");
                pem
            }
            Err(e) => return Err(RemoteError::internal(format!("cannot read {path}: {e}"))),
        };
        crate::enroll::csr_pem(&pem, node, &res.real).map_err(|e| {
            RemoteError::invalid(format!(
                "{e}; remove it on the node to have a new key generated"
            ))
        })
    }
}

impl Engine {
    /// A rolling apply's gate: services running, HTTPS answered.
    pub fn probe(&self, spec: &clustermgr_protocol::changeset::ProbeSpec) -> Vec<StepRun> {
        let _ = std::fs::create_dir_all(&self.dir);
        probe::probe(&self.cfg, spec, &self.dir.join(".probe-output"))
    }
}

/// `spec` turned into the same command run chrooted into the container at `root`.
pub fn container_exec(
    cfg: &AgentConfig,
    root: &str,
    mut spec: clustermgr_protocol::message::ExecSpec,
) -> Result<clustermgr_protocol::message::ExecSpec, RemoteError> {
    use clustermgr_protocol::message::Command;
    let base = path::scope_base(cfg, &Scope::Container { root: root.into() })
        .map_err(RemoteError::invalid)?;
    if !base.join("bin/sh").exists() && !base.join("usr/bin/sh").exists() {
        return Err(RemoteError::invalid(format!(
            "{} does not look like a Gluu container (it has no /bin/sh); check `clustermgr cluster show` for gluu-root",
            base.display()
        )));
    }
    let mut argv = vec!["chroot".to_string(), base.display().to_string()];
    match spec.command {
        Command::Argv(a) => argv.extend(a),
        Command::Shell(line) => argv.extend(["/bin/sh".to_string(), "-c".to_string(), line]),
    }
    spec.command = Command::Argv(argv);
    Ok(spec)
}

/// `entries` with a container scope whose root is `/` (Gluu installed without a
/// container) made the host's, so its validators and services are the host's too;
/// borrowed as they are when there is none (the usual case: no file bytes copied).
/// The LDAP side of an apply: its connections and staged entries.
/// The package entries of a change set: each one's plan by its index, and what
/// installing them takes.
#[derive(Default)]
struct Packages {
    plans: Vec<(usize, EntryPlan)>,
    states: Vec<crate::packages::State>,
}

struct LdapPart<'a> {
    session: ldap::Session<'a>,
    staged: Vec<ldap::Staged>,
    /// OpenDJ's replication, when the change set has it.
    opendj: Vec<opendj::Staged>,
}

/// The file entries of a change set, and the index of each in it.
fn split_files(entries: &[Entry]) -> (Vec<Entry>, Vec<usize>) {
    entries
        .iter()
        .enumerate()
        .filter(|(_, e)| {
            !matches!(
                e.content,
                Content::Ldap(_) | Content::OpenDj(_) | Content::Package(_)
            )
        })
        .map(|(i, e)| (e.clone(), i))
        .unzip()
}

/// The plans of files and LDAP entries, in the change set's order (the controller
/// pairs them with its entries by position).
fn merged_plans(
    len: usize,
    file_index: &[usize],
    files: &[Staged],
    ldap: &LdapPart,
    packages: &Packages,
) -> Vec<EntryPlan> {
    let mut out: Vec<Option<EntryPlan>> = vec![None; len];
    for (i, p) in &packages.plans {
        out[*i] = Some(p.clone());
    }
    for (i, s) in file_index.iter().zip(files) {
        out[*i] = Some(s.plan.clone());
    }
    for s in &ldap.staged {
        out[s.index] = Some(s.plan.clone());
    }
    for s in &ldap.opendj {
        out[s.index] = Some(s.plan.clone());
    }
    out.into_iter().flatten().collect()
}

fn host_for_root_container(entries: &[Entry]) -> std::borrow::Cow<'_, [Entry]> {
    let root = |e: &Entry| matches!(&e.scope, Scope::Container { root } if root == "/");
    if !entries.iter().any(root) {
        return std::borrow::Cow::Borrowed(entries);
    }
    entries
        .iter()
        .map(|e| {
            let mut e = e.clone();
            if root(&e) {
                e.scope = Scope::Host;
            }
            e
        })
        .collect()
}

fn outcome(what: &str, steps: &[StepRun]) -> String {
    let failed: Vec<String> = steps
        .iter()
        .filter(|s| !s.ok)
        .map(|s| format!("{} failed: {}", s.step, s.output))
        .collect();
    if failed.is_empty() {
        what.to_string()
    } else {
        format!("{what}; {}", failed.join("; "))
    }
}

/// A temp file's name in the target's own directory (so the rename is atomic).
fn temp_beside(real: &Path, id: i64, tag: &str) -> PathBuf {
    let name = real
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    real.with_file_name(format!(".{name}.clustermgr-{id}{tag}"))
}

/// Reads a file and its metadata through handles that refuse a symlink, so what was
/// resolved and checked is what is read (a link swapped in since is an error).
fn read_nofollow(real: &Path) -> io::Result<(Vec<u8>, Meta)> {
    let (dir, name) = Dir::of(real, false)?;
    dir.read(name)
}

/// Writes a temp file with its final mode and owner before any byte, then fsyncs it,
/// creating its directory if need be.
fn write_temp(temp: &Path, bytes: &[u8], meta: &Meta) -> io::Result<()> {
    let (dir, name) = Dir::of(temp, true)?;
    dir.write_new(name, bytes, meta)
}

/// Removes a file durably; one that is not there is fine.
fn remove_nofollow(file: &Path) -> io::Result<()> {
    match Dir::of(file, false) {
        Ok((dir, name)) => {
            dir.remove(name)?;
            dir.sync()
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Renames `temp` over `real` (the same directory) and fsyncs the directory.
fn rename_into_place(temp: &Path, real: &Path) -> io::Result<()> {
    let (dir, name) = Dir::of(real, false)?;
    let from = temp
        .file_name()
        .ok_or_else(|| io::Error::other("the temp path names no file"))?;
    dir.rename(from, name)?;
    dir.sync()
}

/// Renames every temp over its target, then makes each directory's entries durable
/// once (a set's files share a few directories). Until the journal leaves the swapping
/// phase, a crash restores the old files whichever renames survived it.
fn swap(txn: &Txn) -> io::Result<()> {
    let mut dirs: Vec<(PathBuf, Dir)> = Vec::new();
    for item in &txn.items {
        let parent = item.real.parent().unwrap_or(Path::new("/"));
        if !dirs.iter().any(|(p, _)| p == parent) {
            dirs.push((parent.to_path_buf(), Dir::open(parent, false)?));
        }
        let (_, dir) = dirs
            .iter()
            .find(|(p, _)| p == parent)
            .expect("opened above");
        let (from, to) = (item.temp.file_name(), item.real.file_name());
        let (Some(from), Some(to)) = (from, to) else {
            return Err(io::Error::other("the path names no file"));
        };
        dir.rename(from, to)?;
    }
    for (_, dir) in &dirs {
        dir.sync()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
