//! Node selectors: `all`, names, `role:gluu`, globs (`gluu-*`), and comma lists of them.

use crate::CtlError;
use crate::store::{NodeRecord, Role};

/// The nodes `selector` names, sorted by name, each once. A part that matches nothing
/// is an error, so a typo never silently shrinks a fan-out.
pub fn select(nodes: &[NodeRecord], selector: &str) -> Result<Vec<NodeRecord>, CtlError> {
    let mut picked: Vec<&NodeRecord> = Vec::new();
    for part in selector.split(',').map(str::trim) {
        if part.is_empty() {
            return Err(CtlError::BadSelector {
                selector: selector.to_string(),
                why: "has an empty part",
            });
        }
        let matched: Vec<&NodeRecord> = if part == "all" {
            nodes.iter().collect()
        } else if let Some(role) = part.strip_prefix("role:") {
            let role: Role = role.parse()?;
            nodes.iter().filter(|n| n.has_role(role)).collect()
        } else if part.contains(['*', '?']) {
            nodes.iter().filter(|n| glob(part, &n.name)).collect()
        } else {
            match nodes.iter().find(|n| n.name == part) {
                Some(n) => vec![n],
                None => {
                    let known = nodes.iter().map(|n| n.name.as_str());
                    return Err(CtlError::unknown_node(part, known));
                }
            }
        };
        if matched.is_empty() && part != "all" {
            return Err(CtlError::BadSelector {
                selector: part.to_string(),
                why: "matches no node (see `clustermgr node list`)",
            });
        }
        picked.extend(matched);
    }
    let mut out: Vec<NodeRecord> = picked.into_iter().cloned().collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out.dedup_by(|a, b| a.name == b.name);
    Ok(out)
}

/// Shell-style matching of `*` (any run) and `?` (one character).
fn glob(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ni));
            pi += 1;
        } else if let Some((sp, sn)) = star {
            pi = sp + 1;
            ni = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes() -> Vec<NodeRecord> {
        let mk = |name: &str, roles: Vec<Role>| NodeRecord::for_tests(name, "", &roles);
        vec![
            mk("gluu-1", vec![Role::Gluu]),
            mk("gluu-2", vec![Role::Gluu]),
            mk("lb", vec![Role::Lb, Role::Cache]),
        ]
    }

    fn names(sel: &str) -> Vec<String> {
        select(&nodes(), sel)
            .unwrap()
            .into_iter()
            .map(|n| n.name)
            .collect()
    }

    #[test]
    fn selectors_combine_and_deduplicate() {
        assert_eq!(names("all"), ["gluu-1", "gluu-2", "lb"]);
        assert_eq!(names("role:cache"), ["lb"]);
        assert_eq!(names("gluu-*"), ["gluu-1", "gluu-2"]);
        assert_eq!(names("lb,gluu-?,gluu-1"), ["gluu-1", "gluu-2", "lb"]);
        assert_eq!(names("*-2"), ["gluu-2"]);
    }

    #[test]
    fn a_selector_that_matches_nothing_is_an_error() {
        assert!(matches!(
            select(&nodes(), "gluu3"),
            Err(CtlError::UnknownNode { .. })
        ));
        assert!(select(&nodes(), "web-*").is_err());
        assert!(select(&nodes(), "role:db").is_err());
        assert!(select(&nodes(), "lb,").is_err());
    }
}
