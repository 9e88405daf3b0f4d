//! `clustermgr gluu install NODE`: Gluu on a new node from the primary's setup, the
//! way a cluster needs it (issue 20).
//!
//! The steps, each shown as it starts and ends: the primary's agent reads its setup
//! (`setup.properties.last`, decrypted from `.enc` when Gluu left only that, with the
//! node's LDAP password or the one given; `/etc/certs`; the custom OpenDJ schema); with
//! `--force`, the node's old Gluu is stopped, its package removed and its container
//! moved aside (never deleted); the `gluu-server` package is installed like any package
//! entry, from the nodes' repositories or the package directory; and the node's agent
//! runs Gluu's setup in the container with the primary's properties (this node's
//! address in `ip`, the cluster's hostname), `--no-data` (replication brings the data),
//! then lays the primary's certificates and schema over what setup made, trusts them in
//! Java's `cacerts` and restarts the container.
//!
//! The properties hold every password of the installation: they travel inside the
//! mutual-TLS connections only, are never logged, audited, shown or kept by the
//! controller, and the node removes its copy after the one run of setup.

use std::time::Duration;

use clustermgr_protocol::changeset::{ApplyResult, ChangeSet, Entry};
use clustermgr_protocol::message::{GluuExportSpec, GluuSetupSpec, Reply, Request};
use serde::{Deserialize, Serialize};

use super::StepView;
use crate::CtlError;
use crate::ctx::{Ctx, Event};
use crate::store::{NodeRecord, PackageSource, ProvisionRecord, Role};

/// How long Gluu's setup may take on the node: longer than the agent's own limits for
/// its steps together (setup 45 minutes, the container's control 5 each).
const SETUP_TIMEOUT: Duration = Duration::from_secs(75 * 60);

/// How long installing the package may take (about 1 GiB to unpack).
const PACKAGE_TIMEOUT: Duration = Duration::from_secs(20 * 60);

/// How long reading the primary's setup, or moving a container aside, may take.
const SHORT_TIMEOUT: Duration = Duration::from_secs(300);

/// What `gluu install` did.
#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct GluuInstallView {
    /// The node Gluu was installed on.
    pub node: String,
    /// The primary whose setup it copied.
    pub primary: String,
    /// Whether every step succeeded.
    pub ok: bool,
    /// What happened, and on failure what state the node is in and what to do.
    pub message: String,
    /// Where `--force` moved the old container (null without it).
    pub moved_aside: Option<String>,
    /// Every step that ran on the node, in order, with its output.
    pub steps: Vec<StepView>,
}

