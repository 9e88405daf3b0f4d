//! The messages of the protocol.
//!
//! Streams: the controller opens one bidirectional stream per request. The first
//! stream of a connection carries the [`Hello`] exchange. Every later stream starts
//! with a [`Request`] frame; unary requests get one [`Reply`] frame back, an exec gets
//! a sequence of [`ExecEvent`] frames while the controller may send [`ExecInput`]
//! frames. Agent-initiated unidirectional streams (logs and metrics) are reserved for
//! a later protocol version; version 1 defines none.
//!
//! [`Hello`] and [`HelloReply`] are frozen across all versions, because they are
//! decoded before a version is agreed. Every other type here is frozen as protocol
//! version 1: postcard has no field tags, so changing a type means a new version.

use serde::{Deserialize, Serialize};

use crate::NodeName;
use crate::changeset::{
    ApplyReport, BackupInfo, ChangeSet, EntryPlan, PackageFile, ProbeSpec, RestoreSpec, Scope,
    StepRun,
};
use crate::version::VersionRange;

/// The first frame of a connection, controller to agent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The protocol versions the controller speaks.
    pub versions: VersionRange,
    /// Who the controller is (the cluster name), for the agent's logs and journal.
    pub identity: String,
    /// The controller's software version.
    pub software: String,
}

/// The agent's answer to [`Hello`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum HelloReply {
    /// The agent agrees to speak `version`.
    Accepted {
        /// The version both ends now speak.
        version: u16,
        /// The node name the agent was enrolled as.
        node: NodeName,
        /// The agent's software version.
        software: String,
    },
    /// The agent cannot speak with this controller; the connection closes after this.
    Refused {
        /// A sentence saying why.
        reason: String,
        /// The versions the agent speaks.
        versions: VersionRange,
    },
}

/// The first frame of every request stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Describe the host. Answered by [`Reply::Info`].
    Info,
    /// Run a command. Answered by a sequence of [`ExecEvent`]s.
    Exec(ExecSpec),
    /// Make a certificate signing request with the agent's key (or a new key).
    /// Answered by [`Reply::Csr`].
    Csr {
        /// Generate a new key first; it replaces the current one only once a
        /// certificate for it is installed.
        new_key: bool,
    },
    /// Install a renewed certificate. Answered by [`Reply::CertInstalled`].
    InstallCert {
        /// The certificate, PEM.
        cert_pem: String,
    },
    // New variants go last: postcard numbers variants by position.
    /// Stop the agent and remove what SSH bootstrap installed (binary, service,
    /// `/etc/clustermgr` with the key, state). Answered by [`Reply::Uninstalling`]
    /// before the agent stops.
    Uninstall,
    /// Replace the agent's binary with the one that follows. Answered first by
    /// [`Reply::UpgradeReady`] (then exactly `size` raw bytes follow on the stream and
    /// the controller finishes it) or [`Reply::UpToDate`]; after the bytes, by
    /// [`Reply::Upgrading`] just before the agent restarts as the new binary.
    Upgrade(UpgradeSpec),
    /// Keep the new binary of an upgrade now that it answers: it stops being on
    /// trial. Answered by [`Reply::UpgradeCommitted`], or by
    /// [`Reply::UpgradeRolledBack`] when the agent already went back to the old one.
    UpgradeCommit {
        /// The SHA-256 of the binary the upgrade installed, lowercase hex.
        sha256: String,
    },
    /// Compare a change set with the disk, writing nothing. Answered by
    /// [`Reply::Planned`].
    Plan(ChangeSet),
    /// Apply a change set: all of it or none. Answered by [`Reply::Applied`].
    Apply(ChangeSet),
    /// List the kept previous versions of a file. Answered by [`Reply::Backups`].
    Backups {
        /// The path.
        path: String,
        /// Its scope.
        scope: Scope,
    },
    /// Put a kept previous version back. Answered by [`Reply::Applied`].
    Restore(RestoreSpec),
    /// Run a command inside a Gluu container (chrooted into `root`). Answered like
    /// [`Request::Exec`].
    ExecInContainer {
        /// The container root on the host.
        root: String,
        /// The command.
        spec: ExecSpec,
    },
    /// Make sure a private key for a tunnel (stunnel, csync2) exists at `path` on the
    /// node, generating it there if not, and make a CSR for it with the node's name.
    /// Answered by [`Reply::Csr`]. The key never leaves the node.
    HostKey {
        /// Where the key lives.
        path: String,
        /// Its scope.
        scope: Scope,
    },
    /// Check that services run and the node answers HTTPS (a rolling apply's gate).
    /// Answered by [`Reply::Probed`].
    Probe(ProbeSpec),
    /// Stream the agent's telemetry from the record after `after` (0: all it has).
    /// Answered by [`crate::telemetry::TelemetryFrame`]s until the stream is closed;
    /// the controller sends [`crate::telemetry::TelemetryAck`]s on its half.
    Telemetry {
        /// The last sequence number the controller stored.
        after: u64,
    },
    /// Run this round's health checks; answered by [`Reply::Checks`].
    Checks(crate::health::CheckSpec),
    // New variants go last: postcard numbers variants by position.
    /// The certificate of the node's LDAP server, which its replication peers verify it
    /// by (protocol version 2); answered by [`Reply::LdapCert`].
    LdapCert,
    /// Which of these package files the node does not hold yet (protocol version 3);
    /// answered by [`Reply::PackagesMissing`].
    PackagesMissing(Vec<PackageFile>),
    /// Keep this package file: answered by [`Reply::UpgradeReady`], then exactly its
    /// `size` raw bytes follow and the controller finishes the stream; then
    /// [`Reply::PackageStored`] once its SHA-256 matched (protocol version 3).
    PackagePut(PackageFile),
    /// Make and delete oxAuth keys in a copy of the cluster's keystore with the Gluu
    /// container's own `keytool` (protocol version 4); answered by [`Reply::KeysMade`].
    KeysMake(KeysSpec),
    /// Read this node's Gluu setup for another node's install (protocol version 4): its
    /// `setup.properties.last` (decrypted from `.enc` when that is all there is),
    /// `/etc/certs` and custom schema files. Answered by [`Reply::GluuExported`].
    GluuExport(GluuExportSpec),
    /// Install this node's Gluu from the primary's setup, once its package is installed
    /// (protocol version 4). Answered by [`Reply::GluuSetUp`].
    GluuSetup(Box<GluuSetupSpec>),
    /// Take this node's Gluu out of the way before a reinstall: stop it, remove its
    /// package, move its container aside (protocol version 4). Answered by
    /// [`Reply::GluuRemoved`].
    GluuRemove {
        /// The container root on the host.
        root: String,
    },
    /// Add Gluu components after setup with Gluu's own `post-setup-add-components.py`
    /// (protocol version 4). Answered by [`Reply::GluuSetUp`].
    GluuAddComponents {
        /// The container root on the host.
        root: String,
        /// Components by the names Gluu's script takes after `-add`: `shib`,
        /// `passport`, `casa`, `oxd`.
        components: Vec<String>,
    },
}

