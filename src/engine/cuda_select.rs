//! Opening the CUDA backend for `--device cuda` / `--device auto` on a machine with a GPU.
//!
//! A placeholder until the CUDA engine lands (the lead replaces this file): it refuses clearly
//! rather than pretending, so `--device auto` on a GPU machine says why it cannot run there.

use super::{Backend, EngineError};
use crate::model::ModelWeights;

/// The CUDA backend over `weights`. Call only after `gpu::probe()` succeeded.
pub fn open_cuda_backend(_weights: &ModelWeights) -> Result<Box<dyn Backend + '_>, EngineError> {
    Err(EngineError::Unsupported(
        "the CUDA backend is not built yet; run with --device cpu".into(),
    ))
}
