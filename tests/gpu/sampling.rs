//! sample_tokens_f32 against the CPU sampler (sampling::sample_at): the same token for the same
//! logits, parameters, seed and step.

use nemo_engine::gpu::kernels::sampling::{sample_tokens, SampleParams, Sampled};
use nemo_engine::gpu::download;
use nemo_engine::sampling::{sample_at, SamplingParams};

use crate::common::*;

#[test]
fn gpu_sampling_matches_the_cpu_sampler() {
    let Some(gpu) = gpu_or_skip("gpu_sampling_matches_the_cpu_sampler") else { return };
    let mut rng = Rng::fresh("sampling");
    let (mut compared, mut fallbacks) = (0, 0);
    for vocab in [131_072, 1024, 49_152] {
        for spread in [1.0f32, 3.0, 8.0] {
            let rows = sampling_rows(&mut rng, vocab, spread, 48);
            let (l_dev, p_dev) = (dev(&gpu, &rows.logits), dev(&gpu, &rows.device_params()));
            let mut out = dev(&gpu, &vec![i32::MIN; rows.params.len()]);
            sample_tokens(&gpu, &l_dev.as_view(), vocab, &p_dev.as_view(), &mut out.as_view_mut()).unwrap();
            let (c, f) = rows.check(&download(&gpu, &out).unwrap());
            (compared, fallbacks) = (compared + c, fallbacks + f);
        }
    }
    eprintln!("gpu sampling: {compared} rows equal to the CPU sampler, {fallbacks} left to the host");
    assert!(compared > 300, "too few rows sampled on the GPU: {compared}");
}

/// A batch of rows for the sampler, each with its own logits (some masked, some with an exact
/// tie at the top) and parameters (greedy to T 1.5, top-k, top-p, min-p), and a step.
/// Shared with the emulator's test (emulated/sampling.rs).
pub struct SamplingRows {
    pub vocab: usize,
    pub logits: Vec<f32>,
    pub params: Vec<(SamplingParams, u64)>,
}

pub fn sampling_rows(rng: &mut Rng, vocab: usize, spread: f32, n: usize) -> SamplingRows {
    let mut rows = SamplingRows { vocab, logits: Vec::new(), params: Vec::new() };
    for row in 0..n {
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
        rows.logits.extend_from_slice(&l);
        rows.params.push((p, rng.below(1000) as u64));
    }
    rows
}

impl SamplingRows {
    /// The kernel's per-row parameters.
    pub fn device_params(&self) -> Vec<SampleParams> {
        self.params.iter().map(|(p, step)| SampleParams::new(p, *step)).collect()
    }

    /// Checks the kernel's outputs against `sample_at`: (rows equal, rows left to the host).
    pub fn check(&self, got: &[i32]) -> (usize, usize) {
        let (mut compared, mut fallbacks) = (0, 0);
        for (i, (p, step)) in self.params.iter().enumerate() {
            let want = sample_at(p, &self.logits[i * self.vocab..(i + 1) * self.vocab], *step).unwrap();
            match Sampled::from_raw(got[i]) {
                Sampled::Token(t) => {
                    assert_eq!(t, want, "vocab {} row {i} {p:?} step {step}", self.vocab);
                    compared += 1;
                }
                Sampled::HostFallback => fallbacks += 1,
                Sampled::BadLogits => panic!("row {i}: valid logits reported bad"),
            }
        }
        (compared, fallbacks)
    }
}

/// NaN, +inf, or every token masked: three rows of 64 the sampler must report as bad.
pub fn bad_rows() -> (Vec<f32>, SampleParams) {
    let vocab = 64;
    let mut logits = vec![0.5f32; 3 * vocab];
    logits[3] = f32::NAN;
    logits[vocab + 9] = f32::INFINITY;
    logits[2 * vocab..].iter_mut().for_each(|x| *x = f32::NEG_INFINITY);
    (logits, SampleParams::new(&SamplingParams { temperature: 0.7, ..SamplingParams::default() }, 0))
}

#[test]
fn gpu_sampling_reports_bad_logits() {
    let Some(gpu) = gpu_or_skip("gpu_sampling_reports_bad_logits") else { return };
    let (logits, p) = bad_rows();
    let (l_dev, p_dev) = (dev(&gpu, &logits), dev(&gpu, &[p; 3]));
    let mut out = dev(&gpu, &[0i32; 3]);
    sample_tokens(&gpu, &l_dev.as_view(), 64, &p_dev.as_view(), &mut out.as_view_mut()).unwrap();
    assert_eq!(download(&gpu, &out).unwrap(), vec![-1, -1, -1]);
}
