//! The `clustermgr` command line: its grammar (clap derive) and how each command is
//! carried out. Operations go to `serve` when it answers, else run in-process.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use clustermgr_protocol::message::Command as RemoteCommand;
use tokio::sync::mpsc;

use crate::CtlError;
use crate::clock;
use crate::exit;
use crate::local::{run_operation_until, shutdown_signal};
use crate::ops::{self, Ctx, CtxOptions, Invocation, Operation, Report};
use crate::render::{self, OutputMode};

/// Run a Gluu Server cluster: the controller and its CLI.
#[derive(Parser, Debug)]
#[command(name = "clustermgr", version, about, propagate_version = true)]
pub struct Cli {
    /// The cluster's state directory (default: ~/.clustermgr).
    #[arg(long, global = true, env = "CLUSTERMGR_HOME", value_name = "DIR")]
    pub home: Option<PathBuf>,
    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// Never page long output (plans, drift) through $PAGER on a terminal.
    #[arg(long, global = true)]
    pub no_pager: bool,
    /// Reach the `serve` of another local user's controller through this socket (its
    /// `[access] socket`), with the role its controller.toml gives you.
    #[arg(long, global = true, env = "CLUSTERMGR_SOCKET", value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Seconds a node has to answer before it counts as unreachable (default: 3, or
    /// connect_timeout_ms in HOME/controller.toml).
    #[arg(long, global = true, value_name = "SECS")]
    pub connect_timeout: Option<f64>,
    #[command(subcommand)]
    pub command: Cmd,
}

