//! Provisioning helpers the provisioning tests and benchmark share: Debian's package
//! files fetched once on the controller, package directories made from them, harness
//! hosts made bare of what `apply` installs, and hosts bootstrapped bare; and the
//! stand-in Gluu for `gluu install`: packages built with `dpkg-deb` ([`build_deb`]),
//! the stand-in `gluu-server` package ([`gluu_server_deb`]: its container control,
//! `setup.py` and component script run by the container's busybox) and a host made the
//! primary an administrator set up with Gluu's own setup ([`primary`], its setup
//! encrypted with [`ADMIN_PASSWORD`]).

use std::path::{Path, PathBuf};

use crate::netns::{Host, Net};
use crate::{Controller, stderr, succeeded as ok};

/// What the harness hosts are made bare of (the machine has them: `tests/run`
/// installs them), and chrony, which the machine lacks.
pub const PACKAGES: &[&str] = &[
    "nginx",
    "nginx-common",
    "csync2",
    "stunnel4",
    "redis-server",
    "redis-tools",
    "chrony",
];

/// Debian's package files of [`PACKAGES`], downloaded once into the target directory's
/// `tmp/debs` (where `CARGO_TARGET_TMPDIR` points in tests and benches) by `apt-get
/// download` on the controller (the machine).
pub fn downloaded() -> PathBuf {
    // target/<profile>/deps/<test or bench binary>
    let exe = std::env::current_exe().expect("test executable path");
    let target = exe
        .parent()
        .and_then(Path::parent)
        .and_then(Path::parent)
        .expect("target dir");
    let dir = target.join("tmp").join("debs");
    std::fs::create_dir_all(&dir).unwrap();
    let have = |name: &str| {
        std::fs::read_dir(&dir).unwrap().any(|e| {
            e.unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with(&format!("{name}_"))
        })
    };
    let missing: Vec<&str> = PACKAGES.iter().copied().filter(|p| !have(p)).collect();
    if !missing.is_empty() {
        let o = std::process::Command::new("apt-get")
            .arg("download")
            .args(&missing)
            .current_dir(&dir)
            .output()
            .expect("apt-get");
        assert!(o.status.success(), "apt-get download: {}", stderr(&o));
    }
    dir
}

/// A package directory holding the downloaded files whose package is in `names`.
pub fn package_dir(parent: &Path, names: &[&str]) -> PathBuf {
    let dir = parent.join("packages");
    std::fs::create_dir_all(&dir).unwrap();
    for e in std::fs::read_dir(downloaded()).unwrap() {
        let e = e.unwrap();
        let file = e.file_name().to_string_lossy().into_owned();
        let package = file.split('_').next().unwrap_or_default().to_string();
        if file.ends_with(".deb") && names.contains(&package.as_str()) {
            std::fs::copy(e.path(), dir.join(&file)).unwrap();
        }
    }
    dir
}

/// Makes `h` bare of [`PACKAGES`] (chrony too, should the machine have it) and of the
/// time service the machine has, in the
/// host's own `/usr`, `/etc` and `/var`; chrony, once installed, is told not to touch
/// the clock (the hosts share the machine's).
pub fn bare(h: &Host) {
    h.sh(
        "dpkg --purge --force-depends nginx nginx-common csync2 stunnel4 redis-server redis-tools chrony systemd-timesyncd >/dev/null 2>&1; \
         mkdir -p /etc/default && echo 'DAEMON_OPTS=\"-F 1 -x\"' > /etc/default/chrony",
    );
    for p in PACKAGES {
        assert_eq!(installed(h, p), None, "{p} still on {}", h.name);
    }
}

/// The version of `package` installed on `h`.
pub fn installed(h: &Host, package: &str) -> Option<String> {
    let o = h.run(&[
        "dpkg-query",
        "-W",
        "-f=${db:Status-Status} ${Version}",
        package,
    ]);
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    text.strip_prefix("installed ").map(str::to_string)
}

/// Hosts bootstrapped into a new controller home, each made bare.
pub fn hosts(names: &[&str]) -> (Net, Controller) {
    let mut net = Net::new();
    for n in names {
        net.add_host(n);
    }
    for h in net.hosts() {
        bare(h);
    }
    let ctl = Controller::new();
    let inventory = ctl.inventory(&net, "gluu1").display().to_string();
    ok(
        ctl.run(&["node", "add", "--from", &inventory]),
        "node add --from",
    );
    (net, ctl)
}

