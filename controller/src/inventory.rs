//! `clustermgr node add --ssh` and `--from FILE`: turns the command line or a TOML
//! inventory into bootstrap plans, runs them in parallel with a line of progress per
//! step, and reports each host's outcome.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::Args;
use clustermgr_protocol::NodeName;
use serde::Deserialize;

use crate::CtlError;
use crate::bootstrap::{self, AgentBinary, Plan, SshOptions, SshTarget};
use crate::local::Client;
use crate::ops::CtxOptions;
use crate::store::Role;

/// How many hosts are bootstrapped at once.
const PARALLEL: usize = 16;

/// `node add`.
#[derive(Args, Debug)]
pub struct AddArgs {
    /// The node's name in the cluster.
    #[arg(required_unless_present = "from", conflicts_with = "from")]
    pub node: Option<String>,
    /// Install the agent over SSH: USER@HOST[:PORT] (~/.ssh/config applies).
    #[arg(long, value_name = "USER@HOST[:PORT]")]
    pub ssh: Option<String>,
    /// Where the controller reaches the agent: HOST[:PORT] (default: the SSH host, UDP
    /// port 7443).
    #[arg(long)]
    pub address: Option<String>,
    /// Its roles: gluu, lb, cache (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "gluu")]
    pub role: Vec<Role>,
    /// Make it the primary Gluu node.
    #[arg(long)]
    pub primary: bool,
    /// The SSH private key (default: ssh-agent and ~/.ssh/config).
    #[arg(long, value_name = "KEYFILE")]
    pub identity: Option<PathBuf>,
    /// Verify SSH host keys against this file instead of ssh's known_hosts.
    #[arg(long, value_name = "FILE")]
    pub known_hosts: Option<PathBuf>,
    /// Trust a host key not in known_hosts, if its fingerprint is exactly this.
    #[arg(long, value_name = "SHA256:...")]
    pub accept_host_key: Option<String>,
    /// The agent binary to install (default: the packaged baseline build, else the one
    /// beside clustermgr).
    #[arg(long, value_name = "PATH")]
    pub agent_binary: Option<PathBuf>,
    /// Make the host a new key even if it has one (the pin moves to it).
    #[arg(long)]
    pub reenroll: bool,
    /// Bootstrap every host of a TOML inventory, in parallel.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["ssh", "address", "primary", "accept_host_key"])]
    pub from: Option<PathBuf>,
}

/// A TOML inventory for `node add --from`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Inventory {
    /// The SSH key for every host (default: ssh-agent).
    identity: Option<PathBuf>,
    /// A known_hosts file for every host.
    known_hosts: Option<PathBuf>,
    /// The agent binary to install.
    agent_binary: Option<PathBuf>,
    #[serde(default, rename = "node")]
    nodes: Vec<InventoryNode>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InventoryNode {
    name: String,
    ssh: String,
    address: Option<String>,
    #[serde(default)]
    roles: Vec<Role>,
    #[serde(default)]
    primary: bool,
    accept_host_key: Option<String>,
    identity: Option<PathBuf>,
}

fn plan(
    node: &str,
    ssh: &str,
    address: Option<String>,
    roles: Vec<Role>,
    primary: bool,
    ssh_options: SshOptions,
    reenroll: bool,
) -> Result<Plan, CtlError> {
    let name = NodeName::new(node)?;
    let ssh = SshTarget::parse(ssh)?;
    if let Some(fp) = &ssh_options.accept_host_key
        && !fp.starts_with("SHA256:")
    {
        return Err(CtlError::BadArgument {
            flag: "--accept-host-key",
            value: format!("{fp:?}"),
            why: "give the fingerprint as ssh-keygen -l prints it, SHA256:...".into(),
        });
    }
    let address = address.unwrap_or_else(|| ssh.default_agent_address());
    Ok(Plan {
        node: name,
        ssh,
        address,
        roles: if roles.is_empty() {
            vec![Role::Gluu]
        } else {
            roles
        },
        primary,
        ssh_options,
        reenroll,
    })
}