impl Request {
    /// The protocol version that carries this request, and what needs it in words,
    /// when that is later than the first. Every later type is a variant added last to
    /// an earlier enum, so a request is judged by what it holds.
    pub fn needs_version(&self) -> Option<(u16, &'static str)> {
        let actions = |a: &[crate::changeset::Action]| {
            a.iter()
                .filter_map(crate::changeset::Action::needs_version)
                .max_by_key(|(v, _)| *v)
        };
        match self {
            Request::Plan(set) | Request::Apply(set) => set
                .entries
                .iter()
                .filter_map(crate::changeset::Entry::needs_version)
                .max_by_key(|(v, _)| *v),
            Request::Restore(spec) => spec
                .validate
                .iter()
                .filter_map(crate::changeset::Validator::needs_version)
                .chain(actions(&spec.on_change))
                .max_by_key(|(v, _)| *v),
            Request::Checks(spec) => spec.needs_version(),
            Request::LdapCert => Some((
                crate::version::BUILDS_CLUSTER,
                "the LDAP certificate request",
            )),
            Request::PackagesMissing(_) | Request::PackagePut(_) => {
                Some((crate::version::PROVISIONS, "uploading packages"))
            }
            Request::KeysMake(_) => Some((crate::version::ROTATES_KEYS, "making oxAuth keys")),
            Request::GluuExport(_)
            | Request::GluuSetup(_)
            | Request::GluuRemove { .. }
            | Request::GluuAddComponents { .. } => {
                Some((crate::version::INSTALLS_GLUU, "installing Gluu"))
            }
            _ => None,
        }
    }
}

/// What [`Request::Upgrade`] brings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpgradeSpec {
    /// The binary's length in bytes.
    pub size: u64,
    /// Its SHA-256, lowercase hex; the agent refuses bytes that do not match.
    pub sha256: String,
    /// How long the new binary waits for [`Request::UpgradeCommit`] before it puts the
    /// old binary back and restarts as it.
    pub commit_within_ms: u64,
}