/// The primary's properties for `node`: its address as `ip`, and the cluster's
/// hostname; every other line as the primary has it.
pub fn properties_for(primary: &[u8], ip: &str, hostname: &str) -> Vec<u8> {
    let text = String::from_utf8_lossy(primary);
    let mut out = String::with_capacity(text.len() + 64);
    let (mut ip_set, mut host_set) = (false, false);
    for line in text.lines() {
        let key = line.split(['=', ':']).next().unwrap_or("").trim();
        if key == "ip" {
            out.push_str(&format!("ip={ip}\n"));
            ip_set = true;
        } else if key == "hostname" {
            out.push_str(&format!("hostname={hostname}\n"));
            host_set = true;
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    if !ip_set {
        out.push_str(&format!("ip={ip}\n"));
    }
    if !host_set {
        out.push_str(&format!("hostname={hostname}\n"));
    }
    out.into_bytes()
}

/// `gluu install NODE`.
pub async fn install(
    ctx: &Ctx,
    user: &str,
    name: &str,
    force: bool,
    password: Option<&str>,
    within: Duration,
    events: &tokio::sync::mpsc::Sender<Event>,
) -> Result<GluuInstallView, CtlError> {
    let refused = |why: String| CtlError::GluuRefused {
        node: name.to_string(),
        why,
    };
    let nodes = ctx.store.nodes()?;
    let node = nodes
        .iter()
        .find(|n| n.name == name)
        .ok_or_else(|| CtlError::unknown_node(name, nodes.iter().map(|n| n.name.as_str())))?
        .clone();
    if !node.has_role(Role::Gluu) {
        return Err(CtlError::NotGluu {
            node: name.to_string(),
            why: "`gluu install` installs Gluu on a node with role gluu",
        });
    }
    let (gluu, primary) = gluu_nodes(ctx, &nodes)?;
    if primary == name {
        return Err(refused(format!(
            "{name} is the primary, whose setup the other nodes copy; install its Gluu with Gluu's own setup, or make another node the primary (`clustermgr node set-primary`)"
        )));
    }
    let primary_node = gluu
        .iter()
        .find(|n| n.name == primary)
        .map(|n| (*n).clone())
        .ok_or_else(|| refused("the cluster has no primary Gluu node".into()))?;
    let prov = ctx.store.provision()?;
    if prov.packages == PackageSource::Off {
        return Err(refused(
            "the gluu-server package comes from the nodes' repositories or the package directory: `clustermgr cluster set packages repository`, or `clustermgr cluster set package-dir DIR` with the package in it".into(),
        ));
    }
    let model = ctx.store.model()?;
    if model.gluu_root == "/" {
        return Err(refused(
            "the cluster's Gluu runs without a container (`gluu-root /`); `gluu install` sets up Gluu's container".into(),
        ));
    }
    let Some(hostname) = model.hostname.clone() else {
        return Err(refused(
            "the cluster has no hostname yet, which Gluu's setup needs: `clustermgr cluster set hostname NAME`".into(),
        ));
    };
    let failed = |on: &str, why: String| CtlError::GluuFailed {
        node: on.to_string(),
        why,
    };
    // What the node runs now: a Gluu there is never replaced without --force.
    let link = ctx
        .link(&node, within)
        .await
        .map_err(|f| failed(name, f.message))?;
    let installed = super::ask(link.as_ref(), &Request::Info, SHORT_TIMEOUT, gluu_of)
        .await
        .map_err(|why| failed(name, why))?;
    if let (Some(g), false) = (&installed, force) {
        return Err(refused(format!(
            "it already runs Gluu{} in {}; `--force` reinstalls it: its Gluu is stopped, the gluu-server package removed, and {} moved aside to {}.replaced-TIME (its LDAP data, certificates and customizations stay there until you delete them)",
            g.version
                .as_deref()
                .map(|v| format!(" {v}"))
                .unwrap_or_default(),
            g.root,
            g.root,
            g.root
        )));
    }

    super::working(
        events,
        "read the primary's Gluu setup",
        std::slice::from_ref(&primary),
    )
    .await;
    let primary_link = ctx
        .link(&primary_node, within)
        .await
        .map_err(|f| failed(&primary, f.message))?;
    let export = Request::GluuExport(GluuExportSpec {
        root: model.gluu_root.clone(),
        password: password.map(str::to_string),
    });
    let asked = super::ask(primary_link.as_ref(), &export, SHORT_TIMEOUT, |r| match r {
        Reply::GluuExported(e) => Ok(e),
        other => Err(other),
    })
    .await;
    let exported = asked;
    super::part_done(
        events,
        &primary,
        exported.as_ref().err().map(String::as_str),
    )
    .await;
    let exported = exported.map_err(|why| failed(&primary, why))?;

    // With --force the node's old Gluu goes aside whatever the agent detected: a
    // container set up only in part shows no component yet.
    let mut moved_aside = None;
    if force {
        super::working(events, "remove the old Gluu", &[name.to_string()]).await;
        let remove = Request::GluuRemove {
            root: model.gluu_root.clone(),
        };
        let removed = super::ask(link.as_ref(), &remove, SHORT_TIMEOUT, |r| match r {
            Reply::GluuRemoved { moved_to } => Ok(moved_to),
            other => Err(other),
        })
        .await;
        super::part_done(events, name, removed.as_ref().err().map(String::as_str)).await;
        moved_aside = Some(removed.map_err(|why| failed(name, why))?).filter(|m| !m.is_empty());
    }

    super::working(
        events,
        "install the gluu-server package",
        &[name.to_string()],
    )
    .await;
    let entry = server_package(&prov)?;
    let set = ChangeSet {
        revision: ctx.store.next_revision()?,
        entries: vec![entry.clone()],
        requested_by: format!("{user}@{}", ctx.meta.name),
    };
    // The version is checked before anything is installed: a plan of the one entry
    // says what the node would get.
    let sent = match package_check(ctx, link.as_ref(), &entry, model.gluu_version.as_deref()).await
    {
        Ok(_) => {
            super::ask(
                link.as_ref(),
                &Request::Apply(set),
                PACKAGE_TIMEOUT,
                |r| match r {
                    Reply::Applied(r) => Ok(r.result),
                    other => Err(other),
                },
            )
            .await
        }
        Err(why) => Err(why),
    };
    let package = match sent {
        Ok(result) => match result {
            ApplyResult::Applied | ApplyResult::Unchanged => Ok(()),
            ApplyResult::NotInstalled { output, .. } => Err(format!(
                "the gluu-server package could not be installed; {}. The package manager said: {output}",
                match &moved_aside {
                    Some(m) => format!("{name}'s old Gluu is in {m}"),
                    None => format!("nothing else was changed on {name}"),
                }
            )),
            other => Err(format!(
                "installing the gluu-server package ended {other:?}"
            )),
        },
        Err(why) => Err(format!(
            "{why}; {}",
            match &moved_aside {
                Some(m) => format!("{name}'s old Gluu is in {m}"),
                None => format!("nothing was changed on {name}"),
            }
        )),
    };
    super::part_done(events, name, package.as_ref().err().map(String::as_str)).await;
    package.map_err(|why| failed(name, why))?;

    super::working(
        events,
        "run Gluu's setup (this takes minutes)",
        &[name.to_string()],
    )
    .await;
    let spec = GluuSetupSpec {
        root: model.gluu_root.clone(),
        properties: properties_for(
            &exported.properties,
            &crate::generate::ip_of(&node),
            &hostname,
        ),
        no_data: true,
        certs: exported.certs.clone(),
        schema: exported.schema.clone(),
        hostname: hostname.clone(),
    };
    let setup = Request::GluuSetup(Box::new(spec));
    let ran = super::ask(link.as_ref(), &setup, SETUP_TIMEOUT, steps_of).await;
    let runs = match ran {
        Ok(r) => r,
        Err(why) => {
            super::part_done(events, name, Some(&why)).await;
            return Err(failed(
                name,
                format!(
                    "{why}; the gluu-server package is installed there: `clustermgr gluu install {name} --force` starts over"
                ),
            ));
        }
    };
    let stopped = runs.iter().find(|r| !r.ok).map(|r| r.step.clone());
    super::part_done(events, name, stopped.as_deref()).await;
    let (ok, message) = match &stopped {
        None => (
            true,
            format!(
                "Gluu is installed on {name} from {primary}'s setup, without data (replication brings it), with {primary}'s certificates"
            ),
        ),
        Some(step) => (
            false,
            format!(
                "Gluu's setup on {name} stopped at \"{step}\" (its output is below); the gluu-server package is installed and the container may be partly set up, which cannot be undone step by step: fix the cause, then `clustermgr gluu install {name} --force` moves it aside and starts over"
            ),
        ),
    };
    ctx.audited(
        user,
        "gluu install",
        &[name.to_string()],
        &format!(
            "from {primary}'s setup{}",
            if force { ", --force" } else { "" }
        ),
        if ok { "installed" } else { "failed" },
    )?;
    Ok(GluuInstallView {
        node: name.to_string(),
        primary,
        ok,
        message,
        moved_aside,
        steps: runs.into_iter().map(StepView::from).collect(),
    })
}

/// The components `gluu add` takes: its name, the word after `-add` Gluu's
/// post-setup script takes, and the name the agent reports an installed one by.
pub const COMPONENTS: &[(&str, &str, &str)] = &[
    ("shibboleth", "shib", "shibboleth"),
    ("passport", "passport", "passport"),
    ("casa", "casa", "casa"),
    ("oxd", "oxd", "oxd"),
];

/// What `gluu add` did.
#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct GluuAddView {
    /// The components asked for.
    pub components: Vec<String>,
    /// Whether every node that runs Gluu has them now.
    pub ok: bool,
    /// What happened, in a sentence.
    pub message: String,
    /// Each Gluu node, the primary first, in the order they were worked on.
    pub nodes: Vec<GluuAddNode>,
}

/// One node's part of `gluu add`.
#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct GluuAddNode {
    /// The node.
    pub node: String,
    /// `added`, `already there`, `no Gluu` (its `gluu install` brings the primary's
    /// components), `failed`, or `not reached` (after a failure).
    pub result: String,
    /// The steps that ran, with their output.
    pub steps: Vec<StepView>,
}

