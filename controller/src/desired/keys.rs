//! One set of oxAuth keys for the whole cluster, and its rotation (`keys rotate`,
//! `keys status`, and `serve`'s schedule).
//!
//! How oxAuth (4.2.2 and later) picks the key it signs with, from its source
//! (`OxAuthCryptoProvider.getKeyId`, `KeySelectionStrategy`): among the published keys
//! (`oxAuthConfWebKeys`) of the wanted algorithm and use whose `kid` is an alias in its
//! keystore, the one the strategy selects; the default, `OLDER`, takes the smallest
//! `exp`. Nothing checks `exp` against the clock. It verifies with the published keys,
//! and reads both the keystore file and the published keys again only when
//! `oxRevision` increases (polled every 30 s).
//!
//! So a rotation here (each makes one key per configured algorithm, a *generation*):
//! - makes the new generation with a later `exp` than every key before it: it is
//!   published and in the keystore, but does not sign while an older key of its
//!   algorithm is in the keystore;
//! - takes the generation that signed until now out of the keystore (it stays
//!   published, so the tokens it signed still verify) once a newer one is there, so the
//!   generation made at the previous rotation, published for a whole interval, signs;
//! - stops publishing keys that left the keystore at least `keep_hours` ago.
//!
//! After the first rotation the keystore holds one generation (it signs at once: there
//! is nothing older); from the second on, two (the one signing and the next), and the
//! published set also holds the retired ones still kept. A key's `kid` is a new UUID
//! with its use and algorithm (`…_sig_rs256`), as oxAuth names its own, so no two keys
//! ever share one.
//!
//! The keys are made on the primary, by its agent, with the Gluu container's own
//! `keytool` (`Request::KeysMake`): the private keys exist only in the keystore, which
//! goes to the other Gluu nodes as a secret file, as desired state. The published keys
//! are built here from the certificates keytool exports. Delivery is in two steps: the
//! keystore to every Gluu node, then (only once every one has it) the published keys
//! and settings with the `oxRevision` bump, so no node reloads before its keystore is
//! there.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use base64::Engine;
use clustermgr_protocol::changeset::Change;
use clustermgr_protocol::message::{KeyMake, KeysSpec, Reply, Request};
use serde::{Deserialize, Serialize};

use crate::CtlError;
use crate::clock::rfc3339;
use crate::config::KeysConfig;
use crate::ctx::{Ctx, Event};
use crate::generate::keys::{Alg, alg};
use crate::store::{KeyRecord, KeysRecord, NodeRecord, Role};

/// What one rotation does, before the new keys exist.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rotation {
    /// Keys that leave the keystore now (they stay published).
    pub retire: Vec<String>,
    /// Keys no longer published (they left the keystore `keep_hours` ago or more).
    pub drop: Vec<String>,
    /// New keys: kid, algorithm, `exp`.
    pub make: Vec<(String, &'static Alg, i64)>,
}

/// The rotation of `rec` at `now_ms` under `cfg`, with `new_kid` naming each new key.
pub fn plan_rotation(
    rec: &KeysRecord,
    cfg: &KeysConfig,
    now_ms: i64,
    mut new_kid: impl FnMut(&Alg) -> String,
) -> Rotation {
    let in_store: Vec<&KeyRecord> = rec.keys.iter().filter(|k| k.retired_ms.is_none()).collect();
    let newest = in_store.iter().map(|k| k.generation).max();
    // The generations before the newest in the keystore leave it: the newest signs
    // from now on. So do keys of an algorithm no longer configured.
    let retire: Vec<String> = in_store
        .iter()
        .filter(|k| Some(k.generation) != newest || !cfg.algorithms.contains(&k.alg))
        .map(|k| k.kid.clone())
        .collect();
    let keep_ms = i64::try_from(cfg.keep_hours)
        .unwrap_or(i64::MAX / 3_600_000)
        .saturating_mul(3_600_000);
    // An encryption key leaving the keystore is unpublished at once: a client
    // encrypting to it would send what oxAuth can no longer read. A signing key stays
    // for the tokens it signed.
    let encrypts = |k: &KeyRecord| alg(&k.alg).is_some_and(|a| a.usage == "enc");
    let drop = rec
        .keys
        .iter()
        .filter(|k| {
            k.retired_ms
                .is_some_and(|r| r.saturating_add(keep_ms) <= now_ms)
                || (encrypts(k) && retire.contains(&k.kid))
        })
        .map(|k| k.kid.clone())
        .collect();
    let lifetime_ms = i64::try_from(cfg.lifetime_days)
        .unwrap_or(3650)
        .saturating_mul(86_400_000);
    let make = cfg
        .algorithms
        .iter()
        .filter_map(|name| alg(name))
        .map(|a| {
            // Later than every key of its algorithm, whatever the lifetime was then:
            // OLDER must never prefer the new key while an older one is in the keystore.
            let after = rec
                .keys
                .iter()
                .filter(|k| k.alg == a.name)
                .map(|k| k.exp_ms + 1)
                .max()
                .unwrap_or(i64::MIN);
            (
                new_kid(a),
                a,
                (now_ms.saturating_add(lifetime_ms)).max(after),
            )
        })
        .collect();
    Rotation { retire, drop, make }
}

