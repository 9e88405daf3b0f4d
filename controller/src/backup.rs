//! `clustermgr backup` and `clustermgr restore`: a controller's home into an encrypted
//! archive ([`crate::archive`]), and back into a new home on another machine.
//!
//! What travels: the CA's certificate and key, every store record (nodes with their
//! pinned keys, certificates, the audit log) and `controller.toml`. What does not: the
//! controller's own key. A restore makes a new one and has the restored CA certify it.
//! Agents accept any certificate their CA signed with the controller identity that is
//! not older than the newest they have seen (see
//! `clustermgr_protocol::identity::verify_controller_cert`), so they accept the new home
//! at once, refuse the old one once they have seen the new, and the archive carries one
//! secret fewer.

use std::path::{Path, PathBuf};

use clustermgr_protocol::atomic_file::write_atomic;
use tokio::sync::mpsc;

use crate::CtlError;
use crate::archive::{self, BackupContents, BackupView, KdfParams, RestoreView};
use crate::ca::Ca;
use crate::clock::{Clock, rfc3339};
use crate::home::Home;
use crate::ops::{CtxOptions, Event, Invocation, Operation, Report, cert_record, write_file};
use crate::passphrase::{self, Purpose};
use crate::store::{AuditRecord, CertKind, StoreSnapshot};

/// `clustermgr backup FILE`: snapshots the store (through `serve` when it runs, since
/// it holds the store), adds the CA and `controller.toml` from the home, and writes the
/// sealed archive to `file` (mode 0600, atomically).
pub async fn backup(
    dir: &Path,
    opts: &CtxOptions,
    ask: &BackupAsk<'_>,
    user: String,
    json: bool,
) -> Result<i32, CtlError> {
    let home = Home::open(dir)?;
    let file = ask.file;
    let file = std::path::absolute(file).map_err(|e| CtlError::io(file, e))?;
    // Checked before the passphrase is asked and its key derived, and before the audit
    // log records a backup that could never be written.
    target_usable(&file, ask.force)?;
    // Asked before the snapshot, so a mistyped confirmation leaves no audit entry for a
    // backup that was never written.
    let passphrase = passphrase::read(ask.passphrase_file, Purpose::Backup)?;
    let inv = Invocation {
        user: user.clone(),
        op: Operation::Snapshot {
            file: file.display().to_string(),
        },
        connect_timeout_ms: None,
    };
    let (tx, mut rx) = mpsc::channel(64);
    let collector = tokio::spawn(async move {
        let mut bytes = Vec::new();
        while let Some(event) = rx.recv().await {
            if let Event::Snapshot(part) = event {
                bytes.extend_from_slice(&part);
            }
        }
        bytes
    });
    let Some(outcome) = crate::local::run_operation(dir, opts, inv, tx).await? else {
        eprintln!("clustermgr: interrupted; no backup was written");
        return Ok(crate::exit::INTERRUPTED);
    };
    let bytes = collector.await.unwrap_or_default();
    let (expected, audit_id) = match outcome {
        Ok(Report::Snapshot { bytes, audit_id }) => (bytes, audit_id),
        Ok(_) => {
            return Err(CtlError::Serve(
                "it answered a snapshot request with something else; restart `clustermgr serve`, which may be of another release".into(),
            ));
        }
        Err((message, code)) => {
            crate::render::error(&message, code, json);
            return Ok(code);
        }
    };
    let written = seal_and_write(&home, &file, &bytes, expected, &passphrase);
    // The audit entry made with the snapshot says what became of it.
    let outcome = match &written {
        Ok(v) => format!("written, {} bytes", v.bytes),
        Err(e) => format!("failed: {e}"),
    };
    let inv = Invocation {
        user,
        op: Operation::BackupFinished { audit_id, outcome },
        connect_timeout_ms: None,
    };
    let why = match crate::local::run_operation(dir, opts, inv, mpsc::channel(1).0).await {
        Ok(Some(Ok(_)) | None) => None,
        Ok(Some(Err((why, _)))) => Some(why),
        Err(e) => Some(e.to_string()),
    };
    if let Some(why) = why {
        eprintln!("clustermgr: the audit log could not record the backup's outcome: {why}");
    }
    print_backup(&written?, json);
    Ok(crate::exit::OK)
}

