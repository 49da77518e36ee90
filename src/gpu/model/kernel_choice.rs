//! Which kernel serves each opt-in path, chosen at start-up from the environment: the kernels
//! not yet checked on a GPU stay off by default, and an unknown value is an error, not a silent
//! default (docs/architecture.md, "Opt-in GPU paths").

use crate::engine::KvCacheDtype;
use crate::gpu::error::{GpuError, Result};
use crate::gpu::kernels::decode_table::{DecodeKernel, DECODE_KERNELS};
use crate::gpu::kernels::attention_wgmma::WgmmaSchedule;

/// Which tensor-core GEMM serves M > 8 (`NEMO_GEMM=mma|wgmma|split-k|wgmma-split-k`, default mma).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GemmKernel {
    /// kernels/gemm.cu: mma.sync, cp.async; checked on an H100 (docs/gpu-runs.md).
    MmaSync,
    /// kernels/gemm_wgmma.cu: wgmma + TMA; the default once a GPU run has checked it.
    Wgmma,
    /// kernels/gemm.cu split over K when its output tiles would leave SMs idle (decode batches).
    MmaSplitK,
    /// kernels/gemm_wgmma.cu split over K likewise (1 split, so the plain kernel, at prefill).
    WgmmaSplitK,
}

impl GemmKernel {
    /// From `NEMO_GEMM`; an unknown value is an error, not a silent default.
    pub fn from_env() -> Result<GemmKernel> {
        match std::env::var("NEMO_GEMM").as_deref() {
            Err(_) | Ok("") | Ok("mma") => Ok(GemmKernel::MmaSync),
            Ok("wgmma") => Ok(GemmKernel::Wgmma),
            Ok("split-k") => Ok(GemmKernel::MmaSplitK),
            Ok("wgmma-split-k") => Ok(GemmKernel::WgmmaSplitK),
            Ok(other) => Err(GpuError::BadArgument {
                kernel: "gemm",
                what: format!("NEMO_GEMM={other:?}: expected mma, wgmma, split-k or wgmma-split-k"),
            }),
        }
    }
}

/// Which decode attention kernel serves decode steps: `NEMO_DECODE_ATTENTION=NAME`, a name in
/// `DECODE_KERNELS` (split-k, mma-split-k, ...), default its first (split-k, on CUDA cores: the
/// mma one becomes the default once a GPU run has checked and timed it).
pub fn decode_kernel_from_env() -> Result<DecodeKernel> {
    decode_kernel_named(std::env::var("NEMO_DECODE_ATTENTION").ok().as_deref())
}

fn decode_kernel_named(value: Option<&str>) -> Result<DecodeKernel> {
    match value {
        None | Some("") => Ok(DecodeKernel::CUDA_CORES),
        Some(name) => DecodeKernel::by_name(name).ok_or_else(|| GpuError::BadArgument {
            kernel: "attention_decode",
            what: format!(
                "NEMO_DECODE_ATTENTION={name:?}: expected one of {:?}",
                DECODE_KERNELS.iter().map(|k| k.name).collect::<Vec<_>>()
            ),
        }),
    }
}

/// Whether the decode attention (either kernel) rotates its own new tokens and writes them into
/// the KV cache (`attention_decode_rope`: no rope_write_kv launch in a decode layer). On unless
/// `NEMO_DECODE_ROPE=separate`.
pub fn rope_in_decode_from_env() -> Result<bool> {
    match std::env::var("NEMO_DECODE_ROPE").as_deref() {
        Err(_) | Ok("") | Ok("fused") => Ok(true),
        Ok("separate") => Ok(false),
        Ok(other) => Err(GpuError::BadArgument {
            kernel: "attention_decode",
            what: format!("NEMO_DECODE_ROPE={other:?}: expected fused or separate"),
        }),
    }
}