/// The one reply to a unary request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    /// The host description.
    Info(Box<NodeInfo>),
    /// A PEM certificate signing request.
    Csr {
        /// The CSR, PEM.
        pem: String,
    },
    /// The certificate is installed and new connections use it.
    CertInstalled,
    /// The request failed.
    Error(RemoteError),
    // New variants go last: postcard numbers variants by position.
    /// The agent is stopping; its files are removed once it has exited.
    Uninstalling,
    /// Send the binary's bytes now.
    UpgradeReady,
    /// The agent already runs a binary with that SHA-256; nothing follows.
    UpToDate {
        /// The agent's software version.
        version: String,
    },
    /// The new binary is checked, ran once, and is in place; the agent restarts as it
    /// now, with the same process id.
    Upgrading {
        /// The version it had.
        from: String,
        /// The version the new binary reports.
        to: String,
    },
    /// The new binary is kept; the old one is gone.
    UpgradeCommitted {
        /// The version now running.
        version: String,
    },
    /// The new binary did not come up, or was not confirmed in time: the old one is
    /// back and running.
    UpgradeRolledBack {
        /// The version now running.
        version: String,
        /// What went wrong with the new one.
        reason: String,
    },
    /// How each entry of a change set compares with the disk.
    Planned(Vec<EntryPlan>),
    /// What an apply or a restore did.
    Applied(Box<ApplyReport>),
    /// The kept previous versions of a file, newest first.
    Backups(Vec<BackupInfo>),
    /// Each check of a [`Request::Probe`], in order.
    Probed(Vec<StepRun>),
    /// What [`Request::Checks`] found.
    Checks(Box<crate::health::CheckReport>),
    // New variants go last: postcard numbers variants by position.
    /// The node's LDAP server certificate, PEM (public); `None` when the agent knows of
    /// no LDAP server or its certificate file.
    LdapCert(Option<String>),
    /// The package files of a [`Request::PackagesMissing`] the node lacks.
    PackagesMissing(Vec<PackageFile>),
    /// The package file is kept.
    PackageStored,
    /// The keystore a [`Request::KeysMake`] made, and the certificate of every key in it.
    KeysMade(KeysMade),
    /// What [`Request::GluuExport`] read.
    GluuExported(Box<GluuExport>),
    /// The steps [`Request::GluuSetup`] ran, in order; it stopped at the first that
    /// failed.
    GluuSetUp(Vec<crate::changeset::StepRun>),
    /// Where [`Request::GluuRemove`] moved the old container.
    GluuRemoved {
        /// The old container's new place on the host.
        moved_to: String,
    },
}

/// What [`Request::GluuExport`] asks. Its `Debug` leaves the password out.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GluuExportSpec {
    /// The container root on the host.
    pub root: String,
    /// The password `setup.properties.last.enc` was encrypted with, when the node's
    /// LDAP password is not it.
    pub password: Option<String>,
}

impl std::fmt::Debug for GluuExportSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GluuExportSpec")
            .field("root", &self.root)
            .field("password", &self.password.as_ref().map(|_| "(given)"))
            .finish()
    }
}

/// A file of a Gluu setup: its name in its directory, metadata and bytes. Its `Debug`
/// shows the length only (certificate keys are among them).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GluuFile {
    /// The name, no directory.
    pub name: String,
    /// The mode's permission bits.
    pub mode: u32,
    /// The owner, numeric (the containers of one Gluu release number alike).
    pub uid: u32,
    /// The group, numeric.
    pub gid: u32,
    /// The contents.
    pub bytes: Vec<u8>,
}

impl std::fmt::Debug for GluuFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GluuFile({}, {} bytes)", self.name, self.bytes.len())
    }
}

/// The primary's Gluu setup as [`Request::GluuExport`] read it. Secret: its `Debug`
/// shows no contents.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GluuExport {
    /// `setup.properties.last`, plain.
    pub properties: Vec<u8>,
    /// The files of `/etc/certs`.
    pub certs: Vec<GluuFile>,
    /// The custom OpenDJ schema files (`/opt/gluu/schema/opendj`).
    pub schema: Vec<GluuFile>,
}

impl std::fmt::Debug for GluuExport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GluuExport")
            .field("properties_len", &self.properties.len())
            .field("certs", &self.certs)
            .field("schema", &self.schema)
            .finish()
    }
}

