//! Packages on the node, always through the node's own tools: which manager it has
//! (dpkg with apt, or rpm with dnf or yum), what is installed, what its repositories or
//! the uploaded package files would install (dependencies resolved from the uploaded
//! set, a missing one named before anything is installed), and the install itself.
//! Uploaded files live owner-only in the state directory under their SHA-256, checked
//! as they arrive and again before they are installed.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use clustermgr_protocol::changeset::{PackageFile, PackageSpec};

/// The largest package file accepted (a Gluu server package is about 1 GiB).
pub const MAX_FILE_BYTES: u64 = 4 << 30;

/// How long one install may take (the controller waits ten minutes for an apply).
pub const INSTALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(480);

/// Whether this agent installs packages: a package's scripts run as root, so an agent
/// whose `agent.toml` says `allow_packages = false` refuses, and an agent standing in
/// for a host under a directory (the dev sandbox) has no package database of its own.
pub fn allowed(cfg: &crate::config::AgentConfig) -> Result<(), String> {
    if !cfg.allow_packages {
        return Err(format!(
            "{} sets allow_packages = false: install the packages on this node by hand, or allow it",
            cfg.path.display()
        ));
    }
    if cfg.root != Path::new("/") {
        return Err(format!(
            "this agent stands for a host under {} (a sandbox), which has no package database of its own; packages are installed only where the agent's root is /",
            cfg.root.display()
        ));
    }
    Ok(())
}

/// The node's package manager.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Manager {
    /// Debian, Ubuntu: dpkg, and apt for repositories.
    Apt,
    /// RHEL 8+, CentOS 8: rpm, and dnf.
    Dnf,
    /// RHEL 7, CentOS 7: rpm, and yum.
    Yum,
}

impl Manager {
    /// The manager the node has, by the tools present.
    pub fn detect() -> Result<Manager, String> {
        let has = |p: &str| Path::new(p).exists();
        if has("/usr/bin/dpkg-query") && has("/usr/bin/dpkg") {
            Ok(Manager::Apt)
        } else if has("/usr/bin/rpm") && has("/usr/bin/dnf") {
            Ok(Manager::Dnf)
        } else if has("/usr/bin/rpm") && has("/usr/bin/yum") {
            Ok(Manager::Yum)
        } else {
            Err("no package manager found (neither dpkg nor rpm with dnf or yum)".into())
        }
    }

    /// Its name, for messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Manager::Apt => "apt",
            Manager::Dnf => "dnf",
            Manager::Yum => "yum",
        }
    }

    /// The package names `spec` has for this family.
    pub fn names(self, spec: &PackageSpec) -> &[String] {
        match self {
            Manager::Apt => &spec.deb,
            Manager::Dnf | Manager::Yum => &spec.rpm,
        }
    }

    /// The file extension of its packages.
    pub fn extension(self) -> &'static str {
        match self {
            Manager::Apt => "deb",
            Manager::Dnf | Manager::Yum => "rpm",
        }
    }
}

/// Runs a query tool; its standard output when it exits 0.
fn query(program: &str, args: &[&str]) -> Result<Option<String>, String> {
    let out = Command::new(program)
        .args(args)
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    Ok(out
        .status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned()))
}

/// The version of `name` installed, if it is.
pub fn installed(m: Manager, name: &str) -> Result<Option<String>, String> {
    match m {
        Manager::Apt => Ok(query(
            "dpkg-query",
            &["-W", "-f=${db:Status-Status}\t${Version}", name],
        )?
        .and_then(|o| {
            let (status, version) = o.split_once('\t')?;
            (status == "installed").then(|| version.trim().to_string())
        })),
        Manager::Dnf | Manager::Yum => Ok(query(
            "rpm",
            &["-q", "--qf", "%{VERSION}-%{RELEASE}", name],
        )?
        .map(|v| v.trim().to_string())),
    }
}

/// The version the node's repositories would install, if they have `name`.
pub fn candidate(m: Manager, name: &str) -> Result<Option<String>, String> {
    let out = match m {
        Manager::Apt => query("apt-cache", &["policy", name])?,
        Manager::Dnf => query(
            "dnf",
            &[
                "-q",
                "repoquery",
                "--latest-limit",
                "1",
                "--qf",
                "%{version}-%{release}",
                name,
            ],
        )?,
        Manager::Yum => query("repoquery", &["--qf", "%{version}-%{release}", name])?,
    };
    let Some(out) = out else { return Ok(None) };
    Ok(match m {
        Manager::Apt => out
            .lines()
            .find_map(|l| l.trim().strip_prefix("Candidate:"))
            .map(str::trim)
            .filter(|v| *v != "(none)")
            .map(str::to_string),
        Manager::Dnf | Manager::Yum => out.lines().next().map(|l| l.trim().to_string()),
    }
    .filter(|v| !v.is_empty()))
}

