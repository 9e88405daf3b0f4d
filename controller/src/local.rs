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
