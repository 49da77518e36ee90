//! Counters, gauges and histograms, written by the engine thread and the HTTP handlers with
//! atomics, rendered in Prometheus' text format by `GET /metrics`.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

/// Upper bounds (seconds) of the latency histograms: 1 ms to 60 s.
const LATENCY_BUCKETS: [f64; 18] =
    [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 60.0];

/// A cumulative histogram over fixed buckets (plus `+Inf`).
pub struct Histogram {
    counts: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    /// Sum of the observations in nanoseconds.
    sum_ns: AtomicU64,
}

impl Histogram {
    fn new() -> Self {
        Histogram { counts: std::array::from_fn(|_| AtomicU64::new(0)), sum_ns: AtomicU64::new(0) }
    }

    pub fn observe(&self, seconds: f64) {
        let bucket = LATENCY_BUCKETS.iter().position(|&b| seconds <= b).unwrap_or(LATENCY_BUCKETS.len());
        self.counts[bucket].fetch_add(1, Relaxed);
        self.sum_ns.fetch_add((seconds * 1e9) as u64, Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Relaxed)).sum()
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (i, count) in self.counts.iter().enumerate() {
            cumulative += count.load(Relaxed);
            match LATENCY_BUCKETS.get(i) {
                Some(le) => {
                    let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
                }
                None => {
                    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
                }
            }
        }
        let _ = writeln!(out, "{name}_sum {}", self.sum_ns.load(Relaxed) as f64 / 1e9);
        let _ = writeln!(out, "{name}_count {cumulative}");
    }
}

/// Why requests ended, as counted in `nemo_requests_finished_total{reason}`.
pub const FINISH_REASONS: [&str; 4] = ["stop", "length", "cancelled", "error"];

/// Everything `/metrics` reports.
pub struct Metrics {
    /// HTTP responses by route and status: `(route, status) -> count`.
    http: Mutex<Vec<(&'static str, u16, u64)>>,
    pub finished: [AtomicU64; FINISH_REASONS.len()],
    pub prompt_tokens: AtomicU64,
    pub cached_prompt_tokens: AtomicU64,
    pub generation_tokens: AtomicU64,
    pub waiting: AtomicU64,
    /// Shared with the connection tasks, which count themselves out when they end.
    pub http_connections_open: Arc<AtomicU64>,
    pub running: AtomicU64,
    pub kv_blocks_used: AtomicU64,
    pub kv_blocks_total: AtomicU64,
    pub kv_blocks_cached: AtomicU64,
    pub steps: AtomicU64,
    pub preemptions: AtomicU64,
    /// The f64 bits of the admission's reserve ratio (0 with `--admission optimistic`).
    pub admission_reserve_ratio: AtomicU64,
    pub time_to_first_token: Histogram,
    pub inter_token_latency: Histogram,
    pub step_duration: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            http: Mutex::new(Vec::new()),
            finished: std::array::from_fn(|_| AtomicU64::new(0)),
            prompt_tokens: AtomicU64::new(0),
            cached_prompt_tokens: AtomicU64::new(0),
            generation_tokens: AtomicU64::new(0),
            waiting: AtomicU64::new(0),
            http_connections_open: Arc::new(AtomicU64::new(0)),
            running: AtomicU64::new(0),
            kv_blocks_used: AtomicU64::new(0),
            kv_blocks_total: AtomicU64::new(0),
            kv_blocks_cached: AtomicU64::new(0),
            steps: AtomicU64::new(0),
            preemptions: AtomicU64::new(0),
            admission_reserve_ratio: AtomicU64::new(0),
            time_to_first_token: Histogram::new(),
            inter_token_latency: Histogram::new(),
            step_duration: Histogram::new(),
        }
    }
}

impl Metrics {
    pub fn count_response(&self, route: &'static str, status: u16) {
        let mut http = self.http.lock().unwrap_or_else(|e| e.into_inner());
        match http.iter_mut().find(|(r, s, _)| *r == route && *s == status) {
            Some(entry) => entry.2 += 1,
            None => http.push((route, status, 1)),
        }
    }

