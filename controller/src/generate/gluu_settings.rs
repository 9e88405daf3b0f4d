//! Gluu's cluster-wide settings: what the Gluu applications read from LDAP and from
//! Shibboleth's properties so that they use the cluster rather than their own node.
//!
//! In LDAP (the 4.x layout, `ou=configuration,o=gluu`): `oxCacheConfiguration`'s
//! provider (`REDIS` through the node's stunnel with the Redis password, which the
//! agent encrypts with the node's own key as Gluu stores it; `NATIVE_PERSISTENCE`
//! without a shared cache), and `oxIDPAuthentication`'s servers (every LDAP server of
//! the cluster, the node's own first as `localhost`). Each is one JSON field, so the
//! rest of Gluu's document stays as Gluu wrote it, and each change bumps `oxRevision`
//! of `ou=oxauth,ou=configuration,o=gluu` so oxAuth reloads. With LDAP replication
//! they are written on the node the others take their directory from (replication
//! carries them); without, on every Gluu node's own directory.
//!
//! oxAuth's expired-entry cleaner is turned off (`cleanServiceInterval` -1 in
//! `oxAuthConfDynamic`, replicated like the rest, so off on every node) and
//! `clustermgr-agent clean-expired` runs from cron on the primary alone, so the nodes
//! do not race to delete the same entries and replicate each other's deletes. The
//! existing Cluster Manager does the same with a Python script; the agent binds with
//! what it reads on the node, with no password in the cron line.
//!
//! Shibboleth reads its LDAP servers from `/opt/shibboleth-idp/conf/ldap.properties`:
//! the same list as one line on every node that has the IdP (the file is absent, so
//! the edit waits, elsewhere), and the IdP restarts when it changes.
//!
//! Decided: Shibboleth does not force the LDAP cache here (the existing Cluster
//! Manager forces `NATIVE_PERSISTENCE` when the IdP is installed, since Gluu 3.1's IdP
//! kept its sessions in LDAP). `cache` says what the cluster uses, and the README tells
//! a 3.1 administrator with Shibboleth to keep `cache none`.

use std::collections::BTreeMap;

use clustermgr_protocol::changeset::{
    Action, Content, Entry, LdapAttr, LdapObject, LdapValue, Scope,
};

use super::{HEADER, Inputs, NodeConfig, Sorted, file, ip_of, replication, stunnel};
use crate::model::Cache;
use crate::store::{BuildRecord, NodeRecord, Role};

/// The entry of Gluu's cluster-wide settings.
pub const CONFIGURATION_DN: &str = "ou=configuration,o=gluu";
/// The entry whose `oxRevision` oxAuth polls.
pub const OXAUTH_DN: &str = "ou=oxauth,ou=configuration,o=gluu";
/// Shibboleth's LDAP settings, in the container.
pub const SHIBBOLETH_LDAP: &str = "/opt/shibboleth-idp/conf/ldap.properties";
/// Its key naming the LDAP servers.
pub const SHIBBOLETH_KEY: &str = "idp.authn.LDAP.ldapURL";

/// The cron file that runs the expired-entry cleaner, on every Gluu node: the job on
/// the one that cleans, a comment naming it on the others.
pub const CLEANER_CRON: &str = "/etc/cron.d/clustermgr-clean-expired";
/// Where the cleaner's last run is told.
pub const CLEANER_LOG: &str = "/var/log/clustermgr-clean-expired.log";

fn field(attribute: &str, pointer: &str, json: String, encrypt: bool) -> LdapAttr {
    field_of(CONFIGURATION_DN, attribute, pointer, json, encrypt)
}

pub(super) fn field_of(
    dn: &str,
    attribute: &str,
    pointer: &str,
    json: String,
    encrypt: bool,
) -> LdapAttr {
    LdapAttr {
        object: LdapObject::Data { dn: dn.into() },
        attribute: attribute.into(),
        value: LdapValue::JsonField {
            pointer: pointer.into(),
            json,
        },
        create: Vec::new(),
        redact: vec!["password".into()],
        bump_revision: Some(OXAUTH_DN.into()),
        join: false,
        encrypt,
    }
}

pub(super) fn entry(scope: &Scope, a: LdapAttr, secret: bool) -> Entry {
    Entry {
        path: a.path(),
        scope: scope.clone(),
        content: Content::Ldap(Box::new(a)),
        secret,
        validate: None,
        on_change: Vec::new(),
    }
}

pub(super) fn json(s: &str) -> String {
    serde_json::Value::String(s.into()).to_string()
}

