//! Protocol versions and their negotiation.
//!
//! The ALPN token never changes; instead the first exchange on a connection is a
//! [`crate::message::Hello`] carrying each side's supported range, and the highest
//! version both support wins. Each release supports at least the current and the
//! previous version, so the controller and the agents can be upgraded one at a time.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::ProtocolError;

/// The newest protocol version this build speaks. Version 2 adds what building the
/// cluster needs: LDAP attribute entries ([`crate::changeset::Content::Ldap`]), the
/// replication validator, and Redis checks that authenticate. Every version-2 type is
/// a variant added last to a version-1 enum, so a version-1 peer decodes everything
/// but those; the controller never sends them over a version-1 connection.
/// Version 3 adds provisioning: package entries
/// ([`crate::changeset::Content::Package`]) and uploading package files. Version 4
/// adds making oxAuth keys ([`crate::message::Request::KeysMake`]) and installing
/// Gluu ([`crate::message::Request::GluuSetup`] and its two companions).
pub const CURRENT: u16 = 4;

/// The oldest protocol version this build still speaks.
pub const OLDEST: u16 = 1;

/// The first version with LDAP entries, the replication validator and authenticated
/// Redis checks.
pub const BUILDS_CLUSTER: u16 = 2;

/// The first version with package entries and package uploads.
pub const PROVISIONS: u16 = 3;

/// The first version that makes oxAuth keys.
pub const ROTATES_KEYS: u16 = 4;

/// The first version that installs Gluu on a node.
pub const INSTALLS_GLUU: u16 = 4;

/// An inclusive range of protocol versions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionRange {
    /// The oldest version spoken.
    pub min: u16,
    /// The newest version spoken.
    pub max: u16,
}

impl VersionRange {
    /// What this build speaks.
    pub const fn ours() -> Self {
        VersionRange {
            min: OLDEST,
            max: CURRENT,
        }
    }

    /// Whether `v` lies in the range.
    pub fn contains(&self, v: u16) -> bool {
        self.min <= v && v <= self.max
    }
}

impl fmt::Display for VersionRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.min == self.max {
            write!(f, "version {}", self.min)
        } else {
            write!(f, "versions {} to {}", self.min, self.max)
        }
    }
}

/// Picks the highest version in both ranges, or says which ranges did not meet.
pub fn negotiate(ours: VersionRange, theirs: VersionRange) -> Result<u16, ProtocolError> {
    let high = ours.max.min(theirs.max);
    let low = ours.min.max(theirs.min);
    if low <= high && theirs.min <= theirs.max {
        Ok(high)
    } else {
        Err(ProtocolError::NoCommonVersion { ours, theirs })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(min: u16, max: u16) -> VersionRange {
        VersionRange { min, max }
    }

    #[test]
    fn highest_common_version_wins() {
        assert_eq!(negotiate(r(1, 3), r(2, 5)).unwrap(), 3);
        assert_eq!(negotiate(r(2, 5), r(1, 3)).unwrap(), 3);
        assert_eq!(negotiate(r(1, 1), r(1, 9)).unwrap(), 1);
    }

    #[test]
    fn disjoint_ranges_name_both_sides() {
        let err = negotiate(r(1, 2), r(3, 4)).unwrap_err().to_string();
        assert!(err.contains("versions 1 to 2"), "{err}");
        assert!(err.contains("versions 3 to 4"), "{err}");
    }

    #[test]
    fn an_inverted_range_is_no_range() {
        assert!(negotiate(r(1, 5), r(4, 2)).is_err());
    }
}
