//! Redis on the cache host: kept on the loopback address behind stunnel, with a
//! password (`requirepass`) the controller generates once; and that password where
//! each node's health check reads it.
//!
//! The settings are a marked block at the end of the packaged file rather than a whole
//! file: Redis takes the last of a repeated directive, so the block wins over the
//! distribution's `bind` and `port` while its other defaults (paths, persistence,
//! the init system's `supervised`) stay the package's. Debian's `redis-server` reads
//! `/etc/redis/redis.conf`, Red Hat's `redis` (EL 7 and 8) `/etc/redis.conf`: both
//! edits are sent, and the one whose file the host lacks waits, as an edit of a
//! missing file does, so the controller needs no facts about the host's
//! distribution. (EL 9 names the file like Debian but the service `redis`: its
//! restart fails with systemd's words, and the apply is rolled back.)
//!
//! The health check reads the password from a file on the node (`PASSWORD_FILE`), not
//! from its request: the password then crosses the network only in the applies that
//! place it (the cache host needs it anyway, and the Gluu nodes hold it in their
//! cache configuration), not in every round to every node, and it never sits in the
//! controller's health rounds, which `serve` keeps and shows. `/etc/clustermgr` would
//! be its natural place, but no push may write there (the agent's identity lives
//! there), so it sits beside the tunnel's own key.

use std::collections::BTreeMap;

use clustermgr_protocol::changeset::{Content, Entry, Scope, ServiceVerb};
use clustermgr_protocol::health::REDIS_ADDR;

use super::{Inputs, NodeConfig, Sorted, file, service};
use crate::model::Cache;
use crate::store::Role;

/// The owner-only file holding the Redis password on the cache host and on each Gluu
/// node, for the health check.
pub const PASSWORD_FILE: &str = "/etc/stunnel/clustermgr/redis-password";

/// The packaged configuration files and the service each belongs to.
const CONFIGS: &[(&str, &str)] = &[
    ("/etc/redis/redis.conf", "redis-server"),
    ("/etc/redis.conf", "redis"),
];

/// The marker of the block in `redis.conf`.
const BLOCK: &str = "redis";

pub(super) fn render(inputs: &Inputs, sorted: &Sorted, out: &mut BTreeMap<String, NodeConfig>) {
    if inputs.model.cache != Cache::Redis {
        return;
    }
    // With no cache node, or several, stunnel's part already says what it waits for.
    let [cache] = sorted.with(Role::Cache)[..] else {
        return;
    };
    let gluu = sorted.with(Role::Gluu);
    let Some(password) = inputs.secrets.redis_password.as_deref() else {
        for n in std::iter::once(&cache).chain(&gluu) {
            out.entry(n.name.clone()).or_default().waiting.push(
                "Redis's settings wait for its password, which the controller generates at the next `clustermgr plan` or `apply`".into(),
            );
        }
        return;
    };
    let (host, port) = REDIS_ADDR.rsplit_once(':').unwrap_or((REDIS_ADDR, "6379"));
    let body = format!(
        "# The cluster's cache, reached only through stunnel; a later directive wins, so\n# these override the package's.\nbind {host}\nport {port}\nprotected-mode yes\nrequirepass {password}\n"
    );
    let cfg = out.entry(cache.name.clone()).or_default();
    for (path, name) in CONFIGS {
        cfg.entries.push(Entry {
            path: (*path).into(),
            scope: Scope::Host,
            content: Content::Block {
                name: BLOCK.into(),
                body: body.clone(),
            },
            secret: true,
            validate: None,
            on_change: service(name, ServiceVerb::Restart),
        });
    }
    for n in std::iter::once(&cache).chain(&gluu) {
        let mut f = file(PASSWORD_FILE, format!("{password}\n"), 0o600, Vec::new());
        f.secret = true;
        out.entry(n.name.clone()).or_default().entries.push(f);
    }
}
