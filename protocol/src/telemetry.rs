//! Telemetry on the wire: the records an agent collects (log lines, metric samples)
//! with the sequence numbers of its spool, and the acknowledgements that let it free
//! what the controller has stored.
//!
//! One stream per connection: the controller opens it with [`Request::Telemetry`],
//! naming the last sequence number it stored; the agent answers with
//! [`TelemetryFrame`]s from the next one on, forever, and the controller sends
//! [`TelemetryAck`]s on its half as it stores them.
//!
//! [`Request::Telemetry`]: crate::message::Request::Telemetry

use serde::{Deserialize, Serialize};

use crate::ProtocolError;
use crate::message::RemoteError;

/// What the agent sends on a telemetry stream.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum TelemetryFrame {
    /// Records in sequence order, each numbered one more than the one before, except
    /// where a [`Body::Gap`] says how many are missing.
    Batch(Vec<Record>),
    /// The agent cannot serve telemetry; the stream ends.
    Refused(RemoteError),
    /// A `Batch` frame's bytes, LZ4-compressed with their length in front: log text
    /// shrinks several times over, and with it the packets to send and acknowledge.
    Packed(Vec<u8>),
    // New variants go last: postcard numbers variants by position.
}

/// Batches this small go as they are: compressing them would save a few bytes.
const PACK_FROM: usize = 512;

impl TelemetryFrame {
    /// The bytes to send for a batch whose encoding is `batch`
    /// ([`crate::codec::telemetry_batch`]): packed when that makes it smaller.
    pub fn pack(batch: Vec<u8>) -> Vec<u8> {
        if batch.len() < PACK_FROM {
            return batch;
        }
        let packed = lz4_flex::compress_prepend_size(&batch);
        if packed.len() + 8 >= batch.len() {
            return batch;
        }
        crate::codec::encode(&TelemetryFrame::Packed(packed))
    }

    /// The records a frame carries, or the agent's refusal. A packed frame may unpack
    /// to no more than `max_unpacked` bytes, which bounds what a peer can make the
    /// reader allocate.
    pub fn unpacked(
        self,
        max_unpacked: usize,
    ) -> Result<Result<Vec<Record>, RemoteError>, ProtocolError> {
        let packed = match self {
            TelemetryFrame::Batch(records) => return Ok(Ok(records)),
            TelemetryFrame::Refused(e) => return Ok(Err(e)),
            TelemetryFrame::Packed(p) => p,
        };
        let malformed = |detail: String| ProtocolError::Malformed {
            what: "packed telemetry",
            detail,
        };
        let size = packed
            .get(..4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
            .ok_or_else(|| malformed("shorter than its length".into()))?;
        if size > max_unpacked {
            return Err(malformed(format!(
                "it unpacks to {size} bytes, more than the {max_unpacked} allowed"
            )));
        }
        let bytes =
            lz4_flex::decompress_size_prepended(&packed).map_err(|e| malformed(e.to_string()))?;
        match crate::codec::decode::<TelemetryFrame>("packed telemetry", &bytes)? {
            TelemetryFrame::Batch(records) => Ok(Ok(records)),
            _ => Err(malformed("it holds something other than a batch".into())),
        }
    }
}

/// What the controller sends back: everything up to `stored_through` is stored, so
/// the agent may drop it from its spool.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TelemetryAck {
    /// The highest sequence number stored.
    pub stored_through: u64,
}

/// One collected record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Its number in the agent's spool, from 1; never reused.
    pub seq: u64,
    /// When it was collected (a log line: when it was read), Unix milliseconds.
    pub time_ms: i64,
    /// What it is.
    pub body: Body,
}

/// What a record carries.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Body {
    /// One log line (a Java stack trace joined to the line it belongs to).
    Log {
        /// The source's name (`oxauth`, `nginx-access`).
        source: String,
        /// The text, without its newline.
        line: String,
    },
    /// The samples of one collection tick.
    Metrics(Vec<Sample>),
    /// Records that will never come: the spool was full and dropped its oldest, or a
    /// corrupt segment was moved aside. The records before and after it are whole.
    Gap {
        /// How many sequence numbers are missing.
        lost: u64,
        /// Why, in words.
        why: String,
    },
    // New variants go last: postcard numbers variants by position.
}

/// One metric value.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// The metric's name, in Prometheus style (`node_cpu_seconds_total`).
    pub name: String,
    /// Its labels (`mode`=`user`, `mount`=`/`), sorted by name.
    pub labels: Vec<(String, String)>,
    /// The value.
    pub value: f64,
}

impl Sample {
    /// The series key, as Prometheus prints it: `name{a="x",b="y"}`.
    pub fn series(&self) -> String {
        series_key(&self.name, &self.labels)
    }
}