fn load_inventory(path: &Path, args: &AddArgs) -> Result<(Vec<Plan>, Option<PathBuf>), CtlError> {
    let text = std::fs::read_to_string(path).map_err(|e| CtlError::io(path, e))?;
    let bad = |why: String| CtlError::BadFile {
        path: path.to_path_buf(),
        why,
    };
    let inv: Inventory = toml::from_str(&text).map_err(|e| bad(e.to_string().trim_end().into()))?;
    if inv.nodes.is_empty() {
        return Err(bad(
            "it names no hosts: add [[node]] tables with name and ssh".into(),
        ));
    }
    let mut plans = Vec::new();
    for n in inv.nodes {
        let options = SshOptions {
            identity: n
                .identity
                .or_else(|| inv.identity.clone())
                .or_else(|| args.identity.clone()),
            known_hosts: inv.known_hosts.clone().or_else(|| args.known_hosts.clone()),
            accept_host_key: n.accept_host_key,
        };
        let p = plan(
            &n.name,
            &n.ssh,
            n.address,
            n.roles,
            n.primary,
            options,
            args.reenroll,
        )
        .map_err(|e| bad(format!("node {}: {e}", n.name)))?;
        if plans.iter().any(|q: &Plan| q.node == p.node) {
            return Err(bad(format!("node {} is listed twice", n.name)));
        }
        plans.push(p);
    }
    if plans.iter().filter(|p| p.primary).count() > 1 {
        return Err(bad("more than one node says primary = true".into()));
    }
    Ok((plans, inv.agent_binary))
}

