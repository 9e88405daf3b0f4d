//! TLS identities: how certificates name the controller and the nodes, how each end
//! checks the other, and the rustls/quinn configurations both ends build from them.
//!
//! - An agent certificate names its node as a DNS SAN and allows server
//!   authentication only. The controller accepts it only if it names the node the
//!   controller meant to reach and carries the public key pinned for that node.
//! - The controller certificate carries the URI SAN [`CONTROLLER_URI`] and allows
//!   client authentication only. An agent accepts a client only with that identity,
//!   signed by its cluster CA and within its validity.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use rustls_pki_types::pem::PemObject;

use crate::transport::{Timeouts, transport_config};
use crate::{ALPN, NodeName, ProtocolError};

/// The URI SAN that marks the controller's certificate.
pub const CONTROLLER_URI: &str = "urn:clustermgr:controller";

/// The crypto provider of every clustermgr TLS configuration: ring, so nothing pulls
/// in aws-lc-sys or OpenSSL.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads the first certificate of a PEM text.
pub fn cert_from_pem(pem: &str) -> Result<CertificateDer<'static>, ProtocolError> {
    CertificateDer::from_pem_slice(pem.as_bytes())
        .map_err(|e| ProtocolError::certificate("not a PEM certificate", e))
}

/// Reads a PEM private key.
pub fn key_from_pem(pem: &str) -> Result<PrivateKeyDer<'static>, ProtocolError> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes())
        .map_err(|e| ProtocolError::certificate("not a PEM private key", e))
}

/// `sha256:` and the hex digest of a SubjectPublicKeyInfo: the form in which keys are
/// pinned and shown.
pub fn spki_fingerprint(spki_der: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, spki_der);
    format!("sha256:{}", hex(digest.as_ref()))
}

/// Lowercase hex, the one way both ends print digests.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The SHA-256 of `bytes` in lowercase hex (as `sha256sum` prints it): how agent
/// binaries are named and checked on both ends.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref())
}

/// The SHA-256 of a file's content, lowercase hex, read in pieces (a package may be a
/// gigabyte).
pub fn sha256_file(path: &std::path::Path) -> std::io::Result<String> {
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let mut hash = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hash.update(&buf[..n]);
    }
    Ok(hex(hash.finish().as_ref()))
}

/// What clustermgr needs to know of a certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertSummary {
    /// Serial number, hex.
    pub serial: String,
    /// Subject common name.
    pub common_name: String,
    /// DNS subject alternative names.
    pub dns_names: Vec<String>,
    /// URI subject alternative names.
    pub uris: Vec<String>,
    /// Start of validity, Unix seconds.
    pub not_before: i64,
    /// End of validity, Unix seconds.
    pub not_after: i64,
    /// [`spki_fingerprint`] of its public key.
    pub key_fingerprint: String,
    /// Whether it is a CA.
    pub is_ca: bool,
}

impl CertSummary {
    /// Parses a DER certificate.
    pub fn parse(der: &[u8]) -> Result<Self, ProtocolError> {
        use x509_parser::extensions::GeneralName;
        let (_, cert) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| ProtocolError::certificate("unreadable certificate", e))?;
        let mut dns_names = Vec::new();
        let mut uris = Vec::new();
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                match name {
                    GeneralName::DNSName(n) => dns_names.push(n.to_string()),
                    GeneralName::URI(u) => uris.push(u.to_string()),
                    _ => {}
                }
            }
        }
        let common_name = cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .unwrap_or_default()
            .to_string();
        Ok(CertSummary {
            serial: cert.tbs_certificate.raw_serial_as_string().replace(':', ""),
            common_name,
            dns_names,
            uris,
            not_before: cert.validity().not_before.timestamp(),
            not_after: cert.validity().not_after.timestamp(),
            key_fingerprint: spki_fingerprint(cert.public_key().raw),
            is_ca: cert.is_ca(),
        })
    }

    /// Parses a PEM certificate.
    pub fn parse_pem(pem: &str) -> Result<Self, ProtocolError> {
        CertSummary::parse(&cert_from_pem(pem)?)
    }

    /// Whether the certificate is past two thirds of its life at `now` (Unix seconds),
    /// the point at which clustermgr renews it.
    pub fn renewal_due(&self, now: i64) -> bool {
        let life = (self.not_after - self.not_before).max(0);
        now >= self.not_before + life * 2 / 3
    }

    /// Whether the certificate has expired at `now` (Unix seconds).
    pub fn expired(&self, now: i64) -> bool {
        now > self.not_after
    }
}

