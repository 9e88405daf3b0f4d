//! oxAuth's keys, made in the Gluu container with its own Java `keytool`: the controller
//! sends the cluster's keystore (empty the first time), which keys to delete and which
//! to make; the agent works on a copy in a directory of its own inside the container,
//! and answers with the new keystore and every entry's certificate (public). The
//! private keys exist only in keystores: made here, read by no one but keytool.
//!
//! The working directory is a [`ContainerTemp`]: a service account of the container
//! (jetty) cannot rename or replace it, so keytool's files are the ones read back.
//!
//! The password reaches keytool through its environment (`-storepass:env`), read by a
//! shell builtin from standard input, so it is in no process's arguments; a process's
//! environment is readable by its own user alone.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::Duration;

use clustermgr_protocol::changeset::Scope;
use clustermgr_protocol::message::{KeysMade, KeysSpec, RemoteError};

use super::dir::ContainerTemp;
use super::path::scope_base;
use super::step::{self, Step};
use crate::config::AgentConfig;

/// How long making the keys may take: a JVM starts for each key (about half a second).
const TIMEOUT: Duration = Duration::from_secs(300);

/// The keystore's name inside the working directory.
const STORE: &str = "oxauth-keys.jks";

/// The certificates' listing inside the working directory.
const LISTING: &str = "certs.pem";

/// Runs in the container: `$1` the working directory, then `delete ALIAS` and `make
/// ALIAS KEYALG KEYSIZE SIGALG DAYS` words; the password on standard input. The
/// certificates' subject is the one Gluu gives its keys'. keytool speaks English
/// whatever the node's locale, since its listing is parsed.
const SCRIPT: &str = r#"IFS= read -r CM_KEYSTORE_PASSWORD || exit 1
export CM_KEYSTORE_PASSWORD LC_ALL=C LANG=C
k=/opt/jre/bin/keytool
if [ ! -x "$k" ]; then echo "no Java in the Gluu container ($k is absent): install Gluu on this node first"; exit 1; fi
d=$1; shift
o="-J-Duser.language=en -J-Duser.country=US -keystore $d/oxauth-keys.jks -storetype JKS -storepass:env CM_KEYSTORE_PASSWORD"
while [ $# -gt 0 ]; do
  case $1 in
    delete) "$k" -delete -alias "$2" $o || exit 1; shift 2;;
    make) "$k" -genkeypair -alias "$2" -keyalg "$3" -keysize "$4" -sigalg "$5" -validity "$6" -dname "CN=oxAuth CA Certificates" -keypass:env CM_KEYSTORE_PASSWORD $o || exit 1; shift 6;;
    *) echo "unknown word $1"; exit 1;;
  esac
done
"$k" -list -rfc $o > "$d/certs.pem" || exit 1
"#;

/// Makes and deletes the keys `spec` names in a copy of its keystore.
pub fn make(cfg: &AgentConfig, spec: &KeysSpec, scratch: &Path) -> Result<KeysMade, RemoteError> {
    check(spec)?;
    let base = scope_base(
        cfg,
        &Scope::Container {
            root: spec.root.clone(),
        },
    )
    .map_err(RemoteError::invalid)?;
    let work = ContainerTemp::new(&base, "keys").map_err(|e| {
        RemoteError::invalid(format!(
            "cannot make a working directory in the Gluu container at {} ({e}): is Gluu installed on this node? Its keys are made with the container's own Java",
            spec.root
        ))
    })?;
    if !spec.keystore.is_empty() {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(work.dir.join(STORE))
            .and_then(|mut f| f.write_all(&spec.keystore))
            .map_err(|e| RemoteError::internal(format!("cannot write the keystore copy: {e}")))?;
    }
    let inside = work.inside.clone();
    let mut argv = vec![
        "chroot".to_string(),
        base.display().to_string(),
        "/bin/sh".into(),
        "-c".into(),
        SCRIPT.into(),
        "sh".into(),
        inside,
    ];
    for a in &spec.delete {
        argv.extend(["delete".to_string(), a.clone()]);
    }
    for m in &spec.make {
        argv.extend([
            "make".to_string(),
            m.alias.clone(),
            m.key_alg.clone(),
            m.key_size.to_string(),
            m.sig_alg.clone(),
            m.validity_days.to_string(),
        ]);
    }
    let run = step::run(
        &Step {
            label: "keytool".into(),
            argv,
            reload_or_start: None,
            stdin: Some(format!("{}\n", spec.password)),
        },
        TIMEOUT,
        scratch,
    );
    if !run.ok {
        return Err(RemoteError::internal(format!(
            "keytool in the Gluu container failed: {}",
            run.output
        )));
    }
    let keystore = std::fs::read(work.dir.join(STORE))
        .map_err(|e| RemoteError::internal(format!("cannot read the new keystore: {e}")))?;
    let listing = std::fs::read_to_string(work.dir.join(LISTING))
        .map_err(|e| RemoteError::internal(format!("cannot read keytool's listing: {e}")))?;
    Ok(KeysMade {
        keystore,
        certs: parse_listing(&listing),
    })
}

