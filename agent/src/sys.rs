//! The few libc calls the agent needs that std does not offer.
#![allow(
    unsafe_code,
    reason = "thin, checked wrappers over libc calls std lacks"
)]

/// Sends SIGKILL to a whole process group, so a command's children die with it.
pub fn kill_process_group(pgid: u32) {
    let Ok(pgid) = libc::pid_t::try_from(pgid) else {
        return;
    };
    if pgid <= 1 {
        return;
    }
    // SAFETY: kill(2) has no memory-safety preconditions; a negative pid names a group.
    unsafe {
        libc::kill(-pgid, libc::SIGKILL);
    }
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

/// The running C library's version when it is glibc.
pub fn glibc_version() -> Option<String> {
    // SAFETY: gnu_get_libc_version returns a pointer to a static NUL-terminated string.
    let ptr = unsafe { gnu_get_libc_version() };
    if ptr.is_null() {
        return None;
    }
    // SAFETY: checked non-null above; the string is static and NUL-terminated.
    let s = unsafe { std::ffi::CStr::from_ptr(ptr) };
    s.to_str().ok().map(str::to_string)
}

/// Bytes free for an unprivileged user on the file system holding `path`.
pub fn free_bytes(path: &std::path::Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::other("a path with a NUL byte"))?;
    // SAFETY: an all-zero statvfs is a valid value for statvfs(3) to overwrite.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is NUL-terminated and `st` is a valid, writable statvfs.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    #[allow(
        clippy::useless_conversion,
        reason = "fsblkcnt_t and c_ulong are narrower than u64 on 32-bit targets"
    )]
    Ok(u64::from(st.f_bavail).saturating_mul(u64::from(st.f_frsize)))
}

unsafe extern "C" {
    fn gnu_get_libc_version() -> *const libc::c_char;
}
