//! An nginx configuration read the way nginx reads it, as far as the agent must: its
//! directives at every depth and the files its `include`s pull in (wildcards in the
//! last component too), so that a push under `allow_exec = false` cannot make
//! `nginx -t` or a reload load code it wrote (`load_module`, Perl, an OpenSSL engine).

use std::path::{Path, PathBuf};

/// One directive: its name and its arguments, quotes removed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Directive {
    pub name: String,
    pub args: Vec<String>,
}

/// Every directive of `text`, simple or block, at any depth, in order. Follows
/// nginx's own tokenizer: `#` starts a comment only at the start of a word, quotes
/// take `\` escapes, `;`, `{` and `}` end a directive.
pub fn directives(text: &str) -> Vec<Directive> {
    let mut out = Vec::new();
    let mut words: Vec<String> = Vec::new();
    let mut chars = text.chars().peekable();
    let end = |words: &mut Vec<String>, out: &mut Vec<Directive>| {
        if !words.is_empty() {
            let name = words.remove(0);
            out.push(Directive {
                name,
                args: std::mem::take(words),
            });
        }
    };
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {}
            '#' => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        break;
                    }
                }
            }
            ';' | '{' | '}' => end(&mut words, &mut out),
            '"' | '\'' => {
                let mut w = String::new();
                while let Some(d) = chars.next() {
                    match d {
                        '\\' => {
                            if let Some(e) = chars.next() {
                                w.push(e);
                            }
                        }
                        d if d == c => break,
                        d => w.push(d),
                    }
                }
                words.push(w);
            }
            c => {
                let mut w = String::from(c);
                while let Some(&d) = chars.peek() {
                    if d.is_whitespace() || matches!(d, ';' | '{' | '}') {
                        break;
                    }
                    w.push(d);
                    chars.next();
                }
                words.push(w);
            }
        }
    }
    end(&mut words, &mut out);
    out
}

/// Whether `name` matches `pattern` with glob(3)'s `*` and `?`.
pub fn wildcard_match(pattern: &str, name: &str) -> bool {
    fn go(p: &[char], n: &[char]) -> bool {
        match p.split_first() {
            None => n.is_empty(),
            Some(('*', rest)) => (0..=n.len()).any(|i| go(rest, &n[i..])),
            Some(('?', rest)) => !n.is_empty() && go(rest, &n[1..]),
            Some((c, rest)) => n.first() == Some(c) && go(rest, &n[1..]),
        }
    }
    // glob(3) never matches a leading dot with a wildcard.
    if name.starts_with('.') && !pattern.starts_with('.') {
        return false;
    }
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    go(&p, &n)
}

/// What the walk needs from the node: files read as nginx would see them.
pub trait Source {
    /// The text of the file at `path` (in the configuration's scope), as it will be
    /// once the change set is in place; `None` when there is none.
    fn text(&self, path: &str) -> Result<Option<String>, String>;
    /// The names in directory `dir` (in scope), as they will be.
    fn list(&self, dir: &str) -> Result<Vec<String>, String>;
}

/// The most files one configuration may pull in, and how deep, before the walk gives
/// up (and the push is refused): nginx has no such limit, but a loop of includes is
/// an error there too.
const MAX_FILES: usize = 512;
const MAX_DEPTH: usize = 16;

/// Every directive of the configuration rooted at `conf` (a path in scope), with the
/// file it is in, following `include`s; relative includes are relative to the root
/// configuration's directory, as nginx resolves them.
pub fn walk(conf: &str, src: &dyn Source) -> Result<Vec<(String, Directive)>, String> {
    let prefix = Path::new(conf)
        .parent()
        .map_or_else(|| PathBuf::from("/"), Path::to_path_buf);
    let mut out = Vec::new();
    let mut files = 0;
    visit(conf, &prefix, src, 0, &mut files, &mut out)?;
    Ok(out)
}

fn visit(
    file: &str,
    prefix: &Path,
    src: &dyn Source,
    depth: usize,
    files: &mut usize,
    out: &mut Vec<(String, Directive)>,
) -> Result<(), String> {
    *files += 1;
    if depth > MAX_DEPTH || *files > MAX_FILES {
        return Err(format!(
            "includes more than {MAX_FILES} files or nests deeper than {MAX_DEPTH} (at {file})"
        ));
    }
    let Some(text) = src.text(file)? else {
        return Ok(());
    };
    for d in directives(&text) {
        if d.name == "include"
            && let Some(arg) = d.args.first()
        {
            let full = if arg.starts_with('/') {
                arg.clone()
            } else {
                prefix.join(arg).display().to_string()
            };
            for f in expand(&full, src)? {
                visit(&f, prefix, src, depth + 1, files, out)?;
            }
        }
        out.push((file.to_string(), d));
    }
    Ok(())
}

