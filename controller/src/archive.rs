//! The backup archive: what a controller's home holds, encrypted under a passphrase.
//! Only this module knows the format.
//!
//! ```text
//! offset  bytes  field
//!      0      8  magic "CMBACKUP"
//!      8      1  envelope format (1)
//!      9      4  argon2id memory, KiB       (big-endian)
//!     13      4  argon2id passes            (big-endian)
//!     17      4  argon2id lanes             (big-endian)
//!     21     16  salt                       (random per archive)
//!     37     12  nonce                      (random per archive)
//!     49      n  ChaCha20-Poly1305 ciphertext of the contents, then its 16-byte tag
//! ```
//!
//! Envelope format 1 is argon2id (version 0x13, 32-byte key) and ChaCha20-Poly1305
//! (ring). The 49 header bytes are the cipher's associated data: a header changed to
//! weaker settings, another salt or another nonce fails authentication exactly as a
//! wrong passphrase does, and nothing is decrypted until the whole archive has
//! authenticated. The plaintext is a contents format byte ([`CONTENTS_FORMAT`]), then
//! the postcard encoding of [`BackupContents`].
//!
//! ChaCha20-Poly1305 rather than AES-GCM: it is constant-time in software, so the
//! machine restoring a backup need not have AES instructions for it to be safe. Each
//! archive has its own salt and so its own key, which is used for one message only.

use std::path::Path;

use argon2::{Algorithm, Argon2, Params, Version};
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, Zeroizing};

use crate::CtlError;
use crate::store::StoreSnapshot;

/// The first bytes of every archive.
pub const MAGIC: [u8; 8] = *b"CMBACKUP";

/// The envelope format this release writes and reads.
pub const ENVELOPE_FORMAT: u8 = 1;

/// The format byte in front of the postcard contents. Bump it with any change to
/// [`BackupContents`] or to the store records it carries.
pub const CONTENTS_FORMAT: u8 = 6;

const SALT_LEN: usize = 16;
const KEY_LEN: usize = 32;
const TAG_LEN: usize = 16;

/// Length of the header, which is also the associated data.
pub const HEADER_LEN: usize = MAGIC.len() + 1 + 3 * 4 + SALT_LEN + NONCE_LEN;

/// The largest archive `restore` reads (the whole file is authenticated in memory).
pub const MAX_ARCHIVE_BYTES: u64 = 1 << 30;

/// argon2id's cost settings, as the header records them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KdfParams {
    /// Memory, KiB.
    pub memory_kib: u32,
    /// Passes over the memory.
    pub passes: u32,
    /// Lanes.
    pub lanes: u32,
}

impl KdfParams {
    /// What `backup` uses: RFC 9106's second recommended setting (64 MiB, 3 passes, 4
    /// lanes), for machines that cannot spare the first one's 2 GiB. Each guess at the
    /// passphrase costs an attacker that much memory and time.
    pub const DEFAULT: KdfParams = KdfParams {
        memory_kib: 64 * 1024,
        passes: 3,
        lanes: 4,
    };

    /// The most an archive may ask for. The header is read before it can be
    /// authenticated, so a doctored file could otherwise make `restore` spend a minute
    /// and a GiB before the passphrase is even checked. `backup` only ever writes
    /// [`KdfParams::DEFAULT`]: twice its memory and passes is the margin (a release
    /// that raises its default raises this with it, and reads its own archives).
    const CEILING: KdfParams = KdfParams {
        memory_kib: 2 * KdfParams::DEFAULT.memory_kib,
        passes: 2 * KdfParams::DEFAULT.passes,
        lanes: 2 * KdfParams::DEFAULT.lanes,
    };

    fn argon2(&self) -> Result<Argon2<'static>, String> {
        let ceiling = KdfParams::CEILING;
        if self.memory_kib > ceiling.memory_kib
            || self.passes > ceiling.passes
            || self.lanes > ceiling.lanes
        {
            return Err(format!(
                "its key derivation asks for {} KiB, {} passes and {} lanes, beyond the {} KiB, {} passes and {} lanes clustermgr allows",
                self.memory_kib,
                self.passes,
                self.lanes,
                ceiling.memory_kib,
                ceiling.passes,
                ceiling.lanes
            ));
        }
        let params = Params::new(self.memory_kib, self.passes, self.lanes, Some(KEY_LEN))
            .map_err(|e| format!("its key derivation settings are invalid ({e})"))?;
        Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
    }
}

