//! Which io driver the workers run on, and why: io_uring is probed once at startup — the
//! ring, then every operation herald's runtime submits — and a refusal is explained (a
//! seccomp filter, `kernel.io_uring_disabled`, a kernel too old, locked-memory limits), so an
//! operator reading the one warning knows what to change.

use std::fmt;

use io_uring::opcode;

/// The io_uring operations monoio submits on herald's paths: accepting, reading and writing
/// sockets (`Recv`/`Send`, `Read`/`Write`, vectored writes of frames), the driver's own
/// wake-ups (`Read` of its eventfd, `PollAdd`), timers (`Timeout`), cancelling an
/// operation a dropped future left behind, and closing descriptors.
const NEEDED: [(u8, &str); 11] = [
    (opcode::Accept::CODE, "ACCEPT"),
    (opcode::AsyncCancel::CODE, "ASYNC_CANCEL"),
    (opcode::Close::CODE, "CLOSE"),
    (opcode::PollAdd::CODE, "POLL_ADD"),
    (opcode::Read::CODE, "READ"),
    (opcode::Readv::CODE, "READV"),
    (opcode::Recv::CODE, "RECV"),
    (opcode::Send::CODE, "SEND"),
    (opcode::Timeout::CODE, "TIMEOUT"),
    (opcode::Write::CODE, "WRITE"),
    (opcode::Writev::CODE, "WRITEV"),
];

/// Why io_uring cannot be used here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// `kernel.io_uring_disabled` (Linux 6.6+) is 2, or 1 and this process may not use it.
    Sysctl(u8),
    /// An io_uring call was refused while a seccomp filter is in force: a container's security
    /// profile (Docker's default since Engine 25, containerd 2.0's) or a systemd filter.
    Seccomp { errno: i32 },
    /// Refused with EPERM for another reason (an LSM policy such as SELinux's io_uring class).
    Denied,
    /// The kernel has no io_uring (older than 5.1, or built without CONFIG_IO_URING).
    NoKernelSupport,
    /// Creating the ring needs more locked memory than RLIMIT_MEMLOCK allows (kernels before
    /// 5.12 charge rings to it).
    LockedMemory,
    /// The ring works, but the kernel cannot list its operations (IORING_REGISTER_PROBE is
    /// Linux 5.6+), so herald cannot know that the ones it submits exist.
    NoProbe { errno: i32 },
    /// The kernel lacks operations herald submits (older kernels); their names.
    MissingOps(Vec<&'static str>),
    /// Any other failure to create the ring.
    Other { errno: i32 },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Sysctl(v) => write!(
                f,
                "io_uring is disabled by the sysctl kernel.io_uring_disabled = {v} (set it to 0 to allow it{})",
                if *v == 1 { ", or add herald's group to kernel.io_uring_group" } else { "" }
            ),
            Refusal::Seccomp { errno } => write!(
                f,
                "io_uring was refused ({}) by a seccomp filter: a container's security profile \
                 (Docker's default refuses io_uring since Engine 25; see contrib/seccomp/herald.json) \
                 or a SystemCallFilter",
                errno_name(*errno)
            ),
            Refusal::Denied => write!(
                f,
                "io_uring was refused (EPERM) without a seccomp filter or the sysctl: a security \
                 module's policy (SELinux, AppArmor) forbids it"
            ),
            Refusal::NoKernelSupport => {
                write!(f, "this kernel has no io_uring (ENOSYS: older than 5.1 or built without it)")
            }
            Refusal::LockedMemory => write!(
                f,
                "io_uring_setup needs more locked memory than RLIMIT_MEMLOCK allows (ENOMEM; kernels before \
                 5.12): raise LimitMEMLOCK / ulimit -l"
            ),
            Refusal::NoProbe { errno } => write!(
                f,
                "the kernel cannot list its io_uring operations ({}; IORING_REGISTER_PROBE needs Linux 5.6+)",
                errno_name(*errno)
            ),
            Refusal::MissingOps(ops) => {
                write!(f, "the kernel's io_uring lacks operations herald submits: {}", ops.join(", "))
            }
            Refusal::Other { errno } => {
                write!(f, "io_uring failed: {}", std::io::Error::from_raw_os_error(*errno))
            }
        }
    }
}

fn errno_name(errno: i32) -> String {
    match errno {
        libc::EPERM => "EPERM".into(),
        libc::ENOSYS => "ENOSYS".into(),
        libc::EACCES => "EACCES".into(),
        libc::EINVAL => "EINVAL".into(),
        e => format!("errno {e}"),
    }
}

/// Names the cause of a failed io_uring call (setup, register or enter) from its errno, the
/// value of `kernel.io_uring_disabled` (None where the sysctl does not exist), whether this
/// process may use io_uring although that value is 1 (`exempt`: it has CAP_SYS_ADMIN, or is
/// in `kernel.io_uring_group`), and whether a seccomp filter is in force on it.
pub fn diagnose(errno: i32, sysctl: Option<u8>, exempt: bool, seccomp_filter: bool) -> Refusal {
    match errno {
        libc::EPERM | libc::EACCES => match sysctl {
            Some(2) => Refusal::Sysctl(2),
            Some(1) if !exempt => Refusal::Sysctl(1),
            _ if seccomp_filter => Refusal::Seccomp { errno },
            _ => Refusal::Denied,
        },
        // A filter may answer ENOSYS (so that callers fall back) as well as the kernel.
        libc::ENOSYS if seccomp_filter => Refusal::Seccomp { errno },
        libc::ENOSYS => Refusal::NoKernelSupport,
        libc::ENOMEM => Refusal::LockedMemory,
        errno => Refusal::Other { errno },
    }
}

