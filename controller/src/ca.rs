//! The cluster CA: it signs the controller's certificate and the nodes' certificates.
//! Its key never leaves the controller's home.
//!
//! A node certificate is built from the CSR's public key alone. Whatever else a CSR
//! asks for (other names, CA rights, other key usages, a lifetime) is ignored: the
//! controller sets the node name, server authentication only, not a CA, and the
//! cluster's configured lifetime.

use clustermgr_protocol::NodeName;
use clustermgr_protocol::identity::{CONTROLLER_URI, CertSummary, spki_fingerprint};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SanType,
    SerialNumber,
};
use time::{Duration, OffsetDateTime};

use crate::CtlError;

/// How long the CA itself is valid.
const CA_LIFETIME_DAYS: i64 = 3650;

/// Certificates start a little in the past so a peer whose clock is slightly behind
/// does not see them as not yet valid.
const BACKDATE: Duration = Duration::minutes(5);

/// A certificate just issued.
#[derive(Clone, Debug)]
pub struct Issued {
    /// The certificate, PEM.
    pub pem: String,
    /// What it says.
    pub summary: CertSummary,
}

/// The loaded cluster CA.
pub struct Ca {
    cert_pem: String,
    key: KeyPair,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca").finish_non_exhaustive()
    }
}

fn cert_error(context: &str, e: impl std::fmt::Display) -> CtlError {
    CtlError::Protocol(clustermgr_protocol::ProtocolError::Certificate(format!(
        "{context}: {e}"
    )))
}

fn random_serial() -> SerialNumber {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .expect("the system random source works");
    bytes[0] &= 0x7f;
    SerialNumber::from_slice(&bytes)
}

fn issued(cert: rcgen::Certificate) -> Result<Issued, CtlError> {
    let summary = CertSummary::parse(cert.der())?;
    Ok(Issued {
        pem: cert.pem(),
        summary,
    })
}

/// A public key taken from a checked CSR.
#[derive(Debug)]
pub struct CsrKey {
    key: rcgen::PublicKey,
    /// Its [`spki_fingerprint`], the form in which it is pinned.
    pub fingerprint: String,
}

/// Parses a CSR, checks its signature, and checks that it names `node` (as common name
/// or DNS name). Returns only its public key.
pub fn csr_public_key(node: &NodeName, csr_pem: &str) -> Result<CsrKey, CtlError> {
    let bad = |message: String| CtlError::Csr {
        node: node.to_string(),
        message,
    };
    let csr = CertificateSigningRequestParams::from_pem(csr_pem).map_err(|e| {
        bad(match e {
            rcgen::Error::InvalidCertificationRequestSignature => {
                "its signature does not verify (it was altered, or not made with the key it carries)".to_string()
            }
            rcgen::Error::UnsupportedExtension => {
                "it carries an extension clustermgr does not accept; make it with `clustermgr-agent enroll`".to_string()
            }
            other => format!("it is not a readable PEM certificate request ({other})"),
        })
    })?;
    let cn_names_node = csr
        .params
        .distinguished_name
        .get(&DnType::CommonName)
        .and_then(dn_text)
        .is_some_and(|cn| cn == node.as_str());
    let san_names_node = csr
        .params
        .subject_alt_names
        .iter()
        .any(|san| matches!(san, SanType::DnsName(n) if n.as_str() == node.as_str()));
    if !cn_names_node && !san_names_node {
        return Err(bad(format!(
            "it does not name {node}; make it on that host with `clustermgr-agent enroll --name {node}`"
        )));
    }
    let fingerprint = spki_fingerprint(&csr.public_key.subject_public_key_info());
    Ok(CsrKey {
        key: csr.public_key,
        fingerprint,
    })
}

fn dn_text(v: &rcgen::DnValue) -> Option<&str> {
    match v {
        rcgen::DnValue::Utf8String(s) => Some(s),
        rcgen::DnValue::PrintableString(s) => Some(s.as_str()),
        rcgen::DnValue::Ia5String(s) => Some(s.as_str()),
        _ => None,
    }
}

impl Ca {
    /// Creates a new CA for `cluster`; returns it and its key PEM for the caller to
    /// store (mode 0600).
    pub fn create(cluster: &str, now: OffsetDateTime) -> Result<(Ca, String), CtlError> {
        Ca::create_named(&format!("clustermgr CA {cluster}"), cluster, now)
    }