    pub fn count_finished(&self, reason: &str) {
        if let Some(i) = FINISH_REASONS.iter().position(|r| *r == reason) {
            self.finished[i].fetch_add(1, Relaxed);
        }
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        {
            let mut http = self.http.lock().unwrap_or_else(|e| e.into_inner()).clone();
            http.sort();
            let _ = writeln!(
                out,
                "# HELP nemo_http_requests_total HTTP requests answered, by route and status.\n\
                 # TYPE nemo_http_requests_total counter"
            );
            for (route, status, n) in http {
                let _ = writeln!(out, "nemo_http_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}");
            }
        }
        let _ = writeln!(
            out,
            "# HELP nemo_requests_finished_total Generation requests ended, by reason.\n\
             # TYPE nemo_requests_finished_total counter"
        );
        for (reason, n) in FINISH_REASONS.iter().zip(&self.finished) {
            let _ = writeln!(out, "nemo_requests_finished_total{{reason=\"{reason}\"}} {}", n.load(Relaxed));
        }
        let mut scalar = |name: &str, kind: &str, help: &str, value: f64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
        };
        let get = |a: &AtomicU64| a.load(Relaxed) as f64;
        scalar("nemo_prompt_tokens_total", "counter", "Prompt tokens of finished requests.", get(&self.prompt_tokens));
        let cached = get(&self.cached_prompt_tokens);
        scalar("nemo_prefix_cache_hit_tokens_total", "counter", "Prompt tokens of finished requests taken from the prefix cache.", cached);
        scalar("nemo_generation_tokens_total", "counter", "Tokens generated.", get(&self.generation_tokens));
        let open = get(&self.http_connections_open);
        scalar("nemo_http_connections_open", "gauge", "HTTP connections open (at most --max-connections).", open);
        scalar("nemo_requests_waiting", "gauge", "Requests queued, not yet running.", get(&self.waiting));
        scalar("nemo_requests_running", "gauge", "Sequences in the running batch.", get(&self.running));
        scalar("nemo_kv_blocks_used", "gauge", "KV cache blocks held by sequences.", get(&self.kv_blocks_used));
        scalar("nemo_kv_blocks_total", "gauge", "KV cache blocks in the pool.", get(&self.kv_blocks_total));
        let registered = get(&self.kv_blocks_cached);
        scalar("nemo_kv_blocks_cached", "gauge", "KV cache blocks registered in the prefix cache, held or free.", registered);
        let total = get(&self.kv_blocks_total);
        let usage = if total > 0.0 { get(&self.kv_blocks_used) / total } else { 0.0 };
        scalar("nemo_kv_cache_usage_ratio", "gauge", "Fraction of the KV cache in use (0 to 1).", usage);
        scalar("nemo_engine_steps_total", "counter", "Batched engine steps run.", get(&self.steps));
        scalar("nemo_preemptions_total", "counter", "Sequences preempted for lack of KV blocks.", get(&self.preemptions));
        let ratio = f64::from_bits(self.admission_reserve_ratio.load(Relaxed));
        let help = "Fraction of their remaining max_tokens running requests are expected to generate, kept free at admission (0: optimistic).";
        scalar("nemo_admission_reserve_ratio", "gauge", help, ratio);
        scalar("process_resident_memory_bytes", "gauge", "Resident memory of the server process.", resident_bytes());
        self.time_to_first_token.render(
            &mut out,
            "nemo_time_to_first_token_seconds",
            "From the request's arrival to its first generated token.",
        );
        self.inter_token_latency.render(
            &mut out,
            "nemo_inter_token_latency_seconds",
            "Between consecutive generated tokens of one request.",
        );
        self.step_duration.render(&mut out, "nemo_engine_step_seconds", "Duration of one batched engine step.");
        out
    }
}

/// Resident set size from /proc (0 where there is none).
fn resident_bytes() -> f64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: f64 = statm.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0.0);
    pages * 4096.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative_with_sum_and_count() {
        let h = Histogram::new();
        for s in [0.0005, 0.003, 0.003, 100.0] {
            h.observe(s);
        }
        let mut out = String::new();
        h.render(&mut out, "x", "help");
        assert!(out.contains("x_bucket{le=\"0.001\"} 1\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"0.005\"} 3\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"60\"} 3\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"+Inf\"} 4\n"), "{out}");
        assert!(out.contains("x_count 4\n"), "{out}");
        let sum: f64 = out.lines().find_map(|l| l.strip_prefix("x_sum ")).unwrap().parse().unwrap();
        assert!((sum - 100.0065).abs() < 1e-6, "{sum}");
    }

    #[test]
    fn every_series_is_rendered() {
        let m = Metrics::default();
        m.count_response("/v1/chat/completions", 200);
        m.count_response("/v1/chat/completions", 200);
        m.count_finished("length");
        m.kv_blocks_total.store(8, Relaxed);
        m.kv_blocks_used.store(2, Relaxed);
        m.admission_reserve_ratio.store(0.5f64.to_bits(), Relaxed);
        let text = m.render();
        for line in [
            "nemo_http_requests_total{route=\"/v1/chat/completions\",status=\"200\"} 2",
            "nemo_requests_finished_total{reason=\"length\"} 1",
            "nemo_kv_cache_usage_ratio 0.25",
            "nemo_requests_waiting 0",
            "nemo_prefix_cache_hit_tokens_total 0",
            "nemo_kv_blocks_cached 0",
            "nemo_admission_reserve_ratio 0.5",
            "nemo_time_to_first_token_seconds_count 0",
            "nemo_inter_token_latency_seconds_count 0",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
    }
}
