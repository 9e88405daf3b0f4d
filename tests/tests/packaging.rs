//! What clustermgr ships: `packaging/build` runs once for this whole binary, then the
//! tests inspect both .debs (files, modes, owners, control fields, conffiles), check
//! the packaged binaries against the old-host baseline (their ELF needs, and a cluster
//! run under Linux 3.10's system calls), verify the systemd units, and check the
//! generated packaging files against their generator.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use clustermgr::elf::{BinaryFacts, inspect};
use clustermgr_tests::packaging::{DEB_ARCH, GLIBC_BASELINE, deb_version, workspace_root};
use clustermgr_tests::{Cluster, node, stderr, stdout};

/// One package as built: the .deb, and its payload and control files unpacked.
struct Deb {
    file: PathBuf,
    root: PathBuf,
    control: PathBuf,
}

struct Built {
    agent: Deb,
    controller: Deb,
}

/// The packages, built once per test binary: a release build for the baseline takes
/// minutes, and every test here reads its output. A failed build fails every test with
/// its message, without building again.
fn built() -> &'static Built {
    static BUILT: OnceLock<Result<Built, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            std::panic::catch_unwind(build).map_err(|panic| {
                let text = panic.downcast_ref::<&str>().map(|s| s.to_string());
                text.or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default()
            })
        })
        .as_ref()
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Runs `packaging/build` into this test's target directory and unpacks both .debs.
fn build() -> Built {
    // target/<profile>/deps/packaging-xxxx
    let exe = std::env::current_exe().expect("test executable path");
    let target = exe.ancestors().nth(3).expect("target dir").to_path_buf();
    let o = Command::new(workspace_root().join("packaging/build"))
        .env("CARGO_TARGET_DIR", &target)
        .stdin(Stdio::null())
        .output()
        .expect("run packaging/build");
    assert!(
        o.status.success(),
        "packaging/build failed:\n{}{}",
        stdout(&o),
        stderr(&o)
    );
    let debs: Vec<PathBuf> = stdout(&o).lines().map(PathBuf::from).collect();
    let unpacked = target.join("packages/unpacked");
    let _ = std::fs::remove_dir_all(&unpacked);
    std::fs::create_dir_all(&unpacked).unwrap();
    let deb = |name: &str| {
        let prefix = format!("{name}_");
        let file = debs
            .iter()
            .find(|d| {
                d.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with(&prefix)
            })
            .unwrap_or_else(|| panic!("packaging/build printed no {name} .deb: {debs:?}"))
            .clone();
        let (root, control) = (unpacked.join(name), unpacked.join(format!("{name}.DEBIAN")));
        dpkg_deb(&["-x".as_ref(), file.as_os_str(), root.as_os_str()]);
        dpkg_deb(&["-e".as_ref(), file.as_os_str(), control.as_os_str()]);
        Deb {
            file,
            root,
            control,
        }
    };
    Built {
        agent: deb("clustermgr-agent"),
        controller: deb("clustermgr"),
    }
}

fn dpkg_deb<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> String {
    let o = Command::new("dpkg-deb")
        .args(args)
        .output()
        .expect("dpkg-deb");
    assert!(o.status.success(), "dpkg-deb failed: {}", stderr(&o));
    stdout(&o)
}

