//! The CLI's side of `serve`'s local socket: if `serve` answers, operations run there
//! (on its warm connections); if not, the CLI runs them itself.

use std::path::Path;

use clustermgr_protocol::frame::{expect_message, read_message, write_message};
use serde::{Deserialize, Serialize};
use tokio::net::UnixStream;
use tokio::sync::mpsc;

use crate::CtlError;
use crate::ops::{CtxOptions, Event, Invocation, Operation, Report};

/// Local frames may carry a whole command's output chunk; the same limit as the agents.
pub const MAX_FRAME: u32 = clustermgr_protocol::frame::DEFAULT_MAX_FRAME_BYTES;

/// The first frame a CLI sends. A `serve` of another release refuses it, because the
/// operation types are only stable within one release.
#[derive(Debug, Serialize, Deserialize)]
pub struct ClientHello {
    /// The CLI's release.
    pub software: String,
}

/// What `serve` sends back.
#[derive(Debug, Serialize, Deserialize)]
pub enum ServeMsg {
    /// `serve` refuses this client.
    Refused(String),
    /// Progress.
    Event(Event),
    /// The result; the last frame.
    Done(Result<Report, ServeError>),
}

/// An operation's error, carried over the socket.
#[derive(Debug, Serialize, Deserialize)]
pub struct ServeError {
    /// The message.
    pub message: String,
    /// The exit code it maps to.
    pub exit_code: i32,
}

/// How long the CLI keeps trying a socket whose queue is full before it gives up.
const BUSY_PATIENCE: std::time::Duration = std::time::Duration::from_secs(10);

/// Connects to `serve`, if one answers on `socket`: `None` when none runs there. A
/// serve whose connection queue is full (something holds many connections to it) is
/// there all the same: the CLI waits for room, and says so if none comes, rather than
/// taking it for absent and failing on the store serve holds.
pub async fn connect(socket: &Path) -> Result<Option<UnixStream>, CtlError> {
    let deadline = tokio::time::Instant::now() + BUSY_PATIENCE;
    let mut pause = std::time::Duration::from_millis(10);
    loop {
        match UnixStream::connect(socket).await {
            Ok(s) => return Ok(Some(s)),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if tokio::time::Instant::now() >= deadline {
                    return Err(CtlError::Serve(format!(
                        "it runs but has taken no new connection on {} for {} s (its queue is full: something holds many connections to it); try again, and see who holds them with `ss -xp`",
                        socket.display(),
                        BUSY_PATIENCE.as_secs()
                    )));
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(std::time::Duration::from_millis(500));
            }
            Err(_) => return Ok(None),
        }
    }
}

/// Runs `inv` on `serve`, forwarding its events to `events`.
pub async fn call(
    stream: UnixStream,
    inv: &Invocation,
    events: mpsc::Sender<Event>,
) -> Result<Result<Report, ServeError>, CtlError> {
    let (mut rd, mut wr) = stream.into_split();
    let io = |e: clustermgr_protocol::ProtocolError| CtlError::Serve(e.to_string());
    write_message(
        &mut wr,
        &ClientHello {
            software: env!("CARGO_PKG_VERSION").to_string(),
        },
    )
    .await
    .map_err(io)?;
    write_message(&mut wr, inv).await.map_err(io)?;
    loop {
        match read_message::<ServeMsg, _>(&mut rd, MAX_FRAME, "serve message")
            .await
            .map_err(io)?
        {
            Some(ServeMsg::Event(e)) => {
                let _ = events.send(e).await;
            }
            Some(ServeMsg::Done(r)) => return Ok(r),
            Some(ServeMsg::Refused(why)) => return Err(CtlError::Serve(why)),
            None => {
                return Err(CtlError::Serve(
                    "it closed the connection before answering (see its log)".into(),
                ));
            }
        }
    }
}

/// Reads a client's hello and invocation (serve's side).
pub async fn read_request<R: tokio::io::AsyncRead + Unpin>(
    rd: &mut R,
) -> Result<(ClientHello, Invocation), clustermgr_protocol::ProtocolError> {
    let hello = expect_message(rd, MAX_FRAME, "client hello").await?;
    let inv = expect_message(rd, MAX_FRAME, "invocation").await?;
    Ok((hello, inv))
}

/// How long a command waits for the store another command holds, unless
/// `CLUSTERMGR_STORE_WAIT_SECS` says otherwise (0: not at all).
const STORE_PATIENCE: std::time::Duration = std::time::Duration::from_secs(30);

