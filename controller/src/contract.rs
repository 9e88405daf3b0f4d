//! The JSON contract: the one document each command prints with `--json`, the line
//! each stream prints, the error object, and the JSON Schema of each (checked in under
//! `docs/schema`). The CLI prints these; the web console will serve the same ones.
//!
//! The rules every document keeps: one JSON object per command (never a bare array, so
//! a field can be added without breaking a script); streams (`exec`, `logs -f`,
//! `events -f`, `health --watch`) print one compact object per line, each with a
//! `type`; a point in time is RFC 3339 text in UTC, with a Unix-millisecond `_ms`
//! number beside it where scripts sort or compare (records, events, log lines); a
//! duration's unit is in its name (`_ms`, `_us`, `_secs`); booleans are booleans; an
//! absent value is `null`, never a placeholder string.

use schemars::JsonSchema;
use serde::Serialize;

use crate::ctx::{NodeOutcome, NodeState};
use crate::desired::{ClusterSettings, GenerationView, NodeApplyView, NodePlanView};
use crate::health::HealthEvent;
use crate::ops::{
    AuditView, CertView, HostView, NodeView, Operation, Report, SignedView, StatusView,
};
use crate::telemetry::store::NodeLine;

/// `init`.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct InitDoc {
    /// The cluster's name.
    pub cluster: String,
    /// Its home directory.
    pub home: String,
    /// How long the certificates it issues last, in days.
    pub cert_lifetime_days: u32,
}

/// `node list`.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct NodeListDoc {
    /// Every node, by name.
    pub nodes: Vec<NodeView>,
}

/// `node add --ssh` and `node add --from`: each host's bootstrap.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct NodeAddDoc {
    /// A host each.
    pub nodes: Vec<AddedNode>,
}

/// One host of `node add --ssh`/`--from`.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct AddedNode {
    /// The node.
    pub node: String,
    /// Whether it was added.
    pub ok: bool,
    /// What was done on the host, when it was added.
    pub outcome: Option<crate::bootstrap::Outcome>,
    /// Why not, when it was not.
    pub error: Option<String>,
}

/// `node remove`, `node set-primary`: what was done, in words.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct MessageDoc {
    /// The sentence the text output prints.
    pub message: String,
}

/// `user list`.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct UserListDoc {
    /// Every console account, by name.
    pub users: Vec<crate::users::UserView>,
}

/// `user add`, `user passwd`, `user remove`.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct UserDoc {
    /// The sentence the text output prints.
    pub message: String,
    /// The account after the change; `null` once removed.
    pub user: Option<crate::users::UserView>,
}

/// `user token`: which token was made. The token itself is never in `--json`: it is
/// printed once as text, or written to `--out`.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct TokenDoc {
    /// The account.
    pub user: String,
    /// The token's public name.
    pub id: String,
    /// Where the token was written (`--out`), or `null` when it was printed.
    pub written_to: Option<String>,
}

/// `ping`.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct PingDoc {
    /// A node each, by name.
    pub nodes: Vec<PingNode>,
}

/// One node of `ping`.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct PingNode {
    /// The node.
    pub node: String,
    /// Whether it answered.
    pub state: NodeState,
    /// What went wrong, if anything.
    pub message: Option<String>,
    /// The round trip, microseconds.
    pub rtt_us: Option<u64>,
    /// Its clock minus the controller's, milliseconds (approximate).
    pub clock_skew_ms: Option<i64>,
    /// The host's facts, when it answered.
    pub host: Option<HostView>,
}

/// `cert renew`, `node upgrade`: how each node's part went.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct NodeResultsDoc {
    /// A node each, by name.
    pub nodes: Vec<NodeResult>,
}

/// One node's part of an operation.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct NodeResult {
    /// The node.
    pub node: String,
    /// How it went.
    pub state: NodeState,
    /// What went wrong, if anything.
    pub message: Option<String>,
    /// How long its part took, milliseconds.
    pub duration_ms: u64,
}

impl From<&NodeOutcome> for NodeResult {
    fn from(o: &NodeOutcome) -> NodeResult {
        NodeResult {
            node: o.node.clone(),
            state: o.state.clone(),
            message: o.message.clone(),
            duration_ms: o.duration_ms,
        }
    }
}

/// `cert revoke-controller`.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct ControllerRevokedDoc {
    /// The serial of the certificate revoked.
    pub revoked_serial: String,
    /// The serial of the controller's new certificate.
    pub serial: String,
    /// When the new one expires.
    #[schemars(extend("format" = "date-time"))]
    pub expires: String,
    /// Each node: `ok` refuses the old certificate from now on; otherwise from its
    /// next contact with this controller.
    pub nodes: Vec<NodeResult>,
}

