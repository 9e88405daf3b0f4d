//! Self-upgrade (`clustermgr node upgrade`): the agent receives a new binary over its
//! own connection, checks it and runs it once, swaps it in atomically keeping the old
//! one as `.prev`, and restarts as it with `exec`, which keeps the process id, so
//! systemd and the init script's pidfile keep tracking the agent.
//!
//! The new binary is on trial until the controller confirms it answers. The old one is
//! put back and run again when the new one cannot be executed, fails before it
//! listens, starts a second time without a confirmation (it crashed and the host's init
//! restarted it), or is not confirmed in time.
//!
//! The upgrade's state is `STATE_DIR/upgrade.json`, written before each step it
//! describes, so whatever a crash interrupts, the next start finishes or undoes.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use clustermgr_protocol::atomic_file::write_atomic;
use clustermgr_protocol::frame::write_message;
use clustermgr_protocol::identity::hex;
use clustermgr_protocol::message::{RemoteError, Reply, UpgradeSpec};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;

use crate::AgentError;
use crate::config::AgentConfig;
use crate::server::rename_durably;

/// The largest binary accepted; the debug build of the agent is under 100 MiB.
const MAX_BINARY_BYTES: u64 = 512 * 1024 * 1024;

/// Room left free beside the new binary.
const SPACE_MARGIN_BYTES: u64 = 16 * 1024 * 1024;

/// How long the new binary's `--version` and `check-config` runs may take.
const SMOKE_TIMEOUT: Duration = Duration::from_secs(20);

/// How long a confirmation may be asked for at most.
const MAX_COMMIT_WITHIN: Duration = Duration::from_secs(3600);

const VERSION: &str = env!("CARGO_PKG_VERSION");

/// An upgrade in progress, or how the last one ended.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Marker {
    /// The agent's binary.
    binary: PathBuf,
    /// The old binary, while the new one is on trial.
    prev: PathBuf,
    /// The arguments the agent runs with, for the restart as the old binary.
    args: Vec<String>,
    /// The new binary's SHA-256.
    sha256: String,
    from: String,
    to: String,
    commit_within_ms: u64,
    /// How often the new binary has started.
    starts: u32,
    state: State,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum State {
    Pending,
    RolledBack { reason: String },
}

fn marker_path(state_dir: &Path) -> PathBuf {
    state_dir.join("upgrade.json")
}

fn read_marker(path: &Path) -> Option<Marker> {
    let bytes = std::fs::read(path).ok()?;
    match serde_json::from_slice(&bytes) {
        Ok(m) => Some(m),
        Err(e) => {
            tracing::warn!("ignoring {}: {e}", path.display());
            None
        }
    }
}

fn write_marker(path: &Path, m: &Marker) -> Result<(), AgentError> {
    let json = serde_json::to_vec_pretty(m).expect("an upgrade marker serializes");
    write_atomic(path, &json, 0o600).map_err(|source| AgentError::Write {
        path: path.to_path_buf(),
        source,
    })
}

fn remove_durably(path: &Path) -> Result<(), AgentError> {
    let error = |source| AgentError::Write {
        path: path.to_path_buf(),
        source,
    };
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(error(e)),
    }
    let dir = path.parent().unwrap_or(Path::new("/"));
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(error)
}

/// What the agent becomes once it has stopped: the same process, running `program`.
#[derive(Debug)]
pub struct Restart {
    program: PathBuf,
    args: Vec<String>,
    /// The upgrade to undo if `program` cannot be executed.
    marker: Option<PathBuf>,
}

impl Restart {
    /// Replaces this process with the program, keeping its id, its environment and its
    /// standard streams (the log). Returns only when that failed.
    pub fn exec(self) -> AgentError {
        use std::os::unix::process::CommandExt;
        let err = std::process::Command::new(&self.program)
            .args(&self.args)
            .exec();
        let failed = AgentError::Restart {
            program: self.program.clone(),
            source: err,
        };
        let Some(marker) = self.marker else {
            return failed;
        };
        let reason = format!("the new binary could not be started: {failed}");
        tracing::error!("{reason}; putting the previous agent back");
        match roll_back(&marker, &reason) {
            Ok(Some(old)) => old.exec(),
            Ok(None) => failed,
            Err(e) => e,
        }
    }
}

