//! Model config and weights: both published checkpoint layouts, validated before any compute.
//! Nothing here touches CUDA.

pub mod config;
pub mod error;
pub mod inspect;
pub mod layout;
pub mod load;
pub mod params;
pub mod safetensors_files;
pub mod tensor;

pub use config::{ModelConfig, RopeLayout};
pub use error::LoadError;
pub use inspect::{inspect, InspectSummary};
pub use layout::{Checkpoint, Layout};
pub use load::{load, load_checkpoint, LoadedModel};
pub use tensor::{LayerWeights, ModelWeights, Tensor, TensorData};
