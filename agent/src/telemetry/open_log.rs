//! Opening a followed log file as root without being turned against the node: the
//! accounts that own log directories (jetty owns oxAuth's) must not be able to make the
//! agent read a root-only file for them, or hang it on a FIFO or a device.
//!
//! The path is walked from `/` one component at a time through directory handles:
//! a symlink is followed only when root (or the agent's own user) made it, the file
//! itself is opened without following a link and without blocking, and it must be a
//! regular file that the owner of its directory could have read anyway (its
//! directory is root's, or the file is that owner's, or anyone may read it).

use std::collections::VecDeque;
use std::ffi::OsString;
use std::fs::File;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path};

use rustix::fs::{AtFlags, Mode, OFlags};
use rustix::io::Errno;

/// How many links one path may go through (the kernel's own limit).
const MAX_LINKS: usize = 40;

const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);
const FILE_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::NOFOLLOW)
    .union(OFlags::NONBLOCK)
    .union(OFlags::CLOEXEC);

/// Why a followed file is not read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// There is nothing at the path (yet): not a refusal, the file may appear.
    Missing,
    /// Something is there that the agent will not read; the text says what and why.
    Refused(String),
}

/// Opens `path` for following, with the file's metadata.
pub fn open_log(path: &Path) -> Result<(File, std::fs::Metadata), Refusal> {
    let own = std::fs::metadata("/proc/self").map_or(0, |m| m.uid());
    let refused = |why: String| Refusal::Refused(format!("{}: {why}", path.display()));
    let mut rest: VecDeque<OsString> = names(path);
    let root = || rustix::fs::openat(rustix::fs::CWD, "/", DIR_FLAGS, Mode::empty());
    let mut dir: OwnedFd = root().map_err(|e| refused(e.to_string()))?;
    let mut links = 0;
    while let Some(name) = rest.pop_front() {
        let last = rest.is_empty();
        let flags = if last { FILE_FLAGS } else { DIR_FLAGS };
        match rustix::fs::openat(&dir, name.as_os_str(), flags, Mode::empty()) {
            Ok(fd) if last => {
                let file = File::from(fd);
                let m = file.metadata().map_err(|e| refused(e.to_string()))?;
                let dir_owner = rustix::fs::fstat(&dir)
                    .map_err(|e| refused(e.to_string()))?
                    .st_uid;
                check_file(&m, dir_owner).map_err(refused)?;
                return Ok((file, m));
            }
            Ok(fd) => dir = fd,
            Err(Errno::NOENT) => return Err(Refusal::Missing),
            // A link (O_NOFOLLOW's ELOOP, or ENOTDIR for a link in a directory's place).
            Err(e @ (Errno::LOOP | Errno::NOTDIR | Errno::MLINK)) => {
                let st = rustix::fs::statat(&dir, name.as_os_str(), AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(|e| refused(e.to_string()))?;
                if st.st_mode & libc::S_IFMT != libc::S_IFLNK {
                    return Err(refused(e.to_string()));
                }
                if st.st_uid != 0 && st.st_uid != own {
                    return Err(refused(format!(
                        "{} is a symlink made by uid {}, not root, and the agent follows only root's links",
                        name.to_string_lossy(),
                        st.st_uid
                    )));
                }
                links += 1;
                if links > MAX_LINKS {
                    return Err(refused("too many levels of symbolic links".into()));
                }
                let target = rustix::fs::readlinkat(&dir, name.as_os_str(), Vec::new())
                    .map_err(|e| refused(e.to_string()))?;
                let target = Path::new(std::ffi::OsStr::from_bytes(target.as_bytes()));
                if target.is_absolute() {
                    dir = root().map_err(|e| refused(e.to_string()))?;
                }
                for (i, n) in names(target).into_iter().enumerate() {
                    rest.insert(i, n);
                }
            }
            Err(e) => return Err(refused(e.to_string())),
        }
    }
    Err(refused("names a directory, not a file".into()))
}

/// The components of `path` to open one by one (`..` kept: the kernel resolves it on
/// the directory handle, which never climbs above `/`).
fn names(path: &Path) -> VecDeque<OsString> {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some(OsString::from("..")),
            _ => None,
        })
        .collect()
}