/// The commands.
#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Create a cluster: its CA, the controller's certificate, and the store.
    Init {
        /// The cluster's name.
        #[arg(long, default_value = "gluu")]
        cluster: String,
        /// Lifetime of node and controller certificates, in days (2 to 825).
        #[arg(long, default_value_t = 90)]
        cert_days: u32,
    },
    /// Manage nodes.
    #[command(subcommand)]
    Node(NodeCmd),
    /// Check that nodes answer (handshake, Hello, Info).
    Ping(Selection),
    /// Run a command on nodes.
    #[command(after_help = "Examples:\n  \
        clustermgr exec -- uptime\n  \
        clustermgr exec --nodes 'gluu*' --group --shell -- 'df -h / | tail -1'\n  \
        clustermgr exec --nodes gluu2 --in-container -- /etc/init.d/oxauth status\n  \
        clustermgr exec --timeout 30 --json -- systemctl is-active nginx")]
    Exec {
        #[command(flatten)]
        sel: Selection,
        /// Kill the command's process group after this many seconds (no limit without).
        #[arg(long, value_name = "SECS", value_parser = at_least_a_second)]
        timeout: Option<u64>,
        /// Print each node's output whole, in node-name order, when all are done.
        #[arg(long)]
        group: bool,
        /// Run the words as one line of /bin/sh instead of a program and arguments.
        #[arg(long)]
        shell: bool,
        /// Give every node's command a copy of this command's standard input (read
        /// whole first, up to 8 MiB).
        #[arg(long)]
        stdin: bool,
        /// Run inside the Gluu container (chrooted into the cluster's gluu-root).
        #[arg(long)]
        in_container: bool,
        /// The command (after `--`).
        #[arg(trailing_var_arg = true, required = true, value_name = "CMD")]
        command: Vec<String>,
    },
    /// The cluster at a glance: every node's state, round trip, clock skew, certificate.
    Status(Selection),
    /// Certificates.
    #[command(subcommand)]
    Cert(CertCmd),
    /// The audit log: who ran what, when, on which nodes, with what result.
    Audit {
        /// How many of the newest entries.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Write an encrypted backup of the home: the CA, the store (nodes and their pinned
    /// keys, certificates, the audit log) and controller.toml.
    Backup {
        /// The archive to write (mode 0600).
        file: PathBuf,
        /// Read the passphrase from this file (mode 0600) instead of the terminal.
        #[arg(long, value_name = "FILE")]
        passphrase_file: Option<PathBuf>,
        /// Replace an archive already at FILE (whole, once the new one is written).
        #[arg(long)]
        force: bool,
    },
    /// Restore a backup into a new or empty home (--home), with a new controller key.
    Restore {
        /// The archive `clustermgr backup` wrote.
        file: PathBuf,
        /// Read the passphrase from this file (mode 0600) instead of the terminal.
        #[arg(long, value_name = "FILE")]
        passphrase_file: Option<PathBuf>,
    },
    /// The cluster model: the settings every node's configuration is generated from.
    #[command(subcommand)]
    Cluster(ClusterCmd),
    /// Show what `apply` would change on each node: diffs (never of secrets), the
    /// validators and the service reloads.
    #[command(after_help = "Examples:\n  \
        clustermgr plan\n  \
        clustermgr plan --nodes role:lb\n  \
        clustermgr --json plan | jq -r .digest      # for `apply --plan`")]
    Plan(Selection),
    /// Apply the desired configuration: previewed, validated, all or nothing per node.
    #[command(after_help = "Examples:\n  \
        clustermgr apply                             # shows the plan, asks\n  \
        clustermgr apply --rolling                   # one node at a time, drained while it changes\n  \
        clustermgr apply --yes --plan 2e5630413956   # exactly the plan reviewed, or nothing")]
    Apply {
        #[command(flatten)]
        sel: Selection,
        /// Apply without asking (the plan is still printed).
        #[arg(long)]
        yes: bool,
        /// One node at a time, stopping at the first that fails.
        #[arg(long)]
        rolling: bool,
        /// Apply only if the plan is still the one with this digest (as `plan` prints
        /// it, or `plan --json`'s `digest`); otherwise change nothing.
        #[arg(long, value_name = "DIGEST")]
        plan: Option<String>,
    },
    /// Report managed files edited on the nodes since clustermgr applied them (exit 2
    /// when there are any). Nothing is reverted.
    Drift(Selection),
    /// Log lines the agents collected, merged across nodes in time order (from the
    /// telemetry store `serve` fills; -f keeps following as lines arrive).
    #[command(after_help = "Examples:\n  \
        clustermgr logs -f --nodes role:gluu\n  \
        clustermgr logs --source oxauth --since 10m --grep 'ERROR|Exception'\n  \
        clustermgr logs --source nginx-error --limit 20")]
    Logs {
        #[command(flatten)]
        sel: Selection,
        /// Keep printing lines as `serve` stores them (Ctrl-C ends).
        #[arg(short = 'f', long)]
        follow: bool,
        /// Only this source (oxauth, identity, nginx-access, ...).
        #[arg(long, value_name = "NAME")]
        source: Option<String>,
        /// Only lines since then: 90s, 10m, 2h, 7d, or 2026-11-25T10:00:00Z.
        #[arg(long, value_name = "WHEN")]
        since: Option<String>,
        /// Only lines this regular expression matches.
        #[arg(long, value_name = "REGEX")]
        grep: Option<String>,
        /// How many of the newest lines (default: 100, or all since --since).
        #[arg(long, value_name = "N")]
        limit: Option<usize>,
    },
    /// Metric values the agents sampled (from the telemetry store): without --metric,
    /// the metrics there are; with it, each series' last value, range and a chart
    /// (counters as rates per second).
    Metrics {
        #[command(flatten)]
        sel: Selection,
        /// The metric (node_load1, node_cpu_seconds_total, ...).
        #[arg(long, value_name = "NAME")]
        metric: Option<String>,
        /// From when: 90s, 10m, 2h, 7d, or 2026-11-25T10:00:00Z (default 1h).
        #[arg(long, value_name = "WHEN")]
        since: Option<String>,
        /// Seconds per point (default: the range in 60 points).
        #[arg(long, value_name = "SECS")]
        step: Option<u64>,
    },
    /// A live table of the nodes (CPU, memory, disk, network, load, connection),
    /// refreshed every second from what `serve` receives; Ctrl-C ends it. Without a
    /// terminal (or with --json), one table.
    Top(Selection),
    /// The health of every node: the agent, clock, disk, ports, certificates, services,
    /// csync2, its LDAP server, replication links, CSNs and heartbeat lag, each ok,
    /// warning, critical or unknown with the reason. While `serve` runs, its latest round
    /// (judged against the one before); otherwise a round now. Exits 0 ok, 1 warning,
    /// 2 critical, 3 unknown (also for a usage error), as Nagios-style monitoring
    /// expects.
    #[command(after_help = "Examples:\n  \
        clustermgr health                            # exit 0 ok, 1 warning, 2 critical, 3 unknown\n  \
        clustermgr health --nodes gluu2 --json\n  \
        clustermgr health --watch")]
    Health {
        #[command(flatten)]
        sel: Selection,
        /// Show it again every check interval until Ctrl-C (with --json, one JSON
        /// document a round).
        #[arg(long)]
        watch: bool,
    },
    /// The replication picture behind `health`, from one round: how old each node's
    /// LDAP heartbeat is on every other (replication lag), the contextCSN per serverID
    /// on each node, and each node's replication links.
    Replication,
    /// The port matrix from one round: every port each node must reach on its peers
    /// for its role (LDAPS, csync2, OpenDJ's on Gluu 4, the cache's tunnel, and the load
    /// balancer to each node's HTTPS), tried from that node, with what is missing.
    /// Exits 0 when all are open, 2 when one is missing, 3 when a node could not try.
    Ports,
    /// The history of health changes `serve` saw (a check going from one state to
    /// another, with why, and who acknowledged it); with -f, each new one as it happens
    /// (Ctrl-C ends).
    #[command(
        args_conflicts_with_subcommands = true,
        after_help = "Examples:\n  \
        clustermgr events --since 2h\n  \
        clustermgr events -f --json\n  \
        clustermgr events ack 42 --note \"looking at gluu2's disk\""
    )]
    Events {
        #[command(subcommand)]
        ack: Option<EventsCmd>,
        /// Keep printing new changes (needs `serve`).
        #[arg(short = 'f', long)]
        follow: bool,
        /// Only changes since then: 90s, 10m, 2h, 7d, or 2026-11-25T10:00:00Z.
        #[arg(long, value_name = "WHEN")]
        since: Option<String>,
        /// How many of the newest.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// The history of every file clustermgr changed: when, where, hashes, result, who.
    History {
        #[command(flatten)]
        sel: Selection,
        /// Only this path.
        #[arg(long, value_name = "PATH")]
        path: Option<String>,
        /// How many of the newest lines.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Put back a kept previous version of a managed file, and hold it there until the
    /// desired state changes.
    Rollback {
        /// The node.
        node: String,
        /// The managed path.
        path: String,
        /// Which kept version: 1 is the newest.
        #[arg(long, value_name = "GENERATION")]
        to: Option<u32>,
        /// List the kept versions instead.
        #[arg(long)]
        list: bool,
        /// The copy inside the Gluu container (`/etc/hosts` is in both).
        #[arg(long)]
        in_container: bool,
    },
    /// Mark a Gluu node down on the load balancer, so it can be worked on.
    Drain {
        /// The Gluu node.
        node: String,
    },
    /// Put a drained Gluu node back in the load balancer.
    Undrain {
        /// The Gluu node.
        node: String,
    },
    /// oxAuth's signing and encryption keys: one set for every Gluu node, rotated.
    #[command(subcommand)]
    Keys(KeysCmd),
    /// Gluu itself on the nodes.
    #[command(subcommand)]
    Gluu(GluuCmd),
    /// Run the long-lived controller: warm connections, renewals, the CLI socket.
    Serve {
        /// Also answer Prometheus scrapes of every node's metrics at ADDR (host:port,
        /// path /metrics).
        #[arg(long, value_name = "ADDR")]
        prometheus: Option<std::net::SocketAddr>,
        /// Also write every sample to InfluxDB as line protocol, posted to URL
        /// (http://host:8086/write?db=NAME for 1.x, .../api/v2/write?org=O&bucket=B
        /// for 2.x).
        #[arg(long, value_name = "URL")]
        influxdb: Option<String>,
        /// InfluxDB's token, read from this file (owner-only): never an argument.
        #[arg(long, value_name = "FILE", requires = "influxdb")]
        influxdb_token_file: Option<std::path::PathBuf>,
    },
    /// Run a complete local sandbox cluster of real agents on loopback addresses.
    Dev {
        /// How many nodes (from 4 on, the last is a load balancer).
        #[arg(long, default_value_t = 4)]
        nodes: usize,
        /// The UDP port every sandbox agent listens on, each on its own 127.77.0.N.
        #[arg(long, default_value_t = 7443)]
        port: u16,
        /// Answer Prometheus scrapes on this address, as `serve --prometheus` does.
        #[arg(long, value_name = "ADDR")]
        prometheus: Option<std::net::SocketAddr>,
    },
    /// The web console's accounts: people and scripts, each with a role (viewer,
    /// operator, admin).
    #[command(subcommand)]
    User(UserCmd),
    /// Print the shell completion script for bash, zsh or fish.
    #[command(after_help = "Examples:\n  \
        clustermgr completion bash > /etc/bash_completion.d/clustermgr\n  \
        source <(clustermgr completion bash)      # this shell only\n  \
        clustermgr completion zsh > \"${fpath[1]}/_clustermgr\"\n  \
        clustermgr completion fish > ~/.config/fish/completions/clustermgr.fish\n\n\
        The .deb installs all three where the shells look.")]
    Completion {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff), as the .deb installs it: `clustermgr man | man -l -`.
    Man,
}

/// `events` subcommands.
#[derive(Subcommand, Debug)]
pub enum EventsCmd {
    /// Acknowledge a health event (its number is the first column of `events`): you
    /// have seen the problem and are on it. `events` and the console's Health page then
    /// show who and when; it is audited. Operators and admins may.
    #[command(after_help = "Examples:\n  \
        clustermgr events ack 42\n  \
        clustermgr events ack 42 --note \"disk cleanup under way\"")]
    Ack {
        /// The event's number.
        id: u64,
        /// A line saying what you are doing about it.
        #[arg(long, value_name = "TEXT")]
        note: Option<String>,
    },
}

