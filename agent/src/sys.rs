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

unsafe extern "C" {
    fn gnu_get_libc_version() -> *const libc::c_char;
}