/// Puts the old binary back and records why; returns the restart as it.
fn roll_back(path: &Path, reason: &str) -> Result<Option<Restart>, AgentError> {
    let Some(mut m) = read_marker(path) else {
        return Ok(None);
    };
    if m.state != State::Pending {
        return Ok(None);
    }
    if m.prev.exists() {
        rename_durably(&m.prev, &m.binary)?;
    }
    m.state = State::RolledBack {
        reason: reason.to_string(),
    };
    write_marker(path, &m)?;
    Ok(Some(Restart {
        program: m.binary,
        args: m.args,
        marker: None,
    }))
}

/// The new binary of an unconfirmed upgrade, which this process is.
#[derive(Debug)]
pub struct Trial {
    path: PathBuf,
    sha256: String,
    to: String,
    deadline: Instant,
    state: Mutex<TrialState>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TrialState {
    Pending,
    Committed,
    RolledBack,
}

/// Run first at every start: finishes what an upgrade left, and says whether this
/// process is the new binary on trial. A new binary that already started once without
/// a confirmation is replaced by the old one here, and this returns only if that
/// failed.
pub fn on_start(cfg: &AgentConfig) -> Result<Option<Trial>, AgentError> {
    let path = marker_path(&cfg.state_dir);
    let Some(mut m) = read_marker(&path) else {
        return Ok(None);
    };
    if m.state != State::Pending {
        return Ok(None);
    }
    if !m.prev.exists() {
        // A rollback stopped after putting the old binary back.
        m.state = State::RolledBack {
            reason: "the upgrade was interrupted and the previous agent put back".into(),
        };
        write_marker(&path, &m)?;
        return Ok(None);
    }
    if m.starts > 0 {
        let reason = format!(
            "the new agent {} stopped before the controller confirmed it (its log on the host says why)",
            m.to
        );
        tracing::error!("{reason}; putting the previous agent back");
        return match roll_back(&path, &reason)? {
            Some(old) => Err(old.exec()),
            None => Ok(None),
        };
    }
    m.starts += 1;
    write_marker(&path, &m)?;
    let within = Duration::from_millis(m.commit_within_ms).min(MAX_COMMIT_WITHIN);
    tracing::info!(
        "running the new agent {} on trial: unless the controller confirms it within {} s, the previous one comes back",
        m.to,
        within.as_secs()
    );
    Ok(Some(Trial {
        path,
        sha256: m.sha256,
        to: m.to,
        deadline: Instant::now() + within,
        state: Mutex::new(TrialState::Pending),
    }))
}

impl Trial {
    /// Gives up on the new binary: puts the old one back. The caller restarts as it.
    pub fn abandon(&self, reason: &str) -> Result<Option<Restart>, AgentError> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if *state != TrialState::Pending {
            return Ok(None);
        }
        *state = TrialState::RolledBack;
        tracing::error!("{reason}; putting the previous agent back");
        roll_back(&self.path, reason)
    }

    /// Waits out the confirmation deadline; then, unless confirmed, gives up.
    pub(crate) async fn expire(&self) -> Option<Restart> {
        tokio::time::sleep_until(self.deadline.into()).await;
        let reason = format!(
            "the controller did not confirm the new agent {} in time",
            self.to
        );
        self.abandon(&reason).unwrap_or_else(|e| {
            tracing::error!("cannot put the previous agent back: {e}");
            None
        })
    }

    /// Whether the new binary still waits for its confirmation.
    pub(crate) fn pending(&self) -> bool {
        *self.state.lock().unwrap_or_else(|p| p.into_inner()) == TrialState::Pending
    }
}