/// `gluu` subcommands.
#[derive(Subcommand, Debug)]
pub enum GluuCmd {
    /// Install Gluu on a Gluu node from the primary's setup: the gluu-server package
    /// (from the nodes' repositories or the package directory), then Gluu's setup in
    /// its container with the primary's setup.properties (this node's address, the
    /// cluster's hostname) and --no-data, the primary's /etc/certs and custom schema,
    /// the certificates trusted in Java's cacerts, and a restart. The properties hold
    /// every password: they are never shown or kept, and the node removes its copy
    /// after setup. A node that runs Gluu is never reinstalled without --force. Admins
    /// may.
    #[command(after_help = "Examples:\n  \
        clustermgr gluu install gluu2\n  \
        clustermgr gluu install gluu3 --setup-password-file /root/oxtrust-admin-password\n  \
        clustermgr gluu install gluu2 --force      # moves its old Gluu aside first")]
    Install {
        /// The node.
        node: String,
        /// Reinstall a node that already runs Gluu: its Gluu is stopped, the package
        /// removed, and its container moved aside to ROOT.replaced-TIME (not deleted).
        #[arg(long)]
        force: bool,
        /// A file holding the password of the primary's setup.properties.last.enc
        /// (Gluu encrypts it with oxTrust's admin password), when the primary's LDAP
        /// password is not it; owner-only, one line.
        #[arg(long, value_name = "FILE")]
        setup_password_file: Option<PathBuf>,
    },
    /// Add components after setup on every Gluu node, the primary first and one at a
    /// time, with Gluu's own post-setup-add-components.py (which fetches them from
    /// Gluu's repositories); a node that has one is skipped, a node without Gluu gets
    /// them with its `gluu install`. The first failure stops the rest. Admins may.
    #[command(after_help = "Examples:\n  \
        clustermgr gluu add shibboleth\n  \
        clustermgr gluu add passport casa")]
    Add {
        /// shibboleth, passport, casa or oxd.
        #[arg(required = true, value_name = "COMPONENT")]
        components: Vec<String>,
    },
}

/// `keys` subcommands.
#[derive(Subcommand, Debug)]
pub enum KeysCmd {
    /// Make a new generation of keys on the primary with its container's keytool (one
    /// per algorithm of `[keys]`), retire the generation that signed (the previous new
    /// one signs from now on), stop publishing keys retired long enough ago, then send
    /// the keystore to every Gluu node and publish the keys. `serve` does this every
    /// `[keys] interval_hours` once the first rotation is made. Admins may.
    #[command(after_help = "Examples:\n  \
        clustermgr keys rotate\n  \
        clustermgr keys rotate --json | jq '.keys[] | select(.state == \"signs\")'\n\n\
        The first rotation replaces the keys Gluu's setup made on the primary: tokens\n\
        they signed no longer verify.")]
    Rotate,
    /// The keys published, which sign, when each was made and expires, and whether
    /// each Gluu node's keystore and published keys are the cluster's. Exits 1 when one
    /// is not.
    #[command(after_help = "Examples:\n  \
        clustermgr keys status\n  \
        clustermgr keys status --json")]
    Status,
}

/// `user` subcommands.
#[derive(Subcommand, Debug)]
pub enum UserCmd {
    /// Make a console account. Its password is typed twice at the terminal, or read
    /// from an owner-only file; it is kept only as an argon2id hash.
    #[command(after_help = "Examples:\n  \
        clustermgr user add alice --role admin\n  \
        clustermgr user add grafana --role viewer --password-file /root/grafana.pw\n\n\
        Roles: viewer reads everything but secrets; operator also drains, plans and\n\
        follows logs; admin also applies, rolls back, runs commands and manages nodes,\n\
        certificates, users and backups.")]
    Add {
        /// The account's name.
        name: String,
        /// What it may do.
        #[arg(long, value_parser = parse_role)]
        role: crate::access::UserRole,
        /// Read the password from this file (mode 0600) instead of the terminal.
        #[arg(long, value_name = "FILE")]
        password_file: Option<PathBuf>,
    },
    /// The accounts, their roles and API tokens.
    List,
    /// Remove an account, its API tokens and its console sessions.
    Remove {
        /// The account.
        name: String,
    },
    /// Set an account's password (its console sessions end).
    Passwd {
        /// The account.
        name: String,
        /// Read the password from this file (mode 0600) instead of the terminal.
        #[arg(long, value_name = "FILE")]
        password_file: Option<PathBuf>,
    },
    /// Make an API token for scripts (`Authorization: Bearer TOKEN` on /api/v1/),
    /// with the account's role. Printed once, or written to an owner-only file.
    Token {
        /// The account.
        name: String,
        /// Write the token to this new file (mode 0600) instead of printing it.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
}

fn parse_role(s: &str) -> Result<crate::access::UserRole, String> {
    s.parse()
}

/// `cluster` subcommands.
#[derive(Subcommand, Debug)]
pub enum ClusterCmd {
    /// Change a setting: hostname, gluu-version, gluu-root, lb-session,
    /// replicated-paths, cache, manage-hosts, ldap-replication, packages, package-dir,
    /// ntp-servers; or tls-cert FILE / tls-key FILE.
    Set {
        /// The setting.
        key: String,
        /// Its value (for tls-cert and tls-key: the PEM file to read).
        value: String,
    },
    /// Put a setting back to its default (hostname and gluu-version to none; tls-cert
    /// and tls-key forgotten, so the load balancer waits for them again).
    Unset {
        /// The setting.
        key: String,
    },
    /// Show the settings (secrets only as hashes).
    Show,
}

/// Which nodes.
#[derive(Args, Debug)]
pub struct Selection {
    /// Node selector: all, names, role:gluu, globs (gluu-*), comma lists.
    #[arg(long, default_value = "all", value_name = "SEL")]
    pub nodes: String,
}

/// `node` subcommands.
#[derive(Subcommand, Debug)]
pub enum NodeCmd {
    /// Sign a node's CSR (from `clustermgr-agent enroll`) and print its certificate.
    Sign {
        /// The node.
        node: String,
        /// The CSR file.
        csr_file: PathBuf,
    },
    /// Add a node. With --ssh, install and enroll its agent over SSH first (the one
    /// time SSH is used); without, add a node enrolled by hand. --from adds many.
    #[command(after_help = "Examples:\n  \
        clustermgr node add gluu1 --ssh root@gluu1.example.org --primary\n  \
        clustermgr node add lb1 --ssh admin@10.0.0.5:2222 --role lb\n  \
        clustermgr node add --from hosts.toml        # every host at once\n  \
        clustermgr node add gluu4 --address 10.0.0.14   # an agent enrolled by hand")]
    Add(Box<AddArgs>),
    /// List the nodes.
    List,
    /// Show a node, with live facts from its agent.
    Show {
        /// The node.
        node: String,
    },
    /// Remove a node: unpin its key and revoke its certificates.
    Remove {
        /// The node.
        node: String,
        /// First have the agent stop and remove itself from the host (binary,
        /// service, /etc/clustermgr with its key), through its own connection.
        #[arg(long)]
        uninstall: bool,
        /// Remove without asking (needed without a terminal).
        #[arg(long)]
        yes: bool,
    },
    /// Make a Gluu node the primary.
    SetPrimary {
        /// The node.
        node: String,
    },
    /// Replace the agent binary on nodes through the agents themselves, one node at a
    /// time: upload, checksum, swap, restart, confirm; a new agent that does not come
    /// up puts the old one back, and the upgrade stops there.
    Upgrade {
        #[command(flatten)]
        sel: Selection,
        /// The agent binary to install (default: the one beside clustermgr, else the
        /// packaged baseline build).
        #[arg(long, value_name = "PATH")]
        agent_binary: Option<PathBuf>,
        /// How long a new agent waits for the controller's confirmation before it
        /// puts the old binary back, in seconds.
        #[arg(long, value_name = "SECS", default_value_t = 60)]
        commit_within: u64,
    },
}

pub use crate::inventory::AddArgs;

/// `cert` subcommands.
#[derive(Subcommand, Debug)]
pub enum CertCmd {
    /// Every certificate's expiry.
    Status,
    /// Renew node certificates now (they also renew by themselves past two thirds of
    /// their life).
    Renew {
        #[command(flatten)]
        sel: Selection,
        /// Have each agent generate a new key on its host; the pin moves to it and the
        /// old key's certificates are revoked.
        #[arg(long)]
        rekey: bool,
    },
    /// Give the controller a new key and certificate now, and have every agent refuse
    /// the old one: after a controller machine or a copy of its home was lost, or
    /// someone who had its key left. Agents not reached now refuse it at their next
    /// contact with this controller.
    #[command(
        after_help = "Examples:\n  clustermgr cert revoke-controller\n  clustermgr cert revoke-controller --json"
    )]
    RevokeController,
}

