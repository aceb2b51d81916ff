//! Latency summaries.

use serde::Serialize;
use std::time::Duration;

#[derive(Debug, Clone, Serialize, Default)]
pub struct Summary {
    pub count: usize,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1_000_000.0).round() / 1000.0
}

/// Nearest-rank percentiles of `samples`.
pub fn summarize(samples: &[Duration]) -> Summary {
    if samples.is_empty() {
        return Summary::default();
    }
    let mut s = samples.to_vec();
    s.sort();
    let at = |p: f64| {
        let rank = ((p / 100.0) * s.len() as f64).ceil() as usize;
        s[rank.clamp(1, s.len()) - 1]
    };
    Summary {
        count: s.len(),
        p50_ms: ms(at(50.0)),
        p90_ms: ms(at(90.0)),
        p99_ms: ms(at(99.0)),
        max_ms: ms(*s.last().unwrap()),
    }
}

/// The latency at every whole percentile, 1 to 100 (nearest rank), in ms:
/// the points of a CDF plot.
pub fn percentiles_ms(samples: &[Duration]) -> Vec<f64> {
    if samples.is_empty() {
        return Vec::new();
    }
    let mut s = samples.to_vec();
    s.sort();
    (1..=100)
        .map(|p| {
            let rank = (p * s.len()).div_ceil(100);
            ms(s[rank.clamp(1, s.len()) - 1])
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let samples: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        let s = summarize(&samples);
        assert_eq!(
            (s.count, s.p50_ms, s.p90_ms, s.p99_ms, s.max_ms),
            (100, 50.0, 90.0, 99.0, 100.0)
        );
        assert_eq!(summarize(&[]).count, 0);
        let one = summarize(&[Duration::from_micros(1500)]);
        assert_eq!((one.p50_ms, one.max_ms), (1.5, 1.5));
    }

    #[test]
    fn a_hundred_percentiles_end_at_the_maximum() {
        let samples: Vec<Duration> = (1..=200).rev().map(Duration::from_millis).collect();
        let p = percentiles_ms(&samples);
        assert_eq!(p.len(), 100);
        assert_eq!((p[0], p[49], p[99]), (2.0, 100.0, 200.0));
        assert!(percentiles_ms(&[]).is_empty());
        assert_eq!(percentiles_ms(&[Duration::from_millis(3)]), vec![3.0; 100]);
    }
}