/// Builds `package` `version` into `dir/packages` with `files` (path, contents,
/// mode) and a `postinst` script.
pub fn build_deb(
    dir: &Path,
    package: &str,
    version: &str,
    files: &[(&str, &str, u32)],
    postinst: &str,
) {
    use std::os::unix::fs::PermissionsExt;
    let root = dir.join(format!("{package}-build"));
    let debian = root.join("DEBIAN");
    std::fs::create_dir_all(&debian).unwrap();
    std::fs::write(
        debian.join("control"),
        format!(
            "Package: {package}\nVersion: {version}\nArchitecture: all\nMaintainer: clustermgr tests <tests@example.org>\nDescription: a stand-in built by clustermgr's tests\n"
        ),
    )
    .unwrap();
    for (path, text, mode) in files
        .iter()
        .copied()
        .chain([("DEBIAN/postinst", postinst, 0o755)])
    {
        let file = root.join(path.trim_start_matches('/'));
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(&file, text).unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    std::fs::create_dir_all(dir.join("packages")).unwrap();
    let out = dir
        .join("packages")
        .join(format!("{package}_{version}_all.deb"));
    let o = std::process::Command::new("dpkg-deb")
        .args(["--build", "--root-owner-group"])
        .arg(&root)
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "dpkg-deb --build: {}", stderr(&o));
}

/// The stand-in `gluu-server` package's container control: it logs what it is asked.
pub const GLUU_SERVERD: &str = "#!/bin/sh\necho \"$1\" >> /var/lib/gluu-stand-in.log\ncase $1 in enable|start|stop|restart) exit 0;; *) echo \"usage: gluu-serverd enable|start|stop|restart\"; exit 2;; esac\n";

/// The stand-in's `setup.py`, run in the container by its busybox shell: it refuses a
/// password in its arguments and a second setup, records what it was given (never the
/// password), fails when the container holds `/fail-setup`, and lays out what Gluu's
/// setup leaves (its own certificate, the configuration directory, the encrypted
/// properties).
pub const SETUP_PY: &str = r#"#!/bin/sh
log=/install/community-edition-setup/stand-in-setup.log
echo "args: $*" > $log
for a in "$@"; do
  case $a in -ldap-admin-password*|-oxtrust-admin-password*|-properties-password*) echo "refused: a password option in the arguments ($a)"; exit 3;; esac
done
f=
while [ $# -gt 0 ]; do case $1 in -f) f=$2; shift 2;; *) shift;; esac; done
[ -n "$f" ] || { echo "no -f FILE"; exit 2; }
[ -d /etc/gluu/conf ] && { echo "This instance already configured. If you need to install new one you should reinstall package first."; exit 1; }
pw=$(grep '^ldapPass=' "$f" | cut -d= -f2-)
[ -n "$pw" ] || { echo "no ldapPass in $f"; exit 2; }
head -n 1 $log | grep -qF -- "$pw" && { echo "refused: the LDAP password is in the arguments"; exit 3; }
echo "mode: $(stat -c %a "$f")" >> $log
grep '^ip=' "$f" >> $log
grep '^hostname=' "$f" >> $log
[ -e /fail-setup ] && { echo "ERROR: the stand-in setup fails, as the test asked (ldapPass=$pw)"; exit 1; }
mkdir -p /etc/gluu/conf /opt/gluu/jetty/oxauth /etc/certs
echo "the node's own certificate" > /etc/certs/httpd.crt
echo "encrypted" > /install/community-edition-setup/setup.properties.last.enc
echo "setup done" >> $log
"#;

/// The stand-in's `post-setup-add-components.py`: it logs its flags and lays out the
/// directory each component has in a real container.
pub const ADD_COMPONENTS_PY: &str = r#"#!/bin/sh
echo "add: $*" >> /install/community-edition-setup/stand-in-setup.log
[ -d /etc/gluu/conf ] || { echo "Gluu is not set up here"; exit 1; }
for a in "$@"; do
  case $a in
    -addshib) mkdir -p /opt/shibboleth-idp;;
    -addpassport) mkdir -p /opt/gluu/node/passport;;
    -addcasa) mkdir -p /opt/gluu/jetty/casa;;
    -addoxd) mkdir -p /opt/oxd-server;;
    *) echo "unknown option $a"; exit 2;;
  esac
