//! The whole GPU forward pass with an FP8 e4m3 KV cache (`--kv-cache-dtype fp8`) against
//! transformers' fp32 logits, beside the CPU reference with the same cache (tests/fp8_kv_cache.rs
//! measures that one): every prompt run in chunks ending at its recorded positions, so the
//! prefill kernel reads a cached prefix of codes and p64's one-token steps take the decode kernel
//! with its fused RoPE write. The GPU's error may exceed the CPU fp8 cache's by the bf16 budget.

use nemo_engine::engine::{BatchBackend, CpuBatchBackend, CpuBatchOptions, CudaBatchBackend, KvCacheDtype};
use nemo_engine::gpu::model::{CudaModel, GpuWeights};
use nemo_engine::gpu::Gpu;
use nemo_engine::model::load;

use crate::common::*;
use crate::fixtures::reference::{fixture_dir, reference_tensors, step_at_logit_positions, Reference};

/// issue 5's bound for bf16 GPU logits against fp32 ones: what the GPU may add to the CPU's error.
const BF16_BUDGET: f32 = 0.03;
const BLOCK: usize = 16;

/// (mean abs error, max abs error, positions) of `backend`'s logits against transformers' over
/// every recorded position of every prompt; `fresh` makes a backend with `blocks` KV blocks.
fn measure<B: BatchBackend>(fresh: &mut dyn FnMut(usize) -> B) -> (f32, f32, usize) {
    let reference = Reference::load();
    let tensors = reference_tensors();
    let (mut sum, mut count, mut max_abs, mut positions) = (0f64, 0usize, 0f32, 0);
    for p in &reference.prompts {
        let mut backend = fresh(p.tokens.len().div_ceil(BLOCK));
        let theirs = &tensors[&format!("logits.{}", p.name)].1;
        step_at_logit_positions(&mut backend, p, theirs, BLOCK, |ours, theirs| {
            for (a, b) in ours.iter().zip(theirs) {
                let d = (a - b).abs();
                assert!(d.is_finite(), "{}: non-finite logit", p.name);
                sum += d as f64;
                max_abs = max_abs.max(d);
            }
            count += theirs.len();
            positions += 1;
        });
    }
    ((sum / count as f64) as f32, max_abs, positions)
}

#[test]
fn gpu_fp8_kv_cache_matches_transformers_within_the_cpu_fp8_error() {
    let Some(_gpu) = gpu_or_skip("gpu_fp8_kv_cache_matches_transformers_within_the_cpu_fp8_error") else { return };
    let model = load(&fixture_dir().join("hf")).unwrap();
    let w = &model.weights;
    let fp8 = KvCacheDtype::Fp8E4m3;
    let (cpu_mean, cpu_max, n) = measure(&mut |blocks| {
        CpuBatchBackend::new(w, CpuBatchOptions { block_size: BLOCK, num_blocks: blocks, max_step_tokens: 4096 }).with_kv_cache_dtype(fp8)
    });
    let mut settings = String::new();
    let (gpu_mean, gpu_max, _) = measure(&mut |blocks| {
        let gpu = Gpu::new().unwrap();
        let weights = GpuWeights::upload(&gpu, w).unwrap();
        // A block more than the prompt needs: graph mode (NEMO_CUDA_GRAPHS=1) keeps the last.
        let model = CudaModel::with_kv_dtype(gpu, weights, (blocks + 1) * BLOCK, fp8, 4096, 8).unwrap();
        settings = model.settings();
        CudaBatchBackend { model }
    });
    assert!(settings.contains("fp8 e4m3"), "the model's settings name its cache: {settings}");
    eprintln!("fp8 KV cache over {n} positions: GPU mean abs {gpu_mean:.2e} (max {gpu_max:.2e}), CPU mean abs {cpu_mean:.2e} (max {cpu_max:.2e})");
    assert!(gpu_mean <= cpu_mean + BF16_BUDGET, "GPU fp8 mean abs logit error {gpu_mean} > CPU fp8 {cpu_mean} + {BF16_BUDGET}");
}
