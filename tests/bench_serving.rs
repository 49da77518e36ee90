//! The serving benchmarks on the CPU batch backend and the tiny fixture model: the accounting is
//! right (every token counted once, percentiles ordered) and the plot is drawn.

use std::path::Path;

use nemo_engine::bench::serving::{arrival_times, decode_sweep, sweep_svg, throughput, ServingOptions};
use nemo_engine::engine::{CpuBatchBackend, CpuBatchOptions};
use nemo_engine::model::load;
use nemo_engine::scheduler::Admission;

/// 8 requests of 64 tokens, at most 128 tokens a step, prefix caching on, no shared start.
fn eight_requests(output_len: usize) -> ServingOptions {
    let (max_running, max_step_tokens) = (8, 128);
    ServingOptions { requests: 8, input_len: 64, output_len, max_running, max_step_tokens, shared_prefix: 0, prefix_caching: true, admission: Admission::Reserve, request_rate: None }
}

#[test]
fn offline_throughput_counts_every_token_once() {
    let model = load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-s0/hf")).unwrap();
    // 20 blocks of 16 for 8 requests of 64 + 16 tokens: some must wait or be preempted.
    let backend = CpuBatchBackend::new(&model.weights, CpuBatchOptions { block_size: 16, num_blocks: 20, max_step_tokens: 128 });
    let r = throughput(backend, &eight_requests(16)).unwrap();
    assert_eq!(r.cached_prompt_tokens, 0, "prompts without a common start share nothing");
    assert_eq!(r.output_tokens, 8 * 16);
    assert_eq!(r.requests, 8);
    assert!(r.ttft_ms.p50 <= r.ttft_ms.p90 && r.ttft_ms.p90 <= r.ttft_ms.p99);
    assert!(r.itl_ms.p50 <= r.itl_ms.p99);
    assert!(r.ttft_ms.p99 <= r.seconds * 1e3 + 1e-6);
    assert!(r.output_tokens_per_s > 0.0 && r.total_tokens_per_s > r.output_tokens_per_s);
    let json = serde_json::to_value(&r).unwrap();
    assert!(json["itl_ms"]["p90"].is_number());
}

/// One 48-token system prompt for every request: every request but the first finds its three
/// blocks of 16 cached, those admitted beside the first too; with prefix caching off, none do.
/// Output counts are unchanged.
#[test]
fn a_shared_prompt_start_is_computed_once_when_prefix_caching_is_on() {
    let model = load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-s0/hf")).unwrap();
    let run = |prefix_caching| {
        let backend = CpuBatchBackend::new(&model.weights, CpuBatchOptions { block_size: 16, num_blocks: 64, max_step_tokens: 128 });
        throughput(backend, &ServingOptions { shared_prefix: 48, prefix_caching, ..eight_requests(4) }).unwrap()
    };
    let (on, off) = (run(true), run(false));
    // Step 1 computes the first 64-token prompt and the last 16 tokens of the next four (the
    // budget of 128), which read the 48 the first one writes in that step; the last three hit too.
    assert_eq!(on.cached_prompt_tokens, 7 * 48);
    assert_eq!(off.cached_prompt_tokens, 0);
    assert_eq!((on.output_tokens, off.output_tokens), (8 * 4, 8 * 4));
    assert!(on.steps <= off.steps, "{} steps with the cache, {} without", on.steps, off.steps);
}

/// Poisson arrivals at 5 a second: requests join as they arrive, the run lasts until the last
/// one has arrived and finished, and time to first token and request latency count from each
/// request's own arrival (the tiny model serves one in far less than the ~0.2 s between them,
/// where counting from the start would give the last one a latency of over a second).
#[test]
fn requests_arriving_at_a_rate_are_timed_from_their_arrival() {
    let model = load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-s0/hf")).unwrap();
    let backend = CpuBatchBackend::new(&model.weights, CpuBatchOptions { block_size: 16, num_blocks: 64, max_step_tokens: 128 });
    let last = *arrival_times(8, Some(5.0)).last().unwrap();
    assert!(last > 0.7, "seeded arrivals: the last at {last} s");
    let r = throughput(backend, &ServingOptions { request_rate: Some(5.0), ..eight_requests(4) }).unwrap();
    assert_eq!((r.output_tokens, r.request_rate), (8 * 4, Some(5.0)));
    assert!(r.seconds >= last, "{} s, the last request arrives at {last} s", r.seconds);
    assert!(r.ttft_ms.p99 <= r.latency_ms.p99 && r.latency_ms.p50 <= r.latency_ms.p99);
    assert!(r.latency_ms.p99 < 0.5 * last * 1e3, "latency p99 {} ms: counted from the start?", r.latency_ms.p99);
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["request_rate"], 5.0);
    assert!(json["latency_ms"]["p50"].is_number() && json["ttft_ms"]["mean"].is_number());
    assert!((r.requests_per_s * r.seconds - 8.0).abs() < 1e-9);
    // Without a rate every request is queued at once and the field is null.
    let backend = CpuBatchBackend::new(&model.weights, CpuBatchOptions { block_size: 16, num_blocks: 64, max_step_tokens: 128 });
    let r = throughput(backend, &eight_requests(4)).unwrap();
    assert!(serde_json::to_value(&r).unwrap()["request_rate"].is_null());
}

#[test]
fn decode_sweep_reports_each_batch_and_draws_it() {
    let model = load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-s0/hf")).unwrap();
    let backend = CpuBatchBackend::new(&model.weights, CpuBatchOptions { block_size: 16, num_blocks: 64, max_step_tokens: 256 });
    let rows = decode_sweep(backend, &[1, 4, 8], 16, 4, 1_000_000, 1024).unwrap();
    assert_eq!(rows.iter().map(|r| r.batch).collect::<Vec<_>>(), vec![1, 4, 8]);
    for r in &rows {
        assert!(r.ms_per_step > 0.0 && r.tokens_per_s > 0.0 && r.achieved_gbs > 0.0, "{r:?}");
        assert!((r.tokens_per_s - r.batch as f64 / (r.ms_per_step * 1e-3)).abs() < 1e-6 * r.tokens_per_s);
    }
    let svg = sweep_svg(&rows, "tiny model <cpu>");
    assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
    assert_eq!(svg.matches("<polyline").count(), 2);
    assert!(svg.contains("&lt;cpu&gt;"));
}
