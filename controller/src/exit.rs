//! Process exit codes: named once here, with every command's meaning of each, from
//! which the README's table is checked (and `clustermgr`'s man page is written).

/// Done: every node did what was asked.
pub const OK: i32 = 0;
/// The operation failed: on some node, or as a whole (a store or file error).
pub const FAILED: i32 = 1;
/// The command was wrong or could not start: a bad flag or argument, an unknown node,
/// no home, a file others may read. Also `drift` found hand edits, and `health` a
/// critical check (monitoring's convention).
pub const USAGE: i32 = 2;
/// `health` and `ports` only: a check could not run (monitoring's UNKNOWN).
pub const UNKNOWN: i32 = 3;
/// Ctrl-C or SIGTERM: what was gathered is printed, running commands are cancelled.
pub const INTERRUPTED: i32 = 130;
/// Whatever read the output went away (`| head`), as a shell tool ends on SIGPIPE.
pub const CLOSED_OUTPUT: i32 = 141;

/// `health`'s and `ports`' levels, monitoring's (Nagios') exit codes.
pub mod monitoring {
    /// Every check ok.
    pub const OK: i32 = super::OK;
    /// A warning.
    pub const WARNING: i32 = 1;
    /// A critical check.
    pub const CRITICAL: i32 = 2;
    /// A check that could not run.
    pub const UNKNOWN: i32 = super::UNKNOWN;
}

/// `drift`: hand edits were found.
pub const DRIFT_FOUND: i32 = USAGE;

/// One row of the table: the commands, and what 0, 1, 2 and 130 mean for them.
#[derive(Clone, Copy, Debug)]
pub struct Row {
    /// The commands, as typed (`node add`).
    pub commands: &'static [&'static str],
    /// [`OK`].
    pub ok: &'static str,
    /// [`FAILED`].
    pub failed: &'static str,
    /// [`USAGE`].
    pub usage: &'static str,
    /// [`INTERRUPTED`] (empty where the command cannot be interrupted midway).
    pub interrupted: &'static str,
}

const USAGE_ERROR: &str =
    "usage or configuration error (bad flag, unknown node, no home, store still locked after 30 s)";

