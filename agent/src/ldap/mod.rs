//! The agent's access to its node's LDAP server: where it is and how to bind, found
//! in `[ldap]` of `agent.toml` or in the node's Gluu configuration. The password is
//! read on the node and stays there: never sent, logged or shown.

pub mod ber;
pub mod client;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::config::AgentConfig;

/// A password, kept out of `Debug` output and wiped when dropped.
#[derive(Clone, Default)]
pub struct Secret(zeroize::Zeroizing<Vec<u8>>);

impl Secret {
    /// The bytes, to hand to a bind.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl From<Vec<u8>> for Secret {
    fn from(v: Vec<u8>) -> Secret {
        Secret(zeroize::Zeroizing::new(v))
    }
}

/// How to reach and bind to the node's LDAP server.
#[derive(Clone, Debug)]
pub struct Access {
    /// `ldaps://host:port` or `ldap://127.0.0.1:port`, for messages.
    pub url: String,
    /// Where to connect.
    pub target: client::Target,
    /// The DN to bind as.
    pub bind_dn: String,
    /// Its password.
    pub password: Secret,
    /// Where the settings came from, for messages.
    pub from: String,
    /// The deadline of every connect, read and write.
    pub timeout: Duration,
    /// The server certificate LDAPS is pinned to, whose expiry the health checks watch.
    pub cert: Option<std::path::PathBuf>,
}

impl Access {
    /// A bound connection.
    pub fn connect(&self) -> Result<client::Connection, String> {
        let mut c = client::Connection::open(&self.target, self.timeout)
            .map_err(|e| format!("LDAP server {} ({}): {e}", self.url, self.from))?;
        c.bind(&self.bind_dn, self.password.expose()).map_err(|e| {
            format!(
                "LDAP server {}: binding as {} failed: {e} (the DN and password come from {})",
                self.url, self.bind_dn, self.from
            )
        })?;
        Ok(c)
    }
}

/// Gluu's LDAP client settings, newest layout first (4.x, then 3.1), inside the
/// container root.
const GLUU_PROPERTIES: &[&str] = &[
    "etc/gluu/conf/gluu-ldap.properties",
    "etc/gluu/conf/ox-ldap.properties",
];
/// The key Gluu encodes its stored passwords with.
const GLUU_SALT: &str = "etc/gluu/conf/salt";
/// The LDAP server's own certificate, which the agent pins: OpenDJ's (4.x), then
/// OpenLDAP's (3.1).
const GLUU_LDAP_CERTS: &[&str] = &["etc/certs/opendj.crt", "etc/certs/openldap.crt"];

