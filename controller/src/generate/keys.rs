//! oxAuth's keys as desired state, once `keys rotate` has made them: the cluster's
//! keystore in every Gluu node's container (owner `jetty`, who runs oxAuth; readable
//! by its group, writable by no one else, since oxAuth no longer writes it once its
//! own regeneration is off), and on the nodes the cluster-wide settings are written to,
//! the published keys (`oxAuthConfWebKeys`) and the key settings of
//! `oxAuthConfDynamic`: regeneration off, keys from the keystore, its file and
//! password, and the `OLDER` strategy the rotation schedule relies on. Each bumps
//! `oxRevision`, the only thing that makes oxAuth reload its keystore and keys.

use std::collections::BTreeMap;

use clustermgr_protocol::changeset::{Content, Entry, Scope};

use super::NodeConfig;
use super::gluu_settings::{OXAUTH_DN, entry, field_of, json, writers};
use crate::model::ClusterModel;
use crate::store::{BuildRecord, KeysRecord, NodeRecord, Role};

/// The keystore, inside the Gluu container.
pub const KEYSTORE: &str = "/etc/certs/oxauth-keys.jks";

/// The attribute holding the published keys.
pub const WEB_KEYS: &str = "oxAuthConfWebKeys";

/// Whether `e` is one of the entries this module makes: what a rotation delivers.
pub fn is_keys_entry(e: &Entry) -> bool {
    match &e.content {
        Content::Ldap(a) => {
            a.attribute == WEB_KEYS
                || (a.attribute == "oxAuthConfDynamic"
                    && e.path
                        .rsplit_once('#')
                        .is_some_and(|(_, p)| SETTINGS.iter().any(|(k, _)| *k == p)))
        }
        _ => e.path == KEYSTORE && matches!(e.scope, Scope::Container { .. }),
    }
}

/// Whether `e` is the keystore entry.
pub fn is_keystore(e: &Entry) -> bool {
    e.path == KEYSTORE && matches!(e.content, Content::File { .. })
}

/// The fixed key settings of `oxAuthConfDynamic`, by JSON pointer (the password is
/// added beside them).
const SETTINGS: &[(&str, &str)] = &[
    ("/keyRegenerationEnabled", "false"),
    ("/webKeysStorage", "\"keystore\""),
    ("/keyStoreFile", "\"/etc/certs/oxauth-keys.jks\""),
    ("/keySelectionStrategy", "\"OLDER\""),
    ("/keyStoreSecret", ""),
];

/// Adds the keys' entries to every Gluu node's configuration in `out`.
pub fn render(
    model: &ClusterModel,
    build: &BuildRecord,
    nodes: &[NodeRecord],
    keys: &KeysRecord,
    out: &mut BTreeMap<String, NodeConfig>,
) {
    let (Some(password), false) = (keys.password.as_deref(), keys.keystore.is_empty()) else {
        return;
    };
    let mut gluu: Vec<&NodeRecord> = nodes.iter().filter(|n| n.has_role(Role::Gluu)).collect();
    gluu.sort_by(|a, b| a.name.cmp(&b.name));
    let (_, writers) = writers(&gluu, build);
    let scope = Scope::Container {
        root: model.gluu_root.clone(),
    };
    let published: Vec<serde_json::Value> = keys
        .keys
        .iter()
        .filter_map(|k| serde_json::from_str(&k.jwk).ok())
        .collect();
    for n in gluu {
        let cfg = out.entry(n.name.clone()).or_default();
        cfg.entries.push(Entry {
            path: KEYSTORE.into(),
            scope: scope.clone(),
            content: Content::File {
                bytes: keys.keystore.clone(),
                mode: 0o640,
                owner: Some("jetty".into()),
                group: Some("jetty".into()),
            },
            secret: true,
            validate: None,
            on_change: Vec::new(),
        });
        if !writers.contains(&n.name) {
            continue;
        }
        let mut web_keys = field_of(
            OXAUTH_DN,
            WEB_KEYS,
            "/keys",
            serde_json::Value::Array(published.clone()).to_string(),
            false,
        );
        web_keys.redact.clear();
        cfg.entries.push(entry(&scope, web_keys, false));
        for (pointer, value) in SETTINGS {
            let secret = *pointer == "/keyStoreSecret";
            let value = if secret {
                json(password)
            } else {
                value.to_string()
            };
            let attr = field_of(OXAUTH_DN, "oxAuthConfDynamic", pointer, value, false);
            cfg.entries.push(entry(&scope, attr, secret));
        }
    }
}
