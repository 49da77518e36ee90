//! Every decode attention kernel, indexed by (kernel, cache dtype, head_dim, G): one
//! `<name>_hd<HD>_g<G>` PTX entry per point, instantiated in kernels/attention_decode.cu and
//! kernels/attention_decode_mma.cu from `FOR_EACH_DECODE_SHAPE` (kernels/attention_common.cuh)
//! and loaded here by that name. A new variant adds one arm to `DecodeKernel` or one entry to
//! the shape lists below, never a field per instantiation.

use std::sync::Arc;

use cudarc::driver::{CudaContext, CudaFunction, CudaModule};

use super::attention::DecodeKernel;
use crate::gpu::error::{GpuError, Result};

/// The head dims and query heads per KV head (G) of `FOR_EACH_DECODE_SHAPE`, in its order.
pub const DECODE_HEAD_DIMS: [usize; 2] = [128, 64];
pub const DECODE_GROUPS: [usize; 5] = [1, 2, 3, 4, 8];

const KERNELS: [DecodeKernel; 2] = [DecodeKernel::CudaCores, DecodeKernel::Mma];

/// One point of the table: which kernel, over which cache, at which shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecodeInstance {
    pub kernel: DecodeKernel,
    /// Over an FP8 e4m3 cache (the `_e4m3` kernels) rather than bf16.
    pub e4m3: bool,
    pub head_dim: usize,
    pub group: usize,
}

impl DecodeInstance {
    /// Its PTX entry, e.g. `attention_decode_mma_e4m3_hd128_g4`.
    pub fn entry(self) -> String {
        let name = if self.e4m3 { self.kernel.e4m3_name() } else { self.kernel.name() };
        format!("{name}_hd{}_g{}", self.head_dim, self.group)
    }

    /// Its PTX module (the .cu file defining it).
    pub fn module(self) -> &'static str {
        match self.kernel {
            DecodeKernel::CudaCores => "attention_decode",
            DecodeKernel::Mma => "attention_decode_mma",
        }
    }

    /// Every instance, in the table's order.
    pub fn all() -> impl Iterator<Item = DecodeInstance> {
        KERNELS.into_iter().flat_map(|kernel| {
            [false, true].into_iter().flat_map(move |e4m3| {
                DECODE_HEAD_DIMS.into_iter().flat_map(move |head_dim| {
                    DECODE_GROUPS.into_iter().map(move |group| DecodeInstance { kernel, e4m3, head_dim, group })
                })
            })
        })
    }

    /// Its slot in `all()`'s order; None for a shape with no instantiation.
    fn index(self) -> Option<usize> {
        let k = KERNELS.iter().position(|&k| k == self.kernel)?;
        let h = DECODE_HEAD_DIMS.iter().position(|&h| h == self.head_dim)?;
        let g = DECODE_GROUPS.iter().position(|&g| g == self.group)?;
        Some(((k * 2 + self.e4m3 as usize) * DECODE_HEAD_DIMS.len() + h) * DECODE_GROUPS.len() + g)
    }
}

/// The loaded handles, in `DecodeInstance::all()`'s order.
pub struct DecodeKernels {
    functions: Vec<CudaFunction>,
}

impl DecodeKernels {
    /// Loads every instance from its module (`load_module` gives the loaded PTX by name).
    pub(crate) fn load(ctx: &Arc<CudaContext>, load_module: impl Fn(&Arc<CudaContext>, &str) -> Result<Arc<CudaModule>>) -> Result<Self> {
        let mut modules: Vec<(&str, Arc<CudaModule>)> = Vec::new();
        let mut functions = Vec::new();
        for instance in DecodeInstance::all() {
            let module = match modules.iter().find(|(name, _)| *name == instance.module()) {
                Some((_, m)) => m.clone(),
                None => {
                    let m = load_module(ctx, instance.module())?;
                    modules.push((instance.module(), m.clone()));
                    m
                }
            };
            let entry = instance.entry();
            let f = module.load_function(&entry).map_err(GpuError::driver(format!("loading {entry}")))?;
            functions.push(f);
        }
        Ok(DecodeKernels { functions })
    }

    /// The kernel for this point, or None where (head_dim, G) has no instantiation.
    pub fn get(&self, instance: DecodeInstance) -> Option<&CudaFunction> {
        instance.index().map(|i| &self.functions[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_instance_has_its_own_slot_and_entry() {
        let all: Vec<DecodeInstance> = DecodeInstance::all().collect();
        assert_eq!(all.len(), 2 * 2 * DECODE_HEAD_DIMS.len() * DECODE_GROUPS.len());
        for (i, instance) in all.iter().enumerate() {
            assert_eq!(instance.index(), Some(i), "{instance:?}");
        }
        let mut entries: Vec<String> = all.iter().map(|i| i.entry()).collect();
        entries.sort();
        entries.dedup();
        assert_eq!(entries.len(), all.len(), "two instances share an entry name");
        let nemo = DecodeInstance { kernel: DecodeKernel::Mma, e4m3: true, head_dim: 128, group: 4 };
        assert_eq!(nemo.entry(), "attention_decode_mma_e4m3_hd128_g4");
        assert_eq!(nemo.module(), "attention_decode_mma");
        assert_eq!(DecodeInstance { group: 5, ..nemo }.index(), None);
        assert_eq!(DecodeInstance { head_dim: 96, ..nemo }.index(), None);
    }
}