impl std::fmt::Display for KdfParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "argon2id, {} MiB, {} passes, {} lanes",
            self.memory_kib / 1024,
            self.passes,
            self.lanes
        )
    }
}

/// Everything a backup carries.
#[derive(Serialize, Deserialize)]
pub struct BackupContents {
    /// When the backup was made, Unix seconds.
    pub created_at: i64,
    /// The clustermgr release that made it.
    pub software: String,
    /// The CA certificate, PEM.
    pub ca_cert_pem: String,
    /// The CA key, PEM.
    pub ca_key_pem: String,
    /// `controller.toml`, if the home had one.
    pub controller_toml: Option<String>,
    /// Every store record, from one read transaction.
    pub store: StoreSnapshot,
}

impl Drop for BackupContents {
    fn drop(&mut self) {
        // Best effort: the CA key also lives in rcgen's key pair and, on the backed-up
        // machine, in a file; this copy at least does not outlive its use.
        self.ca_key_pem.zeroize();
    }
}

impl BackupContents {
    /// The plaintext: the contents format byte, then postcard.
    pub fn encode(&self) -> Zeroizing<Vec<u8>> {
        let body = Zeroizing::new(clustermgr_protocol::codec::encode(self));
        let mut out = Zeroizing::new(Vec::with_capacity(1 + body.len()));
        out.push(CONTENTS_FORMAT);
        out.extend_from_slice(&body);
        out
    }

    /// Reads a plaintext that [`open`] returned from `file`.
    pub fn decode(file: &Path, plaintext: &[u8]) -> Result<BackupContents, CtlError> {
        let unreadable = |why: String| CtlError::BackupUnreadable {
            file: file.to_path_buf(),
            why,
        };
        match plaintext.split_first() {
            Some((&CONTENTS_FORMAT, rest)) => {
                clustermgr_protocol::codec::decode("backup contents", rest)
                    .map_err(|e| unreadable(e.to_string()))
            }
            // Format 5 is format 6 without the oxAuth keys, its last field; format 4
            // is format 5 without provisioning's settings, the one before; format 3 is
            // format 4 without the console's accounts; and format 2 is format 3
            // without the build record: read them with defaults appended.
            Some((&old @ (2..=5), rest)) => {
                let mut body = Zeroizing::new(rest.to_vec());
                if old == 2 {
                    body.extend(clustermgr_protocol::codec::encode(
                        &crate::store::BuildRecord::default(),
                    ));
                }
                if old <= 3 {
                    body.extend(clustermgr_protocol::codec::encode(&Vec::<
                        crate::store::UserRecord,
                    >::new(
                    )));
                }
                if old <= 4 {
                    body.extend(clustermgr_protocol::codec::encode(
                        &crate::store::ProvisionRecord::default(),
                    ));
                }
                body.extend(clustermgr_protocol::codec::encode(
                    &crate::store::KeysRecord::default(),
                ));
                clustermgr_protocol::codec::decode("backup contents", &body)
                    .map_err(|e| unreadable(e.to_string()))
            }
            Some((other, _)) => Err(unreadable(format!(
                "its contents are format {other}, this clustermgr reads format {CONTENTS_FORMAT}; restore it with the release that wrote it"
            ))),
            None => Err(unreadable("its contents are empty".into())),
        }
    }
}

/// Encrypts `plaintext` under `passphrase` with the KDF settings `params`.
pub fn seal(passphrase: &[u8], plaintext: &[u8], params: KdfParams) -> Result<Vec<u8>, CtlError> {
    let rng = SystemRandom::new();
    let mut salt = [0u8; SALT_LEN];
    let mut nonce = [0u8; NONCE_LEN];
    rng.fill(&mut salt)
        .and_then(|()| rng.fill(&mut nonce))
        .expect("the system random source works");
    let mut out = Vec::with_capacity(HEADER_LEN + plaintext.len() + TAG_LEN);
    out.extend_from_slice(&MAGIC);
    out.push(ENVELOPE_FORMAT);
    for n in [params.memory_kib, params.passes, params.lanes] {
        out.extend_from_slice(&n.to_be_bytes());
    }
    out.extend_from_slice(&salt);
    out.extend_from_slice(&nonce);
    let cannot = |why: String| CtlError::Internal {
        what: "encrypting the backup",
        why,
        next: "; nothing was written",
    };
    let key = derive_key(passphrase, &salt, params).map_err(cannot)?;
    let mut body = Zeroizing::new(plaintext.to_vec());
    key.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(nonce),
        Aad::from(&out[..HEADER_LEN]),
        &mut *body,
    )
    .map_err(|_| cannot("it is too large to encrypt in one piece".into()))?;
    out.extend_from_slice(&body);
    Ok(out)
}

