//! Length-prefixed frames: a 4-byte big-endian length, then that many payload bytes.
//!
//! The length is checked against the configured maximum before any buffer is made,
//! and the payload buffer then grows with the bytes that actually arrive, so a peer
//! that announces a large frame and sends nothing costs us nothing.

use serde::{Serialize, de::DeserializeOwned};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::{ProtocolError, codec};

/// The default largest frame either end accepts: 16 MiB.
pub const DEFAULT_MAX_FRAME_BYTES: u32 = 16 * 1024 * 1024;

/// Bytes in a frame header.
pub const HEADER_BYTES: usize = 4;

/// How much of a payload is read (and allocated) at a time.
const READ_CHUNK: usize = 64 * 1024;

/// Prefixes `payload` with its length.
pub fn encode_frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_BYTES + payload.len());
    out.extend_from_slice(&frame_header(payload.len()));
    out.extend_from_slice(payload);
    out
}

fn frame_header(len: usize) -> [u8; HEADER_BYTES] {
    u32::try_from(len)
        .expect("frames are bounded far below 4 GiB")
        .to_be_bytes()
}

/// Reads a header and checks the announced length against `max`.
pub fn check_header(header: [u8; HEADER_BYTES], max: u32) -> Result<usize, ProtocolError> {
    let announced = u32::from_be_bytes(header);
    if announced > max {
        return Err(ProtocolError::FrameTooLarge {
            announced: u64::from(announced),
            limit: max,
        });
    }
    Ok(announced as usize)
}

/// A sans-IO frame splitter: push bytes in as they arrive, take whole frames out.
#[derive(Debug)]
pub struct FrameDecoder {
    max: u32,
    buf: Vec<u8>,
}

impl FrameDecoder {
    /// A decoder refusing frames larger than `max` bytes.
    pub fn new(max: u32) -> Self {
        FrameDecoder {
            max,
            buf: Vec::new(),
        }
    }

    /// Appends received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Takes the next whole frame, if one has arrived. An oversized length prefix is an
    /// error as soon as its 4 bytes are in, before the payload is awaited.
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, ProtocolError> {
        let Some(header) = self.buf.first_chunk::<HEADER_BYTES>() else {
            return Ok(None);
        };
        let len = check_header(*header, self.max)?;
        if self.buf.len() < HEADER_BYTES + len {
            return Ok(None);
        }
        let frame = self.buf[HEADER_BYTES..HEADER_BYTES + len].to_vec();
        self.buf.drain(..HEADER_BYTES + len);
        Ok(Some(frame))
    }

    /// Checks that the input ended on a frame boundary.
    pub fn finish(&self) -> Result<(), ProtocolError> {
        match self.buf.len() {
            0 => Ok(()),
            n if n < HEADER_BYTES => Err(ProtocolError::Truncated {
                got: n,
                expected: HEADER_BYTES,
            }),
            n => {
                let header = *self.buf.first_chunk::<HEADER_BYTES>().expect("checked");
                Err(ProtocolError::Truncated {
                    got: n - HEADER_BYTES,
                    expected: check_header(header, self.max)?,
                })
            }
        }
    }
}

/// Reads one frame. `Ok(None)` means the stream ended cleanly between frames.
pub async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    max: u32,
) -> Result<Option<Vec<u8>>, ProtocolError> {
    match read_frame_len(r, max).await? {
        Some(len) => read_payload(r, len).await.map(Some),
        None => Ok(None),
    }
}

/// Reads a frame's header and checks its length against `max`; `Ok(None)` at a clean
/// end of stream. The payload ([`read_payload`]) follows: a reader that must account
/// for what it buffers learns the size before a byte of it is read.
pub async fn read_frame_len<R: AsyncRead + Unpin>(
    r: &mut R,
    max: u32,
) -> Result<Option<usize>, ProtocolError> {
    let mut header = [0u8; HEADER_BYTES];
    let mut got = 0;
    while got < HEADER_BYTES {
        let n = r.read(&mut header[got..]).await.map_err(stream_error)?;
        if n == 0 {
            return if got == 0 {
                Ok(None)
            } else {
                Err(ProtocolError::Truncated {
                    got,
                    expected: HEADER_BYTES,
                })
            };
        }
        got += n;
    }
    check_header(header, max).map(Some)
}

