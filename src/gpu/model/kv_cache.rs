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

/// Bytes of GPU memory left free beside the KV cache: the RoPE table and the CUDA graphs'
/// metadata (allocated after it, under 100 MB at Nemo's shape), graph executables, the driver's
/// own needs and cuBLAS's workspace in the kernel lab. The activations are allocated before it.
pub const KV_RESERVE_BYTES: usize = 1 << 30;

/// How big the KV cache is made at start-up (`--kv-tokens N | max`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KvSize {
    /// This many tokens (rounded up to whole blocks); refused, with the number that fits, when
    /// the GPU has not the memory.
    Tokens(usize),
    /// As many tokens as the GPU's free memory holds once everything else is allocated (less
    /// `KV_RESERVE_BYTES`), at most `at_most`: vLLM's `--gpu-memory-utilization`, for serving.
    FillFreeMemory { at_most: usize },
}

impl KvSize {
    /// `--kv-tokens max`.
    pub const MAX: KvSize = KvSize::FillFreeMemory { at_most: usize::MAX };

    /// No more than `n` tokens (one sequence's context: a single-sequence backend could never
    /// use more).
    pub fn at_most(self, n: usize) -> KvSize {
        match self {
            KvSize::Tokens(t) => KvSize::Tokens(t.min(n)),
            KvSize::FillFreeMemory { at_most } => KvSize::FillFreeMemory { at_most: at_most.min(n) },
        }
    }

    /// The most tokens the cache can have (what the RoPE table and a step's chunk are sized by).
    pub fn upper_bound(self) -> usize {
        match self {
            KvSize::Tokens(t) => t,
            KvSize::FillFreeMemory { at_most } => at_most,
        }
    }
}

impl From<usize> for KvSize {
    fn from(tokens: usize) -> KvSize {
        KvSize::Tokens(tokens)
    }
}

impl std::fmt::Display for KvSize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KvSize::Tokens(t) => write!(f, "{t} tokens"),
            KvSize::FillFreeMemory { at_most: usize::MAX } => write!(f, "as many tokens as fit"),
            KvSize::FillFreeMemory { at_most } => write!(f, "as many tokens as fit, at most {at_most}"),
        }
    }
}

/// Tokens, in whole blocks, that `free` bytes hold at `per_token` bytes each after keeping
/// `reserve` (0 when even the reserve does not fit).
pub fn tokens_that_fit(free: usize, reserve: usize, per_token: usize) -> usize {
    free.saturating_sub(reserve) / per_token.max(1) / BLOCK_SIZE * BLOCK_SIZE
}

/// The cache's token count for `size` with `free` bytes of GPU memory, or the refusal (with the
/// numbers and the remedy) when it does not fit.
pub fn resolve_kv_tokens(size: KvSize, free: usize, per_token: usize) -> std::result::Result<usize, String> {
    let fits = tokens_that_fit(free, KV_RESERVE_BYTES, per_token);
    let gib = |b: usize| b as f64 / (1u64 << 30) as f64;
    let free_text = format!(
        "{:.1} GiB of GPU memory is free after the weights and activations (keeping {:.0} GiB for the driver and CUDA graphs)",
        gib(free),
        gib(KV_RESERVE_BYTES)
    );
    match size {
        KvSize::Tokens(tokens) => {
            let n_slots = tokens.max(1).saturating_add(BLOCK_SIZE - 1) / BLOCK_SIZE * BLOCK_SIZE;
            if n_slots > fits || n_slots < tokens {
                return Err(format!(
                    "the KV cache for {tokens} tokens needs {:.1} GiB, but {free_text}; use --kv-tokens {fits} or fewer",
                    gib(tokens.saturating_mul(per_token))
                ));
            }
            Ok(n_slots)
        }
        KvSize::FillFreeMemory { at_most } => {
            // (`fits` is whole blocks, so a smaller cap rounded up to a block stays within it.)
            let tokens = if at_most >= fits { fits } else { at_most.max(1).next_multiple_of(BLOCK_SIZE) };
            if tokens == 0 {
                return Err(format!(
                    "no room for a KV cache: {free_text}; a smaller --max-batch needs fewer activations"
                ));
            }
            Ok(tokens)
        }
    }
}

impl GpuKvCache {
    /// Bytes of a cache holding `tokens` tokens for `config`.
    pub fn bytes_for(config: &ModelConfig, tokens: usize) -> usize {
        config.kv_bytes_per_token() * tokens.next_multiple_of(BLOCK_SIZE)
    }

