//! What a config push may not do on an agent with `allow_exec = false`: run a command,
//! or write anything the system runs, loads or obeys as root later. Judged on the
//! staged set, so every entry is judged on the file the kernel would open (every link
//! followed, in either scope) and on the file as it will be (an edit keeps the mode of
//! the file it edits), not on the path the controller wrote.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use clustermgr_protocol::changeset::{Action, Entry, Scope, Validator};
use clustermgr_protocol::message::{ErrorKind, RemoteError};
use clustermgr_protocol::runs_later::runs_later;

use super::{Staged, nginx_conf, path, step};
use crate::config::AgentConfig;

/// The largest nginx file read while following includes.
const NGINX_FILE_LIMIT: u64 = 1024 * 1024;

/// Refuses commands, before anything is read.
pub(super) fn check_commands(entries: &[Entry]) -> Result<(), RemoteError> {
    for e in entries {
        let v = e.validate.as_ref().is_some_and(step::validator_needs_exec);
        let a = e.on_change.iter().any(step::action_needs_exec);
        if v || a {
            return Err(RemoteError {
                kind: ErrorKind::Refused,
                message: format!(
                    "{}: its {} a command, and this agent has allow_exec = false; only the built-in nginx test and service reload or restart may run here",
                    e.path,
                    if v { "validator is" } else { "actions include" }
                ),
            });
        }
    }
    Ok(())
}

/// Refuses a staged set that writes something run later: a file on a run-later path
/// (on the host or in any chroot), an executable or an edit of one, a shared object,
/// or an nginx configuration that would load code a push could have written.
pub(super) fn check_staged(
    cfg: &AgentConfig,
    entries: &[Entry],
    staged: &[Staged],
) -> Result<(), RemoteError> {
    let refuse = |path: &str, why: String| {
        RemoteError::refused(format!(
            "{path}: {why}, and this agent has allow_exec = false; set allow_exec = true on this node to let clustermgr manage it"
        ))
    };
    for (e, s) in entries.iter().zip(staged) {
        let Some((bytes, meta)) = &s.new else {
            continue;
        };
        let host = host_path(cfg, &s.res.real);
        if runs_later(&host) {
            let through = if host.ends_with(&e.path) && matches!(e.scope, Scope::Host) {
                String::new()
            } else {
                format!(" ({host} on the host)")
            };
            return Err(refuse(
                &e.path,
                format!("a file that would run as a command later{through}"),
            ));
        }
        if meta.mode & 0o111 != 0 {
            let what = if s.old.is_some()
                && !matches!(
                    e.content,
                    clustermgr_protocol::changeset::Content::File { .. }
                ) {
                "an edit of an executable, which would run as a command later"
            } else {
                "an executable, which would run as a command later"
            };
            return Err(refuse(&e.path, what.to_string()));
        }
        if bytes.starts_with(b"\x7fELF") || is_shared_object_name(&host) {
            return Err(refuse(
                &e.path,
                "a shared object or program, which a process could load as code".to_string(),
            ));
        }
    }
    check_nginx(cfg, entries, staged).map_err(|(path, why)| refuse(&path, why))
}

/// `real` as the host sees it (the agent's `root` taken off).
pub(super) fn host_path(cfg: &AgentConfig, real: &Path) -> String {
    let rel = real.strip_prefix(&cfg.root).unwrap_or(real);
    format!("/{}", rel.display()).replace("//", "/")
}

fn is_shared_object_name(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    name.ends_with(".so") || name.contains(".so.")
}

/// Every nginx configuration the set has tested or (re)loaded, read with the set in
/// place: `load_module` must name a module outside every writable root and outside
/// the set, and nothing may run Perl or load an OpenSSL engine.
fn check_nginx(
    cfg: &AgentConfig,
    entries: &[Entry],
    staged: &[Staged],
) -> Result<(), (String, String)> {
    let mut roots: Vec<(PathBuf, String)> = Vec::new();
    for (e, s) in entries.iter().zip(staged) {
        if matches!(e.validate, Some(Validator::Nginx)) {
            roots.push((s.res.base.clone(), e.path.clone()));
        }
        let reloads_nginx = e
            .on_change
            .iter()
            .any(|a| matches!(a, Action::Service { name, .. } if name == "nginx" || name.starts_with("nginx.")));
        if reloads_nginx {
            roots.push((s.res.base.clone(), "/etc/nginx/nginx.conf".into()));
        }
    }
    roots.sort();
    roots.dedup();
    let overlay: BTreeMap<PathBuf, &[u8]> = staged
        .iter()
        .filter_map(|s| Some((s.res.real.clone(), s.new.as_ref()?.0.as_slice())))
        .collect();
    for (base, conf) in roots {
        let src = Node {
            base: &base,
            overlay: &overlay,
        };
        let found = nginx_conf::walk(&conf, &src).map_err(|why| (conf.clone(), why))?;
        for (file, d) in found {
            let name = d.name.as_str();
            if name == "load_module" {
                let module = d.args.first().map(String::as_str).unwrap_or("");
                if !module.starts_with('/') {
                    return Err((
                        file,
                        format!(
                            "load_module {module} is a relative path the agent cannot check; give the module's absolute path"
                        ),
                    ));
                }
                let real = path::follow(&base, module).map_err(|e| {
                    (
                        file.clone(),
                        format!("load_module {module} cannot be resolved: {e}"),
                    )
                })?;
                let pushable = overlay.contains_key(&real)
                    || cfg.writable_roots.iter().any(|r| real.starts_with(r));
                if pushable {
                    return Err((
                        file,
                        format!(
                            "load_module {module} loads a module from where config pushes write, which nginx -t and every reload would run as root"
                        ),
                    ));
                }
                if let Some(why) = foreign(&real) {
                    return Err((
                        file,
                        format!(
                            "load_module {module}: {why}, so it may not be what root installed, and nginx -t and every reload would run it as root; load modules from a directory only root can write (the distribution's modules directory)"
                        ),
                    ));
                }
            } else if name.starts_with("perl") || name == "ssl_engine" {
                return Err((file, format!("`{name}` makes nginx run code as root")));
            }
        }
    }
    Ok(())
}