/// `gluu add COMPONENT...`: each Gluu node, the primary first and one at a time, gets
/// the components it lacks through Gluu's own post-setup script; the first failure
/// stops the rest.
pub async fn add(
    ctx: &Ctx,
    user: &str,
    components: &[String],
    within: Duration,
    events: &tokio::sync::mpsc::Sender<Event>,
) -> Result<GluuAddView, CtlError> {
    let mut wanted: Vec<&(&str, &str, &str)> = Vec::new();
    for c in components {
        let Some(found) = COMPONENTS.iter().find(|(name, _, _)| name == c) else {
            return Err(CtlError::BadArgument {
                flag: "COMPONENT",
                value: c.clone(),
                why: format!(
                    "the components Gluu adds after setup are {}",
                    COMPONENTS
                        .iter()
                        .map(|(n, _, _)| *n)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            });
        };
        if !wanted.contains(&found) {
            wanted.push(found);
        }
    }
    let nodes = ctx.store.nodes()?;
    let (mut gluu, primary) = gluu_nodes(ctx, &nodes)?;
    gluu.sort_by_key(|n| n.name != primary);
    let root = ctx.store.model()?.gluu_root;
    let mut out = Vec::new();
    let mut failed = false;
    for n in gluu {
        if failed {
            out.push(GluuAddNode {
                node: n.name.clone(),
                result: "not reached".into(),
                steps: Vec::new(),
            });
            continue;
        }
        super::working(events, "add Gluu components", std::slice::from_ref(&n.name)).await;
        let (result, steps, why) = add_on(ctx, n, &root, &wanted, within).await;
        super::part_done(events, &n.name, why.as_deref()).await;
        failed = result == "failed";
        out.push(GluuAddNode {
            node: n.name.clone(),
            result: result.into(),
            steps,
        });
    }
    let names: Vec<String> = wanted.iter().map(|(n, _, _)| n.to_string()).collect();
    if out.iter().all(|n| n.result == "no Gluu") {
        return Err(CtlError::NoGluuYet);
    }
    let message = match out.iter().find(|n| n.result == "failed") {
        Some(f) => format!(
            "adding {} failed on {} (its output is above); the nodes after it were not reached: fix the cause and run `clustermgr gluu add` again, which skips what is there",
            names.join(", "),
            f.node
        ),
        None => format!("every node that runs Gluu has {}", names.join(", ")),
    };
    ctx.audited(
        user,
        "gluu add",
        &out.iter().map(|n| n.node.clone()).collect::<Vec<_>>(),
        &names.join(", "),
        if failed { "failed" } else { "done" },
    )?;
    Ok(GluuAddView {
        components: names,
        ok: !failed,
        message,
        nodes: out,
    })
}

/// One node's part of [`add`]: its result word, its steps, and why it failed.
async fn add_on(
    ctx: &Ctx,
    n: &NodeRecord,
    root: &str,
    wanted: &[&(&str, &str, &str)],
    within: Duration,
) -> (&'static str, Vec<StepView>, Option<String>) {
    let failed = |why: String| {
        (
            "failed",
            vec![StepView {
                step: "reach the node".into(),
                ok: false,
                output: why.clone(),
            }],
            Some(why),
        )
    };
    let link = match ctx.link(n, within).await {
        Ok(l) => l,
        Err(f) => return failed(f.message),
    };
    let installed = match super::ask(link.as_ref(), &Request::Info, SHORT_TIMEOUT, gluu_of).await {
        Ok(g) => g,
        Err(why) => return failed(why),
    };
    let Some(g) = installed else {
        return ("no Gluu", Vec::new(), None);
    };
    let missing: Vec<String> = wanted
        .iter()
        .filter(|(_, _, shown)| !g.components.iter().any(|c| c == shown))
        .map(|(_, word, _)| word.to_string())
        .collect();
    if missing.is_empty() {
        return ("already there", Vec::new(), None);
    }
    let add = Request::GluuAddComponents {
        root: root.to_string(),
        components: missing,
    };
    let asked = super::ask(link.as_ref(), &add, SETUP_TIMEOUT, steps_of).await;
    let runs = match asked {
        Ok(runs) => runs,
        Err(why) => return failed(why),
    };
    let stopped = runs.iter().find(|r| !r.ok).map(|r| r.step.clone());
    let steps = runs.into_iter().map(StepView::from).collect();
    match stopped {
        None => ("added", steps, None),
        Some(step) => ("failed", steps, Some(step)),
    }
}

/// The Gluu nodes of `nodes` by name, and the primary (whose setup the others copy).
fn gluu_nodes<'a>(
    ctx: &Ctx,
    nodes: &'a [NodeRecord],
) -> Result<(Vec<&'a NodeRecord>, String), CtlError> {
    let mut gluu: Vec<&NodeRecord> = nodes.iter().filter(|n| n.has_role(Role::Gluu)).collect();
    gluu.sort_by(|a, b| a.name.cmp(&b.name));
    let (primary, _) = crate::generate::gluu_settings::writers(&gluu, &ctx.store.build()?);
    Ok((gluu, primary))
}

