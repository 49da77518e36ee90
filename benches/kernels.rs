//! Kernel microbenchmarks: one section per kernel file, timed with CUDA events after warm-up,
//! inputs rotated where they would fit in L2, each figure reported against the ceiling measured
//! in the same run (device-to-device copy bandwidth; a dense bf16 rate given by NEMO_PEAK_TFLOPS,
//! which scripts/gpu-check measures with PyTorch's cuBLAS matmul).
//!
//! `cargo bench --bench kernels [-- NAME...]` runs the sections whose name contains any NAME.

use half::bf16;
use nemo_engine::gpu::kernels::attention_e4m3::{attention_decode_e4m3, attention_prefill_e4m3, E4m3KvCache};
use nemo_engine::gpu::kernels::attention::{
    attention_decode_rope, attention_decode_with, attention_prefill, decode_splits, DecodeKernel, AttentionMeta, AttentionShape,
    DecodeWorkspace,
};
use nemo_engine::gpu::kernels::embedding::embedding_gather;
use nemo_engine::gpu::kernels::gemm::{gemm, Epilogue, GemmShape};
use nemo_engine::gpu::kernels::gemm_wgmma::gemm_wgmma;
use nemo_engine::gpu::kernels::gemv::{gemv, gemv_normed, RowNorm};
use nemo_engine::gpu::kernels::rmsnorm::{fused_add_rmsnorm, rmsnorm};
use nemo_engine::gpu::kernels::rope::{rope_cos_sin_table, rope_write_kv, rope_write_kv_e4m3, E4m3KvViews, RopeShape};
use nemo_engine::gpu::kernels::sampling::{sample_tokens, EditBatch, LogitEdits, SampleParams};
use nemo_engine::gpu::kernels::target_logprobs::target_logprobs;
use nemo_engine::gpu::kernels::token_mask::{MaskBatch, TokenMasks};
use nemo_engine::sampling::{mask_words, LogitEdit, SamplingParams};
use nemo_engine::gpu::timing::{copy_bandwidth_gbs, time_ms};
use nemo_engine::gpu::{upload, Gpu, GpuResult};
use nemo_engine::gpu::kernels::prefill_table::{FlashPrefill, PrefillKernel};
use nemo_engine::model::{ModelConfig, RopeLayout};

struct Bench {
    gpu: Gpu,
    copy_gbs: f64,
    peak_tflops: Option<f64>,
}

impl Bench {
    fn report_bytes(&self, name: &str, shape: &str, ms: f64, bytes: f64) {
        let gbs = bytes / (ms * 1e-3) / 1e9;
        println!(
            "{name:<22} {shape:<34} {ms:>9.4} ms {gbs:>9.1} GB/s  {:>5.1}% of copy",
            100.0 * gbs / self.copy_gbs
        );
    }

    fn report_flops(&self, name: &str, shape: &str, ms: f64, flops: f64) {
        let tflops = flops / (ms * 1e-3) / 1e12;
        let frac = self.peak_tflops.map(|p| format!("{:>5.1}% of peak", 100.0 * tflops / p)).unwrap_or_default();
        println!("{name:<22} {shape:<34} {ms:>9.4} ms {tflops:>9.1} TFLOP/s {frac}");
    }
}

fn random_bf16(n: usize, seed: u64, scale: f32) -> Vec<bf16> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            bf16::from_f32(((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 2.0 * scale)
        })
        .collect()
}

