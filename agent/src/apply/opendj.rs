//! OpenDJ replication on the node (Gluu 3.1.4+ and 4.x), driven with OpenDJ's own
//! tools inside the Gluu container: `dsreplication status` says which servers replicate
//! each base DN; `apply` opens the admin connector and LDAPS to the cluster network,
//! enables only the pairs that are missing (a working pair is never enabled again, so a
//! running cluster is never re-initialized), turns on the crypto manager's encryption,
//! initializes a joining node from a peer (never a peer from it), and waits, with a
//! deadline, until the topology holds every node.
//!
//! Passwords (the directory manager's, which the agent reads from Gluu's settings on
//! the node; the replication administrator's, which the controller made) reach the tools
//! in owner-only files in the container's `/tmp`, removed when the apply ends, never in
//! an argument where every user of the host could read them.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clustermgr_protocol::atomic_file::write_atomic;
use clustermgr_protocol::changeset::{Change, Entry, EntryPlan, OpenDjReplication, StepRun};
use clustermgr_protocol::identity::sha256_hex;

use super::step::{self, Step};
use crate::config::AgentConfig;

/// OpenDJ's tools in the container.
const BIN: &str = "/opt/opendj/bin";
/// The admin connector's port.
const ADMIN_PORT: &str = "4444";
/// The replication port.
const REPLICATION_PORT: &str = "8989";
/// The directory's root user, as Gluu names it.
const DIRECTORY_MANAGER: &str = "cn=directory manager";
/// How long one tool may run (an initialize copies the whole directory).
const TOOL_TIMEOUT: Duration = Duration::from_secs(600);
/// How long the topology may take to show every node after the apply.
const READY: Duration = Duration::from_secs(120);
const POLL: Duration = Duration::from_millis(200);

/// The OpenDJ entry of a change set compared with the topology.
#[derive(Debug)]
pub struct Staged {
    /// Its index in the change set.
    pub index: usize,
    want: OpenDjReplication,
    base: PathBuf,
    /// Peers not yet in the topology of every base DN.
    missing: Vec<String>,
    /// The plan line.
    pub plan: EntryPlan,
}

/// Owner-only files holding the passwords the tools read, in a directory of the
/// agent's own in the container, removed when dropped.
struct PasswordFiles(super::dir::ContainerTemp);

impl PasswordFiles {
    fn new(base: &Path, directory_manager: &[u8], admin: &str) -> io::Result<Self> {
        let files = PasswordFiles(super::dir::ContainerTemp::new(base, "opendj")?);
        write_atomic(&files.0.dir.join("dm"), directory_manager, 0o600)?;
        write_atomic(&files.0.dir.join("admin"), admin.as_bytes(), 0o600)?;
        Ok(files)
    }

    fn directory_manager(&self) -> String {
        format!("{}/dm", self.0.inside)
    }

    fn admin(&self) -> String {
        format!("{}/admin", self.0.inside)
    }
}

/// One OpenDJ tool run in the container.
fn tool(base: &Path, name: &str, args: Vec<String>, label: String, scratch: &Path) -> StepRun {
    let mut argv = vec![
        "chroot".to_string(),
        base.display().to_string(),
        format!("{BIN}/{name}"),
    ];
    argv.extend(args);
    step::run(
        &Step {
            label,
            argv,
            reload_or_start: None,
            stdin: None,
        },
        TOOL_TIMEOUT,
        scratch,
    )
}