/// What [`Request::GluuSetup`] asks: the setup to run and the files to lay down after
/// it. Its `Debug` shows no contents.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GluuSetupSpec {
    /// The container root on the host.
    pub root: String,
    /// `setup.properties` for this node (the primary's, with this node's address).
    pub properties: Vec<u8>,
    /// Setup without loading data (every node but the primary: replication brings it).
    pub no_data: bool,
    /// The primary's `/etc/certs`, laid over what setup made.
    pub certs: Vec<GluuFile>,
    /// Custom OpenDJ schema files.
    pub schema: Vec<GluuFile>,
    /// The cluster's hostname: the certificates are trusted in Java's `cacerts` as
    /// `HOSTNAME_SUFFIX`, as Gluu's setup names them.
    pub hostname: String,
}

impl std::fmt::Debug for GluuSetupSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GluuSetupSpec")
            .field("root", &self.root)
            .field("properties_len", &self.properties.len())
            .field("no_data", &self.no_data)
            .field("certs", &self.certs)
            .field("schema", &self.schema)
            .field("hostname", &self.hostname)
            .finish()
    }
}

/// What [`Request::KeysMake`] asks: the keystore as the controller keeps it (empty for
/// the first), its password, the keys to delete and the keys to make. Its `Debug`
/// shows neither the keystore's bytes nor the password.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeysSpec {
    /// The Gluu container root on the host, whose `/opt/jre/bin/keytool` runs.
    pub root: String,
    /// The keystore (JKS) to start from; empty: a new one.
    pub keystore: Vec<u8>,
    /// The keystore's password, which is also every key's (as Gluu has it).
    pub password: String,
    /// Aliases to delete.
    pub delete: Vec<String>,
    /// Keys to make.
    pub make: Vec<KeyMake>,
}

impl std::fmt::Debug for KeysSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeysSpec")
            .field("root", &self.root)
            .field("keystore_len", &self.keystore.len())
            .field("delete", &self.delete)
            .field("make", &self.make)
            .finish_non_exhaustive()
    }
}

/// One key for [`KeysSpec::make`], in keytool's words.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyMake {
    /// Its alias, which is the JWK's `kid`.
    pub alias: String,
    /// `RSA` or `EC`.
    pub key_alg: String,
    /// Bits: 2048 for RSA, 256, 384 or 521 for EC.
    pub key_size: u32,
    /// The self-signed certificate's signature algorithm (`SHA256withRSA`).
    pub sig_alg: String,
    /// The certificate's validity, days.
    pub validity_days: u32,
}

/// What [`Request::KeysMake`] made: the new keystore and each entry's certificate.
/// Its `Debug` shows the keystore's length only.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeysMade {
    /// The keystore, JKS.
    pub keystore: Vec<u8>,
    /// Every alias it holds with its certificate, PEM (public).
    pub certs: Vec<(String, String)>,
}

impl std::fmt::Debug for KeysMade {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeysMade")
            .field("keystore_len", &self.keystore.len())
            .field(
                "aliases",
                &self.certs.iter().map(|(a, _)| a).collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// A failure reported by the agent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteError {
    /// What kind of failure.
    pub kind: ErrorKind,
    /// A sentence for the operator.
    pub message: String,
}

impl RemoteError {
    /// The agent's policy forbids it.
    pub fn refused(message: impl Into<String>) -> Self {
        RemoteError {
            kind: ErrorKind::Refused,
            message: message.into(),
        }
    }

    /// The request was malformed or impossible.
    pub fn invalid(message: impl Into<String>) -> Self {
        RemoteError {
            kind: ErrorKind::Invalid,
            message: message.into(),
        }
    }

    /// Something failed on the node.
    pub fn internal(message: impl std::fmt::Display) -> Self {
        RemoteError {
            kind: ErrorKind::Internal,
            message: message.to_string(),
        }
    }
}

/// Kinds of agent-side failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorKind {
    /// The agent's policy forbids it (e.g. `allow_exec = false`).
    Refused,
    /// The request was malformed or impossible.
    Invalid,
    /// Something failed on the node.
    Internal,
}

/// What a host is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// The node name from the agent's certificate.
    pub node: NodeName,
    /// The kernel's host name.
    pub hostname: String,
    /// `PRETTY_NAME` from os-release.
    pub os_release: String,
    /// Kernel release.
    pub kernel: String,
    /// CPU architecture (`x86_64`, `aarch64`).
    pub arch: String,
    /// The C library version, when it is glibc.
    pub glibc: Option<String>,
    /// The agent's software version.
    pub agent_version: String,
    /// Seconds since the host booted.
    pub uptime_secs: u64,
    /// The host's clock when it answered, in milliseconds since the Unix epoch.
    pub clock_unix_ms: i64,
    /// The Gluu Server install, if any.
    pub gluu: Option<GluuInstall>,
    /// Whether the agent runs commands (`allow_exec`).
    pub exec_allowed: bool,
}

