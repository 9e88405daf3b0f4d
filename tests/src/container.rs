//! Gluu containers on harness hosts: a busybox chroot at `/opt/gluu-server` with Gluu's
//! LDAP properties, and one whose Java is the machine's, so the real `keytool` runs
//! chrooted as Gluu's does.

use crate::netns::Host;

/// The container root.
pub const ROOT: &str = "/opt/gluu-server";

/// A busybox container on `h`: a shell and a few tools, `/etc/hosts`, and Gluu's LDAP
/// properties (its bind password encrypted with no salt).
pub fn busybox(h: &Host) {
    h.sh(
        "set -e; r=/opt/gluu-server; mkdir -p $r/bin $r/etc/gluu/conf; cp /bin/busybox $r/bin/busybox; \
         for t in sh grep ls cat; do ln -sf busybox $r/bin/$t; done; \
         echo '127.0.0.1 localhost' > $r/etc/hosts; \
         printf 'bindDN: cn=directory manager\\nbindPassword: c2VjcmV0LXBhc3N3b3Jk\\nservers: localhost:1636\\nuseSSL: true\\n' > $r/etc/gluu/conf/gluu-ldap.properties",
    );
}

/// [`busybox`], with the machine's `/usr` (and `/proc`, `/dev`, Java's `/etc`
/// settings) bound in and `/opt/jre/bin/keytool` the machine's (default-jre-headless),
/// in Java 11's layout (`/opt/jre/lib/security`, with an empty `cacerts` whose
/// password is the JDK's `changeit`, as every Java has one); and Gluu's `jetty` user
/// (uid 1001).
pub fn java(h: &Host) {
    busybox(h);
    let keytool =
        std::fs::canonicalize("/usr/bin/keytool").expect("keytool (default-jre-headless)");
    let java_etc = std::fs::read_dir("/etc")
        .expect("/etc")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("java-"))
        .collect::<Vec<_>>();
    let mut binds = String::new();
    for d in ["usr", "proc", "dev"]
        .iter()
        .map(|d| d.to_string())
        .chain(java_etc.iter().map(|d| format!("etc/{d}")))
    {
        binds.push_str(&format!("mkdir -p $r/{d} && mount --bind /{d} $r/{d}; "));
    }
    h.sh(&format!(
        "set -e; r={ROOT}; {binds}\
         ln -sf usr/lib $r/lib; ln -sf usr/lib64 $r/lib64; \
         mkdir -p $r/tmp $r/opt/jre/bin $r/opt/jre/lib/security $r/etc/certs; \
         ln -sf {} $r/opt/jre/bin/keytool; \
         printf 'root:x:0:0::/root:/bin/sh\\njetty:x:1001:1001::/home/jetty:/bin/false\\n' > $r/etc/passwd; \
         printf 'root:x:0:\\njetty:x:1001:\\n' > $r/etc/group; \
         k=\"chroot $r /opt/jre/bin/keytool\"; s=/opt/jre/lib/security/cacerts; \
         $k -genkeypair -alias seed -keyalg EC -dname CN=seed -keystore $s -storepass changeit >/dev/null 2>&1; \
         $k -delete -alias seed -keystore $s -storepass changeit >/dev/null 2>&1",
        keytool.display(),
    ));
}