/// `cert status`.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct CertsDoc {
    /// The CA's, the controller's and each node's.
    pub certificates: Vec<CertView>,
}

/// `audit`.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct AuditDoc {
    /// Oldest first.
    pub entries: Vec<AuditView>,
}

/// `plan`.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct PlanDoc {
    /// What `apply --plan` takes to apply exactly this plan.
    pub digest: String,
    /// A node each.
    pub nodes: Vec<NodePlanView>,
}

/// `drift`.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct DriftDoc {
    /// A node each.
    pub nodes: Vec<NodePlanView>,
}

/// `apply`, `drain`, `undrain`, `rollback`.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct AppliedDoc {
    /// A node each.
    pub nodes: Vec<NodeApplyView>,
}

/// `rollback --list`.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct GenerationsDoc {
    /// The node.
    pub node: String,
    /// The file.
    pub path: String,
    /// Its kept versions, newest first.
    pub generations: Vec<GenerationView>,
}

/// `history`.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct HistoryDoc {
    /// Oldest first.
    pub changes: Vec<crate::desired::ChangeView>,
}

/// A log line, in `logs` and `logs -f`.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct LogView {
    /// The node.
    pub node: String,
    /// Its sequence number on that node.
    pub seq: u64,
    /// When the agent read it, RFC 3339.
    #[schemars(extend("format" = "date-time"))]
    pub time: String,
    /// The same, Unix milliseconds.
    pub time_ms: i64,
    /// The file or journal it came from.
    pub source: String,
    /// The line, without its newline.
    pub line: String,
}

impl From<NodeLine> for LogView {
    fn from(l: NodeLine) -> LogView {
        LogView {
            node: l.node,
            seq: l.seq,
            time: crate::clock::rfc3339_ms(l.time_ms),
            time_ms: l.time_ms,
            source: l.source,
            line: l.line,
        }
    }
}

/// `logs`.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct LogsDoc {
    /// Merged across nodes in time order.
    pub lines: Vec<LogView>,
}

/// `metrics` without `--metric`.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct MetricNamesDoc {
    /// The metrics stored, by name.
    pub metrics: Vec<crate::telemetry::MetricName>,
}

/// `metrics --metric NAME`.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct SeriesDoc {
    /// A series per node and label set.
    pub series: Vec<crate::telemetry::SeriesView>,
}

/// `top` (with `--json` or without a terminal: one table).
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct TopDoc {
    /// The cluster's name.
    pub cluster: String,
    /// A row per node.
    pub nodes: Vec<crate::telemetry::top::TopRow>,
}

/// A health change, in `events` and `events -f`.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct EventView {
    /// Its number.
    pub id: u64,
    /// When `serve` saw it, RFC 3339.
    #[schemars(extend("format" = "date-time"))]
    pub time: String,
    /// The same, Unix milliseconds.
    pub time_ms: i64,
    /// The node.
    pub node: String,
    /// The check.
    pub check: String,
    /// Its state before.
    pub from: crate::healthlog::Level,
    /// Its state now.
    pub to: crate::healthlog::Level,
    /// Why, in words.
    pub reason: String,
    /// Who acknowledged it (`events ack`), when and what they said; null until someone
    /// has (always null in `events -f`, which prints changes as they come).
    pub acknowledged: Option<AckView>,
}

/// Someone's acknowledgement of a health event.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct AckView {
    /// Who, as the audit log names them.
    pub by: String,
    /// When, RFC 3339.
    #[schemars(extend("format" = "date-time"))]
    pub time: String,
    /// The same, Unix milliseconds.
    pub time_ms: i64,
    /// What they said (may be empty).
    pub note: String,
}

impl From<HealthEvent> for EventView {
    fn from(e: HealthEvent) -> EventView {
        EventView {
            id: e.id,
            time: crate::clock::rfc3339_ms(e.time_ms),
            time_ms: e.time_ms,
            node: e.node,
            check: e.check,
            from: e.from,
            to: e.to,
            reason: e.reason,
            acknowledged: None,
        }
    }
}

impl From<crate::health::EventRecord> for EventView {
    fn from(r: crate::health::EventRecord) -> EventView {
        EventView {
            acknowledged: r.ack.map(|a| AckView {
                by: a.by,
                time: crate::clock::rfc3339_ms(a.time_ms),
                time_ms: a.time_ms,
                note: a.note,
            }),
            ..r.event.into()
        }
    }
}