/// One dependency alternative: a name, and a version constraint if any.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dep {
    /// The package (or virtual package, or rpm capability).
    pub name: String,
    /// `(op, version)`: `>=`, `<=`, `=`, `>>`, `<<`.
    pub version: Option<(String, String)>,
}

impl std::fmt::Display for Dep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.version {
            Some((op, v)) => write!(f, "{} ({op} {v})", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// Parses a Debian `Depends` field: groups by `,`, alternatives by `|`.
pub fn parse_depends(field: &str) -> Vec<Vec<Dep>> {
    field
        .split(',')
        .map(str::trim)
        .filter(|g| !g.is_empty())
        .map(|group| {
            group
                .split('|')
                .filter_map(|alt| {
                    let alt = alt.trim();
                    let (name, rest) = match alt.find(['(', ' ', '[', '<']) {
                        Some(i) => (&alt[..i], &alt[i..]),
                        None => (alt, ""),
                    };
                    // `foo:any`, `foo:amd64`: the architecture does not change the name.
                    let name = name.split(':').next().unwrap_or(name).trim();
                    if name.is_empty() {
                        return None;
                    }
                    let version = rest
                        .split_once('(')
                        .and_then(|(_, r)| r.split_once(')'))
                        .and_then(|(inner, _)| {
                            let inner = inner.trim();
                            let i = inner.find(|c: char| !"<>=".contains(c))?;
                            Some((inner[..i].trim().to_string(), inner[i..].trim().to_string()))
                        });
                    Some(Dep {
                        name: name.to_string(),
                        version,
                    })
                })
                .collect::<Vec<_>>()
        })
        .filter(|g| !g.is_empty())
        .collect()
}

/// What a package file is and needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileMeta {
    /// Where it is in the cache.
    pub path: PathBuf,
    /// Its name in the package directory.
    pub file: String,
    /// Its SHA-256, as the controller sent it and the cache checked it.
    pub sha256: String,
    /// The package it installs.
    pub package: String,
    /// Its version.
    pub version: String,
    /// What it depends on (Debian: `Pre-Depends` and `Depends`; rpm: its requires).
    pub depends: Vec<Vec<Dep>>,
    /// The virtual packages (rpm: capabilities) it provides.
    pub provides: Vec<String>,
}

/// What the cached files are and need, by SHA-256: read once with the node's tools,
/// not at every plan (a file's hash names its content, so an entry never goes stale).
static METAS: std::sync::Mutex<BTreeMap<String, FileMeta>> = std::sync::Mutex::new(BTreeMap::new());

/// At most this many files' metadata are remembered.
const METAS_KEPT: usize = 1024;

/// A cached file's metadata, read once.
fn meta_of(m: Manager, path: &Path, f: &PackageFile) -> Result<FileMeta, String> {
    let key = f.sha256.to_ascii_lowercase();
    let known = METAS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&key)
        .cloned();
    if let Some(meta) = known {
        return Ok(FileMeta {
            file: f.file.clone(),
            ..meta
        });
    }
    let meta = read_meta(m, path, &f.file, &key)?;
    let mut metas = METAS.lock().unwrap_or_else(|p| p.into_inner());
    if metas.len() >= METAS_KEPT {
        metas.clear();
    }
    metas.insert(key, meta.clone());
    Ok(meta)
}