/// Runs `node add --ssh` or `node add --from`; returns the exit code.
pub async fn add_over_ssh(
    home: &Path,
    opts: &CtxOptions,
    user: String,
    connect_timeout_ms: Option<u64>,
    args: AddArgs,
    json: bool,
) -> Result<i32, CtlError> {
    let (plans, binary) = match &args.from {
        Some(file) => {
            let (plans, binary) = load_inventory(file, &args)?;
            (plans, binary.or_else(|| args.agent_binary.clone()))
        }
        None => {
            let options = SshOptions {
                identity: args.identity.clone(),
                known_hosts: args.known_hosts.clone(),
                accept_host_key: args.accept_host_key.clone(),
            };
            let p = plan(
                args.node.as_deref().unwrap_or_default(),
                args.ssh.as_deref().unwrap_or_default(),
                args.address.clone(),
                args.role.clone(),
                args.primary,
                options,
                args.reenroll,
            )?;
            (vec![p], args.agent_binary.clone())
        }
    };
    let binary = Arc::new(AgentBinary::find(binary.as_deref())?);
    let client = Client::open(home, opts, user, connect_timeout_ms);
    let many = plans.len() > 1;
    let gate = Arc::new(tokio::sync::Semaphore::new(PARALLEL));
    // Each host's steps: a block redrawn in place on a terminal, plain lines otherwise,
    // nothing with --json.
    let names: Vec<String> = plans.iter().map(|p| p.node.to_string()).collect();
    let progress = (!json).then(|| {
        Arc::new(crate::terminal::Progress::new(
            "node add", &names, false, !many,
        ))
    });
    let mut tasks = Vec::new();
    // The primary first, so that it is the primary whatever order the others finish in.
    let mut plans = plans;
    plans.sort_by_key(|p| !p.primary);
    for plan in plans {
        let client = client.clone();
        let binary = binary.clone();
        let gate = gate.clone();
        let shown = progress.clone();
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire_owned().await;
            let name = plan.node.to_string();
            let step = |step: &str| {
                if let Some(p) = &shown {
                    p.step(&name, step, false);
                }
            };
            let r = bootstrap::bootstrap(&client, &plan, &binary, &step).await;
            if let Some(p) = &shown {
                let end = if r.is_ok() { "added" } else { "failed" };
                p.step(&name, end, true);
            }
            (name, r)
        }));
    }
    let mut results = Vec::new();
    for t in tasks {
        match t.await {
            Ok(r) => results.push(r),
            // A task that panicked is a failure of this program, not of the command line.
            Err(e) => results.push((
                "?".into(),
                Err(CtlError::Internal {
                    what: "a bootstrap task",
                    why: e.to_string(),
                    next: "; the hosts that were added stay added, run the command again for the others",
                }),
            )),
        }
    }
    client.close().await;
    if let Some(p) = progress {
        p.finish();
    }
    let failed = results.iter().filter(|(_, r)| r.is_err()).count();
    if json {
        let nodes = results
            .iter()
            .map(|(node, r)| crate::contract::AddedNode {
                node: node.clone(),
                ok: r.is_ok(),
                outcome: r.as_ref().ok().cloned(),
                error: r.as_ref().err().map(ToString::to_string),
            })
            .collect();
        crate::render::json(&crate::contract::NodeAddDoc { nodes });
    } else {
        for (node, r) in &results {
            match r {
                Ok(o) => println!(
                    "{node}: added at {} ({}; agent {}; key {}; service: {})",
                    o.address,
                    match o.identity {
                        bootstrap::Identity::New => "new key made on the host",
                        bootstrap::Identity::ExistingKey => "the host's existing key",
                        bootstrap::Identity::Kept => "already enrolled, identity kept",
                        bootstrap::Identity::Reenrolled => "re-enrolled with a new key",
                    },
                    match o.binary {
                        bootstrap::BinaryAction::Installed => "installed",
                        bootstrap::BinaryAction::Upgraded => "upgraded",
                        bootstrap::BinaryAction::Unchanged => "unchanged",
                    },
                    o.key,
                    o.service.describe()
                ),
                // The host's own words may be in it (ssh's, the shell's).
                Err(e) => crate::render::tell(&format!("clustermgr: {e}")),
            }
        }
        if many {
            println!(
                "{} of {} hosts added{}",
                results.len() - failed,
                results.len(),
                if failed > 0 {
                    "; re-run the command for the others once fixed (hosts already added are kept)"
                } else {
                    ""
                }
            );
        }
    }
    Ok(match results.as_slice() {
        [(_, Err(e))] => e.exit_code(),
        _ if failed > 0 => 1,
        _ => 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> AddArgs {
        AddArgs {
            node: None,
            ssh: None,
            address: None,
            role: vec![Role::Gluu],
            primary: false,
            identity: None,
            known_hosts: None,
            accept_host_key: None,
            agent_binary: None,
            reenroll: false,
            from: None,
        }
    }

    #[test]
    fn inventories_parse_and_bad_ones_say_where() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("hosts.toml");
        std::fs::write(
            &f,
            r#"
identity = "/keys/id"
[[node]]
name = "gluu1"
ssh = "root@10.0.0.1"
primary = true
[[node]]
name = "lb1"
ssh = "admin@10.0.0.9:2222"
address = "192.0.2.9:7443"
roles = ["lb"]
accept_host_key = "SHA256:abc"
"#,
        )
        .unwrap();
        let (plans, _) = load_inventory(&f, &args()).unwrap();
        assert_eq!(plans.len(), 2);
        assert_eq!(plans[0].address, "10.0.0.1:7443");
        assert_eq!(
            plans[0].ssh_options.identity.as_deref(),
            Some(Path::new("/keys/id"))
        );
        assert_eq!(plans[1].roles, vec![Role::Lb]);
        assert_eq!(plans[1].ssh.port, Some(2222));
        assert_eq!(plans[1].address, "192.0.2.9:7443");

        std::fs::write(
            &f,
            "[[node]]\nname = \"gluu1\"\nssh = \"root@-oProxyCommand=x\"\n",
        )
        .unwrap();
        let e = load_inventory(&f, &args()).unwrap_err().to_string();
        assert!(e.contains("hosts.toml") && e.contains("gluu1"), "{e}");

        std::fs::write(
            &f,
            "[[node]]\nname = \"a\"\nssh = \"root@h1\"\n[[node]]\nname = \"a\"\nssh = \"root@h2\"\n",
        )
        .unwrap();
        assert!(
            load_inventory(&f, &args())
                .unwrap_err()
                .to_string()
                .contains("twice")
        );

        std::fs::write(&f, "[[node]]\nname = \"a\"\nsh = \"root@h1\"\n").unwrap();
        assert!(load_inventory(&f, &args()).is_err());
    }
}
