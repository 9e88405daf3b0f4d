//! The controller's state directory: the CA, the controller's own identity, the
//! inventory store and serve's socket, all in one directory only its owner can use.

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::CtlError;

/// The state directory of one cluster.
#[derive(Clone, Debug)]
pub struct Home {
    dir: PathBuf,
}

impl Home {
    /// The directory to use: `--home`, else `$CLUSTERMGR_HOME` (clap fills both into
    /// `explicit`), else `~/.clustermgr`.
    pub fn resolve(explicit: Option<PathBuf>) -> PathBuf {
        explicit.unwrap_or_else(|| {
            std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("/root"))
                .join(".clustermgr")
        })
    }

    /// Creates a new, empty home (mode 0700). Refuses one that already has a cluster.
    pub fn create(dir: &Path) -> Result<Home, CtlError> {
        Home::refuse_existing(dir)?;
        let home = Home {
            dir: dir.to_path_buf(),
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| CtlError::io(dir, e))?;
        // A directory that was already there (made by hand, mode 0755) holds no cluster
        // yet: make it owner-only before any key goes in. Someone else's is refused,
        // and so is one that others could write (they may have put something in it).
        let mode = home.check_owner()?.permissions().mode();
        if mode & 0o022 != 0 {
            return Err(CtlError::Insecure {
                path: dir.to_path_buf(),
                what: "writable by group or others",
                mode: mode & 0o7777,
                fix: "700",
            });
        }
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| CtlError::io(dir, e))?;
        home.check_dir()?;
        Ok(home)
    }

    /// Refuses a directory that already holds a cluster: neither `init` nor `restore`
    /// may overwrite a CA.
    pub fn refuse_existing(dir: &Path) -> Result<(), CtlError> {
        let home = Home {
            dir: dir.to_path_buf(),
        };
        if home.ca_cert().exists() || home.store().exists() {
            return Err(CtlError::HomeExists(dir.to_path_buf()));
        }
        Ok(())
    }

    /// Opens an existing home, checking that nobody else can write it or read its keys.
    pub fn open(dir: &Path) -> Result<Home, CtlError> {
        let home = Home {
            dir: dir.to_path_buf(),
        };
        if !home.ca_cert().exists() {
            return Err(CtlError::HomeMissing(dir.to_path_buf()));
        }
        home.check_dir()?;
        for key in [home.ca_key(), home.controller_key()] {
            check_private(&key)?;
        }
        Ok(home)
    }

    fn check_owner(&self) -> Result<std::fs::Metadata, CtlError> {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(&self.dir).map_err(|e| CtlError::io(&self.dir, e))?;
        let me = std::fs::metadata("/proc/self").map(|m| m.uid()).ok();
        if !meta.is_dir() || Some(meta.uid()) != me {
            return Err(CtlError::NotOwned(self.dir.clone()));
        }
        Ok(meta)
    }

    /// Refuses a home that is not ours or that anyone else may enter: it holds the CA
    /// key, the stores (with the cluster's TLS key and tunnel keys) and serve's socket.
    fn check_dir(&self) -> Result<(), CtlError> {
        let mode = self.check_owner()?.permissions().mode();
        if mode & 0o077 != 0 {
            return Err(CtlError::Insecure {
                path: self.dir.clone(),
                what: "open to group or others",
                mode: mode & 0o7777,
                fix: "700",
            });
        }
        Ok(())
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    /// The cluster CA certificate.
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }
    /// The cluster CA key (0600; never leaves this directory).
    pub fn ca_key(&self) -> PathBuf {
        self.dir.join("ca.key")
    }
    /// The controller's certificate.
    pub fn controller_cert(&self) -> PathBuf {
        self.dir.join("controller.crt")
    }
    /// The controller's key (0600).
    pub fn controller_key(&self) -> PathBuf {
        self.dir.join("controller.key")
    }
    /// The inventory store: nodes, certificates, audit log. Telemetry lives elsewhere.
    pub fn store(&self) -> PathBuf {
        self.dir.join("inventory.redb")
    }
    /// The telemetry store: logs and metrics, apart from the inventory.
    pub fn telemetry(&self) -> PathBuf {
        self.dir.join("telemetry.redb")
    }
    /// The controller's settings (`controller.toml`).
    pub fn config(&self) -> PathBuf {
        self.dir.join("controller.toml")
    }
    /// The web console's own CA certificate (`[web] tls = "issued"`), which browsers
    /// are given to trust the console's certificate.
    pub fn console_ca_cert(&self) -> PathBuf {
        self.dir.join("console-ca.crt")
    }
    /// Its key (0600; never leaves this directory).
    pub fn console_ca_key(&self) -> PathBuf {
        self.dir.join("console-ca.key")
    }
    /// `serve`'s local socket (0600).
    pub fn socket(&self) -> PathBuf {
        self.dir.join("serve.sock")
    }
}

/// Makes `path` an empty owner-only file if there is none (created without following
/// a link), else refuses one that group or others can read or write: the stores hold
/// private keys and secrets, and a store file is made before its database opens it.
pub fn private_file(path: &Path) -> Result<(), CtlError> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => check_owner_only(
            path,
            "a store holding private keys, readable or writable by group or others",
        ),
        Err(e) => Err(CtlError::io(path, e)),
    }
}

/// Refuses a private key file that group or others can read or write.
pub fn check_private(path: &Path) -> Result<(), CtlError> {
    check_owner_only(
        path,
        "a private key readable or writable by group or others",
    )
}

/// Refuses a secret file that group or others can read or write; `what` says what it
/// is and what is wrong, for the message.
pub fn check_owner_only(path: &Path, what: &'static str) -> Result<(), CtlError> {
    let mode = std::fs::metadata(path)
        .map_err(|e| CtlError::io(path, e))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(CtlError::Insecure {
            path: path.to_path_buf(),
            what,
            mode: mode & 0o7777,
            fix: "600",
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_home_owned_by_someone_else_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("theirs");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        // Only root can give a directory away; anyone else already has one that is not
        // theirs: the root directory.
        if std::os::unix::fs::chown(&dir, Some(65534), Some(65534)).is_err() {
            let err = Home::create(Path::new("/")).unwrap_err();
            return assert!(matches!(err, CtlError::NotOwned(_)), "{err}");
        }
        let err = Home::create(&dir).unwrap_err();
        assert!(matches!(err, CtlError::NotOwned(_)), "{err}");
    }

    #[test]
    fn a_home_writable_by_others_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("h");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = Home::create(&dir).unwrap_err().to_string();
        assert!(
            err.contains("writable by group or others") && err.contains("chmod 700"),
            "{err}"
        );
        // An empty directory of ours that others may only read is made owner-only ...
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let home = Home::create(&dir).unwrap();
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        // ... and a home someone opened up since is refused at every open.
        std::fs::write(home.ca_cert(), "x").unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let err = Home::open(&dir).unwrap_err().to_string();
        assert!(
            err.contains("open to group or others") && err.contains("chmod 700"),
            "{err}"
        );
    }

    #[test]
    fn store_files_are_made_owner_only_and_checked_at_every_open() {
        let tmp = tempfile::tempdir().unwrap();
        let f = tmp.path().join("inventory.redb");
        private_file(&f).unwrap();
        let mode = std::fs::metadata(&f).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        private_file(&f).unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = private_file(&f).unwrap_err().to_string();
        assert!(err.contains("chmod 600"), "{err}");
    }
}
