//! The prefill attention kernels as data. Two contracts:
//! - **flash** kernels (`FLASH_PREFILL_KERNELS`): one `.cu` module whose entries
//!   `<entry prefix>_hd<HD>` (HD in `PREFILL_HEAD_DIMS`) take one `AttentionParams`, run on a grid
//!   (ceil(max_q_len / (rows / G)), n_kv_heads, n_seqs), each block `rows` query rows (rows / G
//!   positions x the G heads of one KV head). A new one is its `.cu` file plus one line here: it
//!   is then loaded, checked against the PTX entries (tests/ptx_resources.rs) and on the emulator
//!   (tests/gpu/emulated/attention.rs), timed in the kernel lab and benchmarks, and served with
//!   `NEMO_PREFILL_ATTENTION=NAME`.
//! - the **wgmma** kernels (kernels/attention_prefill_wgmma.cu), whose K/V come by TMA and whose
//!   wrapper builds tensor maps (`attention_wgmma.rs`), one per `WgmmaSchedule`.

use std::sync::Arc;

use cudarc::driver::{CudaContext, CudaFunction, CudaModule};

use super::attention_wgmma::WgmmaSchedule;
use super::kernel_names::KernelNames;
use crate::gpu::error::{GpuError, Result};

/// One flash prefill kernel.
#[derive(Debug)]
pub struct FlashPrefillSpec {
    pub names: KernelNames,
    pub threads: u32,
    /// Query rows per block (positions x heads of one KV head).
    pub rows: usize,
    /// Dynamic shared memory per block at (head_dim, over an FP8 cache).
    pub smem_bytes: fn(usize, bool) -> usize,
}

/// Every flash prefill kernel. The first is the engine's default.
pub const FLASH_PREFILL_KERNELS: &[FlashPrefillSpec] = &[
    // mma.sync, online softmax, cp.async double buffer: a 64-row Q tile and 2 stages of 64-key K
    // and V tiles; over FP8, staged codes plus one bf16 tile take what two bf16 stages do.
    FlashPrefillSpec {
        names: KernelNames {
            name: "mma-flash",
            module: "attention_prefill",
            bf16: "attention_prefill_bf16",
            e4m3: Some("attention_prefill_e4m3"),
        },
        threads: 128,
        rows: 64,
        smem_bytes: |hd, _| (64 + 4 * 64) * hd * 2,
    },
];

/// The head dims every prefill kernel is instantiated for.
pub const PREFILL_HEAD_DIMS: [usize; 2] = [128, 64];

/// A flash prefill kernel: an index into `FLASH_PREFILL_KERNELS`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct FlashPrefill(usize);

impl std::fmt::Debug for FlashPrefill {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.names().name)
    }
}

impl FlashPrefill {
    /// kernels/attention_prefill.cu (the default).
    pub const MMA: FlashPrefill = FlashPrefill(0);

    pub fn all() -> impl Iterator<Item = FlashPrefill> {
        (0..FLASH_PREFILL_KERNELS.len()).map(FlashPrefill)
    }

    pub fn spec(self) -> &'static FlashPrefillSpec {
        &FLASH_PREFILL_KERNELS[self.0]
    }

    pub fn names(self) -> &'static KernelNames {
        &self.spec().names
    }

    /// Its entry at `head_dim`, if declared.
    pub fn entry(self, e4m3: bool, head_dim: usize) -> Option<String> {
        let prefix = self.names().entry_prefix(e4m3)?;
        PREFILL_HEAD_DIMS.contains(&head_dim).then(|| format!("{prefix}_hd{head_dim}"))
    }

    /// Every (kernel, e4m3, head_dim) declared.
    pub fn instances() -> impl Iterator<Item = (FlashPrefill, bool, usize)> {
        FlashPrefill::all().flat_map(|k| {
            [false, true]
                .into_iter()
                .filter(move |&e| k.names().entry_prefix(e).is_some())
                .flat_map(move |e| PREFILL_HEAD_DIMS.into_iter().map(move |hd| (k, e, hd)))
        })
    }
}

/// Which prefill attention kernel serves prompt chunks (`NEMO_PREFILL_ATTENTION=NAME`).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum PrefillKernel {
    Flash(FlashPrefill),
    Wgmma(WgmmaSchedule),
}

