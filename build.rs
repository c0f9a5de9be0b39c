//! Build facts for `herald --version`: the git revision the binary was built from (with
//! `-modified` when the work tree differed from it), the target, how it was linked and the
//! profile. A build outside a git checkout (a source tarball) says `unknown`.

use std::path::PathBuf;
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn main() {
    // Only this project's own checkout: a source tree vendored inside another repository must
    // not report that repository's revision.
    let manifest = std::fs::canonicalize(std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default()).ok();
    let top = git(&["rev-parse", "--show-toplevel"]).and_then(|t| std::fs::canonicalize(t).ok());
    let own = manifest.is_some() && manifest == top;
    let rev = match git(&["rev-parse", "--short=12", "HEAD"]).filter(|_| own) {
        Some(rev) => {
            let modified = git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
            if modified { format!("{rev}-modified") } else { rev }
        }
        None => "unknown".into(),
    };
    // Rebuilt when HEAD moves or the index changes (a commit, a checkout, `git add`).
    if let Some(dir) = git(&["rev-parse", "--git-dir"]).filter(|_| own) {
        let dir = PathBuf::from(dir);
        for f in ["HEAD", "index"] {
            println!("cargo:rerun-if-changed={}", dir.join(f).display());
        }
    }
    println!("cargo:rerun-if-changed=src");
    let env = |k: &str| std::env::var(k).unwrap_or_default();
    let linked =
        if env("CARGO_CFG_TARGET_FEATURE").split(',').any(|f| f == "crt-static") { "static" } else { "dynamic" };
    let version = format!(
        "{} (git {rev})\ntarget: {}, {linked}ally linked, {} build\nio drivers: io_uring (probed at startup), epoll",
        env("CARGO_PKG_VERSION"),
        env("TARGET"),
        env("PROFILE"),
    );
    // A file rather than `rustc-env`, which cannot hold line breaks.
    let out = PathBuf::from(env("OUT_DIR")).join("version.txt");
    if let Err(e) = std::fs::write(&out, version) {
        panic!("cannot write {}: {e}", out.display());
    }
}