/// Reads a payload of `len` bytes, growing the buffer only with bytes that arrive.
pub async fn read_payload<R: AsyncRead + Unpin>(
    r: &mut R,
    len: usize,
) -> Result<Vec<u8>, ProtocolError> {
    let mut payload = Vec::new();
    while payload.len() < len {
        let want = (len - payload.len()).min(READ_CHUNK);
        let start = payload.len();
        payload.resize(start + want, 0);
        let n = r.read(&mut payload[start..]).await.map_err(stream_error)?;
        payload.truncate(start + n);
        if n == 0 {
            return Err(ProtocolError::Truncated {
                got: payload.len(),
                expected: len,
            });
        }
    }
    Ok(payload)
}

/// Writes one frame.
pub async fn write_frame<W: AsyncWrite + Unpin>(
    w: &mut W,
    payload: &[u8],
) -> Result<(), ProtocolError> {
    w.write_all(&frame_header(payload.len()))
        .await
        .map_err(stream_error)?;
    w.write_all(payload).await.map_err(stream_error)
}

/// Reads and decodes one message; `Ok(None)` at a clean end of stream.
pub async fn read_message<T: DeserializeOwned, R: AsyncRead + Unpin>(
    r: &mut R,
    max: u32,
    what: &'static str,
) -> Result<Option<T>, ProtocolError> {
    match read_frame(r, max).await? {
        Some(bytes) => codec::decode(what, &bytes).map(Some),
        None => Ok(None),
    }
}

/// Reads and decodes one message that must be there.
pub async fn expect_message<T: DeserializeOwned, R: AsyncRead + Unpin>(
    r: &mut R,
    max: u32,
    what: &'static str,
) -> Result<T, ProtocolError> {
    read_message(r, max, what).await?.ok_or_else(|| {
        ProtocolError::Stream(format!(
            "the peer closed the stream before its {what} message"
        ))
    })
}

/// Encodes and writes one message.
pub async fn write_message<T: Serialize, W: AsyncWrite + Unpin>(
    w: &mut W,
    msg: &T,
) -> Result<(), ProtocolError> {
    write_frame(w, &codec::encode(msg)).await
}

fn stream_error(e: std::io::Error) -> ProtocolError {
    ProtocolError::Stream(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoder_splits_frames_across_pushes() {
        let mut wire = encode_frame(b"hello");
        wire.extend(encode_frame(b""));
        wire.extend(encode_frame(b"world"));
        let mut d = FrameDecoder::new(16);
        let mut frames = Vec::new();
        for b in wire {
            d.push(&[b]);
            while let Some(f) = d.next_frame().unwrap() {
                frames.push(f);
            }
        }
        assert_eq!(frames, vec![b"hello".to_vec(), vec![], b"world".to_vec()]);
        d.finish().unwrap();
    }

    #[test]
    fn oversized_prefix_is_refused_before_the_payload_arrives() {
        let mut d = FrameDecoder::new(1024);
        d.push(&(1025u32).to_be_bytes());
        let err = d.next_frame().unwrap_err().to_string();
        assert!(err.contains("1025") && err.contains("1024"), "{err}");
    }

    #[test]
    fn truncation_is_reported_with_sizes() {
        let mut d = FrameDecoder::new(1024);
        d.push(&encode_frame(b"abcdef")[..7]);
        assert!(d.next_frame().unwrap().is_none());
        let err = d.finish().unwrap_err().to_string();
        assert!(err.contains("3 of 6"), "{err}");
    }

    #[tokio::test]
    async fn async_reader_refuses_a_huge_prefix_without_allocating() {
        let mut input: &[u8] = &u32::MAX.to_be_bytes();
        let err = read_frame(&mut input, DEFAULT_MAX_FRAME_BYTES)
            .await
            .unwrap_err();
        assert!(matches!(err, ProtocolError::FrameTooLarge { .. }));
    }

    #[tokio::test]
    async fn async_reader_reports_truncation_and_clean_end() {
        let wire = encode_frame(b"abc");
        let mut whole: &[u8] = &wire;
        assert_eq!(
            read_frame(&mut whole, 16).await.unwrap().unwrap(),
            b"abc".to_vec()
        );
        assert!(read_frame(&mut whole, 16).await.unwrap().is_none());
        let mut cut: &[u8] = &wire[..5];
        assert!(matches!(
            read_frame(&mut cut, 16).await,
            Err(ProtocolError::Truncated {
                got: 1,
                expected: 3
            })
        ));
    }
}
