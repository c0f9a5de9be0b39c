//! Settings at startup: the TOML file, flags winning over it, and bad values refused with a
//! message naming the setting.

mod common;

use common::*;
use std::io::Write;
use std::process::Command;

fn refused(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_herald")).args(args).output().expect("run herald");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn bad_values_are_refused_naming_the_setting() {
    for (args, setting) in [
        (&["--driver", "kqueue"][..], "driver"),
        (&["--heartbeat", "-1"][..], "heartbeat"),
        (&["--history-ttl", "0"][..], "history_ttl"),
        (&["--max-pending-bytes", "0"][..], "max_pending_bytes"),
        (&["--listen", "localhost"][..], "listen"),
        (&["--workers", "0"][..], "workers"),
    ] {
        let (code, stderr) = refused(args);
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert!(stderr.contains(&format!("`{setting}`")), "{args:?}: {stderr}");
    }
}

#[test]
fn the_config_file_sets_and_flags_win() {
    let dir = std::env::temp_dir().join(format!("herald-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("herald.toml");
    std::fs::write(&path, "sse_retry = 1.5\nhistory = 2\nheartbeat = 30\n").unwrap();
    let p = path.to_str().unwrap();
    let s = Server::start(&["--config", p, "--history", "3", "--workers", "2"]);
    for i in 0..5 {
        publish_ok(&s, "cfg", &format!("e{i}"));
    }
    // history = 3 from the flag (not 2 from the file): resuming from nothing-seen gives a gap
    // and the last three events; retry comes from the file.
    let first = publish_ok(&s, "cfg2", "x");
    let mut sub = SseClient::open(&s, "/sub/cfg", &[&format!("Last-Event-ID: {}", first.replace("-1", "-0"))]);
    let got = sub.take(4);
    assert_eq!(got[0].event.as_deref(), Some("herald.gap"));
    let data: Vec<&str> = got[1..].iter().map(|e| e.data.as_str()).collect();
    assert_eq!(data, ["e2", "e3", "e4"]);
    assert_eq!(sub.retry, Some(1500));

    std::fs::write(&path, "histroy = 2\n").unwrap();
    let (code, stderr) = refused(&["--config", p]);
    assert_eq!(code, 2);
    assert!(stderr.contains("histroy"), "{stderr}");
}

#[test]
fn startup_reports_driver_workers_and_limits() {
    for driver in drivers() {
        let s = Server::with(driver, 2, &[]);
        drop(s);
    }
    // The startup line comes before the address line; read it from a fresh process.
    let mut child = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["--listen", "127.0.0.1:0", "--workers", "2", "--driver", "epoll"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stderr));
    let started = lines.find_map(|l| l.ok().filter(|l| l.contains("started"))).expect("startup line");
    let _ = child.kill();
    let _ = child.wait();
    assert!(started.contains("epoll driver"), "{started}");
    assert!(started.contains("2 worker(s)"), "{started}");
    assert!(started.contains("open-files limit"), "{started}");
    assert!(started.contains("connections"), "{started}");
}

#[test]
fn secrets_come_from_files_and_the_environment_and_short_ones_are_warned_about() {
    let dir = std::env::temp_dir().join(format!("herald-secret-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("jwt-secret");
    let secret = "a-jwt-secret-of-32-bytes-or-more!";
    std::fs::write(&path, format!("{secret}\n")).unwrap();
    let key = "a-publish-key-from-the-env";
    let s = Server::start_env(&["--jwt-secret-file", path.to_str().unwrap()], &[("HERALD_PUBLISH_KEY", key)]);
    // The key from the environment is the one publishers need…
    let raw = |bearer: &str| {
        format!("POST /pub/news HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {bearer}\r\nContent-Length: 1\r\n\r\nx")
    };
    assert_eq!(request(&s, &raw(key)).status, 200);
    assert_eq!(request(&s, &raw("something-else")).status, 403);
    // …and tokens are checked with the secret from the file (without its newline).
    let token = herald::auth::jwt::sign(&serde_json::json!({"sub": "7"}), secret.as_bytes());
    let r =
        request(&s, &format!("GET /sub/user:7?timeout=0 HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {token}\r\n\r\n"));
    assert_eq!(r.status, 204, "{}", r.text());
    drop(s);
    let short = Server::start(&["--jwt-secret", "short"]);
    assert!(short.startup.iter().any(|l| l.contains("jwt_secret is shorter than 32 bytes")), "{:?}", short.startup);
    let long = Server::start(&["--jwt-secret", secret]);
    assert!(!long.startup.iter().any(|l| l.contains("shorter")), "{:?}", long.startup);
}

/// A memory cgroup limited to `bytes` (v2 where the memory controller is there, else v1),
/// removed on drop; `None` where this process may not make one (not root, read-only
/// cgroups), unless `HERALD_REQUIRE_CGROUP=1` (CI) makes that a failure.
struct MemoryGroup {
    dir: std::path::PathBuf,
}

impl MemoryGroup {
    fn new(bytes: u64) -> Option<MemoryGroup> {
        let name = format!("herald-test-{}-{bytes}", std::process::id());
        let v2 = std::fs::read_to_string("/sys/fs/cgroup/cgroup.subtree_control").is_ok_and(|c| c.contains("memory"));
        let (dir, file) = if v2 {
            (std::path::Path::new("/sys/fs/cgroup").join(name), "memory.max")
        } else {
            (std::path::Path::new("/sys/fs/cgroup/memory").join(name), "memory.limit_in_bytes")
        };
        let made = std::fs::create_dir(&dir).and_then(|()| std::fs::write(dir.join(file), bytes.to_string()));
        match made {
            Ok(()) => Some(MemoryGroup { dir }),
            Err(e) => {
                let _ = std::fs::remove_dir(&dir);
                assert!(
                    std::env::var("HERALD_REQUIRE_CGROUP").map_or(true, |v| v != "1"),
                    "HERALD_REQUIRE_CGROUP=1, but no memory cgroup could be made at {}: {e}",
                    dir.display()
                );
                let _ = writeln!(std::io::stderr(), "note: no memory cgroup here ({e}); skipping");
                None
            }
        }
    }

    /// A herald command that joins this group before it runs.
    fn command(&self) -> Command {
        let procs =
            std::ffi::CString::new(self.dir.join("cgroup.procs").into_os_string().into_encoded_bytes()).expect("path");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_herald"));
        // SAFETY: runs in the forked child before exec: open, write and close only
        // (async-signal-safe), on memory the closure owns.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || {
                let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
                // "0" moves the writing process itself.
                let ok = fd >= 0 && libc::write(fd, b"0".as_ptr().cast(), 1) == 1;
                if fd >= 0 {
                    libc::close(fd);
                }
                if ok { Ok(()) } else { Err(std::io::Error::last_os_error()) }
            });
        }
        cmd
    }
}