/// [`Request::UpgradeCommit`](clustermgr_protocol::message::Request::UpgradeCommit):
/// keeps the new binary, or tells how the upgrade to it ended.
pub(crate) fn commit(trial: Option<&Trial>, state_dir: &Path, sha256: &str) -> Reply {
    let path = marker_path(state_dir);
    if let Some(t) = trial.filter(|t| t.sha256 == sha256) {
        let mut state = t.state.lock().unwrap_or_else(|p| p.into_inner());
        match *state {
            TrialState::Pending => {
                let prev = read_marker(&path).map(|m| m.prev);
                // The marker goes first: a crash between the two leaves a stray .prev,
                // which the next upgrade replaces, never a trial without its binary.
                let done = remove_durably(&path)
                    .and_then(|()| prev.as_deref().map_or(Ok(()), remove_durably));
                if let Err(e) = done {
                    return Reply::Error(RemoteError::internal(e));
                }
                *state = TrialState::Committed;
                tracing::info!(
                    "the controller confirmed this agent {VERSION}: the upgrade is done"
                );
                return Reply::UpgradeCommitted {
                    version: VERSION.into(),
                };
            }
            // A retried confirmation whose first answer was lost.
            TrialState::Committed => {
                return Reply::UpgradeCommitted {
                    version: VERSION.into(),
                };
            }
            TrialState::RolledBack => {}
        }
    }
    match read_marker(&path) {
        Some(Marker {
            state: State::RolledBack { reason },
            sha256: s,
            ..
        }) if s == sha256 => Reply::UpgradeRolledBack {
            version: VERSION.into(),
            reason,
        },
        Some(m) if m.sha256 == sha256 => Reply::Error(RemoteError::refused(
            "this is still the old agent, stopping to restart as the new one; ask again once it is back",
        )),
        _ => Reply::Error(RemoteError::invalid(format!(
            "no upgrade to the binary with SHA-256 {sha256} is pending on this agent"
        ))),
    }
}

/// What a [`Request::Upgrade`](clustermgr_protocol::message::Request::Upgrade) came to.
#[derive(Debug)]
pub(crate) enum Received {
    /// The agent already runs that binary; nothing was sent.
    UpToDate,
    /// The new binary is in place; reply, stop, then restart.
    Staged {
        /// The new binary's version.
        to: String,
        /// The restart as it.
        restart: Restart,
    },
}