/// `events`.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct EventsDoc {
    /// Oldest first.
    pub events: Vec<EventView>,
}

/// One node's command, as `exec --json` prints it when the node is done.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct ExecResult {
    /// The node.
    pub node: String,
    /// `ok` when the command exited 0.
    pub state: NodeState,
    /// Its exit code, when it exited.
    pub exit_code: Option<i32>,
    /// The signal that ended it, when one did.
    pub signal: Option<i32>,
    /// Whether `--timeout` ended it.
    pub timed_out: bool,
    /// How long it ran, milliseconds.
    pub duration_ms: u64,
    /// What went wrong, if anything.
    pub message: Option<String>,
    /// Its standard output (invalid UTF-8 replaced).
    pub stdout: String,
    /// Its standard error (invalid UTF-8 replaced).
    pub stderr: String,
}

impl ExecResult {
    /// A node's outcome with the output it gave.
    pub fn of(o: &NodeOutcome, stdout: String, stderr: String) -> ExecResult {
        ExecResult {
            node: o.node.clone(),
            state: o.state.clone(),
            exit_code: o.exit_code,
            signal: o.signal,
            timed_out: o.timed_out,
            duration_ms: o.duration_ms,
            message: o.message.clone(),
            stdout,
            stderr,
        }
    }
}

/// A line of `exec --json`.
#[derive(Clone, Debug, Serialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ExecLine {
    /// A node is done.
    Result(ExecResult),
}

/// A line of `logs -f --json`.
#[derive(Clone, Debug, Serialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum LogLine {
    /// A log line.
    Log(LogView),
}

/// A line of `events -f --json`.
#[derive(Clone, Debug, Serialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventLine {
    /// A health change.
    Event(EventView),
}

/// A line of `health --watch --json`.
#[derive(Clone, Debug, Serialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum HealthLine {
    /// A round.
    Health(crate::health::HealthView),
}

/// What a failed command writes on standard error with `--json`.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct ErrorDoc {
    /// What went wrong and what to do, as the text output says it.
    pub error: String,
    /// The process's exit code (README, "Exit codes").
    pub exit_code: i32,
}

/// The JSON document of an operation's report. `None` for a report that is not printed
/// as one: `exec` prints [`ExecLine`]s as its nodes finish, and a backup's snapshot
/// becomes an archive.
pub fn document(op: &Operation, report: Report) -> Option<serde_json::Value> {
    fn value<T: Serialize>(v: &T) -> Option<serde_json::Value> {
        Some(serde_json::to_value(v).expect("a view serializes"))
    }
    match report {
        Report::Signed(s) => value::<SignedView>(&s),
        Report::Node(n) => value::<NodeView>(&n),
        Report::Nodes(nodes) => value(&NodeListDoc { nodes }),
        Report::Done(message) => value(&MessageDoc { message }),
        Report::Outcomes(_) if matches!(op, Operation::Exec { .. }) => None,
        Report::Outcomes(outcomes) if matches!(op, Operation::Ping { .. }) => value(&PingDoc {
            nodes: outcomes
                .iter()
                .map(|o| PingNode {
                    node: o.node.clone(),
                    state: o.state.clone(),
                    message: o.message.clone(),
                    rtt_us: o.rtt_us,
                    clock_skew_ms: o.clock_skew_ms,
                    host: o.info.as_deref().map(HostView::from),
                })
                .collect(),
        }),
        Report::Outcomes(outcomes) => value(&NodeResultsDoc {
            nodes: outcomes.iter().map(NodeResult::from).collect(),
        }),
        Report::ControllerRevoked(v) => value(&ControllerRevokedDoc {
            revoked_serial: v.revoked_serial,
            serial: v.serial,
            expires: v.expires,
            nodes: v.nodes.iter().map(NodeResult::from).collect(),
        }),
        Report::Status(s) => value::<StatusView>(&s),
        Report::Certs(certificates) => value(&CertsDoc { certificates }),
        Report::Audit(entries) => value(&AuditDoc { entries }),
        Report::Plan {
            views,
            digest: Some(digest),
            ..
        } => value(&PlanDoc {
            digest,
            nodes: views,
        }),
        Report::Plan { views, .. } => value(&DriftDoc { nodes: views }),
        Report::Applied(nodes) => value(&AppliedDoc { nodes }),
        Report::History(changes) => value(&HistoryDoc { changes }),
        Report::Logs(lines) => value(&LogsDoc {
            lines: lines.into_iter().map(LogView::from).collect(),
        }),
        Report::MetricNames(metrics) => value(&MetricNamesDoc { metrics }),
        Report::Metrics(series) => value(&SeriesDoc { series }),
        Report::Top { cluster, rows } => value(&TopDoc {
            cluster,
            nodes: rows,
        }),
        Report::Health(h) => value(&h),
        Report::Replication(r) => value(&r),
        Report::Ports(p) => value(&p),
        Report::Events(events) => value(&EventsDoc {
            events: events.into_iter().map(EventView::from).collect(),
        }),
        Report::Cluster(c) => value::<ClusterSettings>(&c.typed),
        Report::Generations {
            node,
            path,
            generations,
        } => value(&GenerationsDoc {
            node,
            path,
            generations,
        }),
        Report::User(crate::users::View::Users(users)) => value(&UserListDoc { users }),
        Report::User(crate::users::View::Done { said, user }) => value(&UserDoc {
            message: said,
            user,
        }),
        // The CLI prints `user token`'s document itself: only it knows where the token
        // went.
        Report::User(crate::users::View::Token { .. }) => None,
        Report::Keys(k) => value::<crate::desired::keys::KeysView>(&k),
        Report::GluuInstall(g) => value::<crate::desired::gluu::GluuInstallView>(&g),
        Report::GluuAdd(g) => value::<crate::desired::gluu::GluuAddView>(&g),
        Report::Snapshot { .. } => None,
    }
}

