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

use crate::message::RemoteError;

/// What the agent sends on a telemetry stream.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum TelemetryFrame {
    /// Records in sequence order, each numbered one more than the one before, except
    /// where a [`Body::Gap`] says how many are missing.
    Batch(Vec<Record>),
    /// The agent cannot serve telemetry; the stream ends.
    Refused(RemoteError),
    // New variants go last: postcard numbers variants by position.
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

#[cfg(test)]
mod tests {
    use super::*;

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
