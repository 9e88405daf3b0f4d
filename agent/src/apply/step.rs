//! Running an apply's validators and actions: the built-in ones (nginx's own test,
//! service reload and restart, allowed even with `allow_exec = false`) and commands,
//! each in its own process group with a timeout and its output captured.

use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use clustermgr_protocol::changeset::{Action, Scope, ServiceVerb, StepRun, Validator};
use clustermgr_protocol::message::Command;

use crate::sys::wait_or_kill;

/// How long a validator may run.
pub const VALIDATE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long an action may run (a Java service restart is slow).
pub const ACTION_TIMEOUT: Duration = Duration::from_secs(180);
/// The most output kept from one step (its end, where tools put the error).
const OUTPUT_CAP: u64 = 64 * 1024;

/// A step ready to run: what to call it, and its argument vector. Its `Debug` leaves
/// out what it reads on standard input (a password).
#[derive(Clone, PartialEq, Eq)]
pub struct Step {
    /// The words for output (`nginx -t -c /etc/nginx/nginx.conf`, `reload nginx`).
    pub label: String,
    /// The program and its arguments; several for a service reload of a stopped
    /// service (status, then start).
    pub argv: Vec<String>,
    /// Service reloads first ask for the status and start a stopped service instead.
    pub reload_or_start: Option<(Vec<String>, Vec<String>)>,
    /// What the step reads on its standard input (a password it must not see in its
    /// arguments, where every user of the host could read it); empty otherwise.
    pub stdin: Option<String>,
}

impl std::fmt::Debug for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Step")
            .field("label", &self.label)
            .field("argv", &self.argv)
            .field("reload_or_start", &self.reload_or_start)
            .field("stdin", &self.stdin.as_ref().map(|_| "(hidden)"))
            .finish()
    }
}

/// Whether running `v` needs `allow_exec`.
pub fn validator_needs_exec(v: &Validator) -> bool {
    matches!(v, Validator::Command(_))
}

/// Whether running `a` needs `allow_exec`. The trust-store import and the restarts of
/// installed services run fixed programs with fixed arguments the push cannot choose,
/// like the service actions.
pub fn action_needs_exec(a: &Action) -> bool {
    matches!(a, Action::Command(_))
}

/// The password of Java's `cacerts`: the JDK's default, which Gluu's setup keeps
/// (`defaultTrustStorePW`). Public, but still given on standard input, as any store
/// password should be.
const CACERTS_PASSWORD: &str = "changeit";

/// The trust-store import, run in the scope with Gluu's Java (`/opt/jre`, a link to
/// the JDK it ships): the store is Java 8's (`jre/lib/security`) or Java 11's
/// (`lib/security`) beside the scope's `keytool`; an existing alias is deleted first
/// (keytool refuses to import over one). The password comes on standard input and goes
/// to each keytool through `read` and `printf`, shell builtins, so it is in no
/// process's arguments. A container may lack `/dev/null`, so the listing is kept in a
/// variable rather than thrown there. No Java: nothing to trust the certificate in yet
/// (Gluu's setup imports its own certificate when it installs, and the next change of
/// the file imports the cluster's).
const JAVA_TRUST_SCRIPT: &str = r#"IFS= read -r pw
k=/opt/jre/bin/keytool
if [ ! -x "$k" ]; then echo "no Java here ($k is absent): nothing to trust $2 in yet"; exit 0; fi
s=
for f in /opt/jre/jre/lib/security/cacerts /opt/jre/lib/security/cacerts; do
  if [ -f "$f" ]; then s=$f; break; fi
done
if [ -z "$s" ]; then echo "no cacerts beside $k (/opt/jre/jre/lib/security or /opt/jre/lib/security)"; exit 1; fi
if listed=$(printf '%s\n' "$pw" | "$k" -list -alias "$1" -keystore "$s" 2>&1); then
  printf '%s\n' "$pw" | "$k" -delete -alias "$1" -keystore "$s" || exit 1
fi
printf '%s\n' "$pw" | "$k" -importcert -noprompt -trustcacerts -alias "$1" -file "$2" -keystore "$s"
"#;

