//! The KV cache: one device buffer preallocated at start-up for every layer's K and V, divided
//! into fixed-size blocks of slots; a sequence's block table maps its positions to slots.

use cudarc::driver::{CudaSlice, CudaView, CudaViewMut};
use half::bf16;

use crate::gpu::error::{GpuError, Result};
use crate::gpu::Gpu;
use crate::model::ModelConfig;

/// Tokens per block (the unit the scheduler hands out).
pub const BLOCK_SIZE: usize = 16;

pub struct GpuKvCache {
    /// `[n_layers, 2 (k, v), n_slots, kv_dim]`
    buf: CudaSlice<bf16>,
    pub n_layers: usize,
    pub n_slots: usize,
    pub kv_dim: usize,
}

impl GpuKvCache {
    /// Bytes of a cache holding `tokens` tokens for `config`.
    pub fn bytes_for(config: &ModelConfig, tokens: usize) -> usize {
        config.kv_bytes_per_token() * tokens.next_multiple_of(BLOCK_SIZE)
    }

    /// Allocates room for `tokens` tokens (rounded up to whole blocks), refusing with the numbers
    /// and the remedy when the device has not that much free memory.
    pub fn new(gpu: &Gpu, config: &ModelConfig, tokens: usize) -> Result<GpuKvCache> {
        let n_slots = tokens.next_multiple_of(BLOCK_SIZE);
        let bytes = Self::bytes_for(config, tokens);
        let (free, _total) = gpu.ctx.mem_get_info().map_err(GpuError::driver("querying free memory"))?;
        // Keep room for activations, the RoPE table and the driver's own needs.
        let reserve = 2usize << 30;
        if bytes + reserve > free {
            let fits = free.saturating_sub(reserve) / config.kv_bytes_per_token() / BLOCK_SIZE * BLOCK_SIZE;
            return Err(GpuError::OutOfMemory(format!(
                "the KV cache for {tokens} tokens needs {:.1} GiB, but {:.1} GiB of GPU memory is free \
                 after the weights (keeping {:.0} GiB for activations); use --kv-tokens {fits} or fewer",
                bytes as f64 / (1u64 << 30) as f64,
                free as f64 / (1u64 << 30) as f64,
                reserve as f64 / (1u64 << 30) as f64
            )));
        }
        let buf = gpu
            .stream
            .alloc_zeros::<bf16>(bytes / 2)
            .map_err(GpuError::driver(format!("allocating the {tokens}-token KV cache")))?;
        Ok(GpuKvCache { buf, n_layers: config.n_layers, n_slots, kv_dim: config.kv_dim() })
    }

    pub fn n_blocks(&self) -> usize {
        self.n_slots / BLOCK_SIZE
    }

    pub fn bytes(&self) -> usize {
        self.buf.len() * 2
    }

    fn range(&self, layer: usize, which: usize) -> std::ops::Range<usize> {
        let per = self.n_slots * self.kv_dim;
        let start = (layer * 2 + which) * per;
        start..start + per
    }

    /// K and V of `layer`, each `[n_slots, kv_dim]`.
    pub fn layer(&self, layer: usize) -> (CudaView<'_, bf16>, CudaView<'_, bf16>) {
        (self.buf.slice(self.range(layer, 0)), self.buf.slice(self.range(layer, 1)))
    }

    /// Mutable K and V of `layer`.
    pub fn layer_mut(&mut self, layer: usize) -> (CudaViewMut<'_, bf16>, CudaViewMut<'_, bf16>) {
        let per = self.n_slots * self.kv_dim;
        let mut halves = self.buf.as_view_mut().chunks_exact_mut(per).skip(2 * layer);
        let k = halves.next().expect("layer within the cache");
        let v = halves.next().expect("layer within the cache");
        (k, v)
    }
}
