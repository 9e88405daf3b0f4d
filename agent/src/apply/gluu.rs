//! Gluu on a node (`clustermgr gluu install`): reading the primary's setup, setting
//! up a new node's container from it, and moving an old container aside before a
//! reinstall. The package itself is installed beforehand as a package entry.
//!
//! Gluu's setup and post-setup script run inside the container's systemd-nspawn
//! machine when it runs as one (Gluu 4.x; `step::in_machine`), else chrooted.
//!
//! The primary's `setup.properties.last` holds every password of the installation: it
//! is read without following a link, only if root's alone, decrypted (when Gluu left only `.enc`) into an
//! owner-only directory of the agent's own, and on the new node written owner-only for
//! the one run of Gluu's setup, and removed after it whatever happened. Setup gets the
//! file's path, never a password, in its arguments.

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clustermgr_protocol::changeset::{Meta, Scope, StepRun};
use clustermgr_protocol::message::{
    GluuExport, GluuExportSpec, GluuFile, GluuSetupSpec, RemoteError,
};

use super::dir::ContainerTemp;
use super::path::scope_base;
use super::step::{self, Step};
use crate::config::AgentConfig;

/// Gluu's setup directory, inside the container.
const SETUP_DIR: &str = "install/community-edition-setup";

/// Gluu's own control of its container.
const SERVERD: &str = "/sbin/gluu-serverd";

/// How long Gluu's setup may take (it imports LDAP data and deploys every web app).
const SETUP_TIMEOUT: Duration = Duration::from_secs(45 * 60);

/// How long the container's control may take to enable, start or stop it.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(300);

/// How long a started container may take to show its setup.
const READY_WITHIN: Duration = Duration::from_secs(120);

/// The certificates Gluu's setup trusts in Java's `cacerts`, as `HOSTNAME_SUFFIX`.
const TRUSTED: &[&str] = &["httpd", "shibIDP", "idp-encryption", "opendj"];

/// The most files of a directory taken along, and the largest one.
const MAX_FILES: usize = 256;
const MAX_FILE: u64 = 1024 * 1024;

fn base_of(cfg: &AgentConfig, root: &str) -> Result<PathBuf, RemoteError> {
    scope_base(cfg, &Scope::Container { root: root.into() }).map_err(RemoteError::invalid)
}

/// Reads the primary's setup.
pub fn export(
    cfg: &AgentConfig,
    ldap_cfg: &AgentConfig,
    spec: &GluuExportSpec,
    scratch: &Path,
) -> Result<GluuExport, RemoteError> {
    let base = base_of(cfg, &spec.root)?;
    let dir = base.join(SETUP_DIR);
    let plain = dir.join("setup.properties.last");
    let properties = match root_only(&plain) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => decrypt(
            &base,
            &dir.join("setup.properties.last.enc"),
            spec,
            ldap_cfg,
            scratch,
        )?,
        Err(e) => return Err(RemoteError::invalid(format!("{}: {e}", plain.display()))),
    };
    Ok(GluuExport {
        properties,
        certs: files_of(&base.join("etc/certs"))?,
        schema: files_of(&base.join("opt/gluu/schema/opendj"))?,
    })
}

