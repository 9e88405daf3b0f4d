//! Where a system runs what it finds: the paths that a config push under
//! `allow_exec = false` may not write, and that csync2 may not replicate. One list,
//! read by the agent (which refuses the write) and the controller (which refuses the
//! setting), so the two can never disagree.

/// Prefixes (of a path as the host, or any chroot on it, sees it) where a file is run,
/// loaded or obeyed as root later: cron, init, systemd, login shells and PAM, sudo, the
/// dynamic loader and name service, module and device hooks, log rotation's scripts,
/// apt's hooks, root's own dot files and SSH settings, the account databases (a new
/// uid-0 account is a root login), and csync2's configuration (its `action` blocks
/// run commands as root). Since every tail of a path is judged, `/lib/x/` also stands
/// for `/usr/lib/x/` and `/usr/local/lib/x/`.
pub const RUNS_LATER: &[&str] = &[
    "/etc/cron",
    "/etc/anacrontab",
    "/var/spool/cron",
    "/etc/init.d/",
    "/etc/init/",
    // rc.local, rc?.d, and Red Hat's /etc/rc.d/init.d (with its `functions` library).
    "/etc/rc",
    "/etc/systemd/",
    "/lib/systemd/",
    "/usr/lib/systemd/",
    // Sourced as shell code by Debian's init scripts and named by units' EnvironmentFile.
    "/etc/default/",
    // The same on Red Hat.
    "/etc/sysconfig/",
    // init-functions and its init-functions.d hooks, sourced by every LSB init script.
    "/lib/lsb/",
    // kernel.core_pattern = |program (and kernel.modprobe) make the kernel run it as root.
    "/etc/sysctl",
    // systemd-sysctl's other directories, for the same reason.
    "/lib/sysctl.d/",
    "/run/sysctl.d/",
    "/etc/profile",
    "/etc/bash.bashrc",
    // Red Hat's bash.bashrc, read by root's interactive shells.
    "/etc/bashrc",
    "/etc/environment",
    "/etc/pam.d/",
    "/etc/security/",
    "/etc/sudoers",
    "/etc/ld.so.",
    "/etc/nsswitch.conf",
    "/etc/modprobe.d/",
    "/etc/modules-load.d/",
    "/etc/udev/",
    // The packaged halves of modprobe's `install` commands and udev's `RUN` rules.
    "/lib/modprobe.d/",
    "/lib/modules-load.d/",
    "/lib/udev/",
    // Interface hooks: ifupdown's if-*.d scripts and `up` lines, NetworkManager's
    // dispatcher scripts, dhclient's hooks and `script`.
    "/etc/network/",
    "/etc/NetworkManager/dispatcher.d/",
    "/etc/dhcp/",
    // Each service line names a program inetd or xinetd runs.
    "/etc/inetd.conf",
    "/etc/xinetd",
    // Run by pam_motd as root at every login (Ubuntu).
    "/etc/update-motd.d/",
    // Run as root by the package manager when a kernel is installed or removed.
    "/etc/kernel/",
    // Hooks and scripts update-initramfs runs, then copied into the boot image.
    "/etc/initramfs-tools/",
    "/etc/logrotate",
    "/etc/apt/",
    "/etc/yum",
    "/etc/dnf/",
    "/etc/ssh/",
    "/root/",
    "/etc/passwd",
    "/etc/shadow",
    "/etc/group",
    "/etc/gshadow",
    "/etc/csync2",
];

/// The agent's own files: its identity and configuration, its state and its binary.
pub const AGENT_OWN: &[&str] = &[
    "/etc/clustermgr",
    "/var/lib/clustermgr-agent",
    "/usr/local/bin/clustermgr-agent",
];

/// Whether `path` (absolute, normalized) runs later, on the host or inside any chroot
/// below it. Every tail of the path that starts at a component is judged, since a
/// directory such as `/opt/gluu-server` is the `/` of a container whose own cron and
/// init run what its `etc/cron.d` and `etc/init.d` hold, and the agent cannot know
/// every directory that some chroot uses as its root.
pub fn runs_later(path: &str) -> bool {
    // A prefix without a trailing `/` matches a whole component or its start
    // (`/etc/cron` is `/etc/cron.d/x` and `/etc/crontab`, `/etc/rc` is `/etc/rc3.d/x`).
    tails(path).any(|tail| RUNS_LATER.iter().any(|p| tail.starts_with(p)))
}

