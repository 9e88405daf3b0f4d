//! What each node must have installed for its part of the cluster, and its time
//! service's servers (issue 20). Derived from the roles and the settings already
//! there: the load balancer's nginx; each Gluu node's csync2, its time service, and
//! stunnel when the nodes share Redis; the cache host's Redis and stunnel. Package
//! entries come first in a node's set: the agent installs them before it compares the
//! files, whose validators need the programs.
//!
//! The names differ between families (Debian's `stunnel4` is Red Hat's `stunnel`), so
//! each entry carries both and the agent picks by the manager it finds. A time service
//! the node already runs (ntp, systemd-timesyncd) satisfies the time entry; only
//! chrony is configured, and only when `ntp-servers` names servers.

use std::collections::BTreeMap;

use clustermgr_protocol::changeset::{
    Content, Entry, PackageFile, PackageSpec, Scope, ServiceVerb,
};

use super::{NodeConfig, service};
use crate::model::{Cache, ClusterModel};
use crate::store::{NodeRecord, PackageSource, ProvisionRecord, Role};

/// chrony's configuration on each family and the service that reads it: the edit of
/// the file a host lacks waits, as Redis's does, so no facts about the host are needed.
const CHRONY: &[(&str, &str)] = &[
    ("/etc/chrony/chrony.conf", "chrony"),
    ("/etc/chrony.conf", "chronyd"),
];

/// A package entry: `deb` and `rpm` names, the first of each installed when none is.
pub fn package(name: &str, deb: &[&str], rpm: &[&str], files: &[PackageFile]) -> Entry {
    Entry {
        path: PackageSpec::path(name),
        scope: Scope::Host,
        content: Content::Package(Box::new(PackageSpec {
            name: name.to_string(),
            deb: deb.iter().map(|s| s.to_string()).collect(),
            rpm: rpm.iter().map(|s| s.to_string()).collect(),
            files: files.to_vec(),
        })),
        secret: false,
        validate: None,
        on_change: Vec::new(),
    }
}

/// The packages `node` needs, by its roles and the model.
fn wanted(node: &NodeRecord, model: &ClusterModel, files: &[PackageFile]) -> Vec<Entry> {
    let mut out = Vec::new();
    let redis = model.cache == Cache::Redis;
    if node.has_role(Role::Lb) {
        out.push(package("nginx", &["nginx"], &["nginx"], files));
    }
    if node.has_role(Role::Gluu) {
        out.push(package("csync2", &["csync2"], &["csync2"], files));
        out.push(package(
            "time",
            &["chrony", "systemd-timesyncd", "ntp", "ntpsec", "openntpd"],
            &["chrony", "ntp"],
            files,
        ));
    }
    if node.has_role(Role::Cache) && redis {
        out.push(package("redis", &["redis-server"], &["redis"], files));
    }
    if (node.has_role(Role::Cache) || node.has_role(Role::Gluu)) && redis {
        out.push(package("stunnel", &["stunnel4"], &["stunnel"], files));
    }
    out
}

/// The chrony block naming `servers`.
fn chrony_block(servers: &[String]) -> String {
    let mut body =
        String::from("# The cluster's time servers (clustermgr cluster set ntp-servers).\n");
    for s in servers {
        body.push_str(&format!("server {s} iburst\n"));
    }
    body
}

/// Adds every node's packages (first in its set) and time servers to `out`.
/// `files` is the package directory's index when packages come from there.
pub fn render(
    model: &ClusterModel,
    provision: &ProvisionRecord,
    nodes: &[NodeRecord],
    files: &[PackageFile],
    out: &mut BTreeMap<String, NodeConfig>,
) {
    for node in nodes {
        let cfg = out.entry(node.name.clone()).or_default();
        if provision.packages != PackageSource::Off {
            let files = match provision.packages {
                PackageSource::Directory => files,
                _ => &[],
            };
            let mut entries = wanted(node, model, files);
            entries.append(&mut cfg.entries);
            cfg.entries = entries;
        }
        if node.has_role(Role::Gluu) && !provision.ntp_servers.is_empty() {
            for (path, svc) in CHRONY {
                cfg.entries.push(Entry {
                    path: path.to_string(),
                    scope: Scope::Host,
                    content: Content::Block {
                        name: "ntp-servers".into(),
                        body: chrony_block(&provision.ntp_servers),
                    },
                    secret: false,
                    validate: None,
                    on_change: service(svc, ServiceVerb::Restart),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(out: &BTreeMap<String, NodeConfig>, node: &str) -> Vec<String> {
        out[node].entries.iter().map(|e| e.path.clone()).collect()
    }

    #[test]
    fn each_role_gets_its_packages_first_and_gluu_nodes_their_time_servers() {
        let nodes = vec![
            NodeRecord::for_tests("cache1", "a:1", &[Role::Cache]),
            NodeRecord::for_tests("gluu1", "a:1", &[Role::Gluu]),
            NodeRecord::for_tests("lb1", "a:1", &[Role::Lb]),
        ];
        let mut model = ClusterModel::default();
        let mut prov = ProvisionRecord {
            packages: PackageSource::Repository,
            package_dir: None,
            ntp_servers: vec!["10.0.0.1".into(), "time.example.org".into()],
        };
        let mut out = BTreeMap::new();
        out.insert(
            "lb1".to_string(),
            NodeConfig {
                entries: vec![super::super::file(
                    "/etc/nginx/nginx.conf",
                    String::new(),
                    0o644,
                    vec![],
                )],
                waiting: vec![],
            },
        );
        render(&model, &prov, &nodes, &[], &mut out);
        assert_eq!(
            names(&out, "lb1"),
            ["package:nginx", "/etc/nginx/nginx.conf"]
        );
        assert_eq!(
            names(&out, "gluu1"),
            [
                "package:csync2",
                "package:time",
                "/etc/chrony/chrony.conf",
                "/etc/chrony.conf"
            ]
        );
        assert!(names(&out, "cache1").is_empty());
        let Content::Block { body, .. } = &out["gluu1"].entries[2].content else {
            panic!("a block");
        };
        assert_eq!(
            body,
            "# The cluster's time servers (clustermgr cluster set ntp-servers).\nserver 10.0.0.1 iburst\nserver time.example.org iburst\n"
        );
        // With Redis: the cache host's Redis and stunnel, the Gluu nodes' stunnel.
        model.cache = Cache::Redis;
        prov.packages = PackageSource::Directory;
        let f = PackageFile {
            file: "redis-server_7.0_amd64.deb".into(),
            size: 1,
            sha256: "0".repeat(64),
        };
        let mut out = BTreeMap::new();
        render(&model, &prov, &nodes, std::slice::from_ref(&f), &mut out);
        assert_eq!(names(&out, "cache1"), ["package:redis", "package:stunnel"]);
        assert!(names(&out, "gluu1").contains(&"package:stunnel".to_string()));
        let Content::Package(p) = &out["cache1"].entries[0].content else {
            panic!("a package");
        };
        assert_eq!(p.files, [f]);
        assert_eq!(p.deb, ["redis-server"]);
        // Off: no package entries.
        prov.packages = PackageSource::Off;
        prov.ntp_servers.clear();
        let mut out = BTreeMap::new();
        render(&model, &prov, &nodes, &[], &mut out);
        assert!(out.values().all(|c| c.entries.is_empty()));
    }
}
