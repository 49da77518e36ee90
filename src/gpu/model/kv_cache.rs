//! The KV cache: one device buffer preallocated at start-up for every layer's K and V, divided
//! into fixed-size blocks of slots; a sequence's block table maps its positions to slots.

use cudarc::driver::{CudaSlice, CudaView, CudaViewMut};
use half::bf16;

use crate::engine::KvCacheDtype;
use crate::gpu::error::{GpuError, Result};
use crate::gpu::kernels::attention_e4m3::E4m3KvCache;
use crate::gpu::kernels::rope::E4m3KvViews;
use crate::gpu::Gpu;
use crate::model::ModelConfig;

/// Tokens per block (the unit the scheduler hands out).
pub const BLOCK_SIZE: usize = 16;

pub struct GpuKvCache {
    storage: Storage,
    pub dtype: KvCacheDtype,
    pub n_layers: usize,
    pub n_slots: usize,
    pub kv_dim: usize,
    pub n_kv_heads: usize,
}

enum Storage {
    /// `[n_layers, 2 (k, v), n_slots, kv_dim]`
    Bf16(CudaSlice<bf16>),
    /// docs/fp8-kv.md: codes `[n_layers, 2, n_slots, kv_dim]`, scales `[n_layers, 2, n_slots,
    /// n_kv_heads]` (a value is its code times its row's scale).
    E4m3 { codes: CudaSlice<u8>, scales: CudaSlice<f32> },
}

/// One layer of the cache, read-only, as the attention kernels take it.
pub enum KvLayer<'a> {
    Bf16 { k: CudaView<'a, bf16>, v: CudaView<'a, bf16> },
    E4m3 { k_codes: CudaView<'a, u8>, v_codes: CudaView<'a, u8>, k_scales: CudaView<'a, f32>, v_scales: CudaView<'a, f32> },
}

impl KvLayer<'_> {
    /// The FP8 layer as the `_e4m3` kernels take it (None for a bf16 layer).
    pub fn e4m3(&self) -> Option<E4m3KvCache<'_, '_>> {
        match self {
            KvLayer::Bf16 { .. } => None,
            KvLayer::E4m3 { k_codes, v_codes, k_scales, v_scales } => Some(E4m3KvCache { k_codes, v_codes, k_scales, v_scales }),
        }
    }
}

/// One layer of the cache, writable (the RoPE write and the decode kernels' fused write).
pub enum KvLayerMut<'a> {
    Bf16 { k: CudaViewMut<'a, bf16>, v: CudaViewMut<'a, bf16> },
    E4m3 { k_codes: CudaViewMut<'a, u8>, v_codes: CudaViewMut<'a, u8>, k_scales: CudaViewMut<'a, f32>, v_scales: CudaViewMut<'a, f32> },
}