/// The first run-later or agent-owned path that `dir` contains or lies inside, for a
/// directory tree that will be replicated as a whole.
pub fn reserved_overlap(dir: &str) -> Option<&'static str> {
    let dir = dir.trim_end_matches('/');
    RUNS_LATER.iter().chain(AGENT_OWN).copied().find(|p| {
        // `dir` is an ancestor of `p` (replicating `/etc` carries `/etc/cron.d`) ...
        let p_dir = p.trim_end_matches('/');
        dir.is_empty()
            || p_dir.strip_prefix(dir).is_some_and(|r| r.starts_with('/'))
            // ... or inside it, at any chroot.
            || tails(dir).any(|t| t.starts_with(p) || format!("{t}/").starts_with(p))
    })
}

/// `/a/b/c`, `/b/c`, `/c`.
fn tails(path: &str) -> impl Iterator<Item = &str> {
    path.match_indices('/').map(move |(i, _)| &path[i..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_later_paths_are_found_in_any_chroot() {
        for p in [
            "/etc/cron.d/job",
            "/etc/crontab",
            "/opt/gluu-server/etc/cron.d/job",
            "/opt/gluu-server/etc/init.d/oxauth",
            "/srv/any/chroot/etc/systemd/system/x.service",
            "/etc/ld.so.preload",
            "/etc/ld.so.conf.d/x.conf",
            "/root/.bashrc",
            "/etc/csync2.cfg",
            "/etc/logrotate.d/nginx",
            "/opt/gluu-server/etc/passwd",
            // Sourced as shell code by root's init scripts, units and login shells.
            "/etc/default/x",
            "/opt/gluu-server/etc/default/oxauth",
            "/etc/sysconfig/network",
            "/lib/lsb/init-functions",
            "/usr/lib/lsb/init-functions.d/20-x",
            "/etc/rc.d/init.d/functions",
            "/etc/init.d/functions",
            "/etc/environment",
            "/etc/profile.d/x.sh",
            "/etc/bashrc",
            "/root/.profile",
            "/etc/security/pam_env.conf",
            // Obeyed by the kernel as root (kernel.core_pattern = |program).
            "/etc/sysctl.conf",
            "/etc/sysctl.d/x.conf",
            "/usr/lib/sysctl.d/x.conf",
            "/opt/gluu-server/etc/sysctl.d/x.conf",
            "/usr/lib/udev/rules.d/x.rules",
            "/etc/network/if-up.d/x",
            "/etc/xinetd.d/csync2",
            "/etc/update-motd.d/50-x",
            "/etc/kernel/postinst.d/x",
            "/etc/initramfs-tools/hooks/x",
        ] {
            assert!(runs_later(p), "{p}");
        }
        for p in [
            "/etc/nginx/nginx.conf",
            "/etc/hosts",
            "/opt/gluu-server/etc/gluu/conf/gluu-ldap.properties",
            "/etc/stunnel/redis.conf",
            "/opt/gluu-server/opt/gluu/jetty/oxauth/custom/x",
        ] {
            assert!(!runs_later(p), "{p}");
        }
    }

    #[test]
    fn replicated_trees_may_not_hold_or_sit_in_reserved_paths() {
        assert_eq!(reserved_overlap("/"), Some("/etc/cron"));
        assert_eq!(reserved_overlap("/etc"), Some("/etc/cron"));
        assert_eq!(reserved_overlap("/etc/clustermgr"), Some("/etc/clustermgr"));
        assert_eq!(
            reserved_overlap("/etc/clustermgr/sub"),
            Some("/etc/clustermgr")
        );
        assert_eq!(reserved_overlap("/etc/cron.d"), Some("/etc/cron"));
        assert_eq!(reserved_overlap("/etc/init.d"), Some("/etc/init.d/"));
        assert_eq!(
            reserved_overlap("/var/lib"),
            Some("/var/lib/clustermgr-agent")
        );
        assert_eq!(reserved_overlap("/usr/lib"), Some("/usr/lib/systemd/"));
        assert_eq!(reserved_overlap("/etc/gluu/conf"), None);
        assert_eq!(reserved_overlap("/opt/gluu/jetty/oxauth/custom"), None);
        assert_eq!(reserved_overlap("/opt/shibboleth-idp/conf"), None);
    }
}