fn bench_rmsnorm(b: &Bench) -> GpuResult<()> {
    let (n, dim) = (4096, 5120);
    // Three input sets of 40 MB each: more than the 50 MB L2.
    let sets: Vec<_> = (0..3).map(|i| upload(&b.gpu, &random_bf16(n * dim, i, 1.0))).collect::<GpuResult<_>>()?;
    let w = upload(&b.gpu, &random_bf16(dim, 9, 1.0))?;
    let mut out = upload(&b.gpu, &vec![bf16::ZERO; n * dim])?;
    let t = time_ms(&b.gpu, 5, 50, |i| rmsnorm(&b.gpu, &sets[i % 3].as_view(), &w.as_view(), &mut out.as_view_mut(), dim, 1e-5))?;
    b.report_bytes("rmsnorm", &format!("[{n}, {dim}]"), t.median_ms, 2.0 * (n * dim * 2) as f64);
    let x = upload(&b.gpu, &random_bf16(n * dim, 5, 1.0))?;
    let mut res: Vec<_> = (0..3).map(|i| upload(&b.gpu, &random_bf16(n * dim, 10 + i, 1.0))).collect::<GpuResult<_>>()?;
    let t = time_ms(&b.gpu, 5, 50, |i| {
        fused_add_rmsnorm(&b.gpu, &mut res[i % 3].as_view_mut(), &x.as_view(), &w.as_view(), &mut out.as_view_mut(), dim, 1e-5)
    })?;
    b.report_bytes("fused_add_rmsnorm", &format!("[{n}, {dim}]"), t.median_ms, 4.0 * (n * dim * 2) as f64);
    Ok(())
}

fn bench_embedding(b: &Bench) -> GpuResult<()> {
    let (vocab, dim, n) = (131_072, 5120, 4096);
    let table = upload(&b.gpu, &random_bf16(vocab * dim, 1, 1.0))?;
    let ids: Vec<i32> = (0..n as i32).map(|i| (i * 7919) % vocab as i32).collect();
    let ids = upload(&b.gpu, &ids)?;
    let mut out = upload(&b.gpu, &vec![bf16::ZERO; n * dim])?;
    let t = time_ms(&b.gpu, 5, 50, |_| embedding_gather(&b.gpu, &ids.as_view(), &table.as_view(), &mut out.as_view_mut(), vocab, dim))?;
    b.report_bytes("embedding_gather", &format!("{n} tokens x {dim}"), t.median_ms, 2.0 * (n * dim * 2) as f64);
    Ok(())
}

fn bench_rope(b: &Bench) -> GpuResult<()> {
    let c = ModelConfig::nemo_12b();
    let n = 4096;
    let width = c.q_dim() + 2 * c.kv_dim();
    let table = rope_cos_sin_table(&b.gpu, c.max_context, c.head_dim, c.rope_theta)?;
    let mut qkv = upload(&b.gpu, &random_bf16(n * width, 2, 1.0))?;
    let pos = upload(&b.gpu, &(0..n as i32).collect::<Vec<_>>())?;
    let slots = upload(&b.gpu, &(0..n as i32).collect::<Vec<_>>())?;
    let mut kc = upload(&b.gpu, &vec![bf16::ZERO; n * c.kv_dim()])?;
    let mut vc = upload(&b.gpu, &vec![bf16::ZERO; n * c.kv_dim()])?;
    let shape = RopeShape { n_heads: c.n_heads, n_kv_heads: c.n_kv_heads, head_dim: c.head_dim, layout: RopeLayout::Interleaved };
    let t = time_ms(&b.gpu, 5, 50, |_| {
        rope_write_kv(&b.gpu, shape, &table, &mut qkv.as_view_mut(), &pos.as_view(), &slots.as_view(), &mut kc.as_view_mut(), &mut vc.as_view_mut())
    })?;
    // q read + written, k and v read and written to the cache, cos/sin read.
    let bytes = n * (2 * c.q_dim() + 4 * c.kv_dim()) * 2 + n * c.head_dim * 4;
    b.report_bytes("rope_write_kv", &format!("{n} tokens, Nemo heads"), t.median_ms, bytes as f64);

    // The FP8 cache's write (docs/fp8-kv.md): one byte a K/V value plus a scale per head row.
    let (mut kq, mut vq) = (upload(&b.gpu, &vec![0u8; n * c.kv_dim()])?, upload(&b.gpu, &vec![0u8; n * c.kv_dim()])?);
    let (mut ks, mut vs) = (upload(&b.gpu, &vec![0f32; n * c.n_kv_heads])?, upload(&b.gpu, &vec![0f32; n * c.n_kv_heads])?);
    let t = time_ms(&b.gpu, 5, 50, |_| {
        let cache = E4m3KvViews {
            k_codes: &mut kq.as_view_mut(),
            v_codes: &mut vq.as_view_mut(),
            k_scales: &mut ks.as_view_mut(),
            v_scales: &mut vs.as_view_mut(),
        };
        rope_write_kv_e4m3(&b.gpu, shape, &table, &mut qkv.as_view_mut(), &pos.as_view(), &slots.as_view(), cache)
    })?;
    let bytes = n * (2 * c.q_dim() + 2 * c.kv_dim()) * 2 + n * (2 * c.kv_dim() + 8 * c.n_kv_heads) + n * c.head_dim * 4;
    b.report_bytes("rope_write_kv_e4m3", &format!("{n} tokens, Nemo heads"), t.median_ms, bytes as f64);
    Ok(())
}