/// Every command's exit codes.
pub const TABLE: &[Row] = &[
    Row {
        commands: &["ping", "exec", "status"],
        ok: "every selected node ok",
        failed: "some node failed or was unreachable",
        usage: USAGE_ERROR,
        interrupted: "interrupted",
    },
    Row {
        commands: &["node add"],
        ok: "added (with `--from`: every host added)",
        failed: "the node did not answer as expected, or a bootstrap step failed on a host (nothing recorded for that host)",
        usage: "usage or configuration error (a name or address that cannot be used)",
        interrupted: "interrupted",
    },
    Row {
        commands: &["node sign", "node remove", "node set-primary"],
        ok: "done",
        failed: "refused (bad CSR, primary still needed, ...)",
        usage: "usage or configuration error",
        interrupted: "interrupted",
    },
    Row {
        commands: &["node upgrade"],
        ok: "every selected node runs the binary (or already did)",
        failed: "some node failed, went back to its old binary, or was unreachable",
        usage: "usage or configuration error (a file that is not an agent build)",
        interrupted: "interrupted",
    },
    Row {
        commands: &["init"],
        ok: "created",
        failed: "cannot write the home",
        usage: "home exists, is a file, or is writable by others; bad arguments",
        interrupted: "",
    },
    Row {
        commands: &["cert renew"],
        ok: "every selected node renewed",
        failed: "some node failed or was unreachable",
        usage: "usage or configuration error",
        interrupted: "interrupted",
    },
    Row {
        commands: &["cert revoke-controller"],
        ok: "every node reached with the new certificate",
        failed: "some node unreachable (it learns at its next contact)",
        usage: "usage or configuration error",
        interrupted: "interrupted",
    },
    Row {
        commands: &[
            "node list",
            "node show",
            "cert status",
            "audit",
            "history",
            "cluster show",
        ],
        ok: "shown",
        failed: "store error",
        usage: "usage or configuration error",
        interrupted: "",
    },
    Row {
        commands: &[
            "user add",
            "user list",
            "user remove",
            "user passwd",
            "user token",
        ],
        ok: "done",
        failed: "store error, or refused: the caller is not an admin",
        usage: "usage error: a bad name or role, an account that exists (add) or does not (the others), a password under 12 characters or two that differ, a password file others may read, `--json` without `--out` (token)",
        interrupted: "",
    },
    Row {
        commands: &["cluster set", "cluster unset"],
        ok: "set",
        failed: "store error",
        usage: "unknown setting or bad value (the valid ones are listed); a file that cannot be read, is not PEM, or (a key) is readable by others",
        interrupted: "",
    },
    Row {
        commands: &["plan"],
        ok: "planned on every node",
        failed: "some node failed or was unreachable",
        usage: "usage or configuration error",
        interrupted: "interrupted",
    },
    Row {
        commands: &["apply", "drain", "undrain", "rollback"],
        ok: "applied (or nothing to change) everywhere",
        failed: "some node refused, rolled back, failed or was unreachable (an unreachable node keeps the revision for `serve`); the plan approved changed before the apply, or `n` at the prompt (nothing applied)",
        usage: "usage or configuration error; `apply` without `--yes` and without a terminal",
        interrupted: "interrupted",
    },
    Row {
        commands: &["drift"],
        ok: "no drift",
        failed: "some node failed or was unreachable",
        usage: "drift found (or a usage error)",
        interrupted: "interrupted",
    },
    Row {
        commands: &["logs", "metrics", "events", "top"],
        ok: "shown",
        failed: "store error",
        usage: "usage or configuration error (an unknown node or source, a bad `--since`)",
        interrupted: "interrupted (`-f` and `top` end with Ctrl-C), after printing what was gathered",
    },
    Row {
        commands: &["events ack"],
        ok: "acknowledged (or already, by whoever was first)",
        failed: "store error, or refused: the caller is a viewer",
        usage: "no such event, a return to ok (nothing to acknowledge), or a note longer than one line of 500 characters",
        interrupted: "",
    },
    Row {
        commands: &["gluu install"],
        ok: "Gluu is installed and set up on the node from the primary's setup",
        failed: "a step failed (named, with its output; the node's state and what to do are said), the primary's setup could not be read, or refused: the caller is not an admin",
        usage: "not a Gluu node, the primary itself, a node that runs Gluu without --force, packages off, no hostname, or a bad --setup-password-file",
        interrupted: "",
    },
    Row {
        commands: &["gluu add"],
        ok: "every Gluu node has the components (added, or already there)",
        failed: "adding failed on a node (named, with the script's output; the nodes after it were not reached), or refused: the caller is not an admin",
        usage: "an unknown component, or no node runs Gluu yet",
        interrupted: "",
    },
    Row {
        commands: &["keys rotate"],
        ok: "new keys made on the primary, the keystore on every Gluu node, the keys published",
        failed: "making the keys on the primary failed (nothing changed), or a Gluu node did not take the keystore or the published keys (named; `apply` finishes), or refused: the caller is not an admin",
        usage: "no Gluu node, or `[keys]` in controller.toml is invalid",
        interrupted: "",
    },
    Row {
        commands: &["keys status"],
        ok: "every Gluu node holds the cluster's keystore and published keys (or there are no keys yet)",
        failed: "some Gluu node's copy differs, is missing, or could not be read (named)",
        usage: "usage or configuration error",
        interrupted: "",
    },
    Row {
        commands: &["replication"],
        ok: "every Gluu node's LDAP was read",
        failed: "some Gluu node's LDAP could not be read (it is named), or none could",
        usage: "usage or configuration error",
        interrupted: "interrupted",
    },
    Row {
        commands: &["health", "ports"],
        ok: "every check ok (every port open)",
        failed: "a warning",
        usage: "a critical, a port missing (3: unknown, also when it cannot run or the usage is wrong)",
        interrupted: "",
    },
    Row {
        commands: &["serve", "dev"],
        ok: "stopped cleanly",
        failed: "failed",
        usage: "usage or configuration error; a serve already running for the home (its pid is named)",
        interrupted: "",
    },
    Row {
        commands: &["backup"],
        ok: "written",
        failed: "the store or the file could not be read or written",
        usage: "no home; the target is a directory, in a missing folder, or exists (without `--force`); passphrase refused (too short, the two differ, file missing or readable by others, no terminal and no file)",
        interrupted: "interrupted",
    },
    Row {
        commands: &["completion", "man"],
        ok: "printed",
        failed: "standard output could not be written",
        usage: "a shell other than bash, zsh or fish",
        interrupted: "",
    },
    Row {
        commands: &["restore"],
        ok: "restored",
        failed: "wrong passphrase or damaged file, not a backup, cannot write the home (nothing is left behind)",
        usage: "the target holds a cluster or anything else; passphrase file readable by others, or no terminal and no file",
        interrupted: "",
    },
];

