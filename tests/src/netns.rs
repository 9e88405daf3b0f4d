//! The multi-host harness: test hosts on one machine, each a network namespace with its
//! own address on a private bridge, its own hostname, its own view of the paths an
//! agent and the Gluu-side services write, and a real OpenSSH server with root key
//! login. Everything it makes is torn down when the `Net` drops (also on panic), and a
//! run that crashed is cleaned up by the next one.
//!
//! Each `Net` claims a /24 under 10.213.0.0/16 by creating `/run/clustermgr-tests/net-K`
//! (mkdir is atomic, so concurrent test binaries never share one); every name it makes
//! carries K: namespaces `cmt-K-hN`, the bridge `cmtbrK`, host-side veths `cmtvK-N`.

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Where the claims live; /run is cleared by a reboot, which also clears namespaces.
const CLAIMS: &str = "/run/clustermgr-tests";

/// The directories every host gets its own copy of, as an overlay on the machine's
/// own (reads see the machine's files; writes stay with the host).
/// `/usr` and `/var` whole, so that a package installed in a host (its programs, its
/// dpkg database, debconf's cache) is that host's alone.
const OVERLAID: &[&str] = &["/etc", "/var", "/usr", "/opt"];

/// Runs a command that must succeed, panicking with its stderr when it does not.
fn must(cmd: &mut Command) -> Output {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    out
}