impl std::fmt::Debug for PrefillKernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

const SCHEDULES: [WgmmaSchedule; 3] = [WgmmaSchedule::InOrder, WgmmaSchedule::Overlap, WgmmaSchedule::PingPong];

impl PrefillKernel {
    /// The default: the first flash kernel.
    pub const MMA_FLASH: PrefillKernel = PrefillKernel::Flash(FlashPrefill::MMA);

    /// Every prefill kernel: the flash ones, then the wgmma schedules.
    pub fn all() -> impl Iterator<Item = PrefillKernel> {
        FlashPrefill::all().map(PrefillKernel::Flash).chain(SCHEDULES.into_iter().map(PrefillKernel::Wgmma))
    }

    /// Its name in the kernel lab and for `NEMO_PREFILL_ATTENTION`.
    pub fn name(self) -> &'static str {
        match self {
            PrefillKernel::Flash(k) => k.names().name,
            PrefillKernel::Wgmma(s) => s.name(),
        }
    }

    pub fn by_name(name: &str) -> Option<PrefillKernel> {
        PrefillKernel::all().find(|k| k.name() == name)
    }

    /// Whether it reads an FP8 e4m3 cache.
    pub fn has_e4m3(self) -> bool {
        matches!(self, PrefillKernel::Flash(k) if k.names().e4m3.is_some())
    }
}

/// The flash kernels' loaded handles, one per `FlashPrefill::instances()`.
pub struct PrefillKernels {
    functions: Vec<((FlashPrefill, bool, usize), CudaFunction)>,
}

impl PrefillKernels {
    pub(crate) fn load(ctx: &Arc<CudaContext>, load_module: impl Fn(&Arc<CudaContext>, &str) -> Result<Arc<CudaModule>>) -> Result<Self> {
        let mut functions = Vec::new();
        for kernel in FlashPrefill::all() {
            let module = load_module(ctx, kernel.names().module)?;
            for instance @ (_, e4m3, hd) in FlashPrefill::instances().filter(|i| i.0 == kernel) {
                let entry = kernel.entry(e4m3, hd).expect("instances() lists declared entries only");
                let f = module.load_function(&entry).map_err(GpuError::driver(format!("loading {entry}")))?;
                functions.push((instance, f));
            }
        }
        Ok(PrefillKernels { functions })
    }

    pub fn get(&self, kernel: FlashPrefill, e4m3: bool, head_dim: usize) -> Option<&CudaFunction> {
        self.functions.iter().find(|(i, _)| *i == (kernel, e4m3, head_dim)).map(|(_, f)| f)
    }

    pub fn iter(&self) -> impl Iterator<Item = &((FlashPrefill, bool, usize), CudaFunction)> {
        self.functions.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_prefill_kernel_has_one_name_and_its_entries() {
        let names: Vec<&str> = PrefillKernel::all().map(|k| k.name()).collect();
        assert_eq!(names[0], "mma-flash");
        assert_eq!(names[names.len() - 3..], ["wgmma", "wgmma-overlap", "wgmma-pingpong"]);
        for (i, name) in names.iter().enumerate() {
            assert!(!names[..i].contains(name), "two prefill kernels are named {name}");
            assert_eq!(PrefillKernel::by_name(name).map(|k| k.name()), Some(*name));
        }
        assert_eq!(PrefillKernel::by_name("mma"), None);
        assert_eq!(FlashPrefill::MMA.entry(true, 128).as_deref(), Some("attention_prefill_e4m3_hd128"));
        assert_eq!(FlashPrefill::MMA.entry(false, 96), None);
        assert!(PrefillKernel::MMA_FLASH.has_e4m3() && !PrefillKernel::Wgmma(WgmmaSchedule::Overlap).has_e4m3());
        assert_eq!(format!("{:?}", PrefillKernel::Wgmma(WgmmaSchedule::PingPong)), "wgmma-pingpong");
        let with_fp8 = FLASH_PREFILL_KERNELS.iter().filter(|k| k.names.e4m3.is_some()).count();
        assert_eq!(FlashPrefill::instances().count(), (FLASH_PREFILL_KERNELS.len() + with_fp8) * PREFILL_HEAD_DIMS.len());
    }
}