/// Parses the command line, runs it, and returns the exit code.
pub fn main() -> i32 {
    quiet_on_closed_stdout();
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        // `health` is called by monitoring, for which anything but a verdict is
        // "unknown" (3), a usage error included.
        Err(e)
            if !matches!(
                e.kind(),
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion
            ) && std::env::args().any(|a| a == "health") =>
        {
            let _ = e.print();
            return exit::UNKNOWN;
        }
        Err(e) => e.exit(),
    };
    let serves = matches!(cli.command, Cmd::Serve { .. } | Cmd::Dev { .. });
    clustermgr_protocol::log::init(if serves { "info" } else { "warn" });
    // serve and dev serve many at once; every other command is one operation, whose
    // connection drivers and own task then share one thread instead of waking each
    // other across three (a millisecond of a one-shot exec went to those wake-ups).
    let mut builder = if serves {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(2);
        b
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    let runtime = match builder.enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("clustermgr: cannot start the async runtime: {e}");
            return exit::FAILED;
        }
    };
    let code = runtime.block_on(run(cli));
    runtime.shutdown_timeout(Duration::from_millis(200));
    code
}

/// Who runs this CLI, as the audit log records it: the login name and the uid.
fn user() -> String {
    use std::os::unix::fs::MetadataExt;
    let uid = std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(u32::MAX);
    crate::ops::audit_user(uid)
}

async fn run(cli: Cli) -> i32 {
    let health = matches!(cli.command, Cmd::Health { .. } | Cmd::Ports);
    let json = cli.json;
    match dispatch(cli).await {
        Ok(code) => code,
        Err(e) => {
            // For monitoring, a health check that could not run is unknown.
            let code = if health { exit::UNKNOWN } else { e.exit_code() };
            render::error(&e.to_string(), code, json);
            code
        }
    }
}