/// The `gluu-server` package entry, from the cluster's package source.
fn server_package(prov: &ProvisionRecord) -> Result<Entry, CtlError> {
    let files = super::provision::files(prov)?;
    Ok(crate::generate::provision::package(
        "gluu-server",
        &["gluu-server"],
        &["gluu-server"],
        &files,
    ))
}

/// What the node would install as `gluu-server`, in words (`gluu-server 4.2.3~focal
/// from the package directory (...)`), asked with a plan of the one entry; an error
/// says why it would not: the package manager's (a dependency the package directory
/// lacks), or a version that is not the cluster's `gluu-version`.
async fn package_check(
    ctx: &Ctx,
    link: &dyn crate::connect::Link,
    entry: &Entry,
    version: Option<&str>,
) -> Result<String, String> {
    super::provision::upload(ctx, link, std::slice::from_ref(entry))
        .await
        .map_err(|f| f.message)?;
    let set = ChangeSet {
        revision: 0,
        entries: vec![entry.clone()],
        requested_by: String::new(),
    };
    let plans = super::ask(link, &Request::Plan(set), SHORT_TIMEOUT, |r| match r {
        Reply::Planned(p) => Ok(p),
        other => Err(other),
    })
    .await?;
    let text = plans
        .first()
        .and_then(|p| p.new_text.as_deref())
        .unwrap_or_default()
        .trim_end()
        .replace('\n', "; ");
    if let Some(want) = version {
        // The agent's words begin with the package and its version.
        let found = text.split_whitespace().nth(1).unwrap_or_default();
        if !is_version(found, want) {
            return Err(format!(
                "the gluu-server package there is {}, not the cluster's gluu-version {want}: put gluu-server {want} in the package directory (or the nodes' repositories), or set gluu-version to the release the primary runs",
                if found.is_empty() {
                    "of no known version"
                } else {
                    found
                }
            ));
        }
    }
    Ok(text)
}

