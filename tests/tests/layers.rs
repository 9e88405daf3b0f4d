//! The controller's layers, checked on its source as rust-analyzer's tidy tests check
//! theirs: every `crate::MODULE` a module names (outside its tests) must be of a lower
//! layer, or of its own layer where that layer allows it, and no modules may use each
//! other in a cycle. A few edges still break the
//! rule while the layering is completed (issue 17); they are listed with what removes
//! them, and the list may only shrink: an edge that is gone must leave it too.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The layers, lowest first: a module may use its own layer (where noted) and those
/// below, never those above.
const LAYERS: &[(&str, bool, &[&str])] = &[
    // The core: the store, the CAs, the home, configuration, time, selectors,
    // connections, the generators; no clap, no printing, no feature.
    (
        "core",
        true,
        &[
            "accept",
            "access",
            "archive",
            "binary",
            "ca",
            "clock",
            "config",
            "connect",
            "elf",
            "error",
            "ctx",
            "exit",
            "generate",
            "healthlog",
            "home",
            "http",
            "keymatch",
            "model",
            "passphrase",
            "password",
            "recent",
            "selector",
            "store",
            "telemetry_store",
            "suggest",
            "terminal",
            "words",
        ],
    ),
    // The operations: each imports the core only (not each other; see SIDEWAYS).
    (
        "operations",
        false,
        &[
            "bootstrap",
            "desired",
            "health",
            "telemetry",
            "upgrade",
            "users",
        ],
    ),
    // The dispatch: an Operation in, events and a view out, in-process or through serve.
    ("dispatch", true, &["ops"]),
    // The fronts: the CLI's grammar and rendering, serve's socket, the sandbox.
    (
        "fronts",
        true,
        &[
            "backup",
            "cli",
            "dev",
            "inventory",
            "local",
            "render",
            "contract",
            "serve",
            "web",
            "lib",
            "main",
        ],
    ),
];

/// Edges between operations that the design names.
const SIDEWAYS: &[(&str, &str, &str)] = &[(
    "desired",
    "health",
    "the rolling apply's gate asks health whether a node came back",
)];

/// Edges that still break the layering, each with what removes it. Shrinks only (it
/// is empty: the layering holds; an exception would need its reason here).
const NOT_YET: &[(&str, &str, &str)] = &[];

/// The top-level module a source file belongs to.
fn module_of(file: &Path, src: &Path) -> String {
    let rel = file.strip_prefix(src).expect("under src");
    let first = rel.components().next().expect("a component");
    first
        .as_os_str()
        .to_string_lossy()
        .trim_end_matches(".rs")
        .to_string()
}

/// `text` without `#[cfg(test)]` items (a test module, a test helper).
fn without_tests(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..at]);
        let after = &rest[at + "#[cfg(test)]".len()..];
        let Some(end) = after.find(['{', ';']) else {
            return out;
        };
        if after.as_bytes()[end] == b';' {
            rest = &after[end + 1..];
            continue;
        }
        let mut depth = 0usize;
        let mut close = after.len();
        for (i, c) in after[end..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        close = end + i + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        rest = &after[close.min(after.len())..];
    }
    out.push_str(rest);
    out
}

/// The modules each module names, outside comments and tests.
fn edges(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    let mut dirs = vec![src.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                files.push(p);
            }
        }
    }
    let modules: BTreeSet<String> = files.iter().map(|f| module_of(f, src)).collect();
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in &files {
        let rel = f.strip_prefix(src).expect("under src");
        if rel.components().any(|c| {
            let c = c.as_os_str();
            c == "tests" || c == "tests.rs"
        }) {
            continue;
        }
        let from = module_of(f, src);
        let text = without_tests(&std::fs::read_to_string(f).unwrap());
        for line in text.lines().filter(|l| !l.trim_start().starts_with("//")) {
            let mut rest = line;
            while let Some(at) = rest.find("crate::") {
                rest = &rest[at + "crate::".len()..];
                let to: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                    .collect();
                if to != from && modules.contains(&to) {
                    out.entry(from.clone()).or_default().insert(to);
                }
            }
        }
    }
    out
}

fn layer_of(module: &str) -> (usize, bool) {
    LAYERS
        .iter()
        .enumerate()
        .find(|(_, (_, _, members))| members.contains(&module))
        .map(|(i, (_, same, _))| (i, *same))
        .unwrap_or_else(|| panic!("controller module `{module}` is in no layer: add it to LAYERS"))
}

#[test]
fn the_controller_keeps_its_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../controller/src");
    let mut breaking = BTreeSet::new();
    for (from, tos) in edges(&src) {
        let (lf, same) = layer_of(&from);
        for to in tos {
            let (lt, _) = layer_of(&to);
            let allowed = lt < lf
                || (lt == lf && same)
                || SIDEWAYS.iter().any(|(a, b, _)| *a == from && *b == to);
            if !allowed {
                breaking.insert((from.clone(), to));
            }
        }
    }
    let listed: BTreeSet<(String, String)> = NOT_YET
        .iter()
        .map(|(a, b, _)| (a.to_string(), b.to_string()))
        .collect();
    let new: Vec<_> = breaking.difference(&listed).collect();
    assert!(
        new.is_empty(),
        "these uses break the layering (ARCHITECTURE.md, Layers): {new:?}; move what is used down a layer, or pass it in from above"
    );
    let gone: Vec<_> = listed.difference(&breaking).collect();
    assert!(
        gone.is_empty(),
        "these edges are gone: take them off NOT_YET in tests/tests/layers.rs: {gone:?}"
    );
}

/// A cycle among `edges`, if there is one (the modules on it, first repeated last).
fn a_cycle(edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        m: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        done: &mut BTreeSet<String>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|p| p == m) {
            let mut cycle = path[at..].to_vec();
            cycle.push(m.to_string());
            return Some(cycle);
        }
        if done.contains(m) {
            return None;
        }
        path.push(m.to_string());
        for next in edges.get(m).into_iter().flatten() {
            if let Some(c) = visit(next, edges, done, path) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(m.to_string());
        None
    }
    let mut done = BTreeSet::new();
    edges
        .keys()
        .find_map(|m| visit(m, edges, &mut done, &mut Vec::new()))
}

#[test]
fn no_two_modules_use_each_other() {
    // Within a layer too (the fronts import each other): a cycle makes two modules one,
    // which neither can be understood or tested without.
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../controller/src");
    if let Some(cycle) = a_cycle(&edges(&src)) {
        panic!(
            "controller modules use each other in a cycle: {}; move what both need down a layer",
            cycle.join(" -> ")
        );
    }
    let mut looped = BTreeMap::new();
    looped.insert("a".to_string(), BTreeSet::from(["b".to_string()]));
    looped.insert("b".to_string(), BTreeSet::from(["a".to_string()]));
    assert_eq!(
        a_cycle(&looped),
        Some(vec!["a".into(), "b".into(), "a".into()])
    );
}

#[test]
fn tests_and_comments_do_not_count() {
    let text = "use crate::a;\n// crate::b\n#[cfg(test)]\nmod tests { use crate::c; fn f() { {} } }\nuse crate::d;\n#[cfg(test)]\nuse crate::e;\n";
    let kept = without_tests(text);
    assert!(
        kept.contains("crate::a") && kept.contains("crate::d"),
        "{kept}"
    );
    assert!(
        !kept.contains("crate::c") && !kept.contains("crate::e"),
        "{kept}"
    );
}
