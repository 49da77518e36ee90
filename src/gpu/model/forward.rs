//! The forward pass: per chunk of tokens, embedding -> per layer [RMSNorm, fused QKV GEMM, RoPE +
//! KV write, attention, O GEMM + residual, RMSNorm, gate/up GEMM + SwiGLU, down GEMM + residual]
//! -> final norm -> LM head (f32 logits of the last token).

use cudarc::driver::{CudaSlice, CudaView, CudaViewMut};
use half::bf16;

use super::{GpuKvCache, GpuWeights, BLOCK_SIZE};
use crate::gpu::error::{GpuError, Result};
use crate::gpu::kernels::attention::{
    attention_decode, attention_prefill, decode_splits, AttentionMeta, AttentionShape, DecodeWorkspace,
};
use crate::gpu::kernels::embedding::embedding_gather;
use crate::gpu::kernels::gemm::{gemm, Epilogue, GemmShape};
use crate::gpu::kernels::gemv::{gemv, gemv_f32, MAX_M};
use crate::gpu::kernels::rmsnorm::rmsnorm;
use crate::gpu::kernels::rope::{rope_cos_sin_table, rope_write_kv, RopeShape, RopeTable};
use crate::gpu::{download, Gpu};

/// Activation buffers for up to `max_chunk` tokens per forward call.
struct Scratch {
    hidden: CudaSlice<bf16>, // [T, dim]: the residual stream
    normed: CudaSlice<bf16>, // [T, dim]
    qkv: CudaSlice<bf16>,    // [T, q_dim + 2 kv_dim]
    attn: CudaSlice<bf16>,   // [T, q_dim]
    ffn: CudaSlice<bf16>,    // [T, ffn_dim]
    logits: CudaSlice<f32>,  // [vocab]
    ids: CudaSlice<i32>,     // [T]
    positions: CudaSlice<i32>,
    slots: CudaSlice<i32>,
}

pub struct CudaModel {
    pub gpu: Gpu,
    pub weights: GpuWeights,
    pub kv: GpuKvCache,
    rope: RopeTable,
    scratch: Scratch,
    decode_workspace: DecodeWorkspace,
    max_decode_splits: usize,
    /// Most tokens one `forward_chunk` takes (longer prompts are prefilled in chunks).
    pub max_chunk: usize,
}

/// `A . W^T` on the bandwidth path for M <= 8, on tensor cores above.
fn linear(gpu: &Gpu, a: &CudaView<bf16>, w: &CudaSlice<bf16>, out: &mut CudaViewMut<bf16>, shape: GemmShape, epi: Epilogue) -> Result<()> {
    if shape.m <= MAX_M {
        gemv(gpu, a, &w.as_view(), out, shape, epi)
    } else {
        gemm(gpu, a, &w.as_view(), out, shape, epi)
    }
}

impl CudaModel {
    /// Allocates the KV cache for `kv_tokens` tokens and scratch for chunks of `max_chunk`.
    pub fn new(gpu: Gpu, weights: GpuWeights, kv_tokens: usize, max_chunk: usize) -> Result<CudaModel> {
        let c = weights.config.clone();
        let kv = GpuKvCache::new(&gpu, &c, kv_tokens)?;
        let rope = rope_cos_sin_table(&gpu, kv.n_slots.min(c.max_context), c.head_dim, c.rope_theta)?;
        let t = max_chunk;
        let alloc = |n: usize| gpu.stream.alloc_zeros::<bf16>(n).map_err(GpuError::driver("allocating activations"));
        let alloc_i32 = |n: usize| gpu.stream.alloc_zeros::<i32>(n).map_err(GpuError::driver("allocating activations"));
        let scratch = Scratch {
            hidden: alloc(t * c.dim)?,
            normed: alloc(t * c.dim)?,
            qkv: alloc(t * (c.q_dim() + 2 * c.kv_dim()))?,
            attn: alloc(t * c.q_dim())?,
            ffn: alloc(t * c.ffn_dim)?,
            logits: gpu.stream.alloc_zeros::<f32>(c.vocab_size).map_err(GpuError::driver("allocating logits"))?,
            ids: alloc_i32(t)?,
            positions: alloc_i32(t)?,
            slots: alloc_i32(t)?,
        };
        let max_decode_splits = 2 * gpu.info.multiprocessors;
        let decode_workspace = DecodeWorkspace::new(&gpu, 1, c.n_heads, max_decode_splits, c.head_dim)?;
        Ok(CudaModel { gpu, weights, kv, rope, scratch, decode_workspace, max_decode_splits, max_chunk })
    }

    /// Tokens the KV cache (and the RoPE table) can hold for one sequence.
    pub fn capacity(&self) -> usize {
        self.rope.max_positions
    }

