//! The previous versions of every file an apply replaced, kept on the node (owner-only,
//! since they may hold secrets) and pruned to the newest few.

use std::io::{self, BufRead, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use clustermgr_protocol::atomic_file::write_atomic;
use clustermgr_protocol::changeset::Meta;
use clustermgr_protocol::identity::sha256_hex;
use serde::{Deserialize, Serialize};

/// What is recorded beside each kept version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupMeta {
    /// When it was replaced, Unix milliseconds.
    pub replaced_at_ms: i64,
    /// SHA-256 of its content.
    pub sha256: String,
    /// Its metadata.
    pub meta: Meta,
}

/// The backups of every path, one directory per path.
#[derive(Debug)]
pub struct Backups {
    dir: PathBuf,
    keep: usize,
}

impl Backups {
    /// Backups under `dir`, keeping the newest `keep` of each path.
    pub fn new(dir: PathBuf, keep: usize) -> Self {
        Backups { dir, keep }
    }

    fn slot(&self, real: &Path) -> PathBuf {
        use std::os::unix::ffi::OsStrExt;
        let id = sha256_hex(real.as_os_str().as_bytes());
        self.dir.join(&id[..32])
    }

    fn file(&self, real: &Path, counter: u64) -> PathBuf {
        self.slot(real).join(counter.to_string())
    }

    /// The counter the next backup of `real` gets.
    pub fn next_counter(&self, real: &Path) -> u64 {
        self.counters(real).first().map_or(1, |c| c + 1)
    }

    /// Counters of the kept versions, newest first.
    fn counters(&self, real: &Path) -> Vec<u64> {
        let mut out: Vec<u64> = std::fs::read_dir(self.slot(real))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse().ok())
            .collect();
        out.sort_unstable_by(|a, b| b.cmp(a));
        out
    }

    /// Keeps `bytes` as version `counter` of `real`: one file, its metadata in a first
    /// line and the content after, written straight under its number and made durable
    /// (the file, then its directory) before the apply replaces anything. No temporary
    /// name: a crash while staging leaves the journal in its staging phase, whose
    /// recovery removes this version whole or half-written, and the number is new, so
    /// nothing kept is ever overwritten.
    pub fn save(
        &self,
        real: &Path,
        counter: u64,
        bytes: &[u8],
        meta: &BackupMeta,
    ) -> io::Result<()> {
        let slot = self.slot(real);
        std::fs::create_dir_all(&slot)?;
        std::fs::set_permissions(
            &self.dir,
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )?;
        let path_file = slot.join("path");
        if !path_file.exists() {
            use std::os::unix::ffi::OsStrExt;
            write_atomic(&path_file, real.as_os_str().as_bytes(), 0o600)?;
            // The slot's own entry, new too.
            std::fs::File::open(&self.dir)?.sync_all()?;
        }
        let mut head = serde_json::to_vec(meta).map_err(io::Error::other)?;
        head.push(b'\n');
        let file = self.file(real, counter);
        let _ = std::fs::remove_file(&file);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            // The directory is root's alone, yet a link there is never written through.
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .open(&file)?;
        f.write_all(MAGIC)?;
        f.write_all(&head)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::File::open(&slot)?.sync_all()
    }

    /// Removes version `counter` of `real` (an apply that was undone).
    pub fn remove(&self, real: &Path, counter: u64) {
        let _ = std::fs::remove_file(self.file(real, counter));
        let _ = std::fs::remove_file(self.legacy_meta(real, counter));
    }

    /// Drops all but the newest versions of `real`.
    pub fn prune(&self, real: &Path) {
        for c in self.counters(real).into_iter().skip(self.keep) {
            self.remove(real, c);
        }
    }

    /// The kept versions of `real`, newest first, as (counter, metadata).
    pub fn list(&self, real: &Path) -> Vec<(u64, BackupMeta)> {
        self.counters(real)
            .into_iter()
            .filter_map(|c| Some((c, self.meta(real, c).ok()?)))
            .collect()
    }

    /// The metadata of version `counter` of `real`.
    pub fn meta(&self, real: &Path, counter: u64) -> io::Result<BackupMeta> {
        // Kept before the metadata moved into the file: a file of its own beside it.
        match std::fs::read(self.legacy_meta(real, counter)) {
            Ok(json) => return serde_json::from_slice(&json).map_err(io::Error::other),
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            Err(_) => {}
        }
        let mut r = io::BufReader::new(std::fs::File::open(self.file(real, counter))?);
        let mut line = Vec::new();
        r.read_until(b'\n', &mut line)?;
        let json = line
            .strip_prefix(MAGIC)
            .ok_or_else(|| io::Error::other("not a backup of clustermgr's"))?;
        serde_json::from_slice(json).map_err(io::Error::other)
    }

    /// The content of version `counter` of `real`.
    pub fn read(&self, real: &Path, counter: u64) -> io::Result<Vec<u8>> {
        let bytes = std::fs::read(self.file(real, counter))?;
        if self.legacy_meta(real, counter).exists() {
            return Ok(bytes);
        }
        let start = bytes
            .strip_prefix(MAGIC)
            .and_then(|rest| rest.iter().position(|b| *b == b'\n'))
            .ok_or_else(|| io::Error::other("not a backup of clustermgr's"))?;
        Ok(bytes[MAGIC.len() + start + 1..].to_vec())
    }

    /// Where a version kept by an older agent has its metadata.
    fn legacy_meta(&self, real: &Path, counter: u64) -> PathBuf {
        self.slot(real).join(format!("{counter}.meta"))
    }
}

