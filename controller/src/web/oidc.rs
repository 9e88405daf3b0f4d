//! Login through OpenID Connect (`[web.oidc]`): the authorization code flow with PKCE
//! against the cluster's own Gluu server or any OpenID provider, no oxd. Issuer
//! discovery; a state, nonce and PKCE verifier per login, bound to the browser by a
//! cookie and used once; the ID token's signature (RS256 or ES256, by the provider's
//! published keys), issuer, audience, authorized party, nonce, expiry and issue time
//! checked; the role from a configured claim (the existing Cluster Manager admits
//! `clusteradmin` in `role`). The client secret is read from an owner-only file.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;

use crate::access::UserRole;
pub use crate::config::OidcConfig;
use crate::web::session::{make_room, random_text};

/// How long a login may take between leaving for the provider and coming back.
pub const PENDING_FOR: Duration = Duration::from_secs(600);
/// The most logins in progress at once (the oldest goes first past it).
const MAX_PENDING: usize = 1024;
/// Clock skew allowed between the provider and this machine.
const SKEW_SECS: i64 = 120;
/// How long discovery and the provider's keys are kept before they are fetched again.
const REFRESH: Duration = Duration::from_secs(3600);
/// The largest document read from the provider.
const MAX_DOC: usize = 256 * 1024;

/// Why a login through the provider failed: said to the person, logged for the admin.
#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    /// The provider could not be reached or answered badly.
    #[error("the OpenID provider {issuer}: {why}")]
    Provider {
        /// Its issuer.
        issuer: String,
        /// What went wrong.
        why: String,
    },
    /// The callback does not belong to a login begun here (replayed, expired, forged).
    #[error(
        "this login was not begun here, was already used, or took longer than 10 minutes; log in again"
    )]
    UnknownState,
    /// The ID token failed a check.
    #[error("the ID token was refused: {0}")]
    Token(String),
    /// The person has no role clustermgr knows.
    #[error(
        "{name} has no role here: the provider's {claim} claim says {said}; an admin maps values to roles in [web.oidc] roles"
    )]
    NoRole {
        /// The person.
        name: String,
        /// The claim.
        claim: String,
        /// What it held.
        said: String,
    },
}

/// A login in progress.
#[derive(Debug)]
struct Pending {
    nonce: String,
    verifier: String,
    started: Instant,
}

/// The provider's endpoints and keys, fetched when needed.
#[derive(Debug, Clone)]
struct Discovered {
    authorization_endpoint: String,
    token_endpoint: String,
    keys: Vec<Value>,
    fetched: Instant,
}

/// The OpenID Connect side of the console.
#[derive(Debug)]
pub struct Oidc {
    cfg: OidcConfig,
    pending: Mutex<HashMap<String, Pending>>,
    discovered: tokio::sync::Mutex<Option<Discovered>>,
}

/// Who logged in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Person {
    /// Their name, from the name claim.
    pub name: String,
    /// Their role, from the role claim.
    pub role: UserRole,
}

