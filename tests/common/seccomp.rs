//! Runs the tests' herald with io_uring refused for real: a seccomp filter, installed in the
//! child between fork and exec, answers `io_uring_setup` with an errno (as Docker's default
//! profile does since Engine 25), and allows every other call.

use std::os::unix::process::CommandExt;
use std::process::Command;

/// The audit architecture a filter must check before trusting a system-call number.
#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xC000_003E;
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xC000_00B7;

// Offsets into `struct seccomp_data`: the call's number, then its architecture.
const NR: u32 = 0;
const ARCH: u32 = 4;

const LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
const JEQ_K: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
const RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;

fn op(code: u16, jt: u8, jf: u8, k: u32) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

/// `HERALD_TEST_REFUSE_URING=eperm` (or `enosys`) runs every test's herald under the filter,
/// so the whole black-box suite can be run with io_uring refused; unset, nothing changes.
pub fn from_env() -> Option<i32> {
    match std::env::var("HERALD_TEST_REFUSE_URING").ok()?.as_str() {
        "eperm" => Some(libc::EPERM),
        "enosys" => Some(libc::ENOSYS),
        other => panic!("HERALD_TEST_REFUSE_URING={other:?}: use eperm or enosys"),
    }
}

/// Makes `cmd`'s process see `io_uring_setup` fail with `errno`.
pub fn refuse_uring(cmd: &mut Command, errno: i32) {
    refuse(cmd, &[libc::SYS_io_uring_setup], errno);
}

/// Makes `cmd`'s process see each of the system calls `calls` fail with `errno`.
pub fn refuse(cmd: &mut Command, calls: &[libc::c_long], errno: i32) {
    let n = calls.len();
    assert!((1..200).contains(&n));
    let mut program = vec![
        op(LD_W_ABS, 0, 0, ARCH),
        // Another architecture's numbers mean other calls: let them through untouched.
        op(JEQ_K, 0, n as u8 + 1, AUDIT_ARCH),
        op(LD_W_ABS, 0, 0, NR),
    ];
    // The i-th comparison jumps over the ones after it and the allow, to the refusal.
    for (i, &nr) in calls.iter().enumerate() {
        program.push(op(JEQ_K, (n - i) as u8, 0, nr as u32));
    }
    program.push(op(RET_K, 0, 0, libc::SECCOMP_RET_ALLOW));
    program.push(op(RET_K, 0, 0, libc::SECCOMP_RET_ERRNO | (errno as u32 & libc::SECCOMP_RET_DATA)));
    // SAFETY: the closure runs in the forked child before exec and only makes two prctl
    // calls (async-signal-safe) on memory the closure owns: `program` is moved into it and outlives both calls.
    unsafe {
        cmd.pre_exec(move || {
            let prog = libc::sock_fprog { len: program.len() as u16, filter: program.as_ptr() as *mut _ };
            // An unprivileged process may install a filter only without gaining privileges.
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
                || libc::prctl(libc::PR_SET_SECCOMP, libc::SECCOMP_MODE_FILTER, &prog as *const libc::sock_fprog) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// A `Command` for the herald binary, under the filter when the environment asks for it.
pub fn herald() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_herald"));
    if let Some(errno) = from_env() {
        refuse_uring(&mut cmd, errno);
    }
    cmd
}