/// The files an include pattern names: itself, or the matches of a wildcard in its
/// last component (sorted, as glob(3) returns them).
fn expand(pattern: &str, src: &dyn Source) -> Result<Vec<String>, String> {
    let (dir, name) = pattern.rsplit_once('/').unwrap_or(("", pattern));
    if dir.contains(['*', '?', '[']) || name.contains('[') {
        return Err(format!(
            "includes {pattern}, a pattern the agent cannot check (a wildcard in a directory, or `[`)"
        ));
    }
    if !name.contains(['*', '?']) {
        return Ok(vec![pattern.to_string()]);
    }
    let dir = if dir.is_empty() { "/" } else { dir };
    let mut names: Vec<String> = src
        .list(dir)?
        .into_iter()
        .filter(|n| wildcard_match(name, n))
        .collect();
    names.sort();
    Ok(names
        .into_iter()
        .map(|n| format!("{}/{n}", dir.trim_end_matches('/')))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn directives_are_read_as_nginx_tokenizes() {
        let text = "load_module \"/x/a b.so\";# c\nhttp { include mime.types; \
                    server { listen 80; return 200 'a;b'; } }\nperl_modules x#y;";
        let names: Vec<(String, Vec<String>)> = directives(text)
            .into_iter()
            .map(|d| (d.name, d.args))
            .collect();
        let want = [
            ("load_module", vec!["/x/a b.so"]),
            ("http", vec![]),
            ("include", vec!["mime.types"]),
            ("server", vec![]),
            ("listen", vec!["80"]),
            ("return", vec!["200", "a;b"]),
            ("perl_modules", vec!["x#y"]),
        ];
        let want: Vec<(String, Vec<String>)> = want
            .iter()
            .map(|(n, a)| (n.to_string(), a.iter().map(|s| s.to_string()).collect()))
            .collect();
        assert_eq!(names, want);
    }

    #[test]
    fn wildcards_match_as_glob_does() {
        assert!(wildcard_match("*.conf", "a.conf"));
        assert!(!wildcard_match("*.conf", ".hidden.conf"));
        assert!(wildcard_match("a?c", "abc"));
        assert!(!wildcard_match("*.conf", "a.conf.bak"));
    }

    struct Files(BTreeMap<&'static str, &'static str>);
    impl Source for Files {
        fn text(&self, path: &str) -> Result<Option<String>, String> {
            Ok(self.0.get(path).map(|s| s.to_string()))
        }
        fn list(&self, dir: &str) -> Result<Vec<String>, String> {
            Ok(self
                .0
                .keys()
                .filter_map(|k| k.strip_prefix(dir)?.strip_prefix('/'))
                .filter(|n| !n.contains('/'))
                .map(str::to_string)
                .collect())
        }
    }

    #[test]
    fn includes_are_followed_relative_to_the_root_configuration() {
        let src = Files(BTreeMap::from([
            (
                "/etc/nginx/nginx.conf",
                "include mods/*.conf; include /etc/nginx/b;",
            ),
            ("/etc/nginx/mods/a.conf", "load_module /m/a.so;"),
            ("/etc/nginx/mods/z.txt", "load_module /m/z.so;"),
            ("/etc/nginx/b", "include self;"),
            ("/etc/nginx/self", "include self;"),
        ]));
        let err = walk("/etc/nginx/nginx.conf", &src).unwrap_err();
        assert!(err.contains("nests deeper"), "{err}");
        let src = Files(BTreeMap::from([
            ("/etc/nginx/nginx.conf", "include mods/*.conf;"),
            ("/etc/nginx/mods/a.conf", "load_module /m/a.so;"),
            ("/etc/nginx/mods/z.txt", "load_module /m/z.so;"),
        ]));
        let found: Vec<(String, String)> = walk("/etc/nginx/nginx.conf", &src)
            .unwrap()
            .into_iter()
            .map(|(f, d)| (f, d.name))
            .collect();
        assert_eq!(
            found,
            [
                (
                    "/etc/nginx/mods/a.conf".to_string(),
                    "load_module".to_string()
                ),
                ("/etc/nginx/nginx.conf".to_string(), "include".to_string()),
            ]
        );
    }
}