/// The node's LDAP access: `[ldap]` when it names a URL, else the Gluu installation's
/// settings; `Ok(None)` when there is neither (a load balancer, a cache host). An error
/// says what is wrong with the settings found.
pub fn access(cfg: &AgentConfig) -> Result<Option<Access>, String> {
    let l = &cfg.ldap;
    let timeout = Duration::from_millis(l.timeout_ms.max(100));
    if let Some(url) = &l.url {
        let from = format!("[ldap] in {}", cfg.path.display());
        let bind_dn = l
            .bind_dn
            .clone()
            .ok_or_else(|| format!("{from}: url is set but bind_dn is not"))?;
        let file = l
            .password_file
            .as_ref()
            .ok_or_else(|| format!("{from}: url is set but password_file is not"))?;
        let password = read_password_file(file)?;
        let target = target(url, l.cert_file.as_deref(), &from)?;
        return Ok(Some(Access {
            url: url.clone(),
            target,
            bind_dn,
            password,
            from,
            timeout,
            cert: l.cert_file.clone(),
        }));
    }
    let Some(gluu) = crate::info::detect_gluu(&cfg.root) else {
        return Ok(None);
    };
    let container = cfg.root.join(gluu.root.trim_start_matches('/'));
    let Some(props_path) = GLUU_PROPERTIES
        .iter()
        .map(|p| container.join(p))
        .find(|p| p.is_file())
    else {
        return Ok(None);
    };
    let from = props_path.display().to_string();
    let text =
        std::fs::read_to_string(&props_path).map_err(|e| format!("cannot read {from}: {e}"))?;
    let props = properties(&text);
    let get = |k: &str| {
        props
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
            .ok_or_else(|| format!("{from} has no {k}"))
    };
    let bind_dn = get("bindDN")?;
    let encoded = get("bindPassword")?;
    let server = get("servers")?
        .split(',')
        .map(str::trim)
        .find(|s| !s.is_empty())
        .map(str::to_string)
        .ok_or_else(|| format!("{from}: servers is empty"))?;
    let ssl = props
        .iter()
        .find(|(k, _)| k == "useSSL")
        .is_none_or(|(_, v)| v.eq_ignore_ascii_case("true"));
    let salt_path = container.join(GLUU_SALT);
    let salt = gluu_salt(&container)?;
    let password = gluu_decode(&encoded, &salt).map_err(|e| {
        format!(
            "{from}: bindPassword cannot be decoded with {}: {e}",
            salt_path.display()
        )
    })?;
    let url = format!("{}://{server}", if ssl { "ldaps" } else { "ldap" });
    let cert = GLUU_LDAP_CERTS
        .iter()
        .map(|p| container.join(p))
        .find(|p| p.is_file());
    let target = target(&url, cert.as_deref(), &from)?;
    Ok(Some(Access {
        url,
        target,
        bind_dn,
        password,
        from,
        timeout,
        cert,
    }))
}

/// The connection target of `url`: TLS pinned to `cert` for `ldaps://`; plain TCP
/// only to a loopback address, where nothing crosses a network.
fn target(url: &str, cert: Option<&Path>, from: &str) -> Result<client::Target, String> {
    let (tls, rest) = if let Some(r) = url.strip_prefix("ldaps://") {
        (true, r)
    } else if let Some(r) = url.strip_prefix("ldap://") {
        (false, r)
    } else {
        return Err(format!("{from}: {url} is not an ldap:// or ldaps:// URL"));
    };
    let hostport = rest.trim_end_matches('/');
    let addr = if hostport
        .rsplit_once(':')
        .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok())
    {
        hostport.to_string()
    } else {
        format!("{hostport}:{}", if tls { 636 } else { 389 })
    };
    if !tls {
        let host = addr
            .rsplit_once(':')
            .map_or("", |(h, _)| h)
            .trim_matches(['[', ']']);
        let loopback = host == "localhost"
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        if !loopback {
            return Err(format!(
                "{from}: {url} would send the bind password in clear over the network; use ldaps://, or ldap:// to a loopback address"
            ));
        }
        return Ok(client::Target { addr, tls: None });
    }
    let cert = cert.ok_or_else(|| {
        format!("{from}: {url} needs the server's certificate to check it against: set cert_file in [ldap]")
    })?;
    let pem = std::fs::read_to_string(cert).map_err(|e| {
        format!(
            "cannot read the LDAP server's certificate {}: {e}",
            cert.display()
        )
    })?;
    let der = clustermgr_protocol::identity::cert_from_pem(&pem)
        .map_err(|e| format!("{}: {e}", cert.display()))?;
    let pin = clustermgr_protocol::identity::sha256_hex(&der);
    let config = clustermgr_protocol::identity::pinned_client_config(&pin)
        .map_err(|e| format!("TLS for {url}: {e}"))?;
    Ok(client::Target {
        addr,
        tls: Some(Arc::new(config)),
    })
}

