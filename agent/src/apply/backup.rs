//! The previous versions of every file an apply replaced, kept on the node (owner-only,
//! since they may hold secrets) and pruned to the newest few.

use std::io;
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

    /// Keeps `bytes` as version `counter` of `real`.
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
        }
        let json = serde_json::to_vec(meta).map_err(io::Error::other)?;
        write_atomic(&slot.join(format!("{counter}.meta")), &json, 0o600)?;
        write_atomic(&self.file(real, counter), bytes, 0o600)
    }

    /// Removes version `counter` of `real` (an apply that was undone).
    pub fn remove(&self, real: &Path, counter: u64) {
        let _ = std::fs::remove_file(self.file(real, counter));
        let _ = std::fs::remove_file(self.slot(real).join(format!("{counter}.meta")));
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
            .filter_map(|c| {
                let text = std::fs::read(self.slot(real).join(format!("{c}.meta"))).ok()?;
                Some((c, serde_json::from_slice(&text).ok()?))
            })
            .collect()
    }

    /// The content of version `counter` of `real`.
    pub fn read(&self, real: &Path, counter: u64) -> io::Result<Vec<u8>> {
        std::fs::read(self.file(real, counter))
    }
}