/// Whether package version `found` is release `want` (`4.2.3~focal`, `4.2.3-1.el8` and
/// `4.2.3` are 4.2.3, and 4.2.3 is 4.2; 4.2.30 is not 4.2.3).
pub fn is_version(found: &str, want: &str) -> bool {
    // An epoch (`1:4.2.3`) is not part of the release.
    let found = found.split_once(':').map_or(found, |(_, v)| v);
    match found.strip_prefix(want) {
        Some(rest) => !rest.starts_with(|c: char| c.is_ascii_alphanumeric()),
        None => false,
    }
}

/// A Gluu node that desired state gives Gluu to: with `gluu-version` set and packages
/// on, `plan` shows it and `apply` installs Gluu (as `gluu install NODE` does) before
/// the node's configuration.
#[derive(Clone, Debug)]
pub struct Wanted {
    /// The node, which runs no Gluu.
    pub node: String,
    /// What it would get, in words; or why it waits.
    pub install: Result<String, String>,
}

/// The selected Gluu nodes that run no Gluu and would get it from desired state (none
/// unless `gluu-version` is set, packages are on and Gluu runs in a container). A node
/// that cannot be reached is left out: its own plan or apply says so.
pub async fn wanted(
    ctx: &Ctx,
    selected: &[NodeRecord],
    within: Duration,
) -> Result<Vec<Wanted>, CtlError> {
    let model = ctx.store.model()?;
    let prov = ctx.store.provision()?;
    let Some(version) = model.gluu_version.clone() else {
        return Ok(Vec::new());
    };
    if prov.packages == PackageSource::Off || model.gluu_root == "/" {
        return Ok(Vec::new());
    }
    let nodes = ctx.store.nodes()?;
    let (_, primary) = gluu_nodes(ctx, &nodes)?;
    let entry = server_package(&prov)?;
    let asked = selected
        .iter()
        .filter(|n| n.has_role(Role::Gluu))
        .map(|n| async {
            let link = ctx.link(n, within).await.ok()?;
            let installed = super::ask(link.as_ref(), &Request::Info, SHORT_TIMEOUT, gluu_of)
                .await
                .ok()?;
            if installed.is_some() {
                return None;
            }
            let install = if n.name == primary {
                Err(format!(
                    "Gluu: {} is the primary and runs no Gluu; set it up with Gluu's own setup, since the other nodes copy its setup",
                    n.name
                ))
            } else if model.hostname.is_none() {
                Err("Gluu: the cluster has no hostname, which Gluu's setup needs (`clustermgr cluster set hostname NAME`)".into())
            } else {
                package_check(ctx, link.as_ref(), &entry, Some(&version))
                    .await
                    .map(|what| {
                        format!(
                            "{what}; then Gluu's setup with {primary}'s properties, without data (replication brings it), {primary}'s certificates and schema, and a restart of the container"
                        )
                    })
                    .map_err(|why| format!("Gluu: {why}"))
            };
            Some(Wanted {
                node: n.name.clone(),
                install,
            })
        });
    Ok(futures_util::future::join_all(asked)
        .await
        .into_iter()
        .flatten()
        .collect())
}