pub(super) fn render(inputs: &Inputs, sorted: &Sorted, out: &mut BTreeMap<String, NodeConfig>) {
    let gluu = sorted.with(Role::Gluu);
    if gluu.is_empty() {
        return;
    }
    let scope = Scope::Container {
        root: inputs.model.gluu_root.clone(),
    };
    let port = replication::LDAPS_PORT;
    let mut servers = vec![format!("localhost:{port}")];
    servers.extend(gluu.iter().map(|n| format!("{}:{port}", ip_of(n))));
    let ldap_url = servers
        .iter()
        .map(|s| format!("ldaps://{s}"))
        .collect::<Vec<_>>()
        .join(" ");
    let (primary, writers) = writers(&gluu, inputs.build);
    let primary = primary.as_str();
    for n in &gluu {
        let cfg = out.entry(n.name.clone()).or_default();
        if writers.contains(&n.name) {
            let provider = match inputs.model.cache {
                Cache::Redis => "REDIS",
                Cache::None => "NATIVE_PERSISTENCE",
            };
            let mut attrs = vec![(
                field(
                    "oxCacheConfiguration",
                    "/cacheProviderType",
                    json(provider),
                    false,
                ),
                false,
            )];
            if inputs.model.cache == Cache::Redis {
                attrs.push((
                    field(
                        "oxCacheConfiguration",
                        "/redisConfiguration/redisProviderType",
                        json("STANDALONE"),
                        false,
                    ),
                    false,
                ));
                attrs.push((
                    field(
                        "oxCacheConfiguration",
                        "/redisConfiguration/servers",
                        json(&format!("localhost:{}", stunnel::PORT)),
                        false,
                    ),
                    false,
                ));
                match inputs.secrets.redis_password.as_deref() {
                    Some(pw) => attrs.push((
                        field(
                            "oxCacheConfiguration",
                            "/redisConfiguration/password",
                            json(pw),
                            true,
                        ),
                        true,
                    )),
                    None => cfg.waiting.push(
                        "oxCacheConfiguration's Redis password waits for the password the controller generates".into(),
                    ),
                }
            }
            attrs.push((
                field(
                    "oxIDPAuthentication",
                    "/config/servers",
                    serde_json::to_string(&servers).unwrap_or_default(),
                    false,
                ),
                false,
            ));
            // oxAuth's own cleaner off: the setting is replicated, so it would be off
            // (or on) on every node alike; the cron job below cleans on one.
            attrs.push((
                field_of(
                    OXAUTH_DN,
                    "oxAuthConfDynamic",
                    "/cleanServiceInterval",
                    "-1".into(),
                    false,
                ),
                false,
            ));
            cfg.entries.extend(
                attrs
                    .into_iter()
                    .map(|(a, secret)| entry(&scope, a, secret)),
            );
        }
        cfg.entries.push(cleaner_cron(&n.name, primary));
        cfg.entries.push(Entry {
            path: SHIBBOLETH_LDAP.into(),
            scope: scope.clone(),
            content: Content::Property {
                key: SHIBBOLETH_KEY.into(),
                value: ldap_url.clone(),
            },
            secret: false,
            validate: None,
            on_change: vec![Action::RestartInstalled {
                services: vec!["idp".into()],
            }],
        });
    }
}

/// The primary among the Gluu nodes `gluu` (sorted by name), and the nodes whose LDAP
/// directory the cluster-wide settings are written to: with replication, the primary
/// alone (the node the others take their directory from; replication carries them);
/// without, every Gluu node's own.
pub(crate) fn writers(gluu: &[&NodeRecord], b: &BuildRecord) -> (String, Vec<String>) {
    let primary = b
        .joined
        .first()
        .filter(|_| b.ldap_replication)
        .map(String::as_str)
        .or_else(|| gluu.iter().find(|n| n.primary).map(|n| n.name.as_str()))
        .or_else(|| gluu.first().map(|n| n.name.as_str()))
        .unwrap_or_default()
        .to_string();
    let writers = if b.ldap_replication {
        vec![primary.clone()]
    } else {
        gluu.iter().map(|n| n.name.clone()).collect()
    };
    (primary, writers)
}

/// `node`'s cron file for the expired-entry cleaner, which runs on `primary` alone
/// (every minute, as oxAuth's own cleaner does by default; a run still working keeps
/// the next one out).
fn cleaner_cron(node: &str, primary: &str) -> Entry {
    let text = if node == primary {
        format!(
            "{HEADER}# Deletes the cluster's expired Gluu entries; runs on this node only, as the\n# primary (oxAuth's own cleaner is off: cleanServiceInterval -1).\nSHELL=/bin/sh\n* * * * * root {} clean-expired >{CLEANER_LOG} 2>&1\n",
            crate::binary::INSTALLED
        )
    } else {
        format!(
            "{HEADER}# The cluster's expired Gluu entries are deleted on {primary}, the primary, not here\n# (oxAuth's own cleaner is off: cleanServiceInterval -1).\n"
        )
    };
    file(CLEANER_CRON, text, 0o644, Vec::new())
}
