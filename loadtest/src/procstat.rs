//! What `/proc` says about a process: resident memory and CPU time.

/// Resident set size in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok()
}

/// User + system CPU time in seconds (of `pid`, or this process for `None`).
pub fn cpu_secs(pid: Option<u32>) -> Option<f64> {
    let path = pid.map_or("/proc/self/stat".to_string(), |p| format!("/proc/{p}/stat"));
    let stat = std::fs::read_to_string(path).ok()?;
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// CPU seconds used between two samples (at the 10 ms resolution of `/proc`'s ticks).
pub fn used(before: Option<f64>, after: Option<f64>) -> Option<f64> {
    Some(after? - before?)
}

/// CPU use between two samples, as a fraction of one core.
pub fn share(before: Option<f64>, after: Option<f64>, wall: f64) -> Option<f64> {
    Some(used(before, after)? / wall.max(1e-9))
}