/// Refuses aliases and words that are not what the controller makes: they become
/// keytool's arguments.
fn check(spec: &KeysSpec) -> Result<(), RemoteError> {
    let word = |s: &str| {
        !s.is_empty()
            && s.len() <= 80
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    };
    for a in spec.delete.iter().chain(spec.make.iter().map(|m| &m.alias)) {
        if !word(a) {
            return Err(RemoteError::invalid(format!(
                "key alias {a:?} is not letters, digits, `_` and `-`"
            )));
        }
    }
    for m in &spec.make {
        if !matches!(m.key_alg.as_str(), "RSA" | "EC") || !word(&m.sig_alg) {
            return Err(RemoteError::invalid(format!(
                "key {} asks for {} with {}: only RSA and EC keys are made",
                m.alias, m.key_alg, m.sig_alg
            )));
        }
    }
    if spec.password.is_empty() || spec.password.contains(['\n', '\0']) {
        return Err(RemoteError::invalid(
            "the keystore password is empty or spans lines",
        ));
    }
    Ok(())
}

/// `keytool -list -rfc`'s aliases and certificates.
fn parse_listing(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut alias: Option<String> = None;
    let mut pem: Option<String> = None;
    for line in text.lines() {
        if let Some(a) = line.strip_prefix("Alias name: ") {
            alias = Some(a.trim().to_string());
        } else if line.starts_with("-----BEGIN CERTIFICATE-----") {
            pem = Some(format!("{line}\n"));
        } else if let Some(p) = pem.as_mut() {
            p.push_str(line);
            p.push('\n');
            if line.starts_with("-----END CERTIFICATE-----") {
                // The first certificate of each chain is the entry's own.
                if let (Some(a), Some(p)) = (alias.take(), pem.take()) {
                    out.push((a, p));
                }
                pem = None;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_listing_gives_each_alias_its_own_certificate() {
        let text = "Keystore type: JKS\n\nYour keystore contains 2 entries\n\nAlias name: a_sig_rs256\nCreation date: Dec 7, 2026\nEntry type: PrivateKeyEntry\nCertificate chain length: 1\nCertificate[1]:\n-----BEGIN CERTIFICATE-----\nAAA\n-----END CERTIFICATE-----\n\n\n*******************************************\n\n\nAlias name: b_enc_rsa-oaep\nCertificate[1]:\n-----BEGIN CERTIFICATE-----\nBBB\n-----END CERTIFICATE-----\n";
        let got = parse_listing(text);
        assert_eq!(
            got,
            vec![
                (
                    "a_sig_rs256".to_string(),
                    "-----BEGIN CERTIFICATE-----\nAAA\n-----END CERTIFICATE-----\n".to_string()
                ),
                (
                    "b_enc_rsa-oaep".to_string(),
                    "-----BEGIN CERTIFICATE-----\nBBB\n-----END CERTIFICATE-----\n".to_string()
                ),
            ]
        );
    }

    #[test]
    fn aliases_and_passwords_that_could_be_more_than_one_argument_are_refused() {
        let spec = |alias: &str, password: &str| KeysSpec {
            root: "/opt/gluu-server".into(),
            keystore: Vec::new(),
            password: password.into(),
            delete: vec![alias.into()],
            make: Vec::new(),
        };
        assert!(check(&spec("x_sig_rs256", "pw")).is_ok());
        assert!(check(&spec("x -v", "pw")).is_err());
        assert!(check(&spec("x", "pw\nmore")).is_err());
        assert!(check(&spec("x", "")).is_err());
    }
}