/// Runs a command whose failure does not matter (teardown of things that may be gone).
fn quietly(cmd: &mut Command) {
    let _ = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

fn ip(args: &[&str]) -> Output {
    must(Command::new("ip").args(args))
}

fn pid_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// The pids of every process in network namespace `ns`.
fn ns_pids(ns: &str) -> Vec<u32> {
    Command::new("ip")
        .args(["netns", "pids", ns])
        .stderr(Stdio::null())
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Kills every process in `ns` and deletes it, waiting until the processes are gone so
/// their mounts and sockets go with them.
fn destroy_ns(ns: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let pids = ns_pids(ns);
        if pids.is_empty() || Instant::now() > deadline {
            break;
        }
        for p in pids {
            quietly(Command::new("kill").args(["-KILL", &p.to_string()]));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    quietly(Command::new("ip").args(["netns", "del", ns]));
}

/// Removes what a crashed run under claim `k` left: its namespaces and its bridge.
fn sweep(k: u8) {
    let list = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let prefix = format!("cmt-{k}-");
    for ns in list.lines().filter_map(|l| l.split_whitespace().next()) {
        if ns.starts_with(&prefix) {
            destroy_ns(ns);
        }
    }
    // A veth goes with its namespace, but a namespace can outlive its name while
    // anything still refers to it; deleting the links by name never waits on that.
    let links = Command::new("ip")
        .args(["-o", "link", "show"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let veth = format!("cmtv{k}-");
    for link in links.lines().filter_map(|l| l.split_whitespace().nth(1)) {
        let name = link
            .trim_end_matches(':')
            .split('@')
            .next()
            .unwrap_or_default();
        if name.starts_with(&veth) {
            quietly(Command::new("ip").args(["link", "del", name]));
        }
    }
    quietly(Command::new("ip").args(["link", "del", &format!("cmtbr{k}")]));
}

/// Sweeps the leftovers of every claim whose owner is dead: a crashed run's
/// namespaces, processes and bridge go before anything new is made.
pub fn sweep_stale() {
    let Ok(entries) = std::fs::read_dir(CLAIMS) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(k) = name.strip_prefix("net-").and_then(|k| k.parse::<u8>().ok()) else {
            continue;
        };
        let owner: Option<u32> = std::fs::read_to_string(e.path().join("pid"))
            .ok()
            .and_then(|s| s.trim().parse().ok());
        // A claim without a pid file is being made right now, unless it is old.
        let stale = match owner {
            Some(pid) => !pid_alive(pid),
            None => e
                .metadata()
                .and_then(|m| m.modified())
                .map(|t| t.elapsed().unwrap_or_default() > Duration::from_secs(60))
                .unwrap_or(false),
        };
        if !stale {
            continue;
        }
        // Renaming it away first means only one sweeper handles it.
        let grave = Path::new(CLAIMS).join(format!("stale-{k}-{}", std::process::id()));
        if std::fs::rename(e.path(), &grave).is_ok() {
            sweep(k);
            let _ = std::fs::remove_dir_all(&grave);
        }
    }
}

/// Claims a free K, after sweeping stale claims.
fn claim() -> (u8, PathBuf) {
    std::fs::create_dir_all(CLAIMS).expect("create the claims directory");
    sweep_stale();
    for k in 1..=250u8 {
        let dir = Path::new(CLAIMS).join(format!("net-{k}"));
        if std::fs::create_dir(&dir).is_ok() {
            std::fs::write(dir.join("pid"), std::process::id().to_string()).expect("claim");
            // A leftover without a claim (a claim removed by hand) must not collide.
            sweep(k);
            return (k, dir);
        }
    }
    panic!("no free test network under {CLAIMS}: remove stale claims there");
}

/// A set of test hosts on one private bridge, reachable from this (the controller's)
/// namespace.
pub struct Net {
    k: u8,
    claim: PathBuf,
    dir: tempfile::TempDir,
    hosts: Vec<Host>,
}

/// One test host.
pub struct Host {
    /// Its hostname (also what the tests call it).
    pub name: String,
    /// Its address on the bridge.
    pub ip: Ipv4Addr,
    ns: String,
    veth: String,
    dir: PathBuf,
    anchor: Child,
    sshd: Option<Child>,
    services: Vec<(String, Child)>,
}

impl Net {
    /// A new, empty network: claims a subnet and makes its bridge.
    pub fn new() -> Net {
        let (k, claim) = claim();
        let dir = tempfile::Builder::new()
            .prefix("cm-net")
            .tempdir()
            .expect("tempdir");
        let bridge = format!("cmtbr{k}");
        ip(&["link", "add", &bridge, "type", "bridge"]);
        ip(&["addr", "add", &format!("10.213.{k}.1/24"), "dev", &bridge]);
        ip(&["link", "set", &bridge, "up"]);
        let key = dir.path().join("client_key");
        must(
            Command::new("ssh-keygen")
                .args([
                    "-q",
                    "-t",
                    "ed25519",
                    "-N",
                    "",
                    "-C",
                    "clustermgr-tests",
                    "-f",
                ])
                .arg(&key),
        );
        std::fs::copy(
            dir.path().join("client_key.pub"),
            dir.path().join("authorized_keys"),
        )
        .expect("authorized_keys");
        Net {
            k,
            claim,
            dir,
            hosts: Vec::new(),
        }
    }

    /// The private key the hosts' sshd accept for root.
    pub fn client_key(&self) -> PathBuf {
        self.dir.path().join("client_key")
    }

    /// A known_hosts file naming every host's key.
    pub fn known_hosts(&self) -> PathBuf {
        let path = self.dir.path().join("known_hosts");
        let text: String = self
            .hosts
            .iter()
            .map(|h| {
                let key = std::fs::read_to_string(h.dir.join("ssh_host_ed25519_key.pub"))
                    .expect("host key");
                format!(
                    "{} {}\n",
                    h.ip,
                    key.split_whitespace().take(2).collect::<Vec<_>>().join(" ")
                )
            })
            .collect();
        std::fs::write(&path, text).expect("write known_hosts");
        path
    }

    /// This network's number (its subnet is 10.213.K.0/24).
    pub fn k(&self) -> u8 {
        self.k
    }

    /// The harness's own directory for this network (keys, overlays, logs).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The claim file recording which process owns this network.
    pub fn claim_file(&self) -> PathBuf {
        self.claim.join("pid")
    }

    /// The controller's address on the bridge.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 213, self.k, 1)
    }

    /// Adds a host running sshd, and waits until sshd accepts connections.
    pub fn add_host(&mut self, name: &str) -> &Host {
        let n = self.hosts.len() + 1;
        assert!(n < 200, "at most 199 hosts per Net");
        let k = self.k;
        let ns = format!("cmt-{k}-h{n}");
        let veth = format!("cmtv{k}-{n}");
        let addr = Ipv4Addr::new(10, 213, k, (n + 1) as u8);
        let dir = self.dir.path().join(name);
        std::fs::create_dir_all(&dir).expect("host dir");

        ip(&["netns", "add", &ns]);
        ip(&[
            "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
        ]);
        ip(&["link", "set", &veth, "master", &format!("cmtbr{k}"), "up"]);
        let cidr = format!("{addr}/24");
        for args in [
            ["addr", "add", cidr.as_str(), "dev", "eth0"].as_slice(),
            &["link", "set", "eth0", "up"],
            &["link", "set", "lo", "up"],
        ] {
            let mut full = vec!["netns", "exec", ns.as_str(), "ip"];
            full.extend_from_slice(args);
            ip(&full);
        }

        // The anchor holds the host's mount and UTS namespaces; everything the host runs
        // enters them through it.
        let mut script = String::from("set -e\n");
        for (i, path) in OVERLAID.iter().enumerate() {
            let upper = dir.join(format!("fs/{i}/upper"));
            let work = dir.join(format!("fs/{i}/work"));
            std::fs::create_dir_all(&upper).expect("overlay upper");
            std::fs::create_dir_all(&work).expect("overlay work");
            std::fs::create_dir_all(path).expect("overlaid path exists");
            script.push_str(&format!(
                "mount -t overlay overlay -o lowerdir={path},upperdir={},workdir={} {path}\n",
                upper.display(),
                work.display()
            ));
        }
        script.push_str(&format!(
            "mount -t tmpfs -o mode=0755 tmpfs /run\nmkdir -p /run/sshd\nhostname {name}\necho ready\nexec sleep infinity\n"
        ));
        let mut anchor = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{ns}"))
            .args(["unshare", "--mount", "--uts", "--propagation", "private"])
            .args(["sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the host's anchor");
        let mut line = String::new();
        use std::io::BufRead;
        std::io::BufReader::new(anchor.stdout.take().expect("piped"))
            .read_line(&mut line)
            .expect("read the anchor");
        if line.trim() != "ready" {
            let mut err = String::new();
            use std::io::Read;
            let _ = anchor
                .stderr
                .take()
                .expect("piped")
                .read_to_string(&mut err);
            panic!("host {name} did not come up: {err}");
        }

        let hostkey = dir.join("ssh_host_ed25519_key");
        must(
            Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
                .arg(&hostkey),
        );
        let config = dir.join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "ListenAddress {addr}:22\nHostKey {}\nPidFile /run/sshd.pid\nPermitRootLogin prohibit-password\nPubkeyAuthentication yes\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nAuthorizedKeysFile {}\nMaxStartups 100\nMaxSessions 100\nLogLevel VERBOSE\nSubsystem sftp internal-sftp\n",
                hostkey.display(),
                self.dir.path().join("authorized_keys").display(),
            ),
        )
        .expect("sshd_config");
        let mut host = Host {
            name: name.to_string(),
            ip: addr,
            ns,
            veth,
            dir,
            anchor,
            sshd: None,
            services: Vec::new(),
        };
        host.start_sshd();
        self.hosts.push(host);
        self.hosts.last().expect("just pushed")
    }

    /// The host called `name`.
    pub fn host(&self, name: &str) -> &Host {
        self.hosts
            .iter()
            .find(|h| h.name == name)
            .unwrap_or_else(|| panic!("no host {name}"))
    }

    /// The host called `name`, mutably.
    pub fn host_mut(&mut self, name: &str) -> &mut Host {
        self.hosts
            .iter_mut()
            .find(|h| h.name == name)
            .unwrap_or_else(|| panic!("no host {name}"))
    }

    /// Every host.
    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    /// Every host, mutably.
    pub fn hosts_mut(&mut self) -> &mut [Host] {
        &mut self.hosts
    }
}

impl Default for Net {
    fn default() -> Self {
        Net::new()
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for h in &mut self.hosts {
            destroy_ns(&h.ns);
            // Killed with the namespace; reaped here so no zombie outlives the test.
            for (_, c) in &mut h.services {
                let _ = c.wait();
            }
            if let Some(c) = &mut h.sshd {
                let _ = c.wait();
            }
            let _ = h.anchor.kill();
            let _ = h.anchor.wait();
        }
        // Everything this Net made is named with its K, including what a host that
        // failed halfway through `add_host` left.
        sweep(self.k);
        let _ = std::fs::remove_dir_all(&self.claim);
    }
}

impl Host {
    fn enter(&self) -> Command {
        let mut c = Command::new("nsenter");
        c.args(["-t", &self.anchor.id().to_string(), "-m", "-u", "-n", "--"]);
        c
    }

    /// The command prefix that runs a program inside the host (its network, mount and
    /// UTS namespaces): for processes a test owns itself, as [`crate::slapd`] does.
    pub fn enter_argv(&self) -> Vec<String> {
        [
            "nsenter",
            "-t",
            &self.anchor.id().to_string(),
            "-m",
            "-u",
            "-n",
            "--",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    /// Drops, on arrival at this host, the packets each of `rules` matches (nftables
    /// match expressions: `ip saddr 10.213.1.3`, `ip saddr 10.213.1.2 tcp dport 1636`),
    /// replacing the rules set before; none lifts them all. A drop, not a reject: a cut
    /// cable or a firewall as the other side sees them, connections left ESTABLISHED.
    pub fn drop_incoming(&self, rules: &[String]) {
        quietly(Command::new("ip").args([
            "netns", "exec", &self.ns, "nft", "delete", "table", "inet", "cmt",
        ]));
        if rules.is_empty() {
            return;
        }
        let body: String = rules.iter().map(|r| format!("    {r} drop\n")).collect();
        let file = self.dir.join("nft.rules");
        std::fs::write(
            &file,
            format!(
                "table inet cmt {{\n  chain input {{\n    type filter hook input priority 0; policy accept;\n{body}  }}\n}}\n"
            ),
        )
        .expect("write the rules");
        must(
            Command::new("ip")
                .args(["netns", "exec", &self.ns, "nft", "-f"])
                .arg(&file),
        );
    }

    /// `root@ADDRESS`, for ssh.
    pub fn ssh_target(&self) -> String {
        format!("root@{}", self.ip)
    }

    /// The SHA256 fingerprint of the host's SSH key, as `ssh-keygen -l` prints it.
    pub fn host_key_fingerprint(&self) -> String {
        let out = must(
            Command::new("ssh-keygen")
                .arg("-lf")
                .arg(self.dir.join("ssh_host_ed25519_key.pub")),
        );
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .nth(1)
            .expect("fingerprint")
            .to_string()
    }

    /// The network namespace's name.
    pub fn netns(&self) -> &str {
        &self.ns
    }

    /// Runs a command on the host to completion.
    pub fn run(&self, argv: &[&str]) -> Output {
        self.enter()
            .args(argv)
            .stdin(Stdio::null())
            .output()
            .expect("run on host")
    }

    /// Runs a shell line on the host and returns its stdout, failing the test when it
    /// fails.
    pub fn sh(&self, line: &str) -> String {
        let out = self.run(&["sh", "-c", line]);
        assert!(
            out.status.success(),
            "on {}: `{line}` failed: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr).trim()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Starts a long-running service on the host; its output goes to `NAME.log` in the
    /// host's harness directory. It is stopped with the host.
    pub fn add_service(&mut self, name: &str, argv: &[&str]) {
        let log = std::fs::File::create(self.dir.join(format!("{name}.log"))).expect("log");
        let child = self
            .enter()
            .args(argv)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start {name} on {}: {e}", self.name));
        self.services.push((name.to_string(), child));
    }

    /// A service's output so far.
    pub fn service_log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(format!("{name}.log"))).unwrap_or_default()
    }

    fn start_sshd(&mut self) {
        let log = std::fs::File::create(self.dir.join("sshd.log")).expect("sshd log");
        let child = self
            .enter()
            .args(["/usr/sbin/sshd", "-D", "-e", "-f"])
            .arg(self.dir.join("sshd_config"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start sshd");
        self.sshd = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        let addr = SocketAddr::from((self.ip, 22));
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            assert!(
                Instant::now() < deadline,
                "sshd on {} did not listen: {}",
                self.name,
                std::fs::read_to_string(self.dir.join("sshd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stops the host's sshd and every SSH session it serves, and waits until none is
    /// left.
    pub fn stop_sshd(&mut self) {
        if let Some(mut c) = self.sshd.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let sshds: Vec<u32> = ns_pids(&self.ns)
                .into_iter()
                .filter(|p| {
                    std::fs::read_to_string(format!("/proc/{p}/comm"))
                        .is_ok_and(|c| c.trim().starts_with("sshd"))
                })
                .collect();
            if sshds.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "sshd on {} would not stop",
                self.name
            );
            for p in sshds {
                quietly(Command::new("kill").args(["-KILL", &p.to_string()]));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The command lines of the processes running on the host (its PID namespace is
    /// the machine's, so `/proc` inside it shows every host's processes).
    pub fn processes(&self) -> Vec<String> {
        ns_pids(&self.ns)
            .into_iter()
            .filter_map(|p| std::fs::read(format!("/proc/{p}/cmdline")).ok())
            .map(|c| {
                String::from_utf8_lossy(&c)
                    .replace('\0', " ")
                    .trim()
                    .to_string()
            })
            .collect()
    }

    /// Whether a TCP connection to `port` on the host succeeds from the controller.
    pub fn tcp_open(&self, port: u16) -> bool {
        TcpStream::connect_timeout(
            &SocketAddr::from((self.ip, port)),
            Duration::from_millis(300),
        )
        .is_ok()
    }

    /// Cuts the host off the network (its link goes down), as a pulled cable would.
    pub fn cut_link(&self) {
        ip(&["link", "set", &self.veth, "down"]);
    }

    /// Restores the host's link, returning once both ends are up and the bridge
    /// forwards the port again (new connections may still take up to a second: the
    /// kernel activates a link that came back in its own time).
    pub fn restore_link(&self) {
        ip(&["link", "set", &self.veth, "up"]);
        let sys = Path::new("/sys/class/net").join(&self.veth);
        let deadline = Instant::now() + Duration::from_secs(10);
        // operstate "up" means both ends have carrier; brport state 3 is forwarding.
        let reads = |f: &str, want: &str| {
            std::fs::read_to_string(sys.join(f)).is_ok_and(|s| s.trim() == want)
        };
        // The host's end counts too: the kernel attaches a link's queue only when it
        // sees carrier, and until then drops what the host sends.
        let inner_up = || {
            Command::new("ip")
                .args(["-n", &self.ns, "-o", "link", "show", "eth0"])
                .output()
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("state UP"))
        };
        while !(reads("operstate", "up") && reads("brport/state", "3") && inner_up()) {
            assert!(
                Instant::now() < deadline,
                "the link of {} did not come back",
                self.name
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Where a path inside the host is visible from the test (through the host's
    /// mount namespace).
    pub fn path(&self, inside: &str) -> PathBuf {
        PathBuf::from(format!(
            "/proc/{}/root/{}",
            self.anchor.id(),
            inside.trim_start_matches('/')
        ))
    }
}
