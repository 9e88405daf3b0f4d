//! Finding the node's LDAP access: Gluu's settings and `[ldap]`, and what is refused.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::*;

/// A salt and a password encoded with it by `openssl enc -des-ede3 -nosalt -base64`,
/// as Gluu's setup encodes them.
const SALT: &str = "Q3nLxZ8vWm2pR7tYb4kHs9Jd";
const ENCODED: &str = "hkWsfu01PoSfj3I+9B6kiLIQ+3XdhoGM";
const PLAIN: &str = "S3cret pa$$ with spaces";

/// A self-signed certificate, as the LDAP server's.
fn cert_pem() -> String {
    let key = rcgen::KeyPair::generate().unwrap();
    rcgen::CertificateParams::new(vec!["localhost".into()])
        .unwrap()
        .self_signed(&key)
        .unwrap()
        .pem()
}

fn config(root: &Path, extra: &str) -> AgentConfig {
    let text = format!(
        "cert = \"c\"\nkey = \"k\"\nca = \"a\"\nstate_dir = \"s\"\nroot = \"{}\"\n{extra}",
        root.display()
    );
    AgentConfig::parse(Path::new("/etc/clustermgr/agent.toml"), &text).unwrap()
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

#[test]
fn gluu_passwords_encode_as_gluu_stores_them() {
    // The recorded value Gluu wrote, made again from the plain password.
    assert_eq!(super::gluu_encode(PLAIN.as_bytes(), SALT).unwrap(), ENCODED);
    assert_eq!(super::gluu_encode(b"x", SALT).unwrap(), "BiR9rEMiZms=");
    let round = super::gluu_encode(b"exactly8", SALT).unwrap();
    assert_eq!(gluu_decode(&round, SALT).unwrap().expose(), b"exactly8");
    assert!(super::gluu_encode(b"x", "short").is_err());
}

#[test]
fn gluu_passwords_decode_with_the_salt_and_not_without() {
    assert_eq!(
        gluu_decode(ENCODED, SALT).unwrap().expose(),
        PLAIN.as_bytes()
    );
    assert_eq!(gluu_decode("BiR9rEMiZms=", SALT).unwrap().expose(), b"x");
    let wrong = gluu_decode(ENCODED, "AAAAAAAAAAAAAAAAAAAAAAAA").unwrap_err();
    assert!(wrong.contains("salt does not match"), "{wrong}");
    assert!(
        gluu_decode("not base64!", SALT)
            .unwrap_err()
            .contains("base64")
    );
    assert!(
        gluu_decode(ENCODED, "short")
            .unwrap_err()
            .contains("not 24")
    );
    // Never in debug output.
    assert_eq!(
        format!("{:?}", gluu_decode(ENCODED, SALT).unwrap()),
        "Secret(..)"
    );
}

#[test]
fn a_gluu_node_is_found_from_its_own_settings() {
    let t = tempfile::tempdir().unwrap();
    let c = t.path().join("opt/gluu-server");
    std::fs::create_dir_all(c.join("opt/gluu/jetty/oxauth")).unwrap();
    let cfg = config(t.path(), "");
    assert!(access(&cfg).unwrap().is_none(), "no properties: no access");
    write(
        &c.join("etc/gluu/conf/gluu-ldap.properties"),
        &format!(
            "bindDN: cn=directory manager,o=gluu\nbindPassword: {ENCODED}\nservers: localhost:1636\nuseSSL: true\n"
        ),
    );
    write(
        &c.join("etc/gluu/conf/salt"),
        &format!("encodeSalt = {SALT}\n"),
    );
    let err = access(&cfg).unwrap_err();
    assert!(err.contains("cert_file"), "no certificate to pin: {err}");
    write(&c.join("etc/certs/opendj.crt"), &cert_pem());
    let a = access(&cfg).unwrap().unwrap();
    assert_eq!(a.url, "ldaps://localhost:1636");
    assert_eq!(a.bind_dn, "cn=directory manager,o=gluu");
    assert_eq!(a.password.expose(), PLAIN.as_bytes());
    assert!(a.target.tls.is_some());
    assert!(a.from.ends_with("gluu-ldap.properties"));
    assert!(
        !format!("{a:?}").contains(PLAIN),
        "the password stays out of Debug"
    );
    write(
        &c.join("etc/gluu/conf/salt"),
        "encodeSalt = AAAAAAAAAAAAAAAAAAAAAAAA\n",
    );
    let err = access(&cfg).unwrap_err();
    assert!(err.contains("bindPassword cannot be decoded"), "{err}");
}

#[test]
fn ldap_section_wins_and_its_files_are_checked() {
    let t = tempfile::tempdir().unwrap();
    let pw = t.path().join("ldap.secret");
    write(&pw, "hunter2\n");
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o644)).unwrap();
    let section = |url: &str, cert: &str| {
        format!(
            "[ldap]\nurl = \"{url}\"\nbind_dn = \"cn=admin,dc=example\"\npassword_file = \"{}\"\n{cert}",
            pw.display()
        )
    };
    let cfg = config(t.path(), &section("ldap://127.0.0.1:3890", ""));
    let err = access(&cfg).unwrap_err();
    assert!(err.contains("chmod 600"), "{err}");
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
    let a = access(&cfg).unwrap().unwrap();
    assert_eq!(a.password.expose(), b"hunter2");
    assert_eq!(a.target.addr, "127.0.0.1:3890");
    assert!(a.target.tls.is_none());
    assert!(a.from.contains("[ldap]"));
    // Plain LDAP leaves loopback only over TLS; TLS needs a certificate to pin.
    let err = access(&config(t.path(), &section("ldap://10.0.0.5", ""))).unwrap_err();
    assert!(err.contains("in clear"), "{err}");
    let err = access(&config(t.path(), &section("ldaps://10.0.0.5", ""))).unwrap_err();
    assert!(err.contains("cert_file"), "{err}");
    let cert = t.path().join("server.crt");
    write(&cert, &cert_pem());
    let a = access(&config(
        t.path(),
        &section(
            "ldaps://10.0.0.5",
            &format!("cert_file = \"{}\"\n", cert.display()),
        ),
    ))
    .unwrap()
    .unwrap();
    assert_eq!(a.target.addr, "10.0.0.5:636");
    let err = access(&config(t.path(), &section("http://x", ""))).unwrap_err();
    assert!(err.contains("not an ldap://"), "{err}");
    let err = access(&config(t.path(), "[ldap]\nurl = \"ldap://127.0.0.1\"\n")).unwrap_err();
    assert!(err.contains("bind_dn"), "{err}");
}