/// `setup.properties.last.enc` decrypted as Gluu encrypted it (`openssl enc
/// -aes-256-cbc`, a password-derived key: SHA-256 since OpenSSL 1.1, MD5 before), with
/// the password given or else the node's LDAP password (Gluu's default for it).
fn decrypt(
    base: &Path,
    enc: &Path,
    spec: &GluuExportSpec,
    ldap_cfg: &AgentConfig,
    scratch: &Path,
) -> Result<Vec<u8>, RemoteError> {
    let sealed = match root_only(enc) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(RemoteError::invalid(format!(
                "{} has neither setup.properties.last nor setup.properties.last.enc: is Gluu set up on this node?",
                enc.parent()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default()
            )));
        }
        Err(e) => return Err(RemoteError::invalid(format!("{}: {e}", enc.display()))),
    };
    let password = match &spec.password {
        Some(p) => p.clone(),
        None => match crate::ldap::access(ldap_cfg) {
            Ok(Some(a)) => String::from_utf8_lossy(a.password.expose()).into_owned(),
            _ => {
                return Err(RemoteError::invalid(
                    "setup.properties.last.enc needs its password, and this node's LDAP password is not known to its agent: give it with `--setup-password-file`",
                ));
            }
        },
    };
    let work = ContainerTemp::new(base, "setup")
        .map_err(|e| RemoteError::internal(format!("cannot decrypt the setup: {e}")))?;
    let out = work.dir.join("setup.properties");
    // openssl reads the copy in the agent's own directory, not a path in the container.
    let copy = work.dir.join("setup.properties.last.enc");
    std::fs::write(&copy, &sealed)
        .map_err(|e| RemoteError::internal(format!("cannot copy the sealed setup: {e}")))?;
    let mut tried = Vec::new();
    for md in ["sha256", "md5"] {
        let run = step::run(
            &Step {
                label: format!("decrypt setup.properties.last.enc ({md})"),
                argv: vec![
                    "openssl".into(),
                    "enc".into(),
                    "-d".into(),
                    "-aes-256-cbc".into(),
                    "-md".into(),
                    md.into(),
                    "-in".into(),
                    copy.display().to_string(),
                    "-out".into(),
                    out.display().to_string(),
                    "-pass".into(),
                    "stdin".into(),
                ],
                reload_or_start: None,
                stdin: Some(format!("{password}\n")),
            },
            CONTROL_TIMEOUT,
            scratch,
        );
        if run.ok
            && let Ok(bytes) = std::fs::read(&out)
            && !bytes.is_empty()
            && std::str::from_utf8(&bytes).is_ok()
        {
            return Ok(bytes);
        }
        tried.push(md);
    }
    Err(RemoteError::invalid(format!(
        "setup.properties.last.enc does not open with {} (tried {}): give the password it was encrypted with (Gluu uses oxTrust's admin password) with `--setup-password-file`",
        if spec.password.is_some() {
            "the password given"
        } else {
            "this node's LDAP password"
        },
        tried.join(" and ")
    )))
}

/// A regular file's bytes, reached without following a link anywhere on its path,
/// owned by root and writable by nobody else: what decides the new node's setup must
/// not be a service account's to choose.
fn root_only(path: &Path) -> io::Result<Vec<u8>> {
    let (bytes, meta) = super::read_nofollow(path)?;
    if meta.uid != 0 || meta.mode & 0o022 != 0 {
        return Err(io::Error::other(format!(
            "it is not root's alone (owner uid {}, mode {:o}): it is not used",
            meta.uid, meta.mode
        )));
    }
    Ok(bytes)
}