/// Whether the scope has service `name` installed: an init script, or on a systemd
/// host a unit file of that name (a link counts: units are often links into `/lib`).
/// Without systemd a unit is not what runs the service, as [`action_step`] judges.
fn installed(base: &Path, name: &str) -> bool {
    let mut places = vec![format!("etc/init.d/{name}")];
    if Path::new("/run/systemd/system").is_dir() {
        for dir in ["etc", "lib", "usr/lib"] {
            places.push(format!("{dir}/systemd/system/{name}.service"));
        }
    }
    places
        .iter()
        .any(|p| base.join(p).symlink_metadata().is_ok())
}

fn in_scope(scope: &Scope, base: &Path, argv: Vec<String>) -> Vec<String> {
    match scope {
        Scope::Host => argv,
        Scope::Container { .. } => {
            let mut out = vec!["chroot".to_string(), base.display().to_string()];
            out.extend(argv);
            out
        }
    }
}

fn command_argv(c: &Command, path: Option<&str>) -> Vec<String> {
    let fill = |s: &str, quote: bool| match path {
        Some(p) if quote => s.replace("{}", &sh_quote(p)),
        Some(p) => s.replace("{}", p),
        None => s.to_string(),
    };
    match c {
        Command::Argv(argv) => argv.iter().map(|a| fill(a, false)).collect(),
        Command::Shell(line) => vec!["/bin/sh".into(), "-c".into(), fill(line, true)],
    }
}

fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// The step that runs validator `v` of the entry at `entry_path` (`real` on the host).
pub fn validator_step(
    v: &Validator,
    scope: &Scope,
    base: &Path,
    real: &Path,
    entry_path: &str,
    host_root: &Path,
) -> Step {
    if matches!(v, Validator::Nginx) && host_root != Path::new("/") {
        return sandboxed(format!("nginx -t -c {entry_path}"));
    }
    // Inside a container the command sees the container's paths; on the host the real
    // path (the same on a node, the sandbox's under `clustermgr dev`).
    let seen = match scope {
        Scope::Host => real.display().to_string(),
        Scope::Container { .. } => entry_path.to_string(),
    };
    let argv = match v {
        Validator::Nginx => vec!["nginx".into(), "-t".into(), "-c".into(), seen.clone()],
        Validator::Command(c) => command_argv(c, Some(&seen)),
        // Checked by the LDAP part of the apply, which never hands it here.
        Validator::Replication { .. } => vec!["false".into()],
    };
    let argv = in_scope(scope, base, argv);
    Step {
        label: match v {
            Validator::Nginx => format!("nginx -t -c {entry_path}"),
            Validator::Command(c) => format!("validate {entry_path}: {}", c.display_line()),
            Validator::Replication { suffix, .. } => format!("replication of {suffix}"),
        },
        argv,
        reload_or_start: None,
        stdin: None,
    }
}

