//! Latencies in an HDR histogram (microseconds), summarized as the
//! percentiles a benchmark report quotes.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};
use serde::{Deserialize, Serialize};

/// Up to 10 minutes, 3 significant digits.
const HIGHEST_MICROS: u64 = 600_000_000;

#[derive(Debug, Clone)]
pub struct Latency(Histogram<u64>);

impl Default for Latency {
    fn default() -> Self {
        // The bounds are constants within hdrhistogram's valid range.
        Latency(Histogram::new_with_bounds(1, HIGHEST_MICROS, 3).expect("valid histogram bounds"))
    }
}

/// Milliseconds at each percentile.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Percentiles {
    pub samples: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

impl Latency {
    pub fn record(&mut self, elapsed: std::time::Duration) {
        let micros = (elapsed.as_micros() as u64).clamp(1, HIGHEST_MICROS);
        // Clamped into range, so recording cannot fail.
        let _ = self.0.record(micros);
    }

    pub fn merge(&mut self, other: &Latency) {
        let _ = self.0.add(&other.0);
    }

    pub fn summary(&self) -> Percentiles {
        let ms = |micros: u64| micros as f64 / 1000.0;
        Percentiles {
            samples: self.0.len(),
            p50_ms: ms(self.0.value_at_quantile(0.50)),
            p90_ms: ms(self.0.value_at_quantile(0.90)),
            p99_ms: ms(self.0.value_at_quantile(0.99)),
            p999_ms: ms(self.0.value_at_quantile(0.999)),
            max_ms: ms(self.0.max()),
        }
    }

    /// The histogram as base64 (HdrHistogram V2), so child processes can
    /// hand their histograms to the parent without losing precision.
    pub fn encode(&self) -> String {
        let mut bytes = Vec::new();
        let _ = V2Serializer::new().serialize(&self.0, &mut bytes);
        B64.encode(bytes)
    }

    pub fn decode(text: &str) -> anyhow::Result<Latency> {
        let bytes = B64.decode(text)?;
        let histogram: Histogram<u64> = Deserializer::new()
            .deserialize(&mut bytes.as_slice())
            .map_err(|error| anyhow::anyhow!("decoding a latency histogram: {error:?}"))?;
        Ok(Latency(histogram))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn percentiles_follow_the_samples() {
        let mut latency = Latency::default();
        for ms in 1..=100 {
            latency.record(Duration::from_millis(ms));
        }
        let summary = latency.summary();
        assert_eq!(summary.samples, 100);
        assert!((summary.p50_ms - 50.0).abs() < 0.1, "{summary:?}");
        assert!((summary.p99_ms - 99.0).abs() < 0.1, "{summary:?}");
        assert!((summary.max_ms - 100.0).abs() < 0.1, "{summary:?}");
    }

    #[test]
    fn encoding_round_trips_and_merges() {
        let mut a = Latency::default();
        a.record(Duration::from_millis(2));
        let decoded = Latency::decode(&a.encode()).unwrap();
        let mut merged = Latency::default();
        merged.merge(&decoded);
        merged.merge(&a);
        assert_eq!(merged.summary().samples, 2);
    }
}