/// The regular files directly in `dir` (none when it is absent); links and
/// directories are left out.
fn files_of(dir: &Path) -> Result<Vec<GluuFile>, RemoteError> {
    use std::os::unix::fs::MetadataExt;
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(RemoteError::internal(format!(
                "cannot list {}: {e}",
                dir.display()
            )));
        }
    };
    let mut out = Vec::new();
    for e in entries.flatten() {
        let Ok(meta) = e.path().symlink_metadata() else {
            continue;
        };
        let name = e.file_name().to_string_lossy().into_owned();
        if !meta.is_file() || !name_ok(&name) {
            continue;
        }
        if out.len() == MAX_FILES {
            return Err(RemoteError::invalid(format!(
                "{} holds more than {MAX_FILES} files; clustermgr copies a Gluu setup's, not a whole directory",
                dir.display()
            )));
        }
        if meta.len() > MAX_FILE {
            return Err(RemoteError::invalid(format!(
                "{} is over {MAX_FILE} bytes: not a file of a Gluu setup",
                e.path().display()
            )));
        }
        let (bytes, _) = super::read_nofollow(&e.path()).map_err(|err| {
            RemoteError::internal(format!("cannot read {}: {err}", e.path().display()))
        })?;
        out.push(GluuFile {
            name,
            mode: meta.mode() & 0o7777,
            uid: meta.uid(),
            gid: meta.gid(),
            bytes,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// A file name that stays in its directory.
fn name_ok(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\0'])
}

/// Sets up Gluu in the container: enables and starts it, runs Gluu's setup with the
/// primary's properties, lays the primary's certificates and schema over what setup
/// made, trusts them in Java's `cacerts`, and restarts it. Stops at the first step that
/// fails; the properties file is removed whatever happened.
pub fn setup(
    cfg: &AgentConfig,
    spec: &GluuSetupSpec,
    scratch: &Path,
) -> Result<Vec<StepRun>, RemoteError> {
    crate::packages::allowed(cfg).map_err(RemoteError::refused)?;
    for f in spec.certs.iter().chain(&spec.schema) {
        if !name_ok(&f.name) {
            return Err(RemoteError::invalid(format!(
                "{:?} is not a file name",
                f.name
            )));
        }
    }
    if spec.hostname.is_empty()
        || spec
            .hostname
            .contains(|c: char| c.is_whitespace() || c.is_control())
    {
        return Err(RemoteError::invalid("the cluster's hostname is not a name"));
    }
    let base = base_of(cfg, &spec.root)?;
    if base.join("etc/gluu/conf").exists() {
        return Err(RemoteError::invalid(format!(
            "Gluu is already set up in {} (it has /etc/gluu/conf): `clustermgr gluu install NODE --force` moves it aside first",
            spec.root
        )));
    }
    let secrets = secret_values(&spec.properties);
    let mut runs = Vec::new();
    let run = |runs: &mut Vec<StepRun>, label: String, argv: Vec<String>, timeout: Duration| {
        let r = step::run(
            &Step {
                label,
                argv,
                reload_or_start: None,
                stdin: None,
            },
            timeout,
            scratch,
        );
        let ok = r.ok;
        runs.push(r);
        ok
    };
    let told = |runs: &mut Vec<StepRun>, label: String, result: Result<String, String>| {
        let ok = result.is_ok();
        runs.push(StepRun {
            step: label,
            ok,
            output: result.unwrap_or_else(|e| e),
        });
        ok
    };
    for verb in ["enable", "start"] {
        if !run(
            &mut runs,
            format!("{verb} the Gluu container ({SERVERD} {verb})"),
            vec![SERVERD.into(), verb.into()],
            CONTROL_TIMEOUT,
        ) {
            return Ok(runs);
        }
    }
    let setup_py = base.join(SETUP_DIR).join("setup.py");
    let started = Instant::now();
    while !setup_py.exists() && started.elapsed() < READY_WITHIN {
        std::thread::sleep(Duration::from_millis(200));
    }
    if !told(
        &mut runs,
        "the container's setup is there".into(),
        if setup_py.exists() {
            Ok(format!("/{SETUP_DIR}/setup.py"))
        } else {
            Err(format!(
                "no /{SETUP_DIR}/setup.py in the container {} s after it started: is the gluu-server package whole?",
                READY_WITHIN.as_secs()
            ))
        },
    ) {
        return Ok(runs);
    }
    // The properties for this one run, owner-only, gone when this scope ends.
    let props = Properties::write(
        &base.join(SETUP_DIR).join("setup.properties"),
        &spec.properties,
    )
    .map_err(|e| RemoteError::internal(format!("cannot write setup.properties: {e}")))?;
    let mut args = format!(
        "cd /{SETUP_DIR} && exec ./setup.py -c -n -f /{SETUP_DIR}/setup.properties --listen_all_interfaces"
    );
    if spec.no_data {
        args.push_str(" --no-data");
    }
    let ok = run(
        &mut runs,
        format!(
            "Gluu's setup (setup.py -c -n -f setup.properties --listen_all_interfaces{})",
            if spec.no_data { " --no-data" } else { "" }
        ),
        step::in_machine(&base, vec!["/bin/sh".into(), "-c".into(), args]),
        SETUP_TIMEOUT,
    );
    drop(props);
    // What setup printed may quote a password from the properties.
    for r in &mut runs {
        r.output = redact(&r.output, &secrets);
    }
    if !ok {
        return Ok(runs);
    }
    let certs = base.join("etc/certs");
    if !told(
        &mut runs,
        format!(
            "the primary's {} certificate files in /etc/certs",
            spec.certs.len()
        ),
        lay_down(&certs, &spec.certs),
    ) {
        return Ok(runs);
    }
    let schema_dirs = [
        base.join("opt/gluu/schema/opendj"),
        base.join("opt/opendj/config/schema"),
    ];
    if !spec.schema.is_empty() {
        let mut result = lay_down(&schema_dirs[0], &spec.schema);
        if result.is_ok() && schema_dirs[1].is_dir() {
            let renamed: Vec<GluuFile> = spec
                .schema
                .iter()
                .map(|f| GluuFile {
                    name: format!("999-clustmgr-{}", f.name),
                    ..f.clone()
                })
                .collect();
            result = lay_down(&schema_dirs[1], &renamed);
        }
        if !told(
            &mut runs,
            format!("the primary's {} custom schema files", spec.schema.len()),
            result,
        ) {
            return Ok(runs);
        }
    }
    for suffix in TRUSTED {
        let file = format!("/etc/certs/{suffix}.crt");
        if !base.join(file.trim_start_matches('/')).is_file() {
            continue;
        }
        let trust = clustermgr_protocol::changeset::Action::JavaTrust {
            alias: format!("{}_{suffix}", spec.hostname),
            cert: file,
        };
        let steps = step::action_steps(
            &trust,
            &Scope::Container {
                root: spec.root.clone(),
            },
            &base,
            &cfg.root,
            &|_| false,
        )
        .map_err(RemoteError::invalid)?;
        for s in steps {
            let r = step::run(&s, CONTROL_TIMEOUT, scratch);
            let ok = r.ok;
            runs.push(r);
            if !ok {
                return Ok(runs);
            }
        }
    }
    run(
        &mut runs,
        format!("restart the Gluu container ({SERVERD} restart)"),
        vec![SERVERD.into(), "restart".into()],
        CONTROL_TIMEOUT,
    );
    Ok(runs)
}

/// Writes each of `files` into `dir` with its mode (no set-id bits) and owner, each
/// replaced at once through directory handles that never follow a link (a service
/// account owning a directory on the way cannot redirect root's writes).
fn lay_down(dir: &Path, files: &[GluuFile]) -> Result<String, String> {
    for f in files {
        let real = dir.join(&f.name);
        let temp = super::temp_beside(&real, crate::journal::now_ms(), "-gluu");
        let meta = Meta {
            mode: f.mode & 0o777,
            uid: f.uid,
            gid: f.gid,
        };
        super::write_temp(&temp, &f.bytes, &meta)
            .and_then(|()| super::rename_into_place(&temp, &real))
            .map_err(|e| {
                let _ = super::remove_nofollow(&temp);
                format!("{}: {e}", real.display())
            })?;
    }
    Ok(format!("{} files in {}", files.len(), dir.display()))
}

/// The setup's properties file, removed (with the plain copy Gluu's setup may leave
/// beside it) when dropped.
struct Properties(PathBuf);

impl Properties {
    fn write(path: &Path, bytes: &[u8]) -> io::Result<Properties> {
        let temp = super::temp_beside(path, crate::journal::now_ms(), "-setup");
        let meta = Meta {
            mode: 0o600,
            uid: 0,
            gid: 0,
        };
        super::write_temp(&temp, bytes, &meta)
            .and_then(|()| super::rename_into_place(&temp, path))
            .inspect_err(|_| {
                let _ = super::remove_nofollow(&temp);
            })?;
        Ok(Properties(path.to_path_buf()))
    }
}

impl Drop for Properties {
    fn drop(&mut self) {
        let _ = super::remove_nofollow(&self.0);
        let _ = super::remove_nofollow(&self.0.with_file_name("setup.properties.last"));
    }
}

/// The values of the properties that hold a secret (a password, a salt, a key's
/// password), as setup's output might quote them.
fn secret_values(properties: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(properties)
        .lines()
        .filter_map(|l| l.split_once('='))
        .filter(|(k, v)| {
            let k = k.to_ascii_lowercase();
            v.trim().len() >= 4
                && ["pass", "pw", "secret", "salt"]
                    .iter()
                    .any(|w| k.contains(w))
        })
        .map(|(_, v)| v.trim().to_string())
        .collect()
}

/// `text` with every one of `secrets` replaced.
fn redact(text: &str, secrets: &[String]) -> String {
    let mut out = text.to_string();
    for s in secrets {
        out = out.replace(s.as_str(), "(redacted)");
    }
    out
}

/// Stops the node's Gluu, removes its package and moves what is left of the container
/// aside (`ROOT.replaced-UNIXTIME`): nothing of the old installation is deleted.
pub fn remove(cfg: &AgentConfig, root: &str, scratch: &Path) -> Result<String, RemoteError> {
    crate::packages::allowed(cfg).map_err(RemoteError::refused)?;
    let base = base_of(cfg, root)?;
    // Stopping a container that is not running is not a failure worth stopping for.
    let _ = step::run(
        &Step {
            label: "stop the Gluu container".into(),
            argv: vec![SERVERD.into(), "stop".into()],
            reload_or_start: None,
            stdin: None,
        },
        CONTROL_TIMEOUT,
        scratch,
    );
    let manager = crate::packages::Manager::detect().map_err(RemoteError::internal)?;
    let installed = crate::packages::installed(manager, "gluu-server")
        .map_err(RemoteError::internal)?
        .is_some();
    let argv: Vec<String> = match manager {
        _ if !installed => vec!["true".into()],
        crate::packages::Manager::Apt => {
            vec!["dpkg".into(), "--purge".into(), "gluu-server".into()]
        }
        _ => vec!["rpm".into(), "-e".into(), "gluu-server".into()],
    };
    let purge = step::run(
        &Step {
            label: "remove the gluu-server package".into(),
            argv,
            reload_or_start: None,
            stdin: None,
        },
        CONTROL_TIMEOUT,
        scratch,
    );
    if !purge.ok {
        return Err(RemoteError::internal(format!(
            "removing the gluu-server package failed: {}",
            purge.output
        )));
    }
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let moved = PathBuf::from(format!("{}.replaced-{stamp}", base.display()));
    match std::fs::rename(&base, &moved) {
        Ok(()) => Ok(moved.display().to_string()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(String::new()),
        Err(e) => Err(RemoteError::internal(format!(
            "the package is removed, but {} could not be moved aside: {e}",
            base.display()
        ))),
    }
}

/// The components Gluu's post-setup script adds, by the word after its `-add`, and the
/// directory each has in the container once installed (as `info` tells installed ones).
const COMPONENT_DIRS: &[(&str, &str)] = &[
    ("shib", "opt/shibboleth-idp"),
    ("passport", "opt/gluu/node/passport"),
    ("casa", "opt/gluu/jetty/casa"),
    ("oxd", "opt/oxd-server"),
];

/// Adds `components` to the Gluu set up in the container with Gluu's own
/// `post-setup-add-components.py` (which fetches what it installs from Gluu's
/// repositories), then restarts the container.
pub fn add_components(
    cfg: &AgentConfig,
    root: &str,
    components: &[String],
    scratch: &Path,
) -> Result<Vec<StepRun>, RemoteError> {
    crate::packages::allowed(cfg).map_err(RemoteError::refused)?;
    if components.is_empty()
        || components
            .iter()
            .any(|c| !COMPONENT_DIRS.iter().any(|(w, _)| w == c))
    {
        return Err(RemoteError::invalid(format!(
            "components are {}; asked for {}",
            COMPONENT_DIRS
                .iter()
                .map(|(w, _)| *w)
                .collect::<Vec<_>>()
                .join(", "),
            components.join(", ")
        )));
    }
    let base = base_of(cfg, root)?;
    if !base
        .join(SETUP_DIR)
        .join("post-setup-add-components.py")
        .is_file()
    {
        return Err(RemoteError::invalid(format!(
            "no /{SETUP_DIR}/post-setup-add-components.py in the container at {root}: is Gluu set up on this node?"
        )));
    }
    let flags: Vec<String> = components.iter().map(|c| format!("-add{c}")).collect();
    let mut runs = vec![step::run(
        &Step {
            label: format!("post-setup-add-components.py {}", flags.join(" ")),
            argv: vec![
                "chroot".into(),
                base.display().to_string(),
                "/bin/sh".into(),
                "-c".into(),
                format!(
                    "cd /{SETUP_DIR} && exec ./post-setup-add-components.py {}",
                    flags.join(" ")
                ),
            ],
            reload_or_start: None,
            stdin: None,
        },
        SETUP_TIMEOUT,
        scratch,
    )];
    // Gluu's script also ends 0 when it could not go on: each component must be there.
    if runs[0].ok {
        let missing: Vec<&str> = components
            .iter()
            .filter(|c| {
                COMPONENT_DIRS
                    .iter()
                    .find(|(w, _)| w == c)
                    .is_some_and(|(_, d)| !base.join(d).exists())
            })
            .map(String::as_str)
            .collect();
        if !missing.is_empty() {
            runs.push(StepRun {
                step: "the components are there".into(),
                ok: false,
                output: format!(
                    "the script ended without installing {} (its output is above)",
                    missing.join(", ")
                ),
            });
        }
    }
    if runs.iter().all(|r| r.ok) {
        runs.push(step::run(
            &Step {
                label: format!("restart the Gluu container ({SERVERD} restart)"),
                argv: vec![SERVERD.into(), "restart".into()],
                reload_or_start: None,
                stdin: None,
            },
            CONTROL_TIMEOUT,
            scratch,
        ));
    }
    Ok(runs)
}