/// A Gluu Server found on the host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GluuInstall {
    /// The version, when it can be told (from the container directory name).
    pub version: Option<String>,
    /// The container root (`/opt/gluu-server`, or `/` for nochroot builds).
    pub root: String,
    /// Which components are installed (`oxauth`, `identity`, `shibboleth`, ...).
    pub components: Vec<String>,
}

/// A command to run on the node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecSpec {
    /// What to run.
    pub command: Command,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
    /// Working directory; the agent's own when absent.
    pub cwd: Option<String>,
    /// Whether [`ExecInput::Stdin`] frames follow; otherwise stdin is empty.
    pub stdin: bool,
    /// Kill the process group after this many milliseconds.
    pub timeout_ms: Option<u64>,
    /// Who asked, for the agent's journal (`user@controller-host`).
    pub requested_by: String,
}

/// The two forms of a command.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// A program and its arguments, run without a shell.
    Argv(Vec<String>),
    /// A line for `/bin/sh -c`.
    Shell(String),
}

impl Command {
    /// The command as one line, for journals and audit logs.
    pub fn display_line(&self) -> String {
        match self {
            Command::Argv(argv) => argv.join(" "),
            Command::Shell(line) => format!("sh -c {line:?}"),
        }
    }
}

/// Controller to agent, on an exec stream after the [`Request::Exec`] frame.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExecInput {
    /// Bytes for the process's stdin.
    Stdin(Vec<u8>),
    /// Close the process's stdin.
    StdinEnd,
    /// Kill the process group.
    Cancel,
}

/// Agent to controller, on an exec stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExecEvent {
    /// The process started.
    Started {
        /// Its process id (and process group id).
        pid: u32,
    },
    /// Bytes the process wrote to stdout.
    Stdout(Vec<u8>),
    /// Bytes the process wrote to stderr.
    Stderr(Vec<u8>),
    /// The process ended; the last frame of the stream.
    Finished(ExitOutcome),
    /// The command was not run; the last frame of the stream.
    Refused(RemoteError),
}

/// How a process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitOutcome {
    /// The exit code, when it exited.
    pub code: Option<i32>,
    /// The signal that killed it, when one did.
    pub signal: Option<i32>,
    /// It was killed because its timeout passed.
    pub timed_out: bool,
    /// It was killed because the controller cancelled it.
    pub cancelled: bool,
    /// How long it ran.
    pub duration_ms: u64,
}

impl ExitOutcome {
    /// Exited with code 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::changeset::{Action, Content, Entry};
    use crate::health::{CheckSpec, ServiceKind, ServiceProbe};

    fn apply(on_change: Vec<Action>) -> Request {
        Request::Apply(ChangeSet {
            revision: 1,
            entries: vec![Entry {
                path: "/etc/certs/httpd.crt".into(),
                scope: Scope::Host,
                content: Content::Block {
                    name: "x".into(),
                    body: String::new(),
                },
                secret: false,
                validate: None,
                on_change,
            }],
            requested_by: String::new(),
        })
    }

    #[test]
    fn a_request_names_the_version_its_newest_part_needs() {
        assert_eq!(apply(Vec::new()).needs_version(), None);
        let trust = Action::JavaTrust {
            alias: "a".into(),
            cert: "/c".into(),
        };
        let (v, what) = apply(vec![trust]).needs_version().unwrap();
        assert_eq!(v, crate::version::BUILDS_CLUSTER);
        assert!(what.contains("trust store"), "{what}");
        let checks = CheckSpec {
            interval_ms: 1,
            deadline_ms: 1,
            reach: Vec::new(),
            csync2: None,
            certs: Vec::new(),
            services: vec![ServiceProbe {
                label: "Redis".into(),
                kind: ServiceKind::RedisPingAuth {
                    addr: "127.0.0.1:6379".into(),
                    password_file: "/p".into(),
                },
            }],
            gluu_endpoints: None,
        };
        assert_eq!(
            Request::Checks(checks.clone()).needs_version().map(|v| v.0),
            Some(2)
        );
        // A version-1 agent gets the PING it knows, which a version-1 link may carry.
        let old = checks.clone().for_version(1);
        assert_eq!(
            old.services[0].kind,
            ServiceKind::RedisPing {
                addr: "127.0.0.1:6379".into()
            }
        );
        assert_eq!(Request::Checks(old).needs_version(), None);
        assert_eq!(checks.clone().for_version(2), checks);
    }
}
