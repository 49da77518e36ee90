//! sample_tokens_f32 on the emulator against the CPU sampler (sampling::sample_at): the same
//! token for the same logits, parameters, seed and step, over greedy, temperature, top-k, top-p
//! and min-p rows with masked tokens and exact ties; bad rows are reported as such.

use super::{addr, load};
use crate::common::*;
use nemo_engine::gpu::kernels::sampling::{launch_config, SampleParams, Sampled};
use nemo_engine::sampling::{sample_at, SamplingParams};

type SampleTokens = unsafe extern "C" fn(u64, u64, u64, i32);

fn run(logits: &[f32], params: &[SampleParams], vocab: usize) -> Vec<i32> {
    let mut out = vec![i32::MIN; params.len()];
    let out_addr = out.as_mut_ptr() as u64;
    // SAFETY: logits hold params.len() rows of vocab; params and out one entry per row.
    load("sampling")
        .launch_args("sample_tokens_f32", launch_config(params.len()).unwrap(), |k: SampleTokens| unsafe {
            k(addr(logits), addr(params), out_addr, vocab as i32)
        })
        .unwrap();
    out
}

#[test]
fn emulated_sampling_matches_the_cpu_sampler() {
    let mut rng = Rng::fresh("emulated_sampling");
    let (mut compared, mut fallbacks) = (0, 0);
    for (vocab, spread) in [(1024, 1.0f32), (3000, 3.0), (4096, 8.0)] {
        let (mut logits, mut params, mut rows) = (Vec::new(), Vec::new(), Vec::new());
        for row in 0..12 {
            let mut l: Vec<f32> = (0..vocab).map(|_| rng.normal(spread)).collect();
            if row % 5 == 0 {
                for _ in 0..vocab / 10 {
                    l[rng.below(vocab)] = f32::NEG_INFINITY; // masked tokens
                }
            }
            if row % 7 == 0 {
                let top = rng.below(vocab);
                l[(top + 1) % vocab] = l[top]; // an exact tie
            }
            let p = SamplingParams {
                temperature: [0.0, 0.3, 0.7, 1.0, 1.5][row % 5],
                top_k: [0, 1, 5, 50, 2000, 0][row % 6],
                top_p: [1.0, 0.9, 0.5, 1.0][row % 4],
                min_p: [0.0, 0.0, 0.05][row % 3],
                seed: rng.next_u64(),
            };
            let step = rng.below(1000) as u64;
            logits.extend_from_slice(&l);
            params.push(SampleParams::new(&p, step));
            rows.push((p, step));
        }
        let got = run(&logits, &params, vocab);
        for (i, (p, step)) in rows.iter().enumerate() {
            let want = sample_at(p, &logits[i * vocab..(i + 1) * vocab], *step).unwrap();
            match Sampled::from_raw(got[i]) {
                Sampled::Token(t) => {
                    assert_eq!(t, want, "vocab {vocab} row {i} {p:?} step {step}");
                    compared += 1;
                }
                Sampled::HostFallback => fallbacks += 1,
                Sampled::BadLogits => panic!("row {i}: valid logits reported bad"),
            }
        }
    }
    eprintln!("emulated sampling: {compared} rows equal to the CPU sampler, {fallbacks} left to the host");
    assert!(compared >= 24, "too few rows sampled by the kernel: {compared}");

    // NaN, +inf, or every token masked: reported, never a token.
    let vocab = 64;
    let mut logits = vec![0.5f32; 3 * vocab];
    logits[3] = f32::NAN;
    logits[vocab + 9] = f32::INFINITY;
    logits[2 * vocab..].iter_mut().for_each(|x| *x = f32::NEG_INFINITY);
    let p = SampleParams::new(&SamplingParams { temperature: 0.7, ..SamplingParams::default() }, 0);
    assert_eq!(run(&logits, &[p; 3], vocab), vec![-1, -1, -1]);
}
