//! A Gluu-like cluster on the multi-host harness for the health tests and the
//! fault-to-verdict benchmark: three Gluu hosts bootstrapped over SSH, csync2 as
//! `apply` configures it, a real slapd on each (multi-provider through `cn=config`,
//! listening on the host's 389 and 1636), every agent bound to its node's slapd over
//! pinned LDAPS, and `serve` watching with an alert command. The faults are the real
//! thing: processes stopped or frozen, packets dropped by nftables in the hosts.

use std::path::PathBuf;
use std::time::Duration;

use crate::netns::{Host, Net};
use crate::slapd::{self, ROOT_DN, Slapd};
use crate::{Controller, Serve, succeeded as ok};

/// The Gluu hosts.
pub const NODES: [&str; 3] = ["gluu1", "gluu2", "gluu3"];
/// Inside the container root the generated csync2 group replicates.
pub const CUSTOM: &str = "/opt/gluu-server/opt/gluu/jetty/oxauth/custom";
/// The cluster's public name.
pub const HOSTNAME: &str = "idp.example.org";
/// Apache's certificate in the Gluu container, which the health endpoints are pinned to.
pub const HTTPD_CRT: &str = "/opt/gluu-server/etc/certs/httpd.crt";
/// Its key.
pub const HTTPD_KEY: &str = "/opt/gluu-server/etc/certs/httpd.key";

/// One check's state as `health --json` or `events --json` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    /// The node.
    pub node: String,
    /// The check.
    pub check: String,
    /// `from` (events only).
    pub from: String,
    /// The level (`to` for an event).
    pub level: String,
    /// Why.
    pub reason: String,
    /// The event's id and time (events only).
    pub id: u64,
    /// Unix milliseconds (events only).
    pub time_ms: i64,
}

/// The three Gluu hosts bootstrapped over SSH into a new controller home (`gluu1` the
/// primary), with the cluster's hostname set.
pub fn hosts() -> (Net, Controller) {
    hosts_named(&NODES)
}

/// The hosts `names` (roles by name: `lb*` load balancers, `cache*` cache hosts, the
/// rest Gluu) bootstrapped over SSH into a new controller home (`gluu1` the primary),
/// with the cluster's hostname set.
fn hosts_named(names: &[&str]) -> (Net, Controller) {
    let mut net = Net::new();
    for n in names {
        net.add_host(n);
    }
    let ctl = Controller::new();
    let inventory = ctl.inventory(&net, "gluu1").display().to_string();
    ok(
        ctl.run(&["node", "add", "--from", &inventory]),
        "node add --from",
    );
    ok(
        ctl.run(&["cluster", "set", "hostname", HOSTNAME]),
        "cluster set hostname",
    );
    (net, ctl)
}

/// The running cluster; everything stops when it drops.
pub struct GluuCluster {
    /// The hosts.
    pub net: Net,
    /// The controller's home.
    pub ctl: Controller,
    /// The slapds, in [`NODES`] order.
    pub servers: Vec<Slapd>,
    /// `serve`, once started.
    pub serve: Option<Serve>,
    /// Where the alert command appends each event.
    pub alerts: PathBuf,
    /// The check interval.
    pub interval: Duration,
}

impl GluuCluster {
    /// Builds the cluster and starts `serve` checking every `interval_secs`.
    pub async fn start(interval_secs: u64) -> GluuCluster {
        GluuCluster::start_with(interval_secs, |_, _| {}).await
    }

    /// [`GluuCluster::start`], with `prepare` run on the bootstrapped hosts and the
    /// home before the one `apply` (the provisioning test makes the hosts bare there).
    pub async fn start_with(
        interval_secs: u64,
        prepare: impl FnOnce(&Net, &Controller),
    ) -> GluuCluster {
        GluuCluster::build(&NODES, interval_secs, prepare).await
    }