/// Reads a cached file's metadata with the node's tools.
fn read_meta(m: Manager, path: &Path, file: &str, sha256: &str) -> Result<FileMeta, String> {
    let p = path.to_string_lossy();
    match m {
        Manager::Apt => {
            let out = query(
                "dpkg-deb",
                &[
                    "-f",
                    &p,
                    "Package",
                    "Version",
                    "Pre-Depends",
                    "Depends",
                    "Provides",
                ],
            )?
            .ok_or_else(|| format!("{file} is not a Debian package dpkg-deb can read"))?;
            let mut fields: BTreeMap<String, String> = BTreeMap::new();
            let mut last = String::new();
            for line in out.lines() {
                if line.starts_with([' ', '\t']) {
                    if let Some(v) = fields.get_mut(&last) {
                        v.push(' ');
                        v.push_str(line.trim());
                    }
                } else if let Some((k, v)) = line.split_once(':') {
                    last = k.trim().to_string();
                    fields.insert(last.clone(), v.trim().to_string());
                }
            }
            let get = |k: &str| fields.get(k).cloned().unwrap_or_default();
            let mut depends = parse_depends(&get("Pre-Depends"));
            depends.extend(parse_depends(&get("Depends")));
            let provides = parse_depends(&get("Provides"))
                .into_iter()
                .flatten()
                .map(|d| d.name)
                .collect();
            let package = get("Package");
            if package.is_empty() {
                return Err(format!("{file} names no package"));
            }
            Ok(FileMeta {
                path: path.to_path_buf(),
                file: file.to_string(),
                sha256: sha256.to_string(),
                package,
                version: get("Version"),
                depends,
                provides,
            })
        }
        Manager::Dnf | Manager::Yum => {
            let head = query(
                "rpm",
                &["-qp", "--qf", "%{NAME}\t%{VERSION}-%{RELEASE}", &p],
            )?
            .ok_or_else(|| format!("{file} is not an rpm package rpm can read"))?;
            let (package, version) = head.split_once('\t').unwrap_or((head.as_str(), ""));
            let list = |flag: &str| -> Result<Vec<String>, String> {
                Ok(query("rpm", &["-qp", flag, &p])?
                    .unwrap_or_default()
                    .lines()
                    .map(|l| l.split_whitespace().next().unwrap_or("").to_string())
                    .filter(|c| !c.is_empty() && !c.starts_with("rpmlib("))
                    .collect())
            };
            Ok(FileMeta {
                path: path.to_path_buf(),
                file: file.to_string(),
                sha256: sha256.to_string(),
                package: package.trim().to_string(),
                version: version.trim().to_string(),
                depends: list("--requires")?
                    .into_iter()
                    .map(|name| {
                        vec![Dep {
                            name,
                            version: None,
                        }]
                    })
                    .collect(),
                provides: list("--provides")?,
            })
        }
    }
}

/// What the node has installed: package → version, and every virtual name an installed
/// package provides (Debian). rpm capabilities are asked one at a time instead.
#[derive(Debug, Default)]
struct Installed {
    versions: BTreeMap<String, String>,
    /// Virtual name → the versions it is provided at (`None`: unversioned).
    provided: BTreeMap<String, Vec<Option<String>>>,
}