impl Deb {
    /// Every entry of `dpkg-deb -c`: path → (mode string, owner/group).
    fn contents(&self) -> BTreeMap<String, (String, String)> {
        dpkg_deb(&["-c".as_ref(), self.file.as_os_str()])
            .lines()
            .map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                assert_eq!(f.len(), 6, "unexpected dpkg-deb -c line {l:?}");
                (
                    f[5].trim_start_matches('.').to_string(),
                    (f[0].into(), f[1].into()),
                )
            })
            .collect()
    }

    /// A control field, as `dpkg-deb -f` reads it.
    fn field(&self, name: &str) -> String {
        dpkg_deb(&["-f".as_ref(), self.file.as_os_str(), name.as_ref()])
            .trim_end()
            .to_string()
    }

    fn file(&self, path: &str) -> PathBuf {
        self.root.join(path.trim_start_matches('/'))
    }

    fn control_file(&self, name: &str) -> Option<String> {
        std::fs::read_to_string(self.control.join(name)).ok()
    }

    /// The regular files, their modes, and that root owns every entry.
    fn assert_files(&self, expected: &[(&str, &str)]) {
        let contents = self.contents();
        for (path, (mode, owner)) in &contents {
            assert_eq!(owner, "root/root", "{path} in {}", self.file.display());
            if mode.starts_with('d') {
                assert_eq!(mode, "drwxr-xr-x", "{path}");
            }
        }
        let files: Vec<(&str, &str)> = contents
            .iter()
            .filter(|(_, (mode, _))| !mode.starts_with('d'))
            .map(|(p, (m, _))| (p.as_str(), m.as_str()))
            .collect();
        let mut expected = expected.to_vec();
        expected.sort();
        assert_eq!(files, expected, "files of {}", self.file.display());
    }

    /// The fields every package shares, and that its control file is the committed
    /// one plus Installed-Size.
    fn assert_control(&self, package: &str) {
        assert_eq!(self.field("Package"), package);
        assert_eq!(
            self.field("Version"),
            deb_version(env!("CARGO_PKG_VERSION"))
        );
        assert_eq!(self.field("Architecture"), DEB_ARCH);
        let installed: u64 = self.field("Installed-Size").parse().expect("KiB");
        let committed = read(
            &workspace_root()
                .join("packaging/deb")
                .join(package)
                .join("control"),
        );
        assert_eq!(
            self.control_file("control").unwrap(),
            format!("{committed}Installed-Size: {installed}\n")
        );
        for script in ["postinst", "prerm", "postrm"] {
            let path = self.control.join(script);
            let mode = std::os::unix::fs::PermissionsExt::mode(
                &std::fs::metadata(&path).expect(script).permissions(),
            );
            assert_eq!(mode & 0o777, 0o755, "{script} of {package}");
            let committed = read(
                &workspace_root()
                    .join("packaging/deb")
                    .join(package)
                    .join(script),
            );
            assert_eq!(read(&path), committed);
        }
    }

    /// The program a packaged unit starts: it must be a file of this package.
    fn assert_exec_start_is_packaged(&self, unit: &str) {
        let text = read(&self.file(unit));
        let exec = text
            .lines()
            .find_map(|l| l.strip_prefix("ExecStart="))
            .expect("ExecStart");
        let program = exec.split_whitespace().next().unwrap();
        assert!(
            self.contents().contains_key(program),
            "{unit} starts {program}, which {} does not install",
            self.file.display()
        );
    }
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The packaged agent's facts, checked against the baseline hosts.
fn assert_baseline(binary: &Path) -> BinaryFacts {
    let facts = inspect(binary).unwrap();
    assert_eq!(facts.arch, "x86_64", "{}", binary.display());
    let needed = facts
        .glibc_needed
        .expect("dynamically linked against glibc");
    assert!(
        needed <= GLIBC_BASELINE,
        "{} needs glibc {needed:?}, newer than {GLIBC_BASELINE:?}",
        binary.display()
    );
    let (major, minor) = GLIBC_BASELINE;
    assert_eq!(
        facts.serves("x86_64", Some(&format!("{major}.{minor}"))),
        Ok(())
    );
    facts
}

#[test]
fn the_agent_deb_holds_the_baseline_agent_its_config_as_conffile_and_unit() {
    let deb = &built().agent;
    deb.assert_files(&[
        ("/etc/clustermgr/agent.toml", "-rw-r--r--"),
        ("/lib/systemd/system/clustermgr-agent.service", "-rw-r--r--"),
        ("/usr/bin/clustermgr-agent", "-rwxr-xr-x"),
        ("/usr/share/doc/clustermgr-agent/README.md", "-rw-r--r--"),
        ("/usr/share/doc/clustermgr-agent/copyright", "-rw-r--r--"),
    ]);
    deb.assert_control("clustermgr-agent");
    assert_eq!(deb.field("Depends"), "libc6 (>= 2.17)");
    assert_eq!(
        deb.control_file("conffiles").as_deref(),
        Some("/etc/clustermgr/agent.toml\n")
    );
    let root = workspace_root();
    assert_eq!(
        read(&deb.file("/etc/clustermgr/agent.toml")),
        read(&root.join("packaging/agent.toml"))
    );
    assert_eq!(
        read(&deb.file("/lib/systemd/system/clustermgr-agent.service")),
        read(&root.join("packaging/deb/clustermgr-agent/clustermgr-agent.service"))
    );
    deb.assert_exec_start_is_packaged("/lib/systemd/system/clustermgr-agent.service");
    assert_baseline(&deb.file("/usr/bin/clustermgr-agent"));
}