/// How a kept version begins: its metadata follows on the same line.
const MAGIC: &[u8] = b"clustermgr-backup 1 ";

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(at: i64) -> BackupMeta {
        BackupMeta {
            replaced_at_ms: at,
            sha256: "ab".into(),
            meta: Meta {
                mode: 0o640,
                uid: 0,
                gid: 0,
            },
        }
    }

    #[test]
    fn a_kept_version_is_one_file_that_reads_back_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        let b = Backups::new(dir.path().join("backups"), 2);
        let real = Path::new("/etc/nginx/nginx.conf");
        // Content with newlines and bytes that look like a header.
        let content = b"clustermgr-backup 1 {}\nline\n\0\xff";
        for c in 1..=3 {
            b.save(real, c, content, &meta(c as i64)).unwrap();
        }
        assert_eq!(b.read(real, 3).unwrap(), content);
        assert_eq!(b.meta(real, 2).unwrap(), meta(2));
        b.prune(real);
        let kept: Vec<u64> = b.list(real).into_iter().map(|(c, _)| c).collect();
        assert_eq!(kept, [3, 2]);
        assert_eq!(b.next_counter(real), 4);
        // One file per version beside the slot's path record.
        let slot = b.slot(real);
        let mut names: Vec<String> = std::fs::read_dir(&slot)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["2", "3", "path"]);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(slot.join("3"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn versions_an_older_agent_kept_read_as_before_and_go_whole() {
        let dir = tempfile::tempdir().unwrap();
        let b = Backups::new(dir.path().join("backups"), 5);
        let real = Path::new("/etc/hosts");
        let slot = b.slot(real);
        std::fs::create_dir_all(&slot).unwrap();
        std::fs::write(slot.join("4"), b"old hosts\n").unwrap();
        std::fs::write(slot.join("4.meta"), serde_json::to_vec(&meta(44)).unwrap()).unwrap();
        assert_eq!(b.read(real, 4).unwrap(), b"old hosts\n");
        assert_eq!(b.list(real), vec![(4, meta(44))]);
        b.save(real, 5, b"new hosts\n", &meta(55)).unwrap();
        assert_eq!(b.list(real), vec![(5, meta(55)), (4, meta(44))]);
        b.remove(real, 4);
        assert!(!slot.join("4").exists() && !slot.join("4.meta").exists());
        assert_eq!(b.read(real, 5).unwrap(), b"new hosts\n");
    }
}