/// What `backup` is asked.
#[derive(Clone, Copy, Debug)]
pub struct BackupAsk<'a> {
    /// The archive to write.
    pub file: &'a Path,
    /// Where the passphrase is, if not asked on the terminal.
    pub passphrase_file: Option<&'a Path>,
    /// Replace an archive already there.
    pub force: bool,
}

/// Refuses a target that cannot take the archive, before any work: a directory, a
/// missing folder, or an archive already there (unless `force`).
fn target_usable(file: &Path, force: bool) -> Result<(), CtlError> {
    let folder = parent_of(file);
    if !folder.is_dir() {
        return Err(CtlError::BadFile {
            path: file.to_path_buf(),
            why: format!(
                "cannot write the backup here: the directory {} does not exist",
                folder.display()
            ),
        });
    }
    match std::fs::symlink_metadata(file) {
        Ok(m) if m.is_dir() => Err(CtlError::BadFile {
            path: file.to_path_buf(),
            why: format!(
                "is a directory; name the archive file, e.g. {}",
                file.join("cluster.cmbackup").display()
            ),
        }),
        Ok(_) if !force => Err(CtlError::BadFile {
            path: file.to_path_buf(),
            why: "already exists; choose another name, or add --force to replace it (the new archive replaces it whole, only once written)".into(),
        }),
        _ => Ok(()),
    }
}

/// Seals the snapshot (`expected` bytes, checked) with the home's CA into the archive.
fn seal_and_write(
    home: &Home,
    file: &Path,
    bytes: &[u8],
    expected: u64,
    passphrase: &str,
) -> Result<BackupView, CtlError> {
    if bytes.len() as u64 != expected {
        return Err(CtlError::Serve(format!(
            "the store snapshot arrived incomplete ({} of {expected} bytes); nothing was written, try again",
            bytes.len()
        )));
    }
    let store: StoreSnapshot = clustermgr_protocol::codec::decode("store snapshot", bytes)?;
    let contents = BackupContents {
        created_at: crate::clock::SystemClock.unix(),
        software: env!("CARGO_PKG_VERSION").to_string(),
        ca_cert_pem: read(&home.ca_cert())?,
        ca_key_pem: read(&home.ca_key())?,
        controller_toml: match std::fs::read_to_string(home.config()) {
            Ok(text) => Some(text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(CtlError::io(home.config(), e)),
        },
        store,
    };
    let kdf = KdfParams::DEFAULT;
    let sealed = archive::seal(passphrase.as_bytes(), &contents.encode(), kdf)?;
    write_atomic(file, &sealed, 0o600).map_err(|e| CtlError::io(file, e))?;
    Ok(BackupView {
        file: file.to_path_buf(),
        cluster: contents.store.meta.name.clone(),
        nodes: contents.store.nodes.len(),
        certificates: contents.store.certs.len(),
        audit_entries: contents.store.audit.len(),
        bytes: sealed.len(),
        kdf: kdf.to_string(),
    })
}

/// `clustermgr restore FILE`: decrypts the archive, then builds the home `dir` beside
/// it and renames it into place, so a failure at any step leaves no home at all.
pub async fn restore(
    dir: &Path,
    opts: &CtxOptions,
    file: &Path,
    passphrase_file: Option<&Path>,
    user: &str,
    clock: &dyn Clock,
    json: bool,
) -> Result<i32, CtlError> {
    check_target(dir)?;
    let file = &std::path::absolute(file).map_err(|e| CtlError::io(file, e))?;
    let archive = read_archive(file)?;
    // A file that is no backup at all is named before anyone types a passphrase.
    archive::Header::parse(file, &archive)?;
    let passphrase = passphrase::read(passphrase_file, Purpose::Restore)?;
    let plaintext = archive::open(file, passphrase.as_bytes(), &archive)?;
    let contents = BackupContents::decode(file, &plaintext)?;
    let mut view = restore_home(dir, file, &contents, user, clock)?;
    announce(dir, opts, user, &mut view).await?;
    print_restored(&view, json);
    Ok(0)
}

/// Reaches every node with the restored home's new controller certificate, which
/// supersedes the old one at each agent that sees it: the backed-up machine's key (on
/// a machine that may be lost) is refused from then on. A node not reached now learns
/// it at its next contact with this home.
async fn announce(
    dir: &Path,
    opts: &CtxOptions,
    user: &str,
    view: &mut RestoreView,
) -> Result<(), CtlError> {
    let inv = Invocation {
        user: user.to_string(),
        op: Operation::Ping {
            nodes: "all".into(),
        },
        connect_timeout_ms: None,
    };
    let (tx, mut rx) = mpsc::channel(64);
    let drain = tokio::spawn(async move { while rx.recv().await.is_some() {} });
    let outcome = crate::local::run_operation(dir, opts, inv, tx).await?;
    let _ = drain.await;
    if let Some(Ok(Report::Outcomes(outcomes))) = outcome {
        for o in outcomes {
            if o.state == crate::ops::NodeState::Ok {
                view.reached.push(o.node);
            } else {
                view.not_reached.push(o.node);
            }
        }
    }
    Ok(())
}

/// Refuses a target that holds a cluster or anything else: a restore makes a home, it
/// never merges into one.
fn check_target(dir: &Path) -> Result<(), CtlError> {
    Home::refuse_existing(dir)?;
    match std::fs::symlink_metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(CtlError::io(dir, e)),
        Ok(meta) if !meta.is_dir() => Err(CtlError::HomeNotEmpty(dir.to_path_buf())),
        Ok(_) => {
            let mut entries = std::fs::read_dir(dir).map_err(|e| CtlError::io(dir, e))?;
            match entries.next() {
                None => Ok(()),
                Some(_) => Err(CtlError::HomeNotEmpty(dir.to_path_buf())),
            }
        }
    }
}

