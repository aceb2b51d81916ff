//! The process's limit on open files. Every client connection is a file:
//! under a soft limit of 1 024 (the default of many shells and of systemd
//! services) a portal would stop accepting connections at about a thousand
//! clients while the hard limit allows far more. Every service raises its
//! soft limit to the hard one when it starts, as Go's runtime does; the
//! load generator too, and it checks the portal's before a run.

/// The soft and hard limits on open files, or `None` where they cannot be read.
pub fn open_files() -> Option<(u64, u64)> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct it is given, which we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return None;
    }
    // rlim_t is u64 on Linux
    Some((limit.rlim_cur, limit.rlim_max))
}

/// Raise the soft limit on open files to the hard one (at most the
/// kernel's `fs.nr_open`, which an unlimited hard limit means); the soft
/// limit in force afterwards.
pub fn raise_open_files() -> Option<u64> {
    let (soft, hard) = open_files()?;
    let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(1 << 20);
    let target = hard.min(nr_open);
    if soft >= target {
        return Some(soft);
    }
    set_soft(target, hard).then_some(target).or(Some(soft))
}

fn set_soft(soft: u64, hard: u64) -> bool {
    let limit = libc::rlimit {
        rlim_cur: soft,
        rlim_max: hard,
    };
    // SAFETY: setrlimit only reads the struct it is given.
    unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 }
}

/// The soft limit on open files of process `pid`, from
/// `/proc/<pid>/limits` (`None` for a process gone or a line not found).
pub fn open_files_of(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    parse_limits(&text)
}

fn parse_limits(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    let soft = line
        .trim_start_matches("Max open files")
        .split_whitespace()
        .next()?;
    if soft == "unlimited" {
        return Some(u64::MAX);
    }
    soft.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soft_limit_is_raised_to_the_hard_one() {
        let (soft, hard) = open_files().unwrap();
        let low = hard.min(256);
        assert!(set_soft(low, hard), "lowering the soft limit");
        assert_eq!(open_files().unwrap().0, low);
        let raised = raise_open_files().unwrap();
        assert!(
            raised > low || hard <= 256,
            "{raised} after {low} (hard {hard})"
        );
        assert_eq!(open_files().unwrap(), (raised, hard));
        // as /proc tells another process
        assert_eq!(open_files_of(std::process::id()), Some(raised));
        let _ = set_soft(soft.max(raised), hard);
    }

    #[test]
    fn the_limits_file_is_read() {
        let text = "Limit                     Soft Limit           Hard Limit           Units     \n\
                    Max open files            20000                20000                files     \n";
        assert_eq!(parse_limits(text), Some(20000));
        assert_eq!(
            parse_limits(
                "Max open files            unlimited            unlimited            files"
            ),
            Some(u64::MAX)
        );
        assert_eq!(parse_limits("Max processes 10 10 processes"), None);
    }
}