done
"#;

/// The stand-in's `postinst`: the container's shell (busybox) and `/tmp`.
pub const GLUU_POSTINST: &str = "#!/bin/sh\nset -e\nr=/opt/gluu-server\nmkdir -p $r/bin $r/tmp $r/etc\n[ -e $r/bin/busybox ] || cp /bin/busybox $r/bin/busybox\nfor t in sh cat grep stat mkdir cut head ls rm; do [ -e $r/bin/$t ] || ln -s busybox $r/bin/$t; done\nchmod 1777 $r/tmp\n";

/// Builds the stand-in `gluu-server` package (version `4.2.3~stand-in`:
/// [`GLUU_SERVERD`] as `/sbin/gluu-serverd`, [`SETUP_PY`] and [`ADD_COMPONENTS_PY`] in
/// the container's `install/community-edition-setup`, [`GLUU_POSTINST`]) into
/// `dir/packages`, beside whatever a package directory there holds.
pub fn gluu_server_deb(dir: &Path) {
    build_deb(
        dir,
        "gluu-server",
        "4.2.3~stand-in",
        &[
            ("sbin/gluu-serverd", GLUU_SERVERD, 0o755),
            (
                "opt/gluu-server/install/community-edition-setup/setup.py",
                SETUP_PY,
                0o755,
            ),
            (
                "opt/gluu-server/install/community-edition-setup/post-setup-add-components.py",
                ADD_COMPONENTS_PY,
                0o755,
            ),
        ],
        GLUU_POSTINST,
    );
}

/// The password the primary's `setup.properties.last.enc` is encrypted with (Gluu
/// uses oxTrust's admin password).
pub const ADMIN_PASSWORD: &str = "oxTrust-Admin-Pass-1";
/// The LDAP password in the primary's properties.
pub const LDAP_PASSWORD: &str = "Ldap-Pass-In-Properties-7";

/// `h` as the primary an administrator set up with Gluu's own setup: the stand-in
/// (built by [`gluu_server_deb`] into `dir/packages`) installed, its
/// `setup.properties.last.enc` encrypted as Gluu does it with [`ADMIN_PASSWORD`] (the
/// plain properties written to `dir` first), its certificates (a new self-signed
/// `httpd.crt` and key for `idp.example.org`, the same as `opendj.crt`, and a link
/// among them, which is not followed) and a custom schema file.
pub fn primary(h: &Host, dir: &Path) {
    let deb = dir.join("packages/gluu-server_4.2.3~stand-in_all.deb");
    h.sh(&format!("dpkg -i {} >/dev/null 2>&1", deb.display()));
    let c = h.path("/opt/gluu-server");
    let ces = c.join("install/community-edition-setup");
    let plain = dir.join("setup.properties.last");
    std::fs::write(
        &plain,
        format!("hostname=gluu1.internal\nip=10.0.0.1\norgName=Example\nldapPass={LDAP_PASSWORD}\noxtrust_admin_password={ADMIN_PASSWORD}\n"),
    )
    .unwrap();
    let o = std::process::Command::new("openssl")
        .args(["enc", "-aes-256-cbc", "-md", "sha256", "-pass"])
        .arg(format!("pass:{ADMIN_PASSWORD}"))
        .arg("-in")
        .arg(&plain)
        .arg("-out")
        .arg(ces.join("setup.properties.last.enc"))
        .output()
        .unwrap();
    assert!(o.status.success(), "openssl enc: {}", stderr(&o));
    h.sh("set -e; r=/opt/gluu-server; mkdir -p $r/etc/certs $r/etc/gluu/conf $r/opt/gluu/jetty/oxauth $r/opt/gluu/schema/opendj; \
          openssl req -x509 -newkey rsa:2048 -nodes -subj /CN=idp.example.org -days 30 -keyout $r/etc/certs/httpd.key -out $r/etc/certs/httpd.crt 2>/dev/null; \
          cp $r/etc/certs/httpd.crt $r/etc/certs/opendj.crt; chmod 600 $r/etc/certs/httpd.key; \
          ln -s /etc/shadow $r/etc/certs/shadow.crt; \
          echo 'dn: cn=schema' > $r/opt/gluu/schema/opendj/77-customAttributes.ldif");
}
