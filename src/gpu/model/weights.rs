//! The model's weights on the GPU, in the layouts the kernels want, fixed up once at load:
//! q/k/v fused into one matrix, gate/up fused and interleaved in 8-row groups (see
//! kernels/gemm.cu), RoPE convention carried along as the checkpoint's own.

use std::time::Instant;

use cudarc::driver::CudaSlice;
use half::bf16;
use indicatif::{ProgressBar, ProgressStyle};

use crate::gpu::error::{GpuError, Result};
use crate::gpu::kernels::random::fill_uniform;
use crate::gpu::{upload, Gpu};
use crate::model::{ModelConfig, ModelWeights, RopeLayout};

pub struct GpuLayer {
    pub attn_norm: CudaSlice<bf16>, // [dim]
    pub wqkv: CudaSlice<bf16>,      // [q_dim + 2 kv_dim, dim]: wq | wk | wv
    pub wo: CudaSlice<bf16>,        // [dim, q_dim]
    pub ffn_norm: CudaSlice<bf16>,  // [dim]
    pub w_gate_up: CudaSlice<bf16>, // [2 ffn_dim, dim], 8 gate rows then their 8 up rows, ...
    pub w_down: CudaSlice<bf16>,    // [dim, ffn_dim]
}

pub struct GpuWeights {
    pub config: ModelConfig,
    pub rope_layout: RopeLayout,
    pub embedding: CudaSlice<bf16>, // [vocab, dim]
    pub layers: Vec<GpuLayer>,
    pub final_norm: CudaSlice<bf16>, // [dim]
    /// `[vocab, dim]`; None when tied to the embedding.
    lm_head: Option<CudaSlice<bf16>>,
    /// Bytes on the device.
    pub bytes: usize,
    /// Seconds the upload (or random fill) took.
    pub load_seconds: f64,
}

/// Interleaves gate `[F, K]` and up `[F, K]` into the fused `[2F, K]` layout: rows 16i..16i+7 are
/// gate rows 8i..8i+7, rows 16i+8..16i+15 the matching up rows. F must be a multiple of 8.
pub fn interleave_gate_up(gate: &[bf16], up: &[bf16], k: usize) -> Vec<bf16> {
    assert_eq!(gate.len(), up.len());
    let f = gate.len() / k;
    assert!(f % 8 == 0 && f * k == gate.len(), "gate/up of {f} rows are not groups of 8");
    let mut out = Vec::with_capacity(2 * f * k);
    for g in 0..f / 8 {
        out.extend_from_slice(&gate[g * 8 * k..(g + 1) * 8 * k]);
        out.extend_from_slice(&up[g * 8 * k..(g + 1) * 8 * k]);
    }
    out
}

/// Shapes the kernels cannot serve, refused at load with the reason.
fn check_config(c: &ModelConfig) -> Result<()> {
    let bad = |what: String| Err(GpuError::BadArgument { kernel: "model", what });
    if c.head_dim != 64 && c.head_dim != 128 {
        return bad(format!("head_dim {} (the attention kernels serve 64 and 128)", c.head_dim));
    }
    if c.dim % 8 != 0 || c.ffn_dim % 8 != 0 {
        return bad(format!("dim {} and ffn_dim {} must be multiples of 8", c.dim, c.ffn_dim));
    }
    if ![1, 2, 3, 4, 8].contains(&(c.n_heads / c.n_kv_heads)) {
        return bad(format!("{} query heads per KV head (decode kernels exist for 1-4 and 8)", c.n_heads / c.n_kv_heads));
    }
    Ok(())
}

fn progress(total_bytes: u64) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(total_bytes), indicatif::ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("loading weights {bar:40} {bytes}/{total_bytes} ({bytes_per_sec})")
            .expect("valid template"),
    );
    bar
}