/// Serves an upgrade up to the swap: checks the request, asks for the bytes, receives
/// and checks them, runs the new binary once, and puts it in place with the old one
/// kept beside it. Until the swap nothing of the running agent changes.
pub(crate) async fn receive(
    spec: UpgradeSpec,
    send: &mut quinn::SendStream,
    recv: &mut quinn::RecvStream,
    cfg: &AgentConfig,
    trial: Option<&Trial>,
) -> Result<Received, RemoteError> {
    if !cfg.allow_exec {
        return Err(RemoteError::refused(format!(
            "{} sets allow_exec = false, and a new binary from the controller would get round it; upgrade this agent with its package, or re-run `clustermgr node add NODE --ssh USER@HOST` over SSH",
            cfg.path.display()
        )));
    }
    if trial.is_some_and(Trial::pending) {
        return Err(RemoteError::refused(
            "this agent is itself a new binary still waiting for its confirmation; try again in a moment",
        ));
    }
    let binary = crate::uninstall::require_bootstrap_binary(
        "it will not replace itself: if it came from the .deb, upgrade the package (`apt-get install ./clustermgr-agent_VERSION_amd64.deb`); otherwise re-run `clustermgr node add NODE --ssh USER@HOST`",
    )
    .map_err(RemoteError::refused)?;
    if spec.size == 0 || spec.size > MAX_BINARY_BYTES {
        return Err(RemoteError::invalid(format!(
            "a binary of {} bytes is not an agent (the limit is {MAX_BINARY_BYTES})",
            spec.size
        )));
    }
    if spec.sha256.len() != 64 || !spec.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(RemoteError::invalid("the SHA-256 must be 64 hex digits"));
    }
    let sha256 = spec.sha256.to_ascii_lowercase();
    let current = {
        let path = binary.clone();
        let read = move || clustermgr_protocol::identity::sha256_file(&path);
        tokio::task::spawn_blocking(read)
            .await
            .map_err(RemoteError::internal)?
            .map_err(|e| RemoteError::internal(format!("cannot read {}: {e}", binary.display())))?
    };
    if current == sha256 {
        return Ok(Received::UpToDate);
    }
    let dir = binary.parent().unwrap_or(Path::new("/"));
    let free = crate::sys::free_bytes(dir).map_err(RemoteError::internal)?;
    if free < spec.size + SPACE_MARGIN_BYTES {
        return Err(RemoteError::refused(format!(
            "not enough space in {}: {} MiB free, {} MiB needed; free some space and try again",
            dir.display(),
            free >> 20,
            (spec.size + SPACE_MARGIN_BYTES) >> 20
        )));
    }
    write_message(send, &Reply::UpgradeReady)
        .await
        .map_err(RemoteError::internal)?;

    let upload = suffixed(&binary, ".upload");
    let result = async {
        let got = receive_bytes(recv, &upload, spec.size, 0o700).await?;
        tokio::fs::set_permissions(&upload, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .await
            .map_err(|e| {
                RemoteError::internal(format!("cannot write {}: {e}", upload.display()))
            })?;
        if got != sha256 {
            return Err(RemoteError::invalid(format!(
                "the received binary's SHA-256 is {got}, not {sha256}: the transfer was damaged; try again"
            )));
        }
        let to = smoke_run(&upload, cfg).await?;
        swap_in(&binary, &upload, &sha256, &to, spec.commit_within_ms, cfg)
            .map(|restart| Received::Staged { to, restart })
            .map_err(RemoteError::internal)
    }
    .await;
    if result.is_err() {
        let _ = std::fs::remove_file(&upload);
    }
    result
}

fn suffixed(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_os_string();
    s.push(suffix);
    PathBuf::from(s)
}

/// Receives exactly `size` bytes into `path` (owner-only until checked), returning
/// their SHA-256.
/// Writes exactly `size` bytes from `recv` to `path` (created with `mode`) and returns
/// their SHA-256.
pub(crate) async fn receive_bytes(
    recv: &mut quinn::RecvStream,
    path: &Path,
    size: u64,
    mode: u32,
) -> Result<String, RemoteError> {
    let write_err =
        |e: std::io::Error| RemoteError::internal(format!("cannot write {}: {e}", path.display()));
    let mut file = tokio::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .await
        .map_err(write_err)?;
    let mut hash = ring::digest::Context::new(&ring::digest::SHA256);
    let mut got = 0u64;
    while let Some(chunk) = recv.read_chunk(1 << 20, true).await.map_err(|e| {
        RemoteError::internal(format!("the upload broke off after {got} bytes: {e}"))
    })? {
        got += chunk.bytes.len() as u64;
        if got > size {
            return Err(RemoteError::invalid(format!(
                "the controller sent more than the {size} bytes it announced"
            )));
        }
        hash.update(&chunk.bytes);
        file.write_all(&chunk.bytes).await.map_err(write_err)?;
    }
    if got != size {
        return Err(RemoteError::invalid(format!(
            "the controller sent {got} of the {size} bytes it announced"
        )));
    }
    file.sync_all().await.map_err(write_err)?;
    Ok(hex(hash.finish().as_ref()))
}