#[test]
fn the_controller_deb_holds_the_cli_the_serve_unit_and_the_agent_to_upload() {
    let deb = &built().controller;
    deb.assert_files(&[
        ("/lib/systemd/system/clustermgr-serve.service", "-rw-r--r--"),
        ("/usr/bin/clustermgr", "-rwxr-xr-x"),
        ("/usr/lib/clustermgr/clustermgr-agent", "-rwxr-xr-x"),
        ("/usr/share/doc/clustermgr/README.md", "-rw-r--r--"),
        ("/usr/share/doc/clustermgr/copyright", "-rw-r--r--"),
        (
            "/usr/share/bash-completion/completions/clustermgr",
            "-rw-r--r--",
        ),
        (
            "/usr/share/zsh/vendor-completions/_clustermgr",
            "-rw-r--r--",
        ),
        (
            "/usr/share/fish/vendor_completions.d/clustermgr.fish",
            "-rw-r--r--",
        ),
        ("/usr/share/man/man1/clustermgr.1.gz", "-rw-r--r--"),
    ]);
    // Generated from the CLI's own definitions: every command completes, and the
    // manual reads (man renders it) with the exit codes in it.
    let bash = read(&deb.file("/usr/share/bash-completion/completions/clustermgr"));
    for word in ["exec", "apply", "revoke-controller", "--passphrase-file"] {
        assert!(bash.contains(word), "bash completion lacks {word}");
    }
    assert!(
        read(&deb.file("/usr/share/zsh/vendor-completions/_clustermgr"))
            .starts_with("#compdef clustermgr")
    );
    assert!(
        read(&deb.file("/usr/share/fish/vendor_completions.d/clustermgr.fish"))
            .contains("complete -c clustermgr")
    );
    let page = Command::new("man")
        .env("MANWIDTH", "80")
        .arg("-l")
        .arg(deb.file("/usr/share/man/man1/clustermgr.1.gz"))
        .output()
        .expect("man");
    assert!(page.status.success(), "{}", stderr(&page));
    let page = String::from_utf8_lossy(&page.stdout);
    assert!(
        page.contains("EXIT STATUS") && page.contains("130: interrupted"),
        "{page}"
    );
    deb.assert_control("clustermgr");
    assert_eq!(deb.field("Depends"), "libc6 (>= 2.17), adduser");
    assert_eq!(deb.field("Recommends"), "openssh-client");
    assert_eq!(deb.control_file("conffiles"), None);
    assert_eq!(
        read(&deb.file("/lib/systemd/system/clustermgr-serve.service")),
        read(&workspace_root().join("packaging/systemd/clustermgr-serve.service"))
    );
    deb.assert_exec_start_is_packaged("/lib/systemd/system/clustermgr-serve.service");
    // The agent bootstrap uploads is the very one the agent package installs.
    let upload = assert_baseline(&deb.file("/usr/lib/clustermgr/clustermgr-agent"));
    let packaged = inspect(&built().agent.file("/usr/bin/clustermgr-agent")).unwrap();
    assert_eq!(upload.sha256, packaged.sha256);
    assert_baseline(&deb.file("/usr/bin/clustermgr"));
}