/// The steps that run action `a` in `scope`, in order. `host_root` is the agent's
/// `root` setting: services are driven by systemd only on a real host (`/`) that runs
/// it. `written` says whether the change set itself writes a file (an init script it
/// brings along counts as there).
pub fn action_steps(
    a: &Action,
    scope: &Scope,
    base: &Path,
    host_root: &Path,
    written: &dyn Fn(&Path) -> bool,
) -> Result<Vec<Step>, String> {
    match a {
        Action::JavaTrust { alias, cert } => {
            if alias.is_empty() || alias.chars().any(char::is_control) || !cert.starts_with('/') {
                return Err(format!(
                    "cannot trust {cert:?} as {alias:?}: the alias must be a name and the certificate an absolute path"
                ));
            }
            let label = format!("trust {cert} in Java's cacerts as {alias}");
            if host_root != Path::new("/") {
                return Ok(vec![sandboxed(label)]);
            }
            // Judged from outside first: a node Gluu is not installed on yet has no
            // container to run the script in (its `/opt/jre` may be a link that only
            // resolves inside, so the name itself is what is looked for).
            if base.join("opt/jre").symlink_metadata().is_err() {
                return Ok(vec![Step {
                    label: format!(
                        "{label} (no Java here, {}/opt/jre is absent: nothing to trust it in yet)",
                        base.display().to_string().trim_end_matches('/')
                    ),
                    argv: vec!["true".into()],
                    reload_or_start: None,
                    stdin: None,
                }]);
            }
            Ok(vec![Step {
                label,
                argv: in_scope(
                    scope,
                    base,
                    vec![
                        "/bin/sh".into(),
                        "-c".into(),
                        JAVA_TRUST_SCRIPT.into(),
                        "sh".into(),
                        alias.clone(),
                        cert.clone(),
                    ],
                ),
                reload_or_start: None,
                stdin: Some(format!("{CACERTS_PASSWORD}\n")),
            }])
        }
        Action::RestartInstalled { services } => {
            let mut steps = Vec::new();
            let mut absent = Vec::new();
            for name in services {
                check_service_name(name)?;
                if host_root != Path::new("/")
                    || installed(base, name)
                    || written(&base.join("etc/init.d").join(name))
                {
                    let restart = Action::Service {
                        name: name.clone(),
                        verb: ServiceVerb::Restart,
                    };
                    steps.extend(action_steps(&restart, scope, base, host_root, written)?);
                } else {
                    absent.push(name.as_str());
                }
            }
            if !absent.is_empty() {
                steps.push(Step {
                    label: format!(
                        "restart {} (not installed here: skipped)",
                        absent.join(", ")
                    ),
                    argv: vec!["true".into()],
                    reload_or_start: None,
                    stdin: None,
                });
            }
            Ok(steps)
        }
        a => action_step(a, scope, base, host_root, written).map(|s| vec![s]),
    }
}

/// The step that runs a version-1 action.
fn action_step(
    a: &Action,
    scope: &Scope,
    base: &Path,
    host_root: &Path,
    written: &dyn Fn(&Path) -> bool,
) -> Result<Step, String> {
    match a {
        Action::JavaTrust { .. } | Action::RestartInstalled { .. } => {
            Err("a built-in action of several steps".into())
        }
        Action::Command(c) => Ok(Step {
            label: c.display_line(),
            argv: in_scope(scope, base, command_argv(c, None)),
            reload_or_start: None,
            stdin: None,
        }),
        Action::Service { name, verb } => {
            if host_root != Path::new("/") {
                return Ok(sandboxed(format!("{} {name}", verb.as_str())));
            }
            check_service_name(name)?;
            let label = format!("{} {name}", verb.as_str());
            let systemd = matches!(scope, Scope::Host)
                && host_root == Path::new("/")
                && Path::new("/run/systemd/system").is_dir();
            if systemd {
                let v = match verb {
                    ServiceVerb::Reload => "reload-or-restart",
                    ServiceVerb::Restart => "restart",
                };
                // A unit file the same change set wrote is only read after a
                // daemon-reload; a service the configuration restarts is one it runs,
                // so it is enabled at boot too.
                let enable = match verb {
                    ServiceVerb::Restart => "systemctl enable --quiet \"$1\" && ",
                    ServiceVerb::Reload => "",
                };
                return Ok(Step {
                    label,
                    argv: vec![
                        "/bin/sh".into(),
                        "-c".into(),
                        format!("systemctl daemon-reload && {enable}systemctl {v} \"$1\""),
                        "sh".into(),
                        name.clone(),
                    ],
                    reload_or_start: None,
                    stdin: None,
                });
            }
            if let Scope::Container { .. } = scope
                && Path::new("/run/systemd/system").is_dir()
            {
                return Ok(Step {
                    label,
                    argv: container_service(base, name, verb.as_str()),
                    reload_or_start: None,
                    stdin: None,
                });
            }
            let script: PathBuf = base.join("etc/init.d").join(name);
            if !script.exists() && !written(&script) {
                return Err(format!(
                    "cannot {} {name}: no systemd, and no init script {}",
                    verb.as_str(),
                    script.display()
                ));
            }
            let run = |word: &str| {
                let inside = match scope {
                    Scope::Host => script.display().to_string(),
                    Scope::Container { .. } => format!("/etc/init.d/{name}"),
                };
                in_scope(scope, base, vec![inside, word.to_string()])
            };
            let argv = match (verb, scope) {
                // Enabled at boot as well, with whichever tool the host has (Debian's
                // update-rc.d, Red Hat's chkconfig).
                (ServiceVerb::Restart, Scope::Host) => vec![
                    "/bin/sh".into(),
                    "-c".into(),
                    "if command -v update-rc.d >/dev/null; then update-rc.d \"$1\" defaults >/dev/null; \
                     elif command -v chkconfig >/dev/null; then chkconfig --add \"$1\"; fi; \
                     exec \"$2\" restart"
                        .into(),
                    "sh".into(),
                    name.clone(),
                    script.display().to_string(),
                ],
                _ => run(verb.as_str()),
            };
            Ok(Step {
                label,
                argv,
                reload_or_start: match verb {
                    ServiceVerb::Reload => Some((run("status"), run("start"))),
                    ServiceVerb::Restart => None,
                },
                stdin: None,
            })
        }
    }
}

