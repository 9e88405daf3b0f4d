//! Enrollment: the agent's private key is generated here, on its own host, and only a
//! certificate signing request leaves it.

use std::path::{Path, PathBuf};

use clustermgr_protocol::NodeName;
use clustermgr_protocol::atomic_file::write_atomic;
use rcgen::{CertificateParams, DnType, KeyPair};

use crate::AgentError;

/// The key file name inside the enrollment directory.
pub const KEY_FILE: &str = "agent.key";
/// The CSR file name inside the enrollment directory.
pub const CSR_FILE: &str = "agent.csr";

fn identity_error(path: &Path, message: impl Into<String>) -> AgentError {
    AgentError::Identity {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// A new ECDSA P-256 key, PEM.
pub fn generate_key_pem() -> Result<String, AgentError> {
    KeyPair::generate().map(|k| k.serialize_pem()).map_err(|e| {
        identity_error(
            Path::new("<new key>"),
            format!("cannot generate a key: {e}"),
        )
    })
}

/// A CSR for `node` signed with the key in `key_pem`. It names the node as common name
/// and DNS name; the controller takes only its public key.
pub fn csr_pem(key_pem: &str, node: &NodeName, key_path: &Path) -> Result<String, AgentError> {
    let key = KeyPair::from_pem(key_pem)
        .map_err(|e| identity_error(key_path, format!("not a usable private key: {e}")))?;
    let mut params = CertificateParams::new(vec![node.to_string()])
        .map_err(|e| identity_error(key_path, format!("cannot build a CSR: {e}")))?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, node.as_str());
    params
        .serialize_request(&key)
        .and_then(|csr| csr.pem())
        .map_err(|e| identity_error(key_path, format!("cannot sign the CSR: {e}")))
}

/// Makes sure `dir/agent.key` exists (a new key when absent or when `new_key`), writes
/// `dir/agent.csr`, and returns the CSR.
pub fn enroll(node: &NodeName, dir: &Path, new_key: bool) -> Result<String, AgentError> {
    std::fs::create_dir_all(dir).map_err(|source| AgentError::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    let key_path: PathBuf = dir.join(KEY_FILE);
    let key_pem = match std::fs::read_to_string(&key_path) {
        Ok(pem) if !new_key => pem,
        Ok(_) | Err(_) => {
            let pem = generate_key_pem()?;
            write_atomic(&key_path, pem.as_bytes(), 0o600).map_err(|source| AgentError::Write {
                path: key_path.clone(),
                source,
            })?;
            pem
        }
    };
    let csr = csr_pem(&key_pem, node, &key_path)?;
    let csr_path = dir.join(CSR_FILE);
    write_atomic(&csr_path, csr.as_bytes(), 0o644).map_err(|source| AgentError::Write {
        path: csr_path,
        source,
    })?;
    Ok(csr)
}
