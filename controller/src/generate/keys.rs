//! oxAuth's keys as desired state, once `keys rotate` has made them: the cluster's
//! keystore in every Gluu node's container (owner `jetty`, who runs oxAuth, group
//! `jetty`, mode 0640: no one else reads it), and on the nodes the cluster-wide settings are written to,
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

/// The cluster's keystore, inside the Gluu container: beside Gluu's own
/// `oxauth-keys.jks`, not over it, so that until `keyStoreFile` and `keyStoreSecret`
/// name it (in the same LDAP change as the keys) oxAuth keeps opening its own file with
/// its own password, whatever reloads it in between.
pub const KEYSTORE: &str = "/etc/certs/clustermgr-oxauth-keys.jks";

/// The attribute holding the published keys.
pub const WEB_KEYS: &str = "oxAuthConfWebKeys";

/// One JWA algorithm oxAuth keys are made for, in keytool's words.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Alg {
    /// The JWA name (`RS256`).
    pub name: &'static str,
    /// `sig` or `enc`.
    pub usage: &'static str,
    /// keytool's `-keyalg`.
    pub key_alg: &'static str,
    /// keytool's `-keysize`.
    pub key_size: u32,
    /// The self-signed certificate's `-sigalg` (as oxAuth's own: RSA keys for
    /// encryption and PS keys get a plain RSA signature, which every Java has).
    pub sig_alg: &'static str,
    /// The EC curve's JWK name.
    pub crv: Option<&'static str>,
}

const fn rsa(name: &'static str, usage: &'static str, sig_alg: &'static str) -> Alg {
    Alg {
        name,
        usage,
        key_alg: "RSA",
        key_size: 2048,
        sig_alg,
        crv: None,
    }
}

const fn ec(name: &'static str, size: u32, sig_alg: &'static str, crv: &'static str) -> Alg {
    Alg {
        name,
        usage: "sig",
        key_alg: "EC",
        key_size: size,
        sig_alg,
        crv: Some(crv),
    }
}

/// Every algorithm a key can be made for.
pub const ALGS: &[Alg] = &[
    rsa("RS256", "sig", "SHA256withRSA"),
    rsa("RS384", "sig", "SHA384withRSA"),
    rsa("RS512", "sig", "SHA512withRSA"),
    ec("ES256", 256, "SHA256withECDSA", "P-256"),
    ec("ES384", 384, "SHA384withECDSA", "P-384"),
    ec("ES512", 521, "SHA512withECDSA", "P-521"),
    rsa("PS256", "sig", "SHA256withRSA"),
    rsa("PS384", "sig", "SHA384withRSA"),
    rsa("PS512", "sig", "SHA512withRSA"),
    rsa("RSA1_5", "enc", "SHA256withRSA"),
    rsa("RSA-OAEP", "enc", "SHA256withRSA"),
];

/// What Gluu's setup makes, and so what a rotation makes unless `[keys] algorithms`
/// says otherwise.
pub const DEFAULT_ALGORITHMS: &[&str] = &[
    "RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "PS256", "PS384", "PS512", "RSA1_5",
    "RSA-OAEP",
];

/// The algorithm named `name`.
pub fn alg(name: &str) -> Option<&'static Alg> {
    ALGS.iter().find(|a| a.name == name)
}

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
    ("/keyStoreFile", "\"/etc/certs/clustermgr-oxauth-keys.jks\""),
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