/// `argv` run inside the Gluu container rooted at `base`: in its systemd-nspawn machine
/// (Gluu 4.x, with the machine's own `/proc`, `/tmp` and services) through `nsenter`
/// into the machine leader's namespaces when one runs with that root, else chrooted
/// into it (a 3.x container, or a 4.x one not started).
pub fn in_machine(base: &Path, argv: Vec<String>) -> Vec<String> {
    let script = "b=$1; shift; \
                  for m in $(machinectl list --no-legend 2>/dev/null | awk '{print $1}'); do \
                  if [ \"$(machinectl show \"$m\" -p RootDirectory --value 2>/dev/null)\" = \"$b\" ]; then \
                  exec nsenter -t \"$(machinectl show \"$m\" -p Leader --value)\" -m -u -i -n -p -r -w \"$@\"; fi; done; \
                  exec chroot \"$b\" \"$@\"";
    let mut out = vec![
        "/bin/sh".into(),
        "-c".into(),
        script.into(),
        "sh".into(),
        base.display().to_string(),
    ];
    out.extend(argv);
    out
}

/// A service inside a Gluu container on a systemd host. Gluu 4.x runs its container as a
/// systemd-nspawn machine (`gluu_server`, or `gluu_server_VERSION`) with its own
/// systemd: the machine whose root directory is the container root gets the verb
/// through `systemctl --machine`. A 3.x chroot has no machine, and gets the
/// container's init script, chrooted.
fn container_service(base: &Path, name: &str, verb: &str) -> Vec<String> {
    let script = "for m in $(machinectl list --no-legend 2>/dev/null | awk '{print $1}'); do \
                  if [ \"$(machinectl show \"$m\" -p RootDirectory --value 2>/dev/null)\" = \"$1\" ]; then \
                  exec systemctl --machine=\"$m\" \"$3\" \"$2\"; fi; done; \
                  exec chroot \"$1\" \"/etc/init.d/$2\" \"$3\"";
    vec![
        "/bin/sh".into(),
        "-c".into(),
        script.into(),
        "sh".into(),
        base.display().to_string(),
        name.to_string(),
        verb.to_string(),
    ]
}

/// A service name is a file name under `/etc/init.d` and a unit name: never a path
/// (joined to a directory, an absolute one would replace it) or an option.
fn check_service_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && !name.starts_with(['.', '-'])
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"@._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!("{name:?} is not a service name"))
    }
}

/// A built-in step not run under a sandbox root (`clustermgr dev`): its nodes share
/// this machine's services, `/run` and the absolute paths a generated config names, so
/// reloading "their" nginx or starting "their" csync2 would act on the real machine.
fn sandboxed(label: String) -> Step {
    Step {
        label: format!("{label} (sandbox: not run)"),
        argv: vec!["true".into()],
        reload_or_start: None,
        stdin: None,
    }
}

/// The step that asks whether service `name` (on the host) is running.
pub fn status_step(name: &str, host_root: &Path) -> Result<Step, String> {
    check_service_name(name)?;
    let label = format!("{name} running");
    if host_root != Path::new("/") {
        return Ok(sandboxed(label));
    }
    if Path::new("/run/systemd/system").is_dir() {
        return Ok(Step {
            label,
            argv: vec!["systemctl".into(), "is-active".into(), name.to_string()],
            reload_or_start: None,
            stdin: None,
        });
    }
    let script = host_root.join("etc/init.d").join(name);
    if !script.exists() {
        return Err(format!(
            "no systemd, and no init script {} to ask",
            script.display()
        ));
    }
    Ok(Step {
        label,
        argv: vec![script.display().to_string(), "status".into()],
        reload_or_start: None,
        stdin: None,
    })
}