/// A new key id as oxAuth makes its own: a random UUID, its use and algorithm.
fn new_kid(a: &Alg) -> String {
    let mut b: [u8; 16] = crate::password::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = clustermgr_protocol::identity::hex(&b);
    format!(
        "{}-{}-{}-{}-{}_{}_{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32],
        a.usage,
        a.name.to_ascii_lowercase()
    )
}

/// The public JWK of key `kid` from its certificate, as oxAuth publishes its own
/// (`crv` empty for RSA, `exp` in milliseconds, the certificate in `x5c`).
pub fn jwk(kid: &str, a: &Alg, exp_ms: i64, cert_pem: &str) -> Result<serde_json::Value, String> {
    use x509_parser::public_key::PublicKey;
    let b64url = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let (_, pem) = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes())
        .map_err(|e| format!("the certificate of {kid} is not PEM: {e}"))?;
    let (_, cert) = x509_parser::parse_x509_certificate(&pem.contents)
        .map_err(|e| format!("the certificate of {kid} does not parse: {e}"))?;
    let key = cert
        .public_key()
        .parsed()
        .map_err(|e| format!("the public key of {kid} does not parse: {e}"))?;
    let x5c = base64::engine::general_purpose::STANDARD.encode(&pem.contents);
    let mut jwk = serde_json::json!({
        "kid": kid,
        "use": a.usage,
        "alg": a.name,
        "exp": exp_ms,
    });
    let strip = |b: &[u8]| {
        let start = b
            .iter()
            .position(|x| *x != 0)
            .unwrap_or(b.len().saturating_sub(1));
        b[start..].to_vec()
    };
    match (key, a.crv) {
        (PublicKey::RSA(r), None) => {
            jwk["kty"] = "RSA".into();
            jwk["crv"] = "".into();
            jwk["n"] = b64url(&strip(r.modulus)).into();
            jwk["e"] = b64url(&strip(r.exponent)).into();
        }
        (PublicKey::EC(p), Some(crv)) => {
            let len = match crv {
                "P-256" => 32,
                "P-384" => 48,
                _ => 66,
            };
            let d = p.data();
            if d.len() != 1 + 2 * len || d[0] != 4 {
                return Err(format!(
                    "the key of {kid} is not an uncompressed {crv} point ({} bytes)",
                    d.len()
                ));
            }
            jwk["kty"] = "EC".into();
            jwk["crv"] = crv.into();
            jwk["x"] = b64url(&d[1..=len]).into();
            jwk["y"] = b64url(&d[1 + len..]).into();
        }
        _ => return Err(format!("the key of {kid} is not the kind {} needs", a.name)),
    }
    jwk["x5c"] = serde_json::json!([x5c]);
    Ok(jwk)
}

/// `keys status` and `keys rotate`: the keys, and each Gluu node's copy.
#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct KeysView {
    /// What was done, or where things stand, in a sentence.
    pub message: String,
    /// The last rotation's number; 0 before the first.
    pub generation: u64,
    /// When it was.
    pub rotated: Option<String>,
    /// The same, Unix milliseconds.
    pub rotated_ms: Option<i64>,
    /// When `serve` rotates next (null: not by itself, `[keys] interval_hours = 0`, or
    /// before the first rotation).
    pub next_rotation: Option<String>,
    /// The same, Unix milliseconds.
    pub next_rotation_ms: Option<i64>,
    /// Every published key, oldest first.
    pub keys: Vec<KeyView>,
    /// Each Gluu node's keystore and published keys, compared with the cluster's.
    pub nodes: Vec<KeysNodeView>,
}