    /// Creates the tunnel CA: the one stunnel and csync2 peers verify each other with,
    /// separate from the agents' CA so a tunnel certificate can never act as an agent
    /// (or the controller), and revocable on its own list.
    pub fn create_tunnel(cluster: &str, now: OffsetDateTime) -> Result<(Ca, String), CtlError> {
        Ca::create_named(&format!("clustermgr tunnel CA {cluster}"), cluster, now)
    }

    /// Creates the console's CA (`[web] tls = "issued"`): the one the web console's
    /// certificate is issued by, apart from the agents' and the tunnels' CAs, so a
    /// console certificate can never act as a node or a tunnel.
    pub fn create_console(cluster: &str, now: OffsetDateTime) -> Result<(Ca, String), CtlError> {
        Ca::create_named(&format!("clustermgr console CA {cluster}"), cluster, now)
    }

    /// Issues the web console's certificate for `names` (DNS names or IP addresses),
    /// server authentication only; returns it and its key PEM.
    pub fn issue_console(
        &self,
        names: &[String],
        now: OffsetDateTime,
        lifetime: Duration,
    ) -> Result<(Issued, String), CtlError> {
        let key = KeyPair::generate().map_err(|e| cert_error("cannot generate a key", e))?;
        let mut params = self.leaf_params(now, lifetime);
        let first = names.first().cloned().unwrap_or_else(|| "localhost".into());
        params
            .distinguished_name
            .push(DnType::CommonName, format!("clustermgr console {first}"));
        params.subject_alt_names = names
            .iter()
            .map(|n| match n.parse::<std::net::IpAddr>() {
                Ok(ip) => Ok(SanType::IpAddress(ip)),
                Err(_) => n
                    .clone()
                    .try_into()
                    .map(SanType::DnsName)
                    .map_err(|e| cert_error("a console name", e)),
            })
            .collect::<Result<_, _>>()?;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params
            .signed_by(&key, &self.issuer()?)
            .map_err(|e| cert_error("cannot sign the console certificate", e))?;
        Ok((issued(cert)?, key.serialize_pem()))
    }