    /// Runs `ids` (at most `max_chunk`, already checked against the vocabulary) for the one
    /// sequence whose first `held` tokens sit at slots 0..held, writing their K/V after those.
    /// With `want_logits`, returns the last token's f32 logits.
    pub fn forward_chunk(&mut self, ids: &[i32], held: usize, want_logits: bool) -> Result<Option<Vec<f32>>> {
        let n = ids.len();
        let c = self.weights.config.clone();
        let bad = |what: String| GpuError::BadArgument { kernel: "forward", what };
        if n == 0 || n > self.max_chunk {
            return Err(bad(format!("{n} tokens per chunk (1..={})", self.max_chunk)));
        }
        let ctx = held + n;
        if ctx > self.capacity() {
            return Err(bad(format!("{ctx} tokens exceed the {}-token KV cache", self.capacity())));
        }
        let gpu = &self.gpu;
        let s = &mut self.scratch;
        let positions: Vec<i32> = (held as i32..ctx as i32).collect();
        let copy = |what| GpuError::driver(format!("uploading {what}"));
        gpu.stream.memcpy_htod(ids, &mut s.ids.slice_mut(0..n)).map_err(copy("token ids"))?;
        gpu.stream.memcpy_htod(&positions, &mut s.positions.slice_mut(0..n)).map_err(copy("positions"))?;
        // One sequence owning blocks 0, 1, 2, ...: slot == position.
        gpu.stream.memcpy_htod(&positions, &mut s.slots.slice_mut(0..n)).map_err(copy("slots"))?;
        let blocks = ctx.div_ceil(BLOCK_SIZE);
        let meta = AttentionMeta {
            cu_seqlens_q: vec![0, n as i32],
            ctx_lens: vec![ctx as i32],
            block_tables: (0..blocks as i32).collect(),
            max_blocks: blocks,
            block_size: BLOCK_SIZE,
        }
        .upload(gpu, self.kv.n_blocks())?;

        let (dim, qkv_w) = (c.dim, c.q_dim() + 2 * c.kv_dim());
        let w = &self.weights;
        embedding_gather(gpu, &s.ids.slice(0..n), &w.embedding.as_view(), &mut s.hidden.slice_mut(0..n * dim), c.vocab_size, dim)?;
        let attn_shape = AttentionShape { n_heads: c.n_heads, n_kv_heads: c.n_kv_heads, head_dim: c.head_dim, q_stride: qkv_w };
        let rope_shape = RopeShape { n_heads: c.n_heads, n_kv_heads: c.n_kv_heads, head_dim: c.head_dim, layout: w.rope_layout };
        let splits = decode_splits(gpu.info.multiprocessors, 1, c.n_kv_heads, ctx).min(self.max_decode_splits);
        for (l, layer) in w.layers.iter().enumerate() {
            rmsnorm(gpu, &s.hidden.slice(0..n * dim), &layer.attn_norm.as_view(), &mut s.normed.slice_mut(0..n * dim), dim, c.norm_eps)?;
            let shape = GemmShape { m: n, n: qkv_w, k: dim };
            linear(gpu, &s.normed.slice(0..n * dim), &layer.wqkv, &mut s.qkv.slice_mut(0..n * qkv_w), shape, Epilogue::Store)?;
            {
                let (mut k_cache, mut v_cache) = self.kv.layer_mut(l);
                rope_write_kv(
                    gpu, rope_shape, &self.rope, &mut s.qkv.slice_mut(0..n * qkv_w), &s.positions.slice(0..n),
                    &s.slots.slice(0..n), &mut k_cache, &mut v_cache,
                )?;
            }
            let (k_cache, v_cache) = self.kv.layer(l);
            let q = s.qkv.slice(0..n * qkv_w);
            let mut attn = s.attn.slice_mut(0..n * c.q_dim());
            if n == 1 {
                attention_decode(gpu, attn_shape, &meta, &q, &k_cache, &v_cache, &mut self.decode_workspace, splits, &mut attn)?;
            } else {
                attention_prefill(gpu, attn_shape, &meta, &q, &k_cache, &v_cache, &mut attn)?;
            }
            let shape = GemmShape { m: n, n: dim, k: c.q_dim() };
            linear(gpu, &s.attn.slice(0..n * c.q_dim()), &layer.wo, &mut s.hidden.slice_mut(0..n * dim), shape, Epilogue::AddInPlace)?;
            rmsnorm(gpu, &s.hidden.slice(0..n * dim), &layer.ffn_norm.as_view(), &mut s.normed.slice_mut(0..n * dim), dim, c.norm_eps)?;
            let shape = GemmShape { m: n, n: 2 * c.ffn_dim, k: dim };
            linear(gpu, &s.normed.slice(0..n * dim), &layer.w_gate_up, &mut s.ffn.slice_mut(0..n * c.ffn_dim), shape, Epilogue::SwiGlu)?;
            let shape = GemmShape { m: n, n: dim, k: c.ffn_dim };
            linear(gpu, &s.ffn.slice(0..n * c.ffn_dim), &layer.w_down, &mut s.hidden.slice_mut(0..n * dim), shape, Epilogue::AddInPlace)?;
        }
        if !want_logits {
            return Ok(None);
        }
        let last = (n - 1) * dim..n * dim;
        rmsnorm(gpu, &s.hidden.slice(last), &w.final_norm.as_view(), &mut s.normed.slice_mut(0..dim), dim, c.norm_eps)?;
        let shape = GemmShape { m: 1, n: c.vocab_size, k: dim };
        gemv_f32(gpu, &s.normed.slice(0..dim), &w.lm_head().as_view(), &mut s.logits.as_view_mut(), shape)?;
        Ok(Some(download(gpu, &s.logits)?))
    }
}
