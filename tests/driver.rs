//! The io driver with io_uring refused for real (a seccomp filter in the server's process, as
//! a container's default profile installs): `auto` runs on epoll and says why once, at warn;
//! `--driver uring` refuses to start naming the cause; `herald_driver` tells which driver
//! each worker runs; and `--version` says what the binary is.

mod common;

use std::process::Command;
use std::time::Instant;

use common::*;

/// A herald command whose `io_uring_setup` fails with `errno`.
fn refused(errno: i32) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_herald"));
    common::seccomp::refuse_uring(&mut cmd, errno);
    cmd
}

/// Runs `cmd` with `args` until it exits (it must, within the deadline): status and stderr.
fn run_to_exit(cmd: Command, args: &[&str]) -> (std::process::ExitStatus, String) {
    let (mut child, log) = spawn_logged(cmd, args);
    let deadline = Instant::now() + DEADLINE;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("herald {args:?} did not exit");
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    // The reader thread ends with the pipe: every line is there.
    (status, log.iter().collect::<Vec<_>>().join("\n"))
}

/// The `herald_driver` samples: (worker, driver) pairs whose value is 1.
fn drivers_in_metrics(s: &Server) -> Vec<(String, String)> {
    let text = request(s, "GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n").text();
    let mut out: Vec<(String, String)> = text
        .lines()
        .filter_map(|l| l.strip_prefix("herald_driver{driver=\""))
        .filter_map(|l| {
            let (driver, rest) = l.split_once("\",worker=\"")?;
            let (worker, value) = rest.split_once("\"} ")?;
            (value == "1").then(|| (worker.to_string(), driver.to_string()))
        })
        .collect();
    out.sort();
    out
}

fn epoll_on(workers: usize) -> Vec<(String, String)> {
    (0..workers).map(|w| (w.to_string(), "epoll".to_string())).collect()
}

#[test]
fn auto_falls_back_to_epoll_and_says_once_that_a_seccomp_filter_refused_io_uring() {
    for (errno, name) in [(libc::EPERM, "EPERM"), (libc::ENOSYS, "ENOSYS")] {
        let s = Server::start_command(refused(errno), &["--driver", "auto", "--workers", "2"]);
        let why: Vec<&String> = s.startup.iter().filter(|l| l.contains("io_uring unavailable")).collect();
        assert_eq!(why.len(), 1, "one warning for all workers: {:?}", s.startup);
        assert!(why[0].contains("WARN"), "at warn: {}", why[0]);
        assert!(why[0].contains(&format!("io_uring was refused ({name}) by a seccomp filter")), "{}", why[0]);
        assert_eq!(drivers_in_metrics(&s), epoll_on(2));

        // And it serves: an event published on one connection reaches a stream on another.
        let mut sub = SseClient::open(&s, "/sub/fallback", &[]);
        publish_ok(&s, "fallback", "on epoll");
        assert_eq!(sub.next_event().expect("event").data, "on epoll");
    }
}

#[test]
fn a_ring_that_can_be_made_but_not_used_is_refused_too() {
    // An outside attack: with only io_uring_enter refused, herald said "io_uring driver",
    // answered nothing and spun both cores; with io_uring_register refused, it blamed the
    // kernel's version.
    for call in [libc::SYS_io_uring_enter, libc::SYS_io_uring_register] {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_herald"));
        common::seccomp::refuse(&mut cmd, &[call], libc::EPERM);
        let s = Server::start_command(cmd, &["--driver", "auto", "--workers", "2"]);
        let why: Vec<&String> = s.startup.iter().filter(|l| l.contains("io_uring unavailable")).collect();
        assert_eq!(why.len(), 1, "call {call}: {:?}", s.startup);
        assert!(why[0].contains("io_uring was refused (EPERM) by a seccomp filter"), "call {call}: {}", why[0]);
        assert_eq!(drivers_in_metrics(&s), epoll_on(2));
        let r = request(&s, "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n");
        assert_eq!(r.status, 200);

        let mut cmd = Command::new(env!("CARGO_BIN_EXE_herald"));
        common::seccomp::refuse(&mut cmd, &[call], libc::EPERM);
        let (status, log) = run_to_exit(cmd, &["--driver", "uring"]);
        assert!(!status.success() && log.contains("io_uring requested but unavailable: io_uring was refused"), "{log}");
    }
}

#[test]
fn driver_uring_refuses_to_start_and_names_the_cause() {
    let (status, log) = run_to_exit(refused(libc::EPERM), &["--driver", "uring", "--workers", "2"]);
    assert!(!status.success(), "herald started without io_uring: {log}");
    assert!(
        log.contains("io_uring requested but unavailable: io_uring was refused (EPERM) by a seccomp filter"),
        "{log}"
    );
    assert!(!log.contains("listening on"), "{log}");
}

#[test]
fn driver_epoll_never_touches_io_uring_and_says_so_in_metrics() {
    // Under the filter too: an explicit epoll asks nothing of io_uring, so nothing warns.
    let s = Server::start_command(refused(libc::EPERM), &["--driver", "epoll", "--workers", "2"]);
    assert!(!s.startup.iter().any(|l| l.contains("io_uring")), "{:?}", s.startup);
    assert_eq!(drivers_in_metrics(&s), epoll_on(2));
}

#[test]
fn auto_takes_io_uring_where_the_host_allows_it() {
    if !uring_available() {
        return;
    }
    let s = Server::start_command(Command::new(env!("CARGO_BIN_EXE_herald")), &["--driver", "auto", "--workers", "2"]);
    assert!(!s.startup.iter().any(|l| l.contains("io_uring unavailable")), "{:?}", s.startup);
    let uring: Vec<(String, String)> = (0..2).map(|w| (w.to_string(), "io_uring".to_string())).collect();
    assert_eq!(drivers_in_metrics(&s), uring);
}

#[test]
fn version_names_the_revision_the_target_and_the_drivers() {
    let out = Command::new(env!("CARGO_BIN_EXE_herald")).arg("--version").output().expect("run");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let first = text.lines().next().unwrap_or_default();
    assert!(first.starts_with(&format!("herald {} (git ", env!("CARGO_PKG_VERSION"))), "{text}");
    assert!(text.contains("target: x86_64-") || text.contains("target: aarch64-"), "{text}");
    assert!(text.contains("linked"), "{text}");
    assert!(text.contains("io drivers: io_uring"), "{text}");
}
