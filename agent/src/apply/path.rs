//! Where an entry may write: its path resolved the way the kernel would (inside the
//! container root for container paths), then checked against the writable roots.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::io;
use std::os::unix::fs::FileTypeExt;
use std::path::{Component, Path, PathBuf};

use clustermgr_protocol::changeset::Scope;

use crate::config::{AgentConfig, RESERVED_DIR};

/// How many symlinks one resolution may follow (the kernel's own limit).
const MAX_LINKS: usize = 40;

/// A resolved path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    /// The directory that stands for `/` in the entry's scope, on the host.
    pub base: PathBuf,
    /// The real file on the host, every symlink followed.
    pub real: PathBuf,
}

/// Checks that `path` is absolute and normalized.
pub fn check_normalized(path: &str) -> Result<(), String> {
    if !path.starts_with('/') {
        return Err("is not an absolute path".into());
    }
    if path == "/" || path.ends_with('/') {
        return Err("names a directory, not a file".into());
    }
    if path.contains('\0') {
        return Err("contains a NUL byte".into());
    }
    if path
        .split('/')
        .skip(1)
        .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err("is not normalized (it has `.`, `..` or `//`)".into());
    }
    Ok(())
}

/// The host directory that stands for `/` in `scope`.
pub fn scope_base(cfg: &AgentConfig, scope: &Scope) -> Result<PathBuf, String> {
    match scope {
        Scope::Host => Ok(cfg.root.clone()),
        // A Gluu installed without a container (`gluu-root /`): its paths are the host's.
        Scope::Container { root } if root == "/" => Ok(cfg.root.clone()),
        Scope::Container { root } => {
            check_normalized(root).map_err(|why| format!("container root {root:?} {why}"))?;
            let base = cfg.root.join(root.trim_start_matches('/'));
            // The root itself must be a plain directory path: through a symlink (or
            // /proc/N/root) it could stand for any directory of the host.
            let real = follow(&cfg.root, root)
                .map_err(|e| format!("container root {root:?} cannot be resolved: {e}"))?;
            if real != base {
                return Err(format!(
                    "container root {root:?} goes through a symlink (to {}); give its real path with `clustermgr cluster set gluu-root`",
                    real.display()
                ));
            }
            Ok(base)
        }
    }
}

/// Resolves `path` in `scope` and checks that it may be written: under a writable
/// root, never in the agent's own directory, and a regular file if it exists.
pub fn resolve(cfg: &AgentConfig, scope: &Scope, path: &str) -> Result<Resolved, String> {
    check_normalized(path)?;
    let base = scope_base(cfg, scope)?;
    let real = follow(&base, path).map_err(|e| format!("cannot be resolved: {e}"))?;
    // The agent's identity, its own state (a pushed journal would be replayed at the
    // next start) and its binary.
    let reserved = [
        cfg.root.join(RESERVED_DIR.trim_start_matches('/')),
        PathBuf::from(RESERVED_DIR),
        cfg.state_dir.clone(),
        PathBuf::from(crate::uninstall::BOOTSTRAP_BIN),
    ];
    if reserved.iter().any(|r| real.starts_with(r)) {
        return Err(format!(
            "resolves to {}, the agent's own directory, state or binary, which config pushes never write",
            real.display()
        ));
    }
    if !cfg.writable_roots.iter().any(|r| real.starts_with(r)) {
        let through = if real == base.join(path.trim_start_matches('/')) {
            String::new()
        } else {
            format!(" (through a symlink, to {})", real.display())
        };
        let roots: Vec<String> = cfg
            .writable_roots
            .iter()
            .map(|r| r.display().to_string())
            .collect();
        return Err(format!(
            "is outside the agent's writable roots{through}; the roots are [{}] (writable_roots in {})",
            roots.join(", "),
            cfg.path.display()
        ));
    }
    match std::fs::symlink_metadata(&real) {
        Ok(m) => {
            let t = m.file_type();
            if t.is_dir() {
                return Err("is a directory".into());
            }
            if t.is_block_device() || t.is_char_device() || t.is_fifo() || t.is_socket() {
                return Err("is a device, pipe or socket, not a regular file".into());
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("cannot be inspected: {e}")),
    }
    Ok(Resolved { base, real })
}

/// Follows `path` component by component below `base`, as a chroot into `base`
/// would: absolute symlink targets restart at `base`, `..` never climbs above it.
pub(super) fn follow(base: &Path, path: &str) -> io::Result<PathBuf> {
    let mut rest: VecDeque<OsString> = Path::new(path)
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            _ => None,
        })
        .collect();
    let mut cur = base.to_path_buf();
    let mut links = 0;
    while let Some(c) = rest.pop_front() {
        if c == ".." {
            if cur != base {
                cur.pop();
            }
            continue;
        }
        if c == "." {
            continue;
        }
        let next = cur.join(&c);
        match std::fs::symlink_metadata(&next) {
            Ok(m) if m.file_type().is_symlink() => {
                trusted_link(&next, &m, &cur)?;
                links += 1;
                if links > MAX_LINKS {
                    return Err(io::Error::other("too many levels of symbolic links"));
                }
                let target = std::fs::read_link(&next)?;
                if target.is_absolute() {
                    cur = base.to_path_buf();
                }
                for (i, part) in target
                    .components()
                    .filter_map(|c| match c {
                        Component::Normal(n) => Some(n.to_os_string()),
                        Component::ParentDir => Some(OsString::from("..")),
                        _ => None,
                    })
                    .enumerate()
                {
                    rest.insert(i, part);
                }
            }
            Ok(_) => cur = next,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                cur = next;
                if rest.iter().any(|c| c == "..") {
                    return Err(io::Error::other(
                        "`..` below a directory that does not exist",
                    ));
                }
                cur.extend(rest.drain(..));
            }
            Err(e) => return Err(e),
        }
    }
    Ok(cur)
}