/// Runs `step`, its output going to `scratch` (a file, not a pipe: a daemon an init
/// script starts inherits it, and a pipe would never reach its end).
pub fn run(step: &Step, timeout: Duration, scratch: &Path) -> StepRun {
    let argv = match &step.reload_or_start {
        Some((status, start)) => {
            if run_argv(status, None, timeout, scratch).0 {
                &step.argv
            } else {
                start
            }
        }
        None => &step.argv,
    };
    let (ok, output) = run_argv(argv, step.stdin.as_deref(), timeout, scratch);
    StepRun {
        step: step.label.clone(),
        ok,
        output,
    }
}

fn run_argv(
    argv: &[String],
    stdin: Option<&str>,
    timeout: Duration,
    scratch: &Path,
) -> (bool, String) {
    let Some((program, args)) = argv.split_first() else {
        return (false, "empty command".into());
    };
    let out = match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(scratch)
    {
        Ok(f) => f,
        Err(e) => return (false, format!("cannot open {}: {e}", scratch.display())),
    };
    let _ = std::fs::remove_file(scratch);
    let (Ok(o1), Ok(o2)) = (out.try_clone(), out.try_clone()) else {
        return (false, "cannot duplicate the output file".into());
    };
    let child = std::process::Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(o1)
        .stderr(o2)
        .process_group(0)
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => return (false, format!("cannot run {program}: {e}")),
    };
    // A few bytes, well under a pipe's buffer: the write never waits on the child. A
    // child that exits without reading fails on its own terms, so a broken pipe here
    // is not the error to report.
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        use std::io::Write;
        let _ = pipe.write_all(text.as_bytes());
    }
    let (status, timed_out) = match wait_or_kill(child, timeout, |mut c| c.wait()) {
        Some(s) => (s.ok(), false),
        None => (None, true),
    };
    let mut text = tail(out);
    let ok = !timed_out && status.is_some_and(|s| s.success());
    if timed_out {
        text.push_str(&format!("\n(killed after {} s)", timeout.as_secs()));
    } else if let Some(s) = status
        && !s.success()
    {
        match (s.code(), s.signal()) {
            (Some(c), _) => text.push_str(&format!("\n(exit status {c})")),
            (None, Some(sig)) => text.push_str(&format!("\n(killed by signal {sig})")),
            _ => {}
        }
    }
    (ok, text.trim().to_string())
}