fn installed_all(m: Manager) -> Result<Installed, String> {
    let mut out = Installed::default();
    if m != Manager::Apt {
        return Ok(out);
    }
    let list = query(
        "dpkg-query",
        &[
            "-W",
            "-f=${db:Status-Status}\t${Package}\t${Version}\t${Provides}\n",
        ],
    )?
    .unwrap_or_default();
    for line in list.lines() {
        let mut f = line.split('\t');
        let (Some("installed"), Some(name), Some(version)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        out.versions.insert(name.to_string(), version.to_string());
        for d in parse_depends(f.next().unwrap_or_default())
            .into_iter()
            .flatten()
        {
            // `Provides: lsb-base (= 11.1.0)`: a versioned provide.
            let v = d.version.map(|(_, v)| v);
            out.provided.entry(d.name).or_default().push(v);
        }
    }
    Ok(out)
}

/// Whether Debian version `a` stands in relation `op` to `b`, by dpkg itself.
fn version_holds(a: &str, op: &str, b: &str) -> bool {
    let op = match op {
        ">=" => "ge",
        "<=" => "le",
        "=" => "eq",
        ">>" | ">" => "gt",
        "<<" | "<" => "lt",
        _ => return false,
    };
    Command::new("dpkg")
        .args(["--compare-versions", a, op, b])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// How a package entry compares with the node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum State {
    /// One of its names is installed, at this version.
    Installed {
        /// The package.
        name: String,
        /// Its version.
        version: String,
    },
    /// It would be installed from the node's repositories.
    FromRepository {
        /// The package.
        name: String,
        /// The version the repositories have.
        version: String,
    },
    /// It would be installed from these uploaded files (its own first, then what it
    /// needs that the node lacks).
    FromFiles(Vec<FileMeta>),
}

impl State {
    /// In words, for the plan (`nginx 1.22.1-9 installed`).
    pub fn describe(&self) -> String {
        match self {
            State::Installed { name, version } => format!("{name} {version} installed\n"),
            State::FromRepository { name, version } => {
                format!("{name} {version} from the node's repositories\n")
            }
            State::FromFiles(files) => {
                let mut s = String::new();
                for (i, f) in files.iter().enumerate() {
                    s.push_str(&format!(
                        "{}{} {} from the package directory ({})\n",
                        if i == 0 { "" } else { "with " },
                        f.package,
                        f.version,
                        f.file
                    ));
                }
                s
            }
        }
    }
}

/// The package cache in the state directory.
pub struct Cache {
    dir: PathBuf,
}

impl Cache {
    /// The cache under `state_dir`.
    pub fn new(state_dir: &Path) -> Cache {
        Cache {
            dir: state_dir.join("packages"),
        }
    }

    /// Where the file with this hash is kept.
    fn path_of(&self, f: &PackageFile) -> Result<PathBuf, String> {
        if f.sha256.len() != 64 || !f.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("{}: not a SHA-256: {:?}", f.file, f.sha256));
        }
        let ext = if f.file.ends_with(".rpm") {
            "rpm"
        } else {
            "deb"
        };
        Ok(self
            .dir
            .join(format!("{}.{ext}", f.sha256.to_ascii_lowercase())))
    }

    /// The files of `files` the cache lacks.
    pub fn missing(&self, files: &[PackageFile]) -> Result<Vec<PackageFile>, String> {
        let mut out = Vec::new();
        for f in files {
            let p = self.path_of(f)?;
            match std::fs::symlink_metadata(&p) {
                Ok(m) if m.is_file() && m.len() == f.size => {}
                _ => out.push(f.clone()),
            }
        }
        Ok(out)
    }

    /// Where an upload of `f` is written before its hash is checked, in the owner-only
    /// cache directory (made here): nobody else on the node can swap a package between
    /// its check and its install.
    pub fn upload_path(&self, f: &PackageFile) -> Result<PathBuf, String> {
        if f.size > MAX_FILE_BYTES {
            return Err(format!(
                "{}: {} bytes, more than the {} GiB a package may be",
                f.file,
                f.size,
                MAX_FILE_BYTES >> 30
            ));
        }
        self.path_of(f)?;
        std::fs::create_dir_all(&self.dir)
            .and_then(|()| {
                std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o700))
            })
            .map_err(|e| format!("cannot prepare {}: {e}", self.dir.display()))?;
        Ok(self
            .dir
            .join(format!(".{}.part", f.sha256.to_ascii_lowercase())))
    }

    /// Keeps an upload whose hash, computed as it arrived, is `got`; removes it if that
    /// is not the hash announced.
    pub fn keep(&self, f: &PackageFile, upload: &Path, got: &str) -> Result<(), String> {
        if !got.eq_ignore_ascii_case(&f.sha256) {
            let _ = std::fs::remove_file(upload);
            return Err(format!(
                "{}: its SHA-256 on the node is {got}, not {} as announced, so it was not kept: the file in the controller's package directory changed or the transfer was damaged; plan again",
                f.file, f.sha256
            ));
        }
        let target = self.path_of(f)?;
        std::fs::set_permissions(upload, std::fs::Permissions::from_mode(0o600))
            .and_then(|()| std::fs::rename(upload, &target))
            .map_err(|e| format!("{}: {e}", target.display()))
    }

    /// The path of a cached file, which must be there (the controller uploads what
    /// the node lacks before it plans or applies).
    fn present(&self, f: &PackageFile) -> Result<PathBuf, String> {
        let p = self.path_of(f)?;
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.is_file() && m.len() == f.size => Ok(p),
            _ => Err(format!(
                "{} is not on the node; plan or apply again to upload it",
                f.file
            )),
        }
    }
}

/// Checks a cached file's SHA-256 again right before it is installed (its scripts run
/// as root), reading it in pieces; a file that no longer matches is removed.
fn verify(f: &FileMeta) -> Result<(), String> {
    let got = clustermgr_protocol::identity::sha256_file(&f.path)
        .map_err(|e| format!("{}: cannot read the node's copy: {e}", f.file))?;
    if !got.eq_ignore_ascii_case(&f.sha256) {
        let _ = std::fs::remove_file(&f.path);
        return Err(format!(
            "{}: the node's copy no longer has SHA-256 {}, so it was removed; apply again to upload it",
            f.file, f.sha256
        ));
    }
    Ok(())
}

