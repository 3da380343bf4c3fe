//! Latency histograms (hdrhistogram, microseconds, 3 significant digits) and their exchange format
//! between worker processes.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Highest latency recorded: one hour, in microseconds (larger values are clamped).
const MAX_US: u64 = 3_600_000_000;

/// A new, empty histogram of microseconds.
pub fn histogram() -> Histogram<u64> {
    // The bounds are constants that hdrhistogram accepts (low 1, high > 2 × low, 3 digits).
    Histogram::new_with_bounds(1, MAX_US, 3).unwrap_or_else(|_| {
        Histogram::new(3).unwrap_or_else(|_| unreachable!("3 significant digits are valid"))
    })
}

/// Records `us` (clamped into range).
pub fn record(histogram: &mut Histogram<u64>, us: u64) {
    histogram.saturating_record(us.clamp(1, MAX_US));
}

/// A histogram as (value, count) pairs, to cross process boundaries in JSON.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HistData {
    /// Recorded values (microseconds) and how many times each was seen.
    pub buckets: Vec<(u64, u64)>,
}

/// Exports the recorded values of `histogram`.
pub fn export(histogram: &Histogram<u64>) -> HistData {
    HistData {
        buckets: histogram
            .iter_recorded()
            .map(|v| (v.value_iterated_to(), v.count_at_value()))
            .collect(),
    }
}

/// Adds exported values into `histogram`.
pub fn import(histogram: &mut Histogram<u64>, data: &HistData) {
    for &(value, count) in &data.buckets {
        let _ = histogram.record_n(value.clamp(1, MAX_US), count);
    }
}

/// Percentiles of a histogram in milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Values recorded.
    pub count: u64,
    /// Median, ms.
    pub p50_ms: f64,
    /// 90th percentile, ms.
    pub p90_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// 99.9th percentile, ms.
    pub p999_ms: f64,
    /// Largest, ms.
    pub max_ms: f64,
    /// Mean, ms.
    pub mean_ms: f64,
}

/// Summarises `histogram`.
pub fn summary(histogram: &Histogram<u64>) -> Summary {
    if histogram.is_empty() {
        return Summary::default();
    }
    let ms = |us: u64| us as f64 / 1000.0;
    Summary {
        count: histogram.len(),
        p50_ms: ms(histogram.value_at_quantile(0.50)),
        p90_ms: ms(histogram.value_at_quantile(0.90)),
        p99_ms: ms(histogram.value_at_quantile(0.99)),
        p999_ms: ms(histogram.value_at_quantile(0.999)),
        max_ms: ms(histogram.max()),
        mean_ms: histogram.mean() / 1000.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn export_import_round_trip() {
        let mut h = histogram();
        for us in [5, 10, 10, 2_000, 90_000] {
            record(&mut h, us);
        }
        record(&mut h, 0);
        record(&mut h, u64::MAX);
        let mut copy = histogram();
        import(&mut copy, &export(&h));
        assert_eq!(copy.len(), 7);
        assert_eq!(summary(&copy).p50_ms, summary(&h).p50_ms);
        assert!(summary(&copy).max_ms >= 3_600_000.0 * 0.999);
    }
}