    /// [`GluuCluster::start_with`] with a load balancer (`lb1`, real nginx, the
    /// cluster's certificate, which the oxAuth stand-ins present too) and a cache host
    /// (`cache1`: Redis behind stunnel, `cache redis`) beside the three Gluu hosts.
    pub async fn start_whole(
        interval_secs: u64,
        prepare: impl FnOnce(&Net, &Controller),
    ) -> GluuCluster {
        let names = [NODES[0], NODES[1], NODES[2], "lb1", "cache1"];
        GluuCluster::build(&names, interval_secs, |net, ctl| {
            let dir = ctl.home.parent().expect("home's parent");
            let (crt, key) = (dir.join("cluster.crt"), dir.join("cluster.key"));
            std::fs::copy(net.host(NODES[0]).path(HTTPD_CRT), &crt).expect("the certificate");
            std::fs::copy(net.host(NODES[0]).path(HTTPD_KEY), &key).expect("the key");
            std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600))
                .expect("chmod");
            for (k, v) in [
                ("cache", "redis".to_string()),
                ("tls-cert", crt.display().to_string()),
                ("tls-key", key.display().to_string()),
            ] {
                ok(ctl.run(&["cluster", "set", k, &v]), "cluster set");
            }
            prepare(net, ctl);
        })
        .await
    }

    async fn build(
        names: &[&str],
        interval_secs: u64,
        prepare: impl FnOnce(&Net, &Controller),
    ) -> GluuCluster {
        let (net, ctl) = hosts_named(names);
        // One certificate for the cluster's name, as a Gluu cluster's Apache has.
        let pair = crate::slapd::self_signed(&[HOSTNAME]);
        for n in NODES {
            let h = net.host(n);
            h.sh(&format!("mkdir -p {CUSTOM} /opt/gluu-server/etc/gluu/conf"));
            start_oxauth(h, &pair);
        }
        prepare(&net, &ctl);
        ok(ctl.run(&["apply", "--yes"]), "apply");
        for n in NODES {
            let h = net.host(n);
            crate::eventually_blocking(
                &format!("csync2 listening on {}", h.name),
                Duration::from_secs(10),
                || h.tcp_open(30865),
            );
        }
        let servers =
            slapd::replicate(NODES.iter().map(|n| Slapd::start_on(net.host(n))).collect());
        for (n, s) in NODES.iter().zip(&servers) {
            bind_agent(net.host(n), s);
        }
        let alerts = ctl
            .home
            .parent()
            .expect("home's parent")
            .join("alerts.jsonl");
        std::fs::write(
            ctl.home.join("controller.toml"),
            format!(
                "[health]\ninterval_secs = {interval_secs}\ndisk_warning_pct = 100\ndisk_critical_pct = 100\n[alerts]\ncommand = [\"/bin/sh\", \"-c\", \"cat >> {}\"]\n",
                alerts.display()
            ),
        )
        .expect("controller.toml");
        let mut c = GluuCluster {
            net,
            ctl,
            servers,
            serve: None,
            alerts,
            interval: Duration::from_secs(interval_secs),
        };
        // csync2 sends what `apply` wrote the first time it runs, as cron would.
        for n in NODES {
            c.sync(n);
        }
        c.serve = Some(c.ctl.serve().await);
        c
    }

    /// The host called `name`.
    pub fn host(&self, name: &str) -> &Host {
        self.net.host(name)
    }

    /// The slapd of `name`.
    pub fn slapd(&mut self, name: &str) -> &mut Slapd {
        let i = NODES.iter().position(|n| *n == name).expect("a Gluu node");
        &mut self.servers[i]
    }

    /// Stops `name`'s oxAuth stand-in.
    pub fn stop_oxauth(&self, name: &str) {
        self.host(name)
            .sh("nginx -c /opt/gluu-server/oxauth-standin.conf -s stop");
    }

    /// Starts `name`'s oxAuth stand-in again.
    pub fn start_oxauth(&self, name: &str) {
        start_oxauth_again(self.host(name));
    }

    /// Runs the generated cron job's command on `name` now (what cron runs every two
    /// minutes), and requires it to succeed.
    pub fn sync(&self, name: &str) {
        let out = self.try_sync(name);
        assert!(
            out.status.success(),
            "csync2 -x on {name}: {}",
            std::fs::read_to_string(self.host(name).path("/var/log/csync2.log"))
                .unwrap_or_default()
        );
    }

    /// Runs the generated cron job's command on `name` now, whatever its outcome.
    pub fn try_sync(&self, name: &str) -> std::process::Output {
        let h = self.host(name);
        let cron = std::fs::read_to_string(h.path("/etc/cron.d/clustermgr-csync2"))
            .expect("the generated cron job");
        let line = cron
            .lines()
            .find(|l| l.contains("csync2 -x"))
            .expect("a csync2 line");
        // `M H d m w user sleep N; COMMAND`: the command, without the stagger.
        let command = line
            .split_once("; ")
            .map(|(_, c)| c)
            .expect("a staggered command");
        h.run(&["sh", "-c", command])
    }

    /// `health --json`: the exit code and every verdict.
    pub fn health(&self) -> (i32, Vec<Row>) {
        let (code, rows, _) = self.health_as_of();
        (code, rows)
    }

    /// `health --json` with when `serve` judged the round shown (`None`: the command
    /// ran a round of its own).
    pub fn health_as_of(&self) -> (i32, Vec<Row>, Option<i64>) {
        let out = self.ctl.run(&["--json", "health"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        if !v.is_null() {
            crate::schema::assert_valid("health", &v);
        }
        (
            out.status.code().unwrap_or(-1),
            rows(&v["verdicts"], "level"),
            v["as_of_ms"].as_i64(),
        )
    }

    /// `events --json`: every stored change, oldest first.
    pub fn events(&self) -> Vec<Row> {
        let out = self.ctl.run(&["--json", "events"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        if !v.is_null() {
            crate::schema::assert_valid("events", &v);
        }
        rows(&v["events"], "to")
    }

    /// Waits until `serve`'s last word on every check is ok: the last event of each
    /// (node, check) went to ok, and a round `serve` judged after this began exits 0
    /// (a round of `health`'s own, before serve has one, is not serve's word).
    pub async fn settled(&self, patience: Duration) {
        let deadline = std::time::Instant::now() + patience;
        let since = GluuCluster::now_ms();
        loop {
            let mut last = std::collections::BTreeMap::new();
            for e in self.events() {
                last.insert((e.node.clone(), e.check.clone()), e);
            }
            let (code, rows, as_of) = self.health_as_of();
            if as_of.is_some_and(|t| t >= since)
                && last.values().all(|e| e.level == "ok")
                && code == 0
            {
                return;
            }
            if std::time::Instant::now() > deadline {
                let events: Vec<&Row> = last.values().filter(|e| e.level != "ok").collect();
                let rows: Vec<&Row> = rows.iter().filter(|r| r.level != "ok").collect();
                panic!(
                    "not every check ok after {patience:?}: serve's last word {events:#?}; a round now (exit {code}) {rows:#?}"
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits for the first event after `after` (an event id) that `matches`, and
    /// returns it with how long after `since` it was seen by `serve`.
    pub async fn wait_event(
        &self,
        after: u64,
        since_ms: i64,
        patience: Duration,
        what: &str,
        matches: impl Fn(&Row) -> bool,
    ) -> (Row, Duration) {
        self.try_wait_event(after, since_ms, patience, matches)
            .await
            .unwrap_or_else(|| panic!("timed out after {patience:?} waiting for {what}"))
    }

    /// [`GluuCluster::wait_event`], or `None` after `patience`: a benchmark records a
    /// fault that was never reported and goes on with the next. The time comes from
    /// the event's own stamp, so how often this looks does not change it.
    pub async fn try_wait_event(
        &self,
        after: u64,
        since_ms: i64,
        patience: Duration,
        matches: impl Fn(&Row) -> bool,
    ) -> Option<(Row, Duration)> {
        let deadline = std::time::Instant::now() + patience;
        loop {
            if let Some(e) = self
                .events()
                .into_iter()
                .find(|e| e.id > after && matches(e))
            {
                let took = Duration::from_millis((e.time_ms - since_ms).max(0) as u64);
                return Some((e, took));
            }
            if std::time::Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The newest event's id (0 for none).
    pub fn last_event(&self) -> u64 {
        self.events().last().map_or(0, |e| e.id)
    }

    /// The ids of the events the alert command received, in order.
    pub fn alerted(&self) -> Vec<u64> {
        std::fs::read_to_string(&self.alerts)
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).expect("one event a line");
                v["id"].as_u64().expect("an id")
            })
            .collect()
    }

    /// Cuts every packet between the two hosts (both ways), the controller still
    /// reaching both.
    pub fn cut(&self, a: &str, b: &str) {
        let (ha, hb) = (self.host(a), self.host(b));
        ha.drop_incoming(&[format!("ip saddr {}", hb.ip)]);
        hb.drop_incoming(&[format!("ip saddr {}", ha.ip)]);
    }

    /// Cuts `name` off from every other Gluu host, the controller still reaching it.
    pub fn partition(&self, name: &str) {
        let me = self.host(name);
        let others: Vec<&Host> = NODES
            .iter()
            .filter(|n| **n != name)
            .map(|n| self.host(n))
            .collect();
        me.drop_incoming(
            &others
                .iter()
                .map(|h| format!("ip saddr {}", h.ip))
                .collect::<Vec<_>>(),
        );
        for h in others {
            h.drop_incoming(&[format!("ip saddr {}", me.ip)]);
        }
    }

    /// Lifts every drop on every host.
    pub fn heal(&self) {
        for h in self.net.hosts() {
            h.drop_incoming(&[]);
        }
    }

    /// Writes `n` entries on `name`'s slapd (changes the others must replicate).
    pub fn write_entries(&mut self, name: &str, tag: &str, n: usize) {
        crate::slapd::add_many(self.slapd(name), tag, n);
    }

    /// The controller's clock, Unix milliseconds.
    pub fn now_ms() -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64)
    }
}

/// The rows of a `--json` array of verdicts or events.
fn rows(v: &serde_json::Value, level_key: &str) -> Vec<Row> {
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|r| {
                    let s = |k: &str| r[k].as_str().unwrap_or_default().to_string();
                    Row {
                        node: s("node"),
                        check: s("check"),
                        from: s("from"),
                        level: s(level_key),
                        reason: s("reason"),
                        id: r["id"].as_u64().unwrap_or(0),
                        time_ms: r["time_ms"].as_i64().unwrap_or(0),
                    }
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A stand-in for a Gluu node's oxAuth behind Apache (the Gluu web applications cannot
/// run here): the component's marker in the container, Apache's certificate (`pair`,
/// the cluster's), and nginx on the host's 443 answering oxAuth's and oxTrust's health
/// endpoints as they do. Started again after [`GluuCluster::stop_oxauth`] by
/// [`start_oxauth_again`].
fn start_oxauth(h: &Host, (crt, key): &(String, String)) {
    let conf = "/opt/gluu-server/oxauth-standin.conf";
    h.sh("mkdir -p /opt/gluu-server/opt/gluu/jetty/oxauth /opt/gluu-server/etc/certs");
    std::fs::write(h.path(HTTPD_CRT), crt).expect("httpd.crt");
    std::fs::write(h.path(HTTPD_KEY), key).expect("httpd.key");
    std::fs::write(
        h.path(conf),
        format!(
            "pid /run/oxauth-standin.pid;\nerror_log /var/log/oxauth-standin.log;\nevents {{}}\nhttp {{\n access_log off;\n server {{\n  listen 443 ssl;\n  ssl_certificate {HTTPD_CRT};\n  ssl_certificate_key {HTTPD_KEY};\n  location ~ ^/(oxauth|identity)/restv1/health-check$ {{ default_type application/json; return 200 '{{\"status\": \"running\", \"db_status\": \"online\"}}'; }}\n }}\n}}\n"
        ),
    )
    .expect("stand-in config");
    start_oxauth_again(h);
}

/// Starts the oxAuth stand-in [`start_oxauth`] made on `h`.
fn start_oxauth_again(h: &Host) {
    let conf = "/opt/gluu-server/oxauth-standin.conf";
    h.sh(&format!("nginx -c {conf}"));
    crate::eventually_blocking(
        &format!("the oxAuth stand-in on {}", h.name),
        Duration::from_secs(10),
        || h.tcp_open(443),
    );
}

/// Gives `h`'s agent its node's slapd over LDAPS, pinned to the server's certificate,
/// the password in an owner-only file on the host, and has it re-read its settings
/// (the init script's `reload`: SIGHUP).
/// Binds `h`'s agent to `s` (`[ldap]` with a password file, the pinned certificate and
/// slapd's `ldapi://` socket) and has it re-read its configuration.
pub fn bind_agent(h: &Host, s: &Slapd) {
    let (pw, crt) = ("/etc/clustermgr/ldap.secret", "/etc/clustermgr/ldap.crt");
    std::fs::write(h.path(pw), format!("{}\n", s.root_pw)).expect("password file");
    std::fs::set_permissions(
        h.path(pw),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .expect("chmod");
    std::fs::write(h.path(crt), &s.cert_pem).expect("certificate");
    let toml = h.path("/etc/clustermgr/agent.toml");
    let mut text = std::fs::read_to_string(&toml).expect("agent.toml");
    text.push_str(&format!(
        "\n[ldap]\nurl = \"{}\"\nbind_dn = \"{ROOT_DN}\"\npassword_file = \"{pw}\"\ncert_file = \"{crt}\"\nldapi = \"{}\"\ntimeout_ms = 800\n",
        s.ldaps_url(),
        s.ldapi().display()
    ));
    std::fs::write(&toml, text).expect("agent.toml");
    h.sh("/etc/init.d/clustermgr-agent reload");
}
