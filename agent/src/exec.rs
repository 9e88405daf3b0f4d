//! Running a command for the controller: its own process group, output streamed back
//! as it is produced, stdin passed through, and the whole group killed on timeout,
//! cancel, a lost connection, or the end of the shutdown grace period.

use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clustermgr_protocol::frame::write_message;
use clustermgr_protocol::message::{
    Command, ErrorKind, ExecEvent, ExecInput, ExecSpec, ExitOutcome, RemoteError,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

use crate::journal::{Entry, Journal, now_ms};
use crate::sys::kill_process_group;

/// How much output is read (and sent as one frame) at a time.
const CHUNK: usize = 32 * 1024;

/// How long output pipes may stay open after the process exited (a background child
/// holding them) before the result is reported anyway.
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(1);

/// What an exec needs from the agent around it.
#[derive(Clone, Debug)]
pub struct ExecContext {
    /// The journal every exec is recorded in.
    pub journal: Arc<Journal>,
    /// `allow_exec` from the configuration.
    pub allow_exec: bool,
    /// The controller's identity from its Hello.
    pub controller: String,
    /// The frame limit for the controller's input frames.
    pub max_frame: u32,
    /// The agent's budget for the request bytes it holds.
    pub budget: crate::budget::RequestBudget,
    /// Becomes true when in-flight work must stop (end of the shutdown grace).
    pub abort: watch::Receiver<bool>,
}

#[derive(Default)]
struct Kill {
    pgid: u32,
    done: bool,
    timed_out: bool,
    cancelled: bool,
}

impl Kill {
    fn now(&mut self, timed_out: bool) {
        if !self.done {
            kill_process_group(self.pgid);
            self.done = true;
            self.timed_out = timed_out;
            self.cancelled = !timed_out;
        }
    }
}

/// Runs `spec`, answering on `send` and taking input from `recv`.
pub async fn run(
    spec: ExecSpec,
    mut send: quinn::SendStream,
    recv: quinn::RecvStream,
    ctx: ExecContext,
) {
    let line = spec.command.display_line();
    let entry = |event, pid, outcome: Option<&ExitOutcome>, refused| Entry {
        time_ms: now_ms(),
        event,
        controller: &ctx.controller,
        requested_by: &spec.requested_by,
        command: &line,
        pid,
        exit_code: outcome.and_then(|o| o.code),
        signal: outcome.and_then(|o| o.signal),
        timed_out: outcome.is_some_and(|o| o.timed_out),
        cancelled: outcome.is_some_and(|o| o.cancelled),
        refused,
    };
    let refuse = |kind, message: String| ExecEvent::Refused(RemoteError { kind, message });

    if !ctx.allow_exec {
        let why = "this agent is configured with allow_exec = false";
        ctx.journal.record(&entry("refused", None, None, Some(why)));
        let _ = write_message(
            &mut send,
            &refuse(
                ErrorKind::Refused,
                format!("{why}; set allow_exec = true in its agent.toml to run commands"),
            ),
        )
        .await;
        let _ = send.finish();
        return;
    }

    let mut cmd = match &spec.command {
        Command::Argv(argv) if argv.is_empty() => {
            let _ = write_message(
                &mut send,
                &refuse(ErrorKind::Invalid, "empty command".into()),
            )
            .await;
            let _ = send.finish();
            return;
        }
        Command::Argv(argv) => {
            let mut c = tokio::process::Command::new(&argv[0]);
            c.args(&argv[1..]);
            c
        }
        Command::Shell(line) => {
            let mut c = tokio::process::Command::new("/bin/sh");
            c.arg("-c").arg(line);
            c
        }
    };
    cmd.envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(if spec.stdin {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    if let Some(dir) = &spec.cwd {
        cmd.current_dir(dir);
    }
    let started = Instant::now();
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            let msg = format!("cannot start {line:?}: {e}");
            ctx.journal
                .record(&entry("refused", None, None, Some(&msg)));
            let _ = write_message(&mut send, &refuse(ErrorKind::Invalid, msg)).await;
            let _ = send.finish();
            return;
        }
    };
    let pid = child.id().unwrap_or(0);
    let start = entry("start", Some(pid), None, None);
    // Listed as running before it is journaled as started: an agent killed between the
    // two would otherwise leave a command its next life cannot find and end.
    ctx.journal.started(pid, &start);
    ctx.journal.record(&start);
    let mut kill = Kill {
        pgid: pid,
        ..Kill::default()
    };

    // Controller input runs on its own task so a blocked stdin never stalls output.
    let (cancel_tx, mut cancel_rx) = watch::channel(false);
    let stdin = child.stdin.take();
    let max_frame = ctx.max_frame;
    let input = tokio::spawn(pump_input(
        recv,
        stdin,
        max_frame,
        ctx.budget.clone(),
        cancel_tx,
    ));

    let mut stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let (mut out_eof, mut err_eof) = (false, false);
    let mut status = None;
    let deadline = spec
        .timeout_ms
        .map(|ms| tokio::time::Instant::now() + Duration::from_millis(ms));
    let far = tokio::time::Instant::now() + Duration::from_secs(100 * 365 * 24 * 3600);
    let mut drain_deadline = far;
    let mut abort = ctx.abort.clone();
    let mut obuf = vec![0u8; CHUNK];
    let mut ebuf = vec![0u8; CHUNK];
    let mut send_ok = write_message(&mut send, &ExecEvent::Started { pid })
        .await
        .is_ok();
    if !send_ok {
        kill.now(false);
    }

    while !(status.is_some() && out_eof && err_eof) {
        let event = tokio::select! {
            _ = became_true(&mut cancel_rx), if !kill.done => { kill.now(false); None }
            _ = became_true(&mut abort), if !kill.done => { kill.now(false); None }
            _ = tokio::time::sleep_until(deadline.unwrap_or(far)), if !kill.done && deadline.is_some() && status.is_none() => {
                kill.now(true); None
            }
            n = stdout.read(&mut obuf), if !out_eof => match n {
                Ok(0) | Err(_) => { out_eof = true; None }
                Ok(n) => Some(ExecEvent::Stdout(obuf[..n].to_vec())),
            },
            n = stderr.read(&mut ebuf), if !err_eof => match n {
                Ok(0) | Err(_) => { err_eof = true; None }
                Ok(n) => Some(ExecEvent::Stderr(ebuf[..n].to_vec())),
            },
            st = child.wait(), if status.is_none() => {
                status = Some(st);
                drain_deadline = tokio::time::Instant::now() + DRAIN_AFTER_EXIT;
                None
            }
            _ = tokio::time::sleep_until(drain_deadline), if status.is_some() => break,
        };
        if let (Some(ev), true) = (event, send_ok) {
            // A controller that stops reading slows the command down (its pipe fills),
            // but the timeout, a cancel and the shutdown still kill it meanwhile.
            let fut = write_message(&mut send, &ev);
            tokio::pin!(fut);
            loop {
                tokio::select! {
                    r = &mut fut => { send_ok = r.is_ok(); break; }
                    _ = became_true(&mut cancel_rx), if !kill.done => kill.now(false),
                    _ = became_true(&mut abort), if !kill.done => kill.now(false),
                    _ = tokio::time::sleep_until(deadline.unwrap_or(far)), if !kill.done && deadline.is_some() && status.is_none() => kill.now(true),
                }
            }
            if !send_ok {
                kill.now(false);
            }
        }
    }
    input.abort();
    let status = match status {
        Some(s) => s.ok(),
        None => child.wait().await.ok(),
    };
    use std::os::unix::process::ExitStatusExt;
    let outcome = ExitOutcome {
        code: status.and_then(|s| s.code()),
        signal: status.and_then(|s| s.signal()),
        timed_out: kill.timed_out,
        cancelled: kill.cancelled,
        duration_ms: started.elapsed().as_millis() as u64,
    };
    ctx.journal
        .record(&entry("finish", Some(pid), Some(&outcome), None));
    ctx.journal.finished(pid);
    if send_ok
        && write_message(&mut send, &ExecEvent::Finished(outcome))
            .await
            .is_ok()
    {
        let _ = send.finish();
        // Wait for the controller to read everything before the stream is dropped.
        let _ = send.stopped().await;
    }
}

/// Reads the controller's input frames; a cancel, the end of the stream, or any failure
/// of it (reset, lost connection, garbage) cancels the command.
async fn pump_input(
    mut recv: quinn::RecvStream,
    mut stdin: Option<tokio::process::ChildStdin>,
    max_frame: u32,
    budget: crate::budget::RequestBudget,
    cancel: watch::Sender<bool>,
) {
    loop {
        let input = budget.read::<ExecInput, _>(&mut recv, max_frame, "exec input");
        match input.await.map(|m| m.map(|(input, _held)| input)) {
            Ok(Some(ExecInput::Stdin(bytes))) => {
                if let Some(s) = stdin.as_mut()
                    && s.write_all(&bytes).await.is_err()
                {
                    stdin = None;
                }
            }
            Ok(Some(ExecInput::StdinEnd)) => stdin = None,
            // The controller keeps its side open for as long as it wants the result, so
            // the end of its stream means it is gone (or dropped the request).
            Ok(None) | Ok(Some(ExecInput::Cancel)) | Err(_) => {
                let _ = cancel.send(true);
                return;
            }
        }
    }
}

/// Resolves once the flag is true; never, if its sender is gone while it is false.
pub async fn became_true(rx: &mut watch::Receiver<bool>) {
    loop {
        if *rx.borrow_and_update() {
            return;
        }
        if rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}