/// Every package entry of a change set as it compares with the node, by position.
/// One resolution for all of them: the files one entry needs may serve another.
pub fn stage(specs: &[&PackageSpec], cache: &Cache) -> Result<Vec<State>, String> {
    let m = Manager::detect()?;
    let installed = installed_all(m)?;
    let mut out = Vec::with_capacity(specs.len());
    // The uploaded files' metadata, read once.
    let mut metas: BTreeMap<String, FileMeta> = BTreeMap::new();
    for spec in specs {
        for f in &spec.files {
            if metas.contains_key(&f.sha256) || !f.file.ends_with(m.extension()) {
                continue;
            }
            let path = cache.present(f)?;
            metas.insert(f.sha256.clone(), meta_of(m, &path, f)?);
        }
    }
    let pool: Vec<&FileMeta> = metas.values().collect();
    let mut chosen: BTreeSet<String> = BTreeSet::new();
    let mut missing: Vec<String> = Vec::new();
    for spec in specs {
        let names = m.names(spec);
        if names.is_empty() {
            return Err(format!(
                "package:{} has no {} package name",
                spec.name,
                m.as_str()
            ));
        }
        let mut have = None;
        for n in names {
            if let Some(v) = installed_version(m, &installed, n)? {
                have = Some(State::Installed {
                    name: n.clone(),
                    version: v,
                });
                break;
            }
        }
        if let Some(h) = have {
            out.push(h);
            continue;
        }
        let first = &names[0];
        if spec.files.is_empty() {
            match candidate(m, first)? {
                Some(version) => out.push(State::FromRepository {
                    name: first.clone(),
                    version,
                }),
                None => {
                    return Err(format!(
                        "{first} is not installed and the node's repositories have no {first} ({} finds none: refresh its package lists, or give the cluster a package directory with `clustermgr cluster set package-dir DIR`)",
                        m.as_str()
                    ));
                }
            }
            continue;
        }
        let Some(own) = pool.iter().find(|f| &f.package == first) else {
            missing.push(format!("{first} (for package:{})", spec.name));
            out.push(State::FromFiles(Vec::new()));
            continue;
        };
        let mut files = vec![(*own).clone()];
        let mut queue = vec![(*own).clone()];
        chosen.insert(own.package.clone());
        while let Some(f) = queue.pop() {
            for group in &f.depends {
                if group
                    .iter()
                    .any(|d| satisfied(m, &installed, d, &pool, &chosen))
                {
                    continue;
                }
                // The first alternative the directory has.
                let found = group.iter().find_map(|d| {
                    pool.iter()
                        .find(|p| provides(m, p, d))
                        .map(|p| (*p).clone())
                });
                match found {
                    Some(p) if chosen.insert(p.package.clone()) => {
                        files.push(p.clone());
                        queue.push(p);
                    }
                    Some(_) => {}
                    None => missing.push(format!(
                        "{} (needed by {} {})",
                        group
                            .iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join(" or "),
                        f.package,
                        f.version
                    )),
                }
            }
        }
        out.push(State::FromFiles(files));
    }
    if !missing.is_empty() {
        missing.sort();
        missing.dedup();
        return Err(format!(
            "the package directory lacks {}: add their package files (`apt-get download NAME` on a machine of the same release) to the controller's package directory",
            missing.join(", ")
        ));
    }
    Ok(out)
}

fn installed_version(m: Manager, all: &Installed, name: &str) -> Result<Option<String>, String> {
    match m {
        Manager::Apt => Ok(all.versions.get(name).cloned()),
        Manager::Dnf | Manager::Yum => installed(m, name),
    }
}

/// Whether `d` is met by what is installed or already chosen.
fn satisfied(
    m: Manager,
    all: &Installed,
    d: &Dep,
    pool: &[&FileMeta],
    chosen: &BTreeSet<String>,
) -> bool {
    if pool
        .iter()
        .any(|p| chosen.contains(&p.package) && provides(m, p, d))
    {
        return true;
    }
    match m {
        Manager::Apt => match all.versions.get(&d.name) {
            Some(v) => d
                .version
                .as_ref()
                .is_none_or(|(op, want)| version_holds(v, op, want)),
            // A virtual package: an unversioned provide meets only an unversioned
            // dependency; a versioned one is compared like a version.
            None => all.provided.get(&d.name).is_some_and(|at| {
                at.iter().any(|v| match (&d.version, v) {
                    (None, _) => true,
                    (Some((op, want)), Some(v)) => version_holds(v, op, want),
                    (Some(_), None) => false,
                })
            }),
        },
        Manager::Dnf | Manager::Yum => {
            (d.name.starts_with('/') && Path::new(&d.name).exists())
                || query("rpm", &["-q", "--whatprovides", &d.name])
                    .ok()
                    .flatten()
                    .is_some()
        }
    }
}

