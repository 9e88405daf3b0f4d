//! `old-kernel PROGRAM [ARGS...]` runs PROGRAM as if on Linux 3.10, CentOS 7's kernel:
//! every system call added after 3.10 fails with ENOSYS, as it does there. The
//! packaging test runs the shipped binaries under it, so that a dependency relying on
//! a newer call without a fallback (getrandom, statx, pidfd_open, clone3...) is caught
//! here and not on a node. Only the x86_64 call table is known.

use std::os::unix::process::CommandExt;

/// The first x86_64 system call after Linux 3.10 (`sched_setattr`, 3.14). The table
/// only grows, so every number from here on is newer, x32 numbers included.
const FIRST_AFTER_3_10: u32 = 314;
const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
const PR_SET_NO_NEW_PRIVS: libc::c_int = 38;
const PR_SET_SECCOMP: libc::c_int = 22;

fn main() -> std::process::ExitCode {
    let mut args = std::env::args_os().skip(1);
    let Some(program) = args.next() else {
        eprintln!("usage: old-kernel PROGRAM [ARGS...]");
        return std::process::ExitCode::from(2);
    };
    if let Err(e) = refuse_new_system_calls() {
        eprintln!("old-kernel: cannot install the seccomp filter: {e}");
        return std::process::ExitCode::from(2);
    }
    let e = std::process::Command::new(&program).args(args).exec();
    eprintln!("old-kernel: cannot run {}: {e}", program.to_string_lossy());
    std::process::ExitCode::from(127)
}

fn refuse_new_system_calls() -> std::io::Result<()> {
    let op = |code: u32, k: u32, jt: u8, jf: u8| libc::sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    };
    let mut program = [
        // seccomp_data.arch: another ABI's numbers mean other calls; leave them be.
        op(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, 4, 0, 0),
        op(
            libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K,
            AUDIT_ARCH_X86_64,
            0,
            3,
        ),
        // seccomp_data.nr
        op(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, 0, 0, 0),
        op(
            libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K,
            FIRST_AFTER_3_10,
            0,
            1,
        ),
        op(
            libc::BPF_RET | libc::BPF_K,
            libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32,
            0,
            0,
        ),
        op(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_ALLOW, 0, 0),
    ];
    let fprog = libc::sock_fprog {
        len: program.len() as u16,
        filter: program.as_mut_ptr(),
    };
    #[allow(
        unsafe_code,
        reason = "prctl is the only way to install a seccomp filter; `fprog` and the \
                  program it points to outlive both calls"
    )]
    // SAFETY: PR_SET_NO_NEW_PRIVS takes integer arguments only; PR_SET_SECCOMP reads
    // the sock_fprog and its filter array, both alive on this stack frame.
    let failed = unsafe {
        libc::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
            || libc::prctl(PR_SET_SECCOMP, libc::SECCOMP_MODE_FILTER, &fprog) != 0
    };
    if failed {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
