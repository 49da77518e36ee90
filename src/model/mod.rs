//! Model config and weights: both published checkpoint layouts, validated before any compute.
//! Nothing here touches CUDA.

pub mod config;
pub mod tensor;

pub use config::{ModelConfig, RopeLayout};
pub use tensor::{LayerWeights, ModelWeights, Tensor, TensorData};