impl Drop for MemoryGroup {
    fn drop(&mut self) {
        // The group empties when herald exits; removing it may need a moment after that.
        let deadline = std::time::Instant::now() + DEADLINE;
        while std::fs::remove_dir(&self.dir).is_err() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

#[test]
fn the_default_history_budget_is_a_quarter_of_the_cgroups_memory_limit() {
    // Outside attacks: in a 200 MiB container the budget was a quarter of the host's memory,
    // and herald was OOM-killed as its history grew; then, in a 64 MiB one, a 64 MiB floor
    // under the budget did the same.
    for limit in [64u64 << 20, 256 << 20] {
        let Some(group) = MemoryGroup::new(limit) else { return };
        let mut s = Server::start_command(group.command(), &["--workers", "2"]);
        let mut p = Publisher::new(&s);
        let big = "x".repeat(60 * 1024);
        // History for one and a half budgets asked for.
        let events = (limit * 3 / 8) / (60 * 1024);
        for i in 0..events {
            p.publish(&format!("big{}", i % 40), &big);
        }
        wait_until("evictions counted", || metric(&s, "herald_history_evictions_total") > 0.0);
        let held = metric(&s, "herald_history_bytes");
        assert!(held <= (limit / 4) as f64, "history holds {held} bytes, over a quarter of {limit}");
        assert!(s.child.try_wait().expect("wait").is_none(), "herald died in a {limit}-byte group");
        drop(s);
        drop(group);
    }
}
