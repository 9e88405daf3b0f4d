//! One set of oxAuth keys for the cluster, with Debian's real `keytool` chrooted in
//! each harness host's Gluu container and real slapd holding Gluu's settings: `keys
//! rotate` makes the keys on the primary, every node gets the one keystore, the
//! published keys match it, a token signed with a keystore key verifies against them
//! with a JOSE library (jose, from the npm registry), and rotations follow the
//! schedule: published a rotation before signing, kept while retired.

use std::collections::BTreeSet;

use clustermgr_tests::netns::Host;
use clustermgr_tests::standalone::{SETUP_WEB_KEYS, revision, setting_of, standalone};
use clustermgr_tests::{container, schema, stdout, succeeded as ok};
use serde_json::Value;

const OXAUTH: &str = "ou=oxauth,ou=configuration,o=gluu";

/// The keystore on a host.
const KEYSTORE: &str = "/opt/gluu-server/etc/certs/clustermgr-oxauth-keys.jks";

/// The aliases and certificates (base64 DER, one line) `keytool -list -rfc` shows in
/// `h`'s keystore, opened with `password`.
fn keystore(h: &Host, password: &str) -> Vec<(String, String)> {
    let out = h.sh(&format!(
        "P='{password}' chroot /opt/gluu-server /opt/jre/bin/keytool -list -rfc -keystore /etc/certs/clustermgr-oxauth-keys.jks -storetype JKS -storepass:env P 2>&1"
    ));
    let mut got = Vec::new();
    let mut alias = None;
    let mut der = None::<String>;
    for line in out.lines() {
        if let Some(a) = line.strip_prefix("Alias name: ") {
            alias = Some(a.to_string());
        } else if line.starts_with("-----BEGIN CERTIFICATE") {
            der = Some(String::new());
        } else if line.starts_with("-----END CERTIFICATE") {
            if let (Some(a), Some(d)) = (alias.take(), der.take()) {
                got.push((a, d));
            }
        } else if let Some(d) = der.as_mut() {
            d.push_str(line.trim());
        }
    }
    assert!(!got.is_empty(), "keytool listed nothing: {out}");
    got
}

/// Signs a token with key `kid` of `h`'s keystore and verifies it against `jwks` with
/// jose; panics with jose's words when it does not verify.
fn signs_and_verifies(h: &Host, password: &str, kid: &str, alg: &str, jwks: &Value) {
    h.sh(&format!(
        "set -e; rm -f /opt/gluu-server/tmp/k.p12; P='{password}' chroot /opt/gluu-server /opt/jre/bin/keytool -importkeystore -noprompt \
         -srckeystore /etc/certs/clustermgr-oxauth-keys.jks -srcstoretype JKS -srcalias {kid} -srcstorepass:env P -srckeypass:env P \
         -destkeystore /tmp/k.p12 -deststoretype PKCS12 -deststorepass:env P -destkeypass:env P >/dev/null 2>&1"
    ));
    let key = h.sh(&format!(
        "P='{password}' openssl pkcs12 -in /opt/gluu-server/tmp/k.p12 -nocerts -nodes -passin env:P 2>/dev/null | sed -n '/BEGIN PRIVATE KEY/,/END PRIVATE KEY/p'"
    ));
    assert!(key.contains("BEGIN PRIVATE KEY"), "no key for {kid}: {key}");
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("key.pem"), &key).expect("key");
    std::fs::write(dir.path().join("jwks.json"), jwks.to_string()).expect("jwks");
    let script = r#"
import { importPKCS8, SignJWT, jwtVerify, createLocalJWKSet } from 'jose';
import fs from 'node:fs';
const [keyFile, jwksFile, alg, kid] = process.argv.slice(-4);
const key = await importPKCS8(fs.readFileSync(keyFile, 'utf8'), alg);
const jwt = await new SignJWT({ sub: 'alice' }).setProtectedHeader({ alg, kid })
  .setIssuer('https://idp.example.org').setIssuedAt().setExpirationTime('5m').sign(key);