/// One published key.
#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct KeyView {
    /// Its `kid`.
    pub kid: String,
    /// Its algorithm.
    pub alg: String,
    /// `sig` or `enc`.
    #[serde(rename = "use")]
    pub usage: String,
    /// `signs` (the one oxAuth signs with for its algorithm; `current` for an
    /// encryption key), `next` (published, in the keystore, takes over at the next
    /// rotation), `retired` (published only, for the tokens it signed).
    pub state: String,
    /// The rotation that made it.
    pub generation: u64,
    /// When it was made.
    pub made: String,
    /// The same, Unix milliseconds.
    pub made_ms: i64,
    /// Its `exp`.
    pub expires: String,
    /// The same, Unix milliseconds.
    pub exp_ms: i64,
    /// When a retired key stops being published (at the first rotation from then on).
    pub published_until: Option<String>,
}

/// One Gluu node's copy of the keys.
#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct KeysNodeView {
    /// The node.
    pub node: String,
    /// `matches`, `differs`, `missing` or `unreachable`.
    pub keystore: String,
    /// On the nodes the cluster-wide settings are written to: whether the published
    /// keys and key settings are the cluster's (`matches`, `differs`, `unreachable`);
    /// null elsewhere.
    pub published: Option<String>,
    /// What went wrong, when something did.
    pub detail: Option<String>,
}

/// One node's keys as `compare` found them.
fn node_view(
    node: String,
    compared: Result<Vec<(clustermgr_protocol::changeset::Entry, Change)>, String>,
) -> KeysNodeView {
    let word = |c: Change| match c {
        Change::Unchanged => "matches",
        Change::Create | Change::Waiting => "missing",
        Change::Modify | Change::Metadata => "differs",
    };
    match compared {
        Err(why) => KeysNodeView {
            node,
            keystore: "unreachable".into(),
            published: None,
            detail: Some(why),
        },
        Ok(list) => {
            let keystore = list
                .iter()
                .find(|(e, _)| crate::generate::keys::is_keystore(e))
                .map_or("missing", |(_, c)| word(*c));
            let settings: Vec<Change> = list
                .iter()
                .filter(|(e, _)| !crate::generate::keys::is_keystore(e))
                .map(|(_, c)| *c)
                .collect();
            let published = (!settings.is_empty()).then(|| {
                if settings.iter().all(|c| *c == Change::Unchanged) {
                    "matches"
                } else {
                    "differs"
                }
            });
            KeysNodeView {
                node,
                keystore: keystore.into(),
                published: published.map(str::to_string),
                detail: None,
            }
        }
    }
}

/// The state each key is in: for each algorithm the key in the keystore with the
/// smallest `exp` signs.
fn states(rec: &KeysRecord) -> BTreeMap<String, &'static str> {
    let mut signer: BTreeMap<&str, (&str, i64)> = BTreeMap::new();
    for k in rec.keys.iter().filter(|k| k.retired_ms.is_none()) {
        let e = signer.entry(&k.alg).or_insert((&k.kid, k.exp_ms));
        if k.exp_ms < e.1 {
            *e = (&k.kid, k.exp_ms);
        }
    }
    rec.keys
        .iter()
        .map(|k| {
            let state = if k.retired_ms.is_some() {
                "retired"
            } else if signer.get(k.alg.as_str()).is_some_and(|(s, _)| *s == k.kid) {
                // An encryption key is the one clients encrypt to; it signs nothing.
                if alg(&k.alg).is_some_and(|a| a.usage == "enc") {
                    "current"
                } else {
                    "signs"
                }
            } else {
                "next"
            };
            (k.kid.clone(), state)
        })
        .collect()
}

fn ms_text(ms: i64) -> String {
    rfc3339(ms.div_euclid(1000))
}

fn key_views(rec: &KeysRecord, cfg: &KeysConfig) -> Vec<KeyView> {
    let states = states(rec);
    let keep_ms = i64::try_from(cfg.keep_hours)
        .unwrap_or(0)
        .saturating_mul(3_600_000);
    rec.keys
        .iter()
        .map(|k| KeyView {
            kid: k.kid.clone(),
            alg: k.alg.clone(),
            usage: alg(&k.alg).map_or("sig", |a| a.usage).into(),
            state: states.get(&k.kid).copied().unwrap_or("next").into(),
            generation: k.generation,
            made: ms_text(k.made_ms),
            made_ms: k.made_ms,
            expires: ms_text(k.exp_ms),
            exp_ms: k.exp_ms,
            published_until: k.retired_ms.map(|r| ms_text(r.saturating_add(keep_ms))),
        })
        .collect()
}

