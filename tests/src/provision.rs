//! Provisioning helpers the provisioning tests and benchmark share: Debian's package
//! files fetched once on the controller, package directories made from them, harness
//! hosts made bare of what `apply` installs, and hosts bootstrapped bare.

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
