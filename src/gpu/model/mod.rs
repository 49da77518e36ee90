//! The whole model on the GPU: weights, the preallocated KV cache, activation scratch, and the
//! forward pass that chains the kernels of `kernels/`.

mod forward;
mod graphs;
mod kv_cache;
mod weights;

pub use forward::{CudaModel, GemmKernel, SeqChunk};
pub use graphs::GraphReport;
pub use kv_cache::{GpuKvCache, BLOCK_SIZE};
pub use weights::{interleave_gate_up, GpuLayer, GpuWeights};
