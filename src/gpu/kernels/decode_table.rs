//! The decode attention kernels as data. Each is one `.cu` module whose entries
//! `<entry prefix>_hd<HD>_g<G>` are instantiated from `FOR_EACH_DECODE_SHAPE`
//! (kernels/attention_common.cuh) and all keep one contract: parameters (AttentionParams,
//! DecodeRope), grid (n_splits, n_kv_heads, n_seqs), each (split, KV head, sequence) block ending
//! in `finish_split`. So a new decode kernel is its `.cu` file plus one line in
//! `DECODE_KERNELS`: it is then loaded at start-up, checked against the PTX entries
//! (tests/ptx_resources.rs) and on the emulator against the CPU reference
//! (tests/gpu/emulated/attention.rs), timed in the kernel lab (`nemo bench kernels --kernel
//! attention_decode --variant NAME`) and served by the engine (`NEMO_DECODE_ATTENTION=NAME`).

use std::sync::Arc;

use cudarc::driver::{CudaContext, CudaFunction, CudaModule};

use super::kernel_names::KernelNames;
use crate::gpu::error::{GpuError, Result};

/// One decode attention kernel.
#[derive(Debug)]
pub struct DecodeKernelSpec {
    pub names: KernelNames,
    /// Threads per block.
    pub threads: u32,
    /// Dynamic shared memory per block at (head_dim, over an FP8 cache).
    pub smem_bytes: fn(usize, bool) -> usize,
}

/// Every decode attention kernel. The first is the engine's default.
pub const DECODE_KERNELS: &[DecodeKernelSpec] = &[
    // CUDA cores, K and V read straight from global memory; no dynamic shared memory.
    DecodeKernelSpec {
        names: KernelNames { name: "split-k", module: "attention_decode", bf16: "attention_decode_bf16", e4m3: Some("attention_decode_e4m3") },
        threads: 128,
        smem_bytes: |_, _| 0,
    },
    // mma.sync over K/V tiles streamed by a 3-stage cp.async pipeline: the Q tile (16 rows) and
    // 3 stages of 64-key K and V tiles; over FP8, 3 stages of codes and one bf16 K and V tile.
    DecodeKernelSpec {
        names: KernelNames {
            name: "mma-split-k",
            module: "attention_decode_mma",
            bf16: "attention_decode_mma_bf16",
            e4m3: Some("attention_decode_mma_e4m3"),
        },
        threads: 128,
        smem_bytes: |hd, e4m3| if e4m3 { (16 * 2 + 2 * 3 * 64 + 2 * 64 * 2) * hd } else { (16 + 2 * 3 * 64) * hd * 2 },
    },
];

/// The head dims and query heads per KV head (G) of `FOR_EACH_DECODE_SHAPE`, in its order.
pub const DECODE_HEAD_DIMS: [usize; 2] = [128, 64];
pub const DECODE_GROUPS: [usize; 5] = [1, 2, 3, 4, 8];

/// A decode kernel: an index into `DECODE_KERNELS`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct DecodeKernel(usize);

/// Its name, as benchmark headers and errors show it.
impl std::fmt::Debug for DecodeKernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.names().name)
    }
}

impl DecodeKernel {
    /// kernels/attention_decode.cu (the default).
    pub const CUDA_CORES: DecodeKernel = DecodeKernel(0);
    /// kernels/attention_decode_mma.cu.
    pub const MMA: DecodeKernel = DecodeKernel(1);

    pub fn all() -> impl Iterator<Item = DecodeKernel> {
        (0..DECODE_KERNELS.len()).map(DecodeKernel)
    }

    pub fn by_name(name: &str) -> Option<DecodeKernel> {
        DecodeKernel::all().find(|k| k.names().name == name)
    }

    pub fn spec(self) -> &'static DecodeKernelSpec {
        &DECODE_KERNELS[self.0]
    }

    pub fn names(self) -> &'static KernelNames {
        &self.spec().names
    }

    pub fn smem_bytes(self, head_dim: usize, e4m3: bool) -> usize {
        (self.spec().smem_bytes)(head_dim, e4m3)
    }
}