/// The table as the README shows it.
pub fn markdown() -> String {
    let mut out = format!("{HEADER}\n|---|---|---|---|---|\n");
    for r in TABLE {
        let commands: Vec<String> = r.commands.iter().map(|c| format!("`{c}`")).collect();
        let commands = commands.join(", ");
        out.push('|');
        for cell in [commands.as_str(), r.ok, r.failed, r.usage, r.interrupted] {
            if cell.is_empty() {
                out.push_str(" |");
            } else {
                out.push_str(&format!(" {cell} |"));
            }
        }
        out.push('\n');
    }
    out
}

/// `readme` with its exit-code table (from its header line to the first line that is
/// not a row) replaced by [`markdown`]'s; unchanged if it has none.
pub fn readme_with_table(readme: &str) -> String {
    let Some(start) = readme.find(HEADER) else {
        return readme.to_string();
    };
    let rows: usize = readme[start..]
        .split_inclusive('\n')
        .take_while(|l| l.starts_with('|'))
        .map(str::len)
        .sum();
    format!(
        "{}{}{}",
        &readme[..start],
        markdown(),
        &readme[start + rows..]
    )
}

const HEADER: &str = "| command | 0 | 1 | 2 | 130 |";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_readme_shows_this_table() {
        let readme = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"));
        assert!(
            readme.contains(HEADER),
            "the README has the exit-code table"
        );
        assert!(
            readme == readme_with_table(readme),
            "README.md's exit-code table differs from controller/src/exit.rs: run `cargo run -p clustermgr-tests --bin packaging-gen`"
        );
    }

    /// Every command the CLI has, as typed (`node add`), help aside.
    fn commands(cmd: &clap::Command, prefix: &str, out: &mut Vec<String>) {
        for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
            let name = format!("{prefix}{}", sub.get_name());
            if sub.has_subcommands() {
                commands(sub, &format!("{name} "), out);
            }
            // `events` runs alone as well as with `ack`.
            if !sub.has_subcommands() || !sub.is_subcommand_required_set() {
                out.push(name);
            }
        }
    }

    #[test]
    fn every_command_has_a_row_and_every_row_a_command() {
        use clap::CommandFactory;
        let mut all = Vec::new();
        commands(&crate::cli::Cli::command(), "", &mut all);
        let listed: Vec<&str> = TABLE
            .iter()
            .flat_map(|r| r.commands.iter().copied())
            .collect();
        for c in &all {
            assert!(
                listed.contains(&c.as_str()),
                "`{c}` has no row in exit::TABLE"
            );
        }
        for c in &listed {
            assert!(
                all.iter().any(|a| a == c),
                "exit::TABLE lists `{c}`, which is no command"
            );
        }
    }
}