/// Refuses a link that neither root, this agent's user nor the owner of its directory
/// made: anyone else who can write there (a service account with a group-writable
/// directory, any user in a sticky one) could otherwise point root's write anywhere
/// it may go. The kernel's `protected_symlinks` rule, applied everywhere.
fn trusted_link(link: &Path, m: &std::fs::Metadata, dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let own = std::fs::metadata("/proc/self").map_or(0, |s| s.uid());
    let dir_owner = std::fs::symlink_metadata(dir)?.uid();
    if m.uid() == 0 || m.uid() == own || m.uid() == dir_owner {
        return Ok(());
    }
    Err(io::Error::other(format!(
        "{} is a symlink owned by uid {}, who does not own its directory; the agent follows only links owned by root or by the directory's owner",
        link.display(),
        m.uid()
    )))
}

/// A user or group name (or number) as an id, from `etc/passwd` or `etc/group` below
/// `base` (the scope's own), falling back to the host's.
pub fn lookup_id(base: &Path, name: &str, group: bool) -> Result<u32, String> {
    if let Ok(n) = name.parse::<u32>() {
        return Ok(n);
    }
    let file = if group { "etc/group" } else { "etc/passwd" };
    for db in [base.join(file), Path::new("/").join(file)] {
        let Ok(text) = std::fs::read_to_string(&db) else {
            continue;
        };
        for line in text.lines() {
            let mut fields = line.split(':');
            if fields.next() == Some(name)
                && let Some(id) = fields.nth(1).and_then(|f| f.parse().ok())
            {
                return Ok(id);
            }
        }
    }
    let what = if group { "group" } else { "user" };
    Err(format!(
        "names the {what} {name:?}, which does not exist on this host"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn cfg(root: &Path, writable: &[&Path]) -> AgentConfig {
        let text = format!(
            "cert = \"c\"\nkey = \"k\"\nca = \"a\"\nstate_dir = \"s\"\nroot = \"{}\"\nwritable_roots = [{}]\n",
            root.display(),
            writable
                .iter()
                .map(|p| format!("\"{}\"", p.display()))
                .collect::<Vec<_>>()
                .join(",")
        );
        AgentConfig::parse(Path::new("agent.toml"), &text).unwrap()
    }

    #[test]
    fn paths_must_be_absolute_and_normalized() {
        for bad in ["etc/x", "/etc/../x", "/etc//x", "/etc/./x", "/etc/", "/"] {
            assert!(check_normalized(bad).is_err(), "{bad}");
        }
        check_normalized("/etc/nginx/nginx.conf").unwrap();
    }

    #[test]
    fn writable_roots_and_symlinks_are_enforced() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        std::fs::create_dir_all(root.join("etc/nginx")).unwrap();
        std::fs::create_dir_all(root.join("etc/ssl")).unwrap();
        let c = cfg(root, &[&root.join("etc/nginx")]);
        let ok = resolve(&c, &Scope::Host, "/etc/nginx/nginx.conf").unwrap();
        assert_eq!(ok.real, root.join("etc/nginx/nginx.conf"));
        let err = resolve(&c, &Scope::Host, "/etc/ssl/x").unwrap_err();
        assert!(err.contains("outside the agent's writable roots"), "{err}");
        // An absolute symlink resolves inside the root, and is judged where it lands.
        symlink("/etc/ssl/key.pem", root.join("etc/nginx/key.pem")).unwrap();
        let err = resolve(&c, &Scope::Host, "/etc/nginx/key.pem").unwrap_err();
        assert!(err.contains("through a symlink"), "{err}");
        symlink("../../etc/nginx", root.join("etc/ssl/back")).unwrap();
        assert!(resolve(&c, &Scope::Host, "/etc/ssl/back/a.conf").is_ok());
        std::fs::create_dir(root.join("etc/nginx/dir")).unwrap();
        assert!(
            resolve(&c, &Scope::Host, "/etc/nginx/dir")
                .unwrap_err()
                .contains("directory")
        );
    }

    #[test]
    fn container_symlinks_resolve_inside_the_container() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        let gluu = root.join("opt/gluu-server");
        std::fs::create_dir_all(gluu.join("etc/gluu/conf")).unwrap();
        std::fs::create_dir_all(root.join("etc")).unwrap();
        // `/etc/passwd` inside the container is the container's, not the host's.
        symlink("/etc/passwd", gluu.join("etc/gluu/conf/link")).unwrap();
        let c = cfg(root, &[&gluu]);
        let scope = Scope::Container {
            root: "/opt/gluu-server".into(),
        };
        let r = resolve(&c, &scope, "/etc/gluu/conf/link").unwrap();
        assert_eq!(r.real, gluu.join("etc/passwd"));
        // `..` cannot climb out of the container.
        symlink("../../../../../../etc/x", gluu.join("etc/gluu/conf/up")).unwrap();
        let r = resolve(&c, &scope, "/etc/gluu/conf/up").unwrap();
        assert_eq!(r.real, gluu.join("etc/x"));
    }

    #[test]
    fn the_agents_own_directory_is_refused_even_under_a_writable_root() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        std::fs::create_dir_all(root.join("etc/clustermgr")).unwrap();
        symlink("/etc/clustermgr/agent.key", root.join("agent.key")).unwrap();
        let c = cfg(root, &[root]);
        let err = resolve(&c, &Scope::Host, "/agent.key").unwrap_err();
        assert!(err.contains("agent's own directory"), "{err}");
    }

    #[test]
    fn a_gluu_without_a_container_has_the_hosts_paths() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        std::fs::create_dir_all(root.join("etc/gluu/conf")).unwrap();
        let c = cfg(root, &[&root.join("etc/gluu/conf")]);
        let scope = Scope::Container { root: "/".into() };
        let r = resolve(&c, &scope, "/etc/gluu/conf/gluu-ldap.properties").unwrap();
        assert_eq!(r.real, root.join("etc/gluu/conf/gluu-ldap.properties"));
        assert_eq!(r.base, root);
    }

    #[test]
    fn a_container_root_through_a_symlink_is_refused() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        std::fs::create_dir_all(root.join("opt/gluu-server")).unwrap();
        std::fs::create_dir_all(root.join("etc")).unwrap();
        symlink("/etc", root.join("opt/gluu-server/hostetc")).unwrap();
        let c = cfg(root, &[&root.join("opt/gluu-server")]);
        let scope = Scope::Container {
            root: "/opt/gluu-server/hostetc".into(),
        };
        let err = resolve(&c, &scope, "/passwd").unwrap_err();
        assert!(err.contains("goes through a symlink"), "{err}");
    }

    #[test]
    fn the_agents_state_is_refused_even_under_a_writable_root() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        let mut c = cfg(root, &[root]);
        c.state_dir = root.join("state");
        let err = resolve(&c, &Scope::Host, "/state/config/txn.json").unwrap_err();
        assert!(err.contains("agent's own directory"), "{err}");
    }

    #[test]
    fn a_link_planted_by_someone_else_is_not_followed() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        std::fs::create_dir_all(root.join("etc/shared")).unwrap();
        std::fs::create_dir_all(root.join("etc/svc")).unwrap();
        let c = cfg(root, &[root]);
        // A user's link in root's directory: refused.
        symlink("/etc/target", root.join("etc/shared/hosts")).unwrap();
        std::os::unix::fs::lchown(root.join("etc/shared/hosts"), Some(4242), Some(4242))
            .expect("the unit tests run as root, as tests/run does");
        let err = resolve(&c, &Scope::Host, "/etc/shared/hosts").unwrap_err();
        assert!(err.contains("owned by uid 4242"), "{err}");
        // The same user's link in its own directory: followed (then judged as usual).
        std::os::unix::fs::chown(root.join("etc/svc"), Some(4242), Some(4242)).unwrap();
        symlink("/etc/target", root.join("etc/svc/x")).unwrap();
        std::os::unix::fs::lchown(root.join("etc/svc/x"), Some(4242), Some(4242)).unwrap();
        let r = resolve(&c, &Scope::Host, "/etc/svc/x").unwrap();
        assert_eq!(r.real, root.join("etc/target"));
    }

    #[test]
    fn devices_are_refused() {
        let c = cfg(Path::new("/"), &[Path::new("/dev/null")]);
        let err = resolve(&c, &Scope::Host, "/dev/null").unwrap_err();
        assert!(err.contains("device"), "{err}");
    }
}
