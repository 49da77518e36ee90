//! Which kernel serves each opt-in path, chosen at start-up from the environment: the kernels
//! not yet checked on a GPU stay off by default, and an unknown value is an error, not a silent
//! default (docs/architecture.md, "Opt-in GPU paths").

use crate::engine::KvCacheDtype;
use crate::gpu::error::{GpuError, Result};
use crate::gpu::kernels::decode_table::DecodeKernel;
pub use crate::gpu::kernels::prefill_table::PrefillKernel;

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
        let kernels = [
            ("mma", GemmKernel::MmaSync),
            ("wgmma", GemmKernel::Wgmma),
            ("split-k", GemmKernel::MmaSplitK),
            ("wgmma-split-k", GemmKernel::WgmmaSplitK),
        ];
        named("NEMO_GEMM", "gemm", std::env::var("NEMO_GEMM").ok().as_deref(), GemmKernel::MmaSync, kernels.into_iter())
    }
}

/// The decode attention kernel when `NEMO_DECODE_ATTENTION` is unset (split-k, on CUDA cores:
/// the mma one becomes the default once a GPU run has checked and timed it).
pub const DEFAULT_DECODE: DecodeKernel = DecodeKernel::CUDA_CORES;

/// The prefill attention kernel when `NEMO_PREFILL_ATTENTION` is unset (one of the wgmma
/// schedules becomes the default once a GPU run has checked and timed it).
pub const DEFAULT_PREFILL: PrefillKernel = PrefillKernel::MMA_FLASH;

/// Which decode attention kernel serves decode steps over a cache of `dtype`:
/// `NEMO_DECODE_ATTENTION=NAME`, a name in `DECODE_KERNELS` (split-k, mma-split-k, ...), else
/// the default for that dtype (`default_decode`).
pub fn decode_kernel_from_env(dtype: KvCacheDtype) -> Result<DecodeKernel> {
    decode_kernel_named(std::env::var("NEMO_DECODE_ATTENTION").ok().as_deref(), dtype)
}

fn decode_kernel_named(value: Option<&str>, dtype: KvCacheDtype) -> Result<DecodeKernel> {
    let default = default_decode(dtype, DEFAULT_DECODE);
    named("NEMO_DECODE_ATTENTION", "attention_decode", value, default, DecodeKernel::all().map(|k| (k.names().name, k)))
}

/// `preferred`, or for an FP8 cache when it has no FP8 entries the first table kernel that has.
/// Only defaults are replaced so: a kernel named in the environment is taken or refused.
fn default_decode(dtype: KvCacheDtype, preferred: DecodeKernel) -> DecodeKernel {
    match dtype {
        KvCacheDtype::Fp8E4m3 if preferred.names().e4m3.is_none() => {
            DecodeKernel::all().find(|k| k.names().e4m3.is_some()).expect("a decode kernel reads an FP8 cache")
        }
        _ => preferred,
    }
}

/// As `default_decode`, for prefill.
fn default_prefill(dtype: KvCacheDtype, preferred: PrefillKernel) -> PrefillKernel {
    match dtype {
        KvCacheDtype::Fp8E4m3 if !preferred.has_e4m3() => {
            PrefillKernel::all().find(|k| k.has_e4m3()).expect("a prefill kernel reads an FP8 cache")
        }
        _ => preferred,
    }
}

