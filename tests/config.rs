//! Settings at startup: the TOML file, flags winning over it, and bad values refused with a
//! message naming the setting.

mod common;

use common::*;
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