/// Why the file at `real` (a path with no links left) could hold someone else's code:
/// it, or a directory on its way, is owned by neither root nor the agent's user, or
/// others than its owner may write it. A sticky directory (`/tmp`) is fine: no one
/// else may replace what it holds.
fn foreign(real: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let own = std::fs::metadata("/proc/self").map_or(0, |s| s.uid());
    for p in real.ancestors() {
        let m = match std::fs::symlink_metadata(p) {
            Ok(m) => m,
            Err(e) => return Some(format!("{} cannot be read ({e})", p.display())),
        };
        if m.uid() != 0 && m.uid() != own {
            return Some(format!(
                "{} is owned by uid {}, not by root",
                p.display(),
                m.uid()
            ));
        }
        let sticky_dir = m.is_dir() && m.mode() & 0o1000 != 0;
        if m.mode() & 0o022 != 0 && !sticky_dir {
            return Some(format!(
                "{} is writable by others than its owner",
                p.display()
            ));
        }
    }
    None
}

/// The node's files as nginx will see them once the set is in place.
struct Node<'a> {
    base: &'a Path,
    overlay: &'a BTreeMap<PathBuf, &'a [u8]>,
}

impl nginx_conf::Source for Node<'_> {
    fn text(&self, p: &str) -> Result<Option<String>, String> {
        let real =
            path::follow(self.base, p).map_err(|e| format!("{p} cannot be resolved: {e}"))?;
        let bytes = match self.overlay.get(&real) {
            Some(b) => b.to_vec(),
            None => match read_bounded(&real) {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(format!("{p} cannot be read: {e}")),
            },
        };
        Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
    }

    fn list(&self, dir: &str) -> Result<Vec<String>, String> {
        let real =
            path::follow(self.base, dir).map_err(|e| format!("{dir} cannot be resolved: {e}"))?;
        let mut names: Vec<String> = match std::fs::read_dir(&real) {
            Ok(rd) => rd
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(format!("{dir} cannot be listed: {e}")),
        };
        for p in self.overlay.keys() {
            if p.parent() == Some(real.as_path())
                && let Some(n) = p.file_name()
            {
                names.push(n.to_string_lossy().into_owned());
            }
        }
        names.sort();
        names.dedup();
        Ok(names)
    }
}

/// A regular file's first [`NGINX_FILE_LIMIT`] bytes, opened without blocking (a FIFO
/// planted in an included directory must not hang the plan).
fn read_bounded(real: &Path) -> std::io::Result<Vec<u8>> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(real)?;
    if !f.metadata()?.is_file() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    f.take(NGINX_FILE_LIMIT).read_to_end(&mut out)?;
    Ok(out)
}

/// Where secrets live on a node (on the host or in any chroot): a plan never sends
/// back their text, whoever wrote them.
const SECRET_PATHS: &[&str] = &[
    "/etc/shadow",
    "/etc/gshadow",
    "/etc/gluu/conf/",
    "/etc/certs/",
    "/etc/ssl/private/",
    "/etc/clustermgr/",
    "/root/",
];

/// Whether `host` (a path as the host sees it) is a known place for secrets: one of
/// [`SECRET_PATHS`] at any chroot, or a key store or key by its name.
pub(super) fn secret_path(host: &str) -> bool {
    let name = host.rsplit('/').next().unwrap_or(host);
    let by_name = [
        ".key", ".jks", ".p12", ".pkcs12", ".pfx", "salt", ".pw", "password",
    ]
    .iter()
    .any(|s| name.ends_with(s));
    by_name
        || host
            .match_indices('/')
            .any(|(i, _)| SECRET_PATHS.iter().any(|p| host[i..].starts_with(p)))
}