impl<'a> KvLayerMut<'a> {
    /// The FP8 layer as `rope_write_kv_e4m3` takes it (None for a bf16 layer).
    pub fn e4m3<'s>(&'s mut self) -> Option<E4m3KvViews<'s, 'a>> {
        match self {
            KvLayerMut::Bf16 { .. } => None,
            KvLayerMut::E4m3 { k_codes, v_codes, k_scales, v_scales } => Some(E4m3KvViews { k_codes, v_codes, k_scales, v_scales }),
        }
    }
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
    /// Bytes of a `dtype` cache holding `tokens` tokens for `config`.
    pub fn bytes_for(config: &ModelConfig, dtype: KvCacheDtype, tokens: usize) -> usize {
        dtype.gpu_bytes_per_token(config) * tokens.next_multiple_of(BLOCK_SIZE)
    }

    /// Allocates the cache `size` asks for (whole blocks), from the memory free now: allocate it
    /// after the activations, so that `KvSize::FillFreeMemory` leaves them their room.
    pub fn new(gpu: &Gpu, config: &ModelConfig, size: KvSize, dtype: KvCacheDtype) -> Result<GpuKvCache> {
        // cudarc allocates and frees stream-ordered: after a synchronisation the activations
        // just allocated are counted and an earlier model's freed buffers are back (the default
        // pool keeps nothing past a sync), so the free memory is what this cache may take.
        gpu.ctx.synchronize().map_err(GpuError::driver("synchronising before sizing the KV cache"))?;
        let (free, _total) = gpu.ctx.mem_get_info().map_err(GpuError::driver("querying free memory"))?;
        let n_slots = resolve_kv_tokens(size, free, dtype.gpu_bytes_per_token(config)).map_err(GpuError::OutOfMemory)?;
        let what = || GpuError::driver(format!("allocating the {n_slots}-token KV cache"));
        let values = config.n_layers * 2 * n_slots * config.kv_dim();
        let storage = match dtype {
            KvCacheDtype::Auto => Storage::Bf16(gpu.stream.alloc_zeros::<bf16>(values).map_err(what())?),
            KvCacheDtype::Fp8E4m3 => Storage::E4m3 {
                codes: gpu.stream.alloc_zeros::<u8>(values).map_err(what())?,
                scales: gpu.stream.alloc_zeros::<f32>(config.n_layers * 2 * n_slots * config.n_kv_heads).map_err(what())?,
            },
        };
        Ok(GpuKvCache { storage, dtype, n_layers: config.n_layers, n_slots, kv_dim: config.kv_dim(), n_kv_heads: config.n_kv_heads })
    }

    pub fn n_blocks(&self) -> usize {
        self.n_slots / BLOCK_SIZE
    }

    pub fn bytes(&self) -> usize {
        match &self.storage {
            Storage::Bf16(buf) => buf.len() * 2,
            Storage::E4m3 { codes, scales } => codes.len() + scales.len() * 4,
        }
    }

    /// The element range of `layer`'s K (which = 0) or V (1) in a buffer of `per` elements a
    /// (layer, K or V).
    fn range(layer: usize, which: usize, per: usize) -> std::ops::Range<usize> {
        let start = (layer * 2 + which) * per;
        start..start + per
    }

    /// K and V of `layer`, each `[n_slots, kv_dim]` (and FP8's scales `[n_slots, n_kv_heads]`).
    pub fn layer(&self, layer: usize) -> KvLayer<'_> {
        let (values, rows) = (self.n_slots * self.kv_dim, self.n_slots * self.n_kv_heads);
        match &self.storage {
            Storage::Bf16(buf) => KvLayer::Bf16 { k: buf.slice(Self::range(layer, 0, values)), v: buf.slice(Self::range(layer, 1, values)) },
            Storage::E4m3 { codes, scales } => KvLayer::E4m3 {
                k_codes: codes.slice(Self::range(layer, 0, values)),
                v_codes: codes.slice(Self::range(layer, 1, values)),
                k_scales: scales.slice(Self::range(layer, 0, rows)),
                v_scales: scales.slice(Self::range(layer, 1, rows)),
            },
        }
    }

    /// `layer`, writable.
    pub fn layer_mut(&mut self, layer: usize) -> KvLayerMut<'_> {
        fn halves<T>(buf: &mut CudaSlice<T>, per: usize, layer: usize) -> (CudaViewMut<'_, T>, CudaViewMut<'_, T>) {
            let mut it = buf.as_view_mut().chunks_exact_mut(per).skip(2 * layer);
            (it.next().expect("layer within the cache"), it.next().expect("layer within the cache"))
        }
        let (values, rows) = (self.n_slots * self.kv_dim, self.n_slots * self.n_kv_heads);
        match &mut self.storage {
            Storage::Bf16(buf) => {
                let (k, v) = halves(buf, values, layer);
                KvLayerMut::Bf16 { k, v }
            }
            Storage::E4m3 { codes, scales } => {
                let (k_codes, v_codes) = halves(codes, values, layer);
                let (k_scales, v_scales) = halves(scales, rows, layer);
                KvLayerMut::E4m3 { k_codes, v_codes, k_scales, v_scales }
            }
        }
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
