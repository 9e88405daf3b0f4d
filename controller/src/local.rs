//! The CLI's side of `serve`'s local socket: if `serve` answers, operations run there
//! (on its warm connections); if not, the CLI runs them itself.

use std::path::Path;

use clustermgr_protocol::frame::{expect_message, read_message, write_message};
use serde::{Deserialize, Serialize};
use tokio::net::UnixStream;
use tokio::sync::mpsc;

use crate::CtlError;
use crate::ops::{Event, Invocation, Report};

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

/// Connects to `serve`, if one answers on `socket`.
pub async fn connect(socket: &Path) -> Option<UnixStream> {
    UnixStream::connect(socket).await.ok()
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

/// Runs operations for a driver in the CLI process (SSH bootstrap): through `serve` when
/// it answers, else on a context of its own, opened once and shared by every call.
#[derive(Clone)]
pub struct Client {
    socket: std::path::PathBuf,
    local: Option<std::sync::Arc<crate::ops::Ctx>>,
    user: String,
    connect_timeout_ms: Option<u64>,
    ca_pem: String,
}

impl Client {
    /// Connects to `serve` under `home`, or opens the cluster here when none answers.
    pub async fn open(
        home: &Path,
        opts: &crate::ops::CtxOptions,
        user: String,
        connect_timeout_ms: Option<u64>,
    ) -> Result<Client, CtlError> {
        let h = crate::home::Home::open(home)?;
        let ca_pem =
            std::fs::read_to_string(h.ca_cert()).map_err(|e| CtlError::io(h.ca_cert(), e))?;
        let socket = h.socket();
        let local = match connect(&socket).await {
            Some(_) => None,
            None => Some(std::sync::Arc::new(crate::ops::Ctx::open(
                home,
                crate::clock::system(),
                opts,
                false,
            )?)),
        };
        Ok(Client {
            socket,
            local,
            user,
            connect_timeout_ms,
            ca_pem,
        })
    }

    /// Closes the agent connections of a local context.
    pub async fn close(&self) {
        if let Some(ctx) = &self.local {
            ctx.dialer.close().await;
        }
    }
}

impl crate::bootstrap::Operations for Client {
    async fn call(&self, op: crate::ops::Operation) -> Result<Report, CtlError> {
        let inv = Invocation {
            user: self.user.clone(),
            op,
            connect_timeout_ms: self.connect_timeout_ms,
        };
        let (tx, mut rx) = mpsc::channel(64);
        let drain = tokio::spawn(async move { while rx.recv().await.is_some() {} });
        let r = match &self.local {
            Some(ctx) => crate::ops::run(ctx.clone(), inv, tx).await,
            None => {
                let stream = connect(&self.socket).await.ok_or_else(|| {
                    CtlError::Serve(format!("it stopped answering on {}", self.socket.display()))
                })?;
                call(stream, &inv, tx)
                    .await?
                    .map_err(|e| CtlError::Relayed {
                        message: e.message,
                        exit_code: e.exit_code,
                    })
            }
        };
        let _ = drain.await;
        r
    }

    fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    async fn node(&self, name: &str) -> Result<Option<crate::ops::NodeView>, CtlError> {
        match self.call(crate::ops::Operation::NodeList).await? {
            Report::Nodes(nodes) => Ok(nodes.into_iter().find(|n| n.name == name)),
            _ => Ok(None),
        }
    }
}