fn store_patience() -> std::time::Duration {
    std::env::var("CLUSTERMGR_STORE_WAIT_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(STORE_PATIENCE, std::time::Duration::from_secs)
}

/// Where a command ended up running.
enum Opened {
    Here(std::sync::Arc<crate::ops::Ctx>),
    Serve(UnixStream),
}

/// The process holding `file`'s lock (redb's `flock`), from `/proc/locks`.
fn lock_holder(file: &Path) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    let ino = std::fs::metadata(file).ok()?.ino();
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    locks.lines().find_map(|l| {
        // "1: FLOCK  ADVISORY  WRITE 4242 08:01:1234567 0 EOF"
        let f: Vec<&str> = l.split_whitespace().collect();
        let (pid, dev_ino) = (f.get(4)?, f.get(5)?);
        (dev_ino.rsplit(':').next()?.parse::<u64>().ok()? == ino).then(|| pid.parse().ok())?
    })
}

/// `" (clustermgr exec ...)"`: the command line of `pid`, for the waiting message.
fn command_of(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .ok()
        .map(|b| {
            let mut words: Vec<String> = b
                .split(|&c| c == 0)
                .filter(|w| !w.is_empty())
                .map(|w| String::from_utf8_lossy(w).into_owned())
                .collect();
            // The program by its name, as `ps` shows it: a long install path would
            // otherwise push the command itself past the cut below.
            if let Some(program) = words.first_mut()
                && let Some((_, name)) = program.rsplit_once('/')
            {
                *program = name.to_owned();
            }
            let mut line = words.join(" ");
            if line.chars().count() > 80 {
                line = line.chars().take(80).collect::<String>() + " ...";
            }
            format!(" ({line})")
        })
        .unwrap_or_default()
}

/// The one place the CLI chooses where an operation runs: through `serve` when it
/// answers on the socket, else on a context of this process's own, opened on first use
/// and shared by every later call (an inventory's hosts, say).
#[derive(Clone)]
pub struct Client {
    home: std::path::PathBuf,
    socket: std::path::PathBuf,
    opts: crate::ops::CtxOptions,
    local: std::sync::Arc<std::sync::Mutex<Option<std::sync::Arc<crate::ops::Ctx>>>>,
    user: String,
    connect_timeout_ms: Option<u64>,
}

impl Client {
    /// A client for the cluster in `home`, acting as `user`.
    pub fn open(
        home: &Path,
        opts: &crate::ops::CtxOptions,
        user: String,
        connect_timeout_ms: Option<u64>,
    ) -> Client {
        let socket = match &opts.socket {
            Some(s) => s.clone(),
            None => crate::home::Home::open(home)
                .map(|h| h.socket())
                .unwrap_or_else(|_| home.join("serve.sock")),
        };
        Client {
            home: home.to_path_buf(),
            socket,
            opts: opts.clone(),
            local: Default::default(),
            user,
            connect_timeout_ms,
        }
    }

    fn local_ctx(&self) -> Result<std::sync::Arc<crate::ops::Ctx>, CtlError> {
        let mut local = self.local.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(ctx) = local.as_ref() {
            return Ok(ctx.clone());
        }
        let ctx = std::sync::Arc::new(crate::ops::Ctx::open(
            &self.home,
            crate::clock::system(),
            &self.opts,
            false,
        )?);
        *local = Some(ctx.clone());
        Ok(ctx)
    }

    /// Runs `inv`, sending its events to `events`.
    pub async fn run(
        &self,
        inv: &Invocation,
        events: mpsc::Sender<Event>,
    ) -> Result<Report, CtlError> {
        // A context of our own holds the store, so serve cannot have started since.
        let ctx = self.local.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if ctx.is_none()
            && let Some(stream) = connect(&self.socket).await?
        {
            return call(stream, inv, events)
                .await?
                .map_err(|e| CtlError::Relayed {
                    message: e.message,
                    exit_code: e.exit_code,
                });
        }
        // Through another user's socket, serve is the only way: the home is not ours.
        if self.opts.socket.is_some() {
            return Err(CtlError::ServeNotAnswering(self.socket.clone()));
        }
        let ctx = match ctx {
            Some(ctx) => ctx,
            None => match self.local_ctx_waiting().await? {
                Opened::Here(ctx) => ctx,
                // serve started while we waited: it holds the store now.
                Opened::Serve(stream) => {
                    return call(stream, inv, events)
                        .await?
                        .map_err(|e| CtlError::Relayed {
                            message: e.message,
                            exit_code: e.exit_code,
                        });
                }
            },
        };
        crate::ops::run(ctx, inv.clone(), events).await
    }