/// Nemo's linear layers: (name, N, K, epilogue); gate/up is the fused 2 x 14336.
const NEMO_LINEARS: [(&str, usize, usize, Epilogue); 5] = [
    ("qkv", 6144, 5120, Epilogue::Store),
    ("o (+residual)", 5120, 4096, Epilogue::AddInPlace),
    ("gate/up (swiglu)", 28672, 5120, Epilogue::SwiGlu),
    ("down (+residual)", 5120, 14336, Epilogue::AddInPlace),
    ("lm_head", 131_072, 5120, Epilogue::Store),
];

fn bench_gemm(b: &Bench) -> GpuResult<()> {
    for m in [512, 4096] {
        for (name, n, k, epi) in NEMO_LINEARS {
            let a = upload(&b.gpu, &random_bf16(m * k, 3, 1.0))?;
            let w = upload(&b.gpu, &random_bf16(n * k, 4, 0.02))?;
            let mut out = upload(&b.gpu, &vec![bf16::ZERO; m * epi.out_cols(n)])?;
            let shape = GemmShape { m, n, k };
            let t = time_ms(&b.gpu, 3, 20, |_| gemm(&b.gpu, &a.as_view(), &w.as_view(), &mut out.as_view_mut(), shape, epi))?;
            let flops = 2.0 * (m * n * k) as f64;
            let label = format!("{name} M={m} N={n} K={k}");
            b.report_flops("gemm", &label, t.median_ms, flops);
            // The Hopper kernel at the same shape; a failure is printed, not fatal, so the
            // rest of the table still comes back from a GPU run.
            if left_out("gemm_wgmma") {
                println!("{:<22} {label:<34} gemm_wgmma left out (NEMO_BENCH_SKIP)", "");
            } else { match time_ms(&b.gpu, 3, 20, |_| gemm_wgmma(&b.gpu, &a.as_view(), &w.as_view(), &mut out.as_view_mut(), shape, epi)) {
                Ok(tw) => b.report_flops("  gemm_wgmma", &label, tw.median_ms, flops),
                Err(e) => println!("{:<22} {label:<34} gemm_wgmma failed: {e}", ""),
            } }
            match nemo_engine::lab::peers::cublas_ms(&b.gpu, &a, &w, shape, 3, 20) {
                Some(ms) => {
                    b.report_flops("  cublas (same shape)", &label, ms, flops);
                    println!("{:<22} {label:<34} ours / cublas time {:.2}x", "", t.median_ms / ms);
                }
                None => println!("{:<22} {label:<34} cublas not loadable (set LD_LIBRARY_PATH)", ""),
            }
        }
    }
    Ok(())
}