async fn dispatch(cli: Cli) -> Result<i32, CtlError> {
    // Neither needs a home.
    match &cli.command {
        Cmd::Completion { shell } => {
            use clap::CommandFactory;
            // Written whole, so a closed pipe is an exit code, not clap's panic.
            let mut script = Vec::new();
            clap_complete::generate(*shell, &mut Cli::command(), "clustermgr", &mut script);
            return print_whole(&script);
        }
        Cmd::Man => {
            let mut page = Vec::new();
            manual(&mut page).map_err(|e| CtlError::io("the manual page", e))?;
            return print_whole(&page);
        }
        _ => {}
    }
    let explicit_home = cli.home.clone();
    let home = crate::home::Home::resolve(cli.home);
    // Said before anything inside it is read: a file there is a mistyped --home.
    if home.exists() && !home.is_dir() {
        return Err(CtlError::NotOwned(home));
    }
    let mut opts = crate::config::ControllerConfig::load(&home.join("controller.toml"))?.options();
    opts.socket = cli.socket.clone();
    if let Some(secs) = cli.connect_timeout {
        if !(secs > 0.0 && secs <= 3600.0) {
            return Err(CtlError::BadArgument {
                flag: "--connect-timeout",
                value: secs.to_string(),
                why: "give the seconds a node has to answer, more than 0 and at most 3600 (such as 0.5 or 10)".into(),
            });
        }
        opts.connect_timeout = Duration::from_secs_f64(secs);
    }
    let json = cli.json;
    let no_pager = cli.no_pager;
    let connect_timeout = cli.connect_timeout;
    let (op, mode) = match cli.command {
        Cmd::Init { cluster, cert_days } => {
            let meta = ops::init(&home, &cluster, cert_days, &clock::SystemClock)?;
            if json {
                println!(
                    "{}",
                    crate::contract::line(&crate::contract::InitDoc {
                        cluster: meta.name,
                        home: home.display().to_string(),
                        cert_lifetime_days: meta.cert_lifetime_days,
                    })
                );
            } else {
                println!("initialised cluster {} in {}", meta.name, home.display());
                println!(
                    "next: `clustermgr node add NODE --ssh root@HOST` for each host (one SSH session installs and enrolls its agent; `node add --from hosts.toml` does many at once), or by hand: `clustermgr-agent enroll --name NODE` on the host, then `clustermgr node sign NODE CSR_FILE` and `clustermgr node add NODE --address HOST`"
                );
            }
            return Ok(0);
        }
        Cmd::Serve {
            prometheus,
            influxdb,
            influxdb_token_file,
        } => {
            let influxdb_token = match &influxdb_token_file {
                Some(f) => {
                    crate::home::check_owner_only(
                        f,
                        "an InfluxDB token file readable or writable by group or others",
                    )?;
                    let t = std::fs::read_to_string(f).map_err(|e| CtlError::io(f, e))?;
                    Some(t.trim().to_string())
                }
                None => None,
            };
            let exports = crate::telemetry::export::ExportOptions {
                prometheus,
                influxdb,
                influxdb_token,
            };
            let ctx = match Ctx::open(&home, clock::system(), &opts, true) {
                Ok(ctx) => Arc::new(ctx),
                Err(e @ CtlError::StoreLocked { .. }) => {
                    // The lock's holder may be a serve that answers: say so, with its pid.
                    let socket = crate::home::Home::open(&home)?.socket();
                    if let Ok(Some(s)) = crate::local::connect(&socket).await
                        && let Some(pid) = s.peer_cred().ok().and_then(|c| c.pid())
                    {
                        return Err(CtlError::ServeRunning {
                            home: home.clone(),
                            pid,
                        });
                    }
                    return Err(e);
                }
                Err(e) => return Err(e),
            };
            crate::serve::serve(ctx, shutdown_signal(), &exports).await?;
            return Ok(0);
        }
        Cmd::Dev {
            nodes,
            port,
            prometheus,
        } => {
            let ask = crate::dev::DevAsk {
                home: explicit_home,
                nodes,
                port,
                prometheus,
            };
            return crate::dev::run(ask).await;
        }
        // Answered before the home is looked at.
        Cmd::Completion { .. } | Cmd::Man => return Ok(exit::OK),
        Cmd::Backup {
            file,
            passphrase_file,
            force,
        } => {
            let ask = crate::backup::BackupAsk {
                file: &file,
                passphrase_file: passphrase_file.as_deref(),
                force,
            };
            return crate::backup::backup(&home, &opts, &ask, user(), json).await;
        }
        Cmd::Restore {
            file,
            passphrase_file,
        } => {
            let pass = passphrase_file.as_deref();
            let clock = clock::SystemClock;
            return crate::backup::restore(&home, &opts, &file, pass, &user(), &clock, json).await;
        }
        Cmd::Node(NodeCmd::Sign { node, csr_file }) => {
            let csr_pem =
                std::fs::read_to_string(&csr_file).map_err(|e| CtlError::io(&csr_file, e))?;
            (Operation::NodeSign { node, csr_pem }, OutputMode::Live)
        }
        Cmd::Node(NodeCmd::Add(add)) => {
            let user = user();
            let timeout_ms = connect_timeout.map(|secs| (secs * 1000.0).round() as u64);
            if add.ssh.is_some() || add.from.is_some() {
                return crate::inventory::add_over_ssh(&home, &opts, user, timeout_ms, *add, json)
                    .await;
            }
            let AddArgs {
                node,
                address,
                role,
                primary,
                ..
            } = *add;
            let address = address.ok_or(CtlError::MissingArgument {
                command: "node add",
                what: "--address HOST[:PORT] for a node enrolled by hand, or --ssh USER@HOST to install and enroll its agent",
            })?;
            (
                Operation::NodeAdd {
                    node: node.unwrap_or_default(),
                    address,
                    roles: role,
                    primary,
                    reenroll: false,
                },
                OutputMode::Live,
            )
        }
        Cmd::Node(NodeCmd::List) => (Operation::NodeList, OutputMode::Live),
        Cmd::Node(NodeCmd::Show { node }) => (Operation::NodeShow { node }, OutputMode::Live),
        Cmd::Node(NodeCmd::Remove {
            node,
            uninstall,
            yes,
        }) => {
            let question = format!(
                "Remove {node} from the cluster{} (its key is unpinned and its certificates revoked)?",
                if uninstall {
                    ", and have its agent remove itself from the host"
                } else {
                    ""
                }
            );
            let otherwise = format!("run `clustermgr node remove {node} --yes`");
            if !yes && !confirm(&question, &otherwise)? {
                eprintln!("clustermgr: {node} was not removed");
                return Ok(exit::FAILED);
            }
            (Operation::NodeRemove { node, uninstall }, OutputMode::Live)
        }
        Cmd::Node(NodeCmd::SetPrimary { node }) => {
            (Operation::NodeSetPrimary { node }, OutputMode::Live)
        }
        Cmd::Node(NodeCmd::Upgrade {
            sel,
            agent_binary,
            commit_within,
        }) => {
            // `serve` may run elsewhere in the file system's view: give it a full path.
            let agent_binary = agent_binary
                .map(|p| std::path::absolute(&p).map_err(|e| CtlError::io(&p, e)))
                .transpose()?
                .map(|p| p.to_string_lossy().into_owned());
            let op = Operation::NodeUpgrade {
                nodes: sel.nodes,
                agent_binary,
                commit_within_secs: commit_within,
            };
            (op, OutputMode::Live)
        }
        Cmd::Ping(sel) => (Operation::Ping { nodes: sel.nodes }, OutputMode::Live),
        Cmd::Exec {
            sel,
            timeout,
            group,
            shell,
            in_container,
            stdin,
            command,
        } => {
            let stdin = if stdin { Some(read_stdin()?) } else { None };
            let command = if shell {
                RemoteCommand::Shell(command.join(" "))
            } else {
                RemoteCommand::Argv(command)
            };
            let mode = if group {
                OutputMode::Group
            } else {
                OutputMode::Live
            };
            (
                Operation::Exec {
                    nodes: sel.nodes,
                    command,
                    timeout_secs: timeout,
                    in_container,
                    stdin,
                },
                mode,
            )
        }
        Cmd::Cluster(ClusterCmd::Set { key, value }) => {
            if crate::model::SECRET_KEYS.contains(&key.as_str()) {
                let path = PathBuf::from(&value);
                if key == "tls-key" {
                    // A key others on this machine can read is already exposed: it
                    // goes no further until its file is the owner's alone.
                    crate::home::check_owner_only(
                        &path,
                        "a private key readable or writable by group or others",
                    )
                    .map_err(|e| match e {
                        CtlError::Io { source, .. } => CtlError::BadFile {
                            path: path.clone(),
                            why: format!("cannot read this tls-key file: {source}"),
                        },
                        other => other,
                    })?;
                }
                let text = std::fs::read_to_string(&path).map_err(|e| CtlError::BadFile {
                    path: path.clone(),
                    why: format!("cannot read this {key} file: {e}"),
                })?;
                let pem = crate::desired::SecretText(text);
                (Operation::ClusterSetSecret { key, pem }, OutputMode::Live)
            } else {
                (Operation::ClusterSet { key, value }, OutputMode::Live)
            }
        }
        Cmd::Cluster(ClusterCmd::Unset { key }) => {
            (Operation::ClusterUnset { key }, OutputMode::Live)
        }
        Cmd::Cluster(ClusterCmd::Show) => (Operation::ClusterShow, OutputMode::Live),
        Cmd::Top(sel) => {
            use std::io::IsTerminal;
            let live = !json && std::io::stdout().is_terminal();
            let op = Operation::Top { nodes: sel.nodes };
            let every = live.then_some(Duration::from_secs(1));
            return repeatedly(&home, &opts, op, json, connect_timeout, every, Repeat::Top).await;
        }
        Cmd::Plan(sel) => (
            Operation::Plan {
                nodes: sel.nodes,
                drift: false,
            },
            OutputMode::Live,
        ),
        Cmd::Drift(sel) => (
            Operation::Plan {
                nodes: sel.nodes,
                drift: true,
            },
            OutputMode::Live,
        ),
        Cmd::Apply {
            sel,
            yes,
            rolling,
            plan,
        } => {
            let mode = json_or_live(json);
            let mut approved = plan;
            // The plan is shown first, with --yes too (then without asking); --json
            // prints only the apply's report, which carries every change.
            if !json {
                let timeout_ms = connect_timeout.map(|secs| (secs * 1000.0).round() as u64);
                let plan = Invocation {
                    user: user(),
                    op: Operation::Plan {
                        nodes: sel.nodes.clone(),
                        drift: false,
                    },
                    connect_timeout_ms: timeout_ms,
                };
                let mut shown = None;
                let code = execute_inspecting(&home, &opts, plan, OutputMode::Live, |r| {
                    if let Report::Plan { digest, .. } = r {
                        shown.clone_from(digest);
                    }
                })
                .await?;
                // Asked interactively, a failed plan stops here; with --yes the apply
                // goes on, and a node that does not answer keeps the revision for
                // `serve` to send when it is back.
                if code != 0 && !yes {
                    eprintln!("clustermgr: not applying, because the plan failed on some node");
                    return Ok(code);
                }
                let otherwise = "review `clustermgr plan` and run `clustermgr apply --yes` (with `--plan DIGEST` for exactly that plan)";
                if !yes && !confirm("Apply these changes?", otherwise)? {
                    eprintln!("clustermgr: nothing was applied");
                    return Ok(exit::FAILED);
                }
                // What was shown is what is applied: a change made meanwhile (another
                // administrator's `cluster set`) makes the apply refuse, not slip in.
                approved = approved.or(shown);
            }
            let op = Operation::Apply {
                nodes: sel.nodes,
                rolling,
                plan: approved,
            };
            (op, mode)
        }
        Cmd::Logs {
            sel,
            follow,
            source,
            since,
            grep,
            limit,
        } => (
            Operation::Logs(crate::telemetry::LogsSpec {
                nodes: sel.nodes,
                source,
                since,
                grep,
                follow,
                limit,
            }),
            json_or_live(json),
        ),
        Cmd::Metrics {
            sel,
            metric,
            since,
            step,
        } => (
            Operation::Metrics(crate::telemetry::MetricsSpec {
                nodes: sel.nodes,
                metric,
                since,
                step_secs: step,
            }),
            OutputMode::Live,
        ),
        Cmd::History { sel, path, limit } => (
            Operation::History {
                nodes: sel.nodes,
                path,
                limit,
            },
            OutputMode::Live,
        ),
        Cmd::Rollback {
            node,
            path,
            to,
            list,
            in_container,
        } => (
            Operation::Rollback {
                node,
                path,
                generation: to,
                list,
                in_container,
            },
            OutputMode::Live,
        ),
        Cmd::Drain { node } => (
            Operation::Drain {
                node,
                undrain: false,
            },
            OutputMode::Live,
        ),
        Cmd::Undrain { node } => (
            Operation::Drain {
                node,
                undrain: true,
            },
            OutputMode::Live,
        ),
        Cmd::Status(sel) => (Operation::Status { nodes: sel.nodes }, OutputMode::Live),
        Cmd::Health { sel, watch: false } => {
            (Operation::Health { nodes: sel.nodes }, OutputMode::Live)
        }
        Cmd::Health { sel, watch: true } => {
            let interval = crate::config::ControllerConfig::load(&home.join("controller.toml"))
                .map(|c| Duration::from_secs(c.health.interval_secs))?;
            let op = Operation::Health { nodes: sel.nodes };
            return repeatedly(
                &home,
                &opts,
                op,
                json,
                connect_timeout,
                Some(interval),
                Repeat::Watch,
            )
            .await;
        }
        Cmd::Replication => (Operation::Replication, OutputMode::Live),
        Cmd::Ports => (Operation::Ports, OutputMode::Live),
        Cmd::Events {
            ack: Some(EventsCmd::Ack { id, note }),
            ..
        } => (
            Operation::EventAck {
                id,
                note: note.unwrap_or_default(),
            },
            json_or_live(json),
        ),
        Cmd::Events {
            ack: None,
            follow,
            since,
            limit,
        } => (
            Operation::Events {
                since,
                follow,
                limit,
            },
            json_or_live(json),
        ),
        Cmd::Audit { limit } => (Operation::Audit { limit }, OutputMode::Live),
        Cmd::Keys(KeysCmd::Rotate) => (Operation::KeysRotate, OutputMode::Live),
        Cmd::Gluu(GluuCmd::Add { components }) => {
            (Operation::GluuAdd { components }, OutputMode::Live)
        }
        Cmd::Gluu(GluuCmd::Install {
            node,
            force,
            setup_password_file,
        }) => {
            let setup_password = match setup_password_file {
                Some(path) => Some(crate::desired::SecretText(
                    crate::passphrase::from_file(&path)?.to_string(),
                )),
                None => None,
            };
            (
                Operation::GluuInstall {
                    node,
                    force,
                    setup_password,
                },
                OutputMode::Live,
            )
        }
        Cmd::Keys(KeysCmd::Status) => (Operation::KeysStatus, OutputMode::Live),
        Cmd::User(UserCmd::Add {
            name,
            role,
            password_file,
        }) => {
            crate::users::check_name(&name)?;
            let password = crate::passphrase::read(
                password_file.as_deref(),
                crate::passphrase::Purpose::Account,
            )?;
            let password_hash = crate::desired::SecretText(crate::password::hash(&password));
            let op = Operation::UserAdd {
                name,
                role,
                password_hash,
            };
            (op, OutputMode::Live)
        }
        Cmd::User(UserCmd::Passwd {
            name,
            password_file,
        }) => {
            let password = crate::passphrase::read(
                password_file.as_deref(),
                crate::passphrase::Purpose::Account,
            )?;
            let password_hash = crate::desired::SecretText(crate::password::hash(&password));
            (
                Operation::UserPasswd {
                    name,
                    password_hash,
                },
                OutputMode::Live,
            )
        }
        Cmd::User(UserCmd::List) => (Operation::UserList, OutputMode::Live),
        Cmd::User(UserCmd::Remove { name }) => (Operation::UserRemove { name }, OutputMode::Live),
        Cmd::User(UserCmd::Token { name, out }) => {
            return user_token(&home, &opts, name, out, json, connect_timeout).await;
        }
        Cmd::Cert(CertCmd::Status) => (Operation::CertStatus, OutputMode::Live),
        Cmd::Cert(CertCmd::RevokeController) => (Operation::ControllerRevoke, OutputMode::Live),
        Cmd::Cert(CertCmd::Renew { sel, rekey }) => (
            Operation::CertRenew {
                nodes: sel.nodes,
                rekey,
            },
            OutputMode::Live,
        ),
    };
    let mode = if json { OutputMode::Json } else { mode };
    // Plans, drift and history can run to pages: a pager on a terminal, as git's.
    let long = matches!(op, Operation::Plan { .. } | Operation::History { .. });
    let pager = crate::terminal::Pager::start(long && mode == OutputMode::Live && !no_pager);
    let inv = Invocation {
        user: user(),
        op,
        connect_timeout_ms: connect_timeout.map(|secs| (secs * 1000.0).round() as u64),
    };
    let code = execute(&home, &opts, inv, mode).await;
    if let Some(p) = pager {
        p.finish();
    }
    code
}

