//! Node names: the name an administrator gives a host, which is also the DNS name in
//! its agent certificate, so it must be a valid DNS name.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::ProtocolError;

/// A validated node name (`gluu1`, `lb.example.org`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct NodeName(String);

impl NodeName {
    /// Checks `name` and wraps it.
    pub fn new(name: &str) -> Result<Self, ProtocolError> {
        let bad = |why| ProtocolError::InvalidNodeName {
            name: name.to_string(),
            why,
        };
        if name.is_empty() {
            return Err(bad("it is empty"));
        }
        if name.len() > 253 {
            return Err(bad("it is longer than 253 characters"));
        }
        for label in name.split('.') {
            if label.is_empty() {
                return Err(bad("it has an empty label"));
            }
            if label.len() > 63 {
                return Err(bad("a label is longer than 63 characters"));
            }
            if label.starts_with('-') || label.ends_with('-') {
                return Err(bad("a label starts or ends with '-'"));
            }
            if !label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            {
                return Err(bad("it has a character other than a-z, 0-9, '-' or '.'"));
            }
        }
        if name.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
            return Err(bad("it looks like an IP address"));
        }
        Ok(NodeName(name.to_string()))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for NodeName {
    type Error = ProtocolError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        NodeName::new(&s)
    }
}

impl From<NodeName> for String {
    fn from(n: NodeName) -> String {
        n.0
    }
}

impl std::str::FromStr for NodeName {
    type Err = ProtocolError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        NodeName::new(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_dns_names() {
        for ok in ["gluu1", "lb", "a-b", "gluu1.example.org", "x9"] {
            assert!(NodeName::new(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn refuses_what_cannot_be_a_certificate_name() {
        for bad in [
            "",
            "Gluu1",
            "-a",
            "a-",
            "a..b",
            "a b",
            "a/b",
            "127.0.0.1",
            "a;rm",
            "ü",
        ] {
            assert!(NodeName::new(bad).is_err(), "{bad:?}");
        }
        assert!(NodeName::new(&"a".repeat(64)).is_err());
    }
}