    fn create_named(
        cn: &str,
        cluster: &str,
        now: OffsetDateTime,
    ) -> Result<(Ca, String), CtlError> {
        let key = KeyPair::generate().map_err(|e| cert_error("cannot generate the CA key", e))?;
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, cn);
        params
            .distinguished_name
            .push(DnType::OrganizationName, cluster);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.not_before = now - BACKDATE;
        params.not_after = now + Duration::days(CA_LIFETIME_DAYS);
        params.serial_number = Some(random_serial());
        let cert = params
            .self_signed(&key)
            .map_err(|e| cert_error("cannot create the CA certificate", e))?;
        let key_pem = key.serialize_pem();
        Ok((
            Ca {
                cert_pem: cert.pem(),
                key,
            },
            key_pem,
        ))
    }

    /// Loads a CA from its certificate and key PEM.
    pub fn load(cert_pem: &str, key_pem: &str) -> Result<Ca, CtlError> {
        let key = KeyPair::from_pem(key_pem).map_err(|e| cert_error("unreadable CA key", e))?;
        Ok(Ca {
            cert_pem: cert_pem.to_string(),
            key,
        })
    }

    /// Checks that the key is the one the certificate certifies, and returns what the
    /// certificate says. A restore checks this before it installs a CA: a mismatched
    /// pair would sign certificates that no agent's chain check accepts.
    pub fn checked_summary(&self) -> Result<CertSummary, CtlError> {
        let summary = CertSummary::parse_pem(&self.cert_pem)?;
        let key = spki_fingerprint(&self.key.subject_public_key_info());
        if key != summary.key_fingerprint {
            return Err(cert_error(
                "the CA key does not belong to the CA certificate",
                format!(
                    "the key is {key}, the certificate's is {}",
                    summary.key_fingerprint
                ),
            ));
        }
        Ok(summary)
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    fn issuer(&self) -> Result<Issuer<'static, &KeyPair>, CtlError> {
        Issuer::from_ca_cert_pem(&self.cert_pem, &self.key)
            .map_err(|e| cert_error("unreadable CA certificate", e))
    }

    fn leaf_params(&self, now: OffsetDateTime, lifetime: Duration) -> CertificateParams {
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.not_before = now - BACKDATE;
        params.not_after = now + lifetime;
        params.serial_number = Some(random_serial());
        params.use_authority_key_identifier_extension = true;
        params
    }

    /// Leaf parameters naming `node` as common name and only DNS name.
    fn named_leaf(
        &self,
        node: &NodeName,
        now: OffsetDateTime,
        lifetime: Duration,
    ) -> Result<CertificateParams, CtlError> {
        let mut params = self.leaf_params(now, lifetime);
        params
            .distinguished_name
            .push(DnType::CommonName, node.as_str());
        params.subject_alt_names = vec![SanType::DnsName(
            node.as_str()
                .try_into()
                .map_err(|e| cert_error("node name", e))?,
        )];
        Ok(params)
    }

    /// Issues a new controller key and certificate: client authentication only, with
    /// the controller identity. Returns the certificate and the key PEM.
    ///
    /// Agents refuse a controller certificate older than the newest they have seen, so
    /// one that replaces another (`supersedes`: the start of the old one's validity,
    /// Unix seconds) starts strictly after it, even within the same second.
    pub fn issue_controller(
        &self,
        cluster: &str,
        now: OffsetDateTime,
        lifetime: Duration,
        supersedes: Option<i64>,
    ) -> Result<(Issued, String), CtlError> {
        let key = KeyPair::generate().map_err(|e| cert_error("cannot generate a key", e))?;
        let mut params = self.leaf_params(now, lifetime);
        if let Some(old) = supersedes
            && let Ok(after) = OffsetDateTime::from_unix_timestamp(old + 1)
            && after > params.not_before
        {
            params.not_before = after;
        }
        params.distinguished_name.push(
            DnType::CommonName,
            format!("clustermgr controller {cluster}"),
        );
        params.subject_alt_names = vec![SanType::URI(
            CONTROLLER_URI
                .try_into()
                .map_err(|e| cert_error("controller identity", e))?,
        )];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params
            .signed_by(&key, &self.issuer()?)
            .map_err(|e| cert_error("cannot sign the controller certificate", e))?;
        Ok((issued(cert)?, key.serialize_pem()))
    }

    /// Signs a node certificate for the key of a checked CSR: the node name as its only
    /// name, server authentication only, not a CA, valid for `lifetime`.
    pub fn sign_node(
        &self,
        node: &NodeName,
        key: &CsrKey,
        now: OffsetDateTime,
        lifetime: Duration,
    ) -> Result<Issued, CtlError> {
        let mut params = self.named_leaf(node, now, lifetime)?;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params
            .signed_by(&key.key, &self.issuer()?)
            .map_err(|e| cert_error("cannot sign the node certificate", e))?;
        issued(cert)
    }

    /// Signs a tunnel certificate (stunnel, csync2) for the key of a checked CSR: the
    /// node name as its only name, server and client authentication, not a CA.
    pub fn sign_tunnel(
        &self,
        node: &NodeName,
        key: &CsrKey,
        now: OffsetDateTime,
        lifetime: Duration,
    ) -> Result<Issued, CtlError> {
        let mut params = self.named_leaf(node, now, lifetime)?;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = params
            .signed_by(&key.key, &self.issuer()?)
            .map_err(|e| cert_error("cannot sign the tunnel certificate", e))?;
        issued(cert)
    }

    /// A revocation list of `revoked` (serial in hex, revocation time in Unix seconds),
    /// valid for a year; `number` must grow with each new list.
    pub fn crl(
        &self,
        revoked: &[(String, i64)],
        now: OffsetDateTime,
        number: u64,
    ) -> Result<String, CtlError> {
        let mut revoked_certs = Vec::new();
        for (serial, at) in revoked {
            let bytes = (0..serial.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(serial.get(i..i + 2).unwrap_or("zz"), 16))
                .collect::<Result<Vec<u8>, _>>()
                .map_err(|e| cert_error("a revoked serial is not hex", e))?;
            revoked_certs.push(rcgen::RevokedCertParams {
                serial_number: SerialNumber::from_slice(&bytes),
                revocation_time: OffsetDateTime::from_unix_timestamp(*at)
                    .map_err(|e| cert_error("a revocation time", e))?,
                reason_code: None,
                invalidity_date: None,
            });
        }
        rcgen::CertificateRevocationListParams {
            this_update: now - BACKDATE,
            next_update: now + Duration::days(365),
            crl_number: SerialNumber::from(number),
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        }
        .signed_by(&self.issuer()?)
        .and_then(|crl| crl.pem())
        .map_err(|e| cert_error("cannot sign the revocation list", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use x509_parser::prelude::{FromDer, X509Certificate};

    fn parse_x509_certificate(
        der: &[u8],
    ) -> x509_parser::prelude::X509Result<'_, X509Certificate<'_>> {
        X509Certificate::from_der(der)
    }

    const DAY: i64 = 86_400;

    fn now() -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap()
    }

    fn ca() -> Ca {
        Ca::create("test", now()).unwrap().0
    }

    fn node() -> NodeName {
        NodeName::new("gluu1").unwrap()
    }

    /// A CSR made the way a forger would: any params, signed with a fresh key.
    fn forged(edit: impl FnOnce(&mut CertificateParams)) -> String {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec!["gluu1".to_string()]).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, "gluu1");
        edit(&mut params);
        params.serialize_request(&key).unwrap().pem().unwrap()
    }

    fn sign(csr: &str) -> Result<Issued, CtlError> {
        let key = csr_public_key(&node(), csr)?;
        ca().sign_node(&node(), &key, now(), Duration::days(90))
    }

    fn parsed(issued: &Issued) -> (Vec<u8>, CertSummary) {
        let der = clustermgr_protocol::identity::cert_from_pem(&issued.pem).unwrap();
        (der.to_vec(), issued.summary.clone())
    }

    #[test]
    fn a_csr_asking_for_ca_rights_gets_none() {
        let csr = forged(|p| {
            p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        });
        let (der, summary) = parsed(&sign(&csr).unwrap());
        let (_, cert) = parse_x509_certificate(&der).unwrap();
        assert!(!summary.is_ca);
        let bc = cert.basic_constraints().unwrap().map(|b| b.value.ca);
        assert_ne!(bc, Some(true));
        let ku = cert.key_usage().unwrap().unwrap().value;
        assert!(!ku.key_cert_sign() && !ku.crl_sign() && ku.digital_signature());
    }

    #[test]
    fn a_csr_asking_for_other_names_gets_only_its_node() {
        let csr = forged(|p| {
            p.subject_alt_names
                .push(SanType::DnsName("evil.example.org".try_into().unwrap()));
            p.subject_alt_names
                .push(SanType::URI(CONTROLLER_URI.try_into().unwrap()));
            p.subject_alt_names
                .push(SanType::IpAddress([10, 0, 0, 1].into()));
        });
        let summary = sign(&csr).unwrap().summary;
        assert_eq!(summary.dns_names, vec!["gluu1".to_string()]);
        assert!(
            summary.uris.is_empty(),
            "no controller identity: {:?}",
            summary.uris
        );
        assert_eq!(summary.common_name, "gluu1");
    }

    #[test]
    fn a_csr_asking_for_other_usages_gets_server_auth_only() {
        let csr = forged(|p| {
            p.extended_key_usages = vec![
                ExtendedKeyUsagePurpose::ClientAuth,
                ExtendedKeyUsagePurpose::CodeSigning,
                ExtendedKeyUsagePurpose::Any,
            ];
        });
        let (der, _) = parsed(&sign(&csr).unwrap());
        let (_, cert) = parse_x509_certificate(&der).unwrap();
        let eku = cert.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.server_auth);
        assert!(!eku.client_auth && !eku.code_signing && !eku.any);
    }

    #[test]
    fn the_lifetime_is_the_controllers_not_the_csrs() {
        let csr = forged(|p| {
            p.not_before = rcgen::date_time_ymd(2000, 1, 1);
            p.not_after = rcgen::date_time_ymd(3000, 1, 1);
        });
        let s = sign(&csr).unwrap().summary;
        assert_eq!(s.not_after, now().unix_timestamp() + 90 * DAY);
        assert!(s.not_before <= now().unix_timestamp());
    }

    #[test]
    fn a_csr_for_another_node_is_refused() {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec!["gluu2".to_string()]).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, "gluu2");
        let csr = params.serialize_request(&key).unwrap().pem().unwrap();
        let err = sign(&csr).unwrap_err().to_string();
        assert!(err.contains("does not name gluu1"), "{err}");
    }

    #[test]
    fn a_csr_whose_signature_does_not_verify_is_refused() {
        let csr = forged(|_| {});
        let der = pem_to_der(&csr);
        // Flip a bit inside the signature at the end.
        let mut bad = der.clone();
        let last = bad.len() - 3;
        bad[last] ^= 0x01;
        let bad_pem = format!(
            "-----BEGIN CERTIFICATE REQUEST-----\n{}\n-----END CERTIFICATE REQUEST-----\n",
            base64(&bad)
        );
        let err = sign(&bad_pem).unwrap_err().to_string();
        assert!(err.contains("signature does not verify"), "{err}");
        assert!(sign("not a csr").is_err());
    }

    #[test]
    fn a_ca_key_of_another_ca_is_caught() {
        let (mine, my_key) = Ca::create("a", now()).unwrap();
        let (theirs, _) = Ca::create("b", now()).unwrap();
        assert!(mine.checked_summary().unwrap().is_ca);
        let mixed = Ca::load(theirs.cert_pem(), &my_key).unwrap();
        let err = mixed.checked_summary().unwrap_err().to_string();
        assert!(err.contains("does not belong"), "{err}");
    }

    #[test]
    fn a_replacement_controller_certificate_supersedes_the_old_one_at_the_agents() {
        let ca = ca();
        let ca_der = clustermgr_protocol::identity::cert_from_pem(ca.cert_pem()).unwrap();
        let (old, _) = ca
            .issue_controller("test", now(), Duration::days(90), None)
            .unwrap();
        // Issued in the same second, yet strictly after.
        let (new, _) = ca
            .issue_controller(
                "test",
                now(),
                Duration::days(90),
                Some(old.summary.not_before),
            )
            .unwrap();
        assert!(new.summary.not_before > old.summary.not_before);
        let verify = |pem: &str, newest: i64| {
            let der = clustermgr_protocol::identity::cert_from_pem(pem).unwrap();
            let at = rustls::pki_types::UnixTime::since_unix_epoch(std::time::Duration::from_secs(
                now().unix_timestamp() as u64 + 60,
            ));
            clustermgr_protocol::identity::verify_controller_cert(&ca_der, &der, at, newest)
        };
        verify(&old.pem, i64::MIN).unwrap();
        verify(&new.pem, new.summary.not_before).unwrap();
        let err = verify(&old.pem, new.summary.not_before)
            .unwrap_err()
            .to_string();
        assert!(err.contains("superseded"), "{err}");
    }

    #[test]
    fn the_controller_certificate_is_client_auth_only_with_its_identity() {
        let (issued, _) = ca()
            .issue_controller("test", now(), Duration::days(90), None)
            .unwrap();
        let der = clustermgr_protocol::identity::cert_from_pem(&issued.pem).unwrap();
        let (_, cert) = parse_x509_certificate(&der).unwrap();
        let eku = cert.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.client_auth && !eku.server_auth);
        assert_eq!(issued.summary.uris, vec![CONTROLLER_URI.to_string()]);
        assert!(issued.summary.dns_names.is_empty());
    }

    fn pem_to_der(pem: &str) -> Vec<u8> {
        let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        unbase64(&b64)
    }

    const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

    fn unbase64(s: &str) -> Vec<u8> {
        let mut out = Vec::new();
        let mut acc = 0u32;
        let mut bits = 0;
        for c in s.bytes().filter(|&c| c != b'=') {
            acc = (acc << 6) | B64.iter().position(|&b| b == c).unwrap() as u32;
            bits += 6;
            if bits >= 8 {
                bits -= 8;
                out.push((acc >> bits) as u8);
            }
        }
        out
    }

    fn base64(bytes: &[u8]) -> String {
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let n = chunk.len();
            let v = (u32::from(chunk[0]) << 16)
                | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
                | u32::from(*chunk.get(2).unwrap_or(&0));
            for i in 0..4 {
                if i <= n {
                    out.push(B64[((v >> (18 - 6 * i)) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    }
}