/// Runs the new binary twice before it replaces anything: `--version` (it loads and
/// runs on this host; its version) and `check-config` (it accepts this agent's
/// configuration). Returns its version.
async fn smoke_run(binary: &Path, cfg: &AgentConfig) -> Result<String, RemoteError> {
    let version = run_once(binary, &["--version".as_ref()]).await?;
    let to = version
        .trim()
        .strip_prefix("clustermgr-agent ")
        .ok_or_else(|| {
            RemoteError::invalid(format!(
                "the new binary is not a clustermgr agent: `--version` printed {:?}; the old agent keeps running",
                version.trim()
            ))
        })?
        .to_string();
    run_once(
        binary,
        &[
            "check-config".as_ref(),
            "--config".as_ref(),
            cfg.path.as_os_str(),
        ],
    )
    .await?;
    Ok(to)
}

async fn run_once(binary: &Path, args: &[&std::ffi::OsStr]) -> Result<String, RemoteError> {
    let shown = args
        .iter()
        .map(|a| a.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ");
    let mut attempt = 0;
    let child = loop {
        let spawned = tokio::process::Command::new(binary)
            .args(args)
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output();
        match tokio::time::timeout(SMOKE_TIMEOUT, spawned).await {
            // A fork elsewhere in this process can briefly hold the file open for
            // writing in its child; the kernel then refuses to run it. It passes.
            Ok(Err(e)) if e.raw_os_error() == Some(libc::ETXTBSY) && attempt < 20 => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Ok(r) => break r,
            Err(_) => {
                return Err(RemoteError::invalid(format!(
                    "the new binary did not finish `{shown}` within {} s; the old agent keeps running",
                    SMOKE_TIMEOUT.as_secs()
                )));
            }
        }
    };
    let out = child.map_err(|e| {
        RemoteError::invalid(format!(
            "the new binary cannot be run here ({e}); the old agent keeps running"
        ))
    })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(RemoteError::invalid(format!(
            "the new binary failed `{shown}` here ({}): {}; the old agent keeps running",
            out.status,
            stderr.trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Puts the checked upload in place of the binary, keeping the old one as `.prev`,
/// with the marker written before the swap it describes.
fn swap_in(
    binary: &Path,
    upload: &Path,
    sha256: &str,
    to: &str,
    commit_within_ms: u64,
    cfg: &AgentConfig,
) -> Result<Restart, AgentError> {
    let prev = suffixed(binary, ".prev");
    let path = marker_path(&cfg.state_dir);
    remove_durably(&prev)?;
    std::fs::hard_link(binary, &prev).map_err(|source| AgentError::Write {
        path: prev.clone(),
        source,
    })?;
    let args: Vec<String> = std::env::args().skip(1).collect();
    let marker = Marker {
        binary: binary.to_path_buf(),
        prev: prev.clone(),
        args: args.clone(),
        sha256: sha256.to_string(),
        from: VERSION.into(),
        to: to.to_string(),
        commit_within_ms,
        starts: 0,
        state: State::Pending,
    };
    let swapped = write_marker(&path, &marker).and_then(|()| rename_durably(upload, binary));
    if let Err(e) = swapped {
        let _ = remove_durably(&path);
        let _ = remove_durably(&prev);
        return Err(e);
    }
    Ok(Restart {
        program: binary.to_path_buf(),
        args,
        marker: Some(path),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Setup {
        _tmp: tempfile::TempDir,
        cfg: AgentConfig,
        binary: PathBuf,
        prev: PathBuf,
    }

    /// A state directory with a pending upgrade: the new binary in place, the old one
    /// beside it, the marker written as `swap_in` writes it.
    fn pending() -> Setup {
        let tmp = tempfile::tempdir().unwrap();
        let text = format!(
            "cert = \"c\"\nkey = \"k\"\nca = \"a\"\nstate_dir = \"{}\"\n",
            tmp.path().display()
        );
        let cfg = AgentConfig::parse(&tmp.path().join("agent.toml"), &text).unwrap();
        let binary = tmp.path().join("agent");
        let prev = suffixed(&binary, ".prev");
        std::fs::write(&binary, "new").unwrap();
        std::fs::write(&prev, "old").unwrap();
        let marker = Marker {
            binary: binary.clone(),
            prev: prev.clone(),
            args: vec!["run".into(), "--config".into(), "x".into()],
            sha256: "ab".repeat(32),
            from: "0.1.0".into(),
            to: "0.2.0".into(),
            commit_within_ms: 60_000,
            starts: 0,
            state: State::Pending,
        };
        write_marker(&marker_path(&cfg.state_dir), &marker).unwrap();
        Setup {
            _tmp: tmp,
            cfg,
            binary,
            prev,
        }
    }

    fn state(s: &Setup) -> Option<State> {
        read_marker(&marker_path(&s.cfg.state_dir)).map(|m| m.state)
    }

    #[test]
    fn a_confirmed_trial_keeps_the_new_binary_and_forgets_the_old() {
        let s = pending();
        let trial = on_start(&s.cfg)
            .unwrap()
            .expect("the new binary is on trial");
        let sha = "ab".repeat(32);
        let dir = &s.cfg.state_dir;
        assert!(matches!(
            commit(Some(&trial), dir, &sha),
            Reply::UpgradeCommitted { .. }
        ));
        assert_eq!(std::fs::read_to_string(&s.binary).unwrap(), "new");
        assert!(!s.prev.exists());
        assert_eq!(state(&s), None);
        // A retried confirmation, its first answer lost, is answered the same.
        assert!(matches!(
            commit(Some(&trial), dir, &sha),
            Reply::UpgradeCommitted { .. }
        ));
        // Too late to give up now.
        assert!(trial.abandon("late").unwrap().is_none());
        assert_eq!(std::fs::read_to_string(&s.binary).unwrap(), "new");
    }

    #[test]
    fn an_abandoned_trial_puts_the_old_binary_back_and_says_why() {
        let s = pending();
        let trial = on_start(&s.cfg).unwrap().unwrap();
        let restart = trial
            .abandon("it broke")
            .unwrap()
            .expect("a restart as the old one");
        assert_eq!(restart.program, s.binary);
        assert_eq!(restart.args, ["run", "--config", "x"]);
        assert_eq!(std::fs::read_to_string(&s.binary).unwrap(), "old");
        assert!(!s.prev.exists());
        let reason = "it broke".to_string();
        assert_eq!(state(&s), Some(State::RolledBack { reason }));
        // The old agent, asked to confirm, tells what happened; not for another binary.
        let dir = &s.cfg.state_dir;
        match commit(None, dir, &"ab".repeat(32)) {
            Reply::UpgradeRolledBack { reason, .. } => assert_eq!(reason, "it broke"),
            other => panic!("{other:?}"),
        }
        assert!(
            matches!(commit(None, dir, &"cd".repeat(32)), Reply::Error(e) if e.kind == clustermgr_protocol::message::ErrorKind::Invalid)
        );
        // The next start is an ordinary one.
        assert!(on_start(&s.cfg).unwrap().is_none());
    }

    #[test]
    fn the_old_agent_still_stopping_is_not_confirmed() {
        let s = pending();
        let r = commit(None, &s.cfg.state_dir, &"ab".repeat(32));
        assert!(
            matches!(r, Reply::Error(e) if e.kind == clustermgr_protocol::message::ErrorKind::Refused)
        );
        assert_eq!(state(&s), Some(State::Pending));
    }

    #[test]
    fn a_rollback_interrupted_after_its_rename_is_finished_at_start() {
        let s = pending();
        std::fs::rename(&s.prev, &s.binary).unwrap();
        assert!(on_start(&s.cfg).unwrap().is_none());
        assert!(matches!(state(&s), Some(State::RolledBack { .. })));
        assert_eq!(std::fs::read_to_string(&s.binary).unwrap(), "old");
    }

    #[test]
    fn a_new_binary_starts_once_on_trial() {
        let s = pending();
        assert!(on_start(&s.cfg).unwrap().is_some());
        let m = read_marker(&marker_path(&s.cfg.state_dir)).unwrap();
        // A second start would roll back and exec the old binary; the count is what
        // tells it.
        assert_eq!(m.starts, 1);
    }
}
