//! The one place that knows the byte encoding of messages (postcard 1.x), so the codec
//! can be swapped without touching anything else.
//!
//! postcard has no field tags: a message type is frozen within a protocol version,
//! and any change to it is a new protocol version (see [`crate::version`]).

use serde::{Serialize, de::DeserializeOwned};

use crate::ProtocolError;

/// Encodes a message to its wire bytes.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Serializing our own plain data types into a Vec cannot fail: postcard only errors
    // for unsupported serde features (e.g. unknown-length sequences), which we do not use.
    postcard::to_stdvec(value).expect("clustermgr messages always serialize")
}

/// Decodes one message from exactly `bytes`; trailing bytes are an error.
pub fn decode<T: DeserializeOwned>(what: &'static str, bytes: &[u8]) -> Result<T, ProtocolError> {
    let (value, rest) = postcard::take_from_bytes(bytes).map_err(|e| ProtocolError::Malformed {
        what,
        detail: e.to_string(),
    })?;
    if !rest.is_empty() {
        return Err(ProtocolError::TrailingBytes {
            what,
            extra: rest.len(),
        });
    }
    Ok(value)
}