/// The Gluu install an [`Request::Info`] reply tells of.
fn gluu_of(r: Reply) -> Result<Option<clustermgr_protocol::message::GluuInstall>, Reply> {
    match r {
        Reply::Info(info) => Ok(info.gluu),
        other => Err(other),
    }
}

/// The steps a setup or a component add ran.
fn steps_of(r: Reply) -> Result<Vec<clustermgr_protocol::changeset::StepRun>, Reply> {
    match r {
        Reply::GluuSetUp(runs) => Ok(runs),
        other => Err(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_node_gets_its_own_address_and_the_clusters_hostname_and_nothing_else_changes() {
        let primary = b"#Gluu setup\nip=10.0.0.1\nhostname=gluu1.example.org\nldapPass=s3cret=x\norgName=Example\n";
        let got =
            String::from_utf8(properties_for(primary, "10.0.0.2", "idp.example.org")).unwrap();
        assert_eq!(
            got,
            "#Gluu setup\nip=10.0.0.2\nhostname=idp.example.org\nldapPass=s3cret=x\norgName=Example\n"
        );
        let bare = String::from_utf8(properties_for(b"ldapPass=p\n", "10.0.0.3", "idp")).unwrap();
        assert_eq!(bare, "ldapPass=p\nip=10.0.0.3\nhostname=idp\n");
    }

    #[test]
    fn a_package_version_is_the_release_it_begins_with_whole() {
        for (found, want) in [
            ("4.2.3~focal", "4.2.3"),
            ("4.2.3-1.el8", "4.2.3"),
            ("4.2.3", "4.2.3"),
            ("4.2.3~stand-in", "4.2"),
            ("1:4.2.3~focal", "4.2.3"),
        ] {
            assert!(is_version(found, want), "{found} is {want}");
        }
        for (found, want) in [
            ("4.2.30~focal", "4.2.3"),
            ("4.2.2~focal", "4.2.3"),
            ("14.2.3", "4.2.3"),
            ("", "4.2.3"),
        ] {
            assert!(!is_version(found, want), "{found} is not {want}");
        }
    }
}
