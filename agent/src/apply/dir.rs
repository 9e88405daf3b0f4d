//! Files reached through a directory handle opened one component at a time, never
//! through a symlink: a directory swapped for a link after the path was checked makes
//! the operation fail instead of redirecting a root write elsewhere.
//!
//! The paths given here are already resolved ([`super::path`] followed every link and
//! checked the result against the writable roots), so a link on the way now can only
//! be one planted since, by someone who can write in a directory on the way.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path};

use clustermgr_protocol::changeset::Meta;
use rustix::fs::{AtFlags, Mode, OFlags};

/// An open directory, pinned: every operation acts on this very directory.
pub struct Dir {
    fd: OwnedFd,
}

const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

impl Dir {
    /// Opens `path` from `/`, creating the missing directories (mode 0755) when
    /// `create`. A symlink anywhere on the way is an error.
    pub fn open(path: &Path, create: bool) -> io::Result<Dir> {
        let mut fd = rustix::fs::openat(rustix::fs::CWD, "/", DIR_FLAGS, Mode::empty())?;
        for c in path.components() {
            let name = match c {
                Component::RootDir => continue,
                Component::Normal(n) => n,
                _ => return Err(io::Error::other("the path is not normalized")),
            };
            fd = match rustix::fs::openat(&fd, name, DIR_FLAGS, Mode::empty()) {
                Err(rustix::io::Errno::NOENT) if create => {
                    match rustix::fs::mkdirat(&fd, name, Mode::from_raw_mode(0o755)) {
                        Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                        Err(e) => return Err(e.into()),
                    }
                    rustix::fs::openat(&fd, name, DIR_FLAGS, Mode::empty())
                }
                other => other,
            }
            .map_err(|e| moved(e, path))?;
        }
        Ok(Dir { fd })
    }

    /// The directory of `file` and the file's name in it.
    pub fn of(file: &Path, create: bool) -> io::Result<(Dir, &OsStr)> {
        let (Some(parent), Some(name)) = (file.parent(), file.file_name()) else {
            return Err(io::Error::other("the path names no file"));
        };
        Ok((Dir::open(parent, create)?, name))
    }

    /// Reads a regular file and its metadata; a symlink, a FIFO or a device is refused.
    pub fn read(&self, name: &OsStr) -> io::Result<(Vec<u8>, Meta)> {
        // Non-blocking too: a FIFO swapped in would otherwise hang the open.
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
        let mut f = File::from(rustix::fs::openat(&self.fd, name, flags, Mode::empty())?);
        let m = f.metadata()?;
        if !m.is_file() {
            return Err(io::Error::other("it is not a regular file"));
        }
        let mut bytes = Vec::with_capacity(m.len() as usize);
        f.read_to_end(&mut bytes)?;
        Ok((bytes, super::meta_of(&m)))
    }

    /// Creates `name` afresh with its final mode and owner before any byte, writes
    /// `bytes` and fsyncs. Whatever sat at the name goes first: never written through.
    pub fn write_new(&self, name: &OsStr, bytes: &[u8], meta: &Meta) -> io::Result<()> {
        self.remove(name)?;
        let flags =
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = rustix::fs::openat(&self.fd, name, flags, Mode::from_raw_mode(0o600))?;
        let mut f = File::from(fd);
        let (uid, gid) = super::own_ids();
        if (meta.uid, meta.gid) != (uid, gid) {
            std::os::unix::fs::fchown(&f, Some(meta.uid), Some(meta.gid))?;
        }
        f.set_permissions(std::fs::Permissions::from_mode(meta.mode))?;
        f.write_all(bytes)?;
        f.sync_all()
    }

    /// Removes `name`; a name that is not there is fine.
    pub fn remove(&self, name: &OsStr) -> io::Result<()> {
        match rustix::fs::unlinkat(&self.fd, name, AtFlags::empty()) {
            Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Renames `from` over `to`, both in this directory.
    pub fn rename(&self, from: &OsStr, to: &OsStr) -> io::Result<()> {
        Ok(rustix::fs::renameat(&self.fd, from, &self.fd, to)?)
    }

    /// Makes the directory's entries durable.
    pub fn sync(&self) -> io::Result<()> {
        Ok(rustix::fs::fsync(&self.fd)?)
    }
}

fn moved(e: rustix::io::Errno, path: &Path) -> io::Error {
    if e == rustix::io::Errno::LOOP || e == rustix::io::Errno::NOTDIR {
        io::Error::other(format!(
            "a directory on the way to {} was replaced by a symlink or a file since the path was checked",
            path.display()
        ))
    } else {
        e.into()
    }
}

/// A directory of the agent's own in a Gluu container's `/tmp`, for files a tool run
/// chrooted there reads or writes (password files, a keystore copy): the container's
/// `/tmp` must be root's, not a link, and sticky or writable by root alone, so that no
/// service account of the container can rename or replace what root makes in it; the
/// directory is made fresh (mode 0700, a random name `mkdir` fails on if anything is
/// there) and removed with what it holds when dropped.
pub struct ContainerTemp {
    /// The directory, on the host.
    pub dir: std::path::PathBuf,
    /// The same, as the container sees it (`/tmp/NAME`).
    pub inside: String,
}

impl ContainerTemp {
    /// Makes `clustermgr-PURPOSE-RANDOM` in the `/tmp` of the container rooted at `base`.
    pub fn new(base: &Path, purpose: &str) -> io::Result<ContainerTemp> {
        use std::os::unix::fs::{DirBuilderExt, MetadataExt};
        let mut raw = [0u8; 8];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut raw)
            .map_err(|_| io::Error::other("no random bytes"))?;
        let name = format!(
            "clustermgr-{purpose}-{}",
            clustermgr_protocol::identity::hex(&raw)
        );
        let tmp = base.join("tmp");
        let meta = std::fs::symlink_metadata(&tmp)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", tmp.display())))?;
        let shared_unsafely = meta.mode() & 0o022 != 0 && meta.mode() & 0o1000 == 0;
        if !meta.is_dir() || meta.uid() != 0 || shared_unsafely {
            return Err(io::Error::other(format!(
                "{} is not a directory of root's that others cannot rename entries in (a link, another owner's, or writable without the sticky bit): nothing is written there",
                tmp.display()
            )));
        }
        let dir = tmp.join(&name);
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", dir.display())))?;
        Ok(ContainerTemp {
            dir,
            inside: format!("/tmp/{name}"),
        })
    }
}

impl Drop for ContainerTemp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