/// When `serve` rotates next: an interval after the last rotation, once there was one.
pub fn next_rotation_ms(rec: &KeysRecord, cfg: &KeysConfig) -> Option<i64> {
    (rec.generation > 0 && cfg.interval_hours > 0).then(|| {
        rec.rotated_ms
            .saturating_add((cfg.interval_hours as i64).saturating_mul(3_600_000))
    })
}

/// The Gluu nodes, by name, and the primary among them.
fn gluu_nodes(ctx: &Ctx) -> Result<(Vec<NodeRecord>, String, Vec<String>), CtlError> {
    let mut gluu: Vec<NodeRecord> = ctx
        .store
        .nodes()?
        .into_iter()
        .filter(|n| n.has_role(Role::Gluu))
        .collect();
    gluu.sort_by(|a, b| a.name.cmp(&b.name));
    if gluu.is_empty() {
        return Err(CtlError::KeysUnavailable {
            why: "the cluster has no Gluu node; add one with `clustermgr node add`".into(),
        });
    }
    let refs: Vec<&NodeRecord> = gluu.iter().collect();
    let (primary, writers) = crate::generate::gluu_settings::writers(&refs, &ctx.store.build()?);
    Ok((gluu, primary, writers))
}

/// How long the primary may take to make the keys (a JVM per key).
const MAKE_TIMEOUT: Duration = Duration::from_secs(300);