const { payload, protectedHeader } = await jwtVerify(jwt, createLocalJWKSet(JSON.parse(fs.readFileSync(jwksFile, 'utf8'))), { issuer: 'https://idp.example.org' });
if (payload.sub !== 'alice' || protectedHeader.kid !== kid) { throw new Error('wrong token'); }
console.log('verified');
"#;
    let o = std::process::Command::new("node")
        .current_dir(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("oidc"))
        .args(["--input-type=module", "-e", script, "--"])
        .arg(dir.path().join("key.pem"))
        .arg(dir.path().join("jwks.json"))
        .args([alg, kid])
        .output()
        .expect("node");
    assert!(
        o.status.success() && stdout(&o).contains("verified"),
        "a {alg} token signed with {kid} does not verify against the published keys: {}{}",
        stdout(&o),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// `keys status --json`'s keys: kid to (state, generation).
fn states(view: &Value) -> Vec<(String, String, u64)> {
    view["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .map(|k| {
            (
                k["kid"].as_str().unwrap().to_string(),
                k["state"].as_str().unwrap().to_string(),
                k["generation"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn kids(jwks: &Value) -> BTreeSet<String> {
    jwks["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_keystore_for_every_node_and_published_keys_that_verify_and_rotate_on_schedule() {
    let (net, ctl, servers) = standalone();
    for h in net.hosts() {
        container::java(h);
    }
    // Four algorithms keep the rotations quick; a retired key goes at the rotation
    // after it left the keystore.
    std::fs::write(
        ctl.home.join("controller.toml"),
        "[keys]\nkeep_hours = 0\nalgorithms = [\"RS256\", \"ES256\", \"PS256\", \"RSA-OAEP\"]\n",
    )
    .expect("controller.toml");
    let none = ok(ctl.run(&["keys", "status"]), "keys status before");
    assert!(none.contains("no keys yet"), "{none}");

    let said = ok(ctl.run(&["keys", "rotate"]), "keys rotate");
    assert!(
        said.contains("rotation 1") && said.contains("the keys are published"),
        "{said}"
    );
    // One keystore, byte for byte, on every Gluu node, owned by Gluu's jetty and not
    // open to others.
    let sums: BTreeSet<String> = net
        .hosts()
        .iter()
        .map(|h| h.sh(&format!("sha256sum {KEYSTORE} | cut -d' ' -f1")))
        .collect();
    assert_eq!(sums.len(), 1, "{sums:?}");
    for h in net.hosts() {
        assert_eq!(
            h.sh(&format!("stat -c '%u:%g %a' {KEYSTORE}")).trim(),
            "1001:1001 640"
        );
    }
    // Without replication each node's own directory gets the cluster's keys and key
    // settings, and oxAuth is told to reload.
    let dynamic = setting_of(&servers[0], OXAUTH, "oxAuthConfDynamic");
    assert_eq!(dynamic["keyRegenerationEnabled"], false, "{dynamic}");
    assert_eq!(dynamic["keySelectionStrategy"], "OLDER");
    assert_eq!(dynamic["webKeysStorage"], "keystore");
    assert_eq!(
        dynamic["keyStoreFile"],
        "/etc/certs/clustermgr-oxauth-keys.jks"
    );
    assert_eq!(
        dynamic["issuer"], "https://gluu.example",
        "the rest as Gluu wrote it"
    );
    let password = dynamic["keyStoreSecret"]
        .as_str()
        .expect("keyStoreSecret")
        .to_string();
    assert_ne!(password, "setup-secret");
    for s in &servers {
        assert!(revision(s) > 1, "oxRevision bumped");
        assert_eq!(
            setting_of(s, OXAUTH, "oxAuthConfWebKeys"),
            setting_of(&servers[0], OXAUTH, "oxAuthConfWebKeys")
        );
    }
    let jwks = setting_of(&servers[0], OXAUTH, "oxAuthConfWebKeys");
    assert!(
        !kids(&jwks).contains("setup-key_sig_rs256"),
        "the first rotation replaces the keys Gluu's setup made (was {SETUP_WEB_KEYS})"
    );
    // The keystore lists every key; every published key is a keystore entry, with its
    // certificate; a token each signing key signs verifies against the published set.
    let h1 = net.host("gluu1");
    let store = keystore(h1, &password);
    let aliases: BTreeSet<String> = store.iter().map(|(a, _)| a.clone()).collect();
    assert_eq!(aliases, kids(&jwks), "{jwks}");
    for k in jwks["keys"].as_array().unwrap() {
        let kid = k["kid"].as_str().unwrap();
        let cert = &store.iter().find(|(a, _)| a == kid).unwrap().1;
        assert_eq!(k["x5c"][0].as_str().unwrap(), cert, "{kid}'s certificate");
        let alg = k["alg"].as_str().unwrap();
        assert!(
            kid.ends_with(&format!(
                "_{}_{}",
                k["use"].as_str().unwrap(),
                alg.to_lowercase()
            )),
            "{kid}"
        );
        assert!(k["exp"].as_i64().unwrap() > 0);
        if k["use"] == "sig" {
            signs_and_verifies(h1, &password, kid, alg, &jwks);
        }
    }
    let status = ctl.run(&["keys", "status", "--json"]);
    let view = schema::json(&status, "keys");
    assert_eq!(status.status.code(), Some(0), "{view}");
    for n in view["nodes"].as_array().unwrap() {
        assert_eq!(n["keystore"], "matches", "{n}");
        assert_eq!(n["published"], "matches", "{n}");
    }
    assert!(
        !String::from_utf8_lossy(&status.stdout).contains(&password),
        "the keystore password is never shown"
    );

    // Two more rotations: generation 1 signs until the third retires it; then its
    // signing keys are only published (their tokens still verify) and its encryption
    // key is gone; generation 2 signs, 3 is next.
    let rotated = ctl.run(&["keys", "rotate", "--json"]);
    assert_eq!(schema::json(&rotated, "keys")["generation"], 2);
    let second: Value =
        serde_json::from_slice(&ctl.run(&["keys", "status", "--json"]).stdout).unwrap();
    let by_gen = |v: &Value, state: &str| -> BTreeSet<u64> {
        states(v)
            .into_iter()
            .filter(|(_, s, _)| s == state)
            .map(|(_, _, g)| g)
            .collect()
    };
    assert_eq!(by_gen(&second, "signs"), BTreeSet::from([1]), "{second}");
    assert_eq!(by_gen(&second, "next"), BTreeSet::from([2]));
    ok(ctl.run(&["keys", "rotate"]), "third rotation");
    let third: Value =
        serde_json::from_slice(&ctl.run(&["keys", "status", "--json"]).stdout).unwrap();
    assert_eq!(by_gen(&third, "retired"), BTreeSet::from([1]), "{third}");
    assert_eq!(by_gen(&third, "signs"), BTreeSet::from([2]));
    assert_eq!(by_gen(&third, "next"), BTreeSet::from([3]));
    let jwks = setting_of(&servers[2], OXAUTH, "oxAuthConfWebKeys");
    let published: BTreeSet<String> = states(&third).into_iter().map(|(k, _, _)| k).collect();
    assert_eq!(kids(&jwks), published, "the JWKS is exactly the schedule's");
    assert_eq!(
        published.len(),
        11,
        "3 retired signing keys, 4 signing, 4 next"
    );
    let in_store: BTreeSet<String> = states(&third)
        .into_iter()
        .filter(|(_, s, _)| s != "retired")
        .map(|(k, _, _)| k)
        .collect();
    let h3 = net.host("gluu3");
    let aliases: BTreeSet<String> = keystore(h3, &password)
        .into_iter()
        .map(|(a, _)| a)
        .collect();
    assert_eq!(aliases, in_store, "a retired key has left every keystore");

    // A node whose keystore was changed by hand is named, and status fails.
    net.host("gluu2").sh(&format!("echo tampered > {KEYSTORE}"));
    let o = ctl.run(&["keys", "status"]);
    assert_eq!(o.status.code(), Some(1));
    let text = stdout(&o);
    assert!(
        text.lines()
            .any(|l| l.starts_with("gluu2") && l.contains("differs")),
        "{text}"
    );
    // No rotation stands on a node that lacks the last one; `apply` sends it back.
    let refused = ctl.run(&["keys", "rotate"]);
    assert_eq!(refused.status.code(), Some(1));
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(
        why.contains("rotation 3 has not reached every Gluu node yet (gluu2: keystore differs)"),
        "{why}"
    );
    // And health says so, on that node only (what it holds instead is not told).
    let health = stdout(&ctl.run(&["health"]));
    let says = |node: &str| {
        health
            .lines()
            .any(|l| l.contains(node) && l.contains("oxauth-keys.jks differs from the cluster's"))
    };
    assert!(
        says("gluu2") && !says("gluu1") && !says("gluu3"),
        "{health}"
    );
}