fn words(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// The servers replicating each base DN, from `dsreplication status` in its
/// script-friendly form (`BASE DN : SERVER:PORT : ...` lines); empty before any.
fn topology(
    base: &Path,
    files: &PasswordFiles,
    scratch: &Path,
) -> Result<BTreeMap<String, BTreeSet<String>>, String> {
    let mut args = words(&["status", "--hostname", "localhost", "--port", ADMIN_PORT]);
    args.extend(words(&["--adminUID", "admin", "--adminPasswordFile"]));
    args.push(files.admin());
    args.extend(words(&["-X", "-n", "-s"]));
    let r = tool(
        base,
        "dsreplication",
        args,
        "dsreplication status".into(),
        scratch,
    );
    let text = r.output.to_ascii_lowercase();
    if text.contains("no base dns replicated") || text.contains("not replicated") {
        return Ok(BTreeMap::new());
    }
    if !r.ok {
        return Err(format!("dsreplication status failed: {}", r.output.trim()));
    }
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in r.output.lines() {
        let cols: Vec<&str> = line.split(" : ").map(str::trim).collect();
        if cols.len() < 2 || !cols[0].contains('=') {
            continue;
        }
        let server = cols[1].rsplit_once(':').map_or(cols[1], |(h, _)| h);
        out.entry(cols[0].to_ascii_lowercase())
            .or_default()
            .insert(server.to_string());
    }
    Ok(out)
}

fn in_all(t: &BTreeMap<String, BTreeSet<String>>, base_dns: &[String], host: &str) -> bool {
    base_dns.iter().all(|b| {
        t.get(&b.to_ascii_lowercase())
            .is_some_and(|s| s.contains(host))
    })
}

fn describe(t: &BTreeMap<String, BTreeSet<String>>) -> String {
    t.iter()
        .map(|(b, s)| {
            format!(
                "{b}: {}\n",
                s.iter().cloned().collect::<Vec<_>>().join(", ")
            )
        })
        .collect()
}

/// The directory manager's password: the one the agent binds with (Gluu's settings on
/// the node, or `[ldap]`).
fn directory_manager(cfg: &AgentConfig) -> Result<crate::ldap::Secret, String> {
    crate::ldap::access(cfg)?
        .map(|a| a.password)
        .ok_or_else(|| "this node has no LDAP settings the agent knows of (Gluu's gluu-ldap.properties, or [ldap] in agent.toml), so it has no directory manager password for OpenDJ's tools".into())
}

/// Compares the OpenDJ entry with the topology.
pub fn stage(
    cfg: &AgentConfig,
    index: usize,
    e: &Entry,
    want: &OpenDjReplication,
    base: PathBuf,
    scratch: &Path,
) -> Result<Staged, String> {
    if !base
        .join(BIN.trim_start_matches('/'))
        .join("dsreplication")
        .exists()
    {
        return Err(format!(
            "OpenDJ's tools are not in the container ({BIN}/dsreplication): is this an OpenDJ node? (`cluster set gluu-version` says which directory server the Gluu nodes run)"
        ));
    }
    let dm = directory_manager(cfg)?;
    let files = PasswordFiles::new(&base, dm.expose(), &want.admin_password)
        .map_err(|e| format!("cannot write the tools' password files: {e}"))?;
    let t = topology(&base, &files, scratch)?;
    let me_in = in_all(&t, &want.base_dns, &want.host);
    // A node outside the topology joins it through one peer (the first, the seed):
    // OpenDJ tells the rest. A peer missing from it is paired with this node.
    let missing: Vec<String> = if me_in {
        want.peers
            .iter()
            .filter(|p| !in_all(&t, &want.base_dns, p))
            .cloned()
            .collect()
    } else {
        want.peers.first().cloned().into_iter().collect()
    };
    let mut lines = String::new();
    let missing = if want.leave { Vec::new() } else { missing };
    if want.leave && me_in {
        lines.push_str(&format!(
            "disable replication of {} (it leaves the cluster)\n",
            want.host
        ));
    }
    for p in &missing {
        lines.push_str(&format!(
            "enable replication of {} between {p} and {}\n",
            want.base_dns.join(", "),
            want.host
        ));
    }
    if want.join && !want.leave && !want.peers.is_empty() {
        lines.push_str(&format!(
            "initialize {} from {} (its own directory is replaced by the cluster's)\n",
            want.host, want.peers[0]
        ));
    }
    let change = if lines.is_empty() {
        Change::Unchanged
    } else if !me_in {
        Change::Create
    } else {
        Change::Modify
    };
    let old = describe(&t);
    let mut desired = want.peers.clone();
    desired.push(want.host.clone());
    desired.sort();
    let new_hash = sha256_hex(desired.join(",").as_bytes());
    Ok(Staged {
        index,
        want: want.clone(),
        base,
        missing,
        plan: EntryPlan {
            path: e.path.clone(),
            change,
            old_sha256: (!t.is_empty()).then(|| {
                if change == Change::Unchanged {
                    new_hash.clone()
                } else {
                    sha256_hex(old.as_bytes())
                }
            }),
            new_sha256: new_hash,
            old_meta: None,
            new_meta: None,
            old_text: (!t.is_empty()).then_some(old),
            new_text: Some(if lines.is_empty() {
                "nothing to do: every peer replicates with this node\n".into()
            } else {
                lines
            }),
        },
    })
}

/// Makes the staged OpenDJ entries true; the first tool that fails ends it with its
/// words. Pairs enabled before the failure stay (an enable is not undone); the next
/// apply enables only what is still missing.
pub fn apply(
    cfg: &AgentConfig,
    staged: &[Staged],
    steps: &mut Vec<StepRun>,
    scratch: &Path,
) -> Result<(), (String, String)> {
    for s in staged.iter().filter(|s| s.plan.change.writes()) {
        let fail = |step: &str, why: String| (step.to_string(), why);
        let dm = directory_manager(cfg).map_err(|e| fail("OpenDJ replication", e))?;
        let w = &s.want;
        let files = PasswordFiles::new(&s.base, dm.expose(), &w.admin_password)
            .map_err(|e| fail("OpenDJ replication", e.to_string()))?;
        let mut run =
            |name: &str, args: Vec<String>, label: String| -> Result<(), (String, String)> {
                let r = tool(&s.base, name, args, label.clone(), scratch);
                let ok = r.ok;
                let output = r.output.clone();
                steps.push(r);
                if ok { Ok(()) } else { Err((label, output)) }
            };
        if w.leave {
            let mut a = words(&["disable", "--disableAll", "--hostname"]);
            a.push(w.host.clone());
            a.extend(words(&["--port", ADMIN_PORT, "--adminUID", "admin"]));
            a.push("--adminPasswordFile".into());
            a.push(files.admin());
            a.extend(words(&["-X", "-n"]));
            run(
                "dsreplication",
                a,
                format!("disable replication of {}", w.host),
            )?;
            continue;
        }
        let local = |extra: &[&str]| -> Vec<String> {
            let mut a = words(extra);
            a.extend(words(&["--hostname", "localhost", "--port", ADMIN_PORT]));
            a.extend(words(&[
                "--bindDN",
                DIRECTORY_MANAGER,
                "--bindPasswordFile",
            ]));
            a.push(files.directory_manager());
            a.extend(words(&["-X", "-n"]));
            a
        };
        run(
            "dsconfig",
            local(&[
                "set-administration-connector-prop",
                "--set",
                "listen-address:0.0.0.0",
            ]),
            "open the admin connector to the cluster network".into(),
        )?;
        run(
            "dsconfig",
            local(&[
                "set-connection-handler-prop",
                "--handler-name",
                "LDAPS Connection Handler",
                "--set",
                "enabled:true",
                "--set",
                "listen-address:0.0.0.0",
            ]),
            "open LDAPS to the cluster network".into(),
        )?;
        for p in &s.missing {
            // Each side of the pair: its host, admin port, root user and password file,
            // replication port (`--host1`, `--port1`, ... then `--host2`, ...).
            let side = |n: u8, host: &str| -> Vec<String> {
                vec![
                    format!("--host{n}"),
                    host.to_string(),
                    format!("--port{n}"),
                    ADMIN_PORT.into(),
                    format!("--bindDN{n}"),
                    DIRECTORY_MANAGER.into(),
                    format!("--bindPasswordFile{n}"),
                    files.directory_manager(),
                    format!("--replicationPort{n}"),
                    REPLICATION_PORT.into(),
                ]
            };
            let mut a = vec!["enable".to_string()];
            a.extend(side(1, p));
            a.extend(side(2, &w.host));
            a.extend(words(&["--adminUID", "admin", "--adminPasswordFile"]));
            a.push(files.admin());
            for b in &w.base_dns {
                a.push("--baseDN".into());
                a.push(b.clone());
            }
            a.extend(words(&["-X", "-n"]));
            run(
                "dsreplication",
                a,
                format!("enable replication between {p} and {}", w.host),
            )?;
        }
        if !s.missing.is_empty() {
            run(
                "dsconfig",
                local(&["set-crypto-manager-prop", "--set", "ssl-encryption:true"]),
                "encrypt replication (crypto manager)".into(),
            )?;
        }
        if w.join
            && let Some(source) = w.peers.first()
        {
            let mut a = Vec::new();
            a.push("initialize".to_string());
            for b in &w.base_dns {
                a.push("--baseDN".into());
                a.push(b.clone());
            }
            a.extend(words(&["--adminUID", "admin", "--adminPasswordFile"]));
            a.push(files.admin());
            a.push("--hostSource".into());
            a.push(source.clone());
            a.extend(words(&["--portSource", ADMIN_PORT, "--hostDestination"]));
            a.push(w.host.clone());
            a.extend(words(&["--portDestination", ADMIN_PORT, "-X", "-n"]));
            run(
                "dsreplication",
                a,
                format!("initialize {} from {source}", w.host),
            )?;
        }
        // Ready when the topology holds this node and every peer, within a deadline.
        let start = Instant::now();
        loop {
            let t =
                topology(&s.base, &files, scratch).map_err(|e| fail("OpenDJ replication", e))?;
            let all = std::iter::once(&w.host)
                .chain(&w.peers)
                .all(|h| in_all(&t, &w.base_dns, h));
            if all {
                steps.push(StepRun {
                    step: "every peer in the replication topology".into(),
                    ok: true,
                    output: String::new(),
                });
                break;
            }
            if start.elapsed() > READY {
                return Err(fail(
                    "every peer in the replication topology",
                    format!(
                        "after {} s the topology is:\n{}",
                        READY.as_secs(),
                        describe(&t)
                    ),
                ));
            }
            std::thread::sleep(POLL);
        }
    }
    Ok(())
}
