//! Order statistics of measured durations, in milliseconds.

use std::time::Duration;

/// Median, p99 and range of a set of runs.
#[derive(Debug, Clone, Copy)]
pub struct Summary {
    /// Number of runs.
    pub n: usize,
    /// Median (mean of the two middle values for an even count), ms.
    pub median: f64,
    /// 99th percentile (nearest rank), ms.
    pub p99: f64,
    /// Fastest run, ms.
    pub min: f64,
    /// Slowest run, ms.
    pub max: f64,
}

impl Summary {
    /// Summarises `runs` (at least one).
    pub fn of(runs: &[Duration]) -> Summary {
        let ms: Vec<f64> = runs.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
        let sorted = sorted(&ms);
        Summary {
            n: sorted.len(),
            median: median(&sorted),
            p99: percentile(&sorted, 99.0),
            min: sorted.first().copied().unwrap_or(f64::NAN),
            max: sorted.last().copied().unwrap_or(f64::NAN),
        }
    }

    /// As JSON.
    pub fn to_json(self) -> serde_json::Value {
        serde_json::json!({
            "n": self.n, "median_ms": self.median, "p99_ms": self.p99,
            "min_ms": self.min, "max_ms": self.max,
        })
    }
}

fn sorted(v: &[f64]) -> Vec<f64> {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s
}

/// Median of `v` (NaN when empty).
pub fn median(v: &[f64]) -> f64 {
    let s = sorted(v);
    match s.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

/// Nearest-rank percentile `p` of sorted `s`.
fn percentile(s: &[f64], p: f64) -> f64 {
    if s.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * s.len() as f64).ceil() as usize;
    s[rank.clamp(1, s.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_statistics() {
        let runs: Vec<Duration> = [5, 1, 4, 2, 3]
            .iter()
            .map(|ms| Duration::from_millis(*ms))
            .collect();
        let s = Summary::of(&runs);
        assert_eq!(
            (s.n, s.median, s.min, s.max, s.p99),
            (5, 3.0, 1.0, 5.0, 5.0)
        );
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert!(median(&[]).is_nan());
        let hundred: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&hundred, 99.0), 99.0);
    }
}
