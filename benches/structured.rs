//! The host's cost of structured outputs at Nemo's vocabulary (tekken.json, 131072 tokens):
//! building the token trie once, compiling a constraint per request, and the per-token mask a
//! constrained sequence needs before every draw, alone and for a batch of sequences computed in
//! parallel as `Engine::prepare_masks` does (on this machine's cores, while the GPU waits).
//!
//! Last, whole engine steps of B constrained requests over a stand-in device (a fixed wait per
//! step, `NoModelBackend`): with the masks computed before the step, and with the step split so
//! they are computed while the device runs (`BatchBackend::launch_forward`), as on the GPU.
//!
//! `cargo bench --bench structured` (needs models/tekken/tekken.json, or NEMO_TEKKEN).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nemo_engine::engine::CacheShape;
use nemo_engine::model::ModelConfig;
use nemo_engine::sampling::{is_allowed, SamplingParams};
use nemo_engine::scheduler::no_model::NoModelBackend;
use nemo_engine::scheduler::{Admission, Engine, EngineOptions, Request};
use nemo_engine::structured::{Constraint, Grammar, Grammars};
use nemo_engine::tokenizer::Tokenizer;
use rayon::prelude::*;
use serde_json::json;

const VOCAB: usize = 131_072;

/// Draws up to `n` tokens the mask allows (a seeded pick among them), timing each mask.
fn walk(mut g: Grammar, seed: u64, n: usize) -> Vec<f64> {
    let (mut mask, mut times) = (Vec::new(), Vec::new());
    let mut state = seed;
    for _ in 0..n {
        let t = Instant::now();
        if g.fill_mask(&mut mask).is_err() {
            break;
        }
        times.push(t.elapsed().as_secs_f64() * 1e6);
        let allowed: Vec<u32> = (0..VOCAB as u32).filter(|&t| is_allowed(&mask, t) && t != 2).collect();
        if allowed.is_empty() {
            break;
        }
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        if g.consume(allowed[(state >> 33) as usize % allowed.len()]).is_err() || g.is_finished() {
            break;
        }
    }
    times
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p) as usize]
}

fn main() {
    let path = std::env::var_os("NEMO_TEKKEN").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("models/tekken/tekken.json"));
    let tokenizer = Arc::new(Tokenizer::from_path(&path).unwrap_or_else(|e| panic!("{}: {e} (run scripts/setup.sh)", path.display())));
    let t = Instant::now();
    let grammars = Grammars::new(tokenizer, VOCAB, &[]).unwrap();
    println!("structured outputs on the host, tekken.json ({VOCAB} tokens), {} threads", rayon::current_num_threads());
    println!("token trie + parser factory: {:.0} ms (once per server)", t.elapsed().as_secs_f64() * 1e3);
    let names: Vec<String> = (0..100).map(|i| format!("customer name {i}")).collect();
    let cases = [
        ("json_schema", Constraint::JsonSchema(json!({"type": "object", "properties": {
            "city": {"type": "string"}, "days": {"type": "integer"}, "unit": {"enum": ["celsius", "fahrenheit"]},
            "tags": {"type": "array", "items": {"type": "string"}}}, "required": ["city", "days", "unit", "tags"]}))),
        ("json_object", Constraint::JsonObject),
        ("regex", Constraint::Regex(r"[A-Z][a-z]{2,12}( [A-Z][a-z]{2,12}){0,3}, [0-9]{1,5} [a-z ]{3,40}".into())),
        ("choice x100", Constraint::Choice(names)),
    ];
    println!("{:<12} {:>10} {:>9} {:>8} {:>11} {:>11} {:>11}   batch of B masks in parallel, us/step (B = 16 / 64 / 256)", "constraint", "compile ms", "cached us", "masks", "median us", "p99 us", "mean us");
    for (label, c) in &cases {
        let t = Instant::now();
        let g = grammars.compile_uncached(c).unwrap();
        let compile_ms = t.elapsed().as_secs_f64() * 1e3;
        grammars.compile(c).unwrap(); // into the cache
        let t = Instant::now();
        let _copy = grammars.compile(c).unwrap();
        let cached_us = t.elapsed().as_secs_f64() * 1e6;
        let mut times: Vec<f64> = (0..8).flat_map(|seed| walk(g.clone(), seed, 64)).collect();
        times.sort_by(f64::total_cmp);
        let mean = times.iter().sum::<f64>() / times.len() as f64;
        // A step's masks for B sequences at the start of their outputs (5 steps timed).
        let batch_us: Vec<String> = [16usize, 64, 256]
            .iter()
            .map(|&b| {
                let mut seqs: Vec<Grammar> = (0..b).map(|_| g.clone()).collect();
                let mut masks: Vec<Vec<u32>> = vec![Vec::new(); b];
                let t = Instant::now();
                let rounds = 5;
                for _ in 0..rounds {
                    seqs.par_iter_mut().zip(masks.par_iter_mut()).for_each(|(g, m)| {
                        let _ = g.fill_mask(m);
                    });
                }
                format!("{:.0}", t.elapsed().as_secs_f64() * 1e6 / rounds as f64)
            })
            .collect();
        println!(
            "{label:<12} {compile_ms:>10.1} {cached_us:>9.0} {:>8} {:>11.1} {:>11.1} {mean:>11.1}   {}",
            times.len(),
            percentile(&times, 0.5),
            percentile(&times, 0.99),
            batch_us.join(" / ")
        );
    }
    engine_steps(&grammars, &cases);
}