/// `application/x-www-form-urlencoded` of `pairs`.
fn form(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

impl Oidc {
    /// The provider of `cfg`.
    pub fn new(cfg: OidcConfig) -> Oidc {
        Oidc {
            cfg,
            pending: Mutex::default(),
            discovered: tokio::sync::Mutex::new(None),
        }
    }

    /// Its issuer.
    pub fn issuer(&self) -> &str {
        &self.cfg.issuer
    }

    fn provider(&self, why: impl Into<String>) -> OidcError {
        OidcError::Provider {
            issuer: self.cfg.issuer.clone(),
            why: why.into(),
        }
    }

    /// Whether the configured issuer may be used (see [`Oidc::secure`]).
    pub fn check_issuer(&self) -> Result<(), OidcError> {
        self.secure(&self.cfg.issuer, "issuer").map(drop)
    }

    /// Refuses an endpoint that is neither https nor on this machine: over plain http,
    /// anyone on the path could rewrite the token endpoint (and receive the client's
    /// secret) or the keys (and sign their own admin's ID token).
    fn secure(&self, url: &str, what: &str) -> Result<crate::http::Target, OidcError> {
        let t = crate::http::Target::parse(url, "[web.oidc] issuer", 80, "/")
            .map_err(|e| self.provider(e.to_string()))?;
        let host = t.host.trim_start_matches('[').trim_end_matches(']');
        let local = host == "localhost"
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|a| a.is_loopback());
        if t.tls || local {
            Ok(t)
        } else {
            Err(self.provider(format!(
                "its {what} {url} is plain http to another machine, where anyone on the path could change it; the provider must use https (http is accepted only on loopback)"
            )))
        }
    }

    async fn get_json(&self, url: &str, what: &str) -> Result<Value, OidcError> {
        let t = self.secure(url, what)?;
        let (code, body) = crate::http::fetch(&t, "GET", &[], b"", MAX_DOC)
            .await
            .map_err(|e| self.provider(format!("GET {url}: {e}")))?;
        if code != 200 {
            return Err(self.provider(format!("GET {url} answered {code}")));
        }
        serde_json::from_slice(&body).map_err(|e| self.provider(format!("{url}: {e}")))
    }

    /// The provider's endpoints and keys, fetched again past [`REFRESH`] or with `fresh`.
    async fn discover(&self, fresh: bool) -> Result<Discovered, OidcError> {
        let mut d = self.discovered.lock().await;
        if let Some(found) = d.as_ref()
            && !fresh
            && found.fetched.elapsed() < REFRESH
        {
            return Ok(found.clone());
        }
        let url = format!(
            "{}/.well-known/openid-configuration",
            self.cfg.issuer.trim_end_matches('/')
        );
        let doc = self.get_json(&url, "issuer").await?;
        if doc["issuer"].as_str() != Some(self.cfg.issuer.as_str()) {
            return Err(self.provider(format!(
                "its discovery document names the issuer {}, not {}",
                doc["issuer"], self.cfg.issuer
            )));
        }
        let field = |k: &str| {
            doc[k]
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| self.provider(format!("its discovery document has no {k}")))
        };
        let jwks_uri = field("jwks_uri")?;
        let keys = self.get_json(&jwks_uri, "jwks_uri").await?["keys"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let authorization_endpoint = field("authorization_endpoint")?;
        let token_endpoint = field("token_endpoint")?;
        self.secure(&authorization_endpoint, "authorization_endpoint")?;
        self.secure(&token_endpoint, "token_endpoint")?;
        let found = Discovered {
            authorization_endpoint,
            token_endpoint,
            keys,
            fetched: Instant::now(),
        };
        *d = Some(found.clone());
        Ok(found)
    }

    /// Begins a login: the provider URL to send the browser to, and the state for the
    /// browser's cookie.
    pub async fn begin(&self) -> Result<(String, String), OidcError> {
        let d = self.discover(false).await?;
        let state = random_text();
        let nonce = random_text();
        let verifier = random_text();
        let challenge = URL_SAFE_NO_PAD.encode(ring::digest::digest(
            &ring::digest::SHA256,
            verifier.as_bytes(),
        ));
        {
            let mut p = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            p.retain(|_, v| v.started.elapsed() < PENDING_FOR);
            make_room(&mut p, MAX_PENDING, |v| v.started);
            p.insert(
                state.clone(),
                Pending {
                    nonce: nonce.clone(),
                    verifier,
                    started: Instant::now(),
                },
            );
        }
        let scope = self.cfg.scopes.join(" ");
        let query = form(&[
            ("response_type", "code"),
            ("client_id", &self.cfg.client_id),
            ("redirect_uri", &self.cfg.redirect_uri),
            ("scope", &scope),
            ("state", &state),
            ("nonce", &nonce),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
        ]);
        let sep = if d.authorization_endpoint.contains('?') {
            '&'
        } else {
            '?'
        };
        Ok((format!("{}{sep}{query}", d.authorization_endpoint), state))
    }

    /// Finishes a login: the callback's `code` and `state`, and the state the browser's
    /// cookie holds. The state is used up whatever happens next.
    pub async fn finish(
        &self,
        code: &str,
        state: &str,
        cookie_state: Option<&str>,
        now_secs: i64,
    ) -> Result<Person, OidcError> {
        // The browser's cookie first: a callback without it (someone else's, or forged)
        // must not use up the login it names.
        if cookie_state.is_none_or(|c| !crate::web::session::same(c, state)) {
            return Err(OidcError::UnknownState);
        }
        let pending = self
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(state)
            .filter(|p| p.started.elapsed() < PENDING_FOR)
            .ok_or(OidcError::UnknownState)?;
        let d = self.discover(false).await?;
        let secret = match &self.cfg.client_secret_file {
            Some(f) => Some(zeroize::Zeroizing::new(
                crate::passphrase::from_file(f)
                    .map_err(|e| {
                        tracing::error!("[web.oidc] client_secret_file: {e}");
                        self.provider(format!(
                            "the console's client secret ({}) cannot be used; serve's log says why",
                            f.display()
                        ))
                    })?
                    .to_string(),
            )),
            None => None,
        };
        let mut pairs = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", self.cfg.redirect_uri.as_str()),
            ("code_verifier", pending.verifier.as_str()),
        ];
        if secret.is_none() {
            pairs.push(("client_id", self.cfg.client_id.as_str()));
        }
        let body = form(&pairs);
        let basic = secret.as_ref().map(|s| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!(
                    "{}:{}",
                    encode(&self.cfg.client_id),
                    encode(s)
                ))
            )
        });
        let t = crate::http::Target::parse(&d.token_endpoint, "the token endpoint", 80, "/")
            .map_err(|e| self.provider(e.to_string()))?;
        if secret.is_some() && !t.private() {
            return Err(self.provider(
                "its token endpoint is plain http to another host: the client secret would cross the network in the clear",
            ));
        }
        let mut headers = vec![("Content-Type", "application/x-www-form-urlencoded")];
        if let Some(b) = &basic {
            headers.push(("Authorization", b.as_str()));
        }
        let (status, reply) = crate::http::fetch(&t, "POST", &headers, body.as_bytes(), MAX_DOC)
            .await
            .map_err(|e| self.provider(format!("the token endpoint: {e}")))?;
        let reply: Value = serde_json::from_slice(&reply).unwrap_or_default();
        if status != 200 {
            return Err(self.provider(format!(
                "the token endpoint refused the code ({status} {})",
                reply["error"].as_str().unwrap_or("")
            )));
        }
        let id_token = reply["id_token"]
            .as_str()
            .ok_or_else(|| self.provider("no id_token in the token endpoint's answer"))?;
        let claims = match verify(id_token, &d.keys, &self.cfg, &pending.nonce, now_secs) {
            Err(KeyMissing) => {
                // The provider may have rotated its keys: fetch them once more.
                let d = self.discover(true).await?;
                verify(id_token, &d.keys, &self.cfg, &pending.nonce, now_secs)
                    .map_err(|e| e.into_error())?
            }
            r => r.map_err(|e| e.into_error())?,
        };
        self.person(&claims)
    }

    fn person(&self, claims: &Value) -> Result<Person, OidcError> {
        let name = [
            self.cfg.name_claim.as_deref(),
            Some("preferred_username"),
            Some("email"),
            Some("sub"),
        ]
        .into_iter()
        .flatten()
        .find_map(|c| claims[c].as_str().filter(|s| !s.is_empty()))
        .unwrap_or("unknown")
        .to_string();
        let said: Vec<String> = match &claims[&self.cfg.role_claim] {
            Value::String(s) => vec![s.clone()],
            Value::Array(a) => a
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect(),
            _ => Vec::new(),
        };
        let role = said
            .iter()
            .filter_map(|v| self.cfg.roles.get(v))
            .copied()
            .max();
        match role {
            Some(role) => Ok(Person { name, role }),
            None => Err(OidcError::NoRole {
                name,
                claim: self.cfg.role_claim.clone(),
                said: if said.is_empty() {
                    "nothing".into()
                } else {
                    said.join(", ")
                },
            }),
        }
    }
}

