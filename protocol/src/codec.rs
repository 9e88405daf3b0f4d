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

/// The bytes of `TelemetryFrame::Batch` of `count` records, from the records already
/// encoded one after another in `records`: the agent's spool keeps records encoded,
/// and forwarding them as they are spares a decode and an encode of every line.
pub fn telemetry_batch(count: usize, records: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(records.len() + 11);
    // The variant's index, then the sequence's length, each a varint.
    varint(0, &mut out);
    varint(count as u64, &mut out);
    out.extend_from_slice(records);
    out
}

/// The sequence number of an encoded telemetry `Record` (its first field), read
/// without decoding the rest.
pub fn record_seq(record: &[u8]) -> Option<u64> {
    postcard::take_from_bytes::<u64>(record)
        .ok()
        .map(|(seq, _)| seq)
}

fn varint(mut n: u64, out: &mut Vec<u8>) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::{Body, Record, TelemetryFrame};

    #[test]
    fn a_batch_of_encoded_records_is_the_batch_encoded() {
        for count in [0usize, 1, 127, 128, 300, 20_000] {
            let records: Vec<Record> = (0..count)
                .map(|i| Record {
                    seq: (i as u64) << (i % 60),
                    time_ms: -(i as i64),
                    body: Body::Log {
                        source: "oxauth".into(),
                        line: "x".repeat(i % 200),
                    },
                })
                .collect();
            let mut encoded = Vec::new();
            for r in &records {
                let one = encode(r);
                assert_eq!(record_seq(&one), Some(r.seq));
                encoded.extend(one);
            }
            assert_eq!(
                telemetry_batch(count, &encoded),
                encode(&TelemetryFrame::Batch(records)),
                "{count} records"
            );
        }
        assert_eq!(record_seq(&[]), None);
        assert_eq!(record_seq(&[0xff]), None);
    }
}