/// A regular file that the owner of its directory could read without the agent.
fn check_file(m: &std::fs::Metadata, dir_owner: u32) -> Result<(), String> {
    if !m.is_file() {
        return Err(
            "is not a regular file (a device, FIFO or socket), so it is not followed".into(),
        );
    }
    if dir_owner == 0 || m.uid() == dir_owner || m.mode() & 0o004 != 0 {
        return Ok(());
    }
    Err(format!(
        "belongs to uid {} and is not readable by others, in a directory of uid {}: the directory's owner could not read it, so the agent does not read it for them",
        m.uid(),
        dir_owner
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{PermissionsExt, chown, lchown, symlink};

    #[test]
    fn a_regular_file_opens_and_a_missing_one_is_missing() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("a.log"), "x\n").unwrap();
        assert!(open_log(&t.path().join("a.log")).is_ok());
        assert_eq!(
            open_log(&t.path().join("none.log")).unwrap_err(),
            Refusal::Missing
        );
    }

    #[test]
    fn a_service_account_cannot_point_the_agent_at_root_only_files_or_devices() {
        let t = tempfile::tempdir().unwrap();
        let logs = t.path().join("logs");
        std::fs::create_dir(&logs).unwrap();
        chown(&logs, Some(4242), Some(4242)).expect("the unit tests run as root");
        let secret = t.path().join("shadow");
        std::fs::write(&secret, "root:hash\n").unwrap();
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
        // Its link to a root-only file.
        symlink(&secret, logs.join("oxauth.log")).unwrap();
        lchown(logs.join("oxauth.log"), Some(4242), Some(4242)).unwrap();
        let Refusal::Refused(why) = open_log(&logs.join("oxauth.log")).unwrap_err() else {
            panic!("followed a service account's link")
        };
        assert!(why.contains("symlink made by uid 4242"), "{why}");
        // Its link to a device.
        symlink("/dev/zero", logs.join("zero.log")).unwrap();
        lchown(logs.join("zero.log"), Some(4242), Some(4242)).unwrap();
        assert!(matches!(
            open_log(&logs.join("zero.log")),
            Err(Refusal::Refused(_))
        ));
        // A FIFO: refused at once, never a hang.
        rustix::fs::mknodat(
            rustix::fs::CWD,
            logs.join("fifo.log"),
            rustix::fs::FileType::Fifo,
            Mode::from_raw_mode(0o666),
            0,
        )
        .unwrap();
        let Refusal::Refused(why) = open_log(&logs.join("fifo.log")).unwrap_err() else {
            panic!()
        };
        assert!(why.contains("not a regular file"), "{why}");
        // A root-only file (a hard link, where the kernel allows one) in its directory.
        std::fs::write(logs.join("root.log"), "x\n").unwrap();
        std::fs::set_permissions(
            logs.join("root.log"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        let Refusal::Refused(why) = open_log(&logs.join("root.log")).unwrap_err() else {
            panic!()
        };
        assert!(why.contains("belongs to uid 0"), "{why}");
        // Its own log, and root's links (logrotate's, the package's), are followed.
        std::fs::write(logs.join("own.log"), "x\n").unwrap();
        chown(logs.join("own.log"), Some(4242), Some(4242)).unwrap();
        std::fs::set_permissions(logs.join("own.log"), std::fs::Permissions::from_mode(0o600))
            .unwrap();
        assert!(open_log(&logs.join("own.log")).is_ok());
        symlink(logs.join("own.log"), t.path().join("by-root.log")).unwrap();
        assert!(open_log(&t.path().join("by-root.log")).is_ok());
    }
}
