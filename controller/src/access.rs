//! Who may do what: the three roles of people and scripts (viewer, operator, admin),
//! and the role of a local user who reaches `serve` through its sockets, from
//! `[access]` in `controller.toml`. The home's owner (and root, who can read the home
//! anyway) is an admin; anyone else has the role `[access]` gives their name or one of
//! their groups, the highest if several, or none and is refused.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// What a person or script may do. Each role may do what the one before it may.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum UserRole {
    /// Reads everything but secrets.
    Viewer,
    /// Also drains and undrains, plans, follows logs.
    Operator,
    /// Also applies, rolls back, runs commands, manages nodes, certificates, users
    /// and backups.
    Admin,
}

impl UserRole {
    /// Its name, as `controller.toml` and the CLI spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            UserRole::Viewer => "viewer",
            UserRole::Operator => "operator",
            UserRole::Admin => "admin",
        }
    }
}

impl std::fmt::Display for UserRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for UserRole {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "viewer" => Ok(UserRole::Viewer),
            "operator" => Ok(UserRole::Operator),
            "admin" => Ok(UserRole::Admin),
            _ => Err(format!("{s:?} is no role: give viewer, operator or admin")),
        }
    }
}

/// The `[access]` section: a second socket for other local users, and their roles.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AccessConfig {
    /// Where `serve` also listens for the CLIs of other local users (an absolute path
    /// in a directory only root or the home's owner may write). None: only the
    /// home's owner reaches `serve`.
    pub socket: Option<PathBuf>,
    /// Local user names and their roles.
    pub users: BTreeMap<String, UserRole>,
    /// Local group names and the roles of their members.
    pub groups: BTreeMap<String, UserRole>,
}

/// Who is on the other end of a socket, as the kernel says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    /// Its user id.
    pub uid: u32,
    /// Its user name, when the name service knows it.
    pub name: Option<String>,
    /// The names of its groups (primary and supplementary) the name service knows.
    pub groups: Vec<String>,
}

impl AccessConfig {
    /// The role of `peer`, whose home's owner is `owner`; `None`: no role, refused.
    pub fn role_of(&self, peer: &Peer, owner: u32) -> Option<UserRole> {
        if peer.uid == owner || peer.uid == 0 {
            return Some(UserRole::Admin);
        }
        let by_name = peer.name.as_ref().and_then(|n| self.users.get(n)).copied();
        let by_group = peer
            .groups
            .iter()
            .filter_map(|g| self.groups.get(g))
            .copied()
            .max();
        by_name.max(by_group)
    }
}

/// The group names of the socket's peer: `gid` (from the socket's credentials) and the
/// supplementary groups of process `pid` in `/proc`, by `/etc/group`. The kernel's
/// list, not the client's; and only while `/proc` still shows the socket's `uid` for
/// that pid (a client that exited may have left its pid to someone else's process).
pub fn groups_of_process(pid: i32, uid: u32, gid: u32) -> Vec<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let same_uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|u| u.split_whitespace().next()?.parse::<u32>().ok())
        == Some(uid);
    let mut ids: Vec<u32> = status
        .lines()
        .find_map(|l| l.strip_prefix("Groups:"))
        .filter(|_| same_uid)
        .map(|g| {
            g.split_whitespace()
                .filter_map(|v| v.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    ids.push(gid);
    let table = std::fs::read_to_string("/etc/group").unwrap_or_default();
    let mut names: Vec<String> = table
        .lines()
        .filter_map(|l| {
            let mut f = l.split(':');
            let (name, _, id) = (f.next()?, f.next()?, f.next()?.parse::<u32>().ok()?);
            ids.contains(&id).then(|| name.to_string())
        })
        .collect();
    names.sort();
    names.dedup();
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> AccessConfig {
        toml::from_str(
            "socket = \"/run/clustermgr/serve.sock\"\n[users]\nbob = \"operator\"\neve = \"viewer\"\n[groups]\nops = \"operator\"\nleads = \"admin\"\n",
        )
        .unwrap()
    }

    fn peer(uid: u32, name: &str, groups: &[&str]) -> Peer {
        Peer {
            uid,
            name: Some(name.into()),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        }
    }

    #[test]
    fn the_owner_and_root_are_admins_and_others_have_what_access_gives() {
        let c = cfg();
        assert_eq!(
            c.role_of(&peer(1000, "me", &[]), 1000),
            Some(UserRole::Admin)
        );
        assert_eq!(
            c.role_of(&peer(0, "root", &[]), 1000),
            Some(UserRole::Admin)
        );
        assert_eq!(
            c.role_of(&peer(1001, "bob", &[]), 1000),
            Some(UserRole::Operator)
        );
        // The highest of the name's and the groups' roles.
        assert_eq!(
            c.role_of(&peer(1002, "eve", &["ops"]), 1000),
            Some(UserRole::Operator)
        );
        assert_eq!(
            c.role_of(&peer(1003, "carol", &["users", "leads"]), 1000),
            Some(UserRole::Admin)
        );
        assert_eq!(c.role_of(&peer(1004, "mallory", &["users"]), 1000), None);
        let nameless = Peer {
            uid: 1005,
            name: None,
            groups: Vec::new(),
        };
        assert_eq!(c.role_of(&nameless, 1000), None);
    }

    #[test]
    fn roles_order_and_parse() {
        assert!(UserRole::Viewer < UserRole::Operator && UserRole::Operator < UserRole::Admin);
        for r in [UserRole::Viewer, UserRole::Operator, UserRole::Admin] {
            assert_eq!(r.as_str().parse::<UserRole>(), Ok(r));
        }
        let e = "root".parse::<UserRole>().unwrap_err();
        assert!(e.contains("viewer, operator or admin"), "{e}");
        let bad: Result<AccessConfig, _> = toml::from_str("[users]\nbob = \"boss\"\n");
        assert!(bad.is_err());
    }

    #[test]
    fn a_process_groups_are_named_from_the_kernel_list() {
        // This test's own process: root's group 0 is "root" on Debian.
        let me = std::process::id() as i32;
        let uid = rustix::process::getuid().as_raw();
        let names = groups_of_process(me, uid, 0);
        assert!(names.contains(&"root".to_string()), "{names:?}");
        // A pid whose process is not the socket's user's: its groups are not asked,
        // the socket's own group stands alone.
        assert_eq!(groups_of_process(me, uid + 1, 65534), ["nogroup"]);
    }
}