fn read(path: &Path) -> Result<String, CtlError> {
    std::fs::read_to_string(path).map_err(|e| CtlError::io(path, e))
}

fn read_archive(file: &Path) -> Result<Vec<u8>, CtlError> {
    let len = std::fs::metadata(file)
        .map_err(|e| CtlError::io(file, e))?
        .len();
    if len > archive::MAX_ARCHIVE_BYTES {
        return Err(CtlError::BackupUnreadable {
            file: file.to_path_buf(),
            why: format!(
                "it is {len} bytes long, more than the {} a backup may be",
                archive::MAX_ARCHIVE_BYTES
            ),
        });
    }
    std::fs::read(file).map_err(|e| CtlError::io(file, e))
}

/// A directory being filled beside the home it will become. Removed, with all it
/// holds, unless it was renamed into place.
struct Staging {
    dir: PathBuf,
    done: bool,
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.done {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Writes the home `dir` from `contents`, with a new controller key and certificate,
/// and records the restore in its audit log.
pub fn restore_home(
    dir: &Path,
    file: &Path,
    contents: &BackupContents,
    user: &str,
    clock: &dyn Clock,
) -> Result<RestoreView, CtlError> {
    let ca = Ca::load(&contents.ca_cert_pem, &contents.ca_key_pem)?;
    ca.checked_summary()?;
    let meta = &contents.store.meta;
    let now = clock.now();
    let lifetime = time::Duration::days(meta.cert_lifetime_days.into());
    // The new controller certificate supersedes the backed-up home's: each agent that
    // sees it refuses the old one from then on (the old key may be on a lost machine).
    let newest_old = contents
        .store
        .certs
        .iter()
        .filter(|c| c.kind == CertKind::Controller)
        .map(|c| c.not_before)
        .max();
    let (controller, controller_key) =
        ca.issue_controller(&meta.name, now, lifetime, newest_old)?;

    let staging = Staging {
        dir: staging_dir(dir)?,
        done: false,
    };
    let stage = Home::create(&staging.dir)?;
    write_file(&stage.ca_key(), &contents.ca_key_pem, 0o600)?;
    write_file(&stage.controller_key(), &controller_key, 0o600)?;
    write_file(&stage.controller_cert(), &controller.pem, 0o644)?;
    if let Some(toml) = &contents.controller_toml {
        write_file(&stage.config(), toml, 0o644)?;
    }
    let store = crate::store::Store::restore(&stage.store(), &contents.store)?;
    store.put_cert(&cert_record(
        CertKind::Controller,
        None,
        &controller.summary,
    ))?;
    store.audit_append(&AuditRecord {
        time_ms: (now.unix_timestamp_nanos() / 1_000_000) as i64,
        user: user.to_string(),
        action: "restore".into(),
        nodes: Vec::new(),
        detail: format!(
            "from {} (a backup of {} by clustermgr {}); new controller certificate {}",
            file.display(),
            rfc3339(contents.created_at),
            contents.software,
            controller.summary.serial
        ),
        results: vec![("cluster".into(), "restored".into())],
    })?;
    let audit_entries = contents.store.audit.len() + 1;
    drop(store);
    write_file(&stage.ca_cert(), ca.cert_pem(), 0o644)?;
    // The same checks every command makes before it uses a home.
    Home::open(&staging.dir)?;
    commit(staging, dir)?;
    Ok(RestoreView {
        home: dir.to_path_buf(),
        file: file.to_path_buf(),
        cluster: meta.name.clone(),
        backup_created: rfc3339(contents.created_at),
        nodes: contents.store.nodes.len(),
        certificates: contents.store.certs.len() + 1,
        audit_entries,
        controller_serial: controller.summary.serial,
        controller_expires: rfc3339(controller.summary.not_after),
        reached: Vec::new(),
        not_reached: Vec::new(),
    })
}

/// A new directory next to `dir`, on the same filesystem so it can be renamed into
/// place, with a random name so a leftover of a killed restore is never reused.
fn staging_dir(dir: &Path) -> Result<PathBuf, CtlError> {
    use ring::rand::SecureRandom;
    let name = dir.file_name().ok_or_else(|| CtlError::BadHome {
        path: dir.to_path_buf(),
        why: "cannot be a home: name a directory",
    })?;
    let mut tag = [0u8; 6];
    ring::rand::SystemRandom::new()
        .fill(&mut tag)
        .expect("the system random source works");
    let tag: String = tag.iter().map(|b| format!("{b:02x}")).collect();
    Ok(parent_of(dir).join(format!(".{}.restoring-{tag}", name.to_string_lossy())))
}

/// Renames the finished staging directory to `dir` (replacing it if it is an empty
/// directory) and makes the rename durable.
fn commit(mut staging: Staging, dir: &Path) -> Result<(), CtlError> {
    std::fs::rename(&staging.dir, dir).map_err(|e| match e.raw_os_error() {
        Some(libc::ENOTEMPTY) | Some(libc::EEXIST) => CtlError::HomeNotEmpty(dir.to_path_buf()),
        _ => CtlError::io(dir, e),
    })?;
    staging.done = true;
    let parent = parent_of(dir);
    std::fs::File::open(parent)
        .and_then(|d| d.sync_all())
        .map_err(|e| CtlError::io(parent, e))
}

/// The directory `dir` is in (`.` for a bare name).
fn parent_of(dir: &Path) -> &Path {
    dir.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// Prints what `backup` wrote.
fn print_backup(v: &BackupView, as_json: bool) {
    if as_json {
        return crate::render::json(v);
    }
    println!(
        "wrote {} ({} bytes): cluster {}, {}, {}, {}",
        v.file.display(),
        v.bytes,
        v.cluster,
        crate::words::count(v.nodes, "node", "nodes"),
        crate::words::count(v.certificates, "certificate", "certificates"),
        crate::words::count(v.audit_entries, "audit entry", "audit entries")
    );
    println!(
        "it holds the cluster CA's key, encrypted under your passphrase ({}): keep it and the passphrase apart, off this machine",
        v.kdf
    );
}

/// Prints what `restore` made.
fn print_restored(v: &RestoreView, as_json: bool) {
    if as_json {
        return crate::render::json(v);
    }
    println!(
        "restored cluster {} into {} from {} (a backup of {}): {}, {}, {}",
        v.cluster,
        v.home.display(),
        v.file.display(),
        v.backup_created,
        crate::words::count(v.nodes, "node", "nodes"),
        crate::words::count(v.certificates, "certificate", "certificates"),
        crate::words::count(v.audit_entries, "audit entry", "audit entries")
    );
    println!(
        "the controller has a new key; the restored CA certified it (serial {}, until {}), so the agents accept it",
        v.controller_serial, v.controller_expires
    );
    if !v.reached.is_empty() {
        println!(
            "{} node(s) reached, which refuse the backed-up controller's key from now on: {}",
            v.reached.len(),
            v.reached.join(", ")
        );
    }
    if !v.not_reached.is_empty() {
        println!(
            "{} node(s) not reached, which still accept the old key until their next contact with this home: {}; run `clustermgr --home {} ping` once they are back",
            v.not_reached.len(),
            v.not_reached.join(", "),
            v.home.display()
        );
    }
    println!(
        "next: `clustermgr --home {} status` to reach every node",
        v.home.display()
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::FixedClock;
    use crate::store::{ClusterMeta, Store};
    use std::os::unix::fs::PermissionsExt;

    fn t0() -> time::OffsetDateTime {
        time::OffsetDateTime::from_unix_timestamp(1_900_000_000).unwrap()
    }

    /// The contents a backup of a fresh `init` would carry.
    fn contents_of_new_cluster(tmp: &Path) -> BackupContents {
        let src = tmp.join("src");
        crate::ops::init(&src, "prod", 90, &FixedClock(t0())).unwrap();
        let store = Store::open(&src.join("inventory.redb"), &src.join("serve.sock")).unwrap();
        BackupContents {
            created_at: t0().unix_timestamp(),
            software: "test".into(),
            ca_cert_pem: read(&src.join("ca.crt")).unwrap(),
            ca_key_pem: read(&src.join("ca.key")).unwrap(),
            controller_toml: Some(read(&src.join("controller.toml")).unwrap()),
            store: store.snapshot().unwrap(),
        }
    }

    fn leftovers(parent: &Path) -> Vec<String> {
        std::fs::read_dir(parent)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains("restoring"))
            .collect()
    }

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn a_restored_home_has_the_ca_a_new_controller_key_and_inits_modes() {
        let tmp = tempfile::tempdir().unwrap();
        let contents = contents_of_new_cluster(tmp.path());
        let dir = tmp.path().join("new");
        let clock = FixedClock(t0() + time::Duration::days(1));
        let view = restore_home(&dir, Path::new("b"), &contents, "me (uid 1)", &clock).unwrap();
        assert_eq!(view.cluster, "prod");
        assert_eq!(read(&dir.join("ca.key")).unwrap(), contents.ca_key_pem);
        assert_eq!(read(&dir.join("ca.crt")).unwrap(), contents.ca_cert_pem);
        let src_key = read(&tmp.path().join("src/controller.key")).unwrap();
        assert_ne!(read(&dir.join("controller.key")).unwrap(), src_key);
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join("ca.key")), 0o600);
        assert_eq!(mode(&dir.join("controller.key")), 0o600);
        let store = Store::open(&dir.join("inventory.redb"), Path::new("s")).unwrap();
        let meta: ClusterMeta = store.meta().unwrap();
        assert_eq!(meta, contents.store.meta);
        let (_, last) = store.audit(1).unwrap().pop().unwrap();
        assert_eq!(
            (last.action.as_str(), last.user.as_str()),
            ("restore", "me (uid 1)")
        );
        let controllers = store
            .certs()
            .unwrap()
            .into_iter()
            .filter(|c| c.kind == CertKind::Controller)
            .count();
        assert_eq!(
            controllers, 2,
            "the old controller's record and the new one"
        );
        assert!(leftovers(tmp.path()).is_empty());
    }

    #[test]
    fn a_restore_that_fails_at_the_last_step_leaves_nothing_behind() {
        let tmp = tempfile::tempdir().unwrap();
        let contents = contents_of_new_cluster(tmp.path());
        // A directory that fills up after the checks: the rename into place fails.
        let dir = tmp.path().join("busy");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("someone-elses"), "x").unwrap();
        let err =
            restore_home(&dir, Path::new("b"), &contents, "me", &FixedClock(t0())).unwrap_err();
        assert!(matches!(err, CtlError::HomeNotEmpty(_)), "{err}");
        assert!(
            leftovers(tmp.path()).is_empty(),
            "{:?}",
            leftovers(tmp.path())
        );
        let names: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
        assert_eq!(names.len(), 1, "the directory is as it was");
    }

