//! Latency samples and their percentiles.

use std::time::Duration;

/// A set of latency samples. Percentiles use the nearest-rank method on the
/// sorted samples.
#[derive(Debug, Default, Clone)]
pub struct Latencies {
    samples: Vec<Duration>,
}

impl Latencies {
    /// Creates an empty set with room for `capacity` samples.
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            samples: Vec::with_capacity(capacity),
        }
    }

    /// Adds one sample.
    pub fn record(&mut self, sample: Duration) {
        self.samples.push(sample);
    }

    /// Moves every sample of `other` into this set.
    pub fn merge(&mut self, other: Latencies) {
        self.samples.extend(other.samples);
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// Returns whether the set has no sample.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// Summarizes the samples; `None` when there is none.
    pub fn summary(&self) -> Option<Summary> {
        if self.samples.is_empty() {
            return None;
        }
        let mut sorted = self.samples.clone();
        sorted.sort_unstable();
        let total: Duration = sorted.iter().sum();
        let count = u32::try_from(sorted.len()).unwrap_or(u32::MAX);
        Some(Summary {
            count: sorted.len(),
            min: sorted[0],
            p50: nearest_rank(&sorted, 50.0),
            p99: nearest_rank(&sorted, 99.0),
            max: sorted[sorted.len() - 1],
            mean: total / count,
        })
    }
}

/// Percentiles of a set of latency samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// Number of samples.
    pub count: usize,
    /// Smallest sample.
    pub min: Duration,
    /// Median.
    pub p50: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// Largest sample.
    pub max: Duration,
    /// Arithmetic mean.
    pub mean: Duration,
}

impl Summary {
    /// Converts the summary to a JSON object with every value in
    /// microseconds.
    pub fn to_json_micros(&self) -> serde_json::Value {
        serde_json::json!({
            "count": self.count,
            "min_us": micros(self.min),
            "p50_us": micros(self.p50),
            "p99_us": micros(self.p99),
            "max_us": micros(self.max),
            "mean_us": micros(self.mean),
        })
    }
}

/// Converts a duration to microseconds, with fractions.
pub fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// Returns the sample at percentile `p` (0-100] of `sorted`, which must be
/// sorted and non-empty.
fn nearest_rank(sorted: &[Duration], p: f64) -> Duration {
    let n = sorted.len() as f64;
    let rank = (p / 100.0 * n).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set_of_millis(values: &[u64]) -> Latencies {
        let mut set = Latencies::default();
        for &v in values {
            set.record(Duration::from_millis(v));
        }
        set
    }

    #[test]
    fn summary_empty_is_none() {
        assert!(Latencies::default().summary().is_none());
    }

    #[test]
    fn summary_percentiles_nearest_rank() {
        let values: Vec<u64> = (1..=100).rev().collect();
        let summary = set_of_millis(&values).summary().expect("100 samples");
        assert_eq!(summary.count, 100);
        assert_eq!(summary.min, Duration::from_millis(1));
        assert_eq!(summary.p50, Duration::from_millis(50));
        assert_eq!(summary.p99, Duration::from_millis(99));
        assert_eq!(summary.max, Duration::from_millis(100));
    }

    #[test]
    fn summary_single_sample() {
        let summary = set_of_millis(&[7]).summary().expect("one sample");
        assert_eq!(summary.p50, Duration::from_millis(7));
        assert_eq!(summary.p99, Duration::from_millis(7));
        assert_eq!(summary.mean, Duration::from_millis(7));
    }

    #[test]
    fn merge_keeps_all_samples() {
        let mut a = set_of_millis(&[1, 2]);
        a.merge(set_of_millis(&[3]));
        assert_eq!(a.len(), 3);
        assert_eq!(
            a.summary().expect("three samples").max,
            Duration::from_millis(3)
        );
    }
}