/// One instantiation: which kernel, over which cache, at which shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecodeInstance {
    pub kernel: DecodeKernel,
    /// Over an FP8 e4m3 cache rather than bf16.
    pub e4m3: bool,
    pub head_dim: usize,
    pub group: usize,
}

impl DecodeInstance {
    /// Its PTX entry, e.g. `attention_decode_mma_e4m3_hd128_g4`; None where the kernel has no
    /// entries over that cache.
    pub fn entry(self) -> Option<String> {
        let prefix = self.kernel.names().entry_prefix(self.e4m3)?;
        Some(format!("{prefix}_hd{}_g{}", self.head_dim, self.group))
    }

    /// Every instantiation the kernels declare (`FOR_EACH_DECODE_SHAPE` of each entry prefix).
    pub fn all() -> impl Iterator<Item = DecodeInstance> {
        DecodeKernel::all().flat_map(|kernel| {
            [false, true].into_iter().filter(move |&e4m3| kernel.names().entry_prefix(e4m3).is_some()).flat_map(move |e4m3| {
                DECODE_HEAD_DIMS.into_iter().flat_map(move |head_dim| {
                    DECODE_GROUPS.into_iter().map(move |group| DecodeInstance { kernel, e4m3, head_dim, group })
                })
            })
        })
    }
}

/// The loaded handles, one per `DecodeInstance::all()`.
pub struct DecodeKernels {
    functions: Vec<(DecodeInstance, CudaFunction)>,
}

impl DecodeKernels {
    /// Loads every instance from its module (`load_module` gives the loaded PTX by name).
    pub(crate) fn load(ctx: &Arc<CudaContext>, load_module: impl Fn(&Arc<CudaContext>, &str) -> Result<Arc<CudaModule>>) -> Result<Self> {
        let mut functions = Vec::new();
        for kernel in DecodeKernel::all() {
            let module = load_module(ctx, kernel.names().module)?;
            for instance in DecodeInstance::all().filter(|i| i.kernel == kernel) {
                let entry = instance.entry().expect("all() lists declared entries only");
                let f = module.load_function(&entry).map_err(GpuError::driver(format!("loading {entry}")))?;
                functions.push((instance, f));
            }
        }
        Ok(DecodeKernels { functions })
    }

    /// The kernel for this point, or None where it has no instantiation.
    pub fn get(&self, instance: DecodeInstance) -> Option<&CudaFunction> {
        self.functions.iter().find(|(i, _)| *i == instance).map(|(_, f)| f)
    }

    pub fn iter(&self) -> impl Iterator<Item = &(DecodeInstance, CudaFunction)> {
        self.functions.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kernel_has_one_name_module_and_entry_per_instance() {
        let names: Vec<&str> = DECODE_KERNELS.iter().map(|k| k.names.name).collect();
        for (i, name) in names.iter().enumerate() {
            assert_eq!(DecodeKernel::by_name(name), Some(DecodeKernel(i)));
            assert!(!names[..i].contains(name), "two decode kernels are named {name}");
        }
        assert_eq!(DecodeKernel::by_name("mma"), None);
        let all: Vec<DecodeInstance> = DecodeInstance::all().collect();
        let with_fp8 = DECODE_KERNELS.iter().filter(|k| k.names.e4m3.is_some()).count();
        assert_eq!(all.len(), (DECODE_KERNELS.len() + with_fp8) * DECODE_HEAD_DIMS.len() * DECODE_GROUPS.len());
        let mut entries: Vec<String> = all.iter().map(|i| i.entry().unwrap()).collect();
        entries.sort();
        entries.dedup();
        assert_eq!(entries.len(), all.len(), "two instances share an entry name");
        let nemo = DecodeInstance { kernel: DecodeKernel::MMA, e4m3: true, head_dim: 128, group: 4 };
        assert_eq!(nemo.entry().as_deref(), Some("attention_decode_mma_e4m3_hd128_g4"));
        assert_eq!(DecodeKernel::MMA.names().module, "attention_decode_mma");
        assert_eq!(DecodeKernel::CUDA_CORES.names().name, "split-k");
        assert!(!all.contains(&DecodeInstance { group: 5, ..nemo }));
        assert_eq!(format!("{:?}", DecodeKernel::MMA), "mma-split-k");
    }
}