fn tail(mut f: std::fs::File) -> String {
    let len = f.seek(SeekFrom::End(0)).unwrap_or(0);
    let start = len.saturating_sub(OUTPUT_CAP);
    let mut buf = Vec::new();
    if f.seek(SeekFrom::Start(start)).is_ok() {
        let _ = f.read_to_end(&mut buf);
    }
    let mut s = String::from_utf8_lossy(&buf).into_owned();
    if start > 0 {
        s.insert(0, '…');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_and_failure_are_captured() {
        let t = tempfile::tempdir().unwrap();
        let step = Step {
            label: "x".into(),
            argv: vec![
                "/bin/sh".into(),
                "-c".into(),
                "echo out; echo err >&2; exit 3".into(),
            ],
            reload_or_start: None,
            stdin: None,
        };
        let r = run(&step, Duration::from_secs(5), &t.path().join("o"));
        assert!(!r.ok);
        assert!(
            r.output.contains("out") && r.output.contains("err"),
            "{}",
            r.output
        );
        assert!(r.output.contains("exit status 3"), "{}", r.output);
    }

    #[test]
    fn a_step_past_its_timeout_is_killed_with_its_children() {
        let t = tempfile::tempdir().unwrap();
        let step = Step {
            label: "x".into(),
            argv: vec!["/bin/sh".into(), "-c".into(), "sleep 30 & sleep 30".into()],
            reload_or_start: None,
            stdin: None,
        };
        let start = std::time::Instant::now();
        let r = run(&step, Duration::from_millis(200), &t.path().join("o"));
        assert!(!r.ok && r.output.contains("killed after"), "{}", r.output);
        assert!(start.elapsed() < Duration::from_secs(10));
    }

    /// Runs `argv` with `bin` first on PATH; its stdout.
    fn run_with_path(argv: &[String], bin: &Path) -> String {
        let path = format!("{}:/usr/sbin:/usr/bin:/sbin:/bin", bin.display());
        let out = std::process::Command::new(&argv[0])
            .args(&argv[1..])
            .env("PATH", path)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    #[test]
    fn a_container_service_goes_to_its_nspawn_machine_else_to_its_chroot() {
        use std::os::unix::fs::PermissionsExt;
        let t = tempfile::tempdir().unwrap();
        let (base, bin) = (t.path().join("gluu"), t.path().join("bin"));
        for d in [base.join("bin"), base.join("etc/init.d"), bin.clone()] {
            std::fs::create_dir_all(d).unwrap();
        }
        let exe = |p: &Path, text: &str| {
            std::fs::write(p, text).unwrap();
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
        };
        // A 3.x chroot: busybox for the container's shell, and its init script.
        std::fs::copy("/bin/busybox", base.join("bin/busybox")).unwrap();
        std::os::unix::fs::symlink("busybox", base.join("bin/sh")).unwrap();
        exe(
            &base.join("etc/init.d/oxauth"),
            "#!/bin/sh\necho chroot oxauth $1\n",
        );
        exe(&bin.join("machinectl"), "#!/bin/sh\nexit 0\n");
        let argv = container_service(&base, "oxauth", "restart");
        assert_eq!(run_with_path(&argv, &bin), "chroot oxauth restart\n");
        // A 4.x machine whose root is the container root: its own systemd.
        exe(
            &bin.join("machinectl"),
            &format!(
                "#!/bin/sh\ncase $1 in list) echo 'other container'; echo 'gluu_server container';; \
                 show) [ $2 = gluu_server ] && echo {} || echo /var/lib/machines/other;; esac\n",
                base.display()
            ),
        );
        exe(&bin.join("systemctl"), "#!/bin/sh\necho systemctl \"$@\"\n");
        assert_eq!(
            run_with_path(&argv, &bin),
            "systemctl --machine=gluu_server restart oxauth\n"
        );
    }

    #[test]
    fn service_names_are_never_paths_or_options() {
        for bad in [
            "",
            "/opt/gluu-server/tmp/x",
            "../../bin/sh",
            "..",
            "-x",
            "a b",
        ] {
            assert!(status_step(bad, Path::new("/")).is_err(), "{bad:?}");
            let a = Action::Service {
                name: bad.into(),
                verb: ServiceVerb::Restart,
            };
            assert!(
                action_step(&a, &Scope::Host, Path::new("/"), Path::new("/"), &|_| true).is_err(),
                "{bad:?}"
            );
        }
        assert!(check_service_name("clustermgr-csync2").is_ok());
        assert!(check_service_name("systemd-nspawn@gluu_server.service").is_ok());
    }

    #[test]
    fn a_path_in_a_shell_validator_is_quoted() {
        let argv = command_argv(&Command::Shell("test -s {}".into()), Some("/a b/c'd"));
        assert_eq!(argv[2], "test -s '/a b/c'\\''d'");
    }

    /// A busybox container at `base` with a stand-in `keytool` that logs its arguments
    /// and the password it read, and keeps its aliases in a file.
    fn container_with_keytool(base: &Path) {
        use std::os::unix::fs::PermissionsExt;
        for d in ["bin", "opt/jre/bin", "opt/jre/lib/security"] {
            std::fs::create_dir_all(base.join(d)).unwrap();
        }
        std::fs::copy("/bin/busybox", base.join("bin/busybox")).unwrap();
        std::os::unix::fs::symlink("busybox", base.join("bin/sh")).unwrap();
        std::fs::write(base.join("opt/jre/lib/security/cacerts"), "").unwrap();
        let k = base.join("opt/jre/bin/keytool");
        std::fs::write(
            &k,
            "#!/bin/sh\nread -r pw\necho \"$* pw=$pw\" >> /log\n\
             case $1 in -list) /bin/busybox grep -qx \"$3\" /aliases;; \
             -delete) echo > /aliases;; -importcert) echo \"$5\" >> /aliases;; esac\n",
        )
        .unwrap();
        std::fs::set_permissions(&k, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn java_trust_gives_keytool_the_password_on_stdin_and_replaces_the_alias() {
        let t = tempfile::tempdir().unwrap();
        let base = t.path().join("gluu");
        let scope = Scope::Container {
            root: base.display().to_string(),
        };
        let a = Action::JavaTrust {
            alias: "idp.example.org_httpd".into(),
            cert: "/etc/certs/httpd.crt".into(),
        };
        let steps = |b: &Path| action_steps(&a, &scope, b, Path::new("/"), &|_| false).unwrap();
        // No container yet (Gluu not installed), or one without Java: nothing to trust
        // it in, and no failure.
        let r = run(
            &steps(&base)[0],
            Duration::from_secs(10),
            &t.path().join("o"),
        );
        assert!(r.ok && r.step.contains("no Java here"), "{r:?}");
        std::fs::create_dir_all(base.join("bin")).unwrap();
        std::fs::copy("/bin/busybox", base.join("bin/busybox")).unwrap();
        std::os::unix::fs::symlink("busybox", base.join("bin/sh")).unwrap();
        std::fs::create_dir_all(base.join("opt/jre")).unwrap();
        let r = run(
            &steps(&base)[0],
            Duration::from_secs(10),
            &t.path().join("o"),
        );
        assert!(r.ok && r.output.contains("no Java here"), "{}", r.output);
        std::fs::remove_dir_all(&base).unwrap();
        container_with_keytool(&base);
        let st = &steps(&base)[0];
        assert!(
            !st.argv.iter().any(|a| a.contains(CACERTS_PASSWORD)),
            "{:?}",
            st.argv
        );
        for _ in 0..2 {
            let r = run(st, Duration::from_secs(10), &t.path().join("o"));
            assert!(r.ok, "{}", r.output);
        }
        let log = std::fs::read_to_string(base.join("log")).unwrap();
        let store = "-keystore /opt/jre/lib/security/cacerts";
        assert_eq!(
            log,
            format!(
                "-list -alias idp.example.org_httpd {store} pw=changeit\n\
                 -importcert -noprompt -trustcacerts -alias idp.example.org_httpd -file /etc/certs/httpd.crt {store} pw=changeit\n\
                 -list -alias idp.example.org_httpd {store} pw=changeit\n\
                 -delete -alias idp.example.org_httpd {store} pw=changeit\n\
                 -importcert -noprompt -trustcacerts -alias idp.example.org_httpd -file /etc/certs/httpd.crt {store} pw=changeit\n"
            )
        );
    }

    #[test]
    fn only_installed_services_restart_and_the_others_are_said_skipped() {
        let t = tempfile::tempdir().unwrap();
        let base = t.path().join("gluu");
        std::fs::create_dir_all(base.join("etc/init.d")).unwrap();
        std::fs::write(base.join("etc/init.d/apache2"), "").unwrap();
        std::fs::write(base.join("etc/init.d/oxauth"), "").unwrap();
        let a = Action::RestartInstalled {
            services: vec![
                "apache2".into(),
                "httpd".into(),
                "oxauth".into(),
                "identity".into(),
            ],
        };
        let scope = Scope::Container {
            root: base.display().to_string(),
        };
        let steps = action_steps(&a, &scope, &base, Path::new("/"), &|_| false).unwrap();
        let labels: Vec<&str> = steps.iter().map(|s| s.label.as_str()).collect();
        assert_eq!(
            labels,
            [
                "restart apache2",
                "restart oxauth",
                "restart httpd, identity (not installed here: skipped)"
            ]
        );
        let bad = Action::RestartInstalled {
            services: vec!["../x".into()],
        };
        assert!(action_steps(&bad, &scope, &base, Path::new("/"), &|_| false).is_err());
    }
}
