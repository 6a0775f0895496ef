//! CPU time and resident memory of a process (this one by default), read from `/proc`.

#[derive(Debug, Clone, Copy)]
pub struct Usage {
    pub cpu_seconds: f64,
    pub resident_bytes: u64,
}

/// Linux fixes `USER_HZ` (the unit of `/proc/*/stat` times) at 100 on every
/// mainstream ABI, independent of the kernel's own tick rate.
const USER_HZ: f64 = 100.0;

/// `None` where `/proc` is unavailable (non-Linux): the metrics then stay at 0.
pub fn read_usage() -> Option<Usage> {
    usage_at("/proc/self")
}

/// Another process's usage (every thread of it), while it runs.
pub fn read_usage_of(pid: u32) -> Option<Usage> {
    usage_at(&format!("/proc/{pid}"))
}

fn usage_at(dir: &str) -> Option<Usage> {
    let stat = std::fs::read_to_string(format!("{dir}/stat")).ok()?;
    // Fields after the command name, which is parenthesised and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the full line, 12 and 13 here.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    let status = std::fs::read_to_string(format!("{dir}/status")).ok()?;
    let rss_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())?;
    Some(Usage { cpu_seconds: (utime + stime) / USER_HZ, resident_bytes: rss_kb * 1024 })
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_this_process() {
        let usage = super::read_usage().expect("linux /proc");
        assert!(usage.resident_bytes > 0);
        assert!(usage.cpu_seconds >= 0.0);
        let by_pid = super::read_usage_of(std::process::id()).expect("this process by its pid");
        assert!(by_pid.cpu_seconds >= usage.cpu_seconds);
        assert!(super::read_usage_of(u32::MAX).is_none(), "no such process");
    }
}