/// What the header of an archive says, checked before any passphrase is asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// The KDF settings it was sealed with.
    pub kdf: KdfParams,
    salt: [u8; SALT_LEN],
    nonce: [u8; NONCE_LEN],
}

impl Header {
    /// Reads the header of `archive` (the contents of `file`). Refuses a file that is
    /// not an archive of a format this release reads, or that is too short to hold one.
    pub fn parse(file: &Path, archive: &[u8]) -> Result<Header, CtlError> {
        let unreadable = |why: String| CtlError::BackupUnreadable {
            file: file.to_path_buf(),
            why,
        };
        if !archive.starts_with(&MAGIC) {
            return Err(unreadable(
                "it does not start with the marker every backup starts with".into(),
            ));
        }
        if archive.len() < HEADER_LEN + TAG_LEN {
            return Err(unreadable(format!(
                "it is only {} bytes long, too short to hold a backup; it was cut off, use another copy",
                archive.len()
            )));
        }
        let format = archive[MAGIC.len()];
        if format != ENVELOPE_FORMAT {
            return Err(unreadable(format!(
                "it is format {format}, this clustermgr reads format {ENVELOPE_FORMAT}; restore it with the release that wrote it"
            )));
        }
        let word = |i: usize| {
            let at = MAGIC.len() + 1 + 4 * i;
            u32::from_be_bytes([
                archive[at],
                archive[at + 1],
                archive[at + 2],
                archive[at + 3],
            ])
        };
        let kdf = KdfParams {
            memory_kib: word(0),
            passes: word(1),
            lanes: word(2),
        };
        kdf.argon2().map_err(|why| {
            unreadable(format!("{why}; it was altered, or not made by clustermgr"))
        })?;
        let salt_at = MAGIC.len() + 1 + 3 * 4;
        let nonce_at = salt_at + SALT_LEN;
        let mut salt = [0u8; SALT_LEN];
        let mut nonce = [0u8; NONCE_LEN];
        salt.copy_from_slice(&archive[salt_at..nonce_at]);
        nonce.copy_from_slice(&archive[nonce_at..HEADER_LEN]);
        Ok(Header { kdf, salt, nonce })
    }
}

/// Decrypts `archive` (the contents of `file`) with `passphrase`. A wrong passphrase
/// and a changed file give the same error, and no plaintext at all.
pub fn open(
    file: &Path,
    passphrase: &[u8],
    archive: &[u8],
) -> Result<Zeroizing<Vec<u8>>, CtlError> {
    let header = Header::parse(file, archive)?;
    let key = derive_key(passphrase, &header.salt, header.kdf).map_err(|why| {
        CtlError::BackupUnreadable {
            file: file.to_path_buf(),
            why,
        }
    })?;
    let mut body = Zeroizing::new(archive[HEADER_LEN..].to_vec());
    let len = key
        .open_in_place(
            Nonce::assume_unique_for_key(header.nonce),
            Aad::from(&archive[..HEADER_LEN]),
            &mut body,
        )
        .map_err(|_| CtlError::BackupDecrypt(file.to_path_buf()))?
        .len();
    body.truncate(len);
    Ok(body)
}

fn derive_key(passphrase: &[u8], salt: &[u8], params: KdfParams) -> Result<LessSafeKey, String> {
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    params
        .argon2()?
        .hash_password_into(passphrase, salt, key.as_mut())
        .map_err(|e| format!("cannot derive a key from the passphrase ({e})"))?;
    let unbound = UnboundKey::new(&CHACHA20_POLY1305, key.as_ref())
        .map_err(|_| "the derived key has the wrong length".to_string())?;
    Ok(LessSafeKey::new(unbound))
}

/// What `backup` reports.
#[derive(Clone, Debug, serde::Serialize, schemars::JsonSchema)]
pub struct BackupView {
    /// The archive written.
    pub file: std::path::PathBuf,
    /// The cluster's name.
    pub cluster: String,
    /// How many nodes it holds.
    pub nodes: usize,
    /// How many certificate records.
    pub certificates: usize,
    /// How many audit entries (this backup's own included).
    pub audit_entries: usize,
    /// The archive's size.
    pub bytes: usize,
    /// The key derivation it was sealed with.
    pub kdf: String,
}

