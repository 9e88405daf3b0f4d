//! The agent binary the controller uploads (bootstrap, `node upgrade`) and the sandbox
//! runs: where it is (given, beside this program, or the package's baseline build) and
//! what it needs of a host.

use std::path::{Path, PathBuf};

/// Where bootstrap installs the agent on a host (and what the nodes' cron jobs run).
pub const INSTALLED: &str = "/usr/local/bin/clustermgr-agent";

use crate::CtlError;

/// The agent binary bootstrap and upgrade upload, and what it needs of a host.
#[derive(Clone, Debug)]
pub struct AgentBinary {
    /// Its path on the controller host.
    pub path: PathBuf,
    /// Its bytes.
    pub bytes: std::sync::Arc<Vec<u8>>,
    /// What it needs.
    pub facts: crate::elf::BinaryFacts,
}

impl AgentBinary {
    /// Loads the binary to ship: `explicit`, else the one beside this executable (the
    /// same build), else the baseline build the controller's package ships.
    pub fn find(explicit: Option<&Path>) -> Result<AgentBinary, CtlError> {
        let path = match explicit {
            Some(p) => p.to_path_buf(),
            None => match beside_this_program() {
                Ok(beside) => beside,
                Err(e) => {
                    let packaged = Path::new("/usr/lib/clustermgr/clustermgr-agent");
                    if !packaged.is_file() {
                        return Err(e);
                    }
                    packaged.to_path_buf()
                }
            },
        };
        let bytes = std::fs::read(&path).map_err(|e| CtlError::io(&path, e))?;
        let facts = crate::elf::facts(&path, &bytes)?;
        Ok(AgentBinary {
            path,
            bytes: std::sync::Arc::new(bytes),
            facts,
        })
    }
}

/// Finds `clustermgr-agent` beside this executable (where cargo builds both).
pub fn beside_this_program() -> Result<PathBuf, CtlError> {
    let exe = std::env::current_exe().map_err(|e| CtlError::io("current executable", e))?;
    let mut dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    for _ in 0..2 {
        let candidate = dir.join("clustermgr-agent");
        if candidate.is_file() {
            return Ok(candidate);
        }
        // Test binaries live one level down, in target/<profile>/deps.
        dir = dir.parent().map(Path::to_path_buf).unwrap_or_default();
    }
    Err(CtlError::AgentBinaryMissing {
        beside: exe.to_path_buf(),
    })
}