/// What /proc/self/status says of this process: whether a seccomp filter is in force, and
/// whether `kernel.io_uring_disabled = 1` lets it use io_uring all the same (CAP_SYS_ADMIN in
/// its effective set, or `group` among its groups).
fn status(group: Option<u32>) -> (bool, bool) {
    let Ok(text) = std::fs::read_to_string("/proc/self/status") else { return (false, false) };
    let field = |name: &str| text.lines().find_map(|l| l.strip_prefix(name)).map(str::trim);
    let filter = field("Seccomp:") == Some("2");
    const CAP_SYS_ADMIN: u32 = 21;
    let admin =
        field("CapEff:").and_then(|v| u64::from_str_radix(v, 16).ok()).is_some_and(|c| c >> CAP_SYS_ADMIN & 1 == 1);
    let ids = |name: &str| -> Vec<u32> {
        field(name).map(|v| v.split_whitespace().filter_map(|g| g.parse().ok()).collect()).unwrap_or_default()
    };
    // Gid: real, effective, saved, file system; Groups: the supplementary ones.
    let in_group = group.is_some_and(|g| ids("Gid:").get(1) == Some(&g) || ids("Groups:").contains(&g));
    (filter, admin || in_group)
}

fn read_number(path: &str) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Creates a small ring, checks that the kernel has every operation herald submits, and runs
/// one (a no-op) through it: a filter may allow making a ring and refuse submitting to it.
pub fn probe() -> Result<(), Refusal> {
    let refused = |e: std::io::Error| {
        let errno = e.raw_os_error().unwrap_or(0);
        let sysctl = read_number("/proc/sys/kernel/io_uring_disabled").and_then(|v| u8::try_from(v).ok());
        let (filter, exempt) = status(read_number("/proc/sys/kernel/io_uring_group"));
        diagnose(errno, sysctl, exempt, filter)
    };
    let mut ring = io_uring::IoUring::new(4).map_err(refused)?;
    let mut probe = io_uring::Probe::new();
    if let Err(e) = ring.submitter().register_probe(&mut probe) {
        return Err(match refused(e) {
            // EINVAL here is a kernel without the probe; a refusal names its own cause.
            Refusal::Other { errno } => Refusal::NoProbe { errno },
            why => why,
        });
    }
    let missing: Vec<&'static str> =
        NEEDED.iter().filter(|(code, _)| !probe.is_supported(*code)).map(|&(_, name)| name).collect();
    if !missing.is_empty() {
        return Err(Refusal::MissingOps(missing));
    }
    crate::sys::uring_nop(&mut ring).map_err(refused)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eperm_is_blamed_on_the_sysctl_first_then_seccomp_then_a_security_module() {
        assert_eq!(diagnose(libc::EPERM, Some(2), true, true), Refusal::Sysctl(2));
        assert_eq!(diagnose(libc::EPERM, Some(1), false, false), Refusal::Sysctl(1));
        assert_eq!(diagnose(libc::EPERM, Some(0), false, true), Refusal::Seccomp { errno: libc::EPERM });
        assert_eq!(diagnose(libc::EPERM, None, false, true), Refusal::Seccomp { errno: libc::EPERM });
        assert_eq!(diagnose(libc::EPERM, Some(0), false, false), Refusal::Denied);
        // An outside attack: root (exempt from `1`) refused by a filter was told to change the sysctl.
        assert_eq!(diagnose(libc::EPERM, Some(1), true, true), Refusal::Seccomp { errno: libc::EPERM });
        assert_eq!(diagnose(libc::EPERM, Some(1), true, false), Refusal::Denied);
    }

    #[test]
    fn enosys_is_the_kernel_unless_a_filter_could_have_said_it() {
        assert_eq!(diagnose(libc::ENOSYS, None, false, false), Refusal::NoKernelSupport);
        assert_eq!(diagnose(libc::ENOSYS, None, false, true), Refusal::Seccomp { errno: libc::ENOSYS });
        assert_eq!(diagnose(libc::ENOMEM, Some(0), false, false), Refusal::LockedMemory);
        assert_eq!(diagnose(libc::EFAULT, None, false, false), Refusal::Other { errno: libc::EFAULT });
    }

    #[test]
    fn every_refusal_says_what_to_change() {
        assert!(Refusal::Sysctl(1).to_string().contains("kernel.io_uring_group"));
        assert!(Refusal::Seccomp { errno: libc::EPERM }.to_string().contains("seccomp"));
        assert!(Refusal::LockedMemory.to_string().contains("LimitMEMLOCK"));
        assert!(Refusal::MissingOps(vec!["SEND", "RECV"]).to_string().ends_with("SEND, RECV"));
    }

    #[test]
    fn each_needed_operation_is_listed_once() {
        let codes: std::collections::HashSet<u8> = NEEDED.iter().map(|n| n.0).collect();
        assert_eq!(codes.len(), NEEDED.len());
    }
}