/// Mean ms per engine step for `batch` requests of 16 prompt tokens and up to 48 output tokens
/// each, the i-th under `cases[i % 4]` (or none), over a device that takes `device` per step.
fn engine_ms_per_step(grammars: &Grammars, cases: &[(&str, Constraint)], batch: usize, device: Duration, constrained: bool, split: bool) -> (f64, u64) {
    let shape = CacheShape { block_size: 16, num_blocks: 4096, max_step_tokens: 4096 };
    let mut backend = NoModelBackend::new(ModelConfig::nemo_12b(), shape, 0);
    backend.device_time = device;
    backend.split_steps = split;
    let opts = EngineOptions { max_running: batch, max_step_tokens: 4096, prefix_caching: false, admission: Admission::Optimistic };
    let mut engine = Engine::new(backend, opts).unwrap();
    for i in 0..batch {
        let mut r = Request::new((0..16).map(|t| 1000 + (i * 16 + t) as u32).collect(), 48);
        r.sampling = SamplingParams { seed: i as u64, ..SamplingParams::default() };
        r.grammar = constrained.then(|| grammars.compile(&cases[i % cases.len()].1).unwrap());
        engine.add_request(r).unwrap();
    }
    let t = Instant::now();
    while engine.has_work() {
        engine.step();
    }
    (t.elapsed().as_secs_f64() * 1e3 / engine.steps() as f64, engine.steps())
}

fn engine_steps(grammars: &Grammars, cases: &[(&str, Constraint)]) {
    let device = Duration::from_millis(20);
    println!();
    println!("engine steps over a stand-in device of {} ms a step (the four constraints in turn), ms/step:", device.as_millis());
    println!("{:>5} {:>7} {:>14} {:>18} {:>22}", "batch", "steps", "no grammars", "masks, then step", "step split, masks meanwhile");
    for batch in [64usize, 256] {
        let (plain, steps) = engine_ms_per_step(grammars, cases, batch, device, false, false);
        let (whole, _) = engine_ms_per_step(grammars, cases, batch, device, true, false);
        let (split, _) = engine_ms_per_step(grammars, cases, batch, device, true, true);
        println!("{batch:>5} {steps:>7} {plain:>14.2} {whole:>18.2} {split:>22.2}");
    }
}