/// `keys rotate` (and `serve`'s schedule): a new generation made on the primary, the
/// retired and dropped keys taken out, the keystore delivered to every Gluu node, then
/// the published keys.
pub async fn rotate(
    ctx: &Ctx,
    user: &str,
    within: Duration,
    events: &tokio::sync::mpsc::Sender<Event>,
) -> Result<KeysView, CtlError> {
    let cfg = crate::config::ControllerConfig::load(&ctx.home.config())?.keys;
    let (gluu, primary, writers) = gluu_nodes(ctx)?;
    let root = ctx.store.model()?.gluu_root;
    let rec = ctx.store.keys()?;
    if rec.generation > 0 {
        // Each rotation stands on the last having reached every node: otherwise a
        // generation would sign without having been published, or a node would keep
        // signing with a key no longer published.
        let behind: Vec<String> = super::compare(ctx, &gluu, crate::generate::keys::is_keys_entry)
            .await?
            .into_iter()
            .map(|(node, c)| node_view(node, c))
            .filter(|v| {
                v.keystore != "matches" || v.published.as_deref().is_some_and(|p| p != "matches")
            })
            .map(|v| match v.published.as_deref() {
                Some(p) if p != "matches" => {
                    format!("{}: keystore {}, published keys {p}", v.node, v.keystore)
                }
                _ => format!("{}: keystore {}", v.node, v.keystore),
            })
            .collect();
        if !behind.is_empty() {
            return Err(CtlError::KeysRefused {
                why: format!(
                    "rotation {} has not reached every Gluu node yet ({}); run `clustermgr apply` (or let `serve` send it when the node is back), then rotate. A node gone for good leaves with `clustermgr node remove`",
                    rec.generation,
                    behind.join("; ")
                ),
            });
        }
    }
    let now = ctx.clock.unix_ms();
    let rotation = plan_rotation(&rec, &cfg, now, new_kid);
    let password = match &rec.password {
        Some(p) => p.clone(),
        None => super::new_password()?,
    };
    let failed = |why: String| CtlError::KeysMaking {
        node: primary.clone(),
        why,
    };
    let node = gluu
        .iter()
        .find(|n| n.name == primary)
        .ok_or_else(|| failed("it is no longer in the inventory".into()))?;
    super::working(
        events,
        &format!("make {} keys", rotation.make.len()),
        std::slice::from_ref(&primary),
    )
    .await;
    let spec = KeysSpec {
        root,
        keystore: rec.keystore.clone(),
        password: password.clone(),
        delete: rotation.retire.clone(),
        make: rotation
            .make
            .iter()
            .map(|(kid, a, exp_ms)| KeyMake {
                alias: kid.clone(),
                key_alg: a.key_alg.into(),
                key_size: a.key_size,
                sig_alg: a.sig_alg.into(),
                validity_days: u32::try_from((exp_ms - now).div_euclid(86_400_000) + 1)
                    .unwrap_or(u32::MAX),
            })
            .collect(),
    };
    let link = ctx
        .link(node, within)
        .await
        .map_err(|f| failed(f.message))?;
    let made = super::ask(
        link.as_ref(),
        &Request::KeysMake(spec),
        MAKE_TIMEOUT,
        |r| match r {
            Reply::KeysMade(m) => Ok(m),
            other => Err(other),
        },
    )
    .await;
    super::part_done(events, &primary, made.as_ref().err().map(String::as_str)).await;
    let made = made.map_err(failed)?;
    // The keystore must hold exactly the keys still in it and the new ones.
    let want: BTreeSet<String> = rec
        .keys
        .iter()
        .filter(|k| k.retired_ms.is_none() && !rotation.retire.contains(&k.kid))
        .map(|k| k.kid.clone())
        .chain(rotation.make.iter().map(|(kid, _, _)| kid.clone()))
        .collect();
    let got: BTreeSet<String> = made.certs.iter().map(|(a, _)| a.clone()).collect();
    if want != got {
        return Err(failed(format!(
            "the keystore it made holds {} where {} were expected; nothing was changed",
            got.into_iter().collect::<Vec<_>>().join(", "),
            want.into_iter().collect::<Vec<_>>().join(", ")
        )));
    }
    let mut new_keys = Vec::new();
    for (kid, a, exp_ms) in &rotation.make {
        let pem = made
            .certs
            .iter()
            .find(|(alias, _)| alias == kid)
            .map(|(_, p)| p.as_str())
            .unwrap_or_default();
        let jwk = jwk(kid, a, *exp_ms, pem).map_err(failed)?;
        new_keys.push(KeyRecord {
            kid: kid.clone(),
            alg: a.name.into(),
            generation: rec.generation + 1,
            made_ms: now,
            exp_ms: *exp_ms,
            retired_ms: None,
            jwk: jwk.to_string(),
        });
    }
    let generation = ctx.store.update_keys(|r| {
        if r.generation != rec.generation {
            return Err(CtlError::KeysRefused {
                why: format!(
                    "another rotation (number {}) finished while this one was making its keys; nothing of this one was kept (`clustermgr keys status` shows the keys)",
                    r.generation
                ),
            });
        }
        r.keys.retain(|k| !rotation.drop.contains(&k.kid));
        for k in r.keys.iter_mut() {
            if rotation.retire.contains(&k.kid) {
                k.retired_ms = Some(now);
            }
        }
        r.keys.extend(new_keys);
        r.keystore = made.keystore;
        r.password = Some(password);
        r.generation += 1;
        r.rotated_ms = now;
        Ok(r.generation)
    })?;
    let said = format!(
        "rotation {generation}: made {} keys on {primary}, retired {}, stopped publishing {}",
        rotation.make.len(),
        rotation.retire.len(),
        rotation.drop.len()
    );
    let kept = |e: CtlError| CtlError::KeysRefused {
        why: format!(
            "rotation {generation} was made and kept, but {e}; `clustermgr apply` delivers it"
        ),
    };
    ctx.audited(
        user,
        "keys rotate",
        std::slice::from_ref(&primary),
        &said,
        "done",
    )
    .map_err(kept)?;
    tracing::info!("{said}");
    // The keystore first, everywhere; the published keys only once every node has it.
    let names: Vec<String> = gluu.iter().map(|n| n.name.clone()).collect();
    super::working(events, "send the keystore", &names).await;
    let mut problems = BTreeMap::new();
    for (node, outcome) in super::deliver(ctx, &gluu, crate::generate::keys::is_keystore)
        .await
        .map_err(kept)?
    {
        super::part_done(events, &node, outcome.as_deref()).await;
        if let Some(why) = outcome {
            problems.insert(node, why);
        }
    }
    let message = if problems.is_empty() {
        let targets: Vec<NodeRecord> = gluu
            .iter()
            .filter(|n| writers.contains(&n.name))
            .cloned()
            .collect();
        super::working(events, "publish the keys", &writers).await;
        for (node, outcome) in super::deliver(ctx, &targets, crate::generate::keys::is_keys_entry)
            .await
            .map_err(kept)?
        {
            super::part_done(events, &node, outcome.as_deref()).await;
            if let Some(why) = outcome {
                problems.insert(node, why);
            }
        }
        if problems.is_empty() {
            format!("{said}; every Gluu node has the keystore, and the keys are published")
        } else {
            format!(
                "{said}; every Gluu node has the keystore, but publishing failed; `clustermgr apply` publishes them"
            )
        }
    } else {
        format!(
            "{said}; the new keys are not published yet, since not every Gluu node took the keystore (oxAuth keeps signing with the keys it has); `clustermgr apply` sends it and publishes them"
        )
    };
    let mut view = status_view(ctx, &cfg, message).await.map_err(kept)?;
    for n in view.nodes.iter_mut() {
        if let Some(why) = problems.remove(&n.node) {
            n.detail = Some(why);
        }
    }
    Ok(view)
}