/// Which prefill attention kernel serves prompt chunks (`NEMO_PREFILL_ATTENTION=mma|wgmma|
/// wgmma-overlap|wgmma-pingpong`, default mma: a wgmma one becomes the default once a GPU run has checked and
/// timed it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PrefillKernel {
    /// kernels/attention_prefill.cu: mma.sync; checked on an H100.
    MmaSync,
    /// kernels/attention_prefill_wgmma.cu: wgmma + TMA, warp-specialised.
    Wgmma,
    /// The same file's overlap variant: S of tile t issued with PV of tile t-1 (FA3's
    /// intra-warpgroup pipelining).
    WgmmaOverlap,
    /// The overlap variant with FA3's ping-pong of the two consumer warpgroups.
    WgmmaPingPong,
}

impl PrefillKernel {
    /// The wgmma kernel's schedule, or None for the mma.sync kernel.
    pub fn wgmma_schedule(self) -> Option<WgmmaSchedule> {
        match self {
            PrefillKernel::MmaSync => None,
            PrefillKernel::Wgmma => Some(WgmmaSchedule::InOrder),
            PrefillKernel::WgmmaOverlap => Some(WgmmaSchedule::Overlap),
            PrefillKernel::WgmmaPingPong => Some(WgmmaSchedule::PingPong),
        }
    }

    /// From `NEMO_PREFILL_ATTENTION`; an unknown value is an error, not a silent default.
    pub fn from_env() -> Result<PrefillKernel> {
        match std::env::var("NEMO_PREFILL_ATTENTION").as_deref() {
            Err(_) | Ok("") | Ok("mma") => Ok(PrefillKernel::MmaSync),
            Ok("wgmma") => Ok(PrefillKernel::Wgmma),
            Ok("wgmma-overlap") => Ok(PrefillKernel::WgmmaOverlap),
            Ok("wgmma-pingpong") => Ok(PrefillKernel::WgmmaPingPong),
            Ok(other) => Err(GpuError::BadArgument {
                kernel: "attention_prefill",
                what: format!("NEMO_PREFILL_ATTENTION={other:?}: expected mma, wgmma, wgmma-overlap or wgmma-pingpong"),
            }),
        }
    }
}

/// An FP8 KV cache with kernel choices that have no FP8 variant yet (the wgmma prefill kernels;
/// both decode kernels have one) is refused by name at start-up: no silent fallback.
pub fn check_kv_dtype_kernels(dtype: KvCacheDtype, prefill: PrefillKernel) -> Result<()> {
    if dtype == KvCacheDtype::Fp8E4m3 && prefill != PrefillKernel::MmaSync {
        return Err(GpuError::BadArgument {
            kernel: "attention_prefill",
            what: format!(
                "NEMO_PREFILL_ATTENTION ({prefill:?}) has no FP8 KV cache variant yet (docs/fp8-kv.md): unset it, or use --kv-cache-dtype auto"
            ),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_kernels_are_chosen_by_their_table_name_and_others_refused() {
        assert_eq!(decode_kernel_named(None).unwrap(), DecodeKernel::CUDA_CORES);
        assert_eq!(decode_kernel_named(Some("split-k")).unwrap(), DecodeKernel::CUDA_CORES);
        assert_eq!(decode_kernel_named(Some("mma-split-k")).unwrap(), DecodeKernel::MMA);
        let e = decode_kernel_named(Some("mma")).unwrap_err().to_string();
        assert!(e.contains("NEMO_DECODE_ATTENTION=\"mma\"") && e.contains("mma-split-k"), "{e}");
    }

    #[test]
    fn an_fp8_cache_refuses_the_kernels_without_an_fp8_variant_by_name() {
        let fp8 = KvCacheDtype::Fp8E4m3;
        assert!(check_kv_dtype_kernels(fp8, PrefillKernel::MmaSync).is_ok());
        for prefill in [PrefillKernel::Wgmma, PrefillKernel::WgmmaOverlap, PrefillKernel::WgmmaPingPong] {
            let e = check_kv_dtype_kernels(fp8, prefill).unwrap_err().to_string();
            assert!(e.contains("NEMO_PREFILL_ATTENTION") && e.contains("no FP8 KV cache variant") && e.contains("--kv-cache-dtype auto"), "{e}");
            assert!(check_kv_dtype_kernels(KvCacheDtype::Auto, prefill).is_ok());
        }
    }
}
