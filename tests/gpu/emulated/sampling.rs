//! sample_tokens_f32 on the emulator against the CPU sampler (sampling::sample_at): the same
//! token for the same logits, parameters, seed and step, over greedy, temperature, top-k, top-p
//! and min-p rows with masked tokens and exact ties; bad rows are reported as such.

use super::{addr, load};
use crate::common::*;
use crate::sampling::{bad_rows, sampling_rows};
use nemo_engine::gpu::kernels::sampling::{launch_config, SampleParams};

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
        let rows = sampling_rows(&mut rng, vocab, spread, 12);
        let (c, f) = rows.check(&run(&rows.logits, &rows.device_params(), vocab));
        (compared, fallbacks) = (compared + c, fallbacks + f);
    }
    eprintln!("emulated sampling: {compared} rows equal to the CPU sampler, {fallbacks} left to the host");
    assert!(compared >= 24, "too few rows sampled by the kernel: {compared}");
    let (logits, p) = bad_rows();
    assert_eq!(run(&logits, &[p; 3], 64), vec![-1, -1, -1]);
}
