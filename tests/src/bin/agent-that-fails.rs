//! `agent-that-fails`: a broken new agent build for the upgrade tests. It passes the
//! checks an agent runs on a new binary before swapping it in (`--version`,
//! `check-config`) by handing them to a real agent, and then, told to `run`, fails as
//! the file `/opt/cmt/fail-mode` on its host says:
//! - `start`: runs the real agent with `/opt/cmt/no-key.toml`, whose key is missing, so
//!   it fails before it listens;
//! - `unreachable`: runs it with `/opt/cmt/other-port.toml`, so it listens where the
//!   controller never looks and is never confirmed.

use std::os::unix::process::CommandExt;
use std::process::Command;

const REAL: &str = "/opt/cmt/clustermgr-agent";

fn main() -> std::process::ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    let err = if args.first().is_some_and(|a| a == "run") {
        let mode = std::fs::read_to_string("/opt/cmt/fail-mode").unwrap_or_default();
        let config = match mode.trim() {
            "start" => "/opt/cmt/no-key.toml",
            "unreachable" => "/opt/cmt/other-port.toml",
            other => {
                eprintln!("agent-that-fails: unknown mode {other:?} in /opt/cmt/fail-mode");
                return std::process::ExitCode::from(2);
            }
        };
        Command::new(REAL).args(["run", "--config", config]).exec()
    } else {
        Command::new(REAL).args(&args).exec()
    };
    eprintln!("agent-that-fails: cannot run {REAL}: {err}");
    std::process::ExitCode::from(127)
}