/// `user token`: the token is made here and only its digest goes to the store; the
/// token is printed once (never in `--json`) or written to a new owner-only file.
async fn user_token(
    home: &std::path::Path,
    opts: &CtxOptions,
    name: String,
    out: Option<PathBuf>,
    json: bool,
    connect_timeout: Option<f64>,
) -> Result<i32, CtlError> {
    if json && out.is_none() {
        return Err(CtlError::MissingArgument {
            command: "user token --json",
            what: "--out FILE: a token is never part of --json output",
        });
    }
    let (token, sha256) = crate::password::new_token();
    // The file first: a token the store keeps but nobody has is no use.
    if let Some(path) = &out {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
            .and_then(|mut f| f.write_all(format!("{}\n", *token).as_bytes()))
            .map_err(|e| CtlError::io(path, e))?;
    }
    let inv = Invocation {
        user: user(),
        op: Operation::UserToken {
            name: name.clone(),
            sha256,
        },
        connect_timeout_ms: connect_timeout.map(|secs| (secs * 1000.0).round() as u64),
    };
    let mut id = None;
    let code = execute_inspecting(home, opts, inv, OutputMode::Live, |r| {
        if let Report::User(crate::users::View::Token { id: i, .. }) = r {
            id = Some(i.clone());
        }
    })
    .await;
    let code = match code {
        Ok(c) => c,
        Err(e) => {
            if let Some(path) = &out {
                let _ = std::fs::remove_file(path);
            }
            return Err(e);
        }
    };
    let Some(id) = id else {
        if let Some(path) = &out {
            let _ = std::fs::remove_file(path);
        }
        return Ok(code);
    };
    if json {
        let doc = crate::contract::TokenDoc {
            user: name,
            id,
            written_to: out.map(|p| p.display().to_string()),
        };
        println!("{}", crate::contract::line(&doc));
    } else if let Some(path) = out {
        println!("API token {id} for {name} written to {}", path.display());
    } else {
        eprintln!(
            "API token {id} for {name} (shown once; send it as `Authorization: Bearer TOKEN`):"
        );
        println!("{}", *token);
    }
    Ok(code)
}