impl GpuWeights {
    /// Copies validated host weights (memory-mapped or dequantised) to the device with a progress
    /// bar on stderr, fusing q/k/v and gate/up on the way.
    pub fn upload(gpu: &Gpu, w: &ModelWeights) -> Result<GpuWeights> {
        let c = w.config.clone();
        check_config(&c)?;
        let start = Instant::now();
        let total: usize = w.layers.len() * layer_params(&c) * 2 + 2 * c.vocab_size * c.dim * 2;
        let bar = progress(total as u64);
        let mut bytes = 0usize;
        let mut put = |host: &[bf16]| -> Result<CudaSlice<bf16>> {
            bytes += host.len() * 2;
            bar.inc(host.len() as u64 * 2);
            upload(gpu, host)
        };
        let embedding = put(w.embedding.as_bf16())?;
        let mut layers = Vec::with_capacity(c.n_layers);
        for l in &w.layers {
            let qkv = [l.wq.as_bf16(), l.wk.as_bf16(), l.wv.as_bf16()].concat();
            let gate_up = interleave_gate_up(l.w_gate.as_bf16(), l.w_up.as_bf16(), c.dim);
            layers.push(GpuLayer {
                attn_norm: put(l.attn_norm.as_bf16())?,
                wqkv: put(&qkv)?,
                wo: put(l.wo.as_bf16())?,
                ffn_norm: put(l.ffn_norm.as_bf16())?,
                w_gate_up: put(&gate_up)?,
                w_down: put(l.w_down.as_bf16())?,
            });
        }
        let final_norm = put(w.final_norm.as_bf16())?;
        let lm_head = w.lm_head.as_ref().map(|t| put(t.as_bf16())).transpose()?;
        gpu.synchronize("uploading weights")?;
        bar.finish_and_clear();
        Ok(GpuWeights {
            config: c,
            rope_layout: w.rope_layout,
            embedding,
            layers,
            final_norm,
            lm_head,
            bytes,
            load_seconds: start.elapsed().as_secs_f64(),
        })
    }

    /// Exact shapes from `config`, seeded uniform values generated on the device (vLLM's
    /// `--load-format dummy`): for measuring without the checkpoint. Linear weights are scaled by
    /// 1/sqrt(fan-in) and norms are 1, so activations stay O(1) through all layers.
    pub fn dummy(gpu: &Gpu, config: &ModelConfig, seed: u64) -> Result<GpuWeights> {
        check_config(config)?;
        let c = config.clone();
        let start = Instant::now();
        let mut bytes = 0usize;
        let mut counter = 0u64;
        let mut random = |n: usize, fan_in: usize| -> Result<CudaSlice<bf16>> {
            let mut buf = gpu.stream.alloc_zeros::<bf16>(n).map_err(GpuError::driver("allocating dummy weights"))?;
            counter += 1;
            fill_uniform(gpu, &mut buf.as_view_mut(), seed.wrapping_mul(1_000_003).wrapping_add(counter), (3.0 / fan_in as f32).sqrt())?;
            bytes += n * 2;
            Ok(buf)
        };
        let ones = |n: usize| upload(gpu, &vec![bf16::ONE; n]);
        let embedding = random(c.vocab_size * c.dim, 1)?;
        let mut layers = Vec::with_capacity(c.n_layers);
        for _ in 0..c.n_layers {
            layers.push(GpuLayer {
                attn_norm: ones(c.dim)?,
                wqkv: random((c.q_dim() + 2 * c.kv_dim()) * c.dim, c.dim)?,
                wo: random(c.dim * c.q_dim(), c.q_dim())?,
                ffn_norm: ones(c.dim)?,
                w_gate_up: random(2 * c.ffn_dim * c.dim, c.dim)?,
                w_down: random(c.dim * c.ffn_dim, c.ffn_dim)?,
            });
        }
        let final_norm = ones(c.dim)?;
        let lm_head = if c.tied_embeddings { None } else { Some(random(c.vocab_size * c.dim, c.dim)?) };
        gpu.synchronize("filling dummy weights")?;
        Ok(GpuWeights {
            config: c,
            rope_layout: RopeLayout::Interleaved,
            embedding,
            layers,
            final_norm,
            lm_head,
            bytes: bytes + (2 * config.n_layers + 1) * config.dim * 2,
            load_seconds: start.elapsed().as_secs_f64(),
        })
    }

    pub fn lm_head(&self) -> &CudaSlice<bf16> {
        self.lm_head.as_ref().unwrap_or(&self.embedding)
    }
}

/// Parameters of one decoder layer.
fn layer_params(c: &ModelConfig) -> usize {
    2 * c.dim + (c.q_dim() + 2 * c.kv_dim()) * c.dim + c.dim * c.q_dim() + 3 * c.ffn_dim * c.dim
}