/// One line of a stream, compact, with its `type`.
pub fn line<T: Serialize>(line: &T) -> String {
    serde_json::to_string(line).expect("a stream line serializes")
}

/// A schema, the file it is checked in as (`docs/schema/NAME.json`), and the commands
/// that print it.
pub struct Published {
    /// The file's stem.
    pub name: &'static str,
    /// The commands (`node list`, `exec`, ...) that print it; the error object's is
    /// every command.
    pub commands: &'static [&'static str],
    /// Whether it is one line of a stream rather than a whole document.
    pub stream: bool,
    /// The schema.
    pub schema: schemars::Schema,
}

/// Every published schema, in the order of the README's table.
pub fn published() -> Vec<Published> {
    fn doc<T: JsonSchema>(name: &'static str, commands: &'static [&'static str]) -> Published {
        let mut value = schemars::schema_for!(T).to_value();
        every_property_required(&mut value);
        let schema = schemars::Schema::try_from(value).expect("a schema stays an object");
        Published {
            name,
            commands,
            stream: false,
            schema,
        }
    }
    fn stream<T: JsonSchema>(name: &'static str, commands: &'static [&'static str]) -> Published {
        Published {
            stream: true,
            ..doc::<T>(name, commands)
        }
    }
    vec![
        doc::<InitDoc>("init", &["init"]),
        doc::<NodeView>("node", &["node add", "node show"]),
        doc::<NodeAddDoc>("node-add-ssh", &["node add --ssh", "node add --from"]),
        doc::<NodeListDoc>("node-list", &["node list"]),
        doc::<SignedView>("node-sign", &["node sign"]),
        doc::<MessageDoc>("message", &["node remove", "node set-primary"]),
        doc::<PingDoc>("ping", &["ping"]),
        stream::<ExecLine>("exec", &["exec"]),
        doc::<StatusView>("status", &["status"]),
        doc::<CertsDoc>("cert-status", &["cert status"]),
        doc::<NodeResultsDoc>("node-results", &["cert renew", "node upgrade"]),
        doc::<ControllerRevokedDoc>("cert-revoke-controller", &["cert revoke-controller"]),
        doc::<AuditDoc>("audit", &["audit"]),
        doc::<crate::archive::BackupView>("backup", &["backup"]),
        doc::<crate::archive::RestoreView>("restore", &["restore"]),
        doc::<ClusterSettings>("cluster", &["cluster show", "cluster set", "cluster unset"]),
        doc::<PlanDoc>("plan", &["plan"]),
        doc::<AppliedDoc>("apply", &["apply", "drain", "undrain", "rollback"]),
        doc::<DriftDoc>("drift", &["drift"]),
        doc::<HistoryDoc>("history", &["history"]),
        doc::<GenerationsDoc>("rollback-list", &["rollback --list"]),
        doc::<LogsDoc>("logs", &["logs"]),
        stream::<LogLine>("logs-follow", &["logs -f"]),
        doc::<MetricNamesDoc>("metrics", &["metrics"]),
        doc::<SeriesDoc>("metrics-series", &["metrics --metric"]),
        doc::<TopDoc>("top", &["top"]),
        doc::<crate::health::HealthView>("health", &["health"]),
        stream::<HealthLine>("health-watch", &["health --watch"]),
        doc::<crate::health::replication::ReplicationView>("replication", &["replication"]),
        doc::<crate::health::ports::PortsView>("ports", &["ports"]),
        doc::<EventsDoc>("events", &["events", "events ack"]),
        stream::<EventLine>("events-follow", &["events -f"]),
        doc::<crate::desired::keys::KeysView>("keys", &["keys rotate", "keys status"]),
        doc::<crate::desired::gluu::GluuInstallView>("gluu-install", &["gluu install"]),
        doc::<crate::desired::gluu::GluuAddView>("gluu-add", &["gluu add"]),
        doc::<UserListDoc>("user-list", &["user list"]),
        doc::<UserDoc>("user", &["user add", "user passwd", "user remove"]),
        doc::<TokenDoc>("user-token", &["user token"]),
        doc::<ErrorDoc>("error", &["(any, on standard error)"]),
    ]
}

/// Marks every property of every object required: the views never leave a field out
/// (an absent value is `null`), and the schema says so, where schemars would leave an
/// `Option` or defaulted field optional.
fn every_property_required(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(map) => {
            if let Some(serde_json::Value::Object(props)) = map.get("properties") {
                let names = props
                    .keys()
                    .cloned()
                    .map(serde_json::Value::String)
                    .collect();
                map.insert("required".into(), serde_json::Value::Array(names));
            }
            map.values_mut().for_each(every_property_required);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(every_property_required),
        _ => {}
    }
}

/// Where the schemas are checked in, from the workspace root.
pub const SCHEMA_DIR: &str = "docs/schema";

/// The files checked in under [`SCHEMA_DIR`] (paths from the workspace root): each
/// schema as pretty JSON, and an index saying which commands print which.
pub fn checked_in() -> Vec<(std::path::PathBuf, String)> {
    let published = published();
    let mut index = String::from(
        "# The JSON contract's schemas\n\n\
         Generated from the view types by `cargo run -p clustermgr-tests --bin packaging-gen`;\n\
         a unit test fails when a type and its file here differ. The rules every document\n\
         keeps are in the README (\"JSON output\"). JSON Schema draft 2020-12.\n\n\
         | schema | printed by | form |\n|---|---|---|\n",
    );
    let mut files = Vec::new();
    for p in &published {
        let mut text = serde_json::to_string_pretty(&p.schema).expect("a schema serializes");
        text.push('\n');
        files.push((format!("{SCHEMA_DIR}/{}.json", p.name).into(), text));
        let form = if p.stream {
            "a line each (JSON Lines)"
        } else if p.name == "error" {
            "one object on standard error"
        } else {
            "one document"
        };
        let commands: Vec<String> = p.commands.iter().map(|c| format!("`{c}`")).collect();
        index.push_str(&format!(
            "| [{0}]({0}.json) | {1} | {form} |\n",
            p.name,
            commands.join(", ")
        ));
    }
    files.push((format!("{SCHEMA_DIR}/README.md").into(), index));
    files
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checked_in_schemas_are_what_the_types_make() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let files = checked_in();
        for (path, expected) in &files {
            let committed = std::fs::read_to_string(root.join(path)).unwrap_or_default();
            assert!(
                &committed == expected,
                "{} differs from the view types: run `cargo run -p clustermgr-tests --bin packaging-gen` and commit the result",
                path.display()
            );
        }
        // A schema whose type went is not left behind.
        for entry in std::fs::read_dir(root.join(SCHEMA_DIR)).unwrap() {
            let path = std::path::Path::new(SCHEMA_DIR).join(entry.unwrap().file_name());
            assert!(
                files.iter().any(|(p, _)| *p == path),
                "{} is not generated from any view type: remove it",
                path.display()
            );
        }
    }

    #[test]
    fn every_command_prints_a_published_document_or_none_by_design() {
        // Commands that print no JSON document: daemons, and output for shells.
        const NONE: &[&str] = &["serve", "dev", "completion", "man"];
        let published = published();
        for command in crate::exit::TABLE.iter().flat_map(|r| r.commands) {
            let command = *command;
            let covered = published.iter().any(|p| {
                p.commands
                    .iter()
                    .any(|c| *c == command || c.starts_with(&format!("{command} ")))
            });
            assert!(
                covered || NONE.contains(&command),
                "`{command}` has no published JSON schema (contract::published)"
            );
        }
    }
}