    /// Allocates the cache `size` asks for (whole blocks), from the memory free now: allocate it
    /// after the activations, so that `KvSize::FillFreeMemory` leaves them their room.
    pub fn new(gpu: &Gpu, config: &ModelConfig, size: KvSize) -> Result<GpuKvCache> {
        // cudarc allocates and frees stream-ordered: after a synchronisation the activations
        // just allocated are counted and an earlier model's freed buffers are back (the default
        // pool keeps nothing past a sync), so the free memory is what this cache may take.
        gpu.ctx.synchronize().map_err(GpuError::driver("synchronising before sizing the KV cache"))?;
        let (free, _total) = gpu.ctx.mem_get_info().map_err(GpuError::driver("querying free memory"))?;
        let n_slots = resolve_kv_tokens(size, free, config.kv_bytes_per_token()).map_err(GpuError::OutOfMemory)?;
        let bytes = Self::bytes_for(config, n_slots);
        let buf = gpu
            .stream
            .alloc_zeros::<bf16>(bytes / 2)
            .map_err(GpuError::driver(format!("allocating the {n_slots}-token KV cache")))?;
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

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: usize = 1 << 30;
    /// Nemo 12B: 40 layers x (K, V) x 8 heads x 128 x 2 bytes.
    const NEMO_PER_TOKEN: usize = 40 * 2 * 8 * 128 * 2;

    #[test]
    fn tokens_that_fit_are_whole_blocks_after_the_reserve() {
        assert_eq!(tokens_that_fit(GIB / 2, GIB, NEMO_PER_TOKEN), 0);
        assert_eq!(tokens_that_fit(GIB + 17 * NEMO_PER_TOKEN, GIB, NEMO_PER_TOKEN), 16);
        // An H100 after 24.5 GB of weights and the activations: ~50 GiB free, ~321k tokens.
        let t = tokens_that_fit(50 * GIB, KV_RESERVE_BYTES, NEMO_PER_TOKEN);
        assert_eq!(t % BLOCK_SIZE, 0);
        assert!(t * NEMO_PER_TOKEN <= 49 * GIB && (t + BLOCK_SIZE) * NEMO_PER_TOKEN > 49 * GIB, "{t}");
    }

    #[test]
    fn a_fixed_size_is_refused_with_the_size_that_fits() {
        let free = 20 * GIB;
        let fits = tokens_that_fit(free, KV_RESERVE_BYTES, NEMO_PER_TOKEN);
        assert_eq!(resolve_kv_tokens(KvSize::Tokens(fits), free, NEMO_PER_TOKEN), Ok(fits));
        assert_eq!(resolve_kv_tokens(KvSize::Tokens(fits - 3), free, NEMO_PER_TOKEN), Ok(fits));
        let err = resolve_kv_tokens(KvSize::Tokens(131_072), free, NEMO_PER_TOKEN).unwrap_err();
        assert!(err.contains("needs 20.0 GiB") && err.contains(&format!("use --kv-tokens {fits} or fewer")), "{err}");
        assert_eq!(resolve_kv_tokens(KvSize::Tokens(0), free, NEMO_PER_TOKEN), Ok(BLOCK_SIZE));
        assert!(resolve_kv_tokens(KvSize::Tokens(usize::MAX - 3), free, NEMO_PER_TOKEN).is_err());
    }

    #[test]
    fn filling_takes_what_fits_up_to_the_cap() {
        let free = 20 * GIB;
        let fits = tokens_that_fit(free, KV_RESERVE_BYTES, NEMO_PER_TOKEN);
        assert_eq!(resolve_kv_tokens(KvSize::MAX, free, NEMO_PER_TOKEN), Ok(fits));
        assert_eq!(resolve_kv_tokens(KvSize::MAX.at_most(1000), free, NEMO_PER_TOKEN), Ok(1008));
        let err = resolve_kv_tokens(KvSize::MAX, GIB / 2, NEMO_PER_TOKEN).unwrap_err();
        assert!(err.starts_with("no room for a KV cache"), "{err}");
        assert_eq!(KvSize::Tokens(9000).at_most(4096), KvSize::Tokens(4096));
        assert_eq!(KvSize::MAX.to_string(), "as many tokens as fit");
    }
}