    /// Opens the store here, waiting (up to [`STORE_PATIENCE`]) while another
    /// clustermgr command holds it, as package managers and cargo wait for their
    /// locks: two commands from a script, or a cron `backup` beside someone's `status`,
    /// then run one after the other instead of all but one failing. It says once that
    /// it waits, and for which process.
    async fn local_ctx_waiting(&self) -> Result<Opened, CtlError> {
        let patience = store_patience();
        let deadline = tokio::time::Instant::now() + patience;
        let mut said = false;
        loop {
            match self.local_ctx() {
                Ok(ctx) => return Ok(Opened::Here(ctx)),
                Err(e @ CtlError::StoreLocked { .. }) => {
                    if let Some(stream) = connect(&self.socket).await? {
                        return Ok(Opened::Serve(stream));
                    }
                    if tokio::time::Instant::now() >= deadline {
                        return Err(e);
                    }
                    if !said && !patience.is_zero() {
                        let store = crate::home::Home::open(&self.home)?.store();
                        let who = lock_holder(&store).map_or_else(
                            || "another process".to_string(),
                            |pid| format!("process {pid}{}", command_of(pid)),
                        );
                        eprintln!(
                            "clustermgr: waiting for the store {}, which {who} holds (up to {} s)",
                            store.display(),
                            patience.as_secs()
                        );
                        said = true;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Closes the agent connections of a local context: the agents learn at once, so
    /// a cancelled command's process group is killed now, not at the idle timeout.
    pub async fn close(&self) {
        let ctx = self.local.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some(ctx) = ctx {
            ctx.dialer.close().await;
        }
    }
}

impl crate::bootstrap::Operations for Client {
    async fn sign(&self, node: &str, csr_pem: String) -> Result<String, CtlError> {
        let op = Operation::NodeSign {
            node: node.to_string(),
            csr_pem,
        };
        match self.call(op).await? {
            Report::Signed(signed) => Ok(signed.cert_pem),
            _ => Err(CtlError::Serve("node sign gave no certificate".into())),
        }
    }

    async fn reach(&self, node: &str) -> Result<Result<(), String>, CtlError> {
        let op = Operation::Ping {
            nodes: node.to_string(),
        };
        Ok(match self.call(op).await? {
            Report::Outcomes(o) if o.iter().all(|o| o.state == crate::ops::NodeState::Ok) => Ok(()),
            Report::Outcomes(o) => Err(o
                .iter()
                .filter_map(|o| o.message.clone())
                .collect::<Vec<_>>()
                .join("; ")),
            _ => Err("no answer to the ping".into()),
        })
    }

    async fn add(&self, n: crate::bootstrap::NewNode) -> Result<(), CtlError> {
        let op = Operation::NodeAdd {
            node: n.node,
            address: n.address,
            roles: n.roles,
            primary: n.primary,
            reenroll: n.reenroll,
        };
        self.call(op).await.map(drop)
    }

    fn ca_pem(&self) -> Result<String, CtlError> {
        let h = crate::home::Home::open(&self.home)?;
        std::fs::read_to_string(h.ca_cert()).map_err(|e| CtlError::io(h.ca_cert(), e))
    }

    async fn pinned_key(&self, name: &str) -> Result<Option<String>, CtlError> {
        match self.call(Operation::NodeList).await? {
            Report::Nodes(nodes) => Ok(nodes.into_iter().find(|n| n.name == name).map(|n| n.key)),
            _ => Ok(None),
        }
    }
}

impl Client {
    /// Runs `op` here or through serve, its events discarded.
    pub async fn call(&self, op: Operation) -> Result<Report, CtlError> {
        let inv = Invocation {
            user: self.user.clone(),
            op,
            connect_timeout_ms: self.connect_timeout_ms,
        };
        let (tx, mut rx) = mpsc::channel(64);
        let drain = tokio::spawn(async move { while rx.recv().await.is_some() {} });
        let r = self.run(&inv, tx).await;
        let _ = drain.await;
        r
    }
}

/// An operation's result as the CLI sees it: its report, or its error's message and
/// exit code (which may come from `serve`).
pub type Outcome = Result<Report, (String, i32)>;

/// Runs an operation through `serve` if it answers, else in this process, sending its
/// events to `tx`. `None` if Ctrl-C interrupted it, which cancels the commands it
/// started.
pub async fn run_operation(
    home: &std::path::Path,
    opts: &CtxOptions,
    inv: Invocation,
    tx: mpsc::Sender<Event>,
) -> Result<Option<Outcome>, CtlError> {
    run_operation_until(home, opts, inv, tx, shutdown_signal()).await
}

/// [`run_operation`], cancelled (`None`) when `stop` resolves.
pub async fn run_operation_until(
    home: &std::path::Path,
    opts: &CtxOptions,
    inv: Invocation,
    tx: mpsc::Sender<Event>,
    stop: impl std::future::Future<Output = ()>,
) -> Result<Option<Outcome>, CtlError> {
    let client = crate::local::Client::open(home, opts, inv.user.clone(), inv.connect_timeout_ms);
    let result = tokio::select! {
        r = client.run(&inv, tx) => Some(r.map_err(|e| (e.to_string(), e.exit_code()))),
        _ = stop => None,
    };
    client.close().await;
    Ok(result)
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
