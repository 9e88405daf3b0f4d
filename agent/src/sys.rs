//! The few system calls the agent needs that std does not offer, through rustix's safe
//! wrappers.

/// Sends SIGKILL to a whole process group, so a command's children die with it.
pub fn kill_process_group(pgid: u32) {
    let Some(pgid) = i32::try_from(pgid)
        .ok()
        .filter(|p| *p > 1)
        .and_then(rustix::process::Pid::from_raw)
    else {
        return;
    };
    let _ = rustix::process::kill_process_group(pgid, rustix::process::Signal::KILL);
}

/// Waits for `child` (spawned in a process group of its own) with `finish`, on a
/// thread, for at most `timeout`; past it, kills the whole group and returns `None`.
pub fn wait_or_kill<T: Send + 'static>(
    child: std::process::Child,
    timeout: std::time::Duration,
    finish: impl FnOnce(std::process::Child) -> T + Send + 'static,
) -> Option<T> {
    let pgid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let _ = tx.send(finish(child));
    });
    let done = match rx.recv_timeout(timeout) {
        Ok(t) => Some(t),
        Err(_) => {
            kill_process_group(pgid);
            // Reaped, so no zombie is left; what it returns no longer counts.
            let _ = rx.recv();
            None
        }
    };
    let _ = waiter.join();
    done
}

/// The running C library's version when it is glibc (`2.36`), as `getconf` says it,
/// asked once.
pub fn glibc_version() -> Option<String> {
    static VERSION: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    VERSION
        .get_or_init(|| {
            // By its path: the agent runs as root, and PATH is the service's to set.
            let getconf = ["/usr/bin/getconf", "/bin/getconf"]
                .into_iter()
                .find(|p| std::path::Path::new(p).is_file())?;
            let out = std::process::Command::new(getconf)
                .arg("GNU_LIBC_VERSION")
                .stdin(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .output()
                .ok()
                .filter(|o| o.status.success())?;
            // "glibc 2.36"
            let text = String::from_utf8_lossy(&out.stdout);
            text.trim().strip_prefix("glibc ").map(str::to_string)
        })
        .clone()
}

/// Bytes free for an unprivileged user on the file system holding `path`.
pub fn free_bytes(path: &std::path::Path) -> std::io::Result<u64> {
    let st = rustix::fs::statvfs(path)?;
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}

#[cfg(test)]
mod tests {
    #[test]
    fn this_host_says_its_glibc_version() {
        let v = super::glibc_version().expect("a glibc host");
        assert!(v.starts_with("2."), "{v}");
    }
}