/// `name{a="x",b="y"}`, or `name` without labels; quotes and backslashes escaped.
pub fn series_key(name: &str, labels: &[(String, String)]) -> String {
    if labels.is_empty() {
        return name.to_string();
    }
    let mut s = String::with_capacity(name.len() + 16 * labels.len());
    s.push_str(name);
    s.push('{');
    for (i, (k, v)) in labels.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(k);
        s.push_str("=\"");
        for c in v.chars() {
            match c {
                '"' => s.push_str("\\\""),
                '\\' => s.push_str("\\\\"),
                '\n' => s.push_str("\\n"),
                c => s.push(c),
            }
        }
        s.push('"');
    }
    s.push('}');
    s
}

// The log files every agent follows by default, by source name: the agent follows
// them, and the controller knows their names (a `logs --source` of one of them that
// has written nothing yet is a quiet log, not a typo).
/// Log files followed by default, inside the Gluu container root.
pub const CONTAINER_LOGS: &[(&str, &str)] = &[
    ("oxauth", "opt/gluu/jetty/oxauth/logs/oxauth.log"),
    ("identity", "opt/gluu/jetty/identity/logs/oxtrust.log"),
    ("idp-process", "opt/shibboleth-idp/logs/idp-process.log"),
    ("idp-warn", "opt/shibboleth-idp/logs/idp-warn.log"),
    ("idp-audit", "opt/shibboleth-idp/logs/idp-audit.log"),
    (
        "passport",
        "opt/gluu/node/passport/server/logs/passport.log",
    ),
    ("ldap-access", "opt/opendj/logs/access"),
    ("ldap-errors", "opt/opendj/logs/errors"),
    ("ldap", "var/log/openldap/ldap.log"),
    ("apache-access", "var/log/apache2/access.log"),
    ("apache-error", "var/log/apache2/error.log"),
    ("apache-access", "var/log/httpd/access_log"),
    ("apache-error", "var/log/httpd/error_log"),
];

/// Log files followed by default on the host itself.
pub const HOST_LOGS: &[(&str, &str)] = &[
    ("nginx-access", "var/log/nginx/access.log"),
    ("nginx-error", "var/log/nginx/error.log"),
    ("csync2", "var/log/csync2.log"),
    ("stunnel", "var/log/stunnel4/stunnel.log"),
    ("clustermgr-agent", "var/log/clustermgr-agent.log"),
];

/// Whether `source` is one of the sources every agent follows by default.
pub fn is_default_log_source(source: &str) -> bool {
    CONTAINER_LOGS
        .iter()
        .chain(HOST_LOGS)
        .any(|(name, _)| *name == source)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_packed_batch_unpacks_to_its_records_and_no_further() {
        let records: Vec<Record> = (1..=500)
            .map(|seq| Record {
                seq,
                time_ms: 1_700_000_000_000 + seq as i64,
                body: Body::Log {
                    source: "oxauth".into(),
                    line: format!("2026-11-25 INFO [qtp-{seq}] request handled in 3 ms"),
                },
            })
            .collect();
        let plain = crate::codec::encode(&TelemetryFrame::Batch(records.clone()));
        let sent = TelemetryFrame::pack(plain.clone());
        assert!(
            sent.len() * 4 < plain.len(),
            "{} of {}",
            sent.len(),
            plain.len()
        );
        let frame: TelemetryFrame = crate::codec::decode("t", &sent).unwrap();
        assert!(matches!(frame, TelemetryFrame::Packed(_)));
        assert_eq!(frame.clone().unpacked(1 << 20).unwrap().unwrap(), records);
        let err = frame.unpacked(1000).unwrap_err().to_string();
        assert!(err.contains("more than the 1000 allowed"), "{err}");
        // Small batches go as they are.
        let small = crate::codec::encode(&TelemetryFrame::Batch(records[..1].to_vec()));
        assert_eq!(TelemetryFrame::pack(small.clone()), small);
        // A packed frame inside a packed frame, or junk, is refused.
        let nested = lz4_flex::compress_prepend_size(&sent);
        assert!(TelemetryFrame::Packed(nested).unpacked(1 << 20).is_err());
        assert!(
            TelemetryFrame::Packed(vec![9, 0, 0, 0, 1])
                .unpacked(1 << 20)
                .is_err()
        );
        assert!(TelemetryFrame::Packed(vec![]).unpacked(1 << 20).is_err());
    }

    #[test]
    fn series_keys_read_as_prometheus_prints_them() {
        let s = Sample {
            name: "node_filesystem_avail_bytes".into(),
            labels: vec![
                ("mount".into(), "/var/\"x\"".into()),
                ("fstype".into(), "ext4".into()),
            ],
            value: 1.0,
        };
        assert_eq!(
            s.series(),
            r#"node_filesystem_avail_bytes{mount="/var/\"x\"",fstype="ext4"}"#
        );
        assert_eq!(series_key("node_load1", &[]), "node_load1");
    }
}
