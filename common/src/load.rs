//! Where a worker's load comes from: CPU usage (OWT's default for portals and
//! conference agents) or a value the service sets itself (a count-based load
//! such as nodes in use / max nodes, and deterministic tests).

use crate::sync::Locked;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// A load in [0, 1], sampled once per report period.
pub trait LoadSource: Send + Sync + 'static {
    fn sample(&self) -> f64;
}

/// A load the service sets; cloning shares the value.
#[derive(Clone, Debug)]
pub struct ManualLoad(Arc<AtomicU64>);

impl ManualLoad {
    pub fn new(initial: f64) -> Self {
        ManualLoad(Arc::new(AtomicU64::new(clamp(initial).to_bits())))
    }

    pub fn set(&self, load: f64) {
        self.0.store(clamp(load).to_bits(), Ordering::Relaxed);
    }

    pub fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }
}

impl LoadSource for ManualLoad {
    fn sample(&self) -> f64 {
        self.get()
    }
}

fn clamp(v: f64) -> f64 {
    if v.is_nan() { 0.0 } else { v.clamp(0.0, 1.0) }
}

/// `1 - idle/total` over all cores since the previous sample, from
/// `/proc/stat`, rounded to 3 decimals.
#[derive(Debug, Default)]
pub struct CpuLoad {
    previous: Mutex<Option<(u64, u64)>>,
}

impl CpuLoad {
    pub fn new() -> Self {
        let load = CpuLoad::default();
        load.sample();
        load
    }
}

impl LoadSource for CpuLoad {
    fn sample(&self) -> f64 {
        let Some((idle, total)) = read_proc_stat() else {
            return 0.0;
        };
        let mut prev = self.previous.locked();
        let load = match *prev {
            Some((pidle, ptotal)) if total > ptotal => {
                let d_total = (total - ptotal) as f64;
                let d_idle = idle.saturating_sub(pidle) as f64;
                1.0 - d_idle / d_total
            }
            _ => 0.0,
        };
        *prev = Some((idle, total));
        (clamp(load) * 1000.0).round() / 1000.0
    }
}

/// (idle + iowait, total) jiffies of the aggregate "cpu" line.
fn read_proc_stat() -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    parse_cpu_line(text.lines().next()?)
}

fn parse_cpu_line(line: &str) -> Option<(u64, u64)> {
    let mut fields = line.split_whitespace();
    if fields.next()? != "cpu" {
        return None;
    }
    let values: Vec<u64> = fields.filter_map(|f| f.parse().ok()).collect();
    if values.len() < 4 {
        return None;
    }
    let idle = values[3] + values.get(4).copied().unwrap_or(0);
    Some((idle, values.iter().sum()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_load_is_shared_and_clamped() {
        let a = ManualLoad::new(0.2);
        let b = a.clone();
        b.set(0.5);
        assert_eq!(a.sample(), 0.5);
        a.set(7.0);
        assert_eq!(b.sample(), 1.0);
        a.set(f64::NAN);
        assert_eq!(b.sample(), 0.0);
    }

    #[test]
    fn cpu_line_parses() {
        let (idle, total) = parse_cpu_line("cpu  10 0 10 70 10 0 0 0 0 0").unwrap();
        assert_eq!((idle, total), (80, 100));
        assert!(parse_cpu_line("intr 1 2 3").is_none());
    }

    #[test]
    fn cpu_load_is_a_fraction() {
        let cpu = CpuLoad::new();
        let v = cpu.sample();
        assert!((0.0..=1.0).contains(&v), "{v}");
    }
}