/// What [`repeatedly`] repeats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Repeat {
    /// `top`: a screen redrawn in place, which `q` or Ctrl-C ends (130), and the first
    /// failure ends too.
    Top,
    /// `health --watch`: a failure is shown and the next round follows; Ctrl-C ends it
    /// with the cluster's state, which is what monitoring reads.
    Watch,
}

/// Runs `op` once, or with `every` again and again until Ctrl-C: redrawn in place on a
/// terminal, one after another otherwise.
async fn repeatedly(
    home: &std::path::Path,
    opts: &CtxOptions,
    op: Operation,
    json: bool,
    connect_timeout: Option<f64>,
    every: Option<Duration>,
    kind: Repeat,
) -> Result<i32, CtlError> {
    use std::io::{IsTerminal, Write};
    let live = !json && std::io::stdout().is_terminal();
    let mode = match (json, every) {
        // Round after round: a stream, a compact line each.
        (true, Some(_)) => OutputMode::JsonLines,
        _ => json_or_live(json),
    };
    // `q` quits `top` on a terminal: keys are read one at a time, unechoed, until the
    // guard puts the terminal back as it was (Ctrl-C still signals).
    let keys = (kind == Repeat::Top && live && every.is_some())
        .then(crate::terminal::Keys::start)
        .flatten();
    let mut quit = keys.as_ref().map(|k| k.quit.clone());
    if keys.is_some() {
        // The alternate screen, as `top` and `less` use: the shell's screen comes back
        // as it was when this ends.
        print!("\x1b[?1049h\x1b[?25l\x1b[2J");
    }
    let result = async {
        loop {
            let inv = Invocation {
                user: user(),
                op: op.clone(),
                connect_timeout_ms: connect_timeout.map(|secs| (secs * 1000.0).round() as u64),
            };
            if live && every.is_some() {
                // `top` clears each line as it redraws it, so nothing flickers; the
                // health report does not, so it clears the screen first.
                print!(
                    "{}",
                    if kind == Repeat::Top {
                        "\x1b[H"
                    } else {
                        "\x1b[H\x1b[2J"
                    }
                );
                let _ = std::io::stdout().flush();
            }
            let code = match execute(home, opts, inv, mode).await {
                Ok(code) => code,
                Err(e) if kind == Repeat::Watch && every.is_some() => {
                    // With --json, as JSON too: a watching script reads stderr as well.
                    render::error(&format!("{e}; trying again"), exit::UNKNOWN, json);
                    exit::UNKNOWN
                }
                Err(e) => return Err(e),
            };
            let Some(every) = every else {
                return Ok(code);
            };
            if kind == Repeat::Top && code != exit::OK {
                return Ok(code);
            }
            if !live && !json {
                println!();
            }
            let pressed_q = async {
                match quit.as_mut() {
                    Some(q) => {
                        let _ = q.wait_for(|pressed| *pressed).await;
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                () = pressed_q => return Ok(exit::OK),
                _ = shutdown_signal() => {
                    return Ok(match kind {
                        Repeat::Top => exit::INTERRUPTED,
                        Repeat::Watch => code,
                    });
                }
            }
        }
    }
    .await;
    if keys.is_some() {
        print!("\x1b[?25h\x1b[?1049l");
        let _ = std::io::stdout().flush();
    }
    drop(keys);
    result
}

/// Runs an operation through `serve` if it answers, else in this process, rendering
/// its events as they come. Ctrl-C cancels it (and the commands it started).
pub async fn execute(
    home: &std::path::Path,
    opts: &CtxOptions,
    inv: Invocation,
    mode: OutputMode,
) -> Result<i32, CtlError> {
    execute_inspecting(home, opts, inv, mode, |_| ()).await
}

/// [`execute`], handing the report to `inspect` before it is printed.
async fn execute_inspecting(
    home: &std::path::Path,
    opts: &CtxOptions,
    inv: Invocation,
    mode: OutputMode,
    inspect: impl FnOnce(&Report),
) -> Result<i32, CtlError> {
    let op = inv.op.clone();
    let is_exec = matches!(op, Operation::Exec { .. });
    let is_health = matches!(inv.op, Operation::Health { .. });
    let following = matches!(&inv.op, Operation::Logs(s) if s.follow)
        || matches!(&inv.op, Operation::Events { follow: true, .. });
    let (tx, rx) = mpsc::channel(64);
    let (closed_tx, mut closed) = tokio::sync::watch::channel(false);
    let printer = tokio::spawn(render::consume(rx, mode, is_exec, closed_tx));
    let mut output_gone = closed.clone();
    let stop = async move {
        tokio::select! {
            _ = shutdown_signal() => {}
            _ = output_gone.wait_for(|gone| *gone) => {}
        }
    };
    let result = run_operation_until(home, opts, inv, tx, stop).await?;
    if *closed.borrow_and_update() {
        // Whoever read our output is gone (`| head`): the remote commands were
        // cancelled with the operation (or saw their output go nowhere); end as a shell
        // tool does.
        return Ok(exit::CLOSED_OUTPUT);
    }
    let Some(result) = result else {
        // What was gathered is shown, as an exec's report would have (`--group` and
        // `--json` hold it to the end); a stream (`logs -f`, `events -f`) has shown
        // everything already, and Ctrl-C is how it ends.
        let gathered = printer.await.unwrap_or_default();
        if is_exec && mode != OutputMode::Live {
            let outcomes = gathered.interrupted();
            render::report(Report::Outcomes(outcomes), gathered, mode, &op);
        }
        if !following {
            eprintln!("clustermgr: interrupted; the commands still running were cancelled");
        }
        return Ok(exit::INTERRUPTED);
    };
    let gathered = printer.await.unwrap_or_default();
    match result {
        Ok(report) => {
            let code = report.exit_code();
            inspect(&report);
            render::report(report, gathered, mode, &op);
            Ok(code)
        }
        Err((message, code)) => {
            // A health check that could not run is unknown to monitoring.
            let code = if is_health { exit::UNKNOWN } else { code };
            render::error(&message, code, mode.is_json());
            Ok(code)
        }
    }
}

/// Ends the process quietly, as a shell tool does, when what reads its output goes away
/// (`clustermgr history | head`): `println!` panics on EPIPE, and a backtrace there is
/// noise. Only that panic is turned into an exit; every other panic keeps its report.
/// (SIGPIPE itself stays ignored, so `serve` and bootstrap's pipes to ssh still see
/// the error instead of being killed.)
fn quiet_on_closed_stdout() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if message.starts_with("failed printing to stdout") && message.contains("Broken pipe") {
            #[allow(
                clippy::disallowed_methods,
                reason = "a panic hook has no caller to return a code to; the output is gone"
            )]
            std::process::exit(exit::CLOSED_OUTPUT);
        }
        default(info);
    }));
}

