//! One safe wrapper per kernel in `kernels/*.cu`, with the same name. Each checks lengths,
//! alignment and divisibility, documents shapes, launches once, and holds that kernel's only
//! `unsafe`.

pub mod attention;
pub mod attention_e4m3;
pub mod attention_wgmma;
mod check;
pub mod decode_table;
pub mod embedding;
pub mod gemm;
pub mod gemm_wgmma;
pub mod gemv;
pub mod kernel_names;
pub mod prefill_table;
pub mod random;
pub mod rmsnorm;
pub mod rope;
pub mod sampling;
/// `target_logprobs_f32`, the fourth kernel of kernels/sampling.cu.
pub mod target_logprobs;
/// `apply_token_mask_f32`, the third kernel of kernels/sampling.cu.
pub mod token_mask;