/// Whether file `p` would meet `d`.
fn provides(m: Manager, p: &FileMeta, d: &Dep) -> bool {
    if p.package == d.name {
        return match (&d.version, m) {
            (Some((op, want)), Manager::Apt) => version_holds(&p.version, op, want),
            _ => true,
        };
    }
    d.version.is_none() && p.provides.iter().any(|x| x == &d.name)
}

/// The command that installs what `states` says is missing, if anything is: the
/// uploaded files in one dpkg (or rpm) run, which orders them itself, or the names
/// from the repositories in one apt (dnf, yum) run.
pub fn install_command(states: &[State]) -> Result<Option<(String, Vec<String>)>, String> {
    let m = Manager::detect()?;
    let mut metas: Vec<&FileMeta> = Vec::new();
    let mut names: Vec<String> = Vec::new();
    for s in states {
        match s {
            State::Installed { .. } => {}
            State::FromRepository { name, .. } => names.push(name.clone()),
            State::FromFiles(f) => metas.extend(f),
        }
    }
    metas.sort_by(|a, b| a.path.cmp(&b.path));
    metas.dedup_by(|a, b| a.path == b.path);
    names.sort();
    names.dedup();
    if !metas.is_empty() && !names.is_empty() {
        return Err(format!(
            "{} would come from the repositories and {} from the package directory; one change set takes packages from one source",
            names.join(", "),
            metas[0].package
        ));
    }
    let mut files = Vec::with_capacity(metas.len());
    for f in &metas {
        verify(f)?;
        files.push(f.path.to_string_lossy().into_owned());
    }
    let mut argv: Vec<String> = Vec::new();
    let label;
    if !files.is_empty() {
        let mut packages: Vec<&str> = metas.iter().map(|f| f.package.as_str()).collect();
        packages.sort_unstable();
        label = format!("install {} (package directory)", packages.join(" "));
        argv.extend(match m {
            Manager::Apt => [
                "env",
                "DEBIAN_FRONTEND=noninteractive",
                "dpkg",
                "--force-confdef",
                "--force-confold",
                "-i",
            ]
            .map(String::from)
            .to_vec(),
            Manager::Dnf | Manager::Yum => ["rpm", "-U"].map(String::from).to_vec(),
        });
        argv.extend(files);
    } else if !names.is_empty() {
        label = format!("{} install {}", m.as_str(), names.join(" "));
        argv.extend(match m {
            Manager::Apt => [
                "env",
                "DEBIAN_FRONTEND=noninteractive",
                "apt-get",
                "install",
                "-y",
                "--no-install-recommends",
                "-o",
                "Dpkg::Options::=--force-confdef",
                "-o",
                "Dpkg::Options::=--force-confold",
                "-o",
                "DPkg::Lock::Timeout=60",
            ]
            .map(String::from)
            .to_vec(),
            Manager::Dnf => ["dnf", "-y", "install"].map(String::from).to_vec(),
            Manager::Yum => ["yum", "-y", "install"].map(String::from).to_vec(),
        });
        argv.extend(names);
    } else {
        return Ok(None);
    }
    Ok(Some((label, argv)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depends_fields_parse_into_groups_of_alternatives() {
        let d = parse_depends(
            "libc6 (>= 2.34), nginx-common (= 1.22.1-9), libpcre2-8-0 (>= 10.22) | foo, python3:any, bar [amd64]",
        );
        assert_eq!(d.len(), 5);
        assert_eq!(d[0][0].name, "libc6");
        assert_eq!(d[0][0].version, Some((">=".into(), "2.34".into())));
        assert_eq!(d[1][0].version, Some(("=".into(), "1.22.1-9".into())));
        assert_eq!(d[2].len(), 2);
        assert_eq!(d[2][1].name, "foo");
        assert_eq!(d[3][0].name, "python3");
        assert_eq!(d[4][0].name, "bar");
        assert_eq!(d[4][0].version, None);
        assert!(parse_depends("").is_empty());
        assert_eq!(d[2][0].to_string(), "libpcre2-8-0 (>= 10.22)");
    }
}