/// Whole JSON documents with `--json`, else output as it comes.
fn json_or_live(json: bool) -> OutputMode {
    if json {
        OutputMode::Json
    } else {
        OutputMode::Live
    }
}

/// Asks a yes/no question on the terminal; without one, says to use `--yes`.
/// Asks `question` on the terminal; without one, refuses with `otherwise` (what to run
/// instead), since a script must say `--yes` itself.
fn confirm(question: &str, otherwise: &str) -> Result<bool, CtlError> {
    use std::io::{BufRead, IsTerminal, Write};
    if !std::io::stdin().is_terminal() {
        return Err(CtlError::NoTerminal {
            otherwise: otherwise.to_string(),
        });
    }
    eprint!("{question} [y/N] ");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| CtlError::io(std::path::Path::new("stdin"), e))?;
    Ok(matches!(line.trim(), "y" | "Y" | "yes"))
}

/// `exec --stdin`: all of this process's standard input, for every node's command.
fn read_stdin() -> Result<ops::ExecStdin, CtlError> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::io::stdin()
        .lock()
        .take(ops::MAX_EXEC_STDIN as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| CtlError::io("standard input", e))?;
    if bytes.len() > ops::MAX_EXEC_STDIN {
        return Err(CtlError::BadArgument {
            flag: "--stdin",
            value: "(standard input)".into(),
            why: format!(
                "takes at most {} MiB, read whole before any node starts; copy a larger file to the nodes and give its path instead",
                ops::MAX_EXEC_STDIN >> 20
            ),
        });
    }
    Ok(ops::ExecStdin(bytes))
}

/// `--timeout`: whole seconds, one or more (0 would kill at once; no limit is the flag
/// left out).
fn at_least_a_second(text: &str) -> Result<u64, String> {
    match text.parse::<u64>() {
        Ok(0) => Err(
            "0 would kill the command at once; give 1 or more, or leave --timeout out for no limit"
                .into(),
        ),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("{text:?} is not a whole number of seconds")),
    }
}

/// Writes `bytes` to standard output; a reader gone away ends as shell tools end.
fn print_whole(bytes: &[u8]) -> Result<i32, CtlError> {
    use std::io::Write;
    match std::io::stdout().lock().write_all(bytes) {
        Ok(()) => Ok(exit::OK),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(exit::CLOSED_OUTPUT),
        Err(e) => Err(CtlError::io("standard output", e)),
    }
}

/// The manual page: clap's, with the exit codes (from [`exit::TABLE`]) and the files and
/// environment a reader of `man clustermgr` looks for.
pub fn manual(out: &mut dyn std::io::Write) -> std::io::Result<()> {
    use clap::CommandFactory;
    let man = clap_mangen::Man::new(Cli::command());
    man.render_title(out)?;
    man.render_name_section(out)?;
    man.render_synopsis_section(out)?;
    man.render_description_section(out)?;
    man.render_options_section(out)?;
    man.render_subcommands_section(out)?;
    let roff = |text: &str| text.replace('\\', "\\\\").replace('-', "\\-");
    writeln!(out, ".SH \"EXIT STATUS\"")?;
    for row in exit::TABLE {
        writeln!(out, ".TP\n\\fB{}\\fR", roff(&row.commands.join(", ")))?;
        for (code, meaning) in [
            (exit::OK, row.ok),
            (exit::FAILED, row.failed),
            (exit::USAGE, row.usage),
            (exit::INTERRUPTED, row.interrupted),
        ] {
            if !meaning.is_empty() {
                writeln!(out, "{code}: {}\n.br", roff(&meaning.replace('`', "")))?;
            }
        }
    }
    writeln!(
        out,
        ".PP\nA command whose output pipe closes early ends with {}.",
        exit::CLOSED_OUTPUT
    )?;
    writeln!(
        out,
        ".SH ENVIRONMENT\n.TP\n\\fBCLUSTERMGR_HOME\\fR\nThe home (default ~/.clustermgr), as \\fB\\-\\-home\\fR.\n.TP\n\\fBCLUSTERMGR_STORE_WAIT_SECS\\fR\nHow long a command waits for the store another command holds (30).\n.TP\n\\fBCLUSTERMGR_LOG\\fR\nThe log filter (warn; info for serve and dev).\n.TP\n\\fBNO_COLOR\\fR\nNo colour, even on a terminal."
    )?;
    writeln!(
        out,
        ".SH FILES\n.TP\n\\fIHOME/controller.toml\\fR\nTimeouts, health, telemetry and alert settings.\n.TP\n\\fIHOME/serve.sock\\fR\nWhere \\fBclustermgr serve\\fR answers the CLI.\n.SH \"SEE ALSO\"\n\\fBclustermgr\\-agent\\fR(8), /usr/share/doc/clustermgr/README.md"
    )?;
    man.render_version_section(out)?;
    Ok(())
}