/// The outcome of a successful agent certificate check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AgentCertStatus {
    /// Valid now.
    Valid,
    /// Expired (or not yet valid), but carrying the pinned key, so the node is who it
    /// was; the controller renews it at once.
    OutsideValidityButPinned,
}

fn anchor(
    ca: &CertificateDer<'_>,
) -> Result<rustls_pki_types::TrustAnchor<'static>, ProtocolError> {
    webpki::anchor_from_trusted_cert(ca)
        .map(|a| a.to_owned())
        .map_err(|e| ProtocolError::certificate("the cluster CA certificate is unusable", e))
}

/// Checks the certificate an agent presents: a pinned key (the node's pin, or the key a
/// rekey in progress moves it to), the node name, and a chain to the cluster CA.
/// Expiry alone does not fail a pinned key (see [`AgentCertStatus`]).
pub fn verify_agent_cert(
    ca: &CertificateDer<'_>,
    end_entity: &CertificateDer<'_>,
    node: &NodeName,
    pinned_keys: &[&str],
    now: UnixTime,
) -> Result<AgentCertStatus, ProtocolError> {
    let summary = CertSummary::parse(end_entity)?;
    let pinned_key = pinned_keys.first().copied().unwrap_or("no key");
    if !pinned_keys.contains(&summary.key_fingerprint.as_str()) {
        return Err(ProtocolError::Identity(format!(
            "the agent presents key {} but node {node} is pinned to {pinned_key}; if the host was rebuilt, enroll it again: `clustermgr node remove {node}`, then enroll, sign and add it",
            summary.key_fingerprint
        )));
    }
    if !summary.dns_names.iter().any(|n| n == node.as_str()) {
        return Err(ProtocolError::Identity(format!(
            "the agent's certificate names {:?}, not node {node}",
            summary.dns_names
        )));
    }
    let secs = now.as_secs() as i64;
    let (at, status) = if secs < summary.not_before || secs > summary.not_after {
        // The pin already proved the key; check the CA's signature as of a moment the
        // certificate was valid, so an agent that expired while the controller was away
        // can still be reached and renewed without SSH.
        (
            UnixTime::since_unix_epoch(std::time::Duration::from_secs(
                summary.not_before.max(0) as u64
            )),
            AgentCertStatus::OutsideValidityButPinned,
        )
    } else {
        (now, AgentCertStatus::Valid)
    };
    let anchors = [anchor(ca)?];
    let ee = webpki::EndEntityCert::try_from(end_entity)
        .map_err(|e| ProtocolError::certificate("unreadable agent certificate", e))?;
    ee.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &anchors,
        &[],
        at,
        webpki::KeyUsage::server_auth(),
        None,
        None,
    )
    .map_err(|e| {
        ProtocolError::Identity(format!(
            "the agent's certificate for {node} is not a node certificate of this cluster's CA: {e:?}"
        ))
    })?;
    Ok(status)
}

