//! Uninstall through the agent itself (`clustermgr node remove --uninstall`): a
//! detached remover waits for this process to exit, then removes what SSH bootstrap
//! installed. Only the fixed paths bootstrap uses are touched, and only when this agent
//! runs from the binary bootstrap installed, so a packaged or sandbox agent never
//! deletes anything.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Where SSH bootstrap installs the agent.
pub(crate) const BOOTSTRAP_BIN: &str = "/usr/local/bin/clustermgr-agent";

/// Checks that this process runs from the binary SSH bootstrap installed, the only
/// one the agent may remove or replace itself; `refusal` ends the error sentence
/// (what will not happen, and what to do instead).
pub(crate) fn require_bootstrap_binary(refusal: &str) -> Result<PathBuf, String> {
    let exe = std::fs::read_link("/proc/self/exe")
        .map(|p| {
            // A binary replaced while running reads as "PATH (deleted)".
            let s = p.to_string_lossy().into_owned();
            s.strip_suffix(" (deleted)").unwrap_or(&s).to_string()
        })
        .map_err(|e| format!("cannot tell where this agent runs from: {e}"))?;
    if exe != BOOTSTRAP_BIN {
        return Err(format!(
            "this agent runs from {exe}, not from {BOOTSTRAP_BIN} where SSH bootstrap installs it, so {refusal}"
        ));
    }
    Ok(PathBuf::from(exe))
}

/// Runs after the agent has exited (`$1` is its pid). The log is kept for the
/// administrator.
const REMOVER: &str = r#"
pid=$1
i=0
while kill -0 "$pid" 2>/dev/null && [ $i -lt 600 ]; do sleep 0.1; i=$((i + 1)); done
if [ -d /run/systemd/system ] && [ -f /etc/systemd/system/clustermgr-agent.service ]; then
    # The unit restarts the agent whatever its exit; --now cancels that pending restart.
    systemctl disable --now clustermgr-agent.service >/dev/null 2>&1
    rm -f /etc/systemd/system/clustermgr-agent.service
    systemctl daemon-reload >/dev/null 2>&1
fi
if [ -f /etc/init.d/clustermgr-agent ]; then
    if command -v update-rc.d >/dev/null 2>&1; then
        update-rc.d -f clustermgr-agent remove >/dev/null 2>&1
    elif command -v chkconfig >/dev/null 2>&1; then
        chkconfig --del clustermgr-agent >/dev/null 2>&1
    fi
    rm -f /etc/init.d/clustermgr-agent
fi
rm -rf /etc/clustermgr /var/lib/clustermgr
rm -f /usr/local/bin/clustermgr-agent /run/clustermgr-agent.pid
"#;

/// Checks that this agent is one bootstrap installed and starts the remover; the
/// caller then stops the agent. The error is a sentence for the administrator.
pub fn begin() -> Result<(), String> {
    require_bootstrap_binary(
        "it will not remove itself: if it came from the .deb, remove it with `apt-get remove clustermgr-agent`; otherwise stop and remove it by hand",
    )?;
    let pid = std::process::id().to_string();
    // Under systemd the remover must leave the service's cgroup, or stopping the
    // service would kill it with the agent.
    let systemd = Path::new("/run/systemd/system").is_dir();
    let mut cmd = if systemd {
        let mut c = Command::new("systemd-run");
        c.args([
            "--quiet",
            "--collect",
            "--unit",
            "clustermgr-agent-uninstall",
            "/bin/sh",
            "-c",
        ]);
        c
    } else {
        let mut c = Command::new("/bin/sh");
        c.arg("-c");
        c
    };
    cmd.arg(REMOVER)
        .arg("clustermgr-agent-uninstall")
        .arg(&pid)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if !systemd {
        cmd.process_group(0);
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start the remover: {e}"))?;
    if systemd {
        // systemd-run returns once the transient unit is queued.
        let status = child
            .wait()
            .map_err(|e| format!("systemd-run failed: {e}"))?;
        if !status.success() {
            return Err(format!(
                "systemd-run could not start the remover ({status})"
            ));
        }
    }
    Ok(())
}
