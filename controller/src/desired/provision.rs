//! Provisioning's part of `plan` and `apply` (issue 20): the `packages`, `package-dir`
//! and `ntp-servers` settings, the package directory's index, and uploading the files
//! a node lacks before its set is planned or applied.
//!
//! A package runs as root on every node, so the directory is held to what the home is:
//! it and every package file must belong to root or to the controller's own user, and
//! be writable by nobody else; a symbolic link is refused. The agent keeps a file only
//! if its SHA-256 matches the one the index took, and checks it again before
//! installing it.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Mutex;

use clustermgr_protocol::changeset::{Content, Entry, PackageFile};
use clustermgr_protocol::message::{Reply, Request};

use crate::CtlError;
use crate::connect::NodeFailure;
use crate::ctx::Ctx;
use crate::store::{PackageSource, ProvisionRecord};

/// The settings' keys.
pub const KEYS: &[&str] = &["packages", "package-dir", "ntp-servers"];

/// How long one package file may take to arrive (a Gluu package is about 1 GiB).
const UPLOAD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(600);

/// The settings as `cluster show` prints them.
pub fn rows(p: &ProvisionRecord) -> Vec<(&'static str, String)> {
    vec![
        ("packages", p.packages.as_str().into()),
        (
            "package-dir",
            p.package_dir.clone().unwrap_or_else(|| "(not set)".into()),
        ),
        (
            "ntp-servers",
            if p.ntp_servers.is_empty() {
                "(not set)".into()
            } else {
                p.ntp_servers.join(",")
            },
        ),
    ]
}

/// `cluster set KEY VALUE` for one of [`KEYS`].
pub fn set(ctx: &Ctx, user: &str, key: &str, value: &str) -> Result<super::View, CtlError> {
    let bad = |why: String| CtlError::BadSetting {
        key: key.to_string(),
        why,
    };
    let rec = match key {
        "packages" => {
            let source = match value {
                "off" => PackageSource::Off,
                "repository" => PackageSource::Repository,
                "directory" => PackageSource::Directory,
                _ => {
                    return Err(bad(format!(
                        "{value:?}: use off (you install them), repository (each node's package manager) or directory (the controller's package-dir)"
                    )));
                }
            };
            ctx.store.update_provision(|p| {
                if source == PackageSource::Directory && p.package_dir.is_none() {
                    return Err(bad(
                        "no package directory is set; give one with `clustermgr cluster set package-dir DIR`, which also sets packages = directory".into(),
                    ));
                }
                p.packages = source;
                Ok(())
            })?
        }
        "package-dir" => {
            let dir = Path::new(value);
            if !dir.is_absolute() {
                return Err(bad(format!("{value:?} is not an absolute path")));
            }
            // Judged now, and again at every plan: what is in it runs as root.
            index(dir).map_err(|e| bad(e.to_string()))?;
            ctx.store.update_provision(|p| {
                p.package_dir = Some(value.trim_end_matches('/').to_string());
                p.packages = PackageSource::Directory;
                Ok(())
            })?
        }
        "ntp-servers" => {
            let servers: Vec<String> = value
                .split([',', ' '])
                .map(str::trim)
                .filter(|s| !s.is_empty() && *s != "none")
                .map(str::to_string)
                .collect();
            if let Some(s) = servers.iter().find(|s| {
                s.len() > 253
                    || !s
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || ".-:".contains(c))
            }) {
                return Err(bad(format!(
                    "{s:?} is not a host name or an IP address; give them separated by commas, such as 0.pool.ntp.org,10.0.0.1"
                )));
            }
            ctx.store.update_provision(|p| {
                p.ntp_servers = servers;
                Ok(())
            })?
        }
        _ => unreachable!("only the provisioning keys come here"),
    };
    let shown = rows(&rec)
        .into_iter()
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
        .unwrap_or_default();
    ctx.audited(user, "cluster set", &[], &format!("{key} = {shown}"), "set")?;
    let also = if key == "package-dir" {
        " (and packages = directory)"
    } else {
        ""
    };
    super::said(
        ctx,
        format!("{key} = {shown}{also}; run `clustermgr plan` to see what changes on the nodes"),
    )
}

/// `cluster unset KEY` for one of [`KEYS`].
pub fn unset(ctx: &Ctx, key: &str) -> Result<(), CtlError> {
    ctx.store.update_provision(|p| {
        match key {
            "packages" => p.packages = PackageSource::Off,
            "package-dir" => {
                p.package_dir = None;
                if p.packages == PackageSource::Directory {
                    p.packages = PackageSource::Off;
                }
            }
            _ => p.ntp_servers.clear(),
        }
        Ok(())
    })?;
    Ok(())
}

/// Hashes already computed, by path, with the length and modification time they were
/// computed at: a 1 GiB package is read once, not at every plan. One entry per path.
type Hashed = BTreeMap<std::path::PathBuf, (u64, i64, String)>;
static HASHES: Mutex<Hashed> = Mutex::new(BTreeMap::new());

