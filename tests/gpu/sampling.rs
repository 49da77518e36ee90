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
            // A batch of rows: each its own logits and parameters.
            let mut logits = Vec::new();
            let mut params = Vec::new();
            let mut steps = Vec::new();
            for row in 0..48 {
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
                params.push(p);
                steps.push(step);
            }
            let dev_params: Vec<SampleParams> = params.iter().zip(&steps).map(|(p, &s)| SampleParams::new(p, s)).collect();
            let (l_dev, p_dev) = (dev(&gpu, &logits), dev(&gpu, &dev_params));
            let mut out = dev(&gpu, &vec![i32::MIN; params.len()]);
            sample_tokens(&gpu, &l_dev.as_view(), vocab, &p_dev.as_view(), &mut out.as_view_mut()).unwrap();
            let got = download(&gpu, &out).unwrap();
            for (i, (p, &step)) in params.iter().zip(&steps).enumerate() {
                let want = sample_at(p, &logits[i * vocab..(i + 1) * vocab], step).unwrap();
                match Sampled::from_raw(got[i]) {
                    Sampled::Token(t) => {
                        assert_eq!(t, want, "vocab {vocab} spread {spread} row {i} {p:?} step {step}");
                        compared += 1;
                    }
                    Sampled::HostFallback => fallbacks += 1,
                    Sampled::BadLogits => panic!("row {i}: valid logits reported bad"),
                }
            }
        }
    }
    eprintln!("gpu sampling: {compared} rows equal to the CPU sampler, {fallbacks} left to the host");
    assert!(compared > 300, "too few rows sampled on the GPU: {compared}");
}

#[test]
fn gpu_sampling_reports_bad_logits() {
    let Some(gpu) = gpu_or_skip("gpu_sampling_reports_bad_logits") else { return };
    let vocab = 64;
    let mut logits = vec![0.5f32; 3 * vocab];
    logits[3] = f32::NAN;
    logits[vocab + 9] = f32::INFINITY;
    logits[2 * vocab..].iter_mut().for_each(|x| *x = f32::NEG_INFINITY);
    let p = SampleParams::new(&SamplingParams { temperature: 0.7, ..SamplingParams::default() }, 0);
    let (l_dev, p_dev) = (dev(&gpu, &logits), dev(&gpu, &[p; 3]));
    let mut out = dev(&gpu, &[0i32; 3]);
    sample_tokens(&gpu, &l_dev.as_view(), vocab, &p_dev.as_view(), &mut out.as_view_mut()).unwrap();
    assert_eq!(download(&gpu, &out).unwrap(), vec![-1, -1, -1]);
}