fn bench_gemv(b: &Bench) -> GpuResult<()> {
    for m in [1, 8] {
        for (name, n, k, epi) in NEMO_LINEARS {
            let a = upload(&b.gpu, &random_bf16(m * k, 3, 1.0))?;
            let w = upload(&b.gpu, &random_bf16(n * k, 4, 0.02))?;
            let mut out = upload(&b.gpu, &vec![bf16::ZERO; m * epi.out_cols(n)])?;
            let shape = GemmShape { m, n, k };
            let t = time_ms(&b.gpu, 3, 20, |_| gemv(&b.gpu, &a.as_view(), &w.as_view(), &mut out.as_view_mut(), shape, epi))?;
            b.report_bytes("gemv", &format!("{name} M={m} N={n} K={k}"), t.median_ms, (n * k * 2) as f64);
            // The decode layer runs the GEMVs after a norm with the norm fused in: the same rows
            // with it, to show what the fusion costs inside the kernel (it saves a launch).
            if name == "qkv" || name == "gate/up (swiglu)" {
                let gain = upload(&b.gpu, &random_bf16(k, 5, 1.0))?;
                let norm = RowNorm { weight: &gain.as_view(), eps: 1e-5 };
                let t = time_ms(&b.gpu, 3, 20, |_| {
                    gemv_normed(&b.gpu, Some(norm), &a.as_view(), &w.as_view(), &mut out.as_view_mut(), shape, epi)
                })?;
                b.report_bytes("gemv_rmsnorm", &format!("{name} M={m} N={n} K={k}"), t.median_ms, (n * k * 2) as f64);
            }
        }
    }
    Ok(())
}

/// One sequence of `ctx` tokens in a cache of exactly that many slots (block size 16).
/// `n_seqs` sequences of `ctx` tokens each, the last one new (decode), each in its own blocks;
/// returns the metadata and the cache slots they take.
fn sequences(b: &Bench, n_seqs: usize, ctx: usize) -> GpuResult<(nemo_engine::gpu::kernels::attention::DeviceAttentionMeta, usize)> {
    let blocks = ctx.div_ceil(16);
    let meta = AttentionMeta {
        cu_seqlens_q: (0..=n_seqs as i32).collect(),
        ctx_lens: vec![ctx as i32; n_seqs],
        block_tables: (0..(n_seqs * blocks) as i32).collect(),
        max_blocks: blocks,
        block_size: 16,
    };
    Ok((meta.upload(&b.gpu, n_seqs * blocks)?, n_seqs * blocks * 16))
}

fn single_sequence(b: &Bench, ctx: usize, q_len: usize) -> GpuResult<(nemo_engine::gpu::kernels::attention::DeviceAttentionMeta, usize)> {
    let blocks = ctx.div_ceil(16);
    let meta = AttentionMeta {
        cu_seqlens_q: vec![0, q_len as i32],
        ctx_lens: vec![ctx as i32],
        block_tables: (0..blocks as i32).collect(),
        max_blocks: blocks,
        block_size: 16,
    };
    Ok((meta.upload(&b.gpu, blocks)?, blocks * 16))
}

/// Kernels named in NEMO_BENCH_SKIP (comma-separated) are left out: scripts/gpu-check names those
/// whose own tests failed on this GPU, since a hang or fault there would cost the rest of the run.
fn left_out(kernel: &str) -> bool {
    std::env::var("NEMO_BENCH_SKIP").is_ok_and(|v| v.split(',').any(|k| k.trim() == kernel))
}

/// An FP8 e4m3 cache of `slots` slots at `c`'s shape for timing: K and V codes (finite, both
/// signs) and one scale per row, shared by K and V.
fn fp8_cache(b: &Bench, slots: usize, c: &ModelConfig) -> GpuResult<(cudarc::driver::CudaSlice<u8>, cudarc::driver::CudaSlice<u8>, cudarc::driver::CudaSlice<f32>)> {
    let codes: Vec<u8> = (0..slots * c.kv_dim()).map(|i| ((i * 37) % 0x7e) as u8 | ((i % 2) << 7) as u8).collect();
    Ok((upload(&b.gpu, &codes)?, upload(&b.gpu, &codes)?, upload(&b.gpu, &vec![1.0f32 / 448.0; slots * c.n_kv_heads])?))
}