/// The package directory's `.deb` and `.rpm` files with their hashes, after checking
/// that nobody but root and this user can change them.
pub fn index(dir: &Path) -> Result<Vec<PackageFile>, CtlError> {
    let bad = |why: String| CtlError::BadFile {
        path: dir.to_path_buf(),
        why,
    };
    let me = rustix::process::geteuid().as_raw();
    let trusted = |path: &Path, m: &std::fs::Metadata| -> Result<(), CtlError> {
        if m.uid() != 0 && m.uid() != me {
            return Err(CtlError::BadFile {
                path: path.to_path_buf(),
                why: format!(
                    "belongs to uid {}; a package runs as root on every node, so the package directory and its files must belong to root or to you",
                    m.uid()
                ),
            });
        }
        if m.mode() & 0o022 != 0 {
            return Err(CtlError::BadFile {
                path: path.to_path_buf(),
                why: format!(
                    "is writable by others (mode {:04o}); a package runs as root on every node: `chmod go-w` it",
                    m.mode() & 0o7777
                ),
            });
        }
        Ok(())
    };
    let m = std::fs::symlink_metadata(dir).map_err(|e| bad(format!("cannot be read: {e}")))?;
    if !m.is_dir() {
        return Err(bad(
            "is not a directory (a symbolic link is refused too)".into()
        ));
    }
    trusted(dir, &m)?;
    let mut out = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|e| bad(format!("cannot be listed: {e}")))?;
    for entry in entries {
        let entry = entry.map_err(|e| bad(format!("cannot be listed: {e}")))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !(name.ends_with(".deb") || name.ends_with(".rpm")) {
            continue;
        }
        let path = entry.path();
        let m = std::fs::symlink_metadata(&path).map_err(|e| CtlError::io(&path, e))?;
        if !m.is_file() {
            return Err(CtlError::BadFile {
                path,
                why: "is not a regular file (a symbolic link is refused: copy the package in)"
                    .into(),
            });
        }
        trusted(&path, &m)?;
        let stamp = (m.len(), m.mtime() * 1_000_000_000 + m.mtime_nsec());
        let known = HASHES
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&path)
            .filter(|(len, mtime, _)| (*len, *mtime) == stamp)
            .map(|(_, _, h)| h.clone());
        let sha256 = match known {
            Some(h) => h,
            None => {
                let h = clustermgr_protocol::identity::sha256_file(&path)
                    .map_err(|e| CtlError::io(&path, e))?;
                HASHES
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(path.clone(), (stamp.0, stamp.1, h.clone()));
                h
            }
        };
        out.push(PackageFile {
            file: name,
            size: m.len(),
            sha256,
        });
    }
    out.sort();
    Ok(out)
}

/// The package directory's index when packages come from it (empty otherwise, and
/// when the directory has gone: the plan then says the node lacks the packages).
pub fn files(p: &ProvisionRecord) -> Result<Vec<PackageFile>, CtlError> {
    match (&p.packages, &p.package_dir) {
        (PackageSource::Directory, Some(dir)) => index(Path::new(dir)),
        _ => Ok(Vec::new()),
    }
}

/// Sends `node` the package files its entries name that it does not hold yet, read
/// from `dir`, each checked against its hash as it is read.
pub async fn upload(
    ctx: &Ctx,
    conn: &dyn crate::connect::Link,
    entries: &[Entry],
) -> Result<(), NodeFailure> {
    let mut wanted: Vec<PackageFile> = entries
        .iter()
        .filter_map(|e| match &e.content {
            Content::Package(p) => Some(p.files.clone()),
            _ => None,
        })
        .flatten()
        .collect();
    if wanted.is_empty() {
        return Ok(());
    }
    wanted.sort();
    wanted.dedup();
    let dir = ctx
        .store
        .provision()
        .ok()
        .and_then(|p| p.package_dir)
        .ok_or_else(|| NodeFailure::failed("no package directory is set"))?;
    let missing = match conn
        .request(
            &Request::PackagesMissing(wanted),
            crate::ctx::REQUEST_TIMEOUT,
        )
        .await?
    {
        Reply::PackagesMissing(m) => m,
        Reply::Error(e) => return Err(NodeFailure::failed(e.message)),
        _ => return Err(NodeFailure::failed("unexpected reply to a package check")),
    };
    // Read in pieces as they go; the agent keeps a file only if its hash is the one
    // the index took, so a file changed since then is refused there.
    for f in missing {
        let path = Path::new(&dir).join(&f.file);
        match conn
            .put(&Request::PackagePut(f.clone()), &path, UPLOAD_TIMEOUT)
            .await?
        {
            Reply::PackageStored => {}
            Reply::Error(e) => return Err(NodeFailure::failed(e.message)),
            _ => return Err(NodeFailure::failed("unexpected reply to a package upload")),
        }
    }
    Ok(())
}