/// Checks the certificate a controller presents: signed by the cluster CA, valid now,
/// client authentication, and the controller identity.
pub fn verify_controller_cert(
    ca: &CertificateDer<'_>,
    end_entity: &CertificateDer<'_>,
    now: UnixTime,
    newest_seen: i64,
) -> Result<(), ProtocolError> {
    let anchors = [anchor(ca)?];
    let ee = webpki::EndEntityCert::try_from(end_entity)
        .map_err(|e| ProtocolError::certificate("unreadable client certificate", e))?;
    ee.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &anchors,
        &[],
        now,
        webpki::KeyUsage::client_auth(),
        None,
        None,
    )
    .map_err(|e| {
        ProtocolError::Identity(format!(
            "the client certificate is not a valid controller certificate of this cluster: {e:?}"
        ))
    })?;
    let summary = CertSummary::parse(end_entity)?;
    if !summary.uris.iter().any(|u| u == CONTROLLER_URI) {
        return Err(ProtocolError::Identity(format!(
            "the client certificate ({}) does not carry the controller identity {CONTROLLER_URI}",
            summary.common_name
        )));
    }
    // Each controller certificate supersedes every one issued before it: an agent
    // that has seen a newer one refuses the older (a renewal, a restore, or `cert
    // revoke-controller` left it behind, maybe on a lost machine).
    if summary.not_before < newest_seen {
        return Err(ProtocolError::Identity(format!(
            "the controller certificate {} was issued before the newest this agent has seen, so it has been superseded (renewed, restored elsewhere or revoked); use the controller home that holds the current one",
            summary.serial
        )));
    }
    Ok(())
}

fn tls_error(e: ProtocolError) -> rustls::Error {
    rustls::Error::InvalidCertificate(rustls::CertificateError::Other(rustls::OtherError(
        Arc::new(e),
    )))
}

fn supported_algs(provider: &CryptoProvider) -> WebPkiSupportedAlgorithms {
    provider.signature_verification_algorithms
}

/// The handshake-signature half of both verifiers: TLS 1.3 only, checked with the
/// provider's algorithms (`self.algs`).
macro_rules! tls13_signatures {
    () => {
        fn verify_tls12_signature(
            &self,
            _message: &[u8],
            _cert: &CertificateDer<'_>,
            _dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            Err(rustls::Error::PeerIncompatible(
                rustls::PeerIncompatible::Tls12NotOffered,
            ))
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.algs.supported_schemes()
        }
    };
}

/// The agent's check of a connecting controller.
#[derive(Debug)]
struct ControllerVerifier {
    ca: CertificateDer<'static>,
    algs: WebPkiSupportedAlgorithms,
    /// The start of validity of the newest controller certificate the agent has seen.
    newest: Arc<AtomicI64>,
}

impl ClientCertVerifier for ControllerVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let newest = self.newest.load(Ordering::SeqCst);
        verify_controller_cert(&self.ca, end_entity, now, newest).map_err(tls_error)?;
        Ok(ClientCertVerified::assertion())
    }

    tls13_signatures!();
}

/// A TLS client configuration that accepts exactly one server certificate, the one
/// whose DER has SHA-256 `cert_sha256` (the handshake signature is checked with its key
/// as usual). For the rolling apply's HTTPS probe of a Gluu node, which must present
/// the cluster's certificate, and the agent's LDAPS connection to its node's directory
/// server, whose self-signed certificate it pins; TLS 1.2 too, since that is what older
/// nginx and LDAP servers speak.
pub fn pinned_client_config(cert_sha256: &str) -> Result<rustls::ClientConfig, ProtocolError> {
    pinned_any_client_config(&[cert_sha256.to_string()])
}

/// Like [`pinned_client_config`], accepting any of the certificates `cert_sha256`
/// names: an LDAP consumer's bundle of its peers' self-signed certificates.
pub fn pinned_any_client_config(
    cert_sha256: &[String],
) -> Result<rustls::ClientConfig, ProtocolError> {
    let provider = provider();
    let verifier = Arc::new(PinnedVerifier {
        sha256: cert_sha256.to_vec(),
        algs: provider.signature_verification_algorithms,
    });
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ProtocolError::TlsConfig(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth())
}

