//! A backup's passphrase: from a file only its owner can read, or typed at the
//! terminal without echo. Never from an argument or an environment variable, which
//! other local users (`ps`, `/proc/PID/cmdline`), shell history and process dumps see.

use std::io::Read;
use std::path::Path;

use zeroize::Zeroizing;

use crate::CtlError;
use crate::home::check_owner_only;

/// The shortest passphrase `backup` accepts. The archive holds the CA key, and whoever
/// has a copy can guess offline for as long as they like; argon2id makes each guess
/// expensive, and this makes the guesses many.
pub const MIN_CHARS: usize = 12;

/// A passphrase file longer than this is not a passphrase file.
const MAX_FILE_BYTES: u64 = 4096;

/// What the passphrase is for: a backup sets it (so it is checked and confirmed), a
/// restore only tries it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    /// `clustermgr backup`.
    Backup,
    /// `clustermgr restore`.
    Restore,
    /// A console account's password (`user add`, `user passwd`): checked and
    /// confirmed like a backup's.
    Account,
}

/// Reads the passphrase from `file` if given, else from the terminal.
pub fn read(file: Option<&Path>, purpose: Purpose) -> Result<Zeroizing<String>, CtlError> {
    let passphrase = match file {
        Some(path) => from_file(path)?,
        None => ask(match purpose {
            Purpose::Backup => "Passphrase for the new backup: ",
            Purpose::Restore => "The backup's passphrase: ",
            Purpose::Account => "Password for the account: ",
        })?,
    };
    let word = if purpose == Purpose::Account {
        "password"
    } else {
        "passphrase"
    };
    if passphrase.is_empty() {
        return Err(CtlError::Passphrase(format!("the {word} is empty")));
    }
    let chars = passphrase.chars().count();
    let why = match purpose {
        Purpose::Backup => {
            "a backup's needs at least {MIN}, since anyone holding a copy of the archive can try passphrases against it offline"
        }
        Purpose::Account => {
            "an account's needs at least {MIN}, since anyone holding a copy of the store or a backup can try passwords against its hash offline"
        }
        Purpose::Restore => "",
    };
    if purpose != Purpose::Restore {
        if chars < MIN_CHARS {
            return Err(CtlError::Passphrase(format!(
                "the {word} is {chars} characters long; {}. Choose a longer one",
                why.replace("{MIN}", &MIN_CHARS.to_string())
            )));
        }
        if file.is_none() && *ask(&format!("The same {word} again: "))? != *passphrase {
            return Err(CtlError::Passphrase(format!(
                "the two {word}s differ; nothing was written. Run the command again"
            )));
        }
    }
    Ok(passphrase)
}

/// The first line of `path`, which only its owner may be able to read. A trailing
/// newline is not part of the passphrase, so `echo ... > FILE` works; more lines are
/// refused, since no terminal prompt could type them.
pub fn from_file(path: &Path) -> Result<Zeroizing<String>, CtlError> {
    if let Err(e) = std::fs::metadata(path) {
        return Err(CtlError::Passphrase(format!(
            "cannot read the passphrase file {}: {e}",
            path.display()
        )));
    }
    check_owner_only(
        path,
        "a passphrase file readable or writable by group or others",
    )?;
    let bad = |why: &str| {
        CtlError::Passphrase(format!(
            "the passphrase file {} {why}; it must hold the passphrase alone, on one line",
            path.display()
        ))
    };
    let mut bytes = Zeroizing::new(Vec::new());
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes))
        .map_err(|e| CtlError::io(path, e))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(bad(&format!("is longer than {MAX_FILE_BYTES} bytes")));
    }
    let text = std::str::from_utf8(&bytes).map_err(|_| bad("is not UTF-8 text"))?;
    let line = text.strip_suffix('\n').unwrap_or(text);
    let line = line.strip_suffix('\r').unwrap_or(line);
    if line.contains('\n') {
        return Err(bad("holds more than one line"));
    }
    if line.is_empty() {
        return Err(bad("is empty"));
    }
    Ok(Zeroizing::new(line.to_string()))
}

/// Prompts on the controlling terminal (not stdout, which `--json` owns), echo off.
fn ask(prompt: &str) -> Result<Zeroizing<String>, CtlError> {
    rpassword::prompt_password(prompt)
        .map(Zeroizing::new)
        .map_err(|e| {
            CtlError::Passphrase(format!(
                "cannot ask for the passphrase on a terminal ({e}); put it in a file only you can read (chmod 600) and give it with --passphrase-file FILE"
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn file_with(text: &[u8], mode: u32) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pass");
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        (dir, path)
    }

    fn read_file(text: &[u8], purpose: Purpose) -> Result<String, String> {
        let (_dir, path) = file_with(text, 0o600);
        read(Some(&path), purpose)
            .map(|p| p.to_string())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn a_passphrase_file_others_can_read_is_refused() {
        for mode in [0o644, 0o640, 0o604, 0o620] {
            let (_dir, path) = file_with(b"a long enough passphrase\n", mode);
            let err = read(Some(&path), Purpose::Restore).unwrap_err();
            assert!(matches!(err, CtlError::Insecure { .. }), "{err}");
            let message = err.to_string();
            assert!(
                message.contains("passphrase file") && message.contains("chmod 600"),
                "{message}"
            );
            assert_eq!(err.exit_code(), 2);
        }
    }

    #[test]
    fn the_trailing_newline_is_not_part_of_the_passphrase() {
        let pass = "a long enough passphrase";
        for text in [pass.to_string(), format!("{pass}\n"), format!("{pass}\r\n")] {
            assert_eq!(read_file(text.as_bytes(), Purpose::Backup).unwrap(), pass);
        }
        // Spaces are the passphrase's own.
        assert_eq!(
            read_file(b" twelve chars \n", Purpose::Backup).unwrap(),
            " twelve chars "
        );
    }

    #[test]
    fn a_backup_passphrase_must_be_long_enough() {
        let err = read_file(b"eleven char\n", Purpose::Backup).unwrap_err();
        assert!(
            err.contains("11 characters") && err.contains("at least 12"),
            "{err}"
        );
        // Characters, not bytes: twelve of them in more than twelve bytes is enough.
        assert!(read_file("passphrasé!!".as_bytes(), Purpose::Backup).is_ok());
        // A restore only tries what it is given; a short one simply will not open.
        assert_eq!(read_file(b"short\n", Purpose::Restore).unwrap(), "short");
    }

    #[test]
    fn empty_multi_line_binary_or_huge_files_are_refused() {
        for (text, says) in [
            (&b""[..], "is empty"),
            (b"\n", "is empty"),
            (b"one passphrase\nand another\n", "more than one line"),
            (b"\xff\xfe long enough bytes", "not UTF-8"),
        ] {
            let err = read_file(text, Purpose::Restore).unwrap_err();
            assert!(err.contains(says), "{err}");
        }
        let err = read_file(&[b'x'; 5000], Purpose::Restore).unwrap_err();
        assert!(err.contains("longer than 4096 bytes"), "{err}");
    }

    #[test]
    fn a_missing_passphrase_file_is_named() {
        let err = read(Some(Path::new("/nonexistent/pass")), Purpose::Restore).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/pass"), "{err}");
    }
}