fn bench_attention(b: &Bench) -> GpuResult<()> {
    let c = ModelConfig::nemo_12b();
    let shape = AttentionShape { n_heads: c.n_heads, n_kv_heads: c.n_kv_heads, head_dim: c.head_dim, q_stride: c.q_dim() };
    for n in [2048, 8192] {
        let (meta, slots) = single_sequence(b, n, n)?;
        let q = upload(&b.gpu, &random_bf16(n * c.q_dim(), 5, 1.0))?;
        let k = upload(&b.gpu, &random_bf16(slots * c.kv_dim(), 6, 1.0))?;
        let v = upload(&b.gpu, &random_bf16(slots * c.kv_dim(), 7, 1.0))?;
        let mut out = upload(&b.gpu, &vec![bf16::ZERO; n * c.q_dim()])?;
        // Causal: QK^T and PV over n^2/2 pairs, 2 FLOPs per multiply-add.
        let flops = 4.0 * (n as f64 * n as f64 / 2.0) * (c.head_dim * c.n_heads) as f64;
        // Every prefill kernel: the flash ones by module name, the wgmma schedules as
        // attention_prefill_wgmma[_overlap|_pingpong].
        for kernel in PrefillKernel::all() {
            let name = &match kernel {
                PrefillKernel::Flash(k) => k.names().module.to_string(),
                PrefillKernel::Wgmma(s) => format!("attention_prefill_{}", s.name().replace('-', "_")),
            };
            if left_out(name) {
                println!("{name:<22} left out (NEMO_BENCH_SKIP)");
                continue;
            }
            let t = time_ms(&b.gpu, 3, 10, |_| {
                attention_prefill(&b.gpu, kernel, shape, &meta, &q.as_view(), &k.as_view(), &v.as_view(), &mut out.as_view_mut())
            })?;
            b.report_flops(name, &format!("causal {n} tokens, 32/8 heads x 128"), t.median_ms, flops);
        }
        // Over an FP8 e4m3 cache: the flash kernels with their conversion pass.
        let (kc, vc, scales) = fp8_cache(b, slots, &c)?;
        for kernel in FlashPrefill::all().filter(|k| k.names().e4m3.is_some()) {
            let name = kernel.names().label(true);
            if left_out(name) {
                println!("{name:<22} left out (NEMO_BENCH_SKIP)");
                continue;
            }
            let t = time_ms(&b.gpu, 3, 10, |_| {
                let cache = E4m3KvCache { k_codes: &kc.as_view(), v_codes: &vc.as_view(), k_scales: &scales.as_view(), v_scales: &scales.as_view() };
                attention_prefill_e4m3(&b.gpu, kernel, shape, &meta, &q.as_view(), cache, &mut out.as_view_mut())
            })?;
            b.report_flops(name, &format!("causal {n} tokens, 32/8 heads x 128"), t.median_ms, flops);
        }
    }
    // Batch 1 at three contexts; then 64 sequences of 2k, the serving regime of issue 6's
    // 1000-in / 1000-out benchmark (one split per sequence and KV head: 512 blocks).
    for (n_seqs, ctx) in [(1, 1024), (1, 32_768), (1, 131_072), (64, 2048)] {
        let (meta, slots) = sequences(b, n_seqs, ctx)?;
        let q = upload(&b.gpu, &random_bf16(n_seqs * c.q_dim(), 5, 1.0))?;
        let mut k = upload(&b.gpu, &random_bf16(slots * c.kv_dim(), 6, 1.0))?;
        let mut v = upload(&b.gpu, &random_bf16(slots * c.kv_dim(), 7, 1.0))?;
        let mut out = upload(&b.gpu, &vec![bf16::ZERO; n_seqs * c.q_dim()])?;
        let splits = decode_splits(b.gpu.info.multiprocessors, n_seqs, c.n_kv_heads, ctx);
        let mut ws = DecodeWorkspace::new(&b.gpu, n_seqs, c.n_heads, splits, c.head_dim)?;
        let bytes = n_seqs * 2 * ctx * c.kv_dim() * 2;
        // Every kernel of DECODE_KERNELS, by module name.
        for kernel in DecodeKernel::all() {
            let name = kernel.names().module;
            if left_out(name) {
                println!("{name:<22} left out (NEMO_BENCH_SKIP)");
                continue;
            }
            let t = time_ms(&b.gpu, 3, 20, |_| {
                attention_decode_with(&b.gpu, kernel, shape, &meta, &q.as_view(), &k.as_view(), &v.as_view(), &mut ws, splits, &mut out.as_view_mut())
            })?;
            b.report_bytes(name, &format!("batch {n_seqs}, context {ctx}, {splits} splits"), t.median_ms, bytes as f64);
        }
        // Each kernel doing rope_write_kv's work too (the default decode layer): compare with its
        // row above plus bench_rope's.
        let width = c.q_dim() + 2 * c.kv_dim();
        let qkv = upload(&b.gpu, &random_bf16(n_seqs * width, 8, 1.0))?;
        let table = rope_cos_sin_table(&b.gpu, ctx, c.head_dim, c.rope_theta)?;
        let rope_shape = AttentionShape { q_stride: width, ..shape };
        for kernel in DecodeKernel::all() {
            let name = &format!("{}_rope", kernel.names().module);
            if left_out(name) {
                println!("{name:<22} left out (NEMO_BENCH_SKIP)");
                continue;
            }
            let t = time_ms(&b.gpu, 3, 20, |_| {
                attention_decode_rope(
                    &b.gpu, kernel, rope_shape, &table, RopeLayout::RotateHalf, &meta, &qkv.as_view(), &mut k.as_view_mut(),
                    &mut v.as_view_mut(), &mut ws, splits, &mut out.as_view_mut(),
                )
            })?;
            b.report_bytes(name, &format!("batch {n_seqs}, context {ctx}, {splits} splits"), t.median_ms, bytes as f64);
        }
        // Over an FP8 e4m3 cache (docs/fp8-kv.md): finite codes, one scale per row.
        let (kc, vc, scales) = fp8_cache(b, slots, &c)?;
        for kernel in DecodeKernel::all().filter(|k| k.names().e4m3.is_some()) {
            let name = kernel.names().label(true);
            if left_out(name) {
                println!("{name:<22} left out (NEMO_BENCH_SKIP)");
                continue;
            }
            let t = time_ms(&b.gpu, 3, 20, |_| {
                let cache = E4m3KvCache { k_codes: &kc.as_view(), v_codes: &vc.as_view(), k_scales: &scales.as_view(), v_scales: &scales.as_view() };
                attention_decode_e4m3(&b.gpu, kernel, shape, &meta, &q.as_view(), cache, &mut ws, splits, &mut out.as_view_mut())
            })?;
            let fp8_bytes = n_seqs * 2 * ctx * (c.kv_dim() + 4 * c.n_kv_heads);
            b.report_bytes(name, &format!("batch {n_seqs}, context {ctx}, {splits} splits"), t.median_ms, fp8_bytes as f64);
        }
    }
    Ok(())
}

