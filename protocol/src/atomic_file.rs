//! The one file-writing routine both ends share: write a file whole or not at all,
//! with its mode set before any byte is written (so a private key is never readable
//! by others, not even for an instant).
//!
//! This is the only part of the protocol crate that touches the filesystem; it lives
//! here so the controller (CA and controller keys) and the agent (its key and
//! certificate) cannot drift apart on how secrets reach the disk.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ring::rand::{SecureRandom, SystemRandom};

/// Writes `bytes` to `path` atomically: a temporary file in the same directory,
/// created with `mode`, fsynced, renamed over `path`, then the directory fsynced.
///
/// The temporary file has an unpredictable name and is created exclusively without
/// following a link, and its mode is set on the open file, so nobody else who can
/// write in the directory can redirect the write or slip in between. A directory that
/// others can write is refused anyway (unless it is sticky and ours), since they could
/// rename or remove what is written there.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    replace(path, bytes, mode, true)
}

/// [`write_atomic`] without the fsyncs: the old file or the new one after a crash of
/// the process, but after a power loss perhaps neither. For state that a power loss
/// makes moot anyway (the agent's list of commands running now), written often.
pub fn replace_unsynced(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    replace(path, bytes, mode, false)
}

fn replace(path: &Path, bytes: &[u8], mode: u32, durable: bool) -> io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    check_dir(dir)?;
    let (tmp, mut f) = create_temp(dir, &name.to_string_lossy(), mode)?;
    let result = (|| {
        // The mode given at creation is filtered by the umask; set it exactly, on the
        // file that is open (not by path, which someone could have swapped).
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        f.write_all(bytes)?;
        if durable {
            f.sync_all()?;
        }
        fs::rename(&tmp, path)?;
        if durable {
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Refuses a directory others can write, unless it is sticky and owned by us.
fn check_dir(dir: &Path) -> io::Result<()> {
    let m = fs::metadata(dir)?;
    let mine = fs::metadata("/proc/self")
        .map(|s| s.uid())
        .unwrap_or(u32::MAX);
    let sticky_and_mine = m.mode() & 0o1000 != 0 && m.uid() == mine;
    if m.mode() & 0o002 != 0 && !sticky_and_mine {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{} is writable by others (mode {:o}), so a file written there could be replaced; write into a directory only its owner can change",
                dir.display(),
                m.mode() & 0o7777
            ),
        ));
    }
    Ok(())
}

/// Creates a new temporary file beside the target with a random name, exclusively:
/// `create_new` is `O_CREAT|O_EXCL`, which fails on anything at the name, a link
/// included, and never follows one (std opens with `O_CLOEXEC` already).
fn create_temp(dir: &Path, name: &str, mode: u32) -> io::Result<(PathBuf, File)> {
    let rng = SystemRandom::new();
    let mut last = None;
    for _ in 0..8 {
        let mut r = [0u8; 8];
        rng.fill(&mut r)
            .map_err(|_| io::Error::other("the system's random number generator failed"))?;
        let tmp = dir.join(format!(".{name}.tmp{:016x}", u64::from_le_bytes(r)));
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode & 0o777)
            .open(&tmp)
        {
            Ok(f) => return Ok((tmp, f)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("no free temporary name")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_whole_file_with_exact_mode() {
        let dir = std::env::temp_dir().join(format!("cm-atomic-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let p = dir.join("key.pem");
        write_atomic(&p, b"one", 0o600).unwrap();
        write_atomic(&p, b"two", 0o600).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1, "no temp files left");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_directory_others_can_write_is_refused_and_links_are_never_followed() {
        let t = tempfile_dir("shared");
        fs::set_permissions(&t, fs::Permissions::from_mode(0o777)).unwrap();
        let err = write_atomic(&t.join("key.pem"), b"secret", 0o600).unwrap_err();
        assert!(err.to_string().contains("writable by others"), "{err}");
        // Sticky and ours (our own /tmp-like directory): allowed.
        fs::set_permissions(&t, fs::Permissions::from_mode(0o1777)).unwrap();
        write_atomic(&t.join("key.pem"), b"one", 0o600).unwrap();
        // The old temp name was predictable: a link planted at every name it could
        // take no longer matters, since the name is random and created exclusively.
        let victim = t.join("victim");
        fs::write(&victim, "keep").unwrap();
        let old_name = format!(".key.pem.tmp{}", std::process::id());
        std::os::unix::fs::symlink(&victim, t.join(old_name)).unwrap();
        write_atomic(&t.join("key.pem"), b"two", 0o600).unwrap();
        assert_eq!(fs::read(&victim).unwrap(), b"keep");
        assert_eq!(fs::read(t.join("key.pem")).unwrap(), b"two");
        fs::remove_dir_all(&t).unwrap();
    }

    fn tempfile_dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("cm-atomic-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }
}
