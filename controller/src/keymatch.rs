//! Whether a private key (PEM) is the one a certificate certifies: `cluster set tls-key`
//! says so when the pair disagrees, and the load balancer's configuration waits for a
//! matching pair instead of reaching `nginx -t` (or, worse, a reload) with a wrong one.

use ring::signature::KeyPair as _;
use rustls_pki_types::PrivateKeyDer;

/// What comparing a key with a certificate found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pair {
    /// The key's public half is the certificate's.
    Matches,
    /// It is not.
    Differs,
    /// One of the two could not be read this way (an encrypted key, an algorithm ring
    /// does not know): `nginx -t` judges the pair at apply.
    Unknown(String),
}

/// Compares `key_pem` (PKCS#8, PKCS#1 RSA or SEC1 EC) with the first certificate of
/// `cert_pem` (the server's; the chain follows it).
pub fn compare(cert_pem: &str, key_pem: &str) -> Pair {
    let cert = match clustermgr_protocol::identity::cert_from_pem(cert_pem) {
        Ok(der) => der,
        Err(e) => return Pair::Unknown(format!("the certificate cannot be read: {e}")),
    };
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(&cert) else {
        return Pair::Unknown("the certificate cannot be parsed".into());
    };
    let certified = cert.public_key().subject_public_key.data.as_ref();
    match public_key(key_pem) {
        Ok(public) if public == certified => Pair::Matches,
        Ok(_) => Pair::Differs,
        Err(why) => Pair::Unknown(why),
    }
}

/// The public key of `key_pem`, as a certificate's subjectPublicKey holds it.
fn public_key(key_pem: &str) -> Result<Vec<u8>, String> {
    let key = clustermgr_protocol::identity::key_from_pem(key_pem).map_err(|e| e.to_string())?;
    match key {
        PrivateKeyDer::Pkcs1(der) => ring::rsa::KeyPair::from_der(der.secret_pkcs1_der())
            .map(|k| k.public_key().as_ref().to_vec())
            .map_err(|e| format!("the RSA key cannot be read: {e}")),
        PrivateKeyDer::Pkcs8(der) => pkcs8_public_key(der.secret_pkcs8_der()),
        PrivateKeyDer::Sec1(der) => [P256, P384]
            .iter()
            .find_map(|curve| pkcs8_public_key(&sec1_as_pkcs8(der.secret_sec1_der(), curve)).ok())
            .ok_or_else(|| "the EC key is not on P-256 or P-384".to_string()),
        _ => Err("the key is of a kind clustermgr cannot read".into()),
    }
}

fn pkcs8_public_key(pkcs8: &[u8]) -> Result<Vec<u8>, String> {
    use ring::signature::{
        ECDSA_P256_SHA256_ASN1_SIGNING, ECDSA_P384_SHA384_ASN1_SIGNING, EcdsaKeyPair,
        Ed25519KeyPair,
    };
    if let Ok(k) = ring::rsa::KeyPair::from_pkcs8(pkcs8) {
        return Ok(k.public_key().as_ref().to_vec());
    }
    let rng = ring::rand::SystemRandom::new();
    for alg in [
        &ECDSA_P256_SHA256_ASN1_SIGNING,
        &ECDSA_P384_SHA384_ASN1_SIGNING,
    ] {
        if let Ok(k) = EcdsaKeyPair::from_pkcs8(alg, pkcs8, &rng) {
            return Ok(k.public_key().as_ref().to_vec());
        }
    }
    Ed25519KeyPair::from_pkcs8_maybe_unchecked(pkcs8)
        .map(|k| k.public_key().as_ref().to_vec())
        .map_err(|_| "the key is not RSA, ECDSA P-256/P-384 or Ed25519".into())
}

/// The named curves' object identifiers, DER-encoded.
const P256: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const P384: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];
/// id-ecPublicKey.
const EC_PUBLIC_KEY: &[u8] = &[0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];

/// An `EC PRIVATE KEY` (RFC 5915) wrapped as PKCS#8 for `curve`, which is how ring
/// reads EC keys (it checks the curve against the key's own, when the key names one).
fn sec1_as_pkcs8(sec1: &[u8], curve: &[u8]) -> Vec<u8> {
    let algorithm = der(0x30, &[EC_PUBLIC_KEY, curve].concat());
    let body = [&[0x02, 0x01, 0x00][..], &algorithm, &der(0x04, sec1)].concat();
    der(0x30, &body)
}

/// One DER element: tag, definite length, body.
fn der(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = body.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes: Vec<u8> = len
            .to_be_bytes()
            .into_iter()
            .skip_while(|b| *b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend_from_slice(&bytes);
    }
    out.extend_from_slice(body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A certificate and key made with rcgen (PKCS#8), as `cluster set` would get them.
    fn pair() -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["idp.example.org".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn a_key_matches_its_certificate_and_not_another() {
        let (cert, key) = pair();
        let (other_cert, other_key) = pair();
        assert_eq!(compare(&cert, &key), Pair::Matches);
        assert_eq!(compare(&other_cert, &key), Pair::Differs);
        assert_eq!(compare(&cert, &other_key), Pair::Differs);
        // The chain after the server's certificate does not matter.
        assert_eq!(compare(&format!("{cert}{other_cert}"), &key), Pair::Matches);
        assert!(matches!(
            compare(
                &cert,
                "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"
            ),
            Pair::Unknown(_)
        ));
    }

    #[test]
    fn long_der_lengths_are_encoded_in_long_form() {
        assert_eq!(der(0x04, &[1; 3]), [0x04, 3, 1, 1, 1]);
        let long = der(0x04, &[0; 300]);
        assert_eq!(&long[..4], &[0x04, 0x82, 0x01, 0x2c]);
        assert_eq!(long.len(), 304);
    }
}
