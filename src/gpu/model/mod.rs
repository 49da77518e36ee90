//! The whole model on the GPU: weights, the preallocated KV cache, activation scratch, and the
//! forward pass that chains the kernels of `kernels/`.

mod forward;
mod graphs;
mod kernel_choice;
mod kv_cache;
mod profile;
mod step_layout;
mod weights;

pub use forward::{CudaModel, SeqChunk};
pub use kernel_choice::{decode_kernel_from_env, prefill_kernel_from_env, rope_in_decode_from_env, GemmKernel, PrefillKernel};
pub use graphs::GraphReport;
pub use profile::{Breakdown, BreakdownRow};
pub use step_layout::{step_layout, StepLayout};
pub use kv_cache::{resolve_kv_tokens, tokens_that_fit, GpuKvCache, KvSize, BLOCK_SIZE, KV_RESERVE_BYTES};
pub use weights::{interleave_gate_up, GpuLayer, GpuWeights};