/// Why [`verify`] refused a token.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// Its key is not among the provider's (fetch them again, once).
    KeyMissing,
    /// Any other reason, in words.
    Bad(String),
}
use Refused::KeyMissing;

impl Refused {
    fn into_error(self) -> OidcError {
        match self {
            KeyMissing => {
                OidcError::Token("signed with a key the provider does not publish".into())
            }
            Refused::Bad(why) => OidcError::Token(why),
        }
    }
}

fn b64(part: &str) -> Result<Vec<u8>, Refused> {
    URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| Refused::Bad("not base64url".into()))
}

/// Checks the ID token `jwt` against the provider's `keys` (a JWKS's `keys`) and the
/// login: its signature (RS256 or ES256 only: never `none` or a shared secret), issuer,
/// audience (and authorized party when there are several), nonce, expiry and issue
/// time, at `now` (Unix seconds). Returns its claims.
pub fn verify(
    jwt: &str,
    keys: &[Value],
    cfg: &OidcConfig,
    nonce: &str,
    now: i64,
) -> Result<Value, Refused> {
    let bad = |s: &str| Refused::Bad(s.to_string());
    let parts: Vec<&str> = jwt.split('.').collect();
    let [h, p, s] = parts.as_slice() else {
        return Err(bad("not a signed JWT (three parts)"));
    };
    let header: Value =
        serde_json::from_slice(&b64(h)?).map_err(|_| bad("its header is not JSON"))?;
    let alg = header["alg"].as_str().unwrap_or("");
    let kid = header["kid"].as_str();
    let key = keys
        .iter()
        .filter(|k| k["use"].as_str().is_none_or(|u| u == "sig"))
        .find(|k| {
            kid.is_none_or(|kid| k["kid"].as_str() == Some(kid))
                && k["kty"].as_str()
                    == Some(match alg {
                        "RS256" => "RSA",
                        "ES256" => "EC",
                        _ => "",
                    })
        });
    let signed = format!("{h}.{p}");
    let sig = b64(s)?;
    match alg {
        "RS256" | "ES256" => {}
        other => {
            return Err(Refused::Bad(format!(
                "signed with {other:?}; only RS256 and ES256 are taken"
            )));
        }
    }
    let key = key.ok_or(KeyMissing)?;
    let ok = match alg {
        "RS256" => {
            let n = b64(key["n"].as_str().unwrap_or(""))?;
            let e = b64(key["e"].as_str().unwrap_or(""))?;
            ring::signature::RsaPublicKeyComponents { n: &n, e: &e }
                .verify(
                    &ring::signature::RSA_PKCS1_2048_8192_SHA256,
                    signed.as_bytes(),
                    &sig,
                )
                .is_ok()
        }
        _ => {
            if key["crv"].as_str() != Some("P-256") {
                return Err(bad("an ES256 key that is not on P-256"));
            }
            let mut point = vec![4u8];
            point.extend(b64(key["x"].as_str().unwrap_or(""))?);
            point.extend(b64(key["y"].as_str().unwrap_or(""))?);
            ring::signature::UnparsedPublicKey::new(
                &ring::signature::ECDSA_P256_SHA256_FIXED,
                &point,
            )
            .verify(signed.as_bytes(), &sig)
            .is_ok()
        }
    };
    if !ok {
        return Err(bad("its signature does not verify"));
    }
    let claims: Value =
        serde_json::from_slice(&b64(p)?).map_err(|_| bad("its claims are not JSON"))?;
    if claims["iss"].as_str() != Some(cfg.issuer.as_str()) {
        return Err(Refused::Bad(format!(
            "issued by {}, not {}",
            claims["iss"], cfg.issuer
        )));
    }
    let auds: Vec<&str> = match &claims["aud"] {
        Value::String(a) => vec![a.as_str()],
        Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    if !auds.contains(&cfg.client_id.as_str()) {
        return Err(Refused::Bad(format!(
            "for {auds:?}, not this console ({})",
            cfg.client_id
        )));
    }
    // OpenID Connect Core 3.1.3.7: with several audiences azp must be there; when
    // there, with one audience or several, it must be this console.
    match claims["azp"].as_str() {
        Some(azp) if azp != cfg.client_id => {
            return Err(bad("authorized for another party (azp), not this console"));
        }
        None if auds.len() > 1 => {
            return Err(bad(
                "for several audiences, and not authorized for this console (azp)",
            ));
        }
        _ => {}
    }
    if !claims["nonce"]
        .as_str()
        .is_some_and(|n| crate::web::session::same(n, nonce))
    {
        return Err(bad("its nonce is not this login's (a replayed token)"));
    }
    let exp = claims["exp"].as_i64().ok_or_else(|| bad("no expiry"))?;
    if exp + SKEW_SECS < now {
        return Err(bad("expired"));
    }
    if claims["iat"]
        .as_i64()
        .is_some_and(|iat| iat - SKEW_SECS > now)
    {
        return Err(bad("issued in the future (check the clocks)"));
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};

    fn cfg() -> OidcConfig {
        OidcConfig {
            issuer: "https://idp.example.org".into(),
            client_id: "clustermgr".into(),
            client_secret_file: None,
            redirect_uri: "http://localhost:5000/login/oidc/callback".into(),
            role_claim: "role".into(),
            roles: [
                ("clusteradmin".to_string(), UserRole::Admin),
                ("clusterviewer".to_string(), UserRole::Viewer),
            ]
            .into(),
            name_claim: None,
            scopes: vec!["openid".into()],
        }
    }

    struct Signer {
        key: EcdsaKeyPair,
        jwk: Value,
    }

    fn signer(kid: &str) -> Signer {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .unwrap();
        let pubkey = key.public_key().as_ref();
        let jwk = serde_json::json!({
            "kty": "EC", "crv": "P-256", "kid": kid, "use": "sig",
            "x": URL_SAFE_NO_PAD.encode(&pubkey[1..33]),
            "y": URL_SAFE_NO_PAD.encode(&pubkey[33..65]),
        });
        Signer { key, jwk }
    }

    fn token(s: &Signer, header: Value, claims: Value) -> String {
        let h = URL_SAFE_NO_PAD.encode(header.to_string());
        let p = URL_SAFE_NO_PAD.encode(claims.to_string());
        let rng = ring::rand::SystemRandom::new();
        let sig = s.key.sign(&rng, format!("{h}.{p}").as_bytes()).unwrap();
        format!("{h}.{p}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
    }

    fn claims(now: i64) -> Value {
        serde_json::json!({
            "iss": "https://idp.example.org", "aud": "clustermgr", "sub": "u1",
            "preferred_username": "alice", "role": "clusteradmin", "nonce": "n1",
            "exp": now + 300, "iat": now,
        })
    }

    #[test]
    fn a_good_token_verifies_and_every_tampering_is_refused() {
        let s = signer("k1");
        let keys = vec![s.jwk.clone()];
        let now = 1_800_000_000;
        let header = serde_json::json!({"alg": "ES256", "kid": "k1"});
        let good = token(&s, header.clone(), claims(now));
        let c = verify(&good, &keys, &cfg(), "n1", now).unwrap();
        assert_eq!(c["preferred_username"], "alice");
        let oidc = Oidc::new(cfg());
        assert_eq!(
            oidc.person(&c).unwrap(),
            Person {
                name: "alice".into(),
                role: UserRole::Admin
            }
        );
        let refused = |jwt: &str, nonce: &str| verify(jwt, &keys, &cfg(), nonce, now).unwrap_err();
        // A changed claim breaks the signature.
        let parts: Vec<&str> = good.split('.').collect();
        let mut c2 = claims(now);
        c2["role"] = "clusteradmin2".into();
        let forged = format!(
            "{}.{}.{}",
            parts[0],
            URL_SAFE_NO_PAD.encode(c2.to_string()),
            parts[2]
        );
        assert_eq!(
            refused(&forged, "n1"),
            Refused::Bad("its signature does not verify".into())
        );
        // Another audience, another issuer, an old token, a replayed nonce.
        for (k, v) in [
            ("aud", serde_json::json!("grafana")),
            ("iss", serde_json::json!("https://evil")),
            ("exp", serde_json::json!(now - 600)),
            // One audience, this console, but authorized for another party.
            ("azp", serde_json::json!("grafana")),
        ] {
            let mut c = claims(now);
            c[k] = v;
            assert!(
                matches!(
                    refused(&token(&s, header.clone(), c), "n1"),
                    Refused::Bad(_)
                ),
                "{k}"
            );
        }
        assert!(matches!(refused(&good, "n2"), Refused::Bad(_)));
        // Several audiences need this console as the authorized party.
        let mut c = claims(now);
        c["aud"] = serde_json::json!(["clustermgr", "other"]);
        assert!(matches!(
            refused(&token(&s, header.clone(), c.clone()), "n1"),
            Refused::Bad(_)
        ));
        c["azp"] = "clustermgr".into();
        assert!(verify(&token(&s, header.clone(), c), &keys, &cfg(), "n1", now).is_ok());
        // The provider's endpoints: https, or plain http on this machine only.
        let o = Oidc::new(cfg());
        for (url, ok) in [
            ("https://idp.example.org/token", true),
            ("http://127.0.0.1:3000/token", true),
            ("http://[::1]:3000/token", true),
            ("http://localhost:3000/token", true),
            ("http://idp.example.org/token", false),
            ("http://10.0.0.5/token", false),
        ] {
            assert_eq!(o.secure(url, "token_endpoint").is_ok(), ok, "{url}");
        }
        // No signature at all, or one made with a shared secret, is never taken.
        for alg in ["none", "HS256"] {
            let t = token(
                &s,
                serde_json::json!({"alg": alg, "kid": "k1"}),
                claims(now),
            );
            assert!(
                matches!(refused(&t, "n1"), Refused::Bad(why) if why.contains("only RS256 and ES256"))
            );
        }
        // Another key: fetch the provider's keys again.
        let other = signer("k2");
        let t = token(
            &other,
            serde_json::json!({"alg": "ES256", "kid": "k2"}),
            claims(now),
        );
        assert_eq!(refused(&t, "n1"), KeyMissing);
        // Right kid, wrong key.
        let t = token(&other, header.clone(), claims(now));
        assert!(matches!(refused(&t, "n1"), Refused::Bad(_)));
    }

    #[test]
    fn the_role_comes_from_the_claim_and_none_is_refused() {
        let oidc = Oidc::new(cfg());
        let mut c = claims(0);
        c["role"] = serde_json::json!(["clusterviewer", "staff"]);
        assert_eq!(oidc.person(&c).unwrap().role, UserRole::Viewer);
        c["role"] = "staff".into();
        let e = oidc.person(&c).unwrap_err().to_string();
        assert!(
            e.contains("alice has no role here") && e.contains("says staff"),
            "{e}"
        );
    }

    #[test]
    fn forms_are_percent_encoded() {
        assert_eq!(form(&[("a b", "x&y=z/é")]), "a%20b=x%26y%3Dz%2F%C3%A9");
    }
}
