//! Edits of files the node owns: one key of a properties file, one marked block. Pure
//! text in, text out, so the controller never needs a file's other lines (the LDAP
//! bind password shares `gluu-ldap.properties` with the `servers:` line).

/// The result of an edit: the whole new file, and the part a diff may show.
#[derive(Debug, PartialEq, Eq)]
pub struct Edited {
    /// The whole new file.
    pub text: String,
    /// What the edit governed before (the old line or block body; empty if absent).
    pub old_part: String,
    /// What it governs after.
    pub new_part: String,
}

/// Sets `key` in a properties file (`key: value` or `key=value`, the first
/// uncommented occurrence), keeping the line's own separator and spacing; appends
/// `key: value` when the key is absent.
pub fn set_property(text: &str, key: &str, value: &str) -> Edited {
    let mut out = String::with_capacity(text.len() + value.len());
    let mut found = None;
    for line in text.split_inclusive('\n') {
        if found.is_none()
            && let Some(prefix) = property_prefix(line, key)
        {
            let body = line.trim_end_matches(['\n', '\r']);
            let ending = &line[body.len()..];
            let new_line = format!("{prefix}{value}");
            found = Some((body.to_string(), new_line.clone()));
            out.push_str(&new_line);
            out.push_str(ending);
            continue;
        }
        out.push_str(line);
    }
    match found {
        Some((old_part, new_part)) => Edited {
            text: out,
            old_part: format!("{old_part}\n"),
            new_part: format!("{new_part}\n"),
        },
        None => {
            if !out.is_empty() && !out.ends_with('\n') {
                out.push('\n');
            }
            let new_line = format!("{key}: {value}");
            out.push_str(&new_line);
            out.push('\n');
            Edited {
                text: out,
                old_part: String::new(),
                new_part: format!("{new_line}\n"),
            }
        }
    }
}

/// The line's text up to and including the separator and the spaces after it, when
/// the line sets `key`.
fn property_prefix<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let trimmed = line.trim_start();
    if trimmed.starts_with('#') || trimmed.starts_with('!') {
        return None;
    }
    let after_key = trimmed.strip_prefix(key)?;
    let after_space = after_key.trim_start_matches([' ', '\t']);
    let sep = after_space.chars().next()?;
    if sep != ':' && sep != '=' {
        return None;
    }
    let after_sep = &after_space[1..];
    let value_start = after_sep.len() - after_sep.trim_start_matches([' ', '\t']).len();
    let end = line.len() - after_sep.len() + value_start;
    Some(&line[..end])
}

/// The marker lines of block `name`.
pub fn markers(name: &str) -> (String, String) {
    (
        format!("# BEGIN clustermgr {name}"),
        format!("# END clustermgr {name}"),
    )
}

/// Replaces the body of block `name` (appending the block when absent). Fails when
/// the file has the begin marker without its end, which only a hand edit makes.
pub fn set_block(text: &str, name: &str, body: &str) -> Result<Edited, String> {
    let (begin, end) = markers(name);
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let is = |line: &str, marker: &str| line.trim_end_matches(['\n', '\r']).trim_end() == marker;
    let start = lines.iter().position(|l| is(l, &begin));
    let mut body = body.to_string();
    if !body.is_empty() && !body.ends_with('\n') {
        body.push('\n');
    }
    match start {
        Some(s) => {
            let Some(len) = lines[s + 1..].iter().position(|l| is(l, &end)) else {
                return Err(format!(
                    "has the line `{begin}` but no `{end}` after it; restore the end marker by hand"
                ));
            };
            let old_part: String = lines[s + 1..s + 1 + len].concat();
            let mut out: String = lines[..=s].concat();
            out.push_str(&body);
            out.push_str(&lines[s + 1 + len..].concat());
            Ok(Edited {
                text: out,
                old_part,
                new_part: body,
            })
        }
        None => {
            let mut out = text.to_string();
            if body.is_empty() {
                return Ok(Edited {
                    text: out,
                    old_part: String::new(),
                    new_part: String::new(),
                });
            }
            if !out.is_empty() && !out.ends_with('\n') {
                out.push('\n');
            }
            out.push_str(&format!("{begin}\n{body}{end}\n"));
            Ok(Edited {
                text: out,
                old_part: String::new(),
                new_part: body,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LDAP: &str = "bindDN: cn=directory manager\nbindPassword: c2VjcmV0\nservers: old1:1636,old2:1636\nuseSSL: true\n";

    #[test]
    fn a_property_is_replaced_in_place_and_nothing_else_moves() {
        let e = set_property(LDAP, "servers", "a:1636,b:1636");
        assert_eq!(e.text, LDAP.replace("old1:1636,old2:1636", "a:1636,b:1636"));
        assert_eq!(e.old_part, "servers: old1:1636,old2:1636\n");
        assert_eq!(e.new_part, "servers: a:1636,b:1636\n");
        assert!(!e.old_part.contains("c2VjcmV0") && !e.new_part.contains("c2VjcmV0"));
    }

    #[test]
    fn a_property_keeps_its_separator_and_ignores_comments_and_longer_keys() {
        let text = "# servers: commented\nserversX=1\n  servers = x\r\n";
        let e = set_property(text, "servers", "y");
        assert_eq!(
            e.text,
            "# servers: commented\nserversX=1\n  servers = y\r\n"
        );
    }

    #[test]
    fn an_absent_property_is_appended() {
        let e = set_property("a: 1", "servers", "x:1636");
        assert_eq!(e.text, "a: 1\nservers: x:1636\n");
        assert_eq!(e.old_part, "");
        let again = set_property(&e.text, "servers", "x:1636");
        assert_eq!(again.text, e.text, "idempotent");
    }

    #[test]
    fn a_block_is_appended_then_replaced_in_place() {
        let hosts = "127.0.0.1 localhost\n";
        let e = set_block(hosts, "hosts", "10.0.0.1 a\n").unwrap();
        assert_eq!(
            e.text,
            "127.0.0.1 localhost\n# BEGIN clustermgr hosts\n10.0.0.1 a\n# END clustermgr hosts\n"
        );
        let tail = format!("{}::1 localhost6\n", e.text);
        let e2 = set_block(&tail, "hosts", "10.0.0.1 a\n10.0.0.2 b\n").unwrap();
        assert_eq!(
            e2.text,
            "127.0.0.1 localhost\n# BEGIN clustermgr hosts\n10.0.0.1 a\n10.0.0.2 b\n# END clustermgr hosts\n::1 localhost6\n"
        );
        assert_eq!(e2.old_part, "10.0.0.1 a\n");
        let same = set_block(&e2.text, "hosts", "10.0.0.1 a\n10.0.0.2 b\n").unwrap();
        assert_eq!(same.text, e2.text, "idempotent");
    }

    #[test]
    fn a_block_without_its_end_is_refused() {
        let err = set_block("# BEGIN clustermgr hosts\n1.2.3.4 x\n", "hosts", "").unwrap_err();
        assert!(err.contains("# END clustermgr hosts"), "{err}");
    }
}
