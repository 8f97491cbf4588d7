//! Latency summaries for the benchmark programs.

use std::time::Duration;

/// Percentiles of a sample, in microseconds.
#[derive(Debug, Clone, Copy)]
pub struct Summary {
    pub n: usize,
    pub p50: f64,
    pub p99: f64,
    pub mean: f64,
}

/// Summarises `samples` (unsorted).
pub fn summarize(samples: &mut [Duration]) -> Summary {
    samples.sort_unstable();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let n = samples.len();
    if n == 0 {
        return Summary {
            n,
            p50: 0.0,
            p99: 0.0,
            mean: 0.0,
        };
    }
    let pick = |q: f64| us(samples[((n as f64 - 1.0) * q).round() as usize]);
    Summary {
        n,
        p50: pick(0.5),
        p99: pick(0.99),
        mean: samples.iter().map(|d| us(*d)).sum::<f64>() / n as f64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles() {
        let mut s: Vec<Duration> = (1..=100).rev().map(Duration::from_micros).collect();
        let sum = summarize(&mut s);
        assert_eq!(sum.n, 100);
        assert_eq!(sum.p50, 51.0);
        assert_eq!(sum.p99, 99.0);
        assert!((sum.mean - 50.5).abs() < 1e-9);
    }
}