#[derive(Debug)]
struct PinnedVerifier {
    sha256: Vec<String>,
    algs: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if self.sha256.contains(&sha256_hex(end_entity)) {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(
                "the server presented a certificate other than the pinned one".into(),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

/// Why the last check of an agent's certificate failed, in words: rustls carries the
/// error only as a nested debug string, so the dialer reads the sentence from here.
pub type RefusalNote = Arc<std::sync::Mutex<Option<String>>>;

/// The controller's check of the agent it dialled.
#[derive(Debug)]
struct AgentVerifier {
    ca: CertificateDer<'static>,
    node: NodeName,
    pinned_keys: Vec<String>,
    algs: WebPkiSupportedAlgorithms,
    refusal: RefusalNote,
}

impl ServerCertVerifier for AgentVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let keys: Vec<&str> = self.pinned_keys.iter().map(String::as_str).collect();
        verify_agent_cert(&self.ca, end_entity, &self.node, &keys, now).map_err(|e| {
            *self.refusal.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
            tls_error(e)
        })?;
        Ok(ServerCertVerified::assertion())
    }

    tls13_signatures!();
}

/// A certificate and its private key, as one end presents itself.
#[derive(Debug)]
pub struct Credentials {
    /// The end-entity certificate.
    pub cert: CertificateDer<'static>,
    /// Its private key.
    pub key: PrivateKeyDer<'static>,
}

impl Credentials {
    /// Reads PEM certificate and key texts.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, ProtocolError> {
        Ok(Credentials {
            cert: cert_from_pem(cert_pem)?,
            key: key_from_pem(key_pem)?,
        })
    }
}

fn config_error(e: impl std::fmt::Display) -> ProtocolError {
    ProtocolError::TlsConfig(e.to_string())
}

/// The agent's QUIC server configuration: TLS 1.3 only, our ALPN, client certificates
/// required and checked by [`verify_controller_cert`] against `newest_controller`, the
/// start of validity (Unix seconds) of the newest controller certificate the agent has
/// seen, which the agent raises as it sees newer ones.
pub fn agent_server_config(
    creds: Credentials,
    ca: CertificateDer<'static>,
    timeouts: &Timeouts,
    newest_controller: Arc<AtomicI64>,
) -> Result<quinn::ServerConfig, ProtocolError> {
    let provider = provider();
    let verifier = Arc::new(ControllerVerifier {
        ca,
        algs: supported_algs(&provider),
        newest: newest_controller,
    });
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(config_error)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![creds.cert], creds.key)
        .map_err(config_error)?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let quic = quinn::crypto::rustls::QuicServerConfig::try_from(tls).map_err(config_error)?;
    let mut cfg = quinn::ServerConfig::with_crypto(Arc::new(quic));
    cfg.transport_config(transport_config(timeouts));
    // Handshakes not yet accepted, and the bytes they may buffer: anyone who reaches
    // the port can start one, and only the controller should ever need many (quinn's
    // defaults are 65,536 and 100 MiB).
    cfg.max_incoming(MAX_INCOMING_HANDSHAKES);
    cfg.incoming_buffer_size(16 * 1024);
    cfg.incoming_buffer_size_total(MAX_INCOMING_HANDSHAKES as u64 * 16 * 1024);
    Ok(cfg)
}

/// The handshakes an agent holds before refusing more.
const MAX_INCOMING_HANDSHAKES: usize = 256;

/// The controller's QUIC client configuration for reaching one node: our controller
/// certificate, and [`verify_agent_cert`] for that node's name and pinned key.
pub fn controller_client_config(
    creds: &Credentials,
    ca: CertificateDer<'static>,
    node: NodeName,
    pinned_key: String,
    timeouts: &Timeouts,
) -> Result<quinn::ClientConfig, ProtocolError> {
    controller_client_config_noting(
        creds,
        ca,
        node,
        vec![pinned_key],
        timeouts,
        RefusalNote::default(),
    )
}

/// [`controller_client_config`] accepting any of `pinned_keys`, and writing why it
/// refused the agent into `refusal`.
pub fn controller_client_config_noting(
    creds: &Credentials,
    ca: CertificateDer<'static>,
    node: NodeName,
    pinned_keys: Vec<String>,
    timeouts: &Timeouts,
    refusal: RefusalNote,
) -> Result<quinn::ClientConfig, ProtocolError> {
    let provider = provider();
    let verifier = Arc::new(AgentVerifier {
        ca,
        node,
        pinned_keys,
        algs: supported_algs(&provider),
        refusal,
    });
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(config_error)?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(vec![creds.cert.clone()], creds.key.clone_key())
        .map_err(config_error)?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls).map_err(config_error)?;
    let mut cfg = quinn::ClientConfig::new(Arc::new(quic));
    cfg.transport_config(transport_config(timeouts));
    Ok(cfg)
}