    #[test]
    fn an_empty_directory_is_a_fine_target_and_is_replaced() {
        let tmp = tempfile::tempdir().unwrap();
        let contents = contents_of_new_cluster(tmp.path());
        let dir = tmp.path().join("empty");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        check_target(&dir).unwrap();
        restore_home(&dir, Path::new("b"), &contents, "me", &FixedClock(t0())).unwrap();
        assert_eq!(
            mode(&dir),
            0o700,
            "the home has init's mode, not the old directory's"
        );
        Home::open(&dir).unwrap();
    }

    #[test]
    fn a_target_holding_a_cluster_or_anything_else_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        contents_of_new_cluster(tmp.path());
        let err = check_target(&tmp.path().join("src")).unwrap_err();
        assert!(matches!(err, CtlError::HomeExists(_)), "{err}");
        let other = tmp.path().join("other");
        std::fs::create_dir(&other).unwrap();
        std::fs::write(other.join("notes.txt"), "x").unwrap();
        let err = check_target(&other).unwrap_err();
        assert!(matches!(err, CtlError::HomeNotEmpty(_)), "{err}");
        assert_eq!(err.exit_code(), 2);
        let err = check_target(&other.join("notes.txt")).unwrap_err();
        assert!(matches!(err, CtlError::HomeNotEmpty(_)), "{err}");
        check_target(&tmp.path().join("fresh")).unwrap();
    }

    #[test]
    fn a_ca_whose_key_and_certificate_differ_is_never_installed() {
        let tmp = tempfile::tempdir().unwrap();
        let mut contents = contents_of_new_cluster(tmp.path());
        let (_, other_key) = Ca::create("other", t0()).unwrap();
        contents.ca_key_pem = other_key;
        let dir = tmp.path().join("new");
        let err =
            restore_home(&dir, Path::new("b"), &contents, "me", &FixedClock(t0())).unwrap_err();
        assert!(err.to_string().contains("does not belong"), "{err}");
        assert!(!dir.exists());
        assert!(leftovers(tmp.path()).is_empty());
    }

    #[test]
    fn contents_round_trip_through_a_sealed_archive() {
        let tmp = tempfile::tempdir().unwrap();
        let contents = contents_of_new_cluster(tmp.path());
        let fast = KdfParams {
            memory_kib: 64,
            passes: 1,
            lanes: 1,
        };
        let sealed = archive::seal(b"a long passphrase", &contents.encode(), fast).unwrap();
        let file = Path::new("b");
        let opened = archive::open(file, b"a long passphrase", &sealed).unwrap();
        let back = BackupContents::decode(file, &opened).unwrap();
        assert_eq!(back.store, contents.store);
        assert_eq!(back.ca_key_pem, contents.ca_key_pem);
        assert_eq!(back.controller_toml, contents.controller_toml);
    }
}