type Section = (&'static str, fn(&Bench) -> GpuResult<()>);
const SECTIONS: [Section; 7] = [
    ("embedding", bench_embedding),
    ("rmsnorm", bench_rmsnorm),
    ("rope", bench_rope),
    ("gemm", bench_gemm),
    ("gemv", bench_gemv),
    ("attention", bench_attention),
    ("sampling", bench_sampling),
];

/// The sampler over Nemo's vocabulary at serving batch sizes (each row's logits read at least
/// once: bytes are one read), the logit edits of penalised requests and the token masks of
/// constrained ones before it, and the scoring of text (`nemo perplexity`).
fn bench_sampling(b: &Bench) -> GpuResult<()> {
    let vocab = 131_072;
    for rows in [1usize, 64, 256] {
        let logits: Vec<f32> = random_bf16(rows * vocab, rows as u64, 8.0).iter().map(|x| x.to_f32()).collect();
        let logits = upload(&b.gpu, &logits)?;
        let mut out = upload(&b.gpu, &vec![0i32; rows])?;
        for (label, p) in [("greedy", SamplingParams::greedy()), ("T 0.7 top-p 0.9", SamplingParams { temperature: 0.7, top_p: 0.9, ..SamplingParams::default() })] {
            let params = upload(&b.gpu, &vec![SampleParams::new(&p, 3); rows])?;
            let t = time_ms(&b.gpu, 3, 20, |_| sample_tokens(&b.gpu, &logits.as_view(), vocab, &params.as_view(), &mut out.as_view_mut()))?;
            b.report_bytes("sample_tokens", &format!("{rows} x {vocab}, {label}"), t.median_ms, (rows * vocab * 4) as f64);
        }
        // 2,000 distinct tokens a row (a repetition penalty over a long prompt): latency-bound.
        let edits: Vec<Vec<LogitEdit>> = (0..rows)
            .map(|r| (0..2000u32).map(|i| LogitEdit { token: i * 61 + r as u32 % 61, bias: 0.0, scale: 1.2, sub: 0.5 }).collect())
            .collect();
        let per_row: Vec<&[LogitEdit]> = edits.iter().map(|e| &e[..]).collect();
        let mut logits = logits;
        let mut state = LogitEdits::default();
        let t = time_ms(&b.gpu, 3, 20, |_| state.apply(&b.gpu, &mut logits.as_view_mut(), vocab, EditBatch::new(&per_row, vocab)?))?;
        let n = rows * 2000;
        b.report_bytes("apply_logit_edits", &format!("{rows} rows x 2000 edits (+ upload)"), t.median_ms, (n * (16 + 4 + 4 + 8)) as f64);
        // A grammar's mask on every row, a third of the vocabulary allowed: the upload (16 KiB a
        // row) and a read-modify-write of the masked logits.
        let words = mask_words(vocab);
        let masks: Vec<Vec<u32>> = (0..rows).map(|r| (0..words).map(|w| 0x9249_2492u32.rotate_left((r + w) as u32)).collect()).collect();
        let per_row: Vec<Option<&[u32]>> = masks.iter().map(|m| Some(&m[..])).collect();
        let batch = MaskBatch::new(&per_row, vocab)?;
        let mut state = TokenMasks::default();
        let t = time_ms(&b.gpu, 3, 20, |_| state.apply(&b.gpu, &mut logits.as_view_mut(), rows, vocab, &batch))?;
        b.report_bytes("apply_token_mask", &format!("{rows} x {vocab} (+ upload)"), t.median_ms, (rows * (words * 4 + vocab * 8)) as f64);
        // Scoring text: each row read twice (max, then the sum of exp), one float out.
        let targets: Vec<u32> = (0..rows as u32).map(|r| r * 509 % vocab as u32).collect();
        let mut targets_dev = upload(&b.gpu, &vec![0i32; rows])?;
        let mut scores = upload(&b.gpu, &vec![0f32; rows])?;
        let t = time_ms(&b.gpu, 3, 20, |_| {
            target_logprobs(&b.gpu, &logits.as_view(), vocab, &targets, &mut targets_dev, &mut scores.as_view_mut())
        })?;
        b.report_bytes("target_logprobs", &format!("{rows} x {vocab} (two reads a row)"), t.median_ms, (rows * vocab * 8) as f64);
    }
    Ok(())
}

fn main() {
    let filters: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let gpu = match Gpu::new() {
        Ok(g) => g,
        Err(e) => {
            eprintln!("SKIPPED kernel benchmarks: {e}");
            // Where a GPU is required (scripts/gpu-check), a skip is a failure.
            if std::env::var("NEMO_REQUIRE_GPU").is_ok_and(|v| v == "1") {
                std::process::exit(1);
            }
            return;
        }
    };
    let copy_gbs = copy_bandwidth_gbs(&gpu, 1 << 30).expect("copy bandwidth");
    let peak_tflops = std::env::var("NEMO_PEAK_TFLOPS").ok().and_then(|v| v.parse().ok());
    println!("# {} ({} SMs), device-to-device copy {copy_gbs:.0} GB/s, dense bf16 peak {peak_tflops:?} TFLOP/s", gpu.info.name, gpu.info.multiprocessors);
    let b = Bench { gpu, copy_gbs, peak_tflops };
    for (name, run) in SECTIONS {
        if filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str())) {
            if let Err(e) = run(&b) {
                println!("{name:<22} FAILED: {e}");
            }
        }
    }
}