/// Reads a password file, which must be the owner's alone.
fn read_password_file(path: &Path) -> Result<Secret, String> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path)
        .map_err(|e| format!("cannot read the LDAP password file {}: {e}", path.display()))?;
    if meta.mode() & 0o077 != 0 {
        return Err(format!(
            "the LDAP password file {} can be read by others (mode {:o}): chmod 600 {}",
            path.display(),
            meta.mode() & 0o777,
            path.display()
        ));
    }
    let mut bytes = std::fs::read(path)
        .map_err(|e| format!("cannot read the LDAP password file {}: {e}", path.display()))?;
    while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        bytes.pop();
    }
    Ok(Secret::from(bytes))
}

/// `key = value` / `key: value` lines of a Java properties file (no continuations:
/// Gluu writes none).
fn properties(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with('!'))
        .filter_map(|l| {
            let at = l.find(['=', ':'])?;
            Some((l[..at].trim().to_string(), l[at + 1..].trim().to_string()))
        })
        .collect()
}

/// Gluu's stored-password encoding: base64 of triple DES (ECB, PKCS#5 padding) keyed
/// with the node's salt.
/// The key Gluu encrypts its stored passwords with: `encodeSalt` in the container's
/// `etc/gluu/conf/salt` (`container` is the container root on the host).
pub fn gluu_salt(container: &Path) -> Result<String, String> {
    let salt_path = container.join(GLUU_SALT);
    let salt = std::fs::read_to_string(&salt_path)
        .map_err(|e| format!("cannot read {}: {e}", salt_path.display()))?;
    properties(&salt)
        .into_iter()
        .find(|(k, _)| k == "encodeSalt")
        .map(|(_, v)| v)
        .ok_or_else(|| format!("{} has no encodeSalt", salt_path.display()))
}

/// `plain` encrypted as Gluu stores passwords: triple DES (ECB, PKCS#5 padding) under
/// the salt, base64. Deterministic, so an unchanged password compares equal.
pub fn gluu_encode(plain: &[u8], salt: &str) -> Result<String, String> {
    use base64::Engine as _;
    use des::cipher::{Block, BlockCipherEncrypt, KeyInit};
    let key = salt.as_bytes();
    if key.len() != 24 {
        return Err(format!("the salt is {} characters, not 24", key.len()));
    }
    let cipher = des::TdesEde3::new_from_slice(key).map_err(|e| e.to_string())?;
    let pad = 8 - plain.len() % 8;
    let mut data = zeroize::Zeroizing::new(plain.to_vec());
    data.extend(std::iter::repeat_n(pad as u8, pad));
    for block in data.chunks_mut(8) {
        let block = <&mut Block<des::TdesEde3>>::try_from(block)
            .map_err(|_| "a block is not 8 bytes".to_string())?;
        cipher.encrypt_block(block);
    }
    Ok(base64::engine::general_purpose::STANDARD.encode(&*data))
}

fn gluu_decode(encoded: &str, salt: &str) -> Result<Secret, String> {
    use base64::Engine as _;
    use des::cipher::{Block, BlockCipherDecrypt, KeyInit};
    let data = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|_| "it is not base64")?;
    let key = salt.as_bytes();
    if key.len() != 24 {
        return Err(format!("the salt is {} characters, not 24", key.len()));
    }
    if data.is_empty() || data.len() % 8 != 0 {
        return Err("its length is not a whole number of blocks".into());
    }
    let cipher = des::TdesEde3::new_from_slice(key).map_err(|e| e.to_string())?;
    let mut out = zeroize::Zeroizing::new(data);
    for block in out.chunks_mut(8) {
        let block = <&mut Block<des::TdesEde3>>::try_from(block)
            .map_err(|_| "a block is not 8 bytes".to_string())?;
        cipher.decrypt_block(block);
    }
    let pad = *out.last().unwrap_or(&0) as usize;
    if pad == 0 || pad > 8 || !out.ends_with(&vec![pad as u8; pad]) {
        return Err("the salt does not match it (the padding is wrong)".into());
    }
    let keep = out.len() - pad;
    out.truncate(keep);
    Ok(Secret(out))
}

#[cfg(test)]
mod tests;