/// The kernel `value` names among `kernels`, `default` when unset or empty; an unknown name is
/// an error that lists the known ones.
fn named<K>(var: &str, family: &'static str, value: Option<&str>, default: K, kernels: impl Iterator<Item = (&'static str, K)>) -> Result<K> {
    let name = match value {
        None | Some("") => return Ok(default),
        Some(name) => name,
    };
    let kernels: Vec<(&str, K)> = kernels.collect();
    let known: Vec<&str> = kernels.iter().map(|(n, _)| *n).collect();
    kernels
        .into_iter()
        .find(|(n, _)| *n == name)
        .map(|(_, k)| k)
        .ok_or_else(|| GpuError::BadArgument { kernel: family, what: format!("{var}={name:?}: expected one of {known:?}") })
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

/// Which prefill attention kernel serves prompt chunks over a cache of `dtype`:
/// `NEMO_PREFILL_ATTENTION=NAME`, a flash kernel of `FLASH_PREFILL_KERNELS` (mma-flash) or a
/// wgmma schedule (wgmma, wgmma-overlap, wgmma-pingpong), else the default for that dtype
/// (`default_prefill`). An unknown value is an error, not a silent default.
pub fn prefill_kernel_from_env(dtype: KvCacheDtype) -> Result<PrefillKernel> {
    prefill_kernel_named(std::env::var("NEMO_PREFILL_ATTENTION").ok().as_deref(), dtype)
}

fn prefill_kernel_named(value: Option<&str>, dtype: KvCacheDtype) -> Result<PrefillKernel> {
    let default = default_prefill(dtype, DEFAULT_PREFILL);
    named("NEMO_PREFILL_ATTENTION", "attention_prefill", value, default, PrefillKernel::all().map(|k| (k.name(), k)))
}

/// An FP8 KV cache with attention kernels that have no FP8 variant (the wgmma prefill kernels
/// today), named in the environment, is refused by name at start-up: no silent fallback.
pub fn check_kv_dtype_kernels(dtype: KvCacheDtype, prefill: PrefillKernel, decode: DecodeKernel) -> Result<()> {
    if dtype != KvCacheDtype::Fp8E4m3 {
        return Ok(());
    }
    if !prefill.has_e4m3() {
        return Err(GpuError::BadArgument {
            kernel: "attention_prefill",
            what: format!(
                "NEMO_PREFILL_ATTENTION ({prefill:?}) has no FP8 KV cache variant yet (docs/fp8-kv.md): unset it, or use --kv-cache-dtype auto"
            ),
        });
    }
    if decode.names().e4m3.is_none() {
        return Err(GpuError::BadArgument {
            kernel: "attention_decode",
            what: format!(
                "NEMO_DECODE_ATTENTION ({decode:?}) has no FP8 KV cache variant (docs/fp8-kv.md): unset it, or use --kv-cache-dtype auto"
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
        let bf16 = KvCacheDtype::Auto;
        assert_eq!(decode_kernel_named(None, bf16).unwrap(), DecodeKernel::CUDA_CORES);
        assert_eq!(decode_kernel_named(Some("split-k"), bf16).unwrap(), DecodeKernel::CUDA_CORES);
        assert_eq!(decode_kernel_named(Some("mma-split-k"), bf16).unwrap(), DecodeKernel::MMA);
        let e = decode_kernel_named(Some("mma"), bf16).unwrap_err().to_string();
        assert!(e.contains("NEMO_DECODE_ATTENTION=\"mma\"") && e.contains("mma-split-k"), "{e}");
    }

    #[test]
    fn prefill_kernels_are_chosen_by_name_and_others_refused() {
        let bf16 = KvCacheDtype::Auto;
        assert_eq!(prefill_kernel_named(None, bf16).unwrap(), PrefillKernel::MMA_FLASH);
        for name in ["mma-flash", "wgmma", "wgmma-overlap", "wgmma-pingpong"] {
            assert_eq!(prefill_kernel_named(Some(name), bf16).unwrap().name(), name);
        }
        let e = prefill_kernel_named(Some("mma"), bf16).unwrap_err().to_string();
        assert!(e.contains("NEMO_PREFILL_ATTENTION=\"mma\"") && e.contains("mma-flash") && e.contains("wgmma-pingpong"), "{e}");
    }

    #[test]
    fn an_fp8_cache_refuses_the_kernels_without_an_fp8_variant_by_name() {
        let fp8 = KvCacheDtype::Fp8E4m3;
        for decode in DecodeKernel::all() {
            assert!(check_kv_dtype_kernels(fp8, PrefillKernel::MMA_FLASH, decode).is_ok());
        }
        for prefill in PrefillKernel::all().filter(|k| !k.has_e4m3()) {
            let e = check_kv_dtype_kernels(fp8, prefill, DecodeKernel::CUDA_CORES).unwrap_err().to_string();
            assert!(e.contains("NEMO_PREFILL_ATTENTION") && e.contains("no FP8 KV cache variant") && e.contains("--kv-cache-dtype auto"), "{e}");
            assert!(check_kv_dtype_kernels(KvCacheDtype::Auto, prefill, DecodeKernel::CUDA_CORES).is_ok());
        }
        assert_eq!(PrefillKernel::all().filter(|k| !k.has_e4m3()).count(), 3, "the wgmma schedules");
    }

    /// The defaults serve both cache dtypes, and stay valid for an FP8 cache when a later session
    /// makes a kernel without FP8 entries the bf16 default (a wgmma schedule); a kernel named in
    /// the environment is still refused.
    #[test]
    fn the_default_kernels_serve_an_fp8_cache_whatever_the_bf16_default() {
        let fp8 = KvCacheDtype::Fp8E4m3;
        let (prefill, decode) = (prefill_kernel_named(None, fp8).unwrap(), decode_kernel_named(None, fp8).unwrap());
        assert!(check_kv_dtype_kernels(fp8, prefill, decode).is_ok());
        for preferred in PrefillKernel::all() {
            let chosen = default_prefill(fp8, preferred);
            assert!(chosen.has_e4m3(), "{preferred:?} -> {chosen:?}");
            assert_eq!(chosen == preferred, preferred.has_e4m3(), "{preferred:?}");
            assert_eq!(default_prefill(KvCacheDtype::Auto, preferred), preferred);
        }
        for preferred in DecodeKernel::all() {
            assert!(default_decode(fp8, preferred).names().e4m3.is_some(), "{preferred:?}");
        }
        let named = prefill_kernel_named(Some("wgmma-pingpong"), fp8).unwrap();
        assert!(check_kv_dtype_kernels(fp8, named, decode).is_err(), "an explicit choice is not replaced");
    }
}