/// What `restore` reports.
#[derive(Clone, Debug, serde::Serialize, schemars::JsonSchema)]
pub struct RestoreView {
    /// The home made.
    pub home: std::path::PathBuf,
    /// The archive it came from.
    pub file: std::path::PathBuf,
    /// The cluster's name.
    pub cluster: String,
    /// When the backup was made.
    #[schemars(extend("format" = "date-time"))]
    pub backup_created: String,
    /// How many nodes came back.
    pub nodes: usize,
    /// How many certificate records.
    pub certificates: usize,
    /// How many audit entries (the restore's own included).
    pub audit_entries: usize,
    /// The serial of the new controller certificate.
    pub controller_serial: String,
    /// Its expiry.
    #[schemars(extend("format" = "date-time"))]
    pub controller_expires: String,
    /// The nodes reached with it, which refuse the old controller key from now on.
    pub reached: Vec<String>,
    /// The nodes not reached, which refuse it at their next contact with this home.
    pub not_reached: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Cheap settings, so the tests spend no time in the KDF; the format is the same.
    const FAST: KdfParams = KdfParams {
        memory_kib: 64,
        passes: 1,
        lanes: 1,
    };

    const PASS: &[u8] = b"correct horse battery staple";

    fn file() -> &'static Path {
        Path::new("/backups/prod.cmbackup")
    }

    fn sealed() -> Vec<u8> {
        seal(PASS, b"the cluster's secrets", FAST).unwrap()
    }

    /// Opening `archive` fails with the one error a wrong passphrase gives.
    fn assert_refused_as_wrong(archive: &[u8], passphrase: &[u8]) {
        match open(file(), passphrase, archive) {
            Err(CtlError::BackupDecrypt(f)) => assert_eq!(f, file()),
            Err(other) => panic!("expected the decrypt error, got: {other}"),
            Ok(_) => panic!("a damaged archive or wrong passphrase was accepted"),
        }
    }

    fn assert_unreadable(archive: &[u8], says: &str) {
        match open(file(), PASS, archive) {
            Err(e @ CtlError::BackupUnreadable { .. }) => {
                assert!(e.to_string().contains(says), "{e}")
            }
            Err(other) => panic!("expected an unreadable-archive error, got: {other}"),
            Ok(_) => panic!("accepted"),
        }
    }

    #[test]
    fn an_archive_opens_with_its_passphrase() {
        let archive = sealed();
        assert_eq!(archive.len(), HEADER_LEN + 21 + TAG_LEN);
        assert_eq!(&archive[..8], b"CMBACKUP");
        let header = Header::parse(file(), &archive).unwrap();
        assert_eq!(header.kdf, FAST);
        assert_eq!(
            &open(file(), PASS, &archive).unwrap()[..],
            b"the cluster's secrets"
        );
        // Nothing of the plaintext shows through.
        assert!(!archive.windows(7).any(|w| w == b"secrets"));
    }

    #[test]
    fn two_archives_of_the_same_contents_share_no_salt_nonce_or_ciphertext() {
        let (a, b) = (sealed(), sealed());
        assert_ne!(a[21..37], b[21..37], "salt");
        assert_ne!(a[37..49], b[37..49], "nonce");
        assert_ne!(a[49..], b[49..]);
    }

    #[test]
    fn the_default_settings_round_trip() {
        let archive = seal(PASS, b"x", KdfParams::DEFAULT).unwrap();
        assert_eq!(
            Header::parse(file(), &archive).unwrap().kdf,
            KdfParams::DEFAULT
        );
        assert_eq!(&open(file(), PASS, &archive).unwrap()[..], b"x");
        assert_refused_as_wrong(&archive, b"correct horse battery stapler");
    }

    #[test]
    fn a_wrong_passphrase_gives_one_clear_error() {
        let archive = sealed();
        assert_refused_as_wrong(&archive, b"Correct horse battery staple");
        assert_refused_as_wrong(&archive, b"");
        let message = open(file(), b"nope", &archive).err().unwrap().to_string();
        assert!(
            message.contains("passphrase is wrong") && message.contains("Nothing was restored"),
            "{message}"
        );
    }

    #[test]
    fn any_changed_byte_of_header_settings_salt_nonce_or_body_is_refused() {
        let archive = sealed();
        // The settings (a low bit of each, so they stay valid and within the ceiling),
        // every byte of salt and nonce, and every byte of ciphertext and tag.
        let positions = [12, 16, 20].into_iter().chain(21..archive.len());
        for at in positions {
            let mut bad = archive.clone();
            bad[at] ^= 0x02;
            assert_refused_as_wrong(&bad, PASS);
        }
    }

    #[test]
    fn a_truncated_body_is_refused() {
        let archive = sealed();
        assert_refused_as_wrong(&archive[..archive.len() - 1], PASS);
        assert_refused_as_wrong(&archive[..HEADER_LEN + TAG_LEN], PASS);
        let mut longer = archive.clone();
        longer.push(0);
        assert_refused_as_wrong(&longer, PASS);
    }

    #[test]
    fn a_truncated_header_is_refused_before_any_key_is_derived() {
        let archive = sealed();
        for len in [8, 20, HEADER_LEN, HEADER_LEN + TAG_LEN - 1] {
            assert_unreadable(&archive[..len], "too short");
        }
        assert_unreadable(&archive[..3], "marker");
        assert_unreadable(b"", "marker");
    }

    #[test]
    fn a_foreign_file_or_another_format_is_named_as_such() {
        let mut archive = sealed();
        archive[0] = b'X';
        assert_unreadable(&archive, "marker");
        let mut archive = sealed();
        archive[8] = 2;
        assert_unreadable(&archive, "format 2");
    }

    #[test]
    fn a_header_asking_for_unbounded_memory_is_refused_before_deriving() {
        let mut archive = sealed();
        archive[9..13].copy_from_slice(&u32::MAX.to_be_bytes());
        assert_unreadable(&archive, "beyond");
        // Not even what the old ceiling allowed (1 GiB): a backup only ever writes the
        // default, and the ceiling is twice that.
        let mut archive = sealed();
        archive[9..13].copy_from_slice(&(1u32 << 20).to_be_bytes());
        assert_unreadable(&archive, "beyond the 131072 KiB");
        let mut archive = sealed();
        archive[17..21].copy_from_slice(&0u32.to_be_bytes());
        assert_unreadable(&archive, "invalid");
    }

    #[test]
    fn contents_of_another_format_are_refused_not_misread() {
        let err = BackupContents::decode(file(), &[9, 1, 2]).err().unwrap();
        assert!(err.to_string().contains("format 9"), "{err}");
        assert!(BackupContents::decode(file(), &[]).is_err());
        assert!(BackupContents::decode(file(), &[CONTENTS_FORMAT, 0xff]).is_err());
    }

    #[test]
    fn contents_of_formats_2_to_4_read_with_what_they_lack_empty() {
        use crate::store::{BuildRecord, ClusterMeta, ConfigSnapshot, KeysRecord, ProvisionRecord};
        let contents = BackupContents {
            created_at: 7,
            software: "0.1.0".into(),
            ca_cert_pem: "cert".into(),
            ca_key_pem: "key".into(),
            controller_toml: None,
            store: StoreSnapshot {
                meta: ClusterMeta {
                    name: "c".into(),
                    cert_lifetime_days: 1,
                    created_at: 1,
                },
                nodes: Vec::new(),
                certs: Vec::new(),
                audit: Vec::new(),
                config: ConfigSnapshot::default(),
            },
        };
        let now = contents.encode();
        let keys = clustermgr_protocol::codec::encode(&KeysRecord::default());
        assert!(now.ends_with(&keys), "the keys are the last field");
        let now = &now[..now.len() - keys.len()];
        let provision = clustermgr_protocol::codec::encode(&ProvisionRecord::default());
        let users = clustermgr_protocol::codec::encode(&Vec::<crate::store::UserRecord>::new());
        let tail = clustermgr_protocol::codec::encode(&BuildRecord::default());
        assert!(now.ends_with(&provision), "provisioning the one before");
        let v4 = &now[1..now.len() - provision.len()];
        assert!(v4.ends_with(&users), "the accounts the one before");
        let v3 = &v4[..v4.len() - users.len()];
        assert!(v3.ends_with(&tail), "the build record the one before that");
        let v5 = &now[1..];
        for (format, body) in [
            (5u8, v5),
            (4u8, v4),
            (3u8, v3),
            (2u8, &v3[..v3.len() - tail.len()]),
        ] {
            let mut old = vec![format];
            old.extend_from_slice(body);
            let read = BackupContents::decode(file(), &old).unwrap();
            assert_eq!(read.store, contents.store, "format {format}");
            assert_eq!(read.created_at, 7);
        }
    }
}
