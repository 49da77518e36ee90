//! The admission policies at Nemo's scale, on a backend that runs no model: 256 and 1000
//! requests of 1000 prompt + 1000 generated tokens through a KV cache of 320,000 tokens (what
//! `--kv-tokens max` leaves on an H100 beside the 12B weights: ~160 such sequences at a time),
//! the scheduler's own token budget (4096 a step) and batch limit (256). Counts what the
//! scheduler makes the GPU run: tokens, steps, preemptions; every token past a request's prompt
//! + output is recomputation after a preemption.

use nemo_engine::bench::serving::{throughput, ServingOptions};
use nemo_engine::engine::CacheShape;
use nemo_engine::model::ModelConfig;
use nemo_engine::scheduler::no_model::NoModelBackend;
use nemo_engine::scheduler::Admission;

struct Run {
    tokens_run: usize,
    steps: u64,
    preemptions: u64,
    /// Host time of the whole run (scheduling, block tables, events: no model).
    seconds: f64,
}

fn run(admission: Admission, requests: usize) -> Run {
    let shape = CacheShape { block_size: 16, num_blocks: 320_000 / 16, max_step_tokens: 4096 };
    let backend = NoModelBackend::new(ModelConfig::nemo_12b(), shape, 7);
    let opts = ServingOptions {
        requests,
        input_len: 1000,
        output_len: 1000,
        max_running: 256,
        max_step_tokens: 4096,
        shared_prefix: 0,
        prefix_caching: false,
        admission,
        request_rate: None,
    };
    let report = throughput(backend, &opts).unwrap();
    assert_eq!(report.output_tokens, requests * 1000, "{admission:?}: every request generates its 1000 tokens");
    let useful = requests * 1999;
    let recomputed = report.tokens_run as f64 / useful as f64 - 1.0;
    assert!((report.recomputed_fraction() - recomputed).abs() < 1e-12, "the report's recomputed column");
    Run { tokens_run: report.tokens_run as usize, steps: report.steps, preemptions: report.preemptions, seconds: report.seconds }
}

#[test]
fn reserved_admission_recomputes_less_than_optimistic_at_nemo_scale() {
    for requests in [256, 1000] {
        // Each request runs 1000 prompt tokens and 999 generated ones (its last token is sampled,
        // never run).
        let useful = requests * 1999;
        let waste = |r: &Run| r.tokens_run as f64 / useful as f64 - 1.0;
        let optimistic = run(Admission::Optimistic, requests);
        let reserve = run(Admission::Reserve, requests);
        for (name, r) in [("optimistic", &optimistic), ("reserve", &reserve)] {
            eprintln!(
                "{requests} requests, {name}: {} tokens run ({:.1} % recomputed), {} steps, {} preemptions; host {:.0} us a step",
                r.tokens_run,
                100.0 * waste(r),
                r.steps,
                r.preemptions,
                r.seconds * 1e6 / r.steps as f64
            );
        }
        assert!(waste(&optimistic) > 0.2, "the cache was meant to be too small for optimistic admission");
        assert!(waste(&reserve) < waste(&optimistic) / 2.5, "reserve should recompute well under half as much");
    }
}