/// `keys status`.
pub async fn status(ctx: &Ctx) -> Result<KeysView, CtlError> {
    let cfg = crate::config::ControllerConfig::load(&ctx.home.config())?.keys;
    let rec = ctx.store.keys()?;
    let message = if rec.generation == 0 {
        "no keys yet: `clustermgr keys rotate` makes the cluster's first on the primary".into()
    } else {
        format!(
            "{} keys published; rotation {} was the last",
            rec.keys.len(),
            rec.generation
        )
    };
    status_view(ctx, &cfg, message).await
}

async fn status_view(ctx: &Ctx, cfg: &KeysConfig, message: String) -> Result<KeysView, CtlError> {
    let rec = ctx.store.keys()?;
    let nodes = if rec.generation == 0 {
        Vec::new()
    } else {
        let (gluu, _, _) = gluu_nodes(ctx)?;
        super::compare(ctx, &gluu, crate::generate::keys::is_keys_entry)
            .await?
            .into_iter()
            .map(|(node, compared)| node_view(node, compared))
            .collect()
    };
    Ok(KeysView {
        message,
        generation: rec.generation,
        rotated: (rec.generation > 0).then(|| ms_text(rec.rotated_ms)),
        rotated_ms: (rec.generation > 0).then_some(rec.rotated_ms),
        next_rotation: next_rotation_ms(&rec, cfg).map(ms_text),
        next_rotation_ms: next_rotation_ms(&rec, cfg),
        keys: key_views(&rec, cfg),
        nodes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(interval: u64, keep: u64) -> KeysConfig {
        KeysConfig {
            interval_hours: interval,
            keep_hours: keep,
            lifetime_days: 30,
            algorithms: vec!["RS256".into(), "ES256".into()],
        }
    }

    /// Applies `r` to `rec` the way `rotate` does.
    fn rotated(mut rec: KeysRecord, r: &Rotation, now: i64) -> KeysRecord {
        rec.keys.retain(|k| !r.drop.contains(&k.kid));
        for k in rec.keys.iter_mut() {
            if r.retire.contains(&k.kid) {
                k.retired_ms = Some(now);
            }
        }
        rec.generation += 1;
        for (kid, a, exp_ms) in &r.make {
            rec.keys.push(KeyRecord {
                kid: kid.clone(),
                alg: a.name.into(),
                generation: rec.generation,
                made_ms: now,
                exp_ms: *exp_ms,
                retired_ms: None,
                jwk: String::new(),
            });
        }
        rec.rotated_ms = now;
        rec
    }

    fn rotate_n(c: &KeysConfig, times: &[i64]) -> KeysRecord {
        let mut rec = KeysRecord::default();
        let mut n = 0;
        for &t in times {
            let r = plan_rotation(&rec, c, t, |a| {
                n += 1;
                format!("k{n}_{}", a.name)
            });
            rec = rotated(rec, &r, t);
        }
        rec
    }

    fn by_state(rec: &KeysRecord) -> BTreeMap<&'static str, Vec<u64>> {
        let s = states(rec);
        let mut out: BTreeMap<&'static str, Vec<u64>> = BTreeMap::new();
        for k in &rec.keys {
            out.entry(s[&k.kid]).or_default().push(k.generation);
        }
        out.values_mut().for_each(|v| v.dedup());
        out
    }

    const H: i64 = 3_600_000;

    #[test]
    fn the_first_generation_signs_at_once_and_each_later_one_is_published_an_interval_before_it_signs()
     {
        let c = cfg(48, 24);
        let one = rotate_n(&c, &[0]);
        assert_eq!(by_state(&one), BTreeMap::from([("signs", vec![1])]));
        let two = rotate_n(&c, &[0, 48 * H]);
        assert_eq!(
            by_state(&two),
            BTreeMap::from([("signs", vec![1]), ("next", vec![2])])
        );
        let three = rotate_n(&c, &[0, 48 * H, 96 * H]);
        assert_eq!(
            by_state(&three),
            BTreeMap::from([("retired", vec![1]), ("signs", vec![2]), ("next", vec![3])])
        );
        // Generation 1 left the keystore at 96 h, kept 24 h: gone at the next rotation.
        let four = rotate_n(&c, &[0, 48 * H, 96 * H, 144 * H]);
        assert_eq!(
            by_state(&four),
            BTreeMap::from([("retired", vec![2]), ("signs", vec![3]), ("next", vec![4])])
        );
    }

    #[test]
    fn a_retired_key_stays_published_for_keep_hours_however_soon_the_next_rotation_comes() {
        let c = cfg(48, 24);
        // Rotations by hand, an hour apart: generation 1 retired at 2 h stays.
        let rec = rotate_n(&c, &[0, H, 2 * H, 3 * H]);
        let s = by_state(&rec);
        assert_eq!(s["retired"], vec![1, 2], "{s:?}");
        let later = rotate_n(&c, &[0, H, 2 * H, 3 * H, 27 * H]);
        assert_eq!(
            by_state(&later)["retired"],
            vec![3],
            "1 and 2 were kept long enough"
        );
    }

    #[test]
    fn a_new_key_expires_after_every_older_key_of_its_algorithm_even_with_a_shorter_lifetime() {
        let long = KeysConfig {
            lifetime_days: 365,
            ..cfg(48, 24)
        };
        let rec = rotate_n(&long, &[0]);
        let short = cfg(48, 24);
        let r = plan_rotation(&rec, &short, H, |a| format!("new_{}", a.name));
        for (_, a, exp) in &r.make {
            let old = rec.keys.iter().find(|k| k.alg == a.name).unwrap();
            assert!(*exp > old.exp_ms, "{} would sign before its time", a.name);
        }
    }

    #[test]
    fn an_encryption_key_is_unpublished_as_it_leaves_the_keystore() {
        let c = KeysConfig {
            algorithms: vec!["RS256".into(), "RSA-OAEP".into()],
            ..cfg(48, 24)
        };
        let rec = rotate_n(&c, &[0, 48 * H, 96 * H]);
        let retired: Vec<&str> = rec
            .keys
            .iter()
            .filter(|k| k.retired_ms.is_some())
            .map(|k| k.alg.as_str())
            .collect();
        assert_eq!(retired, vec!["RS256"], "{rec:?}");
        assert_eq!(rec.keys.iter().filter(|k| k.alg == "RSA-OAEP").count(), 2);
    }

    #[test]
    fn an_algorithm_no_longer_configured_leaves_the_keystore() {
        let rec = rotate_n(&cfg(48, 24), &[0]);
        let only_rs = KeysConfig {
            algorithms: vec!["RS256".into()],
            ..cfg(48, 24)
        };
        let r = plan_rotation(&rec, &only_rs, H, |a| format!("new_{}", a.name));
        assert_eq!(r.retire, vec!["k2_ES256".to_string()]);
        assert_eq!(r.make.len(), 1);
    }

    #[test]
    fn key_ids_are_uuids_with_use_and_algorithm_and_never_repeat() {
        let a = alg("RSA-OAEP").unwrap();
        let k = new_kid(a);
        assert!(k.ends_with("_enc_rsa-oaep"), "{k}");
        assert_eq!(k.len(), 36 + "_enc_rsa-oaep".len());
        assert_ne!(k, new_kid(a));
    }

    #[test]
    fn the_configuration_is_checked() {
        assert!(crate::config::check_keys(&KeysConfig::default()).is_ok());
        let bad = |c: KeysConfig| crate::config::check_keys(&c).unwrap_err();
        assert!(
            bad(KeysConfig {
                algorithms: vec!["HS256".into()],
                ..KeysConfig::default()
            })
            .contains("HS256")
        );
        assert!(
            bad(KeysConfig {
                lifetime_days: 3,
                ..KeysConfig::default()
            })
            .contains("120 hours")
        );
    }
}