/// Runs `systemd-analyze verify` on `unit` with its ExecStart program `installed_at`
/// replaced by `program` (verify checks that the program exists). Warnings fail too:
/// verify exits 0 on an unknown key or a bad value, which it then ignores.
fn verify_unit(unit: &Path, installed_at: &str, program: &Path) {
    let text = read(unit);
    assert!(
        text.contains(&format!("\nExecStart={installed_at} ")),
        "{} does not start {installed_at}",
        unit.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join(unit.file_name().unwrap());
    std::fs::write(&copy, text.replace(installed_at, program.to_str().unwrap())).unwrap();
    let o = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .unwrap();
    assert!(
        o.status.success() && o.stderr.is_empty(),
        "{}: {}{}",
        unit.display(),
        stdout(&o),
        stderr(&o)
    );
}

#[test]
fn the_systemd_units_verify() {
    let (agent, controller) = (&built().agent, &built().controller);
    let packaging = workspace_root().join("packaging");
    let agent_bin = agent.file("/usr/bin/clustermgr-agent");
    verify_unit(
        &packaging.join("systemd/clustermgr-agent.service"),
        "/usr/local/bin/clustermgr-agent",
        &agent_bin,
    );
    verify_unit(
        &agent.file("/lib/systemd/system/clustermgr-agent.service"),
        "/usr/bin/clustermgr-agent",
        &agent_bin,
    );
    verify_unit(
        &controller.file("/lib/systemd/system/clustermgr-serve.service"),
        "/usr/bin/clustermgr",
        &controller.file("/usr/bin/clustermgr"),
    );
}

/// `program` under `old-kernel`, through a script, for the places that take one path.
fn on_old_kernel(dir: &Path, program: &Path) -> PathBuf {
    let script = dir.join(format!(
        "old-kernel-{}",
        program.file_name().unwrap().to_string_lossy()
    ));
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nexec '{}' '{}' \"$@\"\n",
            env!("CARGO_BIN_EXE_old-kernel"),
            program.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    script
}

fn assert_ok(o: &Output, what: &str) {
    assert!(o.status.success(), "{what}: {}{}", stdout(o), stderr(o));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_binaries_work_without_system_calls_newer_than_linux_3_10() {
    let (agent, controller) = (&built().agent, &built().controller);
    let dir = tempfile::tempdir().unwrap();
    // Prove the filter bites: a call newer than 3.10 fails in the wrapped program.
    let python = Command::new(env!("CARGO_BIN_EXE_old-kernel"))
        .args(["python3", "-c", "import os; os.getrandom(1)"])
        .output()
        .unwrap();
    assert!(
        stderr(&python).contains("Function not implemented"),
        "{}",
        stderr(&python)
    );

    // Agents enroll (key generation: random numbers) and serve QUIC under the filter.
    let agent_bin = on_old_kernel(dir.path(), &agent.file("/usr/bin/clustermgr-agent"));
    let c = Cluster::start_with(&agent_bin, vec![node("gluu1", ""), node("gluu2", "")]).await;
    let cli = on_old_kernel(dir.path(), &controller.file("/usr/bin/clustermgr"));
    let run = |args: &[&str]| {
        c.cli_of(&cli)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    assert_ok(&run(&["ping"]), "ping");
    // A command on each node: the agent spawns and reaps a process group.
    let o = run(&["exec", "--group", "--", "echo", "old kernel"]);
    assert_ok(&o, "exec");
    assert_eq!(
        stdout(&o).matches("old kernel").count(),
        2,
        "{}",
        stdout(&o)
    );
    assert_ok(&run(&["status"]), "status");

    // The controller makes a new cluster (CA keys, the store) under the filter too.
    let o = Command::new(&cli)
        .arg("--home")
        .arg(dir.path().join("new-home"))
        .args(["init", "--cluster", "old"])
        .output()
        .unwrap();
    assert_ok(&o, "init");
}

#[test]
fn the_generated_packaging_files_match_their_generator() {
    let root = workspace_root();
    for (path, expected) in clustermgr_tests::packaging::generated(&root) {
        let committed = std::fs::read_to_string(root.join(&path)).unwrap_or_default();
        assert!(
            committed == expected,
            "{} is not what the generator makes of Cargo.toml and the bootstrap unit; run \
             `cargo run -p clustermgr-tests --bin packaging-gen` and commit the result",
            path.display()
        );
    }
}
