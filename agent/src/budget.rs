//! One budget for the request bytes the agent holds at once, across every connection
//! and stream. QUIC's flow control bounds what a connection may send ahead of the
//! agent's reads, but not what the agent has read and still holds: an authenticated
//! controller opening many streams, each with a frame near the limit, would otherwise
//! make the agent buffer hundreds of MiB. A frame's size is known from its header
//! before a byte of it is read; the reader takes that much of the budget first, and
//! gives it back when the message is done with (a request: when it has been served).

use std::sync::Arc;
use std::time::Duration;

use clustermgr_protocol::ProtocolError;
use clustermgr_protocol::codec;
use clustermgr_protocol::frame::{read_frame_len, read_payload};
use serde::de::DeserializeOwned;
use tokio::io::AsyncRead;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The budget's floor; it is at least two frames at the configured limit.
const MIN_BUDGET: u32 = 64 * 1024 * 1024;
/// How long a reader waits for room before its stream is refused.
const WAIT: Duration = Duration::from_secs(10);

/// The shared budget. Cloning shares it.
#[derive(Clone, Debug)]
pub struct RequestBudget {
    sem: Arc<Semaphore>,
    total: u32,
    wait: Duration,
}

/// A message's share of the budget, given back when dropped.
#[derive(Debug)]
pub struct Held(#[allow(dead_code, reason = "held for its Drop")] OwnedSemaphorePermit);

impl RequestBudget {
    /// The budget for an agent whose frame limit is `max_frame`.
    pub fn new(max_frame: u32) -> Self {
        Self::with_total(MIN_BUDGET.max(max_frame.saturating_mul(2)), WAIT)
    }

    /// A budget of `total` bytes, waiting at most `wait` for room.
    pub fn with_total(total: u32, wait: Duration) -> Self {
        RequestBudget {
            sem: Arc::new(Semaphore::new(total as usize)),
            total,
            wait,
        }
    }

    /// Bytes held now.
    pub fn in_use(&self) -> u32 {
        self.total - self.sem.available_permits() as u32
    }

    /// Reads and decodes one message within the budget; `Ok(None)` at a clean end of
    /// stream. The message's bytes stay counted until the returned [`Held`] drops.
    pub async fn read<T: DeserializeOwned, R: AsyncRead + Unpin>(
        &self,
        r: &mut R,
        max: u32,
        what: &'static str,
    ) -> Result<Option<(T, Held)>, ProtocolError> {
        let Some(len) = read_frame_len(r, max).await? else {
            return Ok(None);
        };
        let len = u32::try_from(len).unwrap_or(u32::MAX);
        if len > self.total {
            return Err(ProtocolError::Stream(format!(
                "a {what} of {len} bytes is more than the agent holds for all requests together ({} bytes)",
                self.total
            )));
        }
        let permit = tokio::time::timeout(self.wait, self.sem.clone().acquire_many_owned(len))
            .await
            .map_err(|_| {
                ProtocolError::Stream(format!(
                    "the agent already holds {} bytes of requests, its limit; try the {what} again when they are done",
                    self.in_use()
                ))
            })?
            .map_err(|_| ProtocolError::Stream("the agent is stopping".into()))?;
        let bytes = read_payload(r, len as usize).await?;
        let msg = codec::decode(what, &bytes)?;
        Ok(Some((msg, Held(permit))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clustermgr_protocol::frame::write_message;

    async fn framed(msg: &str) -> Vec<u8> {
        let mut out = Vec::new();
        write_message(&mut out, &msg.to_string()).await.unwrap();
        out
    }

    #[tokio::test]
    async fn held_bytes_are_bounded_across_readers() {
        let b = RequestBudget::with_total(100, Duration::from_millis(200));
        let big = framed(&"x".repeat(60)).await;
        let (m, held) = b
            .read::<String, _>(&mut big.as_slice(), 1024, "request")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(m.len(), 60);
        assert!(b.in_use() >= 60);
        // A second one does not fit while the first is held: refused after the wait.
        let err = b
            .read::<String, _>(&mut big.as_slice(), 1024, "request")
            .await
            .unwrap_err();
        assert!(err.to_string().contains("already holds"), "{err}");
        drop(held);
        assert_eq!(b.in_use(), 0);
        assert!(
            b.read::<String, _>(&mut big.as_slice(), 1024, "request")
                .await
                .is_ok()
        );
        // One larger than the whole budget is refused at once.
        let huge = framed(&"x".repeat(200)).await;
        let err = b
            .read::<String, _>(&mut huge.as_slice(), 1024, "request")
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("more than the agent holds"),
            "{err}"
        );
    }
}
